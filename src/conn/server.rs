//! A pooled server connection's own life while no client holds it: the
//! proxy logs in as a client (TLS, startup, SCRAM/MD5/cleartext with the
//! upstream password), collects ParameterStatus and BackendKeyData, and later
//! runs the check and reset queries whose answers it verifies one by one.
//!
//! Owns: `ServerLink`, a pure state machine (bytes + time in, bytes + events
//! out), and the server's login facts (`params`, `backend_key`) that a
//! client is shown when the server is lent to it.
//!
//! Phases:
//! ```text
//! Connecting ─► Ssl ─► TlsPending ─┐
//!      │                           ▼
//!      └──────────────────────► Auth ─► Starting ─► Idle ◄──────────┐
//!                                                   │ begin_check   │
//!                                                   ├──► Running ───┤ (answers checked)
//!                                                   │ lend          │
//!                                                   └──► Lent ── begin_reset ─► Running
//!  any phase ── error / EOF / timeout / unexpected message ──► Failed
//! ```
//! Invariants:
//! - a server reaches `Idle` only after ReadyForQuery `I` that answers the
//!   last request the proxy sent, and with nothing left unread;
//! - a message the current phase does not expect fails the link (the
//!   reactor closes the socket): a pooled server is never reused on doubt;
//! - every phase other than `Idle` and `Lent` has a deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::session::{SCRAM_NONCE_LEN, UpstreamTlsMode};
use super::tracker::{Release, ServerTracker};
use crate::auth::md5::md5_password_response;
use crate::auth::scram::{self, ScramClient};
use crate::buf::{BufPool, ByteRing};
use crate::protocol::backend::{self, Auth};
use crate::protocol::frame::parse_frame;
use crate::protocol::{FramePhase, Limits, PROTOCOL_3_0, ProtoError, encode, tag};

/// Most ParameterStatus entries kept for one server (PostgreSQL reports ~15).
pub const MAX_PARAMS: usize = 64;

/// How the proxy proves itself to the server for one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamSecret {
    /// None configured: only trust (or a failure naming the missing password).
    None,
    Plain(Vec<u8>),
    /// `md5` + hex(md5(password ++ role)): answers MD5 challenges only.
    Md5Hash([u8; 32]),
}

/// What a link needs, per (database, role).
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub role: String,
    pub database: String,
    pub secret: UpstreamSecret,
    pub upstream_tls: UpstreamTlsMode,
    pub limits: Limits,
    /// Connect + TLS + login.
    pub login_timeout: Duration,
    /// Check and reset queries (and, for the caller, draining).
    pub query_timeout: Duration,
}

/// Why a link failed, with what a waiting client should be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFailure {
    pub sqlstate: String,
    pub message: String,
    /// The server itself sent this error (e.g. a failed login).
    pub from_server: bool,
}

/// What the link asks of the reactor or reports to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Start TLS on the socket (after our SSLRequest was answered `S`, or at
    /// once for direct TLS).
    StartTls,
    /// The link is idle and proved so (after login, check or reset).
    Idle,
    /// The link is unusable; close it.
    Failed(LinkFailure),
}

#[derive(Debug)]
enum AuthState {
    AwaitServer,
    Scram(Box<ScramClient>),
}

/// What a query run by the proxy on an idle link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// `ROLLBACK`: exactly CommandComplete `ROLLBACK`.
    Rollback,
    /// The reset or check query: CommandComplete, rows or EmptyQuery, no error.
    Plain,
}

#[derive(Debug)]
enum Phase {
    Connecting,
    Ssl,
    TlsPending,
    Auth(AuthState),
    Starting,
    Idle,
    Lent,
    /// Back from a client: the tracker says what is still owed (responses
    /// to drain, an open COPY or extended cycle to close) before the
    /// ROLLBACK/reset queries (`then`) may be sent.
    Releasing {
        tracker: Box<ServerTracker>,
        then: Vec<(QueryKind, Vec<u8>)>,
    },
    /// Queries sent, in order; each must be answered before the next.
    Running {
        queue: VecDeque<QueryKind>,
        /// The head query's CommandComplete (or rows/empty) arrived.
        answered: bool,
    },
    Failed,
    /// Only while a transition holds the old phase by value.
    Poisoned,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Ssl | Phase::TlsPending => "tls",
            Phase::Auth(_) => "login",
            Phase::Starting => "startup",
            Phase::Idle => "idle",
            Phase::Lent => "lent",
            Phase::Releasing { .. } => "release",
            Phase::Running { .. } => "reset",
            Phase::Failed => "failed",
            Phase::Poisoned => "poisoned",
        }
    }
}

