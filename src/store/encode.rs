//! Entries as rows of COPY: the one place an entry is turned into the
//! store's columns, with the content the hash chain covers and the
//! replacement of what PostgreSQL text cannot hold.
//!
//! Two layouts. The writer's, in binary: an entry's own columns go to
//! `pgtrail.entry_rows` and what its run shares (context, xid, LSN, actor,
//! client address) to one row of `pgtrail.transactions` (migration 23,
//! [`super::runs`]). The text forms write the layout of before migration 23,
//! every column on the entry, into `pgtrail.entries`: tests build stores of
//! older versions with them, and `examples/web_fill.rs` fills a benchmark
//! store through psql (from migration 23 on `pgtrail.entries` is a view whose
//! INSTEAD OF INSERT trigger takes such rows).

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::chain::Content;
use super::context::ContextColumns;
use super::sources::SourceId;
use crate::entry::{row_key, AuditEntry, Transaction};
use crate::pg::Lsn;

/// The COPY statement [`encode_copy_row`]'s lines are for: an entry as
/// stored before sources had ids (a store before migration 15 has no
/// `source` column; tests build such stores with it). Every column is on the
/// entry, as in `pgtrail.entries` before migration 23 (a table then, a view
/// since, which takes these rows through its INSTEAD OF INSERT trigger).
pub const COPY_SQL: &str =
    "COPY pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
    primary_key, before, after, changed_columns, context, row_key, details, actor, client_addr, hash) FROM STDIN";

/// [`COPY_SQL`]'s columns and the entry's source, for [`encode_sourced_row`]'s
/// lines: the writer's COPY from migration 15 to 22, now used by tests that
/// build such stores and by `examples/web_fill.rs` (see [`COPY_SQL`] for
/// stores from migration 23 on).
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

/// The writer's COPY of entries, in binary format, for [`encode_binary_row`]'s
/// rows between [`BINARY_COPY_HEADER`] and [`BINARY_COPY_TRAILER`]: an
/// entry's own columns; `txn` names its row of `pgtrail.transactions`
/// ([`TRANSACTIONS_COPY_SQL`]), which holds what its run shares. Binary
/// spares the store parsing the commit time and the hash from text and
/// pgtrail escaping every value.
pub const BINARY_COPY_SQL: &str =
    "COPY pgtrail.entry_rows (committed_at, source, txn, schema_name, table_name, action, \
    primary_key, before, after, changed_columns, row_key, details, hash) FROM STDIN (FORMAT binary)";

/// Appends one entry as a row of binary COPY, for [`BINARY_COPY_SQL`];
/// `txn` is the id of its run's row of `pgtrail.transactions`,
/// `committed_at` its commit time in microseconds since 1970 (the chain's,
/// so the stored time is exactly the hashed one).
pub fn encode_binary_row(
    e: &AuditEntry,
    hash: &[u8; 32],
    (source, txn): (SourceId, i64),
    committed_at: i64,
    out: &mut BytesMut,
) {
    // The one place [`BINARY_COPY_SQL`]'s order is written down.
    let mut f = BinaryRow { out, committed_at };
    f.out.put_i16(13);
    f.committed_at(&e.txn.committed_at);
    f.int2(source.0);
    f.int8(txn);
    f.text(Some(&e.table.schema));
    f.text(Some(&e.table.name));
    f.text(Some(e.action.as_str()));
    for json in [&e.primary_key, &e.before, &e.after, &e.changed_columns] {
        f.text(json.as_deref());
    }
    match &e.primary_key {
        Some(key) => f.int8(row_key(&e.table, key)),
        None => f.null(),
    }
    f.text(e.details.as_deref());
    f.bytea(hash);
}

/// The writer's COPY of runs, in binary format, for [`encode_transaction_row`]'s
/// rows: what consecutive entries of one source transaction with one context
/// share, stored once for them all.
pub const TRANSACTIONS_COPY_SQL: &str =
    "COPY pgtrail.transactions (id, committed_at, source, xid, lsn, context, actor, client_addr) \
    FROM STDIN (FORMAT binary)";

/// What [`encode_transaction_row`] writes: a run of entries, of one source
/// transaction and one context.
pub struct RunRow<'a> {
    /// Its id, from `pgtrail.transactions_id_seq`; the entries' `txn`.
    pub id: i64,
    pub source: SourceId,
    /// The source transaction's commit time, in microseconds since 1970.
    pub committed_at: i64,
    pub txn: &'a Transaction,
    pub context: &'a str,
    /// [`ContextColumns::of`] the context.
    pub cols: &'a ContextColumns,
}

/// Appends one run as a row of binary COPY, for [`TRANSACTIONS_COPY_SQL`].
pub fn encode_transaction_row(run: &RunRow<'_>, out: &mut BytesMut) {
    // The one place [`TRANSACTIONS_COPY_SQL`]'s order is written down.
    let mut f = BinaryRow {
        out,
        committed_at: run.committed_at,
    };
    f.out.put_i16(8);
    f.int8(run.id);
    f.committed_at(&run.txn.committed_at);
    f.int2(run.source.0);
    f.int8(run.txn.xid as i64);
    f.lsn(run.txn.commit_lsn);
    f.text(Some(run.context));
    f.text(run.cols.actor.as_deref());
    f.inet(run.cols.client_addr);
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
/// given): the one place that order is written down.
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
#[path = "encode_tests.rs"]
mod tests;
