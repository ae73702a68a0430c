//! The log page (`/`): filters, sortable columns, keyset pages, a match
//! count, and the live stream (`/live`, server-sent events) that adds new
//! matching entries to the top of the page while it is open.
//!
//! Also the one-line view of an entry ([`RowView`], `templates/row.html`)
//! that the transaction page reuses, and the actor context ([`Context`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::access::{self, Principal};
use super::diff::{Members, ValueView};
use super::error::WebError;
use super::query::{self, url, Cursor, Dir, LogQuery, Resolved, SortKey, COUNT_CAP};
use super::AppState;
use crate::entry::Action;
use crate::export::{StoredEntry, ENTRY_COLUMN_COUNT};
use crate::table::TableName;
use axum::Extension;

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
    *BUDGET.get_or_init(|| {
        std::env::var("PGTRAIL_WEB_SEARCH_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_SEARCH_BUDGET, Duration::from_millis)
    })
}
const DEFAULT_SEARCH_BUDGET: Duration = Duration::from_millis(250);
/// How often the live stream looks for new entries.
const LIVE_POLL: Duration = Duration::from_secs(1);
/// How often a live stream checks that whoever opened it may still see it.
const LIVE_RECHECK: Duration = Duration::from_secs(10);
/// At most this many entries per look, so a burst cannot flood a browser.
const LIVE_BATCH: i64 = 200;

/// The actor context of an entry (see `src/context.rs`); any field may be null.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub actor: Option<String>,
    pub db_user: Option<String>,
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    pub source: Option<String>,
    pub remarks: Option<String>,
    /// The effective role, where it differs from `db_user` (after `SET ROLE`).
    pub current_user: Option<String>,
    pub client_port: Option<String>,
    pub backend_pid: Option<String>,
}

impl Context {
    pub fn of(entry: &StoredEntry) -> Context {
        let m = Members::parse(entry.context());
        let get = |k: &str| {
            m.get(k).and_then(|v| match v.get() {
                "null" => None,
                t if t.starts_with('"') => serde_json::from_str::<String>(t).ok(),
                t => Some(t.to_owned()),
            })
        };
        Context {
            actor: get("actor"),
            db_user: get("db_user"),
            client_addr: get("client_addr"),
            application_name: get("application_name"),
            source: get("source"),
            remarks: get("remarks"),
            current_user: get("current_user").filter(|u| get("db_user").as_ref() != Some(u)),
            client_port: get("client_port"),
            backend_pid: get("backend_pid"),
        }
    }

    /// Who, as the log shows it: the application's actor, else the database role.
    pub fn who(&self) -> Option<&str> {
        self.actor.as_deref().or(self.db_user.as_deref())
    }
}

/// `2024-05-01 10:00:03` (UTC).
pub fn short_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `2024-05-01 10:00:03.123456` (UTC): the facts of an entry.
pub fn long_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// `id=5`, `a=1, b=x`: a primary key for people.
pub fn key_text(primary_key: Option<&str>) -> String {
    let m = Members::parse(primary_key);
    let text =
        m.0.iter()
            .map(|(k, v)| format!("{k}={}", ValueView::of(v).text))
            .collect::<Vec<_>>()
            .join(", ");
    crate::text::clip(&text)
}

/// `/history?table=…&pk=…` for the entry's row, if it has a key.
pub fn history_url(entry: &StoredEntry) -> Option<String> {
    let pk = entry.primary_key()?;
    let table = TableName::new(entry.schema.clone(), entry.table.clone());
    Some(url(
        "/history",
        &[("table", query::table_param(&table)), ("pk", pk.to_owned())],
    ))
}

/// One entry as a line of the log.
#[derive(Debug, Clone)]
pub struct RowView {
    pub id: i64,
    pub time: String,
    pub time_full: String,
    pub actor: String,
    /// The role, shown under the actor when both are known.
    pub role: String,
    pub actor_url: String,
    pub ip: String,
    pub ip_url: String,
    pub action: String,
    pub action_class: String,
    pub action_url: String,
    pub table: String,
    pub table_url: String,
    pub pk: String,
    pub history_url: Option<String>,
    pub changes: String,
    pub entry_url: String,
}

