//! Getting past a source transaction that cannot be stored as entries,
//! without losing it: the run loop's memory across sessions.
//!
//! Two things make a transaction stick: the store refuses its data (a
//! [`Failure::Refused`](crate::store::failure::Failure::Refused) error, the
//! same on every retry), or its BEGIN or COMMIT cannot be decoded. Retrying
//! would stop capture for good, so the transaction is quarantined: its raw
//! records are stored instead of its entries, with an `EVENT` that says so,
//! and the checkpoint moves past it.
//!
//! The records are not at hand when this is found (entries were streamed
//! to the store and are gone), but replication replays from the checkpoint,
//! so they come again: the next session quarantines "the first transaction
//! after the checkpoint". That must be the one at fault, which takes care:
//!
//! - A broken BEGIN or COMMIT: the writer commits every whole transaction
//!   before the session ends, so when the checkpoint reaches the last one
//!   the reader finished, the broken one is next.
//! - A refusal: the writer batches many source transactions into one store
//!   transaction, so a refused batch does not say which one. The next
//!   session *isolates*: it commits each source transaction alone until past
//!   the refused batch; a refusal there is the first transaction after the
//!   checkpoint, and the session after quarantines it.

use crate::capture::assemble::QuarantineTarget;
use crate::pg::Lsn;

/// A session ended on a transaction it cannot store as entries.
#[derive(Debug)]
pub struct Stuck {
    /// What was wrong, for the log and the quarantine's `EVENT`.
    pub reason: String,
    /// The checkpoint when the session ended.
    pub durable: Lsn,
    /// The end of the last transaction the reader handed over whole.
    pub handed: Lsn,
    /// The transaction at fault is surely the first after `durable`.
    pub pinpointed: bool,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let next = if self.pinpointed {
            "quarantining the transaction after the checkpoint"
        } else {
            "storing each transaction alone until it is found"
        };
        write!(
            f,
            "a transaction after {} cannot be stored as entries ({}); {next}",
            self.durable, self.reason
        )
    }
}

/// What the next sessions must do differently.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    isolate_until: Option<Lsn>,
    quarantine: Option<QuarantineTarget>,
}

impl Recovery {
    /// Commit each source transaction alone while the checkpoint is at or below this.
    pub(super) fn isolate_until(&self) -> Option<Lsn> {
        self.isolate_until
    }

    /// The transaction to quarantine.
    pub(super) fn quarantine(&self) -> Option<QuarantineTarget> {
        self.quarantine.clone()
    }

    /// Learns from a session that got stuck.
    pub(super) fn stuck(&mut self, s: &Stuck) {
        if s.pinpointed {
            self.quarantine = Some(QuarantineTarget {
                after: s.durable,
                reason: s.reason.clone(),
            });
        } else {
            // The one at fault is at most the transaction after the last
            // one handed over (it may have been arriving).
            self.isolate_until = Some(s.handed.max(s.durable));
        }
    }

    /// Forgets what a checkpoint that has moved past it made moot.
    pub(super) fn settle(&mut self, checkpoint: Lsn) {
        if self.isolate_until.is_some_and(|u| u < checkpoint) {
            self.isolate_until = None;
        }
        if self
            .quarantine
            .as_ref()
            .is_some_and(|q| q.after < checkpoint)
        {
            self.quarantine = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck(pinpointed: bool) -> Stuck {
        Stuck {
            reason: "refused".into(),
            durable: Lsn(10),
            handed: Lsn(30),
            pinpointed,
        }
    }

    #[test]
    fn a_refused_batch_is_isolated_then_its_culprit_quarantined() {
        let mut r = Recovery::default();
        r.stuck(&stuck(false));
        assert_eq!((r.isolate_until(), r.quarantine()), (Some(Lsn(30)), None));
        r.stuck(&stuck(true));
        assert_eq!(r.quarantine().map(|q| q.after), Some(Lsn(10)));
        // Still isolating past the rest of the refused batch.
        r.settle(Lsn(10));
        assert!(r.quarantine().is_some() && r.isolate_until().is_some());
        r.settle(Lsn(20));
        assert_eq!((r.isolate_until(), r.quarantine()), (Some(Lsn(30)), None));
        r.settle(Lsn(31));
        assert_eq!(r.isolate_until(), None);
    }
}
