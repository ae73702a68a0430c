//! The layout bars of issue 15, checked on the source tree itself (no database needed): no
//! import circle among the modules of `src/`, neither between files nor between top-level
//! folders, and no file longer than the limits (600 lines in `src/`, 800 in `tests/`).
//!
//! The import graph is read from the text: every `crate::…`, `super::…` and `self::…` path
//! outside comments, string literals and `#[cfg(test)] mod tests` blocks, with `use` groups
//! (`use super::{a, b::{c, self}}`) expanded, is resolved to the longest module path that
//! exists as a file. A module naming its own descendants is not an edge (a folder's `mod.rs`
//! declares and re-exports its children), nor is a path to the crate root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path: `["web", "query"]` for `src/web/query.rs`, `[]` for the crate root.
type ModPath = Vec<String>;

/// Longest a source file in `src/` may be.
const SRC_LIMIT: usize = 600;
/// Longest a file in `tests/` may be.
const TESTS_LIMIT: usize = 800;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module a file under `src/` is: `web/mod.rs` is `web`, `lib.rs` the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Reading paths out of Rust text
// ---------------------------------------------------------------------------------------------

/// The tokens that make up paths; everything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

/// Skips a string literal starting at `chars[i]` (the opening quote, or the `r`/`b` of a raw or
/// byte string); the index after it.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    if chars[i] == 'b' {
        i += 1;
    }
    if chars[i] == 'r' {
        i += 1;
        let mut hashes = 0;
        while chars[i] == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < chars.len() {
            if chars[i] == '"'
                && chars[i + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|c| **c == '#')
                    .count()
                    == hashes
            {
                return i + 1 + hashes;
            }
            i += 1;
        }
        return i;
    }
    i += 1; // the opening quote
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Does a string literal (raw, byte or plain) start at `chars[i]`?
fn string_starts(chars: &[char], i: usize) -> bool {
    let at = |k: usize| chars.get(i + k).copied();
    let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    match chars[i] {
        '"' => true,
        'r' if !prev_ident => {
            at(1) == Some('"') || (at(1) == Some('#') && matches!(at(2), Some('"' | '#')))
        }
        'b' if !prev_ident => {
            at(1) == Some('"') || (at(1) == Some('r') && matches!(at(2), Some('"' | '#')))
        }
        _ => false,
    }
}

/// The tokens of `text`, without comments, string and character literals.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if string_starts(&chars, i) {
            i = skip_string(&chars, i);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), else a lifetime or label.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                c => Token::Other(c),
            });
            i += 1;
        }
    }
    out
}

/// `tokens` without the `#[cfg(test)] mod NAME { … }` blocks.
fn without_test_modules(tokens: Vec<Token>) -> Vec<Token> {
    let ident = |t: Option<&Token>, name: &str| matches!(t, Some(Token::Ident(s)) if s == name);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // # [ cfg ( test ) ] mod NAME {
        let is_cfg_test = tokens[i] == Token::Other('#')
            && tokens.get(i + 1) == Some(&Token::Other('['))
            && ident(tokens.get(i + 2), "cfg")
            && tokens.get(i + 3) == Some(&Token::Other('('))
            && ident(tokens.get(i + 4), "test")
            && tokens.get(i + 5) == Some(&Token::Other(')'))
            && tokens.get(i + 6) == Some(&Token::Other(']'))
            && ident(tokens.get(i + 7), "mod")
            && matches!(tokens.get(i + 8), Some(Token::Ident(_)))
            && tokens.get(i + 9) == Some(&Token::Open);
        if !is_cfg_test {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let mut depth = 0;
        i += 9;
        while i < tokens.len() {
            match tokens[i] {
                Token::Open => depth += 1,
                Token::Close => depth -= 1,
                _ => {}
            }
            i += 1;
            if depth == 0 {
                break;
            }
        }
    }
    out
}

/// Reads a path tree from `tokens[*i]` on (just after a `::`): one segment, a further `::`,
/// or a `{ … }` group of trees; every complete path, appended to `prefix`.
fn path_tree(tokens: &[Token], i: &mut usize, prefix: ModPath, out: &mut Vec<ModPath>) {
    match tokens.get(*i) {
        Some(Token::Open) => {
            *i += 1;
            loop {
                match tokens.get(*i) {
                    None => return,
                    Some(Token::Close) => {
                        *i += 1;
                        return;
                    }
                    Some(Token::Comma) => *i += 1,
                    Some(_) => path_tree(tokens, i, prefix.clone(), out),
                }
            }
        }
        Some(Token::Ident(name)) => {
            *i += 1;
            let mut path = prefix;
            // `self` in a group is the path before it.
            if name != "self" {
                path.push(name.clone());
            }
            if tokens.get(*i) == Some(&Token::PathSep) {
                *i += 1;
                path_tree(tokens, i, path, out);
            } else {
                out.push(path);
            }
        }
        Some(_) => {
            // `*`, or something that is not a path: what was read so far.
            *i += 1;
            out.push(prefix);
        }
        None => out.push(prefix),
    }
}

