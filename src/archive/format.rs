//! The lines of an archive: the header, one line per entry, the trailer.
//!
//! An entry's line is exactly its export/API JSON ([`StoredEntry::write_json`])
//! with more members after it: `"hash"` (hex, or null for an entry stored
//! before the chain began), `"prev"` (hex, on the first entry of each run:
//! the hash it follows) and, only where needed, `"exact"`. Every member the
//! chain's canonical form covers is there as stored: `committed_at` to the
//! microsecond in UTC, `xid`, `lsn`, schema, table, action, and the six JSON
//! columns as their stored text, read back byte for byte as raw JSON. Two
//! stored texts the raw form cannot carry go into `"exact"` as strings, by
//! column name: a text with white space before or after its value (the
//! `json` type keeps it) and the JSON text `null` (a bare `null` in the line
//! is SQL NULL).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::pg::Lsn;
use crate::store::chain::Content;
use crate::store::stored::{StoredEntry, FIELDS};
use crate::text::{hex, push_json_string, unhex_into};

/// The first line: what the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The format's version ([`super::FORMAT_VERSION`]).
    pub pgtrail_archive: u32,
    pub source: String,
    pub source_id: i16,
    /// The range, `[from, to)`, of the entries' commit times.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub written_at: DateTime<Utc>,
}

/// The last line: how many entries came before it, and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    pub end: bool,
    pub entries: u64,
    /// Hex; null when the file holds no hashed entry.
    pub last_hash: Option<String>,
}

/// Names of the JSON columns, in [`StoredEntry::json`] order.
const JSON_FIELDS: [&str; 6] = [
    FIELDS[7], FIELDS[8], FIELDS[9], FIELDS[10], FIELDS[11], FIELDS[12],
];

/// Appends the line of entry `e` (without its newline).
pub fn push_entry(
    out: &mut String,
    e: &StoredEntry,
    hash: Option<&[u8; 32]>,
    prev: Option<&[u8; 32]>,
) {
    e.write_json(out);
    // The export's object, reopened for the archive's members.
    out.pop();
    out.push_str(",\"hash\":");
    match hash {
        Some(h) => push_json_string(out, &hex(h)),
        None => out.push_str("null"),
    }
    if let Some(p) = prev {
        out.push_str(",\"prev\":");
        push_json_string(out, &hex(p));
    }
    let mut exact = JSON_FIELDS
        .iter()
        .zip(&e.json)
        .filter_map(|(name, text)| Some((*name, text.as_deref()?)))
        .filter(|(_, text)| !raw_keeps(text))
        .peekable();
    if exact.peek().is_some() {
        out.push_str(",\"exact\":{");
        for (i, (name, text)) in exact.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, name);
            out.push(':');
            push_json_string(out, text);
        }
        out.push('}');
    }
    out.push('}');
}

/// Whether a stored JSON text written raw reads back as itself: raw JSON
/// loses white space around the value, and a raw `null` means SQL NULL.
fn raw_keeps(text: &str) -> bool {
    let json_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    text.trim_matches(json_space).len() == text.len() && text != "null"
}

/// One entry's line as read.
#[derive(Debug, Deserialize)]
pub struct EntryLine<'a> {
    pub id: i64,
    #[serde(borrow)]
    committed_at: Cow<'a, str>,
    xid: Option<i64>,
    #[serde(borrow)]
    lsn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    schema: Cow<'a, str>,
    #[serde(borrow)]
    table: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    primary_key: &'a RawValue,
    #[serde(borrow)]
    before: &'a RawValue,
    #[serde(borrow)]
    after: &'a RawValue,
    #[serde(borrow)]
    changed_columns: &'a RawValue,
    #[serde(borrow)]
    context: &'a RawValue,
    #[serde(borrow)]
    details: &'a RawValue,
    #[serde(borrow)]
    hash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    prev: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    exact: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// What a line holds for the chain: its content's digest, its hash, and the
/// hash it says it follows.
#[derive(Debug)]
pub struct Linked {
    pub id: i64,
    pub committed_at: DateTime<Utc>,
    pub digest: [u8; 32],
    pub hash: Option<[u8; 32]>,
    pub prev: Option<[u8; 32]>,
}

