//! Retention's ledger across the upgrade to migrations 21 and 22. A store at migration 20 (the
//! shipped SQL, applied here) whose partitions were dropped, restored and dropped again by
//! migration 20's own functions is upgraded: its ledger lists every drop event of each partition
//! (`drop_events`, migration 21 kept only the newest two and 22 adds the older ones from the
//! events chain, never an event recorded after migration 21) and the sources each restored
//! partition holds (`restored_sources`); `verify` stays intact, and each archive a drop really
//! recorded restores with `archive_recorded` true, a copy no drop recorded with false. A store
//! its owner set up and a superuser upgraded: retention under the daemon's least-privilege role
//! drops a restored partition again, and restore under the owner's role, though
//! `pgtrail.run_mismatch` (migration 21) is the superuser's.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgtrail::archive::{self, Range, Sealing, Written};
use pgtrail::store::chain::Content;
use pgtrail::store::migrations::{MIGRATIONS, ROLES};
use pgtrail::store::retention::Retention;
use pgtrail::store::sources::SourceId;
use pgtrail::text::hex;
use tokio_postgres::Client;

use crate::harness::*;
use crate::restore::{event_days_ago, in_range, json_of};
use crate::restore_interleaved::{partition_holding, retention_pass};

/// Where the old partitions' events are: P, dropped three times, and Q, dropped once and
/// restored (days back).
const P_DAYS: i32 = 200;
const Q_DAYS: i32 = 130;
const RUN_MISMATCH: &str = "'pgtrail.run_mismatch(regclass, text, smallint)'::regprocedure";

/// A world with retention 90d and archives, whose store database `pgtrail` exists, empty.
async fn world() -> TestEnv {
    TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "retention = \"90d\"\narchive_dir = \"arch\"\n".into();
    })
    .await
}

fn archive_dir(env: &TestEnv) -> PathBuf {
    env.trail.config_path.parent().unwrap().join("arch")
}

/// Migration `version`, applied and recorded as `setup` does.
async fn apply_migration(store: &Client, version: i32) {
    let (_, name, sql) = MIGRATIONS.iter().find(|m| m.0 == version).unwrap();
    store.batch_execute(sql).await.unwrap();
    store
        .execute(
            "INSERT INTO pgtrail.schema_migrations VALUES ($1, $2)",
            &[&version, name],
        )
        .await
        .unwrap();
}

/// The store's settings as `setup` stored them from the world's config (migration 18's columns).
async fn retention_settings(store: &Client) {
    store
        .batch_execute(
            "UPDATE pgtrail.settings SET retention = interval '90 days', archive_required = true",
        )
        .await
        .unwrap();
}

/// An old partition: its name, and its range of the events chain (every entry in these tests
/// is one of pgtrail's own events).
struct Part {
    name: String,
    range: Range,
}

/// The live partition holding commit time `at`.
async fn partition_at(store: &Client, at: DateTime<Utc>) -> Part {
    let (name, from, to) = partition_holding(store, at).await;
    Part {
        name,
        range: Range {
            source_id: SourceId(0),
            source_name: "pgtrail".into(),
            from,
            to,
        },
    }
}

/// The archive of `range` that today's writer makes of the store as it is: written from a copy
/// of the store database brought to migration 21 (the writer reads its columns), so the store
/// itself stays at migration 20. No session may be on the store meanwhile.
async fn archive_from_a_copy(env: &TestEnv, range: &Range) -> Written {
    let admin = env.cluster.client("postgres").await;
    admin
        .batch_execute("CREATE DATABASE pgtrail_copy TEMPLATE pgtrail")
        .await
        .unwrap();
    let mut copy = connect(&env.cluster.url("pgtrail_copy")).await.unwrap();
    apply_migration(&copy, 21).await;
    let dir = archive_dir(env);
    std::fs::create_dir_all(&dir).unwrap();
    let written = archive::write(&mut copy, range, &dir, &Sealing::Plain)
        .await
        .unwrap();
    drop(copy);
    admin
        .batch_execute("DROP DATABASE pgtrail_copy WITH (FORCE)")
        .await
        .unwrap();
    written
}

