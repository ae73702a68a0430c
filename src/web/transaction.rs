//! A transaction (`/transactions/{xid}`): every entry committed together, in
//! commit order, through the store's index on `xid`.
//!
//! Transaction ids wrap around after about four billion transactions, and
//! each source database has its own, so one xid can name several
//! transactions in a store; the page groups by source and commit LSN, which
//! are unique together, and says so when there is more than one. `db=NAME`
//! (what links from an entry carry) keeps to one source database.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};

use super::access::Principal;
use super::entry::parse_id;
use super::error::WebError;
use super::log::rows::{long_time, Context, RowView};
use super::query::resolve::check_sources;
use super::query::{pairs, url, Filter, LogQuery, Resolved, Sql};
use super::AppState;
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS};
use crate::text::clip;
use axum::Extension;

/// Entries per page of a transaction.
pub const TRANSACTION_PAGE: i64 = 500;

/// One commit (normally the only one) with this xid.
pub struct Commit {
    /// The source database, and the log narrowed to it.
    pub db: String,
    pub db_url: String,
    pub lsn: String,
    pub time_long: String,
    pub time_full: String,
    pub who: String,
    pub ip: String,
    pub application: String,
    pub rows: Vec<RowView>,
}

#[derive(Template)]
#[template(path = "transaction.html")]
pub struct TransactionPage {
    pub xid: i64,
    pub total: i64,
    pub commits: Vec<Commit>,
    pub later_url: Option<String>,
    pub first_url: Option<String>,
    /// Commits name their source database (the store has more than one).
    pub show_db: bool,
}

/// `GET /transactions/{xid}[?after=ID][&db=NAME]`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(xid): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let xid = parse_id(&xid, "a transaction id")?;
    let mut after = 0i64;
    let mut db = None;
    for (name, value) in pairs(raw.as_deref())? {
        match name.as_str() {
            "after" => {
                after = parse_id(&value, "an entry id")
                    .map_err(|e| WebError::bad(format!("after: {}", e.message())))?
            }
            "db" if value.trim().is_empty() => {}
            "db" if db.is_none() => db = Some(value.trim().to_owned()),
            "db" => return Err(WebError::bad("db is given more than once; give it once")),
            _ => {
                return Err(WebError::bad(format!(
                    "unknown parameter {:?}; a transaction page takes only after and db",
                    clip(&name)
                )))
            }
        }
    }
    let client = state.pool().get().await?;
    let dbs: Vec<String> = db.iter().cloned().collect();
    check_sources(&client, &dbs).await?;
    // Only the transaction's entries the user may see, in the source asked
    // for, also in the total.
    let filter = Filter {
        dbs,
        scope: who.scope(),
        ..Filter::default()
    };
    let of_xid = |select: &str| {
        let mut sql = Sql::new(format!("SELECT {select} FROM pgtrail.entries WHERE xid = "));
        let p = sql.param(xid);
        sql.text.push_str(&p);
        filter.push_where(&mut sql, &Resolved::default(), chrono::Utc::now());
        sql
    };
    let count = of_xid("count(*)");
    let total: i64 = client.query_one(&count.text, &count.refs()).await?.get(0);
    let mut sql = of_xid(ENTRY_COLUMNS);
    let (a, l) = (sql.param(after), sql.param(TRANSACTION_PAGE + 1));
    sql.text
        .push_str(&format!(" AND id > {a} ORDER BY id LIMIT {l}"));
    let rows = client.query(&sql.text, &sql.refs()).await?;
    drop(client);
    if total == 0 {
        return Err(WebError::NotFound(format!(
            "No entries belong to transaction {xid}."
        )));
    }
    let mut entries: Vec<StoredEntry> = rows.iter().map(StoredEntry::from_row).collect();
    let more = entries.len() as i64 > TRANSACTION_PAGE;
    entries.truncate(TRANSACTION_PAGE as usize);
    let base = LogQuery {
        limit: super::query::DEFAULT_LIMIT,
        ..LogQuery::default()
    };
    let mut commits: Vec<Commit> = Vec::new();
    let show_db = state.shows_db().await;
    for e in &entries {
        if commits
            .last()
            .is_none_or(|c| Some(&c.lsn) != e.lsn.as_ref() || c.db != e.source)
        {
            let ctx = Context::of(e);
            commits.push(Commit {
                db: e.source.clone(),
                db_url: url("/", &[("db", e.source.clone())]),
                lsn: e.lsn.clone().unwrap_or_default(),
                time_long: long_time(&e.committed_at),
                time_full: e.committed_at_text(),
                who: ctx.who().unwrap_or("").to_owned(),
                ip: ctx.client_addr.clone().unwrap_or_default(),
                application: ctx.application_name.clone().unwrap_or_default(),
                rows: Vec::new(),
            });
        }
        if let Some(c) = commits.last_mut() {
            c.rows.push(RowView::new(e, &base, false));
        }
    }
    let path = format!("/transactions/{xid}");
    let with_db = |mut p: Vec<(&'static str, String)>| {
        p.extend(db.iter().map(|d| ("db", d.clone())));
        url(&path, &p)
    };
    let page = TransactionPage {
        xid,
        total,
        later_url: if more {
            entries
                .last()
                .map(|e| with_db(vec![("after", e.id.to_string())]))
        } else {
            None
        },
        first_url: (after > 0).then(|| with_db(Vec::new())),
        commits,
        show_db,
    };
    Ok(Html(page.render()?).into_response())
}
