//! What the web view keeps between requests on a store of several time partitions, so that a
//! request where nothing moved reads no partition: the audit gaps (read again when the events
//! chain's head moves) and the book of the tables' keys (brought up to date from the entries
//! stored since, by id; read afresh when their count does not add up to what the chain heads
//! grew by). Each is checked against a fresh reading, over entries and events in old and new
//! partitions, with a second source, and with an entry stored below every id the book had read
//! (a source catching up); and structurally, by the scans of the partitions a reading makes in
//! its own transaction (`pg_stat_xact_user_tables`).

use chrono::{DateTime, Duration as TimeDelta, Utc};
use pgtrail::store::gaps;
use pgtrail::table::TableName;
use pgtrail::web::query::keys::{key_columns, tables_with_keys};
use pgtrail::web::query::KeyBook;
use tokio_postgres::Client;

use crate::harness::*;

/// Partitions for a year and a half back, beyond the 40 days `with_store` makes.
async fn old_partitions(store: &Client) {
    store
        .batch_execute(
            "SELECT pgtrail.ensure_partition(now() - make_interval(days => g)) \
             FROM generate_series(50, 550, 25) g",
        )
        .await
        .expect("make partitions for old periods");
}

/// How many scans (sequential or by index) of the entries' partitions this session has made
/// since its statistics were last flushed (never within a transaction block): the difference
/// of two readings in one transaction is what happened between them.
async fn partition_scans(store: &Client) -> i64 {
    query_value(
        store,
        "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint \
         FROM pg_stat_xact_user_tables WHERE schemaname = 'pgtrail' AND relname LIKE 'entries_p%'",
        &[],
    )
    .await
}

/// A `slot_lost` gap event at `at` for slot `slot`, through record_event as the store's owner
/// (whose events may be dated any time), as `pgtrail run` records one.
async fn record_gap(store: &Client, at: DateTime<Utc>, slot: &str) {
    store
        .execute(
            "SELECT pgtrail.record_event($1, 'gap', NULL, NULL, NULL, NULL, '{\"source\": \"pgtrail\"}', \
             json_build_object('event', 'slot_lost', 'slot', $2::text, 'found', 'the slot was invalidated', \
             'last_stored_lsn', '0/10', 'last_stored_commit', \
             to_char(($1::timestamptz - interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), \
             NULL, NULL, sha256($2::text::bytea))",
            &[&at, &slot],
        )
        .await
        .expect("record a gap event");
}

/// The gaps as `cache` gives them, and the scans of partitions that took, in a transaction of
/// its own.
async fn read_gaps(store: &Client, cache: &gaps::Cache) -> (Vec<gaps::Gap>, i64) {
    store.batch_execute("BEGIN").await.unwrap();
    let before = partition_scans(store).await;
    let gaps = cache.list(store).await.expect("read the gaps");
    let scans = partition_scans(store).await - before;
    store.batch_execute("COMMIT").await.unwrap();
    (gaps, scans)
}

