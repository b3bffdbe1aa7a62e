//! `make bench`: pgvpd (passthrough) next to direct PostgreSQL and PgBouncer
//! (session mode), in one run, on one throw-away cluster.
//!
//! - pgbench `-S` (select-only) and a tenant-RLS script, `-M simple` and
//!   `-M prepared`, at `-c 1/16/64`, each against direct, PgBouncer and pgvpd
//!   back to back with the same `-T` (`PGVPD_BENCH_SECONDS`, default 5);
//!   plus `-C -S -M simple -c 16` (a new connection per transaction).
//! - Each proxy's CPU time during a run (utime + stime from /proc/PID/stat):
//!   CPU share (of one core) and µs of proxy CPU per transaction.
//! - TLS: pgbench `-S` (`-c 1/16`) and `-S -C` through pgvpd with TLS on
//!   both links (client `sslmode=verify-full`, `upstream_tls = verify-full`)
//!   next to direct PostgreSQL over TLS (`sslmode=verify-full`), on the same
//!   cluster (`ssl = on`, a test CA made at run time).
//! - Session pooling: pgbench `-S -c 64` and `-S -C -c 16` through pgvpd
//!   `pool_mode = session` next to PgBouncer session mode and direct, both
//!   poolers authenticating clients with SCRAM-SHA-256 and pool size 64.
//! - Proxy RSS with 1,000 idle authenticated clients (kB per client).
//!
//! Prints a Markdown table and writes it to `target/bench-results.md`.
//! Exits non-zero when a pgbench run failed (exit code or failed transactions)
//! or a sanity check did not hold. Machines are shared and noisy: compare the
//! ratios of one run, not absolute figures across runs.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, ClusterOpts, Proxy, RawConn, ServerTls, fixtures, psql, psql_tls, run_tool};

/// The trust-authenticated role of the cluster's pg_hba (tests/common/cluster.rs),
/// NOSUPERUSER NOBYPASSRLS (tests/fixtures.sql): auth cost does not dominate.
const ROLE: &str = "trust_user";
/// Tenant every session works as.
const TENANT: &str = "t1";
const TENANTS: u32 = 10;
/// pgbench -i -s 10: 1,000,000 accounts, copied into bench_accounts as 10 tenants.
const SCALE: u32 = 10;
const ROWS_PER_TENANT: u32 = SCALE * 100_000 / TENANTS;
const DB: &str = "postgres";
const IDLE_CLIENTS: usize = 1000;

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("bench: bench");
        return;
    }
    let secs: u32 = std::env::var("PGVPD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(5);
    let failed = match std::panic::catch_unwind(|| run(secs)) {
        Ok(failed) => failed,
        Err(_) => {
            eprintln!("bench: aborted (see the panic above)");
            1
        }
    };
    println!(
        "\nbench took {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if failed > 0 {
            format!(": {failed} FAILED check(s)")
        } else {
            String::new()
        }
    );
    std::process::exit(if failed > 0 { 1 } else { 0 });
}

