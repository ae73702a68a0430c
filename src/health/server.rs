//! The endpoints on `metrics.listen`: `GET /metrics` (Prometheus text
//! format, rendered by `metrics-exporter-prometheus`), `GET /healthz` (the
//! process answers) and `GET /readyz` (see [`super::ready`]). No sign-in:
//! they show figures, never entries, and listen apart from the web view.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::watch;

use super::monitor::Readings;
use super::ready::{readiness, Role};
use crate::metrics::progress::progress;

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub handle: PrometheusHandle,
    pub role: Role,
    pub readings: watch::Receiver<Option<Readings>>,
    pub poll_every: Duration,
}

/// The router; tests call it directly or serve it.
pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(endpoints)
}

/// The text format Prometheus scrapes.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(e): State<Endpoints>) -> Response {
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], e.handle.render()).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(e): State<Endpoints>) -> Response {
    let readings = e.readings.borrow().clone();
    let (ready, body) = readiness(
        e.role,
        readings.as_ref(),
        &progress().snapshot(),
        e.poll_every,
        SystemTime::now(),
    );
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn not_found(uri: Uri) -> Response {
    let body = json!({
        "error": format!(
            "there is nothing at {}: this address serves /metrics, /healthz and /readyz",
            crate::text::clip(uri.path())
        )
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
