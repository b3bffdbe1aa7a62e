//! The passthrough session: one client, at most one upstream server.
//!
//! Phases (`Phase`), with the inputs legal in each:
//! - `Startup`: startup-family packets from the client (SSLRequest and
//!   GSSENCRequest → `N`, at most two; CancelRequest; StartupMessage).
//! - `Connecting`: upstream TCP connect in flight; client bytes are held.
//! - `Authenticating`: server `R`/`E`/`N`/`v` relayed; client `p` only when a
//!   challenge is outstanding (`AuthStep::AwaitClient`), otherwise held.
//! - `PostAuth`: server `S`/`K`/`N` forwarded, the first `Z` is held back.
//! - `Injecting`: the context batch is out; its answers are checked in order.
//! - `Transparent`: raw relay in both directions through the rings.
//! - `ClientTlsPending`: `S` answered (or a direct-TLS ClientHello seen); the
//!   reactor wraps the client socket in TLS, then `Startup { tls: true }`.
//! - `UpstreamSsl`: SSLRequest sent upstream; exactly one byte (`S`/`N`) expected.
//! - `UpstreamTlsPending`: the reactor runs the TLS handshake with the server.
//!   Superuser bypass goes through the same upstream phases, then its verbatim
//!   startup is relayed and the session is transparent.
//! - `CancelConnecting` / `CancelSending`: forward a CancelRequest, then close.
//! - `Draining`: flush what is queued toward one side, then close.
//! - `Closed`; `Poisoned` only during a transition (seeing it is a bug).

use std::sync::Arc;
use std::time::{Duration, Instant};

mod pool;
mod resolve;
mod stmts;
mod timeouts;
mod txn;

pub use pool::PoolSettings;
pub use timeouts::QUERY_CANCEL_GRACE;

use super::inject::{self, Fed, Step};
use super::server::ServerLink;
use super::timers::{TimerKind, TimerTable};
use super::username::{self, UserKind};
use super::{Action, CloseReason, Side};
use crate::auth::md5::md5_password_response;
use crate::auth::scram::{self, ScramClient};
use crate::buf::{BufPool, ByteRing};
use crate::protocol::backend::{self, Auth};
use crate::protocol::frame::parse_frame;
use crate::protocol::frontend::{self, StartupPacket};
use crate::protocol::{FramePhase, Limits, ProtoError, encode, tag};

/// Most bytes of proxy-generated output queued toward one peer before the
/// session stops consuming input (backpressure during the handshake).
const OUT_CAP: usize = 64 * 1024;
/// How long the last bytes may take to flush before a close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Random bytes behind the client nonce of an upstream SCRAM exchange.
pub const SCRAM_NONCE_LEN: usize = 24;
/// SSLRequest + GSSENCRequest: the most negotiation packets before a startup.
const MAX_NEGOTIATIONS: u8 = 2;

/// `now + d`; on overflow (durations are capped far below it) the timer fires at once.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// Settings a session needs, shared by all sessions of a worker.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub tenant_separator: String,
    pub context_variables: Vec<String>,
    pub value_separator: String,
    pub superuser_bypass: Vec<String>,
    pub set_role: Option<String>,
    pub tenant_allow: Option<Vec<String>>,
    pub tenant_deny: Option<Vec<String>>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub limits: Limits,
    /// Client-facing TLS (only `Disable` when no certificate is configured).
    pub client_tls: ClientTlsMode,
    /// How the upstream connection is encrypted.
    pub upstream_tls: UpstreamTlsMode,
    /// `pool_mode = session`: tenants are authenticated by the proxy and
    /// served by pooled servers (None: passthrough).
    pub pool: Option<Arc<pool::PoolSettings>>,
    /// `resolvers = FILE`: the loaded resolvers and their shared cache.
    pub resolvers: Option<Arc<crate::resolver::run::Engine>>,
    /// Index in `context_variables` of the tenant key (`tenant_key`).
    pub tenant_index: usize,
    /// `tenant_max_connections` / `tenant_rate_limit` (None: no limits).
    pub tenants: Option<Arc<crate::tenant::Tenants>>,
    /// The four session timeouts (`client_idle_timeout`, ...), read by each
    /// session from its own config.
    pub timeouts: SessionTimeouts,
}

/// The session timeouts of a tenant session; `None` is off. Each has one
/// meaning (see `session::timeouts` and `docs/architecture.md`, "Session
/// timeouts"). Superuser-bypass sessions are relayed unparsed and get none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Idle outside a transaction (FATAL 57P05).
    pub client_idle: Option<Duration>,
    /// Idle inside a transaction (FATAL 25P03).
    pub idle_transaction: Option<Duration>,
    /// A request awaiting its ReadyForQuery (cancelled, ERROR 57014).
    pub query: Option<Duration>,
    /// The session's age; it ends at its next idle moment (FATAL 57P01).
    pub lifetime: Option<Duration>,
}

impl SessionTimeouts {
    /// From the configuration: 0 means off; `tenant_query_timeout` is
    /// `query_timeout`'s pgvpd 1.0 name (validation refuses two values).
    pub fn from_config(c: &crate::config::Config) -> Self {
        let on = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        SessionTimeouts {
            client_idle: on(c.client_idle_timeout),
            idle_transaction: on(c.idle_transaction_timeout),
            query: on(c.query_timeout.or(c.tenant_query_timeout)),
            lifetime: on(c.session_lifetime),
        }
    }

    /// Whether any is on (the session then follows its protocol flow).
    pub fn any(&self) -> bool {
        self.client_idle.is_some()
            || self.idle_transaction.is_some()
            || self.query.is_some()
            || self.lifetime.is_some()
    }
}

/// Client-facing TLS policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// SSLRequest → `N`; direct TLS is a protocol violation.
    Disable,
    /// SSLRequest → `S`; plaintext startups allowed.
    Allow,
    /// SSLRequest → `S`; plaintext startups refused (FATAL 28000).
    Require,
}

/// Upstream TLS policy, as the session needs it (verification is the
/// reactor's TLS configuration's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    Disable,
    /// SSLRequest; `N` continues in plaintext.
    Prefer,
    /// SSLRequest; `N` fails the session.
    Require,
    /// No SSLRequest: TLS from the first byte (ALPN `postgresql`, PostgreSQL 17+).
    Direct,
}

impl SessionConfig {
    pub fn from_config(c: &crate::config::Config) -> Self {
        SessionConfig {
            tenant_separator: c.tenant_separator.clone(),
            context_variables: c.context_variables.clone(),
            value_separator: c.value_separator.clone(),
            superuser_bypass: c.superuser_bypass.clone(),
            set_role: c.set_role.clone(),
            tenant_allow: c.tenant_allow.clone(),
            tenant_deny: c.tenant_deny.clone(),
            handshake_timeout: c.handshake_timeout,
            connect_timeout: c.upstream_connect_timeout,
            limits: Limits::default(),
            client_tls: match c.client_tls {
                crate::config::ClientTls::Disable => ClientTlsMode::Disable,
                crate::config::ClientTls::Allow => ClientTlsMode::Allow,
                crate::config::ClientTls::Require => ClientTlsMode::Require,
            },
            upstream_tls: match c.upstream_tls {
                crate::config::UpstreamTls::Disable => UpstreamTlsMode::Disable,
                crate::config::UpstreamTls::Prefer => UpstreamTlsMode::Prefer,
                _ if c.upstream_tls_direct => UpstreamTlsMode::Direct,
                _ => UpstreamTlsMode::Require,
            },
            pool: None,
            resolvers: None,
            tenant_index: c
                .tenant_key
                .as_ref()
                .and_then(|k| c.context_variables.iter().position(|v| v == k))
                .unwrap_or(0),
            tenants: None,
            timeouts: SessionTimeouts::from_config(c),
        }
    }
}

