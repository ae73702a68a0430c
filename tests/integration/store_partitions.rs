//! The store's time partitions (migration 16): made ahead by setup and the daemon, on demand for
//! a backlog no partition holds (stored exactly once), append-only partition by partition, made
//! again for pgtrail's own events when the current one is gone, and read across their bounds by
//! the web view's keyset pages.

use chrono::{Duration as TimeDelta, Utc};

use crate::harness::*;

/// The ledger's live partitions: (name, from, to), oldest first.
async fn live_partitions(store: &tokio_postgres::Client) -> Vec<(String, String)> {
    query_pairs::<String, String>(
        store,
        "SELECT name, from_at::text || ' .. ' || to_at::text FROM pgtrail.partitions \
         WHERE dropped_at IS NULL ORDER BY from_at",
        &[],
    )
    .await
}

/// The partition of pgtrail.transactions that goes with entry_rows' partition `name` (migration
/// 23's `pgtrail.transactions_partition`): the same bounds, made and dropped with it.
fn transactions_partition(name: &str) -> String {
    let suffix = name
        .strip_prefix("entries_")
        .unwrap_or_else(|| panic!("{name} is not named as pgtrail names partitions"));
    format!("transactions_{suffix}")
}

/// Detaches and drops the partition holding now (of entry_rows, and its transactions partition),
/// as the owner, and records that in the ledger (what a retention drop leaves behind): the store
/// has no partition for the present.
async fn drop_current_partition(store: &tokio_postgres::Client) -> String {
    let name: String = query_value(
        store,
        "SELECT name FROM pgtrail.partitions WHERE dropped_at IS NULL AND from_at <= now() AND now() < to_at",
        &[],
    )
    .await;
    let txns = transactions_partition(&name);
    store
        .batch_execute(&format!(
            "ALTER TABLE pgtrail.entry_rows DETACH PARTITION pgtrail.{name};
             DROP TABLE pgtrail.{name};
             ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.{txns};
             DROP TABLE pgtrail.{txns};
             UPDATE pgtrail.partitions SET dropped_at = now() WHERE name = '{name}';"
        ))
        .await
        .unwrap();
    name
}

