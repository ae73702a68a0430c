//! A fleet: two source clusters, each with a database `app` holding the same bank tables and a
//! slot of the same name, captured by two daemons (`[source] name` shop-eu and shop-us) into one
//! store. Each source's changes are stored exactly once and told apart by their source, under
//! SIGKILL of either daemon (each resumes from its own checkpoint: the two servers' WAL
//! positions are far apart, so resuming from the other's would lose or repeat changes); each
//! source's chain verifies on its own; a second daemon for a source already captured is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_into_one_store_exactly_once_under_sigkill() {
    let (eu, us, store) = fleet().await;
    let mut daemons = [eu.trail.spawn(), us.trail.spawn()];
    let members = [&eu, &us];
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, m) in members.iter().enumerate() {
        bank::load(&m.source().await).await;
        let url = m.cluster.url("app");
        workers.push(tokio::spawn(bank::run_until(
            url,
            3 + i as u64,
            800,
            stop.clone(),
        )));
    }
    // Kill each daemon in turn mid-stream, twice, after it has made progress.
    for round in 0..4 {
        let (m, daemon) = (members[round % 2], &mut daemons[round % 2]);
        let of = m.name;
        let stored = || async {
            query_value::<i64>(
                &store,
                "SELECT count(*) FROM pgtrail.entries WHERE source = (SELECT id FROM pgtrail.sources WHERE name = $1)",
                &[&of],
            )
            .await
        };
        let base = stored().await;
        wait_until(
            &format!("round {round}: {of} to store 600 more entries"),
            Duration::from_secs(120),
            || async { stored().await >= base + 600 },
        )
        .await;
        m.kill_and_restart(daemon).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut txns = Vec::new();
    for w in workers {
        txns.push(w.await.unwrap() as i64);
    }
    for m in members {
        m.sync().await;
    }
    for (m, txns) in members.iter().zip(&txns) {
        bank::assert_source_matches(&m.source().await, &store, Some(m.name), *txns).await;
    }
    // Every entry names its source; a source's entries are its own changes only.
    let unnamed = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE source IS NULL",
    )
    .await;
    assert_eq!(unnamed, 0);
    for (m, txns) in members.iter().zip(&txns) {
        let history = source_counts(&store, Some(m.name), "public", "bank_history").await;
        assert_eq!(history.inserts, *txns, "{}", m.name);
    }
    // Each checkpoint is its own server's: not past it, and the two far apart.
    let mut checkpoints = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let lsn: String = query_value(
            &store,
            "SELECT lsn::text FROM pgtrail.checkpoints WHERE source = $1 AND slot = $2",
            &[&(i as i16 + 1), &SLOT],
        )
        .await;
        let server = current_lsn(&m.source().await).await;
        assert!(
            parse_lsn(&lsn) <= server,
            "{}: checkpoint {lsn} past its server",
            m.name
        );
        checkpoints.push(parse_lsn(&lsn));
    }
    assert!(checkpoints[1] > checkpoints[0], "{checkpoints:?}");
    for d in &mut daemons {
        d.terminate().await;
    }
    // Each source's chain verifies alone, with the events chain; the whole store too.
    for m in members {
        let report = m.verify().await;
        let chains: Vec<&String> = report["chains"].as_object().unwrap().keys().collect();
        assert_eq!(chains, ["pgtrail", m.name], "{report}");
    }
    let out = eu.trail.cli(&["verify", "--json"]).await;
    out.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_for_a_source_already_captured_is_refused() {
    let (eu, us, store) = fleet().await;
    let mut first = eu.trail.spawn();
    let mut other = us.trail.spawn();
    eu.sync().await;
    // The same source again, from a config of its own (its own web port).
    let mut config = eu.trail.config.clone();
    config.web_listen = format!("127.0.0.1:{}", free_port());
    let again = Pgtrail::new(config);
    let mut second = again.spawn();
    wait_until("the second daemon to exit", Duration::from_secs(60), || {
        let exited = second.try_exit().is_some();
        async move { exited }
    })
    .await;
    let status = second.try_exit().unwrap();
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains("another pgtrail daemon is capturing the source \"shop-eu\"")
            && log.contains("one daemon per source"),
        "{log}"
    );
    // It names the holder, so that an operator can tell a daemon from a backend left behind.
    let (pid, since): (i32, String) = query_pairs(
        &store,
        "SELECT l.pid, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"') \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.classid = 7420503 AND l.objid = 1 AND l.granted",
        &[],
    )
    .await
    .into_iter()
    .next()
    .expect("the first daemon holds the lock");
    let holder = format!("held by store backend {pid} of \"pgtrail\"");
    assert!(
        log.contains(&holder) && log.contains(&format!("connected since {since}")),
        "{holder}: {log}"
    );
    assert!(log.contains("SELECT pg_terminate_backend(PID)"), "{log}");
    // The first goes on capturing, and the other source's daemon is unaffected.
    first.assert_running();
    other.assert_running();
    let src = eu.source().await;
    src.batch_execute("INSERT INTO bank_branches VALUES (7, 0, 'after')")
        .await
        .unwrap();
    eu.sync().await;
    us.sync().await;
    assert_source_counts(
        &store,
        Some("shop-eu"),
        "public",
        "bank_branches",
        Counts::new(1, 0, 0, 0),
    )
    .await;
    assert_source_counts(
        &store,
        Some("shop-us"),
        "public",
        "bank_branches",
        Counts::default(),
    )
    .await;
    first.terminate().await;
    other.terminate().await;
    eu.verify().await;
    us.verify().await;
}

