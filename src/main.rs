//! pgvpd: argv → config → TLS material → listeners → workers → wait for signals.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use pgvpd::admin::{self, AdminConfig, AdminSources, PoolSnapshots};
use pgvpd::auth::userlist::{Secret, UserList};
use pgvpd::config::{self, Command, Config, PoolAuthMethod, PoolMode, UpstreamTls};
use pgvpd::conn::pool_auth::{AuthDb, Method};
use pgvpd::conn::server::UpstreamSecret;
use pgvpd::conn::{PoolSettings, SessionConfig};
use pgvpd::reactor::{self, Shared, WorkerHandle, WorkerSettings};
use pgvpd::resolver::run::Engine;
use pgvpd::sys::{self, Signal};
use pgvpd::tls;
use pgvpd::{error, info, log, warn};

/// Settings accepted for pgvpd 1.0 compatibility whose feature is not in this
/// build yet: refusing to start is safer than silently ignoring them.
fn not_yet_supported(c: &Config) -> Option<&'static str> {
    if c.tenant_query_timeout.is_some() {
        return Some("tenant_query_timeout");
    }
    None
}

fn resolve_upstream(c: &Config) -> Result<Vec<SocketAddr>, String> {
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
fn load_resolvers(c: &Config) -> Result<Option<Arc<Engine>>, String> {
    let Some(path) = &c.resolvers else {
        return Ok(None);
    };
    let what = |e: &dyn std::fmt::Display| format!("resolvers: {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| what(&e))?;
    if meta.len() > pgvpd::resolver::MAX_FILE_BYTES as u64 {
        return Err(what(&format!(
            "larger than {} bytes",
            pgvpd::resolver::MAX_FILE_BYTES
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| what(&e))?;
    let set = pgvpd::resolver::spec::parse(&text, &c.context_variables).map_err(|e| what(&e))?;
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
struct TlsSetup {
    server: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
    client: Option<Arc<rustls::ClientConfig>>,
    upstream_name: Option<rustls::pki_types::ServerName<'static>>,
}

fn load_tls(c: &Config) -> Result<TlsSetup, String> {
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

/// SIGHUP: re-read the certificate and key; a bad file keeps the old ones.
fn reload_tls(c: &Config, slot: &RwLock<Arc<rustls::ServerConfig>>) {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return;
    };
    match tls::load_server_config(cert, key) {
        Ok(new) => {
            match slot.write() {
                Ok(mut g) => *g = new,
                Err(p) => *p.into_inner() = new,
            }
            info!("tls_reloaded", cert = cert.display());
        }
        Err(e) => warn!(
            "tls_reload_failed",
            error = e,
            kept = "the previous certificate"
        ),
    }
}

/// Random bytes from the TLS provider's CSPRNG (no `rand` crate).
fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(b)
}

/// Reads a userlist-format file; errors name the key, file and line.
fn read_userlist(key: &str, path: &std::path::Path) -> Result<UserList, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    UserList::parse(&text).map_err(|e| format!("{key}: {}: {e}", path.display()))
}

/// `pool_mode = session|transaction`: the secrets and settings of the pool.
fn load_pool(c: &Config) -> Result<(Arc<PoolSettings>, Arc<reactor::PoolRuntime>), String> {
    let users = match &c.auth_file {
        Some(p) => Some(read_userlist("auth_file", p)?),
        None => None,
    };
    let method = match c.pool_auth_method {
        PoolAuthMethod::ScramSha256 => Method::ScramSha256,
        PoolAuthMethod::Cleartext => Method::Cleartext,
    };
    let mut salt_err = None;
    let auth = AuthDb::new(
        method,
        c.pool_allow_insecure_cleartext,
        c.pool_password.as_deref().filter(|p| !p.is_empty()),
        users,
        || {
            random::<16>().unwrap_or_else(|e| {
                salt_err = Some(e);
                [0; 16]
            })
        },
        random::<32>()?,
    )?;
    if let Some(e) = salt_err {
        return Err(e);
    }
    let mut upstream_secrets = std::collections::HashMap::new();
    if let Some(p) = &c.upstream_auth_file {
        for (name, secret) in read_userlist("upstream_auth_file", p)?.iter() {
            let s = match secret {
                Secret::Plain(pw) => UpstreamSecret::Plain(pw.clone().into_bytes()),
                Secret::Md5(digest) => UpstreamSecret::Md5Hash(pgvpd::auth::md5::md5_hex(digest)),
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
    let settings = PoolSettings {
        roles: c.pool_roles.clone(),
        auth: Arc::new(auth),
        checkout_timeout: c.pool_checkout_timeout,
        transaction: c.pool_mode == PoolMode::Transaction,
        max_prepared: c.max_prepared_statements as usize,
        tenant_max_servers: c.tenant_max_servers,
    };
    let rt = reactor::PoolRuntime {
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
        cancel: Arc::new(pgvpd::pool::cancel::CancelMap::default()),
    };
    Ok((Arc::new(settings), Arc::new(rt)))
}

fn bind(host: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((host, port)).map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

/// Asks the workers to drain and waits for them.
fn stop_workers(shared: &Shared, workers: Vec<WorkerHandle>) {
    shared.shutdown.store(true, Ordering::Relaxed);
    for w in &workers {
        let _ = w.waker.wake();
    }
    for w in workers {
        let _ = w.thread.join();
    }
}

fn run(cfg: Config) -> ExitCode {
    let started = std::time::Instant::now();
    log::set_level(cfg.log_level);
    let tls_setup = match load_tls(&cfg) {
        Ok(t) => t,
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    let upstream = match resolve_upstream(&cfg) {
        Ok(a) => a,
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    // Block signals before any thread starts, so only `wait_signal` sees them.
    if let Err(e) = sys::block_signals() {
        error!("startup_failed", error = format!("signal mask: {e}"));
        return ExitCode::FAILURE;
    }
    if let Ok(n) = sys::raise_nofile_limit() {
        pgvpd::debug!("nofile_limit", limit = n);
    }
    let listener = match bind(&cfg.listen_host, cfg.port) {
        Ok(l) => l,
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    let tls_listener = match cfg.tls_port.map(|p| bind(&cfg.listen_host, p)) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let shared = Arc::new(Shared::default());
    let mut session = SessionConfig::from_config(&cfg);
    if cfg.tenant_max_connections.is_some() || cfg.tenant_rate_limit.is_some() {
        // Tenants with live sessions are bounded by max_client_conn; the
        // margin holds tenants remembered for the rate limit.
        let cap = usize::try_from(cfg.max_client_conn)
            .unwrap_or(usize::MAX)
            .saturating_add(10_000);
        session.tenants = Some(Arc::new(pgvpd::tenant::Tenants::new(
            cfg.tenant_max_connections,
            cfg.tenant_rate_limit,
            cap,
        )));
    }
    match load_resolvers(&cfg) {
        Ok(r) => {
            if let Some(e) = &r {
                info!(
                    "resolvers_loaded",
                    count = e.len(),
                    variables = e.variables().len()
                );
            }
            session.resolvers = r;
        }
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    }
    let mut pool_rt = None;
    if cfg.pool_mode != PoolMode::None {
        match load_pool(&cfg) {
            Ok((s, rt)) => {
                session.pool = Some(s);
                pool_rt = Some(rt);
            }
            Err(e) => {
                error!("startup_failed", error = e);
                return ExitCode::FAILURE;
            }
        }
    }
    let resolver_engine = session.resolvers.clone();
    // Pool buckets for the admin API, one slot per worker (workers publish into it).
    let pool_snapshots = Arc::new(PoolSnapshots::new(cfg.workers));
    let settings = WorkerSettings {
        session: Arc::new(session),
        upstream: upstream.clone().into(),
        max_client_conn: usize::try_from(cfg.max_client_conn).unwrap_or(usize::MAX),
        shutdown_timeout: cfg.shutdown_timeout,
        tls_server: tls_setup.server.clone(),
        tls_client: tls_setup.client.clone(),
        upstream_name: tls_setup.upstream_name.clone(),
        pool: pool_rt,
    };
    let workers = match reactor::spawn_workers(
        cfg.workers,
        &listener,
        tls_listener.as_ref(),
        settings,
        shared.clone(),
    ) {
        Ok(w) => w,
        Err(e) => {
            error!("startup_failed", error = format!("workers: {e}"));
            return ExitCode::FAILURE;
        }
    };
    drop(listener);
    drop(tls_listener);
    let up: Vec<String> = upstream.iter().map(|a| a.to_string()).collect();
    info!(
        "listening",
        addr = local,
        tls_port = cfg.tls_port.unwrap_or(0),
        client_tls = cfg.client_tls.as_str(),
        upstream = up.join(","),
        upstream_tls = cfg.upstream_tls.as_str(),
        workers = cfg.workers,
        mode = cfg.pool_mode.as_str(),
        version = env!("CARGO_PKG_VERSION")
    );
    let admin = match AdminConfig::from_config(&cfg) {
        None => None,
        Some(acfg) => {
            let sources = AdminSources::new(
                &cfg,
                upstream.clone().into(),
                resolver_engine,
                pool_snapshots,
                started,
            );
            match admin::spawn(acfg, sources) {
                Ok(h) => Some(h),
                Err(e) => {
                    error!("startup_failed", error = e);
                    stop_workers(&shared, workers);
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    loop {
        match sys::wait_signal() {
            Ok(Signal::Terminate) => break,
            Ok(Signal::Hangup) => match &tls_setup.server {
                Some(slot) => reload_tls(&cfg, slot),
                None => info!("sighup", reloaded = "nothing (no tls_cert configured)"),
            },
            Err(e) => {
                error!("signal_wait_failed", error = e);
                break;
            }
        }
    }
    info!("shutdown", drain_timeout_s = cfg.shutdown_timeout.as_secs());
    stop_workers(&shared, workers);
    // The admin API keeps answering while sessions drain.
    if let Some(a) = admin {
        a.stop();
    }
    info!("stopped");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = config::load(&args, &|k| std::env::var(k).ok(), &|p| {
        std::fs::read_to_string(p)
    });
    let cmd = match cmd {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgvpd: {e}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{}", config::help_text());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("pgvpd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig(cfg) => {
            if let Some(what) = not_yet_supported(&cfg) {
                eprintln!("pgvpd: {what} is not supported by this build yet");
                return ExitCode::from(2);
            }
            if let Err(e) = load_tls(&cfg) {
                eprintln!("pgvpd: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = load_resolvers(&cfg) {
                eprintln!("pgvpd: {e}");
                return ExitCode::from(2);
            }
            print!("{}", config::render_effective(&cfg));
            println!("# configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Run(cfg) => {
            if let Some(what) = not_yet_supported(&cfg) {
                eprintln!("pgvpd: {what} is not supported by this build yet");
                return ExitCode::from(2);
            }
            run(*cfg)
        }
    }
}
