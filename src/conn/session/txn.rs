//! Transaction pooling (`pool_mode = transaction`): the pooled session of
//! `pool.rs`, except that the server goes back to the pool after every
//! transaction and the tenant context is applied again on whichever server
//! the client's next transaction gets.
//!
//! ```text
//! PoolAuth ─► PoolWait ─► Injecting ─► PoolRelay ─(ReturnServer)─► TxIdle
//!                          (context,    (idle: Z 'I',                 │ first byte of
//!                           role check,  nothing owed)                │ a message
//!                           params)          ▲                        ▼
//!                                            └──── attach ◄──────── TxWait
//!                                                  (context step in front of
//!                                                   the client's bytes, its
//!                                                   answers swallowed)
//! ```
//!
//! At connect the session runs the session-mode batch once (the role check
//! and the server's real ParameterStatus included), then returns the
//! server. For every later transaction the server gets [`TxStep`]: Bind and
//! Execute of a prepared `SELECT set_config(...)` of the settings, the
//! context variables and the role, then of `COMMIT`, with no Sync, written
//! ahead of the client's bytes in the same write (no round trip). The step
//! shares the client's first extended-query cycle: if it fails, PostgreSQL
//! discards the client's messages up to the client's Sync (a simple Query
//! too), so none of them runs without the context, and the client gets a
//! FATAL error while the server is closed. The `COMMIT` commits the step
//! before the client's first statement, so the client's `ROLLBACK` cannot
//! bring back an earlier client's context. The step is skipped only when
//! the server's last step was for this same client (nothing else ran on it
//! since), which is the reactor's first choice of server.

use std::time::Instant;

use super::pool::Relay;
use super::{Phase, Session};
use crate::conn::inject::{self, TX_COMMIT_NAME, TX_TAIL, TxStep};
use crate::conn::server::ServerLink;
use crate::conn::timers::TimerKind;
use crate::conn::tracker::ServerTracker;
use crate::conn::{Action, CloseReason, Side};
use crate::protocol::{FramePhase, ProtoError, backend, tag};

/// A transaction-mode client's context, kept for its whole life.
#[derive(Debug)]
pub struct TxCtx {
    /// The login role (the pool key's role).
    pub(super) role: String,
    /// Its named prepared statements.
    pub(super) stmts: super::stmts::Stmts,
    /// The rewriting state of its last relay, reused by the next.
    spare_rw: Option<Box<super::stmts::Rewrite>>,
    /// The step (settings, context, role) for a server that lacks it.
    step: TxStep,
    /// The step with unnamed statements, for servers where the proxy
    /// prepares nothing (`ServerLink::named_ok` false).
    unnamed: Vec<u8>,
}

/// Most answers a step owes: three Parses (context statement, BEGIN,
/// COMMIT) and the tail, or the unnamed variant. Checked at compile time.
const SWALLOW_MAX: usize = 12;
const _: () =
    assert!(3 + TX_TAIL.len() <= SWALLOW_MAX && inject::TX_UNNAMED_ANSWERS.len() <= SWALLOW_MAX);

/// Answers of a context step not yet seen: expected tags, in order.
#[derive(Clone, Copy, Debug)]
pub struct Swallow {
    expect: [u8; SWALLOW_MAX],
    len: u8,
    next: u8,
}

impl Swallow {
    fn new(tags: &[u8]) -> Swallow {
        let mut expect = [0u8; SWALLOW_MAX];
        let mut len = 0u8;
        for (slot, t) in expect.iter_mut().zip(tags) {
            *slot = *t;
            len = len.saturating_add(1);
        }
        Swallow {
            expect,
            len,
            next: 0,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.len
    }

    /// Takes one answer; false when it is not the one expected.
    fn take(&mut self, t: u8) -> bool {
        match self.expect.get(usize::from(self.next)) {
            Some(e) if *e == t && !self.done() => {
                self.next = self.next.saturating_add(1);
                true
            }
            _ => false,
        }
    }
}

impl Session {
    fn transaction_mode(&self) -> bool {
        self.cfg.pool.as_ref().is_some_and(|p| p.transaction)
    }

    /// Connect-time batch done: in transaction mode, keep the client's step
    /// and mark the server as carrying this client's context. True in
    /// transaction mode.
    pub(super) fn tx_begin(
        &mut self,
        link: &mut ServerLink,
        role: &str,
        settings: &[(String, String)],
        values: &[String],
    ) -> Result<bool, ProtoError> {
        if !self.transaction_mode() {
            return Ok(false);
        }
        let set_role = self
            .cfg
            .set_role
            .clone()
            .unwrap_or_else(|| role.to_string());
        let vals: Vec<&str> = values.iter().map(String::as_str).collect();
        let vars = self.cfg.all_variables();
        let step = TxStep::new(settings, vars, &vals, &set_role)?;
        let mut unnamed = Vec::new();
        inject::build_unnamed_tx(&mut unnamed, settings, vars, &vals, &set_role)?;
        self.tx = Some(Box::new(TxCtx {
            stmts: super::stmts::Stmts::default(),
            spare_rw: None,
            role: role.to_string(),
            step,
            unnamed,
        }));
        link.context_of = Some(self.client_id);
        Ok(true)
    }

