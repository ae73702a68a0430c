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
//!
//! This module holds the run loop (sessions one after another, backoff,
//! config reloads); `session.rs` one session, from connecting to stopping.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::capture::assemble::AssembleError;
use crate::capture::partition::PartitionMap;
use crate::capture::replication::ReplicationError;
use crate::config::{Config, Reading};
use crate::health::notify;
use crate::metrics::{progress::progress, record};
use crate::source::SourceError;
use crate::store::StoreError;

pub mod gap;
pub mod permanent;
mod recovery;
mod session;

use recovery::Recovery;
use session::{Prepared, SessionEnd};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait after an error that needs attention.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest wait after an outage (a transient error): a store or source
/// that comes back is found within this, and one connection attempt every
/// few seconds is no load on one that is down.
const BACKOFF_MAX_TRANSIENT: Duration = Duration::from_secs(4);
/// A session that streamed this long was healthy: the next failure backs off
/// from the minimum again, so a second outage soon after a first one is not
/// waited out at the first one's backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

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
    #[error("{0}")]
    Stuck(recovery::Stuck),
    #[error("{0}")]
    SlotLost(gap::SlotLoss),
}

impl PipelineError {
    /// Would trying again later help without anyone changing anything?
    fn is_transient(&self) -> bool {
        if self.permanent().is_some() {
            return false;
        }
        match self {
            PipelineError::Replication(e) => e.is_transient(),
            PipelineError::Source(SourceError::Connect { .. })
            | PipelineError::Store(StoreError::Connect { .. }) => true,
            PipelineError::Source(SourceError::Query(_)) => true,
            PipelineError::Store(StoreError::Query(e)) => {
                crate::store::failure::of_error(e) == crate::store::failure::Failure::Transient
            }
            PipelineError::Store(StoreError::Timeout(_)) => true,
            PipelineError::Assemble(_) | PipelineError::WriterGone => true,
            // Handled: the next sessions get past it.
            PipelineError::Stuck(_) => true,
            _ => false,
        }
    }

    /// The error's kind, as the metrics label it (a short, fixed set).
    fn kind(&self) -> &'static str {
        match self {
            PipelineError::Source(SourceError::Connect { .. }) => "source_connect",
            PipelineError::Source(_) => "source",
            PipelineError::Replication(_) => "replication",
            PipelineError::Store(StoreError::Connect { .. }) => "store_connect",
            PipelineError::Store(StoreError::Timeout(_)) => "store_timeout",
            PipelineError::Store(_) => "store",
            PipelineError::Assemble(_) => "decode",
            PipelineError::WriterGone => "writer_gone",
            PipelineError::Stuck(_) => "quarantine",
            PipelineError::SlotLost(_) => "slot_lost",
        }
    }
}

