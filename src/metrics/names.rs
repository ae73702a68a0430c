//! Every metric's name and what it means: the one list `/metrics` and
//! docs/operations.md show. Labels are bounded: the source database, an
//! action, a slot's `wal_status`, an error's kind, a route's pattern (never
//! a raw path), a status code, an export format.

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const BUILD_INFO: &str = "pgtrail_build_info";

// Capture and the store (`pgtrail run`), labelled by `source`.
pub const ENTRIES_STORED: &str = "pgtrail_entries_stored_total";
pub const TRANSACTIONS_STORED: &str = "pgtrail_transactions_stored_total";
pub const STORE_COMMIT_SECONDS: &str = "pgtrail_store_commit_duration_seconds";
pub const LAST_STORED_COMMIT: &str = "pgtrail_last_stored_commit_timestamp_seconds";
pub const DECODE_ERRORS: &str = "pgtrail_decode_errors_total";
pub const QUARANTINED: &str = "pgtrail_quarantined_transactions_total";
pub const STREAMING: &str = "pgtrail_capture_streaming";
pub const RECONNECTS: &str = "pgtrail_capture_reconnects_total";
pub const CAPTURE_ERRORS: &str = "pgtrail_capture_errors_total";

// The monitor's readings of the source and the store.
pub const LAG_BYTES: &str = "pgtrail_replication_lag_bytes";
pub const LAG_SECONDS: &str = "pgtrail_replication_lag_seconds";
pub const SLOT_RETAINED_WAL: &str = "pgtrail_slot_retained_wal_bytes";
pub const SLOT_WAL_STATUS: &str = "pgtrail_slot_wal_status";
pub const SLOT_SAFE_WAL_SIZE: &str = "pgtrail_slot_safe_wal_size_bytes";
pub const SLOT_ACTIVE: &str = "pgtrail_slot_active";
pub const WAL_WARN: &str = "pgtrail_wal_warn";
pub const MONITOR_ERRORS: &str = "pgtrail_monitor_errors_total";

// The web view.
pub const WEB_REQUESTS: &str = "pgtrail_web_requests_total";
pub const WEB_REQUEST_SECONDS: &str = "pgtrail_web_request_duration_seconds";
pub const WEB_SHED: &str = "pgtrail_web_shed_total";
pub const WEB_SIGN_IN_FAILURES: &str = "pgtrail_web_sign_in_failures_total";
pub const WEB_EXPORTS: &str = "pgtrail_web_exports_total";
pub const WEB_EXPORTED_ENTRIES: &str = "pgtrail_web_exported_entries_total";

/// The `wal_status` values PostgreSQL gives a slot; each is a series of
/// [`SLOT_WAL_STATUS`], 1 for the slot's present one, 0 for the others.
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// The `# HELP` lines.
pub fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the label version is pgtrail's version"
    );
    describe_counter!(
        ENTRIES_STORED,
        "Audit entries committed to the store, by source database and action"
    );
    describe_counter!(
        TRANSACTIONS_STORED,
        "Source transactions whose entries were committed to the store"
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Time one store commit took: the rest of the COPY, the checkpoint and COMMIT"
    );
    describe_gauge!(
        LAST_STORED_COMMIT,
        Unit::Seconds,
        "Source commit time (Unix seconds) of the last transaction stored"
    );
    describe_counter!(
        DECODE_ERRORS,
        "wal2json records that could not be decoded, kept raw in pgtrail.decode_errors"
    );
    describe_counter!(
        QUARANTINED,
        "Source transactions kept raw in pgtrail.quarantine"
    );
    describe_gauge!(
        STREAMING,
        "1 while a capture session streams changes from the source, else 0"
    );
    describe_counter!(RECONNECTS, "Capture sessions started again after one ended");
    describe_counter!(
        CAPTURE_ERRORS,
        "Capture sessions ended by an error, by the error's kind"
    );
    describe_gauge!(
        LAG_BYTES,
        Unit::Bytes,
        "Source WAL not yet processed: pg_current_wal_lsn() minus the stored checkpoint (or the slot's confirmed position, when further)"
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "0 while capture has processed the WAL the source had one poll earlier; else now minus the commit time of the last transaction stored"
    );
    describe_gauge!(
        SLOT_RETAINED_WAL,
        Unit::Bytes,
        "WAL the slot holds on the source: pg_current_wal_lsn() minus restart_lsn"
    );
    describe_gauge!(
        SLOT_WAL_STATUS,
        "1 for the slot's present wal_status (reserved, extended, unreserved, lost), 0 for the others"
    );
    describe_gauge!(
        SLOT_SAFE_WAL_SIZE,
        Unit::Bytes,
        "WAL that can still be written before the slot is lost (safe_wal_size); NaN when unlimited or lost"
    );
    describe_gauge!(
        SLOT_ACTIVE,
        "1 while a walsender holds the slot, 0 when not, -1 when the slot does not exist"
    );
    describe_gauge!(
        WAL_WARN,
        "1 while the slot holds more WAL than capture.wal_warn, else 0"
    );
    describe_counter!(
        MONITOR_ERRORS,
        "Monitor polls that failed, by what could not be read (source or store)"
    );
    describe_counter!(
        WEB_REQUESTS,
        "Web view requests answered, by route pattern, method and status"
    );
    describe_histogram!(
        WEB_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to a web view response's head, by route pattern and method"
    );
    describe_counter!(
        WEB_SHED,
        "Web view requests refused as busy (503 with Retry-After) after waiting web.max_wait for a store connection, by route pattern and lane (quick, slow)"
    );
    describe_counter!(
        WEB_SIGN_IN_FAILURES,
        "Refused sign-ins: refused (wrong name or password, disabled, locked), throttled (the address failed too often), csrf"
    );
    describe_counter!(
        WEB_EXPORTS,
        "Web exports ended, by format and outcome (completed, failed, abandoned)"
    );
    describe_counter!(
        WEB_EXPORTED_ENTRIES,
        "Entries written by web exports, by format"
    );
}
