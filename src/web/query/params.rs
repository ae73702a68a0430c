//! The log's parameters: the query string parsed into a [`LogQuery`] (its
//! [`Filter`]s, sort, cursor and limit), refused with a message that says
//! what is wrong; and the way back, from a query to parameters and URLs.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

use super::events::Events;
use super::order::{Cursor, Dir, Sort, SortKey};
use super::scope::Scope;
use crate::entry::Action;
use crate::store::sources::SourceName;
use crate::table::TableName;
use crate::text::clip;
use crate::web::error::WebError;

/// Every parameter the log and the API accept (the page also takes `live`).
pub const PARAMS: [&str; 19] = [
    "action", "table", "db", "actor", "role", "ip", "app", "source", "from", "to", "last", "pk",
    "q", "events", "search", "sort", "dir", "cursor", "limit",
];

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
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
    /// Source databases, by `[source] name` (the parameter `db`: `source`
    /// is the application's `context.source`); checked against the store's
    /// sources by [`Filter::resolve`].
    pub dbs: Vec<String>,
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
    /// Whether pgtrail's own events are shown (see `query::events`).
    pub events: Events,
    /// What the one asking may see (not a filter from the URL); sees nothing unless set.
    pub scope: Scope,
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
        // The search box's line becomes the parameters it stands for, each
        // checked alone by this parser so that a mistake names its term.
        let alone = |name: &str, value: &str| match Self::from_pairs(
            &[(name.to_owned(), value.to_owned())],
            false,
            now,
        ) {
            Err(WebError::BadRequest(m)) => Err(m),
            _ => Ok(()),
        };
        let expanded = super::search::expand(pairs, &alone)?;
        let pairs = expanded.as_deref().unwrap_or(pairs);
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
            let multi = matches!(name.as_str(), "action" | "table" | "db");
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
                "db" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        if !f.dbs.iter().any(|d| d == part) {
                            f.dbs.push(part.to_owned());
                        }
                    }
                    if f.dbs.len() > MAX_LIST {
                        return Err(WebError::bad(format!("at most {MAX_LIST} sources can be given at once")));
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
                "events" => f.events = Events::parse(value).map_err(WebError::bad)?,
                // Replaced by its terms above; only a second one could be left.
                "search" => return Err(WebError::bad("search is given more than once; give it once")),
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
        if q.filter.events == Events::Unfiltered {
            q.filter.events = Events::Omitted;
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

    /// This view from its first page: without the cursor (live mode, which
    /// runs on the first page, is kept; links made by [`LogQuery::to_pairs`]
    /// never carry it).
    pub fn first_page(&self) -> LogQuery {
        LogQuery {
            cursor: None,
            ..self.clone()
        }
    }

    /// The log's link to the first page of this view changed by `change`
    /// (narrowed to a value, sorted another way, a filter removed …).
    pub fn first_page_url(&self, change: impl FnOnce(&mut LogQuery)) -> String {
        let mut q = self.first_page();
        change(&mut q);
        url("/", &q.to_pairs())
    }
}

impl Filter {
    /// The view leaves pgtrail's own events out by a condition of its own
    /// (see `query::events`).
    pub fn hides_events(&self) -> bool {
        self.events.hide(
            !self.actions.is_empty()
                || !self.tables.is_empty()
                || self.dbs.iter().any(|d| d == SourceName::PGTRAIL),
        )
    }

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
        for d in &self.dbs {
            out.push(("db", d.clone()));
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
        match self.events {
            Events::Shown => out.push(("events", "shown".to_owned())),
            Events::Hidden => out.push(("events", "hidden".to_owned())),
            Events::Omitted | Events::Unfiltered => {}
        }
        out
    }

    /// The filters as a JSON object of their parameter names (lists for
    /// `action`, `table` and `db`), as an export's event records them.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, value) in self.to_pairs() {
            if matches!(name, "action" | "table" | "db") {
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
        let q = parse("action=insert&action=UPDATE,delete&table=public.t&table=%22a.b%22.c&db=a,b&db=a&actor=al&ip=10.0.0.0/8&pk=5&q=x&last=24h&sort=actor&dir=desc&limit=20&live=1&role=&app=").unwrap();
        assert_eq!(
            q.filter.actions,
            vec![Action::Insert, Action::Update, Action::Delete]
        );
        assert_eq!(
            q.filter.tables,
            vec![TableName::new("public", "t"), TableName::new("a.b", "c")]
        );
        assert_eq!(q.filter.dbs, ["a", "b"]);
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
}
