//! Exports: entries out of the store, in commit order, as JSON Lines, CSV,
//! CEF or XLSX, optionally encrypted with age, for `pgtrail export` and the
//! web view's download alike.
//!
//! Each format is an [`EntryWriter`] (begin, one call per entry, finish) over
//! any [`Write`]; [`run`] feeds one from a query. Rows are streamed from the
//! server (`query_raw`) through a small bounded channel to a blocking thread
//! that does the writing, so memory stays flat whatever the size of the
//! export, a slow reader (a download) slows the query instead of filling
//! memory, and the async runtime never blocks on a file or a socket.
//!
//! An export that stops early (its writer failed, or a download's client went
//! away) cancels its query instead of reading it to the end.
//!
//! What an export was (who, which filters, how many, which format, encrypted
//! or not, finished, failed or abandoned) is recorded as one of pgtrail's own
//! events by the caller, with [`event`] and [`record`], once the export has
//! ended and the count is known.

pub mod cef;
pub mod csv;
pub mod encrypt;
pub mod jsonl;
pub mod lines;
pub mod xlsx;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

pub use crate::store::stored::{StoredEntry, ENTRY_COLUMNS, ENTRY_COLUMN_COUNT, FIELDS};

use crate::store::events::{Category, OwnEvent};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
    Cef,
    Xlsx,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Jsonl, Format::Csv, Format::Cef, Format::Xlsx];

    /// The name used in `--format`, `format=` and event details.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Cef => "cef",
            Format::Xlsx => "xlsx",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Cef => "cef",
            Format::Xlsx => "xlsx",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Cef => "text/plain; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    /// Text formats may go to a terminal; XLSX may not.
    pub fn is_binary(self) -> bool {
        self == Format::Xlsx
    }

    /// For people: "JSON Lines", "CSV"…
    pub fn label(self) -> &'static str {
        match self {
            Format::Jsonl => "JSON Lines",
            Format::Csv => "CSV",
            Format::Cef => "CEF",
            Format::Xlsx => "XLSX",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the CSV: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("writing the XLSX: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("reading from the audit store: {0}")]
    Store(String),
    #[error("encrypting the export: {0}")]
    Encrypt(String),
    #[error("the export's writer stopped unexpectedly: {0}")]
    Writer(String),
    /// The download's client went away before the end; the store's query was cancelled.
    #[error("the client stopped the download")]
    Abandoned,
}

impl From<tokio_postgres::Error> for ExportError {
    fn from(e: tokio_postgres::Error) -> Self {
        ExportError::Store(crate::pg::describe(&e))
    }
}

/// Writes entries in one format: `begin`, then `entry` for each, then `finish`,
/// which flushes and hands the output back.
pub trait EntryWriter<W>: Send {
    fn begin(&mut self) -> Result<(), ExportError>;
    fn entry(&mut self, e: &StoredEntry) -> Result<(), ExportError>;
    fn finish(self: Box<Self>) -> Result<W, ExportError>;
}

/// How to write an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub format: Format,
    /// CSV only: start with a UTF-8 byte order mark.
    pub bom: bool,
}

/// The writer for `options` over `out`. An XLSX spills its rows into files
/// in `scratch`, which must be given for it.
pub fn writer<W: Write + Send + 'static>(
    options: Options,
    out: W,
    scratch: Option<&Path>,
) -> Result<Box<dyn EntryWriter<W>>, ExportError> {
    Ok(match options.format {
        Format::Jsonl => Box::new(lines::Lines::new(out, jsonl::Jsonl)),
        Format::Csv => Box::new(csv::Csv::new(out, options.bom)),
        Format::Cef => Box::new(lines::Lines::new(out, cef::Cef)),
        Format::Xlsx => {
            let scratch = scratch.ok_or_else(|| {
                ExportError::Writer("an XLSX export needs a temporary directory".into())
            })?;
            Box::new(xlsx::Xlsx::new(out, scratch)?)
        }
    })
}