/// What a handshake carries until the upstream is ready and, for tenants,
/// until the context is set.
#[derive(Debug)]
struct Handshake {
    /// Upstream login role (from the user name).
    role: String,
    /// One value per context variable.
    values: Vec<String>,
    /// The startup message to send once the upstream link is ready.
    startup: Vec<u8>,
    /// What follows the startup.
    then: AfterStartup,
    /// The upstream link is TLS (SASL `-PLUS` mechanisms are hidden from the client).
    server_tls: bool,
    /// Pool mode: the pooled server lent to this client (during `Injecting`).
    link: Option<Box<ServerLink>>,
    /// Pool mode: whether the context batch was resent after a late cancel.
    retry: BatchRetry,
    /// Pool mode: the client's allowed startup settings (set on the lent server).
    settings: Vec<(String, String)>,
    /// Pool mode: the proxy-issued cancel key shown to the client.
    client_key: Option<(i32, [u8; 4])>,
}

/// Pool mode: a context batch cancelled by a late cancel meant for the
/// server's previous client is skipped to its ReadyForQuery and sent once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchRetry {
    /// First attempt.
    None,
    /// Cancelled: dropping its remaining answers until ReadyForQuery.
    Skipping,
    /// Resent; another failure is final.
    Resent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterStartup {
    /// Tenant: relay authentication, then set the context.
    Authenticate,
    /// Superuser bypass: relay everything untouched.
    Relay,
    /// A CancelRequest (`startup`) to forward once the upstream link is
    /// ready (through TLS when `upstream_tls` asks for it), then close.
    Cancel,
}

#[derive(Debug)]
enum AuthStep {
    /// No client message expected; client bytes are held.
    AwaitServer,
    /// One `p` expected, and what to do with it.
    AwaitClient { answer: ClientAnswer },
    /// The proxy runs SCRAM with the server itself (TLS on both sides: a
    /// relayed exchange would fail the server's channel-binding downgrade check).
    Scram(Box<ScramClient>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAnswer {
    /// Forward the client's `p` verbatim (cleartext, SASL, ...).
    Relay,
    /// We asked for cleartext in place of the server's MD5 challenge: answer
    /// the server with the MD5 response for the role.
    Md5([u8; 4]),
    /// We asked for cleartext (over the client's TLS link) to run SCRAM upstream.
    ScramPassword,
}

#[derive(Debug)]
enum Phase {
    Startup {
        negotiations: u8,
        tls: bool,
    },
    ClientTlsPending {
        negotiations: u8,
    },
    Connecting(Box<Handshake>),
    UpstreamSsl(Box<Handshake>),
    UpstreamTlsPending(Box<Handshake>),
    Authenticating(Box<Handshake>, AuthStep),
    PostAuth(Box<Handshake>),
    /// Context resolvers run on the server before the context batch.
    Resolving(Box<Handshake>, Box<crate::resolver::run::Run>),
    Injecting(Box<Handshake>, Step),
    Transparent,
    /// Pool mode: the proxy authenticates the client.
    PoolAuth(Box<Handshake>, Box<crate::conn::pool_auth::ClientAuth>),
    /// Pool mode: authenticated, queued for a server; client bytes are held.
    PoolWait(Box<Handshake>),
    /// Pool mode: relaying with a lent server, every message counted.
    PoolRelay(Box<pool::Relay>),
    /// Transaction mode: between transactions, no server; client bytes are held.
    TxIdle,
    /// Transaction mode: queued for a server for the next transaction.
    TxWait,
    CancelConnecting,
    CancelSending,
    Draining {
        toward: Side,
    },
    Closed,
    Poisoned,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Startup { .. } => "startup",
            Phase::ClientTlsPending { .. } => "tls handshake",
            Phase::Connecting(_) | Phase::CancelConnecting => "upstream connect",
            Phase::UpstreamSsl(_) | Phase::UpstreamTlsPending(_) => "upstream tls",
            Phase::Authenticating(..) => "authentication",
            Phase::PostAuth(_) => "post-auth",
            Phase::Resolving(..) => "context resolvers",
            Phase::Injecting(..) => "context injection",
            Phase::Transparent => "transparent",
            Phase::PoolAuth(..) => "pool authentication",
            Phase::PoolWait(_) => "pool wait",
            Phase::PoolRelay(_) => "pooled",
            Phase::TxIdle => "between transactions",
            Phase::TxWait => "transaction wait",
            Phase::CancelSending => "cancel",
            Phase::Draining { .. } => "draining",
            Phase::Closed => "closed",
            Phase::Poisoned => "poisoned",
        }
    }
}

/// Facts about the session for log lines (set as they become known).
#[derive(Debug, Default, Clone)]
pub struct SessionInfo {
    pub role: String,
    pub database: String,
    pub tenant: String,
    pub bypass: bool,
    /// Resolver results taken from the cache, and resolver queries run.
    pub resolver_hits: u32,
    pub resolver_queries: u32,
}

/// One client connection and its upstream server.
pub struct Session {
    cfg: Arc<SessionConfig>,
    phase: Phase,
    c2s: Option<ByteRing>,
    s2c: Option<ByteRing>,
    to_client: Vec<u8>,
    to_server: Vec<u8>,
    timers: TimerTable,
    action: Option<Action>,
    close: Option<(CloseReason, String)>,
    /// Rings carried authentication bytes: zero them before reuse.
    wipe_rings: bool,
    /// Set when the client link is TLS: the nonce for an upstream SCRAM
    /// exchange run by the proxy (see `AuthStep::Scram`).
    scram_nonce: Option<[u8; SCRAM_NONCE_LEN]>,
    /// Pool mode: the peer is on a loopback address (cleartext passwords allowed).
    peer_loopback: bool,
    /// Pool mode: random bytes for the proxy's SCRAM server nonce.
    pool_nonce: [u8; SCRAM_NONCE_LEN],
    /// The key of a CancelRequest this connection carries.
    cancel_key: Option<(i32, Vec<u8>)>,
    /// Transaction mode: the client's context, kept between transactions.
    tx: Option<Box<txn::TxCtx>>,
    /// The tenant's session slot (tenant limits), released on drop.
    admitted: Option<crate::tenant::Admitted>,
    /// Unique among the process's connections (the reactor's id): which
    /// client a pooled server's context belongs to.
    client_id: u64,
    /// When the connection was accepted (`session_lifetime` counts from it).
    born: Instant,
    /// The session timeouts' state, once the session started (only when
    /// one is configured).
    watch: Option<Box<timeouts::Watch>>,
    /// Passthrough with `query_timeout`: the server's BackendKeyData (pid,
    /// key), for the proxy's own CancelRequest.
    backend_key: Option<(i32, Vec<u8>)>,
    pub info: SessionInfo,
}

impl Session {
    pub fn new(cfg: Arc<SessionConfig>, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(TimerKind::Handshake, after(now, cfg.handshake_timeout));
        Session {
            cfg,
            phase: Phase::Startup {
                negotiations: 0,
                tls: false,
            },
            c2s: None,
            s2c: None,
            to_client: Vec::new(),
            to_server: Vec::new(),
            timers,
            action: None,
            close: None,
            wipe_rings: true,
            scram_nonce: None,
            peer_loopback: false,
            pool_nonce: [0; SCRAM_NONCE_LEN],
            cancel_key: None,
            tx: None,
            admitted: None,
            client_id: 0,
            born: now,
            watch: None,
            backend_key: None,
            info: SessionInfo::default(),
        }
    }

    /// The reactor's id of this connection (unique in the process).
    pub fn set_client_id(&mut self, id: u64) {
        self.client_id = id;
    }

    /// The (pid, key) of the CancelRequest this connection forwards.
    pub fn cancel_key(&self) -> Option<&(i32, Vec<u8>)> {
        match &self.phase {
            Phase::CancelConnecting => self.cancel_key.as_ref(),
            Phase::Connecting(hs) if hs.then == AfterStartup::Cancel => self.cancel_key.as_ref(),
            _ => None,
        }
    }

