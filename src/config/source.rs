//! `[source]`: the database pgtrail audits, and the replication slot it reads.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::pg::{PgUrl, SlotName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    url: String,
    #[serde(default = "default_slot")]
    slot: String,
}

fn default_slot() -> String {
    "pgtrail".to_owned()
}

/// `[source]`, validated.
pub(super) struct Source {
    pub url: PgUrl,
    pub slot: SlotName,
}

pub(super) fn source(raw: &RawSource, path: &Path) -> Result<Source, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let url = PgUrl::parse(&raw.url).map_err(|m| invalid("source.url", m))?;
    let slot = SlotName::parse(&raw.slot).map_err(|m| invalid("source.slot", m))?;
    Ok(Source { url, slot })
}
