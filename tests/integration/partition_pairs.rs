//! A partition of the store is a pair since migration 23: `entries_p…` of pgtrail.entry_rows and
//! `transactions_p…` of pgtrail.transactions, with the same range. One of a pair detached or
//! dropped by hand while the other stays attached: capture refuses that range with an error that
//! names both and gives the SQL of both ways out, stores nothing elsewhere and loses nothing it
//! had, and goes on by itself once the DBA has run either.

use std::time::Duration;

use crate::harness::*;

/// The current period's pair and its range as `ensure_partition` prints it (UTC, ISO).
struct Pair {
    rows: String,
    txns: String,
    from: String,
    to: String,
}

/// How long the daemon may take to meet the refusal (a session ends on the COPY into the gone
/// partition, the next one asks for the partition) and, after the fix, to store the backlog
/// (its backoff after an error that needs attention is at most 30 s).
const PATIENCE: Duration = Duration::from_secs(90);

/// Captures 50 inserts into `t` and returns the store (its session in UTC), the current pair, and
/// every entry's (id, hash) so far.
async fn captured() -> (
    TestEnv,
    tokio_postgres::Client,
    Daemon,
    Pair,
    Vec<(i64, Vec<u8>)>,
) {
    let (env, src, daemon) = TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    src.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(1, 50) g")
        .await
        .unwrap();
    env.sync().await;
    let store = env.store().await;
    store.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let row = store
        .query_one(
            "SELECT name, pgtrail.transactions_partition(name), from_at::text, to_at::text \
             FROM pgtrail.partitions WHERE dropped_at IS NULL AND from_at <= now() AND now() < to_at",
            &[],
        )
        .await
        .unwrap();
    let pair = Pair {
        rows: row.get(0),
        txns: row.get(1),
        from: row.get(2),
        to: row.get(3),
    };
    let stored = stored_since(&store, 0).await;
    assert!(stored.len() >= 50, "{} entries", stored.len());
    (env, store, daemon, pair, stored)
}

/// (id, hash) of the entries in the store from id `from` on.
async fn stored_since(store: &tokio_postgres::Client, from: i64) -> Vec<(i64, Vec<u8>)> {
    query_pairs(
        store,
        "SELECT id, hash FROM pgtrail.entries WHERE id >= $1 ORDER BY id",
        &[&from],
    )
    .await
}

/// `ensure_partition`'s refusal: (message, hint).
type Refusal = (String, String);

/// Which of a pair the DBA took away.
#[derive(Clone, Copy)]
enum Half {
    /// `entries_p…`, of pgtrail.entry_rows.
    Rows,
    /// `transactions_p…`, of pgtrail.transactions.
    Txns,
}

/// The refusal `ensure_partition` gives for the pair with `gone` detached (or `dropped`) and the
/// other half still attached: (message, hint).
fn refusal(pair: &Pair, gone: Half, dropped: bool) -> (String, String) {
    let rows = (pair.rows.as_str(), "entry_rows");
    let txns = (pair.txns.as_str(), "transactions");
    let (gone, kept) = match gone {
        Half::Rows => (rows, txns),
        Half::Txns => (txns, rows),
    };
    let (from, to) = (&pair.from, &pair.to);
    let message = format!(
        "pgtrail.ensure_partition: partition pgtrail.{} was {} from pgtrail.{} past pgtrail, but \
         pgtrail.{}, its pair of the same range [{from}, {to}), is still attached to pgtrail.{}: no \
         entry committed in that range can be stored until both are attached or both detached",
        gone.0,
        if dropped { "dropped" } else { "detached" },
        gone.1,
        kept.0,
        kept.1
    );
    let attach = format!(
        "ALTER TABLE pgtrail.{} ATTACH PARTITION pgtrail.{} FOR VALUES FROM ('{from}') TO ('{to}');",
        gone.1, gone.0
    );
    let keep = if dropped {
        format!(
            "Its rows are in no table of the store any more. If a backup holds pgtrail.{}, restore \
             it and attach it again: {attach}",
            gone.0
        )
    } else {
        format!(
            "Nothing is lost: pgtrail.{} still holds its rows. To keep the range in the store, \
             attach it again: {attach}",
            gone.0
        )
    };
    let hint = format!(
        "{keep} to take the range out of the store instead, detach the other too (its rows stay in \
         its table): ALTER TABLE pgtrail.{} DETACH PARTITION pgtrail.{}; pgtrail then makes a new \
         pair for the range. Capture goes on by itself after either.",
        kept.1, kept.0
    );
    (message, hint)
}

