//! Small helpers: ports, temp dirs, log tails, signals, a seeded PRNG.
#![allow(unsafe_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

static OWN_PROCESS_GROUP: AtomicBool = AtomicBool::new(false);
static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Children started after this call (postgres, pgvpd, psql) get their own
/// process group, so a terminal Ctrl-C reaches only the calling program,
/// which then stops them in order (used by the demo). Without it, Ctrl-C on
/// a test run also reaches the children and nothing is left running.
pub fn isolate_children() {
    OWN_PROCESS_GROUP.store(true, Ordering::SeqCst);
}

pub(crate) fn apply_process_group(cmd: &mut Command) {
    if OWN_PROCESS_GROUP.load(Ordering::SeqCst) {
        cmd.process_group(0);
    }
}

/// The repository root (where `Cargo.toml`, `sql/` and `tests/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to :0, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The last `n` lines of a file (empty string if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// A fresh, unique directory under `std::env::temp_dir()`.
pub(crate) fn fresh_temp_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user, from /etc/passwd.
pub(crate) fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3
            && f[0] == "postgres"
            && let (Ok(u), Ok(g)) = (f[2].parse(), f[3].parse())
        {
            return (u, g);
        }
    }
    panic!(
        "running as root, but there is no `postgres` OS user to run initdb/postgres as \
         (initdb refuses root). Install the `postgresql` package (it creates the user) \
         or run the tests as an ordinary user."
    );
}

/// Sends `sig` to `pid` (errors ignored: the process may be gone already).
pub(crate) fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a concrete pid (never 0 or -1) only sends a signal.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `child` until it exits or `limit` elapses.
pub(crate) fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Clock ticks per second for /proc/PID/stat times.
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// xorshift64*: a tiny seeded PRNG for garbage inputs and property tests
/// (no `rand` dependency). Print the seed when a check fails.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}
