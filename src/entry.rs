//! The audit entry: one committed row change of a captured table, in the shape
//! it is stored and exported. Also the value mapping from wal2json's
//! representation to the entry's JSON (numeric → exact string, json → nested,
//! bytea → `\x…`), which is the one place that mapping lives.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::decode::{Column, TxnBoundary};
use crate::lsn::Lsn;
use crate::table::TableName;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Insert,
    Update,
    Delete,
    Truncate,
    /// A schema change (CREATE, ALTER, DROP, …) on a captured schema.
    Ddl,
    /// One of pgtrail's own events (a sign-in, an export, …): the audit log of the audit log.
    Event,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Insert,
        Action::Update,
        Action::Delete,
        Action::Truncate,
        Action::Ddl,
        Action::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "INSERT",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Truncate => "TRUNCATE",
            Action::Ddl => "DDL",
            Action::Event => "EVENT",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown action {0:?}: use INSERT, UPDATE, DELETE, TRUNCATE, DDL or EVENT")]
pub struct UnknownAction(String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// The source transaction an entry belongs to; shared by all its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub xid: u64,
    pub committed_at: String,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
}

impl From<TxnBoundary> for Transaction {
    fn from(b: TxnBoundary) -> Self {
        Transaction {
            xid: b.xid,
            committed_at: b.committed_at,
            commit_lsn: b.commit_lsn,
            end_lsn: b.end_lsn,
        }
    }
}

/// One audit entry. The row images are JSON object text, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub txn: Arc<Transaction>,
    pub table: TableName,
    pub action: Action,
    /// `{"id":5}`; `None` for a table without a primary key, and for TRUNCATE.
    pub primary_key: Option<String>,
    /// The old row image as the server sent it; `None` for INSERT and TRUNCATE.
    pub before: Option<String>,
    /// The new row; `None` for DELETE and TRUNCATE.
    pub after: Option<String>,
    /// `["status"]`; `None` where the before image is incomplete, so what changed is unknown.
    pub changed_columns: Option<String>,
    /// Who made the change: the `context` object as JSON text (see [`crate::context`]).
    pub context: Arc<str>,
    /// Extra facts as a JSON object (the leaf partition, TRUNCATE options); `None` when there are none.
    pub details: Option<String>,
}

/// The store's `row_key`: a stable 64-bit hash that finds every entry of one
/// row. `primary_key` is the entry's key JSON exactly as stored (`{"id":5}`).
/// Fields are separated by a NUL byte, which no identifier can contain.
pub fn row_key(table: &TableName, primary_key: &str) -> i64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(table.schema.as_bytes());
    h.update(b"\0");
    h.update(table.name.as_bytes());
    h.update(b"\0");
    h.update(primary_key.as_bytes());
    h.digest() as i64
}

/// The context of a change that came with no context message (trigger
/// missing, or replication role `replica`): every field present, all null.
pub const EMPTY_CONTEXT: &str = concat!(
    r#"{"db_user":null,"client_addr":null,"application_name":null,"actor":null,"source":null,"remarks":null,"#,
    r#""current_user":null,"client_port":null,"backend_pid":null}"#
);

/// A column's value as entry JSON text.
pub fn entry_value<'a>(type_name: &str, raw: &'a RawValue) -> Cow<'a, str> {
    let text = raw.get();
    if text == "null" {
        return Cow::Borrowed(text);
    }
    match base_type(type_name) {
        // wal2json prints numeric as a bare JSON number; keep it exact, as a string.
        "numeric" => Cow::Owned(format!("\"{text}\"")),
        // bytea arrives as bare hex; PostgreSQL's own text form has the \x prefix.
        "bytea" if text.starts_with('"') => Cow::Owned(format!("\"\\\\x{}", &text[1..])),
        // json and jsonb arrive as a JSON string holding the document: nest it.
        "json" | "jsonb" => match serde_json::from_str::<String>(text) {
            Ok(doc) if serde_json::from_str::<&RawValue>(&doc).is_ok() => Cow::Owned(doc),
            _ => Cow::Borrowed(text),
        },
        _ => Cow::Borrowed(text),
    }
}

/// `numeric(10,2)` → `numeric`; array and other types pass unchanged.
fn base_type(type_name: &str) -> &str {
    match type_name.find('(') {
        Some(i) if !type_name.ends_with("[]") => &type_name[..i],
        _ => type_name,
    }
}

/// A row image: column names with their entry values, in table order.
pub struct RowImage<'a> {
    pub columns: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> RowImage<'a> {
    pub fn from_columns(columns: &'a [Column<'a>]) -> Self {
        RowImage {
            columns: columns
                .iter()
                .map(|c| (c.name.as_ref(), entry_value(&c.type_name, c.value)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }

    pub fn to_json(&self) -> String {
        json_object(self.columns.iter().map(|(n, v)| (*n, v.as_ref())))
    }
}

/// Writes `{"name":value,...}` from names and JSON value text.
pub fn json_object<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(128);
    out.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn values_map_to_entry_json() {
        assert_eq!(entry_value("numeric(10,2)", &raw("10.50")), "\"10.50\"");
        assert_eq!(entry_value("numeric", &raw("1e-7")), "\"1e-7\"");
        assert_eq!(
            entry_value("bigint", &raw("9223372036854775807")),
            "9223372036854775807"
        );
        assert_eq!(
            entry_value("bytea", &raw("\"deadbeef\"")),
            "\"\\\\xdeadbeef\""
        );
        assert_eq!(
            entry_value("jsonb", &raw(r#""{\"a\": [1, 2]}""#)),
            r#"{"a": [1, 2]}"#
        );
        assert_eq!(
            entry_value("json", &raw(r#""\"just a string\"""#)),
            r#""just a string""#
        );
        assert_eq!(
            entry_value("numeric[]", &raw(r#""{1.5,2}""#)),
            r#""{1.5,2}""#
        );
        assert_eq!(entry_value("numeric", &raw("null")), "null");
        assert_eq!(entry_value("boolean", &raw("true")), "true");
    }

    #[test]
    fn json_strings_escape_what_json_requires() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn row_key_is_stable_and_separates_fields() {
        const PINNED_ORDERS_5: i64 = 7376721019730533151;
        let k = row_key(&TableName::new("public", "orders"), r#"{"id":5}"#);
        // Stored keys must never change meaning between versions.
        assert_eq!(k, PINNED_ORDERS_5);
        assert_ne!(
            k,
            row_key(&TableName::new("public", "orders"), r#"{"id":6}"#)
        );
        assert_ne!(
            row_key(&TableName::new("ab", "c"), "{}"),
            row_key(&TableName::new("a", "bc"), "{}")
        );
    }

    #[test]
    fn actions_parse_case_insensitively() {
        assert_eq!("update".parse::<Action>().unwrap(), Action::Update);
        assert!("upsert".parse::<Action>().is_err());
    }
}
