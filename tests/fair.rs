//! `tenant_max_servers` and fair queueing across tenants in both pool modes
//! (issue 7): a tenant never holds more servers of a pool than its cap,
//! other tenants keep being served meanwhile, and a free server goes round
//! robin across the tenants that wait, so one tenant's long queue cannot
//! starve another's single waiter. Same runner and cluster as `integration`.
//!
//! What each transaction did is recorded by PostgreSQL itself in
//! `fair_log`: the tenant context the proxy set, the rows RLS showed, the
//! backend, and the transaction's start (`now()`) and end
//! (`clock_timestamp()`). A server is lent to one client for at least the
//! whole of such a transaction, so overlapping intervals of one tenant are
//! servers that tenant held at the same time. Orders are compared, never
//! durations.
//!
//! `cargo test --test fair` runs all cases.

mod common;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fixtures::DB;
use common::pooled::{POOL_PASSWORD, names_of, pooled_proxy};
use common::runner::{self, Case};
use common::{Ctx, Proxy, RawConn};

const CASES: &[Case] = &[
    ("fair_cap_transaction", fair_cap_transaction),
    ("fair_cap_session", fair_cap_session),
    ("fair_cap_parked_servers", fair_cap_parked_servers),
    ("fair_order_transaction", fair_order_transaction),
    ("fair_order_session", fair_order_session),
    ("fair_config_zero_refused", fair_config_zero_refused),
];

fn main() {
    runner::run(CASES);
}

/// Long enough for every wait in these cases on a loaded machine.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a case waits for the proxy to log what it expects.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// A pooled login that may wait for a server longer than the default
/// 10 s read timeout.
fn login(p: &Proxy, user: &str) -> RawConn {
    let mut c = RawConn::connect(p.port);
    c.set_read_timeout(READ_TIMEOUT);
    c.startup(Some(user), DB, &[]);
    c.auth_trust_or_cleartext(Some(POOL_PASSWORD))
        .unwrap_or_else(|e| panic!("pooled login as {user}: {e:?}"));
    c
}

fn fresh_log(ctx: &Ctx) {
    ctx.cluster.sql(
        "CREATE TABLE IF NOT EXISTS fair_log (\
           id bigserial PRIMARY KEY, label text NOT NULL, claimed text NOT NULL, \
           seen text, names text, pid int, t0 timestamptz, t1 timestamptz); \
         GRANT SELECT, INSERT ON fair_log TO app_user; \
         GRANT USAGE ON SEQUENCE fair_log_id_seq TO app_user; \
         TRUNCATE fair_log;",
    );
}

/// One transaction of `tenant`'s client `label`: sleeps `sleep` seconds
/// holding its server, then records itself in `fair_log`.
fn tx_sql(label: &str, tenant: &str, sleep: f64) -> String {
    format!(
        "BEGIN; SELECT pg_sleep({sleep}); \
         INSERT INTO fair_log (label, claimed, seen, names, pid, t0, t1) \
         SELECT '{label}', '{tenant}', current_setting('app.current_tenant_id'), \
           coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants), ''), \
           pg_backend_pid(), now(), clock_timestamp(); \
         COMMIT;"
    )
}

/// A row of `fair_log`, times in microseconds since the epoch.
#[derive(Debug)]
struct Row {
    label: String,
    claimed: String,
    seen: String,
    names: String,
    t0: i64,
    t1: i64,
}

fn read_log(ctx: &Ctx) -> Vec<Row> {
    let out = ctx.cluster.sql(
        "SELECT label, claimed, seen, names, \
           (extract(epoch FROM t0) * 1000000)::bigint, \
           (extract(epoch FROM t1) * 1000000)::bigint \
         FROM fair_log ORDER BY id",
    );
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 6, "fair_log row {l:?}");
            Row {
                label: f[0].to_string(),
                claimed: f[1].to_string(),
                seen: f[2].to_string(),
                names: f[3].to_string(),
                t0: f[4].parse().expect("t0"),
                t1: f[5].parse().expect("t1"),
            }
        })
        .collect()
}

/// Every transaction ran with its own tenant's context and saw its rows.
fn assert_rows_are_their_own(rows: &[Row]) {
    for r in rows {
        assert_eq!(r.seen, r.claimed, "context of {r:?}");
        assert_eq!(r.names, names_of(&r.claimed), "rows seen by {r:?}");
    }
}

