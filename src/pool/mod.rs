//! Server pools for `pool_mode = session`: one pool per (database, login role).
//!
//! Owns: the accounting of pooled servers per key (`total` = idle + lent +
//! being created + being reset), the idle stack and the FIFO queue of waiting
//! clients. It does not own sockets: servers and clients are named by ids the
//! reactor gives them (`S`, `C`), so this module is pure and tested alone.
//!
//! Invariants:
//! - a key's `total` is changed only through [`Slot`]: [`Pools::checkout`]
//!   hands out a `Slot` when a new server may be created, and the slot is
//!   released when it is dropped, on every path (success, error, panic). The
//!   reactor keeps the `Slot` inside the server object, so a server that
//!   disappears for any reason gives its place back; no error can shrink
//!   the pool;
//! - `total <= pool_size` for every key (checked before a slot is made);
//! - waiters are served strictly in arrival order; a client never polls;
//! - a server is in the idle stack only after the reactor proved it idle
//!   (see `conn::tracker`); idle servers are reused newest first, so the
//!   oldest ones age out by `pool_idle_timeout`.

pub mod cancel;
pub mod fair;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What a pool is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub role: String,
}

/// One place in a key's pool. Dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    total: Arc<AtomicU32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Result of [`Pools::checkout`].
#[derive(Debug)]
pub enum Checkout<S> {
    /// An idle server, now lent to the caller.
    Server(S),
    /// The client waits in the queue; `create` is a slot for a new server
    /// (which, once ready, goes to the head of the queue through
    /// [`Pools::checkin`]).
    Queued { create: Option<Slot> },
}

/// Result of [`Pools::checkin`].
#[derive(Debug, PartialEq, Eq)]
pub enum Checkin<S, C> {
    /// Lend `S` to the waiting client `C` (first in the queue).
    Lend(S, C),
    /// No waiter: the server is idle now.
    Idle,
}

#[derive(Debug)]
struct Waiter<C> {
    client: C,
    since: Instant,
}

#[derive(Debug)]
struct KeyPool<S, C> {
    total: Arc<AtomicU32>,
    /// Newest last.
    idle: Vec<(S, Instant)>,
    waiters: VecDeque<Waiter<C>>,
}

impl<S, C> KeyPool<S, C> {
    fn new() -> Self {
        KeyPool {
            total: Arc::new(AtomicU32::new(0)),
            idle: Vec::new(),
            waiters: VecDeque::new(),
        }
    }

    fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Counts for one key (admin API, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStats {
    pub total: u32,
    pub idle: usize,
    pub waiting: usize,
}

/// Every pool of one worker.
#[derive(Debug)]
pub struct Pools<S, C> {
    pool_size: u32,
    keys: HashMap<PoolKey, KeyPool<S, C>>,
}

impl<S: Copy + Eq, C: Copy + Eq> Pools<S, C> {
    pub fn new(pool_size: u32) -> Self {
        Pools {
            pool_size,
            keys: HashMap::new(),
        }
    }

    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// A client wants a server of `key`: an idle one if any (and nobody is
    /// queued before it), otherwise it is queued, with a slot to create a
    /// server when the key is below `pool_size`.
    /// `prefer`: the server this client had last (transaction mode), taken
    /// if it is idle.
    pub fn checkout(
        &mut self,
        key: &PoolKey,
        client: C,
        prefer: Option<S>,
        now: Instant,
    ) -> Checkout<S>
    where
        S: PartialEq,
    {
        let pool_size = self.pool_size;
        let kp = self.entry(key);
        if kp.waiters.is_empty() {
            if let Some(p) = prefer
                && let Some(i) = kp.idle.iter().rposition(|(s, _)| *s == p)
            {
                let (s, _) = kp.idle.remove(i);
                return Checkout::Server(s);
            }
            if let Some((s, _)) = kp.idle.pop() {
                return Checkout::Server(s);
            }
        }
        kp.waiters.push_back(Waiter { client, since: now });
        Checkout::Queued {
            create: Self::make_slot(kp, pool_size),
        }
    }

    /// A slot for `key` if below `pool_size` (for a server created on behalf
    /// of the queue after a failed or closed one).
    pub fn try_slot(&mut self, key: &PoolKey) -> Option<Slot> {
        let pool_size = self.pool_size;
        let kp = self.entry(key);
        Self::make_slot(kp, pool_size)
    }

    fn make_slot(kp: &mut KeyPool<S, C>, pool_size: u32) -> Option<Slot> {
        // Single-threaded per key: load and add cannot race with another adder.
        if kp.total() < pool_size {
            kp.total.fetch_add(1, Ordering::Relaxed);
            Some(Slot {
                total: Arc::clone(&kp.total),
            })
        } else {
            None
        }
    }

    /// A server proved idle (new, or reset after its client): lend it to the
    /// first waiter, or keep it idle.
    pub fn checkin(&mut self, key: &PoolKey, server: S, now: Instant) -> Checkin<S, C> {
        let kp = self.entry(key);
        match kp.waiters.pop_front() {
            Some(w) => Checkin::Lend(server, w.client),
            None => {
                kp.idle.push((server, now));
                Checkin::Idle
            }
        }
    }

    /// The client left the queue (gone, timed out). True if it was queued.
    pub fn cancel_wait(&mut self, key: &PoolKey, client: C) -> bool {
        let Some(kp) = self.keys.get_mut(key) else {
            return false;
        };
        let before = kp.waiters.len();
        kp.waiters.retain(|w| w.client != client);
        let removed = kp.waiters.len() != before;
        self.forget_if_empty(key);
        removed
    }

    /// Takes `server` out of the idle stack (EOF while idle, checked before
    /// reuse, reaped). True if it was idle.
    pub fn remove_idle(&mut self, key: &PoolKey, server: S) -> bool {
        let Some(kp) = self.keys.get_mut(key) else {
            return false;
        };
        let before = kp.idle.len();
        kp.idle.retain(|(s, _)| *s != server);
        before != kp.idle.len()
    }

    /// Puts `client` back at the head of the queue (a server promised to it
    /// failed its check).
    pub fn requeue_front(&mut self, key: &PoolKey, client: C, now: Instant) {
        self.entry(key)
            .waiters
            .push_front(Waiter { client, since: now });
    }

    /// The first waiter of `key`, taken out of the queue (a server creation
    /// for it failed: it gets the error).
    pub fn pop_waiter(&mut self, key: &PoolKey) -> Option<C> {
        let c = self
            .keys
            .get_mut(key)?
            .waiters
            .pop_front()
            .map(|w| w.client);
        self.forget_if_empty(key);
        c
    }

    /// True when `key` has clients queued.
    pub fn has_waiters(&self, key: &PoolKey) -> bool {
        self.keys.get(key).is_some_and(|k| !k.waiters.is_empty())
    }

    /// Waiters queued at or before `cutoff`, removed from their queues.
    pub fn expired_waiters(&mut self, cutoff: Instant) -> Vec<(PoolKey, C)> {
        let mut out = Vec::new();
        for (key, kp) in &mut self.keys {
            while kp.waiters.front().is_some_and(|w| w.since <= cutoff) {
                if let Some(w) = kp.waiters.pop_front() {
                    out.push((key.clone(), w.client));
                }
            }
        }
        out
    }

    /// When the oldest waiter's `since` is, over all keys (for the timer).
    pub fn oldest_wait(&self) -> Option<Instant> {
        self.keys
            .values()
            .filter_map(|k| k.waiters.front().map(|w| w.since))
            .min()
    }

    /// Idle servers idle since at or before `cutoff`, removed from the stacks.
    pub fn idle_since(&mut self, cutoff: Instant) -> Vec<(PoolKey, S)> {
        let mut out = Vec::new();
        for (key, kp) in &mut self.keys {
            kp.idle.retain(|(s, at)| {
                if *at <= cutoff {
                    out.push((key.clone(), *s));
                    false
                } else {
                    true
                }
            });
        }
        out
    }

    /// The oldest idle timestamp over all keys (for the reaper's timer).
    pub fn oldest_idle(&self) -> Option<Instant> {
        self.keys
            .values()
            .filter_map(|k| k.idle.first().map(|(_, at)| *at))
            .min()
    }

    pub fn stats(&self, key: &PoolKey) -> KeyStats {
        self.keys
            .get(key)
            .map(|k| KeyStats {
                total: k.total(),
                idle: k.idle.len(),
                waiting: k.waiters.len(),
            })
            .unwrap_or_default()
    }

    /// Every key with its counts.
    pub fn all_stats(&self) -> Vec<(PoolKey, KeyStats)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    KeyStats {
                        total: p.total(),
                        idle: p.idle.len(),
                        waiting: p.waiters.len(),
                    },
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0.database, &a.0.role).cmp(&(&b.0.database, &b.0.role)));
        v
    }

    fn entry(&mut self, key: &PoolKey) -> &mut KeyPool<S, C> {
        self.keys.entry(key.clone()).or_insert_with(KeyPool::new)
    }

    /// Drops a key's bookkeeping once nothing refers to it (bounded map).
    fn forget_if_empty(&mut self, key: &PoolKey) {
        if self
            .keys
            .get(key)
            .is_some_and(|k| k.total() == 0 && k.idle.is_empty() && k.waiters.is_empty())
        {
            self.keys.remove(key);
        }
    }

    /// Removes keys with no server, no idle entry and no waiter.
    pub fn compact(&mut self) {
        self.keys
            .retain(|_, k| k.total() != 0 || !k.idle.is_empty() || !k.waiters.is_empty());
    }
}