impl RowView {
    /// `base` is the current view; the actor, IP, action and table cells link
    /// to it narrowed by that value.
    pub fn new(e: &StoredEntry, base: &LogQuery) -> RowView {
        let ctx = Context::of(e);
        let table = TableName::new(e.schema.clone(), e.table.clone());
        let narrowed = |set: &dyn Fn(&mut LogQuery)| {
            let mut q = base.clone();
            q.cursor = None;
            q.live = false;
            set(&mut q);
            url("/", &q.to_pairs())
        };
        let who = ctx.who().unwrap_or("").to_owned();
        let role = match (&ctx.actor, &ctx.db_user) {
            (Some(_), Some(role)) => role.clone(),
            _ => String::new(),
        };
        let action = e.action.clone();
        RowView {
            id: e.id,
            time: short_time(&e.committed_at),
            time_full: e.committed_at_text(),
            actor_url: narrowed(&|q| q.filter.actor = Some(who.clone())),
            actor: who.clone(),
            role,
            ip_url: narrowed(&|q| q.filter.ip = ctx.client_addr.clone()),
            ip: ctx.client_addr.clone().unwrap_or_default(),
            action_url: narrowed(&|q| {
                q.filter.actions = action
                    .parse::<Action>()
                    .map(|a| vec![a])
                    .unwrap_or_default();
            }),
            action_class: e.action.to_lowercase(),
            action: e.action.clone(),
            table_url: narrowed(&|q| q.filter.tables = vec![table.clone()]),
            table: query::table_param(&table),
            pk: key_text(e.primary_key()),
            history_url: history_url(e),
            changes: changes(e),
            entry_url: format!("/entries/{}", e.id),
        }
    }
}

/// The Changes column: the changed columns of an update, or one line saying what happened.
pub fn changes(e: &StoredEntry) -> String {
    let key = key_text(e.primary_key());
    let with_key = |what: &str| {
        if key.is_empty() {
            what.to_owned()
        } else {
            format!("{what} {key}")
        }
    };
    match e.action.as_str() {
        "INSERT" => with_key("new row"),
        "DELETE" => with_key("deleted row"),
        "TRUNCATE" => truncate_text(e.details()),
        "DDL" => {
            let m = Members::parse(e.after());
            let field = |k: &str| m.get(k).map(|v| ValueView::of(v).text).unwrap_or_default();
            crate::text::clip(
                format!("{} {}", field("command_tag"), field("object_identity")).trim(),
            )
        }
        _ => match e
            .changed_columns()
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        {
            Some(cols) if cols.is_empty() => "no column changed".into(),
            Some(cols) => {
                const SHOWN: usize = 6;
                let mut text = cols
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if cols.len() > SHOWN {
                    text.push_str(&format!(" +{} more", cols.len() - SHOWN));
                }
                text
            }
            None => "updated (old values not captured)".into(),
        },
    }
}

/// A TRUNCATE's line: what was emptied and with which options, from `details`.
fn truncate_text(details: Option<&str>) -> String {
    let details: serde_json::Map<String, serde_json::Value> = details
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let flag = |k: &str| details.get(k).and_then(serde_json::Value::as_bool);
    let mut text = match details.get("partition").and_then(|p| p.as_str()) {
        Some(p) => format!("partition {p} truncated"),
        None => "table truncated".to_owned(),
    };
    if flag("via_cascade") == Some(true) {
        text.push_str(" by CASCADE");
    }
    let mut options = Vec::new();
    if flag("cascade") == Some(true) && flag("via_cascade") != Some(true) {
        options.push("CASCADE");
    }
    if flag("restart_identity") == Some(true) {
        options.push("RESTART IDENTITY");
    }
    if !options.is_empty() {
        text = format!("{text} ({})", options.join(", "));
    }
    crate::text::clip(&text)
}

/// The row fragment alone: what the live stream sends.
#[derive(Template)]
#[template(path = "row.html")]
pub struct RowFragment<'a> {
    pub r: &'a RowView,
}

/// A sortable column header.
pub struct Header {
    pub label: &'static str,
    pub url: String,
    /// `ascending`/`descending` when the log is sorted by it, else empty.
    pub sorted: &'static str,
    pub arrow: &'static str,
}

pub struct ActionBox {
    pub name: &'static str,
    pub checked: bool,
}

