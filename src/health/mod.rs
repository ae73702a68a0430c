//! Health and metrics endpoints, apart from the web view: `/metrics`,
//! `/healthz` and `/readyz` on `metrics.listen` ([`server`]), and the
//! [`monitor`] task whose readings of the source's slot and the store's
//! checkpoint give the lag figures ([`lag`]) and `/readyz`'s checks
//! ([`ready`]).
//!
//! Each process serves its own figures: `pgtrail run` those of capture and of
//! the web view it runs alongside, `pgtrail web` those of its web view. Both
//! read the one `metrics.listen` of the config they are given, as they read
//! `web.listen`.

pub mod lag;
pub mod monitor;
pub mod ready;
pub mod server;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use ready::Role;

use crate::config::Config;

/// Serves the endpoints on `config.metrics.listen` until `stop` turns true,
/// with the monitor for `role`. Off (`None`) when `metrics.listen` is off. An
/// address that cannot be bound is a warning, and the process goes on
/// without the endpoints: capture and the web view matter more than their
/// figures, and a second process on one host with the same config (tests,
/// a `web` beside a `run`) must not stop for them.
pub fn spawn(
    config: &Config,
    role: Role,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let Some(addr) = config.metrics.listen else {
        tracing::info!("metrics.listen is off: no /metrics, /healthz or /readyz");
        return None;
    };
    let handle = match crate::metrics::install() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "the metrics endpoints are not served");
            return None;
        }
    };
    let watched = monitor::Watched {
        source: match role {
            Role::Capture { .. } => Some((config.source.clone(), config.slot.clone())),
            Role::Web => None,
        },
        store: config.store.clone(),
        checkpoint_of: match role {
            Role::Capture { .. } => Some(config.slot.clone()),
            Role::Web => None,
        },
        every: config.metrics.poll_interval,
    };
    let poll_every = config.metrics.poll_interval;
    let path = config.path.clone();
    Some(tokio::spawn(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(address = %addr, error = %e, config = %path.display(),
                    "cannot listen on metrics.listen: no /metrics, /healthz or /readyz (set another address:port, or \"\" to turn them off)");
                return;
            }
        };
        let (readings_tx, readings) = watch::channel(None);
        let monitor = tokio::spawn(monitor::run(watched, readings_tx));
        let endpoints = server::Endpoints {
            handle,
            role,
            readings,
            poll_every,
        };
        tracing::info!(address = %addr, "serving /metrics, /healthz and /readyz");
        let served = axum::serve(listener, server::router(endpoints))
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        monitor.abort();
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics endpoints stopped");
        }
    }))
}
