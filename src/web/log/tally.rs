//! Counting a view's matches by action, table, actor, source and time slice,
//! all in one reading ([`tally`]): what the log page's facets and timeline
//! show. Each window of ids is one statement with `GROUPING SETS`, so the
//! five counts cost one pass over the matches.
//!
//! The reading goes newest first in windows of ids, sized by how fast the
//! last ones went (as the match count does, [`super::fetch::count`]), against
//! a time budget ([`facets_budget`]) and on a connection of the slow lane:
//! a view with more matches than the budget gets through is counted back to
//! some time, and says so ([`Tally::stopped_at`]), so the page never waits
//! for more than the budget however many entries match. The counts are then
//! those of the newest matches, lower bounds of the whole view's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::fetch::{id_range, millis_from_env};
use super::slices::Slices;
use super::windows::IdWindows;
use crate::web::error::WebError;
use crate::web::pool::Lane;
use crate::web::query::{LogQuery, Resolved, Sql, ENTRIES_PROBED};
use crate::web::AppState;

/// How long the facets and the timeline may count. `PGTRAIL_WEB_FACETS_MS`
/// overrides it (the tests use 0 to stop after one window).
pub fn facets_budget() -> Duration {
    static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| millis_from_env("PGTRAIL_WEB_FACETS_MS", DEFAULT_BUDGET))
}
const DEFAULT_BUDGET: Duration = Duration::from_millis(100);
/// The first window of ids: small, so that even on a loaded store one window
/// ends within the budget (20,000, the count's, did not at load average 11:
/// bench/web.sh); the next ones are sized by how fast it went.
const FIRST_WINDOW: i64 = 2_000;
/// How long the facets wait for a slow-lane connection before the page goes without them.
const CONNECTION_WAIT: Duration = Duration::from_millis(50);

/// The counts of the matches read.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub actions: HashMap<String, i64>,
    /// By `(schema, table)`.
    pub tables: HashMap<(String, String), i64>,
    /// By actor (the application's, else the database role; empty: neither).
    pub actors: HashMap<String, i64>,
    /// By the context's source (`None`: none recorded).
    pub sources: HashMap<Option<String>, i64>,
    /// By time slice, as [`Tally::slices`] cuts the range.
    pub bars: Vec<i64>,
    pub slices: Option<Slices>,
    /// Matches counted.
    pub total: i64,
    /// `None` when every match was counted; else the budget ran out, and
    /// only entries committed from about this time on were read.
    pub stopped_at: Option<DateTime<Utc>>,
}

/// Why there are no counts.
#[derive(Debug)]
pub enum NoTally {
    /// No slow-lane connection was free in time.
    Busy,
    /// The store failed (logged).
    Failed,
}

/// The statement that counts window `[lower, upper)` of the matches by each
/// facet at once; its rows are `(grouping bits, value columns…, count)`.
fn window_sql(
    q: &LogQuery,
    r: &Resolved,
    now: DateTime<Utc>,
    s: &Slices,
    lower: i64,
    upper: i64,
) -> Sql {
    let mut sql = Sql::new("");
    let (o, w) = (sql.param(s.origin as f64), sql.param(s.width as f64));
    sql.text = format!(
        "SELECT grouping(action)::int, grouping(schema_name)::int, grouping(who)::int, grouping(src)::int, \
         action, schema_name, table_name, who, src, slice, count(*) \
         FROM (SELECT action, schema_name, table_name, coalesce(actor, '') AS who, \
               context->>'source' AS src, \
               floor((extract(epoch FROM committed_at)::float8 - {o}) / {w})::bigint AS slice \
               FROM {ENTRIES_PROBED} WHERE true"
    );
    q.filter.push_where(&mut sql, r, now);
    let (l, u) = (sql.param(lower), sql.param(upper));
    sql.text.push_str(&format!(
        " AND id >= {l} AND id < {u}) e \
         GROUP BY GROUPING SETS ((action), (schema_name, table_name), (who), (src), (slice))"
    ));
    sql
}

