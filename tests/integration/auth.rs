//! Password authentication to the source: a REPLICATION role with an md5 password and one with a
//! SCRAM-SHA-256 password (pg_hba forces both to authenticate over TCP), the password given in
//! the URL (percent-encoded) and through PGPASSWORD; a wrong password fails cleanly.

use std::time::Duration;

use crate::harness::*;

/// Percent-encode everything but RFC 3986 unreserved characters (for a URL userinfo).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Capture with `role` (password stored with `encryption`), first with the password given one way,
/// then the other: `url_first` says whether the URL comes first (else PGPASSWORD).
async fn capture_as(
    role: &str,
    password: &str,
    encryption: &str,
    stored_prefix: &str,
    url_first: bool,
) {
    let mut env = TestEnv::start().await;
    env.cluster
        .create_password_role(role, password, encryption)
        .await;
    let admin = env.cluster.client("postgres").await;
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with(stored_prefix),
        "{role}'s password is stored as {stored:.14}…"
    );
    // pg_hba really demands the password.
    assert!(
        connect(&env.cluster.url_as("app", role, None))
            .await
            .is_err(),
        "{role} connected without a password"
    );
    assert!(connect(
        &env.cluster
            .url_as("app", role, Some(&percent_encode(password)))
    )
    .await
    .is_ok());

    let src = env
        .source_with(
            "CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY FULL;",
        )
        .await;

    // A DBA runs setup as the tables' owner; the daemon then runs as the replication role.
    env.setup().await;
    let with_url = env
        .cluster
        .url_as("app", role, Some(&percent_encode(password)));
    let without = env.cluster.url_as("app", role, None);
    let mut config = env.trail.config.clone();
    for (phase, by_url) in [(0, url_first), (1, !url_first)] {
        config.source_url = if by_url {
            with_url.clone()
        } else {
            without.clone()
        };
        env.trail.rewrite(config.clone());
        env.trail.envs = if by_url {
            vec![]
        } else {
            vec![("PGPASSWORD".into(), password.into())]
        };
        let mut daemon = env.spawn();
        let base = phase * 100;
        src.batch_execute(&format!(
            "INSERT INTO t SELECT g, 'v' FROM generate_series({}, {}) g;
             UPDATE t SET v = 'w' WHERE id = {};
             DELETE FROM t WHERE id = {};",
            base + 1,
            base + 20,
            base + 1,
            base + 2
        ))
        .await
        .unwrap();
        env.sync().await;
        let store = env.store().await;
        assert_counts(
            &store,
            "public",
            "t",
            Counts::new(20 * (phase + 1), phase + 1, phase + 1, 0),
        )
        .await;
        assert_store_matches_source(&src, &store, "public", "t").await;
        daemon.terminate().await;
        env.wait_slot_inactive().await;
    }

    // A wrong password: a clean, quick failure (setup checks the source).
    config.source_url = env.cluster.url_as("app", role, Some("wrong-password"));
    env.trail.rewrite(config.clone());
    env.trail.envs = vec![];
    let out = env.trail.cli(&["setup"]).await;
    out.assert_clean_failure(&[], Duration::from_secs(10));
    config.source_url = without;
    env.trail.rewrite(config);
    env.trail.envs = vec![("PGPASSWORD".into(), "wrong-password".into())];
    let out = env.trail.cli(&["run"]).await;
    out.assert_clean_failure(&[], Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_password_in_url_and_pgpassword() {
    capture_as("md5_user", "md5-Secret_1", "md5", "md5", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_password_in_pgpassword_and_url() {
    capture_as(
        "scram_user",
        "sc ram'pw\"!@:/%é",
        "scram-sha-256",
        "SCRAM-SHA-256$",
        false,
    )
    .await;
}
