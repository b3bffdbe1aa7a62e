//! TLS end-to-end tests (issue 3): client side (SSLRequest, direct TLS with
//! ALPN, `client_tls`, `tls_port`, handshake timeout, certificate reload) and
//! upstream side (`upstream_tls` modes against a real PostgreSQL with
//! `ssl = on`), driven by psql, psycopg (libpq 18) and a rustls raw client.
//!
//! One cluster serves every case: `ssl = on` with the `server` certificate of
//! a [`TestPki`](common::TestPki) generated into its temp dir. Cases that
//! change the server's TLS (ssl off, another certificate) restore it on exit,
//! also when they fail.
//!
//! `cargo test --test tls` runs all cases; `-- upstream` only those whose name
//! contains "upstream".

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::runner::{self, Case};
use common::{
    Cluster, ClusterOpts, Ctx, ErrorInfo, Proxy, PsqlOut, RawConn, ServerTls, client_hello_bytes,
    ensure_psycopg_venv, free_port, psql_tls, psycopg_query, query_bytes, send_signal,
    ssl_request_bytes, startup_bytes, tls_conninfo,
};

const CASES: &[Case] = &[
    ("setup_server_tls_direct", setup_server_tls_direct),
    ("client_sslmode_require", client_sslmode_require),
    ("client_verify_full", client_verify_full),
    (
        "client_tls_require_refuses_plaintext",
        client_tls_require_refuses_plaintext,
    ),
    ("client_tls_disable_answers_n", client_tls_disable_answers_n),
    (
        "second_sslrequest_inside_tls_gets_n",
        second_sslrequest_inside_tls_gets_n,
    ),
    (
        "query_right_after_sslrequest_closed",
        query_right_after_sslrequest_closed,
    ),
    (
        "tls_handshake_stall_times_out",
        tls_handshake_stall_times_out,
    ),
    ("direct_tls_with_alpn_psycopg", direct_tls_with_alpn_psycopg),
    (
        "direct_tls_without_alpn_refused",
        direct_tls_without_alpn_refused,
    ),
    ("tls_port_listener", tls_port_listener),
    (
        "upstream_verify_full_pg_stat_ssl",
        upstream_verify_full_pg_stat_ssl,
    ),
    ("cancel_over_upstream_tls", cancel_over_upstream_tls),
    (
        "query_timeout_cancel_over_upstream_tls",
        query_timeout_cancel_over_upstream_tls,
    ),
    ("upstream_wrong_ca_fails", upstream_wrong_ca_fails),
    (
        "upstream_verify_ca_vs_full_name_mismatch",
        upstream_verify_ca_vs_full_name_mismatch,
    ),
    (
        "upstream_require_against_ssl_off_fails",
        upstream_require_against_ssl_off_fails,
    ),
    ("upstream_prefer_falls_back", upstream_prefer_falls_back),
    (
        "upstream_true_means_verify_full",
        upstream_true_means_verify_full,
    ),
    (
        "upstream_tls_direct_against_pg15_fails",
        upstream_tls_direct_against_pg15_fails,
    ),
    ("sighup_reloads_certificates", sighup_reloads_certificates),
    ("tls_both_sides_scram", tls_both_sides_scram),
];

/// Cases that run psycopg: the venv is prepared before the first case, so a
/// slow `pip install` does not eat a case's watchdog time.
const PSYCOPG_CASES: &[&str] = &[
    "setup_server_tls_direct",
    "direct_tls_with_alpn_psycopg",
    "tls_port_listener",
    "tls_both_sides_scram",
];

fn main() {
    let selected = runner::selected_names(CASES);
    if !std::env::args().any(|a| a == "--list")
        && selected.iter().any(|n| PSYCOPG_CASES.contains(n))
        && let Err(e) = ensure_psycopg_venv()
    {
        // The psycopg cases fail with this reason; the others still run.
        eprintln!("psycopg venv could not be prepared: {e}");
    }
    runner::run_with(CASES, || {
        Cluster::start_tls(ClusterOpts::default(), ServerTls::TestPki)
    });
}

// ---------------------------------------------------------------- helpers

