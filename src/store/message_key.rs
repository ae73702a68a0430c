//! The store's copy of a source's message key (`pgtrail.message_keys`, one
//! per source): `setup` copies it from the source, where only setup's role may
//! read it, so that the daemon can check pgtrail's messages
//! ([`crate::capture::signature`]) whatever role it replicates as.

use tokio_postgres::Client;

use super::sources::{SourceId, SourceName};
use super::StoreError;
use crate::capture::signature::MessageKey;

/// Writes (or replaces) the key of `source`.
pub async fn save(client: &Client, source: SourceId, key: &MessageKey) -> Result<(), StoreError> {
    let (inner, outer) = key.pads();
    client
        .execute(
            "INSERT INTO pgtrail.message_keys (source, inner_pad, outer_pad) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET inner_pad = excluded.inner_pad, \
                 outer_pad = excluded.outer_pad, copied_at = now() \
             WHERE (message_keys.inner_pad, message_keys.outer_pad) \
                   IS DISTINCT FROM (excluded.inner_pad, excluded.outer_pad)",
            &[&source.0, &inner, &outer],
        )
        .await?;
    Ok(())
}

/// The key of `source` (named `name`), as setup copied it.
pub async fn load(
    client: &Client,
    source: SourceId,
    name: &SourceName,
) -> Result<MessageKey, StoreError> {
    let not_set_up = |reason: String| StoreError::NotSetUp {
        dbname: "pgtrail".to_owned(),
        reason,
    };
    let row = client
        .query_opt(
            "SELECT inner_pad, outer_pad FROM pgtrail.message_keys WHERE source = $1",
            &[&source.0],
        )
        .await?
        .ok_or_else(|| {
            not_set_up(format!(
                "no key to check the messages of the source {:?}",
                name.as_str()
            ))
        })?;
    let inner: Vec<u8> = row.try_get(0)?;
    let outer: Vec<u8> = row.try_get(1)?;
    MessageKey::from_pads(&inner, &outer).map_err(|e| not_set_up(e.to_string()))
}
