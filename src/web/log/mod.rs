//! The log page (`/`): filters, sortable columns, keyset pages, a match
//! count, and the live stream (`/live`, server-sent events) that adds new
//! matching entries to the top of the page while it is open.
//!
//! - [`mod@page`]: the page's template and its handler;
//! - [`fetch`]: reading one page of entries, and counting the matches;
//! - [`rows`]: the one-line view of an entry ([`rows::RowView`],
//!   `templates/row.html`) that the transaction page reuses, the actor
//!   context ([`rows::Context`]) and the time and key texts other pages show;
//! - [`gaps`]: the audit gaps placed among a page's rows;
//! - [`mod@live`]: the live stream, and [`frontier`]: which ids its next
//!   poll reads.

pub mod fetch;
pub mod frontier;
pub mod gaps;
pub mod live;
pub mod page;
pub mod rows;

pub use live::live;
pub use page::page;
