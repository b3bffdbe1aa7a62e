//! Process-wide counters, updated with relaxed atomics by the workers and read
//! by whoever reports them (logs now, the admin API later). Never locked.

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters. Names follow pgvpd 1.0's metric names where one exists.
#[derive(Default)]
pub struct Stats {
    /// Client connections accepted (`pgvpd_connections_total`).
    pub connections_total: AtomicU64,
    /// Client connections open now (`pgvpd_connections_active`).
    pub connections_active: AtomicU64,
    /// Sessions whose tenant context was set and released to the client.
    pub sessions_started: AtomicU64,
    /// Connections refused because `max_client_conn` was reached.
    pub refused_max_clients: AtomicU64,
    /// Tenant logins refused by allow/deny lists.
    pub tenant_rejected_deny: AtomicU64,
    /// Tenant sessions refused by tenant_max_connections (or a full registry).
    pub tenant_rejected_limit: AtomicU64,
    /// Tenant sessions refused by tenant_rate_limit.
    pub tenant_rejected_rate: AtomicU64,
    /// Connections closed because handling them panicked (a bug; see logs).
    pub panics: AtomicU64,
    /// Protocol violations by either peer.
    pub protocol_errors: AtomicU64,
    /// Handshakes that hit `handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Cancel requests forwarded upstream.
    pub cancels_forwarded: AtomicU64,
    /// Times accepting paused because file descriptors ran out.
    pub accept_pauses: AtomicU64,
    /// Pooled clients whose password or SCRAM proof was wrong.
    pub auth_failures: AtomicU64,
    /// Servers lent to clients (pgvpd 1.0's `pool_checkouts`).
    pub pool_checkouts: AtomicU64,
    /// Lent servers that were idle before (`pool_reuses`).
    pub pool_reuses: AtomicU64,
    /// Server connections attempted for a pool (`pool_creates`).
    pub pool_creates: AtomicU64,
    /// Servers proved idle and returned after a client (`pool_checkins`).
    pub pool_checkins: AtomicU64,
    /// Pooled servers closed (failed, dirty, reaped, too old) (`pool_discards`).
    pub pool_discards: AtomicU64,
    /// Clients that waited past `pool_checkout_timeout` (`pool_timeouts`).
    pub pool_timeouts: AtomicU64,
    /// Pooled clients moved to the worker that owns their pool key.
    pub pool_handoffs: AtomicU64,
    /// Checkouts queued because their tenant held `tenant_max_servers`
    /// servers of the pool (with its waiters ahead) already.
    pub pool_tenant_cap_waits: AtomicU64,
    /// Transaction mode: context steps that failed (client closed, server dropped).
    pub tx_step_failures: AtomicU64,
    /// Transaction mode: transactions served with the context step skipped
    /// (the server's last context was this client's).
    pub tx_step_skips: AtomicU64,
    /// Transaction mode: servers returned to the pool between transactions.
    pub tx_returns: AtomicU64,
    /// Transaction mode: servers left parked with their idle client (no waiter).
    pub tx_parks: AtomicU64,
    /// Transaction mode: client statements prepared again on another server.
    pub tx_reprepares: AtomicU64,
    /// Transaction mode: servers reset after a transaction that may have
    /// left session objects.
    pub tx_resets: AtomicU64,
    /// Resolver results served from the cache.
    pub resolver_cache_hits: AtomicU64,
    /// Resolver queries run (cache misses and uncached resolvers).
    pub resolver_queries: AtomicU64,
    /// Sessions refused by a resolver (error, no row, timeout, size).
    pub resolver_refusals: AtomicU64,
    /// Sessions ended by `client_idle_timeout` (57P05).
    pub client_idle_timeouts: AtomicU64,
    /// Sessions ended by `idle_transaction_timeout` (25P03).
    pub idle_transaction_timeouts: AtomicU64,
    /// Queries past `query_timeout` (a CancelRequest was sent, or the
    /// session closed when the server gave no cancel key).
    pub query_timeouts: AtomicU64,
    /// Query timeouts whose cancel did not end the query within the grace:
    /// the session and its server connection were closed.
    pub query_timeout_closes: AtomicU64,
    /// Sessions ended at an idle moment after `session_lifetime` (57P01).
    pub session_lifetime_ends: AtomicU64,
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            connections_total: AtomicU64::new(0),
            connections_active: AtomicU64::new(0),
            sessions_started: AtomicU64::new(0),
            refused_max_clients: AtomicU64::new(0),
            tenant_rejected_deny: AtomicU64::new(0),
            tenant_rejected_limit: AtomicU64::new(0),
            tenant_rejected_rate: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            cancels_forwarded: AtomicU64::new(0),
            accept_pauses: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            pool_checkouts: AtomicU64::new(0),
            pool_reuses: AtomicU64::new(0),
            pool_creates: AtomicU64::new(0),
            pool_checkins: AtomicU64::new(0),
            pool_discards: AtomicU64::new(0),
            pool_timeouts: AtomicU64::new(0),
            pool_handoffs: AtomicU64::new(0),
            pool_tenant_cap_waits: AtomicU64::new(0),
            tx_step_failures: AtomicU64::new(0),
            tx_step_skips: AtomicU64::new(0),
            tx_returns: AtomicU64::new(0),
            tx_parks: AtomicU64::new(0),
            tx_reprepares: AtomicU64::new(0),
            tx_resets: AtomicU64::new(0),
            resolver_cache_hits: AtomicU64::new(0),
            resolver_queries: AtomicU64::new(0),
            resolver_refusals: AtomicU64::new(0),
            client_idle_timeouts: AtomicU64::new(0),
            idle_transaction_timeouts: AtomicU64::new(0),
            query_timeouts: AtomicU64::new(0),
            query_timeout_closes: AtomicU64::new(0),
            session_lifetime_ends: AtomicU64::new(0),
        }
    }
}

