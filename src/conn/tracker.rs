//! Knowing when a pooled server is provably idle.
//!
//! The pooled relay streams bytes without holding whole messages; this
//! tracker sees every byte that crosses a lent server's link, in both
//! directions, and keeps only what is needed to answer "is every request
//! answered?": a header scanner per direction (at most 6 buffered bytes) and
//! a run-length queue of requests awaiting ReadyForQuery.
//!
//! Rules (PostgreSQL protocol, "Message Flow"):
//! - each simple Query `Q`, each Sync `S` and each FunctionCall `F` is
//!   answered by exactly one ReadyForQuery `Z`; its status byte is the
//!   transaction state (`I`, `T`, `E`);
//! - Parse/Bind/Describe/Execute/Close/Flush open an extended-query cycle
//!   that only a Sync closes (the pool sends one if the client left it open);
//! - COPY FROM STDIN (`G` from the server after a `Q`) is ended by the
//!   client's CopyDone/CopyFail, or by an ErrorResponse from the server
//!   (later CopyData/Done/Fail of the client are then dropped by the server);
//! - COPY in an extended-query cycle (the backend ignores Sync during
//!   copy-in, so Syncs no longer pair with `Z`), CopyBoth, a Query or
//!   FunctionCall inside an open extended cycle (discarded by the backend
//!   after an error, so its `Z` may never come), a `Z` nobody asked for, or
//!   copy messages the state does not explain make the server **dirty**: it
//!   is closed instead of reused. The tracker never guesses.
//!
//! The tracker also finds the client's Terminate, which the relay must not
//! forward (the server stays open for the next client).

use std::collections::VecDeque;

use crate::protocol::frame::parse_header;
use crate::protocol::{FramePhase, Limits, ProtoError, tag};

/// Request kinds awaiting one ReadyForQuery each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    /// `Q` or `F`.
    Simple,
    /// `S`, closing an extended-query cycle.
    Sync,
}

/// Most runs in the request queue; beyond it the client is not read
/// (backpressure) until answers arrive.
pub const MAX_RUNS: usize = 4096;
/// Most requests outstanding in total (same backpressure).
pub const MAX_OUTSTANDING: u32 = 1 << 24;

/// Incremental header scanner for one direction.
#[derive(Clone, Debug)]
struct Scan {
    phase: FramePhase,
    /// Client side: also read the first body byte of Parse (the first byte
    /// of the statement name; 0 for the unnamed statement).
    parse_first: bool,
    hdr: [u8; 6],
    have: usize,
    /// Body bytes of the current message still to skip.
    skip: usize,
    /// Server side: the first bytes of a CommandComplete (its command tag).
    cap: [u8; 12],
    cap_len: usize,
    cap_want: usize,
    /// Server side: a command that changes session state ran (`SET`,
    /// `RESET`, `DISCARD`, `DEALLOCATE`).
    session_cmd: bool,
    /// Server side: one that drops prepared statements ran (`DISCARD`,
    /// `DEALLOCATE`).
    statements_dropped: bool,
    /// Server side: one that may leave objects in the session ran
    /// (`LISTEN`, SQL `PREPARE`, `DECLARE` cursor, `CREATE TABLE`).
    session_objects: bool,
}

/// One message start seen by a scanner.
#[derive(Clone, Copy, Debug)]
struct Msg {
    tag: u8,
    /// First body byte (only for server `Z`, and client `P` when asked).
    first: Option<u8>,
    /// Offset of the message's first byte from the chunk's start; negative
    /// when its header began in an earlier chunk.
    at: isize,
}

