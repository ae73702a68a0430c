//! An entry's columns before and after ([`column_diffs`]), read from the
//! stored JSON text ([`Members`]), and a value as the page shows it
//! ([`ValueView`]).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