const COUNT_SQL: &str = "SELECT count(*) FROM tenants";
const SSL_SQL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
/// Upstream TLS, tenant context and RLS in one row: `t|tenant_a|2`.
const SSL_CTX_COUNT_SQL: &str = "SELECT s.ssl, current_setting('app.current_tenant_id'), \
     (SELECT count(*) FROM tenants) FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()";

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `tls_cert`/`tls_key` lines for the PKI's `server` certificate.
fn client_tls_conf(ctx: &Ctx) -> String {
    let pki = ctx.pki();
    format!(
        "tls_cert = {}\ntls_key = {}\n",
        path(&pki.server.cert),
        path(&pki.server.key)
    )
}

/// A proxy serving TLS to clients with the PKI's `server` certificate.
fn tls_proxy(ctx: &Ctx, extra: &str) -> Proxy {
    ctx.proxy(&format!("{}{extra}", client_tls_conf(ctx)))
}

/// Upstream TLS lines: `mode`, trusting `ca`, connecting to `localhost`.
fn upstream_conf(mode: &str, ca: &Path) -> String {
    format!(
        "upstream_tls = {mode}\nupstream_tls_ca = {}\nupstream_host = localhost\n",
        path(ca)
    )
}

/// psql through `port` over TLS as `user` (password `APP_PASSWORD` for app_user).
fn psql_t(port: u16, user: &str, sql: &str, sslmode: &str, ca: Option<&Path>) -> PsqlOut {
    let pw = user.starts_with("app_user").then_some(APP_PASSWORD);
    psql_tls(port, user, pw, DB, sql, sslmode, ca, "")
}

/// Plaintext psql through `port`; panics unless it succeeds; trimmed stdout.
fn q_plain(port: u16, user: &str, sql: &str) -> String {
    psql_t(port, user, sql, "disable", None).expect_ok(&format!("plaintext psql as {user}: {sql}"))
}

/// Raw plaintext login as `trust_user.tenant_a`; the error if refused.
fn raw_trust_login(port: u16) -> Result<RawConn, ErrorInfo> {
    RawConn::login(port, "trust_user.tenant_a", DB, None)
}

/// A login through the proxy that must fail with a FATAL whose message
/// mentions one of `words` (lower-case); returns it.
fn expect_fatal_mentioning(port: u16, words: &[&str], what: &str) -> ErrorInfo {
    let e = match raw_trust_login(port) {
        Ok(mut c) => panic!(
            "{what}: login succeeded (ssl = {:?}), expected a FATAL error",
            c.query_one(SSL_SQL)
        ),
        Err(e) => e,
    };
    assert_eq!(e.severity, "FATAL", "{what}: {e:?}");
    let m = e.message.to_lowercase();
    assert!(
        words.iter().any(|w| m.contains(w)),
        "{what}: the message must mention one of {words:?}: {e:?}"
    );
    e
}

/// Puts the shared cluster back to `ssl = on` with the `server` certificate
/// when dropped (also while a failing case unwinds).
struct RestoreServerTls<'a>(&'a Ctx);

impl Drop for RestoreServerTls<'_> {
    fn drop(&mut self) {
        let ctx = self.0;
        let r = catch_unwind(AssertUnwindSafe(|| {
            if ctx.cluster.sql("SHOW ssl") != "on" {
                ctx.cluster.set_ssl(true);
            }
            if ctx.cluster.sql("SHOW ssl_cert_file") != "server.crt" {
                ctx.cluster.set_server_cert(&ctx.pki().server, "server");
            }
        }));
        if r.is_err() {
            eprintln!("warning: could not restore the cluster's TLS settings");
        }
    }
}

/// Waits until the proxy log holds more than `before` lines containing `needle`.
fn wait_log_count(p: &Proxy, needle: &str, before: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while p.log().matches(needle).count() <= before {
        assert!(
            Instant::now() < deadline,
            "no new log line with {needle:?} within {within:?}\n--- pgvpd log (tail) ---\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Retries `f` until it returns true or `within` elapses; returns the last result.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_listening(port: u16, within: Duration) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        eventually(within, || TcpStream::connect_timeout(
            &addr,
            Duration::from_millis(200)
        )
        .is_ok()),
        "nothing listens on 127.0.0.1:{port} after {within:?}"
    );
}

/// Writes `bytes` to `dest` atomically (temp file + rename).
fn replace_file(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("tmp");
    fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, dest).unwrap_or_else(|e| panic!("rename to {}: {e}", dest.display()));
}

