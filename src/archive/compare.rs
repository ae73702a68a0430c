//! The read-back check retention runs before it drops a range: the file as
//! written ([`read_back`]), and the store's range against the file
//! ([`compare_with_store`]): the same entries, with the same hashes.

use std::path::Path;

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::lines::LONGEST_WRITTEN;
use super::read::{check, Checked};
use super::runs::Sequence;
use super::write::range_sql;
use super::{ArchiveError, Written};
use crate::text::hex;

/// How much of a written archive was read back.
#[derive(Debug, Clone)]
pub enum ReadBack {
    /// Decrypted (or plain) and checked entry by entry: it holds what was written.
    Plaintext(Box<Checked>),
    /// Encrypted, and no identity to decrypt it: its bytes are the ones
    /// written (their SHA-256); their content was checked as it was written.
    Ciphertext,
}

impl ReadBack {
    /// For the drop event: `plaintext` or `ciphertext`.
    pub fn label(&self) -> &'static str {
        match self {
            ReadBack::Plaintext(_) => "plaintext",
            ReadBack::Ciphertext => "ciphertext",
        }
    }
}

/// Reads the archive `written` back (decrypting it with `identity` when it
/// is encrypted and one is given), requires it to be exactly what was
/// written, then compares the store's range with it ([`compare_with_store`]).
/// Retention drops a range only after this passed. The file was just written
/// by this process, so it is read with the longest line pgtrail can write as
/// the limit, not the default an operator's reader takes.
pub async fn read_back(
    client: &Client,
    written: &Written,
    identity: Option<&Path>,
) -> Result<ReadBack, ArchiveError> {
    let path = written.path.clone();
    let identity = identity.map(Path::to_path_buf);
    let plaintext = !written.encrypted || identity.is_some();
    let read = tokio::task::spawn_blocking(move || {
        if plaintext {
            check(&path, identity.as_deref(), LONGEST_WRITTEN).map(|c| Read::Checked(Box::new(c)))
        } else {
            file_sha256(&path).map(Read::Bytes)
        }
    })
    .await
    .map_err(|e| ArchiveError::Writer(format!(": reading it back failed: {e}")))?;
    let back = match read? {
        Read::Checked(checked) => {
            same_as_written(written, &checked)?;
            ReadBack::Plaintext(checked)
        }
        Read::Bytes(sha256) if sha256 == written.sha256 => ReadBack::Ciphertext,
        Read::Bytes(sha256) => {
            return Err(mismatch(
                written,
                "what was written",
                format!(
                    "its SHA-256 is {}, not {}",
                    hex(&sha256),
                    hex(&written.sha256)
                ),
            ))
        }
    };
    compare_with_store(client, written).await?;
    Ok(back)
}

/// What reading back found.
enum Read {
    Checked(Box<Checked>),
    /// The SHA-256 of the file's bytes, when they cannot be decrypted.
    Bytes([u8; 32]),
}

/// The store's entries of the archive's range, now: the same count, and the
/// same ids with the same hashes in the same order (compared as a digest of
/// the sequence, so memory stays flat).
pub async fn compare_with_store(client: &Client, written: &Written) -> Result<(), ArchiveError> {
    let range = &written.range;
    let rows = client
        .query_raw(&range_sql("id, hash", range), [&range.from, &range.to])
        .await?;
    futures_util::pin_mut!(rows);
    let mut sequence = Sequence::default();
    let mut entries = 0u64;
    while let Some(row) = rows.try_next().await? {
        let hash: Option<Vec<u8>> = row.try_get(1)?;
        sequence.push(row.try_get(0)?, hash.as_deref());
        entries += 1;
    }
    if entries != written.entries {
        return Err(mismatch(
            written,
            "the store",
            format!(
                "the store holds {entries} entries of source {} committed in [{}, {}), the archive {}",
                range.source_name, range.from, range.to, written.entries
            ),
        ));
    }
    if sequence.finish() != written.sequence {
        return Err(mismatch(
            written,
            "the store",
            format!(
                "the store's {entries} entries of the range are not the archive's: their ids or hashes differ"
            ),
        ));
    }
    Ok(())
}

fn same_as_written(written: &Written, read: &Checked) -> Result<(), ArchiveError> {
    let problem = if read.sha256 != written.sha256 {
        format!(
            "its SHA-256 is {}, not {}",
            hex(&read.sha256),
            hex(&written.sha256)
        )
    } else if (read.entries, read.unchained) != (written.entries, written.unchained) {
        format!("it holds {} entries, not {}", read.entries, written.entries)
    } else if read.runs != written.runs
        || read.sequence != written.sequence
        || read.lines_sha256 != written.lines_sha256
    {
        "its entries' ids or hashes are not the ones written".into()
    } else {
        return Ok(());
    };
    Err(mismatch(written, "what was written", problem))
}

fn mismatch(written: &Written, against: &'static str, problem: String) -> ArchiveError {
    ArchiveError::Mismatch {
        path: written.path.clone(),
        against,
        problem,
    }
}

/// SHA-256 of a file's bytes.
fn file_sha256(path: &Path) -> Result<[u8; 32], ArchiveError> {
    let io = |source| ArchiveError::Io {
        what: "cannot read back the archive",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut file, &mut buf).map_err(io)? {
            0 => return Ok(hasher.finalize().into()),
            n => hasher.update(&buf[..n]),
        }
    }
}