    /// Pool mode: forward the cancel with the key of the backend serving
    /// the client now, in place of the proxy-issued one.
    pub fn retarget_cancel(&mut self, pid: i32, key: &[u8]) {
        let mut packet = Vec::new();
        if encode::cancel_request(&mut packet, pid, key).is_err() {
            self.finish(CloseReason::CancelForwarded, "bad backend key".into());
            return;
        }
        match &mut self.phase {
            Phase::CancelConnecting => self.to_server = packet,
            Phase::Connecting(hs) if hs.then == AfterStartup::Cancel => hs.startup = packet,
            _ => {}
        }
    }

    /// Facts about the peer the reactor knows at accept (pool mode uses them):
    /// whether it is on a loopback address, and fresh random bytes.
    pub fn set_peer(&mut self, loopback: bool, nonce: [u8; SCRAM_NONCE_LEN]) {
        self.peer_loopback = loopback;
        self.pool_nonce = nonce;
    }

    // ----------------------------------------------------------------- outputs

    /// The next action for the reactor, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.action.is_none() {
            if let Some(a) = self.take_cancel_action() {
                return Some(a);
            }
            self.tx_poll();
        }
        self.action.take()
    }

    /// `Some` once the session is over: reason and a detail for the log.
    pub fn closed(&self) -> Option<(CloseReason, &str)> {
        match self.phase {
            Phase::Closed => self.close.as_ref().map(|(r, d)| (*r, d.as_str())),
            _ => None,
        }
    }

    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// True while the upstream socket should exist but is not connected.
    pub fn server_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting(_) | Phase::CancelConnecting)
    }

    /// Where a close is flushing to, while draining.
    pub fn draining_toward(&self) -> Option<Side> {
        match self.phase {
            Phase::Draining { toward } => Some(toward),
            _ => None,
        }
    }

    fn relaying(&self) -> bool {
        matches!(self.phase, Phase::Transparent | Phase::PoolRelay(_))
    }

    pub fn wants_client_read(&self) -> bool {
        let open = matches!(
            self.phase,
            Phase::Startup { .. }
                | Phase::Connecting(_)
                | Phase::UpstreamSsl(_)
                | Phase::UpstreamTlsPending(_)
                | Phase::Authenticating(..)
                | Phase::PostAuth(_)
                | Phase::Resolving(..)
                | Phase::Injecting(..)
                | Phase::Transparent
                | Phase::PoolAuth(..)
                | Phase::PoolWait(_)
        ) || self.pooled_wants_client_read();
        open && self.to_client.len() < OUT_CAP
            && !self.c2s.as_ref().is_some_and(|r| r.is_full())
            && !self.watch_backpressure()
    }

    pub fn wants_server_read(&self) -> bool {
        let open = matches!(
            self.phase,
            Phase::UpstreamSsl(_)
                | Phase::Authenticating(..)
                | Phase::PostAuth(_)
                | Phase::Resolving(..)
                | Phase::Injecting(..)
                | Phase::Transparent
                | Phase::PoolRelay(_)
        );
        open && self.to_client.len() < OUT_CAP && !self.s2c.as_ref().is_some_and(|r| r.is_full())
    }

    /// Bytes to write to the client: generated output first, then relayed bytes.
    pub fn client_output(&self) -> (&[u8], &[u8]) {
        if !self.to_client.is_empty() {
            return (&self.to_client, &[]);
        }
        if self.tx_swallowing() || self.pooled_end_pending() {
            return (&[], &[]);
        }
        // Cuts in the server stream: the rewriting's (transaction mode) and
        // an ErrorResponse the timeouts must look at first.
        let mut cut = self.watch_stop_cut();
        if let Phase::PoolRelay(relay) = &self.phase
            && let Some(c) = relay.rw.as_ref().and_then(|rw| rw.client_allowance())
        {
            cut = Some(cut.map_or(c, |x| x.min(c)));
        }
        if let Some(cut) = cut
            // TxIdle: a slow client still reads its last transaction's answers.
            && matches!(
                self.phase,
                Phase::Transparent | Phase::PoolRelay(_) | Phase::TxIdle
            )
            && let Some(r) = &self.s2c
        {
            let (a, b) = r.readable();
            return pool::head(a, b, cut);
        }
        match (&self.phase, &self.s2c) {
            (
                Phase::Transparent
                | Phase::PoolRelay(_)
                | Phase::TxIdle
                | Phase::TxWait
                | Phase::Draining {
                    toward: Side::Client,
                },
                Some(r),
            ) => r.readable(),
            _ => (&[], &[]),
        }
    }

    /// Bytes to write to the server (only once connected).
    pub fn server_output(&self) -> (&[u8], &[u8]) {
        if self.server_connecting() {
            return (&[], &[]);
        }
        if !self.to_server.is_empty() {
            return (&self.to_server, &[]);
        }
        if matches!(self.phase, Phase::PoolRelay(_)) {
            return self.pooled_server_output();
        }
        if matches!(self.phase, Phase::Transparent) && self.cancel_pending() {
            // Client bytes wait until the proxy's cancel is resolved.
            return (&[], &[]);
        }
        match (&self.phase, &self.c2s) {
            (
                Phase::Transparent
                | Phase::Draining {
                    toward: Side::Server,
                },
                Some(r),
            ) => r.readable(),
            _ => (&[], &[]),
        }
    }

    // ------------------------------------------------------------------ inputs

    /// Free space to read client bytes into (allocating the ring if needed).
    pub fn client_read_buf(&mut self, pool: &mut BufPool) -> &mut [u8] {
        self.c2s
            .get_or_insert_with(|| pool.checkout())
            .free_contiguous_mut()
    }

    pub fn server_read_buf(&mut self, pool: &mut BufPool) -> &mut [u8] {
        self.s2c
            .get_or_insert_with(|| pool.checkout())
            .free_contiguous_mut()
    }

    /// `n` bytes were read into `client_read_buf()`.
    pub fn handle_client_read(&mut self, n: usize, now: Instant) {
        if let Some(r) = self.c2s.as_mut() {
            r.commit(n);
        }
        self.watch_client_read(n, now);
        self.scan_client(n, now);
        self.process(now);
    }

    pub fn handle_server_read(&mut self, n: usize, now: Instant) {
        if let Some(r) = self.s2c.as_mut() {
            r.commit(n);
        }
        self.watch_server_read(n, now);
        self.scan_server(n, now);
        self.process(now);
    }

    /// The client closed its side (or reset).
    pub fn handle_client_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Transparent => {
                let pending =
                    !self.to_server.is_empty() || self.c2s.as_ref().is_some_and(|r| !r.is_empty());
                if pending {
                    self.drain(Side::Server, CloseReason::ClientEof, String::new(), now);
                } else {
                    self.finish(CloseReason::ClientEof, String::new());
                }
            }
            Phase::PoolRelay(_) => self.pooled_client_eof(),
            Phase::CancelConnecting
            | Phase::CancelSending
            | Phase::Draining { .. }
            | Phase::Closed => {}
            _ => self.finish(
                CloseReason::ClientEof,
                format!("during {}", self.phase.name()),
            ),
        }
    }

    /// The server closed its side (or reset).
    pub fn handle_server_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Transparent | Phase::PoolRelay(_) => {
                let pending =
                    !self.to_client.is_empty() || self.s2c.as_ref().is_some_and(|r| !r.is_empty());
                if pending {
                    self.drain(Side::Client, CloseReason::ServerEof, String::new(), now);
                } else {
                    self.finish(CloseReason::ServerEof, String::new());
                }
            }
            Phase::CancelSending | Phase::CancelConnecting => {
                self.finish(CloseReason::CancelForwarded, String::new())
            }
            Phase::Draining { .. } | Phase::Closed => {}
            _ => {
                let phase = self.phase.name();
                self.fail(
                    "08006",
                    &format!("upstream server closed the connection during {phase}"),
                    CloseReason::ServerEof,
                    now,
                );
            }
        }
    }

    /// `n` bytes of `client_output()` were written.
    pub fn handle_client_written(&mut self, n: usize, pool: &mut BufPool, now: Instant) {
        if !self.to_client.is_empty() {
            let n = n.min(self.to_client.len());
            self.to_client.drain(..n);
            if self.to_client.is_empty() && self.relaying() {
                self.to_client = Vec::new();
            }
        } else if let Some(r) = self.s2c.as_mut() {
            r.consume(n);
            self.rw_client_consumed(n);
        }
        self.after_write(pool, now);
    }

    pub fn handle_server_written(&mut self, n: usize, pool: &mut BufPool, now: Instant) {
        if !self.to_server.is_empty() {
            let n = n.min(self.to_server.len());
            self.to_server.drain(..n);
            if self.to_server.is_empty() && self.relaying() {
                self.to_server = Vec::new();
            }
        } else if let Some(r) = self.c2s.as_mut() {
            r.consume(n);
            self.pooled_forwarded(n);
        }
        self.after_write(pool, now);
    }

    /// The upstream TCP connection is established.
    pub fn handle_server_connected(&mut self, now: Instant) {
        self.timers.clear(TimerKind::Connect);
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        self.phase = match old {
            Phase::Connecting(hs) => match self.cfg.upstream_tls {
                UpstreamTlsMode::Disable => self.upstream_ready(hs),
                UpstreamTlsMode::Direct => {
                    self.action = Some(Action::StartServerTls);
                    Phase::UpstreamTlsPending(hs)
                }
                UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => {
                    encode::ssl_request(&mut self.to_server);
                    Phase::UpstreamSsl(hs)
                }
            },
            Phase::CancelConnecting => {
                // The 16..=264 bytes must leave within the drain bound too.
                self.timers.set(TimerKind::Drain, after(now, DRAIN_TIMEOUT));
                Phase::CancelSending
            }
            other => other,
        };
        self.process(now);
    }

    /// The upstream TLS handshake finished.
    pub fn handle_server_tls_ready(&mut self, now: Instant) {
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        self.phase = match old {
            Phase::UpstreamTlsPending(mut hs) => {
                hs.server_tls = true;
                self.upstream_ready(hs)
            }
            other => other,
        };
        self.process(now);
    }

    /// The upstream TLS handshake failed (`detail`: rustls's reason).
    pub fn handle_server_tls_failed(&mut self, detail: &str, now: Instant) {
        self.fail(
            "08006",
            &format!("TLS handshake with the upstream server failed: {detail}"),
            CloseReason::ConnectFailed,
            now,
        );
    }

    /// The upstream link is usable: send the startup and move on.
    fn upstream_ready(&mut self, hs: Box<Handshake>) -> Phase {
        self.to_server.extend_from_slice(&hs.startup);
        match hs.then {
            AfterStartup::Authenticate => Phase::Authenticating(hs, AuthStep::AwaitServer),
            AfterStartup::Cancel => Phase::CancelSending,
            AfterStartup::Relay => {
                // Superuser bypass: from here on the bytes are relayed untouched.
                self.timers.clear(TimerKind::Handshake);
                self.action = Some(Action::SessionStarted);
                Phase::Transparent
            }
        }
    }

    /// The reactor wrapped the client socket in TLS (after flushing `S`, or at
    /// accept on `tls_port`). `nonce`: fresh random bytes, used if the proxy has
    /// to run SCRAM with the server itself.
    pub fn handle_client_tls_started(&mut self, nonce: [u8; SCRAM_NONCE_LEN]) {
        let negotiations = match self.phase {
            Phase::ClientTlsPending { negotiations, .. } => negotiations,
            Phase::Startup {
                negotiations,
                tls: false,
            } => negotiations,
            _ => return,
        };
        self.scram_nonce = Some(nonce);
        self.phase = Phase::Startup {
            negotiations,
            tls: true,
        };
    }

    /// For direct TLS: the bytes already read (the start of the ClientHello),
    /// which belong to the TLS stream, not to the protocol.
    pub fn take_client_tls_prefix(&mut self) -> Vec<u8> {
        let Some(r) = self.c2s.as_mut() else {
            return Vec::new();
        };
        let (a, b) = r.readable();
        let v = [a, b].concat();
        r.clear();
        v
    }

    /// The upstream connect failed (`detail` is the OS error text).
    pub fn handle_server_connect_failed(&mut self, detail: &str, now: Instant) {
        if matches!(self.phase, Phase::CancelConnecting) {
            self.finish(CloseReason::ConnectFailed, detail.to_string());
            return;
        }
        self.fail(
            "08006",
            &format!("could not connect to the upstream server: {detail}"),
            CloseReason::ConnectFailed,
            now,
        );
    }

    /// Forces the session closed (shutdown, I/O error, panic).
    pub fn abort(&mut self, reason: CloseReason, detail: String) {
        self.finish(reason, detail);
    }

    /// The admin API killed this session's tenant: FATAL 57P01 where nothing
    /// of the server's is half-way to the client, else a plain close (a
    /// message of the proxy's cannot be put in the middle of another).
    pub fn kill(&mut self, now: Instant) {
        const MSG: &str = "terminating connection: an administrator killed this tenant's sessions";
        let fatal_fits = match &self.phase {
            Phase::Startup { .. }
            | Phase::Connecting(_)
            | Phase::UpstreamSsl(_)
            | Phase::UpstreamTlsPending(_)
            | Phase::PostAuth(_)
            | Phase::Resolving(..)
            | Phase::Injecting(..)
            | Phase::PoolWait(_)
            | Phase::TxIdle
            | Phase::TxWait => true,
            Phase::PoolRelay(r) => r.tracker.at_rest(),
            _ => false,
        };
        if fatal_fits {
            self.fail("57P01", MSG, CloseReason::AdminKill, now);
        } else {
            self.finish(CloseReason::AdminKill, MSG.to_string());
        }
    }

    /// Called when `next_deadline()` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(kind) = self.timers.take_expired(now) {
            match kind {
                TimerKind::Handshake if matches!(self.phase, Phase::ClientTlsPending { .. }) => {
                    self.finish(CloseReason::HandshakeTimeout, "during tls handshake".into());
                }
                TimerKind::Handshake => {
                    let phase = self.phase.name();
                    self.fail(
                        "08006",
                        &format!(
                            "handshake timeout: no progress in the {phase} phase within {}s",
                            self.cfg.handshake_timeout.as_secs()
                        ),
                        CloseReason::HandshakeTimeout,
                        now,
                    );
                }
                TimerKind::Connect => {
                    if matches!(self.phase, Phase::CancelConnecting | Phase::CancelSending) {
                        self.finish(CloseReason::ConnectTimeout, String::new());
                    } else {
                        let secs = self.cfg.connect_timeout.as_secs();
                        self.fail(
                            "08006",
                            &format!(
                                "could not connect to the upstream server: timeout after {secs}s"
                            ),
                            CloseReason::ConnectTimeout,
                            now,
                        );
                    }
                }
                TimerKind::Checkout => self.checkout_timed_out(now),
                TimerKind::Resolver => self.resolver_timer(now),
                TimerKind::ClientIdle => self.idle_timed_out(false, now),
                TimerKind::IdleTransaction => self.idle_timed_out(true, now),
                TimerKind::Query => self.query_timed_out(now),
                TimerKind::QueryCancel => self.query_cancel_expired(now),
                TimerKind::Lifetime => self.lifetime_reached(),
                TimerKind::Drain => {
                    let reason = self
                        .close
                        .as_ref()
                        .map(|c| c.0)
                        .unwrap_or(CloseReason::DrainTimeout);
                    self.finish(reason, "drain timeout".to_string());
                }
            }
        }
        // Session timeouts: a timer that outlived its state is armed again
        // for the new one; a resolved cancel releases held input.
        if self.watch.is_some() {
            self.process(now);
        }
    }

    /// Returns empty rings to the pool (call after writes and before idling).
    pub fn release_idle_buffers(&mut self, pool: &mut BufPool) {
        if !self.relaying() {
            return;
        }
        let wipe = self.wipe_rings;
        let mut released = false;
        for ring in [&mut self.c2s, &mut self.s2c] {
            if ring.as_ref().is_some_and(|r| r.is_empty())
                && let Some(r) = ring.take()
            {
                pool.checkin(r, wipe);
                released = true;
            }
        }
        if released && self.c2s.is_none() && self.s2c.is_none() {
            self.wipe_rings = false;
        }
    }

    /// Gives every ring back (the session is closing).
    pub fn release_all_buffers(&mut self, pool: &mut BufPool) {
        let wipe = self.wipe_rings;
        if let Some(r) = self.c2s.take() {
            pool.checkin(r, wipe);
        }
        if let Some(r) = self.s2c.take() {
            pool.checkin(r, wipe);
        }
    }

    // --------------------------------------------------------------- internals

    fn after_write(&mut self, pool: &mut BufPool, now: Instant) {
        match self.phase {
            Phase::Draining { toward } => {
                let (a, _) = match toward {
                    Side::Client => self.client_output(),
                    Side::Server => self.server_output(),
                };
                if a.is_empty() {
                    let (reason, detail) = self
                        .close
                        .take()
                        .unwrap_or((CloseReason::DrainTimeout, String::new()));
                    self.finish(reason, detail);
                }
            }
            Phase::CancelSending if self.to_server.is_empty() => {
                self.finish(CloseReason::CancelForwarded, String::new());
            }
            Phase::Transparent => self.release_idle_buffers(pool),
            Phase::PoolRelay(_) => {
                self.release_idle_buffers(pool);
                self.check_release();
            }
            _ => {}
        }
        // Output drained below the cap: input may be consumed again.
        self.process(now);
    }

    /// True once the session is closing: input is no longer relayed.
    fn is_ending(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. } | Phase::Closed)
    }

    /// Ends the session now.
    fn finish(&mut self, reason: CloseReason, detail: String) {
        if !matches!(self.phase, Phase::Closed) {
            self.close = Some((reason, detail));
            self.phase = Phase::Closed;
            self.timers = TimerTable::default();
            // A closed session offers nothing more to either peer.
            self.to_client = Vec::new();
            self.to_server = Vec::new();
            self.action = None;
        }
    }

    /// Flushes what is queued toward `toward`, then closes with `reason`.
    fn drain(&mut self, toward: Side, reason: CloseReason, detail: String, now: Instant) {
        self.close = Some((reason, detail));
        self.phase = Phase::Draining { toward };
        self.timers = TimerTable::default();
        self.timers.set(TimerKind::Drain, after(now, DRAIN_TIMEOUT));
    }

    /// Sends a FATAL ErrorResponse to the client and closes after it is flushed.
    /// Nothing the server sent and nothing the client sent is relayed afterwards.
    fn fail(&mut self, code: &str, message: &str, reason: CloseReason, now: Instant) {
        if matches!(self.phase, Phase::Closed | Phase::Draining { .. }) {
            return;
        }
        if let Some(r) = self.s2c.as_mut() {
            r.clear();
        }
        if let Some(r) = self.c2s.as_mut() {
            r.clear();
        }
        self.to_server.clear();
        encode::error_response(&mut self.to_client, "FATAL", code, message);
        self.drain(Side::Client, reason, message.to_string(), now);
    }

    fn violation(&mut self, side: Side, err: ProtoError, now: Instant) {
        if let ProtoError::Unsupported(_) = err {
            let msg = format!("{err} (use pool_mode = session for them)");
            self.fail("0A000", &msg, CloseReason::ClientProtocol, now);
            return;
        }
        let (reason, msg) = match side {
            Side::Client => (
                CloseReason::ClientProtocol,
                format!("protocol violation: {err}"),
            ),
            Side::Server => (
                CloseReason::ServerProtocol,
                format!("protocol violation by the upstream server: {err}"),
            ),
        };
        self.fail("08P01", &msg, reason, now);
    }

    /// Runs the phase machine over the buffered input until it needs more,
    /// then brings the session timeouts up to date.
    fn process(&mut self, now: Instant) {
        self.process_input(now);
        if self.watch_step(now) {
            // A resolved cancel releases the client bytes it held.
            self.process_input(now);
        }
    }

    fn process_input(&mut self, now: Instant) {
        // Each round consumes at least one message or changes phase; the bound
        // is the most messages a ring can hold, so this cannot spin.
        for _ in 0..crate::buf::RING_CAPACITY {
            if self.to_client.len() >= OUT_CAP || self.to_server.len() >= OUT_CAP {
                return;
            }
            let progressed = match self.phase {
                Phase::Startup { .. } => self.step_startup(now),
                Phase::PoolAuth(..) => self.step_pool_auth(now),
                Phase::UpstreamSsl(_) => self.step_upstream_ssl(now),
                Phase::Authenticating(_, AuthStep::AwaitClient { .. }) => {
                    self.step_client_auth(now) || self.step_server(now)
                }
                Phase::Authenticating(..)
                | Phase::PostAuth(_)
                | Phase::Resolving(..)
                | Phase::Injecting(..) => self.step_server(now),
                Phase::PoolRelay(_) => {
                    self.step_scan_held(now)
                        || self.step_tx_swallow(now)
                        || (!self.cancel_pending()
                            && match self.step_tx_forward() {
                                Ok(p) => p,
                                Err(e) => {
                                    self.violation(Side::Client, e, now);
                                    true
                                }
                            })
                        || self.rw_apply_drops()
                        || self.step_cancel_error()
                        || self.tx_next(now)
                }
                Phase::Transparent => self.step_cancel_error(),
                Phase::TxIdle => self.step_cancel_error() || self.tx_next(now),
                _ => false,
            };
            if !progressed {
                return;
            }
        }
    }

    /// Frames one message from `ring` (taken out of the session) in `phase`
    /// and hands its tag, wire bytes and body to `f`; the message is consumed
    /// afterwards. `Ok(None)`: no whole message yet.
    fn next_message<R>(
        &mut self,
        ring: &mut ByteRing,
        phase: FramePhase,
        f: impl FnOnce(&mut Self, u8, &[u8], &[u8]) -> R,
    ) -> Result<Option<R>, ProtoError> {
        let lim = self.cfg.limits;
        let Some((t, wire_len)) = Self::frame_len(ring, phase, &lim)? else {
            return Ok(None);
        };
        let data = ring.contiguous();
        let wire = data.get(..wire_len).unwrap_or(&[]);
        let body = wire.get(5..).unwrap_or(&[]);
        let r = f(self, t, wire, body);
        ring.consume(wire_len);
        Ok(Some(r))
    }

    /// Frames one message from `ring` in `phase`. `Err` on invalid input; also
    /// when the ring is full but holds no complete message (it can never fit).
    fn frame_len(
        ring: &mut ByteRing,
        phase: FramePhase,
        lim: &Limits,
    ) -> Result<Option<(u8, usize)>, ProtoError> {
        let full = ring.is_full();
        let data = ring.contiguous();
        match parse_frame(data, phase, lim)? {
            Some(f) => Ok(Some((f.tag, f.wire_len))),
            None if full => Err(ProtoError::TooLong {
                tag: data.first().copied().unwrap_or(0),
                len: data.len(),
                max: data.len(),
            }),
            None => Ok(None),
        }
    }

    /// The server's one-byte answer to our SSLRequest.
    fn step_upstream_ssl(&mut self, now: Instant) -> bool {
        let Some(ring) = self.s2c.as_mut() else {
            return false;
        };
        let mut answer = [0u8; 1];
        if !ring.peek_into(&mut answer) {
            return false;
        }
        if !self.to_server.is_empty() {
            // An answer to a request not yet written: never act on it.
            ring.clear();
            self.violation(
                Side::Server,
                ProtoError::BadValue("SSLRequest answered before it was sent"),
                now,
            );
            return true;
        }
        let extra = ring.len() > 1;
        ring.clear();
        let [answer] = answer;
        if extra {
            // Bytes after the answer, before TLS, could be injected by a man in
            // the middle (CVE-2021-23222 class).
            self.violation(
                Side::Server,
                ProtoError::TrailingData("SSLRequest answer"),
                now,
            );
            return true;
        }
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        let Phase::UpstreamSsl(hs) = old else {
            self.phase = old;
            return false;
        };
        match answer {
            b'S' => {
                self.action = Some(Action::StartServerTls);
                self.phase = Phase::UpstreamTlsPending(hs);
            }
            b'N' if self.cfg.upstream_tls == UpstreamTlsMode::Prefer => {
                self.phase = self.upstream_ready(hs);
            }
            b'N' => {
                self.phase = Phase::UpstreamSsl(hs);
                self.fail(
                    "08006",
                    "the upstream server does not support TLS (upstream_tls requires it)",
                    CloseReason::ConnectFailed,
                    now,
                );
            }
            _ => {
                self.phase = Phase::UpstreamSsl(hs);
                self.violation(Side::Server, ProtoError::BadValue("SSLRequest answer"), now);
            }
        }
        true
    }

    fn step_startup(&mut self, now: Instant) -> bool {
        // Direct TLS (PostgreSQL 17 `sslnegotiation=direct`): the first byte is
        // a TLS handshake record instead of a startup length.
        if let Phase::Startup {
            negotiations: 0,
            tls: false,
        } = self.phase
            && self.cfg.client_tls != ClientTlsMode::Disable
            && self
                .c2s
                .as_ref()
                .and_then(|r| r.readable().0.first().copied())
                == Some(0x16)
        {
            self.phase = Phase::ClientTlsPending { negotiations: 0 };
            self.action = Some(Action::StartClientTls { direct: true });
            return true;
        }
        let Some(mut ring) = self.c2s.take() else {
            return false;
        };
        let lim = self.cfg.limits;
        let res = Self::frame_len(&mut ring, FramePhase::Startup, &lim);
        let progressed = match res {
            Err(e) => {
                self.c2s = Some(ring);
                self.violation(Side::Client, e, now);
                return true;
            }
            Ok(None) => false,
            Ok(Some((_, wire_len))) => {
                let data = ring.contiguous();
                let wire = data.get(..wire_len).unwrap_or(&[]);
                let trailing = data.len() > wire_len;
                let body = wire.get(4..).unwrap_or(&[]);
                let outcome = self.on_startup_packet(wire, body, trailing, now);
                ring.consume(wire_len);
                if self.is_ending() {
                    ring.clear();
                }
                outcome
            }
        };
        self.c2s = Some(ring);
        progressed
    }

    fn on_startup_packet(
        &mut self,
        wire: &[u8],
        body: &[u8],
        trailing: bool,
        now: Instant,
    ) -> bool {
        let (negotiations, tls) = match self.phase {
            Phase::Startup { negotiations, tls } => (negotiations, tls),
            _ => return false,
        };
        let packet = match frontend::decode_startup(body) {
            Ok(p) => p,
            Err(e) => {
                self.violation(Side::Client, e, now);
                return true;
            }
        };
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                if negotiations >= MAX_NEGOTIATIONS {
                    self.violation(
                        Side::Client,
                        ProtoError::BadValue("repeated encryption request"),
                        now,
                    );
                    return true;
                }
                if trailing {
                    // CVE-2021-23214 class: bytes sent before our answer could
                    // have been injected by a man in the middle.
                    let what = if matches!(packet, StartupPacket::SslRequest) {
                        "received unencrypted data after SSL request"
                    } else {
                        "received unencrypted data after GSSAPI encryption request"
                    };
                    self.fail("08P01", what, CloseReason::ClientProtocol, now);
                    return true;
                }
                let negotiations = negotiations.saturating_add(1);
                let offer_tls = matches!(packet, StartupPacket::SslRequest)
                    && !tls
                    && self.cfg.client_tls != ClientTlsMode::Disable;
                if offer_tls {
                    encode::ssl_response(&mut self.to_client, b'S');
                    self.phase = Phase::ClientTlsPending { negotiations };
                    self.action = Some(Action::StartClientTls { direct: false });
                } else {
                    // GSSAPI encryption is not offered; nor TLS inside TLS.
                    encode::ssl_response(&mut self.to_client, b'N');
                    self.phase = Phase::Startup { negotiations, tls };
                }
                true
            }
            StartupPacket::Cancel(c) => {
                // Passthrough clients hold the real upstream key: forward verbatim.
                // Pool mode: the reactor maps a proxy-issued key first
                // (`cancel_key` / `retarget_cancel`).
                self.cancel_key = Some((c.pid, c.key.to_vec()));
                if self.cfg.upstream_tls == UpstreamTlsMode::Disable {
                    self.to_server.extend_from_slice(wire);
                    self.phase = Phase::CancelConnecting;
                    self.timers.clear(TimerKind::Handshake);
                } else {
                    // The key must not cross the server link in clear: the
                    // same SSLRequest/TLS steps as a session, then the cancel.
                    // Bounded by the handshake timer.
                    let hs = Handshake {
                        role: String::new(),
                        values: Vec::new(),
                        startup: wire.to_vec(),
                        then: AfterStartup::Cancel,
                        server_tls: false,
                        link: None,
                        retry: BatchRetry::None,
                        settings: Vec::new(),
                        client_key: None,
                    };
                    self.phase = Phase::Connecting(Box::new(hs));
                }
                self.connect(now);
                true
            }
            StartupPacket::Startup(s) => {
                if !tls && self.cfg.client_tls == ClientTlsMode::Require {
                    self.fail(
                        "28000",
                        "TLS required: connect with sslmode=require (client_tls = require)",
                        CloseReason::TlsRequired,
                        now,
                    );
                    return true;
                }
                let user = s.get(b"user");
                self.info.database =
                    String::from_utf8_lossy(s.get(b"database").or(user).unwrap_or(b""))
                        .into_owned();
                let kind = username::classify(
                    user,
                    &self.cfg.superuser_bypass,
                    &self.cfg.tenant_separator,
                    self.cfg.context_variables.len(),
                    &self.cfg.value_separator,
                );
                match kind {
                    Err(e) => {
                        self.fail(e.code, &e.message, CloseReason::BadUsername, now);
                    }
                    Ok(UserKind::Bypass) => {
                        self.info.role = String::from_utf8_lossy(user.unwrap_or(b"")).into_owned();
                        self.info.bypass = true;
                        let hs = Handshake {
                            role: self.info.role.clone(),
                            values: Vec::new(),
                            startup: wire.to_vec(),
                            then: AfterStartup::Relay,
                            server_tls: false,
                            link: None,
                            retry: BatchRetry::None,
                            settings: Vec::new(),
                            client_key: None,
                        };
                        self.phase = Phase::Connecting(Box::new(hs));
                        self.connect(now);
                    }
                    Ok(UserKind::Tenant { role, values }) => {
                        self.info.role = role.to_string();
                        self.info.tenant = values
                            .get(self.cfg.tenant_index)
                            .copied()
                            .unwrap_or("")
                            .to_string();
                        if !self.tenant_allowed(&self.info.tenant) {
                            crate::stats::inc(&crate::stats::STATS.tenant_rejected_deny);
                            self.fail(
                                "28000",
                                "tenant access denied",
                                CloseReason::TenantDenied,
                                now,
                            );
                            return true;
                        }
                        if let Some(pool) = self.cfg.pool.clone() {
                            let values: Vec<String> =
                                values.iter().map(|v| v.to_string()).collect();
                            self.start_pooled(&s, role, values, &pool, tls, now);
                            return true;
                        }
                        // Rewritten startup: every client parameter kept in order,
                        // `user` replaced by the role.
                        let params: Vec<(&[u8], &[u8])> = s
                            .params()
                            .map(|(k, v)| {
                                if k == b"user" {
                                    (k, role.as_bytes())
                                } else {
                                    (k, v)
                                }
                            })
                            .collect();
                        let mut startup = Vec::new();
                        if let Err(e) = encode::startup_message(&mut startup, s.version, &params) {
                            self.violation(Side::Client, e, now);
                            return true;
                        }
                        let hs = Handshake {
                            role: role.to_string(),
                            values: values.iter().map(|v| v.to_string()).collect(),
                            startup,
                            then: AfterStartup::Authenticate,
                            server_tls: false,
                            link: None,
                            retry: BatchRetry::None,
                            settings: Vec::new(),
                            client_key: None,
                        };
                        self.phase = Phase::Connecting(Box::new(hs));
                        self.connect(now);
                    }
                }
                true
            }
        }
    }

    /// The tenant authenticated: take one of its session slots (tenant
    /// limits). Err: SQLSTATE and message of the refusal.
    pub(super) fn admit_tenant(&mut self, now: Instant) -> Result<(), (&'static str, String)> {
        let Some(reg) = self.cfg.tenants.as_ref() else {
            return Ok(());
        };
        match reg.admit(&self.info.tenant, now) {
            Ok(slot) => {
                self.admitted = Some(slot);
                Ok(())
            }
            Err(r) => {
                let counter = match r {
                    crate::tenant::Refused::Rate(_) => &crate::stats::STATS.tenant_rejected_rate,
                    _ => &crate::stats::STATS.tenant_rejected_limit,
                };
                crate::stats::inc(counter);
                Err(r.message(&self.info.tenant))
            }
        }
    }

    fn tenant_allowed(&self, tenant: &str) -> bool {
        if let Some(deny) = &self.cfg.tenant_deny
            && deny.iter().any(|d| d == tenant)
        {
            return false;
        }
        if let Some(allow) = &self.cfg.tenant_allow {
            return allow.iter().any(|a| a == tenant);
        }
        true
    }

    fn connect(&mut self, now: Instant) {
        self.timers
            .set(TimerKind::Connect, after(now, self.cfg.connect_timeout));
        self.action = Some(Action::ConnectUpstream);
    }

    /// One client message while a challenge is outstanding.
    fn step_client_auth(&mut self, now: Instant) -> bool {
        let Phase::Authenticating(_, AuthStep::AwaitClient { answer }) = self.phase else {
            return false;
        };
        let Some(mut ring) = self.c2s.take() else {
            return false;
        };
        let lim = self.cfg.limits;
        let res = Self::frame_len(&mut ring, FramePhase::ClientAuth, &lim);
        let outcome: Result<Option<AuthStep>, ProtoError> = match res {
            Err(e) => Err(e),
            Ok(None) => Ok(None),
            Ok(Some((_, wire_len))) => {
                let data = ring.contiguous();
                let wire = data.get(..wire_len).unwrap_or(&[]);
                let body = wire.get(5..).unwrap_or(&[]);
                let r = match answer {
                    ClientAnswer::Relay => {
                        self.to_server.extend_from_slice(wire);
                        Ok(AuthStep::AwaitServer)
                    }
                    ClientAnswer::Md5(salt) => frontend::decode_password(body).and_then(|pw| {
                        let resp = md5_password_response(self.info.role.as_bytes(), pw, salt);
                        encode::password_message(&mut self.to_server, &resp)
                            .map(|()| AuthStep::AwaitServer)
                    }),
                    ClientAnswer::ScramPassword => frontend::decode_password(body).and_then(|pw| {
                        let nonce = self.scram_nonce.unwrap_or([0; SCRAM_NONCE_LEN]);
                        let client = ScramClient::new(pw, &nonce);
                        encode::sasl_initial_response(
                            &mut self.to_server,
                            scram::MECHANISM.as_bytes(),
                            Some(&client.client_first()),
                        )
                        .map(|()| AuthStep::Scram(Box::new(client)))
                    }),
                };
                ring.consume(wire_len);
                if self.is_ending() {
                    ring.clear();
                }
                r.map(Some)
            }
        };
        self.c2s = Some(ring);
        match outcome {
            Err(e) => {
                self.violation(Side::Client, e, now);
                true
            }
            Ok(Some(next)) => {
                if let Phase::Authenticating(_, step) = &mut self.phase {
                    *step = next;
                }
                true
            }
            Ok(None) => false,
        }
    }

    /// One server message in the authentication, post-auth or injection phase.
    fn step_server(&mut self, now: Instant) -> bool {
        let fphase = match self.phase {
            Phase::Authenticating(..) => FramePhase::ServerAuth,
            Phase::PostAuth(_) | Phase::Resolving(..) | Phase::Injecting(..) => FramePhase::Server,
            _ => return false,
        };
        let Some(mut ring) = self.s2c.take() else {
            return false;
        };
        let framed = self.next_message(&mut ring, fphase, |s, t, wire, body| {
            s.on_server_message(t, wire, body, now)
        });
        if self.is_ending() {
            // Nothing the server sent after an error or refusal may reach
            // the client (e.g. the ReadyForQuery after Sync).
            ring.clear();
        }
        self.s2c = Some(ring);
        match framed {
            Ok(None) => false,
            Ok(Some(Ok(()))) => true,
            Err(ProtoError::TooLong { max, .. }) if matches!(self.phase, Phase::Resolving(..)) => {
                self.resolver_too_large(max, now);
                true
            }
            Err(e) | Ok(Some(Err(e))) => {
                self.violation(Side::Server, e, now);
                true
            }
        }
    }

    /// A ParameterStatus after the login (resolvers, context batch): relayed
    /// in passthrough; in pool mode noted on the lent server and shown to
    /// the client all at once when its session starts.
    fn handshake_parameter_status(
        &mut self,
        hs: &mut Handshake,
        wire: &[u8],
        body: &[u8],
    ) -> Result<(), ProtoError> {
        let ps = backend::decode_parameter_status(body)?;
        match hs.link.as_mut() {
            Some(link) => link.note_param(ps.name, ps.value),
            None => self.to_client.extend_from_slice(wire),
        }
        Ok(())
    }

    fn on_server_message(
        &mut self,
        t: u8,
        wire: &[u8],
        body: &[u8],
        now: Instant,
    ) -> Result<(), ProtoError> {
        if matches!(self.phase, Phase::Resolving(..)) {
            return self.on_resolver_message(t, wire, body, now);
        }
        // Messages handled alike in every handshake phase.
        match t {
            tag::NOTICE_RESPONSE => {
                backend::decode_error_fields(body)?;
                self.to_client.extend_from_slice(wire);
                return Ok(());
            }
            tag::ERROR_RESPONSE => {
                let fields = backend::decode_error_fields(body)?;
                let reason = match self.phase {
                    Phase::Authenticating(..) => CloseReason::AuthFailed,
                    Phase::Injecting(..) => CloseReason::InjectionFailed,
                    _ => CloseReason::ServerError,
                };
                if let Phase::Injecting(hs, _) = &mut self.phase
                    && hs.link.is_some()
                    && hs.retry == BatchRetry::None
                    && fields.code == Some(b"57014".as_slice())
                {
                    // Pool mode: nobody asked to cancel this batch; a cancel
                    // for the server's previous client landed late (PostgreSQL
                    // signals twice). Skip to the batch's ReadyForQuery, resend.
                    hs.retry = BatchRetry::Skipping;
                    return Ok(());
                }
                if matches!(self.phase, Phase::Injecting(..)) {
                    let code = fields
                        .code
                        .and_then(|c| std::str::from_utf8(c).ok())
                        .filter(|c| c.len() == 5)
                        .unwrap_or("XX000")
                        .to_string();
                    let msg = String::from_utf8_lossy(fields.message.unwrap_or(b"unknown error"))
                        .into_owned();
                    self.fail(
                        &code,
                        &format!("could not set the tenant context: {msg}"),
                        reason,
                        now,
                    );
                } else {
                    // Relay the server's own error verbatim (e.g. 28P01), then close.
                    let detail = String::from_utf8_lossy(fields.code.unwrap_or(b"")).into_owned();
                    if let Some(r) = self.c2s.as_mut() {
                        r.clear();
                    }
                    self.to_server.clear();
                    self.to_client.extend_from_slice(wire);
                    self.drain(Side::Client, reason, detail, now);
                }
                return Ok(());
            }
            _ => {}
        }
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        self.phase = match old {
            Phase::Authenticating(hs, step) => {
                self.on_auth_message(hs, step, t, wire, body, now)?
            }
            Phase::PostAuth(hs) => match t {
                tag::PARAMETER_STATUS => {
                    backend::decode_parameter_status(body)?;
                    self.to_client.extend_from_slice(wire);
                    Phase::PostAuth(hs)
                }
                tag::BACKEND_KEY_DATA => {
                    let k = backend::decode_backend_key_data(body)?;
                    if self.cfg.timeouts.query.is_some() {
                        self.backend_key = Some((k.pid, k.key.to_vec()));
                    }
                    self.to_client.extend_from_slice(wire);
                    Phase::PostAuth(hs)
                }
                tag::READY_FOR_QUERY => {
                    backend::decode_ready_for_query(body)?;
                    self.begin_context(hs, now)
                }
                other => {
                    return Err(ProtoError::UnexpectedTag {
                        phase: FramePhase::Server,
                        tag: other,
                    });
                }
            },
            Phase::Injecting(mut hs, step) if hs.retry == BatchRetry::Skipping => {
                if t == tag::READY_FOR_QUERY {
                    backend::decode_ready_for_query(body)?;
                    hs.retry = BatchRetry::Resent;
                    self.queue_pooled_batch(&hs)?;
                    Phase::Injecting(hs, Step::SetParse)
                } else {
                    // The rest of the cancelled batch's answers.
                    Phase::Injecting(hs, step)
                }
            }
            Phase::Injecting(mut hs, step) => {
                if t == tag::PARAMETER_STATUS {
                    self.handshake_parameter_status(&mut hs, wire, body)?;
                    Phase::Injecting(hs, step)
                } else {
                    let row_owned;
                    let mut row: Option<&[Option<&[u8]>]> = None;
                    let mut status = None;
                    if t == tag::DATA_ROW {
                        let dr = backend::decode_data_row(body)?;
                        row_owned = dr.columns().collect::<Vec<_>>();
                        row = Some(&row_owned);
                    } else if t == tag::READY_FOR_QUERY {
                        status = Some(backend::decode_ready_for_query(body)?);
                    }
                    match inject::feed(step, t, row, status) {
                        Fed::More(next) => Phase::Injecting(hs, next),
                        Fed::Done if hs.link.is_some() => {
                            let link = hs.link.take();
                            self.pooled_started(link, &hs, now)
                        }
                        Fed::Done => {
                            encode::ready_for_query(&mut self.to_client, b'I');
                            self.timers.clear(TimerKind::Handshake);
                            self.action = Some(Action::SessionStarted);
                            self.start_watch(now, true);
                            Phase::Transparent
                        }
                        Fed::Refused => {
                            self.phase = Phase::Injecting(hs, step);
                            self.fail(
                                "42501",
                                "tenant sessions are refused for superuser or BYPASSRLS roles",
                                CloseReason::RoleRefused,
                                now,
                            );
                            return Ok(());
                        }
                        Fed::Unexpected => {
                            return Err(ProtoError::UnexpectedTag {
                                phase: FramePhase::Server,
                                tag: t,
                            });
                        }
                    }
                }
            }
            other => other,
        };
        Ok(())
    }

    fn on_auth_message(
        &mut self,
        hs: Box<Handshake>,
        step: AuthStep,
        t: u8,
        wire: &[u8],
        body: &[u8],
        now: Instant,
    ) -> Result<Phase, ProtoError> {
        match t {
            tag::NEGOTIATE_PROTOCOL_VERSION => {
                backend::decode_negotiate_protocol_version(body)?;
                self.to_client.extend_from_slice(wire);
                Ok(Phase::Authenticating(hs, step))
            }
            tag::AUTHENTICATION => {
                let auth = backend::decode_auth(body)?;
                let next = match step {
                    // A new request before the client answered the last one.
                    AuthStep::AwaitClient { .. } => {
                        return Err(ProtoError::UnexpectedTag {
                            phase: FramePhase::ServerAuth,
                            tag: t,
                        });
                    }
                    AuthStep::Scram(client) => self.on_scram_message(client, auth)?,
                    AuthStep::AwaitServer => match auth {
                        Auth::Ok => {
                            if let Err(refusal) = self.admit_tenant(now) {
                                self.phase = Phase::PostAuth(hs);
                                let (code, msg) = refusal;
                                self.fail(code, &msg, CloseReason::TenantLimit, now);
                                return Ok(std::mem::replace(&mut self.phase, Phase::Poisoned));
                            }
                            self.to_client.extend_from_slice(wire);
                            return Ok(Phase::PostAuth(hs));
                        }
                        Auth::Sasl { mechanisms }
                            if hs.server_tls
                                && self.scram_nonce.is_some()
                                && mechanisms.contains(scram::MECHANISM.as_bytes()) =>
                        {
                            // TLS on both sides: a relayed SCRAM exchange fails
                            // (the client, on TLS, sends the gs2 flag `y`, which a
                            // TLS server rejects as a downgrade). Take the password
                            // over the client's TLS link and run SCRAM ourselves.
                            encode::auth_cleartext_password(&mut self.to_client);
                            AuthStep::AwaitClient {
                                answer: ClientAnswer::ScramPassword,
                            }
                        }
                        Auth::Sasl { mechanisms } if hs.server_tls => {
                            // Channel binding cannot cross the proxy (the client
                            // would bind to our certificate, the server to its own):
                            // offer the client only the mechanisms without `-PLUS`.
                            let plain: Vec<&[u8]> = mechanisms
                                .iter()
                                .filter(|m| !m.ends_with(b"-PLUS"))
                                .collect();
                            if plain.is_empty() {
                                return Err(ProtoError::BadValue(
                                    "server offers only channel-binding SASL mechanisms",
                                ));
                            }
                            encode::auth_sasl(&mut self.to_client, &plain)?;
                            AuthStep::AwaitClient {
                                answer: ClientAnswer::Relay,
                            }
                        }
                        Auth::CleartextPassword | Auth::Sasl { .. } | Auth::SaslContinue(_) => {
                            self.to_client.extend_from_slice(wire);
                            AuthStep::AwaitClient {
                                answer: ClientAnswer::Relay,
                            }
                        }
                        Auth::SaslFinal(_) => {
                            self.to_client.extend_from_slice(wire);
                            AuthStep::AwaitServer
                        }
                        Auth::Md5Password { salt } => {
                            // The MD5 hash covers the user name, which we rewrote:
                            // ask the client for the password and answer ourselves.
                            encode::auth_cleartext_password(&mut self.to_client);
                            AuthStep::AwaitClient {
                                answer: ClientAnswer::Md5(salt),
                            }
                        }
                        Auth::Other(_) => {
                            return Err(ProtoError::BadValue("unsupported authentication method"));
                        }
                    },
                };
                Ok(Phase::Authenticating(hs, next))
            }
            other => Err(ProtoError::UnexpectedTag {
                phase: FramePhase::ServerAuth,
                tag: other,
            }),
        }
    }

    /// The server's side of a SCRAM exchange the proxy runs itself.
    fn on_scram_message(
        &mut self,
        mut client: Box<ScramClient>,
        auth: Auth<'_>,
    ) -> Result<AuthStep, ProtoError> {
        match auth {
            Auth::SaslContinue(data) => {
                let resp = client
                    .handle_server_first(data)
                    .map_err(|_| ProtoError::BadValue("SCRAM server-first message"))?;
                encode::sasl_response(&mut self.to_server, &resp)?;
                Ok(AuthStep::Scram(client))
            }
            Auth::SaslFinal(data) => {
                client.handle_server_final(data).map_err(|_| {
                    ProtoError::BadValue(
                        "SCRAM server signature (the server did not prove it knows the password)",
                    )
                })?;
                Ok(AuthStep::AwaitServer)
            }
            _ => Err(ProtoError::BadValue("authentication request during SCRAM")),
        }
    }
}
