//! Transaction mode: named prepared statements (protocol-level Parse with a
//! name, as asyncpg, node-postgres, psycopg and `pgbench -M prepared` use
//! them) kept per client and prepared on whichever server the client gets.
//!
//! Client → server: the relay forwards raw spans, but stops at the start of
//! every Parse, Bind, Describe and Close. Those are collected (Parse whole,
//! the others up to their statement name) and rewritten into `to_server`:
//! a client name becomes the server name `pgvpd_<client id>_<n>` (unique in
//! the process, so statements of different clients never collide); a Bind or
//! Describe of a statement the server lacks gets a Parse injected in front;
//! when a server holds `max_prepared_statements` of them the least recently
//! used is closed first. Bind's parameters stream on raw after its rewritten
//! head.
//!
//! Server → client: the answers to Parse and Close are matched in order with
//! what was sent (`Ev`); those of injected messages are cut out of the
//! stream (`drops`, by absolute offset). An ErrorResponse in an
//! extended-query cycle means the server skipped everything up to the next
//! Sync: statements sent in that stretch are forgotten (on the server and,
//! for the client's own Parse, in its registry).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Phase, Session};
use crate::conn::server::ServerLink;
use crate::protocol::frame::parse_header;
use crate::protocol::{FramePhase, ProtoError, encode, tag};

/// Longest named Parse kept (its text is stored to prepare it again).
const PARSE_MAX: usize = 1 << 20;
/// Longest Bind head (portal and statement names) or Describe/Close read.
const HEAD_MAX: usize = 1024;

/// One client statement.
/// Shared bytes: a statement's server name and text are referred to from
/// the client's registry, the servers' lists and the answer queue without
/// copying them per message.
pub type Shared = Arc<[u8]>;

#[derive(Debug)]
struct Stmt {
    server: Shared,
    /// The Parse body after the name (query text, parameter types).
    rest: Shared,
}

/// A client's named statements (bounded; the oldest is forgotten first).
#[derive(Debug, Default)]
pub struct Stmts {
    map: HashMap<Vec<u8>, Stmt>,
    order: VecDeque<Vec<u8>>,
    seq: u64,
}

/// What was sent that the server answers with ParseComplete, CloseComplete
/// or ReadyForQuery, in order.
#[derive(Debug)]
enum Ev {
    Parse {
        drop: bool,
        /// The server name, when the proxy tracks it.
        server: Option<Shared>,
        /// The client name, for the client's own Parse.
        client: Option<Vec<u8>>,
    },
    Close {
        drop: bool,
    },
    Sync,
    Simple,
}

#[derive(Debug)]
enum Fwd {
    /// The ring's head starts a message.
    Boundary,
    /// Collecting a message (or Bind's head) to rewrite.
    Collect { tag: u8, total: usize, buf: Vec<u8> },
    /// This many bytes go to the server as they are.
    Pass(usize),
}

/// Relay state of the rewriting (one per lent server).
#[derive(Debug)]
pub struct Rewrite {
    fwd: Fwd,
    events: VecDeque<Ev>,
    /// Server messages to cut: (absolute offset, length).
    drops: VecDeque<(u64, usize)>,
    /// Server bytes scanned since the relay started.
    s2c_in: u64,
    /// Server bytes consumed toward the client since then.
    s2c_out: u64,
    /// Buffer of the last collected message, reused for the next.
    scratch: Vec<u8>,
    /// Answer starts found in one read (tag, absolute offset), reused.
    starts: Vec<(u8, u64)>,
}

