//! Row images and the value mapping from wal2json's representation to the
//! entry's JSON (numeric → exact string, json → nested, bytea → `\x…`): the one
//! place that mapping lives.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::decode::Column;
use crate::text::json_object;

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
}
