//! The source database, over an ordinary connection: the checks that must
//! hold before capture can work (wal_level, privileges, wal2json, the slot)
//! and the catalog lookups that resolve capture patterns to tables.

use std::time::Duration;

use tokio_postgres::Client;

use crate::capture::partition::{Member, PartitionMap};
use crate::capture::signature::MessageKey;
use crate::pg::Lsn;
use crate::pg::{PgUrl, SlotName};
use crate::table::{TableFilter, TableName};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to the source database at {endpoint} (database {dbname:?}): {reason}; check that PostgreSQL runs there and that source.url is right")]
    Connect {
        endpoint: String,
        dbname: String,
        reason: String,
        /// The server's SQLSTATE, when it answered (`28P01`: wrong password).
        code: Option<String>,
    },
    #[error("wal_level is {0:?} on the source server, but logical decoding needs wal_level = logical; run ALTER SYSTEM SET wal_level = logical; on the source and restart PostgreSQL")]
    WalLevel(String),
    #[error("the role {0:?} may not use replication; run ALTER ROLE {0} REPLICATION; as a superuser, or use a role that has it")]
    NoReplicationPrivilege(String),
    #[error("the wal2json output plugin is not installed on the source server ({0}); install it (on Debian: apt-get install postgresql-15-wal2json) and run `pgtrail setup` again")]
    Wal2jsonMissing(String),
    #[error(
        "the replication slot {0:?} does not exist on the source; run `pgtrail setup` to create it"
    )]
    SlotMissing(String),
    #[error("the replication slot {slot:?} uses the output plugin {plugin:?}, not wal2json; drop it (SELECT pg_drop_replication_slot('{slot}')) or choose another source.slot")]
    WrongPlugin { slot: String, plugin: String },
    #[error("the replication slot {slot:?} belongs to the database {database:?} on the source's server, not to the one source.url reaches, {here:?} (a slot belongs to one database); if another source captures {database:?} through it, give this config a source.slot of its own (two databases on one server need different slot names); if nothing uses it any more, drop it on the source's server (in any database): SELECT pg_drop_replication_slot('{slot}')")]
    SlotOfAnotherDatabase {
        slot: String,
        database: String,
        here: String,
    },
    #[error("the replication slot {slot:?} is in use by another process (PID {pid}); stop that consumer (or another pgtrail) first, or choose another source.slot")]
    SlotInUse { slot: String, pid: i32 },
    #[error("no table in the source database matches capture.tables {patterns}; check the patterns (schema.table, case-sensitive) or create the tables first")]
    NoTables { patterns: String },
    #[error("the source has no pgtrail.message_key, which signs pgtrail's messages; run `pgtrail setup` (this version of pgtrail acts only on signed messages)")]
    NoMessageKey,
    #[error("the role {role:?} may not read pgtrail.message_key, the key that signs pgtrail's messages, to copy it into the store: run `pgtrail setup` as the role that first ran it (the key's owner) or as a superuser")]
    MessageKeyDenied { role: String },
    #[error(transparent)]
    MalformedKey(#[from] crate::capture::signature::MalformedKey),
    #[error("source query failed: {0}")]
    Query(String),
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(e: tokio_postgres::Error) -> Self {
        SourceError::Query(crate::pg::describe(&e))
    }
}

pub async fn connect(url: &PgUrl) -> Result<Client, SourceError> {
    crate::pg::connect(url, "pgtrail")
        .await
        .map_err(|e| SourceError::Connect {
            endpoint: url.endpoint(),
            dbname: url.dbname().to_owned(),
            reason: crate::pg::describe(&e),
            code: crate::pg::sqlstate(&e),
        })
}

/// The key pgtrail's source functions sign their messages with
/// (sql/source/context.sql), for setup to copy into the store. Never logged.
pub async fn message_key(client: &Client) -> Result<MessageKey, SourceError> {
    let query = "SELECT inner_pad, outer_pad FROM pgtrail.message_key";
    let row = match client.query_opt(query, &[]).await {
        Ok(row) => row.ok_or(SourceError::NoMessageKey)?,
        Err(e) => {
            return Err(match e.as_db_error().map(|d| d.code().code()) {
                // undefined_table, invalid_schema_name
                Some("42P01" | "3F000") => SourceError::NoMessageKey,
                Some("42501") => SourceError::MessageKeyDenied {
                    role: client
                        .query_one("SELECT current_user::text", &[])
                        .await?
                        .get(0),
                },
                _ => e.into(),
            });
        }
    };
    let inner: Vec<u8> = row.try_get(0)?;
    let outer: Vec<u8> = row.try_get(1)?;
    Ok(MessageKey::from_pads(&inner, &outer)?)
}

/// wal_level must be logical and the role must be allowed to replicate.
pub async fn check_server(client: &Client) -> Result<(), SourceError> {
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal_level != "logical" {
        return Err(SourceError::WalLevel(wal_level));
    }
    let row = client
        .query_one("SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await?;
    if !row.get::<_, bool>(1) {
        return Err(SourceError::NoReplicationPrivilege(row.get(0)));
    }
    Ok(())
}

/// A table of the source as the catalog describes it.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    pub name: TableName,
    /// `d` default, `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
    pub partitioned: bool,
    /// Primary key columns in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// The pgtrail context trigger is installed on it.
    pub has_context_trigger: bool,
    /// Where it sits when it is a partition (of any level).
    pub partition_of: Option<Member>,
}

impl CatalogTable {
    /// The table whose name its entries carry: its root when it is a partition.
    pub fn entry_table(&self) -> &TableName {
        self.partition_of.as_ref().map_or(&self.name, |m| &m.root)
    }
}