/// Waits for the daemon to log the refusal `want` (message, hint) as an error that needs
/// attention, then asks `ensure_partition` directly and checks its SQLSTATE, message and hint.
async fn refused(daemon: &mut Daemon, store: &tokio_postgres::Client, want: &(String, String)) {
    let logged = format!("audit store query failed: {} (hint: {})", want.0, want.1);
    wait_until("the daemon logs the refusal", PATIENCE, || {
        let seen = daemon.log().contains(&logged);
        async move { seen }
    })
    .await;
    daemon.assert_running();
    let log = daemon.log();
    assert!(
        log.contains("capture stopped by an error that needs attention; retrying"),
        "{log}"
    );
    assert!(!log.contains("would overlap partition"), "{log}");
    // An error of the store's partitions, never of the data: nothing is quarantined.
    assert_eq!(
        query_count(store, "SELECT count(*) FROM pgtrail.quarantine").await,
        0
    );
    let err = store
        .query_one("SELECT pgtrail.ensure_partition(now())", &[])
        .await
        .expect_err("ensure_partition refuses the range");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        (db.message(), db.hint()),
        (want.0.as_str(), Some(want.1.as_str()))
    );
}

/// The statement the hint gives after `lead` (up to and with its `;`), as the DBA runs it.
fn advice(hint: &str, lead: &str) -> String {
    let rest = hint
        .split_once(lead)
        .unwrap_or_else(|| panic!("no {lead:?} in the hint: {hint}"))
        .1;
    let end = rest.find(';').expect("the statement ends with ;");
    rest[..=end].to_owned()
}

/// Neither the ledger nor the tables changed while the range was refused: the pair's partition is
/// still live in the ledger, and no other was made for its range.
async fn nothing_made(store: &tokio_postgres::Client, pair: &Pair) {
    let live: bool = query_value(
        store,
        "SELECT dropped_at IS NULL FROM pgtrail.partitions WHERE name = $1",
        &[&pair.rows],
    )
    .await;
    assert!(live, "the ledger marked {} dropped", pair.rows);
    let others = query_count(
        store,
        &format!(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrail'::regnamespace \
             AND relname IN ('{0}_2', 'transactions_{1}_2')",
            pair.rows,
            pair.rows.trim_start_matches("entries_")
        ),
    )
    .await;
    assert_eq!(others, 0, "a new pair was made");
}

/// The DBA's `sql` splits the pair, then the source makes `changes` to `t`: capture refuses the
/// range with `want` and makes nothing for it.
async fn split(
    env: &TestEnv,
    store: &tokio_postgres::Client,
    daemon: &mut Daemon,
    (pair, sql): (&Pair, &str),
    changes: &str,
    want: &(String, String),
) {
    store.batch_execute(sql).await.unwrap();
    env.source().await.batch_execute(changes).await.unwrap();
    refused(daemon, store, want).await;
    nothing_made(store, pair).await;
}

/// The DBA runs the hint's ATTACH: capture goes on and stores the backlog once (`t` then has
/// `counts` in all), every entry stored before is there as it was, and the store verifies.
async fn attached_again(
    env: &TestEnv,
    store: &tokio_postgres::Client,
    mut daemon: Daemon,
    (want, stored): (&Refusal, &[(i64, Vec<u8>)]),
    counts: Counts,
) {
    let attach = advice(&want.1, "attach it again: ");
    store.batch_execute(&attach).await.unwrap();
    env.sync().await;
    daemon.terminate().await;
    assert_counts(store, "public", "t", counts).await;
    assert_eq!(stored_since(store, 0).await[..stored.len()], stored[..]);
    env.trail.cli(&["verify"]).await.assert_success();
}

