//! `/metrics`, `/healthz` and `/readyz` of `pgtrail run` on `metrics.listen`: the counters equal
//! what the store really holds, the lag returns to zero once capture has caught up, the slot's
//! figures are there, `/readyz` says 200 while streaming and 503 (naming the store) while the store
//! is down, and requests the endpoints do not serve are 4xx. Also the helpers the other metrics
//! tests share: scraping and reading the text format.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// A `[metrics]` section on a free port, polling every second; and its base URL.
pub fn metrics_section() -> (String, String) {
    let port = free_port();
    (
        format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\npoll_interval = \"1s\"\n"),
        format!("http://127.0.0.1:{port}"),
    )
}

/// One series of the text format: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Every sample of a scrape, by series.
pub fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        out.insert(
            Series {
                name: name.to_owned(),
                labels,
            },
            value,
        );
    }
    out
}

/// `a="x",b="y\"z"` as a map.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// GET `base/metrics`, which must answer 200 in the text format.
pub async fn scrape(base: &str) -> BTreeMap<Series, f64> {
    let res = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse_exposition(&res.text().await.unwrap())
}

/// Scrapes `base` until `done` holds of a scrape (30 s at most), and returns that scrape.
pub async fn scrape_until(
    base: &str,
    what: &str,
    done: impl Fn(&BTreeMap<Series, f64>) -> bool,
) -> BTreeMap<Series, f64> {
    let started = std::time::Instant::now();
    loop {
        let all = scrape(base).await;
        if done(&all) {
            return all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; the last scrape:\n{all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the series `name` whose labels include `labels`, if there is exactly one.
pub fn sample(all: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = all.iter().filter(|(s, _)| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    });
    let first = found.next().map(|(_, v)| *v);
    assert!(
        found.next().is_none(),
        "more than one series {name} {labels:?}"
    );
    first
}

/// GET `base/path`: the status and the JSON body.
pub async fn get_json(base: &str, path: &str) -> (StatusCode, Value) {
    let res = http_client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let status = res.status();
    let text = res.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, body)
}

/// Waits until `base/healthz` answers.
pub async fn wait_healthz(base: &str) {
    wait_until(
        "GET /healthz to answer",
        Duration::from_secs(30),
        || async {
            http_client()
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok()
        },
    )
    .await;
}

/// Entries in the store by action, as capture stored them (pgtrail's own events left out).
async fn stored_by_action(store: &tokio_postgres::Client) -> BTreeMap<String, f64> {
    query_pairs::<String, i64>(
        store,
        "SELECT action, count(*) FROM pgtrail.entries WHERE action <> 'EVENT' GROUP BY action",
        &[],
    )
    .await
    .into_iter()
    .map(|(a, n)| (a, n as f64))
    .collect()
}

/// The entries counter of every action, from a scrape.
fn counted_by_action(all: &BTreeMap<Series, f64>) -> BTreeMap<String, f64> {
    all.iter()
        .filter(|(s, _)| s.name == "pgtrail_entries_stored_total")
        .map(|(s, v)| {
            assert_eq!(
                s.labels.get("source").map(String::as_str),
                Some("app"),
                "{s:?}"
            );
            (s.labels["action"].clone(), *v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_stored_and_the_lag_returns_to_zero() {
    let (section, base) = metrics_section();
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = section).await;
    let src = env
        .source_with(
            "CREATE TABLE t (id int PRIMARY KEY, v int); ALTER TABLE t REPLICA IDENTITY FULL;",
        )
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    wait_healthz(&base).await;
    let (status, health) = get_json(&base, "/healthz").await;
    assert_eq!(
        (status, health),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );

    // Three transactions of inserts, one of updates, one of deletes: 30 + 10 + 5 entries.
    for i in 0..3 {
        src.batch_execute(&format!(
            "INSERT INTO t SELECT g, 0 FROM generate_series({}, {}) g",
            i * 10 + 1,
            i * 10 + 10
        ))
        .await
        .unwrap();
    }
    src.batch_execute("UPDATE t SET v = 1 WHERE id <= 10")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM t WHERE id > 25")
        .await
        .unwrap();
    env.sync().await;
    let store = env.store().await;
    assert_counts(&store, "public", "t", Counts::new(30, 10, 5, 0)).await;

    // The counters say what the store holds, action by action (the sync markers are inserts too).
    let stored = stored_by_action(&store).await;
    let txns: i64 = query_value(
        &store,
        "SELECT count(DISTINCT xid) FROM pgtrail.entries WHERE action <> 'EVENT'",
        &[],
    )
    .await;
    let last = scrape_until(&base, "the counters to equal the store's entries", |m| {
        counted_by_action(m) == stored
            && sample(m, "pgtrail_transactions_stored_total", &[("source", "app")])
                == Some(txns as f64)
    })
    .await;
    assert_eq!(stored["UPDATE"], 10.0);
    assert_eq!(stored["DELETE"], 5.0);
    assert!(sample(&last, "pgtrail_store_commit_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&last, "pgtrail_capture_streaming", &[("source", "app")]),
        Some(1.0)
    );
    assert_eq!(sample(&last, "pgtrail_build_info", &[]), Some(1.0));

    // Caught up: no lag in seconds, and in bytes no more than the WAL written since (a few kB).
    let last = scrape_until(&base, "the lag to return to zero", |m| {
        let source = [("source", "app")];
        let bytes = sample(m, "pgtrail_replication_lag_bytes", &source);
        let secs = sample(m, "pgtrail_replication_lag_seconds", &source);
        secs == Some(0.0) && bytes.is_some_and(|b| b < 64.0 * 1024.0)
    })
    .await;
    let slot = [("slot", SLOT)];
    assert_eq!(sample(&last, "pgtrail_slot_active", &slot), Some(1.0));
    assert!(sample(&last, "pgtrail_slot_retained_wal_bytes", &slot).unwrap() > 0.0);
    assert!(sample(&last, "pgtrail_slot_safe_wal_size_bytes", &slot)
        .unwrap()
        .is_nan());
    let status = |s: &str| {
        sample(
            &last,
            "pgtrail_slot_wal_status",
            &[("slot", SLOT), ("status", s)],
        )
    };
    assert_eq!(status("reserved"), Some(1.0));
    assert_eq!(
        (status("extended"), status("unreserved"), status("lost")),
        (Some(0.0), Some(0.0), Some(0.0))
    );

    let (status, ready) = get_json(&base, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["ready"], true);
    for check in ["streaming", "store", "lag"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_the_store_while_it_is_down_and_200_once_it_is_back() {
    // The store on its own cluster, so that only the store goes away.
    let source_cluster = tokio::task::block_in_place(Cluster::start);
    let mut store_cluster = tokio::task::block_in_place(Cluster::start);
    source_cluster.create_db("app").await;
    let (section, base) = metrics_section();
    let mut config = Config::for_cluster(&source_cluster);
    config.store_url = store_cluster.url("pgtrail");
    config.extra_toml = section;
    let trail = Pgtrail::new(config);
    let src = source_cluster.client("app").await;
    create_marker_table(&src).await;
    src.batch_execute("CREATE TABLE s (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    trail.setup().await;
    let mut daemon = trail.spawn();
    let ready = |want: StatusCode| {
        let base = base.clone();
        move || {
            let base = base.clone();
            async move {
                match http_client().get(format!("{base}/readyz")).send().await {
                    Ok(res) => res.status() == want,
                    Err(_) => false,
                }
            }
        }
    };
    wait_until(
        "/readyz to answer 200",
        Duration::from_secs(60),
        ready(StatusCode::OK),
    )
    .await;

    tokio::task::block_in_place(|| store_cluster.stop());
    // Changes made while the store is down must arrive later, once each.
    src.batch_execute("INSERT INTO s SELECT g, 0 FROM generate_series(1, 20) g")
        .await
        .unwrap();
    // The session ends at once; the monitor finds the store gone at its next poll.
    let body = readyz_until(&base, "/readyz to fail its store check", |status, body| {
        status == StatusCode::SERVICE_UNAVAILABLE && body["checks"]["store"]["ok"] == false
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["streaming"]["ok"], false, "{body}");
    assert!(
        body["checks"]["streaming"]["reason"]
            .as_str()
            .unwrap()
            .contains("store"),
        "{body}"
    );
    let store = &body["checks"]["store"];
    assert_eq!(store["ok"], false, "{body}");
    let reason = store["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot connect") || reason.contains("checkpoint"),
        "the store check says why: {body}"
    );
    assert!(
        reason.contains(&store_cluster.port().to_string()) || reason.contains("checkpoint"),
        "{body}"
    );
    // The endpoint still answers the other questions.
    let (status, _) = get_json(&base, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    daemon.assert_running();

    tokio::task::block_in_place(|| store_cluster.start_again());
    wait_until(
        "/readyz to answer 200 again",
        Duration::from_secs(90),
        ready(StatusCode::OK),
    )
    .await;
    sync_via(&src, &trail.config.store_url, SYNC_TIMEOUT).await;
    let store = connect(&trail.config.store_url).await.unwrap();
    assert_counts(&store, "public", "s", Counts::new(20, 0, 0, 0)).await;
    let all = scrape(&base).await;
    assert_eq!(
        sample(
            &all,
            "pgtrail_entries_stored_total",
            &[("action", "INSERT")]
        ),
        Some(
            query_value::<i64>(
                &store,
                "SELECT count(*) FROM pgtrail.entries WHERE action = 'INSERT'",
                &[]
            )
            .await as f64
        )
    );
    daemon.terminate().await;
}

/// GETs `base/readyz` until `done` holds of its status and body (30 s at most); the body.
async fn readyz_until(base: &str, what: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = get_json(base, "/readyz").await;
        if done(status, &body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; the last answer: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `request` as raw bytes and returns the status line's code.
async fn raw_status(base: &str, request: &[u8]) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_endpoints_do_not_serve_are_4xx_and_off_means_off() {
    let (section, base) = metrics_section();
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = section).await;
    env.setup().await;
    let mut daemon = env.spawn();
    wait_healthz(&base).await;
    let (status, body) = get_json(&base, "/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("/metrics, /healthz and /readyz"),
        "{body}"
    );
    let res = http_client()
        .post(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let res = http_client()
        .get(format!("{base}/readyz?x=%zz&&="))
        .send()
        .await
        .unwrap();
    assert!(res.status() == StatusCode::OK || res.status() == StatusCode::SERVICE_UNAVAILABLE);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let code = raw_status(&base, garbage).await;
        assert!(
            (400..500).contains(&code),
            "{:?}: {code}",
            String::from_utf8_lossy(garbage)
        );
    }
    daemon.terminate().await;

    // listen = "" turns the endpoints off; an address that is taken leaves them off with a
    // warning. Either way capture runs as before.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_at = taken.local_addr().unwrap();
    for (listen, said) in [
        (String::new(), "metrics.listen is off".to_owned()),
        (
            taken_at.to_string(),
            "cannot listen on metrics.listen".to_owned(),
        ),
    ] {
        let mut config = env.trail.config.clone();
        config.extra_toml = format!("[metrics]\nlisten = {listen:?}\n");
        let trail = Pgtrail::new(config);
        let mut daemon = trail.spawn();
        env.sync().await;
        let off = http_client().get(format!("{base}/healthz")).send().await;
        assert!(off.is_err(), "nothing serves the endpoints");
        assert!(daemon.log().contains(&said), "{}", daemon.log());
        assert!(!daemon.log().contains("ERROR"), "{}", daemon.log());
        daemon.terminate().await;
    }
    drop(taken);
}
