//! Reading an archive back: decrypt (with an age identity), decompress and
//! check it line by line, streaming, so memory stays flat whatever its size.
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

use super::format::{EntryLine, Header, Linked, Trailer};
use super::hashing::HashingReader;
use super::runs::{hex_hash, Run, Runs, Sequence};
use super::{ArchiveError, FORMAT_VERSION};
use crate::store::chain::link;
use crate::text::hex;

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
    #[serde(skip)]
    pub sequence: [u8; 32],
}

const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Reads and checks the archive at `path`, decrypting it with the age
/// identities in the file `identity` when it is encrypted.
pub fn check(path: &Path, identity: Option<&Path>) -> Result<Checked, ArchiveError> {
    check_each(path, identity, &mut |_| Ok(()))
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
            return Err(broken(
                path,
                None,
                "it is not a pgtrail archive: it is neither zstd-compressed nor age-encrypted"
                    .into(),
            ));
        }
        let plain: Box<dyn Read + '_> = if encrypted {
            Box::new(decrypt(raw, path, identity)?)
        } else {
            Box::new(raw)
        };
        let decoder = zstd::Decoder::new(plain).map_err(|e| damaged(path, 0, &e))?;
        (
            Walk::new(path, each).read(BufReader::new(decoder))?,
            encrypted,
        )
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
    walk.finish(hasher.finalize().into(), bytes, encrypted)
}

fn decrypt<'r, R: Read + 'r>(
    raw: R,
    path: &Path,
    identity: Option<&Path>,
) -> Result<age::stream::StreamReader<R>, ArchiveError> {
    let sealed = |path: &Path, problem: String| ArchiveError::Sealed {
        path: path.to_owned(),
        problem,
    };
    let Some(id_file) = identity else {
        return Err(sealed(
            path,
            "it is encrypted with age: give the identity file (the secret key, from age-keygen) \
             of one of its recipients with --identity FILE"
                .into(),
        ));
    };
    let identities = age::IdentityFile::from_file(id_file.to_string_lossy().into_owned())
        .map_err(|e| sealed(id_file, format!("cannot read this age identity file: {e}")))?
        .into_identities()
        .map_err(|e| sealed(id_file, format!("cannot use this age identity file: {e}")))?;
    if identities.is_empty() {
        return Err(sealed(
            id_file,
            "it holds no age identity (AGE-SECRET-KEY-1…)".into(),
        ));
    }
    let decryptor = age::Decryptor::new(raw)
        .map_err(|e| broken(path, None, format!("its age header is damaged: {e}")))?;
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => sealed(
                path,
                format!(
                    "no identity in {} decrypts it: it was encrypted to other recipients",
                    id_file.display()
                ),
            ),
            e => broken(path, None, format!("it cannot be decrypted: {e}")),
        })
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
    broken(
        path,
        None,
        format!(
            "it cannot be read after line {after_line} ({e}): the file is truncated or damaged"
        ),
    )
}

/// The check's state, line by line.
struct Walk<'p> {
    path: &'p Path,
    /// Where each entry that checked out goes.
    each: &'p mut dyn FnMut(Seen<'_>) -> Result<(), String>,
    /// The last line read (1 is the header).
    line: u64,
    header: Option<Header>,
    trailer: Option<(u64, Trailer)>,
    entries: u64,
    unchained: u64,
    runs: Runs,
    sequence: Sequence,
    /// The last entry's id and line.
    last: Option<(i64, u64)>,
}

