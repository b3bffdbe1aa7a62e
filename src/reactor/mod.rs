//! The mio event loop: `workers` threads, each with its own `Poll`, slab of
//! connections, deadline heap and buffer pool. The only code (with `sys`)
//! that touches sockets, mio or the clock. See `docs/architecture.md`,
//! section "Reactor".

pub mod control;
pub(crate) mod deadlines;
mod slab;
pub mod token;
pub mod transport;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;

use crate::conn::SessionConfig;

/// State shared by all workers (atomics on the data path; the configuration
/// slot is locked only when its generation changed, i.e. after a reload).
pub struct Shared {
    /// Set on SIGINT/SIGTERM: stop accepting, drain, exit.
    pub shutdown: AtomicBool,
    /// Client connections open across all workers (for `max_client_conn`).
    pub active_clients: AtomicUsize,
    /// The configuration new sessions start with (a reload replaces it; a
    /// session keeps the one it started with).
    session: RwLock<Arc<SessionConfig>>,
    /// Bumped after each replacement of `session`.
    session_gen: AtomicU64,
    /// Admin `POST /pause`: pools lend no server until `POST /resume`.
    pub paused: AtomicBool,
}

impl Shared {
    pub fn new(session: Arc<SessionConfig>) -> Shared {
        Shared {
            shutdown: AtomicBool::new(false),
            active_clients: AtomicUsize::new(0),
            session: RwLock::new(session),
            session_gen: AtomicU64::new(0),
            paused: AtomicBool::new(false),
        }
    }

    /// The configuration for a session starting now.
    pub fn session(&self) -> Arc<SessionConfig> {
        match self.session.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Changes whenever [`Shared::replace_session`] ran (a worker re-reads the
    /// slot only then).
    pub fn session_generation(&self) -> u64 {
        self.session_gen.load(Ordering::Acquire)
    }

    /// A reload: sessions accepted from now on start with `new`.
    pub fn replace_session(&self, new: Arc<SessionConfig>) {
        match self.session.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        self.session_gen.fetch_add(1, Ordering::AcqRel);
    }
}

/// What every worker needs to start.
#[derive(Clone)]
pub struct WorkerSettings {
    pub upstream: Arc<[SocketAddr]>,
    pub max_client_conn: usize,
    pub shutdown_timeout: Duration,
    /// Client-facing TLS configuration; replaced on SIGHUP, read at each TLS start.
    pub tls_server: Option<Arc<RwLock<Arc<rustls::ServerConfig>>>>,
    /// Upstream TLS configuration and the name to verify (`upstream_host`).
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    pub upstream_name: Option<rustls::pki_types::ServerName<'static>>,
    /// `pool_mode = session` (None: passthrough).
    pub pool: Option<Arc<PoolRuntime>>,
    /// Where the worker publishes its pools' counts for the admin API.
    pub snapshots: Option<Arc<crate::admin::PoolSnapshots>>,
}

/// What the worker needs to run pools.
#[derive(Debug)]
pub struct PoolRuntime {
    pub pool_size: u32,
    pub idle_timeout: Duration,
    /// None: servers live until they fail or idle out.
    pub lifetime: Option<Duration>,
    pub reset_query: String,
    pub reset_timeout: Duration,
    pub check_query: Option<String>,
    pub check_delay: Duration,
    pub upstream_password: Option<Vec<u8>>,
    /// Per-role upstream secrets (`upstream_auth_file`).
    pub upstream_secrets: std::collections::HashMap<String, crate::conn::server::UpstreamSecret>,
    pub upstream_tls: crate::conn::UpstreamTlsMode,
    pub limits: crate::protocol::Limits,
    pub login_timeout: Duration,
    /// Proxy-issued cancel keys (shared by all workers).
    pub cancel: Arc<crate::pool::cancel::CancelMap>,
}

/// A running worker thread and the waker that interrupts its poll.
pub struct WorkerHandle {
    pub waker: Arc<Waker>,
    pub thread: JoinHandle<()>,
    /// The worker's command queue ([`control`]).
    pub commands: std::sync::mpsc::SyncSender<control::Envelope>,
}

/// Starts `count` workers, each registering its own clone of `listener`.
pub fn spawn_workers(
    count: usize,
    listener: &std::net::TcpListener,
    tls_listener: Option<&std::net::TcpListener>,
    settings: WorkerSettings,
    shared: Arc<Shared>,
) -> io::Result<Vec<WorkerHandle>> {
    let mut workers = Vec::with_capacity(count);
    for id in 0..count {
        let l = listener.try_clone()?;
        l.set_nonblocking(true)?;
        let tl = match tls_listener {
            Some(t) => {
                let t = t.try_clone()?;
                t.set_nonblocking(true)?;
                Some(mio::net::TcpListener::from_std(t))
            }
            None => None,
        };
        let (tx, rx) = control::channel();
        let (w, waker) = worker::Worker::new(
            id,
            mio::net::TcpListener::from_std(l),
            tl,
            settings.clone(),
            shared.clone(),
            rx,
        )?;
        workers.push((w, waker, tx));
    }
    if settings.pool.is_some() && count > 1 {
        let mesh = Arc::new(worker::Mesh::new(
            workers.iter().map(|(_, w, _)| Arc::clone(w)).collect(),
        ));
        for (w, _, _) in workers.iter_mut() {
            w.set_mesh(Arc::clone(&mesh));
        }
    }
    let mut handles = Vec::with_capacity(count);
    for (id, (worker, waker, commands)) in workers.into_iter().enumerate() {
        let thread = std::thread::Builder::new()
            .name(format!("pgvpd-worker-{id}"))
            .spawn(move || worker.run())?;
        handles.push(WorkerHandle {
            waker,
            thread,
            commands,
        });
    }
    Ok(handles)
}
