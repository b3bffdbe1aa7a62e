//! End-to-end tests: the `pgvpd` binary in passthrough mode in front of a
//! throw-away PostgreSQL, driven by psql, pgbench and a raw protocol client.
//!
//! `cargo test --test integration` runs all cases; `-- cancel` only those whose
//! name contains "cancel". See `tests/common/runner.rs` for the output format.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fixtures::{
    APP_PASSWORD, BYPASS_PASSWORD, DASH_PASSWORD, DB, MD5_PASSWORD, PW_PASSWORD, UUID_A, UUID_B,
};
use common::runner::{self, Case};
use common::{
    Ctx, ErrorInfo, Outcome, Proxy, RawConn, Rows, XorShift, cancel_request_bytes,
    gssenc_request_bytes, pgbench, query_bytes, run_tool, ssl_request_bytes, startup_bytes,
};

const CASES: &[Case] = &[
    ("tenant_isolation", tenant_isolation),
    ("context_value_visible", context_value_visible),
    ("bypass_sees_all", bypass_sees_all),
    ("uuid_and_schema_tables", uuid_and_schema_tables),
    ("no_separator", no_separator),
    ("empty_role_or_context", empty_role_or_context),
    ("no_user", no_user),
    ("multi_context", multi_context),
    ("auth_methods", auth_methods),
    ("wrong_password", wrong_password),
    ("quoted_role", quoted_role),
    ("bypassrls_refused", bypassrls_refused),
    (
        "superuser_with_tenant_refused",
        superuser_with_tenant_refused,
    ),
    ("set_role_override", set_role_override),
    ("cancel", cancel),
    ("pgbench_modes", pgbench_modes),
    ("connect_close_no_cpu_burn", connect_close_no_cpu_burn),
    ("malformed_lengths", malformed_lengths),
    ("pipelined_query_has_context", pipelined_query_has_context),
    ("ssl_and_gss_refused", ssl_and_gss_refused),
    (
        "bytes_after_sslrequest_closed",
        bytes_after_sslrequest_closed,
    ),
    (
        "handshake_timeout_names_phase",
        handshake_timeout_names_phase,
    ),
    ("concurrent_300", concurrent_300),
    ("backend_terminated", backend_terminated),
    ("sigterm_exits", sigterm_exits),
    ("sigterm_drains_open_sessions", sigterm_drains_open_sessions),
    (
        "fd_exhaustion_pauses_accepting",
        fd_exhaustion_pauses_accepting,
    ),
    ("passwords_never_logged", passwords_never_logged),
    ("two_workers", two_workers),
    ("cli_config_errors_and_check", cli_config_errors_and_check),
    ("sql_kit_direct", sql_kit_direct),
    ("setup_sql_idempotent", setup_sql_idempotent),
];

fn main() {
    runner::run(CASES);
}

// ---------------------------------------------------------------- helpers

const TENANT_A_NAMES: &str = "Alice Corp\nAlice LLC";
const TENANT_B_NAMES: &str = "Bob Inc\nBob Ltd";

/// psql through the proxy; panics unless it succeeds; returns trimmed stdout.
fn q(ctx: &Ctx, p: &Proxy, user: &str, pw: Option<&str>, sql: &str) -> String {
    ctx.psql(p.port, user, pw, sql)
        .expect_ok(&format!("psql as {user}: {sql}"))
}

/// RawConn login that must be refused with a FATAL `code`, followed by EOF.
fn expect_refused(p: &Proxy, user: &str, password: Option<&str>, code: &str) -> ErrorInfo {
    let mut c = RawConn::connect(p.port);
    c.startup(Some(user), DB, &[]);
    let err = match c.auth_trust_or_cleartext(password) {
        Ok(()) => panic!("{user}: login succeeded, expected FATAL {code}"),
        Err(e) => e,
    };
    assert_eq!(err.code, code, "{user}: wrong SQLSTATE: {err:?}");
    assert_eq!(err.severity, "FATAL", "{user}: {err:?}");
    assert_eq!(
        c.wait_error_or_eof(Duration::from_secs(5)),
        Outcome::Eof,
        "{user}: connection must be closed after the FATAL error"
    );
    err
}

fn rows(v: &[&[&str]]) -> Rows {
    v.iter()
        .map(|r| r.iter().map(|f| Some(f.to_string())).collect())
        .collect()
}

// ---------------------------------------------------------------- cases

fn tenant_isolation(ctx: &Ctx) {
    let p = ctx.proxy("");
    let sql = "SELECT name FROM tenants ORDER BY name";
    assert_eq!(
        q(ctx, &p, "app_user.tenant_a", Some(APP_PASSWORD), sql),
        TENANT_A_NAMES
    );
    assert_eq!(
        q(ctx, &p, "app_user.tenant_b", Some(APP_PASSWORD), sql),
        TENANT_B_NAMES
    );
    // An explicit filter for the other tenant still sees nothing.
    let other = "SELECT count(*) FROM tenants WHERE tenant_id = 'tenant_b'";
    assert_eq!(
        q(ctx, &p, "app_user.tenant_a", Some(APP_PASSWORD), other),
        "0"
    );
    p.assert_alive();
}

