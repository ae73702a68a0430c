//! A source's name is bound to its database (the cluster's system identifier and the database's
//! OID): two clusters whose databases are both configured as `[source] name = "shop"` are not
//! merged. The second `setup` is refused before it changes anything, on either side; a daemon
//! started under the name against the other cluster is refused with exit 13; a source registered
//! unbound is bound by the first daemon that reads it; `setup --rebind-source` moves the name to
//! a replaced server, recorded as an event, after which the old server is the one refused. The
//! move's gap says what moved: the server, or the database on the same server (restored there as
//! a new database, with a new OID), whose old slot setup names, with the SQL that drops it.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::harness::Member;
use crate::harness::*;

/// Everything the store keeps of its sources, as text: who they are, where their checkpoints
/// are, their message keys (hashed) and their chain heads.
async fn sources_snapshot(store: &Client) -> String {
    query_value(
        store,
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM ( \
             SELECT format('source %s', s) x FROM pgtrail.sources s \
             UNION ALL SELECT format('checkpoint %s', c) FROM pgtrail.checkpoints c \
             UNION ALL SELECT format('key %s %s %s', k.source, md5(k.inner_pad || k.outer_pad), k.copied_at) \
                 FROM pgtrail.message_keys k \
             UNION ALL SELECT format('head %s', h) FROM pgtrail.chain_heads h) t",
        &[],
    )
    .await
}

/// The log page a reader sees of `config`'s store, as text (the gap rows are shown to everyone).
async fn log_page(config: &Config) -> String {
    let web = Web::start_for(config, "auth = \"none\"\n").await;
    unescape(&web.page("/").await)
}

/// The `found` of the store's `source_moved` events.
async fn moved_found(store: &Client) -> Vec<String> {
    query_column(
        store,
        "SELECT details->>'found' FROM pgtrail.entries \
         WHERE table_name = 'gap' AND details->>'event' = 'source_moved' ORDER BY id",
        &[],
    )
    .await
}

/// The store's checkpoint.
const CHECKPOINT: &str = "SELECT lsn::text FROM pgtrail.checkpoints";

/// Sets `m` up and captures one change (branch 1001, `filler`); a client on the store, and its
/// checkpoint after it.
async fn captured_once(m: &Member, filler: &str) -> (Client, String) {
    m.trail.setup().await;
    let store = connect(&m.trail.config.store_url).await.unwrap();
    let mut daemon = m.trail.spawn();
    m.source()
        .await
        .execute("INSERT INTO bank_branches VALUES (1001, 0, $1)", &[&filler])
        .await
        .unwrap();
    m.sync().await;
    daemon.terminate().await;
    let checkpoint = query_value(&store, CHECKPOINT, &[]).await;
    (store, checkpoint)
}

/// The fillers of the branches the tests add (ids above 1000), in the order stored.
async fn kept(store: &Client) -> Vec<String> {
    query_column(
        store,
        "SELECT after->>'filler' FROM pgtrail.entries WHERE table_name = 'bank_branches' \
         AND (after->>'bid')::int > 1000 ORDER BY id",
        &[],
    )
    .await
}

async fn system_identifier(m: &Member) -> String {
    query_value(
        &m.source().await,
        "SELECT system_identifier::text FROM pg_control_system()",
        &[],
    )
    .await
}

/// The system identifier the store has bound the source `name` to (NULL: unbound).
async fn bound_to(store: &Client, name: &str) -> Option<String> {
    query_value(
        store,
        "SELECT system_identifier FROM pgtrail.sources WHERE name = $1",
        &[&name],
    )
    .await
}

