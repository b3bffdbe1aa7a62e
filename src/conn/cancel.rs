//! The proxy's own CancelRequest (`query_timeout`): one outbound connection
//! to the server that carries the backend's cancel key, exactly as a client
//! would send it, and then waits for the server to close it.
//!
//! Owns: [`CancelCall`], a pure state machine (bytes in, bytes out; no
//! socket, no clock). The reactor opens the socket, runs TLS when asked
//! ([`CancelCall::take_start_tls`]) and reports what happened; the session
//! that asked for the call bounds it with its `QueryCancel` timer.
//!
//! ```text
//! Connecting ─(disable)──────────────────────────────► Sending ─► Sent ─(EOF)─► Done(Delivered)
//!      │ (prefer, require)                                ▲
//!      ├─► Ssl ─'S'─► TlsPending ─(handshake done)────────┘
//!      │       └'N'─► prefer: Sending (plaintext); otherwise Done(Failed)
//!      └─(direct TLS)─► TlsPending
//!  any phase ── error / unexpected byte ──► Done(Failed)
//! ```
//! Invariants:
//! - the key never crosses a link that `upstream_tls` wants encrypted in
//!   clear (the same rule as for a forwarded client cancel);
//! - `Delivered` means the whole request was written and the server then
//!   closed the connection: PostgreSQL closes a cancel connection after it
//!   has signalled the backend, so the signal was sent before `Delivered`;
//! - a server sends nothing on a cancel connection (besides the one-byte
//!   SSL answer): any byte there ends the call as failed.
//!
//! See `docs/architecture.md`, section "Session timeouts".

use super::session::UpstreamTlsMode;
use crate::protocol::{ProtoError, encode};

/// How a cancel call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// Written, then closed by the server (the cancel was processed).
    Delivered,
    /// Not known to be delivered; the text says why (for the log).
    Failed(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallPhase {
    Connecting,
    /// SSLRequest sent; exactly one byte (`S`/`N`) expected.
    Ssl,
    /// The reactor runs the TLS handshake (`started`: it was asked to).
    TlsPending {
        started: bool,
    },
    /// The CancelRequest is queued or being written.
    Sending,
    /// Written; waiting for the server to close.
    Sent,
    Done(CallEnd),
}

/// One outbound CancelRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelCall {
    mode: UpstreamTlsMode,
    phase: CallPhase,
    /// The CancelRequest packet (16..=264 bytes).
    packet: Vec<u8>,
    /// Bytes to write next.
    out: Vec<u8>,
}

impl CancelCall {
    /// A call for the backend (`pid`, `key`), over a link encrypted as `mode` says.
    pub fn new(pid: i32, key: &[u8], mode: UpstreamTlsMode) -> Result<Self, ProtoError> {
        let mut packet = Vec::new();
        encode::cancel_request(&mut packet, pid, key)?;
        Ok(CancelCall {
            mode,
            phase: CallPhase::Connecting,
            packet,
            out: Vec::new(),
        })
    }

    /// The CancelRequest this call carries.
    pub fn request(&self) -> &[u8] {
        &self.packet
    }

    /// `Some` once the call is over.
    pub fn ended(&self) -> Option<CallEnd> {
        match self.phase {
            CallPhase::Done(end) => Some(end),
            _ => None,
        }
    }

    /// The TCP connect completed.
    pub fn handle_connected(&mut self) {
        if self.phase != CallPhase::Connecting {
            return;
        }
        self.phase = match self.mode {
            UpstreamTlsMode::Disable => self.send(),
            UpstreamTlsMode::Direct => CallPhase::TlsPending { started: false },
            UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => {
                encode::ssl_request(&mut self.out);
                CallPhase::Ssl
            }
        };
    }

    fn send(&mut self) -> CallPhase {
        self.out.clone_from(&self.packet);
        CallPhase::Sending
    }

    /// True once when the reactor must start TLS on the socket.
    pub fn take_start_tls(&mut self) -> bool {
        match self.phase {
            CallPhase::TlsPending { started: false } => {
                self.phase = CallPhase::TlsPending { started: true };
                true
            }
            _ => false,
        }
    }

    /// The TLS handshake finished: the request goes out inside it.
    pub fn handle_tls_ready(&mut self) {
        if matches!(self.phase, CallPhase::TlsPending { .. }) {
            self.phase = self.send();
        }
    }

    /// How many bytes the reactor may read now (the SSL answer is read one
    /// byte at a time, so that nothing after it is taken as plaintext).
    pub fn read_len(&self) -> usize {
        match self.phase {
            CallPhase::Ssl if self.out.is_empty() => 1,
            CallPhase::Sent => 16,
            _ => 0,
        }
    }

    /// Bytes read from the server (at most `read_len()`).
    pub fn handle_read(&mut self, bytes: &[u8]) {
        match (self.phase, bytes) {
            (_, []) => {}
            (CallPhase::Ssl, [b'S']) if self.out.is_empty() => {
                self.phase = CallPhase::TlsPending { started: false };
            }
            (CallPhase::Ssl, [b'N']) if self.out.is_empty() => {
                self.phase = if self.mode == UpstreamTlsMode::Prefer {
                    self.send()
                } else {
                    self.fail("the upstream server does not support TLS")
                };
            }
            (CallPhase::Ssl, _) => self.phase = self.fail("bad answer to the SSLRequest"),
            _ => self.phase = self.fail("unexpected bytes on a cancel connection"),
        }
    }

    fn fail(&mut self, why: &'static str) -> CallPhase {
        self.out.clear();
        CallPhase::Done(CallEnd::Failed(why))
    }

