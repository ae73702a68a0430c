//! Why a row matched a free-text search ([`Matched`]): the first value that
//! holds the term (the row after, then before, in column order), cut to a
//! snippet around it and split into plain and matching parts. The template
//! escapes every part as text and wraps the matching ones in `<mark>`, so
//! the highlight is escaped first and marked second: a stored `<script>`
//! shows as text, never as HTML.
//!
//! The match is case-insensitive, character by character, as the search's
//! `ILIKE` is; a value is looked at up to [`SCANNED`] characters, so a huge
//! value costs the page little (a match beyond shows no snippet).

use crate::store::stored::StoredEntry;
use crate::web::diff::Members;

/// Characters of a value looked at, at most.
const SCANNED: usize = 64 * 1024;
/// Characters kept before the first match and after it.
const BEFORE: usize = 24;
const AFTER: usize = 48;

/// A value that holds the search term, as a snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub column: String,
    /// `after` or `before`: which image of the row holds it.
    pub side: &'static str,
    /// The snippet: `(is a match, text)`, in order.
    pub parts: Vec<(bool, String)>,
}

fn same(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// Where `term` starts in `text` from `from` on, case-insensitively (character indexes).
fn find(text: &[char], term: &[char], from: usize) -> Option<usize> {
    if term.is_empty() || text.len() < term.len() {
        return None;
    }
    (from..=text.len() - term.len()).find(|&i| {
        text[i..i + term.len()]
            .iter()
            .zip(term)
            .all(|(a, b)| same(*a, *b))
    })
}

/// A value as the search reads it: a string's text, any other JSON as written; `None` for null.
fn value_text(raw: &str) -> Option<String> {
    match raw {
        "null" => None,
        r if r.starts_with('"') => serde_json::from_str::<String>(r).ok(),
        r => Some(r.to_owned()),
    }
}

/// The snippet of `text` around the first match, every match in it marked.
fn snippet(text: &[char], term: &[char], first: usize) -> Vec<(bool, String)> {
    let start = first.saturating_sub(BEFORE);
    let end = (first + term.len() + AFTER).min(text.len());
    let mut parts = Vec::new();
    let mut plain: String = if start > 0 {
        "…".into()
    } else {
        String::new()
    };
    let mut i = start;
    while i < end {
        match find(&text[..end], term, i).filter(|&m| m == i) {
            Some(m) => {
                if !plain.is_empty() {
                    parts.push((false, std::mem::take(&mut plain)));
                }
                parts.push((true, text[m..m + term.len()].iter().collect()));
                i = m + term.len();
            }
            None => {
                plain.push(text[i]);
                i += 1;
            }
        }
    }
    if end < text.len() {
        plain.push('…');
    }
    if !plain.is_empty() {
        parts.push((false, plain));
    }
    parts
}

impl Matched {
    /// The first value of `entry` that holds `term`, if one does (within what is scanned).
    pub fn find(entry: &StoredEntry, term: &str) -> Option<Matched> {
        let term: Vec<char> = term.chars().collect();
        let sides = [("after", entry.after()), ("before", entry.before())];
        for (side, image) in sides {
            for (column, raw) in Members::parse(image).0 {
                let Some(text) = value_text(raw.get()) else {
                    continue;
                };
                let chars: Vec<char> = text.chars().take(SCANNED).collect();
                if let Some(first) = find(&chars, &term, 0) {
                    return Some(Matched {
                        column,
                        side,
                        parts: snippet(&chars, &term, first),
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(before: Option<&str>, after: Option<&str>) -> StoredEntry {
        StoredEntry {
            id: 1,
            committed_at: chrono::Utc::now(),
            xid: None,
            lsn: None,
            schema: "public".into(),
            table: "t".into(),
            action: "UPDATE".into(),
            source: "shop".into(),
            json: [
                None,
                before.map(str::to_owned),
                after.map(str::to_owned),
                None,
                None,
                None,
            ],
        }
    }

    fn parts(m: &Matched) -> Vec<(bool, &str)> {
        m.parts.iter().map(|(b, t)| (*b, t.as_str())).collect()
    }

    #[test]
    fn the_first_value_holding_the_term_is_marked() {
        let e = entry(
            Some(r#"{"id":1,"note":"Deliver to Berlin"}"#),
            Some(r#"{"id":1,"note":"Deliver to BERLIN, then berlin again","n":5}"#),
        );
        let m = Matched::find(&e, "berlin").unwrap();
        assert_eq!((m.column.as_str(), m.side), ("note", "after"));
        assert_eq!(
            parts(&m),
            vec![
                (false, "Deliver to "),
                (true, "BERLIN"),
                (false, ", then "),
                (true, "berlin"),
                (false, " again")
            ]
        );
        // Only the old image holds it: a delete, or a value changed away.
        let gone = entry(
            Some(r#"{"id":1,"note":"<script>x</script>"}"#),
            Some(r#"{"id":1}"#),
        );
        let m = Matched::find(&gone, "SCRIPT").unwrap();
        assert_eq!((m.column.as_str(), m.side), ("note", "before"));
        assert_eq!(parts(&m)[1], (true, "script"));
        // Numbers and nested JSON are searched as written; null and column names are not.
        assert_eq!(Matched::find(&e, "5").unwrap().column, "n");
        assert_eq!(Matched::find(&e, "note"), None);
        assert_eq!(
            Matched::find(&entry(None, Some(r#"{"a":null}"#)), "null"),
            None
        );
    }

    #[test]
    fn long_values_are_cut_around_the_match() {
        let long = format!(r#"{{"v":"{}needle{}"}}"#, "a".repeat(100), "b".repeat(100));
        let m = Matched::find(&entry(None, Some(&long)), "NEEDLE").unwrap();
        let p = parts(&m);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].1, format!("…{}", "a".repeat(BEFORE)));
        assert_eq!(p[1], (true, "needle"));
        assert_eq!(p[2].1, format!("{}…", "b".repeat(AFTER)));
    }
}
