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
mod exports_formats;
mod exports_memory;
mod exports_temp;
mod exports_web;
mod fidelity;
mod hostile;
mod large;
mod partitions;
mod reload;
mod roles;
mod status;
mod tls;
mod truncate;
mod types;
mod verify;
mod web;
