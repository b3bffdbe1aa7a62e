//! Pool mode with `workers > 1`: every pool key (database, login role) has
//! one owner worker, chosen by a fixed hash of the key. A client is accepted,
//! TLS-wrapped and authenticated on whichever worker took it; when it first
//! asks for a server of a key another worker owns, its whole `Conn` (socket,
//! TLS state, session) moves to that worker's inbox and the owner's waker
//! fires. From then on the client lives on the owner, so a key's servers,
//! FIFO waiters, `pool_size` and lending all stay single-threaded and hold
//! across workers without locks on the data path. The only lock is the
//! inbox's, taken once per hand-off.
//!
//! Shutdown: an owner drains its inbox before it may exit, and closes it
//! under the lock; a hand-off to a closed inbox comes back to the sender,
//! which ends that client with a shutdown error.

use std::sync::{Arc, Mutex, MutexGuard};

use mio::Waker;

use super::{Conn, PoolReq, Worker, sync_deadline};
use crate::conn::CloseReason;
use crate::pool::PoolKey;
use crate::reactor::transport::Ready;
use crate::stats::{self, STATS};
use crate::{debug, warn};

/// The inboxes of all workers (index = worker id).
pub(in crate::reactor) struct Mesh {
    inboxes: Vec<Inbox>,
}

struct Inbox {
    state: Mutex<InboxState>,
    waker: Arc<Waker>,
}

#[derive(Default)]
struct InboxState {
    conns: Vec<Conn>,
    closed: bool,
}

impl Mesh {
    pub(in crate::reactor) fn new(wakers: Vec<Arc<Waker>>) -> Mesh {
        Mesh {
            inboxes: wakers
                .into_iter()
                .map(|waker| Inbox {
                    state: Mutex::new(InboxState::default()),
                    waker,
                })
                .collect(),
        }
    }

    /// The worker that owns `key`'s pool.
    pub(super) fn owner(&self, key: &PoolKey) -> usize {
        owner_of(key, self.inboxes.len())
    }

    fn lock(&self, worker: usize) -> Option<MutexGuard<'_, InboxState>> {
        let inbox = self.inboxes.get(worker)?;
        // Every operation under the lock is a push or a take: a panic cannot
        // leave it half-done, so poison is ignored.
        Some(match inbox.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        })
    }

    /// Queues `conn` for `worker`; gives it back when that worker has closed
    /// its inbox (it is exiting).
    fn send(&self, worker: usize, conn: Box<Conn>) -> Result<(), Box<Conn>> {
        let Some(mut g) = self.lock(worker) else {
            return Err(conn);
        };
        if g.closed {
            return Err(conn);
        }
        g.conns.push(*conn);
        drop(g);
        if let Some(inbox) = self.inboxes.get(worker) {
            let _ = inbox.waker.wake();
        }
        Ok(())
    }

    fn take(&self, worker: usize, close: bool) -> Vec<Conn> {
        match self.lock(worker) {
            Some(mut g) => {
                g.closed |= close;
                std::mem::take(&mut g.conns)
            }
            None => Vec::new(),
        }
    }
}

/// FNV-1a over the key: the same on every worker and every run (the std
/// hasher is seeded per instance, so it cannot pick an owner).
fn owner_of(key: &PoolKey, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .database
        .bytes()
        .chain(std::iter::once(0))
        .chain(key.role.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

impl Worker {
    /// Moves client `cid` to the owner of `key` when that is another worker.
    /// Returns true when the client left (or ended) here.
    pub(super) fn hand_off(&mut self, cid: (usize, u64), key: &PoolKey) -> bool {
        let Some(mesh) = self.mesh.clone() else {
            return false;
        };
        let owner = mesh.owner(key);
        if owner == self.id {
            return false;
        }
        // A client closed in this batch is freed here (its slot is in
        // `closing`); one that holds a server already is not moved.
        let movable = !self.closing.contains(&cid.0)
            && self.slab.get(cid.0, cid.1).is_some_and(|c| {
                c.session.closed().is_none()
                    && c.server.is_none()
                    && c.cancel.is_none()
                    && c.session.pool_waiting()
            });
        if !movable {
            return false;
        }
        let Some(mut conn) = self.slab.remove(cid.0) else {
            return false;
        };
        let _ = self.poll.registry().deregister(conn.client.stream_mut());
        conn.dirty = false;
        conn.deadline = None;
        let id = conn.id;
        match mesh.send(owner, Box::new(conn)) {
            Ok(()) => {
                stats::inc(&STATS.pool_handoffs);
                debug!("client_handoff", conn = id, from = self.id, to = owner);
            }
            Err(mut conn) => {
                // The owner is exiting: end the client here.
                conn.session.abort(
                    CloseReason::Shutdown,
                    "the pool's worker is shutting down".into(),
                );
                self.adopt(*conn, false);
            }
        }
        true
    }

    /// Takes the clients handed to this worker; `close` also closes the
    /// inbox (the worker is about to exit). Returns how many arrived.
    pub(super) fn take_handoffs(&mut self, close: bool) -> usize {
        let Some(mesh) = self.mesh.clone() else {
            return 0;
        };
        let conns = mesh.take(self.id, close);
        let n = conns.len();
        for conn in conns {
            self.adopt(conn, true);
        }
        n
    }

    /// Registers a moved client here; `checkout` asks the pool for it.
    fn adopt(&mut self, conn: Conn, checkout: bool) {
        let Some((slot, generation)) = self.slab.insert(conn) else {
            // The slab is full: the client is dropped (socket closed).
            warn!("handoff_slab_full", worker = self.id);
            self.shared
                .active_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            stats::dec(&STATS.connections_active);
            return;
        };
        let registry = self.poll.registry();
        let Some(conn) = self.slab.get_mut(slot, generation) else {
            return;
        };
        if conn.session.closed().is_some() {
            self.closing.push(slot);
            return;
        }
        if !super::register_client(registry, conn, slot, generation) {
            self.closing.push(slot);
            return;
        }
        // Edge-triggered: readiness seen on the old worker may not re-fire.
        conn.client_ready = Ready {
            read: true,
            write: true,
            hup: conn.client_ready.hup,
        };
        conn.dirty = true;
        self.dirty.push((slot, generation));
        sync_deadline(conn, &mut self.deadlines, slot, generation);
        if checkout {
            self.pool_reqs.push(PoolReq::Checkout((slot, generation)));
        }
    }

    /// Handed-off clients still queued here when the loop wakes.
    pub(super) fn poll_handoffs(&mut self) {
        if self.handoff_pending {
            self.handoff_pending = false;
            self.take_handoffs(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str, role: &str) -> PoolKey {
        PoolKey {
            database: db.into(),
            role: role.into(),
        }
    }

    #[test]
    fn owner_is_stable_in_range_and_spreads_keys() {
        let k = key("app", "app_user");
        for workers in 1..=8 {
            let o = owner_of(&k, workers);
            assert!(o < workers);
            assert_eq!(o, owner_of(&k, workers), "deterministic");
        }
        assert_eq!(owner_of(&k, 1), 0);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64 {
            seen.insert(owner_of(&key("db", &format!("role{i}")), 4));
        }
        assert_eq!(seen.len(), 4, "64 keys over 4 workers use them all");
        let spread = |db: &str, role: &str| -> Vec<usize> {
            (2..40).map(|n| owner_of(&key(db, role), n)).collect()
        };
        assert_ne!(
            spread("ab", "c"),
            spread("a", "bc"),
            "the separator keeps (\"ab\",\"c\") and (\"a\",\"bc\") apart"
        );
    }
}
