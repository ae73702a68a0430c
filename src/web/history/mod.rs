//! Row history (`/history?table=S.T&pk=…[&db=NAME][&as_of=TIME]`): the row as a
//! timeline of versions, oldest first, each with who made it, when, and
//! what it changed, the audit gaps among them; and, for a time, the row as
//! of then ([`states`]) with the SQL that brings it back to that state.
//!
//! The row is found through the store's index on `row_key`, a hash of the
//! table and the key's stored text ([`crate::entry::row_key`]), so the key is
//! matched as that exact text: the `pk` parameter is either that JSON text
//! (`{"id":5}`, as the links write it; whitespace does not matter) or, for a
//! single-column key, just the value (`5`). A row whose key was changed by an
//! update has its earlier entries under the old key.
//!
//! The same table and key in two source databases are two rows: `db` names
//! the source (links from entries always do), and without it a key found
//! in more than one source is refused with their names.

pub mod states;
mod view;

use std::str::FromStr;
use std::time::Instant;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::access::Principal;
use super::diff::{self, Members};
use super::entry::{DiffView, Facts, DIFF_BUDGET};
use super::error::WebError;
use super::health::GapView;
use super::query::{
    self, key_columns, key_texts, url, KeyBook, PkMatch, Sql, RARE_ACTIONS as RARE,
};
use super::AppState;
use crate::auth::Role;
use crate::store::gaps::Gap;
use crate::store::sources::{self, ENTRY_SOURCE_SQL};
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS};
use crate::table::TableName;
use crate::text::clip;
use axum::Extension;
use view::AsOfView;

/// Entries per page of a history.
pub const HISTORY_PAGE: i64 = 200;
/// The row's entries an "as of" reads back from the time at most, to carry
/// columns an UPDATE's image lacks.
pub const CHAIN: i64 = 200;

pub struct HistoryItem {
    /// The version's number: 1 for the row's first captured entry.
    pub version: i64,
    pub f: Facts,
    pub d: DiffView,
    /// The row as of this version.
    pub as_of_url: String,
    /// Audit gaps that lie just before this version.
    pub gaps: Vec<GapView>,
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryPage {
    pub table: String,
    /// The `table` and `pk` parameters, for the "as of" form.
    pub table_param: String,
    pub pk_param: String,
    /// The `db` parameter, for the "as of" form.
    pub db_param: String,
    /// The source database, shown where the store has more than one.
    pub db: Option<String>,
    pub key: String,
    pub items: Vec<HistoryItem>,
    /// Audit gaps after the last version shown.
    pub gaps_after: Vec<GapView>,
    pub as_of: Option<AsOfView>,
    /// What the "as of" field holds.
    pub as_of_text: String,
    pub log_url: String,
    pub later_url: Option<String>,
    pub first_url: Option<String>,
}

/// The parameters of a history.
struct Params {
    table: TableName,
    pk: String,
    /// The source database; `None`: whichever one has the row.
    db: Option<String>,
    after: i64,
    /// The time asked for, and its text as given.
    as_of: Option<(DateTime<Utc>, String)>,
}

impl Params {
    fn parse(raw: Option<&str>) -> Result<Params, WebError> {
        let mut table = None;
        let mut pk = None;
        let mut db = None;
        let mut after = 0i64;
        let mut as_of = None;
        for (name, value) in query::pairs(raw)? {
            let value = value.trim().to_owned();
            match name.as_str() {
                "table" => {
                    table = Some(
                        TableName::from_str(&value)
                            .map_err(|e| WebError::bad(format!("table: {e}")))?,
                    )
                }
                "pk" if !value.is_empty() => pk = Some(value),
                "db" if !value.is_empty() && db.is_none() => db = Some(value),
                "db" if !value.is_empty() => {
                    return Err(WebError::bad("db is given more than once; give it once"))
                }
                "pk" | "as_of" | "db" if value.is_empty() => {}
                "after" => {
                    after = value
                        .parse()
                        .ok()
                        .filter(|n: &i64| *n >= 0)
                        .ok_or_else(|| {
                            WebError::bad(format!("after: {:?} is not an entry id", clip(&value)))
                        })?
                }
                "as_of" => {
                    // A date alone means the end of that day: just before the next begins.
                    let t = query::parse_time(&value, true)
                        .map_err(|e| WebError::bad(format!("as_of: {e}")))?;
                    let t = if value.len() == 10 {
                        t - chrono::Duration::microseconds(1)
                    } else {
                        t
                    };
                    as_of = Some((t, value));
                }
                _ => {
                    return Err(WebError::bad(format!(
                        "unknown parameter {:?}; a history takes table, pk, db, after and as_of",
                        clip(&name)
                    )))
                }
            }
        }
        let table = table
            .ok_or_else(|| WebError::bad("give the table: /history?table=schema.table&pk=…"))?;
        let pk = pk.ok_or_else(|| {
            WebError::bad(
                "give the row's primary key: pk=5, or the key as JSON, e.g. pk={\"id\":5}",
            )
        })?;
        if pk.starts_with('{') {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&pk).map_err(
                |e| WebError::bad(format!("pk: {:?} is not a JSON object ({e})", clip(&pk))),
            )?;
        }
        Ok(Params {
            table,
            pk,
            db,
            after,
            as_of,
        })
    }

