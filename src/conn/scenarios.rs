//! Sans-IO scenario tests for `Session` (quinn-style `Pair`): scripted client
//! and server bytes plus a fake clock go in; the exact bytes, actions and
//! close reasons that come out are asserted. No sockets, no sleeps.
//!
//! Messages are built with `protocol::encode` where an encoder exists (and
//! with `tagged` for backend messages the proxy never sends itself), and the
//! output is split with `msgs` / `split_startup` and checked with the
//! `protocol::{frontend,backend}` decoders.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inject::ROLE_CHECK_SQL;
use super::{Action, CloseReason, Session, SessionConfig};
use crate::auth::md5::md5_password_response;
use crate::buf::{BufPool, POOL_KEEP, RING_CAPACITY};
use crate::protocol::{
    FramePhase, GSSENC_REQUEST_CODE, Limits, PROTOCOL_3_0, PROTOCOL_3_2, ProtoError,
    SSL_REQUEST_CODE, backend, encode, frontend, tag,
};

// ------------------------------------------------------------------ config

const HANDSHAKE: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(5);
const VAR: &str = "app.current_tenant";

fn cfg() -> SessionConfig {
    SessionConfig {
        tenant_separator: ".".to_string(),
        context_variables: vec![VAR.to_string()],
        value_separator: ":".to_string(),
        superuser_bypass: vec!["postgres".to_string()],
        set_role: None,
        tenant_allow: None,
        tenant_deny: None,
        handshake_timeout: HANDSHAKE,
        connect_timeout: CONNECT,
        limits: Limits::default(),
        client_tls: crate::conn::ClientTlsMode::Disable,
        upstream_tls: crate::conn::UpstreamTlsMode::Disable,
        pool: None,
        resolvers: None,
        tenant_index: 0,
        tenants: None,
        timeouts: Default::default(),
    }
}

// ------------------------------------------------------------------ driver

/// One session, its buffer pool and a fake clock.
struct Pair {
    s: Session,
    pool: BufPool,
    t0: Instant,
    offset: Duration,
}

impl Pair {
    fn new(cfg: SessionConfig) -> Self {
        let t0 = Instant::now();
        Pair {
            s: Session::new(Arc::new(cfg), t0),
            pool: BufPool::new(POOL_KEEP),
            t0,
            offset: Duration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.offset
    }

    /// Feeds as many client bytes as the session wants; returns how many.
    /// Each `handle_client_read` covers at most the free contiguous space, so
    /// small inputs arrive in one read.
    fn client_feed(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() && self.s.wants_client_read() {
            let now = self.now();
            let buf = self.s.client_read_buf(&mut self.pool);
            let n = buf.len().min(data.len() - done);
            if n == 0 {
                break;
            }
            buf[..n].copy_from_slice(&data[done..done + n]);
            self.s.handle_client_read(n, now);
            done += n;
        }
        done
    }

    fn server_feed(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() && self.s.wants_server_read() {
            let now = self.now();
            let buf = self.s.server_read_buf(&mut self.pool);
            let n = buf.len().min(data.len() - done);
            if n == 0 {
                break;
            }
            buf[..n].copy_from_slice(&data[done..done + n]);
            self.s.handle_server_read(n, now);
            done += n;
        }
        done
    }

    #[track_caller]
    fn client_send(&mut self, data: &[u8]) {
        let n = self.client_feed(data);
        assert_eq!(n, data.len(), "the session stopped reading client bytes");
    }

    #[track_caller]
    fn server_send(&mut self, data: &[u8]) {
        let n = self.server_feed(data);
        assert_eq!(n, data.len(), "the session stopped reading server bytes");
    }

    #[track_caller]
    fn client_send_bytewise(&mut self, data: &[u8]) {
        for b in data {
            self.client_send(std::slice::from_ref(b));
        }
    }

    #[track_caller]
    fn server_send_bytewise(&mut self, data: &[u8]) {
        for b in data {
            self.server_send(std::slice::from_ref(b));
        }
    }

    /// Writes at most `max` bytes of `client_output()`; returns them.
    fn take_client_output_upto(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let (a, b) = self.s.client_output();
            if (a.is_empty() && b.is_empty()) || out.len() >= max {
                break;
            }
            let room = max - out.len();
            let chunk: Vec<u8> = a.iter().chain(b.iter()).take(room).copied().collect();
            out.extend_from_slice(&chunk);
            let now = self.now();
            self.s
                .handle_client_written(chunk.len(), &mut self.pool, now);
        }
        out
    }

    fn take_server_output_upto(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let (a, b) = self.s.server_output();
            if (a.is_empty() && b.is_empty()) || out.len() >= max {
                break;
            }
            let room = max - out.len();
            let chunk: Vec<u8> = a.iter().chain(b.iter()).take(room).copied().collect();
            out.extend_from_slice(&chunk);
            let now = self.now();
            self.s
                .handle_server_written(chunk.len(), &mut self.pool, now);
        }
        out
    }

    fn take_client_output(&mut self) -> Vec<u8> {
        self.take_client_output_upto(usize::MAX)
    }

    fn take_server_output(&mut self) -> Vec<u8> {
        self.take_server_output_upto(usize::MAX)
    }

    /// The reactor saw `ConnectUpstream` and the connect succeeded.
    #[track_caller]
    fn connect(&mut self) {
        assert_eq!(self.s.poll_action(), Some(Action::ConnectUpstream));
        let now = self.now();
        self.s.handle_server_connected(now);
    }

    /// Moves the clock; fires `handle_timeout` when the deadline is due.
    fn advance(&mut self, d: Duration) {
        self.offset += d;
        let now = self.now();
        if self.s.next_deadline().is_some_and(|dl| dl <= now) {
            self.s.handle_timeout(now);
        }
    }

    fn closed(&self) -> Option<(CloseReason, String)> {
        self.s.closed().map(|(r, d)| (r, d.to_string()))
    }

    fn client_eof(&mut self) {
        let now = self.now();
        self.s.handle_client_eof(now);
    }

    fn server_eof(&mut self) {
        let now = self.now();
        self.s.handle_server_eof(now);
    }
}

// ------------------------------------------------------------ wire helpers

/// A tagged message: tag, length, body.
fn tagged(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Splits tagged messages; panics on a truncated or malformed stream.
fn msgs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 5, "truncated header: {b:?}");
        let len = i32::from_be_bytes(b[1..5].try_into().unwrap());
        let len = usize::try_from(len).unwrap();
        assert!(len >= 4 && b.len() > len, "truncated message: {b:?}");
        out.push((b[0], b[5..=len].to_vec()));
        b = &b[len + 1..];
    }
    out
}

fn tags(b: &[u8]) -> Vec<u8> {
    msgs(b).into_iter().map(|(t, _)| t).collect()
}

/// The leading untagged startup packet and the rest.
fn split_startup(b: &[u8]) -> (&[u8], &[u8]) {
    let len = usize::try_from(i32::from_be_bytes(b[..4].try_into().unwrap())).unwrap();
    b.split_at(len)
}

fn startup_with(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let p: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    let mut out = Vec::new();
    encode::startup_message(&mut out, version, &p).unwrap();
    out
}

fn startup(user: &str) -> Vec<u8> {
    startup_with(PROTOCOL_3_0, &[("user", user), ("database", "appdb")])
}

fn request(code: i32) -> Vec<u8> {
    let mut v = 8i32.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v
}

fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::error_response(&mut out, "FATAL", code, message);
    out
}

fn server_error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::error_response(&mut out, severity, code, message);
    out
}

fn client_violation(e: ProtoError) -> String {
    format!("protocol violation: {e}")
}

