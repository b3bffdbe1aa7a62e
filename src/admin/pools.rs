//! Pool snapshots: what the workers publish about their pools and the admin thread reads.
//!
//! One slot per worker, each behind its own `Mutex`: a worker only ever contends with the
//! admin thread (never with another worker), and both hold the lock only to swap or clone a
//! `Vec`. A worker replaces its whole slot ([`PoolSnapshots::publish`]); the admin thread
//! merges the slots by `(database, role)` ([`PoolSnapshots::collect`]). The number of
//! buckets is bounded by the live pools (a pool exists only while it has servers or waiting
//! clients), so by `max_client_conn` and the pool sizes.

use std::sync::{Mutex, MutexGuard};

/// One pool, as a worker sees it at publish time.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolBucket {
    /// Database of the pool key (client-chosen: escaped wherever it is printed).
    pub database: String,
    /// Login role of the pool key.
    pub role: String,
    /// Server connections of the pool (idle, lent, being set up or reset).
    pub total: u32,
    /// Idle servers, ready to be lent.
    pub idle: u32,
    /// Clients waiting for a server.
    pub waiting: u32,
}

/// The latest pool buckets of every worker.
#[derive(Debug)]
pub struct PoolSnapshots {
    slots: Box<[Mutex<Vec<PoolBucket>>]>,
}

fn lock(m: &Mutex<Vec<PoolBucket>>) -> MutexGuard<'_, Vec<PoolBucket>> {
    // The data is a plain list replaced whole: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PoolSnapshots {
    /// Slots for `workers` workers (indices `0..workers`, the reactor's worker ids).
    pub fn new(workers: usize) -> PoolSnapshots {
        PoolSnapshots {
            slots: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Replaces worker `worker`'s buckets (an index out of range is ignored). The old list
    /// is freed after the lock is released.
    pub fn publish(&self, worker: usize, buckets: Vec<PoolBucket>) {
        if let Some(slot) = self.slots.get(worker) {
            let old = std::mem::replace(&mut *lock(slot), buckets);
            drop(old);
        }
    }

    /// Every worker's buckets merged by `(database, role)` (counts summed, saturating),
    /// sorted by database then role.
    pub fn collect(&self) -> Vec<PoolBucket> {
        let mut all: Vec<PoolBucket> = Vec::new();
        for slot in self.slots.iter() {
            let copy = lock(slot).clone();
            all.extend(copy);
        }
        all.sort();
        let mut merged: Vec<PoolBucket> = Vec::with_capacity(all.len());
        for b in all {
            match merged.last_mut() {
                Some(m) if m.database == b.database && m.role == b.role => {
                    m.total = m.total.saturating_add(b.total);
                    m.idle = m.idle.saturating_add(b.idle);
                    m.waiting = m.waiting.saturating_add(b.waiting);
                }
                _ => merged.push(b),
            }
        }
        merged
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn b(db: &str, role: &str, total: u32, idle: u32, waiting: u32) -> PoolBucket {
        PoolBucket {
            database: db.into(),
            role: role.into(),
            total,
            idle,
            waiting,
        }
    }

    #[test]
    fn publish_and_merge() {
        let p = PoolSnapshots::new(2);
        assert!(p.collect().is_empty());
        p.publish(0, vec![b("db", "app", 2, 1, 0), b("a", "app", 1, 1, 0)]);
        p.publish(1, vec![b("db", "app", 3, 0, 4)]);
        p.publish(7, vec![b("ignored", "x", 1, 1, 1)]);
        assert_eq!(
            p.collect(),
            vec![b("a", "app", 1, 1, 0), b("db", "app", 5, 1, 4)]
        );
        // A new publish replaces the worker's whole list.
        p.publish(0, vec![]);
        assert_eq!(p.collect(), vec![b("db", "app", 3, 0, 4)]);
        p.publish(1, vec![b("x", "r", u32::MAX, 0, 0), b("x", "r", 1, 0, 0)]);
        assert_eq!(p.collect(), vec![b("x", "r", u32::MAX, 0, 0)]);
        assert!(PoolSnapshots::new(0).collect().is_empty());
    }
}
