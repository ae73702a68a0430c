//! One retention pass (plan 4.2): under a session advisory lock, so that one
//! daemon of a fleet does it, list the partitions past the store's retention
//! (oldest first), count their entries per source, and — unless it is a dry
//! run — drop each through `pgtrail.drop_partition`, which checks the
//! retention again by the server's clock. A partition that cannot go (its
//! archive failed, a lock timed out) is kept and the pass goes on.

use serde::Serialize;
use tokio_postgres::Client;

use super::archives::{ArchiveFile, Archiver};
pub use super::candidate::{Candidate, SourceCount};
use super::PASS_LOCK;
use crate::store::events::{self, Category, OwnEvent};
use crate::store::StoreError;

/// What became of one candidate.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Listed by a dry run; nothing changed.
    WouldDrop,
    /// Dropped; `event` is the id of the entry that records it.
    Dropped {
        event: i64,
        archives: Vec<ArchiveFile>,
    },
    /// Kept, and why (it is tried again by the next pass).
    Kept { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    #[serde(flatten)]
    pub candidate: Candidate,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A pass's report, as `pgtrail retention --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// The store's retention (`None`: it keeps everything and nothing is listed).
    pub retention: Option<String>,
    /// Another process held the pass's lock: this one did nothing.
    pub skipped_busy: bool,
    pub partitions: Vec<PartitionReport>,
}

/// Whether the pass changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    Drop,
}

/// Runs one pass. `archiver`: `None` when `[store] archive_dir` is unset (a
/// partition then goes without archives, and its event says so).
pub async fn run(
    client: &mut Client,
    mode: Mode,
    archiver: Option<&dyn Archiver>,
) -> Result<PassReport, StoreError> {
    // A dry run changes nothing: it needs no lock, and shows the list even
    // while a daemon's pass runs.
    if mode == Mode::DryRun {
        return locked_pass(client, mode, archiver).await;
    }
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PASS_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(PassReport {
            retention: stored(client).await?,
            skipped_busy: true,
            partitions: Vec::new(),
        });
    }
    let result = locked_pass(client, mode, archiver).await;
    // A failed unlock only means the session is gone, which releases it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PASS_LOCK])
        .await;
    result
}

async fn locked_pass(
    client: &mut Client,
    mode: Mode,
    archiver: Option<&dyn Archiver>,
) -> Result<PassReport, StoreError> {
    let retention = stored(client).await?;
    let mut partitions = Vec::new();
    for candidate in candidates(client).await? {
        let outcome = match mode {
            Mode::DryRun => Outcome::WouldDrop,
            Mode::Drop => drop_one(client, &candidate, archiver).await,
        };
        partitions.push(PartitionReport { candidate, outcome });
    }
    Ok(PassReport {
        retention,
        skipped_busy: false,
        partitions,
    })
}

/// The store's retention as text (`pgtrail.settings.retention`).
pub async fn stored(client: &Client) -> Result<Option<String>, StoreError> {
    Ok(client
        .query_one("SELECT retention::text FROM pgtrail.settings", &[])
        .await?
        .get(0))
}

/// Ledger rows past the stored retention, not held, not dropped, oldest
/// first, with their exact entry counts per source.
async fn candidates(client: &Client) -> Result<Vec<Candidate>, StoreError> {
    let rows = client
        .query(
            "SELECT p.name, p.from_at, p.to_at \
             FROM pgtrail.partitions p, pgtrail.settings s \
             WHERE p.dropped_at IS NULL AND (p.held_until IS NULL OR p.held_until < now()) \
               AND s.retention IS NOT NULL AND p.to_at <= now() - s.retention \
               AND to_regclass(format('pgtrail.%I', p.name)) IS NOT NULL \
             ORDER BY p.from_at",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let entries = counts(client, &name).await?;
        out.push(Candidate {
            name,
            from: row.get(1),
            to: row.get(2),
            entries,
        });
    }
    Ok(out)
}

