//! The audit store: a PostgreSQL database holding the entries and the
//! checkpoint, for one or many sources ([`sources`]).
//!
//! **What the store promises.** Entries of a source transaction are committed
//! in the same store transaction as the checkpoint that says they are there
//! (the end LSN of the last stored source transaction). So after any crash the
//! checkpoint is exactly as far as the entries, and replaying the slot from it
//! neither misses nor repeats a change. [`writer`] batches entries into those
//! transactions; [`migrations`] creates the schema. Beside the entries:
//! [`capture_state`], the daemon's last reading of its slot, and [`gaps`],
//! the audit gaps its `gap` events record, both for the web view.

pub mod binding;
pub mod capture_state;
pub mod chain;
pub mod claim;
pub mod context;
pub mod encode;
pub mod events;
pub mod failure;
pub mod gaps;
pub mod legacy_scopes;
pub mod message_key;
pub mod migrate;
pub mod migrations;
pub mod partitions;
pub mod quarantine;
pub mod retention;
mod runs;
pub mod signing;
pub mod sources;
pub mod stored;
mod tally;
pub mod writer;

pub use sources::{SourceId, SourceName};
pub use stored::StoredEntry;

use tokio_postgres::Client;

use crate::pg::{connect, describe, Lsn, PgUrl, SlotName};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the audit store at {endpoint} (database {dbname:?}): {reason}; check that PostgreSQL runs there and that store.url is right")]
    Connect {
        endpoint: String,
        dbname: String,
        reason: String,
        /// The server's SQLSTATE, when it answered (`28P01`: wrong password).
        code: Option<String>,
    },
    #[error(
        "the audit store is not set up (database {dbname:?}: {reason}); run `pgtrail setup` first"
    )]
    NotSetUp { dbname: String, reason: String },
    #[error("the audit store {dbname:?} must be migrated before pgtrail can use it: {state}; stop every `pgtrail run` and `pgtrail web` on this store and run `pgtrail setup`, which moves the entries into time partitions with a progress bar (it can be interrupted and run again)")]
    NeedsMigration { dbname: String, state: String },
    #[error("the entries copied into partitions do not check out: {0}; nothing was dropped (the old table pgtrail.entries_unpartitioned is kept as it was) and the store stays refused: keep it as it is and report this")]
    MigrationCheck(String),
    #[error("the audit store is in use by other pgtrail processes: {0}. Stop every `pgtrail run` and `pgtrail web` on this store (e.g. `systemctl stop pgtrail`), then run `pgtrail setup` again: it moves every entry into time partitions, and nothing may write or read them meanwhile. Nothing was changed")]
    MigrationInUse(String),
    #[error("store migration {version} waited {timeout} for a lock on pgtrail's tables and gave up, so as not to stall every session queued behind it; held by {holders}. Let those sessions finish, or end them (SELECT pg_terminate_backend(PID)), then run `pgtrail setup` again. Nothing of that migration was applied")]
    MigrationLocked {
        version: i32,
        timeout: &'static str,
        holders: String,
    },
    #[error("another `pgtrail setup` is moving this store's entries into time partitions: {0}. Let it finish (it reports when it is done); run `pgtrail setup` again only if it failed or was stopped (the move goes on where it was)")]
    MigrationBusy(String),
    #[error("a stored table scope would change meaning under sources: the {0}. Nothing was migrated: limit it to exact schemas instead (e.g. \"a:b\".orders), with the pgtrail that wrote it (`pgtrail user set-tables`) or in the store (the `tables` column of pgtrail.users or pgtrail.tokens), then run `pgtrail setup` again")]
    LegacyScope(String),
    #[error("audit store query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("the source sent a commit time pgtrail cannot read ({0:?}); it cannot be hashed into the chain")]
    CommitTime(String),
    #[error("the chain head of source {0:?} moved under this daemon: another process writes captured entries of that source into this store (one daemon per source); stop the other one, or give this one its own [source] name")]
    ChainMoved(String),
    #[error(
        "the chain head of {0} is missing or malformed in pgtrail.chain_heads; run `pgtrail setup`"
    )]
    ChainHead(String),
    #[error("another pgtrail daemon is capturing the source {name:?} into this store: its capture lock is held by {holder}. Run one daemon per source: stop the other one, or give this one its own [source] name (and slot). If no other daemon runs (a stalled one whose connection is gone), end that backend in the store: SELECT pg_terminate_backend(PID)")]
    SourceTaken { name: String, holder: String },
    #[error("{0}")]
    WrongSource(Box<binding::Mismatch>),
    #[error("the store's sequence pgtrail.transactions_id_seq gave no ids when asked for some; check that `pgtrail setup` has run and nothing else changed that sequence")]
    TransactionIds,
    #[error("the audit store did not answer within {0} s (store.timeout_seconds): the network or the store is stalled; capture resumes from the checkpoint once it answers")]
    Timeout(u64),
}

