//! Readings in id order limited to the partitions that can hold their ids
//! ([`crate::web::query::spans`]): a page in time order read from the
//! partition holding the newest (or, oldest first, the oldest) ids on, until
//! no partition left can hold an id that belongs on the page ([`page`]), and
//! the commit time at an id ([`time_at`]). Without whole spans (a partition
//! the ledger does not know) each reads every partition, as one statement
//! over the parent does.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

use crate::web::error::WebError;
use crate::web::query::{Dir, LogQuery, Resolved, Spans, Sql};

/// The rows of page `q` in time order (its entry columns, `limit + 1` of
/// them, in the order read: reversed for a backward cursor), the same as
/// [`LogQuery::page_sql`] gives in one statement over every partition.
///
/// The partitions that can hold the page's ids are read in the order of
/// their newest id (oldest first: of their oldest), one, then two, then
/// four at a time, so a sparse match costs few statements; the reading stops
/// once the page is full and the next partition's ids all come after its
/// last row. A partition written late (a source's backlog) is read in its
/// turn, by its ids, not its time.
pub async fn page<C: GenericClient>(
    client: &C,
    spans: &Spans,
    q: &LogQuery,
    r: &Resolved,
    now: DateTime<Utc>,
) -> Result<Vec<Row>, WebError> {
    let backward = q.cursor.as_ref().is_some_and(|c| c.backward);
    let desc = (q.sort.dir == Dir::Desc) != backward;
    let (mut lo, mut hi) = (r.lo.unwrap_or(i64::MIN), r.hi.unwrap_or(i64::MAX));
    if let Some(c) = &q.cursor {
        if desc {
            hi = hi.min(c.id);
        } else {
            lo = lo.max(c.id.saturating_add(1));
        }
    }
    let Some(mut parts) = spans.holding(lo, hi) else {
        let ps = q.page_sql(r, now);
        return Ok(client.query(&ps.sql.text, &ps.sql.refs()).await?);
    };
    // The time filters leave out whole partitions too.
    let since = q.filter.since(now);
    let until = q.filter.to.as_ref().map(|(_, t)| *t);
    parts.retain(|p| since.is_none_or(|s| p.to > s) && until.is_none_or(|u| p.from < u));
    if desc {
        parts.sort_by_key(|p| Reverse(p.hi));
    } else {
        parts.sort_by_key(|p| p.lo);
    }
    let want = usize::try_from(q.limit + 1).unwrap_or(usize::MAX);
    let mut rows: Vec<(i64, Row)> = Vec::new();
    let (mut i, mut batch) = (0, 1);
    while i < parts.len() {
        if let Some((edge, _)) = rows.get(want.saturating_sub(1)) {
            let next = &parts[i];
            if (desc && next.hi < *edge) || (!desc && next.lo > *edge) {
                break;
            }
        }
        let end = (i + batch).min(parts.len());
        let ps = q.page_sql_within(r, now, Some(&parts[i..end]));
        for row in client.query(&ps.sql.text, &ps.sql.refs()).await? {
            rows.push((row.try_get(0)?, row));
        }
        if desc {
            rows.sort_by_key(|(id, _)| Reverse(*id));
        } else {
            rows.sort_by_key(|(id, _)| *id);
        }
        rows.truncate(want);
        i = end;
        batch *= 2;
    }
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

/// The commit time of the first entry from id `id` on (`up`), or of the
/// last entry before it; none if there is none.
///
/// Of the partitions on that side, one whose ids all lie beyond `id` has
/// its first one known: only the partitions with ids between `id` and the
/// nearest such are read.
pub async fn time_at<C: GenericClient>(
    client: &C,
    spans: &Spans,
    id: i64,
    up: bool,
) -> Result<Option<DateTime<Utc>>, WebError> {
    let (mut sql, within) = if up {
        let parts = spans.holding(id, i64::MAX);
        let nearest = parts
            .iter()
            .flatten()
            .filter(|p| p.lo >= id)
            .map(|p| p.lo)
            .min()
            .unwrap_or(i64::MAX - 1);
        let mut sql = Sql::new("SELECT committed_at FROM pgtrail.entries WHERE true");
        let (a, b) = (sql.param(id), sql.param(nearest));
        sql.text.push_str(&format!(" AND id >= {a} AND id <= {b}"));
        (sql, spans.holding(id, nearest.saturating_add(1)))
    } else {
        let parts = spans.holding(i64::MIN, id);
        let nearest = parts
            .iter()
            .flatten()
            .filter(|p| p.hi < id)
            .map(|p| p.hi)
            .max()
            .unwrap_or(i64::MIN);
        let mut sql = Sql::new("SELECT committed_at FROM pgtrail.entries WHERE true");
        let (a, b) = (sql.param(nearest), sql.param(id));
        sql.text.push_str(&format!(" AND id >= {a} AND id < {b}"));
        (sql, spans.holding(nearest, id))
    };
    if let Some(parts) = within.as_deref() {
        crate::web::query::spans::push_within(&mut sql, parts);
    }
    sql.text.push_str(if up {
        " ORDER BY id LIMIT 1"
    } else {
        " ORDER BY id DESC LIMIT 1"
    });
    let row = client.query_opt(&sql.text, &sql.refs()).await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}
