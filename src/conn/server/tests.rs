//! Scripted-server tests of `ServerLink`: login, TLS negotiation, reset answers.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::buf::BufPool;
use crate::protocol::{Limits, encode};

fn cfg(secret: UpstreamSecret, tls: UpstreamTlsMode) -> Arc<LinkConfig> {
    Arc::new(LinkConfig {
        role: "app_user".into(),
        database: "appdb".into(),
        secret,
        upstream_tls: tls,
        limits: Limits::default(),
        login_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(3),
    })
}

struct T {
    link: ServerLink,
    pool: BufPool,
    now: Instant,
}

impl T {
    fn new(secret: UpstreamSecret, tls: UpstreamTlsMode) -> T {
        let now = Instant::now();
        T {
            link: ServerLink::new(cfg(secret, tls), [7u8; SCRAM_NONCE_LEN], now),
            pool: BufPool::new(4),
            now,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = self.link.read_buf(&mut self.pool);
            let n = buf.len().min(rest.len());
            assert!(n > 0, "ring full while feeding");
            buf[..n].copy_from_slice(&rest[..n]);
            self.link.handle_read(n, self.now);
            rest = &rest[n..];
        }
    }

    /// Everything the link wants to send, taken.
    fn take_out(&mut self) -> Vec<u8> {
        let v = self.link.output().to_vec();
        self.link.handle_written(v.len());
        v
    }

    fn events(&mut self) -> Vec<LinkEvent> {
        std::iter::from_fn(|| self.link.poll_event()).collect()
    }

    /// Connected, plaintext startup sent, AuthenticationOk, params, key, Z(I).
    fn login_trust(&mut self) {
        self.link.handle_connected(self.now);
        let out = self.take_out();
        assert_startup(&out);
        let mut m = Vec::new();
        encode::auth_ok(&mut m);
        login_tail(&mut m);
        self.feed(&m);
        assert_eq!(self.events(), vec![LinkEvent::Idle]);
        assert!(self.link.is_idle());
    }
}

fn login_tail(m: &mut Vec<u8>) {
    encode::parameter_status(m, b"server_version", b"15.8").unwrap();
    encode::parameter_status(m, b"application_name", b"").unwrap();
    encode::backend_key_data(m, 4242, &[1, 2, 3, 4]).unwrap();
    encode::ready_for_query(m, b'I');
}

fn assert_startup(out: &[u8]) {
    // length, protocol 3.0, user=app_user, database=appdb
    let body = &out[8..];
    let want = b"user\0app_user\0database\0appdb\0\0";
    assert_eq!(body, want, "startup parameters");
    assert_eq!(&out[4..8], &0x0003_0000i32.to_be_bytes());
    assert_eq!(
        out.len(),
        u32::from_be_bytes(out[..4].try_into().unwrap()) as usize
    );
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(extra);
    msg(b'R', &b)
}

fn failed(events: &[LinkEvent]) -> &LinkFailure {
    match events {
        [LinkEvent::Failed(f)] => f,
        other => panic!("want one Failed event, got {other:?}"),
    }
}

#[test]
fn trust_login_collects_params_and_key() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    assert!(!t.link.wants_read(), "no reads during the TCP connect");
    t.login_trust();
    assert_eq!(t.link.backend_key, Some((4242, vec![1, 2, 3, 4])));
    assert_eq!(
        t.link.params,
        vec![
            (b"server_version".to_vec(), b"15.8".to_vec()),
            (b"application_name".to_vec(), b"".to_vec())
        ]
    );
    assert_eq!(t.link.next_deadline(), None, "idle has no deadline");
    assert!(t.link.wants_read(), "idle links keep read interest (EOF)");
}

#[test]
fn split_reads_give_the_same_login() {
    let mut m = Vec::new();
    encode::auth_ok(&mut m);
    login_tail(&mut m);
    for cut in 1..m.len() {
        let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
        t.link.handle_connected(t.now);
        t.take_out();
        t.feed(&m[..cut]);
        assert!(
            !t.link.is_idle(),
            "idle before the whole login at cut {cut}"
        );
        t.feed(&m[cut..]);
        assert_eq!(t.events(), vec![LinkEvent::Idle], "cut {cut}");
    }
}

