//! The settings table: every key with its aliases, `PGVPD_*` env var, CLI flags, kind, default
//! and doc (behaviour §2.3 plus the keys new in this implementation), and the value parsers.
//!
//! Value rules (same for file, env and CLI):
//! - numbers: ASCII digits only (no sign, no blanks), range-checked for the field's type;
//!   seconds are whole seconds, at most [`MAX_SECS`] (so `Instant + Duration` cannot overflow);
//! - booleans: case-insensitive `true/false`, `yes/no`, `on/off`, `1/0`;
//! - lists: split on `,`, items trimmed; an empty item or a duplicate item is an error;
//! - enums (`pool_mode`, `client_tls`, `upstream_tls`) and `log_level`: case-insensitive;
//!   `upstream_tls` also takes pgvpd 1.0's booleans (true → `verify-full`, false → `disable`);
//! - an empty value for an option whose default is "unset" makes it unset again;
//! - a NUL character is rejected in every value.
//!
//! The table order is the order of `--help`, `--check-config` and the docs table.

use std::path::PathBuf;
use std::time::Duration;

use super::{ClientTls, Config, PoolAuthMethod, PoolMode, UpstreamTls};
use crate::log::Level;

/// Value type of a setting (drives docs and the CLI placeholder; parsing is per setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Path,
    U16,
    U32,
    Secs,
    Bool,
    List,
    Enum(&'static [&'static str]),
    Level,
    Usize,
}

impl Kind {
    /// Placeholder used in `--help`.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Str => "STRING",
            Kind::Path => "PATH",
            Kind::U16 => "PORT",
            Kind::U32 | Kind::Usize => "N",
            Kind::Secs => "SECS",
            Kind::Bool => "BOOL",
            Kind::List => "LIST",
            Kind::Enum(_) => "MODE",
            Kind::Level => "LEVEL",
        }
    }

    /// Short type description used in docs.
    pub fn describe(self) -> String {
        match self {
            Kind::Str => "string".into(),
            Kind::Path => "path".into(),
            Kind::U16 => "0..=65535".into(),
            Kind::U32 => "0..=4294967295".into(),
            Kind::Secs => "seconds".into(),
            Kind::Bool => "bool".into(),
            Kind::List => "comma list".into(),
            Kind::Enum(v) => v.join("/"),
            Kind::Level => "off/error/warn/info/debug/trace".into(),
            Kind::Usize => "number".into(),
        }
    }
}

/// Setter: parse `value` into the field; `Err` is the message (without key or location).
pub type SetFn = fn(&mut Config, &str) -> Result<(), String>;
/// Getter: the current value in config-file spelling; `None` = unset.
pub type GetFn = fn(&Config) -> Option<String>;

/// One configuration key.
pub struct Setting {
    /// Canonical key.
    pub name: &'static str,
    /// Other accepted spellings in the file (all spellings are matched ASCII-case-insensitively).
    pub aliases: &'static [&'static str],
    /// Environment variable.
    pub env: &'static str,
    /// Command-line flags, e.g. `["-p", "--port"]`.
    pub cli: &'static [&'static str],
    pub kind: Kind,
    /// Default in config-file spelling, shown in docs; `""` = unset.
    pub default: &'static str,
    /// Never printed (`Debug`, `--check-config`).
    pub secret: bool,
    /// The CLI flag takes no value and sets `true` (`--upstream-tls`); `--flag=BOOL` still works.
    pub switch: bool,
    pub doc: &'static str,
    pub set: SetFn,
    pub get: GetFn,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting").field("name", &self.name).finish()
    }
}

/// Largest accepted number of seconds (~136 years).
pub const MAX_SECS: u64 = u32::MAX as u64;

const POOL_MODES: &[&str] = &["none", "session", "transaction"];
const POOL_AUTH_METHODS: &[&str] = &["scram-sha-256", "cleartext"];
const CLIENT_TLS_MODES: &[&str] = &["disable", "allow", "require"];
const UPSTREAM_TLS_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];

/// Value as shown in error messages: at most 64 chars, control characters escaped.
pub(crate) fn show(v: &str) -> String {
    let mut s: String = v.chars().take(64).flat_map(char::escape_debug).collect();
    if v.chars().nth(64).is_some() {
        s.push_str("...");
    }
    s
}

fn uint(v: &str, max: u64) -> Result<u64, String> {
    let bad = || format!("invalid number '{}' (expected 0..={max})", show(v));
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad()),
    }
}

pub(crate) fn p_u16(v: &str) -> Result<u16, String> {
    let n = uint(v, u16::MAX.into())?;
    u16::try_from(n).map_err(|e| e.to_string())
}

pub(crate) fn p_u32(v: &str) -> Result<u32, String> {
    let n = uint(v, u32::MAX.into())?;
    u32::try_from(n).map_err(|e| e.to_string())
}

pub(crate) fn p_usize(v: &str) -> Result<usize, String> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    let n = uint(v, max)?;
    usize::try_from(n).map_err(|e| e.to_string())
}

pub(crate) fn p_secs(v: &str) -> Result<Duration, String> {
    uint(v, MAX_SECS).map(Duration::from_secs).map_err(|_| {
        format!(
            "invalid number of seconds '{}' (expected 0..={MAX_SECS})",
            show(v)
        )
    })
}

pub(crate) fn p_bool(v: &str) -> Result<bool, String> {
    const T: &[&str] = &["true", "yes", "on", "1"];
    const F: &[&str] = &["false", "no", "off", "0"];
    if T.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Ok(true)
    } else if F.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Ok(false)
    } else {
        Err(format!(
            "invalid boolean '{}' (expected true/false, yes/no, on/off or 1/0)",
            show(v)
        ))
    }
}

