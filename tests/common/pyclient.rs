//! psycopg 3 (binary wheel, bundled libpq 18) as a real client: the only
//! client here whose libpq can do `sslnegotiation=direct` (PostgreSQL 17+).
//!
//! The venv lives in `target/pyvenv` (or `$CARGO_TARGET_DIR/pyvenv`) and is
//! created once (`python3 -m venv`, `pip install "psycopg[binary]"`, a few
//! seconds with a warm pip cache). When that is impossible the calling case
//! FAILS with the reason; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::client::{PsqlOut, run_command};
use super::util::repo_root;

/// libpq 17 is the first with `sslnegotiation=direct`.
const MIN_LIBPQ: u32 = 170_000;

static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The venv directory (`target/pyvenv`).
pub fn pyvenv_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("pyvenv"),
        None => repo_root().join("target/pyvenv"),
    }
}

fn run(cmd: &mut Command, what: &str, timeout: Duration) -> Result<PsqlOut, String> {
    let name = what.to_string();
    let cmd = std::mem::replace(cmd, Command::new("true"));
    let out = run_command(cmd, &name, &[], timeout);
    if out.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed (exit {}, timed out: {}):\n{}{}",
            out.status, out.timed_out, out.stdout, out.stderr
        ))
    }
}

fn check_psycopg(python: &PathBuf) -> Result<String, String> {
    let out = run(
        Command::new(python).args([
            "-c",
            "import psycopg; print(psycopg.__version__, psycopg.pq.__impl__, psycopg.pq.version())",
        ]),
        "import psycopg",
        Duration::from_secs(60),
    )?;
    let line = out.out().to_string();
    let libpq: u32 = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if libpq < MIN_LIBPQ {
        return Err(format!(
            "psycopg reports `{line}`: its libpq is older than 17 (no sslnegotiation=direct)"
        ));
    }
    Ok(line)
}

fn create_venv() -> Result<PathBuf, String> {
    let dir = pyvenv_dir();
    let python = dir.join("bin/python");
    if python.is_file()
        && let Ok(v) = check_psycopg(&python)
    {
        eprintln!("psycopg venv {}: ready ({v})", dir.display());
        return Ok(python);
    }
    let t0 = Instant::now();
    eprintln!("psycopg venv: python3 -m venv {}", dir.display());
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&dir),
        "python3 -m venv (needs python3 with the venv module: apt-get install -y python3-venv)",
        Duration::from_secs(120),
    )?;
    pip_install(&python, "psycopg[binary]")?;
    let v = check_psycopg(&python)?;
    eprintln!(
        "psycopg venv: installed {v} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(python)
}

/// `python -m pip install package` from PyPI (5 min limit).
fn pip_install(python: &Path, package: &str) -> Result<(), String> {
    eprintln!(
        "venv: {} -m pip install \"{package}\" (from PyPI)",
        python.display()
    );
    run(
        Command::new(python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            package,
        ]),
        &format!("pip install \"{package}\" (needs PyPI access)"),
        Duration::from_secs(300),
    )
    .map(|_| ())
}

/// Creates the venv once per process (later calls return the cached result).
/// Err carries the reason it could not be made.
pub fn ensure_psycopg_venv() -> Result<PathBuf, String> {
    VENV.get_or_init(create_venv).clone()
}

/// The venv's python, panicking (the case FAILS) with the reason when the
/// venv with psycopg cannot be made.
pub fn psycopg_python() -> PathBuf {
    ensure_psycopg_venv().unwrap_or_else(|e| {
        panic!("psycopg (bundled libpq 18) is required by this test and could not be set up in {}: {e}", pyvenv_dir().display())
    })
}

const SNIPPET: &str = r#"
import sys
import psycopg
conninfo, sql = sys.argv[1], sys.argv[2]
with psycopg.connect(conninfo, autocommit=True) as conn:
    # libpq's own exec: values in PostgreSQL's text form ('t', not True).
    res = conn.pgconn.exec_(sql.encode())
    if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
        sys.exit("query failed: %s" % (res.error_message or b"").decode(errors="replace"))
    v = res.get_value(0, 0) if res.ntuples else None
    print("" if v is None else v.decode())
    print("libpq=%d ssl_in_use=%s" % (psycopg.pq.version(), conn.pgconn.ssl_in_use), file=sys.stderr)
"#;

/// Connects with psycopg using `conninfo` (a libpq connection string, e.g.
/// from `tls_conninfo(.., "sslnegotiation=direct")`), runs `sql` and prints
/// the first column of the first row on stdout (PostgreSQL text form, e.g. `t`); stderr ends with
/// `libpq=NNNNNN ssl_in_use=True|False` on success, a traceback otherwise.
/// The password goes in `PGPASSWORD`; 60 s timeout.
pub fn psycopg_query(conninfo: &str, password: Option<&str>, sql: &str) -> PsqlOut {
    let python = psycopg_python();
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(SNIPPET).arg(conninfo).arg(sql);
    let mut env: Vec<(&str, &str)> = Vec::new();
    if let Some(pw) = password {
        env.push(("PGPASSWORD", pw));
    }
    run_command(cmd, "python (psycopg)", &env, Duration::from_secs(60))
}

/// The venv's python with asyncpg installed too (`pip install asyncpg`
/// once); panics (the case FAILS) with the reason when impossible.
pub fn asyncpg_python() -> PathBuf {
    let python = psycopg_python();
    let has = run(
        Command::new(&python).args(["-c", "import asyncpg"]),
        "import asyncpg",
        Duration::from_secs(60),
    );
    if has.is_err()
        && let Err(e) = pip_install(&python, "asyncpg")
    {
        panic!("asyncpg is required by this test and could not be installed: {e}");
    }
    python
}

/// The venv's python with `prometheus_client` installed too (`pip install
/// prometheus_client` once; the admin suite parses `/metrics` with it);
/// panics (the case FAILS) with the reason when impossible.
pub fn prometheus_python() -> PathBuf {
    let python = psycopg_python();
    let has = run(
        Command::new(&python).args(["-c", "import prometheus_client.parser"]),
        "import prometheus_client",
        Duration::from_secs(60),
    );
    if has.is_err() {
        eprintln!(
            "prometheus_client: {} -m pip install prometheus_client (from PyPI)",
            python.display()
        );
        if let Err(e) = run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "prometheus_client",
            ]),
            "pip install prometheus_client (needs PyPI access)",
            Duration::from_secs(300),
        ) {
            panic!("prometheus_client is required by this test and could not be installed: {e}");
        }
    }
    python
}

/// A directory with node-postgres (`npm install pg` once, in
/// `target/nodeclient`); panics (the case FAILS) with the reason when
/// node/npm or the registry is missing.
pub fn node_pg_dir() -> PathBuf {
    let dir = pyvenv_dir()
        .parent()
        .map(|p| p.join("nodeclient"))
        .unwrap_or_else(|| PathBuf::from("target/nodeclient"));
    if dir.join("node_modules/pg/package.json").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("create target/nodeclient");
    eprintln!("node-postgres: npm install pg in {}", dir.display());
    if let Err(e) = run(
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "pg"])
            .current_dir(&dir),
        "npm install pg (needs node, npm and the npm registry: apt-get install -y nodejs npm)",
        Duration::from_secs(300),
    ) {
        panic!("node-postgres is required by this test and could not be installed: {e}");
    }
    dir
}
