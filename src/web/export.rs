//! `GET /export?<the log's filters>&format=…`: the entries the log page shows
//! for these filters, all of them, in commit order, as a download in any
//! export format — encrypted with age when the config says so — and the
//! export recorded as an event with the client's address.
//!
//! The filters are parsed by the log page's parser, so a URL means the same
//! here as there and bad input is the same 400. The download streams: the
//! response starts at once and rows flow from the store as the client reads
//! (see [`crate::export::run`]); it runs on a connection of its own, outside
//! the page pool and its statement timeout, so a long export neither starves
//! the pages nor gets cut off. If the export fails part way, the response is
//! aborted rather than ended, so the client sees a failed download instead of
//! a short file. If the client goes away, the export stops and its query is
//! cancelled (also for an XLSX, which sends nothing before its last row), and
//! the event records the download as abandoned. So does a client that stays
//! connected but takes nothing for `web.export_stall_seconds`: the export is
//! ended, its query cancelled, and its place and store connection freed.
//!
//! At most [`MAX_RUNNING`] downloads run at once; another is a 503 that says
//! to retry. [`router`] is the route alone; [`download`] takes the signed-in user as
//! `actor` (the signed-in user, recorded with the export) and only within the user's scope; the route needs the `auditor` role.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, Extensions, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::access::Principal;
use super::error::WebError;
use super::query::{self, LogQuery, Scope};
use super::AppState;
use crate::auth::Role;
use crate::export::{self, Format, Options, Origin};

/// Parameters of the log that make no sense for an export, which is every
/// match in commit order.
const PAGE_ONLY: [&str; 4] = ["sort", "dir", "cursor", "limit"];
/// Bytes gathered before they go to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const CHUNKS_AHEAD: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Downloads running at once at most; one more is told to retry.
pub const MAX_RUNNING: usize = 4;
/// `Retry-After` for a download refused because [`MAX_RUNNING`] run: a
/// poll interval, since how long the running ones take is not known.
const EXPORT_RETRY_SECONDS: u64 = 10;

/// The export route, to merge into the web view's router.
pub fn router() -> Router<AppState> {
    Router::new().route("/export", get(handler))
}

async fn handler(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(raw): RawQuery,
    extensions: Extensions,
) -> Result<Response, WebError> {
    who.require(Role::Auditor, "export entries")?;
    let client_addr = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    download(
        state,
        raw.as_deref(),
        Some(who.name.clone()),
        who.scope(),
        client_addr,
    )
    .await
}

/// What an export request asks for, beyond the filters.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub query: LogQuery,
    pub options: Options,
    /// `encrypt=0`: the client asks for a plain file although recipients are configured.
    pub plain: bool,
}

/// Parses the query string: the log's filters plus `format`, `bom` and `encrypt`.
pub fn parse(raw: Option<&str>) -> Result<ExportRequest, WebError> {
    let mut format = None;
    let mut bom = None;
    let mut plain = false;
    let mut rest = Vec::new();
    for (k, v) in query::pairs(raw)? {
        let value = v.trim();
        let flag = |name: &str| match value {
            "1" | "true" | "on" => Ok(true),
            "" | "0" | "false" | "off" => Ok(false),
            _ => Err(WebError::bad(format!(
                "{name}: {:?} is not 1 or 0",
                crate::text::clip(value)
            ))),
        };
        match k.as_str() {
            "format" => {
                if format.is_some() {
                    return Err(WebError::bad(
                        "format is given more than once; give it once",
                    ));
                }
                format = Some(Format::parse(value).ok_or_else(|| {
                    WebError::bad(format!(
                        "format: {:?} is not an export format; use jsonl, csv, cef or xlsx",
                        crate::text::clip(value)
                    ))
                })?);
            }
            "bom" => bom = Some(flag("bom")?),
            "encrypt" => plain = !flag("encrypt")?,
            name if PAGE_ONLY.contains(&name) && !value.is_empty() => {
                return Err(WebError::bad(format!(
                    "{name} does not apply to an export, which holds every matching entry in commit order; drop it"
                )));
            }
            _ => rest.push((k, v)),
        }
    }
    let format = format
        .ok_or_else(|| WebError::bad("format is missing; use format=jsonl, csv, cef or xlsx"))?;
    let bom = bom.unwrap_or(false);
    if bom && format != Format::Csv {
        return Err(WebError::bad("bom applies to format=csv only; drop it"));
    }
    let query = LogQuery::from_pairs(&rest, false, Utc::now())?;
    Ok(ExportRequest {
        query,
        options: Options { format, bom },
        plain,
    })
}