impl Scan {
    fn new(phase: FramePhase) -> Self {
        Scan {
            phase,
            parse_first: false,
            hdr: [0; 6],
            have: 0,
            skip: 0,
            cap: [0; 12],
            cap_len: 0,
            cap_want: 0,
            session_cmd: false,
            statements_dropped: false,
            session_objects: false,
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.skip == 0
    }

    /// A CommandComplete's tag (or its first 12 bytes) is in `cap`.
    fn command_tag_seen(&mut self) {
        let t = self.cap.get(..self.cap_len).unwrap_or(&[]);
        let word =
            |w: &[u8]| t.starts_with(w) && matches!(t.get(w.len()), None | Some(0) | Some(b' '));
        if word(b"DISCARD") || word(b"DEALLOCATE") {
            self.statements_dropped = true;
            self.session_cmd = true;
        } else if word(b"SET") || word(b"RESET") {
            self.session_cmd = true;
        } else if word(b"LISTEN")
            || word(b"PREPARE")
            || word(b"DECLARE")
            || t.starts_with(b"CREATE TABLE")
        {
            // A temporary table, a WITH HOLD cursor, a listener or an SQL
            // prepared statement outlives the transaction on the server.
            self.session_objects = true;
        }
        self.cap_want = 0;
    }

    /// Feeds `chunk`; calls `on` for every message whose header completes.
    /// `on` returns false to stop (the rest of the chunk is not consumed);
    /// returns the bytes consumed.
    fn feed(
        &mut self,
        chunk: &[u8],
        lim: &Limits,
        mut on: impl FnMut(Msg) -> Result<bool, ProtoError>,
    ) -> Result<usize, ProtoError> {
        let mut i = 0usize;
        while i < chunk.len() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len().saturating_sub(i));
                if self.cap_want > self.cap_len {
                    let take = n.min(self.cap_want.saturating_sub(self.cap_len));
                    let src = chunk.get(i..i.saturating_add(take)).unwrap_or(&[]);
                    if let Some(dst) = self
                        .cap
                        .get_mut(self.cap_len..self.cap_len.saturating_add(src.len()))
                    {
                        dst.copy_from_slice(src);
                    }
                    self.cap_len = self.cap_len.saturating_add(src.len());
                    if self.cap_len >= self.cap_want {
                        self.command_tag_seen();
                    }
                }
                self.skip = self.skip.saturating_sub(n);
                i = i.saturating_add(n);
                continue;
            }
            let start = isize::try_from(i)
                .unwrap_or(isize::MAX)
                .saturating_sub(isize::try_from(self.have).unwrap_or(0));
            let b = chunk.get(i).copied().unwrap_or(0);
            if let Some(slot) = self.hdr.get_mut(self.have) {
                *slot = b;
            }
            self.have = self.have.saturating_add(1);
            i = i.saturating_add(1);
            let head = self.hdr.get(..self.have).unwrap_or(&[]);
            let Some(h) = parse_header(head, self.phase, lim)? else {
                continue;
            };
            let want_first = (self.phase == FramePhase::Server && h.tag == tag::READY_FOR_QUERY)
                || (self.parse_first && h.tag == tag::PARSE && h.len > 4);
            if want_first && self.have < 6 {
                continue;
            }
            let first = if want_first {
                self.hdr.get(5).copied()
            } else {
                None
            };
            let body = h.len.saturating_sub(4);
            self.skip = body.saturating_sub(usize::from(want_first));
            self.have = 0;
            if self.phase == FramePhase::Server && h.tag == tag::COMMAND_COMPLETE {
                self.cap_len = 0;
                self.cap_want = body.min(self.cap.len());
            }
            let go_on = on(Msg {
                tag: h.tag,
                first,
                at: start,
            })?;
            if !go_on {
                return Ok(i);
            }
        }
        Ok(i)
    }
}

/// What the pool must do next with a server whose client left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Not reusable: close it (the reason is logged).
    Close(String),
    /// Abort the client's COPY FROM STDIN.
    SendCopyFail,
    /// Close the client's open extended-query cycle.
    SendSync,
    /// Responses are still owed: read and drop them.
    Drain,
    /// Quiet, inside a transaction: ROLLBACK, then the reset.
    Rollback,
    /// Quiet and idle: the reset.
    Reset,
}

/// What the requests and answers seen so far leave owed: fed one message
/// at a time by the scanners, never by buffering messages.
#[derive(Clone, Debug)]
struct Book {
    queue: VecDeque<(Req, u32)>,
    outstanding: u32,
    extended_open: bool,
    copy_in: bool,
    /// The server ended a COPY FROM STDIN with an error: the client's
    /// remaining copy messages are dropped by the server.
    copy_aborted: bool,
    tx: u8,
    dirty: Option<&'static str>,
}

/// Both directions of one lent server.
#[derive(Clone, Debug)]
pub struct ServerTracker {
    lim: Limits,
    c: Scan,
    s: Scan,
    book: Book,
    terminated: bool,
    /// Transaction mode: a Parse of a named statement is refused (named
    /// statements would stay on a server the client may not get again).
    refuse_named: bool,
}

