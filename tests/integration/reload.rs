//! SIGHUP reloads the config: a widened capture set applies from the reload on, with nothing
//! lost or doubled; an invalid config is refused and capture goes on with the running one.
//! Capture and the web view apply one reading of the file per SIGHUP.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_capture_set_without_losing_or_doubling() {
    let mut env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.a".into(), "public.it_sync_marker".into()];
    })
    .await;
    let src = env.source_with("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);").await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1');")
        .await
        .unwrap();
    env.sync().await;

    // Widen the capture set. The DBA runs setup for the new table, then reloads.
    let mut config = env.trail.config.clone();
    config.tables.push("public.b".into());
    env.trail.rewrite(config.clone());
    env.setup().await;
    daemon.signal(libc::SIGHUP);
    wait_until(
        "the daemon to log the reload",
        Duration::from_secs(20),
        || async { daemon.log().contains("config reloaded") },
    )
    .await;
    // A long transaction spanning the reload on the source side.
    src.batch_execute("INSERT INTO a VALUES (2, 'a2'); INSERT INTO b VALUES (2, 'b2'); UPDATE b SET v = 'b1x' WHERE id = 1;").await.unwrap();
    env.sync().await;

    let store = env.store().await;
    assert_counts(&store, "public", "a", Counts::new(2, 0, 0, 0)).await;
    // b's first insert was committed and stored before b was captured; everything after is there, once.
    assert_counts(&store, "public", "b", Counts::new(1, 1, 0, 0)).await;

    // An invalid config is refused, and capture goes on with the running one.
    std::fs::write(
        &env.trail.config_path,
        "[source]\nurl = 'postgres://x@127.0.0.1:1/app'\nbogus = 1\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until(
        "the daemon to refuse the bad config",
        Duration::from_secs(20),
        || async { daemon.log().contains("config not reloaded") },
    )
    .await;
    // Fixing the file right away must not let one part of the daemon apply
    // the fixed file while the other refused the bad one: both act on the
    // one reading SIGHUP made.
    env.trail.rewrite(config.clone());
    wait_until(
        "capture and the web view both to refuse that same reading",
        Duration::from_secs(20),
        || async {
            let log = daemon.log();
            log.contains("capture goes on with the running config")
                && log.contains("the web view goes on with the running settings")
        },
    )
    .await;
    assert!(
        daemon.log().contains("bogus"),
        "the refusal names the bad key:\n{}",
        daemon.log()
    );
    src.batch_execute("DELETE FROM b WHERE id = 2; INSERT INTO a VALUES (3, 'a3');")
        .await
        .unwrap();
    env.sync().await;
    assert_counts(&store, "public", "a", Counts::new(3, 0, 0, 0)).await;
    assert_counts(&store, "public", "b", Counts::new(1, 1, 1, 0)).await;
    daemon.terminate().await;
    // Regression: the stop signal closes the reload channel, which must not count as a reload.
    assert_eq!(
        daemon.log().matches("config reloaded").count(),
        1,
        "{}",
        daemon.log()
    );
}

/// `[source] name` picks the source's checkpoint and chain in the store: a reload cannot change
/// it. The daemon says so, keeps the running name (and takes the rest of the file), and goes on
/// capturing as that source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_running_source_name() {
    let mut env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.tables = vec!["public.a".into(), "public.it_sync_marker".into()];
    })
    .await;
    let src = env
        .source_with("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    // Capturing, so the reload below is not sent while the daemon is still starting.
    env.sync().await;
    let store = env.store().await;
    let running: String =
        query_value(&store, "SELECT name FROM pgtrail.sources WHERE id = 1", &[]).await;
    let mut config = env.trail.config.clone();
    config.source_toml = "name = \"renamed\"\n".into();
    config.tables.push("public.b".into());
    env.trail.rewrite(config);
    daemon.signal(libc::SIGHUP);
    wait_until("the daemon to reload", Duration::from_secs(20), || async {
        daemon.log().contains("config reloaded")
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("[source] name changed in the config file")
            && log.contains(&format!("capture goes on as \"{running}\""))
            && log.contains("Restart pgtrail to capture under the new name"),
        "{log}"
    );
    src.batch_execute("INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1');")
        .await
        .unwrap();
    env.sync().await;
    // Both tables (the rest of the new file applies) under the running source, and no other.
    let stored: Vec<(String, String)> = query_pairs(
        &store,
        "SELECT s.name, e.table_name FROM pgtrail.entries e JOIN pgtrail.sources s ON s.id = e.source \
         WHERE e.table_name IN ('a', 'b') ORDER BY e.id",
        &[],
    )
    .await;
    assert_eq!(
        stored,
        [
            (running.clone(), "a".to_owned()),
            (running.clone(), "b".to_owned())
        ]
    );
    let names: Vec<String> =
        query_column(&store, "SELECT name FROM pgtrail.sources ORDER BY id", &[]).await;
    assert_eq!(names, ["pgtrail".to_owned(), running]);
    daemon.assert_running();
    daemon.terminate().await;
}

/// Regression: a SIGHUP sent while the daemon was still starting (reading its arguments and its
/// config, before its handlers were in place) ended it, SIGHUP's default action. The config file
/// is a FIFO here, so the daemon is certainly in the middle of reading it when the SIGHUP comes
/// (no sleep decides that): it must live, and once running, take the SIGHUP as a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_the_daemon_reads_its_config_is_a_reload() {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let env = TestEnv::start().await;
    env.source_with("CREATE TABLE t (id int PRIMARY KEY)").await;
    env.setup().await;
    let path = env.trail.config_path.clone();
    let text = env.trail.config.to_toml();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());

    let mut daemon = env.spawn();
    // A writer's non-blocking open of a FIFO fails (ENXIO) until a reader has it open, so the
    // first one that succeeds proves the daemon is inside its config's read; with this writer
    // open, its read waits for the text.
    let mut writer = None;
    wait_until(
        "the daemon to open its config",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .ok();
            let opened = writer.is_some();
            async move { opened }
        },
    )
    .await;
    daemon.signal(libc::SIGHUP);
    let mut writer = writer.expect("the FIFO's writer");
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);

    wait_until(
        "the daemon to take the SIGHUP as a reload",
        Duration::from_secs(30),
        || {
            daemon.assert_running();
            let reloading = daemon.log().contains("SIGHUP: reloading the config");
            async move { reloading }
        },
    )
    .await;
    // The reload reads the FIFO again: this blocking open waits for it.
    let reread = tokio::task::spawn_blocking(move || std::fs::write(&path, text));
    tokio::time::timeout(Duration::from_secs(30), reread)
        .await
        .expect("the reload to read the config")
        .unwrap()
        .unwrap();
    wait_until(
        "the daemon to apply the reload",
        Duration::from_secs(30),
        || async { daemon.log().contains("config reloaded") },
    )
    .await;
    // And it captures, then stops cleanly (exit 0, not a signal's death).
    env.sync().await;
    daemon.terminate().await;
    assert_eq!(
        daemon.log().matches("SIGHUP: reloading the config").count(),
        1,
        "{}",
        daemon.log()
    );
}
