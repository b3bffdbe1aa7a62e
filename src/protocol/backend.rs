//! Typed, borrowed decoding of the server → proxy messages the proxy acts on.
//!
//! Owns: Authentication* (`R`), ParameterStatus (`S`), BackendKeyData (`K`),
//! ReadyForQuery (`Z`), ErrorResponse/NoticeResponse fields (`E`/`N`),
//! CommandComplete (`C`), DataRow (`D`) and NegotiateProtocolVersion (`v`).
//! Must not: trust the server (it is a peer like any other: every count and
//! length is checked), check frame lengths or tags (framing did), allocate,
//! panic, or slice bytes other than through `Reader`.
//! Invariants: every decoder consumes the whole body or fails; list-shaped
//! values (`SaslMechanisms`, `DataRow`, `UnrecognizedOptions`) are validated
//! in full before they are returned, so their iterators cannot fail; every
//! count has a named cap.
//! Inputs are `Frame::body` (after the length field).

use super::reader::Reader;
use super::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN, ProtoError};

/// Most SASL mechanisms accepted in AuthenticationSASL (PostgreSQL sends at
/// most two: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS).
pub const MAX_SASL_MECHANISMS: usize = 16;
/// Most fields accepted in one ErrorResponse/NoticeResponse (PostgreSQL
/// defines 18 field types and sends each at most once).
pub const MAX_ERROR_FIELDS: usize = 64;
/// Most option names accepted in NegotiateProtocolVersion.
pub const MAX_NEGOTIATE_OPTIONS: usize = 64;

/// Authentication request codes (`R` message, first int32).
pub mod auth_code {
    pub const OK: i32 = 0;
    pub const KERBEROS_V5: i32 = 2;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SCM_CREDENTIAL: i32 = 6;
    pub const GSS: i32 = 7;
    pub const GSS_CONTINUE: i32 = 8;
    pub const SSPI: i32 = 9;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// Iterator over a validated region of consecutive C strings.
#[derive(Clone, Debug)]
pub struct CStrIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for CStrIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.r.is_empty() {
            return None;
        }
        // validated by the decoder; an error cannot happen and ends iteration
        self.r.cstr("string list entry").ok()
    }
}

/// The mechanisms of AuthenticationSASL, validated (1..=`MAX_SASL_MECHANISMS`
/// non-empty names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaslMechanisms<'a> {
    list: &'a [u8],
}

impl<'a> SaslMechanisms<'a> {
    pub fn iter(&self) -> CStrIter<'a> {
        CStrIter {
            r: Reader::new(self.list),
        }
    }
    pub fn contains(&self, m: &[u8]) -> bool {
        self.iter().any(|x| x == m)
    }
}

/// An Authentication* request from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: SaslMechanisms<'a>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// KerberosV5 (2), SCMCredential (6), GSS (7), GSSContinue (8, its data
    /// is not exposed), SSPI (9): methods the proxy does not implement.
    Other(i32),
}

pub fn decode_auth(body: &[u8]) -> Result<Auth<'_>, ProtoError> {
    use auth_code::*;
    let mut r = Reader::new(body);
    let code = r.i32_be("authentication code")?;
    let auth = match code {
        OK => Auth::Ok,
        CLEARTEXT_PASSWORD => Auth::CleartextPassword,
        MD5_PASSWORD => {
            let s = r.take(4, "MD5 salt")?;
            let salt = <[u8; 4]>::try_from(s).map_err(|_| ProtoError::Short("MD5 salt"))?;
            Auth::Md5Password { salt }
        }
        SASL => {
            let all = r.rest();
            let mut m = Reader::new(all);
            let mut count: usize = 0;
            loop {
                let name = m.cstr("SASL mechanism")?;
                if name.is_empty() {
                    break;
                }
                count = count
                    .checked_add(1)
                    .filter(|&c| c <= MAX_SASL_MECHANISMS)
                    .ok_or(ProtoError::BadValue("SASL mechanism count"))?;
            }
            if count == 0 {
                return Err(ProtoError::BadValue("SASL mechanism count"));
            }
            let left = m.remaining();
            m.finish("AuthenticationSASL")?;
            let used = all.len().saturating_sub(left).saturating_sub(1);
            let list = Reader::new(all).take(used, "SASL mechanisms")?;
            Auth::Sasl {
                mechanisms: SaslMechanisms { list },
            }
        }
        SASL_CONTINUE => Auth::SaslContinue(r.rest()),
        SASL_FINAL => Auth::SaslFinal(r.rest()),
        GSS_CONTINUE => {
            r.rest();
            Auth::Other(code)
        }
        KERBEROS_V5 | SCM_CREDENTIAL | GSS | SSPI => Auth::Other(code),
        _ => return Err(ProtoError::BadValue("authentication code")),
    };
    r.finish("Authentication")?;
    Ok(auth)
}

