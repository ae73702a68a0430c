//! The hash chain that makes the store tamper-evident.
//!
//! Every entry carries `hash = SHA-256(previous hash ‖ SHA-256(canonical(entry)))`,
//! the previous hash being that of the entry before it in the same chain (32
//! zero bytes for the first). The inner digest depends on the entry alone, so
//! an event can be hashed before its writer knows the head it will follow;
//! the store then links it in one statement that holds the head's row lock.
//! There is one chain per source ([`super::sources`]), told apart by the
//! entry's `source`: pgtrail's own events (source 0: no source transaction,
//! no xid, no LSN; written by the web view, the CLI and every daemon,
//! serialized on their head row), and one chain per source database
//! (written by the one daemon that captures it), which includes the
//! daemon's security events about a source transaction (action `EVENT` with
//! its xid and LSN). Entries stored before sources had ids have no `source`:
//! those with an LSN are the first source's, the others events. Each
//! chain's head (the last entry's hash, and how many entries it holds) is
//! kept in `pgtrail.chain_heads`, written in the same store transaction as
//! the entries, so the head and the entries are never out of step.
//!
//! **The canonical form** is defined over an entry's content, not over how the
//! store lays it out, so a later change of the store's layout keeps old hashes
//! verifiable. It is the entry's fields in this order, each written as
//! `0x00` (null), `0x01` + 8 bytes big-endian (a number), or `0x02` + 4 bytes
//! big-endian length + UTF-8 bytes (text):
//! `committed_at` (microseconds since 1970-01-01 UTC), `xid`, `lsn` (as the
//! 64-bit position), `schema_name`, `table_name`, `action`, `primary_key`,
//! `before`, `after`, `changed_columns`, `context`, `details` (JSON columns as
//! the exact text stored). The entry's `id` is not part of it (the store
//! assigns it after the hash is computed); order is kept by the chain itself.
//! The columns pgtrail derives from the content (`row_key`, `actor`,
//! `client_addr`) are not hashed either: `pgtrail verify` recomputes them and
//! reports an entry whose derived columns disagree with its content.
//!
//! What the chain proves: an UPDATE of an entry breaks that entry's hash; a
//! DELETE breaks the next entry's; an entry INSERTed anywhere breaks its own
//! or its successor's; a chain cut or extended at its end disagrees with its
//! head. What it cannot prove alone: that someone with write access did not
//! recompute every hash and the head after a change. Signed heads (kept
//! outside the store) close that.

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use super::sources::{SourceId, ENTRY_SOURCE_SQL};
use super::StoreError;

/// The hash before the first entry of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// Which chain an entry belongs to: its source's ([`SourceId`]). Source 0
/// is the chain of pgtrail's own events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain(pub SourceId);

impl Chain {
    /// pgtrail's own events outside any source transaction.
    pub const EVENTS: Chain = Chain(SourceId::EVENTS);

    /// The chain of an entry as stored: by its `source` column, or (stored
    /// before sources had ids) by whether it has a source transaction's LSN.
    pub fn of_entry(source: Option<i16>, has_lsn: bool) -> Chain {
        Chain(SourceId::of_entry(source, has_lsn))
    }

    /// SQL for "in this chain", over `pgtrail.entries`.
    pub fn sql_condition(self) -> String {
        format!("{ENTRY_SOURCE_SQL} = {}", self.0 .0)
    }
}

/// An entry's content, as the canonical form takes it.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub committed_at_micros: i64,
    pub xid: Option<i64>,
    pub lsn: Option<u64>,
    pub schema: &'a str,
    pub table: &'a str,
    pub action: &'a str,
    pub primary_key: Option<&'a str>,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub changed_columns: Option<&'a str>,
    pub context: &'a str,
    pub details: Option<&'a str>,
}

impl Content<'_> {
    /// The entry's hash, given the hash of the entry before it in its chain.
    pub fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        link(prev, &self.digest())
    }

    /// SHA-256 of the canonical form.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        number(&mut h, Some(self.committed_at_micros));
        number(&mut h, self.xid);
        number(&mut h, self.lsn.map(|l| l as i64));
        for text in [Some(self.schema), Some(self.table), Some(self.action)] {
            field(&mut h, text);
        }
        for json in [
            self.primary_key,
            self.before,
            self.after,
            self.changed_columns,
            Some(self.context),
            self.details,
        ] {
            field(&mut h, json);
        }
        h.finalize().into()
    }
}

/// The chain's step: `SHA-256(prev ‖ digest)`; in SQL, `sha256(prev || digest)`.
pub fn link(prev: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(digest);
    h.finalize().into()
}

