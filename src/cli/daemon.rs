//! `pgtrail run` (capture, with the web view alongside) and `pgtrail web`
//! (the web view alone): both run until SIGTERM or SIGINT, and SIGHUP reads
//! the config file once and hands that one reading to every part. Each
//! serves `/metrics`, `/healthz` and `/readyz` on `metrics.listen`.
//!
//! SIGHUP's default action ends a process, and a reload may be sent the
//! moment a daemon starts, before it has read its arguments and its config.
//! So `main` holds SIGHUP back first thing ([`HeldHangup`]), and for `run`
//! and `web` lets it through only once their handlers ([`Signals`]) are in
//! place: one sent meanwhile waits, and is a reload once the daemon runs.
//! Every other command gets SIGHUP's default back as soon as it is known.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Config, Reading};
use crate::health::{self, Role};
use crate::{pipeline, store, web};

/// `pgtrail run`: the capture daemon, and the web view on `web.listen`.
pub async fn run(config: Config, signals: Signals) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, reload_rx) = reload_channel(&config);
    tokio::spawn(async move {
        signals.wait_for_stop(reload_tx).await;
        tracing::info!("stop requested; finishing what is whole");
        let _ = stop_tx.send(true);
    });
    let role = Role::Capture {
        max_lag: config.metrics.ready_max_lag,
    };
    let endpoints = health::spawn(&config, role, stop_rx.clone());
    let web = web::spawn_alongside(&config, stop_rx.clone(), reload_rx.clone());
    pipeline::run(config.clone(), stop_rx, reload_rx).await?;
    // The monitor no longer writes (it stopped with the signal): say at once
    // that capture stopped, rather than let the web view infer it later.
    mark_stopped(&config).await;
    // The web view got the same stop; let its open requests finish.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), web).await;
    if let Some(endpoints) = endpoints {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), endpoints).await;
    }
    Ok(())
}

/// Marks this source's capture state as stopped cleanly; a failure only
/// costs the web view its early notice, so it is logged and `run` goes on
/// stopping.
async fn mark_stopped(config: &Config) {
    let name = config.source_name.as_str();
    let marked = async {
        let client = crate::pg::connect(&config.store, "pgtrail run")
            .await
            .map_err(|e| crate::pg::describe(&e))?;
        store::capture_state::mark_stopped(&client, name)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), marked).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the clean stop was not marked in the store (pgtrail.capture_state): the web view will say capture is not running once its reports are overdue")
        }
        Err(_) => {
            tracing::warn!("the clean stop was not marked in the store: it did not answer in 5 s")
        }
    }
}

/// `pgtrail web`: only the web view, reading the store.
pub async fn web(config: Config, signals: Signals) -> Result<()> {
    // Fail now, with the reason, if the store is not there or not set up.
    drop(store::open(&config.store).await?);
    let pool = web::Pool::new(config.store.clone(), web::POOL_SIZE);
    let (reload_tx, reload_rx) = reload_channel(&config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let endpoints = health::spawn(&config, Role::Web, stop_rx);
    let reload = web::Reload {
        signal: reload_rx,
        record: true,
    };
    web::serve(
        &config,
        pool,
        async move {
            signals.wait_for_stop(reload_tx).await;
            tracing::info!("stop requested");
            let _ = stop_tx.send(true);
        },
        Some(reload),
    )
    .await?;
    if let Some(endpoints) = endpoints {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), endpoints).await;
    }
    Ok(())
}

/// Where SIGHUP publishes its reading of the config file; it starts with the
/// reading the process started with.
fn reload_channel(config: &Config) -> (ReloadSender, tokio::sync::watch::Receiver<Reading>) {
    let (tx, rx) = tokio::sync::watch::channel(Reading::new(Ok(config.clone())));
    (
        ReloadSender {
            tx,
            path: config.path.clone(),
        },
        rx,
    )
}

struct ReloadSender {
    tx: tokio::sync::watch::Sender<Reading>,
    path: PathBuf,
}

/// SIGHUP blocked in the calling thread, from [`HeldHangup::hold`], the
/// first line of `main` (no other thread exists yet, and the runtime's
/// threads inherit the block), to [`HeldHangup::release`]: one sent in
/// between stays pending and is delivered at the release, to the handler
/// in place then (the daemon's, or the default for other commands).
/// Only the calling (main) thread is released: threads made before, such
/// as the runtime's workers, keep SIGHUP blocked, which is harmless while
/// the main thread waits in `block_on` and takes it. Children started with
/// `std::process::Command` (and tokio's) get an empty mask before exec; a
/// child started any other way would inherit the block.
pub struct HeldHangup {
    held: bool,
}

impl HeldHangup {
    pub fn hold() -> Self {
        HeldHangup {
            held: hangup().thread_block().is_ok(),
        }
    }

    pub fn release(self) {
        if self.held {
            // Fails only for an invalid set, which `hangup` is not.
            let _ = hangup().thread_unblock();
        }
    }
}

fn hangup() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGHUP);
    set
}

/// The handlers for SIGTERM, SIGINT and SIGHUP, installed when this is made
/// (None when the OS refused one; then only Ctrl-C stops the process).
pub struct Signals(Option<Handlers>);

struct Handlers {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must be called within the tokio runtime (`Runtime::enter`).
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some(Handlers { term, int, hup })),
            _ => Signals(None),
        }
    }

    /// Returns on SIGTERM or SIGINT. SIGHUP reads the config file once and
    /// hands that reading to everything that follows reloads.
    async fn wait_for_stop(self, reload: ReloadSender) {
        let Some(Handlers {
            mut term,
            mut int,
            mut hup,
        }) = self.0
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    reload.tx.send_replace(Reading::new(Config::load(&reload.path)));
                }
            }
        }
    }
}
