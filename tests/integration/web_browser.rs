//! A real browser: headless Chromium driven through chromedriver signs in, filters, sorts,
//! opens View Difference and a row's history, shrinks to a phone and watches the live mode, with
//! a screenshot of each step in `target/web-screenshots/` for people to look at.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use fantoccini::elements::Element;
use fantoccini::Client as Browser;
use fantoccini::Locator::{self, Css, Id, LinkText};
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// `chromedriver` on a free port, killed on drop.
pub(crate) struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_chromedriver() -> Chromedriver {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !std::path::Path::new("/usr/bin/chromedriver").exists()
        || !std::path::Path::new("/usr/bin/chromium").exists()
    {
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(repo.join("scripts/install-web-test-tools.sh"))
                .arg("browser")
                .stdin(Stdio::null())
                .output()
        })
        .await
        .unwrap()
        .expect("run scripts/install-web-test-tools.sh browser");
        assert!(
            out.status.success(),
            "installing chromium failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        // A zone away from UTC, so the local-time toggle shows a difference.
        .env("TZ", "Asia/Kolkata")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let http = http_client();
    wait_until("chromedriver answers", Duration::from_secs(30), || async {
        http.get(format!("{url}/status")).send().await.is_ok()
    })
    .await;
    Chromedriver { child, url }
}

pub(crate) async fn browser(driver: &Chromedriver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Saves a screenshot as `target/web-screenshots/browser-NAME.png` for people to look at.
pub(crate) async fn screenshot(c: &Browser, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("screenshot");
    fs::write(dir.join(format!("browser-{name}.png")), png).unwrap();
}

pub(crate) async fn texts(c: &Browser, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap().trim().to_owned());
    }
    out
}

/// Waits (up to 10 s) until the page has `what`.
pub(crate) async fn wait_for(c: &Browser, what: Locator<'_>) -> Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(what)
        .await
        .unwrap()
}

/// Clicks the first `what`.
pub(crate) async fn click(c: &Browser, what: Locator<'_>) {
    c.find(what).await.unwrap().click().await.unwrap();
}

/// Clicks the first `what`, then waits for the page to have `then`.
pub(crate) async fn click_then_wait(c: &Browser, what: Locator<'_>, then: Locator<'_>) {
    click(c, what).await;
    wait_for(c, then).await;
}

/// Types `text` into the field `field`.
pub(crate) async fn type_into(c: &Browser, field: Locator<'_>, text: &str) {
    c.find(field).await.unwrap().send_keys(text).await.unwrap();
}

/// Twelve updates of four orders by three actors from five addresses.
pub(crate) fn orders(now: DateTime<Utc>) -> Vec<Synth> {
    let mut data = Vec::new();
    for i in 0..12i64 {
        let actor = ["alice@example.com", "bob@example.com", "carol@example.com"][i as usize % 3];
        let status_before = ["new", "paid", "shipped"][i as usize % 3];
        let doc = |n: i64| {
            format!(r#"{{"items":[{{"sku":"A-{i}","qty":{n}}}],"gift":false,"note":"order {i}"}}"#)
        };
        data.push(
            Synth::new("public.orders", "UPDATE")
                .pk(&format!("{{\"id\":{}}}", i % 4))
                .before(&format!(
                    r#"{{"id":{},"status":"{status_before}","doc":{},"total":"10.00"}}"#,
                    i % 4,
                    doc(1)
                ))
                .after(&format!(
                    r#"{{"id":{},"status":"refunded","doc":{},"total":"10.00"}}"#,
                    i % 4,
                    doc(2)
                ))
                .changed(r#"["status","doc"]"#)
                .at(now - TimeDelta::minutes(60 - i))
                .xid(700 + i)
                .who(Some(actor), Some("app_rw"))
                .from(
                    Some(&format!("10.0.0.{}", i % 5)),
                    Some("shop"),
                    Some("admin-ui"),
                )
                .remarks("ticket 4411"),
        );
    }
    data
}

/// Sign in: the log sends us to the sign-in page and back.
async fn sign_in(c: &Browser, web: &Web) {
    sign_in_as(c, web, "olivia", "browser-pass-1").await;
}

/// Signs in as `name` through the sign-in page the log sends us to.
pub(crate) async fn sign_in_as(c: &Browser, web: &Web, name: &str, password: &str) {
    c.goto(&web.url("/")).await.unwrap();
    wait_for(c, Id("s-name")).await;
    assert!(c.current_url().await.unwrap().path() == "/sign-in");
    type_into(c, Id("s-name"), name).await;
    type_into(c, Id("s-password"), password).await;
    screenshot(c, "0-sign-in").await;
    click(c, Css("form.stack button[type=submit]")).await;
    if c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("header .who .user"))
        .await
        .is_err()
    {
        panic!(
            "not signed in after the form: at {:?}\n{}",
            c.current_url().await.map(|u| u.to_string()),
            c.source().await.unwrap_or_default()
        );
    }
    assert!(texts(c, "header .who .user").await[0].starts_with(name));
}

/// The log, then filtered by actor through the form, then sorted by IP by clicking its header.
async fn log_filter_and_sort(c: &Browser) {
    wait_for(c, Css("table.log tbody tr")).await;
    assert_eq!(texts(c, "table.log tbody tr").await.len(), 12);
    assert_eq!(texts(c, "#count").await, ["12 entries"]);
    screenshot(c, "1-log").await;

    type_into(c, Id("f-actor"), "bob@example.com").await;
    click_then_wait(
        c,
        Css("form.filters button[type=submit]"),
        Css("details.filterbox .active"),
    )
    .await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("actor=bob%40example.com"));
    let actors = texts(c, "table.log td.actor a").await;
    assert_eq!(actors, vec!["bob@example.com"; 4]);
    screenshot(c, "2-filtered").await;

    click_then_wait(
        c,
        Css("thead th a[href*='sort=ip']"),
        Css("th[aria-sort='ascending']"),
    )
    .await;
    let ips = texts(c, "table.log td.ip").await;
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(ips, sorted, "sorted by IP");
    assert_eq!(
        texts(c, "table.log td.actor a").await,
        vec!["bob@example.com"; 4],
        "the filter stays while sorting"
    );
    screenshot(c, "3-sorted").await;
}