/// One export to run: what to write, where, and how.
pub struct Job<'a, W> {
    pub options: Options,
    /// Encrypt to these; a plain file when `None`.
    pub recipients: Option<&'a encrypt::Recipients>,
    /// Where an XLSX export makes its private temporary directory
    /// (`export.temp_dir`); the system's temporary directory when `None`.
    pub temp_dir: Option<&'a Path>,
    pub out: W,
    /// Hears of each entry written.
    pub progress: Option<Box<dyn Fn(Step) + Send>>,
    /// Resolves when whoever the export is for has gone away (a download's
    /// client): the export stops, cancelling its query if it still runs, and
    /// ends with [`ExportError::Abandoned`].
    pub gone: Option<BoxFuture<'a, ()>>,
}

/// A directory of this export's own, readable by this user only, for the
/// rows an XLSX holds until it is assembled: they are plaintext even when
/// the export is encrypted. Removed when dropped, whichever way the export
/// ends.
pub fn scratch_dir(base: Option<&Path>) -> Result<tempfile::TempDir, ExportError> {
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    tempfile::Builder::new()
        .prefix("pgtrail-export-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| {
            ExportError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create a private temporary directory in {} for the XLSX's rows: {e}; \
                     make it writable, or set export.temp_dir to a directory that is",
                    base.display()
                ),
            ))
        })
}

/// How an export ended: the entries written, and the output back (finished,
/// flushed, encryption closed) or what went wrong.
pub struct Outcome<W> {
    pub entries: u64,
    pub result: Result<W, ExportError>,
}

/// What an export reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many entries are written.
    Written(u64),
    /// Every entry is written; the file is being completed (for XLSX, the
    /// workbook is assembled now, which takes a while for a large one).
    Finishing,
}

/// Entries read ahead of the writer at most.
const AHEAD: usize = 256;

/// Why reading stopped before the query's last row.
enum Stop {
    /// The writer failed; its error is the one to report.
    Writer,
    /// [`Job::gone`] resolved.
    Gone,
}

/// Runs `select` (a statement returning [`ENTRY_COLUMNS`], in the order to
/// export) and writes every row as `job` says.
///
/// When the export stops before the query has sent its last row (the writer
/// failed, or the reader went away), the query is cancelled rather than read
/// to its end: a download nobody reads no longer keeps a store backend busy.
/// The cancel is sent only while the query runs, and `run` then reads the
/// query's stream to its end, so when it returns the connection is idle and
/// the caller may go on using it (to record the export's event, with
/// [`record`], which copes with a cancel that arrives late).
pub async fn run<W: Write + Send + 'static>(
    client: &Client,
    select: &str,
    params: &[&(dyn ToSql + Sync)],
    job: Job<'_, W>,
) -> Outcome<W> {
    let Job {
        options,
        recipients,
        temp_dir,
        out,
        progress,
        gone,
    } = job;
    let mut gone = gone.unwrap_or_else(|| Box::pin(std::future::pending()));
    let failed = |e| Outcome {
        entries: 0,
        result: Err(e),
    };
    let scratch = match options.format {
        Format::Xlsx => match scratch_dir(temp_dir) {
            Ok(d) => Some(d),
            Err(e) => return failed(e),
        },
        _ => None,
    };
    let out = match recipients {
        Some(r) => match encrypt::Sealed::encrypted(r, out) {
            Ok(s) => s,
            Err(e) => return failed(e),
        },
        None => encrypt::Sealed::plain(out),
    };
    // `None` says every row was read: only then is the file completed (the
    // workbook assembled, age's last chunk written), so that an export cut
    // short by the store is never a whole-looking file.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<StoredEntry>>(AHEAD);
    let writing = tokio::task::spawn_blocking(move || {
        let mut count = 0u64;
        let written =
            (|| {
                let mut w = writer(options, out, scratch.as_ref().map(|d| d.path()))?;
                w.begin()?;
                loop {
                    match rx.blocking_recv() {
                        Some(Some(e)) => {
                            w.entry(&e)?;
                            count += 1;
                            if let Some(p) = &progress {
                                p(Step::Written(count));
                            }
                        }
                        Some(None) => break,
                        None => return Err(ExportError::Writer(
                            "reading the entries stopped before the end; the output is incomplete"
                                .into(),
                        )),
                    }
                }
                if let Some(p) = &progress {
                    p(Step::Finishing);
                }
                w.finish()?.finish()
            })();
        // The writer and its files are gone by now; the directory goes too.
        if let Some(dir) = scratch {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "removing an export's temporary directory failed");
            }
        }
        (count, written)
    });

    let reading = async {
        let rows = client.query_raw(select, params.iter().copied()).await?;
        futures_util::pin_mut!(rows);
        let stop = loop {
            let row = tokio::select! {
                biased;
                () = &mut gone => break Stop::Gone,
                row = rows.try_next() => row?,
            };
            let Some(row) = row else {
                // The writer may have failed meanwhile; then this send fails too, harmlessly.
                let _ = tx.send(None).await;
                return Ok(());
            };
            let sent = tokio::select! {
                biased;
                () = &mut gone => break Stop::Gone,
                sent = tx.send(Some(StoredEntry::from_row(&row))) => sent,
            };
            if sent.is_err() {
                break Stop::Writer;
            }
        };
        // The query still runs, and `rows` is not at its end: cancel it, then
        // read what it still sends until its end (the cancel's error, or its
        // last rows if it finished first), so that no statement of the
        // caller's follows while the query might still be running.
        if let Err(e) = client
            .cancel_token()
            .cancel_query(crate::pg::tls::make_connect())
            .await
        {
            tracing::warn!(error = %crate::pg::describe(&e), "cancelling an export's query failed; its remaining rows are read and dropped");
        }
        let cancelled = loop {
            match rows.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => break false,
                Err(e) => break e.code() == Some(&SqlState::QUERY_CANCELED),
            }
        };
        tracing::debug!(cancelled, "an export stopped before its last row");
        match stop {
            Stop::Writer => Ok(()),
            Stop::Gone => Err(ExportError::Abandoned),
        }
    };
    let read = reading.await;
    drop(tx);
    let (entries, written) = match writing.await {
        Ok(done) => done,
        Err(e) => (0, Err(ExportError::Writer(e.to_string()))),
    };
    let result = match (read, written) {
        (Err(e), _) => Err(e),
        (Ok(()), w) => w,
    };
    Outcome { entries, result }
}

