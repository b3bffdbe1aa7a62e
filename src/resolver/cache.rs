//! The resolver cache: results keyed by the resolver and the exact input
//! values (never a hash of them), bounded (least recently used evicted
//! first), each entry expiring after its resolver's `cache_ttl`.
//!
//! Single flight: the first session to miss a key becomes its leader and
//! runs the query; sessions missing the same key meanwhile are told to wait
//! and look again later (their own timer, see `run`). A leader that fails or
//! goes away abandons the key (the next look makes a new leader); a leader
//! that never reports is replaced once its deadline passes, so nobody waits
//! longer than one resolver timeout for somebody else.
//!
//! The bound counts finished entries; keys being resolved (one per leading
//! session at most) come on top and are bounded by the sessions alive.
//!
//! Shared by every worker behind one mutex, held only for a lookup or an
//! insert (no I/O, no allocation proportional to anything but the key).
//! Time is passed in: pure and testable with a fake clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a resolver produced for one input: `None` when it returned no row,
/// else one value per `inject` entry (`None` = SQL NULL).
pub type Resolved = Option<Vec<Option<String>>>;

/// A cache key: the resolver's index in the set and its exact inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub resolver: usize,
    pub inputs: Vec<String>,
}

/// The answer of [`Cache::lookup`].
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// A live entry.
    Hit(Arc<Resolved>),
    /// Nobody has it: the caller runs the query, then `fill`s or `abandon`s.
    Lead,
    /// Another session is running this query now: look again later.
    Wait,
}

enum Slot {
    Ready {
        value: Arc<Resolved>,
        expires: Instant,
        /// Its place in the recency order.
        tick: u64,
    },
    Pending {
        /// After this the leader is presumed gone.
        until: Instant,
    },
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    /// Recency order of ready entries: tick → key (oldest first).
    order: BTreeMap<u64, Key>,
    tick: u64,
}

/// Bounded, shared resolver cache.
pub struct Cache {
    cap: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("cap", &self.cap)
            .field("len", &self.len())
            .finish()
    }
}

