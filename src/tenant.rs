//! Per-tenant admission: `tenant_max_connections` (authenticated sessions at
//! once) and `tenant_rate_limit` (new sessions per second, a token bucket),
//! and the per-tenant counters the admin API shows.
//!
//! Shared by every worker behind one mutex, held only to admit, release or
//! take a snapshot. A session is admitted once it has authenticated
//! (passthrough: the server's AuthenticationOk; pool modes: the proxy's own
//! check), so clients that cannot log in consume neither slots nor rate
//! budget, and a flood of unfinished handshakes cannot lock a tenant out
//! (handshakes are bounded by `max_client_conn` and `handshake_timeout`, not
//! per tenant).
//!
//! The admission is exact under concurrency: count and check happen under
//! the lock, and the slot is a guard ([`Admitted`]) released when the
//! session is dropped, on every path. The limits are two atomics a reload
//! replaces ([`Tenants::set_limits`]), read once per admission. A tenant with
//! no session stays [`IDLE_KEEP`] after its last login attempt (its counters
//! shown meanwhile), or less when room is needed: the registry never holds
//! more than [`Tenants::cap`] tenants. Time is passed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A tenant with no session stays in the registry (with its counters, for the
/// admin API) this long after its last login attempt, or until room is needed.
pub const IDLE_KEEP: Duration = Duration::from_secs(900);
/// How long a bucket that is not full must be remembered for the rate limit.
const RATE_MEMORY: Duration = Duration::from_secs(1);

/// Micro-tokens per admitted session (the bucket counts in millionths).
const TOKEN: u64 = 1_000_000;

/// What the admin API shows of one tenant (or of the tenants outside the top N).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantSummary {
    pub name: String,
    /// Sessions open now.
    pub sessions: u64,
    /// Sessions admitted while the tenant was tracked.
    pub sessions_total: u64,
    /// Sessions refused by `tenant_max_connections` or `tenant_rate_limit`.
    pub rejected: u64,
}

impl TenantSummary {
    /// Sessions admitted and refused.
    pub fn activity(&self) -> u64 {
        self.sessions_total.saturating_add(self.rejected)
    }

    fn absorb(&mut self, o: &TenantSummary) {
        self.sessions = self.sessions.saturating_add(o.sessions);
        self.sessions_total = self.sessions_total.saturating_add(o.sessions_total);
        self.rejected = self.rejected.saturating_add(o.rejected);
    }
}

/// The `n` most active tenants (activity, then name), and the sum of all the
/// others (None when there are none): bounded output whatever the number of
/// tenants.
pub fn top(mut all: Vec<TenantSummary>, n: usize) -> (Vec<TenantSummary>, Option<TenantSummary>) {
    all.sort_by(|a, b| {
        b.activity()
            .cmp(&a.activity())
            .then_with(|| a.name.cmp(&b.name))
    });
    let rest = all.split_off(n.min(all.len()));
    let other = (!rest.is_empty()).then(|| {
        let mut o = TenantSummary {
            name: "other".into(),
            ..TenantSummary::default()
        };
        for r in &rest {
            o.absorb(r);
        }
        o
    });
    (all, other)
}

#[derive(Debug)]
struct Entry {
    sessions: u32,
    sessions_total: u64,
    rejected: u64,
    /// Micro-tokens available at `at` (`u64::MAX` while no rate is set, so a
    /// rate added by a reload starts from a full bucket).
    tokens: u64,
    /// The last login attempt.
    at: Instant,
}

/// `tenant_max_connections` and `tenant_rate_limit` as one admission reads them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_sessions: Option<u32>,
    rate: Option<u32>,
}

impl Limits {
    /// Micro-tokens of a full bucket.
    fn capacity(self) -> u64 {
        self.rate
            .map_or(u64::MAX, |r| u64::from(r).saturating_mul(TOKEN))
    }

