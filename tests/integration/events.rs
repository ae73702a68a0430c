//! pgtrail's own events (`store::events`): stored as `EVENT` entries beside the captured row
//! changes, without a source transaction, with `source = "pgtrail"` and their particulars in
//! `details`; exported like any entry; the store refuses an event that claims a transaction.

use serde_json::{json, Value};

use crate::harness::*;
use pgtrail::store::events::{record, Category, OwnEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_events_are_entries_between_row_changes() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let store = env.store().await;

    src.batch_execute("INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    env.sync().await;
    let mut event = OwnEvent::new(
        Category::User,
        "role_changed",
        "pgtrail cli",
        "role of alice changed to admin",
    )
    .actor("root-admin")
    .client_addr(Some("10.1.2.3".into()))
    .detail("by", "cli");
    event.primary_key = Some(json!({"name": "alice"}));
    event.before = json!({"name": "alice", "role": "viewer"})
        .as_object()
        .cloned();
    event.after = json!({"name": "alice", "role": "admin"})
        .as_object()
        .cloned();
    let event_id = record(&store, &event).await.expect("record an event");
    src.batch_execute("UPDATE t SET v = 'b' WHERE id = 1")
        .await
        .unwrap();
    env.sync().await;

    let lines: Vec<ExportLine> = env
        .trail
        .export_jsonl(&[])
        .await
        .into_iter()
        .filter(|l| l.value["table"] != MARKER_TABLE)
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l.value["action"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        actions,
        ["INSERT", "EVENT", "UPDATE"],
        "the event sits between the changes it was recorded between"
    );
    let e = &lines[1].value;
    assert_eq!(e["id"].as_i64(), Some(event_id));
    assert_eq!(e["xid"], Value::Null);
    assert_eq!(e["lsn"], Value::Null);
    assert_eq!(e["schema"], "pgtrail");
    assert_eq!(e["table"], "user");
    assert_eq!(e["primary_key"], json!({"name": "alice"}));
    assert_eq!(e["before"], json!({"name": "alice", "role": "viewer"}));
    assert_eq!(e["after"], json!({"name": "alice", "role": "admin"}));
    assert_eq!(e["changed_columns"], json!(["role"]));
    assert_eq!(e["context"]["source"], "pgtrail");
    assert_eq!(e["context"]["actor"], "root-admin");
    assert_eq!(e["context"]["client_addr"], "10.1.2.3");
    assert_eq!(e["context"]["remarks"], "role of alice changed to admin");
    assert_eq!(e["details"], json!({"event": "role_changed", "by": "cli"}));
    // The plain columns the web view filters and sorts by, as for a row change.
    let cols = store
        .query_one(
            "SELECT actor, host(client_addr) FROM pgtrail.entries WHERE id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(
        cols.get::<_, Option<String>>(0).as_deref(),
        Some("root-admin")
    );
    assert_eq!(
        cols.get::<_, Option<String>>(1).as_deref(),
        Some("10.1.2.3")
    );
    for row_change in [&lines[0].value, &lines[2].value] {
        assert!(
            row_change["xid"].as_i64().is_some(),
            "a row change keeps its transaction: {row_change}"
        );
        assert_eq!(row_change["details"], Value::Null);
    }

    // Only an event may lack a source transaction, and a transaction is an xid and an LSN
    // together. (The daemon's security events belong to one: docs/security.md.)
    for (sql, constraint) in [
        (
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, context, source) \
             VALUES (now(), NULL, NULL, 'public', 't', 'UPDATE', '{}', 0)",
            "entries_only_events_lack_txn",
        ),
        (
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, context, source) \
             VALUES (now(), 7, NULL, 'pgtrail', 'user', 'EVENT', '{}', 0)",
            // On the transaction's row since migration 23.
            "transactions_whole",
        ),
    ] {
        let err = store.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains(constraint), "{err:?}");
    }
    daemon.terminate().await;
}
