//! `pgtrail setup` and `pgtrail teardown`: what pgtrail installs in the source
//! (the slot, REPLICA IDENTITY FULL, the context function and its triggers,
//! and, as a superuser, the DDL event triggers)
//! and in the store (database, migrations, checkpoint).
//!
//! Both work in two steps: a [`Plan`] of the exact SQL, built from what the
//! databases already hold, then applying it. `--dry-run` prints the plan and
//! changes nothing; a second `setup` finds nothing to do. Each database's
//! changes are applied in one transaction.

use std::fmt::Write as _;

use anyhow::Result;
use tokio_postgres::Client;

pub mod binding;
mod moved;
mod store;

use crate::config::Config;
use crate::pg::quote_literal;
use crate::pg::Lsn;
use crate::source::{self, CatalogTable, SlotInfo, SourceError};

const CONTEXT_SQL: &str = include_str!("../../../sql/source/context.sql");
const DDL_SQL: &str = include_str!("../../../sql/source/ddl.sql");
const TRIGGER: &str = "pgtrail_context";

/// A version mark for installed SQL, kept as the object's comment, so that
/// setup can tell whether what is installed is exactly what it would install.
fn version_mark(sql: &str) -> String {
    format!(
        "pgtrail {:016x}",
        xxhash_rust::xxh3::xxh3_64(sql.as_bytes())
    )
}

/// The SQL one command would run, database by database.
#[derive(Debug, Default)]
pub struct Plan {
    /// Run first and alone: slot creation refuses a transaction that has written.
    pub source_slot: Option<String>,
    /// One transaction on the source.
    pub source: Vec<String>,
    /// On the server's maintenance database, when the store database is missing.
    pub create_store: Option<String>,
    /// One transaction on the store.
    pub store: Vec<String>,
    /// Facts found while planning, for the report.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.source_slot.is_none()
            && self.source.is_empty()
            && self.create_store.is_none()
            && self.store.is_empty()
    }

    /// The plan as a SQL script a DBA can read (and could run with psql).
    pub fn to_sql(&self, config: &Config) -> String {
        let mut out = String::new();
        let section = |out: &mut String, what: &str, url: &crate::pg::PgUrl| {
            let _ = writeln!(
                out,
                "-- on the {what} database {:?} at {}",
                url.dbname(),
                url.endpoint()
            );
        };
        if self.source_slot.is_some() || !self.source.is_empty() {
            section(&mut out, "source", &config.source);
            if let Some(slot) = &self.source_slot {
                let _ = writeln!(out, "{slot};");
            }
            if !self.source.is_empty() {
                out.push_str(&transaction_script(&self.source));
            }
        }
        if let Some(create) = &self.create_store {
            section(
                &mut out,
                "maintenance",
                &config.store.with_dbname("postgres"),
            );
            let _ = writeln!(out, "{create};");
        }
        if !self.store.is_empty() {
            section(&mut out, "store", &config.store);
            out.push_str(&transaction_script(&self.store));
        }
        if out.is_empty() {
            out.push_str("-- nothing to do: the source and the store are set up\n");
        } else {
            let _ = writeln!(
                out,
                "-- then: the source's pgtrail.message_key is copied into the store's pgtrail.message_keys \
                 for the source {:?} (the key is never shown)",
                config.source_name.as_str()
            );
        }
        out
    }
}

/// Statements as one `BEGIN; …; COMMIT;` script, each ending in exactly one `;`.
fn transaction_script(statements: &[String]) -> String {
    let body: Vec<String> = statements
        .iter()
        .map(|s| format!("{};", s.trim_end().trim_end_matches(';')))
        .collect();
    format!("BEGIN;\n{}\nCOMMIT;\n", body.join("\n"))
}

