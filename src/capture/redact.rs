//! The redaction stage: per-table column rules (`[[capture.columns]]` in the
//! config), applied by the assembler to each row image before it is
//! serialized, so what they remove never reaches the store.
//!
//! - An **ignored** column is never stored: it is left out of `before`,
//!   `after`, `primary_key` and `changed_columns`, and an UPDATE whose changed
//!   columns are all ignored is not an entry (the assembler's row handler drops it).
//! - A **redacted** column is stored as `"hmac-sha256:<hex>"`, the
//!   HMAC-SHA256 under the configured key of the value's JSON text as it would
//!   have been stored (`"alice"` with its quotes for text, `42` for an integer,
//!   `"10.50"` for numeric: PostgreSQL's `to_json(value)::text` for text-like
//!   types). The hash does not depend on the table or the column, so equal
//!   values have equal hashes everywhere and a change stays visible, while the
//!   value does not. SQL NULL stays `null`, so "was it set?" stays visible.
//!
//! Invariant: with a key configured, a redacted column's raw value appears
//! nowhere in the store, and an ignored column's value not at all. That
//! includes `pgtrail.decode_errors`, which keeps undecodable records whole: a
//! record that may belong to a table with ignored or redacted columns (looked
//! up by the partition tree's root, as entries are) is withheld there instead
//! (see [`ColumnRules::undecodable_record`]).
//!
//! Rules whose patterns overlap are merged; should one rule ignore a column
//! that another redacts, ignoring wins (either way the value is not stored).
//! Column names are matched exactly, as PostgreSQL stores them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::capture::values::RowImage;
use crate::table::{TableName, TablePattern};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of a redacted value, naming how it was made.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// One `[[capture.columns]]` entry, as validated by the config.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    /// The tables the rule applies to (same syntax as `capture.tables`).
    pub table: TablePattern,
    /// Columns never stored.
    pub ignore: Vec<String>,
    /// Columns stored as a keyed hash.
    pub redact: Vec<String>,
}

/// The HMAC key for redacted values. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct RedactKey(HmacSha256);

impl RedactKey {
    pub fn new(key: &[u8]) -> RedactKey {
        // The keyed state is computed once here and cloned for every value.
        RedactKey(
            <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts a key of any length"),
        )
    }

    /// `"hmac-sha256:<64 hex digits>"` as JSON text, for a value's JSON text.
    pub fn hash(&self, value_json: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.0.clone();
        mac.update(value_json.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(HASH_PREFIX.len() + 2 * tag.len() + 2);
        out.push('"');
        out.push_str(HASH_PREFIX);
        for b in tag {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
        out.push('"');
        out
    }
}

impl fmt::Debug for RedactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactKey(<not shown>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("the rule for {table:?} both ignores and redacts the column {column:?}; choose one")]
    IgnoredAndRedacted { table: String, column: String },
    #[error("the rule for {table:?} names an empty column")]
    EmptyColumn { table: String },
    #[error("columns are redacted ({tables}) but no key is configured")]
    NoKey { tables: String },
}

/// All column rules of the config, and the key for redacted values.
#[derive(Debug, Clone, Default)]
pub struct ColumnRules {
    rules: Vec<ColumnRule>,
    key: Option<RedactKey>,
}

impl ColumnRules {
    /// Checks the rules: no column both ignored and redacted (in one rule, or
    /// in rules for the same exact table), no empty column name, and a key
    /// whenever anything is redacted.
    pub fn new(rules: Vec<ColumnRule>, key: Option<RedactKey>) -> Result<ColumnRules, RulesError> {
        for (i, rule) in rules.iter().enumerate() {
            if rule.ignore.iter().chain(&rule.redact).any(String::is_empty) {
                return Err(RulesError::EmptyColumn {
                    table: rule.table.to_string(),
                });
            }
            let exact = rule.table.as_str().parse::<TableName>().ok();
            // Rules for the same exact table count as one.
            let same_table = rules[i..].iter().filter(|other| {
                other.table.as_str() == rule.table.as_str()
                    || exact.is_some() && other.table.as_str().parse::<TableName>().ok() == exact
            });
            for other in same_table {
                if let Some(column) = rule.ignore.iter().find(|c| other.redact.contains(c)) {
                    return Err(RulesError::IgnoredAndRedacted {
                        table: rule.table.to_string(),
                        column: column.clone(),
                    });
                }
                if let Some(column) = rule.redact.iter().find(|c| other.ignore.contains(c)) {
                    return Err(RulesError::IgnoredAndRedacted {
                        table: rule.table.to_string(),
                        column: column.clone(),
                    });
                }
            }
        }
        if key.is_none() {
            let redacting: Vec<&str> = rules
                .iter()
                .filter(|r| !r.redact.is_empty())
                .map(|r| r.table.as_str())
                .collect();
            if !redacting.is_empty() {
                return Err(RulesError::NoKey {
                    tables: redacting.join(", "),
                });
            }
        }
        Ok(ColumnRules { rules, key })
    }

