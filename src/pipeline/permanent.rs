//! Errors that trying again cannot fix: the slot lost, the credentials
//! refused, wal2json missing, a source name that reaches another database
//! than the one it is bound to. `run` ends on them with an exit code of their
//! own, so that systemd (`RestartPreventExitStatus=`) and alerting see them,
//! where an outage keeps the backoff for as long as it lasts.
//!
//! A lost slot ends `run` at once: the catalog says so, and nothing the
//! daemon does can bring the WAL back; so does another database behind the
//! source's name (capturing it would mix two databases under one checkpoint). Credentials and wal2json get
//! [`TRIES`] sessions in a row first, since a password being rotated or a
//! package being upgraded is put right within seconds.

use super::PipelineError;
use crate::capture::replication::ReplicationError;
use crate::source::SourceError;
use crate::store::StoreError;

/// Sessions in a row that may fail with the same permanent error before
/// `run` ends: about 15 s of backoff (1 + 2 + 4 + 8 s).
pub const TRIES: u32 = 5;

/// An error that needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// The slot is lost or missing: an audit gap (exit 10).
    SlotLost,
    /// The source or the store refused the login (exit 11).
    Credentials,
    /// The source cannot load wal2json (exit 12).
    Wal2jsonMissing,
    /// `source.url` reaches another database than the one the source's
    /// name is bound to in the store (exit 13).
    WrongSource,
    /// The store's entries must be moved into partitions by `pgtrail
    /// setup` first, or their move is under way (exit 14).
    StoreLayout,
}

impl Permanent {
    /// `run`'s exit status for it (docs/operations.md, "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            Permanent::SlotLost => 10,
            Permanent::Credentials => 11,
            Permanent::Wal2jsonMissing => 12,
            Permanent::WrongSource => 13,
            Permanent::StoreLayout => 14,
        }
    }

    /// Ends `run` at once rather than after [`TRIES`].
    fn at_once(self) -> bool {
        matches!(
            self,
            Permanent::SlotLost | Permanent::WrongSource | Permanent::StoreLayout
        )
    }
}

/// SQLSTATE class 28: invalid authorization (28000: no pg_hba.conf entry, no
/// such role; 28P01: wrong password).
fn login_refused(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("28"))
}

impl PipelineError {
    /// The permanent error this is, if it is one.
    pub fn permanent(&self) -> Option<Permanent> {
        match self {
            PipelineError::SlotLost(_) => Some(Permanent::SlotLost),
            PipelineError::Store(StoreError::WrongSource(_)) => Some(Permanent::WrongSource),
            PipelineError::Store(
                StoreError::NeedsMigration { .. } | StoreError::MigrationCheck(_),
            ) => Some(Permanent::StoreLayout),
            PipelineError::Source(SourceError::Wal2jsonMissing(_)) => {
                Some(Permanent::Wal2jsonMissing)
            }
            PipelineError::Source(SourceError::Connect { code, .. })
            | PipelineError::Store(StoreError::Connect { code, .. })
                if login_refused(code.as_deref()) =>
            {
                Some(Permanent::Credentials)
            }
            PipelineError::Replication(ReplicationError::Auth { .. }) => {
                Some(Permanent::Credentials)
            }
            PipelineError::Replication(ReplicationError::Server(e))
                if login_refused(Some(&e.code)) =>
            {
                Some(Permanent::Credentials)
            }
            _ => None,
        }
    }
}

/// Permanent errors in a row, across sessions.
#[derive(Debug, Default)]
pub struct Tries {
    last: Option<Permanent>,
    count: u32,
}

impl Tries {
    /// A session ended with `error` (or started, with `None`): whether `run`
    /// ends now. Another error, or a session that started, begins the count
    /// again.
    pub fn give_up(&mut self, error: Option<&PipelineError>) -> bool {
        let permanent = error.and_then(PipelineError::permanent);
        if permanent.is_none() || permanent != self.last {
            self.count = 0;
        }
        self.last = permanent;
        let Some(permanent) = permanent else {
            return false;
        };
        self.count += 1;
        permanent.at_once() || self.count >= TRIES
    }
}

/// `run`'s exit status for an error that ended it: a permanent error's own,
/// else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<PipelineError>()
        .and_then(PipelineError::permanent)
        .map_or(1, Permanent::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> PipelineError {
        PipelineError::Source(SourceError::Connect {
            endpoint: "h:5432".into(),
            dbname: "app".into(),
            reason: "password authentication failed".into(),
            code: Some(code.into()),
        })
    }

    #[test]
    fn a_refused_login_ends_run_after_the_tries_and_an_outage_never() {
        let mut tries = Tries::default();
        for _ in 1..TRIES {
            assert!(!tries.give_up(Some(&refused("28P01"))));
        }
        assert!(tries.give_up(Some(&refused("28P01"))));
        let down = refused("57P03");
        assert_eq!(down.permanent(), None);
        let mut tries = Tries::default();
        assert!((0..100).all(|_| !tries.give_up(Some(&down))));
    }

    #[test]
    fn a_session_that_starts_begins_the_count_again() {
        let mut tries = Tries::default();
        for _ in 1..TRIES {
            assert!(!tries.give_up(Some(&refused("28000"))));
        }
        assert!(!tries.give_up(None));
        assert!(!tries.give_up(Some(&refused("28000"))));
        assert_eq!(refused("28000").permanent(), Some(Permanent::Credentials));
        let error = anyhow::Error::new(refused("28P01"));
        assert_eq!(exit_code(&error), 11);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn a_store_to_migrate_ends_run_at_once_with_14() {
        let e = PipelineError::Store(StoreError::NeedsMigration {
            dbname: "pgtrail".into(),
            state: "about 5 entries".into(),
        });
        assert!(Tries::default().give_up(Some(&e)));
        assert_eq!(exit_code(&anyhow::Error::new(e)), 14);
    }
}
