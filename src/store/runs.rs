//! Runs, and their rows of `pgtrail.transactions` (migration 23).
//!
//! A run is consecutive entries of one source transaction with one context
//! (the context trigger sends a new context mid-transaction when who is
//! acting changes, e.g. `SET LOCAL ROLE`). What a run's entries share (the
//! context, xid, commit LSN, actor, client address) is stored once, in one
//! row of `pgtrail.transactions`, which each entry names (`entry_rows.txn`);
//! the view `pgtrail.entries` joins them back. That takes the context JSON
//! and three indexes off every entry, and the entries' COPY is capture's
//! largest cost.
//!
//! What the writer keeps with this module: a run's row is committed in the
//! same store transaction as its entries, never one without the other (an
//! entry without its row disappears from the view). Only one COPY can be
//! open on a connection, and the entries' COPY stays open for the whole
//! store transaction, so the rows (small) wait here and go in with a COPY of
//! their own at commit, after the entries' COPY has ended. As for entries,
//! only the rows of whole source transactions go in then; past [`ROWS_BYTES`]
//! (a transaction that changes its context without end) all of them are sent
//! at once, and the store transaction then holds part of an unfinished one.
//!
//! Ids come from `pgtrail.transactions_id_seq` in blocks of one round trip
//! each ([`IdPool`]); what is left of a block is dropped at every commit, so
//! that ids follow commit order closely (the web view sorts by actor, then
//! transaction id: a block kept for an hour by a slow source would put its
//! transactions out of time order). A dropped id is a gap, never a repeat.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::context::ContextColumns;
use super::encode::{
    encode_transaction_row, RunRow, BINARY_COPY_HEADER, BINARY_COPY_TRAILER, TRANSACTIONS_COPY_SQL,
};
use super::sources::SourceId;
use super::StoreError;
use crate::entry::{AuditEntry, Transaction};

/// Send the rows before their commit once they hold this much: a bound on
/// memory for a transaction that changes its context at every change.
pub const ROWS_BYTES: usize = 1 << 20;

/// Reserves ids from the sequence, `$1` of them, in one round trip.
const RESERVE_SQL: &str =
    "SELECT nextval('pgtrail.transactions_id_seq') FROM generate_series(1, $1::int)";

/// The runs of what the writer has encoded and not yet committed.
pub(super) struct Runs {
    source: SourceId,
    /// The run the last entry encoded belongs to.
    current: Option<Current>,
    pool: IdPool,
    /// Runs as binary COPY rows for `pgtrail.transactions`, not yet sent.
    rows: BytesMut,
    /// How much of `rows` belongs to whole source transactions.
    whole_bytes: usize,
}

/// The run being encoded.
struct Current {
    txn: Arc<Transaction>,
    context: Arc<str>,
    id: i64,
}

impl Current {
    /// `entry` continues this run. The assembler shares one `Arc` per
    /// transaction and per context message, so the pointers nearly always
    /// decide; the values decide otherwise (a schema change carries its own
    /// context, often equal to the one before it).
    fn takes(&self, entry: &AuditEntry) -> bool {
        (Arc::ptr_eq(&self.txn, &entry.txn) || *self.txn == *entry.txn)
            && (Arc::ptr_eq(&self.context, &entry.context) || *self.context == *entry.context)
    }
}

impl Runs {
    pub fn new(source: SourceId) -> Self {
        Runs {
            source,
            current: None,
            pool: IdPool::default(),
            rows: BytesMut::new(),
            whole_bytes: 0,
        }
    }

    /// The id of the run `entry` continues, if it continues the current one.
    pub fn continued(&self, entry: &AuditEntry) -> Option<i64> {
        self.current
            .as_ref()
            .filter(|c| c.takes(entry))
            .map(|c| c.id)
    }

    /// A new run needs ids reserved first ([`Self::reserve`]).
    pub fn needs_ids(&self) -> bool {
        self.pool.ids.is_empty()
    }

