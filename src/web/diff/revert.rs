//! The SQL that would undo an entry ([`revert_sql`]), and the statements it
//! is made of ([`Statement`]), which the row history reuses to bring a row
//! back to an earlier state. pgtrail only writes them; it never runs them.

use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::columns::{Change, ColumnDiff, Members};
use crate::pg::quote_ident;
use crate::store::stored::StoredEntry;

/// A SQL literal for a stored value: an untyped string literal, which
/// PostgreSQL types as the target column. Strings give their text (numerics
/// are stored as strings, byteas as `\x…`); JSON documents, numbers and
/// booleans their JSON text, so `'5'` and `'true'` fit an integer or boolean
/// column and a json or jsonb one alike, where a bare `5` or `TRUE` would
/// not cast to jsonb. The entry holds no column types, so a jsonb string
/// scalar or JSON `null` cannot be told from text or SQL NULL (docs/web.md).
pub fn sql_literal(raw: &RawValue) -> String {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'n') => "NULL".into(),
        Some(b'"') => {
            quote_string(&serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_owned()))
        }
        _ => quote_string(t),
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

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// One statement on one row, found by its primary key.
pub enum Statement<'a> {
    /// Removes the row.
    Delete,
    /// Sets these columns to these stored values.
    Update(Vec<(&'a str, &'a RawValue)>),
    /// Inserts a row with these columns.
    Insert(Vec<(&'a str, &'a RawValue)>),
    /// Inserts a row with these columns, or where one with its key exists,
    /// sets its other columns to these values: the row ends as given
    /// whatever it was before.
    Upsert(Vec<(&'a str, &'a RawValue)>),
}

/// Why no statement is written.
pub enum NoStatement {
    /// The table has no primary key: a statement could not tell its rows apart.
    NoKey,
    /// This column's stored value is the HMAC that stands for a redacted
    /// value (`capture::redact`), not the value: writing it back would put
    /// the hash into the table, and a key of hashes matches no row.
    Redacted(String),
}

impl NoStatement {
    pub fn message(&self) -> String {
        match self {
            NoStatement::NoKey => "the table has no primary key, so a statement could not tell this row from identical ones".into(),
            NoStatement::Redacted(column) => format!(
                "column {column:?} is redacted: the audit trail holds its hash, not its value, so a statement would write the hash"
            ),
        }
    }
}

/// Whether a stored value is a redacted value's hash.
fn redacted(v: &RawValue) -> bool {
    serde_json::from_str::<&str>(v.get())
        .is_ok_and(|s| s.starts_with(crate::capture::redact::HASH_PREFIX))
}

impl Statement<'_> {
    /// The values the statement writes, by column.
    fn values(&self) -> &[(&str, &RawValue)] {
        match self {
            Statement::Delete => &[],
            Statement::Update(v) | Statement::Insert(v) | Statement::Upsert(v) => v,
        }
    }

    /// The statement's text on `table` (already quoted), for the row whose
    /// key is `key`, or why none can be written.
    pub fn sql(&self, table: &str, key: &Members) -> Result<String, NoStatement> {
        if key.0.is_empty() {
            return Err(NoStatement::NoKey);
        }
        let keys = key.0.iter().map(|(c, v)| (c.as_str(), &**v));
        if let Some((c, _)) = keys
            .chain(self.values().iter().copied())
            .find(|(_, v)| redacted(v))
        {
            return Err(NoStatement::Redacted(c.to_owned()));
        }
        let key_cond = key
            .0
            .iter()
            .map(|(k, v)| format!("{} = {}", quote_ident(k), sql_literal(v)))
            .collect::<Vec<_>>()
            .join(" AND ");
        Ok(match self {
            Statement::Delete => format!("DELETE FROM {table}\nWHERE {key_cond};"),
            Statement::Update(sets) => {
                let sets: Vec<String> = sets
                    .iter()
                    .map(|(c, v)| format!("{} = {}", quote_ident(c), sql_literal(v)))
                    .collect();
                format!(
                    "UPDATE {table}\nSET {}\nWHERE {key_cond};",
                    sets.join(",\n    ")
                )
            }
            Statement::Insert(columns) => format!("{};", insert(table, columns)),
            Statement::Upsert(columns) => {
                let keys: Vec<String> = key.0.iter().map(|(k, _)| quote_ident(k)).collect();
                let sets: Vec<String> = columns
                    .iter()
                    .filter(|(c, _)| key.get(c).is_none())
                    .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                    .collect();
                let action = if sets.is_empty() {
                    "DO NOTHING".to_owned()
                } else {
                    format!("DO UPDATE\nSET {}", sets.join(",\n    "))
                };
                format!(
                    "{}\nON CONFLICT ({}) {action};",
                    insert(table, columns),
                    keys.join(", ")
                )
            }
        })
    }
}

