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
//!
//! Every line has exactly one spelling: the reader writes each line again
//! from what it read and requires the same bytes ([`EntryLine::linked`];
//! the header and trailer likewise), so no value can be shown one way and
//! hashed another, and no member added or left out goes unnoticed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::pg::Lsn;
use crate::store::chain::Content;
use crate::store::sources::SourceName;
use crate::store::stored::{StoredEntry, FIELDS};
use crate::text::{clip, hex, unhex_into, write_json_string};

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

impl Header {
    /// What a header must hold beyond its form: a source's name with its id
    /// (`pgtrail` with 0, any other valid name with an id from 1), and a
    /// range ([`range_problem`]).
    pub fn validate(&self) -> Result<(), String> {
        let events = self.source == SourceName::PGTRAIL;
        if events != (self.source_id == 0) || self.source_id < 0 {
            return Err(format!(
                "source {:?} cannot have the id {}: source 0 is pgtrail's own events, named \"pgtrail\", \
                 and every other source has an id from 1",
                clip(&self.source),
                self.source_id
            ));
        }
        if !events {
            // Its message would hold the name whole, and a hostile file's may be long.
            SourceName::parse(&self.source).map_err(|_| {
                format!(
                    "its source {:?} is not a valid source name (1 to 63 lower-case letters, \
                     digits, `_` and `-`)",
                    clip(&self.source)
                )
            })?;
        }
        match range_problem(self.from, self.to) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }
}

/// An archive's name without its suffix: `source-YYYYMMDD-YYYYMMDD`, the
/// dates of the range's ends in UTC.
pub fn stem(source: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("{source}-{}-{}", from.format("%Y%m%d"), to.format("%Y%m%d"))
}

/// What is wrong with the name `file_name` of an archive whose header is
/// `header`, if anything: a name of an archive's form (`source-from-to`,
/// perhaps `-N`, then `.jsonl.zst`, perhaps `.age`) must be the header's, so
/// that a renamed file does not pass for another source's or range's. Any
/// other name (a copy named by hand) is not checked.
pub fn name_problem(file_name: &str, header: &Header) -> Option<String> {
    let stem = file_name.strip_suffix(".age").unwrap_or(file_name);
    let stem = stem.strip_suffix(".jsonl.zst")?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let unnumbered = match stem.rsplit_once('-') {
        Some((rest, n)) if digits(n) && n.len() != 8 => rest,
        _ => stem,
    };
    let (rest, to) = unnumbered.rsplit_once('-')?;
    let (source, from) = rest.rsplit_once('-')?;
    if source.is_empty() || !(digits(from) && from.len() == 8 && digits(to) && to.len() == 8) {
        return None;
    }
    let expected = self::stem(&header.source, header.from, header.to);
    (unnumbered != expected).then(|| {
        format!(
            "its name says source {source:?} from {from} to {to}, its header source {:?} from {} to {}: \
             the file was renamed or its header changed; an intact archive can be named {expected}.jsonl.zst",
            header.source,
            header.from.to_rfc3339(),
            header.to.to_rfc3339()
        )
    })
}

/// What is wrong with a range of commit times `[from, to)`, if anything.
/// Its ends must be whole microseconds, as the store keeps commit times:
/// otherwise the store would compare with them truncated, while the header
/// (and a reader's check of each entry against it) kept them as given.
pub fn range_problem(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<String> {
    for (name, t) in [("from", from), ("to", to)] {
        if t.timestamp_subsec_nanos() % 1000 != 0 {
            return Some(format!(
                "its {name} {} has a fraction of a microsecond, and the store keeps commit times to \
                 the microsecond: give whole microseconds",
                t.to_rfc3339()
            ));
        }
    }
    if from >= to {
        return Some(format!(
            "it is empty: from {} is not before to {}",
            from.to_rfc3339(),
            to.to_rfc3339()
        ));
    }
    None
}

/// The last line: how many entries came before it, the last one's hash, and
/// the SHA-256 of every byte before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    pub end: bool,
    pub entries: u64,
    /// Hex; null when the file holds no hashed entry.
    pub last_hash: Option<String>,
    /// Hex SHA-256 of the text before the trailer (the header and every
    /// entry line, each with its line break): it covers what the chain does
    /// not (the header, each entry's id and source, entries without a hash),
    /// and stays the same when the file is compressed or encrypted anew.
    pub lines_sha256: String,
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
    write_entry(out, e, hash, prev);
}

