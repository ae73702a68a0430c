//! End to end: the real daemon on a real source, with the web view `pgtrail run` serves beside
//! capture. What it stored is checked as the web view shows it: the API is the export, byte for
//! byte; the captured context filters; diffs, history and transactions; every revert run on the
//! source undoes its entry; the live stream sends new entries; SIGTERM stops it all.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// The web view of `pgtrail run` (not a process of its own), read over HTTP.
struct Served {
    http: reqwest::Client,
    base: String,
}

impl Served {
    /// Waits until the daemon's web view answers.
    async fn wait(env: &TestEnv) -> Served {
        let http = http_client();
        let base = format!("http://{}", env.trail.config.web_listen);
        wait_until(
            "the web view of `pgtrail run` answers",
            Duration::from_secs(30),
            || async { http.get(&base).send().await.is_ok() },
        )
        .await;
        Served { http, base }
    }

    /// The body of `GET path`, which must answer 200.
    async fn get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        resp.text().await.unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).await).unwrap()
    }

    /// Ids of `GET /api/v1/entries?q` (one page).
    async fn ids(&self, q: &str) -> Vec<i64> {
        ids_of(&self.json(&format!("/api/v1/entries?{q}")).await)
    }
}

/// `items` in the source, captured by a running daemon that also serves the web view.
async fn capture_items(env: &TestEnv) -> (Client, Daemon, Served) {
    let src = env.source_with("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], doc jsonb, data bytea,
                             note text, seen timestamptz, ok boolean);
         ALTER TABLE items REPLICA IDENTITY FULL;").await;
    env.setup().await;
    let daemon = env.spawn();
    let served = Served::wait(env).await;
    (src, daemon, served)
}

/// Three INSERTs, a transaction with an actor and remarks that updates one row and deletes
/// another, and an UPDATE; synced, then what the store holds of `items`.
async fn write_items(env: &TestEnv, src: &Client, store: &Client) -> Vec<Entry> {
    src.batch_execute(
        r#"INSERT INTO items VALUES
             (1, 'plain', 10.50, '{a,b}', '{"k": [1, 2], "s": "x"}', '\xdeadbeef', 'one', '2024-05-01 10:00:00+00', true),
             (2, 'it''s <script>alert(1)</script>', 0.01, '{"with space","quote\"d"}', '{"n": null}', '\x00ff', E'back\\slash\nnew line', NULL, false),
             (3, 'to be deleted', 3, NULL, NULL, NULL, NULL, NULL, NULL)"#,
    )
    .await
    .unwrap();
    // One query string is one transaction: these are three.
    src.batch_execute(
        r#"BEGIN;
           SET LOCAL pgtrail.actor = 'alice@example.com';
           SET LOCAL pgtrail.remarks = 'ticket <7>';
           UPDATE items SET name = 'changed', price = 11.00, doc = '{"k": [1, 2, 3], "s": "x"}', note = E'one\ntwo' WHERE id = 1;
           DELETE FROM items WHERE id = 3;
           COMMIT;"#,
    )
    .await
    .unwrap();
    src.batch_execute(
        r"UPDATE items SET tags = '{c}', data = '\x01', seen = now(), ok = NULL WHERE id = 2",
    )
    .await
    .unwrap();
    env.sync().await;
    let stored: Vec<Entry> = table_entries(store, "public", "items").await;
    assert_eq!(
        stored.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["INSERT", "INSERT", "INSERT", "UPDATE", "DELETE", "UPDATE"]
    );
    stored
}

/// The API's entries are byte for byte the export's lines.
async fn api_is_the_export(env: &TestEnv, view: &Served) {
    let export = env.trail.export_jsonl(&["--table", "public.items"]).await;
    let body = view
        .get("/api/v1/entries?table=public.items&sort=time&dir=asc&limit=500")
        .await;
    #[derive(serde::Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        entries: Vec<&'a serde_json::value::RawValue>,
        next_cursor: Option<String>,
    }
    let list: List = serde_json::from_str(&body).unwrap();
    assert!(list.next_cursor.is_none());
    let api_lines: Vec<&str> = list.entries.iter().map(|r| r.get()).collect();
    let export_lines: Vec<&str> = export.iter().map(|l| l.raw.trim_end()).collect();
    assert_eq!(
        api_lines, export_lines,
        "API entries are shaped exactly as export prints them"
    );
}

/// The captured context filters and shows: actor, role, client address.
async fn context_filters_and_shows(view: &Served, stored: &[Entry]) {
    let all_desc: Vec<i64> = stored.iter().rev().map(|e| e.id).collect();
    assert_eq!(
        view.ids("actor=alice%40example.com").await,
        vec![stored[4].id, stored[3].id]
    );
    assert_eq!(view.ids("role=postgres&table=public.items").await, all_desc);
    assert_eq!(
        view.ids("actor=postgres&table=public.items").await,
        vec![stored[5].id, stored[2].id, stored[1].id, stored[0].id]
    );
    assert_eq!(
        view.ids(&format!("ip={}&table=public.items", enc("127.0.0.0/8")))
            .await,
        all_desc
    );
    assert_eq!(
        view.ids("ip=10.0.0.1&table=public.items").await,
        Vec::<i64>::new()
    );
    let html = view.get(&format!("/entries/{}", stored[3].id)).await;
    for fact in [
        "alice@example.com",
        "postgres",
        "127.0.0.1",
        "ticket &#60;7&#62;",
    ] {
        assert!(html.contains(fact), "the entry shows {fact}");
    }
}

