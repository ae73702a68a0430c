//! View Difference (`/entries/{id}`): one entry's facts, its columns before
//! and after (changed first and marked, unchanged folded away, long values
//! diffed line by line and word by word), and the SQL that would revert it.
//! One of pgtrail's own events gets a page of its own ([`EventPage`],
//! `templates/event.html`).
//!
//! [`DiffView`] (`templates/diff.html`) is the column table; the history page
//! shows one per entry.

use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};

use super::access::Principal;
use super::diff::{self, Change, ColumnDiff, Inline, ValueView};
use super::error::WebError;
use super::event;
use super::log::rows::{history_url, key_text, long_time, short_time, transaction_url, Context};
use super::query::{self, table_param};
use super::AppState;
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS};
use crate::table::TableName;
use axum::Extension;

/// Parses an id from a path: a whole number, at least 0.
pub fn parse_id(text: &str, what: &str) -> Result<i64, WebError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            WebError::bad(format!(
                "{:?} is not {what}: it must be a whole number",
                crate::text::clip(text)
            ))
        })
}

/// The entry whose id a path gives (`text`), if `who` may see it; one out of
/// their scope is "not found", exactly like a missing one, so ids do not
/// tell what exists.
pub async fn load(state: &AppState, text: &str, who: &Principal) -> Result<StoredEntry, WebError> {
    let id = parse_id(text, "an entry id")?;
    let scope = who.scope();
    let client = state.pool().get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE id = $1"),
            &[&id],
        )
        .await?;
    row.map(|r| StoredEntry::from_row(&r))
        .filter(|e| scope.allows(e))
        .ok_or_else(|| WebError::NotFound(format!("There is no entry {id}.")))
}

/// One column as the diff table shows it.
pub struct ColumnView {
    pub name: String,
    /// [`Change`] as text: the row's CSS class.
    pub change: &'static str,
    pub before: Option<ValueView>,
    pub after: Option<ValueView>,
    /// An inline diff, for long text and JSON that changed (`templates/diff_inline.html`).
    pub lines: Option<Inline>,
}

/// The column table of one entry.
pub struct DiffView {
    /// Changed columns (and those whose old value is unknown), or every column of an insert or delete.
    pub shown: Vec<ColumnView>,
    /// Unchanged columns of an update, folded away.
    pub unchanged: Vec<ColumnView>,
    /// A sentence about what the table can and cannot show, or empty.
    pub note: String,
}

/// How long a page may spend on inline differences, all its entries and
/// columns together. Each is bounded on its own too (`diff::paths::Bounds`,
/// the line diff's timeout); this bounds a page of many (a row's history
/// lists up to 200 entries).
pub const DIFF_BUDGET: Duration = Duration::from_secs(1);

impl DiffView {
    pub fn new(entry: &StoredEntry, diffs: &[ColumnDiff]) -> DiffView {
        DiffView::within(entry, diffs, Instant::now() + DIFF_BUDGET)
    }

    /// The column table, its inline differences computed until `until`;
    /// columns reached later are shown without one, and the note says so.
    pub fn within(entry: &StoredEntry, diffs: &[ColumnDiff], until: Instant) -> DiffView {
        let mut shown = Vec::new();
        let mut unchanged = Vec::new();
        let mut skipped = false;
        for d in diffs {
            let lines = if Instant::now() < until {
                Inline::of(d, until)
            } else {
                skipped |= Inline::wanted(d);
                None
            };
            let view = ColumnView {
                name: d.column.clone(),
                change: d.change.as_str(),
                before: d.before.as_deref().map(ValueView::of),
                after: d.after.as_deref().map(ValueView::of),
                lines,
            };
            if d.change == Change::Unchanged {
                unchanged.push(view);
            } else {
                shown.push(view);
            }
        }
        let note = match entry.action.as_str() {
            "TRUNCATE" => "TRUNCATE removed every row of the table at once; the rows themselves are in the table's earlier entries.".into(),
            "UPDATE" if diffs.iter().any(|d| d.change == Change::Unknown) => {
                "The old values of this update were not captured (the table's REPLICA IDENTITY is not FULL), so only the new values are shown.".into()
            }
            "UPDATE" if shown.is_empty() => "This update changed no column.".into(),
            "DDL" => "A schema change: the command, the object and the statement, as the event trigger recorded them.".into(),
            _ => String::new(),
        };
        let note = if skipped {
            format!(
                "{note}{}Some long values are shown whole, without their inline difference: the page ran out of time for comparing. The entry's own page compares them.",
                if note.is_empty() { "" } else { " " }
            )
        } else {
            note
        };
        DiffView {
            shown,
            unchanged,
            note,
        }
    }
}

/// The facts of an entry, shared by the entry and history pages.
pub struct Facts {
    pub id: i64,
    pub action: String,
    pub action_class: String,
    pub table: String,
    pub key: String,
    pub time: String,
    pub time_full: String,
    pub time_long: String,
    /// `None` for pgtrail's own events, which belong to no source transaction.
    pub xid: Option<i64>,
    pub lsn: String,
    /// The entry's `details` object as (field, value text) pairs: the leaf partition, TRUNCATE options, an event's particulars.
    pub details: Vec<(String, String)>,
    pub ctx: Context,
    pub entry_url: String,
    pub history_url: Option<String>,
    pub transaction_url: Option<String>,
    pub table_url: String,
    /// The source database (`[source] name`), and the log narrowed to it.
    pub db: String,
    pub db_url: String,
}

