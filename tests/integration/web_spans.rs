//! The web view's spans of ids per partition (`web::query::spans`) and the readings they bound
//! (`web::log::walk`): a page in time order reads the partitions that can hold its ids, newest
//! ids first, and stops once the page is full; the ids the store holds come from the spans; a
//! window of ids and the time at an id read only the partitions holding them. Each reading is
//! checked against one unbounded statement over every partition, and its scans of partitions
//! counted in its own transaction (`pg_stat_xact_user_tables`), on a store of some two hundred
//! daily partitions with two sources, one of which lags and stores its backlog late into an old
//! partition, and with entries dated before where their source's next ones were expected (a
//! clock stepped back, an event dated in the past), which the spans must find by their count.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use pgtrail::web::log::walk;
use pgtrail::web::query::{pairs, Cursor, LogQuery, Resolved, Scope, SpanBook};
use tokio_postgres::Client;

use crate::harness::*;
use crate::web_partitioned::{partition_scans, raw_entry, record_gap};

/// Daily partitions from 41 to 220 days back (the last 40 days have `with_store`'s months).
async fn daily_partitions(store: &Client) -> i64 {
    store
        .batch_execute(
            "UPDATE pgtrail.settings SET partition = 'day'; \
             SELECT pgtrail.ensure_partition(now() - make_interval(days => g)) FROM generate_series(41, 220) g",
        )
        .await
        .expect("make daily partitions");
    query_value(
        store,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'pgtrail.entries'::regclass",
        &[],
    )
    .await
}

/// The view `raw` (a query string) as every user may see it.
fn view(raw: &str, cursor: Option<i64>) -> LogQuery {
    let mut q = LogQuery::from_pairs(&pairs(Some(raw)).unwrap(), false, Utc::now()).unwrap();
    q.filter.scope = Scope::everything();
    q.cursor = cursor.map(|id| Cursor {
        keys: Vec::new(),
        id,
        backward: false,
    });
    q
}

/// A page of `raw` from `cursor` as the web view reads it (the spans, then the partitions they
/// name, in one snapshot): its ids and the scans of partitions that took; and the ids of one
/// unbounded statement over every partition.
async fn paged(
    store: &Client,
    book: &SpanBook,
    raw: &str,
    cursor: Option<i64>,
) -> (Vec<i64>, i64, Vec<i64>) {
    let q = view(raw, cursor);
    let now = Utc::now();
    let r = q.filter.resolve(store, now).await.unwrap();
    store
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let before = partition_scans(store).await;
    let spans = book.read(store).await.expect("read the spans");
    let rows = walk::page(store, &spans, &q, &r, now)
        .await
        .expect("read the page");
    let scans = partition_scans(store).await - before;
    store.batch_execute("COMMIT").await.unwrap();
    let ps = q.page_sql(&r, now);
    let fresh = store.query(&ps.sql.text, &ps.sql.refs()).await.unwrap();
    let ids = |rows: &[tokio_postgres::Row]| rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>();
    (ids(&rows), scans, ids(&fresh))
}

/// `paged`, checked: the same ids as the unbounded statement, and at most `most` scans.
async fn page_is_bounded(
    store: &Client,
    book: &SpanBook,
    raw: &str,
    cursor: Option<i64>,
    most: i64,
) -> Vec<i64> {
    let (ids, scans, fresh) = paged(store, book, raw, cursor).await;
    assert_eq!(ids, fresh, "{raw} from {cursor:?}");
    assert!(scans <= most, "{raw} from {cursor:?}: {scans} scans");
    ids
}

