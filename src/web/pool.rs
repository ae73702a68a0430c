//! The web view's store connections: a few, opened when first needed,
//! reopened when lost, read-only unless asked otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::Client;

use super::error::{self, WebError};
use crate::pg::PgUrl;

/// Store connections the web view keeps open at most.
pub const POOL_SIZE: usize = 4;
/// Longest any page's query may run.
const STATEMENT_TIMEOUT: &str = "30s";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A few store connections, opened when first needed and reopened when lost
/// (the store may restart under a running web view).
pub struct Pool {
    url: PgUrl,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    read_only: bool,
}

/// A connection taken from the [`Pool`]; back in the pool when dropped.
pub struct Conn<'a>(MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a pooled connection is open while taken")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a pooled connection is open while taken")
    }
}

impl Pool {
    pub fn new(url: PgUrl, size: usize) -> Pool {
        Pool {
            url,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            read_only: true,
        }
    }

    /// A pool whose connections may write: for sessions, sign-in counters,
    /// users, tokens and pgtrail's own events, never for entries.
    pub fn writable(url: PgUrl, size: usize) -> Pool {
        Pool {
            read_only: false,
            ..Pool::new(url, size)
        }
    }

    /// The store this pool connects to.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// A free connection if there is one, else waits for one in turn.
    pub async fn get(&self) -> Result<Conn<'_>, WebError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok());
        let mut guard = match free {
            Some(g) => g,
            None => self.slots[start % n].lock().await,
        };
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = tokio::time::timeout(CONNECT_TIMEOUT, crate::pg::connect(&self.url, "pgtrail web"))
                .await
                .map_err(|_| {
                    tracing::warn!(store = %self.url.endpoint(), "connecting to the audit store timed out");
                    error::unavailable()
                })?
                .map_err(|e| {
                    tracing::warn!(store = %self.url.endpoint(), error = %crate::pg::describe(&e), "cannot connect to the audit store");
                    error::unavailable()
                })?;
            let read_only = if self.read_only { "on" } else { "off" };
            client
                .batch_execute(&format!(
                    "SET default_transaction_read_only = {read_only}; SET statement_timeout = '{STATEMENT_TIMEOUT}'"
                ))
                .await?;
            *guard = Some(client);
        }
        Ok(Conn(guard))
    }
}
