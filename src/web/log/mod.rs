//! The log page (`/`): a search box and filters, sortable columns, keyset
//! pages, a match count, facets and a timeline, and the live stream (`/live`, server-sent events) that adds new
//! matching entries to the top of the page while it is open.
//!
//! - [`mod@page`]: the page's template and its handler;
//! - [`fetch`]: reading one page of entries, and counting the matches;
//! - [`rows`]: the one-line view of an entry ([`rows::RowView`],
//!   `templates/row.html`) that the transaction page reuses, the actor
//!   context ([`rows::Context`]) and the time and key texts other pages show;
//! - [`gaps`]: the audit gaps placed among a page's rows;
//! - [`mod@live`]: the live stream, and [`frontier`]: which ids its next
//!   poll reads;
//! - [`insight`]: what the page adds for an investigation: the search box's
//!   line and the events toggle; [`breakdown`]: the view's [`facets`] with
//!   the timeline (`/breakdown`), counted by [`tally`] in time [`slices`]
//!   within a time budget, apart from the page, which loads them; the
//!   count, the tally and a free-text search page read ids in [`windows`];
//! - [`matched`]: why a row matched a free-text search, as a marked snippet.

pub mod breakdown;
pub mod facets;
pub mod fetch;
pub mod frontier;
pub mod gaps;
pub mod insight;
pub mod live;
pub mod matched;
pub mod page;
pub mod rows;
pub mod slices;
pub mod tally;
pub mod windows;

pub use live::live;
pub use page::page;
