//! pgvpd: argv → config → listener → workers → wait for signals.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pgvpd::config::{self, Command, Config, PoolMode};
use pgvpd::conn::SessionConfig;
use pgvpd::reactor::{self, Shared, WorkerSettings};
use pgvpd::sys::{self, Signal};
use pgvpd::{error, info, log, warn};

/// Settings accepted for pgvpd 1.0 compatibility whose feature is not in this
/// build yet: refusing to start is safer than silently ignoring them.
fn not_yet_supported(c: &Config) -> Option<&'static str> {
    if c.tls_port.is_some() || c.tls_cert.is_some() || c.tls_key.is_some() {
        return Some("tls_port/tls_cert/tls_key (client TLS)");
    }
    if c.upstream_tls != pgvpd::config::UpstreamTls::Disable || c.upstream_tls_ca.is_some() {
        return Some("upstream_tls/upstream_tls_ca");
    }
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

fn run(cfg: Config) -> ExitCode {
    log::set_level(cfg.log_level);
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
    let listener = match TcpListener::bind((cfg.listen_host.as_str(), cfg.port)) {
        Ok(l) => l,
        Err(e) => {
            error!(
                "startup_failed",
                error = format!("cannot listen on {}:{}: {e}", cfg.listen_host, cfg.port)
            );
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
    };
    let workers = match reactor::spawn_workers(cfg.workers, &listener, settings, shared.clone()) {
        Ok(w) => w,
        Err(e) => {
            error!("startup_failed", error = format!("workers: {e}"));
            return ExitCode::FAILURE;
        }
    };
    drop(listener);
    let up: Vec<String> = upstream.iter().map(|a| a.to_string()).collect();
    info!(
        "listening",
        addr = local,
        upstream = up.join(","),
        workers = cfg.workers,
        mode = "passthrough",
        version = env!("CARGO_PKG_VERSION")
    );
    loop {
        match sys::wait_signal() {
            Ok(Signal::Terminate) => break,
            Ok(Signal::Hangup) => warn!(
                "sighup_ignored",
                reason = "reload is not supported by this build yet"
            ),
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
