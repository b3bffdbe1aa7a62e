//! Server pools for `pool_mode = session` and `transaction`: one pool per
//! (database, login role).
//!
//! Owns: the accounting of pooled servers per key (`total` = idle + lent +
//! being created + being reset), the idle stack and the queue of waiting
//! clients ([`fair::FairQueue`]: per tenant, served round robin across
//! tenants, with each tenant's count of servers held for
//! `tenant_max_servers`). It does not own sockets: servers and clients are
//! named by ids the reactor gives them (`S`, `C`), so this module is pure
//! and tested alone.
//!
//! Invariants:
//! - a key's `total` is changed only through [`Slot`]: [`Pools::try_slot`]
//!   hands out a `Slot` when a new server may be created, and the slot is
//!   released when it is dropped, on every path (success, error, panic). The
//!   reactor keeps the `Slot` inside the server object, so a server that
//!   disappears for any reason gives its place back; no error can shrink
//!   the pool;
//! - `total <= pool_size` for every key (checked before a slot is made);
//! - a tenant's count of servers is changed only through [`TenantHold`]:
//!   every lend ([`Checkout::Server`], [`Checkin::Lend`], [`Pools::dispatch`])
//!   hands one out, made only when the tenant is below the cap its client
//!   asked with ([`Want`]); the reactor keeps it inside the server for as
//!   long as the tenant holds it, so the cap is never exceeded;
//! - waiters are served round robin across tenants, in arrival order within
//!   a tenant, skipping tenants at their cap; a client never polls;
//! - after the reactor's `serve_waiters`, no server is idle while a waiter
//!   may take one (a hold given back while servers sat idle is followed by
//!   [`Pools::dispatch`]);
//! - a server is in the idle stack only after the reactor proved it idle
//!   (see `conn::tracker`); idle servers are reused newest first, so the
//!   oldest ones age out by `pool_idle_timeout`.

pub mod cancel;
pub mod fair;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use fair::{TenantHold, Want};

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
    /// An idle server, now lent to the caller, and its tenant's hold.
    Server(S, TenantHold),
    /// The client waits in the queue (the reactor then serves the queue:
    /// creates servers for the waiters that may take one). `capped`: it
    /// waits because of its tenant's cap.
    Queued { capped: bool },
}

/// Result of [`Pools::checkin`].
#[derive(Debug)]
pub enum Checkin<S, C> {
    /// Lend `S` to the waiting client `C` (the next one served), with its
    /// tenant's hold.
    Lend(S, C, TenantHold),
    /// No waiter may take it: the server is idle now.
    Idle,
}

#[derive(Debug)]
struct KeyPool<S, C> {
    total: Arc<AtomicU32>,
    /// Newest last.
    idle: Vec<(S, Instant)>,
    waiters: fair::FairQueue<C>,
}

impl<S: Copy + Eq, C: Copy + Eq> KeyPool<S, C> {
    fn new() -> Self {
        KeyPool {
            total: Arc::new(AtomicU32::new(0)),
            idle: Vec::new(),
            waiters: fair::FairQueue::default(),
        }
    }

    fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// `prefer` if it is idle, else the newest idle server.
    fn take_idle(&mut self, prefer: Option<S>) -> Option<S> {
        if let Some(p) = prefer
            && let Some(i) = self.idle.iter().rposition(|(s, _)| *s == p)
        {
            return Some(self.idle.remove(i).0);
        }
        self.idle.pop().map(|(s, _)| s)
    }