/// Every page of `raw` (`limit=N` in it), walked by cursor: each the same as an unbounded
/// statement's. All their ids.
async fn every_page(store: &Client, book: &SpanBook, raw: &str) -> Vec<i64> {
    let mut all = Vec::new();
    let mut cursor = None;
    let limit = view(raw, None).limit as usize;
    loop {
        let (ids, _, fresh) = paged(store, book, raw, cursor).await;
        assert_eq!(ids, fresh, "{raw} from {cursor:?}");
        let more = ids.len() > limit;
        all.extend(ids.iter().take(limit));
        if !more {
            return all;
        }
        cursor = Some(ids[limit - 1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_time_order_read_only_the_partitions_that_can_hold_their_ids() {
    let (env, store) = TestEnv::with_store().await;
    let partitions = daily_partitions(&store).await;
    assert!(partitions > 150, "{partitions}");
    // A second source, with a checkpoint as setup registers one.
    store
        .batch_execute(
            "INSERT INTO pgtrail.sources (id, name) VALUES (2, 'shop-us'); \
             INSERT INTO pgtrail.chain_heads (source, hash) VALUES (2, decode(repeat('00', 32), 'hex')); \
             INSERT INTO pgtrail.checkpoints (source, slot, lsn) VALUES (2, 'pgtrail_shop_us', '0/0')",
        )
        .await
        .unwrap();
    let now = Utc::now();
    let days = |d: i64| now - TimeDelta::days(d);
    let minutes = |d: i64, m: i64| days(d) + TimeDelta::minutes(m);
    // The second source lags: its "now" is 120 days back.
    raw_entry(&store, None, 2, "public.skus", r#"{"sku":1}"#, days(120)).await;
    for d in [200, 150, 100, 60] {
        raw_entry(&store, None, 1, "public.orders", r#"{"id":5}"#, days(d)).await;
    }
    // Sixty more partitions with an entry each: partitions that hold entries are no more
    // read than empty ones.
    for d in (0..60).map(|i| 163 - 2 * i) {
        raw_entry(&store, None, 1, "public.old", r#"{"id":1}"#, minutes(d, 30)).await;
    }
    // Eight recent entries in two partitions: a page of five crosses from one to the other.
    for m in 0..4 {
        raw_entry(
            &store,
            None,
            1,
            "public.orders",
            r#"{"id":5}"#,
            minutes(20, m),
        )
        .await;
    }
    for m in 0..4 {
        raw_entry(
            &store,
            None,
            1,
            "public.tags",
            r#"{"tag":1}"#,
            minutes(0, -10 + m),
        )
        .await;
    }

    let book = SpanBook::default();
    // Read afresh: every partition, twice. Then nothing moved: the heads alone and the
    // partitions of the page.
    let (ids, scans, fresh) = paged(&store, &book, "limit=5", None).await;
    assert_eq!(ids, fresh);
    assert!(scans >= partitions, "{scans}");
    let first = page_is_bounded(&store, &book, "limit=5", None, 3).await;
    assert_eq!(first.len(), 6, "a page and one more");
    // The next page reads on in the partitions below, one, two, four at a time; as does a
    // page oldest first.
    page_is_bounded(&store, &book, "limit=5", Some(first[4]), 7).await;
    page_is_bounded(&store, &book, "limit=3&dir=asc", None, 7).await;
    // A row's history with more versions than the page holds: the page fills in the newest
    // partitions that hold the row's ids, and the reading stops there.
    page_is_bounded(&store, &book, "limit=2&table=public.orders&pk=5", None, 3).await;

    // The lagging source catches up, its backlog going into its old partition while the
    // first source goes on: the newest ids are in both, the page reads both.
    let mut backlog = Vec::new();
    for m in 1..=4 {
        backlog.push(
            raw_entry(
                &store,
                None,
                2,
                "public.skus",
                r#"{"sku":777}"#,
                minutes(120, m),
            )
            .await,
        );
        raw_entry(
            &store,
            None,
            1,
            "public.tags",
            r#"{"tag":2}"#,
            minutes(0, m),
        )
        .await;
    }
    let page = page_is_bounded(&store, &book, "limit=5", None, 8).await;
    assert!(
        page.contains(&backlog[3]) && page.contains(&backlog[2]),
        "{page:?}"
    );
    page_is_bounded(&store, &book, "limit=5", None, 3).await;
    page_is_bounded(&store, &book, "limit=3&db=shop-us", None, 7).await;

    // Stored before where its source's next entries were expected (a clock stepped back): the
    // count of the entries read since falls short of what the head grew by, the spans are read
    // afresh, and the entry (the newest id, in a partition of 90 days back) is on the page.
    let stepped = raw_entry(&store, None, 1, "public.orders", r#"{"id":6}"#, days(90)).await;
    let (ids, _, fresh) = paged(&store, &book, "limit=5", None).await;
    assert_eq!((ids[0], &ids), (stepped, &fresh));
    // An event the store's owner dated 70 days back: the same.
    record_gap(&store, days(70), "s1").await;
    let (ids, _, fresh) = paged(&store, &book, "limit=5&events=shown", None).await;
    assert_eq!(ids, fresh);
    assert!(ids[0] > stepped, "{ids:?}");
    // The source's next entry, back at its time: found between the stepped one's time and its
    // checkpoint's (every partition between), and then bounded again.
    let tag = |n: i64| format!(r#"{{"tag":{n}}}"#);
    raw_entry(&store, None, 1, "public.tags", &tag(3), minutes(0, 5)).await;
    let (ids, _, fresh) = paged(&store, &book, "limit=5", None).await;
    assert_eq!(ids, fresh);
    raw_entry(&store, None, 1, "public.tags", &tag(4), minutes(0, 6)).await;
    page_is_bounded(&store, &book, "limit=5", None, 8).await;
    page_is_bounded(&store, &book, "limit=5&events=shown", None, 7).await;

    // Every page, both ways, and of a few filters: as the unbounded statement gives them.
    let all: Vec<i64> = query_column(
        &store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
        &[],
    )
    .await;
    assert_eq!(every_page(&store, &book, "limit=4").await, all);
    let mut oldest_first = all.clone();
    oldest_first.reverse();
    assert_eq!(
        every_page(&store, &book, "limit=4&dir=asc").await,
        oldest_first
    );
    for raw in [
        "limit=2&table=public.skus",
        "limit=3&db=shop-us",
        "limit=2&pk=5&table=public.orders",
    ] {
        every_page(&store, &book, raw).await;
    }
    let last_month = format!(
        "limit=3&from={}",
        minutes(25, 0).format("%Y-%m-%dT%H:%M:%SZ")
    );
    every_page(&store, &book, &last_month).await;

    ids_and_times_come_from_the_spans(&store, &book).await;

    // Through the web view: the same pages, a free-text search that finds the backlog, and
    // its count.
    let web = Web::start(&env).await;
    for raw in [
        "limit=5&action=INSERT",
        "limit=50&action=INSERT",
        "limit=5&table=public.skus",
    ] {
        let (_, _, fresh) = paged(&store, &book, raw, None).await;
        let mut want = fresh;
        want.truncate(view(raw, None).limit as usize);
        assert_eq!(web.ids(raw).await, want, "{raw}");
    }
    let found: Vec<i64> = query_column(
        &store,
        "SELECT id FROM pgtrail.entries WHERE after::text LIKE '%777%' ORDER BY id DESC",
        &[],
    )
    .await;
    assert_eq!(found, sorted_desc(backlog.clone()));
    assert_eq!(web.ids("q=777").await, found);
    assert_eq!(count_text(&web.page("/?q=777").await), "4 entries");
}

/// The ids the store holds, a window's count and the time at an id, as the spans give them and
/// as one unbounded statement does.
async fn ids_and_times_come_from_the_spans(store: &Client, book: &SpanBook) {
    store.batch_execute("BEGIN").await.unwrap();
    let before = partition_scans(store).await;
    let spans = book.read(store).await.unwrap();
    assert_eq!(partition_scans(store).await - before, 0, "nothing moved");
    let (lo, hi): (i64, i64) = {
        let row = store
            .query_one(
                "SELECT coalesce(min(id), 0), coalesce(max(id), 0) + 1 FROM pgtrail.entries",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(spans.range(), (lo, hi));
    store.batch_execute("COMMIT").await.unwrap();
    let q = view("", None);
    let now = Utc::now();
    let r = Resolved::default();
    // Windows of ids across the whole range, each counted in the partitions holding it: those
    // of its three ids and those whose ids straddle them (the lagging source's, a month).
    let mut windows = Vec::new();
    let mut at = lo;
    while at < hi {
        windows.push((at, at + 3));
        at += 3;
    }
    for (lower, upper) in windows {
        let within = spans.holding(lower, upper).unwrap();
        let bounded = q.count_sql(&r, now, (lower, upper), 100, Some(&within));
        let whole = q.count_sql(&r, now, (lower, upper), 100, None);
        store.batch_execute("BEGIN").await.unwrap();
        let before = partition_scans(store).await;
        let n: i64 = query_value(store, &bounded.text, &bounded.refs()).await;
        let scans = partition_scans(store).await - before;
        store.batch_execute("COMMIT").await.unwrap();
        let want: i64 = query_value(store, &whole.text, &whole.refs()).await;
        assert_eq!(n, want, "[{lower}, {upper})");
        assert!(
            scans <= within.len() as i64 && scans <= 6,
            "[{lower}, {upper}): {scans}"
        );
    }
    // The time at every id, both ways, and past either end.
    for id in lo - 1..=hi {
        for up in [true, false] {
            store.batch_execute("BEGIN").await.unwrap();
            let before = partition_scans(store).await;
            let t = walk::time_at(store, &spans, id, up).await.unwrap();
            let scans = partition_scans(store).await - before;
            store.batch_execute("COMMIT").await.unwrap();
            let sql = if up {
                "SELECT committed_at FROM pgtrail.entries WHERE id >= $1 ORDER BY id LIMIT 1"
            } else {
                "SELECT committed_at FROM pgtrail.entries WHERE id < $1 ORDER BY id DESC LIMIT 1"
            };
            let want: Option<DateTime<Utc>> = store
                .query_opt(sql, &[&id])
                .await
                .unwrap()
                .map(|row| row.get(0));
            assert_eq!(t, want, "{id} {up}");
            assert!(scans <= 6, "{id} {up}: {scans}");
        }
    }
}
