//! `pgtrail export`: jsonl lines carry exactly the store's entries in commit order with the
//! fields in the documented order and shapes; csv has the same fields and values; `--table`,
//! `--since` and `--until` filter; `--out FILE` writes what stdout would have shown. Every export
//! records an EVENT entry (`pgtrail.export`) after it has run, so an export without an upper time
//! bound also holds the events of the exports before it: [`row_changes`] sets them apart.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::harness::*;

const CONTEXT_KEYS: [&str; 6] = [
    "db_user",
    "client_addr",
    "application_name",
    "actor",
    "source",
    "remarks",
];

fn rfc3339_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A time strictly between two distinct commit times (microsecond resolution).
fn between(a: DateTime<Utc>, b: DateTime<Utc>) -> DateTime<Utc> {
    let (a, b) = (a.timestamp_micros(), b.timestamp_micros());
    assert!(b - a >= 2, "commit times too close to split: {a} {b}");
    DateTime::from_timestamp_micros(a + (b - a) / 2).unwrap()
}

/// Check an export line against the store's entry, field by field.
fn assert_line_matches(l: &ExportLine, e: &Entry) {
    assert_eq!(l.fields.keys(), EXPORT_FIELDS, "field order: {}", l.raw);
    let v = &l.value;
    assert_eq!(v["id"].as_i64(), Some(e.id), "{}", l.raw);
    assert_eq!(
        v["committed_at"].as_str(),
        Some(
            e.committed_at
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .as_str()
        ),
        "committed_at as RFC 3339 UTC with microseconds: {}",
        l.raw
    );
    assert_eq!(v["xid"].as_i64(), Some(e.xid), "{}", l.raw);
    assert_eq!(v["lsn"].as_str(), Some(e.lsn.as_str()), "{}", l.raw);
    assert_eq!(v["schema"].as_str(), Some(e.schema.as_str()), "{}", l.raw);
    assert_eq!(v["table"].as_str(), Some(e.table.as_str()), "{}", l.raw);
    assert_eq!(v["action"].as_str(), Some(e.action.as_str()), "{}", l.raw);
    assert_eq!(v["primary_key"], e.primary_key, "{}", l.raw);
    assert_eq!(v["before"], e.before, "{}", l.raw);
    assert_eq!(v["after"], e.after, "{}", l.raw);
    assert_eq!(v["changed_columns"], e.changed_columns, "{}", l.raw);
    assert_eq!(v["context"], e.context, "{}", l.raw);
    assert_eq!(v["details"], e.details, "{}", l.raw);
    let ctx = v["context"]
        .as_object()
        .unwrap_or_else(|| panic!("context is not an object: {}", l.raw));
    for k in CONTEXT_KEYS {
        assert!(ctx.contains_key(k), "context lacks {k}: {}", l.raw);
    }
}

/// The lines that are row changes, not pgtrail's own events (the earlier exports' records).
fn row_changes(lines: &[ExportLine]) -> Vec<&ExportLine> {
    lines
        .iter()
        .filter(|l| l.value["action"] != "EVENT")
        .collect()
}

/// The ids of the export events stored now.
async fn export_event_ids(store: &tokio_postgres::Client) -> Vec<i64> {
    query_ids(
        store,
        "SELECT id FROM pgtrail.entries WHERE action = 'EVENT' AND table_name = 'export' ORDER BY id",
    )
    .await
}

fn ids(lines: &[ExportLine]) -> Vec<i64> {
    lines.iter().map(ExportLine::id).collect()
}

fn entry_ids<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<i64> {
    entries.into_iter().map(|e| e.id).collect()
}

/// Three batches of changes, each synced, so that their commit times are apart; the ids of
/// each batch's entries.
async fn three_batches(
    env: &TestEnv,
    src: &tokio_postgres::Client,
    store: &tokio_postgres::Client,
) -> Vec<Vec<i64>> {
    let mut batch_ids: Vec<Vec<i64>> = Vec::new();
    for sql in [
        "INSERT INTO a VALUES (1, 'one'), (2, 'two, with \"quotes\"\nand a newline'), (3, 'three'); INSERT INTO b VALUES (1, 1.5), (2, 2);",
        "BEGIN; UPDATE a SET v = 'uno' WHERE id = 1; DELETE FROM b WHERE id = 2; COMMIT; UPDATE a SET v = 'dos' WHERE id = 2;",
        "INSERT INTO a VALUES (4, 'four'); TRUNCATE b;",
    ] {
        let before = entry_count(store).await;
        let before_max: i64 =
            query_value(store, "SELECT coalesce(max(id), 0) FROM pgtrail.entries", &[]).await;
        src.batch_execute(sql).await.unwrap();
        env.sync().await;
        batch_ids.push(
            query_column(
                store,
                "SELECT id FROM pgtrail.entries WHERE id > $1 AND table_name <> $2 ORDER BY id",
                &[&before_max, &MARKER_TABLE],
            )
            .await,
        );
        assert!(entry_count(store).await > before);
    }
    batch_ids
}

