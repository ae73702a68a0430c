//! `pgtrail verify`'s check of the quarantine ([`crate::store::quarantine`]).
//! Each quarantined transaction has an `EVENT` entry in the events chain (so
//! the chain vouches for it) that states how many raw records were kept in
//! `pgtrail.quarantine` and their SHA-256. This recomputes both from the
//! stored rows, with the writer's own digest, and reports an `EVENT` whose
//! records differ, and records that no `EVENT` covers.
//!
//! Range: an `EVENT` is checked when its id is within `--from`/`--to`, with
//! all its records. Records no `EVENT` covers belong to no entry id, so they
//! are looked for whenever the check runs to the store's end (no `--to`), as
//! the chain heads are compared.

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use serde::Serialize;
use tokio_postgres::Transaction;

use super::{push_break, Report, Scope};
use crate::pg::Lsn;
use crate::store::chain;
use crate::store::quarantine::{RecordsDigest, EVENT};
use crate::store::sources::SourceName;

/// How much of the quarantine was checked.
#[derive(Debug, Default, Serialize)]
pub struct QuarantineReport {
    /// Quarantined transactions (their `EVENT` entries) checked.
    pub transactions: u64,
    /// Their records read.
    pub records: u64,
}

/// The `EVENT` entries that say a transaction was quarantined (as `e`; `$1` is [`EVENT`]).
const EVENTS: &str = "e.action = 'EVENT' AND e.schema_name = 'pgtrail' \
     AND e.table_name = 'quarantine' AND e.details->>'event' = $1";

/// The source an `EVENT` (as `e`) is about: `details.source`, or for one
/// recorded before sources had names, the store's first (parameter `$n`).
fn event_source(n: u8) -> String {
    format!("coalesce(e.details->>'source', ${n})")
}

/// Checks the quarantined transactions (of the sources in `scope`) whose
/// `EVENT` is within `from..=to` and, when `to_the_end`, looks for records
/// no `EVENT` covers. Every difference is a break in `report`.
pub(super) async fn check(
    tx: &Transaction<'_>,
    (from, to): (i64, i64),
    to_the_end: bool,
    scope: &Scope,
    report: &mut Report,
) -> Result<()> {
    let only = scope.only.map(|id| id.0);
    claims(tx, (from, to), (&scope.first, only), report).await?;
    if to_the_end {
        uncovered(tx, (&scope.first, only), report).await?;
    }
    Ok(())
}

/// What one `EVENT` states, and its records as read so far.
struct Claim {
    id: i64,
    /// Where its transaction starts, its record count and their SHA-256
    /// (hex), as the `EVENT`'s details state them.
    first_lsn: Option<String>,
    records: Option<String>,
    sha256: Option<String>,
    read: u64,
    digest: RecordsDigest,
}

impl Claim {
    fn from_row(row: &tokio_postgres::Row) -> Result<Claim> {
        Ok(Claim {
            id: row.try_get(0)?,
            first_lsn: row.try_get(1)?,
            records: row.try_get(2)?,
            sha256: row.try_get(3)?,
            read: 0,
            digest: RecordsDigest::default(),
        })
    }

    /// What differs between the claim and the records read, if anything.
    fn problem(self) -> Option<String> {
        let (Some(first_lsn), Some(records), Some(sha256)) =
            (&self.first_lsn, &self.records, &self.sha256)
        else {
            return Some(
                "its details do not state which quarantined records it vouches for (first_lsn, records, records_sha256)".into(),
            );
        };
        let read = self.read;
        if records.parse::<u64>().ok() != Some(read) {
            return Some(format!(
                "pgtrail.quarantine holds {read} records of the transaction at {first_lsn}, but its EVENT counts {records}: records were deleted or inserted past pgtrail"
            ));
        }
        let digest = chain::hex(&self.digest.finish());
        (digest != *sha256).then(|| format!(
            "the {read} records of the transaction at {first_lsn} in pgtrail.quarantine have SHA-256 {digest}, but its EVENT states {sha256}: a record was changed"
        ))
    }
}

