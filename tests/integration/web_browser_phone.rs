//! The web view in real headless Chromium at a phone's 390 px and a desk's 1400 px (issue 14):
//! the log, an entry, one of pgtrail's events and the admin page never scroll sideways on the
//! phone, the header keeps "Sign out" in view, each entry is a compact card; and times switch
//! between UTC and the browser's zone (Asia/Kolkata here), remembered, with From sent in UTC.
//! Screenshots of each in `target/web-screenshots/`.

use chrono::{Duration, Utc};
use fantoccini::Client as Browser;
use fantoccini::Locator::{Css, Id};
use serde_json::Value;

use crate::harness::*;
use crate::web_browser::{
    browser, click, orders, screenshot, sign_in_as, start_chromedriver, texts, wait_for,
};

/// A number the page's script returns.
async fn number(c: &Browser, script: &str) -> f64 {
    match c.execute(script, vec![]).await.unwrap() {
        Value::Number(n) => n.as_f64().unwrap(),
        other => panic!("{script} gave {other}"),
    }
}

/// Opens `path` at the current size, waits for `ready`, saves a screenshot, and checks that the
/// page is no wider than the window.
async fn fits(c: &Browser, web: &Web, path: &str, ready: &str, name: &str) {
    c.goto(&web.url(path)).await.unwrap();
    wait_for(c, Css(ready)).await;
    let width = number(c, "return window.innerWidth;").await;
    let scroll = number(c, "return document.documentElement.scrollWidth;").await;
    screenshot(c, name).await;
    assert!(
        scroll <= width,
        "{path} is {scroll} px wide in a window of {width} px"
    );
}

/// At 390 px: no sideways scroll anywhere, "Sign out" in view, entries as short cards.
async fn phone(c: &Browser, web: &Web, entry: i64, event: i64) {
    c.set_window_size(390, 900).await.unwrap();
    fits(c, web, "/", "table.log tbody tr", "phone-log").await;
    let width = number(c, "return window.innerWidth;").await;
    assert!(width <= 390.0, "{width}");
    let right = number(
        c,
        "return document.querySelector('.who form.signout button').getBoundingClientRect().right;",
    )
    .await;
    assert!(right <= width, "Sign out ends at {right} px of {width}");
    let tallest = number(
        c,
        "return Math.max.apply(null, Array.from(document.querySelectorAll('table.log tbody tr')).map(function (r) { return r.getBoundingClientRect().height; }));",
    )
    .await;
    assert!(tallest <= 110.0, "an entry's card is {tallest} px high");
    fits(
        c,
        web,
        &format!("/entries/{entry}"),
        "h1.entry-title",
        "phone-entry",
    )
    .await;
    fits(
        c,
        web,
        &format!("/entries/{event}"),
        "#event-facts",
        "phone-event",
    )
    .await;
    fits(c, web, "/admin", "#users", "phone-admin").await;
    // The manage step opened, its fields laid out within the phone.
    click(c, Css("tr[data-user='pat'] details.manage summary")).await;
    let scroll = number(c, "return document.documentElement.scrollWidth;").await;
    screenshot(c, "phone-admin-manage").await;
    assert!(scroll <= width, "the open manage step is {scroll} px wide");
    c.set_window_size(1400, 900).await.unwrap();
    fits(c, web, "/", "table.log tbody tr", "wide-log").await;
    fits(
        c,
        web,
        &format!("/entries/{entry}"),
        "h1.entry-title",
        "wide-entry",
    )
    .await;
    fits(
        c,
        web,
        &format!("/entries/{event}"),
        "#event-facts",
        "wide-event",
    )
    .await;
    fits(c, web, "/admin", "#users", "wide-admin").await;
}

/// Local time: the toggle shows the log in the browser's zone, keeps it after a reload, and the
/// form still asks the server in UTC.
async fn local_time(c: &Browser, web: &Web) {
    c.goto(&web.url("/")).await.unwrap();
    wait_for(c, Id("tz-toggle")).await;
    let utc = texts(c, "table.log td.time time").await[0].clone();
    click(c, Id("tz-toggle")).await;
    let shown = texts(c, "table.log td.time time").await[0].clone();
    let parse = |t: &str| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").unwrap();
    assert_eq!(
        parse(&shown) - parse(&utc),
        Duration::minutes(330),
        "{utc} → {shown}"
    );
    assert_eq!(texts(c, "#tz-toggle").await, ["Local time"]);
    c.refresh().await.unwrap();
    wait_for(c, Css("table.log tbody tr")).await;
    assert_eq!(
        texts(c, "table.log td.time time").await[0],
        shown,
        "remembered"
    );
    assert!(texts(c, ".when .tz").await[0].contains("UTC+05:30"));
    // The breakdown, loaded after the page, is shown in local time too.
    let caption = wait_for(c, Css("#timeline figcaption time")).await;
    let (shown_at, utc_at) = (
        caption
            .prop("textContent")
            .await
            .unwrap()
            .unwrap_or_default(),
        caption.attr("data-utc").await.unwrap().unwrap_or_default(),
    );
    let minute =
        |t: &str| chrono::NaiveDateTime::parse_from_str(&t[..16], "%Y-%m-%d %H:%M").unwrap();
    assert_eq!(
        minute(&shown_at) - minute(&utc_at),
        Duration::minutes(330),
        "{utc_at} → {shown_at}"
    );
    let zone = c.find(Css("#timeline figcaption .tz")).await.unwrap();
    assert!(zone
        .prop("textContent")
        .await
        .unwrap()
        .is_some_and(|t| t.contains("UTC+05:30")));
    // From typed in local time reaches the server in UTC; Last, chosen before, is cleared.
    c.execute("document.getElementById('filterbox').open = true;", vec![])
        .await
        .unwrap();
    let last = c.find(Css("select[name=last]")).await.unwrap();
    last.select_by_value("24h").await.unwrap();
    let from = c.find(Css("input[name=from]")).await.unwrap();
    from.send_keys("2026-01-01 05:30:00").await.unwrap();
    assert_eq!(
        last.prop("value").await.unwrap().as_deref(),
        Some(""),
        "From clears Last"
    );
    screenshot(c, "local-time").await;
    click(c, Css("form.filters button[type=submit]")).await;
    wait_for(c, Css("details.filterbox .active")).await;
    let url = c.current_url().await.unwrap().to_string();
    assert!(url.contains("from=2026-01-01+00%3A00%3A00"), "{url}");
    assert!(!url.contains("last=24h"), "{url}");
    // Shown back in local time.
    let value = c
        .find(Css("input[name=from]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("2026-01-01 05:30:00"));
    click(c, Id("tz-toggle")).await;
    assert_eq!(
        texts(c, "table.log td.time time").await[0],
        utc,
        "back to UTC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_in_chromium_fits_a_phone_and_shows_local_time_on_request() {
    let driver = start_chromedriver().await;
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "pat", "admin", None, "phone-pass-1").await;
    let web = Web::start_with(&env, "").await;
    let ids = store_entries(&store, &orders(Utc::now())).await;
    let c = browser(&driver).await;
    sign_in_as(&c, &web, "pat", "phone-pass-1").await;
    let event: i64 = store
        .query_one(
            "SELECT max(id) FROM pgtrail.entries WHERE action = 'EVENT'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    phone(&c, &web, ids[0], event).await;
    local_time(&c, &web).await;
    c.close().await.unwrap();
}
