//! An archive's entries read back one by one, for `pgtrail restore`: the
//! file is checked as `verify --archive` checks it ([`super::check`]), and
//! each entry that checked out is handed on with its content exactly as
//! stored (the JSON columns as their stored text) and its chain hash.
//!
//! An entry's content is read from its line a second time here, by member
//! name, and its canonical digest recomputed: it must be the digest the
//! check computed, so what is handed on is what was checked.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::format::content_of;
use super::read::{check_each, Seen};
use super::{ArchiveError, Checked};
use crate::store::stored::{StoredEntry, FIELDS};

/// One entry of an archive, as it was stored, and its chain hash.
#[derive(Debug, Clone)]
pub struct ArchivedEntry {
    /// Its `source` is the archive's source name.
    pub entry: StoredEntry,
    /// `None` for an entry stored before the chain began.
    pub hash: Option<[u8; 32]>,
}

/// Checks the archive at `path` (decrypted with the age identities in
/// `identity` when it is encrypted) and hands each of its entries to
/// `each`, in id order, as it is checked: a problem found later (a
/// trailer that disagrees, say) is returned after entries were handed on,
/// so a caller keeps what it does with them undone until this returns
/// `Ok`. `source` names the entries' source; a record longer than
/// `max_line` is refused, as by [`super::check`]. An error from `each` ends
/// the read and is reported at that entry.
pub fn each_entry(
    path: &Path,
    identity: Option<&Path>,
    max_line: u64,
    source: &str,
    each: &mut dyn FnMut(ArchivedEntry) -> Result<(), String>,
) -> Result<Checked, ArchiveError> {
    check_each(path, identity, max_line, &mut |seen: Seen<'_>| {
        let entry = parse(seen.text, source)?;
        let (_, digest) = content_of(&entry)?;
        if digest != seen.digest || entry.id != seen.id {
            return Err("its content reads differently by member name than as checked".into());
        }
        each(ArchivedEntry {
            entry,
            hash: seen.hash,
        })
    })
}

/// A line's members, each as its raw JSON text.
type Members<'a> = BTreeMap<&'a str, &'a RawValue>;

/// Member `name` of the line, as a `T`.
fn member<T: DeserializeOwned>(members: &Members<'_>, name: &str) -> Result<T, String> {
    let raw = members
        .get(name)
        .ok_or_else(|| format!("it has no {name:?}"))?;
    serde_json::from_str(raw.get()).map_err(|e| format!("its {name:?}: {e}"))
}

/// The stored entry of one line (docs/archives.md): the export's members,
/// and `exact` where a JSON column's stored text is not the raw value's.
fn parse(text: &str, source: &str) -> Result<StoredEntry, String> {
    let members: Members<'_> =
        serde_json::from_str(text).map_err(|e| format!("its members cannot be read: {e}"))?;
    let exact: BTreeMap<String, String> = match members.get("exact") {
        Some(_) => member(&members, "exact")?,
        None => BTreeMap::new(),
    };
    let mut json: [Option<String>; 6] = Default::default();
    for (slot, name) in json.iter_mut().zip(&FIELDS[7..13]) {
        let raw = members
            .get(name)
            .ok_or_else(|| format!("it has no {name:?}"))?;
        *slot = match exact.get(*name) {
            Some(text) => Some(text.clone()),
            None if raw.get() == "null" => None,
            None => Some(raw.get().to_owned()),
        };
    }
    let committed_at: String = member(&members, "committed_at")?;
    Ok(StoredEntry {
        id: member(&members, "id")?,
        committed_at: DateTime::parse_from_rfc3339(&committed_at)
            .map_err(|e| format!("its committed_at {committed_at:?}: {e}"))?
            .with_timezone(&Utc),
        xid: member(&members, "xid")?,
        lsn: member(&members, "lsn")?,
        schema: member(&members, "schema")?,
        table: member(&members, "table")?,
        action: member(&members, "action")?,
        json,
        source: source.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::push_entry;
    use crate::archive::read_tests::entry;

    #[test]
    fn a_line_reads_back_as_the_stored_entry() {
        for text in ["{\"v\": 1.50}", "null", " {\"v\":1} ", "{\"v\":\n1}"] {
            let mut e = entry(9, text);
            e.json[1] = None;
            let mut line = String::new();
            push_entry(&mut line, &e, Some(&[7; 32]), None);
            let back = parse(&line, &e.source).unwrap();
            assert_eq!(
                (back.id, back.committed_at, &back.xid, &back.lsn),
                (e.id, e.committed_at, &e.xid, &e.lsn)
            );
            assert_eq!(
                (&back.schema, &back.table, &back.action),
                (&e.schema, &e.table, &e.action)
            );
            assert_eq!(back.json, e.json, "{line}");
            assert_eq!(content_of(&back).unwrap().1, content_of(&e).unwrap().1);
        }
    }

    #[test]
    fn a_missing_member_is_named() {
        let e = entry(9, "{}");
        let mut line = String::new();
        push_entry(&mut line, &e, None, None);
        let cut = line.replacen("\"schema\":", "\"schemata\":", 1);
        assert!(parse(&cut, "s").unwrap_err().contains("\"schema\""));
    }
}
