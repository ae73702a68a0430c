//! Sessions and the events that record them: a live stream ends with its session (idle expiry
//! or sign-out), each session change commits together with its event (a change whose event the
//! store refuses does not happen), and the sweeper that deletes expired sessions starts when a
//! reload turns passwords on.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::*;

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
    sam.sign_out(false).await;
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
async fn access_session_changes_commit_with_their_events() {
    let (env, store) = TestEnv::with_store().await;
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
    assert_eq!(query_count(&store, vic_sessions).await, 1);
    vic.sign_out(false).await;
    last_sign_out(&store, 1, "vic", false, 1).await;
    assert_eq!(query_count(&store, vic_sessions).await, 0);

    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let _vic2 = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    vic.sign_out(true).await;
    last_sign_out(&store, 2, "vic", true, 2).await;
    assert_eq!(query_count(&store, vic_sessions).await, 0);

    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    let csrf = ada.csrf().await;
    let r = ada.user_action(&csrf, "vic", "end_sessions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    last_sign_out(&store, 3, "ada", true, 1).await;
    assert_eq!(events_named(&store, "sign_out").await[2].1["user"], "vic");
    assert_eq!(query_count(&store, vic_sessions).await, 0);
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
    assert_eq!(query_count(&store, vic_sessions).await, 0);
    assert_eq!(events_named(&store, "sign_in").await.len(), 5);
    refuse_event(&store, None).await;

    // A sign-out whose event is refused leaves the session working.
    let mut vic = Agent::signed_in(&base, "vic", "vic-secret-1").await;
    vic.allow_500 = true;
    refuse_event(&store, Some("sign_out")).await;
    let r = vic.post_sign_out(true).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(query_count(&store, vic_sessions).await, 1);
    assert_eq!(vic.get("/").await.status, StatusCode::OK);
    let csrf = ada.csrf().await;
    ada.allow_500 = true;
    let r = ada.user_action(&csrf, "vic", "end_sessions").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(query_count(&store, vic_sessions).await, 1);
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
        query_count(
            &store,
            "SELECT count(*) FROM pgtrail.users WHERE name = 'lou' AND locked_until > now()"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_sweeper_starts_when_a_reload_turns_passwords_on() {
    let (env, store) = TestEnv::with_store().await;
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
    assert_eq!(query_count(&store, sessions).await, 1);
    // Left idle, the session expires after 2 s; with no sign-in to sweep it,
    // the sweeper deletes it within a sweep (every 2 s at this idle limit).
    wait_until(
        "the expired session swept",
        Duration::from_secs(15),
        || async { query_count(&store, sessions).await == 0 },
    )
    .await;
    let r = sam.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/sign-in"));
}
