//! `pgtrail user …`: the web view's users, from the command line. Each
//! change commits with its event, recorded as made by the CLI's OS user.

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;

use crate::auth::{self, Manager, Name, Role, Tables};
use crate::config::Config;
use crate::store;

const ROLE_HELP: &str =
    "viewer (browse), auditor (browse and export) or admin (also manage users and tokens)";
const TABLES_HELP: &str =
    "Restrict the user to these tables: patterns as in capture.tables, comma-separated; \
     `source:schema.table` (shop-eu:public.orders) limits one to that source database";

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is read from a prompt on a terminal, else from standard input.
    // The arguments are `token create`'s too; the help is worded for users.
    #[command(mut_arg("role", |a| a.help(ROLE_HELP)), mut_arg("tables", |a| a.help(TABLES_HELP)))]
    Add(Grant),
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

/// What a new user or API token is given: a name, a role, and the tables
/// it is restricted to. `user add` and `token create` each word its help.
#[derive(clap::Args)]
pub struct Grant {
    pub name: Name,
    #[arg(long)]
    pub role: Role,
    #[arg(long)]
    pub tables: Option<String>,
}

impl Grant {
    /// The `--tables` patterns; none given means every table.
    pub fn tables(&self) -> Result<Tables, auth::AuthError> {
        Tables::parse_list(self.tables.as_deref().unwrap_or(""))
    }
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

pub async fn command(config: &Config, action: UserCommand) -> Result<()> {
    // One connection for the whole command, its checks and its change.
    let mut client = store::open(&config.store).await?;
    let manager = Manager::cli();
    let (name, change) = match action {
        UserCommand::Add(grant) => {
            let tables = grant.tables()?;
            let Grant { name, role, .. } = grant;
            if auth::users::get(&client, name.as_str()).await?.is_some() {
                anyhow::bail!(auth::AuthError::UserExists(name.to_string()));
            }
            let password = read_password(&name)?;
            let u =
                auth::users::add(&mut client, &manager, &name, role, &tables, &password).await?;
            println!("added {}", user_line(&u));
            return Ok(());
        }
        UserCommand::List { json } => {
            let users = auth::users::list(&client).await?;
            if json {
                let list = auth::json_list(&users, |u| {
                    [
                        (
                            "locked_until",
                            json!(u.locked_until.map(|t| t.to_rfc3339())),
                        ),
                        ("created_at", json!(u.created_at.to_rfc3339())),
                    ]
                })?;
                println!("{list}");
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
    let u = auth::users::change(&mut client, &manager, name.as_str(), change).await?;
    println!("{}", user_line(&u));
    Ok(())
}
