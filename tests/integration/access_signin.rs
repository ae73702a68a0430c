//! Signing in under pressure: idle sessions expire, failures read and take alike whether or not
//! the user exists, a run of failures locks the account (until the lock ends or an admin lifts
//! it), a flood of wrong guesses neither stalls signed-in users nor miscounts (the first failure
//! of an account from an address is an event, the rest one summary), and a full line of
//! sign-ins waiting to be checked turns the rest away with a 429 before checking them.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_session_expiry_lockout_and_uniform_refusals() {
    let (env, store) = TestEnv::with_store().await;
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
    let locked: bool = query_value(
        &store,
        "SELECT locked_until > now() FROM pgtrail.users WHERE name = 'sam'",
        &[],
    )
    .await;
    assert!(locked);
    // The first failure of each account from this address is an event of its own; the rest
    // are counted for one summary.
    let failed = events_named(&store, "sign_in_failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let (actor, app, e) = last_event(&store, "sign_in_failed").await;
    assert_eq!(
        (actor.as_deref(), app.as_str()),
        (Some("sam"), "pgtrail web")
    );
    assert_eq!(e["details"]["locked"], false);
    // After the lock, the right password works again, and the sign-in brings the summary of
    // the failures before it: two more wrong passwords and the right one while locked.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let r = Agent::new(&base).sign_in("sam", "sam-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (actor, _, e) = last_event(&store, "sign_in_failures").await;
    assert_eq!(actor.as_deref(), Some("sam"));
    assert_eq!(
        (&e["details"]["failures"], &e["details"]["locked"]),
        (&3.into(), &2.into())
    );
    // An admin can lift a lock at once: enable does.
    for pw in ["x-wrong-1", "x-wrong-2", "x-wrong-3"] {
        Agent::new(&base).sign_in("sam", pw).await;
    }
    assert_eq!(
        sign_in_status(&base, "sam", "sam-secret-1").await,
        StatusCode::UNAUTHORIZED
    );
    env.trail
        .cli(&["user", "enable", "sam"])
        .await
        .assert_success();
    assert_eq!(
        sign_in_status(&base, "sam", "sam-secret-1").await,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_sign_in_flood_does_not_stall_signed_in_users() {
    let (env, store) = TestEnv::with_store().await;
    let rows = stored_rows(&store).await;
    add_user(&env, "sam", "viewer", None, "sam-secret-1").await;
    add_user(&env, "tom", "viewer", None, "tom-secret-1").await;
    // All from one address: its budget is raised, so every guess is checked.
    let mut web = Web::start_with(
        &env,
        "lockout_after = 5\nlockout_seconds = 600\nsign_in_failures_per_address = 1000\n",
    )
    .await;
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
        assert_eq!(linked_entry_ids(&page.body), rows.iter().copied().collect());
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

    // Every guess is recorded: the first at each account on its own, the rest of tom's counted
    // for a summary; tom is locked once, after exactly five failures.
    let events = own_events(&store).await;
    let new: Vec<&str> = events[before..].iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(
        new.iter().filter(|n| **n == "sign_in_failed").count(),
        1 + AT_NOBODY,
        "{new:?}"
    );
    let failed = events_named(&store, "sign_in_failed").await;
    let at_tom: Vec<&Value> = failed
        .iter()
        .filter(|(a, _)| a.as_deref() == Some("tom"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(at_tom.len(), 1);
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
    let nobody_locked: i64 = query_value(
        &store,
        "SELECT count(*) FROM pgtrail.users WHERE name <> 'tom' AND locked_until IS NOT NULL",
        &[],
    )
    .await;
    assert_eq!(nobody_locked, 0);

    // Sam's requests read the session; last_seen is written at most once a
    // minute (the idle limit is the default 30 minutes), not on each of them.
    let unchanged: bool = query_value(
        &store,
        "SELECT last_seen = created_at FROM pgtrail.sessions WHERE user_name = 'sam'",
        &[],
    )
    .await;
    assert!(unchanged, "a request within the minute rewrote last_seen");
    assert_eq!(sam.get("/").await.status, StatusCode::OK);

    // Stopping writes tom's summary: with the first, every guess (and the last try) is counted;
    // the fifth failure locked, and every later one found the lock.
    let first_locked = u64::from(at_tom[0]["locked"] == true);
    web.stop().await;
    let (actor, _, e) = last_event(&store, "sign_in_failures").await;
    assert_eq!(actor.as_deref(), Some("tom"));
    assert_eq!(e["details"]["failures"], AT_TOM);
    assert_eq!(
        e["details"]["locked"].as_u64().unwrap() + first_locked,
        AT_TOM as u64 + 1 - 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_a_full_sign_in_line_is_a_429_unchecked() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "tom", "viewer", None, "tom-secret-1").await;
    // A line of one per core fills at once.
    let web = Web::start_full(
        &env,
        "lockout_after = 1000\nsign_in_failures_per_address = 1000\n",
        &[("PGTRAIL_WEB_SIGN_IN_WAITING", "1")],
    )
    .await;
    let base = web.base.clone();
    // The forms first, then every guess at once: many more than a machine
    // with many cores checks at once.
    let mut agents = Vec::new();
    for _ in 0..150 {
        let mut a = Agent::new(&base);
        agents.push((a.sign_in_form().await, a));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(agents.len()));
    let mut flood = Vec::new();
    for (i, (csrf, mut a)) in agents.into_iter().enumerate() {
        let start = start.clone();
        flood.push(tokio::spawn(async move {
            start.wait().await;
            let pw = format!("wrong-guess-{i}");
            a.post_sign_in(&csrf, "tom", &pw).await
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
    // Only the checked guesses are recorded and counted: the first on its own, the others in
    // the summary that tom's next sign-in (the line empties again) brings.
    let failed = events_named(&store, "sign_in_failed").await;
    assert_eq!(failed.len(), 1, "{busy} were turned away");
    let attempts: i32 = query_value(
        &store,
        "SELECT failed_attempts FROM pgtrail.users WHERE name = 'tom'",
        &[],
    )
    .await;
    assert_eq!(attempts as usize, refused);
    Agent::signed_in(&base, "tom", "tom-secret-1").await;
    let (_, _, e) = last_event(&store, "sign_in_failures").await;
    assert_eq!(e["details"]["failures"].as_u64(), Some(refused as u64 - 1));
}
