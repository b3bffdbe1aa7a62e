//! Encoders for every message the proxy itself sends, to either peer.
//!
//! Owns: appending complete messages to a `Vec<u8>`: start the message,
//! write its fields, back-patch the length with a checked `i32` conversion.
//! Must not: read peer bytes, panic, or ever leave half a message in `out`.
//! Invariants:
//! - on `Err`, `out` is exactly as it was before the call (truncated back);
//! - C strings are written only if they contain no NUL (`ProtoError::Encode`);
//! - the infallible proxy-generated texts (`error_response` & co.) replace any
//!   NUL by a space and are truncated to `MAX_GENERATED_FIELD_LEN` bytes on a
//!   char boundary, so they cannot fail;
//! - what is encoded here decodes with `frame` + `frontend`/`backend` to the
//!   same values (tested below and by `crate::testing` oracles).

use super::frontend::MAX_STARTUP_PARAMS;
use super::{
    CANCEL_REQUEST_CODE, MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN, ProtoError, backend, tag,
};

/// Longest text field of a proxy-generated ErrorResponse/NoticeResponse.
pub const MAX_GENERATED_FIELD_LEN: usize = 2048;

/// Writes one message (tagged when `tag` is `Some`) whose body `f` writes,
/// back-patching the length. Restores `out` on error.
fn message<F>(out: &mut Vec<u8>, tag: Option<u8>, f: F) -> Result<(), ProtoError>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), ProtoError>,
{
    let mark = out.len();
    let r = write_message(out, tag, f);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn write_message<F>(out: &mut Vec<u8>, tag: Option<u8>, f: F) -> Result<(), ProtoError>
where
    F: FnOnce(&mut Vec<u8>) -> Result<(), ProtoError>,
{
    if let Some(t) = tag {
        out.push(t);
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out)?;
    let err = ProtoError::Encode("message length");
    let len = out.len().checked_sub(at).ok_or(err)?;
    let len = i32::try_from(len).map_err(|_| err)?;
    let slot = out
        .get_mut(at..)
        .and_then(|s| s.first_chunk_mut::<4>())
        .ok_or(err)?;
    *slot = len.to_be_bytes();
    Ok(())
}

/// A message with a fixed, tiny body: cannot fail (the length is a constant).
fn fixed(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    // Infallible: the body is at most a few bytes, so the length fits.
    let _ = message(out, Some(tag), |o| {
        o.extend_from_slice(body);
        Ok(())
    });
}

fn put_cstr(out: &mut Vec<u8>, s: &[u8], what: &'static str) -> Result<(), ProtoError> {
    if s.contains(&0) {
        return Err(ProtoError::Encode(what));
    }
    out.extend_from_slice(s);
    out.push(0);
    Ok(())
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), ProtoError> {
    let n = u16::try_from(n).map_err(|_| ProtoError::Encode(what))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_cancel_key(out: &mut Vec<u8>, key: &[u8]) -> Result<(), ProtoError> {
    if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&key.len()) {
        return Err(ProtoError::Encode("cancel key length"));
    }
    out.extend_from_slice(key);
    Ok(())
}

/// Writes a proxy-generated text as a C string: NUL → ' ', truncated to
/// `MAX_GENERATED_FIELD_LEN` bytes on a char boundary.
fn put_text(out: &mut Vec<u8>, s: &str) {
    let cap = s.len().min(MAX_GENERATED_FIELD_LEN);
    let end = (0..=cap)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    let s = s.get(..end).unwrap_or_default();
    out.extend(s.bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

/// Answer to SSLRequest/GSSENCRequest: one byte, `b'N'` or `b'S'` (`b'G'`).
pub fn ssl_response(out: &mut Vec<u8>, answer: u8) {
    out.push(answer);
}

fn error_like(
    out: &mut Vec<u8>,
    t: u8,
    severity: &str,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    // Infallible: five fields of at most MAX_GENERATED_FIELD_LEN bytes.
    let _ = message(out, Some(t), |o| {
        for (field, text) in [
            (b'S', Some(severity)),
            (b'V', Some(severity)),
            (b'C', Some(code)),
            (b'M', Some(message_text)),
            (b'D', detail),
            (b'H', hint),
        ] {
            if let Some(text) = text {
                o.push(field);
                put_text(o, text);
            }
        }
        o.push(0);
        Ok(())
    });
}

/// ErrorResponse with fields S, V, C, M. Never fails.
pub fn error_response(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    error_like(
        out,
        tag::ERROR_RESPONSE,
        severity,
        code,
        message,
        None,
        None,
    );
}

/// ErrorResponse with fields S, V, C, M and optional D, H. Never fails.
pub fn error_response_detail(
    out: &mut Vec<u8>,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    error_like(
        out,
        tag::ERROR_RESPONSE,
        severity,
        code,
        message,
        detail,
        hint,
    );
}

/// NoticeResponse with fields S, V, C, M. Never fails.
pub fn notice_response(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    error_like(
        out,
        tag::NOTICE_RESPONSE,
        severity,
        code,
        message,
        None,
        None,
    );
}

/// StartupMessage. Names must be non-empty, nothing may contain NUL, and at
/// most `MAX_STARTUP_PARAMS` pairs (what `decode_startup` accepts).
pub fn startup_message(
    out: &mut Vec<u8>,
    version: i32,
    params: &[(&[u8], &[u8])],
) -> Result<(), ProtoError> {
    if params.len() > MAX_STARTUP_PARAMS {
        return Err(ProtoError::Encode("startup parameter count"));
    }
    message(out, None, |o| {
        put_i32(o, version);
        for (k, v) in params {
            if k.is_empty() {
                return Err(ProtoError::Encode("startup parameter name"));
            }
            put_cstr(o, k, "startup parameter name")?;
            put_cstr(o, v, "startup parameter value")?;
        }
        o.push(0);
        Ok(())
    })
}

/// SSLRequest: length 8, code 80877103 (the answer is one byte).
pub fn ssl_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&super::SSL_REQUEST_CODE.to_be_bytes());
}

/// CancelRequest; `key` must be 4..=256 bytes.
pub fn cancel_request(out: &mut Vec<u8>, pid: i32, key: &[u8]) -> Result<(), ProtoError> {
    message(out, None, |o| {
        put_i32(o, CANCEL_REQUEST_CODE);
        put_i32(o, pid);
        put_cancel_key(o, key)
    })
}

pub fn auth_ok(out: &mut Vec<u8>) {
    fixed(
        out,
        tag::AUTHENTICATION,
        &backend::auth_code::OK.to_be_bytes(),
    );
}

pub fn auth_cleartext_password(out: &mut Vec<u8>) {
    fixed(
        out,
        tag::AUTHENTICATION,
        &backend::auth_code::CLEARTEXT_PASSWORD.to_be_bytes(),
    );
}

pub fn auth_md5_password(out: &mut Vec<u8>, salt: [u8; 4]) {
    let [a, b, c, d] = backend::auth_code::MD5_PASSWORD.to_be_bytes();
    fixed(
        out,
        tag::AUTHENTICATION,
        &[a, b, c, d, salt[0], salt[1], salt[2], salt[3]],
    );
}

/// AuthenticationSASL: 1..=`backend::MAX_SASL_MECHANISMS` non-empty names.
pub fn auth_sasl(out: &mut Vec<u8>, mechanisms: &[&[u8]]) -> Result<(), ProtoError> {
    if mechanisms.is_empty() || mechanisms.len() > backend::MAX_SASL_MECHANISMS {
        return Err(ProtoError::Encode("SASL mechanism count"));
    }
    message(out, Some(tag::AUTHENTICATION), |o| {
        put_i32(o, backend::auth_code::SASL);
        for m in mechanisms {
            if m.is_empty() {
                return Err(ProtoError::Encode("SASL mechanism"));
            }
            put_cstr(o, m, "SASL mechanism")?;
        }
        o.push(0);
        Ok(())
    })
}

/// AuthenticationSASLContinue.
pub fn auth_sasl_continue(out: &mut Vec<u8>, data: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::AUTHENTICATION), |o| {
        put_i32(o, backend::auth_code::SASL_CONTINUE);
        o.extend_from_slice(data);
        Ok(())
    })
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(out: &mut Vec<u8>, data: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::AUTHENTICATION), |o| {
        put_i32(o, backend::auth_code::SASL_FINAL);
        o.extend_from_slice(data);
        Ok(())
    })
}

