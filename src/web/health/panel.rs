//! The capture health panel of the admin page (`templates/capture.html`):
//! per source, when its daemon last reported and whether it runs, stopped
//! or is silent, the lag in bytes and seconds, the checkpoint, retained WAL
//! against `capture.wal_warn`, `wal_status` and `safe_wal_size`, and the
//! source commit time of its last stored change; the quarantine; and every
//! recorded gap.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{span, when, GapView, Health};
use crate::health::service_status::bytes;
use crate::store::capture_state::{self, Reported, SourceSide};
use crate::store::quarantine::Summary;
use crate::web::error::WebError;
use crate::web::AppState;

/// The panel, read from the store. A read that fails fails the panel, as on
/// the log page: a panel without its gaps would say there are none. The
/// admin page shows [`Panel::unavailable`] instead ([`load_or_note`]).
pub async fn load(state: &AppState) -> Result<Panel, WebError> {
    let health = super::load(state, true).await?;
    let client = state.pool().get().await?;
    let last_commits = capture_state::last_stored_commits(&*client).await?;
    Ok(Panel::of(&health, &last_commits))
}

/// The panel, or one that says why it could not be read: the admin page
/// must render whatever happens to the panel (it may be the only showing
/// of a new token's secret).
pub async fn load_or_note(state: &AppState) -> Panel {
    match load(state).await {
        Ok(panel) => panel,
        Err(e) => {
            let why = match &e {
                WebError::Internal(detail) => {
                    tracing::error!(error = %detail, "the capture health panel could not be read");
                    "the store refused or failed the read (the server log has the details)"
                        .to_owned()
                }
                other => other.message().to_owned(),
            };
            Panel {
                unavailable: why,
                ..Panel::default()
            }
        }
    }
}

/// One slot's row of the panel; every figure as text, `-` where unknown.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub slot: String,
    pub source: String,
    /// Reporting in time; not when stopped or silent.
    pub running: bool,
    /// `running`, `stopped at …` (a clean stop) or `not running`.
    pub state: String,
    /// The source commit time of its newest stored change, or `nothing stored yet`.
    pub last_commit: String,
    pub reported: String,
    pub lag: String,
    pub stored_lsn: String,
    pub server_lsn: String,
    pub retained: String,
    pub over: bool,
    pub wal_status: String,
    /// `reserved`/`extended` are fine; `unreserved`/`lost` are not.
    pub wal_alarm: bool,
    pub safe_wal_size: String,
    pub active: String,
    /// Why the source could not be read at the last poll, if it could not.
    pub source_error: String,
}

impl SlotView {
    fn of(r: &Reported, last_commit: Option<&DateTime<Utc>>) -> SlotView {
        let s = &r.state;
        let dash = || "-".to_owned();
        let running = !r.stale() && r.stopped_at.is_none();
        let mut view = SlotView {
            slot: s.slot.clone(),
            source: s.source.clone(),
            running,
            state: match &r.stopped_at {
                Some(at) => format!("stopped at {} (cleanly)", when(at)),
                None if running => "running".to_owned(),
                None => "not running".to_owned(),
            },
            last_commit: last_commit.map_or_else(|| "nothing stored yet".to_owned(), when),
            reported: format!("{} ({} ago)", when(&r.polled_at), span(r.age)),
            lag: dash(),
            stored_lsn: s.stored_lsn.map_or_else(dash, |l| l.to_string()),
            server_lsn: dash(),
            retained: dash(),
            over: s.over_wal_warn,
            wal_status: dash(),
            wal_alarm: false,
            safe_wal_size: dash(),
            active: dash(),
            source_error: String::new(),
        };
        let warn = s.wal_warn.map_or_else(
            || "capture.wal_warn off".to_owned(),
            |w| format!("capture.wal_warn {}", bytes(w as f64)),
        );
        match &s.source_side {
            SourceSide::Unread(why) => view.source_error = why.clone(),
            SourceSide::Read {
                server_lsn,
                slot,
                lag,
            } => {
                view.server_lsn = server_lsn.to_string();
                if let Some(l) = lag {
                    view.lag = format!("{} ({:.0} s)", bytes(l.bytes as f64), l.seconds);
                }
                match slot {
                    None => view.active = "no such slot on the source".to_owned(),
                    Some(f) => {
                        view.retained = format!(
                            "{} ({warn}{})",
                            bytes(f.retained_bytes as f64),
                            if s.over_wal_warn { ", over it" } else { "" }
                        );
                        view.wal_status = f.wal_status.clone().unwrap_or_else(dash);
                        view.wal_alarm =
                            matches!(f.wal_status.as_deref(), Some("unreserved" | "lost"));
                        view.safe_wal_size = f
                            .safe_wal_size
                            .map_or_else(|| "unlimited".to_owned(), |b| bytes(b.max(0) as f64));
                        view.active = if f.active {
                            "yes (the daemon streams from it)"
                        } else {
                            "no"
                        }
                        .to_owned();
                    }
                }
            }
        }
        view
    }
}

/// The panel as the admin page shows it.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// Why the panel could not be read; empty when it was.
    pub unavailable: String,
    pub slots: Vec<SlotView>,
    pub quarantined: i64,
    pub quarantined_records: i64,
    pub quarantine_newest: String,
    pub gaps: Vec<GapView>,
}

impl Panel {
    /// `last_commits`: each source's newest stored change's commit time.
    pub fn of(health: &Health, last_commits: &BTreeMap<String, DateTime<Utc>>) -> Panel {
        let q = Summary::total(health.quarantine.iter().flat_map(|q| q.values()));
        Panel {
            unavailable: String::new(),
            slots: health
                .states
                .iter()
                .map(|r| SlotView::of(r, last_commits.get(&r.state.source)))
                .collect(),
            quarantined: q.transactions,
            quarantined_records: q.records,
            quarantine_newest: q.newest.unwrap_or_default(),
            // Newest first, as the log lists them.
            gaps: health
                .gaps
                .iter()
                .rev()
                .map(|g| GapView::of(g, true))
                .collect(),
        }
    }
}
