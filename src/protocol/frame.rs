//! Framing: the single place where message boundaries and lengths are checked.
//!
//! Owns: `parse_header` (streaming: header only) and `parse_frame` (whole
//! message), with three outcomes each: `Ok(None)` = need more bytes,
//! `Ok(Some)` = a valid header / complete frame borrowed from the input,
//! `Err` = invalid input (fail closed, never "need more" for bad bytes).
//! Also owns the per-phase tag tables (`tag_allowed`) and length caps
//! (`min_len`, `max_len`).
//! Must not: decode message bodies (that is `frontend`/`backend`), allocate,
//! or panic on any input.
//! Invariants:
//! - a tag illegal in the phase is rejected as soon as its byte is present;
//!   a bad startup code as soon as the 8-byte startup header is present;
//! - `Header`/`Frame` are only produced when `min_len <= len <= max_len`;
//! - `Frame::body.len() + header size == Frame::wire_len <= buf.len()`;
//! - `parse_frame` agrees with `parse_header` (it is built on it).
//!
//! Length caps (the value of the length field, which counts itself):
//!
//! | phase       | tag                              | min | max                         |
//! |-------------|----------------------------------|-----|-----------------------------|
//! | Startup     | (untagged)                       | 8   | `startup_max`               |
//! |             | SSLRequest / GSSENCRequest       | 8   | 8                           |
//! |             | CancelRequest (key 4..=256)      | 16  | 268                         |
//! | ClientAuth  | `p`                              | 4   | `auth_msg_max`              |
//! | Client      | B C d c f D E H F P p Q S X      | 4   | `max_packet_size`           |
//! | ServerAuth  | `R`                              | 8   | `auth_msg_max`              |
//! |             | `v`                              | 12  | `auth_msg_max`              |
//! |             | `E` `N`                          | 5   | `inspect_max`               |
//! | Server      | `R`                              | illegal after AuthenticationOk |
//! |             | `K` (pid + key 4..=256)          | 12  | 264                         |
//! |             | `Z` (one status byte)            | 5   | 5                           |
//! |             | `1 2 3 n s I c` (no body)        | 4   | 4                           |
//! |             | `S` (two C strings)              | 6   | `inspect_max`               |
//! |             | `E` `N` (at least the final NUL) | 5   | `inspect_max`               |
//! |             | `C` (tag string)                 | 5   | `inspect_max`               |
//! |             | `A` (pid + two C strings)        | 10  | `inspect_max`               |
//! |             | `v` (minor + count)              | 12  | `auth_msg_max`              |
//! |             | `t` (int16 n + n ≤ 65535 OIDs)   | 6   | 262 150 (≤ `max_packet_size`) |
//! |             | `G H W` (int8 + int16 n + n int16) | 7 | 131 077 (≤ `max_packet_size`) |
//! |             | `T` `D`                          | 6   | `max_packet_size`           |
//! |             | `V` (int32 length + value)       | 8   | `max_packet_size`           |
//! |             | `d`                              | 4   | `max_packet_size`           |
//!
//! `S` (ParameterStatus) is capped at `inspect_max` rather than a small fixed
//! size because `search_path` and custom reported GUCs may legitimately be long.

use super::reader::Reader;
use super::{
    CANCEL_REQUEST_CODE, FramePhase, GSSENC_REQUEST_CODE, Limits, MAX_CANCEL_KEY_LEN,
    MIN_CANCEL_KEY_LEN, PROTOCOL_3_0, ProtoError, SSL_REQUEST_CODE, tag,
};

