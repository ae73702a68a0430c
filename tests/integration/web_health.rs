//! Capture's health in the web view, which reads only the store: the daemon's monitor writes its
//! readings into `pgtrail.capture_state` at every poll (checked against the source's slot and the
//! store's checkpoint); past a tiny `wal_warn`, and with a transaction quarantined, an admin gets
//! the banners and the admin page's panel says so, a viewer gets neither; a daemon stopped
//! cleanly is "stopped" at once, a killed one "not running since" its last report, for every
//! reader; and a slot really lost (a small
//! `max_slot_wal_keep_size`) shows as a gap row in the log, where its changes would have been,
//! to admins and viewers alike, on the right page and only within a time filter that meets it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::gap::{exit_of, invalidate_slot};
use crate::harness::*;

const PASSWORD: &str = "a long enough password";
/// The WAL guard's threshold, far less than the WAL written past an open transaction; polls
/// every second.
const FAST_POLLS: &str = "wal_warn = \"64kB\"\n[metrics]\nlisten = \"\"\npoll_interval = \"1s\"\n";

/// The slot's row of `pgtrail.capture_state`, as stored.
#[derive(Debug)]
struct StateRow {
    source: String,
    stored_lsn: Option<u64>,
    server_lsn: Option<u64>,
    slot_found: Option<bool>,
    slot_active: Option<bool>,
    confirmed_lsn: Option<u64>,
    retained_bytes: Option<i64>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    lag_bytes: Option<i64>,
    lag_seconds: Option<f64>,
    wal_warn: Option<i64>,
    over_wal_warn: bool,
    poll_interval: f64,
    age: f64,
    polled: DateTime<Utc>,
    /// `polled_at` as the web view writes times: `2024-05-01 10:00:03`.
    polled_at: String,
}

async fn state_row(store: &Client) -> Option<StateRow> {
    let row = store
        .query_opt(
            "SELECT source, stored_lsn::text, server_lsn::text, slot_found, slot_active, confirmed_lsn::text, \
                    retained_bytes, wal_status, safe_wal_size, lag_bytes, lag_seconds, wal_warn, over_wal_warn, \
                    extract(epoch FROM poll_interval)::float8, extract(epoch FROM now() - polled_at)::float8, \
                    to_char(polled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), polled_at \
             FROM pgtrail.capture_state WHERE slot = $1",
            &[&SLOT],
        )
        .await
        .unwrap()?;
    let lsn = |i: usize| row.get::<_, Option<String>>(i).map(|t| parse_lsn(&t));
    Some(StateRow {
        source: row.get(0),
        stored_lsn: lsn(1),
        server_lsn: lsn(2),
        slot_found: row.get(3),
        slot_active: row.get(4),
        confirmed_lsn: lsn(5),
        retained_bytes: row.get(6),
        wal_status: row.get(7),
        safe_wal_size: row.get(8),
        lag_bytes: row.get(9),
        lag_seconds: row.get(10),
        wal_warn: row.get(11),
        over_wal_warn: row.get(12),
        poll_interval: row.get(13),
        age: row.get(14),
        polled_at: row.get(15),
        polled: row.get(16),
    })
}

/// Polls the row until `ok` holds; the row then.
async fn state_until(store: &Client, what: &str, ok: impl Fn(&StateRow) -> bool) -> StateRow {
    wait_until(what, Duration::from_secs(60), || async {
        state_row(store).await.is_some_and(|r| ok(&r))
    })
    .await;
    state_row(store).await.unwrap()
}

/// A world capturing `t` (and `junk.filler` outside the capture set, to write WAL into), a
/// daemon, a `pgtrail web` beside it, and an admin and a viewer signed in to it.
struct World {
    env: TestEnv,
    src: Client,
    store: Client,
    daemon: Daemon,
    _web: Web,
    admin: Agent,
    viewer: Agent,
}

