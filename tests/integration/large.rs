//! One 1,000,000-row transaction (`INSERT … SELECT generate_series`): every row stored exactly
//! once, with the right content, while the daemon's peak resident memory (VmHWM) stays under
//! 200 MB — it must stream a large transaction, not hold it.

use std::time::{Duration, Instant};

use crate::harness::*;

const ROWS: i64 = 1_000_000;
/// 200 MB, in the KiB that /proc reports.
const RSS_LIMIT_KIB: u64 = 200_000_000 / 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_in_bounded_memory() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)").await;

    let started = Instant::now();
    src.batch_execute(&format!(
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
    ))
    .await
    .unwrap();
    let committed = started.elapsed();
    sync_via(&src, &env.trail.config.store_url, Duration::from_secs(480)).await;
    let stored = started.elapsed();
    daemon.assert_running();
    let peak = daemon.peak_rss_kib();
    eprintln!("1M rows: source commit after {committed:?}, stored after {stored:?}, daemon VmHWM {peak} KiB");

    let store = env.store().await;
    assert_counts(&store, "public", "big", Counts::new(ROWS, 0, 0, 0)).await;
    let row = store
        .query_one(
            "SELECT count(DISTINCT xid), count(DISTINCT lsn), count(DISTINCT primary_key->>'id'), \
                    min((primary_key->>'id')::int), max((primary_key->>'id')::int), \
                    md5(string_agg(after->>'payload', ',' ORDER BY (after->>'id')::int)) \
             FROM pgtrail.entries WHERE schema_name = 'public' AND table_name = 'big'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "one transaction");
    assert_eq!(row.get::<_, i64>(1), 1, "one commit LSN");
    assert_eq!(row.get::<_, i64>(2), ROWS, "distinct keys");
    assert_eq!(
        (row.get::<_, i32>(3), row.get::<_, i32>(4)),
        (1, ROWS as i32)
    );
    let source_md5: String = src
        .query_one(
            "SELECT md5(string_agg(payload, ',' ORDER BY id)) FROM big",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        row.get::<_, String>(5),
        source_md5,
        "payloads in the store equal the source's"
    );

    assert!(
        peak < RSS_LIMIT_KIB,
        "daemon peak RSS {peak} KiB, limit {RSS_LIMIT_KIB} KiB (200 MB)"
    );
    daemon.terminate().await;
}
