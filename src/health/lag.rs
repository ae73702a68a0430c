//! How far behind capture is, from the monitor's polls: in bytes, the
//! source's WAL position minus what capture has processed; in seconds, how
//! long ago the source wrote the oldest WAL not yet processed, as well as the
//! polls can tell.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::pg::Lsn;

/// Samples kept at most (an hour of polls every second); beyond that the
/// oldest go, and the estimate falls back on the store's figures.
const MAX_SAMPLES: usize = 3_600;

/// Capture's lag, as one poll sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub bytes: u64,
    pub seconds: f64,
}

/// The source's WAL position at each recent poll: when WAL past a position
/// first existed is when the first poll saw the server beyond it.
#[derive(Debug, Default)]
pub struct LagHistory {
    /// (poll time, the server's WAL position then), oldest first. The first
    /// is the last sample at or below what was processed, when there is one.
    samples: VecDeque<(SystemTime, Lsn)>,
}

impl LagHistory {
    /// Records the server at `server_lsn` at `now`, with capture having
    /// processed up to `processed`. `fallback` is the lag to assume when the
    /// samples do not reach back to `processed` (the first polls after a
    /// start with a backlog): the age of the last stored commit.
    pub fn observe(
        &mut self,
        now: SystemTime,
        server_lsn: Lsn,
        processed: Lsn,
        fallback: Option<Duration>,
    ) -> Lag {
        self.samples.push_back((now, server_lsn));
        // Samples the processed position has passed are no longer needed,
        // but the last of them: it tells that WAL past it came later.
        while self.samples.len() >= 2 && self.samples[1].1 <= processed {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        let bytes = processed.bytes_until(server_lsn);
        let age = |at: SystemTime| now.duration_since(at).unwrap_or_default();
        let seconds = match self.samples.iter().position(|(_, lsn)| *lsn > processed) {
            // Everything the server had at every poll, this one too, is processed.
            None => Duration::ZERO,
            // The server was seen at or below `processed` before: the WAL past
            // it was written after that poll and by the first one beyond it.
            Some(i) if i > 0 => age(self.samples[i].0),
            // No poll saw the server at or below it: at least as old as the
            // oldest poll; the store's figure says how much older.
            Some(_) => {
                let seen = age(self.samples[0].0);
                fallback.map_or(seen, |f| f.max(seen))
            }
        };
        Lag {
            bytes,
            seconds: seconds.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag_of(bytes: u64, seconds: f64) -> Lag {
        Lag { bytes, seconds }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn keeping_up_within_a_poll_is_no_lag_and_bytes_are_what_is_left() {
        let mut h = LagHistory::default();
        let lag = h.observe(at(0), Lsn(1_000), Lsn(1_000), None);
        assert_eq!(lag, lag_of(0, 0.0));
        // The server moved on; capture has what the server had a poll ago.
        let lag = h.observe(at(5), Lsn(1_500), Lsn(1_000), None);
        assert_eq!(lag.bytes, 500);
        assert_eq!(lag.seconds, 0.0);
        let lag = h.observe(at(10), Lsn(2_000), Lsn(1_500), None);
        assert_eq!((lag.bytes, lag.seconds), (500, 0.0));
    }

    #[test]
    fn falling_behind_counts_from_the_first_poll_that_saw_unprocessed_wal() {
        let mut h = LagHistory::default();
        h.observe(at(0), Lsn(1_000), Lsn(1_000), None);
        h.observe(at(5), Lsn(2_000), Lsn(1_000), None);
        let lag = h.observe(at(10), Lsn(3_000), Lsn(1_000), None);
        assert_eq!(lag, lag_of(2_000, 5.0));
        let lag = h.observe(at(20), Lsn(3_000), Lsn(1_000), None);
        assert_eq!(lag.seconds, 15.0);
        // Capture passes what the server had at 5 s: the WAL left came by 10 s.
        let lag = h.observe(at(25), Lsn(3_000), Lsn(2_500), None);
        assert_eq!(lag, lag_of(500, 15.0));
        let lag = h.observe(at(30), Lsn(3_000), Lsn(3_000), None);
        assert_eq!(lag, lag_of(0, 0.0));
    }

    #[test]
    fn a_backlog_older_than_the_polls_takes_the_fallback() {
        let mut h = LagHistory::default();
        let fallback = Some(Duration::from_secs(600));
        let lag = h.observe(at(0), Lsn(9_000), Lsn(1_000), fallback);
        assert_eq!(lag, lag_of(8_000, 600.0));
        let lag = h.observe(at(30), Lsn(9_000), Lsn(2_000), None);
        assert_eq!(lag.seconds, 30.0);
        // A processed position past the server's (confirmed ahead) is no lag.
        let lag = h.observe(at(31), Lsn(9_000), Lsn(9_100), None);
        assert_eq!(lag, lag_of(0, 0.0));
    }

    #[test]
    fn the_samples_stay_bounded() {
        let mut h = LagHistory::default();
        for s in 0..(MAX_SAMPLES as u64 + 100) {
            h.observe(at(s), Lsn(s + 10), Lsn(0), None);
        }
        assert_eq!(h.samples.len(), MAX_SAMPLES);
    }
}
