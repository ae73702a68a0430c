//! A client of the web view as a person or a program uses it: [`Agent`] keeps cookies, sends a
//! bearer token if it has one, never follows redirects (the tests look at them), and fills in
//! the sign-in, sign-out and admin forms. Users themselves come from the CLI ([`add_user`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use super::{csrf_of, ids_of, TestEnv};

/// A browser, or an API client: keeps cookies, never follows redirects (tests look at them).
pub struct Agent {
    pub http: reqwest::Client,
    pub base: String,
    pub cookies: HashMap<String, String>,
    pub bearer: Option<String>,
    /// A test that makes the store refuse a write expects the 500 that follows.
    pub allow_500: bool,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Agent {
    pub fn new(base: &str) -> Agent {
        Agent::from(base, None)
    }

    /// An API client with `token` as its bearer token.
    pub fn bearing(base: &str, token: &str) -> Agent {
        let mut a = Agent::new(base);
        a.bearer = Some(token.to_owned());
        a
    }

    /// Connecting from `local` (any 127.0.0.0/8 address reaches a 127.0.0.1 listener).
    pub fn from(base: &str, local: Option<IpAddr>) -> Agent {
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

    /// The `cookie` header this agent sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
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

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
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
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Reply {
        let csrf = self.sign_in_form().await;
        self.post_sign_in(&csrf, name, password).await
    }

    /// Opens the sign-in page; its form's CSRF token.
    pub async fn sign_in_form(&mut self) -> String {
        let page = self.get("/sign-in").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        csrf_of(&page.body)
    }

    /// Sends the sign-in form.
    pub async fn post_sign_in(&mut self, csrf: &str, name: &str, password: &str) -> Reply {
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

    pub async fn signed_in(base: &str, name: &str, password: &str) -> Agent {
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
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        csrf_of(&page.body)
    }

    /// Every id `GET /api/v1/entries?query` gives, walking the cursor.
    pub async fn api_ids(&mut self, query: &str) -> Vec<i64> {
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
            all.extend(ids_of(&v));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
    }

    /// `GET path` with this agent's cookies, the answer unread (a live stream, say).
    pub async fn open(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Sends the sign-out form (here, or `everywhere`) with this page's CSRF token.
    pub async fn post_sign_out(&mut self, everywhere: bool) -> Reply {
        let csrf = self.csrf().await;
        let everywhere = if everywhere { "1" } else { "0" };
        self.post("/sign-out", &[("csrf", &csrf), ("everywhere", everywhere)])
            .await
    }

    /// Signs out here, or everywhere; it must succeed.
    pub async fn sign_out(&mut self, everywhere: bool) {
        let r = self.post_sign_out(everywhere).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }

    /// The admin form that adds a user.
    pub async fn add_user_form(
        &mut self,
        csrf: &str,
        name: &str,
        role: &str,
        tables: Option<&str>,
        password: &str,
    ) -> Reply {
        let mut form = vec![("csrf", csrf), ("name", name), ("role", role)];
        if let Some(t) = tables {
            form.push(("tables", t));
        }
        form.push(("password", password));
        self.post("/admin/users", &form).await
    }

    /// The admin form that sets a user's role and tables.
    pub async fn update_user(&mut self, csrf: &str, name: &str, role: &str, tables: &str) -> Reply {
        let form = [
            ("csrf", csrf),
            ("action", "update"),
            ("role", role),
            ("tables", tables),
        ];
        self.post(&format!("/admin/users/{name}"), &form).await
    }

    /// One of the admin page's buttons for a user (`disable`, `end_sessions`…).
    pub async fn user_action(&mut self, csrf: &str, name: &str, action: &str) -> Reply {
        let form = [("csrf", csrf), ("action", action)];
        self.post(&format!("/admin/users/{name}"), &form).await
    }
}

/// Answers a sign-in as `name` with `password` gets from a new agent.
pub async fn sign_in_status(base: &str, name: &str, password: &str) -> StatusCode {
    Agent::new(base).sign_in(name, password).await.status
}

/// `pgtrail user add NAME --role ROLE [--tables T]`, the password on standard input.
pub async fn add_user(env: &TestEnv, name: &str, role: &str, tables: Option<&str>, password: &str) {
    let mut args = vec!["user", "add", name, "--role", role];
    if let Some(t) = tables {
        args.extend(["--tables", t]);
    }
    env.trail
        .cli_with_stdin(&args, &format!("{password}\n"))
        .await
        .assert_success();
}

/// A user's role and tables as stored.
pub async fn grant_of(store: &Client, name: &str) -> (String, Vec<String>) {
    let r = store
        .query_one(
            "SELECT role, tables FROM pgtrail.users WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}
