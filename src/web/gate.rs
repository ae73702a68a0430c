//! The order in which a lane's waiting requests get a store connection: in
//! turn while few wait, the newest first once more wait than the lane has
//! connections (adaptive LIFO). Under an overload that keeps the queue full
//! (clients that send again as soon as they are answered), serving in turn
//! makes every answered request wait nearly the whole bound (`web.max_wait`)
//! first; serving the newest lets the answered ones through at once, while the
//! oldest run into the bound and are refused as busy, as they would have been
//! in turn anyway. Below the overload nothing changes: the queue is short and
//! served in turn. The slow lane (searches that take seconds) stays in turn
//! throughout: there the wait is small beside the work, and the oldest search
//! should not starve behind newer ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// The places (connections) of one lane and the requests waiting for one.
#[derive(Clone)]
pub struct Gate {
    state: Arc<Mutex<State>>,
}

struct State {
    /// Places in the lane.
    size: usize,
    /// The newest waiter first once the queue is longer than the lane.
    adaptive: bool,
    /// Places held by requests now.
    held: usize,
    next_id: u64,
    /// Waiting requests, oldest first, each with where to hand it a place.
    waiting: VecDeque<(u64, oneshot::Sender<Pass>)>,
}

impl State {
    /// The waiter a freed place goes to: the oldest while the queue is short,
    /// the newest once it is longer than the lane.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Pass>> {
        let long = self.adaptive && self.waiting.len() > self.size;
        let next = if long {
            self.waiting.pop_back()
        } else {
            self.waiting.pop_front()
        };
        next.map(|(_, tx)| tx)
    }
}

/// One place of a lane, held while the request uses its connection; freed
/// (handed to the next waiter) when dropped.
pub struct Pass {
    state: Arc<Mutex<State>>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        release(&self.state);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code panics while holding the lock, so a poisoned lock holds whole counts.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands a freed place to the next waiter still waiting, or frees it.
fn release(state: &Arc<Mutex<State>>) {
    loop {
        let next = {
            let mut s = lock(state);
            let next = if s.held > s.size {
                None // the lane shrank: this place goes
            } else {
                s.next_waiter()
            };
            match next {
                Some(tx) => tx,
                None => {
                    s.held -= 1;
                    return;
                }
            }
        };
        // The place stays held: it passes to the waiter.
        match next.send(Pass {
            state: state.clone(),
        }) {
            Ok(()) => return,
            // That waiter gave up (its bound, or its client, went): the next one.
            // Forgotten, the returned pass does not release the place again.
            Err(pass) => std::mem::forget(pass),
        }
    }
}

impl Gate {
    /// A lane of `size` places whose waiters are served in turn, or, if
    /// `adaptive`, the newest first while more wait than the lane holds.
    pub fn new(size: usize, adaptive: bool) -> Gate {
        Gate {
            state: Arc::new(Mutex::new(State {
                size: size.max(1),
                adaptive,
                held: 0,
                next_id: 0,
                waiting: VecDeque::new(),
            })),
        }
    }

    /// The lane now has `size` places (places held beyond it go as they are freed).
    pub fn resize(&self, size: usize) {
        lock(&self.state).size = size.max(1);
    }

    /// A place within `wait`, or `None`: the lane stayed full that long.
    pub async fn enter(&self, wait: Duration) -> Option<Pass> {
        let (mut rx, id) = {
            let mut s = lock(&self.state);
            if s.held < s.size {
                s.held += 1;
                return Some(Pass {
                    state: self.state.clone(),
                });
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_id;
            s.next_id += 1;
            s.waiting.push_back((id, tx));
            (rx, id)
        };
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(pass) => pass.ok(),
            Err(_) => {
                let mut s = lock(&self.state);
                match s.waiting.iter().position(|(w, _)| *w == id) {
                    Some(i) => {
                        s.waiting.remove(i);
                        None
                    }
                    // A place was being handed over as the bound came: take it if
                    // it arrived; if not, dropping `rx` passes it on.
                    None => {
                        drop(s);
                        rx.try_recv().ok()
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    /// With every place of `gate` held and `held` one of them: two requests
    /// wait (the first 20 ms before the second), `held` is freed, and the
    /// order in which they got a place is returned.
    async fn order_of_two_waiters(gate: &Gate, held: Pass) -> Vec<u32> {
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for n in [1, 2] {
            let (g, tx) = (gate.clone(), tx.clone());
            tokio::spawn(async move {
                let pass = g.enter(LONG).await;
                tx.send((n, pass.is_some())).unwrap();
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
        let mut got = Vec::new();
        for _ in 0..2 {
            let (n, entered) = order.recv().await.unwrap();
            assert!(entered, "waiter {n} got no place");
            got.push(n);
        }
        got
    }

    #[tokio::test]
    async fn the_newest_goes_first_once_more_wait_than_the_lane_holds() {
        let gate = Gate::new(1, true);
        let held = gate.enter(LONG).await.expect("a free place");
        assert_eq!(order_of_two_waiters(&gate, held).await, [2, 1]);
        assert_eq!(lock(&gate.state).held, 0);
    }

    #[tokio::test]
    async fn the_oldest_goes_first_when_no_more_wait_than_the_lane_holds() {
        let gate = Gate::new(2, true);
        let held = gate.enter(LONG).await.unwrap();
        let _other = gate.enter(LONG).await.unwrap();
        assert_eq!(order_of_two_waiters(&gate, held).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_lane_in_turn_stays_in_turn_however_long_the_queue() {
        let gate = Gate::new(1, false);
        let held = gate.enter(LONG).await.unwrap();
        assert_eq!(order_of_two_waiters(&gate, held).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_waiter_past_its_bound_is_refused_and_its_place_goes_on() {
        let gate = Gate::new(1, true);
        let held = gate.enter(LONG).await.unwrap();
        assert!(gate.enter(Duration::from_millis(30)).await.is_none());
        // A waiter whose client went away is skipped too.
        let g = gate.clone();
        let gone = tokio::spawn(async move { g.enter(LONG).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        let g = gate.clone();
        let last = tokio::spawn(async move { g.enter(LONG).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(last.await.unwrap());
        let s = lock(&gate.state);
        assert_eq!((s.held, s.waiting.len()), (0, 0));
    }
}