/// Every ordinary and partitioned table outside the system schemas and pgtrail's own.
pub async fn catalog_tables(client: &Client) -> Result<Vec<CatalogTable>, SourceError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, c.relkind = 'p',
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                              FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord), pg_attribute a
                              WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid AND a.attnum = k.attnum),
                             '{}'::text[]),
                    EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgtrail_context'),
                    rn.nspname::text, r.relname::text, pn.nspname::text, p.relname::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_class r ON c.relispartition AND r.oid = pg_partition_root(c.oid)
             LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
             LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
             LEFT JOIN pg_class p ON p.oid = i.inhparent
             LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtrail')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CatalogTable {
            name: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            replica_identity: r.get::<_, String>(2).chars().next().unwrap_or('d'),
            partitioned: r.get(3),
            primary_key: r.get(4),
            has_context_trigger: r.get(5),
            partition_of: match (
                r.get::<_, Option<String>>(6),
                r.get::<_, Option<String>>(7),
                r.get::<_, Option<String>>(8),
                r.get::<_, Option<String>>(9),
            ) {
                (Some(rs), Some(rn), Some(ps), Some(pn)) => Some(Member {
                    root: TableName::new(rs, rn),
                    parent: TableName::new(ps, pn),
                }),
                _ => None,
            },
        })
        .collect())
}

/// Every partition of the source with its root and parent.
pub fn partition_map(tables: &[CatalogTable]) -> PartitionMap {
    PartitionMap::new(
        tables
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.partition_of.clone()?))),
    )
}

/// The tables the filter captures (a partition by its root's name); an error if there are none.
pub async fn captured_tables(
    client: &Client,
    filter: &TableFilter,
) -> Result<Vec<CatalogTable>, SourceError> {
    captured(catalog_tables(client).await?, filter)
}

/// [`captured_tables`] out of a catalog already read.
pub fn captured(
    tables: Vec<CatalogTable>,
    filter: &TableFilter,
) -> Result<Vec<CatalogTable>, SourceError> {
    let tables: Vec<CatalogTable> = tables
        .into_iter()
        .filter(|t| filter.matches(t.entry_table()))
        .collect();
    if tables.is_empty() {
        let patterns: Vec<&str> = filter.include.iter().map(|p| p.as_str()).collect();
        return Err(SourceError::NoTables {
            patterns: format!("{patterns:?}"),
        });
    }
    Ok(tables)
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
    /// The database a logical slot belongs to when that is not the
    /// connection's (a slot of the same name made for another database of
    /// the server); `None` for the connection's own.
    pub other_database: Option<String>,
}

pub async fn slot_info(client: &Client, slot: &SlotName) -> Result<Option<SlotInfo>, SourceError> {
    let row = client
        .query_opt(
            "SELECT coalesce(plugin::text, ''), active_pid, confirmed_flush_lsn::text, \
                    CASE WHEN datoid <> (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         THEN database::text END \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot.as_str()],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        active_pid: r.get(1),
        confirmed_flush: r.get::<_, Option<String>>(2).and_then(|s| s.parse().ok()),
        other_database: r.get(3),
    }))
}

/// Creates the slot with wal2json; returns its starting point.
pub async fn create_slot(client: &Client, slot: &SlotName) -> Result<Lsn, SourceError> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json')",
            &[&slot.as_str()],
        )
        .await
        .map_err(|e| wal2json_error(&e).unwrap_or_else(|| e.into()))?;
    row.get::<_, String>(0)
        .parse()
        .map_err(|e| SourceError::Query(format!("{e}")))
}

/// Makes the server load wal2json for an existing slot without consuming or
/// decoding anything new: a peek that stops at the slot's confirmed position.
pub async fn check_plugin_loads(
    client: &Client,
    slot: &SlotName,
    confirmed: Lsn,
) -> Result<(), SourceError> {
    client
        .execute(
            "SELECT 1 FROM pg_logical_slot_peek_changes($1, $2::text::pg_lsn, NULL, 'format-version', '2')",
            &[&slot.as_str(), &confirmed.to_string()],
        )
        .await
        .map_err(|e| wal2json_error(&e).unwrap_or_else(|| e.into()))?;
    Ok(())
}

/// The server's "could not access file "wal2json"" means the plugin is missing.
pub fn wal2json_error(e: &tokio_postgres::Error) -> Option<SourceError> {
    let db = e.as_db_error()?;
    (db.message().contains("wal2json") && db.code().code().starts_with("58"))
        .then(|| SourceError::Wal2jsonMissing(db.message().to_owned()))
}

/// Checks that the slot exists, is wal2json's and is free, waiting a little
/// for a walsender of ours that the server has not yet noticed is gone.
pub async fn check_slot(
    client: &Client,
    slot: &SlotName,
    wait: Duration,
) -> Result<SlotInfo, SourceError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let info = slot_info(client, slot)
            .await?
            .ok_or_else(|| SourceError::SlotMissing(slot.to_string()))?;
        if info.plugin != "wal2json" {
            return Err(SourceError::WrongPlugin {
                slot: slot.to_string(),
                plugin: info.plugin,
            });
        }
        match info.active_pid {
            None => return Ok(info),
            Some(pid) if tokio::time::Instant::now() >= deadline => {
                return Err(SourceError::SlotInUse {
                    slot: slot.to_string(),
                    pid,
                })
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// How often to send standby status updates: well inside wal_sender_timeout.
pub async fn status_interval(client: &Client) -> Duration {
    let timeout_ms: Option<i64> = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get(0));
    match timeout_ms {
        Some(ms) if ms > 0 => Duration::from_millis((ms as u64 / 4).clamp(200, 10_000)),
        _ => Duration::from_secs(10),
    }
}