fn server_violation(e: ProtoError) -> String {
    format!("protocol violation by the upstream server: {e}")
}

fn auth_ok() -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_ok(&mut v);
    v
}

fn rfq(status: u8) -> Vec<u8> {
    let mut v = Vec::new();
    encode::ready_for_query(&mut v, status);
    v
}

fn param_status(name: &str, value: &str) -> Vec<u8> {
    let mut v = Vec::new();
    encode::parameter_status(&mut v, name.as_bytes(), value.as_bytes()).unwrap();
    v
}

fn key_data() -> Vec<u8> {
    let mut v = Vec::new();
    encode::backend_key_data(&mut v, 4242, &[1, 2, 3, 4]).unwrap();
    v
}

fn data_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = i16::try_from(cols.len()).unwrap().to_be_bytes().to_vec();
    for c in cols {
        match c {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    tagged(tag::DATA_ROW, &body)
}

fn command_complete(t: &str) -> Vec<u8> {
    let mut body = t.as_bytes().to_vec();
    body.push(0);
    tagged(tag::COMMAND_COMPLETE, &body)
}

fn parse_complete() -> Vec<u8> {
    tagged(tag::PARSE_COMPLETE, &[])
}

fn bind_complete() -> Vec<u8> {
    tagged(tag::BIND_COMPLETE, &[])
}

fn query(sql: &str) -> Vec<u8> {
    let mut v = Vec::new();
    encode::query(&mut v, sql.as_bytes()).unwrap();
    v
}

/// The answers to the first half of the batch (set_config): `1 2 D C`.
fn set_answers() -> Vec<u8> {
    [
        parse_complete(),
        bind_complete(),
        data_row(&[Some(b"acme"), Some(b"app_user")]),
        command_complete("SELECT 1"),
    ]
    .concat()
}

/// The role-check answers with the given rows: `1 2 D* C Z(I)`.
fn check_answers(rows: &[[&str; 3]]) -> Vec<u8> {
    let mut v = [parse_complete(), bind_complete()].concat();
    for r in rows {
        v.extend(data_row(&[
            Some(r[0].as_bytes()),
            Some(r[1].as_bytes()),
            Some(r[2].as_bytes()),
        ]));
    }
    v.extend(command_complete(&format!("SELECT {}", rows.len())));
    v.extend(rfq(b'I'));
    v
}

/// The full, correct injection answer: `1 2 D C 1 2 D C Z(I)`.
fn good_answers() -> Vec<u8> {
    [set_answers(), check_answers(&[["app_user", "f", "f"]])].concat()
}

/// Post-auth burst of a trust login: AuthenticationOk, S, K, Z.
fn trust_burst() -> Vec<u8> {
    [
        auth_ok(),
        param_status("server_version", "17.2"),
        key_data(),
        rfq(b'I'),
    ]
    .concat()
}

/// The parameters of a Bind body (all text format, checked by `decode_bind`).
fn bind_params(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    frontend::decode_bind(body).unwrap();
    let mut b = body;
    for _ in 0..2 {
        let nul = b.iter().position(|&c| c == 0).unwrap();
        b = &b[nul + 1..];
    }
    let nfmt = usize::from(u16::from_be_bytes([b[0], b[1]]));
    assert_eq!(nfmt, 0, "parameters must be text format");
    b = &b[2..];
    let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
    b = &b[2..];
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(b[..4].try_into().unwrap());
        b = &b[4..];
        if len < 0 {
            out.push(None);
        } else {
            let len = usize::try_from(len).unwrap();
            out.push(Some(b[..len].to_vec()));
            b = &b[len..];
        }
    }
    out
}

/// Checks the injection batch: P/B/E/P/B/E/S, the values bound as parameters
/// (`var1, val1, …, role`), no SQL splicing, the role check second.
#[track_caller]
fn assert_injection(batch: &[u8], vars: &[&str], values: &[&str], role: &str) {
    let m = msgs(batch);
    let t: Vec<u8> = m.iter().map(|(t, _)| *t).collect();
    assert_eq!(t, b"PBEPBES".to_vec(), "injection batch shape");

    let p1 = frontend::decode_parse(&m[0].1).unwrap();
    assert_eq!(p1.name, b"");
    assert_eq!(p1.param_types, 0);
    let mut sql = String::from("SELECT ");
    for i in 0..vars.len() {
        sql.push_str(&format!(
            "pg_catalog.set_config(${}, ${}, false), ",
            2 * i + 1,
            2 * i + 2
        ));
    }
    sql.push_str(&format!(
        "pg_catalog.set_config('role', ${}, false)",
        2 * vars.len() + 1
    ));
    assert_eq!(std::str::from_utf8(p1.sql).unwrap(), sql);
    for v in values {
        assert!(
            !std::str::from_utf8(p1.sql).unwrap().contains(v),
            "value {v} spliced into SQL"
        );
    }

    let mut want: Vec<Option<Vec<u8>>> = Vec::new();
    for (k, v) in vars.iter().zip(values) {
        want.push(Some(k.as_bytes().to_vec()));
        want.push(Some(v.as_bytes().to_vec()));
    }
    want.push(Some(role.as_bytes().to_vec()));
    let b1 = frontend::decode_bind(&m[1].1).unwrap();
    assert_eq!((b1.portal, b1.statement), (&b""[..], &b""[..]));
    assert_eq!(bind_params(&m[1].1), want);

    let e1 = frontend::decode_execute(&m[2].1).unwrap();
    assert_eq!((e1.portal, e1.max_rows), (&b""[..], 0));

    let p2 = frontend::decode_parse(&m[3].1).unwrap();
    assert_eq!(p2.sql, ROLE_CHECK_SQL);
    assert_eq!(bind_params(&m[4].1), Vec::<Option<Vec<u8>>>::new());
    let e2 = frontend::decode_execute(&m[5].1).unwrap();
    assert_eq!((e2.portal, e2.max_rows), (&b""[..], 0));
    frontend::decode_sync(&m[6].1).unwrap();
}

/// Startup → connect → trust burst: the session is in the injection phase
/// and the batch has been taken from the server output.
fn to_injection(cfg: SessionConfig, user: &str) -> Pair {
    let mut p = Pair::new(cfg);
    p.client_send(&startup(user));
    p.connect();
    let out = p.take_server_output();
    assert_eq!(split_startup(&out).1, b"");
    p.server_send(&trust_burst());
    let batch = p.take_server_output();
    assert_eq!(tags(&batch), b"PBEPBES".to_vec());
    p
}

/// A full trust login; the client output (R, S, K, Z) has been taken.
fn logged_in() -> Pair {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.server_send(&good_answers());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    let out = p.take_client_output();
    assert_eq!(out, [trust_burst()].concat());
    p
}

/// Drains the client output and asserts it is exactly one FATAL, then that
/// the session closed with `reason`.
#[track_caller]
fn assert_fatal_close(p: &mut Pair, code: &str, message: &str, reason: CloseReason) {
    assert_eq!(p.closed(), None, "closed before the FATAL was flushed");
    let out = p.take_client_output();
    assert_eq!(out, fatal(code, message), "client output");
    let (r, _) = p.closed().expect("closed after the flush");
    assert_eq!(r, reason);
    assert_eq!(p.take_server_output(), b"", "bytes sent to the server");
    assert!(!p.s.wants_client_read() && !p.s.wants_server_read());
}

fn xorshift_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// --------------------------------------------------------------- scenarios

