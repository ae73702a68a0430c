//! The records behind [`super::SignInBook`]: per client address and per
//! account and address, with their windows, and how a window that ends turns
//! into summary events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Client, APPLICATION};
use crate::store::events::{Category, OwnEvent};

#[derive(Debug)]
pub(super) struct AddressRecord {
    pub(super) since: Instant,
    pub(super) failures: u32,
    pub(super) in_flight: u32,
    /// Sign-ins refused unchecked while the address was over its budget.
    pub(super) refused: u64,
    pub(super) throttled: bool,
}

/// Where a pair's first failure stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum First {
    None,
    /// An attempt is writing it as an event of its own.
    Reserved,
    Recorded,
}

#[derive(Debug)]
pub(super) struct PairRecord {
    pub(super) since: Instant,
    pub(super) first: First,
    pub(super) in_flight: u32,
    /// Failures after the first, not yet written.
    pub(super) later: u32,
    /// Of them, how many found the account locked (or locked it).
    pub(super) later_locked: u32,
    pub(super) first_at: DateTime<Utc>,
    pub(super) last_at: DateTime<Utc>,
}

impl PairRecord {
    pub(super) fn unused(&self) -> bool {
        self.first == First::None && self.later == 0 && self.in_flight == 0
    }
}

pub(super) type PairKey = (String, Client);

#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) addresses: HashMap<Client, AddressRecord>,
    pub(super) pairs: HashMap<PairKey, PairRecord>,
    /// Failures of pairs the book had no room for, since `overflow_since`.
    pub(super) overflow: u64,
    pub(super) overflow_since: Option<Instant>,
    /// Summaries taken out but not written yet (the store was away).
    pub(super) unwritten: Vec<OwnEvent>,
}

impl Ledger {
    /// Ends the windows that are over (all of them with `all`), moving their
    /// summaries to `unwritten`.
    pub(super) fn roll(&mut self, window: Duration, now: Instant, all: bool) {
        let over = |since: Instant| all || now.duration_since(since) >= window;
        let mut events = Vec::new();
        self.pairs.retain(|(name, c), p| {
            if over(p.since) {
                end_pair(name, *c, p, now, &mut events);
                // Checks under way keep the record, in a new window.
                return p.in_flight > 0;
            }
            true
        });
        self.addresses.retain(|c, a| {
            if over(a.since) {
                end_address(*c, a, now, &mut events);
                return a.in_flight > 0;
            }
            true
        });
        if let Some(since) = self.overflow_since {
            if self.overflow > 0 && over(since) {
                events.push(
                    OwnEvent::new(
                        Category::Session,
                        "sign_in_failures",
                        APPLICATION,
                        format!(
                            "{} failed sign-ins from too many addresses at once to list them one by one",
                            self.overflow
                        ),
                    )
                    .detail("failures", self.overflow)
                    .detail("unlisted", true),
                );
                self.overflow = 0;
                self.overflow_since = None;
            }
        }
        self.unwritten.extend(events);
    }

    /// [`Ledger::roll`] for one pair and its address only: what a sign-in looks at.
    pub(super) fn roll_one(&mut self, key: &PairKey, window: Duration, now: Instant) {
        let mut events = Vec::new();
        if let Some(p) = self.pairs.get_mut(key) {
            if now.duration_since(p.since) >= window {
                end_pair(&key.0, key.1, p, now, &mut events);
            }
        }
        if let Some(a) = self.addresses.get_mut(&key.1) {
            if now.duration_since(a.since) >= window {
                end_address(key.1, a, now, &mut events);
            }
        }
        self.unwritten.extend(events);
    }
}

/// Ends a pair's window: its summary, if it has failures to summarize, and a new window.
fn end_pair(name: &str, client: Client, p: &mut PairRecord, now: Instant, out: &mut Vec<OwnEvent>) {
    if p.later > 0 {
        out.push(summary(name, client, p));
    }
    p.later = 0;
    p.later_locked = 0;
    p.first = First::None;
    p.since = now;
}

/// Ends an address's window: the count of sign-ins it was refused, if any, and a new window.
fn end_address(client: Client, a: &mut AddressRecord, now: Instant, out: &mut Vec<OwnEvent>) {
    if a.refused > 0 {
        out.push(
            OwnEvent::new(
                Category::Session,
                "sign_ins_refused",
                APPLICATION,
                format!(
                    "{} sign-ins from {} refused unchecked: too many failed sign-ins from there",
                    a.refused,
                    client.shown()
                ),
            )
            .client_addr(Some(client.shown()))
            .detail("refused", a.refused),
        );
    }
    a.failures = 0;
    a.refused = 0;
    a.throttled = false;
    a.since = now;
}

/// The summary of a pair's failures after its first.
pub(super) fn summary(name: &str, client: Client, p: &PairRecord) -> OwnEvent {
    OwnEvent::new(
        Category::Session,
        "sign_in_failures",
        APPLICATION,
        format!(
            "{} more failed sign-ins as {} from {} since {}",
            p.later,
            crate::text::clip(name),
            client.shown(),
            p.first_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    )
    .actor(crate::text::clip(name))
    .client_addr(Some(client.shown()))
    .detail("failures", p.later)
    .detail("locked", p.later_locked)
    .detail("first_at", p.first_at.to_rfc3339())
    .detail("last_at", p.last_at.to_rfc3339())
}
