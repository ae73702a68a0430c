//! The log's filters, sort and cursor: parsed from the query string (the log
//! page, the live stream and the API share one parser, so a URL means the same
//! everywhere) and turned into one parameterised SQL statement.
//!
//! Invariants:
//! - No user text is ever spliced into SQL: every value is a `$n` parameter;
//!   only fixed fragments chosen by match arms are written into the text.
//! - Pagination is keyset: a cursor holds the sort key and id of the last row
//!   shown, and the next page is "strictly after it" in the same order. `id`
//!   ends every ordering, so the order is total, and an entry stored after the
//!   first page was read can never shift or repeat rows on later pages.
//! - Time order is `id` order: ids are assigned in commit order, and the
//!   primary key index serves it without a sort.
//!
//! Index use (see `sql/store/0001_entries.sql` and `0003_web_columns.sql`):
//! a time range becomes an id range too (ids follow commit order;
//! [`Filter::resolve`] finds the bounds by binary search on the primary key),
//! so a window far in the past is read directly; a primary-key value uses the
//! btree on `row_key` (the hash of table and key text,
//! [`crate::entry::row_key`]), computed for each table it can be a key of
//! ([`Filter::pk_match`]); a table uses `(schema_name, table_name, id)`;
//! an actor, and the sort by actor, use `(coalesce(actor, ''), id)`; one
//! client address, and the sort by IP, use `(coalesce(host(client_addr), ''),
//! id)` (the plain columns pgtrail fills from the context). Everything else
//! walks the primary key in the sort order and filters, which is quick while
//! matches are common and slow for rare ones; free text is bounded by time
//! instead (see `log::fetch_page`).

use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::error::WebError;
use crate::entry::Action;
use crate::table::TableName;
use crate::text::{clip, push_json_string};

/// Every parameter the log and the API accept (the page also takes `live`).
pub const PARAMS: [&str; 16] = [
    "action", "table", "actor", "role", "ip", "app", "source", "from", "to", "last", "pk", "q",
    "sort", "dir", "cursor", "limit",
];

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// Counting stops here; beyond it the page says "more than".
pub const COUNT_CAP: i64 = 10_000;
const MAX_VALUE_LEN: usize = 1000;
const MAX_LIST: usize = 50;

/// What to show: filters, order, where to start, how many.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub filter: Filter,
    pub sort: Sort,
    pub cursor: Option<Cursor>,
    pub limit: i64,
    /// Page only: the user asked for live updates.
    pub live: bool,
}

/// The filters; every one that is set narrows the result.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actions: Vec<Action>,
    pub tables: Vec<TableName>,
    /// Application actor, or the database role where no actor was recorded.
    pub actor: Option<String>,
    /// The database role (`db_user`).
    pub role: Option<String>,
    /// An address or a network: `10.0.0.7`, `10.0.0.0/8`, `::1`.
    pub ip: Option<String>,
    pub app: Option<String>,
    pub source: Option<String>,
    /// As given (kept for links), and as the instant it means.
    pub from: Option<(String, DateTime<Utc>)>,
    pub to: Option<(String, DateTime<Utc>)>,
    /// `1h`, `24h`, `7d`…: committed within this long before now.
    pub last: Option<(String, Duration)>,
    /// A key value (`5`) or the whole key as JSON (`{"id":5}`).
    pub pk: Option<String>,
    /// Free text searched for in the row values, case-insensitively.
    pub q: Option<String>,
    /// What the one asking may see (not a filter from the URL); sees nothing unless set.
    pub scope: super::access::Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Time,
    Actor,
    Ip,
    Action,
    Table,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Time,
        SortKey::Actor,
        SortKey::Ip,
        SortKey::Action,
        SortKey::Table,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Time => "time",
            SortKey::Actor => "actor",
            SortKey::Ip => "ip",
            SortKey::Action => "action",
            SortKey::Table => "table",
        }
    }

    /// The SQL expressions that order by this key, before the final `id`.
    /// Never NULL, so row comparisons in the keyset condition are exact.
    fn exprs(self) -> &'static [&'static str] {
        match self {
            SortKey::Time => &[],
            // Exactly the expressions of the indexes entries_actor and
            // entries_client_addr, so that the index gives the order.
            SortKey::Actor => &["coalesce(actor, '')"],
            SortKey::Ip => &["coalesce(host(client_addr), '')"],
            SortKey::Action => &["action"],
            SortKey::Table => &["schema_name", "table_name"],
        }
    }

    /// Newest first for time, A to Z for the rest.
    pub fn default_dir(self) -> Dir {
        if self == SortKey::Time {
            Dir::Desc
        } else {
            Dir::Asc
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dir {
    Asc,
    #[default]
    Desc,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }

    pub fn flip(self) -> Dir {
        match self {
            Dir::Asc => Dir::Desc,
            Dir::Desc => Dir::Asc,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub key: SortKey,
    pub dir: Dir,
}

/// Where a page starts: strictly after (or, going back, before) this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key values of the row, as the SQL expressions gave them.
    pub keys: Vec<String>,
    pub id: i64,
    /// A "previous page" cursor: rows before this one, in reverse.
    pub backward: bool,
}

/// The cursor as it travels: base64url of this JSON. Sort and direction are in
/// it so that a cursor used with another order is refused, not misread.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorWire {
    s: String,
    d: String,
    k: Vec<String>,
    i: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    b: bool,
}

impl Cursor {
    pub fn encode(&self, sort: Sort) -> String {
        let wire = CursorWire {
            s: sort.key.as_str().into(),
            d: sort.dir.as_str().into(),
            k: self.keys.clone(),
            i: self.id,
            b: self.backward,
        };
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str, sort: Sort) -> Result<Cursor, WebError> {
        let bad = || {
            WebError::bad(format!(
                "cursor {:?} is not one this server gave out; start again from the first page",
                clip(text)
            ))
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| bad())?;
        let wire: CursorWire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if wire.s != sort.key.as_str() || wire.d != sort.dir.as_str() {
            return Err(WebError::bad(format!(
                "the cursor belongs to the order sort={}&dir={}, not sort={}&dir={}; start again from the first page",
                wire.s,
                wire.d,
                sort.key.as_str(),
                sort.dir.as_str()
            )));
        }
        if wire.k.len() != sort.key.exprs().len() || wire.i < 0 {
            return Err(bad());
        }
        Ok(Cursor {
            keys: wire.k,
            id: wire.i,
            backward: wire.b,
        })
    }
}

/// Decoded `name=value` pairs of a query string (`+` and `%XX` decoded).
/// A NUL character is refused: PostgreSQL text cannot hold one.
pub fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, WebError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    if let Some((name, _)) = pairs
        .iter()
        .find(|(n, v)| n.contains('\0') || v.contains('\0'))
    {
        return Err(WebError::bad(format!(
            "the value of {:?} contains a NUL character (%00), which no stored value can",
            clip(name)
        )));
    }
    Ok(pairs)
}

