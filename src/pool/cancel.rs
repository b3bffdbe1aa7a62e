//! Proxy-issued cancel keys for pooled clients.
//!
//! A pooled client never sees a backend's own BackendKeyData (its server
//! changes over time, and the key would let it cancel queries of whoever
//! holds that server later). It gets a key issued here; a CancelRequest with
//! that key is forwarded with the key of the backend serving the client at
//! that moment, and dropped when the client holds no server.
//!
//! Shared by all workers (a CancelRequest arrives on a new connection, on any
//! worker): one mutex around a map with one entry per live pooled client,
//! touched when a client starts and ends and when a server is lent or taken
//! back. The secret is compared in constant time.
//!
//! Proxy-issued pids have bit 30 set (`PROXY_PID_BIT`); Linux pids never do
//! (`pid_max` is at most 2^22), so a CancelRequest is recognisably ours or a
//! passthrough client's real backend key, which is forwarded verbatim.

use std::collections::HashMap;
use std::sync::Mutex;

/// Length of the secret part of a proxy-issued key (protocol 3.0: 4 bytes).
pub const SECRET_LEN: usize = 4;
/// Set in every proxy-issued pid, never in an operating-system pid.
pub const PROXY_PID_BIT: i32 = 1 << 30;

/// Whether `pid` is one the proxy issued.
pub fn is_proxy_pid(pid: i32) -> bool {
    pid & PROXY_PID_BIT != 0 && pid > 0
}

#[derive(Debug)]
struct Entry {
    secret: [u8; SECRET_LEN],
    /// The backend serving the client now: (pid, key).
    backend: Option<(i32, Vec<u8>)>,
}

/// pid → entry. pids are issued from a counter that skips live entries.
#[derive(Debug, Default)]
pub struct CancelMap {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    entries: HashMap<i32, Entry>,
}

impl CancelMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (every
        // operation is a single insert/remove/update), so poison is ignored.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Issues a key for a new pooled client; `secret` comes from the CSPRNG.
    /// Returns the pid (positive, unique among live entries).
    pub fn register(&self, secret: [u8; SECRET_LEN]) -> i32 {
        let mut g = self.lock();
        loop {
            g.next = g.next.wrapping_add(1) & 0x3fff_ffff;
            let Ok(low) = i32::try_from(g.next) else {
                continue;
            };
            let pid = low | PROXY_PID_BIT;
            if g.entries.contains_key(&pid) {
                continue;
            }
            g.entries.insert(
                pid,
                Entry {
                    secret,
                    backend: None,
                },
            );
            return pid;
        }
    }

    /// The client now holds the backend `key` (None: it holds no server).
    pub fn set_backend(&self, pid: i32, key: Option<(i32, Vec<u8>)>) {
        if let Some(e) = self.lock().entries.get_mut(&pid) {
            e.backend = key;
        }
    }

    /// The client is gone.
    pub fn unregister(&self, pid: i32) {
        self.lock().entries.remove(&pid);
    }

    /// The backend key to cancel for a CancelRequest carrying (`pid`, `secret`),
    /// if the key is live, the secret matches and the client holds a server.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<(i32, Vec<u8>)> {
        let g = self.lock();
        let e = g.entries.get(&pid)?;
        if !crate::auth::ct_eq(&e.secret, secret) {
            return None;
        }
        e.backend.clone()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_only_with_the_right_secret_while_serving() {
        let m = CancelMap::default();
        let a = m.register([1, 2, 3, 4]);
        let b = m.register([5, 6, 7, 8]);
        assert_ne!(a, b);
        assert!(a > 0 && b > 0);
        // Holds no server: nothing to cancel.
        assert_eq!(m.lookup(a, &[1, 2, 3, 4]), None);
        m.set_backend(a, Some((777, vec![9, 9, 9, 9])));
        assert_eq!(m.lookup(a, &[1, 2, 3, 4]), Some((777, vec![9, 9, 9, 9])));
        // Wrong secret, other client's secret, short secret.
        assert_eq!(m.lookup(a, &[1, 2, 3, 5]), None);
        assert_eq!(m.lookup(a, &[5, 6, 7, 8]), None);
        assert_eq!(m.lookup(a, &[1, 2, 3]), None);
        // The server went back to the pool.
        m.set_backend(a, None);
        assert_eq!(m.lookup(a, &[1, 2, 3, 4]), None);
        m.unregister(a);
        m.unregister(b);
        assert!(m.is_empty());
        assert_eq!(m.lookup(a, &[1, 2, 3, 4]), None);
    }

    #[test]
    fn pids_are_marked_skip_live_entries_and_stay_positive() {
        let m = CancelMap::default();
        m.lock().next = 0x3fff_fffe;
        let a = m.register([0; 4]);
        let b = m.register([0; 4]);
        assert_eq!(a, 0x7fff_ffff);
        assert_eq!(b, 0x4000_0000, "wraps to the low end of the marked range");
        m.lock().next = 0x3fff_fffe;
        let c = m.register([0; 4]);
        assert_eq!(c, 0x4000_0001, "skips the live entries");
        for p in [a, b, c] {
            assert!(is_proxy_pid(p));
        }
        assert!(!is_proxy_pid(4_194_304), "largest Linux pid_max");
        assert!(!is_proxy_pid(-1));
    }
}
