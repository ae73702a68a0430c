//! Entries as rows of COPY for `pgtrail.entries`: the one place an entry is
//! turned into the store's columns, in binary (the writer's) and in text
//! (`examples/web_fill.rs`, which fills a benchmark store the way pgtrail
//! does, through psql), with the content the hash chain covers and the
//! replacement of what PostgreSQL text cannot hold.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::chain::Content;
use super::context::ContextColumns;
use super::sources::SourceId;
use crate::entry::{row_key, AuditEntry};
use crate::pg::Lsn;

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
    write_columns(
        e,
        cols,
        hash,
        Some(source),
        &mut TextRow { out, first: true },
    );
    out.put_u8(b'\n');
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
    write_columns(e, cols, hash, None, &mut TextRow { out, first: true });
    out.put_u8(b'\n');
}

/// What starts a binary COPY stream ([`BINARY_COPY_SQL`]): the signature,
/// no flags, no header extension.
pub const BINARY_COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What ends one: a field count of -1.
pub const BINARY_COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// The writer's COPY, in binary format: [`SOURCED_COPY_SQL`]'s columns, for
/// [`encode_binary_row`]'s rows between [`BINARY_COPY_HEADER`] and
/// [`BINARY_COPY_TRAILER`]. Binary spares the store parsing the commit time,
/// the LSN, the address and the hash from text (about a tenth of its work
/// per entry) and pgtrail escaping every value.
pub const BINARY_COPY_SQL: &str =
    "COPY pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
    primary_key, before, after, changed_columns, context, row_key, details, actor, client_addr, hash, source) \
    FROM STDIN (FORMAT binary)";

/// Appends one entry as a row of binary COPY, for [`BINARY_COPY_SQL`];
/// `committed_at` is its commit time in microseconds since 1970 (the
/// chain's, so the stored time is exactly the hashed one).
pub fn encode_binary_row(
    e: &AuditEntry,
    cols: &ContextColumns,
    hash: &[u8; 32],
    source: SourceId,
    committed_at: i64,
    out: &mut BytesMut,
) {
    out.put_i16(17);
    write_columns(
        e,
        cols,
        hash,
        Some(source),
        &mut BinaryRow { out, committed_at },
    );
}

/// How a COPY format writes each kind of column an entry has.
trait RowFormat {
    fn committed_at(&mut self, text: &str);
    fn int8(&mut self, value: i64);
    fn lsn(&mut self, lsn: Lsn);
    /// A text or json column (json's binary form is its text).
    fn text(&mut self, value: Option<&str>);
    fn inet(&mut self, addr: Option<IpAddr>);
    fn null(&mut self);
    fn bytea(&mut self, value: &[u8]);
    fn int2(&mut self, value: i16);
}

/// An entry's columns in the order of [`COPY_SQL`] (then `source`, when
/// given): the one place that order is written down for both formats.
fn write_columns(
    e: &AuditEntry,
    cols: &ContextColumns,
    hash: &[u8; 32],
    source: Option<SourceId>,
    f: &mut impl RowFormat,
) {
    let txn = &e.txn;
    f.committed_at(&txn.committed_at);
    f.int8(txn.xid as i64);
    f.lsn(txn.commit_lsn);
    f.text(Some(&e.table.schema));
    f.text(Some(&e.table.name));
    f.text(Some(e.action.as_str()));
    for json in [&e.primary_key, &e.before, &e.after, &e.changed_columns] {
        f.text(json.as_deref());
    }
    f.text(Some(&e.context));
    match &e.primary_key {
        Some(key) => f.int8(row_key(&e.table, key)),
        None => f.null(),
    }
    f.text(e.details.as_deref());
    f.text(cols.actor.as_deref());
    f.inet(cols.client_addr);
    f.bytea(hash);
    if let Some(source) = source {
        f.int2(source.0);
    }
}

/// COPY text: tab-separated, `\N` for null, escaped values. Numbers and
/// addresses are formatted straight into `out`: this runs for every row,
/// and `to_string` would allocate each time. Writing to a BytesMut cannot
/// fail.
struct TextRow<'a> {
    out: &'a mut BytesMut,
    first: bool,
}

impl TextRow<'_> {
    fn sep(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.put_u8(b'\t');
        }
    }
}

impl RowFormat for TextRow<'_> {
    fn committed_at(&mut self, text: &str) {
        self.sep();
        put_field(self.out, text);
    }
    fn int8(&mut self, value: i64) {
        use std::fmt::Write;
        self.sep();
        let _ = write!(self.out, "{value}");
    }
    fn lsn(&mut self, lsn: Lsn) {
        use std::fmt::Write;
        self.sep();
        let _ = write!(self.out, "{lsn}");
    }
    fn text(&mut self, value: Option<&str>) {
        self.sep();
        match value {
            Some(text) => put_field(self.out, text),
            None => self.out.put_slice(b"\\N"),
        }
    }
    fn inet(&mut self, addr: Option<IpAddr>) {
        use std::fmt::Write;
        self.sep();
        match addr {
            Some(addr) => {
                let _ = write!(self.out, "{addr}");
            }
            None => self.out.put_slice(b"\\N"),
        }
    }
    fn null(&mut self) {
        self.sep();
        self.out.put_slice(b"\\N");
    }
    fn bytea(&mut self, value: &[u8]) {
        // Hex form; the backslash doubled for COPY text.
        self.sep();
        self.out.put_slice(b"\\\\x");
        for b in value {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            self.out.put_u8(HEX[(b >> 4) as usize]);
            self.out.put_u8(HEX[(b & 15) as usize]);
        }
    }
    fn int2(&mut self, value: i16) {
        self.int8(i64::from(value));
    }
}

