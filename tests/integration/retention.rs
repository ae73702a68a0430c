//! Retention drops whole partitions past the store's retention and keeps every chain
//! verifiable. Old entries are real chained entries: pgtrail's own events, written through
//! `pgtrail.record_event` (as the store's owner) with commit times months back, so they lie in
//! old partitions; the source's captured entries lie in the current one.

use serde_json::Value;
use sha2::Digest;

use crate::harness::*;

/// Back-dated `config` events through record_event, with the digest of the canonical form of
/// src/store/chain.rs (the SQL helpers of migration 18). Returns how many were written.
async fn back_dated_events(store: &tokio_postgres::Client, days_ago: &[i32]) -> i64 {
    for d in days_ago {
        store
            .batch_execute(&format!(
                "DO $$ DECLARE at timestamptz := date_trunc('milliseconds', now()) - interval '{d} days'; \
                 ctx text := '{{\"application_name\":\"test\",\"remarks\":\"old {d}\"}}'; det text := '{{\"event\":\"test\"}}'; BEGIN \
                 PERFORM pgtrail.record_event(at, 'config', NULL, NULL, NULL, NULL, ctx::json, det::json, NULL, NULL, \
                 sha256(pgtrail.canonical_number((extract(epoch FROM at) * 1000000)::bigint) \
                 || pgtrail.canonical_number(NULL) || pgtrail.canonical_number(NULL) \
                 || pgtrail.canonical_text('pgtrail') || pgtrail.canonical_text('config') \
                 || pgtrail.canonical_text('EVENT') || pgtrail.canonical_text(NULL) \
                 || pgtrail.canonical_text(NULL) || pgtrail.canonical_text(NULL) \
                 || pgtrail.canonical_text(NULL) || pgtrail.canonical_text(ctx) \
                 || pgtrail.canonical_text(det))); END $$"
            ))
            .await
            .unwrap_or_else(|e| panic!("back-dated event {d} days ago: {e}"));
    }
    days_ago.len() as i64
}

async fn json_of(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let out = env.trail.cli(args).await;
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{}", out.combined()));
    (out.status.code().expect("exited by a signal"), v)
}

