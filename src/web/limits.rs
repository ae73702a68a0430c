//! How much one client may hold at once, and the answer past it: the count of
//! open live streams, per principal and in all ([`LiveStreams`]), and the
//! `429 Too Many Requests` page with `Retry-After` ([`too_many`]) that the
//! live stream and the sign-in throttle answer with; and how much the server
//! takes on at once: the [`Lane`]s of store connections, and [`Busy`], why a
//! request that waited too long for one is refused (a `503` with `Retry-After`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// When a browser may try a refused live stream again: its script reconnects
/// on its own, so this only paces it.
pub const LIVE_RETRY_SECONDS: u64 = 30;

/// The live streams open now: how many per principal, and in all.
#[derive(Default)]
pub struct LiveStreams {
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    by_who: HashMap<String, u32>,
    total: u32,
}

/// Why a live stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveRefusal {
    /// The principal holds its share already.
    Yours(u32),
    /// The server holds as many as it serves.
    All(u32),
}

impl LiveRefusal {
    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            LiveRefusal::Yours(n) => format!(
                "You have {n} live streams open already, the most one user may (web.live_streams_per_user): \
                 close a tab or window in live mode, or turn live mode off there, and try again."
            ),
            LiveRefusal::All(n) => format!(
                "The web view serves {n} live streams already, the most it serves at once (web.live_streams): \
                 try again in a while, or reload the page without live mode."
            ),
        }
    }
}

/// One open live stream's place; dropping it (the stream ended) frees the place.
pub struct LiveSlot {
    open: Arc<Mutex<Open>>,
    who: String,
}

impl LiveStreams {
    /// A place for one more live stream of `who`, within `per_user` and `total`.
    pub fn open(&self, who: &str, per_user: u32, total: u32) -> Result<LiveSlot, LiveRefusal> {
        // A panic never happens while the lock is held, so a poisoned lock holds whole counts.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.by_who.get(who).copied().unwrap_or(0);
        if mine >= per_user {
            return Err(LiveRefusal::Yours(mine));
        }
        if open.total >= total {
            return Err(LiveRefusal::All(open.total));
        }
        open.total += 1;
        *open.by_who.entry(who.to_owned()).or_insert(0) += 1;
        Ok(LiveSlot {
            open: self.open.clone(),
            who: who.to_owned(),
        })
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_who.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_who.remove(&self.who);
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct RefusedPage<'a> {
    title: &'a str,
    status: u16,
    message: &'a str,
}

/// `429 Too Many Requests` with `message` and `Retry-After: retry_after`.
pub fn too_many(message: &str, retry_after: u64) -> Response {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let page = RefusedPage {
        title: "Too Many Requests",
        status: status.as_u16(),
        message,
    };
    let mut res = match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the 429 page failed");
            (status, message.to_owned()).into_response()
        }
    };
    retry_after_header(&mut res, retry_after);
    res
}

/// Sets `Retry-After` to `seconds` (at least 1).
pub fn retry_after_header(res: &mut Response, seconds: u64) {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
}

/// Which connections a piece of work takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Pages that an index answers in milliseconds: an entry, a first page,
    /// the API's lists without free text, sessions.
    Quick,
    /// Work whose time grows with the store: a free-text search, counting
    /// matches. At most `slow_connections` at once.
    Slow,
}

impl Lane {
    /// The label of the lane in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Quick => "quick",
            Lane::Slow => "slow",
        }
    }
}

/// A request refused for load: which lane was full, when to try again, and
/// what the user is told.
#[derive(Debug, Clone)]
pub struct Busy {
    pub lane: Lane,
    /// Seconds, for `Retry-After`.
    pub retry_after: u64,
    message: String,
}

/// Put on a response refused for load, for the request metrics ([`super::metered`]).
#[derive(Debug, Clone, Copy)]
pub struct Shed(pub Lane);

impl Busy {
    /// Refused after waiting `waited` (the bound) in `lane`: try again after
    /// about as long again, in whole seconds, by when the line has moved on.
    pub fn new(lane: Lane, waited: Duration) -> Busy {
        let retry_after = waited.as_secs_f64().ceil().max(1.0) as u64;
        let what = match lane {
            Lane::Quick => "pages",
            Lane::Slow => "free-text searches and counts",
        };
        let message = format!(
            "The server is busy: this request waited {} ms (web.max_wait) for a store connection for {what}, \
             and other requests held them all. Try again in {retry_after} s.{}",
            waited.as_millis(),
            if lane == Lane::Slow {
                " Narrowing a free-text search (a table, a time range) makes it cheaper."
            } else {
                ""
            }
        );
        Busy {
            lane,
            retry_after,
            message,
        }
    }

    /// What the user is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `Retry-After` and the [`Shed`] mark on `res`.
    pub fn mark(&self, res: &mut Response) {
        retry_after_header(res, self.retry_after);
        res.extensions_mut().insert(Shed(self.lane));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_streams_are_counted_per_principal_and_in_all() {
        let streams = LiveStreams::default();
        let a1 = streams.open("ann", 2, 3).unwrap();
        let _a2 = streams.open("ann", 2, 3).unwrap();
        assert_eq!(streams.open("ann", 2, 3).err(), Some(LiveRefusal::Yours(2)));
        let _b1 = streams.open("bob", 2, 3).unwrap();
        assert_eq!(streams.open("bob", 2, 3).err(), Some(LiveRefusal::All(3)));
        drop(a1);
        let _b2 = streams.open("bob", 2, 3).unwrap();
        assert!(streams.open("ann", 2, 3).is_err());
        assert!(LiveRefusal::Yours(2)
            .message()
            .contains("web.live_streams_per_user"));
    }
}