#[test]
fn trust_login_rewrites_startup_and_injects_context() {
    let mut p = Pair::new(cfg());
    let params = [
        ("user", "app_user.acme"),
        ("database", "appdb"),
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
    ];
    p.client_send(&startup_with(PROTOCOL_3_2, &params));
    assert_eq!(p.take_client_output(), b"");
    // Nothing goes out before the connect completes.
    assert_eq!(p.take_server_output(), b"");
    p.connect();
    assert_eq!(p.s.poll_action(), None);

    // The server receives the startup with `user` = role, order and version kept.
    let out = p.take_server_output();
    let want = startup_with(
        PROTOCOL_3_2,
        &[
            ("user", "app_user"),
            ("database", "appdb"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ],
    );
    assert_eq!(out, want);
    let frontend::StartupPacket::Startup(s) = frontend::decode_startup(&out[4..]).unwrap() else {
        panic!("not a startup");
    };
    assert_eq!(s.version, PROTOCOL_3_2);
    assert_eq!(s.get(b"user"), Some(&b"app_user"[..]));

    // R(ok), S, K forwarded; Z held.
    p.server_send(&trust_burst());
    let to_client = p.take_client_output();
    assert_eq!(
        to_client,
        [
            auth_ok(),
            param_status("server_version", "17.2"),
            key_data()
        ]
        .concat()
    );
    assert_eq!(p.s.poll_action(), None);

    let batch = p.take_server_output();
    assert_injection(&batch, &[VAR], &["acme"], "app_user");

    // Partial answers: still no Z.
    p.server_send(&set_answers());
    assert_eq!(p.take_client_output(), b"");
    assert_eq!(p.s.poll_action(), None);
    p.server_send(&check_answers(&[["app_user", "f", "f"]]));
    assert_eq!(p.take_client_output(), rfq(b'I'));
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert_eq!(p.s.phase_name(), "transparent");
    assert_eq!(p.s.next_deadline(), None, "handshake timer cleared");
    assert_eq!(p.s.info.role, "app_user");
    assert_eq!(p.s.info.tenant, "acme");
    assert_eq!(p.s.info.database, "appdb");
    assert!(!p.s.info.bypass);

    // Transparent from here on: a query and its answer relay byte-identically.
    let q = query("SELECT 1");
    p.client_send(&q);
    assert_eq!(p.take_server_output(), q);
    let answer = [
        tagged(tag::ROW_DESCRIPTION, b"\0\0"),
        command_complete("SELECT 0"),
        rfq(b'I'),
    ]
    .concat();
    p.server_send(&answer);
    assert_eq!(p.take_client_output(), answer);
}

#[test]
fn pipelined_query_is_held_until_the_context_is_set() {
    let mut p = Pair::new(cfg());
    let q = query("SELECT secret FROM t");
    let q2 = query("SELECT 2");
    // Startup and two queries in ONE read.
    let first = [startup("app_user.acme"), q.clone(), q2.clone()].concat();
    assert!(first.len() < RING_CAPACITY);
    p.client_send(&first);
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&auth_ok());
    assert_eq!(p.take_server_output(), b"");
    p.server_send(&[param_status("a", "b"), key_data(), rfq(b'I')].concat());
    let batch = p.take_server_output();
    assert_injection(&batch, &[VAR], &["acme"], "app_user");
    // Every answer but the last one: still held.
    let answers = good_answers();
    let z = rfq(b'I');
    p.server_send(&answers[..answers.len() - z.len()]);
    assert_eq!(p.take_server_output(), b"");
    // Z: the held bytes go out, byte-identical, after the batch.
    p.server_send(&z);
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert_eq!(p.take_server_output(), [q, q2].concat());
    assert_eq!(
        p.take_client_output(),
        [auth_ok(), param_status("a", "b"), key_data(), rfq(b'I')].concat()
    );
}

#[test]
fn scram_relay_over_split_reads() {
    let mut p = Pair::new(cfg());
    p.client_send_bytewise(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));

    let mut sasl = Vec::new();
    encode::auth_sasl(&mut sasl, &[b"SCRAM-SHA-256"]).unwrap();
    let mut first = Vec::new();
    encode::sasl_initial_response(
        &mut first,
        b"SCRAM-SHA-256",
        Some(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"),
    )
    .unwrap();
    let mut cont = Vec::new();
    encode::auth_sasl_continue(
        &mut cont,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    )
    .unwrap();
    let mut fin = Vec::new();
    encode::sasl_response(
        &mut fin,
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    )
    .unwrap();
    let mut final_ = Vec::new();
    encode::auth_sasl_final(
        &mut final_,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    )
    .unwrap();

    // Round 1: AuthenticationSASL, one byte at a time: forwarded only once whole.
    p.server_send_bytewise(&sasl[..sasl.len() - 1]);
    assert_eq!(p.take_client_output(), b"");
    p.server_send(&sasl[sasl.len() - 1..]);
    assert_eq!(p.take_client_output(), sasl);
    p.client_send_bytewise(&first[..first.len() - 1]);
    assert_eq!(p.take_server_output(), b"");
    p.client_send(&first[first.len() - 1..]);
    assert_eq!(p.take_server_output(), first);

    // Round 2.
    p.server_send_bytewise(&cont);
    assert_eq!(p.take_client_output(), cont);
    p.client_send_bytewise(&fin);
    assert_eq!(p.take_server_output(), fin);

    // SASLFinal + AuthenticationOk + the rest, byte by byte.
    p.server_send_bytewise(&[final_.clone(), trust_burst()].concat());
    assert_eq!(
        p.take_client_output(),
        [
            final_,
            auth_ok(),
            param_status("server_version", "17.2"),
            key_data()
        ]
        .concat()
    );
    let batch = p.take_server_output();
    assert_injection(&batch, &[VAR], &["acme"], "app_user");
    p.server_send_bytewise(&good_answers());
    assert_eq!(p.take_client_output(), rfq(b'I'));
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
}

#[test]
fn client_bytes_before_a_challenge_are_held() {
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    // A password sent before the server asked for one is not forwarded.
    let mut pw = Vec::new();
    encode::password_message(&mut pw, b"secret").unwrap();
    p.client_send(&pw);
    assert_eq!(p.take_server_output(), b"");
    // Once the challenge is relayed, it answers it.
    let mut clear = Vec::new();
    encode::auth_cleartext_password(&mut clear);
    p.server_send(&clear);
    assert_eq!(p.take_client_output(), clear);
    assert_eq!(p.take_server_output(), pw);
}

#[test]
fn md5_challenge_is_answered_for_the_role() {
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    let salt = [0x93, 0x2c, 0x1f, 0x07];
    let mut md5 = Vec::new();
    encode::auth_md5_password(&mut md5, salt);
    p.server_send(&md5);
    // The client is asked for cleartext instead.
    let out = p.take_client_output();
    assert_eq!(out, b"R\0\0\0\x08\0\0\0\x03");
    assert_eq!(
        backend::decode_auth(&out[5..]).unwrap(),
        backend::Auth::CleartextPassword
    );
    let mut pw = Vec::new();
    encode::password_message(&mut pw, b"s3cret").unwrap();
    p.client_send(&pw);
    let sent = p.take_server_output();
    let m = msgs(&sent);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, tag::PASSWORD_MESSAGE);
    let hash = frontend::decode_password(&m[0].1).unwrap();
    assert_eq!(hash, md5_password_response(b"app_user", b"s3cret", salt));
    assert_ne!(
        hash,
        md5_password_response(b"app_user.acme", b"s3cret", salt),
        "hash must cover the role, not the tenant user name"
    );
    assert!(!sent.windows(6).any(|w| w == b"s3cret"), "cleartext leaked");
    // Then the login proceeds.
    p.server_send(&trust_burst());
    assert_eq!(tags(&p.take_server_output()), b"PBEPBES".to_vec());
}

