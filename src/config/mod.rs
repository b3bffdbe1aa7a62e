//! Configuration: defaults → file → `PGVPD_*` env → CLI flags.
//!
//! (Skeleton: the struct below is the contract other modules use. The parser,
//! settings table, env/CLI handling and validation live in submodules.)

use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    None,
    Session,
    Transaction,
}

/// Effective configuration. `Debug` must redact secrets.
#[derive(Clone, PartialEq)]
pub struct Config {
    pub listen_host: String,
    pub port: u16,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub tenant_separator: String,
    pub context_variables: Vec<String>,
    pub value_separator: String,
    pub superuser_bypass: Vec<String>,
    pub log_level: crate::log::Level,
    pub tls_port: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub upstream_tls: bool,
    pub upstream_tls_verify: bool,
    pub upstream_tls_ca: Option<PathBuf>,
    pub handshake_timeout: Duration,
    pub pool_mode: PoolMode,
    pub pool_size: u32,
    pub pool_password: Option<String>,
    pub upstream_password: Option<String>,
    pub pool_idle_timeout: Duration,
    pub pool_checkout_timeout: Duration,
    pub resolvers: Option<PathBuf>,
    pub admin_port: Option<u16>,
    pub set_role: Option<String>,
    pub tenant_allow: Option<Vec<String>>,
    pub tenant_deny: Option<Vec<String>>,
    pub tenant_max_connections: Option<u32>,
    pub tenant_rate_limit: Option<u32>,
    pub tenant_query_timeout: Option<Duration>,
    // --- new in this implementation ---
    /// Reactor threads (default 1).
    pub workers: usize,
    /// Bound on the upstream TCP connect (default 5 s).
    pub upstream_connect_timeout: Duration,
    /// On SIGINT/SIGTERM: how long sessions may drain before being closed (default 30 s).
    pub shutdown_timeout: Duration,
    /// Most client connections held at once across all workers (default 10 000).
    pub max_client_conn: u32,
}