    fn url(&self, after: Option<i64>, as_of: Option<&str>) -> String {
        let mut p = vec![
            ("table", query::table_param(&self.table)),
            ("pk", self.pk.clone()),
        ];
        p.extend(self.db.iter().map(|d| ("db", d.clone())));
        if let Some(a) = after {
            p.push(("after", a.to_string()));
        }
        if let Some(t) = as_of {
            p.push(("as_of", t.to_owned()));
        }
        url("/history", &p)
    }
}

/// The stored key texts the row's `pk` can be: the JSON as given, or a
/// value as the key of the table in each source (of `params.db`, or all).
/// Read once per request: each source's key is a probe of every partition.
async fn row_texts(
    client: &Client,
    book: &KeyBook,
    params: &Params,
) -> Result<Vec<String>, WebError> {
    let (table, pk) = (&params.table, &params.pk);
    if pk.starts_with('{') {
        return Ok(vec![query::minify_json(pk)]);
    }
    // Each source's own key: a value is the key of a row in a source
    // whose table has a one-column key.
    let dbs: Vec<String> = params.db.iter().cloned().collect();
    let keys = key_columns(client, table, &dbs, Some(book)).await?;
    let texts: Vec<String> = keys
        .iter()
        .flat_map(|cols| key_texts(cols, pk))
        .flatten()
        .collect();
    match keys.first() {
        Some(cols) if texts.is_empty() => Err(WebError::bad(format!(
            "the key of {} has the columns {}; give the whole key as JSON, e.g. pk={{\"{}\":…}}",
            query::table_param(table),
            cols.join(", "),
            cols.join("\":…,\"")
        ))),
        _ => Ok(texts),
    }
}

/// `SELECT … FROM pgtrail.entries WHERE <the row, in the viewer's scope>`,
/// the row's key being one of `texts` ([`row_texts`]).
fn row_query(params: &Params, texts: &[String], who: &Principal) -> Sql {
    let table = &params.table;
    let mut sql = Sql::new(format!(
        "SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE true"
    ));
    let filter = query::Filter {
        tables: vec![table.clone()],
        dbs: params.db.iter().cloned().collect(),
        scope: who.scope(),
        ..Default::default()
    };
    let resolved = query::Resolved {
        pk: Some(PkMatch::rows(table, texts.to_vec())),
        ..Default::default()
    };
    filter.push_where(&mut sql, &resolved, Utc::now());
    sql
}

/// `params` with its source database and the row's key texts in it: the
/// one asked for (a name the store does not know is a 400), else the one
/// source whose entries of the row the viewer may see; a row found in
/// several is a 400 naming them.
async fn one_source(
    client: &Client,
    book: &KeyBook,
    mut params: Params,
    who: &Principal,
) -> Result<(Params, Vec<String>), WebError> {
    if let Some(db) = &params.db {
        query::resolve::check_sources(client, std::slice::from_ref(db)).await?;
        let texts = row_texts(client, book, &params).await?;
        return Ok((params, texts));
    }
    let texts = row_texts(client, book, &params).await?;
    let mut sql = row_query(&params, &texts, who);
    sql.text = sql
        .text
        .replacen(ENTRY_COLUMNS, &format!("DISTINCT {ENTRY_SOURCE_SQL}"), 1);
    let ids: Vec<i16> = client
        .query(&sql.text, &sql.refs())
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.len() > 1 {
        let names: Vec<String> = sources::all(client)
            .await?
            .into_iter()
            .filter(|(id, _)| ids.contains(&id.0))
            .map(|(_, name)| name)
            .collect();
        return Err(WebError::bad(format!(
            "the source databases {} each have a row of {} with this key: give the one you mean, db={}",
            names.join(" and "),
            query::table_param(&params.table),
            names.join(" or db=")
        )));
    }
    if let [id] = ids[..] {
        params.db = sources::all(client)
            .await?
            .into_iter()
            .find(|(s, _)| s.0 == id)
            .map(|(_, name)| name);
        // The row's key in its own source, as a link naming it would read it.
        let texts = row_texts(client, book, &params).await?;
        return Ok((params, texts));
    }
    Ok((params, texts))
}

