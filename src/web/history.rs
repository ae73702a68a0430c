//! Row history (`/history?table=S.T&pk=…`): every entry of one row, oldest
//! first, each with its diff in place.
//!
//! The row is found through the store's index on `row_key`, a hash of the
//! table and the key's stored text ([`crate::entry::row_key`]), so the key is
//! matched as that exact text: the `pk` parameter is either that JSON text
//! (`{"id":5}`, as the links write it; whitespace does not matter) or, for a
//! single-column key, just the value (`5`). A row whose key was changed by an
//! update has its earlier entries under the old key.

use std::str::FromStr;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};

use super::access::Principal;
use super::diff;
use super::entry::{DiffView, Facts};
use super::error::WebError;
use super::query::{self, key_columns, key_texts, url, PkMatch, Sql};
use super::AppState;
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS};
use crate::table::TableName;
use crate::text::clip;
use axum::Extension;

/// Entries per page of a history.
pub const HISTORY_PAGE: i64 = 200;

pub struct HistoryItem {
    pub f: Facts,
    pub d: DiffView,
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryPage {
    pub table: String,
    pub key: String,
    pub items: Vec<HistoryItem>,
    pub log_url: String,
    pub later_url: Option<String>,
    pub first_url: Option<String>,
}

/// `GET /history?table=S.T&pk=…[&after=ID]`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let mut table = None;
    let mut pk = None;
    let mut after = 0i64;
    for (name, value) in query::pairs(raw.as_deref())? {
        let value = value.trim().to_owned();
        match name.as_str() {
            "table" => {
                table = Some(
                    TableName::from_str(&value)
                        .map_err(|e| WebError::bad(format!("table: {e}")))?,
                )
            }
            "pk" if !value.is_empty() => pk = Some(value),
            "pk" => {}
            "after" => {
                after = value
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| {
                        WebError::bad(format!("after: {:?} is not an entry id", clip(&value)))
                    })?
            }
            _ => {
                return Err(WebError::bad(format!(
                    "unknown parameter {:?}; a history takes table, pk and after",
                    clip(&name)
                )))
            }
        }
    }
    let table =
        table.ok_or_else(|| WebError::bad("give the table: /history?table=schema.table&pk=…"))?;
    let pk = pk.ok_or_else(|| {
        WebError::bad("give the row's primary key: pk=5, or the key as JSON, e.g. pk={\"id\":5}")
    })?;
    if pk.starts_with('{') {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&pk).map_err(|e| {
            WebError::bad(format!("pk: {:?} is not a JSON object ({e})", clip(&pk)))
        })?;
    }
    let no_entries = || {
        WebError::NotFound(format!(
            "No entries of {} have the primary key {}.",
            query::table_param(&table),
            clip(&pk)
        ))
    };
    // A table outside the viewer's scope looks like one without entries, and
    // before anything about it is looked up: its key's columns, named in the
    // error below, are not the viewer's to see.
    if !who.scope().allows_table(&table) {
        return Err(no_entries());
    }
    let client = state.pool().get().await?;
    let texts = if pk.starts_with('{') {
        vec![query::minify_json(&pk)]
    } else {
        match key_columns(&client, &table).await? {
            None => Vec::new(),
            Some(cols) => key_texts(&cols, &pk).ok_or_else(|| {
                WebError::bad(format!(
                    "the key of {} has the columns {}; give the whole key as JSON, e.g. pk={{\"{}\":…}}",
                    query::table_param(&table),
                    cols.join(", "),
                    cols.join("\":…,\"")
                ))
            })?,
        }
    };
    let mut sql = Sql::new(format!(
        "SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE true"
    ));
    let filter = query::Filter {
        tables: vec![table.clone()],
        scope: who.scope(),
        ..Default::default()
    };
    let resolved = query::Resolved {
        pk: Some(PkMatch::rows(&table, texts)),
        ..Default::default()
    };
    filter.push_where(&mut sql, &resolved, chrono::Utc::now());
    let a = sql.param(after);
    let limit = sql.param(HISTORY_PAGE + 1);
    sql.text
        .push_str(&format!(" AND id > {a} ORDER BY id LIMIT {limit}"));
    let rows = client.query(&sql.text, &sql.refs()).await?;
    drop(client);
    let mut entries: Vec<StoredEntry> = rows.iter().map(StoredEntry::from_row).collect();
    let more = entries.len() as i64 > HISTORY_PAGE;
    entries.truncate(HISTORY_PAGE as usize);
    if entries.is_empty() && after == 0 {
        return Err(no_entries());
    }
    let table_text = query::table_param(&table);
    let pairs = |after: Option<i64>| {
        let mut p = vec![("table", table_text.clone()), ("pk", pk.clone())];
        if let Some(a) = after {
            p.push(("after", a.to_string()));
        }
        url("/history", &p)
    };
    let key = entries
        .first()
        .map(|e| super::log::rows::key_text(e.primary_key()))
        .unwrap_or_else(|| clip(&pk));
    let page = HistoryPage {
        log_url: url("/", &[("table", table_text.clone()), ("pk", pk.clone())]),
        later_url: if more {
            entries.last().map(|e| pairs(Some(e.id)))
        } else {
            None
        },
        first_url: (after > 0).then(|| pairs(None)),
        table: table_text,
        key,
        items: entries
            .iter()
            .map(|e| {
                let diffs = diff::column_diffs(e);
                HistoryItem {
                    f: Facts::new(e),
                    d: DiffView::new(e, &diffs),
                }
            })
            .collect(),
    };
    Ok(Html(page.render()?).into_response())
}
