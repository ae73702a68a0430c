//! Nothing the source sends can halt capture. A transaction the store refuses (here: a CHECK
//! constraint the store's DBA added, which refuses one value every time it is written) is
//! quarantined: its raw records are kept in `pgtrail.quarantine`, an `EVENT` says so, the
//! checkpoint moves past it, and every other transaction is stored exactly once. A store that goes
//! away for a while is waited for, and a connection that silently stops answering (its server
//! process stopped with SIGSTOP, as behind a dropped network) is noticed and replaced, without
//! loss or duplication either way. `verify` checks the quarantine against its `EVENT`: a record
//! changed, deleted or added past the quarantine's append-only trigger is found.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::harness::*;

/// The ids of the entries of table `t`, in the order they were stored.
async fn stored_ids(store: &Client) -> Vec<String> {
    store
        .query(
            "SELECT after->>'id' FROM pgtrail.entries WHERE table_name = 't' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The quarantine's records as text, in order, and their digest as the EVENT states it: for
/// each, its LSN (8 bytes big-endian), its length (4 bytes big-endian) and its bytes.
async fn quarantined(store: &Client) -> (Vec<String>, String) {
    let rows = store
        .query(
            "SELECT convert_from(record, 'UTF8'), (lsn - '0/0')::bigint FROM pgtrail.quarantine ORDER BY first_lsn, seq",
            &[],
        )
        .await
        .unwrap();
    let mut h = Sha256::new();
    let mut records = Vec::new();
    for r in rows {
        let (text, lsn): (String, i64) = (r.get(0), r.get(1));
        h.update((lsn as u64).to_be_bytes());
        h.update((text.len() as u32).to_be_bytes());
        h.update(text.as_bytes());
        records.push(text);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (records, hex)
}

/// The details of the quarantine's EVENT entries.
async fn quarantine_events(store: &Client) -> Vec<Value> {
    store
        .query(
            "SELECT details::text FROM pgtrail.entries \
             WHERE action = 'EVENT' AND schema_name = 'pgtrail' AND table_name = 'quarantine' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_store_refuses_is_quarantined_and_capture_goes_on() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE SCHEMA side; CREATE TABLE side.xid (x bigint);",
    )
    .await;
    let store = env.store().await;
    store
        .batch_execute(
            "ALTER TABLE pgtrail.entry_rows ADD CONSTRAINT no_poison \
             CHECK (after IS NULL OR strpos(after::text, 'poison') = 0) NOT VALID",
        )
        .await
        .unwrap();
    // Three transactions sent at once, so the writer gets them together: the refused one is
    // found among them first, then quarantined.
    src.batch_execute(
        "BEGIN; INSERT INTO t VALUES (1, 'a'); COMMIT;
         BEGIN; INSERT INTO t VALUES (2, 'poison'); INSERT INTO t VALUES (3, 'b');
                INSERT INTO side.xid VALUES (txid_current()); COMMIT;
         BEGIN; INSERT INTO t VALUES (4, 'c'); COMMIT;",
    )
    .await
    .unwrap();
    let xid: i64 = src
        .query_one("SELECT x FROM side.xid", &[])
        .await
        .unwrap()
        .get(0);
    env.sync().await;
    daemon.assert_running();
    assert_eq!(stored_ids(&store).await, ["1", "4"], "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("quarantining the transaction after the checkpoint"),
        "{}",
        daemon.log()
    );

    // The refused transaction's records, whole and in order, from its BEGIN to its COMMIT.
    let (records, digest) = quarantined(&store).await;
    assert!(records.len() >= 4, "{records:?}");
    let first = &records[0];
    assert!(
        first.starts_with(r#"{"action":"B""#) && first.contains(&format!(r#""xid":{xid}"#)),
        "{first}"
    );
    assert!(
        records[records.len() - 1].starts_with(r#"{"action":"C""#),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.contains(r#""value":"poison""#)),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.contains(r#""value":"b""#)),
        "{records:?}"
    );

    // One EVENT names it, and vouches for the records through the events chain.
    let events = quarantine_events(&store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["event"], "transaction_quarantined");
    assert_eq!(e["xid"], xid);
    assert_eq!(e["records"], records.len());
    assert_eq!(e["records_sha256"], digest.as_str());
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("no_poison") && reason.contains("23514"),
        "{reason}"
    );

    // `status` shows it, in both forms.
    let s = env.trail.status_json().await;
    assert_eq!(s["quarantine"]["transactions"], 1, "{s}");
    assert_eq!(s["quarantine"]["records"], records.len(), "{s}");
    let plain = env.trail.cli(&["status"]).await;
    assert!(
        plain.stdout.contains("quarantined: 1 transactions"),
        "{}",
        plain.combined()
    );
    let verify = env.trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());
    // And so does the web view's log page, to an admin.
    let web = Web::start(&env).await;
    let page = web.page("/").await;
    assert!(
        page.contains("Capture quarantined 1 source transaction it could not store"),
        "{page}"
    );
    assert!(
        unescape(&page).contains(r#"href="/?table=pgtrail.quarantine&action=EVENT""#),
        "{page}"
    );

    // Capture goes on, and a restart neither repeats the quarantine nor stores anything twice.
    src.batch_execute("INSERT INTO t VALUES (5, 'd')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (6, 'e')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    assert_eq!(stored_ids(&store).await, ["1", "4", "5", "6"]);
    assert_eq!(quarantined(&store).await.0, records);
    assert_eq!(quarantine_events(&store).await.len(), 1);
    let verify = env.trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());
    tamper_with_the_quarantine(&env, &store, records.len()).await;
}

/// `pgtrail verify --json`: its exit code, the quarantine it checked, and its breaks as (entry
/// id, problem).
async fn verify_quarantine(env: &TestEnv, extra: &[&str]) -> (i32, Value, Vec<(Value, String)>) {
    let out = env
        .trail
        .cli(&[&["verify", "--json"], extra].concat())
        .await;
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", out.combined()));
    let breaks = report["breaks"].as_array().unwrap().iter();
    let breaks = breaks
        .map(|b| (b["id"].clone(), b["problem"].as_str().unwrap().to_owned()))
        .collect();
    let code = out.status.code().expect("verify exited by a signal");
    (code, report["quarantine"].clone(), breaks)
}

/// Runs `sql` on the store with the quarantine's append-only triggers disabled, as a superuser
/// could.
async fn past_the_quarantine_trigger(store: &Client, sql: &str) {
    crate::verify::past_the_triggers_of(store, &["pgtrail.quarantine"], sql).await;
}

/// Changes, deletes and adds quarantined records (of the one quarantined transaction, of `n`
/// records) past the trigger: `verify` names the quarantine's EVENT, or the records no EVENT
/// covers, and is satisfied again once each change is undone.
async fn tamper_with_the_quarantine(env: &TestEnv, store: &Client, n: usize) {
    let event: i64 = store
        .query_one(
            "SELECT id FROM pgtrail.entries \
             WHERE action = 'EVENT' AND schema_name = 'pgtrail' AND table_name = 'quarantine'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (code, checked, breaks) = verify_quarantine(env, &[]).await;
    assert_eq!((code, breaks.len()), (0, 0), "{breaks:?}");
    assert_eq!(checked["transactions"], 1, "{checked}");
    assert_eq!(checked["records"], n, "{checked}");

    // One record's bytes changed, its length kept: the digest differs, the count does not.
    let poisoned = "FROM pgtrail.quarantine WHERE position('poison'::bytea in record) > 0";
    let (id, original, first_lsn, lsn, seq): (i64, String, String, String, i32) = {
        let r = store
            .query_one(
                &format!(
                    "SELECT id, encode(record, 'hex'), first_lsn::text, lsn::text, seq {poisoned}"
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    };
    let set = |hex: &str| {
        format!("UPDATE pgtrail.quarantine SET record = decode('{hex}', 'hex') WHERE id = {id}")
    };
    past_the_quarantine_trigger(
        store,
        &set(&original.replace("706f69736f6e", "706f74696f6e")),
    )
    .await;
    let (code, _, breaks) = verify_quarantine(env, &[]).await;
    assert_eq!((code, breaks.len()), (1, 1), "{breaks:?}");
    assert_eq!(breaks[0].0, event, "{breaks:?}");
    assert!(
        breaks[0].1.contains("SHA-256") && breaks[0].1.contains("a record was changed"),
        "{breaks:?}"
    );
    let text = env.trail.cli(&["verify"]).await;
    assert_eq!(text.status.code(), Some(1));
    assert!(
        text.stdout
            .contains(&format!("BROKEN: entry {event} (events chain)")),
        "{}",
        text.stdout
    );
    past_the_quarantine_trigger(store, &set(&original)).await;
    assert_eq!(verify_quarantine(env, &[]).await.0, 0);

    // The record deleted: the count differs. Put back (an INSERT needs no superuser), intact.
    past_the_quarantine_trigger(
        store,
        &format!("DELETE FROM pgtrail.quarantine WHERE id = {id}"),
    )
    .await;
    let (code, _, breaks) = verify_quarantine(env, &[]).await;
    assert_eq!((code, breaks.len()), (1, 1), "{breaks:?}");
    assert_eq!(breaks[0].0, event, "{breaks:?}");
    let counts = format!(
        "holds {} records of the transaction at {first_lsn}, but its EVENT counts {n}",
        n - 1
    );
    assert!(breaks[0].1.contains(&counts), "{breaks:?}");
    store
        .batch_execute(&format!(
            "INSERT INTO pgtrail.quarantine (source, first_lsn, seq, lsn, record) \
             VALUES (1, '{first_lsn}', {seq}, '{lsn}', decode('{original}', 'hex'))"
        ))
        .await
        .unwrap();
    assert_eq!(verify_quarantine(env, &[]).await.0, 0);

    // A record of a transaction no EVENT covers: a break without an entry id, sought only when the
    // check runs to the end of the store.
    store
        .batch_execute(
            "INSERT INTO pgtrail.quarantine (source, first_lsn, seq, lsn, record) \
             VALUES (1, '0/1', 0, '0/1', '\\x7b7d')",
        )
        .await
        .unwrap();
    let (code, _, breaks) = verify_quarantine(env, &[]).await;
    assert_eq!((code, breaks.len()), (1, 1), "{breaks:?}");
    assert!(breaks[0].0.is_null(), "{breaks:?}");
    assert!(
        breaks[0]
            .1
            .contains("1 records of a transaction at 0/1 that no EVENT entry covers"),
        "{breaks:?}"
    );
    let to = event.to_string();
    assert_eq!(verify_quarantine(env, &["--to", &to]).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_waited_out_without_loss_or_duplication() {
    let env = TestEnv::start().await;
    let mut store_cluster = tokio::task::block_in_place(Cluster::start);
    let mut config = env.trail.config.clone();
    config.store_url = store_cluster.url("pgtrail");
    let trail = Pgtrail::new(config);
    let src = env
        .source_with("CREATE TABLE s (id int PRIMARY KEY, v int)")
        .await;
    trail.setup().await;
    let mut daemon = trail.spawn();
    src.batch_execute("INSERT INTO s SELECT g, 0 FROM generate_series(1, 100) g")
        .await
        .unwrap();
    sync_via(&src, &trail.config.store_url, SYNC_TIMEOUT).await;

    // The store stops mid-stream; changes keep coming in many transactions.
    tokio::task::block_in_place(|| store_cluster.stop());
    for i in 0..10 {
        src.batch_execute(&format!(
            "INSERT INTO s SELECT g, 1 FROM generate_series({}, {}) g; UPDATE s SET v = v + 1 WHERE id = {};",
            101 + i * 10,
            110 + i * 10,
            i + 1
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // a deliberate outage, not a synchronisation
    daemon.assert_running();
    tokio::task::block_in_place(|| store_cluster.start_again());
    sync_via(&src, &trail.config.store_url, Duration::from_secs(120)).await;
    daemon.terminate().await;

    let store = connect(&trail.config.store_url).await.unwrap();
    assert_counts(&store, "public", "s", Counts::new(200, 10, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "s").await;
    let (records, _) = quarantined(&store).await;
    assert!(records.is_empty(), "an outage is no refusal: {records:?}");
    let verify = trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());
}

/// The pid of the server process of the daemon's connection of this kind (`walsender`, or the
/// store writer's `client backend`).
async fn daemon_backend(admin: &Client, backend_type: &str) -> i32 {
    let row = admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgtrail' AND backend_type = $1 \
             AND (backend_type = 'walsender' OR datname = 'pgtrail')",
            &[&backend_type],
        )
        .await
        .unwrap_or_else(|e| panic!("one {backend_type} of the daemon: {e}"));
    row.get(0)
}

/// Stops the server process `pid` (SIGSTOP) until `noticed` shows in the daemon's log, then lets
/// it go on: to its client it was a peer that stopped answering, as behind a dropped network.
async fn stall_until_noticed(daemon: &Daemon, pid: i32, noticed: &str) {
    // SAFETY: kill(2) on a PostgreSQL server process of the test's own cluster.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_until(
        &format!("the daemon to log {noticed:?}"),
        Duration::from_secs(30),
        || async { daemon.log().contains(noticed) },
    )
    .await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_stalled_connection_is_noticed_and_replaced() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.source_toml = "timeout_seconds = 3\n".into();
        c.store_toml = "timeout_seconds = 3\n".into();
    })
    .await;
    let src = env
        .source_with("CREATE TABLE s (id int PRIMARY KEY, v int)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    let admin = env.cluster.client("postgres").await;
    env.sync().await; // streaming: both of the daemon's connections are up

    // The store stops answering the writer while changes arrive.
    let writer = daemon_backend(&admin, "client backend").await;
    let feed = src.batch_execute("INSERT INTO s SELECT g, 1 FROM generate_series(1, 100) g");
    let ((), inserted) = tokio::join!(
        stall_until_noticed(&daemon, writer, "did not answer within 3 s"),
        feed
    );
    inserted.unwrap();
    env.sync().await;
    daemon.assert_running();

    // The source stops sending: not even keepalives, nor the answer to a status update asking for one.
    let walsender = daemon_backend(&admin, "walsender").await;
    stall_until_noticed(&daemon, walsender, "sent nothing for 3 s").await;
    src.batch_execute("UPDATE s SET v = 2 WHERE id <= 20; INSERT INTO s VALUES (101, 3)")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;

    let store = env.store().await;
    assert_counts(&store, "public", "s", Counts::new(101, 20, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "s").await;
}
