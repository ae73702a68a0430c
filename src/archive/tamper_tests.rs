//! An archive edited by someone who knows the format: each edit that the
//! chain's hashes alone would let pass (a value shown one way and hashed
//! another, a member added, an id, a source or the header changed, frames
//! or bytes added around the text) is found, and named.

use super::format::{content_of, push_entry, range_problem, Header};
use super::read_tests::*;
use crate::store::chain::{link, GENESIS};
use crate::text::hex;

/// Line `n` (0 is the header) of `text` replaced by `line`.
fn replace_line<'a>(text: &'a str, n: usize, line: &'a str) -> String {
    with_lines(text, |l| l[n] = line)
}

/// The line of entry 1 after `after`, chained from the start, and its hash.
fn first_line(after: &str) -> (String, [u8; 32]) {
    chained_first(&entry(1, after))
}

#[test]
fn exact_cannot_hash_one_value_while_the_line_shows_another() {
    let files = Files::new();
    // A stored text with white space around it is carried in "exact".
    let (line, hash) = first_line(" {\"v\":2} ");
    assert!(
        line.contains("\"exact\":{\"after\":\" {\\\"v\\\":2} \"}"),
        "{line}"
    );
    files.check(&compress(&one_entry(&line, &hash))).unwrap();
    // The visible value changed, "exact" (which the hash covers) left as it was.
    let shown = line.replacen("\"after\": {\"v\":2} ", "\"after\": {\"v\":1} ", 1);
    assert_ne!(shown, line);
    let (row, e) = broken(files.check(&compress(&one_entry(&shown, &hash))));
    assert_eq!(row, Some(2), "{e}");
    assert!(e.contains("not written as pgtrail writes"), "{e}");
    // An "exact" added to a line whose raw value needs none, hash recomputed for it.
    let (line, shown_hash) = first_line("{\"v\":1}");
    let (_, hash) = first_line("{\"v\":2}");
    let bent = line.replacen(&hex(&shown_hash), &hex(&hash), 1);
    let bent = format!(
        "{},\"exact\":{{\"after\":\"{{\\\"v\\\":2}}\"}}}}",
        &bent[..bent.len() - 1]
    );
    let (_, e) = broken(files.check(&compress(&one_entry(&bent, &hash))));
    assert!(e.contains("not written as pgtrail writes"), "{e}");
}

#[test]
fn a_line_has_one_spelling() {
    let files = Files::new();
    let (line, hash) = first_line("{\"v\":1}");
    let time = entry(1, "").committed_at_text();
    let lsn = entry(1, "").lsn.unwrap();
    let (hi, lo) = lsn.split_once('/').unwrap();
    // The same content (the same hash) written another way: each is an edit.
    let respelled = [
        line.replacen(&time, &time.replacen('Z', "000Z", 1), 1),
        line.replacen(&time, &time.replacen('Z', "+00:00", 1), 1),
        // A digit past the microsecond: shown, but not in the hash.
        line.replacen(&time, &time.replacen('Z', "001Z", 1), 1),
        line.replacen(&lsn, &format!("{hi}/0{lo}"), 1),
        line.replacen("\"schema\":\"public\"", "\"schema\":\"publi\\u0063\"", 1),
        line.replacen(",\"table\"", ", \"table\"", 1),
        line.replacen("{\"id\":1,", "{\"id\":1,\"id\":1,", 1),
    ];
    for bent in respelled {
        assert_ne!(bent, line);
        let (row, e) = broken(files.check(&compress(&one_entry(&bent, &hash))));
        assert_eq!(row, Some(2), "{bent}: {e}");
        assert!(
            e.contains("not written as pgtrail writes") || e.contains("duplicate field"),
            "{bent}: {e}"
        );
    }
    // A member pgtrail does not write is refused, not passed over.
    let added = line.replacen("\"hash\":", "\"note\":\"fine\",\"hash\":", 1);
    let (row, e) = broken(files.check(&compress(&one_entry(&added, &hash))));
    assert_eq!(row, Some(2), "{e}");
    assert!(e.contains("unknown field `note`"), "{e}");
    // A blank line, or an entry's line broken between its members.
    let blank = one_entry(&format!("\n{line}"), &hash);
    let (_, e) = broken(files.check(&compress(&blank)));
    assert!(e.contains("not written as pgtrail writes"), "{e}");
    // The last line must end as pgtrail ends it.
    let whole = text(3, None);
    let (_, e) = broken(files.check(&compress(whole.trim_end())));
    assert!(e.contains("no line break follows it"), "{e}");
}

