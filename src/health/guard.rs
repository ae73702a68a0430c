//! The WAL guard: past `capture.wal_warn`, the WAL the slot holds on the
//! source is worth a person's attention before the disk fills or the server
//! invalidates the slot (`max_slot_wal_keep_size`), which would be an audit
//! gap. The monitor hands it every reading of the slot; it sets the metric
//! `pgtrail_wal_warn` and logs a warning at most once a minute while over.

use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::record::{self, SlotFigures};

/// The least time between two warnings of the guard.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The guard's state across polls.
#[derive(Debug)]
pub struct WalGuard {
    /// `capture.wal_warn` in bytes; `None`: off.
    limit: Option<u64>,
    /// When it last warned, while over the limit.
    warned: Option<Instant>,
}

impl WalGuard {
    pub fn new(limit: Option<u64>) -> Self {
        WalGuard {
            limit,
            warned: None,
        }
    }

    /// Judges one reading of `slot` (`None`: there is no such slot); returns
    /// whether it is over the limit.
    pub fn observe(&mut self, slot: &str, figures: Option<SlotFigures<'_>>) -> bool {
        let (Some(limit), Some(state)) = (self.limit, figures) else {
            record::wal_warn(slot, false);
            return false;
        };
        let retained = state.retained_bytes;
        let over = retained > limit;
        record::wal_warn(slot, over);
        if !over {
            if self.warned.take().is_some() {
                tracing::info!(
                    slot,
                    retained_bytes = retained,
                    "the slot holds less WAL than capture.wal_warn again"
                );
            }
            return false;
        }
        let due = self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            self.warned = Some(Instant::now());
            let safe = state
                .safe_wal_size
                .map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
            tracing::warn!(
                slot,
                retained_bytes = retained,
                wal_warn_bytes = limit,
                wal_status = state.wal_status.unwrap_or("-"),
                safe_wal_size = %safe,
                "the slot holds more WAL on the source than capture.wal_warn: capture is behind or stopped; \
                 if the slot passes max_slot_wal_keep_size the server invalidates it and the changes in that WAL \
                 are lost to the audit trail (see `pgtrail status`)"
            );
        }
        true
    }
}
