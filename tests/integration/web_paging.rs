//! Sorting and keyset paging of the log: every sort in both directions, pages that stay put
//! while entries arrive, Next and Previous on the page, exact counts up to the cap; and the free
//! text search, which stops on time and pages on without skipping a match.

use chrono::{Duration as TimeDelta, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// 23 entries of four tables, with actors, roles and addresses repeating in other rhythms.
fn sort_data() -> Vec<Synth> {
    let actors = [
        Some("mia"),
        None,
        Some("al"),
        Some("zed"),
        None,
        Some("al"),
        Some("bea"),
    ];
    let roles = [
        Some("r1"),
        Some("app"),
        None,
        Some("r2"),
        None,
        Some("r3"),
        Some("r1"),
    ];
    let ips = [
        Some("10.0.0.9"),
        None,
        Some("10.0.0.10"),
        Some("192.168.0.1"),
        Some("::1"),
        None,
        Some("10.0.0.9"),
    ];
    let actions = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];
    let tables = ["public.b", "public.a", "audit.z", "public.a b"];
    let mut data = Vec::new();
    for i in 0..23usize {
        let (schema, table) = tables[i % 4].split_once('.').unwrap();
        let mut s = Synth::new("x.y", actions[(i * 3) % 4])
            .pk(&format!("{{\"id\":{i}}}"))
            .after(&format!("{{\"id\":{i}}}"))
            .who(actors[i % 7], roles[i % 7])
            .from(ips[(i * 2) % 7], None, None)
            .at(Utc::now() - TimeDelta::minutes(100 - i as i64));
        s.schema = schema.into();
        s.table = table.into();
        data.push(s);
    }
    data
}

/// The order a sort must give: its key (as the SQL computes it), then id.
fn sort_key(s: &Synth, sort: &str) -> Vec<String> {
    match sort {
        "time" => vec![],
        "actor" => vec![s.actor.clone().or(s.role.clone()).unwrap_or_default()],
        "ip" => vec![s.ip.clone().unwrap_or_default()],
        "action" => vec![s.action.to_string()],
        "table" => vec![s.schema.clone(), s.table.clone()],
        _ => unreachable!(),
    }
}

/// The ids of the entries `keep` selects, ascending by `sort`.
fn expected_order(
    data: &[Synth],
    ids: &[i64],
    sort: &str,
    keep: impl Fn(&Synth) -> bool,
) -> Vec<i64> {
    let mut want: Vec<(Vec<String>, i64)> = data
        .iter()
        .zip(ids)
        .filter(|(s, _)| keep(s))
        .map(|(s, id)| (sort_key(s, sort), *id))
        .collect();
    want.sort();
    want.into_iter().map(|(_, id)| id).collect()
}

/// Every sort, both ways, walked 4 at a time and on the page; then a sort with a filter.
async fn sorts_walk_in_order(web: &Web, data: &[Synth], ids: &[i64]) {
    for sort in ["time", "actor", "ip", "action", "table"] {
        for dir in ["asc", "desc"] {
            let mut want = expected_order(data, ids, sort, |_| true);
            if dir == "desc" {
                want.reverse();
            }
            let got = web.walk(&format!("sort={sort}&dir={dir}"), 4).await;
            assert_eq!(got, want, "sort={sort}&dir={dir} walked 4 at a time");
            // The page's first rows are the same.
            let html = web.page(&format!("/?sort={sort}&dir={dir}&limit=5")).await;
            assert_eq!(
                row_ids(&html),
                want[..5].to_vec(),
                "page sort={sort}&dir={dir}"
            );
            assert!(html.contains("aria-sort="), "the sorted header is marked");
        }
    }
    // Sort and filter together.
    let got = web.walk("sort=actor&dir=asc&action=INSERT", 2).await;
    let want = expected_order(data, ids, "actor", |s| s.action == "INSERT");
    assert_eq!(got, want);
}

