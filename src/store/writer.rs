//! The store writer: receives events in stream order and writes them in
//! batches, each batch one store transaction that ends with the checkpoint.
//!
//! Entries go in with COPY, sent in chunks, so a source transaction of any
//! size is streamed rather than held: a million-row transaction is many chunks
//! inside one store transaction, committed only when its commit arrives. A
//! store transaction is only ever committed at a source transaction boundary,
//! which is what keeps the checkpoint exact.
//!
//! An entry's own columns go to `pgtrail.entry_rows`; what its run (entries
//! of one source transaction with one context) shares goes to one row of
//! `pgtrail.transactions`, sent with its own COPY when the store transaction
//! commits, in the same store transaction as the run's entries ([`super::runs`]).
//!
//! Every entry is hashed into its source's chain ([`super::chain`]) as it is
//! encoded; the chain's head is updated with the checkpoint, in the same
//! store transaction, and only if it is still the head this writer started
//! from (one daemon per source).
//!
//! Every commit time must fall in a partition of `pgtrail.entries`
//! ([`super::partitions`]): the writer knows the ranges the ledger holds
//! and, before encoding the first entry of a transaction outside them (a
//! lagging source's backlog, a clock far ahead), commits what it holds (a
//! transaction boundary, as at any commit), has the partition made with
//! nothing open (or on a connection of its own, when what it holds cannot
//! be committed yet) and starts its next store transaction, which sees it.
//! The store never meets a row without a partition from this writer.
//!
//! One COPY statement stays open for the whole store transaction and chunks
//! are sent without waiting for the store to take each one in: the store
//! backend is the largest cost of capture, and it inserts one chunk while
//! pgtrail decodes and encodes the next. Waiting for each chunk's COPY to
//! complete left both sides idle in turn.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, CopyInSink};

use super::chain::{self, Chain};
use super::encode::replace_nul;
pub use super::encode::{content, encode_copy_row, encode_sourced_row, COPY_SQL, SOURCED_COPY_SQL};
use super::encode::{encode_binary_row, BINARY_COPY_HEADER, BINARY_COPY_SQL, BINARY_COPY_TRAILER};
use super::partitions::{self, Ranges};
use super::quarantine::SideRows;
use super::runs::Runs;
use super::signing::HeadSigner;
use super::sources::{SourceId, SourceName};
use super::tally::Tally;
use super::StoreError;
use crate::entry::{AuditEntry, Event};
use crate::pg::{Lsn, PgUrl, SlotName};

/// Send a chunk of COPY rows once this much is buffered: small enough that the
/// store starts on it soon, large enough that sending costs little.
const COPY_CHUNK_BYTES: usize = 256 << 10;
/// Commit at a transaction boundary this often while changes keep coming
/// (and at once when the first change after a quiet spell arrives).
const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// `store.timeout_seconds` when not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct StoreWriter {
    client: Client,
    /// Where `client` is connected, for a connection of its own ([`Self::make_partition`]).
    store: PgUrl,
    /// The source this writer stores, whose chain and checkpoint it moves.
    source: SourceId,
    /// Its name, as the metrics and the signed heads name it.
    name: SourceName,
    slot: SlotName,
    /// Entries as binary COPY rows, not yet sent.
    copy_buf: BytesMut,
    /// Undecodable and quarantined records, not yet sent.
    side: SideRows,
    /// The runs' rows of `pgtrail.transactions`, not yet sent, and their ids.
    runs: Runs,
    /// A store transaction is open.
    open: bool,
    /// The COPY statement chunks are being sent to, inside the open store
    /// transaction; it is finished before any other statement runs.
    copy: Option<Pin<Box<CopyInSink<Bytes>>>>,
    /// The open store transaction holds rows of a source transaction whose commit has not arrived.
    holds_partial: bool,
    /// How much of `copy_buf` belongs to whole source transactions.
    whole_bytes: usize,
    /// End LSN of the last source transaction received whole, not yet committed to the store.
    pending_checkpoint: Option<Lsn>,
    /// The partition map after the newest transaction that changed it: of a
    /// transaction still arriving, and of one received whole (stored with the
    /// next checkpoint).
    partial_partitions: Option<String>,
    whole_partitions: Option<String>,
    last_commit: Instant,
    durable: watch::Sender<Lsn>,
    chain: ChainState,
    /// The time ranges of the live partitions, as last read from the ledger.
    partitions: Ranges,
    signing: Option<Signing>,
    /// Commit each source transaction alone while the checkpoint is at or
    /// below this: the store refused a batch, and the next refusal must name
    /// one transaction (see `pipeline::recovery`).
    isolate_until: Option<Lsn>,
    /// How long one step (a batch, a commit) may take before the store is
    /// taken for gone (`store.timeout_seconds`).
    timeout: Duration,
    /// What the open store transaction holds, for the metrics: of the source
    /// transaction still arriving, and of those received whole. Recorded only
    /// once committed, so the figures count what the store really holds.
    partial: Tally,
    whole: Tally,
}

