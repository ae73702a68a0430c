//! `pgtrail setup`: prepares the store (database, migrations) and the source
//! (checks, the slot). Idempotent: running it again changes nothing.

use anyhow::{Context, Result};

use crate::config::Config;
use crate::source;
use crate::store::{self, migrations};
use crate::table::quote_ident;

/// Runs setup and returns a line per thing it checked or did.
pub async fn setup(config: &Config) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let source = source::connect(&config.source).await?;
    source::check_server(&source).await?;
    report.push("source: wal_level is logical and the role may replicate".to_owned());
    let tables = source::captured_tables(&source, &config.capture).await?;
    report.push(format!("source: {} table(s) captured: {}", tables.len(), summarize(&tables)));

    let mut store_client = connect_or_create_store(config, &mut report).await?;
    let applied = migrations::apply(&mut store_client).await.context("applying the store's migrations")?;
    report.push(match applied.as_slice() {
        [] => "store: schema up to date".to_owned(),
        versions => format!("store: applied migration(s) {versions:?}"),
    });

    let start = match source::slot_info(&source, &config.slot).await? {
        Some(info) if info.plugin != "wal2json" => {
            return Err(source::SourceError::WrongPlugin { slot: config.slot.to_string(), plugin: info.plugin }.into())
        }
        Some(info) => {
            if info.active_pid.is_none() {
                source::check_plugin_loads(&source, &config.slot, info.confirmed_flush.unwrap_or_default()).await?;
            }
            report.push(format!("source: slot {:?} exists and wal2json loads", config.slot.as_str()));
            info.confirmed_flush.unwrap_or_default()
        }
        None => {
            let lsn = source::create_slot(&source, &config.slot).await?;
            report.push(format!("source: created slot {:?} with wal2json at {lsn}", config.slot.as_str()));
            lsn
        }
    };
    store::init_checkpoint(&store_client, &config.slot, start).await?;
    Ok(report)
}

fn summarize(tables: &[crate::table::TableName]) -> String {
    let mut names: Vec<String> = tables.iter().take(10).map(|t| t.to_string()).collect();
    if tables.len() > 10 {
        names.push(format!("… and {} more", tables.len() - 10));
    }
    names.join(", ")
}

/// Connects to the store database, creating it first if it is missing.
async fn connect_or_create_store(config: &Config, report: &mut Vec<String>) -> Result<tokio_postgres::Client> {
    let url = &config.store;
    match store::connect(url, "pgtrail").await {
        Ok(client) => return Ok(client),
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("3D000") => {}
        Err(e) => {
            return Err(store::StoreError::Connect { endpoint: url.endpoint(), dbname: url.dbname().to_owned(), reason: store::describe(&e) }.into())
        }
    }
    // The database does not exist: create it from the server's maintenance database.
    let admin = store::connect(&url.with_dbname("postgres"), "pgtrail")
        .await
        .map_err(|e| anyhow::anyhow!("the store database {:?} does not exist and pgtrail cannot connect to database \"postgres\" on {} to create it: {}", url.dbname(), url.endpoint(), store::describe(&e)))?;
    admin.batch_execute(&format!("CREATE DATABASE {}", quote_ident(url.dbname()))).await.map_err(|e| {
        anyhow::anyhow!(
            "the store database {:?} does not exist and the role {:?} may not create it ({}); create it as a superuser: CREATE DATABASE {} OWNER {};",
            url.dbname(),
            url.user(),
            store::describe(&e),
            quote_ident(url.dbname()),
            quote_ident(url.user())
        )
    })?;
    report.push(format!("store: created database {:?}", url.dbname()));
    store::connect(url, "pgtrail").await.map_err(|e| anyhow::anyhow!("connecting to the new store database: {}", store::describe(&e)))
}
