//! Typed, borrowed decoding of the client → proxy messages the proxy acts on.
//!
//! Owns: the startup family (`decode_startup`: SSLRequest, GSSENCRequest,
//! CancelRequest, StartupMessage with its bounded parameter block), the
//! authentication messages sharing tag `p` (password, SASLInitialResponse,
//! SASLResponse) and the extended/simple query messages the proxy generates or
//! inspects (Query, Parse, Bind, Execute, Sync).
//! Must not: check message lengths or tags (framing did), allocate, panic, or
//! slice bytes other than through `Reader`.
//! Invariants: every decoder consumes the whole body or fails (trailing data is
//! `TrailingData`); a `Startup` only exists after its whole parameter block was
//! validated, so `ParamIter` cannot fail; at most `MAX_STARTUP_PARAMS` pairs.
//! Inputs are `Frame::body` (after the length field).

use super::frame::is_protocol_3;
use super::reader::Reader;
use super::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN, ProtoError,
    SSL_REQUEST_CODE,
};

/// Most parameters accepted in one StartupMessage (PostgreSQL has no explicit
/// cap beyond the 10 000-byte packet; real clients send fewer than 20).
pub const MAX_STARTUP_PARAMS: usize = 64;

/// One packet of the untagged startup family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    SslRequest,
    GssEncRequest,
    Cancel(CancelRequest<'a>),
    Startup(Startup<'a>),
}

/// CancelRequest; `key` is 4 bytes in protocol 3.0, up to 256 in 3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelRequest<'a> {
    pub pid: i32,
    pub key: &'a [u8],
}

/// A validated StartupMessage. `params` holds the name/value C strings
/// without the terminating empty name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Startup<'a> {
    /// Protocol version: major 3 (`version >> 16 == 3`), any minor.
    pub version: i32,
    params: &'a [u8],
    count: usize,
}

impl<'a> Startup<'a> {
    /// The (name, value) pairs in wire order.
    pub fn params(&self) -> ParamIter<'a> {
        ParamIter {
            r: Reader::new(self.params),
        }
    }

    /// The value of `key`; the last occurrence wins.
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.params()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    pub fn param_count(&self) -> usize {
        self.count
    }

    /// The major/minor protocol version.
    pub fn major_minor(&self) -> (u16, u16) {
        let [a, b, c, d] = self.version.to_be_bytes();
        (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
    }
}

/// Iterator over a validated startup parameter block.
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        // The block was validated by `decode_startup`; an error here cannot
        // happen and simply ends the iteration.
        let k = self.r.cstr("startup parameter name").ok()?;
        let v = self.r.cstr("startup parameter value").ok()?;
        Some((k, v))
    }
}

/// Decodes `Frame::body` of a Startup-phase frame (it starts with the code).
pub fn decode_startup(body: &[u8]) -> Result<StartupPacket<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let code = r.i32_be("startup code")?;
    match code {
        SSL_REQUEST_CODE => {
            r.finish("SSLRequest")?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            r.finish("GSSENCRequest")?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32_be("cancel pid")?;
            let key = r.rest();
            if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&key.len()) {
                return Err(ProtoError::BadValue("cancel key length"));
            }
            Ok(StartupPacket::Cancel(CancelRequest { pid, key }))
        }
        v if is_protocol_3(v) => {
            let block = r.rest();
            let mut p = Reader::new(block);
            let mut count: usize = 0;
            loop {
                let k = p.cstr("startup parameter name")?;
                if k.is_empty() {
                    break;
                }
                p.cstr("startup parameter value")?;
                count = count
                    .checked_add(1)
                    .filter(|&c| c <= MAX_STARTUP_PARAMS)
                    .ok_or(ProtoError::BadValue("startup parameter count"))?;
            }
            let left = p.remaining();
            p.finish("startup packet")?;
            // strip the terminating empty name (one NUL) from the stored block
            let used = block.len().saturating_sub(left).saturating_sub(1);
            let params = Reader::new(block).take(used, "startup parameters")?;
            Ok(StartupPacket::Startup(Startup {
                version: v,
                params,
                count,
            }))
        }
        c => Err(ProtoError::BadStartupCode(c)),
    }
}

/// PasswordMessage (`p`, cleartext or MD5): one C string, nothing after.
pub fn decode_password(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut r = Reader::new(body);
    let pw = r.cstr("password")?;
    r.finish("PasswordMessage")?;
    Ok(pw)
}

/// SASLInitialResponse (`p` after AuthenticationSASL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    /// `None` when the length field is -1 (no initial response).
    pub data: Option<&'a [u8]>,
}