/// One pooled server connection, from the proxy's side.
pub struct ServerLink {
    cfg: Arc<LinkConfig>,
    phase: Phase,
    rx: Option<ByteRing>,
    tx: Vec<u8>,
    events: VecDeque<LinkEvent>,
    deadline: Option<Instant>,
    nonce: [u8; SCRAM_NONCE_LEN],
    /// ParameterStatus as the server last reported, in arrival order.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// The backend's own cancel key (pid, secret).
    pub backend_key: Option<(i32, Vec<u8>)>,
    pub created: Instant,
    /// When the link last became idle.
    pub idle_since: Option<Instant>,
    /// Its place in the pool: given back when the link is dropped, wherever
    /// it is (the pool's idle stack, a client session, a release).
    pub slot: Option<crate::pool::Slot>,
    /// The tenant holding this server (`tenant_max_servers`): set while it
    /// is lent to (or promised to, or parked with) a tenant's client,
    /// dropped when it goes back to the pool or is dropped itself.
    pub hold: Option<crate::pool::TenantHold>,
    /// Transaction mode: the client whose context the server carries (the
    /// last client a context step ran for); None once reset.
    pub context_of: Option<u64>,
    /// Transaction mode: statements the proxy prepared on this server.
    pub prepared: Vec<Vec<u8>>,
    /// Transaction mode: client statements prepared on this server (server
    /// names), least recently used first.
    pub client_stmts: VecDeque<std::sync::Arc<[u8]>>,
    /// False once a reset may have left statements we do not know of: the
    /// proxy then prepares nothing more on it (unnamed steps only).
    pub named_ok: bool,
}

impl std::fmt::Debug for ServerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLink")
            .field("role", &self.cfg.role)
            .field("database", &self.cfg.database)
            .field("phase", &self.phase.name())
            .field("backend_key", &self.backend_key.as_ref().map(|k| k.0))
            .finish()
    }
}

fn failure(sqlstate: &str, message: impl Into<String>) -> LinkFailure {
    LinkFailure {
        sqlstate: sqlstate.to_string(),
        message: message.into(),
        from_server: false,
    }
}

impl ServerLink {
    /// A link whose TCP connect the reactor is starting now.
    pub fn new(cfg: Arc<LinkConfig>, nonce: [u8; SCRAM_NONCE_LEN], now: Instant) -> Self {
        let deadline = now.checked_add(cfg.login_timeout).unwrap_or(now);
        ServerLink {
            cfg,
            phase: Phase::Connecting,
            rx: None,
            tx: Vec::new(),
            events: VecDeque::new(),
            deadline: Some(deadline),
            nonce,
            params: Vec::new(),
            backend_key: None,
            created: now,
            idle_since: None,
            slot: None,
            hold: None,
            context_of: None,
            prepared: Vec::new(),
            client_stmts: VecDeque::new(),
            named_ok: true,
        }
    }