fn context_value_visible(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = q(
        ctx,
        &p,
        "app_user.tenant_a",
        Some(APP_PASSWORD),
        "SELECT current_setting('app.current_tenant_id'), current_user, current_tenant_id()",
    );
    assert_eq!(out, "tenant_a|app_user|tenant_a");
    p.assert_alive();
}

fn bypass_sees_all(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = q(
        ctx,
        &p,
        "postgres",
        None,
        "SELECT count(*), coalesce(current_setting('app.current_tenant_id', true), '<unset>'), \
         current_user FROM tenants",
    );
    // Relayed untouched: superuser sees all rows, no context was set.
    assert_eq!(out, "4|<unset>|postgres");
    p.assert_alive();
}

fn uuid_and_schema_tables(ctx: &Ctx) {
    let p = ctx.proxy("");
    let docs = "SELECT title FROM docs ORDER BY title";
    let ua = format!("app_user.{UUID_A}");
    let ub = format!("app_user.{UUID_B}");
    assert_eq!(
        q(ctx, &p, &ua, Some(APP_PASSWORD), docs),
        "A plan\nA report"
    );
    assert_eq!(q(ctx, &p, &ub, Some(APP_PASSWORD), docs), "B memo");
    // Upper-case spelling of the same uuid is the same tenant.
    let ua_upper = format!("app_user.{}", UUID_A.to_uppercase());
    assert_eq!(
        q(
            ctx,
            &p,
            &ua_upper,
            Some(APP_PASSWORD),
            "SELECT count(*) FROM docs"
        ),
        "2"
    );
    // Malformed uuid context: no rows and no error (fail closed).
    for bad in ["app_user.not-a-uuid", "app_user.tenant_a", "app_user.1111"] {
        assert_eq!(
            q(
                ctx,
                &p,
                bad,
                Some(APP_PASSWORD),
                "SELECT count(*) FROM docs"
            ),
            "0",
            "{bad}"
        );
    }
    let inv = "SELECT amount FROM billing.invoices ORDER BY amount";
    assert_eq!(
        q(ctx, &p, "app_user.tenant_a", Some(APP_PASSWORD), inv),
        "100"
    );
    assert_eq!(
        q(ctx, &p, "app_user.tenant_b", Some(APP_PASSWORD), inv),
        "200\n300"
    );
    p.assert_alive();
}

fn no_separator(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = ctx.psql(p.port, "baduser", Some(APP_PASSWORD), "SELECT 1");
    assert!(!out.success(), "baduser must be refused: {out:?}");
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("separated") && err.contains("context"),
        "stderr should explain the missing separator: {}",
        out.stderr
    );
    let e = expect_refused(&p, "baduser", None, "28000");
    assert!(e.message.contains("separated"), "{e:?}");
    p.assert_alive();
}

fn empty_role_or_context(ctx: &Ctx) {
    let p = ctx.proxy("");
    for user in ["app_user.", ".acme", "."] {
        let e = expect_refused(&p, user, None, "28000");
        assert!(e.message.contains("empty"), "{user}: {e:?}");
    }
    p.assert_alive();
}

fn no_user(ctx: &Ctx) {
    let p = ctx.proxy("");
    let mut c = RawConn::connect(p.port);
    c.startup(None, DB, &[]);
    let e = c
        .auth_trust_or_cleartext(None)
        .expect_err("startup without user must be refused");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str()),
        ("FATAL", "08004"),
        "{e:?}"
    );
    assert_eq!(c.wait_error_or_eof(Duration::from_secs(5)), Outcome::Eof);
    p.assert_alive();
}

fn multi_context(ctx: &Ctx) {
    let p = ctx.proxy("context_variables = app.ctx_a,app.ctx_b");
    let sql = "SELECT current_setting('app.ctx_a') || ',' || current_setting('app.ctx_b')";
    for (user, want) in [
        ("app_user.val_a:val_b", "val_a,val_b"),
        ("app_user.val_a:", "val_a,"),
        ("app_user.:val_b", ",val_b"),
    ] {
        assert_eq!(q(ctx, &p, user, Some(APP_PASSWORD), sql), want, "{user}");
    }
    let out = ctx.psql(p.port, "app_user.only_one", Some(APP_PASSWORD), sql);
    assert!(
        !out.success(),
        "one value for two variables must be refused: {out:?}"
    );
    let e = expect_refused(&p, "app_user.only_one", None, "28000");
    assert!(e.message.contains("expected 2"), "{e:?}");
    let e = expect_refused(&p, "app_user.a:b:c", None, "28000");
    assert!(e.message.contains("expected 2"), "{e:?}");
    p.assert_alive();
}

