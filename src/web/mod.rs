//! The web view: server-rendered pages and a JSON API over the audit store.
//!
//! One module per page, each holding its askama template struct (templates
//! under `templates/`, all extending `base.html`) and its handler:
//! [`log`] (`/`, and the live stream `/live`), [`entry`] (View Difference,
//! `/entries/{id}`), [`history`] (`/history`), [`transaction`]
//! (`/transactions/{xid}`), [`export`] (`/export`, downloads) and [`api`] (`/api/v1/…`). [`query`] parses the
//! filters every list shares and builds their SQL; [`diff`] compares row
//! images and writes revert SQL; [`assets`] serves the embedded CSS and JS;
//! [`error`] is the one error type.
//!
//! The web view only reads: its connections are `default_transaction_read_only`
//! with a statement timeout, so a slow filter cannot pile up work in the store.
//! Pages work without JavaScript; the script adds live updates and a copy
//! button. Every response carries a Content-Security-Policy without inline
//! script or style, `nosniff`, and `frame-ancestors 'none'`.

pub mod access;
pub mod admin;
pub mod api;
pub mod assets;
pub mod diff;
pub mod entry;
pub mod error;
pub mod export;
pub mod history;
pub mod log;
pub mod query;
pub mod signin;
pub mod transaction;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio_postgres::Client;

use crate::config::{Config, ExportConfig};
use crate::pg::PgUrl;
use error::WebError;

/// Store connections the web view keeps open at most.
pub const POOL_SIZE: usize = 4;
/// Longest any page's query may run.
const STATEMENT_TIMEOUT: &str = "30s";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A few store connections, opened when first needed and reopened when lost
/// (the store may restart under a running web view).
pub struct Pool {
    url: PgUrl,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    read_only: bool,
}

/// A connection taken from the [`Pool`]; back in the pool when dropped.
pub struct Conn<'a>(MutexGuard<'a, Option<Client>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a pooled connection is open while taken")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a pooled connection is open while taken")
    }
}

impl Pool {
    pub fn new(url: PgUrl, size: usize) -> Pool {
        Pool {
            url,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            read_only: true,
        }
    }

    /// A pool whose connections may write: for sessions, sign-in counters,
    /// users, tokens and pgtrail's own events, never for entries.
    pub fn writable(url: PgUrl, size: usize) -> Pool {
        Pool {
            read_only: false,
            ..Pool::new(url, size)
        }
    }

    /// The store this pool connects to.
    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// A free connection if there is one, else waits for one in turn.
    pub async fn get(&self) -> Result<Conn<'_>, WebError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok());
        let mut guard = match free {
            Some(g) => g,
            None => self.slots[start % n].lock().await,
        };
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = tokio::time::timeout(CONNECT_TIMEOUT, crate::pg::connect(&self.url, "pgtrail web"))
                .await
                .map_err(|_| {
                    tracing::warn!(store = %self.url.endpoint(), "connecting to the audit store timed out");
                    error::unavailable()
                })?
                .map_err(|e| {
                    tracing::warn!(store = %self.url.endpoint(), error = %crate::pg::describe(&e), "cannot connect to the audit store");
                    error::unavailable()
                })?;
            let read_only = if self.read_only { "on" } else { "off" };
            client
                .batch_execute(&format!(
                    "SET default_transaction_read_only = {read_only}; SET statement_timeout = '{STATEMENT_TIMEOUT}'"
                ))
                .await?;
            *guard = Some(client);
        }
        Ok(Conn(guard))
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    pool: Pool,
    /// Connections that may write (sessions, lockouts, events); `pool` is read-only.
    writer: Pool,
    /// Replaced whole when the config is reloaded ([`AppState::reconfigure`]);
    /// a request keeps the settings it started with.
    auth: std::sync::RwLock<Arc<access::AuthState>>,
    stop_tx: watch::Sender<bool>,
    /// Encryption of downloads (`[export]`); replaced like `auth`.
    export: std::sync::RwLock<Arc<ExportConfig>>,
    /// Downloads running at once at most: each holds a store connection of its own.
    exports: Arc<tokio::sync::Semaphore>,
    /// Password verifications running at once: one per core, so a flood of
    /// sign-ins cannot take all the CPU the rest of the view needs.
    verifications: Arc<tokio::sync::Semaphore>,
    /// Sign-ins waiting for or running a verification; beyond this a
    /// sign-in is refused at once (429) rather than queued.
    sign_ins: Arc<tokio::sync::Semaphore>,
    /// Known tables for the filter's suggestions, refreshed at most once a minute.
    tables: Mutex<Option<(Instant, KnownTables)>>,
}

/// The store's tables for the filter's suggestions: each as shown, and its name.
type KnownTables = Vec<(String, crate::table::TableName)>;

