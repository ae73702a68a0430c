//! The line diff of two long values, changed words marked (the `similar`
//! crate). JSON documents are compared pretty-printed, by value: the comma
//! that separates a member from the next is not part of the comparison, so
//! appending to an array does not show its old last element as removed and
//! added (`"early"` → `"early",`).

use serde_json::value::RawValue;
use similar::{ChangeTag, TextDiff};

use super::columns::ValueView;

/// One line of an inline diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    /// `del`, `ins`, `eq`, or `gap` (unchanged lines left out).
    pub tag: &'static str,
    pub old_no: Option<usize>,
    pub new_no: Option<usize>,
    /// Pieces of the line; `true` marks the words that changed.
    pub parts: Vec<(bool, String)>,
}

/// Whether a changed value deserves an inline diff: long text, text over
/// several lines, or a JSON document.
pub fn wants_text_diff(before: &RawValue, after: &RawValue) -> bool {
    let (b, a) = (ValueView::of(before), ValueView::of(after));
    let texty = |v: &ValueView| matches!(v.kind, "text" | "json" | "empty");
    texty(&b)
        && texty(&a)
        && (b.kind == "json"
            || a.kind == "json"
            || b.block
            || a.block
            || b.text.len() + a.text.len() > 80)
}

/// The text of a value split in lines for the diff: each line as compared
/// (its separating comma left out for JSON) and the comma it had.
struct Lines {
    compared: String,
    commas: Vec<bool>,
}

impl Lines {
    fn of(view: &ValueView) -> Lines {
        let json = view.kind == "json";
        let mut compared = String::with_capacity(view.text.len() + 1);
        let mut commas = Vec::new();
        for line in view.text.lines() {
            let (text, comma) = match line.strip_suffix(',') {
                Some(t) if json => (t, true),
                _ => (line, false),
            };
            compared.push_str(text);
            // A last line without its newline must still equal the same line with one.
            compared.push('\n');
            commas.push(comma);
        }
        Lines { compared, commas }
    }

    fn comma(&self, index: Option<usize>) -> bool {
        index.and_then(|i| self.commas.get(i).copied()) == Some(true)
    }
}

/// Line diff of two values with the changed words marked, JSON pretty-printed
/// first; unchanged stretches are cut to three lines of context.
pub fn text_diff(before: &RawValue, after: &RawValue) -> Vec<DiffLine> {
    text_diff_within(before, after, TIMEOUT)
}

/// How long the line diff may look for the shortest edit before it settles
/// for a longer one.
const TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// [`text_diff`] with a shorter time to look, when a page has less left.
pub fn text_diff_within(
    before: &RawValue,
    after: &RawValue,
    timeout: std::time::Duration,
) -> Vec<DiffLine> {
    let (old, new) = (
        Lines::of(&ValueView::of(before)),
        Lines::of(&ValueView::of(after)),
    );
    let diff = TextDiff::configure()
        .algorithm(similar::Algorithm::Patience)
        .timeout(timeout.min(TIMEOUT))
        .diff_lines(old.compared.as_str(), new.compared.as_str());
    let mut lines = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            lines.push(DiffLine {
                tag: "gap",
                old_no: None,
                new_no: None,
                parts: Vec::new(),
            });
        }
        for op in group {
            for change in diff.iter_inline_changes(op) {
                let (tag, comma) = match change.tag() {
                    ChangeTag::Delete => ("del", old.comma(change.old_index())),
                    ChangeTag::Insert => ("ins", new.comma(change.new_index())),
                    ChangeTag::Equal => ("eq", new.comma(change.new_index())),
                };
                let mut parts: Vec<(bool, String)> = change
                    .iter_strings_lossy()
                    .map(|(emph, s)| (emph, s.into_owned()))
                    .collect();
                if let Some(last) = parts.last_mut() {
                    if last.1.ends_with('\n') {
                        last.1.pop();
                    }
                }
                if comma {
                    parts.push((false, ",".to_owned()));
                }
                parts.retain(|p| !p.1.is_empty());
                lines.push(DiffLine {
                    tag,
                    old_no: change.old_index().map(|n| n + 1),
                    new_no: change.new_index().map(|n| n + 1),
                    parts,
                });
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    /// Each line as `<tag> <text>`.
    fn rendered(lines: &[DiffLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                let text: String = l.parts.iter().map(|p| p.1.as_str()).collect();
                format!("{} {}", l.tag, text.trim())
            })
            .collect()
    }

    #[test]
    fn json_documents_diff_by_line_with_words_marked() {
        let (b, a) = (
            raw(r#"{"a":1,"b":"old words here","c":[1,2,3]}"#),
            raw(r#"{"a":1,"b":"new words here","c":[1,2,3]}"#),
        );
        assert!(wants_text_diff(&b, &a));
        let lines = text_diff(&b, &a);
        let del = lines.iter().find(|l| l.tag == "del").unwrap();
        assert!(
            del.parts.iter().any(|(emph, s)| *emph && s.contains("old")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.tag == "ins"));
    }

    #[test]
    fn an_element_appended_leaves_the_old_last_one_equal() {
        let lines = text_diff(
            &raw(r#"{"tags":["new","early"],"tier":"gold"}"#),
            &raw(r#"{"tags":["new","early","vip"],"tier":"gold"}"#),
        );
        assert_eq!(
            rendered(&lines),
            [
                // Three lines of context: the opening brace is left out.
                "eq \"tags\": [",
                "eq \"new\",",
                "eq \"early\",",
                "ins \"vip\"",
                "eq ],",
                "eq \"tier\": \"gold\"",
                "eq }"
            ]
        );
        // The other way round, the comma goes with it and nothing else changes.
        let lines = text_diff(
            &raw(r#"{"tags":["new","early","vip"]}"#),
            &raw(r#"{"tags":["new","early"]}"#),
        );
        assert_eq!(
            rendered(&lines)
                .iter()
                .filter(|l| !l.starts_with("eq"))
                .collect::<Vec<_>>(),
            ["del \"vip\""]
        );
    }

    #[test]
    fn commas_in_plain_text_are_text() {
        let lines = text_diff(
            &raw(r#""first line\nsecond line of a longer text""#),
            &raw(r#""first line,\nsecond line of a longer text""#),
        );
        assert_eq!(
            rendered(&lines),
            [
                "del first line",
                "ins first line,",
                "eq second line of a longer text"
            ]
        );
    }
}