/// Header size of a tagged message: tag byte + int32 length.
pub const TAGGED_HEADER_LEN: usize = 5;
/// Header size needed to judge a startup-family packet: int32 length + int32 code.
pub const STARTUP_HEADER_LEN: usize = 8;
/// Smallest legal length field of a tagged message (the length counts itself).
pub const MIN_MSG_LEN: usize = 4;
/// Smallest startup-family packet: length + code.
pub const MIN_STARTUP_LEN: usize = 8;
/// Exact length of SSLRequest and GSSENCRequest.
pub const SSL_REQUEST_LEN: usize = 8;
/// CancelRequest: length + code + pid (12 bytes) + a key of 4..=256 bytes.
pub const MIN_CANCEL_LEN: usize = 12 + MIN_CANCEL_KEY_LEN;
pub const MAX_CANCEL_LEN: usize = 12 + MAX_CANCEL_KEY_LEN;
/// BackendKeyData: length + pid (8 bytes) + a key of 4..=256 bytes.
pub const MIN_BACKEND_KEY_DATA_LEN: usize = 8 + MIN_CANCEL_KEY_LEN;
pub const MAX_BACKEND_KEY_DATA_LEN: usize = 8 + MAX_CANCEL_KEY_LEN;
/// ParameterDescription: length + int16 count + up to 65 535 int32 OIDs.
pub const MAX_PARAMETER_DESCRIPTION_LEN: usize = 4 + 2 + 4 * 65_535;
/// CopyIn/CopyOut/CopyBothResponse: length + int8 + int16 count + up to 65 535 int16.
pub const MAX_COPY_RESPONSE_LEN: usize = 4 + 1 + 2 + 2 * 65_535;
/// Highest startup code accepted as "protocol 3.x" (major 3, any minor).
pub const PROTOCOL_3_MAX: i32 = PROTOCOL_3_0 | 0xffff;

/// Whether a startup code is protocol major 3 (`code >> 16 == 3`), any minor.
pub fn is_protocol_3(code: i32) -> bool {
    (PROTOCOL_3_0..=PROTOCOL_3_MAX).contains(&code)
}

/// A validated message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message tag; 0 for the (untagged) startup family.
    pub tag: u8,
    /// Value of the length field (counts itself, not the tag).
    pub len: usize,
    /// Bytes the whole message occupies on the wire: tag byte (if any) + `len`.
    pub wire_len: usize,
}

/// A complete, length-checked message borrowed from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Message tag; 0 for the startup family.
    pub tag: u8,
    /// Everything after the length field (for startup: starts with the code).
    pub body: &'a [u8],
    /// Bytes consumed from the input: tag (if any) + length field + body.
    pub wire_len: usize,
}

impl FramePhase {
    /// Bytes before the body: 4 (startup length) or 5 (tag + length).
    pub fn header_len(self) -> usize {
        match self {
            FramePhase::Startup => 4,
            _ => TAGGED_HEADER_LEN,
        }
    }
}

/// Whether `t` is a legal message tag in `phase`. Startup packets have no
/// tag; only 0 is "legal" there.
pub fn tag_allowed(t: u8, phase: FramePhase) -> bool {
    use tag::*;
    match phase {
        FramePhase::Startup => t == 0,
        FramePhase::ClientAuth => t == PASSWORD_MESSAGE,
        FramePhase::Client => matches!(
            t,
            BIND | CLOSE
                | COPY_DATA
                | COPY_DONE
                | COPY_FAIL
                | DESCRIBE
                | EXECUTE
                | FLUSH
                | FUNCTION_CALL
                | PARSE
                | PASSWORD_MESSAGE
                | QUERY
                | SYNC
                | TERMINATE
        ),
        FramePhase::ServerAuth => matches!(
            t,
            AUTHENTICATION | ERROR_RESPONSE | NOTICE_RESPONSE | NEGOTIATE_PROTOCOL_VERSION
        ),
        FramePhase::Server => matches!(
            t,
            BACKEND_KEY_DATA
                | BIND_COMPLETE
                | CLOSE_COMPLETE
                | COMMAND_COMPLETE
                | COPY_IN_RESPONSE
                | COPY_OUT_RESPONSE
                | COPY_BOTH_RESPONSE
                | COPY_DATA
                | COPY_DONE
                | DATA_ROW
                | EMPTY_QUERY_RESPONSE
                | ERROR_RESPONSE
                | FUNCTION_CALL_RESPONSE
                | NEGOTIATE_PROTOCOL_VERSION
                | NO_DATA
                | NOTICE_RESPONSE
                | NOTIFICATION_RESPONSE
                | PARAMETER_DESCRIPTION
                | PARAMETER_STATUS
                | PARSE_COMPLETE
                | PORTAL_SUSPENDED
                | READY_FOR_QUERY
                | ROW_DESCRIPTION
        ),
    }
}

