//! Moving an unpartitioned store's entries into the partitioned layout
//! (migration 16, `sql/store/0016_partitioned.sql`), done by `pgtrail setup`.
//!
//! Migration 16 renames the old table `pgtrail.entries_unpartitioned` and
//! records in `pgtrail.store_migration` which ids it holds. [`finish`] then
//! copies them in batches of ids ([`copy`]), each batch one store
//! transaction that also advances `copied_upto`, so a setup interrupted at
//! any point (even SIGKILLed) resumes after the last batch it committed,
//! and nothing is copied twice. The copy runs inside the store (INSERT …
//! SELECT): memory stays flat whatever the store's size. Once every id is
//! copied it checks the counts and each chain head against the last entry
//! of its chain, and only then drops the old table.
//!
//! Until the state is `done`, [`refusal`] makes `store::open` refuse the
//! store with [`StoreError::NeedsMigration`]: a daemon writing while rows
//! are being moved would break the id order the chains are walked in.

mod copy;
pub mod guard;

pub use copy::Checked;

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::StoreError;

/// Old ids per batch when `PGTRAIL_MIGRATE_BATCH` does not say.
const BATCH: i64 = 50_000;

/// Where a copy stands (`pgtrail.store_migration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub first_id: i64,
    pub last_id: i64,
    pub copied_upto: i64,
    pub copied: i64,
    pub done: bool,
}

impl Progress {
    /// Old ids still to go through, and in all.
    fn span(&self) -> (u64, u64) {
        let all = (self.last_id - self.first_id + 1).max(0) as u64;
        let behind = (self.copied_upto - self.first_id + 1).clamp(0, all as i64) as u64;
        (behind, all)
    }
}

/// The copy's state, if migration 16 has run.
pub async fn progress(client: &Client) -> Result<Option<Progress>, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgtrail.store_migration') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT first_id, last_id, copied_upto, copied, state = 'done' FROM pgtrail.store_migration",
            &[],
        )
        .await?;
    Ok(row.map(|r| Progress {
        first_id: r.get(0),
        last_id: r.get(1),
        copied_upto: r.get(2),
        copied: r.get(3),
        done: r.get(4),
    }))
}

/// Why `store::open` must refuse this store, if it must: its entries are
/// in the unpartitioned layout (migration 16 pending, with entries to
/// move), or a copy is under way. `pending` are the migrations not applied.
pub async fn refusal(
    client: &Client,
    dbname: &str,
    pending: &[i32],
) -> Result<Option<StoreError>, StoreError> {
    if pending.contains(&16) {
        // An empty store is migrated by the SQL alone: nothing to refuse
        // there. Otherwise about how many entries (two index probes).
        // Asked apart: a statement naming a table that does not exist (a
        // store database made ahead, still empty) fails as it is planned,
        // whatever a CASE around it says.
        let exists: bool = client
            .query_one("SELECT to_regclass('pgtrail.entries') IS NOT NULL", &[])
            .await?
            .get(0);
        let estimate: Option<i64> = if exists {
            client
                .query_one("SELECT max(id) - min(id) + 1 FROM pgtrail.entries", &[])
                .await?
                .get(0)
        } else {
            None
        };
        return Ok(estimate.map(|n| StoreError::NeedsMigration {
            dbname: dbname.to_owned(),
            state: format!(
                "it holds about {n} entries in the unpartitioned layout of an earlier pgtrail"
            ),
        }));
    }
    Ok(match progress(client).await? {
        Some(p) if !p.done => Some(StoreError::NeedsMigration {
            dbname: dbname.to_owned(),
            state: format!(
                "its move to the partitioned layout is under way ({} of about {} entries copied)",
                p.copied,
                p.last_id - p.first_id + 1
            ),
        }),
        _ => None,
    })
}

/// Old ids per batch: `PGTRAIL_MIGRATE_BATCH` (for tests), else [`BATCH`].
fn batch_size() -> i64 {
    std::env::var("PGTRAIL_MIGRATE_BATCH")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(BATCH)
}

/// What [`finish`] did, and what its check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub entries: i64,
    pub took: Duration,
    pub check: Checked,
}

/// Copies what is left of the old table, checks, drops it. `None` when
/// there was nothing to do. Refused with [`StoreError::MigrationBusy`]
/// while another `setup` is copying (it holds [`guard::COPY_LOCK`] for as
/// long as it runs).
pub async fn finish(client: &mut Client) -> Result<Option<Moved>, StoreError> {
    if progress(client).await?.is_none_or(|p| p.done) {
        return Ok(None);
    }
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&guard::COPY_LOCK])
        .await?
        .get(0);
    if !locked {
        return Err(guard::other_setup(client).await?);
    }
    let moved = copy_all(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&guard::COPY_LOCK])
        .await?;
    moved
}

/// [`finish`] under its lock.
async fn copy_all(client: &mut Client) -> Result<Option<Moved>, StoreError> {
    // Read again under the lock: another setup may have finished meanwhile.
    let Some(start) = progress(client).await?.filter(|p| !p.done) else {
        return Ok(None);
    };
    let began = Instant::now();
    let batch = batch_size();
    let mut bar = Bar::new(start);
    let mut at = start;
    while at.copied_upto < at.last_id {
        at = copy::batch(client, batch).await?;
        bar.show(at);
    }
    bar.done();
    let check = copy::check_and_drop(client).await?;
    Ok(Some(Moved {
        entries: at.copied,
        took: began.elapsed(),
        check,
    }))
}

/// The progress shown while copying: a bar on a terminal, else a log line
/// every 5 %.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    /// The last twentieth logged.
    logged: u64,
}

impl Bar {
    fn new(at: Progress) -> Bar {
        use std::io::IsTerminal;
        let (behind, all) = at.span();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(all);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "moving entries into partitions {bar:40} {percent}% ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_position(behind);
            bar
        });
        tracing::info!(
            entries = at.last_id - at.first_id + 1 - (at.copied_upto - at.first_id + 1).max(0),
            "moving the store's entries into the partitioned layout"
        );
        Bar {
            bar,
            logged: behind * 20 / all.max(1),
        }
    }

    fn show(&mut self, at: Progress) {
        let (behind, all) = at.span();
        match &self.bar {
            Some(bar) => bar.set_position(behind),
            None => {
                let twentieth = behind * 20 / all.max(1);
                if twentieth > self.logged {
                    self.logged = twentieth;
                    tracing::info!(
                        percent = twentieth * 5,
                        copied = at.copied,
                        "moving entries into partitions"
                    );
                }
            }
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