async fn counts(client: &Client, partition: &str) -> Result<Vec<SourceCount>, StoreError> {
    // Through the parent (the roles' rights are on it, not on each
    // partition), pruned to the one partition by its ledger range.
    // The names joined after the count, so the scan stays the partition's alone.
    let sql = "SELECT c.source, s.name, c.entries FROM ( \
                 SELECT e.source, count(*) AS entries FROM pgtrail.entry_rows e, pgtrail.partitions p \
                 WHERE p.name = $1 AND e.committed_at >= p.from_at AND e.committed_at < p.to_at \
                   AND e.tableoid = to_regclass(format('pgtrail.%I', p.name)) \
                 GROUP BY e.source) c \
               LEFT JOIN pgtrail.sources s ON s.id = c.source ORDER BY c.source";
    let rows = client.query(sql, &[&partition]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(SourceCount {
            source: r.try_get(0)?,
            source_name: r.try_get(1)?,
            entries: r.try_get(2)?,
        });
    }
    Ok(out)
}

async fn drop_one(
    client: &mut Client,
    candidate: &Candidate,
    archiver: Option<&dyn Archiver>,
) -> Outcome {
    let archives = match archiver {
        None => Vec::new(),
        Some(a) => match a.archive(client, candidate).await {
            Ok(files) => files,
            Err(reason) => return archive_failed(client, candidate, reason).await,
        },
    };
    let list = match serde_json::to_string(&archives) {
        Ok(list) => list,
        Err(e) => {
            return Outcome::Kept {
                reason: e.to_string(),
            }
        }
    };
    match client
        .query_one(
            "SELECT pgtrail.drop_partition($1, $2::text::json)",
            &[&candidate.name, &list],
        )
        .await
    {
        Ok(row) => Outcome::Dropped {
            event: row.get(0),
            archives,
        },
        Err(e) => after_failed_drop(client, candidate, archiver, archives, e).await,
    }
}

/// The drop failed, or its reply was lost: the ledger says which. A drop
/// that happened is reported as such; otherwise the files this pass wrote
/// are copies of a range still in the store that no event names, and are
/// removed (the next pass writes them again). When even the ledger cannot
/// be read, they are kept: they may be the only copy.
async fn after_failed_drop(
    client: &Client,
    candidate: &Candidate,
    archiver: Option<&dyn Archiver>,
    archives: Vec<ArchiveFile>,
    e: tokio_postgres::Error,
) -> Outcome {
    let reason = StoreError::from(e).to_string();
    let ledger = client
        .query_one(
            "SELECT dropped_at IS NOT NULL, drop_event FROM pgtrail.partitions WHERE name = $1",
            &[&candidate.name],
        )
        .await;
    match ledger {
        Ok(row) if row.get::<_, bool>(0) => {
            let event: Option<i64> = row.get(1);
            tracing::warn!(partition = %candidate.name, %reason, "the drop's reply was lost, but the ledger shows it dropped");
            Outcome::Dropped {
                event: event.unwrap_or_default(),
                archives,
            }
        }
        Ok(_) => {
            if let Some(a) = archiver {
                a.discard(&archives);
            }
            tracing::error!(partition = %candidate.name, %reason, "the partition could not be dropped; it is kept");
            Outcome::Kept { reason }
        }
        Err(ledger_error) => {
            tracing::error!(partition = %candidate.name, %reason, error = %ledger_error, "the partition's drop failed and the ledger is unreadable; its archives are kept");
            Outcome::Kept { reason }
        }
    }
}

/// A partition whose archives could not be written or checked is kept: the
/// failure is logged and recorded as an event, so the audit log of the audit
/// log shows why history that should have gone is still there.
async fn archive_failed(client: &Client, candidate: &Candidate, reason: String) -> Outcome {
    tracing::error!(partition = %candidate.name, %reason, "archiving failed; the partition is kept");
    let event = OwnEvent::new(
        Category::Retention,
        "archive_failed",
        "pgtrail retention",
        format!(
            "partition {} kept: its archive failed: {reason}",
            candidate.name
        ),
    )
    .detail("partition", candidate.name.as_str())
    .detail("from", candidate.from.to_rfc3339())
    .detail("to", candidate.to.to_rfc3339())
    .detail("reason", reason.as_str());
    match events::record(client, &event).await {
        Ok(_) => Outcome::Kept { reason },
        Err(e) => {
            tracing::error!(error = %e, "the failed archive could not be recorded as an event");
            Outcome::Kept {
                reason: format!("{reason}; recording this as an event failed too: {e}"),
            }
        }
    }
}
