//! `pgtrail export` in every format, each read back by an independent reader and compared with
//! the store entry by entry: serde_json for JSON Lines, the `csv` crate (with and without a BOM),
//! a CEF parser written here from the specification's escaping rules, calamine for XLSX (numbers
//! are numbers, times are dates, frozen header and filters checked in the sheet's XML), and the
//! `age` crate for encrypted exports. Values are hostile on purpose: `|`, `=`, `\`, line breaks,
//! quotes, unicode, a value longer than an Excel cell, a table name with a pipe and a newline.
//! Every export leaves exactly one EVENT entry with the right details, also one that fails part
//! way; `require_encryption` makes a plain export impossible.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use calamine::{Data, Reader};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::harness::*;

/// One stored entry, read straight from `pgtrail.entries` (xid and lsn may be null: events).
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub committed_at: DateTime<Utc>,
    pub xid: Option<i64>,
    pub lsn: Option<String>,
    pub schema: String,
    pub table: String,
    pub action: String,
    /// primary_key, before, after, changed_columns, context, details: the stored JSON text.
    pub json: [Option<String>; 6],
}

pub const JSON_FIELDS: [&str; 6] = [
    "primary_key",
    "before",
    "after",
    "changed_columns",
    "context",
    "details",
];

impl Row {
    pub fn json(&self, name: &str) -> Value {
        let i = JSON_FIELDS.iter().position(|f| *f == name).unwrap();
        match &self.json[i] {
            None => Value::Null,
            Some(t) => serde_json::from_str(t).unwrap(),
        }
    }

    pub fn context(&self, key: &str) -> Option<String> {
        match &self.json("context")[key] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }

    pub fn time_text(&self) -> String {
        self.committed_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }
}

/// Every entry matching `condition` (SQL, on `pgtrail.entries`), by id.
pub async fn rows_where(store: &Client, condition: &str) -> Vec<Row> {
    let rows = store
        .query(
            &format!(
                "SELECT id, committed_at, xid, lsn::text, schema_name, table_name, action, primary_key::text, \
                 before::text, after::text, changed_columns::text, context::text, details::text \
                 FROM pgtrail.entries WHERE {condition} ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("read entries");
    rows.iter()
        .map(|r| Row {
            id: r.get(0),
            committed_at: r.get(1),
            xid: r.get(2),
            lsn: r.get(3),
            schema: r.get(4),
            table: r.get(5),
            action: r.get(6),
            json: [
                r.get(7),
                r.get(8),
                r.get(9),
                r.get(10),
                r.get(11),
                r.get(12),
            ],
        })
        .collect()
}

/// The export events, by id.
pub async fn export_events(store: &Client) -> Vec<Row> {
    rows_where(
        store,
        "action = 'EVENT' AND schema_name = 'pgtrail' AND table_name = 'export'",
    )
    .await
}

/// The user name of this process's uid, as `id -un` says.
pub fn os_user_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Checks the one event an export left: who, how, what and how many.
pub fn assert_export_event(
    ev: &Row,
    format: &str,
    filters: Value,
    entries: usize,
    encrypted: bool,
    completed: bool,
) {
    let d = ev.json("details");
    assert_eq!(d["event"], "export", "{d}");
    assert_eq!(d["format"], format, "{d}");
    assert_eq!(d["filters"], filters, "{d}");
    assert_eq!(d["entries"].as_u64(), Some(entries as u64), "{d}");
    assert_eq!(d["encrypted"], encrypted, "{d}");
    assert_eq!(d["completed"], completed, "{d}");
    assert_eq!(d["error"].is_string(), !completed, "{d}");
    assert!(d["bom"].is_boolean(), "{d}");
    assert_eq!(ev.xid, None);
    assert_eq!(ev.lsn, None);
    assert_eq!(ev.context("source").as_deref(), Some("pgtrail"));
}

// ---------------------------------------------------------------------------------------------
// Independent readers
// ---------------------------------------------------------------------------------------------

/// A JSON Lines export against the store's rows.
pub fn check_jsonl(text: &str, want: &[Row]) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), want.len(), "one line per entry");
    for (line, r) in lines.iter().zip(want) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["id"].as_i64(), Some(r.id), "{line}");
        assert_eq!(
            v["committed_at"].as_str(),
            Some(r.time_text().as_str()),
            "{line}"
        );
        assert_eq!(v["xid"].as_i64(), r.xid, "{line}");
        assert_eq!(v["lsn"].as_str(), r.lsn.as_deref(), "{line}");
        assert_eq!(v["schema"].as_str(), Some(r.schema.as_str()));
        assert_eq!(v["table"].as_str(), Some(r.table.as_str()));
        assert_eq!(v["action"].as_str(), Some(r.action.as_str()));
        for f in JSON_FIELDS {
            assert_eq!(v[f], r.json(f), "{f} of {line}");
        }
    }
}