impl Tally {
    fn add_rows(&mut self, rows: &[tokio_postgres::Row], slices: &Slices) {
        for row in rows {
            let n: i64 = row.get(10);
            let grouped = |i: usize| row.get::<_, i32>(i) == 0;
            if grouped(0) {
                *self.actions.entry(row.get(4)).or_default() += n;
                self.total += n;
            } else if grouped(1) {
                *self.tables.entry((row.get(5), row.get(6))).or_default() += n;
            } else if grouped(2) {
                *self.actors.entry(row.get(7)).or_default() += n;
            } else if grouped(3) {
                *self.sources.entry(row.get(8)).or_default() += n;
            } else if let Some(slice) = row.get::<_, Option<i64>>(9) {
                let i = slices.index(slices.origin + slice * slices.width);
                self.bars[i] += n;
            }
        }
    }
}

/// The time range of the timeline: the view's own, or from the oldest entry
/// it could match (the first of its ids) to now.
async fn range(
    client: &Client,
    q: &LogQuery,
    now: DateTime<Utc>,
    lower: i64,
) -> Result<Slices, WebError> {
    let since = match q.filter.since(now) {
        Some(t) => t,
        None => client
            .query_opt(
                "SELECT committed_at FROM pgtrail.entry_rows WHERE id >= $1 ORDER BY id LIMIT 1",
                &[&lower],
            )
            .await?
            .map_or(now, |row| row.get(0)),
    };
    let until = q.filter.to.as_ref().map_or(now, |(_, t)| *t);
    Ok(Slices::over(since.min(until), until))
}

/// Counts the matches of `q` by facet and time slice, within the budget.
pub async fn tally(
    state: &AppState,
    q: &LogQuery,
    r: &Resolved,
    now: DateTime<Utc>,
) -> Result<Tally, NoTally> {
    let started = Instant::now();
    let budget = facets_budget();
    let mut client = match state.pool().get_within(Lane::Slow, CONNECTION_WAIT).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = ?e, "no connection for the facets");
            return Err(NoTally::Busy);
        }
    };
    let mut tally = Tally::default();
    let run = async {
        let (bottom, upper) = id_range(&*client, r).await?;
        let slices = range(&client, q, now, bottom).await?;
        tally.bars = vec![0; slices.count];
        tally.slices = Some(slices.clone());
        let tx = client.transaction().await?;
        // Memory enough to hash all five groupings at once rather than sort
        // for some (about a fifth faster on 200,000 entries).
        tx.batch_execute("SET LOCAL work_mem = '32MB'").await?;
        let mut ids = IdWindows::new((bottom, upper), true, FIRST_WINDOW, started, budget);
        while let Some((lower, upper)) = ids.next() {
            // No window may run past what is left of the budget: one cut off
            // is lost, not wrong. (A timeout set once for the whole reading
            // let each window have all that was left at the start.)
            let left = ids.time_left().as_millis().max(10);
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {left}"))
                .await?;
            let sql = window_sql(q, r, now, &slices, lower, upper);
            let rows = match tx.query(&sql.text, &sql.refs()).await {
                Ok(rows) => rows,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                    break
                }
                Err(e) => return Err(WebError::from(e)),
            };
            tally.add_rows(&rows, &slices);
            if !ids.done((lower, upper)) {
                break;
            }
        }
        drop(tx);
        // The first id not read, if the budget left some.
        Ok::<Option<i64>, WebError>(ids.left().map(|(_, upper)| upper))
    };
    let stopped = match run.await {
        Ok(stopped) => stopped,
        Err(e) => {
            tracing::warn!(error = ?e, "counting the facets failed");
            return Err(NoTally::Failed);
        }
    };
    if let Some(stopped_id) = stopped {
        // Where the reading stopped, as a time people can read.
        let at = client
            .query_opt(
                "SELECT committed_at FROM pgtrail.entry_rows WHERE id >= $1 ORDER BY id LIMIT 1",
                &[&stopped_id],
            )
            .await;
        tally.stopped_at = Some(match at {
            Ok(Some(row)) => row.get(0),
            _ => now,
        });
    }
    Ok(tally)
}
