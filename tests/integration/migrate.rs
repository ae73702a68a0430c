//! A store in the unpartitioned layout (migrations 1 to 15, applied here from the shipped SQL:
//! exactly what an earlier pgtrail left, with no test-only switch in the product) is refused by
//! the daemon with exit 14, moved into time partitions by `pgtrail setup` in batches that
//! survive a SIGKILL in the middle, and comes out with every entry as it was (an md5 over every
//! column in id order), its chains intact, and capture going on from its checkpoint exactly once.
//! Only other pgtrail processes keep it from moving: setup's own sessions are left out, by pid and
//! start (a pid alone may have passed to another backend), and no other.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::SinkExt;
use tokio_postgres::Client;

use pgtrail::entry::{Action, AuditEntry, Transaction};
use pgtrail::pg::lsn::Lsn;
use pgtrail::store::chain::{self, GENESIS};
use pgtrail::store::context::ContextColumns;
use pgtrail::store::events::{self, Category, OwnEvent};
use pgtrail::store::migrate::guard::{self, Backend};
use pgtrail::store::writer::{
    content, encode_copy_row, encode_sourced_row, COPY_SQL, SOURCED_COPY_SQL,
};
use pgtrail::store::SourceId;
use pgtrail::table::TableName;

use crate::harness::*;

/// Old ids per batch in these tests (`PGTRAIL_MIGRATE_BATCH`): many batches for a few thousand.
const BATCH: &str = "40";

/// Every column of an old entry (its source as migration 16 reads it), in id order, as one md5.
const FINGERPRINT: &str = "SELECT count(*), md5(string_agg(format('%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L|%L', \
    id, committed_at, xid, lsn, schema_name, table_name, action, primary_key, before, after, changed_columns, \
    context, row_key, details, actor, client_addr, hash, coalesce(source, CASE WHEN lsn IS NULL THEN 0 ELSE 1 END)), \
    E'\\n' ORDER BY id)) FROM pgtrail.";

/// The store's schema as migrations 1 to 15 left it, with a checkpoint at `slot_lsn`.
async fn old_schema(store: &Client, slot_lsn: &str) {
    old_store_schema(store, 16).await;
    store
        .execute(
            "INSERT INTO pgtrail.checkpoints (source, slot, lsn) VALUES (1, $1, $2::text::pg_lsn)",
            &[&SLOT, &slot_lsn],
        )
        .await
        .unwrap();
}