/// [`push_entry`], to any text sink.
fn write_entry<W: fmt::Write + ?Sized>(
    out: &mut W,
    e: &StoredEntry,
    hash: Option<&[u8; 32]>,
    prev: Option<&[u8; 32]>,
) {
    // The export's object, going on with the archive's members.
    e.write_members(out);
    let _ = out.write_str(",\"hash\":");
    match hash {
        Some(h) => write_json_string(out, &hex(h)),
        None => {
            let _ = out.write_str("null");
        }
    }
    if let Some(p) = prev {
        let _ = out.write_str(",\"prev\":");
        write_json_string(out, &hex(p));
    }
    let mut exact = JSON_FIELDS
        .iter()
        .zip(&e.json)
        .filter_map(|(name, text)| Some((*name, text.as_deref()?)))
        .filter(|(_, text)| !raw_keeps(text))
        .peekable();
    if exact.peek().is_some() {
        let _ = out.write_str(",\"exact\":{");
        for (i, (name, text)) in exact.enumerate() {
            if i > 0 {
                let _ = out.write_char(',');
            }
            write_json_string(out, name);
            let _ = out.write_char(':');
            write_json_string(out, text);
        }
        let _ = out.write_char('}');
    }
    let _ = out.write_char('}');
}

/// A text sink that compares what is written to it with `line` as it comes,
/// holding none of it: a line is checked against what pgtrail writes for
/// what it holds without a second copy of it, however long (a hostile line
/// whose values pgtrail escapes longer would make that copy larger still).
/// Where they differ, it keeps a little of what was written from there on,
/// for the message.
struct SameAs<'a> {
    line: &'a str,
    /// How much of `line` what was written matched so far.
    at: usize,
    /// Where what was written first differs from `line`, and what it wrote
    /// from there (a few characters).
    differs: Option<(usize, String)>,
}

/// How much of what was written after a difference [`SameAs`] keeps.
const AFTER_DIFFERENCE: usize = 40;

impl<'a> SameAs<'a> {
    fn new(line: &'a str) -> Self {
        SameAs {
            line,
            at: 0,
            differs: None,
        }
    }

    /// What is wrong, when what was written is not `line`.
    fn problem(self) -> Option<String> {
        match self.differs {
            Some((at, written)) => Some(differs_at(self.line, at, &written)),
            None if self.at < self.line.len() => Some(differs_at(self.line, self.at, "")),
            None => None,
        }
    }
}

impl fmt::Write for SameAs<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some((_, after)) = &mut self.differs {
            if after.len() < AFTER_DIFFERENCE {
                let end = floor_char(s, (AFTER_DIFFERENCE - after.len()).min(s.len()));
                after.push_str(&s[..end]);
            }
            return Ok(());
        }
        let rest = &self.line.as_bytes()[self.at..];
        let same = s.bytes().zip(rest).take_while(|(a, b)| a == *b).count();
        if same == s.len() {
            self.at += same;
            return Ok(());
        }
        // At a character's start in both: `s` starts at one, and the line
        // holds the same bytes as `s` up to there.
        let start = floor_char(s, same);
        let end = floor_char(s, (start + AFTER_DIFFERENCE).min(s.len()));
        self.differs = Some((self.at + start, s[start..end].to_owned()));
        Ok(())
    }
}

/// Whether a stored JSON text written raw reads back as itself: raw JSON
/// loses white space around the value, and a raw `null` means SQL NULL.
fn raw_keeps(text: &str) -> bool {
    let json_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    text.trim_matches(json_space).len() == text.len() && text != "null"
}

