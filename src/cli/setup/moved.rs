//! What `setup --rebind-source` does besides moving the binding: the
//! store's checkpoint for the source's slot is a position in the old
//! server's WAL, which means nothing on the new server (kept, it would
//! have the daemon ask the new slot for a position that is not its own,
//! skipping or repeating whatever lies between); on the same server, a
//! database restored there is captured from its own slot's start. So, in
//! the transaction that rebinds, a `gap` EVENT (`source_moved`) records
//! what was not captured: the old database's changes after the last one
//! stored, and the new one's before its slot's start; and the checkpoint
//! moves to that start, whether setup made the slot just now or found one
//! there. The partition map kept with the old checkpoint goes too: the
//! daemon reads the new database's catalog instead.

use anyhow::Result;
use tokio_postgres::Transaction;

use crate::config::Config;
use crate::pg::Lsn;
use crate::pipeline::gap;
use crate::store::binding::SourceServer;
use crate::store::{events, SourceId};

/// Records the gap of a move from `from` to `to`, whose slot starts at
/// `start`, and moves source `id`'s checkpoint there. Returns the line to report.
pub async fn record(
    tx: &Transaction<'_>,
    config: &Config,
    (id, from, to): (SourceId, &SourceServer, &SourceServer),
    start: Lsn,
) -> Result<String> {
    let (name, slot) = (&config.source_name, &config.slot);
    let stored = gap::last_stored(tx, name, slot).await?;
    let actor = crate::auth::Actor::cli().name;
    let event = gap::moved_event((name, slot), (from, to), stored.as_ref(), start, actor);
    events::record(tx, &event).await?;
    tx.execute(
        "INSERT INTO pgtrail.checkpoints (source, slot, lsn) VALUES ($1, $2, $3::text::pg_lsn) \
         ON CONFLICT (source, slot) DO UPDATE SET lsn = excluded.lsn, updated_at = now()",
        &[&id.0, &slot.as_str(), &start.to_string()],
    )
    .await?;
    tx.execute(
        "DELETE FROM pgtrail.partition_maps WHERE source = $1 AND slot = $2",
        &[&id.0, &slot.as_str()],
    )
    .await?;
    let last = stored.map_or_else(|| "nothing stored".to_owned(), |s| s.lsn.to_string());
    // Say which move it was: another server, or another database on this one.
    let (lost, there) = if from.same_server(to) {
        (
            format!("changes to the old database after {last} and to the new one before {start}"),
            "on the same server",
        )
    } else {
        (
            format!("changes on the old server after {last} and on the new one before {start}"),
            "there",
        )
    };
    Ok(format!(
        "store: recorded the audit gap of the move (a `gap` EVENT, source_moved): {lost} were not captured; \
         capture resumes from {start}, the start of slot {:?} {there}",
        slot.as_str()
    ))
}
