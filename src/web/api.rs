//! The JSON API (`/api/v1/…`): the log's entries with the same filters, sort
//! and cursor as the page, one entry with its per-column diff, and the
//! OpenAPI 3.1 document, generated from these declarations by utoipa.
//!
//! Entries are written by [`StoredEntry::write_json`], the very code behind
//! `pgtrail export --format jsonl`, so an API entry and an exported line are
//! the same text. The schema structs below only describe that shape.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};

use super::access::Principal;
use super::diff::{self, Change, ColumnDiff};
use super::entry::load;
use super::error::ApiError;
use super::log::fetch::{fetch_page, resolve};
use super::query::{Events, LogQuery};
use super::AppState;
use crate::store::stored::StoredEntry;
use crate::text::push_json_string;
use axum::Extension;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pgtrail",
        description = "Read the audit trail: entries filtered as on the log page, one entry with its per-column diff. \
                       Entries have exactly the shape `pgtrail export --format jsonl` prints."
    ),
    paths(list, one),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    components(schemas(
        EntryList,
        Entry,
        EntryDetail,
        ColumnDiff,
        Change,
        ErrorBody,
        ActionName,
        SortName,
        DirName
    ))
)]
pub struct ApiDoc;

/// The API's one way in besides a trusted proxy: an API token as a bearer
/// token. (Under `auth = "none"` on loopback no token is needed.)
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pgt_…")
                    .description(Some(
                        "An API token, shown once when an admin creates it with \
                         `pgtrail token create NAME --role viewer|auditor|admin [--tables PATTERN]`. \
                         It sees what its role and tables allow.",
                    ))
                    .build(),
            ),
        );
    }
}

static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
});

/// What happened to the row; `EVENT` is one of pgtrail's own events (see `events`).
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum ActionName {
    INSERT,
    UPDATE,
    DELETE,
    TRUNCATE,
    DDL,
    EVENT,
}

/// The column to sort by (`time` is commit order).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SortName {
    Time,
    Actor,
    Ip,
    Action,
    Table,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DirName {
    Asc,
    Desc,
}

/// The filters, sort and cursor of `GET /api/v1/entries`: the same as the log page's URL.
/// Empty values are ignored; an unknown parameter, or a single-valued one given twice, is a 400.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogParams {
    /// Only these actions; repeat the parameter (or separate with commas) for several. Case does not matter.
    #[param(inline)]
    action: Option<Vec<ActionName>>,
    /// Only these tables, `schema.table` (double-quote a part holding `.`, `"` or `*`); repeat for several.
    table: Option<Vec<String>>,
    /// Only entries captured from these source databases, by `[source] name` (the entries' top-level `source`;
    /// `pgtrail` for pgtrail's own events); repeat or separate with commas. A name the store does not know is a 400
    /// that lists the names it knows.
    db: Option<Vec<String>>,
    /// The application actor, or the database role where no actor was recorded; exact match.
    actor: Option<String>,
    /// The database role (`db_user`); exact match.
    role: Option<String>,
    /// The client address, or a network containing it: `10.0.0.7`, `10.0.0.0/8`, `2001:db8::/32`.
    ip: Option<String>,
    /// The application name; exact match.
    app: Option<String>,
    /// The source recorded with the context (the application's `pgtrail.source`, not the database: see `db`); exact match.
    source: Option<String>,
    /// Committed at or after: RFC 3339; also accepted: `YYYY-MM-DD[THH:MM[:SS]]`, read as UTC.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Committed before: as `from`; a date alone means the end of that day.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Committed within this long before now: a number and `m`, `h` or `d` (`1h`, `24h`, `7d`), at most 3650d. Not with `from`.
    #[param(pattern = "^[0-9]{1,7}[mhd]$")]
    last: Option<String>,
    /// A primary-key value (`5`: a one-column key equal to it in any table, or any key column of the tables given
    /// with `table`), or the whole key as a JSON object in any key order (`{"order_id":1,"line":2}`).
    pk: Option<String>,
    /// Text searched for, case-insensitively, in the values of the row before and after.
    /// A page searches for a limited time (about 0.25 s): it may hold fewer entries than
    /// `limit`, even none, and still have a `next_cursor` that searches on.
    q: Option<String>,
    /// `hidden` leaves out pgtrail's own events (action `EVENT`: sign-ins, exports, user changes; only admins
    /// see them), as the log page does by default; `shown` or no value lists them with the other entries.
    #[param(pattern = "^(shown|hidden)$")]
    events: Option<String>,
    /// The log page's search box: `key:value` terms and free text in one line, read into the parameters above
    /// (`table:public.orders actor:alice action:DELETE ip:10.0.0.0/8 after:2026-11-01 last:24h "free text"`).
    /// Keys: action, table, db, actor, role, ip, app, source, pk, after (= from), before (a date: before that day),
    /// from, to, last, events, is:event (= action:EVENT), q; a value with spaces is double-quoted. A mistake is a
    /// 400 that names the character where it is.
    search: Option<String>,
    /// Sort column; default `time`.
    #[param(inline)]
    sort: Option<SortName>,
    /// Sort direction; default `desc` for time, `asc` for the others.
    #[param(inline)]
    dir: Option<DirName>,
    /// `next_cursor` of the previous response, with the same sort.
    cursor: Option<String>,
    /// Entries per response, 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// One audit entry, as `pgtrail export --format jsonl` prints it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Entry {
    /// Assigned in commit order.
    id: i64,
    /// Commit time of the source transaction, RFC 3339 in UTC with microseconds.
    #[schema(format = DateTime)]
    committed_at: String,
    /// Source transaction id.
    xid: i64,
    /// Commit LSN of the source transaction.
    lsn: String,
    schema: String,
    table: String,
    #[schema(inline)]
    action: ActionName,
    /// The row's primary key (`{"id":5}`); null for a table without one, and for TRUNCATE.
    #[schema(required = true)]
    primary_key: Option<HashMap<String, serde_json::Value>>,
    /// The row before; null for INSERT and TRUNCATE. Holds only the key unless the table's REPLICA IDENTITY is FULL.
    #[schema(required = true)]
    before: Option<HashMap<String, serde_json::Value>>,
    /// The row after; null for DELETE and TRUNCATE. For DDL: command_tag, object_type, object_identity, sql.
    #[schema(required = true)]
    after: Option<HashMap<String, serde_json::Value>>,
    /// The columns an UPDATE changed; null where the before image is incomplete.
    #[schema(required = true)]
    changed_columns: Option<Vec<String>>,
    /// Who and from where: db_user, client_addr, application_name, actor, source (the application's), remarks.
    context: HashMap<String, serde_json::Value>,
    /// What pgtrail knows of the entry beyond the row: for its own events (`EVENT`), what happened.
    #[schema(required = true)]
    details: Option<HashMap<String, serde_json::Value>>,
    /// The database the entry was captured from, by its `[source] name` (`shop-eu`); `pgtrail` for
    /// pgtrail's own events. Not `context.source`, which the application sets.
    source: String,
}

