//! pgtrail's own figures for Prometheus: what the parts count (entries
//! stored, store commits, reconnects, web requests…) and the process-wide
//! [`progress`] of capture that the health checks read.
//!
//! The parts record through the small functions of [`record`], which keep
//! every metric's name and labels in one place ([`names`]); the figures go to
//! the `metrics` crate's global recorder, which [`install`] sets to
//! `metrics-exporter-prometheus` when a process serves `/metrics`
//! (`crate::health` serves it). Without it, recording costs next to nothing.
//!
//! This module depends on nothing else of pgtrail, so that the store, the
//! pipeline and the web view can all record into it.

pub mod names;
pub mod progress;
pub mod record;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for the store's commits, in seconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets for the web view's requests, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// How often histograms are drained between scrapes, so they stay small.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot set up the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("another metrics recorder is installed already")]
    Taken,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle) and describes every metric. Must be called inside
/// a tokio runtime: it starts the histograms' upkeep.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::STORE_COMMIT_SECONDS.to_owned()),
            COMMIT_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::WEB_REQUEST_SECONDS.to_owned()),
            REQUEST_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| InstallError::Taken)?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    names::describe();
    ::metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