fn auth_methods(ctx: &Ctx) {
    let p = ctx.proxy("");
    let sql = "SELECT string_agg(name, ',' ORDER BY name), current_user FROM tenants";
    let mut failures = Vec::new();
    for (user, pw, role) in [
        ("app_user.tenant_a", Some(APP_PASSWORD), "app_user"), // scram-sha-256
        ("md5_user.tenant_a", Some(MD5_PASSWORD), "md5_user"), // md5
        ("pw_user.tenant_a", Some(PW_PASSWORD), "pw_user"),    // password (cleartext)
        ("trust_user.tenant_a", None, "trust_user"),           // trust
    ] {
        let out = ctx.psql(p.port, user, pw, sql);
        let want = format!("Alice Corp,Alice LLC|{role}");
        if !out.success() || out.out() != want {
            failures.push(format!("psql {user}: want {want:?}, got {out:?}"));
        }
    }
    // The raw client sees the method the server asked for, relayed end to end,
    // except MD5: its hash covers the user name the proxy rewrote, so the proxy
    // asks the client for cleartext (3) and answers the server's MD5 itself.
    for (user, pw, method) in [
        ("pw_user.tenant_a", Some(PW_PASSWORD), 3),
        ("md5_user.tenant_a", Some(MD5_PASSWORD), 3),
        ("trust_user.tenant_a", None, 0),
    ] {
        match RawConn::login(p.port, user, DB, pw) {
            Ok(mut c) => {
                if c.auth_requests.first() != Some(&method) {
                    failures.push(format!("raw {user}: auth requests {:?}", c.auth_requests));
                }
                let n = c.query_one("SELECT count(*) FROM tenants");
                if n.as_deref() != Some("2") {
                    failures.push(format!("raw {user}: count {n:?}"));
                }
            }
            Err(e) => failures.push(format!("raw {user}: login failed {e:?}")),
        }
    }
    p.assert_alive();
    assert!(
        failures.is_empty(),
        "auth failures:\n{}",
        failures.join("\n")
    );
}

fn wrong_password(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = ctx.psql(p.port, "app_user.tenant_a", Some("wrongpass"), "SELECT 1");
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("password authentication failed"),
        "stderr: {}",
        out.stderr
    );
    expect_refused(&p, "pw_user.tenant_a", Some("wrongpass"), "28P01");
    // The right password still works afterwards.
    assert_eq!(
        q(ctx, &p, "pw_user.tenant_a", Some(PW_PASSWORD), "SELECT 1"),
        "1"
    );
    p.assert_alive();
}

fn quoted_role(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = q(
        ctx,
        &p,
        "app-dash.tenant_a",
        Some(DASH_PASSWORD),
        "SELECT current_user, count(*), current_setting('app.current_tenant_id') FROM tenants",
    );
    assert_eq!(out, "app-dash|2|tenant_a");
    p.assert_alive();
}

fn bypassrls_refused(ctx: &Ctx) {
    let p = ctx.proxy("");
    expect_refused(&p, "bypass_user.tenant_a", Some(BYPASS_PASSWORD), "42501");
    let out = ctx.psql(
        p.port,
        "bypass_user.tenant_a",
        Some(BYPASS_PASSWORD),
        "SELECT name FROM tenants",
    );
    assert!(!out.success(), "BYPASSRLS session must be refused: {out:?}");
    assert!(!out.stdout.contains("Bob"), "{out:?}");
    p.assert_alive();
}

fn superuser_with_tenant_refused(ctx: &Ctx) {
    let p = ctx.proxy("");
    expect_refused(&p, "postgres.tenant_a", None, "42501");
    let out = ctx.psql(
        p.port,
        "postgres.tenant_a",
        None,
        "SELECT name FROM tenants",
    );
    assert!(
        !out.success(),
        "superuser tenant session must be refused: {out:?}"
    );
    assert!(!out.stdout.contains("Bob"), "{out:?}");
    p.assert_alive();
}

fn set_role_override(ctx: &Ctx) {
    let p = ctx.proxy("set_role = app_user");
    let out = q(
        ctx,
        &p,
        "trust_user.tenant_a",
        None,
        "SELECT current_user, session_user, count(*) FROM tenants",
    );
    assert_eq!(out, "app_user|trust_user|2");
    p.assert_alive();
}

fn cancel(ctx: &Ctx) {
    let p = ctx.proxy("");
    let mut c = RawConn::login(p.port, "trust_user.tenant_a", DB, None).expect("login");
    let (pid, key) = c.backend_key.expect("BackendKeyData during login");
    c.send_query("SELECT pg_sleep(30)");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut k = RawConn::connect(p.port);
    k.send(&cancel_request_bytes(pid, key));
    let r = c.read_query_result();
    let elapsed = t0.elapsed();
    let e = r.expect_err("pg_sleep(30) must be cancelled");
    assert_eq!(e.code, "57014", "{e:?}");
    assert!(elapsed < Duration::from_secs(1), "cancel took {elapsed:?}");
    // The cancel connection gets no reply and is closed.
    let (bytes, eof) = k.read_raw_until_eof(Duration::from_secs(5));
    assert!(
        eof && bytes.is_empty(),
        "cancel connection: {bytes:?} eof={eof}"
    );
    // The session survives the cancel.
    assert_eq!(
        c.query_one("SELECT current_setting('app.current_tenant_id')")
            .as_deref(),
        Some("tenant_a")
    );
    // A wrong key cancels nothing.
    c.send_query("SELECT pg_sleep(1)");
    let mut k2 = RawConn::connect(p.port);
    k2.send(&cancel_request_bytes(pid, key ^ 0x5a5a_5a5a));
    assert_eq!(
        c.read_query_result().expect("not cancelled"),
        rows(&[&[""]])
    );
    p.assert_alive();
}

