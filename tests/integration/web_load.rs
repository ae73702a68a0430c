//! The web view under load: slow work (free-text search) has a lane of its own connections, so
//! while a search holds it an entry page and the first page still answer at once; a second
//! search that waits longer than `web.max_wait` for the lane is refused with 503, `Retry-After`
//! and a page (or, from the API, JSON) that says the server is busy and when to retry; and
//! each refusal is counted in `/metrics` by route and lane.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio_postgres::Client;

use super::metrics::{metrics_section, sample, scrape_until, wait_healthz};
use crate::harness::*;

/// Entries added at a time, each with a row image for a search to read, until reading them all
/// for a term found nowhere takes the store at least [`SLOW_SEARCH`] (at most [`MOST`] entries):
/// how long that takes depends on the machine, and the test needs the search to outlast its
/// other requests several times over.
const BATCH: i64 = 250_000;
const MOST: i64 = 4_000_000;
const SLOW_SEARCH: Duration = Duration::from_millis(2_000);

async fn fill(store: &Client) {
    let mut filled = 0;
    while filled < MOST {
        store
            .batch_execute(&format!(
                "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, after, context, source) \
                 SELECT now() - interval '1 day', 5000 + g, '0/20000000'::pg_lsn + g * 256, 'public', 'filler', 'INSERT', \
                        json_build_object('id', g, 'note', 'a note of some length to read past, number ' || g), '{{}}', 1 \
                 FROM generate_series({}, {}) g",
                filled + 1,
                filled + BATCH
            ))
            .await
            .unwrap();
        filled += BATCH;
        store
            .batch_execute("VACUUM ANALYZE pgtrail.entries")
            .await
            .unwrap();
        let started = Instant::now();
        store
            .query_one(
                "SELECT count(*) FROM pgtrail.entries WHERE after::text ILIKE '%zz-found-nowhere%'",
                &[],
            )
            .await
            .unwrap();
        if started.elapsed() >= SLOW_SEARCH {
            return;
        }
    }
}

/// Whether a free-text statement of the web view runs in the store now.
async fn searching(store: &Client) -> bool {
    let n: i64 = store
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtrail web' \
             AND state = 'active' AND query ILIKE '%json_each_text%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    n > 0
}

/// The server's own time for a response (its Server-Timing header), in ms.
fn server_ms(headers: &reqwest::header::HeaderMap) -> f64 {
    let v = headers["server-timing"].to_str().unwrap();
    v.trim_start_matches("total;dur=").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_slow_work_has_its_own_lane_and_a_full_lane_sheds_with_retry_after() {
    let (section, metrics) = metrics_section();
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = section).await;
    env.setup().await;
    let store = env.store().await;
    let entry = store_entries(
        &store,
        &[Synth::new("public.t", "INSERT")
            .pk("{\"id\":1}")
            .after("{\"id\":1}")],
    )
    .await[0];
    fill(&store).await;
    // One connection for slow work, one for the rest; a search reads the whole store.
    let web = Web::start_full(
        &env,
        "auth = \"none\"\nconnections = 2\nslow_connections = 1\nmax_wait = \"400ms\"\n",
        &[("PGTRAIL_WEB_SEARCH_MS", "60000")],
    )
    .await;
    wait_healthz(&metrics).await;

    // A search for a term found nowhere holds the slow lane while it reads.
    let long = {
        let url = web.url("/?q=zz-found-nowhere");
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http_client().get(url).send().await.unwrap();
            (r.status(), started.elapsed())
        })
    };
    let started = Instant::now();
    while !searching(&store).await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the search never started\n{}",
            web.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second search waits for the lane as long as web.max_wait, then is refused; the same from
    // the API. While they wait, cheap pages (an entry, the first page, the API's list) answer.
    let w = &web;
    let timed = move |path: String| async move {
        let answer = w.fetch(&path).await;
        (answer, Instant::now())
    };
    let cheap = move |path: String| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        timed(path).await
    };
    let (refused, refused_api, entry_page, first, list) = tokio::join!(
        timed("/?q=another-term".into()),
        timed("/api/v1/entries?q=another-term".into()),
        cheap(format!("/entries/{entry}")),
        cheap("/".into()),
        cheap("/api/v1/entries?limit=5".into()),
    );
    let ((status, headers, body), refused_at) = refused;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let waited = server_ms(&headers);
    assert!(
        (390.0..3_000.0).contains(&waited),
        "refused after {waited} ms"
    );
    let body = unescape(&body);
    assert!(
        body.contains("Server Busy")
            && body.contains("web.max_wait")
            && body.contains("Try again in 1 s"),
        "{body}"
    );
    let ((status, headers, body), api_refused_at) = refused_api;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["error"].as_str().unwrap().contains("busy"), "{json}");
    for ((status, headers, body), at) in [entry_page, first, list] {
        // Answered while the refused requests still waited: they did not wait for the slow lane.
        // (How fast is for bench/web_load.sh; a test on shared cores asserts the order.)
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            at < refused_at.min(api_refused_at),
            "a cheap page waited for the slow lane: {headers:?}"
        );
    }

    // It ends with its page, and the lane is free again.
    let (status, took) = long.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        took > Duration::from_millis(400),
        "the search took only {took:?}"
    );
    let (status, _, body) = web.fetch("/?q=number").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The two refusals are counted, by route and lane.
    let all = scrape_until(&metrics, "the refusals to be counted", |m| {
        sample(m, "pgtrail_web_shed_total", &[("route", "/api/v1/entries")]).is_some()
    })
    .await;
    for route in ["/", "/api/v1/entries"] {
        assert_eq!(
            sample(
                &all,
                "pgtrail_web_shed_total",
                &[("route", route), ("lane", "slow")]
            ),
            Some(1.0),
            "{all:#?}"
        );
    }
    web.assert_quiet();
}
