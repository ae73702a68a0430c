//! Primary keys: how a key value or a whole key given as a filter matches
//! stored entries ([`PkMatch`]), and the key columns of the tables with
//! entries.

use tokio_postgres::Client;

use super::key_book::{KeyBook, ALL_TABLES};
use super::params::Filter;
use crate::store::sources::ENTRY_SOURCE_SQL;
use crate::table::TableName;
use crate::text::{clip, push_json_string};
use crate::web::error::WebError;

/// How the primary-key filter is matched, decided from the tables it can
/// apply to and their key columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PkMatch {
    /// The row is one of these (`row_key`, for the index, and the stored key
    /// text, to rule out a hash collision).
    pub row_keys: Vec<i64>,
    pub texts: Vec<String>,
    /// Tables with a composite key, where one value does not pin a row: some
    /// key column has this value (text form). Read through the table index.
    pub partial: Option<(Vec<TableName>, String)>,
}

impl PkMatch {
    /// The rows of `table` whose stored key text is one of `texts`.
    pub fn rows(table: &TableName, texts: Vec<String>) -> PkMatch {
        let mut m = PkMatch::default();
        m.add_rows(table, texts);
        m
    }

    fn add_rows(&mut self, table: &TableName, texts: Vec<String>) {
        for t in texts {
            self.row_keys.push(crate::entry::row_key(table, &t));
            if !self.texts.contains(&t) {
                self.texts.push(t);
            }
        }
    }

    /// How `pk` (a key value, or a key as a JSON object) matches entries of
    /// `tables`, given each one's key columns (`None`: no entry of it has a
    /// key; a table keyed differently in two sources comes once per key). A
    /// single value is looked for in the key columns of composite keys only
    /// with `scan_composite` (the tables were filtered on): no index holds
    /// them, so that reads every entry of those tables.
    pub fn new(
        pk: &str,
        tables: &[(TableName, Option<Vec<String>>)],
        scan_composite: bool,
    ) -> Result<PkMatch, WebError> {
        let object = if pk.starts_with('{') {
            let raw: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_str(pk).map_err(|e| {
                    WebError::bad(format!("pk: {:?} is not a JSON object ({e})", clip(pk)))
                })?;
            Some(raw)
        } else {
            None
        };
        let mut m = PkMatch::default();
        let mut composite = Vec::new();
        for (table, columns) in tables {
            let Some(columns) = columns else { continue };
            match &object {
                // The object names the key's columns, in any order; the store
                // writes them in key order, values as the server printed them.
                Some(raw) => {
                    if raw.len() != columns.len() || !columns.iter().all(|c| raw.contains_key(c)) {
                        continue;
                    }
                    let mut text = String::from("{");
                    for (i, c) in columns.iter().enumerate() {
                        if i > 0 {
                            text.push(',');
                        }
                        push_json_string(&mut text, c);
                        text.push(':');
                        text.push_str(&minify_json(raw[c].get()));
                    }
                    text.push('}');
                    m.add_rows(table, vec![text]);
                }
                None => match key_texts(columns, pk) {
                    Some(texts) => m.add_rows(table, texts),
                    // Keyed by several columns in more than one source: read once.
                    None if scan_composite && !composite.contains(table) => {
                        composite.push(table.clone())
                    }
                    None => {}
                },
            }
        }
        if !composite.is_empty() {
            m.partial = Some((composite, pk.to_owned()));
        }
        Ok(m)
    }
}

