//! The archive format read back: a whole file checks out, and every kind of
//! damage (truncation, a changed byte, a removed, repeated or moved line, a
//! foreign key) is found and named by its line.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::format::{content_of, push_entry, Header, Trailer};
use super::{check, ArchiveError, Checked, MAX_LINE};
use crate::export::encrypt::{Recipients, Sealed};
use crate::store::chain::{link, GENESIS};
use crate::store::stored::StoredEntry;
use crate::text::hex;

pub(super) fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap()
}

pub(super) const T0: i64 = 1_790_000_000_000_000;

/// Entry `id` of a test chain, whose `after` is `after`.
pub(super) fn entry(id: i64, after: &str) -> StoredEntry {
    StoredEntry {
        id,
        committed_at: at(T0 + id * 1_000_123),
        xid: Some(700 + id),
        lsn: Some(format!("16/{:X}", 0xB374_D848u32 + id as u32)),
        schema: "public".into(),
        table: "orders".into(),
        action: "UPDATE".into(),
        source: "shop".into(),
        json: [
            Some(format!("{{\"id\":{id}}}")),
            Some("{\"v\":0}".into()),
            Some(after.into()),
            Some("[\"v\"]".into()),
            Some("{\"db_user\":\"app\"}".into()),
            None,
        ],
    }
}

/// The header of the test archives: source `shop` (id 1), an hour from T0.
pub(super) fn header() -> Header {
    Header {
        pgtrail_archive: 1,
        source: "shop".into(),
        source_id: 1,
        from: at(T0),
        to: at(T0 + 3_600_000_000),
        written_at: at(T0 + 7_200_000_000),
    }
}

/// The text of an archive of entries 1..=n; entry `outside` (if any) is in
/// the chain but not in the file, so a second run starts after it.
pub(super) fn text(n: i64, outside: Option<i64>) -> String {
    let mut out = serde_json::to_string(&header()).unwrap() + "\n";
    let mut prev = GENESIS;
    let mut start = true;
    for id in 1..=n {
        let e = entry(id, &format!("{{\"v\":{id}}}"));
        let hash = link(&prev, &content_of(&e).unwrap().1);
        if Some(id) == outside {
            prev = hash;
            start = true;
            continue;
        }
        push_entry(&mut out, &e, Some(&hash), start.then_some(&prev));
        out.push('\n');
        prev = hash;
        start = false;
    }
    let entries = (n - i64::from(outside.is_some())) as u64;
    with_trailer(out, entries, Some(hex(&prev)))
}

/// The text of an archive of `entries`, in one run from the chain's start.
pub(super) fn chained(entries: &[StoredEntry]) -> String {
    let mut out = serde_json::to_string(&header()).unwrap() + "\n";
    let mut prev = GENESIS;
    for (i, e) in entries.iter().enumerate() {
        let hash = link(&prev, &content_of(e).unwrap().1);
        push_entry(&mut out, e, Some(&hash), (i == 0).then_some(&prev));
        out.push('\n');
        prev = hash;
    }
    let last = (!entries.is_empty()).then(|| hex(&prev));
    with_trailer(out, entries.len() as u64, last)
}

/// `body` (the header and entry lines) followed by its trailer.
pub(super) fn with_trailer(body: String, entries: u64, last_hash: Option<String>) -> String {
    use sha2::Digest;
    let trailer = Trailer {
        end: true,
        entries,
        last_hash,
        lines_sha256: hex(&sha2::Sha256::digest(&body)),
    };
    body + &serde_json::to_string(&trailer).unwrap() + "\n"
}

/// `text` with its trailer's `lines_sha256` made right again after an edit
/// of the lines before it: what an editor who knows the format does.
pub(super) fn retrail(text: &str) -> String {
    let (body, trailer) = text.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let trailer: Trailer = serde_json::from_str(trailer).unwrap();
    with_trailer(format!("{body}\n"), trailer.entries, trailer.last_hash)
}

/// The line of `e` as the first entry of its chain, and its hash.
pub(super) fn chained_first(e: &StoredEntry) -> (String, [u8; 32]) {
    let hash = link(&GENESIS, &content_of(e).unwrap().1);
    let mut line = String::new();
    push_entry(&mut line, e, Some(&hash), Some(&GENESIS));
    (line, hash)
}

/// An archive of one entry whose line is `line`, with hash `hash`, and a right trailer.
pub(super) fn one_entry(line: &str, hash: &[u8; 32]) -> String {
    let body = serde_json::to_string(&header()).unwrap() + "\n" + line + "\n";
    with_trailer(body, 1, Some(hex(hash)))
}

pub(super) fn compress(text: &str) -> Vec<u8> {
    zstd::encode_all(text.as_bytes(), 3).unwrap()
}

pub(super) struct Files(tempfile::TempDir);