fn copy_file(from: &Path, to: &Path) {
    let b = fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    replace_file(to, &b);
}

// ---------------------------------------------------------------- test setup

/// Checks the test infrastructure without the proxy: the PKI, the cluster's
/// `ssl = on`, and each TLS client straight against PostgreSQL 15. When this
/// fails, the other failures are not the proxy's.
fn setup_server_tls_direct(ctx: &Ctx) {
    let pki = ctx.pki();
    let port = ctx.cluster.port;
    assert_eq!(ctx.cluster.sql("SHOW ssl"), "on");
    let out = psql_t(
        port,
        "trust_user",
        SSL_SQL,
        "verify-full",
        Some(&pki.ca.cert),
    );
    assert_eq!(
        out.expect_ok("psql verify-full straight to PostgreSQL"),
        "t"
    );
    let info = psql_t(port, "trust_user", "\\conninfo", "require", None).expect_ok("\\conninfo");
    assert!(info.contains("SSL connection"), "{info}");
    let out = psql_t(
        port,
        "trust_user",
        SSL_SQL,
        "verify-full",
        Some(&pki.other_ca.cert),
    );
    assert!(!out.success(), "unrelated CA must fail: {out:#?}");
    // SCRAM over TLS straight to the server (channel binding offered).
    let out = psql_t(port, "app_user", SSL_SQL, "verify-full", Some(&pki.ca.cert));
    assert_eq!(out.expect_ok("app_user SCRAM over TLS"), "t");
    // The rustls raw client: SSLRequest, 'S', handshake verifying the test CA.
    let mut c = RawConn::connect_ssl_request(port, &pki.ca.cert);
    c.startup(Some("trust_user"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("raw TLS login: {e:?}"));
    assert_eq!(c.query_one(SSL_SQL).as_deref(), Some("t"));
    // psycopg (libpq 18) with the classic negotiation.
    let conninfo = tls_conninfo(port, "app_user", DB, "verify-full", Some(&pki.ca.cert), "");
    let out = psycopg_query(&conninfo, Some(APP_PASSWORD), SSL_SQL);
    assert_eq!(
        out.expect_ok("psycopg verify-full straight to PostgreSQL"),
        "t"
    );
    assert!(out.stderr.contains("ssl_in_use=True"), "{out:#?}");
    eprintln!("psycopg: {}", out.stderr.trim());
}

// ---------------------------------------------------------------- client side

fn client_sslmode_require(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = tls_proxy(ctx, "");
    // psql (libpq 15): SSLRequest → 'S' → TLS, SCRAM relayed inside it.
    let out = psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None);
    assert_eq!(out.expect_ok("psql sslmode=require"), "2");
    let info = psql_t(p.port, "app_user.tenant_a", "\\conninfo", "require", None)
        .expect_ok("psql sslmode=require \\conninfo");
    assert!(
        info.contains("SSL connection"),
        "psql must report an SSL connection: {info}"
    );
    // The raw client sees the 'S' itself and speaks TLS (ALPN postgresql).
    let mut c = RawConn::connect_ssl_request(p.port, ca);
    c.startup(Some("trust_user.tenant_a"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("login inside TLS: {e:?}"));
    assert_eq!(
        c.query_one("SELECT current_setting('app.current_tenant_id')")
            .as_deref(),
        Some("tenant_a")
    );
    // client_tls defaults to allow: plaintext still works next to TLS.
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "disable", None)
            .expect_ok("plaintext under the default client_tls = allow"),
        "2"
    );
    p.assert_alive();
}

fn client_verify_full(ctx: &Ctx) {
    let pki = ctx.pki();
    let p = tls_proxy(ctx, "");
    let out = psql_t(
        p.port,
        "app_user.tenant_a",
        COUNT_SQL,
        "verify-full",
        Some(&pki.ca.cert),
    );
    assert_eq!(
        out.expect_ok("psql verify-full, test CA, host=localhost"),
        "2"
    );
    let out = psql_t(
        p.port,
        "app_user.tenant_a",
        COUNT_SQL,
        "verify-full",
        Some(&pki.other_ca.cert),
    );
    assert!(
        !out.success(),
        "verify-full trusting an unrelated CA must fail: {out:#?}"
    );
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "the failure must be a certificate error: {out:#?}"
    );
    p.assert_alive();
}