/// Everything; the cluster and proxies are stopped when they go out of
/// scope (also while unwinding). Returns the number of failures.
fn run(secs: u32) -> usize {
    if let Err(e) = pgvpd::sys::raise_nofile_limit() {
        eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
    }
    let load_start = loadavg();
    let pgbouncer_bin = ensure_pgbouncer();
    let pgvpd_bin = common::proxy_binary();
    assert!(
        pgvpd_bin.components().any(|c| c.as_os_str() == "release"),
        "the bench needs the release proxy, got {} (run `make bench`, which builds with --release)",
        pgvpd_bin.display()
    );

    println!("== cluster (max_connections = 1300, ssl = on) and fixtures");
    let cluster = Cluster::start_tls(
        ClusterOpts {
            max_connections: 1300,
            extra_conf: vec![
                "shared_buffers = 256MB".into(),
                "log_min_messages = warning".into(),
            ],
        },
        ServerTls::TestPki,
    );
    fixtures::load(&cluster);
    setup_data(&cluster);
    let script_dir = cluster.subdir("bench");
    let script = script_dir.join("tenant_rls.sql");
    fs::write(
        &script,
        format!(
            "\\set aid random(1, {ROWS_PER_TENANT})\n\
             SELECT abalance FROM bench_accounts WHERE aid = :aid;\n"
        ),
    )
    .expect("write tenant script");

    println!("== pgbouncer {} (session mode)", pgbouncer_bin.display());
    let bouncer = PgBouncer::start(&pgbouncer_bin, &cluster, 100);
    println!("== pgvpd {}", pgvpd_bin.display());
    let proxy = Proxy::start(&cluster, "log_level = warn\nmax_client_conn = 5000");

    let tenant_user = format!("{ROLE}.{TENANT}");
    let targets = three_targets(&cluster, &bouncer, &proxy, &tenant_user, "pgvpd", None);

    let mut failures = sanity_checks(&targets, proxy.port);

    let mut rows: Vec<Row> = Vec::new();
    let script_s = script.to_str().expect("utf-8 path").to_string();
    let mut specs: Vec<Spec> = Vec::new();
    for (workload, wargs) in [
        ("select-only `-S`", vec!["-S".to_string()]),
        (
            "tenant RLS script",
            vec!["-f".to_string(), script_s.clone()],
        ),
    ] {
        for mode in ["simple", "prepared"] {
            for clients in [1u32, 16, 64] {
                specs.push(Spec {
                    workload,
                    mode,
                    clients,
                    connect_each: false,
                    extra: wargs.clone(),
                });
            }
        }
    }
    specs.push(Spec {
        workload: "select-only `-S`, `-C`",
        mode: "simple",
        clients: 16,
        connect_each: true,
        extra: vec!["-S".to_string()],
    });

    println!("== pgbench: {} rows x 3 targets, -T {secs}", specs.len());
    for (i, spec) in specs.iter().enumerate() {
        // Direct first, then the two proxies in alternating order, so drift on
        // a busy machine does not always land on the same proxy.
        let order: [usize; 3] = if i % 2 == 0 { [0, 1, 2] } else { [0, 2, 1] };
        let mut slots: Vec<Option<_>> = (0..targets.len()).map(|_| None).collect();
        for &k in &order {
            let t = &targets[k];
            let r = run_pgbench(t, spec, secs);
            println!(
                "   {:<24} {:<8} -c {:<2} {:<9} {}",
                spec.workload,
                spec.mode,
                spec.clients,
                t.name,
                r.summary()
            );
            if let Some(e) = &r.error {
                failures += 1;
                eprintln!("      FAILED: {e}");
            }
            slots[k] = Some(r);
        }
        let results: Vec<_> = slots.into_iter().flatten().collect();
        rows.push(Row {
            spec: spec.clone(),
            results,
        });
    }
    drop(proxy);
    drop(bouncer);

    let (tls_rows, tls_failures) = run_tls(&cluster, &tenant_user, secs);
    failures += tls_failures;
    let (pool_rows, pool_failures) = run_pool(&cluster, &pgbouncer_bin, &tenant_user, secs);
    failures += pool_failures;
    let (txn_rows, txn_failures) = run_txn(&cluster, &pgbouncer_bin, &tenant_user, secs);
    failures += txn_failures;

    println!("== idle memory: {IDLE_CLIENTS} authenticated idle clients (fresh proxies)");
    // Each measurement on a fresh process, so memory freed by the pgbench
    // runs and kept by the allocator does not hide the growth.
    let mut mems: Vec<(String, Result<Mem, String>)> = Vec::new();
    for query_first in [false, true] {
        let p = Proxy::start(&cluster, "log_level = warn\nmax_client_conn = 5000");
        let what = if query_first {
            "pgvpd, after one `SELECT 1` each"
        } else {
            "pgvpd, idle after login"
        };
        let m = idle_rss(p.pid(), p.port, &tenant_user, IDLE_CLIENTS, query_first);
        mems.push((what.into(), m));
    }
    for query_first in [false, true] {
        // Pool as large as the client count, so each client that ran a query
        // keeps its own server connection, as every pgvpd client does.
        let b = PgBouncer::start(&pgbouncer_bin, &cluster, IDLE_CLIENTS as u32);
        let what = if query_first {
            "pgbouncer, after one `SELECT 1` each (each holds a server connection)"
        } else {
            "pgbouncer, idle after login (no server connection held yet)"
        };
        let m = idle_rss(b.pid(), b.port, ROLE, IDLE_CLIENTS, query_first);
        mems.push((what.into(), m));
    }
    for (name, m) in &mems {
        if let Err(e) = m {
            failures += 1;
            eprintln!("   {name}: idle memory FAILED: {e}");
        }
    }

    let facts = machine_facts(&cluster, &pgbouncer_bin, &pgvpd_bin, secs, &load_start);
    let report = render(&rows, &tls_rows, &pool_rows, &txn_rows, &mems, &facts);
    println!("\n{report}");
    let out = common::repo_root().join("target/bench-results.md");
    match fs::write(&out, &report) {
        Ok(()) => println!("(written to {})", out.display()),
        Err(e) => eprintln!("warning: cannot write {}: {e}", out.display()),
    }
    failures
}

