//! Hostile archives: what a file can make the reader hold or do is bounded
//! (one line of gigabytes from a few kilobytes of zstd, encrypted or not; a
//! zstd window or an age header larger than pgtrail writes), and an entry
//! over many lines is read in linear time. Sizes are counted, never timed.

use std::io::{self, BufReader, Read, Write};

use super::layers::{MAX_AGE_HEADER, MAX_AGE_LINES};
use super::lines::{LONGEST_WRITTEN, MAX_LINE};
use super::read::{check_each, walk};
use super::read_tests::*;
use super::{check, ArchiveError};
use crate::export::encrypt::{Recipients, Sealed, MAX_RECIPIENTS};
use crate::store::stored::StoredEntry;

/// `head`, then `fill` up to `len` bytes in all: a line as long as wanted,
/// never held anywhere; `pulled` counts the bytes read from it.
pub(super) struct Endless {
    head: Vec<u8>,
    fill: u8,
    len: u64,
    pub pulled: u64,
}

impl Endless {
    pub fn new(head: &str, fill: u8, len: u64) -> Endless {
        Endless {
            head: head.as_bytes().to_vec(),
            fill,
            len,
            pulled: 0,
        }
    }
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.pulled as usize;
        let n = if at < self.head.len() {
            let n = buf.len().min(self.head.len() - at);
            buf[..n].copy_from_slice(&self.head[at..at + n]);
            n
        } else {
            let left = self.len.saturating_sub(self.pulled);
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            buf[..n].fill(self.fill);
            n
        };
        self.pulled += n as u64;
        Ok(n)
    }
}

/// The limit the tests read with, in place of [`MAX_LINE`].
const LIMIT: u64 = 1 << 20;

fn header_line() -> String {
    serde_json::to_string(&header()).unwrap() + "\n"
}

/// The line and the message of a broken archive, whatever a good one returns.
fn problem<T: std::fmt::Debug>(result: Result<T, ArchiveError>) -> (Option<u64>, String) {
    match result {
        Err(e @ ArchiveError::Broken { line, .. }) => (line, e.to_string()),
        other => panic!("expected a broken archive, got {other:?}"),
    }
}

#[test]
fn a_line_longer_than_the_limit_is_refused_by_its_number_unread() {
    // The header, then one line of a terabyte.
    let head = header_line();
    let mut input = BufReader::new(Endless::new(&head, b'x', 1 << 40));
    let (line, e) = problem(walk(&mut input, LIMIT));
    assert_eq!(line, Some(2), "{e}");
    // Which line, the limit, and how to raise it.
    assert!(
        e.contains(
            "line 2: it is longer than 1 MiB (1048576 bytes), the longest this reader takes (it \
             was not read further)"
        ) && e.contains("read it with a higher --max-line SIZE (e.g. --max-line 4GiB)")
            && e.contains("the default, 1025 MiB"),
        "{e}"
    );
    // The limit and one byte more were read, and one buffer ahead: no more.
    let pulled = input.get_ref().pulled;
    assert!(pulled <= head.len() as u64 + LIMIT + 1 + 8192, "{pulled}");
}

#[test]
fn a_zstd_bomb_is_refused_at_the_limit_plain_or_encrypted() {
    // 256 MiB of one line, compressed as it streams: a file of a few kilobytes.
    let head = header_line();
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    let mut line = Endless::new(&head, b'x', head.len() as u64 + (256 << 20));
    io::copy(&mut line, &mut encoder).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let files = Files::new();
    let path = files.put("bomb.jsonl.zst", &bomb);
    let (line, e) = problem(check_each(&path, None, LIMIT, &mut |_| Ok(())));
    assert_eq!(line, Some(2), "{e}");
    assert!(e.contains("longer than 1 MiB (1048576 bytes)"), "{e}");
    let key = age::x25519::Identity::generate();
    let path = files.put("bomb.jsonl.zst.age", &seal_bytes(&bomb, &key));
    let id = identity_file(&files, &key);
    let (line, e) = problem(check_each(&path, Some(&id), LIMIT, &mut |_| Ok(())));
    assert_eq!(line, Some(2), "{e}");
    assert!(e.contains("longer than 1 MiB (1048576 bytes)"), "{e}");
}

#[test]
fn an_entry_over_many_lines_is_parsed_twice_not_once_a_line() {
    // A stored JSON text with 50,000 line breaks: its entry spans 50,001 lines.
    let after = format!("[1{}]", ",\n1".repeat(50_000));
    let (line, hash) = chained_first(&entry(1, &after));
    let text = one_entry(&line, &hash);
    let (entries, parsed) = walk(text.as_bytes(), MAX_LINE).unwrap();
    assert_eq!(entries, 1);
    // The header and the trailer once each; the entry's first line, then
    // the whole entry, once it was read on until its JSON value closed.
    let first = line.find('\n').unwrap() + 1;
    let expected =
        header_line().len() + first + line.len() + 1 + text.lines().last().unwrap().len() + 1;
    assert_eq!(parsed, expected as u64);
    let checked = Files::new().check(&compress(&text)).unwrap();
    assert_eq!(checked.entries, 1);
}