    /// The tracker (and rewriting) of a transaction-mode relay: named
    /// statements are rewritten, or refused when `max_prepared_statements`
    /// is 0.
    pub(super) fn tx_tracker(&mut self) -> (ServerTracker, Option<Box<super::stmts::Rewrite>>) {
        let max = self.cfg.pool.as_ref().map_or(0, |p| p.max_prepared);
        if max == 0 {
            return (ServerTracker::refusing_named_statements(), None);
        }
        // The client's last one, reset, keeps its buffers' capacity.
        let rw = match self.tx.as_mut().and_then(|tx| tx.spare_rw.take()) {
            Some(mut rw) => {
                rw.reset();
                rw
            }
            None => Box::default(),
        };
        (ServerTracker::new(), Some(rw))
    }

    /// Transaction mode: a server is lent for the client's next transaction.
    pub(super) fn tx_attach(
        &mut self,
        mut link: Box<ServerLink>,
        now: Instant,
    ) -> Result<(), Box<ServerLink>> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(link);
        };
        let mut swallow = None;
        if link.context_of == Some(self.client_id) {
            crate::stats::inc(&crate::stats::STATS.tx_step_skips);
        } else {
            let mut tags: Vec<u8> = Vec::with_capacity(8);
            let mut out = Vec::new();
            if link.named_ok {
                let name = tx.step.name.as_bytes();
                if !link.prepared.iter().any(|p| p == name) {
                    out.extend_from_slice(&tx.step.parse);
                    link.prepared.push(name.to_vec());
                    tags.push(tag::PARSE_COMPLETE);
                }
                if !link.prepared.iter().any(|p| p == TX_COMMIT_NAME) {
                    if inject::tx_fixed_parse(&mut out).is_err() {
                        return Err(link);
                    }
                    link.prepared.push(TX_COMMIT_NAME.to_vec());
                    tags.extend_from_slice(&[tag::PARSE_COMPLETE, tag::PARSE_COMPLETE]);
                }
                out.extend_from_slice(&tx.step.run);
                tags.extend_from_slice(TX_TAIL);
            } else {
                out.extend_from_slice(&tx.unnamed);
                tags.extend_from_slice(inject::TX_UNNAMED_ANSWERS);
            }
            self.to_server.extend_from_slice(&out);
            link.context_of = Some(self.client_id);
            swallow = Some(Swallow::new(&tags));
        }
        self.timers.clear(TimerKind::Checkout);
        let (tracker, rw) = self.tx_tracker();
        self.phase = Phase::PoolRelay(Box::new(Relay {
            link,
            tracker,
            limit: None,
            swallow,
            returning: false,
            rw,
            unscanned: 0,
            end: None,
        }));
        // What the client sent while it had no server is scanned now.
        let held = self.c2s.as_ref().map_or(0, |r| r.len());
        if held > 0 {
            self.scan_client(held, now);
        }
        // Classify what is held (the rewriting forwards nothing before).
        self.process(now);
        Ok(())
    }

    /// The reactor takes the server back after a transaction
    /// (`Action::ReturnServer`); the client stays, without a server.
    pub fn take_tx_server(&mut self) -> Option<(Box<ServerLink>, ServerTracker)> {
        if !self.tx_return_ready() {
            return None;
        }
        let old = std::mem::replace(&mut self.phase, Phase::TxIdle);
        match old {
            Phase::PoolRelay(relay) => {
                let r = *relay;
                if let (Some(tx), Some(rw)) = (self.tx.as_mut(), r.rw) {
                    tx.spare_rw = Some(rw);
                }
                Some((r.link, r.tracker))
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The transaction ended, the return was asked for, and the reactor left
    /// the server parked here: it may take it back for a waiter.
    pub fn tx_parked(&self) -> bool {
        matches!(&self.phase, Phase::PoolRelay(r) if r.returning) && self.tx_return_ready()
    }

    /// The lent server is provably idle between transactions and nothing of
    /// the client waits to be sent: it may go back.
    fn tx_return_ready(&self) -> bool {
        let Phase::PoolRelay(relay) = &self.phase else {
            return false;
        };
        self.tx.is_some()
            && !self.cancel_pending()
            && relay.swallow.is_none()
            && relay.rw.as_ref().is_none_or(|rw| rw.at_rest())
            && relay.limit.is_none()
            && !relay.tracker.terminated()
            && relay.tracker.is_idle()
            && self.to_server.is_empty()
            && self.c2s.as_ref().is_none_or(|r| r.is_empty())
    }

    /// Called when the reactor polls actions: the return may have waited
    /// for an earlier action to be taken.
    pub(super) fn tx_poll(&mut self) {
        if self.action.is_none() && self.transaction_mode() && self.tx_return_ready() {
            self.ask_return();
        }
    }

    fn ask_return(&mut self) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && !relay.returning
        {
            relay.returning = true;
            self.action = Some(Action::ReturnServer);
        }
    }

    /// Asks for the return or a checkout when the state calls for one.
    pub(super) fn tx_next(&mut self, now: Instant) -> bool {
        if self.action.is_some() || !self.transaction_mode() {
            return false;
        }
        match self.phase {
            Phase::PoolRelay(_) if self.tx_return_ready() => {
                self.ask_return();
                self.action.is_some()
            }
            Phase::TxIdle => {
                // The last transaction's answers go to the client first: the
                // next server's stream starts in an empty ring (the step's
                // answers are read from its head).
                if !self.to_client.is_empty() || self.s2c.as_ref().is_some_and(|r| !r.is_empty()) {
                    return false;
                }
                let Some(ring) = self.c2s.as_ref() else {
                    return false;
                };
                let mut first = [0u8; 1];
                if ring.len() < 5 || !ring.peek_into(&mut first) {
                    return false; // not one whole header yet
                }
                if first[0] == tag::TERMINATE {
                    self.finish(CloseReason::ClientEof, String::new());
                    return true;
                }
                let wait = self
                    .cfg
                    .pool
                    .as_ref()
                    .map(|p| p.checkout_timeout)
                    .unwrap_or_default();
                self.timers
                    .set(TimerKind::Checkout, super::after(now, wait));
                self.phase = Phase::TxWait;
                self.action = Some(Action::Checkout);
                true
            }
            _ => false,
        }
    }

    /// One server message while the context step's answers are owed.
    pub(super) fn step_tx_swallow(&mut self, now: Instant) -> bool {
        let swallowing = matches!(&self.phase, Phase::PoolRelay(r) if r.swallow.is_some());
        if !swallowing {
            return false;
        }
        let Some(mut ring) = self.s2c.take() else {
            return false;
        };
        let framed = self.next_message(&mut ring, FramePhase::Server, |s, t, wire, body| {
            s.on_step_answer(t, wire, body)
        });
        self.s2c = Some(ring);
        let outcome = match framed {
            Ok(None) => return false,
            Ok(Some(r)) => r,
            Err(e) => Err(e),
        };
        match outcome {
            Err(e) => self.violation(Side::Server, e, now),
            Ok(StepAnswer::More) => {}
            Ok(StepAnswer::Failed(code, msg)) => {
                crate::stats::inc(&crate::stats::STATS.tx_step_failures);
                // The server discarded the client's messages; it is closed
                // with the session (the link is dropped with the phase).
                self.fail(
                    &code,
                    &format!("could not set the tenant context: {msg}"),
                    CloseReason::InjectionFailed,
                    now,
                );
            }
            Ok(StepAnswer::Done) => {
                if let Phase::PoolRelay(relay) = &mut self.phase {
                    relay.swallow = None;
                }
                // What the server sent after the step is the client's.
                let rest = self.s2c.as_ref().map_or(0, |r| r.len());
                if rest > 0 {
                    self.scan_server(rest, now);
                }
            }
        }
        true
    }

    fn on_step_answer(
        &mut self,
        t: u8,
        wire: &[u8],
        body: &[u8],
    ) -> Result<StepAnswer, ProtoError> {
        match t {
            tag::NOTICE_RESPONSE => {
                // Not the client's (the step's own statements raise none).
                backend::decode_error_fields(body)?;
                return Ok(StepAnswer::More);
            }
            tag::PARAMETER_STATUS => {
                let ps = backend::decode_parameter_status(body)?;
                if let Phase::PoolRelay(relay) = &mut self.phase {
                    relay.link.note_param(ps.name, ps.value);
                }
                self.to_client.extend_from_slice(wire);
                return Ok(StepAnswer::More);
            }
            tag::ERROR_RESPONSE => {
                let f = backend::decode_error_fields(body)?;
                let code = f
                    .code
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .filter(|c| c.len() == 5)
                    .unwrap_or("XX000")
                    .to_string();
                let msg =
                    String::from_utf8_lossy(f.message.unwrap_or(b"unknown error")).into_owned();
                return Ok(StepAnswer::Failed(code, msg));
            }
            _ => {}
        }
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return Ok(StepAnswer::More);
        };
        let Some(sw) = relay.swallow.as_mut() else {
            return Ok(StepAnswer::More);
        };
        if !sw.take(t) {
            return Err(ProtoError::UnexpectedTag {
                phase: FramePhase::Server,
                tag: t,
            });
        }
        Ok(if sw.done() {
            StepAnswer::Done
        } else {
            StepAnswer::More
        })
    }

    /// Bytes of the relayed server stream the client may have now (none
    /// while the step's answers, which come first, are swallowed).
    pub(super) fn tx_swallowing(&self) -> bool {
        matches!(&self.phase, Phase::PoolRelay(r) if r.swallow.is_some())
    }
}

enum StepAnswer {
    More,
    Done,
    Failed(String, String),
}
