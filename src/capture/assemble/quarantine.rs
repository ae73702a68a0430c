//! Quarantine: a transaction whose records are kept raw instead of being
//! turned into entries, because the store refused its entries or because its
//! BEGIN or COMMIT could not be decoded (which breaks the framing every
//! other record relies on).
//!
//! Neither can be handled in the session that meets it: the entries already
//! handed to the writer are gone, and a broken BEGIN leaves nothing to hang
//! the records on. So that session ends, the writer commits what is whole,
//! and the next one starts from the checkpoint with a [`Target`]: the first
//! transaction after that checkpoint is collected record by record, whatever
//! they hold, as [`Event::Quarantined`], and closed with
//! [`Event::QuarantineEnd`]; capture then goes on as usual.
//!
//! The records pass the same withholding rule as `decode_errors`
//! ([`crate::capture::redact::ColumnRules::undecodable_record`]), and a
//! quarantined transaction's messages are not acted on (a partition map it
//! announces is not applied).

use super::{AssembleError, Assembler};
use crate::capture::decode::{self, Record};
use crate::entry::{Event, Quarantine, QuarantinedRecord};
use crate::pg::Lsn;

/// Which transaction to quarantine: the first after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The checkpoint the transaction follows.
    pub after: Lsn,
    /// Why, for the `EVENT` that records it.
    pub reason: String,
}

/// The quarantined transaction while its records arrive.
pub(super) struct Collecting {
    first_lsn: Lsn,
    seq: i32,
    xid: Option<u64>,
    /// From a decodable BEGIN; else known at the COMMIT.
    end_lsn: Option<Lsn>,
    reason: String,
}

impl Assembler {
    /// Quarantines the first transaction after `target.after`, if this
    /// session starts there (a later checkpoint means it is already done).
    pub fn with_quarantine(mut self, target: Option<Target>) -> Self {
        self.quarantine = target.filter(|t| t.after == self.stored_up_to);
        self
    }

    /// True if this record belongs to the transaction being quarantined (and
    /// starts collecting it when it is that transaction's first).
    pub(super) fn quarantining(&mut self, lsn: Lsn, bytes: &[u8]) -> bool {
        if self.collecting.is_some() {
            return true;
        }
        let Some(target) = &self.quarantine else {
            return false;
        };
        if self.open.is_some() || target.after != self.stored_up_to {
            return false;
        }
        let (starts, xid, end_lsn) = match decode::decode(bytes) {
            Ok(Record::Begin(b)) => (b.end_lsn > self.stored_up_to, Some(b.xid), Some(b.end_lsn)),
            Ok(_) => (false, None, None),
            // A BEGIN that cannot be decoded (or a record whose action cannot
            // be told) outside a transaction starts it.
            Err(_) => (
                matches!(decode::sniff_action(bytes), Some(b'B') | None),
                None,
                None,
            ),
        };
        if starts {
            tracing::warn!(%lsn, ?xid, reason = %target.reason, "quarantining the transaction after the checkpoint");
            self.collecting = Some(Collecting {
                first_lsn: lsn,
                seq: 0,
                xid,
                end_lsn,
                reason: target.reason.clone(),
            });
        }
        starts
    }

    /// Keeps one record of the quarantined transaction; at its COMMIT (or a
    /// record that can only be told to be one), closes it.
    pub(super) fn collect(&mut self, lsn: Lsn, bytes: &[u8], out: &mut Vec<Event>) {
        let Some(c) = &mut self.collecting else {
            return;
        };
        out.push(Event::Quarantined(QuarantinedRecord {
            first_lsn: c.first_lsn,
            seq: c.seq,
            lsn,
            // Under the rules of the partition tree's root, as its entries are.
            record: self
                .column_rules
                .undecodable_record(bytes, |t| self.partitions.root_of(t).cloned()),
        }));
        c.seq += 1;
        if c.seq == 1 {
            return;
        }
        let end = match decode::decode(bytes) {
            Ok(Record::Commit(b)) => {
                c.xid = Some(b.xid);
                b.end_lsn
            }
            Ok(_) => return,
            // The server sends a COMMIT as the XLogData that starts at the
            // transaction's end: that is its end LSN when the record tells nothing.
            Err(_) if decode::sniff_action(bytes) == Some(b'C') => c.end_lsn.unwrap_or(lsn),
            Err(_) => return,
        };
        let Some(c) = self.collecting.take() else {
            return;
        };
        self.quarantine = None;
        self.stored_up_to = self.stored_up_to.max(end);
        out.push(Event::QuarantineEnd(Quarantine {
            first_lsn: c.first_lsn,
            xid: c.xid,
            end_lsn: end,
            records: c.seq,
            reason: c.reason,
        }));
    }