#[test]
fn auth_error_is_relayed_verbatim_then_closed() {
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    let mut clear = Vec::new();
    encode::auth_cleartext_password(&mut clear);
    p.server_send(&clear);
    assert_eq!(p.take_client_output(), clear);
    let mut pw = Vec::new();
    encode::password_message(&mut pw, b"wrong").unwrap();
    // The password plus a pipelined query in one read.
    p.client_send(&[pw.clone(), query("SELECT 1")].concat());
    assert_eq!(p.take_server_output(), pw);
    let err = server_error(
        "FATAL",
        "28P01",
        "password authentication failed for user \"app_user\"",
    );
    p.server_send(&err);
    assert_eq!(p.closed(), None, "closes only after the flush");
    assert!(!p.s.wants_client_read());
    assert_eq!(
        p.take_server_output(),
        b"",
        "no client byte after the error"
    );
    assert_eq!(p.take_client_output(), err);
    assert_eq!(p.closed(), Some((CloseReason::AuthFailed, "28P01".into())));
    assert_eq!(p.take_server_output(), b"");
}

#[test]
fn auth_error_followed_by_more_server_bytes_relays_only_the_error() {
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    let err = server_error("FATAL", "28P01", "password authentication failed");
    p.server_send(&[err.clone(), auth_ok(), rfq(b'I')].concat());
    assert_eq!(p.take_client_output(), err);
    assert_eq!(p.closed(), Some((CloseReason::AuthFailed, "28P01".into())));
}

#[test]
fn injection_error_is_fatal_with_the_server_sqlstate() {
    let mut p = Pair::new(cfg());
    // A pipelined query that must never reach the server.
    p.client_send(&[startup("app_user.acme"), query("SELECT 1")].concat());
    p.connect();
    p.take_server_output();
    p.server_send(&trust_burst());
    p.take_client_output();
    assert_eq!(tags(&p.take_server_output()), b"PBEPBES".to_vec());
    p.server_send(&[parse_complete(), bind_complete()].concat());
    p.server_send(&server_error(
        "ERROR",
        "22023",
        "invalid value for parameter \"role\"",
    ));
    assert_fatal_close(
        &mut p,
        "22023",
        "could not set the tenant context: invalid value for parameter \"role\"",
        CloseReason::InjectionFailed,
    );
    assert_eq!(p.s.poll_action(), None, "never SessionStarted");
}

#[test]
fn injection_error_then_ready_for_query_in_one_read_never_releases_z() {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    // What PostgreSQL really sends: the error, then (after Sync) Z(I), in one read.
    let err = server_error("ERROR", "42704", "role \"app_user\" does not exist");
    p.server_send(&[parse_complete(), bind_complete(), err, rfq(b'I')].concat());
    assert_fatal_close(
        &mut p,
        "42704",
        "could not set the tenant context: role \"app_user\" does not exist",
        CloseReason::InjectionFailed,
    );
}

#[test]
fn injection_error_without_sqlstate_uses_xx000() {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    // E with only a message field.
    p.server_send(&tagged(tag::ERROR_RESPONSE, b"Mboom\0\0"));
    assert_fatal_close(
        &mut p,
        "XX000",
        "could not set the tenant context: boom",
        CloseReason::InjectionFailed,
    );
}

#[test]
fn privileged_or_missing_role_rows_are_refused() {
    let msg = "tenant sessions are refused for superuser or BYPASSRLS roles";
    let cases: [&[[&str; 3]]; 4] = [
        &[["app_user", "t", "f"]],
        &[["app_user", "f", "t"]],
        &[["app_user", "f", "f"], ["postgres", "t", "t"]],
        &[],
    ];
    for rows in cases {
        let mut p = to_injection(cfg(), "app_user.acme");
        p.take_client_output();
        p.server_send(&[set_answers(), check_answers(rows)].concat());
        assert_eq!(p.s.poll_action(), None, "rows {rows:?}");
        assert_fatal_close(&mut p, "42501", msg, CloseReason::RoleRefused);
    }
}

#[test]
fn refused_role_check_relays_nothing_after_the_fatal() {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    let mut notice = Vec::new();
    encode::notice_response(&mut notice, "NOTICE", "00000", "after Z");
    p.server_send(
        &[
            set_answers(),
            check_answers(&[["app_user", "t", "f"]]),
            notice,
        ]
        .concat(),
    );
    assert_fatal_close(
        &mut p,
        "42501",
        "tenant sessions are refused for superuser or BYPASSRLS roles",
        CloseReason::RoleRefused,
    );
}

#[test]
fn out_of_order_injection_answer_is_an_upstream_violation() {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    p.server_send(&[parse_complete(), rfq(b'I')].concat());
    let e = ProtoError::UnexpectedTag {
        phase: FramePhase::Server,
        tag: b'Z',
    };
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(e),
        CloseReason::ServerProtocol,
    );

    // Z(T) at the end is out of order too.
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    let a = good_answers();
    p.server_send(&[&a[..a.len() - 6], &rfq(b'T')[..]].concat());
    let e = ProtoError::UnexpectedTag {
        phase: FramePhase::Server,
        tag: b'Z',
    };
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(e),
        CloseReason::ServerProtocol,
    );
}

#[test]
fn notices_and_parameter_status_during_injection_are_forwarded() {
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    let mut notice = Vec::new();
    encode::notice_response(&mut notice, "NOTICE", "00000", "hello");
    let ps = param_status("is_superuser", "off");
    let a = set_answers();
    p.server_send(&[notice.clone(), a, ps.clone()].concat());
    p.server_send(&check_answers(&[["app_user", "f", "f"]]));
    assert_eq!(p.take_client_output(), [notice, ps, rfq(b'I')].concat());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
}

#[test]
fn ssl_and_gssenc_requests_are_answered_n() {
    let mut p = Pair::new(cfg());
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(p.take_client_output(), b"N");
    assert_eq!(p.s.poll_action(), None);
    p.client_send(&request(GSSENC_REQUEST_CODE));
    assert_eq!(p.take_client_output(), b"N");
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
}

#[test]
fn ssl_request_followed_by_bytes_in_the_same_read_is_rejected() {
    let mut p = Pair::new(cfg());
    p.client_send(&[request(SSL_REQUEST_CODE), startup("app_user.acme")].concat());
    assert_eq!(p.s.poll_action(), None);
    assert_fatal_close(
        &mut p,
        "08P01",
        "received unencrypted data after SSL request",
        CloseReason::ClientProtocol,
    );
}

#[test]
fn three_negotiation_packets_are_a_violation() {
    let mut p = Pair::new(cfg());
    for code in [SSL_REQUEST_CODE, GSSENC_REQUEST_CODE] {
        p.client_send(&request(code));
        assert_eq!(p.take_client_output(), b"N");
    }
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_fatal_close(
        &mut p,
        "08P01",
        &client_violation(ProtoError::BadValue("repeated encryption request")),
        CloseReason::ClientProtocol,
    );
}

#[test]
fn cancel_request_is_forwarded_verbatim_then_closed() {
    let mut p = Pair::new(cfg());
    let mut cancel = Vec::new();
    encode::cancel_request(&mut cancel, 4242, &[9, 8, 7, 6]).unwrap();
    assert_eq!(cancel.len(), 16);
    p.client_send(&cancel);
    assert_eq!(p.take_server_output(), b"", "not before the connect");
    p.connect();
    assert_eq!(p.closed(), None);
    assert_eq!(p.take_server_output(), cancel);
    assert_eq!(
        p.closed(),
        Some((CloseReason::CancelForwarded, String::new()))
    );
    assert_eq!(p.take_client_output(), b"");

    // A cancel whose connect times out closes quietly.
    let mut p = Pair::new(cfg());
    p.client_send(&cancel);
    assert_eq!(p.s.poll_action(), Some(Action::ConnectUpstream));
    p.advance(CONNECT);
    assert_eq!(
        p.closed(),
        Some((CloseReason::ConnectTimeout, String::new()))
    );
    assert_eq!(p.take_client_output(), b"");
}

