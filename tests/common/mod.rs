//! Shared test infrastructure for the integration suite, the demo and the bench.
//!
//! - [`Cluster`]: a throw-away PostgreSQL (initdb into a temp dir, started as a
//!   direct child, stopped and removed on `Drop`).
//! - [`Proxy`]: the `pgvpd` binary started against a cluster with a generated
//!   config file; its stderr goes to a log file printed when a case fails.
//! - [`psql`], [`pgbench`]: the real PostgreSQL clients, with a hard timeout.
//! - [`RawConn`]: a tiny blocking wire-protocol client, independent of the
//!   crate's own codec (it is the "real client" check of that codec).
//! - [`TestPki`]: CA, server and wrong-name certificates made with `openssl`;
//!   [`Cluster::start_tls`] serves TLS with them; [`psql_tls`] and
//!   [`psycopg_query`] (psycopg with libpq 18, venv in `target/pyvenv`) are
//!   TLS-capable real clients; [`RawConn::start_tls`] speaks TLS via rustls.
//! - [`fixtures`]: loads `sql/setup.sql` and `tests/fixtures.sql`.
//! - [`runner`]: the `harness = false` runner (`test NAME ... ok|FAILED`,
//!   `N passed, N failed`, per-case watchdog, cluster stopped on every exit).
//!
//! Every target compiles this module; each uses a different subset.
#![allow(dead_code, unused_imports)]

mod client;
mod cluster;
pub mod fixtures;
mod pki;
pub mod pooled;
mod proxy;
mod pyclient;
mod raw;
pub mod runner;
mod util;

pub use client::{
    PsqlOut, conninfo_kv, pgbench, psql, psql_env, psql_tls, run_command, run_tool, tls_conninfo,
};
pub use cluster::{Cluster, ClusterOpts, ServerTls, pg_bindir, pg_tool};
pub use pki::{CertKey, TestPki};
pub use proxy::{Proxy, kill_leftover_proxies, proxy_binary};
pub use pyclient::{
    asyncpg_python, ensure_psycopg_venv, node_pg_dir, prometheus_python, psycopg_python,
    psycopg_query, pyvenv_dir,
};
pub use raw::{
    ErrorInfo, Outcome, RawConn, Rows, cancel_request_bytes, client_hello_bytes,
    gssenc_request_bytes, parse_error, password_bytes, query_bytes, ssl_request_bytes,
    startup_bytes, terminate_bytes, tls_client_config,
};
pub use runner::Ctx;
pub use util::{XorShift, free_port, isolate_children, repo_root, tail};
// Process helpers the bench uses to run PgBouncer next to the cluster.
pub(crate) use util::{clock_ticks, is_root, postgres_ids, send_signal, wait_bounded};
