//! The `pgtrail` command line: parses arguments, loads the config, and hands
//! over to the library. Errors are printed with their causes and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser, Subcommand};

use pgtrail::cli;
use pgtrail::cli::{recreate, setup, status, tables};
use pgtrail::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "pgtrail",
    version,
    about = "An audit trail for PostgreSQL, from logical replication with wal2json"
)]
struct Cli {
    /// The TOML config file [default: /etc/pgtrail/pgtrail.toml].
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
        /// Replace a lost (or dropped) slot with a new one and record the audit gap, the changes
        /// that were not captured, as a `gap` EVENT in the store.
        #[arg(long, conflicts_with = "dry_run")]
        recreate_slot: bool,
        /// Bind this config's [source] name to the database source.url now reaches, when the store
        /// has it bound to another (the same database moved to a replaced server, or restored from
        /// a dump, which gives it a new OID); recorded as a `config` EVENT. Another database needs
        /// its own [source] name instead.
        #[arg(long, conflicts_with = "dry_run")]
        rebind_source: bool,
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
    /// Drop the partitions of entries past the store's retention now ([store] retention), or list
    /// them with --dry-run.
    Retention(cli::retention::Request),
    /// Load an archive that retention wrote back into the store, into the partition it was
    /// dropped from, for an investigation; checked against what the store recorded at the drop,
    /// and held from retention (--hold, 30 days). Runs as the store's owner, like setup.
    Restore(cli::restore::Request),
}

/// `verify`'s exit status when the store could not be checked at all.
const VERIFY_ERROR: u8 = 2;
/// `status`'s exit status when the slot is missing or lost (the plugin's CRITICAL).
const STATUS_SLOT_UNUSABLE: u8 = 2;

fn main() -> ExitCode {
    // First: a reload sent to a daemon still starting must not end it (cli::daemon's doc).
    let hangup = cli::daemon::HeldHangup::hold();
    // scripts/package.sh's man pages and completions, from the definition above.
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(dir) = cli::generate::requested(&args) {
        return match dir.and_then(|dir| cli::generate::write_files(Cli::command(), &dir)) {
            Ok(files) => {
                files.iter().for_each(|f| println!("{}", f.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    let daemon = matches!(cli.command, Command::Run | Command::Web);
    let hangup = if daemon {
        Some(hangup)
    } else {
        hangup.release();
        None
    };
    // The config is read before logging starts, since it says how to log; an error reading it
    // waits until logging is set up and is then reported like any other.
    let env_format = log_format_from_env();
    let loaded = config_path(cli.config.clone()).and_then(|path| Ok((Config::load(&path)?, path)));
    let format = match (&env_format, &loaded) {
        (Ok(Some(format)), _) => *format,
        (_, Ok((config, _))) => config.log_format,
        _ => LogFormat::default(),
    };
    init_logging(format);
    let loaded = env_format.and(loaded);

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
    // The daemon's handlers, before SIGHUP is let through.
    let signals = hangup.map(|hangup| {
        let _runtime = runtime.enter();
        let signals = cli::daemon::Signals::install();
        hangup.release();
        signals
    });
    let verify = matches!(cli.command, Command::Verify(_));
    let capture = matches!(cli.command, Command::Run);
    let check = matches!(cli.command, Command::Status { check: true, .. });
    match runtime.block_on(run(cli.command, loaded, signals)) {
        Ok(code) => code,
        // A plugin that cannot read the status (config, source or store) says UNKNOWN on stdout.
        Err(e) if check => {
            let verdict = status::check::unknown(&e);
            println!("{}", verdict.line);
            verdict.state.exit_code()
        }
        Err(e) => {
            // In JSON the last word is an event like the others, unless PGTRAIL_LOG silences errors.
            if format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            if verify {
                ExitCode::from(VERIFY_ERROR)
            } else if capture {
                // A permanent error has a code of its own (docs/operations.md, "Exit codes").
                ExitCode::from(pgtrail::pipeline::permanent::exit_code(&e))
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The config file read when neither `--config` nor `PGTRAIL_CONFIG` names one.
const DEFAULT_CONFIG: &str = "/etc/pgtrail/pgtrail.toml";

/// The config file to read: the one given, else [`DEFAULT_CONFIG`] when it exists.
fn config_path(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let default = PathBuf::from(DEFAULT_CONFIG);
    // A default that cannot even be looked at (permissions) is still the one meant: reading it
    // then says why it cannot be read.
    if let Ok(false) = default.try_exists() {
        bail!(
            "no config file: pass --config FILE, set PGTRAIL_CONFIG=FILE, or install one at \
             {DEFAULT_CONFIG} (which does not exist); config/pgtrail.example.toml explains every key"
        );
    }
    Ok(default)
}

/// `PGTRAIL_LOG_FORMAT`, which overrides `log.format` (and applies when the config cannot be read).
fn log_format_from_env() -> Result<Option<LogFormat>> {
    match std::env::var("PGTRAIL_LOG_FORMAT") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("PGTRAIL_LOG_FORMAT: use {}", LogFormat::ALLOWED)
        }
        Ok(name) => LogFormat::parse(&name)
            .map(Some)
            .map_err(|m| anyhow::anyhow!("PGTRAIL_LOG_FORMAT: {m}")),
    }
}

/// Log to stderr at the level `PGTRAIL_LOG` asks for, as text or as one JSON object per line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGTRAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).init();
        }
        // The event's fields at the top level, beside timestamp, level and target, so that a log
        // shipper finds `server_lsn` where it finds `message`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `signals`: the daemon's handlers, for `run` and `web`.
async fn run(
    command: Command,
    loaded: Result<(Config, PathBuf)>,
    signals: Option<cli::daemon::Signals>,
) -> Result<ExitCode> {
    // An archive is checked on its own: it needs no config.
    if let Command::Verify(cli::verify::Request {
        archive: Some(file),
        identity,
        max_line,
        json,
        ..
    }) = &command
    {
        let max_line = max_line.unwrap_or(pgtrail::archive::MAX_LINE);
        return cli::verify::archive::command(file, identity.as_deref(), max_line, *json);
    }
    let (config, path) = loaded?;
    match command {
        Command::Setup { dry_run: true, .. } => {
            setup::binding::before_setup(&config, false).await?;
            recreate::before_setup(&config, false, false).await?;
            let plan = setup::plan_setup(&config).await?;
            for note in &plan.notes {
                println!("-- {note}");
            }
            print!("{}", plan.to_sql(&config));
        }
        Command::Setup {
            dry_run: false,
            recreate_slot,
            rebind_source,
        } => {
            // First: a name that reaches another database changes nothing anywhere.
            setup::binding::before_setup(&config, rebind_source).await?;
            let replacing = recreate::before_setup(&config, recreate_slot, rebind_source).await?;
            for line in setup::setup(&config, rebind_source).await? {
                println!("{line}");
            }
            if let Some(replacing) = replacing {
                println!("{}", recreate::after_setup(&config, replacing).await?);
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
            cli::daemon::run(
                config,
                signals.unwrap_or_else(cli::daemon::Signals::install),
            )
            .await?
        }
        Command::Web => {
            cli::daemon::web(
                config,
                signals.unwrap_or_else(cli::daemon::Signals::install),
            )
            .await?
        }
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
        Command::Retention(request) => {
            if !cli::retention::run(&config, &request).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Restore(request) => cli::restore::run(&config, &request).await?,
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
