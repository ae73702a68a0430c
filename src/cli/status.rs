//! `pgtrail status`: how far capture has got, from the source's slot and the store.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::pg::Lsn;
use crate::{source, store};

#[derive(Debug, Serialize)]
pub struct Status {
    pub slot: String,
    pub slot_exists: bool,
    pub slot_active: bool,
    pub confirmed_flush_lsn: Option<String>,
    pub server_lsn: String,
    /// WAL the slot still holds back: server position minus confirmed flush.
    pub lag_bytes: Option<u64>,
    pub last_stored_lsn: Option<String>,
    pub entries: i64,
    /// Source transactions kept raw in `pgtrail.quarantine` because they
    /// could not be stored as entries (each has an `EVENT` entry too).
    pub quarantine: store::quarantine::Summary,
}

pub async fn status(config: &Config) -> Result<Status> {
    let source = source::connect(&config.source).await?;
    let server_lsn: Lsn = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get::<_, String>(0)
        .parse()?;
    let slot = source::slot_info(&source, &config.slot).await?;
    let store = store::open(&config.store).await?;
    let last_stored = store::checkpoint(&store, &config.slot).await?;
    let entries: i64 = store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await?
        .get(0);
    let quarantine = store::quarantine::summary(&store).await?;
    let confirmed = slot.as_ref().and_then(|s| s.confirmed_flush);
    Ok(Status {
        slot: config.slot.to_string(),
        slot_exists: slot.is_some(),
        slot_active: slot.as_ref().is_some_and(|s| s.active_pid.is_some()),
        confirmed_flush_lsn: confirmed.map(|l| l.to_string()),
        server_lsn: server_lsn.to_string(),
        lag_bytes: confirmed.map(|c| c.bytes_until(server_lsn)),
        last_stored_lsn: last_stored.map(|l| l.to_string()),
        entries,
        quarantine,
    })
}

impl Status {
    pub fn to_text(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let q = &self.quarantine;
        let quarantine = if q.transactions == 0 {
            "quarantined: none\n".to_owned()
        } else {
            format!(
                "quarantined: {} transactions ({} records), the newest at {}; see pgtrail.quarantine and the EVENT entries of pgtrail.quarantine\n",
                q.transactions,
                q.records,
                opt(&q.newest)
            )
        };
        format!(
            "slot: {}\nslot_exists: {}\nslot_active: {}\nconfirmed_flush_lsn: {}\nserver_lsn: {}\nlag_bytes: {}\nlast_stored_lsn: {}\nentries: {}\n",
            self.slot,
            self.slot_exists,
            self.slot_active,
            opt(&self.confirmed_flush_lsn),
            self.server_lsn,
            self.lag_bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            opt(&self.last_stored_lsn),
            self.entries
        ) + &quarantine
    }
}
