//! The messages of pgtrail's triggers in the stream: who is making the changes
//! ([`context`]), schema changes (DDL entries; a dropped table leaves the
//! partition map), partition tree announcements ([`partition`]) and the
//! options of a TRUNCATE ([`truncate`]).

use std::sync::Arc;

use super::forged::{on_forged, Refused};
use super::{AssembleError, Assembler, OpenTxn};
use crate::capture::context;
use crate::capture::partition::{self, PartitionMap, Tree};
use crate::capture::truncate;
use crate::entry::{Action, AuditEntry, DecodeFailure, Event};
use crate::pg::Lsn;
use crate::table::TableName;

/// Which of pgtrail's messages, by its prefix.
#[derive(Clone, Copy)]
enum MessageKind {
    Context,
    Ddl,
    Partitions,
    Truncate,
}

impl MessageKind {
    /// `None`: not one of pgtrail's prefixes.
    fn of(prefix: &str) -> Option<MessageKind> {
        match prefix {
            context::CONTEXT_PREFIX => Some(MessageKind::Context),
            context::DDL_PREFIX => Some(MessageKind::Ddl),
            partition::PARTITIONS_PREFIX => Some(MessageKind::Partitions),
            truncate::TRUNCATE_PREFIX => Some(MessageKind::Truncate),
            _ => None,
        }
    }
}

/// One of pgtrail's messages, as the stream carried it.
struct Message<'a> {
    kind: MessageKind,
    lsn: Lsn,
    /// The whole wal2json record, kept when the message cannot be read.
    record: &'a [u8],
    prefix: &'a str,
    /// As sent: the signature, then the body.
    content: &'a str,
}

impl Assembler {
    /// A logical decoding message; only pgtrail's own count.
    pub(super) fn on_message(
        &mut self,
        lsn: Lsn,
        record: &[u8],
        prefix: &str,
        content: &str,
        transactional: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        // Non-transactional messages are not tied to a transaction's changes.
        let Some(kind) = MessageKind::of(prefix) else {
            return Ok(());
        };
        if !transactional {
            return Ok(());
        }
        // Taken out while the message is read, so that its handlers may
        // borrow the rest of the assembler; put back whatever the outcome.
        let mut open = self.open.take().ok_or(AssembleError::OutsideTransaction {
            what: "pgtrail message",
            lsn,
        })?;
        let message = Message {
            kind,
            lsn,
            record,
            prefix,
            content,
        };
        let result = self.read_message(&mut open, &message, out);
        self.open = Some(open);
        result
    }

