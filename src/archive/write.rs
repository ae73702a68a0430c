//! Writing an archive: one snapshot of a source's time range, streamed from
//! the store into a new file.
//!
//! Rows are read in batches from a portal in one REPEATABLE READ transaction
//! (so the file is one consistent view of the range), and handed through a
//! small channel to a blocking thread that compresses, encrypts, hashes and
//! writes them: memory stays flat whatever the size of the range. Between
//! batches the connection is free, which is when the chain around the range
//! is checked in the same snapshot ([`super::seams`]): the hash before a
//! run's first entry, the entries between runs, the entry after the last.
//!
//! The file is written under a temporary name in the archive directory,
//! flushed to disk, then given its name without replacing any file (a second
//! archive of the same range gets `-2`, `-3`, …), and the directory is
//! flushed too, so after a crash the name either holds the whole file or
//! does not exist.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_postgres::{Client, IsolationLevel};

use super::format::{content_of, push_entry, range_problem, stem, Header, Trailer};
use super::hashing::HashingWriter;
use super::runs::{Runs, Sequence};
use super::seams::Around;
use super::{ArchiveError, Range, Sealing, Written, FORMAT_VERSION};
use crate::export::encrypt::Sealed;
use crate::store::chain::{link, Chain};
use crate::store::sources::SourceName;
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS, ENTRY_COLUMN_COUNT};
use crate::text::hex;

/// Rows fetched from the portal at a time.
const BATCH: i32 = 1000;
/// Batches of lines queued for the file's thread at most.
const AHEAD: usize = 4;
/// zstd's level: its default, a good ratio at a speed well above the store's.
const LEVEL: i32 = 3;