pub(crate) fn p_list(v: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in v.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty item in list '{}'", show(v)));
        }
        if out.iter().any(|o| o == item) {
            return Err(format!("duplicate item '{}' in list", show(item)));
        }
        out.push(item.to_owned());
    }
    Ok(out)
}

fn p_pool_mode(v: &str) -> Result<PoolMode, String> {
    match POOL_MODES.iter().position(|m| m.eq_ignore_ascii_case(v)) {
        Some(0) => Ok(PoolMode::None),
        Some(1) => Ok(PoolMode::Session),
        Some(_) => Ok(PoolMode::Transaction),
        None => Err(format!(
            "invalid value '{}' (expected one of: {})",
            show(v),
            POOL_MODES.join(", ")
        )),
    }
}

fn p_pool_auth_method(v: &str) -> Result<PoolAuthMethod, String> {
    match POOL_AUTH_METHODS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(v))
    {
        Some(0) => Ok(PoolAuthMethod::ScramSha256),
        Some(_) => Ok(PoolAuthMethod::Cleartext),
        None => Err(format!(
            "invalid value '{}' (expected one of: {})",
            show(v),
            POOL_AUTH_METHODS.join(", ")
        )),
    }
}

pub(crate) fn p_client_tls(v: &str) -> Result<ClientTls, String> {
    match CLIENT_TLS_MODES
        .iter()
        .position(|m| m.eq_ignore_ascii_case(v))
    {
        Some(0) => Ok(ClientTls::Disable),
        Some(1) => Ok(ClientTls::Allow),
        Some(_) => Ok(ClientTls::Require),
        None => Err(format!(
            "invalid value '{}' (expected one of: {})",
            show(v),
            CLIENT_TLS_MODES.join(", ")
        )),
    }
}

/// A libpq-style mode, or a pgvpd 1.0 boolean: true → `verify-full` (1.0 verified the
/// certificate and host name by default), false → `disable`.
pub(crate) fn p_upstream_tls(v: &str) -> Result<UpstreamTls, String> {
    match UPSTREAM_TLS_MODES
        .iter()
        .position(|m| m.eq_ignore_ascii_case(v))
    {
        Some(0) => Ok(UpstreamTls::Disable),
        Some(1) => Ok(UpstreamTls::Prefer),
        Some(2) => Ok(UpstreamTls::Require),
        Some(3) => Ok(UpstreamTls::VerifyCa),
        Some(_) => Ok(UpstreamTls::VerifyFull),
        None => match p_bool(v) {
            Ok(true) => Ok(UpstreamTls::VerifyFull),
            Ok(false) => Ok(UpstreamTls::Disable),
            Err(_) => Err(format!(
                "invalid value '{}' (expected one of: {}, or a boolean)",
                show(v),
                UPSTREAM_TLS_MODES.join(", ")
            )),
        },
    }
}

fn p_level(v: &str) -> Result<Level, String> {
    v.parse::<Level>()
        .map_err(|e| format!("invalid log level '{}' ({e})", show(v)))
}

