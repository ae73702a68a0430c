//! One connection's worth of capture: a session is [`Prepared`] (the source
//! and the store checked, the checkpoint read, the partition map chosen,
//! START_REPLICATION accepted), then its [`Reader`] streams changes to the
//! store writer until shutdown, a reload or an error, and hands over what is
//! left before the server is told how far it may advance.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};
use tokio_postgres::Client;

use super::gap::{self, Found, SlotLoss};
use super::recovery::{Recovery, Stuck};
use super::PipelineError;
use crate::capture::assemble::{AssembleError, Assembler};
use crate::capture::partition::PartitionMap;
use crate::capture::replication::{
    ReplicationConnection, ReplicationError, ReplicationStream, StreamMessage,
};
use crate::capture::signature::MessageKey;
use crate::config::{Config, Reading};
use crate::entry::Event;
use crate::pg::Lsn;
use crate::source::{self, SourceError};
use crate::store::{self, writer::StoreWriter, SourceId, StoreError};
use crate::table::Wal2jsonFilter;

/// Events are handed to the writer in batches of at most this many.
const BATCH_EVENTS: usize = 2048;
/// Batches in flight between reader and writer: the bound on memory.
const CHANNEL_BATCHES: usize = 16;
/// Progress is reported to the server at most this often (and at least every
/// `status_interval`, well inside wal_sender_timeout).
const STATUS_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// While changes trickle in, how long to let them gather in the socket
/// before reading them.
const GATHER: Duration = Duration::from_millis(20);

/// How a session ended without error.
pub(super) enum SessionEnd {
    Shutdown,
    Reload,
}

/// A session the server has started streaming: everything the reader needs.
pub(super) struct Prepared {
    stream: ReplicationStream,
    /// Holds the source's capture lock for as long as it lives (the writer's).
    store_client: Client,
    /// The source's id in the store.
    source: SourceId,
    /// Where the store's checkpoint says this session starts.
    checkpoint: Lsn,
    /// The server's WAL position when the session started.
    server_lsn: Lsn,
    partitions: PartitionMap,
    /// What wal2json was asked to send.
    stream_filter: Wal2jsonFilter,
    /// How often the server wants a status update at the least.
    status_every: Duration,
    /// What checks that a message is pgtrail's own.
    message_key: MessageKey,
}

impl Prepared {
    /// Connects to the source and the store, checks both, and starts
    /// replication from the store's checkpoint. `partition_schemas` are
    /// schemas holding partitions created while running; `carried_partitions`
    /// the map a session that restarted for one of them left behind;
    /// `own_backends` the store backends earlier sessions claimed the source on.
    pub(super) async fn start(
        config: &Config,
        (partition_schemas, carried_partitions): (&BTreeSet<String>, Option<PartitionMap>),
        own_backends: &mut store::claim::OwnBackends,
    ) -> Result<Prepared, PipelineError> {
        let catalog = source::connect(&config.source).await?;
        source::check_server(&catalog).await?;
        let store_client = store::open(&config.store).await?;
        let name = &config.source_name;
        let source = store::sources::lookup(&store_client, name).await?;
        // Before anything is read for the source: a second daemon for it stops here.
        store::claim::claim(&store_client, (source, name), own_backends).await?;
        let checkpoint = store::checkpoint(&store_client, source, &config.slot)
            .await?
            .ok_or_else(|| StoreError::NotSetUp {
                dbname: config.store.dbname().to_owned(),
                reason: format!(
                    "no checkpoint for the source {:?} and slot {:?}",
                    name.as_str(),
                    config.slot.as_str()
                ),
            })?;
        // A name bound to another database is refused before anything else
        // is checked: a missing slot there is no audit gap of this source.
        let server = store::binding::SourceServer::of(&catalog)
            .await
            .map_err(SourceError::from)?;
        if let Some(bound) = store::binding::bound(&store_client, source).await? {
            if !bound.same_database(&server) {
                return Err(StoreError::WrongSource(Box::new(store::binding::Mismatch {
                    name: name.to_string(),
                    bound,
                    found: server,
                }))
                .into());
            }
        }
        let lost = |found| {
            PipelineError::SlotLost(SlotLoss {
                source: config.source_name.clone(),
                slot: config.slot.clone(),
                found,
                last_stored: checkpoint,
            })
        };
        if let Some(found) = gap::catalog_loss(&catalog, &config.slot).await? {
            return Err(lost(found));
        }
        source::check_slot(&catalog, &config.slot, Duration::from_secs(5)).await?;
        // An unbound name is bound only here, past the slot's checks: a daemon
        // pointed at a wrong database stops on its missing slot before binding to it.
        if store::binding::bind_or_check(&store_client, (source, name), &server).await? {
            tracing::info!(source = %name, %server, "source bound to the database it captures");
        }
        let all_tables = source::catalog_tables(&catalog).await?;
        // The map as of the checkpoint when one was stored; the catalog (the map
        // as of now) only when none was.
        let partitions = match carried_partitions {
            Some(map) => map,
            None => match store::partition_map(&store_client, source, &config.slot).await? {
                Some(map) => map,
                None => source::partition_map(&all_tables),
            },
        };
        let tables = source::captured(all_tables, &config.capture)?;
        let message_key = store::message_key::load(&store_client, source, name).await?;
        let status_every = source::status_interval(&catalog).await;
        drop(catalog);

        let mut conn = ReplicationConnection::connect(&config.source, "pgtrail").await?;
        let system = conn.identify_system().await?;
        // The replication connection is a connection of its own: with a
        // multi-host URL or a DNS change it can reach another server than
        // the catalog connection did.
        if system.system_id != server.system_identifier {
            return Err(StoreError::WrongSource(Box::new(store::binding::Mismatch {
                name: name.to_string(),
                found: store::binding::SourceServer {
                    system_identifier: system.system_id.clone(),
                    ..server.clone()
                },
                bound: server,
            }))
            .into());
        }
        let stream_filter = stream_filter(config, &partitions, partition_schemas);
        let options = wal2json_options(&stream_filter);
        let stream = match conn
            .start_replication(config.slot.as_str(), checkpoint, &options)
            .await
        {
            Err(ReplicationError::Server(e))
                if e.message.contains("wal2json") && e.code.starts_with("58") =>
            {
                return Err(SourceError::Wal2jsonMissing(e.message).into())
            }
            Err(ReplicationError::Server(e)) if gap::is_loss(&e) => {
                return Err(lost(Found::Refused(e.message)))
            }
            other => other?,
        };
        tracing::info!(source = %name, slot = %config.slot, from = %checkpoint, server_lsn = %system.xlog_pos, tables = tables.len(), "streaming changes");
        Ok(Prepared {
            stream,
            store_client,
            source,
            checkpoint,
            server_lsn: system.xlog_pos,
            partitions,
            stream_filter,
            status_every,
            message_key,
        })
    }

