//! Failed sign-ins, counted in memory per client address and per account
//! and address ([`SignInBook`]), for three things:
//!
//! - **the address budget**: an address with `web.sign_in_failures_per_address`
//!   failures (or checks under way) within `web.sign_in_window_seconds` is
//!   refused, unchecked, until its window ends ([`SignInBook::begin`]);
//! - **who locked an account**: while an account is locked, only addresses
//!   that failed to sign in as it within the window are kept out; a *fresh*
//!   one ([`Attempt::fresh`]) still has its password checked, so a stranger
//!   cannot lock an admin out;
//! - **summaries**: the first failure of an account from an address in a
//!   window is an event of its own; the later ones are counted and written as
//!   one `sign_in_failures` event when the window ends, at that account's next
//!   sign-in from that address, or when the server stops ([`SignInBook::due`]).
//!
//! IPv6 addresses count by their /64, which one client usually holds whole.
//! The book is bounded: past [`MAX_ADDRESSES`] or [`MAX_PAIRS`] records, an
//! address is not budgeted (the account lockout still bounds its guesses), is
//! never fresh, and its failures are summed into one overflow event.

mod ledger;
mod outside;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::store::events::OwnEvent;
use ledger::{summary, AddressRecord, First, Ledger, PairRecord};
pub use outside::{client_address, record_throttled, summarize_while_serving, write_summaries};

/// Addresses tracked at most.
pub const MAX_ADDRESSES: usize = 50_000;
/// Account and address pairs tracked at most.
pub const MAX_PAIRS: usize = 100_000;
/// Summaries that could not be written, kept for the next try at most.
const MAX_UNWRITTEN: usize = 1_000;
const APPLICATION: &str = "pgtrail web";

/// A client as the budget counts it: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Client(IpAddr::V6(bits.into()))
            }
            v4 => Client(v4),
        }
    }

    /// As events show it: `192.0.2.7`, or `2001:db8::/64`.
    pub fn shown(&self) -> String {
        match self.0 {
            IpAddr::V6(v6) => format!("{v6}/64"),
            v4 => v4.to_string(),
        }
    }
}

/// `[web]`'s sign-in budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub failures: u32,
    pub window: Duration,
}

/// Every failed sign-in the web view remembers; cheap to share.
#[derive(Debug, Default, Clone)]
pub struct SignInBook {
    ledger: Arc<Mutex<Ledger>>,
}

/// Why a sign-in was refused unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the address's window ends.
    pub retry_after: u64,
}

/// One sign-in being checked; dropped without [`Attempt::failed`] or
/// [`Attempt::succeeded`] (the store refused the outcome), it counts for nothing.
#[derive(Debug)]
pub struct Attempt {
    book: SignInBook,
    client: Client,
    name: String,
    tracked_address: bool,
    tracked_pair: bool,
    fresh: bool,
    reserved_first: bool,
}

/// An address that has just used up its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottledNow {
    pub client: Client,
    pub failures: u32,
    pub seconds: u64,
}

fn left(since: Instant, window: Duration, now: Instant) -> u64 {
    window
        .saturating_sub(now.duration_since(since))
        .as_secs_f64()
        .ceil() as u64
}

/// The user name as the book keys and shows it: no longer than a valid name can be.
fn name_key(name: &str) -> String {
    name.chars().take(64).collect()
}