fn pgbench_modes(ctx: &Ctx) {
    let cl = &ctx.cluster;
    let port = cl.port.to_string();
    let host = cl.dir.to_string_lossy().to_string();
    let init = run_tool(
        "pgbench",
        &[
            "-i", "-q", "-s", "1", "-h", &host, "-p", &port, "-U", "postgres", DB,
        ],
        &[],
        Duration::from_secs(120),
    );
    assert!(init.success(), "pgbench -i: {init:?}");
    cl.sql(
        "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history \
         TO app_user",
    );
    let p = ctx.proxy("");
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(
            p.port,
            "app_user.tenant_a",
            Some(APP_PASSWORD),
            DB,
            &["-n", "-S", "-T", "3", "-c", "4", "-M", mode],
        );
        assert!(
            out.success(),
            "pgbench -M {mode}: {out:?}\n{}",
            p.log_tail(20)
        );
        let processed = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("-M {mode}: no transaction count in {}", out.stdout));
        assert!(processed > 0, "-M {mode}: 0 transactions");
        if let Some(l) = out
            .stdout
            .lines()
            .find(|l| l.starts_with("number of failed transactions"))
        {
            assert!(l.contains(": 0 "), "-M {mode}: {l}");
        }
        assert!(
            !out.stderr.contains("error") && !out.stderr.contains("aborted"),
            "-M {mode}: {}",
            out.stderr
        );
    }
    p.assert_alive();
}

fn connect_close_no_cpu_burn(ctx: &Ctx) {
    let p = ctx.proxy("");
    let before = p.cpu_time();
    for _ in 0..50 {
        drop(TcpStream::connect(("127.0.0.1", p.port)).expect("connect"));
    }
    let startup = startup_bytes(&[("user", "trust_user.tenant_a"), ("database", DB)]);
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
        let _ = s.write_all(&startup[..6]);
    }
    std::thread::sleep(Duration::from_secs(2));
    let used = p.cpu_time().saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "proxy used {used:?} CPU for 70 closed connections (busy loop on EOF?)"
    );
    assert_eq!(
        q(
            ctx,
            &p,
            "app_user.tenant_a",
            Some(APP_PASSWORD),
            "SELECT count(*) FROM tenants"
        ),
        "2"
    );
    p.assert_alive();
}

fn malformed_lengths(ctx: &Ctx) {
    let p = ctx.proxy("");
    let port = p.port;
    // A psql session that spans all the malformed connections.
    let bg = std::thread::spawn(move || {
        common::psql(
            port,
            "app_user.tenant_a",
            Some(APP_PASSWORD),
            DB,
            "SELECT count(*) FROM tenants, pg_sleep(1.5)",
        )
    });
    std::thread::sleep(Duration::from_millis(300));

    // Random bytes whose length field matches what is sent (so the packet is
    // complete and only its content can be rejected) and whose protocol code
    // is none of the known ones.
    let mut rng = XorShift::new(0x5eed_1234);
    let garbage = loop {
        let mut g = rng.bytes(64);
        g[..4].copy_from_slice(&64i32.to_be_bytes());
        let code = i32::from_be_bytes([g[4], g[5], g[6], g[7]]);
        if ![196_608, 80_877_102, 80_877_103, 80_877_104].contains(&code) && g[4] != 0 {
            break g;
        }
    };
    let mut big = 10_001i32.to_be_bytes().to_vec();
    big.extend_from_slice(&196_608i32.to_be_bytes());
    big.extend_from_slice(&[b'a'; 100]);
    let mut no_term = Vec::new();
    {
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0trust_user.tenant_a\0database\0postgres\0");
        no_term.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        no_term.extend_from_slice(&body);
    }
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random garbage", garbage),
        ("startup length 4", vec![0, 0, 0, 4]),
        ("startup length 7", vec![0, 0, 0, 7, 0, 3, 0]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0]),
        ("length 10 001", big),
        ("100 000 junk bytes", vec![b'A'; 100_000]),
        ("3.0 startup without terminator", no_term),
    ];
    let mut failures = Vec::new();
    for (what, bytes) in &inputs {
        let mut c = RawConn::connect(p.port);
        let _ = c.try_send(bytes);
        match c.wait_error_or_eof(Duration::from_secs(5)) {
            Outcome::Eof => {}
            Outcome::Error(e) if e.severity == "FATAL" => {}
            other => failures.push(format!("{what}: {other:?}")),
        }
    }
    // After login: a tagged message whose length (2) is below the minimum 4.
    let mut c = RawConn::login(p.port, "trust_user.tenant_a", DB, None).expect("login");
    let _ = c.try_send(&[b'Q', 0, 0, 0, 2]);
    match c.wait_error_or_eof(Duration::from_secs(5)) {
        Outcome::Eof => {}
        Outcome::Error(e) if e.severity == "FATAL" => {}
        other => failures.push(format!("tagged length 2 after login: {other:?}")),
    }

    let out = bg.join().expect("psql thread");
    p.assert_alive();
    assert!(
        failures.is_empty(),
        "inputs that hung or got an odd answer:\n{}",
        failures.join("\n")
    );
    assert_eq!(out.expect_ok("parallel psql session"), "2");
    assert_eq!(
        q(
            ctx,
            &p,
            "app_user.tenant_b",
            Some(APP_PASSWORD),
            "SELECT count(*) FROM tenants"
        ),
        "2"
    );
}