/// Most intervals of `tenant` open at one instant.
fn max_overlap(rows: &[Row], tenant: &str) -> usize {
    let mut ev: Vec<(i64, i32)> = Vec::new();
    for r in rows.iter().filter(|r| r.claimed == tenant) {
        assert!(r.t0 <= r.t1, "{r:?}");
        ev.push((r.t0, 1));
        ev.push((r.t1, -1));
    }
    // At the same instant an end is counted before a start.
    ev.sort_unstable();
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        open += d;
        max = max.max(open);
    }
    max as usize
}

/// Lines of the proxy log with all of `parts`.
fn log_count(p: &Proxy, parts: &[&str]) -> usize {
    p.log()
        .lines()
        .filter(|l| parts.iter().all(|s| l.contains(s)))
        .count()
}

/// Waits until the proxy logged at least `n` lines with all of `parts`.
fn wait_log(p: &Proxy, parts: &[&str], n: usize) {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let have = log_count(p, parts);
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy logged {have} of {n} lines with {parts:?}\n{}",
            p.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CAPPED_A: &[&str] = &["event=pool_wait", "tenant=tenant_a", "capped=true"];
const WAIT: &[&str] = &["event=pool_wait"];

/// Runs `sql` on `c` in a thread; the thread gives the connection back.
fn run_async(mut c: RawConn, sql: String) -> JoinHandle<RawConn> {
    std::thread::spawn(move || {
        if let Err(e) = c.simple_query(&sql) {
            panic!("{sql}: {e:?}");
        }
        c
    })
}

/// The advisory lock tenant_a's transactions wait for while the test holds
/// it (through a direct connection to PostgreSQL).
const GATE: i64 = 7001;

/// tenant_a's transaction: waits for the gate, holds its server a moment
/// longer (so transactions after the gate opens overlap too), records itself.
fn gated_tx_sql(label: &str) -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({GATE}); SELECT pg_sleep(0.3); \
         INSERT INTO fair_log (label, claimed, seen, names, pid, t0, t1) \
         SELECT '{label}', 'tenant_a', current_setting('app.current_tenant_id'), \
           coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants), ''), \
           pg_backend_pid(), now(), clock_timestamp(); \
         COMMIT;"
    )
}

/// Closes the gate: a session straight to PostgreSQL holding the lock.
fn close_gate(ctx: &Ctx) -> RawConn {
    let mut g = RawConn::login(ctx.cluster.port, "trust_user", DB, None).expect("gate session");
    g.simple_query(&format!("SELECT pg_advisory_lock({GATE})"))
        .expect("take the gate");
    g
}

/// Transactions waiting at the gate: servers tenant_a holds right now.
fn at_gate(ctx: &Ctx) -> usize {
    ctx.cluster
        .sql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND objid = {GATE} AND objsubid = 1 AND NOT granted"
        ))
        .trim()
        .parse()
        .expect("a count")
}

