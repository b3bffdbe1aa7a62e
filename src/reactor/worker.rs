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

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Waker};

use super::deadlines::Deadlines;
use super::slab::Slab;
use super::token::{self, LISTENER, WAKER};
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
/// Longest poll sleep (so shutdown and clock drift are noticed).
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Default)]
struct Ready {
    read: bool,
    write: bool,
    /// The peer hung up (RDHUP/HUP/ERR seen). Its edge has fired already, so
    /// a short read must not clear `read`: keep reading until EOF.
    hup: bool,
}

struct Upstream {
    stream: TcpStream,
    ready: Ready,
    /// Index into the upstream address list of the attempt in flight.
    addr_idx: usize,
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    opened: Instant,
    session: Session,
    client: TcpStream,
    client_ready: Ready,
    server: Option<Upstream>,
    dirty: bool,
    /// The deadline last pushed to the heap for this connection.
    deadline: Option<Instant>,
}

pub(super) struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    listener_ready: bool,
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
}

impl Worker {
    pub(super) fn new(
        id: usize,
        mut listener: TcpListener,
        settings: WorkerSettings,
        shared: Arc<Shared>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok((
            Worker {
                id,
                poll,
                listener: Some(listener),
                listener_ready: true,
                accept_paused_until: None,
                slab: Slab::default(),
                dirty: Vec::new(),
                closing: Vec::new(),
                deadlines: Deadlines::default(),
                pool: BufPool::new(POOL_KEEP),
                settings,
                shared,
                next_conn: 0,
                shutdown_deadline: None,
            },
            waker,
        ))
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if self.shared.shutdown.load(Ordering::Relaxed) && self.shutdown_deadline.is_none() {
                self.begin_shutdown(now);
            }
            if let Some(dl) = self.shutdown_deadline {
                if self.slab.is_empty() {
                    break;
                }
                if now >= dl {
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
                    WAKER => {}
                    t => {
                        let (slot, generation, side) = token::decode(t);
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
            self.drive_dirty(now);
            self.accept(now);
            self.expire(now);
            self.free_closed();
        }
        debug!("worker_exit", worker = self.id);
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.dirty.is_empty() {
            return Duration::ZERO;
        }
        let accept_now =
            self.listener.is_some() && self.listener_ready && self.accept_paused_until.is_none();
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
        self.shutdown_deadline = Some(now + self.settings.shutdown_timeout);
    }

    fn close_all(&mut self, reason: CloseReason) {
        for (slot, generation) in self.slab.occupied() {
            if let Some(conn) = self.slab.get_mut(slot, generation) {
                conn.session.abort(reason, String::new());
            }
            self.closing.push(slot);
        }
        self.free_closed();
    }

    // ------------------------------------------------------------------ accept

    fn accept(&mut self, now: Instant) {
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for _ in 0..ACCEPT_BUDGET {
            if !self.listener_ready {
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if crate::sys::is_fd_exhaustion(&e) => {
                    // Keep listener_ready: edge triggering will not fire again.
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

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
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
        let conn = Conn {
            id,
            peer,
            opened: now,
            session: Session::new(self.settings.session.clone(), now),
            client: stream,
            client_ready: Ready::default(),
            server: None,
            dirty: false,
            deadline: None,
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
        if let Err(e) = registry.register(
            &mut conn.client,
            token::encode(slot, generation, Side::Client),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            conn.session
                .abort(CloseReason::IoError, format!("register: {e}"));
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
            let upstream = &self.settings.upstream;
            let pool = &mut self.pool;
            let result = catch_unwind(AssertUnwindSafe(|| {
                drive(conn, registry, pool, upstream, slot, generation, now)
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
            let Some(conn) = self.slab.get_mut(slot, generation) else {
                continue;
            };
            if conn.session.next_deadline() != Some(at) {
                continue; // stale entry: the deadline moved
            }
            conn.deadline = None;
            conn.session.handle_timeout(now);
            if conn.session.closed().is_some() {
                self.closing.push(slot);
                continue;
            }
            // A timeout may queue an error to flush.
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push((slot, generation));
            }
            sync_deadline(conn, &mut self.deadlines, slot, generation);
        }
        let live = self.slab.len().max(16);
        if self.deadlines.len() > live.saturating_mul(4) {
            let slab = &self.slab;
            self.deadlines
                .retain(|at, s, g| slab.get(s, g).is_some_and(|c| c.deadline == Some(at)));
        }
    }

    fn free_closed(&mut self) {
        for slot in std::mem::take(&mut self.closing) {
            let Some(mut conn) = self.slab.remove(slot) else {
                continue;
            };
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut conn.client);
            if let Some(mut u) = conn.server.take() {
                let _ = registry.deregister(&mut u.stream);
            }
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

fn sync_deadline(conn: &mut Conn, deadlines: &mut Deadlines, slot: usize, generation: u64) {
    let want = conn.session.next_deadline();
    if want != conn.deadline {
        if let Some(at) = want {
            deadlines.push(at, slot, generation);
        }
        conn.deadline = want;
    }
}

/// Drives one connection. Returns false when the budget ran out with work left.
fn drive(
    conn: &mut Conn,
    registry: &Registry,
    pool: &mut BufPool,
    upstream: &[SocketAddr],
    slot: usize,
    generation: u64,
    now: Instant,
) -> bool {
    for _ in 0..DRIVE_BUDGET {
        if conn.session.closed().is_some() {
            return true;
        }
        let mut progress = false;

        // Upstream connect requested?
        while let Some(action) = conn.session.poll_action() {
            match action {
                Action::ConnectUpstream => {
                    start_connect(conn, registry, upstream, 0, slot, generation, now);
                    progress = true;
                }
                Action::SessionStarted => {
                    stats::inc(&STATS.sessions_started);
                    let info = &conn.session.info;
                    info!(
                        "session_start",
                        conn = conn.id,
                        peer = conn.peer,
                        user = Bytes(info.role.as_bytes()),
                        db = Bytes(info.database.as_bytes()),
                        tenant = Bytes(info.tenant.as_bytes()),
                        bypass = info.bypass
                    );
                }
            }
        }

        // Upstream connect completion.
        if conn.session.server_connecting()
            && let Some(u) = conn.server.as_mut()
            && u.ready.write
        {
            match u.stream.take_error() {
                Ok(None) => match u.stream.peer_addr() {
                    Ok(_) => {
                        let _ = u.stream.set_nodelay(true);
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

        // Client → ring.
        if conn.client_ready.read && conn.session.wants_client_read() {
            let buf = conn.session.client_read_buf(pool);
            let want = buf.len();
            match conn.client.read(buf) {
                Ok(0) => {
                    conn.client_ready.read = false;
                    conn.session.handle_client_eof(now);
                    progress = true;
                }
                Ok(n) => {
                    // A short read drained the socket: with edge triggering the next
                    // arrival raises a new event, so skip the EAGAIN read.
                    if n < want && !conn.client_ready.hup {
                        conn.client_ready.read = false;
                    }
                    conn.session.handle_client_read(n, now);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.client_ready.read = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(e) => {
                    conn.session
                        .abort(CloseReason::IoError, format!("client read: {e}"));
                    return true;
                }
            }
        }

        // Server → ring.
        if !conn.session.server_connecting()
            && let Some(u) = conn.server.as_mut()
            && u.ready.read
            && conn.session.wants_server_read()
        {
            let buf = conn.session.server_read_buf(pool);
            let want = buf.len();
            match u.stream.read(buf) {
                Ok(0) => {
                    u.ready.read = false;
                    conn.session.handle_server_eof(now);
                    progress = true;
                }
                Ok(n) => {
                    if n < want && !u.ready.hup {
                        u.ready.read = false;
                    }
                    conn.session.handle_server_read(n, now);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.ready.read = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(e) => {
                    // ECONNRESET from the backend: deliver what we have, then close.
                    u.ready.read = false;
                    debug!("server_read_error", conn = conn.id, error = e);
                    conn.session.handle_server_eof(now);
                    progress = true;
                }
            }
        }

        // Ring/queue → server.
        if let Some(u) = conn.server.as_mut()
            && u.ready.write
        {
            let (a, b) = conn.session.server_output();
            if !a.is_empty() {
                let bufs = [IoSlice::new(a), IoSlice::new(b)];
                let total = a.len() + b.len();
                let res = if b.is_empty() {
                    u.stream.write(a)
                } else {
                    u.stream.write_vectored(&bufs)
                };
                match res {
                    Ok(0) => {
                        conn.session
                            .abort(CloseReason::IoError, "server write returned 0".into());
                        return true;
                    }
                    Ok(n) => {
                        // A short write filled the socket buffer: wait for the edge.
                        if n < total {
                            u.ready.write = false;
                        }
                        conn.session.handle_server_written(n, pool, now);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => u.ready.write = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => {
                        conn.session
                            .abort(CloseReason::IoError, format!("server write: {e}"));
                        return true;
                    }
                }
            }
        }

        // Ring/queue → client.
        if conn.client_ready.write {
            let (a, b) = conn.session.client_output();
            if !a.is_empty() {
                let bufs = [IoSlice::new(a), IoSlice::new(b)];
                let total = a.len() + b.len();
                let res = if b.is_empty() {
                    conn.client.write(a)
                } else {
                    conn.client.write_vectored(&bufs)
                };
                match res {
                    Ok(0) => {
                        conn.session
                            .abort(CloseReason::IoError, "client write returned 0".into());
                        return true;
                    }
                    Ok(n) => {
                        if n < total {
                            conn.client_ready.write = false;
                        }
                        conn.session.handle_client_written(n, pool, now);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.client_ready.write = false
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => {
                        conn.session
                            .abort(CloseReason::IoError, format!("client write: {e}"));
                        return true;
                    }
                }
            }
        }

        if !progress {
            conn.session.release_idle_buffers(pool);
            return true;
        }
    }
    false
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
        let _ = registry.deregister(&mut u.stream);
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
                stream,
                ready: Ready::default(),
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
