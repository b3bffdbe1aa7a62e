//! `pool_mode = transaction` end to end (issue 5): servers go back to the
//! pool after every transaction and the proxy applies the client's tenant
//! context on whichever server its next transaction gets. Same runner and
//! cluster as `integration`.
//!
//! `cargo test --test txn` runs all cases; `-- leak` only those whose name
//! contains "leak".

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fixtures::{APP_PASSWORD, DB};
use common::runner::{self, Case};
use common::{Ctx, Proxy, RawConn};

const CASES: &[Case] = &[
    ("txn_isolation_one_server", txn_isolation_one_server),
    ("txn_leak_context_tampering", txn_leak_context_tampering),
    (
        "txn_step_failure_runs_nothing",
        txn_step_failure_runs_nothing,
    ),
    ("txn_extended_unnamed", txn_extended_unnamed),
    ("txn_named_statements_refused", txn_named_statements_refused),
    ("txn_pgbench_simple_extended", txn_pgbench_simple_extended),
];

fn main() {
    runner::run(CASES);
}

const POOL_PASSWORD: &str = "pool-secret";

fn txn_proxy(ctx: &Ctx, extra: &str) -> Proxy {
    ctx.proxy(&format!(
        "pool_mode = transaction\npool_password = {POOL_PASSWORD}\n\
         upstream_password = {APP_PASSWORD}\n{extra}"
    ))
}

fn login(p: &Proxy, user: &str) -> RawConn {
    RawConn::login(p.port, user, DB, Some(POOL_PASSWORD))
        .unwrap_or_else(|e| panic!("pooled login as {user}: {e:?}"))
}

/// Tenant, visible names and backend pid, in one row.
const WHO: &str = "SELECT current_setting('app.current_tenant_id') || ' ' || \
    coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants), '') || ' ' || \
    pg_backend_pid()";

fn who(c: &mut RawConn) -> (String, String, String) {
    let row = c.query_one(WHO).expect("a row");
    let mut it = row.splitn(2, ' ');
    let t = it.next().unwrap_or_default().to_string();
    let rest = it.next().unwrap_or_default();
    let (names, pid) = rest.rsplit_once(' ').unwrap_or(("", ""));
    (t, names.to_string(), pid.to_string())
}

fn names_of(tenant: &str) -> &'static str {
    match tenant {
        "tenant_a" => "Alice Corp,Alice LLC",
        "tenant_b" => "Bob Inc,Bob Ltd",
        _ => "",
    }
}

// ------------------------------------------------------- extended protocol

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &b)
}

fn bind(stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &b)
}

fn execute() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// One unnamed Parse/Bind/Execute/Sync; the first column of every row, or
/// the error's code and message.
fn extended(c: &mut RawConn, sql: &str, params: &[&str]) -> Result<Vec<String>, (String, String)> {
    let mut out = parse("", sql);
    out.extend(bind("", params));
    out.extend(execute());
    out.extend(sync());
    c.send(&out);
    read_until_ready(c)
}

