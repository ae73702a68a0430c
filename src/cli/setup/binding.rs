//! The checks `setup` makes before it changes anything, and `setup
//! --rebind-source`: `store.url` must not reach the source's own database,
//! and the config's `[source] name` must reach the database the store has
//! bound that name to (`src/store/binding.rs`). Another database under a
//! name already in use is refused here, before a slot is made or a trigger
//! installed on it, so that nothing of the source that holds the name
//! changes; the registration in the store checks again in its own
//! transaction.

use anyhow::{bail, Result};
use tokio_postgres::Client;

use crate::config::Config;
use crate::store::binding::{self, Mismatch, SourceServer};
use crate::store::{sources, StoreError};

/// Refuses a store in the source's own database, and a source name bound
/// to another database than `source.url` reaches, unless `rebind`; with
/// `rebind`, refuses when there is nothing to move (the name is new,
/// unbound, or bound to this very database).
pub async fn before_setup(config: &Config, rebind: bool) -> Result<()> {
    let source = crate::source::connect(&config.source).await?;
    let found = SourceServer::of(&source)
        .await
        .map_err(crate::source::SourceError::from)?;
    let name = &config.source_name;
    let store = store(config).await?;
    if let Some(store) = &store {
        refuse_the_sources_own(store, (&source, &found)).await?;
    }
    let bound = match &store {
        Some(store) => bound(store, config).await?,
        None => None,
    };
    let nothing = |why: String| -> Result<()> {
        bail!(
            "--rebind-source: {why}, so there is nothing to rebind; run `pgtrail setup` without --rebind-source"
        )
    };
    match bound {
        Some(bound) if !bound.same_database(&found) && !rebind => {
            Err(StoreError::WrongSource(Box::new(Mismatch {
                name: name.to_string(),
                bound,
                found,
            }))
            .into())
        }
        Some(bound) if bound.same_database(&found) && rebind => nothing(format!(
            "the source {:?} is already bound to {found}",
            name.as_str()
        )),
        Some(bound) if bound.same_server(&found) && rebind => {
            refuse_the_old_databases_slot(&source, config, (&bound, &found)).await
        }
        None if rebind => nothing(format!(
            "the source {:?} is not bound to a database in this store yet (setup binds it to {found})",
            name.as_str()
        )),
        _ => Ok(()),
    }
}

/// `--rebind-source` to another database on the same server: a slot of
/// `source.slot`'s name that is still the old database's cannot be the new
/// one's (a slot belongs to one database), and setup would fail on it with
/// the server's own words. Says which slot, whose, and how to drop it (the
/// procedure of docs/operations.md, "Moving a source to another server or
/// database"). Dropping it loses nothing the move does not record: the old
/// database's changes after the last one stored are the move's gap.
async fn refuse_the_old_databases_slot(
    source: &Client,
    config: &Config,
    (bound, found): (&SourceServer, &SourceServer),
) -> Result<()> {
    let slot = config.slot.as_str();
    let Some(row) = source
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND datoid = $2",
            &[&slot, &bound.database_oid],
        )
        .await?
    else {
        return Ok(());
    };
    let active: Option<i32> = row.try_get(0)?;
    let first = match active {
        Some(pid) => format!(
            "stop what reads it (the server's process {pid}: a pgtrail daemon still capturing the old database?), then "
        ),
        None => String::new(),
    };
    bail!(
        "--rebind-source: the replication slot {slot:?} on the source's server is still the old database's, {:?} \
         (OID {}): a slot belongs to one database, so it cannot capture {:?}, and it holds WAL while it exists. \
         {first}drop it on the source's server (in any database): SELECT pg_drop_replication_slot({}); \
         then run `pgtrail setup --rebind-source` again, which makes the new database's slot and records the \
         old database's changes after the last one stored as the move's gap \
         (docs/operations.md, \"Moving a source to another server or database\")",
        bound.database,
        bound.database_oid,
        found.database,
        crate::pg::quote_literal(slot)
    )
}

/// A connection to the store database; `None` when it does not exist yet.
async fn store(config: &Config) -> Result<Option<Client>> {
    match crate::pg::connect(&config.store, "pgtrail setup").await {
        Ok(client) => Ok(Some(client)),
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("3D000") => Ok(None),
        Err(e) => bail!(
            "cannot connect to the audit store at {} to read its sources: {}",
            config.store.endpoint(),
            crate::pg::describe(&e)
        ),
    }
}

