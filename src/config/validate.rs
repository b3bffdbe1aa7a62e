//! Cross-field and semantic checks, run once by [`load`](super::load()) (and on reload).
//!
//! Every error names the key it is about (`ConfigError::key`, canonical spelling) with
//! `Source::Default` and line 0; `load` then points it at the file line, env var or flag that
//! set that key. Checks, in order:
//! 1. `workers` in 1..=[`MAX_WORKERS`]; `listen_host`, `upstream_host` non-empty;
//! 2. `tls_port` requires `tls_cert` and `tls_key` and differs from `port` (unless 0; both
//!    bind `listen_host`; the admin API binds its own address, so its port is not compared);
//!    `tls_cert` and `tls_key` only together; `client_tls = allow|require` needs both;
//!    `upstream_tls_direct` needs `upstream_tls = require|verify-ca|verify-full`;
//! 3. `handshake_timeout`, `upstream_connect_timeout`, `max_client_conn` > 0;
//! 4. `pool_mode = session|transaction` requires `pool_password` (or `auth_file`),
//!    `upstream_password` (or `upstream_auth_file`), `pool_size > 0`, a non-empty
//!    `server_reset_query` and `server_reset_timeout > 0`;
//! 5. `tenant_allow` and `tenant_deny` not both; their items non-empty;
//! 6. `tenant_separator` non-empty; `value_separator` non-empty with more than one variable;
//! 7. `context_variables`: non-empty, each a valid custom setting name ([`is_custom_guc_name`])
//!    whose prefix is not reserved ([`RESERVED_PREFIXES`]), no duplicates (case-insensitively,
//!    as PostgreSQL folds these names);
//! 8. `set_role`: non-empty, at most 63 bytes, no NUL; `superuser_bypass` items non-empty;
//! 9. `tenant_max_connections`, `tenant_rate_limit`, `tenant_max_servers` > 0 when set
//!    (`tenant_max_servers` at or above `pool_size` is allowed: no effect); `tenant_key` is one of
//!    `context_variables`; `resolver_search_path`: non-empty, no NUL;
//! 10. `query_timeout` and its pgvpd 1.0 name `tenant_query_timeout` not set to different
//!     values;
//! 11. `admin_listen` non-empty; `admin_token` 1..=[`MAX_ADMIN_TOKEN`] visible ASCII characters
//!     (it travels in an HTTP header: no spaces or control characters).
//!
//! Not checked here (needs I/O): that `resolvers`, `tls_cert`, `tls_key` exist and parse.

use super::{ClientTls, Config, ConfigError, PoolAuthMethod, PoolMode, Source, UpstreamTls};

/// Most reactor threads.
pub const MAX_WORKERS: usize = 64;
/// Longest `admin_token` in bytes (it must fit the admin API's request head).
pub const MAX_ADMIN_TOKEN: usize = 1024;
/// PostgreSQL identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENT: usize = 63;
/// Setting-name prefixes that may not be used for context variables: `pgvpd` is reserved for
/// the proxy's own session variables; `plpgsql` is reserved by PostgreSQL's PL/pgSQL.
pub const RESERVED_PREFIXES: &[&str] = &["pgvpd", "plpgsql"];

fn err(key: &str, msg: String) -> ConfigError {
    ConfigError::new(Source::Default, 0, Some(key), msg)
}

/// `true` if `name` is a valid custom setting name: two or more dot-separated parts, each
/// `[A-Za-z_][A-Za-z0-9_]*` and at most 63 bytes (`app.current_tenant_id`, `a.b.c`).
pub fn is_custom_guc_name(name: &str) -> bool {
    let mut parts = 0usize;
    for part in name.split('.') {
        let mut bytes = part.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if !first_ok
            || part.len() > MAX_IDENT
            || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return false;
        }
        parts = parts.saturating_add(1);
    }
    parts >= 2
}

