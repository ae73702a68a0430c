//! `pgtrail.capture_state` (`sql/store/0013_capture_state.sql`, keyed by
//! source since 0015): each daemon's last reading of its slot and lag, one
//! row per source, overwritten at every
//! poll of the monitor ([`write`]) and read by the web view ([`read_all`]),
//! which talks only to the store. State, not history: no entry, no chain.
//!
//! A row not written for a while says capture stopped ([`Reported::stale`]):
//! the monitor writes one every `metrics.poll_interval` while the daemon
//! runs and reaches the store. A daemon that stops cleanly says so at once
//! ([`mark_stopped`], [`Reported::stopped_at`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;
use crate::pg::Lsn;

/// How much later than its poll interval a row may be before it counts as
/// stale, beyond [`STALE_POLLS`] intervals: one poll may spend up to 10 s
/// waiting for a source that does not answer before it writes.
const STALE_GRACE: Duration = Duration::from_secs(10);
/// Poll intervals without a row written after which capture is taken for stopped.
const STALE_POLLS: u32 = 3;

/// What one poll of the daemon's monitor saw, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureState {
    pub slot: String,
    /// The source's name (`[source] name`).
    pub source: String,
    /// `metrics.poll_interval`.
    pub poll_interval: Duration,
    /// The store's checkpoint; `None` when there is none yet.
    pub stored_lsn: Option<Lsn>,
    pub source_side: SourceSide,
    /// `capture.wal_warn` in bytes; `None`: the guard is off.
    pub wal_warn: Option<u64>,
    /// The slot held more WAL than `wal_warn`.
    pub over_wal_warn: bool,
}

/// The source as one poll saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSide {
    /// The source could not be read at this poll: why.
    Unread(String),
    Read {
        /// `pg_current_wal_lsn()`.
        server_lsn: Lsn,
        /// `None`: there is no such slot on the source.
        slot: Option<SlotFigures>,
        /// `None` when nothing processed was known to measure from.
        lag: Option<LagFigures>,
    },
}

/// The slot's row of `pg_replication_slots`, in figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotFigures {
    pub active: bool,
    pub confirmed_lsn: Option<Lsn>,
    pub retained_bytes: u64,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// `None` when `max_slot_wal_keep_size` is unlimited.
    pub safe_wal_size: Option<i64>,
}

/// How far behind capture is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagFigures {
    pub bytes: u64,
    pub seconds: f64,
}

/// A stored row with when it was written, on the store's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub state: CaptureState,
    pub polled_at: DateTime<Utc>,
    /// How long ago, as the store saw it when read.
    pub age: Duration,
    /// When the daemon stopped cleanly after this poll; `None` while it
    /// runs, or when it ended otherwise (then only [`Reported::stale`] tells).
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Reported {
    /// The daemon has not written for [`STALE_POLLS`] poll intervals (and a
    /// slow poll's grace): it is not running, or cannot reach the store.
    pub fn stale(&self) -> bool {
        self.age > self.state.poll_interval * STALE_POLLS + STALE_GRACE
    }
}