fn client_tls_require_refuses_plaintext(ctx: &Ctx) {
    let p = tls_proxy(ctx, "client_tls = require");
    let out = psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "disable", None);
    assert!(!out.success(), "plaintext psql must be refused: {out:#?}");
    assert!(
        out.stderr.contains("TLS required"),
        "psql's error must say \"TLS required\": {out:#?}"
    );
    let e = match raw_trust_login(p.port) {
        Ok(_) => panic!("plaintext raw login succeeded under client_tls = require"),
        Err(e) => e,
    };
    assert_eq!(
        (e.severity.as_str(), e.code.as_str()),
        ("FATAL", "28000"),
        "{e:?}"
    );
    assert!(e.message.contains("TLS required"), "{e:?}");
    // TLS clients are served.
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None)
            .expect_ok("sslmode=require under client_tls = require"),
        "2"
    );
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "prefer", None)
            .expect_ok("sslmode=prefer under client_tls = require"),
        "2"
    );
    p.assert_alive();
}

fn client_tls_disable_answers_n(ctx: &Ctx) {
    // A certificate is configured but client TLS is switched off.
    let p = tls_proxy(ctx, "client_tls = disable");
    let mut c = RawConn::connect(p.port);
    c.send(&ssl_request_bytes());
    assert_eq!(c.read_byte(), Some(b'N'), "client_tls = disable: 'N'");
    c.startup(Some("trust_user.tenant_a"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("plaintext startup after 'N': {e:?}"));
    let out = psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None);
    assert!(!out.success(), "sslmode=require must fail: {out:#?}");
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "prefer", None)
            .expect_ok("sslmode=prefer falls back to plaintext"),
        "2"
    );
    p.assert_alive();
}

fn second_sslrequest_inside_tls_gets_n(ctx: &Ctx) {
    let p = tls_proxy(ctx, "");
    let mut c = RawConn::connect_ssl_request(p.port, &ctx.pki().ca.cert);
    c.send(&ssl_request_bytes());
    assert_eq!(
        c.read_byte(),
        Some(b'N'),
        "a second SSLRequest inside TLS must be answered 'N' (inside TLS)"
    );
    c.startup(Some("trust_user.tenant_a"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("startup after the second 'N': {e:?}"));
    assert_eq!(c.query_one(COUNT_SQL).as_deref(), Some("2"));
    p.assert_alive();
}

fn query_right_after_sslrequest_closed(ctx: &Ctx) {
    let p = tls_proxy(ctx, "");
    let startup = startup_bytes(&[("user", "trust_user.tenant_a"), ("database", DB)]);
    for (what, tail) in [
        ("Query", query_bytes("SELECT 1")),
        ("StartupMessage", startup),
    ] {
        let mut c = RawConn::connect(p.port);
        let mut bytes = ssl_request_bytes();
        bytes.extend(tail);
        c.send(&bytes); // one write: the bytes arrive before our 'S'
        let (got, eof) = c.read_raw_until_eof(Duration::from_secs(5));
        assert!(
            eof,
            "SSLRequest + {what} in one write: connection must be closed; got {:?} and no EOF",
            &got[..got.len().min(16)]
        );
        // Never service: EOF, an ErrorResponse, or at most an 'S' after which
        // nothing but a TLS alert record (0x15) comes before the close.
        let ok = match got.first() {
            None | Some(b'E') => true,
            Some(b'S') => got.len() == 1 || got[1] == 0x15,
            Some(_) => false,
        };
        assert!(
            ok,
            "SSLRequest + {what}: expected EOF or an ErrorResponse, never service: {:?}",
            &got[..got.len().min(16)]
        );
    }
    // A well-behaved TLS client is still served.
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None).expect_ok("after"),
        "2"
    );
    p.assert_alive();
}