/// A page of entries.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EntryList {
    entries: Vec<Entry>,
    /// Pass as `cursor` for the next page; null on the last page. (With `q` a page can be
    /// short, or empty, and still have one: the search stopped for time, not for lack of matches.)
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One entry, its columns compared, and the SQL that would revert it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EntryDetail {
    entry: Entry,
    /// Changed columns first, then those whose old value is unknown, then unchanged ones.
    diff: Vec<ColumnDiff>,
    /// A statement that would put the row back as it was before this entry; pgtrail never runs it.
    #[schema(required = true)]
    revert_sql: Option<String>,
    /// Why there is no revert_sql, when there is none.
    #[schema(required = true)]
    revert_unavailable: Option<String>,
}

/// What was wrong with the request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: String,
}

/// How every API route answers a caller it does not let in.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum NotLetIn {
    #[response(
        status = 401,
        description = "No API token, or one that is unknown or revoked"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "A proxy-authenticated user with no pgtrail role, or disabled"
    )]
    Forbidden(ErrorBody),
}

fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// List entries.
#[utoipa::path(
    get,
    path = "/api/v1/entries",
    params(LogParams),
    responses(
        (status = 200, description = "Matching entries, in the requested order", body = EntryList),
        (status = 400, description = "A malformed filter, sort, cursor or limit; the message says which", body = ErrorBody),
        NotLetIn,
        (status = 503, description = "The store cannot answer now (down, or the query ran too long), or pgtrail has no user yet", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut q = LogQuery::parse(raw.as_deref(), false)?;
    q.filter.scope = who.scope();
    // Unlike the page, the API lists pgtrail's own events unless asked not to.
    if q.filter.events == Events::Omitted {
        q.filter.events = Events::Shown;
    }
    let now = Utc::now();
    let resolved = resolve(&state, &q.filter, now).await?;
    let page = fetch_page(&state, &q, &resolved, now).await?;
    let mut body = String::with_capacity(1024 * page.entries.len().max(1));
    body.push_str("{\"entries\":[");
    for (i, e) in page.entries.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        e.write_json(&mut body);
    }
    body.push_str("],\"next_cursor\":");
    match &page.next {
        Some(c) => push_json_string(&mut body, c),
        None => body.push_str("null"),
    }
    body.push('}');
    Ok(json_response(body))
}

/// The JSON of one entry with its diff.
pub fn detail_json(entry: &StoredEntry) -> String {
    let diffs = diff::column_diffs(entry);
    let (sql, why) = match diff::revert_sql(entry, &diffs) {
        Ok(sql) => (Some(sql), None),
        Err(why) => (None, Some(why)),
    };
    let mut body = String::from("{\"entry\":");
    entry.write_json(&mut body);
    body.push_str(",\"diff\":");
    body.push_str(&serde_json::to_string(&diffs).unwrap_or_else(|_| "[]".into()));
    body.push_str(",\"revert_sql\":");
    body.push_str(&serde_json::to_string(&sql).unwrap_or_else(|_| "null".into()));
    body.push_str(",\"revert_unavailable\":");
    body.push_str(&serde_json::to_string(&why).unwrap_or_else(|_| "null".into()));
    body.push('}');
    body
}

/// One entry with its per-column diff.
#[utoipa::path(
    get,
    path = "/api/v1/entries/{id}",
    params(("id" = i64, Path, description = "The entry id", minimum = 0)),
    responses(
        (status = 200, description = "The entry", body = EntryDetail),
        (status = 400, description = "The id is not a whole number", body = ErrorBody),
        NotLetIn,
        (status = 404, description = "No entry has this id, or none the token may see", body = ErrorBody),
        (status = 503, description = "The store cannot answer now, or pgtrail has no user yet", body = ErrorBody),
    )
)]
pub async fn one(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = load(&state, &id, &who).await?;
    Ok(json_response(detail_json(&entry)))
}

/// `GET /api/v1/openapi.json`
pub async fn openapi() -> Response {
    json_response(OPENAPI_JSON.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_parameters_the_parser_takes() {
        let doc: serde_json::Value = serde_json::from_str(&OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let params = doc["paths"]["/api/v1/entries"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, super::super::query::PARAMS);
    }
}
