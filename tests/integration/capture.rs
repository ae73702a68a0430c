//! Capture semantics: every action (INSERT, UPDATE, DELETE, TRUNCATE, including a TRUNCATE of two
//! tables), before/after images under REPLICA IDENTITY FULL and DEFAULT, changed_columns,
//! composite and missing primary keys, quoted identifiers, include/exclude patterns, rolled-back
//! transactions and savepoints (commit order across interleaved transactions is in
//! `capture_order`). Every test replays the store against the source table and checks exact
//! per-action counts.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::harness::*;

/// What the source says about one committed transaction, to check its entries against.
struct Txn {
    xid: i64,
    lsn_before: u64,
    lsn_after: u64,
    t_before: DateTime<Utc>,
    t_after: DateTime<Utc>,
}

impl Txn {
    /// Run `sql` in one transaction on `src` and record its xid and LSN/time bounds.
    async fn run(src: &Client, sql: &str) -> Txn {
        let lsn_before = current_lsn(src).await;
        let t_before = Utc::now();
        src.batch_execute("BEGIN").await.unwrap();
        let xid: i64 = src
            .query_one("SELECT txid_current()", &[])
            .await
            .unwrap()
            .get(0);
        src.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        src.batch_execute("COMMIT").await.unwrap();
        let t_after = Utc::now();
        let lsn_after = current_lsn(src).await;
        Txn {
            xid,
            lsn_before,
            lsn_after,
            t_before,
            t_after,
        }
    }

    /// The entry belongs to this transaction: same xid, commit LSN inside the transaction's WAL
    /// range, commit time inside its wall-clock range (same machine; 1 s of slack).
    fn check(&self, e: &Entry) {
        assert_eq!(e.xid, self.xid, "xid of entry {e:?}");
        let lsn = parse_lsn(&e.lsn);
        assert!(
            self.lsn_before < lsn && lsn <= self.lsn_after,
            "entry {} lsn {} outside the transaction's WAL range {}..{}",
            e.id,
            e.lsn,
            format_lsn(self.lsn_before),
            format_lsn(self.lsn_after)
        );
        let slack = chrono::Duration::seconds(1);
        assert!(
            self.t_before - slack <= e.committed_at && e.committed_at <= self.t_after + slack,
            "entry {} committed_at {} outside {}..{}",
            e.id,
            e.committed_at,
            self.t_before,
            self.t_after
        );
        assert!(
            e.context.is_object(),
            "entry {} context is not an object: {}",
            e.id,
            e.context
        );
    }
}