impl<'p> Walk<'p> {
    fn new(path: &'p Path, each: &'p mut dyn FnMut(Seen<'_>) -> Result<(), String>) -> Walk<'p> {
        Walk {
            path,
            each,
            line: 0,
            header: None,
            trailer: None,
            entries: 0,
            unchained: 0,
            runs: Runs::default(),
            sequence: Sequence::default(),
            last: None,
        }
    }

    fn read(mut self, mut input: impl BufRead) -> Result<Self, ArchiveError> {
        let mut record = Vec::new();
        loop {
            record.clear();
            let start = self.line + 1;
            if self.read_line(&mut input, &mut record)? == 0 {
                return Ok(self);
            }
            // A stored JSON text may hold a line break between its tokens:
            // then its entry goes on over the next lines.
            loop {
                let text = std::str::from_utf8(&record)
                    .map_err(|e| broken(self.path, Some(start), format!("it is not UTF-8: {e}")))?;
                match self.record(start, text) {
                    Err(Unfinished) if record.ends_with(b"\n") => {
                        if self.read_line(&mut input, &mut record)? == 0 {
                            return Err(self.at(
                                start,
                                None,
                                "it ends in the middle of an entry: the file is truncated".into(),
                            ));
                        }
                    }
                    Err(Unfinished) => {
                        return Err(self.at(
                            start,
                            None,
                            "it ends in the middle of an entry: the file is truncated".into(),
                        ));
                    }
                    Ok(done) => {
                        done?;
                        break;
                    }
                }
            }
        }
    }

    fn read_line(
        &mut self,
        input: &mut impl BufRead,
        into: &mut Vec<u8>,
    ) -> Result<usize, ArchiveError> {
        let n = input
            .read_until(b'\n', into)
            .map_err(|e| damaged(self.path, self.line, &e))?;
        if n > 0 {
            self.line += 1;
        }
        Ok(n)
    }

    fn at(&self, line: u64, id: Option<i64>, problem: String) -> ArchiveError {
        ArchiveError::Broken {
            path: self.path.to_owned(),
            line: Some(line),
            id,
            problem,
        }
    }

    /// Checks one record (starting on line `line`); `Err(Unfinished)` when it needs more lines.
    fn record(&mut self, line: u64, text: &str) -> Result<Result<(), ArchiveError>, Unfinished> {
        if let Some((at, _)) = &self.trailer {
            return Ok(Err(self.at(
                line,
                None,
                format!("a line follows the trailer (line {at})"),
            )));
        }
        let Some(header) = &self.header else {
            return Ok(self.header(line, text));
        };
        let from_to = (header.from, header.to);
        let entry_error = match serde_json::from_str::<EntryLine>(text) {
            Ok(entry) => {
                return Ok(match entry.linked() {
                    Ok(linked) => {
                        let (id, digest, hash) = (linked.id, linked.digest, linked.hash);
                        self.entry(line, linked, from_to).and_then(|()| {
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
                })
            }
            Err(e) if e.is_eof() => return Err(Unfinished),
            Err(e) => e,
        };
        Ok(match serde_json::from_str::<Trailer>(text) {
            Ok(trailer) if trailer.end => {
                self.trailer = Some((line, trailer));
                Ok(())
            }
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
        if let Some((last, last_line)) = self.last {
            if e.id <= last {
                return Err(fail(format!(
                    "its id is not after that of entry {last} on line {last_line}: lines were reordered or repeated"
                )));
            }
        }
        if e.committed_at < from || e.committed_at >= to {
            return Err(fail(format!(
                "it was committed at {}, outside the archive's range [{from}, {to})",
                e.committed_at.to_rfc3339()
            )));
        }
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
            (Some(hash), Some(prev), _) => {
                if link(&prev, &e.digest) != hash {
                    return Err(fail(format!(
                        "its content does not match its hash following its prev {}: the line was changed",
                        hex(&prev)
                    )));
                }
                self.runs.start(e.id, prev, hash);
            }
            (Some(hash), None, Some(last)) => {
                if link(last, &e.digest) != hash {
                    let (last_id, last_line) = self.last.unwrap_or_default();
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
        Ok(Checked {
            path: path.to_owned(),
            header,
            entries: self.entries,
            unchained: self.unchained,
            runs: self.runs.finish(),
            sha256,
            bytes,
            encrypted,
            sequence: self.sequence.finish(),
        })
    }
}

/// A record that goes on over the next line.
struct Unfinished;
