//! Row changes: the entry for one INSERT, UPDATE or DELETE, with its before
//! and after images, its changed columns and its key; unchanged TOASTed
//! columns are filled in from the old row, and the table's column rules
//! (ignored and redacted columns) are applied before anything is serialized.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::{open_mut, AssembleError, Assembler};
use crate::capture::decode::{RowAction, RowChange};
use crate::capture::redact::{ColumnRules, TableRules};
use crate::capture::values::RowImage;
use crate::entry::{Action, AuditEntry, Event, Transaction};
use crate::pg::Lsn;
use crate::table::TableName;
use crate::text::{json_object, push_json_string};

impl Assembler {
    /// A row change: an entry of its table (of its root, for a partition)
    /// when the filter captures it.
    pub(super) fn on_row(
        &mut self,
        lsn: Lsn,
        row: RowChange<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        // Borrowed field by field: the hot path, no moves of the open transaction.
        let open = open_mut(&mut self.open, "row change", lsn)?;
        open.truncated.clear();
        // No lookup, and no copy of the name, for a source without partitions.
        let root = if self.partitions.is_empty() {
            None
        } else {
            self.partitions.root_of(&row.table).cloned()
        };
        let table = root.as_ref().unwrap_or(&row.table);
        if !open.skip && self.filter.matches(table) {
            let rules = rules_for(&self.column_rules, &mut self.table_rules, table);
            if let Some(mut entry) = row_entry(&open.txn, &open.context, row, rules.as_deref()) {
                // Named by the root, so are the rules, the filter and the
                // row key: one history however the row is partitioned.
                if let Some(root) = root {
                    let partition = std::mem::replace(&mut entry.table, root);
                    entry.details =
                        Some(serde_json::json!({ "partition": partition.to_string() }).to_string());
                }
                out.push(Event::Entry(entry));
            }
        }
        Ok(())
    }
}

/// The column rules of `table`, looked up once per table. A table without
/// rules costs one hash lookup and no allocation; no rules at all, not even that.
fn rules_for(
    rules: &ColumnRules,
    cache: &mut HashMap<TableName, Option<Arc<TableRules>>>,
    table: &TableName,
) -> Option<Arc<TableRules>> {
    if rules.is_empty() {
        return None;
    }
    if let Some(found) = cache.get(table) {
        return found.clone();
    }
    let found = rules.for_table(table);
    cache.insert(table.clone(), found.clone());
    found
}

/// The entry for one row change; `None` for an UPDATE that changed only ignored columns.
fn row_entry(
    txn: &Arc<Transaction>,
    context: &Arc<str>,
    row: RowChange<'_>,
    rules: Option<&TableRules>,
) -> Option<AuditEntry> {
    let new = RowImage::from_columns(&row.columns);
    let old = RowImage::from_columns(&row.identity);
    let (action, mut before, mut after) = match row.action {
        RowAction::Insert => (Action::Insert, None, Some(new)),
        RowAction::Update => {
            let after = with_unchanged_toast(new, &old);
            (
                Action::Update,
                (!old.columns.is_empty()).then_some(old),
                Some(after),
            )
        }
        RowAction::Delete => (Action::Delete, Some(old), None),
    };
    // On the raw values, before redaction.
    let changed_columns = match (&before, &after) {
        (Some(before), Some(after)) => changed_columns(before, after, rules),
        _ => None,
    };
    if let Some(rules) = rules {
        if changed_columns.as_ref().is_some_and(|c| c.only_ignored) {
            return None;
        }
        for image in before.iter_mut().chain(after.iter_mut()) {
            rules.apply(image);
        }
    }
    // From the image as stored: a redacted key column is hashed here too, and
    // with an ignored one the entry has no key, as for a table without one.
    let key_source = after.as_ref().or(before.as_ref());
    let primary_key = key_source.and_then(|image| {
        if row.key.is_empty() {
            return None;
        }
        let values: Option<Vec<(&str, &str)>> = row
            .key
            .iter()
            .map(|k| image.get(&k.name).map(|v| (k.name.as_ref(), v)))
            .collect();
        values.map(|v| json_object(v.into_iter()))
    });
    Some(AuditEntry {
        txn: txn.clone(),
        table: row.table,
        action,
        primary_key,
        before: before.as_ref().map(RowImage::to_json),
        after: after.as_ref().map(RowImage::to_json),
        changed_columns: changed_columns.map(|c| c.json),
        context: context.clone(),
        details: None,
    })
}