fn actions(entries: &[Entry]) -> Vec<(String, Value)> {
    entries
        .iter()
        .map(|e| (e.action.clone(), e.primary_key.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_with_full_identity() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(8,2));
         ALTER TABLE items REPLICA IDENTITY FULL;",
    )
    .await;

    let a = Txn::run(
        &src,
        "INSERT INTO items VALUES (1, 'apple', 10, 1.5), (2, 'pear', 20, 2), (3, 'plum', 30, NULL)",
    )
    .await;
    let b = Txn::run(
        &src,
        "UPDATE items SET qty = 21 WHERE id = 2;
         UPDATE items SET name = 'plum jam', price = 3.25 WHERE id = 3;
         UPDATE items SET qty = qty WHERE id = 1;",
    )
    .await;
    let c = Txn::run(&src, "DELETE FROM items WHERE id = 1").await;
    env.sync().await;

    let store = env.store().await;
    let e = table_entries(&store, "public", "items").await;
    assert_eq!(e.len(), 7, "entries: {e:#?}");

    for (i, (id, row)) in [
        (
            1,
            json!({"id": 1, "name": "apple", "qty": 10, "price": "1.50"}),
        ),
        (
            2,
            json!({"id": 2, "name": "pear", "qty": 20, "price": "2.00"}),
        ),
        (
            3,
            json!({"id": 3, "name": "plum", "qty": 30, "price": null}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(e[i].action, "INSERT");
        assert_eq!(e[i].primary_key, json!({ "id": id }));
        assert_eq!(e[i].before, Value::Null);
        assert_eq!(e[i].after, row);
        assert_eq!(e[i].changed_columns, Value::Null);
        a.check(&e[i]);
    }

    assert_eq!(e[3].action, "UPDATE");
    assert_eq!(e[3].primary_key, json!({"id": 2}));
    assert_eq!(
        e[3].before,
        json!({"id": 2, "name": "pear", "qty": 20, "price": "2.00"})
    );
    assert_eq!(
        e[3].after,
        json!({"id": 2, "name": "pear", "qty": 21, "price": "2.00"})
    );
    assert_eq!(e[3].changed_columns, json!(["qty"]));

    assert_eq!(e[4].action, "UPDATE");
    assert_eq!(
        e[4].before,
        json!({"id": 3, "name": "plum", "qty": 30, "price": null})
    );
    assert_eq!(
        e[4].after,
        json!({"id": 3, "name": "plum jam", "qty": 30, "price": "3.25"})
    );
    assert_eq!(
        e[4].changed_columns,
        json!(["name", "price"]),
        "changed_columns in column order"
    );

    assert_eq!(
        e[5].action, "UPDATE",
        "an UPDATE that changes nothing is still an UPDATE"
    );
    assert_eq!(e[5].before, e[5].after);
    assert_eq!(e[5].changed_columns, json!([]), "no column differs");
    for entry in &e[3..6] {
        b.check(entry);
    }

    assert_eq!(e[6].action, "DELETE");
    assert_eq!(e[6].primary_key, json!({"id": 1}));
    assert_eq!(
        e[6].before,
        json!({"id": 1, "name": "apple", "qty": 10, "price": "1.50"})
    );
    assert_eq!(e[6].after, Value::Null);
    assert_eq!(e[6].changed_columns, Value::Null);
    c.check(&e[6]);

    // Entries of one transaction share xid, lsn and committed_at; ids follow commit order.
    assert!(e[0..3]
        .iter()
        .all(|x| x.lsn == e[0].lsn && x.committed_at == e[0].committed_at));
    assert!(e[3..6]
        .iter()
        .all(|x| x.lsn == e[3].lsn && x.committed_at == e[3].committed_at));
    assert!(
        parse_lsn(&e[0].lsn) < parse_lsn(&e[3].lsn) && parse_lsn(&e[3].lsn) < parse_lsn(&e[6].lsn)
    );
    assert!(e.windows(2).all(|w| w[0].id < w[1].id));

    assert_counts(&store, "public", "items", Counts::new(3, 3, 1, 0)).await;
    assert_store_matches_source(&src, &store, "public", "items").await;

    // TRUNCATE: one entry with primary_key/before/after/changed_columns null.
    let t = Txn::run(&src, "TRUNCATE items").await;
    src.batch_execute("INSERT INTO items VALUES (7, 'fig', 1, 0.5)")
        .await
        .unwrap();
    env.sync().await;
    let e = table_entries(&store, "public", "items").await;
    assert_eq!(e.len(), 9);
    assert_eq!(e[7].action, "TRUNCATE");
    assert_eq!(
        (
            &e[7].primary_key,
            &e[7].before,
            &e[7].after,
            &e[7].changed_columns
        ),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
    );
    t.check(&e[7]);
    assert_eq!(e[8].action, "INSERT");
    assert_counts(&store, "public", "items", Counts::new(4, 3, 1, 1)).await;
    assert_store_matches_source(&src, &store, "public", "items").await;

    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_of_two_tables_gives_one_entry_per_table() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE t_one (id int PRIMARY KEY, v text);
         CREATE TABLE t_two (k text PRIMARY KEY, n int);
         CREATE TABLE t_three (id int PRIMARY KEY);",
    )
    .await;

    src.batch_execute(
        "INSERT INTO t_one SELECT g, 'v' || g FROM generate_series(1, 5) g;
         INSERT INTO t_two SELECT 'k' || g, g FROM generate_series(1, 3) g;
         INSERT INTO t_three VALUES (1);",
    )
    .await
    .unwrap();
    let t = Txn::run(&src, "TRUNCATE t_one, t_two").await;
    // A TRUNCATE inside a transaction with row changes on both sides of it.
    let u = Txn::run(&src, "INSERT INTO t_one VALUES (100, 'before'); TRUNCATE t_one; INSERT INTO t_one VALUES (101, 'after')").await;
    env.sync().await;

    let store = env.store().await;
    let all = entries(&store).await;
    let truncates: Vec<&Entry> = all
        .iter()
        .filter(|e| e.action == "TRUNCATE" && e.xid == t.xid)
        .collect();
    let mut tables: Vec<&str> = truncates.iter().map(|e| e.table.as_str()).collect();
    tables.sort();
    assert_eq!(
        tables,
        ["t_one", "t_two"],
        "one TRUNCATE entry per table: {truncates:#?}"
    );
    for e in &truncates {
        t.check(e);
        assert_eq!(e.lsn, truncates[0].lsn);
        assert_eq!(e.schema, "public");
    }
    assert!(
        truncates.windows(2).all(|w| w[1].id == w[0].id + 1),
        "the two TRUNCATE entries are adjacent"
    );

    let in_u: Vec<(String, Value)> = actions(
        &all.iter()
            .filter(|e| e.xid == u.xid)
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        in_u,
        vec![
            ("INSERT".to_string(), json!({"id": 100})),
            ("TRUNCATE".to_string(), Value::Null),
            ("INSERT".to_string(), json!({"id": 101})),
        ],
        "WAL order within a transaction"
    );

    assert_counts(&store, "public", "t_one", Counts::new(7, 0, 0, 2)).await;
    assert_counts(&store, "public", "t_two", Counts::new(3, 0, 0, 1)).await;
    assert_counts(&store, "public", "t_three", Counts::new(1, 0, 0, 0)).await;
    for table in ["t_one", "t_two", "t_three"] {
        assert_store_matches_source(&src, &store, "public", table).await;
    }
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_identity_before_holds_only_the_key() {
    // before_images = false: setup leaves the table's REPLICA IDENTITY DEFAULT.
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.before_images = false).await;
    let src = env
        .source_with("CREATE TABLE d (id int PRIMARY KEY, v text, n int)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();

    src.batch_execute(
        "INSERT INTO d VALUES (1, 'one', 1), (5, 'five', 5);
         UPDATE d SET v = 'uno' WHERE id = 1;
         UPDATE d SET id = 2 WHERE id = 1;
         DELETE FROM d WHERE id = 2;",
    )
    .await
    .unwrap();
    env.sync().await;

    let store = env.store().await;
    let e = table_entries(&store, "public", "d").await;
    assert_eq!(e.len(), 5, "{e:#?}");
    assert_eq!(e[2].action, "UPDATE");
    assert_eq!(
        e[2].before,
        json!({"id": 1}),
        "DEFAULT identity: before is the key only"
    );
    assert_eq!(e[2].after, json!({"id": 1, "v": "uno", "n": 1}));
    assert_eq!(
        e[2].changed_columns,
        Value::Null,
        "before image incomplete → changed_columns null"
    );
    assert_eq!(e[3].action, "UPDATE");
    assert_eq!(
        e[3].before,
        json!({"id": 1}),
        "old key of a key-changing UPDATE"
    );
    assert_eq!(
        e[3].primary_key,
        json!({"id": 2}),
        "primary_key of an UPDATE comes from after"
    );
    assert_eq!(e[3].changed_columns, Value::Null);
    assert_eq!(e[4].action, "DELETE");
    assert_eq!(e[4].before, json!({"id": 2}));
    assert_eq!(e[4].primary_key, json!({"id": 2}));
    assert_eq!(e[4].after, Value::Null);

    assert_counts(&store, "public", "d", Counts::new(2, 2, 1, 0)).await;
    assert_store_matches_source(&src, &store, "public", "d").await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_and_missing_primary_keys() {
    // `lines` keeps REPLICA IDENTITY DEFAULT; the others set FULL themselves.
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.before_images = false).await;
    let src = env.source().await;
    src.batch_execute(
        // Key declared in an order different from the column order.
        "CREATE TABLE lines (id int, val text, region text, PRIMARY KEY (region, id));
         -- Key in column order, under FULL identity.
         CREATE TABLE pairs (a int, b int, v text, PRIMARY KEY (a, b));
         ALTER TABLE pairs REPLICA IDENTITY FULL;
         -- No key at all: FULL identity, duplicates allowed.
         CREATE TABLE nopk (a int, b text);
         ALTER TABLE nopk REPLICA IDENTITY FULL;",
    )
    .await
    .unwrap();
    env.setup().await;
    let mut daemon = env.spawn();

    src.batch_execute(
        "INSERT INTO lines VALUES (1, 'x', 'eu'), (1, 'y', 'us'), (2, 'z', 'eu');
         UPDATE lines SET val = 'y2' WHERE region = 'us' AND id = 1;
         UPDATE lines SET region = 'apac' WHERE region = 'eu' AND id = 2;
         DELETE FROM lines WHERE region = 'eu' AND id = 1;
         INSERT INTO pairs VALUES (1, 2, 'p'), (3, 4, 'q');
         UPDATE pairs SET b = 5 WHERE a = 1 AND b = 2;
         DELETE FROM pairs WHERE a = 3;
         INSERT INTO nopk VALUES (1, 'x'), (1, 'x'), (2, 'y'), (NULL, NULL);
         UPDATE nopk SET b = 'x2' WHERE ctid = (SELECT ctid FROM nopk WHERE a = 1 LIMIT 1);
         DELETE FROM nopk WHERE a = 2;",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;

    let l = table_entries(&store, "public", "lines").await;
    assert_eq!(l.len(), 6);
    assert_eq!(l[0].primary_key, json!({"region": "eu", "id": 1}));
    assert_eq!(l[3].action, "UPDATE");
    assert_eq!(
        l[3].before,
        json!({"region": "us", "id": 1}),
        "DEFAULT identity of a composite key"
    );
    assert_eq!(l[4].before, json!({"region": "eu", "id": 2}));
    assert_eq!(l[4].primary_key, json!({"region": "apac", "id": 2}));
    assert_eq!(l[5].action, "DELETE");
    assert_eq!(l[5].primary_key, json!({"region": "eu", "id": 1}));
    assert_counts(&store, "public", "lines", Counts::new(3, 2, 1, 0)).await;

    let p = table_entries(&store, "public", "pairs").await;
    assert_eq!(p.len(), 4);
    let key_order = OrderedObject::parse(p[0].primary_key_text.as_deref().unwrap());
    assert_eq!(
        key_order.keys(),
        ["a", "b"],
        "composite key in key order: {:?}",
        p[0].primary_key_text
    );
    assert_eq!(p[2].action, "UPDATE");
    assert_eq!(p[2].before, json!({"a": 1, "b": 2, "v": "p"}));
    assert_eq!(p[2].after, json!({"a": 1, "b": 5, "v": "p"}));
    assert_eq!(p[2].primary_key, json!({"a": 1, "b": 5}));
    assert_eq!(p[2].changed_columns, json!(["b"]));
    assert_eq!(p[3].primary_key, json!({"a": 3, "b": 4}));
    assert_counts(&store, "public", "pairs", Counts::new(2, 1, 1, 0)).await;

    let n = table_entries(&store, "public", "nopk").await;
    assert_eq!(n.len(), 6);
    assert!(
        n.iter().all(|e| e.primary_key.is_null()),
        "no primary key → primary_key null: {n:#?}"
    );
    assert_eq!(n[3].after, json!({"a": null, "b": null}));
    assert_eq!(n[4].action, "UPDATE");
    assert_eq!(
        n[4].before,
        json!({"a": 1, "b": "x"}),
        "FULL identity: the whole old row"
    );
    assert_eq!(n[4].after, json!({"a": 1, "b": "x2"}));
    assert_eq!(n[4].changed_columns, json!(["b"]));
    assert_eq!(n[5].action, "DELETE");
    assert_eq!(n[5].before, json!({"a": 2, "b": "y"}));
    assert_counts(&store, "public", "nopk", Counts::new(4, 1, 1, 0)).await;

    for t in ["lines", "pairs", "nopk"] {
        assert_store_matches_source(&src, &store, "public", t).await;
    }
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_identifiers() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.*".into(), "Sales EU.*".into()];
    })
    .await;
    let src = env.source().await;
    src.batch_execute(
        r#"CREATE SCHEMA "Sales EU";
           CREATE TABLE "Sales EU"."Order Items" (id int PRIMARY KEY, "Qty" int, "note""s" text, "select" text);
           ALTER TABLE "Sales EU"."Order Items" REPLICA IDENTITY FULL;
           CREATE TABLE "Sales EU".plain (id int PRIMARY KEY);
           CREATE TABLE public."Order Items" (id int PRIMARY KEY, v text);
           CREATE SCHEMA "sales eu";
           CREATE TABLE "sales eu"."Order Items" (id int PRIMARY KEY);"#,
    )
    .await
    .unwrap();
    env.setup().await;
    let mut daemon = env.spawn();

    src.batch_execute(
        r#"INSERT INTO "Sales EU"."Order Items" VALUES (1, 3, 'say "hi"', 'from'), (2, 4, NULL, 'where');
           UPDATE "Sales EU"."Order Items" SET "Qty" = 5, "note""s" = 'it''s' WHERE id = 1;
           DELETE FROM "Sales EU"."Order Items" WHERE id = 2;
           INSERT INTO "Sales EU".plain VALUES (1), (2);
           INSERT INTO public."Order Items" VALUES (1, 'public one');
           INSERT INTO "sales eu"."Order Items" VALUES (1);"#,
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;

    let tables = captured_tables(&store).await;
    let expected: Vec<(String, String)> = [
        ("Sales EU", "Order Items"),
        ("Sales EU", "plain"),
        ("public", "Order Items"),
        ("public", MARKER_TABLE),
    ]
    .iter()
    .map(|(s, t)| (s.to_string(), t.to_string()))
    .collect::<BTreeSet<_>>()
    .into_iter()
    .collect();
    assert_eq!(
        tables, expected,
        "raw, case-sensitive names; \"sales eu\" is not \"Sales EU\""
    );

    let e = table_entries(&store, "Sales EU", "Order Items").await;
    assert_eq!(e.len(), 4);
    let keys: BTreeSet<&str> = e[0]
        .after
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "Qty", "note\"s", "select"]));
    assert_eq!(e[0].after["note\"s"], json!("say \"hi\""));
    assert_eq!(e[2].action, "UPDATE");
    assert_eq!(e[2].changed_columns, json!(["Qty", "note\"s"]));
    assert_eq!(e[2].after["note\"s"], json!("it's"));

    assert_counts(&store, "Sales EU", "Order Items", Counts::new(2, 1, 1, 0)).await;
    assert_counts(&store, "Sales EU", "plain", Counts::new(2, 0, 0, 0)).await;
    assert_counts(&store, "public", "Order Items", Counts::new(1, 0, 0, 0)).await;
    assert_store_matches_source(&src, &store, "Sales EU", "Order Items").await;
    assert_store_matches_source(&src, &store, "Sales EU", "plain").await;
    assert_store_matches_source(&src, &store, "public", "Order Items").await;

    // export --table takes the raw names, schema.table.
    let lines = env
        .trail
        .export_jsonl(&["--table", "Sales EU.Order Items"])
        .await;
    let ids: Vec<i64> = lines.iter().map(ExportLine::id).collect();
    assert_eq!(
        ids,
        e.iter().map(|x| x.id).collect::<Vec<_>>(),
        "export --table 'Sales EU.Order Items'"
    );
    assert!(lines
        .iter()
        .all(|l| l.value["schema"] == "Sales EU" && l.value["table"] == "Order Items"));

    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_patterns() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.*".into(), "other.keep_*".into()];
        c.exclude = vec!["public.secret*".into(), "public.skip_me".into()];
    })
    .await;
    let src = env.source().await;
    let all_tables = [
        ("public", "plain", true),
        ("public", "secret_a", false),
        ("public", "secrets", false),
        ("public", "notsecret", true),
        ("public", "skip_me", false),
        ("public", "skip_me_too", true),
        ("other", "keep_one", true),
        ("other", "keep_two", true),
        ("other", "drop_one", false),
        ("public_two", "plain", false),
        ("Other", "keep_x", false),
    ];
    src.batch_execute(r#"CREATE SCHEMA other; CREATE SCHEMA public_two; CREATE SCHEMA "Other";"#)
        .await
        .unwrap();
    for (s, t, _) in all_tables {
        src.batch_execute(&format!(
            "CREATE TABLE {} (id int PRIMARY KEY, v text)",
            qualified(s, t)
        ))
        .await
        .unwrap();
    }
    env.setup().await;
    let mut daemon = env.spawn();
    let every = all_tables.iter().copied();
    for (s, t, _) in every.clone() {
        let q = qualified(s, t);
        src.batch_execute(&format!(
            "INSERT INTO {q} VALUES (1, 'a'), (2, 'b'), (3, 'c');
             UPDATE {q} SET v = 'bb' WHERE id = 2;
             DELETE FROM {q} WHERE id = 3;"
        ))
        .await
        .unwrap();
    }
    env.sync().await;
    let store = env.store().await;

    let mut expected: Vec<(String, String)> = every
        .clone()
        .filter(|(_, _, yes)| *yes)
        .map(|(s, t, _)| (s.to_string(), t.to_string()))
        .collect();
    expected.push(("public".into(), MARKER_TABLE.into()));
    expected.sort();
    assert_eq!(captured_tables(&store).await, expected);
    for (s, t, yes) in every {
        let want = if yes {
            Counts::new(3, 1, 1, 0)
        } else {
            Counts::default()
        };
        assert_counts(&store, s, t, want).await;
        if yes {
            assert_store_matches_source(&src, &store, s, t).await;
        }
    }
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_and_savepoint_rollbacks_never_appear() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE r (id int PRIMARY KEY, v text); ALTER TABLE r REPLICA IDENTITY FULL;",
    )
    .await;

    src.batch_execute(
        "BEGIN; INSERT INTO r VALUES (1, 'gone'); UPDATE r SET v = 'gone too'; ROLLBACK;",
    )
    .await
    .unwrap();
    let kept = Txn::run(
        &src,
        "INSERT INTO r VALUES (10, 'ten');
         SAVEPOINT a;
         INSERT INTO r VALUES (11, 'eleven');
         UPDATE r SET v = 'changed' WHERE id = 10;
         DELETE FROM r WHERE id = 10;
         ROLLBACK TO SAVEPOINT a;
         INSERT INTO r VALUES (12, 'twelve');
         SAVEPOINT b;
         INSERT INTO r VALUES (13, 'thirteen');
         RELEASE SAVEPOINT b;
         SAVEPOINT c;
         SAVEPOINT d;
         INSERT INTO r VALUES (14, 'fourteen');
         RELEASE SAVEPOINT d;
         ROLLBACK TO SAVEPOINT c;
         UPDATE r SET v = 'kept' WHERE id = 12;",
    )
    .await;
    // A transaction that fails and is rolled back.
    src.batch_execute("BEGIN; INSERT INTO r VALUES (20, 'x');")
        .await
        .unwrap();
    assert!(src
        .batch_execute("INSERT INTO r VALUES (10, 'duplicate')")
        .await
        .is_err());
    src.batch_execute("ROLLBACK").await.unwrap();
    // A TRUNCATE rolled back to a savepoint.
    src.batch_execute("BEGIN; INSERT INTO r VALUES (30, 'thirty'); SAVEPOINT s; TRUNCATE r; ROLLBACK TO SAVEPOINT s; COMMIT;")
        .await
        .unwrap();
    src.batch_execute("INSERT INTO r VALUES (40, 'forty')")
        .await
        .unwrap();
    env.sync().await;

    let store = env.store().await;
    let e = table_entries(&store, "public", "r").await;
    let got: Vec<(String, Value)> = actions(&e);
    let want: Vec<(String, Value)> = [
        ("INSERT", 10),
        ("INSERT", 12),
        ("INSERT", 13),
        ("UPDATE", 12),
        ("INSERT", 30),
        ("INSERT", 40),
    ]
    .iter()
    .map(|(a, id)| (a.to_string(), json!({ "id": id })))
    .collect();
    assert_eq!(got, want);
    for x in &e[0..4] {
        kept.check(x); // subtransaction changes carry the top-level xid
    }
    assert_eq!(e[3].before, json!({"id": 12, "v": "twelve"}));
    assert_eq!(e[3].after, json!({"id": 12, "v": "kept"}));
    assert_counts(&store, "public", "r", Counts::new(5, 1, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "r").await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_created_while_running_is_captured_if_it_matches() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.exclude = vec!["public.secret*".into()];
    })
    .await;
    let src = env
        .source_with("CREATE TABLE early (id int PRIMARY KEY, v text)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO early VALUES (1, 'a')")
        .await
        .unwrap();
    env.sync().await;

    // DDL is not decoded: the daemon must notice new tables that match its patterns by itself.
    src.batch_execute(
        "CREATE TABLE late (id int PRIMARY KEY, v text);
         CREATE TABLE secret_late (id int PRIMARY KEY, v text);",
    )
    .await
    .unwrap();
    src.batch_execute(
        "INSERT INTO late VALUES (1, 'a'), (2, 'b'); UPDATE late SET v = 'c' WHERE id = 2;
         INSERT INTO secret_late VALUES (1, 'hidden');
         INSERT INTO early VALUES (2, 'b');",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    assert_counts(&store, "public", "early", Counts::new(2, 0, 0, 0)).await;
    assert_counts(&store, "public", "late", Counts::new(2, 1, 0, 0)).await;
    assert_counts(&store, "public", "secret_late", Counts::default()).await;
    assert_store_matches_source(&src, &store, "public", "late").await;
    daemon.terminate().await;
}