    /// A record that could not be decoded. A BEGIN or COMMIT among them
    /// breaks the transaction's framing: the session must end and the
    /// transaction be quarantined by the next ([`AssembleError::Unframed`]).
    /// Any other goes to `decode_errors` and its transaction goes on.
    pub(super) fn on_broken(
        &mut self,
        lsn: Lsn,
        bytes: &[u8],
        e: decode::DecodeError,
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        let what = match (decode::sniff_action(bytes), &self.open) {
            (Some(b'B'), None) => "BEGIN",
            (Some(b'C'), Some(open)) if open.skip => {
                // Already stored: nothing of it is needed.
                self.open = None;
                return Ok(());
            }
            (Some(b'C'), Some(_)) => "COMMIT",
            _ => {
                self.on_undecodable(lsn, bytes, e, out);
                return Ok(());
            }
        };
        Err(AssembleError::Unframed {
            what,
            lsn,
            error: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assembler, feed, BEGIN_9, COMMIT_9};
    use super::*;

    const ROW: &str = r#"{"action":"I","xid":9,"schema":"public","table":"t","columns":[{"name":"id","typeoid":23,"value":1}],"pk":[{"name":"id","typeoid":23}]}"#;
    const BROKEN_BEGIN: &str = r#"{"action":"B","xid":9,"lsn":"not an lsn"}"#;
    const BROKEN_COMMIT: &str = r#"{"action":"C","xid":9,"timestamp":"#;

    fn target() -> Option<Target> {
        Some(Target {
            after: Lsn::ZERO,
            reason: "the store refused it".into(),
        })
    }

    fn quarantined(out: &[Event]) -> Vec<&str> {
        out.iter()
            .filter_map(|e| match e {
                Event::Quarantined(r) => Some(r.record.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_broken_begin_or_commit_ends_the_session_to_quarantine() {
        let mut a = assembler(&["public.*"]);
        let mut out = Vec::new();
        let e = a.push(Lsn(1), BROKEN_BEGIN.as_bytes(), &mut out);
        assert!(
            matches!(e, Err(AssembleError::Unframed { what: "BEGIN", .. })),
            "{e:?}"
        );
        let mut a = assembler(&["public.*"]);
        a.push(Lsn(1), BEGIN_9.as_bytes(), &mut out).unwrap();
        a.push(Lsn(2), ROW.as_bytes(), &mut out).unwrap();
        let e = a.push(Lsn(3), BROKEN_COMMIT.as_bytes(), &mut out);
        assert!(
            matches!(e, Err(AssembleError::Unframed { what: "COMMIT", .. })),
            "{e:?}"
        );
        // Other broken records still go to decode_errors.
        let mut a = assembler(&["public.*"]);
        let out = feed(&mut a, &[BEGIN_9, r#"{"action":"I","xid":9"#, COMMIT_9]);
        assert!(matches!(out[0], Event::Undecodable(_)), "{out:?}");
        assert!(matches!(out[1], Event::Commit(_)), "{out:?}");
    }

    #[test]
    fn the_first_transaction_after_the_checkpoint_is_kept_raw() {
        let mut a = assembler(&["public.*"]).with_quarantine(target());
        let out = feed(
            &mut a,
            &[
                BEGIN_9,
                ROW,
                COMMIT_9,
                BEGIN_9.replace("0/20", "0/30").as_str(),
                ROW,
                COMMIT_9,
            ],
        );
        assert_eq!(quarantined(&out), [BEGIN_9, ROW, COMMIT_9]);
        let Event::QuarantineEnd(q) = &out[3] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (q.xid, q.end_lsn, q.records, q.first_lsn),
            (Some(9), Lsn(0x20), 3, Lsn(1))
        );
        assert_eq!(q.reason, "the store refused it");
        // The next transaction is captured as usual.
        assert!(matches!(out[4], Event::Entry(_)), "{out:?}");
        assert!(matches!(out[5], Event::Commit(_)), "{out:?}");
        assert!(!a.in_transaction());
        assert_eq!(a.last_commit_end(), Lsn(0x30));
    }

    #[test]
    fn a_transaction_framed_by_broken_records_ends_at_its_commit() {
        let mut a = assembler(&["public.*"]).with_quarantine(target());
        let out = feed(&mut a, &[BROKEN_BEGIN, ROW, BROKEN_COMMIT]);
        assert_eq!(quarantined(&out), [BROKEN_BEGIN, ROW, BROKEN_COMMIT]);
        // Unknown xid; the end is where the COMMIT's message started.
        let Event::QuarantineEnd(q) = &out[3] else {
            panic!("{out:?}")
        };
        assert_eq!((q.xid, q.end_lsn), (None, Lsn(3)));
        assert_eq!(a.last_commit_end(), Lsn(3));
    }

    #[test]
    fn a_quarantine_for_another_checkpoint_is_already_done() {
        let mut a = Assembler::new(
            super::super::tests::filter(&["public.*"]),
            Lsn(5),
            super::super::tests::test_key(),
        )
        .with_quarantine(target());
        let out = feed(&mut a, &[&BEGIN_9.replace("0/20", "0/30"), ROW, COMMIT_9]);
        assert!(quarantined(&out).is_empty(), "{out:?}");
        assert!(matches!(out[0], Event::Entry(_)), "{out:?}");
    }
}