impl LogQuery {
    /// Parses the log's query string. Empty values count as absent (an HTML
    /// form sends every field); an unknown or repeated single-valued
    /// parameter is refused, so a typo cannot silently widen the result.
    pub fn parse(query: Option<&str>, allow_live: bool) -> Result<LogQuery, WebError> {
        Self::from_pairs(&pairs(query)?, allow_live, Utc::now())
    }

    pub fn from_pairs(
        pairs: &[(String, String)],
        allow_live: bool,
        now: DateTime<Utc>,
    ) -> Result<LogQuery, WebError> {
        let mut q = LogQuery {
            limit: DEFAULT_LIMIT,
            ..LogQuery::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut sort_key = None;
        let mut dir = None;
        let mut cursor_text = None;
        for (name, value) in pairs {
            let value = value.trim();
            if value.len() > MAX_VALUE_LEN {
                return Err(WebError::bad(format!(
                    "the value of {name} is too long (at most {MAX_VALUE_LEN} bytes)"
                )));
            }
            let multi = matches!(name.as_str(), "action" | "table");
            let known = PARAMS.contains(&name.as_str()) || (allow_live && name == "live");
            if !known {
                let mut names = PARAMS.to_vec();
                if allow_live {
                    names.push("live");
                }
                return Err(WebError::bad(format!(
                    "unknown parameter {:?}; the parameters are {}",
                    clip(name),
                    names.join(", ")
                )));
            }
            if value.is_empty() {
                continue;
            }
            if !multi {
                if seen.contains(&name.as_str()) {
                    return Err(WebError::bad(format!(
                        "{name} is given more than once; give it once"
                    )));
                }
                seen.push(name.as_str());
            }
            let f = &mut q.filter;
            match name.as_str() {
                "action" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let a = Action::from_str(part).map_err(|e| WebError::bad(format!("action: {e}")))?;
                        if !f.actions.contains(&a) {
                            f.actions.push(a);
                        }
                    }
                }
                "table" => {
                    let t = TableName::from_str(value).map_err(|e| WebError::bad(format!("table: {e}")))?;
                    if !f.tables.contains(&t) {
                        f.tables.push(t);
                    }
                    if f.tables.len() > MAX_LIST {
                        return Err(WebError::bad(format!("at most {MAX_LIST} tables can be given at once")));
                    }
                }
                "actor" => f.actor = Some(value.to_owned()),
                "role" => f.role = Some(value.to_owned()),
                "app" => f.app = Some(value.to_owned()),
                "source" => f.source = Some(value.to_owned()),
                "ip" => f.ip = Some(parse_ip(value)?),
                "from" => f.from = Some((value.to_owned(), parse_time(value, false).map_err(|m| WebError::bad(format!("from: {m}")))?)),
                "to" => f.to = Some((value.to_owned(), parse_time(value, true).map_err(|m| WebError::bad(format!("to: {m}")))?)),
                "last" => f.last = Some((value.to_owned(), parse_last(value)?)),
                "pk" => {
                    if value.starts_with('{') {
                        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(value).map_err(|e| {
                            WebError::bad(format!("pk: {:?} starts like a JSON object but is not one ({e}); give a key value such as 5, or the key as JSON such as {{\"id\":5}}", clip(value)))
                        })?;
                    }
                    f.pk = Some(value.to_owned());
                }
                "q" => f.q = Some(value.to_owned()),
                "sort" => {
                    sort_key = Some(SortKey::ALL.into_iter().find(|k| k.as_str() == value).ok_or_else(|| {
                        WebError::bad(format!("sort: {:?} is not a column to sort by; use time, actor, ip, action or table", clip(value)))
                    })?)
                }
                "dir" => {
                    dir = Some(match value {
                        "asc" => Dir::Asc,
                        "desc" => Dir::Desc,
                        _ => return Err(WebError::bad(format!("dir: {:?} is not a direction; use asc or desc", clip(value)))),
                    })
                }
                "cursor" => cursor_text = Some(value.to_owned()),
                "limit" => {
                    q.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| WebError::bad(format!("limit: {:?} is not a whole number from 1 to {MAX_LIMIT}", clip(value))))?
                }
                "live" => {
                    q.live = match value {
                        "1" | "true" | "on" => true,
                        "0" | "false" | "off" => false,
                        _ => return Err(WebError::bad(format!("live: {:?} is not 1 or 0", clip(value)))),
                    }
                }
                _ => unreachable!("every name in PARAMS is handled"),
            }
        }
        let key = sort_key.unwrap_or_default();
        q.sort = Sort {
            key,
            dir: dir.unwrap_or(key.default_dir()),
        };
        if let Some(text) = cursor_text {
            q.cursor = Some(Cursor::decode(&text, q.sort)?);
        }
        let f = &q.filter;
        if f.last.is_some() && f.from.is_some() {
            return Err(WebError::bad(
                "give either last (a quick range such as 24h) or from, not both",
            ));
        }
        if let (Some(from), Some(to)) = (f.since(now), f.to.as_ref()) {
            if from >= to.1 {
                return Err(WebError::bad(format!(
                    "from ({}) is not before to ({})",
                    from.format("%Y-%m-%d %H:%M:%S UTC"),
                    to.1.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
        }
        Ok(q)
    }

    /// The parameters that reproduce this view (without the cursor), in a stable order.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = self.filter.to_pairs();
        if self.sort != Sort::default() {
            out.push(("sort", self.sort.key.as_str().to_owned()));
            out.push(("dir", self.sort.dir.as_str().to_owned()));
        }
        if self.limit != DEFAULT_LIMIT {
            out.push(("limit", self.limit.to_string()));
        }
        out
    }
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.to_pairs().is_empty()
    }

    /// The lower time bound in force: `from`, or now minus `last`.
    pub fn since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (&self.from, &self.last) {
            (Some((_, t)), _) => Some(*t),
            (None, Some((_, d))) => Some(now - *d),
            (None, None) => None,
        }
    }

    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for a in &self.actions {
            out.push(("action", a.as_str().to_owned()));
        }
        for t in &self.tables {
            out.push(("table", table_param(t)));
        }
        let singles = [
            ("actor", self.actor.as_deref()),
            ("role", self.role.as_deref()),
            ("ip", self.ip.as_deref()),
            ("app", self.app.as_deref()),
            ("source", self.source.as_deref()),
            ("from", self.from.as_ref().map(|f| f.0.as_str())),
            ("to", self.to.as_ref().map(|t| t.0.as_str())),
            ("last", self.last.as_ref().map(|l| l.0.as_str())),
            ("pk", self.pk.as_deref()),
            ("q", self.q.as_deref()),
        ];
        for (name, value) in singles {
            if let Some(v) = value {
                out.push((name, v.to_owned()));
            }
        }
        out
    }
}

