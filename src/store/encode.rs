//! Entries as lines of COPY text for `pgtrail.entries`: the one place an
//! entry is turned into the store's columns (also used by
//! `examples/web_fill.rs`, which fills a benchmark store the way pgtrail
//! does), with the content the hash chain covers and the replacement of what
//! PostgreSQL text cannot hold.

use bytes::{BufMut, BytesMut};

use super::chain::Content;
use super::context::ContextColumns;
use super::sources::SourceId;
use crate::entry::{row_key, AuditEntry};

/// The COPY statement [`encode_copy_row`]'s lines are for: an entry as
/// stored before sources had ids (a store before migration 15 has no
/// `source` column; tests build such stores with it).
pub const COPY_SQL: &str =
    "COPY pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
    primary_key, before, after, changed_columns, context, row_key, details, actor, client_addr, hash) FROM STDIN";

/// The writer's COPY: [`COPY_SQL`]'s columns and the entry's source, for
/// [`encode_sourced_row`]'s lines.
pub const SOURCED_COPY_SQL: &str =
    "COPY pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
    primary_key, before, after, changed_columns, context, row_key, details, actor, client_addr, hash, source) FROM STDIN";

/// [`encode_copy_row`]'s line with the entry's `source` after it, for [`SOURCED_COPY_SQL`].
pub fn encode_sourced_row(
    e: &AuditEntry,
    cols: &ContextColumns,
    hash: &[u8; 32],
    source: SourceId,
    out: &mut BytesMut,
) {
    use std::fmt::Write;
    encode_copy_row(e, cols, hash, out);
    // The line ends in the one newline encode_copy_row wrote.
    out.truncate(out.len() - 1);
    let _ = writeln!(out, "\t{}", source.0);
}

/// PostgreSQL text cannot hold a NUL character, and COPY refuses the whole
/// batch for one: a name that carries one (only a forged or hostile message
/// can) would stop capture for good. It is stored with U+FFFD in its place,
/// and the entry's details list the fields so changed. JSON columns need
/// nothing: their NULs stay escaped (`\u0000`).
pub fn replace_nul(entry: &mut AuditEntry) {
    let mut replaced = Vec::new();
    for (field, text) in [
        ("schema_name", &mut entry.table.schema),
        ("table_name", &mut entry.table.name),
    ] {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{fffd}");
            replaced.push(serde_json::Value::from(field));
        }
    }
    if replaced.is_empty() {
        return;
    }
    let mut details = entry
        .details
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(d).ok())
        .unwrap_or_default();
    details.insert("nul_replaced".into(), serde_json::Value::Array(replaced));
    entry.details = Some(serde_json::Value::Object(details).to_string());
}

/// An entry's content as the chain hashes it; `committed_at` is the
/// transaction's commit time in microseconds ([`chain::commit_time_micros`]).
pub fn content(e: &AuditEntry, committed_at: i64) -> Content<'_> {
    Content {
        committed_at_micros: committed_at,
        xid: Some(e.txn.xid as i64),
        lsn: Some(e.txn.commit_lsn.0),
        schema: &e.table.schema,
        table: &e.table.name,
        action: e.action.as_str(),
        primary_key: e.primary_key.as_deref(),
        before: e.before.as_deref(),
        after: e.after.as_deref(),
        changed_columns: e.changed_columns.as_deref(),
        context: &e.context,
        details: e.details.as_deref(),
    }
}

/// Appends one entry as a line of COPY text format, for [`COPY_SQL`];
/// `cols` are [`ContextColumns::of`] the entry's context, `hash` its link in
/// the capture chain.
pub fn encode_copy_row(e: &AuditEntry, cols: &ContextColumns, hash: &[u8; 32], out: &mut BytesMut) {
    // Numbers and addresses are formatted straight into `out`: this runs for
    // every row, and `to_string` would allocate each time. Writing to a
    // BytesMut cannot fail.
    use std::fmt::Write;
    let txn = &e.txn;
    put_field(out, &txn.committed_at);
    let _ = write!(out, "\t{}\t{}", txn.xid, txn.commit_lsn);
    out.put_u8(b'\t');
    put_field(out, &e.table.schema);
    out.put_u8(b'\t');
    put_field(out, &e.table.name);
    out.put_u8(b'\t');
    out.put_slice(e.action.as_str().as_bytes());
    for json in [&e.primary_key, &e.before, &e.after, &e.changed_columns] {
        out.put_u8(b'\t');
        match json {
            Some(text) => put_field(out, text),
            None => out.put_slice(b"\\N"),
        }
    }
    out.put_u8(b'\t');
    put_field(out, &e.context);
    out.put_u8(b'\t');
    match &e.primary_key {
        Some(key) => {
            let _ = write!(out, "{}", row_key(&e.table, key));
        }
        None => out.put_slice(b"\\N"),
    }
    out.put_u8(b'\t');
    match &e.details {
        Some(text) => put_field(out, text),
        None => out.put_slice(b"\\N"),
    }
    out.put_u8(b'\t');
    match &cols.actor {
        Some(actor) => put_field(out, actor),
        None => out.put_slice(b"\\N"),
    }
    out.put_u8(b'\t');
    match &cols.client_addr {
        Some(addr) => {
            let _ = write!(out, "{addr}");
        }
        None => out.put_slice(b"\\N"),
    }
    // bytea in hex form; the backslash doubled for COPY text.
    out.put_slice(b"\t\\\\x");
    for b in hash {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.put_u8(HEX[(b >> 4) as usize]);
        out.put_u8(HEX[(b & 15) as usize]);
    }
    out.put_u8(b'\n');
}

/// Escapes a value for COPY text format: backslash, newline, carriage return and tab.
fn put_field(out: &mut BytesMut, value: &str) {
    // One table lookup per byte: every JSON image passes through here, and
    // most of it needs no escape at all.
    const SPECIAL: [bool; 256] = {
        let mut t = [false; 256];
        t[b'\\' as usize] = true;
        t[b'\n' as usize] = true;
        t[b'\r' as usize] = true;
        t[b'\t' as usize] = true;
        t
    };
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(offset) = bytes[start..].iter().position(|&b| SPECIAL[b as usize]) {
        let i = start + offset;
        out.put_slice(&bytes[start..i]);
        out.put_slice(match bytes[i] {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\t",
        });
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
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
}
