//! `pgtrail status` and slot advancement: the `--json` fields agree with the store and the
//! server, plain `status` prints the same values as `key: value` lines, PGTRAIL_CONFIG works, and
//! the slot's confirmed_flush_lsn reaches the stored checkpoint and keeps advancing when the only
//! WAL is written elsewhere (another database, or uncaptured tables), so the slot does not pin WAL.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const STATUS_KEYS: [&str; 10] = [
    "slot",
    "slot_exists",
    "slot_active",
    "wal_status",
    "confirmed_flush_lsn",
    "server_lsn",
    "lag_bytes",
    "last_stored_lsn",
    "last_stored_age_seconds",
    "entries_estimate",
];

fn lsn_field(status: &Value, key: &str) -> u64 {
    parse_lsn(
        status[key]
            .as_str()
            .unwrap_or_else(|| panic!("status {key} is not an LSN string: {status}")),
    )
}

/// Wait until the slot's confirmed_flush_lsn is at least `target`.
async fn wait_confirmed(admin: &tokio_postgres::Client, target: u64, what: &str) {
    wait_until(
        &format!(
            "confirmed_flush_lsn to reach {} ({what})",
            format_lsn(target)
        ),
        Duration::from_secs(60),
        || async {
            slot_state(admin, SLOT)
                .await
                .and_then(|s| s.confirmed_flush)
                .is_some_and(|c| c >= target)
        },
    )
    .await;
}

/// Once the store holds everything written so far: a store client, an admin client, and the
/// stored checkpoint, which the slot has confirmed.
async fn synced_and_confirmed(
    env: &TestEnv,
    what: &str,
) -> (tokio_postgres::Client, tokio_postgres::Client, u64) {
    env.sync().await;
    let store = env.store().await;
    let admin = env.cluster.client("postgres").await;
    let checkpoint = checkpoint_lsn(&store, SLOT)
        .await
        .expect("a checkpoint after storing");
    wait_confirmed(&admin, checkpoint, what).await;
    (store, admin, checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fields_agree_with_the_store_and_server() {
    let env = TestEnv::start().await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    env.setup().await;

    // After setup, before run.
    let s = env.trail.status_json().await;
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    for k in STATUS_KEYS {
        assert!(keys.contains(&k), "status --json lacks {k}: {s}");
    }
    assert_eq!(s["slot"], SLOT);
    assert_eq!(s["slot_exists"], true);
    assert_eq!(s["slot_active"], false);
    assert_eq!(s["entries_estimate"], 0);
    assert_eq!(s["wal_status"], "reserved");

    let mut daemon = env.spawn();
    src.batch_execute(
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
         UPDATE t SET v = 'changed' WHERE id <= 5;",
    )
    .await
    .unwrap();
    let (store, admin, checkpoint) = synced_and_confirmed(&env, "after storing").await;

    let s = env.trail.status_json().await;
    let after = slot_state(&admin, SLOT).await.unwrap();
    let server_after = current_lsn(&admin).await;
    assert_eq!(s["slot"], SLOT);
    assert_eq!(s["slot_exists"], true);
    assert_eq!(s["slot_active"], true, "the daemon is running: {s}");
    // max(id) - min(id) + 1: exact here, as no store transaction was rolled back.
    assert_eq!(
        s["entries_estimate"].as_i64(),
        Some(entry_count(&store).await),
        "{s}"
    );
    assert!(s["last_stored_age_seconds"].as_u64().is_some(), "{s}");
    assert_eq!(
        lsn_field(&s, "last_stored_lsn"),
        checkpoint_lsn(&store, SLOT).await.unwrap(),
        "{s}"
    );
    let confirmed = lsn_field(&s, "confirmed_flush_lsn");
    let server = lsn_field(&s, "server_lsn");
    assert!(
        checkpoint <= confirmed && confirmed <= after.confirmed_flush.unwrap(),
        "{s}"
    );
    assert!(confirmed <= server && server <= server_after, "{s}");
    assert_eq!(
        s["lag_bytes"].as_u64(),
        Some(server - confirmed),
        "lag_bytes = server_lsn - confirmed_flush_lsn: {s}"
    );

    // The config may come from PGTRAIL_CONFIG.
    let path = env.trail.config_path.display().to_string();
    let out = run_pgtrail(
        &["status".into(), "--json".into()],
        &[("PGTRAIL_CONFIG", path.as_str())],
        Duration::from_secs(60),
    )
    .await;
    out.assert_success();
    let via_env: Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(via_env["slot"], SLOT);
    assert_eq!(via_env["entries_estimate"], s["entries_estimate"]);

    daemon.terminate().await;
    wait_slot_inactive(&admin, SLOT).await;

    // With the daemon stopped everything but server_lsn/lag_bytes is stable: plain status prints
    // the same values as key: value lines.
    let s = env.trail.status_json().await;
    assert_eq!(s["slot_active"], false);
    let out = env.trail.cli(&["status"]).await;
    out.assert_success();
    let plain: BTreeMap<String, String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    assert_eq!(
        plain.get("entries"),
        Some(&format!("about {}", s["entries_estimate"])),
        "{out}"
    );
    for k in STATUS_KEYS {
        if k == "entries_estimate" {
            continue;
        }
        let v = plain
            .get(k)
            .unwrap_or_else(|| panic!("plain status lacks `{k}:`\n{out}"));
        if ["server_lsn", "lag_bytes", "last_stored_age_seconds"].contains(&k) {
            continue;
        }
        let want = match &s[k] {
            Value::String(x) => x.clone(),
            other => other.to_string(),
        };
        assert_eq!(v, &want, "plain status `{k}` vs status --json\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_advances_past_wal_the_daemon_does_not_capture() {
    let (env, src, mut daemon) = TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA other; CREATE TABLE other.noise (x int);").await;
    src.batch_execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let (store, admin, _) = synced_and_confirmed(&env, "the stored checkpoint").await;

    // The source stays idle; WAL grows from writes to other databases on the same server.
    store
        .batch_execute("CREATE TABLE public.it_filler (x int); INSERT INTO public.it_filler SELECT generate_series(1, 20000);")
        .await
        .unwrap();
    admin
        .batch_execute("CREATE TABLE it_filler (x int); INSERT INTO it_filler SELECT generate_series(1, 20000);")
        .await
        .unwrap();
    let target = current_lsn(&admin).await;
    wait_confirmed(
        &admin,
        target,
        "writes in other databases while the source is idle",
    )
    .await;

    // Writes to an uncaptured table of the source database: nothing stored, slot still moves.
    let entries_before = entry_count(&store).await;
    src.batch_execute("INSERT INTO other.noise SELECT generate_series(1, 20000)")
        .await
        .unwrap();
    let target = current_lsn(&admin).await;
    wait_confirmed(&admin, target, "writes to an uncaptured table").await;
    assert_eq!(
        entry_count(&store).await,
        entries_before,
        "uncaptured writes produced entries"
    );
    assert_counts(&store, "other", "noise", Counts::default()).await;

    // The slot never got ahead of what is stored: a restart still has everything.
    daemon.terminate().await;
    env.wait_slot_inactive().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (51, 'y')")
        .await
        .unwrap();
    env.sync().await;
    assert_counts(&store, "public", "t", Counts::new(51, 0, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "t").await;
    daemon.terminate().await;
}
