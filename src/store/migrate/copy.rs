//! The batches of a store migration and its last step (see the parent).

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Transaction};

use super::super::{partitions, StoreError};
use super::Progress;

/// Every column of an old entry but the source.
const COLUMNS: &str = "id, committed_at, xid, lsn, schema_name, table_name, action, primary_key, \
    before, after, changed_columns, context, row_key, details, actor, client_addr, hash";
/// The columns of an entry row (`pgtrail.entry_rows`) an old entry gives as
/// they are, and the same read from the batch `b`.
const ROW_COLUMNS: &str = "id, committed_at, schema_name, table_name, action, primary_key, \
    before, after, changed_columns, row_key, details, hash";
const B_ROW_COLUMNS: &str =
    "b.id, b.committed_at, b.schema_name, b.table_name, b.action, b.primary_key, \
    b.before, b.after, b.changed_columns, b.row_key, b.details, b.hash";

/// Copies the next `size` old ids, in one store transaction that advances
/// the state with them; returns the state after it.
pub(super) async fn batch(client: &mut Client, size: i64) -> Result<Progress, StoreError> {
    let tx = client.transaction().await?;
    // Locked: a second setup waits here rather than copying the same ids.
    let row = tx
        .query_one(
            "SELECT first_id, last_id, copied_upto, copied FROM pgtrail.store_migration FOR UPDATE",
            &[],
        )
        .await?;
    let (first_id, last_id, lo, copied): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let hi = lo.saturating_add(size).min(last_id);
    let made = ensure_partitions(&tx, lo, hi).await?;
    if made > 0 {
        tracing::debug!(
            made,
            after_id = lo,
            "partitions made for a batch of old entries"
        );
    }
    let mut rows = 0;
    if hi > lo {
        // Rows stored before sources had ids (migration 15) get the source
        // they were read as: 1 (the first) with an LSN, 0 (pgtrail's events)
        // without. The chain's canonical form does not cover it. Each run
        // of rows (one commit time, source, xid, LSN and context; an event
        // alone) gets a transactions row, as migration 23 split the rows of
        // a partitioned store; a run the batch's end cuts gets two, which
        // the view reads alike.
        rows = tx
            .execute(
                &format!(
                    "WITH b AS (SELECT {COLUMNS}, \
                         coalesce(source, CASE WHEN lsn IS NULL THEN 0 ELSE 1 END)::smallint AS source \
                         FROM pgtrail.entries_unpartitioned WHERE id > $1 AND id <= $2), \
                     r AS (SELECT id, first_value(id) OVER (PARTITION BY committed_at, source, xid, lsn, \
                         context::text, actor, client_addr, CASE WHEN lsn IS NULL THEN id END ORDER BY id) AS first_id \
                         FROM b), \
                     x AS (SELECT first_id, nextval('pgtrail.transactions_id_seq') AS txn \
                         FROM (SELECT DISTINCT first_id FROM r ORDER BY first_id) f), \
                     t AS (INSERT INTO pgtrail.transactions \
                         (id, committed_at, source, xid, lsn, context, actor, client_addr) \
                         SELECT x.txn, b.committed_at, b.source, b.xid, b.lsn, b.context, b.actor, b.client_addr \
                         FROM x JOIN b ON b.id = x.first_id) \
                     INSERT INTO pgtrail.entry_rows ({ROW_COLUMNS}, source, txn) \
                     SELECT {B_ROW_COLUMNS}, b.source, x.txn \
                     FROM b JOIN r ON r.id = b.id JOIN x ON x.first_id = r.first_id"
                ),
                &[&lo, &hi],
            )
            .await? as i64;
    }
    tx.execute(
        "UPDATE pgtrail.store_migration SET copied_upto = $1, copied = copied + $2",
        &[&hi, &rows],
    )
    .await?;
    tx.commit().await?;
    Ok(Progress {
        first_id,
        last_id,
        copied_upto: hi,
        copied: copied + rows,
        done: false,
    })
}

