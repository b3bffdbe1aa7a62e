//! pgvpd: argv → config → TLS material → listeners → workers → wait for signals.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use pgvpd::config::{self, Command, Config, PoolMode, UpstreamTls};
use pgvpd::conn::SessionConfig;
use pgvpd::reactor::{self, Shared, WorkerSettings};
use pgvpd::sys::{self, Signal};
use pgvpd::tls;
use pgvpd::{error, info, log, warn};

/// Settings accepted for pgvpd 1.0 compatibility whose feature is not in this
/// build yet: refusing to start is safer than silently ignoring them.
fn not_yet_supported(c: &Config) -> Option<&'static str> {
    if c.pool_mode != PoolMode::None {
        return Some("pool_mode = session/transaction");
    }
    if c.resolvers.is_some() {
        return Some("resolvers");
    }
    if c.admin_port.is_some() {
        return Some("admin_port");
    }
    if c.tenant_max_connections.is_some()
        || c.tenant_rate_limit.is_some()
        || c.tenant_query_timeout.is_some()
    {
        return Some("tenant_max_connections/tenant_rate_limit/tenant_query_timeout");
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

fn bind(host: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((host, port)).map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

fn run(cfg: Config) -> ExitCode {
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
    let settings = WorkerSettings {
        session: Arc::new(SessionConfig::from_config(&cfg)),
        upstream: upstream.clone().into(),
        max_client_conn: usize::try_from(cfg.max_client_conn).unwrap_or(usize::MAX),
        shutdown_timeout: cfg.shutdown_timeout,
        tls_server: tls_setup.server.clone(),
        tls_client: tls_setup.client.clone(),
        upstream_name: tls_setup.upstream_name.clone(),
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
        mode = "passthrough",
        version = env!("CARGO_PKG_VERSION")
    );
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
    shared.shutdown.store(true, Ordering::Relaxed);
    for w in &workers {
        let _ = w.waker.wake();
    }
    for w in workers {
        let _ = w.thread.join();
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
