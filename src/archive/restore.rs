//! An archive loaded back into the store (`pgtrail restore FILE`), into the
//! partition retention dropped it from, for an investigation.
//!
//! One store transaction: the file's entries are streamed (read and checked
//! on a blocking thread ahead of the COPY, in bounded memory,
//! [`super::ahead`]) into a temporary table by binary COPY, then `pgtrail.restore_partition` (sql/store/0019_restore.sql)
//! checks them against what the store recorded when it dropped the range
//! (the partition's anchors and the chain around them), makes the partition
//! again, attaches it, holds it from retention and records the restore as an
//! event. Anything wrong rolls the whole transaction back: nothing is half
//! restored. The derived columns (`row_key`, `actor`, `client_addr`) are
//! computed here from the content, as capture computes them, never taken
//! from the file.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::ahead::{Ahead, ReadAhead};
use super::runs::hex_hash;
use super::{ArchiveError, Checked};
use crate::entry::row_key;
use crate::pg::describe;
use crate::store::context::ContextColumns;
use crate::store::retention::Retention;
use crate::table::TableName;
use crate::text::hex;

/// Where the archive's entries wait for `pgtrail.restore_partition`.
const TEMP_TABLE: &str = "CREATE TEMPORARY TABLE pgtrail_restore (
    id bigint, committed_at timestamptz, xid bigint, lsn text, schema_name text, table_name text,
    action text, primary_key text, before text, after text, changed_columns text, context text,
    details text, row_key bigint, actor text, client_addr inet, hash bytea, source smallint
) ON COMMIT DROP";

const COPY_SQL: &str = "COPY pg_temp.pgtrail_restore FROM STDIN (FORMAT binary)";

/// [`TEMP_TABLE`]'s column types, in order.
const TYPES: [Type; 18] = [
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INET,
    Type::BYTEA,
    Type::INT2,
];

/// A restore done.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub partition: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The source whose entries were restored.
    pub source: String,
    pub entries: u64,
    pub held_until: DateTime<Utc>,
    /// The `retention` event (`partition_restored`) that records it.
    pub event: i64,
    pub file: PathBuf,
    #[serde(serialize_with = "hex_hash")]
    pub sha256: [u8; 32],
    /// The file's name and SHA-256 are those of an archive a drop of the
    /// partition recorded (any of its drops, when it was dropped, restored
    /// and dropped again): it is the very file retention wrote.
    pub archive_recorded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The store refused the archive's entries (restore_partition's checks).
    #[error("{path}: {problem}; nothing was restored")]
    Refused { path: PathBuf, problem: String },
    #[error(
        "only the store's owner may restore an archive, and the store.url role {role} is not \
         ({owner} owns the store): run restore as the role `pgtrail setup` runs as, with a config whose \
         store.url logs in as it"
    )]
    NotOwner { role: String, owner: String },
    #[error("{} changed while it was read (SHA-256 {first}, then {second}); nothing was restored: restore a copy no one writes to", path.display())]
    Changed {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("the audit store: {0}; nothing was restored")]
    Store(String),
}

impl From<tokio_postgres::Error> for RestoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        RestoreError::Store(describe(&e))
    }
}

/// Restores the archive `checked` (read and checked already, on its own)
/// into the store, held from retention for `hold`; `actor` is who asked
/// (the OS user), recorded in the event. `identity` decrypts an encrypted
/// archive; a record longer than `max_line` is refused, as by the check.
pub async fn restore(
    client: &mut Client,
    checked: &Checked,
    identity: Option<PathBuf>,
    max_line: u64,
    hold: Retention,
    actor: Option<String>,
) -> Result<Restored, RestoreError> {
    owner_only(client).await?;
    let tx = client.transaction().await?;
    tx.batch_execute(TEMP_TABLE).await?;
    let source = checked.header.source_id;
    let mut ahead = ReadAhead::start(
        checked.path.clone(),
        identity,
        max_line,
        checked.header.source.clone(),
    );
    let copied = copy_in(&tx, &mut ahead.entries, source).await;
    // A COPY that failed stops the reader at its next entry.
    let read = ahead
        .finish()
        .await
        .map_err(|e| RestoreError::Store(format!("the archive's reader stopped: {e}")))?;
    copied?;
    let again = read?;
    if again.sha256 != checked.sha256 {
        return Err(RestoreError::Changed {
            path: checked.path.clone(),
            first: hex(&checked.sha256),
            second: hex(&again.sha256),
        });
    }
    let event = load(&tx, checked, hold, actor).await?;
    let row = tx
        .query_one(
            "SELECT p.name, p.from_at, p.to_at, p.held_until, \
                    coalesce((e.details->>'archive_recorded')::boolean, false) \
             FROM pgtrail.partitions p JOIN pgtrail.entries e ON e.id = p.restore_event \
             WHERE p.restore_event = $1",
            &[&event],
        )
        .await?;
    let restored = Restored {
        partition: row.get(0),
        from: row.get(1),
        to: row.get(2),
        source: checked.header.source.clone(),
        entries: checked.entries,
        held_until: row.get(3),
        event,
        file: checked.path.clone(),
        sha256: checked.sha256,
        archive_recorded: row.get(4),
    };
    tx.commit().await?;
    Ok(restored)
}

