//! The log page (`GET /`): its template (`templates/log.html`) and handler.
//! The filter form, the sortable column headers, quick time ranges, the
//! selected tables as chips, the match count and the links to the pages
//! around this one are all plain links and forms.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};

use super::fetch::{asked, count, fetch_page, resolve, Count, Page};
use super::gaps::{lines, Covered, Line, PageIds};
use super::insight::{self, Insight};
use super::rows::{short_time, RowView};
use crate::auth::Role;
use crate::entry::Action;
use crate::web::access::Principal;
use crate::web::error::WebError;
use crate::web::event::thousands;
use crate::web::health::{self, GapView, Health, Notice};
use crate::web::query::{self, table_param, url, Cursor, Dir, LogQuery, SortKey};
use crate::web::AppState;

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

/// A source database's box in the filter form.
pub struct DbBox {
    pub name: String,
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
    /// No entry matched (the table may still show gaps).
    pub no_rows: bool,
    pub headers: Vec<Header>,
    pub actions: Vec<ActionBox>,
    pub tables: Vec<Chip>,
    pub known_tables: Vec<String>,
    /// The rows have a Database column, and the form a box per source
    /// database: where the store has more than one.
    pub show_db: bool,
    pub dbs: Vec<DbBox>,
    /// Sources filtered by that the form has no box for, kept by it.
    pub db_hidden: Vec<String>,
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
    /// The user may export (the auditor role): else there is no Export form.
    pub may_export: bool,
    /// Exports are encrypted with age (`[export] age_recipients`) …
    pub export_encrypted: bool,
    /// … and the user may still ask for a plain file (encryption not required).
    pub export_may_be_plain: bool,
    /// A quick range dropped because From was given too: its text, for the note.
    pub last_ignored: Option<String>,
    /// A free-text search stopped at its time budget having read entries up to this time.
    pub searched_until: Option<String>,
    /// `back to` (newest first) or `up to` (oldest first).
    pub searched_way: &'static str,
    /// Banners about capture: not running for anyone; the slot's WAL and
    /// the quarantine for admins.
    pub notices: Vec<Notice>,
    /// Rows and, in time order, the audit gaps among them.
    pub lines: Vec<Line>,
    /// In another order the gaps of the time range go above the table.
    pub gap_notes: Vec<GapView>,
    /// The search box, the events toggle, and where the breakdown is.
    pub insight: Insight,
}

/// The gaps this page shows: those overlapping the time filter, and in time
/// order only those within the ids the page holds (placed among its rows by
/// [`lines`]); in another order all of them, above the table.
fn page_gaps(
    health: &Health,
    q: &LogQuery,
    page: &Page,
    now: DateTime<Utc>,
    linked: bool,
) -> (Vec<GapView>, Vec<GapView>) {
    let since = q.filter.since(now);
    let until = q.filter.to.as_ref().map(|(_, t)| *t);
    let overlapping = health.gaps.iter().filter(|g| g.overlaps(since, until));
    if q.sort.key != SortKey::Time {
        return (
            Vec::new(),
            overlapping.map(|g| GapView::of(g, linked)).collect(),
        );
    }
    let id = |c: &Option<String>| {
        c.as_ref()
            .and_then(|t| Cursor::decode(t, q.sort).ok())
            .map(|c| c.id)
    };
    let prev = id(&page.prev);
    // A backward page with nothing before it is the first page again.
    let own = q
        .cursor
        .as_ref()
        .filter(|c| !(c.backward && prev.is_none()))
        .map(|c| (c.id, c.backward));
    let covered = Covered::of(PageIds {
        dir: q.sort.dir,
        own,
        next: id(&page.next),
        prev,
    });
    let placed = overlapping
        .filter(|g| covered.holds(g.anchor))
        .map(|g| GapView::of(g, linked))
        .collect();
    (placed, Vec::new())
}