/// Starts a daemon for `m` that must refuse to run: exit 13 and a log saying so.
async fn refused_daemon(m: &Member) -> String {
    let mut daemon = m.trail.spawn();
    wait_until("the daemon to exit", Duration::from_secs(60), || {
        let exited = daemon.try_exit().is_some();
        async move { exited }
    })
    .await;
    let log = daemon.log();
    assert_eq!(daemon.try_exit().unwrap().code(), Some(13), "{log}");
    assert!(
        log.contains("is bound in this store to database \"app\"")
            && log.contains("pgtrail setup --rebind-source"),
        "{log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_database_under_a_name_in_use_changes_nothing() {
    let first = Member::start("shop", None).await;
    first.trail.setup().await;
    let store = connect(&first.trail.config.store_url).await.unwrap();
    let mut daemon = first.trail.spawn();
    first
        .source()
        .await
        .batch_execute("INSERT INTO bank_branches VALUES (1, 0, 'first')")
        .await
        .unwrap();
    first.sync().await;
    daemon.terminate().await;
    assert_eq!(
        bound_to(&store, "shop").await,
        Some(system_identifier(&first).await)
    );
    let before = sources_snapshot(&store).await;

    let second = Member::start("shop", Some(first.trail.config.store_url.clone())).await;
    assert_ne!(
        system_identifier(&first).await,
        system_identifier(&second).await
    );
    for args in [&["setup"][..], &["setup", "--dry-run"]] {
        second.trail.cli(args).await.assert_clean_failure(
            &[
                "the source \"shop\" is bound in this store to database \"app\"",
                &format!("system identifier {}", system_identifier(&first).await),
                "reaches database \"app\"",
                &format!("system identifier {}", system_identifier(&second).await),
                "another postgresql server",
                "a [source] name of its own",
                "pgtrail setup --rebind-source",
            ],
            Duration::from_secs(30),
        );
    }
    // Nothing changed in the store, nor on the second cluster (no slot, no trigger, no schema).
    assert_eq!(sources_snapshot(&store).await, before);
    let src = second.source().await;
    let slots = query_count(&src, "SELECT count(*) FROM pg_replication_slots").await;
    let schema: bool = query_value(&src, "SELECT to_regnamespace('pgtrail') IS NULL", &[]).await;
    assert_eq!((slots, schema), (0, true));

    // A daemon under the name against the second cluster is refused the same way.
    let log = refused_daemon(&second).await;
    assert!(log.contains("another PostgreSQL server"), "{log}");
    assert_eq!(sources_snapshot(&store).await, before);
    let entries = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE source = 1 AND table_name = 'bank_branches'",
    )
    .await;
    assert_eq!(entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_source_is_bound_by_its_daemon_and_rebind_moves_it() {
    let old = Member::start("shop", None).await;
    old.trail.setup().await;
    let store = connect(&old.trail.config.store_url).await.unwrap();
    // As a store registered before bindings: unbound.
    store
        .batch_execute(
            "UPDATE pgtrail.sources SET system_identifier = NULL, database_oid = NULL, \
             database_name = NULL, bound_at = NULL WHERE name = 'shop'",
        )
        .await
        .unwrap();
    let mut daemon = old.trail.spawn();
    let old_id = system_identifier(&old).await;
    wait_until(
        "the daemon to bind its source",
        Duration::from_secs(60),
        || async { bound_to(&store, "shop").await.as_ref() == Some(&old_id) },
    )
    .await;
    daemon.terminate().await;
    assert!(daemon
        .log()
        .contains("source bound to the database it captures"));
    // The daemon's role may fill a binding in, never change one nor write the table; the web
    // view's role may not even call it.
    for (role, sql) in [
        (
            "pgtrail_writer",
            "UPDATE pgtrail.sources SET system_identifier = '1' WHERE id = 1",
        ),
        (
            "pgtrail_reader",
            "SELECT pgtrail.bind_source(1::smallint, '1', 1, 'x')",
        ),
    ] {
        store
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .unwrap();
        let denied = store.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            denied.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{role}: {denied}"
        );
        store.batch_execute("RESET ROLE").await.unwrap();
    }
    store
        .batch_execute("SET ROLE pgtrail_writer; SELECT pgtrail.bind_source(1::smallint, '1', 1, 'x'); RESET ROLE")
        .await
        .unwrap();
    assert_eq!(bound_to(&store, "shop").await.as_ref(), Some(&old_id));

    // The database moved to a new server: `--rebind-source` (with the slot the new server lacks).
    let new = Member::start("shop", Some(old.trail.config.store_url.clone())).await;
    let out = new
        .trail
        .cli(&["setup", "--rebind-source", "--recreate-slot"])
        .await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("store: source \"shop\" rebound from database \"app\""),
        "{out}"
    );
    let new_id = system_identifier(&new).await;
    assert_eq!(bound_to(&store, "shop").await, Some(new_id.clone()));
    let event: (String, String) = query_pairs(
        &store,
        "SELECT details #>> '{from,system_identifier}', details #>> '{to,system_identifier}' \
         FROM pgtrail.entries WHERE table_name = 'config' AND details->>'event' = 'source_rebound'",
        &[],
    )
    .await
    .into_iter()
    .next()
    .expect("a source_rebound event");
    assert_eq!(event, (old_id, new_id));
    // The new server captures under the name; the old one is refused now.
    let mut daemon = new.trail.spawn();
    new.source()
        .await
        .batch_execute("INSERT INTO bank_branches VALUES (2, 0, 'moved')")
        .await
        .unwrap();
    new.sync().await;
    daemon.terminate().await;
    refused_daemon(&old).await;
    // Nothing left to move.
    new.trail
        .cli(&["setup", "--rebind-source"])
        .await
        .assert_clean_failure(
            &["nothing to rebind", "already bound"],
            Duration::from_secs(30),
        );
    new.trail
        .cli(&["verify", "--source", "shop"])
        .await
        .assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_server_with_a_slot_records_the_gap_and_captures_from_that_slot() {
    let old = Member::start("shop", None).await;
    let (store, old_checkpoint) = captured_once(&old, "on the old server").await;

    // The new server has the slot already (made by hand before the move), and a change after it.
    let new = Member::start("shop", Some(old.trail.config.store_url.clone())).await;
    let src = new.source().await;
    let start: String = query_value(
        &src,
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json')",
        &[&SLOT],
    )
    .await;
    assert_ne!(start, old_checkpoint, "the two servers' positions differ");
    src.batch_execute("INSERT INTO bank_branches VALUES (1002, 0, 'after the new slot')")
        .await
        .unwrap();
    let out = new.trail.cli(&["setup", "--rebind-source"]).await;
    out.assert_success();
    assert!(
        out.stdout.contains(&format!(
            "changes on the old server after {old_checkpoint} and on the new one before {start} were not captured"
        )),
        "{out}"
    );
    // The old server's position means nothing on the new one: the checkpoint is the slot's start.
    assert_eq!(query_value::<String>(&store, CHECKPOINT, &[]).await, start);
    let (old_id, new_id) = (system_identifier(&old).await, system_identifier(&new).await);
    let gap: Vec<Option<String>> = query_column(
        &store,
        "SELECT unnest(ARRAY[details->>'from_lsn', details->>'to_lsn', \
             details #>> '{from_server,system_identifier}', details #>> '{to_server,system_identifier}', \
             context->>'actor']) \
         FROM pgtrail.entries WHERE table_name = 'gap' AND details->>'event' = 'source_moved'",
        &[],
    )
    .await;
    assert_eq!(
        gap[..4],
        [
            Some(old_checkpoint),
            Some(start),
            Some(old_id),
            Some(new_id)
        ],
        "{gap:?}"
    );
    assert!(gap[4].is_some(), "who moved it: {gap:?}");
    // Said as a move to another server, in the event and in the log.
    let found = moved_found(&store).await;
    assert!(
        found.len() == 1 && found[0].starts_with("the source moved to another server ("),
        "{found:?}"
    );
    let log = log_page(&new.trail.config).await;
    assert!(
        log.contains(
            "were not captured (the source moved to another server, where its slot is pgtrail)."
        ),
        "{log}"
    );

    // Capture goes on from the new slot: the change made after it, once.
    let mut daemon = new.trail.spawn();
    new.sync().await;
    daemon.terminate().await;
    let kept = kept(&store).await;
    assert_eq!(kept, ["on the old server", "after the new slot"]);
    new.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_on_the_same_server_is_a_move_to_another_database() {
    let mut m = Member::start("shop", None).await;
    let (store, old_checkpoint) = captured_once(&m, "before the restore").await;

    // Restored as a new database on the same server (a copy: a new OID).
    let admin = m.cluster.client("postgres").await;
    wait_slot_inactive(&admin, SLOT).await;
    admin
        .batch_execute("CREATE DATABASE app_restored TEMPLATE app")
        .await
        .unwrap();
    let mut config = m.trail.config.clone();
    config.source_url = m.cluster.url("app_restored");
    m.trail.rewrite(config);
    m.trail.cli(&["setup"]).await.assert_clean_failure(
        &[
            "another database on the same server",
            "pgtrail setup --rebind-source",
        ],
        Duration::from_secs(30),
    );
    // The old database's slot is not the new one's: setup says whose it is and how to drop it
    // (as dropping that database takes too), before it changes anything.
    let before = sources_snapshot(&store).await;
    m.trail
        .cli(&["setup", "--rebind-source"])
        .await
        .assert_clean_failure(
            &[
                "the replication slot \"pgtrail\" on the source's server is still the old database's, \"app\"",
                "cannot capture \"app_restored\"",
                "SELECT pg_drop_replication_slot('pgtrail')",
                "then run `pgtrail setup --rebind-source` again",
            ],
            Duration::from_secs(30),
        );
    // A config of another source on that database, with the same slot name, is told the same.
    let mut other = m.trail.config.clone();
    other.source_toml = "name = \"shop-restored\"\n".into();
    let other = Pgtrail::new(other);
    for args in [&["setup"][..], &["setup", "--dry-run"]] {
        other.cli(args).await.assert_clean_failure(
            &[
                "the replication slot \"pgtrail\" belongs to the database \"app\"",
                "not to the one source.url reaches, \"app_restored\"",
                "give this config a source.slot of its own",
                "SELECT pg_drop_replication_slot('pgtrail')",
            ],
            Duration::from_secs(30),
        );
    }
    assert_eq!(sources_snapshot(&store).await, before);
    let slots: Vec<String> = query_column(
        &admin,
        "SELECT database::text FROM pg_replication_slots",
        &[],
    )
    .await;
    assert_eq!(slots, ["app"]);
    admin
        .batch_execute("SELECT pg_drop_replication_slot('pgtrail')")
        .await
        .unwrap();
    let out = m.trail.cli(&["setup", "--rebind-source"]).await;
    out.assert_success();
    let start: String = query_value(&store, CHECKPOINT, &[]).await;
    assert!(
        out.stdout.contains(&format!(
            "changes to the old database after {old_checkpoint} and to the new one before {start} were not captured"
        )) && out.stdout.contains("on the same server"),
        "{out}"
    );
    assert!(!out.stdout.contains("old server"), "{out}");

    // Said as a move to another database on the same server, in the event and in the log.
    let found = moved_found(&store).await;
    assert!(
        found.len() == 1
            && found[0].starts_with("the source moved to another database on the same server ("),
        "{found:?}"
    );
    let log = log_page(&m.trail.config).await;
    assert!(
        log.contains(
            "were not captured (the source moved to another database on the same server \
             (\"app\" to \"app_restored\"), where its slot is pgtrail)."
        ),
        "{log}"
    );
    assert!(!log.contains("moved to another server"), "{log}");

    // Capture goes on from the restored database's slot.
    let restored = m.cluster.client("app_restored").await;
    restored
        .batch_execute("INSERT INTO bank_branches VALUES (1002, 0, 'after the restore')")
        .await
        .unwrap();
    let mut daemon = m.trail.spawn();
    sync_via(&restored, &m.trail.config.store_url, SYNC_TIMEOUT).await;
    daemon.terminate().await;
    let kept = kept(&store).await;
    assert_eq!(kept, ["before the restore", "after the restore"]);
    m.verify().await;
}
