//! Who gets in is configuration: a proxy's user header only from trusted addresses (its roles
//! from the config or a header, store users keeping their tables), `auth = "none"` only on a
//! loopback address, and a reload that changes these settings in a running web view.

use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_proxy_header_only_from_trusted_addresses() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "rex", "viewer", Some("public.orders"), "rex-secret-1").await;
    // Rows of orders, customers and leads, newest first: rex may see the orders row only.
    let ids = stored_rows(&store).await;
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
    assert_eq!(other.api_ids("").await, vec![ids[2]]);
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
    let all = query_ids(&store, "SELECT id FROM pgtrail.entries ORDER BY id DESC").await;
    assert!(!all.is_empty());
    assert_eq!(anyone.api_ids("").await, all);
    assert_eq!(anyone.get("/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_reload_applies_web_settings_to_a_running_web_view() {
    let (env, store) = TestEnv::with_store().await;
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
    let reloads = |events: Vec<OwnEventRow>| {
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
