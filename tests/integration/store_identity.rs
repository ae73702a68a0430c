//! The store must be another database than the source, or pgtrail would audit its own writes. The
//! config refuses a `store.url` equal to `source.url`; `setup` (and `setup --dry-run`) refuses one
//! that reaches the source's database another way, the server's Unix socket or `localhost` for
//! `127.0.0.1`, by what the server says (its system identifier and the database's OID), before it
//! changes anything on either side. Another database of the source's server, whichever way it is
//! reached, is a store. A store role that may not call `pg_control_system()` is refused the same
//! way, by what any role may read (the server's start time and the database's OID).

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::harness::*;

/// The source database's OID, and two ways for `user` to reach it that are not source.url's
/// (`127.0.0.1`): the server's Unix socket, and `localhost`.
async fn other_ways_to_app(env: &TestEnv, src: &Client, user: &str) -> (u32, [String; 2]) {
    let oid: u32 = query_value(
        src,
        "SELECT oid FROM pg_database WHERE datname = 'app'",
        &[],
    )
    .await;
    let port = env.cluster.port();
    let ways = [
        env.cluster.socket_conninfo("app", user),
        format!("postgres://{user}@localhost:{port}/app"),
    ];
    (oid, ways)
}

/// Nothing of pgtrail's in the source: no slot, no schema, no trigger.
async fn assert_source_untouched(src: &Client, store_url: &str) {
    let slots = query_count(src, "SELECT count(*) FROM pg_replication_slots").await;
    let schema: bool = query_value(src, "SELECT to_regnamespace('pgtrail') IS NULL", &[]).await;
    let triggers = query_count(
        src,
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgtrail_context'",
    )
    .await;
    assert_eq!((slots, schema, triggers), (0, true, 0), "{store_url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_url_that_reaches_the_sources_database_another_way_is_refused() {
    let mut env = TestEnv::start().await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await;
    let (oid, ways) = other_ways_to_app(&env, &src, "postgres").await;
    let system: String = query_value(
        &src,
        "SELECT system_identifier::text FROM pg_control_system()",
        &[],
    )
    .await;
    for store_url in ways {
        let mut config = env.trail.config.clone();
        config.store_url = store_url.clone();
        env.trail.rewrite(config);
        for args in [&["setup"][..], &["setup", "--dry-run"]] {
            env.trail.cli(args).await.assert_clean_failure(
                &[
                    "store.url reaches the source's own database",
                    &format!("database \"app\" (OID {oid}) on the server with system identifier {system}"),
                    "pgtrail would audit its own writes",
                    "name another database in store.url",
                    "remove store.url",
                ],
                Duration::from_secs(30),
            );
        }
        assert_source_untouched(&src, &store_url).await;
    }

    // Another database of the same server over the socket is a store: made by the first setup,
    // found by the second.
    let mut config = env.trail.config.clone();
    config.store_url = env.cluster.socket_conninfo("audit", "postgres");
    env.trail.rewrite(config);
    env.trail.setup().await;
    let out = env.trail.cli(&["setup"]).await;
    out.assert_success();
    assert!(out.stdout.contains("nothing to do"), "{out}");
    let store = env.cluster.client("audit").await;
    let bound: i64 = query_value(
        &store,
        "SELECT database_oid FROM pgtrail.sources WHERE name = 'app'",
        &[],
    )
    .await;
    assert_eq!(bound, i64::from(oid));
}

/// Regression: a store role that may not call `pg_control_system()` (revoked from PUBLIC, as some
/// hardening guides do) skipped the check with a warning, and setup went on into the source's own
/// database. Now the server's start time and the database's OID tell it, whichever way it is
/// reached; another database of the same server is still a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_role_that_may_not_call_pg_control_system_is_refused_the_sources_database_too() {
    let mut env = TestEnv::start().await;
    let src = env
        .source_with(
            "CREATE TABLE t (id int PRIMARY KEY, v int); \
             REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC; \
             CREATE ROLE trail_store LOGIN",
        )
        .await;
    let (oid, ways) = other_ways_to_app(&env, &src, "trail_store").await;
    for store_url in ways {
        // The path under test is the one taken: this role, this way in, may not call it.
        let store = connect(&store_url).await.unwrap();
        let denied = store
            .query_one("SELECT system_identifier FROM pg_control_system()", &[])
            .await
            .unwrap_err();
        assert_eq!(
            denied.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{store_url}: {denied}"
        );
        let mut config = env.trail.config.clone();
        config.store_url = store_url.clone();
        env.trail.rewrite(config);
        for args in [&["setup"][..], &["setup", "--dry-run"]] {
            let out = env.trail.cli(args).await;
            out.assert_clean_failure(
                &[
                    "store.url reaches the source's own database",
                    &format!("database \"app\" (OID {oid}) on the server started at "),
                    "pgtrail would audit its own writes",
                    "name another database in store.url",
                    "remove store.url",
                ],
                Duration::from_secs(30),
            );
            assert!(!out.combined().contains("cannot tell"), "{out}");
        }
        assert_source_untouched(&src, &store_url).await;
    }

    // Another database of the same server, reached by the same role over the socket, where it
    // may not call pg_control_system() either, is not the source's.
    let admin = env.cluster.client("postgres").await;
    admin
        .batch_execute("CREATE DATABASE audit OWNER trail_store")
        .await
        .unwrap();
    env.cluster
        .client("audit")
        .await
        .batch_execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        .await
        .unwrap();
    let mut config = env.trail.config.clone();
    config.store_url = env.cluster.socket_conninfo("audit", "trail_store");
    env.trail.rewrite(config);
    // A store database made ahead and still empty: the plan is shown (it prints every
    // migration, whose comments may say anything), and neither refusal is among its lines.
    let out = env.trail.cli(&["setup", "--dry-run"]).await;
    out.assert_success();
    assert!(
        !out.combined().contains("reaches the source's own database")
            && !out.combined().contains("cannot tell whether store.url"),
        "{out}"
    );
}
