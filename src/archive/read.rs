//! Reading an archive back: decrypt (with an age identity), decompress and
//! check it line by line, streaming, so memory stays flat whatever its size.
//! The file is hostile until checked: what it can make the reader hold is
//! bounded (a record, `max_line`: [`MAX_LINE`] unless the caller raises it;
//! zstd's window and age's header, [`super::layers`]), and nothing is
//! written to disk.
//!
//! The check is on the file alone: the header, every entry's hash
//! recomputed from its content, every link inside each run, ids in order,
//! commit times inside the header's range, and the trailer's count and last
//! hash. The first problem ends the check, named by its line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::format::{name_problem, not_as_written, EntryLine, Header, Linked, Trailer};
use super::hashing::HashingReader;
use super::layers::{decompress, decrypt, not_zstd, window_problem};
use super::lines::{size, LineError, Lines, MAX_LINE};
use super::runs::{hex_hash, Run, Runs, Sequence};
use super::{ArchiveError, FORMAT_VERSION};
use crate::store::chain::{link, GENESIS};
use crate::text::{clip, hex};

/// An archive that checked out.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub path: PathBuf,
    pub header: Header,
    pub entries: u64,
    /// Entries stored before the chain began (no hash): not covered by it.
    pub unchained: u64,
    pub runs: Vec<Run>,
    /// SHA-256 of the file's bytes (the ciphertext when encrypted).
    #[serde(serialize_with = "hex_hash")]
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub encrypted: bool,
    /// The trailer's SHA-256 of the text before it (header and entry
    /// lines): the same for the same content however it is compressed or
    /// encrypted.
    #[serde(serialize_with = "hex_hash")]
    pub lines_sha256: [u8; 32],
    #[serde(skip)]
    pub sequence: [u8; 32],
}

impl Checked {
    /// The file holds entries and none has a hash (all were stored before
    /// the chain began): it is well formed, but nothing in it can be verified.
    pub fn unverifiable(&self) -> bool {
        self.entries > 0 && self.unchained == self.entries
    }
}

const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Reads and checks the archive at `path`, decrypting it with the age
/// identities in the file `identity` when it is encrypted, refusing a
/// record longer than `max_line` bytes ([`MAX_LINE`] unless an operator
/// raised it).
pub fn check(path: &Path, identity: Option<&Path>, max_line: u64) -> Result<Checked, ArchiveError> {
    check_each(path, identity, max_line, &mut |_| Ok(()))
}

/// One entry line that checked out, as [`check_each`] hands it on.
pub(crate) struct Seen<'a> {
    /// The line's JSON text (more than one line of the file where a stored
    /// JSON text holds a line break).
    pub text: &'a str,
    pub id: i64,
    pub digest: [u8; 32],
    pub hash: Option<[u8; 32]>,
}