impl AppState {
    pub fn new(
        pool: Pool,
        writer: Pool,
        auth: access::AuthState,
        export: ExportConfig,
    ) -> AppState {
        let (stop_tx, _) = watch::channel(false);
        AppState(Arc::new(Inner {
            pool,
            writer,
            auth: std::sync::RwLock::new(Arc::new(auth)),
            stop_tx,
            export: std::sync::RwLock::new(Arc::new(export)),
            exports: Arc::new(tokio::sync::Semaphore::new(export::MAX_RUNNING)),
            verifications: Arc::new(tokio::sync::Semaphore::new(cores())),
            sign_ins: Arc::new(tokio::sync::Semaphore::new(
                cores() * signin::waiting_per_core(),
            )),
            tables: Mutex::new(None),
        }))
    }

    pub fn pool(&self) -> &Pool {
        &self.0.pool
    }

    pub fn writer(&self) -> &Pool {
        &self.0.writer
    }

    pub fn auth(&self) -> Arc<access::AuthState> {
        // A writer never panics while holding the lock, so a poisoned lock
        // still holds a whole value.
        self.0
            .auth
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn export_config(&self) -> Arc<ExportConfig> {
        self.0
            .export
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a reloaded config's `[web]` access settings and `[export]`
    /// settings; the listen address stays until a restart.
    pub fn reconfigure(&self, config: &Config) {
        let auth = Arc::new(self.auth().with_config(config.web_auth.clone()));
        *self.0.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
        *self.0.export.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config.export.clone());
    }

    /// A place for one more running download, if there is one.
    pub fn export_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.exports.clone().try_acquire_owned().ok()
    }

    /// A place in the line of sign-ins, if the line is not full.
    pub fn sign_in_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.sign_ins.clone().try_acquire_owned().ok()
    }

    /// Waits, in turn, until a password verification may run.
    pub async fn verification_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, WebError> {
        self.0
            .verifications
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| WebError::Internal(format!("the sign-in line is closed: {e}")))
    }

    /// Turns true when the server is shutting down: long-lived responses (the live stream) end then.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.0.stop_tx.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.0.stop_tx.send_replace(true);
    }

    /// `schema.table` of every table with entries, for suggestions; empty if the store cannot say.
    /// Only those in `scope`.
    pub async fn known_tables(&self, scope: &query::Scope) -> Vec<String> {
        let mut cache = self.0.tables.lock().await;
        if let Some((at, tables)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(60) {
                return tables
                    .iter()
                    .filter(|(_, t)| scope.allows_table(t))
                    .map(|(s, _)| s.clone())
                    .collect();
            }
        }
        let tables: Vec<(String, crate::table::TableName)> = match self.pool().get().await {
            Ok(client) => match query::all_tables(&client).await {
                Ok(tables) => tables
                    .into_iter()
                    .map(|t| (query::table_param(&t), t))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = ?e, "listing tables failed");
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        let visible = tables
            .iter()
            .filter(|(_, t)| scope.allows_table(t))
            .map(|(s, _)| s.clone())
            .collect();
        *cache = Some((Instant::now(), tables));
        visible
    }
}

/// The cores this process may use (1 if the system cannot say).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The whole web view as a router; tests call it directly or serve it.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-out", post(signin::sign_out))
        .route("/admin", get(admin::page))
        .route("/admin/users", post(admin::add_user))
        .route("/admin/users/{name}", post(admin::change_user))
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/tokens/{name}/revoke", post(admin::revoke_token))
        .route("/", get(log::page))
        .route("/live", get(log::live))
        .route("/entries/{id}", get(entry::page))
        .route("/history", get(history::page))
        .route("/transactions/{xid}", get(transaction::page))
        .route("/api/v1/entries", get(api::list))
        .route("/api/v1/entries/{id}", get(api::one))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/assets/{name}", get(assets::serve))
        .merge(export::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    let e = WebError::NotFound(format!(
        "There is no page at {}.",
        crate::text::clip(uri.path())
    ));
    if uri.path().starts_with("/api/") {
        e.json().into_response()
    } else {
        e.into_response()
    }
}

/// No inline script or style anywhere, so the policy can forbid them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Audit data is not for shared caches or the back-forward cache of a shared machine.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Adds `Server-Timing: total;dur=<ms>`: the time from the request's arrival
/// to its response being ready (the whole page rendered; a live stream's
/// first bytes). Browsers show it in their network panel, and
/// `bench/web.sh` measures with it, so the server's share of a slow page
/// is told apart from the network's.
async fn server_timing(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let mut res = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("total;dur={ms:.1}")) {
        res.headers_mut().insert("server-timing", value);
    }
    res
}

/// Serves the web view on `listener` until `shutdown` completes; in-flight
/// requests finish and live streams end.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: &Config,
    pool: Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let auth = access::AuthState::new(config.web_auth.clone(), config.path.clone());
    let writer = Pool::writable(config.store.clone(), 2);
    let state = AppState::new(pool, writer, auth, config.export.clone());
    let stopper = state.clone();
    let sweeper = tokio::spawn(sweep_sessions(state.clone()));
    let reloader = reload.map(|r| tokio::spawn(r.follow(state.clone(), config.clone())));
    tracing::info!(address = %listener.local_addr()?, auth = ?config.web_auth.mode, "web view listening");
    // The peer address decides whether a proxy's user header is believed, and is recorded with every export.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopper.begin_shutdown();
        })
        .await;
    // Whichever way serving ended, the helpers end with it.
    sweeper.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    served.context("serving the web view")
}

