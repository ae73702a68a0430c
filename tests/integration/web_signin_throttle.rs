//! Failed sign-ins are throttled per client address as well as per account: twenty failures
//! from one address shut that address out (429, unchecked) while the account they locked still
//! signs in from an address that had no part in it; and the failures are summarized, the first
//! of each account and address an event of its own and the rest one event with their count,
//! written when the window ends, at the next sign-in, or when the server stops.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

/// A client connecting from 127.0.0.`last` (Linux routes all of 127/8 to the loopback).
fn from(base: &str, last: u8) -> Agent {
    Agent::from(base, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))))
}

/// The details of the session events named `name` from `addr`, oldest first.
async fn events_from(store: &tokio_postgres::Client, name: &str, addr: &str) -> Vec<Value> {
    own_events(store)
        .await
        .into_iter()
        .filter(|(n, _, _, e)| n == name && e["client_addr"] == addr)
        .map(|(_, _, _, e)| e["details"].clone())
        .collect()
}

/// `n` wrong guesses at `name` from 127.0.0.`last`, all at once; their statuses.
async fn guesses(base: &str, last: u8, name: &str, n: usize) -> Vec<StatusCode> {
    let mut agents = Vec::new();
    for _ in 0..n {
        let mut a = from(base, last);
        agents.push((a.sign_in_form().await, a));
    }
    let mut sent = Vec::new();
    for (i, (csrf, mut a)) in agents.into_iter().enumerate() {
        let name = name.to_owned();
        sent.push(tokio::spawn(async move {
            a.post_sign_in(&csrf, &name, &format!("wrong-guess-{i}"))
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for s in sent {
        statuses.push(s.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sign_in_failures_are_throttled_per_address_and_summarized() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    // The defaults: 20 failures per address in 15 minutes, a lock after 5 failures.
    let mut web = Web::start_with(&env, "").await;
    let base = web.base.clone();

    // Twenty wrong guesses from 127.0.0.2: all refused, and they lock ada.
    let statuses = guesses(&base, 2, "ada", 20).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let locked: bool = query_value(
        &store,
        "SELECT locked_until > now() FROM pgtrail.users WHERE name = 'ada'",
        &[],
    )
    .await;
    assert!(locked);
    // The twenty-first from there is refused unchecked, even with the right password.
    let r = from(&base, 2).sign_in("ada", "ada-secret-1").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(
        r.body
            .contains("Too many failed sign-ins came from your address"),
        "{}",
        r.body
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((800..=900).contains(&retry), "{retry}");

    // From 127.0.0.3, which had no part in the lock, ada signs in.
    let mut ada = from(&base, 3);
    let r = ada.sign_in("ada", "ada-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(ada.get("/").await.status, StatusCode::OK);
    let (_, _, signed_in) = last_event(&store, "sign_in").await;
    assert_eq!(signed_in["details"]["while_locked"], true);
    assert_eq!(signed_in["client_addr"], "127.0.0.3");
    // 127.0.0.4 guesses wrong once, checked although ada is locked; then the lock holds for it.
    let mut other = from(&base, 4);
    assert_eq!(
        other.sign_in("ada", "wrong-one").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        other.sign_in("ada", "ada-secret-1").await.status,
        StatusCode::UNAUTHORIZED
    );

    // Before the server stops, each pair has one failure on record, the rest are being counted.
    let failed = events_named(&store, "sign_in_failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let throttled = events_from(&store, "address_throttled", "127.0.0.2").await;
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0]["failures"], 20);
    let locks = events_named(&store, "locked").await;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].1["failures"], 5);

    // Stopping writes the summaries: every attempt is counted, in far fewer rows.
    web.stop().await;
    let first = events_from(&store, "sign_in_failed", "127.0.0.2").await;
    let rest = events_from(&store, "sign_in_failures", "127.0.0.2").await;
    assert_eq!((first.len(), rest.len()), (1, 1), "{rest:?}");
    assert_eq!(rest[0]["failures"], 19);
    // Four failures came before the lock; the fifth locked ada, and the rest found her locked.
    let locked_count = rest[0]["locked"].as_u64().unwrap() + u64::from(first[0]["locked"] == true);
    assert_eq!(locked_count, 16, "{first:?} {rest:?}");
    let refused = events_from(&store, "sign_ins_refused", "127.0.0.2").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["refused"], 1);
    let rows = own_events(&store)
        .await
        .iter()
        .filter(|(_, _, _, e)| e["client_addr"] == "127.0.0.2")
        .count();
    assert_eq!(
        rows, 5,
        "failed, locked, address_throttled, sign_in_failures, sign_ins_refused for 21 attempts"
    );
    let rest = events_from(&store, "sign_in_failures", "127.0.0.4").await;
    assert_eq!(rest.len(), 1);
    assert_eq!(
        (&rest[0]["failures"], &rest[0]["locked"]),
        (&1.into(), &1.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_failed_sign_ins_are_summarized_when_their_window_ends() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    let web = Web::start_with(
        &env,
        "sign_in_window_seconds = 8\nsign_in_failures_per_address = 3\n",
    )
    .await;
    let base = web.base.clone();
    let statuses = guesses(&base, 5, "nobody", 3).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        from(&base, 5).sign_in("ada", "ada-secret-1").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        events_from(&store, "sign_in_failed", "127.0.0.5")
            .await
            .len(),
        1
    );
    // Without a sign-in or a stop, the window's end writes the summary.
    wait_until(
        "the summary of the window",
        Duration::from_secs(30),
        || async {
            !events_from(&store, "sign_in_failures", "127.0.0.5")
                .await
                .is_empty()
        },
    )
    .await;
    let rest = events_from(&store, "sign_in_failures", "127.0.0.5").await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["failures"], 2);
    let (actor, _, e) = last_event(&store, "sign_in_failures").await;
    assert_eq!(actor.as_deref(), Some("nobody"));
    assert!(
        e["remarks"]
            .as_str()
            .unwrap()
            .contains("2 more failed sign-ins as nobody from 127.0.0.5"),
        "{e}"
    );
    wait_until("the refusals' count", Duration::from_secs(30), || async {
        !events_from(&store, "sign_ins_refused", "127.0.0.5")
            .await
            .is_empty()
    })
    .await;
    // After the window, the address may try again.
    let r = from(&base, 5).sign_in("ada", "ada-secret-1").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}