    /// Streams into the store until shutdown, a reload or an error.
    pub(super) async fn run(
        self,
        config: &Config,
        recovery: &mut Recovery,
        shutdown: &mut watch::Receiver<bool>,
        reload: &mut watch::Receiver<Reading>,
    ) -> Result<SessionEnd, PipelineError> {
        let checkpoint = self.checkpoint;
        recovery.settle(checkpoint);
        let (durable_tx, durable_rx) = watch::channel(checkpoint);
        let (tx, rx) = mpsc::channel::<Vec<Event>>(CHANNEL_BATCHES);
        let writer = tokio::spawn(
            StoreWriter::new(
                (self.store_client, config.store.clone()),
                (self.source, config.source_name.clone()),
                config.slot.clone(),
                durable_tx,
            )
            .with_signer(config.signing.clone())
            .isolating_until(recovery.isolate_until())
            .with_timeout(config.store_timeout)
            .run(rx),
        );
        let assembler = Assembler::new(config.capture.clone(), checkpoint, self.message_key)
            .with_column_rules(config.columns.clone())
            .with_partitions(self.partitions)
            .with_stream_filter(self.stream_filter)
            .with_quarantine(recovery.quarantine());
        let mut ticker = tokio::time::interval(STATUS_MIN_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reader = Reader {
            stream: self.stream,
            assembler,
            events: Vec::with_capacity(BATCH_EVENTS),
            tx,
            writer,
            durable_rx,
            server_end: self.server_lsn.min(checkpoint),
            reported: checkpoint,
            last_status: Instant::now(),
            paced: false,
            ticker,
            status_every: self.status_every,
            silence: Silence::new(config.source_timeout),
            isolate_until: recovery.isolate_until(),
        };
        let outcome = reader.read(shutdown, reload).await;
        reader.finish(outcome).await
    }
}

/// What wal2json is asked to send.
///
/// The patterns themselves, not the tables they match today, so a table
/// created later is decoded from its first change without a restart.
/// wal2json names a change by its partition, so the schemas holding
/// partitions of captured tables are decoded whole (and the assembler
/// narrows): a partition created there later needs no restart either.
fn stream_filter(
    config: &Config,
    partitions: &PartitionMap,
    partition_schemas: &BTreeSet<String>,
) -> Wal2jsonFilter {
    let mut stream_filter = Wal2jsonFilter::from_patterns(&config.capture.include);
    for (partition, member) in partitions.members() {
        if config.capture.matches(&member.root) {
            stream_filter.add_schema(&partition.schema);
            stream_filter.add_schema(&member.root.schema);
        }
    }
    for schema in partition_schemas {
        stream_filter.add_schema(schema);
    }
    stream_filter
}

/// wal2json's options for START_REPLICATION.
fn wal2json_options(stream_filter: &Wal2jsonFilter) -> [(&'static str, String); 9] {
    [
        ("format-version", "2".to_owned()),
        ("include-xids", "1".to_owned()),
        ("include-timestamp", "1".to_owned()),
        ("include-lsn", "1".to_owned()),
        ("include-pk", "1".to_owned()),
        // Type OIDs, not names: a name costs the walsender a catalog lookup and
        // formatting per column of every change, and values.rs needs only the
        // four built-in OIDs it maps (docs/benchmarks.md, "The walsender's share").
        ("include-types", "0".to_owned()),
        ("include-type-oids", "1".to_owned()),
        ("add-tables", stream_filter.to_option()),
        (
            "add-msg-prefixes",
            [
                crate::capture::context::CONTEXT_PREFIX,
                crate::capture::context::DDL_PREFIX,
                crate::capture::partition::PARTITIONS_PREFIX,
                crate::capture::truncate::TRUNCATE_PREFIX,
            ]
            .join(","),
        ),
    ]
}

/// The reader loop and its progress: what it has read from the server, handed
/// to the writer and reported back.
struct Reader {
    stream: ReplicationStream,
    assembler: Assembler,
    /// Assembled, not yet handed to the writer.
    events: Vec<Event>,
    tx: mpsc::Sender<Vec<Event>>,
    writer: JoinHandle<Result<(), StoreError>>,
    /// What the writer has committed.
    durable_rx: watch::Receiver<Lsn>,
    /// How far the server has sent.
    server_end: Lsn,
    /// The flush position last reported to the server.
    reported: Lsn,
    last_status: Instant,
    /// The last message was a change (not a keepalive or a tick): see GATHER.
    paced: bool,
    ticker: Interval,
    status_every: Duration,
    silence: Silence,
    /// The writer commits each source transaction alone up to here.
    isolate_until: Option<Lsn>,
}

/// How long the server has been silent: past a third of the limit it is
/// asked for an answer, past the limit it is taken for unreachable. A
/// silently dropped network (no FIN, no RST) would otherwise leave the
/// reader waiting on its socket for good.
struct Silence {
    limit: Duration,
    heard: Instant,
    pinged: bool,
}

impl Silence {
    fn new(limit: Duration) -> Self {
        Silence {
            limit,
            heard: Instant::now(),
            pinged: false,
        }
    }

    /// Something came from the server, or the reader was not listening.
    fn heard(&mut self) {
        self.heard = Instant::now();
        self.pinged = false;
    }
}

impl Reader {
    /// Reads, assembles, hands over and reports until shutdown, a reload or an error.
    async fn read(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        reload: &mut watch::Receiver<Reading>,
    ) -> Result<SessionEnd, PipelineError> {
        loop {
            if let Some(end) = self.hand_over(shutdown, reload).await? {
                return Ok(end);
            }
            if self.paced && !self.stream.message_buffered() && self.stream.trickling() {
                // Changes are trickling in, one small message per source
                // transaction. Reading each as it comes cost the daemon a socket
                // read, a wake-up and a hand-over to the writer per transaction
                // (about half of its CPU); letting them gather in the socket for a
                // moment turns those into one per batch. The writer commits only
                // every COMMIT_INTERVAL anyway, so nothing is stored later.
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(SessionEnd::Shutdown),
                    changed = reload.changed() => return Ok(if changed.is_ok() { SessionEnd::Reload } else { SessionEnd::Shutdown }),
                    _ = tokio::time::sleep(GATHER) => {}
                }
            }
            self.paced = false;
            let mut reply_requested = false;
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return Ok(SessionEnd::Shutdown),
                // The sender goes away only when the signal task ends, which is a stop.
                changed = reload.changed() => return Ok(if changed.is_ok() { SessionEnd::Reload } else { SessionEnd::Shutdown }),
                message = self.stream.next() => match message? {
                    StreamMessage::XLogData { wal_start, wal_end, data } => {
                        self.silence.heard();
                        self.paced = true;
                        self.server_end = self.server_end.max(wal_end);
                        self.assembler.push(wal_start, &data, &mut self.events)?;
                    }
                    StreamMessage::Keepalive { wal_end, reply_requested: asked } => {
                        self.silence.heard();
                        self.server_end = self.server_end.max(wal_end);
                        reply_requested = asked;
                    }
                },
                _ = self.ticker.tick() => {}
            }
            if self.durable_rx.has_changed().is_err() {
                return Err(PipelineError::WriterGone);
            }
            self.report(reply_requested).await?;
            self.check_silence().await?;
            // systemd's watchdog hears from this loop only while it turns.
            crate::health::notify::watchdog();
        }
    }