    /// No rules at all: the assembler need not even look a table up.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The merged rules for one table; `None` when no rule applies to it.
    /// Allocates: the assembler calls it once per table and keeps the answer.
    pub fn for_table(&self, table: &TableName) -> Option<Arc<TableRules>> {
        let mut ignore: Vec<Box<str>> = Vec::new();
        let mut redact: Vec<Box<str>> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.table.matches(table)) {
            for c in &rule.ignore {
                if !ignore.iter().any(|i| **i == **c) {
                    ignore.push(c.as_str().into());
                }
            }
            for c in &rule.redact {
                if !redact.iter().any(|r| **r == **c) {
                    redact.push(c.as_str().into());
                }
            }
        }
        // Ignoring wins over redacting: the value is not stored either way.
        redact.retain(|c| !ignore.contains(c));
        if ignore.is_empty() && redact.is_empty() {
            return None;
        }
        let key = if redact.is_empty() {
            None
        } else {
            self.key.clone()
        };
        Some(Arc::new(TableRules {
            ignore,
            redact,
            key,
        }))
    }

    /// The text to keep in `pgtrail.decode_errors` for a record that could
    /// not be decoded: the whole record, unless it may hold values of ignored
    /// or redacted columns, which are not to be stored raw. It may when its
    /// table has rules, or the root of the partition tree the table is in
    /// (`root_of`; a partition's rows are entries of its root, under the
    /// root's rules), or when its table cannot be told while it carries row
    /// values; then a note says it was withheld.
    pub fn undecodable_record(
        &self,
        bytes: &[u8],
        root_of: impl Fn(&TableName) -> Option<TableName>,
    ) -> String {
        if self.is_empty() {
            return String::from_utf8_lossy(bytes).into_owned();
        }
        let seen = RecordOutline::of(bytes);
        let table = match (seen.schema, seen.table) {
            (Some(schema), Some(table)) => Some(TableName::new(schema, table)),
            _ => None,
        };
        let withheld = match &table {
            Some(t) => {
                let root = root_of(t);
                let ruled = |t: &TableName| self.for_table(t).is_some();
                let partition = root.as_ref().map(|r| format!(" (a partition of {r})"));
                (ruled(t) || root.as_ref().is_some_and(ruled)).then(|| {
                    let partition = partition.unwrap_or_default();
                    format!("{t}{partition}, a table with ignored or redacted columns")
                })
            }
            None => (!seen.complete || seen.has_values).then(|| {
                "a table that could not be told, while columns are ignored or redacted".into()
            }),
        };
        match withheld {
            None => String::from_utf8_lossy(bytes).into_owned(),
            Some(table) => format!(
                "(withheld: {} bytes of a record of {table}; it may hold their values)",
                bytes.len()
            ),
        }
    }
}

/// The rules in force for one table.
#[derive(Debug)]
pub struct TableRules {
    ignore: Vec<Box<str>>,
    redact: Vec<Box<str>>,
    /// Present whenever `redact` is not empty (checked by [`ColumnRules::new`]).
    key: Option<RedactKey>,
}

impl TableRules {
    pub fn ignores(&self, column: &str) -> bool {
        self.ignore.iter().any(|c| **c == *column)
    }

    pub fn redacts(&self, column: &str) -> bool {
        self.redact.iter().any(|c| **c == *column)
    }

    /// Drops ignored columns and replaces redacted non-null values by their hash.
    pub fn apply(&self, image: &mut RowImage<'_>) {
        if !self.ignore.is_empty() {
            image.columns.retain(|(name, _)| !self.ignores(name));
        }
        if let Some(key) = &self.key {
            for (name, value) in &mut image.columns {
                if self.redacts(name) && value.as_ref() != "null" {
                    *value = Cow::Owned(key.hash(value));
                }
            }
        }
    }
}

/// What can be read of a record that failed to decode, up to where it broke:
/// wal2json writes `schema` and `table` before the row values.
#[derive(Debug, Default)]
struct RecordOutline {
    schema: Option<String>,
    table: Option<String>,
    /// A `columns` or `identity` key was seen.
    has_values: bool,
    /// The whole record is valid JSON.
    complete: bool,
}