    /// Refills `e`'s bucket up to `now` (capped).
    fn refill(self, e: &mut Entry, now: Instant) {
        let add = match self.rate {
            None => u64::MAX,
            Some(rate) => {
                let us = now.saturating_duration_since(e.at).as_micros();
                u64::try_from(us)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(u64::from(rate))
            }
        };
        e.tokens = e.tokens.saturating_add(add).min(self.capacity());
        e.at = now;
    }
}

/// Why a tenant's session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `tenant_max_connections` sessions are open.
    Connections(u32),
    /// The bucket is empty (`tenant_rate_limit` per second).
    Rate(u32),
    /// The registry is full of tenants with live sessions or recent logins.
    Registry,
}

impl Refused {
    /// SQLSTATE and message for the client's FATAL ("limit" in every one).
    pub fn message(self, tenant: &str) -> (&'static str, String) {
        match self {
            Refused::Connections(n) => (
                "53300",
                format!(
                    "tenant \"{}\" has reached its connection limit (tenant_max_connections = {n})",
                    tenant.escape_debug()
                ),
            ),
            Refused::Rate(n) => (
                "53300",
                format!(
                    "tenant \"{}\" exceeded its rate limit (tenant_rate_limit = {n} new sessions per second)",
                    tenant.escape_debug()
                ),
            ),
            Refused::Registry => (
                "53300",
                "tenant registry limit reached: too many tenants active at once".to_string(),
            ),
        }
    }
}

/// The shared registry.
#[derive(Debug)]
pub struct Tenants {
    /// `tenant_max_connections` (0: none); replaced by a reload.
    max_sessions: AtomicU32,
    /// `tenant_rate_limit` (0: none); replaced by a reload.
    rate: AtomicU32,
    cap: usize,
    inner: Mutex<HashMap<String, Entry>>,
}

impl Tenants {
    /// `cap`: most tenants tracked at once.
    pub fn new(max_sessions: Option<u32>, rate: Option<u32>, cap: usize) -> Tenants {
        let t = Tenants {
            max_sessions: AtomicU32::new(0),
            rate: AtomicU32::new(0),
            cap,
            inner: Mutex::new(HashMap::new()),
        };
        t.set_limits(max_sessions, rate);
        t
    }

