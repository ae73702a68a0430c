//! The audit gaps the store records, read back for the web view: each
//! `gap` EVENT (`pipeline::gap` writes them: `slot_lost` when the daemon
//! finds its slot lost, `slot_recreated` when `setup --recreate-slot` starts
//! a new one, `source_moved` when `setup --rebind-source` moves the source
//! to another server or database) folded into the stretches of time whose
//! changes were not captured ([`Gap`]).
//!
//! Where a gap sits among the entries: every change stored before it has a
//! smaller id than its first event, and every change captured after it a
//! larger id than its last (capture is stopped from the loss to the new
//! slot), so in id order, the order of the log, a gap lies just before its
//! first event ([`Gap::anchor`]); only pgtrail's own events fall inside.
//!
//! Reading them probes the table index of every partition (gap events can be
//! of any time), and the web view needs them for every log page: [`Cache`]
//! reads them again only when the events chain has moved.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::StoreError;

/// `details.event` of the daemon's record of a lost slot.
const SLOT_LOST: &str = "slot_lost";
/// `details.event` of `setup --recreate-slot`'s record.
const SLOT_RECREATED: &str = "slot_recreated";
/// `details.event` of `setup --rebind-source`'s record: the same extent.
const SOURCE_MOVED: &str = "source_moved";

/// A stretch of changes that were not captured.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The source whose changes they were (its name).
    pub source: String,
    pub slot: String,
    /// The source commit time of the last change stored before it; `None`
    /// when nothing had been stored.
    pub from: Option<DateTime<Utc>>,
    /// The last LSN stored before it.
    pub from_lsn: Option<String>,
    /// When capture resumed (the new slot's start); `None`: not yet.
    pub to: Option<DateTime<Utc>>,
    pub to_lsn: Option<String>,
    /// What was found wrong with the slot, in the event's words.
    pub found: String,
    /// Whether the slot was missing rather than invalidated.
    pub missing: bool,
    /// Where the source moved (`source_moved` alone, no loss before it): no
    /// slot was lost, the new database's starts elsewhere. `None`: no move.
    pub moved: Option<Moved>,
    /// The id of the first event that records it: the gap lies just before it in id order.
    pub anchor: i64,
    /// When the first event was recorded (when the gap was found).
    pub found_at: DateTime<Utc>,
    /// The `slot_recreated` event that ended it, if one did.
    pub ended_by: Option<i64>,
}

/// What a source's move changed, as its event's details say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Another server: the system identifiers differ (or the event does not
    /// say; the only move before a move could stay on its server).
    Server,
    /// Another database on the same server (its OID differs): its names
    /// before and after, the same when it was restored under its own name.
    Database { from: String, to: String },
}

