//! `pgtrail retention [--dry-run] [--json]`: one retention pass now
//! ([`crate::store::retention::pass`]), or with `--dry-run` the list of the
//! partitions that would go, with their exact entries per source, changing
//! nothing. The store's retention is the one applied; a config that
//! disagrees is reported.

use anyhow::Result;

use crate::archive::retention::Files;
use crate::config::Config;
use crate::store::retention::archives::Archiver;
use crate::store::retention::disagreement;
use crate::store::retention::pass::{self, Mode, Outcome, PassReport};

/// What the command line asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// List the partitions that would be dropped, with their entries per source, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the pass and prints its report; true when every partition listed
/// went (or would go).
pub async fn run(config: &Config, request: &Request) -> Result<bool> {
    let mut client = crate::store::open(&config.store).await?;
    if let Some(warning) = disagreement(&client, config.retention).await? {
        tracing::warn!("{warning}");
    }
    let files = Files::of_config(config);
    let archiver = files.as_ref().map(|a| a as &dyn Archiver);
    let mode = if request.dry_run {
        Mode::DryRun
    } else {
        Mode::Drop
    };
    let report = pass::run(&mut client, mode, archiver).await?;
    if request.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(report
        .partitions
        .iter()
        .all(|p| !matches!(p.outcome, Outcome::Kept { .. })))
}

fn text(report: &PassReport) -> String {
    let Some(retention) = &report.retention else {
        return "the store keeps everything: set [store] retention and run `pgtrail setup`\n"
            .into();
    };
    if report.skipped_busy {
        return "another pgtrail process is running a retention pass on this store; nothing done\n"
            .into();
    }
    let mut out = format!(
        "retention {retention}: {} partition(s) past it\n",
        report.partitions.len()
    );
    for p in &report.partitions {
        let c = &p.candidate;
        let counts: Vec<String> = c
            .entries
            .iter()
            .map(|s| match &s.source_name {
                Some(name) => format!("{name} {}", s.entries),
                // Not in pgtrail.sources (never removed there): the id is all there is.
                None => format!("(source id {}) {}", s.source, s.entries),
            })
            .collect();
        let what = match &p.outcome {
            Outcome::WouldDrop => "would be dropped".to_owned(),
            Outcome::Dropped { event, archives } if archives.is_empty() => {
                format!("dropped (event {event})")
            }
            Outcome::Dropped { event, archives } => format!(
                "dropped (event {event}), archived in {}",
                archives
                    .iter()
                    .map(|a| a.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Outcome::Kept { reason } => format!("kept: {reason}"),
        };
        out += &format!(
            "{} [{} .. {}) {}; entries by source: {}\n",
            c.name,
            c.from,
            c.to,
            what,
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retention::pass::{Candidate, PartitionReport, SourceCount};

    #[test]
    fn each_partition_counts_its_entries_by_source_name() {
        let at = |s: &str| s.parse().unwrap();
        let count = |source, name: Option<&str>, entries| SourceCount {
            source,
            source_name: name.map(Into::into),
            entries,
        };
        let report = PassReport {
            retention: Some("90 days".into()),
            skipped_busy: false,
            partitions: vec![PartitionReport {
                candidate: Candidate {
                    name: "entries_p20260501".into(),
                    from: at("2026-05-01T00:00:00Z"),
                    to: at("2026-06-01T00:00:00Z"),
                    entries: vec![
                        count(0, Some("pgtrail"), 2),
                        count(1, Some("shop"), 1204),
                        count(7, None, 3),
                    ],
                },
                outcome: Outcome::WouldDrop,
            }],
        };
        assert_eq!(
            text(&report),
            "retention 90 days: 1 partition(s) past it\n\
             entries_p20260501 [2026-05-01 00:00:00 UTC .. 2026-06-01 00:00:00 UTC) would be dropped; \
             entries by source: pgtrail 2, shop 1204, (source id 7) 3\n"
        );
    }
}
