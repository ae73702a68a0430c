//! TLS on both of the daemon's connections (replication and ordinary): with `sslmode=require` a
//! role that pg_hba refuses without TLS captures everything, and the server reports its
//! walsender as encrypted; `sslmode=disable` is refused cleanly; `require` against a server
//! without TLS fails cleanly.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_over_tls_with_sslmode_require() {
    let mut env = TestEnv::start().await;
    env.cluster
        .create_password_role("tls_user", "s3cret", "scram-sha-256")
        .await;
    let src = env
        .source_with(
            "CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY FULL;",
        )
        .await;

    // Setup is a DBA's job, as the tables' owner; the daemon runs as the replication role.
    env.setup().await;
    // Before TLS is on, sslmode=require must fail with a clear message, and quickly.
    let mut config = env.trail.config.clone();
    config.source_url = format!(
        "{}?sslmode=require",
        env.cluster.url_as("app", "tls_user", Some("s3cret"))
    );
    env.trail.rewrite(config.clone());
    env.trail
        .cli(&["run"])
        .await
        .assert_clean_failure(&["cannot connect", "tls"], Duration::from_secs(10));

    env.cluster.enable_tls("tls_user").await;
    let admin = env.cluster.client("postgres").await;
    let mut daemon = env.spawn();
    src.batch_execute(
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g;
         UPDATE t SET v = 'changed' WHERE id <= 10;
         DELETE FROM t WHERE id > 45;",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    assert_counts(&store, "public", "t", Counts::new(50, 10, 5, 0)).await;
    assert_store_matches_source(&src, &store, "public", "t").await;

    let encrypted: Vec<(String, bool)> = query_pairs(
        &admin,
        "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.usename = 'tls_user' AND a.application_name = 'pgtrail'",
        &[],
    )
    .await;
    assert!(
        encrypted.iter().any(|(kind, _)| kind == "walsender"),
        "no walsender of the daemon's found: {encrypted:?}"
    );
    assert!(
        encrypted.iter().all(|(_, ssl)| *ssl),
        "a connection of the daemon's is not encrypted: {encrypted:?}"
    );
    daemon.terminate().await;

    // Without TLS, pg_hba rejects the role: a clean failure naming the login problem.
    config.source_url = format!(
        "{}?sslmode=disable",
        env.cluster.url_as("app", "tls_user", Some("s3cret"))
    );
    env.trail.rewrite(config);
    env.wait_slot_inactive().await;
    env.trail.cli(&["run"]).await.assert_clean_failure(
        &["cannot connect", "no encryption"],
        Duration::from_secs(10),
    );
}
