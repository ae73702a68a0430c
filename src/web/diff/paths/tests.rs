//! The path diff on documents built to show each rule: nested objects,
//! arrays grown, shrunk and shifted, type changes, keys that need quoting,
//! and the bounds on deep and large documents.

use super::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn diff(before: &str, after: &str) -> PathDiff {
    path_diff("profile", &raw(before), &raw(after)).expect("documents are compared by path")
}

/// Each edit as `path kind before→after`.
fn edits(before: &str, after: &str) -> Vec<String> {
    diff(before, after)
        .edits
        .iter()
        .map(|e| {
            format!(
                "{} {} {}→{}",
                e.path,
                e.kind,
                e.before.as_deref().unwrap_or("-"),
                e.after.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn nested_objects_by_key_path() {
    assert_eq!(
        edits(
            r#"{"tier":"gold","tags":["early"],"address":{"city":"Lyon","zip":"69001"},"old":1}"#,
            r#"{"tier":"platinum","tags":["early","vip"],"address":{"city":"Paris","zip":"69001"},"new":true}"#,
        ),
        [
            r#"profile.address.city changed "Lyon"→"Paris""#,
            r#"profile.new added -→true"#,
            r#"profile.old removed 1→-"#,
            r#"profile.tags[1] added -→"vip""#,
            r#"profile.tier changed "gold"→"platinum""#,
        ]
    );
    assert!(diff(r#"{"a":[1,{"b":2}]}"#, r#"{"a":[1,{"b":2}]}"#)
        .edits
        .is_empty());
}

#[test]
fn arrays_grown_shrunk_and_shifted() {
    // Grown at the end: one added, the old last element untouched.
    assert_eq!(
        edits(r#"["early"]"#, r#"["early","late"]"#),
        [r#"profile[1] added -→"late""#]
    );
    // Shrunk: the removed element at its place before.
    assert_eq!(
        edits(r#"["a","b","c"]"#, r#"["a","c"]"#),
        [r#"profile[1] removed "b"→-"#]
    );
    // Put in front: one added, not every element changed.
    assert_eq!(
        edits(r#"["a","b","c"]"#, r#"["z","a","b","c"]"#),
        [r#"profile[0] added -→"z""#]
    );
    // An element changed in place is compared inside.
    assert_eq!(
        edits(
            r#"[{"id":1,"qty":2},{"id":2,"qty":1}]"#,
            r#"[{"id":1,"qty":3},{"id":2,"qty":1}]"#
        ),
        [r#"profile[0].qty changed 2→3"#]
    );
    // Emptied.
    assert_eq!(
        edits(r#"{"t":[1,2]}"#, r#"{"t":[]}"#),
        ["profile.t[0] removed 1→-", "profile.t[1] removed 2→-"]
    );
}

#[test]
fn type_changes_are_named() {
    let d = diff(
        r#"{"n":"5","o":{"a":1},"z":null}"#,
        r#"{"n":5,"o":[1],"z":false}"#,
    );
    let types: Vec<(&str, Option<&str>)> = d
        .edits
        .iter()
        .map(|e| (e.path.as_str(), e.types.as_deref()))
        .collect();
    assert_eq!(
        types,
        [
            ("profile.n", Some("string → number")),
            ("profile.o", Some("object → array")),
            ("profile.z", Some("null → boolean")),
        ]
    );
    // A document replaced by a scalar: the whole value changed.
    let d = diff(r#"{"a":1}"#, r#""text""#);
    assert_eq!(d.edits.len(), 1);
    assert_eq!(d.edits[0].path, "profile");
    assert_eq!(d.edits[0].types.as_deref(), Some("object → string"));
    // Two scalars are the line diff's.
    assert!(path_diff("c", &raw(r#""a""#), &raw(r#""b""#)).is_none());
}

#[test]
fn keys_that_need_it_are_quoted() {
    assert_eq!(
        edits(
            r#"{"a.b":1,"x[0]":1,"say \"hi\"":1,"2":1,"":1,"ok_1":1,"é":1}"#,
            r#"{"a.b":2,"x[0]":2,"say \"hi\"":2,"2":2,"":2,"ok_1":2,"é":2}"#
        ),
        [
            r#"profile."" changed 1→2"#,
            r#"profile."2" changed 1→2"#,
            r#"profile."a.b" changed 1→2"#,
            r#"profile.ok_1 changed 1→2"#,
            r#"profile."say \"hi\"" changed 1→2"#,
            r#"profile."x[0]" changed 1→2"#,
            r#"profile."é" changed 1→2"#,
        ]
    );
    // The column's own name too.
    let d = path_diff("my col", &raw(r#"{"a":1}"#), &raw(r#"{"a":2}"#)).unwrap();
    assert_eq!(d.edits[0].path, r#""my col".a"#);
}

#[test]
fn deep_documents_are_compared_whole_past_the_depth_bound() {
    let nest = |n: usize, leaf: &str| format!("{}{leaf}{}", "[".repeat(n), "]".repeat(n));
    let d = diff(&nest(60, "1"), &nest(60, "2"));
    assert_eq!(d.edits.len(), 1);
    assert_eq!(
        d.edits[0].path,
        format!("profile{}", "[0]".repeat(Bounds::DEPTH))
    );
    // Deeper than serde_json reads: not compared by path, and said so.
    let d = diff(&nest(200, "1"), &nest(200, "2"));
    assert!(d.edits.is_empty());
    assert!(d.note().contains("deeper than 128 levels"), "{}", d.note());
}

#[test]
fn large_documents_are_bounded() {
    // 5,000 keys changed: 200 listed, the rest counted.
    let doc = |v: u32| {
        let members: Vec<String> = (0..5_000).map(|i| format!(r#""k{i:05}":{v}"#)).collect();
        format!("{{{}}}", members.join(","))
    };
    let d = diff(&doc(1), &doc(2));
    assert_eq!(d.edits.len(), Bounds::LISTED);
    assert_eq!(d.found, 5_000);
    assert!(d.stopped.is_none());
    assert!(
        d.note().starts_with("4800 more differences are not listed"),
        "{}",
        d.note()
    );
    // More values than the bound: stops, and says where.
    let wide = |v: u32| {
        let items: Vec<String> = (0..120_000).map(|i| format!("[{i},{v}]")).collect();
        format!("[{}]", items.join(","))
    };
    let started = Instant::now();
    let d = diff(&wide(1), &wide(2));
    assert!(d.stopped.is_some(), "{:?}", d.note());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Larger than the byte bound: not compared at all.
    let huge = format!(r#"{{"a":"{}"}}"#, "x".repeat(Bounds::BYTES));
    let d = diff(&huge, r#"{"a":"y"}"#);
    assert!(d.edits.is_empty() && d.note().contains("larger than 2 MiB"));
    // A long value is clipped in the list.
    let d = diff(
        r#"{"a":"short"}"#,
        &format!(r#"{{"a":"{}"}}"#, "y".repeat(1_000)),
    );
    assert_eq!(
        d.edits[0].after.as_deref().map(|s| s.chars().count()),
        Some(Bounds::SHOWN + 1)
    );
}