impl SignInBook {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Nothing panics while holding it, so a poisoned lock still holds whole counts.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a sign-in of `name` from `client`, or refuses it: the address
    /// has used up its budget.
    pub fn begin(
        &self,
        client: Client,
        name: &str,
        budget: Budget,
        now: Instant,
    ) -> Result<Attempt, Throttled> {
        let name = name_key(name);
        let key = (name.clone(), client);
        let mut l = self.ledger();
        l.roll_one(&key, budget.window, now);
        let room = l.addresses.len() < MAX_ADDRESSES;
        let tracked_address = match l.addresses.get_mut(&client) {
            Some(a) => {
                if a.failures + a.in_flight >= budget.failures {
                    a.refused += 1;
                    return Err(Throttled {
                        retry_after: left(a.since, budget.window, now).max(1),
                    });
                }
                a.in_flight += 1;
                true
            }
            None if room => {
                l.addresses.insert(
                    client,
                    AddressRecord {
                        since: now,
                        failures: 0,
                        in_flight: 1,
                        refused: 0,
                        throttled: false,
                    },
                );
                true
            }
            None => false,
        };
        let room = l.pairs.len() < MAX_PAIRS;
        let (tracked_pair, fresh) = match l.pairs.get_mut(&key) {
            Some(p) => {
                let fresh = p.unused();
                p.in_flight += 1;
                (true, fresh)
            }
            None if room => {
                let at = Utc::now();
                l.pairs.insert(
                    key,
                    PairRecord {
                        since: now,
                        first: First::None,
                        in_flight: 1,
                        later: 0,
                        later_locked: 0,
                        first_at: at,
                        last_at: at,
                    },
                );
                (true, true)
            }
            None => (false, false),
        };
        Ok(Attempt {
            book: self.clone(),
            client,
            name,
            tracked_address,
            tracked_pair,
            fresh,
            reserved_first: false,
        })
    }

    /// Summaries to write now: of every window that has ended, or with `all`
    /// (the server stops) of every window; and those not written before.
    pub fn due(&self, window: Duration, now: Instant, all: bool) -> Vec<OwnEvent> {
        let mut l = self.ledger();
        l.roll(window, now, all);
        std::mem::take(&mut l.unwritten)
    }

    /// Gives back summaries that could not be written, for the next try.
    pub fn unwritten(&self, events: Vec<OwnEvent>) {
        let mut l = self.ledger();
        l.unwritten.extend(events);
        let excess = l.unwritten.len().saturating_sub(MAX_UNWRITTEN);
        if excess > 0 {
            tracing::warn!(
                dropped = excess,
                "failed sign-in summaries could not be written to the audit store and are dropped"
            );
            l.unwritten.drain(..excess);
        }
    }
}

impl Attempt {
    /// Whether this address has not failed to sign in as this account within
    /// the window, and no other check of the pair is under way: a locked
    /// account still has such a sign-in's password checked.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Whether this failure is to be written as an event of its own (the
    /// pair's first in its window); otherwise it is counted for the summary.
    /// Ask before writing the failure's events.
    pub fn itemize(&mut self) -> bool {
        if !self.tracked_pair {
            return false;
        }
        let mut l = self.book.ledger();
        match l.pairs.get_mut(&(self.name.clone(), self.client)) {
            Some(p) if p.first == First::None => {
                p.first = First::Reserved;
                self.reserved_first = true;
                true
            }
            _ => false,
        }
    }

    /// The failure is committed: counts it. `locked` says the account was
    /// locked (or this failure locked it). Returns the address's throttle
    /// if this failure used up its budget.
    pub fn failed(mut self, locked: bool, budget: Budget) -> Option<ThrottledNow> {
        let at = Utc::now();
        let now = Instant::now();
        let mut l = self.book.ledger();
        let mut throttled = None;
        if self.tracked_address {
            if let Some(a) = l.addresses.get_mut(&self.client) {
                a.failures += 1;
                if a.failures >= budget.failures && !a.throttled {
                    a.throttled = true;
                    throttled = Some(ThrottledNow {
                        client: self.client,
                        failures: a.failures,
                        seconds: left(a.since, budget.window, now),
                    });
                }
            }
        }
        let pair = l.pairs.get_mut(&(self.name.clone(), self.client));
        match pair {
            Some(p) if self.tracked_pair => {
                if self.reserved_first {
                    p.first = First::Recorded;
                    p.first_at = at;
                } else {
                    p.later += 1;
                    p.later_locked += u32::from(locked);
                }
                p.last_at = at;
            }
            _ => {
                l.overflow += 1;
                l.overflow_since.get_or_insert(now);
            }
        }
        self.reserved_first = false;
        throttled
    }

    /// The summary of this pair's failures so far, to write with the
    /// sign-in's own event; `None` when there are none to summarize.
    pub fn summary(&self) -> Option<OwnEvent> {
        let l = self.book.ledger();
        let p = l.pairs.get(&(self.name.clone(), self.client))?;
        (p.later > 0).then(|| summary(&self.name, self.client, p))
    }

