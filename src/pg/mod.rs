//! PostgreSQL plumbing shared by the source, the store and the replication
//! client: connection strings ([`PgUrl`]) completed as libpq completes them
//! (service files, `PG*` variables, the password file), slot names
//! ([`SlotName`]), WAL positions ([`Lsn`]), TLS, opening a connection and
//! describing its errors, and quoting for SQL text. Nothing here knows about
//! audit entries.

mod connect;
mod conninfo;
mod libpq_env;
pub mod lsn;
mod params;
mod pgpass;
mod quote;
mod service_file;
mod slot;
pub mod tls;
mod url;

pub use connect::{connect, describe};
pub use libpq_env::LibpqEnv;
pub use lsn::Lsn;
pub use quote::{quote_ident, quote_literal};
pub use slot::SlotName;
pub use url::PgUrl;
