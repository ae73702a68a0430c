//! The daemon: wires the stages together and keeps them running.
//!
//! ```text
//! replication stream ─▶ decode + assemble ─▶ bounded channel ─▶ store writer
//!        ▲                                                        │
//!        └──────────── durable LSN (standby status "flush") ◀─────┘
//! ```
//!
//! The reader task owns the replication connection; the writer owns the store
//! connection. The only LSN ever reported to the server as flushed is one the
//! writer has committed (or, when nothing is pending at all, the server's own
//! position, so an idle or filtered source does not pin WAL). When either side
//! fails, the whole session is torn down, what was whole is committed, and a
//! new session resumes from the store's checkpoint after a backoff.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::capture::assemble::{AssembleError, Assembler};
use crate::capture::partition::PartitionMap;
use crate::capture::replication::{ReplicationConnection, ReplicationError, StreamMessage};
use crate::config::{Config, Reading};
use crate::entry::Event;
use crate::pg::Lsn;
use crate::source::{self, SourceError};
use crate::store::{self, writer::StoreWriter, StoreError};
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
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("the store writer stopped unexpectedly")]
    WriterGone,
}

impl PipelineError {
    /// Would trying again later help without anyone changing anything?
    fn is_transient(&self) -> bool {
        match self {
            PipelineError::Replication(e) => e.is_transient(),
            PipelineError::Source(SourceError::Connect { .. })
            | PipelineError::Store(StoreError::Connect { .. }) => true,
            PipelineError::Source(SourceError::Query(_))
            | PipelineError::Store(StoreError::Query(_)) => true,
            PipelineError::Assemble(_) | PipelineError::WriterGone => true,
            _ => false,
        }
    }
}

/// How a session ended without error.
enum SessionEnd {
    Shutdown,
    Reload,
}

