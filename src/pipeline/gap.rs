//! Audit gaps: the replication slot is lost (PostgreSQL invalidated it
//! because it held more WAL than `max_slot_wal_keep_size` allows), refuses to
//! stream because WAL it needs was removed, or is missing although the store
//! has a checkpoint for it. Changes after the checkpoint can then never be
//! captured, so capture must not go on as if nothing happened: the daemon
//! records a `gap` EVENT (once per loss) and stops, and `setup
//! --recreate-slot` records the gap's extent when it starts a new slot.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_postgres::{Client, GenericClient};

use crate::capture::replication::ServerError;
use crate::pg::{Lsn, PgUrl, SlotName};
use crate::source::SourceError;
use crate::store::binding::SourceServer;
use crate::store::events::{Category, OwnEvent};
use crate::store::{SourceName, StoreError};

/// What was found wrong with the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No slot of that name on the source.
    Missing,
    /// `pg_replication_slots.wal_status` is `lost`.
    Lost,
    /// The server refused to stream from the slot; its words.
    Refused(String),
}

impl Found {
    /// How the event's `found` detail names it.
    pub fn describe(&self) -> String {
        match self {
            Found::Missing => "the slot does not exist on the source".to_owned(),
            Found::Lost => "the slot's wal_status is lost: PostgreSQL invalidated it and removed WAL it still needed (it held more than max_slot_wal_keep_size)".to_owned(),
            Found::Refused(why) => format!("the server refused to stream from the slot: {why}"),
        }
    }
}

/// A slot that can no longer deliver the changes after the store's checkpoint.
#[derive(Debug, Clone)]
pub struct SlotLoss {
    /// The source whose slot it is.
    pub source: SourceName,
    pub slot: SlotName,
    pub found: Found,
    /// The store's checkpoint: everything up to it is stored.
    pub last_stored: Lsn,
}

impl fmt::Display for SlotLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit gap: the replication slot {:?} can no longer deliver the changes after {} (the last one stored): {}. \
             Changes made since then were not captured, and a `gap` EVENT (table pgtrail.gap) records it. \
             Run `pgtrail setup --recreate-slot` to create a new slot and capture from now on; \
             to keep it from happening again, keep pgtrail running, raise max_slot_wal_keep_size \
             and watch [capture] wal_warn",
            self.slot.as_str(),
            self.last_stored,
            self.found.describe()
        )
    }
}

/// The slot's state as the catalog shows it, when that is a loss: missing,
/// or `wal_status` `lost`.
pub async fn catalog_loss(client: &Client, slot: &SlotName) -> Result<Option<Found>, SourceError> {
    let row = client
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot.as_str()],
        )
        .await?;
    Ok(match row {
        None => Some(Found::Missing),
        Some(row) if row.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
            Some(Found::Lost)
        }
        Some(_) => None,
    })
}

/// Whether START_REPLICATION's refusal says the slot cannot deliver what is
/// asked: invalidated, or the WAL it needs already removed.
pub fn is_loss(e: &ServerError) -> bool {
    let text = e.message.as_str();
    (e.code == "55000" && text.contains("cannot read from logical replication slot"))
        || text.contains("has already been removed")
        || text.contains("has been invalidated")
}

/// What the store holds up to the gap.
#[derive(Debug, Clone)]
pub struct LastStored {
    pub lsn: Lsn,
    /// When the checkpoint was last written.
    pub checkpoint_written: DateTime<Utc>,
    /// Source commit time of the last transaction stored, if any was stored.
    pub commit: Option<DateTime<Utc>>,
}

/// The store's checkpoint for `source` and `slot`, with the commit time
/// of the last source transaction stored (kept with it); `None` when the
/// store has no checkpoint for them.
pub async fn last_stored<C: GenericClient>(
    store: &C,
    source: &SourceName,
    slot: &SlotName,
) -> Result<Option<LastStored>, StoreError> {
    let row = store
        .query_opt(
            "SELECT c.lsn::text, c.updated_at, c.last_committed_at \
             FROM pgtrail.checkpoints c JOIN pgtrail.sources s ON s.id = c.source \
             WHERE s.name = $1 AND c.slot = $2",
            &[&source.as_str(), &slot.as_str()],
        )
        .await?;
    last_stored_of(row)
}

/// [`last_stored`] in a store that sources have not reached yet
/// (migration 15 pending: one source, checkpoints by slot alone), for
/// `setup --recreate-slot`, which looks before it migrates.
pub async fn last_stored_before_sources<C: GenericClient>(
    store: &C,
    slot: &SlotName,
) -> Result<Option<LastStored>, StoreError> {
    // The newest change is found walking the primary key back from the end,
    // past the few EVENT entries (no LSN) there may be.
    let row = store
        .query_opt(
            "SELECT c.lsn::text, c.updated_at, \
                    (SELECT e.committed_at FROM pgtrail.entries e \
                     WHERE e.lsn IS NOT NULL AND e.lsn <= c.lsn ORDER BY e.id DESC LIMIT 1) \
             FROM pgtrail.checkpoints c WHERE c.slot = $1",
            &[&slot.as_str()],
        )
        .await?;
    last_stored_of(row)
}

fn last_stored_of(row: Option<tokio_postgres::Row>) -> Result<Option<LastStored>, StoreError> {
    let Some(row) = row else { return Ok(None) };
    // PostgreSQL writes a pg_lsn as text that always parses.
    let Ok(lsn) = row.get::<_, String>(0).parse() else {
        return Ok(None);
    };
    Ok(Some(LastStored {
        lsn,
        checkpoint_written: row.get(1),
        commit: row.get(2),
    }))
}

fn time(t: Option<DateTime<Utc>>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        t.to_rfc3339_opts(SecondsFormat::Micros, true).into()
    })
}