impl Rewrite {
    pub fn new() -> Self {
        Rewrite {
            fwd: Fwd::Boundary,
            events: VecDeque::new(),
            drops: VecDeque::new(),
            s2c_in: 0,
            s2c_out: 0,
            scratch: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Server bytes scanned so far in this relay.
    pub fn scanned(&self) -> u64 {
        self.s2c_in
    }

    pub fn take_starts(&mut self) -> Vec<(u8, u64)> {
        std::mem::take(&mut self.starts)
    }

    pub fn put_starts(&mut self, mut v: Vec<(u8, u64)>) {
        v.clear();
        self.starts = v;
    }

    /// Ready for a new relay (buffers keep their capacity).
    pub fn reset(&mut self) {
        self.fwd = Fwd::Boundary;
        self.events.clear();
        self.drops.clear();
        self.s2c_in = 0;
        self.s2c_out = 0;
    }

    /// Nothing in flight: no message half-collected, nothing to cut.
    pub fn at_rest(&self) -> bool {
        matches!(self.fwd, Fwd::Boundary) && self.drops.is_empty() && self.events.is_empty()
    }

    /// Raw client bytes that may go now (0 unless inside a raw span).
    pub fn raw_allowance(&self) -> usize {
        match self.fwd {
            Fwd::Pass(n) => n,
            _ => 0,
        }
    }

    /// Server bytes the client may get before the next cut.
    pub fn client_allowance(&self) -> Option<usize> {
        self.drops
            .front()
            .map(|(at, _)| usize::try_from(at.saturating_sub(self.s2c_out)).unwrap_or(usize::MAX))
    }
}

impl Default for Rewrite {
    fn default() -> Self {
        Self::new()
    }
}

fn cstr_end(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|c| *c == 0)
        .map(|p| from.saturating_add(p))
}

impl Session {
    fn max_prepared(&self) -> usize {
        self.cfg.pool.as_ref().map_or(0, |p| p.max_prepared)
    }

    /// `n` raw client bytes went to the server.
    pub(super) fn rw_forwarded(&mut self, n: usize) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && let Some(rw) = relay.rw.as_mut()
            && let Fwd::Pass(left) = &mut rw.fwd
        {
            *left = left.saturating_sub(n);
            if *left == 0 {
                rw.fwd = Fwd::Boundary;
            }
        }
    }

    /// Client bytes the relay may still forward or collect (the ring, up to
    /// a Terminate's limit).
    fn rw_available(&self) -> usize {
        let len = self.c2s.as_ref().map_or(0, |r| r.len());
        match &self.phase {
            Phase::PoolRelay(relay) => relay.limit.map_or(len, |l| l.min(len)),
            _ => 0,
        }
    }

