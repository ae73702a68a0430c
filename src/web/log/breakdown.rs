//! The breakdown of a view of the log, `/breakdown?<the view's parameters>`:
//! its [`facets`] and timeline, counted within their time budget on a slow
//! connection. The log page does not wait for them (they cost up to their
//! budget on every large view, more than a cheap page takes): it names this
//! page, which its script loads into it once it is shown (`?part=1`: the
//! fragment alone), and which a reader without JavaScript opens as a page
//! of its own.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use super::facets::{self, Facets};
use super::fetch::{asked, resolve};
use crate::web::access::Principal;
use crate::web::error::WebError;
use crate::web::query::{url, LogQuery};
use crate::web::AppState;

/// What the facet and timeline templates read (`insight.facets`).
pub struct Counted {
    pub facets: Facets,
}

#[derive(Template)]
#[template(path = "breakdown_part.html")]
struct Part {
    insight: Counted,
}

#[derive(Template)]
#[template(path = "breakdown.html")]
struct Page {
    insight: Counted,
    /// The log's view this is the breakdown of.
    log_url: String,
}

/// The log page's links to the breakdown of `q`'s view: the page, and the
/// fragment its script loads.
pub fn urls(q: &LogQuery) -> (String, String) {
    // From its first page: the facets count the whole view.
    let pairs = q.first_page().to_pairs();
    let mut part = pairs.clone();
    part.push(("part", "1".to_owned()));
    (url("/breakdown", &pairs), url("/breakdown", &part))
}

/// `GET /breakdown`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    // `part=1`: the fragment alone.
    let (q, now, part) = asked(raw.as_deref(), &who, false, |pairs| {
        let before = pairs.len();
        pairs.retain(|(k, v)| !(k == "part" && v == "1"));
        pairs.len() != before
    })?;
    let resolved = resolve(&state, &q.filter, now).await?;
    let insight = Counted {
        facets: facets::load(&state, &q, &resolved, now).await,
    };
    let html = if part {
        Part { insight }.render()?
    } else {
        Page {
            insight,
            log_url: q.first_page_url(|_| ()),
        }
        .render()?
    };
    Ok(Html(html).into_response())
}
