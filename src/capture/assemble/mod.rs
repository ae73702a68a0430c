//! Transaction assembly: turns the stream of decoded records (begin, rows,
//! commit) into audit entries and commit markers for the store.
//!
//! It drops what must not be stored: tables outside the capture filter and
//! transactions the store already holds (delivery from the server is
//! at-least-once; the store's checkpoint says what is already in). Rolled-back
//! transactions never reach it: the server decodes only committed ones.
//!
//! It also runs the redaction stage ([`crate::capture::redact`]) on each row image
//! before it is serialized: ignored columns go, redacted values become keyed
//! hashes, and an UPDATE that changed only ignored columns is no entry.
//!
//! A change of a partition becomes an entry of its root table, with the
//! partition in `details` ([`crate::capture::partition`]); the capture filter decides
//! on the root. A TRUNCATE entry carries its options in `details`
//! ([`crate::capture::truncate`]).
//!
//! [`Assembler::push`] decodes a record and hands it to the handler of its
//! kind: begin and commit here, row changes in `rows.rs` (before and after
//! images, changed columns, unchanged TOAST, column rules), TRUNCATE records
//! in `truncates.rs`, and the messages of pgtrail's triggers (context, DDL,
//! partition trees, TRUNCATE options) in `messages.rs`, once their signature
//! is checked; a message that fails the check becomes a security event
//! (`forged.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::capture::decode::{self, Record, TxnBoundary};
use crate::capture::partition::PartitionMap;
use crate::capture::redact::{ColumnRules, TableRules};
use crate::capture::signature::MessageKey;
use crate::capture::truncate::Tracker;
use crate::entry::{DecodeFailure, Event, Transaction, EMPTY_CONTEXT};
use crate::pg::Lsn;
use crate::table::{TableFilter, TableName, Wal2jsonFilter};

mod forged;
mod messages;
mod quarantine;
mod rows;
mod truncates;

pub use quarantine::Target as QuarantineTarget;

/// The stream broke wal2json's framing: the connection is not to be trusted further.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("wal2json sent a {what} at {lsn} outside a transaction")]
    OutsideTransaction { what: &'static str, lsn: Lsn },
    #[error("wal2json began transaction {new} at {lsn} while {open} was still open")]
    NestedBegin { open: u64, new: u64, lsn: Lsn },
    /// wal2json's table filter, fixed when the session started, would drop
    /// the changes of a partition announced since: the session must restart
    /// (from the store's checkpoint, before this transaction) with a filter
    /// that includes the partition's schema.
    #[error("transaction {xid} made {partition} a partition of the captured table {root}, outside the tables this session decodes; restarting with schema {:?} included", partition.schema)]
    PartitionOutsideStream {
        xid: u64,
        partition: TableName,
        root: TableName,
        /// The map as the stream had it when this transaction began, which
        /// the next session replays from: closer to that past than the
        /// catalog, which may be far ahead.
        partitions: Box<PartitionMap>,
    },
    /// A BEGIN or COMMIT that cannot be decoded: the records around it
    /// cannot be placed. The session ends; the next quarantines the
    /// transaction (see `quarantine.rs`).
    #[error("wal2json sent a {what} record at {lsn} that cannot be decoded ({error}); its transaction is to be quarantined")]
    Unframed {
        what: &'static str,
        lsn: Lsn,
        error: String,
    },
}

pub struct Assembler {
    filter: TableFilter,
    /// End LSN of the last transaction already in the store.
    stored_up_to: Lsn,
    open: Option<OpenTxn>,
    column_rules: ColumnRules,
    /// The column rules of each table seen so far, resolved once per table;
    /// `None` for the (usual) table without any.
    table_rules: HashMap<TableName, Option<Arc<TableRules>>>,
    partitions: PartitionMap,
    /// What wal2json was asked to send; `None`: everything.
    stream_filter: Option<Wal2jsonFilter>,
    /// The transaction to quarantine, until it has been.
    quarantine: Option<quarantine::Target>,
    collecting: Option<quarantine::Collecting>,
    /// Checks that a message with one of pgtrail's prefixes is pgtrail's own.
    key: MessageKey,
}

struct OpenTxn {
    txn: Arc<Transaction>,
    /// Already stored before a restart: swallow it.
    skip: bool,
    /// Who is making the changes, from the latest context message; shared by the entries it covers.
    context: Arc<str>,
    /// TRUNCATE options announced by the context trigger, until their truncate records arrive.
    truncates: Tracker,
    /// The tables of the truncate records just seen, one statement's worth:
    /// truncating a partitioned table also sends a record for each of its
    /// partitions, which that one entry already covers.
    truncated: HashSet<TableName>,
    /// A partition tree announcement changed the map.
    partitions_changed: bool,
    /// The map as it was when the transaction began, kept from its first
    /// change of the map on.
    partitions_before: Option<PartitionMap>,
}

