//! The worker's side of `pool_mode = session`: pooled servers that are not
//! lent to a client live in their own slab (`links`), registered with the
//! worker's poll all the time, so EOF or an error while idle drops them at
//! once. Lending moves a link into the client's `Conn` (its socket is
//! re-registered under the client's server token); the release moves it
//! back. Every place a link can be dropped releases its pool slot (the
//! `Slot` inside the link).
//!
//! One worker per pool key: with `workers > 1` a client moves to its key's
//! owner before its first checkout (`handoff`), so a key's servers, waiters
//! and clients are all on one worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};

use super::{Conn, Upstream, Worker, connect_result, fresh_nonce};
use crate::conn::server::{LinkEvent, LinkFailure, QueryKind, ServerLink, UpstreamSecret};
use crate::conn::{CloseReason, Side};
use crate::log::Bytes;
use crate::pool::{Checkin, Checkout, PoolKey, Slot, TenantHold};
use crate::reactor::PoolRuntime;
use crate::reactor::token::{self, LINK};
use crate::reactor::transport::{Io, Ready, Transport};
use crate::stats::{self, STATS};
use crate::{debug, info, warn};

/// Passes over one link per drive before it yields.
const LINK_BUDGET: usize = 16;
/// How often idle links are checked against `pool_idle_timeout`.
const REAP_EVERY: Duration = Duration::from_secs(1);

pub(super) type Id = (usize, u64);

/// A pooled server connection not lent to any client.
pub(super) struct LinkConn {
    id: u64,
    key: PoolKey,
    link: Box<ServerLink>,
    transport: Transport,
    ready: Ready,
    connecting: bool,
    tls_pending: bool,
    addr_idx: usize,
    dirty: bool,
    deadline: Option<Instant>,
    /// A client promised this link once its check query is answered.
    lend_to: Option<Id>,
    /// Became idle at least once: a failure is not a creation failure.
    ready_once: bool,
    /// Came back from a client (a lend is then a reuse).
    returned: bool,
}

impl LinkConn {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// What a client session asked of the pool during its drive.
#[derive(Clone, Copy, Debug)]
pub(super) enum PoolReq {
    Checkout(Id),
    Release(Id),
    /// Transaction mode: the transaction ended; the client keeps going.
    Return(Id),
}

impl Worker {
    fn rt(&self) -> Option<Arc<PoolRuntime>> {
        self.settings.pool.clone()
    }

    /// Handles what client drives asked for, after taking up a pause or
    /// resume (so no checkout is served after `POST /pause` returned).
    pub(super) fn pool_requests(&mut self, now: Instant) {
        if self.settings.pool.is_some() {
            self.sync_pause(now);
        }
        for req in std::mem::take(&mut self.pool_reqs) {
            match req {
                PoolReq::Checkout(cid) => self.checkout(cid, now),
                PoolReq::Release(cid) => self.release(cid, now),
                PoolReq::Return(cid) => self.on_return(cid, now),
            }
        }
    }

    fn checkout(&mut self, cid: Id, now: Instant) {
        if self.paused {
            // POST /pause (as this worker took it up, so a pause, resume and
            // pause between two loop turns cannot leave a client queued):
            // held until the resume (or the client's checkout timeout).
            // Entries of clients no longer waiting are dropped once they
            // outnumber the clients, so the list stays bounded.
            self.held_checkouts.push(cid);
            if self.held_checkouts.len() > self.slab.len() {
                let slab = &self.slab;
                self.held_checkouts
                    .retain(|c| slab.get(c.0, c.1).is_some_and(|c| c.session.pool_waiting()));
            }
            return;
        }
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        let Some(key) = conn.session.pool_key() else {
            return;
        };
        if self.hand_off(cid, &key) {
            return;
        }
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        conn.pool_key = Some(key.clone());
        let prefer = conn.last_link;
        let want = conn.session.pool_want();
        match self.pools.checkout(&key, cid, want, prefer, now) {
            Checkout::Server(lid, hold) => self.lend(lid, cid, Some(hold), false, now),
            Checkout::Queued { capped } => {
                debug!(
                    "pool_wait",
                    conn = conn.id,
                    key_db = key.database,
                    key_role = key.role,
                    tenant = Bytes(want.tenant.as_bytes()),
                    capped = capped
                );
                if capped {
                    // Its tenant holds its cap: nothing is created for it;
                    // a server parked with an idle client of the same
                    // tenant goes back (and serves the next waiter that may
                    // take it once reset; another idle one may serve it now).
                    stats::inc(&STATS.pool_tenant_cap_waits);
                    let tenant = want.tenant.to_owned();
                    if self.steal_parked(&key, Some(&tenant), now) {
                        self.dispatch_idle(&key, now);
                    }
                } else {
                    self.serve_waiters(&key, now);
                }
            }
        }
    }