/// What `setup` would do now.
pub async fn plan_setup(config: &Config) -> Result<Plan> {
    let mut plan = Plan::default();
    let source = source::connect(&config.source).await?;
    source::check_server(&source).await?;
    plan.notes
        .push("source: wal_level is logical and the role may replicate".to_owned());
    let tables = source::captured_tables(&source, &config.capture).await?;
    plan.notes.push(format!(
        "source: {} table(s) captured: {}",
        tables.len(),
        summarize(&tables)
    ));

    let slot = source::slot_info(&source, &config.slot).await?;
    match &slot {
        // Said plainly, and first: the peek below would fail with the server's own words,
        // and a slot of another plugin is told to be dropped, which must not happen to another
        // database's slot without saying whose it is.
        Some(SlotInfo {
            other_database: Some(database),
            ..
        }) => {
            return Err(SourceError::SlotOfAnotherDatabase {
                slot: config.slot.to_string(),
                database: database.clone(),
                here: config.source.dbname().to_owned(),
            }
            .into())
        }
        Some(info) if info.plugin != "wal2json" => {
            return Err(SourceError::WrongPlugin {
                slot: config.slot.to_string(),
                plugin: info.plugin.clone(),
            }
            .into())
        }
        Some(info) => {
            if info.active_pid.is_none() {
                source::check_plugin_loads(
                    &source,
                    &config.slot,
                    info.confirmed_flush.unwrap_or_default(),
                )
                .await?;
            }
            plan.notes.push(format!(
                "source: slot {:?} exists and wal2json loads",
                config.slot.as_str()
            ));
        }
        None => {
            plan.source_slot = Some(format!(
                "SELECT pg_create_logical_replication_slot({}, 'wal2json')",
                quote_literal(config.slot.as_str())
            ));
        }
    }

    let context_mark = version_mark(CONTEXT_SQL);
    let context_installed = installed_mark(
        &source,
        "SELECT obj_description(to_regnamespace('pgtrail'), 'pg_namespace')",
    )
    .await?
    .as_deref()
        == Some(context_mark.as_str());
    // context.sql makes the message key when there is none: installed again
    // if the key's row was deleted, so that setup is the fix it names.
    if !context_installed || !has_message_key(&source).await? {
        plan.source.push(CONTEXT_SQL.trim().to_owned());
        plan.source.push(format!(
            "COMMENT ON SCHEMA pgtrail IS {}",
            quote_literal(&context_mark)
        ));
    }
    for t in &tables {
        let name = t.name.quoted();
        if config.before_images && t.replica_identity != 'f' && !t.partitioned {
            plan.source
                .push(format!("ALTER TABLE {name} REPLICA IDENTITY FULL"));
        }
        if !t.has_context_trigger {
            plan.source.push(format!(
                "CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {name} \
                 FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.emit_context()"
            ));
        }
        if t.primary_key.is_empty() && t.replica_identity != 'f' && !config.before_images {
            plan.notes.push(format!(
                "warning: {} has no primary key and REPLICA IDENTITY is not FULL: its UPDATEs and DELETEs cannot be audited",
                t.name
            ));
        }
    }

    // The capture set the event trigger enrols new tables by.
    let wanted: Vec<(bool, String, String)> = config
        .capture
        .include
        .iter()
        .map(|p| (true, p))
        .chain(config.capture.exclude.iter().map(|p| (false, p)))
        .map(|(include, p)| {
            let (schema_like, table_like) = p.sql_like();
            (include, schema_like, table_like)
        })
        .collect();
    let (installed_patterns, installed_before_images) = installed_capture_set(&source).await?;
    if installed_patterns != wanted || installed_before_images != Some(config.before_images) {
        plan.source
            .push("DELETE FROM pgtrail.capture_patterns".to_owned());
        let rows: Vec<String> = wanted
            .iter()
            .map(|(include, s, t)| {
                format!("({include}, {}, {})", quote_literal(s), quote_literal(t))
            })
            .collect();
        plan.source.push(format!(
            "INSERT INTO pgtrail.capture_patterns (include, schema_like, table_like) VALUES {}",
            rows.join(", ")
        ));
        plan.source
            .push("DELETE FROM pgtrail.capture_options".to_owned());
        plan.source.push(format!(
            "INSERT INTO pgtrail.capture_options (before_images) VALUES ({})",
            config.before_images
        ));
    }

    // Last, so that setup's own statements above are not reported as DDL.
    let superuser: bool = source
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    let ddl_mark = version_mark(DDL_SQL);
    let ddl_installed = installed_mark(
        &source,
        "SELECT obj_description(oid, 'pg_event_trigger') FROM pg_event_trigger WHERE evtname = 'pgtrail_ddl'",
    )
    .await?;
    if ddl_installed.as_deref() != Some(ddl_mark.as_str()) {
        if superuser {
            plan.source.push(DDL_SQL.trim().to_owned());
            plan.source.push(format!(
                "COMMENT ON EVENT TRIGGER pgtrail_ddl IS {}",
                quote_literal(&ddl_mark)
            ));
        } else {
            plan.notes.push(
                "warning: DDL is not captured: only a superuser may create the event triggers; run `pgtrail setup` once as a superuser to add them"
                    .to_owned(),
            );
        }
    }

    let server = crate::store::binding::SourceServer::of(&source)
        .await
        .map_err(SourceError::from)?;
    store::plan(
        config,
        (slot.as_ref().and_then(|s| s.confirmed_flush), &server),
        &mut plan,
    )
    .await?;
    Ok(plan)
}