#[test]
fn bypass_user_is_relayed_verbatim_from_connect_on() {
    let mut p = Pair::new(cfg());
    let s = startup_with(
        PROTOCOL_3_0,
        &[
            ("user", "postgres"),
            ("database", "admin"),
            ("options", "-c x=y"),
        ],
    );
    let q = query("SELECT 1");
    p.client_send(&[s.clone(), q.clone()].concat());
    assert_eq!(p.take_server_output(), b"");
    p.connect();
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert!(p.s.info.bypass);
    assert_eq!(p.s.info.role, "postgres");
    assert_eq!(p.take_server_output(), [s, q].concat());
    // Server bytes are relayed untouched, even ones the tenant path would inspect.
    let mut sasl = Vec::new();
    encode::auth_sasl(&mut sasl, &[b"SCRAM-SHA-256"]).unwrap();
    p.server_send(&sasl);
    assert_eq!(p.take_client_output(), sasl);
    let blob = xorshift_bytes(7, 3000);
    p.client_send(&blob);
    assert_eq!(p.take_server_output(), blob);
    p.server_send(&blob);
    assert_eq!(p.take_client_output(), blob);
}

#[test]
fn bad_usernames_are_refused_before_any_connect() {
    let two_vars = || SessionConfig {
        context_variables: vec!["app.tenant".into(), "app.region".into()],
        ..cfg()
    };
    let cases: Vec<(SessionConfig, Vec<u8>, &str, String)> = vec![
        (
            cfg(),
            startup_with(PROTOCOL_3_0, &[("database", "appdb")]),
            "08004",
            "no username in StartupMessage".into(),
        ),
        (
            cfg(),
            startup("app_user"),
            "28000",
            "username must contain context values separated by '.'".into(),
        ),
        (
            cfg(),
            startup(".acme"),
            "28000",
            "empty role or context in username".into(),
        ),
        (
            cfg(),
            startup("app_user."),
            "28000",
            "empty role or context in username".into(),
        ),
        (
            two_vars(),
            startup("app_user.acme"),
            "28000",
            "expected 2 context value(s), got 1".into(),
        ),
        (
            two_vars(),
            startup("app_user.a:b:c"),
            "28000",
            "expected 2 context value(s), got 3".into(),
        ),
    ];
    for (c, s, code, msg) in cases {
        let mut p = Pair::new(c);
        p.client_send(&s);
        assert_eq!(p.s.poll_action(), None, "{msg}");
        assert_fatal_close(&mut p, code, &msg, CloseReason::BadUsername);
    }
}

#[test]
fn tenant_deny_and_allow_lists_refuse_without_connect() {
    let deny = SessionConfig {
        tenant_deny: Some(vec!["evil".into()]),
        ..cfg()
    };
    let allow = SessionConfig {
        tenant_allow: Some(vec!["acme".into()]),
        ..cfg()
    };
    for (c, user) in [
        (deny.clone(), "app_user.evil"),
        (allow.clone(), "app_user.other"),
    ] {
        let mut p = Pair::new(c);
        p.client_send(&startup(user));
        assert_eq!(p.s.poll_action(), None);
        assert_fatal_close(
            &mut p,
            "28000",
            "tenant access denied",
            CloseReason::TenantDenied,
        );
    }
    // Listed / not denied tenants go ahead.
    for (c, user) in [(deny, "app_user.acme"), (allow, "app_user.acme")] {
        let mut p = Pair::new(c);
        p.client_send(&startup(user));
        assert_eq!(p.s.poll_action(), Some(Action::ConnectUpstream));
    }
}

#[test]
fn handshake_timeout_names_the_phase() {
    let msg = |phase: &str| {
        format!(
            "handshake timeout: no progress in the {phase} phase within {}s",
            HANDSHAKE.as_secs()
        )
    };
    // Connect timer longer than the handshake timer, so the handshake fires first.
    let slow_connect = || SessionConfig {
        connect_timeout: Duration::from_secs(600),
        ..cfg()
    };

    // startup: half a startup packet.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme")[..6]);
    p.advance(HANDSHAKE - Duration::from_millis(1));
    assert_eq!(p.closed(), None);
    assert_eq!(p.take_client_output(), b"", "not yet");
    p.advance(Duration::from_millis(1));
    assert_fatal_close(
        &mut p,
        "08006",
        &msg("startup"),
        CloseReason::HandshakeTimeout,
    );

    // upstream connect.
    let mut p = Pair::new(slow_connect());
    p.client_send(&startup("app_user.acme"));
    assert_eq!(p.s.poll_action(), Some(Action::ConnectUpstream));
    p.advance(HANDSHAKE);
    assert_fatal_close(
        &mut p,
        "08006",
        &msg("upstream connect"),
        CloseReason::HandshakeTimeout,
    );

    // authentication.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    p.advance(HANDSHAKE);
    assert_fatal_close(
        &mut p,
        "08006",
        &msg("authentication"),
        CloseReason::HandshakeTimeout,
    );

    // context injection: the held Z is never released.
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    p.server_send(&set_answers());
    p.advance(HANDSHAKE);
    assert_fatal_close(
        &mut p,
        "08006",
        &msg("context injection"),
        CloseReason::HandshakeTimeout,
    );

    // The session closes even if the client never reads the FATAL.
    let mut p = Pair::new(cfg());
    p.advance(HANDSHAKE);
    assert_eq!(p.closed(), None);
    p.advance(Duration::from_secs(5));
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::HandshakeTimeout));
}

#[test]
fn connect_timeout_and_connect_failure_send_08006() {
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    assert_eq!(p.s.poll_action(), Some(Action::ConnectUpstream));
    p.advance(CONNECT - Duration::from_millis(1));
    assert_eq!(p.take_client_output(), b"");
    p.advance(Duration::from_millis(1));
    assert_fatal_close(
        &mut p,
        "08006",
        &format!(
            "could not connect to the upstream server: timeout after {}s",
            CONNECT.as_secs()
        ),
        CloseReason::ConnectTimeout,
    );

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    assert_eq!(p.s.poll_action(), Some(Action::ConnectUpstream));
    let now = p.now();
    p.s.handle_server_connect_failed("Connection refused (os error 111)", now);
    assert_fatal_close(
        &mut p,
        "08006",
        "could not connect to the upstream server: Connection refused (os error 111)",
        CloseReason::ConnectFailed,
    );
}

#[test]
fn client_eof_in_every_handshake_phase_closes_at_once() {
    let mut phases: Vec<(&str, Pair)> = Vec::new();

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme")[..5]);
    phases.push(("startup", p));

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    phases.push(("upstream connect", p));

    let mut p = Pair::new(cfg());
    p.client_send(&startup("postgres"));
    phases.push(("upstream connect", p)); // bypass connecting

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    phases.push(("authentication", p));

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    let mut clear = Vec::new();
    encode::auth_cleartext_password(&mut clear);
    p.server_send(&clear);
    phases.push(("authentication", p)); // a challenge outstanding

    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.server_send(&auth_ok());
    phases.push(("post-auth", p));

    let p = to_injection(cfg(), "app_user.acme");
    phases.push(("context injection", p));

    for (phase, mut p) in phases {
        assert_eq!(p.s.phase_name(), phase);
        p.client_eof();
        assert_eq!(
            p.closed(),
            Some((CloseReason::ClientEof, format!("during {phase}"))),
            "{phase}"
        );
        assert!(!p.s.wants_client_read() && !p.s.wants_server_read());
        assert_eq!(p.s.next_deadline(), None, "{phase}: no timer left");
    }
}