    /// Transaction mode: a transaction ended with the server idle. With
    /// clients waiting for the key it goes back at once; otherwise it stays
    /// parked with its client (whose next transaction then costs nothing)
    /// until a waiter needs it.
    fn on_return(&mut self, cid: Id, now: Instant) {
        let Some(conn) = self.slab.get(cid.0, cid.1) else {
            return;
        };
        let Some(key) = conn.pool_key.clone() else {
            return;
        };
        // Given back when a waiter can use it: one whose tenant is below its
        // cap, or one of this client's tenant (whose count goes down).
        if self.pools.wants_server(&key, &conn.session.info.tenant) {
            self.give_back(cid, now);
            self.dispatch_idle(&key, now);
            return;
        }
        stats::inc(&STATS.tx_parks);
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        if conn.parked_queued {
            return; // its entry from an earlier park is still queued
        }
        conn.parked_queued = true;
        let slab = &self.slab;
        let queue = self.parked.entry(key).or_default();
        // Entries of clients that have gone are dropped when they outnumber
        // the live clients, so the queue stays bounded by the slab.
        if queue.len() > slab.len().saturating_add(64) {
            queue.retain(|c| slab.get(c.0, c.1).is_some_and(|c| c.parked_queued));
        }
        queue.push_back(cid);
    }

    /// A waiter needs a server and none is free: take one parked with an
    /// idle client, oldest first; with `tenant`, only one of that tenant's
    /// clients (its waiter is at the tenant's cap, so only that tenant's
    /// give-back can serve it). Entries of clients no longer parked are
    /// dropped on the way. True when one went back.
    fn steal_parked(&mut self, key: &PoolKey, tenant: Option<&str>, now: Instant) -> bool {
        let Some(queue) = self.parked.get_mut(key) else {
            return false;
        };
        let mut found = None;
        let mut i = 0;
        // Bounded: each round removes an entry or steps past one.
        while let Some(&cid) = queue.get(i) {
            match self.slab.get_mut(cid.0, cid.1) {
                Some(c) if c.session.tx_parked() => {
                    if tenant.is_some_and(|t| c.session.info.tenant != t) {
                        i += 1;
                        continue;
                    }
                    c.parked_queued = false;
                    queue.remove(i);
                    found = Some(cid);
                    break;
                }
                Some(c) => {
                    c.parked_queued = false;
                    queue.remove(i);
                }
                None => {
                    queue.remove(i);
                }
            }
        }
        if queue.is_empty() {
            self.parked.remove(key);
        }
        match found {
            Some(cid) => {
                self.give_back(cid, now);
                true
            }
            None => false,
        }
    }

    /// Opens a new server connection for `key` (it joins the pool when idle).
    fn create_link(&mut self, key: PoolKey, slot: Slot, now: Instant) {
        let Some(rt) = self.rt() else {
            return;
        };
        stats::inc(&STATS.pool_creates);
        *self.creating.entry(key.clone()).or_insert(0) += 1;
        let mut link = Box::new(ServerLink::new(rt.link_config(&key), fresh_nonce(), now));
        link.slot = Some(slot);
        self.next_conn = self.next_conn.wrapping_add(1);
        let id = (self.next_conn << 8) | (self.id as u64 & 0xff) | (1 << 63);
        let mut err = None;
        let upstream = Arc::clone(&self.settings.upstream);
        for (idx, addr) in upstream.iter().enumerate() {
            match TcpStream::connect(*addr) {
                Ok(stream) => {
                    let lc = LinkConn {
                        id,
                        key: key.clone(),
                        link,
                        transport: Transport::plain(stream),
                        ready: Ready::default(),
                        connecting: true,
                        tls_pending: false,
                        addr_idx: idx,
                        dirty: false,
                        deadline: None,
                        lend_to: None,
                        ready_once: false,
                        returned: false,
                    };
                    self.insert_link(lc);
                    debug!("link_connecting", link = id, addr = addr);
                    return;
                }
                Err(e) => err = Some(e.to_string()),
            }
        }
        link.handle_connect_failed(&err.unwrap_or_else(|| "no upstream address".into()));
        let f = match link.poll_event() {
            Some(LinkEvent::Failed(f)) => f,
            _ => LinkFailure {
                sqlstate: "08006".into(),
                message: "cannot connect to the upstream server".into(),
                from_server: false,
            },
        };
        drop(link);
        self.creation_failed(&key, &f, now);
    }

