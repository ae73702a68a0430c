//! The monitor: a task of its own that reads the slot on the source and the
//! checkpoint in the store every `metrics.poll_interval`, over connections of
//! its own, and publishes what it read ([`Readings`]) for `/readyz` and the
//! metrics. Every step is bounded by a timeout and a failed connection is
//! opened again at the next poll, so a source or store that hangs costs the
//! monitor a poll, never capture.
//!
//! [`SlotReading`] is what it knows of the slot: the lag figures come from
//! it, and the WAL guard ([`super::guard`]) judges it. The monitor of
//! `pgtrail run` also leaves each poll's readings in the store for the web
//! view ([`super::report`]), within the same bounds.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_postgres::Client;

use super::guard::WalGuard;
use super::lag::{Lag, LagHistory};
use super::notify;
use super::report::Reporter;
use super::service_status::{self, Rate};
use crate::metrics::progress::progress;
use crate::metrics::record::{self, SlotFigures};
use crate::pg::{Lsn, PgUrl, SlotName};
use crate::store::capture_state::{LagFigures, SlotFigures as StoredSlot, SourceSide};

/// The longest one poll of one side (connecting included) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The slot as the source showed it at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReading {
    /// `pg_current_wal_lsn()`: the source's WAL position.
    pub server_lsn: Lsn,
    /// `None` when the slot does not exist.
    pub slot: Option<SlotState>,
}

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// A walsender holds the slot (the daemon is connected).
    pub active: bool,
    /// The oldest WAL the slot keeps; `None` once the slot is lost.
    pub restart_lsn: Option<Lsn>,
    /// How far the server knows pgtrail has processed.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is lost;
    /// `None` when `max_slot_wal_keep_size` is unlimited.
    pub safe_wal_size: Option<i64>,
}

impl SlotState {
    /// WAL the slot holds on the source's disk.
    pub fn retained_bytes(&self, server_lsn: Lsn) -> u64 {
        self.restart_lsn
            .map_or(0, |restart| restart.bytes_until(server_lsn))
    }
}

/// The store's checkpoint at one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreReading {
    /// The end of the last source transaction stored, or `None` where the
    /// store was only checked to answer (`pgtrail web`).
    pub checkpoint: Option<Lsn>,
    /// How long ago the checkpoint was written, on the store's clock.
    pub checkpoint_age: Duration,
}

/// One poll's readings: each side, or why it could not be read.
#[derive(Debug, Clone)]
pub struct Readings {
    pub at: SystemTime,
    /// `None` where the source is not watched (`pgtrail web`).
    pub source: Option<Result<SlotReading, String>>,
    pub store: Result<StoreReading, String>,
    /// Known when the source and at least one processed position were read.
    pub lag: Option<Lag>,
}

/// What the monitor watches.
pub struct Watched {
    /// The source and its slot (`pgtrail run`); `None` for the store alone.
    pub source: Option<(PgUrl, SlotName)>,
    /// `[source] name`: the metrics' label, and whose checkpoint is read.
    pub source_name: String,
    pub store: PgUrl,
    /// The slot whose checkpoint is read in the store; `None`: only check
    /// that the store answers.
    pub checkpoint_of: Option<SlotName>,
    pub every: Duration,
    /// `capture.wal_warn`: the WAL guard's threshold in bytes; `None`: off.
    pub wal_warn: Option<u64>,
}

