//! Live reload (SIGHUP and the admin API's `POST /reload`): read the
//! configuration again from the same command line, environment and file,
//! check it and everything it names, then swap.
//!
//! Order (all or nothing): 1. load and validate the file
//! ([`crate::config::load`]); 2. keep the running value of every key a reload
//! cannot change ([`crate::config::reload::merge`], one warning per such key);
//! 3. build the new session configuration, reading the resolver file and the
//! userlists, and the new certificate ([`crate::startup`]); only then 4. apply:
//! log level, certificate, tenant limits, and the configuration new sessions
//! start with ([`crate::reactor::Shared::replace_session`]). Any error before 4
//! changes nothing and is returned (and logged) with the file, key and line.
//! Sessions already running keep the configuration they started with.
//!
//! One reload runs at a time (the running configuration's mutex).

use std::sync::{Arc, Mutex, RwLock};

use crate::config::reload::{Diff, merge};
use crate::config::{Command, Config, load};
use crate::reactor::Shared;
use crate::tenant::Tenants;
use crate::{info, log, startup, tls, warn};

/// The client-facing TLS configuration slot the workers read at each TLS start.
pub type TlsSlot = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Everything a reload replaces, and how to read the configuration again.
pub struct Reloader {
    args: Vec<String>,
    running: Mutex<Config>,
    shared: Arc<Shared>,
    tenants: Arc<Tenants>,
    /// Made once at start ([`startup::auth_key`]): salts stay the same across reloads.
    auth_key: [u8; 32],
    tls: Option<TlsSlot>,
}

impl Reloader {
    /// `args`: the command line the process started with (without argv[0]);
    /// `running`: the configuration it runs.
    pub fn new(
        args: Vec<String>,
        running: Config,
        shared: Arc<Shared>,
        tenants: Arc<Tenants>,
        auth_key: [u8; 32],
        tls: Option<TlsSlot>,
    ) -> Reloader {
        Reloader {
            args,
            running: Mutex::new(running),
            shared,
            tenants,
            auth_key,
            tls,
        }
    }

    /// Reloads and logs the outcome; `trigger` names who asked ("sighup", "admin").
    pub fn reload(&self, trigger: &str) -> Result<Diff, String> {
        match self.try_reload() {
            Ok(d) => {
                for k in &d.kept {
                    warn!(
                        "reload_key_not_reloadable",
                        key = k,
                        kept = "the running value (restart to change it)"
                    );
                }
                info!(
                    "config_reloaded",
                    trigger = trigger,
                    applied = d.applied.join(","),
                    kept = d.kept.join(",")
                );
                Ok(d)
            }
            Err(e) => {
                warn!(
                    "config_reload_failed",
                    trigger = trigger,
                    error = e,
                    kept = "the running configuration"
                );
                Err(e)
            }
        }
    }

    fn try_reload(&self) -> Result<Diff, String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let read = |p: &std::path::Path| std::fs::read_to_string(p);
        let mut new = match load(&self.args, &|k| std::env::var(k).ok(), &read) {
            Ok(Command::Run(c) | Command::CheckConfig(c)) => *c,
            Ok(_) => return Err("the command line does not run the proxy".into()),
            Err(e) => return Err(e.to_string()),
        };
        // Without a TLS listener set up at start there is no slot to put a
        // certificate in: those keys need a restart.
        let no_tls: &[&str] = if self.tls.is_some() {
            &[]
        } else {
            &["tls_cert", "tls_key"]
        };
        let diff = merge(&running, &mut new, no_tls)?;
        // Build everything before changing anything. The resolver file and
        // the userlists are read again even when no key changed (their
        // contents may have).
        let session = startup::session_config(&new, &self.tenants, &self.auth_key)?;
        let cert = match (&self.tls, &new.tls_cert, &new.tls_key) {
            (Some(_), Some(c), Some(k)) => match tls::load_server_config(c, k) {
                Ok(cfg) => Some((cfg, c.clone())),
                Err(e) => {
                    warn!(
                        "tls_reload_failed",
                        error = e,
                        kept = "the previous certificate"
                    );
                    return Err(e.to_string());
                }
            },
            _ => None,
        };
        log::set_level(new.log_level);
        if let (Some(slot), Some((cert, path))) = (&self.tls, cert) {
            match slot.write() {
                Ok(mut g) => *g = cert,
                Err(p) => *p.into_inner() = cert,
            }
            info!("tls_reloaded", cert = path.display());
        }
        self.tenants
            .set_limits(new.tenant_max_connections, new.tenant_rate_limit);
        self.shared.replace_session(Arc::new(session));
        *running = new;
        Ok(diff)
    }
}