/// Signing the chain heads (`[store] signing_key_file`).
struct Signing {
    signer: HeadSigner,
    last: Instant,
    /// Something was committed since the last signature.
    due: bool,
}

/// Where this writer is in the capture chain.
struct ChainState {
    /// The head as stored (loaded when the writer starts, then as committed).
    committed: [u8; 32],
    /// The hash of the last entry encoded.
    last: [u8; 32],
    /// Entries encoded since the last commit.
    encoded: i64,
    /// The hash and count up to the last whole source transaction.
    whole: [u8; 32],
    whole_entries: i64,
    /// The commit time of the transaction last encoded, parsed once per transaction.
    committed_at: Option<(Arc<crate::entry::Transaction>, i64)>,
}

impl StoreWriter {
    pub fn new(
        (client, store): (Client, PgUrl),
        (source, name): (SourceId, SourceName),
        slot: SlotName,
        durable: watch::Sender<Lsn>,
    ) -> Self {
        StoreWriter {
            client,
            store,
            source,
            name,
            slot,
            copy_buf: BytesMut::with_capacity(COPY_CHUNK_BYTES + (64 << 10)),
            side: SideRows::default(),
            runs: Runs::new(source),
            open: false,
            copy: None,
            holds_partial: false,
            whole_bytes: 0,
            pending_checkpoint: None,
            partial_partitions: None,
            whole_partitions: None,
            last_commit: Instant::now(),
            durable,
            chain: ChainState {
                committed: chain::GENESIS,
                last: chain::GENESIS,
                encoded: 0,
                whole: chain::GENESIS,
                whole_entries: 0,
                committed_at: None,
            },
            partitions: Ranges::default(),
            signing: None,
            isolate_until: None,
            timeout: DEFAULT_TIMEOUT,
            partial: Tally::default(),
            whole: Tally::default(),
        }
    }

    /// Commits each source transaction alone until the checkpoint passes `until`.
    pub fn isolating_until(mut self, until: Option<Lsn>) -> Self {
        self.isolate_until = until;
        self
    }

    /// Gives up on a store that takes longer than `timeout` for one step.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// True while each source transaction is to be committed alone.
    fn isolating(&self) -> bool {
        self.isolate_until
            .is_some_and(|until| *self.durable.borrow() <= until)
    }

    /// Signs the chain heads with `signer`, at most every `signer.every` and when the writer stops.
    pub fn with_signer(mut self, signer: Option<HeadSigner>) -> Self {
        self.signing = signer.map(|signer| Signing {
            signer,
            last: Instant::now(),
            due: true,
        });
        self
    }

    /// Signs the heads if something was committed since the last signature
    /// and the interval has passed (or `now` says the writer is stopping).
    async fn sign_heads(&mut self, now: bool) -> Result<(), StoreError> {
        let Some(s) = &mut self.signing else {
            return Ok(());
        };
        if s.due && (now || s.last.elapsed() >= s.signer.every) {
            s.signer.sign(&self.client, self.source, &self.name).await?;
            s.last = Instant::now();
            s.due = false;
        }
        Ok(())
    }