/// Minimum allowed `len` for this tag in this phase (see the module table).
/// Illegal tags return 0 (they are rejected before any length check).
pub fn min_len(t: u8, phase: FramePhase) -> usize {
    use tag::*;
    if !tag_allowed(t, phase) {
        return 0;
    }
    match phase {
        FramePhase::Startup => MIN_STARTUP_LEN,
        FramePhase::ClientAuth | FramePhase::Client => MIN_MSG_LEN,
        FramePhase::ServerAuth => match t {
            AUTHENTICATION => 8,
            NEGOTIATE_PROTOCOL_VERSION => 12,
            _ => 5, // E, N: at least the terminating NUL
        },
        FramePhase::Server => match t {
            BACKEND_KEY_DATA => MIN_BACKEND_KEY_DATA_LEN,
            READY_FOR_QUERY => 5,
            PARAMETER_STATUS => 6,
            ERROR_RESPONSE | NOTICE_RESPONSE | COMMAND_COMPLETE => 5,
            NOTIFICATION_RESPONSE => 10,
            NEGOTIATE_PROTOCOL_VERSION => 12,
            PARAMETER_DESCRIPTION | ROW_DESCRIPTION | DATA_ROW => 6,
            COPY_IN_RESPONSE | COPY_OUT_RESPONSE | COPY_BOTH_RESPONSE => 7,
            FUNCTION_CALL_RESPONSE => 8,
            _ => MIN_MSG_LEN,
        },
    }
}

/// Maximum allowed `len` for this tag in this phase (see the module table).
/// Illegal tags (including `R` after authentication) return 0.
pub fn max_len(t: u8, phase: FramePhase, lim: &Limits) -> usize {
    use tag::*;
    if !tag_allowed(t, phase) {
        return 0;
    }
    match phase {
        FramePhase::Startup => lim.startup_max,
        FramePhase::ClientAuth => lim.auth_msg_max,
        FramePhase::Client => lim.max_packet_size,
        FramePhase::ServerAuth => match t {
            ERROR_RESPONSE | NOTICE_RESPONSE => lim.inspect_max,
            _ => lim.auth_msg_max,
        },
        FramePhase::Server => match t {
            BACKEND_KEY_DATA => MAX_BACKEND_KEY_DATA_LEN,
            READY_FOR_QUERY => 5,
            PARSE_COMPLETE | BIND_COMPLETE | CLOSE_COMPLETE | NO_DATA | PORTAL_SUSPENDED
            | EMPTY_QUERY_RESPONSE | COPY_DONE => MIN_MSG_LEN,
            PARAMETER_STATUS
            | ERROR_RESPONSE
            | NOTICE_RESPONSE
            | COMMAND_COMPLETE
            | NOTIFICATION_RESPONSE => lim.inspect_max,
            NEGOTIATE_PROTOCOL_VERSION => lim.auth_msg_max,
            PARAMETER_DESCRIPTION => MAX_PARAMETER_DESCRIPTION_LEN.min(lim.max_packet_size),
            COPY_IN_RESPONSE | COPY_OUT_RESPONSE | COPY_BOTH_RESPONSE => {
                MAX_COPY_RESPONSE_LEN.min(lim.max_packet_size)
            }
            _ => lim.max_packet_size,
        },
    }
}

/// Validates the header only (for streaming large messages).
///
/// `Ok(None)`: fewer than 5 (tagged) / 8 (startup) bytes and nothing wrong so
/// far. A tagged message with an illegal tag is rejected as soon as its first
/// byte is present.
pub fn parse_header(
    buf: &[u8],
    phase: FramePhase,
    lim: &Limits,
) -> Result<Option<Header>, ProtoError> {
    if phase == FramePhase::Startup {
        return parse_startup_header(buf, lim);
    }
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    if !tag_allowed(t, phase) {
        return Err(ProtoError::UnexpectedTag { phase, tag: t });
    }
    let Some(hdr) = buf.get(..TAGGED_HEADER_LEN) else {
        return Ok(None);
    };
    let mut r = Reader::new(hdr);
    r.u8("message tag")?;
    let raw = r.i32_be("message length")?;
    let bad = ProtoError::BadLength { tag: t, len: raw };
    let len = usize::try_from(raw).map_err(|_| bad)?;
    if len < MIN_MSG_LEN || len < min_len(t, phase) {
        return Err(bad);
    }
    let max = max_len(t, phase, lim);
    let too_long = ProtoError::TooLong { tag: t, len, max };
    if len > max {
        return Err(too_long);
    }
    let wire_len = len.checked_add(1).ok_or(too_long)?;
    Ok(Some(Header {
        tag: t,
        len,
        wire_len,
    }))
}

