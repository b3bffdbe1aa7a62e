//! Configuration: defaults → file → `PGVPD_*` env → CLI flags, validated once.
//!
//! Owns: the [`Config`] struct (the contract other modules read), the static settings table
//! ([`settings::SETTINGS`]: every key with its aliases, env var, flags, default and doc), the
//! `key = value` file parser ([`parse::parse`]), env/CLI handling ([`load`]), validation
//! ([`validate`]) and the generated texts ([`help_text`], [`render_effective`],
//! [`markdown_table`]).
//!
//! Must not: panic on any input (P4; the lints below), touch sockets or the clock. The only I/O
//! is done through the closures handed to [`load`] (environment lookup and file reading), so
//! everything here is testable and fuzzable without a file system.
//!
//! Differences from pgvpd 1.0 (behaviour §2, §11.3 F8): a missing `--config` file, an unknown
//! or duplicate key, a bad number/bool/enum/list and a stray quote are errors naming the key and
//! the line; `#` starts a comment after a value; `--check-config` prints the effective config.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod load;
pub mod parse;
pub mod reload;
pub mod render;
pub mod settings;
pub mod validate;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{Command, load, resolve};
pub use parse::{Entry, parse};
pub use render::{help_text, markdown_table, render_effective};
pub use settings::{Kind, SETTINGS, Setting};
pub use validate::validate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    None,
    Session,
    Transaction,
}

impl PoolMode {
    /// The config spelling: `none`, `session`, `transaction`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::None => "none",
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// How pooled clients authenticate to the proxy (`pool_auth_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAuthMethod {
    ScramSha256,
    Cleartext,
}

impl PoolAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolAuthMethod::ScramSha256 => "scram-sha-256",
            PoolAuthMethod::Cleartext => "cleartext",
        }
    }
}

/// Client-facing TLS (`client_tls`): whether clients may or must use TLS (SSLRequest or
/// direct TLS on the plain port; the `tls_port` listener is TLS-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTls {
    /// Plain text only: SSLRequest is answered `N`.
    Disable,
    /// TLS if the client asks for it, plain text otherwise.
    Allow,
    /// Plain-text sessions are refused.
    Require,
}

impl ClientTls {
    /// The config spelling: `disable`, `allow`, `require`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTls::Disable => "disable",
            ClientTls::Allow => "allow",
            ClientTls::Require => "require",
        }
    }
}

/// TLS to the PostgreSQL server (`upstream_tls`), named like libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain text.
    Disable,
    /// Try TLS (SSLRequest); continue in plain text if the server answers `N`. Certificate not
    /// checked.
    Prefer,
    /// TLS or fail; encryption only, the certificate is not checked.
    Require,
    /// TLS or fail; the certificate chain is verified, the host name is not.
    VerifyCa,
    /// TLS or fail; chain and host name (`upstream_host`) are verified.
    VerifyFull,
}

impl UpstreamTls {
    /// The config spelling: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamTls::Disable => "disable",
            UpstreamTls::Prefer => "prefer",
            UpstreamTls::Require => "require",
            UpstreamTls::VerifyCa => "verify-ca",
            UpstreamTls::VerifyFull => "verify-full",
        }
    }

    /// `true` for `verify-ca` and `verify-full` (the certificate chain is checked).
    pub fn verifies_chain(self) -> bool {
        matches!(self, UpstreamTls::VerifyCa | UpstreamTls::VerifyFull)
    }
}