    /// Runs until the sender side closes. What is whole is committed; a
    /// partial source transaction is rolled back (the server sends it again).
    /// A step the store does not finish within the timeout ends the run.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Vec<Event>>) -> Result<(), StoreError> {
        let limit = self.timeout;
        let head = within(limit, chain::head(&self.client, Chain(self.source))).await?;
        self.chain.committed = head;
        self.chain.last = head;
        self.chain.whole = head;
        self.partitions = within(limit, Ranges::load(&self.client)).await?;
        loop {
            // (While the open store transaction holds part of an unfinished
            // source transaction nothing can be committed: just wait for more.)
            let batch = if self.pending_checkpoint.is_some() && !self.holds_partial {
                // Something whole waits to be committed. Committing as soon as
                // the channel runs dry would make one store transaction (COPY,
                // checkpoint UPDATE, COMMIT and its WAL flush) per source
                // transaction under a steady trickle, which cost the
                // application's server more than storing the entries did; so
                // gather until the commit is due. After an idle spell it is due
                // at once, so a lone change is stored without delay.
                match tokio::time::timeout_at(
                    (self.last_commit + COMMIT_INTERVAL).into(),
                    rx.recv(),
                )
                .await
                {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(_) => {
                        within(limit, self.commit_if_whole()).await?;
                        continue;
                    }
                }
            } else {
                match rx.recv().await {
                    Some(batch) => batch,
                    None => break,
                }
            };
            within(limit, self.take_batch(batch)).await?;
        }
        within(limit, self.stop()).await
    }

    /// Encodes one batch of events, committing and sending as they call for.
    async fn take_batch(&mut self, batch: Vec<Event>) -> Result<(), StoreError> {
        for event in batch {
            match event {
                Event::Entry(entry) => {
                    let micros = self.commit_micros(&entry)?;
                    if !self.partitions.covers(micros) {
                        self.make_partition(micros).await?;
                    }
                    let txn = self.run_id(&entry, micros).await?;
                    self.encode(entry, txn, micros)
                }
                Event::Undecodable(failure) => {
                    self.partial.decode_errors += 1;
                    self.side.push_failure(failure)
                }
                Event::Quarantined(record) => self.side.push_record(record),
                Event::Partitions(map) => self.partial_partitions = Some(map),
                Event::Commit(txn) => {
                    if let Some(map) = self.partial_partitions.take() {
                        self.whole_partitions = Some(map);
                    }
                    self.partial.last_commit_micros = chain::commit_time_micros(&txn.committed_at);
                    if self.partial.entries.iter().any(|n| *n > 0) {
                        self.partial.transactions = 1;
                        self.partial.last_entries_commit_micros = self.partial.last_commit_micros;
                    }
                    self.mark_whole(txn.end_lsn);
                    if self.isolating() {
                        self.commit_if_whole().await?;
                    }
                }
                Event::QuarantineEnd(q) => {
                    let end = q.end_lsn;
                    let stored = end <= *self.durable.borrow();
                    if !stored {
                        self.partial.quarantined += 1;
                    }
                    self.side.end_quarantine(q, stored);
                    self.mark_whole(end);
                    // Alone, so that a refusal of the quarantine itself names it.
                    self.commit_if_whole().await?;
                }
            }
        }
        // A due commit comes before sending the rest: sending a chunk
        // that ends inside a source transaction holds the commit back
        // until that transaction's commit arrives.
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit_if_whole().await?;
        }
        // The entries go first also when only the runs are over their bound:
        // this store transaction then takes entry_rows' lock before
        // transactions', the order drop_partition and record_event take
        // them in, so the two never wait on each other in a circle.
        if self.copy_buf.len() >= COPY_CHUNK_BYTES
            || self.side.over_bound()
            || self.runs.over_bound()
        {
            self.holds_partial |= self.copy_buf.len() > self.whole_bytes;
            let all = self.copy_buf.len();
            self.send_copy(all).await?;
            self.whole_bytes = 0;
        }
        if self.side.over_bound() {
            self.holds_partial |= self.side.holds_partial();
            self.begin().await?;
            self.end_copy().await?;
            self.side
                .send_all(&self.client, self.source, &self.name)
                .await?;
        }
        if self.runs.over_bound() {
            self.holds_partial |= self.runs.holds_partial();
            self.begin().await?;
            self.end_copy().await?;
            self.runs.send_all(&self.client).await?;
        }
        Ok(())
    }

    /// The id of `entry`'s run ([`super::runs`]): the current run's, or a new
    /// one's. When the reserved ids have run out, the next block is reserved
    /// first, which needs the entries' COPY ended if it is open: rare, as
    /// the block is sized from what the last store transaction used and the
    /// pool is refilled at the first run after each commit, when no COPY is
    /// open.
    async fn run_id(&mut self, entry: &AuditEntry, micros: i64) -> Result<i64, StoreError> {
        if let Some(id) = self.runs.continued(entry) {
            return Ok(id);
        }
        if self.runs.needs_ids() {
            self.end_copy().await?;
            self.runs.reserve(&self.client).await?;
        }
        self.runs
            .begin(entry, micros)
            .ok_or(StoreError::TransactionIds)
    }

    /// The commit time of `entry`'s transaction in microseconds, parsed once per transaction.
    fn commit_micros(&mut self, entry: &AuditEntry) -> Result<i64, StoreError> {
        Ok(match &self.chain.committed_at {
            Some((txn, micros)) if Arc::ptr_eq(txn, &entry.txn) => *micros,
            _ => {
                let micros = chain::commit_time_micros(&entry.txn.committed_at)
                    .ok_or_else(|| StoreError::CommitTime(entry.txn.committed_at.clone()))?;
                self.chain.committed_at = Some((entry.txn.clone(), micros));
                micros
            }
        })
    }

    /// Has the partition for commit time `micros` made, before the first
    /// entry of its transaction is encoded. What the open store transaction
    /// holds is whole (a transaction boundary) and is committed first, so
    /// that the next store transaction sees the partition, whoever made it.
    ///
    /// When it cannot be committed (it holds this source transaction's side
    /// rows, sent past their bound before its first entry), the partition is
    /// made and committed on a connection of its own: inside the open store
    /// transaction its locks would be held until that transaction's commit
    /// arrives, however long it streams, and other daemons, the keeper, the
    /// web view's events and retention would wait on them in vain. The next
    /// COPY sees it (each statement reads the partitions anew); were it not
    /// to, "no partition" is transient: all rolls back together and the
    /// next session, from the checkpoint, finds it made.
    async fn make_partition(&mut self, micros: i64) -> Result<(), StoreError> {
        self.commit_if_whole().await?;
        if self.open {
            self.end_copy().await?;
        }
        self.partitions = Ranges::load(&self.client).await?;
        if self.partitions.covers(micros) {
            return Ok(());
        }
        let at = chrono::DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| StoreError::CommitTime(micros.to_string()))?;
        let name = if self.open {
            let own = crate::pg::connect(&self.store, "pgtrail run").await?;
            partitions::ensure(&own, at).await?
        } else {
            partitions::ensure(&self.client, at).await?
        };
        tracing::info!(partition = %name, commit_time = %at, "made a partition for a commit time outside the partitions made ahead");
        self.partitions = Ranges::load(&self.client).await?;
        Ok(())
    }

    /// Hashes an entry into the chain and appends it as a binary COPY row;
    /// `txn` is its run's id, `committed_at` its [`Self::commit_micros`].
    fn encode(&mut self, mut entry: AuditEntry, txn: i64, committed_at: i64) {
        replace_nul(&mut entry);
        let hash = content(&entry, committed_at).hash(&self.chain.last);
        self.chain.last = hash;
        self.chain.encoded += 1;
        self.partial.entry(entry.action);
        encode_binary_row(
            &entry,
            &hash,
            (self.source, txn),
            committed_at,
            &mut self.copy_buf,
        );
    }

    /// A source transaction ending at `end` is whole: everything received so far may be committed.
    fn mark_whole(&mut self, end: Lsn) {
        self.holds_partial = false;
        self.whole_bytes = self.copy_buf.len();
        self.side.mark_whole();
        self.runs.mark_whole();
        self.chain.whole = self.chain.last;
        self.chain.whole_entries = self.chain.encoded;
        self.pending_checkpoint = Some(end);
        let partial = std::mem::take(&mut self.partial);
        self.whole.absorb(partial);
    }

    /// Commits what is whole, rolls back the rest, signs the heads.
    async fn stop(&mut self) -> Result<(), StoreError> {
        self.commit_if_whole().await?;
        if self.open {
            self.end_copy().await?;
            self.client.batch_execute("ROLLBACK").await?;
        }
        self.sign_heads(true).await
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        if !self.open {
            self.client.batch_execute("BEGIN").await?;
            self.open = true;
        }
        Ok(())
    }

    /// Sends the first `len` bytes of buffered COPY rows into the open COPY
    /// (opening it, and sending the binary header, first if need be). Returns once the connection has taken
    /// them, not when the store has inserted them.
    async fn send_copy(&mut self, len: usize) -> Result<(), StoreError> {
        if len == 0 {
            return Ok(());
        }
        self.begin().await?;
        let chunk = self.copy_buf.split_to(len).freeze();
        let sink = match &mut self.copy {
            Some(sink) => sink,
            None => {
                let sink = self
                    .copy
                    .insert(Box::pin(self.client.copy_in(BINARY_COPY_SQL).await?));
                sink.feed(Bytes::from_static(BINARY_COPY_HEADER)).await?;
                sink
            }
        };
        sink.send(chunk).await?;
        Ok(())
    }

    /// Ends the open COPY, if any: waits until the store has inserted every
    /// chunk sent, so that the next statement can run.
    async fn end_copy(&mut self) -> Result<(), StoreError> {
        if let Some(mut sink) = self.copy.take() {
            sink.send(Bytes::from_static(BINARY_COPY_TRAILER)).await?;
            sink.as_mut().finish().await?;
        }
        Ok(())
    }

    /// Commits every whole source transaction received, unless the open store
    /// transaction already holds part of an unfinished one.
    async fn commit_if_whole(&mut self) -> Result<(), StoreError> {
        let Some(checkpoint) = self.pending_checkpoint else {
            return Ok(());
        };
        if self.holds_partial {
            return Ok(());
        }
        let started = Instant::now();
        self.send_copy(self.whole_bytes).await?;
        self.whole_bytes = 0;
        self.begin().await?;
        self.end_copy().await?;
        // The runs of the entries just sent, in the same store transaction.
        self.runs.send_whole(&self.client).await?;
        self.side
            .send_whole(&self.client, self.source, &self.name)
            .await?;
        if let Some(map) = self.whole_partitions.take() {
            self.client
                .execute(
                    "INSERT INTO pgtrail.partition_maps (source, slot, members) VALUES ($1, $2, $3::text::json) \
                     ON CONFLICT (source, slot) DO UPDATE SET members = excluded.members, updated_at = now()",
                    &[&self.source.0, &self.slot.as_str(), &map],
                )
                .await?;
        }
        if self.chain.whole_entries > 0 {
            let moved = self
                .client
                .execute(
                    "UPDATE pgtrail.chain_heads SET hash = $2, entries = entries + $3, updated_at = now() \
                     WHERE source = $4 AND hash = $1",
                    &[
                        &&self.chain.committed[..],
                        &&self.chain.whole[..],
                        &self.chain.whole_entries,
                        &self.source.0,
                    ],
                )
                .await?;
            if moved != 1 {
                return Err(StoreError::ChainMoved(self.name.to_string()));
            }
            self.chain.committed = self.chain.whole;
            self.chain.encoded -= self.chain.whole_entries;
            self.chain.whole_entries = 0;
        }
        // The commit time of the newest change it covers, kept with it (gap
        // events and status read it there, not from the entries).
        let committed_at = self
            .whole
            .last_entries_commit_micros
            .and_then(chrono::DateTime::from_timestamp_micros);
        self.client
            .execute(
                "UPDATE pgtrail.checkpoints SET lsn = $3::text::pg_lsn, updated_at = now(), \
                     last_committed_at = coalesce($4, last_committed_at) \
                 WHERE source = $1 AND slot = $2",
                &[
                    &self.source.0,
                    &self.slot.as_str(),
                    &checkpoint.to_string(),
                    &committed_at,
                ],
            )
            .await?;
        self.client.batch_execute("COMMIT").await?;
        self.open = false;
        self.runs.committed();
        self.pending_checkpoint = None;
        self.last_commit = Instant::now();
        self.durable.send_replace(checkpoint);
        std::mem::take(&mut self.whole).record(self.name.as_str(), started.elapsed());
        if let Some(s) = &mut self.signing {
            s.due = true;
        }
        self.sign_heads(false).await?;
        Ok(())
    }
}

/// Runs one step of the writer, or fails with [`StoreError::Timeout`] when
/// the store has not finished it within `limit`: a store behind a silently
/// dropped network never answers, and would hold capture forever.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, step)
        .await
        .map_err(|_| StoreError::Timeout(limit.as_secs()))?
}
