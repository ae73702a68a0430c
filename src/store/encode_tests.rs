//! Tests of [`super`]: the COPY rows, text and binary, field by field.

use super::*;

#[test]
fn a_row_is_one_line_of_the_copy_columns_in_order() {
    use crate::entry::{Action, Transaction};
    use crate::pg::Lsn;
    use crate::table::TableName;
    let table = TableName::new("public", "Order\tItems");
    let entry = AuditEntry {
        txn: std::sync::Arc::new(Transaction {
            xid: 4_000_000_123,
            committed_at: "2026-11-22 10:00:00.5+00".into(),
            commit_lsn: Lsn(0x1_0000_00AB),
            end_lsn: Lsn(0x1_0000_00FF),
        }),
        table: table.clone(),
        action: Action::Update,
        primary_key: Some(r#"{"id":5}"#.into()),
        before: None,
        after: Some(r#"{"id":5,"note":"a\nb"}"#.into()),
        changed_columns: None,
        context: r#"{"db_user":"app","client_addr":"10.0.0.7"}"#.into(),
        details: None,
    };
    let cols = ContextColumns::of(&entry.context);
    let mut out = BytesMut::new();
    encode_copy_row(&entry, &cols, &[0xab; 32], &mut out);
    let expected = [
        "2026-11-22 10:00:00.5+00".to_owned(),
        "4000000123".into(),
        "1/AB".into(),
        "public".into(),
        "Order\\tItems".into(),
        "UPDATE".into(),
        r#"{"id":5}"#.into(),
        "\\N".into(),
        r#"{"id":5,"note":"a\\nb"}"#.into(),
        "\\N".into(),
        r#"{"db_user":"app","client_addr":"10.0.0.7"}"#.into(),
        row_key(&table, r#"{"id":5}"#).to_string(),
        "\\N".into(),
        "app".into(),
        "10.0.0.7".into(),
        format!("\\\\x{}", "ab".repeat(32)),
    ]
    .join("\t")
        + "\n";
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    let columns = COPY_SQL
        .split_once('(')
        .unwrap()
        .1
        .split_once(')')
        .unwrap()
        .0;
    assert_eq!(columns.split(',').count(), expected.split('\t').count());
    let mut sourced = BytesMut::new();
    encode_sourced_row(&entry, &cols, &[0xab; 32], SourceId(3), &mut sourced);
    assert_eq!(
        std::str::from_utf8(&sourced).unwrap(),
        expected.trim_end_matches('\n').to_owned() + "\t3\n"
    );
    assert!(SOURCED_COPY_SQL.starts_with(COPY_SQL.trim_end_matches(") FROM STDIN")));
}

/// One row of binary COPY, split into its fields (`None`: null); the row
/// must be all of `out`.
fn binary_fields(out: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut fields = Vec::new();
    let count = i16::from_be_bytes([out[0], out[1]]);
    let mut rest = &out[2..];
    for _ in 0..count {
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
        rest = &rest[4..];
        if len < 0 {
            assert_eq!(len, -1, "null is -1");
            fields.push(None);
        } else {
            fields.push(Some(rest[..len as usize].to_vec()));
            rest = &rest[len as usize..];
        }
    }
    assert!(rest.is_empty(), "nothing after the row's fields");
    fields
}

/// A binary row's fields by the column names of its COPY statement, which
/// must name as many columns as the row has fields.
fn by_column(sql: &str, out: &[u8]) -> std::collections::HashMap<String, Option<Vec<u8>>> {
    let fields = binary_fields(out);
    let columns: Vec<String> = sql
        .split_once('(')
        .unwrap()
        .1
        .split_once(')')
        .unwrap()
        .0
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    assert_eq!(columns.len(), fields.len(), "{sql}");
    columns.into_iter().zip(fields).collect()
}

fn int8(field: &Option<Vec<u8>>) -> i64 {
    i64::from_be_bytes(field.clone().unwrap().try_into().unwrap())
}

fn text(field: &Option<Vec<u8>>) -> Option<String> {
    field.clone().map(|b| String::from_utf8(b).unwrap())
}

fn sample_entry(committed_at: &str, context: &str) -> AuditEntry {
    use crate::entry::{Action, Transaction};
    AuditEntry {
        txn: std::sync::Arc::new(Transaction {
            xid: 4_000_000_123,
            committed_at: committed_at.into(),
            commit_lsn: Lsn(0x1_0000_00AB),
            end_lsn: Lsn(0x1_0000_00FF),
        }),
        table: crate::table::TableName::new("public", "Order\tItems"),
        action: Action::Delete,
        primary_key: Some(r#"{"id":5}"#.into()),
        before: Some(r#"{"id":5,"note":"a\nb"}"#.into()),
        after: None,
        changed_columns: None,
        context: context.into(),
        details: None,
    }
}

/// 2026-11-22 10:00:00.5 UTC in microseconds since 2000-01-01, timestamptz's binary form.
const SAMPLE_TIME: &str = "2026-11-22 10:00:00.5+00";
const SAMPLE_TIME_PG: i64 = 848_656_800_500_000;

#[test]
fn a_binary_row_is_the_entry_rows_columns_in_their_binary_forms() {
    let micros = super::super::chain::commit_time_micros(SAMPLE_TIME).unwrap();
    let entry = sample_entry(SAMPLE_TIME, r#"{"db_user":"app","client_addr":"::1"}"#);
    let mut out = BytesMut::new();
    encode_binary_row(&entry, &[0xab; 32], (SourceId(3), 77), micros, &mut out);
    let f = by_column(BINARY_COPY_SQL, &out);
    assert_eq!(f.len(), 13);
    assert!(BINARY_COPY_SQL.starts_with("COPY pgtrail.entry_rows ("));
    assert_eq!(int8(&f["committed_at"]), SAMPLE_TIME_PG);
    assert_eq!(f["source"].as_deref(), Some(&3i16.to_be_bytes()[..]));
    assert_eq!(int8(&f["txn"]), 77);
    assert_eq!(text(&f["schema_name"]).as_deref(), Some("public"));
    assert_eq!(
        text(&f["table_name"]).as_deref(),
        Some("Order\tItems"),
        "raw, no escape"
    );
    assert_eq!(text(&f["action"]).as_deref(), Some("DELETE"));
    assert_eq!(text(&f["primary_key"]).as_deref(), Some(r#"{"id":5}"#));
    assert_eq!(
        text(&f["before"]).as_deref(),
        Some(r#"{"id":5,"note":"a\nb"}"#)
    );
    assert_eq!(
        (&f["after"], &f["changed_columns"]),
        (&None, &None),
        "nulls"
    );
    assert_eq!(int8(&f["row_key"]), row_key(&entry.table, r#"{"id":5}"#));
    assert_eq!(f["details"], None);
    assert_eq!(f["hash"].as_deref(), Some(&[0xab; 32][..]));
    for gone in ["xid", "lsn", "context", "actor", "client_addr"] {
        assert!(
            !f.contains_key(gone),
            "{gone} is the run's, not the entry's"
        );
    }

    // No primary key (a TRUNCATE): no row key either; details kept.
    let mut entry = entry;
    entry.primary_key = None;
    entry.before = None;
    entry.details = Some(r#"{"cascade":true}"#.into());
    out.clear();
    encode_binary_row(&entry, &[0; 32], (SourceId(3), 78), micros, &mut out);
    let f = by_column(BINARY_COPY_SQL, &out);
    assert_eq!(
        (&f["primary_key"], &f["row_key"], &f["before"]),
        (&None, &None, &None)
    );
    assert_eq!(text(&f["details"]).as_deref(), Some(r#"{"cascade":true}"#));
    assert_eq!(&BINARY_COPY_HEADER[..11], b"PGCOPY\n\xff\r\n\0");
    assert_eq!(
        BINARY_COPY_HEADER.len(),
        19,
        "signature, flags, extension length"
    );
}

#[test]
fn a_transactions_row_is_its_columns_in_their_binary_forms() {
    let micros = super::super::chain::commit_time_micros(SAMPLE_TIME).unwrap();
    let context = r#"{"db_user":"app","client_addr":"10.0.0.7","actor":"alice"}"#;
    let entry = sample_entry(SAMPLE_TIME, context);
    let cols = ContextColumns::of(context);
    let run = RunRow {
        id: 9_000_000_001,
        source: SourceId(2),
        committed_at: micros,
        txn: &entry.txn,
        context,
        cols: &cols,
    };
    let mut out = BytesMut::new();
    encode_transaction_row(&run, &mut out);
    let f = by_column(TRANSACTIONS_COPY_SQL, &out);
    assert!(TRANSACTIONS_COPY_SQL.starts_with("COPY pgtrail.transactions ("));
    assert_eq!(f.len(), 8);
    assert_eq!(int8(&f["id"]), 9_000_000_001);
    assert_eq!(int8(&f["committed_at"]), SAMPLE_TIME_PG);
    assert_eq!(f["source"].as_deref(), Some(&2i16.to_be_bytes()[..]));
    assert_eq!(int8(&f["xid"]), 4_000_000_123);
    assert_eq!(int8(&f["lsn"]) as u64, 0x1_0000_00AB);
    assert_eq!(text(&f["context"]).as_deref(), Some(context));
    assert_eq!(text(&f["actor"]).as_deref(), Some("alice"));
    assert_eq!(
        f["client_addr"].as_deref(),
        Some(&[2, 32, 0, 4, 10, 0, 0, 7][..])
    );

    // A context with neither: null actor and address, the context itself kept.
    let cols = ContextColumns::of(crate::entry::EMPTY_CONTEXT);
    let run = RunRow {
        context: crate::entry::EMPTY_CONTEXT,
        cols: &cols,
        ..run
    };
    out.clear();
    encode_transaction_row(&run, &mut out);
    let f = by_column(TRANSACTIONS_COPY_SQL, &out);
    assert_eq!((&f["actor"], &f["client_addr"]), (&None, &None));
    assert_eq!(
        text(&f["context"]).as_deref(),
        Some(crate::entry::EMPTY_CONTEXT)
    );
}

#[test]
fn nul_in_a_name_is_replaced_and_marked() {
    use crate::entry::{Action, Transaction};
    use crate::pg::Lsn;
    let mut entry = AuditEntry {
        txn: std::sync::Arc::new(Transaction {
            xid: 1,
            committed_at: "2026-11-22 10:00:00+00".into(),
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
        }),
        table: crate::table::TableName::new("public", "a\0b"),
        action: Action::Ddl,
        primary_key: None,
        before: None,
        after: Some(r#"{"sql":"x\u0000"}"#.into()),
        changed_columns: None,
        context: r#"{"actor":"m\u0000"}"#.into(),
        details: Some(r#"{"leaf":"p1"}"#.into()),
    };
    replace_nul(&mut entry);
    assert_eq!(entry.table.name, "a\u{fffd}b");
    assert_eq!(
        entry.details.as_deref(),
        Some(r#"{"leaf":"p1","nul_replaced":["table_name"]}"#)
    );
    let mut out = BytesMut::new();
    encode_copy_row(
        &entry,
        &ContextColumns::of(&entry.context),
        &[0; 32],
        &mut out,
    );
    assert!(!out.contains(&0), "no NUL byte reaches COPY");
}

#[test]
fn copy_text_escapes_separators() {
    let mut out = BytesMut::new();
    put_field(&mut out, "a\\b\tc\nd\re");
    assert_eq!(&out[..], b"a\\\\b\\tc\\nd\\re");
    out.clear();
    put_field(&mut out, "\\\\plain é\t");
    assert_eq!(&out[..], "\\\\\\\\plain é\\t".as_bytes());
}
