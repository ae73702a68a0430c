//! Serving the web view: on a listener until shutdown ([`serve_on`],
//! [`serve`]), or beside capture under `pgtrail run` ([`spawn_alongside`]),
//! with its helpers (following config reloads, sweeping expired sessions).

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::access;
use super::pool::{Pool, POOL_SIZE};
use super::reload::Reload;
use super::router::app;
use super::state::AppState;
use crate::config::Config;

/// Connections that may write: sessions, sign-ins, users, tokens, events.
const WRITER_SIZE: usize = 2;

/// Serves the web view on `listener` until `shutdown` completes; in-flight
/// requests finish and live streams end. `pool` takes its lanes and its
/// longest wait from `config` (`web.connections`, `web.slow_connections`,
/// `web.max_wait`).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: &Config,
    pool: Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let auth = access::AuthState::new(config.web_auth.clone(), config.path.clone());
    // The lanes and the longest wait come from [web]; a reload keeps them.
    let load = config.web_auth.load;
    let pool = pool.sized(load.connections, load.slow_connections, load.max_wait);
    let writer = Pool::writable(config.store.clone(), WRITER_SIZE).waiting_at_most(load.max_wait);
    let state = AppState::new(pool, writer, auth, config.export.clone());
    let stopper = state.clone();
    let stopper_state = state.clone();
    let sweeper = tokio::spawn(sweep_sessions(state.clone()));
    let summarizer = tokio::spawn(super::throttle::summarize_while_serving(state.clone()));
    let reloader = reload.map(|r| tokio::spawn(r.follow(state.clone(), config.clone())));
    tracing::info!(address = %listener.local_addr()?, auth = ?config.web_auth.mode, "web view listening");
    // The peer address decides whether a proxy's user header is believed, and is recorded with every export.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopper.begin_shutdown();
        })
        .await;
    // Whichever way serving ended, the helpers end with it.
    sweeper.abort();
    summarizer.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    // Failed sign-ins still being counted are summarized before the server goes.
    super::throttle::write_summaries(&stopper_state, true).await;
    served.context("serving the web view")
}

/// Deletes expired sessions every few minutes, so that a session nobody uses
/// again does not stay in the store until the next sign-in. It runs for the
/// server's whole life and skips its turn while `auth = "none"`: a reload
/// may turn passwords on (or off) at any time.
async fn sweep_sessions(state: AppState) {
    loop {
        let auth = state.auth();
        tokio::time::sleep(sweep_every(auth.timeouts())).await;
        // The settings now, after the sleep: a reload may have changed them.
        let auth = state.auth();
        if auth.config.mode == crate::config::AuthMode::None {
            continue;
        }
        let swept = match state.writer().get().await {
            Ok(client) => crate::auth::sessions::sweep(&*client, auth.timeouts())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:?}")),
        };
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "expired sessions swept"),
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep expired sessions; trying again later")
            }
        }
    }
}

/// Every five minutes, or as often as the idle limit when that is shorter:
/// an expired session stays in the store for at most that long.
fn sweep_every(timeouts: crate::auth::sessions::Timeouts) -> Duration {
    Duration::from_secs(timeouts.idle_seconds.clamp(1, 300))
}

/// Binds `config.web_listen` and serves until `shutdown`.
pub async fn serve(
    config: &Config,
    pool: Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.web_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (web.listen in {})",
                config.web_listen,
                config.path.display()
            )
        })?;
    serve_on(listener, config, pool, shutdown, reload).await
}

/// For `pgtrail run`: the web view beside capture, stopping when `stop` turns
/// true. A web view that cannot start (its port taken) is logged and capture
/// goes on: the audit trail matters more than its viewer.
pub fn spawn_alongside(
    config: &Config,
    mut stop: watch::Receiver<bool>,
    reload: watch::Receiver<crate::config::Reading>,
) -> tokio::task::JoinHandle<()> {
    let config = config.clone();
    tokio::spawn(async move {
        let pool = Pool::new(config.store.clone(), POOL_SIZE);
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let reload = Reload {
            signal: reload,
            record: false,
        };
        if let Err(e) = serve(&config, pool, shutdown, Some(reload)).await {
            tracing::error!(error = %format!("{e:#}"), "the web view is not served; capture goes on");
        }
    })
}
