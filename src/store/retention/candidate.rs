//! A partition past the retention, as a pass lists it and the archive
//! writer takes it: its name, range and exact entries per source.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Entries of one source in a partition (exact: one scan of the partition).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceCount {
    /// The source's id (`pgtrail.sources.id`; 0 is pgtrail's own events).
    pub source: i16,
    /// Its `[source] name`; `None` only for an id `pgtrail.sources` does not hold.
    pub source_name: Option<String>,
    pub entries: i64,
}

/// A partition past the retention.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub name: String,
    /// The range `[from, to)` of commit times (RFC 3339, UTC, in JSON).
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub entries: Vec<SourceCount>,
}
