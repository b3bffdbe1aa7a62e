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

use common::fixtures::DB;
use common::pooled::{
    POOL_PASSWORD, WHO, assert_app_backends_at_most, names_of, pooled_login, pooled_proxy, who,
};
use common::runner::{self, Case};
use common::{Ctx, Proxy, RawConn, XorShift};

const CASES: &[Case] = &[
    ("txn_isolation_one_server", txn_isolation_one_server),
    ("txn_leak_context_tampering", txn_leak_context_tampering),
    (
        "txn_step_failure_runs_nothing",
        txn_step_failure_runs_nothing,
    ),
    ("txn_extended_unnamed", txn_extended_unnamed),
    ("txn_named_statements_refused", txn_named_statements_refused),
    (
        "txn_named_statements_follow_the_client",
        txn_named_statements_follow_the_client,
    ),
    ("txn_pgbench_simple_extended", txn_pgbench_simple_extended),
    (
        "txn_slow_reader_between_transactions",
        txn_slow_reader_between_transactions,
    ),
    ("txn_leak_session_objects", txn_leak_session_objects),
    ("txn_drivers_named_statements", txn_drivers_named_statements),
    ("txn_torture", txn_torture),
];

fn main() {
    runner::run(CASES);
}

/// A `pool_mode = transaction` proxy logging in upstream as app_user (SCRAM).
fn txn_proxy(ctx: &Ctx, extra: &str) -> Proxy {
    pooled_proxy(ctx, "transaction", extra)
}

