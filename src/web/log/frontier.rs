//! Which ids a live stream's next poll reads ([`Frontier`]): only ids it has
//! not read yet, plus the few just below them that a transaction still
//! running may yet commit, never the whole store.
//!
//! Ids come from a sequence when a row is inserted, not when it commits: a
//! store transaction that took ids 101–200 may commit after one that took 201.
//! So the poll that first sees 201 cannot yet say that nothing below it will
//! appear. Each poll notes the newest id it saw and the snapshot's `xmax` (the
//! first transaction id not yet started); once the snapshot's `xmin` (the
//! oldest transaction still running) has passed that `xmax`, every transaction
//! that could hold an id up to that newest one has ended, and the ids up to it
//! are settled: later polls read only above them, skipping the ids they sent.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Ids a poll reads above the newest id it has read, at most: a stream that
/// starts far behind catches up in steps of this many.
pub const WINDOW: i64 = 10_000;
/// Unsettled ids a poll reads again at most: beyond this, the oldest are
/// taken as settled.
const LATE_IDS: i64 = 10_000;
/// How long a poll's mark waits to settle at most: a transaction running
/// longer than this (anywhere in the store's cluster, since the snapshot
/// covers every database) no longer holds the stream back.
const LATE_TIME: Duration = Duration::from_secs(30);

/// What one poll found out about the store before reading.
#[derive(Debug, Clone, Copy)]
pub struct Horizon {
    /// The newest id visible now (0 in an empty store).
    pub newest: i64,
    /// The oldest transaction still running, as the snapshot says.
    pub xmin: i64,
    /// The first transaction not yet started.
    pub xmax: i64,
}

/// A poll's note, waiting to settle.
#[derive(Debug, Clone, Copy)]
struct Mark {
    newest: i64,
    xmax: i64,
    at: Instant,
}

/// Where a live stream stands.
#[derive(Debug)]
pub struct Frontier {
    /// No new id at or below this can appear, and each one that matched was sent.
    settled: i64,
    /// Every id up to this was read at least once.
    read: i64,
    /// Ids above `settled` already sent, so a read again skips them.
    sent: BTreeSet<i64>,
    marks: VecDeque<Mark>,
    /// Where `settled` goes once the poll under way has read: the ids that
    /// just became final must be read once more after they did.
    settle_to: i64,
}

/// The ids one poll reads: above `after`, up to `upto`, none of `skip`.
#[derive(Debug, PartialEq, Eq)]
pub struct Range {
    pub after: i64,
    pub upto: i64,
    pub skip: Vec<i64>,
}

impl Frontier {
    /// A stream that has seen every id up to `start`.
    pub fn new(start: i64) -> Frontier {
        Frontier {
            settled: start,
            read: start,
            sent: BTreeSet::new(),
            marks: VecDeque::new(),
            settle_to: start,
        }
    }

    /// Notes `h` and says which ids to read now.
    pub fn plan(&mut self, h: Horizon, now: Instant) -> Range {
        self.marks.push_back(Mark {
            newest: h.newest,
            xmax: h.xmax,
            at: now,
        });
        self.settle(h.xmin, now);
        Range {
            after: self.settled,
            upto: h.newest.min(self.read.saturating_add(WINDOW)),
            skip: self.sent.iter().copied().collect(),
        }
    }

    /// What the read of `range` sent (ids in order), and whether it stopped
    /// at its row limit before `range.upto`.
    pub fn done(&mut self, range: &Range, sent: &[i64], full: bool) {
        self.sent.extend(sent.iter().copied());
        let reached = match (full, sent.last()) {
            (true, Some(&last)) => last,
            _ => range.upto,
        };
        self.read = self.read.max(reached);
        // A read that stopped at its limit settles no further than it got.
        let settle = match (full, sent.last()) {
            (true, Some(&last)) => self.settle_to.min(last),
            _ => self.settle_to,
        };
        self.settled = self
            .settled
            .max(settle)
            .max(self.read.saturating_sub(LATE_IDS));
        self.sent = self.sent.split_off(&(self.settled + 1));
    }

    /// Whether ids beyond what was read are visible already (catching up: poll again at once).
    pub fn behind(&self, h: Horizon) -> bool {
        self.read < h.newest
    }