fn wait_at_gate(ctx: &Ctx, n: usize) {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let have = at_gate(ctx);
        if have == n {
            return;
        }
        assert!(
            have < n,
            "{have} transactions of tenant_a at once (cap {n})"
        );
        assert!(Instant::now() < deadline, "{have} of {n} at the gate");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pool_size = 4 servers made idle first, tenant_max_servers = 2: six
/// clients of tenant_a each open a transaction that waits at the gate.
/// Exactly two reach PostgreSQL; four wait in the proxy's queue although
/// two servers are idle, and stay there while tenant_b's client is served
/// from the idle ones. Once the gate opens, every transaction completes,
/// never more than two of tenant_a's at once, each with its own rows.
/// `mode`: transaction or session (in session mode a server is lent for a
/// whole session: tenant_a's waiters are logins). Two workers: clients move
/// to the worker that owns the pool.
fn cap_case(ctx: &Ctx, mode: &str) {
    fresh_log(ctx);
    let p = Arc::new(pooled_proxy(
        ctx,
        mode,
        "pool_size = 4\ntenant_max_servers = 2\nworkers = 2\npool_checkout_timeout = 60",
    ));
    // Four servers, then idle: sessions of four other tenants open
    // together, then end.
    {
        let warm: Vec<RawConn> = (0..4)
            .map(|i| login(&p, &format!("app_user.warm{i}")))
            .collect();
        let mut gate = close_gate(ctx);
        let held: Vec<JoinHandle<RawConn>> = warm
            .into_iter()
            .map(|c| {
                run_async(
                    c,
                    format!("BEGIN; SELECT pg_advisory_xact_lock_shared({GATE}); COMMIT"),
                )
            })
            .collect();
        wait_at_gate(ctx, 4);
        gate.simple_query(&format!("SELECT pg_advisory_unlock({GATE})"))
            .expect("open the gate");
        for h in held {
            drop(h.join().expect("warm-up client"));
        }
    }
    let creates = log_count(&p, &["event=link_connecting"]);
    assert_eq!(creates, 4, "the warm-up made the pool's four servers");
    let mut gate = close_gate(ctx);
    let (a, base): (Vec<JoinHandle<()>>, usize) = if mode == "transaction" {
        // Logged in first (a login borrows a server too); then the six
        // transactions start together.
        let clients: Vec<RawConn> = (0..6).map(|_| login(&p, "app_user.tenant_a")).collect();
        let base = log_count(&p, CAPPED_A);
        let a = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                std::thread::spawn(move || {
                    c.simple_query(&gated_tx_sql(&format!("a{i}")))
                        .expect("tenant_a's transaction");
                })
            })
            .collect();
        (a, base)
    } else {
        let base = log_count(&p, CAPPED_A);
        let a = (0..6)
            .map(|i| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    let mut c = login(&p, "app_user.tenant_a");
                    c.simple_query(&gated_tx_sql(&format!("a{i}")))
                        .expect("tenant_a's transaction");
                })
            })
            .collect();
        (a, base)
    };
    // Two reach the gate; the other four wait because of the cap (two
    // servers idle).
    wait_at_gate(ctx, 2);
    wait_log(&p, CAPPED_A, base + 4);
    assert_eq!(at_gate(ctx), 2, "a third server for tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    b.simple_query(&tx_sql("b", "tenant_b", 0.0))
        .expect("tenant_b's transaction while tenant_a waits");
    drop(b);
    assert_eq!(at_gate(ctx), 2, "a third server for tenant_a");
    gate.simple_query(&format!("SELECT pg_advisory_unlock({GATE})"))
        .expect("open the gate");
    for h in a {
        h.join().expect("tenant_a client");
    }
    let rows = read_log(ctx);
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert_rows_are_their_own(&rows);
    assert_eq!(
        max_overlap(&rows, "tenant_a"),
        2,
        "tenant_a's transactions at once (cap 2): {rows:?}"
    );
    let b_row = rows.iter().find(|r| r.label == "b").expect("b's row");
    let a_end = rows
        .iter()
        .filter(|r| r.claimed == "tenant_a")
        .map(|r| r.t1)
        .min()
        .expect("tenant_a rows");
    assert!(
        b_row.t1 < a_end,
        "tenant_b served before tenant_a: {rows:?}"
    );
    assert_eq!(
        log_count(&p, &["event=link_connecting"]),
        4,
        "the pool grew past pool_size"
    );
    p.assert_alive();
}

fn fair_cap_transaction(ctx: &Ctx) {
    cap_case(ctx, "transaction");
}

fn fair_cap_session(ctx: &Ctx) {
    cap_case(ctx, "session");
}

/// Transaction mode: a server parked with an idle client counts as held by
/// that client's tenant. With only tenant_a's clients, a cap of 2 and
/// pool_size = 4, the pool never makes more than two servers: a client of
/// tenant_a at its cap takes back a server parked with another idle client
/// of tenant_a instead, and every transaction is served.
fn fair_cap_parked_servers(ctx: &Ctx) {
    fresh_log(ctx);
    let p = pooled_proxy(
        ctx,
        "transaction",
        "pool_size = 4\ntenant_max_servers = 2\npool_checkout_timeout = 30",
    );
    let mut clients: Vec<RawConn> = (0..5).map(|_| login(&p, "app_user.tenant_a")).collect();
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.simple_query(&tx_sql(&format!("a{i}r{round}"), "tenant_a", 0.0))
                .expect("tenant_a's transaction");
        }
    }
    assert!(
        log_count(&p, CAPPED_A) > 0,
        "the cap was never reached:\n{}",
        p.log_tail(30)
    );
    assert_eq!(
        log_count(&p, &["event=link_connecting"]),
        2,
        "servers made for tenant_a alone with a cap of 2"
    );
    let rows = read_log(ctx);
    assert_eq!(rows.len(), 15, "{rows:?}");
    assert_rows_are_their_own(&rows);
    drop(clients);
    p.assert_alive();
}

