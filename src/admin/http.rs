//! The HTTP/1.x subset the admin API speaks: a bounded request parser and a response encoder
//! (pure: bytes in, bytes out; the socket side is `admin::server`).
//!
//! One request per connection: every response carries `Connection: close` and the server
//! closes after it, so there is no pipelining or keep-alive state. Limits, checked before
//! anything grows: the request head (request line and headers) is at most [`MAX_HEAD`] bytes
//! and [`MAX_HEADERS`] lines (else 431), the body at most [`MAX_BODY`] bytes by its declared
//! `Content-Length` (else 413, answered as soon as the head is read, without waiting for the
//! body). `Transfer-Encoding` bodies are refused (411), as are obsolete line folding, a
//! missing or malformed request line, non-UTF-8 heads, control characters in header values,
//! conflicting `Content-Length`s and a second `Authorization` (400); versions other than
//! HTTP/1.0 and 1.1 get 505. Only origin-form targets (`/path?query`) are accepted.

/// Most bytes of a request head (request line + headers + the blank line).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines.
pub const MAX_HEADERS: usize = 64;
/// Most body bytes (by `Content-Length`).
pub const MAX_BODY: usize = 4 * 1024;
/// Most bytes a connection's buffer ever holds.
pub const MAX_REQUEST: usize = MAX_HEAD + MAX_BODY;

/// Request method, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// Any other (valid token) method.
    Other,
}

/// A parsed request, borrowing from the connection's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The target's path, without the query string.
    pub path: &'a str,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a request is refused before routing; each maps to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    BadRequest(&'static str),
    HeadTooLarge,
    BodyTooLarge,
    LengthRequired,
    VersionNotSupported,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::LengthRequired => 411,
            HttpError::VersionNotSupported => 505,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HttpError::BadRequest(why) => why,
            HttpError::HeadTooLarge => "request head too large",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::LengthRequired => "a body needs Content-Length",
            HttpError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1",
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Parses the request at the start of `buf`: `Ok(None)` while more bytes are needed,
/// `Ok(Some(request))` once the head and the whole declared body are there (bytes after the
/// body are ignored), `Err` for a request that must be refused (answer with
/// [`HttpError::status`] and close).
pub fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    let window = buf.get(..MAX_HEAD).unwrap_or(buf);
    let Some(head_len) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head = buf
        .get(..head_len)
        .ok_or(HttpError::BadRequest("bad head"))?;
    let head = std::str::from_utf8(head).map_err(|_| HttpError::BadRequest("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    if !is_token(method) {
        return Err(HttpError::BadRequest("malformed method"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(HttpError::VersionNotSupported),
        _ => return Err(HttpError::BadRequest("malformed request line")),
    }
    if !target.starts_with('/') || target.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(HttpError::BadRequest("malformed request target"));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut content_length: Option<u64> = None;
    let mut authorization = None;
    for (n, line) in lines.enumerate() {
        if n >= MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        if line.starts_with([' ', '\t']) {
            return Err(HttpError::BadRequest("obsolete line folding"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::BadRequest("malformed header"));
        };
        if !is_token(name) {
            return Err(HttpError::BadRequest("malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(HttpError::BadRequest("control character in a header"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = (!value.is_empty()
                && value.len() <= 19
                && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .ok_or(HttpError::BadRequest("malformed Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HttpError::BadRequest("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::LengthRequired);
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HttpError::BadRequest("two Authorization headers"));
            }
            authorization = Some(value);
        }
    }
    let body_len = match content_length {
        None => 0,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_BODY)
            .ok_or(HttpError::BodyTooLarge)?,
    };
    let start = head_len.saturating_add(4);
    let Some(body) = start
        .checked_add(body_len)
        .and_then(|end| buf.get(start..end))
    else {
        return Ok(None);
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    Ok(Some(Request {
        method,
        path,
        authorization,
        body,
    }))
}

/// `%XX`-decodes one path segment (no `+` rule: that is for query strings).
/// None: a bad escape, a decoded `/` or NUL, or not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0usize;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i.saturating_add(1)..i.saturating_add(3))
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            let hex = std::str::from_utf8(hex).ok()?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v == b'/' || v == 0 {
                return None;
            }
            out.push(v);
            i = i.saturating_add(3);
        } else {
            out.push(c);
            i = i.saturating_add(1);
        }
    }
    String::from_utf8(out).ok()
}

/// A response to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines (name, value); values are constants of this crate.
    pub headers: Vec<(&'static str, &'static str)>,
}

pub const JSON: &str = "application/json";

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Response {
        self.headers.push((name, value));
        self
    }

    /// `{"error":"<message>"}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        let mut body = String::from("{\"error\":");
        super::json::write_str(&mut body, message);
        body.push_str("}\n");
        Response::new(status, JSON, body)
    }
}

