//! The daemon's retention: one pass from the partition keeper's hourly turn
//! (`store::partitions::keep`), on the keeper's connection. Its failures are
//! logged here and never delay the keeper, and a config that disagrees with
//! the store is said once (the store's value is the one applied).

use std::path::PathBuf;

use tokio_postgres::Client;

use super::archives::{Archiver, NotBuilt};
use super::pass::{self, Mode, Outcome};
use super::{disagreement, Retention};

/// What the daemon's config says about retention, and whether its
/// disagreement with the store has been logged.
#[derive(Debug, Clone, Default)]
pub struct Hourly {
    pub wanted: Option<Retention>,
    pub archive_dir: Option<PathBuf>,
    warned: bool,
}

impl Hourly {
    pub fn new(wanted: Option<Retention>, archive_dir: Option<PathBuf>) -> Hourly {
        Hourly {
            wanted,
            archive_dir,
            warned: false,
        }
    }

    /// One pass; called by the keeper at most once an hour.
    pub async fn turn(&mut self, client: &Client) {
        if !self.warned {
            match disagreement(client, self.wanted).await {
                Ok(Some(warning)) => {
                    tracing::warn!("{warning}");
                    self.warned = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention: the store's setting is unreadable")
                }
            }
        }
        let archiver: Option<&dyn Archiver> = self.archive_dir.as_ref().map(|_| &NotBuilt as _);
        match pass::run(client, Mode::Drop, archiver).await {
            Ok(report) => {
                for p in report.partitions {
                    if let Outcome::Dropped { event, .. } = p.outcome {
                        tracing::info!(partition = %p.candidate.name, event, "retention dropped a partition");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "retention pass failed; tried again in an hour"),
        }
    }
}
