//! Integration tests for pgtrail: each test starts its own PostgreSQL 15 cluster, drives the real
//! `pgtrail` binary through its CLI, and checks the audit store against what really happened in
//! the source (the `layout` tests read the source tree instead). Run with
//! `cargo test --release --test integration`.

mod harness;

mod access_admin;
mod access_config;
mod access_escalation;
mod access_roles;
mod access_sessions;
mod access_signin;
mod auth;
mod capture;
mod capture_order;
mod columns;
mod context;
mod crash;
mod ddl;
mod errors;
mod events;
mod exit_codes;
mod export;
mod exports_formats;
mod exports_memory;
mod exports_temp;
mod exports_web;
mod fidelity;
mod gap;
mod hostile;
mod large;
mod layout;
mod libpq_env;
mod logs;
mod metrics;
mod metrics_prometheus;
mod metrics_web;
mod notify;
mod package;
mod partitions;
mod quarantine;
mod reload;
mod roles;
mod signing;
mod status;
mod status_check;
mod tls;
mod truncate;
mod types;
mod verify;
mod wal_guard;
mod web_api;
mod web_api_page;
mod web_browser;
mod web_capture;
mod web_diff;
mod web_entry;
mod web_filters;
mod web_health;
mod web_history;
mod web_limits;
mod web_load;
mod web_paging;
mod web_signin_throttle;