impl Default for ServerTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerTracker {
    /// A tracker for a server at rest (ReadyForQuery `I` seen, nothing sent).
    pub fn new() -> Self {
        ServerTracker {
            lim: Limits::default(),
            c: Scan::new(FramePhase::Client),
            s: Scan::new(FramePhase::Server),
            book: Book {
                queue: VecDeque::new(),
                outstanding: 0,
                extended_open: false,
                copy_in: false,
                copy_aborted: false,
                tx: b'I',
                dirty: None,
            },
            terminated: false,
            refuse_named: false,
        }
    }

    /// A tracker that refuses named statements (`pool_mode = transaction`).
    pub fn refusing_named_statements() -> Self {
        let mut t = Self::new();
        t.refuse_named = true;
        t.c.parse_first = true;
        t
    }

    pub fn outstanding(&self) -> u32 {
        self.book.outstanding
    }

    pub fn tx_status(&self) -> u8 {
        self.book.tx
    }

    pub fn is_dirty(&self) -> bool {
        self.book.dirty.is_some()
    }

    pub fn terminated(&self) -> bool {
        self.terminated
    }

    /// The client ran `SET`, `RESET`, `DISCARD` or `DEALLOCATE` (as seen in
    /// the server's command tags): the server's session state may differ
    /// from what the proxy set.
    pub fn session_state_changed(&self) -> bool {
        self.s.session_cmd
    }

    /// The client ran a command that may leave objects in the session
    /// (`LISTEN`, `PREPARE`, `DECLARE`, `CREATE TABLE`): the server must be
    /// reset before another client gets it.
    pub fn session_objects(&self) -> bool {
        self.s.session_objects
    }

    /// The client ran `DISCARD` or `DEALLOCATE`: statements the proxy
    /// prepared on the server may be gone.
    pub fn statements_dropped(&self) -> bool {
        self.s.statements_dropped
    }

    /// An extended-query cycle (no Sync yet) or a COPY FROM STDIN is open:
    /// the server holds a transaction for it.
    pub fn cycle_open(&self) -> bool {
        self.book.extended_open || self.book.copy_in
    }

    /// Every request answered, no cycle or COPY open, both directions at a
    /// message boundary, transaction idle, nothing doubtful.
    pub fn is_idle(&self) -> bool {
        self.quiet() && self.book.tx == b'I'
    }

    /// Every request answered and both directions at a message boundary (in
    /// or out of a transaction): a message of the proxy's may go to the client.
    pub fn at_rest(&self) -> bool {
        self.quiet()
    }

    fn quiet(&self) -> bool {
        let b = &self.book;
        b.dirty.is_none()
            && b.outstanding == 0
            && !b.extended_open
            && !b.copy_in
            && self.c.at_boundary()
            && self.s.at_boundary()
    }

    /// True while the client must not be read (the queue is at its cap).
    pub fn backpressure(&self) -> bool {
        self.book.queue.len() >= MAX_RUNS || self.book.outstanding >= MAX_OUTSTANDING
    }

    /// Bytes at the end of the client stream that start a message header not
    /// yet complete: not to be forwarded yet (it may be a Terminate).
    pub fn client_partial_header(&self) -> usize {
        self.c.have
    }

    /// The client is gone with an incomplete header held back (never
    /// forwarded): forget it.
    pub fn abandon_partial_client_header(&mut self) {
        if self.c.skip == 0 {
            self.c.have = 0;
        }
    }

    /// Client → server bytes, in order, as read from the client. Returns the
    /// offset from `chunk`'s start of a Terminate (negative when its header
    /// began in an earlier chunk): that message and everything after it must
    /// not be forwarded, and nothing more is scanned.
    pub fn client_bytes(&mut self, chunk: &[u8]) -> Result<Option<isize>, ProtoError> {
        if self.terminated {
            return Ok(None);
        }
        let mut found = None;
        let book = &mut self.book;
        let refuse_named = self.refuse_named;
        self.c.feed(chunk, &self.lim, |m| {
            if m.tag == tag::TERMINATE {
                found = Some(m.at);
                return Ok(false);
            }
            if refuse_named && m.tag == tag::PARSE && m.first != Some(0) {
                return Err(ProtoError::Unsupported(
                    "named prepared statements in pool_mode = transaction",
                ));
            }
            book.on_client_msg(m.tag);
            Ok(true)
        })?;
        if found.is_some() {
            self.terminated = true;
            // The Terminate's own header is not part of the stream.
            self.c = Scan::new(FramePhase::Client);
        }
        Ok(found)
    }

    /// Server → client bytes, in order.
    pub fn server_bytes(&mut self, chunk: &[u8]) -> Result<(), ProtoError> {
        self.server_bytes_each(chunk, |_, _| {})
    }