/// The log page's gap rows.
fn gap_rows(html: &str) -> usize {
    html.match_indices("<tr ")
        .filter(|(i, _)| html[*i..*i + html[*i..].find('>').unwrap()].contains("class=\"gap\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_read_again_only_when_the_events_chain_moves() {
    let (env, store) = TestEnv::with_store().await;
    old_partitions(&store).await;
    let now = Utc::now();
    let days = |d: i64| now - TimeDelta::days(d);
    let row = |d: i64| {
        Synth::new("public.t", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1}"#)
            .at(days(d))
    };
    store_entries(&store, &[row(400), row(200)]).await;
    record_gap(&store, days(300), "s1").await;
    store_entries(&store, &[row(20), row(0)]).await;

    let cache = gaps::Cache::default();
    let (first, scans) = read_gaps(&store, &cache).await;
    assert_eq!(first, gaps::list(&store).await.unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(scans > 0, "the first reading reads the partitions");
    let (again, scans) = read_gaps(&store, &cache).await;
    assert_eq!((again, scans), (first.clone(), 0), "the head did not move");
    // A capture source's entries do not move the events chain.
    store_entries(&store, &[row(0)]).await;
    assert_eq!(read_gaps(&store, &cache).await, (first.clone(), 0));

    // A new gap, in an old partition: read again, as a fresh reading has it.
    record_gap(&store, days(100), "s2").await;
    let (second, scans) = read_gaps(&store, &cache).await;
    assert_eq!(second, gaps::list(&store).await.unwrap());
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(scans > 0);

    // The log page of a running web view: each gap where it lies, and one recorded while it
    // runs on the next page read, after any event (a sign-in) moved the head in between.
    let web = Web::start(&env).await;
    assert_eq!(gap_rows(&web.page("/").await), 2);
    assert_eq!(gap_rows(&web.page("/").await), 2);
    record_gap(&store, days(0), "s3").await;
    assert_eq!(gap_rows(&web.page("/").await), 3);
}

/// The book's tables and keys, and a fresh reading's, with the tables without keys left out,
/// in one order: the same set.
async fn both_readings(store: &Client, book: &KeyBook) -> (Vec<String>, Vec<String>) {
    let show = |found: Vec<(TableName, Option<Vec<String>>)>| {
        let mut v: Vec<String> = found
            .into_iter()
            .filter_map(|(t, k)| k.map(|k| format!("{}.{} {}", t.schema, t.name, k.join(","))))
            .collect();
        v.sort();
        v
    };
    let fresh = tables_with_keys(store, None, &[], None).await.unwrap();
    let booked = tables_with_keys(store, None, &[], Some(book))
        .await
        .unwrap();
    (show(booked), show(fresh))
}

/// An entry of source `source` (its id) straight into the store, counted in its chain head;
/// with an explicit `id` when given, as a source catching up can store below ids read before.
async fn raw_entry(
    store: &Client,
    id: Option<i64>,
    source: i16,
    table: &str,
    pk: &str,
    at: DateTime<Utc>,
) {
    let (schema, name) = table.split_once('.').unwrap();
    let row_key = pgtrail::entry::row_key(&TableName::new(schema, name), pk);
    store
        .execute(
            "INSERT INTO pgtrail.entries (id, committed_at, xid, lsn, schema_name, table_name, action, \
             primary_key, after, context, row_key, source) \
             VALUES (coalesce($1, nextval('pgtrail.entries_id_seq')), $2, 9, '0/9', $3, $4, 'INSERT', \
                     $5::text::json, $5::text::json, '{}', $6, $7)",
            &[&id, &at, &schema, &name, &pk, &row_key, &source],
        )
        .await
        .expect("store an entry");
    store
        .execute(
            "UPDATE pgtrail.chain_heads SET entries = entries + 1 WHERE source = $1",
            &[&source],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_book_of_keys_follows_the_chain_heads_and_counts_what_it_reads() {
    let (env, store) = TestEnv::with_store().await;
    old_partitions(&store).await;
    // Ids from 1,000 on, so that an entry can later be stored below every one read.
    store
        .batch_execute(
            "SELECT setval('pgtrail.entries_id_seq', 1000); \
             INSERT INTO pgtrail.sources (id, name) VALUES (2, 'shop-us'); \
             INSERT INTO pgtrail.chain_heads (source, hash) VALUES (2, decode(repeat('00', 32), 'hex'))",
        )
        .await
        .unwrap();
    let first: String =
        query_value(&store, "SELECT name FROM pgtrail.sources WHERE id = 1", &[]).await;
    let now = Utc::now();
    let days = |d: i64| now - TimeDelta::days(d);
    raw_entry(&store, None, 1, "public.orders", r#"{"id":5}"#, days(400)).await;
    raw_entry(&store, None, 1, "public.tags", r#"{"code":"5"}"#, days(200)).await;
    raw_entry(
        &store,
        None,
        2,
        "public.us_only",
        r#"{"sku":"5"}"#,
        days(100),
    )
    .await;
    raw_entry(&store, None, 1, "public.orders", r#"{"id":6}"#, days(0)).await;

    let book = KeyBook::default();
    let (booked, fresh) = both_readings(&store, &book).await;
    assert_eq!(booked, fresh);
    assert_eq!(
        booked,
        ["public.orders id", "public.tags code", "public.us_only sku"]
    );
    // Each source's own keys: a table the first source never had has none of its keys.
    let us_only = TableName::new("public", "us_only");
    for dbs in [vec![first.clone()], vec!["shop-us".to_owned()], Vec::new()] {
        assert_eq!(
            key_columns(&store, &us_only, &dbs, Some(&book))
                .await
                .unwrap(),
            key_columns(&store, &us_only, &dbs, None).await.unwrap(),
            "{dbs:?}"
        );
    }
    assert!(
        key_columns(&store, &us_only, std::slice::from_ref(&first), Some(&book))
            .await
            .unwrap()
            .is_empty()
    );

    // Nothing stored since: the book is read from the heads alone, no partition.
    store.batch_execute("BEGIN").await.unwrap();
    let before = partition_scans(&store).await;
    book.read(&store).await.unwrap();
    assert_eq!(partition_scans(&store).await - before, 0, "nothing moved");
    store.batch_execute("COMMIT").await.unwrap();

    // New tables of both sources, in new and old partitions: taken from the entries since.
    raw_entry(&store, None, 2, "public.skus", r#"{"sku":"5"}"#, days(0)).await;
    raw_entry(&store, None, 1, "public.late", r#"{"n":5}"#, days(300)).await;
    let (booked, fresh) = both_readings(&store, &book).await;
    assert_eq!(booked, fresh);
    assert!(
        booked.contains(&"public.late n".to_owned())
            && booked.contains(&"public.skus sku".to_owned())
    );
    // A table keyed anew: its newest key.
    raw_entry(&store, None, 1, "public.tags", r#"{"tag":"5"}"#, days(0)).await;
    let (booked, fresh) = both_readings(&store, &book).await;
    assert_eq!(booked, fresh);
    assert!(booked.contains(&"public.tags tag".to_owned()), "{booked:?}");

    // Stored below every id the book has read (a source's transaction that took its ids long
    // ago): the count above the marks falls short of what the head grew by, and the book is
    // read afresh, so the table is found.
    raw_entry(
        &store,
        Some(500),
        1,
        "public.below",
        r#"{"id":5}"#,
        days(30),
    )
    .await;
    let (booked, fresh) = both_readings(&store, &book).await;
    assert_eq!(booked, fresh);
    assert!(booked.contains(&"public.below id".to_owned()), "{booked:?}");

    // Through the web view: `pk=5` alone finds the value in every table it is a key of, in
    // every partition and source, and a table stored while it runs.
    let web = Web::start(&env).await;
    // Not the tags' entry keyed by `code`: the table's key is `tag` now.
    let want: Vec<i64> = query_value(
        &store,
        "SELECT array_agg(id ORDER BY id DESC) FROM pgtrail.entries \
         WHERE primary_key::text IN ('{\"id\":5}', '{\"sku\":\"5\"}', '{\"n\":5}', '{\"tag\":\"5\"}')",
        &[],
    )
    .await;
    assert_eq!(want.len(), 6, "{want:?}");
    assert_eq!(web.ids("pk=5").await, want);
    raw_entry(&store, None, 2, "public.newest", r#"{"code":5}"#, days(0)).await;
    let newest: i64 = query_value(&store, "SELECT max(id) FROM pgtrail.entries", &[]).await;
    let mut more = vec![newest];
    more.extend(&want);
    assert_eq!(web.ids("pk=5").await, more);
    assert_eq!(web.ids("pk=5&table=public.newest").await, vec![newest]);
    assert_eq!(
        web.ids("pk=5&db=shop-us").await.len(),
        3,
        "us_only, skus and newest"
    );
}