    /// Reserves the next block of ids. It runs a query, so no COPY may be open
    /// on `client`.
    pub async fn reserve(&mut self, client: &Client) -> Result<(), StoreError> {
        let block = self.pool.block();
        let rows = client.query(RESERVE_SQL, &[&block]).await?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<_, i64>(0))
            .collect::<Result<Vec<_>, _>>()?;
        self.pool.refill(ids);
        Ok(())
    }

    /// Begins `entry`'s run, committed at `committed_at` (microseconds since
    /// 1970): takes an id and encodes its row. Returns the id; `None` when
    /// none is reserved.
    pub fn begin(&mut self, entry: &AuditEntry, committed_at: i64) -> Option<i64> {
        let id = self.pool.take()?;
        let cols = ContextColumns::of(&entry.context);
        let row = RunRow {
            id,
            source: self.source,
            committed_at,
            txn: &entry.txn,
            context: &entry.context,
            cols: &cols,
        };
        encode_transaction_row(&row, &mut self.rows);
        self.current = Some(Current {
            txn: entry.txn.clone(),
            context: entry.context.clone(),
            id,
        });
        Some(id)
    }

    /// A source transaction is whole: every run so far belongs to one.
    pub fn mark_whole(&mut self) {
        self.whole_bytes = self.rows.len();
    }

    /// Past the bound: to be sent now, whole or not.
    pub fn over_bound(&self) -> bool {
        self.rows.len() >= ROWS_BYTES
    }

    /// Holds rows of a source transaction not yet whole.
    pub fn holds_partial(&self) -> bool {
        self.rows.len() > self.whole_bytes
    }

    /// Inserts every row held (the caller knows the store transaction then
    /// holds part of an unfinished source transaction). No other COPY may be
    /// open on `client`.
    pub async fn send_all(&mut self, client: &Client) -> Result<(), StoreError> {
        self.mark_whole();
        self.send_whole(client).await
    }

    /// Inserts the rows of whole source transactions into the open store
    /// transaction. No other COPY may be open on `client`.
    pub async fn send_whole(&mut self, client: &Client) -> Result<(), StoreError> {
        if self.whole_bytes == 0 {
            return Ok(());
        }
        let rows = self.rows.split_to(self.whole_bytes).freeze();
        self.whole_bytes = 0;
        let mut sink = Box::pin(client.copy_in(TRANSACTIONS_COPY_SQL).await?);
        sink.feed(Bytes::from_static(BINARY_COPY_HEADER)).await?;
        sink.feed(rows).await?;
        sink.send(Bytes::from_static(BINARY_COPY_TRAILER)).await?;
        sink.as_mut().finish().await?;
        Ok(())
    }

    /// The store transaction committed: what is left of the block is dropped.
    pub fn committed(&mut self) {
        self.pool.committed();
    }
}

/// Ids reserved from `pgtrail.transactions_id_seq`, not yet given to a run.
#[derive(Default)]
struct IdPool {
    /// Descending, so that `pop` gives the smallest: runs get ids in order.
    ids: Vec<i64>,
    /// Runs begun since the last commit, and in the store transaction before.
    used: usize,
    last_used: usize,
}

impl IdPool {
    /// The fewest ids reserved at once: a trickle of one run per commit
    /// wastes a few ids, which costs nothing (bigint), rather than round trips.
    const MIN_BLOCK: usize = 16;
    /// The most: a burst asks again, for more each time, up to this.
    const MAX_BLOCK: usize = 4096;

    /// How many ids to reserve next: twice what the last store transaction
    /// used, or this one so far when more (so the blocks of a burst grow
    /// threefold, and a burst of n runs takes about log3(n) round trips).
    fn block(&self) -> i32 {
        let want = 2 * self.used.max(self.last_used);
        // At most MAX_BLOCK, which fits.
        want.clamp(Self::MIN_BLOCK, Self::MAX_BLOCK) as i32
    }

    fn refill(&mut self, mut ids: Vec<i64>) {
        // Other sources' writers draw from the same sequence at once, so a
        // block need not be contiguous, only each id unique.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        self.ids = ids;
    }

    fn take(&mut self) -> Option<i64> {
        let id = self.ids.pop()?;
        self.used += 1;
        Some(id)
    }