/// Effective configuration. `Debug` redacts secrets (`pool_password`, `upstream_password`,
/// `admin_token`).
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
    /// Resolved after loading: when not set anywhere, `allow` if `tls_cert` is set, else
    /// `disable`.
    pub client_tls: ClientTls,
    /// Effective mode: `upstream_tls_verify = false` has already downgraded `verify-ca` and
    /// `verify-full` to `require`.
    pub upstream_tls: UpstreamTls,
    pub upstream_tls_verify: bool,
    /// Direct TLS (ALPN `postgresql`, no SSLRequest; PostgreSQL 17+).
    pub upstream_tls_direct: bool,
    /// Trust roots for `verify-ca`/`verify-full`; unset = the system bundle.
    pub upstream_tls_ca: Option<PathBuf>,
    pub handshake_timeout: Duration,
    pub pool_mode: PoolMode,
    pub pool_size: u32,
    /// Transaction mode: named prepared statements tracked per client and
    /// per server (0: refused).
    pub max_prepared_statements: u32,
    pub pool_password: Option<String>,
    pub upstream_password: Option<String>,
    pub pool_idle_timeout: Duration,
    pub pool_checkout_timeout: Duration,
    /// PgBouncer-format secrets of pooled clients (names: role or role.tenant).
    pub auth_file: Option<PathBuf>,
    pub pool_auth_method: PoolAuthMethod,
    /// Cleartext pool passwords also over non-TLS, non-loopback connections.
    pub pool_allow_insecure_cleartext: bool,
    /// Login roles that may be pooled (unset: any).
    pub pool_roles: Option<Vec<String>>,
    /// PgBouncer-format per-role passwords the proxy logs in upstream with.
    pub upstream_auth_file: Option<PathBuf>,
    pub server_reset_query: String,
    pub server_reset_timeout: Duration,
    pub server_check_query: Option<String>,
    pub server_check_delay: Duration,
    /// Zero: unlimited.
    pub server_lifetime: Duration,
    pub resolvers: Option<PathBuf>,
    /// `search_path` every resolver query runs with (pinned, local to it).
    pub resolver_search_path: String,
    /// Most cached resolver results (least recently used evicted; 0: no cache).
    pub resolver_cache_size: u32,
    pub admin_port: Option<u16>,
    /// Address the admin API binds to (default 127.0.0.1; pgvpd 1.0 bound 0.0.0.0).
    pub admin_listen: String,
    /// Bearer token every admin API request must carry (unset: none).
    pub admin_token: Option<String>,
    pub set_role: Option<String>,
    pub tenant_allow: Option<Vec<String>>,
    pub tenant_deny: Option<Vec<String>>,
    /// The context variable whose value is the tenant for allow/deny lists
    /// and limits (unset: the first of `context_variables`).
    pub tenant_key: Option<String>,
    pub tenant_max_connections: Option<u32>,
    pub tenant_rate_limit: Option<u32>,
    /// Pool modes: most servers of one pool a tenant holds at once (unset: no cap).
    pub tenant_max_servers: Option<u32>,
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
    /// Close a client idle outside a transaction this long (57P05); unset or 0: off.
    pub client_idle_timeout: Option<Duration>,
    /// Close a client idle inside a transaction this long (25P03); unset or 0: off.
    pub idle_transaction_timeout: Option<Duration>,
    /// Cancel a query running this long (57014, the session goes on); unset or 0:
    /// off. `tenant_query_timeout` is pgvpd 1.0's name for it.
    pub query_timeout: Option<Duration>,
    /// End a session this old at its next idle moment outside a transaction
    /// (57P01); unset or 0: off.
    pub session_lifetime: Option<Duration>,
}

impl Default for Config {
    /// The documented defaults (behaviour §2.3 plus the new keys); kept in step with the
    /// `default` column of [`SETTINGS`] by a unit test.
    fn default() -> Config {
        Config {
            listen_host: "127.0.0.1".to_owned(),
            port: 6432,
            upstream_host: "127.0.0.1".to_owned(),
            upstream_port: 5432,
            tenant_separator: ".".to_owned(),
            context_variables: vec!["app.current_tenant_id".to_owned()],
            value_separator: ":".to_owned(),
            superuser_bypass: vec!["postgres".to_owned()],
            log_level: crate::log::Level::Info,
            tls_port: None,
            tls_cert: None,
            tls_key: None,
            client_tls: ClientTls::Disable,
            upstream_tls: UpstreamTls::Disable,
            upstream_tls_verify: true,
            upstream_tls_direct: false,
            upstream_tls_ca: None,
            handshake_timeout: Duration::from_secs(30),
            pool_mode: PoolMode::None,
            pool_size: 20,
            max_prepared_statements: 200,
            pool_password: None,
            upstream_password: None,
            pool_idle_timeout: Duration::from_secs(300),
            pool_checkout_timeout: Duration::from_secs(5),
            auth_file: None,
            pool_auth_method: PoolAuthMethod::ScramSha256,
            pool_allow_insecure_cleartext: false,
            pool_roles: None,
            upstream_auth_file: None,
            server_reset_query: "DISCARD ALL".to_owned(),
            server_reset_timeout: Duration::from_secs(5),
            server_check_query: None,
            server_check_delay: Duration::from_secs(30),
            server_lifetime: Duration::from_secs(3600),
            resolvers: None,
            resolver_search_path: "pg_catalog, public".to_string(),
            resolver_cache_size: 10_000,
            admin_port: None,
            admin_listen: "127.0.0.1".to_owned(),
            admin_token: None,
            set_role: None,
            tenant_allow: None,
            tenant_deny: None,
            tenant_key: None,
            tenant_max_connections: None,
            tenant_rate_limit: None,
            tenant_max_servers: None,
            tenant_query_timeout: None,
            workers: 1,
            upstream_connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            max_client_conn: 10_000,
            client_idle_timeout: None,
            idle_transaction_timeout: None,
            query_timeout: None,
            session_lifetime: None,
        }
    }
}