fn check_items(key: &str, items: &[String]) -> Result<(), ConfigError> {
    if items.iter().any(|i| i.trim().is_empty()) {
        return Err(err(key, "list items must not be empty".into()));
    }
    Ok(())
}

fn missing(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

/// Check the whole configuration; the first problem found is returned.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.workers == 0 || c.workers > MAX_WORKERS {
        return Err(err(
            "workers",
            format!("must be between 1 and {MAX_WORKERS} (got {})", c.workers),
        ));
    }
    if c.listen_host.is_empty() {
        return Err(err("listen_host", "must not be empty".into()));
    }
    if c.upstream_host.is_empty() {
        return Err(err("upstream_host", "must not be empty".into()));
    }
    if let Some(tls) = c.tls_port {
        if c.tls_cert.is_none() || c.tls_key.is_none() {
            return Err(err("tls_port", "requires both tls_cert and tls_key".into()));
        }
        if tls != 0 && tls == c.port {
            return Err(err("tls_port", format!("must differ from port ({tls})")));
        }
    }
    validate_tls(c)?;
    if c.handshake_timeout.is_zero() {
        return Err(err("handshake_timeout", "must be > 0".into()));
    }
    if c.upstream_connect_timeout.is_zero() {
        return Err(err("upstream_connect_timeout", "must be > 0".into()));
    }
    if c.max_client_conn == 0 {
        return Err(err("max_client_conn", "must be > 0".into()));
    }
    if c.pool_mode != PoolMode::None {
        let mode = c.pool_mode.as_str();
        if missing(&c.pool_password) && c.auth_file.is_none() {
            return Err(err(
                "pool_mode",
                format!("pool_mode = {mode} requires pool_password or auth_file"),
            ));
        }
        if missing(&c.upstream_password) && c.upstream_auth_file.is_none() {
            return Err(err(
                "pool_mode",
                format!("pool_mode = {mode} requires upstream_password or upstream_auth_file"),
            ));
        }
        if c.server_reset_query.trim().is_empty() {
            return Err(err(
                "server_reset_query",
                "must not be empty: tenants share pooled servers, so a reset is mandatory".into(),
            ));
        }
        if c.server_reset_timeout.is_zero() {
            return Err(err("server_reset_timeout", "must be > 0".into()));
        }
        if let Some(l) = &c.pool_roles {
            check_items("pool_roles", l)?;
            if let Some(r) = l.iter().find(|r| r.contains(c.tenant_separator.as_str())) {
                return Err(err(
                    "pool_roles",
                    format!(
                        "role '{r}' contains the tenant_separator '{}': user names are split at \
                         its first occurrence, so this role could never be pooled",
                        c.tenant_separator
                    ),
                ));
            }
        }
        if c.pool_size == 0 {
            return Err(err(
                "pool_size",
                format!("must be > 0 with pool_mode = {mode}"),
            ));
        }
    }
    if c.pool_allow_insecure_cleartext && c.pool_auth_method != PoolAuthMethod::Cleartext {
        return Err(err(
            "pool_allow_insecure_cleartext",
            format!(
                "only applies with pool_auth_method = cleartext (got {})",
                c.pool_auth_method.as_str()
            ),
        ));
    }
    if c.tenant_allow.is_some() && c.tenant_deny.is_some() {
        return Err(err(
            "tenant_deny",
            "tenant_allow and tenant_deny cannot both be set".into(),
        ));
    }
    if let Some(l) = &c.tenant_allow {
        check_items("tenant_allow", l)?;
    }
    if let Some(l) = &c.tenant_deny {
        check_items("tenant_deny", l)?;
    }
    if c.tenant_separator.is_empty() {
        return Err(err("tenant_separator", "must not be empty".into()));
    }
    validate_context(c)?;
    if let Some(role) = &c.set_role {
        if role.is_empty() {
            return Err(err("set_role", "must not be empty".into()));
        }
        if role.len() > MAX_IDENT {
            return Err(err(
                "set_role",
                format!("role name longer than {MAX_IDENT} bytes"),
            ));
        }
        if role.contains('\0') {
            return Err(err("set_role", "role name contains a NUL character".into()));
        }
    }
    check_items("superuser_bypass", &c.superuser_bypass)?;
    if c.tenant_max_connections == Some(0) {
        return Err(err(
            "tenant_max_connections",
            "must be > 0 (unset it for no limit)".into(),
        ));
    }
    if c.tenant_rate_limit == Some(0) {
        return Err(err(
            "tenant_rate_limit",
            "must be > 0 (unset it for no limit)".into(),
        ));
    }
    if c.tenant_max_servers == Some(0) {
        return Err(err(
            "tenant_max_servers",
            "must be > 0 (unset it for no cap)".into(),
        ));
    }
    if let Some(k) = &c.tenant_key
        && !c.context_variables.iter().any(|v| v == k)
    {
        return Err(err(
            "tenant_key",
            format!(
                "'{k}' is not one of context_variables ({})",
                c.context_variables.join(", ")
            ),
        ));
    }
    if c.resolver_search_path.trim().is_empty() || c.resolver_search_path.contains('\0') {
        return Err(err(
            "resolver_search_path",
            "must be a non-empty search_path without NUL (e.g. pg_catalog, public)".into(),
        ));
    }
    if let (Some(q), Some(t)) = (c.query_timeout, c.tenant_query_timeout)
        && q != t
    {
        return Err(err(
            "tenant_query_timeout",
            format!(
                "tenant_query_timeout ({}s) and query_timeout ({}s) differ: \
                 tenant_query_timeout is pgvpd 1.0's name of query_timeout; set only one of them",
                t.as_secs(),
                q.as_secs()
            ),
        ));
    }
    if c.admin_listen.trim().is_empty() {
        return Err(err("admin_listen", "must not be empty".into()));
    }
    if let Some(t) = &c.admin_token
        && (t.is_empty() || t.len() > MAX_ADMIN_TOKEN || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(err(
            "admin_token",
            format!(
                "must be 1 to {MAX_ADMIN_TOKEN} visible ASCII characters (no spaces or control characters)"
            ),
        ));
    }
    Ok(())
}