pub fn decode_sasl_initial_response(body: &[u8]) -> Result<SaslInitialResponse<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASL mechanism")?;
    let n = r.i32_be("SASL data length")?;
    let data = if n == -1 {
        None
    } else {
        let n = usize::try_from(n).map_err(|_| ProtoError::BadValue("SASL data length"))?;
        Some(r.take(n, "SASL data")?)
    };
    r.finish("SASLInitialResponse")?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// SASLResponse (`p` during a SASL exchange): the whole body is the data.
pub fn decode_sasl_response(body: &[u8]) -> Result<&[u8], ProtoError> {
    Ok(Reader::new(body).rest())
}

/// Query (`Q`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    pub sql: &'a [u8],
}

pub fn decode_query(body: &[u8]) -> Result<Query<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let sql = r.cstr("query string")?;
    r.finish("Query")?;
    Ok(Query { sql })
}

/// Parse (`P`); the parameter type OIDs are validated but only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
    pub param_types: u16,
}

pub fn decode_parse(body: &[u8]) -> Result<Parse<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let name = r.cstr("statement name")?;
    let sql = r.cstr("query string")?;
    // PostgreSQL reads these counts as unsigned 16-bit (pq_getmsgint(.., 2)).
    let param_types = r.u16_be("parameter type count")?;
    let n = usize::from(param_types)
        .checked_mul(4)
        .ok_or(ProtoError::Short("parameter types"))?;
    r.take(n, "parameter types")?;
    r.finish("Parse")?;
    Ok(Parse {
        name,
        sql,
        param_types,
    })
}

/// Bind (`B`): the whole structure is validated, only the names are exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
}

/// Reads `count` format codes, each 0 (text) or 1 (binary).
fn format_codes(r: &mut Reader<'_>, count: u16, what: &'static str) -> Result<(), ProtoError> {
    for _ in 0..count {
        match r.i16_be(what)? {
            0 | 1 => {}
            _ => return Err(ProtoError::BadValue(what)),
        }
    }
    Ok(())
}

pub fn decode_bind(body: &[u8]) -> Result<Bind<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("portal name")?;
    let statement = r.cstr("statement name")?;
    let n_formats = r.u16_be("parameter format count")?;
    format_codes(&mut r, n_formats, "parameter format code")?;
    let n_params = r.u16_be("parameter count")?;
    // PostgreSQL: 0 formats (all text), 1 (applies to all) or one per parameter.
    if n_formats > 1 && n_formats != n_params {
        return Err(ProtoError::BadValue("parameter format count"));
    }
    for _ in 0..n_params {
        let len = r.i32_be("parameter length")?;
        if len == -1 {
            continue; // NULL
        }
        let len = usize::try_from(len).map_err(|_| ProtoError::BadValue("parameter length"))?;
        r.take(len, "parameter value")?;
    }
    let n_results = r.u16_be("result format count")?;
    format_codes(&mut r, n_results, "result format code")?;
    r.finish("Bind")?;
    Ok(Bind { portal, statement })
}

/// Execute (`E`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a [u8],
    /// 0 means "no limit".
    pub max_rows: i32,
}

pub fn decode_execute(body: &[u8]) -> Result<Execute<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("portal name")?;
    let max_rows = r.i32_be("max rows")?;
    r.finish("Execute")?;
    Ok(Execute { portal, max_rows })
}