/// One old transaction's entries: `n` changes of `public.old` committed at `at`, the context
/// changing halfway (as after SET ROLE), a DDL entry last.
fn transaction(xid: u64, at: &str, n: u64) -> Vec<AuditEntry> {
    let txn = Arc::new(Transaction {
        xid,
        committed_at: at.into(),
        commit_lsn: Lsn(0x1000 * xid),
        end_lsn: Lsn(0x1000 * xid + 0x80),
    });
    let contexts: [Arc<str>; 2] = [
        r#"{"db_user":"app","client_addr":"10.0.0.7","actor":"mia"}"#.into(),
        r#"{"db_user":"admin","client_addr":"2001:db8::1"}"#.into(),
    ];
    (0..n)
        .map(|i| {
            let id = xid * 10_000 + i;
            let last = i + 1 == n;
            AuditEntry {
                txn: txn.clone(),
                table: TableName::new("public", "old"),
                action: if last { Action::Ddl } else { Action::Update },
                primary_key: (!last).then(|| format!(r#"{{"id":{id}}}"#)),
                before: (!last).then(|| format!(r#"{{"id":{id},"v":"a\tb"}}"#)),
                after: Some(format!(r#"{{"id":{id},"v":"é {i}"}}"#)),
                changed_columns: (!last).then(|| r#"["v"]"#.to_owned()),
                context: contexts[usize::from(i >= n / 2)].clone(),
                details: last.then(|| r#"{"tag":"ALTER TABLE"}"#.to_owned()),
            }
        })
        .collect()
}

/// Three months of old transactions (xid, commit time, changes): one of 1,500 changes.
const MONTHS: [(u64, &str, u64); 4] = [
    (701, "2026-09-03 08:00:00.5+00", 300),
    (702, "2026-09-20 23:59:59.999999+00", 1500),
    (703, "2026-10-01 00:00:00+00", 700),
    (704, "2026-11-15 12:30:00+00", 900),
];

/// Captured entries of `txns` as pgtrail's writer encodes them, chained from the start: the
/// first transaction as stored before sources had ids (no source), the rest with source 1.
/// Pgtrail's own events in between. Returns the capture count.
async fn old_entries(store: &Client, txns: &[(u64, &str, u64)]) -> i64 {
    let mut prev = GENESIS;
    let mut captured = 0;
    for (k, &(xid, at, n)) in txns.iter().enumerate() {
        let mut buf = BytesMut::new();
        for entry in transaction(xid, at, n) {
            let cols = ContextColumns::of(&entry.context);
            let micros = chain::commit_time_micros(&entry.txn.committed_at).unwrap();
            prev = content(&entry, micros).hash(&prev);
            match k {
                0 => encode_copy_row(&entry, &cols, &prev, &mut buf),
                _ => encode_sourced_row(&entry, &cols, &prev, SourceId(1), &mut buf),
            }
        }
        let sink = store
            .copy_in(if k == 0 { COPY_SQL } else { SOURCED_COPY_SQL })
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(buf.freeze()).await.unwrap();
        sink.as_mut().finish().await.unwrap();
        captured += n as i64;
        let event = OwnEvent::new(Category::Config, "config_reloaded", "pgtrail cli", "old");
        events::record(store, &event).await.unwrap();
    }
    store
        .execute(
            "UPDATE pgtrail.chain_heads SET hash = $1, entries = $2 WHERE source = 1",
            &[&&prev[..], &captured],
        )
        .await
        .unwrap();
    captured
}

/// `pgtrail setup` in the background, with batches of `batch` old ids; its output in `log`.
fn spawn_setup(env: &TestEnv, log: &std::path::Path, batch: &str) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .arg("--config")
        .arg(&env.trail.config_path)
        .arg("setup")
        .env_remove("PGTRAIL_CONFIG")
        .env_remove("PGPASSWORD")
        .env("PGTRAIL_MIGRATE_BATCH", batch)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Starts setup, and SIGKILLs it once it has committed a batch: the state row is then held
/// (every batch and the last step lock it), so the kill comes before the copy is finished.
async fn setup_killed_mid_copy(env: &TestEnv, store: &Client) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("setup.log");
    let mut setup = spawn_setup(env, &log, BATCH);
    let started = Instant::now();
    loop {
        let copied: Option<i64> = store
            .query_opt(
                "SELECT copied FROM pgtrail.store_migration WHERE to_regclass('pgtrail.store_migration') IS NOT NULL",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if copied.is_some_and(|c| c > 0) {
            break;
        }
        assert!(
            setup.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch copied"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    store
        .batch_execute("BEGIN; SELECT FROM pgtrail.store_migration FOR UPDATE")
        .await
        .unwrap();
    setup.kill().unwrap();
    setup.wait().unwrap();
    store.batch_execute("ROLLBACK").await.unwrap();
    query_count(store, "SELECT copied FROM pgtrail.store_migration").await
}

/// `pgtrail setup` with batches of [`BATCH`], which must move the entries into partitions.
async fn setup_moves(env: &TestEnv) {
    let out = pgtrail_env(
        &env.trail.config_path,
        &["setup"],
        &[("PGTRAIL_MIGRATE_BATCH", BATCH)],
    )
    .await;
    out.assert_success();
    assert!(out.stdout.contains("into time partitions"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpartitioned_store_is_moved_by_setup_through_a_sigkill_and_captures_on() {
    let env = TestEnv::start().await;
    let (src, store, slot_lsn) = before_an_old_store(&env).await;
    old_schema(&store, &slot_lsn).await;
    let captured = old_entries(&store, &MONTHS).await;
    let before: (i64, String) = query_pairs(&store, &format!("{FINGERPRINT}entries"), &[])
        .await
        .remove(0);
    assert_eq!(before.0, captured + 4);
    // Changes while no daemon runs: captured once the store is migrated.
    src.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
        .await
        .unwrap();

    refused_by_run(&env, 14, "unpartitioned layout").await;
    let copied = setup_killed_mid_copy(&env, &store).await;
    assert!(
        copied > 0 && copied < before.0,
        "killed mid-copy: {copied} of {}",
        before.0
    );
    let in_new = query_count(&store, "SELECT count(*) FROM pgtrail.entries").await;
    assert_eq!(in_new, copied, "the batches committed, nothing of the next");
    refused_by_run(&env, 14, "under way").await;

    setup_moves(&env).await;
    let after: (i64, String) = query_pairs(&store, &format!("{FINGERPRINT}entries"), &[])
        .await
        .remove(0);
    assert_eq!(after, before, "every entry as it was, once");
    let gone: bool = query_value(
        &store,
        "SELECT to_regclass('pgtrail.entries_unpartitioned') IS NULL \
           AND (SELECT state = 'done' FROM pgtrail.store_migration)",
        &[],
    )
    .await;
    assert!(gone);
    // Three months of old entries in three partitions, and the present's.
    let holders = query_count(
        &store,
        "SELECT count(DISTINCT tableoid) FROM pgtrail.entries",
    )
    .await;
    assert_eq!(holders, 4);
    let out = env.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["chains"]["app"]["entries"], captured, "{report}");
    assert_eq!(report["chains"]["pgtrail"]["entries"], 4, "{report}");

    // Capture goes on from the old checkpoint: the 100 changes made meanwhile, once.
    let mut daemon = env.spawn();
    env.sync().await;
    daemon.terminate().await;
    assert_counts(&store, "public", "t", Counts::new(100, 0, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "t").await;
    let out = env.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_dated_decades_off_gets_its_own_partition_not_every_period_between() {
    let env = TestEnv::start().await;
    let (_src, store, slot_lsn) = before_an_old_store(&env).await;
    old_schema(&store, &slot_lsn).await;
    // A source whose clock once said 1999, between transactions of this autumn; all in one batch.
    let txns = [
        (801, "2026-09-03 08:00:00+00", 30),
        (802, "1999-01-05 10:00:00+00", 3),
        (803, "2026-10-02 09:00:00+00", 20),
    ];
    let captured = old_entries(&store, &txns).await;
    let before: (i64, String) = query_pairs(&store, &format!("{FINGERPRINT}entries"), &[])
        .await
        .remove(0);
    let out = pgtrail_env(
        &env.trail.config_path,
        &["setup"],
        &[("PGTRAIL_MIGRATE_BATCH", "100000")],
    )
    .await;
    out.assert_success();
    let after: (i64, String) = query_pairs(&store, &format!("{FINGERPRINT}entries"), &[])
        .await
        .remove(0);
    assert_eq!(after, before, "every entry as it was, once");
    // The months with entries (January 1999, September and October 2026) and the present's
    // with the two ahead: none of the 331 months between 1999 and 2026.
    let months: Vec<String> = query_column(
        &store,
        "SELECT to_char(from_at AT TIME ZONE 'UTC', 'YYYY-MM') FROM pgtrail.partitions ORDER BY from_at",
        &[],
    )
    .await;
    let now = chrono::Utc::now().date_naive();
    let mut expected: Vec<String> = ["1999-01", "2026-09", "2026-10"].map(String::from).to_vec();
    for ahead in 0..3 {
        let month = now
            .checked_add_months(chrono::Months::new(ahead))
            .unwrap()
            .format("%Y-%m")
            .to_string();
        if !expected.contains(&month) {
            expected.push(month);
        }
    }
    assert_eq!(months, expected);
    let holder: String = query_value(
        &store,
        "SELECT tableoid::regclass::text FROM pgtrail.entries WHERE xid = 802 LIMIT 1",
        &[],
    )
    .await;
    assert_eq!(holder, "pgtrail.entries_p19990101");
    let out = env.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["chains"]["app"]["entries"], captured, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_use_is_not_moved_and_a_second_setup_is_told_who_moves_it() {
    let env = TestEnv::start().await;
    let (_src, store, slot_lsn) = before_an_old_store(&env).await;
    old_schema(&store, &slot_lsn).await;
    let captured = old_entries(&store, &MONTHS).await;
    let applied = "SELECT count(*) FROM pgtrail.schema_migrations";
    let before = query_count(&store, applied).await;
    let url = &env.trail.config.store_url;

    // An earlier pgtrail still connected: refused at once, nothing changed.
    let daemon = connect(&format!("{url}?application_name=pgtrail%20run"))
        .await
        .unwrap();
    let pid: i32 = query_value(&daemon, "SELECT pg_backend_pid()", &[]).await;
    env.trail.cli(&["setup"]).await.assert_clean_failure(
        &[
            "in use by other pgtrail processes",
            &format!("pid {pid} (pgtrail run, user"),
            "stop every `pgtrail run` and `pgtrail web`",
            "nothing was changed",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(query_count(&store, applied).await, before);
    drop(daemon);

    // A reader in a transaction on the entries (psql, say): setup waits 5 s for its lock at
    // most, rather than stall everything queued behind it, and names the session.
    let reader = connect(url).await.unwrap();
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM pgtrail.entries")
        .await
        .unwrap();
    let pid: i32 = query_value(&reader, "SELECT pg_backend_pid()", &[]).await;
    env.trail.cli(&["setup"]).await.assert_clean_failure(
        &[
            "store migration 16 waited 5s for a lock",
            &format!("pid {pid} (no application name"),
            "idle in transaction since",
            "AccessShareLock on pgtrail.entries",
            "pg_terminate_backend",
        ],
        Duration::from_secs(40),
    );
    assert_eq!(query_count(&store, applied).await, before);
    reader.batch_execute("ROLLBACK").await.unwrap();

    // Two setups at once: the second is told which one moves the entries. The first is held
    // between two batches (the state row locked here) while the second runs; one id a batch,
    // so that it is still copying when that happens.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("setup.log");
    let mut first = spawn_setup(&env, &log, "1");
    let copying = "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
                   WHERE l.locktype = 'advisory' AND l.objid = 7420504 AND l.granted";
    wait_until(
        "the first setup to copy",
        Duration::from_secs(60),
        || async { query_count(&store, copying).await == 1 },
    )
    .await;
    store
        .batch_execute("BEGIN; SELECT FROM pgtrail.store_migration FOR UPDATE")
        .await
        .unwrap();
    let setup_pid: i32 = query_value(
        &store,
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objid = 7420504",
        &[],
    )
    .await;
    env.trail.cli(&["setup"]).await.assert_clean_failure(
        &[
            "another `pgtrail setup` is moving this store's entries",
            &format!("pid {setup_pid} (pgtrail setup, user"),
            "let it finish",
        ],
        Duration::from_secs(30),
    );
    store.batch_execute("ROLLBACK").await.unwrap();
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{said}");
    // The last step's check, with its counts: every old entry, and the chain heads.
    let all = captured + 4;
    assert!(
        said.contains(&format!(
            "it held {all} entries and the partitions hold {all}, and 2 chain head(s)"
        )),
        "{said}"
    );
    env.trail.cli(&["verify", "--json"]).await.assert_success();
}

/// What the migration's guard says of the sessions in the store's database, run as `setup` runs it
/// (in the migration's transaction) with `own` left out: `None` when it lets the move go.
async fn in_use(client: &mut Client, own: &[Backend]) -> Option<String> {
    let tx = client.transaction().await.unwrap();
    let said = match guard::refuse_if_in_use(&tx, own).await {
        Ok(()) => None,
        Err(pgtrail::store::StoreError::MigrationInUse(who)) => Some(who),
        Err(e) => panic!("the guard failed: {e}"),
    };
    tx.rollback().await.unwrap();
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_leaves_out_setups_own_session_by_pid_and_start_and_sees_every_other() {
    // A session of setup's own in the store's database (named as its source connection is,
    // `pgtrail`), and a daemon's. (`setup` refuses a store in the source's database, where its
    // source connection would be one; the guard leaves it out all the same.)
    let env = TestEnv::start().await;
    env.cluster.create_db("pgtrail").await;
    let url = env.trail.config.store_url.clone();
    let own = connect(&format!("{url}?application_name=pgtrail"))
        .await
        .unwrap();
    let own_pid: i32 = query_value(&own, "SELECT pg_backend_pid()", &[]).await;
    let backend = Backend::of(&own)
        .await
        .unwrap()
        .expect("any role may call pg_postmaster_start_time()");
    assert_eq!(backend.pid, own_pid);
    let daemon = connect(&format!("{url}?application_name=pgtrail%20run"))
        .await
        .unwrap();
    let pid: i32 = query_value(&daemon, "SELECT pg_backend_pid()", &[]).await;
    let mut setup = connect(&url).await.unwrap();

    // The daemon is refused, and named alone.
    let who = in_use(&mut setup, std::slice::from_ref(&backend))
        .await
        .expect("the daemon's session went unseen");
    assert!(
        who.contains(&format!("pid {pid} (pgtrail run, user")),
        "{who}"
    );
    assert!(
        !who.contains(&format!("pid {own_pid} ")),
        "setup counted its own session: {who}"
    );

    // A setup role that may not see other roles' sessions (not in pg_read_all_stats) finds it
    // all the same, and says what it cannot see.
    setup
        .batch_execute("CREATE ROLE plain_setup LOGIN")
        .await
        .unwrap();
    let mut plain = connect(&env.cluster.url_as("pgtrail", "plain_setup", None))
        .await
        .unwrap();
    let who = in_use(&mut plain, &[])
        .await
        .expect("another role's pgtrail session went unseen");
    assert!(
        who.contains(&format!(
            "pid {pid} (pgtrail run, user postgres; the rest is hidden"
        )),
        "{who}"
    );
    drop(daemon);

    // With setup's own session alone in the database, the move may go.
    assert_eq!(
        in_use(&mut setup, std::slice::from_ref(&backend)).await,
        None
    );

    // A record of a backend that has ended, whose pid the server gave to another one since: the
    // same pid with another start is not setup's, and is counted.
    let ended = Backend {
        backend_start: backend.backend_start - chrono::Duration::microseconds(1),
        ..backend.clone()
    };
    let who = in_use(&mut setup, &[ended])
        .await
        .expect("a session with an ended backend's pid was left out");
    assert!(
        who.contains(&format!("pid {own_pid} (pgtrail, user")),
        "{who}"
    );
}