    fn insert_link(&mut self, lc: LinkConn) -> Option<Id> {
        let Some((slot, generation)) = self.links.insert(lc) else {
            warn!("links_slab_full");
            return None;
        };
        let registry = self.poll.registry();
        let lc = self.links.get_mut(slot, generation)?;
        let token = token::encode_link(slot, generation);
        let interest = Interest::READABLE | Interest::WRITABLE;
        // A link taken back from a client is still registered under the
        // client's token: one re-registration, not a deregister and register.
        let r = if lc.returned {
            registry.reregister(lc.transport.stream_mut(), token, interest)
        } else {
            registry.register(lc.transport.stream_mut(), token, interest)
        };
        if let Err(e) = r {
            lc.link.handle_connect_failed(&format!("register: {e}"));
        }
        lc.dirty = true;
        self.dirty_links.push((slot, generation));
        sync_link_deadline(lc, &mut self.deadlines, slot, generation);
        Some((slot, generation))
    }

    /// Lends idle link `lid` to client `cid` (or to the next waiter if `cid`
    /// is gone) with `hold`, the count of `cid`'s tenant (None: the link
    /// carries it already, promised while its check query ran); `checked`:
    /// its check query has just run.
    fn lend(&mut self, lid: Id, cid: Id, hold: Option<TenantHold>, checked: bool, now: Instant) {
        let (mut lid, mut cid, mut checked, mut hold) = (lid, cid, checked, hold);
        // Bounded: each round removes one waiter from the queue.
        loop {
            let alive = self
                .slab
                .get(cid.0, cid.1)
                .is_some_and(|c| c.session.pool_waiting());
            if alive {
                break;
            }
            let Some(lc) = self.links.get_mut(lid.0, lid.1) else {
                return;
            };
            // The gone client's tenant holds it no more.
            lc.link.hold = None;
            drop(hold.take());
            let key = lc.key.clone();
            match self.pools.checkin(&key, lid, now) {
                Checkin::Lend(l, c, h) => {
                    checked &= l == lid;
                    lid = l;
                    cid = c;
                    hold = Some(h);
                }
                Checkin::Idle => return,
            }
        }
        if let Some(h) = hold
            && let Some(lc) = self.links.get_mut(lid.0, lid.1)
        {
            lc.link.hold = Some(h);
        }
        let Some(rt) = self.rt() else {
            return;
        };
        // A server that served a client before and then sat idle for long
        // is checked first (server_check_query); a new one is not.
        if let Some(q) = rt.check_query.as_deref()
            && !checked
            && let Some(lc) = self.links.get_mut(lid.0, lid.1)
            && lc.returned
            && lc
                .link
                .idle_since
                .is_some_and(|t| now.saturating_duration_since(t) >= rt.check_delay)
        {
            lc.lend_to = Some(cid);
            lc.link
                .begin_queries(&[(QueryKind::Plain, q.as_bytes())], now);
            lc.dirty = true;
            self.dirty_links.push(lid);
            sync_link_deadline(lc, &mut self.deadlines, lid.0, lid.1);
            return;
        }
        let Some(mut lc) = self.links.remove(lid.0) else {
            return;
        };
        if !lc.link.lend(&mut self.pool) {
            // Not idle after all (bytes arrived since it was checked in):
            // never lend it. Dropping it closes the socket and frees the slot.
            stats::inc(&STATS.pool_discards);
            let _ = self.poll.registry().deregister(lc.transport.stream_mut());
            let key = lc.key.clone();
            drop(lc);
            self.requeue_or_serve(&key, cid, now);
            return;
        }
        let registry = self.poll.registry();
        if let Err(e) = registry.reregister(
            lc.transport.stream_mut(),
            token::encode(cid.0, cid.1, Side::Server),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("link_reregister_failed", error = e);
            // Dropped: socket closed, slot and hold released; the client
            // waits for another.
            let key = lc.key.clone();
            drop(lc);
            self.requeue_or_serve(&key, cid, now);
            return;
        }
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        let pid = match conn.cancel_pid {
            Some((pid, s)) => {
                rt.cancel.set_backend(pid, lc.link.backend_key.clone());
                (pid, s)
            }
            None => {
                // The client's cancel key, made once (not per transaction).
                let secret = {
                    let n = fresh_nonce();
                    [n[0], n[1], n[2], n[3]]
                };
                let pid = rt.cancel.register(secret);
                rt.cancel.set_backend(pid, lc.link.backend_key.clone());
                conn.cancel_pid = Some((pid, secret));
                (pid, secret)
            }
        };
        stats::inc(&STATS.pool_checkouts);
        if let Some(at) = conn.checkout_at.take() {
            stats::LATENCY
                .checkout_wait
                .observe(now.saturating_duration_since(at));
        }
        if lc.returned {
            stats::inc(&STATS.pool_reuses);
        }
        let LinkConn {
            link, transport, ..
        } = lc;
        match conn.session.attach_server(link, pid, now) {
            Ok(()) => {
                conn.server = Some(Upstream {
                    transport,
                    // EPOLL_CTL_MOD polls the socket again and queues an
                    // event for the new token if bytes are already waiting,
                    // so no speculative read (it would only find EAGAIN).
                    ready: Ready {
                        read: false,
                        write: true,
                        hup: false,
                    },
                    tls_pending: false,
                    addr_idx: 0,
                });
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(cid);
                }
            }
            Err(_link) => {
                // The client stopped waiting in between: the link is dropped
                // (closed, slot released); the queue is served again.
                if let Some(k) = conn.pool_key.clone() {
                    self.serve_waiters(&k, now);
                }
            }
        }
    }

