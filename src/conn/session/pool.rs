//! Pool-mode parts of the session (`pool_mode = session`).
//!
//! ```text
//! Startup ─► PoolAuth ─► PoolWait ─► Injecting(link) ─► PoolRelay ─► (ReleaseServer) Closed
//!            (proxy      (queued;     (client settings,   (every message
//!             SCRAM or    client       context, role       counted by the
//!             password)   bytes held)  check on the lent   tracker)
//!                                      server)
//! ```
//! The client authenticates against the proxy's own secrets before any
//! server is touched. Once queued, the reactor lends a server with
//! `attach_server`; the context step is the passthrough one with the client's
//! allowed startup settings in front. The client then sees the lent server's
//! real ParameterStatus, a proxy-issued BackendKeyData and ReadyForQuery.
//! When the client ends (Terminate or EOF), the bytes it sent before are
//! forwarded, then `Action::ReleaseServer` asks the reactor to take the
//! server back (`take_server`) for the release sequence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Handshake, Phase, Session, after};
use crate::conn::inject;
use crate::conn::params;
use crate::conn::pool_auth::{AuthDb, AuthOutcome, ClientAuth};
use crate::conn::server::{LinkFailure, ServerLink};
use crate::conn::timers::TimerKind;
use crate::conn::tracker::ServerTracker;
use crate::conn::{Action, CloseReason, Side};
use crate::pool::PoolKey;
use crate::protocol::frontend::Startup;
use crate::protocol::{ProtoError, encode};

/// Settings of pool mode a session needs.
#[derive(Debug)]
pub struct PoolSettings {
    /// Login roles that may be pooled (None: any).
    pub roles: Option<Vec<String>>,
    pub auth: Arc<AuthDb>,
    pub checkout_timeout: Duration,
    /// `pool_mode = transaction`: the server goes back after each transaction.
    pub transaction: bool,
    /// Transaction mode: named statements per client and per server (0:
    /// refused with 0A000).
    pub max_prepared: usize,
    /// `tenant_max_servers`: most servers one tenant holds at once in one
    /// pool (None: no cap). Read from each session's own settings at every
    /// checkout ([`Session::pool_want`]), so a configuration swapped in for
    /// new sessions applies to their checkouts.
    pub tenant_max_servers: Option<u32>,
}

/// The relay with a lent server.
#[derive(Debug)]
pub struct Relay {
    pub(super) link: Box<ServerLink>,
    pub(super) tracker: ServerTracker,
    /// Bytes at the front of `c2s` that may still go to the server once the
    /// client ended (everything before its Terminate); None while it talks.
    pub(super) limit: Option<usize>,
    /// Transaction mode: answers of the context step still to swallow.
    pub(super) swallow: Option<super::txn::Swallow>,
    /// Transaction mode: `ReturnServer` was asked for (once).
    pub(super) returning: bool,
    /// Transaction mode with `max_prepared_statements > 0`: the rewriting
    /// of named statements.
    pub(super) rw: Option<Box<super::stmts::Rewrite>>,
    /// Client bytes at the end of `c2s` the tracker has not seen yet: those
    /// the client sent before its session started (scanned first thing).
    pub(super) unscanned: usize,
    /// A session timeout ended the session: the FATAL is queued, the
    /// server goes to its release, then the session closes with this.
    pub(super) end: Option<(CloseReason, String)>,
}

impl Relay {
    pub(super) fn ending(&self) -> bool {
        self.limit.is_some()
    }
}

