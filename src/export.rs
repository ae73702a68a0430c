//! `pgtrail export`: entries out of the store, in commit order, as JSON Lines
//! or CSV. Rows are streamed from the server, so memory stays flat whatever
//! the size of the export.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::entry::push_json_string;
use crate::table::TableName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

/// Which entries to export; every field narrows the set.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub table: Option<TableName>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

const FIELDS: [&str; 13] = [
    "id",
    "committed_at",
    "xid",
    "lsn",
    "schema",
    "table",
    "action",
    "primary_key",
    "before",
    "after",
    "changed_columns",
    "context",
    "details",
];

/// The columns of `pgtrail.entries` a [`StoredEntry`] is read from, in this
/// order; a query may select more columns after them.
pub const ENTRY_COLUMNS: &str =
    "id, committed_at, xid, lsn::text, schema_name, table_name, action, primary_key::text, \
     before::text, after::text, changed_columns::text, context::text, details::text";

/// How many columns [`ENTRY_COLUMNS`] selects.
pub const ENTRY_COLUMN_COUNT: usize = 13;

/// One stored entry with its JSON columns as text, exactly as stored. Its JSON
/// form ([`StoredEntry::write_json`]) is what `export --format jsonl` prints
/// and what the web API returns, so the two cannot differ.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub id: i64,
    pub committed_at: DateTime<Utc>,
    /// The source transaction; `None` for pgtrail's own events, which have none.
    pub xid: Option<i64>,
    pub lsn: Option<String>,
    pub schema: String,
    pub table: String,
    pub action: String,
    /// primary_key, before, after, changed_columns, context, details: JSON text or SQL NULL.
    pub json: [Option<String>; 6],
}

impl StoredEntry {
    /// Reads the first [`ENTRY_COLUMN_COUNT`] columns of a row selected with [`ENTRY_COLUMNS`].
    pub fn from_row(r: &tokio_postgres::Row) -> StoredEntry {
        StoredEntry {
            id: r.get(0),
            committed_at: r.get(1),
            xid: r.get(2),
            lsn: r.get(3),
            schema: r.get(4),
            table: r.get(5),
            action: r.get(6),
            json: [
                r.get(7),
                r.get(8),
                r.get(9),
                r.get(10),
                r.get(11),
                r.get(12),
            ],
        }
    }

    /// RFC 3339 in UTC with microseconds, as exported.
    pub fn committed_at_text(&self) -> String {
        self.committed_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    pub fn primary_key(&self) -> Option<&str> {
        self.json[0].as_deref()
    }

    pub fn before(&self) -> Option<&str> {
        self.json[1].as_deref()
    }

    pub fn after(&self) -> Option<&str> {
        self.json[2].as_deref()
    }

    pub fn changed_columns(&self) -> Option<&str> {
        self.json[3].as_deref()
    }

    pub fn context(&self) -> Option<&str> {
        self.json[4].as_deref()
    }

    pub fn details(&self) -> Option<&str> {
        self.json[5].as_deref()
    }

    /// Appends the entry as one JSON object (no newline), fields in export order.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{{\"id\":{},\"committed_at\":\"{}\",\"xid\":",
            self.id,
            self.committed_at_text()
        );
        match self.xid {
            Some(xid) => {
                let _ = write!(out, "{xid}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"lsn\":");
        match &self.lsn {
            Some(lsn) => push_json_string(out, lsn),
            None => out.push_str("null"),
        }
        out.push_str(",\"schema\":");
        push_json_string(out, &self.schema);
        out.push_str(",\"table\":");
        push_json_string(out, &self.table);
        let _ = write!(out, ",\"action\":\"{}\"", self.action);
        for (name, value) in FIELDS[7..].iter().zip(&self.json) {
            let _ = write!(out, ",\"{name}\":{}", value.as_deref().unwrap_or("null"));
        }
        out.push('}');
    }
}

enum Sink<'a> {
    Csv(csv::Writer<&'a mut dyn Write>),
    Jsonl(&'a mut dyn Write),
}

/// Writes the matching entries to `out`; returns how many.
pub async fn export(
    client: &Client,
    filter: &ExportFilter,
    format: Format,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE true");
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(t) = &filter.table {
        params.push(Box::new(t.schema.clone()));
        params.push(Box::new(t.name.clone()));
        sql.push_str(&format!(
            " AND schema_name = ${} AND table_name = ${}",
            params.len() - 1,
            params.len()
        ));
    }
    if let Some(since) = filter.since {
        params.push(Box::new(since));
        sql.push_str(&format!(" AND committed_at >= ${}", params.len()));
    }
    if let Some(until) = filter.until {
        params.push(Box::new(until));
        sql.push_str(&format!(" AND committed_at < ${}", params.len()));
    }
    sql.push_str(" ORDER BY id");
    let rows = client
        .query_raw(
            &sql,
            params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)),
        )
        .await
        .context("querying the audit store")?;
    futures_util::pin_mut!(rows);

    let mut sink = match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(FIELDS)?;
            Sink::Csv(w)
        }
        Format::Jsonl => Sink::Jsonl(out),
    };
    let mut line = String::with_capacity(1024);
    let mut count = 0u64;
    while let Some(r) = rows
        .try_next()
        .await
        .context("reading from the audit store")?
    {
        let row = StoredEntry::from_row(&r);
        match &mut sink {
            Sink::Csv(w) => {
                let json = row.json.iter().map(|j| j.as_deref().unwrap_or("null"));
                let fixed = [
                    row.id.to_string(),
                    row.committed_at_text(),
                    row.xid.map(|x| x.to_string()).unwrap_or_default(),
                    row.lsn.unwrap_or_default(),
                    row.schema,
                    row.table,
                    row.action,
                ];
                w.write_record(fixed.iter().map(String::as_str).chain(json))?;
            }
            Sink::Jsonl(out) => {
                line.clear();
                row.write_json(&mut line);
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
        }
        count += 1;
    }
    match sink {
        Sink::Csv(mut w) => w.flush()?,
        Sink::Jsonl(out) => out.flush()?,
    }
    Ok(count)
}