/// ParameterStatus (`S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

pub fn decode_parameter_status(body: &[u8]) -> Result<ParameterStatus<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let name = r.cstr("parameter name")?;
    let value = r.cstr("parameter value")?;
    r.finish("ParameterStatus")?;
    Ok(ParameterStatus { name, value })
}

/// BackendKeyData (`K`); the key is 4 bytes (3.0) up to 256 bytes (3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendKeyData<'a> {
    pub pid: i32,
    pub key: &'a [u8],
}

pub fn decode_backend_key_data(body: &[u8]) -> Result<BackendKeyData<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let pid = r.i32_be("backend pid")?;
    let key = r.rest();
    if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&key.len()) {
        return Err(ProtoError::BadValue("cancel key length"));
    }
    Ok(BackendKeyData { pid, key })
}

/// ReadyForQuery (`Z`): the transaction status `I`, `T` or `E`.
pub fn decode_ready_for_query(body: &[u8]) -> Result<u8, ProtoError> {
    let mut r = Reader::new(body);
    let status = r.u8("transaction status")?;
    r.finish("ReadyForQuery")?;
    match status {
        b'I' | b'T' | b'E' => Ok(status),
        _ => Err(ProtoError::BadValue("transaction status")),
    }
}

/// The fields of ErrorResponse/NoticeResponse the proxy looks at. Every field
/// may be missing; a repeated field keeps its last value (as libpq does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `S`: localized severity.
    pub severity: Option<&'a [u8]>,
    /// `V`: non-localized severity (9.6+).
    pub severity_v: Option<&'a [u8]>,
    /// `C`: SQLSTATE.
    pub code: Option<&'a [u8]>,
    /// `M`: primary message.
    pub message: Option<&'a [u8]>,
    /// `D`: detail.
    pub detail: Option<&'a [u8]>,
    /// `H`: hint.
    pub hint: Option<&'a [u8]>,
}

/// Decodes the body of `E` or `N`: (type byte, C string)* then a 0 byte.
/// Unknown field types are skipped.
pub fn decode_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let mut f = ErrorFields::default();
    let mut count: usize = 0;
    loop {
        let t = r.u8("error field type")?;
        if t == 0 {
            break;
        }
        count = count
            .checked_add(1)
            .filter(|&c| c <= MAX_ERROR_FIELDS)
            .ok_or(ProtoError::BadValue("error field count"))?;
        let v = r.cstr("error field value")?;
        match t {
            b'S' => f.severity = Some(v),
            b'V' => f.severity_v = Some(v),
            b'C' => f.code = Some(v),
            b'M' => f.message = Some(v),
            b'D' => f.detail = Some(v),
            b'H' => f.hint = Some(v),
            _ => {}
        }
    }
    r.finish("ErrorResponse")?;
    Ok(f)
}

/// CommandComplete (`C`): the command tag string.
pub fn decode_command_complete(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut r = Reader::new(body);
    let t = r.cstr("command tag")?;
    r.finish("CommandComplete")?;
    Ok(t)
}

/// A validated DataRow (`D`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRow<'a> {
    count: usize,
    cols: &'a [u8],
}

impl<'a> DataRow<'a> {
    /// Number of columns.
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Column values in order; `None` is SQL NULL.
    pub fn columns(&self) -> DataRowColumns<'a> {
        DataRowColumns {
            r: Reader::new(self.cols),
        }
    }
}

/// Iterator over a validated DataRow's columns.
#[derive(Clone, Debug)]
pub struct DataRowColumns<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for DataRowColumns<'a> {
    type Item = Option<&'a [u8]>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        // validated by decode_data_row; errors cannot happen and end iteration
        let n = self.r.i32_be("column length").ok()?;
        if n == -1 {
            return Some(None);
        }
        let n = usize::try_from(n).ok()?;
        self.r.take(n, "column value").ok().map(Some)
    }
}