impl Session {
    /// A tenant startup in pool mode: checks, then the proxy's own
    /// authentication. No server is contacted before it succeeds.
    pub(super) fn start_pooled(
        &mut self,
        s: &Startup<'_>,
        role: &str,
        values: Vec<String>,
        pool: &PoolSettings,
        tls: bool,
        now: Instant,
    ) {
        if let Some(roles) = &pool.roles
            && !roles.iter().any(|r| r == role)
        {
            self.fail(
                "28000",
                &format!("role \"{role}\" may not be pooled (pool_roles)"),
                CloseReason::BadUsername,
                now,
            );
            return;
        }
        let pairs: Vec<(String, String)> = s
            .params()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let settings = match params::settings(&borrowed) {
            Ok(v) => v,
            Err(params::Refused(msg)) => {
                self.fail("0A000", &msg, CloseReason::BadUsername, now);
                return;
            }
        };
        // Protocol 3.2 or `_pq_` options: answer with what we speak (3.0).
        let unknown: Vec<&[u8]> = s
            .params()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(b"_pq_."))
            .collect();
        if (s.major_minor().1 > 0 || !unknown.is_empty())
            && let Err(e) = encode::negotiate_protocol_version(&mut self.to_client, 0, &unknown)
        {
            self.violation(Side::Client, e, now);
            return;
        }
        if s.get(b"database").is_none() {
            // As PostgreSQL: the database defaults to the (login) user name.
            self.info.database = role.to_string();
        }
        let user = String::from_utf8_lossy(s.get(b"user").unwrap_or(b"")).into_owned();
        let auth = ClientAuth::start(
            &pool.auth,
            &user,
            role,
            tls || self.peer_loopback,
            self.pool_nonce,
            &mut self.to_client,
        );
        let auth = match auth {
            Ok(a) => a,
            Err(f) => {
                self.fail(&f.sqlstate, &f.message, CloseReason::AuthFailed, now);
                return;
            }
        };
        let hs = Handshake {
            role: role.to_string(),
            values,
            startup: Vec::new(),
            then: super::AfterStartup::Authenticate,
            server_tls: false,
            link: None,
            retry: super::BatchRetry::None,
            settings,
            client_key: None,
        };
        self.phase = Phase::PoolAuth(Box::new(hs), Box::new(auth));
    }

    /// One client message of the proxy's authentication exchange.
    pub(super) fn step_pool_auth(&mut self, now: Instant) -> bool {
        if !matches!(self.phase, Phase::PoolAuth(..)) {
            return false;
        }
        let Some(mut ring) = self.c2s.take() else {
            return false;
        };
        let framed = self.next_message(
            &mut ring,
            crate::protocol::FramePhase::ClientAuth,
            |s, _, _, body| match &mut s.phase {
                Phase::PoolAuth(_, auth) => Ok(auth.on_message(body, &mut s.to_client)),
                _ => Err(ProtoError::BadValue("authentication state")),
            },
        );
        self.c2s = Some(ring);
        let outcome = match framed {
            Ok(None) => return false,
            Ok(Some(r)) => r,
            Err(e) => Err(e),
        };
        match outcome {
            Err(e) => self.violation(Side::Client, e, now),
            Ok(AuthOutcome::Continue) => {}
            Ok(AuthOutcome::Failed(f)) => {
                crate::stats::inc(&crate::stats::STATS.auth_failures);
                self.fail(&f.sqlstate, &f.message, CloseReason::AuthFailed, now);
            }
            Ok(AuthOutcome::Ok) => {
                if let Err((code, msg)) = self.admit_tenant(now) {
                    self.fail(code, &msg, CloseReason::TenantLimit, now);
                    return true;
                }
                encode::auth_ok(&mut self.to_client);
                let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
                let Phase::PoolAuth(hs, _) = old else {
                    self.phase = old;
                    return true;
                };
                self.phase = Phase::PoolWait(hs);
                // Waiting is bounded by pool_checkout_timeout, not the handshake timer.
                self.timers.clear(TimerKind::Handshake);
                let wait = self
                    .cfg
                    .pool
                    .as_ref()
                    .map(|p| p.checkout_timeout)
                    .unwrap_or_default();
                self.timers.set(TimerKind::Checkout, after(now, wait));
                self.action = Some(Action::Checkout);
            }
        }
        true
    }

    /// The pool key while the session waits for a server.
    pub fn pool_key(&self) -> Option<PoolKey> {
        match (&self.phase, &self.tx) {
            (Phase::PoolWait(hs), _) => Some(PoolKey {
                database: self.info.database.clone(),
                role: hs.role.clone(),
            }),
            (Phase::TxWait, Some(tx)) => Some(PoolKey {
                database: self.info.database.clone(),
                role: tx.role.clone(),
            }),
            _ => None,
        }
    }

    /// What the pool needs besides the key: the client's tenant and its
    /// cap (`tenant_max_servers` of this session's configuration).
    pub fn pool_want(&self) -> crate::pool::Want<'_> {
        crate::pool::Want {
            tenant: &self.info.tenant,
            cap: self.cfg.pool.as_ref().and_then(|p| p.tenant_max_servers),
        }
    }

    /// True while queued for a server.
    pub fn pool_waiting(&self) -> bool {
        matches!(self.phase, Phase::PoolWait(_) | Phase::TxWait)
    }

    /// The reactor lends `link` (its socket now feeds this session's server
    /// side). `client_key`: the proxy-issued cancel key to show the client.
    /// Returns the link back when the session no longer waits.
    pub fn attach_server(
        &mut self,
        link: Box<ServerLink>,
        client_key: (i32, [u8; 4]),
        now: Instant,
    ) -> Result<(), Box<ServerLink>> {
        if matches!(self.phase, Phase::TxWait) {
            return self.tx_attach(link, now);
        }
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        let Phase::PoolWait(mut hs) = old else {
            self.phase = old;
            return Err(link);
        };
        hs.client_key = Some(client_key);
        hs.link = Some(link);
        self.timers.clear(TimerKind::Checkout);
        self.timers
            .set(TimerKind::Handshake, after(now, self.cfg.handshake_timeout));
        self.phase = self.begin_context(hs, now);
        Ok(())
    }

    /// Queues the pool-mode context batch: the client's settings, the
    /// context variables and the role, then the role check.
    pub(super) fn queue_pooled_batch(&mut self, hs: &Handshake) -> Result<(), ProtoError> {
        let role = self.cfg.set_role.clone().unwrap_or_else(|| hs.role.clone());
        let values: Vec<&str> = hs.values.iter().map(String::as_str).collect();
        let cfg = Arc::clone(&self.cfg);
        inject::build(
            &mut self.to_server,
            &hs.settings,
            cfg.all_variables(),
            &values,
            &role,
        )
    }

    /// The context step on a lent server succeeded: show the client the
    /// server's state, the proxy's cancel key, and start relaying.
    pub(super) fn pooled_started(
        &mut self,
        link: Option<Box<ServerLink>>,
        hs: &Handshake,
        now: Instant,
    ) -> Phase {
        let client_key = hs.client_key;
        let Some(mut link) = link else {
            return Phase::Closed;
        };
        for (k, v) in &link.params {
            // Names and values came from the server through the decoder: no NUL.
            let _ = encode::parameter_status(&mut self.to_client, k, v);
        }
        if let Some((pid, secret)) = client_key {
            let _ = encode::backend_key_data(&mut self.to_client, pid, &secret);
        }
        encode::ready_for_query(&mut self.to_client, b'I');
        self.timers.clear(TimerKind::Handshake);
        self.action = Some(Action::SessionStarted);
        self.start_watch(now, false);
        // The injection batch was the proxy's: the tracker starts at rest.
        let (tracker, rw) = match self.tx_begin(&mut link, &hs.role, &hs.settings, &hs.values) {
            Ok(true) => self.tx_tracker(),
            Ok(false) => (ServerTracker::new(), None),
            Err(e) => {
                self.violation(Side::Client, e, now);
                return Phase::Closed;
            }
        };
        // Bytes the client pipelined before its ReadyForQuery are its first
        // requests: the tracker must count them before they are relayed.
        let unscanned = self.c2s.as_ref().map_or(0, |r| r.len());
        Phase::PoolRelay(Box::new(Relay {
            link,
            tracker,
            limit: None,
            swallow: None,
            returning: false,
            rw,
            unscanned,
            end: None,
        }))
    }

    /// Scans the client bytes held from before the session started.
    pub(super) fn step_scan_held(&mut self, now: Instant) -> bool {
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return false;
        };
        let n = std::mem::take(&mut relay.unscanned);
        if n == 0 {
            return false;
        }
        self.scan_client(n, now);
        true
    }

    /// Creating a server for this client's key failed.
    pub fn checkout_failed(&mut self, f: &LinkFailure, now: Instant) {
        if !self.pool_waiting() {
            return;
        }
        let msg = if f.from_server {
            format!(
                "upstream server refused the pooled connection: {}",
                f.message
            )
        } else {
            f.message.clone()
        };
        let code = if f.sqlstate.len() == 5 {
            f.sqlstate.clone()
        } else {
            "08006".to_string()
        };
        self.fail(&code, &msg, CloseReason::ConnectFailed, now);
    }

    /// `pool_checkout_timeout` passed while queued.
    pub(super) fn checkout_timed_out(&mut self, now: Instant) {
        if !self.pool_waiting() {
            return;
        }
        crate::stats::inc(&crate::stats::STATS.pool_timeouts);
        let secs = self
            .cfg
            .pool
            .as_ref()
            .map(|p| p.checkout_timeout.as_secs())
            .unwrap_or(0);
        let full = match self.cfg.pool.as_ref().and_then(|p| p.tenant_max_servers) {
            Some(n) => format!("pool_size or tenant_max_servers = {n} reached"),
            None => "pool_size reached".to_string(),
        };
        self.fail(
            "53300",
            &format!(
                "pool checkout timeout: no server for database \"{}\" within {secs}s \
                 ({full}, or the pools are paused)",
                self.info.database
            ),
            CloseReason::PoolTimeout,
            now,
        );
    }

    /// Scans `n` bytes just read from the client (the ring's last `n`).
    pub(super) fn scan_client(&mut self, n: usize, now: Instant) {
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return;
        };
        let Some(ring) = self.c2s.as_ref() else {
            return;
        };
        if relay.ending() {
            return; // bytes after the Terminate are dropped by the limit
        }
        // Transaction mode: a parked server is in use again; its next
        // return is asked for at the end of this transaction.
        relay.returning = false;
        let before = ring.len().saturating_sub(n);
        let (a, b) = ring.readable();
        let mut res = Ok(None);
        let mut offset = before;
        for part in tail(a, b, n) {
            match relay.tracker.client_bytes(part) {
                Ok(Some(at)) => {
                    // `at` < 0: the Terminate's header began in bytes held back
                    // earlier (`client_partial_header`), still in the ring.
                    let start = isize::try_from(offset)
                        .unwrap_or(isize::MAX)
                        .saturating_add(at);
                    res = Ok(Some(usize::try_from(start).unwrap_or(0)));
                    break;
                }
                Ok(None) => offset = offset.saturating_add(part.len()),
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        match res {
            Ok(Some(limit)) => {
                relay.limit = Some(limit);
                self.check_release();
            }
            Ok(None) => self.watch_requests(false, now),
            Err(e) => self.violation(Side::Client, e, now),
        }
    }

    /// Scans `n` bytes just read from the server.
    pub(super) fn scan_server(&mut self, n: usize, now: Instant) {
        let Phase::PoolRelay(relay) = &mut self.phase else {
            return;
        };
        if relay.swallow.is_some() {
            // The context step's answers come first; what follows them is
            // scanned once they are swallowed (`step_tx_swallow`).
            return;
        }
        let Some(ring) = self.s2c.as_ref() else {
            return;
        };
        let (a, b) = ring.readable();
        let mut res = Ok(());
        // Rewriting: the starts of the answers it matches, at absolute
        // offsets (a buffer kept in the rewriting state, not one per read).
        let base = relay.rw.as_ref().map_or(0, |rw| rw.scanned());
        let mut starts = relay.rw.as_mut().map(|rw| rw.take_starts());
        let mut offset: u64 = 0;
        let mut seen = super::timeouts::ServerSeen::default();
        for part in tail(a, b, n) {
            res = relay.tracker.server_bytes_each(part, |t, at| {
                seen.see(
                    t,
                    isize::try_from(offset)
                        .unwrap_or(isize::MAX)
                        .saturating_add(at),
                );
                if let Some(v) = starts.as_mut()
                    && matches!(t, b'1' | b'3' | b'Z' | b'E')
                {
                    let from = base.saturating_add(offset);
                    let abs = if at >= 0 {
                        from.saturating_add(at.unsigned_abs() as u64)
                    } else {
                        from.saturating_sub(at.unsigned_abs() as u64)
                    };
                    v.push((t, abs));
                }
            });
            offset = offset.saturating_add(part.len() as u64);
            if res.is_err() {
                break;
            }
        }
        if let Err(e) = res {
            self.violation(Side::Server, e, now);
            return;
        }
        self.watch_server_seen(seen, n, now);
        if let Some(mut v) = starts {
            for (t, abs) in v.drain(..) {
                if let Err(e) = self.rw_server_msg(t, abs) {
                    self.violation(Side::Server, e, now);
                    return;
                }
            }
            if let Phase::PoolRelay(relay) = &mut self.phase
                && let Some(rw) = relay.rw.as_mut()
            {
                rw.put_starts(v);
            }
            self.rw_scanned(n);
            self.rw_apply_drops();
        }
    }

    /// Client EOF while relaying: forward what it sent, then release.
    pub(super) fn pooled_client_eof(&mut self) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && relay.limit.is_none()
        {
            // An incomplete header was never forwarded: drop it, the server
            // stays at a message boundary.
            let held = relay.tracker.client_partial_header();
            relay.tracker.abandon_partial_client_header();
            let len = self.c2s.as_ref().map_or(0, |r| r.len());
            relay.limit = Some(len.saturating_sub(held));
        }
        self.check_release();
    }

    /// Once the ended client's last bytes are out, ask for the release.
    pub(super) fn check_release(&mut self) {
        if let Phase::PoolRelay(relay) = &self.phase
            && relay.limit == Some(0)
            && self.to_server.is_empty()
            && self.action.is_none()
        {
            self.action = Some(Action::ReleaseServer);
        }
    }

    /// The reactor takes the lent server back (after `ReleaseServer`, or when
    /// the session must end while holding one). The session is closed, or
    /// (a session timeout ended it) flushes its FATAL to the client first.
    /// None when the server must not be pooled again: a proxy cancel is
    /// unresolved (it could still hit the server's next query), so the
    /// link is dropped here, which closes it and frees its slot.
    pub fn take_server(
        &mut self,
        reason: CloseReason,
        now: Instant,
    ) -> Option<(Box<ServerLink>, ServerTracker)> {
        let cancel_pending = self.cancel_pending();
        let old = std::mem::replace(&mut self.phase, Phase::Poisoned);
        match old {
            Phase::PoolRelay(relay) => {
                let mut r = *relay;
                self.phase = Phase::Draining {
                    toward: Side::Client,
                };
                match r.end.take() {
                    Some((why, detail)) if !self.to_client.is_empty() => {
                        if let Some(ring) = self.s2c.as_mut() {
                            ring.clear();
                        }
                        self.drain(Side::Client, why, detail, now);
                    }
                    Some((why, detail)) => self.finish(why, detail),
                    None => self.finish(reason, String::new()),
                }
                if cancel_pending {
                    return None;
                }
                Some((r.link, r.tracker))
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// A session timeout ended this pooled session: only its FATAL goes to
    /// the client from now on.
    pub(super) fn pooled_end_pending(&self) -> bool {
        matches!(&self.phase, Phase::PoolRelay(r) if r.end.is_some())
    }

    /// Relay bytes toward the server in pool mode: up to the limit once the
    /// client ended.
    pub(super) fn pooled_server_output(&self) -> (&[u8], &[u8]) {
        let (Phase::PoolRelay(relay), Some(r)) = (&self.phase, &self.c2s) else {
            return (&[], &[]);
        };
        if self.cancel_pending() {
            // Client bytes wait until the proxy's cancel is resolved.
            return (&[], &[]);
        }
        let (a, b) = r.readable();
        let n = match relay.limit {
            // A header not yet complete may be a Terminate: hold it back.
            None => r
                .len()
                .saturating_sub(relay.tracker.client_partial_header()),
            Some(l) => l,
        };
        // Not yet counted by the tracker: held until scanned.
        let n = n.min(r.len().saturating_sub(relay.unscanned));
        // Rewriting: raw bytes only inside a message passed as it is.
        let n = match relay.rw.as_ref() {
            Some(rw) => n.min(rw.raw_allowance()),
            None => n,
        };
        head(a, b, n)
    }

    /// `n` relayed bytes went to the server.
    pub(super) fn pooled_forwarded(&mut self, n: usize) {
        if let Phase::PoolRelay(relay) = &mut self.phase
            && let Some(l) = relay.limit.as_mut()
        {
            *l = l.saturating_sub(n);
        }
        self.rw_forwarded(n);
    }

    pub(super) fn pooled_wants_client_read(&self) -> bool {
        match &self.phase {
            Phase::PoolRelay(relay) => !relay.ending() && !relay.tracker.backpressure(),
            Phase::TxIdle | Phase::TxWait => true,
            _ => false,
        }
    }
}

/// The last `n` bytes of the two-part readable region, as two slices (the
/// first may be empty).
pub(super) fn tail<'a>(a: &'a [u8], b: &'a [u8], n: usize) -> [&'a [u8]; 2] {
    let total = a.len().saturating_add(b.len());
    let skip = total.saturating_sub(n);
    if skip >= a.len() {
        [&[], b.get(skip.saturating_sub(a.len())..).unwrap_or(&[])]
    } else {
        [a.get(skip..).unwrap_or(&[]), b]
    }
}

/// The first `n` bytes of the two-part readable region.
pub(super) fn head<'a>(a: &'a [u8], b: &'a [u8], n: usize) -> (&'a [u8], &'a [u8]) {
    if n <= a.len() {
        (a.get(..n).unwrap_or(&[]), &[])
    } else {
        (a, b.get(..n.saturating_sub(a.len())).unwrap_or(b))
    }
}

#[cfg(test)]
mod tests {
    use super::{head, tail};

    #[test]
    fn head_and_tail_of_two_parts() {
        let (a, b) = (&b"abc"[..], &b"de"[..]);
        assert_eq!(tail(a, b, 2), [&b""[..], &b"de"[..]]);
        assert_eq!(tail(a, b, 1), [&b""[..], &b"e"[..]]);
        assert_eq!(tail(a, b, 4), [&b"bc"[..], &b"de"[..]]);
        assert_eq!(tail(a, b, 9), [&b"abc"[..], &b"de"[..]]);
        assert_eq!(head(a, b, 2), (&b"ab"[..], &b""[..]));
        assert_eq!(head(a, b, 4), (&b"abc"[..], &b"d"[..]));
        assert_eq!(head(a, b, 9), (&b"abc"[..], &b"de"[..]));
    }
}
