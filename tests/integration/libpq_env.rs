//! libpq's environment and files, for the source and the store: config URLs that leave out the
//! host, port, user and password capture with them taken from `PG*` variables, from a password
//! file (0600; one that others may read is refused with a warning saying `chmod 0600`), and from
//! a service file naming one service for the source and another for the store. Each way, the
//! daemon really captures (the store's entries replay to the source's rows) and the one-shot
//! commands (`status`, `verify`) connect the same way.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const ROLE: &str = "scram_user";
/// With a colon and a backslash, which the password file must escape.
const PASSWORD: &str = r"pg:pa\ss-1";

/// A world whose source `app` has a table `t`, set up by the superuser, and a SCRAM replication
/// role the daemon runs as; a home directory of the test's own (no `~/.pgpass` of the machine's).
async fn world() -> (TestEnv, tokio_postgres::Client, tempfile::TempDir) {
    let env = TestEnv::start().await;
    env.cluster
        .create_password_role(ROLE, PASSWORD, "scram-sha-256")
        .await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v text);")
        .await;
    env.setup().await;
    (env, src, tempfile::tempdir().unwrap())
}

/// Writes the config file with these URLs; the harness keeps its own explicit URLs for the
/// test's connections (sync, store checks).
fn write_config(env: &TestEnv, source_url: &str, store_url: &str) {
    let mut config = env.trail.config.clone();
    config.source_url = source_url.to_owned();
    config.store_url = store_url.to_owned();
    std::fs::write(&env.trail.config_path, config.to_toml()).unwrap();
}

/// Runs the daemon with the config and environment as they are, writes a round of changes, and
/// checks the store holds exactly them (round `n` of several, counted from 0).
async fn capture_round(env: &TestEnv, src: &tokio_postgres::Client, n: i64) {
    let mut daemon = env.spawn();
    let first = n * 100 + 1;
    for sql in [
        format!(
            "INSERT INTO t SELECT g, 'v' FROM generate_series({first}, {}) g",
            first + 9
        ),
        format!("UPDATE t SET v = 'w' WHERE id = {first}"),
        format!("DELETE FROM t WHERE id = {}", first + 1),
    ] {
        src.execute(sql.as_str(), &[]).await.unwrap();
    }
    env.sync().await;
    let store = env.store().await;
    let rounds = n + 1;
    let counts = Counts::new(10 * rounds, rounds, rounds, 0);
    assert_counts(&store, "public", "t", counts).await;
    assert_store_matches_source(src, &store, "public", "t").await;
    let log = daemon.log();
    assert!(
        !log.contains(PASSWORD),
        "the daemon logged the password:\n{log}"
    );
    daemon.terminate().await;
    env.wait_slot_inactive().await;
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn home_env(home: &Path, more: &[(&str, String)]) -> Vec<(String, String)> {
    let mut envs = vec![("HOME".to_owned(), home.display().to_string())];
    envs.extend(more.iter().map(|(k, v)| (k.to_string(), v.clone())));
    envs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_variables_and_the_password_file_complete_the_url() {
    let (mut env, src, home) = world().await;
    let port = env.cluster.port().to_string();
    // The source names only its database; the store keeps its explicit URL (as the superuser,
    // trusted), which the variables must not change.
    let store_url = env.trail.config.store_url.clone();
    write_config(&env, "postgres:///app", &store_url);
    let host_port_user = [
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", port.clone()),
        ("PGUSER", ROLE.to_owned()),
    ];

    // PGPASSWORD.
    let mut with_password = host_port_user.to_vec();
    with_password.push(("PGPASSWORD", PASSWORD.to_owned()));
    env.trail.envs = home_env(home.path(), &with_password);
    capture_round(&env, &src, 0).await;
    env.trail.cli(&["status"]).await.assert_success();

    // ~/.pgpass, refused while others may read it, used once it is 0600.
    let escaped = PASSWORD.replace('\\', r"\\").replace(':', r"\:");
    let pgpass = home.path().join(".pgpass");
    let lines = format!(
        "# pgtrail\n127.0.0.1:{port}:shop:{ROLE}:wrong\n127.0.0.1:{port}:app:{ROLE}:{escaped}\n"
    );
    write_mode(&pgpass, &lines, 0o644);
    env.trail.envs = home_env(home.path(), &host_port_user);
    let out = env.trail.cli(&["status"]).await;
    out.assert_clean_failure(
        &["has group or world access", "chmod 0600", "password"],
        Duration::from_secs(20),
    );
    assert!(
        out.combined().contains(&pgpass.display().to_string()),
        "{out}"
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    capture_round(&env, &src, 1).await;
    let out = env.trail.cli(&["status"]).await;
    out.assert_success();
    assert!(!out.combined().contains("chmod"), "{out}");

    // PGPASSFILE names another file; ~/.pgpass is then not read.
    let other = home.path().join("elsewhere.pgpass");
    write_mode(&other, &lines, 0o600);
    write_mode(&pgpass, "*:*:*:*:wrong\n", 0o600);
    let mut with_passfile = host_port_user.to_vec();
    with_passfile.push(("PGPASSFILE", other.display().to_string()));
    env.trail.envs = home_env(home.path(), &with_passfile);
    capture_round(&env, &src, 2).await;
    env.trail.cli(&["verify"]).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_name_the_source_and_the_store() {
    let (mut env, src, home) = world().await;
    let port = env.cluster.port();
    let services = home.path().join("services.conf");
    std::fs::write(
        &services,
        format!(
            "# the audited database, as the replication role\n[shop]\nhost=127.0.0.1\nport={port}\n\
             dbname=app\nuser={ROLE}\n\n[audit]\nhost=127.0.0.1\nport={port}\ndbname=pgtrail\n\
             user=postgres\n"
        ),
    )
    .unwrap();
    let escaped = PASSWORD.replace('\\', r"\\").replace(':', r"\:");
    write_mode(
        &home.path().join(".pgpass"),
        &format!("*:*:app:{ROLE}:{escaped}\n"),
        0o600,
    );
    write_config(&env, "service=shop", "postgres:///?service=audit");
    let file = ("PGSERVICEFILE", services.display().to_string());
    env.trail.envs = home_env(home.path(), std::slice::from_ref(&file));
    capture_round(&env, &src, 0).await;
    for command in [&["status"][..], &["verify"], &["tables"]] {
        env.trail.cli(command).await.assert_success();
    }

    // The same services from the system file, found through PGSYSCONFDIR.
    let sysconf = tempfile::tempdir().unwrap();
    std::fs::copy(&services, sysconf.path().join("pg_service.conf")).unwrap();
    let sys = ("PGSYSCONFDIR", sysconf.path().display().to_string());
    env.trail.envs = home_env(home.path(), std::slice::from_ref(&sys));
    capture_round(&env, &src, 1).await;

    // A service no file defines, and a service file libpq could not read either: clear errors.
    write_config(&env, "service=shopp", "service=audit");
    let out = env.trail.cli(&["status"]).await;
    out.assert_clean_failure(
        &[
            "source.url",
            "service \"shopp\"",
            "no [shopp] section",
            "PGSERVICEFILE",
        ],
        Duration::from_secs(5),
    );
    std::fs::write(&services, "[shop]\nhost = 127.0.0.1\n").unwrap();
    write_config(&env, "service=shop", "service=audit");
    env.trail.envs = home_env(home.path(), &[file, sys]);
    let out = env.trail.cli(&["status"]).await;
    out.assert_clean_failure(
        &["services.conf", "line 2", "host=127.0.0.1", "no spaces"],
        Duration::from_secs(5),
    );
}