/// Migration 18's drop_partition (as migration 20 left it) with the archive `w`: its event.
async fn drop_at_20(store: &Client, name: &str, w: &Written) -> i64 {
    let file = w.path.file_name().unwrap().to_str().unwrap();
    let archives = format!(
        r#"[{{"source":0,"entries":{},"file":"{file}","sha256":"{}"}}]"#,
        w.entries,
        hex(&w.sha256)
    );
    store
        .query_one(
            "SELECT pgtrail.drop_partition($1, $2::text::json)",
            &[&name, &archives],
        )
        .await
        .unwrap()
        .get(0)
}

/// Migration 19's restore_partition, through pgtrail's restore, of `file`: the restore's event.
async fn restore_at_20(store: &mut Client, file: &Path) -> i64 {
    let checked = archive::check(file, None, archive::MAX_LINE).unwrap();
    let hold = Retention::parse("30d").unwrap();
    let restored = archive::restore(
        store,
        &checked,
        None,
        archive::MAX_LINE,
        hold,
        Some("tester".into()),
    )
    .await
    .unwrap();
    assert!(restored.archive_recorded, "recorded by the newest drop");
    restored.event
}

/// Lets partition `name`'s hold lapse.
async fn unhold(store: &Client, name: &str) {
    store
        .execute(
            "UPDATE pgtrail.partitions SET held_until = now() - interval '1 minute' WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
}

/// The ledger's `drop_events` and `restored_sources` of partition `name`.
async fn ledger(store: &Client, name: &str) -> (Vec<i64>, Vec<i16>) {
    let row = store
        .query_one(
            "SELECT drop_events, restored_sources FROM pgtrail.partitions WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A `retention` event `partition_dropped` naming partition `name` and the archive `sha256`,
/// recorded now as any role allowed `retention` events may record one.
async fn made_up_drop_event(store: &Client, name: &str, sha256: &str) {
    let at: DateTime<Utc> =
        query_value(store, "SELECT date_trunc('milliseconds', now())", &[]).await;
    let details = format!(
        r#"{{"event":"partition_dropped","partition":"{name}","archives":[{{"source":0,"entries":3,"file":"x","sha256":"{sha256}"}}]}}"#
    );
    let context = r#"{"application_name":"pgtrail retention"}"#;
    let content = Content {
        committed_at_micros: at.timestamp_micros(),
        xid: None,
        lsn: None,
        schema: "pgtrail",
        table: "retention",
        action: "EVENT",
        primary_key: None,
        before: None,
        after: None,
        changed_columns: None,
        context,
        details: Some(details.as_str()),
    };
    store
        .execute(
            "SELECT pgtrail.record_event($1, 'retention', NULL, NULL, NULL, NULL, $2::text::json, \
             $3::text::json, NULL, NULL, $4)",
            &[&at, &context, &details, &&content.digest()[..]],
        )
        .await
        .unwrap();
}

/// `verify --json`, which must find the store intact: (partitions dropped, restored).
async fn verify_intact(env: &TestEnv) -> (i64, i64) {
    let (code, v, out) = json_of(env, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(v["intact"], true, "{v}");
    (
        v["partitions_dropped"].as_i64().unwrap(),
        v["partitions_restored"].as_i64().unwrap(),
    )
}

/// `pgtrail restore FILE --json`, which must succeed and bring back `part`'s entries as they
/// were: whether the restore's event says a drop recorded the file.
async fn restore(env: &TestEnv, file: &Path, part: &Part, entries: &[Vec<Option<String>>]) -> bool {
    let (code, v, out) = json_of(env, &["restore", file.to_str().unwrap(), "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(v["partition"], part.name.as_str(), "{v}");
    let store = env.store().await;
    assert_eq!(
        in_range(&store, part.range.from, part.range.to).await,
        entries
    );
    v["archive_recorded"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_lists_every_drop_of_a_partition_dropped_three_times_before_migration_21() {
    let env = world().await;
    env.cluster.create_db("pgtrail").await;
    let mut store = env.store().await;
    old_store_schema(&store, 21).await;
    retention_settings(&store).await;
    let mut at = Vec::new();
    for (k, days) in [P_DAYS, P_DAYS, P_DAYS, Q_DAYS, Q_DAYS]
        .into_iter()
        .enumerate()
    {
        let secs = 10.0 - k as f64;
        at.push(event_days_ago(&store, (days, secs), &format!("old {k}"), "{}").await);
    }
    event_days_ago(&store, (0, 0.0), "new", "{}").await;
    let (p, q) = (
        partition_at(&store, at[0]).await,
        partition_at(&store, at[3]).await,
    );
    assert_ne!(p.name, q.name);
    let p_entries = in_range(&store, p.range.from, p.range.to).await;
    assert_eq!(p_entries.len(), 3);

    // Migration 20's history: P dropped, restored, dropped, restored, dropped (one archive
    // each time); Q dropped and restored. No session on the store while an archive is made.
    let mut files = Vec::new();
    let mut drops = Vec::new();
    for round in 0..3 {
        drop(store);
        let written = archive_from_a_copy(&env, &p.range).await;
        let q_written = match round {
            0 => Some(archive_from_a_copy(&env, &q.range).await),
            _ => None,
        };
        store = env.store().await;
        drops.push(drop_at_20(&store, &p.name, &written).await);
        files.push(written.path);
        if let Some(q_written) = q_written {
            drop_at_20(&store, &q.name, &q_written).await;
            restore_at_20(&mut store, &q_written.path).await;
        }
        if round < 2 {
            restore_at_20(&mut store, &files[round]).await;
            unhold(&store, &p.name).await;
        }
    }

    // Migration 21 keeps P's newest drop and the one its last restore followed: the first
    // is lost. Q holds its source again.
    apply_migration(&store, 21).await;
    assert_eq!(ledger(&store, &p.name).await, (drops[1..].to_vec(), vec![]));
    let q_ledger = ledger(&store, &q.name).await;
    assert_eq!((q_ledger.0.len(), q_ledger.1.clone()), (1, vec![0]));
    // A copy of P's first archive, named by an event recorded after migration 21 that looks
    // like a drop's: no drop recorded it.
    let copy = env.trail.dir().join("copy.jsonl.zst");
    let text = zstd::decode_all(std::fs::File::open(&files[0]).unwrap()).unwrap();
    std::fs::write(&copy, zstd::encode_all(&text[..], 19).unwrap()).unwrap();
    let copy_sha = hex(&sha256_of(&copy));
    made_up_drop_event(&store, &p.name, &copy_sha).await;

    // Migration 22 (through setup, as an upgrade runs it) adds P's first drop, nothing else.
    env.setup().await;
    assert_eq!(ledger(&store, &p.name).await, (drops.clone(), vec![]));
    assert_eq!(ledger(&store, &q.name).await, q_ledger);
    assert_eq!(verify_intact(&env).await, (1, 1));

    // Each of P's three archives restores as one its drops recorded; after each, P drops again.
    for file in &files {
        assert!(
            restore(&env, file, &p, &p_entries).await,
            "{}",
            file.display()
        );
        unhold(&store, &p.name).await;
        assert_eq!(retention_pass(&env).await, [p.name.as_str()]);
    }
    assert!(
        !restore(&env, &copy, &p, &p_entries).await,
        "a copy no drop recorded"
    );
    assert_eq!(verify_intact(&env).await, (0, 2));
}

fn sha256_of(path: &Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// As the superuser: the store's owner `trail_owner`, pgtrail's group roles (as a DBA makes
/// them before an owner without CREATEROLE runs setup), the daemon's login role `trail_daemon`
/// and the web view's `trail_web`, and the store database, owned by `trail_owner`.
async fn roles_and_owned_store(env: &TestEnv) {
    let admin = env.cluster.client("postgres").await;
    admin
        .batch_execute(
            "CREATE ROLE trail_owner LOGIN PASSWORD 'pw';
             CREATE ROLE pgtrail_reader NOLOGIN;
             CREATE ROLE pgtrail_writer NOLOGIN IN ROLE pgtrail_reader;
             CREATE ROLE trail_daemon LOGIN PASSWORD 'pw' IN ROLE pgtrail_writer;
             CREATE ROLE trail_web LOGIN PASSWORD 'pw' IN ROLE pgtrail_reader;",
        )
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE pgtrail OWNER trail_owner")
        .await
        .unwrap();
}

/// The world's config with its store reached as `user`.
fn config_as(env: &mut TestEnv, user: &str) {
    let mut config = env.trail.config.clone();
    config.store_url = match user {
        "postgres" => env.cluster.url("pgtrail"),
        _ => env.cluster.url_as("pgtrail", user, Some("pw")),
    };
    env.trail.rewrite(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_restore_under_least_privilege_roles_after_a_superuser_upgraded_the_store() {
    let mut env = world().await;
    roles_and_owned_store(&env).await;
    // Migrations 1 to 20 and the grants, by the store's owner.
    let owner = connect(&env.cluster.url_as("pgtrail", "trail_owner", Some("pw")))
        .await
        .unwrap();
    old_store_schema(&owner, 21).await;
    owner.batch_execute(ROLES).await.unwrap();
    retention_settings(&owner).await;

    // Migration 21 by a superuser: run_mismatch is the superuser's, which the owner of
    // drop_partition and restore_partition may not execute.
    let superuser = env.store().await;
    apply_migration(&superuser, 21).await;
    let owners = format!(
        "SELECT pg_get_userbyid(f.proowner)::text, pg_get_userbyid(d.proowner)::text, \
                has_function_privilege(d.proowner, f.oid, 'EXECUTE') \
         FROM pg_proc f, pg_proc d \
         WHERE f.oid = {RUN_MISMATCH} AND d.oid = 'pgtrail.drop_partition(text, json)'::regprocedure"
    );
    let owned =
        |r: tokio_postgres::Row| -> (String, String, bool) { (r.get(0), r.get(1), r.get(2)) };
    let before = owned(superuser.query_one(&owners, &[]).await.unwrap());
    assert_eq!(before, ("postgres".into(), "trail_owner".into(), false));
    // The owner cannot grant on the superuser's function: setup fails, naming who can.
    config_as(&mut env, "trail_owner");
    let out = env.trail.cli(&["setup"]).await;
    assert!(!out.success(), "{}", out.combined());
    assert!(
        out.stderr.contains("run_mismatch is owned by postgres")
            && out.stderr.contains("superuser"),
        "{}",
        out.combined()
    );
    // Migration 22 by setup as the superuser.
    config_as(&mut env, "postgres");
    env.setup().await;
    let after = owned(superuser.query_one(&owners, &[]).await.unwrap());
    assert!(
        after.2,
        "migration 22 lets drop_partition's owner execute run_mismatch"
    );

    // Old events, by the owner (whose events' times are not bound to the clock).
    let at = event_days_ago(&owner, (P_DAYS, 0.0), "old", "{}").await;
    event_days_ago(&owner, (P_DAYS, 1.0), "older", "{}").await;
    event_days_ago(&owner, (0, 0.0), "new", "{}").await;
    let p = partition_at(&owner, at).await;
    let entries = in_range(&owner, p.range.from, p.range.to).await;

    // Retention as the daemon's role, restore as the owner's, twice: the second drop is of a
    // restored partition (drop_partition checks it against run_mismatch), each restore checks
    // the archive's runs with it.
    let mut files = Vec::new();
    for _ in 0..2 {
        config_as(&mut env, "trail_daemon");
        assert_eq!(retention_pass(&env).await, [p.name.as_str()]);
        let file: String = query_value(
            &owner,
            "SELECT e.details->'archives'->0->>'file' FROM pgtrail.partitions p \
             JOIN pgtrail.entries e ON e.id = p.drop_event WHERE p.name = $1",
            &[&p.name],
        )
        .await;
        files.push(archive_dir(&env).join(file));
        config_as(&mut env, "trail_owner");
        assert!(restore(&env, files.last().unwrap(), &p, &entries).await);
        unhold(&owner, &p.name).await;
    }
    assert_ne!(files[0], files[1]);
    config_as(&mut env, "trail_web");
    assert_eq!(verify_intact(&env).await, (0, 1));
}