    /// As [`server_bytes`](Self::server_bytes), also telling `each` every
    /// message start: its tag and its offset from `chunk`'s start (negative
    /// when its header began in an earlier chunk).
    pub fn server_bytes_each(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(u8, isize),
    ) -> Result<(), ProtoError> {
        let book = &mut self.book;
        self.s.feed(chunk, &self.lim, |m| {
            book.on_server_msg(m.tag, m.first);
            each(m.tag, m.at);
            Ok(true)
        })?;
        Ok(())
    }

    /// Whole messages the proxy itself sends on the link (CopyFail, Sync).
    pub fn sent_by_proxy(&mut self, msgs: &[u8]) -> Result<(), ProtoError> {
        if !self.c.at_boundary() {
            return Err(ProtoError::BadValue(
                "proxy message inside a client message",
            ));
        }
        let book = &mut self.book;
        self.c.feed(msgs, &self.lim, |m| {
            book.on_client_msg(m.tag);
            Ok(true)
        })?;
        Ok(())
    }

    /// The next step of the release sequence (the client is gone).
    pub fn release_step(&self) -> Release {
        if let Some(why) = self.book.dirty {
            return Release::Close(why.to_string());
        }
        if !self.c.at_boundary() {
            return Release::Close("the client left in the middle of a message".into());
        }
        if self.book.copy_in {
            return Release::SendCopyFail;
        }
        if self.book.extended_open {
            return Release::SendSync;
        }
        if self.book.outstanding > 0 || !self.s.at_boundary() {
            return Release::Drain;
        }
        match self.book.tx {
            b'I' => Release::Reset,
            _ => Release::Rollback,
        }
    }
}

impl Book {
    fn mark(&mut self, why: &'static str) {
        if self.dirty.is_none() {
            self.dirty = Some(why);
        }
    }

    fn push(&mut self, r: Req) {
        self.outstanding = self.outstanding.saturating_add(1);
        match self.queue.back_mut() {
            Some((k, n)) if *k == r => *n = n.saturating_add(1),
            _ => self.queue.push_back((r, 1)),
        }
    }

    fn pop(&mut self) -> Option<Req> {
        let (k, n) = self.queue.front_mut()?;
        let k = *k;
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.queue.pop_front();
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        Some(k)
    }

    fn on_client_msg(&mut self, t: u8) {
        match t {
            tag::QUERY | tag::FUNCTION_CALL => {
                if self.extended_open {
                    self.mark("Query or FunctionCall inside an open extended-query cycle");
                }
                if self.copy_in {
                    self.mark("Query during COPY FROM STDIN");
                }
                self.push(Req::Simple);
            }
            tag::SYNC => {
                if self.copy_in {
                    // Ignored by the backend during copy-in: no Z will pair.
                    self.mark("Sync during COPY FROM STDIN");
                }
                self.extended_open = false;
                self.push(Req::Sync);
            }
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {
                if self.copy_in {
                    self.mark("extended-query message during COPY FROM STDIN");
                }
                self.extended_open = true;
            }
            tag::COPY_DATA => {
                if !self.copy_in && !self.copy_aborted {
                    self.mark("CopyData outside COPY FROM STDIN");
                }
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                if self.copy_in {
                    self.copy_in = false;
                } else if self.copy_aborted {
                    self.copy_aborted = false;
                } else {
                    self.mark("CopyDone/CopyFail outside COPY FROM STDIN");
                }
            }
            _ => self.mark("unexpected client message in a pooled session"),
        }
    }

    fn on_server_msg(&mut self, t: u8, first: Option<u8>) {
        match t {
            tag::READY_FOR_QUERY => {
                if self.pop().is_none() {
                    self.mark("ReadyForQuery nobody asked for");
                }
                self.tx = first.unwrap_or(b'?');
                if !matches!(self.tx, b'I' | b'T' | b'E') {
                    self.mark("unknown transaction status");
                }
                // A ReadyForQuery ends any COPY of its request.
                self.copy_in = false;
            }
            tag::COPY_IN_RESPONSE => match self.queue.front() {
                Some((Req::Simple, _)) => {
                    self.copy_in = true;
                    self.copy_aborted = false;
                }
                _ => self.mark("COPY FROM STDIN in an extended-query cycle"),
            },
            tag::COPY_BOTH_RESPONSE => self.mark("CopyBoth (replication) on a pooled server"),
            tag::ERROR_RESPONSE if self.copy_in => {
                self.copy_in = false;
                self.copy_aborted = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
