//! `pgtrail status --check`, the monitoring-plugin form, against real states: OK while the daemon
//! streams and is caught up; WARNING and CRITICAL for lag while the daemon is frozen (SIGSTOP:
//! its walsender stays, the slot stays active, nothing is confirmed); CRITICAL once the daemon
//! stops and once the slot is dropped (plain `status` exits 2 then too); UNKNOWN when the store
//! cannot be reached or the arguments are wrong.

use std::time::Duration;

use crate::harness::*;

/// `status --check ARGS…`: the exit code and the one line it printed.
async fn check(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["status", "--check"];
    all.extend_from_slice(args);
    let out = env.trail.cli(&all).await;
    let line = out.stdout.trim_end().to_owned();
    assert_eq!(line.lines().count(), 1, "one line, as plugins print\n{out}");
    (out.status.code(), line)
}

/// The number after `label=` in the line's performance data.
fn perf(line: &str, label: &str) -> u64 {
    let (_, data) = line
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no perfdata: {line}"));
    data.split(' ')
        .find_map(|m| m.strip_prefix(&format!("{label}=")))
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {label}= in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_ok_warning_and_critical_from_the_real_slot() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    src.batch_execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20) g")
        .await
        .unwrap();
    env.sync().await;
    let admin = env.cluster.client("postgres").await;
    let store = env.store().await;
    let stored = checkpoint_lsn(&store, SLOT).await.unwrap();
    wait_until(
        "the slot to confirm the checkpoint",
        Duration::from_secs(60),
        || async {
            slot_state(&admin, SLOT)
                .await
                .and_then(|s| s.confirmed_flush)
                .is_some_and(|c| c >= stored)
        },
    )
    .await;

    // Streaming and caught up, default thresholds.
    let (code, line) = check(&env, &[]).await;
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("PGTRAIL OK - lag "), "{line}");
    assert!(perf(&line, "lag_bytes") < 64 * 1024 * 1024, "{line}");
    assert!(perf(&line, "entries_estimate") >= 20, "{line}");

    // Frozen daemon: its connection (so the slot) stays active while the source writes on.
    daemon.signal(libc::SIGSTOP);
    src.batch_execute("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(21, 5020) g")
        .await
        .unwrap();
    let frozen = env.trail.status_json().await;
    let warning = check(
        &env,
        &[
            "--warn-lag-bytes",
            "100000",
            "--crit-lag-bytes",
            "1000000000",
        ],
    )
    .await;
    let critical = check(
        &env,
        &["--warn-lag-bytes", "1000", "--crit-lag-bytes", "100000"],
    )
    .await;
    daemon.signal(libc::SIGCONT);
    assert_eq!(frozen["slot_active"], true, "{frozen}");
    let lag = frozen["lag_bytes"].as_u64().unwrap();
    assert!(
        lag > 100_000,
        "5,000 rows are more than 100 kB of WAL: {frozen}"
    );
    assert_eq!(warning.0, Some(1), "{}", warning.1);
    assert!(
        warning
            .1
            .starts_with("PGTRAIL WARNING - lag beyond 98 kB; "),
        "{}",
        warning.1
    );
    assert!(perf(&warning.1, "lag_bytes") >= lag, "{}", warning.1);
    assert_eq!(critical.0, Some(2), "{}", critical.1);
    assert!(
        critical
            .1
            .starts_with("PGTRAIL CRITICAL - lag beyond 98 kB; "),
        "{}",
        critical.1
    );

    // Thawed, it catches up and the check is OK again.
    env.sync().await;
    assert_counts(&store, "public", "t", Counts::new(5020, 0, 0, 0)).await;
    wait_until(
        "the check to be OK again",
        Duration::from_secs(60),
        || async { check(&env, &["--warn-lag-bytes", "100000"]).await.0 == Some(0) },
    )
    .await;

    // Stopped: the slot is not active, so the daemon is not running.
    daemon.terminate().await;
    env.wait_slot_inactive().await;
    let (code, line) = check(&env, &[]).await;
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.starts_with("PGTRAIL CRITICAL - daemon not running (slot pgtrail is not active)"),
        "{line}"
    );
    assert!(
        env.trail.cli(&["status"]).await.success(),
        "an inactive slot is no error for plain status"
    );

    // Dropped: no slot at all, and plain status says so with exit 2 as well.
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&SLOT])
        .await
        .unwrap();
    let (code, line) = check(&env, &[]).await;
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("slot pgtrail is missing: run `pgtrail setup`"),
        "{line}"
    );
    let out = env.trail.cli(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let s: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["slot_exists"], false, "{s}");
    assert_eq!(
        s["entries_estimate"].as_i64(),
        Some(entry_count(&store).await),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_unknown_when_it_cannot_look() {
    let mut env = TestEnv::start().await;
    env.setup().await;
    let good = env.trail.config.clone();

    // Nothing listens on the store's port.
    let mut config = good.clone();
    config.store_url = format!("postgresql://postgres@127.0.0.1:{}/pgtrail", free_port());
    env.trail.rewrite(config);
    let (code, line) = check(&env, &[]).await;
    assert_eq!(code, Some(3), "{line}");
    assert!(line.starts_with("PGTRAIL UNKNOWN - "), "{line}");
    assert!(!line.contains('|'), "no perfdata without figures: {line}");

    // A usage error is UNKNOWN too, not clap's exit 2 (CRITICAL to a monitor).
    env.trail.rewrite(good);
    let (code, line) = check(&env, &["--warn-lag-bytes", "lots"]).await;
    assert_eq!(code, Some(3), "{line}");
    assert!(
        line.starts_with("PGTRAIL UNKNOWN - ") && line.contains("lots"),
        "{line}"
    );
    let (code, line) = check(&env, &[]).await;
    assert_eq!(code, Some(2), "setup but never run: not running\n{line}");
}
