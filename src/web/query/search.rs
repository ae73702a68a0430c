//! The log's search box: one line of `key:value` terms and free text, such as
//! `table:public.orders actor:alice action:DELETE ip:10.0.0.0/8 after:2026-11-01 "lost parcel"`,
//! read into the very parameters the filter form sends ([`expand`]: the
//! `search` parameter becomes `table=…&actor=…&…`), and a filter written back
//! as such a line ([`render`]), so that the box always shows the view's
//! filters and the two never disagree.
//!
//! The keys are the parameters' own names ([`KEYS`]), plus `after:` and
//! `before:` (a start and an end time, `before:` a date meaning that day's
//! start) and `is:event` (`action:EVENT`). Every word that is not a term is
//! free text (`q`): the words, joined by one space, are one phrase. A value
//! with spaces is double-quoted, with `\"` and `\\` inside.
//!
//! A mistake is refused with where it is (the character, counted from 1) and
//! what would be valid, never read as something else: an unknown key
//! (`actr:alice`) is an error, not free text, so a typo cannot silently
//! change what the view shows; text with a colon is searched for quoted.

use chrono::NaiveDate;

use crate::text::clip;
use crate::web::error::WebError;

/// The box's keys and the parameter each sets (`is` sets `action`).
pub const KEYS: [(&str, &str); 16] = [
    ("action", "action"),
    ("table", "table"),
    ("actor", "actor"),
    ("role", "role"),
    ("ip", "ip"),
    ("app", "app"),
    ("source", "source"),
    ("db", "db"),
    ("pk", "pk"),
    ("after", "from"),
    ("before", "to"),
    ("from", "from"),
    ("to", "to"),
    ("last", "last"),
    ("events", "events"),
    ("is", "action"),
];

/// A mistake in the line: where it starts, the text there, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {at} ({token:?}): {problem}")]
pub struct SearchError {
    /// Character position in the line, counted from 1.
    pub at: usize,
    pub token: String,
    pub problem: String,
}

/// One piece of the line: a term, or a word (or quoted phrase) of free text.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Term { key: String, value: String },
    Text(String),
}

/// A piece with where it starts (counted from 1) and how it was written.
#[derive(Debug)]
struct Token {
    at: usize,
    written: String,
    piece: Piece,
}

impl Token {
    fn error(&self, problem: impl Into<String>) -> SearchError {
        SearchError {
            at: self.at,
            token: clip(&self.written),
            problem: problem.into(),
        }
    }
}

/// The end (exclusive) of a double-quoted string opening at `open`, and its
/// text with the escapes undone.
fn quoted(chars: &[char], open: usize) -> Result<(String, usize), SearchError> {
    let mut text = String::new();
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                text.push(chars[i + 1]);
                i += 2;
            }
            '"' => return Ok((text, i + 1)),
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(SearchError {
        at: open + 1,
        token: clip(&chars[open..].iter().collect::<String>()),
        problem: "this quote is not closed; end the quoted text with \"".into(),
    })
}

/// The end (exclusive) of the run of non-space characters from `from`.
fn run_end(chars: &[char], from: usize) -> usize {
    (from..chars.len())
        .find(|&j| chars[j].is_whitespace())
        .unwrap_or(chars.len())
}

/// The line cut into terms and free text.
fn tokens(line: &str) -> Result<Vec<Token>, SearchError> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let key_end = (i..chars.len())
            .find(|&j| !chars[j].is_ascii_alphabetic())
            .unwrap_or(chars.len());
        let piece = if chars[i] == '"' {
            let (text, end) = quoted(&chars, i)?;
            i = end;
            Piece::Text(text)
        } else if key_end > i && chars.get(key_end) == Some(&':') {
            let key = chars[i..key_end].iter().collect();
            let from = key_end + 1;
            let value = if chars.get(from) == Some(&'"') {
                let (text, end) = quoted(&chars, from)?;
                i = end;
                text
            } else {
                i = run_end(&chars, from);
                chars[from..i].iter().collect()
            };
            Piece::Term { key, value }
        } else {
            i = run_end(&chars, i);
            Piece::Text(chars[start..i].iter().collect())
        };
        if i < chars.len() && !chars[i].is_whitespace() {
            return Err(SearchError {
                at: i + 1,
                token: clip(&chars[start..run_end(&chars, i)].iter().collect::<String>()),
                problem: format!(
                    "{:?} follows the closing quote; leave a space between terms",
                    chars[i]
                ),
            });
        }
        out.push(Token {
            at: start + 1,
            written: chars[start..i].iter().collect(),
            piece,
        });
    }
    Ok(out)
}

fn key_list() -> String {
    let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    keys.join(", ")
}

