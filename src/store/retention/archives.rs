//! The seam between a retention pass and the archive writer: before a
//! partition is dropped, an [`Archiver`] writes one archive per source
//! present, reads it back and compares it with the store
//! (`crate::archive::retention::Files`, kept out of `store` so that the store
//! does not depend on the archive format). The list of files goes to
//! `pgtrail.drop_partition`, which checks it names every source with its
//! exact count and records it in the drop's event.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use tokio_postgres::Client;

use super::candidate::Candidate;

/// One archive file, as `pgtrail.drop_partition` takes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArchiveFile {
    pub source: i16,
    pub entries: i64,
    /// The file's name in `archive_dir`.
    pub file: String,
    /// SHA-256 of the file as written, hex.
    pub sha256: String,
}

/// Writes and checks the archives of a partition, or says why it could not
/// (the partition is then kept).
pub trait Archiver: Send + Sync {
    fn archive<'a>(
        &'a self,
        client: &'a mut Client,
        candidate: &'a Candidate,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ArchiveFile>, String>> + Send + 'a>>;

    /// Removes files [`Archiver::archive`] wrote for a partition that was
    /// then kept (no drop event names them; the store still holds their entries).
    fn discard(&self, files: &[ArchiveFile]);
}