impl Files {
    pub(super) fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    pub(super) fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub(super) fn check(&self, bytes: &[u8]) -> Result<Checked, ArchiveError> {
        check(&self.put("a.jsonl.zst", bytes), None, MAX_LINE)
    }
}

/// The line and the message of a broken archive.
pub(super) fn broken(result: Result<Checked, ArchiveError>) -> (Option<u64>, String) {
    match result {
        Err(e @ ArchiveError::Broken { line, .. }) => (line, e.to_string()),
        other => panic!("expected a broken archive, got {other:?}"),
    }
}

pub(super) fn with_lines<'a>(text: &'a str, edit: impl FnOnce(&mut Vec<&'a str>)) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    edit(&mut lines);
    lines.join("\n") + "\n"
}

#[test]
fn a_whole_archive_checks_out_with_its_runs_and_hash() {
    let files = Files::new();
    let bytes = compress(&text(5, None));
    let checked = files.check(&bytes).unwrap();
    assert_eq!((checked.entries, checked.unchained), (5, 0));
    assert_eq!(checked.runs.len(), 1);
    let run = checked.runs[0];
    assert_eq!((run.first_id, run.last_id, run.prev), (1, 5, GENESIS));
    use sha2::Digest;
    assert_eq!(
        checked.sha256,
        <[u8; 32]>::from(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(checked.header.source, "shop");
    assert!(!checked.encrypted);

    // An entry of the chain outside the range: a second run, starting after it.
    let checked = files.check(&compress(&text(6, Some(3)))).unwrap();
    let runs: Vec<_> = checked
        .runs
        .iter()
        .map(|r| (r.first_id, r.last_id))
        .collect();
    assert_eq!(runs, [(1, 2), (4, 6)]);
    assert_ne!(checked.runs[1].prev, GENESIS);
}

#[test]
fn a_truncated_file_is_found() {
    let files = Files::new();
    let bytes = compress(&text(200, None));
    let (line, e) = broken(files.check(&bytes[..bytes.len() / 2]));
    assert_eq!(line, None);
    assert!(e.contains("truncated or damaged"), "{e}");
    // Cut at a line's end, well compressed: the trailer is missing.
    let cut = with_lines(&text(5, None), |l| l.truncate(4));
    let (_, e) = broken(files.check(&compress(&cut)));
    assert!(e.contains("ends after line 4 without its trailer"), "{e}");
    let (_, e) = broken(files.check(&compress("")));
    assert!(e.contains("no header"), "{e}");
}

#[test]
fn a_changed_byte_is_named_by_its_line() {
    let files = Files::new();
    let changed = text(5, None).replace("{\"v\":3}", "{\"v\":4}");
    let (line, e) = broken(files.check(&compress(&changed)));
    assert_eq!(line, Some(4), "{e}");
    assert!(
        e.contains("line 4 (entry 3)") && e.contains("does not follow entry 2"),
        "{e}"
    );
    // The first entry, checked against its prev.
    let changed = text(5, None).replace("{\"v\":1}", "{\"v\":9}");
    let (line, e) = broken(files.check(&compress(&changed)));
    assert_eq!(line, Some(2), "{e}");
    assert!(e.contains("the line was changed"), "{e}");
    // A flipped bit in the compressed bytes.
    let mut bytes = compress(&text(50, None));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let (_, e) = broken(files.check(&bytes));
    assert!(e.contains("damaged") || e.contains("line"), "{e}");
}

#[test]
fn a_removed_repeated_or_moved_line_is_named() {
    let files = Files::new();
    let full = text(5, None);
    let removed = with_lines(&full, |l| {
        l.remove(3);
    });
    let (line, e) = broken(files.check(&compress(&removed)));
    assert_eq!(line, Some(4), "{e}");
    assert!(
        e.contains("(entry 4)") && e.contains("does not follow entry 2 on line 3"),
        "{e}"
    );
    let last_removed = with_lines(&full, |l| {
        l.remove(5);
    });
    let (line, e) = broken(files.check(&compress(&last_removed)));
    assert_eq!(line, Some(6), "{e}");
    assert!(e.contains("counts 5 entries, the file holds 4"), "{e}");
    let first_removed = with_lines(&full, |l| {
        l.remove(1);
    });
    let (line, e) = broken(files.check(&compress(&first_removed)));
    assert_eq!(line, Some(2), "{e}");
    assert!(e.contains("no \"prev\""), "{e}");
    // Entries 3 and 2 swapped: entry 3 no longer follows the one before it.
    let moved = with_lines(&full, |l| l.swap(2, 3));
    let (line, e) = broken(files.check(&compress(&moved)));
    assert_eq!(line, Some(3), "{e}");
    assert!(
        e.contains("does not follow entry 1") && e.contains("reordered"),
        "{e}"
    );
    // Entry 1 moved after entry 2 (a run's first line keeps its prev): its id is out of order.
    let moved = with_lines(&full, |l| l.swap(1, 2));
    let (line, e) = broken(files.check(&compress(&moved)));
    assert!(matches!(line, Some(2) | Some(3)), "{e}");
    let repeated = with_lines(&full, |l| l.insert(3, l[2]));
    let (line, e) = broken(files.check(&compress(&repeated)));
    assert_eq!(line, Some(4), "{e}");
    assert!(e.contains("is not after that of entry 2 on line 3"), "{e}");
    let after_end = with_lines(&full, |l| l.push(l[2]));
    let (line, e) = broken(files.check(&compress(&after_end)));
    assert_eq!(line, Some(8), "{e}");
    assert!(e.contains("follows the trailer"), "{e}");
}

#[test]
fn an_entry_over_several_lines_reads_back() {
    // The json type keeps line breaks between tokens; such an entry spans lines.
    let e = entry(1, "{\"v\":\n1}");
    let hash = link(&GENESIS, &content_of(&e).unwrap().1);
    let mut line = String::new();
    push_entry(&mut line, &e, Some(&hash), Some(&GENESIS));
    let head = serde_json::to_string(&header()).unwrap();
    let whole = with_trailer(format!("{head}\n{line}\n"), 1, Some(hex(&hash)));
    let files = Files::new();
    let checked = files.check(&compress(&whole)).unwrap();
    assert_eq!(checked.entries, 1);
    let cut = format!("{head}\n{}\n", line.split('\n').next().unwrap());
    let (line, e) = broken(files.check(&compress(&cut)));
    assert_eq!(line, Some(2), "{e}");
    assert!(e.contains("truncated"), "{e}");
}

fn sealed(text: &str, to: &age::x25519::Identity) -> Vec<u8> {
    seal_bytes(&compress(text), to)
}

/// `bytes` encrypted with age to `to`.
pub(super) fn seal_bytes(bytes: &[u8], to: &age::x25519::Identity) -> Vec<u8> {
    let r = Recipients::parse(&[to.to_public().to_string()]).unwrap();
    let mut s = Sealed::encrypted(&r, Vec::new()).unwrap();
    s.write_all(bytes).unwrap();
    s.finish().unwrap()
}

pub(super) fn identity_file(files: &Files, id: &age::x25519::Identity) -> PathBuf {
    use age::secrecy::ExposeSecret;
    files.put(
        "key.txt",
        format!("{}\n", id.to_string().expose_secret()).as_bytes(),
    )
}

fn sealed_problem(path: &Path, identity: Option<&Path>) -> String {
    match check(path, identity, MAX_LINE) {
        Err(e @ ArchiveError::Sealed { .. }) => e.to_string(),
        other => panic!("expected a sealed archive, got {other:?}"),
    }
}

#[test]
fn an_encrypted_archive_needs_its_identity() {
    let files = Files::new();
    let key = age::x25519::Identity::generate();
    let path = files.put("a.jsonl.zst.age", &sealed(&text(5, None), &key));
    let checked = check(&path, Some(&identity_file(&files, &key)), MAX_LINE).unwrap();
    assert!(checked.encrypted);
    assert_eq!(checked.entries, 5);
    let e = sealed_problem(&path, None);
    assert!(
        e.contains("encrypted with age") && e.contains("--identity"),
        "{e}"
    );
    let other = age::x25519::Identity::generate();
    let e = sealed_problem(&path, Some(&identity_file(&files, &other)));
    assert!(e.contains("encrypted to other recipients"), "{e}");
    // A changed line inside the encryption is still found, by its line.
    let changed = text(5, None).replace("{\"v\":3}", "{\"v\":4}");
    let path = files.put("b.jsonl.zst.age", &sealed(&changed, &key));
    let (line, _) = broken(check(&path, Some(&identity_file(&files, &key)), MAX_LINE));
    assert_eq!(line, Some(4));
}

#[test]
fn what_is_not_an_archive_says_so() {
    let files = Files::new();
    let (_, e) = broken(files.check(text(2, None).as_bytes()));
    assert!(e.contains("not a pgtrail archive"), "{e}");
    let (line, e) = broken(files.check(&compress("{\"hello\":1}\n")));
    assert_eq!(line, Some(1));
    assert!(e.contains("header"), "{e}");
    let newer = text(2, None).replace("\"pgtrail_archive\":1", "\"pgtrail_archive\":2");
    let (_, e) = broken(files.check(&compress(&newer)));
    assert!(e.contains("newer pgtrail"), "{e}");
    let mut bytes = compress(&text(2, None));
    bytes.extend_from_slice(b"junk");
    assert!(files.check(&bytes).is_err());
}