    /// Client `cid` ended: take its server back and reset it.
    fn release(&mut self, cid: Id, now: Instant) {
        let Some(rt) = self.rt() else {
            return;
        };
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        let taken = conn.session.take_server(CloseReason::ClientEof, now);
        let upstream = conn.server.take();
        if let Some((pid, _)) = conn.cancel_pid {
            rt.cancel.set_backend(pid, None);
        }
        let key = conn.pool_key.clone();
        if conn.session.closed().is_some() {
            if !self.closing.contains(&cid.0) {
                self.closing.push(cid.0);
            }
        } else if !conn.dirty {
            // A session timeout ended it: its FATAL is still to be flushed.
            conn.dirty = true;
            self.dirty.push(cid);
        }
        let (Some((mut link, tracker)), Some(up), Some(key)) = (taken, upstream, key) else {
            return;
        };
        let transport = up.transport;
        // Back to the pool: its tenant holds it no more.
        link.hold = None;
        link.begin_release(
            tracker,
            &[(QueryKind::Plain, rt.reset_query.as_bytes())],
            now,
        );
        self.insert_returned(key.clone(), link, transport, up.ready.hup);
        // A waiter of that tenant may take an idle server now (none is
        // created for it: this one comes back once reset).
        self.dispatch_idle(&key, now);
    }

    /// A link taken back from a client goes to the `links` slab (its id for
    /// the pool; None when the slab is full and the link is dropped).
    fn insert_returned(
        &mut self,
        key: PoolKey,
        link: Box<ServerLink>,
        transport: Transport,
        hup: bool,
    ) -> Option<Id> {
        self.next_conn = self.next_conn.wrapping_add(1);
        let lc = LinkConn {
            id: (self.next_conn << 8) | (self.id as u64 & 0xff) | (1 << 63),
            key,
            link,
            transport,
            // Re-registered (EPOLL_CTL_MOD): pending bytes or a hang-up raise
            // an event for the new token; a hang-up already seen is kept.
            ready: Ready {
                read: hup,
                write: true,
                hup,
            },
            connecting: false,
            tls_pending: false,
            addr_idx: 0,
            dirty: false,
            deadline: None,
            lend_to: None,
            ready_once: true,
            returned: true,
        };
        self.insert_link(lc)
    }

