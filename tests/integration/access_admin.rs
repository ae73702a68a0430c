//! What admins do, and what it leaves in the store: the second half of the tour that starts in
//! `access_roles` (only admins manage users, CSRF on every form, the admin pages, disabling,
//! sign-out here and everywhere, API tokens, a recorded reload), then two tests of their own:
//! an admin update of role and tables is one event (or nothing), and each CLI change of a user
//! or token uses one store connection.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio_postgres::Client;

use crate::access_roles::Site;
use crate::harness::*;

/// Roles: only admins manage users.
pub(crate) async fn only_admins_manage_users(
    site: &Site,
    vic: &mut Agent,
    rita: &mut Agent,
    ada: &mut Agent,
) {
    let mut aud = Agent::signed_in(site.base(), "aud", "aud-secret-1").await;
    for agent in [&mut *vic, &mut aud, &mut *rita] {
        let r = agent.get("/admin").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("admin"), "{}", r.body);
        let csrf = agent.csrf().await;
        let r = agent
            .add_user_form(&csrf, "sneaky", "admin", None, "sneaky-pass-1")
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert!(!user_exists(&site.store, "sneaky").await);
    assert!(!vic.get("/").await.body.contains("href=\"/admin\""));
    let admin_page = ada.get("/admin").await;
    assert_eq!(admin_page.status, StatusCode::OK);
    assert!(admin_page.body.contains("data-user=\"rita\""));
}

/// Is there a user `name` in the store?
async fn user_exists(store: &Client, name: &str) -> bool {
    !query_column::<String>(
        store,
        "SELECT name FROM pgtrail.users WHERE name = $1",
        &[&name],
    )
    .await
    .is_empty()
}

