//! The web view: server-rendered pages and a JSON API over the audit store.
//!
//! One module per page, each holding its askama template struct (templates
//! under `templates/`, all extending `base.html`) and its handler:
//! [`log`] (`/`, and the live stream `/live`), [`entry`] (View Difference,
//! `/entries/{id}`, and for pgtrail's own events, whose wording is
//! [`event`]'s), [`history`] (`/history`), [`transaction`]
//! (`/transactions/{xid}`), [`export`] (`/export`, downloads), [`signin`]
//! and [`admin`], and [`api`] (`/api/v1/…`), with [`api_page`] (`/api`), its reference to read; [`health`] is capture's
//! health as the log and admin pages show it (banners, gaps, the panel). [`query`] parses the filters
//! every list shares and builds their SQL; [`diff`] compares row images and
//! writes revert SQL; [`access`] finds who is asking; [`assets`] serves the
//! embedded CSS and JS; [`error`] is the one error type.
//!
//! Around them: [`router`] puts the routes and the layers every response
//! goes through together ([`app`]; [`metered`] counts requests by route);
//! [`mod@serve`] runs it ([`serve()`], [`spawn_alongside`]); [`state`] is
//! what every handler shares
//! ([`AppState`]), over the store connections of [`pool`]; [`reload`]
//! applies a reloaded config file.
//!
//! The web view only reads: its connections are `default_transaction_read_only`
//! with a statement timeout, so a slow filter cannot pile up work in the store.
//! Pages work without JavaScript; the script adds live updates and a copy
//! button. Every response carries a Content-Security-Policy without inline
//! script or style, `nosniff`, and `frame-ancestors 'none'`.

pub mod access;
pub mod admin;
pub mod api;
pub mod api_page;
pub mod assets;
pub mod diff;
pub mod entry;
pub mod error;
pub mod event;
pub mod export;
mod gate;
pub mod health;
pub mod history;
pub mod limits;
pub mod log;
pub mod metered;
pub mod pool;
pub mod query;
pub mod reload;
pub mod router;
pub mod serve;
pub mod signin;
pub mod state;
pub mod throttle;
pub mod transaction;

pub use pool::{Pool, POOL_SIZE};
pub use reload::Reload;
pub use router::app;
pub use serve::{serve, serve_on, spawn_alongside};
pub use state::AppState;
