//! Per-table column rules (`[[capture.columns]]`) end to end: an ignored column is never stored
//! and an UPDATE of only ignored columns is no entry; a redacted column is stored as
//! `hmac-sha256:<hex>` wherever its value would appear (before, after, primary_key), with the key
//! read from a file; the raw values appear nowhere in the store. The hashes are checked against
//! pgcrypto, computed from PostgreSQL's own `to_json(value)::text`, so the recipe in the docs is
//! one a DBA can run.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::harness::*;

/// The key as written in the key file, which ends in a newline that is not part of the key.
const KEY: &str = "it-redact-key-5c0d2f";

/// `"hmac-sha256:<hex>"` of the text value `value` under [`KEY`], computed by pgcrypto.
async fn expected_hash(pg: &Client, value: &str) -> Value {
    let row = pg
        .query_one("SELECT 'hmac-sha256:' || encode(hmac(to_json($1::text)::text, $2::text, 'sha256'), 'hex')", &[&value, &KEY])
        .await
        .unwrap();
    Value::String(row.get(0))
}

/// The hashes pgcrypto gives for the secret values the test writes.
struct Hashes {
    hash1: Value,
    hash2: Value,
    ssn1: Value,
    ssn2: Value,
    token1: Value,
}

impl Hashes {
    async fn compute(env: &TestEnv) -> Hashes {
        let pg = env.cluster.client("postgres").await;
        pg.batch_execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            .await
            .expect("pgcrypto (postgresql-contrib)");
        Hashes {
            hash1: expected_hash(&pg, "secret-hash-1").await,
            hash2: expected_hash(&pg, "secret-hash-2").await,
            ssn1: expected_hash(&pg, "secret-ssn-1").await,
            ssn2: expected_hash(&pg, "secret-ssn-2").await,
            token1: expected_hash(&pg, "secret-token-1").await,
        }
    }
}

/// Row changes only (schema changes are entries too, checked by the DDL tests).
async fn row_entries(store: &Client, table: &str) -> Vec<Entry> {
    table_entries(store, "public", table)
        .await
        .into_iter()
        .filter(|e| e.action != "DDL")
        .collect()
}

/// Rows, in every table of the store, whose text contains `needle`: `(table, count)` for each hit.
async fn store_rows_containing(store: &Client, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = query_column(
        store,
        // Every table, a partitioned one read through its parent (its partitions are not listed).
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        &[],
    )
    .await;
    // The entries' two tables (behind the view pgtrail.entries) among them.
    for read in [
        "pgtrail.decode_errors",
        "pgtrail.entry_rows",
        "pgtrail.transactions",
    ] {
        assert!(tables.iter().any(|t| t == read), "{read}: {tables:?}");
    }
    let mut hits = Vec::new();
    for t in tables {
        let n: i64 = query_value(
            store,
            &format!("SELECT count(*) FROM {t} r WHERE r::text LIKE '%' || $1 || '%'"),
            &[&needle],
        )
        .await;
        if n > 0 {
            hits.push((t, n));
        }
    }
    hits
}

/// Users (one column ignored, two redacted), API tokens (the key redacted) and people (no
/// rule), with the redaction key read from `key_file`.
async fn start_with_column_rules(key_file: &std::path::Path) -> TestEnv {
    TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = format!(
            "redact_key_file = {}\n\n\
             [[capture.columns]]\ntable = \"public.users\"\nignore = [\"last_seen_at\"]\nredact = [\"password_hash\", \"ssn\"]\n\n\
             [[capture.columns]]\ntable = \"public.api_tok*\"\nredact = [\"token\"]\n\n\
             [[capture.columns]]\ntable = \"public.not_created_yet\"\nignore = [\"x\"]\n",
            toml_str(&key_file.display().to_string())
        )
    })
    .await
}

