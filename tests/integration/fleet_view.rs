//! A fleet seen from outside: two source clusters (shop-eu and shop-us, the same bank tables,
//! the same keys) captured into one store. Every entry carries its source in every export format
//! and in the API, checked against what each source really committed (each row's `filler`
//! names the source that wrote it); `db=` keeps to one source in the API, the pages and the
//! exports, and an unknown name is a 400 that lists the known ones; a row's history and a
//! transaction keep to one source; and a user whose tables name one source
//! (`shop-eu:public.bank_accounts`) sees that source's accounts only: in the log, the API, entry
//! pages, history, transaction pages and exports. A table of one name keyed differently in
//! each source is matched by each source's own key (`pk=`, history); and a store from before
//! sources whose scopes hold a `:` in an unquoted schema is moved by `setup` with those scopes
//! quoted to keep their meaning, or, for a schema pattern that cannot be, refused untouched.

use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

const EU: &str = "shop-eu";
const US: &str = "shop-us";

/// The fleet with the same rows in both sources, each row's `filler` naming its source
/// (an INSERT each, then one transaction updating an account and a branch), captured and
/// synced; the daemons stopped.
async fn captured_fleet() -> (Member, Member, Client) {
    let (eu, us, store) = fleet().await;
    let mut daemons = [eu.trail.spawn(), us.trail.spawn()];
    for m in [&eu, &us] {
        let (n, src) = (m.name, m.source().await);
        // One transaction per call (a multi-statement string would be one).
        for sql in [
            format!("INSERT INTO bank_branches VALUES (1, 0, '{n}')"),
            format!("INSERT INTO bank_accounts VALUES (1, 1, 10, '{n}'), (2, 1, 20, '{n}')"),
            "BEGIN; UPDATE bank_accounts SET abalance = abalance + 1 WHERE aid = 1; \
             UPDATE bank_branches SET bbalance = 1 WHERE bid = 1; COMMIT"
                .to_owned(),
        ] {
            src.batch_execute(&sql).await.unwrap();
        }
        m.sync().await;
    }
    for d in &mut daemons {
        d.terminate().await;
    }
    (eu, us, store)
}

/// The source that committed an entry, by what it wrote: a bank row's `filler`; `pgtrail` for
/// pgtrail's own events; `None` for other entries (the sync marker).
fn committed_by(line: &Value) -> Option<String> {
    if line["action"] == "EVENT" {
        return Some("pgtrail".into());
    }
    let image = if line["after"].is_null() {
        &line["before"]
    } else {
        &line["after"]
    };
    image["filler"].as_str().map(str::to_owned)
}

