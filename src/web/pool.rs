//! The web view's store connections: a pool (deadpool) whose waiting requests
//! are let through by a [`Gate`] (in turn, the newest first under overload),
//! split into two lanes so that slow work cannot take every connection from
//! the cheap pages, and a bound on the wait after which a request is refused
//! as busy ([`WebError::Busy`]) rather than queued without end. Connections
//! are opened when first needed (through [`crate::pg::connect`], with its TLS
//! and libpq conventions), replaced when the store closed them (it may
//! restart under a running web view), read-only unless the pool is
//! [`Pool::writable`], and every statement on them has a timeout.

use std::time::{Duration, Instant};

use deadpool::managed::{
    self, Metrics, PoolError, RecycleError, RecycleResult, TimeoutType, Timeouts,
};
use tokio_postgres::Client;

use super::error::{self, WebError};
use super::gate::{Gate, Pass};
use super::limits::Busy;
pub use super::limits::Lane;
use crate::pg::PgUrl;

/// Store connections the web view keeps open at most when its config does
/// not say (`web.connections`).
pub const POOL_SIZE: usize = 8;
/// Of those, the most slow work holds when the config does not say (`web.slow_connections`).
const SLOW_SIZE: usize = 2;
/// How long a request waits for a connection when the config does not say (`web.max_wait`).
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Longest any page's query may run.
const STATEMENT_TIMEOUT: &str = "30s";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

tokio::task_local! {
    /// When the request being served stops waiting for connections: its
    /// arrival plus the bound, so that the waits of its several connections
    /// (the session's, the filter's, the page's) add up to the bound at most.
    static DEADLINE: Instant;
}

/// Serves `work` (a request) with its waits for connections ending at `deadline` in all.
pub async fn waiting_until<F: std::future::Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// Opens and checks the store connections of one lane.
struct Store {
    url: PgUrl,
    read_only: bool,
}

impl managed::Manager for Store {
    type Type = Client;
    type Error = WebError;

    async fn create(&self) -> Result<Client, WebError> {
        let client = crate::pg::connect(&self.url, "pgtrail web").await.map_err(|e| {
            tracing::warn!(store = %self.url.endpoint(), error = %crate::pg::describe(&e), "cannot connect to the audit store");
            error::unavailable()
        })?;
        let read_only = if self.read_only { "on" } else { "off" };
        client
            .batch_execute(&format!(
                "SET default_transaction_read_only = {read_only}; SET statement_timeout = '{STATEMENT_TIMEOUT}'"
            ))
            .await?;
        Ok(client)
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<WebError> {
        // A store that restarted closed it: a new one is opened in its place.
        if client.is_closed() {
            return Err(RecycleError::message("the store closed the connection"));
        }
        Ok(())
    }
}

/// One lane: its connections, and the gate that orders the requests waiting
/// for them ([`Gate`]: in turn, the newest first under overload).
struct Lanes {
    pool: managed::Pool<Store>,
    gate: Gate,
}

impl Lanes {
    fn resize(&self, size: usize) {
        self.pool.resize(size.max(1));
        self.gate.resize(size);
    }
}

/// The store connections of the web view: a quick lane and a slow one, each
/// a pool with its gate, and the longest wait.
pub struct Pool {
    url: PgUrl,
    quick: Lanes,
    /// `None` for a pool that has no slow work (the writable one): slow
    /// requests, if any came, would share the quick lane.
    slow: Option<Lanes>,
    max_wait: Duration,
}

/// A connection taken from the [`Pool`]; back in its lane when dropped, and
/// then its place passes to the next waiting request.
pub struct Conn(managed::Object<Store>, #[allow(dead_code)] Pass);

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0
    }
}

/// A lane of `size` connections; `adaptive`: its waiters are served the
/// newest first under overload ([`Gate`]), else in turn.
fn lane(url: &PgUrl, read_only: bool, size: usize, adaptive: bool) -> Lanes {
    let store = Store {
        url: url.clone(),
        read_only,
    };
    let pool = managed::Pool::builder(store)
        .max_size(size.max(1))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and timeouts builds");
    Lanes {
        pool,
        gate: Gate::new(size, adaptive),
    }
}