impl Moved {
    /// From a `source_moved` event's `from_server` and `to_server`.
    fn of(details: &Value) -> Moved {
        let side = |key: &str, field: &str| {
            details
                .get(key)
                .and_then(|s| s.get(field))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (
            side("from_server", "system_identifier"),
            side("to_server", "system_identifier"),
        ) {
            (Some(a), Some(b)) if a == b => Moved::Database {
                from: side("from_server", "database").unwrap_or_default(),
                to: side("to_server", "database").unwrap_or_default(),
            },
            _ => Moved::Server,
        }
    }
}

impl Gap {
    /// Whether the gap overlaps `[since, until]` (either end open when `None`).
    pub fn overlaps(&self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> bool {
        let starts_before_until = match (self.from, until) {
            (Some(from), Some(until)) => from < until,
            _ => true,
        };
        let ends_after_since = match (self.to, since) {
            (Some(to), Some(since)) => to > since,
            _ => true,
        };
        starts_before_until && ends_after_since
    }
}

/// One `gap` EVENT as stored.
#[derive(Debug, Clone)]
struct GapEvent {
    id: i64,
    at: DateTime<Utc>,
    /// `details.source`; for an event recorded before sources had names, the store's first source.
    source: String,
    details: Value,
}

impl GapEvent {
    fn text(&self, key: &str) -> Option<String> {
        self.details
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn time(&self, key: &str) -> Option<DateTime<Utc>> {
        let text = self.details.get(key)?.as_str()?;
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn gap(&self, from: &str, from_lsn: &str) -> Gap {
        let found = self.text("found").unwrap_or_default();
        Gap {
            source: self.source.clone(),
            slot: self.text("slot").unwrap_or_default(),
            from: self.time(from),
            from_lsn: self.text(from_lsn),
            to: None,
            to_lsn: None,
            missing: found.contains("does not exist"),
            moved: None,
            found,
            anchor: self.id,
            found_at: self.at,
            ended_by: None,
        }
    }
}

/// The gaps as last read ([`list`]), and the head of the events chain
/// (`pgtrail.chain_heads`, source 0: its hash and count) they were read
/// under; while the head is the same, so are they.
///
/// Why the head says it: a `gap` event is one of pgtrail's own (source 0, as
/// [`list`] reads them), and every one of those is recorded through
/// `pgtrail.record_event`, which moves the head in the same transaction; the
/// only other ways events come or go, a partition dropped or restored,
/// record an event too. So with the head unchanged no gap event was added or
/// removed. The head is read before the gaps: an event committed in between
/// is in the list and has moved the head, so the next reading reads again;
/// the other way round a list could be kept without it.
#[derive(Debug, Default)]
pub struct Cache {
    last: std::sync::Mutex<Option<(Head, Vec<Gap>)>>,
}

/// The events chain's head: its hash and how many entries it has.
type Head = (Vec<u8>, i64);

impl Cache {
    /// Every recorded gap, oldest first, as [`list`] reads them: from the
    /// last reading while the events chain's head has not moved since.
    pub async fn list<C: GenericClient>(&self, client: &C) -> Result<Vec<Gap>, StoreError> {
        let head: Option<Head> = match client
            .query_opt(
                "SELECT hash, entries FROM pgtrail.chain_heads WHERE source = 0",
                &[],
            )
            .await?
        {
            Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
            // No events chain yet: nothing to key a reading on.
            None => None,
        };
        if let Some(head) = &head {
            // A holder of the lock never panics, so a poisoned one still holds a whole value.
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((seen, gaps)) = last.as_ref() {
                if seen == head {
                    return Ok(gaps.clone());
                }
            }
        }
        let gaps = list(client).await?;
        if let Some(head) = head {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((head, gaps.clone()));
        }
        Ok(gaps)
    }
}

/// Every recorded gap, oldest first.
pub async fn list<C: GenericClient>(client: &C) -> Result<Vec<Gap>, StoreError> {
    // The (schema_name, table_name, id) index leads to the few gap events;
    // pgtrail's own (source 0) alone, as [`Cache`] relies on.
    let rows = client
        .query(
            "SELECT id, committed_at, details::text, \
                    coalesce(details->>'source', (SELECT name FROM pgtrail.sources WHERE id = 1), '') \
             FROM pgtrail.entries \
             WHERE schema_name = 'pgtrail' AND table_name = 'gap' AND action = 'EVENT' AND source = 0 \
             ORDER BY id",
            &[],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let details: Option<String> = row.try_get(2)?;
        events.push(GapEvent {
            id: row.try_get(0)?,
            at: row.try_get(1)?,
            source: row.try_get(3)?,
            details: details
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Value::Null),
        });
    }
    Ok(fold(&events))
}

/// The events, oldest first, as gaps: a `slot_lost` opens one (a second for
/// the same source, slot and position only repeats it), that source's
/// slot's next `slot_recreated` (or `source_moved`) ends it; one with none open (the slot
/// was found missing by `setup` first, or the source moved) is a gap of its own.
fn fold(events: &[GapEvent]) -> Vec<Gap> {
    let mut done: Vec<Gap> = Vec::new();
    let mut open: Vec<Gap> = Vec::new();
    for e in events {
        let slot = e.text("slot").unwrap_or_default();
        let at = open
            .iter()
            .position(|g| g.slot == slot && g.source == e.source);
        match e.text("event").as_deref() {
            Some(SLOT_LOST) => {
                let gap = e.gap("last_stored_commit", "last_stored_lsn");
                match at {
                    Some(i) if open[i].from_lsn == gap.from_lsn => {}
                    Some(i) => {
                        done.push(open.remove(i));
                        open.push(gap);
                    }
                    None => open.push(gap),
                }
            }
            Some(SLOT_RECREATED | SOURCE_MOVED) => {
                let mut gap = match at {
                    Some(i) => open.remove(i),
                    None => Gap {
                        moved: (e.text("event").as_deref() == Some(SOURCE_MOVED))
                            .then(|| Moved::of(&e.details)),
                        ..e.gap("from_commit", "from_lsn")
                    },
                };
                gap.to = e.time("to_time");
                gap.to_lsn = e.text("to_lsn");
                gap.ended_by = Some(e.id);
                done.push(gap);
            }
            _ => {}
        }
    }
    done.extend(open);
    done.sort_by_key(|g| g.anchor);
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: i64, details: Value) -> GapEvent {
        GapEvent {
            id,
            at: DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap_or_default(),
            source: "app".into(),
            details,
        }
    }

    fn lost(id: i64, slot: &str, lsn: &str) -> GapEvent {
        event(
            id,
            json!({"event": "slot_lost", "slot": slot, "found": "the slot's wal_status is lost",
                   "last_stored_lsn": lsn, "last_stored_commit": "2024-05-01T10:00:00.000000Z"}),
        )
    }

