//! The four session timeouts (issue 7) end to end, against a real
//! PostgreSQL, in passthrough and in the pool modes: `query_timeout` (and its
//! pgvpd 1.0 name `tenant_query_timeout`), `client_idle_timeout`,
//! `idle_transaction_timeout`, `session_lifetime`. Same runner and cluster
//! as `integration`.
//!
//! Waits are generous (seconds) and bounds are loose: what is checked is
//! what happened (SQLSTATEs, messages, the session going on, the pooled
//! server's state), not how fast.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::pooled::{POOL_PASSWORD, pooled_proxy};
use common::runner::{self, Case};
use common::{Ctx, ErrorInfo, Outcome, Proxy, RawConn, password_bytes, query_bytes};

const CASES: &[Case] = &[
    (
        "query_timeout_cancels_and_session_goes_on",
        query_timeout_cancels,
    ),
    (
        "tenant_query_timeout_is_an_alias",
        tenant_query_timeout_alias,
    ),
    (
        "query_timeout_alias_conflict_refused",
        alias_conflict_refused,
    ),
    (
        "query_timeout_counts_pipelined_first_query",
        pipelined_first_query_is_timed,
    ),
    (
        "client_idle_timeout_ends_idle_sessions",
        client_idle_timeout,
    ),
    (
        "idle_transaction_timeout_rolls_back",
        idle_transaction_timeout,
    ),
    ("session_lifetime_ends_at_an_idle_point", session_lifetime),
    ("bypass_sessions_have_no_timeouts", bypass_untouched),
];

fn main() {
    runner::run(CASES);
}

/// The modes every case runs in: passthrough, then the pool modes.
const MODES: [&str; 3] = ["none", "transaction", "session"];

/// A proxy in `mode` (pool modes: one server, so reuse is visible).
fn proxy(ctx: &Ctx, mode: &str, conf: &str) -> Proxy {
    match mode {
        "none" => ctx.proxy(conf),
        m => pooled_proxy(ctx, m, &format!("pool_size = 1\n{conf}")),
    }
}

fn login(p: &Proxy, mode: &str, tenant: &str) -> RawConn {
    let pw = if mode == "none" {
        APP_PASSWORD
    } else {
        POOL_PASSWORD
    };
    RawConn::login(p.port, &format!("app_user.{tenant}"), DB, Some(pw))
        .unwrap_or_else(|e| panic!("{mode}: login as {tenant}: {e:?}"))
}

#[track_caller]
fn assert_error(e: &ErrorInfo, code: &str, what: &str) {
    assert_eq!(e.code, code, "{what}: {e:?}");
    assert!(
        e.message.contains("timeout"),
        "{what}: the message names the timeout: {e:?}"
    );
}

/// Waits (≤ `within`) for the FATAL a timeout sends, then for the close.
#[track_caller]
fn expect_fatal(c: &mut RawConn, code: &str, within: Duration, what: &str) -> ErrorInfo {
    match c.wait_error_or_eof(within) {
        Outcome::Error(e) => {
            assert_error(&e, code, what);
            assert_eq!(e.severity, "FATAL", "{what}: {e:?}");
            assert_eq!(
                c.wait_error_or_eof(Duration::from_secs(10)),
                Outcome::Eof,
                "{what}: closed after the FATAL"
            );
            e
        }
        other => panic!("{what}: expected FATAL {code}, got {other:?}"),
    }
}

fn one(c: &mut RawConn, sql: &str) -> String {
    c.query_one(sql).unwrap_or_default()
}

/// A query that would run 30 s: with query_timeout = 1 it is cancelled
/// (57014, reworded to name the timeout), long before it could finish, and
/// the same connection goes on with its tenant context.
fn check_cancelled_and_alive(c: &mut RawConn, tenant: &str, what: &str) {
    c.set_read_timeout(Duration::from_secs(40));
    for round in 0..2 {
        let started = Instant::now();
        let e = c
            .simple_query("SELECT pg_sleep(30)")
            .expect_err("pg_sleep(30) must be cancelled");
        assert_error(&e, "57014", what);
        assert_eq!(e.severity, "ERROR", "{what}: {e:?}");
        assert!(e.message.contains("query timeout"), "{what}: {e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{what}: round {round}: the cancel did not end the query ({:?})",
            started.elapsed()
        );
        assert_eq!(one(c, "SELECT 1"), "1", "{what}: the session goes on");
        assert_eq!(
            one(c, "SELECT current_setting('app.current_tenant_id')"),
            tenant,
            "{what}: same tenant context"
        );
    }
    // A transaction survives its cancelled statement as a failed one.
    c.simple_query("BEGIN").expect("BEGIN");
    let e = c
        .simple_query("SELECT pg_sleep(30)")
        .expect_err("cancelled inside a transaction");
    assert_error(&e, "57014", what);
    let e = c
        .simple_query("SELECT 1")
        .expect_err("the transaction is aborted");
    assert_eq!(e.code, "25P02", "{what}: {e:?}");
    c.simple_query("ROLLBACK").expect("ROLLBACK");
    assert_eq!(one(c, "SELECT 2"), "2", "{what}");
}

