//! LSNs and replication slots: parsing and printing LSNs, the server's WAL position, a slot's
//! state, and the store's checkpoint.

use std::time::Duration;

use tokio_postgres::Client;

use super::wait_until;

/// "16/B374D848" → u64.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    (hi << 32) | lo
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The WAL insert position now.
pub async fn current_lsn(client: &Client) -> u64 {
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap();
    parse_lsn(&row.get::<_, String>(0))
}

#[derive(Debug, Clone)]
pub struct SlotState {
    pub active: bool,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub confirmed_flush: Option<u64>,
    pub restart: Option<u64>,
}

pub async fn slot_state(client: &Client, slot: &str) -> Option<SlotState> {
    let row = client
        .query_opt(
            "SELECT active, plugin::text, database::text, confirmed_flush_lsn::text, restart_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    Some(SlotState {
        active: row.get(0),
        plugin: row.get(1),
        database: row.get(2),
        confirmed_flush: row.get::<_, Option<String>>(3).map(|s| parse_lsn(&s)),
        restart: row.get::<_, Option<String>>(4).map(|s| parse_lsn(&s)),
    })
}

pub async fn wait_slot_inactive(client: &Client, slot: &str) {
    wait_until(
        &format!("slot {slot} to become inactive"),
        Duration::from_secs(30),
        || async { slot_state(client, slot).await.is_none_or(|s| !s.active) },
    )
    .await;
}

/// The store's checkpoint for `slot`.
pub async fn checkpoint_lsn(store: &Client, slot: &str) -> Option<u64> {
    store
        .query_opt(
            "SELECT lsn::text FROM pgtrail.checkpoints WHERE slot = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .map(|r| parse_lsn(&r.get::<_, String>(0)))
}