impl Assembler {
    /// `key`: the source's `pgtrail.message_key`, which every message the
    /// assembler acts on must be signed with.
    pub fn new(filter: TableFilter, stored_up_to: Lsn, key: MessageKey) -> Self {
        Assembler {
            filter,
            stored_up_to,
            open: None,
            column_rules: ColumnRules::default(),
            table_rules: HashMap::new(),
            partitions: PartitionMap::default(),
            stream_filter: None,
            quarantine: None,
            collecting: None,
            key,
        }
    }

    /// Names partitions' changes by their root, starting from this map (the
    /// catalog at session start); announcements in the stream keep it current.
    pub fn with_partitions(mut self, partitions: PartitionMap) -> Self {
        self.partitions = partitions;
        self
    }

    /// The filter wal2json was started with: a partition announced outside it
    /// ends the session ([`AssembleError::PartitionOutsideStream`]).
    pub fn with_stream_filter(mut self, filter: Wal2jsonFilter) -> Self {
        self.stream_filter = Some(filter);
        self
    }

    /// Applies per-table column rules (ignored and redacted columns) to the entries.
    pub fn with_column_rules(mut self, rules: ColumnRules) -> Self {
        self.column_rules = rules;
        self.table_rules.clear();
        self
    }

    /// End LSN of the last transaction handed on (or found already stored).
    pub fn last_commit_end(&self) -> Lsn {
        self.stored_up_to
    }

    /// True between a begin and its commit.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some() || self.collecting.is_some()
    }

    /// Takes one wal2json record that started at `lsn` and appends what it yields to `out`.
    pub fn push(
        &mut self,
        lsn: Lsn,
        bytes: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        if self.quarantining(lsn, bytes) {
            self.collect(lsn, bytes, out);
            return Ok(());
        }
        let record = match decode::decode(bytes) {
            Ok(r) => r,
            Err(e) => return self.on_broken(lsn, bytes, e, out),
        };
        match record {
            Record::Begin(b) => self.on_begin(lsn, b),
            Record::Commit(_) => self.on_commit(lsn, out),
            Record::Row(row) => self.on_row(lsn, row, out),
            Record::Truncate(leaf) => self.on_truncate(lsn, leaf, out),
            Record::Message {
                prefix,
                content,
                transactional,
            } => self.on_message(lsn, bytes, &prefix, &content, transactional, out),
        }
    }

    /// A record that is not wal2json as we know it: kept for the store's
    /// `decode_errors` (unless its transaction is already stored), and the
    /// transaction goes on.
    fn on_undecodable(&self, lsn: Lsn, bytes: &[u8], e: decode::DecodeError, out: &mut Vec<Event>) {
        let xid = self.open.as_ref().map(|o| o.txn.xid);
        tracing::error!(%lsn, ?xid, error = %e, "wal2json record could not be decoded; kept in pgtrail.decode_errors");
        if !self.open.as_ref().is_some_and(|o| o.skip) {
            out.push(Event::Undecodable(DecodeFailure {
                lsn,
                xid,
                // Under the rules of the partition tree's root, as its entries are.
                record: self
                    .column_rules
                    .undecodable_record(bytes, |t| self.partitions.root_of(t).cloned()),
                error: e.to_string(),
            }));
        }
    }

    fn on_begin(&mut self, lsn: Lsn, b: TxnBoundary) -> Result<(), AssembleError> {
        if let Some(open) = &self.open {
            return Err(AssembleError::NestedBegin {
                open: open.txn.xid,
                new: b.xid,
                lsn,
            });
        }
        let skip = b.end_lsn <= self.stored_up_to;
        self.open = Some(OpenTxn {
            txn: Arc::new(b.into()),
            skip,
            context: Arc::from(EMPTY_CONTEXT),
            truncates: Tracker::default(),
            truncated: Default::default(),
            partitions_changed: false,
            partitions_before: None,
        });
        Ok(())
    }

    fn on_commit(&mut self, lsn: Lsn, out: &mut Vec<Event>) -> Result<(), AssembleError> {
        let open = self.open.take().ok_or(AssembleError::OutsideTransaction {
            what: "commit",
            lsn,
        })?;
        if !open.skip {
            self.stored_up_to = open.txn.end_lsn;
            if open.partitions_changed {
                out.push(Event::Partitions(self.partitions.to_json()));
            }
            out.push(Event::Commit(open.txn));
        }
        Ok(())
    }
}

/// The open transaction, for a record that belongs in one.
fn open_mut<'a>(
    open: &'a mut Option<OpenTxn>,
    what: &'static str,
    lsn: Lsn,
) -> Result<&'a mut OpenTxn, AssembleError> {
    open.as_mut()
        .ok_or(AssembleError::OutsideTransaction { what, lsn })
}

#[cfg(test)]
mod tests;
