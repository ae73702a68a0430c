//! A reloaded config file (SIGHUP): what the running web view takes from it
//! (access and export settings; not the listen address), and the `Config`
//! event that records the reload under `pgtrail web`.

use tokio::sync::watch;

use super::state::AppState;
use crate::config::Config;

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
    pub(super) async fn follow(mut self, state: AppState, running: Config) {
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
