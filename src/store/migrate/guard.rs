//! What keeps `pgtrail setup`'s move of the entries (migration 16 and the
//! copy after it) from running into other sessions of the store, and tells
//! the user which ones: pgtrail processes still connected (refused before
//! anything changes), sessions holding a lock the migration waited for in
//! vain (its `lock_timeout`), and a second `setup` moving the same store.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::super::StoreError;

/// How long each migration may wait for a lock before it gives up: every
/// session that asks for a lock on the same table afterwards (the web view,
/// a daemon) queues behind the waiting migration, so a long wait would
/// stall them all.
pub const LOCK_TIMEOUT: &str = "5s";

/// The session-level advisory lock a `setup` holds while it copies entries
/// (the migrations' own transaction lock is 7420501, partitions' 7420502).
pub const COPY_LOCK: i64 = 7420504;

/// How long sessions that are closing (a refused daemon's, a command that
/// just ended) get to leave before they count as using the store.
const LEAVING: Duration = Duration::from_secs(3);

/// A session as the messages name it: pid, application, user, client, state and since when.
/// PostgreSQL shows a role without `pg_read_all_stats` only the pid, database, user and
/// application of another role's sessions (`backend_type` and the rest NULL): said so, not
/// passed off as a local session starting.
const SESSION: &str = "CASE WHEN a.backend_type IS NULL THEN format('pid %s (%s, user %s; the rest is hidden \
    from this role, which is not a member of pg_read_all_stats)', a.pid, \
    coalesce(nullif(a.application_name, ''), 'no application name'), a.usename) \
    ELSE format('pid %s (%s, user %s, from %s, %s since %s)', a.pid, \
    coalesce(nullif(a.application_name, ''), 'no application name'), a.usename, \
    coalesce(host(a.client_addr), 'the local socket'), coalesce(a.state, 'starting'), \
    to_char(coalesce(a.state_change, a.backend_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')) END";

/// A backend as the server it runs on knows it: that server (when its
/// postmaster started, which no other running server shares to the
/// microsecond, and its system identifier, which a physical copy shares),
/// the backend's pid and when the backend started. The pid alone is not
/// enough: once the connection has ended, the server may give its pid to
/// another backend, but not with the same start to the microsecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub server_started: DateTime<Utc>,
    /// `None` where an operator revoked `pg_control_system()` from PUBLIC.
    pub system_identifier: Option<i64>,
    pub pid: i32,
    /// `pg_stat_activity.backend_start`, which a backend always sees of itself.
    pub backend_start: DateTime<Utc>,
}

impl Backend {
    /// The backend serving `client`; `None` when its role may not call
    /// `pg_postmaster_start_time()` (revoked from PUBLIC), so that nothing
    /// tells its server apart. Asks first rather than fail: in a
    /// transaction, a refused call would abort it.
    pub async fn of(client: &impl GenericClient) -> Result<Option<Backend>, tokio_postgres::Error> {
        let may = client
            .query_one(
                "SELECT has_function_privilege('pg_catalog.pg_postmaster_start_time()', 'EXECUTE'), \
                        has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')",
                &[],
            )
            .await?;
        let (started, system): (bool, bool) = (may.try_get(0)?, may.try_get(1)?);
        if !started {
            return Ok(None);
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT pg_postmaster_start_time(), {}, a.pid, a.backend_start \
                     FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()",
                    if system {
                        "(SELECT system_identifier FROM pg_control_system())"
                    } else {
                        "NULL::bigint"
                    }
                ),
                &[],
            )
            .await?;
        Ok(Some(Backend {
            server_started: row.try_get(0)?,
            system_identifier: row.try_get(1)?,
            pid: row.try_get(2)?,
            backend_start: row.try_get(3)?,
        }))
    }

    /// Whether `self` and `other` run on the same server.
    fn same_server(&self, other: &Backend) -> bool {
        let system = match (self.system_identifier, other.system_identifier) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.server_started == other.server_started && system
    }
}

/// Refuses migration 16 while other pgtrail processes (`pgtrail run`,
/// `pgtrail web`, any command but another `setup`) are connected to the
/// store: they would write entries into the table being moved, or read it
/// half moved. Run inside the migration's transaction, before its SQL.
/// `own`: the other connections of the `setup` that runs it (its source
/// connection), open until this returns: those backends are setup itself,
/// not another process, and only those are left out, by pid and start on
/// this server. `setup` refuses a store in the source's own database before
/// it migrates, so its source connection is not among the store's sessions:
/// this is the second line, should a way past that check be found. A session this
/// role may not see the start of (another role's, without
/// `pg_read_all_stats`) is never left out: counted, rather than missed.
pub async fn refuse_if_in_use(
    client: &impl GenericClient,
    own: &[Backend],
) -> Result<(), StoreError> {
    let (pids, starts): (Vec<i32>, Vec<DateTime<Utc>>) = match Backend::of(client).await? {
        Some(here) => own
            .iter()
            .filter(|b| b.same_server(&here))
            .map(|b| (b.pid, b.backend_start))
            .unzip(),
        None => (Vec::new(), Vec::new()),
    };
    let started = Instant::now();
    loop {
        // pg_stat_activity is read once per transaction unless cleared.
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await?;
        // A NULL backend_type is another role's session this role may not see
        // the details of (SESSION): its application name still says pgtrail.
        let sessions = texts(
            client,
            &format!(
                "SELECT {SESSION} FROM pg_stat_activity a \
                 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
                   AND NOT EXISTS (SELECT FROM unnest($1::int4[], $2::timestamptz[]) o (pid, started) \
                                   WHERE o.pid = a.pid AND o.started = a.backend_start) \
                   AND coalesce(a.backend_type, 'client backend') = 'client backend' \
                   AND a.application_name LIKE 'pgtrail%' AND a.application_name <> 'pgtrail setup' \
                 ORDER BY a.pid"
            ),
            &[&pids, &starts],
        )
        .await?;
        if sessions.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= LEAVING {
            return Err(StoreError::MigrationInUse(sessions.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The other sessions holding a lock on one of pgtrail's tables in the
/// store, for the message of a migration that gave up waiting.
pub async fn lock_holders(client: &impl GenericClient) -> Result<String, StoreError> {
    let held = texts(
        client,
        &format!(
            "SELECT {SESSION} || ': ' || string_agg(DISTINCT l.mode || ' on ' || l.relation::regclass::text, ', ') \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             JOIN pg_class c ON c.oid = l.relation \
             WHERE l.granted AND l.pid <> pg_backend_pid() AND l.database = \
                   (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND c.relnamespace = 'pgtrail'::regnamespace \
             GROUP BY a.pid, a.application_name, a.usename, a.client_addr, a.state, a.state_change, a.backend_start, \
                      a.backend_type \
             ORDER BY a.pid"
        ),
        &[],
    )
    .await?;
    Ok(match held.is_empty() {
        true => "no session holds one any more".to_owned(),
        false => held.join("; "),
    })
}

/// The error for a `setup` that found [`COPY_LOCK`] taken: which session has it.
pub async fn other_setup(client: &impl GenericClient) -> Result<StoreError, StoreError> {
    let holder: Option<String> = client
        .query_opt(
            &format!(
                "SELECT {SESSION} FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 \
                   AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            &[&(COPY_LOCK as u32)],
        )
        .await?
        .map(|r| r.get(0));
    Ok(StoreError::MigrationBusy(holder.unwrap_or_else(|| {
        "a session that has just ended".to_owned()
    })))
}

/// The first column of every row of `sql`, as text.
async fn texts(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, StoreError> {
    Ok(client
        .query(sql, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