/// `GET /history?table=S.T&pk=…[&db=NAME][&after=ID][&as_of=TIME]`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let params = Params::parse(raw.as_deref())?;
    let no_entries = |params: &Params| {
        WebError::NotFound(format!(
            "No entries of {} have the primary key {}.",
            query::table_param(&params.table),
            clip(&params.pk)
        ))
    };
    // A table outside the viewer's scope looks like one without entries, and
    // before anything about it is looked up: its key's columns, named in the
    // error below, are not the viewer's to see.
    if !who.scope().allows_table(&params.table) {
        return Err(no_entries(&params));
    }
    let client = state.pool().get().await?;
    let (params, texts) = one_source(&client, state.key_book(), params, &who).await?;
    let mut sql = row_query(&params, &texts, &who);
    let a = sql.param(params.after);
    let limit = sql.param(HISTORY_PAGE + 1);
    sql.text
        .push_str(&format!(" AND id > {a} ORDER BY id LIMIT {limit}"));
    let rows = client.query(&sql.text, &sql.refs()).await?;
    let mut entries: Vec<StoredEntry> = rows.iter().map(StoredEntry::from_row).collect();
    let more = entries.len() as i64 > HISTORY_PAGE;
    entries.truncate(HISTORY_PAGE as usize);
    if entries.is_empty() && params.after == 0 {
        return Err(no_entries(&params));
    }
    // Versions before this page, to number its versions.
    let earlier: i64 = if params.after > 0 {
        let mut count = row_query(&params, &texts, &who);
        count.text = count.text.replacen(ENTRY_COLUMNS, "count(*)", 1);
        let a = count.param(params.after);
        count.text.push_str(&format!(" AND id <= {a}"));
        client.query_one(&count.text, &count.refs()).await?.get(0)
    } else {
        0
    };
    // The gaps of the row's source only: another's say nothing of this row.
    let mut gaps = state.gaps().list(&*client).await?;
    if let Some(source) = entries.first().map(|e| e.source.clone()) {
        gaps.retain(|g| g.source == source);
    }
    let as_of = match &params.as_of {
        Some((at, text)) => {
            let chain = row_query(&params, &texts, &who);
            Some(load_as_of(&client, chain, &params, &gaps, *at, text).await?)
        }
        None => None,
    };
    drop(client);
    let admin = who.role == Role::Admin;
    let key = entries
        .first()
        .map(|e| super::log::rows::key_text(e.primary_key()))
        .unwrap_or_else(|| clip(&params.pk));
    let (items, gaps_after) = timeline(&entries, &gaps, earlier, more, admin, &params);
    let page = HistoryPage {
        log_url: url(
            "/",
            &[
                ("table", query::table_param(&params.table)),
                ("pk", params.pk.clone()),
            ]
            .into_iter()
            .chain(params.db.iter().map(|d| ("db", d.clone())))
            .collect::<Vec<_>>(),
        ),
        later_url: if more {
            entries.last().map(|e| params.url(Some(e.id), None))
        } else {
            None
        },
        first_url: (params.after > 0).then(|| params.url(None, None)),
        table: query::table_param(&params.table),
        table_param: query::table_param(&params.table),
        pk_param: params.pk.clone(),
        db_param: params.db.clone().unwrap_or_default(),
        db: if state.shows_db().await {
            params.db.clone()
        } else {
            None
        },
        key,
        items,
        gaps_after,
        as_of_text: params
            .as_of
            .as_ref()
            .map(|(_, t)| t.clone())
            .unwrap_or_default(),
        as_of,
    };
    Ok(Html(page.render()?).into_response())
}