/// The capture set as the source holds it (empty before the first setup), sorted as `setup` writes it.
async fn installed_capture_set(
    client: &Client,
) -> Result<(Vec<(bool, String, String)>, Option<bool>)> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgtrail.capture_patterns') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok((Vec::new(), None));
    }
    // ctid order is insertion order for rows written in one statement and never updated.
    let patterns = client
        .query(
            "SELECT include, schema_like, table_like FROM pgtrail.capture_patterns ORDER BY ctid",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let before_images = client
        .query_opt("SELECT before_images FROM pgtrail.capture_options", &[])
        .await?
        .map(|r| r.get(0));
    Ok((patterns, before_images))
}

/// Whether the source's pgtrail.message_key holds a key (asked only where
/// context.sql is installed, so the table exists).
async fn has_message_key(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT EXISTS (SELECT FROM pgtrail.message_key)", &[])
        .await?
        .get(0))
}

/// The version mark a query finds on an installed object, if any.
async fn installed_mark(client: &Client, query: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt(query, &[])
        .await?
        .and_then(|r| r.get::<_, Option<String>>(0)))
}

/// Runs `setup`: plans, then applies. Returns what it found and did.
/// `rebind`: `--rebind-source` (see [`binding`]).
pub async fn setup(config: &Config, rebind: bool) -> Result<Vec<String>> {
    let plan = plan_setup(config).await?;
    let mut report = plan.notes.clone();
    let source = source::connect(&config.source).await?;

    let mut new_slot_lsn: Option<Lsn> = None;
    if plan.source_slot.is_some() {
        let lsn = source::create_slot(&source, &config.slot).await?;
        report.push(format!(
            "source: created slot {:?} with wal2json at {lsn}",
            config.slot.as_str()
        ));
        new_slot_lsn = Some(lsn);
    }
    if !plan.source.is_empty() {
        apply_in_transaction(&source, &plan.source).await.map_err(|e| {
            anyhow::anyhow!(
                "installing pgtrail's context trigger and replica identity in the source failed: {}; \
                 run setup as the owner of the captured tables (or a superuser), or see `pgtrail setup --dry-run`",
                crate::pg::describe(&e)
            )
        })?;
        report.push(format!(
            "source: applied {} statement(s) (see `setup --dry-run` for the SQL)",
            plan.source.len()
        ));
    }

    let start = match new_slot_lsn {
        Some(lsn) => lsn,
        None => source::slot_info(&source, &config.slot)
            .await?
            .and_then(|s| s.confirmed_flush)
            .unwrap_or_default(),
    };
    report.extend(store::apply(config, &plan, &source, (start, rebind)).await?);
    if plan.is_empty() {
        report.push("nothing to do: the source and the store were already set up".to_owned());
    }
    Ok(report)
}