    /// Takes the marks whose transactions have all ended (or waited too
    /// long) into `settle_to`, for [`Frontier::done`] to apply after this
    /// poll's read.
    fn settle(&mut self, xmin: i64, now: Instant) {
        while let Some(m) = self.marks.front().copied() {
            if m.xmax > xmin && now.duration_since(m.at) < LATE_TIME {
                break;
            }
            // Ids above what was read are still to be read; they cannot be settled.
            self.settle_to = self.settle_to.max(m.newest.min(self.read));
            self.marks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(newest: i64, xmin: i64, xmax: i64) -> Horizon {
        Horizon { newest, xmin, xmax }
    }

    #[test]
    fn a_poll_reads_only_unsettled_ids_and_skips_what_it_sent() {
        let t = Instant::now();
        let mut f = Frontier::new(100);
        // Transaction 50 still runs (it may hold ids below 120).
        let r = f.plan(h(120, 50, 60), t);
        assert_eq!((r.after, r.upto), (100, 120));
        f.done(&r, &[110, 120], false);
        // 50 still runs: 100..120 is read again, without 110 and 120.
        let r = f.plan(h(130, 50, 61), t);
        assert_eq!(
            r,
            Range {
                after: 100,
                upto: 130,
                skip: vec![110, 120]
            }
        );
        f.done(&r, &[105], false);
        // 50 ended: what it may have committed is read once more, then the
        // marks up to xmax 61 settle, up to 130.
        let r = f.plan(h(130, 61, 62), t);
        let again = Range {
            after: 100,
            upto: 130,
            skip: vec![105, 110, 120],
        };
        assert_eq!(r, again);
        f.done(&r, &[101], false);
        let r = f.plan(h(130, 62, 62), t);
        assert_eq!(
            r,
            Range {
                after: 130,
                upto: 130,
                skip: vec![]
            }
        );
        f.done(&r, &[], false);
        assert!(!f.behind(h(130, 62, 62)));
    }

    #[test]
    fn catching_up_goes_by_windows_and_stops_at_the_row_limit() {
        let t = Instant::now();
        let mut f = Frontier::new(0);
        let r = f.plan(h(3 * WINDOW, 9, 9), t);
        assert_eq!((r.after, r.upto), (0, WINDOW));
        // The row limit stopped it at id 500: it goes on from there.
        f.done(&r, &[7, 500], true);
        assert!(f.behind(h(3 * WINDOW, 9, 9)));
        let r = f.plan(h(3 * WINDOW, 9, 9), t);
        assert_eq!((r.after, r.upto, &r.skip), (0, 500 + WINDOW, &vec![7, 500]));
        f.done(&r, &[], false);
        // Settled one poll behind what was read.
        let r = f.plan(h(3 * WINDOW, 9, 9), t);
        assert_eq!((r.after, r.upto), (500, 500 + 2 * WINDOW));
    }

    #[test]
    fn a_long_transaction_holds_the_stream_back_for_a_bounded_time_and_range() {
        let t = Instant::now();
        let mut f = Frontier::new(0);
        let r = f.plan(h(10, 5, 6), t);
        f.done(&r, &[], false);
        let r = f.plan(h(20, 5, 7), t + Duration::from_secs(1));
        assert_eq!(r.after, 0);
        f.done(&r, &[], false);
        let late = t + LATE_TIME + Duration::from_secs(2);
        let r = f.plan(h(20, 5, 7), late);
        f.done(&r, &[], false);
        let r = f.plan(h(20, 5, 7), late);
        assert_eq!(r.after, 20, "marks older than LATE_TIME settle");
        f.done(&r, &[], false);
        let r = f.plan(h(20 + WINDOW, 5, 8), t + LATE_TIME * 3);
        f.done(&r, &[], false);
        let r = f.plan(h(20 + 2 * WINDOW, 5, 9), t + LATE_TIME * 3);
        f.done(&r, &[], false);
        let r = f.plan(h(20 + 2 * WINDOW, 5, 10), t + LATE_TIME * 3);
        assert_eq!(
            r.after,
            20 + 2 * WINDOW - LATE_IDS,
            "at most LATE_IDS read again"
        );
        assert!(r.after > 20);
    }
}
