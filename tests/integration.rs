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
    ("sql_helpers_direct", sql_helpers_direct),
    ("sql_protect_acl", sql_protect_acl),
    ("sql_helpers_upgrade", sql_helpers_upgrade),
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
/// `table` has exactly one policy, named `prefix…` and within PostgreSQL's
/// 63-byte identifier limit (protecting twice replaces it).
fn assert_one_short_policy(cl: &common::Cluster, table: &str, prefix: &str) {
    let pol = cl.sql(&format!(
        "SELECT count(*), max(octet_length(polname)), bool_and(polname LIKE '{prefix}%') \
         FROM pg_policy WHERE polrelid = '{table}'::regclass"
    ));
    let f: Vec<&str> = pol.split('|').collect();
    assert_eq!(f[0], "1", "protect twice leaves one policy: {pol}");
    assert!(f[1].parse::<u32>().unwrap() <= 63, "{pol}");
    assert_eq!(f[2], "t", "{pol}");
}

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
    assert_one_short_policy(cl, &long, "pgvpd_tenant_isolation_");
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

// ---------------------------------------------------------------- sql/helpers.sql

/// The test user and the acl_cases ids of `tests/fixtures.sql`.
const ACL_USER: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const ACL_ORG: &str = "11111111-2222-3333-4444-555555555555";
const ACL_OTHER_ORG: &str = "99999999-9999-9999-9999-999999999999";
const ACL_CASE_3: &str = "aaaaaaaa-0000-0000-0000-000000000003";
const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// `s` as a SQL string literal (standard_conforming_strings: only `'` doubles).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `SET ROLE app_user`, then `SET variable = 'value'` for each pair, then `sql`.
fn as_app_with(ctx: &Ctx, vars: &[(&str, &str)], sql: &str) -> String {
    ctx.cluster.sql(&app_sql(vars, sql))
}

fn app_sql(vars: &[(&str, &str)], sql: &str) -> String {
    let mut s = String::from("SET ROLE app_user;");
    for (k, v) in vars {
        s.push_str(&format!(" SET {k} = {};", lit(v)));
    }
    s.push(' ');
    s.push_str(sql);
    s
}