fn tls_handshake_stall_times_out(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = tls_proxy(ctx, "handshake_timeout = 1");
    let hello = client_hello_bytes(ca, Some(b"postgresql"));
    assert!(hello.len() > 10 && hello[0] == 0x16, "ClientHello record");
    let half = &hello[..hello.len() / 2];
    // (name, after the SSLRequest exchange?, bytes to send, then stall)
    let variants: [(&str, bool, &[u8]); 3] = [
        ("'S' then silence", true, &[]),
        ("'S' then half a ClientHello", true, half),
        ("direct TLS: half a ClientHello", false, half),
    ];
    for (what, ssl_request, bytes) in variants {
        let mut c = RawConn::connect(p.port);
        if ssl_request {
            c.send(&ssl_request_bytes());
            assert_eq!(c.read_byte(), Some(b'S'), "{what}");
        }
        c.send(bytes);
        let t0 = Instant::now();
        let (_, eof) = c.read_raw_until_eof(Duration::from_secs(3));
        assert!(
            eof,
            "{what}: not closed within 3 s of stalling (handshake_timeout = 1)"
        );
        eprintln!("{what}: closed after {:?}", t0.elapsed());
    }
    p.assert_alive();
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None)
            .expect_ok("normal TLS session after the stalls"),
        "2"
    );
}

fn direct_tls_with_alpn_psycopg(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = tls_proxy(ctx, "");
    for (sslmode, root) in [("require", None), ("verify-full", Some(ca.as_path()))] {
        let conninfo = tls_conninfo(
            p.port,
            "app_user.tenant_a",
            DB,
            sslmode,
            root,
            "sslnegotiation=direct",
        );
        let out = psycopg_query(&conninfo, Some(APP_PASSWORD), COUNT_SQL);
        assert_eq!(
            out.expect_ok(&format!("psycopg sslnegotiation=direct sslmode={sslmode}")),
            "2"
        );
        assert!(
            out.stderr.contains("ssl_in_use=True"),
            "psycopg must report TLS in use: {out:#?}"
        );
    }
    // The same client with the classic SSLRequest negotiation.
    let conninfo = tls_conninfo(p.port, "app_user.tenant_a", DB, "require", None, "");
    let out = psycopg_query(&conninfo, Some(APP_PASSWORD), COUNT_SQL);
    assert_eq!(out.expect_ok("psycopg sslnegotiation=postgres"), "2");
    p.assert_alive();
}

fn direct_tls_without_alpn_refused(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = tls_proxy(ctx, "");
    match RawConn::connect_direct_tls(p.port, ca, "localhost", None) {
        Err(e) => eprintln!("direct TLS without ALPN refused during the handshake: {e}"),
        Ok(mut c) => {
            // Handshake finished: the session must still be refused.
            c.startup(Some("trust_user.tenant_a"), DB, &[]);
            if let Ok(()) = c.auth_trust_or_cleartext(None) {
                panic!("direct TLS without ALPN on the main port was served");
            }
        }
    }
    // With ALPN postgresql the same raw client is served.
    let mut c = RawConn::connect_direct_tls(p.port, ca, "localhost", Some(b"postgresql"))
        .unwrap_or_else(|e| panic!("direct TLS with ALPN postgresql: {e}"));
    assert_eq!(
        c.alpn_protocol().as_deref(),
        Some(&b"postgresql"[..]),
        "the proxy must select ALPN postgresql"
    );
    c.startup(Some("trust_user.tenant_a"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("login over direct TLS: {e:?}"));
    assert_eq!(c.query_one(COUNT_SQL).as_deref(), Some("2"));
    p.assert_alive();
}

fn tls_port_listener(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let tls_port = free_port();
    let p = tls_proxy(ctx, &format!("tls_port = {tls_port}"));
    wait_listening(tls_port, Duration::from_secs(5));
    let mut c = RawConn::connect_direct_tls(tls_port, ca, "localhost", Some(b"postgresql"))
        .unwrap_or_else(|e| panic!("direct TLS on tls_port: {e}"));
    c.startup(Some("trust_user.tenant_a"), DB, &[]);
    c.auth_trust_or_cleartext(None)
        .unwrap_or_else(|e| panic!("login on tls_port: {e:?}"));
    assert_eq!(
        c.query_one("SELECT current_setting('app.current_tenant_id')")
            .as_deref(),
        Some("tenant_a")
    );
    assert_eq!(c.query_one(COUNT_SQL).as_deref(), Some("2"));
    // A real client (libpq 18, direct negotiation) on tls_port.
    let conninfo = tls_conninfo(
        tls_port,
        "app_user.tenant_a",
        DB,
        "verify-full",
        Some(ca),
        "sslnegotiation=direct",
    );
    let out = psycopg_query(&conninfo, Some(APP_PASSWORD), COUNT_SQL);
    assert_eq!(out.expect_ok("psycopg direct TLS on tls_port"), "2");
    // The main port keeps its SSLRequest behaviour.
    assert_eq!(
        psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "require", None).expect_ok("main port"),
        "2"
    );
    p.assert_alive();
}