impl Pool {
    /// Read-only connections, `size` in all, [`SLOW_SIZE`] of them for slow
    /// work (fewer when `size` is small); [`Pool::sized`] sets the lanes from the config.
    pub fn new(url: PgUrl, size: usize) -> Pool {
        let size = size.max(2);
        let slow = SLOW_SIZE.min(size / 2).max(1);
        Pool {
            quick: lane(&url, true, size - slow, true),
            slow: Some(lane(&url, true, slow, false)),
            url,
            max_wait: MAX_WAIT,
        }
    }

    /// A pool whose connections may write: for sessions, sign-in counters,
    /// users, tokens and pgtrail's own events, never for entries. One lane.
    pub fn writable(url: PgUrl, size: usize) -> Pool {
        Pool {
            quick: lane(&url, false, size, true),
            slow: None,
            url,
            max_wait: MAX_WAIT,
        }
    }

    /// The same pool with `connections` in all, `slow` of them for slow work,
    /// and requests refused after waiting `max_wait` (`[web]`'s keys).
    pub fn sized(mut self, connections: u32, slow: u32, max_wait: Duration) -> Pool {
        let slow = (slow as usize).max(1);
        let quick = (connections as usize).saturating_sub(slow).max(1);
        self.quick.resize(quick);
        if let Some(s) = &self.slow {
            s.resize(slow);
        }
        self.max_wait = max_wait;
        self
    }

    /// The same pool, refusing requests after waiting `max_wait`.
    pub fn waiting_at_most(mut self, max_wait: Duration) -> Pool {
        self.max_wait = max_wait;
        self
    }

    /// The store this pool connects to.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// The longest a request waits for a connection.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// A connection of the quick lane: a free one, or the next to be freed
    /// ([`Gate`]'s order); [`WebError::Busy`] after waiting the bound.
    pub async fn get(&self) -> Result<Conn, WebError> {
        self.take(Lane::Quick, self.max_wait).await
    }

    /// A connection of the slow lane, for work whose time grows with the
    /// store; [`WebError::Busy`] after waiting the bound.
    pub async fn get_slow(&self) -> Result<Conn, WebError> {
        self.take(Lane::Slow, self.max_wait).await
    }

    /// A connection of `lane` if one is free within `wait` (at most the
    /// bound): for work a page can do without, like counting its matches.
    pub async fn get_within(&self, lane: Lane, wait: Duration) -> Result<Conn, WebError> {
        self.take(lane, wait.min(self.max_wait)).await
    }

    async fn take(&self, lane: Lane, wait: Duration) -> Result<Conn, WebError> {
        // What is left of the request's bound, where it has one (a live
        // stream's later reads, after its response began, have not).
        let left = DEADLINE
            .try_with(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(wait);
        let wait = wait.min(left);
        let lanes = match (lane, &self.slow) {
            (Lane::Slow, Some(slow)) => slow,
            _ => &self.quick,
        };
        let started = Instant::now();
        let Some(pass) = lanes.gate.enter(wait).await else {
            return Err(busy(lane, &lanes.pool, self.max_wait));
        };
        // The gate lets through as many as the lane has connections, so one is
        // free or being returned: the rest of the bound covers that.
        let timeouts = Timeouts {
            wait: Some(wait.saturating_sub(started.elapsed())),
            create: Some(CONNECT_TIMEOUT),
            recycle: None,
        };
        match lanes.pool.timeout_get(&timeouts).await {
            Ok(object) => Ok(Conn(object, pass)),
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                Err(busy(lane, &lanes.pool, self.max_wait))
            }
            Err(PoolError::Timeout(_)) => {
                tracing::warn!(store = %self.url.endpoint(), "connecting to the audit store timed out");
                Err(error::unavailable())
            }
            Err(PoolError::Backend(e)) => Err(e),
            Err(e) => Err(WebError::Internal(format!(
                "the store connections' pool failed: {e:?}"
            ))),
        }
    }
}

/// A request refused: the lane stayed full for as long as it may wait.
fn busy(lane: Lane, pool: &managed::Pool<Store>, max_wait: Duration) -> WebError {
    let status = pool.status();
    tracing::debug!(
        lane = lane.as_str(),
        size = status.max_size,
        "no store connection free in time: busy"
    );
    WebError::Busy(Busy::new(lane, max_wait))
}