pub fn decode_data_row(body: &[u8]) -> Result<DataRow<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let n = r.i16_be("column count")?;
    let count = usize::try_from(n).map_err(|_| ProtoError::BadValue("column count"))?;
    let cols = r.rest();
    let mut c = Reader::new(cols);
    for _ in 0..count {
        let len = c.i32_be("column length")?;
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| ProtoError::BadValue("column length"))?;
        c.take(len, "column value")?;
    }
    c.finish("DataRow")?;
    Ok(DataRow { count, cols })
}

/// The column names of a RowDescription (`T`), in order. Every field is
/// validated; only the names are kept (the proxy reads results as text).
pub fn decode_row_description(body: &[u8]) -> Result<Vec<&[u8]>, ProtoError> {
    let mut r = Reader::new(body);
    let n = r.i16_be("field count")?;
    let count = usize::try_from(n).map_err(|_| ProtoError::BadValue("field count"))?;
    // Each field takes at least 19 bytes: a count beyond that is a lie, not an allocation.
    if count > r.remaining() / 19 {
        return Err(ProtoError::Short("row description field"));
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        names.push(r.cstr("field name")?);
        // table oid, attribute number, type oid, type size, type modifier, format
        r.take(4 + 2 + 4 + 2 + 4 + 2, "field attributes")?;
    }
    r.finish("RowDescription")?;
    Ok(names)
}

/// Option names the server did not recognize, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnrecognizedOptions<'a> {
    count: usize,
    list: &'a [u8],
}

impl<'a> UnrecognizedOptions<'a> {
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn iter(&self) -> CStrIter<'a> {
        CStrIter {
            r: Reader::new(self.list),
        }
    }
}

/// NegotiateProtocolVersion (`v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiateProtocolVersion<'a> {
    /// Newest minor protocol version the server supports for the requested major.
    pub newest_minor: i32,
    pub unrecognized: UnrecognizedOptions<'a>,
}

