//! The four session timeouts of a tenant session, in every mode
//! (passthrough, session and transaction pooling). One meaning each:
//!
//! | timer | armed while | on expiry |
//! |---|---|---|
//! | `ClientIdle` | idle outside a transaction | FATAL 57P05, the session ends |
//! | `IdleTransaction` | idle inside a transaction | FATAL 25P03, the session ends |
//! | `Query` | a request awaits its ReadyForQuery | a CancelRequest; the client gets 57014 and goes on |
//! | `QueryCancel` | that cancel is unresolved | FATAL 57014, the server is closed (fail closed) |
//! | `Lifetime` | from accept | ends the session (FATAL 57P01) at its next idle moment outside a transaction |
//!
//! "Idle" and "running" come from the protocol tracker (`ServerTracker`):
//! the pooled relay's own, or in passthrough one the watch runs over the
//! relayed stream. Passthrough without any timeout stays a raw copy (no
//! [`Watch`] at all); with one, every relayed message is framed by the
//! tracker's header scanners, as in pool mode. Superuser-bypass sessions
//! get no watch: they are relayed unparsed, and an idle timer measured on
//! bytes would also hit a long query (which sends nothing), so it would not
//! mean "idle".
//!
//! - **Idle** (last ReadyForQuery `I`, nothing owed): measured from the
//!   later of the last client byte and the last ReadyForQuery. Transaction
//!   mode between transactions (`TxIdle`) is idle by construction.
//! - **Idle in transaction** (last ReadyForQuery `T`/`E`, or an extended
//!   query cycle or COPY left open without its Sync, which keeps an implicit
//!   transaction open on the server): measured the same way (for an open
//!   cycle, also from the last server byte).
//! - **Running**: a Query, Sync or FunctionCall awaits its ReadyForQuery;
//!   measured from when the oldest one became the head (read from the
//!   client, or the previous one answered). Waiting in a pool's queue is
//!   not running: `pool_checkout_timeout` bounds that.
//!
//! **The query cancel.** When `Query` fires, the session builds a
//! [`CancelCall`] with the backend's own key (passthrough: the
//! BackendKeyData seen at login; pool modes: the lent server's) and hands it
//! to the reactor (`Action::SendCancel`), which opens a connection to the
//! server like any forwarded cancel (same upstream TLS rules) and reports
//! its end (`handle_cancel_done`). PostgreSQL answers the cancelled request
//! with ErrorResponse 57014 ("canceling statement due to user request") and
//! ReadyForQuery; the session rewords that one ErrorResponse
//! ("canceling statement due to query timeout ...", still ERROR 57014) so
//! the client can tell it from its own cancel, and the session goes on.
//! The cancel is *resolved* once both the cancelled request's
//! ReadyForQuery arrived and the cancel connection ended; until then:
//! - client bytes are held (read, counted, not sent to the server);
//! - a pooled server is not returned (transaction mode) or released to the
//!   pool; a client that ends meanwhile has its server closed, not pooled.
//!
//! If it is not resolved within [`QUERY_CANCEL_GRACE`], the session fails
//! closed: FATAL 57014 to the client and the server connection is closed.
//!
//! **The late-cancel race.** The query may finish on its own just before the
//! cancel reaches the server. PostgreSQL then signals a backend that is
//! idle, which ignores it (a cancel is ignored while the backend waits for
//! a command) — unless the signal arrives after the backend has started the
//! *next* request, which it would then cancel. PostgreSQL sends the signal
//! (twice: to the backend and its process group) before it closes the
//! cancel connection, so holding the client's next bytes until that close
//! means the next request reaches the backend only after the signal was
//! sent; the window left is the kernel delivering an already-sent signal to
//! a process that is asleep waiting for input, which happens before that
//! process reads anything. That is why a pooled server is never lent to
//! another client with a cancel unresolved. A request the client had
//! already pipelined behind the timed-out one is not held back (it was
//! forwarded before the cancel) and may be the one cancelled; its 57014 is
//! then the server's own text.
//!
//! **session_lifetime** never cuts a transaction: a session past its
//! lifetime inside a transaction ends when the transaction is over, and
//! only `idle_transaction_timeout` and `query_timeout` bound how long that
//! takes. The client first gets every answer already on its way.
//!
//! Ending a pooled session (`end_pooled`) is a client exit with a FATAL:
//! the release sequence runs on the server (ROLLBACK if a transaction is
//! open, then `server_reset_query`) exactly as when a client disconnects.