/// The helpers on their own: pgvpd 1.0's checks 6.1-6.7 plus list forms,
/// whitespace, malformed input, unset variables, volatility and inlining.
fn sql_helpers_direct(ctx: &Ctx) {
    let cl = &ctx.cluster;
    let u1 = "11111111-1111-1111-1111-111111111111";
    let u2 = "22222222-2222-2222-2222-222222222222";

    // 6.1 / 6.2
    assert_eq!(
        as_app_with(ctx, &[("app.x", "hello")], "SELECT pgvpd_context('app.x')"),
        "hello"
    );
    assert_eq!(cl.sql("SELECT pgvpd_context('app.unset_var')"), "");
    assert_eq!(cl.sql("SELECT pgvpd_context('app.unset_var') IS NULL"), "t");
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.x", "")],
            "SELECT pgvpd_context('app.x') IS NULL"
        ),
        "t",
        "empty means unset"
    );
    // 6.3
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", "a,b,c")],
            "SELECT pgvpd_context_array('app.ids')"
        ),
        "{a,b,c}"
    );
    // 6.4 / 6.5 / 6.7
    let two = format!("{u1},{u2}");
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", &two)],
            &format!("SELECT pgvpd_context_contains('app.ids', '{u1}')")
        ),
        "t"
    );
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", &two)],
            &format!("SELECT pgvpd_context_contains('app.ids', '{ZERO_UUID}')")
        ),
        "f"
    );
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", &two)],
            "SELECT pgvpd_context_uuid_array('app.ids')"
        ),
        format!("{{{u1},{u2}}}")
    );
    // 6.6
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.roles", "admin,viewer")],
            "SELECT pgvpd_context_text_contains('app.roles', 'admin'), \
             pgvpd_context_text_contains('app.roles', 'owner')"
        ),
        "t|f"
    );

    // Braced form (array_agg(x)::text in a resolver) and whitespace: same answers.
    for v in [
        format!("{{{u1},{u2}}}"),
        format!("  {{ {u1} ,\t{u2} }} "),
        format!(" {u1} ,, {u2} ,"),
        format!("{{{},{}}}", u1.to_uppercase(), u2),
    ] {
        assert_eq!(
            as_app_with(
                ctx,
                &[("app.ids", &v)],
                &format!(
                    "SELECT pgvpd_context_uuid_array('app.ids'), \
                     pgvpd_context_contains('app.ids', '{u1}'), \
                     pgvpd_context_contains('app.ids', '{u2}'), \
                     pgvpd_context_contains('app.ids', '{ZERO_UUID}')"
                )
            ),
            format!("{{{u1},{u2}}}|t|t|f"),
            "{v:?}"
        );
    }
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.roles", "{admin, \"team lead\", \"a,b\"}")],
            "SELECT pgvpd_context_array('app.roles'), \
             pgvpd_context_text_contains('app.roles', 'team lead'), \
             pgvpd_context_text_contains('app.roles', 'a,b'), \
             pgvpd_context_text_contains('app.roles', 'a')"
        ),
        "{admin,\"team lead\",\"a,b\"}|t|t|f"
    );

    // The resolvers' `rows = "array"` form: every element quoted, `"` and `\` escaped.
    let quoted = format!("{{\"{u1}\",\"{u2}\"}}");
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", &quoted)],
            &format!(
                "SELECT pgvpd_context_uuid_array('app.ids'), pgvpd_context_contains('app.ids', '{u2}')"
            )
        ),
        format!("{{{u1},{u2}}}|t")
    );
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.items", r#"{"a","b,c","quote\"d","back\\slash",""}"#)],
            "SELECT cardinality(pgvpd_context_array('app.items')), \
             pgvpd_context_text_contains('app.items', 'b,c'), \
             pgvpd_context_text_contains('app.items', 'quote\"d'), \
             pgvpd_context_text_contains('app.items', 'back\\slash'), \
             pgvpd_context_text_contains('app.items', 'b')"
        ),
        "4|t|t|t|f"
    );

    // Malformed uuid elements are dropped (no match, no error); the rest work.
    for bad in [
        "not-a-uuid",
        "1111",
        "11111111-1111-1111-1111-11111111111g",
        "' OR true --",
        "x}",
    ] {
        let v = format!("{bad},{u2}");
        assert_eq!(
            as_app_with(
                ctx,
                &[("app.ids", &v)],
                &format!(
                    "SELECT pgvpd_context_uuid_array('app.ids'), \
                     pgvpd_context_contains('app.ids', '{u2}'), \
                     pgvpd_context_contains('app.ids', '{u1}')"
                )
            ),
            format!("{{{u2}}}|t|f"),
            "{v:?}"
        );
    }
    // Only malformed elements: an empty array, contains false.
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", "garbage,11111111111111111111111111111111")],
            &format!(
                "SELECT pgvpd_context_uuid_array('app.ids'), pgvpd_context_contains('app.ids', '{u1}')"
            )
        ),
        "{}|f"
    );
    // A malformed braced list: NULL arrays, false tests, no error.
    for bad in [
        format!("{{\"{u1}"),
        format!("{{{u1}"),
        format!("{{{{{u1}}}}}"),
    ] {
        assert_eq!(
            as_app_with(
                ctx,
                &[("app.ids", &bad)],
                &format!(
                    "SELECT pgvpd_context_array('app.ids') IS NULL, \
                     pgvpd_context_uuid_array('app.ids') IS NULL, \
                     pgvpd_context_contains('app.ids', '{u1}'), \
                     pgvpd_context_text_contains('app.ids', '{u1}')"
                )
            ),
            "t|t|f|f",
            "{bad:?}"
        );
    }
    // Unset and empty: NULL arrays, and false (not NULL) membership, also for a NULL value.
    for vars in [&[][..], &[("app.ids", "")][..]] {
        assert_eq!(
            as_app_with(
                ctx,
                vars,
                &format!(
                    "SELECT pgvpd_context_array('app.ids') IS NULL, \
                     pgvpd_context_uuid_array('app.ids') IS NULL, \
                     pgvpd_context_contains('app.ids', '{u1}'), \
                     pgvpd_context_contains('app.ids', NULL), \
                     pgvpd_context_text_contains('app.ids', 'a'), \
                     pgvpd_context_text_contains('app.ids', NULL)"
                )
            ),
            "t|t|f|f|f|f",
            "{vars:?}"
        );
    }

    // The list grammar (pgvpd_split_list), exactly.
    let cases: &[(Option<&str>, &str)] = &[
        (None, "<null>"),
        (Some(""), "{}"),
        (Some(" \t "), "{}"),
        (Some(","), "{}"),
        (Some("a,b,c"), "{a,b,c}"),
        (Some(" a , b ,,c, "), "{a,b,c}"),
        (Some("a b, c"), "{\"a b\",c}"),
        (Some("a,NULL"), "{a,\"NULL\"}"),
        (Some("a,\"b"), "{a,\"\\\"b\"}"),
        (
            Some("'; DROP TABLE tenants; --"),
            "{\"'; DROP TABLE tenants; --\"}",
        ),
        (Some("{a,b}"), "{a,b}"),
        (Some("{ a , b }"), "{a,b}"),
        (Some("\t{a}\n"), "{a}"),
        (Some("{}"), "{}"),
        (Some("{ }"), "{}"),
        (Some("{a,,b}"), "{a,b}"),
        (Some("{a, b,}"), "{a,b}"),
        (Some("{\"a,b\",c}"), "{\"a,b\",c}"),
        (Some("{\" a \"}"), "{\" a \"}"),
        (Some("{\"a\\\"b\"}"), "{\"a\\\"b\"}"),
        (Some("{NULL,x,\"\"}"), "{x}"),
        (Some("{\"NULL\"}"), "{\"NULL\"}"),
        (Some("{\"a,b}"), "<null>"),
        (Some("{\"a\" \"b\"}"), "<null>"),
        (Some("{a\\,b}"), "<null>"),
        (Some("{{a},{b}}"), "<null>"),
        (Some("[1:2]={a,b}"), "<null>"),
        (Some("{a"), "<null>"),
        (Some("a}"), "<null>"),
    ];
    for (input, want) in cases {
        let arg = input.map_or("NULL".to_string(), lit);
        assert_eq!(
            cl.sql(&format!(
                "SELECT COALESCE(pgvpd_split_list({arg})::text, '<null>')"
            )),
            *want,
            "pgvpd_split_list({input:?})"
        );
    }

    // Volatility, language, security and configuration of every function.
    let procs = cl.sql(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', \
                p.provolatile, p.proparallel, l.lanname, p.prosecdef, p.proconfig IS NULL \
         FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
         WHERE p.proname IN ('pgvpd_context', 'pgvpd_context_array', 'pgvpd_context_uuid_array', \
                             'pgvpd_context_contains', 'pgvpd_context_text_contains', \
                             'pgvpd_split_list', 'pgvpd_protect_acl') \
         ORDER BY 1",
    );
    assert_eq!(
        procs,
        "pgvpd_context(var_name text)|s|s|sql|f|t\n\
         pgvpd_context_array(var_name text)|s|s|sql|f|t\n\
         pgvpd_context_contains(var_name text, val uuid)|s|s|sql|f|t\n\
         pgvpd_context_text_contains(var_name text, val text)|s|s|sql|f|t\n\
         pgvpd_context_uuid_array(var_name text)|s|s|sql|f|t\n\
         pgvpd_protect_acl(target_table text, paths jsonb)|v|u|sql|f|t\n\
         pgvpd_protect_acl(target_table text, paths jsonb, trust_raw_when boolean)|v|u|plpgsql|f|t\n\
         pgvpd_split_list(list text)|s|s|sql|f|t"
    );
    // The scalar accessors and the membership tests inline: the plan shows
    // current_setting(), no pgvpd_ function call per row.
    let plan = cl.sql(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT pgvpd_context('app.x'), pgvpd_context_array('app.x'), \
         pgvpd_context_contains('app.x', id), pgvpd_context_text_contains('app.x', title) FROM acl_cases",
    );
    assert!(
        plan.contains("current_setting") && !plan.contains("pgvpd_"),
        "not inlined:\n{plan}"
    );

    // Re-running the file (twice) keeps everything working.
    cl.sql_file(&common::fixtures::helpers_sql_path());
    cl.sql_file(&common::fixtures::helpers_sql_path());
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.ids", &format!("{{{u1}}}"))],
            &format!("SELECT pgvpd_context_contains('app.ids', '{u1}')")
        ),
        "t"
    );
    assert_eq!(
        cl.sql(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('pgvpd_context', 'pgvpd_context_array', \
             'pgvpd_context_uuid_array', 'pgvpd_context_contains', 'pgvpd_context_text_contains', \
             'pgvpd_split_list', 'pgvpd_protect_acl')"
        ),
        "8",
        "no duplicate overloads"
    );
}