    /// Replaces both limits (a reload). Sessions already admitted keep their slots: a
    /// lower `tenant_max_connections` refuses new sessions until the count is below it.
    pub fn set_limits(&self, max_sessions: Option<u32>, rate: Option<u32>) {
        self.max_sessions
            .store(max_sessions.unwrap_or(0), Ordering::Relaxed);
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// The limits in force: (`tenant_max_connections`, `tenant_rate_limit`).
    #[cfg(test)]
    pub fn limits(&self) -> (Option<u32>, Option<u32>) {
        let l = self.current();
        (l.max_sessions, l.rate)
    }

    fn current(&self) -> Limits {
        let get = |a: &AtomicU32| Some(a.load(Ordering::Relaxed)).filter(|&n| n > 0);
        Limits {
            max_sessions: get(&self.max_sessions),
            rate: get(&self.rate),
        }
    }

    /// Most tenants tracked at once.
    #[cfg(test)]
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of tenants tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every tenant tracked, with its live sessions and counters (one lock,
    /// bounded by [`Tenants::cap`]); tenants idle for [`IDLE_KEEP`] are
    /// evicted first.
    pub fn snapshot(&self, now: Instant) -> Vec<TenantSummary> {
        let limits = self.current();
        let mut map = self.lock();
        evict(&mut map, limits, now, IDLE_KEEP);
        map.iter()
            .map(|(name, e)| TenantSummary {
                name: name.clone(),
                sessions: u64::from(e.sessions),
                sessions_total: e.sessions_total,
                rejected: e.rejected,
            })
            .collect()
    }

    /// Sessions open for `tenant`.
    #[cfg(test)]
    pub fn sessions(&self, tenant: &str) -> u32 {
        self.lock().get(tenant).map_or(0, |e| e.sessions)
    }

    /// Admits one authenticated session of `tenant` at `now`.
    pub fn admit(self: &Arc<Self>, tenant: &str, now: Instant) -> Result<Admitted, Refused> {
        let limits = self.current();
        let mut map = self.lock();
        if !map.contains_key(tenant) && map.len() >= self.cap {
            // Drop idle tenants, then every tenant without a session, then
            // give up if the registry is still full of live ones.
            evict(&mut map, limits, now, IDLE_KEEP);
            if map.len() >= self.cap {
                evict(&mut map, limits, now, Duration::ZERO);
            }
            if map.len() >= self.cap {
                return Err(Refused::Registry);
            }
        }
        // A known tenant costs no allocation under the lock.
        if !map.contains_key(tenant) {
            map.insert(
                tenant.to_string(),
                Entry {
                    sessions: 0,
                    sessions_total: 0,
                    rejected: 0,
                    tokens: limits.capacity(),
                    at: now,
                },
            );
        }
        let Some(e) = map.get_mut(tenant) else {
            return Err(Refused::Registry); // just inserted: unreachable
        };
        limits.refill(e, now);
        if let Some(max) = limits.max_sessions
            && e.sessions >= max
        {
            e.rejected = e.rejected.saturating_add(1);
            return Err(Refused::Connections(max));
        }
        if let Some(rate) = limits.rate {
            if e.tokens < TOKEN {
                e.rejected = e.rejected.saturating_add(1);
                return Err(Refused::Rate(rate));
            }
            e.tokens = e.tokens.saturating_sub(TOKEN);
        }
        e.sessions = e.sessions.saturating_add(1);
        e.sessions_total = e.sessions_total.saturating_add(1);
        Ok(Admitted {
            reg: Arc::clone(self),
            tenant: tenant.to_string(),
        })
    }

    fn release(&self, tenant: &str) {
        if let Some(e) = self.lock().get_mut(tenant) {
            // The entry stays (with its counters) until evicted as idle.
            e.sessions = e.sessions.saturating_sub(1);
        }
    }
}

/// Removes tenants with no session whose last login attempt is `keep` or
/// more ago; a bucket that still remembers logins of the last second is kept
/// in any case (else the rate limit could be dodged).
fn evict(map: &mut HashMap<String, Entry>, limits: Limits, now: Instant, keep: Duration) {
    let full = limits.capacity();
    map.retain(|_, e| {
        let age = now.saturating_duration_since(e.at);
        e.sessions > 0 || age < keep || (age < RATE_MEMORY && e.tokens < full)
    });
}

/// One admitted session's slot; released when dropped.
#[derive(Debug)]
pub struct Admitted {
    reg: Arc<Tenants>,
    tenant: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.reg.release(&self.tenant);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn max_sessions_exact_and_released_on_drop() {
        let t = Arc::new(Tenants::new(Some(2), None, 100));
        let now = Instant::now();
        let a = t.admit("acme", now).unwrap();
        let b = t.admit("acme", now).unwrap();
        assert_eq!(t.admit("acme", now).unwrap_err(), Refused::Connections(2));
        // Per tenant.
        let c = t.admit("globex", now).unwrap();
        drop(a);
        let a2 = t.admit("acme", now).unwrap();
        assert_eq!(t.sessions("acme"), 2);
        drop((a2, b, c));
        assert_eq!(t.len(), 2, "idle tenants are kept a while");
        assert!(t.snapshot(now + IDLE_KEEP).is_empty(), "then evicted");
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let t = Arc::new(Tenants::new(Some(5), None, 100));
        let now = Instant::now();
        let held: Vec<_> = (0..8)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    (0..50)
                        .filter_map(|_| t.admit("acme", now).ok())
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(held.len(), 5);
        drop(held);
        assert_eq!(t.sessions("acme"), 0);
    }

    #[test]
    fn token_bucket() {
        let t = Arc::new(Tenants::new(None, Some(2), 100));
        let t0 = Instant::now();
        let a = t.admit("acme", t0).unwrap();
        let b = t.admit("acme", t0).unwrap();
        assert_eq!(t.admit("acme", t0).unwrap_err(), Refused::Rate(2));
        // Half a second refills one.
        let t1 = t0 + Duration::from_millis(500);
        let c = t.admit("acme", t1).unwrap();
        assert_eq!(t.admit("acme", t1).unwrap_err(), Refused::Rate(2));
        drop((a, b, c));
        // Remembered until the bucket is full again.
        assert_eq!(t.len(), 1);
        let t2 = t1 + Duration::from_secs(2);
        let d = t.admit("acme", t2).unwrap();
        let e = t.admit("acme", t2).unwrap();
        drop((d, e));
        // Other tenants have their own bucket.
        assert!(t.admit("globex", t2).is_ok());
    }

    #[test]
    fn registry_bounded() {
        let t = Arc::new(Tenants::new(Some(1), None, 3));
        let now = Instant::now();
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| t.admit(n, now).unwrap())
            .collect();
        assert_eq!(t.admit("d", now).unwrap_err(), Refused::Registry);
        drop(held);
        assert!(t.admit("d", now).is_ok());
        // With a rate, tenants seen within the last second are remembered,
        // older ones make room.
        let r = Arc::new(Tenants::new(None, Some(1), 2));
        drop(r.admit("a", now).unwrap());
        drop(r.admit("b", now).unwrap());
        assert_eq!(r.admit("c", now).unwrap_err(), Refused::Registry);
        assert!(r.admit("c", now + Duration::from_secs(2)).is_ok());
        assert!(r.len() <= 2);
    }

    #[test]
    fn limits_replaced_by_a_reload() {
        let t = Arc::new(Tenants::new(None, None, 100));
        let now = Instant::now();
        let held: Vec<_> = (0..3).map(|_| t.admit("acme", now).unwrap()).collect();
        assert_eq!(t.sessions("acme"), 3, "counted without limits too");
        t.set_limits(Some(2), None);
        assert_eq!(t.limits(), (Some(2), None));
        assert_eq!(t.admit("acme", now).unwrap_err(), Refused::Connections(2));
        drop(held);
        let a = t.admit("acme", now).unwrap();
        t.set_limits(None, None);
        assert_eq!(t.limits(), (None, None));
        let more: Vec<_> = (0..5).map(|_| t.admit("acme", now).unwrap()).collect();
        drop((a, more));
        assert_eq!(t.sessions("acme"), 0);
        // A rate added later starts from a full bucket, even for a tenant
        // seen a moment ago.
        t.set_limits(None, Some(2));
        let r: Vec<_> = (0..2).map(|_| t.admit("acme", now).unwrap()).collect();
        assert_eq!(t.admit("acme", now).unwrap_err(), Refused::Rate(2));
        drop(r);
    }

    #[test]
    fn top_n_and_the_rest() {
        let t = Arc::new(Tenants::new(Some(1), None, 100));
        let now = Instant::now();
        let mut held = Vec::new();
        for (name, logins) in [("a", 3), ("b", 3), ("c", 2), ("d", 2)] {
            for _ in 0..logins {
                if let Ok(g) = t.admit(name, now) {
                    held.push(g);
                }
            }
        }
        drop(held.remove(0));
        let _a = t.admit("a", now).unwrap();
        let (top3, other) = top(t.snapshot(now), 2);
        let names: Vec<_> = top3.iter().map(|s| s.name.as_str()).collect();
        // a: 2 admitted + 2 refused; b: 1 + 2; c, d: 1 + 1.
        assert_eq!(names, ["a", "b"]);
        assert_eq!((top3[0].sessions_total, top3[0].rejected), (2, 2));
        assert_eq!((top3[1].sessions_total, top3[1].rejected), (1, 2));
        let o = other.unwrap();
        assert_eq!(
            (o.name.as_str(), o.sessions, o.sessions_total, o.rejected),
            ("other", 2, 2, 2)
        );
        let (all, none) = top(t.snapshot(now), 10);
        assert_eq!(all.len(), 4);
        assert!(none.is_none());
    }

    #[test]
    fn messages_say_limit() {
        for r in [Refused::Connections(5), Refused::Rate(3), Refused::Registry] {
            let (code, msg) = r.message("a\"b\nc");
            assert_eq!(code, "53300");
            assert!(msg.contains("limit"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