/// A CSV export (with or without a byte order mark) against the store's rows.
pub fn check_csv(bytes: &[u8], want: &[Row], bom: bool) {
    assert_eq!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        bom,
        "BOM present iff asked for"
    );
    let body = if bom { &bytes[3..] } else { bytes };
    assert!(
        body.windows(2).any(|w| w == b"\r\n"),
        "RFC 4180 records end in CRLF"
    );
    let mut reader = csv::Reader::from_reader(body);
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(headers, EXPORT_FIELDS);
    let records: Vec<csv::StringRecord> =
        reader.records().map(|r| r.expect("csv record")).collect();
    assert_eq!(records.len(), want.len(), "one record per entry");
    for (rec, r) in records.iter().zip(want) {
        assert_eq!(rec[0].parse::<i64>().ok(), Some(r.id));
        assert_eq!(&rec[1], r.time_text());
        assert_eq!(rec[2].parse::<i64>().ok(), r.xid, "{rec:?}");
        assert_eq!(&rec[3], r.lsn.as_deref().unwrap_or(""));
        assert_eq!(&rec[4], r.schema);
        assert_eq!(&rec[5], r.table);
        assert_eq!(&rec[6], r.action);
        for (i, f) in JSON_FIELDS.iter().enumerate() {
            let cell: Value =
                serde_json::from_str(&rec[7 + i]).unwrap_or_else(|e| panic!("{f} ({e}): {rec:?}"));
            assert_eq!(cell, r.json(f), "{f}: {rec:?}");
        }
    }
}

/// One CEF line, parsed by the specification's rules: seven `|`-separated header fields (with
/// `\|` and `\\` escaped), then `key=value` pairs separated by spaces, where a value runs until
/// the next unescaped `=`'s key and has `\=`, `\\`, `\n`, `\r` escaped.
#[derive(Debug)]
pub struct CefLine {
    pub header: Vec<String>,
    pub ext: BTreeMap<String, String>,
}

