//! `[store]`: the database the audit entries go to; by default the database
//! "pgtrail" on the source's server.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::pg::PgUrl;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<String>,
}

/// `[store]`, validated against the source it must not be.
pub(super) fn store(raw: &RawStore, source: &PgUrl, path: &Path) -> Result<PgUrl, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let store = match &raw.url {
        Some(url) => PgUrl::parse(url).map_err(|m| invalid("store.url", m))?,
        None => source.with_dbname("pgtrail"),
    };
    if store.dbname() == source.dbname() && store.endpoint() == source.endpoint() {
        return Err(invalid(
            "store.url",
            "the store must be another database than the source, or pgtrail would audit its own writes; \
             remove store.url to use the database \"pgtrail\" on the source's server"
                .into(),
        ));
    }
    Ok(store)
}
