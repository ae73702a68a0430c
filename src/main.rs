//! The `pgtrail` command line: parses arguments, loads the config, and hands
//! over to the library. Errors are printed with their causes and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use pgtrail::auth::{self, Actor, Audited as _, Name, Role, Tables};
use pgtrail::config::{Config, Reading};
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
    /// Manage the users of the web view (create the first admin with `user add NAME --role admin`).
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Manage API tokens for the JSON API (`Authorization: Bearer …`).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from a prompt on a terminal, else from standard input.
    Add {
        name: Name,
        /// viewer (browse), auditor (browse and export) or admin (also manage users and tokens).
        #[arg(long)]
        role: Role,
        /// Restrict the user to these tables: patterns as in capture.tables, comma-separated.
        #[arg(long)]
        tables: Option<String>,
    },
    /// List users with role, tables and state.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's role; it applies from their next request.
    SetRole {
        name: Name,
        #[arg(long)]
        role: Role,
    },
    /// Change the tables a user is restricted to (an empty list lifts the restriction).
    SetTables {
        name: Name,
        #[arg(long)]
        tables: String,
    },
    /// Disable a user: they cannot sign in, and their sessions end.
    Disable { name: Name },
    /// Enable a disabled user again (this also lifts a lock after failed sign-ins).
    Enable { name: Name },
    /// Set a new password (prompt or standard input); ends the user's sessions and lifts a lock.
    ResetPassword { name: Name },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once and not kept.
    Create {
        name: Name,
        #[arg(long)]
        role: Role,
        /// Restrict the token to these tables (comma-separated patterns).
        #[arg(long)]
        tables: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; it stops working at once.
    Revoke { name: Name },
}

/// A password from a no-echo prompt (asked twice) on a terminal, or the first
/// line of standard input when it is piped. Never from an argument, which
/// would show in `ps` and the shell history.
fn read_password(user: &Name) -> Result<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {user}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Again: ")
            .context("cannot read the password from the terminal")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ; nothing was changed"
        );
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(
            !password.is_empty(),
            "no password on standard input; pipe it in (e.g. `printf '%s\\n' \"$PW\" | pgtrail user add …`) or run on a terminal to be prompted"
        );
        Ok(password)
    }
}

fn user_line(u: &auth::users::User) -> String {
    let now = chrono::Utc::now();
    let state = if u.disabled {
        "disabled".to_owned()
    } else if let Some(t) = u.locked_until.filter(|_| u.is_locked(now)) {
        format!("locked until {}", t.format("%Y-%m-%d %H:%M:%SZ"))
    } else {
        "active".to_owned()
    };
    format!(
        "{}\t{}\ttables: {}\t{}",
        u.name,
        u.role,
        u.tables.describe(),
        state
    )
}

async fn user_command(config: &Config, action: UserCommand) -> Result<()> {
    // One connection for the whole command, its checks and its change.
    let mut client = store::open(&config.store).await?;
    let actor = Actor::cli();
    let (name, change) = match action {
        UserCommand::Add { name, role, tables } => {
            let tables = Tables::parse_list(tables.as_deref().unwrap_or(""))?;
            if auth::users::get(&client, name.as_str()).await?.is_some() {
                anyhow::bail!(auth::AuthError::UserExists(name.to_string()));
            }
            let password = read_password(&name)?;
            let u = auth::users::add(&mut client, &actor, &name, role, &tables, &password).await?;
            println!("added {}", user_line(&u));
            return Ok(());
        }
        UserCommand::List { json } => {
            let users = auth::users::list(&client).await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| {
                        let mut r = u.record();
                        r.insert(
                            "locked_until".into(),
                            serde_json::json!(u.locked_until.map(|t| t.to_rfc3339())),
                        );
                        r.insert(
                            "created_at".into(),
                            serde_json::json!(u.created_at.to_rfc3339()),
                        );
                        r
                    })
                    .collect();
                println!("{}", serde_json::to_string(&list)?);
            } else if users.is_empty() {
                println!(
                    "no users; create the first admin with: pgtrail user add NAME --role admin"
                );
            } else {
                for u in &users {
                    println!("{}", user_line(u));
                }
            }
            return Ok(());
        }
        UserCommand::SetRole { name, role } => (name, auth::users::Change::Role(role)),
        UserCommand::SetTables { name, tables } => (
            name,
            auth::users::Change::Tables(Tables::parse_list(&tables)?),
        ),
        UserCommand::Disable { name } => (name, auth::users::Change::Disabled(true)),
        UserCommand::Enable { name } => (name, auth::users::Change::Disabled(false)),
        UserCommand::ResetPassword { name } => {
            // Before the prompt, so a typo in the name does not cost a password.
            if auth::users::get(&client, name.as_str()).await?.is_none() {
                anyhow::bail!(auth::AuthError::NoSuchUser(name.to_string()));
            }
            let password = read_password(&name)?;
            (name, auth::users::Change::Password(password))
        }
    };
    let u = auth::users::change(&mut client, &actor, name.as_str(), change).await?;
    println!("{}", user_line(&u));
    Ok(())
}

