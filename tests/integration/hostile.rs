//! Bytes from the source are treated as hostile: a message forged by a role with no rights at all
//! (any role may call pg_logical_emit_message) whose names carry a NUL character, which PostgreSQL
//! text cannot hold, no longer stops capture: the entry is stored with U+FFFD in its place and
//! says so in its details, and the changes after it are stored as usual.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_message_with_nul_does_not_halt_capture() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE ROLE mallory LOGIN PASSWORD 'pw';",
    )
    .await;
    let mallory = connect(&env.cluster.url_as("app", "mallory", Some("pw")))
        .await
        .unwrap();
    mallory
        .batch_execute(
            r#"SELECT pg_logical_emit_message(true, 'pgtrail_ddl',
                 '{"command_tag":"CREATE TABLE","object_type":"table","schema":"public",
                   "object_name":"x\u0000y","object_identity":"public.x","sql":"--\u0000",
                   "context":{"session_user":"mallory","actor":"m\u0000"}}')"#,
        )
        .await
        .unwrap();
    src.batch_execute("INSERT INTO t VALUES (1, 'after the forged message')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;

    let store = env.store().await;
    let rows = store
        .query(
            "SELECT table_name, details::text, actor, after::text FROM pgtrail.entries \
             WHERE action = 'DDL'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (table, details, actor, after): (String, String, String, String) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_eq!(table, "x\u{fffd}y");
    assert_eq!(details, r#"{"nul_replaced":["table_name"]}"#);
    assert_eq!(actor, "m\u{fffd}");
    // The JSON keeps the escape as sent: json text can hold it.
    assert!(after.contains(r#""sql":"--\u0000""#), "{after}");
    let after: i64 = store
        .query_one(
            "SELECT count(*) FROM pgtrail.entries WHERE table_name = 't' AND after->>'v' = 'after the forged message'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 1, "capture went on past the forged message");
    let verify = env.trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());
}