/// Per live partition past 90 days: its name and entries, as the store counts them.
async fn old_partitions(store: &tokio_postgres::Client) -> Vec<(String, i64)> {
    store
        .query(
            "SELECT p.name, (SELECT count(*) FROM pgtrail.entries e WHERE e.committed_at >= p.from_at \
             AND e.committed_at < p.to_at) FROM pgtrail.partitions p \
             WHERE p.dropped_at IS NULL AND p.to_at <= now() - interval '90 days' ORDER BY p.from_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .filter(|r| r.get::<_, i64>(1) > 0)
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_drops_old_partitions_and_chains_stay_verifiable() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "retention = \"90d\"\n".into();
    })
    .await;
    let src = env
        .source_with("CREATE TABLE acct (id int PRIMARY KEY, v int)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO acct SELECT g, g FROM generate_series(1, 5) g")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    let old = back_dated_events(&store, &[200, 199, 130]).await;
    let before = old_partitions(&store).await;
    assert_eq!(before.iter().map(|p| p.1).sum::<i64>(), old, "{before:?}");
    let total: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);

    // The dry run lists exactly the old partitions, with the store's counts, and changes nothing.
    let (code, dry) = json_of(&env, &["retention", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{dry}");
    let listed: Vec<(String, i64)> = dry["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = p["entries"].as_array().unwrap().iter();
            (
                p["name"].as_str().unwrap().to_owned(),
                n.map(|s| s["entries"].as_i64().unwrap()).sum(),
            )
        })
        .filter(|p: &(String, i64)| p.1 > 0)
        .collect();
    assert_eq!(listed, before, "{dry}");
    assert_eq!(old_partitions(&store).await, before);
    // Each source is named beside its id (the old entries are pgtrail's own events, source 0).
    for p in dry["partitions"].as_array().unwrap() {
        for s in p["entries"].as_array().unwrap() {
            assert_eq!(
                (&s["source"], &s["source_name"]),
                (&0.into(), &"pgtrail".into()),
                "{dry}"
            );
        }
    }
    // In words, by name alone.
    let out = env.trail.cli(&["retention", "--dry-run"]).await;
    out.assert_success();
    for (name, n) in &before {
        let line = out.stdout.lines().find(|l| l.starts_with(name.as_str()));
        assert!(
            line.is_some_and(
                |l| l.ends_with(&format!("would be dropped; entries by source: pgtrail {n}"))
            ),
            "{out}"
        );
    }
    assert!(!out.stdout.contains("source 0"), "{out}");

    // Within retention: drop_partition refuses the writer; the reader may not call it.
    let current: String = store
        .query_one(
            "SELECT name FROM pgtrail.partitions WHERE from_at <= now() AND now() < to_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    store.batch_execute("CREATE ROLE ret_w LOGIN IN ROLE pgtrail_writer; CREATE ROLE ret_r LOGIN IN ROLE pgtrail_reader")
        .await
        .unwrap();
    for (role, wanted) in [
        ("ret_w", "within the retention"),
        ("ret_r", "permission denied"),
    ] {
        let c = connect(&env.cluster.url_as("pgtrail", role, None))
            .await
            .unwrap();
        let e = c
            .query_one("SELECT pgtrail.drop_partition($1, '[]')", &[&current])
            .await
            .expect_err("a partition within retention must be kept");
        assert!(format!("{e:?}").contains(wanted), "{role}: {e:?}");
    }

    // The pass drops them, records the event, keeps the rest.
    let (code, done) = json_of(&env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{done}");
    assert!(old_partitions(&store).await.is_empty());
    let events: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.entries WHERE table_name = 'retention' AND details->>'event' = 'partition_dropped'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, before.len() as i64);
    let after: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, total - old + events);
    let kept: i64 = store
        .query_one(
            "SELECT count(*) FROM pgtrail.entries WHERE table_name = 'acct'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 5);

    // verify stays intact and counts what went.
    let (code, v) = json_of(&env, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["partitions_dropped"], before.len() as i64, "{v}");
    let dropped: i64 = v["chains"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["dropped"].as_i64().unwrap())
        .sum();
    assert_eq!(dropped, old, "{v}");
    // From the second drop's event on: the walk starts after the first one, not at an anchor below it.
    let second: i64 = store
        .query_one(
            "SELECT max(id) FROM pgtrail.entries WHERE table_name = 'retention'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (code, v) = json_of(&env, &["verify", "--json", "--from", &second.to_string()]).await;
    assert_eq!(code, 0, "{v}");

    // An entry deleted by hand afterwards is still found.
    let first: i64 = store
        .query_one(
            "SELECT min(id) FROM pgtrail.entries WHERE table_name = 'acct'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    crate::verify::delete_past_the_triggers(&store, first).await;
    let (code, v) = json_of(&env, &["verify", "--json"]).await;
    assert_ne!(code, 0, "{v}");
    assert_eq!(v["intact"], false, "{v}");
}

/// The dropped partitions' event details, oldest first.
async fn drop_events(store: &tokio_postgres::Client) -> Vec<Value> {
    let events = events_named(store, "partition_dropped").await;
    events.into_iter().map(|(_, details)| details).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_archives_a_partition_before_dropping_it_and_keeps_it_when_it_cannot() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "retention = \"90d\"\narchive_dir = \"arch/files\"\n".into();
    })
    .await;
    let base = env.trail.config_path.parent().unwrap().to_owned();
    // A regular file where the archive directory's parent should be: nothing can be written.
    std::fs::write(base.join("arch"), "not a directory").unwrap();
    env.setup().await;
    let store = env.store().await;
    // Ids interleave across the two partitions (200 and 201 days back in one, 130 in the other):
    // when the older goes first, the other's archive meets the chain cut on both sides of it.
    let old = back_dated_events(&store, &[200, 130, 201]).await;
    let before = old_partitions(&store).await;
    assert_eq!(before.iter().map(|p| p.1).sum::<i64>(), old, "{before:?}");

    // Unwritable: every partition is kept, the failure is said and recorded as an event.
    let (code, kept) = json_of(&env, &["retention", "--json"]).await;
    assert_eq!(code, 1, "{kept}");
    for p in kept["partitions"].as_array().unwrap() {
        assert_eq!(p["outcome"], "kept", "{kept}");
        assert!(
            p["reason"].as_str().unwrap().contains("archive directory"),
            "{kept}"
        );
    }
    assert_eq!(old_partitions(&store).await, before);
    let failed: Vec<Value> = events_named(&store, "archive_failed")
        .await
        .into_iter()
        .map(|(_, details)| details["partition"].clone())
        .collect();
    let listed: Vec<Value> = kept["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(failed, listed);
    assert!(drop_events(&store).await.is_empty());

    // Writable: each partition goes after its archive, which checks out on its own.
    std::fs::remove_file(base.join("arch")).unwrap();
    let (code, done) = json_of(&env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{done}");
    assert!(old_partitions(&store).await.is_empty());
    let events = drop_events(&store).await;
    let mut archived = 0;
    for (p, event) in done["partitions"].as_array().unwrap().iter().zip(&events) {
        assert_eq!(p["outcome"], "dropped", "{done}");
        assert_eq!(event["partition"], p["name"]);
        assert_eq!(event["archives"], p["archives"], "{event}");
        for a in p["archives"].as_array().unwrap() {
            let file = base.join("arch/files").join(a["file"].as_str().unwrap());
            let bytes = std::fs::read(&file).unwrap();
            let sha: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(a["sha256"], sha.as_str());
            let (code, v) = json_of(
                &env,
                &["verify", "--json", "--archive", file.to_str().unwrap()],
            )
            .await;
            assert_eq!(code, 0, "{v}");
            assert_eq!(v["intact"], true, "{v}");
            assert_eq!(v["entries"], a["entries"], "{v}");
            archived += a["entries"].as_i64().unwrap();
        }
    }
    // Old partitions with entries were archived; empty ones (if any) went with no file.
    assert_eq!(archived, old, "{done}");
    let (code, v) = json_of(&env, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{v}");

    // An anchor added past pgtrail (to hide entries as if retention dropped them) is found.
    store
        .batch_execute(
            "INSERT INTO pgtrail.chain_anchors SELECT source, dropped_id + 1000000, dropped_hash, 1, partition \
             FROM pgtrail.chain_anchors LIMIT 1",
        )
        .await
        .unwrap();
    let (code, v) = json_of(&env, &["verify", "--json"]).await;
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("anchors differ"), "{v}");
}
