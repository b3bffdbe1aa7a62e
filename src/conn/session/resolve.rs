//! Context resolvers in a session (`resolvers = FILE`): after the upstream
//! login and before the context batch, in every mode.
//!
//! ```text
//! passthrough: PostAuth ─(Z)─► Resolving ─► Injecting ─► Transparent
//! pool modes:  PoolWait ─(server lent)─► Resolving ─► Injecting(link) ─► PoolRelay
//! ```
//!
//! `Resolving` runs `resolver::run::Run` on the session's server: one cycle
//! per resolver not answered by the cache, as the login role (the context
//! batch, which switches the role, comes after). When every resolver ran, the
//! resolved values join the user-name values and the context batch sets them
//! all. Transaction mode keeps them in the client's step: resolved once per
//! session, applied with every transaction. Any refusal is a FATAL with the
//! resolver's SQLSTATE; the lent server is closed and its pool slot freed
//! (the slot travels with the link).

use std::sync::Arc;
use std::time::Instant;

use super::{Handshake, Phase, Session, SessionConfig};
use crate::conn::CloseReason;
use crate::conn::inject::Step;
use crate::conn::timers::TimerKind;
use crate::protocol::{ProtoError, backend, tag};
use crate::resolver::run::{Fed, Next, Refusal, Run};

impl SessionConfig {
    /// The variables a context batch sets: the user-name ones, then every
    /// resolver's (the order of `Handshake::values` once resolved).
    pub fn all_variables(&self) -> &[String] {
        match &self.resolvers {
            Some(engine) => engine.variables(),
            None => &self.context_variables,
        }
    }
}

impl Session {
    /// After the upstream login (passthrough) or once a server is lent (pool
    /// modes): resolve first when resolvers are configured, else queue the
    /// context batch. Returns the next phase.
    pub(super) fn begin_context(&mut self, hs: Box<Handshake>, now: Instant) -> Phase {
        match &self.cfg.resolvers {
            Some(engine) if !engine.is_empty() => {
                let run = Box::new(Run::new(Arc::clone(engine), &hs.values));
                self.resolve_advance(hs, run, now)
            }
            _ => self.queue_context(hs, now),
        }
    }

    /// Queues the context batch for `hs` (its values complete).
    fn queue_context(&mut self, hs: Box<Handshake>, now: Instant) -> Phase {
        let built = if hs.link.is_some() {
            self.queue_pooled_batch(&hs)
        } else {
            let role = self.cfg.set_role.clone().unwrap_or_else(|| hs.role.clone());
            let values: Vec<&str> = hs.values.iter().map(String::as_str).collect();
            let cfg = Arc::clone(&self.cfg);
            crate::conn::inject::build(
                &mut self.to_server,
                &[],
                cfg.all_variables(),
                &values,
                &role,
            )
        };
        if let Err(e) = built {
            self.phase = Phase::Injecting(hs, Step::SetParse);
            self.violation(crate::conn::Side::Client, e, now);
            return std::mem::replace(&mut self.phase, Phase::Poisoned);
        }
        Phase::Injecting(hs, Step::SetParse)
    }

    /// Runs the resolvers as far as they go without the server.
    fn resolve_advance(
        &mut self,
        mut hs: Box<Handshake>,
        mut run: Box<Run>,
        now: Instant,
    ) -> Phase {
        let next = run.advance(&mut self.to_server, now);
        self.info.resolver_hits = run.hits;
        self.info.resolver_queries = run.misses;
        match next {
            Ok(Next::Sent(due)) | Ok(Next::Wait(due)) => {
                self.timers.set(TimerKind::Resolver, due);
                Phase::Resolving(hs, run)
            }
            Ok(Next::Done(values)) => {
                self.timers.clear(TimerKind::Resolver);
                crate::stats::add(&crate::stats::STATS.resolver_cache_hits, run.hits);
                crate::stats::add(&crate::stats::STATS.resolver_queries, run.misses);
                hs.values = values;
                self.queue_context(hs, now)
            }
            Ok(Next::Refused(r)) => self.resolve_refused(hs, run, r, now),
            Err(e) => {
                self.phase = Phase::Resolving(hs, run);
                self.violation(crate::conn::Side::Client, e, now);
                std::mem::replace(&mut self.phase, Phase::Poisoned)
            }
        }
    }

    fn resolve_refused(
        &mut self,
        hs: Box<Handshake>,
        run: Box<Run>,
        r: Refusal,
        now: Instant,
    ) -> Phase {
        crate::stats::inc(&crate::stats::STATS.resolver_refusals);
        self.phase = Phase::Resolving(hs, run);
        self.fail(&r.code, &r.message, CloseReason::ResolverFailed, now);
        std::mem::replace(&mut self.phase, Phase::Poisoned)
    }

    /// One server message while resolving.
    pub(super) fn on_resolver_message(
        &mut self,
        t: u8,
        wire: &[u8],
        body: &[u8],
        now: Instant,
    ) -> Result<(), ProtoError> {
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        let Phase::Resolving(mut hs, mut run) = old else {
            self.phase = old;
            return Ok(());
        };
        match t {
            // A resolver's notices are not the client's business.
            tag::NOTICE_RESPONSE => {
                self.phase = Phase::Resolving(hs, run);
                return backend::decode_error_fields(body).map(|_| ());
            }
            tag::PARAMETER_STATUS => {
                let r = self.handshake_parameter_status(&mut hs, wire, body);
                self.phase = Phase::Resolving(hs, run);
                return r;
            }
            _ => {}
        }
        let fed = run.feed(t, body, now);
        self.phase = match fed {
            Ok(Fed::More) => Phase::Resolving(hs, run),
            Ok(Fed::CycleDone) => self.resolve_advance(hs, run, now),
            Ok(Fed::Refused(r)) => self.resolve_refused(hs, run, r, now),
            Err(e) => {
                self.phase = Phase::Resolving(hs, run);
                return Err(e);
            }
        };
        Ok(())
    }

    /// The resolver timer fired: retry a cache wait, or give up on the server.
    pub(super) fn resolver_timer(&mut self, now: Instant) {
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        let Phase::Resolving(hs, run) = old else {
            self.phase = old;
            return;
        };
        self.phase = if run.running() {
            let r = run.timed_out();
            self.resolve_refused(hs, run, r, now)
        } else {
            self.resolve_advance(hs, run, now)
        };
    }

    /// A server message too large for the proxy's buffer arrived while resolving.
    pub(super) fn resolver_too_large(&mut self, max: usize, now: Instant) {
        let name = match &self.phase {
            Phase::Resolving(_, run) => run.current_name().to_string(),
            _ => return,
        };
        self.fail(
            "54000",
            &format!("resolver '{name}': a result row exceeds {max} bytes (the proxy's limit)"),
            CloseReason::ResolverFailed,
            now,
        );
    }
}
