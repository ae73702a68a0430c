//! Permanent errors end `run` with an exit code of their own (docs/operations.md, "Exit codes of
//! `run`"): a refused login exits 11 at once on the first session, and after a few sessions in a
//! row when the password changes under a running daemon; an outage never does (the daemon keeps
//! retrying while the source is down, and captures once it is back). wal2json gone under a running
//! daemon exits 12 after the same tries, and nothing written meanwhile is lost.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gap::exit_of;
use crate::harness::*;

/// `run`'s exit status when the source or the store refuses the login.
const EXIT_CREDENTIALS: i32 = 11;
/// A role whose login pg_hba makes demand a password over TCP.
const ROLE: &str = "scram_user";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_ends_run_with_its_code() {
    let mut env = TestEnv::start().await;
    env.cluster
        .create_password_role(ROLE, "right", "scram-sha-256")
        .await;
    let src = env
        .source_with(&format!(
            "CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO {ROLE}"
        ))
        .await;
    env.setup().await;
    let mut config = env.trail.config.clone();

    // The first session: at once.
    config.source_url = env.cluster.url_as("app", ROLE, Some("wrong"));
    env.trail.rewrite(config.clone());
    let mut daemon = env.spawn();
    let status = exit_of(&mut daemon, Duration::from_secs(15)).await;
    let log = daemon.log();
    assert_eq!(status.code(), Some(EXIT_CREDENTIALS), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");

    // A running daemon whose password is changed: after the tries (about 15 s of backoff).
    config.source_url = env.cluster.url_as("app", ROLE, Some("right"));
    env.trail.rewrite(config);
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    env.sync().await;
    let admin = env.cluster.client("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {ROLE} PASSWORD 'rotated'; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}'"
        ))
        .await
        .unwrap();
    let log = exits_after_the_tries(&mut daemon, EXIT_CREDENTIALS).await;
    assert!(log.contains("retrying cannot fix"), "{log}");
    assert_counts(&env.store().await, "public", "t", Counts::new(1, 0, 0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_backoff_and_capture_resumes() {
    let (mut env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY)").await;
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    env.sync().await;
    tokio::task::block_in_place(|| env.cluster.stop());
    // Far longer than the permanent errors' tries.
    tokio::time::sleep(Duration::from_secs(20)).await;
    daemon.assert_running();
    tokio::task::block_in_place(|| env.cluster.start_again());
    let src = env.source().await;
    src.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    env.sync().await;
    daemon.assert_running();
    assert_counts(&env.store().await, "public", "t", Counts::new(2, 0, 0, 0)).await;
}

/// `run`'s exit status when the source cannot load wal2json.
const EXIT_WAL2JSON: i32 = 12;

/// wal2json gone under a running daemon (a package upgrade that removed it): `run` retries a few
/// sessions, then exits 12; the changes made meanwhile wait in the slot, and once wal2json is back
/// a new `run` stores every one of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal2json_gone_mid_run_ends_run_with_its_code_and_loses_nothing() {
    let (env, src, mut daemon) = TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY)").await;
    src.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    env.sync().await;

    // New backends find no module at all: a walsender the daemon opens now cannot load wal2json.
    // The setting reaches new backends on reload; the running walsender is ended so that the
    // daemon has to open one.
    let admin = env.cluster.client("postgres").await;
    set_library_path(&admin, "'/nonexistent'").await;
    src.batch_execute("INSERT INTO t VALUES (2); UPDATE t SET id = 3 WHERE id = 1")
        .await
        .unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE active_pid IS NOT NULL",
        )
        .await
        .unwrap();
    let log = exits_after_the_tries(&mut daemon, EXIT_WAL2JSON).await;
    assert!(log.contains("postgresql-15-wal2json"), "{log}");

    // wal2json is back: what was written meanwhile is captured, nothing twice.
    set_library_path(&admin, "DEFAULT").await;
    let mut daemon = env.spawn();
    src.batch_execute("DELETE FROM t WHERE id = 2")
        .await
        .unwrap();
    env.sync().await;
    daemon.assert_running();
    let store = env.store().await;
    assert_counts(&store, "public", "t", Counts::new(2, 1, 1, 0)).await;
    let images: Vec<(String, Value, Value)> = table_entries(&store, "public", "t")
        .await
        .into_iter()
        .map(|e| (e.action, e.before, e.after))
        .collect();
    assert_eq!(
        images,
        [
            ("INSERT".into(), Value::Null, json!({"id": 1})),
            ("INSERT".into(), Value::Null, json!({"id": 2})),
            ("UPDATE".into(), json!({"id": 1}), json!({"id": 3})),
            ("DELETE".into(), json!({"id": 2}), Value::Null),
        ]
    );
}

/// `dynamic_library_path` for new backends (`ALTER SYSTEM` cannot share a batch with the reload).
async fn set_library_path(admin: &tokio_postgres::Client, value: &str) {
    admin
        .batch_execute(&format!("ALTER SYSTEM SET dynamic_library_path = {value}"))
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

/// Waits for a running daemon that meets a permanent error to exit with `code`, not at once but
/// after its tries (about 15 s of backoff, each logged as a retry); returns its log.
async fn exits_after_the_tries(daemon: &mut Daemon, code: i32) -> String {
    let since = Instant::now();
    let status = exit_of(daemon, Duration::from_secs(60)).await;
    let log = daemon.log();
    assert_eq!(status.code(), Some(code), "{log}");
    assert!(
        since.elapsed() >= Duration::from_secs(5),
        "not before the tries: {:?}\n{log}",
        since.elapsed()
    );
    assert!(
        log.matches("capture stopped by an error that needs attention; retrying")
            .count()
            >= 4,
        "{log}"
    );
    log
}
