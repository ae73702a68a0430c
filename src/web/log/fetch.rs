//! Reading the log: one page of entries with the cursors around it
//! ([`fetch_page`]; a free-text search reads in id windows against a time
//! budget), and counting the matches ([`count`]) within a budget too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::windows::IdWindows;
use crate::store::stored::{StoredEntry, ENTRY_COLUMN_COUNT};
use crate::web::access::Principal;
use crate::web::error::WebError;
use crate::web::pool::Lane;
use crate::web::query::{self, Cursor, Dir, Filter, LogQuery, Resolved, SortKey};
use crate::web::AppState;

/// Counting stops here; beyond it the page says "more than".
pub const COUNT_CAP: i64 = 10_000;
/// How long the count may take before the page settles for "at least".
const COUNT_BUDGET: Duration = Duration::from_millis(60);
/// How much of it one count over every id may take before counting goes on
/// in windows from the newest end.
const COUNT_WHOLE_TRY: Duration = Duration::from_millis(30);
/// How long one page of a free-text search reads before it shows what it has
/// found: text in row values has no index (see README, "Web view
/// performance"), and a rare term would otherwise read the whole store.
/// `PGTRAIL_WEB_SEARCH_MS` overrides it (a faster store can afford more; the
/// tests use 0 to make every page stop after one window).
pub fn search_budget() -> Duration {
    static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| millis_from_env("PGTRAIL_WEB_SEARCH_MS", DEFAULT_SEARCH_BUDGET))
}

/// The milliseconds in environment variable `var`, else `default`.
pub(super) fn millis_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, Duration::from_millis)
}
const DEFAULT_SEARCH_BUDGET: Duration = Duration::from_millis(250);

/// The first window of ids a search or a count reads; the next ones are
/// sized by how fast it went ([`IdWindows`]).
const FIRST_WINDOW: i64 = 20_000;

/// The view the query string `raw` asks for, limited to `who`'s scope, and
/// the time it is read at. `own` first takes out the parameters the page
/// handles itself; what it returns comes back too.
pub fn asked<T>(
    raw: Option<&str>,
    who: &Principal,
    allow_live: bool,
    own: impl FnOnce(&mut Vec<(String, String)>) -> T,
) -> Result<(LogQuery, DateTime<Utc>, T), WebError> {
    let now = Utc::now();
    let mut pairs = query::pairs(raw)?;
    let taken = own(&mut pairs);
    let mut q = LogQuery::from_pairs(&pairs, allow_live, now)?;
    q.filter.scope = who.scope();
    Ok((q, now, taken))
}