/// Refuses a store that is the source's own database, `source` (pgtrail
/// would audit its own writes). The config refuses the same address and
/// database name; this catches the same database reached another way (the
/// server's Unix socket, a host name for its IP address, another port
/// forwarded to it), by what the server says, as the source's binding does:
/// its system identifier and the database's OID. (A promoted physical copy
/// of the source's server shares both with it: a store there is refused
/// too, and needs a database of another name, which costs nothing.) A store
/// role that may not call `pg_control_system()` is asked what any role may
/// read instead ([`Running`]).
async fn refuse_the_sources_own(
    store: &Client,
    (source, found): (&Client, &SourceServer),
) -> Result<()> {
    let row = store
        .query_one(
            "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'), \
                    has_function_privilege('pg_catalog.pg_postmaster_start_time()', 'EXECUTE')",
            &[],
        )
        .await?;
    let (control, start_time): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    if control {
        let here = SourceServer::of(store).await?;
        if here.same_database(found) {
            bail!(the_sources_own(&here.to_string()));
        }
    } else if start_time {
        // The store's first: see `Running` for why the order matters.
        let here = Running::of(store).await?;
        if here.same_database(&Running::of(source).await?) {
            bail!(the_sources_own(&here.to_string()));
        }
    } else {
        tracing::warn!(
            "cannot tell whether store.url reaches the source's own database: the store's role may call \
             neither pg_control_system() nor pg_postmaster_start_time(); make sure it names another \
             database than source.url"
        );
    }
    Ok(())
}

/// The refusal of a store in the source's own database, `database`.
fn the_sources_own(database: &str) -> String {
    format!(
        "store.url reaches the source's own database ({database}) through another address than source.url: \
         the store must be another database than the source, or pgtrail would audit its own writes. \
         Name another database in store.url (a new one is created by setup), or remove store.url to use \
         the database \"pgtrail\" on the source's server"
    )
}

/// A database told apart by what any role may read: the start time of its
/// server's postmaster, to the microsecond, and the database's OID.
///
/// Why this is sound. The same database gives the same reading on both
/// connections: a server has one postmaster, whose start time every backend
/// reports, and a database has one OID. The source's reading is taken after
/// the store's, on a connection opened before the store's: a restart of the
/// server in between would have ended it (a restart ends every backend), so
/// both readings are of one postmaster's life. Different databases give
/// different readings: two of one server have different OIDs, and two
/// servers would have to have started in the same microsecond and hold a
/// database of the same OID. Neither the port nor the address is compared:
/// they are what differs between two ways to one server. What this does not
/// refuse, unlike the system identifier, is a store on a promoted physical
/// copy of the source's server: another server, so not pgtrail's own writes.
#[derive(Debug)]
struct Running {
    /// In UTC, whatever the session's TimeZone and DateStyle.
    started: String,
    database_oid: u32,
    /// For messages only.
    database: String,
}

impl Running {
    async fn of(client: &Client) -> Result<Running, tokio_postgres::Error> {
        let row = client
            .query_one(
                "SELECT to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                        oid, datname::text \
                 FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        Ok(Running {
            started: row.try_get(0)?,
            database_oid: row.try_get(1)?,
            database: row.try_get(2)?,
        })
    }

    /// Whether `other` is the same database (its name may have changed).
    fn same_database(&self, other: &Running) -> bool {
        self.started == other.started && self.database_oid == other.database_oid
    }
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database {:?} (OID {}) on the server started at {} UTC",
            self.database, self.database_oid, self.started
        )
    }
}

/// What the store has bound the config's source name to; `None` when its
/// sources, the name or its binding do not exist yet.
async fn bound(client: &Client, config: &Config) -> Result<Option<SourceServer>> {
    // Before migration 17 no source is bound; setup binds them after it.
    let bindings: bool = client
        .query_one(
            "SELECT to_regprocedure('pgtrail.bind_source(smallint, text, bigint, text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !bindings {
        return Ok(None);
    }
    match sources::lookup(client, &config.source_name).await {
        Ok(id) => Ok(binding::bound(client, id).await?),
        Err(StoreError::NotSetUp { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
