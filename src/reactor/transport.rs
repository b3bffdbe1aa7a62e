//! `Transport`: one socket, plain or wrapped in rustls, read and written as
//! plaintext. The session's rings only ever hold plaintext; TLS records live in
//! rustls's own (bounded) buffers.
//!
//! rustls is driven on the non-blocking socket: `read` drains rustls's
//! plaintext first and calls `read_tls` only when it is empty (so the
//! "plaintext buffer full" state cannot arise); `write` hands plaintext to
//! rustls (bounded by `set_buffer_limit`) and `flush` writes TLS records until
//! `WouldBlock`. Readiness bits are the worker's, passed in and cleared on
//! `WouldBlock`. `io::Error` never leaves this module: everything becomes an `Io`.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// Most plaintext rustls may buffer toward the peer (backpressure).
const TLS_SEND_LIMIT: usize = 2 * crate::buf::RING_CAPACITY;

/// The outcome of one transport operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Bytes moved (plaintext bytes read or accepted for writing).
    Progress(usize),
    /// Nothing moved; wait for readiness.
    WouldBlock,
    /// The peer closed (TCP EOF or TLS close_notify).
    Eof,
    /// A fatal error (socket or TLS); the text is for the log.
    Failed(String),
}

/// Socket readiness as the worker tracks it (edge-triggered).
#[derive(Clone, Copy, Default, Debug)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
    /// The peer hung up (RDHUP/HUP/ERR seen). Its edge has fired already, so
    /// a short read must not clear `read`: keep reading until EOF.
    pub hup: bool,
}

/// A socket, optionally wrapped in TLS (upgraded in place).
pub struct Transport {
    stream: TcpStream,
    tls: Option<Box<rustls::Connection>>,
}

impl Transport {
    pub fn plain(stream: TcpStream) -> Self {
        Transport { stream, tls: None }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True while a TLS handshake is in progress.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.is_handshaking())
    }

    /// The ALPN protocol the handshake settled on.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.as_ref().and_then(|c| c.alpn_protocol())
    }

    /// True when TLS records are waiting to be written.
    pub fn wants_flush(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Wraps the socket in TLS. `prefix` holds bytes already read from the
    /// socket that belong to the TLS stream (direct TLS: the ClientHello).
    pub fn upgrade(&mut self, mut conn: rustls::Connection, prefix: &[u8]) -> Result<(), String> {
        if self.tls.is_some() {
            return Err("already TLS".to_string());
        }
        conn.set_buffer_limit(Some(TLS_SEND_LIMIT));
        let mut rest = prefix;
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => conn
                    .process_new_packets()
                    .map(drop)
                    .map_err(|e| format!("TLS: {e}"))?,
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// Reads plaintext into `buf`.
    pub fn read(&mut self, buf: &mut [u8], ready: &mut Ready) -> Io {
        let s = &mut self.stream;
        let Some(c) = self.tls.as_mut() else {
            loop {
                match s.read(buf) {
                    Ok(0) => {
                        ready.read = false;
                        return Io::Eof;
                    }
                    Ok(n) => {
                        // A short read drained the socket: with edge triggering
                        // the next arrival raises a new event, so skip EAGAIN.
                        if n < buf.len() && !ready.hup {
                            ready.read = false;
                        }
                        return Io::Progress(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.read = false;
                        return Io::WouldBlock;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Io::Failed(e.to_string()),
                }
            }
        };
        loop {
            match c.reader().read(buf) {
                Ok(0) if !buf.is_empty() => return Io::Eof, // close_notify
                Ok(n) if n > 0 => return Io::Progress(n),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Io::Eof,
                Err(e) => return Io::Failed(format!("TLS: {e}")),
            }
            if !ready.read {
                return Io::WouldBlock;
            }
            match c.read_tls(s) {
                Ok(0) => {
                    ready.read = false;
                    return Io::Eof;
                }
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        // Send the alert if we can, then give up.
                        let _ = c.write_tls(s);
                        return Io::Failed(format!("TLS: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.read = false;
                    return Io::WouldBlock;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Io::Failed(e.to_string()),
            }
        }
    }

    /// Writes plaintext from `a` then `b`; returns how many bytes were taken.
    pub fn write(&mut self, a: &[u8], b: &[u8], ready: &mut Ready) -> Io {
        let Some(c) = self.tls.as_mut() else {
            let s = &mut self.stream;
            loop {
                let res = if b.is_empty() {
                    s.write(a)
                } else {
                    s.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                };
                match res {
                    Ok(0) => return Io::Failed("write returned 0".to_string()),
                    Ok(n) => {
                        // A short write filled the socket buffer: wait for the edge.
                        if n < a.len() + b.len() {
                            ready.write = false;
                        }
                        return Io::Progress(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.write = false;
                        return Io::WouldBlock;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Io::Failed(e.to_string()),
                }
            }
        };
        let mut taken = 0;
        for part in [a, b] {
            if part.is_empty() {
                continue;
            }
            match c.writer().write(part) {
                Ok(n) => {
                    taken += n;
                    if n < part.len() {
                        break;
                    }
                }
                Err(e) => return Io::Failed(format!("TLS: {e}")),
            }
        }
        match self.flush(ready) {
            Io::Failed(e) => Io::Failed(e),
            _ if taken == 0 => Io::WouldBlock,
            _ => Io::Progress(taken),
        }
    }

    /// Writes pending TLS records until done or `WouldBlock`.
    pub fn flush(&mut self, ready: &mut Ready) -> Io {
        let s = &mut self.stream;
        let Some(c) = self.tls.as_mut() else {
            return Io::Progress(0);
        };
        while c.wants_write() {
            if !ready.write {
                return Io::WouldBlock;
            }
            match c.write_tls(s) {
                Ok(0) => return Io::Failed("write returned 0".to_string()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.write = false;
                    return Io::WouldBlock;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Io::Failed(e.to_string()),
            }
        }
        Io::Progress(0)
    }

    /// Queues a TLS close_notify (best effort, before closing the socket).
    pub fn send_close_notify(&mut self, ready: &mut Ready) {
        if let Some(c) = self.tls.as_mut() {
            c.send_close_notify();
            let _ = self.flush(ready);
        }
    }
}
