//! A tour of access control on one captured source, as its users meet it: the refusal before
//! the first user, users from the CLI, strangers sent to sign in, the session cookie, each role
//! and table restriction in the API, the pages, exports, history, transactions and the live
//! stream. The tour goes on in `access_admin` (admin pages, CSRF, disabling, sign-out, API
//! tokens, a reload); every step checks the self-audit event it leaves.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::Client;

use crate::access_admin;
use crate::harness::*;

/// The tour's world: a source with rows in three tables captured by a running daemon, the
/// store, and the web view asking for passwords.
pub(crate) struct Site {
    pub(crate) env: TestEnv,
    pub(crate) store: Client,
    pub(crate) web: Web,
}

/// What the store says exists, newest first: every row change, those of `public.orders`, and
/// pgtrail's own events before the tour signed anyone in.
struct Scope {
    all_rows: Vec<i64>,
    orders: Vec<i64>,
    events: Vec<i64>,
}

impl Site {
    /// Rows in three tables (one transaction touching two), captured and synced; the running
    /// daemon beside the site.
    async fn start() -> (Site, Daemon) {
        let env = TestEnv::start_with(Default::default(), |c| {
            c.tables = vec!["public.*".into(), "sales.*".into()]
        })
        .await;
        let daemon = captured_world(&env).await;
        let store = env.store().await;
        let web = Web::start_with(&env, "").await;
        (Site { env, store, web }, daemon)
    }

    /// The web view's address.
    pub(crate) fn base(&self) -> &str {
        &self.web.base
    }
}

/// A source with rows in three tables (one transaction touching two), captured by the
/// daemon and synced; the store set up. Returns the running daemon.
async fn captured_world(env: &TestEnv) -> Daemon {
    let src = env
        .source_with(
            "CREATE SCHEMA sales;
         CREATE TABLE public.orders (id int PRIMARY KEY, item text);
         CREATE TABLE public.customers (id int PRIMARY KEY, name text);
         CREATE TABLE sales.leads (id int, region text, who text, PRIMARY KEY (id, region));",
        )
        .await;
    env.setup().await;
    let daemon = env.spawn();
    // One transaction per statement (a multi-statement string would be one), but the UPDATEs.
    for sql in [
        "INSERT INTO public.orders VALUES (1, 'tea'), (2, 'milk')",
        "INSERT INTO public.customers VALUES (1, 'Ann'), (2, 'Ben')",
        "INSERT INTO sales.leads VALUES (1, 'eu', 'Cy')",
        "BEGIN; UPDATE public.orders SET item = 'green tea' WHERE id = 1; UPDATE public.customers SET name = 'Anne' WHERE id = 1; COMMIT",
        "DELETE FROM public.customers WHERE id = 2",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    env.sync().await;
    daemon
}

/// No user yet: entries are refused, and both the page and the API say how to create the
/// first admin. The stranger who asked.
async fn refused_before_the_first_user(site: &Site) -> Agent {
    let mut anon = Agent::new(site.base());
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
    anon
}

/// Users from the CLI, password on stdin; bad input fails cleanly and changes nothing.
async fn users_come_from_the_cli(site: &Site) {
    add_user(&site.env, "ada", "admin", None, "ada-secret-1").await;
    add_user(&site.env, "aud", "auditor", None, "aud-secret-1").await;
    add_user(&site.env, "vic", "viewer", None, "vic-secret-1").await;
    add_user(
        &site.env,
        "rita",
        "viewer",
        Some("public.orders"),
        "rita-secret-1",
    )
    .await;
    let refused: [(&[&str], &str, &[&str]); 4] = [
        (
            &["user", "add", "shorty", "--role", "viewer"],
            "short\n",
            &["at least 8"],
        ),
        (
            &["user", "add", "vic", "--role", "viewer"],
            "whatever-1\n",
            &["already a user", "vic"],
        ),
        (
            &["user", "add", "bob", "--role", "root"],
            "whatever-1\n",
            &["viewer, auditor or admin"],
        ),
        (
            &[
                "user", "add", "tab", "--role", "viewer", "--tables", "nodot",
            ],
            "whatever-1\n",
            &["nodot"],
        ),
    ];
    for (args, input, needles) in refused {
        site.env
            .trail
            .cli_with_stdin(args, input)
            .await
            .assert_clean_failure(needles, Duration::from_secs(30));
    }
    let list = site.env.trail.cli(&["user", "list", "--json"]).await;
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
    let hashes: Vec<String> = query_column::<String>(
        &site.store,
        "SELECT password_hash FROM pgtrail.users ORDER BY name",
        &[],
    )
    .await;
    assert!(
        hashes.iter().all(|h| h.starts_with("$argon2id$")),
        "{hashes:?}"
    );
    let (actor, app, e) = last_event(&site.store, "user_added").await;
    assert_eq!(app, "pgtrail cli");
    assert!(actor.unwrap_or_default().starts_with("os:"));
    assert_eq!(e["table"], "user");
    assert_eq!(
        e["after"],
        serde_json::json!({"name": "rita", "role": "viewer", "tables": ["public.orders"], "disabled": false})
    );
    assert!(!e.to_string().contains("argon2"), "no hash in events: {e}");
}

/// Not signed in: pages go to the sign-in page, the API says 401.
async fn strangers_are_sent_to_sign_in(anon: &mut Agent) {
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
}

/// The session cookie's attributes, and only a hash of it in the store. Vic, signed in, and
/// the cookie's token.
async fn the_session_cookie(site: &Site) -> (Agent, String) {
    let mut vic = Agent::new(site.base());
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
    let stored: Vec<String> = query_column::<String>(
        &site.store,
        "SELECT encode(token_hash, 'hex') FROM pgtrail.sessions",
        &[],
    )
    .await;
    assert!(
        !stored.iter().any(|h| h.contains(&token)),
        "only a hash of the token is stored"
    );
    let (actor, app, e) = last_event(&site.store, "sign_in").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("vic"), "pgtrail web")
    );
    assert_eq!(e["client_addr"], "127.0.0.1");
    assert_eq!(e["table"], "session");
    (vic, token)
}

