//! What an entry changed, column by column; inline line and word diffs of
//! long values (the `similar` crate); and the SQL that would undo an entry.
//!
//! Everything here works on the stored JSON text, no I/O. Values keep the
//! exact text the store holds (`RawValue`), so "changed" means the captured
//! text differs, which is how the capture side computes `changed_columns` too.

use std::fmt::Write as _;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use similar::{ChangeTag, TextDiff};

use crate::pg::quote_ident;
use crate::store::stored::StoredEntry;

/// A JSON object's members in document order, values as their JSON text.
pub struct Members(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    /// Parses object text; anything else (corrupt or not an object) is empty.
    pub fn parse(text: Option<&str>) -> Members {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Members(Vec::new()))
    }

    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The member names of a JSON object, in order.
pub fn object_keys(text: &str) -> Vec<String> {
    Members::parse(Some(text)).names()
}

/// How one column fared in an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// UPDATE: the value differs.
    Changed,
    /// UPDATE: the same value before and after.
    Unchanged,
    /// INSERT: every value is new.
    Added,
    /// DELETE: every value is gone.
    Removed,
    /// UPDATE whose before image lacks this column (REPLICA IDENTITY not FULL): the old value was not captured.
    Unknown,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Unknown => "unknown",
        }
    }
}

/// One column of an entry: its values before and after, as stored JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ColumnDiff {
    pub column: String,
    pub change: Change,
    /// The value before (JSON, `null` for SQL NULL); absent where there is no before value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub before: Option<Box<RawValue>>,
    /// The value after; absent where there is no after value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub after: Option<Box<RawValue>>,
}

/// The entry's columns: changed first, then those whose old value is
/// unknown, then unchanged, each group in table order.
pub fn column_diffs(entry: &StoredEntry) -> Vec<ColumnDiff> {
    let before = Members::parse(entry.before());
    let after = Members::parse(entry.after());
    let mut out = Vec::new();
    match entry.action.as_str() {
        // A DDL entry's after holds what the event trigger recorded (command, object, statement).
        "INSERT" | "DDL" => {
            for (name, v) in after.0 {
                out.push(ColumnDiff {
                    column: name,
                    change: Change::Added,
                    before: None,
                    after: Some(v),
                });
            }
        }
        "DELETE" => {
            for (name, v) in before.0 {
                out.push(ColumnDiff {
                    column: name,
                    change: Change::Removed,
                    before: Some(v),
                    after: None,
                });
            }
        }
        "UPDATE" => {
            let listed: Option<Vec<String>> = entry
                .changed_columns()
                .and_then(|t| serde_json::from_str(t).ok());
            for (name, a) in &after.0 {
                let b = before.get(name);
                let change = match (b, &listed) {
                    (None, _) => Change::Unknown,
                    (Some(_), Some(list)) => {
                        if list.contains(name) {
                            Change::Changed
                        } else {
                            Change::Unchanged
                        }
                    }
                    (Some(b), None) => {
                        if b.get() == a.get() {
                            Change::Unchanged
                        } else {
                            Change::Changed
                        }
                    }
                };
                out.push(ColumnDiff {
                    column: name.clone(),
                    change,
                    before: b.map(to_owned_raw),
                    after: Some(a.clone()),
                });
            }
            // A column only in the before image (not expected from wal2json, but shown rather than lost).
            for (name, b) in &before.0 {
                if after.get(name).is_none() {
                    out.push(ColumnDiff {
                        column: name.clone(),
                        change: Change::Changed,
                        before: Some(b.clone()),
                        after: None,
                    });
                }
            }
            let rank = |c: Change| match c {
                Change::Changed => 0,
                Change::Unknown => 1,
                _ => 2,
            };
            out.sort_by_key(|d| rank(d.change));
        }
        _ => {}
    }
    out
}

fn to_owned_raw(v: &RawValue) -> Box<RawValue> {
    v.to_owned()
}