fn read_until_ready(c: &mut RawConn) -> Result<Vec<String>, (String, String)> {
    let mut rows = Vec::new();
    let mut err = None;
    loop {
        let Some((t, body)) = c.read_message() else {
            // A FATAL error is followed by the end of the connection.
            return Err(err.unwrap_or(("EOF".into(), "connection closed".into())));
        };
        match t {
            b'D' => {
                let n = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                if n < 0 {
                    rows.push("NULL".into());
                } else {
                    rows.push(String::from_utf8_lossy(&body[6..6 + n as usize]).into_owned());
                }
            }
            b'E' => {
                let e = common::parse_error(&body);
                err = Some((e.code, e.message));
            }
            b'Z' => {
                return match err {
                    Some(e) => Err(e),
                    None => Ok(rows),
                };
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------- cases

/// `pool_size = 1`: two tenants' clients alternate transactions on the one
/// server; each sees only its own rows, every time.
fn txn_isolation_one_server(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1\nlog_level = debug");
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    let mut pids = BTreeSet::new();
    for round in 0..10 {
        for (c, tenant) in [(&mut a, "tenant_a"), (&mut b, "tenant_b")] {
            let (t, names, pid) = who(c);
            assert_eq!(t, tenant, "round {round}");
            assert_eq!(names, names_of(tenant), "round {round}: rows of {tenant}");
            pids.insert(pid);
        }
    }
    assert_eq!(pids.len(), 1, "both clients share the one server: {pids:?}");
    // A transaction keeps its server: the other client waits for it.
    a.simple_query("BEGIN").expect("BEGIN");
    assert_eq!(who(&mut a).0, "tenant_a");
    let port = p.port;
    let waiter = std::thread::spawn(move || {
        let mut b = RawConn::login(port, "app_user.tenant_b", DB, Some(POOL_PASSWORD))
            .expect("login while the server is held");
        who(&mut b)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "B ran while A's transaction held the only server"
    );
    a.simple_query("COMMIT").expect("COMMIT");
    let (t, names, _) = waiter.join().expect("B's thread");
    assert_eq!(
        (t.as_str(), names.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    p.assert_alive();
}

/// The classic leak: a client changes its session's context in and out of
/// transactions; the next tenant's transaction on the same server must see
/// only its own rows.
fn txn_leak_context_tampering(ctx: &Ctx) {
    ctx.cluster.sql("GRANT app_user TO trust_user");
    let p = txn_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    let tampering = [
        "SET app.current_tenant_id = 'tenant_a'",
        "SELECT set_config('app.current_tenant_id', 'tenant_a', false)",
        "RESET ROLE",
        "SET ROLE app_user",
        "RESET ALL",
        "BEGIN; SET app.current_tenant_id = 'tenant_a'; ROLLBACK",
        "BEGIN; SELECT set_config('app.current_tenant_id', 'tenant_a', false); COMMIT",
        "SET SESSION app.current_tenant_id = 'tenant_a'; BEGIN; SET LOCAL app.current_tenant_id = 'x'; COMMIT",
        "DISCARD ALL",
    ];
    for sql in tampering {
        let r = a.simple_query(sql);
        assert!(r.is_ok(), "{sql}: {r:?}");
        for _ in 0..2 {
            let (t, names, _) = who(&mut b);
            assert_eq!(
                (t.as_str(), names.as_str()),
                ("tenant_b", names_of("tenant_b")),
                "after tenant A ran {sql:?}"
            );
        }
        // A gets its own context back too.
        let (t, names, _) = who(&mut a);
        assert_eq!(
            (t.as_str(), names.as_str()),
            ("tenant_a", names_of("tenant_a")),
            "{sql}"
        );
    }
    // Inside one message, a ROLLBACK cannot bring back another client's
    // context (the step is committed before the client's statements).
    b.simple_query("SELECT 1").expect("B runs");
    let rows = a
        .simple_query("BEGIN; SELECT 1; ROLLBACK; SELECT current_setting('app.current_tenant_id')")
        .expect("multi-statement");
    let last = rows.last().and_then(|r| r.first().cloned().flatten());
    assert_eq!(last.as_deref(), Some("tenant_a"), "{rows:?}");
    p.assert_alive();
}

/// The context step fails (the role it sets was revoked): the client's
/// statements must not run, and the client gets a clear error.
fn txn_step_failure_runs_nothing(ctx: &Ctx) {
    ctx.cluster.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'txn_role') THEN \
           CREATE ROLE txn_role NOLOGIN; END IF; END $$; \
         GRANT txn_role TO app_user; \
         CREATE TABLE IF NOT EXISTS txn_marks (v text); TRUNCATE txn_marks; \
         GRANT SELECT, INSERT ON txn_marks TO txn_role, app_user;",
    );
    // One server: every turn of another client needs the step.
    let p = txn_proxy(ctx, "pool_size = 1\nset_role = txn_role");
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    let mut c = login(&p, "app_user.tenant_a");
    assert_eq!(
        a.query_one("SELECT current_user").as_deref(),
        Some("txn_role")
    );
    a.simple_query("INSERT INTO txn_marks VALUES ('before')")
        .expect("insert with the role granted");
    assert_eq!(
        b.query_one("SELECT current_user").as_deref(),
        Some("txn_role")
    );
    ctx.cluster.sql("REVOKE txn_role FROM app_user");
    let e = a
        .simple_query("INSERT INTO txn_marks VALUES ('after')")
        .expect_err("the step must fail and the insert must not run");
    assert_eq!(e.code, "42501", "{e:?}");
    assert!(e.message.contains("tenant context"), "{e:?}");
    assert_eq!(
        ctx.cluster.sql("SELECT string_agg(v, ',') FROM txn_marks"),
        "before",
        "a simple-protocol statement ran although the context step failed"
    );
    // Extended protocol: the insert never runs either.
    let r = extended(&mut c, "INSERT INTO txn_marks VALUES ($1)", &["extended"]);
    let (code, message) = r.expect_err("the step must fail");
    assert_eq!(code, "42501", "{message}");
    ctx.cluster.sql("GRANT txn_role TO app_user");
    assert_eq!(
        ctx.cluster.sql("SELECT string_agg(v, ',') FROM txn_marks"),
        "before",
        "an extended-protocol statement ran although the context step failed"
    );
    // The failed servers were closed; a new client is served again.
    let mut d = login(&p, "app_user.tenant_b");
    assert_eq!(
        d.query_one("SELECT current_user").as_deref(),
        Some("txn_role")
    );
    p.assert_alive();
}

/// Unnamed extended-protocol statements, pipelined and one by one, across
/// tenants sharing one server.
fn txn_extended_unnamed(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    for i in 0..20 {
        let (c, tenant) = if i % 2 == 0 {
            (&mut a, "tenant_a")
        } else {
            (&mut b, "tenant_b")
        };
        let rows = extended(
            c,
            "SELECT name FROM tenants WHERE $1::int > 0 ORDER BY name",
            &["1"],
        )
        .expect("extended query");
        assert_eq!(rows.join(","), names_of(tenant), "round {i}");
    }
    // Pipelined: three cycles in one write.
    let mut out = Vec::new();
    for _ in 0..3 {
        out.extend(parse("", "SELECT current_setting('app.current_tenant_id')"));
        out.extend(bind("", &[]));
        out.extend(execute());
        out.extend(sync());
    }
    a.send(&out);
    for _ in 0..3 {
        assert_eq!(read_until_ready(&mut a).expect("cycle"), vec!["tenant_a"]);
    }
    // An error mid-cycle, then recovery.
    let r = extended(&mut b, "SELECT 1/0", &[]);
    assert_eq!(r.expect_err("division by zero").0, "22012");
    assert_eq!(
        extended(&mut b, "SELECT 2", &[]).expect("after error"),
        vec!["2"]
    );
    p.assert_alive();
}

/// Named prepared statements are not supported yet in this mode: a clear
/// error, not silent misbehaviour.
fn txn_named_statements_refused(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let mut out = parse("s1", "SELECT 1");
    out.extend(sync());
    a.send(&out);
    let r = read_until_ready(&mut a);
    let (code, message) = r.expect_err("named Parse refused");
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("named prepared statements"), "{message}");
    p.assert_alive();
}

/// pgbench in transaction mode (simple and extended protocol).
fn txn_pgbench_simple_extended(ctx: &Ctx) {
    let init = common::pgbench(
        ctx.cluster.port,
        "postgres",
        None,
        DB,
        &["-i", "-q", "-s", "1"],
    );
    init.expect_ok("pgbench -i");
    ctx.cluster.sql(
        "GRANT SELECT, UPDATE, INSERT ON pgbench_accounts, pgbench_branches, \
         pgbench_tellers, pgbench_history TO app_user",
    );
    let p = txn_proxy(ctx, "pool_size = 4");
    for mode in ["simple", "extended"] {
        let out = common::pgbench(
            p.port,
            "app_user.tenant_a",
            Some(POOL_PASSWORD),
            DB,
            &["-M", mode, "-c", "8", "-j", "2", "-t", "200", "-n"],
        );
        let text = out.expect_ok(&format!("pgbench -M {mode} through transaction mode"));
        assert!(
            text.contains("number of transactions actually processed: 1600/1600"),
            "{text}"
        );
    }
    p.assert_alive();
}
