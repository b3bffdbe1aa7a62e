//! Oracles shared by fuzz targets and the regression replay test.
//!
//! Owns: `frame_oracle`, `startup_oracle`, `backend_oracle`: functions that
//! take arbitrary bytes, drive the pure codec (`crate::protocol`) over them
//! and `assert!` the properties the codec promises. They panic only when an
//! oracle is violated (or when the codec itself panics, which is the bug a
//! fuzzer is looking for).
//! Must not: do I/O, allocate without bound (work is linear in the input),
//! or depend on anything but `crate::protocol`.
//! Properties checked:
//! - `parse_frame` and `parse_header` agree (same tag and lengths, same error);
//! - a frame never claims more than the input, and `body + header == wire_len`;
//! - lengths respect `min_len`/`max_len` for the phase;
//! - every decoder for the tag runs without panicking, and messages the proxy
//!   can also encode re-encode to exactly the bytes that were decoded;
//! - walking consecutive frames consumes at most the input.

use crate::protocol::backend::{self, Auth};
use crate::protocol::frame::{self, Frame};
use crate::protocol::frontend::{self, StartupPacket};
use crate::protocol::{FramePhase, Limits, encode, tag};

/// Tiny limits, so that fuzz inputs reach every cap.
pub const SMALL_LIMITS: Limits = Limits {
    startup_max: 64,
    auth_msg_max: 32,
    inspect_max: 48,
    max_packet_size: 128,
};

fn limit_sets() -> [Limits; 2] {
    [Limits::default(), SMALL_LIMITS]
}

/// For every phase and both limit sets: framing invariants, header/frame
/// agreement, and the decoders (with round trips) for the framed message.
pub fn frame_oracle(data: &[u8]) {
    for lim in limit_sets() {
        for phase in FramePhase::ALL {
            if let Some(f) = check_frame(data, phase, &lim) {
                check_decoders(phase, &f, &data[..f.wire_len]);
            }
        }
    }
}

/// `decode_startup` on arbitrary bytes (as a body), with round trips; then
/// the same bytes framed as a whole startup packet.
pub fn startup_oracle(data: &[u8]) {
    check_startup_body(data);
    for lim in limit_sets() {
        if let Some(f) = check_frame(data, FramePhase::Startup, &lim) {
            check_decoders(FramePhase::Startup, &f, &data[..f.wire_len]);
        }
    }
}

/// Server → proxy bytes: walks consecutive frames in the ServerAuth and
/// Server phases, decoding each; consumption never exceeds the input.
pub fn backend_oracle(data: &[u8]) {
    for lim in limit_sets() {
        for phase in [FramePhase::ServerAuth, FramePhase::Server] {
            let mut off = 0usize;
            while let Some(rest) = data.get(off..) {
                let Some(f) = check_frame(rest, phase, &lim) else {
                    break;
                };
                assert!(f.wire_len >= frame::TAGGED_HEADER_LEN);
                check_decoders(phase, &f, &rest[..f.wire_len]);
                off += f.wire_len;
            }
            assert!(off <= data.len(), "consumed more than the input");
        }
    }
}

/// Checks framing invariants; returns the frame when one is complete.
fn check_frame<'a>(data: &'a [u8], phase: FramePhase, lim: &Limits) -> Option<Frame<'a>> {
    let header = frame::parse_header(data, phase, lim);
    let framed = frame::parse_frame(data, phase, lim);
    let min_header = match phase {
        FramePhase::Startup => frame::STARTUP_HEADER_LEN,
        _ => frame::TAGGED_HEADER_LEN,
    };
    match (&header, &framed) {
        (Err(a), Err(b)) => assert_eq!(a, b, "header and frame errors differ"),
        (Ok(None), Ok(None)) => {
            assert!(data.len() < min_header, "need-more with a full header")
        }
        (Ok(Some(h)), Ok(None)) => assert!(data.len() < h.wire_len, "need-more with whole frame"),
        (Ok(Some(h)), Ok(Some(f))) => {
            assert_eq!(h.tag, f.tag);
            assert_eq!(h.wire_len, f.wire_len);
        }
        _ => panic!("parse_header {header:?} disagrees with parse_frame {framed:?}"),
    }
    if let Ok(Some(h)) = header {
        assert!(h.len >= frame::min_len(h.tag, phase), "below min_len");
        assert!(h.len <= frame::max_len(h.tag, phase, lim), "above max_len");
        // the tag byte, if any, is outside the length field
        let tag_bytes = phase.header_len() - 4;
        assert_eq!(h.wire_len, h.len + tag_bytes);
        assert!(frame::tag_allowed(h.tag, phase));
    }
    let f = framed.ok().flatten()?;
    assert!(f.wire_len <= data.len(), "frame longer than input");
    assert_eq!(f.body.len() + phase.header_len(), f.wire_len);
    Some(f)
}

