//! The store is tamper-evident: `pgtrail verify` passes on what capture and pgtrail's own events
//! wrote (also across SIGKILLs of the daemon), the append-only trigger refuses UPDATE, DELETE and
//! TRUNCATE of entries, and with the trigger disabled every UPDATE, DELETE and INSERT is found and
//! named, while undoing the change makes the store intact again.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// `pgtrail verify --json`: its exit code and report.
async fn verify(env: &TestEnv, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = env.trail.cli(&args).await;
    let code = out.status.code().expect("verify exited by a signal");
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", out.combined()));
    (code, report)
}

async fn assert_intact(env: &TestEnv, entries: i64) {
    let (code, report) = verify(env, &[]).await;
    assert_eq!(code, 0, "verify on an intact store: {report}");
    assert_eq!(report["intact"], true);
    assert_eq!(report["entries"], entries, "{report}");
    assert_eq!(report["breaks_total"], 0);
}

/// The ids the report names as broken, each once (an entry may have several problems).
fn broken_ids(report: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = report["breaks"]
        .as_array()
        .expect("breaks is an array")
        .iter()
        .filter_map(|b| b["id"].as_i64())
        .collect();
    ids.dedup();
    ids
}

/// Waits until the store has everything, stops the daemon, and checks that the store is
/// intact: a client on it and its entry count.
async fn settle(env: &TestEnv, daemon: &mut Daemon) -> (tokio_postgres::Client, i64) {
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    let n: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_intact(env, n).await;
    (store, n)
}

/// Runs `sql` on the store with the append-only triggers of the entries' two tables
/// (pgtrail.entry_rows and pgtrail.transactions, behind the view pgtrail.entries) disabled, as a
/// superuser could.
async fn past_the_trigger(store: &tokio_postgres::Client, sql: &str) {
    past_the_triggers_of(store, &["pgtrail.entry_rows", "pgtrail.transactions"], sql).await;
}

/// The columns of an entry stored once per transaction, in pgtrail.transactions (migration 23);
/// the others are the entry row's own, in pgtrail.entry_rows.
const TRANSACTION_COLUMNS: [&str; 5] = ["xid", "lsn", "context", "actor", "client_addr"];

/// An UPDATE setting `column` of entry `id` to `value` (SQL) in the table that stores it: the
/// entry's row, or its transaction's (every entry of that transaction then reads the new value).
pub(crate) fn set_entry_column(column: &str, id: i64, value: &str) -> String {
    if TRANSACTION_COLUMNS.contains(&column) {
        format!(
            "UPDATE pgtrail.transactions t SET {column} = {value} FROM pgtrail.entry_rows e \
             WHERE e.id = {id} AND t.id = e.txn AND t.committed_at = e.committed_at \
               AND t.source = e.source"
        )
    } else {
        format!("UPDATE pgtrail.entry_rows SET {column} = {value} WHERE id = {id}")
    }
}

/// Deletes entry `id` past the triggers, as a superuser could: its row, and its transaction's
/// row when no other entry has it, so that nothing of the entry is left.
pub(crate) async fn delete_past_the_triggers(store: &tokio_postgres::Client, id: i64) {
    past_the_trigger(
        store,
        &format!(
            "WITH gone AS (DELETE FROM pgtrail.entry_rows WHERE id = {id} \
                           RETURNING txn, committed_at, source) \
             DELETE FROM pgtrail.transactions t USING gone g \
             WHERE t.id = g.txn AND t.committed_at = g.committed_at AND t.source = g.source \
               AND NOT EXISTS (SELECT FROM pgtrail.entry_rows o \
                               WHERE o.txn = t.id AND o.source = t.source AND o.id <> {id})"
        ),
    )
    .await;
}