/// Makes a partition for each commit time of old ids `(lo, hi]` that no
/// live partition holds, oldest first, and returns how many it made: only
/// periods that have entries, never every period between the batch's
/// oldest and newest commit time: one entry that a source's wrong clock
/// dated decades off would make hundreds of partitions in one transaction.
/// Each turn reads the batch's rows once through the old primary key.
async fn ensure_partitions(tx: &Transaction<'_>, lo: i64, hi: i64) -> Result<usize, StoreError> {
    let mut made = 0;
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        let next: Option<DateTime<Utc>> = tx
            .query_one(
                "SELECT min(o.committed_at) FROM pgtrail.entries_unpartitioned o \
                 WHERE o.id > $1 AND o.id <= $2 AND NOT EXISTS ( \
                     SELECT FROM pgtrail.partitions p \
                     JOIN pg_inherits i ON i.inhrelid = to_regclass(format('pgtrail.%I', p.name)) \
                                       AND i.inhparent = 'pgtrail.entry_rows'::regclass \
                     WHERE p.dropped_at IS NULL AND o.committed_at >= p.from_at AND o.committed_at < p.to_at)",
                &[&lo, &hi],
            )
            .await?
            .get(0);
        let Some(at) = next else {
            return Ok(made);
        };
        // ensure_partition returns a partition holding `at`: the same time
        // twice would mean it did not, and the loop would not end.
        if last == Some(at) {
            return Err(StoreError::MigrationCheck(format!(
                "no partition could be made for the commit time {at} of an old entry"
            )));
        }
        partitions::ensure(tx, at).await?;
        last = Some(at);
        made += 1;
    }
}

/// What the last step of a move checked before it dropped the old table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Entries in the old table, and in the partitions up to its last id.
    pub old: i64,
    pub new: i64,
    /// Chain heads found to be their chain's last entry's hash.
    pub heads: usize,
}

/// Checks the copy (as many entries as the old table; each chain's head
/// is its last entry's hash) and drops the old table, in one transaction;
/// then makes the partitions ahead and updates the planner's statistics.
pub(super) async fn check_and_drop(client: &mut Client) -> Result<Checked, StoreError> {
    let failed = |what: String| StoreError::MigrationCheck(what);
    let tx = client.transaction().await?;
    let last_id: i64 = tx
        .query_one(
            "SELECT last_id FROM pgtrail.store_migration FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    let old: i64 = tx
        .query_one("SELECT count(*) FROM pgtrail.entries_unpartitioned", &[])
        .await?
        .get(0);
    let new: i64 = tx
        .query_one(
            "SELECT count(*) FROM pgtrail.entries WHERE id <= $1",
            &[&last_id],
        )
        .await?
        .get(0);
    if old != new {
        return Err(failed(format!(
            "the old table holds {old} entries and the partitions {new}"
        )));
    }
    let heads = tx
        .query(
            "SELECT s.name, h.hash, \
                    (SELECT e.hash FROM pgtrail.entries e WHERE e.source = h.source ORDER BY e.id DESC LIMIT 1) \
             FROM pgtrail.chain_heads h JOIN pgtrail.sources s ON s.id = h.source WHERE h.entries > 0",
            &[],
        )
        .await?;
    for head in &heads {
        let (name, hash, last): (String, Vec<u8>, Option<Vec<u8>>) =
            (head.get(0), head.get(1), head.get(2));
        if last.as_deref() != Some(&hash[..]) {
            return Err(failed(format!(
                "the chain head of source {name:?} is not the hash of its last copied entry"
            )));
        }
    }
    tx.batch_execute(
        "DROP TABLE pgtrail.entries_unpartitioned;
         SELECT setval('pgtrail.entries_id_seq', greatest(last_value, (SELECT coalesce(max(id), 1) FROM pgtrail.entries)))
             FROM pgtrail.entries_id_seq;
         UPDATE pgtrail.store_migration SET state = 'done', finished_at = now();",
    )
    .await?;
    tx.commit().await?;
    let now = Utc::now();
    partitions::ensure_span(client, now, now, partitions::AHEAD).await?;
    client
        .batch_execute("ANALYZE pgtrail.entry_rows, pgtrail.transactions")
        .await?;
    Ok(Checked {
        old,
        new,
        heads: heads.len(),
    })
}
