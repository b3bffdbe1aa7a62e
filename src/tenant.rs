//! Per-tenant admission: `tenant_max_connections` (authenticated sessions at
//! once) and `tenant_rate_limit` (new sessions per second, a token bucket).
//!
//! Shared by every worker behind one mutex, held only to admit or release.
//! A session is admitted once it has authenticated (passthrough: the
//! server's AuthenticationOk; pool modes: the proxy's own check), so clients
//! that cannot log in consume neither slots nor rate budget, and a flood of
//! unfinished handshakes cannot lock a tenant out (handshakes are bounded by
//! `max_client_conn` and `handshake_timeout`, not per tenant).
//!
//! The admission is exact under concurrency: count and check happen under
//! the lock, and the slot is a guard ([`Admitted`]) released when the
//! session is dropped, on every path. Entries of tenants with no session and
//! a full bucket are removed, so the registry is bounded by the sessions
//! alive plus the tenants seen within the last second, and by
//! [`Tenants::cap`] in any case. Time is passed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Micro-tokens per admitted session (the bucket counts in millionths).
const TOKEN: u64 = 1_000_000;

#[derive(Debug)]
struct Entry {
    sessions: u32,
    /// Micro-tokens available at `at`.
    tokens: u64,
    at: Instant,
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
    pub fn limits(&self) -> (Option<u32>, Option<u32>) {
        let get = |a: &AtomicU32| Some(a.load(Ordering::Relaxed)).filter(|&n| n > 0);
        (get(&self.max_sessions), get(&self.rate))
    }

    fn rate(&self) -> Option<u32> {
        self.limits().1
    }

    /// Most tenants tracked at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of tenants tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions open for `tenant`.
    pub fn sessions(&self, tenant: &str) -> u32 {
        self.lock().get(tenant).map_or(0, |e| e.sessions)
    }

    fn capacity(&self) -> u64 {
        self.rate()
            .map_or(0, |r| u64::from(r).saturating_mul(TOKEN))
    }

    /// Tokens of `e` at `now` (refilled, capped).
    fn refill(&self, e: &mut Entry, now: Instant) {
        let Some(rate) = self.rate() else {
            e.at = now;
            return;
        };
        let us = now.saturating_duration_since(e.at).as_micros();
        let add = u64::try_from(us)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(rate));
        e.tokens = e.tokens.saturating_add(add).min(self.capacity());
        e.at = now;
    }

    /// Admits one authenticated session of `tenant` at `now`.
    pub fn admit(self: &Arc<Self>, tenant: &str, now: Instant) -> Result<Admitted, Refused> {
        let (max_sessions, rate) = self.limits();
        let mut map = self.lock();
        if !map.contains_key(tenant) && map.len() >= self.cap {
            // Drop what nothing needs any more, then give up if still full.
            map.retain(|_, e| {
                e.sessions > 0
                    || (rate.is_some()
                        && now.saturating_duration_since(e.at).as_secs() < 1
                        && e.tokens < self.capacity())
            });
            if map.len() >= self.cap {
                return Err(Refused::Registry);
            }
        }
        let cap = self.capacity();
        let e = map.entry(tenant.to_string()).or_insert(Entry {
            sessions: 0,
            tokens: cap,
            at: now,
        });
        self.refill(e, now);
        if let Some(max) = max_sessions
            && e.sessions >= max
        {
            return Err(Refused::Connections(max));
        }
        if let Some(rate) = rate {
            if e.tokens < TOKEN {
                return Err(Refused::Rate(rate));
            }
            e.tokens = e.tokens.saturating_sub(TOKEN);
        }
        e.sessions = e.sessions.saturating_add(1);
        Ok(Admitted {
            reg: Arc::clone(self),
            tenant: tenant.to_string(),
        })
    }

    fn release(&self, tenant: &str) {
        let mut map = self.lock();
        let remove = match map.get_mut(tenant) {
            Some(e) => {
                e.sessions = e.sessions.saturating_sub(1);
                // Kept while its bucket still remembers recent logins.
                e.sessions == 0 && (self.rate().is_none() || e.tokens >= self.capacity())
            }
            None => false,
        };
        if remove {
            map.remove(tenant);
        }
    }
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
        assert_eq!(t.len(), 0, "idle tenants are evicted");
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
        assert!(t.is_empty());
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
        assert!(t.is_empty());
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
