//! The subcommands of `pgtrail`, one module each. `main.rs` parses the
//! command line and calls into these; each returns an error with context for
//! `main` to print.

pub mod daemon;
pub mod digest;
pub mod export;
pub mod generate;
pub mod recreate;
pub mod restore;
pub mod retention;
pub mod setup;
pub mod status;
pub mod tables;
pub mod tokens;
pub mod users;
pub mod verify;