/// Labels of `fair_log` in commit order.
fn labels(ctx: &Ctx) -> Vec<String> {
    let rows = read_log(ctx);
    assert_rows_are_their_own(&rows);
    rows.into_iter().map(|r| r.label).collect()
}

const FAIR_ORDER: [&str; 6] = ["a1", "b", "a2", "a3", "a4", "a5"];

/// pool_size = 1, no cap: tenant_a's five clients queue (in this order)
/// before tenant_b's one; when the server comes free it goes to tenant_a,
/// then to tenant_b, then back to tenant_a (round robin across tenants,
/// FIFO within one), where a global FIFO would serve tenant_b last.
fn fair_order_transaction(ctx: &Ctx) {
    fresh_log(ctx);
    let p = pooled_proxy(
        ctx,
        "transaction",
        "pool_size = 1\npool_checkout_timeout = 60",
    );
    let mut holder = login(&p, "app_user.tenant_a");
    let queued: Vec<(String, RawConn)> = (1..=5)
        .map(|i| (format!("a{i}"), login(&p, "app_user.tenant_a")))
        .chain(std::iter::once((
            "b".to_string(),
            login(&p, "app_user.tenant_b"),
        )))
        .collect();
    // The holder keeps the only server in an open transaction.
    holder.simple_query("BEGIN").expect("BEGIN");
    let mut waits = log_count(&p, WAIT);
    let mut threads = Vec::new();
    for (label, c) in queued {
        let tenant = if label == "b" { "tenant_b" } else { "tenant_a" };
        threads.push(run_async(c, tx_sql(&label, tenant, 0.0)));
        // Queued before the next one is sent.
        waits += 1;
        wait_log(&p, WAIT, waits);
    }
    holder.simple_query("COMMIT").expect("COMMIT");
    for t in threads {
        t.join().expect("client");
    }
    assert_eq!(labels(ctx), FAIR_ORDER);
    p.assert_alive();
}

/// The same in session mode: the waiters are logins, the server comes free
/// when a session ends.
fn fair_order_session(ctx: &Ctx) {
    fresh_log(ctx);
    let p = Arc::new(pooled_proxy(
        ctx,
        "session",
        "pool_size = 1\npool_checkout_timeout = 60",
    ));
    let holder = login(&p, "app_user.tenant_a");
    let mut waits = log_count(&p, WAIT);
    let mut threads = Vec::new();
    for label in ["a1", "a2", "a3", "a4", "a5", "b"] {
        let p2 = Arc::clone(&p);
        let tenant = if label == "b" { "tenant_b" } else { "tenant_a" };
        threads.push(std::thread::spawn(move || {
            let mut c = login(&p2, &format!("app_user.{tenant}"));
            c.simple_query(&tx_sql(label, tenant, 0.0))
                .expect("transaction");
        }));
        waits += 1;
        wait_log(&p, WAIT, waits);
    }
    drop(holder);
    for t in threads {
        t.join().expect("client");
    }
    assert_eq!(labels(ctx), FAIR_ORDER);
    p.assert_alive();
}

/// `tenant_max_servers = 0` is a configuration error naming the key, from
/// the file, the environment and the command line alike.
fn fair_config_zero_refused(ctx: &Ctx) {
    let dir = ctx.cluster.subdir("fair-conf");
    let conf = dir.join("pgvpd.conf");
    std::fs::write(&conf, "tenant_max_servers = 0\n").expect("write conf");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::proxy_binary());
        cmd.args(args);
        common::run_command(cmd, "pgvpd", env, Duration::from_secs(10))
    };
    let conf_s = conf.to_str().expect("utf-8");
    for out in [
        run(&["--config", conf_s, "--check-config"], &[]),
        run(&["--check-config"], &[("PGVPD_TENANT_MAX_SERVERS", "0")]),
        run(&["--check-config", "--tenant-max-servers", "0"], &[]),
    ] {
        assert!(!out.success(), "tenant_max_servers = 0 accepted: {out:?}");
        let text = format!("{}\n{}", out.stdout, out.stderr);
        assert!(text.contains("tenant_max_servers"), "names the key: {text}");
        assert!(text.contains("> 0"), "says why: {text}");
    }
    // A positive value is accepted, above pool_size too (no effect there).
    std::fs::write(&conf, "tenant_max_servers = 50\npool_size = 4\n").expect("write conf");
    let out = run(&["--config", conf_s, "--check-config"], &[]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("tenant_max_servers = 50"), "{out:?}");
}
