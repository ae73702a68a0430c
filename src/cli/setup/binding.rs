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
        refuse_the_sources_own(store, &found).await?;
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
        None if rebind => nothing(format!(
            "the source {:?} is not bound to a database in this store yet (setup binds it to {found})",
            name.as_str()
        )),
        _ => Ok(()),
    }
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
/// role that may not call `pg_control_system()` cannot tell: the check is
/// skipped, with a warning.
async fn refuse_the_sources_own(store: &Client, source: &SourceServer) -> Result<()> {
    let may: bool = store
        .query_one(
            "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')",
            &[],
        )
        .await?
        .get(0);
    if !may {
        tracing::warn!(
            "cannot tell whether store.url reaches the source's own database: the store's role may not call \
             pg_control_system(); make sure it names another database than source.url"
        );
        return Ok(());
    }
    let here = SourceServer::of(store).await?;
    if here.same_database(source) {
        bail!(
            "store.url reaches the source's own database ({here}) through another address than source.url: \
             the store must be another database than the source, or pgtrail would audit its own writes. \
             Name another database in store.url (a new one is created by setup), or remove store.url to use \
             the database \"pgtrail\" on the source's server"
        );
    }
    Ok(())
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