#[test]
fn a_changed_id_source_or_header_is_found() {
    let files = Files::new();
    let whole = text(5, None);
    // Entry 5's id made 9: still in order, and ids are not in the chain.
    let renumbered = whole.replacen("{\"id\":5,", "{\"id\":9,", 1);
    let (row, e) = broken(files.check(&compress(&renumbered)));
    assert_eq!(row, Some(7), "{e}");
    assert!(
        e.contains("lines_sha256") && e.contains("an entry's id"),
        "{e}"
    );
    // One entry's source: not the header's.
    let moved = whole.replacen(
        "\"source\":\"shop\",\"hash\"",
        "\"source\":\"shop2\",\"hash\"",
        1,
    );
    let (row, e) = broken(files.check(&compress(&retrail(&moved))));
    assert_eq!(row, Some(2), "{e}");
    assert!(e.contains("\"shop2\" is not the header's \"shop\""), "{e}");
    // Every source and the header's changed together: the trailer tells.
    let all = whole.replace("\"source\":\"shop\"", "\"source\":\"shop2\"");
    let (row, e) = broken(files.check(&compress(&all)));
    assert_eq!(row, Some(7), "{e}");
    assert!(e.contains("lines_sha256"), "{e}");
    // When it was written, likewise.
    let when = serde_json::to_string(&header()).unwrap();
    let later = Header {
        written_at: at(T0 + 9_000_000_000),
        ..header()
    };
    let rewritten = whole.replacen(&when, &serde_json::to_string(&later).unwrap(), 1);
    let (_, e) = broken(files.check(&compress(&rewritten)));
    assert!(e.contains("lines_sha256"), "{e}");
}