/// `now - d`, or `None` when that is before the clock's epoch.
pub fn cutoff(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_sub(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: &str) -> PoolKey {
        PoolKey {
            database: "db".into(),
            role: r.into(),
        }
    }

    #[test]
    fn create_up_to_pool_size_then_queue_fifo() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(2);
        let k = key("app");
        let Checkout::Queued { create: Some(s1) } = p.checkout(&k, 1, None, t0) else {
            panic!("first client must get a create slot");
        };
        let Checkout::Queued { create: Some(s2) } = p.checkout(&k, 2, None, t0) else {
            panic!("second client must get a create slot");
        };
        let Checkout::Queued { create: None } = p.checkout(&k, 3, None, t0) else {
            panic!("third client must queue without a slot");
        };
        assert_eq!(p.stats(&k).total, 2);
        assert_eq!(p.stats(&k).waiting, 3);
        // Servers ready: go to waiters in order.
        assert_eq!(p.checkin(&k, 100, t0), Checkin::Lend(100, 1));
        assert_eq!(p.checkin(&k, 101, t0), Checkin::Lend(101, 2));
        // Client 1 is done: its server goes to client 3.
        assert_eq!(p.checkin(&k, 100, t0), Checkin::Lend(100, 3));
        assert_eq!(p.checkin(&k, 101, t0), Checkin::Idle);
        assert_eq!(p.stats(&k).idle, 1);
        drop(s1);
        drop(s2);
        assert_eq!(p.stats(&k).total, 0);
    }

    #[test]
    fn idle_reused_newest_first_and_not_past_a_queue() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut p: Pools<u32, u32> = Pools::new(5);
        let k = key("app");
        let _a = p.try_slot(&k).unwrap();
        let _b = p.try_slot(&k).unwrap();
        assert_eq!(p.checkin(&k, 10, t0), Checkin::Idle);
        assert_eq!(p.checkin(&k, 11, t1), Checkin::Idle);
        match p.checkout(&k, 1, None, t1) {
            Checkout::Server(s) => assert_eq!(s, 11),
            other => panic!("want idle server, got {other:?}"),
        }
        // The reaper takes the old one only.
        let reaped = p.idle_since(t0);
        assert_eq!(reaped, vec![(k.clone(), 10)]);
        assert_eq!(p.stats(&k).idle, 0);
    }

    #[test]
    fn slots_released_on_drop_on_every_path() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(1);
        let k = key("app");
        {
            let Checkout::Queued {
                create: Some(_slot),
            } = p.checkout(&k, 1, None, t0)
            else {
                panic!("want slot");
            };
            // The creation fails: the slot is dropped here.
        }
        assert_eq!(p.stats(&k).total, 0);
        assert_eq!(p.pop_waiter(&k), Some(1));
        // A panic while holding a slot still gives it back.
        let slot = p.try_slot(&k).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _s = slot;
            panic!("boom");
        }));
        assert!(r.is_err());
        assert_eq!(p.stats(&k).total, 0);
        assert!(p.try_slot(&k).is_some());
    }

    #[test]
    fn waiters_cancel_and_expire() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(0);
        let k = key("app");
        for c in 1..=3 {
            assert!(matches!(
                p.checkout(&k, c, None, t0 + Duration::from_secs(u64::from(c))),
                Checkout::Queued { create: None }
            ));
        }
        assert!(p.cancel_wait(&k, 2));
        assert!(!p.cancel_wait(&k, 2));
        assert_eq!(p.oldest_wait(), Some(t0 + Duration::from_secs(1)));
        let gone = p.expired_waiters(t0 + Duration::from_secs(2));
        assert_eq!(gone, vec![(k.clone(), 1)]);
        assert_eq!(p.stats(&k).waiting, 1);
        let gone = p.expired_waiters(t0 + Duration::from_secs(9));
        assert_eq!(gone, vec![(k.clone(), 3)]);
        p.compact();
        assert!(p.all_stats().is_empty());
    }

    #[test]
    fn remove_idle_server() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(3);
        let k = key("app");
        let _s = p.try_slot(&k);
        assert_eq!(p.checkin(&k, 7, t0), Checkin::Idle);
        assert!(p.remove_idle(&k, 7));
        assert!(!p.remove_idle(&k, 7));
        assert!(matches!(
            p.checkout(&k, 1, None, t0),
            Checkout::Queued { .. }
        ));
    }

    #[test]
    fn keys_are_separate() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(1);
        let a = key("a");
        let b = key("b");
        let _sa = p.try_slot(&a).unwrap();
        assert!(p.try_slot(&a).is_none());
        let _sb = p.try_slot(&b).unwrap();
        assert_eq!(p.checkin(&a, 1, t0), Checkin::Idle);
        assert!(matches!(
            p.checkout(&b, 9, None, t0),
            Checkout::Queued { create: None }
        ));
        assert_eq!(p.stats(&a).idle, 1);
    }
}