/// Binary COPY: each field its length (-1 for null) and its bytes in the
/// type's binary form, big-endian.
struct BinaryRow<'a> {
    out: &'a mut BytesMut,
    committed_at: i64,
}

/// 2000-01-01 in microseconds since 1970: timestamptz's binary epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl RowFormat for BinaryRow<'_> {
    fn committed_at(&mut self, _text: &str) {
        self.out.put_i32(8);
        self.out.put_i64(self.committed_at - POSTGRES_EPOCH_MICROS);
    }
    fn int8(&mut self, value: i64) {
        self.out.put_i32(8);
        self.out.put_i64(value);
    }
    fn lsn(&mut self, lsn: Lsn) {
        self.out.put_i32(8);
        self.out.put_u64(lsn.0);
    }
    fn text(&mut self, value: Option<&str>) {
        match value {
            Some(text) => self.bytea(text.as_bytes()),
            None => self.null(),
        }
    }
    fn inet(&mut self, addr: Option<IpAddr>) {
        // inet_recv's form: family (PGSQL_AF_INET 2, PGSQL_AF_INET6 3),
        // prefix bits, is_cidr, address length, the address.
        match addr {
            Some(IpAddr::V4(v4)) => {
                self.out.put_i32(8);
                self.out.put_slice(&[2, 32, 0, 4]);
                self.out.put_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                self.out.put_i32(20);
                self.out.put_slice(&[3, 128, 0, 16]);
                self.out.put_slice(&v6.octets());
            }
            None => self.null(),
        }
    }
    fn null(&mut self) {
        self.out.put_i32(-1);
    }
    fn bytea(&mut self, value: &[u8]) {
        // A value of 2 GiB or more (a forged image can repeat a column) gets
        // a length the store refuses before reading on: it takes no field
        // of 1 GiB or more (SQLSTATE 54000), so the transaction is
        // quarantined, never misread.
        self.out
            .put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        self.out.put_slice(value);
    }
    fn int2(&mut self, value: i16) {
        self.out.put_i32(2);
        self.out.put_i16(value);
    }
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
    fn a_binary_row_is_the_copy_columns_in_their_binary_forms() {
        use crate::entry::{Action, Transaction};
        use crate::table::TableName;
        let table = TableName::new("public", "Order\tItems");
        let committed_at = "2026-11-22 10:00:00.5+00";
        let micros = super::super::chain::commit_time_micros(committed_at).unwrap();
        let entry = AuditEntry {
            txn: std::sync::Arc::new(Transaction {
                xid: 4_000_000_123,
                committed_at: committed_at.into(),
                commit_lsn: Lsn(0x1_0000_00AB),
                end_lsn: Lsn(0x1_0000_00FF),
            }),
            table: table.clone(),
            action: Action::Delete,
            primary_key: Some(r#"{"id":5}"#.into()),
            before: Some(r#"{"id":5,"note":"a\nb"}"#.into()),
            after: None,
            changed_columns: None,
            context: r#"{"db_user":"app","client_addr":"::1"}"#.into(),
            details: None,
        };
        let cols = ContextColumns::of(&entry.context);
        let mut out = BytesMut::new();
        encode_binary_row(&entry, &cols, &[0xab; 32], SourceId(3), micros, &mut out);

        let mut fields: Vec<Option<Vec<u8>>> = Vec::new();
        let mut rest = &out[..];
        let count = i16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        for _ in 0..count {
            let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
            rest = &rest[4..];
            if len < 0 {
                fields.push(None);
            } else {
                fields.push(Some(rest[..len as usize].to_vec()));
                rest = &rest[len as usize..];
            }
        }
        assert!(rest.is_empty(), "nothing after the row's fields");
        let columns = BINARY_COPY_SQL
            .split_once('(')
            .unwrap()
            .1
            .split_once(')')
            .unwrap()
            .0;
        assert_eq!(columns.split(',').count(), fields.len());
        let int = |i: usize| i64::from_be_bytes(fields[i].clone().unwrap().try_into().unwrap());
        let text = |i: usize| fields[i].clone().map(|b| String::from_utf8(b).unwrap());
        // 2026-11-22 10:00:00.5 UTC in microseconds since 2000-01-01.
        assert_eq!(int(0), 848_656_800_500_000);
        assert_eq!(int(1), 4_000_000_123);
        assert_eq!(int(2) as u64, 0x1_0000_00AB);
        assert_eq!(text(3).as_deref(), Some("public"));
        assert_eq!(text(4).as_deref(), Some("Order\tItems"), "raw, no escape");
        assert_eq!(text(5).as_deref(), Some("DELETE"));
        assert_eq!(text(6).as_deref(), Some(r#"{"id":5}"#));
        assert_eq!(text(7).as_deref(), Some(r#"{"id":5,"note":"a\nb"}"#));
        assert_eq!((text(8), text(9)), (None, None));
        assert_eq!(text(10).as_deref(), Some(entry.context.as_ref()));
        assert_eq!(int(11), row_key(&table, r#"{"id":5}"#));
        assert_eq!(text(12), None);
        assert_eq!(text(13).as_deref(), Some("app"));
        let mut inet = vec![3, 128, 0, 16];
        inet.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(fields[14].as_deref(), Some(&inet[..]));
        assert_eq!(fields[15].as_deref(), Some(&[0xab; 32][..]));
        assert_eq!(fields[16].as_deref(), Some(&3i16.to_be_bytes()[..]));
        assert_eq!(&BINARY_COPY_HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(
            BINARY_COPY_HEADER.len(),
            19,
            "signature, flags, extension length"
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
}
