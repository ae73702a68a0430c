//! The `pgtrail` command line: parses arguments, loads the config, and hands
//! over to the library. Errors are printed with their causes and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use pgtrail::cli;
use pgtrail::cli::{setup, status, tables};
use pgtrail::config::Config;

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
    /// Show the slot, how far behind capture is, and what is stored; exit 2 when the slot is
    /// missing or lost. With --check, one line for Nagios/Icinga and exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    Status {
        /// Print one JSON object instead of `key: value` lines.
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// Print one monitoring-plugin line and exit with the plugin's state.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        thresholds: status::check::Thresholds,
    },
    /// Write stored entries in commit order, as JSON Lines, CSV, CEF or XLSX; every export is
    /// recorded in the audit store.
    Export(cli::export::Request),
    /// Manage the users of the web view (create the first admin with `user add NAME --role admin`).
    User {
        #[command(subcommand)]
        action: cli::users::UserCommand,
    },
    /// Manage API tokens for the JSON API (`Authorization: Bearer …`).
    Token {
        #[command(subcommand)]
        action: cli::tokens::TokenCommand,
    },
    /// Recompute the store's hash chains: exit 0 when every entry is as written, 1 naming the
    /// entries that were changed, deleted or inserted, 2 when the store could not be checked.
    Verify(cli::verify::Request),
    /// Print the newest signed chain head (store.signing_key_file) as one line of JSON, to keep
    /// outside the store.
    Digest,
}

/// `verify`'s exit status when the store could not be checked at all.
const VERIFY_ERROR: u8 = 2;
/// `status`'s exit status when the slot is missing or lost (the plugin's CRITICAL).
const STATUS_SLOT_UNUSABLE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A plugin's usage error is UNKNOWN, not clap's exit 2 (which would read as CRITICAL).
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--check") => {
            let error = anyhow::Error::from(e);
            let verdict = status::check::unknown(&error);
            println!("{}", verdict.line);
            return verdict.state.exit_code();
        }
        Err(e) => e.exit(),
    };
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
    let verify = matches!(cli.command, Command::Verify(_));
    let check = matches!(cli.command, Command::Status { check: true, .. });
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // A plugin that cannot read the status (config, source or store) says UNKNOWN on stdout.
        Err(e) if check => {
            let verdict = status::check::unknown(&e);
            println!("{}", verdict.line);
            verdict.state.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if verify {
                ExitCode::from(VERIFY_ERROR)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
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
        Command::Run => cli::daemon::run(config).await?,
        Command::Web => cli::daemon::web(config).await?,
        Command::Tables { json } => {
            let reports = tables::tables(&config).await?;
            if json {
                println!("{}", serde_json::to_string(&reports)?);
            } else {
                print!("{}", tables::to_text(&reports));
            }
        }
        Command::Status {
            json,
            check,
            thresholds,
        } => {
            let status = status::status(&config).await?;
            if check {
                let verdict = status::check::judge(&status, &thresholds);
                println!("{}", verdict.line);
                return Ok(verdict.state.exit_code());
            }
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", status.to_text());
            }
            if status.slot_unusable() {
                return Ok(ExitCode::from(STATUS_SLOT_UNUSABLE));
            }
        }
        Command::Export(request) => cli::export::run(&config, request).await?,
        Command::User { action } => cli::users::command(&config, action).await?,
        Command::Token { action } => cli::tokens::command(&config, action).await?,
        Command::Digest => cli::digest::run(&config).await?,
        Command::Verify(request) => {
            let report = cli::verify::run(&config, &request).await?;
            if request.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if !report.intact {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