impl Cache {
    /// A cache of at most `cap` ready entries (0: nothing is cached).
    pub fn new(cap: usize) -> Cache {
        Cache {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the cache: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of ready entries.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks `key` up at `now`. On a miss the caller becomes the leader for
    /// at most `lead_for` (its query's timeout).
    pub fn lookup(&self, key: &Key, now: Instant, lead_for: Duration) -> Lookup {
        if self.cap == 0 {
            return Lookup::Lead;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let until = now.checked_add(lead_for).unwrap_or(now);
        match inner.map.get_mut(key) {
            Some(Slot::Ready {
                value,
                expires,
                tick,
            }) if *expires > now => {
                let value = Arc::clone(value);
                // Most recently used now.
                inner.tick = inner.tick.wrapping_add(1);
                if let Some(k) = inner.order.remove(tick) {
                    inner.order.insert(inner.tick, k);
                }
                *tick = inner.tick;
                Lookup::Hit(value)
            }
            Some(Slot::Pending { until: u }) if *u > now => Lookup::Wait,
            Some(slot) => {
                // Expired, or its leader is presumed gone: lead anew.
                if let Slot::Ready { tick, .. } = slot {
                    inner.order.remove(tick);
                }
                *slot = Slot::Pending { until };
                Lookup::Lead
            }
            None => {
                inner.map.insert(key.clone(), Slot::Pending { until });
                Lookup::Lead
            }
        }
    }

    /// The leader's result: kept until `now + ttl`. Evicts the least
    /// recently used entries beyond the capacity.
    pub fn fill(&self, key: &Key, value: Resolved, ttl: Duration, now: Instant) {
        if self.cap == 0 {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick = inner.tick.wrapping_add(1);
        let tick = inner.tick;
        let expires = now.checked_add(ttl).unwrap_or(now);
        if let Some(Slot::Ready { tick: old, .. }) = inner.map.insert(
            key.clone(),
            Slot::Ready {
                value: Arc::new(value),
                expires,
                tick,
            },
        ) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, key.clone());
        while inner.order.len() > self.cap {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.map.remove(&oldest);
        }
    }

    /// The leader gave up (error, timeout, client gone): the next lookup of
    /// `key` makes a new leader.
    pub fn abandon(&self, key: &Key) {
        if self.cap == 0 {
            return;
        }
        let mut g = self.lock();
        if matches!(g.map.get(key), Some(Slot::Pending { .. })) {
            g.map.remove(key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn key(r: usize, v: &str) -> Key {
        Key {
            resolver: r,
            inputs: vec![v.to_string()],
        }
    }

    fn val(s: &str) -> Resolved {
        Some(vec![Some(s.to_string())])
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn miss_lead_fill_hit_expire() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        let k = key(0, "u1");
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        // Concurrent miss: wait, not a second query.
        assert_eq!(c.lookup(&k, t0, T), Lookup::Wait);
        c.fill(&k, val("org1"), Duration::from_secs(60), t0);
        assert_eq!(c.lookup(&k, t0, T), Lookup::Hit(Arc::new(val("org1"))));
        // Expired: the next caller leads.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(c.lookup(&k, later, T), Lookup::Lead);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn keys_are_exact_inputs() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        let (a, b) = (key(0, "a"), key(0, "b"));
        assert_eq!(c.lookup(&a, t0, T), Lookup::Lead);
        c.fill(&a, val("for a"), Duration::from_secs(60), t0);
        // Another identity, or the same input for another resolver, is a miss.
        assert_eq!(c.lookup(&b, t0, T), Lookup::Lead);
        assert_eq!(c.lookup(&key(1, "a"), t0, T), Lookup::Lead);
        // Several inputs: order matters.
        let k1 = Key {
            resolver: 2,
            inputs: vec!["x".into(), "y".into()],
        };
        let k2 = Key {
            resolver: 2,
            inputs: vec!["y".into(), "x".into()],
        };
        assert_eq!(c.lookup(&k1, t0, T), Lookup::Lead);
        c.fill(&k1, None, Duration::from_secs(60), t0);
        assert_eq!(c.lookup(&k1, t0, T), Lookup::Hit(Arc::new(None)));
        assert_eq!(c.lookup(&k2, t0, T), Lookup::Lead);
    }

    #[test]
    fn abandoned_or_stale_leader_is_replaced() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        let k = key(0, "u");
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        c.abandon(&k);
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        // This leader never reports: replaced after its deadline.
        assert_eq!(
            c.lookup(&k, t0 + T - Duration::from_millis(1), T),
            Lookup::Wait
        );
        assert_eq!(c.lookup(&k, t0 + T, T), Lookup::Lead);
        // Abandon does not remove a ready entry.
        c.fill(&k, val("v"), Duration::from_secs(60), t0);
        c.abandon(&k);
        assert!(matches!(c.lookup(&k, t0, T), Lookup::Hit(_)));
    }

    #[test]
    fn bounded_least_recently_used_evicted() {
        let c = Cache::new(3);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        for v in ["a", "b", "c"] {
            assert_eq!(c.lookup(&key(0, v), t0, T), Lookup::Lead);
            c.fill(&key(0, v), val(v), ttl, t0);
        }
        // Touch "a": "b" is now the oldest.
        assert!(matches!(c.lookup(&key(0, "a"), t0, T), Lookup::Hit(_)));
        assert_eq!(c.lookup(&key(0, "d"), t0, T), Lookup::Lead);
        c.fill(&key(0, "d"), val("d"), ttl, t0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(&key(0, "b"), t0, T), Lookup::Lead);
        for v in ["a", "c", "d"] {
            assert!(matches!(c.lookup(&key(0, v), t0, T), Lookup::Hit(_)), "{v}");
        }
        // Many more keys: never above the cap.
        for i in 0..100 {
            let k = key(1, &i.to_string());
            assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
            c.fill(&k, val("x"), ttl, t0);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = Cache::new(0);
        let t0 = Instant::now();
        let k = key(0, "u");
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        c.fill(&k, val("v"), Duration::from_secs(60), t0);
        assert_eq!(c.lookup(&k, t0, T), Lookup::Lead);
        assert!(c.is_empty());
    }
}