/// Runs the decoders that apply to `f` in `phase`; `wire` is the whole message.
fn check_decoders(phase: FramePhase, f: &Frame<'_>, wire: &[u8]) {
    let body = f.body;
    match phase {
        FramePhase::Startup => {
            if check_startup_body(body) {
                // a successfully decoded startup re-encodes to the same packet
                assert_eq!(wire.len(), body.len() + 4);
            }
        }
        FramePhase::ClientAuth | FramePhase::Client => check_client(f.tag, body, wire),
        FramePhase::ServerAuth | FramePhase::Server => check_server(f.tag, body, wire),
    }
}

/// Returns true when `body` decoded; asserts the round trips.
fn check_startup_body(body: &[u8]) -> bool {
    let Ok(packet) = frontend::decode_startup(body) else {
        return false;
    };
    let mut out = Vec::new();
    match packet {
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            assert_eq!(body.len(), 4);
        }
        StartupPacket::Cancel(c) => {
            assert!(encode::cancel_request(&mut out, c.pid, c.key).is_ok());
            assert_eq!(&out[4..], body, "cancel round trip");
        }
        StartupPacket::Startup(s) => {
            let params: Vec<(&[u8], &[u8])> = s.params().collect();
            assert_eq!(params.len(), s.param_count());
            assert!(params.len() <= frontend::MAX_STARTUP_PARAMS);
            for (k, _) in &params {
                let last = params.iter().rev().find(|(k2, _)| k2 == k).map(|p| p.1);
                assert_eq!(s.get(k), last, "get() is not last-wins");
            }
            assert!(encode::startup_message(&mut out, s.version, &params).is_ok());
            assert_eq!(&out[4..], body, "startup re-encodes differently");
            let again = frontend::decode_startup(&out[4..]);
            match again {
                Ok(StartupPacket::Startup(s2)) => {
                    assert_eq!(s2.version, s.version);
                    assert!(s2.params().eq(params.iter().copied()));
                }
                other => panic!("re-encoded startup decodes as {other:?}"),
            }
            if out.len() <= Limits::default().startup_max {
                let lim = Limits::default();
                let f = frame::parse_frame(&out, FramePhase::Startup, &lim);
                assert!(
                    matches!(f, Ok(Some(fr)) if fr.wire_len == out.len()),
                    "re-encoded startup does not frame: {f:?}"
                );
            }
        }
    }
    true
}