/// `schema.table` as the `table` parameter writes it: a part is double-quoted
/// only where it must be (it holds a `.`, `"` or `*`, or is empty).
pub fn table_param(t: &TableName) -> String {
    let part = |p: &str| {
        if p.is_empty() || p.contains(['.', '"', '*']) || p != p.trim() {
            format!("\"{}\"", p.replace('"', "\"\""))
        } else {
            p.to_owned()
        }
    };
    format!("{}.{}", part(&t.schema), part(&t.name))
}

/// `/` plus a query string built from `pairs`.
pub fn url(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

fn parse_ip(value: &str) -> Result<String, WebError> {
    let bad = || {
        WebError::bad(format!(
            "ip: {:?} is not an IP address or network; write e.g. 10.0.0.7, 10.0.0.0/8 or 2001:db8::/32",
            clip(value)
        ))
    };
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok(ip.to_string()),
        Some(p) => {
            let bits: u8 = p.parse().map_err(|_| bad())?;
            if bits > max || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WebError::bad(format!(
                    "ip: the prefix length of {:?} must be 0 to {max}",
                    clip(value)
                )));
            }
            Ok(format!("{ip}/{bits}"))
        }
    }
}

/// A time as the filters accept it: RFC 3339 (`2024-05-01T10:00:00Z`, any
/// offset), or a date and time without offset, read as UTC (what an HTML
/// `datetime-local` field sends), or a date. A date alone as the upper bound
/// means the end of that day.
pub fn parse_time(value: &str, upper: bool) -> Result<DateTime<Utc>, String> {
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if let Some(t) = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
    {
        t.and_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let d = if upper { d.succ_opt().unwrap_or(d) } else { d };
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or("not a valid date")?
    } else {
        return Err(format!(
            "{:?} is not a time; write e.g. 2024-05-01, 2024-05-01T14:30 (UTC) or 2024-05-01T14:30:00+02:00",
            clip(value)
        ));
    };
    use chrono::Datelike;
    if !(1..=9999).contains(&t.year()) {
        return Err(format!("{:?} is outside the years 1 to 9999", clip(value)));
    }
    Ok(t)
}

