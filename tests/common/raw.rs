//! A tiny blocking PostgreSQL v3 client for tests, written against the protocol
//! documentation and deliberately independent of the crate's own codec.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST_CODE: i32 = 80_877_103;
const GSSENC_REQUEST_CODE: i32 = 80_877_104;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Sanity cap on a message from the proxy (a larger one is a proxy bug here).
const MAX_MESSAGE: usize = 64 << 20;

/// Rows of a simple query: each field text or NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// Fields of an ErrorResponse we assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorInfo {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    fn eof() -> Self {
        ErrorInfo {
            severity: String::new(),
            code: "EOF".into(),
            message: "connection closed without an ErrorResponse".into(),
        }
    }
}

/// What [`RawConn::wait_error_or_eof`] saw first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Error(ErrorInfo),
    Eof,
    /// A message of this type arrived instead (e.g. `R` = authentication went on).
    Other(u8),
    /// Nothing within the limit: the peer hangs.
    Timeout,
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A complete StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, PROTOCOL_3_0);
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::new();
    put_i32(&mut out, (body.len() + 4) as i32);
    out.extend_from_slice(&body);
    out
}

fn code_packet(code: i32) -> Vec<u8> {
    let mut out = Vec::new();
    put_i32(&mut out, 8);
    put_i32(&mut out, code);
    out
}

pub fn ssl_request_bytes() -> Vec<u8> {
    code_packet(SSL_REQUEST_CODE)
}

pub fn gssenc_request_bytes() -> Vec<u8> {
    code_packet(GSSENC_REQUEST_CODE)
}

pub fn cancel_request_bytes(pid: u32, key: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put_i32(&mut out, 16);
    put_i32(&mut out, CANCEL_REQUEST_CODE);
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    put_i32(&mut out, (body.len() + 4) as i32);
    out.extend_from_slice(body);
    out
}

pub fn query_bytes(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    tagged(b'Q', &body)
}

pub fn password_bytes(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    tagged(b'p', &body)
}

pub fn terminate_bytes() -> Vec<u8> {
    tagged(b'X', &[])
}

/// Parses the fields of an ErrorResponse/NoticeResponse body.
pub fn parse_error(body: &[u8]) -> ErrorInfo {
    let mut e = ErrorInfo::default();
    let mut sev_v = None;
    for field in body.split(|b| *b == 0) {
        let Some((&t, val)) = field.split_first() else {
            continue;
        };
        let val = String::from_utf8_lossy(val).to_string();
        match t {
            b'S' => e.severity = val,
            b'V' => sev_v = Some(val),
            b'C' => e.code = val,
            b'M' => e.message = val,
            _ => {}
        }
    }
    if let Some(v) = sev_v {
        e.severity = v; // non-localized severity wins
    }
    e
}

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `md5` + hex(md5(hex(md5(password + user)) + salt)), as libpq computes it.
pub fn md5_password(user: &str, password: &str, salt: &[u8]) -> String {
    let inner = md5_hex(format!("{password}{user}").as_bytes());
    let mut outer = inner.into_bytes();
    outer.extend_from_slice(salt);
    format!("md5{}", md5_hex(&outer))
}

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The user name sent in the startup packet (libpq salts MD5 with it).
    pub user: Option<String>,
    /// BackendKeyData (pid, secret key) seen during login.
    pub backend_key: Option<(u32, u32)>,
    /// ParameterStatus values seen so far.
    pub params: Vec<(String, String)>,
    /// Authentication request subtypes seen, in order (0 ok, 3 cleartext, 5 md5, 10 SASL).
    pub auth_requests: Vec<i32>,
}