/// [`check`], handing each entry to `each` once it checked out, in file
/// order; an error from `each` ends the check, reported at that entry.
pub(crate) fn check_each(
    path: &Path,
    identity: Option<&Path>,
    max_line: u64,
    each: &mut dyn FnMut(Seen<'_>) -> Result<(), String>,
) -> Result<Checked, ArchiveError> {
    let mut file = File::open(path).map_err(|source| ArchiveError::Io {
        what: "cannot open the archive",
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let (walk, encrypted) = {
        let mut raw = BufReader::new(HashingReader {
            inner: &mut file,
            hasher: &mut hasher,
        });
        let start = raw.fill_buf().map_err(|e| damaged(path, 0, &e))?;
        let encrypted = start.starts_with(AGE_MAGIC);
        if !encrypted && !start.starts_with(ZSTD_MAGIC) {
            return Err(broken(path, None, not_zstd(start, false)));
        }
        let plain: Box<dyn Read + '_> = if encrypted {
            Box::new(decrypt(raw, path, identity)?)
        } else {
            Box::new(raw)
        };
        let mut plain = BufReader::new(plain);
        let start = plain.fill_buf().map_err(|e| damaged(path, 0, &e))?;
        if !start.starts_with(ZSTD_MAGIC) {
            return Err(broken(path, None, not_zstd(start, true)));
        }
        let decoder = decompress(plain).map_err(|e| damaged(path, 0, &e))?;
        let mut text = BufReader::new(decoder);
        let walk = Walk::new(path, max_line, each).read(&mut text)?;
        // Reading to the end also authenticates age's last chunk.
        let mut after = text.into_inner().finish();
        let left = after.fill_buf().map_err(|e| damaged(path, walk.line, &e))?;
        if !left.is_empty() {
            return Err(broken(
                path,
                None,
                "more follows its zstd frame (another frame, a skippable frame or other bytes): \
                 pgtrail writes one frame and nothing after it, so the file was added to"
                    .into(),
            ));
        }
        (walk, encrypted)
    };
    // What the readers above left unread (nothing, in a whole file) is hashed too.
    let rest = std::io::copy(
        &mut HashingReader {
            inner: &mut file,
            hasher: &mut hasher,
        },
        &mut std::io::sink(),
    )
    .map_err(|e| damaged(path, walk.line, &e))?;
    if rest > 0 {
        return Err(broken(
            path,
            None,
            format!("{rest} bytes follow the end of its compressed stream"),
        ));
    }
    let bytes = file.metadata().map(|m| m.len()).unwrap_or_default();
    let checked = walk.finish(hasher.finalize().into(), bytes, encrypted)?;
    let name = path.file_name().map(|n| n.to_string_lossy());
    match name.and_then(|n| name_problem(&n, &checked.header)) {
        Some(problem) => Err(broken(path, None, problem)),
        None => Ok(checked),
    }
}

fn broken(path: &Path, line: Option<u64>, problem: String) -> ArchiveError {
    ArchiveError::Broken {
        path: path.to_owned(),
        line,
        id: None,
        problem,
    }
}

/// Reading failed (zstd or age found the stream damaged, or it ends early).
fn damaged(path: &Path, after_line: u64, e: &std::io::Error) -> ArchiveError {
    let problem = window_problem(e).unwrap_or_else(|| {
        format!("it cannot be read after line {after_line} ({e}): the file is truncated or damaged")
    });
    broken(path, None, problem)
}

/// The check's state, line by line.
struct Walk<'p> {
    path: &'p Path,
    /// The longest record read (`max_line`).
    limit: u64,
    /// The last line read (1 is the header).
    line: u64,
    header: Option<Header>,
    trailer: Option<(u64, Trailer)>,
    entries: u64,
    unchained: u64,
    runs: Runs,
    sequence: Sequence,
    /// SHA-256 of every line before the trailer, as read.
    lines: Sha256,
    /// The last entry's id and line.
    last: Option<(i64, u64)>,
    /// Where each entry that checked out goes.
    each: &'p mut dyn FnMut(Seen<'_>) -> Result<(), String>,
    /// Bytes handed to [`Walk::record`], over all records.
    #[cfg(test)]
    parsed: u64,
}