/// Refuses, before anything is read, a role that is not the store's owner
/// (`restore_partition` is the owner's alone).
async fn owner_only(client: &Client) -> Result<(), RestoreError> {
    let row = client
        .query_one(
            "SELECT current_user::text, pg_get_userbyid(c.relowner)::text, \
                    pg_has_role(current_user, c.relowner, 'USAGE') \
             FROM pg_class c WHERE c.oid = 'pgtrail.entries'::regclass",
            &[],
        )
        .await?;
    if row.get::<_, bool>(2) {
        return Ok(());
    }
    Err(RestoreError::NotOwner {
        role: row.get(0),
        owner: row.get(1),
    })
}

/// Streams the entries the reader sends into the temporary table.
async fn copy_in(
    tx: &Transaction<'_>,
    entries: &mut mpsc::Receiver<Ahead>,
    source: i16,
) -> Result<u64, RestoreError> {
    let sink = tx.copy_in(COPY_SQL).await?;
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    pin_mut!(writer);
    // Each entry's share of the read-ahead is given back once it is copied.
    while let Some((archived, _share)) = entries.recv().await {
        let e = &archived.entry;
        let cols = ContextColumns::of(e.context().unwrap_or_default());
        // As capture derives it; pgtrail's own events have none.
        let key = match (e.primary_key(), e.action.as_str()) {
            (_, "EVENT") | (None, _) => None,
            (Some(pk), _) => Some(row_key(&TableName::new(&e.schema, &e.table), pk)),
        };
        let hash = archived.hash.map(|h| h.to_vec());
        let row: [&(dyn ToSql + Sync); 18] = [
            &e.id,
            &e.committed_at,
            &e.xid,
            &e.lsn,
            &e.schema,
            &e.table,
            &e.action,
            &e.json[0],
            &e.json[1],
            &e.json[2],
            &e.json[3],
            &e.json[4],
            &e.json[5],
            &key,
            &cols.actor,
            &cols.client_addr,
            &hash,
            &source,
        ];
        writer.as_mut().write(&row).await?;
    }
    Ok(writer.finish().await?)
}

/// `pgtrail.restore_partition`: the checks, the partition, the event.
async fn load(
    tx: &Transaction<'_>,
    checked: &Checked,
    hold: Retention,
    actor: Option<String>,
) -> Result<i64, RestoreError> {
    let file = checked
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let archive = serde_json::json!({
        "file": file,
        "sha256": hex(&checked.sha256),
        "bytes": checked.bytes,
        "entries": checked.entries,
        "encrypted": checked.encrypted,
    })
    .to_string();
    let h = &checked.header;
    tx.query_one(
        "SELECT pgtrail.restore_partition($1, $2, $3, $4, $5::text::json, $6::text::interval, $7)",
        &[
            &h.source_id,
            &h.source,
            &h.from,
            &h.to,
            &archive,
            &hold.interval(),
            &actor,
        ],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| refused(&checked.path, &e))
}

/// The store's refusal of the archive (its checks raise, SQLSTATE P0001, or
/// a constraint holds, class 23), told from a store that failed.
fn refused(path: &std::path::Path, e: &tokio_postgres::Error) -> RestoreError {
    match e.code().map(|c| c.code()) {
        Some(code) if code == "P0001" || code.starts_with("23") => RestoreError::Refused {
            path: path.to_owned(),
            problem: describe(e),
        },
        _ => RestoreError::Store(describe(e)),
    }
}
