//! The slot check `setup` makes first, and `setup --recreate-slot`.
//!
//! A slot that is lost, or missing while the store has a checkpoint for it,
//! means an audit gap: changes after the checkpoint were never captured.
//! Creating a new slot silently would hide it, so `setup` refuses and names
//! the flag; with `--recreate-slot` it drops the lost slot, lets setup create
//! a new one, then records a `gap` EVENT with the gap's extent (from the last
//! stored change to the new slot's start) and moves the checkpoint to the new
//! slot's start, in one store transaction.

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::pg::Lsn;
use crate::pipeline::gap::{self, Found, LastStored};
use crate::source;

/// A lost slot being replaced: what was found, and what the store held.
pub struct Replacing {
    found: Found,
    stored: Option<LastStored>,
}

/// Before setup: refuses a lost slot without `recreate`; with it, drops a
/// lost slot so setup creates a new one, and returns what to record after.
/// `rebinding` (`--rebind-source`): the store's checkpoint is the old
/// server's, so a slot missing on the new one is no loss and one there is
/// used; the move records the gap (`cli::setup::moved`), nothing here does.
pub async fn before_setup(
    config: &Config,
    recreate: bool,
    rebinding: bool,
) -> Result<Option<Replacing>> {
    let source = source::connect(&config.source).await?;
    let found = gap::catalog_loss(&source, &config.slot).await?;
    if rebinding {
        if found == Some(Found::Lost) {
            if !recreate {
                bail!(
                    "the slot {:?} on the server the source moved to is lost ({}); \
                     add --recreate-slot to drop it and create a new one",
                    config.slot.as_str(),
                    Found::Lost.describe()
                );
            }
            drop_lost(&source, config.slot.as_str()).await?;
        }
        return Ok(None);
    }
    let stored = stored(config).await?;
    let slot = config.slot.as_str();
    let found = match found {
        None if recreate => bail!(
            "the slot {slot:?} is not lost: it still holds every change after the store's checkpoint, \
             so there is nothing to recreate; run `pgtrail setup` without --recreate-slot"
        ),
        None => return Ok(None),
        // A first setup: no slot and nothing stored yet.
        Some(Found::Missing) if stored.is_none() => return Ok(None),
        Some(found) => found,
    };
    if !recreate {
        let from = stored.as_ref().map_or_else(
            || "the last change stored".to_owned(),
            |s| format!("{} (the last change stored)", s.lsn),
        );
        bail!(
            "audit gap on slot {slot:?}: {}. Changes after {from} were not captured and cannot be. \
             `pgtrail setup --recreate-slot` creates a new slot and records the gap in the store \
             (a `gap` EVENT); capture then resumes from the new slot's start",
            found.describe()
        );
    }
    if found == Found::Lost {
        drop_lost(&source, slot).await?;
    }
    Ok(Some(Replacing { found, stored }))
}

/// Drops the lost slot `slot`, so that setup creates a new one.
async fn drop_lost(source: &tokio_postgres::Client, slot: &str) -> Result<()> {
    source
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "dropping the lost slot {slot:?} failed: {}",
                crate::pg::describe(&e)
            )
        })?;
    Ok(())
}

/// After setup created the new slot: records the gap and moves the
/// checkpoint to the new slot's start. Returns the line to report.
pub async fn after_setup(config: &Config, replacing: Replacing) -> Result<String> {
    let source = source::connect(&config.source).await?;
    let new_lsn: Lsn = source::slot_info(&source, &config.slot)
        .await?
        .and_then(|s| s.confirmed_flush)
        .context("the new slot is not there after setup created it")?;
    let mut store = crate::store::open(&config.store).await?;
    let actor = crate::auth::Actor::cli().name;
    let event = gap::recreated_event(
        (&config.source_name, &config.slot),
        &replacing.found,
        replacing.stored.as_ref(),
        new_lsn,
        actor,
    );
    let tx = store.transaction().await?;
    crate::store::events::record(&tx, &event).await?;
    tx.execute(
        "UPDATE pgtrail.checkpoints SET lsn = $3::text::pg_lsn, updated_at = now() \
         WHERE source = (SELECT id FROM pgtrail.sources WHERE name = $1) AND slot = $2",
        &[
            &config.source_name.as_str(),
            &config.slot.as_str(),
            &new_lsn.to_string(),
        ],
    )
    .await?;
    tx.commit().await?;
    let from = replacing
        .stored
        .map_or_else(|| "-".to_owned(), |s| s.lsn.to_string());
    Ok(format!(
        "store: recorded the audit gap (a `gap` EVENT, slot_recreated): changes after {from} and before {new_lsn} were not captured; capture resumes from {new_lsn}"
    ))
}

/// What the store holds for the slot; `None` when the store or its schema
/// does not exist yet (a first setup).
async fn stored(config: &Config) -> Result<Option<LastStored>> {
    let client = match crate::pg::connect(&config.store, "pgtrail setup").await {
        Ok(client) => client,
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("3D000") => return Ok(None),
        Err(e) => bail!(
            "cannot connect to the audit store at {} to read its checkpoint: {}",
            config.store.endpoint(),
            crate::pg::describe(&e)
        ),
    };
    let row = client
        .query_one(
            "SELECT to_regclass('pgtrail.checkpoints') IS NOT NULL, to_regclass('pgtrail.sources') IS NOT NULL",
            &[],
        )
        .await?;
    let (set_up, sources): (bool, bool) = (row.get(0), row.get(1));
    if !set_up {
        return Ok(None);
    }
    // Setup migrates after this look: a store from before sources keeps
    // its checkpoints by slot.
    Ok(if sources {
        gap::last_stored(&client, &config.source_name, &config.slot).await?
    } else {
        gap::last_stored_before_sources(&client, &config.slot).await?
    })
}
