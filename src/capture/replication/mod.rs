//! The replication connection: our own client for PostgreSQL's streaming
//! replication protocol, on top of `postgres-protocol`'s message codecs
//! (tokio-postgres cannot open a `replication=database` session).
//!
//! [`connection`] opens and authenticates the session and runs the
//! replication commands; [`stream`] is the CopyBoth phase: XLogData in,
//! keepalives answered, standby status updates out. Both speak through
//! [`wire`] (the socket, its buffers, backend messages); the connection hands
//! its wire over to the stream when replication starts.

pub mod connection;
pub mod stream;
pub mod wire;

pub use connection::{ReplicationConnection, SystemIdentity};
pub use stream::{ReplicationStream, StreamMessage};
pub use wire::ServerError;

/// Anything that can go wrong on the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to the source database at {endpoint}: {source}; check that PostgreSQL runs there and source.url is right")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("the source database at {endpoint} rejected the login: {reason}")]
    Auth { endpoint: String, reason: String },
    #[error("{0}")]
    Server(ServerError),
    #[error("the replication connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the replication connection")]
    Closed,
    #[error("the source database sent nothing for {0} s, not even an answer to a status update asking for one (source.timeout_seconds): the network or the server is stalled; reconnecting")]
    Silent(u64),
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
    #[error("the source database at {0} does not accept TLS, but source.url's sslmode requires it; enable ssl on the server or use sslmode=prefer")]
    TlsRefused(String),
    #[error("cannot connect to the source database at {endpoint} over TLS: {reason}")]
    Tls { endpoint: String, reason: String },
}

impl ReplicationError {
    /// Errors worth retrying (the server restarted, the network dropped),
    /// as opposed to ones that will recur until someone changes something.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::Io(_)
            | ReplicationError::Closed
            | ReplicationError::Silent(_) => true,
            ReplicationError::Server(e) => {
                // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
                // 08* connection exceptions, 53* insufficient resources.
                e.code.starts_with("57P") || e.code.starts_with("08") || e.code.starts_with("53")
                // 55006 object_in_use: the slot is still held by our own previous
                // walsender, which the server has not noticed is gone.
                || e.code == "55006"
            }
            _ => false,
        }
    }
}
