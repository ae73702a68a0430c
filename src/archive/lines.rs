//! An archive's text read line by line, bounded, for the reader
//! ([`super::read`]): the file is hostile until checked, so a line longer
//! than any pgtrail writes ([`MAX_LINE`], unless `--max-line` raises it) is
//! refused at the limit, never read whole (a file of a few bytes of zstd can
//! hold gigabytes of one line), the buffer it is read into never grows past
//! the limit, and an entry that goes on over many lines is read in time
//! linear in its size.
//!
//! A record is one JSON value: usually one line, but a stored JSON text may
//! hold a line break between its tokens, and then its entry's line goes on
//! over the next lines. Where the first line is not a whole value, the rest
//! is read by [`Lines::read_value`], which scans each byte once; re-parsing
//! the lines gathered so far at each new line would take time quadratic in
//! the number of lines.

use std::io::{self, BufRead, BufReader, Read};

use serde::de::{Deserialize, IgnoredAny};

/// The longest record (a line, or an entry over several lines, with its
/// line breaks) a reader accepts unless told otherwise (`--max-line`), in
/// bytes: 1 GiB and 1 MiB.
///
/// No line pgtrail writes comes near it. The writer reads each entry from
/// the store in one message of PostgreSQL's, which is less than 1 GiB (its
/// `MaxAllocSize`: a larger row cannot be sent to a client at all, so an
/// entry whose stored texts total more cannot be archived, whatever each
/// column allows). The line holds those texts once, as they are, and the
/// other members take under 2 KiB (member names, the hashes in hex,
/// schema and table: PostgreSQL names of at most 63 bytes, at most six
/// times as long escaped). Only `exact` could hold a text twice, for a
/// stored text with white space around it or the JSON text `null`: pgtrail
/// stores none, every JSON text it stores is one it wrote itself, compact
/// ([`LONGEST_WRITTEN`] is the bound even with them). The MiB is room to spare.
pub const MAX_LINE: u64 = (1 << 30) + (1 << 20);

/// The longest line pgtrail could write even with `exact` texts: each
/// stored JSON text once raw and once escaped (at most twice as long:
/// escaping doubles `"`, `\` and white space, and a valid JSON text holds no
/// other control character), three times PostgreSQL's 1 GiB, and a kilobyte
/// for the other members. Retention reads back the file it has just written
/// with this limit ([`super::read_back`]).
pub const LONGEST_WRITTEN: u64 = 3 * (1 << 30) + 1024;
const _: () = assert!(MAX_LINE < LONGEST_WRITTEN);

/// Why the next record could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The record that starts on line `first` passed `limit` bytes on line
    /// `at` (the same line for a record of one line); the rest was not read.
    TooLong { first: u64, at: u64, limit: u64 },
    /// The text ends inside a JSON value.
    Truncated,
    /// The stream below (zstd, age, the file) failed.
    Read(io::Error),
}

/// The lines of a text, with their numbers, each record at most `limit` bytes.
pub struct Lines<R> {
    input: R,
    limit: u64,
    /// Lines read so far.
    line: u64,
    /// Bytes [`Lines::read_value`] scanned, over all records.
    scanned: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(input: R, limit: u64) -> Lines<R> {
        Lines {
            input,
            limit,
            line: 0,
            scanned: 0,
        }
    }

