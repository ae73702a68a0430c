//! A real Prometheus (Debian's `prometheus`, which `scripts/install-deps.sh` installs) scrapes
//! `pgtrail run`'s `/metrics` and answers PromQL over its HTTP API with the entries the store
//! holds and the lag.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::metrics::metrics_section;
use crate::harness::*;

/// A Prometheus server of its own on a free port, scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` (and a line saying why) where Debian's prometheus is not installed.
    fn start(target: &str) -> Option<Prometheus> {
        let bin = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::Builder::new()
            .prefix("pgtrail-it-prom-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: pgtrail\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Some(Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    /// Asks `ask` until it answers (60 s at most): Prometheus scrapes every second, and has
    /// to start first.
    async fn until<'a, T, F, Fut>(&'a self, what: &str, ask: F) -> T
    where
        F: Fn(&'a Prometheus) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = std::time::Instant::now();
        loop {
            if let Some(answer) = ask(self).await {
                return answer;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus did not answer with {what} within 60 s:\n{}",
                std::fs::read_to_string(self._dir.path().join("prometheus.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The value of the instant vector `query` returns, when it has exactly one sample.
    async fn query_one(&self, query: &str) -> Option<f64> {
        let res = http_client()
            .get(format!("{}/api/v1/query?query={}", self.base, enc(query)))
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_answers_with_the_stored_entries() {
    let (section, base) = metrics_section();
    let target = base.trim_start_matches("http://").to_owned();
    let Some(prometheus) = Prometheus::start(&target) else {
        eprintln!(
            "SKIPPED prometheus_scrapes_the_daemon…: Debian's prometheus is not installed \
             (bash scripts/install-deps.sh installs it)"
        );
        return;
    };
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.extra_toml = section).await;
    let src = env.source_with("CREATE TABLE p (id int PRIMARY KEY)").await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO p SELECT generate_series(1, 40)")
        .await
        .unwrap();
    src.batch_execute("DELETE FROM p WHERE id <= 7")
        .await
        .unwrap();
    env.sync().await;
    let store = env.store().await;
    assert_counts(&store, "public", "p", Counts::new(40, 0, 7, 0)).await;
    let inserts: i64 = query_value(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE action = 'INSERT'",
        &[],
    )
    .await;

    // Prometheus's own answer, over its HTTP API, once it has scraped the stored figures.
    let q = |action: &str| {
        format!("sum(pgtrail_entries_stored_total{{job=\"pgtrail\",action=\"{action}\"}})")
    };
    let want = (Some(inserts as f64), Some(7.0));
    let answered = prometheus
        .until("the stored entries", |p| async move {
            let answer = (
                p.query_one(&q("INSERT")).await,
                p.query_one(&q("DELETE")).await,
            );
            (answer == want).then_some(answer)
        })
        .await;
    assert_eq!(answered, want);
    let lag = "pgtrail_replication_lag_bytes{job=\"pgtrail\",source=\"app\"}";
    let seen = prometheus
        .until("the lag series", |p| async move { p.query_one(lag).await })
        .await;
    assert!(seen >= 0.0);
    let up = prometheus.query_one("up{job=\"pgtrail\"}").await;
    assert_eq!(up, Some(1.0), "Prometheus finds the target up");
    daemon.terminate().await;
}