/// The process's counters.
pub static STATS: Stats = Stats::new();

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u32) {
    c.fetch_add(u64::from(n), Ordering::Relaxed);
}

/// Subtracts one from a gauge (never below zero).
pub fn dec(c: &AtomicU64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Upper bounds of the latency histograms' buckets, in microseconds (the
/// last bucket, `+Inf`, is implicit).
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
/// The same bounds as Prometheus `le` label values (seconds).
pub const LATENCY_LE: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];

/// A latency histogram: one relaxed counter per bucket (not cumulative) and
/// the sum in microseconds. Fixed size, never locked.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
}

/// A histogram's counts as Prometheus shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per [`LATENCY_LE`] bound (the last is the total).
    pub cumulative: [u64; 15],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative[14]
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 15],
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(b) = self.buckets.get(i) {
            inc(b);
        }
        // One add (no compare-and-swap loop on this shared word): 2^64 µs is
        // over half a million years of summed latency.
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snap = HistogramSnapshot {
            sum_us: get(&self.sum_us),
            ..HistogramSnapshot::default()
        };
        let mut total = 0u64;
        for (c, b) in snap.cumulative.iter_mut().zip(self.buckets.iter()) {
            total = total.saturating_add(get(b));
            *c = total;
        }
        snap
    }
}

/// Process-wide latency histograms.
#[derive(Debug, Default)]
pub struct Latency {
    /// Accept → the session's context set and released to the client.
    pub session_start: Histogram,
    /// Pool modes: a client's wait for a server (queued → lent).
    pub checkout_wait: Histogram,
}

pub static LATENCY: Latency = Latency {
    session_start: Histogram::new(),
    checkout_wait: Histogram::new(),
};

#[cfg(test)]
mod histogram_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_cumulative_and_bounded() {
        let h = Histogram::new();
        for us in [0, 500, 501, 1_000_000, 10_000_001, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 6);
        assert_eq!(s.cumulative[0], 2, "≤ 0.5 ms: 0 and 500 µs");
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[10], 4, "≤ 1 s");
        assert_eq!(s.cumulative[13], 4, "≤ 10 s");
        assert_eq!(s.count(), 6);
        assert_eq!(LATENCY_LE.len(), LATENCY_BOUNDS_US.len() + 1);
        for (le, us) in LATENCY_LE.iter().zip(LATENCY_BOUNDS_US) {
            assert_eq!((le.parse::<f64>().unwrap() * 1e6).round() as u64, us);
        }
        assert_eq!(s.sum_us, 31_001_002);
    }
}