/// The form may send both a quick range (`last`) and `from`: on this page
/// From wins, and the Last it drops is returned for a note saying so. (The
/// API, given both, answers 400.)
fn from_wins(pairs: &mut Vec<(String, String)>) -> Option<String> {
    let given = |name: &str, pairs: &[(String, String)]| {
        pairs
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
    };
    let last = given("last", pairs)?;
    given("from", pairs)?;
    pairs.retain(|(k, _)| k != "last");
    Some(last)
}

/// `GET /`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let (q, now, last_ignored) = asked(raw.as_deref(), &who, true, from_wins)?;
    if insight::box_submitted(raw.as_deref()) {
        return Ok(axum::response::Redirect::to(&insight::canonical(&q)).into_response());
    }
    let live_unavailable = if q.sort != Default::default() {
        "Live updates need the newest-first order."
    } else if q.cursor.is_some() {
        "Live updates run on the first page."
    } else {
        ""
    };
    let live = q.live && live_unavailable.is_empty();
    let resolved = resolve(&state, &q.filter, now).await?;
    // Live mode starts after the newest entry that existed before the page was read
    // (the entries' own table: through the view's join max(id) reads every row).
    let newest_before = if live {
        let client = state.pool().get().await?;
        client
            .query_one("SELECT coalesce(max(id), 0) FROM pgtrail.entry_rows", &[])
            .await?
            .get::<_, i64>(0)
    } else {
        0
    };
    let admin = who.role == Role::Admin;
    let (page, count, known_tables, health, sources) = tokio::join!(
        fetch_page(&state, &q, &resolved, now),
        count(&state, &q, &resolved, now),
        state.known_tables(&q.filter.scope),
        health::load(&state, admin),
        state.capture_sources(),
    );
    let show_db = sources.len() > 1;
    let insight = insight::of(&q);
    let page = page?;
    let health = health?;
    // pgtrail's events, which the gaps link to, are for admins.
    let (placed, gap_notes) = page_gaps(&health, &q, &page, now, admin);

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
        let (sorted, arrow) = match (current, q.sort.dir) {
            (false, _) => ("", ""),
            (true, Dir::Asc) => ("ascending", "▲"),
            (true, Dir::Desc) => ("descending", "▼"),
        };
        Header {
            label,
            url: q.first_page_url(|s| s.sort = query::Sort { key, dir }),
            sorted,
            arrow,
        }
    })
    .collect();
    let tables = q
        .filter
        .tables
        .iter()
        .map(|t| Chip {
            value: table_param(t),
            remove_url: q.first_page_url(|s| s.filter.tables.retain(|x| x != t)),
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
        let mut s = q.first_page();
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
            .map(|(_, t)| t.format("%Y-%m-%d %H:%M:%S").to_string())
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
    let export = state.export_config();
    let f = &q.filter;
    let rows: Vec<RowView> = page
        .entries
        .iter()
        .map(|e| RowView::new(e, &q, show_db))
        .collect();
    let boxes: &[String] = if show_db { &sources } else { &[] };
    let view = LogPage {
        no_rows: rows.is_empty(),
        lines: lines(rows, q.sort.dir, placed),
        gap_notes,
        notices: health.notices(admin),
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
        show_db,
        dbs: boxes
            .iter()
            .map(|name| DbBox {
                name: name.clone(),
                checked: f.dbs.contains(name),
            })
            .collect(),
        db_hidden: f
            .dbs
            .iter()
            .filter(|d| !boxes.contains(d))
            .cloned()
            .collect(),
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
        may_export: who.role >= Role::Auditor,
        export_encrypted: export.recipients.is_some(),
        export_may_be_plain: export.recipients.is_some() && !export.require_encryption,
        last_ignored,
        searched_until: page.searched_until.as_ref().map(short_time),
        searched_way: if q.sort.dir == Dir::Desc {
            "back to"
        } else {
            "up to"
        },
        insight,
    };
    Ok(Html(view.render()?).into_response())
}
