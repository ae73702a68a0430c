//! `pgtrail verify`'s check that every entry row has its transaction
//! (migration 23): an entry row is joined to its `pgtrail.transactions` row
//! by id, commit time and source, with no foreign key. An entry row whose
//! transaction row is gone (deleted, or altered to another source or time
//! past the triggers) drops out of the view `pgtrail.entries` that the chain
//! walk reads, so the walk sees a gap there; this names the entry and the
//! cause, also where the walk cannot: an entry stored before the chain began,
//! or the last one of a `--to` range.

use anyhow::Result;
use futures_util::TryStreamExt;
use tokio_postgres::Transaction;

use super::{push_break, Report, Scope};
use crate::store::sources::SourceId;

/// Reports every entry row within `from..=to` (of the sources in `scope`)
/// that has no transaction row.
pub(super) async fn check(
    tx: &Transaction<'_>,
    (from, to): (i64, i64),
    scope: &Scope,
    report: &mut Report,
) -> Result<()> {
    let only = scope.only.map(|id| id.0);
    let rows = tx
        .query_raw(
            "SELECT e.id, e.txn, e.source FROM pgtrail.entry_rows e \
             WHERE e.id BETWEEN $1 AND $2 AND ($3::smallint IS NULL OR e.source IN (0, $3)) \
               AND NOT EXISTS (SELECT FROM pgtrail.transactions t \
                               WHERE t.id = e.txn AND t.committed_at = e.committed_at \
                                 AND t.source = e.source) \
             ORDER BY e.id",
            [
                &from as &(dyn tokio_postgres::types::ToSql + Sync),
                &to,
                &only,
            ],
        )
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        let (id, txn, source): (i64, i64, i16) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let chain = scope
            .chains
            .get(&SourceId(source))
            .cloned()
            .unwrap_or_else(|| format!("unknown source {source}"));
        push_break(
            report,
            Some(id),
            &chain,
            format!(
                "the entry has no row in pgtrail.transactions (transaction {txn}): its context, \
                 xid and LSN are gone, and pgtrail.entries leaves it out"
            ),
        );
    }
    Ok(())
}