/// Sync (`S`): an empty body.
pub fn decode_sync(body: &[u8]) -> Result<(), ProtoError> {
    Reader::new(body).finish("Sync")
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
    use crate::protocol::{PROTOCOL_3_0, PROTOCOL_3_2, encode};

    fn sbody(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn startup_table() {
        let many: Vec<u8> = (0..65)
            .flat_map(|i| format!("k{i}\0v\0").into_bytes())
            .chain([0])
            .collect();
        let sixty_four: Vec<u8> = (0..64)
            .flat_map(|i| format!("k{i}\0v\0").into_bytes())
            .chain([0])
            .collect();
        let cases: Vec<(&str, Vec<u8>, Result<usize, ProtoError>)> = vec![
            ("ssl", sbody(SSL_REQUEST_CODE, b""), Ok(0)),
            (
                "ssl trailing",
                sbody(SSL_REQUEST_CODE, b"x"),
                Err(ProtoError::TrailingData("SSLRequest")),
            ),
            ("gss", sbody(GSSENC_REQUEST_CODE, b""), Ok(0)),
            (
                "cancel",
                sbody(CANCEL_REQUEST_CODE, &[0, 0, 0, 9, 1, 2, 3, 4]),
                Ok(0),
            ),
            (
                "cancel key 3",
                sbody(CANCEL_REQUEST_CODE, &[0, 0, 0, 9, 1, 2, 3]),
                Err(ProtoError::BadValue("cancel key length")),
            ),
            (
                "cancel no pid",
                sbody(CANCEL_REQUEST_CODE, &[0, 0]),
                Err(ProtoError::Short("cancel pid")),
            ),
            (
                "3.0",
                sbody(PROTOCOL_3_0, b"user\0bob\0database\0db\0\0"),
                Ok(2),
            ),
            ("3.2", sbody(PROTOCOL_3_2, b"user\0bob\0\0"), Ok(1)),
            ("3.0 no params", sbody(PROTOCOL_3_0, b"\0"), Ok(0)),
            (
                "missing final NUL",
                sbody(PROTOCOL_3_0, b"user\0bob\0"),
                Err(ProtoError::MissingNul("startup parameter name")),
            ),
            (
                "missing value",
                sbody(PROTOCOL_3_0, b"user\0bob"),
                Err(ProtoError::MissingNul("startup parameter value")),
            ),
            (
                "trailing after terminator",
                sbody(PROTOCOL_3_0, b"user\0bob\0\0x"),
                Err(ProtoError::TrailingData("startup packet")),
            ),
            ("64 params", sbody(PROTOCOL_3_0, &sixty_four), Ok(64)),
            (
                "65 params",
                sbody(PROTOCOL_3_0, &many),
                Err(ProtoError::BadValue("startup parameter count")),
            ),
            (
                "protocol 2.0",
                sbody(2 << 16, b"\0"),
                Err(ProtoError::BadStartupCode(2 << 16)),
            ),
            (
                "short code",
                vec![0, 3],
                Err(ProtoError::Short("startup code")),
            ),
        ];
        for (name, body, want) in cases {
            let got = decode_startup(&body).map(|p| match p {
                StartupPacket::Startup(s) => {
                    assert_eq!(s.params().count(), s.param_count(), "{name}");
                    s.param_count()
                }
                _ => 0,
            });
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn startup_accessors() {
        let body = sbody(PROTOCOL_3_2, b"user\0bob\0database\0db\0user\0eve\0\0");
        let StartupPacket::Startup(s) = decode_startup(&body).unwrap() else {
            panic!("not startup")
        };
        assert_eq!(s.major_minor(), (3, 2));
        assert_eq!(s.get(b"user"), Some(&b"eve"[..]));
        assert_eq!(s.get(b"database"), Some(&b"db"[..]));
        assert_eq!(s.get(b"nope"), None);
        let all: Vec<_> = s.params().collect();
        assert_eq!(all[0], (&b"user"[..], &b"bob"[..]));
        assert_eq!(all.len(), 3);

        let body = sbody(CANCEL_REQUEST_CODE, &[0, 0, 1, 0, 9, 9, 9, 9, 9]);
        assert_eq!(
            decode_startup(&body),
            Ok(StartupPacket::Cancel(CancelRequest {
                pid: 256,
                key: &[9, 9, 9, 9, 9]
            }))
        );
    }

    #[test]
    fn startup_round_trip() {
        let params: [(&[u8], &[u8]); 3] =
            [(b"user", b"app.acme"), (b"database", b"db"), (b"x", b"")];
        let mut out = Vec::new();
        encode::startup_message(&mut out, PROTOCOL_3_0, &params).unwrap();
        let StartupPacket::Startup(s) = decode_startup(&out[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(s.version, PROTOCOL_3_0);
        assert_eq!(s.params().collect::<Vec<_>>(), params.to_vec());
    }

    #[test]
    fn message_decoders_table() {
        // (name, decoder result as debug string or error)
        type R = Result<String, ProtoError>;
        let ok = |s: &str| -> R { Ok(s.to_string()) };
        let dbg = |r: Result<String, ProtoError>| r;
        let pw = |b: &[u8]| dbg(decode_password(b).map(|p| format!("{p:?}")));
        let q = |b: &[u8]| dbg(decode_query(b).map(|p| format!("{:?}", p.sql)));
        let pa = |b: &[u8]| {
            dbg(decode_parse(b).map(|p| format!("{:?}/{:?}/{}", p.name, p.sql, p.param_types)))
        };
        let bi =
            |b: &[u8]| dbg(decode_bind(b).map(|p| format!("{:?}/{:?}", p.portal, p.statement)));
        let ex =
            |b: &[u8]| dbg(decode_execute(b).map(|p| format!("{:?}/{}", p.portal, p.max_rows)));
        let sy = |b: &[u8]| dbg(decode_sync(b).map(|()| "sync".to_string()));

        let bind_ok: Vec<u8> = [
            &b"p\0s\0"[..],
            &[0, 1, 0, 0],             // one format: text
            &[0, 2],                   // two params
            &[0, 0, 0, 2, b'4', b'2'], // "42"
            &[0xff, 0xff, 0xff, 0xff], // NULL
            &[0, 1, 0, 1],             // one result format: binary
        ]
        .concat();
        let bind_trailing = [&bind_ok[..], b"x"].concat();
        let bind_bad_fmt: Vec<u8> = [&b"\0\0"[..], &[0, 1, 0, 2], &[0, 0], &[0, 0]].concat();
        let bind_fmt_count: Vec<u8> = [
            &b"\0\0"[..],
            &[0, 2, 0, 0, 0, 0],
            &[0, 1, 0, 0, 0, 0],
            &[0, 0],
        ]
        .concat();
        let bind_neg_len: Vec<u8> = [
            &b"\0\0"[..],
            &[0, 0],
            &[0, 1, 0xff, 0xff, 0xff, 0xfe],
            &[0, 0],
        ]
        .concat();
        let bind_past_end: Vec<u8> =
            [&b"\0\0"[..], &[0, 0], &[0, 1, 0, 0, 0, 9, b'x'], &[0, 0]].concat();
        let parse_ok: Vec<u8> = [&b"s1\0select $1\0"[..], &[0, 1, 0, 0, 0, 23]].concat();
        let parse_trailing = [&parse_ok[..], &[0]].concat();
        let parse_short: Vec<u8> = [&b"s1\0select $1\0"[..], &[0, 2, 0, 0, 0, 23]].concat();

        let cases: Vec<(&str, R, R)> = vec![
            ("pw", pw(b"secret\0"), ok("[115, 101, 99, 114, 101, 116]")),
            (
                "pw trailing",
                pw(b"secret\0x"),
                Err(ProtoError::TrailingData("PasswordMessage")),
            ),
            (
                "pw no nul",
                pw(b"secret"),
                Err(ProtoError::MissingNul("password")),
            ),
            ("query", q(b"select\0"), ok("[115, 101, 108, 101, 99, 116]")),
            (
                "query trailing",
                q(b"a\0b"),
                Err(ProtoError::TrailingData("Query")),
            ),
            (
                "query no nul",
                q(b"a"),
                Err(ProtoError::MissingNul("query string")),
            ),
            (
                "parse",
                pa(&parse_ok),
                ok("[115, 49]/[115, 101, 108, 101, 99, 116, 32, 36, 49]/1"),
            ),
            (
                "parse trailing",
                pa(&parse_trailing),
                Err(ProtoError::TrailingData("Parse")),
            ),
            (
                "parse short",
                pa(&parse_short),
                Err(ProtoError::Short("parameter types")),
            ),
            ("bind", bi(&bind_ok), ok("[112]/[115]")),
            (
                "bind trailing",
                bi(&bind_trailing),
                Err(ProtoError::TrailingData("Bind")),
            ),
            (
                "bind bad format",
                bi(&bind_bad_fmt),
                Err(ProtoError::BadValue("parameter format code")),
            ),
            (
                "bind format count",
                bi(&bind_fmt_count),
                Err(ProtoError::BadValue("parameter format count")),
            ),
            (
                "bind len -2",
                bi(&bind_neg_len),
                Err(ProtoError::BadValue("parameter length")),
            ),
            (
                "bind past end",
                bi(&bind_past_end),
                Err(ProtoError::Short("parameter value")),
            ),
            ("execute", ex(b"\0\0\0\0\x05"), ok("[]/5")),
            (
                "execute trailing",
                ex(b"\0\0\0\0\x05\0"),
                Err(ProtoError::TrailingData("Execute")),
            ),
            (
                "execute short",
                ex(b"\0\0\0"),
                Err(ProtoError::Short("max rows")),
            ),
            ("sync", sy(b""), ok("sync")),
            (
                "sync trailing",
                sy(b"x"),
                Err(ProtoError::TrailingData("Sync")),
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn sasl_client_messages() {
        let mut b = b"SCRAM-SHA-256\0".to_vec();
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"n,,");
        let m = decode_sasl_initial_response(&b).unwrap();
        assert_eq!(m.mechanism, b"SCRAM-SHA-256");
        assert_eq!(m.data, Some(&b"n,,"[..]));
        let mut t = b.clone();
        t.push(0);
        assert_eq!(
            decode_sasl_initial_response(&t),
            Err(ProtoError::TrailingData("SASLInitialResponse"))
        );
        let mut n = b"M\0".to_vec();
        n.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_sasl_initial_response(&n).unwrap().data, None);
        let mut bad = b"M\0".to_vec();
        bad.extend_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            decode_sasl_initial_response(&bad),
            Err(ProtoError::BadValue("SASL data length"))
        );
        assert_eq!(decode_sasl_response(b"c=biws"), Ok(&b"c=biws"[..]));
    }
}
