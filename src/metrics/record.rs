//! The one place each figure is recorded, with its labels: the parts call
//! these rather than the `metrics` macros, so a name or a label set cannot
//! drift between two call sites.

use std::time::Duration;

use ::metrics::{counter, gauge, histogram};

use super::names::*;

/// `n` entries of `action` (`INSERT`, `UPDATE`…) from `source` committed to the store.
pub fn entries_stored(source: &str, action: &'static str, n: u64) {
    if n > 0 {
        counter!(ENTRIES_STORED, "source" => source.to_owned(), "action" => action).increment(n);
    }
}

/// One store commit: `transactions` source transactions with entries, its
/// duration, decode errors and quarantined transactions it held.
pub fn store_commit(source: &str, commit: &StoreCommit) {
    let source = source.to_owned();
    histogram!(STORE_COMMIT_SECONDS, "source" => source.clone()).record(commit.took.as_secs_f64());
    if commit.transactions > 0 {
        counter!(TRANSACTIONS_STORED, "source" => source.clone()).increment(commit.transactions);
    }
    if commit.decode_errors > 0 {
        counter!(DECODE_ERRORS, "source" => source.clone()).increment(commit.decode_errors);
    }
    if commit.quarantined > 0 {
        counter!(QUARANTINED, "source" => source.clone()).increment(commit.quarantined);
    }
    if let Some(micros) = commit.last_commit_micros {
        gauge!(LAST_STORED_COMMIT, "source" => source).set(micros as f64 / 1e6);
    }
}

/// What one store commit held, besides entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreCommit {
    pub took: Duration,
    pub transactions: u64,
    pub decode_errors: u64,
    pub quarantined: u64,
    /// The source commit time of the last transaction in it.
    pub last_commit_micros: Option<i64>,
}

/// A capture session of `source` streams (or no longer does).
pub fn streaming(source: &str, on: bool) {
    gauge!(STREAMING, "source" => source.to_owned()).set(if on { 1.0 } else { 0.0 });
}

/// A capture session of `source` ended with an error of `kind`.
pub fn capture_error(source: &str, kind: &'static str) {
    counter!(CAPTURE_ERRORS, "source" => source.to_owned(), "kind" => kind).increment(1);
}

/// A capture session of `source` starts again after one ended.
pub fn reconnect(source: &str) {
    counter!(RECONNECTS, "source" => source.to_owned()).increment(1);
}

/// The monitor's lag figures for `source`.
pub fn lag(source: &str, bytes: u64, seconds: f64) {
    gauge!(LAG_BYTES, "source" => source.to_owned()).set(bytes as f64);
    gauge!(LAG_SECONDS, "source" => source.to_owned()).set(seconds);
}

/// The monitor's reading of `slot`; `None` when the slot does not exist.
pub fn slot(slot: &str, figures: Option<SlotFigures<'_>>) {
    let slot = slot.to_owned();
    let Some(f) = figures else {
        gauge!(SLOT_ACTIVE, "slot" => slot.clone()).set(-1.0);
        for status in WAL_STATUSES {
            gauge!(SLOT_WAL_STATUS, "slot" => slot.clone(), "status" => status).set(0.0);
        }
        return;
    };
    gauge!(SLOT_ACTIVE, "slot" => slot.clone()).set(if f.active { 1.0 } else { 0.0 });
    gauge!(SLOT_RETAINED_WAL, "slot" => slot.clone()).set(f.retained_bytes as f64);
    gauge!(SLOT_SAFE_WAL_SIZE, "slot" => slot.clone())
        .set(f.safe_wal_size.map_or(f64::NAN, |b| b as f64));
    for status in WAL_STATUSES {
        let on = f.wal_status == Some(status);
        gauge!(SLOT_WAL_STATUS, "slot" => slot.clone(), "status" => status).set(if on {
            1.0
        } else {
            0.0
        });
    }
}

/// Whether the slot holds more WAL than `capture.wal_warn` (the WAL guard).
pub fn wal_warn(slot: &str, over: bool) {
    gauge!(WAL_WARN, "slot" => slot.to_owned()).set(if over { 1.0 } else { 0.0 });
}

/// A slot's figures, as [`slot`] records them.
#[derive(Debug, Clone, Copy)]
pub struct SlotFigures<'a> {
    pub active: bool,
    pub retained_bytes: u64,
    pub safe_wal_size: Option<i64>,
    pub wal_status: Option<&'a str>,
}

/// A monitor poll that could not read `target` (`source` or `store`).
pub fn monitor_error(target: &'static str) {
    counter!(MONITOR_ERRORS, "target" => target).increment(1);
}

/// A web view request answered: `route` is the matched route's pattern.
pub fn web_request(route: &str, method: &str, status: u16, took: Duration) {
    let (route, method) = (route.to_owned(), method.to_owned());
    counter!(WEB_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(WEB_REQUEST_SECONDS, "route" => route, "method" => method)
        .record(took.as_secs_f64());
}

/// A web view request on `route` refused (503) because every store
/// connection of its `lane` (`quick`, `slow`) stayed taken for `web.max_wait`.
pub fn web_shed(route: &str, lane: &'static str) {
    counter!(WEB_SHED, "route" => route.to_owned(), "lane" => lane).increment(1);
}

/// A sign-in refused for `reason`: `refused`, `throttled`, `busy` or `csrf`.
pub fn sign_in_failure(reason: &'static str) {
    counter!(WEB_SIGN_IN_FAILURES, "reason" => reason).increment(1);
}

/// A web export in `format` ended with `outcome` (`completed`, `failed`,
/// `abandoned`) after `entries` entries.
pub fn web_export(format: &'static str, outcome: &'static str, entries: u64) {
    counter!(WEB_EXPORTS, "format" => format, "outcome" => outcome).increment(1);
    if entries > 0 {
        counter!(WEB_EXPORTED_ENTRIES, "format" => format).increment(entries);
    }
}
