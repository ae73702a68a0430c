//! Signed chain heads: with `store.signing_key_file` (an Ed25519 key made by openssl) the daemon
//! signs both heads while it runs and when it stops; `verify --public-key` accepts the store,
//! refuses another key, and catches a chain that was rewritten and recomputed wholesale, which
//! plain `verify` cannot; `digest` prints the newest signed head.

use std::time::Duration;

use pgtrail::store::chain::{Content, GENESIS};
use serde_json::Value;

use crate::harness::*;

async fn verify_with(env: &TestEnv, public: &str) -> (i32, Value) {
    let out = env
        .trail
        .cli(&["verify", "--json", "--public-key", public])
        .await;
    let report = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{}", out.combined()));
    (
        out.status.code().expect("verify exited by a signal"),
        report,
    )
}

/// Recomputes every capture-chain hash and the head, as someone who can write the store past
/// its trigger and knows the canonical form could.
async fn recompute_capture_chain(store: &tokio_postgres::Client) {
    let rows = store
        .query(
            "SELECT id, committed_at, xid, lsn::text, schema_name, table_name, action, \
                    primary_key::text, before::text, after::text, changed_columns::text, \
                    context::text, details::text \
             FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let mut prev = GENESIS;
    let mut updates =
        String::from("BEGIN; ALTER TABLE pgtrail.entry_rows DISABLE TRIGGER entries_append_only;");
    for r in &rows {
        let at: chrono::DateTime<chrono::Utc> = r.get(1);
        let lsn: String = r.get(3);
        let text = |i: usize| r.get::<_, Option<String>>(i);
        let (pk, before, after, changed, context, details) =
            (text(7), text(8), text(9), text(10), text(11), text(12));
        let (schema, table, action): (String, String, String) = (r.get(4), r.get(5), r.get(6));
        prev = Content {
            committed_at_micros: at.timestamp_micros(),
            xid: r.get(2),
            lsn: Some(parse_lsn(&lsn)),
            schema: &schema,
            table: &table,
            action: &action,
            primary_key: pk.as_deref(),
            before: before.as_deref(),
            after: after.as_deref(),
            changed_columns: changed.as_deref(),
            context: context.as_deref().unwrap(),
            details: details.as_deref(),
        }
        .hash(&prev);
        let hex: String = prev.iter().map(|b| format!("{b:02x}")).collect();
        updates.push_str(&format!(
            "UPDATE pgtrail.entry_rows SET hash = '\\x{hex}' WHERE id = {};",
            r.get::<_, i64>(0)
        ));
    }
    let hex: String = prev.iter().map(|b| format!("{b:02x}")).collect();
    updates.push_str(&format!(
        "UPDATE pgtrail.chain_heads SET hash = '\\x{hex}' WHERE source = 1;
         ALTER TABLE pgtrail.entry_rows ENABLE TRIGGER entries_append_only; COMMIT;"
    ));
    store.batch_execute(&updates).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_heads_catch_a_chain_rewritten_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keypair(dir.path(), "signing");
    let (_, other_public) = keypair(dir.path(), "other");
    let key_toml = format!(
        "signing_key_file = {}\nsign_every_seconds = 1\n",
        toml_str(&private)
    );
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.store_toml = key_toml).await;
    let src = env.source().await;
    src.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    env.setup().await;
    // Before the daemon ever signed, there is nothing to print or to check against.
    assert!(!env.trail.cli(&["digest"]).await.success());
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20) g")
        .await
        .unwrap();
    env.sync().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Committed over a second after the first: signed while running.
    src.batch_execute("UPDATE t SET v = 'w' WHERE id <= 5")
        .await
        .unwrap();
    env.sync().await;
    // Committed within the second: signed when the daemon stops.
    src.batch_execute("INSERT INTO t VALUES (21, 'last')")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;

    let store = env.store().await;
    let signed: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.signed_heads", &[])
        .await
        .unwrap()
        .get(0);
    assert!(signed >= 2, "signed while running and on stop: {signed}");
    let (code, report) = verify_with(&env, &public).await;
    assert_eq!(code, 0, "{report}");
    let head: (i64, Vec<u8>) = store
        .query_one(
            "SELECT entries, hash FROM pgtrail.chain_heads WHERE source = 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    let head_hex: String = head.1.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report["signed_head"]["capture_entries"], head.0, "{report}");
    assert_eq!(report["signed_head"]["capture_hash"], head_hex.as_str());
    assert_eq!(report["signatures_checked"], signed);
    // digest prints the same head, one line of JSON.
    let digest = env.trail.cli(&["digest"]).await;
    assert!(digest.success(), "{}", digest.combined());
    let d: Value = serde_json::from_str(digest.stdout.trim()).unwrap();
    assert_eq!(d["capture_hash"], head_hex.as_str());

    // Another key verifies none of the signatures.
    let (code, report) = verify_with(&env, &other_public).await;
    assert_eq!(code, 1, "{report}");

    // A rewrite recomputed wholesale: plain verify is satisfied, the signature is not.
    store
        .batch_execute(
            "BEGIN; ALTER TABLE pgtrail.entry_rows DISABLE TRIGGER entries_append_only;
             UPDATE pgtrail.entry_rows SET after = '{\"id\":3,\"v\":\"forged\"}'
              WHERE table_name = 't' AND action = 'INSERT' AND after->>'id' = '3';
             ALTER TABLE pgtrail.entry_rows ENABLE TRIGGER entries_append_only; COMMIT;",
        )
        .await
        .unwrap();
    recompute_capture_chain(&store).await;
    let plain = env.trail.cli(&["verify"]).await;
    assert!(plain.success(), "recomputed: {}", plain.combined());
    let (code, report) = verify_with(&env, &public).await;
    assert_eq!(code, 1, "{report}");
    assert!(
        report["breaks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["problem"].as_str().unwrap().contains("rewritten")),
        "{report}"
    );
}
