//! The seam between a retention pass and the archive writer (`src/archive/`,
//! branch t10-arch): before a partition is dropped, one archive per source
//! present is written, read back, checked and compared with the store. The
//! list of files goes to `pgtrail.drop_partition`, which checks it names
//! every source with its exact count and records it in the drop's event.

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
pub trait Archiver: Sync {
    fn archive<'a>(
        &'a self,
        client: &'a Client,
        candidate: &'a Candidate,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ArchiveFile>, String>> + Send + 'a>>;
}

/// `archive_dir` is set, but this build has no archive writer yet: every
/// partition is kept rather than dropped without the archive asked for.
pub struct NotBuilt;

impl Archiver for NotBuilt {
    fn archive<'a>(
        &'a self,
        _client: &'a Client,
        _candidate: &'a Candidate,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ArchiveFile>, String>> + Send + 'a>> {
        Box::pin(async {
            Err(
                "store.archive_dir is set but this build does not write archives yet; \
                 the partition is kept: remove store.archive_dir to drop without archives"
                    .to_owned(),
            )
        })
    }
}