    fn unused(&self) -> bool {
        self.total() == 0 && self.idle.is_empty() && self.waiters.is_empty()
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

    /// A client of `want.tenant` wants a server of `key`: an idle one if
    /// its tenant is below `want.cap` and no waiter may take one before it,
    /// otherwise it is queued.
    /// `prefer`: the server this client had last (transaction mode), taken
    /// if it is idle.
    pub fn checkout(
        &mut self,
        key: &PoolKey,
        client: C,
        want: Want<'_>,
        prefer: Option<S>,
        now: Instant,
    ) -> Checkout<S> {
        let kp = self.entry(key);
        let total = kp.total();
        if !kp.idle.is_empty()
            && !kp.waiters.any_eligible()
            && let Some(hold) = kp.waiters.take_now(want, total)
            && let Some(s) = kp.take_idle(prefer)
        {
            return Checkout::Server(s, hold);
        }
        let capped = kp.waiters.push(client, want, now, total);
        Checkout::Queued { capped }
    }

    /// A slot for `key` if below `pool_size` (a server created for the
    /// queue).
    pub fn try_slot(&mut self, key: &PoolKey) -> Option<Slot> {
        let pool_size = self.pool_size;
        let kp = self.entry(key);
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
    /// next waiter that may take it, or keep it idle.
    pub fn checkin(&mut self, key: &PoolKey, server: S, now: Instant) -> Checkin<S, C> {
        let kp = self.entry(key);
        match kp.waiters.pop_next() {
            Some((client, hold)) => Checkin::Lend(server, client, hold),
            None => {
                kp.idle.push((server, now));
                Checkin::Idle
            }
        }
    }

    /// An idle server for the next waiter that may take one (its tenant
    /// gave a server back while others sat idle), taken out of the stack.
    pub fn dispatch(&mut self, key: &PoolKey) -> Option<(S, C, TenantHold)> {
        let kp = self.keys.get_mut(key)?;
        let (s, at) = kp.idle.pop()?;
        match kp.waiters.pop_next() {
            Some((client, hold)) => Some((s, client, hold)),
            None => {
                kp.idle.push((s, at));
                None
            }
        }
    }

    /// Waiters of `key` that could take a server now (servers to create
    /// for them, beyond those being created).
    pub fn servable(&self, key: &PoolKey) -> usize {
        self.keys.get(key).map_or(0, |k| k.waiters.servable())
    }

    /// A server given back by a client of `tenant` would serve a waiter.
    pub fn wants_server(&self, key: &PoolKey, tenant: &str) -> bool {
        self.keys.get(key).is_some_and(|k| k.waiters.wants(tenant))
    }

    /// Servers `tenant` holds in `key`'s pool.
    #[cfg(test)]
    pub fn held(&self, key: &PoolKey, tenant: &str) -> u32 {
        self.keys.get(key).map_or(0, |k| k.waiters.held(tenant))
    }

    /// The client (of `tenant`) left the queue (gone, timed out). True if
    /// it was queued.
    pub fn cancel_wait(&mut self, key: &PoolKey, client: C, tenant: &str) -> bool {
        let Some(kp) = self.keys.get_mut(key) else {
            return false;
        };
        let removed = kp.waiters.remove(tenant, client);
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

    /// Puts `client` back first in line (a server promised to it failed its
    /// check).
    pub fn requeue_front(&mut self, key: &PoolKey, client: C, want: Want<'_>, now: Instant) {
        let kp = self.entry(key);
        let total = kp.total();
        kp.waiters.push_front(client, want, now, total);
    }

    /// The next waiter of `key` that could take a server, taken out of the
    /// queue (a server creation for the queue failed: it gets the error).
    pub fn pop_waiter(&mut self, key: &PoolKey) -> Option<C> {
        let c = self.keys.get_mut(key)?.waiters.pop_next_waiter();
        self.forget_if_empty(key);
        c
    }

    /// Waiters queued at or before `cutoff`, removed from their queues, in
    /// the order they were queued (over all keys and tenants).
    pub fn expired_waiters(&mut self, cutoff: Instant) -> Vec<(PoolKey, C)> {
        let mut out = Vec::new();
        for (key, kp) in &mut self.keys {
            for (since, c) in kp.waiters.expire(cutoff) {
                out.push((since, key.clone(), c));
            }
        }
        out.sort_by_key(|(since, _, _)| *since);
        out.into_iter().map(|(_, k, c)| (k, c)).collect()
    }

    /// When the oldest waiter's `since` is, over all keys.
    #[cfg(test)]
    pub fn oldest_wait(&self) -> Option<Instant> {
        self.keys.values().filter_map(|k| k.waiters.oldest()).min()
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
    /// With no server left (`total` 0) no tenant holds one either.
    fn forget_if_empty(&mut self, key: &PoolKey) {
        if self.keys.get(key).is_some_and(KeyPool::unused) {
            self.keys.remove(key);
        }
    }

    /// Removes keys with no server, no idle entry and no waiter, and the
    /// entries of tenants with neither waiter nor server.
    pub fn compact(&mut self) {
        self.keys.retain(|_, k| {
            k.waiters.sweep();
            !k.unused()
        });
    }
}

/// `now - d`, or `None` when that is before the clock's epoch.
pub fn cutoff(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_sub(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn key(r: &str) -> PoolKey {
        PoolKey {
            database: "db".into(),
            role: r.into(),
        }
    }

    const ANY: Want<'static> = Want {
        tenant: "t",
        cap: None,
    };

    fn lend<S: Copy + Eq, C: Copy + Eq>(c: Checkin<S, C>) -> (S, C, TenantHold) {
        match c {
            Checkin::Lend(s, c, h) => (s, c, h),
            Checkin::Idle => panic!("want a lend, got Idle"),
        }
    }

    #[test]
    fn create_up_to_pool_size_then_serve_in_order() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(2);
        let k = key("app");
        for c in 1..=3 {
            assert!(matches!(
                p.checkout(&k, c, ANY, None, t0),
                Checkout::Queued { capped: false }
            ));
        }
        assert_eq!(p.servable(&k), 3);
        let s1 = p.try_slot(&k).unwrap();
        let s2 = p.try_slot(&k).unwrap();
        assert!(p.try_slot(&k).is_none(), "pool_size reached");
        assert_eq!(p.stats(&k).total, 2);
        assert_eq!(p.stats(&k).waiting, 3);
        // Servers ready: go to waiters in order.
        let (_, c1, h1) = lend(p.checkin(&k, 100, t0));
        let (_, c2, _h2) = lend(p.checkin(&k, 101, t0));
        assert_eq!((c1, c2), (1, 2));
        // Client 1 is done: its server goes to client 3.
        drop(h1);
        let (s, c3, _h3) = lend(p.checkin(&k, 100, t0));
        assert_eq!((s, c3), (100, 3));
        assert!(matches!(p.checkin(&k, 101, t0), Checkin::Idle));
        assert_eq!(p.stats(&k).idle, 1);
        drop(s1);
        drop(s2);
        assert_eq!(p.stats(&k).total, 0);
    }

    #[test]
    fn idle_reused_newest_first_and_prefer() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut p: Pools<u32, u32> = Pools::new(5);
        let k = key("app");
        let _a = p.try_slot(&k).unwrap();
        let _b = p.try_slot(&k).unwrap();
        let _c = p.try_slot(&k).unwrap();
        assert!(matches!(p.checkin(&k, 10, t0), Checkin::Idle));
        assert!(matches!(p.checkin(&k, 11, t1), Checkin::Idle));
        assert!(matches!(p.checkin(&k, 12, t1), Checkin::Idle));
        match p.checkout(&k, 1, ANY, None, t1) {
            Checkout::Server(s, _) => assert_eq!(s, 12),
            other => panic!("want idle server, got {other:?}"),
        }
        match p.checkout(&k, 2, ANY, Some(10), t1) {
            Checkout::Server(s, _) => assert_eq!(s, 10, "the client's last server"),
            other => panic!("want idle server, got {other:?}"),
        }
        // The reaper takes the old ones only.
        assert!(p.idle_since(t0).is_empty());
        let reaped = p.idle_since(t1);
        assert_eq!(reaped, vec![(k.clone(), 11)]);
        assert_eq!(p.stats(&k).idle, 0);
    }

    #[test]
    fn slots_released_on_drop_on_every_path() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(1);
        let k = key("app");
        assert!(matches!(
            p.checkout(&k, 1, ANY, None, t0),
            Checkout::Queued { .. }
        ));
        {
            let _slot = p.try_slot(&k).unwrap();
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
                p.checkout(&k, c, ANY, None, t0 + Duration::from_secs(u64::from(c))),
                Checkout::Queued { capped: false }
            ));
        }
        assert!(p.cancel_wait(&k, 2, "t"));
        assert!(!p.cancel_wait(&k, 2, "t"));
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
        assert!(matches!(p.checkin(&k, 7, t0), Checkin::Idle));
        assert!(p.remove_idle(&k, 7));
        assert!(!p.remove_idle(&k, 7));
        assert!(matches!(
            p.checkout(&k, 1, ANY, None, t0),
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
        assert!(matches!(p.checkin(&a, 1, t0), Checkin::Idle));
        assert!(matches!(
            p.checkout(&b, 9, ANY, None, t0),
            Checkout::Queued { capped: false }
        ));
        assert_eq!(p.stats(&a).idle, 1);
    }

    /// pool_size = 4, tenant_max_servers = 2: tenant a waits with servers
    /// idle, b is served at once; a hold given back lets `dispatch` serve
    /// a from the idle stack; the count follows the holds wherever they go.
    #[test]
    fn tenant_cap_with_idle_servers() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(4);
        let k = key("app");
        let a = Want {
            tenant: "a",
            cap: Some(2),
        };
        let b = Want {
            tenant: "b",
            cap: Some(2),
        };
        let slots: Vec<Slot> = (0..4).map(|_| p.try_slot(&k).unwrap()).collect();
        for s in 0..4 {
            assert!(matches!(p.checkin(&k, s, t0), Checkin::Idle));
        }
        let mut held = Vec::new();
        for c in 1..=2 {
            match p.checkout(&k, c, a, None, t0) {
                Checkout::Server(s, h) => held.push((s, h)),
                other => panic!("a below its cap: {other:?}"),
            }
        }
        assert_eq!(p.held(&k, "a"), 2);
        for c in 3..=6 {
            assert!(matches!(
                p.checkout(&k, c, a, None, t0),
                Checkout::Queued { capped: true }
            ));
        }
        assert_eq!(p.servable(&k), 0, "nothing to create for a");
        assert!(p.dispatch(&k).is_none(), "two servers idle, a at its cap");
        match p.checkout(&k, 7, b, None, t0) {
            Checkout::Server(_, h) => drop(h),
            other => panic!("b is served at once: {other:?}"),
        }
        // One of a's servers is given back (its client is done, the server
        // resets): a's first waiter takes an idle one at once.
        let (s, h) = held.pop().unwrap();
        drop(h);
        assert!(p.wants_server(&k, "a"));
        let (_, c, h) = p.dispatch(&k).unwrap();
        assert_eq!(c, 3);
        assert!(p.dispatch(&k).is_none());
        assert_eq!(p.held(&k, "a"), 2);
        // The returned server becomes idle: nobody may take it.
        assert!(matches!(p.checkin(&k, s, t0), Checkin::Idle));
        drop(h);
        let (_, c, _h) = lend(p.checkin(&k, 9, t0));
        assert_eq!(c, 4);
        drop(slots);
    }

    /// A new client does not jump ahead of a waiter that may take the idle
    /// server (dispatch has not run yet).
    #[test]
    fn checkout_does_not_overtake_an_eligible_waiter() {
        let t0 = Instant::now();
        let mut p: Pools<u32, u32> = Pools::new(2);
        let k = key("app");
        let a = Want {
            tenant: "a",
            cap: Some(1),
        };
        let _s1 = p.try_slot(&k).unwrap();
        let _s2 = p.try_slot(&k).unwrap();
        let (_, _, ha) = {
            assert!(matches!(
                p.checkout(&k, 1, a, None, t0),
                Checkout::Queued { .. }
            ));
            lend(p.checkin(&k, 10, t0))
        };
        assert!(matches!(
            p.checkout(&k, 2, a, None, t0),
            Checkout::Queued { capped: true }
        ));
        assert!(matches!(p.checkin(&k, 11, t0), Checkin::Idle));
        drop(ha); // a may take the idle server now
        assert!(matches!(
            p.checkout(&k, 3, ANY, None, t0),
            Checkout::Queued { capped: false }
        ));
        let (s, c, _h) = p.dispatch(&k).unwrap();
        assert_eq!((s, c), (11, 2));
    }
}