impl<'p> Walk<'p> {
    fn new(
        path: &'p Path,
        limit: u64,
        each: &'p mut dyn FnMut(Seen<'_>) -> Result<(), String>,
    ) -> Walk<'p> {
        Walk {
            path,
            limit,
            each,
            line: 0,
            header: None,
            trailer: None,
            entries: 0,
            unchained: 0,
            runs: Runs::default(),
            sequence: Sequence::default(),
            lines: Sha256::new(),
            last: None,
            #[cfg(test)]
            parsed: 0,
        }
    }

    fn read(mut self, input: impl BufRead) -> Result<Self, ArchiveError> {
        let mut input = Lines::new(input, self.limit);
        let mut record = Vec::new();
        loop {
            record.clear();
            let start = self.line + 1;
            let read = input.read_line(&mut record, start);
            self.line = input.line();
            if !read.map_err(|e| self.unread(start, e))? {
                return Ok(self);
            }
            let mut whole = false;
            loop {
                let text = std::str::from_utf8(&record)
                    .map_err(|e| broken(self.path, Some(start), format!("it is not UTF-8: {e}")))?;
                #[cfg(test)]
                {
                    self.parsed += text.len() as u64;
                }
                match self.record(start, text) {
                    Ok(done) => {
                        done?;
                        break;
                    }
                    // A stored JSON text may hold a line break between its
                    // tokens: then its entry goes on over the next lines,
                    // read on until its JSON value is whole, then parsed once.
                    Err(Unfinished) if !whole => {
                        let read = input.read_value(&mut record, start);
                        self.line = input.line();
                        read.map_err(|e| self.unread(start, e))?;
                        whole = true;
                    }
                    Err(Unfinished) => return Err(self.unread(start, LineError::Truncated)),
                }
            }
            if !record.ends_with(b"\n") {
                return Err(self.at(
                    start,
                    None,
                    "no line break follows it, and pgtrail ends every line with one: the file \
                     was cut or changed"
                        .into(),
                ));
            }
        }
    }

    /// Why the record that starts on line `start` could not be read.
    fn unread(&self, start: u64, e: LineError) -> ArchiveError {
        match e {
            LineError::TooLong { first, at, limit } => {
                let limit = match size(limit) {
                    bytes if bytes.ends_with("bytes") => bytes,
                    unit => format!("{unit} ({limit} bytes)"),
                };
                let what = match at == first {
                    true => format!("it is longer than {limit}"),
                    false => format!(
                        "its entry goes on over the next lines and passes {limit} on line {at}"
                    ),
                };
                self.at(
                    first,
                    None,
                    format!(
                        "{what}, the longest this reader takes (it was not read further). pgtrail \
                         writes no entry that long (the default, {}, is above the longest it can \
                         write), so the file was not written by pgtrail, or was changed; if it \
                         holds an entry that long indeed, read it with a higher --max-line SIZE \
                         (e.g. --max-line 4GiB), which lets it take that much memory",
                        size(MAX_LINE)
                    ),
                )
            }
            LineError::Truncated => self.at(
                start,
                None,
                "it ends in the middle of an entry: the file is truncated".into(),
            ),
            LineError::Read(e) => damaged(self.path, self.line, &e),
        }
    }

    fn at(&self, line: u64, id: Option<i64>, problem: String) -> ArchiveError {
        ArchiveError::Broken {
            path: self.path.to_owned(),
            line: Some(line),
            id,
            problem,
        }
    }

    /// Checks one record (starting on line `line`, `record` with its line
    /// break); `Err(Unfinished)` when it needs more lines.
    fn record(&mut self, line: u64, record: &str) -> Result<Result<(), ArchiveError>, Unfinished> {
        let text = record.strip_suffix('\n').unwrap_or(record);
        if let Some((at, _)) = &self.trailer {
            return Ok(Err(self.at(
                line,
                None,
                format!("a line follows the trailer (line {at})"),
            )));
        }
        let Some(header) = &self.header else {
            let done = self.header(line, text);
            if done.is_ok() {
                self.lines.update(record);
            }
            return Ok(done);
        };
        let range = (header.from, header.to);
        let entry_error = match serde_json::from_str::<EntryLine>(text) {
            Ok(entry) => {
                let done = match entry.linked(text) {
                    Ok(_) if entry.source != header.source => Err(self.at(
                        line,
                        Some(entry.id),
                        format!(
                            "its source {:?} is not the header's {:?}: the line or the header was changed",
                            clip(&entry.source),
                            header.source
                        ),
                    )),
                    Ok(linked) => {
                        let (id, digest, hash) = (linked.id, linked.digest, linked.hash);
                        self.entry(line, linked, range).and_then(|()| {
                            (self.each)(Seen {
                                text,
                                id,
                                digest,
                                hash,
                            })
                            .map_err(|problem| self.at(line, Some(id), problem))
                        })
                    }
                    Err(problem) => Err(self.at(line, Some(entry.id), problem)),
                };
                if done.is_ok() {
                    self.lines.update(record);
                }
                return Ok(done);
            }
            Err(e) if e.is_eof() => return Err(Unfinished),
            Err(e) => e,
        };
        Ok(match serde_json::from_str::<Trailer>(text) {
            // Hashes of another length are refused before the trailer is
            // written again to compare (or quoted whole).
            Ok(trailer) if trailer.end && !trailer_hashes(&trailer) => Err(self.at(
                line,
                None,
                "the trailer's last_hash and lines_sha256 are not 64 hex digits each, as pgtrail \
                 writes them: the line was changed"
                    .into(),
            )),
            Ok(trailer) if trailer.end => match serde_json::to_string(&trailer) {
                Ok(written) if written == text => {
                    self.trailer = Some((line, trailer));
                    Ok(())
                }
                Ok(written) => Err(self.at(line, None, not_as_written(text, &written))),
                Err(e) => Err(self.at(line, None, e.to_string())),
            },
            _ => Err(self.at(
                line,
                None,
                format!("it is neither an entry nor the trailer: {entry_error}"),
            )),
        })
    }

    fn header(&mut self, line: u64, text: &str) -> Result<(), ArchiveError> {
        let header: Header = serde_json::from_str(text).map_err(|e| {
            self.at(
                line,
                None,
                format!("it is not a pgtrail archive's header: {e}"),
            )
        })?;
        if header.pgtrail_archive != FORMAT_VERSION {
            return Err(self.at(
                line,
                None,
                format!(
                    "it is an archive of format {}; this pgtrail reads format {FORMAT_VERSION}: use a newer pgtrail",
                    header.pgtrail_archive
                ),
            ));
        }
        // Checked first: a header that holds what no header can (a source
        // name of a gigabyte) is refused before it is written again to compare.
        header
            .validate()
            .map_err(|problem| self.at(line, None, format!("its header: {problem}")))?;
        match serde_json::to_string(&header) {
            Ok(written) if written == text => {}
            Ok(written) => return Err(self.at(line, None, not_as_written(text, &written))),
            Err(e) => return Err(self.at(line, None, e.to_string())),
        }
        self.header = Some(header);
        Ok(())
    }

    fn entry(
        &mut self,
        line: u64,
        e: Linked,
        (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    ) -> Result<(), ArchiveError> {
        let path = self.path;
        let id = e.id;
        let fail = |problem: String| ArchiveError::Broken {
            path: path.to_owned(),
            line: Some(line),
            id: Some(id),
            problem,
        };
        let (last_id, last_line) = self.last.unwrap_or_default();
        if self.last.is_some() && e.id <= last_id {
            return Err(fail(format!(
                "its id is not after that of entry {last_id} on line {last_line}: lines were reordered or repeated"
            )));
        }
        if e.committed_at < from || e.committed_at >= to {
            return Err(fail(format!(
                "it was committed at {}, outside the archive's range [{from}, {to})",
                e.committed_at.to_rfc3339()
            )));
        }
        let follows = |last: &[u8; 32], hash: &[u8; 32]| link(last, &e.digest) == *hash;
        match (e.hash, e.prev, self.runs.last_hash()) {
            (None, Some(_), _) => return Err(fail("it has a \"prev\" but no hash".into())),
            (None, None, Some(_)) => {
                return Err(fail(
                    "it has no hash although the entry before it has one: it was added or changed".into(),
                ))
            }
            (None, None, None) => {
                self.unchained += 1;
                self.runs.end();
            }
            (Some(hash), Some(_), Some(last)) if follows(last, &hash) => {
                return Err(fail(format!(
                    "it has a \"prev\" although it follows entry {last_id} on line {last_line} in the \
                     chain: pgtrail writes one only where a run starts, so the line was changed"
                )))
            }
            (Some(_), Some(prev), _) if prev == GENESIS && self.entries > self.unchained => {
                return Err(fail(
                    "its \"prev\" is the chain's start, but entries before it in the file are \
                     chained already: a chain starts once, so the line was changed"
                        .into(),
                ))
            }
            (Some(hash), Some(prev), _) => {
                if !follows(&prev, &hash) {
                    return Err(fail(format!(
                        "its content does not match its hash following its prev {}: the line was changed",
                        hex(&prev)
                    )));
                }
                self.runs.start(e.id, prev, hash);
            }
            (Some(hash), None, Some(last)) => {
                if !follows(last, &hash) {
                    return Err(fail(format!(
                        "it does not follow entry {last_id} on line {last_line} in the chain: this line \
                         was changed, or lines between them were removed, or lines were reordered"
                    )));
                }
                self.runs.extend(e.id, hash);
            }
            (Some(_), None, None) => {
                return Err(fail(
                    "it has no \"prev\" and follows no entry in the file: the line before it was removed, or this one was changed".into(),
                ))
            }
        }
        self.sequence.push(e.id, e.hash.as_ref().map(|h| &h[..]));
        self.entries += 1;
        self.last = Some((e.id, line));
        Ok(())
    }

    fn finish(
        self,
        sha256: [u8; 32],
        bytes: u64,
        encrypted: bool,
    ) -> Result<Checked, ArchiveError> {
        let path = self.path;
        let Some(header) = self.header.clone() else {
            return Err(broken(path, None, "it is empty: it has no header".into()));
        };
        let Some((line, trailer)) = &self.trailer else {
            return Err(broken(
                path,
                None,
                format!(
                    "it ends after line {} without its trailer: the file is truncated",
                    self.line
                ),
            ));
        };
        if trailer.entries != self.entries {
            return Err(self.at(
                *line,
                None,
                format!(
                    "the trailer counts {} entries, the file holds {}: lines were removed or added",
                    trailer.entries, self.entries
                ),
            ));
        }
        let last_hash = self.runs.last_hash().map(|h| hex(h));
        if trailer.last_hash != last_hash {
            return Err(self.at(
                *line,
                None,
                format!(
                    "the trailer's last hash {:?} is not the last entry's {:?}",
                    trailer.last_hash, last_hash
                ),
            ));
        }
        let lines_sha256: [u8; 32] = self.lines.clone().finalize().into();
        if trailer.lines_sha256 != hex(&lines_sha256) {
            return Err(self.at(
                *line,
                None,
                format!(
                    "the trailer's lines_sha256 {:?} is not the SHA-256 of the lines before it ({}): \
                     the header, an entry's id or source, or an entry without a hash was changed",
                    trailer.lines_sha256,
                    hex(&lines_sha256)
                ),
            ));
        }
        Ok(Checked {
            path: path.to_owned(),
            header,
            entries: self.entries,
            unchained: self.unchained,
            runs: self.runs.finish(),
            sha256,
            bytes,
            encrypted,
            lines_sha256,
            sequence: self.sequence.finish(),
        })
    }
}

/// A record that goes on over the next line.
struct Unfinished;

/// The trailer's hashes are as long as pgtrail writes them.
fn trailer_hashes(trailer: &Trailer) -> bool {
    trailer.lines_sha256.len() == 64 && trailer.last_hash.as_ref().is_none_or(|h| h.len() == 64)
}

/// Walks `text` as [`check`] walks a file's decompressed text, with records
/// of at most `limit` bytes: the entries that checked out and the bytes
/// parsed, or the first problem.
#[cfg(test)]
pub(super) fn walk(text: impl BufRead, limit: u64) -> Result<(u64, u64), ArchiveError> {
    let mut each = |_: Seen<'_>| Ok(());
    let walk = Walk::new(Path::new("test.jsonl"), limit, &mut each).read(text)?;
    Ok((walk.entries, walk.parsed))
}
