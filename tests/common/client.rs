//! The real PostgreSQL clients (psql, pgbench) run with a hard timeout.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::pg_tool;
use super::util::apply_process_group;

/// Outcome of a client tool run.
#[derive(Clone, Debug)]
pub struct PsqlOut {
    /// Exit code; -1 when killed by a signal or by the timeout.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl PsqlOut {
    pub fn success(&self) -> bool {
        self.status == 0 && !self.timed_out
    }
    /// stdout with trailing whitespace removed.
    pub fn out(&self) -> &str {
        self.stdout.trim_end()
    }
    /// Panics with the whole output unless the run succeeded; returns trimmed stdout.
    pub fn expect_ok(&self, what: &str) -> String {
        assert!(self.success(), "{what}: expected success, got {self:#?}");
        self.out().to_string()
    }
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `tool` (psql, pgbench, …, from the PostgreSQL bindir) with `args`, no
/// inherited `PG*` variables, the given env, stdin closed, killed after `timeout`.
pub fn run_tool(tool: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> PsqlOut {
    let mut cmd = Command::new(pg_tool(tool));
    cmd.args(args);
    run_command(cmd, tool, env, timeout)
}

/// Runs `cmd` with no inherited `PG*` variables, the given env, stdin closed,
/// stdout/stderr captured, killed after `timeout`.
pub fn run_command(
    mut cmd: Command,
    tool: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> PsqlOut {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    apply_process_group(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let mut so = child.stdout.take().expect("stdout pipe");
    let mut se = child.stderr.take().expect("stderr pipe");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code().unwrap_or(-1),
            Ok(None) => {}
            Err(e) => panic!("wait for {tool}: {e}"),
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).to_string();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).to_string();
    PsqlOut {
        status,
        stdout,
        stderr,
        timed_out,
    }
}

fn conn_env<'a>(
    port: &'a str,
    user: &'a str,
    password: Option<&'a str>,
    db: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port),
        ("PGUSER", user),
        ("PGDATABASE", db),
        ("PGCONNECT_TIMEOUT", "10"),
        ("PGSSLMODE", "disable"),
        ("PGGSSENCMODE", "disable"),
    ];
    if let Some(pw) = password {
        env.push(("PGPASSWORD", pw));
    }
    env
}

/// `psql -X -A -t -v ON_ERROR_STOP=1 -c SQL` over TCP 127.0.0.1:`port`.
pub fn psql(port: u16, user: &str, password: Option<&str>, db: &str, sql: &str) -> PsqlOut {
    psql_env(port, user, password, db, sql, &[])
}

/// [`psql`] with extra environment (e.g. `PGAPPNAME`).
pub fn psql_env(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
    extra_env: &[(&str, &str)],
) -> PsqlOut {
    let p = port.to_string();
    let mut env = conn_env(&p, user, password, db);
    env.extend_from_slice(extra_env);
    run_tool(
        "psql",
        &["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        &env,
        TOOL_TIMEOUT,
    )
}

/// One `key='value'` pair of a libpq connection string (quotes and
/// backslashes escaped).
pub fn conninfo_kv(key: &str, value: &str) -> String {
    format!(
        "{key}='{}'",
        value.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// A libpq connection string for 127.0.0.1:`port` with `host=localhost`
/// (the name verify-full checks) and `hostaddr=127.0.0.1` (where it connects),
/// `sslmode`, optional `sslrootcert`, `gssencmode=disable`, `connect_timeout=10`,
/// then `extra` (more `key=value` pairs, e.g. `"channel_binding=require"`).
pub fn tls_conninfo(
    port: u16,
    user: &str,
    db: &str,
    sslmode: &str,
    sslrootcert: Option<&Path>,
    extra: &str,
) -> String {
    let mut parts = vec![
        "host=localhost".to_string(),
        "hostaddr=127.0.0.1".to_string(),
        format!("port={port}"),
        conninfo_kv("user", user),
        conninfo_kv("dbname", db),
        conninfo_kv("sslmode", sslmode),
        "gssencmode=disable".to_string(),
        "connect_timeout=10".to_string(),
    ];
    if let Some(ca) = sslrootcert {
        parts.push(conninfo_kv("sslrootcert", &ca.to_string_lossy()));
    }
    if !extra.trim().is_empty() {
        parts.push(extra.trim().to_string());
    }
    parts.join(" ")
}

/// `psql -X -A -t -v ON_ERROR_STOP=1 -c SQL` with a connection string (see
/// [`tls_conninfo`]): `sslmode` as libpq spells it (`disable`, `require`,
/// `verify-ca`, `verify-full`, …), `sslrootcert` the CA file to trust,
/// `extra_conninfo` more `key=value` pairs. The password goes in `PGPASSWORD`.
/// `sql` may be a single backslash command such as `\conninfo`.
#[allow(clippy::too_many_arguments)]
pub fn psql_tls(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
    sql: &str,
    sslmode: &str,
    sslrootcert: Option<&Path>,
    extra_conninfo: &str,
) -> PsqlOut {
    let conninfo = tls_conninfo(port, user, db, sslmode, sslrootcert, extra_conninfo);
    let mut env: Vec<(&str, &str)> = Vec::new();
    if let Some(pw) = password {
        env.push(("PGPASSWORD", pw));
    }
    run_tool(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
            "-c",
            sql,
        ],
        &env,
        TOOL_TIMEOUT,
    )
}

/// `pgbench ARGS` over TCP 127.0.0.1:`port` (connection through env vars).
pub fn pgbench(port: u16, user: &str, password: Option<&str>, db: &str, args: &[&str]) -> PsqlOut {
    let p = port.to_string();
    let env = conn_env(&p, user, password, db);
    run_tool("pgbench", args, &env, Duration::from_secs(120))
}