/// Every module path `text` (the source of module `module`) names, as written and resolved
/// against `module`, before looking up which modules exist. Inline modules (`mod x { … }`) are
/// followed so that their `super` means what it does.
fn named_paths(text: &str, module: &ModPath) -> Vec<ModPath> {
    let tokens = without_test_modules(tokens(text));
    let mut out = Vec::new();
    // The inline modules we are in, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Token::Ident(start) if matches!(start.as_str(), "crate" | "super" | "self") => {
                let after_sep = i > 0 && tokens[i - 1] == Token::PathSep;
                if !after_sep && tokens.get(i + 1) == Some(&Token::PathSep) {
                    let mut here: ModPath = module.clone();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let mut base = match start.as_str() {
                        "crate" => Vec::new(),
                        _ => here,
                    };
                    let mut j = i;
                    if start == "super" {
                        base.pop();
                    }
                    j += 2;
                    // `super::super::…`
                    while tokens.get(j) == Some(&Token::Ident("super".into()))
                        && tokens.get(j + 1) == Some(&Token::PathSep)
                    {
                        base.pop();
                        j += 2;
                    }
                    let mut paths = Vec::new();
                    path_tree(&tokens, &mut j, base, &mut paths);
                    out.extend(paths);
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The longest prefix of `path` that is a module of `modules`.
fn resolve(path: &ModPath, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// The module graph of `src/`: for each module, the modules it names.
fn module_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let files: Vec<(ModPath, PathBuf)> = rust_files(src)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "main.rs"))
        .map(|f| (module_of(src, &f), f))
        .collect();
    let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        let text = fs::read_to_string(file).unwrap();
        let mut edges = BTreeSet::new();
        for path in named_paths(&text, module) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            // Not the module itself, not the crate root, not one of its own descendants.
            if target.is_empty() || target.starts_with(module) {
                continue;
            }
            edges.insert(target);
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The strongly connected parts of `graph` with more than one node (Tarjan's algorithm).
fn circles<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct State<N> {
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        found: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(v: &N, graph: &BTreeMap<N, BTreeSet<N>>, s: &mut State<N>) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        for w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, graph, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().position(|x| x == v).unwrap();
            let part: Vec<N> = s.stack.split_off(at);
            if part.len() > 1 {
                s.found.push(part);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.found
}

/// One circle through `part` (a strongly connected part of `graph`), as `a -> b -> … -> a`.
fn one_circle<N: Ord + Clone>(
    graph: &BTreeMap<N, BTreeSet<N>>,
    part: &[N],
    name: impl Fn(&N) -> String,
) -> String {
    // Breadth-first from the first node back to itself, within the part.
    let start = &part[0];
    let mut came_from: BTreeMap<N, N> = BTreeMap::new();
    let mut queue = vec![start.clone()];
    while !queue.is_empty() {
        let mut next = Vec::new();
        for v in queue {
            for w in graph
                .get(&v)
                .into_iter()
                .flatten()
                .filter(|w| part.contains(w))
            {
                if w == start {
                    let mut path = vec![name(start)];
                    let mut at = v.clone();
                    while &at != start {
                        path.push(name(&at));
                        at = came_from[&at].clone();
                    }
                    path.push(name(start));
                    let last = path.len() - 1;
                    path[1..last].reverse();
                    return path.join(" -> ");
                }
                if !came_from.contains_key(w) {
                    came_from.insert(w.clone(), v.clone());
                    next.push(w.clone());
                }
            }
        }
        queue = next;
    }
    part.iter().map(name).collect::<Vec<_>>().join(", ")
}

fn module_name(m: &ModPath) -> String {
    m.join("::")
}

/// Fails naming every circle of `graph`.
fn assert_no_circle<N: Ord + Clone>(
    graph: &BTreeMap<N, BTreeSet<N>>,
    what: &str,
    name: impl Fn(&N) -> String + Copy,
) {
    let found = circles(graph);
    let report: Vec<String> = found
        .iter()
        .map(|part| {
            format!(
                "  {} (all of: {})",
                one_circle(graph, part, name),
                part.iter().map(name).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles between {what}:\n{}",
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn layout_reads_paths_from_use_trees_and_code_only() {
    let text = r##"
        //! Mentions crate::in_a_comment.
        use super::{a, b::{c, self}, d::*};
        use crate::x::y as z;
        /* crate::in_a_block /* nested crate::too */ */
        fn f() -> &'static str { let _ = crate::p::q::r(); 'c'; "crate::in_a_string"; r#"crate::raw"# }
        mod inner { use super::sibling; }
        #[cfg(test)]
        mod tests { use crate::only_in_tests; }
    "##;
    let module: ModPath = vec!["top".into(), "here".into()];
    let got: BTreeSet<String> = named_paths(text, &module).iter().map(module_name).collect();
    let want: BTreeSet<String> = [
        "top::a",
        "top::b::c",
        "top::b",
        "top::d",
        "x::y",
        "p::q::r",
        "top::here::sibling",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
}

#[test]
fn layout_no_import_circle_between_files_of_src() {
    let graph = module_graph(&repo().join("src"));
    assert!(graph.len() > 10, "src/ has too few modules: {graph:?}");
    assert_no_circle(&graph, "files of src/", module_name);
}

#[test]
fn layout_no_import_circle_between_top_level_folders_of_src() {
    let graph = module_graph(&repo().join("src"));
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &graph {
        let Some(a) = from.first() else { continue };
        let entry = folders.entry(a.clone()).or_default();
        for to in targets {
            if let Some(b) = to.first().filter(|b| *b != a) {
                entry.insert(b.clone());
            }
        }
    }
    assert_no_circle(&folders, "top-level modules of src/", |s| s.clone());
}

#[test]
fn layout_no_file_over_the_line_limits() {
    let repo = repo();
    let mut offenders = Vec::new();
    for (dir, limit) in [("src", SRC_LIMIT), ("tests", TESTS_LIMIT)] {
        for file in rust_files(&repo.join(dir)) {
            let lines = fs::read_to_string(&file).unwrap().lines().count();
            if lines > limit {
                let rel = file.strip_prefix(&repo).unwrap().display().to_string();
                offenders.push(format!("  {rel}: {lines} lines (limit {limit})"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files over the line limits:\n{}",
        offenders.join("\n")
    );
}
