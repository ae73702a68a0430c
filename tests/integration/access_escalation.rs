//! An admin restricted to some tables cannot reach beyond them on the admin pages: sally, an
//! admin of `sales.*`, tries every way up (users and tokens with every table or other tables,
//! widening a user she manages or herself, taking over or locking out a full admin, a viewer
//! with every table or another restricted admin, revoking a token beyond her tables) and each
//! is a 403 that says why, with the users, tokens, sessions and events in the store exactly as
//! before. Within her tables she still adds, changes and revokes; a full admin still does all.

use reqwest::StatusCode;
use tokio_postgres::Client;

use crate::harness::*;

/// The store's users, tokens, sessions and events, as text: equal before and after means a
/// refused request changed nothing.
async fn snapshot(store: &Client) -> String {
    query_value(
        store,
        "SELECT concat_ws(E'\\n',
             (SELECT string_agg(u::text, E'\\n' ORDER BY u.name) FROM pgtrail.users u),
             (SELECT string_agg(t::text, E'\\n' ORDER BY t.name) FROM pgtrail.tokens t),
             (SELECT string_agg(s.user_name || ' ' || encode(s.token_hash, 'hex'), E'\\n' ORDER BY s.token_hash)
                FROM pgtrail.sessions s),
             (SELECT count(*)::text FROM pgtrail.entries WHERE action = 'EVENT'))",
        &[],
    )
    .await
}