/// `30m`, `1h`, `24h`, `7d`: a number and a unit (m, h, d), at most ten years.
fn parse_last(value: &str) -> Result<Duration, WebError> {
    let bad = || {
        WebError::bad(format!(
            "last: {:?} is not a range; write e.g. 1h, 24h or 7d (a number and m, h or d)",
            clip(value)
        ))
    };
    let (n, unit) = value.split_at(value.len() - value.chars().last().map_or(0, char::len_utf8));
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 7 {
        return Err(bad());
    }
    let n: i64 = n.parse().map_err(|_| bad())?;
    let minutes = match unit {
        "m" => n,
        "h" => n * 60,
        "d" => n * 1440,
        _ => return Err(bad()),
    };
    if n == 0 || minutes > 3650 * 1440 {
        return Err(WebError::bad(format!(
            "last: {value:?} must be more than nothing and at most 3650d"
        )));
    }
    Ok(Duration::minutes(minutes))
}

/// A statement being built: SQL text and its parameters, numbered as pushed.
#[derive(Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter and returns its placeholder (`$3`).
    pub fn param<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// How the primary-key filter is matched, decided from the tables it can
/// apply to and their key columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PkMatch {
    /// The row is one of these (`row_key`, for the index, and the stored key
    /// text, to rule out a hash collision).
    pub row_keys: Vec<i64>,
    pub texts: Vec<String>,
    /// Tables with a composite key, where one value does not pin a row: some
    /// key column has this value (text form). Read through the table index.
    pub partial: Option<(Vec<TableName>, String)>,
}

impl PkMatch {
    /// The rows of `table` whose stored key text is one of `texts`.
    pub fn rows(table: &TableName, texts: Vec<String>) -> PkMatch {
        let mut m = PkMatch::default();
        m.add_rows(table, texts);
        m
    }

    fn add_rows(&mut self, table: &TableName, texts: Vec<String>) {
        for t in texts {
            self.row_keys.push(crate::entry::row_key(table, &t));
            if !self.texts.contains(&t) {
                self.texts.push(t);
            }
        }
    }

    /// How `pk` (a key value, or a key as a JSON object) matches entries of
    /// `tables`, given each one's key columns (`None`: no entry of it has a
    /// key). A single value is looked for in the key columns of composite
    /// keys only with `scan_composite` (the tables were filtered on): no
    /// index holds them, so that reads every entry of those tables.
    pub fn new(
        pk: &str,
        tables: &[(TableName, Option<Vec<String>>)],
        scan_composite: bool,
    ) -> Result<PkMatch, WebError> {
        let object = if pk.starts_with('{') {
            let raw: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_str(pk).map_err(|e| {
                    WebError::bad(format!("pk: {:?} is not a JSON object ({e})", clip(pk)))
                })?;
            Some(raw)
        } else {
            None
        };
        let mut m = PkMatch::default();
        let mut composite = Vec::new();
        for (table, columns) in tables {
            let Some(columns) = columns else { continue };
            match &object {
                // The object names the key's columns, in any order; the store
                // writes them in key order, values as the server printed them.
                Some(raw) => {
                    if raw.len() != columns.len() || !columns.iter().all(|c| raw.contains_key(c)) {
                        continue;
                    }
                    let mut text = String::from("{");
                    for (i, c) in columns.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        push_json_string(&mut text, c);
                        text.push(':');
                        text.push_str(&minify_json(raw[c].get()));
                    }
                    text.push('}');
                    m.add_rows(table, vec![text]);
                }
                None => match key_texts(columns, pk) {
                    Some(texts) => m.add_rows(table, texts),
                    None if scan_composite => composite.push(table.clone()),
                    None => {}
                },
            }
        }
        if !composite.is_empty() {
            m.partial = Some((composite, pk.to_owned()));
        }
        Ok(m)
    }
}

/// `t(schema_name, table_name)`: every table with entries, found by skipping
/// through the index on `(schema_name, table_name, id)`, one probe per table
/// however many entries each has.
const ALL_TABLES: &str = "WITH RECURSIVE t(schema_name, table_name) AS ( \
       (SELECT schema_name, table_name FROM pgtrail.entries ORDER BY 1, 2 LIMIT 1) \
     UNION ALL \
       SELECT n.schema_name, n.table_name FROM t, LATERAL ( \
         SELECT schema_name, table_name FROM pgtrail.entries e \
         WHERE (e.schema_name, e.table_name) > (t.schema_name, t.table_name) \
         ORDER BY 1, 2 LIMIT 1) n) ";

