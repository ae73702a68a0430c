//! Capture's health as the web view shows it. The web view talks only to the
//! store, so it knows what the daemon's monitor last wrote there
//! (`pgtrail.capture_state`), the audit gaps the `gap` events record, and
//! the quarantine; [`load`] reads them on one connection.
//!
//! Who sees what: a gap, and capture not running, concern anyone reading
//! the log (an audit log that hides its own holes misleads), so every
//! reader gets them ([`Notice`]s and the log's gap rows, [`GapView`]); the
//! slot's WAL, lag and the quarantine are operations, for admins only,
//! as banners on the log page and the panel on the admin page ([`panel`]).

pub mod panel;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::WebError;
use super::log::rows::short_time;
use super::AppState;
use crate::health::service_status::bytes;
use crate::store::capture_state::{self, Reported, SourceSide};
use crate::store::gaps::{Gap, Moved};
use crate::store::quarantine::{self, Summary};

/// What the store says of capture's health.
#[derive(Debug, Default)]
pub struct Health {
    /// Each slot's last reported state, the most recent first.
    pub states: Vec<Reported>,
    pub gaps: Vec<Gap>,
    /// Read for admins only: each source's, by name (absent: none quarantined).
    pub quarantine: Option<BTreeMap<String, Summary>>,
}

/// Reads capture's health; the quarantine only for an admin. A read that
/// fails (a busy lane included) fails the page: a log shown without its
/// gaps would look whole when it is not.
pub async fn load(state: &AppState, admin: bool) -> Result<Health, WebError> {
    let client = state.pool().get().await?;
    let states = capture_state::read_all(&*client).await?;
    let gaps = state.gaps().list(&*client).await?;
    let quarantine = if admin {
        Some(quarantine::summaries(&*client).await?)
    } else {
        None
    };
    Ok(Health {
        states,
        gaps,
        quarantine,
    })
}

/// `2024-05-01 10:00:03 UTC`.
pub fn when(t: &DateTime<Utc>) -> String {
    format!("{} UTC", short_time(t))
}

/// `40 s`, `12 min`, `5 h`, `3 days`: how long, roughly.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..90 => format!("{s} s"),
        90..5_400 => format!("{} min", s / 60),
        5_400..172_800 => format!("{} h", s / 3_600),
        _ => format!("{} days", s / 86_400),
    }
}

/// A banner above the log.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `alert` (something is lost or about to be) or `warn`.
    pub level: &'static str,
    pub text: String,
    /// Where to read more: the capture health panel, the quarantine's events.
    pub link: Option<(&'static str, &'static str)>,
}

const PANEL: (&str, &str) = ("/admin#capture", "Capture health");

impl Health {
    /// The banners for the log page: for each source's last reported state
    /// (one row per source), capture stopped or not running for everyone,
    /// the slot's troubles for admins; the quarantine for admins.
    pub fn notices(&self, admin: bool) -> Vec<Notice> {
        let mut out = Vec::new();
        let link = admin.then_some(PANEL);
        for r in &self.states {
            let source = &r.state.source;
            if let Some(at) = &r.stopped_at {
                out.push(Notice {
                    level: "alert",
                    text: format!(
                        "Capture of {source} was stopped at {} (`pgtrail run` stopped cleanly): changes made since \
                         then are not in the log until it runs again.",
                        when(at)
                    ),
                    link,
                });
            } else if r.stale() {
                out.push(Notice {
                    level: "alert",
                    text: format!(
                        "Capture of {source} is not running since {}: the daemon has not reported for {} (it reports every {}). \
                         Changes made since then are not in the log yet.",
                        when(&r.polled_at),
                        span(r.age),
                        span(r.state.poll_interval)
                    ),
                    link,
                });
            }
            if admin {
                out.extend(slot_notices(r));
            }
        }
        let quarantined = self.quarantine.as_ref().map(|q| Summary::total(q.values()));
        if let Some(q) = quarantined.filter(|q| q.transactions > 0) {
            out.push(Notice {
                level: "alert",
                text: format!(
                    "Capture quarantined {} source transaction{} it could not store as entries (the newest at {}): \
                     their raw records are in pgtrail.quarantine.",
                    q.transactions,
                    if q.transactions == 1 { "" } else { "s" },
                    q.newest.as_deref().unwrap_or("-")
                ),
                link: Some(("/?table=pgtrail.quarantine&action=EVENT", "See why")),
            });
        }
        out
    }
}

