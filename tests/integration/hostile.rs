//! Bytes from the source are treated as hostile. Any role may call pg_logical_emit_message, so a
//! role with no rights at all can send messages with pgtrail's prefixes; the daemon acts only on
//! the ones pgtrail's own SECURITY DEFINER functions signed. Each forgery here is tried as
//! `mallory`, an unprivileged role, and must leave the real changes stored with the real roles
//! and a security event (an EVENT under pgtrail.security) holding what was tried.

use tokio_postgres::Client;

use crate::harness::*;

const MALLORY: &str = "CREATE ROLE mallory LOGIN PASSWORD 'pw';";

async fn mallory(env: &TestEnv) -> Client {
    connect(&env.cluster.url_as("app", "mallory", Some("pw")))
        .await
        .expect("connect as mallory")
}

/// The security events in the store, oldest first: (reason, prefix, content tried).
async fn security_events(store: &Client) -> Vec<(String, String, String)> {
    store
        .query(
            "SELECT details->>'reason', after->>'prefix', after->>'content' FROM pgtrail.entries \
             WHERE schema_name = 'pgtrail' AND table_name = 'security' AND action = 'EVENT' ORDER BY id",
            &[],
        )
        .await
        .expect("read security events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// (db_user, current_user) of each entry of `table`, in id order.
async fn roles_of(store: &Client, table: &str) -> Vec<(Option<String>, Option<String>)> {
    query_pairs(
        store,
        "SELECT context->>'db_user', context->>'current_user' FROM pgtrail.entries \
         WHERE table_name = $1 ORDER BY id",
        &[&table],
    )
    .await
}

async fn finish(env: &TestEnv, daemon: &mut Daemon) -> Client {
    env.sync().await;
    daemon.terminate().await;
    let verify = env.trail.cli(&["verify"]).await;
    assert!(verify.success(), "{}", verify.combined());
    env.store().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_partition_map_hides_nothing() {
    let (env, src, mut daemon) = TestEnv::capturing(&format!(
        "CREATE TABLE payments (id int PRIMARY KEY, amount int);
         CREATE TABLE scratch (id int PRIMARY KEY) PARTITION BY RANGE (id);
         {MALLORY}"
    ))
    .await;
    mallory(&env)
        .await
        .batch_execute(
            r#"SELECT pg_logical_emit_message(true, 'pgtrail_partitions',
                 '{"root":{"schema":"public","name":"scratch"},"members":[{"schema":"public","name":"payments","parent_schema":"public","parent_name":"scratch"}]}')"#,
        )
        .await
        .expect("any role may emit a message");
    src.batch_execute("INSERT INTO payments VALUES (1, 10); INSERT INTO payments VALUES (2, 20)")
        .await
        .unwrap();
    env.sync().await;
    // The map is not saved with the checkpoint either: after a restart, still all stored.
    daemon.terminate().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO payments VALUES (3, 30)")
        .await
        .unwrap();
    let store = finish(&env, &mut daemon).await;

    let ids: Vec<i32> = query_column(
        &store,
        "SELECT (after->>'id')::int FROM pgtrail.entries WHERE table_name = 'payments' ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(
        ids,
        [1, 2, 3],
        "every insert into payments is stored under its own name"
    );
    let events = security_events(&store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("unsigned", "pgtrail_partitions")
    );
    assert!(
        events[0].2.contains(r#""name":"payments""#),
        "the event holds what was tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_trigger_and_a_forged_context_leave_the_real_roles() {
    let (env, _src, mut daemon) = TestEnv::capturing(&format!(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         {MALLORY}
         GRANT INSERT ON notes TO mallory;"
    ))
    .await;
    let m = mallory(&env).await;
    // The attack of the issue: silence the context trigger with the value it would compare
    // against, then speak for postgres.
    m.batch_execute(
        r#"BEGIN;
           SELECT set_config('pgtrail.emitted', pgtrail.context_json(), true);
           SELECT pg_logical_emit_message(true, 'pgtrail',
             '{"session_user":"postgres","current_user":"postgres","actor":"the boss"}');
           INSERT INTO notes VALUES (1, 'not me');
           COMMIT;"#,
    )
    .await
    .unwrap();
    // And the same with a value copied from a transaction where the trigger really emitted.
    let emitted: String = {
        m.batch_execute("BEGIN; INSERT INTO notes VALUES (2, 'honest')")
            .await
            .unwrap();
        let v = query_value(&m, "SELECT current_setting('pgtrail.emitted')", &[]).await;
        m.batch_execute("COMMIT").await.unwrap();
        v
    };
    m.batch_execute(&format!(
        "BEGIN;
         SELECT set_config('pgtrail.emitted', {}, true);
         INSERT INTO notes VALUES (3, 'replayed');
         COMMIT;",
        quote_literal(&emitted)
    ))
    .await
    .unwrap();
    let store = finish(&env, &mut daemon).await;

    let mallory = (Some("mallory".to_owned()), Some("mallory".to_owned()));
    assert_eq!(roles_of(&store, "notes").await, vec![mallory; 3]);
    let events = security_events(&store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("unsigned", "pgtrail")
    );
    // The event is in the forger's transaction, next to the change it tried to disguise.
    let same_txn: i64 = query_value(
        &store,
        "SELECT count(DISTINCT xid) FROM pgtrail.entries \
         WHERE table_name = 'security' OR (table_name = 'notes' AND after->>'id' = '1')",
        &[],
    )
    .await;
    assert_eq!(same_txn, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_with_nul_are_refused_and_capture_goes_on() {
    let (env, src, mut daemon) = TestEnv::capturing(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); {MALLORY}"
    ))
    .await;
    mallory(&env)
        .await
        .batch_execute(
            r#"SELECT pg_logical_emit_message(true, 'pgtrail_ddl',
                 '{"command_tag":"CREATE TABLE","object_type":"table","schema":"public",
                   "object_name":"x\u0000y","object_identity":"public.x","sql":"--\u0000",
                   "context":{"session_user":"mallory","actor":"m\u0000"}}');
               SELECT pg_logical_emit_message(true, 'pgtrail', '{"session_user":"m\u0000"}');
               SELECT pg_logical_emit_message(true, 'pgtrail_truncate', '\u0000');"#,
        )
        .await
        .unwrap();
    src.batch_execute("INSERT INTO t VALUES (1, 'after the forged messages')")
        .await
        .unwrap();
    let store = finish(&env, &mut daemon).await;

    let events = security_events(&store).await;
    let prefixes: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(prefixes, ["pgtrail_ddl", "pgtrail", "pgtrail_truncate"]);
    // Kept as sent: the JSON escape a later reader would turn into NUL is text here.
    assert!(events[0].2.contains(r"x\u0000y"), "{:?}", events[0].2);
    let ddl = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE action = 'DDL'",
    )
    .await;
    assert_eq!(ddl, 0, "no forged DDL entry");
    let t = roles_of(&store, "t").await;
    assert_eq!(
        t,
        [(Some("postgres".to_owned()), Some("postgres".to_owned()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_but_setups_can_sign_or_read_the_key() {
    let env = TestEnv::start().await;
    env.source_with(&format!("CREATE TABLE t (id int PRIMARY KEY); {MALLORY}"))
        .await;
    env.setup().await;
    let m = mallory(&env).await;
    for sql in [
        "SELECT * FROM pgtrail.message_key",
        "SELECT pgtrail.emit_signed('pgtrail', '{}')",
        "SELECT pgtrail.emit_context_once()",
        "SELECT pgtrail.enrol_partitions('t'::regclass)",
    ] {
        let e = m.batch_execute(sql).await.expect_err(sql);
        let code = e.as_db_error().map(|d| d.code().code().to_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {e}");
    }
    // The trigger function cannot be called to sign either.
    let e = m
        .batch_execute("SELECT pgtrail.emit_context()")
        .await
        .expect_err("a trigger function is not callable");
    let message = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("trigger")),
        "{message:?}"
    );
}

/// The functions and operators the trigger uses, put ahead of pg_catalog's, each raising: the
/// trigger is SECURITY DEFINER without a SET search_path, so nothing in it may be looked up by
/// name. (`json_build_object` and `format` take `"any"`, which only C functions can.)
const HIJACKERS: &str = r#"
    CREATE FUNCTION evil.texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked texteq'; END$$;
    CREATE FUNCTION evil.textcat(text, text) RETURNS text LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked textcat'; END$$;
    CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked current_setting'; END$$;
    CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked set_config'; END$$;
    CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked sha256'; END$$;
    CREATE FUNCTION evil.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked encode'; END$$;
    CREATE FUNCTION evil.pg_logical_emit_message(boolean, text, text) RETURNS pg_lsn LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked emit'; END$$;
    CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked ='; END$$;
    CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
    CREATE FUNCTION evil.cat(bytea, bytea) RETURNS bytea LANGUAGE plpgsql AS $$BEGIN RAISE 'hijacked ||'; END$$;
    CREATE OPERATOR evil.|| (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = evil.cat);
    SET search_path = evil, pg_catalog, public;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_search_path_and_a_copied_marker_change_nothing() {
    let (env, _src, mut daemon) = TestEnv::capturing(&format!(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         {MALLORY}
         CREATE ROLE clerk;
         GRANT clerk TO mallory;
         GRANT INSERT ON notes TO mallory, clerk;
         CREATE SCHEMA evil AUTHORIZATION mallory;"
    ))
    .await;
    let m = mallory(&env).await;
    m.batch_execute(HIJACKERS)
        .await
        .expect("mallory's functions");
    m.batch_execute("INSERT INTO notes VALUES (1, 'under a hostile search_path')")
        .await
        .expect("the trigger calls none of mallory's functions");
    // Mid-transaction: the marker of mallory's own context, copied after SET ROLE, must not
    // let clerk's change pass as hers.
    m.batch_execute("BEGIN; INSERT INTO notes VALUES (2, 'as mallory')")
        .await
        .unwrap();
    let marker: String = query_value(
        &m,
        "SELECT pg_catalog.current_setting('pgtrail.emitted')",
        &[],
    )
    .await;
    m.batch_execute(&format!(
        "SET LOCAL ROLE clerk;
         SELECT pg_catalog.set_config('pgtrail.emitted', {}, true);
         INSERT INTO notes VALUES (3, 'as clerk');
         COMMIT;",
        quote_literal(&marker)
    ))
    .await
    .unwrap();
    let store = finish(&env, &mut daemon).await;

    let as_role = |role: &str| (Some("mallory".to_owned()), Some(role.to_owned()));
    assert_eq!(
        roles_of(&store, "notes").await,
        [as_role("mallory"), as_role("mallory"), as_role("clerk")]
    );
    assert_eq!(security_events(&store).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_recorded_and_setup_makes_a_new_one() {
    let (env, src, mut daemon) = TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY)").await;
    src.batch_execute("DELETE FROM pgtrail.message_key; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    // setup is the fix the daemon's and the docs' hint names: it makes a new key and copies it.
    env.setup().await;
    let keys: i64 = query_value(&src, "SELECT count(*) FROM pgtrail.message_key", &[]).await;
    assert_eq!(keys, 1);
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let store = finish(&env, &mut daemon).await;

    // Without a key the context went out unsigned (the harness's sync wrote too): refused,
    // recorded, and the change kept. Signed by the new key, nothing after setup was refused.
    let events = security_events(&store).await;
    assert!(!events.is_empty());
    for (reason, prefix, content) in &events {
        assert_eq!(
            (reason.as_str(), prefix.as_str()),
            ("bad_signature", "pgtrail")
        );
        assert!(content.starts_with(&"0".repeat(64)), "{content:?}");
    }
    assert_eq!(
        roles_of(&store, "t").await,
        [
            (None, None),
            (Some("postgres".to_owned()), Some("postgres".to_owned()))
        ]
    );
}