/// The parameter and value a term stands for.
fn term_param(t: &Token, key: &str, value: &str) -> Result<(&'static str, String), SearchError> {
    let lower = key.to_ascii_lowercase();
    let Some(&(key, param)) = KEYS.iter().find(|(k, _)| *k == lower) else {
        return Err(t.error(format!(
            "unknown key {key:?}; the keys are {}. To search for text with a colon, quote it: \"{}\"",
            key_list(),
            t.written.replace('"', "")
        )));
    };
    if value.is_empty() {
        return Err(t.error(format!(
            "{key}: has no value; write {key}:VALUE, quoting a value with spaces"
        )));
    }
    let value = match key {
        "is" if matches!(value.to_ascii_lowercase().as_str(), "event" | "events") => {
            "EVENT".to_owned()
        }
        "is" => {
            return Err(
                t.error("is: takes only event (is:event: pgtrail's own events, as action:EVENT)")
            )
        }
        // `before:` a date is before that day begins (`to=` a date means its end).
        "before" if NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() => {
            format!("{value}T00:00:00")
        }
        _ => value.to_owned(),
    };
    Ok((param, value))
}

/// What the log's parser says of one parameter alone: why it refuses it, if it does.
pub type Check<'a> = &'a dyn Fn(&str, &str) -> Result<(), String>;

/// Refuses what the parameter alone refuses, with the term's position.
fn check(t: &Token, param: &str, value: &str, alone: Check) -> Result<(), SearchError> {
    if value.contains('\0') {
        return Err(t.error("a NUL character, which no stored value can hold"));
    }
    alone(param, value).map_err(|m| t.error(m))
}

/// The parameters a search line stands for, in the order written (free
/// text, as `q`, last); each checked by `alone`.
pub fn parameters(line: &str, alone: Check) -> Result<Vec<(String, String)>, SearchError> {
    let tokens = tokens(line)?;
    let mut out: Vec<(String, String)> = Vec::new();
    // Where each single-valued parameter was set, to point at a second one.
    let mut set_at: Vec<(&str, usize)> = Vec::new();
    let mut text: Vec<&str> = Vec::new();
    let mut text_token = None;
    for t in &tokens {
        let (param, value) = match &t.piece {
            Piece::Text(words) => {
                text.push(words);
                text_token.get_or_insert(t);
                continue;
            }
            Piece::Term { key, value } if key.eq_ignore_ascii_case("q") => {
                text.push(value);
                text_token.get_or_insert(t);
                continue;
            }
            Piece::Term { key, value } => term_param(t, key, value)?,
        };
        if !matches!(param, "action" | "table" | "db") {
            if let Some((_, first)) = set_at.iter().find(|(p, _)| *p == param) {
                return Err(t.error(format!(
                    "this sets the same filter ({param}) as the term at character {first}; give it once"
                )));
            }
            set_at.push((param, t.at));
        }
        check(t, param, &value, alone)?;
        out.push((param.to_owned(), value));
    }
    if let Some(t) = text_token {
        let q = text.join(" ");
        check(t, "q", &q, alone)?;
        out.push(("q".to_owned(), q));
    }
    Ok(out)
}

/// `pairs` with the `search` parameter, if there is one, replaced by the
/// parameters its line stands for (each checked by `alone`, so that a
/// mistake is refused with its position); `None` if there is none.
pub fn expand(
    pairs: &[(String, String)],
    alone: Check,
) -> Result<Option<Vec<(String, String)>>, WebError> {
    if !pairs.iter().any(|(n, _)| n == "search") {
        return Ok(None);
    }
    if pairs.iter().filter(|(n, _)| n == "search").count() > 1 {
        return Err(WebError::bad(
            "search is given more than once; give it once",
        ));
    }
    let mut out = Vec::with_capacity(pairs.len() + 4);
    for (name, value) in pairs {
        if name == "search" {
            let terms =
                parameters(value, alone).map_err(|e| WebError::bad(format!("search: {e}")))?;
            out.extend(terms);
        } else {
            out.push((name.clone(), value.clone()));
        }
    }
    Ok(Some(out))
}