    /// Asks a silent server for an answer, and gives up on one silent past the limit.
    async fn check_silence(&mut self) -> Result<(), PipelineError> {
        let silent = self.silence.heard.elapsed();
        if silent >= self.silence.limit {
            return Err(ReplicationError::Silent(self.silence.limit.as_secs()).into());
        }
        if silent >= self.silence.limit / 3 && !self.silence.pinged {
            self.stream
                .ping(self.server_end.max(self.reported), self.reported)
                .await?;
            self.silence.pinged = true;
            self.last_status = Instant::now();
        }
        Ok(())
    }

    /// Hands the events to the writer once a batch is full or the stream has
    /// nothing more buffered. While the writer is behind (the channel is
    /// full) it keeps answering the server and watching for a stop or a
    /// reload, rather than waiting blind: a stalled store must not also cost
    /// the replication connection.
    async fn hand_over(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        reload: &mut watch::Receiver<Reading>,
    ) -> Result<Option<SessionEnd>, PipelineError> {
        if self.events.is_empty()
            || (self.events.len() < BATCH_EVENTS && self.stream.message_buffered())
        {
            return Ok(None);
        }
        let mut waited = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return Ok(Some(SessionEnd::Shutdown)),
                changed = reload.changed() => return Ok(Some(if changed.is_ok() { SessionEnd::Reload } else { SessionEnd::Shutdown })),
                permit = self.tx.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(std::mem::take(&mut self.events));
                        break;
                    }
                    Err(_) => return Err(PipelineError::WriterGone),
                },
                _ = self.ticker.tick() => waited = true,
            }
            self.report(false).await?;
        }
        if waited {
            // The socket was not read meanwhile: its silence was ours.
            self.silence.heard();
        }
        self.events.reserve(BATCH_EVENTS);
        Ok(None)
    }

    /// Sends a standby status update when the server asked for one, when
    /// `status_every` has passed, or when the slot may advance (at most every
    /// STATUS_MIN_INTERVAL).
    async fn report(&mut self, reply_requested: bool) -> Result<(), PipelineError> {
        // Checked after every message, not only on ticks: while a backlog
        // streams, the select in `read` always takes the stream first, and the
        // slot must still advance as the store catches up.
        let flush = flush_position(
            &self.assembler,
            &self.events,
            *self.durable_rx.borrow(),
            self.server_end,
        );
        let since = self.last_status.elapsed();
        if reply_requested
            || since >= self.status_every
            || (flush > self.reported && since >= STATUS_MIN_INTERVAL)
        {
            self.reported = self.reported.max(flush);
            self.stream
                .send_status(self.server_end.max(self.reported), self.reported)
                .await?;
            self.last_status = Instant::now();
        }
        Ok(())
    }

    /// Hands over what is left, lets the writer commit what is whole, and only
    /// then tells the server how far it may advance.
    async fn finish(
        mut self,
        outcome: Result<SessionEnd, PipelineError>,
    ) -> Result<SessionEnd, PipelineError> {
        if !self.events.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.events)).await;
        }
        drop(self.tx);
        let written = self.writer.await.map_err(|_| PipelineError::WriterGone)?;
        let durable = *self.durable_rx.borrow();
        let handed = self.assembler.last_commit_end();
        match &outcome {
            Ok(_) => {
                let flush = flush_position(&self.assembler, &self.events, durable, self.server_end);
                self.reported = self.reported.max(flush);
                if let Err(e) = self
                    .stream
                    .finish(self.server_end.max(self.reported), self.reported)
                    .await
                {
                    tracing::warn!(error = %e, "could not close the replication connection cleanly");
                }
                tracing::info!(stored_up_to = %durable, "stopped");
            }
            Err(_) => drop(self.stream),
        }
        // A transaction that cannot be stored as entries is to be
        // quarantined: say where it is (see `recovery.rs`).
        let stuck = |reason: String, pinpointed: bool| {
            PipelineError::Stuck(Stuck {
                reason,
                durable,
                handed,
                pinpointed,
            })
        };
        match written {
            Err(e) if e.refuses_data() => {
                let isolated = self.isolate_until.is_some_and(|until| durable <= until);
                return Err(stuck(e.with_sqlstate(), isolated));
            }
            written => written?,
        }
        match outcome {
            Err(PipelineError::Assemble(e @ AssembleError::Unframed { .. })) => {
                Err(stuck(e.to_string(), durable == handed))
            }
            outcome => outcome,
        }
    }
}

/// Where the slot may advance to now: what the writer has committed, or the
/// server's own position when nothing at all is pending (so an idle or
/// filtered source does not pin WAL).
fn flush_position(assembler: &Assembler, events: &[Event], durable: Lsn, server_end: Lsn) -> Lsn {
    let caught_up =
        !assembler.in_transaction() && events.is_empty() && durable >= assembler.last_commit_end();
    if caught_up {
        durable.max(server_end)
    } else {
        durable
    }
}