#[test]
fn cleartext_and_md5_answers() {
    let mut t = T::new(
        UpstreamSecret::Plain(b"s3cret".to_vec()),
        UpstreamTlsMode::Disable,
    );
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(&auth(3, &[]));
    let mut want = Vec::new();
    encode::password_message(&mut want, b"s3cret").unwrap();
    assert_eq!(t.take_out(), want);

    for secret in [
        UpstreamSecret::Plain(b"secret".to_vec()),
        UpstreamSecret::Md5Hash(*b"b85f9be3c5144024e714f44c4eada375"),
    ] {
        let mut t = T::new(secret.clone(), UpstreamTlsMode::Disable);
        t.link.handle_connected(t.now);
        t.take_out();
        t.feed(&auth(5, &[9, 8, 7, 6]));
        let resp = md5_password_response(b"app_user", b"secret", [9, 8, 7, 6]);
        let mut want = Vec::new();
        encode::password_message(&mut want, &resp).unwrap();
        // The Md5Hash literal above must be hex(md5("secret" ++ "app_user")).
        assert_eq!(t.take_out(), want, "secret {secret:?}");
    }
}

#[test]
fn missing_password_fails_with_28p01_naming_the_keys() {
    for code in [3, 5] {
        let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
        t.link.handle_connected(t.now);
        t.take_out();
        let extra: &[u8] = if code == 5 { &[1, 2, 3, 4] } else { &[] };
        t.feed(&auth(code, extra));
        let ev = t.events();
        let f = failed(&ev);
        assert_eq!(f.sqlstate, "28P01");
        assert!(f.message.contains("upstream_password"), "{}", f.message);
        assert!(t.link.output().is_empty(), "nothing sent after a failure");
    }
}

#[test]
fn sasl_without_scram_sha_256_is_refused() {
    let mut t = T::new(
        UpstreamSecret::Plain(b"pw".to_vec()),
        UpstreamTlsMode::Disable,
    );
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(&auth(10, b"SCRAM-SHA-256-PLUS\0\0"));
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "08P01");
}

#[test]
fn scram_login_sends_initial_response() {
    let mut t = T::new(
        UpstreamSecret::Plain(b"pw".to_vec()),
        UpstreamTlsMode::Disable,
    );
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(&auth(10, b"SCRAM-SHA-256\0\0"));
    let out = t.take_out();
    assert_eq!(out[0], b'p');
    assert!(
        out.windows(13).any(|w| w == b"SCRAM-SHA-256"),
        "mechanism named"
    );
    assert!(
        out.windows(5).any(|w| w == b"n,,n="),
        "gs2 header, no channel binding"
    );
    // A bogus server-first fails the link.
    t.feed(&auth(11, b"garbage"));
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "08P01");
}

#[test]
fn server_error_during_login_is_reported_as_sent() {
    let mut t = T::new(
        UpstreamSecret::Plain(b"pw".to_vec()),
        UpstreamTlsMode::Disable,
    );
    t.link.handle_connected(t.now);
    t.take_out();
    let mut m = Vec::new();
    encode::error_response(
        &mut m,
        "FATAL",
        "28P01",
        "password authentication failed for user \"app_user\"",
    );
    t.feed(&m);
    let ev = t.events();
    let f = failed(&ev);
    assert!(f.from_server);
    assert_eq!(f.sqlstate, "28P01");
    assert!(f.message.contains("password authentication failed"));
    assert!(t.link.is_failed());
}

#[test]
fn tls_negotiation() {
    // require + S → StartTls, startup only after the handshake.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Require);
    t.link.handle_connected(t.now);
    let mut ssl = Vec::new();
    encode::ssl_request(&mut ssl);
    assert_eq!(t.take_out(), ssl);
    t.feed(b"S");
    assert_eq!(t.events(), vec![LinkEvent::StartTls]);
    assert!(t.link.output().is_empty());
    t.link.handle_tls_ready();
    assert_startup(&t.take_out());

    // require + N → failure; prefer + N → plaintext startup.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Require);
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(b"N");
    let ev = t.events();
    assert!(failed(&ev).message.contains("does not support TLS"));
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Prefer);
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(b"N");
    assert_startup(&t.take_out());

    // S followed by bytes in the same read: CVE-2021-23222 class.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Require);
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(b"SR\0\0\0\x08\0\0\0\0");
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "08P01");

    // An error message instead of S/N.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Prefer);
    t.link.handle_connected(t.now);
    t.take_out();
    t.feed(b"E");
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "08P01");

    // direct: TLS at once, no SSLRequest.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Direct);
    t.link.handle_connected(t.now);
    assert!(t.link.output().is_empty());
    assert_eq!(t.events(), vec![LinkEvent::StartTls]);
}

fn cc(tag: &[u8]) -> Vec<u8> {
    let mut b = tag.to_vec();
    b.push(0);
    msg(b'C', &b)
}

