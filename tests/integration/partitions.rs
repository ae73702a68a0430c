//! Partitioned tables: entries carry the root table's name with the partition in
//! `details.partition`; a pattern on the root captures every partition, including ones created
//! or attached while the daemon runs (in another schema too); an exclude on the root keeps all
//! of its partitions out; `tables` explains partitions by their root; DETACH makes a partition
//! a table of its own again.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::*;

const SCHEMA: &str = "
    CREATE TABLE orders (id int, region text, amount int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu') PARTITION BY RANGE (id);
    CREATE TABLE orders_eu_lo PARTITION OF orders_eu FOR VALUES FROM (0) TO (1000);
    CREATE TABLE orders_eu_hi PARTITION OF orders_eu FOR VALUES FROM (1000) TO (MAXVALUE);
    CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');
    CREATE TABLE sessions (id int, day int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
    CREATE TABLE sessions_1 PARTITION OF sessions FOR VALUES FROM (0) TO (100);
    CREATE SCHEMA archive;
    CREATE SCHEMA staging;";

/// (action, id, region, partition, actor) of each entry of public.orders, in id order.
fn summary(entries: &[Entry]) -> Vec<(String, i64, String, String, Option<String>)> {
    entries
        .iter()
        .filter(|e| e.action != "DDL" && e.action != "TRUNCATE")
        .map(|e| {
            (
                e.action.clone(),
                e.key_i64("id"),
                e.primary_key["region"].as_str().unwrap_or("?").to_owned(),
                e.details["partition"].as_str().unwrap_or("-").to_owned(),
                e.context["actor"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// A source capturing `public.*` but `sessions`, with [`SCHEMA`] made.
async fn with_schema() -> (TestEnv, tokio_postgres::Client) {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.*".into()];
        c.exclude = vec!["public.sessions".into()];
    })
    .await;
    let src = env.source_with(SCHEMA).await;
    (env, src)
}

/// What the test writes while the daemon runs: through the root and into partitions directly,
/// as several actors; an update of the partition key; partitions created (in another schema too)
/// and attached while running; a TRUNCATE of one partition.
const CHANGES: &str = "BEGIN; SET LOCAL pgtrail.actor = 'alice';
   INSERT INTO orders VALUES (1, 'eu', 10), (2000, 'eu', 20), (3, 'us', 30);
 COMMIT;
 BEGIN; SET LOCAL pgtrail.actor = 'bob';
   INSERT INTO orders_us VALUES (4, 'us', 40);
   UPDATE orders_eu_lo SET amount = 11 WHERE id = 1;
 COMMIT;
 -- An UPDATE of the partition key moves the row: wal2json sends a DELETE and an INSERT.
 BEGIN; SET LOCAL pgtrail.actor = 'carol';
   UPDATE orders SET region = 'us' WHERE id = 1;
 COMMIT;
 -- A partition created while running, written to in the creating transaction.
 BEGIN; SET LOCAL pgtrail.actor = 'dave';
   CREATE TABLE orders_asia PARTITION OF orders FOR VALUES IN ('asia');
   INSERT INTO orders_asia VALUES (5, 'asia', 50);
 COMMIT;
 -- One in a schema the session does not decode yet.
 BEGIN; SET LOCAL pgtrail.actor = 'erin';
   CREATE TABLE archive.orders_old PARTITION OF orders FOR VALUES IN ('old');
   INSERT INTO orders VALUES (6, 'old', 60);
 COMMIT;
 INSERT INTO sessions VALUES (1, 1);
 -- An existing, uncaptured table attached while running.
 CREATE TABLE staging.orders_ca (id int, region text, amount int, PRIMARY KEY (id, region));
 INSERT INTO staging.orders_ca VALUES (70, 'ca', 0);
 DELETE FROM staging.orders_ca;
 BEGIN; SET LOCAL pgtrail.actor = 'frank';
   ALTER TABLE orders ATTACH PARTITION staging.orders_ca FOR VALUES IN ('ca');
   INSERT INTO staging.orders_ca VALUES (7, 'ca', 70);
 COMMIT;
 BEGIN; SET LOCAL pgtrail.actor = 'grace';
   UPDATE orders SET amount = amount + 1 WHERE id = 5;
   UPDATE orders SET amount = amount + 1 WHERE id = 6;
   UPDATE orders SET amount = amount + 1 WHERE id = 7;
   TRUNCATE orders_eu_hi;
 COMMIT;";

/// Statement triggers are not inherited by partitions: setup puts one on every level, and
/// REPLICA IDENTITY FULL on every partition that holds rows.
async fn setup_enrolls_every_level(src: &tokio_postgres::Client) {
    let enrolled: Vec<(String, bool, String)> = src
        .query(
            "SELECT c.relname::text,
                    EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgtrail_context'),
                    c.relreplident::text
             FROM pg_class c WHERE c.relname LIKE 'orders%' AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let e = |n: &str, identity: &str| (n.to_owned(), true, identity.to_owned());
    assert_eq!(
        enrolled,
        [
            e("orders", "d"),
            e("orders_eu", "d"),
            e("orders_eu_hi", "f"),
            e("orders_eu_lo", "f"),
            e("orders_us", "f")
        ]
    );
}

/// `tables`: a partition is explained by its root.
async fn tables_explains_partitions_by_their_root(env: &TestEnv) {
    let out = env.trail.cli(&["tables", "--json"]).await;
    out.assert_success();
    let reports: Vec<Value> =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let report = |name: &str| {
        reports
            .iter()
            .find(|r| r["table"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .clone()
    };
    let lo = report("public.orders_eu_lo");
    assert_eq!(lo["captured"], json!(true));
    assert_eq!(lo["partition_of"], json!("public.orders"));
    assert_eq!(
        lo["reason"],
        json!("partition of public.orders_eu, whose root public.orders matches public.*")
    );
    assert_eq!(lo["warnings"], json!([]), "{lo}");
    assert_eq!(
        report("public.orders")["warnings"],
        json!([]),
        "a partitioned table holds no rows: no identity warning"
    );
    assert_eq!(report("public.orders")["partition_of"], Value::Null);
    let s1 = report("public.sessions_1");
    assert_eq!(s1["captured"], json!(false));
    assert_eq!(
        s1["reason"],
        json!(
            "partition of public.sessions, whose root public.sessions excluded by public.sessions"
        )
    );
    assert_eq!(
        s1["context_trigger"],
        json!(false),
        "an excluded root's partitions are left alone"
    );
    let text = env.trail.cli(&["tables"]).await;
    text.assert_success();
    assert!(
        text.stdout
            .contains("partition of public.orders_eu, whose root public.orders"),
        "{text}"
    );
}

/// Entries are named by the root with the partition in `details.partition`, context and row
/// history included, and replay to the root's rows. The root's entries.
async fn entries_carry_the_root_name(
    src: &tokio_postgres::Client,
    store: &tokio_postgres::Client,
    daemon: &Daemon,
) -> Vec<Entry> {
    // Row entries, that is: DDL entries name the object the command was about.
    let tables: HashSet<String> = query_column(
        store,
        "SELECT DISTINCT table_name FROM pgtrail.entries WHERE action <> 'DDL'",
        &[],
    )
    .await
    .into_iter()
    .collect();
    assert!(
        !tables
            .iter()
            .any(|t| t.starts_with("orders_") || t.starts_with("sessions")),
        "entries are named by the root; the excluded root has none: {tables:?}"
    );
    let orders = table_entries(store, "public", "orders").await;
    let row = |a: &str, id: i64, region: &str, partition: &str, actor: &str| {
        (
            a.to_owned(),
            id,
            region.to_owned(),
            partition.to_owned(),
            Some(actor.to_owned()),
        )
    };
    let truncate = orders
        .iter()
        .find(|e| e.action == "TRUNCATE")
        .expect("a TRUNCATE entry");
    assert_eq!(
        summary(&orders),
        [
            row("INSERT", 1, "eu", "public.orders_eu_lo", "alice"),
            row("INSERT", 2000, "eu", "public.orders_eu_hi", "alice"),
            row("INSERT", 3, "us", "public.orders_us", "alice"),
            row("INSERT", 4, "us", "public.orders_us", "bob"),
            row("UPDATE", 1, "eu", "public.orders_eu_lo", "bob"),
            row("DELETE", 1, "eu", "public.orders_eu_lo", "carol"),
            row("INSERT", 1, "us", "public.orders_us", "carol"),
            row("INSERT", 5, "asia", "public.orders_asia", "dave"),
            row("INSERT", 6, "old", "archive.orders_old", "erin"),
            row("INSERT", 7, "ca", "staging.orders_ca", "frank"),
            row("UPDATE", 5, "asia", "public.orders_asia", "grace"),
            row("UPDATE", 6, "old", "archive.orders_old", "grace"),
            row("UPDATE", 7, "ca", "staging.orders_ca", "grace"),
        ]
    );
    assert_eq!(truncate.details["partition"], json!("public.orders_eu_hi"));
    assert_eq!(truncate.details["cascade"], json!(false));
    assert_eq!(truncate.context["actor"], json!("grace"));
    for e in &orders {
        assert_eq!(
            e.context["db_user"],
            json!("postgres"),
            "context reaches every entry: {e:?}"
        );
    }
    // The row's history is on the root: its INSERT through the root and its UPDATE and DELETE
    // on the partition share one row key.
    let keys = query_count(
        store,
        "SELECT count(DISTINCT row_key) FROM pgtrail.entries
             WHERE table_name = 'orders' AND primary_key::text = '{\"id\":1,\"region\":\"eu\"}'",
    )
    .await;
    assert_eq!(keys, 1);
    // The store replays to the root's rows (the TRUNCATE empties only its partition).
    assert_store_matches_source(src, store, "public", "orders").await;
    // The partitions created and attached while running were enrolled in that transaction.
    let enrolled = query_count(
        src,
        "SELECT count(*) FROM pg_class c WHERE c.oid IN ('orders_asia'::regclass, 'archive.orders_old'::regclass, 'staging.orders_ca'::regclass)
             AND c.relreplident = 'f' AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgtrail_context')",
    )
    .await;
    assert_eq!(enrolled, 3);
    assert!(
        daemon
            .log()
            .contains("restarting the session to decode its schema"),
        "a partition outside the decoded schemas restarts the session: {}",
        daemon.log()
    );

    orders
}

/// DETACH: the partition is a table of its own again, captured (or not) by its own name.
async fn a_detached_partition_is_a_table_again(
    env: &TestEnv,
    src: &tokio_postgres::Client,
    store: &tokio_postgres::Client,
    orders: &[Entry],
) {
    src.batch_execute(
        "ALTER TABLE orders DETACH PARTITION staging.orders_ca;
         INSERT INTO staging.orders_ca VALUES (8, 'ca', 80);
         ALTER TABLE orders DETACH PARTITION orders_asia;
         INSERT INTO orders_asia VALUES (9, 'asia', 90);
         INSERT INTO orders VALUES (10, 'us', 100);",
    )
    .await
    .unwrap();
    env.sync().await;
    let last_id = orders.last().map_or(0, |e| e.id);
    let after: Vec<Entry> = table_entries(store, "public", "orders")
        .await
        .into_iter()
        .filter(|e| e.id > last_id)
        .collect();
    assert_eq!(
        summary(&after),
        [(
            "INSERT".to_owned(),
            10,
            "us".to_owned(),
            "public.orders_us".to_owned(),
            None
        )],
        "nothing of the detached partitions is stored under the root"
    );
    assert!(
        table_entries(store, "staging", "orders_ca")
            .await
            .is_empty(),
        "staging is not captured"
    );
    let asia = table_entries(store, "public", "orders_asia").await;
    let asia: Vec<(String, Value, Value)> = asia
        .iter()
        .filter(|e| e.action != "DDL")
        .map(|e| (e.action.clone(), e.primary_key.clone(), e.details.clone()))
        .collect();
    assert_eq!(
        asia,
        [(
            "INSERT".to_owned(),
            json!({"id": 9, "region": "asia"}),
            Value::Null
        )],
        "public.orders_asia matches public.* on its own once detached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_captured_under_their_root() {
    let (env, src) = with_schema().await;
    env.setup().await;

    setup_enrolls_every_level(&src).await;
    tables_explains_partitions_by_their_root(&env).await;

    let mut daemon = env.spawn();
    // Streaming before the changes below, so that the partitions made by them are news to it.
    env.sync().await;
    src.batch_execute(CHANGES).await.unwrap();
    env.sync().await;

    let store = env.store().await;
    let orders = entries_carry_the_root_name(&src, &store, &daemon).await;
    a_detached_partition_is_a_table_again(&env, &src, &store, &orders).await;
    daemon.terminate().await;
}

/// A backlog decoded after a restart is named as the partitions were when each change was made,
/// not as the catalog has them at the restart: the map is stored with the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_a_backlog_after_a_restart_is_named_as_it_was_written() {
    let (env, src) = with_schema().await;
    src.batch_execute(
        "CREATE TABLE solo (id int, region text, amount int, PRIMARY KEY (id, region));",
    )
    .await
    .unwrap();
    env.setup().await;
    let store = env.store().await;
    let mut daemon = env.spawn();
    env.sync().await;
    // A tree announced while running: from then on the map is stored with the checkpoint.
    src.batch_execute("CREATE TABLE orders_jp PARTITION OF orders FOR VALUES IN ('jp'); INSERT INTO orders VALUES (30, 'jp', 1);")
        .await
        .unwrap();
    env.sync().await;
    let stored: String = store
        .query_one("SELECT members::text FROM pgtrail.partition_maps", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.contains("\"orders_jp\""), "{stored}");
    daemon.terminate().await;

    // While the daemon is down: solo is a table of its own, then a partition; orders_us a
    // partition, then a table of its own; orders_jp renamed; orders_eu_hi dropped and made
    // again as a plain table.
    src.batch_execute(
        "INSERT INTO solo VALUES (1, 'solo', 10);
         INSERT INTO orders_us VALUES (40, 'us', 40);
         ALTER TABLE orders ATTACH PARTITION solo FOR VALUES IN ('solo');
         ALTER TABLE orders DETACH PARTITION orders_us;
         INSERT INTO solo VALUES (2, 'solo', 20);
         INSERT INTO orders_us VALUES (50, 'us', 50);
         ALTER TABLE orders_jp RENAME TO orders_japan;
         INSERT INTO orders VALUES (31, 'jp', 1);
         DROP TABLE orders_eu_hi;
         CREATE TABLE orders_eu_hi (id int, region text, amount int, PRIMARY KEY (id, region));
         INSERT INTO orders_eu_hi VALUES (5000, 'x', 1);",
    )
    .await
    .unwrap();
    env.wait_slot_inactive().await;
    let mut daemon = env.spawn();
    env.sync().await;

    let named = |entries: Vec<Entry>| -> Vec<(i64, String)> {
        entries
            .iter()
            .filter(|e| e.action == "INSERT")
            .map(|e| {
                (
                    e.key_i64("id"),
                    e.details["partition"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        named(table_entries(&store, "public", "solo").await),
        [(1, "-".to_owned())],
        "solo's change from before the ATTACH is its own"
    );
    assert_eq!(
        named(table_entries(&store, "public", "orders").await),
        [
            (30, "public.orders_jp".to_owned()),
            (40, "public.orders_us".to_owned()),
            (2, "public.solo".to_owned()),
            (31, "public.orders_japan".to_owned())
        ],
        "the root has the changes made while they were its partitions, and only those"
    );
    assert_eq!(
        named(table_entries(&store, "public", "orders_eu_hi").await),
        [(5000, "-".to_owned())],
        "a plain table made under a dropped partition's name is its own"
    );
    assert_eq!(
        named(table_entries(&store, "public", "orders_us").await),
        [(50, "-".to_owned())],
        "orders_us's change from after the DETACH is its own"
    );
    daemon.terminate().await;
}