fn check_client(t: u8, body: &[u8], wire: &[u8]) {
    let mut out = Vec::new();
    match t {
        tag::PASSWORD_MESSAGE => {
            if let Ok(pw) = frontend::decode_password(body) {
                assert!(encode::password_message(&mut out, pw).is_ok());
                assert_eq!(out, wire, "password round trip");
            }
            out.clear();
            if let Ok(m) = frontend::decode_sasl_initial_response(body) {
                assert!(encode::sasl_initial_response(&mut out, m.mechanism, m.data).is_ok());
                assert_eq!(out, wire, "SASLInitialResponse round trip");
            }
            out.clear();
            if let Ok(d) = frontend::decode_sasl_response(body) {
                assert!(encode::sasl_response(&mut out, d).is_ok());
                assert_eq!(out, wire, "SASLResponse round trip");
            }
        }
        tag::QUERY => {
            if let Ok(q) = frontend::decode_query(body) {
                assert!(encode::query(&mut out, q.sql).is_ok());
                assert_eq!(out, wire, "Query round trip");
            }
        }
        tag::PARSE => {
            if let Ok(p) = frontend::decode_parse(body) {
                let fixed = p.name.len() + p.sql.len() + 2 + 2;
                assert_eq!(body.len(), fixed + 4 * usize::from(p.param_types));
            }
        }
        tag::BIND => {
            if let Ok(b) = frontend::decode_bind(body) {
                assert!(b.portal.len() + b.statement.len() + 2 <= body.len());
            }
        }
        tag::EXECUTE => {
            if let Ok(e) = frontend::decode_execute(body) {
                assert!(encode::execute(&mut out, e.portal, e.max_rows).is_ok());
                assert_eq!(out, wire, "Execute round trip");
            }
        }
        tag::SYNC if frontend::decode_sync(body).is_ok() => {
            encode::sync(&mut out);
            assert_eq!(out, wire, "Sync round trip");
        }
        _ => {}
    }
}