/// Every table with entries, in name order.
pub async fn all_tables(client: &Client) -> Result<Vec<TableName>, WebError> {
    let rows = client
        .query(
            &format!("{ALL_TABLES} SELECT schema_name, table_name FROM t"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Every table with entries ([`all_tables`]), or only those of `only` when
/// given, with its key columns (from its newest entry that has a key; `None`
/// if none has).
pub async fn tables_with_keys(
    client: &Client,
    only: Option<&[TableName]>,
) -> Result<Vec<(TableName, Option<Vec<String>>)>, WebError> {
    const KEY: &str = "(SELECT primary_key::text FROM pgtrail.entries e \
         WHERE e.schema_name = t.schema_name AND e.table_name = t.table_name AND row_key IS NOT NULL \
         ORDER BY id DESC LIMIT 1)";
    let rows = match only {
        Some(tables) => {
            let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            client
                .query(
                    &format!(
                        "SELECT t.schema_name, t.table_name, {KEY} \
                         FROM unnest($1::text[], $2::text[]) AS t(schema_name, table_name)"
                    ),
                    &[&schemas, &names],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!("{ALL_TABLES} SELECT t.schema_name, t.table_name, {KEY} FROM t"),
                    &[],
                )
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| {
            let table = TableName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            let key = r
                .get::<_, Option<String>>(2)
                .map(|text| super::diff::object_keys(&text));
            (table, key)
        })
        .collect())
}

/// The key column names of a table, from one of its stored entries: `None`
/// when no entry of the table has a primary key.
pub async fn key_columns(
    client: &Client,
    table: &TableName,
) -> Result<Option<Vec<String>>, WebError> {
    let found = tables_with_keys(client, Some(std::slice::from_ref(table))).await?;
    Ok(found.into_iter().next().and_then(|(_, key)| key))
}

/// The stored key texts a key value can be, for a table keyed by `columns`:
/// `{"id":5}` and `{"id":"5"}` (numbers, text, uuids… are stored either way).
/// `None` for a composite key, where a single value does not pin one row.
pub fn key_texts(columns: &[String], value: &str) -> Option<Vec<String>> {
    if value.starts_with('{') {
        return Some(vec![minify_json(value)]);
    }
    let [column] = columns else { return None };
    let mut name = String::new();
    push_json_string(&mut name, column);
    let mut quoted = String::new();
    push_json_string(&mut quoted, value);
    let mut texts = vec![format!("{{{name}:{quoted}}}")];
    let is_literal = matches!(value, "true" | "false")
        || serde_json::from_str::<serde_json::Number>(value).is_ok_and(|_| !value.starts_with('+'));
    if is_literal {
        texts.push(format!("{{{name}:{value}}}"));
    }
    Some(texts)
}

/// JSON text without insignificant whitespace (key order kept), as the store writes keys.
pub fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// What the filters need from the store before their SQL can be written.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// How the primary-key filter is matched.
    pub pk: Option<PkMatch>,
    /// Ids below `lo` or from `hi` on cannot match the time filters; the
    /// conditions on `committed_at` stay, so these only save reading.
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

/// Ids follow commit order, and commit times follow ids to well within this
/// (clock steps aside); a time bound widened by it is a safe id bound.
const TIME_SLACK_MINUTES: i64 = 60;

/// The smallest id from which every entry committed at or after `t`, found by
/// binary search on the primary key (about log2(entries) index probes) since
/// commit times rise with ids; one past the newest id if none did.
///
/// The search runs in the server, one statement: probe by probe from here it
/// cost two dozen round trips per bound, most of a time-filtered page's time
/// on a busy machine (bench/web.sh).
async fn first_id_from(client: &Client, t: DateTime<Utc>) -> Result<i64, WebError> {
    // Each step probes the first entry at or after the middle id: one
    // committed before `t` moves the lower end past it, anything else (a
    // later one, or none) moves the upper end to the middle.
    const SEARCH: &str = "WITH RECURSIVE search(lo, hi) AS ( \
            SELECT min(id), max(id) + 1 FROM pgtrail.entries \
          UNION ALL \
            SELECT CASE WHEN p.committed_at < $1 THEN p.id + 1 ELSE s.lo END, \
                   CASE WHEN p.committed_at < $1 THEN s.hi ELSE s.lo + (s.hi - s.lo) / 2 END \
            FROM search s \
            LEFT JOIN LATERAL (SELECT id, committed_at FROM pgtrail.entries \
                               WHERE id >= s.lo + (s.hi - s.lo) / 2 ORDER BY id LIMIT 1) p ON true \
            WHERE s.lo < s.hi) \
        SELECT lo FROM search WHERE lo >= hi";
    let row = client.query_opt(SEARCH, &[&t]).await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0)))
}

impl Filter {
    /// Resolves the key match and the id range of the time filters.
    pub async fn resolve(&self, client: &Client, now: DateTime<Utc>) -> Result<Resolved, WebError> {
        let slack = Duration::minutes(TIME_SLACK_MINUTES);
        let lo = match self.since(now) {
            Some(t) => Some(first_id_from(client, t - slack).await?),
            None => None,
        };
        let hi = match &self.to {
            Some((_, t)) => Some(first_id_from(client, *t + slack).await?),
            None => None,
        };
        Ok(Resolved {
            pk: self.pk_match(client).await?,
            lo,
            hi,
        })
    }