/// PasswordMessage (cleartext or MD5 hash).
pub fn password_message(out: &mut Vec<u8>, password: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::PASSWORD_MESSAGE), |o| {
        put_cstr(o, password, "password")
    })
}

/// SASLInitialResponse; `data: None` writes length -1.
pub fn sasl_initial_response(
    out: &mut Vec<u8>,
    mechanism: &[u8],
    data: Option<&[u8]>,
) -> Result<(), ProtoError> {
    message(out, Some(tag::PASSWORD_MESSAGE), |o| {
        put_cstr(o, mechanism, "SASL mechanism")?;
        match data {
            None => put_i32(o, -1),
            Some(d) => {
                let n = i32::try_from(d.len()).map_err(|_| ProtoError::Encode("SASL data"))?;
                put_i32(o, n);
                o.extend_from_slice(d);
            }
        }
        Ok(())
    })
}

/// SASLResponse.
pub fn sasl_response(out: &mut Vec<u8>, data: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::PASSWORD_MESSAGE), |o| {
        o.extend_from_slice(data);
        Ok(())
    })
}

pub fn parameter_status(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::PARAMETER_STATUS), |o| {
        put_cstr(o, name, "parameter name")?;
        put_cstr(o, value, "parameter value")
    })
}

/// BackendKeyData; `key` must be 4..=256 bytes.
pub fn backend_key_data(out: &mut Vec<u8>, pid: i32, key: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::BACKEND_KEY_DATA), |o| {
        put_i32(o, pid);
        put_cancel_key(o, key)
    })
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    fixed(out, tag::READY_FOR_QUERY, &[status]);
}

