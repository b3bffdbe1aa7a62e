//! Per-connection state machines. PURE: bytes and time go in, bytes and
//! actions come out; no sockets, no clock, no logging (the reactor logs).
//!
//! ## The sans-IO contract (quinn's names)
//! Inputs: `Session::handle_client_read(n)` / `handle_server_read(n)` after the
//! reactor filled `client_read_buf()` / `server_read_buf()`;
//! `handle_client_eof` / `handle_server_eof`; `handle_client_written(n)` /
//! `handle_server_written(n)` after writing `client_output()` /
//! `server_output()`; `handle_server_connected` / `handle_server_connect_failed`;
//! `handle_timeout(now)`; `handle_cancel_done` (the proxy's own cancel
//! connection, `Action::SendCancel`, ended).
//! Outputs: `poll_action()` (`Action`), `wants_client_read()`,
//! `wants_server_read()`, `client_output()`, `server_output()`,
//! `next_deadline()`, `closed()`.
//!
//! ## Invariants (each has a test)
//! - No client byte reaches the server before the tenant context is set, except
//!   authentication responses (`p`) answering a server challenge, and the
//!   verbatim startup of a superuser-bypass user.
//! - Proxy-generated messages are queued whole (`to_client`/`to_server`) and
//!   flushed before any relayed ring bytes, so they never split a message.
//! - A phase that is not legal for an input closes the connection with one reason.
//!
//! See `docs/architecture.md`, sections "Phases" and "Security model".
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod cancel;
mod inject;
pub mod params;
pub mod pool_auth;
#[cfg(test)]
mod scenarios;
pub mod server;
mod session;
mod timers;
#[cfg(test)]
mod tls_scenarios;
pub mod tracker;
pub mod username;

pub use session::{
    ClientTlsMode, PoolSettings, QUERY_CANCEL_GRACE, SCRAM_NONCE_LEN, Session, SessionConfig,
    SessionTimeouts, UpstreamTlsMode,
};
pub use timers::{TimerKind, TimerTable};

/// Which socket of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// What the session asks the reactor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open the upstream TCP connection (a timer is already armed).
    ConnectUpstream,
    /// The tenant context is set and ReadyForQuery released (for logs/stats).
    SessionStarted,
    /// Wrap the client socket in TLS once `client_output()` is flushed (the
    /// `S` answer); `direct`: the ClientHello already arrived (take it with
    /// `take_client_tls_prefix`) and ALPN `postgresql` is required.
    StartClientTls { direct: bool },
    /// Start the TLS handshake on the upstream socket.
    StartServerTls,
    /// Pool mode: the client is authenticated; lend it a server of
    /// `Session::pool_key()` (now, or when one is free).
    Checkout,
    /// Pool mode: the client ended; take the server back with
    /// `Session::take_server` and run the release sequence on it.
    ReleaseServer,
    /// Transaction mode: the transaction ended and the server is idle; take
    /// it back with `Session::take_tx_server` (the client stays).
    ReturnServer,
    /// `query_timeout`: open a connection to the server and run this cancel
    /// call on it; report its end with `Session::handle_cancel_done`.
    SendCancel(Box<cancel::CancelCall>),
}

/// Why a session ended. Logged once by the reactor and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    ClientEof,
    ServerEof,
    ClientProtocol,
    ServerProtocol,
    HandshakeTimeout,
    ConnectFailed,
    ConnectTimeout,
    AuthFailed,
    ServerError,
    InjectionFailed,
    ResolverFailed,
    RoleRefused,
    BadUsername,
    TenantDenied,
    TenantLimit,
    CancelForwarded,
    DrainTimeout,
    Shutdown,
    /// The admin API killed the session's tenant (`POST /tenants/NAME/kill`).
    AdminKill,
    TooManyClients,
    TlsRequired,
    TlsFailed,
    PoolTimeout,
    IoError,
    Panic,
    ClientIdleTimeout,
    IdleTransactionTimeout,
    QueryTimeout,
    SessionLifetime,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientEof => "client_eof",
            CloseReason::ServerEof => "server_eof",
            CloseReason::ClientProtocol => "client_protocol_violation",
            CloseReason::ServerProtocol => "server_protocol_violation",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::ConnectFailed => "upstream_connect_failed",
            CloseReason::ConnectTimeout => "upstream_connect_timeout",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::ServerError => "server_error",
            CloseReason::InjectionFailed => "context_injection_failed",
            CloseReason::ResolverFailed => "resolver_failed",
            CloseReason::RoleRefused => "role_refused",
            CloseReason::BadUsername => "bad_username",
            CloseReason::TenantDenied => "tenant_denied",
            CloseReason::TenantLimit => "tenant_limit",
            CloseReason::CancelForwarded => "cancel_forwarded",
            CloseReason::DrainTimeout => "drain_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::AdminKill => "admin_kill",
            CloseReason::TooManyClients => "too_many_clients",
            CloseReason::TlsRequired => "tls_required",
            CloseReason::TlsFailed => "tls_failed",
            CloseReason::PoolTimeout => "pool_checkout_timeout",
            CloseReason::IoError => "io_error",
            CloseReason::Panic => "panic",
            CloseReason::ClientIdleTimeout => "client_idle_timeout",
            CloseReason::IdleTransactionTimeout => "idle_transaction_timeout",
            CloseReason::QueryTimeout => "query_timeout",
            CloseReason::SessionLifetime => "session_lifetime",
        }
    }
}
