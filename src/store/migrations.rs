//! Versioned store schema migrations from `sql/store/`, embedded in the binary.
//! Each is applied once, in its own transaction, and recorded in
//! `pgtrail.schema_migrations`.

use tokio_postgres::Client;

use super::migrate::guard;
use super::sources::SourceName;
use super::{failure, StoreError};

/// (version, name, SQL), in order. Never edit one that has shipped: add another.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "entries",
        include_str!("../../sql/store/0001_entries.sql"),
    ),
    (
        2,
        "details and events",
        include_str!("../../sql/store/0002_details_and_events.sql"),
    ),
    (
        3,
        "web columns",
        include_str!("../../sql/store/0003_web_columns.sql"),
    ),
    (
        4,
        "users, sessions and tokens",
        include_str!("../../sql/store/0004_users.sql"),
    ),
    (
        5,
        "partition maps",
        include_str!("../../sql/store/0005_partition_maps.sql"),
    ),
    (
        6,
        "hash chain and append-only entries",
        include_str!("../../sql/store/0006_chain.sql"),
    ),
    (
        7,
        "events through record_event",
        include_str!("../../sql/store/0007_record_event.sql"),
    ),
    (
        8,
        "signed chain heads",
        include_str!("../../sql/store/0008_signed_heads.sql"),
    ),
    (
        9,
        "quarantine",
        include_str!("../../sql/store/0009_quarantine.sql"),
    ),
    (
        10,
        "security events in source transactions, message keys",
        include_str!("../../sql/store/0010_source_events.sql"),
    ),
    (
        11,
        "gap events",
        include_str!("../../sql/store/0011_gap_events.sql"),
    ),
    (
        12,
        "gap and quarantine events are capture's alone",
        include_str!("../../sql/store/0012_capture_event_rights.sql"),
    ),
    (
        13,
        "capture state",
        include_str!("../../sql/store/0013_capture_state.sql"),
    ),
    (
        14,
        "an index of the rare actions",
        include_str!("../../sql/store/0014_rare_actions.sql"),
    ),
    (
        15,
        "sources: a fleet of source databases in one store",
        include_str!("../../sql/store/0015_sources.sql"),
    ),
    (
        16,
        "entries partitioned by commit time",
        include_str!("../../sql/store/0016_partitioned.sql"),
    ),
    (
        17,
        "source identity, clean stops, sources of quarantined records",
        include_str!("../../sql/store/0017_source_identity.sql"),
    ),
    (
        18,
        "retention: drop_partition, chain anchors",
        include_str!("../../sql/store/0018_retention.sql"),
    ),
    (
        19,
        "restore: restore_partition, restored partitions held and read-only",
        include_str!("../../sql/store/0019_restore.sql"),
    ),
    (
        20,
        "an event's time within 5 minutes of the store's clock",
        include_str!("../../sql/store/0020_event_time.sql"),
    ),
    (
        21,
        "retention's anchors: runs in the whole chain, each with its predecessor; every drop event in the ledger",
        include_str!("../../sql/store/0021_anchor_runs.sql"),
    ),
    (
        22,
        "every drop event of a partition dropped before migration 21; run_mismatch for drop_partition's and restore_partition's owners",
        include_str!("../../sql/store/0022_drop_events_backfill.sql"),
    ),
    (
        23,
        "context, xid and LSN once per transaction in pgtrail.transactions; pgtrail.entries a view over entry_rows and transactions",
        include_str!("../../sql/store/0023_transactions.sql"),
    ),
];

/// The migration that splits the entries into rows and transactions: like
/// 16, it rewrites every entry, and is refused while pgtrail processes
/// are connected (an old daemon would write into the view one transaction
/// per row).
const TRANSACTIONS_MIGRATION: i32 = 23;

/// The setting through which [`apply`] tells migration 15 the name of the
/// store's first source (an existing store's capture becomes that source's).
pub const FIRST_SOURCE_SETTING: &str = "pgtrail.first_source";

/// The store's group roles and their grants (`sql/store/roles.sql`):
/// re-applied by setup after migrations, so new tables get their grants.
pub const ROLES: &str = include_str!("../../sql/store/roles.sql");

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS pgtrail;
CREATE TABLE IF NOT EXISTS pgtrail.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// Versions not yet applied.
pub async fn pending(client: &Client) -> Result<Vec<i32>, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgtrail.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let applied: Vec<i32> = if exists {
        client
            .query("SELECT version FROM pgtrail.schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.0)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// SQL that `apply` would run, for `--dry-run` style output.
pub async fn plan(client: &Client) -> Result<Vec<(i32, &'static str)>, StoreError> {
    let pending = pending(client).await?;
    Ok(MIGRATIONS
        .iter()
        .filter(|m| pending.contains(&m.0))
        .map(|m| (m.0, m.1))
        .collect())
}

/// Applies every pending migration; returns the versions applied. `first`
/// names the store's first source, should it not have one yet. No
/// migration waits more than [`migrate::guard::LOCK_TIMEOUT`] for a lock
/// (a long reader of the store makes setup fail, naming it, rather than
/// hang with every other session queued behind it), and migration 16 is
/// refused while pgtrail processes are connected, but for `own`: the
/// caller's other open connections ([`guard::refuse_if_in_use`]).
pub async fn apply(
    client: &mut Client,
    first: &SourceName,
    own: &[guard::Backend],
) -> Result<Vec<i32>, StoreError> {
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        match apply_one(client, (*version, name, sql), (first, own)).await {
            Ok(true) => applied.push(*version),
            Ok(false) => {}
            Err(StoreError::Query(e)) if failure::sqlstate(&e) == Some("55P03") => {
                return Err(StoreError::MigrationLocked {
                    version: *version,
                    timeout: guard::LOCK_TIMEOUT,
                    holders: guard::lock_holders(client).await?,
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}

/// Applies one migration in its own transaction unless it was; says whether it did.
async fn apply_one(
    client: &mut Client,
    (version, name, sql): (i32, &str, &str),
    (first, own): (&SourceName, &[guard::Backend]),
) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    // Two `setup`s at once must not both apply a migration: the second
    // waits here (without a timeout: migrations are short).
    tx.batch_execute("SELECT pg_advisory_xact_lock(7420501)")
        .await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}'",
        guard::LOCK_TIMEOUT
    ))
    .await?;
    tx.batch_execute(BOOTSTRAP).await?;
    let done = tx
        .query_opt(
            "SELECT 1 FROM pgtrail.schema_migrations WHERE version = $1",
            &[&version],
        )
        .await?;
    if done.is_some() {
        tx.commit().await?;
        return Ok(false);
    }
    if version == 16 || version == TRANSACTIONS_MIGRATION {
        guard::refuse_if_in_use(&tx, own).await?;
    }
    tx.execute(
        "SELECT set_config($1, $2, true)",
        &[&FIRST_SOURCE_SETTING, &first.as_str()],
    )
    .await?;
    if version == super::legacy_scopes::SOURCES_MIGRATION {
        super::legacy_scopes::requote(&tx).await?;
    }
    tx.batch_execute(sql).await?;
    tx.execute(
        "INSERT INTO pgtrail.schema_migrations (version, name) VALUES ($1, $2)",
        &[&version, &name],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