    /// Transaction mode: client `cid`'s transaction ended with its server
    /// provably idle; the server goes back to the pool (to the first waiter)
    /// and the client stays, without a server.
    fn give_back(&mut self, cid: Id, now: Instant) {
        let Some(rt) = self.rt() else {
            return;
        };
        let Some(conn) = self.slab.get_mut(cid.0, cid.1) else {
            return;
        };
        let Some((mut link, tracker)) = conn.session.take_tx_server() else {
            return;
        };
        let Some(up) = conn.server.take() else {
            return;
        };
        if let Some((pid, _)) = conn.cancel_pid {
            rt.cancel.set_backend(pid, None);
        }
        let Some(key) = conn.pool_key.clone() else {
            return;
        };
        stats::inc(&STATS.tx_returns);
        let transport = up.transport;
        // Back to the pool (the caller serves the queue): its tenant holds
        // it no more.
        link.hold = None;
        // The client changed session state itself: its next transaction
        // gets the step again; dropped statements are prepared again.
        if tracker.session_state_changed() {
            link.context_of = None;
        }
        if tracker.statements_dropped() {
            link.prepared.clear();
            link.client_stmts.clear();
        }
        // Provably idle already: no query runs, the link is idle at once;
        // unless the transaction may have left session objects (a temporary
        // table, a WITH HOLD cursor, a listener, an SQL prepared statement)
        // that the next client could see: then the reset runs first.
        if tracker.session_objects() {
            stats::inc(&STATS.tx_resets);
            link.begin_release(
                tracker,
                &[(QueryKind::Plain, rt.reset_query.as_bytes())],
                now,
            );
        } else {
            link.begin_release(tracker, &[], now);
        }
        let lid = self.insert_returned(key, link, transport, up.ready.hup);
        if let Some(conn) = self.slab.get_mut(cid.0, cid.1) {
            conn.last_link = lid;
            // Bytes the client sent meanwhile start its next checkout.
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(cid);
            }
        }
    }

    /// The client `cid` was promised a server that turned out unusable: it
    /// goes back to the head of the queue and a server is made for it.
    fn requeue_or_serve(&mut self, key: &PoolKey, cid: Id, now: Instant) {
        if let Some(c) = self.slab.get(cid.0, cid.1)
            && c.session.pool_waiting()
        {
            if self.paused {
                // Promised before the pause: held first, not served now.
                self.held_checkouts.insert(0, cid);
                return;
            }
            self.pools
                .requeue_front(key, cid, c.session.pool_want(), now);
        }
        self.serve_waiters(key, now);
    }

    /// A creation for `key` failed: the next waiter that could have taken
    /// the server gets the error.
    fn creation_failed(&mut self, key: &PoolKey, f: &LinkFailure, now: Instant) {
        if let Some(n) = self.creating.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        if let Some(cid) = self.pools.pop_waiter(key)
            && let Some(conn) = self.slab.get_mut(cid.0, cid.1)
        {
            conn.session.checkout_failed(f, now);
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(cid);
            }
        }
        self.serve_waiters(key, now);
    }

    /// A pause began: the clients already queued for a server are taken out
    /// of the pools' queues and held, ahead of the ones that ask from now on,
    /// so a server that comes back stays idle instead of being lent.
    pub(super) fn hold_waiters(&mut self, now: Instant) {
        let queued = self.pools.expired_waiters(now);
        let later = std::mem::take(&mut self.held_checkouts);
        self.held_checkouts = queued
            .into_iter()
            .map(|(_, cid)| cid)
            .chain(later)
            .collect();
    }

    /// After a resume: the held clients ask again, in the order they asked.
    pub(super) fn resume_waiters(&mut self, now: Instant) {
        for cid in std::mem::take(&mut self.held_checkouts) {
            if self
                .slab
                .get(cid.0, cid.1)
                .is_some_and(|c| c.session.pool_waiting())
            {
                self.checkout(cid, now);
            }
        }
    }

    /// Serves the queue of `key`: idle servers to waiters that may take one
    /// (after a tenant gave one back), then servers created for the waiters
    /// that could take one (tenants at their cap make the pool grow no
    /// further) while the key has room; when it has none, servers parked
    /// with idle clients are taken back.
    pub(super) fn serve_waiters(&mut self, key: &PoolKey, now: Instant) {
        self.dispatch_idle(key, now);
        let servable = self.pools.servable(key);
        let creating = self.creating.get(key).copied().unwrap_or(0) as usize;
        for _ in creating..servable {
            match self.pools.try_slot(key) {
                Some(slot) => self.create_link(key.clone(), slot, now),
                None => {
                    if !self.steal_parked(key, None, now) {
                        break;
                    }
                }
            }
        }
    }

    /// Lends idle servers of `key` to the waiters that may take one (a
    /// tenant's count went down while servers sat idle).
    fn dispatch_idle(&mut self, key: &PoolKey, now: Instant) {
        // Bounded: each round takes one idle server.
        while let Some((lid, cid, hold)) = self.pools.dispatch(key) {
            self.lend(lid, cid, Some(hold), false, now);
        }
    }

    /// Drives the links that had events.
    pub(super) fn drive_links(&mut self, now: Instant) {
        for _ in 0..4 {
            let batch = std::mem::take(&mut self.dirty_links);
            if batch.is_empty() {
                return;
            }
            for (slot, generation) in batch {
                self.drive_link(slot, generation, now);
            }
        }
    }

    fn drive_link(&mut self, slot: usize, generation: u64, now: Instant) {
        let upstream = Arc::clone(&self.settings.upstream);
        let registry = self.poll.registry();
        let Some(lc) = self.links.get_mut(slot, generation) else {
            return;
        };
        lc.dirty = false;
        let mut events = Vec::new();
        for _ in 0..LINK_BUDGET {
            let mut progress = false;
            if lc.connecting && lc.ready.write {
                match connect_result(&lc.transport) {
                    Ok(true) => {
                        lc.connecting = false;
                        let _ = lc.transport.stream().set_nodelay(true);
                        lc.link.handle_connected(now);
                        progress = true;
                    }
                    Ok(false) => lc.ready.write = false,
                    Err(e) => {
                        let next = lc.addr_idx + 1;
                        if !reconnect(lc, registry, &upstream, next, slot, generation) {
                            lc.link.handle_connect_failed(&e.to_string());
                        }
                        progress = true;
                    }
                }
            }
            while let Some(ev) = lc.link.poll_event() {
                progress = true;
                match ev {
                    LinkEvent::StartTls => start_link_tls(lc, &self.settings),
                    other => events.push(other),
                }
            }
            if !lc.connecting
                && lc.ready.read
                && (lc.link.wants_read() || lc.transport.handshaking())
            {
                let buf = lc.link.read_buf(&mut self.pool);
                match lc.transport.read(buf, &mut lc.ready) {
                    Io::Progress(0) | Io::WouldBlock => {}
                    Io::Progress(n) => {
                        lc.link.handle_read(n, now);
                        progress = true;
                    }
                    Io::Eof => {
                        lc.link.handle_eof();
                        progress = true;
                    }
                    Io::Failed(e) if lc.tls_pending => {
                        lc.tls_pending = false;
                        lc.link.handle_tls_failed(&e);
                        progress = true;
                    }
                    Io::Failed(e) => {
                        debug!("link_read_error", link = lc.id, error = e);
                        lc.link.handle_eof();
                        progress = true;
                    }
                }
            }
            if !lc.connecting && lc.ready.write && lc.transport.wants_flush() {
                if let Io::Failed(e) = lc.transport.flush(&mut lc.ready) {
                    if lc.tls_pending {
                        lc.tls_pending = false;
                        lc.link.handle_tls_failed(&e);
                    } else {
                        lc.link.handle_eof();
                    }
                }
                progress = true;
            }
            if lc.tls_pending && !lc.transport.handshaking() {
                lc.tls_pending = false;
                lc.link.handle_tls_ready();
                progress = true;
            }
            if !lc.connecting && !lc.tls_pending && lc.ready.write && !lc.link.output().is_empty() {
                match lc.transport.write(lc.link.output(), &[], &mut lc.ready) {
                    Io::Progress(n) => {
                        lc.link.handle_written(n);
                        progress = true;
                    }
                    Io::WouldBlock => {}
                    Io::Eof | Io::Failed(_) => {
                        lc.link.handle_eof();
                        progress = true;
                    }
                }
            }
            if !progress {
                break;
            }
        }
        sync_link_deadline(lc, &mut self.deadlines, slot, generation);
        for ev in events {
            match ev {
                LinkEvent::Idle => self.link_idle((slot, generation), now),
                LinkEvent::Failed(f) => self.link_failed((slot, generation), f, now),
                LinkEvent::StartTls => {}
            }
        }
    }

    fn link_idle(&mut self, lid: Id, now: Instant) {
        let Some(rt) = self.rt() else {
            return;
        };
        let Some(lc) = self.links.get_mut(lid.0, lid.1) else {
            return;
        };
        let key = lc.key.clone();
        if !lc.ready_once {
            lc.ready_once = true;
            if let Some(n) = self.creating.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(cid) = lc.lend_to.take() {
            // Its check query was just answered: lend it without another
            // (its hold is in the link since the promise).
            self.lend(lid, cid, None, true, now);
            return;
        }
        if rt
            .lifetime
            .is_some_and(|l| now.saturating_duration_since(lc.link.created) >= l)
        {
            debug!("link_lifetime", link = lc.id);
            self.close_link(lid, "server_lifetime", now);
            return;
        }
        match self.pools.checkin(&key, lid, now) {
            Checkin::Lend(l, c, h) => self.lend(l, c, Some(h), false, now),
            Checkin::Idle => {}
        }
    }

    fn link_failed(&mut self, lid: Id, f: LinkFailure, now: Instant) {
        let Some(lc) = self.links.get(lid.0, lid.1) else {
            return;
        };
        let (key, ready_once, lend_to, id) = (lc.key.clone(), lc.ready_once, lc.lend_to, lc.id);
        info!(
            "link_closed",
            link = id,
            db = key.database,
            role = key.role,
            code = f.sqlstate,
            detail = f.message
        );
        self.pools.remove_idle(&key, lid);
        self.drop_link(lid);
        match lend_to {
            // Promised after a check that failed: queue it again at the front.
            Some(cid) => self.requeue_or_serve(&key, cid, now),
            None if ready_once => self.serve_waiters(&key, now),
            None => self.creation_failed(&key, &f, now),
        }
    }

    fn close_link(&mut self, lid: Id, why: &str, now: Instant) {
        let Some(lc) = self.links.get(lid.0, lid.1) else {
            return;
        };
        let key = lc.key.clone();
        debug!("link_close", link = lc.id, reason = why);
        self.pools.remove_idle(&key, lid);
        self.drop_link(lid);
        self.serve_waiters(&key, now);
    }

    /// Removes a link: its socket closes and its slot is released.
    fn drop_link(&mut self, lid: Id) {
        if let Some(mut lc) = self.links.remove(lid.0) {
            stats::inc(&STATS.pool_discards);
            let _ = self.poll.registry().deregister(lc.transport.stream_mut());
            lc.link.release_buffers(&mut self.pool);
        }
    }

    /// Link deadlines (login, check, reset).
    pub(super) fn link_timeout(&mut self, slot: usize, generation: u64, at: Instant, now: Instant) {
        let Some(lc) = self.links.get_mut(slot, generation) else {
            return;
        };
        if lc.link.next_deadline() != Some(at) {
            return;
        }
        lc.deadline = None;
        lc.link.handle_timeout(now);
        if !lc.dirty {
            lc.dirty = true;
            self.dirty_links.push((slot, generation));
        }
    }

    /// Closes idle links past `pool_idle_timeout` (at most once per second).
    pub(super) fn reap(&mut self, now: Instant) {
        if self.next_reap.is_some_and(|t| now < t) {
            return;
        }
        self.next_reap = now.checked_add(REAP_EVERY);
        let Some(rt) = self.rt() else {
            return;
        };
        let Some(cutoff) = now.checked_sub(rt.idle_timeout) else {
            return;
        };
        for (key, lid) in self.pools.idle_since(cutoff) {
            debug!("link_reaped", db = key.database, role = key.role);
            self.drop_link(lid);
        }
        self.pools.compact();
    }

    /// A client connection is being freed: leave the queue, drop its key.
    pub(super) fn client_gone(&mut self, conn: &Conn, cid: Id, now: Instant) {
        let Some(rt) = self.rt() else {
            return;
        };
        if let Some((pid, _)) = conn.cancel_pid {
            rt.cancel.unregister(pid);
        }
        if let Some(key) = conn.pool_key.clone() {
            // Unconditionally: a client that stopped waiting (its checkout
            // timeout, a kill, its own exit) is no longer `pool_waiting` by
            // the time it is freed, yet its entry would stay in the queue,
            // counted as waiting and served nothing until a server is offered.
            self.pools.cancel_wait(&key, cid, &conn.session.info.tenant);
            // A server it held (if any) is closed with it: refill for waiters.
            self.serve_waiters(&key, now);
        }
    }

    /// Shutdown: idle links are closed at once.
    pub(super) fn close_idle_links(&mut self) {
        for (slot, generation) in self.links.occupied() {
            if self
                .links
                .get(slot, generation)
                .is_some_and(|lc| lc.link.is_idle())
            {
                let key = self.links.get(slot, generation).map(|l| l.key.clone());
                if let Some(k) = key {
                    self.pools.remove_idle(&k, (slot, generation));
                }
                self.drop_link((slot, generation));
            }
        }
    }

    pub(super) fn link_event(&mut self, slot: usize, generation: u64, ev: &mio::event::Event) {
        let generation = generation & !LINK;
        if let Some(lc) = self.links.get_mut(slot, generation) {
            let closed = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
            lc.ready.read |= ev.is_readable() || closed;
            lc.ready.hup |= closed;
            lc.ready.write |= ev.is_writable() || closed;
            if !lc.dirty {
                lc.dirty = true;
                self.dirty_links.push((slot, generation));
            }
        }
    }
}

