//! A store from before sources had ids (migrations 1 to 13, entries written by the old COPY
//! without a source, an event through the old record_event, a v1 signed head) is refused by the
//! daemon until `pgtrail setup` migrates it; then nothing is lost, the chains and the v1
//! signature still verify, and capture goes on into the first source's chain.

use bytes::BytesMut;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::Signer as _;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_postgres::Client;

use pgtrail::entry::{Action, AuditEntry, Transaction};
use pgtrail::pg::lsn::Lsn;
use pgtrail::store::chain::{self, GENESIS};
use pgtrail::store::context::ContextColumns;
use pgtrail::store::events::{self, Category, OwnEvent};
use pgtrail::store::signing::SignedHead;
use pgtrail::store::writer::{content, encode_copy_row, COPY_SQL};
use pgtrail::table::TableName;

use crate::harness::*;

/// The store as the code before sources left it: its schema (migrations before 15), a
/// checkpoint for the slot, `n` captured entries chained from the start, one event, and a v1
/// head signed with the key in `private`.
async fn old_store(store: &Client, slot_lsn: &str, n: u64, private: &str) {
    old_store_schema(store, 14).await;
    store
        .execute(
            "INSERT INTO pgtrail.checkpoints (slot, lsn) VALUES ($1, $2::text::pg_lsn)",
            &[&SLOT, &slot_lsn],
        )
        .await
        .unwrap();
    // Captured changes, as the old writer sent them (one transaction before the slot's start).
    let txn = std::sync::Arc::new(Transaction {
        xid: 700,
        committed_at: "2026-11-01 10:00:00.25+00".into(),
        commit_lsn: Lsn(0x100),
        end_lsn: Lsn(0x180),
    });
    let (mut prev, mut buf) = (GENESIS, BytesMut::new());
    for i in 0..n {
        let entry = AuditEntry {
            txn: txn.clone(),
            table: TableName::new("public", "t"),
            action: Action::Insert,
            primary_key: Some(format!(r#"{{"id":{i}}}"#)),
            before: None,
            after: Some(format!(r#"{{"id":{i},"v":0}}"#)),
            changed_columns: None,
            context: r#"{"db_user":"app","client_addr":"10.0.0.7"}"#.into(),
            details: None,
        };
        let micros = chain::commit_time_micros(&entry.txn.committed_at).unwrap();
        prev = content(&entry, micros).hash(&prev);
        encode_copy_row(&entry, &ContextColumns::of(&entry.context), &prev, &mut buf);
    }
    let sink = store.copy_in(COPY_SQL).await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(buf.freeze()).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    store
        .execute(
            "UPDATE pgtrail.chain_heads SET hash = $1, entries = $2 WHERE chain = 'capture'",
            &[&&prev[..], &(n as i64)],
        )
        .await
        .unwrap();
    events::record(
        store,
        &OwnEvent::new(Category::Config, "config_reloaded", "pgtrail cli", "old"),
    )
    .await
    .unwrap();
    sign_v1(store, private).await;
}

/// Signs both heads as the code before sources did (message v1) and stores the signature.
async fn sign_v1(store: &Client, private: &str) {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(private).unwrap())
        .unwrap();
    // 'capture' sorts before 'events'.
    let heads = query_pairs::<i64, Vec<u8>>(
        store,
        "SELECT entries, hash FROM pgtrail.chain_heads ORDER BY chain",
        &[],
    )
    .await;
    let mut head = SignedHead {
        signed_at: chrono::DateTime::from_timestamp_micros(1_800_000_000_000_000).unwrap(),
        source: None,
        version: 1,
        capture_entries: heads[0].0,
        capture_hash: heads[0].1.clone(),
        events_entries: heads[1].0,
        events_hash: heads[1].1.clone(),
        public_key: key.verifying_key().as_bytes().to_vec(),
        signature: Vec::new(),
    };
    head.signature = key.sign(&head.message()).to_bytes().to_vec();
    store
        .execute(
            "INSERT INTO pgtrail.signed_heads (signed_at, capture_entries, capture_hash, events_entries, \
             events_hash, public_key, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &head.signed_at,
                &head.capture_entries,
                &head.capture_hash,
                &head.events_entries,
                &head.events_hash,
                &head.public_key,
                &head.signature,
            ],
        )
        .await
        .unwrap();
}

/// `verify --json --public-key PUBLIC`, which must pass: its report.
async fn verified(env: &TestEnv, public: &str) -> Value {
    let out = env
        .trail
        .cli(&["verify", "--json", "--public-key", public])
        .await;
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_sources_is_migrated_by_setup_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keypair(dir.path(), "signing");
    let key_toml = format!("signing_key_file = {}\n", toml_str(&private));
    let env = TestEnv::start_with(ClusterOptions::default(), |c| c.store_toml = key_toml).await;
    let (src, store, slot_lsn) = before_an_old_store(&env).await;
    old_store(&store, &slot_lsn, 5, &private).await;

    // The daemon refuses the store until setup migrates it, and says so: 14, the entries must
    // first be moved into time partitions (migration 16).
    refused_by_run(&env, 14, "unpartitioned layout").await;

    env.setup().await;
    let sources = query_pairs::<i16, String>(
        &store,
        "SELECT id, name FROM pgtrail.sources ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(sources, [(0, "pgtrail".to_owned()), (1, "app".to_owned())]);
    // Moved into partitions, each with the source it was read as.
    let named = query_pairs::<i16, i64>(
        &store,
        "SELECT source, count(*) FROM pgtrail.entries GROUP BY source ORDER BY source",
        &[],
    )
    .await;
    assert_eq!(named, [(0, 1), (1, 5)], "the old entries are kept");
    let report = verified(&env, &public).await;
    assert_eq!(report["entries"], 6, "{report}");
    assert_eq!(report["chains"]["app"]["entries"], 5, "{report}");
    assert_eq!(report["chains"]["pgtrail"]["entries"], 1, "{report}");
    assert_eq!(report["signatures_checked"], 1, "{report}");
    assert_eq!(report["signed_head"]["version"], 1, "{report}");

    // Capture goes on in the first source's chain, from the old checkpoint; the daemon signs v2.
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t SELECT g, g FROM generate_series(1, 20) g")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    assert_counts(&store, "public", "t", Counts::new(25, 0, 0, 0)).await;
    let new = query_count(
        &store,
        "SELECT count(*) FROM pgtrail.entries WHERE source = 1",
    )
    .await;
    assert_eq!(
        new, 26,
        "the 5 old entries, 20 rows and the sync marker, in source 1"
    );
    let report = verified(&env, &public).await;
    assert_eq!(report["chains"]["app"]["entries"], 26, "{report}");
    assert_eq!(report["signed_head"]["version"], 2, "{report}");
    assert_eq!(report["signed_head"]["source"], "app", "{report}");
    assert!(
        report["signatures_checked"].as_u64().unwrap() >= 2,
        "{report}"
    );
}
