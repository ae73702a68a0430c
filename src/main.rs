//! The `pgtrail` command line: parses arguments, loads the config, and hands
//! over to the library. Errors are printed with their causes and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use pgtrail::config::Config;
use pgtrail::entry::Action;
use pgtrail::export::{self, Format};
use pgtrail::table::TableName;
use pgtrail::{pipeline, setup, status, store, tables, web};

#[derive(Parser)]
#[command(
    name = "pgtrail",
    version,
    about = "An audit trail for PostgreSQL, from logical replication with wal2json"
)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short, env = "PGTRAIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the source and install what capture needs (slot, REPLICA IDENTITY FULL, the context
    /// trigger) and the store (database, schema). Safe to run again.
    Setup {
        /// Print the exact SQL it would run on the source and the store, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove from the source what setup installed (triggers, function; the slot with --drop-slot).
    /// The store and its entries are never touched.
    Teardown {
        /// Also drop the replication slot (WAL it holds is released; changes until the next setup are not captured).
        #[arg(long)]
        drop_slot: bool,
        /// Print the SQL it would run, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the capture daemon, and the web view on web.listen, until SIGTERM or SIGINT.
    Run,
    /// Serve only the web view (on web.listen), reading the store, until SIGTERM or SIGINT.
    Web,
    /// List the source's tables: captured or not and why, key, replica identity, context trigger, warnings.
    Tables {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the slot, how far behind capture is, and what is stored.
    Status {
        /// Print one JSON object instead of `key: value` lines.
        #[arg(long)]
        json: bool,
    },
    /// Write stored entries in commit order, as JSON Lines, CSV, CEF or XLSX; every export is
    /// recorded in the audit store.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// CSV only: start with a UTF-8 byte order mark, for spreadsheet programs.
        #[arg(long)]
        bom: bool,
        /// Only this table: schema.table (quote parts with ""); repeat for several.
        #[arg(long)]
        table: Vec<TableName>,
        /// Only this action (INSERT, UPDATE, DELETE, TRUNCATE, DDL, EVENT); repeat for several.
        #[arg(long)]
        action: Vec<Action>,
        /// Only entries by this actor (the application's actor, or the database role where none).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries committed at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only entries committed before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Write to this file instead of standard output (required for XLSX); `.age` is appended
        /// when the export is encrypted.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not encrypt, although export.age_recipients is set (refused when
        /// export.require_encryption is).
        #[arg(long)]
        no_encrypt: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGTRAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let path = cli
        .config
        .context("no config file given: pass --config FILE or set PGTRAIL_CONFIG (see config/pgtrail.example.toml)")?;
    let config = Config::load(&path)?;
    match cli.command {
        Command::Setup { dry_run: true } => {
            let plan = setup::plan_setup(&config).await?;
            for note in &plan.notes {
                println!("-- {note}");
            }
            print!("{}", plan.to_sql(&config));
        }
        Command::Setup { dry_run: false } => {
            for line in setup::setup(&config).await? {
                println!("{line}");
            }
            println!(
                "setup complete; start capture with: pgtrail --config {} run",
                path.display()
            );
        }
        Command::Teardown {
            drop_slot,
            dry_run: true,
        } => {
            let plan = setup::plan_teardown(&config, drop_slot).await?;
            for note in &plan.notes {
                println!("-- {note}");
            }
            print!("{}", plan.to_sql(&config));
        }
        Command::Teardown {
            drop_slot,
            dry_run: false,
        } => {
            for line in setup::teardown(&config, drop_slot).await? {
                println!("{line}");
            }
        }
        Command::Run => {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
            tokio::spawn(async move {
                wait_for_stop_signal(Some(reload_tx)).await;
                tracing::info!("stop requested; finishing what is whole");
                let _ = stop_tx.send(true);
            });
            let web = web::spawn_alongside(&config, stop_rx.clone());
            pipeline::run(config.clone(), stop_rx, reload_rx).await?;
            // The web view got the same stop; let its open requests finish.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), web).await;
        }
        Command::Web => {
            // Fail now, with the reason, if the store is not there or not set up.
            drop(store::open(&config.store).await?);
            let pool = web::Pool::new(config.store.clone(), web::POOL_SIZE);
            web::serve(&config, pool, async {
                wait_for_stop_signal(None).await;
                tracing::info!("stop requested");
            })
            .await?;
        }
        Command::Tables { json } => {
            let reports = tables::tables(&config).await?;
            if json {
                println!("{}", serde_json::to_string(&reports)?);
            } else {
                print!("{}", tables::to_text(&reports));
            }
        }
        Command::Status { json } => {
            let status = status::status(&config).await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", status.to_text());
            }
        }
        Command::Export {
            format,
            bom,
            table,
            action,
            actor,
            since,
            until,
            out,
            no_encrypt,
        } => {
            let request = export::cli::Request {
                format,
                bom,
                tables: table,
                actions: action,
                actor,
                since,
                until,
                out,
                no_encrypt,
            };
            export::cli::run(&config, request).await?;
        }
    }
    Ok(())
}

/// Returns on SIGTERM or SIGINT. SIGHUP asks the daemon to reload its config
/// (when `reload` is given); its default action would kill the process.
async fn wait_for_stop_signal(reload: Option<tokio::sync::watch::Sender<u64>>) {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => match &reload {
                    Some(tx) => {
                        tracing::info!("SIGHUP: reloading the config");
                        tx.send_modify(|n| *n += 1);
                    }
                    None => tracing::warn!("SIGHUP ignored: only `run` reloads its config"),
                },
            }
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