    /// The number of the last line read (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Bytes scanned for records over several lines, so far.
    #[cfg(test)]
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Appends the next line, with its line break, to `record` (the record
    /// that starts on line `first`: empty when the line starts one); `false`
    /// at the end of the text. Once the record passes the limit, the rest of
    /// the line is left unread.
    ///
    /// `record` grows as a vector does, doubling, but never past the limit
    /// and one byte: what a record can make the reader hold is the limit,
    /// not twice it.
    pub fn read_line(&mut self, record: &mut Vec<u8>, first: u64) -> Result<bool, LineError> {
        // One byte past the limit tells a record at the limit from one over it.
        let most = usize::try_from(self.limit.saturating_add(1)).unwrap_or(usize::MAX);
        let mut read = 0;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Read(e)),
            };
            let room = most.saturating_sub(record.len());
            let (chunk, ends) = match available.iter().position(|&b| b == b'\n') {
                Some(at) if at < room => (&available[..=at], true),
                _ => (&available[..available.len().min(room)], false),
            };
            let n = chunk.len();
            grow(record, n, most);
            record.extend_from_slice(chunk);
            self.input.consume(n);
            read += n;
            if ends || n == 0 || record.len() >= most {
                break;
            }
        }
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        if record.len() as u64 > self.limit {
            return Err(LineError::TooLong {
                first,
                at: self.line,
                limit: self.limit,
            });
        }
        Ok(true)
    }

    /// Reads on, a whole line at a time, until `record` (the lines read so
    /// far of the record that starts on line `first`) holds a whole JSON
    /// value, or text that cannot begin one (the caller's parse then says
    /// what is wrong with it). Each byte is scanned once: serde_json
    /// validates the value as a stream, asking for the next line only when
    /// the value goes on past the lines it has.
    pub fn read_value(&mut self, record: &mut Vec<u8>, first: u64) -> Result<(), LineError> {
        let mut feed = Feed {
            lines: self,
            record,
            first,
            served: 0,
            failed: None,
        };
        let scan = IgnoredAny::deserialize(&mut serde_json::Deserializer::from_reader(
            BufReader::new(&mut feed),
        ));
        let (served, failed) = (feed.served, feed.failed);
        self.scanned += served as u64;
        match (failed, scan) {
            (Some(e), _) => Err(e),
            (None, Err(e)) if e.is_eof() => Err(LineError::Truncated),
            (None, _) => Ok(()),
        }
    }
}

/// Makes room in `record` for `n` more bytes: doubling its capacity, as a
/// vector grows, but to at most `most` bytes (the caller never needs more).
fn grow(record: &mut Vec<u8>, n: usize, most: usize) {
    let need = record.len() + n;
    if need <= record.capacity() {
        return;
    }
    let doubled = record.capacity().saturating_mul(2).max(8192);
    let target = doubled.min(most).max(need);
    record.reserve_exact(target - record.len());
}

/// The bytes of a record, served once each, read one more line at a time
/// when all were served.
struct Feed<'a, R> {
    lines: &'a mut Lines<R>,
    record: &'a mut Vec<u8>,
    first: u64,
    /// How much of `record` was served.
    served: usize,
    /// Why the next line could not be read (the scanner only sees that it failed).
    failed: Option<LineError>,
}

impl<R: BufRead> Read for Feed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served == self.record.len() {
            match self.lines.read_line(self.record, self.first) {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.failed = Some(e);
                    return Err(io::Error::other("the record cannot be read on"));
                }
            }
        }
        let rest = &self.record[self.served..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.served += n;
        Ok(n)
    }
}

