//! The row's state at a time, reconstructed from the chain of its entries'
//! images ([`as_of`]), and the statement that brings the row back to it
//! ([`restore_sql`]).
//!
//! The state as of a time is the `after` image of the row's latest entry
//! committed at or before it (none after a DELETE). An UPDATE's image lacks
//! an unchanged TOASTed column when the table's REPLICA IDENTITY is not
//! FULL; such a column is carried from the earlier entries, and marked so.
//! The audit trail cannot know the state, and says so rather than guess:
//! before the row's first captured entry (it may have existed before
//! capture began), and when an audit gap (a stretch of changes that were not
//! captured, `store::gaps`) lies between that entry and the time. A
//! TRUNCATE of the table in between removed the row.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::store::gaps::Gap;
use crate::store::stored::StoredEntry;
use crate::web::diff::revert::{qualified, Statement};
use crate::web::diff::Members;
use crate::web::log::rows::short_time;

/// The entry a state comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: i64,
    pub action: String,
    pub at: DateTime<Utc>,
}

impl Source {
    fn of(e: &StoredEntry) -> Source {
        Source {
            id: e.id,
            action: e.action.clone(),
            at: e.committed_at,
        }
    }
}

/// One column of a state.
#[derive(Debug)]
pub struct StateColumn {
    pub name: String,
    /// The stored value; `None` where it cannot be known.
    pub value: Option<Box<RawValue>>,
    /// The earlier entry the value was carried from, when the state's own
    /// entry does not hold it (an unchanged TOASTed column).
    pub carried_from: Option<i64>,
}

/// What the audit trail says of the row at a time.
#[derive(Debug)]
pub enum RowState {
    /// The row existed with these columns.
    Present {
        columns: Vec<StateColumn>,
        from: Source,
    },
    /// The row did not exist.
    Absent { why: String, from: Source },
    /// The audit trail cannot say.
    Unknown { why: String },
}

/// What [`as_of`] works from.
pub struct Chain<'a> {
    /// The row's entries committed at or before the time, oldest first:
    /// the latest ones, or all of them.
    pub entries: &'a [StoredEntry],
    /// The first TRUNCATE of the table after the last of them, at or before the time.
    pub truncate: Option<&'a StoredEntry>,
    /// When the table's definition last changed (its latest DDL entry) before
    /// the last of them: a column is not carried from an image older than that.
    pub ddl: Option<DateTime<Utc>>,
    /// Every recorded audit gap.
    pub gaps: &'a [Gap],
}

/// The gap, if any, that lies between `since` and `until`.
fn gap_between(gaps: &[Gap], since: DateTime<Utc>, until: DateTime<Utc>) -> Option<&Gap> {
    gaps.iter().find(|g| g.overlaps(Some(since), Some(until)))
}

fn gap_text(g: &Gap) -> String {
    match (g.from, g.to) {
        (Some(f), Some(t)) => format!("between {} and {}", when(&f), when(&t)),
        (None, Some(t)) => format!("before {}", when(&t)),
        (Some(f), None) => format!("after {}", when(&f)),
        (None, None) => format!("up to {}", when(&g.found_at)),
    }
}

fn when(t: &DateTime<Utc>) -> String {
    format!("{} UTC", short_time(t))
}

/// The row's state at `at`, from `chain`.
pub fn as_of(chain: &Chain, at: DateTime<Utc>) -> RowState {
    let Some(last) = chain.entries.last() else {
        return RowState::Unknown {
            why: format!(
                "No entry of this row was captured at or before {}: the audit trail cannot say whether the row existed then \
                 (it may have, before capture began).",
                when(&at)
            ),
        };
    };
    if let Some(g) = gap_between(chain.gaps, last.committed_at, at) {
        return RowState::Unknown {
            why: format!(
                "Changes {} were not captured (an audit gap), after this row's entry {} of {}: \
                 what happened to the row then is not in the audit trail.",
                gap_text(g),
                last.id,
                when(&last.committed_at)
            ),
        };
    }
    if let Some(t) = chain.truncate {
        return RowState::Absent {
            why: format!(
                "The table was truncated at {} (entry {}), which removed the row.",
                when(&t.committed_at),
                t.id
            ),
            from: Source::of(t),
        };
    }
    match last.action.as_str() {
        "DELETE" => RowState::Absent {
            why: format!(
                "The row was deleted at {} (entry {}).",
                when(&last.committed_at),
                last.id
            ),
            from: Source::of(last),
        },
        "INSERT" | "UPDATE" => RowState::Present {
            columns: columns(chain, last),
            from: Source::of(last),
        },
        other => RowState::Unknown {
            why: format!(
                "The row's latest entry, {}, is a {other}, which holds no row.",
                last.id
            ),
        },
    }
}