/// Resolves `filter` ([`Filter::resolve`]) on a connection of the pool, a
/// key through the web view's book of keys.
pub async fn resolve(
    state: &AppState,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Resolved, WebError> {
    let client = state.pool().get().await?;
    filter
        .resolve_with(&client, now, Some(state.key_book()))
        .await
}

/// The ids that `r` leaves to read, `[lo, hi)`: its bounds narrowed to the
/// ids the store holds.
pub(super) async fn id_range<C: GenericClient>(
    client: &C,
    r: &Resolved,
) -> Result<(i64, i64), WebError> {
    let bounds = client
        .query_one(
            "SELECT coalesce(min(id), 0), coalesce(max(id), 0) + 1 FROM pgtrail.entry_rows",
            &[],
        )
        .await?;
    let lo = r.lo.unwrap_or(0).max(bounds.get(0));
    let hi = r.hi.unwrap_or(i64::MAX).min(bounds.get(1));
    Ok((lo, hi))
}

/// One page of entries, in display order, with the cursors around it.
pub struct Page {
    pub entries: Vec<StoredEntry>,
    pub next: Option<String>,
    pub prev: Option<String>,
    /// A free-text search that ran out of [`search_budget`] before filling
    /// the page: it read entries committed up to this time (back to it,
    /// newest first); `next` searches on from there.
    pub searched_until: Option<DateTime<Utc>>,
}

/// Reads one page of `q`.
pub async fn fetch_page(
    state: &AppState,
    q: &LogQuery,
    r: &Resolved,
    now: DateTime<Utc>,
) -> Result<Page, WebError> {
    if q.filter.q.is_some()
        && q.sort.key == SortKey::Time
        && !q.cursor.as_ref().is_some_and(|c| c.backward)
    {
        return search_page(state, q, r, now).await;
    }
    let client = state.pool().get().await?;
    let ps = q.page_sql(r, now);
    let rows = client.query(&ps.sql.text, &ps.sql.refs()).await?;
    drop(client);
    let mut entries: Vec<(StoredEntry, Vec<String>)> = rows
        .iter()
        .map(|r| {
            (
                StoredEntry::from_row(r),
                (ENTRY_COLUMN_COUNT..ENTRY_COLUMN_COUNT + ps.key_count)
                    .map(|i| r.get::<_, String>(i))
                    .collect(),
            )
        })
        .collect();
    let more = entries.len() as i64 > q.limit;
    entries.truncate(q.limit as usize);
    if ps.reversed {
        if !more {
            // Back at the start: show the first page as it is now.
            return Box::pin(fetch_page(state, &q.first_page(), r, now)).await;
        }
        entries.reverse();
    }
    let (has_next, has_prev) = if ps.reversed {
        (true, true)
    } else {
        (more, q.cursor.is_some())
    };
    let cursor = |(e, keys): &(StoredEntry, Vec<String>), backward| {
        Cursor {
            keys: keys.clone(),
            id: e.id,
            backward,
        }
        .encode(q.sort)
    };
    let next = if has_next {
        entries.last().map(|x| cursor(x, false))
    } else {
        None
    };
    let prev = if has_prev {
        entries.first().map(|x| cursor(x, true))
    } else {
        None
    };
    Ok(Page {
        entries: entries.into_iter().map(|(e, _)| e).collect(),
        next,
        prev,
        searched_until: None,
    })
}

/// A page of a free-text search in time order, read in id windows from the
/// cursor on (newest first, or oldest first) until the page is full, the ids
/// run out, or [`search_budget`] is spent. In the last case the page shows
/// what it found, possibly nothing, and its `next` cursor starts where the
/// reading stopped, so following it searches on: no match is ever skipped,
/// and no page takes much longer than the budget however rare the term.
async fn search_page(
    state: &AppState,
    q: &LogQuery,
    r: &Resolved,
    now: DateTime<Utc>,
) -> Result<Page, WebError> {
    let started = std::time::Instant::now();
    let client = state.pool().get_slow().await?;
    let desc = q.sort.dir == Dir::Desc;
    // The ids to read: [lo, hi).
    let (mut lo, mut hi) = id_range(&*client, r).await?;
    if let Some(c) = &q.cursor {
        if desc {
            hi = hi.min(c.id);
        } else {
            lo = lo.max(c.id.saturating_add(1));
        }
    }
    let mut ids = IdWindows::new((lo, hi), desc, FIRST_WINDOW, started, search_budget());
    let mut found: Vec<StoredEntry> = Vec::new();
    while found.len() as i64 <= q.limit {
        let Some((wlo, whi)) = ids.next() else { break };
        let mut part = q.first_page();
        // page_sql reads one more than the limit: the page plus one that says there is more.
        part.limit = q.limit - found.len() as i64;
        let rw = Resolved {
            pk: r.pk.clone(),
            lo: Some(wlo),
            hi: Some(whi),
        };
        let ps = part.page_sql(&rw, now);
        let rows = client.query(&ps.sql.text, &ps.sql.refs()).await?;
        found.extend(rows.iter().map(StoredEntry::from_row));
        if !ids.done((wlo, whi)) {
            break;
        }
    }
    let more = found.len() as i64 > q.limit;
    found.truncate(q.limit as usize);
    let at = |id: i64, backward| {
        Cursor {
            keys: Vec::new(),
            id,
            backward,
        }
        .encode(q.sort)
    };
    let mut searched_until = None;
    let next = if more {
        found.last().map(|e| at(e.id, false))
    } else if let Some((lo, hi)) = ids.left() {
        // Stopped by the budget: on from the first id not read.
        let (id, until) = if desc {
            (
                hi,
                "SELECT committed_at FROM pgtrail.entry_rows WHERE id >= $1 ORDER BY id LIMIT 1",
            )
        } else {
            (
                lo - 1,
                "SELECT committed_at FROM pgtrail.entry_rows WHERE id < $1 ORDER BY id DESC LIMIT 1",
            )
        };
        let bound = if desc { hi } else { lo };
        searched_until = client
            .query_opt(until, &[&bound])
            .await?
            .map(|row| row.get::<_, DateTime<Utc>>(0));
        Some(at(id, false))
    } else {
        None
    };
    // The page before this one ends next to its first entry, or, for an empty
    // page, next to where this one started reading.
    let prev = q.cursor.as_ref().map(|c| match found.first() {
        Some(e) => at(e.id, true),
        None => at(if desc { c.id - 1 } else { c.id + 1 }, true),
    });
    Ok(Page {
        entries: found,
        next,
        prev,
        searched_until,
    })
}

/// How many entries match.
pub enum Count {
    Exact(i64),
    /// More than [`COUNT_CAP`]: counting stopped there.
    MoreThan(i64),
    /// Counting ran out of time after finding this many.
    AtLeast(i64),
}

/// Counts matches up to [`COUNT_CAP`] within about [`COUNT_BUDGET`]: first in
/// one statement (for [`COUNT_WHOLE_TRY`]), then newest ids first, in windows
/// sized by how fast the last ones went, so a selective filter over a large
/// store says how many it found ("at least N") instead of making the page
/// wait for an exact number.
pub async fn count(state: &AppState, q: &LogQuery, r: &Resolved, now: DateTime<Utc>) -> Count {
    let started = std::time::Instant::now();
    let mut found = 0i64;
    let run = async {
        // Only if the slow lane frees a connection soon: a page can do without its count.
        let mut client = state
            .pool()
            .get_within(Lane::Slow, COUNT_BUDGET / 4)
            .await?;
        let mut tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL statement_timeout = '1s'")
            .await?;
        // The whole statement needs no narrowing to the ids the store holds
        // (a probe of every partition's primary key at each end): only the
        // windows do.
        let (lo, hi) = (r.lo.unwrap_or(i64::MIN), r.hi.unwrap_or(i64::MAX));
        if q.filter.q.is_none() && hi > lo {
            // One statement over all ids first: where an index leads to the
            // matches (a table, an actor, a row) it reads at most COUNT_CAP
            // index entries, far quicker than windows from the newest end.
            // Free text has no such index; neither have some combinations,
            // and for them the attempt is cut short and the windows go on.
            let whole = tx.savepoint("count_whole").await?;
            whole
                .batch_execute(&format!(
                    "SET LOCAL statement_timeout = {}",
                    COUNT_WHOLE_TRY.as_millis()
                ))
                .await?;
            let sql = q.count_sql(r, now, lo, hi, COUNT_CAP + 1);
            match whole.query_one(&sql.text, &sql.refs()).await {
                Ok(row) => {
                    let n: i64 = row.get(0);
                    return Ok(if n > COUNT_CAP {
                        Count::MoreThan(COUNT_CAP)
                    } else {
                        Count::Exact(n)
                    });
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                    // Also undoes the SET LOCAL: the windows get the 1 s again.
                    whole.rollback().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (bottom, upper) = id_range(&tx, r).await?;
        let mut ids = IdWindows::new((bottom, upper), true, FIRST_WINDOW, started, COUNT_BUDGET);
        while let Some((lower, upper)) = ids.next() {
            let sql = q.count_sql(r, now, lower, upper, COUNT_CAP + 1 - found);
            found += tx.query_one(&sql.text, &sql.refs()).await?.get::<_, i64>(0);
            if found > COUNT_CAP {
                return Ok(Count::MoreThan(COUNT_CAP));
            }
            if !ids.done((lower, upper)) {
                break;
            }
        }
        Ok::<Count, WebError>(match ids.left() {
            Some(_) => Count::AtLeast(found),
            None => Count::Exact(found),
        })
    };
    match run.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = ?e, "counting matches gave up");
            Count::AtLeast(found)
        }
    }
}