pub struct QuickRange {
    pub label: &'static str,
    pub url: String,
    pub active: bool,
}

/// A selected table, shown as a chip that removes it.
pub struct Chip {
    pub value: String,
    pub remove_url: String,
}

#[derive(Template)]
#[template(path = "log.html")]
pub struct LogPage {
    pub rows: Vec<RowView>,
    pub headers: Vec<Header>,
    pub actions: Vec<ActionBox>,
    pub tables: Vec<Chip>,
    pub known_tables: Vec<String>,
    pub quick: Vec<QuickRange>,
    /// Current single-valued filters, for the form fields.
    pub actor: String,
    pub role: String,
    pub ip: String,
    pub app: String,
    pub source: String,
    pub from: String,
    pub to: String,
    pub last: String,
    pub pk: String,
    pub q: String,
    pub sort: String,
    pub dir: String,
    pub limit: String,
    pub filtered: bool,
    pub count: String,
    pub refresh_url: String,
    pub next_url: Option<String>,
    pub prev_url: Option<String>,
    pub first_url: Option<String>,
    pub live: bool,
    pub live_toggle_url: String,
    /// Why live mode is off for this view, if it is.
    pub live_unavailable: &'static str,
    /// The live stream URL, when live mode is on.
    pub live_url: Option<String>,
    /// The current filters, carried by the Export form.
    pub export_fields: Vec<(&'static str, String)>,
    /// A free-text search stopped at its time budget having read entries up to this time.
    pub searched_until: Option<String>,
    /// `back to` (newest first) or `up to` (oldest first).
    pub searched_way: &'static str,
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
            let mut first = q.clone();
            first.cursor = None;
            return Box::pin(fetch_page(state, &first, r, now)).await;
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
    let budget = search_budget();
    let client = state.pool().get().await?;
    let bounds = client
        .query_one(
            "SELECT coalesce(min(id), 0), coalesce(max(id), 0) + 1 FROM pgtrail.entries",
            &[],
        )
        .await?;
    let desc = q.sort.dir == Dir::Desc;
    // The ids still to read: [lo, hi).
    let mut lo = r.lo.unwrap_or(0).max(bounds.get(0));
    let mut hi = r.hi.unwrap_or(i64::MAX).min(bounds.get(1));
    if let Some(c) = &q.cursor {
        if desc {
            hi = hi.min(c.id);
        } else {
            lo = lo.max(c.id.saturating_add(1));
        }
    }
    let mut found: Vec<StoredEntry> = Vec::new();
    let mut window = 20_000i64;
    let mut read = 0i64;
    while lo < hi && found.len() as i64 <= q.limit {
        let (wlo, whi) = if desc {
            ((hi - window).max(lo), hi)
        } else {
            (lo, lo.saturating_add(window).min(hi))
        };
        let mut part = q.clone();
        part.cursor = None;
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
        if desc {
            hi = wlo;
        } else {
            lo = whi;
        }
        read += whi - wlo;
        let spent = started.elapsed();
        if spent >= budget {
            break;
        }
        // Ids per microsecond so far, times the time left; at most double.
        let left = budget.saturating_sub(spent).as_micros() as i64;
        let rate = read as f64 / spent.as_micros().max(1) as f64;
        window = ((rate * left as f64) as i64).clamp(1_000, window.saturating_mul(2));
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
    } else if lo < hi {
        // Stopped by the budget: on from the first id not read.
        let (id, until) = if desc {
            (
                hi,
                "SELECT committed_at FROM pgtrail.entries WHERE id >= $1 ORDER BY id LIMIT 1",
            )
        } else {
            (
                lo - 1,
                "SELECT committed_at FROM pgtrail.entries WHERE id < $1 ORDER BY id DESC LIMIT 1",
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
        let mut client = state.pool().get().await?;
        let bounds = client
            .query_one(
                "SELECT coalesce(min(id), 0), coalesce(max(id), 0) + 1 FROM pgtrail.entries",
                &[],
            )
            .await?;
        let bottom = r.lo.unwrap_or(0).max(bounds.get(0));
        let mut upper = r.hi.unwrap_or(i64::MAX).min(bounds.get(1));
        let mut window = 20_000i64;
        let mut scanned = 0i64;
        let mut tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL statement_timeout = '1s'")
            .await?;
        if q.filter.q.is_none() && upper > bottom {
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
            let sql = q.count_sql(r, now, bottom, upper, COUNT_CAP + 1);
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
        while upper > bottom {
            let lower = bottom.max(upper - window);
            let sql = q.count_sql(r, now, lower, upper, COUNT_CAP + 1 - found);
            found += tx.query_one(&sql.text, &sql.refs()).await?.get::<_, i64>(0);
            if found > COUNT_CAP {
                return Ok(Count::MoreThan(COUNT_CAP));
            }
            scanned += upper - lower;
            upper = lower;
            let spent = started.elapsed();
            if upper > bottom && spent >= COUNT_BUDGET {
                return Ok(Count::AtLeast(found));
            }
            // Ids per microsecond so far, times the time left; at most double.
            let left = COUNT_BUDGET.saturating_sub(spent).as_micros() as i64;
            let rate = scanned as f64 / spent.as_micros().max(1) as f64;
            window = ((rate * left as f64) as i64).clamp(1_000, window.saturating_mul(2));
        }
        Ok::<Count, WebError>(Count::Exact(found))
    };
    match run.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = ?e, "counting matches gave up");
            Count::AtLeast(found)
        }
    }
}

fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `GET /`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let mut q = LogQuery::parse(raw.as_deref(), true)?;
    q.filter.scope = who.scope();
    let now = Utc::now();
    let live_unavailable = if q.sort != Default::default() {
        "Live updates need the newest-first order."
    } else if q.cursor.is_some() {
        "Live updates run on the first page."
    } else {
        ""
    };
    let live = q.live && live_unavailable.is_empty();
    let resolved = {
        let client = state.pool().get().await?;
        q.filter.resolve(&client, now).await?
    };
    // Live mode starts after the newest entry that existed before the page was read.
    let newest_before = if live {
        let client = state.pool().get().await?;
        client
            .query_one("SELECT coalesce(max(id), 0) FROM pgtrail.entries", &[])
            .await?
            .get::<_, i64>(0)
    } else {
        0
    };
    let (page, count, known_tables) = tokio::join!(
        fetch_page(&state, &q, &resolved, now),
        count(&state, &q, &resolved, now),
        state.known_tables(&q.filter.scope)
    );
    let page = page?;

