//! Retention: old entries go a whole partition at a time, never row by row,
//! and every chain stays verifiable across the cut (`pgtrail.drop_partition`,
//! migrations 18 and 21, writes an anchor per chain run it cuts, with the
//! entry the run followed, and records the drop in the events chain; a
//! restored partition dropped again keeps its first drop's anchors). This
//! module holds what the config, `setup` and the pass share.

pub mod archives;
pub mod candidate;
pub mod keeper;
pub mod pass;
pub mod period;

pub use period::Retention;

/// The session-level advisory lock one pass holds, so that one daemon of a
/// fleet sharing the store does the work and the others skip it.
pub const PASS_LOCK: i64 = 7_420_503;

/// What `pgtrail setup` writes into `pgtrail.settings`: [store] retention
/// (`None` keeps everything), and whether a partition with entries may go
/// only with its archives ([store] archive_dir is set). The store's values
/// are the ones enforced.
pub async fn store_setting(
    client: &tokio_postgres::Client,
    retention: Option<Retention>,
    archive_required: bool,
) -> Result<(), super::StoreError> {
    let interval = retention.map(Retention::interval);
    client
        .execute(
            "UPDATE pgtrail.settings SET retention = $1::text::interval, archive_required = $2",
            &[&interval, &archive_required],
        )
        .await?;
    Ok(())
}

/// Whether the store requires archives before a drop (`pgtrail.settings`).
pub async fn archive_required(client: &tokio_postgres::Client) -> Result<bool, super::StoreError> {
    Ok(client
        .query_one("SELECT archive_required FROM pgtrail.settings", &[])
        .await?
        .get(0))
}

/// The warning a process whose config disagrees with the store logs (the
/// store's value is the one used); `None` when they agree. Compared as
/// intervals by the store, which prints "13 mons" as "1 year 1 mon".
pub async fn disagreement(
    client: &tokio_postgres::Client,
    config: Option<Retention>,
) -> Result<Option<String>, super::StoreError> {
    let wanted = config.map(Retention::interval);
    let row = client
        .query_one(
            "SELECT retention IS NOT DISTINCT FROM $1::text::interval, retention::text \
             FROM pgtrail.settings",
            &[&wanted],
        )
        .await?;
    let (same, stored): (bool, Option<String>) = (row.get(0), row.get(1));
    Ok((!same).then(|| {
        format!(
            "[store] retention is {} in the config but {} in the store; the store's value is used: \
             run `pgtrail setup` to apply the config's",
            config.map_or("unset".to_owned(), |r| format!("\"{r}\"")),
            stored.map_or("unset (keep everything)".to_owned(), |s| format!("\"{s}\""))
        )
    }))
}
