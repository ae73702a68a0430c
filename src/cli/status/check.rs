//! `pgtrail status --check`: the status as a monitoring plugin sees it, one line in the
//! Nagios/Icinga plugin form (`PGTRAIL OK - … | perfdata`) and the plugin exit codes
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::Status;

/// Default lag that warns: four 16 MB WAL segments held back.
pub const DEFAULT_WARN_LAG_BYTES: u64 = 64 * 1024 * 1024;
/// Default lag that is critical: 1 GiB of WAL held back on the source.
pub const DEFAULT_CRIT_LAG_BYTES: u64 = 1024 * 1024 * 1024;

/// The thresholds of `status --check`. Figures strictly above a threshold trip it.
#[derive(Debug, Clone, clap::Args)]
pub struct Thresholds {
    /// WARNING when the slot holds back more WAL than this (bytes).
    #[arg(long, default_value_t = DEFAULT_WARN_LAG_BYTES)]
    pub warn_lag_bytes: u64,
    /// CRITICAL when the slot holds back more WAL than this (bytes).
    #[arg(long, default_value_t = DEFAULT_CRIT_LAG_BYTES)]
    pub crit_lag_bytes: u64,
    /// WARNING when the store's checkpoint was last written longer ago than this (seconds).
    /// Off by default: an idle source stores nothing, so age alone is not a fault.
    #[arg(long)]
    pub warn_age_seconds: Option<u64>,
    /// CRITICAL when the store's checkpoint was last written longer ago than this (seconds).
    #[arg(long)]
    pub crit_age_seconds: Option<u64>,
}

/// A plugin state, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        })
    }
}

/// The verdict on one status: the worst state found and every reason for it.
#[derive(Debug)]
pub struct Verdict {
    pub state: State,
    pub line: String,
}

/// The line printed when the status could not be read at all (config, source or store).
pub fn unknown(error: &anyhow::Error) -> Verdict {
    // One line, and no `|`: everything after it would be read as performance data.
    let text = format!("{error:#}").replace('|', "/");
    let why = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Verdict {
        state: State::Unknown,
        line: format!("PGTRAIL UNKNOWN - {why}"),
    }
}

pub fn judge(status: &Status, t: &Thresholds) -> Verdict {
    let mut problems: Vec<(State, String)> = vec![];
    if !status.slot_exists {
        let why = format!("slot {} is missing: run `pgtrail setup`", status.slot);
        problems.push((State::Critical, why));
    } else if status.wal_status.as_deref() == Some("lost") {
        let why = format!(
            "slot {} is lost (wal_status lost): changes were not captured",
            status.slot
        );
        problems.push((State::Critical, why));
    } else if !status.slot_active {
        let why = format!("daemon not running (slot {} is not active)", status.slot);
        problems.push((State::Critical, why));
    }
    if status.wal_status.as_deref() == Some("unreserved") {
        let why = "slot is unreserved: its WAL is past max_slot_wal_keep_size".to_owned();
        problems.push((State::Warning, why));
    }
    if let (Some(held), Some(warn)) = (status.retained_wal_bytes, status.wal_warn_bytes) {
        if held > warn {
            let why = format!("slot holds {} of WAL, past capture.wal_warn", size(held));
            problems.push((State::Warning, why));
        }
    }
    if let Some(lag) = status.lag_bytes {
        let level = over(lag, Some(t.warn_lag_bytes), Some(t.crit_lag_bytes));
        if let Some(state) = level {
            let limit = threshold(state, t.warn_lag_bytes, t.crit_lag_bytes);
            problems.push((state, format!("lag beyond {}", size(limit))));
        }
    }
    if let Some(age) = status.last_stored_age_seconds {
        if let Some(state) = over(age, t.warn_age_seconds, t.crit_age_seconds) {
            problems.push((state, format!("last stored {age} s ago")));
        }
    }
    let state = problems.iter().map(|(s, _)| *s).max().unwrap_or(State::Ok);
    let mut line = format!("PGTRAIL {} - ", state.label());
    for (_, why) in &problems {
        let _ = write!(line, "{why}; ");
    }
    line.push_str(&summary(status));
    line.push_str(" |");
    if let Some(lag) = status.lag_bytes {
        let _ = write!(
            line,
            " lag_bytes={lag};{};{};0",
            t.warn_lag_bytes, t.crit_lag_bytes
        );
    }
    if let Some(age) = status.last_stored_age_seconds {
        let _ = write!(
            line,
            " age_seconds={age};{};{};0",
            opt(t.warn_age_seconds),
            opt(t.crit_age_seconds)
        );
    }
    let _ = write!(line, " entries_estimate={}", status.entries_estimate);
    Verdict { state, line }
}

