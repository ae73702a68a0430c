//! `pgtrail token …`: API tokens for the JSON API, from the command line.
//! A token's secret is printed once, on creation, and never kept.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::users::Grant;
use crate::auth::{self, Manager, Name};
use crate::config::Config;
use crate::store;

const TABLES_HELP: &str = "Restrict the token to these tables (comma-separated patterns)";

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and not kept.
    // The arguments are `user add`'s too; the help is worded for tokens.
    #[command(mut_arg("tables", |a| a.help(TABLES_HELP)))]
    Create(Grant),
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; it stops working at once.
    Revoke { name: Name },
}

pub async fn command(config: &Config, action: TokenCommand) -> Result<()> {
    let mut client = store::open(&config.store).await?;
    let manager = Manager::cli();
    match action {
        TokenCommand::Create(grant) => {
            let tables = grant.tables()?;
            let (t, secret) =
                auth::tokens::create(&mut client, &manager, &grant.name, grant.role, &tables)
                    .await?;
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
                let list = auth::json_list(&tokens, |t| {
                    [
                        ("created_by", json!(t.created_by)),
                        ("created_at", json!(t.created_at.to_rfc3339())),
                        (
                            "last_used_at",
                            json!(t.last_used_at.map(|t| t.to_rfc3339())),
                        ),
                    ]
                })?;
                println!("{list}");
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
            let t = auth::tokens::revoke(&mut client, &manager, name.as_str()).await?;
            println!("revoked API token {}", t.name);
        }
    }
    Ok(())
}