#[test]
fn client_eof_in_transparent_flushes_pending_bytes_first() {
    let mut p = logged_in();
    let q = query("SELECT 1");
    p.client_send(&q);
    p.client_eof();
    assert_eq!(p.closed(), None);
    assert_eq!(p.take_server_output(), q);
    assert_eq!(p.closed(), Some((CloseReason::ClientEof, String::new())));

    let mut p = logged_in();
    p.client_eof();
    assert_eq!(p.closed(), Some((CloseReason::ClientEof, String::new())));
}

#[test]
fn server_eof_during_handshake_sends_08006() {
    // Mid-authentication.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    p.server_send(&b"R\0\0\0"[..]); // half a message
    p.server_eof();
    assert_fatal_close(
        &mut p,
        "08006",
        "upstream server closed the connection during authentication",
        CloseReason::ServerEof,
    );

    // During injection.
    let mut p = to_injection(cfg(), "app_user.acme");
    p.take_client_output();
    p.server_eof();
    assert_fatal_close(
        &mut p,
        "08006",
        "upstream server closed the connection during context injection",
        CloseReason::ServerEof,
    );

    // Transparent: flush what the server sent, then close.
    let mut p = logged_in();
    let z = rfq(b'I');
    p.server_send(&z);
    p.server_eof();
    assert_eq!(p.take_client_output(), z);
    assert_eq!(p.closed(), Some((CloseReason::ServerEof, String::new())));
}

#[test]
fn transparent_relay_of_one_mib_each_way_is_byte_identical() {
    let mut p = logged_in();
    const TOTAL: usize = 1 << 20;
    let up = xorshift_bytes(0x1234_5678, TOTAL);
    let down = xorshift_bytes(0x8765_4321, TOTAL);
    let (mut up_sent, mut down_sent) = (0usize, 0usize);
    let (mut up_got, mut down_got) = (Vec::new(), Vec::new());
    let mut chunk = 1usize;
    let mut steps = 0;
    while up_got.len() < TOTAL || down_got.len() < TOTAL {
        steps += 1;
        assert!(steps < 100_000, "no progress");
        chunk = (chunk * 7 + 13) % 40_000 + 1; // varied sizes, some > a ring
        let end = (up_sent + chunk).min(TOTAL);
        up_sent += p.client_feed(&up[up_sent..end]);
        let end = (down_sent + chunk).min(TOTAL);
        down_sent += p.server_feed(&down[down_sent..end]);
        // Partial writes, so the rings wrap.
        up_got.extend(p.take_server_output_upto(chunk / 2 + 1));
        down_got.extend(p.take_client_output_upto(chunk / 3 + 1));
    }
    assert!(up_got == up, "client→server bytes differ");
    assert!(down_got == down, "server→client bytes differ");
    assert_eq!(p.closed(), None);
    // Both rings are back in the pool once empty.
    assert_eq!(p.pool.free_count(), 2);
}

#[test]
fn full_ring_stops_reading_backpressure() {
    let mut p = logged_in();
    let blob = xorshift_bytes(99, 3 * RING_CAPACITY);
    // Client → server: at most one ring is held.
    let n = p.client_feed(&blob);
    assert_eq!(n, RING_CAPACITY);
    assert!(!p.s.wants_client_read());
    assert!(
        p.s.wants_server_read(),
        "the other direction is independent"
    );
    let out = p.take_server_output_upto(1000);
    assert_eq!(out, blob[..1000]);
    assert!(p.s.wants_client_read());
    assert_eq!(p.client_feed(&blob[n..]), 1000);
    assert!(!p.s.wants_client_read());
    let rest = p.take_server_output();
    assert_eq!(rest, blob[1000..RING_CAPACITY + 1000]);

    // Server → client the same way.
    let n = p.server_feed(&blob);
    assert_eq!(n, RING_CAPACITY);
    assert!(!p.s.wants_server_read());
    assert!(p.s.wants_client_read());
    assert_eq!(p.take_client_output(), blob[..RING_CAPACITY]);
    assert!(p.s.wants_server_read());
}

#[test]
fn ring_buffers_go_back_to_the_pool_when_idle() {
    let mut p = logged_in();
    // Login: both rings were returned after the Z was flushed.
    assert_eq!(p.pool.free_count(), 2);
    let q = query("SELECT 1");
    p.client_send(&q);
    assert_eq!(p.pool.free_count(), 1, "c2s checked out");
    let out = p.take_server_output_upto(3);
    assert_eq!(p.pool.free_count(), 1, "not empty yet");
    let out = [out, p.take_server_output()].concat();
    assert_eq!(out, q);
    assert_eq!(p.pool.free_count(), 2, "c2s back when empty");
    p.server_send(&rfq(b'I'));
    assert_eq!(p.pool.free_count(), 1);
    assert_eq!(p.take_client_output(), rfq(b'I'));
    assert_eq!(p.pool.free_count(), 2);
    // Explicit release is idempotent.
    p.s.release_idle_buffers(&mut p.pool);
    assert_eq!(p.pool.free_count(), 2);
}

#[test]
fn garbage_startup_lengths_are_client_violations() {
    let mk = |len: i32, code: i32| {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v
    };
    let cases: Vec<(Vec<u8>, ProtoError)> = vec![
        (
            mk(4, PROTOCOL_3_0),
            ProtoError::BadLength { tag: 0, len: 4 },
        ),
        (
            mk(7, PROTOCOL_3_0),
            ProtoError::BadLength { tag: 0, len: 7 },
        ),
        (
            mk(-8, PROTOCOL_3_0),
            ProtoError::BadLength { tag: 0, len: -8 },
        ),
        (
            mk(i32::MIN, SSL_REQUEST_CODE),
            ProtoError::BadLength {
                tag: 0,
                len: i32::MIN,
            },
        ),
        (
            mk(10_001, PROTOCOL_3_0),
            ProtoError::TooLong {
                tag: 0,
                len: 10_001,
                max: 10_000,
            },
        ),
        (
            mk(16, SSL_REQUEST_CODE),
            ProtoError::BadLength { tag: 0, len: 16 },
        ),
        (mk(8, 1234), ProtoError::BadStartupCode(1234)),
        (
            // A tagged Query where a startup is due.
            // 'Q' and its length read as a startup length: far too long.
            query("SELECT 1"),
            ProtoError::TooLong {
                tag: 0,
                len: usize::try_from(i32::from_be_bytes([b'Q', 0, 0, 0])).unwrap(),
                max: 10_000,
            },
        ),
    ];
    for (bytes, err) in cases {
        let mut p = Pair::new(cfg());
        p.client_send(&bytes);
        assert_eq!(p.s.poll_action(), None, "{err}");
        assert_fatal_close(
            &mut p,
            "08P01",
            &client_violation(err),
            CloseReason::ClientProtocol,
        );
    }
    // A well-framed startup whose body is malformed (no terminating NUL).
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0x.y");
    let mut bytes = (i32::try_from(body.len()).unwrap() + 4)
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(&body);
    let mut p = Pair::new(cfg());
    p.client_send(&bytes);
    let (r, _) = {
        p.take_client_output();
        p.closed().unwrap()
    };
    assert_eq!(r, CloseReason::ClientProtocol);
}

