//! Capture: from the replication stream to audit entries, no store involved.
//!
//! 1. [`replication`]: our client for the streaming replication protocol;
//!    delivers wal2json records and takes back the LSN that may be released.
//! 2. [`decode`]: one wal2json (format-version 2) record → a typed
//!    [`decode::Record`], no I/O.
//! 3. [`assemble`]: records → transactions → [`crate::entry::Event`]s,
//!    dropping uncaptured tables and transactions already stored. It reads
//!    the messages of pgtrail's triggers ([`context`]), names a partition's
//!    changes by the root table ([`partition`]) and reads the options of each
//!    TRUNCATE ([`truncate`]), acting only on messages that carry pgtrail's
//!    signature ([`signature`]).
//! 4. [`redact`]: per-table column rules, applied by the assembler to each
//!    row image ([`values`]) before it is serialized, so what they remove
//!    never reaches the store.

pub mod assemble;
pub mod context;
pub mod decode;
pub mod partition;
pub mod redact;
pub mod replication;
pub mod signature;
pub mod truncate;
pub mod values;
