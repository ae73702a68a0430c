//! The check `setup` makes before it changes anything, and `setup
//! --rebind-source`: the config's `[source] name` must reach the database
//! the store has bound that name to (`src/store/binding.rs`). Another
//! database under a name already in use is refused here, before a slot is
//! made or a trigger installed on it, so that nothing of the source that
//! holds the name changes; the registration in the store checks again in
//! its own transaction.

use anyhow::{bail, Result};

use crate::config::Config;
use crate::store::binding::{self, Mismatch, SourceServer};
use crate::store::{sources, StoreError};

/// Refuses a source name bound to another database than `source.url`
/// reaches, unless `rebind`; with `rebind`, refuses when there is nothing to
/// move (the name is new, unbound, or bound to this very database).
pub async fn before_setup(config: &Config, rebind: bool) -> Result<()> {
    let source = crate::source::connect(&config.source).await?;
    let found = SourceServer::of(&source)
        .await
        .map_err(crate::source::SourceError::from)?;
    let name = &config.source_name;
    let bound = bound(config).await?;
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

/// What the store has bound the config's source name to; `None` when the
/// store, its sources, the name or its binding do not exist yet.
async fn bound(config: &Config) -> Result<Option<SourceServer>> {
    let client = match crate::pg::connect(&config.store, "pgtrail setup").await {
        Ok(client) => client,
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("3D000") => return Ok(None),
        Err(e) => bail!(
            "cannot connect to the audit store at {} to read its sources: {}",
            config.store.endpoint(),
            crate::pg::describe(&e)
        ),
    };
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
    match sources::lookup(&client, &config.source_name).await {
        Ok(id) => Ok(binding::bound(&client, id).await?),
        Err(StoreError::NotSetUp { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
