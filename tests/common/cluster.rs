//! A throw-away PostgreSQL cluster: initdb into a fresh temp dir, started as a
//! direct child (as the `postgres` OS user when we are root), stopped with
//! SIGINT (fast shutdown) and removed on `Drop`.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::pki::{CertKey, TestPki};
use super::util::{
    apply_process_group, free_port, fresh_temp_dir, is_root, postgres_ids, send_signal, tail,
    wait_bounded,
};

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) are required by the \
integration tests and were not found in $PGVPD_PG_BINDIR, `pg_config --bindir`, \
/usr/lib/postgresql/*/bin or $PATH. Install them: `apt-get install -y postgresql` \
(or run .ci/run, which does it).";

/// Options for [`Cluster::start`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// `max_connections` (default 400: the suite holds 300 sessions at once).
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            max_connections: 400,
            extra_conf: Vec::new(),
        }
    }
}

/// The directory holding initdb/postgres/psql. Panics (never skips) when the
/// server binaries are missing.
pub fn pg_bindir() -> PathBuf {
    fn has_server(dir: &Path) -> bool {
        dir.join("initdb").is_file() && dir.join("postgres").is_file()
    }
    if let Ok(d) = std::env::var("PGVPD_PG_BINDIR") {
        let d = PathBuf::from(d);
        assert!(
            has_server(&d),
            "PGVPD_PG_BINDIR={}: no initdb/postgres there. {INSTALL_HINT}",
            d.display()
        );
        return d;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return d;
        }
    }
    // Debian layout: newest major version first.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return d;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_server(&d) {
                return d;
            }
        }
    }
    panic!("{INSTALL_HINT}");
}

/// A client tool (psql, pgbench, pg_isready) from the server's bindir, else from PATH.
pub fn pg_tool(name: &str) -> PathBuf {
    let p = pg_bindir().join(name);
    if p.is_file() { p } else { PathBuf::from(name) }
}

/// Server-side TLS for [`Cluster::start_tls`].
#[derive(Clone, Debug)]
pub enum ServerTls {
    /// Generate a [`TestPki`] into `<cluster dir>/pki` (kept in [`Cluster::pki`])
    /// and serve its `server` certificate (`localhost`, `127.0.0.1`).
    TestPki,
    /// Serve these PEM files.
    Files(CertKey),
}

pub struct Cluster {
    /// The test PKI when started with [`ServerTls::TestPki`].
    pub pki: Option<TestPki>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The temp dir: holds `data/`, the unix socket, logs and proxy files.
    pub dir: PathBuf,
    pub data: PathBuf,
    pub bindir: PathBuf,
    pub log_path: PathBuf,
    pid: AtomicU32,
    child: Mutex<Option<Child>>,
    subdirs: AtomicU32,
}

impl Cluster {
    pub fn start(opts: ClusterOpts) -> Cluster {
        Self::start_inner(opts, None)
    }

    /// Like [`Cluster::start`] with `ssl = on`: the certificate and key are
    /// copied into the data dir as `server.crt`/`server.key` (owned by the
    /// server's OS user, key mode 0600) and named by `ssl_cert_file`/`ssl_key_file`.
    /// TCP clients may then use TLS or not (the `host` pg_hba lines match both).
    pub fn start_tls(opts: ClusterOpts, tls: ServerTls) -> Cluster {
        Self::start_inner(opts, Some(tls))
    }

    fn start_inner(mut opts: ClusterOpts, tls: Option<ServerTls>) -> Cluster {
        let bindir = pg_bindir();
        let dir = fresh_temp_dir("pgvpd-pg");
        let ids = if is_root() {
            Some(postgres_ids())
        } else {
            None
        };
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", dir.display()));
        }
        let data = dir.join("data");
        let log_path = dir.join("postgres.log");

        let mut cmd = Command::new(bindir.join("initdb"));
        cmd.args([
            "--no-sync",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
        ])
        .arg(&data)
        .current_dir(&dir)
        .stdin(Stdio::null());
        as_postgres(&mut cmd, ids);
        let out = cmd.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}/initdb: {e}. {INSTALL_HINT}",
                bindir.display()
            )
        });
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "initdb failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let hba = "\
# written by tests/common/cluster.rs
local all all                  trust
host  all postgres    127.0.0.1/32 trust
host  all md5_user    127.0.0.1/32 md5
host  all pw_user     127.0.0.1/32 password
host  all trust_user  127.0.0.1/32 trust
# cleartext so the raw test client (no SCRAM) can see the proxy's 42501 refusal
host  all bypass_user 127.0.0.1/32 password
host  all all         127.0.0.1/32 scram-sha-256
";
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");

        let mut pki = None;
        if let Some(tls) = tls {
            let files = match tls {
                ServerTls::Files(ck) => ck,
                ServerTls::TestPki => {
                    let p = TestPki::generate(&dir.join("pki"));
                    let ck = p.server.clone();
                    pki = Some(p);
                    ck
                }
            };
            install_cert(&data, &files, "server", ids);
            opts.extra_conf.extend([
                "ssl = on".to_string(),
                "ssl_cert_file = 'server.crt'".to_string(),
                "ssl_key_file = 'server.key'".to_string(),
            ]);
        }

        // A port picked by bind(:0) can be taken by someone else before the
        // postmaster binds it: retry a few times on "could not bind".
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let mut conf = format!(
                "\n# tests/common/cluster.rs\nfsync = off\nsynchronous_commit = off\n\
                 full_page_writes = off\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
                 unix_socket_directories = '{}'\nmax_connections = {}\n",
                dir.display(),
                opts.max_connections
            );
            for l in &opts.extra_conf {
                conf.push_str(l);
                conf.push('\n');
            }
            fs::write(data.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");

            let log = File::create(&log_path).expect("create postgres.log");
            let mut cmd = Command::new(bindir.join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log);
            as_postgres(&mut cmd, ids);
            apply_process_group(&mut cmd);
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {}/postgres: {e}. {INSTALL_HINT}",
                    bindir.display()
                )
            });
            match wait_ready(&mut child, &dir, port, Duration::from_secs(30)) {
                Ok(()) => {
                    return Cluster {
                        pki,
                        port,
                        dir,
                        data,
                        bindir,
                        log_path,
                        pid: AtomicU32::new(child.id()),
                        child: Mutex::new(Some(child)),
                        subdirs: AtomicU32::new(0),
                    };
                }
                Err(why) => {
                    stop_child(child);
                    let log = tail(&log_path, 40);
                    if attempt < 3 && log.contains("could not bind") {
                        continue;
                    }
                    if std::env::var_os("PGVPD_KEEP_TMP").is_none() {
                        let _ = fs::remove_dir_all(&dir);
                    }
                    panic!("postgres did not start: {why}\n--- postgres.log (tail) ---\n{log}");
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Stops the postmaster (fast shutdown: every backend is terminated) and
    /// starts it again on the same data directory and port; waits (≤ 30 s)
    /// until it accepts connections. The log continues in `postgres.log`.
    pub fn restart(&self) {
        self.stop_keep_dir();
        let ids = if is_root() {
            Some(postgres_ids())
        } else {
            None
        };
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("open postgres.log");
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        as_postgres(&mut cmd, ids);
        apply_process_group(&mut cmd);
        let mut child = cmd.spawn().expect("restart postgres");
        if let Err(why) = wait_ready(&mut child, &self.dir, self.port, Duration::from_secs(30)) {
            stop_child(child);
            panic!(
                "postgres did not restart: {why}\n--- postgres.log (tail) ---\n{}",
                self.log_tail(40)
            );
        }
        self.pid.store(child.id(), Ordering::SeqCst);
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// A new empty subdirectory of the cluster's temp dir (for proxy files).
    pub fn subdir(&self, prefix: &str) -> PathBuf {
        let n = self.subdirs.fetch_add(1, Ordering::SeqCst);
        let d = self.dir.join(format!("{prefix}-{n}"));
        fs::create_dir_all(&d).expect("create subdir");
        d
    }

    /// Tail of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    fn psql_cmd(&self) -> Command {
        let mut cmd = Command::new(pg_tool("psql"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .stdin(Stdio::null());
        cmd
    }

    fn run_psql(&self, mut cmd: Command, what: &str) -> String {
        let out = cmd.output().expect("run psql");
        if !out.status.success() {
            panic!(
                "superuser psql failed ({}) for {what}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Runs `sql` as superuser over the unix socket; returns trimmed stdout
    /// (`-A -t`: `|`-separated fields, one row per line). Panics with stderr.
    pub fn sql(&self, sql: &str) -> String {
        let mut cmd = self.psql_cmd();
        cmd.arg("-c").arg(sql);
        self.run_psql(cmd, sql)
    }

    /// Like [`Cluster::sql`], returning stderr (NOTICEs) as well.
    pub fn sql_with_notices(&self, sql: &str) -> (String, String) {
        let mut cmd = self.psql_cmd();
        cmd.arg("-c").arg(sql);
        let out = cmd.output().expect("run psql");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "superuser psql failed for {sql}:\n{stderr}"
        );
        (
            String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            stderr,
        )
    }

    /// Like [`Cluster::sql`] but returns `Err(stderr)` instead of panicking.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_cmd();
        cmd.arg("-c").arg(sql);
        let out = cmd.output().expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs a SQL file as superuser (`psql -f`).
    pub fn sql_file(&self, path: &Path) -> String {
        let mut cmd = self.psql_cmd();
        cmd.arg("-f").arg(path);
        self.run_psql(cmd, &path.display().to_string())
    }

    /// `ALTER SYSTEM SET name = value` (value is SQL: quote strings yourself),
    /// `pg_reload_conf()`, then waits (≤ 10 s) until a new session's
    /// `SHOW name` is `shown`: new backends fork from a postmaster that has
    /// re-read the configuration (and, for ssl settings, its TLS context).
    pub fn set_and_reload(&self, name: &str, value: &str, shown: &str) {
        self.sql(&format!("ALTER SYSTEM SET {name} = {value}"));
        self.sql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.sql(&format!("SHOW {name}"));
            if now == shown {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is still {now:?} 10 s after reload (wanted {shown:?})\n--- postgres.log ---\n{}",
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Turns server TLS on or off at runtime (`ssl` is reloadable).
    pub fn set_ssl(&self, on: bool) {
        let v = if on { "on" } else { "off" };
        self.set_and_reload("ssl", v, v);
    }

    /// Serves another certificate from now on: copies it into the data dir as
    /// `NAME.crt`/`NAME.key` and points `ssl_cert_file`/`ssl_key_file` at them
    /// (reload). `set_server_cert(&pki.server, "server")` restores the default.
    pub fn set_server_cert(&self, files: &CertKey, name: &str) {
        let ids = if is_root() {
            Some(postgres_ids())
        } else {
            None
        };
        install_cert(&self.data, files, name, ids);
        // Key first: the TLS context is rebuilt when the cert changes.
        self.sql(&format!("ALTER SYSTEM SET ssl_key_file = '{name}.key'"));
        self.set_and_reload(
            "ssl_cert_file",
            &format!("'{name}.crt'"),
            &format!("{name}.crt"),
        );
    }

    /// Stops the postmaster: SIGINT (fast shutdown), SIGQUIT after 10 s,
    /// SIGKILL after 5 more. Idempotent; callable through a shared reference.
    pub fn stop_keep_dir(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(child) = child {
            stop_child(child);
        }
    }

    /// Stops the server and removes the temp dir (unless PGVPD_KEEP_TMP is set).
    pub fn stop(&self) {
        self.stop_keep_dir();
        if std::env::var_os("PGVPD_KEEP_TMP").is_some() {
            eprintln!("PGVPD_KEEP_TMP: keeping {}", self.dir.display());
        } else if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies cert and key into the data dir as `NAME.crt`/`NAME.key`, owned by
/// the server's OS user, key mode 0600 (PostgreSQL refuses a group/world-readable key).
fn install_cert(data: &Path, files: &CertKey, name: &str, ids: Option<(u32, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let crt = data.join(format!("{name}.crt"));
    let key = data.join(format!("{name}.key"));
    for (from, to, mode) in [(&files.cert, &crt, 0o644), (&files.key, &key, 0o600)] {
        fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
        fs::set_permissions(to, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(to, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", to.display()));
        }
    }
}

fn as_postgres(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}

/// SIGINT (fast shutdown), SIGQUIT after 10 s, SIGKILL after 5 more.
fn stop_child(mut child: Child) {
    send_signal(child.id(), libc::SIGINT);
    if wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
        eprintln!(
            "postgres (pid {}) ignored SIGINT for 10 s: SIGQUIT",
            child.id()
        );
        send_signal(child.id(), libc::SIGQUIT);
        if wait_bounded(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_ready(child: &mut Child, dir: &Path, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("postmaster exited with {st}"));
        }
        let ok = Command::new(pg_tool("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not accepting connections after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