/// The TLS section: a pgvpd with TLS on both links next to direct
/// PostgreSQL over TLS, clients verifying the server (`verify-full`).
/// Returns the rows and the number of failures.
fn run_tls(cluster: &Cluster, tenant_user: &str, secs: u32) -> (Vec<Row>, usize) {
    let pki = cluster
        .pki
        .as_ref()
        .expect("start_tls generated a test PKI");
    let ca = pki.ca.cert.clone();
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    println!("== TLS: pgvpd (client TLS + upstream_tls = verify-full) vs direct TLS");
    let proxy = Proxy::start(
        cluster,
        &format!(
            "log_level = warn\nmax_client_conn = 5000\ntls_cert = {}\ntls_key = {}\n\
             upstream_tls = verify-full\nupstream_tls_ca = {}\nupstream_host = localhost\n",
            path(&pki.server.cert),
            path(&pki.server.key),
            path(&ca)
        ),
    );
    let targets = [
        Target {
            name: "direct TLS",
            port: cluster.port,
            user: ROLE.to_string(),
            pid: None,
            tls: Some(ca.clone()),
            password: None,
        },
        Target {
            name: "pgvpd TLS",
            port: proxy.port,
            user: tenant_user.to_string(),
            pid: Some(proxy.pid()),
            tls: Some(ca.clone()),
            password: None,
        },
    ];
    // Both links really are TLS: libpq's verify-full fails rather than fall
    // back, and the backend's own pg_stat_ssl row says ssl = t.
    let mut failures = 0;
    let sql = "SELECT current_user, current_setting('app.current_tenant_id'), \
               (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), \
               count(*) FROM bench_accounts";
    let want = format!("{ROLE}|{TENANT}|t|{ROWS_PER_TENANT}");
    for t in &targets {
        let out = psql_tls(t.port, &t.user, None, DB, sql, "verify-full", Some(&ca), "");
        if out.out() != want {
            failures += 1;
            eprintln!(
                "TLS sanity check FAILED via {}: want {want}, got {:?} {}",
                t.name,
                out.out(),
                out.stderr.trim()
            );
        }
    }
    if failures == 0 {
        println!("   sanity: both targets verify-full TLS, backend ssl = t, RLS applies");
    }
    let mut rows = Vec::new();
    for (clients, connect_each) in [(1u32, false), (16, false), (16, true)] {
        let spec = Spec {
            workload: if connect_each {
                "TLS select-only `-S`, `-C`"
            } else {
                "TLS select-only `-S`"
            },
            mode: "simple",
            clients,
            connect_each,
            extra: vec!["-S".to_string()],
        };
        rows.push(run_row(&targets, spec, secs, &mut failures));
    }
    (rows, failures)
}

/// The password both poolers authenticate bench clients with (SCRAM).
const POOL_PASSWORD: &str = "bench-pool-pw";
const POOL_SIZE: u32 = 64;

/// Session pooling: pgvpd `pool_mode = session` next to PgBouncer session
/// mode and direct. Returns the rows and the number of failures.
fn run_pool(
    cluster: &Cluster,
    pgbouncer_bin: &Path,
    tenant_user: &str,
    secs: u32,
) -> (Vec<Row>, usize) {
    println!("== session pooling: pgvpd vs pgbouncer (SCRAM clients, pool size {POOL_SIZE})");
    let bouncer = PgBouncer::start_auth(pgbouncer_bin, cluster, POOL_SIZE, Some(POOL_PASSWORD));
    let proxy = Proxy::start(
        cluster,
        &format!(
            "log_level = warn\nmax_client_conn = 5000\npool_mode = session\n\
             pool_size = {POOL_SIZE}\npool_password = {POOL_PASSWORD}\n\
             upstream_password = unused-trust\npool_checkout_timeout = 60\n"
        ),
    );
    let targets = three_targets(
        cluster,
        &bouncer,
        &proxy,
        tenant_user,
        "pgvpd pool",
        Some(POOL_PASSWORD),
    );
    let mut failures = 0;
    let sql = "SELECT current_setting('app.current_tenant_id'), count(*) FROM bench_accounts";
    let out = psql(proxy.port, tenant_user, Some(POOL_PASSWORD), DB, sql);
    let want = format!("{TENANT}|{ROWS_PER_TENANT}");
    if out.out() != want {
        failures += 1;
        eprintln!(
            "pool sanity check FAILED: want {want}, got {:?} {}",
            out.out(),
            out.stderr.trim()
        );
    } else {
        println!("   sanity: the pooled session sees its tenant's {ROWS_PER_TENANT} rows");
    }
    let mut rows = Vec::new();
    for (clients, connect_each, mode) in [
        (64u32, false, "simple"),
        (64, false, "prepared"),
        (16, true, "simple"),
    ] {
        let spec = Spec {
            workload: if connect_each {
                "pool select-only `-S`, `-C`"
            } else {
                "pool select-only `-S`"
            },
            mode,
            clients,
            connect_each,
            extra: vec!["-S".to_string()],
        };
        rows.push(run_row(&targets, spec, secs, &mut failures));
    }
    drop(proxy);
    drop(bouncer);
    (rows, failures)
}

/// Direct (trust), PgBouncer and pgvpd (`name`), the two proxies with
/// `password` (the pooling rows: SCRAM clients with the pool password;
/// passthrough: None, trust through to PostgreSQL).
fn three_targets(
    cluster: &Cluster,
    bouncer: &PgBouncer,
    proxy: &Proxy,
    tenant_user: &str,
    name: &'static str,
    password: Option<&'static str>,
) -> [Target; 3] {
    [
        Target {
            name: "direct",
            port: cluster.port,
            user: ROLE.to_string(),
            pid: None,
            tls: None,
            password: None,
        },
        Target {
            name: "pgbouncer",
            port: bouncer.port,
            user: ROLE.to_string(),
            pid: Some(bouncer.pid()),
            tls: None,
            password,
        },
        Target {
            name,
            port: proxy.port,
            user: tenant_user.to_string(),
            pid: Some(proxy.pid()),
            tls: None,
            password,
        },
    ]
}