pub fn decode_negotiate_protocol_version(
    body: &[u8],
) -> Result<NegotiateProtocolVersion<'_>, ProtoError> {
    let mut r = Reader::new(body);
    let newest_minor = r.i32_be("newest minor version")?;
    let n = r.i32_be("option count")?;
    let count = usize::try_from(n)
        .ok()
        .filter(|&c| c <= MAX_NEGOTIATE_OPTIONS)
        .ok_or(ProtoError::BadValue("option count"))?;
    let list = r.rest();
    let mut c = Reader::new(list);
    for _ in 0..count {
        c.cstr("option name")?;
    }
    c.finish("NegotiateProtocolVersion")?;
    Ok(NegotiateProtocolVersion {
        newest_minor,
        unrecognized: UnrecognizedOptions { count, list },
    })
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

    #[test]
    fn row_description_names() {
        let mut body = 2i16.to_be_bytes().to_vec();
        for name in [&b"org_id"[..], b"role"] {
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(&[0u8; 18]);
        }
        let names = decode_row_description(&body).unwrap();
        assert_eq!(names, vec![&b"org_id"[..], b"role"]);
        assert_eq!(
            decode_row_description(&0i16.to_be_bytes()).unwrap().len(),
            0
        );
        // Truncated attributes, a lying count, trailing bytes, negative count.
        assert!(decode_row_description(&body[..body.len() - 1]).is_err());
        let mut lying = body.clone();
        lying[..2].copy_from_slice(&3i16.to_be_bytes());
        assert!(decode_row_description(&lying).is_err());
        lying[..2].copy_from_slice(&i16::MAX.to_be_bytes());
        assert!(decode_row_description(&lying).is_err());
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(decode_row_description(&trailing).is_err());
        assert!(decode_row_description(&(-1i16).to_be_bytes()).is_err());
    }

    fn be(v: i32) -> [u8; 4] {
        v.to_be_bytes()
    }

    #[test]
    fn auth_table() {
        let sasl = [&be(10)[..], b"SCRAM-SHA-256\0SCRAM-SHA-256-PLUS\0\0"].concat();
        let many = [&be(10)[..], &b"m\0".repeat(17), b"\0"].concat();
        let cases: Vec<(&str, Vec<u8>, Result<Auth<'static>, ProtoError>)> = vec![
            ("ok", be(0).to_vec(), Ok(Auth::Ok)),
            (
                "ok trailing",
                [&be(0)[..], b"x"].concat(),
                Err(ProtoError::TrailingData("Authentication")),
            ),
            ("cleartext", be(3).to_vec(), Ok(Auth::CleartextPassword)),
            (
                "md5",
                [&be(5)[..], &[1, 2, 3, 4]].concat(),
                Ok(Auth::Md5Password { salt: [1, 2, 3, 4] }),
            ),
            (
                "md5 short",
                [&be(5)[..], &[1, 2, 3]].concat(),
                Err(ProtoError::Short("MD5 salt")),
            ),
            (
                "md5 trailing",
                [&be(5)[..], &[1, 2, 3, 4, 5]].concat(),
                Err(ProtoError::TrailingData("Authentication")),
            ),
            (
                "sasl continue",
                [&be(11)[..], b"r=abc"].concat(),
                Ok(Auth::SaslContinue(b"r=abc")),
            ),
            (
                "sasl final",
                [&be(12)[..], b"v=xyz"].concat(),
                Ok(Auth::SaslFinal(b"v=xyz")),
            ),
            ("gss", be(7).to_vec(), Ok(Auth::Other(7))),
            (
                "gss continue",
                [&be(8)[..], b"tok"].concat(),
                Ok(Auth::Other(8)),
            ),
            (
                "sspi trailing",
                [&be(9)[..], b"x"].concat(),
                Err(ProtoError::TrailingData("Authentication")),
            ),
            (
                "unknown 4",
                be(4).to_vec(),
                Err(ProtoError::BadValue("authentication code")),
            ),
            (
                "short",
                vec![0, 0],
                Err(ProtoError::Short("authentication code")),
            ),
            (
                "sasl empty list",
                [&be(10)[..], b"\0"].concat(),
                Err(ProtoError::BadValue("SASL mechanism count")),
            ),
            (
                "sasl no terminator",
                [&be(10)[..], b"SCRAM-SHA-256\0"].concat(),
                Err(ProtoError::MissingNul("SASL mechanism")),
            ),
            (
                "sasl trailing",
                [&sasl[..], b"x"].concat(),
                Err(ProtoError::TrailingData("AuthenticationSASL")),
            ),
            (
                "sasl 17",
                many,
                Err(ProtoError::BadValue("SASL mechanism count")),
            ),
        ];
        for (name, body, want) in cases {
            assert_eq!(decode_auth(&body), want, "case {name}");
        }
        let Auth::Sasl { mechanisms } = decode_auth(&sasl).unwrap() else {
            panic!()
        };
        assert!(mechanisms.contains(b"SCRAM-SHA-256"));
        assert!(!mechanisms.contains(b"SCRAM"));
        assert_eq!(
            mechanisms.iter().collect::<Vec<_>>(),
            vec![&b"SCRAM-SHA-256"[..], &b"SCRAM-SHA-256-PLUS"[..]]
        );
    }

    #[test]
    fn small_messages_table() {
        assert_eq!(
            decode_parameter_status(b"TimeZone\0UTC\0"),
            Ok(ParameterStatus {
                name: b"TimeZone",
                value: b"UTC"
            })
        );
        assert_eq!(
            decode_parameter_status(b"TimeZone\0UTC\0x"),
            Err(ProtoError::TrailingData("ParameterStatus"))
        );
        assert_eq!(
            decode_parameter_status(b"TimeZone\0UTC"),
            Err(ProtoError::MissingNul("parameter value"))
        );
        let k = [&be(42)[..], &[7; 32]].concat();
        assert_eq!(
            decode_backend_key_data(&k),
            Ok(BackendKeyData {
                pid: 42,
                key: &[7; 32]
            })
        );
        let k3 = [&be(42)[..], &[7; 3]].concat();
        assert_eq!(
            decode_backend_key_data(&k3),
            Err(ProtoError::BadValue("cancel key length"))
        );
        let k257 = [&be(42)[..], &[7; 257]].concat();
        assert_eq!(
            decode_backend_key_data(&k257),
            Err(ProtoError::BadValue("cancel key length"))
        );
        for (b, want) in [
            (&b"I"[..], Ok(b'I')),
            (b"T", Ok(b'T')),
            (b"E", Ok(b'E')),
            (b"X", Err(ProtoError::BadValue("transaction status"))),
            (b"II", Err(ProtoError::TrailingData("ReadyForQuery"))),
            (b"", Err(ProtoError::Short("transaction status"))),
        ] {
            assert_eq!(decode_ready_for_query(b), want, "{b:?}");
        }
        assert_eq!(decode_command_complete(b"SELECT 1\0"), Ok(&b"SELECT 1"[..]));
        assert_eq!(
            decode_command_complete(b"SELECT 1\0\0"),
            Err(ProtoError::TrailingData("CommandComplete"))
        );
    }

    #[test]
    fn error_fields_table() {
        let full = b"SERROR\0VERROR\0C42501\0Mdenied\0Dmore\0Hhint\0Ffile.c\0\0";
        let f = decode_error_fields(full).unwrap();
        assert_eq!(f.severity, Some(&b"ERROR"[..]));
        assert_eq!(f.severity_v, Some(&b"ERROR"[..]));
        assert_eq!(f.code, Some(&b"42501"[..]));
        assert_eq!(f.message, Some(&b"denied"[..]));
        assert_eq!(f.detail, Some(&b"more"[..]));
        assert_eq!(f.hint, Some(&b"hint"[..]));
        // missing C is a value, not an error
        let f = decode_error_fields(b"SFATAL\0Mno code\0\0").unwrap();
        assert_eq!(f.code, None);
        assert_eq!(f.message, Some(&b"no code"[..]));
        let many = [&b"Mx\0".repeat(65)[..], b"\0"].concat();
        let cases: Vec<(&str, Vec<u8>, ProtoError)> = vec![
            (
                "trailing",
                b"Mx\0\0y".to_vec(),
                ProtoError::TrailingData("ErrorResponse"),
            ),
            (
                "no final 0",
                b"Mx\0".to_vec(),
                ProtoError::Short("error field type"),
            ),
            ("empty", vec![], ProtoError::Short("error field type")),
            (
                "value no nul",
                b"Mx".to_vec(),
                ProtoError::MissingNul("error field value"),
            ),
            ("too many", many, ProtoError::BadValue("error field count")),
        ];
        for (name, body, want) in cases {
            assert_eq!(decode_error_fields(&body), Err(want), "case {name}");
        }
        assert_eq!(decode_error_fields(b"\0"), Ok(ErrorFields::default()));
    }

    #[test]
    fn data_row_table() {
        let row = [&[0, 3][..], &be(2), b"ab", &be(-1), &be(0)].concat();
        let d = decode_data_row(&row).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.columns().collect::<Vec<_>>(),
            vec![Some(&b"ab"[..]), None, Some(&b""[..])]
        );
        let cases: Vec<(&str, Vec<u8>, ProtoError)> = vec![
            (
                "negative count",
                vec![0xff, 0xff],
                ProtoError::BadValue("column count"),
            ),
            (
                "col past end",
                [&[0, 1][..], &be(5), b"ab"].concat(),
                ProtoError::Short("column value"),
            ),
            (
                "col len -2",
                [&[0, 1][..], &be(-2)].concat(),
                ProtoError::BadValue("column length"),
            ),
            (
                "missing col",
                [&[0, 2][..], &be(-1)].concat(),
                ProtoError::Short("column length"),
            ),
            (
                "trailing",
                [&row[..], b"x"].concat(),
                ProtoError::TrailingData("DataRow"),
            ),
            ("short count", vec![0], ProtoError::Short("column count")),
        ];
        for (name, body, want) in cases {
            assert_eq!(decode_data_row(&body), Err(want), "case {name}");
        }
        let empty = decode_data_row(&[0, 0]).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn negotiate_table() {
        let ok = [&be(0)[..], &be(2), b"_pq_.a\0_pq_.b\0"].concat();
        let n = decode_negotiate_protocol_version(&ok).unwrap();
        assert_eq!(n.newest_minor, 0);
        assert_eq!(n.unrecognized.len(), 2);
        assert_eq!(
            n.unrecognized.iter().collect::<Vec<_>>(),
            vec![&b"_pq_.a"[..], &b"_pq_.b"[..]]
        );
        let cases: Vec<(&str, Vec<u8>, ProtoError)> = vec![
            (
                "trailing",
                [&ok[..], b"x"].concat(),
                ProtoError::TrailingData("NegotiateProtocolVersion"),
            ),
            (
                "negative count",
                [&be(0)[..], &be(-1)].concat(),
                ProtoError::BadValue("option count"),
            ),
            (
                "huge count",
                [&be(0)[..], &be(65)].concat(),
                ProtoError::BadValue("option count"),
            ),
            (
                "missing name",
                [&be(0)[..], &be(1)].concat(),
                ProtoError::MissingNul("option name"),
            ),
            ("short", be(0).to_vec(), ProtoError::Short("option count")),
        ];
        for (name, body, want) in cases {
            assert_eq!(
                decode_negotiate_protocol_version(&body),
                Err(want),
                "case {name}"
            );
        }
    }
}