    let base = q.to_pairs();
    let with = |extra: &[(&'static str, String)]| {
        let mut p = base.clone();
        p.extend(extra.iter().cloned());
        p
    };
    let view_url = |p: &[(&'static str, String)]| url("/", p);
    let headers = [
        ("Time", SortKey::Time),
        ("Actor", SortKey::Actor),
        ("IP", SortKey::Ip),
        ("Action", SortKey::Action),
        ("Table", SortKey::Table),
    ]
    .into_iter()
    .map(|(label, key)| {
        let current = q.sort.key == key;
        let dir = if current {
            q.sort.dir.flip()
        } else {
            key.default_dir()
        };
        let mut s = q.clone();
        s.sort = query::Sort { key, dir };
        s.cursor = None;
        let (sorted, arrow) = match (current, q.sort.dir) {
            (false, _) => ("", ""),
            (true, Dir::Asc) => ("ascending", "▲"),
            (true, Dir::Desc) => ("descending", "▼"),
        };
        Header {
            label,
            url: view_url(&s.to_pairs()),
            sorted,
            arrow,
        }
    })
    .collect();
    let tables = q
        .filter
        .tables
        .iter()
        .map(|t| {
            let mut s = q.clone();
            s.cursor = None;
            s.filter.tables.retain(|x| x != t);
            Chip {
                value: query::table_param(t),
                remove_url: view_url(&s.to_pairs()),
            }
        })
        .collect();
    let current_last = q.filter.last.as_ref().map(|l| l.0.as_str());
    let quick = [
        ("Last hour", "1h"),
        ("24 hours", "24h"),
        ("7 days", "7d"),
        ("Any time", ""),
    ]
    .into_iter()
    .map(|(label, last)| {
        let mut s = q.clone();
        s.cursor = None;
        s.filter.from = None;
        s.filter.to = None;
        s.filter.last = (!last.is_empty()).then(|| (last.to_owned(), chrono::Duration::zero()));
        let active = if last.is_empty() {
            q.filter.from.is_none() && q.filter.to.is_none() && current_last.is_none()
        } else {
            current_last == Some(last)
        };
        let mut p = s.to_pairs();
        if s.live {
            p.push(("live", "1".into()));
        }
        QuickRange {
            label,
            url: view_url(&p),
            active,
        }
    })
    .collect();
    let mut live_pairs = base.clone();
    if !q.live {
        live_pairs.push(("live", "1".into()));
    }
    let live_url = live.then(|| {
        let after = page
            .entries
            .first()
            .map_or(newest_before, |e| e.id.max(newest_before));
        url("/live", &with(&[("after", after.to_string())]))
    });
    let count = match count {
        Count::Exact(1) => "1 entry".to_owned(),
        Count::Exact(n) => format!("{} entries", thousands(n)),
        Count::MoreThan(n) => format!("more than {} entries", thousands(n)),
        Count::AtLeast(0) => "entries (counting them took too long)".to_owned(),
        Count::AtLeast(n) => format!("at least {} entries (counting stopped)", thousands(n)),
    };
    let fmt_input = |t: &Option<(String, DateTime<Utc>)>| {
        t.as_ref()
            .map(|(_, t)| t.format("%Y-%m-%dT%H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let mut refresh = base.clone();
    if q.live {
        refresh.push(("live", "1".into()));
    }
    let page_url = |cursor: &String| {
        let mut p = with(&[("cursor", cursor.clone())]);
        if q.live {
            p.push(("live", "1".into()));
        }
        view_url(&p)
    };
    let f = &q.filter;
    let view = LogPage {
        rows: page.entries.iter().map(|e| RowView::new(e, &q)).collect(),
        headers,
        actions: Action::ALL
            .iter()
            .map(|a| ActionBox {
                name: a.as_str(),
                checked: f.actions.contains(a),
            })
            .collect(),
        tables,
        known_tables,
        quick,
        actor: f.actor.clone().unwrap_or_default(),
        role: f.role.clone().unwrap_or_default(),
        ip: f.ip.clone().unwrap_or_default(),
        app: f.app.clone().unwrap_or_default(),
        source: f.source.clone().unwrap_or_default(),
        from: fmt_input(&f.from),
        to: fmt_input(&f.to),
        last: f.last.as_ref().map(|l| l.0.clone()).unwrap_or_default(),
        pk: f.pk.clone().unwrap_or_default(),
        q: f.q.clone().unwrap_or_default(),
        sort: if q.sort == Default::default() {
            String::new()
        } else {
            q.sort.key.as_str().to_owned()
        },
        dir: if q.sort == Default::default() {
            String::new()
        } else {
            q.sort.dir.as_str().to_owned()
        },
        limit: if q.limit == query::DEFAULT_LIMIT {
            String::new()
        } else {
            q.limit.to_string()
        },
        filtered: !f.is_empty(),
        count,
        refresh_url: view_url(&refresh),
        next_url: page.next.as_ref().map(page_url),
        prev_url: page.prev.as_ref().map(page_url),
        first_url: q.cursor.is_some().then(|| view_url(&refresh)),
        live,
        live_toggle_url: view_url(&live_pairs),
        live_unavailable: if q.live { live_unavailable } else { "" },
        live_url,
        export_fields: q.filter.to_pairs(),
        searched_until: page.searched_until.as_ref().map(short_time),
        searched_way: if q.sort.dir == Dir::Desc {
            "back to"
        } else {
            "up to"
        },
    };
    Ok(Html(view.render()?).into_response())
}

/// State of one live stream.
struct Live {
    state: AppState,
    who: Principal,
    checked: tokio::time::Instant,
    q: LogQuery,
    resolved: Resolved,
    after: i64,
    pending: VecDeque<Event>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Live {
    async fn poll(&mut self) -> Result<(), WebError> {
        let client = self.state.pool().get().await?;
        let mut sql = query::Sql::new(format!(
            "SELECT {} FROM pgtrail.entries WHERE true",
            crate::store::stored::ENTRY_COLUMNS
        ));
        self.q
            .filter
            .push_where(&mut sql, &self.resolved, Utc::now());
        let after = sql.param(self.after);
        let limit = sql.param(LIVE_BATCH);
        sql.text
            .push_str(&format!(" AND id > {after} ORDER BY id LIMIT {limit}"));
        let rows = client.query(&sql.text, &sql.refs()).await?;
        drop(client);
        for r in &rows {
            let e = StoredEntry::from_row(r);
            let row = RowView::new(&e, &self.q);
            let html = RowFragment { r: &row }.render()?;
            let data = serde_json::json!({ "id": e.id, "html": html }).to_string();
            self.pending.push_back(
                Event::default()
                    .event("entry")
                    .id(e.id.to_string())
                    .data(data),
            );
            self.after = e.id;
        }
        Ok(())
    }
}

/// `GET /live?<filters>&after=<id>`: new matching entries as server-sent
/// events (`entry`, data `{"id":…,"html":"<tr>…</tr>"}`), oldest first. A
/// reconnecting browser's `Last-Event-ID` takes over from `after`.
pub async fn live(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let mut pairs = query::pairs(raw.as_deref())?;
    let mut after: Option<i64> = None;
    let mut rest = Vec::new();
    for (k, v) in pairs.drain(..) {
        if k == "after" {
            after = Some(
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| {
                        WebError::bad(format!(
                            "after: {:?} is not an entry id",
                            crate::text::clip(&v)
                        ))
                    })?,
            );
        } else {
            rest.push((k, v));
        }
    }
    let mut q = LogQuery::from_pairs(&rest, true, Utc::now())?;
    q.filter.scope = who.scope();
    if q.cursor.is_some() || q.sort != Default::default() {
        return Err(WebError::bad("the live stream follows the newest-first order from the first page; drop sort, dir and cursor"));
    }
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = match (last_event, after) {
        (Some(id), _) => id,
        (None, Some(a)) => a,
        (None, None) => {
            let client = state.pool().get().await?;
            client
                .query_one("SELECT coalesce(max(id), 0) FROM pgtrail.entries", &[])
                .await?
                .get(0)
        }
    };
    let resolved = {
        let client = state.pool().get().await?;
        q.filter.resolve(&client, Utc::now()).await?
    };
    let stopping = state.stopping();
    let live = Live {
        state,
        who,
        checked: tokio::time::Instant::now(),
        q,
        resolved,
        after,
        pending: VecDeque::new(),
        stopping,
    };
    let stream = futures_util::stream::unfold(live, |mut l| async move {
        loop {
            if let Some(ev) = l.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), l));
            }
            if *l.stopping.borrow() {
                return None;
            }
            tokio::select! {
                _ = l.stopping.changed() => return None,
                _ = tokio::time::sleep(LIVE_POLL) => {}
            }
            if l.checked.elapsed() >= LIVE_RECHECK {
                // Fail closed: on doubt the stream ends, and the browser's
                // reconnect goes through sign-in like any request.
                match access::still_allowed(&l.state, &l.who).await {
                    Ok(true) => l.checked = tokio::time::Instant::now(),
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::debug!(error = ?e, "live stream could not recheck its principal; ending it");
                        return None;
                    }
                }
            }
            if let Err(e) = l.poll().await {
                tracing::debug!(error = ?e, "live stream poll failed; retrying");
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::truncate_text;

    #[test]
    fn truncate_lines_say_what_was_emptied_and_how() {
        for (details, text) in [
            (None, "table truncated"),
            (
                Some(r#"{"cascade":false,"restart_identity":false}"#),
                "table truncated",
            ),
            (
                Some(r#"{"cascade":null,"restart_identity":null}"#),
                "table truncated",
            ),
            (
                Some(r#"{"cascade":true,"restart_identity":true}"#),
                "table truncated (CASCADE, RESTART IDENTITY)",
            ),
            (
                Some(r#"{"cascade":true,"restart_identity":false,"via_cascade":true}"#),
                "table truncated by CASCADE",
            ),
            (
                Some(r#"{"partition":"public.o_1","restart_identity":true,"cascade":false}"#),
                "partition public.o_1 truncated (RESTART IDENTITY)",
            ),
        ] {
            assert_eq!(truncate_text(details), text, "{details:?}");
        }
    }
}
