//! What the store writer's open store transaction holds, counted for the
//! metrics: recorded only once the store has committed it, so the figures
//! count what the store really holds.

use std::time::Duration;

use crate::entry::Action;
use crate::metrics::record::{self, StoreCommit};

/// Counts for the metrics, kept until the store commits them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    /// Entries by action, in the order of [`Action::ALL`].
    pub entries: [u64; Action::ALL.len()],
    pub transactions: u64,
    pub decode_errors: u64,
    pub quarantined: u64,
    pub last_commit_micros: Option<i64>,
    /// The commit time of the last source transaction with entries.
    pub last_entries_commit_micros: Option<i64>,
}

impl Tally {
    pub fn entry(&mut self, action: Action) {
        if let Some(i) = Action::ALL.iter().position(|a| *a == action) {
            self.entries[i] += 1;
        }
    }

    /// Adds `later`, which came after what `self` holds.
    pub fn absorb(&mut self, later: Tally) {
        for (n, m) in self.entries.iter_mut().zip(later.entries) {
            *n += m;
        }
        self.transactions += later.transactions;
        self.decode_errors += later.decode_errors;
        self.quarantined += later.quarantined;
        self.last_commit_micros = later.last_commit_micros.or(self.last_commit_micros);
        self.last_entries_commit_micros = later
            .last_entries_commit_micros
            .or(self.last_entries_commit_micros);
    }

    /// Records what a store commit that took `took` made durable.
    pub fn record(&self, source: &str, took: Duration) {
        for (action, n) in Action::ALL.iter().zip(self.entries) {
            record::entries_stored(source, action.as_str(), n);
        }
        let commit = StoreCommit {
            took,
            transactions: self.transactions,
            decode_errors: self.decode_errors,
            quarantined: self.quarantined,
            last_commit_micros: self.last_commit_micros,
        };
        record::store_commit(source, &commit);
        if let Some(micros) = self.last_commit_micros {
            crate::metrics::progress::progress().stored(micros);
        }
    }
}
