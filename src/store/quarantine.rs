//! The rows the writer keeps beside the entries: undecodable records (for
//! `pgtrail.decode_errors`) and the raw records of a quarantined transaction
//! (for `pgtrail.quarantine`, with the `EVENT` that names it).
//!
//! Like entries, they are bounded: past [`SIDE_BYTES`] or [`SIDE_ROWS`] the
//! writer sends them into the open store transaction before the source
//! transaction is whole, so a transaction of a million undecodable records
//! is not held in memory. What belongs to whole source transactions is told
//! apart from what does not, as for the entries' COPY text.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::events::{self, Category, OwnEvent};
use super::sources::{SourceId, SourceName};
use super::StoreError;
use crate::entry::{DecodeFailure, Quarantine, QuarantinedRecord};
use crate::pg::Lsn;

/// `details.event` of the `EVENT` that says a transaction was quarantined.
pub const EVENT: &str = "transaction_quarantined";

/// Send the side rows once they hold this much text …
pub const SIDE_BYTES: usize = 1 << 20;
/// … or this many rows.
pub const SIDE_ROWS: usize = 1000;

/// Side rows received, not yet sent to the store.
#[derive(Default)]
pub struct SideRows {
    failures: Vec<DecodeFailure>,
    records: Vec<QuarantinedRecord>,
    bytes: usize,
    /// How many of each belong to whole source transactions.
    whole_failures: usize,
    whole_records: usize,
    /// The digest of the quarantine's records so far.
    digest: RecordsDigest,
    /// A quarantined transaction received whole, with its records' digest:
    /// its `EVENT` goes in with the next commit.
    ended: Option<(Quarantine, [u8; 32])>,
}

impl SideRows {
    pub fn push_failure(&mut self, f: DecodeFailure) {
        self.bytes += f.record.len() + f.error.len();
        self.failures.push(f);
    }

    pub fn push_record(&mut self, r: QuarantinedRecord) {
        self.digest.add(r.lsn, r.record.as_bytes());
        self.bytes += r.record.len();
        self.records.push(r);
    }

    /// The quarantined transaction is complete. `stored`: it already was
    /// (the server sent it again): its rows add nothing and it needs no event.
    pub fn end_quarantine(&mut self, q: Quarantine, stored: bool) {
        let digest = std::mem::take(&mut self.digest).finish();
        if !stored {
            self.ended = Some((q, digest));
        }
    }

    /// A source transaction is whole: everything received so far belongs to one.
    pub fn mark_whole(&mut self) {
        self.whole_failures = self.failures.len();
        self.whole_records = self.records.len();
    }

    /// Past the bound: to be sent now, whole or not.
    pub fn over_bound(&self) -> bool {
        self.bytes >= SIDE_BYTES || self.failures.len() + self.records.len() >= SIDE_ROWS
    }

    /// Holds rows of a source transaction not yet whole.
    pub fn holds_partial(&self) -> bool {
        self.failures.len() > self.whole_failures || self.records.len() > self.whole_records
    }

    /// Inserts every row held (the caller knows the store transaction then
    /// holds part of an unfinished source transaction).
    pub async fn send_all(
        &mut self,
        client: &Client,
        source: SourceId,
        name: &SourceName,
    ) -> Result<(), StoreError> {
        self.mark_whole();
        self.send_whole(client, source, name).await
    }

    /// Inserts the rows of whole source transactions, and the `EVENT` of a
    /// quarantine that ended, inside the open store transaction; all of
    /// `source` (named `name`).
    pub async fn send_whole(
        &mut self,
        client: &Client,
        source: SourceId,
        name: &SourceName,
    ) -> Result<(), StoreError> {
        let failures: Vec<DecodeFailure> = self.failures.drain(..self.whole_failures).collect();
        let records: Vec<QuarantinedRecord> = self.records.drain(..self.whole_records).collect();
        self.whole_failures = 0;
        self.whole_records = 0;
        self.bytes = self
            .failures
            .iter()
            .map(|f| f.record.len() + f.error.len())
            .sum::<usize>()
            + self.records.iter().map(|r| r.record.len()).sum::<usize>();
        if !failures.is_empty() {
            insert_failures(client, source, &failures).await?;
        }
        if !records.is_empty() {
            insert_records(client, source, &records).await?;
        }
        if let Some((q, digest)) = self.ended.take() {
            events::record(client, &event(&q, &digest, name)).await?;
        }
        Ok(())
    }
}

/// The quarantine's records in one digest: for each, in order, its LSN (8
/// bytes big-endian), its length (4 bytes big-endian) and its bytes. The
/// `EVENT` carries it, so the events chain vouches for the records; the
/// writer computes it as it receives them, `verify` from what is stored.
#[derive(Default, Clone)]
pub struct RecordsDigest(Sha256);