fn parse_startup_header(buf: &[u8], lim: &Limits) -> Result<Option<Header>, ProtoError> {
    // The length alone is judged as soon as its 4 bytes are in, so a bad
    // length is refused at once instead of waiting for bytes that never come.
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let raw = Reader::new(len_bytes).i32_be("startup length")?;
    let bad = ProtoError::BadLength { tag: 0, len: raw };
    let len = usize::try_from(raw).map_err(|_| bad)?;
    if len < MIN_STARTUP_LEN {
        return Err(bad);
    }
    let max = lim.startup_max;
    if len > max {
        return Err(ProtoError::TooLong { tag: 0, len, max });
    }
    let Some(hdr) = buf.get(..STARTUP_HEADER_LEN) else {
        return Ok(None);
    };
    let mut r = Reader::new(hdr);
    r.take(4, "startup length")?;
    let code = r.i32_be("startup code")?;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if len != SSL_REQUEST_LEN {
                return Err(bad);
            }
        }
        CANCEL_REQUEST_CODE => {
            if !(MIN_CANCEL_LEN..=MAX_CANCEL_LEN).contains(&len) {
                return Err(bad);
            }
        }
        PROTOCOL_3_0..=PROTOCOL_3_MAX => {}
        _ => return Err(ProtoError::BadStartupCode(code)),
    }
    Ok(Some(Header {
        tag: 0,
        len,
        wire_len: len,
    }))
}

