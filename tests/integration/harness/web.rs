//! The web view under test: [`Web`] runs `pgtrail --config F web` on a free port (killed on
//! drop) and reads its pages and API; the HTML helpers pick out what the tests check (row ids,
//! the match count, links, the CSRF token, a diff's rows), and [`read_live_until`] reads the live
//! stream.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio_postgres::Client;

use super::{bin, free_port, Config, TestEnv};

/// `pgtrail --config F web` on a free port, killed on drop.
pub struct Web {
    child: Option<Child>,
    pub base: String,
    port: u16,
    config: PathBuf,
    /// Replaces the test config's `extra_toml` when set (the export tests' `[export]` keys).
    extra_toml: Option<String>,
    log: PathBuf,
    http: reqwest::Client,
    dir: TempDir,
}

/// The test config, its web view listening on `port`.
fn config_with_web(config: &Config, port: u16, web_toml: &str, extra_toml: Option<&str>) -> String {
    let mut config = config.clone();
    config.web_listen = format!("127.0.0.1:{port}");
    config.web_toml = web_toml.to_owned();
    if let Some(extra) = extra_toml {
        config.extra_toml = extra.to_owned();
    }
    config.to_toml()
}

/// An HTTP client that gives up after 30 s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl Web {
    /// With `auth = "none"` (loopback): these tests are about what the view shows, not who may see it.
    pub async fn start(env: &TestEnv) -> Web {
        Web::start_full(env, "auth = \"none\"\n", &[]).await
    }

    /// The same, with extra environment variables for the server.
    pub async fn start_with_env(env: &TestEnv, vars: &[(&str, &str)]) -> Web {
        Web::start_full(env, "auth = \"none\"\n", vars).await
    }

    /// With these `[web]` keys (none: users must sign in).
    pub async fn start_with(env: &TestEnv, web_toml: &str) -> Web {
        Web::start_full(env, web_toml, &[]).await
    }

    pub async fn start_full(env: &TestEnv, web_toml: &str, vars: &[(&str, &str)]) -> Web {
        Web::launch(&env.trail.config, web_toml, None, vars).await
    }

    /// With these `[web]` keys, on the store of `config` (a fleet member's).
    pub async fn start_for(config: &Config, web_toml: &str) -> Web {
        Web::launch(config, web_toml, None, &[]).await
    }

    /// With `auth = "none"` and `extra_toml` in place of the test config's (the export tests'
    /// downloads: who may download is tested in the access tests).
    pub async fn start_extra(env: &TestEnv, extra_toml: &str) -> Web {
        Web::launch(
            &env.trail.config,
            "auth = \"none\"\n",
            Some(extra_toml),
            &[],
        )
        .await
    }

    async fn launch(
        config: &Config,
        web_toml: &str,
        extra_toml: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Web {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("pgtrail-it-web-")
            .tempdir()
            .unwrap();
        let text = config_with_web(config, port, web_toml, extra_toml);
        let config = dir.path().join("web.toml");
        fs::write(&config, text).unwrap();
        let log = dir.path().join("web.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .arg("web")
            .env_remove("PGTRAIL_CONFIG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn pgtrail web");
        let web = Web {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
            config,
            extra_toml: extra_toml.map(str::to_owned),
            log,
            http: http_client(),
            dir,
        };
        web.wait_ready().await;
        web
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.http.get(&self.base).send().await.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the web view did not answer within 30 s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rewrites the config file with other `[web]` keys and sends SIGHUP.
    pub fn reload_with(&self, env: &TestEnv, web_toml: &str) {
        let text = config_with_web(
            &env.trail.config,
            self.port,
            web_toml,
            self.extra_toml.as_deref(),
        );
        fs::write(&self.config, text).unwrap();
        self.hangup();
    }

    /// Writes `text` as the config file, whatever it is, and sends SIGHUP.
    pub fn reload_raw(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
        self.hangup();
    }

    fn hangup(&self) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill({pid}, SIGHUP) failed");
    }

    /// Stops the server as SIGTERM does and waits (at most 30 s) for it to exit cleanly: what it
    /// writes on the way out (the summaries of failed sign-ins) is in the store afterwards.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the web view runs");
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill({}, SIGTERM) failed", child.id());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the web view did not stop within 30 s of SIGTERM\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{status}\n{}", self.log());
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the web view runs").id()
    }

    /// A private directory that lives as long as the server (its config and log are in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the server logged a panic or an error.
    pub fn assert_quiet(&self) {
        let log = self.log();
        assert!(!log.contains("panicked") && !log.contains("ERROR"), "{log}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Status, headers and body of `GET path`.
    pub async fn fetch(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        (status, headers, body)
    }

    /// The body of a page that must answer 200 and must not fail in the server.
    pub async fn page(&self, path: &str) -> String {
        let (status, _, body) = self.fetch(path).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET {path}:\n{body}\n--- server log ---\n{}",
            self.log()
        );
        body
    }

    /// A JSON answer with status 200.
    pub async fn api(&self, path: &str) -> Value {
        let body = self.page(path).await;
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// Ids of `GET /api/v1/entries?query` (one page).
    pub async fn ids(&self, query: &str) -> Vec<i64> {
        let v = self.api(&format!("/api/v1/entries?{query}")).await;
        ids_of(&v)
    }

    /// Every id the API gives for `query`, walking `next_cursor` with pages of `limit`.
    pub async fn walk(&self, query: &str, limit: usize) -> Vec<i64> {
        self.walk_from(query, limit, None).await
    }

    /// [`Web::walk`] from `cursor` on (from the first page with `None`).
    pub async fn walk_from(&self, query: &str, limit: usize, cursor: Option<String>) -> Vec<i64> {
        let mut all = Vec::new();
        let mut cursor = cursor;
        for _ in 0..1000 {
            let mut q = format!("{query}&limit={limit}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", enc(c)));
            }
            let v = self.api(&format!("/api/v1/entries?{q}")).await;
            let page = ids_of(&v);
            assert!(page.len() <= limit, "{q}: page longer than the limit");
            all.extend(page);
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
        panic!("{query}: more than 1000 pages");
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- pgtrail web log ---\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster whose store is set up (no daemon), and the web view on it.
pub async fn store_and_web() -> (TestEnv, Client, Web) {
    let (env, store) = TestEnv::with_store().await;
    let web = Web::start(&env).await;
    (env, store, web)
}

/// GET `url` (a download may take up to two minutes): status, content type, content
/// disposition, body.
pub async fn download(url: &str) -> (StatusCode, String, String, Vec<u8>) {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (ct, cd) = (header("content-type"), header("content-disposition"));
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("body of {url}: {e}"))
        .to_vec();
    (status, ct, cd, body)
}

// ---------------------------------------------------------------------------------------------
// What the tests read from JSON and HTML
// ---------------------------------------------------------------------------------------------

/// The ids of an API answer's `entries`, in order.
pub fn ids_of(v: &Value) -> Vec<i64> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array: {v}"))
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTML text back to plain text (askama writes `&#60;` and friends).
pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').unwrap_or(0);
        let entity = &rest[1..end.max(1)];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) if end > 0 => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `href` of the first link with `rel="REL"`.