/// A result PgBouncer cannot produce (shown as n/a).
const UNSUPPORTED: &str = "n/a: PgBouncer < 1.21 has no prepared statements in transaction mode";

/// Transaction pooling: pgvpd `pool_mode = transaction` next to PgBouncer
/// transaction mode and direct, with a pool smaller than the client count
/// (the context step runs almost every transaction) and one as large (it is
/// skipped). Returns the rows and the number of failures.
fn run_txn(
    cluster: &Cluster,
    pgbouncer_bin: &Path,
    tenant_user: &str,
    secs: u32,
) -> (Vec<Row>, usize) {
    let mut rows = Vec::new();
    let mut failures = 0;
    for (pool, workload) in [
        (16u32, "txn select-only `-S`, pool 16"),
        (64, "txn select-only `-S`, pool 64"),
    ] {
        println!("== transaction pooling: pgvpd vs pgbouncer (pool size {pool}, 64 clients)");
        let bouncer = PgBouncer::start_mode(
            pgbouncer_bin,
            cluster,
            pool,
            Some(POOL_PASSWORD),
            "transaction",
        );
        let proxy = Proxy::start(
            cluster,
            &format!(
                "log_level = warn\nmax_client_conn = 5000\npool_mode = transaction\n\
                 pool_size = {pool}\npool_password = {POOL_PASSWORD}\n\
                 upstream_password = unused-trust\npool_checkout_timeout = 60\n"
            ),
        );
        let sql = "SELECT current_setting('app.current_tenant_id'), count(*) FROM bench_accounts";
        let out = psql(proxy.port, tenant_user, Some(POOL_PASSWORD), DB, sql);
        let want = format!("{TENANT}|{ROWS_PER_TENANT}");
        if out.out() != want {
            failures += 1;
            eprintln!(
                "transaction-mode sanity check FAILED: want {want}, got {:?} {}",
                out.out(),
                out.stderr.trim()
            );
        }
        let targets = three_targets(
            cluster,
            &bouncer,
            &proxy,
            tenant_user,
            "pgvpd txn",
            Some(POOL_PASSWORD),
        );
        for mode in ["simple", "extended", "prepared"] {
            let spec = Spec {
                workload,
                mode,
                clients: 64,
                connect_each: false,
                extra: vec!["-S".to_string()],
            };
            if mode == "prepared" {
                // PgBouncer before 1.21 has no prepared statements in
                // transaction mode (pgbench fails with "P_0 already
                // exists"): not run, shown as n/a, not a failure.
                let [direct, _, pgvpd] = &targets;
                let mut row = run_row(&[direct.clone(), pgvpd.clone()], spec, secs, &mut failures);
                row.results.insert(
                    1,
                    RunResult {
                        tps: 0.0,
                        tx: 0,
                        wall: 0.0,
                        cpu: None,
                        error: Some(UNSUPPORTED.to_string()),
                    },
                );
                rows.push(row);
                continue;
            }
            rows.push(run_row(&targets, spec, secs, &mut failures));
        }
        drop(proxy);
        drop(bouncer);
    }
    (rows, failures)
}

/// One spec against each target in turn, printed as it goes; a failed run
/// counts in `failures`.
fn run_row(targets: &[Target], spec: Spec, secs: u32, failures: &mut usize) -> Row {
    let mut results = Vec::new();
    for t in targets {
        let r = run_pgbench(t, &spec, secs);
        println!(
            "   {:<28} {:<8} -c {:<2} {:<10} {}",
            spec.workload,
            spec.mode,
            spec.clients,
            t.name,
            r.summary()
        );
        if let Some(e) = &r.error {
            *failures += 1;
            eprintln!("      FAILED: {e}");
        }
        results.push(r);
    }
    Row { spec, results }
}

// ---------------------------------------------------------------------------
// Data

fn setup_data(cluster: &Cluster) {
    println!("== pgbench -i -s {SCALE} and bench_accounts ({TENANTS} tenants)");
    let port = cluster.port.to_string();
    let host = cluster.dir.to_str().expect("utf-8 dir").to_string();
    let env = [
        ("PGHOST", host.as_str()),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGDATABASE", DB),
    ];
    let out = run_tool(
        "pgbench",
        &["-i", "-q", "-s", &SCALE.to_string()],
        &env,
        Duration::from_secs(600),
    );
    assert!(out.success(), "pgbench -i failed: {out:#?}");
    // Role default for direct and PgBouncer sessions: PgBouncer 1.18 does not
    // forward the `options` startup parameter (PGOPTIONS), and a role setting
    // survives its DISCARD ALL between clients. pgvpd sets the same variable
    // itself from the user name (checked in sanity_checks with another tenant).
    cluster.sql(&format!(
        "ALTER ROLE {ROLE} SET app.current_tenant_id = '{TENANT}';
         GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers,
             pgbench_history TO {ROLE};
         DROP TABLE IF EXISTS bench_accounts;
         CREATE TABLE bench_accounts (
             aid       int PRIMARY KEY,
             tenant_id text NOT NULL,
             abalance  int NOT NULL
         );
         INSERT INTO bench_accounts
             SELECT aid, 't' || ((aid - 1) / {ROWS_PER_TENANT} + 1), abalance
             FROM pgbench_accounts;
         SELECT pgvpd_protect('bench_accounts');
         GRANT SELECT ON bench_accounts TO {ROLE};"
    ));
    cluster.sql("VACUUM ANALYZE bench_accounts");
    let attrs = cluster.sql(&format!(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = '{ROLE}'"
    ));
    assert_eq!(attrs, "f|f", "{ROLE} must be NOSUPERUSER NOBYPASSRLS");
    let rls = cluster.sql(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'bench_accounts'",
    );
    assert_eq!(rls, "t|t", "bench_accounts must have (FORCE) RLS");
}