/// The state `value` reaches against optional warning and critical thresholds.
fn over(value: u64, warn: Option<u64>, crit: Option<u64>) -> Option<State> {
    if crit.is_some_and(|c| value > c) {
        Some(State::Critical)
    } else if warn.is_some_and(|w| value > w) {
        Some(State::Warning)
    } else {
        None
    }
}

fn threshold(state: State, warn: u64, crit: u64) -> u64 {
    if state == State::Critical {
        crit
    } else {
        warn
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The figures every line ends with, whatever the state.
fn summary(status: &Status) -> String {
    let lag = status.lag_bytes.map_or_else(|| "unknown".to_owned(), size);
    match status.last_stored_age_seconds {
        Some(age) => format!("lag {lag}, last stored {age} s ago"),
        None => format!("lag {lag}, nothing stored yet"),
    }
}

/// Bytes for a person, in the units PostgreSQL's pg_size_pretty uses.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 10 * 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 10.0 * 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.0} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_pg_size_pretty() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(10 * 1024 - 1), "10239 bytes");
        assert_eq!(size(12345), "12 kB");
        assert_eq!(size(64 * 1024 * 1024), "64 MB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3072 MB");
        assert_eq!(size(20 * 1024 * 1024 * 1024), "20 GB");
    }

    #[test]
    fn thresholds_trip_strictly_above() {
        assert_eq!(over(10, Some(10), Some(20)), None);
        assert_eq!(over(11, Some(10), Some(20)), Some(State::Warning));
        assert_eq!(over(21, Some(10), Some(20)), Some(State::Critical));
        assert_eq!(over(u64::MAX, None, None), None);
        assert!(State::Unknown > State::Critical && State::Critical > State::Warning);
    }

    fn running(lag: u64) -> Status {
        Status {
            source: "app".into(),
            slot: "pgtrail".into(),
            slot_exists: true,
            slot_active: true,
            wal_status: Some("reserved".into()),
            confirmed_flush_lsn: Some("0/10".into()),
            server_lsn: "0/20".into(),
            lag_bytes: Some(lag),
            retained_wal_bytes: Some(lag + 100),
            wal_warn_bytes: Some(1 << 30),
            last_stored_lsn: Some("0/10".into()),
            last_stored_age_seconds: Some(3),
            last_stored_commit: None,
            entries_estimate: 7,
            partitions: Default::default(),
            quarantine: Default::default(),
        }
    }

    fn limits(warn: u64, crit: u64) -> Thresholds {
        Thresholds {
            warn_lag_bytes: warn,
            crit_lag_bytes: crit,
            warn_age_seconds: None,
            crit_age_seconds: Some(2),
        }
    }

    #[test]
    fn the_worst_finding_decides_and_every_one_is_named() {
        let v = judge(&running(12345), &limits(20000, 30000));
        assert_eq!(v.state, State::Critical, "age 3 s is past 2 s: {}", v.line);
        assert_eq!(
            v.line,
            "PGTRAIL CRITICAL - last stored 3 s ago; lag 12 kB, last stored 3 s ago \
             | lag_bytes=12345;20000;30000;0 age_seconds=3;;2;0 entries_estimate=7"
        );
        let mut t = limits(100, 30000);
        t.crit_age_seconds = None;
        let v = judge(&running(12345), &t);
        assert_eq!(v.state, State::Warning);
        assert!(
            v.line
                .starts_with("PGTRAIL WARNING - lag beyond 100 bytes; "),
            "{}",
            v.line
        );
        t.warn_lag_bytes = 20000;
        assert_eq!(judge(&running(12345), &t).state, State::Ok);
        let mut held = running(12345);
        held.wal_warn_bytes = Some(12345);
        let line = judge(&held, &t).line;
        let warned = "PGTRAIL WARNING - slot holds 12 kB of WAL, past capture.wal_warn; lag 12 kB";
        assert!(line.starts_with(warned), "{line}");

        let mut lost = running(1);
        lost.wal_status = Some("lost".into());
        lost.slot_active = false;
        let v = judge(&lost, &t);
        assert_eq!(v.state, State::Critical);
        assert!(v.line.contains("slot pgtrail is lost"), "{}", v.line);
        let mut missing = running(0);
        missing.slot_exists = false;
        missing.lag_bytes = None;
        let v = judge(&missing, &t);
        assert!(
            v.line.contains("is missing") && !v.line.contains("lag_bytes="),
            "{}",
            v.line
        );
    }
}
