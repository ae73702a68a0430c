//! Decoding: one wal2json (format-version 2) record, as bytes, into a typed
//! [`Record`] that borrows from those bytes. No I/O, no allocation per value.
//!
//! Values stay raw JSON text (`&RawValue`): wal2json prints numbers in
//! PostgreSQL's own text form (`10.50`, `9223372036854775807`), and going
//! through f64 would lose scale and digits.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::pg::Lsn;
use crate::table::TableName;

/// One column of a row image as wal2json sends it (with `include-types=0`,
/// `include-type-oids=1`: the type's OID instead of its name, which the
/// walsender would have to format for every column of every change).
#[derive(Debug, Deserialize)]
pub struct Column<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "typeoid")]
    pub type_oid: u32,
    #[serde(borrow)]
    pub value: &'a RawValue,
}

#[derive(Debug, Deserialize)]
pub struct KeyColumn<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// Begin and commit records carry the same facts about their transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnBoundary {
    pub xid: u64,
    /// Commit time as PostgreSQL printed it (DateStyle ISO, TimeZone UTC).
    pub committed_at: String,
    /// Where the commit record starts.
    pub commit_lsn: Lsn,
    /// Where the commit record ends: once stored, the slot may advance to here.
    pub end_lsn: Lsn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowAction {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
pub struct RowChange<'a> {
    pub action: RowAction,
    pub table: TableName,
    /// The new row (INSERT, UPDATE); unchanged TOASTed columns are missing
    /// from it. In this and the other images, each column's name once, and
    /// at most [`MAX_COLUMNS`] ([`decode`] refuses others).
    pub columns: Vec<Column<'a>>,
    /// The old row image: key columns under REPLICA IDENTITY DEFAULT, the whole row under FULL.
    pub identity: Vec<Column<'a>>,
    /// Primary key column names, in key order; empty for a table without one.
    pub key: Vec<KeyColumn<'a>>,
}

#[derive(Debug)]
pub enum Record<'a> {
    Begin(TxnBoundary),
    Commit(TxnBoundary),
    Row(RowChange<'a>),
    Truncate(TableName),
    Message {
        prefix: Cow<'a, str>,
        content: Cow<'a, str>,
        transactional: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record with action {action:?} lacks the field {field:?}")]
    Missing { action: String, field: &'static str },
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("bad LSN: {0}")]
    Lsn(#[from] crate::pg::lsn::ParseLsnError),
    /// A row image that names a column twice: PostgreSQL sends each column
    /// of a row once, so only a forged or damaged stream can. Taken as it
    /// came, each copy of the name would be looked up, and copied, for each
    /// other ([`crate::capture::values::RowImage`]).
    #[error(
        "its {image} names the column {name:?} twice, and PostgreSQL sends each column once: the \
         record was not written by wal2json for a row of a table (a forged or damaged stream)"
    )]
    RepeatedColumn { image: &'static str, name: String },
    /// A row image with more columns than a table can have.
    #[error(
        "its {image} has {count} columns, and a PostgreSQL table has at most {MAX_COLUMNS}: the \
         record was not written by wal2json for a row of a table (a forged or damaged stream)"
    )]
    TooManyColumns { image: &'static str, count: usize },
}

/// The most columns a PostgreSQL table has (`MaxHeapAttributeNumber`).
pub const MAX_COLUMNS: usize = 1600;

#[derive(Debug, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    /// A 32-bit TransactionId, as wal2json prints it: a larger number is not
    /// one, and would be stored wrapped.
    xid: Option<u32>,
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lsn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    nextlsn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow)]
    table: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    columns: Vec<Column<'a>>,
    #[serde(borrow, default)]
    identity: Vec<Column<'a>>,
    #[serde(borrow, default)]
    pk: Vec<KeyColumn<'a>>,
    #[serde(borrow)]
    prefix: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    transactional: Option<bool>,
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let wire: Wire<'_> = serde_json::from_slice(bytes)?;
    let action = wire.action.as_ref();
    let missing = |field| DecodeError::Missing {
        action: action.to_owned(),
        field,
    };
    let table = |w: &Wire<'_>| -> Result<TableName, DecodeError> {
        Ok(TableName::new(
            w.schema.as_deref().ok_or_else(|| missing("schema"))?,
            w.table.as_deref().ok_or_else(|| missing("table"))?,
        ))
    };
    let boundary = |w: &Wire<'_>| -> Result<TxnBoundary, DecodeError> {
        Ok(TxnBoundary {
            xid: w.xid.map(u64::from).ok_or_else(|| missing("xid"))?,
            committed_at: w
                .timestamp
                .as_deref()
                .ok_or_else(|| missing("timestamp"))?
                .to_owned(),
            commit_lsn: w.lsn.as_deref().ok_or_else(|| missing("lsn"))?.parse()?,
            end_lsn: w
                .nextlsn
                .as_deref()
                .ok_or_else(|| missing("nextlsn"))?
                .parse()?,
        })
    };
    match action {
        "B" => Ok(Record::Begin(boundary(&wire)?)),
        "C" => Ok(Record::Commit(boundary(&wire)?)),
        "I" | "U" | "D" => {
            let row_action = match action {
                "I" => RowAction::Insert,
                "U" => RowAction::Update,
                _ => RowAction::Delete,
            };
            let table = table(&wire)?;
            once_each("new row (columns)", wire.columns.iter().map(|c| &c.name))?;
            once_each("old row (identity)", wire.identity.iter().map(|c| &c.name))?;
            once_each("primary key (pk)", wire.pk.iter().map(|c| &c.name))?;
            Ok(Record::Row(RowChange {
                action: row_action,
                table,
                columns: wire.columns,
                identity: wire.identity,
                key: wire.pk,
            }))
        }
        "T" => Ok(Record::Truncate(table(&wire)?)),
        "M" => Ok(Record::Message {
            prefix: wire.prefix.ok_or_else(|| missing("prefix"))?,
            content: wire.content.ok_or_else(|| missing("content"))?,
            transactional: wire.transactional.unwrap_or(false),
        }),
        other => Err(DecodeError::UnknownAction(other.to_owned())),
    }
}