/// Pages of the API across new entries, by time and by actor; the new entries' ids.
async fn pages_are_stable_while_entries_arrive(web: &Web, store: &Client, ids: &[i64]) -> Vec<i64> {
    // Pagination across inserts, newest first: page 2 continues exactly where page 1 ended.
    let first = web.api("/api/v1/entries?limit=5").await;
    let page1 = ids_of(&first);
    assert_eq!(page1, sorted_desc(ids.to_vec())[..5].to_vec());
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let newer = store_entries(
        store,
        &[
            Synth::new("public.a", "INSERT"),
            Synth::new("public.a", "INSERT"),
        ],
    )
    .await;
    let second = web
        .api(&format!("/api/v1/entries?limit=5&cursor={}", enc(&cursor)))
        .await;
    assert_eq!(
        ids_of(&second),
        sorted_desc(ids.to_vec())[5..10].to_vec(),
        "page 2 is unmoved by new entries"
    );
    // And by actor: a new entry sorting before the cursor is not seen again later, one after it is.
    let a1 = web.api("/api/v1/entries?sort=actor&limit=6").await;
    let c = a1["next_cursor"].as_str().unwrap().to_owned();
    let late = store_entries(
        store,
        &[
            Synth::new("public.a", "INSERT").who(Some("aaa"), None),
            Synth::new("public.a", "INSERT").who(Some("zzz"), None),
        ],
    )
    .await;
    let rest = web.walk_from("sort=actor", 6, Some(c)).await;
    let seen: Vec<i64> = ids_of(&a1)
        .into_iter()
        .chain(rest.iter().copied())
        .collect();
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry twice: {seen:?}");
    assert!(
        !rest.contains(&late[0]),
        "an entry sorting before the cursor stays behind it"
    );
    assert!(
        rest.contains(&late[1]),
        "an entry sorting after the cursor shows up"
    );
    assert!(newer.iter().all(|id| seen.contains(id)));
    newer.into_iter().chain(late).collect()
}

/// HTML pages: Next then Previous gives back the same rows.
async fn html_pages_link_back_and_forth(web: &Web) {
    let p1 = web.page("/?limit=5").await;
    let next = link(&p1, "next").expect("a next link");
    let p2 = web.page(&next).await;
    assert_eq!(row_ids(&p2).len(), 5);
    assert!(row_ids(&p2).iter().all(|id| !row_ids(&p1).contains(id)));
    let prev = link(&p2, "prev").expect("a previous link");
    let back = web.page(&prev).await;
    assert_eq!(
        row_ids(&back),
        row_ids(&p1),
        "previous page of page 2 is page 1"
    );
    assert!(
        link(&p1, "prev").is_none(),
        "the first page has no previous page"
    );
    let p3 = web.page(&link(&p2, "next").unwrap()).await;
    let back2 = web.page(&link(&p3, "prev").unwrap()).await;
    assert_eq!(
        row_ids(&back2),
        row_ids(&p2),
        "previous of page 3 is page 2"
    );
}