fn pipelined_query_has_context(ctx: &Ctx) {
    let p = ctx.proxy("");
    let mut c = RawConn::connect(p.port);
    let mut bytes = RawConn::startup_packet(Some("trust_user.tenant_a"), DB, &[]);
    bytes.extend(query_bytes(
        "SELECT current_setting('app.current_tenant_id', true), current_user",
    ));
    bytes.extend(query_bytes("SELECT count(*) FROM tenants"));
    c.user = Some("trust_user.tenant_a".into());
    c.send(&bytes); // one write: startup and both queries
    c.auth_trust_or_cleartext(None).expect("login");
    assert_eq!(
        c.read_query_result().expect("pipelined query 1"),
        rows(&[&["tenant_a", "trust_user"]]),
        "a query pipelined behind the startup packet ran without the tenant context"
    );
    assert_eq!(
        c.read_query_result().expect("pipelined query 2"),
        rows(&[&["2"]])
    );
    p.assert_alive();
}

fn ssl_and_gss_refused(ctx: &Ctx) {
    let p = ctx.proxy("");
    for (what, req) in [
        ("SSLRequest", ssl_request_bytes()),
        ("GSSENCRequest", gssenc_request_bytes()),
    ] {
        let mut c = RawConn::connect(p.port);
        c.send(&req);
        assert_eq!(
            c.read_byte(),
            Some(b'N'),
            "{what} must be answered with a single 'N'"
        );
        c.startup(Some("trust_user.tenant_a"), DB, &[]);
        c.auth_trust_or_cleartext(None)
            .unwrap_or_else(|e| panic!("startup after {what}: {e:?}"));
        assert_eq!(
            c.query_one("SELECT current_setting('app.current_tenant_id')")
                .as_deref(),
            Some("tenant_a"),
            "{what}"
        );
    }
    p.assert_alive();
}

fn bytes_after_sslrequest_closed(ctx: &Ctx) {
    let p = ctx.proxy("");
    let mut c = RawConn::connect(p.port);
    let mut bytes = ssl_request_bytes();
    bytes.extend(startup_bytes(&[
        ("user", "trust_user.tenant_a"),
        ("database", DB),
    ]));
    c.send(&bytes);
    let (got, eof) = c.read_raw_until_eof(Duration::from_secs(5));
    assert!(
        eof,
        "connection must be closed; got {} bytes and no EOF",
        got.len()
    );
    assert!(
        got.is_empty() || got[0] == b'E',
        "expected EOF or an ErrorResponse, got {:?}",
        &got[..got.len().min(16)]
    );
    p.assert_alive();
}

fn handshake_timeout_names_phase(ctx: &Ctx) {
    let p = ctx.proxy("handshake_timeout = 1");
    // Silent client: nothing after connect.
    let mut c = RawConn::connect(p.port);
    let t0 = Instant::now();
    match c.wait_error_or_eof(Duration::from_secs(3)) {
        Outcome::Error(e) => {
            assert_eq!(
                (e.severity.as_str(), e.code.as_str()),
                ("FATAL", "08006"),
                "{e:?}"
            );
            let m = e.message.to_lowercase();
            assert!(m.contains("timeout") && m.contains("startup"), "{e:?}");
        }
        other => panic!(
            "silent client: expected FATAL 08006 within 3 s, got {other:?} after {:?}",
            t0.elapsed()
        ),
    }
    // Client asked for a cleartext password that never answers.
    let mut c = RawConn::connect(p.port);
    c.startup(Some("pw_user.tenant_a"), DB, &[]);
    let (tag, body) = c.read_message().expect("authentication request");
    assert_eq!(tag, b'R');
    assert_eq!(
        &body[..4],
        &3i32.to_be_bytes(),
        "expected AuthenticationCleartextPassword"
    );
    let t0 = Instant::now();
    match c.wait_error_or_eof(Duration::from_secs(3)) {
        Outcome::Error(e) => {
            assert_eq!(e.severity, "FATAL", "{e:?}");
            let m = e.message.to_lowercase();
            assert!(m.contains("timeout") && m.contains("auth"), "{e:?}");
        }
        other => panic!(
            "stalled auth: expected FATAL within 3 s, got {other:?} after {:?}",
            t0.elapsed()
        ),
    }
    p.assert_alive();
}