/// Writes every entry of `range` into a new archive file in `dir`, and
/// returns what was written. Refuses a range whose chain does not verify in
/// the store ([`ArchiveError::StoreBroken`]).
pub async fn write(
    client: &mut Client,
    range: &Range,
    dir: &Path,
    sealing: &Sealing,
) -> Result<Written, ArchiveError> {
    check_range(client, range).await?;
    let tmp = tempfile::Builder::new()
        .prefix(".pgtrail-archive-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| ArchiveError::Io {
            what: "cannot create a file in the archive directory",
            path: dir.to_owned(),
            source,
        })?;
    let (tx_lines, rx_lines) = mpsc::channel::<Chunk>(AHEAD);
    let file = FileJob {
        tmp,
        dir: dir.to_owned(),
        stem: stem(&range.source_name, range.from, range.to),
        sealing: sealing.clone(),
    };
    let writing = tokio::task::spawn_blocking(move || file.run(rx_lines));
    let read = read_range(client, range, &tx_lines).await;
    drop(tx_lines);
    let file = match writing.await {
        Ok(done) => done,
        Err(e) => Err(ArchiveError::Writer(format!(": {e}"))),
    };
    // When one side stopped because the other failed, the other's error is the cause.
    let (tally, (path, sha256, bytes)) = match (read, file) {
        (Ok(tally), Ok(file)) => (tally, file),
        (Err(ArchiveError::Writer(_)), Err(e)) | (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(Written {
        path,
        range: range.clone(),
        sha256,
        bytes,
        entries: tally.entries,
        unchained: tally.unchained,
        runs: tally.runs.finish(),
        encrypted: matches!(sealing, Sealing::Age(_)),
        lines_sha256: tally.lines.finalize().into(),
        sequence: tally.sequence.finish(),
    })
}

async fn check_range(client: &Client, range: &Range) -> Result<(), ArchiveError> {
    if let Some(problem) = range_problem(range.from, range.to) {
        return Err(ArchiveError::Range(problem));
    }
    let name = &range.source_name;
    if name != SourceName::PGTRAIL {
        SourceName::parse(name).map_err(ArchiveError::Range)?;
    }
    let stored: Option<String> = client
        .query_opt(
            "SELECT name FROM pgtrail.sources WHERE id = $1",
            &[&range.source_id.0],
        )
        .await?
        .map(|r| r.get(0));
    match stored {
        Some(s) if s == *name => Ok(()),
        Some(s) => Err(ArchiveError::Range(format!(
            "source {} is named {s:?} in the store, not {name:?}",
            range.source_id.0
        ))),
        None => Err(ArchiveError::Range(format!(
            "the store has no source {}",
            range.source_id.0
        ))),
    }
}

/// The statement selecting `columns` of every entry of `range`, in id
/// order, with the range's ends as `$1` and `$2`.
pub(super) fn range_sql(columns: &str, range: &Range) -> String {
    format!(
        "SELECT {columns} FROM pgtrail.entries WHERE committed_at >= $1 AND committed_at < $2 AND {} \
         ORDER BY id",
        Chain(range.source_id).sql_condition()
    )
}

/// Lines for the file, or `None` once every line is sent: only then is the
/// file completed and named, so a read cut short never leaves a whole-looking archive.
type Chunk = Option<String>;

/// What the reading side counted.
#[derive(Default)]
struct Tally {
    entries: u64,
    unchained: u64,
    runs: Runs,
    sequence: Sequence,
    /// SHA-256 of the lines before the trailer.
    lines: Sha256,
    /// The last entry without a hash.
    last_unchained: Option<i64>,
}

/// Reads the range in one snapshot and sends its lines, header to trailer.
async fn read_range(
    client: &mut Client,
    range: &Range,
    out: &mpsc::Sender<Chunk>,
) -> Result<Tally, ArchiveError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let select = tx
        .prepare(&range_sql(&format!("{ENTRY_COLUMNS}, hash"), range))
        .await?;
    let around = Around::prepare(&tx, range).await?;
    let header = Header {
        pgtrail_archive: FORMAT_VERSION,
        source: range.source_name.clone(),
        source_id: range.source_id.0,
        from: range.from,
        to: range.to,
        written_at: chrono::Utc::now(),
    };
    let header = json_line(&header);
    let mut tally = Tally::default();
    tally.lines.update(&header);
    send(out, header).await?;
    let portal = tx.bind(&select, &[&range.from, &range.to]).await?;
    loop {
        let rows = tx.query_portal(&portal, BATCH).await?;
        if rows.is_empty() {
            break;
        }
        let mut chunk = String::with_capacity(rows.len() * 512);
        for row in &rows {
            let e = StoredEntry::from_row(row);
            let hash: Option<Vec<u8>> = row.try_get(ENTRY_COLUMN_COUNT)?;
            place(&around, &mut tally, &e, hash, &mut chunk).await?;
        }
        tally.lines.update(&chunk);
        send(out, chunk).await?;
    }
    if let Some(last) = tally.runs.last() {
        around.after_the_last(last).await?;
    }
    if let Some(id) = tally.last_unchained {
        around.nothing_hashed_before(id).await?;
    }
    drop(around);
    tx.commit().await?;
    let last_hash = tally.runs.last_hash().map(|h| hex(h));
    let trailer = Trailer {
        end: true,
        entries: tally.entries,
        last_hash,
        lines_sha256: hex(&tally.lines.clone().finalize()),
    };
    send(out, json_line(&trailer)).await?;
    out.send(None).await.map_err(|_| writer_gone())?;
    Ok(tally)
}

/// Appends entry `e`'s line, placed in its chain: continuing the run of the
/// entry before it, or starting a run after its predecessor in the store.
async fn place(
    around: &Around<'_, '_>,
    tally: &mut Tally,
    e: &StoredEntry,
    hash: Option<Vec<u8>>,
    chunk: &mut String,
) -> Result<(), ArchiveError> {
    let broken = |problem: String| ArchiveError::StoreBroken {
        chain: around.range().source_name.clone(),
        id: e.id,
        problem,
    };
    if e.source != around.range().source_name {
        // The reader requires every entry's source to be the header's.
        return Err(ArchiveError::Store(format!(
            "entry {} names its source {:?}, not {:?}: was the source renamed while the archive was \
             written? Write it again",
            e.id,
            e.source,
            around.range().source_name
        )));
    }
    tally.entries += 1;
    tally.sequence.push(e.id, hash.as_deref());
    let Some(hash) = hash else {
        if let Some((last, _)) = tally.runs.last() {
            return Err(broken(format!(
                "it has no hash although entry {last} before it in the chain has one: it was \
                 inserted past pgtrail"
            )));
        }
        tally.unchained += 1;
        tally.last_unchained = Some(e.id);
        push_entry(chunk, e, None, None);
        chunk.push('\n');
        return Ok(());
    };
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| broken("its hash is not 32 bytes".into()))?;
    let (_, digest) = content_of(e).map_err(|p| broken(format!("pgtrail cannot read it: {p}")))?;
    let follows = tally
        .runs
        .last_hash()
        .is_some_and(|last| link(last, &digest) == hash);
    let prev = if follows {
        tally.runs.extend(e.id, hash);
        None
    } else {
        let (pred_id, pred) = around.predecessor(tally.runs.last(), e.id).await?;
        if link(&pred, &digest) != hash {
            return Err(broken(match pred_id {
                Some(p) => format!("it does not match its hash following entry {p}"),
                None => "it does not match its hash as the chain's first entry".into(),
            }));
        }
        tally.runs.start(e.id, pred, hash);
        Some(pred)
    };
    push_entry(chunk, e, Some(&hash), prev.as_ref());
    chunk.push('\n');
    Ok(())
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail.
    let mut line = serde_json::to_string(value).unwrap_or_default();
    line.push('\n');
    line
}