    /// Reads one message into the open transaction (or the partition map).
    /// One that pgtrail did not sign is refused and recorded; one that
    /// cannot be read is kept for `decode_errors`. Either way the
    /// transaction goes on.
    fn read_message(
        &mut self,
        open: &mut OpenTxn,
        message: &Message<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        open.truncated.clear();
        // Checked before anything is read, in stored transactions too: a
        // forged partition map or dropped table must not change the map.
        let content = match self.key.open(message.prefix, open.txn.xid, message.content) {
            Ok(body) => body,
            Err(rejected) => {
                let refused = Refused {
                    lsn: message.lsn,
                    prefix: message.prefix,
                    content: message.content,
                    rejected,
                };
                on_forged(open, &refused, out);
                return Ok(());
            }
        };
        let parsed = match message.kind {
            // Followed even in a transaction already stored, so that
            // the map is current for the ones after it.
            MessageKind::Partitions => match partition::tree_from_message(content) {
                Ok(tree) => {
                    self.on_partitions(open, &tree)?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            // A dropped table leaves the partition map; like
            // announcements, followed in stored transactions too.
            MessageKind::Ddl if open.skip => {
                if let Ok(ddl) = context::ddl_from_message(content) {
                    forget_dropped(&mut self.partitions, &ddl);
                }
                return Ok(());
            }
            _ if open.skip => return Ok(()),
            MessageKind::Truncate => open.truncates.message(content, &self.partitions),
            MessageKind::Ddl => {
                context::ddl_from_message(content).map(|ddl| self.on_ddl(open, ddl, out))
            }
            MessageKind::Context => {
                context::from_message(content).map(|json| open.context = Arc::from(json))
            }
        };
        if let Err(e) = parsed {
            let Message {
                lsn,
                record,
                prefix,
                ..
            } = *message;
            tracing::warn!(%lsn, xid = open.txn.xid, error = %e, "pgtrail message could not be read; kept in pgtrail.decode_errors");
            if !open.skip {
                out.push(Event::Undecodable(DecodeFailure {
                    lsn,
                    xid: Some(open.txn.xid),
                    record: String::from_utf8_lossy(record).into_owned(),
                    error: format!("{prefix} message: {e}"),
                }));
            }
        }
        Ok(())
    }

    /// A partition tree announcement: the map follows it. A partition of a
    /// captured table that wal2json was not asked to send ends the session.
    fn on_partitions(&mut self, open: &mut OpenTxn, tree: &Tree) -> Result<(), AssembleError> {
        if !open.skip && self.filter.matches(&tree.root) {
            let outside = self
                .stream_filter
                .as_ref()
                .and_then(|f| tree.members.iter().find(|(m, _)| !f.covers(m)));
            if let Some((partition, _)) = outside {
                return Err(AssembleError::PartitionOutsideStream {
                    xid: open.txn.xid,
                    partition: partition.clone(),
                    root: tree.root.clone(),
                    partitions: Box::new(
                        open.partitions_before
                            .take()
                            .unwrap_or_else(|| self.partitions.clone()),
                    ),
                });
            }
        }
        if open.partitions_before.is_none() {
            open.partitions_before = Some(self.partitions.clone());
        }
        self.partitions.apply(tree);
        open.partitions_changed = true;
        Ok(())
    }

    /// A schema change: an entry when its schema is captured and its table
    /// not excluded; a dropped table also leaves the partition map.
    fn on_ddl(&mut self, open: &mut OpenTxn, ddl: context::Ddl, out: &mut Vec<Event>) {
        let before = (open.partitions_before.is_none() && ddl.command_tag == "DROP TABLE")
            .then(|| self.partitions.clone());
        if forget_dropped(&mut self.partitions, &ddl) {
            open.partitions_before = open.partitions_before.take().or(before);
            open.partitions_changed = true;
        }
        let table = TableName::new(ddl.schema, ddl.name);
        let excluded = self.filter.exclude.iter().any(|p| p.matches(&table));
        if self.filter.captures_schema(&table.schema) && !excluded {
            out.push(Event::Entry(AuditEntry {
                txn: open.txn.clone(),
                table,
                action: Action::Ddl,
                primary_key: None,
                before: None,
                after: Some(ddl.detail),
                changed_columns: None,
                context: Arc::from(ddl.context),
                details: None,
            }));
        }
    }
}

/// A dropped table is no partition any more: the announcements cover trees
/// that still exist, not this. (A rename or move of a partition is announced.)
fn forget_dropped(partitions: &mut PartitionMap, ddl: &context::Ddl) -> bool {
    ddl.object_type == "table"
        && ddl.command_tag == "DROP TABLE"
        && partitions.forget(&TableName::new(ddl.schema.clone(), ddl.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        assembler, entries, feed, filter, signed, test_key, BEGIN_9, COMMIT_9,
    };
    use super::*;
    use crate::entry::EMPTY_CONTEXT;
    use crate::table::{TablePattern, Wal2jsonFilter};

    #[test]
    fn context_messages_apply_to_the_changes_after_them() {
        let mut a = assembler(&["*.*"]);
        let out = feed(
            &mut a,
            &[
                BEGIN_9,
                r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":0}],"pk":[]}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail","content":"{\"session_user\" : \"app\", \"actor\" : \"alice\"}"}"#,
                r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":1}],"pk":[]}"#,
                r#"{"action":"M","xid":9,"transactional":false,"prefix":"pgtrail","content":"{\"actor\" : \"mallory\"}"}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail","content":"{\"session_user\" : \"app\", \"actor\" : \"bob\"}"}"#,
                r#"{"action":"T","xid":9,"schema":"s","table":"t"}"#,
                COMMIT_9,
                r#"{"action":"B","xid":10,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/30","nextlsn":"0/40"}"#,
                r#"{"action":"I","xid":10,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":2}],"pk":[]}"#,
                r#"{"action":"C","xid":10,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/30","nextlsn":"0/40"}"#,
            ],
        );
        let actors: Vec<Option<String>> = entries(&out)
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.context).unwrap()["actor"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(
            actors,
            [None, Some("alice".into()), Some("bob".into()), None]
        );
        assert_eq!(&*entries(&out)[0].context, EMPTY_CONTEXT);
    }

    #[test]
    fn a_partition_outside_the_stream_filter_restarts_the_session() {
        let mut a =
            Assembler::new(filter(&["public.o"]), Lsn::ZERO, test_key()).with_stream_filter(
                Wal2jsonFilter::from_patterns(&[TablePattern::parse("public.o").unwrap()]),
            );
        let mut out = feed(&mut a, &[BEGIN_9]);
        let r = a.push(
            Lsn(2),
            signed(r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_partitions","content":"{\"root\":{\"schema\":\"public\",\"name\":\"o\"},\"members\":[{\"schema\":\"archive\",\"name\":\"o_old\",\"parent_schema\":\"public\",\"parent_name\":\"o\"}]}"}"#)
            .as_bytes(),
            &mut out,
        );
        assert!(
            matches!(&r, Err(AssembleError::PartitionOutsideStream { partition, .. }) if partition.schema == "archive"),
            "{r:?}"
        );
    }
}
