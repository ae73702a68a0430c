//! The web view over real HTTP against a real store: the `pgtrail web` process (and `pgtrail
//! run`, which serves it beside capture), a private PostgreSQL 15 per test.
//!
//! Most tests write synthetic entries straight into `pgtrail.entries`, so that every filter,
//! sort and context field (actor, role, IP… which capture does not fill yet) can be pinned with
//! exact expectations; [`web_end_to_end_on_real_capture`] runs the real daemon on a real source
//! and checks what it stored as the web view shows it, down to running the revert SQL.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio_postgres::Client;

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// A web server under test
// ---------------------------------------------------------------------------------------------

/// `pgtrail --config F web` on a free port, killed on drop.
pub(crate) struct Web {
    child: Option<Child>,
    pub(crate) base: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
    _dir: TempDir,
}

/// The test config, its web view listening on `port`.
fn config_with_web(env: &TestEnv, port: u16, web_toml: &str) -> String {
    let mut config = env.trail.config.clone();
    config.web_listen = format!("127.0.0.1:{port}");
    config.web_toml = web_toml.to_owned();
    config.to_toml()
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl Web {
    /// With `auth = "none"` (loopback): these tests are about what the view shows, not who may see it.
    async fn start(env: &TestEnv) -> Web {
        Web::start_full(env, "auth = \"none\"\n", &[]).await
    }

    /// The same, with extra environment variables for the server.
    async fn start_with_env(env: &TestEnv, vars: &[(&str, &str)]) -> Web {
        Web::start_full(env, "auth = \"none\"\n", vars).await
    }

    /// With these `[web]` keys (none: users must sign in).
    pub(crate) async fn start_with(env: &TestEnv, web_toml: &str) -> Web {
        Web::start_full(env, web_toml, &[]).await
    }

    pub(crate) async fn start_full(env: &TestEnv, web_toml: &str, vars: &[(&str, &str)]) -> Web {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("pgtrail-it-web-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("web.toml");
        fs::write(&config, config_with_web(env, port, web_toml)).unwrap();
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
            log,
            http: http_client(),
            _dir: dir,
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
    pub(crate) fn reload_with(&self, env: &TestEnv, web_toml: &str) {
        fs::write(&self.config, config_with_web(env, self.port, web_toml)).unwrap();
        self.hangup();
    }

    /// Writes `text` as the config file, whatever it is, and sends SIGHUP.
    pub(crate) fn reload_raw(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
        self.hangup();
    }

    fn hangup(&self) {
        let pid = self.child.as_ref().expect("the web view runs").id();
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill({pid}, SIGHUP) failed");
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Status, headers and body of `GET path`. Never a 5xx unless `allow_5xx`.
    async fn fetch(&self, path: &str) -> (StatusCode, HeaderMap, String) {
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
    async fn page(&self, path: &str) -> String {
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
    async fn api(&self, path: &str) -> Value {
        let body = self.page(path).await;
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// Ids of `GET /api/v1/entries?query` (one page).
    async fn ids(&self, query: &str) -> Vec<i64> {
        let v = self.api(&format!("/api/v1/entries?{query}")).await;
        ids_of(&v)
    }

    /// Every id the API gives for `query`, walking `next_cursor` with pages of `limit`.
    async fn walk(&self, query: &str, limit: usize) -> Vec<i64> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
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

fn ids_of(v: &Value) -> Vec<i64> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array: {v}"))
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
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
fn unescape(s: &str) -> String {
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
fn link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\""))?;
    let start = html[..at].rfind("href=\"")? + 6;
    let end = start + html[start..].find('"')?;
    Some(unescape(&html[start..end]))
}

/// Entry ids in the order their rows appear in a log table (`<tr id="e123">`).
fn row_ids(html: &str) -> Vec<i64> {
    html.split("<tr id=\"e")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The text of the match count (`<p class="count" id="count">…</p>`).
fn count_text(html: &str) -> String {
    let start = html.find("id=\"count\">").expect("count") + 11;
    unescape(&html[start..start + html[start..].find('<').unwrap()])
}

// ---------------------------------------------------------------------------------------------
// Synthetic entries
// ---------------------------------------------------------------------------------------------

/// An entry written straight into the store.
#[derive(Debug, Clone)]
struct Synth {
    at: DateTime<Utc>,
    xid: i64,
    schema: String,
    table: String,
    action: &'static str,
    pk: Option<String>,
    before: Option<String>,
    after: Option<String>,
    changed: Option<String>,
    actor: Option<String>,
    role: Option<String>,
    ip: Option<String>,
    app: Option<String>,
    source: Option<String>,
    remarks: Option<String>,
}

impl Synth {
    fn new(table: &str, action: &'static str) -> Synth {
        let (schema, name) = table.split_once('.').unwrap();
        Synth {
            at: Utc::now(),
            xid: 1000,
            schema: schema.into(),
            table: name.into(),
            action,
            pk: None,
            before: None,
            after: None,
            changed: None,
            actor: None,
            role: None,
            ip: None,
            app: None,
            source: None,
            remarks: None,
        }
    }
    fn pk(mut self, pk: &str) -> Self {
        self.pk = Some(pk.into());
        self
    }
    fn before(mut self, v: &str) -> Self {
        self.before = Some(v.into());
        self
    }
    fn after(mut self, v: &str) -> Self {
        self.after = Some(v.into());
        self
    }
    fn changed(mut self, v: &str) -> Self {
        self.changed = Some(v.into());
        self
    }
    fn at(mut self, t: DateTime<Utc>) -> Self {
        self.at = t;
        self
    }
    fn xid(mut self, x: i64) -> Self {
        self.xid = x;
        self
    }
    fn who(mut self, actor: Option<&str>, role: Option<&str>) -> Self {
        self.actor = actor.map(Into::into);
        self.role = role.map(Into::into);
        self
    }
    fn from(mut self, ip: Option<&str>, app: Option<&str>, source: Option<&str>) -> Self {
        self.ip = ip.map(Into::into);
        self.app = app.map(Into::into);
        self.source = source.map(Into::into);
        self
    }
    fn remarks(mut self, r: &str) -> Self {
        self.remarks = Some(r.into());
        self
    }
    fn context(&self) -> String {
        let j = |v: &Option<String>| serde_json::to_string(v).unwrap();
        format!(
            "{{\"db_user\":{},\"client_addr\":{},\"application_name\":{},\"actor\":{},\"source\":{},\"remarks\":{}}}",
            j(&self.role),
            j(&self.ip),
            j(&self.app),
            j(&self.actor),
            j(&self.source),
            j(&self.remarks)
        )
    }
}

/// Writes `entries` in order (ids ascending) and returns their ids.
async fn store_entries(store: &Client, entries: &[Synth]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let table = pgtrail::table::TableName::new(e.schema.clone(), e.table.clone());
        let row_key =
            e.pk.as_deref()
                .map(|pk| pgtrail::entry::row_key(&table, pk));
        let lsn = format!("0/{:X}", 0x1000_0000u64 + i as u64 * 0x100);
        // The plain context columns, as pgtrail's writer fills them.
        let cols = pgtrail::store::context::ContextColumns::of(&e.context());
        let id: i64 = store
            .query_one(
                "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, \
                 before, after, changed_columns, context, row_key, actor, client_addr) VALUES ($1, $2, $3::text::pg_lsn, $4, $5, $6, \
                 $7::text::json, $8::text::json, $9::text::json, $10::text::json, $11::text::json, $12, $13, $14) RETURNING id",
                &[&e.at, &e.xid, &lsn, &e.schema, &e.table, &e.action, &e.pk, &e.before, &e.after, &e.changed, &e.context(), &row_key, &cols.actor, &cols.client_addr],
            )
            .await
            .unwrap_or_else(|err| panic!("insert synthetic entry {e:?}: {err}"))
            .get(0);
        ids.push(id);
    }
    ids
}

/// A cluster whose store is set up (no daemon), and the web view on it.
async fn store_and_web() -> (TestEnv, Client, Web) {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    let web = Web::start(&env).await;
    (env, store, web)
}

fn pick(ids: &[i64], which: &[usize]) -> Vec<i64> {
    which.iter().map(|&i| ids[i]).collect()
}

fn sorted_desc(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_filters_each_and_combined() {
    let (_env, store, web) = store_and_web().await;
    let now = Utc::now();
    let d = |days: i64| now - TimeDelta::days(days);
    let data = vec![
        // 0
        Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"status":"new","note":"Deliver to Berlin"}"#)
            .at(d(9))
            .who(Some("alice"), Some("app_rw"))
            .from(Some("10.0.0.5"), Some("shop"), Some("web")),
        // 1
        Synth::new("public.orders", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1,"status":"new","note":"Deliver to Berlin"}"#)
            .after(r#"{"id":1,"status":"paid","note":"Deliver to Berlin"}"#)
            .changed(r#"["status"]"#)
            .at(d(5))
            .who(Some("bob"), Some("app_rw"))
            .from(Some("10.1.2.3"), Some("shop"), Some("api")),
        // 2
        Synth::new("public.orders", "DELETE")
            .pk(r#"{"id":2}"#)
            .before(r#"{"id":2,"status":"void","note":"100% off_sale"}"#)
            .at(d(3))
            .who(None, Some("admin"))
            .from(Some("192.168.1.9"), Some("psql"), None),
        // 3
        Synth::new("public.customers", "INSERT")
            .pk(r#"{"id":7}"#)
            .after(r#"{"id":7,"name":"Ada","status":"vip"}"#)
            .at(d(2))
            .who(Some("alice"), Some("app_ro"))
            .from(Some("2001:db8::1"), Some("crm"), Some("web")),
        // 4
        Synth::new("public.customers", "UPDATE")
            .pk(r#"{"id":7}"#)
            .before(r#"{"id":7,"name":"Ada","status":"vip"}"#)
            .after(r#"{"id":7,"name":"Ada Lovelace","status":"vip"}"#)
            .changed(r#"["name"]"#)
            .at(now - TimeDelta::minutes(30))
            .who(Some("carol"), Some("app_rw"))
            .from(None, Some("crm"), Some("batch")),
        // 5: composite key, no context at all
        Synth::new("sales.Order Items", "INSERT")
            .pk(r#"{"order_id":1,"line":2}"#)
            .after(r#"{"order_id":1,"line":2,"sku":"A-1"}"#)
            .at(now - TimeDelta::minutes(10)),
        // 6: a text key "5"
        Synth::new("public.tags", "INSERT")
            .pk(r#"{"code":"5"}"#)
            .after(r#"{"code":"5","label":"five"}"#)
            .at(now - TimeDelta::minutes(5)),
        // 7: an integer key 5
        Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":5}"#)
            .after(r#"{"id":5,"status":"new","note":"status unknown"}"#)
            .at(now - TimeDelta::minutes(4))
            .who(None, Some("app_rw"))
            .from(Some("10.0.0.77"), Some("shop"), Some("web")),
        // 8
        Synth::new("public.orders", "TRUNCATE")
            .at(now - TimeDelta::minutes(3))
            .who(None, Some("admin")),
        // 9: a table name with a dot
        Synth::new("public.we.ird", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"v":"x"}"#)
            .at(now - TimeDelta::minutes(2)),
    ];
    // "public.we.ird" split at the first dot above: fix the table name.
    let mut data = data;
    data[9].schema = "public".into();
    data[9].table = "we.ird".into();
    let ids = store_entries(&store, &data).await;

    let fmt = |t: DateTime<Utc>| enc(&t.to_rfc3339());
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("".into(), (0..10).collect()),
        ("action=DELETE".into(), vec![2]),
        (
            "action=insert&action=DELETE".into(),
            vec![0, 2, 3, 5, 6, 7, 9],
        ),
        ("action=UPDATE,TRUNCATE".into(), vec![1, 4, 8]),
        ("table=public.orders".into(), vec![0, 1, 2, 7, 8]),
        (
            "table=public.orders&table=public.customers".into(),
            vec![0, 1, 2, 3, 4, 7, 8],
        ),
        (format!("table={}", enc("sales.\"Order Items\"")), vec![5]),
        (format!("table={}", enc("public.\"we.ird\"")), vec![9]),
        // Actor: the application actor, else the database role.
        ("actor=alice".into(), vec![0, 3]),
        ("actor=admin".into(), vec![2, 8]),
        ("actor=app_rw".into(), vec![7]),
        ("role=app_rw".into(), vec![0, 1, 4, 7]),
        ("ip=10.0.0.5".into(), vec![0]),
        (format!("ip={}", enc("10.0.0.0/8")), vec![0, 1, 7]),
        (format!("ip={}", enc("10.0.0.0/24")), vec![0, 7]),
        (format!("ip={}", enc("2001:db8::/32")), vec![3]),
        ("ip=192.168.1.9".into(), vec![2]),
        ("app=crm".into(), vec![3, 4]),
        ("source=web".into(), vec![0, 3, 7]),
        (format!("from={}", fmt(d(4))), vec![2, 3, 4, 5, 6, 7, 8, 9]),
        (format!("to={}", fmt(d(4))), vec![0, 1]),
        (
            format!("from={}&to={}", fmt(d(6)), fmt(d(1))),
            vec![1, 2, 3],
        ),
        ("last=1h".into(), vec![4, 5, 6, 7, 8, 9]),
        ("last=15m".into(), vec![5, 6, 7, 8, 9]),
        ("last=7d".into(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        // A date alone as the upper bound means the end of that day.
        (
            format!("to={}", (now + TimeDelta::days(1)).format("%Y-%m-%d")),
            (0..10).collect(),
        ),
        // Primary key: a value in any key column, or the key as JSON; with one table, by row_key.
        ("pk=5".into(), vec![6, 7]),
        ("pk=5&table=public.orders".into(), vec![7]),
        ("pk=5&table=public.tags".into(), vec![6]),
        ("pk=1&table=public.orders".into(), vec![0, 1]),
        (format!("pk={}", enc(r#"{"id": 1}"#)), vec![0, 1, 9]),
        (
            format!("pk={}&table=public.orders", enc(r#"{"id": 1}"#)),
            vec![0, 1],
        ),
        (
            format!("pk=2&table={}", enc("sales.\"Order Items\"")),
            vec![5],
        ),
        (
            format!(
                "pk={}&table={}",
                enc(r#"{"order_id":1,"line":2}"#),
                enc("sales.\"Order Items\"")
            ),
            vec![5],
        ),
        // Free text: values only (not column names), case-insensitive, wildcards literal.
        ("q=berlin".into(), vec![0, 1]),
        ("q=status".into(), vec![7]),
        (format!("q={}", enc("100%")), vec![2]),
        (format!("q={}", enc("100_")), vec![]),
        (format!("q={}", enc("1%0")), vec![]),
        (format!("q={}", enc("off_s")), vec![2]),
        ("q=lovelace".into(), vec![4]),
        // Combinations.
        ("action=INSERT&actor=alice&source=web".into(), vec![0, 3]),
        (
            format!("table=public.orders&ip={}&last=7d", enc("10.0.0.0/8")),
            vec![1, 7],
        ),
        ("role=app_rw&app=shop&action=UPDATE".into(), vec![1]),
        ("q=ada&table=public.customers&action=UPDATE".into(), vec![4]),
        ("actor=nobody".into(), vec![]),
    ];
    for (query, which) in &cases {
        let want = sorted_desc(pick(&ids, which));
        assert_eq!(web.ids(query).await, want, "API filter {query:?}");
        let html = web.page(&format!("/?{query}")).await;
        assert_eq!(row_ids(&html), want, "page filter {query:?}");
        let n = which.len();
        let expected_count = if n == 1 {
            "1 entry".to_string()
        } else {
            format!("{n} entries")
        };
        assert_eq!(count_text(&html), expected_count, "count for {query:?}");
    }

    // The page keeps the filters in its links: a sort header link still filters.
    let html = web.page("/?table=public.orders&actor=alice").await;
    assert!(
        unescape(&html).contains("/?table=public.orders&actor=alice&sort=actor&dir=asc"),
        "sort links keep the filters"
    );
    // Clicking a cell narrows the current view.
    assert!(
        unescape(&html).contains("href=\"/?table=public.orders&actor=alice&ip=10.0.0.5\""),
        "IP cell narrows the view"
    );
    // The form shows the filter values back.
    let html = web
        .page("/?actor=alice&action=DELETE&table=public.orders&last=24h")
        .await;
    assert!(html.contains("name=\"actor\" value=\"alice\""));
    assert!(html.contains("value=\"DELETE\" checked"));
    assert!(html.contains("<input type=\"hidden\" name=\"table\" value=\"public.orders\">"));
    assert!(html.contains("<option value=\"24h\" selected>"));
    assert!(
        !web.log().contains("panicked") && !web.log().contains("ERROR"),
        "{}",
        web.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Sorting, keyset pagination, counts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sorts_and_keyset_pages_stay_stable_while_entries_arrive() {
    let (_env, store, web) = store_and_web().await;
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
    let ids = store_entries(&store, &data).await;

    // The order each sort must give: its key (as the SQL computes it), then id.
    let key = |s: &Synth, sort: &str| -> Vec<String> {
        match sort {
            "time" => vec![],
            "actor" => vec![s.actor.clone().or(s.role.clone()).unwrap_or_default()],
            "ip" => vec![s.ip.clone().unwrap_or_default()],
            "action" => vec![s.action.to_string()],
            "table" => vec![s.schema.clone(), s.table.clone()],
            _ => unreachable!(),
        }
    };
    for sort in ["time", "actor", "ip", "action", "table"] {
        for dir in ["asc", "desc"] {
            let mut want: Vec<(Vec<String>, i64)> = data
                .iter()
                .zip(&ids)
                .map(|(s, id)| (key(s, sort), *id))
                .collect();
            want.sort();
            if dir == "desc" {
                want.reverse();
            }
            let want: Vec<i64> = want.into_iter().map(|(_, id)| id).collect();
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
    let mut want: Vec<(Vec<String>, i64)> = data
        .iter()
        .zip(&ids)
        .filter(|(s, _)| s.action == "INSERT")
        .map(|(s, id)| (key(s, "actor"), *id))
        .collect();
    want.sort();
    assert_eq!(got, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());

    // Pagination across inserts, newest first: page 2 continues exactly where page 1 ended.
    let first = web.api("/api/v1/entries?limit=5").await;
    let page1 = ids_of(&first);
    assert_eq!(page1, sorted_desc(ids.clone())[..5].to_vec());
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let newer = store_entries(
        &store,
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
        sorted_desc(ids.clone())[5..10].to_vec(),
        "page 2 is unmoved by new entries"
    );
    // And by actor: a new entry sorting before the cursor is not seen again later, one after it is.
    let a1 = web.api("/api/v1/entries?sort=actor&limit=6").await;
    let c = a1["next_cursor"].as_str().unwrap().to_owned();
    let late = store_entries(
        &store,
        &[
            Synth::new("public.a", "INSERT").who(Some("aaa"), None),
            Synth::new("public.a", "INSERT").who(Some("zzz"), None),
        ],
    )
    .await;
    let mut rest = Vec::new();
    let mut cursor = Some(c);
    while let Some(c) = cursor {
        let v = web
            .api(&format!(
                "/api/v1/entries?sort=actor&limit=6&cursor={}",
                enc(&c)
            ))
            .await;
        rest.extend(ids_of(&v));
        cursor = v["next_cursor"].as_str().map(str::to_owned);
    }
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

    // HTML pages: Next then Previous gives back the same rows.
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

    // Counts: exact, then "more than" past the cap.
    let total = ids.len() + newer.len() + late.len();
    assert_eq!(count_text(&web.page("/").await), format!("{total} entries"));
    // With the row_key the daemon writes for every entry with a key.
    let bulk = pgtrail::table::TableName::new("bulk", "t");
    let row_keys: Vec<i64> = (1..=10050)
        .map(|g| pgtrail::entry::row_key(&bulk, &format!("{{\"id\":{g}}}")))
        .collect();
    store
        .execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, context, row_key) \
             SELECT now(), 5, '0/1'::pg_lsn, 'bulk', 't', 'INSERT', format('{\"id\":%s}', g)::json, format('{\"id\":%s}', g)::json, \
             '{}'::json, k FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, g)",
            &[&row_keys],
        )
        .await
        .unwrap();
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
    assert!(
        !web.log().contains("panicked") && !web.log().contains("ERROR"),
        "{}",
        web.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Free text bounded by time, and the plain context columns
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_free_text_search_stops_on_time_and_pages_on_without_skipping() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
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
                 primary_key, after, context) OVERRIDING SYSTEM VALUE \
                 VALUES ($1::bigint, now() - make_interval(mins => $2), $3, '0/1', 'public', 'notes', 'INSERT', \
                 json_build_object('id', $1::bigint), json_build_object('id', $1::bigint, 'note', $4::text), '{}')",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_context_columns_of_existing_entries_are_filled_by_the_migration() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    // The store as migration 2 left it: no plain context columns.
    store
        .batch_execute(
            "ALTER TABLE pgtrail.entries DROP COLUMN actor, DROP COLUMN client_addr;
             DELETE FROM pgtrail.schema_migrations WHERE version = 3",
        )
        .await
        .unwrap();
    let contexts: [(&str, Option<&str>, Option<&str>); 5] = [
        (
            r#"{"db_user":"app","client_addr":"10.0.0.5","actor":"alice"}"#,
            Some("alice"),
            Some("10.0.0.5"),
        ),
        (
            r#"{"db_user":"app","client_addr":"2001:db8::1","actor":null}"#,
            Some("app"),
            Some("2001:db8::1"),
        ),
        (
            r#"{"db_user":null,"client_addr":null,"actor":null}"#,
            None,
            None,
        ),
        (
            r#"{"db_user":"etl","client_addr":"not-an-address"}"#,
            Some("etl"),
            None,
        ),
        ("{}", None, None),
    ];
    let mut ids = Vec::new();
    for (i, (context, _, _)) in contexts.iter().enumerate() {
        let id: i64 = store
            .query_one(
                "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, after, context) VALUES (now(), $1::bigint, '0/1', 'public', 't', 'INSERT', \
                 json_build_object('id', $1::bigint), json_build_object('id', $1::bigint), $2::text::json) RETURNING id",
                &[&(i as i64 + 1), context],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }

    // setup applies what the store lacks: migration 3 fills the columns.
    env.setup().await;
    let got: Vec<(Option<String>, Option<String>)> = store
        .query(
            "SELECT actor, host(client_addr) FROM pgtrail.entries ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(Option<String>, Option<String>)> = contexts
        .iter()
        .map(|(_, a, ip)| (a.map(str::to_owned), ip.map(str::to_owned)))
        .collect();
    assert_eq!(got, expected);
    let generated: i64 = store
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pgtrail' \
             AND table_name = 'entries' AND column_name IN ('actor', 'client_addr') AND is_generated = 'NEVER'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(generated, 2, "plain columns, filled by pgtrail from now on");

    // The web view finds the old entries through them.
    let web = Web::start(&env).await;
    assert_eq!(web.ids("actor=alice").await, vec![ids[0]]);
    assert_eq!(web.ids("actor=app").await, vec![ids[1]]);
    assert_eq!(web.ids("actor=etl").await, vec![ids[3]]);
    assert_eq!(web.ids("ip=10.0.0.5").await, vec![ids[0]]);
    assert_eq!(
        web.ids(&format!("ip={}", enc("2001:db8::1"))).await,
        vec![ids[1]]
    );
    assert_eq!(
        web.ids(&format!("ip={}", enc("2001:db8::/32"))).await,
        vec![ids[1]]
    );
    // Sorted by actor: none first (as the empty text), then A to Z; by IP likewise.
    assert_eq!(
        web.walk("sort=actor&dir=asc", 2).await,
        pick(&ids, &[2, 4, 0, 1, 3])
    );
    assert_eq!(
        web.walk("sort=ip&dir=desc", 2).await,
        pick(&ids, &[1, 0, 4, 3, 2])
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input, errors, headers, the OpenAPI document
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_bad_input_is_a_400_that_says_what_is_wrong() {
    let (env, store, web) = store_and_web().await;
    store_entries(
        &store,
        &[Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1}"#)],
    )
    .await;
    let time_cursor = web.api("/api/v1/entries?limit=1").await;
    // One entry, limit 1: there is no next cursor; make one with two entries.
    assert!(time_cursor["next_cursor"].is_null());
    store_entries(
        &store,
        &[Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":2}"#)
            .after(r#"{"id":2}"#)],
    )
    .await;
    let v = web.api("/api/v1/entries?limit=1").await;
    let cursor = enc(v["next_cursor"].as_str().unwrap());

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
        ("last=1h&from=2024-01-01".into(), "either"),
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

    // The OpenAPI document is 3.1 and describes both endpoints and their errors.
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

    // With the store down: 503 with a message, no 500; back when it is back.
    let mut cluster = env.cluster;
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

// ---------------------------------------------------------------------------------------------
// View Difference, history, transactions, escaping
// ---------------------------------------------------------------------------------------------

/// The `<tr class="col …">` rows of a diff table, as (class, column name), in order.
fn diff_rows(html: &str) -> Vec<(String, String)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_difference_history_transaction_and_escaping() {
    let (_env, store, web) = store_and_web().await;
    let long_old = (1..=40)
        .map(|i| format!("line {i} of the contract"))
        .collect::<Vec<_>>()
        .join("\n");
    let long_new = long_old.replace("line 17 of the contract", "line 17 of the amended contract");
    let doc_old = r#"{"a":1,"nested":{"keep":[1,2,3],"flag":false},"z":"same"}"#;
    let doc_new = r#"{"a":1,"nested":{"keep":[1,2,3],"flag":true},"z":"same"}"#;
    let hostile = "<script>alert(1)</script>";
    let esc = |s: &str| serde_json::to_string(s).unwrap();
    let data = vec![
        // 0 INSERT
        Synth::new("public.docs", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(&format!(
                r#"{{"id":1,"title":"t","body":{},"doc":{doc_old},"price":"10.50","n":null}}"#,
                esc(&long_old)
            ))
            .xid(501),
        // 1 UPDATE of long text and JSON, REPLICA IDENTITY FULL
        Synth::new("public.docs", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(&format!(
                r#"{{"id":1,"title":"t","body":{},"doc":{doc_old},"price":"10.50","n":null}}"#,
                esc(&long_old)
            ))
            .after(&format!(
                r#"{{"id":1,"title":"t2","body":{},"doc":{doc_new},"price":"10.50","n":null}}"#,
                esc(&long_new)
            ))
            .changed(r#"["title","body","doc"]"#)
            .xid(502)
            .who(Some("alice"), Some("app_rw"))
            .from(Some("10.0.0.5"), Some("cms"), Some("web"))
            .remarks("ticket 42"),
        // 2 UPDATE under REPLICA IDENTITY DEFAULT: only the key before
        Synth::new("public.docs", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1}"#)
            .after(r#"{"id":1,"title":"t3","body":"b","doc":null,"price":"1","n":2}"#)
            .xid(503),
        // 3 DELETE
        Synth::new("public.docs", "DELETE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1,"title":"it's \\ here","body":"b","doc":null,"price":"1","n":2}"#)
            .xid(504),
        // 4 TRUNCATE
        Synth::new("public.docs", "TRUNCATE").xid(504),
        // 5 hostile everything
        Synth::new("public.x", "INSERT")
            .pk(&format!(r#"{{"id":{}}}"#, esc(hostile)))
            .after(&format!(
                r#"{{"id":{},{}:{},"q":"\" onmouseover=\"alert(2)"}}"#,
                esc(hostile),
                esc(hostile),
                esc(hostile)
            ))
            .who(Some(hostile), Some("<b>role</b>"))
            .from(Some("10.0.0.1"), Some(hostile), Some(hostile))
            .remarks(hostile)
            .xid(505),
        // 6 UPDATE with a hostile before and after
        Synth::new("public.x", "UPDATE")
            .pk(&format!(r#"{{"id":{}}}"#, esc(hostile)))
            .before(&format!(
                r#"{{"id":{},"v":{}}}"#,
                esc(hostile),
                esc(&format!("{hostile} old"))
            ))
            .after(&format!(
                r#"{{"id":{},"v":{}}}"#,
                esc(hostile),
                esc(&format!("{hostile} new"))
            ))
            .changed(r#"["v"]"#)
            .xid(506),
    ];
    let mut data = data;
    data[5].table = "<script>t</script>".into();
    data[6].table = "<script>t</script>".into();
    data.push(
        Synth::new("public.docs", "DDL")
            .after(r#"{"command_tag":"ALTER TABLE","object_type":"table","object_identity":"public.docs","sql":"ALTER TABLE docs ADD COLUMN extra int"}"#)
            .xid(507),
    );
    let ids = store_entries(&store, &data).await;

    // DDL: the command in the log, its detail on the entry page, no revert.
    assert_eq!(web.ids("action=DDL").await, vec![ids[7]]);
    let html = web.page("/?action=ddl").await;
    assert!(html.contains(">ALTER TABLE public.docs<"), "{html}");
    let html = web.page(&format!("/entries/{}", ids[7])).await;
    assert!(
        html.contains("A schema change")
            && html.contains("ALTER TABLE docs ADD COLUMN extra int")
            && html.contains("No revert:")
    );

    // INSERT: every value added.
    let html = web.page(&format!("/entries/{}", ids[0])).await;
    let rows = diff_rows(&html);
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["id", "title", "body", "doc", "price", "n"]
    );
    assert!(rows.iter().all(|r| r.0 == "added"), "{rows:?}");
    assert!(!html.contains("<details class=\"unchanged\">"));
    assert!(unescape(&html).contains("DELETE FROM \"public\".\"docs\"\nWHERE \"id\" = 1;"));

    // UPDATE: changed first and marked, unchanged folded, long text and JSON diffed by line and word.
    let html = web.page(&format!("/entries/{}", ids[1])).await;
    let rows = diff_rows(&html);
    let names: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        names,
        ["title", "body", "doc", "id", "price", "n"],
        "changed columns first"
    );
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [
            "changed",
            "changed",
            "changed",
            "unchanged",
            "unchanged",
            "unchanged"
        ]
    );
    let details = html
        .find("<details class=\"unchanged\">")
        .expect("unchanged columns are collapsible");
    assert!(
        html[details..].contains("class=\"name\">id"),
        "unchanged columns are inside the details"
    );
    assert!(html.contains("3 unchanged columns"));
    let text = unescape(&html);
    assert!(
        text.contains("<mark>amended </mark>"),
        "the changed word is marked"
    );
    let columns_part = &text[..text.find("<section class=\"revert\"").unwrap()];
    assert!(
        !columns_part.contains("line 30 of the contract"),
        "unchanged stretches of long text are cut"
    );
    assert!(
        text.contains("\"flag\": <mark>false</mark>")
            && text.contains("\"flag\": <mark>true</mark>"),
        "JSON is pretty-printed and the key diffed:\n{columns_part}"
    );
    // The short title is shown before/after; body and doc get one changed line each.
    assert_eq!(html.matches("class=\"dl del\"").count(), 2);
    assert_eq!(html.matches("class=\"dl ins\"").count(), 2);
    for fact in [
        "alice",
        "app_rw",
        "10.0.0.5",
        "cms",
        "web",
        "ticket 42",
        "502",
    ] {
        assert!(text.contains(fact), "facts show {fact}");
    }
    assert!(text.contains("href=\"/transactions/502\""));
    assert!(text.contains("href=\"/history?table=public.docs&pk=%7B%22id%22%3A1%7D\""));
    assert!(text.contains(
        "UPDATE \"public\".\"docs\"\nSET \"title\" = 't',\n    \"body\" = 'line 1 of the contract"
    ));
    assert!(text.contains("\"doc\" = '{\"a\":1,\"nested\":{\"keep\":[1,2,3],\"flag\":false},\"z\":\"same\"}'\nWHERE \"id\" = 1;"));
    let api = web.api(&format!("/api/v1/entries/{}", ids[1])).await;
    assert_eq!(api["entry"]["id"], ids[1]);
    assert_eq!(api["diff"][0]["column"], "title");
    assert_eq!(api["diff"][0]["change"], "changed");
    assert_eq!(api["diff"][0]["before"], "t");
    assert_eq!(api["diff"][0]["after"], "t2");
    assert_eq!(api["diff"][3]["change"], "unchanged");
    assert_eq!(
        api["diff"][5]["before"],
        Value::Null,
        "a NULL value is JSON null"
    );
    assert!(api["revert_sql"]
        .as_str()
        .unwrap()
        .starts_with("-- Reverts entry"));
    assert!(api["revert_unavailable"].is_null());

    // UPDATE without the old row: said so, and no revert.
    let html = web.page(&format!("/entries/{}", ids[2])).await;
    let rows = diff_rows(&html);
    assert!(
        rows[..5].iter().all(|r| r.0 == "unknown") && rows[5] == ("unchanged".into(), "id".into()),
        "{rows:?}"
    );
    assert!(html.contains("REPLICA IDENTITY is not FULL"));
    assert!(html.contains("No revert:"));
    assert_eq!(
        web.api(&format!("/api/v1/entries/{}", ids[2])).await["revert_sql"],
        Value::Null
    );

    // DELETE: every value removed; revert is an INSERT with quotes and backslashes right.
    let html = web.page(&format!("/entries/{}", ids[3])).await;
    assert!(diff_rows(&html).iter().all(|r| r.0 == "removed"));
    assert!(unescape(&html).contains(
        "INSERT INTO \"public\".\"docs\" (\"id\", \"title\", \"body\", \"doc\", \"price\", \"n\")\nVALUES (1, E'it''s \\\\ here', 'b', NULL, '1', 2);"
    ));

    // TRUNCATE: a note and no revert.
    let html = web.page(&format!("/entries/{}", ids[4])).await;
    assert!(html.contains("TRUNCATE removed every row"));
    assert!(diff_rows(&html).is_empty());

    // History: every entry of the row, oldest first, each diff in place.
    let html = web
        .page("/history?table=public.docs&pk=%7B%22id%22%3A1%7D")
        .await;
    let items: Vec<i64> = html
        .split("<li class=\"hist-item\" id=\"e")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(items, ids[..4].to_vec());
    for item in html.split("<li class=\"hist-item\"").skip(1) {
        assert!(
            item.contains("<table class=\"columns\">"),
            "each entry has its diff in place"
        );
    }
    // The plain value works too for a one-column key, and whitespace in JSON does not matter.
    for pk in ["1", "%7B%20%22id%22%20%3A%201%20%7D"] {
        let again = web
            .page(&format!("/history?table=public.docs&pk={pk}"))
            .await;
        assert_eq!(
            again.matches("<li class=\"hist-item\"").count(),
            4,
            "pk={pk}"
        );
    }

    // Transaction: every entry with that xid.
    let html = web.page("/transactions/504").await;
    assert_eq!(row_ids(&html), vec![ids[3], ids[4]]);
    assert!(html.contains("2 entries committed together"));

    // Hostile values are text everywhere: the log, the diff, the history, the transaction, the API.
    let hist = format!(
        "/history?table={}&pk={}",
        enc("public.<script>t</script>"),
        enc(&format!(r#"{{"id":{}}}"#, esc(hostile)))
    );
    for path in [
        "/".to_string(),
        format!("/entries/{}", ids[5]),
        format!("/entries/{}", ids[6]),
        hist,
        "/transactions/505".into(),
        "/?actor=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
    ] {
        let html = web.page(&path).await;
        assert!(
            !html.contains("<script>alert") && !html.contains("<script>t<"),
            "{path}: a raw <script> from the data:\n{html}"
        );
        assert!(
            !html.contains("<b>role"),
            "{path}: raw markup from the data"
        );
        assert!(
            !html.contains("\" onmouseover=\"alert"),
            "{path}: an attribute broke out"
        );
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{path}: the value is shown, escaped"
        );
    }
    let html = web.page(&format!("/entries/{}", ids[5])).await;
    assert!(
        unescape(&html).contains("<script>alert(1)</script>"),
        "the hostile value is shown as text"
    );
    let api = web.api(&format!("/api/v1/entries/{}", ids[5])).await;
    assert_eq!(api["entry"]["context"]["actor"], hostile);
    assert_eq!(api["entry"]["table"], "<script>t</script>");
}

// ---------------------------------------------------------------------------------------------
// End to end: the real daemon on a real source
// ---------------------------------------------------------------------------------------------

/// Reads server-sent events from `resp` until one of type `entry` carries `id`.
async fn wait_for_event(resp: &mut reqwest::Response, id: i64, timeout: Duration) -> String {
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
        for event in buf.split("\n\n") {
            if event.contains("event: entry") && event.contains(&format!("id: {id}\n")) {
                return event.to_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_end_to_end_on_real_capture() {
    let env = TestEnv::start_with(Default::default(), |c| {
        c.web_toml = "auth = \"none\"\n".into()
    })
    .await;
    let src = env.source().await;
    src.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], doc jsonb, data bytea,
                             note text, seen timestamptz, ok boolean);
         ALTER TABLE items REPLICA IDENTITY FULL;",
    )
    .await
    .unwrap();
    env.setup().await;
    let mut daemon = env.spawn();
    let http = http_client();
    let base = format!("http://{}", env.trail.config.web_listen);
    wait_until(
        "the web view of `pgtrail run` answers",
        Duration::from_secs(30),
        || async { http.get(&base).send().await.is_ok() },
    )
    .await;

    src.batch_execute(
        r#"INSERT INTO items VALUES
             (1, 'plain', 10.50, '{a,b}', '{"k": [1, 2], "s": "x"}', '\xdeadbeef', 'one', '2024-05-01 10:00:00+00', true),
             (2, 'it''s <script>alert(1)</script>', 0.01, '{"with space","quote\"d"}', '{"n": null}', '\x00ff', E'back\\slash\nnew line', NULL, false),
             (3, 'to be deleted', 3, NULL, NULL, NULL, NULL, NULL, NULL)"#,
    )
    .await
    .unwrap();
    // One query string is one transaction: these are three.
    src.batch_execute(
        r#"BEGIN;
           SET LOCAL pgtrail.actor = 'alice@example.com';
           SET LOCAL pgtrail.remarks = 'ticket <7>';
           UPDATE items SET name = 'changed', price = 11.00, doc = '{"k": [1, 2, 3], "s": "x"}', note = E'one\ntwo' WHERE id = 1;
           DELETE FROM items WHERE id = 3;
           COMMIT;"#,
    )
    .await
    .unwrap();
    src.batch_execute(
        r"UPDATE items SET tags = '{c}', data = '\x01', seen = now(), ok = NULL WHERE id = 2",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    let stored: Vec<Entry> = table_entries(&store, "public", "items").await;
    assert_eq!(
        stored.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["INSERT", "INSERT", "INSERT", "UPDATE", "DELETE", "UPDATE"]
    );

    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
            resp.text().await.unwrap()
        }
    };

    // The API's entries are byte for byte the export's lines.
    let export = env.trail.export_jsonl(&["--table", "public.items"]).await;
    let body = get("/api/v1/entries?table=public.items&sort=time&dir=asc&limit=500".into()).await;
    #[derive(serde::Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        entries: Vec<&'a serde_json::value::RawValue>,
        next_cursor: Option<String>,
    }
    let list: List = serde_json::from_str(&body).unwrap();
    assert!(list.next_cursor.is_none());
    let api_lines: Vec<&str> = list.entries.iter().map(|r| r.get()).collect();
    let export_lines: Vec<&str> = export.iter().map(|l| l.raw.trim_end()).collect();
    assert_eq!(
        api_lines, export_lines,
        "API entries are shaped exactly as export prints them"
    );

    // The captured context filters and shows: actor, role, client address.
    let ids_for = |q: &str| {
        let get = &get;
        let q = q.to_owned();
        async move {
            let v: Value =
                serde_json::from_str(&get(format!("/api/v1/entries?{q}")).await).unwrap();
            ids_of(&v)
        }
    };
    let all_desc: Vec<i64> = stored.iter().rev().map(|e| e.id).collect();
    assert_eq!(
        ids_for("actor=alice%40example.com").await,
        vec![stored[4].id, stored[3].id]
    );
    assert_eq!(ids_for("role=postgres&table=public.items").await, all_desc);
    assert_eq!(
        ids_for("actor=postgres&table=public.items").await,
        vec![stored[5].id, stored[2].id, stored[1].id, stored[0].id]
    );
    assert_eq!(
        ids_for(&format!("ip={}&table=public.items", enc("127.0.0.0/8"))).await,
        all_desc
    );
    assert_eq!(
        ids_for("ip=10.0.0.1&table=public.items").await,
        Vec::<i64>::new()
    );
    let html = get(format!("/entries/{}", stored[3].id)).await;
    for fact in [
        "alice@example.com",
        "postgres",
        "127.0.0.1",
        "ticket &#60;7&#62;",
    ] {
        assert!(html.contains(fact), "the entry shows {fact}");
    }

    // The log shows them, the hostile name as text.
    let html = get("/?table=public.items".into()).await;
    assert_eq!(
        row_ids(&html),
        stored.iter().rev().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("View Difference"));
    assert!(
        html.contains(">name, price, doc, note<"),
        "the update's changed columns:\n{html}"
    );
    assert!(html.contains(">deleted row id=3<"));
    let html = get(format!("/entries/{}", stored[1].id)).await;
    assert!(
        !html.contains("<script>alert")
            && unescape(&html).contains("it's <script>alert(1)</script>"),
        "{html}"
    );

    // View Difference of the two-row transaction's update, its history and transaction.
    let upd = &stored[3];
    let html = get(format!("/entries/{}", upd.id)).await;
    let rows = diff_rows(&html);
    assert_eq!(
        rows.iter()
            .take(4)
            .map(|r| (r.0.as_str(), r.1.as_str()))
            .collect::<Vec<_>>(),
        [
            ("changed", "name"),
            ("changed", "price"),
            ("changed", "doc"),
            ("changed", "note")
        ]
    );
    assert!(
        unescape(&html).contains("\"k\": ["),
        "the jsonb document is pretty-printed"
    );
    let hist = get(format!(
        "/history?table=public.items&pk={}",
        enc(upd.primary_key_text.as_deref().unwrap())
    ))
    .await;
    assert_eq!(
        hist.matches("<li class=\"hist-item\"").count(),
        2,
        "insert and update of row 1"
    );
    let txn = get(format!("/transactions/{}", upd.xid)).await;
    assert_eq!(row_ids(&txn), vec![stored[3].id, stored[4].id]);

    // Every revert, newest first, run on the source, undoes everything: the table ends empty,
    // and reverting the last update gives back the row as it was.
    let snapshot = |id: i32| {
        let src = &src;
        async move {
            src.query_opt(
                "SELECT to_jsonb(i)::text FROM items i WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, String>(0))
        }
    };
    let revert_last_update = {
        let v: Value =
            serde_json::from_str(&get(format!("/api/v1/entries/{}", stored[5].id)).await).unwrap();
        v["revert_sql"].as_str().unwrap().to_owned()
    };
    let after_update = snapshot(2).await;
    src.batch_execute(&revert_last_update)
        .await
        .unwrap_or_else(|e| panic!("revert SQL failed: {e}\n{revert_last_update}"));
    let reverted = snapshot(2).await;
    assert_ne!(reverted, after_update);
    let inserted: Value = serde_json::from_str(stored[1].after_text.as_deref().unwrap()).unwrap();
    let reverted_v: Value = serde_json::from_str(reverted.as_deref().unwrap()).unwrap();
    assert_eq!(
        reverted_v["tags"],
        serde_json::json!(["with space", "quote\"d"])
    );
    assert_eq!(reverted_v["data"], inserted["data"], "bytea back as it was");
    assert_eq!(reverted_v["ok"], Value::Bool(false));
    for e in stored[..5].iter().rev() {
        let v: Value =
            serde_json::from_str(&get(format!("/api/v1/entries/{}", e.id)).await).unwrap();
        let sql = v["revert_sql"]
            .as_str()
            .unwrap_or_else(|| panic!("entry {} has no revert: {v}", e.id));
        src.batch_execute(sql)
            .await
            .unwrap_or_else(|err| panic!("revert of entry {} failed: {err}\n{sql}", e.id));
    }
    let left: i64 = src
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "reverting every entry in reverse leaves the table as it started"
    );

    // Live mode: a new entry arrives on the stream while it is open.
    env.sync().await;
    let mut live = http
        .get(format!("{base}/live?table=public.items"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    src.batch_execute("INSERT INTO items (id, name) VALUES (99, 'live <one>')")
        .await
        .unwrap();
    env.sync().await;
    let id: i64 = store
        .query_one(
            "SELECT max(id) FROM pgtrail.entries WHERE table_name = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let event = wait_for_event(&mut live, id, Duration::from_secs(30)).await;
    assert!(
        event.contains("live &#60;one&#62;") || event.contains("new row id=99"),
        "{event}"
    );
    let live_page = get("/?live=1".into()).await;
    assert!(
        live_page.contains("data-src=\"/live?after="),
        "live mode wires the stream"
    );

    // SIGTERM stops capture and the web view, with a live stream still open.
    daemon.terminate().await;
    assert!(
        http.get(&base).send().await.is_err(),
        "the web view stopped with the daemon"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_fuzzed_by_schemathesis_gives_no_5xx_and_keeps_its_schema() {
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let (_env, store, web) = store_and_web().await;
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
    store_entries(&store, &data).await;
    let report = web._dir.path().join("schemathesis");
    let log_path = web._dir.path().join("schemathesis.log");
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
        .current_dir(web._dir.path())
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

// ---------------------------------------------------------------------------------------------
// A real browser: headless Chromium driven through chromedriver
// ---------------------------------------------------------------------------------------------

/// `chromedriver` on a free port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> Chromedriver {
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

async fn browser(driver: &Chromedriver) -> fantoccini::Client {
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
async fn screenshot(c: &fantoccini::Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("screenshot");
    fs::write(dir.join(format!("browser-{name}.png")), png).unwrap();
}

async fn texts(c: &fantoccini::Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap().trim().to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_in_headless_chromium_filter_sort_view_difference_history_live() {
    use fantoccini::Locator::{Css, Id, LinkText};
    let driver = start_chromedriver().await;
    // Signed in as a real user, as people use it: no `auth = "none"` here.
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    env.trail
        .cli_with_stdin(
            &["user", "add", "olivia", "--role", "viewer"],
            "browser-pass-1\n",
        )
        .await
        .assert_success();
    let web = Web::start_with(&env, "").await;
    let now = Utc::now();
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
    store_entries(&store, &data).await;
    let c = browser(&driver).await;

    // Sign in: the log sends us to the sign-in page and back.
    c.goto(&web.url("/")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Id("s-name"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path() == "/sign-in");
    c.find(Id("s-name"))
        .await
        .unwrap()
        .send_keys("olivia")
        .await
        .unwrap();
    c.find(Id("s-password"))
        .await
        .unwrap()
        .send_keys("browser-pass-1")
        .await
        .unwrap();
    screenshot(&c, "0-sign-in").await;
    c.find(Css("form.stack button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The log.
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
    assert!(texts(&c, "header .who .user").await[0].starts_with("olivia"));
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("table.log tbody tr"))
        .await
        .unwrap();
    assert_eq!(texts(&c, "table.log tbody tr").await.len(), 12);
    assert_eq!(texts(&c, "#count").await, ["12 entries"]);
    screenshot(&c, "1-log").await;

    // Filter by actor through the form.
    c.find(Id("f-actor"))
        .await
        .unwrap()
        .send_keys("bob@example.com")
        .await
        .unwrap();
    c.find(Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("details.filterbox .active"))
        .await
        .unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("actor=bob%40example.com"));
    let actors = texts(&c, "table.log td.actor a").await;
    assert_eq!(actors, vec!["bob@example.com"; 4]);
    screenshot(&c, "2-filtered").await;

    // Sort by IP, ascending, by clicking its header.
    c.find(Css("thead th a[href*='sort=ip']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("th[aria-sort='ascending']"))
        .await
        .unwrap();
    let ips = texts(&c, "table.log td.ip").await;
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(ips, sorted, "sorted by IP");
    assert_eq!(
        texts(&c, "table.log td.actor a").await,
        vec!["bob@example.com"; 4],
        "the filter stays while sorting"
    );
    screenshot(&c, "3-sorted").await;

    // View Difference of the first row.
    c.find(Css("table.log tbody tr a.view"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("h1.entry-title"))
        .await
        .unwrap();
    assert_eq!(texts(&c, "tr.col.changed th.name").await, ["status", "doc"]);
    assert!(
        !texts(&c, ".difflines mark").await.is_empty(),
        "the JSON change is marked word by word"
    );
    let copy = c.find(Css("button.copy")).await.unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script shows the copy button"
    );
    assert!(texts(&c, "#revert-sql").await[0].contains("UPDATE \"public\".\"orders\""));
    // The unchanged columns open on a click.
    c.find(Css("details.unchanged summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    screenshot(&c, "4-view-difference").await;

    // Row history.
    c.find(LinkText("Row history"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("ol.history"))
        .await
        .unwrap();
    assert_eq!(
        texts(&c, "li.hist-item").await.len(),
        3,
        "every entry of the row"
    );
    screenshot(&c, "5-history").await;

    // A phone-sized window: the log as cards, the filters folded.
    c.set_window_size(390, 900).await.unwrap();
    c.goto(&web.url("/")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Css("table.log tbody tr"))
        .await
        .unwrap();
    let open = c
        .execute("return document.getElementById('filterbox').open;", vec![])
        .await
        .unwrap();
    assert_eq!(open, Value::Bool(false), "filters start folded on a phone");
    screenshot(&c, "6-phone").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Live mode: a new entry appears at the top without a reload.
    c.goto(&web.url("/?live=1")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Id("live-status"))
        .await
        .unwrap();
    let new = store_entries(
        &store,
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
    assert!(texts(&c, "#live-status").await[0].contains("1 new entry"));
    screenshot(&c, "7-live").await;
    c.close().await.unwrap();
}