/// Rows in pgtrail.`table` (a partition, attached or not).
async fn rows_in(store: &tokio_postgres::Client, table: &str) -> i64 {
    query_count(store, &format!("SELECT count(*) FROM pgtrail.{table}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entries_partition_detached_by_hand_is_refused_until_attached_again() {
    let (env, store, mut daemon, pair, stored) = captured().await;
    let before = (
        rows_in(&store, &pair.rows).await,
        rows_in(&store, &pair.txns).await,
    );
    let want = refusal(&pair, Half::Rows, false);
    let detach = format!(
        "ALTER TABLE pgtrail.entry_rows DETACH PARTITION pgtrail.{}",
        pair.rows
    );
    let changes = "INSERT INTO t SELECT g, g FROM generate_series(51, 80) g; UPDATE t SET v = -v WHERE id <= 5";
    split(&env, &store, &mut daemon, (&pair, &detach), changes, &want).await;
    // Nothing stored is lost: both tables hold what they held.
    let now = (
        rows_in(&store, &pair.rows).await,
        rows_in(&store, &pair.txns).await,
    );
    assert_eq!(now, before);
    let counts = Counts::new(80, 5, 0, 0);
    attached_again(&env, &store, daemon, (&want, &stored), counts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactions_partition_detached_by_hand_is_refused_until_attached_again() {
    let (env, store, mut daemon, pair, stored) = captured().await;
    let want = refusal(&pair, Half::Txns, false);
    let detach = format!(
        "ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.{}",
        pair.txns
    );
    let changes =
        "INSERT INTO t SELECT g, g FROM generate_series(51, 80) g; DELETE FROM t WHERE id = 50";
    split(&env, &store, &mut daemon, (&pair, &detach), changes, &want).await;
    // Meanwhile the view cannot join the range's entries to their transactions; the detached
    // table still has every one.
    let orphans = query_count(
        &store,
        &format!(
            "SELECT count(*) FROM pgtrail.{} e WHERE NOT EXISTS \
             (SELECT FROM pgtrail.{} x WHERE x.id = e.txn)",
            pair.rows, pair.txns
        ),
    )
    .await;
    assert_eq!(orphans, 0);
    let counts = Counts::new(80, 0, 1, 0);
    attached_again(&env, &store, daemon, (&want, &stored), counts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entries_partition_dropped_by_hand_leaves_the_store_once_its_pair_is_detached() {
    let (env, store, mut daemon, pair, stored) = captured().await;
    let txns_before = rows_in(&store, &pair.txns).await;
    let want = refusal(&pair, Half::Rows, true);
    let drop = format!("DROP TABLE pgtrail.{}", pair.rows);
    let changes = "INSERT INTO t SELECT g, g FROM generate_series(51, 80) g";
    split(&env, &store, &mut daemon, (&pair, &drop), changes, &want).await;

    // The DBA takes the range out: its transactions stay in their table, the ledger marks the
    // pair gone, and the backlog goes to a new pair, each change once.
    let detach = advice(
        &want.1,
        "detach the other too (its rows stay in its table): ",
    );
    assert_eq!(
        detach,
        format!(
            "ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.{};",
            pair.txns
        )
    );
    store.batch_execute(&detach).await.unwrap();
    let last = stored.last().expect("entries were stored").0;
    env.sync().await;
    daemon.terminate().await;
    assert_counts(&store, "public", "t", Counts::new(30, 0, 0, 0)).await;
    let inserted: Vec<i64> = query_column(
        &store,
        "SELECT (after->>'id')::bigint FROM pgtrail.entries WHERE table_name = 't' AND id > $1 ORDER BY id",
        &[&last],
    )
    .await;
    assert_eq!(inserted, (51..=80).collect::<Vec<i64>>());
    assert_eq!(
        rows_in(&store, &pair.txns).await,
        txns_before,
        "the detached transactions partition keeps its rows"
    );
    let gone: bool = query_value(
        &store,
        "SELECT dropped_at IS NOT NULL FROM pgtrail.partitions WHERE name = $1",
        &[&pair.rows],
    )
    .await;
    assert!(gone, "the ledger marks the pair gone");
    let holders: Vec<String> = query_column(
        &store,
        "SELECT DISTINCT tableoid::regclass::text FROM pgtrail.entries WHERE id > $1",
        &[&last],
    )
    .await;
    assert_eq!(holders, [format!("pgtrail.{}_2", pair.rows)]);
    assert!(!daemon.log().contains("would overlap partition"));
}
