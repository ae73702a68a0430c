//! `pgtrail tables`: every table of the source, whether it is captured and
//! why, its key and replica identity, whether the context trigger is on it,
//! and a warning where its audit would be incomplete.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::source;
use crate::table::FilterVerdict;

#[derive(Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    /// The root table whose entries its changes become, when it is a partition.
    pub partition_of: Option<String>,
    pub captured: bool,
    /// The pattern that decided it, or why no pattern did.
    pub reason: String,
    pub primary_key: Vec<String>,
    pub replica_identity: &'static str,
    pub context_trigger: bool,
    pub warnings: Vec<String>,
}

pub async fn tables(config: &Config) -> Result<Vec<TableReport>> {
    let client = source::connect(&config.source).await?;
    let mut out = Vec::new();
    for t in source::catalog_tables(&client).await? {
        // A partition is captured as its root is: its changes are the root's entries.
        let root = t.entry_table();
        let (captured, why) = match config.capture.explain(root) {
            FilterVerdict::Included(p) => (true, format!("matches {p}")),
            FilterVerdict::Excluded(p) => (false, format!("excluded by {p}")),
            FilterVerdict::NotIncluded => (false, "matches no capture.tables pattern".to_owned()),
        };
        let reason = match &t.partition_of {
            Some(m) => format!("partition of {}, whose root {root} {why}", m.parent),
            None => why,
        };
        let identity = match t.replica_identity {
            'f' => "full",
            'i' => "index",
            'n' => "nothing",
            _ => "default",
        };
        let mut warnings = Vec::new();
        // A partitioned table holds no rows itself: identity matters on its partitions.
        if captured && !t.partitioned {
            if t.primary_key.is_empty() && t.replica_identity != 'f' {
                warnings.push("no primary key and REPLICA IDENTITY is not FULL: UPDATE and DELETE cannot be tied to a row (the server drops them)".to_owned());
            } else if t.replica_identity != 'f' {
                warnings.push("REPLICA IDENTITY is not FULL: before images hold only the key, and changed columns are unknown".to_owned());
            }
        }
        if captured && !t.has_context_trigger {
            warnings.push(
                "no context trigger: entries will not say who made the change; run `pgtrail setup`"
                    .to_owned(),
            );
        }
        out.push(TableReport {
            partition_of: t.partition_of.as_ref().map(|m| m.root.to_string()),
            table: t.name.to_string(),
            captured,
            reason,
            primary_key: t.primary_key,
            replica_identity: identity,
            context_trigger: t.has_context_trigger,
            warnings,
        });
    }
    Ok(out)
}

/// A plain-text table, one line per table and one per warning.
pub fn to_text(reports: &[TableReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<8}  {:<16}  {:<8}  {:<7}  {}\n",
        "TABLE", "CAPTURED", "PRIMARY KEY", "IDENTITY", "TRIGGER", "WHY"
    );
    for r in reports {
        let key = if r.primary_key.is_empty() {
            "-".to_owned()
        } else {
            format!("({})", r.primary_key.join(", "))
        };
        out.push_str(&format!(
            "{:<width$}  {:<8}  {:<16}  {:<8}  {:<7}  {}\n",
            r.table,
            if r.captured { "yes" } else { "no" },
            key,
            r.replica_identity,
            if r.context_trigger { "yes" } else { "no" },
            r.reason
        ));
        for w in &r.warnings {
            out.push_str(&format!("{:<width$}  warning: {w}\n", ""));
        }
    }
    out
}
