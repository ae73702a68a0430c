//! Reading a range of ids in windows against a time budget ([`IdWindows`]):
//! the match count, the facets' tally and a free-text search page all read
//! this way, so that a selective filter over a large store stops near its
//! budget instead of reading every id. Each window is sized by how fast the
//! ones before it went ([`next_window`]).

use std::time::{Duration, Instant};

/// The ids `[lo, hi)` a reading has still to go through, and how fast it has
/// gone so far.
pub(super) struct IdWindows {
    lo: i64,
    hi: i64,
    /// From the newest (highest) ids down, else from the oldest up.
    newest_first: bool,
    window: i64,
    read: i64,
    started: Instant,
    budget: Duration,
}

impl IdWindows {
    /// A reading of `[lo, hi)` that started at `started` with `budget` in
    /// all, its first window `first` ids wide.
    pub fn new(
        (lo, hi): (i64, i64),
        newest_first: bool,
        first: i64,
        started: Instant,
        budget: Duration,
    ) -> IdWindows {
        IdWindows {
            lo,
            hi,
            newest_first,
            window: first,
            read: 0,
            started,
            budget,
        }
    }

    /// The next window, `[lower, upper)`, at the end the reading goes from;
    /// `None` once every id is read.
    pub fn next(&self) -> Option<(i64, i64)> {
        if self.lo >= self.hi {
            return None;
        }
        Some(if self.newest_first {
            ((self.hi - self.window).max(self.lo), self.hi)
        } else {
            (self.lo, self.lo.saturating_add(self.window).min(self.hi))
        })
    }

    /// Marks `window` (the one [`IdWindows::next`] gave) as read and sizes
    /// the next one; `false` when the budget is spent and the reading stops.
    pub fn done(&mut self, (lower, upper): (i64, i64)) -> bool {
        if self.newest_first {
            self.hi = lower;
        } else {
            self.lo = upper;
        }
        self.read += upper - lower;
        let spent = self.started.elapsed();
        if spent >= self.budget {
            return false;
        }
        self.window = next_window(self.window, self.read, spent, self.budget);
        true
    }

    /// The ids not read yet, `[lo, hi)`, if any are left.
    pub fn left(&self) -> Option<(i64, i64)> {
        (self.lo < self.hi).then_some((self.lo, self.hi))
    }

    /// What is left of the budget.
    pub fn time_left(&self) -> Duration {
        self.budget.saturating_sub(self.started.elapsed())
    }
}

/// The size of the next window of ids, after reading `read` ids in `spent`
/// with `budget` in all: as many as the rate so far gets through in the time
/// left, at least 1,000 and at most double the last `window`.
fn next_window(window: i64, read: i64, spent: Duration, budget: Duration) -> i64 {
    // Ids per microsecond so far, times the time left; at most double.
    let left = budget.saturating_sub(spent).as_micros() as i64;
    let rate = read as f64 / spent.as_micros().max(1) as f64;
    ((rate * left as f64) as i64).clamp(1_000, window.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_range_once_from_either_end() {
        let hour = Duration::from_secs(3600);
        for newest_first in [true, false] {
            let mut ids = IdWindows::new((5, 4_000), newest_first, 1_000, Instant::now(), hour);
            let mut seen = Vec::new();
            while let Some(w) = ids.next() {
                assert!(w.0 < w.1, "{w:?}");
                seen.push(w);
                assert!(ids.done(w));
            }
            assert_eq!(ids.left(), None);
            seen.sort();
            assert_eq!(seen.first().map(|w| w.0), Some(5));
            assert_eq!(seen.last().map(|w| w.1), Some(4_000));
            assert!(seen.windows(2).all(|p| p[0].1 == p[1].0), "{seen:?}");
        }
        // Newest first, the first window is the highest ids.
        let ids = IdWindows::new((0, 10_000), true, 1_000, Instant::now(), hour);
        assert_eq!(ids.next(), Some((9_000, 10_000)));
    }

    #[test]
    fn a_spent_budget_stops_the_reading_and_says_what_is_left() {
        let mut ids = IdWindows::new((0, 10_000), true, 2_000, Instant::now(), Duration::ZERO);
        let w = ids.next().unwrap();
        assert!(!ids.done(w));
        assert_eq!(ids.left(), Some((0, 8_000)));
        assert_eq!(ids.time_left(), Duration::ZERO);
    }

    #[test]
    fn the_next_window_follows_the_rate_within_bounds() {
        let ms = Duration::from_millis;
        // 10,000 ids in 10 ms with 90 ms left: 90,000, but at most double.
        assert_eq!(next_window(10_000, 10_000, ms(10), ms(100)), 20_000);
        // Slow: 1,000 ids in 50 ms with 10 ms left: 200, but at least 1,000.
        assert_eq!(next_window(10_000, 1_000, ms(50), ms(60)), 1_000);
        assert_eq!(next_window(10_000, 100_000, ms(10), ms(11)), 10_000);
    }
}
