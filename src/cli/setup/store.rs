//! The store's part of `setup`: the database, the migrations, the roles,
//! and this config's source with its chain head, checkpoint and message key.
//! Planned from what the store holds ([`plan`]), then applied ([`apply`]).

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::Plan;
use crate::config::Config;
use crate::pg::{quote_ident, quote_literal, Lsn};
use crate::store::binding::{self, Settled, SourceServer};
use crate::store::{self, migrations, sources};

/// Adds the store's statements and database to `plan`; `start` is where
/// the slot starts (`None`: setup creates it).
/// `server`: the database `source.url` reaches, which the source is bound to.
pub(super) async fn plan(
    config: &Config,
    (start, server): (Option<Lsn>, &SourceServer),
    plan: &mut Plan,
) -> Result<()> {
    let url = &config.store;
    let store = match crate::pg::connect(url, "pgtrail setup").await {
        Ok(client) => Some(client),
        Err(e) if e.as_db_error().map(|d| d.code().code()) == Some("3D000") => {
            plan.create_store = Some(format!("CREATE DATABASE {}", quote_ident(url.dbname())));
            None
        }
        Err(e) => {
            return Err(store::StoreError::Connect {
                endpoint: url.endpoint(),
                dbname: url.dbname().to_owned(),
                reason: crate::pg::describe(&e),
                code: crate::pg::sqlstate(&e),
            }
            .into())
        }
    };
    let name = &config.source_name;
    let (pending, registered, checkpoint) = match &store {
        Some(client) => {
            let pending: Vec<i32> = migrations::plan(client)
                .await?
                .into_iter()
                .map(|(v, _)| v)
                .collect();
            let registered = match pending.is_empty() {
                true => registered(client, name).await?,
                false => None,
            };
            let checkpoint = match registered {
                Some(id) => store::checkpoint(client, id, &config.slot).await?,
                None => None,
            };
            (pending, registered, checkpoint)
        }
        None => (
            migrations::MIGRATIONS.iter().map(|m| m.0).collect(),
            None,
            None,
        ),
    };
    let roles_missing = match &store {
        Some(client) => roles_missing(client).await?,
        None => true,
    };
    if !pending.is_empty() {
        // What migration 15 names the store's first source by, should it run.
        plan.store.push(format!(
            "SELECT set_config({}, {}, false)",
            quote_literal(migrations::FIRST_SOURCE_SETTING),
            quote_literal(name.as_str())
        ));
    }
    for (version, title, sql) in migrations::MIGRATIONS
        .iter()
        .filter(|m| pending.contains(&m.0))
    {
        plan.store
            .push(format!("-- migration {version}: {title}\n{}", sql.trim()));
        plan.store.push(format!(
            "INSERT INTO pgtrail.schema_migrations (version, name) VALUES ({version}, {})",
            quote_literal(title)
        ));
    }
    if !pending.is_empty() || roles_missing {
        plan.store.push(migrations::ROLES.trim().to_owned());
    }
    let quoted = quote_literal(name.as_str());
    let bound = match (&store, registered) {
        (Some(client), Some(id)) => binding::bound(client, id).await?,
        _ => None,
    };
    if registered.is_none() {
        plan.store.push(format!(
            "INSERT INTO pgtrail.sources (id, name) SELECT coalesce(max(id), 0) + 1, {quoted} FROM pgtrail.sources \
             WHERE NOT EXISTS (SELECT FROM pgtrail.sources WHERE name = {quoted})"
        ));
        plan.store.push(format!(
            "INSERT INTO pgtrail.chain_heads (source, hash) SELECT id, decode(repeat('00', 32), 'hex') \
             FROM pgtrail.sources WHERE name = {quoted} ON CONFLICT (source) DO NOTHING"
        ));
    }
    if !bound.is_some_and(|b| b == *server) {
        plan.store.push(format!(
            "UPDATE pgtrail.sources SET system_identifier = {}, database_oid = {}, database_name = {}, bound_at = now() \
             WHERE name = {quoted}",
            quote_literal(&server.system_identifier),
            server.database_oid,
            quote_literal(&server.database)
        ));
    }
    let stored_period = match (&store, pending.is_empty()) {
        (Some(client), true) => Some(store::partitions::period(client).await?),
        _ => None,
    };
    if stored_period != Some(config.partition) {
        plan.store.push(format!(
            "UPDATE pgtrail.settings SET partition = {} -- [store] partition: for partitions not made yet",
            quote_literal(config.partition.as_str())
        ));
    }
    if let Some(client) = &store {
        if let Some(store::StoreError::NeedsMigration { state, .. }) =
            store::migrate::refusal(client, url.dbname(), &pending).await?
        {
            plan.notes.push(format!(
                "store: {state}: setup moves the entries into time partitions (stop every `pgtrail run` and `pgtrail web` on this store first)"
            ));
        }
        if let Some(p) = store::migrate::progress(client).await?.filter(|p| !p.done) {
            plan.store.push(format!(
                "-- then: the copy of the entries into time partitions goes on after old id {} \
                 ({} of about {} copied), in batches, each its own transaction",
                p.copied_upto,
                p.copied,
                p.last_id - p.first_id + 1
            ));
        }
    }
    if checkpoint.is_none() {
        let start = start.map(|l| quote_literal(&l.to_string()));
        plan.store.push(format!(
            "INSERT INTO pgtrail.checkpoints (source, slot, lsn) SELECT id, {}, {} \
             FROM pgtrail.sources WHERE name = {quoted} ON CONFLICT (source, slot) DO NOTHING",
            quote_literal(config.slot.as_str()),
            start.unwrap_or_else(|| "/* the new slot's starting LSN */ '0/0'".to_owned())
        ));
    }
    Ok(())
}