/// The download. `actor` is the signed-in user; `scope` what they may see,
/// so an export never holds an entry its user could not open in the view.
pub async fn download(
    state: AppState,
    raw: Option<&str>,
    actor: Option<String>,
    scope: Scope,
    client_addr: Option<IpAddr>,
) -> Result<Response, WebError> {
    let mut req = parse(raw)?;
    req.query.filter.scope = scope;
    let settings = state.export_config();
    let recipients =
        match (&settings.recipients, req.plain) {
            (Some(_), true) if settings.require_encryption => return Err(WebError::bad(
                "encrypt=0 is refused: this server's config requires every export to be encrypted",
            )),
            (Some(r), false) => Some(r.clone()),
            _ => None,
        };
    let permit = state.export_permit().ok_or_else(|| WebError::TryLater {
        message: format!(
            "{MAX_RUNNING} exports are running already; try again when one has finished."
        ),
        retry_after: EXPORT_RETRY_SECONDS,
    })?;
    let url = state.pool().url().clone();
    let client = tokio::time::timeout(CONNECT_TIMEOUT, crate::pg::connect(&url, "pgtrail web export"))
        .await
        .map_err(|_| super::error::unavailable())?
        .map_err(|e| {
            tracing::warn!(error = %crate::pg::describe(&e), "cannot connect to the audit store for an export");
            super::error::unavailable()
        })?;
    let now = Utc::now();
    let filter = req.query.filter.clone();
    let resolved = filter.resolve(&client, now).await?;
    let select = filter.export_sql(&resolved, now);

    let options = req.options;
    let encrypted = recipients.is_some();
    let mut name = format!(
        "pgtrail-export-{}.{}",
        now.format("%Y%m%dT%H%M%SZ"),
        options.format.extension()
    );
    if encrypted {
        name.push_str(".age");
    }
    let origin = Origin {
        actor,
        client_addr: client_addr.map(|a| a.to_canonical().to_string()),
        application: "pgtrail web",
        destination: format!("download {name}"),
    };

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_AHEAD);
    let (abort, aborted) = oneshot::channel::<String>();
    let stall = Duration::from_secs(state.auth().config.limits.export_stall_seconds);
    let stalled = Arc::new(AtomicBool::new(false));
    let body_out = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        runtime: tokio::runtime::Handle::current(),
        stall,
        stalled: stalled.clone(),
    };
    tokio::spawn(async move {
        let _permit = permit;
        // The body's receiver is dropped when the server gives up on the
        // response: the client closed the connection.
        let watch = tx.clone();
        let job = export::Job {
            options,
            recipients: recipients.as_ref(),
            temp_dir: settings.temp_dir.as_deref(),
            out: body_out,
            progress: None,
            gone: Some(Box::pin(async move { watch.closed().await })),
        };
        let outcome = export::run(&client, &select.text, &select.refs(), job).await;
        let error = outcome.result.err().map(|e| e.to_string());
        // However the writer noticed (a chunk it could not send, or the
        // export stopped on purpose), a failed download whose client has
        // gone, or stopped reading, was abandoned.
        let abandoned = error.is_some() && (tx.is_closed() || stalled.load(Ordering::Relaxed));
        let event = export::event(
            &origin,
            options,
            encrypted,
            filter.to_json(),
            outcome.entries,
            error.as_deref(),
            abandoned,
        );
        let mut error = error;
        if let Err(e) = export::record(&client, &event).await {
            tracing::error!(error = %e, "recording a web export in the audit store failed");
            // An export nobody can see in the audit log is not handed out whole.
            error.get_or_insert_with(|| {
                format!("the export could not be recorded in the audit store: {e}")
            });
        }
        let ended = match (&error, abandoned) {
            (None, _) => "completed",
            (Some(_), true) => "abandoned",
            (Some(_), false) => "failed",
        };
        crate::metrics::record::web_export(options.format.as_str(), ended, outcome.entries);
        if let Some(e) = error {
            tracing::warn!(error = %e, entries = outcome.entries, "a web export failed");
            // The body ends with an error, so the server aborts the response
            // instead of ending it cleanly; without waiting for room after
            // chunks a stalled client may never take.
            let _ = abort.send(e);
        }
    });
    let stream = body_stream(rx, aborted);

    let content_type = if encrypted {
        "application/octet-stream"
    } else {
        options.format.content_type()
    };
    let disposition = format!("attachment; filename=\"{name}\"");
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The response body: the chunks as they come, unless the export fails:
/// then an error at once, ahead of any chunk still waiting.
fn body_stream(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    aborted: oneshot::Receiver<String>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut aborted = Some(aborted);
    futures_util::stream::poll_fn(move |cx| {
        if let Some(a) = aborted.as_mut() {
            match Pin::new(a).poll(cx) {
                Poll::Ready(Ok(e)) => {
                    aborted = None;
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
                // The export ended without an error.
                Poll::Ready(Err(_)) => aborted = None,
                Poll::Pending => {}
            }
        }
        rx.poll_recv(cx)
    })
}

/// A blocking writer into the response body: gathers [`CHUNK`] bytes, then
/// waits for room in the channel, so a slow client slows the export; one that
/// takes nothing for `stall` ends it.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    /// The writer runs on a blocking thread; it waits for room on the runtime.
    runtime: tokio::runtime::Handle,
    stall: Duration,
    stalled: Arc<AtomicBool>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(self.stall, self.tx.send(Ok(chunk))));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped the download",
            )),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client took nothing for {} s (web.export_stall_seconds), so the download was ended",
                        self.stall.as_secs()
                    ),
                ))
            }
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        match parse(Some(q)) {
            Err(WebError::BadRequest(m)) => m,
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn parses_filters_and_format() {
        let r = parse(Some(
            "format=csv&bom=1&table=public.t&action=UPDATE&last=24h",
        ))
        .unwrap();
        assert_eq!(
            r.options,
            Options {
                format: Format::Csv,
                bom: true
            }
        );
        assert_eq!(r.query.filter.tables.len(), 1);
        assert!(!r.plain);
        assert!(parse(Some("format=xlsx&encrypt=0")).unwrap().plain);
        assert!(err("table=public.t").contains("format is missing"));
        assert!(err("format=pdf").contains("pdf"));
        assert!(err("format=jsonl&bom=1").contains("csv only"));
        assert!(err("format=csv&cursor=abc").contains("cursor"));
        assert!(err("format=csv&limit=5").contains("limit"));
        assert!(err("format=csv&from=yesterday").contains("from"));
        assert!(err("format=csv&colour=red").contains("unknown parameter"));
        assert!(err("format=csv&live=1").contains("unknown parameter"));
    }
}
