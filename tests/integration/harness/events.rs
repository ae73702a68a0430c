//! pgtrail's own events as the store holds them (`EVENT` entries with source pgtrail): all of
//! them, the newest of a name, and a way to make the store refuse one, for the tests of what a
//! change does when its event cannot be written.

use serde_json::Value;
use tokio_postgres::Client;

/// One of pgtrail's own events: (event name, actor, application, summary of the entry).
pub type OwnEventRow = (String, Option<String>, String, Value);

/// pgtrail's own events, oldest first.
pub async fn own_events(store: &Client) -> Vec<OwnEventRow> {
    store
        .query(
            "SELECT details->>'event', context->>'actor', context->>'application_name', \
                    json_build_object('id', id, 'table', table_name, 'xid', xid, 'lsn', lsn, 'source', context->>'source', \
                        'remarks', context->>'remarks', 'client_addr', context->>'client_addr', \
                        'before', before, 'after', after, 'changed', changed_columns, 'details', details)::text \
             FROM pgtrail.entries WHERE action = 'EVENT' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, String>(2),
                serde_json::from_str(&r.get::<_, String>(3)).unwrap(),
            )
        })
        .collect()
}

/// The newest event named `name`; it must exist, with source pgtrail and no transaction.
pub async fn last_event(store: &Client, name: &str) -> (Option<String>, String, Value) {
    let all = own_events(store).await;
    let (_, actor, app, e) = all
        .into_iter()
        .rev()
        .find(|(n, ..)| n == name)
        .unwrap_or_else(|| panic!("no {name} event in the store"));
    assert_eq!(e["source"], "pgtrail", "{e}");
    assert!(e["xid"].is_null() && e["lsn"].is_null(), "{e}");
    (actor, app, e)
}

/// The events named `name`: (actor, details) of each, oldest first.
pub async fn events_named(store: &Client, name: &str) -> Vec<(Option<String>, Value)> {
    own_events(store)
        .await
        .into_iter()
        .filter(|(n, ..)| n == name)
        .map(|(_, actor, _, e)| (actor, e["details"].clone()))
        .collect()
}

/// There are `total` sign_out events, the newest by `actor` with these details.
pub async fn last_sign_out(
    store: &Client,
    total: usize,
    actor: &str,
    everywhere: bool,
    sessions: i64,
) {
    let outs = events_named(store, "sign_out").await;
    assert_eq!(outs.len(), total, "{outs:?}");
    let (who, details) = &outs[total - 1];
    assert_eq!(who.as_deref(), Some(actor));
    assert_eq!(details["everywhere"], everywhere);
    assert_eq!(details["sessions"], sessions);
}

/// Makes the store refuse pgtrail's `event` events (a CHECK on the entry rows), or
/// accept them again with `None`.
pub async fn refuse_event(store: &Client, event: Option<&str>) {
    store
        .batch_execute(
            "ALTER TABLE pgtrail.entry_rows DROP CONSTRAINT IF EXISTS test_refuses_event",
        )
        .await
        .unwrap();
    if let Some(e) = event {
        store
            .batch_execute(&format!(
                "ALTER TABLE pgtrail.entry_rows ADD CONSTRAINT test_refuses_event \
                 CHECK (details IS NULL OR details->>'event' IS DISTINCT FROM '{e}') NOT VALID"
            ))
            .await
            .unwrap();
    }
}
