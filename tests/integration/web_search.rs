//! The log page as an investigation tool: the search box (the same URL and rows as the form, every
//! key, errors that point at the term), pgtrail's own events hidden unless asked for, the facets
//! and the timeline (their counts against direct SQL on the store, every link narrowing to rows
//! that match), and free-text matches highlighted, escaped.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use reqwest::StatusCode;
use tokio_postgres::Client;

use crate::harness::*;
use crate::web_filters::filter_data;

/// The filter tests' ten entries, then two of pgtrail's own events and a row holding markup.
fn search_data(now: DateTime<Utc>) -> Vec<Synth> {
    let mut data = filter_data(now);
    let s = |secs: i64| now - TimeDelta::seconds(secs);
    data.extend([
        // 10, 11: events, as pgtrail records them.
        Synth::new("pgtrail.session", "EVENT")
            .pk(r#"{"id":"s1"}"#)
            .after(r#"{"event":"signed_in","user":"demo"}"#)
            .at(s(90))
            .who(Some("demo"), Some("pgtrail"))
            .from(Some("127.0.0.1"), Some("pgtrail web"), Some("pgtrail")),
        Synth::new("pgtrail.export", "EVENT")
            .pk(r#"{"id":"x1"}"#)
            .after(r#"{"event":"export","rows":3}"#)
            .at(s(80))
            .who(Some("demo"), Some("pgtrail"))
            .from(Some("127.0.0.1"), Some("pgtrail web"), Some("pgtrail")),
        // 12: a value with markup in it.
        Synth::new("public.notes", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"body":"<script>alert(1)</script> to Berlin"}"#)
            .at(s(70))
            .who(Some("eve"), Some("app_rw"))
            .from(Some("10.9.9.9"), Some("notes"), Some("web")),
    ]);
    data
}

/// A client that does not follow redirects, to read where the search box sends.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Decoded, non-empty parameters of a URL or query string, sorted.
fn params_of(url: &str) -> BTreeSet<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The form's query string as a browser sends it: every field, the empty ones too.
fn as_form(query: &str) -> String {
    let given = params_of(&format!("?{query}"));
    let mut out = query.to_owned();
    for name in [
        "actor", "role", "ip", "app", "source", "pk", "q", "last", "from", "to",
    ] {
        if !given.iter().any(|(n, _)| n == name) {
            out.push_str(&format!("&{name}="));
        }
    }
    out.push_str("&table=");
    out
}

/// Box lines, the form's parameters that mean the same, and the entries they select.
fn box_cases(now: DateTime<Utc>) -> Vec<(String, String, Vec<usize>)> {
    let at = |days: i64| {
        (now - TimeDelta::days(days))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let c = |line: &str, form: &str, which: &[usize]| {
        (line.to_owned(), form.to_owned(), which.to_vec())
    };
    vec![
        c("", "", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12]),
        c("action:DELETE", "action=DELETE", &[2]),
        c(
            "action:insert,delete",
            "action=INSERT&action=DELETE",
            &[0, 2, 3, 5, 6, 7, 9, 12],
        ),
        c(
            "table:public.orders table:public.customers",
            "table=public.orders&table=public.customers",
            &[0, 1, 2, 3, 4, 7, 8],
        ),
        c(
            "table:\"sales.Order Items\"",
            "table=sales.Order+Items",
            &[5],
        ),
        c("actor:alice", "actor=alice", &[0, 3]),
        c("role:app_rw", "role=app_rw", &[0, 1, 4, 7, 12]),
        c("ip:10.0.0.0/8", "ip=10.0.0.0%2F8", &[0, 1, 7, 12]),
        c("app:crm", "app=crm", &[3, 4]),
        c("source:web", "source=web", &[0, 3, 7, 12]),
        c("pk:5", "pk=5", &[6, 7]),
        c(
            "pk:{\"id\":1} table:public.orders",
            "table=public.orders&pk=%7B%22id%22%3A1%7D",
            &[0, 1],
        ),
        c(
            &format!("after:{}", at(4)),
            &format!("from={}", enc(&at(4))),
            &[2, 3, 4, 5, 6, 7, 8, 9, 12],
        ),
        c(
            &format!("before:{}", at(4)),
            &format!("to={}", enc(&at(4))),
            &[0, 1],
        ),
        c(
            &format!("from:{} to:{}", at(6), at(1)),
            &format!("from={}&to={}", enc(&at(6)), enc(&at(1))),
            &[1, 2, 3],
        ),
        c("last:1h", "last=1h", &[4, 5, 6, 7, 8, 9, 12]),
        c("berlin", "q=berlin", &[0, 1, 12]),
        c("\"deliver to\" actor:bob", "actor=bob&q=deliver+to", &[1]),
        c("q:lovelace", "q=lovelace", &[4]),
        c(
            "events:shown source:pgtrail",
            "source=pgtrail&events=shown",
            &[10, 11],
        ),
        c("is:event", "action=EVENT", &[10, 11]),
        c(
            "Actor:alice action:INSERT source:web",
            "action=INSERT&actor=alice&source=web",
            &[0, 3],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_search_box_and_form_give_the_same_url_and_rows() {
    let (_env, store, web) = store_and_web().await;
    let now = Utc::now();
    let ids = store_entries(&store, &search_data(now)).await;
    let http = no_redirects();
    for (line, form, which) in box_cases(now) {
        let want = sorted_desc(pick(&ids, &which));
        // The box: a redirect to the parameters the form sets, keeping the order.
        let resp = http
            .get(web.url(&format!("/?search={}&sort=actor&dir=desc", enc(&line))))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{line}");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let mut expected = params_of(&format!("?{form}"));
        expected.insert(("sort".into(), "actor".into()));
        expected.insert(("dir".into(), "desc".into()));
        assert_eq!(params_of(&location), expected, "{line} -> {location}");
        // The same rows as the form's URL, which carries every field, empty or not.
        let by_form = web.page(&format!("/?{}", as_form(form.as_str()))).await;
        let by_box = web.page(&location.replace("sort=actor&dir=desc", "")).await;
        assert_eq!(row_ids(&by_form), want, "form {form}");
        assert_eq!(row_ids(&by_box), want, "box {line}");
        // The box shows the view's filters as a line that reads back the same.
        let shown = box_value(&by_form);
        let again = http
            .get(web.url(&format!("/?search={}", enc(&shown))))
            .send()
            .await
            .unwrap();
        let back = again.headers()["location"].to_str().unwrap();
        assert_eq!(
            row_ids(&web.page(back).await),
            want,
            "{form}: the box said {shown:?}"
        );
        // The API reads the line too; unlike the page it lists events unless asked not to.
        if !line.contains("event") {
            let api = format!("search={}&events=hidden", enc(&line));
            assert_eq!(web.ids(&api).await, want, "API {line}");
        }
    }
    web.assert_quiet();
}

/// The search box's value on a page.
fn box_value(html: &str) -> String {
    let at = html.find("name=\"search\" value=\"").expect("a search box") + 21;
    unescape(&html[at..at + html[at..].find('"').unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_search_mistakes_are_400s_that_point_at_the_term() {
    let (_env, store, web) = store_and_web().await;
    store_entries(&store, &search_data(Utc::now())).await;
    for (line, says) in [
        (
            "table:public.orders actr:alice",
            "at character 21 (\"actr:alice\"): unknown key \"actr\"",
        ),
        (
            "actor:alice ip:example.com",
            "at character 13 (\"ip:example.com\"): ip: \"example.com\" is not an IP address",
        ),
        ("action:DELETE \"lost parcel", "at character 15"),
        ("actor:a actor:b", "as the term at character 1"),
        ("last:3w", "last: \"3w\" is not a range"),
        ("is:open", "is: takes only event"),
        ("role:", "role: has no value"),
    ] {
        let (status, _, body) = web.fetch(&format!("/?search={}", enc(line))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{line}");
        assert!(
            unescape(&body).contains(&format!("search: {says}")) || unescape(&body).contains(says),
            "{line}:\n{body}"
        );
        let (status, _, body) = web
            .fetch(&format!("/api/v1/entries?search={}", enc(line)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "API {line}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "API {line}: {body}"
        );
    }
    // Also as the other parameters' duplicate, and twice.
    let (status, _, body) = web.fetch("/?search=actor%3Aa&actor=b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("more than once"), "{body}");
    web.assert_quiet();
}

/// A facet's values on a page: label -> (count text, link).
fn facet(html: &str, name: &str) -> BTreeMap<String, (String, Option<String>)> {
    let start = html
        .find(&format!("<section class=\"facet\" aria-label=\"{name}\">"))
        .unwrap_or_else(|| panic!("no facet {name} in:\n{html}"));
    let section = &html[start..start + html[start..].find("</section>").unwrap()];
    section
        .split("<li>")
        .skip(1)
        .map(|li| {
            let li = &li[..li.find("</li>").unwrap()];
            let link = li
                .strip_prefix("<a href=\"")
                .map(|r| unescape(&r[..r.find('"').unwrap()]));
            let label_end = li.find("</a>").or_else(|| li.find("</span>")).unwrap();
            let label = unescape(&li[li[..label_end].rfind('>').unwrap() + 1..label_end]);
            let n = li.rfind("<span class=\"n\">").unwrap() + 16;
            let count = unescape(&li[n..n + li[n..].find('<').unwrap()]);
            (label, (count, link))
        })
        .collect()
}

/// The timeline's bars that link somewhere: (link, count).
fn bars(html: &str) -> Vec<(String, i64)> {
    let start = html.find("<figure class=\"timeline\"").expect("a timeline");
    let fig = &html[start..start + html[start..].find("</figure>").unwrap()];
    fig.split("<a href=\"")
        .skip(1)
        .map(|a| {
            let url = unescape(&a[..a.find('"').unwrap()]);
            let label = unescape(&a[a.find("aria-label=\"").unwrap() + 12..a.find("\">").unwrap()]);
            let n = label
                .rsplit(": ")
                .next()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .replace(',', "");
            (url, n.parse().unwrap_or(0))
        })
        .collect()
}

/// Each facet's expression in SQL, and how the page labels its values.
const FACETS: [(&str, &str); 4] = [
    ("Action", "action"),
    ("Table", "schema_name || '.' || CASE WHEN table_name LIKE '%.%' THEN '\"' || table_name || '\"' ELSE table_name END"),
    ("Actor", "coalesce(nullif(coalesce(actor, ''), ''), 'none recorded')"),
    ("Source", "coalesce(context->>'source', 'none recorded')"),
];

/// Every facet of the page for `query` counts what SQL counts with `sql_where`; every link
/// narrows to exactly that many rows, all holding the value; the bars add up to the matches.
async fn check_facets(web: &Web, store: &Client, query: &str, sql_where: &str) {
    let html = breakdown_of(web, query).await;
    assert!(
        !html.contains("id=\"facets-stopped\""),
        "{query}: counted in full"
    );
    let mut total = 0;
    for (name, expr) in FACETS {
        let want: BTreeMap<String, i64> = query_pairs::<String, i64>(
            store,
            &format!("SELECT {expr}, count(*) FROM pgtrail.entries WHERE {sql_where} GROUP BY 1"),
            &[],
        )
        .await
        .into_iter()
        .collect();
        let got = facet(&html, name);
        let counts: BTreeMap<String, i64> = got
            .iter()
            .map(|(k, (n, _))| (k.clone(), n.parse().unwrap()))
            .collect();
        assert_eq!(counts, want, "{query}: facet {name}");
        total = want.values().sum();
        for (label, (n, link)) in &got {
            let Some(link) = link else { continue };
            let rows = row_ids(&web.page(link).await);
            assert_eq!(
                rows.len().to_string(),
                *n,
                "{query}: {name} {label} -> {link}"
            );
            let off: i64 = query_value(
                store,
                &format!("SELECT count(*) FROM pgtrail.entries WHERE id = ANY($1) AND ({expr} <> $2 OR NOT ({sql_where}))"),
                &[&rows, label],
            )
            .await;
            assert_eq!(
                off, 0,
                "{query}: {name} {label} -> {link} holds rows without it"
            );
        }
    }
    let bars = bars(&html);
    assert_eq!(
        bars.iter().map(|b| b.1).sum::<i64>(),
        total,
        "{query}: the bars add up"
    );
    for (link, n) in bars {
        assert_eq!(
            row_ids(&web.page(&link).await).len() as i64,
            n,
            "{query}: bar {link}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_facets_and_timeline_count_what_the_store_holds() {
    let (_env, store, web) = store_and_web().await;
    store_entries(&store, &search_data(Utc::now())).await;
    for (query, sql_where) in [
        ("", "action <> 'EVENT'"),
        ("events=shown", "true"),
        (
            "table=public.orders",
            "schema_name = 'public' AND table_name = 'orders'",
        ),
        ("actor=alice", "actor = 'alice' AND action <> 'EVENT'"),
        (
            "q=berlin",
            "(before::text ILIKE '%berlin%' OR after::text ILIKE '%berlin%') AND action <> 'EVENT'",
        ),
        (
            "last=7d",
            "committed_at > now() - interval '7 days' AND action <> 'EVENT'",
        ),
        ("action=EVENT", "action = 'EVENT'"),
    ] {
        check_facets(&web, &store, query, sql_where).await;
    }
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_facets_cut_short_say_so_and_the_entries_stay() {
    let (env, store) = TestEnv::with_store().await;
    let web = Web::start_with_env(&env, &[("PGTRAIL_WEB_FACETS_MS", "0")]).await;
    let now = Utc::now();
    let old = store_entries(
        &store,
        &[Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":1}"#)
            .at(now - TimeDelta::days(2))],
    )
    .await;
    // Ids far apart: the first window of ids (20,000) reaches only the newest. (The sequence
    // is the entry rows' column's: the view pgtrail.entries owns none, and setval(NULL) would
    // move nothing.)
    let moved: i64 = store
        .query_one(
            "SELECT setval(pg_get_serial_sequence('pgtrail.entry_rows', 'id'), 1000000)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1_000_000);
    let new = store_entries(
        &store,
        &[Synth::new("public.orders", "UPDATE")
            .pk(r#"{"id":1}"#)
            .at(now)],
    )
    .await;
    assert_eq!(
        row_ids(&web.page("/").await),
        vec![new[0], old[0]],
        "the entries are all there"
    );
    let html = breakdown_of(&web, "").await;
    assert!(html.contains("id=\"facets-stopped\""), "{html}");
    assert_eq!(
        facet(&html, "Action").get("UPDATE").map(|v| v.0.as_str()),
        Some("≥ 1")
    );
    assert!(
        !facet(&html, "Action").contains_key("INSERT"),
        "not counted"
    );
    assert!(
        html.contains("class=\"slot skipped\""),
        "bars not counted are marked"
    );
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_search_matches_are_highlighted_and_escaped() {
    let (_env, store, web) = store_and_web().await;
    let ids = store_entries(&store, &search_data(Utc::now())).await;
    let html = web.page("/?q=SCRIPT").await;
    assert_eq!(row_ids(&html), vec![ids[12]]);
    assert!(
        !html.contains("<script>alert"),
        "the value is escaped:\n{html}"
    );
    assert!(
        html.contains("<span class=\"col\">body:</span> &#60;<mark>script</mark>&#62;alert(1)&#60;/<mark>script</mark>&#62; to Berlin")
            || html.contains("<span class=\"col\">body:</span> &lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; to Berlin"),
        "{html}"
    );
    // Only the old image holds it: marked as before.
    let html = web.page("/?q=deliver&action=UPDATE").await;
    assert!(
        html.contains("note:</span> <mark>Deliver</mark> to Berlin"),
        "{html}"
    );
    let html = web.page("/?q=void").await;
    assert!(
        html.contains("status (before):</span> <mark>void</mark>"),
        "{html}"
    );
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_events_are_hidden_unless_asked_for() {
    let (_env, store, web) = store_and_web().await;
    let ids = store_entries(&store, &search_data(Utc::now())).await;
    let events = sorted_desc(pick(&ids, &[10, 11]));
    let others = sorted_desc(pick(&ids, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12]));
    let html = web.page("/").await;
    assert_eq!(row_ids(&html), others);
    assert_eq!(count_text(&html), "11 entries");
    assert!(
        html.contains("id=\"events-hidden\""),
        "the page says they are hidden"
    );
    assert!(!html.contains("name=\"events\" value=\"shown\" checked"));
    let show = link_in(&html, "events-hidden");
    let shown = web.page(&show).await;
    assert_eq!(row_ids(&shown), sorted_desc(ids.clone()));
    assert_eq!(count_text(&shown), "13 entries");
    assert!(!shown.contains("id=\"events-hidden\""));
    assert!(
        shown.contains("name=\"events\" value=\"shown\" checked"),
        "the toggle is on"
    );
    assert!(
        shown.contains("<input type=\"hidden\" name=\"events\" value=\"shown\">"),
        "the export carries it"
    );
    for q in [
        "action=EVENT",
        "search=is%3Aevent",
        "table=pgtrail.session&table=pgtrail.export",
    ] {
        assert_eq!(row_ids(&web.page(&format!("/?{q}")).await), events, "{q}");
    }
    // Exports from the page follow it.
    let (_, _, _, hidden) = download(&web.url("/export?format=jsonl")).await;
    assert_eq!(
        String::from_utf8(hidden).unwrap().lines().count(),
        others.len()
    );
    let (_, _, _, with) = download(&web.url("/export?format=jsonl&events=shown")).await;
    assert!(
        String::from_utf8(with).unwrap().lines().count() >= ids.len(),
        "events, and the first export's own"
    );
    // The API lists them unless asked not to, as before.
    let listed = web.ids("").await;
    assert!(events.iter().all(|e| listed.contains(e)));
    assert_eq!(
        web.ids("events=hidden&limit=500")
            .await
            .iter()
            .filter(|i| events.contains(i))
            .count(),
        0
    );
    web.assert_quiet();
}

/// The breakdown of the log's view `query`, as the log page's script loads it (the page
/// itself does not count it), after checking that the page without a script links to the
/// same breakdown as a page of its own.
async fn breakdown_of(web: &Web, query: &str) -> String {
    let log = web.page(&format!("/?{query}")).await;
    assert!(
        !log.contains("id=\"facets\""),
        "the page does not wait for the facets"
    );
    let page = link_in(&log, "breakdown");
    let at = log.find("data-src=\"").unwrap() + 10;
    let part = unescape(&log[at..at + log[at..].find('"').unwrap()]);
    let sep = if page.contains('?') { '&' } else { '?' };
    assert_eq!(part, format!("{page}{sep}part=1"), "{log}");
    assert!(page.starts_with("/breakdown"), "{page}");
    let whole = web.page(&page).await;
    let fragment = web.page(&part).await;
    assert!(!fragment.contains("<html"), "a fragment: {fragment}");
    assert!(
        whole.contains("<html") && whole.contains("id=\"facets\""),
        "{whole}"
    );
    fragment
}

/// The first link's target inside the element with this id.
fn link_in(html: &str, id: &str) -> String {
    let at = html.find(&format!("id=\"{id}\"")).unwrap();
    let href = at + html[at..].find("href=\"").unwrap() + 6;
    unescape(&html[href..href + html[href..].find('"').unwrap()])
}
