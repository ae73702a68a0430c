//! The structural diff of two JSON documents (a json or jsonb column's
//! before and after): what was added, removed or changed, by key path
//! (`profile.tags[2]` added, `profile.tier` changed).
//!
//! Paths start with the column's name; a key that is a plain identifier
//! (`[A-Za-z_][A-Za-z0-9_]*`) follows a `.` as it is, any other key (dots,
//! brackets, quotes, spaces, digits only, empty) follows it as a JSON
//! string (`profile."a.b"`, `profile."2"`), so a path reads one way only;
//! `[n]` is an array index. A removed element's index is its place before,
//! an added or changed one's its place after. Arrays are aligned on equal
//! elements first, so an element put in front shows as one added, not as
//! every later element changed.
//!
//! A hostile document cannot make the page slow: see [`Bounds`]. Beyond
//! them the list says where it stopped, and the text diff below it still
//! shows the documents.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::Value;

/// What the comparison does at most; past a bound it stops, or compares a
/// subtree as a whole, and says so.
pub struct Bounds;

impl Bounds {
    /// Each document, as stored text; larger ones are compared as text only.
    pub const BYTES: usize = 2 * 1024 * 1024;
    /// Nesting compared key by key; deeper subtrees are compared whole (one
    /// "changed" at that depth). serde_json reads at most 128 levels at all.
    pub const DEPTH: usize = 32;
    /// Values visited, in both documents together.
    pub const VALUES: usize = 100_000;
    /// Wall time for the comparison.
    pub const TIME: Duration = Duration::from_millis(100);
    /// Differences listed; the rest are counted.
    pub const LISTED: usize = 200;
    /// Characters of a value shown in the list.
    pub const SHOWN: usize = 200;
    /// Elements of two arrays together that are aligned on equal elements;
    /// longer arrays are compared index by index.
    pub const ALIGNED: usize = 10_000;
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEdit {
    pub path: String,
    /// `added`, `removed` or `changed`: the CSS class.
    pub kind: &'static str,
    /// The value before, compact JSON, clipped to [`Bounds::SHOWN`].
    pub before: Option<String>,
    pub after: Option<String>,
    /// `string → number` where the JSON type changed.
    pub types: Option<String>,
}

/// The differences between two documents.
#[derive(Debug, Clone)]
pub struct PathDiff {
    /// The first [`Bounds::LISTED`] differences, in document order (keys sorted).
    pub edits: Vec<PathEdit>,
    /// The differences found, listed or not.
    pub found: usize,
    /// Why the comparison did not finish, if it did not.
    pub stopped: Option<String>,
}

impl PathDiff {
    /// A sentence under the list: what it leaves out, or empty.
    pub fn note(&self) -> String {
        let unlisted = self.found - self.edits.len();
        let mut note = String::new();
        if unlisted > 0 {
            let _ = write!(
                note,
                "{unlisted} more difference{} not listed (the first {} are). ",
                if unlisted == 1 { " is" } else { "s are" },
                Bounds::LISTED
            );
        }
        if let Some(why) = &self.stopped {
            let _ = write!(note, "{why} See the text diff below.");
        }
        note.trim_end().to_owned()
    }
}

/// The structural diff of `before` and `after`, values of `column`, when at
/// least one is a JSON object or array; `None` for anything else, which the
/// line diff compares.
pub fn path_diff(column: &str, before: &RawValue, after: &RawValue) -> Option<PathDiff> {
    path_diff_until(column, before, after, Instant::now() + Bounds::TIME)
}

/// [`path_diff`] that stops at `until` if that comes before its own bound
/// of [`Bounds::TIME`]: a page of many documents shares one budget.
pub fn path_diff_until(
    column: &str,
    before: &RawValue,
    after: &RawValue,
    until: Instant,
) -> Option<PathDiff> {
    let is_doc = |r: &RawValue| matches!(r.get().as_bytes().first(), Some(b'{' | b'['));
    if !is_doc(before) && !is_doc(after) {
        return None;
    }
    let stopped = |why: String| PathDiff {
        edits: Vec::new(),
        found: 0,
        stopped: Some(why),
    };
    if before.get().len().max(after.get().len()) > Bounds::BYTES {
        return Some(stopped(format!(
            "The documents are not compared by key path: one is larger than {} MiB.",
            Bounds::BYTES / (1024 * 1024)
        )));
    }
    let parse = |r: &RawValue| serde_json::from_str::<Value>(r.get());
    let (b, a) = match (parse(before), parse(after)) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => {
            return Some(stopped(format!(
                "The documents are not compared by key path: {}.",
                if e.to_string().contains("recursion limit") {
                    "one nests deeper than 128 levels".to_owned()
                } else {
                    format!("one is not readable as JSON ({e})")
                }
            )))
        }
    };
    let mut walk = Walk {
        edits: Vec::new(),
        found: 0,
        visited: 0,
        deadline: until.min(Instant::now() + Bounds::TIME),
        stopped: None,
    };
    let mut path = String::new();
    push_name(&mut path, column);
    walk.compare(&mut path, &b, &a, 0);
    Some(PathDiff {
        edits: walk.edits,
        found: walk.found,
        stopped: walk.stopped,
    })
}

