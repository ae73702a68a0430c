//! What every handler shares ([`AppState`]): the store connections, the
//! access and export settings a reload may replace, the limits on running
//! downloads, live streams and sign-ins, the failed sign-ins remembered
//! ([`SignInBook`]), and the shutdown signal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use super::error::WebError;
use super::limits::LiveStreams;
use super::pool::Pool;
use super::throttle::SignInBook;
use super::{access, export, query, signin};
use crate::config::{Config, ExportConfig};

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
    /// Failed sign-ins per client address and account, for the throttle and the summaries.
    sign_in_book: SignInBook,
    /// Live streams open now, per principal and in all.
    live_streams: LiveStreams,
    /// Known tables for the filter's suggestions, refreshed at most once a minute.
    tables: Mutex<Option<(Instant, KnownTables)>>,
    /// The names of the store's capture sources, refreshed at most once a minute.
    sources: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
    /// The audit gaps, read again only when the events chain moves.
    gaps: crate::store::gaps::Cache,
    /// The tables' keys, for matching a key value, kept up to date by id.
    key_book: query::KeyBook,
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
            sign_in_book: SignInBook::default(),
            live_streams: LiveStreams::default(),
            tables: Mutex::new(None),
            sources: Mutex::new(None),
            gaps: Default::default(),
            key_book: Default::default(),
        }))
    }

    pub fn pool(&self) -> &Pool {
        &self.0.pool
    }

    pub fn writer(&self) -> &Pool {
        &self.0.writer
    }

    /// The audit gaps' reading, shared by every page that shows them.
    pub fn gaps(&self) -> &crate::store::gaps::Cache {
        &self.0.gaps
    }

    /// The tables' keys, shared by every request matching a key value.
    pub fn key_book(&self) -> &query::KeyBook {
        &self.0.key_book
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

    pub fn sign_in_book(&self) -> &SignInBook {
        &self.0.sign_in_book
    }

    pub fn live_streams(&self) -> &LiveStreams {
        &self.0.live_streams
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

    /// The names of the store's capture sources (pgtrail's own events left
    /// out), by id; empty if the store cannot say. A source set up a moment
    /// ago shows within a minute.
    pub async fn capture_sources(&self) -> Arc<Vec<String>> {
        let mut cache = self.0.sources.lock().await;
        if let Some((at, names)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(60) {
                return names.clone();
            }
        }
        let read = match self.pool().get().await {
            Ok(client) => crate::store::sources::all(&*client)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.message().to_owned()),
        };
        let names: Arc<Vec<String>> = Arc::new(match read {
            Ok(all) => all
                .into_iter()
                .filter(|(id, _)| *id != crate::store::sources::SourceId::EVENTS)
                .map(|(_, name)| name)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing the store's sources failed");
                return Arc::new(Vec::new());
            }
        });
        *cache = Some((Instant::now(), names.clone()));
        names
    }

    /// Whether pages show each entry's source database: only where the store
    /// has more than one, as one source's name on every row says nothing.
    pub async fn shows_db(&self) -> bool {
        self.capture_sources().await.len() > 1
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