/// What a secret is shown as (`Debug`, `--check-config`).
pub const REDACTED: &str = "********";

struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => write!(f, "Some({REDACTED})"),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that adding a field without listing it here fails to compile.
        let Config {
            listen_host,
            port,
            upstream_host,
            upstream_port,
            tenant_separator,
            context_variables,
            value_separator,
            superuser_bypass,
            log_level,
            tls_port,
            tls_cert,
            tls_key,
            client_tls,
            upstream_tls,
            upstream_tls_verify,
            upstream_tls_direct,
            upstream_tls_ca,
            handshake_timeout,
            pool_mode,
            pool_size,
            max_prepared_statements,
            pool_password,
            upstream_password,
            pool_idle_timeout,
            pool_checkout_timeout,
            auth_file,
            pool_auth_method,
            pool_allow_insecure_cleartext,
            pool_roles,
            upstream_auth_file,
            server_reset_query,
            server_reset_timeout,
            server_check_query,
            server_check_delay,
            server_lifetime,
            resolvers,
            resolver_search_path,
            resolver_cache_size,
            admin_port,
            admin_listen,
            admin_token,
            set_role,
            tenant_allow,
            tenant_deny,
            tenant_key,
            tenant_max_connections,
            tenant_rate_limit,
            tenant_max_servers,
            tenant_query_timeout,
            workers,
            upstream_connect_timeout,
            shutdown_timeout,
            max_client_conn,
            client_idle_timeout,
            idle_transaction_timeout,
            query_timeout,
            session_lifetime,
        } = self;
        f.debug_struct("Config")
            .field("listen_host", listen_host)
            .field("port", port)
            .field("upstream_host", upstream_host)
            .field("upstream_port", upstream_port)
            .field("tenant_separator", tenant_separator)
            .field("context_variables", context_variables)
            .field("value_separator", value_separator)
            .field("superuser_bypass", superuser_bypass)
            .field("log_level", log_level)
            .field("tls_port", tls_port)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("client_tls", client_tls)
            .field("upstream_tls", upstream_tls)
            .field("upstream_tls_verify", upstream_tls_verify)
            .field("upstream_tls_direct", upstream_tls_direct)
            .field("upstream_tls_ca", upstream_tls_ca)
            .field("handshake_timeout", handshake_timeout)
            .field("pool_mode", pool_mode)
            .field("pool_size", pool_size)
            .field("max_prepared_statements", max_prepared_statements)
            .field("pool_password", &Redacted(pool_password))
            .field("upstream_password", &Redacted(upstream_password))
            .field("pool_idle_timeout", pool_idle_timeout)
            .field("pool_checkout_timeout", pool_checkout_timeout)
            .field("auth_file", auth_file)
            .field("pool_auth_method", pool_auth_method)
            .field(
                "pool_allow_insecure_cleartext",
                pool_allow_insecure_cleartext,
            )
            .field("pool_roles", pool_roles)
            .field("upstream_auth_file", upstream_auth_file)
            .field("server_reset_query", server_reset_query)
            .field("server_reset_timeout", server_reset_timeout)
            .field("server_check_query", server_check_query)
            .field("server_check_delay", server_check_delay)
            .field("server_lifetime", server_lifetime)
            .field("resolvers", resolvers)
            .field("resolver_search_path", resolver_search_path)
            .field("resolver_cache_size", resolver_cache_size)
            .field("admin_port", admin_port)
            .field("admin_listen", admin_listen)
            .field("admin_token", &Redacted(admin_token))
            .field("set_role", set_role)
            .field("tenant_allow", tenant_allow)
            .field("tenant_deny", tenant_deny)
            .field("tenant_key", tenant_key)
            .field("tenant_max_connections", tenant_max_connections)
            .field("tenant_rate_limit", tenant_rate_limit)
            .field("tenant_max_servers", tenant_max_servers)
            .field("tenant_query_timeout", tenant_query_timeout)
            .field("workers", workers)
            .field("upstream_connect_timeout", upstream_connect_timeout)
            .field("shutdown_timeout", shutdown_timeout)
            .field("max_client_conn", max_client_conn)
            .field("client_idle_timeout", client_idle_timeout)
            .field("idle_transaction_timeout", idle_transaction_timeout)
            .field("query_timeout", query_timeout)
            .field("session_lifetime", session_lifetime)
            .finish()
    }
}