use std::time::{Duration, Instant};

use super::pool::tail;
use super::{Phase, Session, SessionTimeouts, after};
use crate::conn::cancel::CancelCall;
use crate::conn::timers::TimerKind;
use crate::conn::tracker::ServerTracker;
use crate::conn::{Action, CloseReason, Side};
use crate::protocol::{FramePhase, ProtoError, backend, encode, tag};
use crate::stats::{self, STATS};

/// How long a timed-out query may take to end after the proxy's
/// CancelRequest (and the cancel connection to finish) before the session
/// is closed.
pub const QUERY_CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What the session is doing, for the timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Activity {
    /// Nothing to time: a handshake, a close, a queue wait, a stream the
    /// tracker cannot follow (dirty), a bypass session.
    Untimed,
    /// Last ReadyForQuery `I`, nothing owed.
    Idle,
    /// Last ReadyForQuery `T`/`E`, or a cycle/COPY left open; nothing owed.
    IdleInTransaction,
    /// A request awaits its ReadyForQuery.
    Running,
}

/// What the tracker says the session is doing.
pub(super) fn classify(t: &ServerTracker) -> Activity {
    if t.is_dirty() || t.terminated() {
        Activity::Untimed
    } else if t.outstanding() > 0 {
        Activity::Running
    } else if t.cycle_open() || t.tx_status() != b'I' {
        Activity::IdleInTransaction
    } else {
        Activity::Idle
    }
}

/// The deadlines of the three activity timers (`ClientIdle`,
/// `IdleTransaction`, `Query`) for a state; `None`: not armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ActivityDeadlines {
    pub client_idle: Option<Instant>,
    pub idle_transaction: Option<Instant>,
    pub query: Option<Instant>,
}

/// Pure: `idle_since` is when the client last did something (or its last
/// answer came), `query_since` when the head request became the head.
pub(super) fn activity_deadlines(
    t: &SessionTimeouts,
    act: Activity,
    idle_since: Instant,
    query_since: Option<Instant>,
    cancel_pending: bool,
) -> ActivityDeadlines {
    let mut d = ActivityDeadlines::default();
    match act {
        Activity::Untimed => {}
        Activity::Idle => d.client_idle = t.client_idle.map(|x| after(idle_since, x)),
        Activity::IdleInTransaction => {
            d.idle_transaction = t.idle_transaction.map(|x| after(idle_since, x));
        }
        Activity::Running if cancel_pending => {}
        Activity::Running => {
            let since = query_since.unwrap_or(idle_since);
            d.query = t.query.map(|x| after(since, x));
        }
    }
    d
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancel {
    None,
    /// A CancelRequest for the head request is out. `answered`: its
    /// ReadyForQuery arrived; `call_done`: the cancel connection ended.
    Pending {
        answered: bool,
        call_done: bool,
    },
}

/// The per-session state of the timeouts (only when one is configured).
#[derive(Debug)]
pub(super) struct Watch {
    /// Passthrough: the tracker that follows the relayed stream (pool modes
    /// use the relay's own).
    tracker: Option<Box<ServerTracker>>,
    /// The bytes already in the rings when relaying began were scanned.
    primed: bool,
    last_client: Instant,
    last_server: Instant,
    last_ready: Instant,
    /// When the head request awaiting a ReadyForQuery became the head.
    query_since: Option<Instant>,
    cancel: Cancel,
    /// The cancel call built for the reactor, not yet taken.
    call: Option<Box<CancelCall>>,
    /// `session_lifetime` has passed: end at the next idle moment.
    lifetime_over: bool,
    /// Server bytes that entered `s2c` (counting those there when relaying
    /// began): the stream offset of the ring's end.
    s2c_in: u64,
    /// Stream offset of an ErrorResponse to inspect before the client gets
    /// it (while a cancel is unresolved).
    stop: Option<u64>,
}

/// What one scan of server bytes showed the timeouts.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ServerSeen {
    ready: bool,
    /// Offset (from the scanned chunk's start) of the first ErrorResponse
    /// before the chunk's first ReadyForQuery.
    first_error: Option<isize>,
}

