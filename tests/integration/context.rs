//! Actor context and what setup does to the source: who made each change (role, address,
//! application, and the application's own `pgtrail.actor` / `source` / `remarks`), over TCP and
//! the Unix socket, changing mid-transaction and rolled back with a savepoint; changes made with
//! triggers disabled still stored, with a null context; `setup --dry-run` changes nothing, a
//! second `setup` has nothing to do, and `teardown` leaves no pgtrail object in the source.

use serde_json::{json, Value};

use crate::harness::*;

fn ctx(e: &ExportLine, key: &str) -> Value {
    e.value["context"].get(key).cloned().unwrap_or(Value::Null)
}

/// Who made a change, as its context says: action, db_user, current_user, actor, source,
/// remarks, application_name.
type Who = (String, Value, Value, Value, Value, Value, Value);

fn who(e: &ExportLine) -> Who {
    (
        e.value["action"].as_str().unwrap_or_default().to_owned(),
        ctx(e, "db_user"),
        ctx(e, "current_user"),
        ctx(e, "actor"),
        ctx(e, "source"),
        ctx(e, "remarks"),
        ctx(e, "application_name"),
    )
}

/// What each change of the test must say about who made it.
fn expected_who() -> Vec<Who> {
    let s = |v: &str| json!(v);
    // Both rows of the first INSERT.
    let alice_inserts = (
        "INSERT".to_owned(),
        s("clerk"),
        s("clerk"),
        s("alice@example.com"),
        s("web"),
        Value::Null,
        s("teller"),
    );
    vec![
        alice_inserts.clone(),
        alice_inserts,
        (
            "UPDATE".into(),
            s("clerk"),
            s("clerk"),
            s("bob@example.com"),
            s("web"),
            s("ticket 4411"),
            s("teller"),
        ),
        // The savepoint's update and its 'mallory' context are gone; SET ROLE shows as current_user.
        (
            "UPDATE".into(),
            s("clerk"),
            s("manager"),
            s("bob@example.com"),
            s("web"),
            s("ticket 4411"),
            s("teller"),
        ),
        (
            "DELETE".into(),
            s("postgres"),
            s("postgres"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ),
        (
            "INSERT".into(),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ),
    ]
}

/// clerk over TCP, with the application's own context, changing mid-transaction; the client.
async fn clerk_over_tcp(env: &TestEnv) -> tokio_postgres::Client {
    let clerk = connect(&format!(
        "{}?application_name=teller",
        env.cluster.url_as("app", "clerk", Some("pw"))
    ))
    .await
    .unwrap();
    clerk
        .batch_execute(
            "BEGIN;
             SET LOCAL pgtrail.actor = 'alice@example.com';
             SET LOCAL pgtrail.source = 'web';
             INSERT INTO acct VALUES (1, 'alice', 10.00), (2, 'bob', 20.00);
             SET LOCAL pgtrail.actor = 'bob@example.com';
             SET LOCAL pgtrail.remarks = 'ticket 4411';
             UPDATE acct SET balance = 25.00 WHERE id = 2;
             SAVEPOINT s;
             SET LOCAL pgtrail.actor = 'mallory';
             UPDATE acct SET balance = 0 WHERE id = 1;
             ROLLBACK TO SAVEPOINT s;
             SET LOCAL ROLE manager;
             UPDATE acct SET owner = 'Alice' WHERE id = 1;
             COMMIT;",
        )
        .await
        .unwrap();
    clerk
}

/// postgres over the Unix socket, no application context; then with triggers off.
async fn postgres_over_the_socket(env: &TestEnv) {
    let local = connect(&env.cluster.socket_conninfo("app", "postgres"))
        .await
        .unwrap();
    local
        .batch_execute("DELETE FROM acct WHERE id = 2")
        .await
        .unwrap();
    // A superuser replaying with triggers off: no context message, the change is still audited.
    local.batch_execute("SET session_replication_role = replica; INSERT INTO acct VALUES (3, 'carol', 1); RESET session_replication_role;").await.unwrap();
}

/// The writer's plain columns say what the context says: the actor, else the role; the
/// address, none over the Unix socket.
async fn plain_columns_follow_the_context(store: &tokio_postgres::Client, e: &[ExportLine]) {
    let cols: Vec<(Option<String>, Option<String>)> = query_pairs(
        store,
        "SELECT actor, host(client_addr) FROM pgtrail.entries WHERE table_name = 'acct' ORDER BY id",
        &[],
    )
    .await;
    let expected: Vec<(Option<String>, Option<String>)> = e
        .iter()
        .map(|entry| {
            let text = |k: &str| ctx(entry, k).as_str().map(str::to_owned);
            (text("actor").or(text("db_user")), text("client_addr"))
        })
        .collect();
    assert_eq!(cols, expected);
    assert_eq!(cols[0].0.as_deref(), Some("alice@example.com"));
    assert_eq!(cols[0].1.as_deref(), Some("127.0.0.1"));
    assert_eq!(cols[4].1, None, "the Unix socket has no address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_from_roles_addresses_and_application_settings() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2));
         CREATE ROLE clerk LOGIN PASSWORD 'pw'; CREATE ROLE manager NOLOGIN;
         GRANT ALL ON acct TO clerk, manager; GRANT manager TO clerk;",
    )
    .await;

    let clerk = clerk_over_tcp(&env).await;
    postgres_over_the_socket(&env).await;
    env.sync().await;

    let e: Vec<ExportLine> = env.trail.export_jsonl(&["--table", "public.acct"]).await;
    let summary: Vec<Who> = e.iter().map(who).collect();
    assert_eq!(summary, expected_who(), "{e:#?}");
    assert_eq!(
        ctx(&e[0], "client_addr"),
        json!("127.0.0.1"),
        "TCP shows the client address"
    );
    assert!(ctx(&e[0], "client_port").is_number());
    assert_eq!(
        ctx(&e[4], "client_addr"),
        Value::Null,
        "the Unix socket has no address"
    );
    let pid: i32 = clerk
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx(&e[0], "backend_pid"), json!(pid));

    let store = env.store().await;
    assert_counts(&store, "public", "acct", Counts::new(3, 2, 1, 0)).await;
    assert_store_matches_source(&src, &store, "public", "acct").await;
    plain_columns_follow_the_context(&store, &e).await;
    daemon.terminate().await;
}