/// Where a value (or an error) came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The config file at this path (the line is in [`ConfigError::line`]).
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag (as written, e.g. `--port` or `-p`).
    Cli(String),
    /// Built-in default / not tied to any input.
    Default,
}

/// A configuration error: where, which key, what.
///
/// Display: `pgvpd.conf:12: key 'port': invalid number 'abc' (expected 0..=65535)`,
/// `environment variable PGVPD_PORT: key 'port': …`, `command line --port: key 'port': …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line in the config file; 0 = not from a file.
    pub line: usize,
    /// The key as written (file) or the canonical key (env, CLI, validation).
    pub key: Option<String>,
    pub source: Source,
    pub msg: String,
}

impl ConfigError {
    pub(crate) fn new(source: Source, line: usize, key: Option<&str>, msg: String) -> ConfigError {
        ConfigError {
            line,
            key: key.map(str::to_owned),
            source,
            msg,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::File(p) if self.line > 0 => {
                if p.as_os_str().is_empty() {
                    write!(f, "line {}: ", self.line)?;
                } else {
                    write!(f, "{}:{}: ", p.display(), self.line)?;
                }
            }
            // Whole-file errors ("cannot read config file 'x'") name the path in `msg`.
            Source::File(_) => {}
            Source::Env(var) => write!(f, "environment variable {var}: ")?,
            Source::Cli(flag) => write!(f, "command line {flag}: ")?,
            Source::Default => {}
        }
        if let Some(k) = &self.key {
            write!(f, "key '{k}': ")?;
        }
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let cfg = Config {
            pool_password: Some("hunter2-pool".into()),
            upstream_password: Some("hunter2-up".into()),
            admin_token: Some("hunter2-admin".into()),
            ..Config::default()
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("pool_password: Some(********)"), "{s}");
        assert!(s.contains("upstream_password: Some(********)"), "{s}");
        assert!(s.contains("admin_token: Some(********)"), "{s}");
        assert!(s.contains("port: 6432"), "{s}");
        let s = format!("{:#?}", Config::default());
        assert!(s.contains("pool_password: None"), "{s}");
    }

    #[test]
    fn error_display() {
        let e = ConfigError::new(
            Source::File("pgvpd.conf".into()),
            12,
            Some("port"),
            "invalid number 'abc' (expected 0..=65535)".into(),
        );
        assert_eq!(
            e.to_string(),
            "pgvpd.conf:12: key 'port': invalid number 'abc' (expected 0..=65535)"
        );
        let e = ConfigError::new(
            Source::Env("PGVPD_PORT".into()),
            0,
            Some("port"),
            "x".into(),
        );
        assert_eq!(
            e.to_string(),
            "environment variable PGVPD_PORT: key 'port': x"
        );
        let e = ConfigError::new(Source::Cli("-p".into()), 0, Some("port"), "x".into());
        assert_eq!(e.to_string(), "command line -p: key 'port': x");
        let e = ConfigError::new(Source::Default, 0, Some("pool_mode"), "y".into());
        assert_eq!(e.to_string(), "key 'pool_mode': y");
        let e = ConfigError::new(Source::File("".into()), 3, None, "z".into());
        assert_eq!(e.to_string(), "line 3: z");
    }
}
