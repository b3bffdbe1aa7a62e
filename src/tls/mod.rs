//! TLS: rustls configurations (this commit) and, later, the `Transport` that runs rustls on a
//! non-blocking socket.
//!
//! Owns: turning the TLS settings of [`crate::config::Config`] into `Arc<rustls::ServerConfig>`
//! (client-facing) and `Arc<rustls::ClientConfig>` (upstream), built at startup and on reload
//! ([`config`]); the crypto provider choice (`ring`, TLS 1.2 and 1.3).
//!
//! Must not: panic on input (file contents are input; no `unwrap`/`expect` outside tests), log
//! key material, or be used from the pure layers (`protocol/`, `auth/`, `conn/`): like
//! `reactor/`, this layer touches the file system and (later) sockets. `io::Error` stays in
//! here and is reported as a [`TlsError`] that names the file and what is wrong with it.
//!
//! Invariants: every config uses [`provider`] (no process-wide default provider is installed);
//! server configs advertise ALPN `postgresql` (PostgreSQL 17 direct TLS); upstream
//! verification follows [`crate::config::UpstreamTls`] exactly (see [`load_client_config`]).
//!
//! See `docs/architecture.md`, section "TLS".
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod config;

pub use config::{
    ALPN_POSTGRESQL, SYSTEM_CA_BUNDLES, TlsError, load_client_config, load_server_config, provider,
    server_name,
};
