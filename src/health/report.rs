//! What the monitor of `pgtrail run` leaves in the store at every poll: its
//! readings as the slot's row of `pgtrail.capture_state`
//! ([`crate::store::capture_state`]), for the web view, which talks only to
//! the store. One upsert per poll on the monitor's own store connection,
//! bounded like its reads, so it never holds capture up; a failure is logged
//! once until a write succeeds again.

use std::time::Duration;

use tokio_postgres::Client;

use crate::pg::{Lsn, SlotName};
use crate::store::capture_state::{self, CaptureState, SourceSide};

/// What is reported for one slot, across polls.
pub struct Reporter {
    pub slot: SlotName,
    /// The source's name (`[source] name`).
    pub source: String,
    pub poll_interval: Duration,
    pub wal_warn: Option<u64>,
    /// The last write failed (and was logged).
    failing: bool,
}

impl Reporter {
    pub fn new(
        slot: SlotName,
        source: String,
        poll_interval: Duration,
        wal_warn: Option<u64>,
    ) -> Self {
        Reporter {
            slot,
            source,
            poll_interval,
            wal_warn,
            failing: false,
        }
    }

    /// The row for one poll: what the source showed, the store's
    /// checkpoint, and the WAL guard's verdict.
    pub fn state(
        &self,
        source_side: SourceSide,
        stored_lsn: Option<Lsn>,
        over: bool,
    ) -> CaptureState {
        CaptureState {
            slot: self.slot.as_str().to_owned(),
            source: self.source.clone(),
            poll_interval: self.poll_interval,
            stored_lsn,
            source_side,
            wal_warn: self.wal_warn,
            over_wal_warn: over,
        }
    }

    /// Writes `state`; returns the error, if any, for the caller to drop
    /// its connection. Logs the first failure of a run of them, and the
    /// recovery.
    pub async fn write(&mut self, client: &Client, state: &CaptureState) -> Result<(), String> {
        match capture_state::write(client, state).await {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(
                        slot = %self.slot,
                        "the capture state is written to the store again"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.failed(&e.to_string());
                Err(e.to_string())
            }
        }
    }

    /// A write that failed or did not finish in time.
    pub fn failed(&mut self, why: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(
                slot = %self.slot,
                error = %why,
                "cannot write the capture state into the store (pgtrail.capture_state): the web view \
                 will show capture as not running; capture itself goes on. Run `pgtrail setup` if the \
                 store's grants are missing"
            );
        }
    }
}
