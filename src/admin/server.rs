//! The admin thread: a small mio loop (listener, waker, at most [`MAX_CONNS`] connections)
//! and the cached upstream check of `/health`. The only socket code of `admin`.
//!
//! A connection goes `Reading` (until a whole request is parsed, or refused) → `Writing` (the
//! encoded response) → `Lingering` (write side shut, the client's input read and discarded
//! until it closes, for at most [`LINGER`] and [`MAX_LINGER_BYTES`], so that closing with
//! unread input does not reset the connection before the client has read a 413) → closed.
//! Each phase has a deadline; a request not complete after [`REQUEST_TIMEOUT`] gets 408 (or
//! is just closed if nothing arrived). When all slots are taken, a lingering connection, or
//! else the oldest one still reading, is closed to make room (one being answered never is),
//! so idle or slow clients cannot lock the API. Sockets are registered
//! once, edge-triggered, for both directions; each phase does its I/O until `WouldBlock`.
//!
//! The `/health` check connects (TCP only, no PostgreSQL login) to the upstream addresses,
//! at most every [`HEALTH_CACHE`] and for at most [`HEALTH_CONNECT_TIMEOUT`] in total. The
//! thread also blocks in the `POST` actions: a reload reads its files, a command waits for the
//! workers' answers (at most [`crate::reactor::control::REPLY_TIMEOUT`]). Other admin requests
//! wait meanwhile (each connection's deadlines are taken from a fresh clock after it); workers
//! never wait for this thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::Action;
use super::http::{self, HttpError, JSON, Method, Request, Response};
use super::json::Json;
use super::render::View;
use super::{AdminConfig, AdminSources, Backend, TokenDigest, route, token_digest};
use crate::stats::STATS;
use crate::{debug, error, info, warn};

/// Most connections served at once; a new one closes the oldest when all are taken.
pub const MAX_CONNS: usize = 32;
/// Time from accept until the whole request (head and body) has arrived.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to write the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the client's leftover input is drained after the response, before closing.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most leftover bytes drained after the response.
pub const MAX_LINGER_BYTES: usize = 64 * 1024;
/// Connections accepted per loop iteration (then the next iteration continues).
const ACCEPT_BUDGET: usize = 64;
/// Pause before accepting again after an accept error (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long an upstream check result is reused.
pub const HEALTH_CACHE: Duration = Duration::from_secs(2);
/// Bound on one upstream check (all addresses together).
pub const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// The running admin thread.
pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread (open connections are closed) and waits for it (at most the time of
    /// an upstream check in progress).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `cfg.listen:cfg.port` (at once, so a bad address is a start-up error) and starts the
/// `pgvpd-admin` thread.
pub fn spawn(cfg: AdminConfig, sources: AdminSources) -> io::Result<AdminHandle> {
    let std_listener = StdListener::bind((cfg.listen.as_str(), cfg.port)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "admin API: cannot listen on {}:{}: {e}",
                cfg.listen, cfg.port
            ),
        )
    })?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let token = cfg.token.as_deref().map(token_digest);
    let server = Server {
        poll,
        listener,
        conns: (0..MAX_CONNS).map(|_| None).collect(),
        stop: Arc::clone(&stop),
        token,
        live: Live {
            health: Health::new(Arc::clone(&sources.upstream)),
            sources,
        },
        accept_again: None,
        accept_failing: false,
    };
    let thread = std::thread::Builder::new()
        .name("pgvpd-admin".into())
        .spawn(move || server.run())?;
    info!(
        "admin_listening",
        addr = addr,
        auth = if cfg.token.is_some() {
            "bearer-token"
        } else {
            "none"
        }
    );
    if cfg.token.is_none() && !addr.ip().is_loopback() {
        warn!(
            "admin_api_unauthenticated",
            addr = addr,
            hint = "anyone who reaches this address reads the metrics; set admin_token"
        );
    }
    Ok(AdminHandle {
        addr,
        stop,
        waker,
        thread: Some(thread),
    })
}

/// The cached upstream reachability check.
struct Health {
    upstream: Arc<[SocketAddr]>,
    last: Option<(Instant, Result<(), String>)>,
}

