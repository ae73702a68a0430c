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
use chrono::Utc;

use super::facets::{self, Facets};
use super::fetch::resolve;
use crate::web::access::Principal;
use crate::web::error::WebError;
use crate::web::query::{self, url, LogQuery};
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
    let pairs = view_pairs(q);
    let mut part = pairs.clone();
    part.push(("part", "1".to_owned()));
    (url("/breakdown", &pairs), url("/breakdown", &part))
}

/// `q`'s filters and order, from its first page (facets count the whole view).
fn view_pairs(q: &LogQuery) -> Vec<(&'static str, String)> {
    let mut first = q.clone();
    first.cursor = None;
    first.live = false;
    first.to_pairs()
}

/// `GET /breakdown`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let now = Utc::now();
    let mut pairs = query::pairs(raw.as_deref())?;
    let before = pairs.len();
    pairs.retain(|(k, v)| !(k == "part" && v == "1"));
    let part = pairs.len() != before;
    let mut q = LogQuery::from_pairs(&pairs, false, now)?;
    q.filter.scope = who.scope();
    let resolved = resolve(&state, &q.filter, now).await?;
    let insight = Counted {
        facets: facets::load(&state, &q, &resolved, now).await,
    };
    let html = if part {
        Part { insight }.render()?
    } else {
        Page {
            insight,
            log_url: url("/", &view_pairs(&q)),
        }
        .render()?
    };
    Ok(Html(html).into_response())
}