/// Optional value: empty → unset.
fn opt<T>(v: &str, f: fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

fn p_str(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

fn p_path(v: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(v))
}

fn g_path(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn g_secs(d: Duration) -> String {
    d.as_secs().to_string()
}

fn g_list(l: &[String]) -> String {
    l.join(",")
}

/// Find a setting by canonical name or alias (ASCII-case-insensitive).
pub fn find(key: &str) -> Option<(usize, &'static Setting)> {
    SETTINGS.iter().enumerate().find(|(_, s)| {
        s.name.eq_ignore_ascii_case(key) || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
    })
}

/// Find a setting by CLI flag (exact).
pub fn find_flag(flag: &str) -> Option<(usize, &'static Setting)> {
    SETTINGS
        .iter()
        .enumerate()
        .find(|(_, s)| s.cli.contains(&flag))
}

/// Levenshtein distance (ASCII-case-insensitive), capped inputs so it stays cheap.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().take(64).map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().take(64).map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = Vec::with_capacity(prev.len());
    for (i, ca) in a.iter().enumerate() {
        cur.clear();
        cur.push(i.saturating_add(1));
        for (j, cb) in b.iter().enumerate() {
            let sub = prev
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(usize::from(ca != cb));
            let del = prev.get(j.saturating_add(1)).copied().unwrap_or(usize::MAX);
            let ins = cur.last().copied().unwrap_or(usize::MAX);
            cur.push(sub.min(del.saturating_add(1)).min(ins.saturating_add(1)));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(usize::MAX)
}

/// The closest known key (name or alias) within edit distance 2, if any.
pub fn suggest(key: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(&s.name).chain(s.aliases.iter()))
        .map(|n| (distance(key, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

macro_rules! setting {
    (
        $name:literal, [$($alias:literal),*], $env:literal, [$($flag:literal),+], $kind:expr,
        $default:literal, secret: $secret:literal, switch: $switch:literal, $doc:literal,
        set: $set:expr, get: $get:expr $(,)?
    ) => {
        Setting {
            name: $name,
            aliases: &[$($alias),*],
            env: $env,
            cli: &[$($flag),+],
            kind: $kind,
            default: $default,
            secret: $secret,
            switch: $switch,
            doc: $doc,
            set: $set,
            get: $get,
        }
    };
}

/// Every configuration key (behaviour §2.3 + new keys), in documentation order.
pub static SETTINGS: &[Setting] = &[
    setting!("port", ["listen_port"], "PGVPD_PORT", ["-p", "--port"], Kind::U16, "6432",
        secret: false, switch: false, "Port of the plain listener.",
        set: |c, v| { c.port = p_u16(v)?; Ok(()) },
        get: |c| Some(c.port.to_string())),
    setting!("listen_host", ["host"], "PGVPD_HOST", ["--listen-host"], Kind::Str, "127.0.0.1",
        secret: false, switch: false,
        "Address the plain and TLS listeners bind to (not the admin API).",
        set: |c, v| { c.listen_host = p_str(v)?; Ok(()) },
        get: |c| Some(c.listen_host.clone())),
    setting!("upstream_host", [], "PGVPD_UPSTREAM_HOST", ["--upstream-host"], Kind::Str,
        "127.0.0.1", secret: false, switch: false, "PostgreSQL server host name or address.",
        set: |c, v| { c.upstream_host = p_str(v)?; Ok(()) },
        get: |c| Some(c.upstream_host.clone())),
    setting!("upstream_port", [], "PGVPD_UPSTREAM_PORT", ["--upstream-port"], Kind::U16, "5432",
        secret: false, switch: false, "PostgreSQL server port.",
        set: |c, v| { c.upstream_port = p_u16(v)?; Ok(()) },
        get: |c| Some(c.upstream_port.to_string())),
    setting!("tenant_separator", ["separator"], "PGVPD_TENANT_SEPARATOR", ["--separator"],
        Kind::Str, ".", secret: false, switch: false,
        "Separates the role from the context values in the user name (`app_user.acme`); non-empty.",
        set: |c, v| { c.tenant_separator = p_str(v)?; Ok(()) },
        get: |c| Some(c.tenant_separator.clone())),
    setting!("context_variables", ["context"], "PGVPD_CONTEXT_VARIABLES", ["--context"],
        Kind::List, "app.current_tenant_id", secret: false, switch: false,
        "Session variables set from the user-name values, in order (`prefix.name`).",
        set: |c, v| { c.context_variables = p_list(v)?; Ok(()) },
        get: |c| Some(g_list(&c.context_variables))),
    setting!("value_separator", [], "PGVPD_VALUE_SEPARATOR", ["--value-separator"], Kind::Str,
        ":", secret: false, switch: false,
        "Separates several context values (`app_user.acme:user42`); used with >1 variable.",
        set: |c, v| { c.value_separator = p_str(v)?; Ok(()) },
        get: |c| Some(c.value_separator.clone())),
    setting!("superuser_bypass", ["superuser"], "PGVPD_SUPERUSER_BYPASS", ["--superuser"],
        Kind::List, "postgres", secret: false, switch: false,
        "User names passed through untouched (no context set).",
        set: |c, v| { c.superuser_bypass = p_list(v)?; Ok(()) },
        get: |c| Some(g_list(&c.superuser_bypass))),
    setting!("log_level", [], "PGVPD_LOG_LEVEL", ["--log-level"], Kind::Level, "info",
        secret: false, switch: false, "off, error, warn, info, debug or trace.",
        set: |c, v| { c.log_level = p_level(v)?; Ok(()) },
        get: |c| Some(c.log_level.as_str().to_owned())),
    setting!("tls_port", [], "PGVPD_TLS_PORT", ["--tls-port"], Kind::U16, "",
        secret: false, switch: false,
        "Port of the TLS listener; requires tls_cert and tls_key.",
        set: |c, v| { c.tls_port = opt(v, p_u16)?; Ok(()) },
        get: |c| c.tls_port.map(|p| p.to_string())),
    setting!("tls_cert", [], "PGVPD_TLS_CERT", ["--tls-cert"], Kind::Path, "",
        secret: false, switch: false, "PEM certificate chain for client-facing TLS.",
        set: |c, v| { c.tls_cert = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.tls_cert)),
    setting!("tls_key", [], "PGVPD_TLS_KEY", ["--tls-key"], Kind::Path, "",
        secret: false, switch: false, "PEM private key for client-facing TLS.",
        set: |c, v| { c.tls_key = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.tls_key)),
    setting!("client_tls", [], "PGVPD_CLIENT_TLS", ["--client-tls"],
        Kind::Enum(CLIENT_TLS_MODES), "disable", secret: false, switch: false,
        "Client-facing TLS: disable (answer SSLRequest with N), allow (TLS when the client asks) or require (refuse plain-text sessions). When not set: allow if tls_cert is set, else disable. allow and require need tls_cert and tls_key.",
        set: |c, v| { c.client_tls = p_client_tls(v)?; Ok(()) },
        get: |c| Some(c.client_tls.as_str().to_owned())),
    setting!("upstream_tls", [], "PGVPD_UPSTREAM_TLS", ["--upstream-tls"],
        Kind::Enum(UPSTREAM_TLS_MODES), "disable", secret: false, switch: true,
        "TLS to the PostgreSQL server, as libpq's sslmode: disable, prefer (TLS if the server offers it), require (encrypted, certificate not checked), verify-ca (chain checked), verify-full (chain and host name checked). pgvpd 1.0 booleans: true = verify-full, false = disable; the flag without a value means true.",
        set: |c, v| { c.upstream_tls = p_upstream_tls(v)?; Ok(()) },
        get: |c| Some(c.upstream_tls.as_str().to_owned())),
    setting!("upstream_tls_verify", [], "PGVPD_UPSTREAM_TLS_VERIFY", ["--upstream-tls-verify"],
        Kind::Bool, "true", secret: false, switch: false,
        "pgvpd 1.0 compatibility: false downgrades upstream_tls = verify-ca or verify-full (so also true) to require, i.e. encrypted without certificate checks; applied after all sources are merged.",
        set: |c, v| { c.upstream_tls_verify = p_bool(v)?; Ok(()) },
        get: |c| Some(c.upstream_tls_verify.to_string())),
    setting!("upstream_tls_direct", [], "PGVPD_UPSTREAM_TLS_DIRECT", ["--upstream-tls-direct"],
        Kind::Bool, "false", secret: false, switch: false,
        "Start TLS at once with ALPN postgresql instead of sending SSLRequest (PostgreSQL 17+); needs upstream_tls = require, verify-ca or verify-full.",
        set: |c, v| { c.upstream_tls_direct = p_bool(v)?; Ok(()) },
        get: |c| Some(c.upstream_tls_direct.to_string())),
    setting!("upstream_tls_ca", [], "PGVPD_UPSTREAM_TLS_CA", ["--upstream-tls-ca"], Kind::Path,
        "", secret: false, switch: false,
        "PEM bundle of trust roots for verify-ca/verify-full; unset = the system bundle (/etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt or /etc/ssl/cert.pem).",
        set: |c, v| { c.upstream_tls_ca = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.upstream_tls_ca)),
    setting!("handshake_timeout", ["handshake_timeout_secs"], "PGVPD_HANDSHAKE_TIMEOUT",
        ["--handshake-timeout"], Kind::Secs, "30", secret: false, switch: false,
        "Time from connect until the tenant context is set (startup, upstream connect, authentication, context injection); > 0.",
        set: |c, v| { c.handshake_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.handshake_timeout))),
    setting!("pool_mode", [], "PGVPD_POOL_MODE", ["--pool-mode"], Kind::Enum(POOL_MODES), "none",
        secret: false, switch: false,
        "none (one server connection per client), session or transaction pooling.",
        set: |c, v| { c.pool_mode = p_pool_mode(v)?; Ok(()) },
        get: |c| Some(c.pool_mode.as_str().to_owned())),
    setting!("pool_size", [], "PGVPD_POOL_SIZE", ["--pool-size"], Kind::U32, "20",
        secret: false, switch: false, "Server connections per (database, role) pool; > 0 when pooling.",
        set: |c, v| { c.pool_size = p_u32(v)?; Ok(()) },
        get: |c| Some(c.pool_size.to_string())),
    setting!("max_prepared_statements", [], "PGVPD_MAX_PREPARED_STATEMENTS",
        ["--max-prepared-statements"], Kind::U32, "200", secret: false, switch: false,
        "Transaction mode: named prepared statements kept per client and per server (prepared again on each server a client gets); 0 = refused.",
        set: |c, v| { c.max_prepared_statements = p_u32(v)?; Ok(()) },
        get: |c| Some(c.max_prepared_statements.to_string())),
    setting!("pool_password", [], "PGVPD_POOL_PASSWORD", ["--pool-password"], Kind::Str, "",
        secret: true, switch: false, "Password pool clients authenticate with (required when pooling).",
        set: |c, v| { c.pool_password = opt(v, p_str)?; Ok(()) },
        get: |c| c.pool_password.clone()),
    setting!("upstream_password", [], "PGVPD_UPSTREAM_PASSWORD", ["--upstream-password"],
        Kind::Str, "", secret: true, switch: false,
        "Password the proxy logs in to the server with (required when pooling).",
        set: |c, v| { c.upstream_password = opt(v, p_str)?; Ok(()) },
        get: |c| c.upstream_password.clone()),
    setting!("pool_idle_timeout", [], "PGVPD_POOL_IDLE_TIMEOUT", ["--pool-idle-timeout"],
        Kind::Secs, "300", secret: false, switch: false, "Idle server connections are closed after this.",
        set: |c, v| { c.pool_idle_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.pool_idle_timeout))),
    setting!("pool_checkout_timeout", [], "PGVPD_POOL_CHECKOUT_TIMEOUT",
        ["--pool-checkout-timeout"], Kind::Secs, "5", secret: false, switch: false,
        "How long a client waits for a pooled server; 0 = fail at once when the pool is full.",
        set: |c, v| { c.pool_checkout_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.pool_checkout_timeout))),
    setting!("auth_file", [], "PGVPD_AUTH_FILE", ["--auth-file"], Kind::Path, "",
        secret: false, switch: false,
        "Secrets of pooled clients, PgBouncer's userlist.txt format (\"name\" \"secret\" per line; name = login role or full client user name role.tenant; secret = plain text, md5 hash or SCRAM-SHA-256 verifier); looked up before pool_password.",
        set: |c, v| { c.auth_file = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.auth_file)),
    setting!("pool_auth_method", [], "PGVPD_POOL_AUTH_METHOD", ["--pool-auth-method"],
        Kind::Enum(POOL_AUTH_METHODS), "scram-sha-256", secret: false, switch: false,
        "How pooled clients authenticate to the proxy: scram-sha-256, or cleartext (only over TLS or from loopback unless pool_allow_insecure_cleartext).",
        set: |c, v| { c.pool_auth_method = p_pool_auth_method(v)?; Ok(()) },
        get: |c| Some(c.pool_auth_method.as_str().to_owned())),
    setting!("pool_allow_insecure_cleartext", [], "PGVPD_POOL_ALLOW_INSECURE_CLEARTEXT",
        ["--pool-allow-insecure-cleartext"], Kind::Bool, "false", secret: false, switch: false,
        "With pool_auth_method = cleartext, also accept passwords over non-TLS connections from non-loopback addresses.",
        set: |c, v| { c.pool_allow_insecure_cleartext = p_bool(v)?; Ok(()) },
        get: |c| Some(c.pool_allow_insecure_cleartext.to_string())),
    setting!("pool_roles", [], "PGVPD_POOL_ROLES", ["--pool-roles"], Kind::List, "",
        secret: false, switch: false,
        "Login roles that may be pooled; unset = any (superuser and BYPASSRLS roles are refused for tenant sessions regardless).",
        set: |c, v| { c.pool_roles = opt(v, p_list)?; Ok(()) },
        get: |c| c.pool_roles.as_deref().map(g_list)),
    setting!("upstream_auth_file", [], "PGVPD_UPSTREAM_AUTH_FILE", ["--upstream-auth-file"],
        Kind::Path, "", secret: false, switch: false,
        "Per-role passwords the proxy logs in to the server with (userlist.txt format, plain text or md5 hash); looked up before upstream_password.",
        set: |c, v| { c.upstream_auth_file = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.upstream_auth_file)),
    setting!("server_reset_query", [], "PGVPD_SERVER_RESET_QUERY", ["--server-reset-query"],
        Kind::Str, "DISCARD ALL", secret: false, switch: false,
        "Sent when a server returns to the pool (after ROLLBACK if a transaction was open); must not be empty.",
        set: |c, v| { c.server_reset_query = p_str(v)?; Ok(()) },
        get: |c| Some(c.server_reset_query.clone())),
    setting!("server_reset_timeout", [], "PGVPD_SERVER_RESET_TIMEOUT",
        ["--server-reset-timeout"], Kind::Secs, "5", secret: false, switch: false,
        "Time a server may take, after its client left, to finish outstanding responses, ROLLBACK and the reset; then it is closed. > 0.",
        set: |c, v| { c.server_reset_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.server_reset_timeout))),
    setting!("server_check_query", [], "PGVPD_SERVER_CHECK_QUERY", ["--server-check-query"],
        Kind::Str, "", secret: false, switch: false,
        "Run on a server idle longer than server_check_delay before it is lent again (e.g. SELECT 1); unset = no check.",
        set: |c, v| { c.server_check_query = opt(v, p_str)?; Ok(()) },
        get: |c| c.server_check_query.clone()),
    setting!("server_check_delay", [], "PGVPD_SERVER_CHECK_DELAY", ["--server-check-delay"],
        Kind::Secs, "30", secret: false, switch: false,
        "Idle time after which server_check_query runs before reuse.",
        set: |c, v| { c.server_check_delay = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.server_check_delay))),
    setting!("server_lifetime", [], "PGVPD_SERVER_LIFETIME", ["--server-lifetime"], Kind::Secs,
        "3600", secret: false, switch: false,
        "A pooled server older than this is closed when it returns to the pool; 0 = no limit.",
        set: |c, v| { c.server_lifetime = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.server_lifetime))),
    setting!("resolvers", [], "PGVPD_RESOLVERS", ["--resolvers"], Kind::Path, "",
        secret: false, switch: false, "TOML file of context resolvers.",
        set: |c, v| { c.resolvers = opt(v, p_path)?; Ok(()) },
        get: |c| g_path(&c.resolvers)),
    setting!("resolver_search_path", [], "PGVPD_RESOLVER_SEARCH_PATH",
        ["--resolver-search-path"], Kind::Str, "pg_catalog, public", secret: false, switch: false,
        "search_path of every resolver query (the client's own search_path never applies); must not be empty.",
        set: |c, v| { c.resolver_search_path = p_str(v)?; Ok(()) },
        get: |c| Some(c.resolver_search_path.clone())),
    setting!("resolver_cache_size", [], "PGVPD_RESOLVER_CACHE_SIZE",
        ["--resolver-cache-size"], Kind::U32, "10000", secret: false, switch: false,
        "Most cached resolver results, least recently used evicted first; 0 = no caching.",
        set: |c, v| { c.resolver_cache_size = p_u32(v)?; Ok(()) },
        get: |c| Some(c.resolver_cache_size.to_string())),
    setting!("admin_port", [], "PGVPD_ADMIN_PORT", ["--admin-port"], Kind::U16, "",
        secret: false, switch: false, "Port of the HTTP admin API (health, metrics, status).",
        set: |c, v| { c.admin_port = opt(v, p_u16)?; Ok(()) },
        get: |c| c.admin_port.map(|p| p.to_string())),
    setting!("admin_listen", [], "PGVPD_ADMIN_LISTEN", ["--admin-listen"], Kind::Str,
        "127.0.0.1", secret: false, switch: false,
        "Address the admin API binds to (pgvpd 1.0 bound 0.0.0.0); with a non-loopback address, set admin_token.",
        set: |c, v| { c.admin_listen = p_str(v)?; Ok(()) },
        get: |c| Some(c.admin_listen.clone())),
    setting!("admin_token", [], "PGVPD_ADMIN_TOKEN", ["--admin-token"], Kind::Str, "",
        secret: true, switch: false,
        "When set, every admin API request must carry it as Authorization: Bearer TOKEN (else 401); visible ASCII, no spaces. Prefer the config file or PGVPD_ADMIN_TOKEN to the command line (visible in ps).",
        set: |c, v| { c.admin_token = opt(v, p_str)?; Ok(()) },
        get: |c| c.admin_token.clone()),
    setting!("set_role", [], "PGVPD_SET_ROLE", ["--set-role"], Kind::Str, "",
        secret: false, switch: false, "Role to SET ROLE to after login (default: the login role).",
        set: |c, v| { c.set_role = opt(v, p_str)?; Ok(()) },
        get: |c| c.set_role.clone()),
    setting!("tenant_allow", [], "PGVPD_TENANT_ALLOW", ["--tenant-allow"], Kind::List, "",
        secret: false, switch: false, "Only these tenants may connect (not with tenant_deny).",
        set: |c, v| { c.tenant_allow = opt(v, p_list)?; Ok(()) },
        get: |c| c.tenant_allow.as_deref().map(g_list)),
    setting!("tenant_deny", [], "PGVPD_TENANT_DENY", ["--tenant-deny"], Kind::List, "",
        secret: false, switch: false, "These tenants are refused (not with tenant_allow).",
        set: |c, v| { c.tenant_deny = opt(v, p_list)?; Ok(()) },
        get: |c| c.tenant_deny.as_deref().map(g_list)),
    setting!("tenant_key", [], "PGVPD_TENANT_KEY", ["--tenant-key"], Kind::Str, "",
        secret: false, switch: false,
        "Context variable whose value is the tenant for tenant_allow/tenant_deny and the tenant limits (unset: the first of context_variables).",
        set: |c, v| { c.tenant_key = opt(v, p_str)?; Ok(()) },
        get: |c| c.tenant_key.clone()),
    setting!("tenant_max_connections", [], "PGVPD_TENANT_MAX_CONNECTIONS",
        ["--tenant-max-connections"], Kind::U32, "", secret: false, switch: false,
        "Most concurrent authenticated sessions per tenant (53300 beyond it); unset = no limit.",
        set: |c, v| { c.tenant_max_connections = opt(v, p_u32)?; Ok(()) },
        get: |c| c.tenant_max_connections.map(|n| n.to_string())),
    setting!("tenant_rate_limit", [], "PGVPD_TENANT_RATE_LIMIT", ["--tenant-rate-limit"],
        Kind::U32, "", secret: false, switch: false,
        "Most new authenticated sessions per tenant per second (token bucket, burst of one second; 53300 beyond it).",
        set: |c, v| { c.tenant_rate_limit = opt(v, p_u32)?; Ok(()) },
        get: |c| c.tenant_rate_limit.map(|n| n.to_string())),
    setting!("tenant_max_servers", [], "PGVPD_TENANT_MAX_SERVERS", ["--tenant-max-servers"],
        Kind::U32, "", secret: false, switch: false,
        "Pool modes: most servers of one pool (database, role) a tenant holds at once; its other clients wait (pool_checkout_timeout) while other tenants are served. Unset = no cap; at or above pool_size it has no effect.",
        set: |c, v| { c.tenant_max_servers = opt(v, p_u32)?; Ok(()) },
        get: |c| c.tenant_max_servers.map(|n| n.to_string())),
    setting!("tenant_query_timeout", [], "PGVPD_TENANT_QUERY_TIMEOUT",
        ["--tenant-query-timeout"], Kind::Secs, "", secret: false, switch: false,
        "pgvpd 1.0's name of query_timeout (same meaning); setting both to different values is an error.",
        set: |c, v| { c.tenant_query_timeout = opt(v, p_secs)?; Ok(()) },
        get: |c| c.tenant_query_timeout.map(g_secs)),
    setting!("workers", [], "PGVPD_WORKERS", ["--workers"], Kind::Usize, "1",
        secret: false, switch: false, "Reactor threads, 1..=64.",
        set: |c, v| { c.workers = p_usize(v)?; Ok(()) },
        get: |c| Some(c.workers.to_string())),
    setting!("upstream_connect_timeout", [], "PGVPD_UPSTREAM_CONNECT_TIMEOUT",
        ["--upstream-connect-timeout"], Kind::Secs, "5", secret: false, switch: false,
        "Bound on the TCP connect to the server; > 0.",
        set: |c, v| { c.upstream_connect_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.upstream_connect_timeout))),
    setting!("shutdown_timeout", [], "PGVPD_SHUTDOWN_TIMEOUT", ["--shutdown-timeout"],
        Kind::Secs, "30", secret: false, switch: false,
        "On SIGINT/SIGTERM, how long sessions may drain before being closed.",
        set: |c, v| { c.shutdown_timeout = p_secs(v)?; Ok(()) },
        get: |c| Some(g_secs(c.shutdown_timeout))),
    setting!("max_client_conn", [], "PGVPD_MAX_CLIENT_CONN", ["--max-client-conn"], Kind::U32,
        "10000", secret: false, switch: false,
        "Most client connections held at once across all workers; > 0.",
        set: |c, v| { c.max_client_conn = p_u32(v)?; Ok(()) },
        get: |c| Some(c.max_client_conn.to_string())),
    setting!("client_idle_timeout", [], "PGVPD_CLIENT_IDLE_TIMEOUT", ["--client-idle-timeout"],
        Kind::Secs, "", secret: false, switch: false,
        "Close a tenant session idle outside a transaction this long (FATAL 57P05; a pooled server goes back to the pool); unset or 0 = off.",
        set: |c, v| { c.client_idle_timeout = opt(v, p_secs)?; Ok(()) },
        get: |c| c.client_idle_timeout.map(g_secs)),
    setting!("idle_transaction_timeout", [], "PGVPD_IDLE_TRANSACTION_TIMEOUT",
        ["--idle-transaction-timeout"], Kind::Secs, "", secret: false, switch: false,
        "Close a tenant session idle inside a transaction this long (FATAL 25P03; the transaction is rolled back); unset or 0 = off.",
        set: |c, v| { c.idle_transaction_timeout = opt(v, p_secs)?; Ok(()) },
        get: |c| c.idle_transaction_timeout.map(g_secs)),
    setting!("query_timeout", [], "PGVPD_QUERY_TIMEOUT", ["--query-timeout"], Kind::Secs, "",
        secret: false, switch: false,
        "Cancel a tenant query (a request awaiting its ReadyForQuery) running this long with a CancelRequest (ERROR 57014, the session goes on); unset or 0 = off.",
        set: |c, v| { c.query_timeout = opt(v, p_secs)?; Ok(()) },
        get: |c| c.query_timeout.map(g_secs)),
    setting!("session_lifetime", [], "PGVPD_SESSION_LIFETIME", ["--session-lifetime"],
        Kind::Secs, "", secret: false, switch: false,
        "End a tenant session this old at its next idle moment outside a transaction (FATAL 57P01; a transaction is never cut); unset or 0 = off.",
        set: |c, v| { c.session_lifetime = opt(v, p_secs)?; Ok(()) },
        get: |c| c.session_lifetime.map(g_secs)),
];

