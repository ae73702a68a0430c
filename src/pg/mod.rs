//! PostgreSQL plumbing shared by the source, the store and the replication
//! client: connection strings ([`PgUrl`]), slot names ([`SlotName`]), WAL
//! positions ([`Lsn`]), TLS, opening a connection and describing its errors,
//! and quoting for SQL text. Nothing here knows about audit entries.

mod connect;
mod conninfo;
pub mod lsn;
mod quote;
mod slot;
pub mod tls;
mod url;

pub use connect::{connect, describe};
pub use lsn::Lsn;
pub use quote::{quote_ident, quote_literal};
pub use slot::SlotName;
pub use url::PgUrl;
