//! One worker: a `mio::Poll`, its connections and timers.
//!
//! Each iteration: compute the poll timeout (0 when work is deferred); poll;
//! cache `now`; route events (listener → accept flag, waker → shutdown check,
//! connection → OR readiness in and mark dirty); drive each dirty connection
//! while `ready & want` is non-empty, up to `DRIVE_BUDGET` passes (then it stays
//! dirty, for fairness); accept below capacity; expire deadlines; free closed
//! slots last, so no slot is reused within the batch.
//! Readiness is kept per socket (edge-triggered): `ready` bits are set by
//! events and cleared only on `WouldBlock`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Waker};

mod cancel;
mod handoff;
mod pooled;

pub(super) use self::handoff::Mesh;
use self::pooled::{LinkConn, PoolReq};
use super::deadlines::Deadlines;
use super::slab::Slab;
use super::token::{self, LISTENER, TLS_LISTENER, WAKER};
use super::transport::{Io, Ready, Transport};
use super::{Shared, WorkerSettings};
use crate::buf::{BufPool, POOL_KEEP};
use crate::conn::{Action, CloseReason, Session, Side};
use crate::log::Bytes;
use crate::stats::{self, STATS};
use crate::{debug, error, info, warn};

/// Passes over one connection per iteration before it yields to others.
const DRIVE_BUDGET: usize = 16;
/// Connections accepted per iteration before other work runs.
const ACCEPT_BUDGET: usize = 64;
/// Pause after EMFILE/ENFILE before accepting again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How often a worker publishes its pools' counts for the admin API.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Longest poll sleep (so shutdown and clock drift are noticed).
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

struct Upstream {
    transport: Transport,
    ready: Ready,
    /// A TLS handshake with the server is running; the session waits for it.
    tls_pending: bool,
    /// Index into the upstream address list of the attempt in flight.
    addr_idx: usize,
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    opened: Instant,
    session: Session,
    client: Transport,
    client_ready: Ready,
    /// `Some(direct)`: wrap the client in TLS once `S` is flushed.
    tls_upgrade: Option<bool>,
    /// Direct TLS on the main port: refuse the session unless ALPN `postgresql`.
    alpn_required: bool,
    server: Option<Upstream>,
    dirty: bool,
    /// The deadline last pushed to the heap for this connection.
    deadline: Option<Instant>,
    /// Pool mode: the key this client asked a server of.
    pool_key: Option<crate::pool::PoolKey>,
    /// Pool mode: the proxy-issued cancel key (pid, secret).
    cancel_pid: Option<(i32, [u8; 4])>,
    /// Transaction mode: the server this client returned last (asked for
    /// first at its next checkout: its context step can then be skipped).
    last_link: Option<(usize, u64)>,
    /// Pool modes: when the client asked for the server it waits for.
    checkout_at: Option<Instant>,
    /// Transaction mode: this client has an entry in `Worker::parked` (one
    /// at most, so the queue cannot grow with each transaction).
    parked_queued: bool,
    /// `query_timeout`: the proxy's CancelRequest connection in flight.
    cancel: Option<Box<cancel::CancelSock>>,
}

