//! The API and the pages under bad input, missing things, a store that is down, and a fuzzer:
//! each bad parameter is a 400 that says what is wrong (HTML for pages, JSON for the API), every
//! response carries the security headers, the OpenAPI document describes what is served, and
//! schemathesis, driven by that document, finds no 5xx and no answer outside its schema.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;

/// An order's INSERT with key `id`.
fn order_insert(id: i64) -> Synth {
    Synth::new("public.orders", "INSERT")
        .pk(&format!("{{\"id\":{id}}}"))
        .after(&format!("{{\"id\":{id}}}"))
}

/// Two entries, and the cursor after the first of them (percent-encoded).
async fn two_entries_and_a_cursor(store: &Client, web: &Web) -> String {
    store_entries(store, &[order_insert(1)]).await;
    let time_cursor = web.api("/api/v1/entries?limit=1").await;
    // One entry, limit 1: there is no next cursor; make one with two entries.
    assert!(time_cursor["next_cursor"].is_null());
    store_entries(store, &[order_insert(2)]).await;
    let v = web.api("/api/v1/entries?limit=1").await;
    let cursor = enc(v["next_cursor"].as_str().unwrap());
    cursor
}

/// Each bad parameter, on the page and in the API: a 400 that names what is wrong.
async fn bad_queries_say_what_is_wrong(web: &Web, cursor: &str) {
    let bad: Vec<(String, &str)> = vec![
        ("action=UPSERT".into(), "UPSERT"),
        ("from=yesterday".into(), "from"),
        ("to=2024-13-01".into(), "to"),
        ("from=2024-02-01&to=2024-01-01".into(), "not before"),
        ("ip=300.1.1.1".into(), "ip"),
        (format!("ip={}", enc("10.0.0.0/40")), "prefix"),
        ("ip=example.com".into(), "ip"),
        ("cursor=garbage".into(), "cursor"),
        (format!("cursor={cursor}&sort=actor"), "cursor belongs"),
        (format!("cursor={}", enc("eyJzIjoidGltZSJ9")), "cursor"),
        ("sort=size".into(), "sort"),
        ("dir=sideways".into(), "dir"),
        ("limit=0".into(), "limit"),
        ("limit=100000".into(), "limit"),
        ("limit=ten".into(), "limit"),
        ("last=3w".into(), "last"),
        // Last with From: the API's 400, but the page's From (tests/integration/web_view_details.rs).
        ("bogus=1".into(), "unknown parameter"),
        ("table=nodot".into(), "table"),
        (format!("pk={}", enc("{broken")), "pk"),
        ("actor=a&actor=b".into(), "more than once"),
        (format!("q={}", "x".repeat(2000)), "too long"),
    ];
    for (query, needle) in &bad {
        let (status, headers, body) = web.fetch(&format!("/?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "page ?{query}: {body}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(
            unescape(&body).contains(needle),
            "page ?{query} should say {needle:?}:\n{body}"
        );
        let (status, headers, body) = web.fetch(&format!("/api/v1/entries?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "API ?{query}: {body}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "API ?{query} should say {needle:?}: {body}"
        );
    }
}

/// Bad ids and parameters in paths are 400s; what does not exist is a 404 (JSON under /api/).
async fn bad_paths_and_missing_things(web: &Web) {
    let bad_paths = [
        ("/entries/abc", "entry id"),
        ("/entries/-1", "entry id"),
        ("/entries/99999999999999999999", "entry id"),
        ("/api/v1/entries/abc", "entry id"),
        ("/transactions/x", "transaction id"),
        ("/transactions/5?after=x", "after"),
        ("/transactions/5?colour=red", "unknown parameter"),
        ("/history", "table"),
        ("/history?table=public.orders", "primary key"),
        ("/history?table=bad&pk=1", "table"),
        ("/history?table=public.orders&pk=%7Bbad", "pk"),
        ("/history?table=public.orders&pk=1&after=x", "after"),
        ("/live?after=x", "after"),
        ("/live?sort=actor", "newest-first"),
        ("/live?action=UPSERT", "UPSERT"),
        ("/?live=maybe", "live"),
    ];
    for (path, needle) in bad_paths {
        let (status, _, body) = web.fetch(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            unescape(&body).contains(needle),
            "{path} should say {needle:?}:\n{body}"
        );
    }
    let missing = [
        "/entries/424242",
        "/api/v1/entries/424242",
        "/transactions/424242",
        "/history?table=public.orders&pk=999",
        "/nope",
        "/api/v1/nope",
        "/assets/evil.js",
    ];
    for path in missing {
        let (status, headers, body) = web.fetch(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        let json = headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json");
        assert_eq!(
            json,
            path.starts_with("/api/"),
            "{path}: JSON under /api/ only"
        );
    }
}

/// Security headers on every kind of response; no inline script or style, nothing from elsewhere.
async fn security_headers_and_no_inline_code(web: &Web) {
    // Security headers on every kind of response.
    for path in [
        "/",
        "/entries/1",
        "/api/v1/entries",
        "/api/v1/openapi.json",
        "/nope",
        "/?action=x",
        "/assets/app.css",
        "/assets/app.js",
    ] {
        let (_, h, _) = web.fetch(path).await;
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
    // No inline script or style for the policy to block, and nothing from elsewhere.
    for path in [
        "/",
        "/entries/1",
        "/history?table=public.orders&pk=1",
        "/transactions/1000",
        "/nope",
    ] {
        let (_, _, body) = web.fetch(path).await;
        for tag in body.split("<script").skip(1) {
            assert!(
                tag.starts_with(" src=\"/assets/"),
                "{path}: an inline or foreign script: <script{}",
                &tag[..40.min(tag.len())]
            );
        }
        assert!(
            !body.contains(" style=") && !body.contains("<style"),
            "{path}: inline style"
        );
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path}: an external URL"
        );
    }
    let (_, h, css) = web.fetch("/assets/app.css").await;
    assert!(h["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(
        css.contains("prefers-color-scheme: dark"),
        "dark mode follows the system"
    );
    assert!(
        !css.contains("@import") && !css.contains("url("),
        "no external fonts or images"
    );
}

/// The OpenAPI document is 3.1 and describes both endpoints and their errors.
async fn openapi_document(web: &Web) {
    let doc = web.api("/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let list = &doc["paths"]["/api/v1/entries"]["get"];
    assert!(list["responses"]["400"].is_object() && list["responses"]["200"].is_object());
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "action", "table", "actor", "role", "ip", "app", "source", "from", "to", "last", "pk", "q",
        "sort", "dir", "cursor", "limit",
    ] {
        assert!(names.contains(&p), "parameter {p} documented");
    }
    assert!(doc["paths"]["/api/v1/entries/{id}"]["get"]["responses"]["404"].is_object());
    for path in ["/api/v1/entries", "/api/v1/entries/{id}"] {
        let responses = &doc["paths"][path]["get"]["responses"];
        assert!(
            responses["401"].is_object() && responses["403"].is_object(),
            "{path} documents 401 and 403"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    assert!(doc["components"]["schemas"]["Entry"].is_object());
}

/// With the store down: 503 with a message, no 500; back when it is back.
async fn store_down_is_a_503(web: &Web, cluster: &mut Cluster) {
    tokio::task::block_in_place(|| cluster.stop());
    for path in ["/", "/api/v1/entries", "/entries/1"] {
        let (status, _, body) = web.fetch(path).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} with the store down: {body}"
        );
        assert!(body.contains("cannot be reached"), "{path}: {body}");
    }
    tokio::task::block_in_place(|| cluster.start_again());
    let mut ok = false;
    for _ in 0..100 {
        if web.fetch("/").await.0 == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the web view reconnects once the store is back");
    assert!(!web.log().contains("panicked"), "{}", web.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_bad_input_is_a_400_that_says_what_is_wrong() {
    let (mut env, store, web) = store_and_web().await;
    let cursor = two_entries_and_a_cursor(&store, &web).await;
    bad_queries_say_what_is_wrong(&web, &cursor).await;
    bad_paths_and_missing_things(&web).await;
    security_headers_and_no_inline_code(&web).await;
    openapi_document(&web).await;
    store_down_is_a_503(&web, &mut env.cluster).await;
}

// ---------------------------------------------------------------------------------------------
// Fuzzing the API against its own OpenAPI document
// ---------------------------------------------------------------------------------------------

/// schemathesis from `target/tools/venv`, installed by `scripts/install-web-test-tools.sh`
/// (run here if it is missing).
fn schemathesis() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/tools/venv/bin/schemathesis");
    if !bin.exists() {
        let out = Command::new("bash")
            .arg(repo.join("scripts/install-web-test-tools.sh"))
            .arg("schemathesis")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/install-web-test-tools.sh");
        assert!(
            out.status.success() && bin.exists(),
            "installing schemathesis failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// 40 entries of every action over three tables, some with markup in the actor.
fn fuzz_data() -> Vec<Synth> {
    let mut data = Vec::new();
    for i in 0..40i64 {
        let action = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"][i as usize % 4];
        let mut s = Synth::new(
            ["public.orders", "public.customers", "sales.x"][i as usize % 3],
            action,
        )
        .at(Utc::now() - TimeDelta::hours(i))
        .who(
            [Some("alice"), None, Some("<b>")][i as usize % 3],
            Some("app"),
        )
        .from(
            [Some("10.0.0.1"), None, Some("::1")][i as usize % 3],
            Some("shop"),
            None,
        );
        if action != "TRUNCATE" {
            s = s.pk(&format!("{{\"id\":{i}}}"));
            let row = format!("{{\"id\":{i},\"v\":\"value {i}\",\"doc\":{{\"k\":[{i}]}}}}");
            if action != "INSERT" {
                s = s.before(&row);
            }
            if action != "DELETE" {
                s = s.after(&row.replace("value", "new value"));
            }
            if action == "UPDATE" {
                s = s.changed("[\"v\"]");
            }
        }
        data.push(s);
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_fuzzed_by_schemathesis_gives_no_5xx_and_keeps_its_schema() {
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let (_env, store, web) = store_and_web().await;
    store_entries(&store, &fuzz_data()).await;
    let report = web.dir().join("schemathesis");
    let log_path = web.dir().join("schemathesis.log");
    let log = File::create(&log_path).unwrap();
    let mut child = Command::new(st)
        .arg("run")
        .arg(web.url("/api/v1/openapi.json"))
        .args(["--url", &web.base])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"])
        .args(["--max-examples", "150", "--seed", "20261122", "--workers", "2", "--request-timeout", "30", "--no-color"])
        .args(["--generation-database", "none"])
        // Hypothesis judges a slow machine by the clock; that is not what this test is about.
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .arg("--report-dir")
        .arg(&report)
        .current_dir(web.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(420) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran over 7 minutes:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found problems:\n{text}\n--- server log ---\n{}",
        web.log()
    );
    assert!(text.contains("No issues found"), "{text}");
    assert!(
        !web.log().contains("ERROR"),
        "the server logged errors under fuzzing:\n{}",
        web.log()
    );
}
