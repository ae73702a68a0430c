//! Shared harness for the integration tests: real PostgreSQL 15 clusters, the real `pgtrail`
//! binary, and readers and comparators for the audit store.
//!
//! Nothing here is mocked. A [`Cluster`] is a private `initdb`'d server in its own temp dir on its
//! own TCP port (tests run in parallel threads, so nothing is shared); a [`Daemon`] is the built
//! binary (`CARGO_BIN_EXE_pgtrail`) running `run` against a config file we write; one-shot
//! subcommands go through [`Pgtrail::cli`]. Tests synchronise by polling the store
//! ([`wait_until`], [`sync_via`]), never by sleeping.
//!
//! The central check is [`assert_store_matches_source`]: replay a table's audit entries in id
//! order and compare the result with the table's real rows, rendered in the store's value shapes
//! (see [`source_rows`]). Together with exact per-action [`Counts`] it catches losses, duplicates
//! and wrong images.
//!
//! The modules, in the order a test meets them:
//! - `cluster`: private PostgreSQL clusters on free ports; `sql`: connecting, quoting, reading rows;
//! - `daemon`: the config file, [`Pgtrail`] and a running [`Daemon`]; `cli`: one-shot runs;
//! - `env`: [`TestEnv`], one test's world; `sync`: waiting for the store to catch up;
//! - `slots`: LSNs, slots and checkpoints; `store`: reading entries; `replay`: checking them
//!   against the source; `jsonl`: export lines; `bank`: a pgbench-like workload;
//! - `pki`: a private CA and a server certificate for the TLS tests;
//! - `web`: the web view under test and its HTML helpers; `agent`: a client that signs in and
//!   fills forms; `events`: pgtrail's own events in the store; `synth`: synthetic entries written
//!   straight into the store; `exports`: the export tests' readers of every format.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use tempfile::TempDir;

mod agent;
pub mod bank;
mod cli;
mod cluster;
mod daemon;
mod env;
mod events;
pub mod exports;
mod fleet;
mod jsonl;
mod pki;
mod replay;
mod slots;
mod sql;
mod store;
mod sync;
mod synth;
mod web;

pub use agent::*;
pub use cli::*;
pub use cluster::*;
pub use daemon::*;
pub use env::*;
pub use events::*;
pub use exports::*;
pub use fleet::*;
pub use jsonl::*;
pub use pki::*;
pub use replay::*;
pub use slots::*;
pub use sql::*;
pub use store::*;
pub use sync::*;
pub use synth::*;
pub use web::*;

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn new_temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}
