//! The audit entry: one committed row change of a captured table, in the shape
//! it is stored and exported, and the [`Event`]s that carry entries from
//! capture to the store writer, in stream order. The vocabulary both sides
//! share; how values are mapped into an entry is `capture::values`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::pg::Lsn;
use crate::table::TableName;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Insert,
    Update,
    Delete,
    Truncate,
    /// A schema change (CREATE, ALTER, DROP, …) on a captured schema.
    Ddl,
    /// One of pgtrail's own events (a sign-in, an export, …): the audit log of the audit log.
    Event,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Insert,
        Action::Update,
        Action::Delete,
        Action::Truncate,
        Action::Ddl,
        Action::Event,
    ];

    /// A change of a row's values (INSERT, UPDATE, DELETE): nearly every
    /// entry; the other actions are rare.
    pub fn is_row_change(self) -> bool {
        matches!(self, Action::Insert | Action::Update | Action::Delete)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "INSERT",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Truncate => "TRUNCATE",
            Action::Ddl => "DDL",
            Action::Event => "EVENT",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown action {0:?}: use INSERT, UPDATE, DELETE, TRUNCATE, DDL or EVENT")]
pub struct UnknownAction(String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// The source transaction an entry belongs to; shared by all its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub xid: u64,
    pub committed_at: String,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
}

/// One audit entry. The row images are JSON object text, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub txn: Arc<Transaction>,
    pub table: TableName,
    pub action: Action,
    /// `{"id":5}`; `None` for a table without a primary key, and for TRUNCATE.
    pub primary_key: Option<String>,
    /// The old row image as the server sent it; `None` for INSERT and TRUNCATE.
    pub before: Option<String>,
    /// The new row; `None` for DELETE and TRUNCATE.
    pub after: Option<String>,
    /// `["status"]`; `None` where the before image is incomplete, so what changed is unknown.
    pub changed_columns: Option<String>,
    /// Who made the change: the `context` object as JSON text (written by `capture::context`).
    pub context: Arc<str>,
    /// Extra facts as a JSON object (the leaf partition, TRUNCATE options); `None` when there are none.
    pub details: Option<String>,
}

/// The store's `row_key`: a stable 64-bit hash that finds every entry of one
/// row. `primary_key` is the entry's key JSON exactly as stored (`{"id":5}`).
/// Fields are separated by a NUL byte, which no identifier can contain.
pub fn row_key(table: &TableName, primary_key: &str) -> i64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(table.schema.as_bytes());
    h.update(b"\0");
    h.update(table.name.as_bytes());
    h.update(b"\0");
    h.update(primary_key.as_bytes());
    h.digest() as i64
}

/// The context of a change that came with no context message (trigger
/// missing, or replication role `replica`): every field present, all null.
pub const EMPTY_CONTEXT: &str = concat!(
    r#"{"db_user":null,"client_addr":null,"application_name":null,"actor":null,"source":null,"remarks":null,"#,
    r#""current_user":null,"client_port":null,"backend_pid":null}"#
);

/// What the store receives, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Entry(AuditEntry),
    /// A record that could not be decoded: kept whole so nothing vanishes silently.
    Undecodable(DecodeFailure),
    /// Everything of this transaction has been sent; once stored, the slot may advance to `end_lsn`.
    Commit(Arc<Transaction>),
    /// This transaction changed the partition map; the map after it, as
    /// [`PartitionMap::to_json`], to store with its checkpoint. Sent just
    /// before its `Commit`.
    Partitions(String),
    /// One raw record of a transaction being quarantined (see
    /// `pipeline::recovery`), in stream order: kept, not interpreted.
    Quarantined(QuarantinedRecord),
    /// The quarantined transaction is complete: once its records and the
    /// `EVENT` that names it are stored, the slot may advance to `end_lsn`.
    /// Takes the place of its `Commit`.
    QuarantineEnd(Quarantine),
}

/// A record of a quarantined transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRecord {
    /// Where the transaction's first record starts: with `seq`, the record's key.
    pub first_lsn: Lsn,
    /// Its place in the transaction, from 0.
    pub seq: i32,
    /// Where this record starts.
    pub lsn: Lsn,
    /// The record as wal2json sent it, unless it may hold redacted values
    /// (then a note saying it was withheld, as in `decode_errors`).
    pub record: String,
}

/// A quarantined transaction, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub first_lsn: Lsn,
    /// Unknown when neither its BEGIN nor its COMMIT could be decoded.
    pub xid: Option<u64>,
    pub end_lsn: Lsn,
    pub records: i32,
    /// Why it was quarantined: the store's refusal or the record that could not be decoded.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    pub lsn: Lsn,
    pub xid: Option<u64>,
    pub record: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_key_is_stable_and_separates_fields() {
        const PINNED_ORDERS_5: i64 = 7376721019730533151;
        let k = row_key(&TableName::new("public", "orders"), r#"{"id":5}"#);
        // Stored keys must never change meaning between versions.
        assert_eq!(k, PINNED_ORDERS_5);
        assert_ne!(
            k,
            row_key(&TableName::new("public", "orders"), r#"{"id":6}"#)
        );
        assert_ne!(
            row_key(&TableName::new("ab", "c"), "{}"),
            row_key(&TableName::new("a", "bc"), "{}")
        );
    }

    #[test]
    fn actions_parse_case_insensitively() {
        assert_eq!("update".parse::<Action>().unwrap(), Action::Update);
        assert!("upsert".parse::<Action>().is_err());
    }
}