    fn recreated(id: i64, slot: &str, from: &str, to: &str) -> GapEvent {
        event(
            id,
            json!({"event": "slot_recreated", "slot": slot, "found": "the slot does not exist on the source",
                   "from_lsn": from, "from_commit": null, "to_lsn": to,
                   "to_time": "2024-05-01T11:00:00.000000Z"}),
        )
    }

    #[test]
    fn a_loss_and_its_recreation_are_one_gap_placed_at_the_loss() {
        let gaps = fold(&[
            lost(10, "s", "0/100"),
            lost(12, "s", "0/100"),
            recreated(15, "s", "0/100", "0/900"),
        ]);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        let g = &gaps[0];
        assert_eq!((g.anchor, g.ended_by), (10, Some(15)));
        assert_eq!(g.from_lsn.as_deref(), Some("0/100"));
        assert_eq!(g.to_lsn.as_deref(), Some("0/900"));
        assert!(g.from.is_some() && g.to.is_some() && !g.missing);
    }

    #[test]
    fn an_open_loss_and_a_recreation_alone_are_gaps_too() {
        let gaps = fold(&[
            recreated(3, "s", "0/50", "0/60"),
            event(4, json!({"event": "something_else"})),
            lost(7, "s", "0/60"),
        ]);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!((gaps[0].anchor, gaps[0].ended_by), (3, Some(3)));
        assert!(gaps[0].missing && gaps[0].from.is_none());
        assert_eq!((gaps[1].anchor, gaps[1].to), (7, None));
    }

    #[test]
    fn two_sources_with_the_same_slot_name_have_gaps_of_their_own() {
        let mut other = lost(5, "s", "0/200");
        other.source = "shop-us".into();
        let gaps = fold(&[
            lost(1, "s", "0/100"),
            other,
            recreated(9, "s", "0/100", "0/900"),
        ]);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!(
            (gaps[0].source.as_str(), gaps[0].ended_by),
            ("app", Some(9))
        );
        assert_eq!(
            (gaps[1].source.as_str(), gaps[1].ended_by),
            ("shop-us", None)
        );
    }

    #[test]
    fn a_move_to_another_server_is_a_gap_and_ends_an_open_loss() {
        let moved = |id| {
            event(
                id,
                json!({"event": "source_moved", "slot": "s", "found": "the source moved to another server",
                       "from_lsn": "0/100", "from_commit": "2024-05-01T10:00:00.000000Z",
                       "to_lsn": "0/20", "to_time": "2024-05-01T11:00:00.000000Z",
                       "from_server": {"system_identifier": "7312", "database_oid": 16384, "database": "app"},
                       "to_server": {"system_identifier": "7399", "database_oid": 16384, "database": "app"}}),
            )
        };
        let gaps = fold(&[moved(4), lost(6, "s", "0/30"), moved(8)]);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!((gaps[0].anchor, gaps[0].ended_by), (4, Some(4)));
        assert_eq!(gaps[0].to_lsn.as_deref(), Some("0/20"));
        assert!(gaps[0].from.is_some() && gaps[0].to.is_some() && !gaps[0].missing);
        assert_eq!(gaps[0].moved, Some(Moved::Server), "{gaps:?}");
        // A loss the move ended stays a loss: the slot went first.
        assert_eq!((gaps[1].anchor, gaps[1].ended_by), (6, Some(8)));
        assert_eq!(gaps[1].moved, None, "{gaps:?}");
    }

    #[test]
    fn a_move_on_the_same_server_is_a_move_to_another_database() {
        let side =
            |oid, db| json!({"system_identifier": "7312", "database_oid": oid, "database": db});
        let gaps = fold(&[event(
            3,
            json!({"event": "source_moved", "slot": "s", "from_lsn": "0/100", "to_lsn": "0/200",
                   "from_server": side(16384, "app"), "to_server": side(16390, "app_restored")}),
        )]);
        assert_eq!(
            gaps[0].moved,
            Some(Moved::Database {
                from: "app".into(),
                to: "app_restored".into()
            })
        );
    }

    #[test]
    fn overlap_with_a_time_range() {
        let g = fold(&[lost(1, "s", "0/1"), recreated(2, "s", "0/1", "0/2")]).remove(0);
        let t = |h: u32| {
            DateTime::parse_from_rfc3339(&format!("2024-05-01T{h:02}:00:00Z"))
                .map(|t| t.with_timezone(&Utc))
                .ok()
        };
        assert!(g.overlaps(None, None));
        assert!(g.overlaps(t(10), t(11)));
        assert!(g.overlaps(None, t(12)) && g.overlaps(t(9), None));
        assert!(!g.overlaps(t(11), None), "ends at 11:00");
        assert!(!g.overlaps(None, t(10)), "starts after 10:00");
        let open = fold(&[lost(1, "s", "0/1")]).remove(0);
        assert!(open.overlaps(t(23), None));
    }
}
