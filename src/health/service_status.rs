//! The one line `systemctl status` shows for `run` (systemd's `STATUS=`),
//! made at each monitor poll: whether capture streams, its lag, and how fast
//! the store's checkpoint moves (WAL processed per second).

use std::time::SystemTime;

use super::lag::Lag;
use crate::metrics::progress::{progress, Session};
use crate::pg::Lsn;

/// The checkpoint at the previous poll, for the rate.
#[derive(Debug, Default)]
pub struct Rate {
    last: Option<(SystemTime, Lsn)>,
}

impl Rate {
    /// WAL processed per second since the previous poll, in bytes.
    pub fn observe(&mut self, now: SystemTime, checkpoint: Option<Lsn>) -> Option<f64> {
        let checkpoint = checkpoint?;
        let rate = self.last.and_then(|(then, before)| {
            let secs = now.duration_since(then).ok()?.as_secs_f64();
            (secs > 0.0).then(|| before.bytes_until(checkpoint) as f64 / secs)
        });
        self.last = Some((now, checkpoint));
        rate
    }
}

/// The line for this poll.
pub fn line(lag: Option<Lag>, rate: Option<f64>) -> String {
    match progress().snapshot().session {
        Session::Starting => "connecting".to_owned(),
        Session::Down { reason, .. } => format!("not streaming: {reason}"),
        Session::Streaming { .. } => {
            let lag = lag.map_or_else(
                || "lag unknown".to_owned(),
                |l| format!("lag {} ({:.0} s)", bytes(l.bytes as f64), l.seconds),
            );
            let rate = rate.map_or_else(String::new, |r| format!(", {}/s stored", bytes(r)));
            format!("streaming, {lag}{rate}")
        }
    }
}

/// `12.3 MB`: bytes in powers of 1024, one decimal (the web view's
/// capture health shows them so too).
pub fn bytes(mut value: f64) -> String {
    let mut unit = "B";
    for next in ["kB", "MB", "GB", "TB"] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_is_the_checkpoint_moved_per_second() {
        let mut rate = Rate::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(rate.observe(t0, Some(Lsn(0))), None);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(rate.observe(t1, Some(Lsn(4096))), Some(2048.0));
        assert_eq!(bytes(2048.0), "2.0 kB");
        assert_eq!(bytes(512.0), "512.0 B");
        assert_eq!(bytes(3.5 * 1024.0 * 1024.0), "3.5 MB");
    }
}
