//! One entry as read back from the store for the outside world: the JSON
//! columns kept as the exact text stored, and the one JSON form of an entry
//! ([`StoredEntry::write_json`]) that JSON Lines and the web API share.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::text::write_json_string;

/// The fields of an exported entry, in export order (JSON Lines keys, CSV and XLSX columns).
/// `source` came last, so that the columns of files read by position before stay where they were.
pub const FIELDS: [&str; 14] = [
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
    "source",
];

/// The columns of `pgtrail.entries` a [`StoredEntry`] is read from, in this
/// order; a query may select more columns after them. The last is the name
/// of the entry's source ([`crate::store::sources::ENTRY_SOURCE_SQL`] looked
/// up in `pgtrail.sources`): a lookup in a table of a few rows, about half a
/// microsecond per entry in the store, paid there while the reader is busy
/// writing the one before; and read in the statement's own snapshot, so an
/// entry never names a source its reader cannot see.
pub const ENTRY_COLUMNS: &str =
    "id, committed_at, xid, lsn::text, schema_name, table_name, action, primary_key::text, \
     before::text, after::text, changed_columns::text, context::text, details::text, \
     (SELECT s.name FROM pgtrail.sources s WHERE s.id = \
      coalesce(source, CASE WHEN lsn IS NULL THEN 0::smallint ELSE 1::smallint END))";

/// How many columns [`ENTRY_COLUMNS`] selects.
pub const ENTRY_COLUMN_COUNT: usize = 14;

/// The source name of an entry whose source id is not in `pgtrail.sources`
/// (which `setup` never deletes from): never a valid source name, so no
/// filter or scope matches it by accident.
pub const UNKNOWN_SOURCE: &str = "?";

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
    /// The name of the database it was captured from (`[source] name`;
    /// `pgtrail` for pgtrail's own events). Not `context.source`, which the
    /// application sets.
    pub source: String,
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
            // Only a source deleted from pgtrail.sources has no name; say which.
            source: r
                .get::<_, Option<String>>(13)
                .unwrap_or_else(|| UNKNOWN_SOURCE.to_owned()),
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
        self.write_members(out);
        out.push('}');
    }

    /// [`StoredEntry::write_json`]'s object without its closing brace, to
    /// any text sink: the archive's line goes on with members of its own,
    /// and its reader compares a line with it as it is written.
    pub fn write_members<W: std::fmt::Write + ?Sized>(&self, out: &mut W) {
        let _ = write!(
            out,
            "{{\"id\":{},\"committed_at\":\"{}\",\"xid\":",
            self.id,
            self.committed_at_text()
        );
        let _ = match self.xid {
            Some(xid) => write!(out, "{xid}"),
            None => out.write_str("null"),
        };
        let _ = out.write_str(",\"lsn\":");
        match &self.lsn {
            Some(lsn) => write_json_string(out, lsn),
            None => {
                let _ = out.write_str("null");
            }
        }
        let _ = out.write_str(",\"schema\":");
        write_json_string(out, &self.schema);
        let _ = out.write_str(",\"table\":");
        write_json_string(out, &self.table);
        let _ = write!(out, ",\"action\":\"{}\"", self.action);
        for (name, value) in FIELDS[7..13].iter().zip(&self.json) {
            let _ = write!(out, ",\"{name}\":");
            let _ = out.write_str(value.as_deref().unwrap_or("null"));
        }
        let _ = out.write_str(",\"source\":");
        write_json_string(out, &self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_column_reads_the_source_as_sources_rs_defines_it() {
        assert!(ENTRY_COLUMNS.contains(crate::store::sources::ENTRY_SOURCE_SQL));
        assert!(crate::store::sources::SourceName::parse(UNKNOWN_SOURCE).is_err());
    }

    #[test]
    fn the_json_form_names_its_source_at_the_top_level() {
        let e = StoredEntry {
            id: 7,
            committed_at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            xid: Some(9),
            lsn: Some("0/16".into()),
            schema: "public".into(),
            table: "t".into(),
            action: "INSERT".into(),
            json: [
                Some("{\"id\":1}".into()),
                None,
                None,
                None,
                Some("{\"source\":\"app\"}".into()),
                None,
            ],
            source: "shop-eu".into(),
        };
        let mut out = String::new();
        e.write_json(&mut out);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["source"], "shop-eu");
        assert_eq!(v["context"]["source"], "app");
        // Each field after the one before it, in export order.
        let mut from = 0;
        for f in FIELDS {
            let at = out[from..].find(&format!("\"{f}\":"));
            from += at.unwrap_or_else(|| panic!("{f} after byte {from}: {out}"));
        }
    }
}
