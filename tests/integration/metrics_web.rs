//! `pgtrail web`'s own `/metrics`, `/healthz` and `/readyz` on `metrics.listen`: its requests
//! counted by the matched route's pattern (never the raw path), with their latency; sign-in
//! failures by reason; exports by format and outcome; and a readiness that is the store's alone.

use reqwest::StatusCode;

use super::metrics::{get_json, metrics_section, sample, scrape_until, wait_healthz};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtrail_web_counts_requests_by_route_pattern_sign_in_failures_and_exports() {
    let (section, base) = metrics_section();
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = section).await;
    env.setup().await;
    // Users must sign in (no auth = "none").
    let web = Web::start_with(&env, "").await;
    wait_healthz(&base).await;
    let password = "a long enough password for ann";
    add_user(&env, "ann", "auditor", None, password).await;
    // Without a session each is sent to sign in; what counts is that they are counted.
    let mut anon = Agent::new(&web.base);
    for id in [1, 2, 3] {
        let res = anon.get(&format!("/entries/{id}")).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
    }
    assert_eq!(
        anon.get("/no/such/page/42").await.status,
        StatusCode::SEE_OTHER
    );
    // A sign-in form without its CSRF token, and a wrong password: two failures of two kinds.
    let no_csrf = Agent::new(&web.base)
        .post("/sign-in", &[("name", "ann"), ("password", "guess")])
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let wrong = Agent::new(&web.base)
        .sign_in("ann", "not her password")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let mut ann = Agent::signed_in(&web.base, "ann", password).await;
    let csv = ann.get("/export?format=csv").await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.body);

    let all = scrape_until(&base, "the export to be counted", |m| {
        sample(m, "pgtrail_web_exports_total", &[("format", "csv")]).is_some()
    })
    .await;
    let count = |labels: &[(&str, &str)]| sample(&all, "pgtrail_web_requests_total", labels);
    let entries: f64 = all
        .iter()
        .filter(|(s, _)| {
            s.name == "pgtrail_web_requests_total" && s.labels["route"] == "/entries/{id}"
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(entries, 3.0, "three requests under one pattern: {all:#?}");
    // The raw paths never become labels.
    for s in all.keys() {
        let route = s.labels.get("route").map(String::as_str).unwrap_or("");
        assert!(
            !route.contains("/entries/1") && !route.contains("42"),
            "{s:?}"
        );
    }
    assert_eq!(
        count(&[("route", "unmatched"), ("status", "303")]),
        Some(1.0)
    );
    assert_eq!(
        count(&[("route", "/sign-in"), ("method", "POST"), ("status", "403")]),
        Some(1.0)
    );
    assert_eq!(count(&[("route", "/export"), ("status", "200")]), Some(1.0));
    let failures = |reason| {
        sample(
            &all,
            "pgtrail_web_sign_in_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        (failures("csrf"), failures("refused")),
        (Some(1.0), Some(1.0))
    );
    let exports = [("format", "csv"), ("outcome", "completed")];
    assert_eq!(
        sample(&all, "pgtrail_web_exports_total", &exports),
        Some(1.0)
    );
    let latency = [("route", "/entries/{id}"), ("method", "GET")];
    assert_eq!(
        sample(&all, "pgtrail_web_request_duration_seconds_count", &latency),
        Some(3.0)
    );
    // `pgtrail web` has no capture: its readiness is the store's, and it has no capture figures.
    let (status, ready) = get_json(&base, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert!(ready["checks"].get("streaming").is_none(), "{ready}");
    assert!(all.keys().all(|s| s.name != "pgtrail_entries_stored_total"));
}
