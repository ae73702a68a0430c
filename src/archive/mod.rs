//! Archive files: every entry of one source in a time range, written to a
//! self-verifying file before retention drops the range from the store, and
//! read back to check it (`pgtrail verify --archive`).
//!
//! An archive is JSON Lines compressed with zstd (and encrypted with age when
//! `[export] age_recipients` is set): a header line, one line per entry in id
//! order (the JSON form of exports and the API, plus the entry's chain hash,
//! and the hash before it where a run of the chain starts), and a trailer
//! line with the count and the last hash, so a truncated file is told from a
//! whole one. Every chain hash can be recomputed from the file alone
//! ([`format`]); docs/archives.md describes the format for readers outside
//! pgtrail.
//!
//! What retention calls, in order: [`write`] (a snapshot of the range into a
//! new file; never overwrites one), [`read_back`] (the file as written, then
//! the store's range again: the same entries with the same hashes), and only
//! then drops the range. [`check`] reads a file alone, for `verify --archive`;
//! [`each_entry`] hands on each entry of a file that checks out, and
//! [`restore`] loads a file back into its dropped partition (`pgtrail restore`).
//! A file read is hostile until checked: a line longer than any pgtrail
//! writes ([`MAX_LINE`], or what the reader's caller allows), a zstd window
//! or an age header larger than it writes are refused before they are read
//! whole.

mod ahead;
mod compare;
mod entries;
mod format;
mod hashing;
#[cfg(test)]
mod hostile_tests;
mod layers;
mod lines;
mod read;
#[cfg(test)]
mod read_tests;
mod restore;
pub mod retention;
mod runs;
mod seams;
#[cfg(test)]
mod tamper_tests;
mod write;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use compare::{compare_with_store, read_back, ReadBack};
pub use entries::{each_entry, ArchivedEntry};
pub use format::Header;
pub use lines::MAX_LINE;
pub use read::{check, Checked};
pub use restore::{restore, RestoreError, Restored};
pub use runs::Run;
pub use write::write;

use crate::export::encrypt::Recipients;
use crate::store::sources::SourceId;

/// The version written in every header (`"pgtrail_archive":1`).
pub const FORMAT_VERSION: u32 = 1;

/// Which entries an archive holds: one source's, committed in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub source_id: SourceId,
    /// The source's name (`pgtrail` for source 0, pgtrail's own events): the
    /// file name starts with it.
    pub source_name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// How the file is sealed: as is, or encrypted with age to these recipients
/// (the export's recipients, `[export] age_recipients`).
#[derive(Debug, Clone)]
pub enum Sealing {
    Plain,
    Age(Recipients),
}

/// An archive written: where, its bytes' SHA-256, and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: PathBuf,
    #[serde(skip)]
    pub range: Range,
    /// SHA-256 of the file's bytes as stored (the ciphertext when encrypted).
    #[serde(serialize_with = "runs::hex_hash")]
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub entries: u64,
    /// Entries stored before the chain began (no hash).
    pub unchained: u64,
    pub runs: Vec<Run>,
    pub encrypted: bool,
    /// The trailer's SHA-256 of the lines before it (header and entries):
    /// the same for the same content however the file is compressed or
    /// encrypted, so an archive encrypted anew can still be matched to it.
    #[serde(serialize_with = "runs::hex_hash")]
    pub lines_sha256: [u8; 32],
    /// SHA-256 over the (id, hash) sequence: what [`compare_with_store`]
    /// computes from the store too.
    #[serde(skip)]
    pub sequence: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot archive this range: {0}")]
    Range(String),
    #[error("reading the audit store: {0}")]
    Store(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encrypting the archive: {0}")]
    Encrypt(String),
    /// The file's writer stopped (its own error is reported) or failed.
    #[error("the archive's writer stopped before the end{0}")]
    Writer(String),
    /// The store's own chain does not hold in the range: archiving it would
    /// write a file that cannot verify.
    #[error(
        "the store's chain of source {chain} is broken at entry {id}: {problem}; run `pgtrail verify` \
         to see every break, and keep this range until it is explained"
    )]
    StoreBroken {
        chain: String,
        id: i64,
        problem: String,
    },
    /// The file is encrypted and no identity was given, or it does not decrypt.
    #[error("{path}: {problem}")]
    Sealed { path: PathBuf, problem: String },
    /// The file is not a whole, intact archive.
    #[error("{}: {}{problem}", path.display(), where_text(*line, *id))]
    Broken {
        path: PathBuf,
        /// 1 is the header; `None` when the problem is not on one line.
        line: Option<u64>,
        id: Option<i64>,
        problem: String,
    },
    /// The file or the store disagrees with what was written.
    #[error("the archive {} does not match {against}: {problem}", path.display())]
    Mismatch {
        path: PathBuf,
        against: &'static str,
        problem: String,
    },
}

fn where_text(line: Option<u64>, id: Option<i64>) -> String {
    match (line, id) {
        (Some(l), Some(id)) => format!("line {l} (entry {id}): "),
        (Some(l), None) => format!("line {l}: "),
        (None, Some(id)) => format!("entry {id}: "),
        (None, None) => String::new(),
    }
}

impl From<tokio_postgres::Error> for ArchiveError {
    fn from(e: tokio_postgres::Error) -> Self {
        ArchiveError::Store(crate::pg::describe(&e))
    }
}

impl ArchiveError {
    /// The file is damaged or not an archive (rather than unreadable, or not
    /// decryptable with the identity given): `verify --archive` reports it
    /// as not intact.
    pub fn is_broken(&self) -> bool {
        matches!(self, ArchiveError::Broken { .. })
    }
}