/// The state's columns: the last entry's `after`, and the columns it lacks
/// (an unchanged TOASTed value is left out of an UPDATE's new image).
///
/// Where the UPDATE's `before` is a whole row (REPLICA IDENTITY FULL), it
/// holds those values, unchanged, and every column the table then had:
/// nothing is carried from older entries, which may hold a column dropped or
/// ignored since. Otherwise a missing column is carried from the nearest
/// earlier image (back to the row's INSERT), and is unknown across a DELETE,
/// an audit gap or a change of the table's definition.
fn columns(chain: &Chain, last: &StoredEntry) -> Vec<StateColumn> {
    let known = |(name, value)| StateColumn {
        name,
        value: Some(value),
        carried_from: None,
    };
    let mut out: Vec<StateColumn> = Members::parse(last.after())
        .0
        .into_iter()
        .map(known)
        .collect();
    if last.action == "INSERT" {
        return out;
    }
    let before = Members::parse(last.before());
    let key = Members::parse(last.primary_key());
    if before.0.iter().any(|(name, _)| key.get(name).is_none()) {
        for (name, value) in before.0 {
            if !out.iter().any(|c| c.name == name) {
                out.push(known((name, value)));
            }
        }
        return out;
    }
    // Walk back while the row's images chain up: each earlier INSERT or UPDATE,
    // no gap and no change of the table's definition in between.
    let mut reachable = true;
    let mut later = last.committed_at;
    for e in chain.entries.iter().rev().skip(1) {
        let after = Members::parse(e.after());
        reachable = reachable
            && e.action != "DELETE"
            && chain.ddl.is_none_or(|ddl| ddl <= e.committed_at)
            && gap_between(chain.gaps, e.committed_at, later).is_none();
        for (name, value) in after.0 {
            if out.iter().any(|c| c.name == name) {
                continue;
            }
            out.push(StateColumn {
                name,
                value: reachable.then_some(value),
                carried_from: reachable.then_some(e.id),
            });
        }
        // An INSERT's image is whole: nothing before it counts.
        if e.action == "INSERT" {
            break;
        }
        later = e.committed_at;
    }
    out
}

/// The statement that brings the row back to `state` whatever it is now,
/// or why there is none. `key` is the row's primary key; `at_text` the time.
pub fn restore_sql(
    state: &RowState,
    schema: &str,
    table: &str,
    key: &Members,
    at_text: &str,
) -> Result<String, String> {
    let (statement, ends, from) = match state {
        RowState::Unknown { why } => return Err(why.clone()),
        RowState::Absent { from, .. } => (Statement::Delete, "does not exist", from),
        RowState::Present { columns, from } => {
            let unknown: Vec<&str> = columns
                .iter()
                .filter(|c| c.value.is_none())
                .map(|c| c.name.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "the values of {} then are not in the audit trail, so a statement would have to guess them",
                    unknown.join(", ")
                ));
            }
            let values = columns
                .iter()
                .filter_map(|c| c.value.as_deref().map(|v| (c.name.as_str(), v)))
                .collect();
            (Statement::Upsert(values), "has these values", from)
        }
    };
    let body = statement
        .sql(&qualified(schema, table), key)
        .map_err(|e| e.message())?;
    Ok(format!(
        "-- Brings the row back to its state as of {at_text}, which entry {} ({} committed {}) left.\n\
         -- Whatever the row is now, afterwards it {ends}. Columns the audit trail does not hold are\n\
         -- left as they are. Review before running: pgtrail never runs it.\n{body}",
        from.id,
        from.action,
        from.at.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
    ))
}

#[cfg(test)]
mod tests;
