//! A source's capture lock in the store: the daemon takes it ([`claim`]) on
//! its store connection when a session starts and holds it for as long as
//! that connection lives, so exactly one daemon at a time writes a source's
//! entries and chain.
//!
//! When the lock is taken, the message names the store backend that holds
//! it (pid, application, address, since when, what it is doing) so that an
//! operator can tell another daemon from a backend left behind. A backend
//! left behind by this very daemon (a session it gave up on when the store
//! stalled, whose backend has not noticed yet) is ended here: the daemon
//! abandoned that connection, and a store transaction it may still hold
//! rolls back whole, entries with their checkpoint, which is read again
//! after the lock is taken.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use super::sources::{SourceId, SourceName};
use super::StoreError;

/// Advisory lock class of a source's capture (the second key is its id);
/// setup's migrations take 7420501.
const CAPTURE_LOCK: i32 = 7420503;
/// How long [`claim`] waits for a capture lock held by another session.
const CLAIM_WAIT: Duration = Duration::from_secs(15);
/// How many of its earlier store backends a daemon remembers.
const REMEMBERED: usize = 16;

/// A store backend as told apart from any other: its pid, and when it
/// started (exact, as text). A pid alone is reused by the server, so a pid
/// remembered from an earlier session may be another daemon's backend now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Backend {
    pid: i32,
    started: String,
}

/// The store backends on which this daemon claimed its source before (one
/// per session), across its sessions: a backend among them that still
/// holds the lock is the daemon's own, left behind.
#[derive(Debug, Default)]
pub struct OwnBackends(Vec<Backend>);

impl OwnBackends {
    fn remember(&mut self, backend: Backend) {
        if self.0.len() == REMEMBERED {
            self.0.remove(0);
        }
        self.0.push(backend);
    }

    fn contains(&self, backend: &Backend) -> bool {
        self.0.contains(backend)
    }
}

/// The store backend holding a capture lock, as far as this role may see
/// (pg_stat_activity hides other roles' details without pg_read_all_stats).
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: i32,
    pub application: Option<String>,
    pub client_addr: Option<String>,
    pub backend_start: Option<String>,
    /// `backend_start` exactly, to match against [`OwnBackends`].
    started: Option<String>,
    /// `active`, `idle`, `idle in transaction`, …, and since when.
    pub state: Option<(String, String)>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store backend {}", self.pid)?;
        if let Some(app) = self.application.as_deref().filter(|a| !a.is_empty()) {
            write!(f, " of {app:?}")?;
        }
        if let Some(addr) = &self.client_addr {
            write!(f, " from {addr}")?;
        }
        if let Some(start) = &self.backend_start {
            write!(f, ", connected since {start}")?;
        }
        if let Some((state, since)) = &self.state {
            write!(f, ", {state} since {since}")?;
        }
        Ok(())
    }
}

async fn try_lock(client: &Client, id: SourceId) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2::int)",
            &[&CAPTURE_LOCK, &i32::from(id.0)],
        )
        .await?
        .try_get(0)?)
}

/// Who holds source `id`'s capture lock, if anyone still does.
async fn holder(client: &Client, id: SourceId) -> Result<Option<Holder>, StoreError> {
    let time =
        |col: &str| format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"')");
    let row = client
        .query_opt(
            &format!(
                // Advisory locks are per database: another store on the
                // same cluster has a lock of the same keys that is not ours.
                "SELECT l.pid, a.application_name, host(a.client_addr), {}, a.state, {}, a.backend_start::text \
                 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
                   AND l.objsubid = 2 AND l.granted \
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
                time("a.backend_start"),
                time("a.state_change")
            ),
            &[&i64::from(CAPTURE_LOCK), &i64::from(id.0)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state: Option<String> = row.try_get(4)?;
    let since: Option<String> = row.try_get(5)?;
    Ok(Some(Holder {
        pid: row.try_get(0)?,
        application: row.try_get(1)?,
        client_addr: row.try_get(2)?,
        backend_start: row.try_get(3)?,
        state: state.zip(since),
        started: row.try_get(6)?,
    }))
}

/// Takes the capture lock of source `id` on `client`'s session: held until
/// that connection closes. A backend of this daemon's earlier sessions
/// (`own`) that still holds it is ended; another holder is waited for up to
/// [`CLAIM_WAIT`] (a daemon killed a moment ago lets go once its backend
/// notices), then refused with [`StoreError::SourceTaken`], naming it.
pub async fn claim(
    client: &Client,
    (id, name): (SourceId, &SourceName),
    own: &mut OwnBackends,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + CLAIM_WAIT;
    let mut ended: Option<i32> = None;
    loop {
        if try_lock(client, id).await? {
            let me = client
                .query_one(
                    "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await?;
            own.remember(Backend {
                pid: me.try_get(0)?,
                started: me.try_get(1)?,
            });
            return Ok(());
        }
        let holder = holder(client, id).await?;
        let ours = |h: &Holder| {
            h.started.as_ref().is_some_and(|started| {
                own.contains(&Backend {
                    pid: h.pid,
                    started: started.clone(),
                })
            })
        };
        match holder {
            Some(h) if ours(&h) && ended != Some(h.pid) => {
                tracing::warn!(source = %name, holder = %h,
                    "the source's capture lock is still held by this daemon's own store backend from an earlier \
                     session, which it gave up on; ending that backend (what it had not committed rolls back, \
                     and capture resumes from the store's checkpoint)");
                client
                    .execute("SELECT pg_terminate_backend($1)", &[&h.pid])
                    .await?;
                ended = Some(h.pid);
            }
            Some(h) if Instant::now() >= deadline => {
                return Err(StoreError::SourceTaken {
                    name: name.to_string(),
                    holder: h.to_string(),
                })
            }
            _ if Instant::now() >= deadline => {
                return Err(StoreError::SourceTaken {
                    name: name.to_string(),
                    holder: "a store session this role may not see".to_owned(),
                })
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_named_with_what_tells_it_apart() {
        let h = Holder {
            pid: 4242,
            application: Some("pgtrail".into()),
            client_addr: Some("10.0.0.5".into()),
            backend_start: Some("2026-12-07 09:00:00Z".into()),
            state: Some(("idle in transaction".into(), "2026-12-07 09:01:00Z".into())),
            started: None,
        };
        assert_eq!(
            h.to_string(),
            "store backend 4242 of \"pgtrail\" from 10.0.0.5, connected since 2026-12-07 09:00:00Z, \
             idle in transaction since 2026-12-07 09:01:00Z"
        );
        let hidden = Holder {
            pid: 7,
            application: None,
            client_addr: None,
            backend_start: None,
            state: None,
            started: None,
        };
        assert_eq!(hidden.to_string(), "store backend 7");
    }

    #[test]
    fn own_backends_are_remembered_up_to_a_bound() {
        let backend = |pid: i32, started: &str| Backend {
            pid,
            started: started.to_owned(),
        };
        let mut own = OwnBackends::default();
        for pid in 0..40 {
            own.remember(backend(pid, "2026-12-07 09:00:00.1+00"));
        }
        let at = "2026-12-07 09:00:00.1+00";
        assert!(own.contains(&backend(39, at)) && own.contains(&backend(24, at)));
        assert!(!own.contains(&backend(23, at)));
        // The same pid, reused by a later backend: not ours.
        assert!(!own.contains(&backend(39, "2026-12-07 10:00:00.2+00")));
    }
}