fn number(h: &mut Sha256, n: Option<i64>) {
    match n {
        None => h.update([0u8]),
        Some(n) => {
            h.update([1u8]);
            h.update(n.to_be_bytes());
        }
    }
}

fn field(h: &mut Sha256, text: Option<&str>) {
    match text {
        None => h.update([0u8]),
        Some(t) => {
            h.update([2u8]);
            // A value over 4 GiB cannot be stored in PostgreSQL at all.
            h.update((t.len() as u32).to_be_bytes());
            h.update(t.as_bytes());
        }
    }
}

/// Microseconds since 1970-01-01 UTC of a commit time as the source's
/// server prints it (`2026-11-22 10:00:00.123456+00`, `…+05:30`): PostgreSQL
/// writes these in ISO form whatever the session's DateStyle.
pub fn commit_time_micros(text: &str) -> Option<i64> {
    let sign_at = text.rfind(['+', '-']).filter(|&i| i > 10)?;
    let (local, offset) = text.split_at(sign_at);
    let local = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let sign: i64 = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let mut seconds = 0i64;
    for (unit, part) in [3600i64, 60, 1].into_iter().zip(&mut parts) {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seconds += unit * part.parse::<i64>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let utc = local.and_utc().timestamp_micros();
    Some(utc - sign * seconds * 1_000_000)
}

/// A chain's head hash as stored.
pub async fn head<C: GenericClient>(client: &C, chain: Chain) -> Result<[u8; 32], StoreError> {
    let missing = || StoreError::ChainHead(format!("source {}", chain.0 .0));
    let row = client
        .query_opt(
            "SELECT hash FROM pgtrail.chain_heads WHERE source = $1",
            &[&chain.0 .0],
        )
        .await?
        .ok_or_else(missing)?;
    let hash: Vec<u8> = row.get(0);
    hash.try_into().map_err(|_| missing())
}

pub use crate::text::hex;

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content<'static> {
        Content {
            committed_at_micros: 1_700_000_000_000_000,
            xid: Some(42),
            lsn: Some(0x16_B374_D848),
            schema: "public",
            table: "orders",
            action: "UPDATE",
            primary_key: Some(r#"{"id":5}"#),
            before: Some(r#"{"id":5,"status":"new"}"#),
            after: Some(r#"{"id":5,"status":"paid"}"#),
            changed_columns: Some(r#"["status"]"#),
            context: r#"{"db_user":"app"}"#,
            details: None,
        }
    }

    #[test]
    fn the_canonical_form_is_pinned() {
        // A stored hash must keep its meaning across versions: if this
        // changes, every existing chain stops verifying. The value was
        // computed apart from this code, from the definition in the module doc.
        assert_eq!(
            hex(&content().hash(&GENESIS)),
            "7df8c05adfca80662f5ea9e6464cafd03f8fe230ae88fbe90fdbbafa714efbd1"
        );
    }

    #[test]
    fn every_field_and_the_predecessor_count() {
        let base = content().hash(&GENESIS);
        assert_ne!(content().hash(&[1; 32]), base);
        let mut c = content();
        c.details = Some("{}");
        assert_ne!(c.hash(&GENESIS), base);
        let mut c = content();
        c.xid = None;
        assert_ne!(c.hash(&GENESIS), base);
        let mut c = content();
        c.committed_at_micros += 1;
        assert_ne!(c.hash(&GENESIS), base);
        // Field boundaries are unambiguous: moving text between fields changes the hash.
        let mut c = content();
        c.schema = "publico";
        c.table = "rders";
        assert_ne!(c.hash(&GENESIS), base);
        // A null differs from an empty text.
        let mut c = content();
        c.details = Some("");
        let mut d = content();
        d.details = None;
        assert_ne!(c.hash(&GENESIS), d.hash(&GENESIS));
    }

    #[test]
    fn commit_times_as_postgresql_prints_them() {
        let utc = commit_time_micros("2026-11-22 10:00:00.5+00").unwrap();
        assert_eq!(utc % 1_000_000, 500_000);
        assert_eq!(commit_time_micros("2026-11-22 10:00:00.5+00"), Some(utc));
        assert_eq!(commit_time_micros("2026-11-22 15:30:00.5+05:30"), Some(utc));
        assert_eq!(commit_time_micros("2026-11-22 06:00:00.5-04"), Some(utc));
        assert_eq!(
            commit_time_micros("2026-11-22 10:00:01+00:00:30"),
            Some(utc + 500_000 - 30_000_000)
        );
        assert_eq!(
            commit_time_micros("2026-11-22 10:00:00.123456+00").unwrap() % 1_000_000,
            123_456
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22 10:00:00",
            "2026-11-22 10:00:00+5",
            "x+00",
        ] {
            assert_eq!(commit_time_micros(bad), None, "{bad}");
        }
    }
}
