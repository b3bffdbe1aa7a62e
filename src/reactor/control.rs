//! Commands from the admin API to the workers: one bounded channel per
//! worker, each command with its own reply channel, and a deadline for the
//! answers. The admin thread never touches worker state: it sends a
//! [`Command`], wakes the worker, and waits (at most [`REPLY_TIMEOUT`]) for
//! the worker to do it at its next loop turn and answer.
//!
//! Pausing is a shared flag ([`Control::set_paused`]) each pooling worker
//! compares with its own copy once per loop turn; setting it wakes every
//! worker, so the change is taken up at once without a command.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, atomic::Ordering};
use std::time::{Duration, Instant};

use mio::Waker;

use super::Shared;

/// Commands queued per worker before `send` reports the worker as busy.
pub const QUEUE: usize = 16;
/// How long the admin thread waits for every worker's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest tenant name a kill accepts (tenant names come from user names,
/// which PostgreSQL limits to 63 bytes; the margin covers multi-variable keys).
pub const MAX_TENANT_LEN: usize = 256;

/// What a worker is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Close every session of this tenant (the `tenant_key` value).
    KillTenant(String),
}

/// A command and where its answer goes: a count (sessions closed for a kill).
pub type Envelope = (Command, SyncSender<u64>);

/// The admin side: every worker's queue and waker.
pub struct Control {
    workers: Vec<(SyncSender<Envelope>, Arc<Waker>)>,
    shared: Arc<Shared>,
}

/// A worker's side of its queue.
pub fn channel() -> (SyncSender<Envelope>, Receiver<Envelope>) {
    sync_channel(QUEUE)
}

impl Control {
    pub fn new(workers: Vec<(SyncSender<Envelope>, Arc<Waker>)>, shared: Arc<Shared>) -> Control {
        Control { workers, shared }
    }

    /// Sends `cmd` to every worker it can and sums their answers. Err when a
    /// queue was full, a worker is gone, or not every worker answered within
    /// `timeout`: the command may then have run on some workers (or still
    /// run), and the error says so with the sum of the answers received.
    pub fn broadcast(&self, cmd: &Command, timeout: Duration) -> Result<u64, String> {
        let (tx, rx) = sync_channel(self.workers.len().max(1));
        let mut sent = 0usize;
        let mut why = Vec::new();
        for (i, (q, waker)) in self.workers.iter().enumerate() {
            match q.try_send((cmd.clone(), tx.clone())) {
                Ok(()) => {
                    sent += 1;
                    let _ = waker.wake();
                }
                Err(TrySendError::Full(_)) => {
                    why.push(format!("worker {i} has {QUEUE} commands queued"));
                }
                Err(TrySendError::Disconnected(_)) => {
                    why.push(format!("worker {i} is not running"));
                }
            }
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        let mut total = 0u64;
        let mut answered = 0usize;
        while answered < sent {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(n) => {
                    total = total.saturating_add(n);
                    answered += 1;
                }
                Err(_) => {
                    why.push(format!(
                        "{} worker(s) did not answer within {} ms",
                        sent - answered,
                        timeout.as_millis()
                    ));
                    break;
                }
            }
        }
        if why.is_empty() {
            Ok(total)
        } else {
            Err(format!(
                "{} (partly done: {answered} of {} workers answered, count so far {total})",
                why.join("; "),
                self.workers.len()
            ))
        }
    }

    /// Pause (stop lending servers) or resume; true when the state changed.
    /// The flag is set at once and every worker is woken to take it up.
    pub fn set_paused(&self, paused: bool) -> bool {
        let was = self.shared.paused.swap(paused, Ordering::AcqRel);
        for (_, waker) in &self.workers {
            let _ = waker.wake();
        }
        was != paused
    }

    /// Closes every session of `tenant` on every worker; the number closed.
    pub fn kill_tenant(&self, tenant: &str) -> Result<u64, String> {
        if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
            return Err(format!("a tenant name has 1 to {MAX_TENANT_LEN} bytes"));
        }
        self.broadcast(&Command::KillTenant(tenant.to_string()), REPLY_TIMEOUT)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(Arc::new(
            crate::testing::conn_ops_configs().remove(0),
        )))
    }

    #[test]
    fn answers_are_summed_and_a_silent_worker_times_out() {
        let poll = Poll::new().unwrap();
        let w1 = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (q1, r1) = channel();
        let (q2, r2) = channel();
        let c = Control::new(vec![(q1, w1.clone()), (q2, w1)], shared());
        let workers: Vec<_> = [(r1, 3u64), (r2, 4u64)]
            .into_iter()
            .map(|(r, n)| {
                std::thread::spawn(move || {
                    let (cmd, reply) = r.recv().unwrap();
                    assert_eq!(cmd, Command::KillTenant("acme".into()));
                    reply.send(n).unwrap();
                    r
                })
            })
            .collect();
        assert_eq!(c.kill_tenant("acme").unwrap(), 7);
        let _receivers: Vec<_> = workers.into_iter().map(|h| h.join().unwrap()).collect();
        // Nobody answers now: the deadline holds.
        let e = c
            .broadcast(&Command::KillTenant("x".into()), Duration::from_millis(50))
            .unwrap_err();
        assert!(e.contains("answered"), "{e}");
        assert!(c.kill_tenant("").is_err());
        assert!(c.kill_tenant(&"x".repeat(MAX_TENANT_LEN + 1)).is_err());
    }

    #[test]
    fn a_full_queue_or_a_gone_worker_is_an_error() {
        let poll = Poll::new().unwrap();
        let w = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (q, r) = channel();
        let c = Control::new(vec![(q, w.clone())], shared());
        for _ in 0..QUEUE {
            let _ = c.broadcast(&Command::KillTenant("x".into()), Duration::ZERO);
        }
        assert!(
            c.broadcast(&Command::KillTenant("x".into()), Duration::ZERO)
                .unwrap_err()
                .contains("queued")
        );
        drop(r);
        let (q2, r2) = channel();
        drop(r2);
        let c2 = Control::new(vec![(q2, w)], shared());
        assert!(c2.kill_tenant("a").unwrap_err().contains("not running"));
        assert!(c2.set_paused(true), "the flag is set even so");
        assert!(!c2.set_paused(true));
    }
}
