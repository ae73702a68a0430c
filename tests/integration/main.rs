//! Integration tests for pgtrail: each test starts its own PostgreSQL 15 cluster, drives the real
//! `pgtrail` binary through its CLI, and checks the audit store against what really happened in
//! the source. Run with `cargo test --release --test integration`.

mod harness;

mod access;
mod auth;
mod capture;
mod columns;
mod context;
mod crash;
mod ddl;
mod errors;
mod events;
mod export;
mod fidelity;
mod large;
mod reload;
mod status;
mod tls;
mod types;
mod web;
