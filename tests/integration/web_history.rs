//! Row history as a timeline of states, on a real capture: a row inserted, updated twice,
//! deleted and inserted again, each by another actor. The timeline lists every version in
//! order with who made it; "as of" a time between the steps shows exactly the row the source
//! held then (unknown before the first, not existing after the DELETE); and the revert SQL
//! for a past state, run on the source, gives that state back.

use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// The row as the source holds it now (`None`: no row); numeric as its exact text, as the store keeps it.
async fn row(src: &Client) -> Option<Value> {
    src.query_opt(
        "SELECT jsonb_build_object('id', id, 'owner', owner, 'balance', balance::text, 'prefs', prefs) \
         FROM accounts WHERE id = 1",
        &[],
    )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// The source's clock now, RFC 3339 in UTC with microseconds.
async fn clock(src: &Client) -> String {
    src.query_one(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// One step of the row's life: its actor and statement, run in a transaction of its own.
const STEPS: [(&str, &str); 5] = [
    (
        "alice",
        r#"INSERT INTO accounts OVERRIDING SYSTEM VALUE VALUES (1, 'Ada', 10.50, '{"tier": "gold", "tags": ["early"]}')"#,
    ),
    // A jsonb scalar: the revert SQL must write it as jsonb, not as an integer.
    (
        "bob",
        "UPDATE accounts SET balance = 99.99, prefs = '5' WHERE id = 1",
    ),
    (
        "carol",
        r#"UPDATE accounts SET owner = 'Ada L.', prefs = '{"tier": "platinum", "tags": ["early", "vip"]}' WHERE id = 1"#,
    ),
    ("dave", "DELETE FROM accounts WHERE id = 1"),
    (
        "erin",
        "INSERT INTO accounts OVERRIDING SYSTEM VALUE VALUES (1, 'Ada again', 0, NULL)",
    ),
];

/// What the test did: the source's clock before the first step and after each, and the row after each.
struct Life {
    before_all: String,
    times: Vec<String>,
    rows: Vec<Option<Value>>,
}

async fn live(src: &Client) -> Life {
    let before_all = clock(src).await;
    let mut times = Vec::new();
    let mut rows = Vec::new();
    for (actor, statement) in STEPS {
        src.batch_execute(&format!(
            "BEGIN; SET LOCAL pgtrail.actor = '{actor}'; {statement}; COMMIT;"
        ))
        .await
        .unwrap();
        rows.push(row(src).await);
        times.push(clock(src).await);
    }
    Life {
        before_all,
        times,
        rows,
    }
}

/// The history of the test's account as of `time`.
async fn as_of(web: &Web, time: &str) -> AsOf {
    as_of_in(web, "accounts", time).await
}

/// The "as of" section of a history page: its kind (`present`, `absent`, `unknown`), its
/// columns as (name, shown text), and its revert SQL.
struct AsOf {
    kind: String,
    columns: Vec<(String, String)>,
    sql: Option<String>,
    html: String,
}

/// The history of row 1 of `public.TABLE` as of `time`.
async fn as_of_in(web: &Web, table: &str, time: &str) -> AsOf {
    let html = web
        .page(&format!(
            "/history?table=public.{table}&pk=1&as_of={}",
            enc(time)
        ))
        .await;
    let at = html
        .find("<section class=\"asof ")
        .expect("an as-of section");
    let section = &html[at..at + html[at..].find("</section>").unwrap()];
    let kind = section["<section class=\"asof ".len()..]
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let columns = section
        .split("<tr class=\"col state-col\">")
        .skip(1)
        .map(|r| {
            let name_at = r.find("class=\"name\">").unwrap() + 13;
            let name = &r[name_at..name_at + r[name_at..].find('<').unwrap()];
            let v_at = r.find("<td class=\"value\">").unwrap() + 18;
            let cell = &r[v_at..r.find("</td>").unwrap()];
            // The value's element: <span class="v KIND">TEXT</span> or <pre …>TEXT</pre>.
            let start = cell.find('>').unwrap() + 1;
            let end = start + cell[start..].find("</").unwrap();
            (unescape(name), unescape(&cell[start..end]))
        })
        .collect();
    let sql = section
        .find("<pre id=\"restore-sql\" class=\"sql\">")
        .map(|s| {
            let rest = &section[s + "<pre id=\"restore-sql\" class=\"sql\">".len()..];
            unescape(&rest[..rest.find("</pre>").unwrap()])
        });
    AsOf {
        kind,
        columns,
        sql,
        html: section.to_owned(),
    }
}

/// A source row's columns as the state table shows them.
fn shown(row: &Value) -> Vec<(String, String)> {
    let columns = ["id", "owner", "balance", "prefs"];
    columns
        .iter()
        .map(|c| {
            let text = match &row[c] {
                Value::Null => "NULL".to_owned(),
                Value::String(s) => s.clone(),
                v @ Value::Object(_) => serde_json::to_string_pretty(v).unwrap(),
                v => v.to_string(),
            };
            (c.to_string(), text)
        })
        .collect()
}

/// The timeline: every version in order, numbered, with who made it.
async fn timeline(web: &Web, stored: &[Entry]) {
    let html = web.page("/history?table=public.accounts&pk=1").await;
    let items: Vec<&str> = html
        .split("<li class=\"hist-item\" id=\"e")
        .skip(1)
        .collect();
    let ids: Vec<i64> = items
        .iter()
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(ids, stored.iter().map(|e| e.id).collect::<Vec<_>>());
    for (n, (item, (actor, _))) in items.iter().zip(STEPS).enumerate() {
        let who_at = item.find("<span class=\"who\">").unwrap() + 18;
        assert!(
            item[who_at..].starts_with(actor),
            "version {} is by {actor}",
            n + 1
        );
        assert!(item.contains(&format!("<span class=\"ver\">v{}</span>", n + 1)));
        assert!(item.contains("The row as of this version"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_history_is_a_timeline_of_states() {
    let (env, src, _daemon) = TestEnv::capturing(
        // An identity key: putting a row back needs OVERRIDING SYSTEM VALUE.
        "CREATE TABLE accounts (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text, balance numeric(10,2), prefs jsonb);
         ALTER TABLE accounts REPLICA IDENTITY FULL;",
    )
    .await;
    let life = live(&src).await;
    env.sync().await;
    let store = env.store().await;
    let stored = table_entries(&store, "public", "accounts").await;
    assert_eq!(
        stored.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["INSERT", "UPDATE", "UPDATE", "DELETE", "INSERT"]
    );
    for (e, (actor, _)) in stored.iter().zip(STEPS) {
        assert_eq!(e.context["actor"], actor, "the store has who did each step");
    }
    let web = Web::start(&env).await;
    timeline(&web, &stored).await;

    // Before the first captured entry: unknown, and no SQL.
    let s = as_of(&web, &life.before_all).await;
    assert_eq!(s.kind, "unknown", "{}", s.html);
    assert!(s.sql.is_none() && s.html.contains("cannot say whether the row existed"));
    // After each step: exactly the row the source held then.
    for (i, (time, row)) in life.times.iter().zip(&life.rows).enumerate() {
        let s = as_of(&web, time).await;
        match row {
            Some(row) => {
                assert_eq!(s.kind, "present", "after step {}: {}", i + 1, s.html);
                assert_eq!(s.columns, shown(row), "after step {}", i + 1);
                assert!(s
                    .html
                    .contains(&format!("The row as entry {} ", stored[i].id)));
            }
            None => {
                assert_eq!(s.kind, "absent", "after step {}: {}", i + 1, s.html);
                assert!(s.html.contains("The row was deleted at"));
                assert!(s.columns.is_empty());
            }
        }
    }

    // The revert SQL of a past state, run on the source, gives that state back: the row as bob
    // left it (an update of the re-inserted row), then gone as after dave's DELETE, then as
    // carol left it (inserted again).
    for step in [1, 3, 2] {
        let sql = as_of(&web, &life.times[step])
            .await
            .sql
            .expect("revert SQL");
        src.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(row(&src).await, life.rows[step], "{sql}");
    }
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_takes_any_time_says_unknown_across_a_gap_and_refuses_a_bad_time() {
    let (_env, store, web) = store_and_web().await;
    let ids = store_entries(
        &store,
        &[Synth::new("public.t", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"v":"a"}"#)],
    )
    .await;
    let at: String = store
        .query_one(
            "SELECT to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pgtrail.entries WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    // At the entry's own time, and at the end of a day long after it: as the entry left it.
    for time in [at.as_str(), "2999-12-31"] {
        let s = as_of_in(&web, "t", time).await;
        assert_eq!(s.kind, "present", "{time}: {}", s.html);
        assert!(s.html.contains(&format!("The row as entry {} ", ids[0])));
    }
    // A time with an offset is read with it; before the first entry the state is unknown.
    let s = as_of_in(&web, "t", "2000-01-01T12:00:00+02:00").await;
    assert_eq!(s.kind, "unknown");
    assert!(s.html.contains("2000-01-01 10:00:00.000000 UTC"));

    // A slot lost a second after the entry, capture not resumed: pgtrail's gap event as the
    // daemon writes it, through record_event (which moves the events chain's head, as the web
    // view's reading of gaps relies on). From then on the row's state is not known, and the
    // timeline says so.
    store
        .execute(
            "SELECT pgtrail.record_event(now(), 'gap', NULL, NULL, NULL, NULL, '{\"source\": \"pgtrail\"}', \
             json_build_object('event', 'slot_lost', \
             'slot', 'pgtrail', 'found', 'the slot was invalidated', 'last_stored_lsn', '0/10', \
             'last_stored_commit', to_char((committed_at + interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), \
             NULL, NULL, sha256('a test gap'::bytea)) \
             FROM pgtrail.entries WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    let s = as_of_in(&web, "t", "2999-12-31").await;
    assert_eq!(s.kind, "unknown", "{}", s.html);
    assert!(s.html.contains("were not captured (an audit gap)") && s.sql.is_none());
    assert_eq!(
        as_of_in(&web, "t", &at).await.kind,
        "present",
        "before the gap it is known"
    );
    let timeline = web.page("/history?table=public.t&pk=1").await;
    assert!(
        timeline.contains("<li class=\"hist-gap gap\""),
        "{timeline}"
    );

    let (status, _, body) = web
        .fetch("/history?table=public.t&pk=1&as_of=yesterday")
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert!(
        unescape(&body).contains("as_of: \"yesterday\" is not a time"),
        "{body}"
    );
}