/// Policy text for pgvpd 1.0's check 6.8a: owner, explicit grants, org admins.
const ACL_PATHS: &str = r#"[
    {"column": "creator_id", "type": "uuid",       "var": "app.user_id"},
    {"column": "id",         "type": "uuid_array", "var": "app.granted_case_ids"},
    {"column": "org_id",     "type": "uuid",       "var": "app.org_id",
     "when": "pgvpd_context('app.org_role') = 'admin'"}
]"#;

/// Titles visible to app_user with these context values (other ACL variables empty).
fn acl_titles(ctx: &Ctx, vars: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vec![
        ("app.user_id", ""),
        ("app.granted_case_ids", ""),
        ("app.org_id", ""),
        ("app.org_role", ""),
    ];
    for (k, v) in vars {
        all.retain(|(n, _)| n != k);
        all.push((k, v));
    }
    as_app_with(ctx, &all, "SELECT title FROM acl_cases ORDER BY title")
}

fn protect_acl_err(ctx: &Ctx, table: &str, paths: &str, extra: &str) -> String {
    ctx.cluster
        .try_sql(&format!(
            "SELECT pgvpd_protect_acl({}, {}{extra})",
            lit(table),
            lit(paths)
        ))
        .expect_err(&format!(
            "pgvpd_protect_acl({table}, {paths}{extra}) must fail"
        ))
}

