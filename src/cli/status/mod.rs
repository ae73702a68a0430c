//! `pgtrail status`: how far capture has got, from the source's slot and the store. Every query
//! here is cheap (an index probe or a catalog row), so monitoring may run it every minute on a
//! store of any size; `check` turns the figures into a Nagios-style verdict.

pub mod check;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::pg::Lsn;
use crate::{source, store};

#[derive(Debug, Serialize)]
pub struct Status {
    /// `[source] name`: which of the store's sources this is.
    pub source: String,
    pub slot: String,
    pub slot_exists: bool,
    /// A walsender holds the slot: this is how "the daemon is running" is judged, from the source.
    pub slot_active: bool,
    /// `pg_replication_slots.wal_status`: reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    pub confirmed_flush_lsn: Option<String>,
    pub server_lsn: String,
    /// WAL the slot still holds back: server position minus confirmed flush.
    pub lag_bytes: Option<u64>,
    /// WAL the slot keeps on the source's disk: server position minus `restart_lsn`.
    pub retained_wal_bytes: Option<u64>,
    /// `capture.wal_warn`: past it, `status --check` warns; `None` when off.
    pub wal_warn_bytes: Option<u64>,
    pub last_stored_lsn: Option<String>,
    /// Seconds since the store's checkpoint for this slot was last written (by setup, or with the
    /// last stored transaction), on the store's clock.
    pub last_stored_age_seconds: Option<u64>,
    /// The source commit time of the newest change stored (RFC 3339, UTC), written with the
    /// checkpoint; `None` before the first.
    pub last_stored_commit: Option<String>,
    /// An upper bound, not a count: highest entry id minus lowest plus one (two index probes).
    /// Exact unless a store transaction was rolled back after taking ids.
    pub entries_estimate: i64,
    /// The time partitions of the entries: how many, the oldest one's start, the newest one's end.
    pub partitions: store::partitions::Summary,
    /// This source's transactions kept raw in `pgtrail.quarantine` because
    /// they could not be stored as entries (each has an `EVENT` entry too).
    pub quarantine: store::quarantine::Summary,
}

/// The slot's row, if there is one, with the server's position.
struct SlotRow {
    server_lsn: Lsn,
    exists: bool,
    active: bool,
    wal_status: Option<String>,
    confirmed_flush: Option<Lsn>,
    restart: Option<Lsn>,
}

async fn slot_row(config: &Config) -> Result<SlotRow> {
    let source = source::connect(&config.source).await?;
    // One round trip; the left join keeps the server position when the slot is missing.
    let row = source
        .query_one(
            "SELECT pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, s.active_pid IS NOT NULL, \
             s.wal_status, s.confirmed_flush_lsn::text, s.restart_lsn::text \
             FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&config.slot.as_str()],
        )
        .await
        .context("reading the replication slot from the source")?;
    Ok(SlotRow {
        server_lsn: row.get::<_, String>(0).parse()?,
        exists: row.get(1),
        active: row.get::<_, Option<bool>>(2).unwrap_or(false),
        wal_status: row.get(3),
        confirmed_flush: row.get::<_, Option<String>>(4).and_then(|s| s.parse().ok()),
        restart: row.get::<_, Option<String>>(5).and_then(|s| s.parse().ok()),
    })
}

pub async fn status(config: &Config) -> Result<Status> {
    let slot = slot_row(config).await?;
    let store = store::open(&config.store).await?;
    let checkpoint = store
        .query_opt(
            "SELECT c.lsn::text, greatest(0, extract(epoch FROM now() - c.updated_at))::bigint, \
                    to_char(c.last_committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM pgtrail.checkpoints c JOIN pgtrail.sources s ON s.id = c.source \
             WHERE s.name = $1 AND c.slot = $2",
            &[&config.source_name.as_str(), &config.slot.as_str()],
        )
        .await
        .context("reading the checkpoint from the store")?;
    // min and max of the primary key are each one index probe, where count(*) reads every entry
    // (of the entry rows: through the view's join they would read every one too).
    let entries_estimate: i64 = store
        .query_one(
            "SELECT coalesce(max(id) - min(id) + 1, 0) FROM pgtrail.entry_rows",
            &[],
        )
        .await
        .context("estimating the number of entries in the store")?
        .get(0);
    let quarantine = store::quarantine::summary(&store, config.source_name.as_str()).await?;
    let partitions = store::partitions::summary(&store)
        .await
        .context("reading the store's partitions")?;
    Ok(Status {
        source: config.source_name.to_string(),
        slot: config.slot.to_string(),
        slot_exists: slot.exists,
        slot_active: slot.active,
        wal_status: slot.wal_status,
        confirmed_flush_lsn: slot.confirmed_flush.map(|l| l.to_string()),
        server_lsn: slot.server_lsn.to_string(),
        lag_bytes: slot.confirmed_flush.map(|c| c.bytes_until(slot.server_lsn)),
        retained_wal_bytes: slot.restart.map(|r| r.bytes_until(slot.server_lsn)),
        wal_warn_bytes: config.wal_warn,
        last_stored_lsn: checkpoint
            .as_ref()
            .and_then(|r| r.get::<_, String>(0).parse::<Lsn>().ok())
            .map(|l| l.to_string()),
        last_stored_age_seconds: checkpoint
            .as_ref()
            .and_then(|r| u64::try_from(r.get::<_, i64>(1)).ok()),
        last_stored_commit: checkpoint.as_ref().and_then(|r| r.get(2)),
        entries_estimate,
        partitions,
        quarantine,
    })
}

impl Status {
    /// The slot is gone or can no longer stream: changes are being lost, not just delayed.
    pub fn slot_unusable(&self) -> bool {
        !self.slot_exists || self.wal_status.as_deref() == Some("lost")
    }

    pub fn to_text(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<u64>| v.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
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
        let p = &self.partitions;
        let partitions = format!(
            "partitions: {} of a {}, from {} to {}\n",
            p.count,
            p.period,
            opt(&p.oldest_from),
            opt(&p.newest_to)
        );
        format!(
            "source: {}\nslot: {}\nslot_exists: {}\nslot_active: {}\nwal_status: {}\nconfirmed_flush_lsn: {}\nserver_lsn: {}\nlag_bytes: {}\nretained_wal_bytes: {}\nwal_warn_bytes: {}\nlast_stored_lsn: {}\nlast_stored_age_seconds: {}\nlast_stored_commit: {}\nentries: about {}\n",
            self.source,
            self.slot,
            self.slot_exists,
            self.slot_active,
            opt(&self.wal_status),
            opt(&self.confirmed_flush_lsn),
            self.server_lsn,
            num(self.lag_bytes),
            num(self.retained_wal_bytes),
            num(self.wal_warn_bytes),
            opt(&self.last_stored_lsn),
            num(self.last_stored_age_seconds),
            opt(&self.last_stored_commit),
            self.entries_estimate
        ) + &partitions
            + &quarantine
    }
}