/// The changes, one transaction each unless written out.
async fn write_changes(src: &Client) {
    // One transaction each, unless written out. Ignored timestamps are in 1999 so that they
    // can be looked for in the store.
    for sql in [
        "INSERT INTO users VALUES (1, 'alice', 'secret-hash-1', 'secret-ssn-1', '1999-12-31 23:59:01+00'),
                                  (2, 'bob', NULL, 'secret-ssn-2', NULL)",
        // Only the ignored column: no entry, for one row and for two.
        "UPDATE users SET last_seen_at = '1999-12-31 23:59:02+00' WHERE id = 1",
        "UPDATE users SET last_seen_at = '1999-12-31 23:59:03+00'",
        // A redacted column (and the ignored one): an entry listing only the redacted one.
        "UPDATE users SET password_hash = 'secret-hash-2', last_seen_at = '1999-12-31 23:59:04+00' WHERE id = 1",
        "UPDATE users SET name = 'Alice' WHERE id = 1",
        // Bob gets Alice's ssn: the same value, the same hash.
        "UPDATE users SET ssn = 'secret-ssn-1' WHERE id = 2",
        "BEGIN; UPDATE users SET last_seen_at = '1999-12-31 23:59:05+00' WHERE id = 2; UPDATE users SET name = 'Bob' WHERE id = 2; COMMIT",
        "DELETE FROM users WHERE id = 2",
        // A redacted primary key column.
        "INSERT INTO api_tokens VALUES ('secret-token-1', 1)",
        "UPDATE api_tokens SET owner = 2",
        "DELETE FROM api_tokens",
        // No rule for this table: its ssn is stored as it is.
        "INSERT INTO people VALUES (1, 'plain-ssn-1')",
    ] {
        src.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Nothing raw anywhere in the store: not the secrets, not the ignored timestamps.
async fn nothing_raw_in_the_store(store: &Client) {
    // Nothing raw anywhere in the store: not the secrets, not the ignored timestamps.
    for needle in ["secret", "1999-12-31"] {
        let hits = store_rows_containing(store, needle).await;
        assert!(hits.is_empty(), "{needle:?} found in the store: {hits:?}");
    }
    // The check above would see them: unruled tables are stored as they are (a row's values in
    // its entry row, not in its transaction's).
    assert_eq!(
        store_rows_containing(store, "plain-ssn-1").await,
        [("pgtrail.entry_rows".to_string(), 1)]
    );
    // And in the words of the brief, column by column.
    let raw = query_count(
        store,
        "SELECT (SELECT count(*) FROM pgtrail.entries WHERE before::text LIKE '%secret%' OR after::text LIKE '%secret%'
                    OR primary_key::text LIKE '%secret%' OR changed_columns::text LIKE '%secret%')
              + (SELECT count(*) FROM pgtrail.decode_errors WHERE record LIKE '%secret%' OR error LIKE '%secret%')",
    )
    .await;
    assert_eq!(raw, 0);
}

/// The users' entries: the ignored column nowhere, the redacted ones hashed.
async fn users_are_stored_redacted(store: &Client, h: &Hashes) {
    let (hash1, hash2) = (h.hash1.clone(), h.hash2.clone());
    let (ssn1, ssn2) = (h.ssn1.clone(), h.ssn2.clone());
    let e = row_entries(store, "users").await;
    for entry in &e {
        for image in [&entry.before, &entry.after] {
            assert!(
                image.get("last_seen_at").is_none(),
                "ignored column stored: {entry:?}"
            );
        }
        assert!(
            !entry.changed_columns.to_string().contains("last_seen_at"),
            "{entry:?}"
        );
    }
    let summary: Vec<(&str, Value, Value, Value)> = e
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.primary_key.clone(),
                e.changed_columns.clone(),
                e.after.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "INSERT",
                json!({"id": 1}),
                Value::Null,
                json!({"id": 1, "name": "alice", "password_hash": hash1, "ssn": ssn1})
            ),
            // NULL stays null: whether it is set stays visible.
            (
                "INSERT",
                json!({"id": 2}),
                Value::Null,
                json!({"id": 2, "name": "bob", "password_hash": null, "ssn": ssn2})
            ),
            (
                "UPDATE",
                json!({"id": 1}),
                json!(["password_hash"]),
                json!({"id": 1, "name": "alice", "password_hash": hash2, "ssn": ssn1})
            ),
            (
                "UPDATE",
                json!({"id": 1}),
                json!(["name"]),
                json!({"id": 1, "name": "Alice", "password_hash": hash2, "ssn": ssn1})
            ),
            (
                "UPDATE",
                json!({"id": 2}),
                json!(["ssn"]),
                json!({"id": 2, "name": "bob", "password_hash": null, "ssn": ssn1})
            ),
            (
                "UPDATE",
                json!({"id": 2}),
                json!(["name"]),
                json!({"id": 2, "name": "Bob", "password_hash": null, "ssn": ssn1})
            ),
            ("DELETE", json!({"id": 2}), Value::Null, Value::Null),
        ],
        "{e:#?}"
    );
    // The changed redacted column: before and after hashes differ, and are the values' hashes.
    assert_eq!(e[2].before["password_hash"], hash1);
    assert_ne!(e[2].before["password_hash"], e[2].after["password_hash"]);
    // Unchanged, it hashes the same in before and after.
    assert_eq!(e[3].before["password_hash"], e[3].after["password_hash"]);
    assert_eq!(e[4].before["ssn"], ssn2);
    assert_eq!(
        e[6].before,
        json!({"id": 2, "name": "Bob", "password_hash": null, "ssn": ssn1})
    );
}

