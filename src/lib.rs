//! pgtrail: an audit trail for PostgreSQL, from logical replication.
//!
//! Data flows one way, one module per stage:
//!
//! 1. [`replication`]: our client for the streaming replication protocol;
//!    delivers wal2json records and takes back the LSN that may be released.
//! 2. [`decode`]: one wal2json (format-version 2) record → a typed [`decode::Record`], no I/O.
//! 3. [`assemble`]: records → transactions → [`entry::AuditEntry`]s, dropping
//!    uncaptured tables and transactions already stored. It names a
//!    partition's changes by the root table ([`partition`]) and reads the
//!    options of each TRUNCATE ([`truncate`]).
//! 4. [`redact`]: per-table column rules, applied by the assembler to each row
//!    image before it is serialized: ignored columns dropped, redacted values
//!    replaced by a keyed hash, so neither reaches the store.
//! 5. [`store`]: batched COPY into the audit store, committed with the
//!    checkpoint in one transaction ([`store::writer`]).
//! 6. [`export`] and [`web`] (the web view and its JSON API) read the store.
//!
//! [`pipeline`] runs stages 1–5 as the daemon; [`setup`], [`source`] and
//! [`status`] prepare and inspect the databases; [`config`] is the TOML file.

pub mod assemble;
pub mod auth;
pub mod config;
pub mod context;
pub mod decode;
pub mod entry;
pub mod export;
pub mod lsn;
pub mod partition;
pub mod pipeline;
pub mod redact;
pub mod replication;
pub mod setup;
pub mod source;
pub mod status;
pub mod store;
pub mod table;
pub mod tables;
pub mod tls;
pub mod truncate;
pub mod web;