fn concurrent_300(ctx: &Ctx) {
    const N: usize = 300;
    let p = ctx.proxy("");
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = RawConn::connect(p.port);
        c.set_read_timeout(Duration::from_secs(30));
        c.startup(Some(&format!("trust_user.t{i}")), DB, &[]);
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.auth_trust_or_cleartext(None)
            .unwrap_or_else(|e| panic!("session {i}: login {e:?}"));
    }
    for c in conns.iter_mut() {
        c.send_query("SELECT current_setting('app.current_tenant_id')");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c
            .read_query_result()
            .unwrap_or_else(|e| panic!("session {i}: {e:?}"));
        assert_eq!(
            r,
            rows(&[&[&format!("t{i}")]]),
            "session {i} got another session's context"
        );
    }
    let open = ctx
        .cluster
        .sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'trust_user'");
    // >= : a backend of an earlier case may still be exiting.
    let open: usize = open.parse().expect("count");
    assert!(
        open >= N,
        "only {open} of {N} sessions open after all answered"
    );
    drop(conns);
    p.assert_alive();
}

fn backend_terminated(ctx: &Ctx) {
    let p = ctx.proxy("");
    let app = format!("pgvpd_term_{}", std::process::id());
    let mut c = RawConn::connect(p.port);
    c.startup(
        Some("trust_user.tenant_a"),
        DB,
        &[("application_name", &app)],
    );
    c.auth_trust_or_cleartext(None).expect("login");
    c.send_query("SELECT pg_sleep(20)");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = ctx.cluster.sql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{app}' AND query LIKE '%pg_sleep%'"
        ));
        if n == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend with application_name {app} not found"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    match c.wait_error_or_eof(Duration::from_secs(5)) {
        Outcome::Error(e) => assert_eq!(e.code, "57P01", "{e:?}"),
        other => panic!("expected ErrorResponse 57P01, got {other:?}"),
    }
    assert_eq!(c.wait_error_or_eof(Duration::from_secs(5)), Outcome::Eof);
    p.assert_alive();
    assert_eq!(
        q(
            ctx,
            &p,
            "app_user.tenant_a",
            Some(APP_PASSWORD),
            "SELECT count(*) FROM tenants"
        ),
        "2"
    );
}

fn sigterm_exits(ctx: &Ctx) {
    let p = ctx.proxy("");
    assert_eq!(q(ctx, &p, "trust_user.tenant_a", None, "SELECT 1"), "1");
    let st = p
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5 s of SIGTERM\n{}", p.log_tail(20)));
    assert!(st.success(), "exit status after SIGTERM: {st}");
}

/// SIGTERM: the listener closes at once, an open session keeps working until
/// it ends or `shutdown_timeout` passes, then the proxy exits cleanly.
fn sigterm_drains_open_sessions(ctx: &Ctx) {
    let p = ctx.proxy("shutdown_timeout = 3");
    let mut c = RawConn::login(p.port, "trust_user.tenant_a", DB, None).expect("login");
    // SAFETY: plain kill(2) on the proxy child we started.
    let rc = unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let t0 = Instant::now();
    // The listener goes away: new clients cannot get in.
    let deadline = t0 + Duration::from_secs(2);
    loop {
        match TcpStream::connect(("127.0.0.1", p.port)) {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => panic!("still accepting 2 s after SIGTERM"),
        }
    }
    // The open session is still served while draining.
    assert_eq!(
        c.query_one("SELECT count(*) FROM tenants").as_deref(),
        Some("2")
    );
    assert!(p.is_alive(), "exited while a session was open");
    // After shutdown_timeout the remaining session is closed and the proxy exits 0.
    let st = p
        .signal_and_wait(0, Duration::from_secs(8))
        .unwrap_or_else(|| panic!("no exit after the drain timeout\n{}", p.log_tail(20)));
    assert!(st.success(), "exit status: {st}");
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "exited before shutdown_timeout with a session open: {:?}",
        t0.elapsed()
    );
    assert_eq!(c.wait_error_or_eof(Duration::from_secs(2)), Outcome::Eof);
}

/// Out of file descriptors (EMFILE): accepting pauses instead of the process
/// exiting (pgvpd 1.0 §11 R4), and resumes once descriptors are free.
fn fd_exhaustion_pauses_accepting(ctx: &Ctx) {
    let p = ctx.proxy("");
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &p.pid().to_string(), "--nofile=40:40"])
        .output()
        .expect("run prlimit (util-linux)");
    assert!(out.status.success(), "prlimit: {out:?}");
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", p.port)) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    p.assert_alive();
    let log = p.log();
    assert!(
        log.contains("event=accept_paused"),
        "no accept pause logged:\n{}",
        p.log_tail(20)
    );
    drop(held);
    // Descriptors free again: a normal tenant login works.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ctx.psql(
            p.port,
            "trust_user.tenant_a",
            None,
            "SELECT count(*) FROM tenants",
        );
        if out.success() {
            assert_eq!(out.out(), "2");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after EMFILE: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    p.assert_alive();
}