/// `bytes` in the largest binary unit that divides it: `4 GiB`, `1536 KiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::hostile_tests::Endless;

    const LIMIT: u64 = 1 << 20;

    #[test]
    fn a_line_past_the_limit_is_refused_without_reading_it_whole() {
        // A line of a terabyte after a short first one.
        let mut input = BufReader::new(Endless::new("{\"a\":1}\n", b'x', 1 << 40));
        let mut lines = Lines::new(&mut input, LIMIT);
        let mut record = Vec::new();
        assert!(lines.read_line(&mut record, 1).unwrap());
        record.clear();
        match lines.read_line(&mut record, 2) {
            Err(LineError::TooLong { first, at, limit }) => {
                assert_eq!((first, at, limit), (2, 2, LIMIT))
            }
            other => panic!("expected too long, got {other:?}"),
        }
        // One byte past the limit was taken into the record, and no more
        // than one buffer's worth was pulled from the input.
        assert_eq!(record.len() as u64, LIMIT + 1);
        // Grown by doubling, but to no more than that.
        assert_eq!(record.capacity() as u64, LIMIT + 1);
        let pulled = input.get_ref().pulled;
        assert!(pulled <= 8 + LIMIT + 1 + 8192, "{pulled}");
    }

    #[test]
    fn a_record_of_exactly_the_limit_is_read() {
        let body = LIMIT - 1;
        let mut input = BufReader::new(Endless::new("", b' ', body));
        let mut lines = Lines::new(io::Read::chain(&mut input, &b"\n"[..]), LIMIT);
        let mut record = Vec::new();
        assert!(lines.read_line(&mut record, 1).unwrap());
        assert_eq!(record.len() as u64, LIMIT);
        assert!(
            record.capacity() as u64 <= LIMIT + 1,
            "{}",
            record.capacity()
        );
        assert!(!lines.read_line(&mut Vec::new(), 2).unwrap());
    }

    #[test]
    fn a_value_over_many_lines_is_scanned_once() {
        // A value that opens on line 1, goes on over 20,000 lines and closes.
        let breaks = 20_000;
        let text = format!("{{\"v\":[1{}]}}\n{{\"next\":2}}\n", ",\n2".repeat(breaks));
        let mut lines = Lines::new(text.as_bytes(), LIMIT);
        let mut record = Vec::new();
        assert!(lines.read_line(&mut record, 1).unwrap());
        lines.read_value(&mut record, 1).unwrap();
        assert_eq!(lines.line(), breaks as u64 + 1);
        let first = text.find("\n{\"next\"").unwrap() + 1;
        assert_eq!(record, &text.as_bytes()[..first]);
        // Each byte of the record scanned once, not once per line after it.
        assert_eq!(lines.scanned(), first as u64);
        // The next record is untouched.
        let mut next = Vec::new();
        assert!(lines.read_line(&mut next, breaks as u64 + 2).unwrap());
        assert_eq!(next, b"{\"next\":2}\n");
    }

    #[test]
    fn a_value_over_many_lines_is_bounded_too() {
        // An open array, then blank lines for ever: passes the limit on a later line.
        let mut input = BufReader::new(Endless::new("{\"v\":[\n", b'\n', 1 << 40));
        let mut lines = Lines::new(&mut input, 4096);
        let mut record = Vec::new();
        assert!(lines.read_line(&mut record, 1).unwrap());
        match lines.read_value(&mut record, 1) {
            Err(LineError::TooLong { first, at, limit }) => {
                // 7 bytes on line 1, then one per line: the 4,097th byte is on line 4,091.
                assert_eq!((first, at, limit), (1, 4091, 4096))
            }
            other => panic!("expected too long, got {other:?}"),
        }
        assert!(input.get_ref().pulled <= 4097 + 8192);
    }

    #[test]
    fn a_value_cut_short_is_truncated_and_a_bad_one_is_left_to_the_parse() {
        let mut record = Vec::new();
        let mut lines = Lines::new(&b"{\"v\":[1,\n2,\n"[..], LIMIT);
        lines.read_line(&mut record, 1).unwrap();
        assert!(matches!(
            lines.read_value(&mut record, 1),
            Err(LineError::Truncated)
        ));
        // Not JSON: the scan stops where it goes wrong, without reading on.
        let mut record = Vec::new();
        let mut lines = Lines::new(&b"{\"v\": x\n{}\n"[..], LIMIT);
        lines.read_line(&mut record, 1).unwrap();
        lines.read_value(&mut record, 1).unwrap();
        assert_eq!((record.as_slice(), lines.line()), (&b"{\"v\": x\n"[..], 1));
    }

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(size(MAX_LINE), "1025 MiB");
        assert_eq!(size(4 << 30), "4 GiB");
        assert_eq!(size(3 << 19), "1536 KiB");
        assert_eq!(size(100), "100 bytes");
    }
}
