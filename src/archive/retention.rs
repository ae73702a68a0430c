//! The archiver retention uses with `[store] archive_dir`: before a
//! partition is dropped, one file per source present is written, read back
//! and compared with the store (the pass's
//! [`Archiver`](crate::store::retention::archives::Archiver)). A partition
//! whose archives cannot be written or checked is kept.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio_postgres::Client;

use super::{Range, Sealing};
use crate::store::retention::archives::{ArchiveFile, Archiver};
use crate::store::retention::candidate::Candidate;
use crate::store::sources::SourceId;
use crate::text::hex;

/// The archiver of `[store] archive_dir`: files go into `dir`, encrypted
/// with age when `[export] age_recipients` is set.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub sealing: Sealing,
}

impl Archiver for Files {
    fn archive<'a>(
        &'a self,
        client: &'a mut Client,
        candidate: &'a Candidate,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ArchiveFile>, String>> + Send + 'a>> {
        Box::pin(async move {
            self.prepare_dir()?;
            let mut files = Vec::with_capacity(candidate.entries.len());
            for count in &candidate.entries {
                match self
                    .one_source(client, candidate, count.source, count.entries)
                    .await
                {
                    Ok(file) => files.push(file),
                    Err(reason) => {
                        // The partition is kept: its other sources' files are stray copies.
                        self.discard(&files);
                        return Err(reason);
                    }
                }
            }
            Ok(files)
        })
    }

    fn discard(&self, files: &[ArchiveFile]) {
        for f in files {
            let path = self.dir.join(&f.file);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "an archive of a kept partition could not be removed");
            }
        }
    }
}

impl Files {
    /// The archiver a config asks for: `None` without `[store] archive_dir`.
    pub fn of_config(config: &crate::config::Config) -> Option<Files> {
        let dir = config.archive_dir.clone()?;
        let sealing = match &config.export.recipients {
            Some(r) => Sealing::Age(r.clone()),
            None => Sealing::Plain,
        };
        Some(Files { dir, sealing })
    }

    /// The directory, made when missing: readable by its owner only, as
    /// archives hold whole row images.
    fn prepare_dir(&self) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                format!(
                    "cannot create the archive directory {} ({e}): create it, writable by the daemon's user",
                    self.dir.display()
                )
            })
    }

    /// One source's entries of the partition: written, read back and
    /// compared with the store, and the count the pass saw.
    async fn one_source(
        &self,
        client: &mut Client,
        candidate: &Candidate,
        source: i16,
        expected: i64,
    ) -> Result<ArchiveFile, String> {
        let source_name: String = client
            .query_one("SELECT name FROM pgtrail.sources WHERE id = $1", &[&source])
            .await
            .map_err(|e| format!("reading source {source}'s name: {e}"))?
            .get(0);
        let range = Range {
            source_id: SourceId(source),
            source_name,
            from: candidate.from,
            to: candidate.to,
        };
        let written = super::write(client, &range, &self.dir, &self.sealing)
            .await
            .map_err(|e| format!("writing the archive of {}: {e}", range.source_name))?;
        let file = written
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if i64::try_from(written.entries) != Ok(expected) {
            return Err(format!(
                "the archive {file} holds {} entries of {}, the partition {expected}; it is kept and tried again",
                written.entries, range.source_name
            ));
        }
        super::read_back(client, &written, None)
            .await
            .map_err(|e| format!("checking the archive {file}: {e}"))?;
        Ok(ArchiveFile {
            source,
            entries: expected,
            file,
            sha256: hex(&written.sha256),
        })
    }
}