/// Even at log_level = trace, no password appears in the log (SCRAM, MD5
/// via the cleartext step, and plain password logins, good and bad).
fn passwords_never_logged(ctx: &Ctx) {
    let p = ctx.proxy("log_level = trace");
    let sql = "SELECT 1";
    assert_eq!(
        q(ctx, &p, "app_user.tenant_a", Some(APP_PASSWORD), sql),
        "1"
    );
    assert_eq!(
        q(ctx, &p, "md5_user.tenant_a", Some(MD5_PASSWORD), sql),
        "1"
    );
    assert_eq!(q(ctx, &p, "pw_user.tenant_a", Some(PW_PASSWORD), sql), "1");
    let bad = "Wr0ngSecretValue";
    assert!(
        !ctx.psql(p.port, "pw_user.tenant_a", Some(bad), sql)
            .success()
    );
    let log = p.log();
    assert!(
        log.contains("event=session_start"),
        "trace log is empty?\n{log}"
    );
    for pw in [APP_PASSWORD, MD5_PASSWORD, PW_PASSWORD, bad] {
        assert!(!log.contains(pw), "password {pw:?} found in the log");
    }
}

/// `workers = 2`: each session stays on the worker that accepted it, every
/// session gets its own context, and `max_client_conn` holds across workers.
fn two_workers(ctx: &Ctx) {
    let p = ctx.proxy("workers = 2\nmax_client_conn = 40");
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let port = p.port;
            std::thread::spawn(move || {
                let mut conns: Vec<(usize, RawConn)> = (0..4)
                    .map(|i| {
                        let n = w * 4 + i;
                        let c = RawConn::login(port, &format!("trust_user.w{n}"), DB, None)
                            .unwrap_or_else(|e| panic!("login {n}: {e:?}"));
                        (n, c)
                    })
                    .collect();
                for _ in 0..20 {
                    for (n, c) in conns.iter_mut() {
                        let v = c.query_one("SELECT current_setting('app.current_tenant_id')");
                        assert_eq!(v.as_deref(), Some(format!("w{n}").as_str()));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    // max_client_conn = 40 across both workers: the 41st concurrent client is refused.
    let mut held: Vec<RawConn> = (0..40)
        .map(|i| RawConn::login(p.port, &format!("trust_user.m{i}"), DB, None).expect("login"))
        .collect();
    match RawConn::login(p.port, "trust_user.over", DB, None) {
        Err(e) => assert_eq!(e.code, "53300", "{e:?}"),
        Ok(_) => panic!("41st client admitted with max_client_conn = 40"),
    }
    held.truncate(0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(RawConn::login(p.port, "trust_user.again", DB, None).is_ok());
    let log = p.log();
    assert!(log.contains("workers=2"), "{}", p.log_tail(5));
    p.assert_alive();
}

/// The binary's command line: strict config errors name file, line and key;
/// `--check-config` prints the effective config with secrets redacted.
fn cli_config_errors_and_check(ctx: &Ctx) {
    let bin = common::proxy_binary();
    let dir = ctx.cluster.subdir("cli");
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .current_dir(&dir)
            .env_remove("PGVPD_PORT")
            .output()
            .expect("run pgvpd")
    };
    let good = dir.join("good.conf");
    std::fs::write(
        &good,
        "port = 7432   # trailing comment\nupstream_password = 's3cret-pw'\n",
    )
    .unwrap();
    let out = run(&["--config", good.to_str().unwrap(), "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("port = 7432"), "{stdout}");
    assert!(stdout.contains("upstream_password = ********"), "{stdout}");
    assert!(!stdout.contains("s3cret-pw"), "secret printed: {stdout}");

    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "# comment\nlisten_host = 127.0.0.1\nport = abc\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap(), "--check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.conf:3") && stderr.contains("port"),
        "{stderr}"
    );

    let unknown = dir.join("unknown.conf");
    std::fs::write(&unknown, "prot = 6432\n").unwrap();
    let out = run(&["--config", unknown.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(":1") && stderr.contains("prot"), "{stderr}");

    let out = run(&["--config", "/nonexistent/pgvpd.conf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pgvpd.conf"));

    let out = run(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pgvpd "));
    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("--check-config") && help.contains("PGVPD_PORT"),
        "{help}"
    );
}

/// The SQL kit straight on the cluster (no proxy).
fn sql_kit_direct(ctx: &Ctx) {
    let cl = &ctx.cluster;
    let as_app = |ctxval: Option<&str>, sql: &str| {
        let set = ctxval.map_or(String::new(), |v| {
            format!("SET app.current_tenant_id = '{v}';")
        });
        cl.sql(&format!("SET ROLE app_user; {set} {sql}"))
    };
    assert_eq!(
        as_app(Some("tenant_a"), "SELECT count(*) FROM tenants"),
        "2"
    );
    assert_eq!(
        as_app(None, "SELECT count(*) FROM tenants"),
        "0",
        "unset context: no rows"
    );
    assert_eq!(
        as_app(Some(""), "SELECT count(*) FROM tenants"),
        "0",
        "empty context: no rows"
    );
    assert_eq!(as_app(Some(""), "SELECT current_tenant_id() IS NULL"), "t");
    // TO PUBLIC: another role (a set_role target) is covered too.
    assert_eq!(
        cl.sql("SET ROLE trust_user; SET app.current_tenant_id = 'tenant_b'; SELECT count(*) FROM tenants"),
        "2"
    );
    // WITH CHECK: cannot write rows of another tenant.
    let err = cl
        .try_sql("SET ROLE app_user; SET app.current_tenant_id = 'tenant_a'; INSERT INTO tenants (tenant_id, name) VALUES ('tenant_b', 'x')")
        .expect_err("insert for another tenant must fail");
    assert!(err.contains("row-level security"), "{err}");
    assert_eq!(
        cl.sql("SET ROLE app_user; SET app.current_tenant_id = 'tenant_a'; UPDATE tenants SET name = name WHERE tenant_id = 'tenant_b'; SELECT 'ok'"),
        "ok"
    );
    // uuid column: fail closed, no error.
    assert_eq!(as_app(Some(UUID_A), "SELECT count(*) FROM docs"), "2");
    for bad in [
        "garbage",
        "1111",
        "11111111-1111-1111-1111-11111111111g",
        "' OR true --",
    ] {
        let v = bad.replace('\'', "''");
        assert_eq!(as_app(Some(&v), "SELECT count(*) FROM docs"), "0", "{bad}");
    }
    // Inlined, init-plan form: the plan shows current_setting(), not the function.
    let plan = as_app(
        Some("tenant_a"),
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM tenants",
    );
    assert!(
        plan.contains("InitPlan") && plan.contains("current_setting"),
        "{plan}"
    );
    assert!(
        !plan.contains("current_tenant_id()"),
        "current_tenant_id() was not inlined:\n{plan}"
    );

    // Integer tenant column, long name, mixed case (1.0 quoting), errors.
    let long = "t".repeat(60);
    cl.sql(&format!(
        "DROP TABLE IF EXISTS kit_int, {long}, \"MixedCase\";
         CREATE TABLE kit_int (tenant_id integer, v text);
         INSERT INTO kit_int VALUES (7, 'seven'), (8, 'eight');
         CREATE TABLE {long} (tenant_id text);
         CREATE TABLE \"MixedCase\" (tenant_id text);
         SELECT pgvpd_protect('kit_int');
         SELECT pgvpd_protect('{long}'); SELECT pgvpd_protect('{long}');
         SELECT pgvpd_protect('MixedCase');"
    ));
    assert_eq!(as_app(Some("7"), "SELECT v FROM kit_int"), "seven");
    for bad in ["7x", "99999999999999999999", ""] {
        assert_eq!(
            as_app(Some(bad), "SELECT count(*) FROM kit_int"),
            "0",
            "{bad}"
        );
    }
    let pol = cl.sql(&format!(
        "SELECT count(*), max(octet_length(polname)), bool_and(polname LIKE 'pgvpd_tenant_isolation_%') \
         FROM pg_policy WHERE polrelid = '{long}'::regclass"
    ));
    let f: Vec<&str> = pol.split('|').collect();
    assert_eq!(f[0], "1", "protect twice leaves one policy: {pol}");
    assert!(f[1].parse::<u32>().unwrap() <= 63, "{pol}");
    assert_eq!(f[2], "t", "{pol}");
    assert_eq!(
        cl.sql("SELECT count(*) FROM pg_policy WHERE polrelid = '\"MixedCase\"'::regclass"),
        "1"
    );
    let e = cl
        .try_sql("SELECT pgvpd_protect('no_such_table')")
        .expect_err("missing table");
    assert!(
        e.contains("does not exist") && e.contains("no_such_table"),
        "{e}"
    );
    let e = cl
        .try_sql("SELECT pgvpd_protect('tenants', 'nope')")
        .expect_err("missing column");
    assert!(e.contains("column nope does not exist"), "{e}");
    let e = cl
        .try_sql("SELECT pgvpd_protect('nosuchschema.t')")
        .expect_err("missing schema");
    assert!(e.contains("does not exist"), "{e}");

    let status =
        cl.sql("SELECT * FROM pgvpd_status() WHERE table_name IN ('tenants', 'docs', 'invoices')");
    assert_eq!(
        status,
        "billing|invoices|t|t|1\npublic|docs|t|t|1\npublic|tenants|t|t|1"
    );
    cl.sql(&format!("DROP TABLE kit_int, {long}, \"MixedCase\""));
}

fn setup_sql_idempotent(ctx: &Ctx) {
    let cl = &ctx.cluster;
    cl.sql_file(&common::fixtures::setup_sql_path());
    cl.sql_file(&common::fixtures::setup_sql_path());
    assert_eq!(
        cl.sql(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'app_user'"
        ),
        "f|f|t"
    );
    // Fixtures re-load too (tables re-created and re-protected).
    common::fixtures::load(cl);
    assert_eq!(
        cl.sql("SELECT * FROM pgvpd_status() WHERE table_name = 'tenants'"),
        "public|tenants|t|t|1"
    );
    assert_eq!(
        cl.sql("SET ROLE app_user; SET app.current_tenant_id = 'tenant_a'; SELECT count(*) FROM tenants"),
        "2"
    );
    // The password set by the fixtures survives a re-run of setup.sql.
    let p = ctx.proxy("");
    assert_eq!(
        q(
            ctx,
            &p,
            "app_user.tenant_b",
            Some(APP_PASSWORD),
            "SELECT count(*) FROM tenants"
        ),
        "2"
    );
    p.assert_alive();
}
