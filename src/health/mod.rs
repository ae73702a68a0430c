//! Health and metrics endpoints, apart from the web view: `/metrics`,
//! `/healthz` and `/readyz` on `metrics.listen` ([`server`]), and the
//! [`monitor`] task whose readings of the source's slot and the store's
//! checkpoint give the lag figures ([`lag`]), `/readyz`'s checks
//! ([`ready`]) and the WAL guard's verdict ([`guard`]); the monitor of
//! `pgtrail run` leaves them in the store for the web view ([`report`]).
//!
//! Each process serves its own figures: `pgtrail run` those of capture and of
//! the web view it runs alongside, `pgtrail web` those of its web view. Both
//! read the one `metrics.listen` of the config they are given, as they read
//! `web.listen`.

pub mod guard;
pub mod lag;
pub mod monitor;
pub mod notify;
pub mod ready;
pub mod report;
pub mod server;
pub mod service_status;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use ready::Role;

use crate::config::Config;

/// Runs the monitor for `role` and serves the endpoints on
/// `config.metrics.listen`, until `stop` turns true. The monitor of `run`
/// runs whether or not the endpoints do, since the WAL guard
/// ([`guard`]) watches through it; `web`'s only feeds `/readyz`. An address
/// that cannot be bound is a warning, and the process goes on without the
/// endpoints: capture and the web view matter more than their figures, and a
/// second process on one host with the same config (tests, a `web` beside a
/// `run`) must not stop for them.
pub fn spawn(
    config: &Config,
    role: Role,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let capture = matches!(role, Role::Capture { .. });
    let listen = config.metrics.listen;
    if listen.is_none() {
        tracing::info!("metrics.listen is off: no /metrics, /healthz or /readyz");
        if !capture {
            return None;
        }
    }
    let handle = listen.and_then(|_| match crate::metrics::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "the metrics endpoints are not served");
            None
        }
    });
    if handle.is_none() && !capture {
        return None;
    }
    let watched = monitor::Watched {
        source: capture.then(|| (config.source.clone(), config.slot.clone())),
        source_name: config.source_name.to_string(),
        store: config.store.clone(),
        checkpoint_of: capture.then(|| config.slot.clone()),
        every: config.metrics.poll_interval,
        wal_warn: if capture { config.wal_warn } else { None },
    };
    let poll_every = config.metrics.poll_interval;
    let path = config.path.clone();
    let (readings_tx, readings) = watch::channel(None);
    let monitor = tokio::spawn(monitor::run(watched, readings_tx));
    Some(tokio::spawn(async move {
        let served = match (listen, handle) {
            (Some(addr), Some(handle)) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let endpoints = server::Endpoints {
                        handle,
                        role,
                        readings: readings.clone(),
                        poll_every,
                    };
                    tracing::info!(address = %addr, "serving /metrics, /healthz and /readyz");
                    let mut stopped = stop.clone();
                    Some(
                        axum::serve(listener, server::router(endpoints))
                            .with_graceful_shutdown(async move {
                                let _ = stopped.wait_for(|s| *s).await;
                            })
                            .await,
                    )
                }
                Err(e) => {
                    tracing::warn!(address = %addr, error = %e, config = %path.display(),
                        "cannot listen on metrics.listen: no /metrics, /healthz or /readyz (set another address:port, or \"\" to turn them off)");
                    None
                }
            },
            _ => None,
        };
        if let Some(Err(e)) = served {
            tracing::error!(error = %e, "the metrics endpoints stopped");
        }
        // Without endpoints the monitor still runs (the WAL guard), until the stop.
        let _keep = readings;
        let _ = stop.wait_for(|s| *s).await;
        monitor.abort();
    }))
}