/// Refuses a row image (or key) that names a column twice, or has more
/// columns than a table can: what [`RowChange`] promises its users.
fn once_each<'n, 'a: 'n>(
    image: &'static str,
    names: impl ExactSizeIterator<Item = &'n Cow<'a, str>> + Clone,
) -> Result<(), DecodeError> {
    let count = names.len();
    if count > MAX_COLUMNS {
        return Err(DecodeError::TooManyColumns { image, count });
    }
    let twice = |name: &str| DecodeError::RepeatedColumn {
        image,
        name: name.to_owned(),
    };
    // Most tables are narrow: comparing each pair costs less than a hash set.
    if count <= 32 {
        for (i, name) in names.clone().enumerate() {
            if names.clone().take(i).any(|n| n == name) {
                return Err(twice(name));
            }
        }
        return Ok(());
    }
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::with_capacity(count);
    match names.map(|n| &**n).find(|n| !seen.insert(*n)) {
        Some(name) => Err(twice(name)),
        None => Ok(()),
    }
}

/// The action of a record that could not be decoded, read from its opening
/// bytes: wal2json (format version 2) writes `{"action":"X"` first, so a
/// BEGIN or COMMIT can be told even when the rest of it is not valid JSON.
pub fn sniff_action(bytes: &[u8]) -> Option<u8> {
    let rest = bytes
        .trim_ascii_start()
        .strip_prefix(b"{")?
        .trim_ascii_start();
    let rest = rest.strip_prefix(br#""action""#)?.trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    match rest {
        [b'"', action, b'"', ..] => Some(*action),
        _ => None,
    }
}

