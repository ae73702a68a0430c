//! The stylesheet and script, compiled into the binary (no CDN, no fonts to
//! fetch). Pages link them as `/assets/NAME?v=VERSION`, VERSION being a hash
//! of their content, so browsers may cache them for good.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::WebError;

pub const CSS: &str = include_str!("../../static/app.css");
pub const JS: &str = include_str!("../../static/app.js");

/// FNV-1a over both files: changes whenever either does.
pub const VERSION: u64 = fnv1a(JS.as_bytes(), fnv1a(CSS.as_bytes(), 0xcbf2_9ce4_8422_2325));

const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `GET /assets/{name}`
pub async fn serve(Path(name): Path<String>) -> Result<Response, WebError> {
    let (body, kind) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return Err(WebError::NotFound(format!(
                "There is no asset {:?}.",
                crate::text::clip(&name)
            )))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response())
}
