//! Crashes, stops and outages: SIGKILL of the daemon while idle, in the middle of a stream of
//! small pgbench-like transactions, and at four moments of one 300,000-row transaction (during
//! the source transaction, while it is decoded, and twice inside the daemon's store write); clean
//! SIGTERM/SIGINT (exit 0); a source cluster restart while `run` runs (the daemon reconnects by
//! itself), with the store elsewhere and with the store on the restarted cluster. After each, the
//! store must hold every committed change exactly once: exact counts plus the replay comparator.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Kill the daemon, wait until the server has released the slot, start a new one.
async fn kill_and_restart(env: &TestEnv, daemon: &mut Daemon) {
    daemon.kill_9().await;
    env.wait_slot_inactive().await;
    *daemon = env.spawn();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_idle_loses_and_doubles_nothing() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE k (id int PRIMARY KEY, v int); ALTER TABLE k REPLICA IDENTITY FULL;",
    )
    .await;

    src.batch_execute(
        "INSERT INTO k SELECT g, g FROM generate_series(1, 100) g;
         UPDATE k SET v = -v WHERE id <= 10;",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    assert_counts(&store, "public", "k", Counts::new(100, 10, 0, 0)).await;

    // Killed while idle; the source keeps changing while it is down.
    daemon.kill_9().await;
    src.batch_execute(
        "INSERT INTO k SELECT g, g FROM generate_series(101, 150) g;
         DELETE FROM k WHERE id BETWEEN 91 AND 100;
         UPDATE k SET v = v + 1000 WHERE id > 140;",
    )
    .await
    .unwrap();
    env.wait_slot_inactive().await;
    daemon = env.spawn();
    env.sync().await;
    assert_counts(&store, "public", "k", Counts::new(150, 20, 10, 0)).await;
    assert_store_matches_source(&src, &store, "public", "k").await;

    // Killed again right after catching up, twice: a restart must not redeliver stored work.
    for _ in 0..2 {
        kill_and_restart(&env, &mut daemon).await;
        env.sync().await;
    }
    assert_counts(&store, "public", "k", Counts::new(150, 20, 10, 0)).await;
    assert_store_matches_source(&src, &store, "public", "k").await;
    assert_counts(&store, "public", MARKER_TABLE, Counts::new(4, 0, 0, 0)).await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_of_small_transactions() {
    let env = TestEnv::start().await;
    let (src, mut daemon) = bank::captured(&env).await;

    // The clients write until the last kill has happened, so every kill lands mid-stream
    // however quickly the daemon keeps up (a fixed workload was once all stored by round 2).
    const MIN_PER_CLIENT: u64 = 1500;
    let url = env.cluster.url("app");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w1 = tokio::spawn(bank::run_until(
        url.clone(),
        1,
        MIN_PER_CLIENT,
        stop.clone(),
    ));
    let w2 = tokio::spawn(bank::run_until(url, 2, MIN_PER_CLIENT, stop.clone()));

    // Kill three times, each time after this daemon has made progress, so kills land at
    // arbitrary points of the stream.
    let store = env.store().await;
    for round in 0..3 {
        let base = entry_count(&store).await;
        let store_ref = &store;
        wait_until(
            &format!("round {round}: the daemon to store 1500 more entries"),
            Duration::from_secs(120),
            move || async move { entry_count(store_ref).await >= base + 1500 },
        )
        .await;
        kill_and_restart(&env, &mut daemon).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let txns = (w1.await.unwrap() + w2.await.unwrap()) as i64;
    env.sync().await;
    bank::assert_store_matches(&src, &store, txns).await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_300k_row_transaction() {
    const ROWS: i64 = 300_000;
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE bulk (id int PRIMARY KEY, payload text NOT NULL)").await;
    let store = env.store().await;

    let url = env.cluster.url("app");
    let started = Instant::now();
    let insert = tokio::spawn(async move {
        let c = connect(&url).await.unwrap();
        c.batch_execute(&format!(
            "INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
        Instant::now()
    });

    // Kill 1: while the source transaction is still running (or has just committed).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = entry_count(&store).await;
    kill_and_restart(&env, &mut daemon).await;
    let committed = insert.await.unwrap();
    eprintln!(
        "kill 1 at 400 ms (source commit at {:?}): store held {seen} entries",
        committed - started
    );

    // Kill 2: shortly after a restart, while the transaction is being decoded and received.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = entry_count(&store).await;
    eprintln!("kill 2, 500 ms after restart: store held {seen} entries");
    kill_and_restart(&env, &mut daemon).await;

    // Kills 3 and 4: while the daemon has a write transaction open in the store (the most
    // dangerous moment), right away and one second into it.
    for (n, extra) in [(3, Duration::ZERO), (4, Duration::from_secs(1))] {
        let store_ref = &store;
        wait_until(
            &format!("kill {n}: the daemon to open a write transaction in the store"),
            Duration::from_secs(120),
            move || async move {
                store_ref
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) > 0)
            },
        )
        .await;
        tokio::time::sleep(extra).await;
        let seen = entry_count(&store).await;
        eprintln!("kill {n}, {extra:?} into a store write: store held {seen} entries");
        kill_and_restart(&env, &mut daemon).await;
    }
    sync_via(&src, &env.trail.config.store_url, Duration::from_secs(300)).await;

    assert_counts(&store, "public", "bulk", Counts::new(ROWS, 0, 0, 0)).await;
    let row = store
        .query_one(
            "SELECT count(DISTINCT xid), count(DISTINCT lsn), count(DISTINCT (primary_key->>'id')) \
             FROM pgtrail.entries WHERE table_name = 'bulk'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (1, 1, ROWS)
    );
    assert_store_matches_source(&src, &store, "public", "bulk").await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_zero_and_lose_nothing() {
    let env = TestEnv::start().await;
    let (src, mut daemon) = bank::captured(&env).await;
    let worker = tokio::spawn(bank::run(env.cluster.url("app"), 1500, 7));

    // SIGTERM in the middle of the stream.
    let store = env.store().await;
    let store_ref = &store;
    wait_until(
        "the daemon to store 2000 entries",
        Duration::from_secs(120),
        move || async move { entry_count(store_ref).await >= 2000 },
    )
    .await;
    daemon.terminate().await;
    env.wait_slot_inactive().await;
    daemon = env.spawn();
    let txns = worker.await.unwrap() as i64;
    env.sync().await;
    bank::assert_store_matches(&src, &store, txns).await;

    // SIGINT while idle, then a restart: nothing is stored twice.
    daemon.stop_with(libc::SIGINT).await;
    env.wait_slot_inactive().await;
    daemon = env.spawn();
    env.sync().await;
    bank::assert_store_matches(&src, &store, txns).await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restart_while_running_is_survived() {
    // The store lives on its own cluster, so only the source goes away.
    let mut source_cluster = tokio::task::block_in_place(Cluster::start);
    let store_cluster = tokio::task::block_in_place(Cluster::start);
    source_cluster.create_db("app").await;
    let mut config = Config::for_cluster(&source_cluster);
    config.store_url = store_cluster.url("pgtrail");
    let trail = Pgtrail::new(config);
    let store_url = trail.config.store_url.clone();

    let src = source_cluster.client("app").await;
    create_marker_table(&src).await;
    src.batch_execute(
        "CREATE TABLE s (id int PRIMARY KEY, v int); ALTER TABLE s REPLICA IDENTITY FULL;",
    )
    .await
    .unwrap();
    trail.setup().await;
    let mut daemon = trail.spawn();

    src.batch_execute("INSERT INTO s SELECT g, 0 FROM generate_series(1, 100) g")
        .await
        .unwrap();
    sync_via(&src, &store_url, SYNC_TIMEOUT).await;
    // Changes the daemon may or may not have stored when the source goes down.
    for i in 0..5 {
        src.batch_execute(&format!(
            "INSERT INTO s SELECT g, 1 FROM generate_series({}, {}) g",
            101 + i * 10,
            110 + i * 10
        ))
        .await
        .unwrap();
    }
    drop(src);
    tokio::task::block_in_place(|| source_cluster.restart());
    daemon.assert_running();

    let src = source_cluster.client("app").await;
    src.batch_execute(
        "UPDATE s SET v = v + 10 WHERE id <= 30;
         DELETE FROM s WHERE id BETWEEN 141 AND 150;
         INSERT INTO s SELECT g, 2 FROM generate_series(151, 160) g;",
    )
    .await
    .unwrap();
    sync_via(&src, &store_url, Duration::from_secs(120)).await;
    daemon.assert_running();

    // And a second outage, longer this time (stop, change nothing, start).
    drop(src);
    tokio::task::block_in_place(|| source_cluster.stop());
    tokio::time::sleep(Duration::from_secs(2)).await; // a deliberate outage, not a synchronisation
    daemon.assert_running();
    tokio::task::block_in_place(|| source_cluster.start_again());
    let src = source_cluster.client("app").await;
    src.batch_execute("INSERT INTO s SELECT g, 3 FROM generate_series(161, 170) g")
        .await
        .unwrap();
    sync_via(&src, &store_url, Duration::from_secs(120)).await;

    let store = connect(&store_url).await.unwrap();
    assert_counts(&store, "public", "s", Counts::new(170, 30, 10, 0)).await;
    assert_store_matches_source(&src, &store, "public", "s").await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_the_cluster_holding_source_and_store() {
    let mut env = TestEnv::start().await;
    let src = env
        .source_with("CREATE TABLE s (id int PRIMARY KEY, v int)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO s SELECT g, 0 FROM generate_series(1, 50) g")
        .await
        .unwrap();
    env.sync().await;
    src.batch_execute("INSERT INTO s SELECT g, 1 FROM generate_series(51, 100) g")
        .await
        .unwrap();
    drop(src);

    tokio::task::block_in_place(|| env.cluster.restart());
    daemon.assert_running();

    let src = env
        .source_with("UPDATE s SET v = 5 WHERE id % 2 = 0; DELETE FROM s WHERE id > 95;")
        .await;
    sync_via(&src, &env.trail.config.store_url, Duration::from_secs(120)).await;
    daemon.assert_running();
    let store = env.store().await;
    assert_counts(&store, "public", "s", Counts::new(100, 50, 5, 0)).await;
    assert_store_matches_source(&src, &store, "public", "s").await;
    daemon.terminate().await;
}