/// NegotiateProtocolVersion (sent to a client asking for a newer minor).
pub fn negotiate_protocol_version(
    out: &mut Vec<u8>,
    newest_minor: i32,
    unrecognized: &[&[u8]],
) -> Result<(), ProtoError> {
    if unrecognized.len() > backend::MAX_NEGOTIATE_OPTIONS {
        return Err(ProtoError::Encode("option count"));
    }
    message(out, Some(tag::NEGOTIATE_PROTOCOL_VERSION), |o| {
        put_i32(o, newest_minor);
        let n =
            i32::try_from(unrecognized.len()).map_err(|_| ProtoError::Encode("option count"))?;
        put_i32(o, n);
        for name in unrecognized {
            put_cstr(o, name, "option name")?;
        }
        Ok(())
    })
}

pub fn query(out: &mut Vec<u8>, sql: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::QUERY), |o| put_cstr(o, sql, "query string"))
}

/// CopyFail (`f`): aborts a COPY FROM STDIN with `reason`.
pub fn copy_fail(out: &mut Vec<u8>, reason: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::COPY_FAIL), |o| {
        put_cstr(o, reason, "CopyFail reason")
    })
}

/// Parse with explicit parameter type OIDs (0 = unspecified).
pub fn parse(
    out: &mut Vec<u8>,
    name: &[u8],
    sql: &[u8],
    param_types: &[u32],
) -> Result<(), ProtoError> {
    message(out, Some(tag::PARSE), |o| {
        put_cstr(o, name, "statement name")?;
        put_cstr(o, sql, "query string")?;
        put_count(o, param_types.len(), "parameter type count")?;
        for t in param_types {
            o.extend_from_slice(&t.to_be_bytes());
        }
        Ok(())
    })
}

/// Bind with every parameter in text format (`None` = NULL) and text results.
pub fn bind_text(
    out: &mut Vec<u8>,
    portal: &[u8],
    statement: &[u8],
    params: &[Option<&[u8]>],
) -> Result<(), ProtoError> {
    message(out, Some(tag::BIND), |o| {
        put_cstr(o, portal, "portal name")?;
        put_cstr(o, statement, "statement name")?;
        put_count(o, 0, "parameter format count")?; // all text
        put_count(o, params.len(), "parameter count")?;
        for p in params {
            match p {
                None => put_i32(o, -1),
                Some(v) => {
                    let n = i32::try_from(v.len())
                        .map_err(|_| ProtoError::Encode("parameter length"))?;
                    put_i32(o, n);
                    o.extend_from_slice(v);
                }
            }
        }
        put_count(o, 0, "result format count") // all text
    })
}

/// Describe of a prepared statement (`D`, `'S'`).
pub fn describe_statement(out: &mut Vec<u8>, name: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::DESCRIBE), |o| {
        o.push(b'S');
        put_cstr(o, name, "statement name")
    })
}

