//! Side rows (undecodable records) past their bound inside one source transaction: the writer
//! ends its COPY, inserts them, and opens a new COPY, all in one store transaction. The second
//! COPY must start with its own binary header; every entry is stored once and the chain holds.

use pgtrail::store::quarantine::SIDE_ROWS;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_rows_past_their_bound_end_the_copy_and_the_next_one_opens_whole() {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    // Setup's role holds the message key, so its signature is good and only the content is bad:
    // each such message is an undecodable record, kept as a side row of the transaction.
    let bad = SIDE_ROWS + 100;
    src.batch_execute(&format!(
        "BEGIN; INSERT INTO t SELECT g, 'before' FROM generate_series(1, 50) g; COMMIT;
         BEGIN;
           INSERT INTO t SELECT g, 'first half' FROM generate_series(51, 100) g;
           SELECT pgtrail.emit_signed('pgtrail', '{{not json') FROM generate_series(1, {bad});
           INSERT INTO t SELECT g, 'second half' FROM generate_series(101, 150) g;
           UPDATE t SET v = 'updated' WHERE id <= 10;
         COMMIT;
         BEGIN; INSERT INTO t SELECT g, 'after' FROM generate_series(151, 200) g; COMMIT;"
    ))
    .await
    .unwrap();
    env.sync().await;
    daemon.assert_running();

    let store = env.store().await;
    // What the source holds, inserted once each, and the ten updates.
    let stored: Vec<(String, String)> = query_pairs(
        &store,
        "SELECT action, primary_key->>'id' FROM pgtrail.entries \
         WHERE table_name = 't' ORDER BY id",
        &[],
    )
    .await;
    let mut expected: Vec<(String, String)> = (1..=150)
        .map(|i| ("INSERT".to_owned(), i.to_string()))
        .collect();
    expected.extend((1..=10).map(|i| ("UPDATE".to_owned(), i.to_string())));
    expected.extend((151..=200).map(|i| ("INSERT".to_owned(), i.to_string())));
    assert_eq!(stored, expected, "{}", daemon.log());
    let after: Vec<String> = query_column(
        &store,
        "SELECT after->>'v' FROM pgtrail.entries WHERE table_name = 't' AND action = 'INSERT' \
         AND (primary_key->>'id')::int BETWEEN 99 AND 102 ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(
        after,
        ["first half", "first half", "second half", "second half"]
    );

    // Every bad message is kept once, with its error.
    let errors = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.decode_errors \
         WHERE error LIKE 'pgtrail message:%' AND record LIKE '%not json%'",
    )
    .await;
    assert_eq!(errors, bad as i64);
    daemon.terminate().await;

    // The chain, read back from the store, holds every entry in order.
    let out = env.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
}