/// Where an export came from, for its event.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The pgtrail user, or the OS user for the CLI.
    pub actor: Option<String>,
    pub client_addr: Option<String>,
    /// `pgtrail cli` or `pgtrail web`.
    pub application: &'static str,
    /// Where the export went: a file name, `stdout`, `download`.
    pub destination: String,
}

/// Records an export's event on the connection the export ran on. A cancel
/// [`run`] sent just as its query ended by itself may reach the server only
/// now and cancel this INSERT instead; a cancelled INSERT has not committed,
/// and a cancel acts once, so it is tried once more.
pub async fn record(client: &Client, event: &OwnEvent) -> Result<i64, StoreError> {
    match crate::store::events::record(client, event).await {
        Err(StoreError::Query(e)) if e.code() == Some(&SqlState::QUERY_CANCELED) => {
            crate::store::events::record(client, event).await
        }
        done => done,
    }
}

/// The event recording an export that has ended, completed or not.
/// `filters` holds the filters given, by their web parameter names;
/// `abandoned` says the download's client went away before the end.
pub fn event(
    origin: &Origin,
    options: Options,
    encrypted: bool,
    filters: Map<String, Value>,
    entries: u64,
    error: Option<&str>,
    abandoned: bool,
) -> OwnEvent {
    let how = format!(
        "{}{}",
        options.format.label(),
        if encrypted { ", encrypted" } else { "" }
    );
    let summary = match error {
        None => format!(
            "exported {entries} {} as {how} to {}",
            if entries == 1 { "entry" } else { "entries" },
            origin.destination
        ),
        Some(_) => format!(
            "export as {how} to {} {} after {entries} {}",
            origin.destination,
            if abandoned {
                "abandoned by the client"
            } else {
                "failed"
            },
            if entries == 1 { "entry" } else { "entries" }
        ),
    };
    let mut ev = OwnEvent::new(Category::Export, "export", origin.application, summary)
        .client_addr(origin.client_addr.clone())
        .detail("format", options.format.as_str())
        .detail("filters", Value::Object(filters))
        .detail("entries", entries)
        .detail("encrypted", encrypted)
        .detail("bom", options.bom)
        .detail("destination", origin.destination.clone())
        .detail("completed", error.is_none())
        .detail("abandoned", abandoned);
    if let Some(e) = error {
        ev = ev.detail("error", e);
    }
    if let Some(a) = &origin.actor {
        ev = ev.actor(a.clone());
    }
    ev
}