pub(super) struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    listener_ready: bool,
    /// `tls_port`: direct TLS from the first byte.
    tls_listener: Option<TcpListener>,
    tls_listener_ready: bool,
    accept_paused_until: Option<Instant>,
    slab: Slab<Conn>,
    dirty: Vec<(usize, u64)>,
    closing: Vec<usize>,
    deadlines: Deadlines,
    pool: BufPool,
    settings: WorkerSettings,
    shared: Arc<Shared>,
    next_conn: u64,
    shutdown_deadline: Option<Instant>,
    /// Pool modes: `Shared::paused` as this worker last took it up.
    paused: bool,
    /// Pool modes, while paused: clients that asked for a server, oldest first.
    held_checkouts: Vec<(usize, u64)>,
    /// When the pools are published next ([`PUBLISH_EVERY`]).
    next_publish: Option<Instant>,
    /// Commands from the admin API ([`super::control`]).
    commands: std::sync::mpsc::Receiver<super::control::Envelope>,
    /// (generation, configuration) of new sessions, from [`Shared`].
    session_cfg: (u64, Arc<crate::conn::SessionConfig>),
    /// Pool mode: servers not lent to a client.
    links: Slab<LinkConn>,
    dirty_links: Vec<(usize, u64)>,
    pools: crate::pool::Pools<(usize, u64), (usize, u64)>,
    /// Servers being created per key (not yet idle once).
    creating: std::collections::HashMap<crate::pool::PoolKey, u32>,
    pool_reqs: Vec<PoolReq>,
    next_reap: Option<Instant>,
    /// Pool mode with several workers: the inboxes clients move through.
    mesh: Option<Arc<Mesh>>,
    /// The waker fired: clients may wait in this worker's inbox.
    handoff_pending: bool,
    /// Transaction mode: clients holding an idle server between
    /// transactions, per key, oldest first (stale entries skipped).
    parked:
        std::collections::HashMap<crate::pool::PoolKey, std::collections::VecDeque<(usize, u64)>>,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        mut listener: TcpListener,
        mut tls_listener: Option<TcpListener>,
        settings: WorkerSettings,
        shared: Arc<Shared>,
        commands: std::sync::mpsc::Receiver<super::control::Envelope>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let pool_size = settings.pool.as_ref().map_or(0, |p| p.pool_size);
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(l) = tls_listener.as_mut() {
            poll.registry()
                .register(l, TLS_LISTENER, Interest::READABLE)?;
        }
        Ok((
            Worker {
                id,
                poll,
                listener: Some(listener),
                listener_ready: true,
                tls_listener_ready: tls_listener.is_some(),
                tls_listener,
                accept_paused_until: None,
                slab: Slab::default(),
                dirty: Vec::new(),
                closing: Vec::new(),
                deadlines: Deadlines::default(),
                pool: BufPool::new(POOL_KEEP),
                settings,
                session_cfg: (shared.session_generation(), shared.session()),
                commands,
                next_publish: None,
                paused: false,
                held_checkouts: Vec::new(),
                shared,
                next_conn: 0,
                shutdown_deadline: None,
                links: Slab::default(),
                dirty_links: Vec::new(),
                pools: crate::pool::Pools::new(pool_size),
                creating: std::collections::HashMap::new(),
                pool_reqs: Vec::new(),
                next_reap: None,
                mesh: None,
                handoff_pending: false,
                parked: std::collections::HashMap::new(),
            },
            waker,
        ))
    }

    /// Pool mode with several workers: clients move to their key's owner.
    pub(super) fn set_mesh(&mut self, mesh: Arc<Mesh>) {
        self.mesh = Some(mesh);
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if self.shared.shutdown.load(Ordering::Relaxed) && self.shutdown_deadline.is_none() {
                self.begin_shutdown(now);
            }
            if let Some(dl) = self.shutdown_deadline {
                // Clients handed to this worker are taken before it may
                // exit; closing the inbox sends later ones back.
                if self.slab.is_empty() && self.take_handoffs(true) == 0 {
                    break;
                }
                if now >= dl {
                    self.take_handoffs(true);
                    self.close_all(CloseReason::Shutdown);
                    break;
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("poll_failed", worker = self.id, error = e);
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.listener_ready = true,
                    TLS_LISTENER => self.tls_listener_ready = true,
                    WAKER => {
                        self.handoff_pending = self.mesh.is_some();
                        self.run_commands(now);
                    }
                    t => {
                        let (slot, generation, side) = token::decode(t);
                        if generation & token::LINK != 0 && side == Side::Server {
                            self.cancel_event(slot, generation & !token::LINK, ev);
                            continue;
                        }
                        if generation & token::LINK != 0 {
                            self.link_event(slot, generation, ev);
                            continue;
                        }
                        if let Some(conn) = self.slab.get_mut(slot, generation) {
                            let r = match side {
                                Side::Client => &mut conn.client_ready,
                                Side::Server => match conn.server.as_mut() {
                                    Some(u) => &mut u.ready,
                                    None => continue,
                                },
                            };
                            let closed =
                                ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                            r.read |= ev.is_readable() || closed;
                            r.hup |= closed;
                            r.write |= ev.is_writable() || closed;
                            if !conn.dirty {
                                conn.dirty = true;
                                self.dirty.push((slot, generation));
                            }
                        }
                    }
                }
            }
            self.poll_handoffs();
            self.drive_dirty(now);
            self.pool_requests(now);
            self.drive_links(now);
            self.accept(now);
            self.expire(now);
            if self.settings.pool.is_some() {
                self.reap(now);
                self.pool_requests(now);
                self.drive_links(now);
                self.publish_pools(now);
            }
            self.free_closed(now);
        }
        debug!("worker_exit", worker = self.id);
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.dirty.is_empty() || !self.dirty_links.is_empty() {
            return Duration::ZERO;
        }
        let accept_now = ((self.listener.is_some() && self.listener_ready)
            || (self.tls_listener.is_some() && self.tls_listener_ready))
            && self.accept_paused_until.is_none();
        if accept_now && self.below_capacity() {
            return Duration::ZERO;
        }
        let mut wait = MAX_POLL_WAIT;
        for at in [
            self.deadlines.next(),
            self.accept_paused_until,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        {
            wait = wait.min(at.saturating_duration_since(now));
        }
        wait
    }

    /// At most every [`PUBLISH_EVERY`]: this worker's pools for the admin API.
    fn publish_pools(&mut self, now: Instant) {
        let Some(snap) = &self.settings.snapshots else {
            return;
        };
        if self.next_publish.is_some_and(|at| now < at) {
            return;
        }
        self.next_publish = Some(now + PUBLISH_EVERY);
        let mut buckets: Vec<crate::admin::PoolBucket> = self
            .pools
            .all_stats()
            .into_iter()
            .map(|(k, st)| crate::admin::PoolBucket {
                database: k.database,
                role: k.role,
                total: st.total,
                idle: u32::try_from(st.idle).unwrap_or(u32::MAX),
                waiting: u32::try_from(st.waiting).unwrap_or(u32::MAX),
            })
            .collect();
        // Clients held by a pause wait too (outside the pools' queues).
        for &(slot, generation) in &self.held_checkouts {
            let Some(key) = self
                .slab
                .get(slot, generation)
                .filter(|c| c.session.pool_waiting())
                .and_then(|c| c.session.pool_key())
            else {
                continue;
            };
            match buckets
                .iter_mut()
                .find(|b| b.database == key.database && b.role == key.role)
            {
                Some(b) => b.waiting = b.waiting.saturating_add(1),
                None => buckets.push(crate::admin::PoolBucket {
                    database: key.database,
                    role: key.role,
                    waiting: 1,
                    ..crate::admin::PoolBucket::default()
                }),
            }
        }
        snap.publish(self.id, buckets);
    }

    /// Pool modes: takes up a change of `Shared::paused` (one atomic load
    /// before each batch of pool requests; `Control::set_paused` wakes the
    /// worker).
    pub(super) fn sync_pause(&mut self, now: Instant) {
        let paused = self.shared.paused.load(Ordering::Acquire);
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        if paused {
            self.hold_waiters(now);
        } else {
            self.resume_waiters(now);
        }
    }

    /// Runs the admin API's commands queued for this worker, answering each.
    /// Clients handed to this worker are taken in first, so a kill sees them.
    fn run_commands(&mut self, now: Instant) {
        self.poll_handoffs();
        use super::control::Command;
        while let Ok((cmd, reply)) = self.commands.try_recv() {
            let n = match cmd {
                Command::KillTenant(tenant) => self.kill_tenant(&tenant, now),
            };
            // The admin thread may have stopped waiting: nothing to do then.
            let _ = reply.try_send(n);
        }
    }

    /// Ends every session of `tenant` (FATAL 57P01 where the stream allows it).
    fn kill_tenant(&mut self, tenant: &str, now: Instant) -> u64 {
        let mut killed = 0u64;
        for (slot, generation) in self.slab.occupied() {
            let Some(conn) = self.slab.get_mut(slot, generation) else {
                continue;
            };
            if conn.session.info.bypass
                || conn.session.info.tenant != tenant
                || conn.session.closed().is_some()
            {
                continue;
            }
            conn.session.kill(now);
            killed = killed.saturating_add(1);
            // The FATAL is flushed, then the session closes.
            self.settle(slot, generation);
        }
        if killed > 0 {
            info!("tenant_killed", worker = self.id, sessions = killed);
        }
        killed
    }

    /// The configuration for a new session: the worker's copy, refreshed
    /// from [`Shared`] when a reload replaced it.
    fn session_config(&mut self) -> Arc<crate::conn::SessionConfig> {
        let generation = self.shared.session_generation();
        if generation != self.session_cfg.0 {
            self.session_cfg = (generation, self.shared.session());
        }
        Arc::clone(&self.session_cfg.1)
    }

    fn below_capacity(&self) -> bool {
        self.shared.active_clients.load(Ordering::Relaxed) < self.settings.max_client_conn
    }

    fn begin_shutdown(&mut self, now: Instant) {
        info!(
            "shutdown_begin",
            worker = self.id,
            sessions = self.slab.len()
        );
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut l) = self.tls_listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shutdown_deadline = Some(now + self.settings.shutdown_timeout);
        self.close_idle_links();
    }

    fn close_all(&mut self, reason: CloseReason) {
        for (slot, generation) in self.slab.occupied() {
            if let Some(conn) = self.slab.get_mut(slot, generation) {
                conn.session.abort(reason, String::new());
            }
            self.closing.push(slot);
        }
        self.free_closed(Instant::now());
    }

    // ------------------------------------------------------------------ accept

    fn accept(&mut self, now: Instant) {
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for tls_port in [false, true] {
            for _ in 0..ACCEPT_BUDGET {
                let (ready, listener) = if tls_port {
                    (self.tls_listener_ready, self.tls_listener.as_ref())
                } else {
                    (self.listener_ready, self.listener.as_ref())
                };
                let Some(listener) = listener.filter(|_| ready) else {
                    break;
                };
                match listener.accept() {
                    Ok((stream, peer)) => self.admit(stream, peer, tls_port, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if tls_port {
                            self.tls_listener_ready = false;
                        } else {
                            self.listener_ready = false;
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if crate::sys::is_fd_exhaustion(&e) => {
                        // Keep the ready flag: edge triggering will not fire again.
                        stats::inc(&STATS.accept_pauses);
                        warn!(
                            "accept_paused",
                            worker = self.id,
                            error = e,
                            pause_ms = ACCEPT_PAUSE.as_millis()
                        );
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                    Err(e) => {
                        // ECONNABORTED and friends: that one connection is gone.
                        debug!("accept_error", worker = self.id, error = e);
                    }
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, tls_port: bool, now: Instant) {
        stats::inc(&STATS.connections_total);
        let active = self.shared.active_clients.fetch_add(1, Ordering::Relaxed);
        if active >= self.settings.max_client_conn {
            self.shared.active_clients.fetch_sub(1, Ordering::Relaxed);
            stats::inc(&STATS.refused_max_clients);
            let mut msg = Vec::new();
            crate::protocol::encode::error_response(
                &mut msg,
                "FATAL",
                "53300",
                &format!(
                    "too many client connections (max_client_conn = {})",
                    self.settings.max_client_conn
                ),
            );
            let _ = stream.write(&msg);
            warn!(
                "client_refused",
                worker = self.id,
                peer = peer,
                reason = CloseReason::TooManyClients.as_str()
            );
            return;
        }
        stats::inc(&STATS.connections_active);
        let _ = stream.set_nodelay(true);
        self.next_conn = self.next_conn.wrapping_add(1);
        let id = (self.next_conn << 8) | (self.id as u64 & 0xff);
        let mut session = Session::new(self.session_config(), now);
        session.set_peer(peer.ip().is_loopback(), fresh_nonce());
        session.set_client_id(id);
        let mut client = Transport::plain(stream);
        if tls_port {
            // pgvpd 1.0's TLS listener: TLS from the first byte, ALPN optional.
            match start_server_tls(&self.settings, &mut client, &[]) {
                Ok(()) => session.handle_client_tls_started(fresh_nonce()),
                Err(e) => session.abort(CloseReason::TlsFailed, e),
            }
        }
        let conn = Conn {
            id,
            peer,
            opened: now,
            session,
            client,
            client_ready: Ready::default(),
            tls_upgrade: None,
            alpn_required: false,
            server: None,
            dirty: false,
            deadline: None,
            pool_key: None,
            cancel_pid: None,
            last_link: None,
            checkout_at: None,
            parked_queued: false,
            cancel: None,
        };
        let Some((slot, generation)) = self.slab.insert(conn) else {
            self.shared.active_clients.fetch_sub(1, Ordering::Relaxed);
            stats::dec(&STATS.connections_active);
            return;
        };
        let registry = self.poll.registry();
        let Some(conn) = self.slab.get_mut(slot, generation) else {
            return;
        };
        debug!("client_accepted", conn = id, peer = peer);
        if !register_client(registry, conn, slot, generation) {
            self.closing.push(slot);
            return;
        }
        sync_deadline(conn, &mut self.deadlines, slot, generation);
    }

    // ------------------------------------------------------------------ drive

    fn drive_dirty(&mut self, now: Instant) {
        let batch = std::mem::take(&mut self.dirty);
        for (slot, generation) in batch {
            let registry = self.poll.registry();
            let Some(conn) = self.slab.get_mut(slot, generation) else {
                continue;
            };
            conn.dirty = false;
            let settings = &self.settings;
            let pool = &mut self.pool;
            let reqs = &mut self.pool_reqs;
            let result = catch_unwind(AssertUnwindSafe(|| {
                drive(conn, registry, pool, settings, reqs, slot, generation, now)
            }));
            let budget_left = match result {
                Ok(done) => done,
                Err(_) => {
                    stats::inc(&STATS.panics);
                    error!(
                        "connection_panic",
                        conn = conn.id,
                        phase = conn.session.phase_name()
                    );
                    conn.session.abort(
                        CloseReason::Panic,
                        "panic while handling the connection".into(),
                    );
                    true
                }
            };
            if conn.session.closed().is_some() {
                self.closing.push(slot);
                continue;
            }
            if !budget_left && !conn.dirty {
                conn.dirty = true;
                self.dirty.push((slot, generation));
            }
            sync_deadline(conn, &mut self.deadlines, slot, generation);
        }
    }

    // ---------------------------------------------------------------- timers

    fn expire(&mut self, now: Instant) {
        while let Some((at, slot, generation)) = self.deadlines.pop_due(now) {
            if generation & token::LINK != 0 {
                self.link_timeout(slot, generation & !token::LINK, at, now);
                continue;
            }
            let Some(conn) = self.slab.get_mut(slot, generation) else {
                continue;
            };
            if conn.session.next_deadline() != Some(at) {
                continue; // stale entry: the deadline moved
            }
            conn.deadline = None;
            conn.session.handle_timeout(now);
            // A timeout may queue an error to flush.
            self.settle(slot, generation);
        }
        let live = self.slab.len().saturating_add(self.links.len()).max(16);
        if self.deadlines.len() > live.saturating_mul(4) {
            let slab = &self.slab;
            let links = &self.links;
            self.deadlines.retain(|at, s, g| {
                if g & token::LINK != 0 {
                    links
                        .get(s, g & !token::LINK)
                        .is_some_and(|l| l.deadline() == Some(at))
                } else {
                    slab.get(s, g).is_some_and(|c| c.deadline == Some(at))
                }
            });
        }
    }

    fn free_closed(&mut self, now: Instant) {
        for slot in std::mem::take(&mut self.closing) {
            let generation = self.slab.generation(slot);
            let Some(mut conn) = self.slab.remove(slot) else {
                continue;
            };
            if self.settings.pool.is_some() {
                self.client_gone(&conn, (slot, generation), now);
            }
            let registry = self.poll.registry();
            conn.client.send_close_notify(&mut conn.client_ready);
            let _ = registry.deregister(conn.client.stream_mut());
            if let Some(mut u) = conn.server.take() {
                let _ = registry.deregister(u.transport.stream_mut());
            }
            cancel::drop_socket(&mut conn, registry);
            conn.session.release_all_buffers(&mut self.pool);
            self.shared.active_clients.fetch_sub(1, Ordering::Relaxed);
            stats::dec(&STATS.connections_active);
            let (reason, detail) = conn
                .session
                .closed()
                .map(|(r, d)| (r, d.to_string()))
                .unwrap_or((CloseReason::IoError, String::new()));
            match reason {
                CloseReason::ClientProtocol | CloseReason::ServerProtocol => {
                    stats::inc(&STATS.protocol_errors)
                }
                CloseReason::HandshakeTimeout => stats::inc(&STATS.handshake_timeouts),
                CloseReason::CancelForwarded => stats::inc(&STATS.cancels_forwarded),
                _ => {}
            }
            let info = &conn.session.info;
            info!(
                "conn_close",
                conn = conn.id,
                peer = conn.peer,
                user = Bytes(info.role.as_bytes()),
                db = Bytes(info.database.as_bytes()),
                tenant = Bytes(info.tenant.as_bytes()),
                reason = reason.as_str(),
                detail = Bytes(detail.as_bytes()),
                duration_ms = now_ms_since(conn.opened)
            );
        }
    }
}

fn now_ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

/// Registers a client socket under its connection's token (both
/// directions, edge-triggered); on failure the session is aborted and false
/// returned (the caller closes the slot).
fn register_client(registry: &Registry, conn: &mut Conn, slot: usize, generation: u64) -> bool {
    match registry.register(
        conn.client.stream_mut(),
        token::encode(slot, generation, Side::Client),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        Ok(()) => true,
        Err(e) => {
            conn.session
                .abort(CloseReason::IoError, format!("register: {e}"));
            false
        }
    }
}

impl Worker {
    /// After the session changed outside an I/O event (a timer, an admin
    /// command): closed → freed at the end of the batch; else driven again
    /// (it may have something to flush) with its deadline updated.
    fn settle(&mut self, slot: usize, generation: u64) {
        let Some(conn) = self.slab.get_mut(slot, generation) else {
            return;
        };
        if conn.session.closed().is_some() {
            self.closing.push(slot);
            return;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push((slot, generation));
        }
        sync_deadline(conn, &mut self.deadlines, slot, generation);
    }
}

fn sync_deadline(conn: &mut Conn, deadlines: &mut Deadlines, slot: usize, generation: u64) {
    let want = conn.session.next_deadline();
    if want != conn.deadline {
        if let Some(at) = want {
            deadlines.push(at, slot, generation);
        }
        conn.deadline = want;
    }
}

/// Random bytes for a session's upstream SCRAM nonce, from the TLS provider's
/// CSPRNG (no `rand` crate). A failure yields zeros only if the OS RNG fails,
/// in which case TLS itself cannot work either.
fn fresh_nonce() -> [u8; crate::conn::SCRAM_NONCE_LEN] {
    let mut n = [0u8; crate::conn::SCRAM_NONCE_LEN];
    let _ = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut n);
    n
}

/// Wraps `client` in a rustls server connection with the current (reloadable)
/// certificate; `prefix` is a ClientHello already read (direct TLS).
fn start_server_tls(
    settings: &WorkerSettings,
    client: &mut Transport,
    prefix: &[u8],
) -> Result<(), String> {
    let Some(slot) = settings.tls_server.as_ref() else {
        return Err("TLS is not configured".to_string());
    };
    let config = match slot.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    match rustls::ServerConnection::new(config) {
        Ok(c) => client.upgrade(rustls::Connection::Server(c), prefix),
        Err(e) => Err(format!("TLS: {e}")),
    }
}

/// Drives one connection. Returns false when the budget ran out with work left.
#[allow(clippy::too_many_arguments)]
fn drive(
    conn: &mut Conn,
    registry: &Registry,
    pool: &mut BufPool,
    settings: &WorkerSettings,
    reqs: &mut Vec<PoolReq>,
    slot: usize,
    generation: u64,
    now: Instant,
) -> bool {
    let upstream = &settings.upstream;
    for _ in 0..DRIVE_BUDGET {
        if conn.session.closed().is_some() {
            return true;
        }
        let mut progress = false;

        while let Some(action) = conn.session.poll_action() {
            progress = true;
            match action {
                Action::ConnectUpstream => {
                    if let Some(rt) = settings.pool.as_ref()
                        && let Some((pid, key)) = conn.session.cancel_key().cloned()
                        && crate::pool::cancel::is_proxy_pid(pid)
                    {
                        // A pooled client's key: cancel what its server runs
                        // now; nothing when it holds none (or the key is wrong).
                        match rt.cancel.lookup(pid, &key) {
                            Some((bpid, bkey)) => {
                                debug!("cancel_mapped", conn = conn.id, pid = pid, backend = bpid);
                                conn.session.retarget_cancel(bpid, &bkey)
                            }
                            None => {
                                conn.session.abort(
                                    CloseReason::CancelForwarded,
                                    "no server to cancel".into(),
                                );
                                continue;
                            }
                        }
                    }
                    start_connect(conn, registry, upstream, 0, slot, generation, now);
                }
                Action::SessionStarted => {
                    stats::inc(&STATS.sessions_started);
                    stats::LATENCY
                        .session_start
                        .observe(now.saturating_duration_since(conn.opened));
                    let info = &conn.session.info;
                    info!(
                        "session_start",
                        conn = conn.id,
                        peer = conn.peer,
                        user = Bytes(info.role.as_bytes()),
                        db = Bytes(info.database.as_bytes()),
                        tenant = Bytes(info.tenant.as_bytes()),
                        bypass = info.bypass,
                        client_tls = conn.client.is_tls(),
                        server_tls = conn.server.as_ref().is_some_and(|u| u.transport.is_tls())
                    );
                    if info.resolver_hits > 0 || info.resolver_queries > 0 {
                        debug!(
                            "resolvers_done",
                            conn = conn.id,
                            cache_hits = info.resolver_hits,
                            queries = info.resolver_queries
                        );
                    }
                }
                Action::StartClientTls { direct } => conn.tls_upgrade = Some(direct),
                Action::StartServerTls => start_upstream_tls(conn, settings, now),
                Action::Checkout => {
                    conn.checkout_at = Some(now);
                    reqs.push(PoolReq::Checkout((slot, generation)));
                }
                Action::ReleaseServer => reqs.push(PoolReq::Release((slot, generation))),
                Action::ReturnServer => reqs.push(PoolReq::Return((slot, generation))),
                Action::SendCancel(call) => {
                    info!(
                        "query_timeout",
                        conn = conn.id,
                        tenant = Bytes(conn.session.info.tenant.as_bytes())
                    );
                    cancel::start(conn, registry, settings, call, slot, generation, now);
                }
            }
        }

        // The proxy's own cancel connection (query_timeout).
        if cancel::drive(conn, registry, settings, slot, generation, now) {
            progress = true;
        }

        // Client TLS upgrade, once `S` has left in plaintext.
        if let Some(direct) = conn.tls_upgrade
            && conn.session.client_output().0.is_empty()
        {
            conn.tls_upgrade = None;
            let prefix = if direct {
                conn.session.take_client_tls_prefix()
            } else {
                Vec::new()
            };
            match start_server_tls(settings, &mut conn.client, &prefix) {
                Ok(()) => {
                    conn.alpn_required = direct;
                    conn.session.handle_client_tls_started(fresh_nonce());
                }
                Err(e) => {
                    conn.session.abort(CloseReason::TlsFailed, e);
                    return true;
                }
            }
            progress = true;
        }

        // Upstream connect completion.
        if conn.session.server_connecting()
            && let Some(u) = conn.server.as_mut()
            && u.ready.write
        {
            let stream = u.transport.stream();
            match stream.take_error() {
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => {
                        let _ = stream.set_nodelay(true);
                        conn.session.handle_server_connected(now);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        u.ready.write = false; // spurious wakeup, still connecting
                    }
                    Err(e) => {
                        let next = u.addr_idx + 1;
                        retry_or_fail(conn, registry, upstream, next, e, slot, generation, now);
                        progress = true;
                    }
                },
                Ok(Some(e)) | Err(e) => {
                    let next = u.addr_idx + 1;
                    retry_or_fail(conn, registry, upstream, next, e, slot, generation, now);
                    progress = true;
                }
            }
        }

        // Client → ring (also drives the client's TLS handshake).
        if conn.client_ready.read && (conn.session.wants_client_read() || conn.client.handshaking())
        {
            let buf = conn.session.client_read_buf(pool);
            match conn.client.read(buf, &mut conn.client_ready) {
                Io::Progress(0) | Io::WouldBlock => {}
                Io::Progress(n) => {
                    conn.session.handle_client_read(n, now);
                    progress = true;
                }
                Io::Eof => {
                    conn.session.handle_client_eof(now);
                    progress = true;
                }
                Io::Failed(e) => {
                    let reason = if conn.client.handshaking() {
                        CloseReason::TlsFailed
                    } else {
                        CloseReason::IoError
                    };
                    conn.session.abort(reason, format!("client read: {e}"));
                    return true;
                }
            }
        }
        if conn.alpn_required && !conn.client.handshaking() {
            conn.alpn_required = false;
            if conn.client.alpn() != Some(b"postgresql".as_slice()) {
                conn.session.abort(
                    CloseReason::TlsFailed,
                    "direct TLS without ALPN postgresql".to_string(),
                );
                return true;
            }
        }

        // Server → ring (also drives the upstream TLS handshake).
        if !conn.session.server_connecting()
            && let Some(u) = conn.server.as_mut()
            && u.ready.read
            && (conn.session.wants_server_read() || u.transport.handshaking())
        {
            let buf = conn.session.server_read_buf(pool);
            match u.transport.read(buf, &mut u.ready) {
                Io::Progress(0) | Io::WouldBlock => {}
                Io::Progress(n) => {
                    conn.session.handle_server_read(n, now);
                    progress = true;
                }
                Io::Eof => {
                    conn.session.handle_server_eof(now);
                    progress = true;
                }
                Io::Failed(e) if u.tls_pending => {
                    u.tls_pending = false;
                    conn.session.handle_server_tls_failed(&e, now);
                    progress = true;
                }
                Io::Failed(e) => {
                    // ECONNRESET from the backend: deliver what we have, then close.
                    debug!("server_read_error", conn = conn.id, error = e);
                    conn.session.handle_server_eof(now);
                    progress = true;
                }
            }
        }

        // Pending TLS records (handshake messages, alerts) on either side.
        if conn.client_ready.write && conn.client.wants_flush() {
            if let Io::Failed(e) = conn.client.flush(&mut conn.client_ready) {
                conn.session
                    .abort(CloseReason::IoError, format!("client write: {e}"));
                return true;
            }
            progress = true;
        }
        if let Some(u) = conn.server.as_mut()
            && !conn.session.server_connecting()
            && u.ready.write
            && u.transport.wants_flush()
        {
            match u.transport.flush(&mut u.ready) {
                Io::Failed(e) if u.tls_pending => {
                    u.tls_pending = false;
                    conn.session.handle_server_tls_failed(&e, now);
                }
                Io::Failed(e) => conn
                    .session
                    .abort(CloseReason::IoError, format!("server write: {e}")),
                _ => {}
            }
            progress = true;
        }
        if let Some(u) = conn.server.as_mut()
            && u.tls_pending
            && !u.transport.handshaking()
        {
            u.tls_pending = false;
            conn.session.handle_server_tls_ready(now);
            progress = true;
        }

        // Ring/queue → server.
        if let Some(u) = conn.server.as_mut()
            && u.ready.write
            && !u.tls_pending
        {
            let (a, b) = conn.session.server_output();
            if !a.is_empty() {
                match u.transport.write(a, b, &mut u.ready) {
                    Io::Progress(n) => {
                        conn.session.handle_server_written(n, pool, now);
                        progress = true;
                    }
                    Io::WouldBlock => {}
                    Io::Eof | Io::Failed(_) => {
                        conn.session
                            .abort(CloseReason::IoError, "server write failed".into());
                        return true;
                    }
                }
            }
        }

        // Ring/queue → client.
        if conn.client_ready.write {
            let (a, b) = conn.session.client_output();
            if !a.is_empty() {
                match conn.client.write(a, b, &mut conn.client_ready) {
                    Io::Progress(n) => {
                        conn.session.handle_client_written(n, pool, now);
                        progress = true;
                    }
                    Io::WouldBlock => {}
                    Io::Eof | Io::Failed(_) => {
                        conn.session
                            .abort(CloseReason::IoError, "client write failed".into());
                        return true;
                    }
                }
            }
        }

        // A close cannot flush an error through an unfinished TLS handshake.
        if conn.session.draining_toward() == Some(Side::Client) && conn.client.handshaking() {
            conn.session.abort(
                CloseReason::HandshakeTimeout,
                "closed during the TLS handshake".to_string(),
            );
            return true;
        }

        if !progress {
            conn.session.release_idle_buffers(pool);
            return true;
        }
    }
    false
}

fn start_upstream_tls(conn: &mut Conn, settings: &WorkerSettings, now: Instant) {
    let Some(u) = conn.server.as_mut() else {
        return;
    };
    match upgrade_upstream(&mut u.transport, settings) {
        Ok(()) => u.tls_pending = true,
        Err(e) => conn.session.handle_server_tls_failed(&e, now),
    }
}

/// Starts TLS toward the upstream on `t` (a tenant's server, a pooled link
/// or the proxy's own cancel connection): `Err` says why it cannot.
pub(super) fn upgrade_upstream(t: &mut Transport, settings: &WorkerSettings) -> Result<(), String> {
    let (Some(cfg), Some(name)) = (
        settings.tls_client.as_ref(),
        settings.upstream_name.as_ref(),
    ) else {
        return Err("upstream TLS is not configured".to_string());
    };
    let c = rustls::ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
    t.upgrade(rustls::Connection::Client(c), &[])
}

/// A non-blocking connect on `t`: Ok(true) connected, Ok(false) still
/// connecting, Err failed.
pub(super) fn connect_result(t: &Transport) -> io::Result<bool> {
    let stream = t.stream();
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
fn retry_or_fail(
    conn: &mut Conn,
    registry: &Registry,
    upstream: &[SocketAddr],
    next: usize,
    err: io::Error,
    slot: usize,
    generation: u64,
    now: Instant,
) {
    if let Some(mut u) = conn.server.take() {
        let _ = registry.deregister(u.transport.stream_mut());
    }
    if next < upstream.len() {
        start_connect(conn, registry, upstream, next, slot, generation, now);
    } else {
        conn.session
            .handle_server_connect_failed(&err.to_string(), now);
    }
}

fn start_connect(
    conn: &mut Conn,
    registry: &Registry,
    upstream: &[SocketAddr],
    idx: usize,
    slot: usize,
    generation: u64,
    now: Instant,
) {
    let Some(addr) = upstream.get(idx).copied() else {
        conn.session
            .handle_server_connect_failed("no upstream address", now);
        return;
    };
    match TcpStream::connect(addr) {
        Ok(mut stream) => {
            if let Err(e) = registry.register(
                &mut stream,
                token::encode(slot, generation, Side::Server),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                conn.session
                    .handle_server_connect_failed(&e.to_string(), now);
                return;
            }
            debug!("upstream_connecting", conn = conn.id, addr = addr);
            conn.server = Some(Upstream {
                transport: Transport::plain(stream),
                ready: Ready::default(),
                tls_pending: false,
                addr_idx: idx,
            });
        }
        Err(e) => {
            if idx + 1 < upstream.len() {
                start_connect(conn, registry, upstream, idx + 1, slot, generation, now);
            } else {
                conn.session
                    .handle_server_connect_failed(&e.to_string(), now);
            }
        }
    }
}