/// Every target sees exactly its tenant's rows; pgvpd sets the context from
/// the user name (a different tenant proves it is not the role default).
fn sanity_checks(targets: &[Target], pgvpd_port: u16) -> usize {
    let mut failures = 0;
    let sql = "SELECT current_user, current_setting('app.current_tenant_id'), \
               count(*), min(aid), max(aid) FROM bench_accounts";
    let t1_lo = 1;
    let t1_hi = ROWS_PER_TENANT;
    for t in targets {
        let out = psql(t.port, &t.user, None, DB, sql);
        let want = format!("{ROLE}|{TENANT}|{ROWS_PER_TENANT}|{t1_lo}|{t1_hi}");
        if out.out() != want {
            failures += 1;
            eprintln!(
                "sanity check FAILED via {}: want {want}, got {:?} {}",
                t.name,
                out.out(),
                out.stderr.trim()
            );
        }
    }
    let out = psql(pgvpd_port, &format!("{ROLE}.t2"), None, DB, sql);
    let want = format!(
        "{ROLE}|t2|{ROWS_PER_TENANT}|{}|{}",
        ROWS_PER_TENANT + 1,
        2 * ROWS_PER_TENANT
    );
    if out.out() != want {
        failures += 1;
        eprintln!(
            "sanity check FAILED via pgvpd as t2: want {want}, got {:?} {}",
            out.out(),
            out.stderr.trim()
        );
    }
    if failures == 0 {
        println!(
            "   sanity: each target sees {ROWS_PER_TENANT} of {} rows (RLS applies)",
            ROWS_PER_TENANT * TENANTS
        );
    }
    failures
}

// ---------------------------------------------------------------------------
// pgbench runs

#[derive(Clone)]
struct Target {
    name: &'static str,
    port: u16,
    user: String,
    /// The proxy process whose CPU time is measured (None: direct).
    pid: Option<u32>,
    /// TLS with `sslmode=verify-full` against this CA (None: `sslmode=disable`).
    tls: Option<PathBuf>,
    /// PGPASSWORD (the poolers' own client authentication).
    password: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct Spec {
    workload: &'static str,
    mode: &'static str,
    clients: u32,
    connect_each: bool,
    extra: Vec<String>,
}

struct RunResult {
    tps: f64,
    tx: u64,
    wall: f64,
    /// Proxy CPU seconds during the run.
    cpu: Option<f64>,
    error: Option<String>,
}

impl RunResult {
    fn ok(&self) -> bool {
        self.error.is_none()
    }
    fn cpu_share(&self) -> Option<f64> {
        self.cpu.map(|c| c / self.wall)
    }
    fn us_per_tx(&self) -> Option<f64> {
        self.cpu
            .filter(|_| self.tx > 0)
            .map(|c| c * 1e6 / self.tx as f64)
    }
    fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("FAILED ({})", e.lines().next().unwrap_or(""));
        }
        let mut s = format!("{:>9.0} tps {:>8} tx", self.tps, self.tx);
        if let (Some(sh), Some(us)) = (self.cpu_share(), self.us_per_tx()) {
            let _ = write!(s, "  proxy CPU {:>3.0}% {:>5.1} µs/tx", sh * 100.0, us);
        }
        s
    }
}

struct Row {
    spec: Spec,
    results: Vec<RunResult>,
}

