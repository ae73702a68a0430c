//! Row images and the value mapping from wal2json's representation to the
//! entry's JSON (numeric → exact string, json → nested, bytea → `\x…`): the one
//! place that mapping lives.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::decode::Column;
use crate::text::json_object;

/// The built-in types whose wal2json form differs from the entry's, by the
/// OID wal2json sends (`include-type-oids`). Built-in OIDs are fixed in
/// PostgreSQL's catalog. Every other type, arrays and domains included (a
/// domain has an OID of its own, and wal2json prints its value as a string),
/// passes through as wal2json sent it.
mod oid {
    pub const BYTEA: u32 = 17;
    pub const JSON: u32 = 114;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

/// A column's value as entry JSON text.
pub fn entry_value(type_oid: u32, raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if text == "null" {
        return Cow::Borrowed(text);
    }
    match type_oid {
        // wal2json prints numeric as a bare JSON number; keep it exact, as a string.
        oid::NUMERIC => Cow::Owned(format!("\"{text}\"")),
        // bytea arrives as bare hex; PostgreSQL's own text form has the \x prefix.
        oid::BYTEA if text.starts_with('"') => Cow::Owned(format!("\"\\\\x{}", &text[1..])),
        // json and jsonb arrive as a JSON string holding the document: nest it.
        oid::JSON | oid::JSONB => match serde_json::from_str::<String>(text) {
            Ok(doc) if serde_json::from_str::<&RawValue>(&doc).is_ok() => Cow::Owned(doc),
            _ => Cow::Borrowed(text),
        },
        _ => Cow::Borrowed(text),
    }
}

/// A row image: column names with their entry values, in table order, each
/// name once: [`crate::capture::decode::decode`] refuses an image that names
/// a column twice (only a forged stream can), which would otherwise have
/// [`RowImage::get`] find one copy for every other, and an UPDATE's unchanged
/// TOASTed columns copy a value once per copy of a name.
pub struct RowImage<'a> {
    pub columns: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> RowImage<'a> {
    pub fn from_columns(columns: &'a [Column<'a>]) -> Self {
        RowImage {
            columns: columns
                .iter()
                .map(|c| (c.name.as_ref(), entry_value(c.type_oid, c.value)))
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

    /// The value as the entry would hold it, from the value as wal2json sent it.
    fn entry(type_oid: u32, sent: &str) -> String {
        let raw = RawValue::from_string(sent.to_owned()).unwrap();
        entry_value(type_oid, &raw).into_owned()
    }

    // The values below are what wal2json 2.5 sent for each type (PostgreSQL 15,
    // bytea_output=hex), with the OIDs it sent alongside.

    #[test]
    fn numeric_becomes_an_exact_string() {
        assert_eq!(entry(oid::NUMERIC, "10.50"), r#""10.50""#);
        assert_eq!(entry(oid::NUMERIC, "1e-7"), r#""1e-7""#);
        // NaN and infinities arrive as null, like SQL NULL.
        assert_eq!(entry(oid::NUMERIC, "null"), "null");
    }

    #[test]
    fn bytea_gets_its_hex_prefix_back() {
        assert_eq!(entry(oid::BYTEA, r#""deadbeef""#), r#""\\xdeadbeef""#);
        assert_eq!(entry(oid::BYTEA, "null"), "null");
    }

    #[test]
    fn json_and_jsonb_are_nested() {
        assert_eq!(entry(oid::JSONB, r#""{\"b\": [2]}""#), r#"{"b": [2]}"#);
        assert_eq!(entry(oid::JSON, r#""{\"a\":1}""#), r#"{"a":1}"#);
        assert_eq!(
            entry(oid::JSON, r#""\"just a string\"""#),
            r#""just a string""#
        );
        // Not a document (cannot come from PostgreSQL): kept as the string it was.
        assert_eq!(entry(oid::JSON, r#""{oops""#), r#""{oops""#);
    }

    #[test]
    fn arrays_of_mapped_types_pass_through_as_array_literals() {
        // numeric[] 1231, bytea[] 1001, json[] 199, jsonb[] 3807
        assert_eq!(entry(1231, r#""{1.5,2}""#), r#""{1.5,2}""#);
        assert_eq!(entry(1001, r#""{\"\\\\xbeef\"}""#), r#""{\"\\\\xbeef\"}""#);
        assert_eq!(
            entry(199, r#""{\"{\\\"c\\\":3}\"}""#),
            r#""{\"{\\\"c\\\":3}\"}""#
        );
        assert_eq!(
            entry(3807, r#""{\"{\\\"c\\\": 3}\"}""#),
            r#""{\"{\\\"c\\\": 3}\"}""#
        );
    }

    #[test]
    fn domains_pass_through_as_the_strings_wal2json_prints() {
        // A domain over numeric and one over bytea have OIDs of their own; wal2json
        // prints their values as strings, the bytea one with its \x.
        assert_eq!(entry(16399, r#""7.25""#), r#""7.25""#);
        assert_eq!(entry(16401, r#""\\x01""#), r#""\\x01""#);
    }

    #[test]
    fn other_types_pass_through() {
        // bigint 20, boolean 16, double precision 701 (NaN as null), text 25
        assert_eq!(entry(20, "9223372036854775807"), "9223372036854775807");
        assert_eq!(entry(16, "true"), "true");
        assert_eq!(entry(701, "null"), "null");
        assert_eq!(entry(25, r#""line\nq\"\\ ü""#), r#""line\nq\"\\ ü""#);
    }
}
