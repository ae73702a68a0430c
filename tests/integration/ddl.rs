//! DDL on captured schemas becomes entries with action DDL (command, object, SQL text, context),
//! in commit order among the row changes; decoding stays correct across ADD / DROP / RENAME
//! COLUMN, ALTER … TYPE, table renames and drops; DDL elsewhere is not stored.

use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_entries_and_decoding_across_schema_changes() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA elsewhere;")
            .await;

    src.batch_execute(
        "INSERT INTO t VALUES (1, 'a');
         ALTER TABLE t ADD COLUMN n int DEFAULT 7;
         INSERT INTO t VALUES (2, 'b', 8);
         BEGIN; SET LOCAL pgtrail.actor = 'dba-alice'; ALTER TABLE t RENAME COLUMN v TO label; COMMIT;
         UPDATE t SET label = 'a2' WHERE id = 1;
         ALTER TABLE t ALTER COLUMN n TYPE numeric(10,2);
         UPDATE t SET n = 1.5 WHERE id = 2;
         ALTER TABLE t DROP COLUMN n;
         DELETE FROM t WHERE id = 2;
         ALTER TABLE t RENAME TO t2;
         INSERT INTO t2 VALUES (3, 'c');
         CREATE TABLE elsewhere.x (id int);
         CREATE TABLE gone (id int PRIMARY KEY);
         DROP TABLE gone;",
    )
    .await
    .unwrap();
    env.sync().await;

    let all: Vec<ExportLine> = env.trail.export_jsonl(&[]).await;
    let interesting: Vec<&ExportLine> = all
        .iter()
        .filter(|e| {
            e.value["table"] != json!("it_sync_marker")
                && e.value["table"] != json!("it_sync_marker_pkey")
        })
        .collect();
    let summary: Vec<(String, String, Value)> = interesting
        .iter()
        .map(|e| {
            let v = &e.value;
            let table = v["table"].as_str().unwrap_or("?").to_owned();
            match v["action"].as_str() {
                Some("DDL") => (
                    format!("DDL {}", v["after"]["command_tag"].as_str().unwrap_or("?")),
                    table,
                    v["after"]["object_type"].clone(),
                ),
                Some(a) => (a.to_owned(), table, v["after"].clone()),
                None => panic!("entry without action: {}", e.raw),
            }
        })
        .collect();
    let row = |a: &str, t: &str, after: Value| (a.to_owned(), t.to_owned(), after);
    let ddl = |t: &str, kind: &str| ("DDL ALTER TABLE".to_owned(), t.to_owned(), json!(kind));
    let expected = vec![
        row("INSERT", "t", json!({"id": 1, "v": "a"})),
        ddl("t", "table"),
        row("INSERT", "t", json!({"id": 2, "v": "b", "n": 8})),
        ddl("t", "table column"),
        row("UPDATE", "t", json!({"id": 1, "label": "a2", "n": 7})),
        ddl("t", "table"),
        row("UPDATE", "t", json!({"id": 2, "label": "b", "n": "1.50"})),
        ddl("t", "table"),
        row("DELETE", "t", Value::Null),
        ddl("t2", "table"),
        row("INSERT", "t2", json!({"id": 3, "label": "c"})),
    ];
    assert_eq!(
        &summary[..expected.len().min(summary.len())],
        &expected[..],
        "{summary:#?}"
    );
    // CREATE TABLE gone (with its primary key index), then DROP TABLE gone; nothing from `elsewhere`.
    let rest: Vec<String> = summary[expected.len()..]
        .iter()
        .map(|(a, t, k)| format!("{a} {t} {k}"))
        .collect();
    assert!(
        rest.iter().any(|s| s == "DDL CREATE TABLE gone \"table\""),
        "{rest:#?}"
    );
    assert!(
        rest.iter().any(|s| s == "DDL DROP TABLE gone \"table\""),
        "{rest:#?}"
    );
    assert!(
        !summary.iter().any(|(_, t, _)| t == "x"),
        "DDL outside captured schemas was stored: {summary:#?}"
    );

    // The SQL text is the client's whole query string (current_query()), which here is the batch.
    let rename = interesting
        .iter()
        .find(|e| e.value["after"]["object_type"] == json!("table column"))
        .expect("rename entry");
    assert_eq!(
        rename.value["after"]["object_identity"],
        json!("public.t.label")
    );
    assert!(rename.value["after"]["sql"]
        .as_str()
        .unwrap_or_default()
        .contains("ALTER TABLE t RENAME COLUMN v TO label"));
    assert_eq!(
        rename.value["context"]["actor"],
        json!("dba-alice"),
        "DDL carries the same context as row changes"
    );
    assert_eq!(rename.value["context"]["db_user"], json!("postgres"));
    assert_eq!(rename.value["primary_key"], Value::Null);
    assert_eq!(rename.value["before"], Value::Null);

    let store = env.store().await;
    // Every change is pinned above; the counts show nothing else was stored. (The replay
    // comparator works per table name, and this table was renamed half-way.)
    assert_counts(&store, "public", "t", Counts::new(2, 2, 1, 0)).await;
    assert_counts(&store, "public", "t2", Counts::new(1, 0, 0, 0)).await;
    let rows: Vec<String> = query_column(
        &src,
        "SELECT row_to_json(t2)::text FROM t2 ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        [r#"{"id":1,"label":"a2"}"#, r#"{"id":3,"label":"c"}"#]
    );
    daemon.terminate().await;
}
