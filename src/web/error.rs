//! The web view's one error type. Every handler returns it; it becomes a page
//! (or, under `/api/`, a JSON object) with the right status and a message a
//! person can act on. Bad input is always a 400 that says what is wrong;
//! internal causes (database errors, render failures) go to the log and never
//! to the page. A request refused for load ([`Busy`]) is a 503 with
//! `Retry-After`, marked so that the request metrics count it as shed.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

pub use super::limits::{Busy, Shed};

/// What went wrong, as the user is told.
#[derive(Debug)]
pub enum WebError {
    /// The request is malformed: a bad filter, cursor, id…; the message says which and why.
    BadRequest(String),
    /// Nothing there (an entry id that does not exist, an unknown path).
    NotFound(String),
    /// Not signed in, or the credentials are not valid (401).
    Unauthorized(String),
    /// Signed in, but the role does not allow this, or a form's CSRF token is wrong (403).
    Forbidden(String),
    /// Cannot answer now, and trying the same again soon will not help by
    /// itself (the query ran too long, the view has no user yet): a 503
    /// without `Retry-After`.
    Unavailable(String),
    /// Cannot answer now, but will soon by itself (the store is down, every
    /// download place is taken): a 503 with `Retry-After: retry_after` seconds.
    TryLater { message: String, retry_after: u64 },
    /// Every store connection of its lane stayed taken for as long as a
    /// request may wait: refused, to be retried later (503 with `Retry-After`).
    Busy(Busy),
    /// A bug or an unexpected store error; the detail is logged, not shown.
    Internal(String),
}

impl WebError {
    pub fn bad(message: impl Into<String>) -> WebError {
        WebError::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Unavailable(_) | WebError::TryLater { .. } | WebError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        match self {
            WebError::BadRequest(m)
            | WebError::NotFound(m)
            | WebError::Unauthorized(m)
            | WebError::Forbidden(m)
            | WebError::Unavailable(m)
            | WebError::TryLater { message: m, .. } => m,
            WebError::Busy(b) => b.message(),
            WebError::Internal(_) => {
                "Something went wrong inside pgtrail; the server log has the details."
            }
        }
    }

    /// The same error, rendered as JSON (for the API).
    pub fn json(self) -> ApiError {
        ApiError(self)
    }
}

impl From<tokio_postgres::Error> for WebError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code());
        match code {
            // query_canceled: our statement_timeout fired.
            Some("57014") => {
                tracing::warn!(error = %crate::pg::describe(&e), "web query ran too long");
                WebError::Unavailable("The query took too long; narrow the filters (a table, a time range) and try again.".into())
            }
            // Connection-level failures, admin shutdown, too many connections.
            Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                tracing::warn!(error = %crate::pg::describe(&e), "audit store unavailable");
                unavailable()
            }
            None if e.is_closed() || e.as_db_error().is_none() => {
                tracing::warn!(error = %crate::pg::describe(&e), "audit store unavailable");
                unavailable()
            }
            // A character the store's encoding cannot hold, in a value the user gave.
            Some("22021" | "22P05") => WebError::BadRequest(format!(
                "a value cannot be searched for: {}",
                crate::pg::describe(&e)
            )),
            _ => WebError::Internal(format!(
                "audit store query failed: {}",
                crate::pg::describe(&e)
            )),
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Query(e) => e.into(),
            other => WebError::Internal(format!("reading the audit store failed: {other}")),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(format!("rendering a page failed: {e}"))
    }
}

/// The store could not be reached.
pub fn unavailable() -> WebError {
    WebError::TryLater {
        message: "The audit store cannot be reached right now; try again shortly.".into(),
        retry_after: STORE_RETRY_SECONDS,
    }
}

/// `Retry-After` when the store cannot be reached: about as long as a
/// restarting PostgreSQL takes to accept connections again.
const STORE_RETRY_SECONDS: u64 = 5;

impl WebError {
    /// Puts the headers this error asks a client to honour on `res`.
    fn mark(&self, res: &mut Response) {
        match self {
            WebError::Busy(b) => b.mark(res),
            WebError::TryLater { retry_after, .. } => {
                crate::web::limits::retry_after_header(res, *retry_after)
            }
            _ => {}
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    status: u16,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::Internal(detail) = &self {
            tracing::error!(error = %detail, "web request failed");
        }
        let status = self.status();
        let page = ErrorPage {
            title: match &self {
                WebError::Busy(_) => "Server Busy",
                _ => status.canonical_reason().unwrap_or("Error"),
            },
            status: status.as_u16(),
            message: self.message(),
        };
        let mut res = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "rendering the error page failed");
                (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    )],
                    self.message().to_owned(),
                )
                    .into_response()
            }
        };
        self.mark(&mut res);
        res
    }
}

/// A [`WebError`] for the JSON API: `{"error": "message"}` with the same status.
#[derive(Debug)]
pub struct ApiError(pub WebError);

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        ApiError(e)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let WebError::Internal(detail) = &self.0 {
            tracing::error!(error = %detail, "API request failed");
        }
        let body = serde_json::json!({ "error": self.0.message() });
        let mut res = (self.0.status(), axum::Json(body)).into_response();
        self.0.mark(&mut res);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::limits::Lane;
    use std::time::Duration;

    #[test]
    fn a_refusal_for_load_says_when_to_retry_and_is_marked_shed() {
        let slow = Busy::new(Lane::Slow, Duration::from_millis(400));
        assert_eq!(slow.retry_after, 1);
        assert!(
            slow.message().contains("Try again in 1 s") && slow.message().contains("free-text")
        );
        assert_eq!(
            Busy::new(Lane::Quick, Duration::from_millis(2500)).retry_after,
            3
        );
        let res = WebError::Busy(slow.clone()).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(matches!(
            res.extensions().get::<Shed>(),
            Some(Shed(Lane::Slow))
        ));
        let api = WebError::Busy(slow).json().into_response();
        assert_eq!(api.headers()[header::RETRY_AFTER], "1");
        assert!(api.extensions().get::<Shed>().is_some());
    }

    #[test]
    fn a_store_that_is_down_says_when_to_retry_and_a_slow_query_does_not() {
        for res in [
            unavailable().into_response(),
            unavailable().json().into_response(),
        ] {
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()[header::RETRY_AFTER], "5");
            assert!(res.extensions().get::<Shed>().is_none(), "not load shed");
        }
        let slow = WebError::Unavailable("The query took too long".into()).into_response();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(slow.headers().get(header::RETRY_AFTER).is_none());
    }
}