/// A login role of the web view's (a member of pgtrail_reader, as a user adds one), connected.
async fn web_view(env: &TestEnv, store: &tokio_postgres::Client) -> tokio_postgres::Client {
    store
        .batch_execute("CREATE ROLE webview LOGIN PASSWORD 'pw' IN ROLE pgtrail_reader")
        .await
        .unwrap();
    connect(&env.cluster.url_as("pgtrail", "webview", Some("pw")))
        .await
        .expect("connect as the web view's role")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_without_a_partition_is_stored_once_in_one_made_for_it() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    let store = env.store().await;
    // Setup made the current period's partition and two more ahead.
    let made = live_partitions(&store).await;
    assert_eq!(made.len(), 3, "{made:?}");
    src.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;

    // A backlog while the daemon is stopped, and no partition for it any more: the writer (or
    // the keeper, whichever comes first) makes one when the daemon starts again.
    src.batch_execute(
        "INSERT INTO t SELECT g, g FROM generate_series(11, 500) g;
         UPDATE t SET v = -v WHERE id <= 20;
         DELETE FROM t WHERE id > 490;",
    )
    .await
    .unwrap();
    let entries_before = query_count(&store, "SELECT count(*) FROM pgtrail.entries").await;
    let dropped = drop_current_partition(&store).await;
    let left = query_count(&store, "SELECT count(*) FROM pgtrail.entries").await;
    assert!(
        left < entries_before,
        "the dropped partition held the first entries"
    );
    let mut daemon = env.spawn();
    env.sync().await;
    daemon.terminate().await;
    assert!(
        !daemon.log().contains("no partition of relation"),
        "{}",
        daemon.log()
    );
    // Exactly once: the backlog's 490 inserts, 20 updates and 10 deletes, and nothing of the
    // dropped partition's came back.
    assert_counts(&store, "public", "t", Counts::new(490, 20, 10, 0)).await;
    let live = live_partitions(&store).await;
    assert!(
        live.iter().any(|(name, _)| *name == format!("{dropped}_2")),
        "the range was made again under a new name: {live:?}"
    );
    let outside = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries e WHERE NOT EXISTS (SELECT FROM pgtrail.partitions p \
         WHERE p.dropped_at IS NULL AND e.committed_at >= p.from_at AND e.committed_at < p.to_at)",
    )
    .await;
    assert_eq!(outside, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_append_only_and_owned_by_the_setup_role() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v int)").await;
    src.batch_execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    let store = env.store().await;
    env.sync().await;
    daemon.terminate().await;
    let name: String = query_value(
        &store,
        "SELECT tableoid::regclass::text FROM pgtrail.entries ORDER BY id LIMIT 1",
        &[],
    )
    .await;
    assert!(name.starts_with("pgtrail.entries_p"), "{name}");
    let before = query_count(&store, "SELECT count(*) FROM pgtrail.entries").await;
    // The same partition's transactions (the view's columns xid, lsn, context, actor, address).
    let txns = format!(
        "pgtrail.{}",
        transactions_partition(name.trim_start_matches("pgtrail."))
    );
    for sql in [
        format!("TRUNCATE {name}"),
        format!("UPDATE {name} SET action = 'DDL'"),
        format!("DELETE FROM {name}"),
        format!("TRUNCATE {txns}"),
        format!("UPDATE {txns} SET actor = 'mallory'"),
        format!("DELETE FROM {txns}"),
        "UPDATE pgtrail.entry_rows SET action = 'DDL'".to_owned(),
        "TRUNCATE pgtrail.entry_rows".to_owned(),
        "UPDATE pgtrail.transactions SET actor = 'mallory'".to_owned(),
        "TRUNCATE pgtrail.transactions".to_owned(),
    ] {
        let err = store.batch_execute(&sql).await.expect_err(&sql);
        assert!(
            format!("{err:?}").contains("is append-only"),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(
        query_count(&store, "SELECT count(*) FROM pgtrail.entries").await,
        before
    );
    // Every partition of the two tables belongs to the owner of pgtrail.entry_rows (setup's
    // role), and the daemon's and the web view's roles may make partitions only through the
    // function.
    let owned = |test: &str| {
        format!(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent IN ('pgtrail.entry_rows'::regclass, 'pgtrail.transactions'::regclass) \
               AND c.relowner {test} (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entry_rows'::regclass)"
        )
    };
    assert_eq!(query_count(&store, &owned("<>")).await, 0);
    assert!(
        query_count(&store, &owned("=")).await >= 2,
        "no partition seen"
    );
    let can_create: bool = query_value(
        &store,
        "SELECT has_schema_privilege('pgtrail_writer', 'pgtrail', 'CREATE') \
             OR has_schema_privilege('pgtrail_reader', 'pgtrail', 'CREATE')",
        &[],
    )
    .await;
    assert!(!can_create);
    let can_ensure: bool = query_value(
        &store,
        "SELECT NOT has_function_privilege('pgtrail_reader', 'pgtrail.ensure_partition(timestamptz)', 'EXECUTE') \
            AND has_function_privilege('pgtrail_writer', 'pgtrail.ensure_partition(timestamptz)', 'EXECUTE') \
            AND NOT has_function_privilege('public', 'pgtrail.ensure_partition(timestamptz)', 'EXECUTE')",
        &[],
    )
    .await;
    assert!(can_ensure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_recorded_when_the_current_partition_is_gone() {
    let (env, store) = TestEnv::with_store().await;
    // Detached by hand (the partition of entry_rows and its transactions partition: the range
    // gone from both tables), the ledger left as it was: the function notices, and makes another.
    let name: String = query_value(
        &store,
        "SELECT name FROM pgtrail.partitions WHERE dropped_at IS NULL AND from_at <= now() AND now() < to_at",
        &[],
    )
    .await;
    store
        .batch_execute(&format!(
            "ALTER TABLE pgtrail.entry_rows DETACH PARTITION pgtrail.{name};
             ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.{}",
            transactions_partition(&name)
        ))
        .await
        .unwrap();
    // An event through the web view's role (pgtrail_reader): a user added by the CLI as such.
    let web = web_view(&env, &store).await;
    let id = pgtrail::store::events::record(
        &web,
        &pgtrail::store::events::OwnEvent::new(
            pgtrail::store::events::Category::Config,
            "config_reloaded",
            "pgtrail web",
            "a test event",
        ),
    )
    .await
    .expect("record_event with no current partition");
    let holder: String = query_value(
        &store,
        "SELECT tableoid::regclass::text FROM pgtrail.entries WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(holder, format!("pgtrail.{name}_2"));
    let stale: Option<chrono::DateTime<Utc>> = store
        .query_one(
            "SELECT dropped_at FROM pgtrail.partitions WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stale.is_some(),
        "the detached partition is marked gone in the ledger"
    );
    let out = env.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cross_partition_bounds_without_a_gap_or_a_repeat() {
    // `[store] partition = "day"`, which setup writes into the store.
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "partition = \"day\"\n".into()
    })
    .await;
    env.setup().await;
    let store = env.store().await;
    let period: String = query_value(&store, "SELECT partition FROM pgtrail.settings", &[]).await;
    assert_eq!(period, "day");
    // 60 entries, one every 5 hours over 12 days: in 13 day partitions.
    let now = Utc::now();
    let data: Vec<Synth> = (0..60)
        .map(|i| {
            Synth::new("public.t", "INSERT")
                .at(now - TimeDelta::hours(5 * (60 - i)))
                .pk(&format!("{{\"id\":{i}}}"))
                .after(&format!("{{\"id\":{i}}}"))
        })
        .collect();
    let ids = store_entries(&store, &data).await;
    let partitions = query_count(
        &store,
        "SELECT count(DISTINCT tableoid) FROM pgtrail.entries",
    )
    .await;
    assert!(partitions >= 12, "{partitions} partitions hold the entries");
    let web = Web::start(&env).await;
    let newest_first = sorted_desc(ids.clone());
    for limit in [7, 25] {
        assert_eq!(web.walk("table=public.t", limit).await, newest_first);
    }
    let oldest_first = web.walk("table=public.t&sort=time&dir=asc", 7).await;
    assert_eq!(oldest_first, ids);
    web.assert_quiet();
}

/// `pgtrail.record_event` with the time `at` (SQL) and a digest that is not the event's: for
/// calls that must be refused before anything is written.
fn event_at(at: &str) -> String {
    format!(
        "SELECT pgtrail.record_event({at}, 'session', NULL, NULL, NULL, NULL, '{{}}', '{{}}', \
         NULL, NULL, sha256(''::bytea))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_dated_away_from_the_stores_clock_is_refused_and_makes_no_partition() {
    let (env, store) = TestEnv::with_store().await;
    // The web view's role records sign-ins and exports: it may not choose their time freely.
    let web = web_view(&env, &store).await;
    let ledger = live_partitions(&store).await;
    let events = "SELECT count(*) FROM pgtrail.entries WHERE source = 0";
    let before = query_count(&store, events).await;
    for at in [
        "now() - interval '400 days'",
        "now() + interval '3 years'",
        "clock_timestamp() - interval '6 minutes'",
        "clock_timestamp() + interval '6 minutes'",
        "NULL",
    ] {
        let err = web.query_one(&event_at(at), &[]).await.expect_err(at);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{at}: {err:?}"));
        assert_eq!(db.code().code(), "55000", "{at}: {db:?}");
        assert!(
            db.message()
                .contains("is not within 5 minutes of the store's clock")
                && db.hint().is_some_and(|h| h.contains("NTP")),
            "{at}: {db:?}"
        );
    }
    assert_eq!(live_partitions(&store).await, ledger, "no partition made");
    assert_eq!(query_count(&store, events).await, before, "no event stored");

    // An event of the web view's, timed by its host's clock, goes in as before; the chain holds.
    let event = pgtrail::store::events::OwnEvent::new(
        pgtrail::store::events::Category::Session,
        "sign_in",
        "pgtrail web",
        "signed in",
    );
    pgtrail::store::events::record(&web, &event)
        .await
        .expect("an event at the present");
    assert_eq!(query_count(&store, events).await, before + 1);
    env.trail.cli(&["verify", "--json"]).await.assert_success();

    // The store's owner (setup's role) is not bound: its own maintenance decides.
    let id: i64 = query_value(&store, &event_at("now() - interval '400 days'"), &[]).await;
    let holder: String = query_value(
        &store,
        "SELECT tableoid::regclass::text FROM pgtrail.entries WHERE id = $1",
        &[&id],
    )
    .await;
    assert!(holder.starts_with("pgtrail.entries_p"), "{holder}");
}

/// Shortens the partition holding now to end at `until` and attaches one from `from` to where
/// it ended, as the owner, in entry_rows and in transactions alike: commit times in
/// `[until, from)` have no partition, and the keeper (which makes the period holding now) makes
/// none for them. Returns the first one's name.
async fn open_a_hole(store: &tokio_postgres::Client, until: &str, from: &str) -> String {
    let (name, bounds): (String, String) = query_pairs(
        store,
        "SELECT name, format('%L|%L', from_at, to_at) FROM pgtrail.partitions \
         WHERE dropped_at IS NULL AND from_at <= now() AND now() < to_at",
        &[],
    )
    .await
    .remove(0);
    let (start, end) = bounds.split_once('|').unwrap();
    let mut sql = String::new();
    for (table, part) in [
        ("entry_rows", name.clone()),
        ("transactions", transactions_partition(&name)),
    ] {
        let new = if table == "entry_rows" {
            "entries_from_now".to_owned()
        } else {
            transactions_partition("entries_from_now")
        };
        sql += &format!(
            "ALTER TABLE pgtrail.{table} DETACH PARTITION pgtrail.{part};
             ALTER TABLE pgtrail.{part} DROP CONSTRAINT IF EXISTS {part}_range;
             ALTER TABLE pgtrail.{part} ADD CONSTRAINT {part}_range
                 CHECK (committed_at >= {start} AND committed_at < '{until}');
             ALTER TABLE pgtrail.{table} ATTACH PARTITION pgtrail.{part} FOR VALUES FROM ({start}) TO ('{until}');
             CREATE TABLE pgtrail.{new} (LIKE pgtrail.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             ALTER TABLE pgtrail.{table} ATTACH PARTITION pgtrail.{new} FOR VALUES FROM ('{from}') TO ({end});"
        );
    }
    store
        .batch_execute(&format!(
            "{sql}
             UPDATE pgtrail.partitions SET to_at = '{until}' WHERE name = '{name}';
             INSERT INTO pgtrail.partitions (name, from_at, to_at) VALUES ('entries_from_now', '{from}', {end});"
        ))
        .await
        .unwrap();
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_needed_after_side_rows_were_sent_is_made_outside_the_store_transaction() {
    // A SQL_ASCII source, whose text may hold bytes that are not UTF-8: wal2json passes them on,
    // and the row is undecodable (kept in pgtrail.decode_errors).
    let env = TestEnv::start().await;
    let postgres = env.cluster.client("postgres").await;
    for sql in [
        "DROP DATABASE app",
        "CREATE DATABASE app ENCODING 'SQL_ASCII' TEMPLATE template0",
    ] {
        postgres.batch_execute(sql).await.unwrap();
    }
    create_marker_table(&env.source().await).await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    env.setup().await;
    let store = env.store().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (0, 'before')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;

    // One transaction: 3,000 undecodable rows (more than a batch of events, and than the writer
    // holds back: they go into the store transaction before its first entry), then 50 rows.
    let until: String = query_value(&store, "SELECT clock_timestamp()::text", &[]).await;
    src.batch_execute(
        r"BEGIN;
          INSERT INTO t SELECT g, E'\xff' FROM generate_series(1, 3000) g;
          INSERT INTO t SELECT g, 'ok' FROM generate_series(3001, 3050) g;
          COMMIT;",
    )
    .await
    .unwrap();
    let from: String = query_value(&store, "SELECT clock_timestamp()::text", &[]).await;
    let shortened = open_a_hole(&store, &until, &from).await;

    let mut daemon = env.spawn();
    env.sync().await;
    daemon.terminate().await;
    let log = daemon.log();
    assert!(
        log.contains("made a partition for a commit time outside the partitions made ahead")
            && !log.contains("no partition of relation"),
        "{log}"
    );
    assert_eq!(
        query_count(&store, "SELECT count(*) FROM pgtrail.decode_errors").await,
        3000
    );
    assert_counts(&store, "public", "t", Counts::new(51, 0, 0, 0)).await;
    // The 50 went into a partition made for the hole, by a transaction of its own that began
    // after the store transaction holding the undecodable rows had (not inside it: its
    // now() would be theirs).
    let (made, later): (String, bool) = query_pairs(
        &store,
        "SELECT p.name, p.created_at > (SELECT max(seen_at) FROM pgtrail.decode_errors) \
         FROM pgtrail.entries e JOIN pgtrail.partitions p ON e.tableoid = to_regclass(format('pgtrail.%I', p.name)) \
         WHERE e.table_name = 't' AND e.after->>'v' = 'ok' GROUP BY p.name, p.created_at",
        &[],
    )
    .await
    .remove(0);
    assert!(made != shortened && made != "entries_from_now", "{made}");
    assert!(later, "the partition was made inside the store transaction");
    env.trail.cli(&["verify", "--json"]).await.assert_success();
}
