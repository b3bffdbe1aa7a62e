//! Loading what the configuration points at: upstream addresses, TLS material,
//! resolver files, userlists and pool settings, and the [`SessionConfig`]
//! sessions start with. Used at start and by a reload ([`crate::reload`]), so
//! both build the same thing from a [`Config`]. Errors are messages naming the
//! key and file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, RwLock};

use crate::auth::userlist::{Secret, UserList};
use crate::config::{Config, PoolAuthMethod, PoolMode, UpstreamTls};
use crate::conn::pool_auth::{AuthDb, Method};
use crate::conn::server::UpstreamSecret;
use crate::conn::{PoolSettings, SessionConfig};
use crate::reactor;
use crate::resolver::run::Engine;
use crate::tenant::Tenants;
use crate::tls;

pub fn resolve_upstream(c: &Config) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = c.upstream_host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, c.upstream_port)]);
    }
    let addrs: Vec<SocketAddr> = (c.upstream_host.as_str(), c.upstream_port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream_host '{}': {e}", c.upstream_host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "upstream_host '{}' resolved to no address",
            c.upstream_host
        ));
    }
    Ok(addrs)
}

/// Reads and validates the `resolvers` file (None when unset).
pub fn load_resolvers(c: &Config) -> Result<Option<Arc<Engine>>, String> {
    let Some(path) = &c.resolvers else {
        return Ok(None);
    };
    let what = |e: &dyn std::fmt::Display| format!("resolvers: {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| what(&e))?;
    if meta.len() > crate::resolver::MAX_FILE_BYTES as u64 {
        return Err(what(&format!(
            "larger than {} bytes",
            crate::resolver::MAX_FILE_BYTES
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| what(&e))?;
    let set = crate::resolver::spec::parse(&text, &c.context_variables).map_err(|e| what(&e))?;
    let engine = Engine::new(
        set,
        &c.context_variables,
        &c.resolver_search_path,
        usize::try_from(c.resolver_cache_size).unwrap_or(usize::MAX),
    )
    .map_err(|e| what(&e))?;
    Ok(Some(Arc::new(engine)))
}

/// TLS material loaded at start (the server side again on SIGHUP).
pub struct TlsSetup {
    pub server: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
    pub client: Option<Arc<rustls::ClientConfig>>,
    pub upstream_name: Option<rustls::pki_types::ServerName<'static>>,
}

pub fn load_tls(c: &Config) -> Result<TlsSetup, String> {
    let server = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(RwLock::new(
            tls::load_server_config(cert, key).map_err(|e| e.to_string())?,
        ))),
        _ => None,
    };
    let (client, upstream_name) = if c.upstream_tls == UpstreamTls::Disable {
        (None, None)
    } else {
        let cfg = tls::load_client_config(
            c.upstream_tls,
            c.upstream_tls_ca.as_deref(),
            c.upstream_tls_direct,
        )
        .map_err(|e| e.to_string())?;
        let name = tls::server_name(&c.upstream_host).map_err(|e| e.to_string())?;
        (Some(cfg), Some(name))
    };
    Ok(TlsSetup {
        server,
        client,
        upstream_name,
    })
}

/// Random bytes from the TLS provider's CSPRNG (no `rand` crate).
pub fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(b)
}

/// Reads a userlist-format file; errors name the key, file and line.
pub fn read_userlist(key: &str, path: &std::path::Path) -> Result<UserList, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    UserList::parse(&text).map_err(|e| format!("{key}: {}: {e}", path.display()))
}