    /// Decides how to match the primary-key filter: the `row_key` of the
    /// value in every table it can be a key of (the tables filtered on, else
    /// every table with entries that the scope allows), so that the index
    /// finds it. A single value in a composite key is looked for only in the
    /// tables filtered on, through their own index: across every table it
    /// would read all their entries.
    pub async fn pk_match(&self, client: &Client) -> Result<Option<PkMatch>, WebError> {
        let Some(pk) = &self.pk else { return Ok(None) };
        let only = (!self.tables.is_empty()).then_some(self.tables.as_slice());
        let mut tables = tables_with_keys(client, only).await?;
        tables.retain(|(t, _)| self.scope.allows_table(t));
        PkMatch::new(pk, &tables, only.is_some()).map(Some)
    }

    /// Appends ` AND …` for every filter that is set.
    pub fn push_where(&self, sql: &mut Sql, r: &Resolved, now: DateTime<Utc>) {
        self.scope.push_where(sql);
        if let Some(lo) = r.lo {
            let p = sql.param(lo);
            sql.text.push_str(&format!(" AND id >= {p}"));
        }
        if let Some(hi) = r.hi {
            let p = sql.param(hi);
            sql.text.push_str(&format!(" AND id < {p}"));
        }
        if !self.actions.is_empty() {
            let p = sql.param(
                self.actions
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect::<Vec<String>>(),
            );
            sql.text.push_str(&format!(" AND action = ANY({p})"));
        }
        if !self.tables.is_empty() {
            let mut alternatives = Vec::new();
            for t in &self.tables {
                let s = sql.param(t.schema.clone());
                let n = sql.param(t.name.clone());
                alternatives.push(format!("(schema_name = {s} AND table_name = {n})"));
            }
            sql.text
                .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        if let Some(actor) = &self.actor {
            let p = sql.param(actor.clone());
            // The actor is never empty here, so this is `actor = …` in the
            // form the index entries_actor holds.
            sql.text
                .push_str(&format!(" AND coalesce(actor, '') = {p}"));
        }
        let exact = [
            ("db_user", &self.role),
            ("application_name", &self.app),
            ("source", &self.source),
        ];
        for (key, value) in exact {
            if let Some(v) = value {
                let p = sql.param(v.clone());
                sql.text.push_str(&format!(" AND context->>'{key}' = {p}"));
            }
        }
        if let Some(ip) = &self.ip {
            let p = sql.param(ip.clone());
            sql.text
                .push_str(&format!(" AND client_addr <<= ({p}::text)::inet"));
            if !ip.contains('/') {
                // One address: the same condition in the form the index
                // entries_client_addr holds, so it is looked up, not walked to.
                sql.text.push_str(&format!(
                    " AND coalesce(host(client_addr), '') = host(({p}::text)::inet)"
                ));
            }
        }
        if let Some(since) = self.since(now) {
            let p = sql.param(since);
            sql.text.push_str(&format!(" AND committed_at >= {p}"));
        }
        if let Some((_, to)) = &self.to {
            let p = sql.param(*to);
            sql.text.push_str(&format!(" AND committed_at < {p}"));
        }
        if let Some(m) = &r.pk {
            let mut alternatives = Vec::new();
            if !m.row_keys.is_empty() {
                let k = sql.param(m.row_keys.clone());
                let t = sql.param(m.texts.clone());
                alternatives.push(format!(
                    "(row_key = ANY({k}) AND primary_key::text = ANY({t}))"
                ));
            }
            if let Some((tables, value)) = &m.partial {
                let mut in_tables = Vec::new();
                for t in tables {
                    let s = sql.param(t.schema.clone());
                    let n = sql.param(t.name.clone());
                    in_tables.push(format!("(schema_name = {s} AND table_name = {n})"));
                }
                let v = sql.param(value.clone());
                alternatives.push(format!(
                    "(({}) AND EXISTS (SELECT 1 FROM json_each_text(primary_key) k WHERE k.value = {v}))",
                    in_tables.join(" OR ")
                ));
            }
            if alternatives.is_empty() {
                // No table can have such a key.
                sql.text.push_str(" AND false");
            } else {
                sql.text
                    .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
            }
        }
        if let Some(q) = &self.q {
            // A cheap scan of the JSON text first (the term escaped as JSON
            // would write it), then the exact check on values, so that column
            // names do not match.
            let mut json_term = String::new();
            push_json_string(&mut json_term, q);
            let json_term = &json_term[1..json_term.len() - 1];
            let rough = sql.param(format!("%{}%", like_escape(json_term)));
            let exact = sql.param(format!("%{}%", like_escape(q)));
            sql.text.push_str(&format!(
                " AND (before::text ILIKE {rough} OR after::text ILIKE {rough}) \
                 AND EXISTS (SELECT 1 FROM json_each_text(before) v WHERE v.value ILIKE {exact} \
                 UNION ALL SELECT 1 FROM json_each_text(after) v WHERE v.value ILIKE {exact})"
            ));
        }
    }
}

/// Escapes LIKE's wildcards (the default escape character is `\`).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Filter {
    /// Every matching entry in commit order: what an export reads.
    pub fn export_sql(&self, r: &Resolved, now: DateTime<Utc>) -> Sql {
        let mut sql = Sql::new(format!(
            "SELECT {} FROM pgtrail.entries WHERE true",
            crate::store::stored::ENTRY_COLUMNS
        ));
        self.push_where(&mut sql, r, now);
        sql.text.push_str(" ORDER BY id");
        sql
    }