/// Everything in the source that says what pgtrail has installed.
async fn source_footprint(c: &tokio_postgres::Client) -> Vec<String> {
    query_column(
        c,
        "SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE tgname LIKE 'pgtrail%'
         UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgtrail'
         UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'pgtrail'
         UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
         UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
         UNION ALL SELECT 'identity ' || c.oid::regclass || ' ' || c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind = 'r'
         UNION ALL SELECT 'database ' || datname FROM pg_database
         ORDER BY 1",
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_setup_twice_is_a_no_op_and_teardown_removes_everything() {
    let env = TestEnv::start().await;
    let src = env.source_with("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE \"Odd Name\" (id int PRIMARY KEY);").await;
    let admin = env.cluster.client("postgres").await;

    let before = source_footprint(&src).await;
    let dry = env.trail.cli(&["setup", "--dry-run"]).await;
    dry.assert_success();
    assert_eq!(
        source_footprint(&src).await,
        before,
        "setup --dry-run changed the source"
    );
    let dbs: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'pgtrail'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dbs, 0, "setup --dry-run created the store database");
    for expected in [
        "pg_create_logical_replication_slot('pgtrail', 'wal2json')",
        "ALTER TABLE \"public\".\"a\" REPLICA IDENTITY FULL",
        "CREATE TRIGGER pgtrail_context BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON \"public\".\"Odd Name\"",
        "CREATE OR REPLACE FUNCTION pgtrail.emit_context()",
        "CREATE DATABASE \"pgtrail\"",
        "CREATE TABLE pgtrail.entries",
    ] {
        assert!(dry.stdout.contains(expected), "dry run lacks {expected:?}:\n{}", dry.stdout);
    }

    env.setup().await;
    let installed = source_footprint(&src).await;
    assert!(
        installed.contains(&"trigger \"Odd Name\" pgtrail_context".to_string()),
        "{installed:#?}"
    );
    assert!(
        installed.contains(&"identity a f".to_string()),
        "{installed:#?}"
    );
    assert!(
        installed.contains(&"slot pgtrail".to_string()),
        "{installed:#?}"
    );

    let again = env.trail.cli(&["setup"]).await;
    again.assert_success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    assert_eq!(
        source_footprint(&src).await,
        installed,
        "a second setup changed the source"
    );
    let dry = env.trail.cli(&["setup", "--dry-run"]).await;
    assert!(dry.stdout.contains("nothing to do"), "{dry}");

    // Capture something, so teardown can be seen to keep the store's data.
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO a VALUES (1, 'x')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    env.wait_slot_inactive().await;

    let dry = env
        .trail
        .cli(&["teardown", "--drop-slot", "--dry-run"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout.contains("pg_drop_replication_slot('pgtrail')"),
        "{dry}"
    );
    assert_eq!(
        source_footprint(&src).await,
        installed,
        "teardown --dry-run changed the source"
    );

    env.trail
        .cli(&["teardown", "--drop-slot"])
        .await
        .assert_success();
    let left: Vec<String> = source_footprint(&src)
        .await
        .into_iter()
        .filter(|l| {
            ["trigger", "event trigger", "function", "schema", "slot"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert!(
        left.is_empty(),
        "teardown left pgtrail objects in the source: {left:#?}"
    );
    let store = env.store().await;
    assert_counts(&store, "public", "a", Counts::new(1, 0, 0, 0)).await;
}

/// The first warning of a table's report, empty when it has none.
fn first_warning(report: &Value) -> &str {
    report["warnings"][0].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_says_what_is_captured_and_why() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.*".into()];
        c.exclude = vec!["public.sess*".into()];
        c.before_images = false;
    })
    .await;
    env.source_with(
        "CREATE TABLE orders (id int, region text, PRIMARY KEY (region, id));
         CREATE TABLE sessions (id int PRIMARY KEY);
         CREATE TABLE loose (a int);
         CREATE SCHEMA other; CREATE TABLE other.t (id int PRIMARY KEY);",
    )
    .await;
    env.setup().await;
    let out = env.trail.cli(&["tables", "--json"]).await;
    out.assert_success();
    let reports: Vec<Value> =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let by_name = |name: &str| {
        reports
            .iter()
            .find(|r| r["table"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .clone()
    };

    let orders = by_name("public.orders");
    assert_eq!(orders["captured"], json!(true));
    assert_eq!(orders["reason"], json!("matches public.*"));
    assert_eq!(
        orders["primary_key"],
        json!(["region", "id"]),
        "key columns in key order"
    );
    assert_eq!(orders["replica_identity"], json!("default"));
    assert_eq!(orders["context_trigger"], json!(true));
    assert!(first_warning(&orders).contains("not FULL"), "{orders}");

    let sessions = by_name("public.sessions");
    assert_eq!(sessions["captured"], json!(false));
    assert_eq!(sessions["reason"], json!("excluded by public.sess*"));
    assert_eq!(
        sessions["context_trigger"],
        json!(false),
        "setup leaves excluded tables alone"
    );

    let loose = by_name("public.loose");
    assert!(
        first_warning(&loose).contains("cannot be tied to a row"),
        "{loose}"
    );

    let other = by_name("other.t");
    assert_eq!(other["captured"], json!(false));
    assert_eq!(other["reason"], json!("matches no capture.tables pattern"));

    let text = env.trail.cli(&["tables"]).await;
    text.assert_success();
    assert!(
        text.stdout.contains("public.orders")
            && text.stdout.contains("(region, id)")
            && text.stdout.contains("warning:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_later_is_enrolled_from_its_creation() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.*".into()];
        c.exclude = vec!["public.tmp_*".into()];
    })
    .await;
    let src = env
        .source_with("CREATE TABLE early (id int PRIMARY KEY)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();

    // Created and written in one transaction: the first change already carries its context.
    src.batch_execute(
        "BEGIN; SET LOCAL pgtrail.actor = 'migrator';
         CREATE TABLE late (id int PRIMARY KEY, v text);
         INSERT INTO late VALUES (1, 'a');
         CREATE TABLE tmp_scratch (id int PRIMARY KEY);
         COMMIT;
         UPDATE late SET v = 'b' WHERE id = 1;",
    )
    .await
    .unwrap();
    env.sync().await;

    let state = |t: &'static str| {
        let src = &src;
        async move {
            src.query_one(
                "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND tgname = 'pgtrail_context')
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&t],
            )
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .unwrap()
        }
    };
    assert_eq!(
        state("late").await,
        ("f".to_string(), true),
        "a matching new table gets identity FULL and the trigger"
    );
    assert_eq!(
        state("tmp_scratch").await,
        ("d".to_string(), false),
        "an excluded new table is left alone"
    );

    let e: Vec<ExportLine> = env.trail.export_jsonl(&["--table", "public.late"]).await;
    let rows: Vec<&ExportLine> = e
        .iter()
        .filter(|e| e.value["action"] != json!("DDL"))
        .collect();
    assert_eq!(rows.len(), 2, "{e:#?}");
    assert_eq!(rows[0].value["context"]["actor"], json!("migrator"));
    assert_eq!(
        rows[1].value["before"],
        json!({"id": 1, "v": "a"}),
        "the whole old row, thanks to identity FULL"
    );
    assert_eq!(rows[1].value["changed_columns"], json!(["v"]));
    let store = env.store().await;
    assert_store_matches_source(&src, &store, "public", "late").await;
    daemon.terminate().await;
}