/// Reason phrase of the status codes this module produces.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        409 => "Conflict",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// The response's bytes: status line, headers (`Content-Length` of the body even for `HEAD`,
/// `Connection: close`, `Cache-Control: no-store`), then the body unless `head_only`.
pub fn encode(r: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    for (name, value) in &r.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> Request<'_> {
        parse_request(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("acme").as_deref(), Some("acme"));
        assert_eq!(percent_decode("a%22b%0Ac").as_deref(), Some("a\"b\nc"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%4", "%zz", "%+1", "%2F", "%2f", "%00", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepted_requests() {
        let r = ok("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            r,
            Request {
                method: Method::Get,
                path: "/metrics",
                authorization: None,
                body: b""
            }
        );
        let r = ok("HEAD /status?pretty=1 HTTP/1.0\r\n\r\n");
        assert_eq!((r.method, r.path), (Method::Head, "/status"));
        let r = ok(
            "POST /x HTTP/1.1\r\nauthorization:  Bearer abc \r\nContent-Length: 3\r\n\r\nxyzTRAILING",
        );
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.authorization, Some("Bearer abc"));
        assert_eq!(r.body, b"xyz");
        // Same Content-Length twice is fine; a body of exactly MAX_BODY too.
        let raw = format!(
            "GET / HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\ncontent-length: {MAX_BODY}\r\n\r\n{}",
            "b".repeat(MAX_BODY)
        );
        assert_eq!(ok(&raw).body.len(), MAX_BODY);
    }

    #[test]
    fn partial_requests() {
        let full = "GET /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        for cut in 0..full.len() {
            assert_eq!(parse_request(&full.as_bytes()[..cut]), Ok(None), "{cut}");
        }
        assert!(parse_request(full.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn refused_requests() {
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let no_end = "G".repeat(MAX_HEAD);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        let cases: Vec<(&str, HttpError)> = vec![
            (&big_head, HttpError::HeadTooLarge),
            (&no_end, HttpError::HeadTooLarge),
            (&many, HttpError::HeadTooLarge),
            (
                "GET / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                HttpError::BadRequest("malformed Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadRequest("malformed Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::BadRequest("conflicting Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::LengthRequired,
            ),
            ("GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported),
            (
                "GET / FTP/1.0\r\n\r\n",
                HttpError::BadRequest("malformed request line"),
            ),
            (
                "GET /\r\n\r\n",
                HttpError::BadRequest("malformed request line"),
            ),
            (
                "GET  / HTTP/1.1\r\n\r\n",
                HttpError::BadRequest("malformed request line"),
            ),
            (
                "GET / HTTP/1.1 x\r\n\r\n",
                HttpError::BadRequest("malformed request line"),
            ),
            (
                "G(T / HTTP/1.1\r\n\r\n",
                HttpError::BadRequest("malformed method"),
            ),
            (
                "GET metrics HTTP/1.1\r\n\r\n",
                HttpError::BadRequest("malformed request target"),
            ),
            (
                "GET http://h/metrics HTTP/1.1\r\n\r\n",
                HttpError::BadRequest("malformed request target"),
            ),
            (
                "GET / HTTP/1.1\r\nX y\r\n\r\n",
                HttpError::BadRequest("malformed header"),
            ),
            (
                "GET / HTTP/1.1\r\nX y: z\r\n\r\n",
                HttpError::BadRequest("malformed header name"),
            ),
            (
                "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
                HttpError::BadRequest("obsolete line folding"),
            ),
            (
                "GET / HTTP/1.1\r\nX: a\nEvil: b\r\n\r\n",
                HttpError::BadRequest("control character in a header"),
            ),
            (
                "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
                HttpError::BadRequest("two Authorization headers"),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_request(raw.as_bytes()), Err(want), "{raw:?}");
        }
        assert_eq!(
            parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(HttpError::BadRequest("head is not UTF-8"))
        );
        // The body limit is checked on the head alone: no need to wait for 5000 bytes.
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            Err(HttpError::BodyTooLarge)
        );
    }

    /// Random and mutated inputs: never a panic, and an accepted request's body lies inside
    /// the input and within the limit.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed =
            b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\nAuthorization: Bearer t\r\n\r\nabc";
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 2 == 0 {
                seed.to_vec()
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            for _ in 0..next() % 4 {
                if input.is_empty() {
                    break;
                }
                let i = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[i] = next() as u8,
                    1 => {
                        input.remove(i);
                    }
                    _ => input.insert(i, b"\r\n :0"[(next() % 5) as usize]),
                }
            }
            if let Ok(Some(r)) = parse_request(&input) {
                assert!(r.body.len() <= MAX_BODY);
                assert!(r.path.starts_with('/'), "{input:?}");
            }
        }
    }

    #[test]
    fn encoding() {
        let r = Response::error(405, "method \"X\" not allowed").with_header("Allow", "GET, HEAD");
        let full = String::from_utf8(encode(&r, false)).unwrap();
        assert_eq!(
            full,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n\
             Content-Length: 37\r\nCache-Control: no-store\r\nConnection: close\r\n\
             Allow: GET, HEAD\r\n\r\n{\"error\":\"method \\\"X\\\" not allowed\"}\n"
        );
        let head = String::from_utf8(encode(&r, true)).unwrap();
        assert!(head.ends_with("Allow: GET, HEAD\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Length: 37\r\n"));
        for s in [400, 401, 404, 405, 408, 411, 413, 431, 503, 505] {
            assert_ne!(reason(s), "Internal Server Error", "{s}");
        }
    }
}
