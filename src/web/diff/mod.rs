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
pub use lines::{text_diff, wants_text_diff, DiffLine};
pub use paths::{path_diff, PathDiff};
pub use revert::{quote_string, revert_sql, sql_literal};

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
    /// long text.
    pub fn of(d: &ColumnDiff) -> Option<Inline> {
        let (Change::Changed, Some(b), Some(a)) = (d.change, &d.before, &d.after) else {
            return None;
        };
        let paths = path_diff(&d.column, b, a);
        if paths.is_none() && !wants_text_diff(b, a) {
            return None;
        }
        Some(Inline {
            paths,
            lines: text_diff(b, a),
        })
    }

    /// Whether the line diff is folded away under the paths.
    pub fn lines_folded(&self) -> bool {
        self.paths.as_ref().is_some_and(|p| !p.edits.is_empty())
    }
}
