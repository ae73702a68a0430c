//! CEF, ArcSight's Common Event Format: one line per entry,
//! `CEF:0|pgtrail|pgtrail|<version>|<signature id>|<name>|<severity>|<extension>`.
//!
//! Escaping follows the CEF specification: in the header `\` and `|` are
//! escaped with a backslash; in extension values `\` and `=` are, and line
//! breaks become `\n` and `\r`. The header has no escape for a line break, so
//! one there (a table name may hold one) becomes a space; the exact name is in
//! the extension (`cs1`). Keys whose value is null are left out, with their
//! labels. README's "CEF" section documents the mapping; in short:
//!
//! | key | from |
//! | --- | --- |
//! | signature id | the action; `EVENT:<name>` for pgtrail's own events |
//! | name | `<action> <schema>.<table>`; for an event, its summary |
//! | severity | [`severity`] |
//! | `rt` | committed_at, milliseconds since the Unix epoch |
//! | `externalId` | entry id |
//! | `act` | action |
//! | `suser` | the actor, or the database role where there is none |
//! | `src` / `c6a2` | client address (IPv4 / IPv6) |
//! | `spt`, `spid` | client port, backend process id |
//! | `sproc` | application_name |
//! | `sourceServiceName` | context source (the application's) |
//! | `destinationServiceName` | the entry's source database (`[source] name`) |
//! | `msg` | context remarks |
//! | `cn1` (`xid`) | source transaction id |
//! | `flexString1` (`lsn`), `flexString2` (`dbRole`) | commit LSN, database role |
//! | `cs1`..`cs6` | table, primaryKey, changedColumns, before, after, details |

use serde_json::Value;

use super::lines::LineFormat;
use super::StoredEntry;

/// How much an action matters to a security analyst, on CEF's 0–10 scale.
pub fn severity(action: &str) -> u8 {
    match action {
        "INSERT" => 3,
        "UPDATE" => 4,
        "EVENT" => 5,
        "DELETE" => 6,
        "DDL" => 7,
        "TRUNCATE" => 8,
        _ => 5,
    }
}

/// Escapes a header field: `\` and `|`; a line break becomes a space.
pub fn escape_header(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Escapes an extension value: `\`, `=`, and line breaks as `\n`, `\r`.
pub fn escape_value(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A context value as text: a JSON string's content, else its JSON text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CEF, written by [`super::lines::Lines`].
pub struct Cef;

/// One CEF line for `e`, without the line break.
pub fn line(e: &StoredEntry, version: &str, out: &mut String) {
    let ctx = e.context_fields();
    let get = |k: &str| ctx.get(k).map(text);
    let table = format!("{}.{}", e.schema, e.table);
    let (signature, name) = if e.action == "EVENT" {
        let event = e
            .details()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|d| d.get("event").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        (
            format!("EVENT:{event}"),
            get("remarks").unwrap_or_else(|| format!("EVENT {table}")),
        )
    } else {
        (e.action.clone(), format!("{} {table}", e.action))
    };
    out.push_str("CEF:0|pgtrail|pgtrail|");
    escape_header(version, out);
    out.push('|');
    escape_header(&signature, out);
    out.push('|');
    escape_header(&name, out);
    out.push('|');
    out.push_str(&severity(&e.action).to_string());
    out.push('|');

    let mut first = true;
    let mut pair = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(key);
        out.push('=');
        escape_value(value, out);
    };
    pair(out, "rt", &e.committed_at.timestamp_millis().to_string());
    pair(out, "externalId", &e.id.to_string());
    pair(out, "act", &e.action);
    // The database the change was made in is the service the event targets.
    pair(out, "destinationServiceName", &e.source);
    if let Some(who) = get("actor").or_else(|| get("db_user")) {
        pair(out, "suser", &who);
    }
    if let Some(addr) = get("client_addr") {
        // CEF's src is an IPv4 address; IPv6 goes in the custom IPv6 field.
        let bare = addr.split('/').next().unwrap_or(&addr);
        if bare.parse::<std::net::Ipv6Addr>().is_ok() {
            pair(out, "c6a2", bare);
            pair(out, "c6a2Label", "Source IPv6 Address");
        } else {
            pair(out, "src", bare);
        }
    }
    for (key, field) in [
        ("spt", "client_port"),
        ("spid", "backend_pid"),
        ("sproc", "application_name"),
        ("sourceServiceName", "source"),
        ("msg", "remarks"),
    ] {
        if let Some(v) = get(field) {
            pair(out, key, &v);
        }
    }
    if let Some(xid) = e.xid {
        pair(out, "cn1", &xid.to_string());
        pair(out, "cn1Label", "xid");
    }
    if let Some(lsn) = &e.lsn {
        pair(out, "flexString1", lsn);
        pair(out, "flexString1Label", "lsn");
    }
    if let Some(role) = get("db_user") {
        pair(out, "flexString2", &role);
        pair(out, "flexString2Label", "dbRole");
    }
    let custom = [
        ("cs1", "table", Some(table.as_str())),
        ("cs2", "primaryKey", e.primary_key()),
        ("cs3", "changedColumns", e.changed_columns()),
        ("cs4", "before", e.before()),
        ("cs5", "after", e.after()),
        ("cs6", "details", e.details()),
    ];
    for (key, label, value) in custom {
        if let Some(v) = value.filter(|v| *v != "null") {
            pair(out, key, v);
            pair(out, &format!("{key}Label"), label);
        }
    }
}

impl LineFormat for Cef {
    const CAPACITY: usize = 2048;

    fn line(&self, e: &StoredEntry, out: &mut String) {
        // The header's device version is this build's.
        line(e, env!("CARGO_PKG_VERSION"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_the_spec() {
        let mut h = String::new();
        escape_header("a|b\\c=d\ne", &mut h);
        assert_eq!(h, "a\\|b\\\\c=d e");
        let mut v = String::new();
        escape_value("a|b\\c=d\ne\rf", &mut v);
        assert_eq!(v, "a|b\\\\c\\=d\\ne\\rf");
    }

    #[test]
    fn an_event_line_has_its_name_and_no_transaction() {
        let e = StoredEntry {
            id: 7,
            committed_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            xid: None,
            lsn: None,
            schema: "pgtrail".into(),
            table: "export".into(),
            action: "EVENT".into(),
            source: "pgtrail".into(),
            json: [
                None,
                None,
                None,
                None,
                Some(r#"{"actor":"alice","client_addr":"::1","remarks":"exported 3 entries","db_user":null}"#.into()),
                Some(r#"{"event":"export","format":"csv"}"#.into()),
            ],
        };
        let mut l = String::new();
        line(&e, "1.0", &mut l);
        assert_eq!(
            l,
            "CEF:0|pgtrail|pgtrail|1.0|EVENT:export|exported 3 entries|5|rt=1700000000123 externalId=7 act=EVENT \
             destinationServiceName=pgtrail suser=alice c6a2=::1 c6a2Label=Source IPv6 Address msg=exported 3 entries \
             cs1=pgtrail.export cs1Label=table cs6={\"event\":\"export\",\"format\":\"csv\"} cs6Label=details"
        );
    }
}
