//! pgtrail's own events as the web view shows them: real sign-ins, failed sign-ins, admin changes,
//! an export and an audit gap each read in the log's Changes column as what happened ("demo
//! signed in", "demo exported 3 entries as CSV"), never as an update, and open on an event page
//! that says who, when, from where and what, with the details as labelled values and, for a
//! changed user, the record before and after. A source's move to another server reads as who moved
//! it where, and what was not captured.

use reqwest::StatusCode;
use tokio_postgres::Client;

use crate::harness::*;

/// The text of the Changes cell of the row of entry `id` on a log page.
fn changes_of(html: &str, id: i64) -> String {
    let row = &html[html
        .find(&format!("<tr id=\"e{id}\""))
        .unwrap_or_else(|| panic!("no row e{id} in:\n{html}"))..];
    let cell = &row[row.find("data-label=\"Changes\">").unwrap() + 21..];
    unescape(cell[..cell.find("</td>").unwrap()].trim())
}

/// The id of the newest event named `name`.
async fn event_id(store: &Client, name: &str) -> i64 {
    store
        .query_one(
            "SELECT max(id) FROM pgtrail.entries WHERE action = 'EVENT' AND details->>'event' = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get::<_, Option<i64>>(0)
        .unwrap_or_else(|| panic!("no {name} event in the store"))
}

/// The labelled values of an event page's details list, as (label, value).
fn details_of(html: &str) -> Vec<(String, String)> {
    let list = &html[html.find("id=\"event-details\"").expect("a details list")..];
    let list = &list[..list.find("</dl>").unwrap()];
    list.split("<dt>")
        .skip(1)
        .map(|item| {
            let label = &item[..item.find("</dt>").unwrap()];
            let value = &item[item.find("<dd>").unwrap() + 4..item.find("</dd>").unwrap()];
            (unescape(label), unescape(value))
        })
        .collect()
}

/// Asserts that an event page's details list holds each (label, value).
fn assert_details(html: &str, wanted: &[(&str, &str)]) {
    let details = details_of(html);
    for (label, value) in wanted {
        assert!(
            details.contains(&(label.to_string(), value.to_string())),
            "{label}: {value} in {details:?}"
        );
    }
}

/// What happened, as it really happens: a user added at the shell, a sign-in, an export, a user
/// added and promoted by the admin, a failed sign-in and a slot recreated after a gap.
async fn make_events(env: &TestEnv, store: &Client, web: &Web) -> Agent {
    add_user(env, "demo", "admin", None, "demo-pass-1").await;
    store_entries(
        store,
        &(1..=3)
            .map(|i| {
                Synth::new("public.t", "INSERT")
                    .pk(&format!(r#"{{"id":{i}}}"#))
                    .after(&format!(r#"{{"id":{i}}}"#))
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let mut demo = Agent::signed_in(&web.base, "demo", "demo-pass-1").await;
    let r = demo.get("/export?format=csv&table=public.t").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body.lines().count(), 4, "a header and three entries");
    let csrf = demo.csrf().await;
    let r = demo
        .add_user_form(&csrf, "vic", "viewer", None, "vic-pass-12")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = demo.update_user(&csrf, "vic", "auditor", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        sign_in_status(&web.base, "vic", "wrong-password").await,
        StatusCode::UNAUTHORIZED
    );
    let slot = pgtrail::pg::SlotName::parse("pgtrail_slot").unwrap();
    let source = pgtrail::store::sources::SourceName::parse("app").unwrap();
    let gap = pgtrail::pipeline::gap::recreated_event(
        (&source, &slot),
        &pgtrail::pipeline::gap::Found::Missing,
        None,
        "0/16B3748".parse().unwrap(),
        Some("os:dba".into()),
    );
    pgtrail::store::events::record(store, &gap).await.unwrap();
    // `setup --rebind-source`'s record of a move to another server, made as setup makes it.
    let at = |system: &str| pgtrail::store::binding::SourceServer {
        system_identifier: system.into(),
        database_oid: 16384,
        database: "app".into(),
    };
    let last = pgtrail::pipeline::gap::LastStored {
        lsn: "0/16B3748".parse().unwrap(),
        checkpoint_written: chrono::Utc::now(),
        commit: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
    };
    let moved = pgtrail::pipeline::gap::moved_event(
        (&source, &slot),
        (&at(OLD_SERVER), &at(NEW_SERVER)),
        Some(&last),
        "0/3000028".parse().unwrap(),
        Some("os:dba".into()),
    );
    pgtrail::store::events::record(store, &moved).await.unwrap();
    demo
}

/// The system identifiers of the servers a source moved between.
const OLD_SERVER: &str = "7312345678901234567";
const NEW_SERVER: &str = "7412345678901234568";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_events_read_as_what_happened_in_the_log_and_on_their_page() {
    let (env, store) = TestEnv::with_store().await;
    let web = Web::start_with(&env, "").await;
    let mut demo = make_events(&env, &store, &web).await;
    let events = own_events(&store).await;
    let shell = events[0].1.clone().expect("the CLI names its OS user");
    assert!(shell.starts_with("os:"), "{shell}");

    let log = demo.get("/?action=EVENT&limit=100").await.body;
    let expected = [
        ("user_added", "demo added user vic as viewer".to_owned()),
        ("sign_in", "demo signed in".to_owned()),
        ("export", "demo exported 3 entries as CSV".to_owned()),
        ("role_changed", "demo changed the role of vic from viewer to auditor".to_owned()),
        ("sign_in_failed", "failed sign-in as vic".to_owned()),
        (
            "slot_recreated",
            "os:dba recreated replication slot pgtrail_slot at 0/16B3748; changes after ? were not captured".to_owned(),
        ),
        (
            "source_moved",
            format!(
                "os:dba moved source app (database \"app\") from server {OLD_SERVER} to server {NEW_SERVER}; \
                 changes between the old checkpoint 0/16B3748 and the new slot's start 0/3000028 were not captured"
            ),
        ),
    ];
    for (name, text) in &expected {
        let id = event_id(&store, name).await;
        assert_eq!(&changes_of(&log, id), text, "{name}");
    }
    // The move's gap, among the rows, says what happened: no slot was lost.
    assert!(
        log.contains("were not captured (the source moved to another server, where its slot is pgtrail_slot)."),
        "{log}"
    );
    // Every event of the store is on the page, and none reads as an update.
    assert_eq!(row_ids(&log).len(), events.len(), "{log}");
    assert!(!log.contains("old values not captured"), "{log}");
    let first = events[0].3["id"].as_i64().unwrap();
    assert_eq!(
        changes_of(&log, first),
        format!("{shell} added user demo as admin")
    );

    // The export's page: who, when, from where, and its details as labelled values.
    let id = event_id(&store, "export").await;
    let page = demo.get(&format!("/entries/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body;
    assert!(
        html.contains("<span class=\"what\">demo exported 3 entries as CSV</span>"),
        "{html}"
    );
    assert!(html.contains("demo <small>pgtrail user</small>"), "{html}");
    assert!(html.contains("<dt>From</dt><dd>127.0.0.1</dd>"), "{html}");
    assert!(
        html.contains("<dt>Through</dt><dd>pgtrail web</dd>"),
        "{html}"
    );
    assert_details(
        &html,
        &[
            ("Format", "csv"),
            ("Entries", "3"),
            ("Encrypted", "no"),
            ("Completed", "yes"),
            ("Filters: table", "public.t"),
        ],
    );
    assert!(
        !html.contains("<h2>Columns</h2>") && !html.contains("Revert SQL"),
        "{html}"
    );
    assert!(
        !html.contains("before and after"),
        "an export changes no record: {html}"
    );

    // The role change's page shows the user's record before and after.
    let id = event_id(&store, "role_changed").await;
    let html = demo.get(&format!("/entries/{id}")).await.body;
    assert!(
        html.contains("<h2>The record before and after</h2>"),
        "{html}"
    );
    assert_eq!(
        diff_rows(&html)
            .into_iter()
            .filter(|(class, _)| class == "changed")
            .collect::<Vec<_>>(),
        [("changed".to_owned(), "role".to_owned())]
    );
    assert!(
        html.contains(">viewer<") && html.contains(">auditor<"),
        "{html}"
    );

    // pgtrail's own gap event: nobody signed in, the CLI's OS user named as such.
    let id = event_id(&store, "slot_recreated").await;
    let html = demo.get(&format!("/entries/{id}")).await.body;
    assert!(
        html.contains("os:dba <small>operating-system user, at the command line</small>"),
        "{html}"
    );
    let details = details_of(&html);
    assert!(
        details.contains(&("To LSN".to_owned(), "0/16B3748".to_owned())),
        "{details:?}"
    );
    assert!(
        details.contains(&(
            "From LSN".to_owned(),
            "<span class=\"none\">—</span>".to_owned()
        )),
        "{details:?}"
    );
    // A move's page: its sentence, and either side's server and database among the details.
    let id = event_id(&store, "source_moved").await;
    let html = demo.get(&format!("/entries/{id}")).await.body;
    assert!(
        html.contains(&format!(
            "from server {OLD_SERVER} to server {NEW_SERVER}; changes between"
        )),
        "{html}"
    );
    assert_details(
        &html,
        &[
            ("From server: system identifier", OLD_SERVER),
            ("To server: system identifier", NEW_SERVER),
            ("To server: database", "app"),
            ("From server: database OID", "16384"),
            ("From LSN", "0/16B3748"),
            ("To LSN", "0/3000028"),
        ],
    );
}
