//! A small fixed timer table (quinn's `TimerTable`): one slot per kind, the
//! session's deadline is their minimum. The transition that causes a timer
//! sets it; the reactor only asks `next_deadline` and calls `handle_timeout`.

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Startup → context set (`handshake_timeout`).
    Handshake = 0,
    /// Upstream TCP connect (`upstream_connect_timeout`).
    Connect = 1,
    /// Flushing the last bytes before a close.
    Drain = 2,
    /// Waiting in a pool's queue for a server (`pool_checkout_timeout`).
    Checkout = 3,
    /// A resolver query's answers (its `timeout` and a grace), or the next
    /// look at a result another session is resolving.
    Resolver = 4,
    /// The client has been idle outside a transaction (`client_idle_timeout`).
    ClientIdle = 5,
    /// The client has been idle inside a transaction (`idle_transaction_timeout`).
    IdleTransaction = 6,
    /// A request has been waiting for its ReadyForQuery (`query_timeout`).
    Query = 7,
    /// The proxy's CancelRequest for a timed-out query: its grace to end the
    /// query (and the cancel connection) before the session is closed.
    QueryCancel = 8,
    /// The session's maximum duration (`session_lifetime`).
    Lifetime = 9,
}

impl TimerKind {
    pub const COUNT: usize = 10;
    pub const ALL: [TimerKind; 10] = [
        TimerKind::Handshake,
        TimerKind::Connect,
        TimerKind::Drain,
        TimerKind::Checkout,
        TimerKind::Resolver,
        TimerKind::ClientIdle,
        TimerKind::IdleTransaction,
        TimerKind::Query,
        TimerKind::QueryCancel,
        TimerKind::Lifetime,
    ];
}

#[derive(Clone, Debug, Default)]
pub struct TimerTable {
    slots: [Option<Instant>; TimerKind::COUNT],
}

impl TimerTable {
    pub fn set(&mut self, kind: TimerKind, at: Instant) {
        if let Some(s) = self.slots.get_mut(kind as usize) {
            *s = Some(at);
        }
    }

    pub fn clear(&mut self, kind: TimerKind) {
        if let Some(s) = self.slots.get_mut(kind as usize) {
            *s = None;
        }
    }

    pub fn get(&self, kind: TimerKind) -> Option<Instant> {
        self.slots.get(kind as usize).copied().flatten()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// The earliest expired timer, cleared. Call repeatedly.
    pub fn take_expired(&mut self, now: Instant) -> Option<TimerKind> {
        let mut best: Option<(Instant, TimerKind)> = None;
        for kind in TimerKind::ALL {
            if let Some(at) = self.get(kind)
                && at <= now
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, kind));
            }
        }
        let (_, kind) = best?;
        self.clear(kind);
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::arithmetic_side_effects)]
    fn every_kind_has_its_own_slot() {
        for (i, k) in TimerKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        for (i, k) in TimerKind::ALL.iter().enumerate() {
            t.set(*k, t0 + Duration::from_secs(100 - i as u64));
        }
        for (i, k) in TimerKind::ALL.iter().enumerate() {
            assert_eq!(t.get(*k), Some(t0 + Duration::from_secs(100 - i as u64)));
        }
        let late = t0 + Duration::from_secs(1000);
        for k in TimerKind::ALL.iter().rev() {
            assert_eq!(t.take_expired(late), Some(*k));
        }
        assert_eq!(t.take_expired(late), None);
    }

    #[test]
    fn earliest_expires_first() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next_deadline(), None);
        t.set(TimerKind::Handshake, t0 + Duration::from_secs(30));
        t.set(TimerKind::Connect, t0 + Duration::from_secs(5));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(t.take_expired(t0 + Duration::from_secs(1)), None);
        let late = t0 + Duration::from_secs(60);
        assert_eq!(t.take_expired(late), Some(TimerKind::Connect));
        assert_eq!(t.take_expired(late), Some(TimerKind::Handshake));
        assert_eq!(t.take_expired(late), None);
    }
}