impl EntryLine<'_> {
    /// The entry's canonical digest and its hashes; the error says which member is wrong.
    pub fn linked(&self) -> Result<Linked, String> {
        let committed_at = DateTime::parse_from_rfc3339(&self.committed_at)
            .map_err(|e| {
                format!(
                    "its committed_at {:?} is not a time: {e}",
                    self.committed_at
                )
            })?
            .with_timezone(&Utc);
        let lsn = match &self.lsn {
            Some(l) => Some(l.parse::<Lsn>().map_err(|e| format!("its lsn: {e}"))?.0),
            None => None,
        };
        if let Some(name) = self
            .exact
            .keys()
            .find(|k| !JSON_FIELDS.contains(&k.as_ref()))
        {
            return Err(format!(
                "its \"exact\" names {name:?}, which is not a JSON column"
            ));
        }
        let raw = [
            self.primary_key,
            self.before,
            self.after,
            self.changed_columns,
            self.context,
            self.details,
        ];
        let mut json: [Option<&str>; 6] = [None; 6];
        for ((slot, name), value) in json.iter_mut().zip(JSON_FIELDS).zip(raw) {
            *slot = match self.exact.get(name) {
                Some(text) => Some(text.as_ref()),
                None if value.get() == "null" => None,
                None => Some(value.get()),
            };
        }
        let context = json[4].ok_or("its context is null; every entry has one")?;
        let content = Content {
            committed_at_micros: committed_at.timestamp_micros(),
            xid: self.xid,
            lsn,
            schema: &self.schema,
            table: &self.table,
            action: &self.action,
            primary_key: json[0],
            before: json[1],
            after: json[2],
            changed_columns: json[3],
            context,
            details: json[5],
        };
        Ok(Linked {
            id: self.id,
            committed_at,
            digest: content.digest(),
            hash: self
                .hash
                .as_deref()
                .map(|h| unhash("hash", h))
                .transpose()?,
            prev: self
                .prev
                .as_deref()
                .map(|h| unhash("prev", h))
                .transpose()?,
        })
    }
}

fn unhash(member: &str, text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    unhex_into(text, &mut out)
        .ok_or_else(|| format!("its {member} {text:?} is not 64 hex digits"))?;
    Ok(out)
}

/// The content of a stored entry as the chain hashes it; the error names
/// what the store returned that pgtrail cannot read.
pub fn content_of(e: &StoredEntry) -> Result<(Content<'_>, [u8; 32]), String> {
    let lsn = match &e.lsn {
        Some(l) => Some(l.parse::<Lsn>().map_err(|err| err.to_string())?.0),
        None => None,
    };
    let content = Content {
        committed_at_micros: e.committed_at.timestamp_micros(),
        xid: e.xid,
        lsn,
        schema: &e.schema,
        table: &e.table,
        action: &e.action,
        primary_key: e.primary_key(),
        before: e.before(),
        after: e.after(),
        changed_columns: e.changed_columns(),
        context: e.context().ok_or("it has no context")?,
        details: e.details(),
    };
    let digest = content.digest();
    Ok((content, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::read_tests::entry;
    use crate::store::chain::{link, GENESIS};

    fn round_trip(e: &StoredEntry) -> Linked {
        let (_, digest) = content_of(e).unwrap();
        let hash = link(&GENESIS, &digest);
        let mut line = String::new();
        push_entry(&mut line, e, Some(&hash), Some(&GENESIS));
        let parsed: EntryLine = serde_json::from_str(&line).unwrap();
        let linked = parsed.linked().unwrap();
        assert_eq!(linked.digest, digest, "{line}");
        assert_eq!(linked.hash, Some(hash));
        linked
    }

    #[test]
    fn a_line_is_the_export_json_and_carries_the_chain() {
        let e = entry(7, "{\"v\": 1.50}");
        let mut export = String::new();
        e.write_json(&mut export);
        let mut line = String::new();
        push_entry(&mut line, &e, Some(&[0xab; 32]), None);
        assert!(line.starts_with(&export[..export.len() - 1]), "{line}");
        assert!(
            line.ends_with(&format!(",\"hash\":\"{}\"}}", "ab".repeat(32))),
            "{line}"
        );
        let linked = round_trip(&e);
        assert_eq!((linked.id, linked.prev), (7, Some(GENESIS)));
    }

    #[test]
    fn texts_raw_json_cannot_carry_are_kept_exactly() {
        for text in ["null", " {\"v\":1} ", "\n[1]", "{\"v\":\n1}"] {
            let e = entry(1, text);
            round_trip(&e);
        }
        // SQL NULL and the JSON text null hash differently, and both read back.
        let (_, a) = content_of(&entry(1, "null")).unwrap();
        let mut sql_null = entry(1, "x");
        sql_null.json[2] = None;
        let (_, b) = content_of(&sql_null).unwrap();
        assert_ne!(a, b);
        round_trip(&sql_null);
    }

    #[test]
    fn a_wrong_member_is_named() {
        let e = entry(1, "{}");
        let mut line = String::new();
        push_entry(&mut line, &e, Some(&[1; 32]), None);
        let bad = line.replace(e.lsn.as_deref().unwrap(), "16-B3");
        let parsed: EntryLine = serde_json::from_str(&bad).unwrap();
        assert!(parsed.linked().unwrap_err().contains("lsn"));
        let bad = line.replace(&"01".repeat(32), "xyz");
        let parsed: EntryLine = serde_json::from_str(&bad).unwrap();
        assert!(parsed.linked().unwrap_err().contains("64 hex digits"));
    }
}