/// A redacted key column is hashed in primary_key, and row history still works on it.
async fn a_redacted_key_is_hashed(store: &Client, h: &Hashes) {
    let token1 = h.token1.clone();
    let t = row_entries(store, "api_tokens").await;
    let keys: Vec<&Value> = t.iter().map(|e| &e.primary_key).collect();
    assert_eq!(
        keys,
        [&json!({"token": token1}); 3],
        "a redacted key column is hashed in primary_key, the same each time"
    );
    assert_eq!(t[1].changed_columns, json!(["owner"]));
    assert_eq!(t[1].before, json!({"token": token1, "owner": 1}));
    // Row history still works on the hashed key: all three entries share one row_key.
    let row_keys = query_count(
        store,
        "SELECT count(DISTINCT row_key) FROM pgtrail.entries WHERE table_name = 'api_tokens' AND action <> 'DDL' AND row_key IS NOT NULL",
    )
    .await;
    assert_eq!(row_keys, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_and_redacted_columns_never_reach_the_store() {
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("redact.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let env = start_with_column_rules(&key_file).await;
    let src = env.source_with("CREATE TABLE users (id int PRIMARY KEY, name text, password_hash text, ssn text, last_seen_at timestamptz);
         CREATE TABLE api_tokens (token text PRIMARY KEY, owner int);
         CREATE TABLE people (id int PRIMARY KEY, ssn text);").await;
    env.setup().await;
    let mut daemon = env.spawn();
    write_changes(&src).await;
    env.sync().await;
    let store = env.store().await;

    assert_counts(&store, "public", "users", Counts::new(2, 4, 1, 0)).await;
    assert_counts(&store, "public", "api_tokens", Counts::new(1, 1, 1, 0)).await;
    assert_counts(&store, "public", "people", Counts::new(1, 0, 0, 0)).await;
    nothing_raw_in_the_store(&store).await;
    let hashes = Hashes::compute(&env).await;
    users_are_stored_redacted(&store, &hashes).await;
    a_redacted_key_is_hashed(&store, &hashes).await;
    assert_store_matches_source(&src, &store, "public", "people").await;
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacting_without_a_key_refuses_to_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgtrail.toml");
    std::fs::write(
        &path,
        "[source]\nurl = \"postgres://postgres@127.0.0.1:1/app\"\n\n[capture]\ntables = [\"public.*\"]\n\n\
         [[capture.columns]]\ntable = \"public.users\"\nredact = [\"ssn\"]\n",
    )
    .unwrap();
    let args: Vec<OsString> = vec!["--config".into(), path.clone().into(), "status".into()];
    let out = run_pgtrail(&args, &[], Duration::from_secs(30)).await;
    out.assert_clean_failure(
        &[
            "capture.redact_key",
            "public.users",
            &path.display().to_string(),
        ],
        Duration::from_secs(10),
    );

    std::fs::write(
        &path,
        "[source]\nurl = \"postgres://postgres@127.0.0.1:1/app\"\n\n[capture]\nredact_key_file = \"/nonexistent/redact.key\"\n",
    )
    .unwrap();
    let out = run_pgtrail(&args, &[], Duration::from_secs(30)).await;
    out.assert_clean_failure(
        &["capture.redact_key_file", "/nonexistent/redact.key"],
        Duration::from_secs(10),
    );
}

/// Undecodable records keep no value the rules would remove: a record of a partition is judged
/// by its root's rules (redact and ignore), a table with ignore rules only withholds too, and
/// a table without rules is kept whole. The source database is SQL_ASCII, whose text may hold
/// bytes that are not UTF-8; wal2json passes them on as they are, so a row with one is not
/// valid JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_of_partitions_and_ignore_only_tables_keep_no_ruled_value() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = "redact_key = \"it-redact-key-7e1a\"\n\n\
             [[capture.columns]]\ntable = \"public.accounts\"\nignore = [\"note\"]\nredact = [\"ssn\"]\n\n\
             [[capture.columns]]\ntable = \"public.notes\"\nignore = [\"body\"]\n"
            .into()
    })
    .await;
    let postgres = env.cluster.client("postgres").await;
    for sql in [
        "DROP DATABASE app",
        "CREATE DATABASE app ENCODING 'SQL_ASCII' TEMPLATE template0",
    ] {
        postgres
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    create_marker_table(&env.source().await).await;
    let src = env
        .source_with(
            "CREATE TABLE accounts (id int, region text, ssn text, note text, memo text,
                                PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE accounts_eu PARTITION OF accounts FOR VALUES IN ('eu');
         CREATE TABLE notes (id int PRIMARY KEY, body text, memo text);
         CREATE TABLE people (id int PRIMARY KEY, ssn text, memo text);",
        )
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    for sql in [
        r"INSERT INTO accounts VALUES (1, 'eu', 'secret-ssn-1', 'secret-note-1', E'\xff')",
        r"INSERT INTO notes VALUES (1, 'secret-body-1', E'\xff')",
        r"INSERT INTO people VALUES (1, 'plain-ssn-1', E'\xff')",
    ] {
        src.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    env.sync().await;
    let store = env.store().await;
    let kept: Vec<String> = query_column(
        &store,
        "SELECT record FROM pgtrail.decode_errors ORDER BY lsn",
        &[],
    )
    .await;
    assert_eq!(kept.len(), 3, "one undecodable record per row: {kept:#?}");
    assert!(
        kept[0].starts_with("(withheld:")
            && kept[0].contains("public.accounts_eu (a partition of public.accounts)"),
        "{}",
        kept[0]
    );
    assert!(
        kept[1].starts_with("(withheld:") && kept[1].contains("public.notes"),
        "{}",
        kept[1]
    );
    assert!(kept[2].contains("plain-ssn-1"), "{}", kept[2]);
    let hits = store_rows_containing(&store, "secret").await;
    assert!(hits.is_empty(), "a ruled value is in the store: {hits:?}");
    daemon.terminate().await;
}