    fn committed(&mut self) {
        self.ids.clear();
        self.last_used = std::mem::take(&mut self.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_twice_the_last_use_within_its_bounds_and_doubles_in_a_burst() {
        let mut pool = IdPool::default();
        assert_eq!(pool.block(), 16, "nothing used yet: the least");
        pool.refill((1..=16).rev().collect());
        assert_eq!(pool.take(), Some(1), "the smallest first");
        assert_eq!(pool.take(), Some(2));
        pool.committed();
        assert!(pool.ids.is_empty(), "what is left is dropped at commit");
        assert_eq!(pool.block(), 16, "two used: still the least");

        // A burst: each block is twice all used so far, so they grow threefold.
        let mut next = 100;
        let mut sizes = Vec::new();
        for _ in 0..5 {
            let n = pool.block();
            sizes.push(n);
            pool.refill((next..next + i64::from(n)).collect());
            next += i64::from(n);
            while pool.take().is_some() {}
        }
        assert_eq!(sizes, [16, 32, 96, 288, 864]);
        pool.committed();
        assert_eq!(
            pool.block(),
            2 * 1296,
            "twice what the last transaction used"
        );

        pool.used = 100_000;
        assert_eq!(pool.block(), 4096, "at most the largest");
        pool.committed();
        pool.committed();
        assert_eq!(pool.block(), 16, "an idle transaction in between");
    }

    #[test]
    fn a_block_hands_out_each_id_once_in_ascending_order() {
        let mut pool = IdPool::default();
        pool.refill(vec![40, 7, 12, 9]);
        let got: Vec<i64> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(got, [7, 9, 12, 40]);
        assert_eq!(pool.used, 4);
    }

    fn entry(txn: &Arc<Transaction>, context: &Arc<str>) -> AuditEntry {
        AuditEntry {
            txn: txn.clone(),
            table: crate::table::TableName::new("public", "t"),
            action: crate::entry::Action::Insert,
            primary_key: Some(r#"{"id":1}"#.into()),
            before: None,
            after: Some(r#"{"id":1}"#.into()),
            changed_columns: None,
            context: context.clone(),
            details: None,
        }
    }

    fn txn(xid: u64) -> Arc<Transaction> {
        Arc::new(Transaction {
            xid,
            committed_at: "2026-12-07 22:00:00+00".into(),
            commit_lsn: crate::pg::Lsn(xid * 100),
            end_lsn: crate::pg::Lsn(xid * 100 + 8),
        })
    }

    #[test]
    fn a_run_ends_where_the_transaction_or_the_context_changes() {
        let mut runs = Runs::new(SourceId(1));
        let (t1, t2) = (txn(1), txn(2));
        let app: Arc<str> = Arc::from(r#"{"db_user":"app"}"#);
        let admin: Arc<str> = Arc::from(r#"{"db_user":"admin"}"#);
        assert!(runs.needs_ids());
        assert_eq!(runs.continued(&entry(&t1, &app)), None);
        assert_eq!(runs.begin(&entry(&t1, &app), 0), None, "no id reserved");
        runs.pool.refill(vec![10, 11, 12]);
        assert_eq!(runs.begin(&entry(&t1, &app), 0), Some(10));
        assert_eq!(runs.continued(&entry(&t1, &app)), Some(10));
        // An equal context in another Arc (a schema change's) continues the run.
        let same: Arc<str> = Arc::from(r#"{"db_user":"app"}"#);
        assert_eq!(runs.continued(&entry(&t1, &same)), Some(10));
        assert_eq!(runs.continued(&entry(&t1, &admin)), None, "SET LOCAL ROLE");
        assert_eq!(runs.begin(&entry(&t1, &admin), 0), Some(11));
        let t1_rows = runs.rows.len();
        assert!(runs.holds_partial());
        runs.mark_whole();
        assert!(!runs.holds_partial());
        assert_eq!(
            runs.continued(&entry(&t2, &admin)),
            None,
            "a new transaction"
        );
        assert_eq!(runs.begin(&entry(&t2, &admin), 0), Some(12));
        assert!(runs.holds_partial(), "t2 is not whole yet");
        assert_eq!(runs.whole_bytes, t1_rows, "t1's two runs are");
        assert!(runs.needs_ids());
        runs.committed();
        assert_eq!(
            runs.continued(&entry(&t2, &admin)),
            Some(12),
            "a run outlives a commit"
        );
        assert!(!runs.over_bound());
    }
}