/// The framing entry point. `Ok(None)`: need more bytes; `Ok(Some)`: a
/// complete frame borrowed from `buf` (bytes after it are left alone);
/// `Err`: invalid input.
pub fn parse_frame<'a>(
    buf: &'a [u8],
    phase: FramePhase,
    lim: &Limits,
) -> Result<Option<Frame<'a>>, ProtoError> {
    let Some(h) = parse_header(buf, phase, lim)? else {
        return Ok(None);
    };
    let Some(whole) = buf.get(..h.wire_len) else {
        return Ok(None);
    };
    let mut r = Reader::new(whole);
    r.take(phase.header_len(), "message header")?;
    Ok(Some(Frame {
        tag: h.tag,
        body: r.rest(),
        wire_len: h.wire_len,
    }))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::protocol::PROTOCOL_3_2;

    fn startup_bytes(len: i32, code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    fn tagged(t: u8, len: i32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Expected outcome: Some((tag, body_len, wire_len)), None = need more, or Err.
    type Want = Result<Option<(u8, usize, usize)>, ProtoError>;

    fn check(name: &str, buf: &[u8], phase: FramePhase, lim: &Limits, want: Want) {
        let got =
            parse_frame(buf, phase, lim).map(|o| o.map(|f| (f.tag, f.body.len(), f.wire_len)));
        assert_eq!(got, want, "case {name}");
        // parse_header agrees
        let h = parse_header(buf, phase, lim);
        match (&h, &want) {
            (Err(e), Err(w)) => assert_eq!(e, w, "header case {name}"),
            (Ok(Some(h)), Ok(Some((t, _, wl)))) => {
                assert_eq!((h.tag, h.wire_len), (*t, *wl), "header case {name}")
            }
            (Ok(_), Ok(None)) => {}
            _ => panic!("header/frame disagree in {name}: {h:?} vs {want:?}"),
        }
    }

    #[test]
    fn startup_table() {
        let lim = Limits::default();
        let mut startup30 = startup_bytes(0, PROTOCOL_3_0, b"user\0bob\0\0");
        let l = startup30.len() as i32;
        startup30[..4].copy_from_slice(&l.to_be_bytes());
        let mut startup32 = startup30.clone();
        startup32[4..8].copy_from_slice(&PROTOCOL_3_2.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, Want)> = vec![
            (
                "7 bytes",
                startup_bytes(8, SSL_REQUEST_CODE, b"")[..7].to_vec(),
                Ok(None),
            ),
            ("empty", vec![], Ok(None)),
            (
                "only a bad length (4), judged without the code",
                4i32.to_be_bytes().to_vec(),
                Err(ProtoError::BadLength { tag: 0, len: 4 }),
            ),
            (
                "only an oversized length, judged without the code",
                10_001i32.to_be_bytes().to_vec(),
                Err(ProtoError::TooLong {
                    tag: 0,
                    len: 10_001,
                    max: 10_000,
                }),
            ),
            ("only a good length", 8i32.to_be_bytes().to_vec(), Ok(None)),
            (
                "len 7",
                startup_bytes(7, PROTOCOL_3_0, b""),
                Err(ProtoError::BadLength { tag: 0, len: 7 }),
            ),
            (
                "len 10001",
                startup_bytes(10_001, PROTOCOL_3_0, b""),
                Err(ProtoError::TooLong {
                    tag: 0,
                    len: 10_001,
                    max: 10_000,
                }),
            ),
            (
                "len 10000 partial",
                startup_bytes(10_000, PROTOCOL_3_0, b"user\0"),
                Ok(None),
            ),
            (
                "negative",
                startup_bytes(-1, PROTOCOL_3_0, b""),
                Err(ProtoError::BadLength { tag: 0, len: -1 }),
            ),
            (
                "ssl 8",
                startup_bytes(8, SSL_REQUEST_CODE, b""),
                Ok(Some((0, 4, 8))),
            ),
            (
                "ssl len 12",
                startup_bytes(12, SSL_REQUEST_CODE, &[0; 4]),
                Err(ProtoError::BadLength { tag: 0, len: 12 }),
            ),
            (
                "gssenc 8",
                startup_bytes(8, GSSENC_REQUEST_CODE, b""),
                Ok(Some((0, 4, 8))),
            ),
            (
                "gssenc len 9",
                startup_bytes(9, GSSENC_REQUEST_CODE, b"x"),
                Err(ProtoError::BadLength { tag: 0, len: 9 }),
            ),
            (
                "cancel 16",
                startup_bytes(16, CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 1, 2, 3, 4]),
                Ok(Some((0, 12, 16))),
            ),
            (
                "cancel 268 header only",
                startup_bytes(268, CANCEL_REQUEST_CODE, &[]),
                Ok(None),
            ),
            (
                "cancel 15",
                startup_bytes(15, CANCEL_REQUEST_CODE, &[0; 7]),
                Err(ProtoError::BadLength { tag: 0, len: 15 }),
            ),
            (
                "cancel 269",
                startup_bytes(269, CANCEL_REQUEST_CODE, &[]),
                Err(ProtoError::BadLength { tag: 0, len: 269 }),
            ),
            (
                "protocol 3.0",
                startup30.clone(),
                Ok(Some((0, startup30.len() - 4, startup30.len()))),
            ),
            (
                "protocol 3.2",
                startup32.clone(),
                Ok(Some((0, startup32.len() - 4, startup32.len()))),
            ),
            (
                "protocol 3.0 partial",
                startup30[..startup30.len() - 1].to_vec(),
                Ok(None),
            ),
            (
                "protocol 2.0 rejected at 8 bytes",
                startup_bytes(100, 2 << 16, b""),
                Err(ProtoError::BadStartupCode(2 << 16)),
            ),
            (
                "protocol 4.0",
                startup_bytes(100, 4 << 16, b""),
                Err(ProtoError::BadStartupCode(4 << 16)),
            ),
            (
                "negative code",
                startup_bytes(100, -1, b""),
                Err(ProtoError::BadStartupCode(-1)),
            ),
        ];
        for (name, buf, want) in cases {
            check(name, &buf, FramePhase::Startup, &lim, want);
        }
    }

    #[test]
    fn tagged_table() {
        let lim = Limits::default();
        let cap = lim.auth_msg_max;
        let cap_i = cap as i32;
        let body_cap = vec![b'x'; cap - 4];
        let cases: Vec<(&str, FramePhase, Vec<u8>, Want)> = vec![
            ("empty", FramePhase::Client, vec![], Ok(None)),
            ("4 bytes", FramePhase::Client, vec![b'Q', 0, 0, 0], Ok(None)),
            (
                "len 3",
                FramePhase::Client,
                tagged(b'Q', 3, b""),
                Err(ProtoError::BadLength { tag: b'Q', len: 3 }),
            ),
            (
                "len -1",
                FramePhase::Client,
                tagged(b'Q', -1, b""),
                Err(ProtoError::BadLength { tag: b'Q', len: -1 }),
            ),
            (
                "len = cap",
                FramePhase::ClientAuth,
                tagged(b'p', cap_i, &body_cap),
                Ok(Some((b'p', cap - 4, cap + 1))),
            ),
            (
                "len = cap + 1",
                FramePhase::ClientAuth,
                tagged(b'p', cap_i + 1, b""),
                Err(ProtoError::TooLong {
                    tag: b'p',
                    len: cap + 1,
                    max: cap,
                }),
            ),
            (
                "partial body",
                FramePhase::Client,
                tagged(b'Q', 9, b"sel"),
                Ok(None),
            ),
            (
                "sync",
                FramePhase::Client,
                tagged(b'S', 4, b""),
                Ok(Some((b'S', 0, 5))),
            ),
            (
                "two messages: first only",
                FramePhase::Client,
                [tagged(b'Q', 6, b"x\0"), tagged(b'S', 4, b"")].concat(),
                Ok(Some((b'Q', 2, 7))),
            ),
            (
                "Q in client auth",
                FramePhase::ClientAuth,
                tagged(b'Q', 6, b"x\0"),
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::ClientAuth,
                    tag: b'Q',
                }),
            ),
            (
                "bad tag rejected at first byte",
                FramePhase::Client,
                vec![b'Z'],
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::Client,
                    tag: b'Z',
                }),
            ),
            (
                "K in server auth",
                FramePhase::ServerAuth,
                tagged(b'K', 12, &[0; 8]),
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::ServerAuth,
                    tag: b'K',
                }),
            ),
            (
                "R after auth",
                FramePhase::Server,
                tagged(b'R', 8, &[0; 4]),
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::Server,
                    tag: b'R',
                }),
            ),
            (
                "Q from server",
                FramePhase::Server,
                tagged(b'Q', 4, b""),
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::Server,
                    tag: b'Q',
                }),
            ),
            (
                "tag 0 tagged phase",
                FramePhase::Client,
                vec![0, 0, 0, 0, 8],
                Err(ProtoError::UnexpectedTag {
                    phase: FramePhase::Client,
                    tag: 0,
                }),
            ),
            (
                "Z 5",
                FramePhase::Server,
                tagged(b'Z', 5, b"I"),
                Ok(Some((b'Z', 1, 6))),
            ),
            (
                "Z 6",
                FramePhase::Server,
                tagged(b'Z', 6, b"II"),
                Err(ProtoError::TooLong {
                    tag: b'Z',
                    len: 6,
                    max: 5,
                }),
            ),
            (
                "Z 4",
                FramePhase::Server,
                tagged(b'Z', 4, b""),
                Err(ProtoError::BadLength { tag: b'Z', len: 4 }),
            ),
            (
                "K 11",
                FramePhase::Server,
                tagged(b'K', 11, &[0; 7]),
                Err(ProtoError::BadLength { tag: b'K', len: 11 }),
            ),
            (
                "K 265",
                FramePhase::Server,
                tagged(b'K', 265, b""),
                Err(ProtoError::TooLong {
                    tag: b'K',
                    len: 265,
                    max: 264,
                }),
            ),
            (
                "1 with body",
                FramePhase::Server,
                tagged(b'1', 5, b"x"),
                Err(ProtoError::TooLong {
                    tag: b'1',
                    len: 5,
                    max: 4,
                }),
            ),
            (
                "E over inspect_max",
                FramePhase::Server,
                tagged(b'E', lim.inspect_max as i32 + 1, b""),
                Err(ProtoError::TooLong {
                    tag: b'E',
                    len: lim.inspect_max + 1,
                    max: lim.inspect_max,
                }),
            ),
            (
                "E in server auth up to inspect_max",
                FramePhase::ServerAuth,
                tagged(b'E', lim.inspect_max as i32, b""),
                Ok(None),
            ),
            (
                "R in server auth over auth cap",
                FramePhase::ServerAuth,
                tagged(b'R', cap_i + 1, b""),
                Err(ProtoError::TooLong {
                    tag: b'R',
                    len: cap + 1,
                    max: cap,
                }),
            ),
            (
                "D big row streams",
                FramePhase::Server,
                tagged(b'D', 1 << 20, b""),
                Ok(None),
            ),
            (
                "D over max_packet_size",
                FramePhase::Server,
                tagged(b'D', (1 << 30) + 1, b""),
                Err(ProtoError::TooLong {
                    tag: b'D',
                    len: (1 << 30) + 1,
                    max: 1 << 30,
                }),
            ),
            (
                "V function call response",
                FramePhase::Server,
                tagged(b'V', 8, &(-1i32).to_be_bytes()),
                Ok(Some((b'V', 4, 9))),
            ),
        ];
        for (name, phase, buf, want) in cases {
            check(name, &buf, phase, &lim, want);
        }
    }

    #[test]
    fn tag_tables() {
        for t in 0..=255u8 {
            let client = b"BCdcfDEHFPpQSX".contains(&t);
            assert_eq!(tag_allowed(t, FramePhase::Client), client, "client {t}");
            assert_eq!(tag_allowed(t, FramePhase::ClientAuth), t == b'p');
            assert_eq!(tag_allowed(t, FramePhase::ServerAuth), b"RENv".contains(&t));
            let server = b"KSZENACDTt123nsIGHWdcvV".contains(&t);
            assert_eq!(tag_allowed(t, FramePhase::Server), server, "server {t}");
            for phase in FramePhase::ALL {
                let lim = Limits::default();
                if tag_allowed(t, phase) {
                    assert!(min_len(t, phase) >= 4);
                    assert!(
                        min_len(t, phase) <= max_len(t, phase, &lim),
                        "{t} {phase:?}"
                    );
                } else {
                    assert_eq!(max_len(t, phase, &lim), 0);
                }
            }
        }
    }

    /// Tiny xorshift64 generator (no dependency); the seed is printed on failure.
    use crate::testing::XorShift;

    fn random_stream(rng: &mut XorShift) -> Vec<u8> {
        use crate::protocol::encode;
        let mut out = Vec::new();
        let n = 1 + rng.below_usize(12);
        for _ in 0..n {
            match rng.below_usize(6) {
                0 => {
                    let sql = vec![b'a'; rng.below_usize(200)];
                    encode::query(&mut out, &sql).unwrap();
                }
                1 => encode::sync(&mut out),
                2 => {
                    let p = vec![b'1'; rng.below_usize(40)];
                    encode::bind_text(&mut out, b"", b"s1", &[Some(&p), None]).unwrap();
                }
                3 => encode::execute(&mut out, b"", rng.below_usize(100) as i32).unwrap(),
                4 => encode::parse(&mut out, b"s1", b"select $1", &[23]).unwrap(),
                _ => encode::flush(&mut out),
            }
        }
        out
    }

    /// Frames a stream delivered in the given chunks, as a streaming reader
    /// would: append, frame everything complete, keep the remainder.
    fn frame_chunks(chunks: &[&[u8]], lim: &Limits) -> Vec<(u8, Vec<u8>)> {
        let mut pending: Vec<u8> = Vec::new();
        let mut frames = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            loop {
                match parse_frame(&pending, FramePhase::Client, lim) {
                    Ok(Some(f)) => {
                        frames.push((f.tag, f.body.to_vec()));
                        let n = f.wire_len;
                        pending.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => panic!("valid stream rejected: {e}"),
                }
            }
        }
        assert!(pending.is_empty(), "leftover bytes");
        frames
    }

    #[test]
    fn split_anywhere_property() {
        let lim = Limits::default();
        let seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rng = XorShift(seed);
        for round in 0..50 {
            let stream = random_stream(&mut rng);
            let whole = frame_chunks(&[&stream], &lim);
            for k in 0..=stream.len() {
                let (a, b) = stream.split_at(k);
                let split = frame_chunks(&[a, b], &lim);
                assert_eq!(split, whole, "seed {seed:#x} round {round} split {k}");
            }
            // and a random multi-way split
            let mut cuts: Vec<usize> = (0..rng.below_usize(8))
                .map(|_| rng.below_usize(stream.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&stream[prev..c]);
                prev = c;
            }
            chunks.push(&stream[prev..]);
            assert_eq!(
                frame_chunks(&chunks, &lim),
                whole,
                "seed {seed:#x} round {round}"
            );
        }
    }
}