/// Everything, in id (= commit) order, each line equal to its entry; and `--table`. The lines
/// of everything.
async fn everything_and_one_table(env: &TestEnv, all: &[Entry]) -> Vec<ExportLine> {
    let lines = env.trail.export_jsonl(&[]).await;
    assert_eq!(
        ids(&lines),
        entry_ids(all),
        "export without filters = every entry in id order"
    );
    for (l, e) in lines.iter().zip(all) {
        assert_line_matches(l, e);
    }

    // --table
    let only_a = env.trail.export_jsonl(&["--table", "public.a"]).await;
    assert_eq!(
        ids(&only_a),
        entry_ids(all.iter().filter(|e| e.table == "a"))
    );
    let none = env
        .trail
        .export_jsonl(&["--table", "public.nosuchtable"])
        .await;
    assert!(none.is_empty());

    lines
}

/// `--since`/`--until` around the second batch: bounds strictly between commit times, so
/// inclusivity does not matter. The bounds.
async fn a_closed_time_window(
    env: &TestEnv,
    all: &[Entry],
    batch_ids: &[Vec<i64>],
) -> (DateTime<Utc>, DateTime<Utc>) {
    let by_id = |id: i64| all.iter().find(|e| e.id == id).unwrap();
    let first2 = by_id(batch_ids[1][0]);
    let last2 = by_id(*batch_ids[1].last().unwrap());
    let prev = all
        .iter()
        .filter(|e| e.committed_at < first2.committed_at)
        .map(|e| e.committed_at)
        .max()
        .unwrap();
    let next = all
        .iter()
        .filter(|e| e.committed_at > last2.committed_at)
        .map(|e| e.committed_at)
        .min()
        .unwrap();
    let since = between(prev, first2.committed_at);
    let until = between(last2.committed_at, next);
    let (since_s, until_s) = (rfc3339_micros(since), rfc3339_micros(until));
    let window = env
        .trail
        .export_jsonl(&["--since", &since_s, "--until", &until_s])
        .await;
    let want: Vec<i64> = entry_ids(
        all.iter()
            .filter(|e| e.committed_at >= since && e.committed_at < until),
    );
    assert_eq!(ids(&window), want, "--since {since_s} --until {until_s}");
    assert!(batch_ids[1].iter().all(|id| want.contains(id)));
    assert!(!want.contains(&batch_ids[0][0]) && !want.contains(&batch_ids[2][0]));

    (since, until)
}

/// Open-ended: the row changes since, then the events of the exports so far; an offset other
/// than Z means the same instant.
async fn open_ended_windows(
    env: &TestEnv,
    store: &tokio_postgres::Client,
    all: &[Entry],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) {
    let (since_s, until_s) = (rfc3339_micros(since), rfc3339_micros(until));
    let events = export_event_ids(store).await;
    let from = env.trail.export_jsonl(&["--since", &since_s]).await;
    let mut want = entry_ids(all.iter().filter(|e| e.committed_at >= since));
    want.extend(&events);
    assert_eq!(ids(&from), want);
    assert!(events.iter().all(|id| *id > all.last().unwrap().id));
    let to = env.trail.export_jsonl(&["--until", &until_s]).await;
    assert_eq!(
        ids(&to),
        entry_ids(all.iter().filter(|e| e.committed_at < until))
    );
    let a_from = env
        .trail
        .export_jsonl(&["--table", "public.a", "--since", &since_s])
        .await;
    assert_eq!(
        ids(&a_from),
        entry_ids(
            all.iter()
                .filter(|e| e.table == "a" && e.committed_at >= since)
        )
    );
    // An offset other than Z means the same instant.
    let since_offset = since
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Micros, false);
    let from_offset = env.trail.export_jsonl(&["--since", &since_offset]).await;
    assert_eq!(
        ids(&from_offset[..from.len()]),
        ids(&from),
        "--since {since_offset}"
    );
    assert_eq!(
        ids(&from_offset[from.len()..]),
        export_event_ids(store).await[events.len()..from_offset.len() - from.len() + events.len()],
        "then the events of the exports after the first --since"
    );
}

