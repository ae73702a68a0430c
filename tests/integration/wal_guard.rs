//! The WAL guard, `[capture] wal_warn`: while a transaction left open on the source holds the
//! slot's `restart_lsn` back and WAL is written past it, the slot holds more than a tiny
//! `wal_warn`, so `pgtrail_wal_warn` is 1, the daemon warns (once, not at every poll) and
//! `status --check` is WARNING; once the transaction ends it is 0 again. The guard runs with
//! `metrics.listen` off too.

use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::*;
use crate::metrics::{metrics_section, scrape, scrape_until, Series};

/// What the daemon logs when the slot holds more than `wal_warn`.
const WARNING: &str = "the slot holds more WAL on the source than capture.wal_warn";

/// The guard's threshold in the tests: far less than the WAL written past the open transaction.
const WAL_WARN: &str = "wal_warn = \"64kB\"\n";

fn wal_warn_series() -> Series {
    Series {
        name: "pgtrail_wal_warn".into(),
        labels: [("slot".to_owned(), SLOT.to_owned())].into(),
    }
}

/// A world capturing `t`, with `junk.filler` outside the capture set to write WAL into.
async fn world(extra_toml: String) -> (TestEnv, Client, Daemon) {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = extra_toml).await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA junk; CREATE TABLE junk.filler (v text)")
        .await;
    env.setup().await;
    let daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    env.sync().await;
    (env, src, daemon)
}

/// Leaves a transaction with an xid open on a connection of its own (the slot's `restart_lsn`
/// cannot pass its start), then writes about 2 MB of WAL past it. Returns that connection.
async fn hold_back_wal(env: &TestEnv, src: &Client) -> Client {
    let holder = env.source().await;
    holder
        .batch_execute("BEGIN; INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    src.batch_execute(
        "INSERT INTO junk.filler SELECT repeat('w', 1000) FROM generate_series(1, 2000)",
    )
    .await
    .unwrap();
    holder
}

/// Checkpoints (each logs the running transactions, past which the slot's `restart_lsn` may
/// move once the daemon confirms them) until the slot holds less than `wal_warn`.
async fn settle(env: &TestEnv, src: &Client, base: &str) {
    let admin = env.cluster.client("postgres").await;
    wait_until("pgtrail_wal_warn 0", Duration::from_secs(60), || async {
        admin.batch_execute("CHECKPOINT").await.unwrap();
        src.batch_execute("INSERT INTO junk.filler VALUES ('x')")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        scrape(base).await.get(&wal_warn_series()) == Some(&0.0)
    })
    .await;
}

/// `status --check`: its exit code and line.
async fn check(env: &TestEnv) -> (Option<i32>, String) {
    let out = env.trail.cli(&["status", "--check"]).await;
    (out.status.code(), out.stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_wal_warn_the_metric_is_set_the_daemon_warns_and_the_check_is_warning() {
    let (section, base) = metrics_section();
    let (env, src, mut daemon) = world(format!("{WAL_WARN}{section}")).await;
    settle(&env, &src, &base).await;
    let warnings_before = daemon.log().matches(WARNING).count();

    let holder = hold_back_wal(&env, &src).await;
    scrape_until(&base, "pgtrail_wal_warn 1", |s| {
        s.get(&wal_warn_series()) == Some(&1.0)
    })
    .await;
    let (code, line) = check(&env).await;
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("PGTRAIL WARNING - slot holds ") && line.contains("past capture.wal_warn"),
        "{line}"
    );
    let status = env.trail.status_json().await;
    assert_eq!(status["wal_warn_bytes"], 64 * 1024, "{status}");
    assert!(
        status["retained_wal_bytes"].as_u64().unwrap() > 64 * 1024,
        "{status}"
    );
    // Polled every second for a few seconds more: still one warning.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = daemon.log();
    assert_eq!(log.matches(WARNING).count(), warnings_before + 1, "{log}");
    assert!(
        log.contains("retained_bytes=") && log.contains("wal_warn_bytes=65536"),
        "{log}"
    );

    // The transaction ends; with a checkpoint the slot's restart_lsn moves past the WAL.
    holder.batch_execute("COMMIT").await.unwrap();
    settle(&env, &src, &base).await;
    assert_eq!(check(&env).await.0, Some(0));
    assert_counts(&env.store().await, "public", "t", Counts::new(2, 0, 0, 0)).await;
    daemon.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_watches_with_the_metrics_endpoints_off() {
    let off = "[metrics]\nlisten = \"\"\npoll_interval = \"1s\"\n";
    let (env, src, daemon) = world(format!("{WAL_WARN}{off}")).await;
    let _holder = hold_back_wal(&env, &src).await;
    wait_until("the guard's warning", Duration::from_secs(30), || async {
        daemon.log().contains(WARNING)
    })
    .await;
    assert!(
        daemon.log().contains("metrics.listen is off"),
        "{}",
        daemon.log()
    );
}
