//! Bad inputs and broken environments: unknown or mistyped config keys, a missing config, an
//! unreachable source, `wal_level` not logical, wal2json not loadable (at setup and at run), the
//! slot held by another process, and `run` before `setup`. Each must end the command with a
//! non-zero exit within a few seconds, a message that says what is wrong, and no panic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// "Within a few seconds".
const QUICK: Duration = Duration::from_secs(10);

/// A captured table, so that `setup` has something to check.
async fn with_table(env: &TestEnv) {
    env.source()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
}

/// Run `pgtrail --config CONFIG ARGS` (killed after 30 s) and check it fails cleanly, mentioning
/// every needle.
async fn expect_failure(config: &Path, args: &[&str], needles: &[&str]) -> CliOutput {
    expect_failure_within(config, args, needles, QUICK).await
}

/// [`expect_failure`], for a failure that takes a while by design.
async fn expect_failure_within(
    config: &Path,
    args: &[&str],
    needles: &[&str],
    limit: Duration,
) -> CliOutput {
    let mut all: Vec<OsString> = vec!["--config".into(), config.as_os_str().to_owned()];
    all.extend(args.iter().map(OsString::from));
    let out = run_pgtrail(&all, &[], Duration::from_secs(30)).await;
    out.assert_clean_failure(needles, limit);
    out
}

fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn valid_toml(port: u16) -> String {
    format!(
        "[source]\nurl = \"postgres://postgres@127.0.0.1:{port}/app\"\nslot = \"pgtrail\"\n\n\
         [store]\nurl = \"postgres://postgres@127.0.0.1:{port}/pgtrail\"\n\n\
         [capture]\ntables = [\"public.*\"]\nexclude = []\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_mistyped_config_keys_are_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there: config errors must come first
    let base = valid_toml(port);

    let unknown = write_config(
        &dir,
        "unknown-key.toml",
        &base.replace(
            "slot = \"pgtrail\"",
            "slot = \"pgtrail\"\nbogus_option = true",
        ),
    );
    let unknown_path = unknown.display().to_string();
    for cmd in ["setup", "run", "status"] {
        expect_failure(&unknown, &[cmd], &["bogus_option", &unknown_path]).await;
    }

    let section = write_config(
        &dir,
        "unknown-section.toml",
        &format!("{base}\n[extras]\nx = 1\n"),
    );
    expect_failure(
        &section,
        &["run"],
        &["extras", &section.display().to_string()],
    )
    .await;

    let slot_type = write_config(
        &dir,
        "slot-type.toml",
        &base.replace("slot = \"pgtrail\"", "slot = 42"),
    );
    expect_failure(
        &slot_type,
        &["setup"],
        &["slot", &slot_type.display().to_string()],
    )
    .await;

    let tables_type = write_config(
        &dir,
        "tables-type.toml",
        &base.replace("tables = [\"public.*\"]", "tables = \"public.*\""),
    );
    expect_failure(
        &tables_type,
        &["run"],
        &["tables", &tables_type.display().to_string()],
    )
    .await;

    // The config path may come from PGTRAIL_CONFIG instead of --config.
    let out = run_pgtrail(
        &["run".into()],
        &[("PGTRAIL_CONFIG", unknown_path.as_str())],
        Duration::from_secs(30),
    )
    .await;
    out.assert_clean_failure(&["bogus_option", &unknown_path], QUICK);

    // No config at all.
    let out = run_pgtrail(&["run".into()], &[], Duration::from_secs(30)).await;
    out.assert_clean_failure(&[], QUICK);

    // A config file that does not exist: named in the message.
    let missing = dir.path().join("does-not-exist.toml");
    expect_failure(&missing, &["setup"], &[&missing.display().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_says_cannot_connect_with_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let both_closed = write_config(&dir, "closed.toml", &valid_toml(closed));
    let hostport = format!("127.0.0.1:{closed}");
    for cmd in ["setup", "run"] {
        expect_failure(&both_closed, &[cmd], &["cannot connect", &hostport]).await;
    }

    // The store is fine and set up, only the source is unreachable.
    let mut env = TestEnv::start().await;
    with_table(&env).await;
    env.setup().await;
    let mut config = env.trail.config.clone();
    config.source_url = format!("postgres://postgres@127.0.0.1:{closed}/app");
    env.trail.rewrite(config);
    expect_failure(
        &env.trail.config_path,
        &["run"],
        &["cannot connect", &hostport],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_refused() {
    let env = TestEnv::start_with(
        ClusterOptions::default().setting("wal_level", "replica"),
        |_| {},
    )
    .await;
    with_table(&env).await;
    expect_failure(
        &env.trail.config_path,
        &["setup"],
        &["wal_level", "logical"],
    )
    .await;
    // run cannot work either; it must say so and stop.
    expect_failure(&env.trail.config_path, &["run"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wal2json_names_the_package() {
    // The server cannot find any dynamically loaded module, so wal2json cannot be loaded.
    let env = TestEnv::start_with(
        ClusterOptions::default().setting("dynamic_library_path", "/nonexistent"),
        |_| {},
    )
    .await;
    with_table(&env).await;
    // Make sure the setting really has that effect on this server.
    let c = env.cluster.client("postgres").await;
    let err = c
        .query_one(
            "SELECT pg_create_logical_replication_slot('probe', 'wal2json')",
            &[],
        )
        .await
        .expect_err("wal2json must not be loadable here");
    assert!(
        err.to_string().contains("wal2json") || format!("{err:?}").contains("wal2json"),
        "{err:?}"
    );
    expect_failure(
        &env.trail.config_path,
        &["setup"],
        &["wal2json", "postgresql-15-wal2json"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal2json_gone_after_setup_fails_run_with_the_package_name() {
    let mut env = TestEnv::start().await;
    with_table(&env).await;
    env.setup().await;
    tokio::task::block_in_place(|| {
        env.cluster
            .set_and_restart("dynamic_library_path", "/nonexistent")
    });
    expect_failure(
        &env.trail.config_path,
        &["run"],
        &["wal2json", "postgresql-15-wal2json"],
    )
    .await;
    // setup, run again with the slot already there, checks that wal2json still loads.
    expect_failure(
        &env.trail.config_path,
        &["setup"],
        &["wal2json", "postgresql-15-wal2json"],
    )
    .await;
}

/// `pg_recvlogical` holding the slot; killed on drop.
struct Recvlogical(Child);

impl Drop for Recvlogical {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_in_use_by_another_process() {
    let env = TestEnv::start().await;
    with_table(&env).await;
    env.setup().await;
    let holder = Recvlogical(
        Command::new(Path::new(PG_BIN).join("pg_recvlogical"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &env.cluster.port().to_string(),
                "-U",
                "postgres",
                "-d",
                "app",
            ])
            .args(["--slot", SLOT, "--start", "-f", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pg_recvlogical"),
    );
    let admin = env.cluster.client("postgres").await;
    let admin = &admin;
    wait_until(
        "pg_recvlogical to hold the slot",
        Duration::from_secs(30),
        move || async move { slot_state(admin, SLOT).await.is_some_and(|s| s.active) },
    )
    .await;
    // `run` gives the slot 5 s to be released (a restart's old walsender may
    // linger) before it says so; the process start and connections come on top.
    expect_failure_within(
        &env.trail.config_path,
        &["run"],
        &["in use"],
        Duration::from_secs(20),
    )
    .await;
    // The other consumer was not disturbed.
    assert!(slot_state(admin, SLOT).await.unwrap().active);
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_before_setup_says_to_run_setup() {
    let env = TestEnv::start().await;
    with_table(&env).await;
    expect_failure(&env.trail.config_path, &["run"], &["pgtrail setup"]).await;
    // And after setup it runs.
    env.setup().await;
    let mut daemon = env.spawn();
    env.sync().await;
    daemon.terminate().await;
}
