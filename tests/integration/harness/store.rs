//! Reading the audit store: [`Entry`] (one row of `pgtrail.entries`, JSON columns parsed and kept
//! as text), the entries of the store or of one table, and exact per-action [`Counts`]; and, for
//! the upgrade tests, a store as an earlier pgtrail left it ([`old_store_schema`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use pgtrail::export::ENTRY_COLUMNS;

use super::{query_pairs, Row};

/// One row of `pgtrail.entries`. JSON columns are parsed (SQL NULL → `Value::Null`) and also
/// kept as the exact text the store holds (`*_text`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub committed_at: DateTime<Utc>,
    pub xid: i64,
    pub lsn: String,
    pub schema: String,
    pub table: String,
    pub action: String,
    pub primary_key: Value,
    pub before: Value,
    pub after: Value,
    pub changed_columns: Value,
    pub context: Value,
    pub details: Value,
    pub primary_key_text: Option<String>,
    pub before_text: Option<String>,
    pub after_text: Option<String>,
}

impl Entry {
    /// `primary_key.<col>` as an i64 (panics if absent).
    pub fn key_i64(&self, col: &str) -> i64 {
        self.primary_key
            .get(col)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("entry {} has no integer key {col}: {self:?}", self.id))
    }
}

fn parse_json_col(text: Option<String>, what: &str, id: i64) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(&t)
            .unwrap_or_else(|e| panic!("entry {id}: {what} is not JSON ({e}): {t}")),
    }
}

fn entry_from_row(row: &tokio_postgres::Row) -> Entry {
    let r = Row::from_row(row);
    let id = r.id;
    let [pk, before, after, changed_columns, context, details] = r.json;
    Entry {
        id,
        committed_at: r.committed_at,
        xid: r
            .xid
            .unwrap_or_else(|| panic!("entry {id} has no xid: one of pgtrail's own events")),
        lsn: r
            .lsn
            .unwrap_or_else(|| panic!("entry {id} has no lsn: one of pgtrail's own events")),
        schema: r.schema,
        table: r.table,
        action: r.action,
        primary_key: parse_json_col(pk.clone(), "primary_key", id),
        before: parse_json_col(before.clone(), "before", id),
        after: parse_json_col(after.clone(), "after", id),
        changed_columns: parse_json_col(changed_columns, "changed_columns", id),
        context: parse_json_col(context, "context", id),
        details: parse_json_col(details, "details", id),
        primary_key_text: pk,
        before_text: before,
        after_text: after,
    }
}

/// Every entry, ordered by id.
pub async fn entries(store: &Client) -> Vec<Entry> {
    let rows = store
        .query(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries ORDER BY id"),
            &[],
        )
        .await
        .expect("read entries");
    rows.iter().map(entry_from_row).collect()
}

/// The entries of one table, ordered by id.
pub async fn table_entries(store: &Client, schema: &str, table: &str) -> Vec<Entry> {
    source_table_entries(store, None, schema, table).await
}

/// SQL for "of the source named `$3`" over `pgtrail.entries` (`$3` null: of every source).
/// Callers check the name with [`known_source`] first: an unknown one would match nothing.
const OF_SOURCE: &str =
    "($3::text IS NULL OR source = (SELECT id FROM pgtrail.sources WHERE name = $3))";

/// Fails the test when `source` names no source of the store: a misspelt name must not read
/// as a source with no entries.
async fn known_source(store: &Client, source: Option<&str>) {
    let Some(name) = source else {
        return;
    };
    let known: bool = store
        .query_one(
            "SELECT EXISTS (SELECT FROM pgtrail.sources WHERE name = $1)",
            &[&name],
        )
        .await
        .expect("read pgtrail.sources")
        .get(0);
    assert!(known, "the store has no source named {name:?}");
}

/// The entries of one table from the source named `source` (`None`: from every source),
/// ordered by id.
pub async fn source_table_entries(
    store: &Client,
    source: Option<&str>,
    schema: &str,
    table: &str,
) -> Vec<Entry> {
    known_source(store, source).await;
    let rows = store
        .query(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE schema_name = $1 AND table_name = $2 AND {OF_SOURCE} ORDER BY id"),
            &[&schema, &table, &source],
        )
        .await
        .expect("read entries");
    rows.iter().map(entry_from_row).collect()
}

/// Number of entries per action for one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub truncates: i64,
}

