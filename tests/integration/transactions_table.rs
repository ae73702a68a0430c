//! The transactions table (migration 23): the writer stores what a run (entries of one source
//! transaction with one context) shares once, in `pgtrail.transactions`, and each entry names its
//! row. Against a real source: pgbench-like transactions of several rows get one row each with
//! the right xid, commit LSN, commit time, source and context; a context change mid-transaction
//! (`SET LOCAL ROLE`, a new `pgtrail.actor`) starts a new run, each entry joined to its own; a
//! transaction larger than one COPY chunk gets one row; after a SIGKILL mid-backlog and a
//! restart, every entry is stored once and has its row, no row is without entries, and `verify`
//! passes.

use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::*;

/// No entry without its transactions row (the view would not show it), no row without entries,
/// no entry joined to another source's row.
async fn assert_runs_whole(store: &Client) {
    for (what, sql) in [
        (
            "entries without their transactions row",
            "SELECT count(*) FROM pgtrail.entry_rows e WHERE NOT EXISTS (SELECT FROM \
             pgtrail.transactions t WHERE t.id = e.txn AND t.committed_at = e.committed_at)",
        ),
        (
            "transactions rows without entries",
            "SELECT count(*) FROM pgtrail.transactions t WHERE NOT EXISTS (SELECT FROM \
             pgtrail.entry_rows e WHERE e.txn = t.id AND e.committed_at = t.committed_at)",
        ),
        (
            "entries joined to another source's row",
            "SELECT count(*) FROM pgtrail.entry_rows e JOIN pgtrail.transactions t \
             ON t.id = e.txn AND t.committed_at = e.committed_at WHERE t.source <> e.source",
        ),
    ] {
        assert_eq!(query_count(store, sql).await, 0, "{what}");
    }
}

/// A source transaction as seen from its client: its xid, the WAL insert position before it
/// began and after its commit, and its commit time (track_commit_timestamp).
struct Seen {
    xid: i64,
    lsn_before: String,
    lsn_after: String,
    committed_at: String,
}

/// Runs `sql` as one transaction on `c` and says what it was.
async fn seen_transaction(c: &Client, sql: &str) -> Seen {
    let lsn = "SELECT pg_current_wal_insert_lsn()::text";
    let lsn_before: String = query_value(c, lsn, &[]).await;
    c.batch_execute("BEGIN").await.unwrap();
    let xid: i64 = query_value(c, "SELECT pg_current_xact_id()::text::bigint", &[]).await;
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.batch_execute("COMMIT").await.unwrap();
    let lsn_after: String = query_value(c, lsn, &[]).await;
    let committed_at: String = query_value(
        c,
        "SELECT pg_xact_commit_timestamp($1::text::xid)::text",
        &[&xid.to_string()],
    )
    .await;
    Seen {
        xid,
        lsn_before,
        lsn_after,
        committed_at,
    }
}

/// The transactions rows of `seen`'s xid, each as (right LSN, right commit time, its entries,
/// db_user, current_user, actor, client address), in id order.
type RunFacts = (
    bool,
    bool,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
);