/// Polls until the process ends, publishing each poll's readings on `out`.
pub async fn run(watched: Watched, out: watch::Sender<Option<Readings>>) {
    let source_name = watched.source.as_ref().map(|_| watched.source_name.clone());
    let mut source_conn: Option<Client> = None;
    let mut store_conn: Option<Client> = None;
    let mut history = LagHistory::default();
    let mut guard = WalGuard::new(watched.wal_warn);
    let mut rate = Rate::default();
    let mut reporter = watched
        .source
        .as_ref()
        .zip(source_name.clone())
        .map(|((_, slot), name)| {
            Reporter::new(slot.clone(), name, watched.every, watched.wal_warn)
        });
    let mut ticker = tokio::time::interval(watched.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let url = &watched.store;
        let store = within(url, async {
            let client = connected(&mut store_conn, url).await?;
            let of = watched.checkpoint_of.as_ref();
            read_store(client, of.map(|slot| (watched.source_name.as_str(), slot))).await
        })
        .await;
        forget_on_error(&mut store_conn, &store);
        if store.is_err() {
            record::monitor_error("store");
        }
        let mut over_wal_warn = false;
        let source = match &watched.source {
            Some((url, slot)) => {
                let read = within(url, async {
                    read_slot(connected(&mut source_conn, url).await?, slot).await
                })
                .await;
                forget_on_error(&mut source_conn, &read);
                match &read {
                    Ok(r) => {
                        let figures = r.slot.as_ref().map(|s| figures(s, r));
                        record::slot(slot.as_str(), figures);
                        over_wal_warn = guard.observe(slot.as_str(), figures);
                    }
                    Err(_) => record::monitor_error("source"),
                }
                Some(read)
            }
            None => None,
        };
        let now = SystemTime::now();
        let lag = match (&source, &source_name) {
            (Some(Ok(slot)), Some(name)) => {
                let lag = lag_of(&mut history, now, slot, store.as_ref().ok());
                if let Some(lag) = lag {
                    record::lag(name, lag.bytes, lag.seconds);
                }
                lag
            }
            _ => None,
        };
        if source_name.is_some() {
            let checkpoint = store.as_ref().ok().and_then(|s| s.checkpoint);
            let per_second = rate.observe(now, checkpoint);
            notify::status(&service_status::line(lag, per_second));
        }
        let readings = Readings {
            at: now,
            source,
            store,
            lag,
        };
        // A store that just failed a read is not written to this poll.
        if let (Some(reporter), Ok(_)) = (reporter.as_mut(), &readings.store) {
            let stored = readings.store.as_ref().ok().and_then(|s| s.checkpoint);
            let state = reporter.state(source_side(&readings), stored, over_wal_warn);
            let written = within(url, async {
                reporter
                    .write(connected(&mut store_conn, url).await?, &state)
                    .await
            })
            .await;
            if let Err(e) = &written {
                reporter.failed(e);
            }
            forget_on_error(&mut store_conn, &written);
        }
        if out.send(Some(readings)).is_err() {
            return;
        }
    }
}

/// The source as a poll saw it, as `pgtrail.capture_state` stores it.
fn source_side(readings: &Readings) -> SourceSide {
    let reading = match &readings.source {
        Some(Ok(reading)) => reading,
        Some(Err(why)) => return SourceSide::Unread(why.clone()),
        None => return SourceSide::Unread("the source is not watched".into()),
    };
    SourceSide::Read {
        server_lsn: reading.server_lsn,
        slot: reading.slot.as_ref().map(|s| StoredSlot {
            active: s.active,
            confirmed_lsn: s.confirmed_flush_lsn,
            retained_bytes: s.retained_bytes(reading.server_lsn),
            wal_status: s.wal_status.clone(),
            safe_wal_size: s.safe_wal_size,
        }),
        lag: readings.lag.map(|l| LagFigures {
            bytes: l.bytes,
            seconds: l.seconds,
        }),
    }
}

fn figures<'a>(state: &'a SlotState, reading: &SlotReading) -> SlotFigures<'a> {
    SlotFigures {
        active: state.active,
        retained_bytes: state.retained_bytes(reading.server_lsn),
        safe_wal_size: state.safe_wal_size,
        wal_status: state.wal_status.as_deref(),
    }
}

/// The lag at `now`: processed is the stored checkpoint, or the slot's
/// confirmed position when that is further (pgtrail confirms a position past
/// the checkpoint only when all before it is stored or not captured: WAL of
/// other databases, tables outside the capture set).
fn lag_of(
    history: &mut LagHistory,
    now: SystemTime,
    slot: &SlotReading,
    store: Option<&StoreReading>,
) -> Option<Lag> {
    let checkpoint = store.and_then(|s| s.checkpoint);
    let confirmed = slot.slot.as_ref().and_then(|s| s.confirmed_flush_lsn);
    let processed = checkpoint.max(confirmed)?;
    // The commit time of what this process stored last, else how long ago
    // the store's checkpoint moved.
    let fallback = match progress().snapshot().last_stored {
        Some((micros, _)) => {
            let committed = SystemTime::UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
            Some(now.duration_since(committed).unwrap_or_default())
        }
        None => store.map(|s| s.checkpoint_age),
    };
    Some(history.observe(now, slot.server_lsn, processed, fallback))
}