/// Streams each `EVENT` in the range with its records (one row per record,
/// in order; one row without a record for an `EVENT` that finds none), so
/// that only one transaction's digest is held at a time.
async fn claims(
    tx: &Transaction<'_>,
    (from, to): (i64, i64),
    (first, only): (&str, Option<i16>),
    report: &mut Report,
) -> Result<()> {
    let rows = tx
        .query_raw(
            &format!(
                "SELECT e.id, e.details->>'first_lsn', e.details->>'records', \
                        e.details->>'records_sha256', q.lsn::text, q.record \
                 FROM pgtrail.entries e \
                 LEFT JOIN pgtrail.sources s ON s.name = {} \
                 LEFT JOIN pgtrail.quarantine q \
                     ON q.first_lsn::text = e.details->>'first_lsn' AND q.source = s.id \
                 WHERE {EVENTS} AND e.id BETWEEN $2 AND $3 AND ($5::smallint IS NULL OR s.id = $5) \
                 ORDER BY e.id, q.seq",
                event_source(4)
            ),
            [
                &EVENT as &(dyn tokio_postgres::types::ToSql + Sync),
                &from,
                &to,
                &first,
                &only,
            ],
        )
        .await
        .context("cannot read the quarantine's EVENT entries and records")?;
    futures_util::pin_mut!(rows);
    let mut current: Option<Claim> = None;
    while let Some(row) = rows.try_next().await? {
        let id: i64 = row.try_get(0)?;
        if current.as_ref().map(|c| c.id) != Some(id) {
            if let Some(done) = current.replace(Claim::from_row(&row)?) {
                finish(done, report);
            }
        }
        let claim = current.as_mut().context("a claim is being read")?;
        let Some(lsn) = row.try_get::<_, Option<&str>>(4)? else {
            continue;
        };
        let lsn: Lsn = lsn
            .parse()
            .with_context(|| format!("the store returned an LSN pgtrail cannot read: {lsn:?}"))?;
        claim.digest.add(lsn, row.try_get(5)?);
        claim.read += 1;
    }
    if let Some(done) = current {
        finish(done, report);
    }
    Ok(())
}

fn finish(claim: Claim, report: &mut Report) {
    report.quarantine.transactions += 1;
    report.quarantine.records += claim.read;
    let id = claim.id;
    if let Some(problem) = claim.problem() {
        push_break(report, Some(id), SourceName::PGTRAIL, problem);
    }
}

/// Records of transactions no `EVENT` covers, one break per transaction.
async fn uncovered(
    tx: &Transaction<'_>,
    (first, only): (&str, Option<i16>),
    report: &mut Report,
) -> Result<()> {
    let rows = tx
        .query_raw(
            &format!(
                "SELECT q.first_lsn::text, count(*) FROM pgtrail.quarantine q \
                 JOIN pgtrail.sources s ON s.id = q.source \
                 WHERE ($3::smallint IS NULL OR q.source = $3) \
                   AND NOT EXISTS (SELECT FROM pgtrail.entries e \
                                   WHERE {EVENTS} AND e.details->>'first_lsn' = q.first_lsn::text \
                                     AND {} = s.name) \
                 GROUP BY q.source, q.first_lsn ORDER BY q.source, q.first_lsn",
                event_source(2)
            ),
            [
                &EVENT as &(dyn tokio_postgres::types::ToSql + Sync),
                &first,
                &only,
            ],
        )
        .await
        .context("cannot look for quarantined records no EVENT covers")?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        let (first_lsn, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        push_break(
            report,
            None,
            "quarantine",
            format!(
                "pgtrail.quarantine holds {n} records of a transaction at {first_lsn} that no EVENT entry covers: they were inserted past pgtrail, or their EVENT was deleted"
            ),
        );
    }
    Ok(())
}