fn run_pgbench(t: &Target, spec: &Spec, secs: u32) -> RunResult {
    let clients = spec.clients.to_string();
    let threads = spec.clients.min(2).to_string();
    let secs_s = secs.to_string();
    let mut args: Vec<&str> = vec![
        "-n", "-T", &secs_s, "-c", &clients, "-j", &threads, "-M", spec.mode,
    ];
    if spec.connect_each {
        args.push("-C");
    }
    args.extend(spec.extra.iter().map(String::as_str));
    let port = t.port.to_string();
    let ca = t.tls.as_ref().map(|ca| ca.to_str().expect("utf-8 path"));
    let mut env = vec![
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", t.user.as_str()),
        ("PGDATABASE", DB),
        (
            "PGSSLMODE",
            if ca.is_some() {
                "verify-full"
            } else {
                "disable"
            },
        ),
        ("PGGSSENCMODE", "disable"),
        ("PGCONNECT_TIMEOUT", "10"),
    ];
    if let Some(ca) = ca {
        env.push(("PGSSLROOTCERT", ca));
    }
    if let Some(pw) = t.password {
        env.push(("PGPASSWORD", pw));
    }
    let cpu0 = t.pid.map(cpu_seconds);
    let t0 = Instant::now();
    let out = run_tool(
        "pgbench",
        &args,
        &env,
        Duration::from_secs(u64::from(secs) + 120),
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (t.pid, cpu0) {
        (Some(pid), Some(c0)) => Some(cpu_seconds(pid) - c0),
        _ => None,
    };
    let field = |prefix: &str| -> Option<String> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
    };
    let tps = field("tps = ").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    let tx = field("number of transactions actually processed: ")
        .and_then(|v| v.split('/').next()?.trim().parse::<u64>().ok());
    let failed_tx = field("number of failed transactions: ")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let error = if !out.success() {
        Some(format!(
            "pgbench exit {}{}: {}",
            out.status,
            if out.timed_out { " (timed out)" } else { "" },
            out.stderr.trim()
        ))
    } else if failed_tx > 0 {
        Some(format!("{failed_tx} failed transactions"))
    } else if tps.is_none() || tx.is_none() {
        Some(format!("cannot parse pgbench output:\n{}", out.stdout))
    } else {
        None
    };
    RunResult {
        tps: tps.unwrap_or(0.0),
        tx: tx.unwrap_or(0),
        wall,
        cpu,
        error,
    }
}

/// utime + stime of `pid` in seconds, from /proc/PID/stat (NaN if unreadable).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(end) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / common::clock_ticks() as f64
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// Idle memory

struct Mem {
    before_kb: u64,
    after_kb: u64,
    clients: usize,
}

impl Mem {
    fn per_client_kb(&self) -> f64 {
        (self.after_kb as f64 - self.before_kb as f64) / self.clients as f64
    }
}

/// Opens `n` trust-authenticated clients to `port` as `user`, all held idle
/// by this thread; VmRSS of `pid` before and after (1 s settle).
/// Clients are opened one after the other (1,000 sockets on one thread).
/// With `query_first`, each client runs `SELECT 1` once after login.
fn idle_rss(pid: u32, port: u16, user: &str, n: usize, query_first: bool) -> Result<Mem, String> {
    std::thread::sleep(Duration::from_millis(300));
    let before_kb = vm_rss_kb(pid).ok_or("cannot read VmRSS")?;
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = RawConn::try_connect(port).map_err(|e| format!("client {i}: connect: {e}"))?;
        c.startup(Some(user), DB, &[]);
        c.auth_trust_or_cleartext(None)
            .map_err(|e| format!("client {i}: login: {e:?}"))?;
        if query_first {
            c.simple_query("SELECT 1")
                .map_err(|e| format!("client {i}: SELECT 1: {e:?}"))?;
        }
        conns.push(c);
    }
    let opened = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after_kb = vm_rss_kb(pid).ok_or("cannot read VmRSS")?;
    // Every session still works after idling.
    for (i, c) in conns.iter_mut().enumerate().step_by(97) {
        c.simple_query("SELECT 1")
            .map_err(|e| format!("client {i}: SELECT 1 after idling: {e:?}"))?;
    }
    let m = Mem {
        before_kb,
        after_kb,
        clients: n,
    };
    println!(
        "   port {port}: {n} clients logged in in {:.1} s; VmRSS {} kB -> {} kB = {:.1} kB/client",
        opened.as_secs_f64(),
        before_kb,
        after_kb,
        m.per_client_kb()
    );
    drop(conns);
    Ok(m)
}

// ---------------------------------------------------------------------------
// PgBouncer

