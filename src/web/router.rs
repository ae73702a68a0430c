//! The whole web view as one router ([`app`]): every route, and the layers
//! every response goes through (authentication, the bound on waiting for
//! store connections, security headers, timing, request metrics).

use std::time::Instant;

use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::error::WebError;
use super::state::AppState;
use super::{access, admin, api, assets, entry, export, history, log, signin, transaction};

/// The whole web view as a router; tests call it directly or serve it.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-out", post(signin::sign_out))
        .route("/admin", get(admin::page))
        .route("/admin/users", post(admin::add_user))
        .route("/admin/users/{name}", post(admin::change_user))
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/tokens/{name}/revoke", post(admin::revoke_token))
        .route("/", get(log::page))
        .route("/live", get(log::live))
        .route("/breakdown", get(log::breakdown::page))
        .route("/entries/{id}", get(entry::page))
        .route("/history", get(history::page))
        .route("/transactions/{xid}", get(transaction::page))
        .route("/api", get(super::api_page::page))
        .route("/api/v1/entries", get(api::list))
        .route("/api/v1/entries/{id}", get(api::one))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/assets/{name}", get(assets::serve))
        .merge(export::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            waits_bounded,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(axum::middleware::from_fn(super::metered::track))
        .with_state(state)
}

/// Bounds the waits for store connections of the whole request, its session
/// check included, by `web.max_wait` from its arrival.
async fn waits_bounded(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let deadline = Instant::now() + state.pool().max_wait();
    super::pool::waiting_until(deadline, next.run(req)).await
}

async fn not_found(uri: Uri) -> Response {
    let e = WebError::NotFound(format!(
        "There is no page at {}.",
        crate::text::clip(uri.path())
    ));
    if uri.path().starts_with("/api/") {
        e.json().into_response()
    } else {
        e.into_response()
    }
}

/// No inline script or style anywhere, so the policy can forbid them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Audit data is not for shared caches or the back-forward cache of a shared machine.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Adds `Server-Timing: total;dur=<ms>`: the time from the request's arrival
/// to its response being ready (the whole page rendered; a live stream's
/// first bytes). Browsers show it in their network panel, and
/// `bench/web.sh` measures with it, so the server's share of a slow page
/// is told apart from the network's.
async fn server_timing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let mut res = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("total;dur={ms:.1}")) {
        res.headers_mut().insert("server-timing", value);
    }
    res
}