/// What each role sees: the store says which entries exist. Rita, who sees one table.
async fn each_role_sees_its_tables(site: &Site, vic: &mut Agent) -> (Scope, Agent) {
    let all_rows = query_ids(
        &site.store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
    )
    .await;
    let orders = query_ids(&site.store, "SELECT id FROM pgtrail.entries WHERE schema_name = 'public' AND table_name = 'orders' ORDER BY id DESC").await;
    let events = query_ids(
        &site.store,
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
    let mut rita = Agent::signed_in(site.base(), "rita", "rita-secret-1").await;
    assert_eq!(
        rita.api_ids("").await,
        orders,
        "rita sees public.orders only"
    );
    assert!(rita.api_ids("table=public.customers").await.is_empty());
    assert!(rita.api_ids("table=sales.leads").await.is_empty());
    let page = rita.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        linked_entry_ids(&page.body),
        orders.iter().copied().collect()
    );
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
    let scope = Scope {
        all_rows,
        orders,
        events,
    };
    (scope, rita)
}

/// The ids of an export in JSON Lines, newest first.
fn newest_first(body: &str) -> Vec<i64> {
    parse_jsonl(body).iter().rev().map(ExportLine::id).collect()
}

/// Exports: a viewer may not; an auditor gets what their scope allows, and is the export's actor.
async fn exports_follow_role_and_tables(site: &Site, vic: &mut Agent, scope: &Scope) {
    let r = vic.get("/export?format=jsonl").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("auditor"), "{}", r.body);
    add_user(
        &site.env,
        "ora",
        "auditor",
        Some("public.orders"),
        "ora-secret-1",
    )
    .await;
    let mut ora = Agent::signed_in(site.base(), "ora", "ora-secret-1").await;
    let r = ora.get("/export?format=jsonl").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        newest_first(&r.body),
        scope.orders,
        "a table-restricted auditor exports their tables only"
    );
    let (actor, app, e) = last_event(&site.store, "export").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ora"), "pgtrail web")
    );
    assert_eq!(e["details"]["entries"], 3, "{e}");
    let mut aud = Agent::signed_in(site.base(), "aud", "aud-secret-1").await;
    let r = aud.get("/export?format=jsonl&action=EVENT").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.is_empty(),
        "an auditor is not an admin: no events in exports either: {}",
        r.body
    );
}