/// The id of the source `name` in a store whose migrations are all applied, if registered.
async fn registered(client: &Client, name: &store::SourceName) -> Result<Option<store::SourceId>> {
    match sources::lookup(client, name).await {
        Ok(id) => Ok(Some(id)),
        Err(store::StoreError::NotSetUp { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The group roles are missing, and this role could create them: otherwise
/// setup would never have nothing to do.
async fn roles_missing(client: &Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT count(*) < 2 AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) \
             FROM pg_roles WHERE rolname IN ('pgtrail_reader', 'pgtrail_writer')",
            &[],
        )
        .await?
        .get(0))
}

/// Applies the store's part of `plan`; the slot starts at `start`. The
/// message key is copied from `source` every time. Returns the report's lines.
/// With `rebind`, a source name bound to another database is moved to this
/// one (recorded as an event); without, it is refused.
pub(super) async fn apply(
    config: &Config,
    plan: &Plan,
    source: &Client,
    (start, rebind): (Lsn, bool),
) -> Result<Vec<String>> {
    let mut report = Vec::new();
    if let Some(create) = &plan.create_store {
        report.push(create_database(config, create).await?);
    }
    let mut client = crate::pg::connect(&config.store, "pgtrail setup")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "connecting to the store database: {}",
                crate::pg::describe(&e)
            )
        })?;
    let name = &config.source_name;
    // The source connection is setup's own, not another pgtrail process,
    // should it be among the store's sessions (`binding::before_setup`
    // refuses a store in the source's database; the guard is the second line).
    let own: Vec<_> = store::migrate::guard::Backend::of(source)
        .await
        .map_err(crate::source::SourceError::from)?
        .into_iter()
        .collect();
    let applied = migrations::apply(&mut client, name, &own)
        .await
        .context("applying the store's migrations")?;
    if !applied.is_empty() {
        report.push(format!("store: applied migration(s) {applied:?}"));
    }
    if plan.store.iter().any(|s| s == migrations::ROLES.trim()) {
        report.push(store_roles(&client).await?);
    }
    let period = config.partition.as_str();
    let changed = client
        .execute(
            "UPDATE pgtrail.settings SET partition = $1 WHERE partition <> $1",
            &[&period],
        )
        .await?;
    if changed > 0 {
        report.push(format!(
            "store: partitions made from now on hold a {period} ([store] partition)"
        ));
    }
    // [store] retention and archive_dir: the store's copy is the one
    // enforced (drop_partition reads it).
    let retention_changed = store::retention::disagreement(&client, config.retention)
        .await?
        .is_some();
    let archives = config.archive_dir.is_some();
    let archives_changed = store::retention::archive_required(&client).await? != archives;
    if retention_changed || archives_changed {
        store::retention::store_setting(&client, config.retention, archives).await?;
    }
    if retention_changed {
        report.push(match config.retention {
            Some(r) => format!("store: entries are kept for {r} ([store] retention)"),
            None => "store: entries are kept for ever ([store] retention unset)".to_owned(),
        });
    }
    if archives_changed {
        report.push(if archives {
            "store: a partition with entries goes only with its archives ([store] archive_dir)"
                .to_owned()
        } else {
            "store: partitions go without archives ([store] archive_dir unset)".to_owned()
        });
    }
    if let Some(moved) = store::migrate::finish(&mut client).await? {
        report.push(format!(
            "store: moved {} entries into time partitions in {:.1} s; checked before the old table was dropped: \
             it held {} entries and the partitions hold {}, and {} chain head(s) are the hash of their chain's last entry; \
             run `pgtrail verify` to check the chains whole",
            moved.entries,
            moved.took.as_secs_f64(),
            moved.check.old,
            moved.check.new,
            moved.check.heads
        ));
    }
    // The current period's partition and the next ones, before any daemon runs.
    let now = chrono::Utc::now();
    store::partitions::ensure_span(&client, now, now, store::partitions::AHEAD).await?;
    let known = registered(&client, name).await?;
    let server = SourceServer::of(source)
        .await
        .map_err(crate::source::SourceError::from)?;
    let rebind_by = rebind.then(|| crate::auth::Actor::cli().name.unwrap_or_default());
    let tx = client.transaction().await?;
    let (id, settled) = binding::register(&tx, name, &server, rebind_by).await?;
    let moved = match &settled {
        Settled::Rebound { from } => {
            Some(super::moved::record(&tx, config, (id, from, &server), start).await?)
        }
        _ => None,
    };
    tx.commit().await?;
    if known.is_none() {
        report.push(format!(
            "store: source {:?} registered (id {})",
            name.as_str(),
            id.0
        ));
    }
    match settled {
        Settled::BoundNow => report.push(format!(
            "store: source {:?} bound to {server}",
            name.as_str()
        )),
        Settled::Rebound { from } => report.push(format!(
            "store: source {:?} rebound from {from} to {server} (recorded as a `config` EVENT, source_rebound)",
            name.as_str()
        )),
        Settled::Same => {}
    }
    report.extend(moved);
    store::init_checkpoint(&client, id, &config.slot, start).await?;
    // Every time, and after the source's SQL: the key is made there, once.
    let key = crate::source::message_key(source).await?;
    store::message_key::save(&client, id, &key).await?;
    Ok(report)
}

