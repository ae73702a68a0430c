//! pgtrail: an audit trail for PostgreSQL, from logical replication.
//!
//! Data flows one way, one folder per part:
//!
//! ```text
//! source ──wal2json──▶ capture ──Event──▶ store ◀── web, export
//!                         ▲                 │
//!                         └── pipeline ─────┘  (the daemon wires them and keeps them running)
//! ```
//!
//! - [`capture`]: the replication client, decoding of wal2json records,
//!   assembly of transactions into audit entries, redaction.
//! - [`entry`]: the audit entry and the [`entry::Event`]s capture hands to the store.
//! - [`store`]: the audit store: schema migrations, the batched writer that
//!   commits entries with the checkpoint, pgtrail's own events, and the
//!   stored entry as read back.
//! - [`pipeline`]: the daemon (`pgtrail run`): capture into the store, with
//!   reconnects, backoff and config reloads.
//! - [`source`]: the source database over an ordinary connection: checks and
//!   catalog lookups.
//! - [`web`]: the web view and its JSON API; [`export`]: the export formats;
//!   [`archive`]: archive files of a source's time range, for retention;
//!   [`auth`]: users, sessions and API tokens.
//! - [`cli`]: one module per subcommand; [`config`]: the TOML file.
//! - [`metrics`]: the figures every part records for Prometheus;
//!   [`health`]: `/metrics`, `/healthz` and `/readyz`, and the monitor that
//!   reads the slot and the lag.
//! - Shared plumbing: [`pg`] (connection strings, slots, LSNs, TLS, quoting),
//!   [`table`] (table names and capture patterns), [`text`].

pub mod archive;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod config;
pub mod entry;
pub mod export;
pub mod health;
pub mod metrics;
pub mod pg;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod table;
pub mod text;
pub mod web;