/// A value as the page shows it.
#[derive(Debug, Clone)]
pub struct ValueView {
    /// `null`, `empty`, `text`, `number`, `bool` or `json`: the CSS class.
    pub kind: &'static str,
    pub text: String,
    /// Long or multi-line: shown as a block, not inline.
    pub block: bool,
}

impl ValueView {
    pub fn of(raw: &RawValue) -> ValueView {
        let t = raw.get();
        let (kind, text) = match t.as_bytes().first() {
            Some(b'n') => ("null", "NULL".to_owned()),
            Some(b't' | b'f') => ("bool", t.to_owned()),
            Some(b'"') => {
                let s: String = serde_json::from_str(t).unwrap_or_else(|_| t.to_owned());
                if s.is_empty() {
                    ("empty", String::new())
                } else {
                    ("text", s)
                }
            }
            Some(b'{' | b'[') => ("json", pretty_json(t)),
            _ => ("number", t.to_owned()),
        };
        let block = text.contains('\n') || text.chars().count() > 120;
        ValueView { kind, text, block }
    }
}

/// JSON pretty-printed (object keys sorted, so two versions line up), or the text as is.
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// One line of an inline diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    /// `del`, `ins`, `eq`, or `gap` (unchanged lines left out).
    pub tag: &'static str,
    pub old_no: Option<usize>,
    pub new_no: Option<usize>,
    /// Pieces of the line; `true` marks the words that changed.
    pub parts: Vec<(bool, String)>,
}

/// Whether a changed value deserves an inline diff: long text, text over
/// several lines, or a JSON document.
pub fn wants_text_diff(before: &RawValue, after: &RawValue) -> bool {
    let (b, a) = (ValueView::of(before), ValueView::of(after));
    let texty = |v: &ValueView| matches!(v.kind, "text" | "json" | "empty");
    texty(&b)
        && texty(&a)
        && (b.kind == "json"
            || a.kind == "json"
            || b.block
            || a.block
            || b.text.len() + a.text.len() > 80)
}

/// Line diff of two values with the changed words marked, JSON pretty-printed
/// first; unchanged stretches are cut to three lines of context.
pub fn text_diff(before: &RawValue, after: &RawValue) -> Vec<DiffLine> {
    let (mut old, mut new) = (ValueView::of(before).text, ValueView::of(after).text);
    // A last line without its newline must still equal the same line with one.
    for text in [&mut old, &mut new] {
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    let diff = TextDiff::configure()
        .algorithm(similar::Algorithm::Patience)
        .timeout(std::time::Duration::from_millis(250))
        .diff_lines(old.as_str(), new.as_str());
    let mut lines = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            lines.push(DiffLine {
                tag: "gap",
                old_no: None,
                new_no: None,
                parts: Vec::new(),
            });
        }
        for op in group {
            for change in diff.iter_inline_changes(op) {
                let tag = match change.tag() {
                    ChangeTag::Delete => "del",
                    ChangeTag::Insert => "ins",
                    ChangeTag::Equal => "eq",
                };
                let mut parts: Vec<(bool, String)> = change
                    .iter_strings_lossy()
                    .map(|(emph, s)| (emph, s.into_owned()))
                    .collect();
                if let Some(last) = parts.last_mut() {
                    if last.1.ends_with('\n') {
                        last.1.pop();
                    }
                }
                parts.retain(|p| !p.1.is_empty());
                lines.push(DiffLine {
                    tag,
                    old_no: change.old_index().map(|n| n + 1),
                    new_no: change.new_index().map(|n| n + 1),
                    parts,
                });
            }
        }
    }
    lines
}