/// The admin's banners about the slot, from its last reported state.
fn slot_notices(r: &Reported) -> Vec<Notice> {
    let s = &r.state;
    let at = when(&r.polled_at);
    let notice = |level, text| Notice {
        level,
        text,
        link: Some(PANEL),
    };
    let mut out = Vec::new();
    let slot = match &s.source_side {
        SourceSide::Unread(why) => {
            out.push(notice(
                "warn",
                format!("At {at} the daemon could not read the source: {why}"),
            ));
            return out;
        }
        SourceSide::Read { slot: None, .. } => {
            out.push(notice(
                "alert",
                format!(
                    "At {at} the replication slot {} did not exist on the source: changes after {} cannot be captured \
                     (an audit gap). Run `pgtrail setup --recreate-slot`.",
                    s.slot,
                    s.stored_lsn.map_or_else(|| "the checkpoint".to_owned(), |l| l.to_string())
                ),
            ));
            return out;
        }
        SourceSide::Read { slot: Some(f), .. } => f,
    };
    if s.over_wal_warn {
        let warn = s
            .wal_warn
            .map_or_else(String::new, |w| format!(" ({})", bytes(w as f64)));
        out.push(notice(
            "warn",
            format!(
                "At {at} the slot {} held {} of WAL on the source, more than capture.wal_warn{warn}: capture is \
                 behind or stopped. If the slot passes max_slot_wal_keep_size, PostgreSQL invalidates it and the \
                 changes in that WAL are lost to the audit trail.",
                s.slot,
                bytes(slot.retained_bytes as f64)
            ),
        ));
    }
    match slot.wal_status.as_deref() {
        Some("unreserved") => out.push(notice(
            "alert",
            format!(
                "At {at} the slot {}'s wal_status was unreserved: it holds more WAL than max_slot_wal_keep_size, \
                 and the next checkpoint may invalidate it, losing the changes not yet captured.",
                s.slot
            ),
        )),
        Some("lost") => out.push(notice(
            "alert",
            format!(
                "At {at} the slot {} was lost (wal_status lost): PostgreSQL removed WAL it still needed, so changes \
                 after {} were not captured. Run `pgtrail setup --recreate-slot`.",
                s.slot,
                s.stored_lsn.map_or_else(|| "the checkpoint".to_owned(), |l| l.to_string())
            ),
        )),
        _ => {}
    }
    out
}

/// A gap as a reader sees it, on the log page and the admin page.
#[derive(Debug, Clone)]
pub struct GapView {
    /// The id it lies just before, in the log's id order.
    pub anchor: i64,
    pub text: String,
    /// The `gap` events that record it.
    pub events: Vec<i64>,
    /// Whether the reader may open those events (pgtrail's events are for admins).
    pub linked: bool,
}

impl GapView {
    pub fn of(g: &Gap, linked: bool) -> GapView {
        let slot = &g.slot;
        let what = if let Some(moved) = &g.moved {
            format!("{}, where its slot is {slot}", moved_words(moved))
        } else if g.missing {
            format!("the replication slot was missing: {slot}")
        } else {
            format!("the replication slot was lost: {slot}")
        };
        let text = match (g.from.as_ref(), g.to.as_ref()) {
            (Some(from), Some(to)) => format!(
                "changes between {} and {} were not captured ({what}).",
                when(from),
                when(to)
            ),
            (None, Some(to)) => format!(
                "changes before {} were not captured ({what}; nothing had been stored before).",
                when(to)
            ),
            (Some(from), None) => format!(
                "changes after {} were not captured ({what}, found at {}); capture has not resumed since.",
                when(from),
                when(&g.found_at)
            ),
            (None, None) => format!(
                "changes up to {} were not captured ({what}); capture has not resumed since.",
                when(&g.found_at)
            ),
        };
        let mut events = vec![g.anchor];
        events.extend(g.ended_by.filter(|e| *e != g.anchor));
        GapView {
            anchor: g.anchor,
            text,
            events,
            linked,
        }
    }
}

/// What a source's move changed: its server, or its database on the same
/// server (a database restored there has a new OID, and maybe its old name).
fn moved_words(moved: &Moved) -> String {
    match moved {
        Moved::Server => "the source moved to another server".to_owned(),
        Moved::Database { from, to } if from == to => format!(
            "the source moved to another database on the same server ({from:?} again, with a new OID)"
        ),
        Moved::Database { from, to } => {
            format!("the source moved to another database on the same server ({from:?} to {to:?})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_is_not_called_a_lost_slot_and_says_whether_the_server_or_the_database_changed() {
        let at = |h: u32| {
            DateTime::parse_from_rfc3339(&format!("2024-05-01T{h:02}:00:00Z"))
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let gap = Gap {
            source: "app".into(),
            slot: "pgtrail_slot".into(),
            from: Some(at(10)),
            from_lsn: Some("0/100".into()),
            to: Some(at(11)),
            to_lsn: Some("0/20".into()),
            found: "the source moved to another server".into(),
            missing: false,
            moved: Some(Moved::Server),
            anchor: 4,
            found_at: at(11),
            ended_by: Some(4),
        };
        assert_eq!(
            GapView::of(&gap, true).text,
            format!(
                "changes between {} and {} were not captured (the source moved to another server, where its slot is pgtrail_slot).",
                when(&at(10)),
                when(&at(11))
            )
        );
        let database = |from: &str, to: &str| Gap {
            moved: Some(Moved::Database {
                from: from.into(),
                to: to.into(),
            }),
            ..gap.clone()
        };
        assert!(GapView::of(&database("app", "app_restored"), true).text.ends_with(
            "(the source moved to another database on the same server (\"app\" to \"app_restored\"), \
             where its slot is pgtrail_slot)."
        ));
        assert!(GapView::of(&database("app", "app"), true).text.ends_with(
            "(the source moved to another database on the same server (\"app\" again, with a new OID), \
             where its slot is pgtrail_slot)."
        ));
        let lost = Gap { moved: None, ..gap };
        assert!(GapView::of(&lost, true)
            .text
            .ends_with("(the replication slot was lost: pgtrail_slot)."));
    }

    #[test]
    fn spans_read_roughly() {
        let s = |n| span(Duration::from_secs(n));
        assert_eq!(
            [s(5), s(89), s(90), s(3_600), s(5_400), s(200_000)],
            ["5 s", "89 s", "1 min", "60 min", "1 h", "2 days"]
        );
    }
}
