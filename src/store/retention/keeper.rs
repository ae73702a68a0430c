//! The daemon's retention: one pass from the partition keeper's hourly turn
//! (`store::partitions::keep`), on the keeper's connection. Its failures are
//! logged here and never delay the keeper, and a config that disagrees with
//! the store is said once (the store's value is the one applied).

use tokio_postgres::Client;

use super::archives::Archiver;
use super::pass::{self, Mode, Outcome};
use super::{disagreement, Retention};

/// What the daemon's config says about retention, and whether its
/// disagreement with the store has been logged.
#[derive(Default)]
pub struct Hourly {
    pub wanted: Option<Retention>,
    /// `[store] archive_dir`'s archiver (`None`: partitions go without archives).
    pub archiver: Option<Box<dyn Archiver>>,
    warned: bool,
}

impl Hourly {
    pub fn new(wanted: Option<Retention>, archiver: Option<Box<dyn Archiver>>) -> Hourly {
        Hourly {
            wanted,
            archiver,
            warned: false,
        }
    }

    /// One pass; called by the keeper at most once an hour.
    pub async fn turn(&mut self, client: &mut Client) {
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
        let archiver = self.archiver.as_deref();
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
