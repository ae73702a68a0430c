//! A lost slot is an audit gap, never a silent one: with a small `max_slot_wal_keep_size`, a
//! stopped daemon's slot is invalidated (WAL switched and checkpointed past it); `run` then
//! stops with exit 10 and says what to run, records one `gap` EVENT however often it is started,
//! `setup` refuses without `--recreate-slot`, and with it records the gap's extent, after which
//! capture resumes: everything before the gap is stored, nothing of the gap, and `verify` passes.
//! A slot dropped by hand is a gap too.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// `run`'s exit status when the slot is lost or missing (docs/operations.md, "Exit codes").
const EXIT_SLOT_LOST: i32 = 10;

/// Waits for the daemon to exit by itself; its status.
pub async fn exit_of(daemon: &mut Daemon, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = daemon.try_exit() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit within {within:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes and switches WAL segments, then checkpoints, until the server invalidates the slot.
pub async fn invalidate_slot(source: &Client, admin: &Client) {
    for round in 0..40 {
        for _ in 0..4 {
            source
                .batch_execute("INSERT INTO junk.filler SELECT repeat('w', 1000) FROM generate_series(1, 200); SELECT pg_switch_wal()")
                .await
                .unwrap();
        }
        admin.batch_execute("CHECKPOINT").await.unwrap();
        let status: Option<String> = admin
            .query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .unwrap()
            .get(0);
        if status.as_deref() == Some("lost") {
            return;
        }
        assert!(round < 39, "the slot was never invalidated ({status:?})");
    }
}

/// Starts `run`, which must exit 10 at once saying what happened and what to run.
async fn run_stops_on_the_gap(env: &TestEnv, found: &str) -> String {
    let mut daemon = env.spawn();
    let status = exit_of(&mut daemon, Duration::from_secs(30)).await;
    let log = daemon.log();
    assert_eq!(status.code(), Some(EXIT_SLOT_LOST), "{log}");
    for needle in ["audit gap", found, "pgtrail setup --recreate-slot"] {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
    assert_no_panic(&log, "pgtrail run");
    log
}

/// The ids of `t` stored as INSERT entries.
async fn stored_ids(store: &Client) -> Vec<i64> {
    let mut ids: Vec<i64> = table_entries(store, "public", "t")
        .await
        .iter()
        .filter(|e| e.action == "INSERT")
        .map(|e| e.key_i64("id"))
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_stops_run_records_the_gap_and_recreate_slot_resumes() {
    let opts = ClusterOptions::default().setting("max_slot_wal_keep_size", "1MB");
    let env = TestEnv::start_with(opts, |_| {}).await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY); CREATE SCHEMA junk; CREATE TABLE junk.filler (v text)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    env.wait_slot_inactive().await;
    let store = env.store().await;
    let before_gap = checkpoint_lsn(&store, SLOT).await.unwrap();

    // Changes made while the slot is being lost are never captured.
    src.batch_execute("INSERT INTO t SELECT generate_series(11, 15)")
        .await
        .unwrap();
    let admin = env.cluster.client("postgres").await;
    invalidate_slot(&src, &admin).await;

    run_stops_on_the_gap(&env, "wal_status is lost").await;
    run_stops_on_the_gap(&env, "wal_status is lost").await;
    let lost = events_named(&store, "slot_lost").await;
    assert_eq!(lost.len(), 1, "recorded once: {lost:?}");
    let (actor, d) = &lost[0];
    assert_eq!(actor, &None, "the daemon records it: {d}");
    assert_eq!(d["slot"], SLOT, "{d}");
    assert_eq!(d["last_stored_lsn"], format_lsn(before_gap), "{d}");
    assert!(d["last_stored_commit"].is_string(), "{d}");
    assert!(d["found"].as_str().unwrap().contains("lost"), "{d}");
    let (_, app, e) = last_event(&store, "slot_lost").await;
    assert_eq!(
        (app.as_str(), &e["table"]),
        ("pgtrail run", &Value::from("gap"))
    );

    // Plain setup refuses and names the flag; status says the slot is lost.
    let refused = env.trail.cli(&["setup"]).await;
    assert!(!refused.success(), "{refused}");
    assert!(refused.combined().contains("--recreate-slot"), "{refused}");
    assert_eq!(env.trail.cli(&["status"]).await.status.code(), Some(2));

    env.trail
        .cli(&["setup", "--recreate-slot"])
        .await
        .assert_success();
    let new_start = slot_state(&admin, SLOT).await.unwrap().confirmed_flush;
    let recreated = events_named(&store, "slot_recreated").await;
    assert_eq!(recreated.len(), 1, "{recreated:?}");
    let (actor, d) = &recreated[0];
    assert!(
        actor.as_deref().is_some_and(|a| a.starts_with("os:")),
        "{d}"
    );
    assert_eq!(d["from_lsn"], format_lsn(before_gap), "{d}");
    assert_eq!(d["to_lsn"], format_lsn(new_start.unwrap()), "{d}");
    assert!(
        d["from_commit"].is_string() && d["to_time"].is_string(),
        "{d}"
    );
    assert_eq!(checkpoint_lsn(&store, SLOT).await, new_start);

    // Capture resumes with new changes; the gap's stay missing.
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT generate_series(21, 23)")
        .await
        .unwrap();
    env.sync().await;
    daemon.assert_running();
    let expected: Vec<i64> = (1..=10).chain(21..=23).collect();
    assert_eq!(stored_ids(&store).await, expected);
    let verified = env.trail.cli(&["verify"]).await;
    assert_eq!(verified.status.code(), Some(0), "{verified}");
    daemon.terminate().await;
    env.wait_slot_inactive().await;

    // A slot dropped by hand is a gap as well: a new event, since the newest was the recreation.
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&SLOT])
        .await
        .unwrap();
    run_stops_on_the_gap(&env, "does not exist").await;
    assert_eq!(events_named(&store, "slot_lost").await.len(), 2);
}
