//! One entry as read back from the store for the outside world: the JSON
//! columns kept as the exact text stored, and the one JSON form of an entry
//! ([`StoredEntry::write_json`]) that JSON Lines and the web API share.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::text::push_json_string;

/// The fields of an exported entry, in export order (JSON Lines keys, CSV and XLSX columns).
pub const FIELDS: [&str; 13] = [
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

    /// The context's members whose values are not null, as text (a JSON
    /// string's content, else the JSON text): what the flat formats show.
    pub fn context_fields(&self) -> Map<String, Value> {
        let parsed: Option<Map<String, Value>> =
            self.context().and_then(|t| serde_json::from_str(t).ok());
        parsed
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect()
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