impl Health {
    fn new(upstream: Arc<[SocketAddr]>) -> Health {
        Health {
            upstream,
            last: None,
        }
    }

    fn check(&mut self) -> Result<(), String> {
        if let Some((at, r)) = &self.last
            && at.elapsed() < HEALTH_CACHE
        {
            return r.clone();
        }
        let r = probe(&self.upstream, HEALTH_CONNECT_TIMEOUT);
        self.last = Some((Instant::now(), r.clone()));
        r
    }
}

/// A TCP connect to the first address that accepts, within `budget` for all of them.
fn probe(addrs: &[SocketAddr], budget: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut why = String::from("no upstream address");
    for a in addrs {
        let left = budget.saturating_sub(start.elapsed());
        if left.is_zero() {
            why = format!("connect to {a}: no time left within {budget:?}");
            break;
        }
        match std::net::TcpStream::connect_timeout(a, left) {
            Ok(_) => return Ok(()),
            Err(e) => why = format!("connect to {a}: {e}"),
        }
    }
    Err(why)
}

/// The live sources behind routing.
struct Live {
    sources: AdminSources,
    health: Health,
}

impl Backend for Live {
    fn health(&mut self) -> Result<(), String> {
        self.health.check()
    }

    fn view(&mut self) -> View {
        let s = &self.sources;
        let session = s.shared.session();
        let rows = session
            .tenants
            .as_ref()
            .map(|t| t.snapshot(Instant::now()))
            .unwrap_or_default();
        let tracked = rows.len();
        let (tenants, tenant_other) = crate::tenant::top(rows, super::render::TOP_TENANTS);
        View {
            tenants_tracked: u64::try_from(tracked).unwrap_or(u64::MAX),
            tenants,
            tenant_other,
            session_start: crate::stats::LATENCY.session_start.snapshot(),
            checkout_wait: crate::stats::LATENCY.checkout_wait.snapshot(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: s.started.elapsed().as_secs(),
            workers: s.workers,
            pooling: s.pooling,
            buckets: if s.pooling {
                s.pools.collect()
            } else {
                Vec::new()
            },
            resolver_cache_size: session
                .resolvers
                .as_ref()
                .map(|e| u64::try_from(e.cache.len()).unwrap_or(u64::MAX)),
            paused: s.shared.paused.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn act(&mut self, action: &Action) -> Response {
        let s = &self.sources;
        let unavailable = |e: String| Response::error(503, &e);
        match action {
            Action::Reload => {
                let Some(r) = &s.reloader else {
                    return unavailable("reload is not available".into());
                };
                match r.reload("admin") {
                    Ok(d) => {
                        let list =
                            |v: &[&str]| Json::Arr(v.iter().map(|k| Json::str(*k)).collect());
                        let j = Json::obj([
                            ("status", Json::str("reloaded")),
                            ("applied", list(&d.applied)),
                            ("kept", list(&d.kept)),
                        ]);
                        Response::new(200, JSON, j.to_pretty())
                    }
                    Err(e) => Response::error(422, &format!("reload failed, nothing changed: {e}")),
                }
            }
            Action::Pause | Action::Resume => {
                let Some(c) = &s.control else {
                    return unavailable("no workers".into());
                };
                if !s.pooling {
                    return Response::error(
                        409,
                        "pause and resume need pool_mode = session or transaction",
                    );
                }
                let pause = *action == Action::Pause;
                let changed = c.set_paused(pause);
                let j = Json::obj([
                    (
                        "status",
                        Json::str(if pause { "paused" } else { "resumed" }),
                    ),
                    ("changed", Json::Bool(changed)),
                ]);
                Response::new(200, JSON, j.to_pretty())
            }
            Action::Kill(tenant) => {
                let Some(c) = &s.control else {
                    return unavailable("no workers".into());
                };
                match c.kill_tenant(tenant) {
                    Ok(n) => {
                        let j = Json::obj([
                            ("status", Json::str("killed")),
                            ("tenant", Json::str(tenant.as_str())),
                            ("sessions", Json::U64(n)),
                        ]);
                        Response::new(200, JSON, j.to_pretty())
                    }
                    Err(e) => unavailable(e),
                }
            }
        }
    }
}

enum Phase {
    Reading { buf: Vec<u8> },
    Writing { out: Vec<u8>, pos: usize },
    Lingering { drained: usize },
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
    accepted: Instant,
}

/// What a phase's I/O ended with.
enum Next {
    /// Wait for the next readiness event (or the deadline).
    Wait,
    Close,
    Enter(Phase, Duration),
}

/// Builds the response bytes for a parse result (routing, or the parse error).
type Respond<'a> = dyn FnMut(Result<Request<'_>, HttpError>) -> Vec<u8> + 'a;

impl Conn {
    /// Does I/O until it would block; `false` when the connection is done.
    fn on_ready(&mut self, now: Instant, respond: &mut Respond<'_>) -> bool {
        loop {
            let next = match &mut self.phase {
                Phase::Reading { buf } => read_request(&mut self.stream, buf, respond),
                Phase::Writing { out, pos } => write_out(&mut self.stream, out, pos),
                Phase::Lingering { drained } => drain(&mut self.stream, drained),
            };
            match next {
                Next::Wait => return true,
                Next::Close => return false,
                Next::Enter(phase, limit) => {
                    self.phase = phase;
                    self.deadline = now.checked_add(limit).unwrap_or(now);
                }
            }
        }
    }
}

fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, respond: &mut Respond<'_>) -> Next {
    let mut chunk = [0u8; 2048];
    loop {
        let room = http::MAX_REQUEST.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            // Cannot happen (the parser decides before the buffer is full); fail closed.
            let out = respond(Err(HttpError::HeadTooLarge));
            return Next::Enter(Phase::Writing { out, pos: 0 }, WRITE_TIMEOUT);
        }
        let Some(dst) = chunk.get_mut(..room) else {
            return Next::Close;
        };
        match stream.read(dst) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                match http::parse_request(buf) {
                    Ok(None) => {}
                    Ok(Some(req)) => {
                        let out = respond(Ok(req));
                        return Next::Enter(Phase::Writing { out, pos: 0 }, WRITE_TIMEOUT);
                    }
                    Err(e) => {
                        let out = respond(Err(e));
                        return Next::Enter(Phase::Writing { out, pos: 0 }, WRITE_TIMEOUT);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

fn write_out(stream: &mut TcpStream, out: &[u8], pos: &mut usize) -> Next {
    while let Some(rest) = out.get(*pos..).filter(|r| !r.is_empty()) {
        match stream.write(rest) {
            Ok(0) => return Next::Close,
            Ok(n) => *pos = pos.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    Next::Enter(Phase::Lingering { drained: 0 }, LINGER)
}

fn drain(stream: &mut TcpStream, drained: &mut usize) -> Next {
    let mut chunk = [0u8; 2048];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                *drained = drained.saturating_add(n);
                if *drained >= MAX_LINGER_BYTES {
                    return Next::Close;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    stop: Arc<AtomicBool>,
    token: Option<TokenDigest>,
    live: Live,
    /// Accept again at this time (budget spent, or after an accept error).
    accept_again: Option<Instant>,
    /// An accept error was logged and no accept succeeded since (log once).
    accept_failing: bool,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("admin_poll_failed", error = e);
                return;
            }
            let mut accept = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => accept = true,
                    // A fresh clock per connection: an answer may block (a
                    // reload, a command's wait for the workers), and the
                    // deadlines set after it must not start in the past.
                    Token(slot) => self.drive(slot, Instant::now()),
                }
            }
            let now = Instant::now();
            // After an accept error the pause holds even if clients keep
            // arriving; a spent budget (accept_again = then) resumes at once.
            match self.accept_again {
                Some(t) if t <= now => self.accept(now),
                None if accept => self.accept(now),
                _ => {}
            }
            self.expire(Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.deadline)
            .chain(self.accept_again)
            .min()
    }

    fn drive(&mut self, slot: usize, now: Instant) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let (token, live) = (self.token, &mut self.live);
        let mut respond =
            |parsed: Result<Request<'_>, HttpError>| answer(parsed, token.as_ref(), live);
        if conn.on_ready(now, &mut respond) {
            if let Some(s) = self.conns.get_mut(slot) {
                *s = Some(conn);
            }
        } else {
            self.close(conn);
        }
    }

    fn close(&mut self, mut conn: Conn) {
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }

    fn accept(&mut self, now: Instant) {
        self.accept_again = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_failing = false;
                    self.insert(stream, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ECONNABORTED and friends: that one connection is gone.
                Err(e) if !crate::sys::is_fd_exhaustion(&e) => {}
                Err(e) => {
                    if !self.accept_failing {
                        warn!("admin_accept_failed", error = e, retry_ms = 100);
                        self.accept_failing = true;
                    }
                    self.accept_again = now.checked_add(ACCEPT_RETRY);
                    return;
                }
            }
        }
        // Budget spent: more may be queued, and the listener is edge-triggered.
        self.accept_again = Some(now);
    }

    fn insert(&mut self, mut stream: TcpStream, now: Instant) {
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // All taken: close a lingering connection (already
                // answered) or else the oldest one still reading; one being
                // answered is never cut.
                let oldest = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        let c = c.as_ref()?;
                        let rank = match c.phase {
                            Phase::Lingering { .. } => 0,
                            Phase::Reading { .. } => 1,
                            Phase::Writing { .. } => return None,
                        };
                        Some((rank, c.accepted, i))
                    })
                    .min()
                    .map(|(_, _, i)| i);
                let Some(i) = oldest else { return };
                if let Some(old) = self.conns.get_mut(i).and_then(Option::take) {
                    debug!("admin_conn_evicted", reason = "max_connections");
                    self.close(old);
                }
                i
            }
        };
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return;
        }
        if let Some(s) = self.conns.get_mut(slot) {
            *s = Some(Conn {
                stream,
                phase: Phase::Reading {
                    buf: Vec::with_capacity(1024),
                },
                deadline: now.checked_add(REQUEST_TIMEOUT).unwrap_or(now),
                accepted: now,
            });
        }
    }

    /// Past its deadline: a partial request gets 408, everything else is closed.
    fn expire(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let due = self
                .conns
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.deadline <= now);
            if !due {
                continue;
            }
            let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            let partial = matches!(&conn.phase, Phase::Reading { buf } if !buf.is_empty());
            if !partial {
                self.close(conn);
                continue;
            }
            let out = http::encode(&Response::error(408, "request timeout"), false);
            conn.phase = Phase::Writing { out, pos: 0 };
            conn.deadline = now.checked_add(LINGER).unwrap_or(now);
            let mut never = |_: Result<Request<'_>, HttpError>| Vec::new();
            if conn.on_ready(now, &mut never) {
                if let Some(s) = self.conns.get_mut(slot) {
                    *s = Some(conn);
                }
            } else {
                self.close(conn);
            }
        }
    }
}

