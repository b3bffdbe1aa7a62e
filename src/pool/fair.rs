//! The waiting clients of one pool key, queued per tenant and served round
//! robin across tenants, with the count of servers each tenant holds
//! (`tenant_max_servers`).
//!
//! Owns: one FIFO of waiters per tenant, the `ring` of tenants that have
//! waiters (their serving order), and per tenant the number of servers it
//! holds. It knows nothing of servers or sockets: the caller (`Pools`)
//! decides when a server is free and asks [`FairQueue::pop_next`] whom it
//! goes to. Pure: time is passed in.
//!
//! Invariants (checked by `check` in the tests):
//! - a tenant is in `ring` exactly once while it has waiters, never
//!   otherwise; `waiting` is the number of waiters over all tenants;
//! - a tenant's `held` is the number of [`TenantHold`]s alive for it; a
//!   hold is only made when `held` is below the cap of the waiter (or
//!   checkout) it is made for, and the caller keeps it inside the server it
//!   was made for, so a tenant never holds more servers than its cap, on
//!   any path (a hold is given back when it is dropped);
//! - [`FairQueue::pop_next`] serves the first tenant in ring order whose
//!   first waiter is below its cap; that tenant goes to the back of the
//!   ring, tenants skipped (at their cap) keep their place. Within a
//!   tenant, waiters are served in arrival order;
//! - bounded: a tenant's entry lives while it has waiters or holds servers.
//!   It is removed at once when its last waiter leaves while it holds
//!   nothing; an entry whose last hold was dropped elsewhere is swept once
//!   the entries outnumber twice the waiters plus the pool's servers (plus
//!   [`SWEEP_SLACK`]), and by [`FairQueue::sweep`]. Every operation is O(1)
//!   or O(tenants with waiters), except the sweep (amortised O(1)).
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Entries of tenants with neither waiter nor server tolerated above twice
/// the live ones before a sweep.
pub const SWEEP_SLACK: usize = 16;

/// What a checkout carries besides its pool key: the client's tenant (the
/// value of its `tenant_key` context variable) and the most servers that
/// tenant may hold in this pool (`tenant_max_servers` of the client's own
/// configuration; None: no cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want<'a> {
    pub tenant: &'a str,
    pub cap: Option<u32>,
}

/// One server held by a tenant (lent to one of its clients, parked with
/// one, or promised to one while its check query runs). Dropping it gives
/// the place back.
#[derive(Debug)]
pub struct TenantHold {
    held: Arc<AtomicU32>,
}

impl Drop for TenantHold {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Waiter<C> {
    client: C,
    cap: Option<u32>,
    since: Instant,
}

#[derive(Debug)]
struct Tenant<C> {
    held: Arc<AtomicU32>,
    waiters: VecDeque<Waiter<C>>,
}

impl<C> Tenant<C> {
    fn new() -> Self {
        Tenant {
            held: Arc::new(AtomicU32::new(0)),
            waiters: VecDeque::new(),
        }
    }

    fn held(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }

    /// The first waiter may take a server now.
    fn head_has_room(&self) -> bool {
        self.waiters
            .front()
            .is_some_and(|w| has_room(w.cap, self.held()))
    }

    /// Waiters that could take a server now, in their order (the first
    /// waiter's cap decides).
    fn servable(&self) -> usize {
        match self.waiters.front().map(|w| w.cap) {
            None => 0,
            Some(None) => self.waiters.len(),
            Some(Some(cap)) => {
                let room = cap.saturating_sub(self.held());
                self.waiters
                    .len()
                    .min(usize::try_from(room).unwrap_or(usize::MAX))
            }
        }
    }

    fn hold(&self) -> TenantHold {
        // Single-threaded per pool: the check before it cannot be raced.
        self.held.fetch_add(1, Ordering::Relaxed);
        TenantHold {
            held: Arc::clone(&self.held),
        }
    }

    fn unused(&self) -> bool {
        self.waiters.is_empty() && self.held() == 0
    }
}

fn has_room(cap: Option<u32>, held: u32) -> bool {
    cap.is_none_or(|c| held < c)
}

/// The queue of one pool key.
#[derive(Debug)]
pub struct FairQueue<C> {
    tenants: HashMap<Arc<str>, Tenant<C>>,
    /// Tenants with waiters, in serving order.
    ring: VecDeque<Arc<str>>,
    waiting: usize,
}

impl<C> Default for FairQueue<C> {
    fn default() -> Self {
        FairQueue {
            tenants: HashMap::new(),
            ring: VecDeque::new(),
            waiting: 0,
        }
    }
}

impl<C: Copy + Eq> FairQueue<C> {
    /// Waiters over all tenants.
    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// Tenant entries kept (waiters or servers; a few stale ones).
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }

    /// Servers `tenant` holds now.
    pub fn held(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).map_or(0, Tenant::held)
    }

    /// The entry of `name`, made if missing (sweeping stale entries first
    /// when they pile up; `servers`: the pool's servers, for the bound).
    fn entry(&mut self, name: &str, servers: u32) -> &mut Tenant<C> {
        if !self.tenants.contains_key(name) {
            let live = self
                .waiting
                .saturating_add(usize::try_from(servers).unwrap_or(usize::MAX));
            if self.tenants.len() > live.saturating_mul(2).saturating_add(SWEEP_SLACK) {
                self.sweep();
            }
        }
        self.tenants
            .entry(Arc::from(name))
            .or_insert_with(Tenant::new)
    }

    /// A hold for a checkout served at once: only when none of its tenant's
    /// clients is queued and the tenant is below `want.cap` (the caller has
    /// checked that no other waiter may take a server, [`Self::any_eligible`]).
    pub fn take_now(&mut self, want: Want<'_>, servers: u32) -> Option<TenantHold> {
        let ok = |t: &Tenant<C>| t.waiters.is_empty() && has_room(want.cap, t.held());
        // A tenant already known (the common case) costs no allocation.
        if let Some(t) = self.tenants.get(want.tenant) {
            return ok(t).then(|| t.hold());
        }
        let t = self.entry(want.tenant, servers);
        ok(t).then(|| t.hold())
    }

    /// Queues `client` behind its tenant's waiters. True when it waits
    /// because of its tenant's cap: the servers the tenant holds plus its
    /// waiters ahead already reach `want.cap`.
    pub fn push(&mut self, client: C, want: Want<'_>, now: Instant, servers: u32) -> bool {
        let t = self.entry(want.tenant, servers);
        let ahead = t.waiters.len();
        let held = t.held();
        t.waiters.push_back(Waiter {
            client,
            cap: want.cap,
            since: now,
        });
        self.waiting = self.waiting.saturating_add(1);
        if ahead == 0 {
            self.join_ring(want.tenant, false);
        }
        want.cap.is_some_and(|c| {
            usize::try_from(held)
                .unwrap_or(usize::MAX)
                .saturating_add(ahead)
                >= usize::try_from(c).unwrap_or(usize::MAX)
        })
    }

    /// Puts `client` back first in line (a server promised to it failed its
    /// check): first of its tenant, and its tenant first in the ring.
    pub fn push_front(&mut self, client: C, want: Want<'_>, now: Instant, servers: u32) {
        let t = self.entry(want.tenant, servers);
        let had = !t.waiters.is_empty();
        t.waiters.push_front(Waiter {
            client,
            cap: want.cap,
            since: now,
        });
        self.waiting = self.waiting.saturating_add(1);
        if had {
            self.ring.retain(|r| **r != *want.tenant);
        }
        self.join_ring(want.tenant, true);
    }

    fn join_ring(&mut self, name: &str, front: bool) {
        if let Some((k, _)) = self.tenants.get_key_value(name) {
            let k = Arc::clone(k);
            if front {
                self.ring.push_front(k);
            } else {
                self.ring.push_back(k);
            }
        }
    }

    /// Takes the next waiter to serve out of the queue: the first waiter
    /// of the first tenant in ring order that is below that waiter's cap.
    fn select(&mut self) -> Option<(Arc<str>, C)> {
        let tenants = &self.tenants;
        let i = self
            .ring
            .iter()
            .position(|r| tenants.get(r).is_some_and(Tenant::head_has_room))?;
        let name = self.ring.remove(i)?;
        let t = self.tenants.get_mut(&name)?;
        let w = t.waiters.pop_front()?;
        self.waiting = self.waiting.saturating_sub(1);
        if !t.waiters.is_empty() {
            self.ring.push_back(Arc::clone(&name));
        }
        Some((name, w.client))
    }

    /// The next waiter to serve, with the hold its server must carry.
    pub fn pop_next(&mut self) -> Option<(C, TenantHold)> {
        let (name, client) = self.select()?;
        let hold = self.tenants.get(&name)?.hold();
        Some((client, hold))
    }

    /// The next waiter to serve, taken out without a server (it gets an
    /// error instead).
    pub fn pop_next_waiter(&mut self) -> Option<C> {
        let (name, client) = self.select()?;
        self.forget_if_unused(&name);
        Some(client)
    }

    /// Takes `client` (of `tenant`) out of the queue. True if it was queued.
    pub fn remove(&mut self, tenant: &str, client: C) -> bool {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return false;
        };
        let before = t.waiters.len();
        t.waiters.retain(|w| w.client != client);
        let removed = before.saturating_sub(t.waiters.len());
        let emptied = t.waiters.is_empty();
        self.waiting = self.waiting.saturating_sub(removed);
        if removed > 0 && emptied {
            self.ring.retain(|r| **r != *tenant);
        }
        self.forget_if_unused(tenant);
        removed > 0
    }

    fn forget_if_unused(&mut self, tenant: &str) {
        if self.tenants.get(tenant).is_some_and(Tenant::unused) {
            self.tenants.remove(tenant);
        }
    }

    /// Some waiter could take a server now.
    pub fn any_eligible(&self) -> bool {
        self.ring
            .iter()
            .any(|r| self.tenants.get(r).is_some_and(Tenant::head_has_room))
    }

    /// How many waiters could take a server now (each tenant's waiters up
    /// to the room its cap leaves).
    pub fn servable(&self) -> usize {
        self.ring
            .iter()
            .filter_map(|r| self.tenants.get(r))
            .map(Tenant::servable)
            .fold(0usize, usize::saturating_add)
    }

    /// A server given back by a client of `tenant` would be used: some
    /// waiter may take it, or `tenant` itself has waiters (its count goes
    /// down with the give-back).
    pub fn wants(&self, tenant: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|t| !t.waiters.is_empty())
            || self.any_eligible()
    }

    /// Waiters queued at or before `cutoff`, taken out of the queue, in the
    /// order they were queued (`since`).
    pub fn expire(&mut self, cutoff: Instant) -> Vec<(Instant, C)> {
        let mut out = Vec::new();
        for t in self.tenants.values_mut() {
            while t.waiters.front().is_some_and(|w| w.since <= cutoff) {
                if let Some(w) = t.waiters.pop_front() {
                    out.push((w.since, w.client));
                }
            }
        }
        // Stable: clients queued at the same instant keep their tenant's order.
        out.sort_by_key(|(since, _)| *since);
        self.waiting = self.waiting.saturating_sub(out.len());
        let tenants = &self.tenants;
        self.ring
            .retain(|r| tenants.get(r).is_some_and(|t| !t.waiters.is_empty()));
        self.sweep();
        out
    }

    /// When the longest-waiting client was queued.
    #[cfg(test)]
    pub fn oldest(&self) -> Option<Instant> {
        self.tenants
            .values()
            .filter_map(|t| t.waiters.front().map(|w| w.since))
            .min()
    }

    /// Removes the entries of tenants with neither waiter nor server.
    pub fn sweep(&mut self) {
        self.tenants.retain(|_, t| !t.unused());
    }

    /// The invariants of the module doc (tests).
    #[cfg(test)]
    #[allow(clippy::panic)]
    pub fn check(&self) {
        let mut seen = std::collections::HashSet::new();
        for r in &self.ring {
            assert!(seen.insert(r.clone()), "{r} twice in the ring");
            let t = self.tenants.get(r);
            assert!(
                t.is_some_and(|t| !t.waiters.is_empty()),
                "{r} in the ring without waiters"
            );
        }
        let mut n = 0usize;
        for (name, t) in &self.tenants {
            n = n.saturating_add(t.waiters.len());
            if !t.waiters.is_empty() {
                assert!(seen.contains(name), "{name} has waiters, not in the ring");
            }
        }
        assert_eq!(n, self.waiting, "waiting count");
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(tenant: &str, cap: Option<u32>) -> Want<'_> {
        Want { tenant, cap }
    }

    /// Serves `n` waiters, dropping each hold at once (a pool of one
    /// server that goes from client to client).
    fn serve_order(q: &mut FairQueue<u32>, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (c, hold) = q.pop_next().expect("a waiter");
            drop(hold);
            q.check();
            out.push(c);
        }
        out
    }

    #[test]
    fn one_waiter_of_b_is_not_starved_by_a_hundred_of_a() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        for c in 0..100 {
            assert!(!q.push(c, w("a", None), t0, 1));
        }
        q.push(1000, w("b", None), t0, 1);
        q.push(101, w("a", None), t0, 1);
        q.check();
        // a, then b, then a again: b's only waiter goes second.
        assert_eq!(serve_order(&mut q, 4), vec![0, 1000, 1, 2]);
        assert_eq!(q.len(), 98);
        // b's entry outlived its last waiter only while b held the server.
        q.sweep();
        assert_eq!(q.tenants(), 1);
        // FIFO within a tenant.
        let rest = serve_order(&mut q, 98);
        assert_eq!(rest, (3..100).chain([101]).collect::<Vec<_>>());
        assert!(q.is_empty());
        q.sweep();
        assert_eq!(q.tenants(), 0);
    }

    #[test]
    fn round_robin_over_three_tenants() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        for (c, t) in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "c"), (6, "c")] {
            q.push(c, w(t, None), t0, 1);
        }
        assert_eq!(serve_order(&mut q, 6), vec![1, 4, 5, 2, 6, 3]);
    }

    #[test]
    fn cap_is_exact_and_others_keep_being_served() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        let cap = Some(2);
        let mut held = Vec::new();
        // Two of a's checkouts are served at once.
        held.push(q.take_now(w("a", cap), 4).expect("room"));
        held.push(q.take_now(w("a", cap), 4).expect("room"));
        assert!(q.take_now(w("a", cap), 4).is_none(), "a is at its cap");
        assert_eq!(q.held("a"), 2);
        // Further a clients wait because of the cap; b does not.
        assert!(q.push(10, w("a", cap), t0, 4));
        assert!(q.push(11, w("a", cap), t0, 4));
        assert!(!q.any_eligible());
        assert_eq!(q.servable(), 0);
        assert!(!q.push(20, w("b", cap), t0, 4));
        assert!(q.any_eligible());
        assert_eq!(q.servable(), 1);
        // A free server skips a (at its cap) and goes to b.
        let (c, hb) = q.pop_next().unwrap();
        assert_eq!(c, 20);
        assert!(q.pop_next().is_none(), "a still at its cap: nobody else");
        assert!(q.wants("a"), "a's own give-back would serve a");
        assert!(!q.wants("b"), "b's give-back would serve nobody");
        // a gives one back: its first waiter may take the next server.
        held.pop();
        assert_eq!(q.servable(), 1);
        let (c, ha) = q.pop_next().unwrap();
        assert_eq!(c, 10);
        assert_eq!(q.held("a"), 2);
        assert!(q.pop_next().is_none());
        q.check();
        drop((hb, ha, held));
        assert_eq!(q.held("a"), 0);
        let (c, _h) = q.pop_next().unwrap();
        assert_eq!(c, 11);
    }

    #[test]
    fn capped_counts_waiters_ahead() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        let cap = Some(2);
        assert!(!q.push(1, w("a", cap), t0, 4));
        assert!(!q.push(2, w("a", cap), t0, 4));
        assert!(q.push(3, w("a", cap), t0, 4), "two ahead reach the cap");
        assert_eq!(q.servable(), 2);
        let (_, h1) = q.pop_next().unwrap();
        assert_eq!(q.servable(), 1, "one held, one more room");
        let (_, h2) = q.pop_next().unwrap();
        assert_eq!(q.servable(), 0);
        drop((h1, h2));
        assert_eq!(q.servable(), 1);
        // No cap: never capped, all servable.
        assert!(!q.push(9, w("n", None), t0, 4));
        assert_eq!(q.servable(), 2);
    }

    #[test]
    fn remove_and_push_front() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        q.push(1, w("a", None), t0, 1);
        q.push(2, w("b", None), t0, 1);
        q.push(3, w("b", None), t0, 1);
        assert!(q.remove("a", 1));
        assert!(!q.remove("a", 1));
        assert!(!q.remove("b", 1), "wrong tenant: not found");
        q.check();
        assert_eq!(q.tenants(), 1);
        q.push(4, w("c", None), t0, 1);
        // 3 had a server promised that failed: back first in line.
        q.push_front(5, w("c", None), t0, 1);
        q.check();
        assert_eq!(serve_order(&mut q, 4), vec![5, 2, 4, 3]);
        assert_eq!(q.pop_next_waiter(), None);
        q.sweep();
        assert_eq!(q.tenants(), 0);
    }

    #[test]
    fn expire_and_oldest() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut q = FairQueue::default();
        q.push(1, w("a", None), s(1), 1);
        q.push(2, w("b", None), s(2), 1);
        q.push(3, w("a", None), s(3), 1);
        assert_eq!(q.oldest(), Some(s(1)));
        assert_eq!(
            q.expire(s(2)),
            vec![(s(1), 1), (s(2), 2)],
            "in arrival order"
        );
        q.check();
        assert_eq!(q.len(), 1);
        assert_eq!(q.tenants(), 1);
        assert_eq!(q.expire(s(9)), vec![(s(3), 3)]);
        assert_eq!(q.tenants(), 0);
    }

    #[test]
    fn stale_entries_are_bounded() {
        let t0 = Instant::now();
        let mut q: FairQueue<u32> = FairQueue::default();
        let mut held = None;
        for i in 0..10_000u32 {
            let name = format!("t{i}");
            // Each tenant holds a server, then gives it back elsewhere
            // (the hold dropped outside the queue).
            held = q.take_now(w(&name, Some(1)), 2);
            assert!(held.is_some());
            assert!(q.tenants() <= 2 * 2 + SWEEP_SLACK + 1, "{}", q.tenants());
        }
        drop(held);
        q.push(1, w("x", None), t0, 2);
        q.sweep();
        assert_eq!(q.tenants(), 1);
        assert_eq!(q.pop_next_waiter(), Some(1));
        assert_eq!(q.tenants(), 0);
    }

    /// Random operations against a model: a tenant never holds more than
    /// its cap, a free server always finds an eligible waiter when there is
    /// one, FIFO within each tenant, the capped flag and the counts.
    #[test]
    fn random_operations_keep_the_cap_and_the_order() {
        let t0 = Instant::now();
        for seed in 1..=40u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut rnd = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut q: FairQueue<u32> = FairQueue::default();
            let names = ["a", "b", "c", "d"];
            let caps = [Some(1), Some(2), None, Some(3)];
            // Servers held: (tenant index, hold).
            let mut holds: Vec<(usize, TenantHold)> = Vec::new();
            // Model: per tenant, its queued clients in order.
            let mut model: Vec<VecDeque<u32>> = vec![VecDeque::new(); 4];
            let mut next = 0u32;
            for _ in 0..2000 {
                match rnd(4) {
                    0 | 1 => {
                        let t = rnd(4) as usize;
                        next += 1;
                        let capped = q.push(next, w(names[t], caps[t]), t0, 8);
                        let held = holds.iter().filter(|(h, _)| *h == t).count();
                        let want_capped =
                            caps[t].is_some_and(|c| held + model[t].len() >= c as usize);
                        assert_eq!(capped, want_capped, "seed {seed}");
                        model[t].push_back(next);
                    }
                    2 if holds.len() < 8 => {
                        // A free server: served to an eligible waiter if any.
                        let eligible: Vec<usize> = (0..4)
                            .filter(|&t| {
                                let held = holds.iter().filter(|(h, _)| *h == t).count();
                                !model[t].is_empty() && caps[t].is_none_or(|c| held < c as usize)
                            })
                            .collect();
                        match q.pop_next() {
                            Some((c, hold)) => {
                                let t = (0..4)
                                    .find(|&t| model[t].front() == Some(&c))
                                    .unwrap_or_else(|| panic!("seed {seed}: {c} not first"));
                                assert!(eligible.contains(&t), "seed {seed}");
                                model[t].pop_front();
                                holds.push((t, hold));
                            }
                            None => assert!(eligible.is_empty(), "seed {seed}"),
                        }
                    }
                    3 if !holds.is_empty() => {
                        let i = rnd(holds.len() as u64) as usize;
                        holds.swap_remove(i);
                    }
                    _ => {
                        // A waiter leaves.
                        let t = rnd(4) as usize;
                        if let Some(&c) = model[t].back() {
                            assert!(q.remove(names[t], c));
                            model[t].pop_back();
                        }
                    }
                }
                q.check();
                for (t, name) in names.iter().enumerate() {
                    let held = holds.iter().filter(|(h, _)| *h == t).count();
                    assert_eq!(q.held(name) as usize, held, "seed {seed}");
                    if let Some(c) = caps[t] {
                        assert!(held <= c as usize, "seed {seed}: {name} over its cap");
                    }
                }
                assert_eq!(q.len(), model.iter().map(VecDeque::len).sum::<usize>());
                assert!(q.tenants() <= 4);
            }
        }
    }

    #[test]
    fn round_robin_with_a_capped_tenant_keeps_its_place() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        let cap = Some(1);
        let ha = q.take_now(w("a", cap), 3).unwrap();
        q.push(1, w("a", cap), t0, 3);
        q.push(2, w("b", None), t0, 3);
        q.push(3, w("b", None), t0, 3);
        q.push(4, w("c", None), t0, 3);
        // a is skipped, b served and sent to the back: [a, c, b].
        let (c, _hb) = q.pop_next().unwrap();
        assert_eq!(c, 2);
        drop(ha);
        // a, no longer at its cap, is first again.
        let (c, _ha) = q.pop_next().unwrap();
        assert_eq!(c, 1);
        let (c, _hc) = q.pop_next().unwrap();
        assert_eq!(c, 4);
        q.check();
    }
}