/// How the web view learns that the config file was reloaded (SIGHUP).
pub struct Reload {
    /// The config file's newest reading; changes once per reload.
    pub signal: watch::Receiver<crate::config::Reading>,
    /// Whether the web view records the reload as a `Config` event itself
    /// (`pgtrail web`); under `pgtrail run` the pipeline records it.
    pub record: bool,
}

impl Reload {
    /// Applies, from every new reading of the config file, what the web view
    /// can change while running; an invalid file leaves the running settings.
    async fn follow(mut self, state: AppState, running: Config) {
        while self.signal.changed().await.is_ok() {
            let reading = self.signal.borrow_and_update().clone();
            let path = running.path.display().to_string();
            let outcome = match &*reading {
                // The file's own check of this rule reads its `web.listen`,
                // but the listener keeps the address it started with.
                Ok(new)
                    if new.web_auth.mode == crate::config::AuthMode::None
                        && !running.web_listen.ip().is_loopback() =>
                {
                    let e = format!(
                        "web.auth = \"none\" is refused: the web view listens on {}, not a loopback address, \
                         until pgtrail restarts",
                        running.web_listen
                    );
                    tracing::error!(error = %e, "config not reloaded; the web view goes on with the running settings");
                    Err(e)
                }
                Ok(new) => {
                    // Under `pgtrail run` the pipeline says this already.
                    if self.record && new.web_listen != running.web_listen {
                        tracing::warn!("web.listen changed: the web view keeps its address until pgtrail restarts");
                    }
                    state.reconfigure(new);
                    tracing::info!(path = %path, auth = ?new.web_auth.mode, "web view: access and export settings reloaded");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "config not reloaded; the web view goes on with the running settings");
                    Err(e.to_string())
                }
            };
            if self.record {
                record_reload(&state, &path, outcome).await;
            }
        }
    }
}

async fn record_reload(state: &AppState, path: &str, outcome: Result<(), String>) {
    use crate::store::events::{record, Category, OwnEvent};
    let event = match outcome {
        Ok(()) => OwnEvent::new(
            Category::Config,
            "config_reloaded",
            "pgtrail web",
            format!("configuration reloaded from {path}"),
        ),
        Err(e) => OwnEvent::new(
            Category::Config,
            "config_reload_failed",
            "pgtrail web",
            format!("configuration not reloaded from {path}: {e}"),
        ),
    }
    .detail("path", path.to_owned());
    let recorded = match state.writer().get().await {
        Ok(client) => record(&*client, &event).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:?}")),
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the reload in the store");
    }
}

/// Deletes expired sessions every few minutes, so that a session nobody uses
/// again does not stay in the store until the next sign-in. It runs for the
/// server's whole life and skips its turn while `auth = "none"`: a reload
/// may turn passwords on (or off) at any time.
async fn sweep_sessions(state: AppState) {
    loop {
        let auth = state.auth();
        tokio::time::sleep(sweep_every(auth.timeouts())).await;
        // The settings now, after the sleep: a reload may have changed them.
        let auth = state.auth();
        if auth.config.mode == crate::config::AuthMode::None {
            continue;
        }
        let swept = match state.writer().get().await {
            Ok(client) => crate::auth::sessions::sweep(&*client, auth.timeouts())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:?}")),
        };
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "expired sessions swept"),
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep expired sessions; trying again later")
            }
        }
    }
}

/// Every five minutes, or as often as the idle limit when that is shorter:
/// an expired session stays in the store for at most that long.
fn sweep_every(timeouts: crate::auth::sessions::Timeouts) -> Duration {
    Duration::from_secs(timeouts.idle_seconds.clamp(1, 300))
}

/// Binds `config.web_listen` and serves until `shutdown`.
pub async fn serve(
    config: &Config,
    pool: Pool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.web_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (web.listen in {})",
                config.web_listen,
                config.path.display()
            )
        })?;
    serve_on(listener, config, pool, shutdown, reload).await
}

/// For `pgtrail run`: the web view beside capture, stopping when `stop` turns
/// true. A web view that cannot start (its port taken) is logged and capture
/// goes on: the audit trail matters more than its viewer.
pub fn spawn_alongside(
    config: &Config,
    mut stop: watch::Receiver<bool>,
    reload: watch::Receiver<crate::config::Reading>,
) -> tokio::task::JoinHandle<()> {
    let config = config.clone();
    tokio::spawn(async move {
        let pool = Pool::new(config.store.clone(), POOL_SIZE);
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let reload = Reload {
            signal: reload,
            record: false,
        };
        if let Err(e) = serve(&config, pool, shutdown, Some(reload)).await {
            tracing::error!(error = %format!("{e:#}"), "the web view is not served; capture goes on");
        }
    })
}
