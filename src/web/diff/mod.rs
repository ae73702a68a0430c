//! What an entry changed, column by column; how a changed value is shown
//! inline ([`Inline`]: JSON documents by key path ([`paths`]), long text by
//! line and word ([`lines`])); and the SQL that would undo an entry
//! ([`revert`]).
//!
//! Everything here works on the stored JSON text, no I/O. Values keep the
//! exact text the store holds (`RawValue`), so "changed" means the captured
//! text differs, which is how the capture side computes `changed_columns` too.

pub mod columns;
pub mod lines;
pub mod paths;
pub mod revert;

pub use columns::{column_diffs, object_keys, pretty_json, Change, ColumnDiff, Members, ValueView};
pub use lines::{text_diff, text_diff_within, wants_text_diff, DiffLine};
pub use paths::{path_diff, path_diff_until, PathDiff};
pub use revert::{quote_string, revert_sql, sql_literal};

use std::time::Instant;

use serde_json::value::RawValue;

/// A changed value shown across the before and after columns.
pub struct Inline {
    /// For JSON documents: the differences by key path, shown first.
    pub paths: Option<PathDiff>,
    /// The line diff (of JSON pretty-printed): alone for long text, folded
    /// under the paths for documents.
    pub lines: Vec<DiffLine>,
}

impl Inline {
    /// How a column is shown inline, if it is: a changed JSON document, or
    /// long text; compared until `until` at the latest (the page's budget).
    pub fn of(d: &ColumnDiff, until: Instant) -> Option<Inline> {
        let (Change::Changed, Some(b), Some(a)) = (d.change, &d.before, &d.after) else {
            return None;
        };
        let paths = path_diff_until(&d.column, b, a, until);
        if paths.is_none() && !wants_text_diff(b, a) {
            return None;
        }
        Some(Inline {
            paths,
            lines: text_diff_within(b, a, until.saturating_duration_since(Instant::now())),
        })
    }

    /// Whether the column would be shown inline: what a page that ran out
    /// of time leaves out.
    pub fn wanted(d: &ColumnDiff) -> bool {
        match (d.change, &d.before, &d.after) {
            (Change::Changed, Some(b), Some(a)) => {
                let is_doc = |r: &RawValue| matches!(r.get().as_bytes().first(), Some(b'{' | b'['));
                is_doc(b) || is_doc(a) || wants_text_diff(b, a)
            }
            _ => false,
        }
    }

    /// Whether the line diff is folded away under the paths.
    pub fn lines_folded(&self) -> bool {
        self.paths.as_ref().is_some_and(|p| !p.edits.is_empty())
    }
}