#[test]
fn garbage_from_the_server_is_an_upstream_violation() {
    // Tagged length < 4 during authentication.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.take_server_output();
    p.server_send(b"R\0\0\0\x03");
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(ProtoError::BadLength { tag: b'R', len: 3 }),
        CloseReason::ServerProtocol,
    );

    // A tag that is illegal before AuthenticationOk (a DataRow).
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.server_send(&data_row(&[Some(b"x")]));
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(ProtoError::UnexpectedTag {
            phase: FramePhase::ServerAuth,
            tag: b'D',
        }),
        CloseReason::ServerProtocol,
    );

    // An unsupported authentication method.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.server_send(&tagged(tag::AUTHENTICATION, &7i32.to_be_bytes()));
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(ProtoError::BadValue("unsupported authentication method")),
        CloseReason::ServerProtocol,
    );
}

#[test]
fn oversized_parameter_status_is_an_upstream_violation() {
    let lim = Limits::default();
    // Header announces more than inspect_max: rejected at once.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.server_send(&auth_ok());
    assert_eq!(p.take_client_output(), auth_ok());
    let len = lim.inspect_max + 1;
    let mut hdr = vec![tag::PARAMETER_STATUS];
    hdr.extend_from_slice(&i32::try_from(len).unwrap().to_be_bytes());
    p.server_send(&hdr);
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(ProtoError::TooLong {
            tag: b'S',
            len,
            max: lim.inspect_max,
        }),
        CloseReason::ServerProtocol,
    );

    // Exactly inspect_max: legal by the header, but 5 + inspect_max - 4 bytes
    // can never fit a ring; the full ring is detected, not waited on forever.
    let mut p = Pair::new(cfg());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    p.server_send(&auth_ok());
    p.take_client_output();
    let name = vec![b'a'; lim.inspect_max - 4 - 2];
    let mut body = name;
    body.extend_from_slice(b"\0\0");
    let msg = tagged(tag::PARAMETER_STATUS, &body);
    assert_eq!(msg.len(), lim.inspect_max + 1);
    let n = p.server_feed(&msg);
    assert_eq!(n, RING_CAPACITY);
    let out = p.take_client_output();
    let m = msgs(&out);
    assert_eq!(m.len(), 1);
    let f = backend::decode_error_fields(&m[0].1).unwrap();
    assert_eq!(f.code, Some(&b"08P01"[..]));
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));
}

#[test]
fn set_role_override_is_the_bound_role() {
    let c = SessionConfig {
        set_role: Some("tenant_rls".into()),
        ..cfg()
    };
    let mut p = Pair::new(c);
    p.client_send(&startup("app_user.acme"));
    p.connect();
    // The login role is still the one from the user name.
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&trust_burst());
    let batch = p.take_server_output();
    assert_injection(&batch, &[VAR], &["acme"], "tenant_rls");
    p.server_send(&good_answers());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
}

#[test]
fn several_context_variables_are_bound_in_order() {
    let c = SessionConfig {
        context_variables: vec!["app.tenant_id".into(), "app.region".into()],
        ..cfg()
    };
    let mut p = Pair::new(c);
    // A value with quotes and a semicolon is only ever a bound parameter.
    p.client_send(&startup("app_user.ac'me;--:eu"));
    p.connect();
    p.take_server_output();
    p.server_send(&trust_burst());
    let batch = p.take_server_output();
    assert_injection(
        &batch,
        &["app.tenant_id", "app.region"],
        &["ac'me;--", "eu"],
        "app_user",
    );
    p.server_send(&good_answers());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
}

// ------------------------------------------------------- session timeouts

const SEC: Duration = Duration::from_secs(1);

fn timed(t: super::SessionTimeouts) -> SessionConfig {
    SessionConfig {
        timeouts: t,
        ..cfg()
    }
}

/// A full trust login with these timeouts; the client output is taken.
fn timed_in(t: super::SessionTimeouts) -> Pair {
    let mut p = to_injection(timed(t), "app_user.acme");
    p.server_send(&good_answers());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert_eq!(p.take_client_output(), trust_burst());
    p
}

fn query_timeout(secs: u64) -> super::SessionTimeouts {
    super::SessionTimeouts {
        query: Some(Duration::from_secs(secs)),
        ..Default::default()
    }
}

/// The server's answer to a cancelled statement.
fn cancelled() -> Vec<u8> {
    [
        server_error("ERROR", "57014", "canceling statement due to user request"),
        rfq(b'I'),
    ]
    .concat()
}

/// Takes the `SendCancel` the session asks for and checks its request.
#[track_caller]
fn take_cancel(p: &mut Pair) {
    match p.s.poll_action() {
        Some(Action::SendCancel(call)) => {
            let mut want = Vec::new();
            encode::cancel_request(&mut want, 4242, &[1, 2, 3, 4]).unwrap();
            assert_eq!(call.request(), want, "the backend's own key");
        }
        other => panic!("expected SendCancel, got {other:?}"),
    }
}

#[test]
fn query_timeout_cancels_rewords_57014_and_the_session_goes_on() {
    let mut p = timed_in(query_timeout(1));
    let q = query("SELECT pg_sleep(5)");
    p.client_send(&q);
    assert_eq!(p.take_server_output(), q);
    p.advance(SEC / 2);
    assert_eq!(p.s.poll_action(), None);
    p.advance(SEC / 2);
    take_cancel(&mut p);
    assert_eq!(p.s.poll_action(), None, "one cancel");
    // The client's next query waits for the cancel to be resolved.
    let q2 = query("SELECT 1");
    p.client_send(&q2);
    assert_eq!(p.take_server_output(), b"");
    p.server_send(&cancelled());
    let out = msgs(&p.take_client_output());
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, tag::ERROR_RESPONSE);
    let f = backend::decode_error_fields(&out[0].1).unwrap();
    assert_eq!(f.code, Some(&b"57014"[..]));
    assert_eq!(f.severity, Some(&b"ERROR"[..]));
    let m = std::str::from_utf8(f.message.unwrap()).unwrap();
    assert!(
        m.contains("query timeout") && m.contains("query_timeout = 1s"),
        "{m}"
    );
    assert_eq!(out[1], (tag::READY_FOR_QUERY, b"I".to_vec()));
    // Answered, but the cancel connection has not ended: still held.
    assert_eq!(p.take_server_output(), b"");
    let now = p.now();
    p.s.handle_cancel_done(now);
    assert_eq!(p.take_server_output(), q2);
    p.server_send(&[command_complete("SELECT 1"), rfq(b'I')].concat());
    assert_eq!(tags(&p.take_client_output()), b"CZ".to_vec());
    // A new query gets its own full query_timeout.
    p.client_send(&q);
    p.take_server_output();
    p.advance(SEC * 9 / 10);
    assert_eq!(p.s.poll_action(), None);
    p.advance(SEC / 5);
    take_cancel(&mut p);
    assert_eq!(p.closed(), None);
}

#[test]
fn late_cancel_race_holds_the_next_query_until_the_cancel_ended() {
    let mut p = timed_in(query_timeout(1));
    p.client_send(&query("SELECT slow()"));
    p.take_server_output();
    p.advance(SEC);
    take_cancel(&mut p);
    // The query ends on its own just before the cancel arrives.
    let done = [command_complete("SELECT 1"), rfq(b'I')].concat();
    p.server_send(&done);
    assert_eq!(
        p.take_client_output(),
        done,
        "an ordinary answer is untouched"
    );
    let q2 = query("SELECT 2");
    p.client_send(&q2);
    assert_eq!(p.take_server_output(), b"", "not before the cancel ended");
    let now = p.now();
    p.s.handle_cancel_done(now);
    assert_eq!(p.take_server_output(), q2);
    assert_eq!(p.closed(), None);
}

