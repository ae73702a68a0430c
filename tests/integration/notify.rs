//! systemd's notify protocol, heard on a socket of the test's own as systemd would hear it
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`): `READY=1` once capture streams, `WATCHDOG=1` while the
//! pipeline runs (and none faster than a quarter of the interval), `STATUS=` lines with the lag
//! and the rate, `STOPPING=1` on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Every datagram that arrives on `socket` within `window`.
fn hear(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut heard = vec![];
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => heard.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tells_systemd_it_is_ready_alive_and_how_far_behind() {
    let off = "[metrics]\nlisten = \"\"\npoll_interval = \"1s\"\n";
    let mut env =
        TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = off.into()).await;
    let src = env.source_with("CREATE TABLE t (id int PRIMARY KEY)").await;
    env.setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    env.trail.envs = vec![
        ("NOTIFY_SOCKET".into(), path.display().to_string()),
        ("WATCHDOG_USEC".into(), "2000000".into()),
    ];
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    env.sync().await;
    let heard = tokio::task::block_in_place(|| hear(&socket, Duration::from_secs(6)));
    daemon.assert_running();
    let log = daemon.log();

    let beats = heard.iter().filter(|m| *m == "WATCHDOG=1").count();
    // Every 0.5 s at most (a quarter of 2 s); the reader's loop turns at least every 0.5 s.
    assert!(
        (4..=13).contains(&beats),
        "{beats} beats in 6 s: {heard:?}\n{log}"
    );
    let statuses: Vec<&String> = heard.iter().filter(|m| m.starts_with("STATUS=")).collect();
    assert!(statuses.len() >= 3, "{heard:?}");
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("STATUS=streaming, lag ") && s.ends_with("/s stored")),
        "{statuses:?}"
    );

    daemon.terminate().await;
    let last = tokio::task::block_in_place(|| hear(&socket, Duration::from_millis(500)));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "{last:?}");
    assert_counts(&env.store().await, "public", "t", Counts::new(100, 0, 0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_once_capture_streams() {
    let mut env = TestEnv::start().await;
    env.source_with("CREATE TABLE t (id int PRIMARY KEY)").await;
    env.setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    env.trail.envs = vec![("NOTIFY_SOCKET".into(), path.display().to_string())];
    let daemon = env.spawn();
    let heard = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut heard = vec![];
        while Instant::now() < deadline && !heard.iter().any(|m| m == "READY=1") {
            heard.extend(hear(&socket, Duration::from_millis(200)));
        }
        heard
    });
    assert!(heard.iter().any(|m| m == "READY=1"), "{heard:?}");
    assert!(
        daemon.log().contains("streaming changes"),
        "{}",
        daemon.log()
    );
    // Without WATCHDOG_USEC there are no beats.
    assert!(!heard.iter().any(|m| m == "WATCHDOG=1"), "{heard:?}");
}
