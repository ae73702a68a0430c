//! Integration tests for pgtrail: each test starts its own PostgreSQL 15 cluster, drives the real
//! `pgtrail` binary through its CLI, and checks the audit store against what really happened in
//! the source. Run with `cargo test --release --test integration`.

mod harness;

mod auth;
mod capture;
mod crash;
mod errors;
mod export;
mod large;
mod status;
mod types;
mod tls;
mod web;
mod context;
mod reload;
mod columns;
mod ddl;
mod fidelity;