fn query_timeout_cancels(ctx: &Ctx) {
    for mode in MODES {
        let p = proxy(ctx, mode, "query_timeout = 1");
        let mut c = login(&p, mode, "tenant_a");
        check_cancelled_and_alive(&mut c, "tenant_a", mode);
        // Pool modes: the cancelled server is still good for another tenant.
        if mode != "none" {
            drop(c);
            let mut b = login(&p, mode, "tenant_b");
            assert_eq!(
                one(&mut b, "SELECT current_setting('app.current_tenant_id')"),
                "tenant_b",
                "{mode}"
            );
            assert_eq!(
                one(&mut b, "SELECT now() = statement_timestamp()"),
                "t",
                "{mode}: no transaction left open"
            );
        }
        let log = p.log();
        assert!(
            log.contains("query_cancel_delivered"),
            "{mode}: the cancel connection was answered: {}",
            p.log_tail(20)
        );
        p.assert_alive();
    }
}

fn tenant_query_timeout_alias(ctx: &Ctx) {
    for mode in ["none", "transaction"] {
        let p = proxy(ctx, mode, "tenant_query_timeout = 1");
        let mut c = login(&p, mode, "tenant_b");
        check_cancelled_and_alive(&mut c, "tenant_b", mode);
        p.assert_alive();
    }
}

/// Both names with different values: a config error naming both keys. The
/// same value twice is fine.
fn alias_conflict_refused(ctx: &Ctx) {
    let bin = common::proxy_binary();
    let dir = ctx.cluster.subdir("alias");
    let run = |conf: &str| {
        let path = dir.join("pgvpd.conf");
        std::fs::write(&path, conf).unwrap();
        std::process::Command::new(&bin)
            .args(["--config", path.to_str().unwrap(), "--check-config"])
            .current_dir(&dir)
            .env_remove("PGVPD_QUERY_TIMEOUT")
            .env_remove("PGVPD_TENANT_QUERY_TIMEOUT")
            .output()
            .expect("run pgvpd")
    };
    let out = run("query_timeout = 5\ntenant_query_timeout = 3\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("tenant_query_timeout") && stderr.contains("query_timeout (5s)"),
        "{stderr}"
    );
    let out = run("query_timeout = 5\ntenant_query_timeout = 5\n");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("query_timeout = 5"), "{stdout}");
}

/// Pool modes: a query pipelined behind the password, before the session's
/// first ReadyForQuery, is counted and timed like any other.
fn pipelined_first_query_is_timed(ctx: &Ctx) {
    for mode in ["session", "transaction"] {
        let p = pooled_proxy(
            ctx,
            mode,
            "pool_size = 1\nquery_timeout = 1\npool_auth_method = cleartext",
        );
        let mut c = RawConn::connect(p.port);
        c.set_read_timeout(Duration::from_secs(40));
        c.startup(Some("app_user.tenant_a"), DB, &[]);
        let (t, body) = c.read_message().expect("authentication request");
        assert_eq!((t, &body[..4]), (b'R', &3i32.to_be_bytes()[..]), "{mode}");
        c.send(
            &[
                password_bytes(POOL_PASSWORD),
                query_bytes("SELECT pg_sleep(30)"),
            ]
            .concat(),
        );
        let mut ready = 0;
        let err = loop {
            let (t, body) = c.read_message().expect("an answer");
            match t {
                b'Z' => ready += 1,
                b'E' => break common::parse_error(&body),
                _ => {}
            }
        };
        assert_eq!(ready, 1, "{mode}: the login's ReadyForQuery came first");
        assert_error(&err, "57014", mode);
        let (t, _) = c.read_message().expect("ReadyForQuery");
        assert_eq!(t, b'Z', "{mode}");
        assert_eq!(one(&mut c, "SELECT 1"), "1", "{mode}");
        p.assert_alive();
    }
}

fn client_idle_timeout(ctx: &Ctx) {
    for mode in MODES {
        let p = proxy(ctx, mode, "client_idle_timeout = 1");
        let mut a = login(&p, mode, "tenant_a");
        let pid = one(&mut a, "SELECT pg_backend_pid()");
        expect_fatal(&mut a, "57P05", Duration::from_secs(15), mode);

        // A client inside a transaction is not idle "outside a transaction".
        let mut b = login(&p, mode, "tenant_b");
        if mode != "none" {
            assert_eq!(
                one(&mut b, "SELECT pg_backend_pid()"),
                pid,
                "{mode}: the idle client's server went back to the pool"
            );
        }
        b.simple_query("BEGIN").expect("BEGIN");
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            one(&mut b, "SELECT current_setting('app.current_tenant_id')"),
            "tenant_b",
            "{mode}: alive after 3 s idle in a transaction"
        );
        b.simple_query("COMMIT").expect("COMMIT");
        // Outside the transaction again: idle, so ended.
        expect_fatal(&mut b, "57P05", Duration::from_secs(15), mode);
        p.assert_alive();
    }
}