async fn send(out: &mpsc::Sender<Chunk>, chunk: String) -> Result<(), ArchiveError> {
    out.send(Some(chunk)).await.map_err(|_| writer_gone())
}

/// The file's thread stopped early; its own error says why.
fn writer_gone() -> ArchiveError {
    ArchiveError::Writer(String::new())
}

/// The blocking side: the file, from its temporary name to its own.
struct FileJob {
    tmp: tempfile::NamedTempFile,
    dir: PathBuf,
    stem: String,
    sealing: Sealing,
}

impl FileJob {
    /// Writes every chunk, completes and syncs the file, and names it:
    /// its path, SHA-256 and size.
    fn run(self, mut rx: mpsc::Receiver<Chunk>) -> Result<(PathBuf, [u8; 32], u64), ArchiveError> {
        let FileJob {
            tmp,
            dir,
            stem,
            sealing,
        } = self;
        let io = |what: &'static str| {
            let path = tmp.path().to_owned();
            move |source| ArchiveError::Io { what, path, source }
        };
        let hashing = HashingWriter::new(BufWriter::new(tmp.as_file()));
        let sealed = match &sealing {
            Sealing::Plain => Sealed::plain(hashing),
            Sealing::Age(r) => {
                Sealed::encrypted(r, hashing).map_err(|e| ArchiveError::Encrypt(e.to_string()))?
            }
        };
        let mut zstd = zstd::Encoder::new(sealed, LEVEL).map_err(io("cannot compress into"))?;
        loop {
            match rx.blocking_recv() {
                Some(Some(chunk)) => zstd
                    .write_all(chunk.as_bytes())
                    .map_err(io("cannot write"))?,
                Some(None) => break,
                // The reading side failed; its error is the one reported.
                None => return Err(writer_gone()),
            }
        }
        let sealed = zstd.finish().map_err(io("cannot complete"))?;
        let hashing = sealed
            .finish()
            .map_err(|e| ArchiveError::Encrypt(e.to_string()))?;
        let (buffered, sha256, bytes) = hashing.finish();
        buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(File::sync_all)
            .map_err(io("cannot flush to disk"))?;
        let suffix = match sealing {
            Sealing::Plain => ".jsonl.zst",
            Sealing::Age(_) => ".jsonl.zst.age",
        };
        let path = name_without_replacing(tmp, &dir, &stem, suffix)?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| ArchiveError::Io {
                what: "cannot flush to disk the archive directory",
                path: dir.clone(),
                source,
            })?;
        Ok((path, sha256, bytes))
    }
}

/// Gives `tmp` the name `stem` + `suffix` in `dir`, or `stem-2` + `suffix`,
/// `stem-3`…: the first that does not exist. An existing file is never replaced.
fn name_without_replacing(
    mut tmp: tempfile::NamedTempFile,
    dir: &Path,
    stem: &str,
    suffix: &str,
) -> Result<PathBuf, ArchiveError> {
    for n in 1..=1000u32 {
        let name = match n {
            1 => format!("{stem}{suffix}"),
            n => format!("{stem}-{n}{suffix}"),
        };
        let path = dir.join(name);
        match tmp.persist_noclobber(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => {
                return Err(ArchiveError::Io {
                    what: "cannot name the archive",
                    path,
                    source: e.error,
                })
            }
        }
    }
    Err(ArchiveError::Range(format!(
        "{} already holds 1000 archives of this range ({stem}{suffix} and on): remove the ones not needed",
        dir.display()
    )))
}