/// The comparison's progress.
struct Walk {
    edits: Vec<PathEdit>,
    found: usize,
    visited: usize,
    deadline: Instant,
    stopped: Option<String>,
}

impl Walk {
    /// Whether to go on; counts a visit, and checks the clock now and then.
    fn go_on(&mut self) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        self.visited += 1;
        if self.visited > Bounds::VALUES {
            self.stopped = Some(format!(
                "The comparison stopped after {} values: the differences after that point are not listed.",
                Bounds::VALUES
            ));
        } else if self.visited.is_multiple_of(512) && Instant::now() > self.deadline {
            self.stopped = Some(format!(
                "The comparison stopped after {} ms: the differences after that point are not listed.",
                Bounds::TIME.as_millis()
            ));
        }
        self.stopped.is_none()
    }

    fn edit(&mut self, path: &str, before: Option<&Value>, after: Option<&Value>) {
        self.found += 1;
        if self.edits.len() >= Bounds::LISTED {
            return;
        }
        let kind = match (before, after) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        let types = match (before, after) {
            (Some(b), Some(a)) if type_name(b) != type_name(a) => {
                Some(format!("{} → {}", type_name(b), type_name(a)))
            }
            _ => None,
        };
        self.edits.push(PathEdit {
            path: path.to_owned(),
            kind,
            before: before.map(shown),
            after: after.map(shown),
            types,
        });
    }

    fn compare(&mut self, path: &mut String, b: &Value, a: &Value, depth: usize) {
        if !self.go_on() {
            return;
        }
        match (b, a) {
            (Value::Object(bm), Value::Object(am)) if depth < Bounds::DEPTH => {
                // Both maps are sorted by key: walk them together.
                let (mut bi, mut ai) = (bm.iter().peekable(), am.iter().peekable());
                loop {
                    let len = path.len();
                    match (bi.peek(), ai.peek()) {
                        (None, None) => break,
                        (Some((bk, bv)), Some((ak, av))) if bk == ak => {
                            push_key(path, bk);
                            self.compare(path, bv, av, depth + 1);
                            bi.next();
                            ai.next();
                        }
                        (Some((bk, bv)), Some((ak, _))) if bk < ak => {
                            push_key(path, bk);
                            self.edit(path, Some(bv), None);
                            bi.next();
                        }
                        (Some((bk, bv)), None) => {
                            push_key(path, bk);
                            self.edit(path, Some(bv), None);
                            bi.next();
                        }
                        (_, Some((ak, av))) => {
                            push_key(path, ak);
                            self.edit(path, None, Some(av));
                            ai.next();
                        }
                    }
                    path.truncate(len);
                    if self.stopped.is_some() {
                        return;
                    }
                }
            }
            (Value::Array(ba), Value::Array(aa)) if depth < Bounds::DEPTH => {
                self.arrays(path, ba, aa, depth)
            }
            _ if b == a => {}
            _ => self.edit(path, Some(b), Some(a)),
        }
    }

    /// Aligns the arrays on equal elements, then compares what lies between
    /// pairwise, the surplus added or removed.
    fn arrays(&mut self, path: &mut String, b: &[Value], a: &[Value], depth: usize) {
        let ops = if b.len() + a.len() <= Bounds::ALIGNED {
            // A hash of each element, not its text: nested arrays would
            // serialise every subtree again at each level that aligns.
            let key = |v: &Value| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                hash_value(v, &mut h);
                h.finish()
            };
            similar::capture_diff_slices_by_key_deadline(
                similar::Algorithm::Myers,
                b,
                a,
                key,
                Some(self.deadline),
            )
        } else {
            // Index by index: pairs as far as both go, then the longer one's tail.
            let common = b.len().min(a.len());
            let mut ops = vec![similar::DiffOp::Replace {
                old_index: 0,
                old_len: common,
                new_index: 0,
                new_len: common,
            }];
            if b.len() > common {
                ops.push(similar::DiffOp::Delete {
                    old_index: common,
                    old_len: b.len() - common,
                    new_index: common,
                });
            } else if a.len() > common {
                ops.push(similar::DiffOp::Insert {
                    old_index: common,
                    new_index: common,
                    new_len: a.len() - common,
                });
            }
            ops
        };
        for op in ops {
            let (old_index, old_len, new_index, new_len) = match op {
                similar::DiffOp::Equal {
                    old_index,
                    new_index,
                    len,
                } => {
                    // Equal hashes; a collision is compared as a change.
                    if b[old_index..old_index + len] == a[new_index..new_index + len] {
                        continue;
                    }
                    (old_index, len, new_index, len)
                }
                similar::DiffOp::Delete {
                    old_index,
                    old_len,
                    new_index,
                } => (old_index, old_len, new_index, 0),
                similar::DiffOp::Insert {
                    old_index,
                    new_index,
                    new_len,
                } => (old_index, 0, new_index, new_len),
                similar::DiffOp::Replace {
                    old_index,
                    old_len,
                    new_index,
                    new_len,
                } => (old_index, old_len, new_index, new_len),
            };
            let len = path.len();
            for i in 0..old_len.max(new_len) {
                if self.stopped.is_some() {
                    return;
                }
                match (b.get(old_index + i), a.get(new_index + i)) {
                    (Some(bv), Some(av)) if i < old_len && i < new_len => {
                        let _ = write!(path, "[{}]", new_index + i);
                        self.compare(path, bv, av, depth + 1);
                    }
                    (Some(bv), _) if i < old_len => {
                        let _ = write!(path, "[{}]", old_index + i);
                        self.edit(path, Some(bv), None);
                    }
                    (_, Some(av)) => {
                        let _ = write!(path, "[{}]", new_index + i);
                        self.edit(path, None, Some(av));
                    }
                    _ => {}
                }
                path.truncate(len);
            }
        }
    }
}