    /// Walks client messages at the ring's head: classifies, collects and
    /// rewrites. True on progress.
    pub(super) fn step_tx_forward(&mut self) -> Result<bool, ProtoError> {
        let Phase::PoolRelay(relay) = &self.phase else {
            return Ok(false);
        };
        let Some(rw) = relay.rw.as_ref() else {
            return Ok(false);
        };
        let avail = self.rw_available();
        match &rw.fwd {
            Fwd::Pass(n) => {
                // Classify the messages after the span too, so consecutive
                // raw messages (a pipelined Parse/Bind/Execute/Sync) leave
                // in one write.
                let n = *n;
                match self.classify_at(n, avail)? {
                    Some((Fwd::Pass(more), ev)) => {
                        if let Phase::PoolRelay(relay) = &mut self.phase
                            && let Some(rw) = relay.rw.as_mut()
                        {
                            if let Some(ev) = ev {
                                rw.events.push_back(ev);
                            }
                            rw.fwd = Fwd::Pass(n.saturating_add(more));
                        }
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Fwd::Boundary => match self.classify_at(0, avail)? {
                None => Ok(false),
                Some((mut next, ev)) => {
                    if let Phase::PoolRelay(relay) = &mut self.phase
                        && let Some(rw) = relay.rw.as_mut()
                    {
                        if let Some(ev) = ev {
                            rw.events.push_back(ev);
                        }
                        if let Fwd::Collect { buf, .. } = &mut next {
                            // The last collected message's buffer, reused.
                            *buf = std::mem::take(&mut rw.scratch);
                        }
                        rw.fwd = next;
                    }
                    Ok(true)
                }
            },
            Fwd::Collect { tag: t, total, buf } => {
                let (t, total, have) = (*t, *total, buf.len());
                let done = have >= total || (t == tag::BIND && bind_head_end(buf).is_some());
                if !done {
                    let limit = if t == tag::PARSE { PARSE_MAX } else { HEAD_MAX };
                    if t != tag::BIND && total > limit {
                        return Err(ProtoError::TooLong {
                            tag: t,
                            len: total,
                            max: limit,
                        });
                    }
                    // Bind: its names must end within HEAD_MAX bytes.
                    let upto = if t == tag::BIND {
                        total.min(HEAD_MAX)
                    } else {
                        total
                    };
                    if have >= upto {
                        return Err(ProtoError::TooLong {
                            tag: t,
                            len: total,
                            max: HEAD_MAX,
                        });
                    }
                    let n = upto.saturating_sub(have).min(avail);
                    if n == 0 {
                        return Ok(false);
                    }
                    // Straight from the ring into the message being collected.
                    let (Some(ring), Phase::PoolRelay(relay)) =
                        (self.c2s.as_mut(), &mut self.phase)
                    else {
                        return Ok(false);
                    };
                    let Some(Fwd::Collect { buf, .. }) = relay.rw.as_mut().map(|rw| &mut rw.fwd)
                    else {
                        return Ok(false);
                    };
                    let (a, b) = ring.readable();
                    let from_a = n.min(a.len());
                    buf.extend_from_slice(a.get(..from_a).unwrap_or(&[]));
                    buf.extend_from_slice(b.get(..n.saturating_sub(from_a)).unwrap_or(&[]));
                    ring.consume(n);
                    self.pooled_forwarded(n);
                    return Ok(true);
                }
                // Whole (or Bind's head): rewrite.
                let msg = match &mut self.phase {
                    Phase::PoolRelay(relay) => match relay.rw.as_mut() {
                        Some(rw) => match std::mem::replace(&mut rw.fwd, Fwd::Boundary) {
                            Fwd::Collect { buf, .. } => buf,
                            other => {
                                rw.fwd = other;
                                return Ok(false);
                            }
                        },
                        None => return Ok(false),
                    },
                    _ => return Ok(false),
                };
                let rest = total.saturating_sub(msg.len());
                self.rewrite(t, total, &msg)?;
                if let Phase::PoolRelay(relay) = &mut self.phase
                    && let Some(rw) = relay.rw.as_mut()
                {
                    if rest > 0 {
                        rw.fwd = Fwd::Pass(rest);
                    }
                    // Kept for the next message to collect, unless a large
                    // Parse made it big.
                    if msg.capacity() <= HEAD_MAX {
                        let mut msg = msg;
                        msg.clear();
                        rw.scratch = msg;
                    }
                }
                Ok(true)
            }
        }
    }

    /// Classifies the client message starting `off` bytes into the ring
    /// (`avail` bytes usable): raw pass or collect, and its event. None: not
    /// enough bytes yet.
    fn classify_at(
        &self,
        off: usize,
        avail: usize,
    ) -> Result<Option<(Fwd, Option<Ev>)>, ProtoError> {
        let Some(ring) = self.c2s.as_ref() else {
            return Ok(None);
        };
        let mut h = [0u8; 7];
        let have = avail.saturating_sub(off);
        if have < 5 {
            return Ok(None);
        }
        let (a, b) = ring.readable();
        let take = have.min(7);
        for (i, slot) in h.iter_mut().enumerate().take(take) {
            let at = off.saturating_add(i);
            *slot = match a.get(at) {
                Some(x) => *x,
                None => b.get(at.saturating_sub(a.len())).copied().unwrap_or(0),
            };
        }
        // Framed by the codec, with its per-tag caps.
        let Some(hdr) = parse_header(
            h.get(..5).unwrap_or(&[]),
            FramePhase::Client,
            &self.cfg.limits,
        )?
        else {
            return Ok(None);
        };
        let [_, _, _, _, _, b5, b6] = h;
        let t = hdr.tag;
        let total = hdr.wire_len;
        // Unnamed statements (and portals) need no rewriting: decided from
        // the first name bytes, which every such message has.
        let named = match t {
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::CLOSE => {
                if take < 7 {
                    return Ok(None);
                }
                match t {
                    tag::PARSE => b5 != 0,
                    // An unnamed portal, then the statement name.
                    tag::BIND => b5 != 0 || b6 != 0,
                    // 'S' or 'P', then the name.
                    _ => b5 == b'S' && b6 != 0,
                }
            }
            _ => false,
        };
        if named {
            return Ok(Some((
                Fwd::Collect {
                    tag: t,
                    total,
                    buf: Vec::new(),
                },
                None,
            )));
        }
        let ev = match t {
            tag::SYNC => Some(Ev::Sync),
            tag::QUERY | tag::FUNCTION_CALL => Some(Ev::Simple),
            tag::PARSE => Some(Ev::Parse {
                drop: false,
                server: None,
                client: None,
            }),
            tag::CLOSE => Some(Ev::Close { drop: false }),
            _ => None,
        };
        Ok(Some((Fwd::Pass(total), ev)))
    }

    /// Writes the rewritten form of one collected client message (whole, or
    /// a Bind's head; `total`: the whole message's wire length) to `to_server`.
    fn rewrite(&mut self, t: u8, total: usize, msg: &[u8]) -> Result<(), ProtoError> {
        let body = msg.get(5..).unwrap_or(&[]);
        match t {
            tag::PARSE => {
                let end = cstr_end(body, 0).ok_or(ProtoError::MissingNul("statement name"))?;
                let name = body.get(..end).unwrap_or(&[]).to_vec();
                let rest = body.get(end.saturating_add(1)..).unwrap_or(&[]);
                if name.is_empty() {
                    self.to_server.extend_from_slice(msg);
                    self.rw_event(Ev::Parse {
                        drop: false,
                        server: None,
                        client: None,
                    });
                    return Ok(());
                }
                let server = self.define(&name, Shared::from(rest));
                self.make_room(&server)?;
                encode::parse_renamed(&mut self.to_server, &server, rest)?;
                self.rw_event(Ev::Parse {
                    drop: false,
                    server: Some(Arc::clone(&server)),
                    client: Some(name),
                });
                self.link_mut(|l| l.client_stmts.push_back(server));
                Ok(())
            }
            tag::BIND => {
                let p_end = cstr_end(body, 0).ok_or(ProtoError::MissingNul("portal name"))?;
                let s_end = cstr_end(body, p_end.saturating_add(1))
                    .ok_or(ProtoError::MissingNul("statement name"))?;
                let portal = body.get(..p_end).unwrap_or(&[]);
                let name = body.get(p_end.saturating_add(1)..s_end).unwrap_or(&[]);
                let Some(server) = self.ensure(name)? else {
                    self.to_server.extend_from_slice(msg);
                    return Ok(());
                };
                // New length: the old one minus the old name plus the new.
                let len = total
                    .saturating_sub(1)
                    .saturating_sub(name.len())
                    .saturating_add(server.len());
                let len = i32::try_from(len).map_err(|_| ProtoError::Encode("Bind length"))?;
                self.to_server.push(tag::BIND);
                self.to_server.extend_from_slice(&len.to_be_bytes());
                self.to_server.extend_from_slice(portal);
                self.to_server.push(0);
                self.to_server.extend_from_slice(&server);
                self.to_server.push(0);
                // The rest of the head collected beyond the names (none:
                // collection stops at the statement name's NUL).
                self.to_server
                    .extend_from_slice(body.get(s_end.saturating_add(1)..).unwrap_or(&[]));
                Ok(())
            }
            tag::DESCRIBE | tag::CLOSE => {
                let kind = body.first().copied().unwrap_or(0);
                let end = cstr_end(body, 1).ok_or(ProtoError::MissingNul("name"))?;
                let name = body.get(1..end).unwrap_or(&[]).to_vec();
                let server = if kind == b'S' && !name.is_empty() {
                    if t == tag::CLOSE {
                        self.forget(&name)
                    } else {
                        self.ensure(&name)?
                    }
                } else {
                    None
                };
                match server {
                    Some(s) => {
                        if t == tag::CLOSE {
                            encode::close_statement(&mut self.to_server, &s)?;
                        } else {
                            encode::describe_statement(&mut self.to_server, &s)?;
                        }
                    }
                    None => self.to_server.extend_from_slice(msg),
                }
                if t == tag::CLOSE {
                    self.rw_event(Ev::Close { drop: false });
                }
                Ok(())
            }
            _ => {
                self.to_server.extend_from_slice(msg);
                Ok(())
            }
        }
    }

    fn rw_event(&mut self, ev: Ev) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && let Some(rw) = relay.rw.as_mut()
        {
            rw.events.push_back(ev);
        }
    }

    fn link_mut<R>(&mut self, f: impl FnOnce(&mut ServerLink) -> R) -> Option<R> {
        match &mut self.phase {
            Phase::PoolRelay(relay) => Some(f(&mut relay.link)),
            _ => None,
        }
    }

    /// The client (re)defines `name`: a new server name, kept in its registry.
    fn define(&mut self, name: &[u8], rest: Shared) -> Shared {
        let cap = self.max_prepared().max(1);
        let id = self.client_id;
        let Some(tx) = self.tx.as_mut() else {
            return Shared::from(NEVER_PREPARED);
        };
        let st = &mut tx.stmts;
        st.seq = st.seq.wrapping_add(1);
        let server = Shared::from(format!("pgvpd_{id:x}_{}", st.seq).as_bytes());
        if st.map.contains_key(name) {
            st.order.retain(|n| n != name);
        } else {
            while st.map.len() >= cap {
                let Some(old) = st.order.pop_front() else {
                    break;
                };
                st.map.remove(&old);
            }
        }
        st.order.push_back(name.to_vec());
        st.map.insert(
            name.to_vec(),
            Stmt {
                server: server.clone(),
                rest,
            },
        );
        server
    }

    /// The client closes `name`: forgotten; its server name if known.
    fn forget(&mut self, name: &[u8]) -> Option<Shared> {
        let tx = self.tx.as_mut()?;
        let Some(st) = tx.stmts.map.remove(name) else {
            return reserved(name);
        };
        tx.stmts.order.retain(|n| n != name);
        let s = st.server;
        self.link_mut(|l| l.client_stmts.retain(|x| *x != s));
        Some(s)
    }

    /// The server name for client statement `name`, prepared on the lent
    /// server first (injected Parse) if it lacks it. None: not a statement
    /// of this client (the server will say so).
    fn ensure(&mut self, name: &[u8]) -> Result<Option<Shared>, ProtoError> {
        if name.is_empty() {
            return Ok(None);
        }
        let Some((server, rest)) = self
            .tx
            .as_ref()
            .and_then(|tx| tx.stmts.map.get(name))
            .map(|s| (Arc::clone(&s.server), Arc::clone(&s.rest)))
        else {
            return Ok(reserved(name));
        };
        let present = self
            .link_mut(|l| {
                let at = l.client_stmts.iter().position(|x| *x == server);
                if let Some(i) = at {
                    // Most recently used last.
                    if let Some(x) = l.client_stmts.remove(i) {
                        l.client_stmts.push_back(x);
                    }
                }
                at.is_some()
            })
            .unwrap_or(false);
        if !present {
            self.make_room(&server)?;
            encode::parse_renamed(&mut self.to_server, &server, &rest)?;
            self.rw_event(Ev::Parse {
                drop: true,
                server: Some(Arc::clone(&server)),
                client: None,
            });
            self.link_mut(|l| l.client_stmts.push_back(Arc::clone(&server)));
            crate::stats::inc(&crate::stats::STATS.tx_reprepares);
        }
        Ok(Some(server))
    }

    /// Closes the lent server's least recently used client statement while
    /// it holds `max_prepared_statements` (its CloseComplete is cut).
    fn make_room(&mut self, keep: &[u8]) -> Result<(), ProtoError> {
        let cap = self.max_prepared().max(1);
        loop {
            let victim = self
                .link_mut(|l| {
                    if l.client_stmts.len() < cap {
                        return None;
                    }
                    let i = l.client_stmts.iter().position(|x| **x != *keep)?;
                    l.client_stmts.remove(i)
                })
                .flatten();
            let Some(v) = victim else {
                return Ok(());
            };
            encode::close_statement(&mut self.to_server, &v)?;
            self.rw_event(Ev::Close { drop: true });
        }
    }

    /// One server message started at absolute offset `at` (after the
    /// step): match Parse/Close/ReadyForQuery answers, cut injected ones.
    pub(super) fn rw_server_msg(&mut self, t: u8, at: u64) -> Result<(), ProtoError> {
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return Ok(());
        };
        let Some(rw) = relay.rw.as_mut() else {
            return Ok(());
        };
        let unexpected = ProtoError::UnexpectedTag {
            phase: crate::protocol::FramePhase::Server,
            tag: t,
        };
        match t {
            tag::PARSE_COMPLETE => match rw.events.pop_front() {
                Some(Ev::Parse { drop, .. }) => {
                    if drop {
                        rw.drops.push_back((at, 5));
                    }
                }
                _ => return Err(unexpected),
            },
            tag::CLOSE_COMPLETE => match rw.events.pop_front() {
                Some(Ev::Close { drop }) => {
                    if drop {
                        rw.drops.push_back((at, 5));
                    }
                }
                _ => return Err(unexpected),
            },
            tag::READY_FOR_QUERY => match rw.events.pop_front() {
                Some(Ev::Sync | Ev::Simple) => {}
                _ => return Err(unexpected),
            },
            tag::ERROR_RESPONSE => {
                if matches!(rw.events.front(), Some(Ev::Simple) | None) {
                    return Ok(());
                }
                // Everything up to the next Sync was skipped by the server.
                let mut lost_server = Vec::new();
                let mut lost_client = Vec::new();
                while let Some(ev) = rw.events.front() {
                    if matches!(ev, Ev::Sync | Ev::Simple) {
                        break;
                    }
                    if let Some(Ev::Parse {
                        server: Some(s),
                        client,
                        ..
                    }) = rw.events.pop_front()
                    {
                        if let Some(c) = client {
                            lost_client.push((c, s.clone()));
                        }
                        lost_server.push(s);
                    }
                }
                relay.link.client_stmts.retain(|x| !lost_server.contains(x));
                if let Some(tx) = self.tx.as_mut() {
                    for (c, s) in lost_client {
                        if tx.stmts.map.get(&c).is_some_and(|st| st.server == s) {
                            tx.stmts.map.remove(&c);
                            tx.stmts.order.retain(|n| *n != c);
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `n` server bytes went to the client: cut what is due.
    pub(super) fn rw_client_consumed(&mut self, n: usize) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && let Some(rw) = relay.rw.as_mut()
        {
            rw.s2c_out = rw.s2c_out.saturating_add(n as u64);
        }
        self.rw_apply_drops();
    }

    /// Cuts messages that start at the head of the server stream.
    pub(super) fn rw_apply_drops(&mut self) -> bool {
        let mut did = false;
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return false;
        };
        let Some(rw) = relay.rw.as_mut() else {
            return false;
        };
        let Some(ring) = self.s2c.as_mut() else {
            return false;
        };
        while let Some(&(at, len)) = rw.drops.front() {
            if at != rw.s2c_out || ring.len() < len {
                break;
            }
            ring.consume(len);
            rw.s2c_out = rw.s2c_out.saturating_add(len as u64);
            rw.drops.pop_front();
            did = true;
        }
        did
    }

    pub(super) fn rw_scanned(&mut self, n: usize) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && let Some(rw) = relay.rw.as_mut()
        {
            rw.s2c_in = rw.s2c_in.saturating_add(n as u64);
        }
    }
}

/// Names the proxy uses on servers (`pgvpd_…`: the context step's, other
/// clients') are never reachable by a client's own name: one the client did
/// not prepare itself goes to the server as a name nothing ever prepares,
/// so Bind/Describe fail (26000) and Close does nothing.
fn reserved(name: &[u8]) -> Option<Shared> {
    name.starts_with(RESERVED_PREFIX)
        .then(|| Shared::from(NEVER_PREPARED))
}

/// Prefix of every statement name the proxy prepares on a server.
const RESERVED_PREFIX: &[u8] = b"pgvpd_";
/// A name under that prefix the proxy never prepares.
const NEVER_PREPARED: &[u8] = b"pgvpd_not_prepared_by_this_client";

/// End (index in the body) of a collected Bind's statement name, if there.
fn bind_head_end(msg: &[u8]) -> Option<usize> {
    let body = msg.get(5..)?;
    let p = cstr_end(body, 0)?;
    cstr_end(body, p.saturating_add(1))
}