/// Runs `sql` on the store with the own triggers (the append-only ones) of `tables` disabled, in
/// one transaction, as a superuser could.
pub(crate) async fn past_the_triggers_of(
    store: &tokio_postgres::Client,
    tables: &[&str],
    sql: &str,
) {
    let set = |what: &str| {
        tables
            .iter()
            .map(|t| format!("ALTER TABLE {t} {what} TRIGGER USER;"))
            .collect::<String>()
    };
    let (disable, enable) = (set("DISABLE"), set("ENABLE"));
    store
        .batch_execute(&format!("BEGIN; {disable} {sql}; {enable} COMMIT"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Sets `column` of entry `id` to `forged` (SQL) past the trigger; `verify` must name exactly
/// that entry (in JSON and in text); then puts the stored value back, and the store must be
/// intact again with its `n` entries.
async fn forge_and_restore(
    env: &TestEnv,
    store: &tokio_postgres::Client,
    column: &str,
    id: i64,
    forged: &str,
    n: i64,
) {
    let original: Option<String> = store
        .query_one(
            &format!("SELECT {column}::text FROM pgtrail.entries WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let set = |value: &str| set_entry_column(column, id, value);
    past_the_trigger(store, &set(forged)).await;
    let (code, report) = verify(env, &[]).await;
    assert_eq!(
        (code, broken_ids(&report)),
        (1, vec![id]),
        "{column}: {report}"
    );
    let text = env.trail.cli(&["verify"]).await;
    assert_eq!(text.status.code(), Some(1));
    assert!(
        text.stdout.contains(&format!("BROKEN: entry {id}")),
        "{}",
        text.stdout
    );
    let back = original.map_or_else(|| "NULL".to_owned(), |o| quote_literal(&o));
    past_the_trigger(store, &set(&back)).await;
    assert_intact(env, n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_capture_and_events_across_kills() {
    let env = TestEnv::start().await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    env.setup().await;
    // An empty store is intact.
    assert_intact(&env, 0).await;

    let mut daemon = env.spawn();
    for round in 0..3 {
        let base = round * 1000;
        src.batch_execute(&format!(
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series({base} + 1, {base} + 300) g;
             UPDATE t SET v = v || '!' WHERE id % 7 = 0 AND id > {base};
             DELETE FROM t WHERE id % 11 = 0 AND id > {base};"
        ))
        .await
        .unwrap();
        // Kill while the daemon may be in the middle of a store transaction.
        tokio::time::sleep(Duration::from_millis(60 * round as u64)).await;
        daemon.kill_9().await;
        env.wait_slot_inactive().await;
        daemon = env.spawn();
    }
    // One of pgtrail's own events, in the other chain, between captured changes.
    env.trail
        .cli_with_stdin(
            &["user", "add", "alice", "--role", "admin"],
            "a long password\n",
        )
        .await
        .assert_success();
    src.batch_execute("UPDATE t SET v = 'last' WHERE id = 1")
        .await
        .unwrap();
    let (store, n) = settle(&env, &mut daemon).await;
    // 3 × (300 inserts + 42 updates + 27 deletes), the event, the last update, the sync markers.
    assert!(n > 3 * 369 + 2, "only {n} entries stored");
    let (_, report) = verify(&env, &[]).await;
    // The chains by source name: pgtrail's own events, and the source `app`.
    assert_eq!(report["chains"]["pgtrail"]["entries"], 1, "{report}");
    // The heads agree with the entries, counted by chain.
    let capture: i64 = store
        .query_one(
            "SELECT count(*) FROM pgtrail.entries WHERE action <> 'EVENT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(report["chains"]["app"]["entries"], capture);
    let head: i64 = store
        .query_one(
            "SELECT entries FROM pgtrail.chain_heads WHERE source = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(head, capture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_entries_changed_deleted_or_inserted_past_the_trigger() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    for i in 1..=5 {
        src.execute("INSERT INTO t VALUES ($1, 'v')", &[&i])
            .await
            .unwrap();
    }
    let (store, n) = settle(&env, &mut daemon).await;
    let ids: Vec<i64> = store
        .query(
            "SELECT id FROM pgtrail.entries WHERE table_name = 't' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 5);

    // The triggers of both tables behind the view refuse every change in place, for the store's
    // owner too; the view takes none.
    for sql in [
        set_entry_column("after", ids[1], "'{}'"),
        set_entry_column("context", ids[1], "'{}'"),
        format!("DELETE FROM pgtrail.entry_rows WHERE id = {}", ids[1]),
        "DELETE FROM pgtrail.transactions".to_owned(),
        "TRUNCATE pgtrail.entry_rows".to_owned(),
        "TRUNCATE pgtrail.transactions".to_owned(),
    ] {
        let e = store.batch_execute(&sql).await.expect_err(&sql);
        let db = e.as_db_error().expect("a server error");
        assert!(
            db.message().contains("append-only"),
            "{sql}: {}",
            db.message()
        );
    }
    for sql in [
        format!(
            "UPDATE pgtrail.entries SET after = '{{}}' WHERE id = {}",
            ids[1]
        ),
        format!("DELETE FROM pgtrail.entries WHERE id = {}", ids[1]),
        "TRUNCATE pgtrail.entries".to_owned(),
    ] {
        store.batch_execute(&sql).await.expect_err(&sql);
    }
    assert_intact(&env, n).await;

    // UPDATE: the changed entry is named, and only it; put back as it was, the store is intact
    // again, since the chain covers content, not storage.
    forge_and_restore(
        &env,
        &store,
        "after",
        ids[1],
        r#"'{"id":2,"v":"forged"}'"#,
        n,
    )
    .await;
    // A derived column alone (the actor the web view filters by).
    forge_and_restore(&env, &store, "actor", ids[0], "'mallory'", n).await;
    // The transaction's columns, stored once for its entries: covered by each entry's hash.
    forge_and_restore(&env, &store, "context", ids[3], r#"'{"forged":true}'"#, n).await;
    forge_and_restore(&env, &store, "xid", ids[4], "xid + 1", n).await;

    // DELETE: the entry after the gap is named.
    delete_past_the_triggers(&store, ids[2]).await;
    let (code, report) = verify(&env, &[]).await;
    assert_eq!((code, broken_ids(&report)), (1, vec![ids[3]]), "{report}");
    // A range that starts after the gap verifies.
    let from = ids[4].to_string();
    let (code, _) = verify(&env, &["--from", &from]).await;
    assert_eq!(code, 0);

    // INSERT (a copy of an entry, with its hash): named, and so is the head.
    past_the_trigger(
        &store,
        &format!(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, after, context, row_key, actor, hash, source) \
             SELECT committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, \
                 context, row_key, actor, hash, source FROM pgtrail.entries WHERE id = {}",
            ids[4]
        ),
    )
    .await;
    let inserted: i64 = store
        .query_one("SELECT max(id) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);
    let (code, report) = verify(&env, &[]).await;
    assert_eq!(code, 1);
    let broken = broken_ids(&report);
    assert_eq!(broken, vec![ids[3], inserted], "{report}");
    assert!(
        report["breaks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"].is_null() && b["problem"].as_str().unwrap().contains("head")),
        "the head disagrees too: {report}"
    );
}