    pub fn config(&self) -> &Arc<LinkConfig> {
        &self.cfg
    }

    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.phase, Phase::Failed)
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Bytes to write to the server.
    pub fn output(&self) -> &[u8] {
        &self.tx
    }

    pub fn handle_written(&mut self, n: usize) {
        let n = n.min(self.tx.len());
        self.tx.drain(..n);
    }

    /// Read interest: always while not lent (EOF and errors must be seen at
    /// once, also while idle), except during the TCP connect.
    pub fn wants_read(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Connecting | Phase::Lent | Phase::Failed | Phase::TlsPending
        )
    }

    /// Where the reactor reads server bytes into.
    pub fn read_buf(&mut self, pool: &mut BufPool) -> &mut [u8] {
        self.rx
            .get_or_insert_with(|| pool.checkout())
            .free_contiguous_mut()
    }

    /// Gives the receive ring back (when lent or closed).
    pub fn release_buffers(&mut self, pool: &mut BufPool) {
        if let Some(r) = self.rx.take() {
            pool.checkin(r, true);
        }
    }

    fn fail(&mut self, f: LinkFailure) {
        // `Failed` is entered once, with its one event.
        if !self.is_failed() {
            self.phase = Phase::Failed;
            self.deadline = None;
            self.tx.clear();
            self.events.push_back(LinkEvent::Failed(f));
        }
    }

    fn violation(&mut self, e: ProtoError) {
        self.fail(failure(
            "08P01",
            format!("protocol violation from the upstream server: {e}"),
        ));
    }

    fn send_startup(&mut self) {
        let cfg = Arc::clone(&self.cfg);
        let params: [(&[u8], &[u8]); 2] = [
            (b"user", cfg.role.as_bytes()),
            (b"database", cfg.database.as_bytes()),
        ];
        match encode::startup_message(&mut self.tx, PROTOCOL_3_0, &params) {
            Ok(()) => self.phase = Phase::Auth(AuthState::AwaitServer),
            Err(e) => self.violation(e),
        }
    }

    /// The TCP connect finished.
    pub fn handle_connected(&mut self, _now: Instant) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        match self.cfg.upstream_tls {
            UpstreamTlsMode::Disable => self.send_startup(),
            UpstreamTlsMode::Direct => {
                self.phase = Phase::TlsPending;
                self.events.push_back(LinkEvent::StartTls);
            }
            UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => {
                encode::ssl_request(&mut self.tx);
                self.phase = Phase::Ssl;
            }
        }
    }

    pub fn handle_connect_failed(&mut self, detail: &str) {
        self.fail(failure(
            "08006",
            format!("cannot connect to the upstream server: {detail}"),
        ));
    }

    pub fn handle_tls_ready(&mut self) {
        if matches!(self.phase, Phase::TlsPending) {
            self.send_startup();
        }
    }

    pub fn handle_tls_failed(&mut self, detail: &str) {
        self.fail(failure(
            "08006",
            format!("TLS handshake with the upstream server failed: {detail}"),
        ));
    }

    pub fn handle_eof(&mut self) {
        let during = self.phase.name();
        self.fail(failure(
            "08006",
            format!("upstream server closed the connection ({during})"),
        ));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            let during = self.phase.name();
            self.fail(failure(
                "08006",
                format!("timeout waiting for the upstream server ({during})"),
            ));
        }
    }

    /// The reactor read `n` bytes into `read_buf`.
    pub fn handle_read(&mut self, n: usize, now: Instant) {
        if let Some(r) = self.rx.as_mut() {
            r.commit(n);
        }
        self.process(now);
    }

    /// Lends an idle link to a client: the reactor moves it into the
    /// client's session. Only an idle link can be lent.
    pub fn lend(&mut self, pool: &mut BufPool) -> bool {
        if !self.is_idle() || self.rx.as_ref().is_some_and(|r| !r.is_empty()) {
            return false;
        }
        self.release_buffers(pool);
        self.phase = Phase::Lent;
        self.idle_since = None;
        true
    }

    /// Runs `queries` (simple Query each, in order) on an idle or returned
    /// link; the link is `Idle` again only once each is answered as its kind
    /// requires and the last ReadyForQuery says `I`.
    pub fn begin_queries(&mut self, queries: &[(QueryKind, &[u8])], now: Instant) {
        if !matches!(self.phase, Phase::Idle | Phase::Lent) {
            self.fail(failure("XX000", "reset requested in a wrong state"));
            return;
        }
        if queries.is_empty() {
            self.become_idle(now);
            return;
        }
        let mut queue = VecDeque::new();
        for (kind, sql) in queries {
            if let Err(e) = encode::query(&mut self.tx, sql) {
                self.violation(e);
                return;
            }
            queue.push_back(*kind);
        }
        self.phase = Phase::Running {
            queue,
            answered: false,
        };
        self.deadline = now.checked_add(self.cfg.query_timeout).or(Some(now));
    }

    /// The link comes back from a client with the tracker of its relay:
    /// finish what the client left (bounded by `query_timeout`), then run
    /// `reset` (preceded by `ROLLBACK` if a transaction is open).
    pub fn begin_release(
        &mut self,
        tracker: ServerTracker,
        reset: &[(QueryKind, &[u8])],
        now: Instant,
    ) {
        if !matches!(self.phase, Phase::Lent) {
            self.fail(failure("XX000", "release of a link that was not lent"));
            return;
        }
        self.deadline = now.checked_add(self.cfg.query_timeout).or(Some(now));
        if !reset.is_empty() {
            // The client left mid-transaction: whatever it did is reset.
            self.context_of = None;
            let discard_all = reset
                .iter()
                .any(|(_, q)| q.trim_ascii().eq_ignore_ascii_case(b"DISCARD ALL"));
            if !discard_all {
                self.named_ok = false;
            }
            self.prepared.clear();
            self.client_stmts.clear();
        }
        self.phase = Phase::Releasing {
            tracker: Box::new(tracker),
            then: reset.iter().map(|(k, q)| (*k, q.to_vec())).collect(),
        };
        self.step_release(now);
    }

    /// Advances the release as far as it can without server input.
    fn step_release(&mut self, now: Instant) {
        // Each round either sends one message, waits, or leaves the phase.
        for _ in 0..4 {
            let Phase::Releasing { tracker, .. } = &mut self.phase else {
                return;
            };
            let mut msg = Vec::new();
            match tracker.release_step() {
                Release::Drain => return,
                Release::Close(why) => {
                    self.fail(failure(
                        "08006",
                        format!("pooled server not reusable: {why}"),
                    ));
                    return;
                }
                Release::SendCopyFail => {
                    if encode::copy_fail(&mut msg, b"client disconnected").is_err() {
                        self.fail(failure("XX000", "cannot encode CopyFail"));
                        return;
                    }
                }
                Release::SendSync => encode::sync(&mut msg),
                Release::Rollback | Release::Reset => {
                    let rollback = matches!(tracker.release_step(), Release::Rollback);
                    let old = std::mem::replace(&mut self.phase, Phase::Lent);
                    let Phase::Releasing { then, .. } = old else {
                        return;
                    };
                    let mut qs: Vec<(QueryKind, &[u8])> = Vec::new();
                    if rollback {
                        qs.push((QueryKind::Rollback, b"ROLLBACK"));
                    }
                    qs.extend(then.iter().map(|(k, q)| (*k, q.as_slice())));
                    self.begin_queries(&qs, now);
                    return;
                }
            }
            if let Err(e) = tracker.sent_by_proxy(&msg) {
                self.violation(e);
                return;
            }
            self.tx.extend_from_slice(&msg);
        }
    }

    fn become_idle(&mut self, now: Instant) {
        self.phase = Phase::Idle;
        self.deadline = None;
        self.idle_since = Some(now);
        self.events.push_back(LinkEvent::Idle);
    }

    fn process(&mut self, now: Instant) {
        // Each round consumes one message or ends; bounded by the ring size.
        for _ in 0..crate::buf::RING_CAPACITY {
            if self.is_failed() {
                if let Some(r) = self.rx.as_mut() {
                    r.clear();
                }
                return;
            }
            let Some(mut ring) = self.rx.take() else {
                return;
            };
            if let Phase::Releasing { tracker, .. } = &mut self.phase {
                // Responses the client will never read: counted, then dropped.
                let (a, b) = ring.readable();
                let fed = tracker
                    .server_bytes(a)
                    .and_then(|()| tracker.server_bytes(b));
                ring.clear();
                self.rx = Some(ring);
                match fed {
                    Ok(()) => self.step_release(now),
                    Err(e) => self.violation(e),
                }
                if matches!(self.phase, Phase::Releasing { .. }) {
                    return;
                }
                continue;
            }
            if matches!(self.phase, Phase::Ssl) {
                let progressed = self.step_ssl(&mut ring);
                self.rx = Some(ring);
                if !progressed {
                    return;
                }
                continue;
            }
            let fphase = match self.phase {
                Phase::Auth(_) => FramePhase::ServerAuth,
                _ => FramePhase::Server,
            };
            let lim = self.cfg.limits;
            let full = ring.is_full();
            let data = ring.contiguous();
            let res = match parse_frame(data, fphase, &lim) {
                Err(e) => Err(e),
                Ok(None) if full => Err(ProtoError::TooLong {
                    tag: data.first().copied().unwrap_or(0),
                    len: data.len(),
                    max: data.len(),
                }),
                Ok(None) => {
                    self.rx = Some(ring);
                    return;
                }
                Ok(Some(f)) => {
                    let (t, body, wire_len) = (f.tag, f.body, f.wire_len);
                    let r = self.on_message(t, body, now);
                    ring.consume(wire_len);
                    r
                }
            };
            self.rx = Some(ring);
            if let Err(e) = res {
                self.violation(e);
            }
        }
    }

    fn step_ssl(&mut self, ring: &mut ByteRing) -> bool {
        let mut answer = [0u8; 1];
        if !ring.peek_into(&mut answer) {
            return false;
        }
        // Bytes after the one-byte answer were not protected by TLS
        // (CVE-2021-23222), and an answer before our request left is no
        // answer: refuse both.
        if ring.len() > 1 || !self.tx.is_empty() {
            ring.clear();
            self.violation(ProtoError::BadValue("bytes after the SSLRequest answer"));
            return true;
        }
        ring.clear();
        match (answer[0], self.cfg.upstream_tls) {
            (b'S', _) => {
                self.phase = Phase::TlsPending;
                self.events.push_back(LinkEvent::StartTls);
            }
            (b'N', UpstreamTlsMode::Prefer) => self.send_startup(),
            (b'N', _) => self.fail(failure(
                "08006",
                "the upstream server does not support TLS (upstream_tls requires it)",
            )),
            _ => self.violation(ProtoError::BadValue("answer to SSLRequest")),
        }
        true
    }

    fn on_message(&mut self, t: u8, body: &[u8], now: Instant) -> Result<(), ProtoError> {
        // At any time after login: reports and notices.
        match t {
            tag::NOTICE_RESPONSE => return Ok(()),
            tag::PARAMETER_STATUS if !matches!(self.phase, Phase::Auth(_)) => {
                let ps = backend::decode_parameter_status(body)?;
                self.set_param(ps.name, ps.value);
                return Ok(());
            }
            tag::ERROR_RESPONSE => {
                let f = backend::decode_error_fields(body)?;
                let text =
                    |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or(b"")).into_owned();
                self.fail(LinkFailure {
                    sqlstate: text(f.code),
                    message: text(f.message),
                    from_server: true,
                });
                return Ok(());
            }
            _ => {}
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Poisoned);
        self.phase = match phase {
            Phase::Auth(st) => self.on_auth(st, t, body)?,
            Phase::Starting => match t {
                tag::BACKEND_KEY_DATA => {
                    let k = backend::decode_backend_key_data(body)?;
                    self.backend_key = Some((k.pid, k.key.to_vec()));
                    Phase::Starting
                }
                tag::READY_FOR_QUERY => {
                    if backend::decode_ready_for_query(body)? != b'I' {
                        return Err(ProtoError::BadValue(
                            "ReadyForQuery after login is not idle",
                        ));
                    }
                    self.become_idle(now);
                    return Ok(());
                }
                other => {
                    return Err(ProtoError::UnexpectedTag {
                        phase: FramePhase::Server,
                        tag: other,
                    });
                }
            },
            Phase::Running {
                mut queue,
                answered,
            } => {
                let Some(&head) = queue.front() else {
                    return Err(ProtoError::BadValue("answer without a query"));
                };
                match (t, head, answered) {
                    (tag::COMMAND_COMPLETE, QueryKind::Rollback, false) => {
                        if backend::decode_command_complete(body)? != b"ROLLBACK" {
                            return Err(ProtoError::BadValue("answer to ROLLBACK"));
                        }
                        Phase::Running {
                            queue,
                            answered: true,
                        }
                    }
                    (tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE, QueryKind::Plain, _) => {
                        Phase::Running {
                            queue,
                            answered: true,
                        }
                    }
                    (tag::ROW_DESCRIPTION | tag::DATA_ROW, QueryKind::Plain, _) => {
                        Phase::Running { queue, answered }
                    }
                    (tag::READY_FOR_QUERY, _, true) => {
                        if backend::decode_ready_for_query(body)? != b'I' {
                            return Err(ProtoError::BadValue(
                                "the server is not idle after a reset query",
                            ));
                        }
                        queue.pop_front();
                        if queue.is_empty() {
                            self.become_idle(now);
                            return Ok(());
                        }
                        Phase::Running {
                            queue,
                            answered: false,
                        }
                    }
                    (other, _, _) => {
                        return Err(ProtoError::UnexpectedTag {
                            phase: FramePhase::Server,
                            tag: other,
                        });
                    }
                }
            }
            // Idle: nothing but the reports above may arrive; Lent/Connecting/
            // Ssl/TlsPending never read here.
            _ => {
                return Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::Server,
                    tag: t,
                });
            }
        };
        Ok(())
    }

    fn on_auth(&mut self, st: AuthState, t: u8, body: &[u8]) -> Result<Phase, ProtoError> {
        if t != tag::AUTHENTICATION {
            return Err(ProtoError::UnexpectedTag {
                phase: FramePhase::ServerAuth,
                tag: t,
            });
        }
        let auth = backend::decode_auth(body)?;
        let cfg = Arc::clone(&self.cfg);
        match (st, auth) {
            (AuthState::AwaitServer, Auth::Ok) => Ok(Phase::Starting),
            (AuthState::AwaitServer, Auth::CleartextPassword) => match &cfg.secret {
                UpstreamSecret::Plain(pw) => {
                    encode::password_message(&mut self.tx, pw)?;
                    Ok(Phase::Auth(AuthState::AwaitServer))
                }
                _ => Ok(self.no_password("a cleartext password")),
            },
            (AuthState::AwaitServer, Auth::Md5Password { salt }) => {
                let resp = match &cfg.secret {
                    UpstreamSecret::Plain(pw) => {
                        md5_password_response(cfg.role.as_bytes(), pw, salt)
                    }
                    UpstreamSecret::Md5Hash(h) => crate::auth::md5::md5_salted_response(h, salt),
                    UpstreamSecret::None => return Ok(self.no_password("an MD5 password")),
                };
                encode::password_message(&mut self.tx, &resp)?;
                Ok(Phase::Auth(AuthState::AwaitServer))
            }
            (AuthState::AwaitServer, Auth::Sasl { mechanisms }) => {
                if !mechanisms.contains(scram::MECHANISM.as_bytes()) {
                    return Err(ProtoError::BadValue("no SASL mechanism the proxy supports"));
                }
                let UpstreamSecret::Plain(pw) = &cfg.secret else {
                    return Ok(self.no_password("a SCRAM password"));
                };
                let client = ScramClient::new(pw, &self.nonce);
                encode::sasl_initial_response(
                    &mut self.tx,
                    client.mechanism().as_bytes(),
                    Some(&client.client_first()),
                )?;
                Ok(Phase::Auth(AuthState::Scram(Box::new(client))))
            }
            (AuthState::Scram(mut client), Auth::SaslContinue(data)) => {
                let resp = client
                    .handle_server_first(data)
                    .map_err(|_| ProtoError::BadValue("SCRAM server-first message"))?;
                encode::sasl_response(&mut self.tx, &resp)?;
                Ok(Phase::Auth(AuthState::Scram(client)))
            }
            (AuthState::Scram(mut client), Auth::SaslFinal(data)) => {
                client.handle_server_final(data).map_err(|_| {
                    ProtoError::BadValue(
                        "SCRAM server signature (the server did not prove it knows the password)",
                    )
                })?;
                Ok(Phase::Auth(AuthState::AwaitServer))
            }
            (_, Auth::Other(_)) => Err(ProtoError::BadValue("unsupported authentication method")),
            _ => Err(ProtoError::BadValue("authentication request out of order")),
        }
    }

    fn no_password(&mut self, what: &str) -> Phase {
        let msg = format!(
            "the upstream server asks {what} for role \"{}\" and none is configured \
             (upstream_password / upstream_auth_file)",
            self.cfg.role
        );
        self.fail(failure("28P01", msg));
        Phase::Failed
    }

    fn set_param(&mut self, name: &[u8], value: &[u8]) {
        if let Some(p) = self.params.iter_mut().find(|(n, _)| n == name) {
            p.1 = value.to_vec();
        } else if self.params.len() < MAX_PARAMS {
            self.params.push((name.to_vec(), value.to_vec()));
        }
    }

    /// Records a ParameterStatus seen while the link was lent (the client
    /// session parses them), so the next client sees the server's real state.
    pub fn note_param(&mut self, name: &[u8], value: &[u8]) {
        self.set_param(name, value);
    }
}

#[cfg(test)]
mod tests;
