//! `pgtrail token …`: API tokens for the JSON API, from the command line.
//! A token's secret is printed once, on creation, and never kept.

use anyhow::Result;
use clap::Subcommand;

use crate::auth::{self, Actor, Audited as _, Name, Role, Tables};
use crate::config::Config;
use crate::store;

#[derive(Subcommand)]
pub enum TokenCommand {
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

pub async fn command(config: &Config, action: TokenCommand) -> Result<()> {
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