/// A token's role, tables and whether it is revoked, as stored.
async fn token_of(store: &Client, name: &str) -> (String, Vec<String>, bool) {
    let r = store
        .query_one(
            "SELECT role, tables, revoked_at IS NOT NULL FROM pgtrail.tokens WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("token {name}: {e}"));
    (r.get(0), r.get(1), r.get(2))
}

/// `pgtrail token create NAME --role viewer [--tables T]` from the CLI.
async fn cli_token(env: &TestEnv, name: &str, tables: Option<&str>) {
    let mut args = vec!["token", "create", name, "--role", "viewer"];
    if let Some(t) = tables {
        args.extend(["--tables", t]);
    }
    env.trail.cli(&args).await.assert_success();
}

/// The admin form that creates a token.
async fn token_form(agent: &mut Agent, csrf: &str, name: &str, role: &str, tables: &str) -> Reply {
    let form = [
        ("csrf", csrf),
        ("name", name),
        ("role", role),
        ("tables", tables),
    ];
    agent.post("/admin/tokens", &form).await
}

/// Every way up sally tries: refused with a 403 that names her tables, nothing changed.
async fn escalations_are_refused(store: &Client, sally: &mut Agent, root: &mut Agent) {
    let csrf = sally.csrf().await;
    let before = snapshot(store).await;
    let mut replies = vec![
        sally
            .add_user_form(&csrf, "mal", "admin", None, "mal-secret-1")
            .await,
        sally
            .add_user_form(&csrf, "mal", "viewer", Some("hr.pay"), "mal-secret-1")
            .await,
        sally
            .add_user_form(&csrf, "mal", "admin", Some("sales.*, hr.*"), "mal-secret-1")
            .await,
        token_form(sally, &csrf, "mal", "viewer", "").await,
        token_form(sally, &csrf, "mal", "admin", "public.*").await,
        // Widening a user she manages, or herself.
        sally.update_user(&csrf, "sam", "viewer", "").await,
        sally.update_user(&csrf, "sam", "admin", "*.*").await,
        sally
            .update_user(&csrf, "sally", "admin", "sales.*, hr.*")
            .await,
        // A full admin: not even narrowed.
        sally.update_user(&csrf, "root", "viewer", "sales.*").await,
        sally
            .post("/admin/tokens/wide/revoke", &[("csrf", &csrf)])
            .await,
    ];
    for (user, action) in [
        ("root", "disable"),
        ("root", "enable"),
        ("root", "end_sessions"),
        ("vic", "disable"),
        ("hank", "end_sessions"),
    ] {
        replies.push(sally.user_action(&csrf, user, action).await);
    }
    for user in ["root", "vic", "hank"] {
        let form = [
            ("csrf", csrf.as_str()),
            ("action", "reset_password"),
            ("password", "taken-over-1"),
        ];
        replies.push(sally.post(&format!("/admin/users/{user}"), &form).await);
    }
    for r in &replies {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert!(
            r.body.contains("an admin of the tables sales.* only"),
            "{}",
            r.body
        );
    }
    assert!(replies[0].body.contains("give the user mal every table"));
    assert!(replies[2].body.contains("give the user mal hr.*:"));
    assert!(replies[8].body.contains("the user root has the tables all"));
    // Malformed input is still a 400, before any question of reach.
    let r = sally.update_user(&csrf, "root", "boss", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = token_form(sally, &csrf, "mal", "viewer", "nodot").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(snapshot(store).await, before, "a refusal changed the store");
    assert_eq!(root.get("/admin").await.status, StatusCode::OK);
}

/// Within her tables sally adds users (an admin too), changes, resets, disables, enables and
/// signs out a user of hers, and creates and revokes tokens; the store shows each.
async fn within_her_tables_sally_manages(store: &Client, sally: &mut Agent) {
    let csrf = sally.csrf().await;
    let ok = |r: Reply| assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    ok(sally
        .add_user_form(&csrf, "sue", "viewer", Some("sales.orders"), "sue-secret-1")
        .await);
    ok(sally
        .add_user_form(&csrf, "sid", "admin", Some("sales.*"), "sid-secret-1")
        .await);
    assert_eq!(
        grant_of(store, "sue").await,
        ("viewer".into(), vec!["sales.orders".into()])
    );
    assert_eq!(
        grant_of(store, "sid").await,
        ("admin".into(), vec!["sales.*".into()])
    );
    ok(sally
        .update_user(&csrf, "sam", "auditor", "sales.orders, sales.l*")
        .await);
    assert_eq!(
        grant_of(store, "sam").await,
        (
            "auditor".into(),
            vec!["sales.orders".into(), "sales.l*".into()]
        )
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("action", "reset_password"),
        ("password", "sam-secret-2"),
    ];
    ok(sally.post("/admin/users/sam", &form).await);
    assert_eq!(
        sign_in_status(&sally.base, "sam", "sam-secret-2").await,
        StatusCode::SEE_OTHER
    );
    ok(sally.user_action(&csrf, "sam", "end_sessions").await);
    let sessions = "SELECT count(*) FROM pgtrail.sessions WHERE user_name = 'sam'";
    assert_eq!(query_count(store, sessions).await, 0);
    ok(sally.user_action(&csrf, "sam", "disable").await);
    let disabled = "SELECT disabled FROM pgtrail.users WHERE name = 'sam'";
    assert!(query_value::<bool>(store, disabled, &[]).await);
    ok(sally.user_action(&csrf, "sam", "enable").await);
    assert!(!query_value::<bool>(store, disabled, &[]).await);
    ok(token_form(sally, &csrf, "leads2", "auditor", "sales.leads").await);
    assert_eq!(
        token_of(store, "leads2").await,
        ("auditor".into(), vec!["sales.leads".into()], false)
    );
    ok(sally
        .post("/admin/tokens/leads/revoke", &[("csrf", &csrf)])
        .await);
    assert!(token_of(store, "leads").await.2);
    let (actor, _, _) = last_event(store, "token_revoked").await;
    assert_eq!(actor.as_deref(), Some("sally"));
}

/// A full admin still does all: every table for a new user and token, another admin's tables,
/// a token of every table revoked.
async fn a_full_admin_does_all(store: &Client, root: &mut Agent) {
    let csrf = root.csrf().await;
    let ok = |r: Reply| assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    ok(root
        .add_user_form(&csrf, "ann", "admin", None, "ann-secret-1")
        .await);
    assert_eq!(grant_of(store, "ann").await, ("admin".into(), vec![]));
    ok(token_form(root, &csrf, "all2", "viewer", "").await);
    assert_eq!(
        token_of(store, "all2").await,
        ("viewer".into(), vec![], false)
    );
    ok(root
        .update_user(&csrf, "sally", "admin", "sales.*, hr.*")
        .await);
    assert_eq!(
        grant_of(store, "sally").await,
        ("admin".into(), vec!["sales.*".into(), "hr.*".into()])
    );
    ok(root.user_action(&csrf, "vic", "disable").await);
    ok(root
        .post("/admin/tokens/wide/revoke", &[("csrf", &csrf)])
        .await);
    assert!(token_of(store, "wide").await.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_admin_cannot_grant_or_manage_beyond_its_tables() {
    let (env, store) = TestEnv::with_store().await;
    for (name, role, tables) in [
        ("root", "admin", None),
        ("sally", "admin", Some("sales.*")),
        ("hank", "admin", Some("hr.*")),
        ("vic", "viewer", None),
        ("sam", "viewer", Some("sales.orders")),
    ] {
        add_user(&env, name, role, tables, &format!("{name}-secret-1")).await;
    }
    cli_token(&env, "wide", None).await;
    cli_token(&env, "leads", Some("sales.leads")).await;
    let web = Web::start_with(&env, "").await;
    let mut root = Agent::signed_in(&web.base, "root", "root-secret-1").await;
    let mut sally = Agent::signed_in(&web.base, "sally", "sally-secret-1").await;
    let _hank = Agent::signed_in(&web.base, "hank", "hank-secret-1").await;

    escalations_are_refused(&store, &mut sally, &mut root).await;
    within_her_tables_sally_manages(&store, &mut sally).await;
    a_full_admin_does_all(&store, &mut root).await;
}