/// The log shows them, the hostile name as text.
async fn log_shows_them(view: &Served, stored: &[Entry]) {
    let html = view.get("/?table=public.items").await;
    assert_eq!(
        row_ids(&html),
        stored.iter().rev().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("View Difference"));
    assert!(
        html.contains(">name, price, doc, note<"),
        "the update's changed columns:\n{html}"
    );
    assert!(html.contains(">deleted row id=3<"));
    let html = view.get(&format!("/entries/{}", stored[1].id)).await;
    assert!(
        !html.contains("<script>alert")
            && unescape(&html).contains("it's <script>alert(1)</script>"),
        "{html}"
    );
}

/// View Difference of the two-row transaction's update, its history and transaction.
async fn difference_history_and_transaction(view: &Served, stored: &[Entry]) {
    let upd = &stored[3];
    let html = view.get(&format!("/entries/{}", upd.id)).await;
    let rows = diff_rows(&html);
    assert_eq!(
        rows.iter()
            .take(4)
            .map(|r| (r.0.as_str(), r.1.as_str()))
            .collect::<Vec<_>>(),
        [
            ("changed", "name"),
            ("changed", "price"),
            ("changed", "doc"),
            ("changed", "note")
        ]
    );
    assert!(
        unescape(&html).contains("\"k\": ["),
        "the jsonb document is pretty-printed"
    );
    let hist = view
        .get(&format!(
            "/history?table=public.items&pk={}",
            enc(upd.primary_key_text.as_deref().unwrap())
        ))
        .await;
    assert_eq!(
        hist.matches("<li class=\"hist-item\"").count(),
        2,
        "insert and update of row 1"
    );
    let txn = view.get(&format!("/transactions/{}", upd.xid)).await;
    assert_eq!(row_ids(&txn), vec![stored[3].id, stored[4].id]);
}

/// Every revert, newest first, run on the source, undoes everything: the table ends empty,
/// and reverting the last update gives back the row as it was.
async fn reverts_undo_everything(view: &Served, src: &Client, stored: &[Entry]) {
    let snapshot = |id: i32| async move {
        src.query_opt(
            "SELECT to_jsonb(i)::text FROM items i WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    };
    let revert_last_update = {
        let v = view
            .json(&format!("/api/v1/entries/{}", stored[5].id))
            .await;
        v["revert_sql"].as_str().unwrap().to_owned()
    };
    let after_update = snapshot(2).await;
    src.batch_execute(&revert_last_update)
        .await
        .unwrap_or_else(|e| panic!("revert SQL failed: {e}\n{revert_last_update}"));
    let reverted = snapshot(2).await;
    assert_ne!(reverted, after_update);
    let inserted: Value = serde_json::from_str(stored[1].after_text.as_deref().unwrap()).unwrap();
    let reverted_v: Value = serde_json::from_str(reverted.as_deref().unwrap()).unwrap();
    assert_eq!(
        reverted_v["tags"],
        serde_json::json!(["with space", "quote\"d"])
    );
    assert_eq!(reverted_v["data"], inserted["data"], "bytea back as it was");
    assert_eq!(reverted_v["ok"], Value::Bool(false));
    for e in stored[..5].iter().rev() {
        let v = view.json(&format!("/api/v1/entries/{}", e.id)).await;
        let sql = v["revert_sql"]
            .as_str()
            .unwrap_or_else(|| panic!("entry {} has no revert: {v}", e.id));
        src.batch_execute(sql)
            .await
            .unwrap_or_else(|err| panic!("revert of entry {} failed: {err}\n{sql}", e.id));
    }
    let left: i64 = query_value(src, "SELECT count(*) FROM items", &[]).await;
    assert_eq!(
        left, 0,
        "reverting every entry in reverse leaves the table as it started"
    );
}

/// Live mode: a new entry arrives on the stream while it is open; the stream, still open.
async fn live_stream_sends_new_entries(
    env: &TestEnv,
    view: &Served,
    src: &Client,
    store: &Client,
) -> reqwest::Response {
    env.sync().await;
    let mut live = view
        .http
        .get(format!("{}/live?table=public.items", view.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    src.batch_execute("INSERT INTO items (id, name) VALUES (99, 'live <one>')")
        .await
        .unwrap();
    env.sync().await;
    let id: i64 = query_value(
        store,
        "SELECT max(id) FROM pgtrail.entries WHERE table_name = 'items'",
        &[],
    )
    .await;
    let stream = read_live_until(&mut live, id, Duration::from_secs(30)).await;
    let event = live_event(&stream, id).unwrap();
    assert!(
        event.contains("live &#60;one&#62;") || event.contains("new row id=99"),
        "{event}"
    );
    let live_page = view.get("/?live=1").await;
    assert!(
        live_page.contains("data-src=\"/live?after="),
        "live mode wires the stream"
    );
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_end_to_end_on_real_capture() {
    let env = TestEnv::start_with(Default::default(), |c| {
        c.web_toml = "auth = \"none\"\n".into()
    })
    .await;
    let (src, mut daemon, view) = capture_items(&env).await;
    let store = env.store().await;
    let stored = write_items(&env, &src, &store).await;
    api_is_the_export(&env, &view).await;
    context_filters_and_shows(&view, &stored).await;
    log_shows_them(&view, &stored).await;
    difference_history_and_transaction(&view, &stored).await;
    reverts_undo_everything(&view, &src, &stored).await;
    let _live = live_stream_sends_new_entries(&env, &view, &src, &store).await;

    // SIGTERM stops capture and the web view, with a live stream still open.
    daemon.terminate().await;
    assert!(
        view.http.get(&view.base).send().await.is_err(),
        "the web view stopped with the daemon"
    );
}
