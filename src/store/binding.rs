//! Which database a source is (`sql/store/0017_source_identity.sql`). A
//! `[source] name` is only a name: two databases given the same one would
//! share a checkpoint, a chain and a message key. So each source is bound to
//! the database it was first set up or captured from ([`SourceServer`]: the
//! cluster's system identifier and the database's OID), and a name that
//! reaches another database is refused ([`Mismatch`]) by `setup` and by the
//! daemon, until `pgtrail setup --rebind-source` moves it.

use std::fmt;

use tokio_postgres::{Client, GenericClient, Transaction};

use super::events::{self, Category, OwnEvent};
use super::sources::{SourceId, SourceName};
use super::StoreError;

/// A database as PostgreSQL identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceServer {
    /// `pg_control_system().system_identifier`, as the unsigned number that
    /// `IDENTIFY_SYSTEM` and `pg_controldata` print: the same for a cluster
    /// and its physical copies (standbys, base backups), new for an `initdb`.
    pub system_identifier: String,
    pub database_oid: u32,
    /// For messages only: a renamed database keeps its OID.
    pub database: String,
}

impl SourceServer {
    /// The server and database `client` is connected to (any role may ask).
    pub async fn of(client: &Client) -> Result<SourceServer, tokio_postgres::Error> {
        let row = client
            .query_one(
                "SELECT s.system_identifier, d.oid, d.datname::text \
                 FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()",
                &[],
            )
            .await?;
        let system: i64 = row.try_get(0)?;
        Ok(SourceServer {
            // PostgreSQL keeps it as a uint64 and shows it signed in SQL.
            system_identifier: (system as u64).to_string(),
            database_oid: row.try_get(1)?,
            database: row.try_get(2)?,
        })
    }

    /// Whether `other` is the same database (its name may have changed).
    pub fn same_database(&self, other: &SourceServer) -> bool {
        self.same_server(other) && self.database_oid == other.database_oid
    }

    /// Whether `other` is on the same server (or a physical copy of it): a
    /// database restored there, or another one of it, has only another OID.
    pub fn same_server(&self, other: &SourceServer) -> bool {
        self.system_identifier == other.system_identifier
    }
}

impl fmt::Display for SourceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database {:?} (OID {}) on the server with system identifier {}",
            self.database, self.database_oid, self.system_identifier
        )
    }
}

/// A source name that reaches another database than the one it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    /// What the store has bound the name to.
    pub bound: SourceServer,
    /// What `source.url` reaches now.
    pub found: SourceServer,
}

impl Mismatch {
    /// What differs, in words.
    fn difference(&self) -> &'static str {
        if !self.bound.same_server(&self.found) {
            "another PostgreSQL server (its system identifier differs: another cluster, not a copy of the bound one)"
        } else {
            "another database on the same server (its OID differs)"
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the source {:?} is bound in this store to {}, but source.url reaches {}: {}. \
             If this is another database, give it a [source] name of its own in this config (every database \
             captured into one store needs its own name) and run `pgtrail setup`. If it is the same database, \
             moved to a replaced server or restored from a dump (which gives it a new OID), run \
             `pgtrail setup --rebind-source` to bind the name to it \
             (docs/operations.md, \"Moving a source to another server or database\")",
            self.name,
            self.bound,
            self.found,
            self.difference()
        )
    }
}