pub fn link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\""))?;
    let start = html[..at].rfind("href=\"")? + 6;
    let end = start + html[start..].find('"')?;
    Some(unescape(&html[start..end]))
}

/// Entry ids in the order their rows appear in a log table (`<tr id="e123">`).
pub fn row_ids(html: &str) -> Vec<i64> {
    html.split("<tr id=\"e")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// Every entry a page links to (`href="/entries/123"`), wherever the link is.
pub fn linked_entry_ids(html: &str) -> BTreeSet<i64> {
    html.match_indices("href=\"/entries/")
        .filter_map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

/// The text of the match count (`<p class="count" id="count">…</p>`).
pub fn count_text(html: &str) -> String {
    let at = html
        .find("id=\"count\"")
        .unwrap_or_else(|| panic!("no count in:\n{html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = start + rest[start..].find('<').unwrap();
    unescape(rest[start..end].trim())
}

/// The CSRF token of a page's forms.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The `<tr class="col …">` rows of a diff table, as (class, column name), in order.
pub fn diff_rows(html: &str) -> Vec<(String, String)> {
    html.split("<tr class=\"col ")
        .skip(1)
        .map(|s| {
            let class = s[..s.find('"').unwrap()].to_owned();
            let name_at = s.find("class=\"name\">").unwrap() + 13;
            let name = s[name_at..name_at + s[name_at..].find('<').unwrap()]
                .trim()
                .to_owned();
            (class, unescape(&name))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The live stream
// ---------------------------------------------------------------------------------------------

/// Reads server-sent events from `resp` until one of type `entry` carries `id`; everything read.
pub async fn read_live_until(resp: &mut reqwest::Response, id: i64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut buf = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no live event for entry {id} within {timeout:?}; got:\n{buf}"
        );
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => panic!("the live stream ended; got:\n{buf}"),
            Ok(Err(e)) => panic!("reading the live stream: {e}"),
            Err(_) => continue,
        }
        if live_event(&buf, id).is_some() {
            return buf;
        }
    }
}

/// The `entry` event for `id` in what a live stream sent.
pub fn live_event(stream: &str, id: i64) -> Option<&str> {
    stream
        .split("\n\n")
        .find(|event| event.contains("event: entry") && event.contains(&format!("id: {id}\n")))
}