impl World {
    async fn start(opts: ClusterOptions) -> World {
        let env = TestEnv::start_with(opts, |c| c.extra_toml = FAST_POLLS.to_owned()).await;
        let src = env
            .source_with("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA junk; CREATE TABLE junk.filler (v text)")
            .await;
        env.setup().await;
        let daemon = env.spawn();
        add_user(&env, "ada", "admin", None, PASSWORD).await;
        add_user(&env, "vic", "viewer", None, PASSWORD).await;
        let web = Web::start_with(&env, "").await;
        World {
            admin: Agent::signed_in(&web.base, "ada", PASSWORD).await,
            viewer: Agent::signed_in(&web.base, "vic", PASSWORD).await,
            store: env.store().await,
            _web: web,
            env,
            src,
            daemon,
        }
    }

    /// The slot's restart LSN and confirmed position now.
    async fn slot_now(&self) -> (u64, u64) {
        let s = slot_state(&self.env.cluster.client("postgres").await, SLOT)
            .await
            .unwrap();
        (s.restart.unwrap(), s.confirmed_flush.unwrap())
    }

    /// The first row written after now that satisfies `ok`, with the slot read before and after
    /// it: the figures the poll saw lie between the two readings.
    async fn polled(
        &self,
        what: &str,
        ok: impl Fn(&StateRow) -> bool,
    ) -> (StateRow, (u64, u64), (u64, u64)) {
        let before = self.slot_now().await;
        let mark: DateTime<Utc> = self
            .store
            .query_one("SELECT clock_timestamp()", &[])
            .await
            .unwrap()
            .get(0);
        let row = state_until(&self.store, what, |r| r.polled > mark && ok(r)).await;
        (row, before, self.slot_now().await)
    }
}

/// The body of `GET path`, which must answer 200, with HTML entities decoded.
async fn page(agent: &mut Agent, path: &str) -> String {
    let reply = agent.get(path).await;
    assert_eq!(
        reply.status,
        reqwest::StatusCode::OK,
        "GET {path}: {}",
        reply.body
    );
    unescape(&reply.body)
}

/// The text of the element whose opening tag contains `marker`, up to its closing `</td>`.
fn fact(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let start = at + html[at..].find('>').unwrap() + 1;
    html[start..start + html[start..].find("</td>").unwrap()].to_owned()
}

/// The row's figures are the slot's and the checkpoint's, as read from the source and the store
/// around the poll.
async fn assert_real_figures(w: &World) {
    let checkpoint = checkpoint_lsn(&w.store, SLOT).await;
    let (row, (restart1, confirmed1), (restart2, confirmed2)) = w
        .polled("a state row at the checkpoint", |r| {
            r.stored_lsn == checkpoint
        })
        .await;
    let server = row.server_lsn.unwrap();
    assert_eq!(row.source, "app", "{row:?}");
    assert_eq!(
        (row.slot_found, row.slot_active),
        (Some(true), Some(true)),
        "{row:?}"
    );
    assert_eq!(row.wal_status.as_deref(), Some("reserved"), "{row:?}");
    assert_eq!(
        row.safe_wal_size, None,
        "max_slot_wal_keep_size is unlimited: {row:?}"
    );
    assert_eq!(
        (row.wal_warn, row.poll_interval),
        (Some(64 * 1024), 1.0),
        "{row:?}"
    );
    assert!(row.age < 5.0, "{row:?}");
    assert!(server <= current_lsn(&w.src).await, "{row:?}");
    let confirmed = row.confirmed_lsn.unwrap();
    assert!(
        (confirmed1..=confirmed2).contains(&confirmed),
        "{row:?} {confirmed1} {confirmed2}"
    );
    let retained = row.retained_bytes.unwrap() as u64;
    let bounds = server.saturating_sub(restart2)..=server.saturating_sub(restart1);
    assert!(bounds.contains(&retained), "{row:?} {bounds:?}");
    let processed = confirmed.max(row.stored_lsn.unwrap());
    assert_eq!(
        row.lag_bytes,
        Some(server.saturating_sub(processed) as i64),
        "{row:?}"
    );
    assert!(row.lag_seconds.is_some_and(|s| s >= 0.0), "{row:?}");
}