/// `pgbouncer` on PATH or in /usr/sbin; installs the Debian package if missing.
fn ensure_pgbouncer() -> PathBuf {
    fn find() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.push("/usr/sbin".into());
        dirs.into_iter()
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.is_file())
    }
    if let Some(p) = find() {
        return p;
    }
    println!("== pgbouncer not found: apt-get install -y pgbouncer");
    let apt = |args: &[&str]| {
        println!("   $ apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !apt(&["install", "-y", "pgbouncer"]) {
        println!("   install failed: apt-get update, then retry");
        assert!(apt(&["update"]), "apt-get update failed");
        assert!(
            apt(&["install", "-y", "pgbouncer"]),
            "apt-get install -y pgbouncer failed: the bench needs PgBouncer"
        );
    }
    // The package starts a system service on port 6432; we run our own.
    let _ = Command::new("systemctl")
        .args(["stop", "pgbouncer"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    find().expect("pgbouncer installed but not found on PATH or in /usr/sbin")
}

struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PgBouncer {
    fn start(bin: &Path, cluster: &Cluster, pool_size: u32) -> PgBouncer {
        Self::start_auth(bin, cluster, pool_size, None)
    }

    /// `scram`: clients authenticate with SCRAM-SHA-256 with this password
    /// (the server side stays trust).
    fn start_auth(bin: &Path, cluster: &Cluster, pool_size: u32, scram: Option<&str>) -> PgBouncer {
        Self::start_mode(bin, cluster, pool_size, scram, "session")
    }

    fn start_mode(
        bin: &Path,
        cluster: &Cluster,
        pool_size: u32,
        scram: Option<&str>,
        pool_mode: &str,
    ) -> PgBouncer {
        let dir = cluster.subdir("pgbouncer");
        let ids = common::is_root().then(common::postgres_ids);
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown pgbouncer dir");
        }
        let port = common::free_port();
        let ini = format!(
            "[databases]\n\
             {DB} = host=127.0.0.1 port={} dbname={DB}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = {auth}\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = {pool_mode}\n\
             max_client_conn = 2000\n\
             default_pool_size = {pool_size}\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             log_pooler_errors = 1\n",
            cluster.port,
            dir = dir.display(),
            auth = if scram.is_some() {
                "scram-sha-256"
            } else {
                "trust"
            },
        );
        fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
        // trust still needs the user names in auth_file.
        let pw = scram.unwrap_or("");
        fs::write(
            dir.join("userlist.txt"),
            format!("\"{ROLE}\" \"{pw}\"\n\"postgres\" \"\"\n"),
        )
        .expect("write userlist.txt");
        let mut cmd = Command::new(bin);
        cmd.arg(dir.join("pgbouncer.ini"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root.
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut b = PgBouncer {
            port,
            dir,
            child: Some(child),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(st))) = b.child.as_mut().map(Child::try_wait) {
                b.child = None;
                panic!(
                    "pgbouncer exited during start-up ({st})\n--- log ---\n{}",
                    common::tail(&b.dir.join("pgbouncer.log"), 30)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on {addr} within 10 s\n--- log ---\n{}",
                common::tail(&b.dir.join("pgbouncer.log"), 30)
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn pid(&self) -> u32 {
        let own = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("pgbouncer running");
        // The pidfile names the same process (it runs in the foreground).
        if let Ok(p) = fs::read_to_string(self.dir.join("pgbouncer.pid"))
            && let Ok(p) = p.trim().parse::<u32>()
        {
            assert_eq!(p, own, "pgbouncer pidfile and child pid differ");
        }
        own
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PgBouncer's "safe shutdown" (waits for clients);
        // SIGTERM is immediate, which is what a benchmark teardown wants.
        common::send_signal(child.id(), libc::SIGTERM);
        if common::wait_bounded(&mut child, Duration::from_secs(5)).is_none() {
            eprintln!("pgbouncer (pid {}) ignored SIGTERM: SIGKILL", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Report

fn machine_facts(
    cluster: &Cluster,
    pgbouncer: &Path,
    pgvpd: &Path,
    secs: u32,
    load_start: &str,
) -> Vec<String> {
    let cmd_out = |prog: &str, args: &[&str]| -> String {
        Command::new(prog)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let size = fs::metadata(pgvpd).map(|m| m.len()).unwrap_or(0);
    vec![
        format!("date: {} UTC", cmd_out("date", &["-u", "+%Y-%m-%d %H:%M"])),
        format!(
            "machine: {nproc} CPUs ({cpu}); load average at start {load_start}, at end {}",
            loadavg()
        ),
        format!(
            "PostgreSQL: {}",
            cluster
                .sql("SELECT version()")
                .split(" on ")
                .next()
                .unwrap_or("")
        ),
        format!(
            "pgbench: {}",
            cmd_out(
                common::pg_tool("pgbench").to_str().unwrap_or("pgbench"),
                &["--version"]
            )
        ),
        format!(
            "PgBouncer: {} (pool_mode = session, default_pool_size = 100 for pgbench, \
             {IDLE_CLIENTS} for the memory test, auth_type = trust)",
            cmd_out(pgbouncer.to_str().unwrap_or("pgbouncer"), &["--version"])
        ),
        format!(
            "pgvpd: release binary {} bytes ({:.2} MB), workers = 1, passthrough (pool_mode = none), log_level = warn",
            size,
            size as f64 / 1_048_576.0
        ),
        format!(
            "runs: pgbench -n -T {secs} -j min(2, c), TCP 127.0.0.1, role {ROLE} (trust), \
             scale {SCALE}; tenant script: {ROWS_PER_TENANT} of {} rows visible per tenant",
            ROWS_PER_TENANT * TENANTS
        ),
    ]
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn render(
    rows: &[Row],
    tls_rows: &[Row],
    pool_rows: &[Row],
    txn_rows: &[Row],
    mems: &[(String, Result<Mem, String>)],
    facts: &[String],
) -> String {
    let mut s = String::new();
    three_way_table(&mut s, rows);
    let _ = writeln!(
        s,
        "\nSession pooling (`pool_mode = session` against PgBouncer `pool_mode = session`, both \
         with pool size 64 and SCRAM-SHA-256 client authentication; direct uses trust):\n"
    );
    three_way_table(&mut s, pool_rows);
    let _ = writeln!(
        s,
        "\nTransaction pooling (`pool_mode = transaction` against PgBouncer \
         `pool_mode = transaction`, SCRAM-SHA-256 clients, 64 clients). With pool size 16 the \
         servers rotate between clients, so pgvpd applies the tenant context in front of almost \
         every transaction; with pool size 64 each client gets its own server back and the step \
         is skipped. PgBouncer sets no context at all:\n"
    );
    three_way_table(&mut s, txn_rows);
    tls_and_rest(&mut s, rows, tls_rows, mems, facts);
    s
}

/// Rows with results [direct, pgbouncer, pgvpd] as a Markdown table.
fn three_way_table(s: &mut String, rows: &[Row]) {
    let _ = writeln!(
        s,
        "| workload | mode | -c | direct tps | pgbouncer tps (× direct) | pgvpd tps (× direct) \
         | pgvpd ÷ pgbouncer | pgbouncer CPU share, µs/tx | pgvpd CPU share, µs/tx |"
    );
    let _ = writeln!(s, "|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let [direct, bouncer, pgvpd] = &row.results[..] else {
            continue;
        };
        let tps = |r: &RunResult| {
            if r.ok() {
                format!("{:.0}", r.tps)
            } else if r.error.as_deref() == Some(UNSUPPORTED) {
                "n/a (unsupported)".into()
            } else {
                "FAILED".into()
            }
        };
        let ratio = |r: &RunResult| {
            if r.ok() && direct.ok() && direct.tps > 0.0 {
                format!("{} ({:.2}×)", tps(r), r.tps / direct.tps)
            } else {
                tps(r)
            }
        };
        let cpu = |r: &RunResult| match (r.ok(), r.cpu_share(), r.us_per_tx()) {
            (true, Some(sh), Some(us)) => format!("{:.0}%, {:.1} µs", sh * 100.0, us),
            _ => "—".into(),
        };
        let vs = if pgvpd.ok() && bouncer.ok() && bouncer.tps > 0.0 {
            format!("{:.2}×", pgvpd.tps / bouncer.tps)
        } else {
            "—".into()
        };
        let mode = if row.spec.connect_each {
            format!("{} `-C`", row.spec.mode)
        } else {
            row.spec.mode.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.spec.workload,
            mode,
            row.spec.clients,
            tps(direct),
            ratio(bouncer),
            ratio(pgvpd),
            vs,
            cpu(bouncer),
            cpu(pgvpd)
        );
    }
}

fn tls_and_rest(
    s: &mut String,
    _rows: &[Row],
    tls_rows: &[Row],
    mems: &[(String, Result<Mem, String>)],
    facts: &[String],
) {
    let _ = writeln!(
        s,
        "\nCPU share: proxy utime+stime during the run ÷ wall time of the run (100% = one core); \
         µs/tx: proxy CPU ÷ transactions. `-C` tps includes connection set-up."
    );
    let _ = writeln!(
        s,
        "\nTLS, every client verifying the server (`sslmode=verify-full`); pgvpd also \
         verifies PostgreSQL (`upstream_tls = verify-full`), so a pgvpd transaction crosses \
         two TLS links and a `-C` connection makes two handshakes:\n"
    );
    let _ = writeln!(
        s,
        "| workload | mode | -c | direct TLS tps | pgvpd TLS tps (× direct TLS) \
         | pgvpd CPU share, µs/tx |"
    );
    let _ = writeln!(s, "|---|---|--:|--:|--:|--:|");
    for row in tls_rows {
        let [direct, pgvpd] = &row.results[..] else {
            continue;
        };
        let tps = |r: &RunResult| {
            if r.ok() {
                format!("{:.0}", r.tps)
            } else if r.error.as_deref() == Some(UNSUPPORTED) {
                "n/a (unsupported)".into()
            } else {
                "FAILED".into()
            }
        };
        let ratio = if pgvpd.ok() && direct.ok() && direct.tps > 0.0 {
            format!("{} ({:.2}×)", tps(pgvpd), pgvpd.tps / direct.tps)
        } else {
            tps(pgvpd)
        };
        let cpu = match (pgvpd.ok(), pgvpd.cpu_share(), pgvpd.us_per_tx()) {
            (true, Some(sh), Some(us)) => format!("{:.0}%, {:.1} µs", sh * 100.0, us),
            _ => "—".into(),
        };
        let mode = if row.spec.connect_each {
            format!("{} `-C`", row.spec.mode)
        } else {
            row.spec.mode.to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row.spec.workload,
            mode,
            row.spec.clients,
            tps(direct),
            ratio,
            cpu
        );
    }
    let _ = writeln!(
        s,
        "\nProxy memory with {IDLE_CLIENTS} trust-authenticated idle clients (VmRSS delta of the \
         proxy process, fresh process each; pgvpd clients each hold their own server connection):\n"
    );
    for (name, m) in mems {
        let _ = match m {
            Ok(m) => writeln!(
                s,
                "- {name}: {} kB → {} kB = **{:.1} kB per client**",
                m.before_kb,
                m.after_kb,
                m.per_client_kb()
            ),
            Err(e) => writeln!(s, "- {name}: FAILED: {e}"),
        };
    }
    let _ = writeln!(s, "\nMachine and settings:\n");
    for f in facts {
        let _ = writeln!(s, "- {f}");
    }
}
