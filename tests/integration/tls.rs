//! TLS on both of the daemon's connections (replication and ordinary): with `sslmode=require` a
//! role that pg_hba refuses without TLS captures everything, and the server reports its
//! walsender as encrypted; `sslmode=disable` is refused cleanly; `require` against a server
//! without TLS fails cleanly. Against a private CA ([`Pki`]): `verify-full` with channel binding
//! required captures end to end (with `sslrootcert`, and with the system's CAs, which
//! `SSL_CERT_FILE` replaces); a wrong host name, another CA, a missing CA file and channel
//! binding without TLS are refused with messages that say so, on the store's, the source's and
//! the replication connection; `verify-ca` accepts the wrong name.

use std::time::Duration;

use pgtrail::capture::replication::ReplicationConnection;
use pgtrail::pg::PgUrl;
use tokio_postgres::Client;

use crate::harness::*;

/// Every connection of the daemon's (`application_name` pgtrail) is encrypted, its walsender
/// among them.
async fn assert_daemon_encrypted(admin: &Client, user: &str) {
    let encrypted: Vec<(String, bool)> = query_pairs(
        admin,
        "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.usename = $1 AND a.application_name = 'pgtrail'",
        &[&user],
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
}

/// Inserts, updates and deletes rows of `t` on the source, waits until the daemon stored them,
/// and checks the store against the source. The harness reads the store as the superuser,
/// without the TLS parameters the daemon's URLs may carry.
async fn change_and_check(env: &TestEnv, src: &Client) {
    src.batch_execute(
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g;
         UPDATE t SET v = 'changed' WHERE id <= 10;
         DELETE FROM t WHERE id > 45;",
    )
    .await
    .unwrap();
    sync_via(src, &env.cluster.url("pgtrail"), SYNC_TIMEOUT).await;
    let store = env.cluster.client("pgtrail").await;
    assert_counts(&store, "public", "t", Counts::new(50, 10, 5, 0)).await;
    assert_store_matches_source(src, &store, "public", "t").await;
}

/// A world whose cluster serves the [`Pki`]'s certificate for `localhost`, where the role
/// `tls_user` (password `s3cret`, a superuser so that it may write the store too) logs in over
/// TLS only, with scram-sha-256; set up, with the table `t`.
async fn private_ca_world() -> (Pki, TestEnv, Client) {
    let pki = Pki::new();
    let opts = ClusterOptions::default().tls(&pki.server_cert, &pki.server_key, "tls_user");
    let env = TestEnv::start_with(opts, |_| {}).await;
    env.cluster
        .create_password_role("tls_user", "s3cret", "scram-sha-256")
        .await;
    let src = env
        .source_with(
            "ALTER ROLE tls_user SUPERUSER;
             CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY FULL;",
        )
        .await;
    env.setup().await;
    (pki, env, src)
}

/// `tls_user`'s URL for `db` on the world's cluster, by `host`, with the query `params`.
fn tls_url(env: &TestEnv, host: &str, db: &str, params: &str) -> String {
    format!(
        "postgres://tls_user:s3cret@{host}:{}/{db}?{params}",
        env.cluster.port()
    )
}

/// `sslmode=MODE&sslrootcert=CA` (and `&more`, if any).
fn verified(mode: &str, ca: &std::path::Path, more: &str) -> String {
    format!("sslmode={mode}&sslrootcert={}{more}", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_channel_binding_captures_end_to_end() {
    let (pki, mut env, src) = private_ca_world().await;
    let params = verified("verify-full", &pki.ca, "&channel_binding=require");
    let mut config = env.trail.config.clone();
    config.source_url = tls_url(&env, "localhost", "app", &params);
    // Without sslrootcert, verify-full trusts the system's CAs: here the private CA, through
    // SSL_CERT_FILE, which takes the place of the system's bundle.
    let system = "sslmode=verify-full&channel_binding=require";
    config.store_url = tls_url(&env, "localhost", "pgtrail", system);
    env.trail.rewrite(config);
    env.trail
        .envs
        .push(("SSL_CERT_FILE".into(), pki.ca.display().to_string()));

    let mut daemon = env.spawn();
    change_and_check(&env, &src).await;
    assert_daemon_encrypted(&env.cluster.client("postgres").await, "tls_user").await;
    daemon.terminate().await;
}

/// `pgtrail run` with these URLs fails within seconds, saying each of `needles`.
async fn refused_run(trail: &mut Pgtrail, source_url: String, store_url: String, needles: &[&str]) {
    let mut config = trail.config.clone();
    config.source_url = source_url;
    config.store_url = store_url;
    trail.rewrite(config);
    trail
        .cli(&["run"])
        .await
        .assert_clean_failure(needles, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_a_wrong_name_another_ca_and_binding_without_tls() {
    let (pki, mut env, _src) = private_ca_world().await;
    let full = verified("verify-full", &pki.ca, "");
    let source_ok = tls_url(&env, "localhost", "app", &full);
    let store_ok = tls_url(&env, "localhost", "pgtrail", &full);
    // The source's connection, by an address the certificate does not name.
    let by_address = tls_url(&env, "127.0.0.1", "app", &full);
    // The store's connection, trusting a CA that did not sign the server's certificate.
    let other = pki.other_ca.display().to_string();
    let other_ca = verified("verify-full", &pki.other_ca, "");
    let store_other_ca = tls_url(&env, "localhost", "pgtrail", &other_ca);
    // A CA file that is not there.
    let missing = format!("{}/nonexistent-ca.pem", env.trail.dir().display());
    let missing_ca = format!("sslmode=verify-full&sslrootcert={missing}");
    let store_missing = tls_url(&env, "localhost", "pgtrail", &missing_ca);
    // The system's CAs (here: the other CA, through SSL_CERT_FILE).
    let store_system = tls_url(&env, "localhost", "pgtrail", "sslrootcert=system");
    // Channel binding without TLS.
    let plain = tls_url(
        &env,
        "localhost",
        "app",
        "sslmode=disable&channel_binding=require",
    );

    let trail = &mut env.trail;
    refused_run(
        trail,
        by_address,
        store_ok.clone(),
        &[
            "source database",
            "the server's certificate is for localhost, not 127.0.0.1",
            "connect by one of those names or use sslmode=verify-ca",
        ],
    )
    .await;
    let not_signed = format!("the server's certificate is not signed by the CA in {other}");
    refused_run(
        trail,
        source_ok.clone(),
        store_other_ca,
        &["audit store", &not_signed],
    )
    .await;
    // Named, with the way out, before anything connects.
    let unreadable = format!("cannot read the sslrootcert file {missing}");
    refused_run(
        trail,
        source_ok.clone(),
        store_missing,
        &["store.url", &unreadable, "sslrootcert=system"],
    )
    .await;
    trail
        .envs
        .push(("SSL_CERT_FILE".into(), pki.other_ca.display().to_string()));
    refused_run(
        trail,
        source_ok.clone(),
        store_system,
        &["is not signed by any CA the system trusts (sslrootcert=system)"],
    )
    .await;
    refused_run(
        trail,
        plain,
        store_ok,
        &["source.url", "channel_binding=require needs TLS"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_connection_checks_the_certificate_like_the_others() {
    let (pki, env, _src) = private_ca_world().await;
    let url = |host: &str, params: &str| {
        PgUrl::parse(&tls_url(&env, host, "app", params)).expect("a valid URL")
    };
    let refusal = async |url: PgUrl| match ReplicationConnection::connect(&url, "pgtrail").await {
        Ok(_) => panic!(
            "connected to {}, but should have been refused",
            url.endpoint()
        ),
        Err(e) => e.to_string(),
    };

    let wrong_name = refusal(url("127.0.0.1", &verified("verify-full", &pki.ca, ""))).await;
    assert!(
        wrong_name.contains("the server's certificate is for localhost, not 127.0.0.1: connect by one of those names or use sslmode=verify-ca"),
        "{wrong_name}"
    );
    let other_ca = refusal(url(
        "localhost",
        &verified("verify-full", &pki.other_ca, ""),
    ))
    .await;
    let other = pki.other_ca.display().to_string();
    assert!(
        other_ca.contains(&format!(
            "the server's certificate is not signed by the CA in {other}"
        )),
        "{other_ca}"
    );
    // Without TLS (a Unix socket), channel binding cannot be had: refused, on both kinds of
    // connection, even where pg_hba trusts the role.
    let socket = PgUrl::parse(&format!(
        "{} channel_binding=require",
        env.cluster.socket_conninfo("app", "postgres")
    ))
    .expect("a valid conninfo");
    let unbound = refusal(socket.clone()).await;
    assert!(unbound.contains("did not use channel binding"), "{unbound}");
    let ordinary = match pgtrail::pg::connect(&socket, "pgtrail").await {
        Ok(_) => panic!("an ordinary connection without TLS passed channel_binding=require"),
        Err(e) => pgtrail::pg::describe(&e),
    };
    assert!(
        ordinary.contains("did not use channel binding"),
        "{ordinary}"
    );

    // verify-ca checks the CA only: the address is accepted, on both kinds of connection; and
    // verify-full by the certificate's name, with channel binding required.
    for url in [
        url("127.0.0.1", &verified("verify-ca", &pki.ca, "")),
        url(
            "localhost",
            &verified("verify-full", &pki.ca, "&channel_binding=require"),
        ),
    ] {
        let mut replication = ReplicationConnection::connect(&url, "pgtrail")
            .await
            .unwrap_or_else(|e| panic!("replication to {}: {e}", url.endpoint()));
        let system = replication
            .identify_system()
            .await
            .expect("IDENTIFY_SYSTEM");
        assert!(!system.system_id.is_empty());
        let ordinary = pgtrail::pg::connect(&url, "pgtrail")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {}: {}",
                    url.endpoint(),
                    pgtrail::pg::describe(&e)
                )
            });
        let ssl: bool = ordinary
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert!(
            ssl,
            "the ordinary connection to {} is not encrypted",
            url.endpoint()
        );
    }
}

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
    change_and_check(&env, &src).await;

    assert_daemon_encrypted(&admin, "tls_user").await;
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