fn lsn_text(lsn: Option<Lsn>) -> Option<String> {
    lsn.map(|l| l.to_string())
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Marks `source`'s row as stopped cleanly (the daemon's last act on SIGTERM,
/// once its monitor no longer writes). Returns whether there was a row.
pub async fn mark_stopped<C: GenericClient>(client: &C, source: &str) -> Result<bool, StoreError> {
    let marked = client
        .execute(
            "UPDATE pgtrail.capture_state SET stopped_at = clock_timestamp() WHERE source = $1",
            &[&source],
        )
        .await?;
    Ok(marked > 0)
}

/// Writes `state` as its source's row: one upsert, the row's old figures
/// gone. A stop marked after this poll began (a poll in flight when the
/// daemon stopped) stays marked; an older one is cleared (a new run).
pub async fn write<C: GenericClient>(client: &C, state: &CaptureState) -> Result<(), StoreError> {
    let (error, server, slot, lag) = match &state.source_side {
        SourceSide::Unread(why) => (Some(why.as_str()), None, None, None),
        SourceSide::Read {
            server_lsn,
            slot,
            lag,
        } => (None, Some(*server_lsn), slot.as_ref(), *lag),
    };
    let found = server.map(|_| slot.is_some());
    let retained = slot.map(|s| signed(s.retained_bytes));
    client
        .execute(
            "INSERT INTO pgtrail.capture_state AS c (slot, source, polled_at, poll_interval, stored_lsn, \
                 source_error, server_lsn, slot_found, slot_active, confirmed_lsn, retained_bytes, \
                 wal_status, safe_wal_size, lag_bytes, lag_seconds, wal_warn, over_wal_warn) \
             VALUES ($1, $2, now(), make_interval(secs => $3), $4::text::pg_lsn, $5, $6::text::pg_lsn, \
                 $7, $8, $9::text::pg_lsn, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (source) DO UPDATE SET slot = EXCLUDED.slot, polled_at = EXCLUDED.polled_at, \
                 poll_interval = EXCLUDED.poll_interval, stored_lsn = EXCLUDED.stored_lsn, \
                 source_error = EXCLUDED.source_error, server_lsn = EXCLUDED.server_lsn, \
                 slot_found = EXCLUDED.slot_found, slot_active = EXCLUDED.slot_active, \
                 confirmed_lsn = EXCLUDED.confirmed_lsn, retained_bytes = EXCLUDED.retained_bytes, \
                 wal_status = EXCLUDED.wal_status, safe_wal_size = EXCLUDED.safe_wal_size, \
                 lag_bytes = EXCLUDED.lag_bytes, lag_seconds = EXCLUDED.lag_seconds, \
                 wal_warn = EXCLUDED.wal_warn, over_wal_warn = EXCLUDED.over_wal_warn, \
                 stopped_at = CASE WHEN c.stopped_at > EXCLUDED.polled_at THEN c.stopped_at END",
            &[
                &state.slot,
                &state.source,
                &state.poll_interval.as_secs_f64(),
                &lsn_text(state.stored_lsn),
                &error,
                &lsn_text(server),
                &found,
                &slot.map(|s| s.active),
                &lsn_text(slot.and_then(|s| s.confirmed_lsn)),
                &retained,
                &slot.and_then(|s| s.wal_status.as_deref()),
                &slot.and_then(|s| s.safe_wal_size),
                &lag.map(|l| signed(l.bytes)),
                &lag.map(|l| l.seconds),
                &state.wal_warn.map(signed),
                &state.over_wal_warn,
            ],
        )
        .await?;
    Ok(())
}

/// Every source's row, the most recently written first.
pub async fn read_all<C: GenericClient>(client: &C) -> Result<Vec<Reported>, StoreError> {
    let rows = client
        .query(
            "SELECT slot, source, polled_at, extract(epoch FROM poll_interval)::float8, stored_lsn::text, \
                    source_error, server_lsn::text, slot_found, slot_active, confirmed_lsn::text, \
                    retained_bytes, wal_status, safe_wal_size, lag_bytes, lag_seconds, wal_warn, \
                    over_wal_warn, greatest(extract(epoch FROM now() - polled_at), 0)::float8, stopped_at \
             FROM pgtrail.capture_state ORDER BY polled_at DESC, slot",
            &[],
        )
        .await?;
    rows.iter().map(of_row).collect()
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

fn unsigned(n: Option<i64>) -> Option<u64> {
    n.map(|n| u64::try_from(n).unwrap_or(0))
}

fn of_row(row: &tokio_postgres::Row) -> Result<Reported, StoreError> {
    // PostgreSQL writes a pg_lsn as text that always parses.
    let lsn = |i: usize| -> Result<Option<Lsn>, StoreError> {
        Ok(row
            .try_get::<_, Option<String>>(i)?
            .and_then(|t| t.parse().ok()))
    };
    let source_error: Option<String> = row.try_get(5)?;
    let source_side = match (source_error, lsn(6)?) {
        (Some(why), _) => SourceSide::Unread(why),
        (None, None) => SourceSide::Unread("the source's WAL position was not read".into()),
        (None, Some(server_lsn)) => {
            let found: Option<bool> = row.try_get(7)?;
            let slot = match found {
                Some(true) => Some(SlotFigures {
                    active: row.try_get::<_, Option<bool>>(8)?.unwrap_or(false),
                    confirmed_lsn: lsn(9)?,
                    retained_bytes: unsigned(row.try_get(10)?).unwrap_or(0),
                    wal_status: row.try_get(11)?,
                    safe_wal_size: row.try_get(12)?,
                }),
                _ => None,
            };
            let lag = match (
                unsigned(row.try_get(13)?),
                row.try_get::<_, Option<f64>>(14)?,
            ) {
                (Some(bytes), Some(seconds)) => Some(LagFigures { bytes, seconds }),
                _ => None,
            };
            SourceSide::Read {
                server_lsn,
                slot,
                lag,
            }
        }
    };
    Ok(Reported {
        state: CaptureState {
            slot: row.try_get(0)?,
            source: row.try_get(1)?,
            poll_interval: seconds(row.try_get(3)?),
            stored_lsn: lsn(4)?,
            source_side,
            wal_warn: unsigned(row.try_get(15)?),
            over_wal_warn: row.try_get(16)?,
        },
        polled_at: row.try_get(2)?,
        age: seconds(row.try_get(17)?),
        stopped_at: row.try_get(18)?,
    })
}

/// Each source's newest stored change, by source name: its source commit
/// time, as the writer keeps it with every checkpoint
/// (`pgtrail.checkpoints.last_committed_at`), the newest over the source's
/// slots. A source with nothing stored yet is absent.
pub async fn last_stored_commits<C: GenericClient>(
    client: &C,
) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
    let rows = client
        .query(
            "SELECT s.name, max(c.last_committed_at) FROM pgtrail.checkpoints c \
             JOIN pgtrail.sources s ON s.id = c.source \
             GROUP BY s.name HAVING max(c.last_committed_at) IS NOT NULL",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(poll: u64, age: u64) -> Reported {
        Reported {
            state: CaptureState {
                slot: "pgtrail".into(),
                source: "app".into(),
                poll_interval: Duration::from_secs(poll),
                stored_lsn: None,
                source_side: SourceSide::Unread("down".into()),
                wal_warn: None,
                over_wal_warn: false,
            },
            polled_at: Utc::now(),
            age: Duration::from_secs(age),
            stopped_at: None,
        }
    }

    #[test]
    fn a_row_is_stale_after_three_polls_and_the_grace() {
        assert!(!reported(5, 0).stale());
        assert!(!reported(5, 25).stale());
        assert!(reported(5, 26).stale());
        assert!(!reported(1, 13).stale());
        assert!(reported(1, 14).stale());
    }
}
