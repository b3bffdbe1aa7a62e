//! Runner for `harness = false` test targets.
//!
//! `cargo test --test integration -- FILTER…` runs the cases whose name
//! contains any FILTER (all when none). Prints `test NAME ... ok|FAILED`, then
//! exactly `N passed, N failed`; exits 1 if any failed. One cluster serves the
//! whole run and is stopped before exiting, whatever happened. Each case runs
//! on its own thread under `catch_unwind` with a watchdog (120 s, or
//! `PGVPD_CASE_TIMEOUT` seconds).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client::{PsqlOut, psql};
use super::cluster::{Cluster, ClusterOpts};
use super::fixtures;
use super::pki::TestPki;
use super::proxy::{Proxy, kill_leftover_proxies};

/// What every case gets: the shared cluster and helpers.
pub struct Ctx {
    pub cluster: Cluster,
}

impl Ctx {
    /// A new proxy in front of the cluster (`extra`: `key = value` lines).
    pub fn proxy(&self, extra: &str) -> Proxy {
        Proxy::start(&self.cluster, extra)
    }

    /// The cluster's test PKI (panics unless the runner started the cluster
    /// with `ServerTls::TestPki`, as `tests/tls.rs` does).
    pub fn pki(&self) -> &TestPki {
        self.cluster
            .pki
            .as_ref()
            .expect("this suite's cluster has no TestPki (start it with Cluster::start_tls)")
    }

    /// psql through `port` on the suite's database.
    pub fn psql(&self, port: u16, user: &str, password: Option<&str>, sql: &str) -> PsqlOut {
        psql(port, user, password, fixtures::DB, sql)
    }
}

pub type Case = (&'static str, fn(&Ctx));

fn case_timeout() -> Duration {
    std::env::var("PGVPD_CASE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

/// Names of the cases the command line selects (same rule as [`run`]).
pub fn selected_names(cases: &[Case]) -> Vec<&'static str> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    cases
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .map(|(name, _)| *name)
        .collect()
}

/// Runs the selected cases against one cluster (with fixtures loaded) and exits.
pub fn run(cases: &[Case]) -> ! {
    run_with(cases, || Cluster::start(ClusterOpts::default()))
}

/// [`run`] with the cluster made by `start` (e.g. `Cluster::start_tls`).
pub fn run_with(cases: &[Case], start: impl FnOnce() -> Cluster) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in cases {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    // Flags cargo/libtest would understand (--nocapture, --test-threads=1, -q…) are ignored.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    if selected.is_empty() {
        println!("0 passed, 0 failed");
        std::process::exit(0);
    }

    // A panic here (no PostgreSQL, bad fixtures) is a loud failure; the
    // cluster is dropped (stopped, dir removed) while unwinding.
    let cluster = start();
    fixtures::load(&cluster);
    let ctx = Arc::new(Ctx { cluster });

    let limit = case_timeout();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut failures = Vec::new();
    for &&(name, f) in &selected {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        let c = Arc::clone(&ctx);
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let r = catch_unwind(AssertUnwindSafe(|| f(&c)));
                let _ = tx.send(r.is_ok());
            });
        let ok = match spawned {
            Err(e) => {
                eprintln!("cannot spawn thread for {name}: {e}");
                false
            }
            Ok(_) => match rx.recv_timeout(limit) {
                Ok(ok) => ok,
                Err(_) => {
                    eprintln!("{name}: no result after {limit:?} (watchdog): killing its proxies");
                    kill_leftover_proxies();
                    false
                }
            },
        };
        if ok {
            passed += 1;
            println!("test {name} ... ok");
        } else {
            failed += 1;
            failures.push(name);
            println!("test {name} ... FAILED");
            eprintln!("    ({name} ran {:.1} s)", started.elapsed().as_secs_f64());
        }
    }

    kill_leftover_proxies();
    if !failures.is_empty() {
        eprintln!("\nfailures:");
        for f in &failures {
            eprintln!("    {f}");
        }
        eprintln!("--- postgres.log (tail) ---\n{}", ctx.cluster.log_tail(20));
    }
    // Stop through the shared reference: a hung case thread may still hold an Arc.
    ctx.cluster.stop();
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