/// The connection in `conn`, opened first if there is none or it closed.
async fn connected<'c>(conn: &'c mut Option<Client>, url: &PgUrl) -> Result<&'c Client, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let client = crate::pg::connect(url, "pgtrail monitor")
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {} (database {:?}): {}",
                    url.endpoint(),
                    url.dbname(),
                    crate::pg::describe(&e)
                )
            })?;
        *conn = Some(client);
    }
    conn.as_ref().ok_or_else(|| "no connection".to_owned())
}

/// `step` (one side's poll, connecting included), or why not within
/// [`STEP_TIMEOUT`].
async fn within<T>(
    url: &PgUrl,
    step: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, step).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} (database {:?}) did not answer within {} s",
            url.endpoint(),
            url.dbname(),
            STEP_TIMEOUT.as_secs()
        )),
    }
}

/// Drops the connection of a side whose poll failed: the next poll opens
/// it again.
fn forget_on_error<T>(conn: &mut Option<Client>, read: &Result<T, String>) {
    if read.is_err() {
        *conn = None;
    }
}

async fn read_slot(client: &Client, slot: &SlotName) -> Result<SlotReading, String> {
    let row = client
        .query_one(
            "SELECT pg_current_wal_lsn()::text, s.active, s.restart_lsn::text, \
                    s.confirmed_flush_lsn::text, s.wal_status, s.safe_wal_size \
             FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&slot.as_str()],
        )
        .await
        .map_err(|e| format!("cannot read the slot: {}", crate::pg::describe(&e)))?;
    let lsn = |i: usize| -> Result<Option<Lsn>, String> {
        let text: Option<String> = row.try_get(i).map_err(|e| e.to_string())?;
        text.map(|t| t.parse::<Lsn>().map_err(|e| e.to_string()))
            .transpose()
    };
    let server_lsn = lsn(0)?.ok_or("the source gave no WAL position")?;
    let active: Option<bool> = row.try_get(1).map_err(|e| e.to_string())?;
    let slot = match active {
        None => None,
        Some(active) => Some(SlotState {
            active,
            restart_lsn: lsn(2)?,
            confirmed_flush_lsn: lsn(3)?,
            wal_status: row.try_get(4).map_err(|e| e.to_string())?,
            safe_wal_size: row.try_get(5).map_err(|e| e.to_string())?,
        }),
    };
    Ok(SlotReading { server_lsn, slot })
}

async fn read_store(
    client: &Client,
    of: Option<(&str, &SlotName)>,
) -> Result<StoreReading, String> {
    let Some((source, slot)) = of else {
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| format!("the store does not answer: {}", crate::pg::describe(&e)))?;
        return Ok(StoreReading {
            checkpoint: None,
            checkpoint_age: Duration::ZERO,
        });
    };
    let row = client
        .query_opt(
            "SELECT c.lsn::text, greatest(extract(epoch FROM now() - c.updated_at), 0)::float8 \
             FROM pgtrail.checkpoints c JOIN pgtrail.sources s ON s.id = c.source \
             WHERE s.name = $1 AND c.slot = $2",
            &[&source, &slot.as_str()],
        )
        .await
        .map_err(|e| format!("cannot read the checkpoint: {}", crate::pg::describe(&e)))?
        .ok_or_else(|| {
            format!(
                "the store has no checkpoint for the source {source:?} and slot {:?}; run `pgtrail setup`",
                slot.as_str()
            )
        })?;
    let text: String = row.try_get(0).map_err(|e| e.to_string())?;
    let age: f64 = row.try_get(1).map_err(|e| e.to_string())?;
    Ok(StoreReading {
        checkpoint: Some(text.parse::<Lsn>().map_err(|e| e.to_string())?),
        checkpoint_age: Duration::try_from_secs_f64(age).unwrap_or_default(),
    })
}