/// Quarantines one transaction: the store refuses its value `poison`.
async fn quarantine_one(env: &TestEnv, src: &Client, store: &Client) {
    let refuse = "ALTER TABLE pgtrail.entry_rows ADD CONSTRAINT refuse_poison \
                  CHECK (after->>'v' IS DISTINCT FROM 'poison') NOT VALID";
    store.batch_execute(refuse).await.unwrap();
    src.batch_execute("INSERT INTO t VALUES (2, 'poison')")
        .await
        .unwrap();
    env.sync().await;
    let n: i64 = store
        .query_one(
            "SELECT count(DISTINCT first_lsn) FROM pgtrail.quarantine",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Waits until `agent`'s log page says capture is not running.
async fn wait_not_running(agent: &mut Agent) -> String {
    let started = Instant::now();
    loop {
        let log = page(agent, "/").await;
        if log.contains("is not running since") {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "capture still running: {log}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checkpoints (the slot's restart_lsn may then move past the WAL written since setup) until the
/// daemon reports the slot under `wal_warn`.
async fn settle(w: &World) {
    let admin = w.env.cluster.client("postgres").await;
    wait_until(
        "the slot under wal_warn",
        Duration::from_secs(60),
        || async {
            admin.batch_execute("CHECKPOINT").await.unwrap();
            w.src
                .batch_execute("INSERT INTO junk.filler VALUES ('x')")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            state_row(&w.store).await.is_some_and(|r| !r.over_wal_warn)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_health_shows_admins_wal_and_quarantine_and_everyone_a_stopped_capture() {
    let mut w = World::start(ClusterOptions::default()).await;
    w.src
        .batch_execute("INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    w.env.sync().await;
    settle(&w).await;
    assert_real_figures(&w).await;
    let log = page(&mut w.admin, "/").await;
    assert!(!log.contains("note health"), "nothing to report yet: {log}");
    let panel = page(&mut w.admin, "/admin").await;
    assert!(
        fact(&panel, "data-fact=\"running\"").starts_with("running"),
        "{panel}"
    );
    assert!(
        panel.contains("No source transaction is quarantined"),
        "{panel}"
    );
    assert!(panel.contains("None recorded"), "no gap: {panel}");

    quarantine_one(&w.env, &w.src, &w.store).await;
    // A transaction left open holds the slot's WAL back; 2 MB are written past it.
    let holder = w.env.source().await;
    holder
        .batch_execute("BEGIN; INSERT INTO t VALUES (1000, 'held')")
        .await
        .unwrap();
    w.src
        .batch_execute(
            "INSERT INTO junk.filler SELECT repeat('w', 1000) FROM generate_series(1, 2000)",
        )
        .await
        .unwrap();
    let (row, (restart1, _), (restart2, _)) = w.polled("over_wal_warn", |r| r.over_wal_warn).await;
    let server = row.server_lsn.unwrap();
    let retained = row.retained_bytes.unwrap() as u64;
    assert!(
        (server - restart2..=server - restart1).contains(&retained),
        "{row:?}"
    );
    assert!(retained > 64 * 1024, "{row:?}");

    let log = page(&mut w.admin, "/").await;
    for banner in [
        "more than capture.wal_warn (64.0 kB)",
        "Capture quarantined 1 source transaction it could not store",
        "href=\"/admin#capture\"",
    ] {
        assert!(log.contains(banner), "no {banner:?} for the admin: {log}");
    }
    let seen = page(&mut w.viewer, "/").await;
    assert!(
        !seen.contains("note health"),
        "the WAL and the quarantine are for admins: {seen}"
    );
    let panel = page(&mut w.admin, "/admin").await;
    let retained = fact(&panel, "data-fact=\"retained\"");
    assert!(
        retained.contains("capture.wal_warn 64.0 kB, over it"),
        "{retained}"
    );
    assert_eq!(fact(&panel, "data-fact=\"wal-status\""), "reserved");
    assert_eq!(fact(&panel, "data-fact=\"safe-wal-size\""), "unlimited");
    assert!(fact(&panel, "data-fact=\"lag\"").contains(" s)"), "{panel}");
    assert!(
        fact(&panel, "data-fact=\"last-commit\"").starts_with("committed 20"),
        "{panel}"
    );
    let quarantined = &panel[panel.find("id=\"quarantine-count\"").unwrap()..];
    assert!(
        quarantined.contains("<strong>1</strong> source transaction ("),
        "{quarantined}"
    );
    holder.batch_execute("COMMIT").await.unwrap();

    // Stopped cleanly (SIGTERM), the daemon says so at once: "stopped", for every reader.
    w.daemon.terminate().await;
    let last = state_row(&w.store).await.unwrap();
    let stopped_at: String = query_value(
        &w.store,
        "SELECT to_char(stopped_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM pgtrail.capture_state",
        &[],
    )
    .await;
    let stopped = format!("Capture of {} was stopped at {stopped_at} UTC", last.source);
    for agent in [&mut w.viewer, &mut w.admin] {
        let log = page(agent, "/").await;
        assert!(log.contains(&stopped), "{stopped:?} in {log}");
        assert!(!log.contains("is not running since"), "{log}");
    }
    let panel = page(&mut w.admin, "/admin").await;
    assert!(
        fact(&panel, "data-fact=\"running\"").starts_with(&format!("stopped at {stopped_at} UTC")),
        "{panel}"
    );
    // Killed, the daemon writes no more: after three polls and the grace, capture is "not running".
    w.daemon = w.env.spawn();
    let restarted = state_until(&w.store, "a new run's poll", |r| r.polled > last.polled).await;
    let cleared: Option<DateTime<Utc>> = query_value(
        &w.store,
        "SELECT stopped_at FROM pgtrail.capture_state",
        &[],
    )
    .await;
    assert_eq!(cleared, None, "a new run clears the stop");
    assert!(restarted.slot_found.is_some());
    w.daemon.kill_9().await;
    let last = state_row(&w.store).await.unwrap();
    let since = format!(
        "Capture of {} is not running since {} UTC",
        last.source, last.polled_at
    );
    for agent in [&mut w.viewer, &mut w.admin] {
        let log = wait_not_running(agent).await;
        assert!(log.contains(&since), "{since:?} in {log}");
    }
    let panel = page(&mut w.admin, "/admin").await;
    assert!(
        fact(&panel, "data-fact=\"running\"").starts_with("not running"),
        "{panel}"
    );
    assert_eq!(state_row(&w.store).await.unwrap().polled_at, last.polled_at);
}

/// The log page's rows in order: entry ids as `e<id>`, gap rows as `gap`.
fn lines(html: &str) -> Vec<String> {
    html.match_indices("<tr ")
        .filter_map(|(i, _)| {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            if tag.contains("class=\"gap\"") {
                Some("gap".to_owned())
            } else {
                tag.find("id=\"e").map(|at| {
                    let id = &tag[at + 5..];
                    format!("e{}", &id[..id.find('"').unwrap()])
                })
            }
        })
        .collect()
}

/// The entry ids of `t`'s INSERTs, by the row's id.
async fn ids_by_key(store: &Client) -> std::collections::BTreeMap<i64, i64> {
    table_entries(store, "public", "t")
        .await
        .iter()
        .map(|e| (e.key_i64("id"), e.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_health_shows_a_lost_slot_as_a_gap_where_its_changes_would_have_been() {
    let opts = ClusterOptions::default().setting("max_slot_wal_keep_size", "1MB");
    let World {
        env,
        src,
        store,
        mut daemon,
        _web,
        mut admin,
        mut viewer,
    } = World::start(opts).await;
    src.batch_execute("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 5) g")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    env.wait_slot_inactive().await;
    // Changes made while the slot is lost are never captured; run stops on the gap.
    src.batch_execute("INSERT INTO t SELECT g, 'lost' FROM generate_series(11, 15) g")
        .await
        .unwrap();
    invalidate_slot(&src, &env.cluster.client("postgres").await).await;
    let mut stopped = env.spawn();
    assert_eq!(
        exit_of(&mut stopped, Duration::from_secs(30)).await.code(),
        Some(10)
    );
    let lost = events_named(&store, "slot_lost").await;
    let from = lost[0].1["last_stored_commit"].as_str().unwrap()[..19].replace('T', " ");

    // Not yet recreated: the gap is open, at the top of the log, for the viewer too.
    let open = page(&mut viewer, "/?table=public.t").await;
    let before = ids_by_key(&store).await;
    let newest = format!("e{}", before[&5]);
    assert_eq!(
        lines(&open)[..2],
        ["gap".to_owned(), newest.clone()],
        "{open}"
    );
    let text = format!("changes after {from} UTC were not captured (the replication slot was lost: {SLOT}, found at");
    assert!(open.contains(&text), "{text:?} in {open}");
    assert!(open.contains("capture has not resumed since"), "{open}");

    env.trail
        .cli(&["setup", "--recreate-slot"])
        .await
        .assert_success();
    let recreated = events_named(&store, "slot_recreated").await;
    let to = recreated[0].1["to_time"].as_str().unwrap()[..19].replace('T', " ");
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT g, 'after' FROM generate_series(21, 23) g")
        .await
        .unwrap();
    env.sync().await;
    daemon.assert_running();
    let ids = ids_by_key(&store).await;
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 21, 22, 23]
    );
    let e = |key: i64| format!("e{}", ids[&key]);
    let text = format!("changes between {from} UTC and {to} UTC were not captured (the replication slot was lost: {SLOT}).");

    // Newest first, the gap lies between 21 and 5, for every reader.
    let shown = page(&mut viewer, "/?table=public.t").await;
    let expected = [
        e(23),
        e(22),
        e(21),
        "gap".into(),
        e(5),
        e(4),
        e(3),
        e(2),
        e(1),
    ];
    assert_eq!(lines(&shown), expected, "{shown}");
    assert!(shown.contains(&text), "{text:?} in {shown}");
    let lost_id = gap_event_id(&store, "slot_lost").await;
    let recreated_id = gap_event_id(&store, "slot_recreated").await;
    let recorded = format!("Recorded as pgtrail's events #{lost_id} and #{recreated_id}.");
    assert!(shown.contains(&recorded), "{recorded:?} in {shown}");
    for id in [lost_id, recreated_id] {
        let link = format!("href=\"/entries/{id}\"");
        assert!(
            !shown.contains(&link),
            "the viewer cannot open pgtrail's events: {shown}"
        );
    }
    // The admin reads the events themselves (the log shows them when asked): the gap lies just
    // below the loss, and links both.
    let all = page(&mut admin, "/?events=shown").await;
    let gap_at = lines(&all).iter().position(|l| l == "gap").unwrap();
    assert_eq!(lines(&all)[gap_at - 1], format!("e{lost_id}"), "{all}");
    for id in [lost_id, recreated_id] {
        assert!(
            all.contains(&format!("<a href=\"/entries/{id}\">event #{id}</a>")),
            "{all}"
        );
    }
    // Oldest first it sits in the same place; in pages of three, on the page that holds it.
    let asc = page(&mut viewer, "/?table=public.t&sort=time&dir=asc").await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(lines(&asc), reversed, "{asc}");
    let first = page(&mut viewer, "/?table=public.t&limit=3").await;
    assert_eq!(lines(&first), [e(23), e(22), e(21)], "{first}");
    let next = link(&first, "next").unwrap();
    let second = page(&mut viewer, &next).await;
    assert_eq!(
        lines(&second),
        ["gap".to_owned(), e(5), e(4), e(3)],
        "{second}"
    );
    // A time filter that misses the gap shows none; one that meets it does.
    let after = enc(&(chrono::Utc::now() + chrono::Duration::seconds(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string());
    assert!(
        !lines(&page(&mut viewer, &format!("/?from={after}")).await).contains(&"gap".to_owned())
    );
    let sorted = page(&mut viewer, "/?table=public.t&sort=actor&last=1h").await;
    assert!(
        sorted.contains("class=\"note gap\"") && sorted.contains(&text),
        "{sorted}"
    );
    let panel = page(&mut admin, "/admin").await;
    assert!(
        panel[panel.find("id=\"gaps\"").unwrap()..].contains(&text),
        "{panel}"
    );
}

/// The id of the newest `gap` event named `name`.
async fn gap_event_id(store: &Client, name: &str) -> i64 {
    store
        .query_one(
            "SELECT max(id) FROM pgtrail.entries WHERE table_name = 'gap' AND details->>'event' = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}