/// Runs until `shutdown` turns true. Fails if the very first session cannot
/// start, and on a permanent error ([`permanent`]): at once when the slot is
/// lost (after recording the audit gap), after a few tries otherwise. A new
/// reading of the config file in `reload` starts a new
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
    let mut recovery = Recovery::default();
    // The last session ended with an error: the next one to start is a reconnect.
    let mut after_error = false;
    let mut tries = permanent::Tries::default();
    // Where earlier sessions held the source's capture lock: one left
    // behind by a session given up on is this daemon's own to end.
    let mut own_backends = crate::store::claim::OwnBackends::default();
    // Partitions ahead, for as long as `run` runs (aborted when it returns).
    let keeper = tokio::spawn(crate::store::partitions::keep(
        config.store.clone(),
        config.partition,
        crate::store::retention::keeper::Hourly::new(
            config.retention,
            crate::archive::retention::Files::of_config(&config)
                .map(|f| Box::new(f) as Box<dyn crate::store::retention::archives::Archiver>),
        ),
    ));
    let _keeper = AbortOnDrop(keeper);
    loop {
        let began = Instant::now();
        let source = config.source_name.to_string();
        // Started: the server accepted START_REPLICATION.
        let (started, result) = match Prepared::start(
            &config,
            (&partition_schemas, carried_partitions.take()),
            &mut own_backends,
        )
        .await
        {
            Ok(session) => {
                streaming(&source, after_error);
                let ended = session
                    .run(&config, &mut recovery, &mut shutdown, &mut reload)
                    .await;
                (true, ended)
            }
            Err(e) => (false, Err(e)),
        };
        let partition_restart = matches!(
            result,
            Err(PipelineError::Assemble(
                AssembleError::PartitionOutsideStream { .. }
            ))
        );
        after_error = result.is_err() && !partition_restart;
        ended(&source, &result, partition_restart);
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
        if let Err(PipelineError::Stuck(stuck)) = &result {
            recovery.stuck(stuck);
        }
        if started {
            tries.give_up(None);
        }
        match result {
            Ok(SessionEnd::Shutdown) => {
                notify::stopping();
                return Ok(());
            }
            Ok(SessionEnd::Reload) => {
                let reading = reload.borrow_and_update().clone();
                config = reload_config(config, &reading);
                first = false;
                continue;
            }
            Err(e) if tries.give_up(Some(&e)) => {
                stop_for_good(&config, &e).await;
                return Err(e);
            }
            // Refuse to start rather than retry blindly: whoever started us is
            // watching now, and the message says what to fix.
            Err(e) if first && !started => return Err(e),
            Err(e) => {
                // A session that streamed for a while was healthy: start the
                // backoff afresh. One that fails at once keeps backing off.
                if started && began.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_MIN;
                }
                if e.is_transient() {
                    backoff = backoff.min(BACKOFF_MAX_TRANSIENT);
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
        // The run loop beats for systemd's watchdog before and after each
        // backoff (at most 30 s, well inside WatchdogSec).
        notify::watchdog();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => {
                notify::stopping();
                return Ok(());
            }
            changed = reload.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let reading = reload.borrow_and_update().clone();
                config = reload_config(config, &reading);
                continue;
            }
        }
        notify::watchdog();
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Aborts a task when dropped: the keeper ends with `run`, however it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `run` ends on `e`, a permanent error: a lost slot's gap is recorded first.
async fn stop_for_good(config: &Config, e: &PipelineError) {
    if let PipelineError::SlotLost(loss) = e {
        match tokio::time::timeout(Duration::from_secs(30), gap::record_loss(&config.store, loss))
            .await
        {
            Ok(Ok(true)) => tracing::info!(slot = %loss.slot, last_stored = %loss.last_stored, "audit gap recorded in the store"),
            Ok(Ok(false)) => tracing::info!(slot = %loss.slot, "this audit gap was already recorded in the store"),
            Ok(Err(why)) => tracing::error!(error = %why, "the audit gap could not be recorded in the store; the next `pgtrail run` tries again"),
            Err(_) => tracing::error!("the audit gap could not be recorded: the store did not answer in 30 s; the next `pgtrail run` tries again"),
        }
    }
    if let Some(p) = e.permanent() {
        tracing::error!(
            exit_code = p.exit_code(),
            kind = e.kind(),
            "capture stopped by an error that retrying cannot fix"
        );
    }
}

/// A session streams: for `/readyz` and the metrics.
fn streaming(source: &str, reconnected: bool) {
    progress().streaming();
    notify::ready();
    record::streaming(source, true);
    if reconnected {
        record::reconnect(source);
    }
}

/// A session ended (or did not start) with `result`: for `/readyz` and the metrics.
fn ended(source: &str, result: &Result<SessionEnd, PipelineError>, partition_restart: bool) {
    record::streaming(source, false);
    match result {
        Ok(SessionEnd::Shutdown) => progress().down("pgtrail is stopping".into()),
        Ok(SessionEnd::Reload) => {
            progress().down("the session restarts with a reloaded config".into())
        }
        Err(_) if partition_restart => {
            progress().down("the session restarts to decode a new partition's schema".into())
        }
        Err(e) => {
            record::capture_error(source, e.kind());
            progress().down(e.to_string());
        }
    }
}

/// The new reading of the config file, or the running config if that reading
/// is invalid. Either way the reload is recorded as a `Config` event.
fn reload_config(running: Config, reading: &Reading) -> Config {
    use crate::store::events::{Category, OwnEvent};
    let path = running.path.display().to_string();
    let (config, event) = match &**reading {
        Ok(new) => {
            let mut new = new.clone();
            if new.source_name != running.source_name {
                tracing::error!(
                    running = %running.source_name,
                    read = %new.source_name,
                    "[source] name changed in the config file: a source's name is kept until pgtrail restarts \
                     (it picks the source's checkpoint and chain in the store); capture goes on as {:?} with the \
                     rest of the new config. Restart pgtrail to capture under the new name, after `pgtrail setup` \
                     with the new config has registered it",
                    running.source_name.as_str()
                );
                new.source_name = running.source_name.clone();
            }
            if new.web_listen != running.web_listen {
                tracing::warn!(
                    "web.listen changed: the web view keeps its address until pgtrail restarts"
                );
            }
            if new.wal_warn != running.wal_warn {
                tracing::warn!(
                    "capture.wal_warn changed: the WAL guard keeps the running one until pgtrail restarts"
                );
            }
            if new.metrics != running.metrics {
                tracing::warn!(
                    "[metrics] changed: the running settings are kept until pgtrail restarts"
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
