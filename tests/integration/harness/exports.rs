//! For the export tests: the entries as stored, independent readers of every export format
//! that compare a file with them, the events exports leave, the test data (hostile values
//! captured for real, synthetic entries written straight into the store), and a watch on the
//! temporary directories an XLSX export makes.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use calamine::{Data, Reader};
use serde_json::Value;
use tokio_postgres::Client;

use pgtrail::export::ENTRY_COLUMNS;

use super::{TestEnv, EXPORT_FIELDS};

// ---------------------------------------------------------------------------------------------
// Entries as stored, and the events of exports
// ---------------------------------------------------------------------------------------------

/// One stored entry, read with pgtrail's own reader of `pgtrail.entries` (JSON columns as the
/// stored text; xid and lsn null for events). The export tests compare files with it; the reader
/// itself is checked by every capture test, which compares what it reads with the source.
pub type Row = pgtrail::export::StoredEntry;

/// The JSON fields of an entry, in [`EXPORT_FIELDS`] order.
pub const JSON_FIELDS: [&str; 6] = [
    EXPORT_FIELDS[7],
    EXPORT_FIELDS[8],
    EXPORT_FIELDS[9],
    EXPORT_FIELDS[10],
    EXPORT_FIELDS[11],
    EXPORT_FIELDS[12],
];

/// What the tests ask of a [`Row`].
pub trait RowExt {
    /// A JSON field parsed (`Value::Null` for SQL NULL).
    fn json(&self, name: &str) -> Value;
    /// A member of `context` as text (a string's content, else its JSON), `None` when null.
    fn context_of(&self, key: &str) -> Option<String>;
    /// `committed_at` as the spec writes it: RFC 3339, UTC, microseconds.
    fn time_text(&self) -> String;
}

impl RowExt for Row {
    fn json(&self, name: &str) -> Value {
        let i = JSON_FIELDS.iter().position(|f| *f == name).unwrap();
        match &self.json[i] {
            None => Value::Null,
            Some(t) => serde_json::from_str(t).unwrap(),
        }
    }

    fn context_of(&self, key: &str) -> Option<String> {
        match &self.json("context")[key] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }

    fn time_text(&self) -> String {
        self.committed_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }
}

/// Every entry matching `condition` (SQL, on `pgtrail.entries`), by id.
pub async fn rows_where(store: &Client, condition: &str) -> Vec<Row> {
    store
        .query(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE {condition} ORDER BY id"),
            &[],
        )
        .await
        .expect("read entries")
        .iter()
        .map(Row::from_row)
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
    assert_eq!(ev.context_of("source").as_deref(), Some("pgtrail"));
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
        assert_eq!(v["source"].as_str(), Some(r.source.as_str()), "{line}");
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
        assert_eq!(&rec[13], r.source, "{rec:?}");
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
            assert_eq!(Some(h[5].clone()), r.context_of("remarks"));
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
        assert_eq!(get("destinationServiceName"), Some(r.source.as_str()));
        assert_eq!(
            get("suser").map(str::to_owned),
            r.context_of("actor").or(r.context_of("db_user")),
            "{line}"
        );
        match r.context_of("client_addr") {
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
                r.context_of(field),
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
        assert_eq!(text(&cells[13]).as_deref(), Some(r.source.as_str()));
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
        xml.contains(&format!(r#"<autoFilter ref="A1:N{}"/>"#, want.len() + 1)),
        "autofilter over the data"
    );
}

/// An export in `format` (`jsonl`, `csv`, `cef`, `xlsx`) against the store's rows, by the
/// format's reader above; `bom` for a CSV that should start with one.
pub fn check_export(format: &str, bytes: &[u8], want: &[Row], bom: bool) {
    let text = || std::str::from_utf8(bytes).expect("a text export is UTF-8");
    match format {
        "jsonl" => check_jsonl(text(), want),
        "csv" => check_csv(bytes, want, bom),
        "cef" => check_cef(text(), want),
        "xlsx" => check_xlsx(bytes, want),
        other => panic!("no reader for the format {other:?}"),
    }
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
/// values with every character CEF and CSV escape; unicode; one value longer than a cell. Sets
/// the source up, runs the daemon until they are stored, stops it, and returns a store client.
pub async fn capture_hostile(env: &TestEnv) -> Client {
    create_hostile_tables(env).await;
    let mut daemon = env.spawn();
    write_hostile_changes(env).await;
    env.sync().await;
    daemon.terminate().await;
    env.store().await
}

async fn create_hostile_tables(env: &TestEnv) {
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

async fn write_hostile_changes(env: &TestEnv) {
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
// Synthetic entries, and the temporary directories of XLSX exports
// ---------------------------------------------------------------------------------------------

/// Inserts `n` synthetic UPDATE entries of table `public.<table>` into the store, one second
/// apart and ending now, about 500 bytes each as JSON Lines (a key, before and after images with
/// a note of 128 characters, one changed column, a context with an actor).
pub async fn bulk_entries(store: &Client, table: &str, n: i64) {
    store
        .execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, before, after, changed_columns, context, source) \
             SELECT now() - make_interval(secs => ($2::int - g)::float8), 5000 + g / 4, '0/1'::pg_lsn, 'public', $1, 'UPDATE', \
                    json_build_object('id', g), \
                    json_build_object('id', g, 'status', 'new', 'note', repeat(md5(g::text), 4)), \
                    json_build_object('id', g, 'status', 'paid', 'note', repeat(md5(g::text), 4)), \
                    '[\"status\"]'::json, \
                    json_build_object('db_user', 'app', 'client_addr', '10.0.0.7', 'actor', 'user' || (g % 97)), 1 \
             FROM generate_series(1, $2::int) g",
            &[&table, &(n as i32)],
        )
        .await
        .expect("insert synthetic entries");
}

/// What [`ScratchWatch`] saw: each directory that appeared in the watched directory, with its
/// permission bits, and how many of the files the process held open were inside one of them.
#[derive(Debug, Default, Clone)]
pub struct ScratchSeen {
    pub dirs: BTreeMap<PathBuf, u32>,
    pub open_files_inside: usize,
}

/// Looks at a directory every few milliseconds, from a thread of its own, until stopped: the
/// directories made in it and the files process `pid` holds open below it (from /proc/PID/fd;
/// a file created unlinked still shows its directory there).
pub struct ScratchWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ScratchSeen>,
}

impl ScratchWatch {
    pub fn start(base: &Path, pid: u32) -> ScratchWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let base = base.to_owned();
        let thread = std::thread::spawn(move || {
            let mut seen = ScratchSeen::default();
            let fds = format!("/proc/{pid}/fd");
            loop {
                let done = flag.load(Ordering::SeqCst);
                for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                    if let Ok(meta) = entry.metadata() {
                        if meta.is_dir() {
                            seen.dirs
                                .insert(entry.path(), meta.permissions().mode() & 0o7777);
                        }
                    }
                }
                let inside = std::fs::read_dir(&fds)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| {
                        target.starts_with(&base) && target.parent() != Some(base.as_path())
                    })
                    .count();
                seen.open_files_inside = seen.open_files_inside.max(inside);
                if done {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        ScratchWatch { stop, thread }
    }

    /// Stops watching (after one last look) and says what was seen.
    pub fn stop(self) -> ScratchSeen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the watch thread")
    }
}

/// The names in `dir`, for asserting that nothing is left there.
pub fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