fn login(p: &Proxy, user: &str) -> RawConn {
    pooled_login(p, user)
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

/// A client reads its answers late, pipelines its next transaction behind a
/// large one, while another client waits for the only server: every answer
/// reaches the right client intact and in order. (The proxy also holds a
/// client's next checkout until its previous answers are written, so a new
/// server's stream always starts in an empty ring; socket buffers make that
/// exact interleaving hard to force from here.)
fn txn_slow_reader_between_transactions(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    // About 2 MB of rows: more than the proxy's ring and the socket buffers.
    a.send_query("SELECT repeat('x', 100) || g FROM generate_series(1, 20000) g");
    std::thread::sleep(Duration::from_millis(300));
    let port = p.port;
    let b = std::thread::spawn(move || {
        let mut b =
            RawConn::login(port, "app_user.tenant_b", DB, Some(POOL_PASSWORD)).expect("B login");
        who(&mut b)
    });
    // B cannot get the only server before A's answers are read: read them.
    let rows = a.read_query_result().expect("A's big result");
    assert_eq!(rows.len(), 20000);
    a.send_query(WHO);
    let (tb, nb, _) = b.join().expect("B");
    assert_eq!(
        (tb.as_str(), nb.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    let row = a.read_query_result().expect("A's next transaction");
    let first = row
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    assert!(
        first.starts_with("tenant_a Alice Corp,Alice LLC "),
        "{first}"
    );
    // Same again with A's next query sent before it read anything.
    a.send_query("SELECT repeat('y', 100) || g FROM generate_series(1, 20000) g");
    std::thread::sleep(Duration::from_millis(200));
    let mut b2 = login(&p, "app_user.tenant_b");
    b2.send_query(WHO);
    a.send_query(WHO);
    let big = a.read_query_result().expect("A's second big result");
    assert_eq!(big.len(), 20000);
    let row = a
        .read_query_result()
        .expect("A's pipelined next transaction");
    let first = row
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    assert!(
        first.starts_with("tenant_a Alice Corp,Alice LLC "),
        "{first}"
    );
    let row = b2.read_query_result().expect("B's query");
    let first = row
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    assert!(first.starts_with("tenant_b Bob Inc,Bob Ltd "), "{first}");
    p.assert_alive();
}

fn describe_stmt(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    msg(b'D', &b)
}

fn close_stmt(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    msg(b'C', &b)
}

/// Named statements prepared by clients follow them to whichever server
/// their transactions get: four clients, two servers, each client's
/// statements used in many transactions interleaved with the others'.
fn txn_named_statements_follow_the_client(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 2\nlog_level = debug");
    let tenants = ["tenant_a", "tenant_b", "tenant_a", "tenant_b"];
    let mut cs: Vec<RawConn> = tenants
        .iter()
        .map(|t| login(&p, &format!("app_user.{t}")))
        .collect();
    // Each client prepares two statements (same names across clients).
    for c in cs.iter_mut() {
        let mut out = parse(
            "who",
            "SELECT current_setting('app.current_tenant_id') || ':' || $1::text",
        );
        out.extend(parse("names", "SELECT name FROM tenants ORDER BY name"));
        out.extend(sync());
        c.send(&out);
        read_until_ready(c).expect("prepare");
    }
    let mut hold = login(&p, "app_user.tenant_a");
    for round in 0..40 {
        // Now and then one server is held by a transaction, so the others
        // share the second one and the statements must move.
        let holding = round % 3 == 0;
        if holding {
            hold.simple_query("BEGIN").expect("BEGIN");
        }
        for (i, c) in cs.iter_mut().enumerate() {
            let tenant = tenants[i];
            let mut out = bind("who", &[&format!("{round}")]);
            out.extend(execute());
            out.extend(sync());
            c.send(&out);
            let rows =
                read_until_ready(c).unwrap_or_else(|e| panic!("round {round} client {i}: {e:?}"));
            assert_eq!(
                rows,
                vec![format!("{tenant}:{round}")],
                "round {round} client {i}"
            );
            let mut out = describe_stmt("names");
            out.extend(bind("names", &[]));
            out.extend(execute());
            out.extend(sync());
            c.send(&out);
            let rows =
                read_until_ready(c).unwrap_or_else(|e| panic!("round {round} client {i}: {e:?}"));
            assert_eq!(rows.join(","), names_of(tenant), "round {round} client {i}");
        }
        if holding {
            hold.simple_query("COMMIT").expect("COMMIT");
        }
    }
    // The proxy's own statement names are out of reach: another client's
    // statement and the context step's cannot be bound, described or closed.
    for name in ["pgvpd_ctx_3", "pgvpd_begin", "pgvpd_commit", "pgvpd_1_1"] {
        let c = &mut cs[1];
        let mut out = bind(name, &["'x'"]);
        out.extend(execute());
        out.extend(sync());
        c.send(&out);
        let (code, message) = read_until_ready(c).expect_err("reserved name");
        assert_eq!(code, "26000", "{name}: {message}");
        let mut out = close_stmt(name);
        out.extend(sync());
        c.send(&out);
        read_until_ready(c).expect("close of a reserved name does nothing");
    }
    // The context step still works for everyone after those Closes.
    for (i, c) in cs.iter_mut().enumerate() {
        let (t, names, _) = who(c);
        assert_eq!(
            (t.as_str(), names.as_str()),
            (tenants[i], names_of(tenants[i]))
        );
    }
    // Close, then use: the server says it does not exist.
    let c = &mut cs[0];
    let mut out = close_stmt("who");
    out.extend(sync());
    c.send(&out);
    read_until_ready(c).expect("close");
    let mut out = bind("who", &["x"]);
    out.extend(execute());
    out.extend(sync());
    c.send(&out);
    let (code, message) = read_until_ready(c).expect_err("closed statement");
    assert_eq!(code, "26000", "{message}");
    // Defining it again works, in a transaction spanning messages.
    let mut out = parse("who", "SELECT 'again:' || $1::text");
    out.extend(sync());
    c.send(&out);
    read_until_ready(c).expect("prepare again");
    c.simple_query("BEGIN").expect("BEGIN");
    let mut out = bind("who", &["1"]);
    out.extend(execute());
    out.extend(sync());
    c.send(&out);
    assert_eq!(read_until_ready(c).expect("again"), vec!["again:1"]);
    c.simple_query("COMMIT").expect("COMMIT");
    p.assert_alive();
}

/// Objects that outlive a transaction on the server (a temporary table, a
/// WITH HOLD cursor, a listener, an SQL prepared statement) are gone before
/// another client gets that server.
fn txn_leak_session_objects(ctx: &Ctx) {
    ctx.cluster.sql("GRANT CREATE ON SCHEMA public TO app_user");
    let p = txn_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    a.simple_query("CREATE TEMP TABLE secret (x text); INSERT INTO secret VALUES ('a-data')")
        .expect("temp table");
    a.simple_query("BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT name FROM tenants; COMMIT")
        .expect("WITH HOLD cursor");
    a.simple_query("PREPARE a_stmt AS SELECT name FROM tenants")
        .expect("SQL PREPARE");
    a.simple_query("LISTEN a_channel").expect("LISTEN");
    // B gets the one server next.
    let e = b
        .simple_query("SELECT x FROM pg_temp.secret")
        .expect_err("A's temporary table must be gone");
    assert_eq!(e.code, "42P01", "{e:?}");
    let e = b
        .simple_query("FETCH ALL FROM held")
        .expect_err("A's cursor must be gone");
    assert_eq!(e.code, "34000", "{e:?}");
    let e = b
        .simple_query("EXECUTE a_stmt")
        .expect_err("A's prepared statement must be gone");
    assert_eq!(e.code, "26000", "{e:?}");
    // A notification on A's channel never reaches B.
    ctx.cluster.sql("NOTIFY a_channel, 'for tenant a only'");
    let (t, names, _) = who(&mut b);
    assert_eq!(
        (t.as_str(), names.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    b.send_query("SELECT pg_sleep(0.2)");
    let mut saw_notify = false;
    while let Some((tag, _)) = b.read_message() {
        if tag == b'A' {
            saw_notify = true;
        }
        if tag == b'Z' {
            break;
        }
    }
    assert!(
        !saw_notify,
        "B received a notification meant for A's listener"
    );
    p.assert_alive();
}

const WHO_SQL_PY: &str = "SELECT current_setting('app.current_tenant_id') || '|' || \
    coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants WHERE id > %s), '')";
const WHO_SQL_PG: &str = "SELECT current_setting('app.current_tenant_id') || '|' || \
    coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants WHERE id > $1), '')";

const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
port, pw, sql = sys.argv[1], sys.argv[2], sys.argv[3]
conns = {t: psycopg.connect(f"host=127.0.0.1 port={port} dbname=postgres user=app_user.{t} password={pw}", autocommit=True) for t in ("tenant_a", "tenant_b")}
for i in range(30):
    for t, c in conns.items():
        with c.cursor() as cur:
            cur.execute(sql, (0,), prepare=True)
            print(t, cur.fetchone()[0])
        if i % 5 == 0:
            with c.transaction():
                with c.cursor() as cur:
                    cur.execute(sql, (0,), prepare=True)
                    print(t, cur.fetchone()[0])
                    cur.execute(sql, (0,), prepare=True)
                    print(t, cur.fetchone()[0])
"#;

const ASYNCPG_SCRIPT: &str = r#"
import asyncio, sys, asyncpg
async def main():
    port, pw, sql = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cs = {}
    for t in ("tenant_a", "tenant_b"):
        cs[t] = await asyncpg.connect(host="127.0.0.1", port=port, user=f"app_user.{t}", password=pw, database="postgres")
    for i in range(30):
        for t, c in cs.items():
            print(t, await c.fetchval(sql, 0))
            if i % 7 == 0:
                async with c.transaction():
                    st = await c.prepare(sql)
                    print(t, await st.fetchval(0))
                    print(t, await st.fetchval(0))
    for c in cs.values():
        await c.close()
asyncio.run(main())
"#;

const NODE_SCRIPT: &str = r#"
const { Client } = require('pg');
(async () => {
  const [port, pw, sql] = process.argv.slice(1);
  const cs = {};
  for (const t of ['tenant_a', 'tenant_b']) {
    cs[t] = new Client({ host: '127.0.0.1', port: Number(port), user: `app_user.${t}`, password: pw, database: 'postgres' });
    await cs[t].connect();
  }
  for (let i = 0; i < 30; i++) {
    for (const t of Object.keys(cs)) {
      const r = await cs[t].query({ name: 'who', text: sql, values: [0], rowMode: 'array' });
      console.log(t, r.rows[0][0]);
    }
  }
  for (const c of Object.values(cs)) await c.end();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// Checks a driver's output: every line `tenant value` must be that tenant's
/// own context and rows; returns how many lines were checked.
fn check_driver_lines(what: &str, out: &str) -> usize {
    let mut n = 0;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (t, v) = line.split_once(' ').unwrap_or((line, ""));
        assert_eq!(v, format!("{t}|{}", names_of(t)), "{what}: {line:?}");
        n += 1;
    }
    n
}

/// psycopg (`prepare=True`), asyncpg (its statement cache and explicit
/// `prepare`) and node-postgres (named queries) through transaction mode
/// with one server shared by two tenants: every statement is prepared again
/// whenever the other tenant had the server, and every answer is checked.
fn txn_drivers_named_statements(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1");
    let port = p.port.to_string();
    let py = common::asyncpg_python();
    let runs: Vec<(&str, std::process::Command, usize)> = vec![
        (
            "psycopg",
            {
                let mut c = std::process::Command::new(&py);
                c.arg("-c")
                    .arg(PSYCOPG_SCRIPT)
                    .args([port.as_str(), POOL_PASSWORD, WHO_SQL_PY]);
                c
            },
            2 * 30 + 2 * 2 * 6,
        ),
        (
            "asyncpg",
            {
                let mut c = std::process::Command::new(&py);
                c.arg("-c")
                    .arg(ASYNCPG_SCRIPT)
                    .args([port.as_str(), POOL_PASSWORD, WHO_SQL_PG]);
                c
            },
            2 * 30 + 2 * 2 * 5,
        ),
        (
            "node-postgres",
            {
                let dir = common::node_pg_dir();
                let mut c = std::process::Command::new("node");
                c.current_dir(dir).arg("-e").arg(NODE_SCRIPT).args([
                    port.as_str(),
                    POOL_PASSWORD,
                    WHO_SQL_PG,
                ]);
                c
            },
            2 * 30,
        ),
    ];
    for (what, cmd, want) in runs {
        let out = common::run_command(cmd, what, &[], Duration::from_secs(120));
        let text = out.expect_ok(&format!("{what} through transaction mode"));
        let n = check_driver_lines(what, &text);
        assert_eq!(n, want, "{what}: {n} answers, want {want}:\n{text}");
    }
    p.assert_alive();
}

/// `max_prepared_statements = 0`: named prepared statements are refused
/// with a clear error, not silently misbehaving.
fn txn_named_statements_refused(ctx: &Ctx) {
    let p = txn_proxy(ctx, "pool_size = 1\nmax_prepared_statements = 0");
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

/// pgbench in transaction mode (simple, extended and prepared protocol).
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
    // One thread per client: pgbench prepares a statement with a blocking
    // call, which with fewer servers than clients would stall the other
    // clients of its thread (those holding servers) and deadlock.
    for mode in ["simple", "extended", "prepared"] {
        let out = common::pgbench(
            p.port,
            "app_user.tenant_a",
            Some(POOL_PASSWORD),
            DB,
            &["-M", mode, "-c", "8", "-j", "8", "-t", "200", "-n"],
        );
        let text = out.expect_ok(&format!("pgbench -M {mode} through transaction mode"));
        assert!(
            text.contains("number of transactions actually processed: 1600/1600"),
            "{text}"
        );
    }
    p.assert_alive();
}

// ----------------------------------------------------------------- torture

const TENANTS: u64 = 20;
const ROWS_PER_TENANT: i64 = 5;

#[derive(Default)]
struct Counts {
    sessions: u64,
    tamper_sessions: u64,
    transactions: u64,
    statements: u64,
    rows_checked: u64,
    foreign_rows: u64,
    wrong: Vec<String>,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.sessions += o.sessions;
        self.tamper_sessions += o.tamper_sessions;
        self.transactions += o.transactions;
        self.statements += o.statements;
        self.rows_checked += o.rows_checked;
        self.foreign_rows += o.foreign_rows;
        self.wrong.extend(o.wrong);
    }

    /// Rows "tenant n" of a query over `txn_items` by tenant `k`.
    fn check(&mut self, k: u64, rows: &[String], what: &str) {
        let me = format!("t{k}");
        let mut ns = Vec::new();
        for r in rows {
            self.rows_checked += 1;
            let (t, n) = r.split_once(' ').unwrap_or((r.as_str(), ""));
            if t != me {
                self.foreign_rows += 1;
                self.wrong.push(format!("{me} {what}: FOREIGN row {r:?}"));
            }
            ns.push(n.to_string());
        }
        let want: Vec<String> = (0..ROWS_PER_TENANT)
            .map(|i| (k as i64 * 100 + i).to_string())
            .collect();
        if ns != want && self.wrong.len() < 50 {
            self.wrong
                .push(format!("{me} {what}: want {want:?}, got {rows:?}"));
        }
    }
}

fn torture_setup(ctx: &Ctx) {
    let mut sql = String::from(
        "DROP TABLE IF EXISTS txn_items, txn_log; \
         CREATE TABLE txn_items (tenant_id text NOT NULL, n int NOT NULL); \
         CREATE TABLE txn_log (tenant_id text NOT NULL \
            DEFAULT current_setting('app.current_tenant_id'), v bigint NOT NULL); \
         SELECT pgvpd_protect('txn_items'); SELECT pgvpd_protect('txn_log'); \
         GRANT SELECT ON txn_items TO app_user; GRANT SELECT, INSERT ON txn_log TO app_user; ",
    );
    for k in 0..TENANTS {
        sql.push_str(&format!(
            "INSERT INTO txn_items SELECT 't{k}', {base} + i FROM generate_series(0, {last}) i; ",
            base = k * 100,
            last = ROWS_PER_TENANT - 1
        ));
    }
    ctx.cluster.sql(&sql);
}

const ITEMS: &str = "SELECT tenant_id || ' ' || n FROM txn_items ORDER BY n";

fn first_col(rows: &common::Rows) -> Vec<String> {
    rows.iter()
        .map(|r| r.first().cloned().flatten().unwrap_or_default())
        .collect()
}

/// One client session of the torture mix; Err only for failures the proxy
/// must not cause.
fn torture_session(port: u16, k: u64, rng: &mut XorShift, c: &mut Counts) -> Result<(), String> {
    let user = format!("app_user.t{k}");
    let mut conn = RawConn::login(port, &user, DB, Some(POOL_PASSWORD))
        .map_err(|e| format!("{user} login: {e:?}"))?;
    c.sessions += 1;
    let tamper = rng.next_u64().is_multiple_of(10);
    if tamper {
        // Change this session's context every way a client can, in and out
        // of transactions, then leave: later transactions of other clients
        // on the same servers must not see any of it.
        c.tamper_sessions += 1;
        let other = (k + 1 + rng.next_u64() % (TENANTS - 1)) % TENANTS;
        let sql = match rng.next_u64() % 6 {
            0 => format!("SET app.current_tenant_id = 't{other}'"),
            1 => format!("SELECT set_config('app.current_tenant_id', 't{other}', false)"),
            2 => "RESET ROLE".to_string(),
            3 => format!("BEGIN; SET app.current_tenant_id = 't{other}'; ROLLBACK"),
            4 => "RESET ALL".to_string(),
            _ => format!(
                "BEGIN; SELECT set_config('app.current_tenant_id', 't{other}', false); COMMIT"
            ),
        };
        conn.simple_query(&sql)
            .map_err(|e| format!("{user} tamper {sql}: {e:?}"))?;
        c.statements += 1;
        c.transactions += 1;
        if rng.next_u64().is_multiple_of(2) {
            conn.send(&common::terminate_bytes());
        }
        return Ok(());
    }
    let ops = 5 + rng.next_u64() % 20;
    let mut prepared = false;
    for _ in 0..ops {
        match rng.next_u64() % 10 {
            0 => {
                // A named statement, prepared once per session, used in many
                // transactions on whichever server they get; now and then
                // closed and prepared again.
                if !prepared || rng.next_u64().is_multiple_of(8) {
                    let mut out = Vec::new();
                    if prepared {
                        out.extend(close_stmt("items"));
                    }
                    out.extend(parse(
                        "items",
                        "SELECT tenant_id || ' ' || n FROM txn_items WHERE n >= $1 ORDER BY n",
                    ));
                    out.extend(sync());
                    conn.send(&out);
                    read_until_ready(&mut conn).map_err(|e| format!("{user} prepare: {e:?}"))?;
                    prepared = true;
                    c.transactions += 1;
                }
                let mut out = bind("items", &["0"]);
                out.extend(execute());
                out.extend(sync());
                conn.send(&out);
                let rows =
                    read_until_ready(&mut conn).map_err(|e| format!("{user} execute: {e:?}"))?;
                c.check(k, &rows, "prepared");
                c.statements += 1;
                c.transactions += 1;
            }
            1..=2 => {
                let rows = conn
                    .simple_query(ITEMS)
                    .map_err(|e| format!("{user} select: {e:?}"))?;
                c.check(k, &first_col(&rows), "simple");
                c.statements += 1;
                c.transactions += 1;
            }
            3..=4 => {
                let rows = extended(
                    &mut conn,
                    "SELECT tenant_id || ' ' || n FROM txn_items WHERE n >= $1 ORDER BY n",
                    &["0"],
                )
                .map_err(|e| format!("{user} extended: {e:?}"))?;
                c.check(k, &rows, "extended");
                c.statements += 1;
                c.transactions += 1;
            }
            5..=6 => {
                // Explicit transaction, committed or rolled back.
                let commit = rng.next_u64().is_multiple_of(2);
                let v = if commit { 1 } else { -2 };
                let script = [
                    "BEGIN".to_string(),
                    format!("INSERT INTO txn_log (v) VALUES ({v})"),
                    ITEMS.to_string(),
                ];
                let mut rows = Vec::new();
                for (i, sql) in script.iter().enumerate() {
                    let r = conn
                        .simple_query(sql)
                        .map_err(|e| format!("{user} tx {sql}: {e:?}"))?;
                    if i == 2 {
                        rows = first_col(&r);
                    }
                    c.statements += 1;
                }
                c.check(k, &rows, "in transaction");
                conn.simple_query(if commit { "COMMIT" } else { "ROLLBACK" })
                    .map_err(|e| format!("{user} end: {e:?}"))?;
                c.statements += 1;
                c.transactions += 1;
            }
            7 => {
                // An error inside a transaction, then rollback.
                conn.simple_query("BEGIN").map_err(|e| format!("{e:?}"))?;
                let e = conn.simple_query("SELECT 1/0");
                if e.as_ref().map_err(|e| e.code.as_str()) != Err("22012") {
                    c.wrong.push(format!("{user}: 1/0 gave {e:?}"));
                }
                let e = conn.simple_query("SELECT 1");
                if e.as_ref().map_err(|e| e.code.as_str()) != Err("25P02") {
                    c.wrong.push(format!("{user}: aborted tx gave {e:?}"));
                }
                conn.simple_query("ROLLBACK")
                    .map_err(|e| format!("{e:?}"))?;
                c.statements += 4;
                c.transactions += 1;
            }
            8 => {
                // Pipelined: two transactions in one write.
                let mut out = common::query_bytes(ITEMS);
                out.extend(common::query_bytes(
                    "SELECT current_setting('app.current_tenant_id')",
                ));
                conn.send(&out);
                let a = conn.read_query_result().map_err(|e| format!("{e:?}"))?;
                let b = conn.read_query_result().map_err(|e| format!("{e:?}"))?;
                c.check(k, &first_col(&a), "pipelined");
                let t = first_col(&b);
                if t != [format!("t{k}")] {
                    c.foreign_rows += 1;
                    c.wrong.push(format!("{user}: context {t:?}"));
                }
                c.statements += 2;
                c.transactions += 2;
            }
            _ => {
                // Abandoned: a transaction left open when the client goes.
                conn.simple_query("BEGIN").map_err(|e| format!("{e:?}"))?;
                conn.simple_query("INSERT INTO txn_log (v) VALUES (-1)")
                    .map_err(|e| format!("{e:?}"))?;
                c.statements += 2;
                c.transactions += 1;
                return Ok(()); // dropped without Terminate
            }
        }
    }
    conn.send(&common::terminate_bytes());
    Ok(())
}

/// 200 clients over 20 tenants on 4 servers: a seeded mix of simple,
/// extended and named prepared statements, transactions committed, rolled back, failed and
/// abandoned, pipelining, and sessions that tamper with their context;
/// every row checked against the client's tenant.
fn txn_torture(ctx: &Ctx) {
    torture_setup(ctx);
    let per_client: u64 = std::env::var("PGVPD_TXN_TORTURE_TX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let p = txn_proxy(
        ctx,
        "pool_size = 4\npool_checkout_timeout = 120\nlog_level = info\n\
         max_client_conn = 1000\nworkers = 2",
    );
    let t0 = std::time::Instant::now();
    let port = p.port;
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || -> Result<Counts, String> {
                let k = i % TENANTS;
                let mut rng = XorShift::new(0x7a5e_0000 + i);
                let mut c = Counts::default();
                while c.transactions < per_client {
                    torture_session(port, k, &mut rng, &mut c)?;
                }
                Ok(c)
            })
        })
        .collect();
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => total.add(c),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("client thread panicked".into()),
        }
    }
    println!(
        "txn torture: {} transactions, {} statements in {} sessions ({} tampering), \
         {} rows checked, {} foreign rows, {} wrong answers, {:.1} s",
        total.transactions,
        total.statements,
        total.sessions,
        total.tamper_sessions,
        total.rows_checked,
        total.foreign_rows,
        total.wrong.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "client failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        total.foreign_rows,
        0,
        "FOREIGN ROWS: {:?}",
        &total.wrong[..total.wrong.len().min(10)]
    );
    assert!(
        total.wrong.is_empty(),
        "wrong answers: {:?}",
        &total.wrong[..total.wrong.len().min(10)]
    );
    assert!(total.transactions >= 200 * per_client && total.rows_checked > 0);
    assert_eq!(
        ctx.cluster.sql("SELECT count(*) FROM txn_log WHERE v < 0"),
        "0",
        "a rolled-back or abandoned transaction was committed"
    );
    // The pool is whole: at most four app_user backends.
    assert_app_backends_at_most(ctx, 4);
    let log = p.log();
    assert!(
        !log.contains("event=connection_panic"),
        "a connection panicked"
    );
    p.assert_alive();
}
