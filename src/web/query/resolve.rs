//! What the filters need from the store before their SQL can be written: the
//! id range a time filter covers, and how a primary-key value is matched.

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use super::key_book::KeyBook;
use super::keys::PkMatch;
use super::params::Filter;
use crate::store::sources;
use crate::text::clip;
use crate::web::error::WebError;

/// What the filters need from the store before their SQL can be written.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// How the primary-key filter is matched.
    pub pk: Option<PkMatch>,
    /// Ids below `lo` or from `hi` on cannot match the time filters; the
    /// conditions on `committed_at` stay, so these only save reading.
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

/// Within the partition a time bound falls in, its search ([`id_bound`])
/// takes ids to follow commit order to well within this (clock steps and a
/// source's catching up aside); the bound widened by it is a safe id bound.
const TIME_SLACK_MINUTES: i64 = 60;

/// Which side of a time filter an id bound is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `committed_at >= t`: no entry committed at or after `t` has a
    /// smaller id.
    From,
    /// `committed_at < t`: no entry committed before `t` has this id or a
    /// larger one.
    Before,
}

/// The live partition whose range holds `t`, `[from_at, to_at)`, from the
/// ledger (`pgtrail.partitions`); none when no partition holds it.
///
/// The bounds below read `pgtrail.entry_rows`, the entries' own table, not
/// the view `pgtrail.entries`: ids and commit times are an entry row's, and
/// through the view's join to its transaction `min(id)`, `max(id)` and
/// `ORDER BY id LIMIT 1` are a join of every row (PostgreSQL 15 keeps the
/// join), not one index probe. A row the view leaves out (its transaction
/// missing) can only widen a bound, never lose an entry.
const PARTITION_OF: &str = "SELECT from_at, to_at FROM pgtrail.partitions \
     WHERE dropped_at IS NULL AND from_at <= $1 AND $1 < to_at ORDER BY from_at LIMIT 1";

/// The smallest id from which every entry of the partition `[$2, $3)` is
/// committed at or after `$1`, by binary search on the primary key (about
/// log2(entries) index probes) since commit times rise with ids, searched
/// between the partition's ids clamped to `[$4, $5)` (either may be null);
/// the upper end if none is, no row if there is nothing to search.
///
/// Every probe is bounded by the partition's own range: the planner reads
/// that one partition's primary key (the condition is true of each of its
/// rows, so no row is skipped over), where an unbounded probe merged every
/// partition's (bench/web.sh). The search runs in the server, one
/// statement: probe by probe from here it cost two dozen round trips.
const SEARCH: &str = "WITH RECURSIVE search(lo, hi) AS ( \
        SELECT greatest(min(id), $4), least(max(id) + 1, $5) FROM pgtrail.entry_rows \
        WHERE committed_at >= $2 AND committed_at < $3 \
      UNION ALL \
        SELECT CASE WHEN p.committed_at < $1 THEN p.id + 1 ELSE s.lo END, \
               CASE WHEN p.committed_at < $1 THEN s.hi ELSE s.lo + (s.hi - s.lo) / 2 END \
        FROM search s \
        LEFT JOIN LATERAL (SELECT id, committed_at FROM pgtrail.entry_rows \
                           WHERE id >= s.lo + (s.hi - s.lo) / 2 \
                             AND committed_at >= $2 AND committed_at < $3 \
                           ORDER BY id LIMIT 1) p ON true \
        WHERE s.lo < s.hi) \
    SELECT lo FROM search WHERE lo >= hi";

/// An id bound for one side of a time filter at `t`. The partitions wholly
/// on the filter's side bound it exactly, one index probe each: their
/// smallest id ([`Side::From`]) or one past their largest
/// ([`Side::Before`]), so an entry stored out of commit order there (a
/// source catching up) is kept. Within the partition that holds `t` the
/// bound is searched ([`SEARCH`]), which leans on commit times following
/// ids; the exact bound clamps the search, as it clamps its result.
async fn id_bound(client: &Client, t: DateTime<Utc>, side: Side) -> Result<i64, WebError> {
    let partition = client
        .query_opt(PARTITION_OF, &[&t])
        .await?
        .map(|p| (p.get::<_, DateTime<Utc>>(0), p.get::<_, DateTime<Utc>>(1)));
    let (from, to) = partition.unwrap_or((t, t));
    let (exact_sql, edge) = match side {
        Side::From => (
            "SELECT min(id) FROM pgtrail.entry_rows WHERE committed_at >= $1",
            to,
        ),
        Side::Before => (
            "SELECT max(id) + 1 FROM pgtrail.entry_rows WHERE committed_at < $1",
            from,
        ),
    };
    let exact: Option<i64> = client.query_one(exact_sql, &[&edge]).await?.get(0);
    let searched: Option<i64> = match partition {
        Some(_) => {
            let (below, above) = match side {
                Side::From => (None, exact),
                Side::Before => (exact, None),
            };
            client
                .query_opt(SEARCH, &[&t, &from, &to, &below, &above])
                .await?
                .and_then(|r| r.get(0))
        }
        None => None,
    };
    let found = searched.into_iter().chain(exact);
    Ok(match side {
        Side::From => match found.min() {
            Some(id) => id,
            // None committed from `t` on: one past the newest id.
            None => client
                .query_one(
                    "SELECT coalesce(max(id) + 1, 0) FROM pgtrail.entry_rows",
                    &[],
                )
                .await?
                .get(0),
        },
        // None committed before `t`: no id is below.
        Side::Before => found.max().unwrap_or(0),
    })
}

/// Refuses a `db` that names no source of the store, with the names it knows.
pub async fn check_sources(client: &Client, dbs: &[String]) -> Result<(), WebError> {
    if dbs.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = sources::all(client)
        .await?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    match dbs.iter().find(|d| !known.contains(d)) {
        None => Ok(()),
        Some(unknown) => Err(WebError::bad(format!(
            "db: the store has no source {:?}; its sources are {}",
            clip(unknown),
            known.join(", ")
        ))),
    }
}

impl Filter {
    /// Checks the sources named, and resolves the key match and the id
    /// range of the time filters.
    pub async fn resolve(&self, client: &Client, now: DateTime<Utc>) -> Result<Resolved, WebError> {
        self.resolve_with(client, now, None).await
    }

    /// [`Filter::resolve`], matching a key through `book` (the web view's
    /// [`KeyBook`]) when given.
    pub async fn resolve_with(
        &self,
        client: &Client,
        now: DateTime<Utc>,
        book: Option<&KeyBook>,
    ) -> Result<Resolved, WebError> {
        check_sources(client, &self.dbs).await?;
        let slack = Duration::minutes(TIME_SLACK_MINUTES);
        let lo = match self.since(now) {
            Some(t) => Some(id_bound(client, t - slack, Side::From).await?),
            None => None,
        };
        let hi = match &self.to {
            Some((_, t)) => Some(id_bound(client, *t + slack, Side::Before).await?),
            None => None,
        };
        Ok(Resolved {
            pk: self.pk_match(client, book).await?,
            lo,
            hi,
        })
    }
}