impl RecordOutline {
    fn of(bytes: &[u8]) -> RecordOutline {
        let mut outline = RecordOutline::default();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        outline.complete = (&mut outline).deserialize(&mut de).is_ok() && de.end().is_ok();
        outline
    }
}

impl<'de> DeserializeSeed<'de> for &mut RecordOutline {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut RecordOutline {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a wal2json record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "schema" => self.schema = Some(map.next_value()?),
                "table" => self.table = Some(map.next_value()?),
                "columns" | "identity" => {
                    self.has_values = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: &str, ignore: &[&str], redact: &[&str]) -> ColumnRule {
        ColumnRule {
            table: TablePattern::parse(table).unwrap(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            redact: redact.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn key() -> Option<RedactKey> {
        Some(RedactKey::new(b"test key"))
    }

    fn image<'a>(columns: &[(&'a str, &'a str)]) -> RowImage<'a> {
        RowImage {
            columns: columns
                .iter()
                .map(|(n, v)| (*n, Cow::Borrowed(*v)))
                .collect(),
        }
    }

    #[test]
    fn hash_is_hmac_sha256_in_lower_hex() {
        // RFC 4231, test case 2.
        let k = RedactKey::new(b"Jefe");
        assert_eq!(
            k.hash("what do ya want for nothing?"),
            "\"hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\""
        );
        assert_ne!(
            k.hash("\"a\""),
            RedactKey::new(b"Jefe2").hash("\"a\""),
            "the key matters"
        );
        assert_eq!(format!("{:?}", k), "RedactKey(<not shown>)");
    }

    #[test]
    fn images_lose_ignored_columns_and_redacted_values() {
        let rules =
            ColumnRules::new(vec![rule("public.users", &["seen"], &["pw", "ssn"])], key()).unwrap();
        let t = rules.for_table(&TableName::new("public", "users")).unwrap();
        let mut img = image(&[
            ("id", "1"),
            ("pw", "\"s3cret\""),
            ("ssn", "null"),
            ("seen", "\"2026-01-01\""),
        ]);
        t.apply(&mut img);
        let k = key().unwrap();
        assert_eq!(
            img.to_json(),
            format!("{{\"id\":1,\"pw\":{},\"ssn\":null}}", k.hash("\"s3cret\""))
        );
        assert!(!img.to_json().contains("s3cret"));
    }

    #[test]
    fn equal_values_hash_equally_whatever_the_table_or_column() {
        let rules = ColumnRules::new(
            vec![
                rule("public.a", &[], &["x"]),
                rule("billing.*", &[], &["y"]),
            ],
            key(),
        )
        .unwrap();
        let a = rules.for_table(&TableName::new("public", "a")).unwrap();
        let b = rules.for_table(&TableName::new("billing", "b")).unwrap();
        let (mut ia, mut ib) = (image(&[("x", "\"v\"")]), image(&[("y", "\"v\"")]));
        a.apply(&mut ia);
        b.apply(&mut ib);
        assert_eq!(ia.columns[0].1, ib.columns[0].1);
        let mut other = image(&[("x", "\"w\"")]);
        a.apply(&mut other);
        assert_ne!(ia.columns[0].1, other.columns[0].1);
    }

    #[test]
    fn tables_without_rules_have_none() {
        let rules = ColumnRules::new(vec![rule("public.users", &["seen"], &[])], None).unwrap();
        assert!(rules
            .for_table(&TableName::new("public", "orders"))
            .is_none());
        assert!(rules
            .for_table(&TableName::new("public", "users"))
            .is_some());
        assert!(ColumnRules::default().is_empty());
    }

    #[test]
    fn overlapping_rules_merge_and_ignoring_wins() {
        let rules = ColumnRules::new(
            vec![
                rule("public.*", &[], &["ssn", "pw"]),
                rule("public.legacy", &["ssn"], &[]),
            ],
            key(),
        )
        .unwrap();
        let t = rules
            .for_table(&TableName::new("public", "legacy"))
            .unwrap();
        assert!(t.ignores("ssn") && !t.redacts("ssn") && t.redacts("pw"));
        let u = rules.for_table(&TableName::new("public", "users")).unwrap();
        assert!(u.redacts("ssn") && !u.ignores("ssn"));
    }

    #[test]
    fn invalid_rules_are_refused() {
        assert_eq!(
            ColumnRules::new(vec![rule("public.users", &["ssn"], &["ssn"])], key()).unwrap_err(),
            RulesError::IgnoredAndRedacted {
                table: "public.users".into(),
                column: "ssn".into()
            }
        );
        // The same exact table, written two ways, in two rules.
        assert!(matches!(
            ColumnRules::new(
                vec![
                    rule("public.users", &["ssn"], &[]),
                    rule("\"public\".users", &[], &["ssn"])
                ],
                key()
            ),
            Err(RulesError::IgnoredAndRedacted { .. })
        ));
        assert!(matches!(
            ColumnRules::new(vec![rule("public.users", &[""], &[])], key()),
            Err(RulesError::EmptyColumn { .. })
        ));
        assert_eq!(
            ColumnRules::new(
                vec![
                    rule("public.users", &[], &["ssn"]),
                    rule("public.x", &["a"], &[])
                ],
                None
            )
            .unwrap_err(),
            RulesError::NoKey {
                tables: "public.users".into()
            }
        );
        // Ignoring alone needs no key.
        assert!(ColumnRules::new(vec![rule("public.users", &["a"], &[])], None).is_ok());
    }

    /// A record as wal2json sends text of a database whose encoding is not
    /// UTF-8 (SQL_ASCII): `é` as the one Latin-1 byte, which is not valid JSON.
    fn latin1(record: &str) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(record.len());
        for c in record.chars() {
            match c {
                'é' => bytes.push(0xe9),
                c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        bytes
    }

    /// No partition trees.
    fn no_root(_: &TableName) -> Option<TableName> {
        None
    }

    #[test]
    fn undecodable_records_are_withheld_only_where_they_may_hold_ruled_values() {
        let rules = ColumnRules::new(vec![rule("public.users", &[], &["pw"])], key()).unwrap();
        // Invalid JSON after `table` (wal2json passes on bytes that are not UTF-8 as they are).
        let users = &latin1(
            r#"{"action":"I","xid":9,"schema":"public","table":"users","columns":[{"name":"pw","typeoid":25,"value":"s3creté"}]}"#,
        );
        let kept = rules.undecodable_record(users, no_root);
        assert!(
            kept.starts_with("(withheld:")
                && kept.contains("public.users")
                && !kept.contains("s3cret"),
            "{kept}"
        );
        let orders = &latin1(
            r#"{"action":"I","xid":9,"schema":"public","table":"orders","columns":[{"name":"pw","typeoid":25,"value":"é"}]}"#,
        );
        assert_eq!(
            rules.undecodable_record(orders, no_root),
            String::from_utf8_lossy(orders)
        );
        // No table to tell by, but row values: withheld. No row values at all: kept.
        let anon =
            br#"{"action":"I","xid":9,"columns":[{"name":"pw","typeoid":25,"value":"s3cret"}]}"#;
        assert!(rules
            .undecodable_record(anon, no_root)
            .starts_with("(withheld:"));
        let begin = br#"{"action":"B","xid":9,"lsn":"bad"}"#;
        assert_eq!(
            rules.undecodable_record(begin, no_root),
            String::from_utf8_lossy(begin)
        );
        let broken = br#"{"action":"B","xid":9,"lsn":"#;
        assert!(rules
            .undecodable_record(broken, no_root)
            .starts_with("(withheld:"));
        // Without any rule every record is kept whole.
        assert_eq!(
            ColumnRules::default().undecodable_record(users, no_root),
            String::from_utf8_lossy(users)
        );
    }

    #[test]
    fn ignored_columns_and_partitions_withhold_undecodable_records_too() {
        // Ignoring alone withholds: an ignored value is not to be stored at all.
        let ignore_only = ColumnRules::new(vec![rule("public.users", &["pw"], &[])], None).unwrap();
        let users = &latin1(
            r#"{"action":"I","xid":9,"schema":"public","table":"users","columns":[{"name":"pw","typeoid":25,"value":"s3creté"}]}"#,
        );
        let kept = ignore_only.undecodable_record(users, no_root);
        assert!(
            kept.starts_with("(withheld:") && !kept.contains("s3cret"),
            "{kept}"
        );
        // A partition is looked up by its root: the rules name the root only.
        let part = &latin1(
            r#"{"action":"I","xid":9,"schema":"p","table":"users_eu","columns":[{"name":"pw","typeoid":25,"value":"s3creté"}]}"#,
        );
        assert_eq!(
            ignore_only.undecodable_record(part, no_root),
            String::from_utf8_lossy(part),
            "not a partition: no rule for it"
        );
        let root = |t: &TableName| {
            (*t == TableName::new("p", "users_eu")).then(|| TableName::new("public", "users"))
        };
        let kept = ignore_only.undecodable_record(part, root);
        assert!(
            kept.contains("p.users_eu (a partition of public.users)") && !kept.contains("s3cret"),
            "{kept}"
        );
    }
}