impl Counts {
    pub fn new(inserts: i64, updates: i64, deletes: i64, truncates: i64) -> Counts {
        Counts {
            inserts,
            updates,
            deletes,
            truncates,
        }
    }

    pub fn total(&self) -> i64 {
        self.inserts + self.updates + self.deletes + self.truncates
    }
}

pub async fn counts(store: &Client, schema: &str, table: &str) -> Counts {
    source_counts(store, None, schema, table).await
}

/// [`counts`] of the entries from the source named `source` (`None`: from every source).
pub async fn source_counts(
    store: &Client,
    source: Option<&str>,
    schema: &str,
    table: &str,
) -> Counts {
    known_source(store, source).await;
    let rows = store
        .query(
            // Row changes only: DDL entries are counted by the tests about DDL.
            &format!("SELECT action, count(*) FROM pgtrail.entries WHERE schema_name = $1 AND table_name = $2 AND action <> 'DDL' AND {OF_SOURCE} GROUP BY action"),
            &[&schema, &table, &source],
        )
        .await
        .expect("count entries");
    let mut c = Counts::default();
    for r in rows {
        let n: i64 = r.get(1);
        match r.get::<_, &str>(0) {
            "INSERT" => c.inserts = n,
            "UPDATE" => c.updates = n,
            "DELETE" => c.deletes = n,
            "TRUNCATE" => c.truncates = n,
            other => panic!("unexpected action {other:?}"),
        }
    }
    c
}

pub async fn assert_counts(store: &Client, schema: &str, table: &str, expected: Counts) {
    assert_source_counts(store, None, schema, table, expected).await;
}

/// [`assert_counts`] of the entries from the source named `source` (`None`: every source).
pub async fn assert_source_counts(
    store: &Client,
    source: Option<&str>,
    schema: &str,
    table: &str,
    expected: Counts,
) {
    let got = source_counts(store, source, schema, table).await;
    assert_eq!(
        got, expected,
        "entry counts for {schema}.{table} of source {source:?} (got left, expected right)"
    );
}

/// Total number of entries in the store.
pub async fn entry_count(store: &Client) -> i64 {
    store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0)
}

/// (schema, table) pairs that have entries, sorted.
pub async fn captured_tables(store: &Client) -> Vec<(String, String)> {
    query_pairs(
        store,
        "SELECT DISTINCT schema_name, table_name FROM pgtrail.entries ORDER BY 1, 2",
        &[],
    )
    .await
}

/// A store as an earlier pgtrail left it: the schema of the shipped migrations before `below`,
/// applied and recorded as `setup` did (migration 15 names the first source "app").
pub async fn old_store_schema(store: &Client, below: i32) {
    store
        .batch_execute(
            "CREATE SCHEMA pgtrail; CREATE TABLE pgtrail.schema_migrations \
             (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
             SELECT set_config('pgtrail.first_source', 'app', false);",
        )
        .await
        .unwrap();
    let migrations = pgtrail::store::migrations::MIGRATIONS;
    for (version, name, sql) in migrations.iter().filter(|m| m.0 < below) {
        store.batch_execute(sql).await.unwrap();
        store
            .execute(
                "INSERT INTO pgtrail.schema_migrations VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .unwrap();
    }
}

/// The start of an upgrade test: a source with `t (id int PRIMARY KEY, v int)` and pgtrail's slot
/// (made by hand, as an earlier setup did), and an empty store database. The source, the store,
/// and the slot's starting LSN, for the old store's checkpoint.
pub async fn before_an_old_store(env: &super::TestEnv) -> (Client, Client, String) {
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await;
    let slot_lsn: String = super::query_value(
        &src,
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json')",
        &[&super::SLOT],
    )
    .await;
    env.cluster.create_db("pgtrail").await;
    let store = env.store().await;
    (src, store, slot_lsn)
}

/// `pgtrail run` against a store it must refuse: it ends within a minute with `code`, its log
/// naming `pgtrail setup` and holding `needle`.
pub async fn refused_by_run(env: &super::TestEnv, code: i32, needle: &str) {
    let mut refused = env.spawn();
    super::wait_until(
        "the daemon to refuse the store",
        std::time::Duration::from_secs(60),
        || {
            let exited = refused.try_exit().is_some();
            async move { exited }
        },
    )
    .await;
    let log = refused.log();
    assert_eq!(refused.try_exit().unwrap().code(), Some(code), "{log}");
    assert!(
        log.contains(needle) && log.contains("run `pgtrail setup`"),
        "{log}"
    );
}