impl RawConn {
    /// Connects to 127.0.0.1:`port` (5 s connect timeout, 10 s read timeout, nodelay).
    pub fn connect(port: u16) -> RawConn {
        Self::try_connect(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<RawConn> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            user: None,
            backend_key: None,
            params: Vec::new(),
            auth_requests: Vec::new(),
        })
    }

    /// Connect, startup as `user` on `db`, authenticate (trust, cleartext, md5).
    pub fn login(
        port: u16,
        user: &str,
        db: &str,
        password: Option<&str>,
    ) -> Result<RawConn, ErrorInfo> {
        let mut c = Self::connect(port);
        c.startup(Some(user), db, &[]);
        c.auth_trust_or_cleartext(password)?;
        Ok(c)
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream
            .set_read_timeout(Some(d))
            .expect("set_read_timeout");
    }

    /// Writes all bytes; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Writes all bytes; an error (peer closed early) is returned, not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The bytes of a startup packet for `user` (omitted when None), `db` and extras.
    pub fn startup_packet(user: Option<&str>, db: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(u) = user {
            params.push(("user", u));
        }
        params.push(("database", db));
        params.extend_from_slice(extra);
        startup_bytes(&params)
    }

    /// Sends a StartupMessage.
    pub fn startup(&mut self, user: Option<&str>, db: &str, extra: &[(&str, &str)]) {
        self.user = user.map(str::to_string);
        let pkt = Self::startup_packet(user, db, extra);
        self.send(&pkt);
    }

    /// Reads one byte with nothing buffered (the answer to SSLRequest/GSSENCRequest).
    /// None on EOF.
    pub fn read_byte(&mut self) -> Option<u8> {
        assert!(self.buf.is_empty(), "read_byte with buffered message bytes");
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => None,
            Ok(_) => Some(b[0]),
            Err(e) if is_reset(&e) => None,
            Err(e) => panic!("reading the SSL/GSS answer: {e}"),
        }
    }

    /// Next message (type, body); Ok(None) on EOF or reset; Err on timeout/IO error.
    pub fn try_read_message(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                assert!(
                    len >= 4 && (len as usize) < MAX_MESSAGE,
                    "malformed message from proxy: type {:?} length {len}",
                    self.buf[0] as char
                );
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    let body = self.buf[5..total].to_vec();
                    self.buf.drain(..total);
                    return Ok(Some((tag, body)));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "EOF in the middle of a message ({} bytes buffered)",
                        self.buf.len()
                    );
                    return Ok(None);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_reset(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Next message; None on EOF. Panics on a read timeout (10 s by default).
    pub fn read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        self.try_read_message()
            .unwrap_or_else(|e| panic!("reading from proxy: {e} (timed out? the peer hangs)"))
    }

    /// Drives login after `startup`: answers cleartext and MD5 requests with
    /// `password`, records BackendKeyData and ParameterStatus, and returns at
    /// the first ReadyForQuery. An ErrorResponse (or EOF) is returned as Err.
    /// Panics on SASL (this client has no SCRAM: use psql for SCRAM users).
    pub fn auth_trust_or_cleartext(&mut self, password: Option<&str>) -> Result<(), ErrorInfo> {
        loop {
            let Some((tag, body)) = self.read_message() else {
                return Err(ErrorInfo::eof());
            };
            match tag {
                b'R' => {
                    let sub = i32::from_be_bytes(body[..4].try_into().expect("auth subtype"));
                    self.auth_requests.push(sub);
                    match sub {
                        0 => {}
                        3 => {
                            let pw = password.expect("server asked for a password; none given");
                            self.send(&password_bytes(pw));
                        }
                        5 => {
                            let pw = password.expect("server asked for a password; none given");
                            let user = self.user.clone().unwrap_or_default();
                            let salt = &body[4..8];
                            self.send(&password_bytes(&md5_password(&user, pw, salt)));
                        }
                        other => panic!(
                            "RawConn cannot do authentication request {other} (SASL?): use psql"
                        ),
                    }
                }
                b'K' => {
                    let pid = u32::from_be_bytes(body[0..4].try_into().expect("pid"));
                    let key = u32::from_be_bytes(body[4..8].try_into().expect("key"));
                    self.backend_key = Some((pid, key));
                }
                b'S' => {
                    let mut parts = body.split(|b| *b == 0);
                    let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
                    let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
                    self.params.push((k, v));
                }
                b'E' => return Err(parse_error(&body)),
                b'Z' => return Ok(()),
                b'N' => {}
                other => panic!("unexpected message {:?} during login", other as char),
            }
        }
    }

    /// The last ParameterStatus value for `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends a simple Query.
    pub fn send_query(&mut self, sql: &str) {
        self.send(&query_bytes(sql));
    }

    /// Reads one query's results up to ReadyForQuery. Rows of every result set
    /// are concatenated. The first ErrorResponse is returned as Err (also when
    /// the connection then closes without ReadyForQuery).
    pub fn read_query_result(&mut self) -> Result<Rows, ErrorInfo> {
        let mut rows = Vec::new();
        let mut err: Option<ErrorInfo> = None;
        loop {
            let Some((tag, body)) = self.read_message() else {
                return Err(err.unwrap_or_else(ErrorInfo::eof));
            };
            match tag {
                b'D' => rows.push(parse_data_row(&body)),
                b'E' if err.is_none() => err = Some(parse_error(&body)),
                b'Z' => return err.map_or(Ok(rows), Err),
                // RowDescription, CommandComplete, EmptyQuery, Notice, ParameterStatus, …
                _ => {}
            }
        }
    }

    /// Sends a simple Query and reads its result.
    pub fn simple_query(&mut self, sql: &str) -> Result<Rows, ErrorInfo> {
        self.send_query(sql);
        self.read_query_result()
    }

    /// First column of the first row of `sql`, panicking on error.
    pub fn query_one(&mut self, sql: &str) -> Option<String> {
        let rows = self
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.first().and_then(|r| r.first().cloned()).flatten()
    }

    /// Reads until an ErrorResponse, EOF, another message, or `within` elapses.
    /// NoticeResponse, ParameterStatus and RowDescription (sent before a
    /// query runs) are skipped. Used to prove "answers or closes, never hangs".
    pub fn wait_error_or_eof(&mut self, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Outcome::Timeout;
            }
            self.set_read_timeout(left);
            match self.try_read_message() {
                Ok(None) => return Outcome::Eof,
                Ok(Some((b'E', body))) => return Outcome::Error(parse_error(&body)),
                Ok(Some((b'N' | b'S' | b'T', _))) => {}
                Ok(Some((t, _))) => return Outcome::Other(t),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Outcome::Timeout;
                }
                Err(_) => return Outcome::Eof,
            }
        }
    }

    /// Reads raw bytes until EOF or `within` elapses; returns (bytes, saw_eof).
    pub fn read_raw_until_eof(&mut self, within: Duration) -> (Vec<u8>, bool) {
        let mut out = std::mem::take(&mut self.buf);
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (out, false);
            }
            self.set_read_timeout(left);
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_reset(&e) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }
}

fn parse_data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut pos = 2;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[pos..pos + 4].try_into().expect("field length"));
        pos += 4;
        if len < 0 {
            row.push(None);
        } else {
            let end = pos + len as usize;
            row.push(Some(String::from_utf8_lossy(&body[pos..end]).to_string()));
            pos = end;
        }
    }
    row
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
