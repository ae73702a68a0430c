//! Why a row matched a free-text search ([`Matched`]): the first value that
//! holds the term (the row after, then before, in column order), cut to a
//! snippet around it and split into plain and matching parts. The template
//! escapes every part as text and wraps the matching ones in `<mark>`, so
//! the highlight is escaped first and marked second: a stored `<script>`
//! shows as text, never as HTML.
//!
//! The match is case-insensitive, character by character, as the search's
//! `ILIKE` is; a value is looked at up to [`SCANNED`] characters, folded to
//! lowercase once and searched in linear time, so a huge value costs the
//! page little (a match beyond shows no snippet).

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

/// A character as the comparison sees it: its lowercase where that is one
/// character. A character whose lowercase is several (`İ`) is kept: only
/// itself has that lowercase, so comparing it as itself is the same test.
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// A value's text folded once, so that finding the term in it is one
/// linear substring search (`str::find`), not a comparison at every start.
struct Folded {
    /// The folded characters, one per character of the value.
    chars: Vec<char>,
    /// The same as a string, and where each character starts in it.
    text: String,
    starts: Vec<usize>,
}

impl Folded {
    fn new(chars: &[char]) -> Folded {
        let chars: Vec<char> = chars.iter().copied().map(fold).collect();
        let mut text = String::with_capacity(chars.len());
        let mut starts = Vec::with_capacity(chars.len());
        for &c in &chars {
            starts.push(text.len());
            text.push(c);
        }
        Folded {
            chars,
            text,
            starts,
        }
    }

    /// Where `term` (folded) first starts at or after character `from`.
    fn find(&self, term: &Folded, from: usize) -> Option<usize> {
        if term.chars.is_empty() || from >= self.chars.len() {
            return None;
        }
        let at = self.starts[from];
        let byte = at + self.text[at..].find(&term.text)?;
        self.starts.binary_search(&byte).ok()
    }

    /// Whether `term` starts at character `i`.
    fn starts_with_at(&self, term: &Folded, i: usize) -> bool {
        self.chars[i..].starts_with(&term.chars)
    }
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
fn snippet(text: &[char], folded: &Folded, term: &Folded, first: usize) -> Vec<(bool, String)> {
    let len = term.chars.len();
    let start = first.saturating_sub(BEFORE);
    let end = (first + len + AFTER).min(text.len());
    let mut parts = Vec::new();
    let mut plain: String = if start > 0 {
        "…".into()
    } else {
        String::new()
    };
    let mut i = start;
    while i < end {
        if i + len <= end && folded.starts_with_at(term, i) {
            if !plain.is_empty() {
                parts.push((false, std::mem::take(&mut plain)));
            }
            parts.push((true, text[i..i + len].iter().collect()));
            i += len;
        } else {
            plain.push(text[i]);
            i += 1;
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
        let term = Folded::new(&term.chars().collect::<Vec<char>>());
        let sides = [("after", entry.after()), ("before", entry.before())];
        for (side, image) in sides {
            for (column, raw) in Members::parse(image).0 {
                let Some(text) = value_text(raw.get()) else {
                    continue;
                };
                let chars: Vec<char> = text.chars().take(SCANNED).collect();
                let folded = Folded::new(&chars);
                if let Some(first) = folded.find(&term, 0) {
                    return Some(Matched {
                        column,
                        side,
                        parts: snippet(&chars, &folded, &term, first),
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
    fn folding_keeps_character_positions() {
        // `İ` lowercases to two characters; it is compared as itself, and the
        // snippet's positions still line up with the value's characters.
        let e = entry(None, Some(r#"{"v":"İstanbul ÄRGER ärger"}"#));
        let m = Matched::find(&e, "ärger").unwrap();
        assert_eq!(
            parts(&m),
            vec![
                (false, "İstanbul "),
                (true, "ÄRGER"),
                (false, " "),
                (true, "ärger")
            ]
        );
        assert_eq!(parts(&Matched::find(&e, "İst").unwrap())[0], (true, "İst"));
        // A value of the scanned size made of near-misses is searched in linear time.
        let near = format!(r#"{{"v":"{}b"}}"#, "a".repeat(SCANNED - 1));
        let term = format!("{}c", "a".repeat(500));
        assert_eq!(Matched::find(&entry(None, Some(&near)), &term), None);
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