/// Routes a parsed request (a panic in routing becomes a 500) or answers a parse error.
fn answer(
    parsed: Result<Request<'_>, HttpError>,
    token: Option<&TokenDigest>,
    live: &mut Live,
) -> Vec<u8> {
    match parsed {
        Ok(req) => {
            let head_only = req.method == Method::Head;
            let r = catch_unwind(AssertUnwindSafe(|| route(&req, token, &STATS, live)))
                .unwrap_or_else(|_| {
                    error!("admin_request_panicked", path = req.path);
                    Response::error(500, "internal error")
                });
            debug!("admin_request", path = req.path, status = r.status);
            http::encode(&r, head_only)
        }
        Err(e) => {
            debug!(
                "admin_request_refused",
                status = e.status(),
                reason = e.message()
            );
            http::encode(&Response::error(e.status(), e.message()), false)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_the_reason() {
        // A port nobody listens on: bind, note the port, close.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let closed: SocketAddr = ([127, 0, 0, 1], port).into();
        let e = probe(&[closed], HEALTH_CONNECT_TIMEOUT).unwrap_err();
        assert!(e.starts_with(&format!("connect to {closed}: ")), "{e}");
        assert_eq!(
            probe(&[], HEALTH_CONNECT_TIMEOUT).unwrap_err(),
            "no upstream address"
        );
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap();
        assert_eq!(probe(&[closed, open], HEALTH_CONNECT_TIMEOUT), Ok(()));
        assert!(
            probe(&[open], Duration::ZERO)
                .unwrap_err()
                .contains("no time left")
        );
    }
}