fn check_server(t: u8, body: &[u8], wire: &[u8]) {
    let mut out = Vec::new();
    match t {
        tag::AUTHENTICATION => {
            let Ok(a) = backend::decode_auth(body) else {
                return;
            };
            match a {
                Auth::Ok => encode::auth_ok(&mut out),
                Auth::CleartextPassword => encode::auth_cleartext_password(&mut out),
                Auth::Md5Password { salt } => encode::auth_md5_password(&mut out, salt),
                Auth::Sasl { mechanisms } => {
                    let list: Vec<&[u8]> = mechanisms.iter().collect();
                    assert!(!list.is_empty() && list.len() <= backend::MAX_SASL_MECHANISMS);
                    for m in &list {
                        assert!(mechanisms.contains(m));
                    }
                    assert!(encode::auth_sasl(&mut out, &list).is_ok());
                }
                Auth::SaslContinue(d) => assert!(encode::auth_sasl_continue(&mut out, d).is_ok()),
                Auth::SaslFinal(d) => assert!(encode::auth_sasl_final(&mut out, d).is_ok()),
                Auth::Other(_) => return,
            }
            assert_eq!(out, wire, "Authentication round trip");
        }
        tag::PARAMETER_STATUS => {
            if let Ok(p) = backend::decode_parameter_status(body) {
                assert!(encode::parameter_status(&mut out, p.name, p.value).is_ok());
                assert_eq!(out, wire, "ParameterStatus round trip");
            }
        }
        tag::BACKEND_KEY_DATA => {
            if let Ok(k) = backend::decode_backend_key_data(body) {
                assert!(encode::backend_key_data(&mut out, k.pid, k.key).is_ok());
                assert_eq!(out, wire, "BackendKeyData round trip");
            }
        }
        tag::READY_FOR_QUERY => {
            if let Ok(s) = backend::decode_ready_for_query(body) {
                assert!(matches!(s, b'I' | b'T' | b'E'));
                encode::ready_for_query(&mut out, s);
                assert_eq!(out, wire, "ReadyForQuery round trip");
            }
        }
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
            if let Ok(e) = backend::decode_error_fields(body) {
                for v in [
                    e.severity,
                    e.severity_v,
                    e.code,
                    e.message,
                    e.detail,
                    e.hint,
                ]
                .into_iter()
                .flatten()
                {
                    assert!(!v.contains(&0) && v.len() < body.len());
                }
            }
        }
        tag::COMMAND_COMPLETE => {
            if let Ok(c) = backend::decode_command_complete(body) {
                assert_eq!(c.len() + 1, body.len());
            }
        }
        tag::DATA_ROW => {
            if let Ok(d) = backend::decode_data_row(body) {
                let mut n = 0usize;
                let mut bytes = 2usize;
                for c in d.columns() {
                    n += 1;
                    bytes += 4 + c.map_or(0, <[u8]>::len);
                }
                assert_eq!(n, d.len(), "DataRow column count");
                assert_eq!(bytes, body.len(), "DataRow consumed bytes");
            }
        }
        tag::NEGOTIATE_PROTOCOL_VERSION => {
            if let Ok(v) = backend::decode_negotiate_protocol_version(body) {
                let names: Vec<&[u8]> = v.unrecognized.iter().collect();
                assert_eq!(names.len(), v.unrecognized.len());
                assert!(
                    encode::negotiate_protocol_version(&mut out, v.newest_minor, &names).is_ok()
                );
                assert_eq!(out, wire, "NegotiateProtocolVersion round trip");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PROTOCOL_3_0, PROTOCOL_3_2};

    fn corpus() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut push = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut o = Vec::new();
            f(&mut o);
            v.push(o);
        };
        push(&|o| {
            encode::startup_message(o, PROTOCOL_3_0, &[(b"user", b"a.b"), (b"database", b"d")])
                .unwrap()
        });
        push(&|o| encode::startup_message(o, PROTOCOL_3_2, &[]).unwrap());
        push(&|o| encode::cancel_request(o, 9, &[1; 32]).unwrap());
        push(&|o| o.extend_from_slice(&[0, 0, 0, 8, 4, 210, 22, 47]));
        push(&|o| encode::password_message(o, b"pw").unwrap());
        push(&|o| encode::sasl_initial_response(o, b"SCRAM-SHA-256", Some(b"n,,")).unwrap());
        push(&|o| encode::query(o, b"select 1").unwrap());
        push(&|o| encode::parse(o, b"s", b"select $1", &[23]).unwrap());
        push(&|o| encode::bind_text(o, b"", b"s", &[Some(b"1"), None]).unwrap());
        push(&|o| encode::execute(o, b"", 0).unwrap());
        push(&encode::sync);
        push(&encode::auth_ok);
        push(&|o| encode::auth_md5_password(o, [1, 2, 3, 4]));
        push(&|o| encode::auth_sasl(o, &[b"SCRAM-SHA-256", b"SCRAM-SHA-256-PLUS"]).unwrap());
        push(&|o| encode::auth_sasl_continue(o, b"r=1,s=2,i=4096").unwrap());
        push(&|o| encode::parameter_status(o, b"TimeZone", b"UTC").unwrap());
        push(&|o| encode::backend_key_data(o, 1, &[2; 4]).unwrap());
        push(&|o| encode::ready_for_query(o, b'I'));
        push(&|o| encode::error_response_detail(o, "ERROR", "42501", "m", Some("d"), None));
        push(&|o| encode::notice_response(o, "NOTICE", "00000", "n"));
        push(&|o| encode::negotiate_protocol_version(o, 0, &[b"_pq_.x"]).unwrap());
        push(&|o| o.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0"));
        push(&|o| o.extend_from_slice(b"D\0\0\0\x0e\0\x02\0\0\0\x01x\xff\xff\xff\xff"));
        v
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn oracles_hold_on_valid_messages_and_truncations() {
        let c = corpus();
        for m in &c {
            for k in 0..=m.len() {
                frame_oracle(&m[..k]);
                startup_oracle(&m[..k]);
                backend_oracle(&m[..k]);
            }
        }
        let stream: Vec<u8> = c.concat();
        backend_oracle(&stream);
    }

    #[test]
    fn oracles_hold_on_mutations() {
        let seed = 0x2545_f491_4f6c_dd1du64;
        let mut rng = XorShift(seed);
        let c = corpus();
        for round in 0..3000 {
            let mut m = c[(rng.next() % c.len() as u64) as usize].clone();
            for _ in 0..1 + rng.next() % 3 {
                let i = (rng.next() % m.len() as u64) as usize;
                m[i] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(4) {
                m.truncate((rng.next() % (m.len() as u64 + 1)) as usize);
            }
            // the oracle panics with its own message; the seed and round locate it
            let r = std::panic::catch_unwind(|| {
                frame_oracle(&m);
                startup_oracle(&m);
                backend_oracle(&m);
            });
            assert!(r.is_ok(), "seed {seed:#x} round {round} input {m:?}");
        }
    }
}
