//! pgvpd: argv → config → TLS material → listeners → workers → wait for signals.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pgvpd::admin::{self, AdminConfig, AdminSources, PoolSnapshots};
use pgvpd::config::{self, Command, Config, PoolMode};
use pgvpd::reactor::control::Control;
use pgvpd::reactor::{self, Shared, WorkerHandle, WorkerSettings};
use pgvpd::reload::Reloader;
use pgvpd::startup::{load_resolvers, load_tls, resolve_upstream};
use pgvpd::sys::{self, Signal};
use pgvpd::{error, info, log, startup};

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

fn run(cfg: Config, args: Vec<String>) -> ExitCode {
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
    let tenants = startup::tenant_registry(&cfg);
    let auth_key = match startup::auth_key() {
        Ok(k) => k,
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    let session = match startup::session_config(&cfg, &tenants, &auth_key) {
        Ok(s) => s,
        Err(e) => {
            error!("startup_failed", error = e);
            return ExitCode::FAILURE;
        }
    };
    if let Some(e) = &session.resolvers {
        info!(
            "resolvers_loaded",
            count = e.len(),
            variables = e.variables().len()
        );
    }
    let pool_rt = if cfg.pool_mode == PoolMode::None {
        None
    } else {
        match startup::pool_runtime(&cfg) {
            Ok(rt) => Some(Arc::new(rt)),
            Err(e) => {
                error!("startup_failed", error = e);
                return ExitCode::FAILURE;
            }
        }
    };
    let shared = Arc::new(Shared::new(Arc::new(session)));
    // Pool buckets for the admin API, one slot per worker (workers publish into it).
    let pool_snapshots = Arc::new(PoolSnapshots::new(cfg.workers));
    let settings = WorkerSettings {
        upstream: upstream.clone().into(),
        max_client_conn: usize::try_from(cfg.max_client_conn).unwrap_or(usize::MAX),
        shutdown_timeout: cfg.shutdown_timeout,
        tls_server: tls_setup.server.clone(),
        tls_client: tls_setup.client.clone(),
        upstream_name: tls_setup.upstream_name.clone(),
        pool: pool_rt,
        // Published only for an admin API to read.
        snapshots: AdminConfig::from_config(&cfg).map(|_| Arc::clone(&pool_snapshots)),
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
    let reloader = Arc::new(Reloader::new(
        args,
        cfg.clone(),
        shared.clone(),
        tenants,
        auth_key,
        tls_setup.server.clone(),
    ));
    let control = Arc::new(Control::new(
        workers
            .iter()
            .map(|w| (w.commands.clone(), Arc::clone(&w.waker)))
            .collect(),
        shared.clone(),
    ));
    let admin = match AdminConfig::from_config(&cfg) {
        None => None,
        Some(acfg) => {
            let mut sources = AdminSources::new(
                &cfg,
                upstream.clone().into(),
                shared.clone(),
                pool_snapshots,
                started,
            );
            sources.control = Some(control);
            sources.reloader = Some(Arc::clone(&reloader));
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
            Ok(Signal::Hangup) => {
                // Logged (with the reason of a failure) by `reload`.
                let _ = reloader.reload("sighup");
            }
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
        Command::Run(cfg) => run(*cfg, args),
    }
}