async fn token_command(config: &Config, action: TokenCommand) -> Result<()> {
    let mut client = store::open(&config.store).await?;
    let actor = Actor::cli();
    match action {
        TokenCommand::Create { name, role, tables } => {
            let tables = Tables::parse_list(tables.as_deref().unwrap_or(""))?;
            let (t, secret) =
                auth::tokens::create(&mut client, &actor, &name, role, &tables).await?;
            eprintln!(
                "created API token {} ({}, tables: {}); the secret below is shown only now:",
                t.name,
                t.role,
                t.tables.describe()
            );
            println!("{secret}");
        }
        TokenCommand::List { json } => {
            let tokens = auth::tokens::list(&client).await?;
            if json {
                let list: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        let mut r = t.record();
                        r.insert("created_by".into(), serde_json::json!(t.created_by));
                        r.insert(
                            "created_at".into(),
                            serde_json::json!(t.created_at.to_rfc3339()),
                        );
                        r.insert(
                            "last_used_at".into(),
                            serde_json::json!(t.last_used_at.map(|t| t.to_rfc3339())),
                        );
                        r
                    })
                    .collect();
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for t in &tokens {
                    println!(
                        "{}\t{}\ttables: {}\t{}",
                        t.name,
                        t.role,
                        t.tables.describe(),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            let t = auth::tokens::revoke(&mut client, &actor, name.as_str()).await?;
            println!("revoked API token {}", t.name);
        }
    }
    Ok(())
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
            let (reload_tx, reload_rx) = reload_channel(&config);
            tokio::spawn(async move {
                wait_for_stop_signal(Some(reload_tx)).await;
                tracing::info!("stop requested; finishing what is whole");
                let _ = stop_tx.send(true);
            });
            let web = web::spawn_alongside(&config, stop_rx.clone(), reload_rx.clone());
            pipeline::run(config.clone(), stop_rx, reload_rx).await?;
            // The web view got the same stop; let its open requests finish.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), web).await;
        }
        Command::Web => {
            // Fail now, with the reason, if the store is not there or not set up.
            drop(store::open(&config.store).await?);
            let pool = web::Pool::new(config.store.clone(), web::POOL_SIZE);
            let (reload_tx, reload_rx) = reload_channel(&config);
            let reload = web::Reload {
                signal: reload_rx,
                record: true,
            };
            web::serve(
                &config,
                pool,
                async {
                    wait_for_stop_signal(Some(reload_tx)).await;
                    tracing::info!("stop requested");
                },
                Some(reload),
            )
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
        Command::User { action } => user_command(&config, action).await?,
        Command::Token { action } => token_command(&config, action).await?,
    }
    Ok(())
}

/// Where SIGHUP publishes its reading of the config file; it starts with the
/// reading the process started with.
fn reload_channel(config: &Config) -> (ReloadSender, tokio::sync::watch::Receiver<Reading>) {
    let (tx, rx) = tokio::sync::watch::channel(Reading::new(Ok(config.clone())));
    (
        ReloadSender {
            tx,
            path: config.path.clone(),
        },
        rx,
    )
}

struct ReloadSender {
    tx: tokio::sync::watch::Sender<Reading>,
    path: PathBuf,
}

/// Returns on SIGTERM or SIGINT. SIGHUP (when `reload` is given) reads the
/// config file once and hands that reading to everything that follows
/// reloads; its default action would kill the process.
async fn wait_for_stop_signal(reload: Option<ReloadSender>) {
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
                    Some(r) => {
                        tracing::info!("SIGHUP: reloading the config");
                        r.tx.send_replace(Reading::new(Config::load(&r.path)));
                    }
                    None => tracing::warn!("SIGHUP ignored: only `run` and `web` reload their config"),
                },
            }
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