#[test]
fn a_header_that_cannot_be_right_is_refused() {
    let files = Files::new();
    let whole = text(2, None);
    let when = serde_json::to_string(&header()).unwrap();
    let bad = [
        (
            Header {
                source_id: 0,
                ..header()
            },
            "cannot have the id 0",
        ),
        (
            Header {
                source: "pgtrail".into(),
                ..header()
            },
            "cannot have the id 1",
        ),
        (
            Header {
                source_id: -1,
                ..header()
            },
            "cannot have the id -1",
        ),
        (
            Header {
                to: header().from,
                ..header()
            },
            "it is empty",
        ),
        (
            Header {
                from: header().from + chrono::Duration::nanoseconds(500),
                ..header()
            },
            "fraction of a microsecond",
        ),
    ];
    for (h, needle) in bad {
        let edited = whole.replacen(&when, &serde_json::to_string(&h).unwrap(), 1);
        let (row, e) = broken(files.check(&compress(&retrail(&edited))));
        assert_eq!(row, Some(1), "{e}");
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // Written another way (a member moved): not the header pgtrail writes.
    let moved = format!(
        "{{\"source\":\"shop\",{}",
        when.replacen(",\"source\":\"shop\"", "", 1)
            .trim_start_matches('{')
    );
    let (row, e) = broken(files.check(&compress(&retrail(&whole.replacen(&when, &moved, 1)))));
    assert_eq!(row, Some(1), "{e}");
    assert!(e.contains("not written as pgtrail writes"), "{e}");
}

#[test]
fn a_prev_where_no_run_starts_is_refused() {
    let files = Files::new();
    let whole = text(3, None);
    let lines: Vec<&str> = whole.lines().collect();
    // Entry 2 with a prev (entry 1's hash, so the link holds): a seam that is not one.
    let hash_of = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (h1, h2) = (hash_of(lines[1]), hash_of(lines[2]));
    let seam = lines[2].replacen(
        &format!("\"hash\":\"{h2}\""),
        &format!("\"hash\":\"{h2}\",\"prev\":\"{h1}\""),
        1,
    );
    let (row, e) = broken(files.check(&compress(&retrail(&replace_line(&whole, 2, &seam)))));
    assert_eq!(row, Some(3), "{e}");
    assert!(
        e.contains("has a \"prev\" although it follows entry 1"),
        "{e}"
    );
    // A second run that starts the chain again.
    let mut body = lines[..3].join("\n") + "\n";
    let (restart, hash) = chained_first(&entry(3, "{\"v\":3}"));
    body += &(restart + "\n");
    let (row, e) = broken(files.check(&compress(&with_trailer(body, 3, Some(hex(&hash))))));
    assert_eq!(row, Some(4), "{e}");
    assert!(e.contains("a chain starts once"), "{e}");
}

#[test]
fn frames_or_bytes_around_the_text_are_refused() {
    let files = Files::new();
    let whole = compress(&text(3, None));
    let skippable = [0x50u8, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'h', b'i', b'd', b'e'];
    let before = [&skippable[..], &whole].concat();
    let (_, e) = broken(files.check(&before));
    assert!(e.contains("skippable frame"), "{e}");
    for after in [
        &skippable[..],
        &compress("")[..],
        &compress("{\"end\":true}\n")[..],
        &b"junk"[..],
    ] {
        let (_, e) = broken(files.check(&[&whole[..], after].concat()));
        assert!(e.contains("more follows its zstd frame"), "{e}");
    }
    // Inside the encryption too.
    let key = age::x25519::Identity::generate();
    let id = identity_file(&files, &key);
    for (bytes, needle) in [
        ([&skippable[..], &whole].concat(), "skippable frame"),
        (
            [&whole[..], &skippable].concat(),
            "more follows its zstd frame",
        ),
    ] {
        let path = files.put("s.jsonl.zst.age", &seal_bytes(&bytes, &key));
        let (_, e) = broken(super::check(&path, Some(&id), super::MAX_LINE));
        assert!(e.contains(needle), "{e}");
    }
    let path = files.put("w.jsonl.zst.age", &seal_bytes(&whole, &key));
    super::check(&path, Some(&id), super::MAX_LINE).unwrap();
}

#[test]
fn an_archive_of_entries_without_hashes_is_unverifiable() {
    let files = Files::new();
    let mut body = serde_json::to_string(&header()).unwrap() + "\n";
    for id in 1..=3 {
        push_entry(&mut body, &entry(id, "{}"), None, None);
        body.push('\n');
    }
    let checked = files
        .check(&compress(&with_trailer(body.clone(), 3, None)))
        .unwrap();
    assert_eq!((checked.entries, checked.unchained), (3, 3));
    assert!(checked.unverifiable());
    // Followed by the chain's start: the chained ones are verified.
    let e = entry(4, "{}");
    let hash = link(&GENESIS, &content_of(&e).unwrap().1);
    push_entry(&mut body, &e, Some(&hash), Some(&GENESIS));
    body.push('\n');
    let checked = files
        .check(&compress(&with_trailer(body, 4, Some(hex(&hash)))))
        .unwrap();
    assert_eq!((checked.entries, checked.unchained), (4, 3));
    assert!(!checked.unverifiable());
}

#[test]
fn a_range_is_whole_microseconds_and_not_empty() {
    let from = at(T0);
    let to = at(T0 + 1);
    assert_eq!(range_problem(from, to), None);
    let e = range_problem(from + chrono::Duration::nanoseconds(1), to).unwrap();
    assert!(
        e.contains("its from") && e.contains("give whole microseconds"),
        "{e}"
    );
    let e = range_problem(from, to + chrono::Duration::nanoseconds(999)).unwrap();
    assert!(e.contains("its to"), "{e}");
    assert!(range_problem(to, from).unwrap().contains("is not before"));
}

#[test]
fn a_renamed_archive_is_found() {
    let files = Files::new();
    let bytes = compress(&text(2, None));
    // The header's: shop, T0's day to the next hour's (the same day).
    let day = at(T0).format("%Y%m%d").to_string();
    let to = at(T0 + 3_600_000_000).format("%Y%m%d").to_string();
    for name in [
        format!("shop-{day}-{to}.jsonl.zst"),
        format!("shop-{day}-{to}-2.jsonl.zst"),
        format!("shop-{day}-{to}.jsonl.zst.age"),
        "copy.jsonl.zst".to_owned(),
        "shop.jsonl.zst".to_owned(),
    ] {
        super::check(&files.put(&name, &bytes), None, super::MAX_LINE).unwrap();
    }
    for name in [
        format!("shop-eu-{day}-{to}.jsonl.zst"),
        format!("shop-20200101-{to}.jsonl.zst"),
        format!("shop-{day}-20300101-3.jsonl.zst"),
    ] {
        let (row, e) = broken(super::check(
            &files.put(&name, &bytes),
            None,
            super::MAX_LINE,
        ));
        assert_eq!(row, None, "{e}");
        assert!(
            e.contains("its name says") && e.contains(&format!("shop-{day}-{to}.jsonl.zst")),
            "{name}: {e}"
        );
    }
}