/// A SQL literal for a stored value. Strings (and JSON documents, numerics
/// stored as strings, byteas as `\x…`) become untyped string literals, which
/// PostgreSQL types as the target column; numbers and booleans stay bare.
pub fn sql_literal(raw: &RawValue) -> String {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'n') => "NULL".into(),
        Some(b't') => "TRUE".into(),
        Some(b'f') => "FALSE".into(),
        Some(b'"') => {
            quote_string(&serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_owned()))
        }
        Some(b'{' | b'[') => quote_string(t),
        _ => t.to_owned(),
    }
}

/// `'…'` with quotes doubled; `E'…'` where there are backslashes, so the
/// literal means the same whatever `standard_conforming_strings` is.
pub fn quote_string(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The statement that puts the row back as it was before `entry`, or why there is none.
pub fn revert_sql(entry: &StoredEntry, diffs: &[ColumnDiff]) -> Result<String, String> {
    let table = format!(
        "{}.{}",
        quote_ident(&entry.schema),
        quote_ident(&entry.table)
    );
    let key = Members::parse(entry.primary_key());
    if entry.action == "DDL" {
        return Err(
            "a schema change is not reverted from the audit trail; write its inverse by hand"
                .into(),
        );
    }
    if entry.action == "EVENT" {
        return Err("this is one of pgtrail's own events, not a change to a row".into());
    }
    if entry.action == "TRUNCATE" {
        return Err("a TRUNCATE removes every row at once and its entry holds no rows, so it cannot be reverted from here".into());
    }
    if key.0.is_empty() {
        return Err("the table has no primary key, so a statement could not tell this row from identical ones; pgtrail writes no revert for it".into());
    }
    let key_cond = key
        .0
        .iter()
        .map(|(k, v)| format!("{} = {}", quote_ident(k), sql_literal(v)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut sql = format!(
        "-- Reverts entry {} ({} committed {}, xid {}).\n-- Review before running: pgtrail never runs it.\n",
        entry.id,
        entry.action,
        entry.committed_at.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
        entry.xid.unwrap_or_default()
    );
    match entry.action.as_str() {
        "INSERT" => {
            let _ = write!(sql, "DELETE FROM {table}\nWHERE {key_cond};");
        }
        "UPDATE" => {
            if let Some(unknown) = diffs.iter().find(|d| d.change == Change::Unknown) {
                return Err(format!(
                    "the before image lacks column {:?} and others (the table's REPLICA IDENTITY is not FULL), so the old values are unknown",
                    unknown.column
                ));
            }
            let sets: Vec<String> = diffs
                .iter()
                .filter(|d| d.change == Change::Changed)
                .filter_map(|d| {
                    d.before
                        .as_ref()
                        .map(|b| format!("{} = {}", quote_ident(&d.column), sql_literal(b)))
                })
                .collect();
            if sets.is_empty() {
                sql.push_str("-- Nothing to revert: this update changed no column.");
            } else {
                let _ = write!(
                    sql,
                    "UPDATE {table}\nSET {}\nWHERE {key_cond};",
                    sets.join(",\n    ")
                );
            }
        }
        "DELETE" => {
            let columns: Vec<&ColumnDiff> = diffs.iter().filter(|d| d.before.is_some()).collect();
            if columns.len() == key.0.len() && columns.iter().all(|c| key.get(&c.column).is_some())
            {
                sql.push_str(
                    "-- Only the key was captured (REPLICA IDENTITY is not FULL): if the table has\n\
                     -- other columns, their values are not in the audit trail.\n",
                );
            }
            let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.column)).collect();
            let values: Vec<String> = columns
                .iter()
                .filter_map(|c| c.before.as_deref().map(sql_literal))
                .collect();
            let _ = write!(
                sql,
                "INSERT INTO {table} ({})\nVALUES ({});",
                names.join(", "),
                values.join(", ")
            );
        }
        other => return Err(format!("no revert for action {other}")),
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(
        action: &str,
        pk: Option<&str>,
        before: Option<&str>,
        after: Option<&str>,
        changed: Option<&str>,
    ) -> StoredEntry {
        StoredEntry {
            id: 7,
            committed_at: chrono::Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap(),
            xid: Some(900),
            lsn: Some("0/1".into()),
            schema: "public".into(),
            table: "Order \"Items\"".into(),
            action: action.into(),
            json: [
                pk.map(Into::into),
                before.map(Into::into),
                after.map(Into::into),
                changed.map(Into::into),
                Some("{}".into()),
                None,
            ],
        }
    }

    #[test]
    fn update_puts_changed_columns_first() {
        let e = entry(
            "UPDATE",
            Some(r#"{"id":1}"#),
            Some(r#"{"id":1,"a":"x","b":2}"#),
            Some(r#"{"id":1,"a":"x","b":3}"#),
            Some(r#"["b"]"#),
        );
        let d = column_diffs(&e);
        assert_eq!(
            d.iter()
                .map(|c| (c.column.as_str(), c.change))
                .collect::<Vec<_>>(),
            [
                ("b", Change::Changed),
                ("id", Change::Unchanged),
                ("a", Change::Unchanged)
            ]
        );
        let sql = revert_sql(&e, &d).unwrap();
        assert!(
            sql.ends_with(
                "UPDATE \"public\".\"Order \"\"Items\"\"\"\nSET \"b\" = 2\nWHERE \"id\" = 1;"
            ),
            "{sql}"
        );
    }

    #[test]
    fn identity_default_update_has_unknown_columns_and_no_revert() {
        let e = entry(
            "UPDATE",
            Some(r#"{"id":1}"#),
            Some(r#"{"id":1}"#),
            Some(r#"{"id":1,"a":"y"}"#),
            None,
        );
        let d = column_diffs(&e);
        assert_eq!(d[0].change, Change::Unknown);
        assert!(revert_sql(&e, &d).unwrap_err().contains("REPLICA IDENTITY"));
    }

    #[test]
    fn literals_are_quoted_for_any_setting() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(sql_literal(&raw(r#""it's""#)), "'it''s'");
        assert_eq!(sql_literal(&raw(r#""a\\b'""#)), r"E'a\\b'''");
        assert_eq!(sql_literal(&raw("null")), "NULL");
        assert_eq!(sql_literal(&raw("12.5")), "12.5");
        assert_eq!(sql_literal(&raw(r#"{"k": "v'"}"#)), r#"'{"k": "v''"}'"#);
    }

    #[test]
    fn delete_reverts_to_insert_and_insert_to_delete() {
        let e = entry(
            "DELETE",
            Some(r#"{"id":5}"#),
            Some(r#"{"id":5,"name":"x"}"#),
            None,
            None,
        );
        let sql = revert_sql(&e, &column_diffs(&e)).unwrap();
        assert!(sql.contains("INSERT INTO \"public\".\"Order \"\"Items\"\"\" (\"id\", \"name\")\nVALUES (5, 'x');"), "{sql}");
        let e = entry(
            "INSERT",
            Some(r#"{"id":5}"#),
            None,
            Some(r#"{"id":5,"name":"x"}"#),
            None,
        );
        assert!(revert_sql(&e, &column_diffs(&e))
            .unwrap()
            .contains("DELETE FROM"));
        let e = entry("INSERT", None, None, Some(r#"{"name":"x"}"#), None);
        assert!(revert_sql(&e, &column_diffs(&e))
            .unwrap_err()
            .contains("no primary key"));
    }

    #[test]
    fn json_documents_diff_by_line_with_words_marked() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let (b, a) = (
            raw(r#"{"a":1,"b":"old words here","c":[1,2,3]}"#),
            raw(r#"{"a":1,"b":"new words here","c":[1,2,3]}"#),
        );
        assert!(wants_text_diff(&b, &a));
        let lines = text_diff(&b, &a);
        let del = lines.iter().find(|l| l.tag == "del").unwrap();
        assert!(
            del.parts.iter().any(|(emph, s)| *emph && s.contains("old")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.tag == "ins"));
    }
}