/// Every table with entries, in name order.
pub async fn all_tables(client: &Client) -> Result<Vec<TableName>, WebError> {
    let rows = client
        .query(
            &format!("{ALL_TABLES} SELECT schema_name, table_name FROM t"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Every table with entries ([`all_tables`]), or only those of `only` when
/// given, with its key columns: one row per distinct key among the sources
/// (all capture sources, or those named in `dbs`), each source's own taken
/// from its newest entry of the table that has a key, since a table of one
/// name can be keyed differently in two source databases; `None` when no
/// entry of the table has a key. With `book` (the web view's), from it
/// ([`KeyBook`]), which leaves out the tables without keyed entries: no key
/// value can match those.
///
/// A key value matches a row when it matches the row's own key, so the
/// filter may try every source's key on every source's rows: a key text
/// names its columns, and only rows keyed by those columns can have it.
pub async fn tables_with_keys(
    client: &Client,
    only: Option<&[TableName]>,
    dbs: &[String],
    book: Option<&KeyBook>,
) -> Result<Vec<(TableName, Option<Vec<String>>)>, WebError> {
    if let Some(book) = book {
        let keys = book.read(client).await?.keys(only, dbs);
        return Ok(fold_keys(keys.into_iter().map(|(t, k)| (t, Some(k)))));
    }
    // One probe per table and source, newest first through the table index.
    // Source 0 (pgtrail's events) has no keyed entries.
    let keys = format!(
        "SELECT t.schema_name, t.table_name, \
           (SELECT primary_key::text FROM pgtrail.entry_rows e \
            WHERE e.schema_name = t.schema_name AND e.table_name = t.table_name \
              AND row_key IS NOT NULL AND {ENTRY_SOURCE_SQL} = s.id \
            ORDER BY id DESC LIMIT 1) \
         FROM t CROSS JOIN pgtrail.sources s \
         WHERE s.id > 0 AND (cardinality($1::text[]) = 0 OR s.name = ANY($1::text[]))"
    );
    let dbs = dbs.to_vec();
    let rows = match only {
        Some(tables) => {
            let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            client
                .query(
                    &format!(
                        "WITH t(schema_name, table_name) AS \
                           (SELECT * FROM unnest($2::text[], $3::text[])) {keys}"
                    ),
                    &[&dbs, &schemas, &names],
                )
                .await?
        }
        None => {
            client
                .query(&format!("{ALL_TABLES} {keys}"), &[&dbs])
                .await?
        }
    };
    let mut found = Vec::with_capacity(rows.len());
    for r in &rows {
        found.push((
            TableName::new(r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?),
            r.try_get::<_, Option<String>>(2)?,
        ));
    }
    Ok(fold_keys(found))
}

/// Each table's keys from its sources' key texts, in order: a table once
/// per distinct key (once with `None` when no source has a key of it).
fn fold_keys(
    found: impl IntoIterator<Item = (TableName, Option<String>)>,
) -> Vec<(TableName, Option<Vec<String>>)> {
    let mut out: Vec<(TableName, Option<Vec<String>>)> = Vec::new();
    for (table, text) in found {
        let key = text.map(|text| crate::web::diff::object_keys(&text));
        let known = out.iter_mut().find(|(t, _)| *t == table);
        match (known, key) {
            (None, key) => out.push((table, key)),
            (Some((_, slot @ None)), key) => *slot = key,
            (Some(_), None) => {}
            (Some(_), Some(key)) => {
                if !out
                    .iter()
                    .any(|(t, k)| *t == table && k.as_ref() == Some(&key))
                {
                    out.push((table, Some(key)));
                }
            }
        }
    }
    out
}

/// The keys of a table among the sources (all, or those named in `dbs`):
/// each distinct one of [`tables_with_keys`]; none when no entry of the
/// table has a key.
pub async fn key_columns(
    client: &Client,
    table: &TableName,
    dbs: &[String],
    book: Option<&KeyBook>,
) -> Result<Vec<Vec<String>>, WebError> {
    let found = tables_with_keys(client, Some(std::slice::from_ref(table)), dbs, book).await?;
    Ok(found.into_iter().filter_map(|(_, key)| key).collect())
}

/// The stored key texts a key value can be, for a table keyed by `columns`:
/// `{"id":5}` and `{"id":"5"}` (numbers, text, uuids… are stored either way).
/// `None` for a composite key, where a single value does not pin one row.
pub fn key_texts(columns: &[String], value: &str) -> Option<Vec<String>> {
    if value.starts_with('{') {
        return Some(vec![minify_json(value)]);
    }
    let [column] = columns else { return None };
    let mut name = String::new();
    push_json_string(&mut name, column);
    let mut quoted = String::new();
    push_json_string(&mut quoted, value);
    let mut texts = vec![format!("{{{name}:{quoted}}}")];
    let is_literal = matches!(value, "true" | "false")
        || serde_json::from_str::<serde_json::Number>(value).is_ok_and(|_| !value.starts_with('+'));
    if is_literal {
        texts.push(format!("{{{name}:{value}}}"));
    }
    Some(texts)
}

/// JSON text without insignificant whitespace (key order kept), as the store writes keys.
pub fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

impl Filter {
    /// Decides how to match the primary-key filter: the `row_key` of the
    /// value in every table it can be a key of (the tables filtered on, else
    /// every table with entries that the scope allows), so that the index
    /// finds it. A single value in a composite key is looked for only in the
    /// tables filtered on, through their own index: across every table it
    /// would read all their entries.
    pub async fn pk_match(
        &self,
        client: &Client,
        book: Option<&KeyBook>,
    ) -> Result<Option<PkMatch>, WebError> {
        let Some(pk) = &self.pk else { return Ok(None) };
        let only = (!self.tables.is_empty()).then_some(self.tables.as_slice());
        let mut tables = tables_with_keys(client, only, &self.dbs, book).await?;
        tables.retain(|(t, _)| self.scope.allows_table(t));
        PkMatch::new(pk, &tables, only.is_some()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_texts_cover_numbers_and_strings() {
        let cols = vec!["id".to_string()];
        assert_eq!(
            key_texts(&cols, "5").unwrap(),
            vec![r#"{"id":"5"}"#, r#"{"id":5}"#]
        );
        assert_eq!(key_texts(&cols, "abc").unwrap(), vec![r#"{"id":"abc"}"#]);
        assert_eq!(key_texts(&["a".into(), "b".into()], "1"), None);
        assert_eq!(
            minify_json("{ \"a b\" : 1 , \"c\":\"x y\" }"),
            "{\"a b\":1,\"c\":\"x y\"}"
        );
    }

    #[test]
    fn a_key_is_looked_up_in_every_table_it_can_be_a_key_of() {
        let t = |n: &str| TableName::new("public", n);
        let cols = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let tables = vec![
            (t("orders"), cols(&["id"])),
            (t("lines"), cols(&["order_id", "line"])),
            (t("log"), None),
        ];
        let m = PkMatch::new("5", &tables, true).unwrap();
        assert_eq!(m.texts, vec![r#"{"id":"5"}"#, r#"{"id":5}"#]);
        assert_eq!(
            m.row_keys,
            vec![
                crate::entry::row_key(&t("orders"), r#"{"id":"5"}"#),
                crate::entry::row_key(&t("orders"), r#"{"id":5}"#)
            ]
        );
        assert_eq!(m.partial, Some((vec![t("lines")], "5".to_owned())));

        // A whole key names its columns in any order and is written in key order.
        let m = PkMatch::new(r#"{ "line": 2, "order_id" : 1 }"#, &tables, false).unwrap();
        assert_eq!(m.texts, vec![r#"{"order_id":1,"line":2}"#]);
        assert_eq!(
            m.row_keys,
            vec![crate::entry::row_key(
                &t("lines"),
                r#"{"order_id":1,"line":2}"#
            )]
        );
        assert_eq!(m.partial, None);
        // Columns no table has as its key: nothing can match.
        let m = PkMatch::new(r#"{"nope":1}"#, &tables, true).unwrap();
        assert!(m.row_keys.is_empty() && m.partial.is_none());
        assert!(matches!(
            PkMatch::new("{broken", &tables, true),
            Err(WebError::BadRequest(_))
        ));
        // Across every table, a single value is not looked for in composite keys.
        assert_eq!(PkMatch::new("5", &tables, false).unwrap().partial, None);
    }
}
