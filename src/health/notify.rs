//! systemd's notify protocol (`Type=notify`), without libsystemd: one
//! datagram per message to the socket `NOTIFY_SOCKET` names (a path, or
//! `@name` in the abstract namespace). Off when the variable is not set, as
//! when pgtrail runs outside systemd.
//!
//! - `READY=1` once capture streams ([`ready`], from the pipeline);
//! - `STATUS=…` with the lag and the rate at each monitor poll ([`status`]);
//! - `WATCHDOG=1` from the pipeline's own loops ([`watchdog`]): the reader's
//!   loop while a session streams, the run loop between sessions, so that a
//!   pipeline stuck anywhere stops the beats and systemd restarts it.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The socket and the watchdog's interval, read once from the environment.
struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WATCHDOG_USEC`, when systemd watches this process.
    watchdog: Option<Duration>,
    last_beat: Mutex<Option<Instant>>,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name.as_bytes())
                }
                None => SocketAddr::from_pathname(&path),
            };
            let (addr, socket) = match (addr, UnixDatagram::unbound()) {
                (Ok(addr), Ok(socket)) => (addr, socket),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(socket = %path, error = %e, "NOTIFY_SOCKET cannot be used: systemd gets no notifications");
                    return None;
                }
            };
            Some(Notifier {
                socket,
                addr,
                watchdog: watchdog_interval(),
                last_beat: Mutex::new(None),
            })
        })
        .as_ref()
}

/// `WATCHDOG_USEC`, if it is meant for this process (`WATCHDOG_PID`, when
/// set, names it).
fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

fn send(n: &Notifier, message: &str) {
    if let Err(e) = n.socket.send_to_addr(message.as_bytes(), &n.addr) {
        tracing::debug!(error = %e, "a notification to systemd was not sent");
    }
}

/// Capture streams: the service is up.
pub fn ready() {
    if let Some(n) = notifier() {
        send(n, "READY=1");
    }
}

/// One line for `systemctl status`.
pub fn status(line: &str) {
    if let Some(n) = notifier() {
        // One line: a newline would start another assignment.
        send(n, &format!("STATUS={}", line.replace('\n', " ")));
    }
}

/// The pipeline is alive: beats at most every quarter of the watchdog's
/// interval, however often it is called.
pub fn watchdog() {
    let Some(n) = notifier() else { return };
    let Some(every) = n.watchdog else { return };
    let mut last = n.last_beat.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|at| at.elapsed() < every / 4) {
        return;
    }
    *last = Some(Instant::now());
    drop(last);
    send(n, "WATCHDOG=1");
}

/// The service is stopping (so that systemd does not read the exit as a crash).
pub fn stopping() {
    if let Some(n) = notifier() {
        send(n, "STOPPING=1");
    }
}