/// Feeds `v`'s structure to `h` without writing it out as text, numbers by
/// their value as f64. Equal hashes only pair elements up for the alignment:
/// a collision is caught by the caller's comparison, and equal objects
/// hashed apart (keys in another order) are still compared member by member.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        Value::Number(n) => {
            h.write_u8(2);
            h.write_u64(n.as_f64().map_or(0, f64::to_bits));
        }
        Value::String(s) => {
            h.write_u8(3);
            s.hash(h);
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            items.iter().for_each(|i| hash_value(i, h));
        }
        Value::Object(members) => {
            h.write_u8(5);
            h.write_usize(members.len());
            for (k, v) in members {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

/// Whether `key` can stand bare after a dot.
fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The path's first segment: the column, quoted as a key would be.
fn push_name(path: &mut String, name: &str) {
    if is_identifier(name) {
        path.push_str(name);
    } else {
        crate::text::push_json_string(path, name);
    }
}

fn push_key(path: &mut String, key: &str) {
    path.push('.');
    push_name(path, key);
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the list shows it: compact JSON, clipped.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > Bounds::SHOWN {
        let mut clipped: String = text.chars().take(Bounds::SHOWN).collect();
        clipped.push('…');
        clipped
    } else {
        text
    }
}

#[cfg(test)]
mod tests;