impl ServerSeen {
    /// A server message started at `at` (chunk offset; negative when its
    /// header began in an earlier chunk).
    pub(super) fn see(&mut self, t: u8, at: isize) {
        if t == tag::READY_FOR_QUERY {
            self.ready = true;
        } else if t == tag::ERROR_RESPONSE && !self.ready && self.first_error.is_none() {
            self.first_error = Some(at);
        }
    }
}

fn secs(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_secs())
}

impl Session {
    /// The tenant session started (context set, ReadyForQuery released):
    /// begin watching when a timeout is configured. `passthrough`: the
    /// watch runs its own tracker over the raw relay.
    pub(super) fn start_watch(&mut self, now: Instant, passthrough: bool) {
        let t = self.cfg.timeouts;
        if !t.any() {
            return;
        }
        self.watch = Some(Box::new(Watch {
            tracker: passthrough.then(|| Box::new(ServerTracker::new())),
            primed: false,
            last_client: now,
            last_server: now,
            last_ready: now,
            query_since: None,
            cancel: Cancel::None,
            call: None,
            lifetime_over: false,
            s2c_in: 0,
            stop: None,
        }));
        if let Some(l) = t.lifetime {
            self.timers.set(TimerKind::Lifetime, after(self.born, l));
        }
    }

    /// The tracker following this session's requests now.
    fn watch_tracker(&self) -> Option<&ServerTracker> {
        match &self.phase {
            Phase::Transparent => self.watch.as_ref()?.tracker.as_deref(),
            Phase::PoolRelay(r) if !r.ending() => Some(&r.tracker),
            _ => None,
        }
    }

    pub(super) fn activity(&self) -> Activity {
        match &self.phase {
            Phase::TxIdle => Activity::Idle,
            Phase::Transparent | Phase::PoolRelay(_) => {
                self.watch_tracker().map_or(Activity::Untimed, classify)
            }
            _ => Activity::Untimed,
        }
    }