impl Facts {
    pub fn new(e: &StoredEntry) -> Facts {
        let table = TableName::new(e.schema.clone(), e.table.clone());
        Facts {
            id: e.id,
            action: e.action.clone(),
            action_class: e.action.to_lowercase(),
            table: table_param(&table),
            key: key_text(e.primary_key()),
            time: short_time(&e.committed_at),
            time_full: e.committed_at_text(),
            time_long: long_time(&e.committed_at),
            xid: e.xid,
            lsn: e.lsn.clone().unwrap_or_default(),
            details: details_fields(e.details()),
            ctx: Context::of(e),
            entry_url: format!("/entries/{}", e.id),
            history_url: history_url(e),
            transaction_url: transaction_url(e),
            table_url: query::url("/", &[("table", table_param(&table))]),
            db: e.source.clone(),
            db_url: query::url("/", &[("db", e.source.clone())]),
        }
    }
}

#[derive(Template)]
#[template(path = "entry.html")]
pub struct EntryPage {
    pub f: Facts,
    pub d: DiffView,
    pub revert_sql: Option<String>,
    pub revert_note: String,
}

/// One of pgtrail's own events: what happened, who did it, when and from
/// where, its particulars, and the record it changed (a user's, a token's).
#[derive(Template)]
#[template(path = "event.html")]
pub struct EventPage {
    pub f: Facts,
    /// "demo signed in": [`event::headline`].
    pub headline: String,
    /// `sign_in`, `export`, …
    pub kind: String,
    /// What the actor name is: a pgtrail user, the CLI's OS user, a token.
    pub actor_kind: &'static str,
    pub particulars: Vec<event::Particular>,
    /// The record before and after, when the event changed one.
    pub record: Option<DiffView>,
    /// The log narrowed to events of the same category.
    pub same_kind_url: String,
}

impl EventPage {
    pub fn new(e: &StoredEntry) -> EventPage {
        let f = Facts::new(e);
        // The record compares as a row would: added, changed or removed.
        let as_row = match (e.before(), e.after()) {
            (Some(_), Some(_)) => Some("UPDATE"),
            (None, Some(_)) => Some("INSERT"),
            (Some(_), None) => Some("DELETE"),
            (None, None) => None,
        };
        let record = as_row.map(|action| {
            let row = StoredEntry {
                action: action.into(),
                ..e.clone()
            };
            DiffView::new(&row, &diff::column_diffs(&row))
        });
        EventPage {
            headline: event::headline(e),
            kind: event::Said::of(e).event,
            actor_kind: f.ctx.actor.as_deref().map_or("", event::actor_kind),
            particulars: event::particulars(e),
            record,
            same_kind_url: query::url(
                "/",
                &[("action", "EVENT".into()), ("table", f.table.clone())],
            ),
            f,
        }
    }
}

/// `GET /entries/{id}`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let entry = load(&state, &id, &who).await?;
    if entry.action == "EVENT" {
        return Ok(Html(EventPage::new(&entry).render()?).into_response());
    }
    let diffs = diff::column_diffs(&entry);
    let (revert_sql, revert_note) = match diff::revert_sql(&entry, &diffs) {
        Ok(sql) => (Some(sql), String::new()),
        Err(why) => (None, why),
    };
    let page = EntryPage {
        f: Facts::new(&entry),
        d: DiffView::new(&entry, &diffs),
        revert_sql,
        revert_note,
    };
    Ok(Html(page.render()?).into_response())
}

/// The fields of an entry's `details` object, strings unquoted, other values as JSON text.
fn details_fields(details: Option<&str>) -> Vec<(String, String)> {
    let Some(Ok(serde_json::Value::Object(map))) =
        details.map(serde_json::from_str::<serde_json::Value>)
    else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_out_of_time_shows_values_without_their_inline_difference() {
        let doc = |v: i32| format!(r#"{{"id":1,"doc":{{"a":{v},"b":[1,2,3]}}}}"#);
        let entry = StoredEntry {
            id: 1,
            committed_at: chrono::Utc::now(),
            xid: Some(1),
            lsn: Some("0/1".into()),
            schema: "public".into(),
            table: "t".into(),
            action: "UPDATE".into(),
            source: "shop".into(),
            json: [
                Some(r#"{"id":1}"#.into()),
                Some(doc(1)),
                Some(doc(2)),
                Some(r#"["doc"]"#.into()),
                Some("{}".into()),
                None,
            ],
        };
        let diffs = diff::column_diffs(&entry);
        let full = DiffView::new(&entry, &diffs);
        assert!(full.shown[0].lines.is_some() && full.note.is_empty());
        let late = DiffView::within(&entry, &diffs, Instant::now());
        assert!(late.shown[0].lines.is_none());
        assert!(
            late.shown[0].after.is_some(),
            "the value itself is still shown"
        );
        assert!(late.note.contains("ran out of time"), "{}", late.note);
    }
}
