//! `pgtrail export`: checks what was asked against the config (encryption,
//! binary output), runs the export to a file or standard output with a
//! progress bar on a terminal, and records the export as an event — also
//! when it fails part way, so that an interrupted export is not a silent one.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::entry::Action;
use crate::export::{Format, Job, Options, Origin, Step};
use crate::table::TableName;
use crate::web::query::Filter;

/// What the command line asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// CSV only: start with a UTF-8 byte order mark, for spreadsheet programs.
    #[arg(long)]
    pub bom: bool,
    /// Only this table: schema.table (quote parts with ""); repeat for several.
    #[arg(long = "table")]
    pub tables: Vec<TableName>,
    /// Only entries captured from this source database (its `[source] name`; `pgtrail` for
    /// pgtrail's own events); repeat for several.
    #[arg(long = "db")]
    pub dbs: Vec<String>,
    /// Only this action (INSERT, UPDATE, DELETE, TRUNCATE, DDL, EVENT); repeat for several.
    #[arg(long = "action")]
    pub actions: Vec<Action>,
    /// Only entries by this actor (the application's actor, or the database role where none).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries committed at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only entries committed before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Write to this file instead of standard output (required for XLSX); `.age` is appended
    /// when the export is encrypted.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not encrypt, although export.age_recipients is set (refused when
    /// export.require_encryption is).
    #[arg(long)]
    pub no_encrypt: bool,
}

impl Request {
    /// The log's filter these options mean, so the CLI selects exactly what the web view would.
    pub fn filter(&self) -> Filter {
        let text = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Filter {
            actions: self.actions.clone(),
            tables: self.tables.clone(),
            dbs: self.dbs.clone(),
            actor: self.actor.clone(),
            from: self.since.map(|t| (text(&t), t)),
            to: self.until.map(|t| (text(&t), t)),
            // The CLI runs with the store's own credentials: it sees everything.
            scope: crate::web::access::Scope::everything(),
            ..Filter::default()
        }
    }
}

/// The OS user running this process, by its real uid (the environment is
/// trivial to fake); `$USER` only when the uid has no name.
pub fn os_user() -> Option<String> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Some(user.name),
        _ => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| Some(format!("uid {uid}"))),
    }
}

/// Runs the export and records its event; the error, if any, says what went wrong.
pub async fn run(config: &Config, req: Request) -> Result<()> {
    if req.bom && req.format != Format::Csv {
        bail!("--bom applies to CSV only; drop it or use --format csv");
    }
    let encrypt = match (&config.export.recipients, req.no_encrypt) {
        (Some(_), true) if config.export.require_encryption => bail!(
            "--no-encrypt is refused: the config requires every export to be encrypted \
             (export.require_encryption = true in {})",
            config.path.display()
        ),
        (Some(r), false) => Some(r.clone()),
        (_, _) => None,
    };
    let out = req.out.as_ref().map(|p| match &encrypt {
        Some(_) if p.extension().is_none_or(|e| e != "age") => {
            let mut s = p.clone().into_os_string();
            s.push(".age");
            PathBuf::from(s)
        }
        _ => p.clone(),
    });
    if out.is_none() {
        if req.format.is_binary() {
            bail!(
                "an {} export is a binary file: give it a name with --out FILE",
                req.format.label()
            );
        }
        if encrypt.is_some() && std::io::stdout().is_terminal() {
            bail!(
                "exports are encrypted (export.age_recipients in {}), which is binary: \
                 give a file with --out FILE, or redirect standard output",
                config.path.display()
            );
        }
    }

    let client = crate::store::open(&config.store).await?;
    let filter = req.filter();
    let now = Utc::now();
    let resolved = filter
        .resolve(&client, now)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))
        .context("preparing the export's query")?;
    let select = filter.export_sql(&resolved, now);
    let options = Options {
        format: req.format,
        bom: req.bom,
    };
    let origin = Origin {
        actor: os_user(),
        client_addr: None,
        application: "pgtrail cli",
        destination: out
            .as_ref()
            .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string()),
    };

    let progress = match &out {
        Some(_) if std::io::stderr().is_terminal() => {
            let count = filter.count_all_sql(&resolved, now);
            let total: i64 = client
                .query_one(&count.text, &count.refs())
                .await
                .context("counting the entries to export")?
                .get(0);
            Some(progress_bar(total.max(0) as u64))
        }
        _ => None,
    };

    let sink: Result<Box<dyn Write + Send>> = match &out {
        // Readable by the owner only: an export holds whole row images.
        Some(path) => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))
            .map(|f| {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, f)) as Box<dyn Write + Send>
            }),
        None => Ok(Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        ))),
    };
    let (entries, result) = match sink {
        Ok(sink) => {
            let bar = progress.clone();
            let job = Job {
                options,
                recipients: encrypt.as_ref(),
                temp_dir: config.export.temp_dir.as_deref(),
                out: sink,
                progress: bar.map(|b| {
                    Box::new(move |step: Step| match step {
                        Step::Written(n) => b.set_position(n),
                        Step::Finishing => b.set_message("completing the file…"),
                    }) as Box<dyn Fn(Step) + Send>
                }),
                gone: None,
            };
            let outcome = crate::export::run(&client, &select.text, &select.refs(), job).await;
            (
                outcome.entries,
                outcome.result.map(drop).map_err(anyhow::Error::from),
            )
        }
        Err(e) => (0, Err(e)),
    };
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }

    let error = result.as_ref().err().map(|e| format!("{e:#}"));
    let event = crate::export::event(
        &origin,
        options,
        encrypt.is_some(),
        filter.to_json(),
        entries,
        error.as_deref(),
        false,
    );
    let recorded = crate::export::record(&client, &event).await;
    match (result, recorded) {
        (Ok(()), Ok(_)) => {
            if let Some(path) = &out {
                eprintln!(
                    "exported {entries} {} to {}{}",
                    if entries == 1 { "entry" } else { "entries" },
                    path.display(),
                    if encrypt.is_some() { " (encrypted with age)" } else { "" }
                );
            }
            Ok(())
        }
        (Ok(()), Err(e)) => Err(anyhow::Error::from(e)).context(
            "the export was written, but recording it in the audit store failed; treat the file as unaudited",
        ),
        (Err(e), Ok(_)) => Err(e.context(match &out {
            Some(p) => format!(
                "the export failed after {entries} entries; {} is incomplete (the failure is recorded in the audit store)",
                p.display()
            ),
            None => format!("the export failed after {entries} entries (the failure is recorded in the audit store)"),
        })),
        (Err(e), Err(r)) => Err(e.context(format!(
            "the export failed after {entries} entries, and recording that failed too: {r}"
        ))),
    }
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} entries  {rate}  {eta} left  {msg}",
    )
    .map(|s| {
        s.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", indicatif::HumanCount(state.per_sec() as u64));
            },
        )
    })
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