/// `value`, double-quoted if it must be to read back as one value.
fn quote_if_needed(value: &str, text: bool) -> String {
    // Free text that reads as a term must be quoted to stay text.
    let needs_quotes = value.is_empty()
        || value.starts_with('"')
        || value.chars().any(char::is_whitespace)
        || (text && looks_like_term(value));
    if !needs_quotes {
        return value.to_owned();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn looks_like_term(word: &str) -> bool {
    let key_len = word.bytes().take_while(u8::is_ascii_alphabetic).count();
    key_len > 0 && word.as_bytes().get(key_len) == Some(&b':')
}

/// A filter's parameters (`Filter::to_pairs`) as a line for the box: what
/// [`expand`] reads back into the same filter (`to=` a bare date, which
/// means the end of that day, as the instant after it).
pub fn render(pairs: &[(&str, String)]) -> String {
    let mut terms = Vec::new();
    let mut text = None;
    for (param, value) in pairs {
        let (key, value) = match *param {
            "q" => {
                text = Some(quote_if_needed(value, true));
                continue;
            }
            "from" => ("after", value.clone()),
            "to" => match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
                Ok(day) => (
                    "before",
                    day.succ_opt()
                        .unwrap_or(day)
                        .format("%Y-%m-%dT00:00:00")
                        .to_string(),
                ),
                Err(_) => ("before", value.clone()),
            },
            other => (other, value.clone()),
        };
        terms.push(format!("{key}:{}", quote_if_needed(&value, false)));
    }
    terms.extend(text);
    terms.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::query::params::{pairs, Filter, LogQuery};
    use chrono::Utc;

    /// The log's parser on one parameter alone, as `LogQuery::from_pairs` checks terms.
    fn alone(name: &str, value: &str) -> Result<(), String> {
        match LogQuery::from_pairs(&[(name.to_owned(), value.to_owned())], false, Utc::now()) {
            Err(WebError::BadRequest(m)) => Err(m),
            _ => Ok(()),
        }
    }

    fn params(line: &str) -> Vec<(String, String)> {
        parameters(line, &alone).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn one(line: &str) -> (String, String) {
        let mut p = params(line);
        assert_eq!(p.len(), 1, "{line}: {p:?}");
        p.remove(0)
    }

    fn error(line: &str) -> SearchError {
        match parameters(line, &alone) {
            Err(e) => e,
            Ok(p) => panic!("{line}: expected an error, got {p:?}"),
        }
    }

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn every_key_sets_its_parameter() {
        let cases = [
            ("action:DELETE", pair("action", "DELETE")),
            ("action:insert,update", pair("action", "insert,update")),
            ("table:public.orders", pair("table", "public.orders")),
            ("actor:alice", pair("actor", "alice")),
            ("role:app_rw", pair("role", "app_rw")),
            ("ip:10.0.0.0/8", pair("ip", "10.0.0.0/8")),
            ("app:shop", pair("app", "shop")),
            ("source:web", pair("source", "web")),
            ("db:shop-eu", pair("db", "shop-eu")),
            ("pk:5", pair("pk", "5")),
            ("after:2026-11-01", pair("from", "2026-11-01")),
            ("from:2026-11-01T10:00", pair("from", "2026-11-01T10:00")),
            // before: a date is before that day; to: a date includes it, as the parameter does.
            ("before:2026-11-02", pair("to", "2026-11-02T00:00:00")),
            ("before:2026-11-02T10:30", pair("to", "2026-11-02T10:30")),
            ("to:2026-11-02", pair("to", "2026-11-02")),
            ("last:24h", pair("last", "24h")),
            ("events:shown", pair("events", "shown")),
            ("is:event", pair("action", "EVENT")),
            ("q:berlin", pair("q", "berlin")),
            ("Actor:alice", pair("actor", "alice")),
        ];
        for (line, want) in &cases {
            assert_eq!(&one(line), want, "{line}");
        }
        // Every key is covered above.
        for (key, _) in KEYS {
            assert!(
                cases.iter().any(|(l, _)| l.starts_with(&format!("{key}:"))),
                "{key}"
            );
        }
    }

    #[test]
    fn quoting_and_free_text() {
        assert_eq!(one("actor:\"Ada Lovelace\""), pair("actor", "Ada Lovelace"));
        assert_eq!(one(r#"pk:"{\"id\": 5}""#), pair("pk", r#"{"id": 5}"#));
        assert_eq!(
            one(r#"pk:{"id":5}"#),
            pair("pk", r#"{"id":5}"#),
            "quotes inside a bare value"
        );
        assert_eq!(one(r#"q:"a \\ b""#), pair("q", r"a \ b"));
        assert_eq!(
            params(r#"lost "in  transit" table:public.orders parcel"#),
            vec![
                pair("table", "public.orders"),
                pair("q", "lost in  transit parcel")
            ]
        );
        // Words with a colon after something other than letters are text.
        assert_eq!(one("10:30"), pair("q", "10:30"));
        assert_eq!(one(r#""actor:alice""#), pair("q", "actor:alice"));
        assert!(params("  \t ").is_empty(), "only spaces: nothing");
        assert!(params("").is_empty());
        assert_eq!(
            params("table:a.b table:c.d action:INSERT action:UPDATE").len(),
            4,
            "table and action repeat"
        );
    }

    #[test]
    fn mistakes_point_at_their_term() {
        let e = error("table:public.orders actr:alice");
        assert_eq!((e.at, e.token.as_str()), (21, "actr:alice"));
        assert!(
            e.problem.contains("unknown key \"actr\"") && e.problem.contains("action, table"),
            "{e}"
        );
        assert!(
            e.problem.contains("\"actr:alice\""),
            "says how to search for the text: {e}"
        );
        let e = error("actor: x");
        assert_eq!(e.at, 1);
        assert!(e.problem.contains("no value"), "{e}");
        let e = error("table:t.x \"lost parcel");
        assert_eq!(e.at, 11);
        assert!(e.problem.contains("not closed"), "{e}");
        let e = error("actor:\"a\"b");
        assert_eq!(e.at, 10);
        assert!(e.problem.contains("leave a space"), "{e}");
        let e = error("actor:a role:r actor:b");
        assert_eq!((e.at, e.token.as_str()), (16, "actor:b"));
        assert!(e.problem.contains("character 1"), "{e}");
        let e = error("after:2026-01-01 from:2026-02-01");
        assert_eq!(e.at, 18);
        let e = error("x ip:example.com");
        assert_eq!((e.at, e.token.as_str()), (3, "ip:example.com"));
        assert!(e.problem.contains("not an IP address"), "{e}");
        for (line, at, says) in [
            ("action:UPSERT", 1, "UPSERT"),
            ("is:open", 1, "is:event"),
            ("events:all", 1, "shown or hidden"),
            ("last:3w", 1, "last"),
            ("table:nodot", 1, "table"),
            ("after:yesterday", 1, "from"),
            ("pk:{broken", 1, "pk"),
            ("é actor:a\u{0}", 3, "NUL"),
        ] {
            let e = error(line);
            assert_eq!(e.at, at, "{line}: {e}");
            assert!(e.problem.contains(says), "{line}: {e}");
        }
    }

    fn expanded(raw: &str) -> Result<LogQuery, WebError> {
        LogQuery::from_pairs(&pairs(Some(raw)).unwrap(), true, Utc::now())
    }

    #[test]
    fn the_parameter_expands_among_the_others() {
        let q = expanded("search=actor%3Aalice+berlin&sort=actor&dir=asc").unwrap();
        assert_eq!(q.filter.actor.as_deref(), Some("alice"));
        assert_eq!(q.filter.q.as_deref(), Some("berlin"));
        assert_eq!(q.sort.key.as_str(), "actor");
        assert!(expanded("search=").unwrap().filter.is_empty());
        let bad = |raw: &str| match expanded(raw) {
            Err(WebError::BadRequest(m)) => m,
            other => panic!("{raw}: {other:?}"),
        };
        assert!(bad("search=a&search=b").contains("more than once"));
        assert!(bad("search=actor%3Aa&actor=b").contains("more than once"));
        assert!(bad("search=last%3A1h+after%3A2024-01-01").contains("either"));
        assert!(bad("search=actr%3Ax").starts_with("search: at character 1"));
    }

    #[test]
    fn a_filter_reads_back_from_its_line() {
        for raw in [
            "",
            "action=DELETE&action=INSERT&table=public.orders&table=%22a.b%22.c",
            "actor=Ada+Lovelace&role=r&ip=10.0.0.0%2F8&app=a&source=s&pk=%7B%22id%22%3A+5%7D",
            "from=2026-11-01&to=2026-11-03",
            "from=2026-11-01T10%3A00%3A00&to=2026-11-03T00%3A00%3A00%2B02%3A00",
            "last=7d&events=shown&q=lost+%22parcel%22+%5C+x",
            "q=actor%3Aalice",
            "q=%22quoted",
            "action=EVENT",
            "db=shop-eu&db=shop-us&table=public.orders",
        ] {
            let q = expanded(raw).unwrap();
            let line = render(&q.filter.to_pairs());
            let again = expanded(&format!(
                "search={}",
                form_urlencoded::byte_serialize(line.as_bytes()).collect::<String>()
            ))
            .unwrap_or_else(|e| panic!("{raw} -> {line}: {e:?}"));
            let times = |f: &Filter| {
                (
                    f.since(Utc::now()).map(|t| t.timestamp() / 60),
                    f.to.as_ref().map(|t| t.1),
                )
            };
            assert_eq!(times(&again.filter), times(&q.filter), "{raw} -> {line}");
            let mut a = again.filter.to_pairs();
            let mut b = q.filter.to_pairs();
            // A date alone as `to` comes back as the instant it means.
            a.retain(|(n, _)| *n != "to");
            b.retain(|(n, _)| *n != "to");
            assert_eq!(a, b, "{raw} -> {line}");
        }
        let q = expanded("to=2026-11-03&q=two+words").unwrap();
        assert_eq!(
            render(&q.filter.to_pairs()),
            "before:2026-11-04T00:00:00 \"two words\""
        );
    }
}