/// pgvpd_protect_acl: pgvpd 1.0's checks 6.8a-6.8d, then the fixes (init-plan
/// form, validation, restricted `when`, schema-qualified tables).
fn sql_protect_acl(ctx: &Ctx) {
    let cl = &ctx.cluster;
    let (_, notices) = cl.sql_with_notices(&format!(
        "SELECT pgvpd_protect_acl('acl_cases', {})",
        lit(ACL_PATHS)
    ));
    assert!(
        notices.contains("with 3 ACL path(s): policy pgvpd_acl_acl_cases"),
        "{notices}"
    );
    assert!(!notices.contains("WARNING"), "{notices}");
    // 6.8a
    assert_eq!(
        cl.sql("SELECT policyname, roles, cmd, permissive FROM pg_policies WHERE tablename = 'acl_cases'"),
        "pgvpd_acl_acl_cases|{app_user}|ALL|PERMISSIVE"
    );
    assert_eq!(
        cl.sql("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'acl_cases'::regclass"),
        "t|t"
    );
    // 6.8b: the creator sees their own case only.
    assert_eq!(
        acl_titles(ctx, &[("app.user_id", ACL_USER)]),
        "Case owned by test user"
    );
    // 6.8c: an org admin sees the org's cases, not the other org's.
    assert_eq!(
        acl_titles(
            ctx,
            &[
                ("app.user_id", ZERO_UUID),
                ("app.org_id", ACL_ORG),
                ("app.org_role", "admin")
            ]
        ),
        "Case by colleague in same org\nCase owned by test user"
    );
    // 6.8d: an explicit grant.
    assert_eq!(
        acl_titles(
            ctx,
            &[
                ("app.user_id", ZERO_UUID),
                ("app.granted_case_ids", ACL_CASE_3)
            ]
        ),
        "Case in other org"
    );
    // The `when` gate: a viewer of the org sees nothing through the org path.
    assert_eq!(
        acl_titles(ctx, &[("app.org_id", ACL_ORG), ("app.org_role", "viewer")]),
        ""
    );
    // Nothing set (or never set at all): nothing visible.
    assert_eq!(acl_titles(ctx, &[]), "");
    assert_eq!(as_app_with(ctx, &[], "SELECT count(*) FROM acl_cases"), "0");
    // Malformed values: no rows, no error.
    assert_eq!(
        acl_titles(
            ctx,
            &[
                ("app.user_id", "garbage"),
                ("app.granted_case_ids", "{\"unterminated"),
                ("app.org_id", "' OR true --"),
                ("app.org_role", "admin")
            ]
        ),
        ""
    );
    // A braced grant list as array_agg()::text produces it, and a bad element beside good ones.
    assert_eq!(
        acl_titles(
            ctx,
            &[(
                "app.granted_case_ids",
                "{aaaaaaaa-0000-0000-0000-000000000001,bad,AAAAAAAA-0000-0000-0000-000000000003}"
            )]
        ),
        "Case in other org\nCase owned by test user"
    );
    // WITH CHECK equals USING: no writing a row one could not see.
    let err = cl
        .try_sql(&app_sql(
            &[("app.user_id", ACL_USER)],
            &format!(
                "INSERT INTO acl_cases VALUES (gen_random_uuid(), 'x', '{ZERO_UUID}', '{ACL_OTHER_ORG}')"
            ),
        ))
        .expect_err("insert of another user's case must fail");
    assert!(err.contains("row-level security"), "{err}");
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.user_id", ACL_USER)],
            &format!(
                "INSERT INTO acl_cases VALUES (gen_random_uuid(), 'mine', '{ACL_USER}', '{ACL_OTHER_ORG}'); \
                 DELETE FROM acl_cases WHERE title = 'mine' RETURNING title"
            )
        ),
        "mine"
    );

    // The policy reads each variable in a scalar sub-select (init plan), and
    // WITH CHECK is the same expression.
    let qual = cl.sql("SELECT qual FROM pg_policies WHERE tablename = 'acl_cases'");
    for part in [
        "(creator_id = ( SELECT pgvpd_try_uuid(pgvpd_context('app.user_id'::text)) AS pgvpd_try_uuid))",
        "(id = ANY (( SELECT pgvpd_context_uuid_array('app.granted_case_ids'::text) AS pgvpd_context_uuid_array)::uuid[]))",
        "(org_id = ( SELECT pgvpd_try_uuid(pgvpd_context('app.org_id'::text)) AS pgvpd_try_uuid))",
        "(( SELECT pgvpd_context('app.org_role'::text) AS pgvpd_context) = 'admin'::text)",
    ] {
        assert!(qual.contains(part), "{part} not in {qual}");
    }
    assert_eq!(
        cl.sql("SELECT qual = with_check FROM pg_policies WHERE tablename = 'acl_cases'"),
        "t"
    );
    // The plan: four InitPlans (each variable read once per query), the
    // filter compares columns with their results, no function call per row.
    let plan = as_app_with(
        ctx,
        &[("app.user_id", ACL_USER)],
        "EXPLAIN (COSTS OFF) SELECT * FROM acl_cases",
    );
    assert_eq!(plan.matches("InitPlan").count(), 4, "{plan}");
    let filter = plan
        .lines()
        .find(|l| l.contains("Filter:"))
        .unwrap_or_else(|| panic!("no Filter in\n{plan}"));
    assert!(
        filter.contains("(creator_id = $0)") && !filter.contains("pgvpd_"),
        "{plan}"
    );
    // An index on the column is usable: the column is compared with the
    // init-plan value, a constant for the executor.
    cl.sql(&format!(
        "DROP TABLE IF EXISTS acl_idx; \
         CREATE TABLE acl_idx (id serial, owner uuid); \
         CREATE INDEX acl_idx_owner ON acl_idx (owner); \
         INSERT INTO acl_idx (owner) SELECT '{ACL_USER}' FROM generate_series(1, 3); \
         SELECT pgvpd_protect_acl('acl_idx', '[{{\"column\": \"owner\", \"type\": \"uuid\", \"var\": \"app.user_id\"}}]')"
    ));
    let plan = as_app_with(
        ctx,
        &[("app.user_id", ACL_USER)],
        "SET enable_seqscan = off; EXPLAIN (COSTS OFF) SELECT * FROM acl_idx",
    );
    assert!(
        plan.contains("InitPlan") && plan.contains("Index Cond: (owner = $0)"),
        "{plan}"
    );
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.user_id", ACL_USER)],
            "SELECT count(*) FROM acl_idx"
        ),
        "3"
    );
    cl.sql("DROP TABLE acl_idx");

    // ---- Rejections: each leaves the existing policy untouched.
    let p = r#"{"column": "creator_id", "type": "uuid", "var": "app.user_id"}"#;
    let one = |extra_key: &str| format!("[{}{extra_key}}}]", &p[..p.len() - 1]);
    let cases: Vec<(String, &str)> =
        vec![
        ("[]".into(), "paths array is empty"),
        ("{}".into(), "paths must be a JSON array"),
        ("[1]".into(), "path 1: must be a JSON object"),
        (
            r#"[{"column": "creator_id", "type": "uuid_list", "var": "app.user_id"}]"#.into(),
            "path 1: unknown type 'uuid_list'",
        ),
        (
            r#"[{"column": "creator_id", "var": "app.user_id"}]"#.into(),
            "\"type\" is required",
        ),
        (one(r#", "using": "true""#), "path 1: unknown key \"using\""),
        (
            format!(r#"[{p}, {{"column": "org_id", "type": "text", "var": "app.org_id"}}]"#),
            "path 2: column org_id has type uuid, type text needs a text, varchar or char column",
        ),
        (
            r#"[{"column": "title", "type": "uuid", "var": "app.x"}]"#.into(),
            "column title has type text, type uuid needs a uuid column",
        ),
        // Injection through names.
        (
            r#"[{"column": "id) OR (true", "type": "uuid", "var": "app.user_id"}]"#.into(),
            "column \"id) OR (true\" does not exist",
        ),
        (
            r#"[{"column": "creator_id", "type": "uuid", "var": "app.user_id') OR true OR ('"}]"#
                .into(),
            "invalid variable name",
        ),
        (
            r#"[{"column": "creator_id", "type": "uuid", "var": "user_id"}]"#.into(),
            "invalid variable name 'user_id'",
        ),
        (
            r#"[{"column": "creator_id", "type": "uuid", "var": "app.user id"}]"#.into(),
            "invalid variable name",
        ),
        (
            r#"[{"column": "creator_id", "type": "uuid", "var": "1app.x"}]"#.into(),
            "invalid variable name",
        ),
        // Raw SQL in `when` is refused without the trust flag.
        (one(r#", "when": "true OR 1=1""#), "\"when\" is not a recognised condition"),
        (
            one(r#", "when": "pgvpd_context('app.org_role') = 'admin' OR true""#),
            "not a recognised condition",
        ),
        (
            one(r#", "when": "pgvpd_context('app.x'') OR true OR (''') = 'admin'""#),
            "not a recognised condition",
        ),
        (
            one(r#", "when": "current_setting('app.org_role') = 'admin'""#),
            "not a recognised condition",
        ),
        (one(r#", "when": null"#), "\"when\" must be an object or a string, got null"),
        (one(r#", "when": true"#), "\"when\" must be an object or a string"),
        (
            one(r#", "when": {"var": "app.role", "op": "~", "value": "a"}"#),
            "unknown op '~'",
        ),
        (
            one(r#", "when": {"var": "app.role", "value": "a", "sql": "true"}"#),
            "unknown key \"sql\" in \"when\"",
        ),
        (
            one(r#", "when": {"var": "app.role') OR true --", "value": "a"}"#),
            "\"when\" needs \"var\"",
        ),
        (
            one(r#", "when": {"var": "app.role", "op": "in", "value": []}"#),
            "non-empty array of strings",
        ),
        (
            one(r#", "when": {"var": "app.role", "op": "=", "value": 1}"#),
            "must be a string for op =",
        ),
    ];
    let before = cl.sql("SELECT qual FROM pg_policies WHERE tablename = 'acl_cases'");
    for (paths, want) in &cases {
        let e = protect_acl_err(ctx, "acl_cases", paths, "");
        assert!(e.contains(want), "{paths}: wanted {want:?}, got {e}");
    }
    let e = protect_acl_err(ctx, "no_such_table", p, "");
    assert!(e.contains("table no_such_table does not exist"), "{e}");
    let e = protect_acl_err(ctx, "acl_cases", &format!("[{p}]"), ", NULL");
    assert!(e.contains("must not be NULL"), "{e}");
    assert_eq!(
        cl.sql("SELECT qual FROM pg_policies WHERE tablename = 'acl_cases'"),
        before,
        "a refused call changed the policy"
    );

    // ---- Accepted `when` forms.
    let when_of = |when: &str| -> String {
        cl.sql(&format!(
            "SELECT pgvpd_protect_acl('acl_cases', {})",
            lit(&one(&format!(r#", "when": {when}"#)))
        ));
        cl.sql("SELECT qual FROM pg_policies WHERE tablename = 'acl_cases'")
    };
    let base = "(creator_id = ( SELECT pgvpd_try_uuid(pgvpd_context('app.user_id'::text)) AS pgvpd_try_uuid))";
    let ctxr = "( SELECT pgvpd_context('app.org_role'::text) AS pgvpd_context)";
    for (when, cond) in [
        (
            r#"{"var": "app.org_role", "op": "=", "value": "admin"}"#,
            format!("{ctxr} = 'admin'::text"),
        ),
        (
            r#"{"var": "app.org_role", "value": "it's"}"#,
            format!("{ctxr} = 'it''s'::text"),
        ),
        (
            r#"{"var": "app.org_role", "op": "<>", "value": "guest"}"#,
            format!("{ctxr} <> 'guest'::text"),
        ),
        (
            r#"{"var": "app.org_role", "op": "!=", "value": "guest"}"#,
            format!("{ctxr} <> 'guest'::text"),
        ),
        (
            r#"{"var": "app.org_role", "op": "in", "value": ["admin", "owner"]}"#,
            format!("{ctxr} = ANY (ARRAY['admin'::text, 'owner'::text])"),
        ),
        (
            r#"" pgvpd_context ( 'app.org_role' )<>'x''y' ""#,
            format!("{ctxr} <> 'x''y'::text"),
        ),
        (
            r#""pgvpd_context('app.org_role') != 'a) OR (true'""#,
            format!("{ctxr} <> 'a) OR (true'::text"),
        ),
    ] {
        assert_eq!(when_of(when), format!("({base} AND ({cond}))"), "{when}");
    }
    // An unset variable makes `<>` false too (fail closed).
    when_of(r#"{"var": "app.org_role", "op": "<>", "value": "guest"}"#);
    assert_eq!(
        acl_titles(ctx, &[("app.user_id", ACL_USER)]),
        "",
        "unset role must not pass <> 'guest'"
    );
    assert_eq!(
        acl_titles(
            ctx,
            &[("app.user_id", ACL_USER), ("app.org_role", "member")]
        ),
        "Case owned by test user"
    );
    // Raw SQL only with the trust flag (named or positional), used verbatim.
    let raw = one(r#", "when": "current_setting('app.org_role', true) ~ '^adm'""#);
    assert!(protect_acl_err(ctx, "acl_cases", &raw, ", false").contains("not a recognised"));
    cl.sql(&format!(
        "SELECT pgvpd_protect_acl('acl_cases', {}, trust_raw_when => true)",
        lit(&raw)
    ));
    assert_eq!(
        acl_titles(ctx, &[("app.user_id", ACL_USER), ("app.org_role", "admin")]),
        "Case owned by test user"
    );
    assert_eq!(
        acl_titles(ctx, &[("app.user_id", ACL_USER), ("app.org_role", "x")]),
        ""
    );

    // ---- Schema-qualified and quoted names, odd column names, long names,
    // text and text_array paths, and the warning about another permissive policy.
    cl.sql(
        "DROP SCHEMA IF EXISTS acl_s CASCADE; CREATE SCHEMA acl_s;
         CREATE TABLE acl_s.\"Case Files\" (id serial, \"owner\"\"s) OR (true\" text, tags varchar(20));
         INSERT INTO acl_s.\"Case Files\" (\"owner\"\"s) OR (true\", tags) VALUES ('ann', 'red'), ('bob', 'blue'), ('cy', NULL);",
    );
    let paths = r#"[{"column": "owner\"s) OR (true", "type": "text", "var": "app.user_name"},
                    {"column": "tags", "type": "text_array", "var": "app.tags"}]"#;
    cl.sql(&format!(
        "SELECT pgvpd_protect_acl('acl_s.\"Case Files\"', {})",
        lit(paths)
    ));
    assert_eq!(
        cl.sql("SELECT policyname, schemaname FROM pg_policies WHERE tablename = 'Case Files'"),
        "pgvpd_acl_Case Files|acl_s"
    );
    let files = |vars: &[(&str, &str)]| {
        as_app_with(
            ctx,
            vars,
            "SELECT string_agg(\"owner\"\"s) OR (true\", ',' ORDER BY id) FROM acl_s.\"Case Files\"",
        )
    };
    assert_eq!(files(&[("app.user_name", "ann")]), "ann");
    assert_eq!(files(&[("app.tags", "{blue, red}")]), "ann,bob");
    assert_eq!(files(&[("app.tags", "green")]), "");
    assert_eq!(files(&[]), "");
    // app_user can insert through the serial column (sequence granted).
    assert_eq!(
        as_app_with(
            ctx,
            &[("app.user_name", "dee")],
            "INSERT INTO acl_s.\"Case Files\" (\"owner\"\"s) OR (true\") VALUES ('dee') RETURNING \"owner\"\"s) OR (true\""
        ),
        "dee"
    );
    // Unqualified mixed case (1.0 quoted the whole argument) and a long name.
    let long = "c".repeat(60);
    cl.sql(&format!(
        "DROP TABLE IF EXISTS \"AclMixed\", {long};
         CREATE TABLE \"AclMixed\" (owner text); CREATE TABLE {long} (owner text);
         SELECT pgvpd_protect_acl('AclMixed', '[{{\"column\": \"owner\", \"type\": \"text\", \"var\": \"app.u\"}}]');
         SELECT pgvpd_protect_acl('{long}', '[{{\"column\": \"owner\", \"type\": \"text\", \"var\": \"app.u\"}}]');
         SELECT pgvpd_protect_acl('{long}', '[{{\"column\": \"owner\", \"type\": \"text\", \"var\": \"app.u\"}}]');"
    ));
    assert_eq!(
        cl.sql("SELECT count(*) FROM pg_policy WHERE polrelid = '\"AclMixed\"'::regclass"),
        "1"
    );
    assert_one_short_policy(cl, &long, "pgvpd_acl_");
    // Another permissive policy on the table (pgvpd_protect's): ORed, so warned about.
    cl.sql(&format!(
        "ALTER TABLE {long} ADD COLUMN tenant_id text; SELECT pgvpd_protect('{long}')"
    ));
    let (_, notices) = cl.sql_with_notices(&format!(
        "SELECT pgvpd_protect_acl('{long}', '[{{\"column\": \"owner\", \"type\": \"text\", \"var\": \"app.u\"}}]')"
    ));
    assert!(
        notices.contains("WARNING") && notices.contains("pgvpd_tenant_isolation_"),
        "{notices}"
    );

    // Leave the shared fixtures as they were.
    cl.sql(&format!(
        "DROP SCHEMA acl_s CASCADE; DROP TABLE \"AclMixed\", {long};
         DROP POLICY pgvpd_acl_acl_cases ON acl_cases;
         ALTER TABLE acl_cases NO FORCE ROW LEVEL SECURITY;
         ALTER TABLE acl_cases DISABLE ROW LEVEL SECURITY;"
    ));
}

/// Re-running helpers.sql over a pgvpd 1.0 installation upgrades it in place:
/// functions with 1.0's signatures (here PL/pgSQL stand-ins written from the
/// behaviour notes) and a 1.0-style policy calling them per row survive, and
/// the policy picks up the new semantics (braced lists, fail closed).
fn sql_helpers_upgrade(ctx: &Ctx) {
    let cl = &ctx.cluster;
    cl.sql("DROP POLICY IF EXISTS pgvpd_acl_acl_cases ON acl_cases");
    cl.sql(
        "DROP FUNCTION pgvpd_protect_acl(text, jsonb), pgvpd_protect_acl(text, jsonb, boolean),
                       pgvpd_context_text_contains(text, text), pgvpd_context_contains(text, uuid),
                       pgvpd_context_uuid_array(text), pgvpd_context_array(text),
                       pgvpd_split_list(text), pgvpd_context(text)",
    );
    cl.sql(
        "CREATE FUNCTION pgvpd_context(var_name text) RETURNS text LANGUAGE plpgsql STABLE AS
             $$ BEGIN RETURN NULLIF(current_setting(var_name, true), ''); END $$;
         CREATE FUNCTION pgvpd_context_array(var_name text) RETURNS text[] LANGUAGE sql STABLE AS
             $$ SELECT string_to_array(pgvpd_context(var_name), ',') $$;
         CREATE FUNCTION pgvpd_context_uuid_array(var_name text) RETURNS uuid[] LANGUAGE sql STABLE AS
             $$ SELECT pgvpd_context_array(var_name)::uuid[] $$;
         CREATE FUNCTION pgvpd_context_contains(var_name text, val uuid) RETURNS boolean LANGUAGE sql STABLE AS
             $$ SELECT COALESCE(val = ANY(pgvpd_context_uuid_array(var_name)), false) $$;
         CREATE FUNCTION pgvpd_context_text_contains(var_name text, val text) RETURNS boolean LANGUAGE sql STABLE AS
             $$ SELECT COALESCE(val = ANY(pgvpd_context_array(var_name)), false) $$;
         CREATE FUNCTION pgvpd_protect_acl(target_table text, paths jsonb) RETURNS void LANGUAGE plpgsql AS
             $$ BEGIN RAISE NOTICE 'old'; END $$;
         DROP TABLE IF EXISTS acl_old;
         CREATE TABLE acl_old (id uuid, tag text);
         INSERT INTO acl_old VALUES ('aaaaaaaa-0000-0000-0000-000000000001', 'a'),
                                    ('aaaaaaaa-0000-0000-0000-000000000002', 'b');
         GRANT SELECT ON acl_old TO app_user;
         ALTER TABLE acl_old ENABLE ROW LEVEL SECURITY;
         CREATE POLICY old_acl ON acl_old FOR ALL TO app_user
             USING (pgvpd_context_contains('app.ids', id) OR pgvpd_context_text_contains('app.tags', tag));",
    );
    // 1.0: a braced list raises for everyone.
    let err = cl
        .try_sql(&app_sql(
            &[(
                "app.ids",
                "{aaaaaaaa-0000-0000-0000-000000000001,aaaaaaaa-0000-0000-0000-000000000002}",
            )],
            "SELECT count(*) FROM acl_old",
        ))
        .expect_err("the 1.0 stand-in raises on a braced list");
    assert!(err.contains("invalid input syntax for type uuid"), "{err}");

    cl.sql_file(&common::fixtures::helpers_sql_path());
    cl.sql_file(&common::fixtures::helpers_sql_path());

    assert_eq!(
        cl.sql("SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = 'pgvpd_context(text)'::regprocedure"),
        "sql"
    );
    let count = |vars: &[(&str, &str)]| {
        as_app_with(
            ctx,
            vars,
            "SELECT string_agg(tag, ',' ORDER BY tag) FROM acl_old",
        )
    };
    assert_eq!(
        count(&[("app.ids", "{aaaaaaaa-0000-0000-0000-000000000001}")]),
        "a"
    );
    assert_eq!(count(&[("app.ids", "{bad"), ("app.tags", " b ")]), "b");
    assert_eq!(count(&[("app.ids", "not-a-uuid")]), "");
    assert_eq!(count(&[]), "");
    // The 1.0 signature of pgvpd_protect_acl is the new function now.
    let (_, notices) = cl.sql_with_notices(
        "SELECT pgvpd_protect_acl('acl_old', '[{\"column\": \"tag\", \"type\": \"text\", \"var\": \"app.tag\"}]')",
    );
    assert!(notices.contains("1 ACL path(s)"), "{notices}");
    cl.sql("DROP TABLE acl_old");
}