/// Creates the store database with `create`; says so.
async fn create_database(config: &Config, create: &str) -> Result<String> {
    let url = &config.store;
    let admin = crate::pg::connect(&url.with_dbname("postgres"), "pgtrail").await.map_err(|e| {
        anyhow::anyhow!(
            "the store database {:?} does not exist and pgtrail cannot connect to database \"postgres\" on {} to create it: {}",
            url.dbname(),
            url.endpoint(),
            crate::pg::describe(&e)
        )
    })?;
    admin.batch_execute(create).await.map_err(|e| {
        anyhow::anyhow!(
            "the store database {:?} does not exist and the role {:?} may not create it ({}); create it as a superuser: CREATE DATABASE {} OWNER {};",
            url.dbname(),
            url.user(),
            crate::pg::describe(&e),
            quote_ident(url.dbname()),
            quote_ident(url.user())
        )
    })?;
    Ok(format!("store: created database {:?}", url.dbname()))
}

/// Creates or updates the store's group roles, and says what came of it.
async fn store_roles(client: &Client) -> Result<String> {
    client.batch_execute(migrations::ROLES).await.map_err(|e| {
        anyhow::anyhow!(
            "granting the store's roles failed: {}",
            crate::pg::describe(&e)
        )
    })?;
    let created: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('pgtrail_reader', 'pgtrail_writer')",
            &[],
        )
        .await?
        .get(0);
    Ok(if created == 2 {
        "store: roles pgtrail_writer (the daemon) and pgtrail_reader (the web view) granted; \
         make login roles members of them (see README)"
            .to_owned()
    } else {
        format!(
            "store: roles pgtrail_writer and pgtrail_reader not created: {} may not create roles; \
             run setup once as a superuser or a role with CREATEROLE to have them",
            quote_ident(
                &client
                    .query_one("SELECT current_user::text", &[])
                    .await?
                    .get::<_, String>(0)
            )
        )
    })
}