/// Entries, history and transactions of other tables are not there for a restricted user:
/// a 404 as if they did not exist. The id of an entry of `public.customers`.
async fn entries_history_and_transactions_follow_the_tables(
    site: &Site,
    vic: &mut Agent,
    rita: &mut Agent,
    scope: &Scope,
) -> i64 {
    let customer = query_ids(
        &site.store,
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
        rita.get(&format!("/api/v1/entries/{}", scope.orders[0]))
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
    // One value for a two-column key is a 400 naming the key's columns, but only to whoever
    // may see the table: for rita it is the 404 of a table without entries, naming nothing.
    let odd = "/history?table=sales.leads&pk=1";
    let shown = vic.get(odd).await;
    assert_eq!(shown.status, StatusCode::BAD_REQUEST);
    assert!(shown.body.contains("id, region"), "{}", shown.body);
    let hidden = rita.get(odd).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.body);
    assert!(!hidden.body.contains("region"), "{}", hidden.body);
    let h = rita.get("/history?table=public.orders&pk=1").await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    // The transaction that touched orders and customers: rita sees its orders row only.
    let mixed: i64 = query_value(
        &site.store,
        "SELECT xid FROM pgtrail.entries WHERE table_name = 'orders' AND action = 'UPDATE'",
        &[],
    )
    .await;
    let in_txn = query_ids(
        &site.store,
        &format!("SELECT id FROM pgtrail.entries WHERE xid = {mixed} ORDER BY id"),
    )
    .await;
    assert_eq!(in_txn.len(), 2);
    let t = rita.get(&format!("/transactions/{mixed}")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(linked_entry_ids(&t.body).len(), 1, "{}", t.body);
    assert!(!t.body.contains("customers"));
    assert_eq!(
        linked_entry_ids(&vic.get(&format!("/transactions/{mixed}")).await.body).len(),
        2
    );
    customer
}

/// Admins see pgtrail's own events, in the same view, filterable. Ada, the admin.
async fn admins_see_pgtrail_events(site: &Site, scope: &Scope) -> Agent {
    let mut ada = Agent::signed_in(site.base(), "ada", "ada-secret-1").await;
    let now_events = query_ids(
        &site.store,
        "SELECT id FROM pgtrail.entries WHERE action = 'EVENT' ORDER BY id DESC",
    )
    .await;
    assert!(now_events.len() > scope.events.len());
    assert_eq!(ada.api_ids("source=pgtrail").await, now_events);
    assert_eq!(
        ada.api_ids("").await.len(),
        scope.all_rows.len() + now_events.len()
    );
    ada
}

/// Live updates carry only what the user may see.
async fn live_updates_follow_the_tables(site: &Site, rita: &Agent) {
    let mut live = rita.open("/live?after=0").await;
    assert_eq!(live.status(), StatusCode::OK);
    site.env.source().await.batch_execute("INSERT INTO public.customers VALUES (9, 'Zed'); INSERT INTO public.orders VALUES (9, 'jam');").await.unwrap();
    site.env.sync().await;
    let new_order = query_ids(
        &site.store,
        "SELECT id FROM pgtrail.entries WHERE table_name = 'orders' ORDER BY id DESC LIMIT 1",
    )
    .await[0];
    let seen = read_live_until(&mut live, new_order, Duration::from_secs(20)).await;
    let streamed: BTreeSet<i64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    let orders_now: BTreeSet<i64> = query_ids(
        &site.store,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_roles_table_scopes_csrf_tokens_and_self_audit() {
    let (site, mut daemon) = Site::start().await;
    let mut anon = refused_before_the_first_user(&site).await;
    users_come_from_the_cli(&site).await;
    strangers_are_sent_to_sign_in(&mut anon).await;
    let (mut vic, vic_token) = the_session_cookie(&site).await;
    let (scope, mut rita) = each_role_sees_its_tables(&site, &mut vic).await;
    exports_follow_role_and_tables(&site, &mut vic, &scope).await;
    let customer =
        entries_history_and_transactions_follow_the_tables(&site, &mut vic, &mut rita, &scope)
            .await;
    let mut ada = admins_see_pgtrail_events(&site, &scope).await;
    live_updates_follow_the_tables(&site, &rita).await;
    // The tour goes on with what admins do.
    access_admin::only_admins_manage_users(&site, &mut vic, &mut rita, &mut ada).await;
    access_admin::forms_need_their_csrf_token(&site, &mut ada, &mut vic).await;
    let (mut eve, csrf) = access_admin::admin_pages_add_and_change_users(&site, &mut ada).await;
    access_admin::disabling_ends_sessions_at_once(&site, &mut ada, &mut eve, &csrf).await;
    access_admin::sign_out_here_and_everywhere(&site, &mut vic, &vic_token).await;
    access_admin::api_tokens(&site, &mut ada, customer).await;
    access_admin::a_reload_is_recorded(&site, &mut daemon).await;
}