/// Runs until `shutdown` turns true. Fails only if the very first session
/// cannot start. A new reading of the config file in `reload` starts a new
/// session with it (or with the running config, if the reading is invalid),
/// from the store's checkpoint: every transaction is decoded whole under one
/// capture set, none lost or doubled.
pub async fn run(
    mut config: Config,
    mut shutdown: watch::Receiver<bool>,
    mut reload: watch::Receiver<Reading>,
) -> Result<(), PipelineError> {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    // Schemas holding partitions created while running, outside the schemas
    // the catalog showed at session start.
    let mut partition_schemas: BTreeSet<String> = BTreeSet::new();
    let mut carried_partitions: Option<PartitionMap> = None;
    loop {
        let mut started = false;
        let began = Instant::now();
        let result = session(
            &config,
            &partition_schemas,
            carried_partitions.take(),
            &mut shutdown,
            &mut reload,
            &mut started,
        )
        .await;
        if let Err(PipelineError::Assemble(AssembleError::PartitionOutsideStream {
            partition,
            partitions,
            ..
        })) = result
        {
            // Not an error: the next session decodes that schema too, from the
            // checkpoint, which is before the transaction that announced it.
            tracing::info!(%partition, "a new partition of a captured table; restarting the session to decode its schema");
            partition_schemas.insert(partition.schema.clone());
            carried_partitions = Some(*partitions);
            first = false;
            continue;
        }
        match result {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Reload) => {
                let reading = reload.borrow_and_update().clone();
                config = reload_config(config, &reading);
                first = false;
                continue;
            }
            // Refuse to start rather than retry blindly: whoever started us is
            // watching now, and the message says what to fix.
            Err(e) if first && !started => return Err(e),
            Err(e) => {
                // A session that streamed for a while was healthy: start the
                // backoff afresh. One that fails at once keeps backing off.
                if started && began.elapsed() >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                let retry_in_ms = backoff.as_millis() as u64;
                if e.is_transient() {
                    tracing::warn!(error = %e, retry_in_ms, "capture session ended; reconnecting");
                } else {
                    tracing::error!(error = %e, retry_in_ms, "capture stopped by an error that needs attention; retrying");
                }
            }
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            changed = reload.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let reading = reload.borrow_and_update().clone();
                config = reload_config(config, &reading);
                continue;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The new reading of the config file, or the running config if that reading
/// is invalid. Either way the reload is recorded as a `Config` event.
fn reload_config(running: Config, reading: &Reading) -> Config {
    use crate::store::events::{Category, OwnEvent};
    let path = running.path.display().to_string();
    let (config, event) = match &**reading {
        Ok(new) => {
            let new = new.clone();
            if new.web_listen != running.web_listen {
                tracing::warn!(
                    "web.listen changed: the web view keeps its address until pgtrail restarts"
                );
            }
            tracing::info!(path = %running.path.display(), "config reloaded; capture resumes with it from the store's checkpoint");
            let event = OwnEvent::new(
                Category::Config,
                "config_reloaded",
                "pgtrail run",
                format!("configuration reloaded from {path}"),
            )
            .detail("path", path.clone())
            .detail(
                "tables",
                new.capture
                    .include
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .detail(
                "exclude",
                new.capture
                    .exclude
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect::<Vec<_>>(),
            );
            (new, event)
        }
        Err(e) => {
            tracing::error!(error = %e, "config not reloaded; capture goes on with the running config");
            let event = OwnEvent::new(
                Category::Config,
                "config_reload_failed",
                "pgtrail run",
                format!("configuration not reloaded: {e}"),
            )
            .detail("path", path.clone())
            .detail("error", e.to_string());
            (running, event)
        }
    };
    // The reload itself must not wait on, or fail with, the store.
    let store = config.store.clone();
    tokio::spawn(async move {
        let recorded = async {
            let client = crate::pg::connect(&store, "pgtrail run")
                .await
                .map_err(|e| crate::pg::describe(&e))?;
            crate::store::events::record(&client, &event)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(30), recorded).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the config reload event was not recorded"),
            Err(_) => tracing::warn!(
                "the config reload event was not recorded: the store did not answer in 30 s"
            ),
        }
    });
    config
}

/// One connection's worth of capture. Returns Ok on shutdown.
async fn session(
    config: &Config,
    partition_schemas: &BTreeSet<String>,
    carried_partitions: Option<PartitionMap>,
    shutdown: &mut watch::Receiver<bool>,
    reload: &mut watch::Receiver<Reading>,
    started: &mut bool,
) -> Result<SessionEnd, PipelineError> {
    let catalog = source::connect(&config.source).await?;
    source::check_server(&catalog).await?;
    let store_client = store::open(&config.store).await?;
    let checkpoint = store::checkpoint(&store_client, &config.slot)
        .await?
        .ok_or_else(|| StoreError::NotSetUp {
            dbname: config.store.dbname().to_owned(),
            reason: format!("no checkpoint for slot {:?}", config.slot.as_str()),
        })?;
    source::check_slot(&catalog, &config.slot, Duration::from_secs(5)).await?;
    let all_tables = source::catalog_tables(&catalog).await?;
    // The map as of the checkpoint when one was stored; the catalog (the map
    // as of now) only when none was.
    let partitions = match carried_partitions {
        Some(map) => map,
        None => match store::partition_map(&store_client, &config.slot).await? {
            Some(map) => map,
            None => source::partition_map(&all_tables),
        },
    };
    let tables = source::captured(all_tables, &config.capture)?;
    let status_every = source::status_interval(&catalog).await;
    drop(catalog);

    let mut conn = ReplicationConnection::connect(&config.source, "pgtrail").await?;
    let system = conn.identify_system().await?;
    // The patterns themselves, not the tables they match today, so a table
    // created later is decoded from its first change without a restart.
    // wal2json names a change by its partition, so the schemas holding
    // partitions of captured tables are decoded whole (and the assembler
    // narrows): a partition created there later needs no restart either.
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
    let options = [
        ("format-version", "2".to_owned()),
        ("include-xids", "1".to_owned()),
        ("include-timestamp", "1".to_owned()),
        ("include-lsn", "1".to_owned()),
        ("include-pk", "1".to_owned()),
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
    ];
    let mut stream = match conn
        .start_replication(config.slot.as_str(), checkpoint, &options)
        .await
    {
        Err(ReplicationError::Server(e))
            if e.message.contains("wal2json") && e.code.starts_with("58") =>
        {
            return Err(SourceError::Wal2jsonMissing(e.message).into())
        }
        other => other?,
    };
    *started = true;
    tracing::info!(slot = %config.slot, from = %checkpoint, server_lsn = %system.xlog_pos, tables = tables.len(), "streaming changes");

    let (durable_tx, durable_rx) = watch::channel(checkpoint);
    let (tx, rx) = mpsc::channel::<Vec<Event>>(CHANNEL_BATCHES);
    let writer =
        tokio::spawn(StoreWriter::new(store_client, config.slot.clone(), durable_tx).run(rx));

    let mut assembler = Assembler::new(config.capture.clone(), checkpoint)
        .with_column_rules(config.columns.clone())
        .with_partitions(partitions)
        .with_stream_filter(stream_filter);
    let mut events: Vec<Event> = Vec::with_capacity(BATCH_EVENTS);
    let mut server_end = system.xlog_pos.min(checkpoint);
    let mut reported = checkpoint;
    let mut last_status = Instant::now();
    // The last message was a change (not a keepalive or a tick): see GATHER.
    let mut paced = false;
    let mut ticker = tokio::time::interval(STATUS_MIN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Where the slot may advance to now.
    let flush_position =
        |assembler: &Assembler, events: &Vec<Event>, durable: Lsn, server_end: Lsn| {
            let caught_up = !assembler.in_transaction()
                && events.is_empty()
                && durable >= assembler.last_commit_end();
            if caught_up {
                durable.max(server_end)
            } else {
                durable
            }
        };

    let outcome: Result<SessionEnd, PipelineError> = loop {
        if !events.is_empty() && (events.len() >= BATCH_EVENTS || !stream.message_buffered()) {
            if tx.send(std::mem::take(&mut events)).await.is_err() {
                break Err(PipelineError::WriterGone);
            }
            events.reserve(BATCH_EVENTS);
        }
        if paced && !stream.message_buffered() && stream.trickling() {
            // Changes are trickling in, one small message per source
            // transaction. Reading each as it comes cost the daemon a socket
            // read, a wake-up and a hand-over to the writer per transaction
            // (about half of its CPU); letting them gather in the socket for a
            // moment turns those into one per batch. The writer commits only
            // every COMMIT_INTERVAL anyway, so nothing is stored later.
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Ok(SessionEnd::Shutdown),
                changed = reload.changed() => break Ok(if changed.is_ok() { SessionEnd::Reload } else { SessionEnd::Shutdown }),
                _ = tokio::time::sleep(GATHER) => {}
            }
        }
        paced = false;
        let mut reply_requested = false;
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break Ok(SessionEnd::Shutdown),
            // The sender goes away only when the signal task ends, which is a stop.
            changed = reload.changed() => break Ok(if changed.is_ok() { SessionEnd::Reload } else { SessionEnd::Shutdown }),
            message = stream.next() => match message {
                Ok(StreamMessage::XLogData { wal_start, wal_end, data }) => {
                    paced = true;
                    server_end = server_end.max(wal_end);
                    if let Err(e) = assembler.push(wal_start, &data, &mut events) {
                        break Err(e.into());
                    }
                }
                Ok(StreamMessage::Keepalive { wal_end, reply_requested: asked }) => {
                    server_end = server_end.max(wal_end);
                    reply_requested = asked;
                }
                Err(e) => break Err(e.into()),
            },
            _ = ticker.tick() => {}
        }
        if durable_rx.has_changed().is_err() {
            break Err(PipelineError::WriterGone);
        }
        // Checked after every message, not only on ticks: while a backlog
        // streams, the select above always takes the stream first, and the
        // slot must still advance as the store catches up.
        let flush = flush_position(&assembler, &events, *durable_rx.borrow(), server_end);
        let since = last_status.elapsed();
        if reply_requested
            || since >= status_every
            || (flush > reported && since >= STATUS_MIN_INTERVAL)
        {
            reported = reported.max(flush);
            if let Err(e) = stream.send_status(server_end.max(reported), reported).await {
                break Err(e.into());
            }
            last_status = Instant::now();
        }
    };

    // Hand over what is left, let the writer commit what is whole, and only
    // then tell the server how far it may advance.
    if !events.is_empty() {
        let _ = tx.send(std::mem::take(&mut events)).await;
    }
    drop(tx);
    let written = writer.await.map_err(|_| PipelineError::WriterGone)?;
    let durable = *durable_rx.borrow();
    match &outcome {
        Ok(_) => {
            reported = reported.max(flush_position(&assembler, &events, durable, server_end));
            if let Err(e) = stream.finish(server_end.max(reported), reported).await {
                tracing::warn!(error = %e, "could not close the replication connection cleanly");
            }
            tracing::info!(stored_up_to = %durable, "stopped");
        }
        Err(_) => drop(stream),
    }
    written?;
    outcome
}
