//! Least privilege in the store: `setup` (as a superuser) creates the group roles pgtrail_writer
//! and pgtrail_reader; a daemon whose login role is only a writer captures exactly as before and
//! records its events, a reader records events (a CLI user change) only through
//! pgtrail.record_event, and neither can change or remove an entry, nor can the reader write one or record
//! a gap or quarantine event.

use crate::harness::*;

/// Connects as `user`, which must succeed.
async fn client_as(env: &TestEnv, user: &str) -> tokio_postgres::Client {
    connect(&env.cluster.url_as("pgtrail", user, Some("pw")))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

/// `sql` as this client must fail with permission denied (SQLSTATE 42501).
async fn assert_denied(client: &tokio_postgres::Client, who: &str, sql: &str) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{who} may not: {sql}"));
    let code = e.as_db_error().map(|d| d.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{who}: {sql}: {e}");
}

/// `sql` as this client must fail (a change the view pgtrail.entries does not take, for anyone).
async fn assert_refused(client: &tokio_postgres::Client, who: &str, sql: &str) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{who} may not: {sql}"));
    assert!(e.as_db_error().is_some(), "{who}: {sql}: {e}");
}

/// An entry row and its transaction (pgtrail.entry_rows, pgtrail.transactions: the tables behind
/// the view pgtrail.entries since migration 23), with the entry's `id` given or not.
fn insert_entry_sql(with_id: bool) -> String {
    let (id_column, id) = if with_id {
        ("id, ", "nextval('pgtrail.entries_id_seq'), ")
    } else {
        ("", "")
    };
    format!(
        "INSERT INTO pgtrail.transactions (id, committed_at, source, xid, lsn, context) \
         VALUES (nextval('pgtrail.transactions_id_seq'), now(), 1, 1, '0/1', '{{}}'); \
         INSERT INTO pgtrail.entry_rows ({id_column}committed_at, schema_name, table_name, action, \
             source, txn) \
         VALUES ({id}now(), 'public', 't', 'INSERT', 1, currval('pgtrail.transactions_id_seq'))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_reader_roles_can_do_their_part_and_no_more() {
    let mut env = TestEnv::start().await;
    let src = env.source().await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let setup = env.trail.cli(&["setup"]).await;
    setup.assert_success();
    assert!(
        setup.stdout.contains("pgtrail_writer") && setup.stdout.contains("granted"),
        "{}",
        setup.stdout
    );
    let admin = env.cluster.client("postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE trail_daemon LOGIN PASSWORD 'pw' IN ROLE pgtrail_writer;
             CREATE ROLE trail_web LOGIN PASSWORD 'pw' IN ROLE pgtrail_reader;
             CREATE ROLE stranger LOGIN PASSWORD 'pw';",
        )
        .await
        .unwrap();

    // The daemon as a writer only.
    let superuser_store = env.trail.config.store_url.clone();
    let mut config = env.trail.config.clone();
    config.store_url = env.cluster.url_as("pgtrail", "trail_daemon", Some("pw"));
    env.trail.rewrite(config.clone());
    let mut daemon = env.spawn();
    src.batch_execute(
        "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;
         UPDATE t SET v = 'w' WHERE id <= 10;
         DELETE FROM t WHERE id > 40;",
    )
    .await
    .unwrap();
    env.sync().await;
    daemon.terminate().await;
    let store = client_as(&env, "trail_daemon").await;
    let stored: i64 = store
        .query_one(
            "SELECT count(*) FROM pgtrail.entries WHERE table_name = 't'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 70, "50 inserts, 10 updates, 10 deletes");

    // A reader records an event through the function (a user added from the CLI).
    config.store_url = env.cluster.url_as("pgtrail", "trail_web", Some("pw"));
    env.trail.rewrite(config.clone());
    env.trail
        .cli_with_stdin(
            &["user", "add", "carol", "--role", "viewer"],
            "a long password\n",
        )
        .await
        .assert_success();
    // And the reader can verify everything.
    let verify = env.trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());

    let reader = client_as(&env, "trail_web").await;
    let n: i64 = reader
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 70);
    let stranger = client_as(&env, "stranger").await;
    for (who, client) in [
        ("writer", &store),
        ("reader", &reader),
        ("stranger", &stranger),
    ] {
        for table in ["pgtrail.entry_rows", "pgtrail.transactions"] {
            assert_denied(client, who, &format!("UPDATE {table} SET source = 1")).await;
            assert_denied(client, who, &format!("DELETE FROM {table}")).await;
            assert_denied(client, who, &format!("TRUNCATE {table}")).await;
        }
        assert_refused(client, who, "UPDATE pgtrail.entries SET after = '{}'").await;
        assert_refused(client, who, "DELETE FROM pgtrail.entries").await;
        assert_refused(client, who, "TRUNCATE pgtrail.entries").await;
        // Nobody but the store's owner inserts into the view: the writer writes the two tables.
        assert_denied(
            client,
            who,
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, context, source) \
             VALUES (now(), 1, '0/1', 'public', 't', 'INSERT', '{}', 1)",
        )
        .await;
    }
    // The writer writes an entry row (not choosing its id) and its transaction; rolled back
    // here, the store as it was.
    store
        .batch_execute(&format!("BEGIN; {}; ROLLBACK", insert_entry_sql(false)))
        .await
        .unwrap_or_else(|e| panic!("the writer writes an entry row and its transaction: {e}"));
    assert_denied(
        &store,
        "writer",
        &format!("BEGIN; {}", insert_entry_sql(true)),
    )
    .await;
    store.batch_execute("ROLLBACK").await.unwrap();
    for (who, client) in [("reader", &reader), ("stranger", &stranger)] {
        assert_denied(
            client,
            who,
            "INSERT INTO pgtrail.transactions (id, committed_at, source, xid, lsn, context) \
             VALUES (1, now(), 1, 1, '0/1', '{}')",
        )
        .await;
        assert_denied(
            client,
            who,
            "INSERT INTO pgtrail.entry_rows (committed_at, schema_name, table_name, action, source, txn) \
             VALUES (now(), 'public', 't', 'INSERT', 1, 1)",
        )
        .await;
        assert_denied(client, who, "UPDATE pgtrail.checkpoints SET lsn = '0/1'").await;
        // (The writer moves the chain heads, as it must: a stolen writer
        // credential is the limit of what roles can prevent; signed heads
        // kept outside the store are the answer there.)
        assert_denied(client, who, "UPDATE pgtrail.chain_heads SET entries = 0").await;
        // The key that checks the source's messages is the daemon's alone.
        assert_denied(client, who, "SELECT * FROM pgtrail.message_keys").await;
        // Gaps and quarantine are capture's to record: a reader may not claim a hole in the trail.
        for category in ["gap", "quarantine"] {
            assert_denied(client, who, &record_event_sql(category)).await;
        }
    }
    assert_denied(
        &stranger,
        "stranger",
        "SELECT count(*) FROM pgtrail.entries",
    )
    .await;
    assert_denied(&stranger, "stranger", &record_event_sql("user")).await;
    // The writer's own rights are the ones it used; the chain heads moved with the entries.
    let superuser = connect(&superuser_store).await.unwrap();
    let heads: Vec<(i16, i64)> = superuser
        .query(
            "SELECT source, entries FROM pgtrail.chain_heads ORDER BY source DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(heads[1], (0, 1), "{heads:?}");
    assert!(heads[0].1 >= 70, "{heads:?}");
    // The writer (capture's role) records a gap.
    store
        .batch_execute(&record_event_sql("gap"))
        .await
        .unwrap_or_else(|e| panic!("the writer records a gap event: {e}"));
}

/// A call of pgtrail.record_event for an event of `category` with an all-zero digest.
fn record_event_sql(category: &str) -> String {
    format!(
        "SELECT pgtrail.record_event(now(), '{category}', NULL, NULL, NULL, NULL, '{{}}', '{{}}', \
         NULL, NULL, decode(repeat('00', 32), 'hex'))"
    )
}