/// Reporting is per source: `status` counts its own source's quarantine, and the admin page's
/// health panel gives each source its own last stored change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_health_panel_report_each_source_apart() {
    let (eu, us, store) = fleet().await;
    let mut daemons = [eu.trail.spawn(), us.trail.spawn()];
    for (m, n) in [(&eu, 1), (&us, 2)] {
        // A second apart, so that the two sources' last changes differ.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let insert = format!("INSERT INTO bank_branches VALUES ({n}, 0, 'x')");
        m.source().await.batch_execute(&insert).await.unwrap();
        m.sync().await;
    }
    // One transaction of shop-us quarantined (as capture would leave it).
    store
        .batch_execute(
            "INSERT INTO pgtrail.quarantine (source, first_lsn, seq, lsn, record) VALUES (2, '0/10', 0, '0/10', 'x')",
        )
        .await
        .unwrap();
    for (m, quarantined) in [(&eu, 0), (&us, 1)] {
        let status = m.trail.status_json().await;
        assert_eq!(status["source"], m.name);
        assert_eq!(
            status["quarantine"]["transactions"], quarantined,
            "{status}"
        );
    }

    let password = "a long enough password";
    eu.trail
        .cli_with_stdin(
            &["user", "add", "ada", "--role", "admin"],
            &format!("{password}\n"),
        )
        .await
        .assert_success();
    let base = format!("http://{}", eu.trail.config.web_listen);
    let mut ada = Agent::signed_in(&base, "ada", password).await;
    let panel = ada.get("/admin").await.body;
    let mut shown = Vec::new();
    for m in [&eu, &us] {
        let at = panel
            .find(&format!("on the source database <code>{}</code>", m.name))
            .unwrap_or_else(|| panic!("no panel of {}: {panel}", m.name));
        let fact = &panel[at..][panel[at..].find("data-fact=\"last-commit\">").unwrap()..];
        let fact = &fact[fact.find('>').unwrap() + 1..fact.find("</td>").unwrap()];
        let stored: String = query_value(
            &store,
            "SELECT to_char(max(committed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
             FROM pgtrail.entries WHERE source = (SELECT id FROM pgtrail.sources WHERE name = $1)",
            &[&m.name],
        )
        .await;
        assert_eq!(fact, format!("committed {stored} UTC"), "{}", m.name);
        shown.push(stored);
    }
    assert_ne!(shown[0], shown[1]);
    assert!(
        panel.contains("<strong>1</strong> source transaction ("),
        "{panel}"
    );
    for d in &mut daemons {
        d.terminate().await;
    }
}
