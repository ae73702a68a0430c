//! The log's filters, sort and cursor: parsed from the query string (the log
//! page, the live stream and the API share one parser, so a URL means the same
//! everywhere) and turned into one parameterised SQL statement.
//!
//! - [`params`]: the query string as a [`LogQuery`] (its [`Filter`]s, sort,
//!   cursor and limit), and back into parameters and URLs;
//! - [`order`]: the sort keys, directions and the keyset [`Cursor`];
//! - [`scope`]: what the one asking may see, which every query carries;
//! - [`sql`]: the statement being built ([`Sql`]), values always as parameters;
//! - [`statement`]: the statements themselves: a page, a count, an export;
//! - [`resolve`]: what the filters need from the store first (the id range of
//!   a time filter, the key match);
//! - [`keys`]: matching a primary-key value ([`PkMatch`]) and the key columns
//!   of the stored tables; [`key_book`]: those kept by the web view between
//!   requests, brought up to date from the entries stored since;
//! - [`search`]: the search box's `key:value` line, read into the same
//!   parameters as the filter form and written back from a filter;
//! - [`events`]: pgtrail's own events, left out of a view unless it asks.
//!
//! Invariants:
//! - No user text is ever spliced into SQL: every value is a `$n` parameter;
//!   only fixed fragments chosen by match arms are written into the text.
//! - Pagination is keyset: a cursor holds the sort key and id of the last row
//!   shown, and the next page is "strictly after it" in the same order. `id`
//!   ends every ordering, so the order is total, and an entry stored after the
//!   first page was read can never shift or repeat rows on later pages.
//! - Time order is `id` order: ids are assigned in commit order, and the
//!   primary key index serves it without a sort.
//!
//! Index use (see `sql/store/0001_entries.sql` and `0003_web_columns.sql`):
//! a time range becomes an id range too (ids follow commit order;
//! [`Filter::resolve`] finds the bounds by binary search on the primary key),
//! so a window far in the past is read directly; a primary-key value uses the
//! btree on `row_key` (the hash of table and key text,
//! [`crate::entry::row_key`]), computed for each table it can be a key of
//! ([`Filter::pk_match`]); a table uses `(schema_name, table_name, id)`;
//! an actor, and the sort by actor, use `(coalesce(actor, ''), id)`; one
//! client address, and the sort by IP, use `(coalesce(host(client_addr), ''),
//! id)` (the plain columns pgtrail fills from the context). Everything else
//! walks the primary key in the sort order and filters, which is quick while
//! matches are common and slow for rare ones; free text is bounded by time
//! instead (see `log::fetch::fetch_page`).

pub mod events;
pub mod key_book;
pub mod keys;
pub mod order;
pub mod params;
pub mod resolve;
pub mod scope;
pub mod search;
pub mod sql;
pub mod statement;

pub use events::Events;
pub use key_book::KeyBook;
pub use keys::{all_tables, key_columns, key_texts, minify_json, PkMatch};
pub use order::{Cursor, Dir, Sort, SortKey};
pub use params::{
    pairs, parse_time, table_param, url, Filter, LogQuery, DEFAULT_LIMIT, MAX_LIMIT, PARAMS,
};
pub use resolve::Resolved;
pub use scope::Scope;
pub use sql::Sql;
pub use statement::{like_escape, PageSql, ENTRIES_PROBED, RARE_ACTIONS};