impl RecordsDigest {
    pub fn add(&mut self, lsn: Lsn, record: &[u8]) {
        self.0.update(lsn.0.to_be_bytes());
        self.0.update((record.len() as u32).to_be_bytes());
        self.0.update(record);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

async fn insert_failures(
    client: &Client,
    source: SourceId,
    failures: &[DecodeFailure],
) -> Result<(), StoreError> {
    let lsns: Vec<String> = failures.iter().map(|f| f.lsn.to_string()).collect();
    let xids: Vec<Option<i64>> = failures.iter().map(|f| f.xid.map(|x| x as i64)).collect();
    let records: Vec<&str> = failures.iter().map(|f| f.record.as_str()).collect();
    let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
    client
        .execute(
            "INSERT INTO pgtrail.decode_errors (source, lsn, xid, record, error) \
             SELECT $5::smallint, l::pg_lsn, x, r, e FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(l, x, r, e)",
            &[&lsns, &xids, &records, &errors, &source.0],
        )
        .await?;
    Ok(())
}

async fn insert_records(
    client: &Client,
    source: SourceId,
    records: &[QuarantinedRecord],
) -> Result<(), StoreError> {
    let firsts: Vec<String> = records.iter().map(|r| r.first_lsn.to_string()).collect();
    let seqs: Vec<i32> = records.iter().map(|r| r.seq).collect();
    let lsns: Vec<String> = records.iter().map(|r| r.lsn.to_string()).collect();
    let bytes: Vec<&[u8]> = records.iter().map(|r| r.record.as_bytes()).collect();
    // A record stored before a crash, sent again, is already there.
    client
        .execute(
            "INSERT INTO pgtrail.quarantine (source, first_lsn, seq, lsn, record) \
             SELECT $5::smallint, f::pg_lsn, s, l::pg_lsn, r FROM unnest($1::text[], $2::int[], $3::text[], $4::bytea[]) AS u(f, s, l, r) \
             ON CONFLICT (source, first_lsn, seq) DO NOTHING",
            &[&firsts, &seqs, &lsns, &bytes, &source.0],
        )
        .await?;
    Ok(())
}

/// The `EVENT` that says a transaction of the source `name` was quarantined.
fn event(q: &Quarantine, digest: &[u8; 32], name: &SourceName) -> OwnEvent {
    let xid = q
        .xid
        .map_or_else(|| "of unknown xid".to_owned(), |x| x.to_string());
    let mut e = OwnEvent::new(
        Category::Quarantine,
        EVENT,
        "pgtrail run",
        format!(
            "transaction {xid} (ending at {}) quarantined: {} raw records kept in pgtrail.quarantine",
            q.end_lsn, q.records
        ),
    )
    .detail("source", name.as_str())
    .detail("xid", q.xid)
    .detail("first_lsn", q.first_lsn.to_string())
    .detail("end_lsn", q.end_lsn.to_string())
    .detail("records", q.records)
    .detail("records_sha256", super::chain::hex(digest))
    .detail("reason", q.reason.clone());
    // The quarantine's key in pgtrail.quarantine, so the entry finds its records.
    e.primary_key = Some(serde_json::json!({ "first_lsn": q.first_lsn.to_string() }));
    e
}

/// How many transactions of a source are quarantined, and when the newest
/// was, for `pgtrail status` and the web view.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub transactions: i64,
    pub records: i64,
    /// RFC 3339, UTC.
    pub newest: Option<String>,
}

impl Summary {
    /// Several sources' summaries as one (a transaction is its source's own,
    /// so the counts add up).
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Summary>) -> Summary {
        all.into_iter().fold(Summary::default(), |sum, s| Summary {
            transactions: sum.transactions + s.transactions,
            records: sum.records + s.records,
            // RFC 3339 in UTC sorts as text.
            newest: sum.newest.max(s.newest.clone()),
        })
    }
}

const SUMMARY_SQL: &str = "SELECT s.name, count(DISTINCT q.first_lsn), count(*), \
        to_char(max(q.quarantined_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
    FROM pgtrail.quarantine q JOIN pgtrail.sources s ON s.id = q.source";

fn summary_of(row: &tokio_postgres::Row) -> Result<(String, Summary), StoreError> {
    Ok((
        row.try_get(0)?,
        Summary {
            transactions: row.try_get(1)?,
            records: row.try_get(2)?,
            newest: row.try_get(3)?,
        },
    ))
}

/// The quarantine of the source named `source` (empty when it has none).
pub async fn summary<C: tokio_postgres::GenericClient>(
    client: &C,
    source: &str,
) -> Result<Summary, StoreError> {
    let row = client
        .query_opt(
            &format!("{SUMMARY_SQL} WHERE s.name = $1 GROUP BY s.name"),
            &[&source],
        )
        .await?;
    Ok(match row {
        Some(row) => summary_of(&row)?.1,
        None => Summary::default(),
    })
}

/// The quarantine of every source that has one, by source name.
pub async fn summaries<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<std::collections::BTreeMap<String, Summary>, StoreError> {
    let rows = client
        .query(&format!("{SUMMARY_SQL} GROUP BY s.name"), &[])
        .await?;
    rows.iter().map(summary_of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i32, text: &str) -> QuarantinedRecord {
        QuarantinedRecord {
            first_lsn: Lsn(1),
            seq,
            lsn: Lsn(seq as u64 + 1),
            record: text.to_owned(),
        }
    }

    #[test]
    fn side_rows_are_bounded_and_whole_ones_told_apart() {
        let mut side = SideRows::default();
        side.push_record(record(0, "{}"));
        assert!(side.holds_partial() && !side.over_bound());
        side.mark_whole();
        assert!(!side.holds_partial());
        for seq in 1..SIDE_ROWS as i32 {
            side.push_record(record(seq, "{}"));
        }
        assert!(side.over_bound() && side.holds_partial());
        let mut side = SideRows::default();
        side.push_record(record(0, &"x".repeat(SIDE_BYTES)));
        assert!(side.over_bound());
    }

    #[test]
    fn the_records_digest_covers_order_and_content() {
        let digest = |records: &[QuarantinedRecord]| {
            let mut d = RecordsDigest::default();
            records
                .iter()
                .for_each(|r| d.add(r.lsn, r.record.as_bytes()));
            super::super::chain::hex(&d.finish())
        };
        let (a, b) = (record(0, "ab"), record(1, "c"));
        assert_ne!(
            digest(&[a.clone(), b.clone()]),
            digest(&[b.clone(), a.clone()])
        );
        assert_ne!(
            digest(&[a.clone(), b.clone()]),
            digest(&[record(0, "a"), record(1, "bc")])
        );
    }
}