/// The source transaction an entry belongs to, from its COMMIT record.
impl From<TxnBoundary> for crate::entry::Transaction {
    fn from(b: TxnBoundary) -> Self {
        crate::entry::Transaction {
            xid: b.xid,
            committed_at: b.committed_at,
            commit_lsn: b.commit_lsn,
            end_lsn: b.end_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_and_commit_carry_commit_and_end_lsn() {
        let r = decode(br#"{"action":"C","xid":724,"timestamp":"2026-11-22 02:52:43.174628+00","lsn":"0/1526D80","nextlsn":"0/1527398"}"#).unwrap();
        let Record::Commit(b) = r else {
            panic!("expected commit, got {r:?}")
        };
        assert_eq!(b.xid, 724);
        let forged = br#"{"action":"C","xid":9223372036854775813,"timestamp":"2026-11-22 02:52:43.174628+00","lsn":"0/1526D80","nextlsn":"0/1527398"}"#;
        assert!(
            matches!(decode(forged), Err(DecodeError::Json(_))),
            "an xid beyond 32 bits is refused, not stored wrapped"
        );
        assert_eq!(b.commit_lsn, "0/1526D80".parse().unwrap());
        assert_eq!(b.end_lsn, "0/1527398".parse().unwrap());
        assert_eq!(b.committed_at, "2026-11-22 02:52:43.174628+00");
    }

    #[test]
    fn row_values_stay_raw_text() {
        let r = decode(br#"{"action":"I","xid":1,"schema":"My Schema","table":"a\"b","columns":[{"name":"n","typeoid":1700,"value":10.50},{"name":"big","typeoid":20,"value":9223372036854775807}],"pk":[{"name":"n","typeoid":1700}]}"#).unwrap();
        let Record::Row(row) = r else {
            panic!("expected row")
        };
        assert_eq!(row.action, RowAction::Insert);
        assert_eq!(row.table, TableName::new("My Schema", "a\"b"));
        assert_eq!(row.columns[0].value.get(), "10.50");
        assert_eq!(row.columns[1].value.get(), "9223372036854775807");
        assert_eq!(row.key[0].name, "n");
    }

    #[test]
    fn type_oids_are_read_and_anything_else_there_is_an_error_not_a_panic() {
        let r = decode(br#"{"action":"I","xid":1,"schema":"s","table":"t","columns":[{"name":"d","typeoid":16399,"value":"7.25"}],"pk":[]}"#).unwrap();
        let Record::Row(row) = r else {
            panic!("expected row")
        };
        assert_eq!(row.columns[0].type_oid, 16399);
        for column in [
            r#"{"name":"c","value":1}"#,
            r#"{"name":"c","typeoid":"23","value":1}"#,
            r#"{"name":"c","typeoid":-1,"value":1}"#,
            r#"{"name":"c","typeoid":4294967296,"value":1}"#,
            r#"{"name":"c","typeoid":2.5,"value":1}"#,
            r#"{"name":"c","typeoid":null,"value":1}"#,
            r#"{"name":"c","type":"integer","value":1}"#,
        ] {
            let record = format!(
                r#"{{"action":"U","xid":1,"schema":"s","table":"t","columns":[],"identity":[{column}]}}"#
            );
            let e = decode(record.as_bytes());
            assert!(matches!(e, Err(DecodeError::Json(_))), "{column}: {e:?}");
        }
    }

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        let e = decode(br#"{"action":"I","xid":1,"schema":"s","table":"t","columns":[{"name":"c","typeoid":23,"value":1"#);
        assert!(matches!(e, Err(DecodeError::Json(_))));
        let e = decode(b"{\"action\":\"I\",\"xid\":1,\"schema\":\"s\",\"table\":\"t\",\"columns\":[{\"name\":\"c\",\"typeoid\":25,\"value\":\"\xe9\"}]}");
        assert!(matches!(e, Err(DecodeError::Json(_))));
    }

    #[test]
    fn the_action_of_a_broken_record_is_sniffed() {
        assert_eq!(
            sniff_action(br#"{"action":"B","xid":12,"lsn":"zz"}"#),
            Some(b'B')
        );
        assert_eq!(sniff_action(br#" { "action" : "C", broken"#), Some(b'C'));
        assert_eq!(sniff_action(br#"{"xid":1,"action":"B"}"#), None);
        assert_eq!(sniff_action(br#"{"action":"BC"}"#), None);
        assert_eq!(sniff_action(b"garbage"), None);
        assert_eq!(sniff_action(b""), None);
    }

    #[test]
    fn a_row_image_naming_a_column_twice_is_refused() {
        let col = |name: &str| format!(r#"{{"name":"{name}","typeoid":25,"value":"v"}}"#);
        let record = |columns: &[String], identity: &[String], pk: &[&str]| {
            let pk: Vec<String> = pk
                .iter()
                .map(|n| format!(r#"{{"name":"{n}","typeoid":25}}"#))
                .collect();
            format!(
                r#"{{"action":"U","xid":1,"schema":"s","table":"t","columns":[{}],"identity":[{}],"pk":[{}]}}"#,
                columns.join(","),
                identity.join(","),
                pk.join(",")
            )
        };
        let narrow: Vec<String> = ["a", "b", "c"].iter().map(|n| col(n)).collect();
        let wide: Vec<String> = (0..200).map(|i| col(&format!("c{i}"))).collect();
        assert!(decode(record(&narrow, &narrow, &["a"]).as_bytes()).is_ok());
        assert!(decode(record(&wide, &wide, &["c0", "c199"]).as_bytes()).is_ok());
        let mut narrow_twice = narrow.clone();
        narrow_twice.push(col("b"));
        let mut wide_twice = wide.clone();
        wide_twice.push(col("c150"));
        let (new, old) = ("new row (columns)", "old row (identity)");
        for (r, image, name) in [
            (record(&narrow_twice, &narrow, &["a"]), new, "b"),
            (record(&narrow, &narrow_twice, &["a"]), old, "b"),
            (record(&wide, &wide_twice, &["c0"]), old, "c150"),
            (record(&wide_twice, &wide, &["c0"]), new, "c150"),
            (
                record(&narrow, &narrow, &["a", "a"]),
                "primary key (pk)",
                "a",
            ),
            // Names equal once unescaped are the same name.
            (record(&[col("a"), col("\\u0061")], &[], &[]), new, "a"),
        ] {
            match decode(r.as_bytes()) {
                Err(e @ DecodeError::RepeatedColumn { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(image), "{text}");
                    assert!(
                        text.contains(&format!("the column {name:?} twice")),
                        "{text}"
                    );
                }
                other => panic!("expected a repeated column, got {other:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_COLUMNS).map(|i| col(&format!("c{i}"))).collect();
        assert!(matches!(
            decode(record(&many, &[], &[]).as_bytes()),
            Err(DecodeError::TooManyColumns { count: 1601, .. })
        ));
    }

    #[test]
    fn unknown_action_and_missing_fields_are_errors() {
        assert!(matches!(
            decode(br#"{"action":"X"}"#),
            Err(DecodeError::UnknownAction(_))
        ));
        assert!(matches!(
            decode(br#"{"action":"I","xid":1}"#),
            Err(DecodeError::Missing {
                field: "schema",
                ..
            })
        ));
    }
}