/// What the store has bound source `id` to; `None` while unbound.
pub async fn bound(
    client: &impl GenericClient,
    id: SourceId,
) -> Result<Option<SourceServer>, StoreError> {
    let row = client
        .query_opt(
            "SELECT system_identifier, database_oid, database_name FROM pgtrail.sources \
             WHERE id = $1 AND system_identifier IS NOT NULL",
            &[&id.0],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let oid: i64 = row.try_get(1)?;
    Ok(Some(SourceServer {
        system_identifier: row.try_get(0)?,
        // The column's check keeps it within an OID's range.
        database_oid: u32::try_from(oid).unwrap_or_default(),
        database: row.try_get(2)?,
    }))
}

/// Checks that `found` is the database source `id` is bound to, binding an
/// unbound source to it first (the daemon's right, through
/// `pgtrail.bind_source`). Returns whether it bound it now.
pub async fn bind_or_check(
    client: &Client,
    (id, name): (SourceId, &SourceName),
    found: &SourceServer,
) -> Result<bool, StoreError> {
    let newly = match bound(client, id).await? {
        Some(_) => false,
        None => {
            client
                .execute(
                    "SELECT pgtrail.bind_source($1, $2, $3, $4)",
                    &[
                        &id.0,
                        &found.system_identifier,
                        &i64::from(found.database_oid),
                        &found.database,
                    ],
                )
                .await?;
            true
        }
    };
    // Read back: a daemon of another database may have bound it first.
    match bound(client, id).await? {
        Some(bound) if bound.same_database(found) => Ok(newly),
        Some(bound) => Err(StoreError::WrongSource(Box::new(Mismatch {
            name: name.to_string(),
            bound,
            found: found.clone(),
        }))),
        None => Err(StoreError::NotSetUp {
            dbname: "pgtrail".into(),
            reason: format!(
                "the source {:?} could not be bound to its database",
                name.as_str()
            ),
        }),
    }
}

/// Registers `name` (an existing one keeps its id) with its chain head,
/// bound to the database `server` ([`settle`]: a name bound to
/// another database is refused unless `rebind_by` names who moves it);
/// returns its id and what came of the binding. Run by `setup`, as the
/// store's owner, in a transaction it commits once it has done what a
/// rebind calls for (see `cli::setup::moved`).
pub async fn register(
    tx: &Transaction<'_>,
    name: &SourceName,
    server: &SourceServer,
    rebind_by: Option<String>,
) -> Result<(SourceId, Settled), StoreError> {
    // Setups of two sources at once must not take the same id.
    tx.batch_execute("LOCK TABLE pgtrail.sources IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    let id: i16 = match tx
        .query_opt(
            "SELECT id FROM pgtrail.sources WHERE name = $1",
            &[&name.as_str()],
        )
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => tx
            .query_one(
                "INSERT INTO pgtrail.sources (id, name) \
                 SELECT coalesce(max(id), 0) + 1, $1 FROM pgtrail.sources RETURNING id",
                &[&name.as_str()],
            )
            .await?
            .try_get(0)?,
    };
    tx.execute(
        "INSERT INTO pgtrail.chain_heads (source, hash) VALUES ($1, decode(repeat('00', 32), 'hex')) \
         ON CONFLICT (source) DO NOTHING",
        &[&id],
    )
    .await?;
    let settled = settle(tx, (SourceId(id), name), server, rebind_by).await?;
    Ok((SourceId(id), settled))
}

/// What `setup` found of a source's binding, and did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Bound now: the source is new, or was registered before sources had a binding.
    BoundNow,
    /// Already bound to this database (its name updated if it was renamed).
    Same,
    /// Moved from the database it was bound to (`--rebind-source`).
    Rebound { from: SourceServer },
}

/// Setup's side of [`bind_or_check`], as the store's owner inside the
/// transaction that registers source `id`: binds it to `found` when
/// unbound, and when bound to another database refuses, or with `rebind_by`
/// (who asked) moves the binding and records a `config` event saying so.
pub async fn settle(
    tx: &impl GenericClient,
    (id, name): (SourceId, &SourceName),
    found: &SourceServer,
    rebind_by: Option<String>,
) -> Result<Settled, StoreError> {
    let bound = bound(tx, id).await?;
    let settled = match (bound, rebind_by) {
        (None, _) => Settled::BoundNow,
        (Some(bound), _) if bound.same_database(found) => Settled::Same,
        (Some(bound), None) => {
            return Err(StoreError::WrongSource(Box::new(Mismatch {
                name: name.to_string(),
                bound,
                found: found.clone(),
            })))
        }
        (Some(from), Some(actor)) => {
            let side = |s: &SourceServer| {
                serde_json::json!({
                    "system_identifier": s.system_identifier,
                    "database_oid": s.database_oid,
                    "database": s.database,
                })
            };
            let event = OwnEvent::new(
                Category::Config,
                "source_rebound",
                "pgtrail setup",
                format!("source {name} rebound from {from} to {found}"),
            )
            .actor(actor)
            .detail("source", name.as_str())
            .detail("from", side(&from))
            .detail("to", side(found));
            events::record(tx, &event).await?;
            Settled::Rebound { from }
        }
    };
    tx.execute(
        "UPDATE pgtrail.sources SET system_identifier = $2, database_oid = $3, database_name = $4, \
             bound_at = CASE WHEN $5 THEN bound_at ELSE now() END \
         WHERE id = $1",
        &[
            &id.0,
            &found.system_identifier,
            &i64::from(found.database_oid),
            &found.database,
            &(settled == Settled::Same),
        ],
    )
    .await?;
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(system: &str, oid: u32, db: &str) -> SourceServer {
        SourceServer {
            system_identifier: system.into(),
            database_oid: oid,
            database: db.into(),
        }
    }

    #[test]
    fn a_mismatch_says_what_differs_and_both_ways_out() {
        let bound = server("7312", 16384, "shop");
        let renamed = server("7312", 16384, "shop_old");
        assert!(bound.same_database(&renamed));
        let other_server = Mismatch {
            name: "shop".into(),
            bound: bound.clone(),
            found: server("7399", 16384, "shop"),
        }
        .to_string();
        for part in [
            "bound in this store to database \"shop\" (OID 16384) on the server with system identifier 7312",
            "reaches database \"shop\" (OID 16384) on the server with system identifier 7399",
            "another PostgreSQL server",
            "a [source] name of its own",
            "pgtrail setup --rebind-source",
        ] {
            assert!(other_server.contains(part), "{part}: {other_server}");
        }
        let other_db = Mismatch {
            name: "shop".into(),
            bound,
            found: server("7312", 16390, "shop"),
        }
        .to_string();
        assert!(
            other_db.contains("another database on the same server"),
            "{other_db}"
        );
    }
}