/// The `slot_lost` event: the daemon found the slot unable to deliver.
pub fn lost_event(loss: &SlotLoss, stored: Option<&LastStored>) -> OwnEvent {
    let since = stored
        .and_then(|s| s.commit)
        .map(|t| {
            format!(
                " (last stored commit {})",
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    OwnEvent::new(
        Category::Gap,
        "slot_lost",
        "pgtrail run",
        format!(
            "audit gap: slot {} lost; changes after {}{since} were not captured",
            loss.slot, loss.last_stored
        ),
    )
    .detail("source", loss.source.as_str())
    .detail("slot", loss.slot.as_str())
    .detail("found", loss.found.describe())
    .detail("last_stored_lsn", loss.last_stored.to_string())
    .detail("last_stored_commit", time(stored.and_then(|s| s.commit)))
    .detail(
        "checkpoint_written_at",
        time(stored.map(|s| s.checkpoint_written)),
    )
}

/// The `slot_recreated` event: a new slot, and the gap's extent as far as it
/// is known, from the last stored change to the new slot's start.
pub fn recreated_event(
    (source, slot): (&SourceName, &SlotName),
    found: &Found,
    stored: Option<&LastStored>,
    new_lsn: Lsn,
    actor: Option<String>,
) -> OwnEvent {
    let now = Utc::now();
    let from = stored.map_or_else(|| "-".to_owned(), |s| s.lsn.to_string());
    let mut event = OwnEvent::new(
        Category::Gap,
        "slot_recreated",
        "pgtrail cli",
        format!("slot {slot} recreated at {new_lsn}: changes after {from} and before {new_lsn} were not captured"),
    )
    .detail("source", source.as_str())
    .detail("slot", slot.as_str())
    .detail("found", found.describe())
    .detail("from_lsn", stored.map(|s| s.lsn.to_string()))
    .detail("from_commit", time(stored.and_then(|s| s.commit)))
    .detail("to_lsn", new_lsn.to_string())
    .detail("to_time", time(Some(now)));
    if let Some(actor) = actor {
        event = event.actor(actor);
    }
    event
}

/// The `source_moved` event: `setup --rebind-source` moved the source to
/// another server, or to another database on the same one (restored there,
/// with a new OID), whose slot starts at `new_lsn`. Moved to another server,
/// the store's checkpoint was a position in the old server's WAL, which
/// means nothing on the new one: changes on the old server after the last
/// one stored, and on the new one before its slot's start, were not
/// captured. On the same server both are positions in one WAL. The same
/// extent as [`recreated_event`]'s, and the databases on either side; its
/// words say which of the two moves it was.
pub fn moved_event(
    (source, slot): (&SourceName, &SlotName),
    (from, to): (&SourceServer, &SourceServer),
    stored: Option<&LastStored>,
    new_lsn: Lsn,
    actor: Option<String>,
) -> OwnEvent {
    let side = |s: &SourceServer| {
        serde_json::json!({
            "system_identifier": s.system_identifier,
            "database_oid": s.database_oid,
            "database": s.database,
        })
    };
    let last = stored.map_or_else(|| "-".to_owned(), |s| s.lsn.to_string());
    let (found, lost) = if from.same_server(to) {
        (
            "the source moved to another database on the same server",
            format!("changes to the old database after {last} and to the new one before {new_lsn}"),
        )
    } else {
        (
            "the source moved to another server",
            format!("changes on the old server after {last} and on the new one before {new_lsn}"),
        )
    };
    let mut event = OwnEvent::new(
        Category::Gap,
        "source_moved",
        "pgtrail cli",
        format!(
            "audit gap: source {source} moved from {from} to {to}; {lost} (its slot {slot}'s start) were not captured"
        ),
    )
    .detail("source", source.as_str())
    .detail("slot", slot.as_str())
    .detail("found", format!("{found} ({from} to {to})"))
    .detail("from_server", side(from))
    .detail("to_server", side(to))
    .detail("from_lsn", stored.map(|s| s.lsn.to_string()))
    .detail("from_commit", time(stored.and_then(|s| s.commit)))
    .detail("to_lsn", new_lsn.to_string())
    .detail("to_time", time(Some(Utc::now())));
    if let Some(actor) = actor {
        event = event.actor(actor);
    }
    event
}

/// Records the loss as a `slot_lost` event unless the newest gap event of
/// this source's slot already says the same (a daemon started again on the same lost
/// slot). Returns whether it recorded one.
pub async fn record_loss(store: &PgUrl, loss: &SlotLoss) -> Result<bool, String> {
    let client = crate::pg::connect(store, "pgtrail run")
        .await
        .map_err(|e| crate::pg::describe(&e))?;
    let newest = client
        .query_opt(
            "SELECT details->>'event', details->>'last_stored_lsn' FROM pgtrail.entries \
             WHERE schema_name = 'pgtrail' AND table_name = 'gap' AND action = 'EVENT' \
               AND details->>'slot' = $1 \
               AND coalesce(details->>'source', (SELECT name FROM pgtrail.sources WHERE id = 1)) = $2 \
             ORDER BY id DESC LIMIT 1",
            &[&loss.slot.as_str(), &loss.source.as_str()],
        )
        .await
        .map_err(|e| crate::pg::describe(&e))?;
    let last = loss.last_stored.to_string();
    if let Some(row) = newest {
        let (event, lsn): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        if event.as_deref() == Some("slot_lost") && lsn.as_deref() == Some(last.as_str()) {
            return Ok(false);
        }
    }
    let stored = last_stored(&client, &loss.source, &loss.slot)
        .await
        .map_err(|e| e.to_string())?;
    crate::store::events::record(&client, &lost_event(loss, stored.as_ref()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}
