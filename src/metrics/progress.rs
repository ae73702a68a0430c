//! Where capture is, for the health checks: whether a session streams (and
//! if not, why), and the source commit time of the last transaction the
//! writer stored. The pipeline and the store writer write it; the monitor and
//! `/readyz` read it. One per process, like the recorder: one daemon feeds
//! one store.

use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The capture session, as the pipeline last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// No session has started yet (the process is connecting).
    Starting,
    /// The server accepted START_REPLICATION at `since`.
    Streaming { since: SystemTime },
    /// The last session ended at `since`, for `reason`; another is due.
    Down { since: SystemTime, reason: String },
}

/// What the health checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub session: Session,
    /// The source commit time (microseconds since the Unix epoch) of the last
    /// transaction this process stored, and when it stored it.
    pub last_stored: Option<(i64, SystemTime)>,
}

pub struct Progress {
    state: Mutex<Snapshot>,
}

static PROGRESS: OnceLock<Progress> = OnceLock::new();

/// This process's capture progress.
pub fn progress() -> &'static Progress {
    PROGRESS.get_or_init(|| Progress {
        state: Mutex::new(Snapshot {
            session: Session::Starting,
            last_stored: None,
        }),
    })
}

impl Progress {
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// A session streams from now.
    pub fn streaming(&self) {
        self.lock().session = Session::Streaming {
            since: SystemTime::now(),
        };
    }

    /// The session ended (or could not start) for `reason`.
    pub fn down(&self, reason: String) {
        self.lock().session = Session::Down {
            since: SystemTime::now(),
            reason,
        };
    }

    /// A transaction committed at `commit_micros` (source clock) is stored.
    pub fn stored(&self, commit_micros: i64) {
        self.lock().last_stored = Some((commit_micros, SystemTime::now()));
    }

    /// The state is a few plain values, each written whole: one a panicking
    /// writer left behind is still right, so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