    /// The sign-in is committed (with [`Attempt::summary`], if any): the
    /// pair's failures are written and its window ends.
    pub fn succeeded(self) {
        let mut l = self.book.ledger();
        if let Some(p) = l.pairs.get_mut(&(self.name.clone(), self.client)) {
            p.first = First::None;
            p.later = 0;
            p.later_locked = 0;
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut l = self.book.ledger();
        if self.tracked_address {
            if let Some(a) = l.addresses.get_mut(&self.client) {
                a.in_flight = a.in_flight.saturating_sub(1);
                if a.in_flight == 0 && a.failures == 0 && a.refused == 0 {
                    l.addresses.remove(&self.client);
                }
            }
        }
        let key = (std::mem::take(&mut self.name), self.client);
        if let Some(p) = l.pairs.get_mut(&key) {
            p.in_flight = p.in_flight.saturating_sub(1);
            if self.reserved_first {
                p.first = First::None;
            }
            if p.unused() {
                l.pairs.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        failures: 3,
        window: Duration::from_secs(60),
    };

    fn addr(s: &str) -> Client {
        Client::of(s.parse().unwrap())
    }

    #[test]
    fn an_address_over_its_budget_is_refused_until_its_window_ends() {
        let book = SignInBook::default();
        let t = Instant::now();
        let a = addr("192.0.2.1");
        for i in 0..3 {
            let mut at = book.begin(a, "ann", BUDGET, t).unwrap();
            assert_eq!(at.itemize(), i == 0);
            let throttled = at.failed(false, BUDGET);
            assert_eq!(throttled.is_some(), i == 2);
        }
        let refused = book.begin(a, "bob", BUDGET, t + Duration::from_secs(10));
        assert_eq!(refused.unwrap_err().retry_after, 50);
        // Another address is not affected, and is fresh for ann.
        assert!(book
            .begin(addr("192.0.2.2"), "ann", BUDGET, t)
            .unwrap()
            .fresh());
        let due = book.due(BUDGET.window, t + Duration::from_secs(61), false);
        let names: Vec<&str> = due.iter().map(|e| e.name).collect();
        assert_eq!(names, ["sign_in_failures", "sign_ins_refused"]);
        assert_eq!(due[0].details["failures"], 2);
        assert_eq!(due[1].details["refused"], 1);
        assert!(book
            .begin(a, "ann", BUDGET, t + Duration::from_secs(61))
            .unwrap()
            .fresh());
    }

    #[test]
    fn checks_under_way_count_against_the_budget_and_freshness() {
        let book = SignInBook::default();
        let t = Instant::now();
        let a = addr("2001:db8::1");
        let first = book.begin(a, "ann", BUDGET, t).unwrap();
        let second = book.begin(addr("2001:db8::2"), "ann", BUDGET, t).unwrap();
        assert!(
            first.fresh() && !second.fresh(),
            "one /64, one check at a time"
        );
        let _third = book.begin(a, "bob", BUDGET, t).unwrap();
        assert!(book.begin(a, "cy", BUDGET, t).is_err());
        drop((first, second));
        assert!(book.begin(a, "ann", BUDGET, t).unwrap().fresh());
        assert_eq!(a.shown(), "2001:db8::/64");
        assert_eq!(addr("::ffff:192.0.2.9").shown(), "192.0.2.9");
    }

    #[test]
    fn a_success_takes_the_pairs_summary_and_a_dropped_attempt_counts_nothing() {
        let book = SignInBook::default();
        let t = Instant::now();
        let a = addr("192.0.2.1");
        let big = Budget {
            failures: 100,
            ..BUDGET
        };
        for _ in 0..4 {
            let mut at = book.begin(a, "ann", big, t).unwrap();
            at.itemize();
            at.failed(true, big);
        }
        // A failure whose events were refused by the store changes nothing.
        let mut lost = book.begin(a, "ann", big, t).unwrap();
        assert!(!lost.itemize());
        drop(lost);
        let ok = book.begin(a, "ann", big, t).unwrap();
        assert!(!ok.fresh());
        let s = ok.summary().unwrap();
        assert_eq!(
            (s.details["failures"].as_u64(), s.details["locked"].as_u64()),
            (Some(3), Some(3))
        );
        ok.succeeded();
        assert!(book.begin(a, "ann", big, t).unwrap().fresh());
        assert!(book.due(big.window, t, true).is_empty());
    }
}
