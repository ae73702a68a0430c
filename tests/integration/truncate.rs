//! TRUNCATE: one entry per truncated captured table, with `cascade` and `restart_identity` in
//! `details` (and `via_cascade` on tables emptied only by a CASCADE), read from the client's
//! query text: plain, CASCADE to a captured child, RESTART IDENTITY, several statements in one
//! query string with comments and quoted names, and from inside a function (options unknown).

use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_entries_carry_their_options() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE parent (id serial PRIMARY KEY, v text);
         CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent, v text);
         CREATE TABLE solo (id serial PRIMARY KEY, v text);
         CREATE TABLE \"Odd Name\" (id serial PRIMARY KEY);",
    )
    .await;

    let fill = "INSERT INTO parent (v) VALUES ('p1'), ('p2');
                INSERT INTO child (parent_id, v) SELECT min(id), 'c1' FROM parent;
                INSERT INTO solo (v) VALUES ('s1'), ('s2');
                INSERT INTO \"Odd Name\" DEFAULT VALUES;";
    src.batch_execute(fill).await.unwrap();
    // Each statement below is its own client query string, sent with the simple protocol.
    let steps: [&str; 5] = [
        "TRUNCATE solo",
        "BEGIN; SET LOCAL pgtrail.actor = 'ops'; TRUNCATE parent CASCADE; COMMIT",
        "TRUNCATE solo RESTART IDENTITY",
        // Several statements, a comment and a literal that look like TRUNCATEs, a quoted name.
        "/* TRUNCATE solo CASCADE; */ INSERT INTO solo (v) VALUES ('s3');
         TRUNCATE ONLY \"Odd Name\" RESTART IDENTITY; SELECT 'TRUNCATE solo CASCADE';
         TRUNCATE TABLE public.solo CONTINUE IDENTITY -- RESTART IDENTITY
        ",
        // From a function: the query text is the DO block's, whose TRUNCATE is inside a literal.
        "DO $$ BEGIN TRUNCATE child; END $$",
    ];
    for step in steps {
        src.batch_execute(step)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        src.batch_execute(fill).await.unwrap();
    }
    env.sync().await;

    let store = env.store().await;
    let truncates: Vec<(String, Value, Option<String>)> = entries(&store)
        .await
        .into_iter()
        .filter(|e| e.action == "TRUNCATE")
        .map(|e| {
            assert_eq!(e.context["db_user"], json!("postgres"), "context on {e:?}");
            (
                e.table.clone(),
                e.details.clone(),
                e.context["actor"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let t = |table: &str, details: Value, actor: Option<&str>| {
        (table.to_owned(), details, actor.map(str::to_owned))
    };
    let opts =
        |cascade: bool, restart: bool| json!({"cascade": cascade, "restart_identity": restart});
    assert_eq!(
        truncates,
        [
            t("solo", opts(false, false), None),
            t("parent", opts(true, false), Some("ops")),
            t(
                "child",
                json!({"cascade": true, "restart_identity": false, "via_cascade": true}),
                Some("ops")
            ),
            t("solo", opts(false, true), None),
            t("Odd Name", opts(false, true), None),
            t("solo", opts(false, false), None),
            t(
                "child",
                json!({"cascade": null, "restart_identity": null}),
                None
            ),
        ]
    );

    // What really happened: RESTART IDENTITY restarted the sequences it names, and the store
    // replays to the tables' rows.
    let odd_ids: Vec<i32> =
        query_column(&src, "SELECT id FROM \"Odd Name\" ORDER BY id", &[]).await;
    // Restarted by step 4, then filled twice.
    assert_eq!(
        odd_ids,
        [1, 2],
        "RESTART IDENTITY took effect in the source"
    );
    for table in ["parent", "child", "solo", "Odd Name"] {
        assert_store_matches_source(&src, &store, "public", table).await;
    }
    daemon.terminate().await;
}
