//! The web view's request figures: every response counted by the matched
//! route's pattern (`/entries/{id}`, never the raw path, so the number of
//! series stays bounded whatever clients ask for), method and status, and
//! its time to the response's head; and the requests refused for load
//! (marked [`Shed`]) by route and lane.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::limits::Shed;
use crate::metrics::record;

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// Middleware: records the request once its response is ready.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |m| m.as_str())
        .to_owned();
    let method = method_label(req.method());
    let res = next.run(req).await;
    record::web_request(&route, method, res.status().as_u16(), started.elapsed());
    if let Some(Shed(lane)) = res.extensions().get::<Shed>() {
        record::web_shed(&route, lane.as_str());
    }
    res
}

/// The standard methods by name; any other (a client may send any token)
/// as `other`, so that clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