/// Apply one raw value to the config (the NUL check is common to all settings).
pub(crate) fn apply(s: &Setting, cfg: &mut Config, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("value contains a NUL character".to_owned());
    }
    (s.set)(cfg, value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_defaults_match_config_default() {
        let def = Config::default();
        let mut cfg = Config {
            // Scramble everything a default could fix, to prove the table really sets it.
            port: 1,
            listen_host: "x".into(),
            upstream_host: "x".into(),
            upstream_port: 1,
            tenant_separator: "x".into(),
            context_variables: vec![],
            value_separator: "x".into(),
            superuser_bypass: vec![],
            log_level: Level::Trace,
            client_tls: ClientTls::Require,
            upstream_tls: UpstreamTls::VerifyFull,
            upstream_tls_verify: false,
            upstream_tls_direct: true,
            handshake_timeout: Duration::from_secs(1),
            pool_mode: PoolMode::Transaction,
            pool_size: 1,
            pool_idle_timeout: Duration::from_secs(1),
            pool_checkout_timeout: Duration::from_secs(1),
            pool_auth_method: PoolAuthMethod::Cleartext,
            pool_allow_insecure_cleartext: true,
            server_reset_query: "x".into(),
            server_reset_timeout: Duration::from_secs(1),
            server_check_delay: Duration::from_secs(1),
            server_lifetime: Duration::from_secs(1),
            workers: 9,
            upstream_connect_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            max_client_conn: 1,
            admin_listen: "x".into(),
            ..Config::default()
        };
        for s in SETTINGS {
            apply(s, &mut cfg, s.default).unwrap();
            let shown = (s.get)(&def);
            if s.default.is_empty() {
                assert_eq!(shown, None, "{}", s.name);
            } else {
                assert_eq!(shown.as_deref(), Some(s.default), "{}", s.name);
            }
        }
        assert_eq!(cfg, def);
    }

    #[test]
    fn names_flags_envs_unique_and_well_formed() {
        let mut names = HashSet::new();
        let mut flags = HashSet::new();
        let mut envs = HashSet::new();
        for s in SETTINGS {
            for n in std::iter::once(&s.name).chain(s.aliases) {
                assert!(names.insert(n.to_ascii_lowercase()), "dup name {n}");
            }
            for f in s.cli {
                assert!(flags.insert(*f), "dup flag {f}");
                assert!(f.starts_with("--") || (f.len() == 2 && f.starts_with('-')));
            }
            assert!(envs.insert(s.env), "dup env {}", s.env);
            assert!(s.env.starts_with("PGVPD_"));
            assert_eq!(s.switch, s.name == "upstream_tls");
        }
        for reserved in [
            "--config",
            "--check-config",
            "-h",
            "--help",
            "-V",
            "--version",
        ] {
            assert!(!flags.contains(reserved));
        }
        // Every key of behaviour §2.3 plus the new ones.
        for k in [
            "port",
            "listen_port",
            "listen_host",
            "host",
            "upstream_host",
            "upstream_port",
            "tenant_separator",
            "separator",
            "context_variables",
            "context",
            "value_separator",
            "superuser_bypass",
            "superuser",
            "log_level",
            "tls_port",
            "tls_cert",
            "tls_key",
            "client_tls",
            "upstream_tls",
            "upstream_tls_verify",
            "upstream_tls_direct",
            "upstream_tls_ca",
            "handshake_timeout",
            "handshake_timeout_secs",
            "pool_mode",
            "pool_size",
            "max_prepared_statements",
            "pool_password",
            "upstream_password",
            "pool_idle_timeout",
            "pool_checkout_timeout",
            "auth_file",
            "pool_auth_method",
            "pool_allow_insecure_cleartext",
            "pool_roles",
            "upstream_auth_file",
            "server_reset_query",
            "server_reset_timeout",
            "server_check_query",
            "server_check_delay",
            "server_lifetime",
            "resolvers",
            "resolver_search_path",
            "resolver_cache_size",
            "admin_port",
            "admin_listen",
            "admin_token",
            "set_role",
            "tenant_allow",
            "tenant_deny",
            "tenant_key",
            "tenant_max_connections",
            "tenant_rate_limit",
            "tenant_max_servers",
            "tenant_query_timeout",
            "workers",
            "upstream_connect_timeout",
            "shutdown_timeout",
            "max_client_conn",
            "client_idle_timeout",
            "idle_transaction_timeout",
            "query_timeout",
            "session_lifetime",
        ] {
            assert!(find(k).is_some(), "missing key {k}");
        }
        assert_eq!(find("HOST").unwrap().1.name, "listen_host");
        assert_eq!(find_flag("-p").unwrap().1.name, "port");
        assert_eq!(find_flag("--separator").unwrap().1.name, "tenant_separator");
        assert_eq!(
            find_flag("--superuser").unwrap().1.env,
            "PGVPD_SUPERUSER_BYPASS"
        );
        assert_eq!(find("listen_host").unwrap().1.env, "PGVPD_HOST");
    }

    #[test]
    fn value_parsers() {
        assert_eq!(p_u16("0"), Ok(0));
        assert_eq!(p_u16("65535"), Ok(65535));
        assert_eq!(p_u16("007"), Ok(7));
        for bad in [
            "",
            "65536",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1e3",
            "0x10",
            "abc",
            "99999999999999999999999",
        ] {
            let e = p_u16(bad).unwrap_err();
            assert!(e.contains("expected 0..=65535"), "{bad}: {e}");
        }
        assert_eq!(p_u32("4294967295"), Ok(u32::MAX));
        assert!(p_u32("4294967296").is_err());
        assert_eq!(p_secs("30"), Ok(Duration::from_secs(30)));
        assert!(p_secs("1.5").unwrap_err().contains("seconds"));
        assert!(p_secs("4294967296").is_err());
        assert_eq!(p_usize("64"), Ok(64));
        for (s, b) in [("true", true), ("YES", true), ("On", true), ("1", true)] {
            assert_eq!(p_bool(s), Ok(b));
        }
        for s in ["false", "No", "OFF", "0"] {
            assert_eq!(p_bool(s), Ok(false));
        }
        for s in ["", "2", "y", "enabled", " true"] {
            assert!(p_bool(s).unwrap_err().contains("invalid boolean"), "{s}");
        }
        assert_eq!(
            p_list(" a , b,c "),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert!(p_list("a,,b").unwrap_err().contains("empty item"));
        assert!(p_list("a,").unwrap_err().contains("empty item"));
        assert!(p_list("").unwrap_err().contains("empty item"));
        assert!(p_list("a, a").unwrap_err().contains("duplicate item 'a'"));
        assert_eq!(p_pool_mode("Transaction"), Ok(PoolMode::Transaction));
        assert_eq!(p_pool_mode("SESSION"), Ok(PoolMode::Session));
        assert_eq!(p_pool_mode("none"), Ok(PoolMode::None));
        assert!(
            p_pool_mode("sesion")
                .unwrap_err()
                .contains("none, session, transaction")
        );
        assert_eq!(p_client_tls("Allow"), Ok(ClientTls::Allow));
        assert_eq!(p_client_tls("REQUIRE"), Ok(ClientTls::Require));
        assert_eq!(p_client_tls("disable"), Ok(ClientTls::Disable));
        for bad in ["", "true", "prefer", "verify-full", " allow"] {
            assert_eq!(
                p_client_tls(bad),
                Err(format!(
                    "invalid value '{bad}' (expected one of: disable, allow, require)"
                ))
            );
        }
        // (input, mode): libpq spellings plus pgvpd 1.0's booleans.
        let modes: &[(&str, UpstreamTls)] = &[
            ("disable", UpstreamTls::Disable),
            ("prefer", UpstreamTls::Prefer),
            ("Require", UpstreamTls::Require),
            ("verify-ca", UpstreamTls::VerifyCa),
            ("VERIFY-FULL", UpstreamTls::VerifyFull),
            ("true", UpstreamTls::VerifyFull),
            ("yes", UpstreamTls::VerifyFull),
            ("On", UpstreamTls::VerifyFull),
            ("1", UpstreamTls::VerifyFull),
            ("false", UpstreamTls::Disable),
            ("no", UpstreamTls::Disable),
            ("OFF", UpstreamTls::Disable),
            ("0", UpstreamTls::Disable),
        ];
        for (input, mode) in modes {
            assert_eq!(p_upstream_tls(input), Ok(*mode), "{input}");
            if !input.contains(|c: char| c.is_ascii_digit() || c.is_ascii_uppercase()) {
                // The canonical spelling round-trips.
                assert_eq!(p_upstream_tls(mode.as_str()), Ok(*mode));
            }
        }
        for bad in ["", "maybe", "verify_full", "allow", "2", "verify-full "] {
            let e = p_upstream_tls(bad).unwrap_err();
            assert!(
                e.contains(
                    "(expected one of: disable, prefer, require, verify-ca, verify-full, or a boolean)"
                ),
                "{bad}: {e}"
            );
        }
        assert_eq!(p_level("WARNING"), Ok(Level::Warn));
        assert!(p_level("pgvpd=debug").is_err());
        assert_eq!(show("a\nb"), "a\\nb");
        assert_eq!(show(&"x".repeat(100)).len(), 67);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("prot"), Some("port"));
        assert_eq!(suggest("pool_sise"), Some("pool_size"));
        assert_eq!(suggest("contex"), Some("context"));
        assert_eq!(suggest("Upstream_Hots"), Some("upstream_host"));
        assert_eq!(suggest("completely_unknown"), None);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}

#[cfg(test)]
mod readme_tests {
    use super::SETTINGS;

    /// The README's configuration table must list every key.
    #[test]
    fn readme_lists_every_key() {
        let readme = include_str!("../../README.md");
        let missing: Vec<&str> = SETTINGS
            .iter()
            .map(|s| s.name)
            .filter(|n| !readme.contains(&format!("| `{n}` |")))
            .collect();
        assert!(missing.is_empty(), "README config table lacks: {missing:?}");
    }
}