async fn runs_of(store: &Client, seen: &Seen) -> Vec<RunFacts> {
    store
        .query(
            "SELECT t.lsn > $2::text::pg_lsn AND t.lsn <= $3::text::pg_lsn, \
                    t.committed_at = $4::text::timestamptz, \
                    (SELECT count(*) FROM pgtrail.entry_rows e WHERE e.txn = t.id AND e.committed_at = t.committed_at), \
                    t.context->>'db_user', t.context->>'current_user', t.actor, host(t.client_addr) \
             FROM pgtrail.transactions t WHERE t.xid = $1 ORDER BY t.id",
            &[&seen.xid, &seen.lsn_before, &seen.lsn_after, &seen.committed_at],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

fn clerk_run(entries: i64, current_user: &str, actor: &str) -> RunFacts {
    (
        true,
        true,
        entries,
        "clerk".into(),
        current_user.into(),
        Some(actor.into()),
        Some("127.0.0.1".into()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_of_entries_gets_one_transactions_row() {
    let env = TestEnv::start_with(
        ClusterOptions::default().setting("track_commit_timestamp", "on"),
        |_| {},
    )
    .await;
    env.source_with(
        "CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL);
         CREATE TABLE hist (aid int, delta int, at timestamptz);
         ALTER TABLE hist REPLICA IDENTITY FULL;
         CREATE TABLE bulk (id int PRIMARY KEY, payload text NOT NULL);
         CREATE ROLE clerk LOGIN PASSWORD 'pw'; CREATE ROLE manager NOLOGIN;
         GRANT ALL ON acct, hist, bulk TO clerk, manager; GRANT manager TO clerk;",
    )
    .await;
    env.setup().await;
    let mut daemon = env.spawn();
    let clerk = connect(&env.cluster.url_as("app", "clerk", Some("pw")))
        .await
        .unwrap();
    clerk
        .batch_execute("INSERT INTO acct SELECT g, 0 FROM generate_series(1, 10) g")
        .await
        .unwrap();

    // pgbench-like: three updates and an insert each, one context each.
    let mut bank = Vec::new();
    for i in 1..=8 {
        let (a, b, delta) = (i, 11 - i, 100 + i);
        bank.push(
            seen_transaction(
                &clerk,
                &format!(
                    "UPDATE acct SET balance = balance + {delta} WHERE id = {a};
                     UPDATE acct SET balance = balance - {delta} WHERE id = {b};
                     UPDATE acct SET balance = balance + 1 WHERE id = 10;
                     INSERT INTO hist VALUES ({a}, {delta}, now());"
                ),
            )
            .await,
        );
    }
    // Who acts changes twice mid-transaction: three runs.
    let switching = seen_transaction(
        &clerk,
        "SET LOCAL pgtrail.actor = 'alice';
         UPDATE acct SET balance = 1 WHERE id = 1;
         UPDATE acct SET balance = 1 WHERE id = 2;
         SET LOCAL ROLE manager;
         UPDATE acct SET balance = 2 WHERE id = 3;
         SET LOCAL pgtrail.actor = 'bob';
         UPDATE acct SET balance = 3 WHERE id = 4;
         UPDATE acct SET balance = 3 WHERE id = 5;",
    )
    .await;
    // Larger than one COPY chunk (256 KiB): streamed in several, one run.
    const BULK: i64 = 3000;
    let bulk = seen_transaction(
        &clerk,
        &format!(
            "INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {BULK}) g"
        ),
    )
    .await;
    env.sync().await;
    daemon.assert_running();

    let store = env.store().await;
    for seen in &bank {
        let runs = runs_of(&store, seen).await;
        assert_eq!(runs, [clerk_run(4, "clerk", "clerk")], "xid {}", seen.xid);
    }
    let runs = runs_of(&store, &switching).await;
    assert_eq!(
        runs,
        [
            clerk_run(2, "clerk", "alice"),
            clerk_run(1, "manager", "alice"),
            clerk_run(2, "manager", "bob"),
        ]
    );
    // Each entry is joined to its own run, through the view as readers see it.
    let who: Vec<(String, String)> = query_pairs(
        &store,
        "SELECT primary_key->>'id', (context->>'actor') || '/' || (context->>'current_user') \
         FROM pgtrail.entries WHERE xid = $1 ORDER BY id",
        &[&switching.xid],
    )
    .await;
    let expected = [
        ("1", "alice/clerk"),
        ("2", "alice/clerk"),
        ("3", "alice/manager"),
        ("4", "bob/manager"),
        ("5", "bob/manager"),
    ]
    .map(|(id, w)| (id.to_owned(), w.to_owned()));
    assert_eq!(who, expected);

    let runs = runs_of(&store, &bulk).await;
    assert_eq!(runs, [clerk_run(BULK, "clerk", "clerk")]);
    let bytes: i64 = query_value(
        &store,
        "SELECT sum(pg_column_size(e.*))::bigint FROM pgtrail.entry_rows e \
         WHERE e.txn = (SELECT id FROM pgtrail.transactions WHERE xid = $1)",
        &[&bulk.xid],
    )
    .await;
    assert!(
        bytes > 256 << 10,
        "the bulk transaction spans chunks: {bytes} bytes"
    );

    // One source for all, the one the store knows.
    let sources: Vec<i16> = query_column(
        &store,
        "SELECT DISTINCT t.source FROM pgtrail.transactions t JOIN pgtrail.sources s ON s.id = t.source",
        &[],
    )
    .await;
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_runs_whole(&store).await;
    assert_counts(&store, "public", "acct", Counts::new(10, 8 * 3 + 5, 0, 0)).await;
    daemon.terminate().await;
    env.trail.cli(&["verify", "--json"]).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backlog_leaves_every_entry_its_transactions_row() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE k (id int PRIMARY KEY, v int, note text)").await;
    env.sync().await;
    daemon.kill_9().await;
    env.wait_slot_inactive().await;

    // The backlog while the daemon is down: small transactions whose actor changes after the
    // first row (two runs each), and one of 20,000 rows (many COPY chunks) in the middle.
    const SMALL: i64 = 6000;
    const BULK: i64 = 20_000;
    let small = |from: i64, to: i64| {
        format!(
            "FOR i IN {from}..{to} LOOP
                 PERFORM set_config('pgtrail.actor', 'a' || i, true);
                 INSERT INTO k VALUES (3 * i, i, 'first');
                 PERFORM set_config('pgtrail.actor', 'b' || i, true);
                 INSERT INTO k VALUES (3 * i + 1, i, 'second'), (3 * i + 2, i, 'third');
                 COMMIT;
             END LOOP;"
        )
    };
    src.batch_execute(&format!(
        "DO $$ BEGIN
           {}
           INSERT INTO k SELECT g, g, repeat('x', 40) FROM generate_series(1000000, {}) g;
           COMMIT;
           {}
         END $$;",
        small(1, SMALL / 2),
        1_000_000 + BULK - 1,
        small(SMALL / 2 + 1, SMALL),
    ))
    .await
    .unwrap();

    let store = env.store().await;
    let base = entry_count(&store).await;
    daemon = env.spawn();
    let store_ref = &store;
    wait_until(
        "the daemon to store part of the backlog",
        Duration::from_secs(120),
        move || async move { entry_count(store_ref).await >= base + 12_000 },
    )
    .await;
    daemon.kill_9().await;
    eprintln!(
        "killed with {} of {} backlog entries stored",
        entry_count(&store).await - base,
        3 * SMALL + BULK
    );
    env.wait_slot_inactive().await;
    daemon = env.spawn();
    env.sync().await;

    assert_counts(
        &store,
        "public",
        "k",
        Counts::new(3 * SMALL + BULK, 0, 0, 0),
    )
    .await;
    assert_store_matches_source(&src, &store, "public", "k").await;
    assert_runs_whole(&store).await;
    let runs = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.transactions t WHERE EXISTS (SELECT FROM pgtrail.entry_rows e \
         WHERE e.txn = t.id AND e.committed_at = t.committed_at AND e.table_name = 'k')",
    )
    .await;
    assert_eq!(
        runs,
        2 * SMALL + 1,
        "two runs per small transaction, one for the bulk"
    );
    let doubled = query_count(
        &store,
        "SELECT count(*) FROM (SELECT FROM pgtrail.transactions \
         GROUP BY source, xid, actor HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(doubled, 0, "a run stored twice");
    daemon.terminate().await;
    env.trail.cli(&["verify", "--json"]).await.assert_success();
}

/// An entry row whose transactions row is gone (deleted past the triggers, as a superuser could)
/// drops out of the view: `verify` names each such entry and the cause, also at the end of a
/// `--to` range, where the chain walk sees no entry after the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_entry_rows_left_without_their_transaction() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE k (id int PRIMARY KEY, v int)").await;
    // Three source transactions (separate statements: one batch would be one transaction).
    for sql in [
        "INSERT INTO k VALUES (1, 1)",
        "INSERT INTO k VALUES (2, 2), (3, 3)",
        "INSERT INTO k VALUES (4, 4)",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    let ids = query_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'k' \
         AND (after->>'id')::int IN (2, 3) ORDER BY id",
    )
    .await;
    assert_eq!(ids.len(), 2, "the second transaction's two entries");
    let txn: i64 = query_value(
        &store,
        "SELECT txn FROM pgtrail.entry_rows WHERE id = $1",
        &[&ids[0]],
    )
    .await;
    assert_store_matches_source(&src, &store, "public", "k").await;
    env.trail.cli(&["verify", "--json"]).await.assert_success();
    crate::verify::past_the_triggers_of(
        &store,
        &["pgtrail.transactions"],
        &format!("DELETE FROM pgtrail.transactions WHERE id = {txn}"),
    )
    .await;

    let named = |args: &[&str]| {
        let env = &env;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = env.trail.cli(&args).await;
            assert_eq!(out.status.code(), Some(1), "verify must fail:\n{out}");
            let report: serde_json::Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}):\n{out}"));
            report["breaks"]
                .as_array()
                .unwrap_or_else(|| panic!("no breaks:\n{out}"))
                .iter()
                .filter(|b| {
                    b["problem"]
                        .as_str()
                        .is_some_and(|p| p.contains("no row in pgtrail.transactions"))
                })
                .map(|b| b["id"].as_i64().unwrap_or(-1))
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(named(&["verify", "--json"]).await, ids);
    let to = ids[0].to_string();
    assert_eq!(
        named(&["verify", "--json", "--to", &to]).await,
        vec![ids[0]],
        "the last entry of a --to range"
    );
}