async fn apply_in_transaction(
    client: &Client,
    statements: &[String],
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    for sql in statements {
        if let Err(e) = client.batch_execute(sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    client.batch_execute("COMMIT").await
}

/// What `teardown` would remove from the source: the context triggers and
/// function, pgtrail's schema there, and the slot only when asked. The store
/// and its entries are never touched.
pub async fn plan_teardown(config: &Config, drop_slot: bool) -> Result<Plan> {
    let mut plan = Plan::default();
    let source = source::connect(&config.source).await?;
    for t in source::catalog_tables(&source)
        .await?
        .iter()
        .filter(|t| t.has_context_trigger)
    {
        plan.source.push(format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {}",
            t.name.quoted()
        ));
    }
    let event_triggers: i64 =
        source.query_one("SELECT count(*) FROM pg_event_trigger WHERE evtname IN ('pgtrail_ddl', 'pgtrail_drop')", &[]).await?.get(0);
    if event_triggers > 0 {
        plan.source
            .push("DROP EVENT TRIGGER IF EXISTS pgtrail_ddl".to_owned());
        plan.source
            .push("DROP EVENT TRIGGER IF EXISTS pgtrail_drop".to_owned());
    }
    let has_schema: bool = source
        .query_one("SELECT to_regnamespace('pgtrail') IS NOT NULL", &[])
        .await?
        .get(0);
    if has_schema {
        // Only pgtrail's own functions live there; the triggers using them are dropped above.
        plan.source
            .push("DROP SCHEMA IF EXISTS pgtrail CASCADE".to_owned());
    }
    match source::slot_info(&source, &config.slot).await? {
        Some(info) if drop_slot => {
            if let Some(pid) = info.active_pid {
                return Err(SourceError::SlotInUse { slot: config.slot.to_string(), pid }.into());
            }
            plan.source_slot = Some(format!("SELECT pg_drop_replication_slot({})", quote_literal(config.slot.as_str())));
        }
        Some(_) => plan.notes.push(format!(
            "the slot {:?} is kept (it holds WAL on the source until consumed or dropped); drop it with --drop-slot",
            config.slot.as_str()
        )),
        None => {}
    }
    plan.notes.push("REPLICA IDENTITY of the tables is left as it is; the store and its entries are not touched".to_owned());
    Ok(plan)
}

pub async fn teardown(config: &Config, drop_slot: bool) -> Result<Vec<String>> {
    let plan = plan_teardown(config, drop_slot).await?;
    let mut report = plan.notes.clone();
    let source = source::connect(&config.source).await?;
    if !plan.source.is_empty() {
        apply_in_transaction(&source, &plan.source)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "removing pgtrail's objects from the source failed: {}",
                    crate::pg::describe(&e)
                )
            })?;
        report.push(format!(
            "source: removed pgtrail's triggers, function and schema ({} statement(s))",
            plan.source.len()
        ));
    }
    if let Some(sql) = &plan.source_slot {
        source.batch_execute(sql).await.map_err(|e| {
            anyhow::anyhow!("dropping the slot failed: {}", crate::pg::describe(&e))
        })?;
        report.push(format!("source: dropped slot {:?}", config.slot.as_str()));
    }
    Ok(report)
}

fn summarize(tables: &[CatalogTable]) -> String {
    let mut names: Vec<String> = tables.iter().take(10).map(|t| t.name.to_string()).collect();
    if tables.len() > 10 {
        names.push(format!("… and {} more", tables.len() - 10));
    }
    names.join(", ")
}