    /// How many entries match (all of them, no cap): the total of an export's progress bar.
    pub fn count_all_sql(&self, r: &Resolved, now: DateTime<Utc>) -> Sql {
        let mut sql = Sql::new("SELECT count(*) FROM pgtrail.entries WHERE true");
        self.push_where(&mut sql, r, now);
        sql
    }

    /// The filters as a JSON object of their parameter names (lists for
    /// `action` and `table`), as an export's event records them.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, value) in self.to_pairs() {
            if matches!(name, "action" | "table") {
                let list = out
                    .entry(name)
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(items) = list {
                    items.push(value.into());
                }
            } else {
                out.insert(name.to_owned(), value.into());
            }
        }
        out
    }
}

/// A page of the log: its statement, and what the rows' extra columns mean.
pub struct PageSql {
    pub sql: Sql,
    /// How many sort key columns follow the entry columns.
    pub key_count: usize,
    /// Rows come in reverse (a backward cursor): the caller flips them.
    pub reversed: bool,
}

impl LogQuery {
    /// The page statement: entries (see `export::ENTRY_COLUMNS`), then the sort
    /// key values for cursors; `limit + 1` rows so the caller knows whether
    /// there is more.
    pub fn page_sql(&self, r: &Resolved, now: DateTime<Utc>) -> PageSql {
        let exprs = self.sort.key.exprs();
        let mut sql = Sql::new(format!("SELECT {}", crate::store::stored::ENTRY_COLUMNS));
        for e in exprs {
            sql.text.push_str(&format!(", {e}"));
        }
        sql.text.push_str(" FROM pgtrail.entries WHERE true");
        self.filter.push_where(&mut sql, r, now);
        let backward = self.cursor.as_ref().is_some_and(|c| c.backward);
        // Going back reads the other way from the cursor, then flips.
        let dir = if backward {
            self.sort.dir.flip()
        } else {
            self.sort.dir
        };
        if let Some(c) = &self.cursor {
            let mut left: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
            left.push("id".into());
            let mut right: Vec<String> = c.keys.iter().map(|k| sql.param(k.clone())).collect();
            right.push(sql.param(c.id));
            let op = if dir == Dir::Desc { "<" } else { ">" };
            if left.len() == 1 {
                sql.text.push_str(&format!(" AND id {op} {}", right[0]));
            } else {
                sql.text.push_str(&format!(
                    " AND ({}) {op} ({})",
                    left.join(", "),
                    right.join(", ")
                ));
            }
        }
        let order: Vec<String> = exprs
            .iter()
            .chain(&["id"])
            .map(|e| format!("{e} {}", dir.as_str().to_uppercase()))
            .collect();
        let limit = sql.param(self.limit + 1);
        sql.text
            .push_str(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        PageSql {
            sql,
            key_count: exprs.len(),
            reversed: backward,
        }
    }

    /// Counts matches with ids in `[lower, upper)`, stopping after `cap`.
    pub fn count_sql(
        &self,
        r: &Resolved,
        now: DateTime<Utc>,
        lower: i64,
        upper: i64,
        cap: i64,
    ) -> Sql {
        let mut sql = Sql::new("SELECT count(*) FROM (SELECT 1 FROM pgtrail.entries WHERE true");
        self.filter.push_where(&mut sql, r, now);
        let (l, u, c) = (sql.param(lower), sql.param(upper), sql.param(cap));
        sql.text
            .push_str(&format!(" AND id >= {l} AND id < {u} LIMIT {c}) s"));
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<LogQuery, WebError> {
        LogQuery::from_pairs(&pairs(Some(q))?, true, Utc::now())
    }

    fn err(q: &str) -> String {
        match parse(q) {
            Err(WebError::BadRequest(m)) => m,
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn filters_parse_and_round_trip() {
        let q = parse("action=insert&action=UPDATE,delete&table=public.t&table=%22a.b%22.c&actor=al&ip=10.0.0.0/8&pk=5&q=x&last=24h&sort=actor&dir=desc&limit=20&live=1&role=&app=").unwrap();
        assert_eq!(
            q.filter.actions,
            vec![Action::Insert, Action::Update, Action::Delete]
        );
        assert_eq!(
            q.filter.tables,
            vec![TableName::new("public", "t"), TableName::new("a.b", "c")]
        );
        assert_eq!(q.filter.ip.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(q.filter.role, None, "empty values are absent");
        assert_eq!(
            q.sort,
            Sort {
                key: SortKey::Actor,
                dir: Dir::Desc
            }
        );
        assert!(q.live);
        let again = LogQuery::from_pairs(
            &q.to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Vec<_>>(),
            false,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(again.to_pairs(), q.to_pairs());
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert!(err("action=UPSERT").contains("UPSERT"));
        assert!(err("from=yesterday").contains("from"));
        assert!(err("to=2024-13-01").contains("to"));
        assert!(err("ip=10.0.0.0/33").contains("prefix"));
        assert!(err("ip=example.com").contains("ip"));
        assert!(err("cursor=nonsense").contains("cursor"));
        assert!(err("sort=size").contains("sort"));
        assert!(err("dir=up").contains("dir"));
        assert!(err("limit=0").contains("limit"));
        assert!(err("limit=abc").contains("limit"));
        assert!(err("last=3w").contains("last"));
        assert!(err("last=1h&from=2024-01-01").contains("either"));
        assert!(err("from=2024-02-01&to=2024-01-01").contains("not before"));
        assert!(err("colour=red").contains("unknown parameter"));
        assert!(err("actor=a&actor=b").contains("more than once"));
        assert!(err("table=nodot").contains("table"));
        assert!(err("pk=%7Bbroken").contains("pk"));
        assert!(err("from=99999-01-01").contains("from"));
        assert!(err("actor=a%00b").contains("NUL"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_another_order() {
        let sort = Sort {
            key: SortKey::Table,
            dir: Dir::Asc,
        };
        let c = Cursor {
            keys: vec!["public".into(), "t".into()],
            id: 42,
            backward: true,
        };
        let text = c.encode(sort);
        assert_eq!(Cursor::decode(&text, sort).unwrap(), c);
        let other = Sort {
            key: SortKey::Table,
            dir: Dir::Desc,
        };
        assert!(
            matches!(Cursor::decode(&text, other), Err(WebError::BadRequest(m)) if m.contains("belongs"))
        );
    }

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(
            parse_time("2024-05-01T10:00:00+02:00", false)
                .unwrap()
                .to_rfc3339(),
            "2024-05-01T08:00:00+00:00"
        );
        assert_eq!(
            parse_time("2024-05-01T10:00", false).unwrap().to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
        assert_eq!(
            parse_time("2024-05-01", true).unwrap().to_rfc3339(),
            "2024-05-02T00:00:00+00:00"
        );
    }

    #[test]
    fn key_texts_cover_numbers_and_strings() {
        let cols = vec!["id".to_string()];
        assert_eq!(
            key_texts(&cols, "5").unwrap(),
            vec![r#"{"id":"5"}"#, r#"{"id":5}"#]
        );
        assert_eq!(key_texts(&cols, "abc").unwrap(), vec![r#"{"id":"abc"}"#]);
        assert_eq!(key_texts(&["a".into(), "b".into()], "1"), None);
        assert_eq!(
            minify_json("{ \"a b\" : 1 , \"c\":\"x y\" }"),
            "{\"a b\":1,\"c\":\"x y\"}"
        );
    }

    #[test]
    fn a_key_is_looked_up_in_every_table_it_can_be_a_key_of() {
        let t = |n: &str| TableName::new("public", n);
        let cols = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let tables = vec![
            (t("orders"), cols(&["id"])),
            (t("lines"), cols(&["order_id", "line"])),
            (t("log"), None),
        ];
        let m = PkMatch::new("5", &tables, true).unwrap();
        assert_eq!(m.texts, vec![r#"{"id":"5"}"#, r#"{"id":5}"#]);
        assert_eq!(
            m.row_keys,
            vec![
                crate::entry::row_key(&t("orders"), r#"{"id":"5"}"#),
                crate::entry::row_key(&t("orders"), r#"{"id":5}"#)
            ]
        );
        assert_eq!(m.partial, Some((vec![t("lines")], "5".to_owned())));

        // A whole key names its columns in any order and is written in key order.
        let m = PkMatch::new(r#"{ "line": 2, "order_id" : 1 }"#, &tables, false).unwrap();
        assert_eq!(m.texts, vec![r#"{"order_id":1,"line":2}"#]);
        assert_eq!(
            m.row_keys,
            vec![crate::entry::row_key(
                &t("lines"),
                r#"{"order_id":1,"line":2}"#
            )]
        );
        assert_eq!(m.partial, None);
        // Columns no table has as its key: nothing can match.
        let m = PkMatch::new(r#"{"nope":1}"#, &tables, true).unwrap();
        assert!(m.row_keys.is_empty() && m.partial.is_none());
        assert!(matches!(
            PkMatch::new("{broken", &tables, true),
            Err(WebError::BadRequest(_))
        ));
        // Across every table, a single value is not looked for in composite keys.
        assert_eq!(PkMatch::new("5", &tables, false).unwrap().partial, None);
    }

    #[test]
    fn sql_is_parameterised() {
        let q =
            parse("actor=x%27%3B%20DROP%20TABLE%20t&q=50%25_off&table=public.t&sort=table&cursor=")
                .unwrap();
        let page = q.page_sql(&Resolved::default(), Utc::now());
        assert!(!page.sql.text.contains("DROP"), "{}", page.sql.text);
        assert!(
            page.sql
                .text
                .contains("ORDER BY schema_name ASC, table_name ASC, id ASC"),
            "{}",
            page.sql.text
        );
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
    }
}