fn idle_transaction_timeout(ctx: &Ctx) {
    for mode in MODES {
        let p = proxy(ctx, mode, "idle_transaction_timeout = 1");
        let mut a = login(&p, mode, "tenant_a");
        let pid = one(&mut a, "SELECT pg_backend_pid()");
        // Idle outside a transaction is fine.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(one(&mut a, "SELECT 1"), "1", "{mode}");
        a.simple_query("BEGIN").expect("BEGIN");
        a.simple_query("SELECT set_config('app.marker', 'from-a', true)")
            .expect("transaction-local setting");
        expect_fatal(&mut a, "25P03", Duration::from_secs(15), mode);

        let mut b = login(&p, mode, "tenant_b");
        if mode == "none" {
            // Passthrough: the server connection was closed with the client.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let gone = ctx.cluster.sql(&format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
                ));
                if gone == "0" {
                    break;
                }
                assert!(Instant::now() < deadline, "backend {pid} still there");
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            assert_eq!(
                one(&mut b, "SELECT pg_backend_pid()"),
                pid,
                "{mode}: the server was rolled back and reused"
            );
        }
        assert_eq!(
            one(&mut b, "SELECT now() = statement_timestamp()"),
            "t",
            "{mode}: the next client is not inside the old transaction"
        );
        assert_eq!(
            one(
                &mut b,
                "SELECT coalesce(current_setting('app.marker', true), '')"
            ),
            "",
            "{mode}: nothing of the rolled-back transaction"
        );
        assert_eq!(
            one(&mut b, "SELECT current_setting('app.current_tenant_id')"),
            "tenant_b",
            "{mode}"
        );
        p.assert_alive();
    }
}

fn session_lifetime(ctx: &Ctx) {
    for mode in MODES {
        let p = proxy(ctx, mode, "session_lifetime = 2");
        // A busy session: short queries until the proxy ends it between two.
        let mut a = login(&p, mode, "tenant_a");
        let started = Instant::now();
        let mut queries = 0;
        let e = loop {
            match a.simple_query("SELECT 1") {
                Ok(rows) => assert_eq!(rows.len(), 1, "{mode}"),
                // The lifetime ended right between the wait and this query.
                Err(e) if e.code == "57P01" => break e,
                Err(e) => panic!("{mode}: query {queries}: {e:?}"),
            }
            queries += 1;
            match a.wait_error_or_eof(Duration::from_millis(200)) {
                Outcome::Timeout => {}
                Outcome::Error(e) => break e,
                other => panic!("{mode}: {other:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{mode}: still alive after 30 s"
            );
        };
        assert_error(&e, "57P01", mode);
        assert_eq!(e.severity, "FATAL", "{mode}");
        assert!(e.message.contains("session_lifetime"), "{mode}: {e:?}");
        assert!(queries > 1, "{mode}: the session ran before its lifetime");
        assert_eq!(a.wait_error_or_eof(Duration::from_secs(10)), Outcome::Eof);

        // A transaction is never cut: past the lifetime it goes on, and the
        // session ends once it is over.
        let mut b = login(&p, mode, "tenant_b");
        b.simple_query("BEGIN").expect("BEGIN");
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            one(&mut b, "SELECT current_setting('app.current_tenant_id')"),
            "tenant_b",
            "{mode}: the transaction goes on past the lifetime"
        );
        b.simple_query("COMMIT").expect("COMMIT");
        expect_fatal(&mut b, "57P01", Duration::from_secs(10), mode);
        if mode != "none" {
            // The server went back cleanly.
            let mut c = login(&p, mode, "tenant_a");
            assert_eq!(one(&mut c, "SELECT 1"), "1", "{mode}");
        }
        p.assert_alive();
    }
}

/// Superuser-bypass sessions are relayed unparsed: no timeout applies.
fn bypass_untouched(ctx: &Ctx) {
    let p = ctx.proxy("client_idle_timeout = 1\nquery_timeout = 1\nsession_lifetime = 1");
    let mut c = RawConn::login(p.port, "postgres", DB, None).expect("bypass login");
    std::thread::sleep(Duration::from_secs(3));
    c.set_read_timeout(Duration::from_secs(20));
    assert_eq!(
        c.query_one("SELECT pg_sleep(2.5)::text || 'done'")
            .as_deref(),
        Some("done"),
        "not cancelled, not ended"
    );
    p.assert_alive();
}