fn z(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

#[test]
fn reset_answers_are_checked_one_by_one() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.login_trust();
    assert!(t.link.lend(&mut t.pool));
    t.link.begin_queries(
        &[
            (QueryKind::Rollback, b"ROLLBACK"),
            (QueryKind::Plain, b"DISCARD ALL"),
        ],
        t.now,
    );
    let out = t.take_out();
    let mut want = Vec::new();
    encode::query(&mut want, b"ROLLBACK").unwrap();
    encode::query(&mut want, b"DISCARD ALL").unwrap();
    assert_eq!(out, want);
    assert!(t.link.next_deadline().is_some(), "reset has a deadline");
    let mut m = cc(b"ROLLBACK");
    m.extend(z(b'I'));
    let mut ps = Vec::new();
    encode::parameter_status(&mut ps, b"application_name", b"").unwrap();
    m.extend(ps);
    m.extend(cc(b"DISCARD ALL"));
    m.extend(z(b'I'));
    t.feed(&m);
    assert_eq!(t.events(), vec![LinkEvent::Idle]);
    assert!(t.link.is_idle());
}

#[test]
fn wrong_reset_answers_fail_the_link() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong command tag", [cc(b"COMMIT"), z(b'I')].concat()),
        ("Z before the answer", z(b'I')),
        (
            "still in a transaction",
            [cc(b"ROLLBACK"), z(b'T')].concat(),
        ),
        ("error", {
            let mut e = Vec::new();
            encode::error_response(&mut e, "ERROR", "25P02", "aborted");
            [e, z(b'E')].concat()
        }),
        ("rows for ROLLBACK", msg(b'D', &[0, 0])),
        ("copy", msg(b'G', &[0, 0, 0])),
    ];
    for (what, bytes) in cases {
        let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
        t.login_trust();
        assert!(t.link.lend(&mut t.pool));
        t.link
            .begin_queries(&[(QueryKind::Rollback, b"ROLLBACK")], t.now);
        t.take_out();
        t.feed(&bytes);
        let ev = t.events();
        assert!(
            matches!(ev.as_slice(), [LinkEvent::Failed(_)]),
            "{what}: {ev:?}"
        );
        assert!(!t.link.is_idle(), "{what}");
    }
}

#[test]
fn plain_query_may_return_rows() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.login_trust();
    t.link
        .begin_queries(&[(QueryKind::Plain, b"SELECT 1")], t.now);
    t.take_out();
    let m = [
        msg(
            b'T',
            &[
                0, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
            ],
        ),
        msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']),
        cc(b"SELECT 1"),
        z(b'I'),
    ]
    .concat();
    t.feed(&m);
    assert_eq!(t.events(), vec![LinkEvent::Idle]);
}

#[test]
fn idle_link_fails_on_anything_but_reports() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.login_trust();
    let mut n = Vec::new();
    encode::notice_response(&mut n, "NOTICE", "00000", "hello");
    encode::parameter_status(&mut n, b"TimeZone", b"UTC").unwrap();
    t.feed(&n);
    assert!(t.link.is_idle(), "notices and reports keep it idle");
    assert!(
        t.link
            .params
            .iter()
            .any(|(k, v)| k == b"TimeZone" && v == b"UTC")
    );
    t.feed(&z(b'I'));
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "08P01");

    // A FATAL while idle (e.g. pg_terminate_backend) fails it too.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.login_trust();
    let mut e = Vec::new();
    encode::error_response(&mut e, "FATAL", "57P01", "terminating connection");
    t.feed(&e);
    let ev = t.events();
    assert_eq!(failed(&ev).sqlstate, "57P01");

    // EOF while idle.
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.login_trust();
    t.link.handle_eof();
    let ev = t.events();
    assert!(failed(&ev).message.contains("idle"));
}

#[test]
fn login_deadline() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    t.link.handle_connected(t.now);
    let dl = t.link.next_deadline().expect("login deadline");
    assert_eq!(dl, t.now + Duration::from_secs(5));
    t.link.handle_timeout(dl - Duration::from_millis(1));
    assert!(t.events().is_empty(), "not before the deadline");
    t.link.handle_timeout(dl);
    let ev = t.events();
    assert!(failed(&ev).message.contains("timeout"));
}

#[test]
fn lend_only_when_idle() {
    let mut t = T::new(UpstreamSecret::None, UpstreamTlsMode::Disable);
    assert!(!t.link.lend(&mut t.pool), "not while connecting");
    t.login_trust();
    assert!(t.link.lend(&mut t.pool));
    assert!(!t.link.lend(&mut t.pool), "not twice");
    assert!(
        !t.link.wants_read(),
        "a lent link is read by its client session"
    );
}