/// The versions of a page with the gaps placed among them (a gap lies just
/// before its first event's id), and the gaps after the last one when no
/// later page follows.
fn timeline(
    entries: &[StoredEntry],
    gaps: &[Gap],
    earlier: i64,
    more: bool,
    admin: bool,
    params: &Params,
) -> (Vec<HistoryItem>, Vec<GapView>) {
    let mut lower = params.after;
    let mut items = Vec::with_capacity(entries.len());
    // One budget for the whole page's inline differences, not one per entry.
    let until = Instant::now() + DIFF_BUDGET;
    for (i, e) in entries.iter().enumerate() {
        let diffs = diff::column_diffs(e);
        items.push(HistoryItem {
            version: earlier + i as i64 + 1,
            f: Facts::new(e),
            d: DiffView::within(e, &diffs, until),
            as_of_url: format!("{}#as-of", params.url(None, Some(&e.committed_at_text()))),
            // Before the row's first version, its state is unknown anyway.
            gaps: gaps
                .iter()
                .filter(|g| (i > 0 || params.after > 0) && g.anchor > lower && g.anchor <= e.id)
                .map(|g| GapView::of(g, admin))
                .collect(),
        });
        lower = e.id;
    }
    let after = if more {
        Vec::new()
    } else {
        gaps.iter()
            .filter(|g| !entries.is_empty() && g.anchor > lower)
            .map(|g| GapView::of(g, admin))
            .collect()
    };
    (items, after)
}

/// The row as of `at`: its entries up to then, the first TRUNCATE of the
/// table after the last of them, the state and the statement restoring it.
async fn load_as_of(
    client: &Client,
    mut chain: Sql,
    params: &Params,
    gaps: &[Gap],
    at: DateTime<Utc>,
    text: &str,
) -> Result<AsOfView, WebError> {
    let t = chain.param(at);
    let limit = chain.param(CHAIN);
    chain.text.push_str(&format!(
        " AND committed_at <= {t} ORDER BY id DESC LIMIT {limit}"
    ));
    let rows = client.query(&chain.text, &chain.refs()).await?;
    let mut entries: Vec<StoredEntry> = rows.iter().map(StoredEntry::from_row).collect();
    entries.reverse();
    // Both read the rare actions' index (entries_rare_action, whose predicate
    // is spelled out so the planner takes it): a few rows, not the table's
    // every later or earlier change. Both keep to the row's own source:
    // another's TRUNCATE or DDL was of another database's table.
    const SOURCE_ID: &str = "(SELECT id FROM pgtrail.sources WHERE name = $5)";
    let (truncate, ddl) = match entries.last() {
        Some(last) => {
            let (schema, table) = (&params.table.schema, &params.table.name);
            let truncate = client
                .query_opt(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE action = 'TRUNCATE'{RARE} \
                         AND schema_name = $1 AND table_name = $2 AND id > $3 AND committed_at <= $4 \
                         AND {ENTRY_SOURCE_SQL} = {SOURCE_ID} ORDER BY id LIMIT 1"
                    ),
                    &[schema, table, &last.id, &at, &last.source],
                )
                .await?
                .map(|r| StoredEntry::from_row(&r));
            let ddl = client
                .query_opt(
                    &format!(
                        "SELECT committed_at FROM pgtrail.entries WHERE action = 'DDL'{RARE} \
                         AND schema_name = $1 AND table_name = $2 AND id < $3 \
                         AND {ENTRY_SOURCE_SQL} = (SELECT id FROM pgtrail.sources WHERE name = $4) \
                         ORDER BY id DESC LIMIT 1"
                    ),
                    &[schema, table, &last.id, &last.source],
                )
                .await?
                .map(|r| r.get::<_, DateTime<Utc>>(0));
            (truncate, ddl)
        }
        None => (None, None),
    };
    let state = states::as_of(
        &states::Chain {
            entries: &entries,
            truncate: truncate.as_ref(),
            ddl,
            gaps,
        },
        at,
    );
    let key = Members::parse(entries.last().and_then(|e| e.primary_key()));
    let sql = states::restore_sql(
        &state,
        &params.table.schema,
        &params.table.name,
        &key,
        &format!("{} UTC", at.format("%Y-%m-%d %H:%M:%S%.6f")),
    );
    Ok(AsOfView::new(state, sql, at, text, entries.last()))
}