fn sync_link_deadline(
    lc: &mut LinkConn,
    deadlines: &mut crate::reactor::deadlines::Deadlines,
    slot: usize,
    generation: u64,
) {
    let want = lc.link.next_deadline();
    if want != lc.deadline {
        if let Some(at) = want {
            deadlines.push(at, slot, generation | LINK);
        }
        lc.deadline = want;
    }
}

/// Tries the next upstream address; false when none is left.
fn reconnect(
    lc: &mut LinkConn,
    registry: &Registry,
    upstream: &[std::net::SocketAddr],
    from: usize,
    slot: usize,
    generation: u64,
) -> bool {
    let _ = registry.deregister(lc.transport.stream_mut());
    for (idx, addr) in upstream.iter().enumerate().skip(from) {
        if let Ok(mut stream) = TcpStream::connect(*addr)
            && registry
                .register(
                    &mut stream,
                    token::encode_link(slot, generation),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok()
        {
            lc.transport = Transport::plain(stream);
            lc.ready = Ready::default();
            lc.addr_idx = idx;
            return true;
        }
    }
    false
}

fn start_link_tls(lc: &mut LinkConn, settings: &crate::reactor::WorkerSettings) {
    match super::upgrade_upstream(&mut lc.transport, settings) {
        Ok(()) => lc.tls_pending = true,
        Err(e) => lc.link.handle_tls_failed(&e),
    }
}

impl PoolRuntime {
    /// The login settings of a server for `key`.
    pub fn link_config(&self, key: &PoolKey) -> Arc<crate::conn::server::LinkConfig> {
        let secret = match self.upstream_secrets.get(&key.role) {
            Some(s) => s.clone(),
            None => match &self.upstream_password {
                Some(p) => UpstreamSecret::Plain(p.clone()),
                None => UpstreamSecret::None,
            },
        };
        Arc::new(crate::conn::server::LinkConfig {
            role: key.role.clone(),
            database: key.database.clone(),
            secret,
            upstream_tls: self.upstream_tls,
            limits: self.limits,
            login_timeout: self.login_timeout,
            query_timeout: self.reset_timeout,
        })
    }
}
