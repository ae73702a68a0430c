//! The store's copy of a source's message key (`pgtrail.message_keys`, one
//! per slot): `setup` copies it from the source, where only setup's role may
//! read it, so that the daemon can check pgtrail's messages
//! ([`crate::capture::signature`]) whatever role it replicates as.

use tokio_postgres::Client;

use super::StoreError;
use crate::capture::signature::MessageKey;
use crate::pg::SlotName;

/// Writes (or replaces) the key for `slot`.
pub async fn save(client: &Client, slot: &SlotName, key: &MessageKey) -> Result<(), StoreError> {
    let (inner, outer) = key.pads();
    client
        .execute(
            "INSERT INTO pgtrail.message_keys (slot, inner_pad, outer_pad) VALUES ($1, $2, $3) \
             ON CONFLICT (slot) DO UPDATE SET inner_pad = excluded.inner_pad, \
                 outer_pad = excluded.outer_pad, copied_at = now() \
             WHERE (message_keys.inner_pad, message_keys.outer_pad) \
                   IS DISTINCT FROM (excluded.inner_pad, excluded.outer_pad)",
            &[&slot.as_str(), &inner, &outer],
        )
        .await?;
    Ok(())
}

/// The key for `slot`, as setup copied it.
pub async fn load(client: &Client, slot: &SlotName) -> Result<MessageKey, StoreError> {
    let not_set_up = |reason: String| StoreError::NotSetUp {
        dbname: "pgtrail".to_owned(),
        reason,
    };
    let row = client
        .query_opt(
            "SELECT inner_pad, outer_pad FROM pgtrail.message_keys WHERE slot = $1",
            &[&slot.as_str()],
        )
        .await?
        .ok_or_else(|| {
            not_set_up(format!(
                "no key to check the source's messages for slot {:?}",
                slot.as_str()
            ))
        })?;
    let inner: Vec<u8> = row.try_get(0)?;
    let outer: Vec<u8> = row.try_get(1)?;
    MessageKey::from_pads(&inner, &outer).map_err(|e| not_set_up(e.to_string()))
}