pub fn parse_cef(line: &str) -> CefLine {
    let rest = line
        .strip_prefix("CEF:")
        .unwrap_or_else(|| panic!("not CEF: {line}"));
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = rest.chars();
    while header.len() < 7 {
        match chars.next() {
            Some('\\') => match chars.next() {
                Some(c @ ('\\' | '|')) => field.push(c),
                other => panic!("bad header escape \\{other:?} in {line}"),
            },
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
            None => panic!("CEF header has fewer than 8 fields: {line}"),
        }
    }
    let ext: Vec<char> = chars.collect();
    // Unescaped `=` positions; each key is the word before it.
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < ext.len() {
        match ext[i] {
            '\\' => i += 2,
            '=' => {
                eqs.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut pairs = BTreeMap::new();
    let key_start = |eq: usize| {
        let mut s = eq;
        while s > 0 && ext[s - 1] != ' ' {
            s -= 1;
        }
        s
    };
    for (n, &eq) in eqs.iter().enumerate() {
        let key: String = ext[key_start(eq)..eq].iter().collect();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "bad extension key {key:?} in {line}"
        );
        let end = match eqs.get(n + 1) {
            Some(&next) => key_start(next) - 1,
            None => ext.len(),
        };
        let raw = &ext[eq + 1..end];
        let mut value = String::new();
        let mut j = 0;
        while j < raw.len() {
            if raw[j] == '\\' {
                value.push(match raw.get(j + 1) {
                    Some('\\') => '\\',
                    Some('=') => '=',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    other => panic!("bad extension escape \\{other:?} in {line}"),
                });
                j += 2;
            } else {
                value.push(raw[j]);
                j += 1;
            }
        }
        assert!(
            pairs.insert(key.clone(), value).is_none(),
            "{key} twice in {line}"
        );
    }
    CefLine { header, ext: pairs }
}

/// A CEF export against the store's rows, field by field along README's mapping.
pub fn check_cef(text: &str, want: &[Row]) {
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        want.len(),
        "one line per entry, no raw line break inside"
    );
    assert!(!text.contains('\r'), "no raw carriage return");
    for (line, r) in lines.iter().zip(want) {
        let c = parse_cef(line);
        let h = &c.header;
        assert_eq!(&h[..3], ["0", "pgtrail", "pgtrail"], "{line}");
        assert_eq!(h[3], env!("CARGO_PKG_VERSION"));
        let severity = match r.action.as_str() {
            "INSERT" => "3",
            "UPDATE" => "4",
            "EVENT" => "5",
            "DELETE" => "6",
            "DDL" => "7",
            "TRUNCATE" => "8",
            a => panic!("unexpected action {a}"),
        };
        assert_eq!(h[6], severity, "{line}");
        let table = format!("{}.{}", r.schema, r.table);
        if r.action == "EVENT" {
            assert_eq!(
                h[4],
                format!("EVENT:{}", r.json("details")["event"].as_str().unwrap())
            );
            assert_eq!(Some(h[5].clone()), r.context("remarks"));
        } else {
            assert_eq!(h[4], r.action);
            assert_eq!(
                h[5],
                format!("{} {table}", r.action).replace(['\n', '\r'], " ")
            );
        }
        let e = &c.ext;
        let get = |k: &str| e.get(k).map(String::as_str);
        assert_eq!(
            get("rt"),
            Some(r.committed_at.timestamp_millis().to_string().as_str())
        );
        assert_eq!(get("externalId"), Some(r.id.to_string().as_str()));
        assert_eq!(get("act"), Some(r.action.as_str()));
        assert_eq!(
            get("suser").map(str::to_owned),
            r.context("actor").or(r.context("db_user")),
            "{line}"
        );
        match r.context("client_addr") {
            Some(a) if a.contains(':') => {
                assert_eq!(get("c6a2"), Some(a.as_str()));
                assert_eq!(get("src"), None);
            }
            a => assert_eq!(get("src").map(str::to_owned), a, "{line}"),
        }
        for (key, field) in [
            ("sproc", "application_name"),
            ("msg", "remarks"),
            ("sourceServiceName", "source"),
            ("flexString2", "db_user"),
            ("spid", "backend_pid"),
            ("spt", "client_port"),
        ] {
            assert_eq!(
                get(key).map(str::to_owned),
                r.context(field),
                "{key} of {line}"
            );
        }
        assert_eq!(get("cn1").map(|x| x.parse::<i64>().unwrap()), r.xid);
        assert_eq!(get("cn1Label").is_some(), r.xid.is_some());
        assert_eq!(get("flexString1"), r.lsn.as_deref());
        assert_eq!(get("cs1"), Some(table.as_str()));
        assert_eq!(get("cs1Label"), Some("table"));
        for (key, label, field) in [
            ("cs2", "primaryKey", "primary_key"),
            ("cs3", "changedColumns", "changed_columns"),
            ("cs4", "before", "before"),
            ("cs5", "after", "after"),
            ("cs6", "details", "details"),
        ] {
            // The stored JSON text, exactly.
            let i = JSON_FIELDS.iter().position(|f| *f == field).unwrap();
            let stored = r.json[i].as_deref().filter(|t| *t != "null");
            assert_eq!(get(key), stored, "{key} of {line}");
            assert_eq!(get(&format!("{key}Label")), stored.map(|_| label));
        }
    }
}

/// An XLSX export against the store's rows: typed cells, one sheet, frozen header, filters.
pub fn check_xlsx(bytes: &[u8], want: &[Row]) {
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(Cursor::new(bytes)).expect("a workbook calamine can read");
    assert_eq!(book.sheet_names(), ["entries"]);
    let range = book.worksheet_range("entries").unwrap();
    let rows: Vec<&[Data]> = range.rows().collect();
    assert_eq!(rows.len(), want.len() + 1, "header + one row per entry");
    let header: Vec<String> = rows[0].iter().map(|c| c.to_string()).collect();
    assert_eq!(header, EXPORT_FIELDS);
    for (cells, r) in rows[1..].iter().zip(want) {
        assert_eq!(cells[0], Data::Float(r.id as f64), "id is a number");
        match &cells[1] {
            Data::DateTime(t) => {
                let at = t.as_datetime().expect("a date").and_utc();
                let diff = (at - r.committed_at).num_microseconds().unwrap().abs();
                assert!(
                    diff < 1000,
                    "committed_at to the millisecond: {at} vs {}",
                    r.committed_at
                );
            }
            other => panic!("committed_at is not a date: {other:?}"),
        }
        match r.xid {
            Some(x) => assert_eq!(cells[2], Data::Float(x as f64), "xid is a number"),
            None => assert_eq!(cells[2], Data::Empty),
        }
        let text = |d: &Data| match d {
            Data::String(s) => Some(s.clone()),
            Data::Empty => None,
            other => panic!("expected text, got {other:?}"),
        };
        assert_eq!(text(&cells[3]), r.lsn);
        assert_eq!(text(&cells[4]).as_deref(), Some(r.schema.as_str()));
        assert_eq!(text(&cells[5]).as_deref(), Some(r.table.as_str()));
        assert_eq!(text(&cells[6]).as_deref(), Some(r.action.as_str()));
        for (i, f) in JSON_FIELDS.iter().enumerate() {
            let cell = text(&cells[7 + i]);
            match (&r.json[i], cell) {
                (None, c) => assert_eq!(c, None, "{f}"),
                (Some(stored), Some(c)) if stored.encode_utf16().count() > 32_767 => {
                    assert_eq!(c.encode_utf16().count(), 32_767, "{f} cut to a cell");
                    assert!(
                        c.ends_with("the full value is in the JSON Lines or CSV export]"),
                        "{f}"
                    );
                    let kept = c.split("… [cut at").next().unwrap();
                    assert!(
                        stored.starts_with(kept),
                        "{f}: the cut value is the start of the stored one"
                    );
                }
                (Some(stored), Some(c)) => assert_eq!(&c, stored, "{f} of entry {}", r.id),
                (Some(_), None) => panic!("{f} of entry {} missing", r.id),
            }
        }
    }
    // Frozen header row and an autofilter over the whole table, from the sheet's XML.
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut xml = String::new();
    zip.by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    assert!(
        xml.contains(r#"ySplit="1""#) && xml.contains(r#"state="frozen""#),
        "frozen header row"
    );
    assert!(
        xml.contains(&format!(r#"<autoFilter ref="A1:M{}"/>"#, want.len() + 1)),
        "autofilter over the data"
    );
}

/// Decrypts an age file with `identity`.
pub fn decrypt(bytes: &[u8], identity: &age::x25519::Identity) -> Vec<u8> {
    let d = age::Decryptor::new(bytes).expect("an age file");
    let mut out = Vec::new();
    d.decrypt(std::iter::once(identity as &dyn age::Identity))
        .expect("decrypts with the identity")
        .read_to_end(&mut out)
        .unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Hostile values captured for real: a table named with a pipe, an equals sign and a newline;
/// values with every character CEF and CSV escape; unicode; one value longer than a cell.
pub async fn hostile_entries(env: &TestEnv) {
    let src = env.source().await;
    src.batch_execute(
        r#"CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, doc jsonb);
           CREATE TABLE "we|ird=na\me
x" (id int PRIMARY KEY, v text);"#,
    )
    .await
    .unwrap();
    env.setup().await;
}

pub async fn write_hostile_changes(env: &TestEnv) {
    let src = env.source().await;
    let long = "L".repeat(40_000);
    src.batch_execute(&format!(
        r#"INSERT INTO t VALUES (1, 'pipe | equals = backslash \ end', 1.50, '{{"k": "a=b|c\\d"}}');
           INSERT INTO t VALUES (2, E'line one\nline two\r\nthree "quoted", comma', 2, NULL);
           INSERT INTO t VALUES (3, 'Zürich — 東京 😀 ½', 3, '[1, "ü"]');
           INSERT INTO t VALUES (4, '{long}', 4, NULL);
           BEGIN;
           SET LOCAL pgtrail.actor = 'al|ice=\ "admin"';
           SET LOCAL pgtrail.remarks = E'ticket 7\nsecond line = yes';
           SET LOCAL pgtrail.source = 'batch|job';
           UPDATE t SET v = 'changed = now' WHERE id = 1;
           DELETE FROM t WHERE id = 2;
           COMMIT;
           INSERT INTO "we|ird=na\me
x" VALUES (1, 'x');
           TRUNCATE "we|ird=na\me
x";"#
    ))
    .await
    .unwrap();
}

/// An IPv6 client event, as pgtrail records its own (sign-ins and the like).
pub async fn record_ipv6_event(store: &Client) {
    let ev = pgtrail::store::events::OwnEvent::new(
        pgtrail::store::events::Category::Session,
        "sign_in",
        "pgtrail web",
        "signed in | from = afar",
    )
    .actor("bob=\\|")
    .client_addr(Some("2001:db8::7".into()));
    pgtrail::store::events::record(store, &ev).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_every_format_read_back_and_recorded() {
    let env = TestEnv::start().await;
    hostile_entries(&env).await;
    let mut daemon = env.spawn();
    write_hostile_changes(&env).await;
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    record_ipv6_event(&store).await;
    let me = os_user_name();
    let dir = env.trail.dir().to_owned();
    let path = |name: &str| dir.join(name).display().to_string();

    let cases: [(&str, &[&str]); 5] = [
        ("jsonl", &[]),
        ("csv", &[]),
        ("csv", &["--bom"]),
        ("cef", &[]),
        ("xlsx", &[]),
    ];
    for (format, extra) in cases {
        // Everything stored so far, including the events of the exports before this one.
        let want = rows_where(&store, "true").await;
        assert!(want.iter().any(|r| r.table.contains('|')));
        let events_before = export_events(&store).await.len();
        let out = path(&format!("all-{format}{}", extra.len()));
        let mut args = vec!["export", "--format", format, "--out", &out];
        args.extend_from_slice(extra);
        env.trail.cli(&args).await.assert_success();
        let bytes = std::fs::read(&out).unwrap();
        match format {
            "jsonl" => check_jsonl(std::str::from_utf8(&bytes).unwrap(), &want),
            "csv" => check_csv(&bytes, &want, !extra.is_empty()),
            "cef" => check_cef(std::str::from_utf8(&bytes).unwrap(), &want),
            "xlsx" => check_xlsx(&bytes, &want),
            _ => unreachable!(),
        }
        let events = export_events(&store).await;
        assert_eq!(events.len(), events_before + 1, "one event per export");
        let ev = events.last().unwrap();
        assert_export_event(ev, format, json!({}), want.len(), false, true);
        assert_eq!(ev.json("details")["bom"], !extra.is_empty());
        assert_eq!(ev.json("details")["destination"], out.as_str());
        assert_eq!(ev.context("actor"), Some(me.clone()), "the OS user");
        assert_eq!(
            ev.context("application_name").as_deref(),
            Some("pgtrail cli")
        );
        assert!(ev.id > want.last().unwrap().id, "written after the export");
    }

    // Standard output carries the text formats; an XLSX needs --out.
    let want = rows_where(&store, "true").await;
    let out = env.trail.cli(&["export", "--format", "cef"]).await;
    out.assert_success();
    check_cef(&out.stdout, &want);
    assert_eq!(
        export_events(&store).await.last().unwrap().json("details")["destination"],
        "stdout"
    );
    let events_before = export_events(&store).await.len();
    env.trail
        .cli(&["export", "--format", "xlsx"])
        .await
        .assert_clean_failure(&["--out"], std::time::Duration::from_secs(10));
    env.trail
        .cli(&["export", "--format", "jsonl", "--bom"])
        .await
        .assert_clean_failure(&["--bom", "csv"], std::time::Duration::from_secs(10));
    assert_eq!(
        export_events(&store).await.len(),
        events_before,
        "a refused request exports nothing and records nothing"
    );

    // Filters: --action, --actor, --table (repeatable) and time bounds, in CEF and XLSX.
    let t_updates =
        "schema_name = 'public' AND table_name = 't' AND action IN ('UPDATE', 'DELETE')";
    let want = rows_where(&store, t_updates).await;
    assert_eq!(want.len(), 2);
    let out = path("filtered.cef");
    env.trail
        .cli(&[
            "export", "--format", "cef", "--table", "public.t", "--action", "update", "--action",
            "DELETE", "--out", &out,
        ])
        .await
        .assert_success();
    check_cef(&std::fs::read_to_string(&out).unwrap(), &want);
    assert_export_event(
        export_events(&store).await.last().unwrap(),
        "cef",
        json!({"action": ["UPDATE", "DELETE"], "table": ["public.t"]}),
        2,
        false,
        true,
    );
    let want = rows_where(&store, "context->>'actor' = 'al|ice=\\ \"admin\"'").await;
    assert_eq!(want.len(), 2, "the update and the delete");
    let out = path("actor.xlsx");
    env.trail
        .cli(&[
            "export",
            "--format",
            "xlsx",
            "--actor",
            "al|ice=\\ \"admin\"",
            "--out",
            &out,
        ])
        .await
        .assert_success();
    check_xlsx(&std::fs::read(&out).unwrap(), &want);
    let since = want[0].committed_at.to_rfc3339();
    let until = (want[0].committed_at + chrono::Duration::hours(1)).to_rfc3339();
    let want = rows_where(
        &store,
        &format!("committed_at >= '{since}' AND committed_at < '{until}' AND action <> 'EVENT'"),
    )
    .await;
    let out = path("since.jsonl");
    env.trail
        .cli(&[
            "export", "--format", "jsonl", "--since", &since, "--until", &until, "--action",
            "INSERT", "--action", "UPDATE", "--action", "DELETE", "--action", "TRUNCATE",
            "--action", "DDL", "--out", &out,
        ])
        .await
        .assert_success();
    check_jsonl(&std::fs::read_to_string(&out).unwrap(), &want);
    let ev = export_events(&store).await;
    let filters = &ev.last().unwrap().json("details")["filters"];
    assert_eq!(
        filters["action"],
        json!(["INSERT", "UPDATE", "DELETE", "TRUNCATE", "DDL"])
    );
    assert!(
        filters["from"].is_string() && filters["to"].is_string(),
        "{filters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_is_recorded_as_incomplete() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    // Enough entries that the output overflows the write buffer many times.
    store
        .batch_execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, after, context) \
             SELECT now(), 1000 + g, '0/1'::pg_lsn, 'public', 'bulk', 'INSERT', \
                    json_build_object('id', g, 'pad', repeat('x', 200)), '{\"actor\": null}'::json \
             FROM generate_series(1, 5000) g",
        )
        .await
        .unwrap();
    // /dev/full accepts the open and fails every write with ENOSPC.
    let out = env
        .trail
        .cli(&["export", "--format", "csv", "--out", "/dev/full"])
        .await;
    out.assert_clean_failure(
        &["no space left", "incomplete", "recorded"],
        std::time::Duration::from_secs(60),
    );
    let events = export_events(&store).await;
    assert_eq!(events.len(), 1, "the failed export is recorded once");
    let ev = &events[0];
    assert_export_event(
        ev,
        "csv",
        json!({}),
        ev.json("details")["entries"].as_u64().unwrap() as usize,
        false,
        false,
    );
    let written = ev.json("details")["entries"].as_u64().unwrap();
    assert!(written < 5000, "failed part way: {written} entries");
    assert!(
        ev.json("details")["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("no space left"),
        "{}",
        ev.json("details")
    );
    assert!(ev.context("remarks").unwrap().contains("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_exports_decrypt_and_encryption_can_be_required() {
    let identity = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let recipients = format!(
        "\n[export]\nage_recipients = [{}, {}]\n",
        toml_str(&identity.to_public().to_string()),
        toml_str(&other.to_public().to_string())
    );
    let mut env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = recipients.clone()
    })
    .await;
    hostile_entries(&env).await;
    let mut daemon = env.spawn();
    write_hostile_changes(&env).await;
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    let dir = env.trail.dir().to_owned();

    for format in ["csv", "jsonl", "cef", "xlsx"] {
        let want = rows_where(&store, "true").await;
        let asked = dir.join(format!("enc.{format}"));
        env.trail
            .cli(&[
                "export",
                "--format",
                format,
                "--out",
                &asked.display().to_string(),
            ])
            .await
            .assert_success();
        assert!(!asked.exists(), "the plain name is not written");
        let file = dir.join(format!("enc.{format}.age"));
        let sealed = std::fs::read(&file).expect(".age appended");
        assert!(
            sealed.starts_with(b"age-encryption.org/v1\n"),
            "an age file"
        );
        for id in [&identity, &other] {
            let plain = decrypt(&sealed, id);
            match format {
                "csv" => check_csv(&plain, &want, false),
                "jsonl" => check_jsonl(std::str::from_utf8(&plain).unwrap(), &want),
                "cef" => check_cef(std::str::from_utf8(&plain).unwrap(), &want),
                _ => check_xlsx(&plain, &want),
            }
        }
        let ev = export_events(&store).await.pop().unwrap();
        assert_export_event(&ev, format, json!({}), want.len(), true, true);
        assert_eq!(
            ev.json("details")["destination"],
            file.display().to_string()
        );
    }
    // A name that already ends in .age is kept.
    let named = dir.join("named.age");
    env.trail
        .cli(&[
            "export",
            "--format",
            "csv",
            "--out",
            &named.display().to_string(),
        ])
        .await
        .assert_success();
    assert!(decrypt(&std::fs::read(&named).unwrap(), &identity).starts_with(b"id,"));

    // Not required: --no-encrypt gives a plain file, recorded as such.
    let plain_path = dir.join("plain.csv");
    env.trail
        .cli(&[
            "export",
            "--format",
            "csv",
            "--no-encrypt",
            "--out",
            &plain_path.display().to_string(),
        ])
        .await
        .assert_success();
    let want = rows_where(
        &store,
        &format!("id < {}", export_events(&store).await.last().unwrap().id),
    )
    .await;
    check_csv(&std::fs::read(&plain_path).unwrap(), &want, false);
    let ev = export_events(&store).await.pop().unwrap();
    assert_eq!(ev.json("details")["encrypted"], false);

    // Required: no way out.
    let mut config = env.trail.config.clone();
    config.extra_toml = format!("{recipients}require_encryption = true\n");
    env.trail.rewrite(config);
    let events_before = export_events(&store).await.len();
    let refused = dir.join("refused.csv");
    env.trail
        .cli(&[
            "export",
            "--format",
            "csv",
            "--no-encrypt",
            "--out",
            &refused.display().to_string(),
        ])
        .await
        .assert_clean_failure(
            &["require_encryption", "--no-encrypt"],
            std::time::Duration::from_secs(10),
        );
    assert!(!refused.exists());
    assert_eq!(export_events(&store).await.len(), events_before);
    let still = dir.join("still.csv");
    env.trail
        .cli(&[
            "export",
            "--format",
            "csv",
            "--out",
            &still.display().to_string(),
        ])
        .await
        .assert_success();
    assert!(
        decrypt(&std::fs::read(dir.join("still.csv.age")).unwrap(), &other).starts_with(b"id,")
    );

    // Required without recipients is a config error that names the key.
    let mut config = env.trail.config.clone();
    config.extra_toml = "\n[export]\nrequire_encryption = true\n".into();
    env.trail.rewrite(config);
    env.trail
        .cli(&["export", "--format", "csv"])
        .await
        .assert_clean_failure(
            &["export.require_encryption", "age_recipients"],
            std::time::Duration::from_secs(10),
        );
    // And a recipient that is not one.
    let mut config = env.trail.config.clone();
    config.extra_toml = "\n[export]\nage_recipients = [\"age1notakey\"]\n".into();
    env.trail.rewrite(config);
    env.trail
        .cli(&["export", "--format", "csv"])
        .await
        .assert_clean_failure(
            &["export.age_recipients", "age1notakey"],
            std::time::Duration::from_secs(10),
        );
    assert!(Path::new(&dir).exists());
}
