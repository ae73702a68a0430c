//! The live stream (`GET /live`, server-sent events): new entries that match
//! the log's filters, sent as rendered rows that the page's script adds to
//! the top of the table. It ends when the server stops or the one who opened
//! it may no longer see it.
//!
//! Each principal may hold `web.live_streams_per_user` streams open, and the
//! server serves `web.live_streams` in all; past either a request is answered
//! `429` with `Retry-After` ([`crate::web::limits`]). A poll reads only the
//! ids it has not read yet ([`super::frontier`]): a stream without `after`
//! (or with `after=0`) starts at the newest entry, never at the first.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;

use super::fetch::resolve;
use super::frontier::{Frontier, Horizon, Range};
use super::rows::{RowFragment, RowView};
use crate::store::stored::StoredEntry;
use crate::web::access::{self, Principal};
use crate::web::error::WebError;
use crate::web::limits::{self, LiveSlot};
use crate::web::query::{self, LogQuery, Resolved};
use crate::web::AppState;

/// How often the live stream looks for new entries.
const LIVE_POLL: Duration = Duration::from_secs(1);
/// How often a live stream checks that whoever opened it may still see it.
const LIVE_RECHECK: Duration = Duration::from_secs(10);
/// At most this many entries per look, so a burst cannot flood a browser.
const LIVE_BATCH: i64 = 200;

/// The newest id, and the snapshot's horizon ([`Horizon`]), in one statement.
/// Ids are the entries' own table's (`entry_rows`): through the view's join
/// to the transactions `max(id)` is a join of every row, not one probe.
const HORIZON: &str = "SELECT coalesce((SELECT max(id) FROM pgtrail.entry_rows), 0), \
                              txid_snapshot_xmin(txid_current_snapshot()), \
                              txid_snapshot_xmax(txid_current_snapshot())";

/// State of one live stream.
struct Live {
    state: AppState,
    who: Principal,
    checked: tokio::time::Instant,
    q: LogQuery,
    resolved: Resolved,
    /// Rows have a Database cell, as the page that opened the stream.
    show_db: bool,
    frontier: Frontier,
    /// Ids beyond those read are visible already: poll again without waiting.
    behind: bool,
    pending: VecDeque<Event>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// This stream's place among the open ones; freed when the stream is dropped.
    _slot: LiveSlot,
}

impl Live {
    async fn poll(&mut self) -> Result<(), WebError> {
        let client = self.state.pool().get().await?;
        let row = client.query_one(HORIZON, &[]).await?;
        let horizon = Horizon {
            newest: row.get(0),
            xmin: row.get(1),
            xmax: row.get(2),
        };
        let range = self.frontier.plan(horizon, std::time::Instant::now());
        let rows = if range.upto > range.after {
            self.read(&client, &range).await?
        } else {
            Vec::new()
        };
        drop(client);
        let mut sent = Vec::with_capacity(rows.len());
        for r in &rows {
            let e = StoredEntry::from_row(r);
            let row = RowView::new(&e, &self.q, self.show_db);
            let html = RowFragment { r: &row }.render()?;
            let data = serde_json::json!({ "id": e.id, "html": html }).to_string();
            self.pending.push_back(
                Event::default()
                    .event("entry")
                    .id(e.id.to_string())
                    .data(data),
            );
            sent.push(e.id);
        }
        self.frontier
            .done(&range, &sent, rows.len() as i64 >= LIVE_BATCH);
        self.behind = self.frontier.behind(horizon);
        Ok(())
    }

    /// The matching entries of `range`, oldest first, at most [`LIVE_BATCH`].
    async fn read(
        &self,
        client: &tokio_postgres::Client,
        range: &Range,
    ) -> Result<Vec<tokio_postgres::Row>, WebError> {
        let mut sql = query::Sql::new(format!(
            "SELECT {} FROM pgtrail.entries WHERE true",
            crate::store::stored::ENTRY_COLUMNS
        ));
        self.q
            .filter
            .push_where(&mut sql, &self.resolved, Utc::now());
        let after = sql.param(range.after);
        let upto = sql.param(range.upto);
        let skip = sql.param(range.skip.clone());
        let limit = sql.param(LIVE_BATCH);
        sql.text.push_str(&format!(
            " AND id > {after} AND id <= {upto} AND NOT (id = ANY({skip})) ORDER BY id LIMIT {limit}"
        ));
        Ok(client.query(&sql.text, &sql.refs()).await?)
    }
}

/// `GET /live?<filters>&after=<id>`: new matching entries as server-sent
/// events (`entry`, data `{"id":…,"html":"<tr>…</tr>"}`), oldest first. A
/// reconnecting browser's `Last-Event-ID` takes over from `after`; without
/// either, or with `after=0`, the stream starts at the newest entry.
pub async fn live(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let mut pairs = query::pairs(raw.as_deref())?;
    let mut after: Option<i64> = None;
    let mut rest = Vec::new();
    for (k, v) in pairs.drain(..) {
        if k == "after" {
            after = Some(
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| {
                        WebError::bad(format!(
                            "after: {:?} is not an entry id",
                            crate::text::clip(&v)
                        ))
                    })?,
            );
        } else {
            rest.push((k, v));
        }
    }
    let mut q = LogQuery::from_pairs(&rest, true, Utc::now())?;
    q.filter.scope = who.scope();
    if q.cursor.is_some() || q.sort != Default::default() {
        return Err(WebError::bad("the live stream follows the newest-first order from the first page; drop sort, dir and cursor"));
    }
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id > 0);
    let limits = state.auth().config.limits;
    let slot = state
        .live_streams()
        .open(&who.name, limits.live_streams_per_user, limits.live_streams)
        .map_err(|refused| {
            tracing::info!(who = %who.name, ?refused, "live stream refused");
            refused
        });
    let slot = match slot {
        Ok(slot) => slot,
        Err(refused) => {
            return Ok(limits::too_many(
                &refused.message(),
                limits::LIVE_RETRY_SECONDS,
            ))
        }
    };
    let start = match last_event.or(after.filter(|a| *a > 0)) {
        Some(id) => id,
        None => {
            let client = state.pool().get().await?;
            client
                .query_one("SELECT coalesce(max(id), 0) FROM pgtrail.entry_rows", &[])
                .await?
                .get(0)
        }
    };
    let resolved = resolve(&state, &q.filter, Utc::now()).await?;
    let show_db = state.shows_db().await;
    let stopping = state.stopping();
    let live = Live {
        state,
        who,
        checked: tokio::time::Instant::now(),
        q,
        resolved,
        show_db,
        frontier: Frontier::new(start),
        behind: false,
        pending: VecDeque::new(),
        stopping,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(live, |mut l| async move {
        loop {
            if let Some(ev) = l.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), l));
            }
            if *l.stopping.borrow() {
                return None;
            }
            // Catching up, the next window is read at once; else in a while.
            let pause = if l.behind { Duration::ZERO } else { LIVE_POLL };
            tokio::select! {
                _ = l.stopping.changed() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
            if l.checked.elapsed() >= LIVE_RECHECK {
                // Fail closed: on doubt the stream ends, and the browser's
                // reconnect goes through sign-in like any request.
                match access::still_allowed(&l.state, &l.who).await {
                    Ok(true) => l.checked = tokio::time::Instant::now(),
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::debug!(error = ?e, "live stream could not recheck its principal; ending it");
                        return None;
                    }
                }
            }
            if let Err(e) = l.poll().await {
                l.behind = false;
                tracing::debug!(error = ?e, "live stream poll failed; retrying");
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