/// Close of a prepared statement (`C`, `'S'`).
pub fn close_statement(out: &mut Vec<u8>, name: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::CLOSE), |o| {
        o.push(b'S');
        put_cstr(o, name, "statement name")
    })
}

/// Parse under `name` whose remaining body (query text, NUL, parameter
/// types) is taken as the client sent it.
pub fn parse_renamed(out: &mut Vec<u8>, name: &[u8], rest: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::PARSE), |o| {
        put_cstr(o, name, "statement name")?;
        o.extend_from_slice(rest);
        Ok(())
    })
}

/// Describe of a portal (`D`, `'P'`).
pub fn describe_portal(out: &mut Vec<u8>, portal: &[u8]) -> Result<(), ProtoError> {
    message(out, Some(tag::DESCRIBE), |o| {
        o.push(b'P');
        put_cstr(o, portal, "portal name")
    })
}

pub fn execute(out: &mut Vec<u8>, portal: &[u8], max_rows: i32) -> Result<(), ProtoError> {
    message(out, Some(tag::EXECUTE), |o| {
        put_cstr(o, portal, "portal name")?;
        put_i32(o, max_rows);
        Ok(())
    })
}

pub fn sync(out: &mut Vec<u8>) {
    fixed(out, tag::SYNC, &[]);
}

pub fn flush(out: &mut Vec<u8>) {
    fixed(out, tag::FLUSH, &[]);
}