/// wal2json leaves unchanged TOASTed columns out of an UPDATE's new row; under
/// REPLICA IDENTITY FULL the old row has them, and they did not change.
fn with_unchanged_toast<'a>(new: RowImage<'a>, old: &RowImage<'a>) -> RowImage<'a> {
    if old.columns.iter().all(|(name, _)| new.get(name).is_some()) {
        return new;
    }
    let mut columns: Vec<(&'a str, Cow<'a, str>)> = old
        .columns
        .iter()
        .map(|(name, old_value)| {
            let value = new
                .get(name)
                .map(|v| Cow::Owned(v.to_owned()))
                .unwrap_or_else(|| old_value.clone());
            (*name, value)
        })
        .collect();
    columns.extend(
        new.columns
            .iter()
            .filter(|(name, _)| old.get(name).is_none())
            .cloned(),
    );
    RowImage { columns }
}

struct Changed {
    /// The changed columns that are not ignored, as a JSON array.
    json: String,
    /// Columns did change, but every one of them is ignored.
    only_ignored: bool,
}

/// The columns whose values differ; `None` when the before image lacks a
/// column, since then what changed cannot be known. Ignored columns are
/// compared but not listed.
fn changed_columns(
    before: &RowImage<'_>,
    after: &RowImage<'_>,
    rules: Option<&TableRules>,
) -> Option<Changed> {
    let mut json = String::from("[");
    let mut ignored = false;
    for (name, value) in &after.columns {
        let old = before.get(name)?;
        if old != value.as_ref() {
            if rules.is_some_and(|r| r.ignores(name)) {
                ignored = true;
                continue;
            }
            if json.len() > 1 {
                json.push(',');
            }
            push_json_string(&mut json, name);
        }
    }
    json.push(']');
    let only_ignored = ignored && json.len() == 2;
    Some(Changed { json, only_ignored })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assembler, entries, feed, BEGIN_9, COMMIT_9};
    use crate::capture::redact::ColumnRules;
    use crate::entry::Event;
    use crate::table::TablePattern;

    #[test]
    fn unchanged_toast_columns_are_taken_from_the_before_image() {
        let mut a = assembler(&["*.*"]);
        let out = feed(
            &mut a,
            &[
                BEGIN_9,
                r#"{"action":"U","xid":9,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":1},{"name":"n","typeoid":25,"value":"b"}],"identity":[{"name":"id","typeoid":23,"value":1},{"name":"big","typeoid":25,"value":"long"},{"name":"n","typeoid":25,"value":"a"}],"pk":[{"name":"id","typeoid":23}]}"#,
                COMMIT_9,
            ],
        );
        let e = entries(&out)[0];
        assert_eq!(e.after.as_deref(), Some(r#"{"id":1,"big":"long","n":"b"}"#));
        assert_eq!(e.changed_columns.as_deref(), Some(r#"["n"]"#));
    }

    /// A forged UPDATE whose old row names `n` a thousand times beside a
    /// column the new row lacks: taken as it came, the after image would
    /// hold the new row's value of `n` once per copy of the name (a
    /// thousand times its size from one copy in the record). It is kept
    /// whole in `decode_errors`, as any record that is not wal2json's, with
    /// why, and the transaction goes on.
    #[test]
    fn a_row_image_naming_a_column_twice_is_kept_undecoded_not_multiplied() {
        let value = "v".repeat(1000);
        let n = r#"{"name":"n","typeoid":25,"value":"a"}"#;
        let forged = format!(
            r#"{{"action":"U","xid":9,"schema":"s","table":"t","columns":[{{"name":"id","typeoid":23,"value":1}},{{"name":"n","typeoid":25,"value":"{value}"}}],"identity":[{{"name":"id","typeoid":23,"value":1}},{{"name":"big","typeoid":25,"value":"x"}},{}],"pk":[{{"name":"id","typeoid":23}}]}}"#,
            vec![n; 1000].join(",")
        );
        let next = r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":2}],"pk":[{"name":"id","typeoid":23}]}"#;
        let mut a = assembler(&["*.*"]);
        let out = feed(&mut a, &[BEGIN_9, &forged, next, COMMIT_9]);
        match &out[..] {
            [Event::Undecodable(f), Event::Entry(e), Event::Commit(t)] => {
                assert_eq!(f.record, forged);
                assert!(
                    f.error
                        .contains("old row (identity) names the column \"n\" twice"),
                    "{}",
                    f.error
                );
                assert_eq!(e.after.as_deref(), Some(r#"{"id":2}"#));
                assert_eq!(t.xid, 9);
            }
            other => panic!("expected the record kept undecoded, then the rest: {other:?}"),
        }
    }

    /// Column rules as data: each record of one transaction, and the entry it
    /// must become (`None`: no entry). In the expected text, `"~v"` stands for
    /// the hash of the JSON string `"v"` under the test key.
    #[test]
    fn column_rules_ignore_and_redact() {
        use crate::capture::redact::{ColumnRule, RedactKey};
        let key = || RedactKey::new(b"test key");
        let rule = |table: &str, ignore: &[&str], redact: &[&str]| ColumnRule {
            table: TablePattern::parse(table).unwrap(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            redact: redact.iter().map(|s| s.to_string()).collect(),
        };
        let rules = ColumnRules::new(
            vec![
                rule("s.users", &["seen"], &["pw", "ssn"]),
                rule("s.tok*", &[], &["token"]),
                rule("s.odd", &["id"], &[]),
            ],
            Some(key()),
        )
        .unwrap();
        let expand = |text: &str| -> String {
            let mut out = String::new();
            let mut rest = text;
            while let Some(at) = rest.find('~') {
                out.push_str(&rest[..at - 1]);
                let word: String = rest[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                out.push_str(&key().hash(&format!("\"{word}\"")));
                rest = &rest[at + 1 + word.len() + 1..];
            }
            out.push_str(rest);
            out
        };
        let cols = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(n, val)| format!(r#"{{"name":"{n}","typeoid":25,"value":{val}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let users = |action: &str, new: &[(&str, &str)], old: &[(&str, &str)]| {
            format!(
                r#"{{"action":"{action}","xid":9,"schema":"s","table":"users","columns":[{}],"identity":[{}],"pk":[{{"name":"id","typeoid":23}}]}}"#,
                cols(new),
                cols(old)
            )
        };
        let user = |pw: &'static str, seen: &'static str| {
            [
                ("id", "1"),
                ("name", r#""a""#),
                ("pw", pw),
                ("ssn", "null"),
                ("seen", seen),
            ]
        };
        let row1 = user(r#""x1""#, r#""t1""#);
        let seen2 = user(r#""x1""#, r#""t2""#);
        let pw2 = user(r#""x2""#, r#""t3""#);
        type Expected = Option<(
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        )>;
        let cases: Vec<(String, Expected)> = vec![
            // INSERT: the ignored column is gone, the redacted one hashed, null stays null.
            (users("I", &row1, &[]), Some((Some(r#"{"id":1}"#), None, Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#), None))),
            // Only the ignored column changed: no entry.
            (users("U", &seen2, &row1), None),
            // A redacted column changed (and an ignored one): listed, hashes differ.
            (
                users("U", &pw2, &seen2),
                Some((
                    Some(r#"{"id":1}"#),
                    Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#),
                    Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#),
                    Some(r#"["pw"]"#),
                )),
            ),
            // Nothing changed at all: still an entry, as without rules.
            (users("U", &pw2, &pw2), Some((Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), Some("[]")))),
            // Identity DEFAULT: what changed is unknown, so the entry stays, without the ignored column.
            (
                users("U", &row1, &[("id", "1")]),
                Some((Some(r#"{"id":1}"#), Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#), None)),
            ),
            (users("D", &[], &pw2), Some((Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), None, None))),
            // A redacted key column is hashed in primary_key too.
            (
                r#"{"action":"D","xid":9,"schema":"s","table":"tokens","identity":[{"name":"token","typeoid":25,"value":"t0k"},{"name":"n","typeoid":23,"value":5}],"pk":[{"name":"token","typeoid":25}]}"#.into(),
                Some((Some(r#"{"token":"~t0k"}"#), Some(r#"{"token":"~t0k","n":5}"#), None, None)),
            ),
            // An ignored key column: no primary_key, as for a table without one.
            (
                r#"{"action":"I","xid":9,"schema":"s","table":"odd","columns":[{"name":"id","typeoid":23,"value":7},{"name":"v","typeoid":25,"value":"x"}],"pk":[{"name":"id","typeoid":23}]}"#.into(),
                Some((None, None, Some(r#"{"v":"x"}"#), None)),
            ),
            // Rules are per table: the same column names elsewhere are stored as they are.
            (
                r#"{"action":"I","xid":9,"schema":"s","table":"other","columns":[{"name":"pw","typeoid":25,"value":"x1"},{"name":"seen","typeoid":25,"value":"t1"}],"pk":[]}"#.into(),
                Some((None, None, Some(r#"{"pw":"x1","seen":"t1"}"#), None)),
            ),
        ];
        for (record, expected) in cases {
            let mut a = assembler(&["*.*"]).with_column_rules(rules.clone());
            let out = feed(&mut a, &[BEGIN_9, &record, COMMIT_9]);
            assert!(
                matches!(out.last(), Some(Event::Commit(_))),
                "the transaction commits either way: {record}"
            );
            let got = entries(&out).first().map(|e| {
                (
                    e.primary_key.clone(),
                    e.before.clone(),
                    e.after.clone(),
                    e.changed_columns.clone(),
                )
            });
            let want = expected.map(|(k, b, a, c)| {
                (
                    k.map(expand),
                    b.map(expand),
                    a.map(expand),
                    c.map(str::to_owned),
                )
            });
            assert_eq!(got, want, "for {record}");
        }
    }
}
