//! How much one client may hold: live streams are counted per user and in all (429 with
//! Retry-After past either, a closed one frees its place), a live stream reads only ids it has
//! not read (one opened with `after=0` starts at the newest entry, and an entry whose transaction
//! commits after a later one is still sent), and a download whose client stops reading is ended
//! after `web.export_stall_seconds`, its place free again while the client is still connected.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::*;

/// A refused live stream: 429, `Retry-After: 30`, and a body that says which limit and how to
/// get a place.
async fn refused_live(agent: &Agent, limit: &str, held: &str) {
    let r = agent.open("/live").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "30");
    let body = unescape(&r.text().await.unwrap());
    assert!(body.contains(limit) && body.contains(held), "{body}");
}

/// Opens a live stream for `agent`, retrying until a place is free (a closed stream is noticed
/// when the server next writes to it).
async fn live_when_free(agent: &Agent) -> reqwest::Response {
    let started = Instant::now();
    loop {
        let r = agent.open("/live").await;
        if r.status() == StatusCode::OK {
            return r;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "a closed live stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_live_streams_are_limited_and_read_only_new_ids() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ann", "viewer", None, "ann-secret-1").await;
    add_user(&env, "bob", "viewer", None, "bob-secret-1").await;
    let row = |id: i64| Synth::new("public.t", "INSERT").pk(&format!("{{\"id\":{id}}}"));
    let old = store_entries(&store, &[row(1)]).await[0];
    let web = Web::start_with(&env, "live_streams_per_user = 2\nlive_streams = 3\n").await;
    let ann = Agent::signed_in(&web.base, "ann", "ann-secret-1").await;
    let bob = Agent::signed_in(&web.base, "bob", "bob-secret-1").await;

    // Two streams for ann, her share; one for bob, and the server's three are taken.
    let mut first = ann.open("/live?after=0").await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = ann.open("/live?table=public.t").await;
    assert_eq!(second.status(), StatusCode::OK);
    refused_live(
        &ann,
        "web.live_streams_per_user",
        "You have 2 live streams open",
    )
    .await;
    let bob_live = bob.open("/live").await;
    assert_eq!(bob_live.status(), StatusCode::OK);
    refused_live(&bob, "web.live_streams)", "serves 3 live streams").await;

    // after=0 starts at the newest entry: the one stored before is not sent, the next one is.
    let new = store_entries(&store, &[row(2)]).await[0];
    let seen = read_live_until(&mut first, new, Duration::from_secs(20)).await;
    assert!(
        live_event(&seen, old).is_none(),
        "after=0 resent {old}:\n{seen}"
    );

    // An id taken before a later one commits, committed after it, is still sent.
    let slow = env.store().await;
    slow.batch_execute("BEGIN").await.unwrap();
    let late = store_uncounted(&slow, &[row(3)]).await[0];
    let later = store_entries(&store, &[row(4)]).await[0];
    assert!(late < later);
    let seen = read_live_until(&mut first, later, Duration::from_secs(20)).await;
    assert!(live_event(&seen, late).is_none(), "{seen}");
    slow.batch_execute("COMMIT").await.unwrap();
    count_in_chain(&store, 1).await;
    let seen = read_live_until(&mut first, late, Duration::from_secs(20)).await;
    assert!(
        live_event(&seen, later).is_none(),
        "{later} was sent twice:\n{seen}"
    );

    // Closing one of ann's frees a place: bob gets it, and the server is full again.
    drop(second);
    let _bobs_second = live_when_free(&bob).await;
    refused_live(&ann, "web.live_streams)", "serves 3 live streams").await;
}

/// Four downloads of `web`, each read to its first chunk and then left, and when each was asked
/// for: a download's stall starts after its request, so none can end before then + the limit.
async fn stall_four(web: &Web) -> (Vec<reqwest::Response>, Vec<Instant>) {
    let mut stalled = Vec::new();
    let mut asked = Vec::new();
    for _ in 0..4 {
        asked.push(Instant::now());
        let mut resp = reqwest::get(web.url("/export?format=jsonl")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.chunk().await.unwrap().is_some(), "the download starts");
        stalled.push(resp);
    }
    (stalled, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_a_download_nobody_reads_is_ended_and_its_place_freed() {
    let (env, store) = TestEnv::with_store().await;
    // About 40 MB of JSON Lines: far more than the channel and the sockets hold.
    const N: i64 = 80_000;
    bulk_entries(&store, "bulk", N).await;
    let config = |stall: u64| format!("auth = \"none\"\nexport_stall_seconds = {stall}\n");

    // Four stalled downloads hold every place: a fifth is refused. Shown under a stall limit
    // that taking four cannot reach: at load average 10 each took about 2.5 s to start, and
    // under the 3 s limit below one had ended, and freed its place, before the fifth was asked.
    let web = Web::start_full(&env, &config(600), &[]).await;
    let (held, _) = stall_four(&web).await;
    let (status, _, _, _) = download(&web.url("/export?format=csv")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Their clients gone, they end (recorded as abandoned) whatever the limit.
    drop(held);
    let gone = || async { export_events(&store).await.len() };
    wait_until("closed downloads end", Duration::from_secs(40), || async {
        gone().await == 4
    })
    .await;
    web.assert_quiet();
    drop(web);

    // Under a 3 s limit, four downloads nobody reads end after it, recorded as abandoned.
    let web = Web::start_full(&env, &config(3), &[]).await;
    let (stalled, asked) = stall_four(&web).await;
    let stall_ends = || async { export_events(&store).await.split_off(4) };
    wait_until("a stalled export ends", Duration::from_secs(40), || async {
        !stall_ends().await.is_empty()
    })
    .await;
    assert!(asked[0].elapsed() >= Duration::from_secs(3), "ended early");
    wait_until(
        "the stalled exports end",
        Duration::from_secs(40),
        || async { stall_ends().await.len() == 4 },
    )
    .await;
    assert!(asked[3].elapsed() >= Duration::from_secs(3), "ended early");
    for ev in stall_ends().await {
        let d = ev.json("details");
        assert_eq!(
            (&d["completed"], &d["abandoned"]),
            (&false.into(), &true.into()),
            "{d}"
        );
        assert!(d["entries"].as_u64().unwrap() < N as u64, "{d}");
        let error = d["error"].as_str().unwrap();
        assert!(
            error.contains("took nothing for 3 s (web.export_stall_seconds)"),
            "{d}"
        );
    }

    // Their clients are still connected, yet the places are free: a new download runs whole.
    let (status, _, _, body) = download(&web.url("/export?format=jsonl&table=public.bulk")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), N as usize);
    wait_until(
        "the whole download is recorded",
        Duration::from_secs(20),
        || async { export_events(&store).await.len() == 9 },
    )
    .await;
    assert_eq!(
        export_events(&store).await[8].json("details")["completed"],
        true
    );

    // A stalled client that reads on gets what was on its way, then a failed download, never a
    // short file that looks whole.
    for mut resp in stalled {
        let mut read = 0usize;
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(30), resp.chunk()).await {
                Ok(Ok(Some(chunk))) => read += chunk.len(),
                Ok(Ok(None)) => break "a clean end",
                Ok(Err(_)) => break "an error",
                Err(_) => break "silence",
            }
        };
        assert_eq!(ended, "an error", "after {read} bytes");
        assert!(read < 40_000_000, "{read}");
    }
    web.assert_quiet();
}