    /// A proxy cancel is out and not resolved yet.
    pub(super) fn cancel_pending(&self) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|w| w.cancel != Cancel::None)
    }

    /// Passthrough with a watch: the tracker's request queue is full, stop
    /// reading the client (backpressure, as in pool mode).
    pub(super) fn watch_backpressure(&self) -> bool {
        matches!(self.phase, Phase::Transparent)
            && self
                .watch
                .as_ref()
                .and_then(|w| w.tracker.as_ref())
                .is_some_and(|t| t.backpressure())
    }

    /// The cancel call to hand to the reactor, once.
    pub(super) fn take_cancel_action(&mut self) -> Option<Action> {
        let call = self.watch.as_mut()?.call.take()?;
        Some(Action::SendCancel(call))
    }

    /// Server bytes the client may have before the ErrorResponse the
    /// session must look at (None: no such stop).
    pub(super) fn watch_stop_cut(&self) -> Option<usize> {
        let w = self.watch.as_ref()?;
        let stop = w.stop?;
        let len = self.s2c.as_ref().map_or(0, |r| r.len());
        let head = w.s2c_in.saturating_sub(len as u64);
        Some(usize::try_from(stop.saturating_sub(head)).unwrap_or(usize::MAX))
    }

    /// `n` client bytes were read (the ring's last `n`).
    pub(super) fn watch_client_read(&mut self, n: usize, now: Instant) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        w.last_client = now;
        if !matches!(self.phase, Phase::Transparent) || !w.primed {
            return; // pool modes: the relay scans; before priming: priming does
        }
        let (Some(t), Some(ring)) = (w.tracker.as_mut(), self.c2s.as_ref()) else {
            return;
        };
        let (a, b) = ring.readable();
        let mut res = Ok(());
        for part in tail(a, b, n) {
            match t.client_bytes(part) {
                // A Terminate: relayed as it is; the server closes.
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        match res {
            Ok(()) => self.watch_requests(false, now),
            Err(e) => self.violation(Side::Client, e, now),
        }
    }

    /// `n` server bytes were read (the ring's last `n`).
    pub(super) fn watch_server_read(&mut self, n: usize, now: Instant) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        w.last_server = now;
        w.s2c_in = w.s2c_in.saturating_add(n as u64);
        if !matches!(self.phase, Phase::Transparent) || !w.primed {
            return;
        }
        let (Some(t), Some(ring)) = (w.tracker.as_mut(), self.s2c.as_ref()) else {
            return;
        };
        let (a, b) = ring.readable();
        let mut seen = ServerSeen::default();
        let mut offset = 0isize;
        let mut res = Ok(());
        for part in tail(a, b, n) {
            res = t.server_bytes_each(part, |tg, at| seen.see(tg, offset.saturating_add(at)));
            offset = offset.saturating_add(isize::try_from(part.len()).unwrap_or(isize::MAX));
            if res.is_err() {
                break;
            }
        }
        match res {
            Ok(()) => self.watch_server_seen(seen, n, now),
            Err(e) => self.violation(Side::Server, e, now),
        }
    }

    /// The relay's tracker (or the watch's) scanned the last `n` server
    /// bytes of the ring.
    pub(super) fn watch_server_seen(&mut self, seen: ServerSeen, n: usize, now: Instant) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        if seen.ready {
            w.last_ready = now;
        }
        if let Cancel::Pending { answered, .. } = &mut w.cancel
            && !*answered
        {
            if let (Some(at), None) = (seen.first_error, w.stop) {
                let start = w.s2c_in.saturating_sub(n as u64);
                w.stop = Some(if at >= 0 {
                    start.saturating_add(at.unsigned_abs() as u64)
                } else {
                    start.saturating_sub(at.unsigned_abs() as u64)
                });
            }
            if seen.ready {
                *answered = true;
            }
        }
        self.watch_requests(seen.ready, now);
    }

    /// Requests were counted or answered: when the head request started.
    pub(super) fn watch_requests(&mut self, ready: bool, now: Instant) {
        let outstanding = self.watch_tracker().map_or(0, |t| t.outstanding());
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        if outstanding == 0 {
            w.query_since = None;
        } else if ready || w.query_since.is_none() {
            w.query_since = Some(now);
        }
    }

    /// After every input: catch up, resolve a cancel, arm the timers, end a
    /// session past its lifetime. True when a cancel was resolved (held
    /// client input may move again).
    pub(super) fn watch_step(&mut self, now: Instant) -> bool {
        if self.watch.is_none() || self.is_ending() {
            return false;
        }
        self.watch_prime(now);
        let mut resolved = false;
        if let Some(w) = self.watch.as_mut()
            && w.cancel
                == (Cancel::Pending {
                    answered: true,
                    call_done: true,
                })
        {
            // A stop still ahead stays: the reworded error is not yet out.
            w.cancel = Cancel::None;
            // Requests held meanwhile start running now.
            if w.query_since.is_some() {
                w.query_since = Some(now);
            }
            self.timers.clear(TimerKind::QueryCancel);
            resolved = true;
        }
        self.watch_arm();
        self.watch_lifetime(now);
        resolved
    }

    /// Scans what was already in the rings when relaying began (the
    /// passthrough tracker starts at the session's first ReadyForQuery).
    fn watch_prime(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Transparent | Phase::PoolRelay(_)) {
            return;
        }
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        if w.primed {
            return;
        }
        w.primed = true;
        w.s2c_in = self.s2c.as_ref().map_or(0, |r| r.len() as u64);
        let Some(t) = w.tracker.as_mut() else {
            return;
        };
        let mut res: Result<(), (Side, ProtoError)> = Ok(());
        if let Some(r) = self.c2s.as_ref() {
            let (a, b) = r.readable();
            for part in [a, b] {
                match t.client_bytes(part) {
                    Ok(Some(_)) => break,
                    Ok(None) => {}
                    Err(e) => {
                        res = Err((Side::Client, e));
                        break;
                    }
                }
            }
        }
        if res.is_ok()
            && let Some(r) = self.s2c.as_ref()
        {
            let (a, b) = r.readable();
            for part in [a, b] {
                if let Err(e) = t.server_bytes(part) {
                    res = Err((Side::Server, e));
                    break;
                }
            }
        }
        match res {
            Ok(()) => self.watch_requests(false, now),
            Err((side, e)) => self.violation(side, e, now),
        }
    }

    fn watch_arm(&mut self) {
        let act = self.activity();
        let cycle_open = self.watch_tracker().is_some_and(|t| t.cycle_open());
        let Some(w) = self.watch.as_ref() else {
            return;
        };
        let mut since = w.last_client.max(w.last_ready);
        if cycle_open {
            since = since.max(w.last_server);
        }
        let d = activity_deadlines(
            &self.cfg.timeouts,
            act,
            since,
            w.query_since,
            w.cancel != Cancel::None,
        );
        for (kind, at) in [
            (TimerKind::ClientIdle, d.client_idle),
            (TimerKind::IdleTransaction, d.idle_transaction),
            (TimerKind::Query, d.query),
        ] {
            match at {
                Some(at) if self.timers.get(kind) != Some(at) => self.timers.set(kind, at),
                Some(_) => {}
                None => self.timers.clear(kind),
            }
        }
    }

    /// Past `session_lifetime`: end at the first idle moment outside a
    /// transaction, once every answer reached the client.
    fn watch_lifetime(&mut self, now: Instant) {
        if !self.watch.as_ref().is_some_and(|w| w.lifetime_over) {
            return;
        }
        let drained = self.to_client.is_empty()
            && self.s2c.as_ref().is_none_or(|r| r.is_empty())
            && self.c2s.as_ref().is_none_or(|r| r.is_empty());
        if self.activity() != Activity::Idle || !drained || self.cancel_pending() {
            return;
        }
        stats::inc(&STATS.session_lifetime_ends);
        let msg = format!(
            "terminating connection: session_lifetime timeout reached (session_lifetime = {}s)",
            secs(self.cfg.timeouts.lifetime)
        );
        self.end_session("57P01", &msg, CloseReason::SessionLifetime, now);
    }

    /// `ClientIdle` (`in_tx` false) or `IdleTransaction` (true) fired.
    pub(super) fn idle_timed_out(&mut self, in_tx: bool, now: Instant) {
        let want = if in_tx {
            Activity::IdleInTransaction
        } else {
            Activity::Idle
        };
        // A timer that outlived its state is re-armed by `watch_step`.
        if self.activity() != want {
            return;
        }
        let t = self.cfg.timeouts;
        let (code, msg, reason, counter) = if in_tx {
            (
                "25P03",
                format!(
                    "terminating connection due to idle-in-transaction timeout \
                     (idle_transaction_timeout = {}s)",
                    secs(t.idle_transaction)
                ),
                CloseReason::IdleTransactionTimeout,
                &STATS.idle_transaction_timeouts,
            )
        } else {
            (
                "57P05",
                format!(
                    "terminating connection due to idle-session timeout \
                     (client_idle_timeout = {}s)",
                    secs(t.client_idle)
                ),
                CloseReason::ClientIdleTimeout,
                &STATS.client_idle_timeouts,
            )
        };
        stats::inc(counter);
        self.end_session(code, &msg, reason, now);
    }

    /// `Query` fired: cancel the head request with the backend's key.
    pub(super) fn query_timed_out(&mut self, now: Instant) {
        if self.activity() != Activity::Running || self.cancel_pending() {
            return;
        }
        let key = match &self.phase {
            Phase::Transparent => self.backend_key.clone(),
            Phase::PoolRelay(r) => r.link.backend_key.clone(),
            _ => None,
        };
        stats::inc(&STATS.query_timeouts);
        let call = key.and_then(|(pid, k)| CancelCall::new(pid, &k, self.cfg.upstream_tls).ok());
        let Some(call) = call else {
            stats::inc(&STATS.query_timeout_closes);
            let msg = format!(
                "terminating connection due to query timeout (query_timeout = {}s): \
                 the server gave no cancel key",
                secs(self.cfg.timeouts.query)
            );
            self.fail("57014", &msg, CloseReason::QueryTimeout, now);
            return;
        };
        if let Some(w) = self.watch.as_mut() {
            w.cancel = Cancel::Pending {
                answered: false,
                call_done: false,
            };
            w.call = Some(Box::new(call));
        }
        self.timers
            .set(TimerKind::QueryCancel, after(now, QUERY_CANCEL_GRACE));
    }

    /// `QueryCancel` fired with the cancel unresolved: fail closed.
    pub(super) fn query_cancel_expired(&mut self, now: Instant) {
        if !self.cancel_pending() {
            return;
        }
        stats::inc(&STATS.query_timeout_closes);
        let msg = format!(
            "terminating connection due to query timeout (query_timeout = {}s): \
             the query did not end within {}s of its cancel request",
            secs(self.cfg.timeouts.query),
            QUERY_CANCEL_GRACE.as_secs()
        );
        // In pool modes the lent server is dropped with the phase: closed,
        // never pooled again.
        self.fail("57014", &msg, CloseReason::QueryTimeout, now);
    }

    /// `Lifetime` fired.
    pub(super) fn lifetime_reached(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            w.lifetime_over = true;
        }
    }

    /// The reactor's cancel connection for `Action::SendCancel` ended
    /// (delivered or not: either way nothing more of it can reach the server).
    pub fn handle_cancel_done(&mut self, now: Instant) {
        if let Some(w) = self.watch.as_mut()
            && let Cancel::Pending { call_done, .. } = &mut w.cancel
        {
            *call_done = true;
        }
        self.process(now);
    }

    /// Ends the session with a FATAL: passthrough and a client without a
    /// server at once; a pooled session through the release of its server.
    fn end_session(&mut self, code: &str, msg: &str, reason: CloseReason, now: Instant) {
        match self.phase {
            Phase::PoolRelay(_) => self.end_pooled(code, msg, reason),
            Phase::Transparent | Phase::TxIdle => self.fail(code, msg, reason, now),
            _ => {}
        }
    }

    /// A pooled session ends like a client exit (its bytes before the end
    /// still go, the server is released: ROLLBACK if needed, then the
    /// reset), with a FATAL for the client; unsent server bytes are dropped.
    fn end_pooled(&mut self, code: &str, msg: &str, reason: CloseReason) {
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return;
        };
        if relay.ending() {
            return;
        }
        relay.end = Some((reason, msg.to_string()));
        if let Some(r) = self.s2c.as_mut() {
            r.clear();
        }
        encode::error_response(&mut self.to_client, "FATAL", code, msg);
        self.pooled_client_eof();
    }

    /// At a stop: the ErrorResponse at the head of `s2c` is looked at before
    /// the client gets it; the cancel's 57014 is reworded. False while the
    /// stop is ahead or the message incomplete.
    pub(super) fn step_cancel_error(&mut self) -> bool {
        let len = self.s2c.as_ref().map_or(0, |r| r.len());
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        let Some(stop) = w.stop else {
            return false;
        };
        let head = w.s2c_in.saturating_sub(len as u64);
        if stop > head {
            return false;
        }
        let Some(mut ring) = self.s2c.take() else {
            w.stop = None;
            return true;
        };
        let mut reworded = None;
        if stop == head {
            let lim = self.cfg.limits;
            match Self::frame_len(&mut ring, FramePhase::Server, &lim) {
                Ok(None) => {
                    self.s2c = Some(ring);
                    return false; // the rest of it comes with the next read
                }
                Ok(Some((t, wire_len))) if t == tag::ERROR_RESPONSE => {
                    let data = ring.contiguous();
                    let body = data.get(5..wire_len).unwrap_or(&[]);
                    let cancelled = backend::decode_error_fields(body).is_ok_and(|f| {
                        f.code == Some(b"57014".as_slice())
                            && f.severity_v.or(f.severity) == Some(b"ERROR".as_slice())
                    });
                    if cancelled {
                        ring.consume(wire_len);
                        reworded = Some(wire_len);
                    }
                }
                // Another message, or one too long to hold: it goes as it is.
                _ => {}
            }
        }
        self.s2c = Some(ring);
        if let Some(w) = self.watch.as_mut() {
            w.stop = None;
        }
        if let Some(n) = reworded {
            let msg = format!(
                "canceling statement due to query timeout (query_timeout = {}s)",
                secs(self.cfg.timeouts.query)
            );
            encode::error_response(&mut self.to_client, "ERROR", "57014", &msg);
            // The rewriting (transaction mode) counts these bytes as gone
            // toward the client.
            self.rw_client_consumed(n);
        }
        true
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn q(sql: &str) -> Vec<u8> {
        let mut v = Vec::new();
        encode::query(&mut v, sql.as_bytes()).unwrap();
        v
    }

    fn z(status: u8) -> Vec<u8> {
        let mut v = Vec::new();
        encode::ready_for_query(&mut v, status);
        v
    }

    #[test]
    fn the_tracker_tells_the_activity() {
        let mut t = ServerTracker::new();
        assert_eq!(classify(&t), Activity::Idle);
        t.client_bytes(&q("BEGIN")).unwrap();
        assert_eq!(classify(&t), Activity::Running);
        t.server_bytes(&z(b'T')).unwrap();
        assert_eq!(classify(&t), Activity::IdleInTransaction);
        t.client_bytes(&q("SELECT 1")).unwrap();
        assert_eq!(classify(&t), Activity::Running);
        t.server_bytes(&z(b'E')).unwrap();
        assert_eq!(classify(&t), Activity::IdleInTransaction);
        t.client_bytes(&q("ROLLBACK")).unwrap();
        t.server_bytes(&z(b'I')).unwrap();
        assert_eq!(classify(&t), Activity::Idle);
        // Parse without Sync: a cycle left open is in a transaction.
        let mut parse = Vec::new();
        encode::parse(&mut parse, b"", b"SELECT 1", &[]).unwrap();
        t.client_bytes(&parse).unwrap();
        assert_eq!(classify(&t), Activity::IdleInTransaction);
        let mut sync = Vec::new();
        encode::sync(&mut sync);
        t.client_bytes(&sync).unwrap();
        assert_eq!(classify(&t), Activity::Running);
        t.server_bytes(&z(b'I')).unwrap();
        assert_eq!(classify(&t), Activity::Idle);
        // A ReadyForQuery nobody asked for: the stream cannot be followed.
        t.server_bytes(&z(b'I')).unwrap();
        assert_eq!(classify(&t), Activity::Untimed);
    }

    #[test]
    fn each_state_arms_only_its_own_timer() {
        let t0 = Instant::now();
        let s = |n| Some(Duration::from_secs(n));
        let all = SessionTimeouts {
            client_idle: s(10),
            idle_transaction: s(20),
            query: s(30),
            lifetime: s(40),
        };
        let at = |n| Some(t0 + Duration::from_secs(n));
        let since = t0;
        let qs = Some(t0 + Duration::from_secs(5));
        let cases = [
            (Activity::Untimed, false, ActivityDeadlines::default()),
            (
                Activity::Idle,
                false,
                ActivityDeadlines {
                    client_idle: at(10),
                    ..Default::default()
                },
            ),
            (
                Activity::IdleInTransaction,
                false,
                ActivityDeadlines {
                    idle_transaction: at(20),
                    ..Default::default()
                },
            ),
            (
                Activity::Running,
                false,
                ActivityDeadlines {
                    query: at(35),
                    ..Default::default()
                },
            ),
            // No second cancel while one is unresolved.
            (Activity::Running, true, ActivityDeadlines::default()),
            // The idle timers do not care about a cancel.
            (
                Activity::Idle,
                true,
                ActivityDeadlines {
                    client_idle: at(10),
                    ..Default::default()
                },
            ),
        ];
        for (act, pending, want) in cases {
            assert_eq!(
                activity_deadlines(&all, act, since, qs, pending),
                want,
                "{act:?} pending={pending}"
            );
        }
        // Off means never armed.
        let none = SessionTimeouts::default();
        for act in [
            Activity::Idle,
            Activity::IdleInTransaction,
            Activity::Running,
        ] {
            assert_eq!(
                activity_deadlines(&none, act, since, qs, false),
                ActivityDeadlines::default()
            );
        }
        // Without a recorded start, a running request counts from idle_since.
        assert_eq!(
            activity_deadlines(&all, Activity::Running, since, None, false).query,
            at(30)
        );
    }

    #[test]
    fn server_seen_finds_the_first_error_before_a_ready() {
        let mut s = ServerSeen::default();
        s.see(b'T', 0);
        s.see(b'E', -3);
        s.see(b'E', 40);
        s.see(b'Z', 60);
        assert!(s.ready);
        assert_eq!(s.first_error, Some(-3));
        let mut s = ServerSeen::default();
        s.see(b'Z', 0);
        s.see(b'E', 6);
        assert!(s.ready);
        assert_eq!(
            s.first_error, None,
            "an error after the ReadyForQuery is another request's"
        );
    }
}