impl StoreError {
    /// The store refuses the data of the source transaction being written:
    /// retrying it would fail the same way (see [`failure`]).
    pub fn refuses_data(&self) -> bool {
        match self {
            StoreError::Query(e) => failure::of_error(e) == failure::Failure::Refused,
            StoreError::CommitTime(_) => true,
            _ => false,
        }
    }

    /// The error, with the SQLSTATE the store sent, if any: what a
    /// quarantine records as its reason.
    pub fn with_sqlstate(&self) -> String {
        match self {
            StoreError::Query(e) => match failure::sqlstate(e) {
                Some(code) => format!("{self} (SQLSTATE {code})"),
                None => self.to_string(),
            },
            _ => self.to_string(),
        }
    }
}

/// Connects to the store and checks that `setup` has prepared it.
pub async fn open(url: &PgUrl) -> Result<Client, StoreError> {
    let client = connect(url, "pgtrail").await.map_err(|e| {
        // A missing database means setup has not run.
        if e.as_db_error().map(|d| d.code().code()) == Some("3D000") {
            StoreError::NotSetUp {
                dbname: url.dbname().to_owned(),
                reason: "the database does not exist".into(),
            }
        } else {
            StoreError::Connect {
                endpoint: url.endpoint(),
                dbname: url.dbname().to_owned(),
                reason: describe(&e),
                code: crate::pg::sqlstate(&e),
            }
        }
    })?;
    let pending = migrations::pending(&client).await?;
    if let Some(refused) = migrate::refusal(&client, url.dbname(), &pending).await? {
        return Err(refused);
    }
    if !pending.is_empty() {
        return Err(StoreError::NotSetUp {
            dbname: url.dbname().to_owned(),
            reason: format!("{} migration(s) not applied", pending.len()),
        });
    }
    Ok(client)
}

/// The end LSN of the last source transaction of `source` stored from this slot.
pub async fn checkpoint(
    client: &Client,
    source: SourceId,
    slot: &SlotName,
) -> Result<Option<Lsn>, StoreError> {
    let row = client
        .query_opt(
            "SELECT lsn::text FROM pgtrail.checkpoints WHERE source = $1 AND slot = $2",
            &[&source.0, &slot.as_str()],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// The partition map stored with the slot's checkpoint, if one was ever stored.
pub async fn partition_map(
    client: &Client,
    source: SourceId,
    slot: &SlotName,
) -> Result<Option<crate::capture::partition::PartitionMap>, StoreError> {
    let row = client
        .query_opt(
            "SELECT members::text FROM pgtrail.partition_maps WHERE source = $1 AND slot = $2",
            &[&source.0, &slot.as_str()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.get(0);
    match crate::capture::partition::PartitionMap::from_json(&text) {
        Ok(map) => Ok(Some(map)),
        Err(e) => {
            // Only pgtrail writes it; if it cannot be read, the catalog is the
            // next best thing, as before the map was stored.
            tracing::warn!(error = %e, "the stored partition map cannot be read; starting from the catalog");
            Ok(None)
        }
    }
}

/// Records a starting checkpoint for a new slot of `source`; an existing one is kept.
pub async fn init_checkpoint(
    client: &Client,
    source: SourceId,
    slot: &SlotName,
    lsn: Lsn,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO pgtrail.checkpoints (source, slot, lsn) VALUES ($1, $2, $3::text::pg_lsn) \
             ON CONFLICT (source, slot) DO NOTHING",
            &[&source.0, &slot.as_str(), &lsn.to_string()],
        )
        .await?;
    Ok(())
}
