//! Access control over real HTTP against the real `pgtrail web` (and `pgtrail run`) on a real
//! store: the no-user refusal, users from the CLI, sign-in with session cookies, each role's
//! pages and API, table restrictions (API, pages, counts, history, transactions, live), CSRF,
//! sign-out (here and everywhere), disabling, admin pages, API tokens, session expiry, lockout,
//! proxy header auth only from trusted addresses, the `auth = "none"` loopback rule, and every
//! self-audit event as an `EVENT` entry with source pgtrail and the right actor.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::*;
use crate::web::Web;

/// A browser, or an API client: keeps cookies, never follows redirects (tests look at them).
struct Agent {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    bearer: Option<String>,
    /// A test that makes the store refuse a write expects the 500 that follows.
    allow_500: bool,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Agent {
    fn new(base: &str) -> Agent {
        Agent::from(base, None)
    }

    /// Connecting from `local` (any 127.0.0.0/8 address reaches a 127.0.0.1 listener).
    fn from(base: &str, local: Option<IpAddr>) -> Agent {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ip) = local {
            b = b.local_address(ip);
        }
        Agent {
            http: b.build().unwrap(),
            base: base.to_owned(),
            cookies: HashMap::new(),
            bearer: None,
            allow_500: false,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
        let mut req = req;
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        if let Some(b) = &self.bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let reply = Reply {
            status,
            headers,
            body,
        };
        for c in reply.set_cookies() {
            let first = c.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            if c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        // 503 is the no-user refusal; anything else from the server's side is a bug.
        assert!(
            !reply.status.is_server_error()
                || reply.status == StatusCode::SERVICE_UNAVAILABLE
                || (self.allow_500 && reply.status == StatusCode::INTERNAL_SERVER_ERROR),
            "a 5xx is never right here: {} {}",
            reply.status,
            reply.body
        );
        reply
    }

    async fn get(&mut self, path: &str) -> Reply {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Signs in through the form; returns the reply to the POST.
    async fn sign_in(&mut self, name: &str, password: &str) -> Reply {
        let csrf = self.sign_in_form().await;
        self.post_sign_in(&csrf, name, password).await
    }

    /// Opens the sign-in page; its form's CSRF token.
    async fn sign_in_form(&mut self) -> String {
        let page = self.get("/sign-in").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        csrf_of(&page.body)
    }

    /// Sends the sign-in form.
    async fn post_sign_in(&mut self, csrf: &str, name: &str, password: &str) -> Reply {
        self.post(
            "/sign-in",
            &[
                ("csrf", csrf),
                ("name", name),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }

    async fn signed_in(base: &str, name: &str, password: &str) -> Agent {
        let mut a = Agent::new(base);
        let r = a.sign_in(name, password).await;
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "sign-in as {name} failed: {}",
            r.body
        );
        assert!(a.cookies.contains_key("pgtrail_session"));
        a
    }

    /// The CSRF token of the page's forms (the header's sign-out form has it too).
    async fn csrf(&mut self) -> String {
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        csrf_of(&page.body)
    }

    /// Every id `GET /api/v1/entries?query` gives, walking the cursor.
    async fn api_ids(&mut self, query: &str) -> Vec<i64> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/api/v1/entries?limit=500&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!(
                    "&cursor={}",
                    form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
                ));
            }
            let r = self.get(&q).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
            let v = r.json();
            all.extend(
                v["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_i64().unwrap()),
            );
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
    }
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Ids of the rows on a log page.
fn row_ids(html: &str) -> BTreeSet<i64> {
    html.match_indices("href=\"/entries/")
        .filter_map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

fn count_text(html: &str) -> String {
    let at = html
        .find("id=\"count\"")
        .unwrap_or_else(|| panic!("no count in:\n{html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</").unwrap();
    rest[start..end].trim().to_owned()
}

async fn store_ids(store: &Client, sql: &str) -> Vec<i64> {
    store
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// pgtrail's own events, oldest first: (event name, actor, application, summary, entry).
async fn own_events(store: &Client) -> Vec<(String, Option<String>, String, Value)> {
    store
        .query(
            "SELECT details->>'event', context->>'actor', context->>'application_name', \
                    json_build_object('id', id, 'table', table_name, 'xid', xid, 'lsn', lsn, 'source', context->>'source', \
                        'remarks', context->>'remarks', 'client_addr', context->>'client_addr', \
                        'before', before, 'after', after, 'changed', changed_columns, 'details', details)::text \
             FROM pgtrail.entries WHERE action = 'EVENT' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, String>(2),
                serde_json::from_str(&r.get::<_, String>(3)).unwrap(),
            )
        })
        .collect()
}

/// The newest event named `name`; it must exist, with source pgtrail and no transaction.
async fn last_event(store: &Client, name: &str) -> (Option<String>, String, Value) {
    let all = own_events(store).await;
    let (_, actor, app, e) = all
        .into_iter()
        .rev()
        .find(|(n, ..)| n == name)
        .unwrap_or_else(|| panic!("no {name} event in the store"));
    assert_eq!(e["source"], "pgtrail", "{e}");
    assert!(e["xid"].is_null() && e["lsn"].is_null(), "{e}");
    (actor, app, e)
}

async fn add_user(env: &TestEnv, name: &str, role: &str, tables: Option<&str>, password: &str) {
    let mut args = vec!["user", "add", name, "--role", role];
    if let Some(t) = tables {
        args.extend(["--tables", t]);
    }
    env.trail
        .cli_with_stdin(&args, &format!("{password}\n"))
        .await
        .assert_success();
}

/// A source with rows in three tables (one transaction touching two), captured by the
/// daemon and synced; the store set up. Returns the running daemon.
async fn captured_world(env: &TestEnv) -> Daemon {
    let src = env.source().await;
    src.batch_execute(
        "CREATE SCHEMA sales;
         CREATE TABLE public.orders (id int PRIMARY KEY, item text);
         CREATE TABLE public.customers (id int PRIMARY KEY, name text);
         CREATE TABLE sales.leads (id int PRIMARY KEY, who text);",
    )
    .await
    .unwrap();
    env.setup().await;
    let daemon = env.spawn();
    // One transaction per statement (a multi-statement string would be one), but the UPDATEs.
    for sql in [
        "INSERT INTO public.orders VALUES (1, 'tea'), (2, 'milk')",
        "INSERT INTO public.customers VALUES (1, 'Ann'), (2, 'Ben')",
        "INSERT INTO sales.leads VALUES (1, 'Cy')",
        "BEGIN; UPDATE public.orders SET item = 'green tea' WHERE id = 1; UPDATE public.customers SET name = 'Anne' WHERE id = 1; COMMIT",
        "DELETE FROM public.customers WHERE id = 2",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    env.sync().await;
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_roles_table_scopes_csrf_tokens_and_self_audit() {
    let env = TestEnv::start_with(Default::default(), |c| {
        c.tables = vec!["public.*".into(), "sales.*".into()]
    })
    .await;
    let mut daemon = captured_world(&env).await;
    let store = env.store().await;
    let web = Web::start_with(&env, "").await;
    let base = web.base.clone();

    // --- No user yet: entries are refused, and both the page and the API say how to create the first admin.
    let mut anon = Agent::new(&base);
    let r = anon.get("/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The command names the web view's own config file.
    let cmd = "web.toml user add NAME --role admin";
    assert!(r.body.contains("`pgtrail --config /"), "{}", r.body);
    assert!(r.body.contains(cmd), "{}", r.body);
    let r = anon.get("/api/v1/entries").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.json()["error"].as_str().unwrap().contains(cmd),
        "{}",
        r.body
    );
    assert!(!r.body.contains("\"entries\""));
    assert!(anon.get("/sign-in").await.body.contains(cmd));

    // --- Users from the CLI, password on stdin; bad input fails cleanly and changes nothing.
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    add_user(&env, "aud", "auditor", None, "aud-secret-1").await;
    add_user(&env, "vic", "viewer", None, "vic-secret-1").await;
    add_user(
        &env,
        "rita",
        "viewer",
        Some("public.orders"),
        "rita-secret-1",
    )
    .await;
    let out = env
        .trail
        .cli_with_stdin(&["user", "add", "shorty", "--role", "viewer"], "short\n")
        .await;
    out.assert_clean_failure(&["at least 8"], Duration::from_secs(30));
    let out = env
        .trail
        .cli_with_stdin(&["user", "add", "vic", "--role", "viewer"], "whatever-1\n")
        .await;
    out.assert_clean_failure(&["already a user", "vic"], Duration::from_secs(30));
    let out = env
        .trail
        .cli_with_stdin(&["user", "add", "bob", "--role", "root"], "whatever-1\n")
        .await;
    out.assert_clean_failure(&["viewer, auditor or admin"], Duration::from_secs(30));
    let out = env
        .trail
        .cli_with_stdin(
            &[
                "user", "add", "tab", "--role", "viewer", "--tables", "nodot",
            ],
            "whatever-1\n",
        )
        .await;
    out.assert_clean_failure(&["nodot"], Duration::from_secs(30));
    let list = env.trail.cli(&["user", "list", "--json"]).await;
    list.assert_success();
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "aud", "rita", "vic"]);
    assert_eq!(list[2]["tables"], serde_json::json!(["public.orders"]));
    let hashes: Vec<String> = store_ids_text(
        &store,
        "SELECT password_hash FROM pgtrail.users ORDER BY name",
    )
    .await;
    assert!(
        hashes.iter().all(|h| h.starts_with("$argon2id$")),
        "{hashes:?}"
    );
    let (actor, app, e) = last_event(&store, "user_added").await;
    assert_eq!(app, "pgtrail cli");
    assert!(actor.unwrap_or_default().starts_with("os:"));
    assert_eq!(e["table"], "user");
    assert_eq!(
        e["after"],
        serde_json::json!({"name": "rita", "role": "viewer", "tables": ["public.orders"], "disabled": false})
    );
    assert!(!e.to_string().contains("argon2"), "no hash in events: {e}");

    // --- Not signed in: pages go to the sign-in page, the API says 401.
    let r = anon.get("/?table=public.orders").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/sign-in?next=%2F%3Ftable%3Dpublic.orders");
    for path in [
        "/entries/1",
        "/history?table=public.orders&pk=1",
        "/transactions/1",
        "/live",
        "/admin",
    ] {
        let r = anon.get(path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
    }
    let r = anon.get("/api/v1/entries").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(
        anon.get("/api/v1/openapi.json").await.status,
        StatusCode::OK
    );
    assert_eq!(anon.get("/assets/app.css").await.status, StatusCode::OK);

    // --- The session cookie's attributes.
    let mut vic = Agent::new(&base);
    let r = vic.sign_in("vic", "vic-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/");
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("pgtrail_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without cookie_secure: {cookie}"
    );
    let token = vic.cookies["pgtrail_session"].clone();
    let stored: Vec<String> = store_ids_text(
        &store,
        "SELECT encode(token_hash, 'hex') FROM pgtrail.sessions",
    )
    .await;
    assert!(
        !stored.iter().any(|h| h.contains(&token)),
        "only a hash of the token is stored"
    );
    let (actor, app, e) = last_event(&store, "sign_in").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("vic"), "pgtrail web")
    );
    assert_eq!(e["client_addr"], "127.0.0.1");
    assert_eq!(e["table"], "session");

    // --- What each role sees: the store says which entries exist.
    let all_rows = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
    )
    .await;
    let orders = store_ids(&store, "SELECT id FROM pgtrail.entries WHERE schema_name = 'public' AND table_name = 'orders' ORDER BY id DESC").await;
    let events = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE action = 'EVENT' ORDER BY id DESC",
    )
    .await;
    assert_eq!(orders.len(), 3);
    assert!(all_rows.len() > orders.len() + 4);
    assert_eq!(
        vic.api_ids("").await,
        all_rows,
        "a viewer sees every table, no events"
    );
    assert!(vic.api_ids("action=EVENT").await.is_empty());
    assert!(vic.api_ids("source=pgtrail").await.is_empty());
    let mut rita = Agent::signed_in(&base, "rita", "rita-secret-1").await;
    assert_eq!(
        rita.api_ids("").await,
        orders,
        "rita sees public.orders only"
    );
    assert!(rita.api_ids("table=public.customers").await.is_empty());
    assert!(rita.api_ids("table=sales.leads").await.is_empty());
    let page = rita.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(row_ids(&page.body), orders.iter().copied().collect());
    assert_eq!(count_text(&page.body), "3 entries");
    assert!(
        !page.body.contains("public.customers") && !page.body.contains("sales.leads"),
        "no other table, not even in suggestions"
    );
    let page = rita.get("/?table=public.customers").await;
    assert_eq!(count_text(&page.body), "0 entries");
    let page = vic.get("/").await;
    assert_eq!(
        count_text(&page.body),
        format!("{} entries", all_rows.len())
    );

    // --- Exports: a viewer may not; an auditor gets what their scope allows, and is the export's actor.
    let r = vic.get("/export?format=jsonl").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("auditor"), "{}", r.body);
    add_user(
        &env,
        "ora",
        "auditor",
        Some("public.orders"),
        "ora-secret-1",
    )
    .await;
    let export_ids = |body: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = body
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ids.reverse();
        ids
    };
    let mut ora = Agent::signed_in(&base, "ora", "ora-secret-1").await;
    let r = ora.get("/export?format=jsonl").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        export_ids(&r.body),
        orders,
        "a table-restricted auditor exports their tables only"
    );
    let (actor, app, e) = last_event(&store, "export").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ora"), "pgtrail web")
    );
    assert_eq!(e["details"]["entries"], 3, "{e}");
    let mut aud = Agent::signed_in(&base, "aud", "aud-secret-1").await;
    let r = aud.get("/export?format=jsonl&action=EVENT").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.is_empty(),
        "an auditor is not an admin: no events in exports either: {}",
        r.body
    );
    let customer = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'customers' ORDER BY id LIMIT 1",
    )
    .await[0];
    assert_eq!(
        vic.get(&format!("/entries/{customer}")).await.status,
        StatusCode::OK
    );
    let hidden = rita.get(&format!("/entries/{customer}")).await;
    let missing = rita.get("/entries/999999").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        rita.get(&format!("/api/v1/entries/{customer}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        rita.get(&format!("/api/v1/entries/{}", orders[0]))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        rita.get("/history?table=public.customers&pk=1")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        vic.get("/history?table=public.customers&pk=1").await.status,
        StatusCode::OK
    );
    let h = rita.get("/history?table=public.orders&pk=1").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    // The transaction that touched orders and customers: rita sees its orders row only.
    let mixed: i64 = store
        .query_one(
            "SELECT xid FROM pgtrail.entries WHERE table_name = 'orders' AND action = 'UPDATE'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let in_txn = store_ids(
        &store,
        &format!("SELECT id FROM pgtrail.entries WHERE xid = {mixed} ORDER BY id"),
    )
    .await;
    assert_eq!(in_txn.len(), 2);
    let t = rita.get(&format!("/transactions/{mixed}")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(row_ids(&t.body).len(), 1, "{}", t.body);
    assert!(!t.body.contains("customers"));
    assert_eq!(
        row_ids(&vic.get(&format!("/transactions/{mixed}")).await.body).len(),
        2
    );
    // Admins see pgtrail's own events, in the same view, filterable.
    let mut ada = Agent::signed_in(&base, "ada", "ada-secret-1").await;
    let now_events = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE action = 'EVENT' ORDER BY id DESC",
    )
    .await;
    assert!(now_events.len() > events.len());
    assert_eq!(ada.api_ids("source=pgtrail").await, now_events);
    assert_eq!(
        ada.api_ids("").await.len(),
        all_rows.len() + now_events.len()
    );

    // --- Live updates carry only what the user may see.
    let mut live = rita
        .http
        .get(format!("{base}/live?after=0"))
        .header("cookie", rita.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    env.source().await.batch_execute("INSERT INTO public.customers VALUES (9, 'Zed'); INSERT INTO public.orders VALUES (9, 'jam');").await.unwrap();
    env.sync().await;
    let new_order = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'orders' ORDER BY id DESC LIMIT 1",
    )
    .await[0];
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&format!("id: {new_order}\n")) {
        assert!(
            Instant::now() < deadline,
            "no live event for {new_order}: {seen}"
        );
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), live.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let streamed: BTreeSet<i64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    let orders_now: BTreeSet<i64> = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'orders'",
    )
    .await
    .into_iter()
    .collect();
    assert!(
        streamed.is_subset(&orders_now),
        "live sent other tables: {streamed:?} vs {orders_now:?}"
    );
    drop(live);

    // --- Roles: only admins manage users.
    let mut aud = Agent::signed_in(&base, "aud", "aud-secret-1").await;
    for agent in [&mut vic, &mut aud, &mut rita] {
        let r = agent.get("/admin").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("admin"), "{}", r.body);
        let csrf = agent.csrf().await;
        let r = agent
            .post(
                "/admin/users",
                &[
                    ("csrf", &csrf),
                    ("name", "sneaky"),
                    ("role", "admin"),
                    ("password", "sneaky-pass-1"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert!(store_ids_text(
        &store,
        "SELECT name FROM pgtrail.users WHERE name = 'sneaky'"
    )
    .await
    .is_empty());
    assert!(!vic.get("/").await.body.contains("href=\"/admin\""));
    let admin_page = ada.get("/admin").await;
    assert_eq!(admin_page.status, StatusCode::OK);
    assert!(admin_page.body.contains("data-user=\"rita\""));

    // --- CSRF: an admin form without the token, or with another session's, is refused and changes nothing.
    let r = ada
        .post(
            "/admin/users",
            &[
                ("name", "eve"),
                ("role", "viewer"),
                ("password", "eve-secret-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let vic_csrf = vic.csrf().await;
    let r = ada
        .post(
            "/admin/users",
            &[
                ("csrf", &vic_csrf),
                ("name", "eve"),
                ("role", "viewer"),
                ("password", "eve-secret-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        store_ids_text(&store, "SELECT name FROM pgtrail.users WHERE name = 'eve'")
            .await
            .is_empty()
    );
    let r = ada.post("/sign-out", &[("csrf", "forged")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The sign-in form needs its own cookie's token.
    let mut fresh = Agent::new(&base);
    let r = fresh
        .post(
            "/sign-in",
            &[("csrf", "x"), ("name", "ada"), ("password", "ada-secret-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!fresh.cookies.contains_key("pgtrail_session"));

    // --- Admin pages: add a user, change a role, with the admin as the events' actor.
    let csrf = ada.csrf().await;
    let r = ada
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("name", "eve"),
                ("role", "viewer"),
                ("tables", "sales.*"),
                ("password", "eve-secret-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("data-user=\"eve\""));
    let (actor, app, e) = last_event(&store, "user_added").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ada"), "pgtrail web")
    );
    assert_eq!(e["after"]["tables"], serde_json::json!(["sales.*"]));
    let mut eve = Agent::signed_in(&base, "eve", "eve-secret-1").await;
    let leads = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE schema_name = 'sales' ORDER BY id DESC",
    )
    .await;
    assert_eq!(eve.api_ids("").await, leads);
    let r = ada
        .post(
            "/admin/users/eve",
            &[
                ("csrf", &csrf),
                ("action", "update"),
                ("role", "auditor"),
                ("tables", "sales.*"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (actor, _, e) = last_event(&store, "role_changed").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(
        (e["before"]["role"].as_str(), e["after"]["role"].as_str()),
        (Some("viewer"), Some("auditor"))
    );
    assert_eq!(e["changed"], serde_json::json!(["role"]));
    let role: String = store
        .query_one("SELECT role FROM pgtrail.users WHERE name = 'eve'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "auditor");
    assert!(
        eve.get("/").await.body.contains("auditor"),
        "a role change applies on the next request"
    );
    let r = ada
        .post(
            "/admin/users/eve",
            &[
                ("csrf", &csrf),
                ("action", "update"),
                ("role", "boss"),
                ("tables", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("viewer, auditor or admin"));
    let r = ada
        .post(
            "/admin/users/nobody",
            &[("csrf", &csrf), ("action", "disable")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // --- Disabling ends the user's sessions at once, and they cannot sign in.
    let r = ada
        .post(
            "/admin/users/eve",
            &[("csrf", &csrf), ("action", "disable")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(eve.get("/").await.status, StatusCode::SEE_OTHER);
    let r = Agent::new(&base).sign_in("eve", "eve-secret-1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (actor, _, e) = last_event(&store, "user_disabled").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(e["after"]["disabled"], true);
    // From the CLI too: role, enable, reset-password.
    env.trail
        .cli(&["user", "enable", "eve"])
        .await
        .assert_success();
    env.trail
        .cli(&["user", "set-role", "eve", "--role", "viewer"])
        .await
        .assert_success();
    env.trail
        .cli_with_stdin(&["user", "reset-password", "eve"], "eve-secret-2\n")
        .await
        .assert_success();
    assert_eq!(
        Agent::new(&base)
            .sign_in("eve", "eve-secret-1")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        Agent::new(&base)
            .sign_in("eve", "eve-secret-2")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    for name in ["user_enabled", "password_reset"] {
        let (actor, app, _) = last_event(&store, name).await;
        assert_eq!(app, "pgtrail cli");
        assert!(actor.unwrap_or_default().starts_with("os:"));
    }
    env.trail
        .cli(&["user", "disable", "nobody"])
        .await
        .assert_clean_failure(&["no user", "nobody"], Duration::from_secs(30));

    // --- Sign-out ends this session; sign-out everywhere ends all of the user's.
    let mut vic2 = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let mut vic3 = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let csrf = vic.csrf().await;
    let r = vic
        .post("/sign-out", &[("csrf", &csrf), ("everywhere", "0")])
        .await;
    assert_eq!(
        (r.status, r.location().as_str()),
        (StatusCode::SEE_OTHER, "/sign-in")
    );
    assert!(!vic.cookies.contains_key("pgtrail_session"));
    vic.cookies.insert("pgtrail_session".into(), token.clone());
    assert_eq!(
        vic.get("/").await.status,
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    assert_eq!(vic2.get("/").await.status, StatusCode::OK);
    let csrf = vic2.csrf().await;
    let r = vic2
        .post("/sign-out", &[("csrf", &csrf), ("everywhere", "1")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(vic3.get("/").await.status, StatusCode::SEE_OTHER);
    let (actor, _, e) = last_event(&store, "sign_out").await;
    assert_eq!(actor.as_deref(), Some("vic"));
    assert_eq!(e["details"]["everywhere"], true);
    assert_eq!(e["details"]["sessions"], 2);

    // --- API tokens: created in the web view (shown once), scoped to a role and tables, revocable.
    let csrf = ada.csrf().await;
    let r = ada
        .post(
            "/admin/tokens",
            &[
                ("csrf", &csrf),
                ("name", "siem"),
                ("role", "viewer"),
                ("tables", "public.orders"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = {
        let at = r.body.find("id=\"new-token\">").unwrap() + "id=\"new-token\">".len();
        r.body[at..at + r.body[at..].find('<').unwrap()].to_owned()
    };
    assert!(secret.starts_with("pgt_") && secret.len() > 40, "{secret}");
    assert!(
        !ada.get("/admin").await.body.contains(&secret),
        "shown only once"
    );
    let stored: Vec<String> = store_ids_text(
        &store,
        "SELECT encode(token_hash, 'hex') FROM pgtrail.tokens",
    )
    .await;
    assert!(!stored.iter().any(|h| h.contains(&secret)));
    let mut siem = Agent::new(&base);
    siem.bearer = Some(secret.clone());
    let orders_now = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'orders' ORDER BY id DESC",
    )
    .await;
    assert_eq!(siem.api_ids("").await, orders_now);
    assert_eq!(
        siem.get(&format!("/api/v1/entries/{customer}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        siem.get("/").await.status,
        StatusCode::SEE_OTHER,
        "a token is for the API only"
    );
    // Its use is noted, and not rewritten by every request within a minute.
    let last_used = || async {
        store
            .query_one(
                "SELECT last_used_at::text FROM pgtrail.tokens WHERE name = 'siem'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
    };
    let first_use = last_used().await.expect("the token's use is noted");
    siem.api_ids("").await;
    assert_eq!(last_used().await.as_deref(), Some(first_use.as_str()));
    let (actor, _, e) = last_event(&store, "token_created").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(
        e["after"],
        serde_json::json!({"name": "siem", "role": "viewer", "tables": ["public.orders"], "revoked": false})
    );
    assert!(!e.to_string().contains(&secret));
    // From the CLI: printed once on stdout.
    let out = env
        .trail
        .cli(&["token", "create", "ops", "--role", "admin"])
        .await;
    out.assert_success();
    let mut ops = Agent::new(&base);
    ops.bearer = Some(out.stdout.trim().to_owned());
    assert_eq!(
        ops.api_ids("source=pgtrail").await.len() as i64,
        store
            .query_one(
                "SELECT count(*) FROM pgtrail.entries WHERE action = 'EVENT'",
                &[]
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    );
    let r = ada
        .post("/admin/tokens/siem/revoke", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = siem.get("/api/v1/entries").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("revoked"));
    let (actor, _, e) = last_event(&store, "token_revoked").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(e["after"]["revoked"], true);
    env.trail
        .cli(&["token", "revoke", "ops"])
        .await
        .assert_success();
    assert_eq!(
        ops.get("/api/v1/entries").await.status,
        StatusCode::UNAUTHORIZED
    );
    siem.bearer = Some("pgt_made-up".into());
    assert_eq!(
        siem.get("/api/v1/entries").await.status,
        StatusCode::UNAUTHORIZED
    );

    // --- A configuration reload of `pgtrail run` is recorded.
    let before = own_events(&store).await.len();
    daemon.signal(libc::SIGHUP);
    wait_until("a config reload event", Duration::from_secs(30), || async {
        own_events(&store)
            .await
            .iter()
            .skip(before)
            .any(|(n, ..)| n == "config_reloaded")
    })
    .await;
    let (_, app, e) = last_event(&store, "config_reloaded").await;
    assert_eq!(app, "pgtrail run");
    assert_eq!(e["table"], "config");
    assert_eq!(
        e["details"]["tables"],
        serde_json::json!(["public.*", "sales.*"])
    );
    daemon.terminate().await;
}

async fn store_ids_text(store: &Client, sql: &str) -> Vec<String> {
    store
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_session_expiry_lockout_and_uniform_refusals() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "sam", "viewer", None, "sam-secret-1").await;
    let web = Web::start_with(
        &env,
        "session_idle_seconds = 6\nsession_max_seconds = 60\nlockout_after = 3\nlockout_seconds = 10\n",
    )
    .await;
    let base = web.base.clone();

    // Idle expiry: used within the limit the session lives on; left idle past it, it is gone.
    // (Pauses of 3 s against a limit of 6: a loaded machine can add seconds to a step.)
    let mut sam = Agent::signed_in(&base, "sam", "sam-secret-1").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            sam.get("/").await.status,
            StatusCode::OK,
            "activity keeps the session"
        );
    }
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let r = sam.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/sign-in"));

    // Failures: the same words, at least a second, whether or not the user exists.
    let mut timings = Vec::new();
    let mut bodies = Vec::new();
    for (name, pw) in [
        ("nobody", "whatever-1"),
        ("sam", "wrong-one-1"),
        ("sam", "wrong-one-2"),
    ] {
        // Only the form's POST is timed: the page before it is not padded.
        let mut agent = Agent::new(&base);
        let csrf = agent.sign_in_form().await;
        let t = Instant::now();
        let r = agent.post_sign_in(&csrf, name, pw).await;
        timings.push(t.elapsed());
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let at = r.body.find("role=\"alert\">").unwrap();
        bodies.push(r.body[at..at + r.body[at..].find('<').unwrap()].to_owned());
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert!(
        timings.iter().all(|t| *t >= Duration::from_millis(950)),
        "{timings:?}"
    );
    let spread =
        timings.iter().max().unwrap().as_millis() - timings.iter().min().unwrap().as_millis();
    assert!(spread < 600, "refusals take about as long: {timings:?}");
    // The third failure for sam locks the account: the right password is refused alike.
    let r = Agent::new(&base).sign_in("sam", "wrong-one-3").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (actor, _, e) = last_event(&store, "locked").await;
    assert_eq!(actor.as_deref(), Some("sam"));
    assert_eq!(e["details"]["failures"], 3);
    let r = Agent::new(&base).sign_in("sam", "sam-secret-1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains(&bodies[0]));
    let locked: bool = store
        .query_one(
            "SELECT locked_until > now() FROM pgtrail.users WHERE name = 'sam'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(locked);
    let failed = own_events(&store)
        .await
        .into_iter()
        .filter(|(n, ..)| n == "sign_in_failed")
        .count();
    assert_eq!(failed, 5);
    let (actor, app, e) = last_event(&store, "sign_in_failed").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("sam"), "pgtrail web")
    );
    assert_eq!(e["details"]["locked"], true);
    // After the lock, the right password works again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r = Agent::new(&base).sign_in("sam", "sam-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    // An admin can lift a lock at once: enable does.
    for pw in ["x-wrong-1", "x-wrong-2", "x-wrong-3"] {
        Agent::new(&base).sign_in("sam", pw).await;
    }
    assert_eq!(
        Agent::new(&base)
            .sign_in("sam", "sam-secret-1")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    env.trail
        .cli(&["user", "enable", "sam"])
        .await
        .assert_success();
    assert_eq!(
        Agent::new(&base)
            .sign_in("sam", "sam-secret-1")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_proxy_header_only_from_trusted_addresses() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "rex", "viewer", Some("public.orders"), "rex-secret-1").await;
    store
        .batch_execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, context) VALUES
               (now(), 10, '0/10', 'public', 'orders', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}'),
               (now(), 11, '0/11', 'public', 'customers', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}')",
        )
        .await
        .unwrap();
    let ids = store_ids(
        &store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
    )
    .await;
    let web = Web::start_with(
        &env,
        "[web.proxy]\nuser_header = \"X-Forwarded-User\"\ntrusted = [\"127.0.0.1\"]\nrole_header = \"X-Forwarded-Role\"\n\
         roles = { pat = \"auditor\", rex = \"viewer\" }\n",
    )
    .await;
    let base = web.base.clone();
    // From the trusted proxy address: the header is the user, the role from the config table or the header.
    let mut proxy = Agent::new(&base);
    let r = proxy
        .get_with("/api/v1/entries", &[("X-Forwarded-User", "pat")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["entries"].as_array().unwrap().len(), ids.len());
    let r = proxy.get_with("/", &[("X-Forwarded-User", "pat")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("pat") && r.body.contains("auditor"));
    let r = proxy
        .get_with(
            "/admin",
            &[("X-Forwarded-User", "pat"), ("X-Forwarded-Role", "admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "the role header wins");
    // A store user of the same name keeps its table restriction.
    let r = proxy
        .get_with("/api/v1/entries", &[("X-Forwarded-User", "rex")])
        .await;
    assert_eq!(r.json()["entries"].as_array().unwrap().len(), 1);
    // A user with no role anywhere is refused with the reason.
    let r = proxy
        .get_with("/", &[("X-Forwarded-User", "stranger")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("web.proxy.roles"));
    let r = proxy
        .get_with("/", &[("X-Forwarded-User", "bad name;")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // From any other address the headers are ignored: no entries, whatever they claim.
    let mut other = Agent::from(&base, Some("127.0.0.2".parse().unwrap()));
    let r = other
        .get_with(
            "/api/v1/entries",
            &[("X-Forwarded-User", "pat"), ("X-Forwarded-Role", "admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = other.get_with("/", &[("X-Forwarded-User", "pat")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // Password sign-in still works beside it, from anywhere.
    let r = other.sign_in("rex", "rex-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(other.api_ids("").await, vec![ids[1]]);
    let (actor, _, e) = last_event(&store, "sign_in").await;
    assert_eq!(actor.as_deref(), Some("rex"));
    assert_eq!(e["client_addr"], "127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_auth_none_only_on_loopback() {
    let env = TestEnv::start().await;
    env.setup().await;
    // Refused at load with the reason and the fix, before anything is served.
    let dir = tempfile::tempdir().unwrap();
    let mut config = env.trail.config.clone();
    config.web_listen = format!("0.0.0.0:{}", free_port());
    config.web_toml = "auth = \"none\"\n".into();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let out = pgtrail(&path, &["web"]).await;
    out.assert_clean_failure(
        &["web.auth", "loopback", "pgtrail user add"],
        Duration::from_secs(30),
    );
    // On loopback it serves everything, events included, without signing in.
    let store = env.store().await;
    add_user(&env, "ann", "viewer", None, "ann-secret-1").await;
    let web = Web::start_with(&env, "auth = \"none\"\n").await;
    let mut anyone = Agent::new(&web.base);
    let all = store_ids(&store, "SELECT id FROM pgtrail.entries ORDER BY id DESC").await;
    assert!(!all.is_empty());
    assert_eq!(anyone.api_ids("").await, all);
    assert_eq!(anyone.get("/").await.status, StatusCode::OK);
}

/// Reads a live stream until it ends; the moment it did, or `None` if it was
/// still open after `limit`.
fn when_it_ends(
    mut live: reqwest::Response,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<Instant>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, live.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return Some(Instant::now()),
                Err(_) => return None,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_live_stream_ends_with_its_session() {
    let env = TestEnv::start().await;
    env.setup().await;
    add_user(&env, "sam", "viewer", None, "sam-secret-1").await;
    add_user(&env, "ivy", "viewer", None, "ivy-secret-1").await;
    let web = Web::start_with(
        &env,
        "session_idle_seconds = 4\nsession_max_seconds = 600\n",
    )
    .await;
    let base = web.base.clone();
    let mut sam = Agent::signed_in(&base, "sam", "sam-secret-1").await;
    let mut ivy = Agent::signed_in(&base, "ivy", "ivy-secret-1").await;
    // The agents' client gives up after 30 s; a stream is read by one that never does.
    let streams = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let open = |cookie: String| {
        streams
            .get(format!("{base}/live"))
            .header("cookie", cookie)
            .send()
    };
    let sam_cookie = sam.cookie_header();
    let t0 = Instant::now();
    let sam_live = open(sam_cookie.clone()).await.unwrap();
    let ivy_live = open(ivy.cookie_header()).await.unwrap();
    assert_eq!(
        (sam_live.status(), ivy_live.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let sam_end = when_it_ends(sam_live, Duration::from_secs(60));
    let ivy_end = when_it_ends(ivy_live, Duration::from_secs(60));

    // Sam keeps working in another tab; Ivy only has the stream open. A stream
    // is no activity: Ivy's session expires after 4 idle seconds, and her
    // stream ends at its next check (every 10 s).
    while t0.elapsed() < Duration::from_secs(17) {
        assert_eq!(sam.get("/").await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        ivy_end.is_finished(),
        "the idle session's stream is still open after 17 s"
    );
    let ivy_ended = ivy_end.await.unwrap().unwrap() - t0;
    assert!(
        ivy_ended >= Duration::from_secs(4),
        "the stream ended after {ivy_ended:?}, before the session expired"
    );
    let r = ivy.get("/").await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "the stream kept Ivy's idle session alive"
    );
    assert!(r.location().starts_with("/sign-in"));
    assert!(
        !sam_end.is_finished(),
        "a stream of a live session ended at a check"
    );

    // Signing out ends the stream of that session at its next check.
    let csrf = sam.csrf().await;
    let r = sam
        .post("/sign-out", &[("csrf", &csrf), ("everywhere", "0")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let t1 = Instant::now();
    let sam_ended = sam_end
        .await
        .unwrap()
        .expect("the stream outlived sign-out by 40 s");
    assert!(
        // A check every 10 s, and the stream's own pace on a loaded machine.
        sam_ended - t1 <= Duration::from_secs(25),
        "the stream ended {:?} after sign-out",
        sam_ended - t1
    );
    // And a reconnect with the ended session's cookie is sent to sign in.
    let again = open(sam_cookie).await.unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_reload_applies_web_settings_to_a_running_web_view() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    let web = Web::start_with(&env, "").await;
    let base = web.base.clone();
    let mut proxy = Agent::new(&base);
    let as_pat = [("X-Forwarded-User", "pat")];
    // No proxy configured: the header is nobody, and the request is sent to sign in.
    assert_eq!(
        proxy.get_with("/", &as_pat).await.status,
        StatusCode::SEE_OTHER
    );
    let mut ada = Agent::signed_in(&base, "ada", "ada-secret-1").await;

    // Trust the proxy, reload: the same request is pat's now, without a restart.
    let events = own_events(&store).await.len();
    let reloads = |events: Vec<(String, Option<String>, String, Value)>| {
        events
            .iter()
            .filter(|(n, ..)| n == "config_reloaded")
            .count()
    };
    let reloads_before = reloads(own_events(&store).await);
    let trusting = "[web.proxy]\nuser_header = \"X-Forwarded-User\"\ntrusted = [\"127.0.0.1\"]\ndefault_role = \"viewer\"\n";
    web.reload_with(&env, trusting);
    wait_until(
        "the reloaded proxy settings",
        Duration::from_secs(20),
        || {
            let base = base.clone();
            async move { Agent::new(&base).get_with("/", &as_pat).await.status == StatusCode::OK }
        },
    )
    .await;
    let r = proxy.get_with("/", &as_pat).await;
    assert!(
        r.body.contains("pat") && r.body.contains("viewer"),
        "{}",
        r.body
    );
    // A session from before the reload goes on.
    assert_eq!(ada.get("/").await.status, StatusCode::OK);
    // The view applies new settings before it records the reload.
    wait_until("the reload's event", Duration::from_secs(20), || async {
        reloads(own_events(&store).await) > reloads_before
    })
    .await;
    let (_, app, e) = last_event(&store, "config_reloaded").await;
    assert_eq!(app, "pgtrail web");
    assert_eq!(e["table"], "config");
    assert!(own_events(&store).await.len() > events);

    // A broken file leaves the running settings, and says so in the store.
    web.reload_raw("[web]\nauth = \"sometimes\"\n");
    wait_until("a failed reload event", Duration::from_secs(20), || async {
        own_events(&store)
            .await
            .iter()
            .any(|(n, ..)| n == "config_reload_failed")
    })
    .await;
    assert_eq!(proxy.get_with("/", &as_pat).await.status, StatusCode::OK);

    // Distrust it again: the header is ignored from the next request on.
    web.reload_with(&env, "");
    wait_until("the proxy distrusted again", Duration::from_secs(20), || {
        let base = base.clone();
        async move {
            Agent::new(&base).get_with("/", &as_pat).await.status == StatusCode::SEE_OTHER
        }
    })
    .await;
    assert_eq!(ada.get("/").await.status, StatusCode::OK);
}

/// Rows of three tables written straight into the store (what the web view
/// reads is the subject here, not capture); their ids, newest first.
async fn stored_rows(store: &Client) -> Vec<i64> {
    store
        .batch_execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, context) VALUES
               (now(), 10, '0/10', 'public', 'orders', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}'),
               (now(), 11, '0/11', 'public', 'customers', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}'),
               (now(), 12, '0/12', 'sales', 'leads', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}')",
        )
        .await
        .unwrap();
    store_ids(
        store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
    )
    .await
}

/// Sign-in events by name: (actor, details) of each, oldest first.
async fn events_named(store: &Client, name: &str) -> Vec<(Option<String>, Value)> {
    own_events(store)
        .await
        .into_iter()
        .filter(|(n, ..)| n == name)
        .map(|(_, actor, _, e)| (actor, e["details"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_sign_in_flood_does_not_stall_signed_in_users() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    let rows = stored_rows(&store).await;
    add_user(&env, "sam", "viewer", None, "sam-secret-1").await;
    add_user(&env, "tom", "viewer", None, "tom-secret-1").await;
    let web = Web::start_with(&env, "lockout_after = 5\nlockout_seconds = 600\n").await;
    let base = web.base.clone();
    let mut sam = Agent::signed_in(&base, "sam", "sam-secret-1").await;
    let before = own_events(&store).await.len();

    // 48 wrong guesses at once: 36 at tom, 12 at users who do not exist.
    const AT_TOM: usize = 36;
    const AT_NOBODY: usize = 12;
    let mut flood = Vec::new();
    for i in 0..AT_TOM + AT_NOBODY {
        let base = base.clone();
        flood.push(tokio::spawn(async move {
            let name = if i < AT_TOM {
                "tom".to_owned()
            } else {
                format!("nobody-{i}")
            };
            Agent::new(&base)
                .sign_in(&name, &format!("wrong-guess-{i}"))
                .await
                .status
        }));
    }
    // Meanwhile sam's pages and API answer, with sam's entries, every time.
    let mut during = 0;
    while !flood.iter().all(|t| t.is_finished()) {
        let page = sam.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(row_ids(&page.body), rows.iter().copied().collect());
        assert!(page.body.contains("sam"), "{}", page.body);
        assert_eq!(sam.api_ids("").await, rows);
        if !flood.iter().all(|t| t.is_finished()) {
            during += 1;
        }
    }
    assert!(
        during >= 1,
        "no request of sam's finished while the flood ran"
    );
    for t in flood {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }

    // Every guess is recorded once; tom is locked once, after exactly five failures.
    let events = own_events(&store).await;
    let new: Vec<&str> = events[before..].iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(
        new.iter().filter(|n| **n == "sign_in_failed").count(),
        AT_TOM + AT_NOBODY,
        "{new:?}"
    );
    let failed = events_named(&store, "sign_in_failed").await;
    let at_tom: Vec<&Value> = failed
        .iter()
        .filter(|(a, _)| a.as_deref() == Some("tom"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(at_tom.len(), AT_TOM);
    assert_eq!(
        at_tom.iter().filter(|d| d["locked"] == false).count(),
        4,
        "the fifth failure locks, and every later one finds the lock"
    );
    let locked = events_named(&store, "locked").await;
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0].0.as_deref(), Some("tom"));
    assert_eq!(locked[0].1["failures"], 5);
    let (locked_now, attempts): (bool, i32) = {
        let r = store
            .query_one(
                "SELECT locked_until > now() + interval '500 s', failed_attempts FROM pgtrail.users WHERE name = 'tom'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(locked_now);
    assert_eq!(attempts, 0, "the lock resets the count");
    let r = Agent::new(&base).sign_in("tom", "tom-secret-1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the lock holds");
    let nobody_locked: i64 = store
        .query_one(
            "SELECT count(*) FROM pgtrail.users WHERE name <> 'tom' AND locked_until IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nobody_locked, 0);

    // Sam's requests read the session; last_seen is written at most once a
    // minute (the idle limit is the default 30 minutes), not on each of them.
    let unchanged: bool = store
        .query_one(
            "SELECT last_seen = created_at FROM pgtrail.sessions WHERE user_name = 'sam'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(unchanged, "a request within the minute rewrote last_seen");
    assert_eq!(sam.get("/").await.status, StatusCode::OK);
}

/// Makes the store refuse pgtrail's `event` events (a CHECK on entries), or
/// accept them again with `None`.
async fn refuse_event(store: &Client, event: Option<&str>) {
    store
        .batch_execute("ALTER TABLE pgtrail.entries DROP CONSTRAINT IF EXISTS test_refuses_event")
        .await
        .unwrap();
    if let Some(e) = event {
        store
            .batch_execute(&format!(
                "ALTER TABLE pgtrail.entries ADD CONSTRAINT test_refuses_event \
                 CHECK (details IS NULL OR details->>'event' IS DISTINCT FROM '{e}') NOT VALID"
            ))
            .await
            .unwrap();
    }
}

async fn count(store: &Client, sql: &str) -> i64 {
    store.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_session_changes_commit_with_their_events() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    add_user(&env, "vic", "viewer", None, "vic-secret-1").await;
    add_user(&env, "lou", "viewer", None, "lou-secret-1").await;
    let web = Web::start_with(&env, "lockout_after = 2\nlockout_seconds = 600\n").await;
    let base = web.base.clone();
    let vic_sessions = "SELECT count(*) FROM pgtrail.sessions WHERE user_name = 'vic'";
    let mut ada = Agent::signed_in(&base, "ada", "ada-secret-1").await;

    // Each change stores its one event, with its actor.
    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let sign_ins = events_named(&store, "sign_in").await;
    assert_eq!(
        sign_ins
            .iter()
            .filter(|(a, _)| a.as_deref() == Some("vic"))
            .count(),
        1
    );
    assert_eq!(count(&store, vic_sessions).await, 1);
    sign_out(&mut vic, false).await;
    last_sign_out(&store, 1, "vic", false, 1).await;
    assert_eq!(count(&store, vic_sessions).await, 0);

    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let _vic2 = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    sign_out(&mut vic, true).await;
    last_sign_out(&store, 2, "vic", true, 2).await;
    assert_eq!(count(&store, vic_sessions).await, 0);

    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let csrf = ada.csrf().await;
    let r = ada
        .post(
            "/admin/users/vic",
            &[("csrf", &csrf), ("action", "end_sessions")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    last_sign_out(&store, 3, "ada", true, 1).await;
    assert_eq!(events_named(&store, "sign_out").await[2].1["user"], "vic");
    assert_eq!(count(&store, vic_sessions).await, 0);
    assert_eq!(vic.get("/").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        events_named(&store, "sign_in").await.len(),
        5,
        "ada once, vic four times"
    );

    // A sign-in whose event the store refuses leaves no session behind.
    refuse_event(&store, Some("sign_in")).await;
    let mut refused = Agent::new(&base);
    refused.allow_500 = true;
    let r = refused.sign_in("vic", "vic-secret-1").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(!refused.cookies.contains_key("pgtrail_session"));
    assert_eq!(count(&store, vic_sessions).await, 0);
    assert_eq!(events_named(&store, "sign_in").await.len(), 5);
    refuse_event(&store, None).await;

    // A sign-out whose event is refused leaves the session working.
    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    vic.allow_500 = true;
    refuse_event(&store, Some("sign_out")).await;
    let csrf = vic.csrf().await;
    let r = vic
        .post("/sign-out", &[("csrf", &csrf), ("everywhere", "1")])
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(count(&store, vic_sessions).await, 1);
    assert_eq!(vic.get("/").await.status, StatusCode::OK);
    let csrf = ada.csrf().await;
    ada.allow_500 = true;
    let r = ada
        .post(
            "/admin/users/vic",
            &[("csrf", &csrf), ("action", "end_sessions")],
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(count(&store, vic_sessions).await, 1);
    assert_eq!(vic.get("/").await.status, StatusCode::OK);
    refuse_event(&store, None).await;
    assert_eq!(events_named(&store, "sign_out").await.len(), 3);

    // A lock whose event is refused is not applied, nor the failure counted.
    let mut guess = Agent::new(&base);
    guess.allow_500 = true;
    assert_eq!(
        guess.sign_in("lou", "wrong-one-1").await.status,
        StatusCode::UNAUTHORIZED
    );
    refuse_event(&store, Some("locked")).await;
    let failed_before = events_named(&store, "sign_in_failed").await.len();
    let r = guess.sign_in("lou", "wrong-one-2").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let (locked, attempts): (bool, i32) = {
        let r = store
            .query_one("SELECT locked_until IS NOT NULL, failed_attempts FROM pgtrail.users WHERE name = 'lou'", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((locked, attempts), (false, 1));
    assert_eq!(
        events_named(&store, "sign_in_failed").await.len(),
        failed_before
    );
    refuse_event(&store, None).await;
    // Accepted again, the next failure locks, with its one event.
    assert_eq!(
        guess.sign_in("lou", "wrong-one-3").await.status,
        StatusCode::UNAUTHORIZED
    );
    let locked = events_named(&store, "locked").await;
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0].0.as_deref(), Some("lou"));
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM pgtrail.users WHERE name = 'lou' AND locked_until > now()"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_admin_update_applies_role_and_tables_in_one_event() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    add_user(&env, "eve", "viewer", Some("public.orders"), "eve-secret-1").await;
    let rows = stored_rows(&store).await;
    let web = Web::start_with(&env, "").await;
    let mut ada = Agent::signed_in(&base_of(&web), "ada", "ada-secret-1").await;
    let mut eve = Agent::signed_in(&base_of(&web), "eve", "eve-secret-1").await;
    assert_eq!(eve.api_ids("").await, vec![rows[2]]);
    let user_events =
        "SELECT count(*) FROM pgtrail.entries WHERE action = 'EVENT' AND table_name = 'user'";
    let before = count(&store, user_events).await;

    // Both at once: one event with both before and after.
    let csrf = ada.csrf().await;
    let update = |role: &'static str, tables: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("action", "update".into()),
            ("role", role.into()),
            ("tables", tables.into()),
        ]
    };
    let form = update("auditor", "public.*");
    let r = ada.post("/admin/users/eve", &as_form(&form)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(count(&store, user_events).await, before + 1);
    let (actor, app, e) = last_event(&store, "role_and_tables_changed").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ada"), "pgtrail web")
    );
    assert_eq!(
        e["before"],
        serde_json::json!({"name": "eve", "role": "viewer", "tables": ["public.orders"], "disabled": false})
    );
    assert_eq!(
        e["after"],
        serde_json::json!({"name": "eve", "role": "auditor", "tables": ["public.*"], "disabled": false})
    );
    assert_eq!(e["changed"], serde_json::json!(["role", "tables"]));
    assert_eq!(
        e["remarks"],
        "role of eve changed from viewer to auditor, tables from public.orders to public.*"
    );
    let (role, tables) = grant_of(&store, "eve").await;
    assert_eq!(
        (role.as_str(), tables),
        ("auditor", vec!["public.*".to_owned()])
    );
    assert_eq!(eve.api_ids("").await, vec![rows[1], rows[2]]);

    // The same again changes nothing and records nothing; one of the two, one event named for it.
    let form = update("auditor", "public.*");
    assert_eq!(
        ada.post("/admin/users/eve", &as_form(&form)).await.status,
        StatusCode::OK
    );
    assert_eq!(count(&store, user_events).await, before + 1);
    let form = update("auditor", "");
    assert_eq!(
        ada.post("/admin/users/eve", &as_form(&form)).await.status,
        StatusCode::OK
    );
    assert_eq!(count(&store, user_events).await, before + 2);
    let (_, _, e) = last_event(&store, "tables_changed").await;
    assert_eq!(e["changed"], serde_json::json!(["tables"]));
    assert_eq!(eve.api_ids("").await, rows);

    // If the event is refused, neither role nor tables change.
    refuse_event(&store, Some("role_and_tables_changed")).await;
    ada.allow_500 = true;
    let form = update("viewer", "sales.*");
    let r = ada.post("/admin/users/eve", &as_form(&form)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let (role, tables) = grant_of(&store, "eve").await;
    assert_eq!((role.as_str(), tables.len()), ("auditor", 0));
    assert_eq!(count(&store, user_events).await, before + 2);
    refuse_event(&store, None).await;
    // An unknown user is a 404 that changes nothing.
    let form = update("viewer", "");
    assert_eq!(
        ada.post("/admin/users/nobody", &as_form(&form))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(count(&store, user_events).await, before + 2);
}

/// Signs `agent` out here, or everywhere.
async fn sign_out(agent: &mut Agent, everywhere: bool) {
    let csrf = agent.csrf().await;
    let everywhere = if everywhere { "1" } else { "0" };
    let r = agent
        .post("/sign-out", &[("csrf", &csrf), ("everywhere", everywhere)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

/// There are `total` sign_out events, the newest by `actor` with these details.
async fn last_sign_out(store: &Client, total: usize, actor: &str, everywhere: bool, sessions: i64) {
    let outs = events_named(store, "sign_out").await;
    assert_eq!(outs.len(), total, "{outs:?}");
    let (who, details) = &outs[total - 1];
    assert_eq!(who.as_deref(), Some(actor));
    assert_eq!(details["everywhere"], everywhere);
    assert_eq!(details["sessions"], sessions);
}

/// A form's fields as `post` takes them.
fn as_form<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A user's role and tables as stored.
async fn grant_of(store: &Client, name: &str) -> (String, Vec<String>) {
    let r = store
        .query_one(
            "SELECT role, tables FROM pgtrail.users WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

fn base_of(web: &Web) -> String {
    web.base.clone()
}

/// Sessions ever opened to the store's database (PostgreSQL counts them in pg_stat_database).
async fn store_sessions(store: &Client) -> i64 {
    store
        .query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_cli_changes_use_one_store_connection() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "eve", "viewer", None, "eve-secret-1").await;
    let commands: [(&[&str], Option<&str>, &str); 6] = [
        (
            &["user", "set-role", "eve", "--role", "auditor"],
            None,
            "role_changed",
        ),
        (
            &["user", "set-tables", "eve", "--tables", "public.*"],
            None,
            "tables_changed",
        ),
        (&["user", "disable", "eve"], None, "user_disabled"),
        (&["user", "enable", "eve"], None, "user_enabled"),
        (
            &["user", "reset-password", "eve"],
            Some("eve-secret-2\n"),
            "password_reset",
        ),
        (
            &["token", "create", "siem", "--role", "viewer"],
            None,
            "token_created",
        ),
    ];
    for (args, stdin, event) in commands {
        let events = own_events(&store).await.len();
        let opened = store_sessions(&store).await;
        let out = match stdin {
            Some(input) => env.trail.cli_with_stdin(args, input).await,
            None => env.trail.cli(args).await,
        };
        out.assert_success();
        // The count of a session that ended reaches the statistics at once; give it a moment anyway.
        let mut now = store_sessions(&store).await;
        for _ in 0..20 {
            if now > opened {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = store_sessions(&store).await;
        }
        assert_eq!(
            now - opened,
            1,
            "{args:?} opened {} store connections",
            now - opened
        );
        let all = own_events(&store).await;
        assert_eq!(all.len(), events + 1, "{args:?}");
        assert_eq!(all[events].0, event);
        assert!(all[events]
            .1
            .as_deref()
            .unwrap_or_default()
            .starts_with("os:"));
    }
    let (role, tables) = grant_of(&store, "eve").await;
    assert_eq!(
        (role.as_str(), tables),
        ("auditor", vec!["public.*".to_owned()])
    );
    // A mistake fails before the prompt, on the same one connection, and changes nothing.
    let opened = store_sessions(&store).await;
    env.trail
        .cli(&["user", "reset-password", "nobody"])
        .await
        .assert_clean_failure(&["no user", "nobody"], Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store_sessions(&store).await - opened, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_sweeper_starts_when_a_reload_turns_passwords_on() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "sam", "viewer", None, "sam-secret-1").await;
    let limits = "session_idle_seconds = 2\nsession_max_seconds = 60\n";
    let web = Web::start_with(&env, &format!("auth = \"none\"\n{limits}")).await;
    let base = web.base.clone();
    assert_eq!(Agent::new(&base).get("/").await.status, StatusCode::OK);

    // Passwords on, without a restart.
    web.reload_with(&env, limits);
    wait_until("passwords required", Duration::from_secs(20), || {
        let base = base.clone();
        async move { Agent::new(&base).get("/").await.status == StatusCode::SEE_OTHER }
    })
    .await;
    let mut sam = Agent::signed_in(&base, "sam", "sam-secret-1").await;
    assert_eq!(sam.get("/").await.status, StatusCode::OK);
    let sessions = "SELECT count(*) FROM pgtrail.sessions";
    assert_eq!(count(&store, sessions).await, 1);
    // Left idle, the session expires after 2 s; with no sign-in to sweep it,
    // the sweeper deletes it within a sweep (every 2 s at this idle limit).
    wait_until(
        "the expired session swept",
        Duration::from_secs(15),
        || async { count(&store, sessions).await == 0 },
    )
    .await;
    let r = sam.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/sign-in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_a_full_sign_in_line_is_a_429_unchecked() {
    let env = TestEnv::start().await;
    env.setup().await;
    let store = env.store().await;
    add_user(&env, "tom", "viewer", None, "tom-secret-1").await;
    // A line of one per core fills at once.
    let web = Web::start_full(
        &env,
        "lockout_after = 1000\n",
        &[("PGTRAIL_WEB_SIGN_IN_WAITING", "1")],
    )
    .await;
    let base = web.base.clone();
    // The forms first, then every guess at once: many more than a machine
    // with many cores checks at once.
    let mut agents = Vec::new();
    for _ in 0..150 {
        let mut a = Agent::new(&base);
        let page = a.get("/sign-in").await;
        agents.push((csrf_of(&page.body), a));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(agents.len()));
    let mut flood = Vec::new();
    for (i, (csrf, mut a)) in agents.into_iter().enumerate() {
        let start = start.clone();
        flood.push(tokio::spawn(async move {
            start.wait().await;
            let pw = format!("wrong-guess-{i}");
            a.post(
                "/sign-in",
                &[
                    ("csrf", &csrf),
                    ("name", "tom"),
                    ("password", &pw),
                    ("next", "/"),
                ],
            )
            .await
        }));
    }
    let (mut refused, mut busy) = (0, 0);
    for t in flood {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                busy += 1;
                assert!(
                    r.body.contains("Too many sign-ins are being checked"),
                    "{}",
                    r.body
                );
                assert_eq!(r.headers["retry-after"], "30");
            }
            other => panic!("{other}: {}", r.body),
        }
    }
    assert!(busy >= 1, "150 sign-ins at once never found the line full");
    assert!(refused >= 1);
    // Only the checked guesses are recorded and counted.
    let failed = events_named(&store, "sign_in_failed").await;
    assert_eq!(failed.len(), refused, "{busy} were turned away");
    let attempts: i32 = store
        .query_one(
            "SELECT failed_attempts FROM pgtrail.users WHERE name = 'tom'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts as usize, refused);
    // The line empties again.
    Agent::signed_in(&base, "tom", "tom-secret-1").await;
}