/// View Difference of the first row, then the row's history.
async fn difference_and_history(c: &Browser) {
    click_then_wait(c, Css("table.log tbody tr a.view"), Css("h1.entry-title")).await;
    assert_eq!(texts(c, "tr.col.changed th.name").await, ["status", "doc"]);
    assert!(
        !texts(c, ".difflines mark").await.is_empty(),
        "the JSON change is marked word by word"
    );
    let copy = c.find(Css("button.copy")).await.unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script shows the copy button"
    );
    assert!(texts(c, "#revert-sql").await[0].contains("UPDATE \"public\".\"orders\""));
    // The unchanged columns open on a click.
    click(c, Css("details.unchanged summary")).await;
    screenshot(c, "4-view-difference").await;

    click_then_wait(c, LinkText("Row history"), Css("ol.history")).await;
    assert_eq!(
        texts(c, "li.hist-item").await.len(),
        3,
        "every entry of the row"
    );
    screenshot(c, "5-history").await;
}

/// A phone-sized window: the log as cards, the filters folded.
async fn phone_sized(c: &Browser, web: &Web) {
    c.set_window_size(390, 900).await.unwrap();
    c.goto(&web.url("/")).await.unwrap();
    wait_for(c, Css("table.log tbody tr")).await;
    let open = c
        .execute("return document.getElementById('filterbox').open;", vec![])
        .await
        .unwrap();
    assert_eq!(open, Value::Bool(false), "filters start folded on a phone");
    screenshot(c, "6-phone").await;
    c.set_window_size(1280, 900).await.unwrap();
}

/// Live mode: a new entry appears at the top without a reload.
async fn live_mode(c: &Browser, web: &Web, store: &Client) {
    c.goto(&web.url("/?live=1")).await.unwrap();
    wait_for(c, Id("live-status")).await;
    let new = store_entries(
        store,
        &[Synth::new("public.orders", "DELETE")
            .pk(r#"{"id":99}"#)
            .before(r#"{"id":99,"status":"live"}"#)
            .who(Some("dave@example.com"), None)],
    )
    .await;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Id(&format!("e{}", new[0])))
        .await
        .expect("the live row arrives");
    let first = c
        .find(Css("table.log tbody tr"))
        .await
        .unwrap()
        .attr("id")
        .await
        .unwrap();
    assert_eq!(first, Some(format!("e{}", new[0])), "at the top");
    assert!(texts(c, "#live-status").await[0].contains("1 new entry"));
    assert_eq!(
        texts(c, "#count").await,
        ["13 entries"],
        "the count follows"
    );
    screenshot(c, "7-live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_in_headless_chromium_filter_sort_view_difference_history_live() {
    let driver = start_chromedriver().await;
    // Signed in as a real user, as people use it: no `auth = "none"` here.
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "olivia", "viewer", None, "browser-pass-1").await;
    let web = Web::start_with(&env, "").await;
    store_entries(&store, &orders(Utc::now())).await;
    let c = browser(&driver).await;
    sign_in(&c, &web).await;
    log_filter_and_sort(&c).await;
    difference_and_history(&c).await;
    phone_sized(&c, &web).await;
    live_mode(&c, &web, &store).await;
    c.close().await.unwrap();
}