fn validate_tls(c: &Config) -> Result<(), ConfigError> {
    match (&c.tls_cert, &c.tls_key) {
        (Some(_), None) => {
            return Err(err(
                "tls_cert",
                "requires tls_key (the private key for tls_cert)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "tls_key",
                "requires tls_cert (the certificate chain for tls_key)".into(),
            ));
        }
        _ => {}
    }
    if c.client_tls != ClientTls::Disable && (c.tls_cert.is_none() || c.tls_key.is_none()) {
        return Err(err(
            "client_tls",
            format!(
                "client_tls = {} requires tls_cert and tls_key",
                c.client_tls.as_str()
            ),
        ));
    }
    if c.upstream_tls_direct && matches!(c.upstream_tls, UpstreamTls::Disable | UpstreamTls::Prefer)
    {
        return Err(err(
            "upstream_tls_direct",
            format!(
                "requires upstream_tls = require, verify-ca or verify-full (got {})",
                c.upstream_tls.as_str()
            ),
        ));
    }
    Ok(())
}

fn validate_context(c: &Config) -> Result<(), ConfigError> {
    const KEY: &str = "context_variables";
    let vars = &c.context_variables;
    if vars.is_empty() {
        return Err(err(KEY, "at least one variable is required".into()));
    }
    for (i, v) in vars.iter().enumerate() {
        let shown = super::settings::show(v);
        if !is_custom_guc_name(v) {
            return Err(err(
                KEY,
                format!("'{shown}' is not a valid setting name (expected prefix.name)"),
            ));
        }
        let prefix = v.split('.').next().unwrap_or_default();
        if RESERVED_PREFIXES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(prefix))
        {
            return Err(err(
                KEY,
                format!("'{shown}': the prefix '{prefix}' is reserved"),
            ));
        }
        let earlier = vars.iter().take(i);
        if earlier.into_iter().any(|e| e.eq_ignore_ascii_case(v)) {
            return Err(err(KEY, format!("'{shown}' is listed twice")));
        }
    }
    if vars.len() > 1 && c.value_separator.is_empty() {
        return Err(err(
            "value_separator",
            "must not be empty with more than one context variable".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn guc_names() {
        let cases: &[(&str, bool)] = &[
            ("app.current_tenant_id", true),
            ("app.tenant", true),
            ("_a._b", true),
            ("a.b.c", true),
            ("App.Tenant2", true),
            ("app", false),
            ("", false),
            (".x", false),
            ("x.", false),
            ("a..b", false),
            ("app-tenant", false),
            ("app.1tenant", false),
            ("1app.tenant", false),
            ("app.ten ant", false),
            ("app.tenant;drop", false),
            ("app.\"x\"", false),
            ("app.é", false),
            ("a$b.c", false),
        ];
        for (name, ok) in cases {
            assert_eq!(is_custom_guc_name(name), *ok, "{name:?}");
        }
        let long = format!("app.{}", "x".repeat(63));
        assert!(is_custom_guc_name(&long));
        let too_long = format!("app.{}", "x".repeat(64));
        assert!(!is_custom_guc_name(&too_long));
    }

    #[test]
    fn default_is_valid() {
        validate(&Config::default()).unwrap();
    }

    #[test]
    fn tenant_query_timeout_may_repeat_query_timeout() {
        let s = |n| Some(Duration::from_secs(n));
        for (q, t) in [(s(5), s(5)), (s(5), None), (None, s(5)), (None, None)] {
            let c = Config {
                query_timeout: q,
                tenant_query_timeout: t,
                ..Config::default()
            };
            validate(&c).unwrap();
        }
    }

    #[test]
    fn tenant_max_servers_above_pool_size_is_allowed() {
        // Documented as having no effect, not an error (the cap of one
        // tenant is meaningful only below the pool's size).
        validate(&Config {
            pool_mode: PoolMode::Transaction,
            pool_password: Some("p".into()),
            upstream_password: Some("u".into()),
            pool_size: 2,
            tenant_max_servers: Some(5),
            ..Config::default()
        })
        .unwrap();
    }

    #[test]
    fn messages_name_the_key() {
        let d = Config::default;
        let pooled = || Config {
            pool_mode: PoolMode::Session,
            pool_password: Some("p".into()),
            upstream_password: Some("u".into()),
            ..d()
        };
        // (config, key, message fragment)
        let cases: Vec<(Config, &str, &str)> = vec![
            (Config { workers: 0, ..d() }, "workers", "between 1 and 64"),
            (
                Config {
                    query_timeout: Some(Duration::from_secs(5)),
                    tenant_query_timeout: Some(Duration::from_secs(3)),
                    ..d()
                },
                "tenant_query_timeout",
                "tenant_query_timeout (3s) and query_timeout (5s) differ",
            ),
            (
                Config {
                    query_timeout: Some(Duration::ZERO),
                    tenant_query_timeout: Some(Duration::from_secs(3)),
                    ..d()
                },
                "tenant_query_timeout",
                "query_timeout (0s) differ",
            ),
            (
                Config {
                    admin_listen: " ".into(),
                    ..d()
                },
                "admin_listen",
                "empty",
            ),
            (
                Config {
                    admin_token: Some("two words".into()),
                    ..d()
                },
                "admin_token",
                "visible ASCII",
            ),
            (
                Config {
                    admin_token: Some("x".repeat(MAX_ADMIN_TOKEN + 1)),
                    ..d()
                },
                "admin_token",
                "visible ASCII",
            ),
            (
                Config {
                    admin_token: Some("caf\u{e9}".into()),
                    ..d()
                },
                "admin_token",
                "visible ASCII",
            ),
            (Config { workers: 65, ..d() }, "workers", "between 1 and 64"),
            (
                Config {
                    listen_host: "".into(),
                    ..d()
                },
                "listen_host",
                "empty",
            ),
            (
                Config {
                    upstream_host: "".into(),
                    ..d()
                },
                "upstream_host",
                "empty",
            ),
            (
                Config {
                    tls_port: Some(6433),
                    ..d()
                },
                "tls_port",
                "requires both tls_cert and tls_key",
            ),
            (
                Config {
                    tls_port: Some(6433),
                    tls_cert: Some(PathBuf::from("c")),
                    ..d()
                },
                "tls_port",
                "requires both",
            ),
            (
                Config {
                    tls_port: Some(6432),
                    tls_cert: Some(PathBuf::from("c")),
                    tls_key: Some(PathBuf::from("k")),
                    ..d()
                },
                "tls_port",
                "must differ from port",
            ),
            (
                Config {
                    tls_cert: Some(PathBuf::from("c")),
                    ..d()
                },
                "tls_cert",
                "requires tls_key",
            ),
            (
                Config {
                    tls_key: Some(PathBuf::from("k")),
                    ..d()
                },
                "tls_key",
                "requires tls_cert",
            ),
            (
                Config {
                    client_tls: ClientTls::Allow,
                    ..d()
                },
                "client_tls",
                "client_tls = allow requires tls_cert and tls_key",
            ),
            (
                Config {
                    client_tls: ClientTls::Require,
                    ..d()
                },
                "client_tls",
                "client_tls = require requires tls_cert and tls_key",
            ),
            (
                Config {
                    upstream_tls_direct: true,
                    ..d()
                },
                "upstream_tls_direct",
                "requires upstream_tls = require, verify-ca or verify-full (got disable)",
            ),
            (
                Config {
                    upstream_tls: UpstreamTls::Prefer,
                    upstream_tls_direct: true,
                    ..d()
                },
                "upstream_tls_direct",
                "(got prefer)",
            ),
            (
                Config {
                    handshake_timeout: Duration::ZERO,
                    ..d()
                },
                "handshake_timeout",
                "must be > 0",
            ),
            (
                Config {
                    upstream_connect_timeout: Duration::ZERO,
                    ..d()
                },
                "upstream_connect_timeout",
                "must be > 0",
            ),
            (
                Config {
                    max_client_conn: 0,
                    ..d()
                },
                "max_client_conn",
                "must be > 0",
            ),
            (
                Config {
                    pool_mode: PoolMode::Session,
                    ..d()
                },
                "pool_mode",
                "pool_mode = session requires pool_password or auth_file",
            ),
            (
                Config {
                    pool_password: None,
                    ..pooled()
                },
                "pool_mode",
                "requires pool_password",
            ),
            (
                Config {
                    pool_password: Some("".into()),
                    ..pooled()
                },
                "pool_mode",
                "requires pool_password",
            ),
            (
                Config {
                    pool_mode: PoolMode::Transaction,
                    upstream_password: None,
                    ..pooled()
                },
                "pool_mode",
                "pool_mode = transaction requires upstream_password or upstream_auth_file",
            ),
            (
                Config {
                    server_reset_query: " ".into(),
                    ..pooled()
                },
                "server_reset_query",
                "reset is mandatory",
            ),
            (
                Config {
                    server_reset_timeout: Duration::ZERO,
                    ..pooled()
                },
                "server_reset_timeout",
                "must be > 0",
            ),
            (
                Config {
                    pool_roles: Some(vec![" ".into()]),
                    ..pooled()
                },
                "pool_roles",
                "",
            ),
            (
                Config {
                    pool_roles: Some(vec!["app.x".into()]),
                    ..pooled()
                },
                "pool_roles",
                "contains the tenant_separator",
            ),
            (
                Config {
                    pool_allow_insecure_cleartext: true,
                    ..d()
                },
                "pool_allow_insecure_cleartext",
                "only applies with pool_auth_method = cleartext",
            ),
            (
                Config {
                    pool_size: 0,
                    ..pooled()
                },
                "pool_size",
                "must be > 0 with pool_mode = session",
            ),
            (
                Config {
                    tenant_allow: Some(vec!["a".into()]),
                    tenant_deny: Some(vec!["b".into()]),
                    ..d()
                },
                "tenant_deny",
                "cannot both be set",
            ),
            (
                Config {
                    tenant_allow: Some(vec![" ".into()]),
                    ..d()
                },
                "tenant_allow",
                "not be empty",
            ),
            (
                Config {
                    tenant_separator: "".into(),
                    ..d()
                },
                "tenant_separator",
                "must not be empty",
            ),
            (
                Config {
                    context_variables: vec![],
                    ..d()
                },
                "context_variables",
                "at least one",
            ),
            (
                Config {
                    context_variables: vec!["app-tenant".into()],
                    ..d()
                },
                "context_variables",
                "'app-tenant' is not a valid setting name (expected prefix.name)",
            ),
            (
                Config {
                    context_variables: vec!["pgvpd.tenant".into()],
                    ..d()
                },
                "context_variables",
                "prefix 'pgvpd' is reserved",
            ),
            (
                Config {
                    context_variables: vec!["PLPGSQL.x".into()],
                    ..d()
                },
                "context_variables",
                "reserved",
            ),
            (
                Config {
                    context_variables: vec!["app.a".into(), "APP.A".into()],
                    ..d()
                },
                "context_variables",
                "'APP.A' is listed twice",
            ),
            (
                Config {
                    context_variables: vec!["app.a".into(), "app.b".into()],
                    value_separator: "".into(),
                    ..d()
                },
                "value_separator",
                "must not be empty",
            ),
            (
                Config {
                    tenant_max_servers: Some(0),
                    ..pooled()
                },
                "tenant_max_servers",
                "must be > 0",
            ),
            (
                Config {
                    set_role: Some("".into()),
                    ..d()
                },
                "set_role",
                "must not be empty",
            ),
            (
                Config {
                    set_role: Some("r".repeat(64)),
                    ..d()
                },
                "set_role",
                "longer than 63",
            ),
            (
                Config {
                    set_role: Some("a\0b".into()),
                    ..d()
                },
                "set_role",
                "NUL",
            ),
            (
                Config {
                    superuser_bypass: vec!["".into()],
                    ..d()
                },
                "superuser_bypass",
                "empty",
            ),
        ];
        for (cfg, key, frag) in cases {
            let e = validate(&cfg).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.msg.contains(frag), "{e}");
            assert!(e.to_string().starts_with(&format!("key '{key}': ")), "{e}");
        }
        // Accepted edge cases.
        validate(&Config {
            value_separator: "".into(),
            ..d()
        })
        .unwrap();
        validate(&Config {
            set_role: Some("r".repeat(63)),
            ..d()
        })
        .unwrap();
        validate(&Config {
            tenant_deny: Some(vec!["x".into()]),
            ..d()
        })
        .unwrap();
        validate(&Config {
            port: 0,
            tls_port: Some(0),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            admin_port: Some(0),
            admin_token: Some("s3cr3t-T0ken_~!".into()),
            ..d()
        })
        .unwrap();
        validate(&Config {
            pool_size: 0,
            ..d()
        })
        .unwrap();
        validate(&pooled()).unwrap();
        for mode in [ClientTls::Disable, ClientTls::Allow, ClientTls::Require] {
            validate(&Config {
                client_tls: mode,
                tls_cert: Some("c".into()),
                tls_key: Some("k".into()),
                ..d()
            })
            .unwrap();
        }
        for mode in [
            UpstreamTls::Require,
            UpstreamTls::VerifyCa,
            UpstreamTls::VerifyFull,
        ] {
            validate(&Config {
                upstream_tls: mode,
                upstream_tls_direct: true,
                ..d()
            })
            .unwrap();
        }
        validate(&Config { workers: 64, ..d() }).unwrap();
    }
}