#[test]
fn an_unresolved_cancel_fails_closed_after_the_grace() {
    let mut p = timed_in(query_timeout(1));
    p.client_send(&query("SELECT pg_sleep(100)"));
    p.take_server_output();
    p.advance(SEC);
    take_cancel(&mut p);
    let now = p.now();
    p.s.handle_cancel_done(now);
    // The server never answers.
    p.advance(super::QUERY_CANCEL_GRACE - SEC / 10);
    assert_eq!(p.closed(), None);
    p.advance(SEC / 10);
    assert_fatal_close(
        &mut p,
        "57014",
        "terminating connection due to query timeout (query_timeout = 1s): \
         the query did not end within 5s of its cancel request",
        CloseReason::QueryTimeout,
    );
}

#[test]
fn client_idle_timeout_ends_an_idle_session_but_not_one_in_a_transaction() {
    let t = super::SessionTimeouts {
        client_idle: Some(SEC * 2),
        ..Default::default()
    };
    let mut p = timed_in(t);
    p.advance(SEC);
    p.client_send(&query("SELECT 1"));
    p.take_server_output();
    // Running queries are never idle.
    p.advance(SEC * 3);
    assert_eq!(p.closed(), None);
    p.server_send(&[command_complete("SELECT 1"), rfq(b'I')].concat());
    p.take_client_output();
    p.advance(SEC * 2 - SEC / 10);
    assert_eq!(p.closed(), None);
    p.advance(SEC / 10);
    assert_fatal_close(
        &mut p,
        "57P05",
        "terminating connection due to idle-session timeout (client_idle_timeout = 2s)",
        CloseReason::ClientIdleTimeout,
    );

    // Inside a transaction the client may idle (idle_transaction_timeout is off).
    let mut p = timed_in(t);
    p.client_send(&query("BEGIN"));
    p.take_server_output();
    p.server_send(&[command_complete("BEGIN"), rfq(b'T')].concat());
    p.take_client_output();
    p.advance(SEC * 30);
    assert_eq!(p.closed(), None);
    assert_eq!(p.s.next_deadline(), None);
}

#[test]
fn idle_transaction_timeout_ends_a_client_idle_in_a_transaction() {
    let t = super::SessionTimeouts {
        client_idle: Some(SEC * 10),
        idle_transaction: Some(SEC),
        ..Default::default()
    };
    let mut p = timed_in(t);
    p.client_send(&query("BEGIN"));
    p.take_server_output();
    p.server_send(&[command_complete("BEGIN"), rfq(b'T')].concat());
    p.take_client_output();
    p.advance(SEC);
    assert_fatal_close(
        &mut p,
        "25P03",
        "terminating connection due to idle-in-transaction timeout (idle_transaction_timeout = 1s)",
        CloseReason::IdleTransactionTimeout,
    );
    // A failed transaction ('E') is a transaction too; an open extended
    // cycle (no Sync) as well.
    let mut p = timed_in(t);
    let mut parse = Vec::new();
    encode::parse(&mut parse, b"", b"SELECT 1", &[]).unwrap();
    p.client_send(&parse);
    p.take_server_output();
    p.advance(SEC);
    assert_eq!(p.closed(), None, "FATAL queued");
    assert_eq!(
        msgs(&p.take_client_output())[0].0,
        tag::ERROR_RESPONSE,
        "idle inside an open cycle"
    );
    assert_eq!(
        p.closed().map(|c| c.0),
        Some(CloseReason::IdleTransactionTimeout)
    );
}

#[test]
fn session_lifetime_waits_for_the_transaction_and_the_answers() {
    let t = super::SessionTimeouts {
        lifetime: Some(SEC * 2),
        ..Default::default()
    };
    let mut p = timed_in(t);
    p.client_send(&query("BEGIN"));
    p.take_server_output();
    p.server_send(&[command_complete("BEGIN"), rfq(b'T')].concat());
    p.take_client_output();
    p.advance(SEC * 3);
    assert_eq!(p.closed(), None, "a transaction is never cut");
    p.client_send(&query("COMMIT"));
    assert_eq!(p.take_server_output(), query("COMMIT"));
    let done = [command_complete("COMMIT"), rfq(b'I')].concat();
    p.server_send(&done);
    // The answers first, then the FATAL.
    let out = p.take_client_output();
    assert!(out.starts_with(&done), "answers before the FATAL");
    let rest = msgs(&out[done.len()..]);
    assert_eq!(rest.len(), 1);
    let f = backend::decode_error_fields(&rest[0].1).unwrap();
    assert_eq!(f.code, Some(&b"57P01"[..]));
    assert!(
        std::str::from_utf8(f.message.unwrap())
            .unwrap()
            .contains("timeout")
    );
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::SessionLifetime));

    // An idle session is ended when the lifetime passes.
    let mut p = timed_in(t);
    p.advance(SEC * 2);
    assert_fatal_close(
        &mut p,
        "57P01",
        "terminating connection: session_lifetime timeout reached (session_lifetime = 2s)",
        CloseReason::SessionLifetime,
    );
}

#[test]
fn bypass_sessions_get_no_timeouts() {
    let all = super::SessionTimeouts {
        client_idle: Some(SEC),
        idle_transaction: Some(SEC),
        query: Some(SEC),
        lifetime: Some(SEC),
    };
    let mut p = Pair::new(timed(all));
    p.client_send(&startup("postgres"));
    p.connect();
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    p.take_server_output();
    p.client_send(&query("SELECT pg_sleep(100)"));
    p.advance(SEC * 60);
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.closed(), None);
    assert_eq!(p.s.next_deadline(), None);
}

#[test]
fn with_a_timeout_passthrough_frames_client_messages() {
    // Without timeouts the relay is a raw copy; with one, the tracker frames
    // every message, and a malformed one is a protocol violation.
    let bad = [b'Q', 0, 0, 0, 2];
    let mut p = logged_in();
    p.client_send(&bad);
    assert_eq!(p.take_server_output(), bad);
    let mut p = timed_in(query_timeout(5));
    p.client_send(&bad);
    assert_eq!(p.take_server_output(), b"");
    let out = msgs(&p.take_client_output());
    assert_eq!(out.len(), 1);
    let f = backend::decode_error_fields(&out[0].1).unwrap();
    assert_eq!(f.code, Some(&b"08P01"[..]));
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ClientProtocol));
}

#[test]
fn the_cancel_error_is_reworded_for_a_slow_client_too() {
    let mut p = timed_in(query_timeout(1));
    p.client_send(&query("SELECT * FROM big"));
    p.take_server_output();
    // Rows arrive, the client does not read them yet.
    let rows: Vec<u8> = (0..50)
        .flat_map(|i| data_row(&[Some(format!("row {i}").as_bytes())]))
        .collect();
    p.server_send(&rows);
    p.advance(SEC);
    take_cancel(&mut p);
    // The error is split over two reads, and the cancel resolves before
    // the client has read anything.
    let c = cancelled();
    p.server_send(&c[..7]);
    p.server_send(&c[7..]);
    let now = p.now();
    p.s.handle_cancel_done(now);
    let out = p.take_client_output_upto(100);
    let out = [out, p.take_client_output()].concat();
    assert!(out.starts_with(&rows));
    let rest = msgs(&out[rows.len()..]);
    assert_eq!(rest.len(), 2);
    let f = backend::decode_error_fields(&rest[0].1).unwrap();
    assert_eq!(f.code, Some(&b"57014"[..]));
    assert!(
        std::str::from_utf8(f.message.unwrap())
            .unwrap()
            .contains("query timeout")
    );
    assert_eq!(rest[1].0, tag::READY_FOR_QUERY);
}