/// Counts: exact, then "more than" past the cap.
async fn counts_are_exact_then_capped(web: &Web, store: &Client, total: usize) {
    assert_eq!(count_text(&web.page("/").await), format!("{total} entries"));
    // With the row_key the daemon writes for every entry with a key.
    let bulk = pgtrail::table::TableName::new("bulk", "t");
    let row_keys: Vec<i64> = (1..=10050)
        .map(|g| pgtrail::entry::row_key(&bulk, &format!("{{\"id\":{g}}}")))
        .collect();
    store
        .execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, context, row_key, source) \
             SELECT now(), 5, '0/1'::pg_lsn, 'bulk', 't', 'INSERT', format('{\"id\":%s}', g)::json, format('{\"id\":%s}', g)::json, \
             '{}'::json, k, 1 FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, g)",
            &[&row_keys],
        )
        .await
        .unwrap();
    count_in_chain(store, row_keys.len() as i64).await;
    assert_eq!(count_text(&web.page("/").await), "more than 10,000 entries");
    assert_eq!(
        count_text(&web.page("/?table=bulk.t&pk=77").await),
        "1 entry"
    );
    let walked = web.walk("table=bulk.t", 500).await;
    assert_eq!(
        walked.len(),
        10050,
        "walking 21 pages of 500 sees every entry once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sorts_and_keyset_pages_stay_stable_while_entries_arrive() {
    let (_env, store, web) = store_and_web().await;
    let data = sort_data();
    let ids = store_entries(&store, &data).await;
    sorts_walk_in_order(&web, &data, &ids).await;
    let added = pages_are_stable_while_entries_arrive(&web, &store, &ids).await;
    html_pages_link_back_and_forth(&web).await;
    counts_are_exact_then_capped(&web, &store, ids.len() + added.len()).await;
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_free_text_search_stops_on_time_and_pages_on_without_skipping() {
    let (env, store) = TestEnv::with_store().await;
    // Entries far apart in id: a search page reads id windows of 20,000 at
    // first, so with no time to spare (PGTRAIL_WEB_SEARCH_MS=0) each page reads
    // exactly one window, and some windows hold no match at all.
    let ids: [i64; 7] = [3, 20_010, 45_000, 45_001, 90_000, 130_000, 131_000];
    let needle = [true, true, false, true, true, false, true];
    for (i, id) in ids.iter().enumerate() {
        let note = if needle[i] {
            format!("the Needle number {i}")
        } else {
            "hay".to_owned()
        };
        store
            .execute(
                "INSERT INTO pgtrail.entries (id, committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, after, context, source) \
                 VALUES ($1::bigint, now() - make_interval(mins => $2), $3, '0/1', 'public', 'notes', 'INSERT', \
                 json_build_object('id', $1::bigint), json_build_object('id', $1::bigint, 'note', $4::text), '{}', 1)",
                &[id, &(10 - i as i32), &(id + 100), &note],
            )
            .await
            .unwrap();
    }
    let mut matching: Vec<i64> = ids
        .iter()
        .zip(needle)
        .filter(|(_, n)| *n)
        .map(|(id, _)| *id)
        .collect();
    matching.reverse();

    let web = Web::start_with_env(&env, &[("PGTRAIL_WEB_SEARCH_MS", "0")]).await;
    let first = web.api("/api/v1/entries?q=needle").await;
    assert_eq!(ids_of(&first), vec![131_000], "one window: {first}");
    assert!(
        first["next_cursor"].is_string(),
        "the search goes on: {first}"
    );
    // Following the cursors finds every match once, in order, either way.
    assert_eq!(web.walk("q=needle", 50).await, matching);
    assert_eq!(web.walk("q=needle", 1).await, matching);
    let mut ascending = matching.clone();
    ascending.reverse();
    assert_eq!(web.walk("q=needle&dir=asc", 50).await, ascending);
    // A time filter applies within the windows: only the matches committed after it, every one.
    // Between the stored times of 45,001 (7 min ago) and 90,000 (6 min ago),
    // read from the store: a bound taken from the clock now would drift with
    // the time the steps above took on a slow machine.
    let from: chrono::DateTime<Utc> = store
        .query_one(
            "SELECT committed_at + interval '30 seconds' FROM pgtrail.entries WHERE id = 45001",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let from = from.to_rfc3339();
    let time_bounded = web.walk(&format!("q=needle&from={}", enc(&from)), 2).await;
    assert_eq!(time_bounded, vec![131_000, 90_000], "from {from}");
    let until = web.walk(&format!("q=needle&to={}", enc(&from)), 2).await;
    assert_eq!(until, vec![45_001, 20_010, 3], "to {from}");

    // The page says that it stopped, up to when it searched, and links on;
    // pages between matches say that nothing matched yet.
    let mut html = web.page("/?q=needle").await;
    let mut shown = Vec::new();
    let mut empty_pages = 0;
    for _ in 0..20 {
        shown.extend(row_ids(&html));
        if html.contains("No matches yet.") {
            empty_pages += 1;
        }
        match link(&html, "next") {
            Some(next) => {
                assert!(html.contains("id=\"search-stopped\""), "{html}");
                assert!(html.contains("Search further"), "{html}");
                html = web.page(&next).await;
            }
            None => break,
        }
    }
    assert_eq!(shown, matching);
    assert!(empty_pages >= 2, "windows without a match make empty pages");
    // Back from an empty page: the page before it.
    let p1 = web.page("/?q=needle").await;
    let p2 = web.page(&link(&p1, "next").unwrap()).await;
    assert!(row_ids(&p2).is_empty() && p2.contains("No matches yet."));
    let back = web.page(&link(&p2, "prev").unwrap()).await;
    assert_eq!(row_ids(&back), vec![131_000]);

    // With a budget to spare the few ids are read at once: one page, no
    // cursor. (A minute, not the default 250 ms, which a loaded machine can
    // spend on a few windows.)
    let web = Web::start_with_env(&env, &[("PGTRAIL_WEB_SEARCH_MS", "60000")]).await;
    let all = web.api("/api/v1/entries?q=needle").await;
    assert_eq!(ids_of(&all), matching);
    assert_eq!(all["next_cursor"], Value::Null);
    let html = web.page("/?q=needle").await;
    assert!(!html.contains("search-stopped"));
}