pub fn terminate(out: &mut Vec<u8>) {
    fixed(out, tag::TERMINATE, &[]);
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
    use crate::protocol::backend::*;
    use crate::protocol::frame::{Frame, parse_frame};
    use crate::protocol::frontend::*;
    use crate::protocol::{FramePhase, Limits, PROTOCOL_3_0, PROTOCOL_3_2};

    /// Frames `out` as exactly one message in `phase`.
    fn one(out: &[u8], phase: FramePhase) -> Frame<'_> {
        let f = parse_frame(out, phase, &Limits::default())
            .unwrap()
            .expect("complete frame");
        assert_eq!(f.wire_len, out.len(), "exactly one message");
        f
    }

    #[test]
    fn server_messages_round_trip() {
        let mut o = Vec::new();
        auth_ok(&mut o);
        assert_eq!(o, [b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(
            decode_auth(one(&o, FramePhase::ServerAuth).body),
            Ok(Auth::Ok)
        );

        o.clear();
        auth_cleartext_password(&mut o);
        assert_eq!(
            decode_auth(one(&o, FramePhase::ServerAuth).body),
            Ok(Auth::CleartextPassword)
        );

        o.clear();
        auth_md5_password(&mut o, [9, 8, 7, 6]);
        assert_eq!(
            decode_auth(one(&o, FramePhase::ServerAuth).body),
            Ok(Auth::Md5Password { salt: [9, 8, 7, 6] })
        );

        o.clear();
        auth_sasl(&mut o, &[b"SCRAM-SHA-256"]).unwrap();
        let Auth::Sasl { mechanisms } = decode_auth(one(&o, FramePhase::ServerAuth).body).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            mechanisms.iter().collect::<Vec<_>>(),
            vec![&b"SCRAM-SHA-256"[..]]
        );

        o.clear();
        auth_sasl_continue(&mut o, b"r=x,s=y,i=4096").unwrap();
        assert_eq!(
            decode_auth(one(&o, FramePhase::ServerAuth).body),
            Ok(Auth::SaslContinue(b"r=x,s=y,i=4096"))
        );
        o.clear();
        auth_sasl_final(&mut o, b"v=abc").unwrap();
        assert_eq!(
            decode_auth(one(&o, FramePhase::ServerAuth).body),
            Ok(Auth::SaslFinal(b"v=abc"))
        );

        o.clear();
        parameter_status(&mut o, b"TimeZone", b"UTC").unwrap();
        assert_eq!(
            decode_parameter_status(one(&o, FramePhase::Server).body),
            Ok(ParameterStatus {
                name: b"TimeZone",
                value: b"UTC"
            })
        );

        for key in [&[1u8, 2, 3, 4][..], &[5u8; 256][..]] {
            o.clear();
            backend_key_data(&mut o, 77, key).unwrap();
            assert_eq!(
                decode_backend_key_data(one(&o, FramePhase::Server).body),
                Ok(BackendKeyData { pid: 77, key })
            );
        }

        o.clear();
        ready_for_query(&mut o, b'I');
        assert_eq!(
            decode_ready_for_query(one(&o, FramePhase::Server).body),
            Ok(b'I')
        );

        o.clear();
        negotiate_protocol_version(&mut o, 0, &[b"_pq_.x"]).unwrap();
        let n = decode_negotiate_protocol_version(one(&o, FramePhase::ServerAuth).body).unwrap();
        assert_eq!(n.newest_minor, 0);
        assert_eq!(
            n.unrecognized.iter().collect::<Vec<_>>(),
            vec![&b"_pq_.x"[..]]
        );
    }

    #[test]
    fn error_responses() {
        let mut o = Vec::new();
        error_response(&mut o, "FATAL", "28000", "no\0pe");
        let f = decode_error_fields(one(&o, FramePhase::Server).body).unwrap();
        assert_eq!(f.severity, Some(&b"FATAL"[..]));
        assert_eq!(f.severity_v, Some(&b"FATAL"[..]));
        assert_eq!(f.code, Some(&b"28000"[..]));
        assert_eq!(f.message, Some(&b"no pe"[..]));
        assert_eq!(f.detail, None);

        o.clear();
        error_response_detail(&mut o, "ERROR", "42501", "m", Some("d"), Some("h"));
        let f = decode_error_fields(one(&o, FramePhase::ServerAuth).body).unwrap();
        assert_eq!((f.detail, f.hint), (Some(&b"d"[..]), Some(&b"h"[..])));

        o.clear();
        notice_response(&mut o, "NOTICE", "00000", "hello");
        let f = one(&o, FramePhase::Server);
        assert_eq!(f.tag, b'N');
        assert_eq!(
            decode_error_fields(f.body).unwrap().message,
            Some(&b"hello"[..])
        );

        // long text is truncated on a char boundary, never fails
        o.clear();
        let long = "é".repeat(MAX_GENERATED_FIELD_LEN);
        error_response(&mut o, "ERROR", "XX000", &long);
        let f = decode_error_fields(one(&o, FramePhase::Server).body).unwrap();
        let m = f.message.unwrap();
        assert_eq!(m.len(), MAX_GENERATED_FIELD_LEN);
        assert!(std::str::from_utf8(m).is_ok());
    }

    #[test]
    fn client_messages_round_trip() {
        let mut o = Vec::new();
        let params: [(&[u8], &[u8]); 2] = [(b"user", b"u.t"), (b"database", b"d")];
        startup_message(&mut o, PROTOCOL_3_2, &params).unwrap();
        let StartupPacket::Startup(s) = decode_startup(one(&o, FramePhase::Startup).body).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.version, PROTOCOL_3_2);
        assert_eq!(s.params().collect::<Vec<_>>(), params.to_vec());

        o.clear();
        cancel_request(&mut o, 5, &[1; 32]).unwrap();
        assert_eq!(
            decode_startup(one(&o, FramePhase::Startup).body),
            Ok(StartupPacket::Cancel(CancelRequest {
                pid: 5,
                key: &[1; 32]
            }))
        );

        o.clear();
        password_message(&mut o, b"md5abc").unwrap();
        assert_eq!(
            decode_password(one(&o, FramePhase::ClientAuth).body),
            Ok(&b"md5abc"[..])
        );

        o.clear();
        sasl_initial_response(&mut o, b"SCRAM-SHA-256", Some(b"n,,n=,r=x")).unwrap();
        let m = decode_sasl_initial_response(one(&o, FramePhase::ClientAuth).body).unwrap();
        assert_eq!(
            (m.mechanism, m.data),
            (&b"SCRAM-SHA-256"[..], Some(&b"n,,n=,r=x"[..]))
        );
        o.clear();
        sasl_response(&mut o, b"c=biws").unwrap();
        assert_eq!(
            decode_sasl_response(one(&o, FramePhase::ClientAuth).body),
            Ok(&b"c=biws"[..])
        );

        o.clear();
        query(&mut o, b"select 1").unwrap();
        assert_eq!(
            decode_query(one(&o, FramePhase::Client).body),
            Ok(Query { sql: b"select 1" })
        );

        o.clear();
        parse(&mut o, b"s", b"select $1, $2", &[25, 0]).unwrap();
        assert_eq!(
            decode_parse(one(&o, FramePhase::Client).body),
            Ok(Parse {
                name: b"s",
                sql: b"select $1, $2",
                param_types: 2
            })
        );

        o.clear();
        bind_text(&mut o, b"p", b"s", &[Some(b"42"), None, Some(b"")]).unwrap();
        assert_eq!(
            decode_bind(one(&o, FramePhase::Client).body),
            Ok(Bind {
                portal: b"p",
                statement: b"s"
            })
        );

        o.clear();
        execute(&mut o, b"p", 10).unwrap();
        assert_eq!(
            decode_execute(one(&o, FramePhase::Client).body),
            Ok(Execute {
                portal: b"p",
                max_rows: 10
            })
        );

        o.clear();
        describe_portal(&mut o, b"p").unwrap();
        assert_eq!(o, [b'D', 0, 0, 0, 7, b'P', b'p', 0]);

        for (f, t) in [
            (sync as fn(&mut Vec<u8>), b'S'),
            (flush, b'H'),
            (terminate, b'X'),
        ] {
            o.clear();
            f(&mut o);
            assert_eq!(o, [t, 0, 0, 0, 4]);
        }
        o.clear();
        sync(&mut o);
        assert_eq!(decode_sync(one(&o, FramePhase::Client).body), Ok(()));

        o.clear();
        ssl_response(&mut o, b'N');
        assert_eq!(o, b"N");
    }

    #[test]
    fn errors_leave_out_unchanged() {
        let prefix = b"keep".to_vec();
        let many: Vec<(&[u8], &[u8])> = vec![(b"k", b"v"); MAX_STARTUP_PARAMS + 1];
        let types = vec![0u32; 65_536];
        type Enc = Box<dyn Fn(&mut Vec<u8>) -> Result<(), ProtoError>>;
        let cases: Vec<(&str, Enc, ProtoError)> = vec![
            (
                "query nul",
                Box::new(|o| query(o, b"a\0b")),
                ProtoError::Encode("query string"),
            ),
            (
                "startup value nul",
                Box::new(|o| startup_message(o, PROTOCOL_3_0, &[(b"user", b"a"), (b"db", b"x\0")])),
                ProtoError::Encode("startup parameter value"),
            ),
            (
                "startup empty name",
                Box::new(|o| startup_message(o, PROTOCOL_3_0, &[(b"", b"a")])),
                ProtoError::Encode("startup parameter name"),
            ),
            (
                "startup too many",
                Box::new(move |o| startup_message(o, PROTOCOL_3_0, &many)),
                ProtoError::Encode("startup parameter count"),
            ),
            (
                "password nul",
                Box::new(|o| password_message(o, b"\0")),
                ProtoError::Encode("password"),
            ),
            (
                "param status nul",
                Box::new(|o| parameter_status(o, b"a", b"b\0")),
                ProtoError::Encode("parameter value"),
            ),
            (
                "key short",
                Box::new(|o| backend_key_data(o, 1, &[1, 2, 3])),
                ProtoError::Encode("cancel key length"),
            ),
            (
                "key long",
                Box::new(|o| cancel_request(o, 1, &[1; 257])),
                ProtoError::Encode("cancel key length"),
            ),
            (
                "parse nul",
                Box::new(|o| parse(o, b"s\0", b"x", &[])),
                ProtoError::Encode("statement name"),
            ),
            (
                "parse 65536 types",
                Box::new(move |o| parse(o, b"s", b"x", &types)),
                ProtoError::Encode("parameter type count"),
            ),
            (
                "bind nul",
                Box::new(|o| bind_text(o, b"", b"s\0", &[])),
                ProtoError::Encode("statement name"),
            ),
            (
                "describe nul",
                Box::new(|o| describe_portal(o, b"\0")),
                ProtoError::Encode("portal name"),
            ),
            (
                "execute nul",
                Box::new(|o| execute(o, b"\0", 0)),
                ProtoError::Encode("portal name"),
            ),
            (
                "sasl none",
                Box::new(|o| auth_sasl(o, &[])),
                ProtoError::Encode("SASL mechanism count"),
            ),
            (
                "sasl empty",
                Box::new(|o| auth_sasl(o, &[b"A", b""])),
                ProtoError::Encode("SASL mechanism"),
            ),
        ];
        for (name, enc, want) in cases {
            let mut o = prefix.clone();
            assert_eq!(enc(&mut o), Err(want), "case {name}");
            assert_eq!(o, prefix, "out changed in {name}");
        }
    }
}
