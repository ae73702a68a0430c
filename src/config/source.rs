//! `[source]`: the database pgtrail audits, its name in the store, and the
//! replication slot it reads.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::pg::{PgUrl, SlotName};
use crate::store::SourceName;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    url: String,
    /// The source's name in the store; default: the database's name.
    name: Option<String>,
    #[serde(default = "default_slot")]
    slot: String,
    timeout_seconds: Option<u64>,
}

/// `source.timeout_seconds` when not set: how long the replication
/// connection may stay silent, a status update asking for an answer
/// included, before it is taken for dropped. Under the server's default
/// `wal_sender_timeout` (60 s), so pgtrail notices a dropped network first.
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

fn default_slot() -> String {
    "pgtrail".to_owned()
}

/// `[source]`, validated.
pub(super) struct Source {
    pub url: PgUrl,
    pub name: SourceName,
    pub slot: SlotName,
    pub timeout: std::time::Duration,
}

pub(super) fn source(raw: &RawSource, path: &Path) -> Result<Source, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let url = PgUrl::parse(&raw.url).map_err(|m| invalid("source.url", m))?;
    let name = match &raw.name {
        Some(name) => SourceName::parse(name).map_err(|m| invalid("source.name", m))?,
        // Every daemon of a fleet names its source: the database's name says
        // which it is, unless it cannot be a source name.
        None => SourceName::parse(url.dbname()).map_err(|m| {
            invalid(
                "source.name",
                format!(
                    "not set, and the source database's name cannot stand for it: {m}; \
                     set [source] name = \"…\" (it names this source in the store)"
                ),
            )
        })?,
    };
    let slot = SlotName::parse(&raw.slot).map_err(|m| invalid("source.slot", m))?;
    let timeout = super::seconds(raw.timeout_seconds, DEFAULT_TIMEOUT_SECONDS, 3)
        .map_err(|m| invalid("source.timeout_seconds", m))?;
    Ok(Source {
        url,
        name,
        slot,
        timeout,
    })
}