/// CSRF: an admin form without the token, or with another session's, is refused and changes
/// nothing; so is a sign-in form without its own cookie's token.
pub(crate) async fn forms_need_their_csrf_token(site: &Site, ada: &mut Agent, vic: &mut Agent) {
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
        .add_user_form(&vic_csrf, "eve", "viewer", None, "eve-secret-1")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!user_exists(&site.store, "eve").await);
    let r = ada.post("/sign-out", &[("csrf", "forged")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The sign-in form needs its own cookie's token.
    let mut fresh = Agent::new(site.base());
    let r = fresh
        .post(
            "/sign-in",
            &[("csrf", "x"), ("name", "ada"), ("password", "ada-secret-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!fresh.cookies.contains_key("pgtrail_session"));
}

/// Admin pages: add a user, change a role, with the admin as the events' actor. Eve, the new
/// user, signed in, and ada's CSRF token.
pub(crate) async fn admin_pages_add_and_change_users(
    site: &Site,
    ada: &mut Agent,
) -> (Agent, String) {
    let store = &site.store;
    let csrf = ada.csrf().await;
    let r = ada
        .add_user_form(&csrf, "eve", "viewer", Some("sales.*"), "eve-secret-1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("data-user=\"eve\""));
    let (actor, app, e) = last_event(store, "user_added").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ada"), "pgtrail web")
    );
    assert_eq!(e["after"]["tables"], json!(["sales.*"]));
    let mut eve = Agent::signed_in(site.base(), "eve", "eve-secret-1").await;
    let leads = query_ids(
        store,
        "SELECT id FROM pgtrail.entries WHERE schema_name = 'sales' ORDER BY id DESC",
    )
    .await;
    assert_eq!(eve.api_ids("").await, leads);
    let r = ada.update_user(&csrf, "eve", "auditor", "sales.*").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (actor, _, e) = last_event(store, "role_changed").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(
        (e["before"]["role"].as_str(), e["after"]["role"].as_str()),
        (Some("viewer"), Some("auditor"))
    );
    assert_eq!(e["changed"], json!(["role"]));
    let (role, _) = grant_of(store, "eve").await;
    assert_eq!(role, "auditor");
    assert!(
        eve.get("/").await.body.contains("auditor"),
        "a role change applies on the next request"
    );
    let r = ada.update_user(&csrf, "eve", "boss", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("viewer, auditor or admin"));
    let r = ada.user_action(&csrf, "nobody", "disable").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    (eve, csrf)
}

/// Disabling ends the user's sessions at once, and they cannot sign in; the CLI changes role,
/// enables and resets passwords too.
pub(crate) async fn disabling_ends_sessions_at_once(
    site: &Site,
    ada: &mut Agent,
    eve: &mut Agent,
    csrf: &str,
) {
    let (store, base) = (&site.store, site.base());
    let r = ada.user_action(csrf, "eve", "disable").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(eve.get("/").await.status, StatusCode::SEE_OTHER);
    let status = sign_in_status(base, "eve", "eve-secret-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (actor, _, e) = last_event(store, "user_disabled").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(e["after"]["disabled"], true);
    // From the CLI too: role, enable, reset-password.
    let trail = &site.env.trail;
    trail.cli(&["user", "enable", "eve"]).await.assert_success();
    trail
        .cli(&["user", "set-role", "eve", "--role", "viewer"])
        .await
        .assert_success();
    trail
        .cli_with_stdin(&["user", "reset-password", "eve"], "eve-secret-2\n")
        .await
        .assert_success();
    assert_eq!(
        sign_in_status(base, "eve", "eve-secret-1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in_status(base, "eve", "eve-secret-2").await,
        StatusCode::SEE_OTHER
    );
    for name in ["user_enabled", "password_reset"] {
        let (actor, app, _) = last_event(store, name).await;
        assert_eq!(app, "pgtrail cli");
        assert!(actor.unwrap_or_default().starts_with("os:"));
    }
    trail
        .cli(&["user", "disable", "nobody"])
        .await
        .assert_clean_failure(&["no user", "nobody"], Duration::from_secs(30));
}

/// Sign-out ends this session (the old cookie `token` is dead); sign-out everywhere ends all
/// of the user's.
pub(crate) async fn sign_out_here_and_everywhere(site: &Site, vic: &mut Agent, token: &str) {
    let mut vic2 = Agent::signed_in(site.base(), "vic", "vic-secret-1").await;
    let mut vic3 = Agent::signed_in(site.base(), "vic", "vic-secret-1").await;
    let r = vic.post_sign_out(false).await;
    assert_eq!(
        (r.status, r.location().as_str()),
        (StatusCode::SEE_OTHER, "/sign-in")
    );
    assert!(!vic.cookies.contains_key("pgtrail_session"));
    vic.cookies
        .insert("pgtrail_session".into(), token.to_owned());
    assert_eq!(
        vic.get("/").await.status,
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    assert_eq!(vic2.get("/").await.status, StatusCode::OK);
    vic2.sign_out(true).await;
    assert_eq!(vic3.get("/").await.status, StatusCode::SEE_OTHER);
    let (actor, _, e) = last_event(&site.store, "sign_out").await;
    assert_eq!(actor.as_deref(), Some("vic"));
    assert_eq!(e["details"]["everywhere"], true);
    assert_eq!(e["details"]["sessions"], 2);
}

/// API tokens: created in the web view (shown once), scoped to a role and tables, revocable;
/// or from the CLI.
pub(crate) async fn api_tokens(site: &Site, ada: &mut Agent, customer: i64) {
    let csrf = ada.csrf().await;
    let mut siem = token_from_the_web_view(site, ada, &csrf, customer).await;
    // From the CLI: printed once on stdout.
    let out = site
        .env
        .trail
        .cli(&["token", "create", "ops", "--role", "admin"])
        .await;
    out.assert_success();
    let mut ops = Agent::bearing(site.base(), out.stdout.trim());
    assert_eq!(
        ops.api_ids("source=pgtrail").await.len() as i64,
        query_count(
            &site.store,
            "SELECT count(*) FROM pgtrail.entries WHERE action = 'EVENT'"
        )
        .await
    );
    let r = ada
        .post("/admin/tokens/siem/revoke", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = siem.get("/api/v1/entries").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("revoked"));
    let (actor, _, e) = last_event(&site.store, "token_revoked").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(e["after"]["revoked"], true);
    site.env
        .trail
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
}

/// A token made on the admin page: shown once, only its hash stored, scoped to its role and
/// tables, for the API only, its use noted at most once a minute. Its client.
async fn token_from_the_web_view(site: &Site, ada: &mut Agent, csrf: &str, customer: i64) -> Agent {
    let store = &site.store;
    let r = ada
        .post(
            "/admin/tokens",
            &[
                ("csrf", csrf),
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
    let stored: Vec<String> = query_column(
        store,
        "SELECT encode(token_hash, 'hex') FROM pgtrail.tokens",
        &[],
    )
    .await;
    assert!(!stored.iter().any(|h| h.contains(&secret)));
    let mut siem = Agent::bearing(site.base(), &secret);
    let orders_now = query_ids(
        store,
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
        query_value::<Option<String>>(
            store,
            "SELECT last_used_at::text FROM pgtrail.tokens WHERE name = 'siem'",
            &[],
        )
        .await
    };
    let first_use = last_used().await.expect("the token's use is noted");
    siem.api_ids("").await;
    assert_eq!(last_used().await.as_deref(), Some(first_use.as_str()));
    let (actor, _, e) = last_event(store, "token_created").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(
        e["after"],
        json!({"name": "siem", "role": "viewer", "tables": ["public.orders"], "revoked": false})
    );
    assert!(!e.to_string().contains(&secret));
    siem
}

/// A configuration reload of `pgtrail run` is recorded; then the daemon stops.
pub(crate) async fn a_reload_is_recorded(site: &Site, daemon: &mut Daemon) {
    let store = &site.store;
    let before = own_events(store).await.len();
    daemon.signal(libc::SIGHUP);
    wait_until("a config reload event", Duration::from_secs(30), || async {
        own_events(store)
            .await
            .iter()
            .skip(before)
            .any(|(n, ..)| n == "config_reloaded")
    })
    .await;
    let (_, app, e) = last_event(store, "config_reloaded").await;
    assert_eq!(app, "pgtrail run");
    assert_eq!(e["table"], "config");
    assert_eq!(e["details"]["tables"], json!(["public.*", "sales.*"]));
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_admin_update_applies_role_and_tables_in_one_event() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    add_user(&env, "eve", "viewer", Some("public.orders"), "eve-secret-1").await;
    let rows = stored_rows(&store).await;
    let web = Web::start_with(&env, "").await;
    let mut ada = Agent::signed_in(&web.base, "ada", "ada-secret-1").await;
    let mut eve = Agent::signed_in(&web.base, "eve", "eve-secret-1").await;
    assert_eq!(eve.api_ids("").await, vec![rows[2]]);
    let user_events =
        "SELECT count(*) FROM pgtrail.entries WHERE action = 'EVENT' AND table_name = 'user'";
    let before = query_count(&store, user_events).await;

    // Both at once: one event with both before and after.
    let csrf = ada.csrf().await;
    let r = ada.update_user(&csrf, "eve", "auditor", "public.*").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(query_count(&store, user_events).await, before + 1);
    let (actor, app, e) = last_event(&store, "role_and_tables_changed").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("ada"), "pgtrail web")
    );
    assert_eq!(
        e["before"],
        json!({"name": "eve", "role": "viewer", "tables": ["public.orders"], "disabled": false})
    );
    assert_eq!(
        e["after"],
        json!({"name": "eve", "role": "auditor", "tables": ["public.*"], "disabled": false})
    );
    assert_eq!(e["changed"], json!(["role", "tables"]));
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
    let r = ada.update_user(&csrf, "eve", "auditor", "public.*").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(query_count(&store, user_events).await, before + 1);
    let r = ada.update_user(&csrf, "eve", "auditor", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(query_count(&store, user_events).await, before + 2);
    let (_, _, e) = last_event(&store, "tables_changed").await;
    assert_eq!(e["changed"], json!(["tables"]));
    assert_eq!(eve.api_ids("").await, rows);

    // If the event is refused, neither role nor tables change.
    refuse_event(&store, Some("role_and_tables_changed")).await;
    ada.allow_500 = true;
    let r = ada.update_user(&csrf, "eve", "viewer", "sales.*").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let (role, tables) = grant_of(&store, "eve").await;
    assert_eq!((role.as_str(), tables.len()), ("auditor", 0));
    assert_eq!(query_count(&store, user_events).await, before + 2);
    refuse_event(&store, None).await;
    // An unknown user is a 404 that changes nothing.
    let r = ada.update_user(&csrf, "nobody", "viewer", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(query_count(&store, user_events).await, before + 2);
}

/// Sessions ever opened to the store's database (PostgreSQL counts them in pg_stat_database).
async fn store_sessions(store: &Client) -> i64 {
    query_value(
        store,
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_cli_changes_use_one_store_connection() {
    let (env, store) = TestEnv::with_store().await;
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
