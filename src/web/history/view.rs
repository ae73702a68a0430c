//! The row as of a time, as the history page shows it: the state's columns
//! (or why the row did not exist, or why its state is unknown) and the
//! statement that brings the row back to it.

use chrono::{DateTime, Utc};

use super::states::RowState;
use crate::store::stored::StoredEntry;
use crate::web::diff::ValueView;
use crate::web::log::rows::{long_time, Context};

/// One column of the state.
pub struct StateColumnView {
    pub name: String,
    /// `None`: not known.
    pub value: Option<ValueView>,
    /// Where the value comes from when not the state's own entry, or empty.
    pub note: String,
}

pub struct AsOfView {
    /// `present`, `absent` or `unknown`: the CSS class.
    pub kind: &'static str,
    /// The time, in full, UTC.
    pub time: String,
    /// The time as asked for, when it differs from `time`'s text.
    pub asked: String,
    /// What the state is and where it comes from.
    pub sentence: String,
    /// The entry it comes from.
    pub from_url: Option<String>,
    pub columns: Vec<StateColumnView>,
    pub sql: Option<String>,
    /// Why there is no statement, when there is none.
    pub sql_note: String,
}

impl AsOfView {
    pub fn new(
        state: RowState,
        sql: Result<String, String>,
        at: DateTime<Utc>,
        asked: &str,
        last: Option<&StoredEntry>,
    ) -> AsOfView {
        let who = last
            .map(|e| {
                let c = Context::of(e);
                match (c.actor, c.db_user) {
                    (Some(a), _) => format!(" by {a}"),
                    (None, Some(u)) => format!(" by the database role {u}"),
                    (None, None) => String::new(),
                }
            })
            .unwrap_or_default();
        let (kind, sentence, from_url, columns) = match state {
            RowState::Present { columns, from } => (
                "present",
                format!(
                    "The row as entry {} ({} at {} UTC{who}) left it.",
                    from.id,
                    from.action,
                    long_time(&from.at)
                ),
                Some(format!("/entries/{}", from.id)),
                columns
                    .into_iter()
                    .map(|c| StateColumnView {
                        note: match (&c.value, c.carried_from) {
                            (None, _) => "not known: the entry's image lacks it, and an audit gap or a DELETE lies before".into(),
                            (Some(_), Some(id)) => format!(
                                "unchanged, so not in the entry's image (REPLICA IDENTITY not FULL): as entry {id} left it"
                            ),
                            (Some(_), None) => String::new(),
                        },
                        name: c.name,
                        value: c.value.as_deref().map(ValueView::of),
                    })
                    .collect(),
            ),
            RowState::Absent { why, from } => (
                "absent",
                format!("The row did not exist. {why}"),
                Some(format!("/entries/{}", from.id)),
                Vec::new(),
            ),
            RowState::Unknown { why } => ("unknown", format!("Not known. {why}"), None, Vec::new()),
        };
        let time = format!("{} UTC", long_time(&at));
        let (sql, sql_note) = match sql {
            Ok(s) => (Some(s), String::new()),
            Err(why) => (None, why),
        };
        AsOfView {
            kind,
            asked: if asked.is_empty() || time.starts_with(asked) {
                String::new()
            } else {
                asked.to_owned()
            },
            time,
            sentence,
            from_url,
            columns,
            sql,
            sql_note,
        }
    }
}