    /// Bytes to write to the server.
    pub fn output(&self) -> &[u8] {
        match self.phase {
            CallPhase::Ssl | CallPhase::Sending => &self.out,
            _ => &[],
        }
    }

    /// `n` bytes of `output()` were written.
    pub fn handle_written(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
        if self.out.is_empty() && self.phase == CallPhase::Sending {
            self.phase = CallPhase::Sent;
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self) {
        self.phase = match self.phase {
            CallPhase::Sent => CallPhase::Done(CallEnd::Delivered),
            CallPhase::Done(end) => CallPhase::Done(end),
            _ => self.fail("the server closed the cancel connection early"),
        };
    }

    /// The socket or the TLS handshake failed (`why` for the log).
    pub fn handle_failed(&mut self, why: &'static str) {
        if self.ended().is_none() {
            self.phase = self.fail(why);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn packet() -> Vec<u8> {
        let mut p = Vec::new();
        encode::cancel_request(&mut p, 4242, &[1, 2, 3, 4]).unwrap();
        p
    }

    /// Writes everything offered, as a socket would.
    fn write_all(c: &mut CancelCall) -> Vec<u8> {
        let out = c.output().to_vec();
        c.handle_written(out.len());
        out
    }

    #[test]
    fn plaintext_call_sends_the_request_then_waits_for_eof() {
        let mut c = CancelCall::new(4242, &[1, 2, 3, 4], UpstreamTlsMode::Disable).unwrap();
        assert_eq!(c.output(), b"");
        assert_eq!(c.read_len(), 0);
        c.handle_connected();
        assert!(!c.take_start_tls());
        // A partial write keeps the rest.
        let first = c.output()[..5].to_vec();
        c.handle_written(5);
        let rest = write_all(&mut c);
        assert_eq!([first, rest].concat(), packet());
        assert_eq!(c.ended(), None);
        assert_eq!(c.read_len(), 16);
        c.handle_eof();
        assert_eq!(c.ended(), Some(CallEnd::Delivered));
    }

    #[test]
    fn eof_before_the_request_was_written_is_a_failure() {
        let mut c = CancelCall::new(1, &[0; 4], UpstreamTlsMode::Disable).unwrap();
        c.handle_connected();
        c.handle_written(3);
        c.handle_eof();
        assert!(matches!(c.ended(), Some(CallEnd::Failed(_))));
        assert_eq!(c.output(), b"");
    }

    #[test]
    fn bytes_from_the_server_fail_the_call() {
        let mut c = CancelCall::new(1, &[0; 4], UpstreamTlsMode::Disable).unwrap();
        c.handle_connected();
        write_all(&mut c);
        c.handle_read(b"E");
        assert!(matches!(c.ended(), Some(CallEnd::Failed(_))));
        // Later events do not change the outcome.
        c.handle_eof();
        c.handle_failed("x");
        assert!(matches!(c.ended(), Some(CallEnd::Failed(_))));
    }

    #[test]
    fn ssl_request_then_tls_then_the_request() {
        for mode in [UpstreamTlsMode::Prefer, UpstreamTlsMode::Require] {
            let mut c = CancelCall::new(4242, &[1, 2, 3, 4], mode).unwrap();
            c.handle_connected();
            // No answer is read before the SSLRequest is written.
            assert_eq!(c.read_len(), 0);
            let mut ssl = Vec::new();
            encode::ssl_request(&mut ssl);
            assert_eq!(write_all(&mut c), ssl);
            assert_eq!(c.read_len(), 1);
            c.handle_read(b"S");
            // The key is not offered before TLS.
            assert_eq!(c.output(), b"");
            assert!(c.take_start_tls());
            assert!(!c.take_start_tls(), "asked once");
            assert_eq!(c.output(), b"");
            c.handle_tls_ready();
            assert_eq!(write_all(&mut c), packet());
            c.handle_eof();
            assert_eq!(c.ended(), Some(CallEnd::Delivered));
        }
    }

    #[test]
    fn n_answer_goes_on_in_plaintext_only_with_prefer() {
        let mut c = CancelCall::new(4242, &[1, 2, 3, 4], UpstreamTlsMode::Prefer).unwrap();
        c.handle_connected();
        write_all(&mut c);
        c.handle_read(b"N");
        assert_eq!(write_all(&mut c), packet());
        let mut c = CancelCall::new(4242, &[1, 2, 3, 4], UpstreamTlsMode::Require).unwrap();
        c.handle_connected();
        write_all(&mut c);
        c.handle_read(b"N");
        assert!(matches!(c.ended(), Some(CallEnd::Failed(_))));
        assert_eq!(c.output(), b"");
        let mut c = CancelCall::new(4242, &[1, 2, 3, 4], UpstreamTlsMode::Require).unwrap();
        c.handle_connected();
        write_all(&mut c);
        c.handle_read(b"X");
        assert!(matches!(c.ended(), Some(CallEnd::Failed(_))));
    }

    #[test]
    fn direct_tls_starts_at_once() {
        let mut c = CancelCall::new(4242, &[1, 2, 3, 4], UpstreamTlsMode::Direct).unwrap();
        c.handle_connected();
        assert_eq!(c.output(), b"");
        assert!(c.take_start_tls());
        c.handle_tls_ready();
        assert_eq!(write_all(&mut c), packet());
        c.handle_failed("reset");
        assert_eq!(c.ended(), Some(CallEnd::Failed("reset")));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(CancelCall::new(1, &[1, 2, 3], UpstreamTlsMode::Disable).is_err());
        assert!(CancelCall::new(1, &[0; 257], UpstreamTlsMode::Disable).is_err());
        assert!(CancelCall::new(1, &[0; 256], UpstreamTlsMode::Disable).is_ok());
    }
}