/// `pool_mode = session|transaction`: how pooled clients log in and check out
/// (read again by a reload). `auth_key`: [`auth_key`], made once per process.
pub fn pool_settings(c: &Config, auth_key: &[u8; 32]) -> Result<PoolSettings, String> {
    let users = match &c.auth_file {
        Some(p) => Some(read_userlist("auth_file", p)?),
        None => None,
    };
    let method = match c.pool_auth_method {
        PoolAuthMethod::ScramSha256 => Method::ScramSha256,
        PoolAuthMethod::Cleartext => Method::Cleartext,
    };
    let auth = AuthDb::new(
        method,
        c.pool_allow_insecure_cleartext,
        c.pool_password.as_deref().filter(|p| !p.is_empty()),
        users,
        *auth_key,
    )?;
    Ok(PoolSettings {
        roles: c.pool_roles.clone(),
        auth: Arc::new(auth),
        checkout_timeout: c.pool_checkout_timeout,
        transaction: c.pool_mode == PoolMode::Transaction,
        max_prepared: c.max_prepared_statements as usize,
        tenant_max_servers: c.tenant_max_servers,
    })
}

/// What the workers need to run pools (read once, at start: a reload does not
/// change it).
pub fn pool_runtime(c: &Config) -> Result<reactor::PoolRuntime, String> {
    let mut upstream_secrets = std::collections::HashMap::new();
    if let Some(p) = &c.upstream_auth_file {
        for (name, secret) in read_userlist("upstream_auth_file", p)?.iter() {
            let s = match secret {
                Secret::Plain(pw) => UpstreamSecret::Plain(pw.clone().into_bytes()),
                Secret::Md5(digest) => UpstreamSecret::Md5Hash(crate::auth::md5::md5_hex(digest)),
                Secret::Scram(_) => {
                    return Err(format!(
                        "upstream_auth_file: {}: the entry for \"{name}\" is a SCRAM verifier; \
                         the proxy needs the password (or an md5 hash for MD5 servers)",
                        p.display()
                    ));
                }
            };
            upstream_secrets.insert(name.to_string(), s);
        }
    }
    let session = SessionConfig::from_config(c);
    Ok(reactor::PoolRuntime {
        pool_size: c.pool_size,
        idle_timeout: c.pool_idle_timeout,
        lifetime: (!c.server_lifetime.is_zero()).then_some(c.server_lifetime),
        reset_query: c.server_reset_query.clone(),
        reset_timeout: c.server_reset_timeout,
        check_query: c
            .server_check_query
            .clone()
            .filter(|q| !q.trim().is_empty()),
        check_delay: c.server_check_delay,
        upstream_password: c.upstream_password.clone().map(String::into_bytes),
        upstream_secrets,
        upstream_tls: session.upstream_tls,
        limits: session.limits,
        login_timeout: c.handshake_timeout,
        cancel: Arc::new(crate::pool::cancel::CancelMap::default()),
    })
}

/// The tenant registry (limits and per-tenant counts), shared by every
/// session and kept across reloads.
pub fn tenant_registry(c: &Config) -> Arc<Tenants> {
    // Tenants with live sessions are bounded by max_client_conn; the margin
    // holds tenants remembered for the rate limit.
    let cap = usize::try_from(c.max_client_conn)
        .unwrap_or(usize::MAX)
        .saturating_add(10_000);
    Arc::new(Tenants::new(
        c.tenant_max_connections,
        c.tenant_rate_limit,
        cap,
    ))
}

/// The key pooled-client authentication derives salts and mock verifiers
/// from: random, made once at start and kept by every reload (a new one would
/// change every salt, and which salts change would tell which users exist).
pub fn auth_key() -> Result<[u8; 32], String> {
    random::<32>()
}

/// The configuration sessions start with: `c` plus the files it names
/// (resolvers, userlists), sharing `tenants` and `auth_key`.
pub fn session_config(
    c: &Config,
    tenants: &Arc<Tenants>,
    auth_key: &[u8; 32],
) -> Result<SessionConfig, String> {
    let mut session = SessionConfig::from_config(c);
    session.tenants = Some(Arc::clone(tenants));
    session.resolvers = load_resolvers(c)?;
    if c.pool_mode != PoolMode::None {
        session.pool = Some(Arc::new(pool_settings(c, auth_key)?));
    }
    Ok(session)
}