// ---------------------------------------------------------------- upstream side

/// A cancel crosses the proxy→server link inside TLS when upstream_tls says
/// so (SSLRequest, handshake, then the CancelRequest), and still works.
fn cancel_over_upstream_tls(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = ctx.proxy(&upstream_conf("verify-full", ca));
    let mut c = raw_trust_login(p.port).unwrap_or_else(|e| panic!("raw login: {e:?}"));
    let (pid, key) = c.backend_key.expect("BackendKeyData");
    c.send_query("SELECT pg_sleep(30)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let mut k = RawConn::connect(p.port);
    k.send(&common::cancel_request_bytes(pid, key));
    let e = c
        .read_query_result()
        .expect_err("pg_sleep(30) must be cancelled");
    assert_eq!(e.code, "57014", "{e:?}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    p.assert_alive();
}

/// `query_timeout`: the proxy's own CancelRequest goes through the same
/// SSLRequest and TLS as the session (passthrough and transaction pooling).
fn query_timeout_cancel_over_upstream_tls(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    for pooled in [false, true] {
        let conf = format!("{}query_timeout = 1\n", upstream_conf("verify-full", ca));
        let p = if pooled {
            common::pooled::pooled_proxy(ctx, "transaction", &conf)
        } else {
            ctx.proxy(&conf)
        };
        let mut c = if pooled {
            common::pooled::pooled_login(&p, "app_user.tenant_a")
        } else {
            raw_trust_login(p.port).unwrap_or_else(|e| panic!("raw login: {e:?}"))
        };
        c.set_read_timeout(Duration::from_secs(40));
        let t0 = Instant::now();
        let e = c
            .simple_query("SELECT pg_sleep(30)")
            .expect_err("pg_sleep(30) must be cancelled");
        assert_eq!(e.code, "57014", "pooled={pooled}: {e:?}");
        assert!(e.message.contains("query timeout"), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(25), "pooled={pooled}");
        assert_eq!(
            c.query_one("SELECT current_setting('app.current_tenant_id')")
                .as_deref(),
            Some("tenant_a"),
            "pooled={pooled}: the session goes on"
        );
        assert_eq!(c.query_one(SSL_SQL).as_deref(), Some("t"));
        assert!(
            p.log().contains("query_cancel_delivered"),
            "pooled={pooled}: {}",
            p.log_tail(20)
        );
        p.assert_alive();
    }
}

fn upstream_verify_full_pg_stat_ssl(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = ctx.proxy(&upstream_conf("verify-full", ca));
    // Plaintext clients; the proxy's upstream leg is TLS.
    assert_eq!(q_plain(p.port, "trust_user.tenant_a", SSL_SQL), "t");
    assert_eq!(
        q_plain(p.port, "trust_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2"
    );
    // SCRAM relayed over the TLS upstream (server may offer SCRAM-SHA-256-PLUS).
    assert_eq!(
        q_plain(p.port, "app_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2"
    );
    let mut c = raw_trust_login(p.port).unwrap_or_else(|e| panic!("raw login: {e:?}"));
    assert_eq!(c.query_one(SSL_SQL).as_deref(), Some("t"));
    p.assert_alive();

    // upstream_host as an IP literal: verified against the IP SAN 127.0.0.1.
    let p2 = ctx.proxy(&format!(
        "upstream_tls = verify-full\nupstream_tls_ca = {}\nupstream_host = 127.0.0.1\n",
        path(ca)
    ));
    assert_eq!(q_plain(p2.port, "trust_user.tenant_a", SSL_SQL), "t");
    p2.assert_alive();
}

fn upstream_wrong_ca_fails(ctx: &Ctx) {
    let p = ctx.proxy(&upstream_conf("verify-full", &ctx.pki().other_ca.cert));
    let e = expect_fatal_mentioning(
        p.port,
        &["certificate", "tls", "ssl"],
        "verify-full with an unrelated CA",
    );
    eprintln!("wrong CA: {e:?}");
    let out = psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "disable", None);
    assert!(!out.success(), "psql must fail too: {out:#?}");
    let err = out.stderr.to_lowercase();
    assert!(
        ["certificate", "tls", "ssl"]
            .iter()
            .any(|w| err.contains(w)),
        "psql's error must mention the certificate/TLS: {out:#?}"
    );
    p.assert_alive();
}

fn upstream_verify_ca_vs_full_name_mismatch(ctx: &Ctx) {
    let pki = ctx.pki();
    let _restore = RestoreServerTls(ctx);
    ctx.cluster.set_server_cert(&pki.wrong_name, "wrong_name");
    // Sanity, straight to PostgreSQL with libpq: chain valid, name wrong.
    let port = ctx.cluster.port;
    let direct = psql_t(
        port,
        "trust_user",
        "SELECT 1",
        "verify-ca",
        Some(&pki.ca.cert),
    );
    assert_eq!(direct.expect_ok("direct libpq verify-ca"), "1");
    let direct = psql_t(
        port,
        "trust_user",
        "SELECT 1",
        "verify-full",
        Some(&pki.ca.cert),
    );
    assert!(
        !direct.success(),
        "setup: direct verify-full must fail: {direct:#?}"
    );

    let p = ctx.proxy(&upstream_conf("verify-ca", &pki.ca.cert));
    assert_eq!(
        q_plain(p.port, "trust_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2",
        "verify-ca ignores the host name"
    );
    p.assert_alive();
    let p = ctx.proxy(&upstream_conf("verify-full", &pki.ca.cert));
    expect_fatal_mentioning(
        p.port,
        &["certificate", "tls", "ssl", "name"],
        "verify-full against a certificate for wrong.example",
    );
    p.assert_alive();
}

fn upstream_require_against_ssl_off_fails(ctx: &Ctx) {
    let _restore = RestoreServerTls(ctx);
    ctx.cluster.set_ssl(false);
    let p = ctx.proxy(&upstream_conf("require", &ctx.pki().ca.cert));
    let e = expect_fatal_mentioning(p.port, &["tls", "ssl"], "upstream_tls = require, ssl = off");
    assert_eq!(e.code, "08006", "{e:?}");
    let out = psql_t(p.port, "app_user.tenant_a", COUNT_SQL, "disable", None);
    assert!(!out.success(), "psql must fail too: {out:#?}");
    p.assert_alive();
}

fn upstream_prefer_falls_back(ctx: &Ctx) {
    let _restore = RestoreServerTls(ctx);
    let p = ctx.proxy(&upstream_conf("prefer", &ctx.pki().ca.cert));
    ctx.cluster.set_ssl(false);
    assert_eq!(
        q_plain(p.port, "trust_user.tenant_a", SSL_CTX_COUNT_SQL),
        "f|tenant_a|2",
        "prefer against ssl = off: plaintext upstream"
    );
    assert_eq!(
        q_plain(p.port, "app_user.tenant_a", SSL_CTX_COUNT_SQL),
        "f|tenant_a|2"
    );
    ctx.cluster.set_ssl(true);
    assert_eq!(
        q_plain(p.port, "trust_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2",
        "prefer against ssl = on: TLS upstream"
    );
    p.assert_alive();
}

fn upstream_true_means_verify_full(ctx: &Ctx) {
    let pki = ctx.pki();
    let p = ctx.proxy(&upstream_conf("true", &pki.ca.cert));
    assert_eq!(
        q_plain(p.port, "app_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2"
    );
    p.assert_alive();
    // It verifies: an unrelated CA fails.
    let p = ctx.proxy(&upstream_conf("true", &pki.other_ca.cert));
    expect_fatal_mentioning(
        p.port,
        &["certificate", "tls", "ssl"],
        "upstream_tls = true with an unrelated CA",
    );
    p.assert_alive();
}

fn upstream_tls_direct_against_pg15_fails(ctx: &Ctx) {
    // PostgreSQL 15 has no direct TLS: the session fails with a clear FATAL.
    let p = ctx.proxy(&format!(
        "{}upstream_tls_direct = true\n",
        upstream_conf("verify-full", &ctx.pki().ca.cert)
    ));
    let e = expect_fatal_mentioning(p.port, &["tls", "ssl"], "upstream_tls_direct against PG 15");
    eprintln!("upstream_tls_direct vs PG 15: {e:?}");
    p.assert_alive();
}

// ---------------------------------------------------------------- reload, both sides

fn sighup_reloads_certificates(ctx: &Ctx) {
    let pki = ctx.pki();
    let dir = ctx.cluster.subdir("tls-reload");
    let (cert, key): (PathBuf, PathBuf) = (dir.join("cert.pem"), dir.join("key.pem"));
    copy_file(&pki.server.cert, &cert);
    copy_file(&pki.server.key, &key);
    let p = ctx.proxy(&format!(
        "tls_cert = {}\ntls_key = {}\n",
        path(&cert),
        path(&key)
    ));
    let works_with = |ca: &Path| {
        psql_t(
            p.port,
            "app_user.tenant_a",
            COUNT_SQL,
            "verify-full",
            Some(ca),
        )
    };
    assert_eq!(works_with(&pki.ca.cert).expect_ok("cert A, CA A"), "2");
    assert!(!works_with(&pki.other_ca.cert).success(), "cert A, CA B");

    // Cert B (other CA) + SIGHUP: new sessions see B.
    let reloaded = p.log().matches("event=tls_reloaded").count();
    copy_file(&pki.other_server.cert, &cert);
    copy_file(&pki.other_server.key, &key);
    send_signal(p.pid(), libc::SIGHUP);
    wait_log_count(&p, "event=tls_reloaded", reloaded, Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(5), || works_with(&pki.other_ca.cert)
            .success()),
        "after SIGHUP, verify-full with CA B must work: {:#?}",
        works_with(&pki.other_ca.cert)
    );
    assert_eq!(works_with(&pki.other_ca.cert).expect_ok("cert B"), "2");
    assert!(
        !works_with(&pki.ca.cert).success(),
        "after the reload, CA A must no longer verify"
    );

    // Garbage + SIGHUP: keeps B, logs why.
    let failed = p.log().matches("event=tls_reload_failed").count();
    replace_file(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n");
    send_signal(p.pid(), libc::SIGHUP);
    wait_log_count(
        &p,
        "event=tls_reload_failed",
        failed,
        Duration::from_secs(5),
    );
    p.assert_alive();
    assert_eq!(
        works_with(&pki.other_ca.cert).expect_ok("cert B kept after a bad reload"),
        "2"
    );
    p.assert_alive();
}

fn tls_both_sides_scram(ctx: &Ctx) {
    let ca = &ctx.pki().ca.cert;
    let p = tls_proxy(ctx, &upstream_conf("verify-full", ca));
    // libpq 15 defaults: channel_binding=prefer; SCRAM with app_user.
    let out = psql_t(
        p.port,
        "app_user.tenant_a",
        SSL_CTX_COUNT_SQL,
        "verify-full",
        Some(ca),
    );
    assert_eq!(
        out.expect_ok("client TLS + upstream verify-full + SCRAM"),
        "t|tenant_a|2"
    );
    let out = psql_t(
        p.port,
        "app_user.tenant_a",
        SSL_CTX_COUNT_SQL,
        "require",
        None,
    );
    assert_eq!(out.expect_ok("sslmode=require"), "t|tenant_a|2");
    // libpq 18 (psycopg), direct TLS, same defaults.
    let conninfo = tls_conninfo(
        p.port,
        "app_user.tenant_a",
        DB,
        "require",
        None,
        "sslnegotiation=direct",
    );
    let out = psycopg_query(&conninfo, Some(APP_PASSWORD), SSL_SQL);
    assert_eq!(out.expect_ok("psycopg both sides TLS"), "t");
    // Plaintext client, same proxy.
    assert_eq!(
        q_plain(p.port, "app_user.tenant_a", SSL_CTX_COUNT_SQL),
        "t|tenant_a|2"
    );
    // Bypass (superuser) sessions use the TLS upstream as well.
    assert_eq!(q_plain(p.port, "postgres", SSL_SQL), "t");
    p.assert_alive();
}