/// `--out FILE` writes the same lines, then the events of the exports before it.
async fn out_file_holds_the_same_lines(
    env: &TestEnv,
    store: &tokio_postgres::Client,
    lines: &[ExportLine],
) {
    let out_path = env.trail.dir().join("export.jsonl");
    env.trail
        .export_to("jsonl", &out_path, &[])
        .await
        .assert_success();
    let written = std::fs::read_to_string(&out_path).expect("--out file");
    let written = parse_jsonl(&written);
    assert_eq!(
        row_changes(&written)
            .iter()
            .map(|l| l.raw.clone())
            .collect::<Vec<_>>(),
        lines.iter().map(|l| l.raw.clone()).collect::<Vec<_>>()
    );
    let events = export_event_ids(store).await;
    assert_eq!(
        ids(&written[lines.len()..]),
        events[..events.len() - 1],
        "then the events of the exports before it"
    );
}

/// csv: same fields, same values; `--table` filters it too.
async fn csv_has_the_same_fields_and_values(env: &TestEnv, lines: &[ExportLine], all: &[Entry]) {
    let out = env.trail.cli(&["export", "--format", "csv"]).await;
    out.assert_success();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(out.stdout.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .expect("csv header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(headers, EXPORT_FIELDS, "csv header");
    let records: Vec<csv::StringRecord> = reader
        .records()
        .map(|r| r.expect("csv record"))
        .filter(|r| r.get(6) != Some("EVENT"))
        .collect();
    assert_eq!(records.len(), lines.len(), "csv rows");
    let json_cell = |s: &str| -> Value {
        if s.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(s).unwrap_or_else(|e| panic!("csv JSON cell ({e}): {s}"))
        }
    };
    for (r, l) in records.iter().zip(lines) {
        let v = &l.value;
        let cell = |name: &str| {
            r.get(EXPORT_FIELDS.iter().position(|f| *f == name).unwrap())
                .unwrap()
        };
        assert_eq!(cell("id").parse::<i64>().ok(), v["id"].as_i64());
        assert_eq!(cell("xid").parse::<i64>().ok(), v["xid"].as_i64());
        let t = DateTime::parse_from_rfc3339(cell("committed_at"))
            .unwrap_or_else(|e| panic!("csv committed_at ({e}): {r:?}"));
        assert_eq!(
            Some(t.with_timezone(&Utc)),
            v["committed_at"]
                .as_str()
                .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
        );
        for f in ["lsn", "schema", "table", "action"] {
            assert_eq!(Some(cell(f)), v[f].as_str(), "csv {f}: {r:?}");
        }
        for f in JSON_FIELDS {
            assert_eq!(json_cell(cell(f)), v[f], "csv {f}: {r:?}");
        }
    }
    let out = env
        .trail
        .cli(&["export", "--format", "csv", "--table", "public.b"])
        .await;
    out.assert_success();
    let n = csv::Reader::from_reader(out.stdout.as_bytes())
        .records()
        .count();
    assert_eq!(n, all.iter().filter(|e| e.table == "b").count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_jsonl_csv_and_filters() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE a (id int PRIMARY KEY, v text); ALTER TABLE a REPLICA IDENTITY FULL;
         CREATE TABLE b (id int PRIMARY KEY, n numeric(6,2)); ALTER TABLE b REPLICA IDENTITY FULL;",
    )
    .await;
    let store = env.store().await;

    let batch_ids = three_batches(&env, &src, &store).await;
    let all = entries(&store).await;
    let lines = everything_and_one_table(&env, &all).await;
    let (since, until) = a_closed_time_window(&env, &all, &batch_ids).await;
    open_ended_windows(&env, &store, &all, since, until).await;
    out_file_holds_the_same_lines(&env, &store, &lines).await;
    csv_has_the_same_fields_and_values(&env, &lines, &all).await;

    daemon.terminate().await;
}
