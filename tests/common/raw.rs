//! A tiny blocking PostgreSQL v3 client for tests, written against the protocol
//! documentation and deliberately independent of the crate's own codec.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

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
    /// Set by [`RawConn::start_tls`]: from then on every read and write goes
    /// through TLS (over a clone of `stream`; socket timeouts still apply).
    tls: Option<Box<StreamOwned<ClientConnection, TcpStream>>>,
    /// The TLS-level error that ended the connection (alert, bad record, EOF
    /// without close_notify), if any.
    pub tls_error: Option<String>,
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
            tls: None,
            tls_error: None,
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

    /// Connects and starts TLS at once (direct TLS, no SSLRequest: what libpq
    /// 17+ does with `sslnegotiation=direct`), offering `alpn` (None: no ALPN
    /// extension at all). Err describes a refused or failed handshake.
    pub fn connect_direct_tls(
        port: u16,
        ca: &Path,
        server_name: &str,
        alpn: Option<&[u8]>,
    ) -> Result<RawConn, String> {
        let mut c = Self::try_connect(port).map_err(|e| format!("connect: {e}"))?;
        c.start_tls(ca, server_name, alpn)?;
        Ok(c)
    }

    /// Connects, sends an SSLRequest, expects `S`, then completes a TLS
    /// handshake (verifying the server against `ca` for `localhost`, ALPN
    /// `postgresql` as libpq 17+ offers). Panics on any deviation.
    pub fn connect_ssl_request(port: u16, ca: &Path) -> RawConn {
        let mut c = Self::connect(port);
        c.send(&ssl_request_bytes());
        let answer = c.read_byte();
        assert_eq!(
            answer,
            Some(b'S'),
            "SSLRequest must be answered 'S' (got {:?})",
            answer.map(|b| b as char)
        );
        c.start_tls(ca, "localhost", Some(b"postgresql"))
            .unwrap_or_else(|e| panic!("TLS handshake after 'S': {e}"));
        c
    }

    /// Runs a rustls client handshake on this connection (after an `S`, or
    /// first thing for direct TLS). Nothing may be buffered.
    pub fn start_tls(
        &mut self,
        ca: &Path,
        server_name: &str,
        alpn: Option<&[u8]>,
    ) -> Result<(), String> {
        assert!(self.tls.is_none(), "start_tls: TLS already active");
        assert!(self.buf.is_empty(), "start_tls with buffered plaintext");
        let config = tls_client_config(ca, alpn);
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("server name {server_name:?}: {e}"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| format!("rustls: {e}"))?;
        let sock = self
            .stream
            .try_clone()
            .map_err(|e| format!("clone socket: {e}"))?;
        let mut tls = Box::new(StreamOwned::new(conn, sock));
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok((0, 0)) if tls.conn.is_handshaking() => {
                    return Err("TLS handshake: connection closed by the peer".into());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("TLS handshake: {e}")),
            }
        }
        self.tls = Some(tls);
        Ok(())
    }

    /// Whether reads and writes go through TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol the server selected (TLS only).
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.tls
            .as_ref()
            .and_then(|t| t.conn.alpn_protocol().map(<[u8]>::to_vec))
    }

    fn io_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_mut() {
            None => self.stream.read(buf),
            // A peer closing without close_notify, or a fatal alert / TLS
            // error, ends the connection: EOF for our purposes (kept in
            // `tls_error` for messages).
            Some(t) => match t.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                    ) =>
                {
                    self.tls_error = Some(e.to_string());
                    Ok(0)
                }
                r => r,
            },
        }
    }

    fn io_write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            None => self.stream.write_all(bytes),
            Some(t) => {
                t.write_all(bytes)?;
                t.flush()
            }
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream
            .set_read_timeout(Some(d))
            .expect("set_read_timeout");
    }

    /// Writes all bytes; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.io_write_all(bytes).expect("write to proxy");
    }

    /// Writes all bytes; an error (peer closed early) is returned, not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io_write_all(bytes)
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
        match self.io_read(&mut b) {
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
            match self.io_read(&mut chunk) {
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

    /// Drives login after `startup`: answers cleartext, MD5 and SCRAM-SHA-256
    /// requests with `password` (SCRAM with pgvpd's own client, which checks
    /// the server signature), records BackendKeyData and ParameterStatus, and
    /// returns at the first ReadyForQuery. An ErrorResponse (or EOF) is Err.
    pub fn auth_trust_or_cleartext(&mut self, password: Option<&str>) -> Result<(), ErrorInfo> {
        let mut scram: Option<pgvpd::auth::scram::ScramClient> = None;
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
                        10 => {
                            let pw = password.expect("server asked for SCRAM; no password given");
                            let nonce: [u8; 18] = std::array::from_fn(|i| {
                                (std::process::id() as u8)
                                    .wrapping_mul(31)
                                    .wrapping_add(i as u8)
                                    .wrapping_add(self.auth_requests.len() as u8)
                            });
                            let c = pgvpd::auth::scram::ScramClient::new(pw.as_bytes(), &nonce);
                            let first = c.client_first();
                            let mech = b"SCRAM-SHA-256\0";
                            let mut m = vec![b'p'];
                            let len = 4 + mech.len() + 4 + first.len();
                            m.extend_from_slice(&(len as i32).to_be_bytes());
                            m.extend_from_slice(mech);
                            m.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            m.extend_from_slice(&first);
                            self.send(&m);
                            scram = Some(c);
                        }
                        11 => {
                            let c = scram.as_mut().expect("SASLContinue without SASL");
                            let reply = c
                                .handle_server_first(&body[4..])
                                .unwrap_or_else(|e| panic!("SCRAM server-first: {e}"));
                            let mut m = vec![b'p'];
                            m.extend_from_slice(&((4 + reply.len()) as i32).to_be_bytes());
                            m.extend_from_slice(&reply);
                            self.send(&m);
                        }
                        12 => {
                            let c = scram.as_mut().expect("SASLFinal without SASL");
                            c.handle_server_final(&body[4..])
                                .unwrap_or_else(|e| panic!("SCRAM server signature: {e}"));
                        }
                        other => panic!("RawConn cannot do authentication request {other}"),
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
            match self.io_read(&mut chunk) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_reset(&e) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }
}

/// A rustls client config (ring provider) trusting only the CA certificates
/// in the PEM file `ca`, offering `alpn` when given.
pub fn tls_client_config(ca: &Path, alpn: Option<&[u8]>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .unwrap_or_else(|e| panic!("read CA {}: {e}", ca.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parse CA {}: {e}", ca.display()));
    assert!(!certs.is_empty(), "no certificate in {}", ca.display());
    for c in certs {
        roots
            .add(c)
            .unwrap_or_else(|e| panic!("CA {}: {e}", ca.display()));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("rustls protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.to_vec()];
    }
    Arc::new(config)
}

/// The first flight of a TLS client (its ClientHello records), for tests that
/// send part of it and stall.
pub fn client_hello_bytes(ca: &Path, alpn: Option<&[u8]>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("server name");
    let mut conn = ClientConnection::new(tls_client_config(ca, alpn), name).expect("rustls client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write ClientHello");
    }
    out
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