/// `INSERT INTO table (columns…) OVERRIDING SYSTEM VALUE\nVALUES (values…)`,
/// without its semicolon. The row is put back with its own key: a `GENERATED
/// ALWAYS AS IDENTITY` column refuses a given value without the clause, and
/// a table without one ignores it.
fn insert(table: &str, columns: &[(&str, &RawValue)]) -> String {
    let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
    let values: Vec<String> = columns.iter().map(|(_, v)| sql_literal(v)).collect();
    format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE\nVALUES ({})",
        names.join(", "),
        values.join(", ")
    )
}

/// The statement that puts the row back as it was before `entry`, or why there is none.
pub fn revert_sql(entry: &StoredEntry, diffs: &[ColumnDiff]) -> Result<String, String> {
    let table = qualified(&entry.schema, &entry.table);
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
        return Err(NoStatement::NoKey.message());
    }
    let mut sql = format!(
        "-- Reverts entry {} ({} committed {}, xid {}).\n-- Review before running: pgtrail never runs it.\n",
        entry.id,
        entry.action,
        entry.committed_at.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
        entry.xid.unwrap_or_default()
    );
    let statement = match entry.action.as_str() {
        "INSERT" => Statement::Delete,
        "UPDATE" => {
            if let Some(unknown) = diffs.iter().find(|d| d.change == Change::Unknown) {
                return Err(format!(
                    "the before image lacks column {:?} and others (the table's REPLICA IDENTITY is not FULL), so the old values are unknown",
                    unknown.column
                ));
            }
            let sets: Vec<(&str, &RawValue)> = diffs
                .iter()
                .filter(|d| d.change == Change::Changed)
                .filter_map(|d| d.before.as_deref().map(|b| (d.column.as_str(), b)))
                .collect();
            if sets.is_empty() {
                sql.push_str("-- Nothing to revert: this update changed no column.");
                return Ok(sql);
            }
            Statement::Update(sets)
        }
        "DELETE" => {
            let columns: Vec<(&str, &RawValue)> = diffs
                .iter()
                .filter_map(|d| d.before.as_deref().map(|b| (d.column.as_str(), b)))
                .collect();
            if columns.len() == key.0.len() && columns.iter().all(|(c, _)| key.get(c).is_some()) {
                sql.push_str(
                    "-- Only the key was captured (REPLICA IDENTITY is not FULL): if the table has\n\
                     -- other columns, their values are not in the audit trail.\n",
                );
            }
            Statement::Insert(columns)
        }
        other => return Err(format!("no revert for action {other}")),
    };
    let body = statement.sql(&table, &key).map_err(|e| e.message())?;
    let _ = write!(sql, "{body}");
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::diff::columns::column_diffs;
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
            source: "shop".into(),
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
                "UPDATE \"public\".\"Order \"\"Items\"\"\"\nSET \"b\" = '2'\nWHERE \"id\" = '1';"
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
    fn a_redacted_value_is_never_written_back() {
        let hash = r#""hmac-sha256:00ff""#;
        let update = entry(
            "UPDATE",
            Some(r#"{"id":1}"#),
            Some(&format!(r#"{{"id":1,"pw":{hash},"b":2}}"#)),
            Some(r#"{"id":1,"pw":"hmac-sha256:11ee","b":3}"#),
            Some(r#"["pw","b"]"#),
        );
        let err = revert_sql(&update, &column_diffs(&update)).unwrap_err();
        assert!(err.contains("\"pw\" is redacted"), "{err}");
        // Only an unredacted column changed: that one is reverted.
        let fine = entry(
            "UPDATE",
            Some(r#"{"id":1}"#),
            Some(&format!(r#"{{"id":1,"pw":{hash},"b":2}}"#)),
            Some(&format!(r#"{{"id":1,"pw":{hash},"b":3}}"#)),
            Some(r#"["b"]"#),
        );
        let sql = revert_sql(&fine, &column_diffs(&fine)).unwrap();
        assert!(
            sql.contains(r#"SET "b" = '2'"#) && !sql.contains("hmac"),
            "{sql}"
        );
        // A redacted key matches no row: no DELETE either.
        let insert = entry(
            "INSERT",
            Some(&format!(r#"{{"token":{hash}}}"#)),
            None,
            Some(&format!(r#"{{"token":{hash}}}"#)),
            None,
        );
        assert!(revert_sql(&insert, &column_diffs(&insert))
            .unwrap_err()
            .contains("\"token\" is redacted"));
    }

    #[test]
    fn literals_are_quoted_for_any_setting() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(sql_literal(&raw(r#""it's""#)), "'it''s'");
        assert_eq!(sql_literal(&raw(r#""a\\b'""#)), r"E'a\\b'''");
        assert_eq!(sql_literal(&raw("null")), "NULL");
        assert_eq!(sql_literal(&raw("12.5")), "'12.5'");
        assert_eq!(sql_literal(&raw("true")), "'true'");
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
        assert!(sql.contains("INSERT INTO \"public\".\"Order \"\"Items\"\"\" (\"id\", \"name\") OVERRIDING SYSTEM VALUE\nVALUES ('5', 'x');"), "{sql}");
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
}