/// The longest entry for its stored size: every JSON column a text that
/// needs `exact` and whose escaping doubles it.
fn worst(len: usize) -> StoredEntry {
    let mut e = entry(1, "");
    let text = format!("{}1", "\n".repeat(len));
    for column in e.json.iter_mut() {
        *column = Some(text.clone());
    }
    e
}

#[test]
fn the_default_limit_is_above_the_longest_entry_pgtrail_stores() {
    // Every member as long as it can be, as pgtrail stores an entry: its
    // JSON texts compact (no `exact`), PostgreSQL names of 63 bytes that
    // each escape to six, a source name of 63, a run's `prev`.
    let mut e = entry(1, "{}");
    e.id = i64::MIN;
    e.xid = Some(i64::MIN);
    e.lsn = Some("FFFFFFFF/FFFFFFFF".into());
    e.schema = "\u{1}".repeat(63);
    e.table = "\u{1}".repeat(63);
    e.action = "TRUNCATE".into();
    e.source = "s".repeat(63);
    e.json[5] = Some("{\"partition\":1}".into());
    let stored: usize = e.json.iter().flatten().map(String::len).sum();
    let (line, _) = chained_first(&e);
    assert!(!line.contains("\"exact\""), "{line}");
    // Beside the stored texts, under 2 KiB: the store sends no row of 1 GiB
    // or more, so pgtrail archives none whose line passes the default.
    let rest = (line.len() - stored) as u64;
    assert!(rest < 2048, "{rest}");
    assert!((1 << 30) + rest < MAX_LINE);
}

#[test]
fn the_longest_line_pgtrail_could_write_is_bounded_and_read_at_its_size() {
    let e = worst(1000);
    let stored: usize = e.json.iter().flatten().map(String::len).sum();
    let (line, hash) = chained_first(&e);
    // Three times the stored texts, and under a kilobyte of the rest: as
    // the longest line pgtrail can write is reckoned, under the limit.
    let rest = LONGEST_WRITTEN - 3 * (1 << 30);
    assert!(line.len() > 3 * stored, "{}", line.len());
    assert!(
        (line.len() as u64) < 3 * stored as u64 + rest,
        "{}",
        line.len()
    );
    // The reader takes the entry at exactly its size, and refuses it a byte short.
    let text = one_entry(&line, &hash);
    let record = line.len() as u64 + 1;
    assert_eq!(walk(text.as_bytes(), record).unwrap().0, 1);
    let (at, e) = problem(walk(text.as_bytes(), record - 1));
    assert_eq!(at, Some(2), "{e}");
    assert!(
        e.contains("line 2: its entry goes on over the next lines and passes")
            && e.contains("on line 6002, the longest this reader takes"),
        "{e}"
    );
}

#[test]
fn a_zstd_window_larger_than_pgtrail_reads_is_refused() {
    let compress_with = |window_log: u32| {
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(window_log).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.write_all(text(3, None).as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let files = Files::new();
    let (line, e) = broken(files.check(&compress_with(28)));
    assert_eq!(line, None, "{e}");
    assert!(
        e.contains("needs a window of more than 128 MiB to decompress"),
        "{e}"
    );
    // `zstd --long` (a window of 128 MiB) still reads.
    assert_eq!(files.check(&compress_with(27)).unwrap().entries, 3);
}

#[test]
fn an_age_header_longer_than_pgtrail_writes_is_refused() {
    let files = Files::new();
    let key = age::x25519::Identity::generate();
    let id = identity_file(&files, &key);
    let mac = format!("--- {}\n", "A".repeat(43));
    // More stanzas (of two lines) than pgtrail writes lines, or one stanza too long.
    for stanzas in [
        "-> a\n\n".repeat(MAX_AGE_LINES),
        format!("-> a {}\n\n", "b".repeat(MAX_AGE_HEADER as usize)),
    ] {
        let file = format!("age-encryption.org/v1\n{stanzas}{mac}");
        let path = files.put("h.jsonl.zst.age", file.as_bytes());
        let (_, e) = problem(check(&path, Some(&id), MAX_LINE));
        assert!(
            e.contains("its age header is longer than 128 KiB or 2016 lines"),
            "{e}"
        );
    }
    // pgtrail's own header for the most recipients it takes is read whole.
    let keys: Vec<_> = (0..MAX_RECIPIENTS)
        .map(|_| age::x25519::Identity::generate())
        .collect();
    let public: Vec<String> = keys.iter().map(|k| k.to_public().to_string()).collect();
    let mut sealed = Sealed::encrypted(&Recipients::parse(&public).unwrap(), Vec::new()).unwrap();
    sealed.write_all(&compress(&text(2, None))).unwrap();
    let path = files.put("many.jsonl.zst.age", &sealed.finish().unwrap());
    let last = identity_file(&files, &keys[MAX_RECIPIENTS - 1]);
    assert_eq!(check(&path, Some(&last), MAX_LINE).unwrap().entries, 2);
}