/// One entry's line as read. Every member is required; none other is allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The source's name: not in the chain's canonical form, so the reader
    /// requires the header's, and the trailer's `lines_sha256` covers it.
    #[serde(borrow)]
    pub source: Cow<'a, str>,
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
    /// The entry's canonical digest and its hashes, `line` being the text it
    /// was read from (without its last line break); the error says which
    /// member is wrong.
    ///
    /// The line must be byte for byte the one pgtrail writes for the entry
    /// it holds ([`push_entry`]): so what a reader of the line sees (a JSON
    /// column's raw value, `committed_at`, `lsn`) is what the hash covers,
    /// `exact` is there only where the raw value cannot carry the stored text
    /// and then says the same as the raw value, and no member is added,
    /// repeated, reordered or spelled another way.
    pub fn linked(&self, line: &str) -> Result<Linked, String> {
        let committed_at = DateTime::parse_from_rfc3339(&self.committed_at)
            .map_err(|e| {
                format!(
                    "its committed_at {:?} is not a time: {e}",
                    clip(&self.committed_at)
                )
            })?
            .with_timezone(&Utc);
        let lsn = match &self.lsn {
            // "FFFFFFFF/FFFFFFFF" at most: a longer one is not parsed (nor copied).
            Some(l) if l.len() > 17 => {
                return Err(format!("its lsn {:?} is not a WAL position", clip(l)))
            }
            Some(l) => Some(l.parse::<Lsn>().map_err(|e| format!("its lsn: {e}"))?),
            None => None,
        };
        if let Some(name) = self
            .exact
            .keys()
            .find(|k| !JSON_FIELDS.contains(&k.as_ref()))
        {
            return Err(format!(
                "its \"exact\" names {:?}, which is not a JSON column",
                clip(name)
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
        let mut json: [Option<String>; 6] = Default::default();
        for ((slot, name), value) in json.iter_mut().zip(JSON_FIELDS).zip(raw) {
            *slot = match self.exact.get(name) {
                Some(text) => Some(text.to_string()),
                None if value.get() == "null" => None,
                None => Some(value.get().to_owned()),
            };
        }
        let hash = self
            .hash
            .as_deref()
            .map(|h| unhash("hash", h))
            .transpose()?;
        let prev = self
            .prev
            .as_deref()
            .map(|h| unhash("prev", h))
            .transpose()?;
        let entry = StoredEntry {
            id: self.id,
            committed_at,
            xid: self.xid,
            lsn: lsn.map(|l| l.to_string()),
            schema: self.schema.to_string(),
            table: self.table.to_string(),
            action: self.action.to_string(),
            json,
            source: self.source.to_string(),
        };
        let mut same = SameAs::new(line);
        write_entry(&mut same, &entry, hash.as_ref(), prev.as_ref());
        if let Some(problem) = same.problem() {
            return Err(problem);
        }
        let (_, digest) = content_of(&entry).map_err(|p| format!("its content: {p}"))?;
        Ok(Linked {
            id: self.id,
            committed_at,
            digest,
            hash,
            prev,
        })
    }
}

/// Where `line` differs from `written`, what pgtrail writes for the same
/// content: the first differing character, with a little context.
pub fn not_as_written(line: &str, written: &str) -> String {
    let at = line
        .char_indices()
        .zip(written.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| line.len().min(written.len()));
    differs_at(line, at, &written[at..])
}

/// [`not_as_written`], given where the line first differs (`at`, the same
/// character boundary in both) and what pgtrail writes from there on.
fn differs_at(line: &str, at: usize, written_after: &str) -> String {
    let from = floor_char(line, at.saturating_sub(20));
    let end = floor_char(line, (at + 20).min(line.len()));
    let shown = line.get(from..end).unwrap_or_default();
    let written = format!(
        "{}{}",
        line.get(from..at).unwrap_or_default(),
        &written_after[..floor_char(written_after, 20.min(written_after.len()))]
    );
    format!(
        "it is not written as pgtrail writes what it holds: at byte {at} it reads {shown:?} where \
         pgtrail writes {written:?} (a member was added, changed, repeated, reordered or written another \
         way): the line was edited"
    )
}

/// The greatest char boundary of `text` at or before `i`.
fn floor_char(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn unhash(member: &str, text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    unhex_into(text, &mut out)
        .ok_or_else(|| format!("its {member} {:?} is not 64 hex digits", clip(text)))?;
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
        let linked = parsed.linked(&line).unwrap();
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
    fn a_line_compared_as_written_is_told_apart_as_a_copy_would_be() {
        use std::fmt::Write as _;
        let long = "x".repeat(100);
        let cases = [
            ("abc", "abc"),
            ("abc", "abd"),
            ("abc", "ab"),
            ("ab", "abc"),
            ("aé", "aè"),
            ("", "a"),
            (&long[..], &long[1..]),
        ];
        for (line, written) in cases {
            // Written in pieces, as a line is: one character at a time.
            let mut same = SameAs::new(line);
            for c in written.chars() {
                same.write_char(c).unwrap();
            }
            let copy = (line != written).then(|| not_as_written(line, written));
            assert_eq!(same.problem(), copy, "{line:?} {written:?}");
        }
        // A member pgtrail escapes longer than the line does (\f, six
        // bytes to its two) is refused all the same.
        let e = entry(1, "{}");
        let mut line = String::new();
        push_entry(&mut line, &e, Some(&[1; 32]), None);
        let bent = line.replace("\"orders\"", &format!("\"{}\"", "\\f".repeat(1000)));
        let parsed: EntryLine = serde_json::from_str(&bent).unwrap();
        let problem = parsed.linked(&bent).unwrap_err();
        assert!(problem.contains("\\u000c"), "{problem}");
    }

    #[test]
    fn a_wrong_member_is_named() {
        let e = entry(1, "{}");
        let mut line = String::new();
        push_entry(&mut line, &e, Some(&[1; 32]), None);
        let bad = line.replace(e.lsn.as_deref().unwrap(), "16-B3");
        let parsed: EntryLine = serde_json::from_str(&bad).unwrap();
        assert!(parsed.linked(&bad).unwrap_err().contains("lsn"));
        let bad = line.replace(&"01".repeat(32), "xyz");
        let parsed: EntryLine = serde_json::from_str(&bad).unwrap();
        assert!(parsed.linked(&bad).unwrap_err().contains("64 hex digits"));
    }
}
