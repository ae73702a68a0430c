//! Waiting without sleeping: polling a condition, and [`sync_via`], which writes a marker row to
//! the source and waits until the store holds its entry (entries are stored in commit order, so
//! everything committed before the marker is stored too).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::connect;

/// How long a test waits for the daemon to catch up with ordinary workloads.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(90);
/// The table [`sync_via`] writes its markers to (in the source database, schema `public`).
pub const MARKER_TABLE: &str = "it_sync_marker";

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

static MARKER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Create `public.it_sync_marker` in the source database. Done before `setup`/`run` so the
/// daemon knows the table from the start ([`TestEnv`] does it for you).
pub async fn create_marker_table(source: &Client) {
    source
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS public.{MARKER_TABLE} (id bigserial PRIMARY KEY, token text NOT NULL)"
        ))
        .await
        .expect("create marker table");
}

/// Insert a unique token into `public.it_sync_marker` on `source` (see [`create_marker_table`])
/// and wait until the store at `store_url` holds its INSERT entry. The store may be restarting: it reconnects as needed.
pub async fn sync_via(source: &Client, store_url: &str, timeout: Duration) {
    let token = format!(
        "marker-{}-{}",
        std::process::id(),
        MARKER_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    source
        .execute(
            &format!("INSERT INTO public.{MARKER_TABLE} (token) VALUES ($1)"),
            &[&token],
        )
        .await
        .expect("insert marker");
    let mut store: Option<Client> = None;
    let started = Instant::now();
    let mut last_error = String::new();
    loop {
        if store.as_ref().is_none_or(|c| c.is_closed()) {
            store = match connect(store_url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    last_error = e.to_string();
                    None
                }
            };
        }
        if let Some(c) = &store {
            match c
                .query_opt(
                    "SELECT 1 FROM pgtrail.entries WHERE schema_name = 'public' AND table_name = $1 \
                     AND action = 'INSERT' AND after->>'token' = $2",
                    &[&MARKER_TABLE, &token],
                )
                .await
            {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => last_error = e.to_string(),
            }
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for the store to hold marker {token} (last error: {last_error})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
