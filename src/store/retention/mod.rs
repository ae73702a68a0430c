//! Retention: old entries go a whole partition at a time, never row by row,
//! and every chain stays verifiable across the cut (`pgtrail.drop_partition`,
//! migration 18, writes an anchor per chain run it cuts and records the drop
//! in the events chain). This module holds what the config, `setup` and the
//! pass share.

pub mod period;

pub use period::Retention;

/// The session-level advisory lock one pass holds, so that one daemon of a
/// fleet sharing the store does the work and the others skip it.
pub const PASS_LOCK: i64 = 7_420_503;