/// Ids of the store's bank entries committed by `source`, in `table` (all bank tables when
/// `None`), newest first: the truth the views are compared with.
async fn committed_ids(store: &Client, source: &str, table: Option<&str>) -> Vec<i64> {
    let table = table.map_or("table_name LIKE 'bank\\_%'".to_owned(), |t| {
        format!("table_name = '{t}'")
    });
    query_ids(
        store,
        &format!(
            "SELECT id FROM pgtrail.entries WHERE {table} \
             AND coalesce(after, before)->>'filler' = '{source}' ORDER BY id DESC"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_the_api_name_each_entrys_source() {
    let (eu, us, store) = captured_fleet().await;
    let dir = eu.trail.dir().to_owned();
    for format in ["jsonl", "csv", "cef", "xlsx"] {
        // Everything stored so far, including the events of the exports before this one.
        let want = rows_where(&store, "true").await;
        let out = dir.join(format!("all.{format}")).display().to_string();
        eu.trail
            .cli(&["export", "--format", format, "--out", &out])
            .await
            .assert_success();
        check_export(format, &std::fs::read(&out).unwrap(), &want, false);
        assert!(want.iter().any(|r| r.source == EU) && want.iter().any(|r| r.source == US));
    }
    // The JSON Lines (and so the stored source every format was checked against) is what each
    // source committed.
    let bank_and_events = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE action = 'EVENT' OR table_name LIKE 'bank\\_%'",
    )
    .await;
    let out = eu.trail.cli(&["export"]).await;
    out.assert_success();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut told = 0;
    for line in &lines {
        if let Some(by) = committed_by(line) {
            assert_eq!(line["source"].as_str(), Some(by.as_str()), "{line}");
            told += 1;
        }
    }
    assert_eq!(told, bank_and_events);
    // `--db` exports one source's entries only.
    let out = us.trail.cli(&["export", "--db", US]).await;
    out.assert_success();
    let ids: Vec<i64> = parse_jsonl(&out.stdout)
        .iter()
        .rev()
        .map(ExportLine::id)
        .collect();
    let theirs = query_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE source = 2 ORDER BY id DESC",
    )
    .await;
    assert_eq!(ids, theirs);
    assert!(ids.len() >= committed_ids(&store, US, None).await.len());
    let out = us.trail.cli(&["export", "--db", "shop-asia"]).await;
    assert!(!out.success());
    assert!(
        out.combined().contains("pgtrail, shop-eu, shop-us"),
        "{out}"
    );

    // The API: `db=` (or `db:` in the search box) returns exactly one source's entries.
    let web = Web::start_for(&eu.trail.config, "auth = \"none\"\n").await;
    for (m, id) in [(&eu, 1i16), (&us, 2)] {
        let want = query_ids(
            &store,
            &format!("SELECT id FROM pgtrail.entries WHERE source = {id} ORDER BY id DESC"),
        )
        .await;
        assert_eq!(
            web.walk(&format!("db={}", m.name), 500).await,
            want,
            "{}",
            m.name
        );
        assert_eq!(
            web.walk(&format!("search=db%3A{}", m.name), 500).await,
            want
        );
        let page = web
            .api(&format!("/api/v1/entries?db={}&limit=500", m.name))
            .await;
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["source"], m.name, "{e}");
        }
        let accounts = committed_ids(&store, m.name, Some("bank_accounts")).await;
        assert_eq!(
            web.walk(&format!("db={}&table=public.bank_accounts", m.name), 500)
                .await,
            accounts
        );
    }
    let both = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE source IN (1, 2)",
    )
    .await;
    assert_eq!(
        web.walk("db=shop-eu,shop-us", 500).await.len(),
        both as usize
    );
    let (status, _, body) = web.fetch("/api/v1/entries?db=shop-asia").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("shop-asia") && body.contains("pgtrail, shop-eu, shop-us"),
        "{body}"
    );
    let (status, _, body) = web.fetch("/?search=db%3Ashop-asia").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The pages: a Database column with two sources, each cell linking to its source.
    let page = web.page("/").await;
    assert!(page.contains(">Database</th>"), "{page}");
    assert!(page.contains("?db=shop-us\">shop-us</a></td>"), "{page}");
    let eu_accounts = committed_ids(&store, EU, Some("bank_accounts")).await;
    let entry = web.page(&format!("/entries/{}", eu_accounts[0])).await;
    assert!(
        entry.contains("<dt>Database</dt>") && entry.contains(">shop-eu</a>"),
        "{entry}"
    );
    assert!(
        entry.contains("pk=%7B%22aid%22%3A1%7D&#38;db=shop-eu"),
        "{entry}"
    );
    // The same key in both sources: a history names one.
    let (status, _, body) = web.fetch("/history?table=public.bank_accounts&pk=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("db=shop-eu or db=shop-us"), "{body}");
    for m in [EU, US] {
        let h = web
            .page(&format!("/history?table=public.bank_accounts&pk=1&db={m}"))
            .await;
        let mine: Vec<i64> = query_ids(&store, &format!("SELECT id FROM pgtrail.entries WHERE table_name = 'bank_accounts' AND primary_key->>'aid' = '1' AND after->>'filler' = '{m}' ORDER BY id")).await;
        assert_eq!(linked_entry_ids(&h), mine.into_iter().collect(), "{h}");
    }
    // A web export keeps to its source too.
    let want = rows_where(&store, "source = 2").await;
    let (status, _, _, bytes) = download(&web.url("/export?format=csv&db=shop-us")).await;
    assert_eq!(status, StatusCode::OK);
    check_export("csv", &bytes, &want, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_naming_a_source_sees_that_source_only() {
    let (eu, _us, store) = captured_fleet().await;
    let add = |name: &'static str, tables: &'static str| {
        let trail = &eu.trail;
        async move {
            let args = ["user", "add", name, "--role", "auditor", "--tables", tables];
            trail
                .cli_with_stdin(&args, &format!("{name}-secret-1\n"))
                .await
        }
    };
    for (bad, says) in [
        (":public.x", "no source name before ':'"),
        ("bad name:x.y", "\"bad name\" is not a valid source name"),
    ] {
        let out = add("bad", bad).await;
        assert!(
            !out.success() && out.combined().contains(says),
            "{bad}: {out}"
        );
    }
    add("eve", "shop-eu:public.bank_accounts")
        .await
        .assert_success();
    add("all", "public.bank_accounts").await.assert_success();
    let web = Web::start_for(&eu.trail.config, "").await;
    let mut eve = Agent::signed_in(&web.base, "eve", "eve-secret-1").await;
    let mut all = Agent::signed_in(&web.base, "all", "all-secret-1").await;
    let mine = committed_ids(&store, EU, Some("bank_accounts")).await;
    let theirs = committed_ids(&store, US, Some("bank_accounts")).await;
    assert_eq!(mine.len(), 3);
    assert_eq!(theirs.len(), 3);
    // The API and the log page.
    assert_eq!(eve.api_ids("").await, mine);
    assert!(eve.api_ids("db=shop-us").await.is_empty());
    let mut both: Vec<i64> = mine.iter().chain(&theirs).copied().collect();
    both.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        all.api_ids("").await,
        both,
        "the unqualified form: every source"
    );
    let page = eve.get("/").await;
    assert_eq!(linked_entry_ids(&page.body), mine.iter().copied().collect());
    assert_eq!(count_text(&page.body), "3 entries");
    // Entry pages: the other source's accounts are not there.
    for id in &theirs {
        assert_eq!(
            eve.get(&format!("/entries/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
        let api = eve.get(&format!("/api/v1/entries/{id}")).await;
        assert_eq!(api.status, StatusCode::NOT_FOUND);
    }
    let own = eve.get(&format!("/entries/{}", mine[0])).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    // History: the key is eve's in one source only, so it needs no db; the other's is a 404.
    let h = eve.get("/history?table=public.bank_accounts&pk=1").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    let of_key: Vec<i64> = query_ids(&store, &format!("SELECT id FROM pgtrail.entries WHERE table_name = 'bank_accounts' AND primary_key->>'aid' = '1' AND after->>'filler' = '{EU}' ORDER BY id")).await;
    assert_eq!(linked_entry_ids(&h.body), of_key.into_iter().collect());
    let h = eve
        .get("/history?table=public.bank_accounts&pk=1&db=shop-us")
        .await;
    assert_eq!(h.status, StatusCode::NOT_FOUND, "{}", h.body);
    // Transactions: the other source's update of an account is not there; eve's shows only
    // its account row, not the branch updated with it.
    let xid_of = |source: &'static str| {
        let store = &store;
        async move {
            query_value::<i64>(store, &format!("SELECT xid FROM pgtrail.entries WHERE table_name = 'bank_accounts' AND action = 'UPDATE' AND after->>'filler' = '{source}'"), &[]).await
        }
    };
    let t = eve
        .get(&format!("/transactions/{}?db=shop-us", xid_of(US).await))
        .await;
    assert_eq!(t.status, StatusCode::NOT_FOUND, "{}", t.body);
    let t = eve
        .get(&format!("/transactions/{}?db=shop-eu", xid_of(EU).await))
        .await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(linked_entry_ids(&t.body).len(), 1, "{}", t.body);
    assert!(!t.body.contains("bank_branches"));
    // Exports.
    let r = eve.get("/export?format=jsonl").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = parse_jsonl(&r.body);
    assert_eq!(
        lines.iter().rev().map(ExportLine::id).collect::<Vec<_>>(),
        mine
    );
    for l in r.body.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["source"], EU, "{l}");
    }
}

/// Ids of the store's `public.parts` entries whose stored key is one of `keys`, newest first.
async fn parts_with_key(store: &Client, keys: &[&str]) -> Vec<i64> {
    let keys: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    query_ids(
        store,
        &format!(
            "SELECT id FROM pgtrail.entries WHERE table_name = 'parts' \
             AND primary_key::text IN ({}) ORDER BY id DESC",
            keys.join(", ")
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_differently_in_each_source_is_matched_by_each_ones_key() {
    // `public.parts` keyed by `id` in shop-eu, by `(code, rev)` in shop-us, whose entries are
    // the newest: a key taken from the newest entry of any source was shop-us's for both.
    let (eu, us, store) = fleet().await;
    let mut daemons = [eu.trail.spawn(), us.trail.spawn()];
    for (m, sql) in [
        (
            &eu,
            "CREATE TABLE parts (id int PRIMARY KEY, name text); \
             INSERT INTO parts VALUES (7, 'eu seven'), (8, 'eu eight')",
        ),
        (
            &us,
            "CREATE TABLE parts (code text, rev int, name text, PRIMARY KEY (code, rev)); \
             INSERT INTO parts VALUES ('7', 1, 'us seven'), ('x', 7, 'us x7'), ('8', 2, 'us 8')",
        ),
    ] {
        m.source().await.batch_execute(sql).await.unwrap();
        m.sync().await;
    }
    for d in &mut daemons {
        d.terminate().await;
    }
    let web = Web::start_for(&eu.trail.config, "auth = \"none\"\n").await;
    let eu7 = parts_with_key(&store, &[r#"{"id":7}"#]).await;
    assert_eq!(eu7.len(), 1);

    // A value in every table: shop-eu's one-column key (composite keys only with a table).
    assert_eq!(web.walk("pk=7", 500).await, eu7);
    // With the table, also any column of shop-us's composite key.
    let with_table = [
        r#"{"id":7}"#,
        r#"{"code":"7","rev":1}"#,
        r#"{"code":"x","rev":7}"#,
    ];
    assert_eq!(
        web.walk("pk=7&table=public.parts", 500).await,
        parts_with_key(&store, &with_table).await
    );
    // Whole keys, in any key order, each matched by its own source's columns.
    let x7 = parts_with_key(&store, &[r#"{"code":"x","rev":7}"#]).await;
    assert_eq!(x7.len(), 1);
    let pk = "pk=%7B%22rev%22%3A7%2C%22code%22%3A%22x%22%7D";
    assert_eq!(web.walk(pk, 500).await, x7);
    let eu8 = parts_with_key(&store, &[r#"{"id":8}"#]).await;
    assert_eq!(web.walk("pk=%7B%22id%22%3A8%7D", 500).await, eu8);
    assert_eq!(web.walk("pk=8&db=shop-eu", 500).await, eu8);

    // A row's history by a value: shop-eu's row; in shop-us the key needs both columns.
    for path in ["", "&db=shop-eu"] {
        let h = web
            .page(&format!("/history?table=public.parts&pk=7{path}"))
            .await;
        assert_eq!(linked_entry_ids(&h), eu7.iter().copied().collect(), "{h}");
    }
    let (status, _, body) = web
        .fetch("/history?table=public.parts&pk=7&db=shop-us")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("has the columns code, rev"), "{body}");
    let h = web
        .page("/history?table=public.parts&pk=%7B%22code%22%3A%22x%22%2C%22rev%22%3A7%7D")
        .await;
    assert_eq!(linked_entry_ids(&h), x7.iter().copied().collect(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_stored_before_sources_keep_their_meaning_or_stop_the_upgrade() {
    // A store from before sources (migrations 1 to 14), whose users and token were limited to
    // schemas holding ':' (unquoted: the only way they were written then).
    let env = TestEnv::start().await;
    env.cluster.create_db("pgtrail").await;
    let store = env.store().await;
    old_store_schema(&store, 15).await;
    store
        .batch_execute(
            r#"INSERT INTO pgtrail.users (name, role, tables, password_hash) VALUES
                 ('ann', 'viewer', ARRAY['shop:eu.orders', '"x:y".t', 'public.o', 'p.a:b'], 'h'),
                 ('bob', 'viewer', ARRAY['public.o', 'shop:*.orders'], 'h');
               INSERT INTO pgtrail.tokens (name, token_hash, role, tables)
                 VALUES ('siem', '\x00', 'viewer', ARRAY['a:b.*']);"#,
        )
        .await
        .unwrap();
    let scopes = || async {
        query_pairs::<String, Vec<String>>(
            &store,
            "SELECT name, tables FROM pgtrail.users UNION ALL \
             SELECT name, tables FROM pgtrail.tokens ORDER BY 1",
            &[],
        )
        .await
    };
    let before = scopes().await;

    // bob's schema pattern cannot be written under sources: setup stops, naming it, and
    // migrates nothing.
    let out = env.trail.cli(&["setup"]).await;
    assert!(!out.success(), "{out}");
    for says in [
        "user \"bob\"",
        "shop:*.orders",
        "source \"shop\"",
        "pgtrail setup",
    ] {
        assert!(out.combined().contains(says), "{says}: {out}");
    }
    assert_eq!(scopes().await, before);
    let version: i32 = query_value(
        &store,
        "SELECT max(version) FROM pgtrail.schema_migrations",
        &[],
    )
    .await;
    assert_eq!(version, 14);

    // Narrowed to exact schemas as it says, setup goes on: every scope written with a ':' in
    // its schema is quoted, and reads as that schema in every source, as it did.
    store
        .batch_execute(r#"UPDATE pgtrail.users SET tables = ARRAY['public.o', '"shop:eu".orders'] WHERE name = 'bob'"#)
        .await
        .unwrap();
    env.setup().await;
    let quoted = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        scopes().await,
        [
            (
                "ann".to_owned(),
                quoted(&[r#""shop:eu".orders"#, r#""x:y".t"#, "public.o", "p.a:b"])
            ),
            (
                "bob".to_owned(),
                quoted(&["public.o", r#""shop:eu".orders"#])
            ),
            ("siem".to_owned(), quoted(&[r#""a:b".*"#])),
        ]
    );
    let read = pgtrail::auth::Tables::from_stored(scopes().await[0].1.clone()).unwrap();
    let orders = pgtrail::table::TableName::new("shop:eu", "orders");
    assert!(read.0.iter().all(|p| p.source().is_none()), "{read:?}");
    assert!(read.0[0].matches("any-source", &orders), "{read:?}");
    let listed = env.trail.cli(&["user", "list"]).await;
    listed.assert_success();
    assert!(listed.stdout.contains(r#""shop:eu".orders"#), "{listed}");
}
