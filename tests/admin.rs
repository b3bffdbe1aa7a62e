//! The admin API end to end (issue 7, read-only part): pgvpd 1.0's checks
//! 4.1–4.4, `/metrics` through a real Prometheus parser (Python's
//! `prometheus_client`), `/status` through Python's `json`, the bearer
//! token, the bind address, `/health` with the upstream down, the HTTP
//! limits (413, 431, 404, 405, 408) and slow clients. Same runner and
//! cluster as `integration`.
//!
//! `cargo test --test admin` runs all cases; `-- token` only those whose
//! name contains "token".

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::pooled::{pooled_login, pooled_proxy};
use common::runner::{self, Case};
use common::{
    Ctx, ErrorInfo, Outcome, Proxy, RawConn, free_port, prometheus_python, run_command, send_signal,
};
use pgvpd::admin::PoolBucket;
use pgvpd::admin::render::{self, View};
use pgvpd::stats::Stats;

const CASES: &[Case] = &[
    ("admin_v1_checks", admin_v1_checks),
    ("admin_metrics_real_parser", admin_metrics_real_parser),
    ("admin_status_json", admin_status_json),
    ("admin_escaping_real_parsers", admin_escaping_real_parsers),
    ("admin_resolver_cache_metrics", admin_resolver_cache_metrics),
    ("admin_token", admin_token),
    ("admin_bind_address", admin_bind_address),
    ("admin_health_upstream_down", admin_health_upstream_down),
    ("admin_http_limits", admin_http_limits),
    ("admin_slow_clients", admin_slow_clients),
    ("admin_pool_bucket_labels", admin_pool_bucket_labels),
    ("admin_capped_waiters_leave", admin_capped_waiters_leave),
    ("admin_post_needs_token", admin_post_needs_token),
    ("reload_tenant_deny", reload_tenant_deny),
    (
        "reload_broken_config_changes_nothing",
        reload_broken_config_changes_nothing,
    ),
    ("reload_query_timeout", reload_query_timeout),
    ("admin_kill_tenant", admin_kill_tenant),
    ("admin_pause_resume", admin_pause_resume),
];

fn main() {
    runner::run(CASES);
}

// ---------------------------------------------------------------- HTTP client

/// A response: status, headers (names lower-cased), body.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the unlabelled sample `name` in a /metrics body.
    fn sample(&self, name: &str) -> u64 {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{}", self.body))
    }
}

/// Sends `raw`, reads until the server closes (it always does), parses.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Http {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to admin API {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw).expect("send request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .unwrap_or_else(|e| panic!("read response from {addr}: {e}"));
    parse_response(&resp)
}

fn parse_response(resp: &[u8]) -> Http {
    let text = String::from_utf8_lossy(resp).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

fn request(method: &str, path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").into_bytes()
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn get(port: u16, path: &str) -> Http {
    exchange(local(port), &request("GET", path, None))
}

/// Waits (≤ 10 s) until the admin API accepts connections: the proxy's main
/// port listens before the admin thread starts.
fn wait_admin(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "admin API {addr} not listening after 10 s"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A pooled proxy with the admin API on a free port; returns (proxy, admin port).
fn pooled_admin(ctx: &Ctx, extra: &str) -> (Proxy, u16) {
    let port = free_port();
    let p = pooled_proxy(ctx, "session", &format!("admin_port = {port}\n{extra}"));
    wait_admin(local(port));
    (p, port)
}

/// One pooled tenant session (`SELECT 1`).
fn tenant_session(p: &Proxy, tenant: &str) {
    let mut c = pooled_login(p, &format!("app_user.{tenant}"));
    assert_eq!(c.query_one("SELECT 1").as_deref(), Some("1"));
}

// ---------------------------------------------------------- Python parsers

/// Parses a /metrics body with `prometheus_client`; fails on a parse error,
/// a family seen twice (non-contiguous samples) or an untyped family.
/// Returns one line per sample: `name<TAB>type<TAB>labels as sorted JSON<TAB>value`.
const PROM_CHECK: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
seen = set()
for fam in text_string_to_metric_families(text):
    if fam.name in seen:
        sys.exit("family %s appears twice (samples not contiguous or HELP/TYPE repeated)" % fam.name)
    seen.add(fam.name)
    if fam.type not in ("counter", "gauge", "histogram"):
        sys.exit("family %s has type %s" % (fam.name, fam.type))
    if not fam.documentation:
        sys.exit("family %s has no HELP" % fam.name)
    if fam.type == "histogram":
        # Buckets cumulative and ending with +Inf = _count, per series.
        series = {}
        for s in fam.samples:
            key = json.dumps({k: v for k, v in s.labels.items() if k != "le"}, sort_keys=True)
            series.setdefault(key, []).append(s)
        for key, ss in series.items():
            b = [s for s in ss if s.name.endswith("_bucket")]
            c = [s.value for s in ss if s.name.endswith("_count")]
            if not b or b[-1].labels["le"] != "+Inf" or len(c) != 1 or b[-1].value != c[0] \
                    or any(x.value > y.value for x, y in zip(b, b[1:])):
                sys.exit("histogram %s %s is not consistent" % (fam.name, key))
    for s in fam.samples:
        print("%s\t%s\t%s\t%d" % (s.name, fam.type, json.dumps(s.labels, sort_keys=True), s.value))
print("families=%d" % len(seen))
"#;

fn python_on_file(script: &str, what: &str, content: &str, dir: &Path, args: &[&str]) -> String {
    let python = prometheus_python();
    let path = dir.join(format!("{what}.txt"));
    std::fs::write(&path, content).expect("write body file");
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script).arg(&path).args(args);
    let out = run_command(cmd, "python", &[], Duration::from_secs(60));
    assert!(
        out.success(),
        "python rejected the {what}: {}\n{}\n--- {what} ---\n{content}",
        out.stderr,
        out.stdout
    );
    out.stdout
}

/// Samples of a /metrics body, parsed by prometheus_client: (name, type, labels JSON, value).
fn prom_parse(ctx: &Ctx, text: &str) -> Vec<(String, String, String, u64)> {
    let dir = ctx.cluster.subdir("admin-prom");
    let out = python_on_file(PROM_CHECK, "metrics", text, &dir, &[]);
    out.lines()
        .filter(|l| !l.starts_with("families="))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn prom_value(samples: &[(String, String, String, u64)], name: &str, labels: &str) -> u64 {
    samples
        .iter()
        .find(|s| s.0 == name && s.2 == labels)
        .map(|s| s.3)
        .unwrap_or_else(|| panic!("no sample {name} {labels} in {samples:#?}"))
}

/// Loads a /status body with Python's `json`, checks its shape, prints
/// `key=value` lines of scalars and the buckets' databases and roles as JSON.
const STATUS_CHECK: &str = r#"
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
def need(obj, key, typ):
    if not isinstance(obj.get(key), typ) or (typ is int and isinstance(obj.get(key), bool)):
        sys.exit("%r: %s is %r, not %s" % (list(obj), key, obj.get(key), typ.__name__))
    return obj[key]
need(d, "version", str)
for k in ("uptime_seconds", "workers", "connections_total", "connections_active"):
    print("%s=%d" % (k, need(d, k, int)))
pool = need(d, "pool", dict)
for k in ("checkouts", "reuses", "creates", "checkins", "discards", "timeouts"):
    print("pool.%s=%d" % (k, need(pool, k, int)))
for b in need(pool, "buckets", list):
    for k in ("total", "idle", "waiting"):
        need(b, k, int)
    print("bucket=" + json.dumps([need(b, "database", str), need(b, "role", str)]))
res = need(d, "resolvers", dict)
for k in ("cache_hits", "cache_misses", "cache_size"):
    print("resolvers.%s=%d" % (k, need(res, k, int)))
need(res, "resolvers", list)
ten = need(d, "tenant", dict)
for k in ("rejected_deny", "rejected_limit", "rejected_rate", "timeouts"):
    print("tenant.%s=%d" % (k, need(ten, k, int)))
tens = need(d, "tenants", dict)
print("tenants.tracked=%d" % need(tens, "tracked", int))
for t in need(tens, "top", list):
    for k in ("sessions", "sessions_total", "rejected"):
        need(t, k, int)
    print("tenant=" + json.dumps([need(t, "tenant", str), t["sessions_total"]]))
for k, v in need(d, "counters", dict).items():
    if not isinstance(v, int):
        sys.exit("counter %s is %r" % (k, v))
    print("counters.%s=%d" % (k, v))
print("version=" + d["version"])
"#;

fn status_parse(ctx: &Ctx, text: &str) -> Vec<String> {
    let dir = ctx.cluster.subdir("admin-status");
    python_on_file(STATUS_CHECK, "status", text, &dir, &[])
        .lines()
        .map(str::to_string)
        .collect()
}

fn status_value(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
}

// -------------------------------------------------------------------- cases

/// pgvpd 1.0's checks 4.1–4.4 (behaviour §10.1): pool mode with the admin API.
fn admin_v1_checks(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "");
    // 4.1
    let h = get(port, "/health");
    assert_eq!(h.status, 200, "{h:?}");
    assert!(h.body.contains("\"status\":\"ok\""), "{h:?}");
    assert_eq!(h.header("content-type"), Some("application/json"));
    // 4.2
    let m = get(port, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.body.contains("pgvpd_connections_total"), "{}", m.body);
    assert!(m.body.contains("pgvpd_pool_checkouts_total"), "{}", m.body);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // 4.3
    let s = get(port, "/status");
    assert_eq!(s.status, 200);
    assert!(s.body.contains("\"connections_total\""), "{}", s.body);
    assert!(s.body.contains("\"pool\""), "{}", s.body);
    // 4.4: one tenant session, then pgvpd_connections_total >= 1.
    tenant_session(&p, "tenant_a");
    let m = get(port, "/metrics");
    assert!(m.sample("pgvpd_connections_total") >= 1, "{}", m.body);
    assert!(m.sample("pgvpd_pool_checkouts_total") >= 1, "{}", m.body);
    assert!(m.sample("pgvpd_sessions_started_total") >= 1, "{}", m.body);
    p.assert_alive();
}

/// /metrics parsed by prometheus_client: every family once, typed, with
/// HELP; values as the proxy counted them.
fn admin_metrics_real_parser(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "tenant_deny = blocked_tenant");
    tenant_session(&p, "tenant_a");
    tenant_session(&p, "tenant_b");
    // A tenant id with a quote, a backslash and a newline.
    let evil = "q\"u\\o\nte";
    let mut held = pooled_login(&p, &format!("app_user.{evil}"));
    assert_eq!(held.query_one("SELECT 1").as_deref(), Some("1"));
    let denied = RawConn::login(p.port, "app_user.blocked_tenant", DB, Some("x"));
    assert!(denied.is_err(), "blocked_tenant logged in");
    let m = get(port, "/metrics");
    assert_eq!(m.status, 200);
    let samples = prom_parse(ctx, &m.body);
    // prometheus_client names a counter family without `_total`; samples keep it.
    assert!(prom_value(&samples, "pgvpd_connections_total", "{}") >= 3);
    assert_eq!(
        samples
            .iter()
            .find(|s| s.0 == "pgvpd_connections_total")
            .unwrap()
            .1,
        "counter"
    );
    assert!(prom_value(&samples, "pgvpd_pool_checkouts_total", "{}") >= 2);
    assert!(prom_value(&samples, "pgvpd_sessions_started_total", "{}") >= 2);
    assert_eq!(
        prom_value(
            &samples,
            "pgvpd_tenant_rejected_total",
            "{\"reason\": \"deny\"}"
        ),
        1
    );
    for reason in ["limit", "rate"] {
        prom_value(
            &samples,
            "pgvpd_tenant_rejected_total",
            &format!("{{\"reason\": \"{reason}\"}}"),
        );
    }
    assert_eq!(
        prom_value(
            &samples,
            "pgvpd_build_info",
            &format!("{{\"version\": \"{}\"}}", env!("CARGO_PKG_VERSION"))
        ),
        1
    );
    assert_eq!(prom_value(&samples, "pgvpd_workers", "{}"), 1);
    for name in [
        "pgvpd_connections_active",
        "pgvpd_pool_reuses_total",
        "pgvpd_pool_creates_total",
        "pgvpd_pool_checkins_total",
        "pgvpd_pool_discards_total",
        "pgvpd_pool_timeouts_total",
        "pgvpd_resolver_cache_hits_total",
        "pgvpd_resolver_cache_misses_total",
        "pgvpd_tenant_timeouts_total",
        "pgvpd_uptime_seconds",
    ] {
        prom_value(&samples, name, "{}");
    }
    // Per-tenant series (top N by activity), the evil id intact.
    let tenant_labels = |t: &str| {
        format!(
            "{{\"bucket\": \"top\", \"tenant\": {}}}",
            json_str(t).replace("\\u000a", "\\n")
        )
    };
    assert_eq!(
        prom_value(
            &samples,
            "pgvpd_tenant_sessions_admitted_total",
            &tenant_labels("tenant_a")
        ),
        1
    );
    assert_eq!(
        prom_value(&samples, "pgvpd_tenant_sessions_open", &tenant_labels(evil)),
        1
    );
    assert!(prom_value(&samples, "pgvpd_session_start_seconds_count", "{}") >= 3);
    assert!(prom_value(&samples, "pgvpd_pool_checkout_wait_seconds_count", "{}") >= 3);
    let lines = status_parse(ctx, &get(port, "/status").body);
    let want = format!("tenant=[{}, 1]", json_str(evil).replace("\\u000a", "\\n"));
    assert!(lines.contains(&want), "{want} in {lines:#?}");
    drop(held);
    // The pool gauges are declared in pool mode (their samples come from
    // the workers' snapshots).
    for fam in [
        "# TYPE pgvpd_pool_connections_total gauge\n",
        "# TYPE pgvpd_pool_connections_idle gauge\n",
    ] {
        assert!(m.body.contains(fam), "{fam} missing:\n{}", m.body);
    }
    p.assert_alive();
}

/// /status loaded by Python's json: pgvpd 1.0's shape plus version,
/// uptime_seconds, workers and counters.
fn admin_status_json(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "workers = 2");
    tenant_session(&p, "tenant_a");
    let s = get(port, "/status");
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("application/json"));
    let lines = status_parse(ctx, &s.body);
    assert_eq!(status_value(&lines, "workers"), 2);
    assert!(status_value(&lines, "connections_total") >= 1);
    assert!(status_value(&lines, "pool.checkouts") >= 1);
    assert!(status_value(&lines, "counters.sessions_started") >= 1);
    assert_eq!(status_value(&lines, "resolvers.cache_size"), 0);
    assert!(
        lines.contains(&format!("version={}", env!("CARGO_PKG_VERSION"))),
        "{lines:#?}"
    );
    // HEAD: same headers, no body.
    let h = exchange(local(port), &request("HEAD", "/status", None));
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty(), "{h:?}");
    assert!(
        h.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 100
    );
    p.assert_alive();
}

/// Database and role names with quotes, backslashes and newlines (what a
/// client can choose in pool mode) through the writers and real parsers:
/// the labels and JSON strings come back exactly, nothing is injected.
fn admin_escaping_real_parsers(ctx: &Ctx) {
    let hostile = [
        ("db\"x", "app_user"),
        ("a\nb\\c} 1\n# HELP evil", "r\"\\\n"),
        ("é 東京 🐘", "tab\there"),
    ];
    let view = View {
        paused: false,
        version: "0.0.0-test",
        uptime_secs: 1,
        workers: 1,
        pooling: true,
        buckets: hostile
            .iter()
            .map(|(d, r)| PoolBucket {
                database: d.to_string(),
                role: r.to_string(),
                total: 2,
                idle: 1,
                waiting: 0,
            })
            .collect(),
        resolver_cache_size: Some(0),
        ..View::default()
    };
    let stats = Stats::new();
    let samples = prom_parse(ctx, &render::metrics(&stats, &view));
    let py = prometheus_python();
    for (db, role) in hostile {
        // The label set prometheus_client read, as JSON: json.dumps of the originals.
        let out = run_command(
            {
                let mut c = Command::new(&py);
                c.args([
                    "-c",
                    "import json,sys; print(json.dumps({'database': sys.argv[1], 'role': sys.argv[2]}, sort_keys=True))",
                    db,
                    role,
                ]);
                c
            },
            "python",
            &[],
            Duration::from_secs(30),
        );
        let labels = out.out().to_string();
        assert_eq!(
            prom_value(&samples, "pgvpd_pool_connections_total", &labels),
            2
        );
        assert_eq!(
            prom_value(&samples, "pgvpd_pool_connections_idle", &labels),
            1
        );
        assert_eq!(
            prom_value(&samples, "pgvpd_pool_clients_waiting", &labels),
            0
        );
    }
    assert!(!samples.iter().any(|s| s.0.contains("evil")));
    let lines = status_parse(ctx, &render::status(&stats, &view));
    let buckets: Vec<&String> = lines.iter().filter(|l| l.starts_with("bucket=")).collect();
    assert_eq!(buckets.len(), 3, "{lines:#?}");
    // Sorted as given (PoolSnapshots::collect sorts; here the order is ours).
    let dir = ctx.cluster.subdir("admin-roundtrip");
    let check = r#"
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
got = [[b["database"], b["role"]] for b in d["pool"]["buckets"]]
want = json.loads(sys.argv[2])
if got != want:
    sys.exit("buckets %r != %r" % (got, want))
print("ok")
"#;
    let want: Vec<String> = hostile
        .iter()
        .map(|(d, r)| format!("[{},{}]", json_str(d), json_str(r)))
        .collect();
    let out = python_on_file(
        check,
        "status",
        &render::status(&stats, &view),
        &dir,
        &[&format!("[{}]", want.join(","))],
    );
    assert_eq!(out.trim(), "ok");
}

/// A JSON string literal (for the expected values above; independent of the crate's writer).
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The resolver cache size comes from the engine; misses and hits from the counters.
fn admin_resolver_cache_metrics(ctx: &Ctx) {
    let dir = ctx.cluster.subdir("admin-rz");
    let path = dir.join("resolvers.toml");
    std::fs::write(
        &path,
        r#"
[[resolver]]
name = "echo"
query = "SELECT $1::text AS v"
params = ["app.user_id"]
inject = { "app.echo" = "v" }
cache_ttl = 60
"#,
    )
    .unwrap();
    let port = free_port();
    let p = Proxy::start(
        &ctx.cluster,
        &format!(
            "context_variables = app.user_id\nresolvers = {}\nadmin_port = {port}",
            path.display()
        ),
    );
    wait_admin(local(port));
    let m = get(port, "/metrics");
    assert_eq!(m.sample("pgvpd_resolver_cache_size"), 0);
    for _ in 0..2 {
        let mut c = RawConn::login(p.port, "app_user.u1", DB, Some(APP_PASSWORD)).expect("login");
        assert_eq!(
            c.query_one("SELECT current_setting('app.echo')").as_deref(),
            Some("u1")
        );
    }
    let m = get(port, "/metrics");
    assert_eq!(m.sample("pgvpd_resolver_cache_size"), 1, "{}", m.body);
    assert_eq!(m.sample("pgvpd_resolver_cache_misses_total"), 1);
    assert_eq!(m.sample("pgvpd_resolver_cache_hits_total"), 1);
    // Passthrough: no pool gauges.
    assert!(
        !m.body.contains("pgvpd_pool_connections_total"),
        "{}",
        m.body
    );
    let lines = status_parse(ctx, &get(port, "/status").body);
    assert_eq!(status_value(&lines, "resolvers.cache_size"), 1);
    p.assert_alive();
}

/// With admin_token: no or a wrong token → 401 with WWW-Authenticate:
/// Bearer (on every path), the right one → 200.
fn admin_token(ctx: &Ctx) {
    let token = "s3cr3t-T0ken_x";
    let (p, port) = pooled_admin(ctx, &format!("admin_token = {token}"));
    for path in ["/health", "/metrics", "/status", "/nope"] {
        for (auth, what) in [
            (None, "no token"),
            (Some("wrong"), "wrong token"),
            (Some("s3cr3t-T0ken_"), "prefix"),
        ] {
            let r = exchange(local(port), &request("GET", path, auth));
            assert_eq!(r.status, 401, "{path} {what}: {r:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{r:?}"
            );
            assert!(!r.body.contains("pgvpd_"), "{r:?}");
        }
    }
    let basic = exchange(
        local(port),
        format!("GET /metrics HTTP/1.1\r\nAuthorization: Basic {token}\r\n\r\n").as_bytes(),
    );
    assert_eq!(basic.status, 401);
    for path in ["/health", "/metrics", "/status"] {
        let r = exchange(local(port), &request("GET", path, Some(token)));
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    let r = exchange(local(port), &request("GET", "/nope", Some(token)));
    assert_eq!(r.status, 404);
    // The token is a secret: not in the log.
    assert!(!p.log().contains(token), "token in the log");
    assert!(p.log().contains("auth=bearer-token"), "{}", p.log_tail(20));
}

/// A non-loopback IPv4 address of this machine, if it has one (the UDP
/// "connect" only picks a route; no packet is sent).
fn non_loopback_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// By default the API binds 127.0.0.1 (pgvpd 1.0 bound 0.0.0.0); admin_listen moves it.
fn admin_bind_address(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "");
    assert!(
        p.log()
            .contains(&format!("event=admin_listening addr=127.0.0.1:{port} ")),
        "{}",
        p.log_tail(20)
    );
    if let Some(ip) = non_loopback_ip() {
        let r = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2));
        assert!(r.is_err(), "admin API reachable on {ip}:{port}");
    } else {
        eprintln!("(no non-loopback address: checked the log line only)");
    }
    drop(p);
    // Another loopback address: 127.0.0.1 is then refused.
    let port = free_port();
    let p = pooled_proxy(
        ctx,
        "session",
        &format!("admin_port = {port}\nadmin_listen = 127.0.0.2"),
    );
    let there: SocketAddr = (Ipv4Addr::new(127, 0, 0, 2), port).into();
    wait_admin(there);
    assert_eq!(
        exchange(there, &request("GET", "/health", None)).status,
        200
    );
    assert!(TcpStream::connect_timeout(&local(port), Duration::from_secs(2)).is_err());
    assert!(p.log().contains("event=admin_listening addr=127.0.0.2:"));
    // Non-loopback without a token: a warning.
    drop(p);
    let port = free_port();
    let p = pooled_proxy(
        ctx,
        "session",
        &format!("admin_port = {port}\nadmin_listen = 0.0.0.0"),
    );
    wait_admin(local(port));
    assert!(
        p.log().contains("event=admin_api_unauthenticated"),
        "{}",
        p.log_tail(20)
    );
}

/// /health says 503 (with the reason, JSON-escaped) while the upstream
/// refuses connections; the rest of the API still answers.
fn admin_health_upstream_down(ctx: &Ctx) {
    let closed = free_port();
    let port = free_port();
    let p = Proxy::start_in(
        &ctx.cluster.subdir("pgvpd-down"),
        closed,
        &format!("admin_port = {port}"),
    );
    wait_admin(local(port));
    let h = get(port, "/health");
    assert_eq!(h.status, 503, "{h:?}");
    assert!(
        h.body
            .starts_with("{\"status\":\"unavailable\",\"error\":\"connect to 127.0.0.1:"),
        "{h:?}"
    );
    assert!(h.body.contains(&format!(":{closed}: ")), "{h:?}");
    assert_eq!(get(port, "/metrics").status, 200);
    assert_eq!(get(port, "/status").status, 200);
    // Cached: a second call within 2 s gives the same answer at once.
    let t = Instant::now();
    assert_eq!(get(port, "/health").status, 503);
    assert!(t.elapsed() < Duration::from_secs(1));
    p.assert_alive();
}

/// Body and head limits, unknown paths and methods.
fn admin_http_limits(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "");
    let at = local(port);
    // A body over 4 KiB: 413 (sent in full, then read and discarded).
    let body = "b".repeat(5000);
    let r = exchange(
        at,
        format!("POST /metrics HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{body}").as_bytes(),
    );
    assert_eq!(r.status, 413, "{r:?}");
    let r = exchange(
        at,
        format!("GET /health HTTP/1.1\r\nContent-Length: 4097\r\n\r\n{body}").as_bytes(),
    );
    assert_eq!(r.status, 413, "{r:?}");
    // A huge declared length costs nothing (tiny_http 0.12 aborted the process here).
    let r = exchange(
        at,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 100000000000000\r\n\r\nabc",
    );
    assert_eq!(r.status, 413, "{r:?}");
    // Exactly 4 KiB is fine.
    let r = exchange(
        at,
        format!(
            "GET /health HTTP/1.1\r\nContent-Length: 4096\r\n\r\n{}",
            &body[..4096]
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Head over 8 KiB: 431.
    let r = exchange(
        at,
        format!(
            "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 431, "{r:?}");
    // Unknown paths: 404 (the POST endpoints: admin_post_needs_token).
    for (m, path) in [
        ("GET", "/"),
        ("GET", "/nope"),
        ("POST", "/reloads"),
        ("POST", "/tenants/acme"),
        ("POST", "/tenants/acme/kill/now"),
    ] {
        let r = exchange(at, &request(m, path, None));
        assert_eq!(r.status, 404, "{m} {path}: {r:?}");
    }
    // Known paths, other methods: 405 with Allow.
    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = exchange(at, &request(m, "/metrics", None));
        assert_eq!(r.status, 405, "{m}: {r:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    let r = exchange(at, &request("HEAD", "/metrics", None));
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("connection"), Some("close"));
    // Malformed requests.
    let r = exchange(at, b"GET /metrics HTTP/2.0\r\n\r\n");
    assert_eq!(r.status, 505, "{r:?}");
    let r = exchange(
        at,
        b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 411, "{r:?}");
    let r = exchange(at, b"garbage\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(get(port, "/health").status, 200);
    p.assert_alive();
}

/// Idle and slow clients cannot lock the API: a partial request gets 408
/// after 5 s; 40 idle connections (more than the 32 slots) do not stop a
/// new request from being served at once.
fn admin_slow_clients(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "");
    let at = local(port);
    let mut partial = TcpStream::connect(at).unwrap();
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    partial
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    partial.read_to_end(&mut resp).unwrap();
    let waited = t.elapsed();
    let r = parse_response(&resp);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // 40 idle connections, then a real request.
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(at).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(port, "/health").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The oldest idle connections were closed to make room.
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 8, "only {closed} idle connections closed");
    p.assert_alive();
}

/// (After the workers publish pool snapshots.) A pooled session to a
/// database whose name holds a quote shows up, escaped, in /metrics and
/// /status, and both still parse.
fn admin_pool_bucket_labels(ctx: &Ctx) {
    ctx.cluster.sql("DROP DATABASE IF EXISTS \"db\"\"x\"");
    ctx.cluster.sql("CREATE DATABASE \"db\"\"x\"");
    ctx.cluster
        .sql("GRANT CONNECT ON DATABASE \"db\"\"x\" TO app_user");
    let (p, port) = pooled_admin(ctx, "");
    let mut c = RawConn::login(
        p.port,
        "app_user.tenant_a",
        "db\"x",
        Some(common::pooled::POOL_PASSWORD),
    )
    .expect("pooled login to db\"x");
    assert_eq!(
        c.query_one("SELECT current_database()").as_deref(),
        Some("db\"x")
    );
    // Workers publish their pools once a second.
    let want = "pgvpd_pool_connections_total{database=\"db\\\"x\",role=\"app_user\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = get(port, "/metrics");
        if m.body.contains(want) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(m.body.contains(want), "{}", m.body);
    let samples = prom_parse(ctx, &m.body);
    assert_eq!(
        prom_value(
            &samples,
            "pgvpd_pool_connections_total",
            "{\"database\": \"db\\\"x\", \"role\": \"app_user\"}"
        ),
        1
    );
    let lines = status_parse(ctx, &get(port, "/status").body);
    assert!(
        lines.contains(&"bucket=[\"db\\\"x\", \"app_user\"]".to_string()),
        "{lines:#?}"
    );
    drop(c);
    drop(p);
    ctx.cluster.sql("DROP DATABASE \"db\"\"x\" WITH (FORCE)");
}

/// The queue holds only clients that still wait: a tenant at its
/// `tenant_max_servers` whose extra logins time out leaves no entries behind
/// (they would count as waiting, make the pool create servers for nobody and
/// be served later), and another tenant is served meanwhile.
fn admin_capped_waiters_leave(ctx: &Ctx) {
    let (p, port) = pooled_admin(ctx, "tenant_max_servers = 1\npool_checkout_timeout = 1");
    let mut holder = pooled_login(&p, "app_user.tenant_a");
    assert_eq!(holder.query_one("SELECT 1").as_deref(), Some("1"));
    for i in 0..3 {
        let Err(e) = RawConn::login(
            p.port,
            "app_user.tenant_a",
            DB,
            Some(common::pooled::POOL_PASSWORD),
        ) else {
            panic!("login {i}: tenant_a is at its cap, yet it got a server");
        };
        assert_eq!(e.code, "53300", "login {i}: {e:?}");
        assert!(e.message.contains("tenant_max_servers = 1"), "{e:?}");
    }
    tenant_session(&p, "tenant_b");
    // Workers publish their pools once a second.
    let waiting = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| l.starts_with("pgvpd_pool_clients_waiting{"))
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = waiting(&get(port, "/metrics").body);
        let settled = !lines.is_empty() && lines.iter().all(|l| l.ends_with(" 0"));
        if settled || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(" 0")),
        "clients that gave up still count as waiting: {lines:?}"
    );
    assert_eq!(holder.query_one("SELECT 2").as_deref(), Some("2"));
    drop(holder);
    drop(p);
}

// ------------------------------------------------- POST endpoints and reload

const TOKEN: &str = "t0ken";

fn post(port: u16, path: &str, token: Option<&str>) -> Http {
    exchange(local(port), &request("POST", path, token))
}

/// The proxy's config file with `from` replaced by `to` (exactly once).
fn edit_config(p: &Proxy, from: &str, to: &str) {
    let text = std::fs::read_to_string(&p.config_path).expect("read config");
    assert_eq!(text.matches(from).count(), 1, "{from:?} in\n{text}");
    std::fs::write(&p.config_path, text.replacen(from, to, 1)).expect("write config");
}

/// Waits (≤ 10 s) until the log has more than `before` lines containing `what`.
fn wait_log(p: &Proxy, what: &str, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.log().matches(what).count() <= before {
        assert!(
            Instant::now() < deadline,
            "no new {what:?} in the log:\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn passthrough_admin(ctx: &Ctx, extra: &str) -> (Proxy, u16) {
    let port = free_port();
    let p = ctx.proxy(&format!(
        "admin_port = {port}\nadmin_token = {TOKEN}\n{extra}"
    ));
    wait_admin(local(port));
    (p, port)
}

fn login_result(p: &Proxy, tenant: &str) -> Result<RawConn, ErrorInfo> {
    RawConn::login(
        p.port,
        &format!("app_user.{tenant}"),
        DB,
        Some(APP_PASSWORD),
    )
}

/// POST endpoints change the proxy: refused without a configured token, and
/// with a wrong one.
fn admin_post_needs_token(ctx: &Ctx) {
    let port = free_port();
    let p = ctx.proxy(&format!("admin_port = {port}\ntenant_deny = x"));
    wait_admin(local(port));
    for path in ["/reload", "/pause", "/resume", "/tenants/acme/kill"] {
        let r = post(port, path, None);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("admin_token"), "{}", r.body);
        assert_eq!(get(port, path).status, 405, "{path}");
    }
    drop(p);
    let (p, port) = passthrough_admin(ctx, "");
    assert_eq!(post(port, "/reload", Some("wrong")).status, 401);
    assert_eq!(post(port, "/reload", None).status, 401);
    let r = post(port, "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"status\": \"reloaded\""), "{}", r.body);
    // Passthrough has no pools to pause.
    let r = post(port, "/pause", Some(TOKEN));
    assert_eq!(r.status, 409, "{}", r.body);
    drop(p);
}

/// A proxy with the admin API and `extra` in its config, in passthrough or
/// transaction mode; its port for the admin API and the tenants' password.
fn reload_proxy(ctx: &Ctx, pooled: bool, extra: &str) -> (Proxy, u16, &'static str) {
    let port = free_port();
    let conf = format!("admin_port = {port}\nadmin_token = {TOKEN}\n{extra}\n");
    if pooled {
        let p = pooled_proxy(ctx, "transaction", &conf);
        wait_admin(local(port));
        (p, port, common::pooled::POOL_PASSWORD)
    } else {
        let p = ctx.proxy(&conf);
        wait_admin(local(port));
        (p, port, APP_PASSWORD)
    }
}

/// Issue 7: add a tenant to `tenant_deny` and reload (SIGHUP, then POST
/// /reload): new sessions are refused, sessions already open keep working;
/// a key that cannot be reloaded keeps its running value with a warning.
fn reload_tenant_deny(ctx: &Ctx) {
    for pooled in [false, true] {
        let (p, port, pw) = reload_proxy(ctx, pooled, "tenant_deny = blocked");
        let login = |t: &str| RawConn::login(p.port, &format!("app_user.{t}"), DB, Some(pw));
        let mut open = login("acme").expect("acme before the reload");
        assert_eq!(
            open.query_one("SELECT current_setting('app.current_tenant_id')")
                .as_deref(),
            Some("acme")
        );

        // SIGHUP: acme denied from now on.
        edit_config(&p, "tenant_deny = blocked", "tenant_deny = blocked, acme");
        let before = p.log().matches("event=config_reloaded").count();
        send_signal(p.pid(), libc::SIGHUP);
        wait_log(&p, "event=config_reloaded", before);
        assert!(p.log().contains("applied=tenant_deny"), "{}", p.log_tail(5));
        let e = login("acme").err().expect("acme denied after the reload");
        assert_eq!(e.code, "28000", "{e:?}");
        assert!(e.message.contains("denied"), "{e:?}");
        // The open session goes on, with its context.
        for _ in 0..3 {
            assert_eq!(
                open.query_one("SELECT current_setting('app.current_tenant_id')")
                    .as_deref(),
                Some("acme"),
                "the open session after the reload"
            );
        }
        let mut g = login("globex").expect("globex still allowed");
        assert_eq!(g.query_one("SELECT 1").as_deref(), Some("1"));

        // POST /reload: acme allowed again; a non-reloadable key is kept.
        edit_config(&p, "tenant_deny = blocked, acme", "tenant_deny = blocked");
        edit_config(&p, "workers = 1", "workers = 3");
        let r = post(port, "/reload", Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("\"tenant_deny\""), "{}", r.body);
        assert!(
            r.body.contains("\"kept\": [\n    \"workers\""),
            "{}",
            r.body
        );
        assert!(
            p.log().contains("event=reload_key_not_reloadable") && p.log().contains("key=workers")
        );
        let mut again = login("acme").expect("acme allowed after the second reload");
        assert_eq!(again.query_one("SELECT 1").as_deref(), Some("1"));
        let st = exchange(local(port), &request("GET", "/status", Some(TOKEN)));
        assert_eq!(st.body.matches("\"workers\": 1").count(), 1, "{}", st.body);
        assert_eq!(open.query_one("SELECT 2").as_deref(), Some("2"));
        drop((open, g, again));
        drop(p);
    }
}

/// Timeouts are reloadable: `query_timeout` set by a reload applies to
/// sessions that start after it (their long query is cancelled with 57014
/// and the session goes on), while a session open before keeps running
/// without one.
fn reload_query_timeout(ctx: &Ctx) {
    for pooled in [false, true] {
        let (p, port, pw) = reload_proxy(ctx, pooled, "query_timeout = 0");
        let login = |t: &str| RawConn::login(p.port, &format!("app_user.{t}"), DB, Some(pw));
        let mut before = login("acme").expect("acme before the reload");
        assert_eq!(before.query_one("SELECT 1").as_deref(), Some("1"));

        edit_config(&p, "query_timeout = 0", "query_timeout = 1");
        let r = post(port, "/reload", Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("\"query_timeout\""), "{}", r.body);

        let mut after = login("acme").expect("acme after the reload");
        let e = after
            .simple_query("SELECT pg_sleep(5)")
            .expect_err("the new session's query is cancelled");
        assert_eq!(e.code, "57014", "pooled={pooled}: {e:?}");
        assert!(e.message.contains("query timeout"), "{e:?}");
        assert_eq!(
            after
                .query_one("SELECT current_setting('app.current_tenant_id')")
                .as_deref(),
            Some("acme"),
            "the session goes on after its 57014"
        );
        // The session opened before the reload has no query timeout.
        let rows = before
            .simple_query("SELECT pg_sleep(1.5), 'slept'")
            .expect("the older session keeps running without a query timeout");
        assert_eq!(
            rows,
            vec![vec![Some(String::new()), Some("slept".to_string())]]
        );
        drop((before, after));
        drop(p);
    }
}

/// A broken file on reload changes nothing: the error names the key and the
/// line, the running configuration stays in force (SIGHUP and POST).
fn reload_broken_config_changes_nothing(ctx: &Ctx) {
    let (p, port) = passthrough_admin(ctx, "tenant_deny = blocked\n");
    let good = std::fs::read_to_string(&p.config_path).unwrap();
    let mut open = login_result(&p, "acme").expect("acme");
    // The deny list grows, but the same file also has an error.
    let broken = good.replace(
        "tenant_deny = blocked",
        "tenant_deny = blocked, acme\ntenant_max_connections = many",
    );
    std::fs::write(&p.config_path, &broken).unwrap();
    let r = post(port, "/reload", Some(TOKEN));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("tenant_max_connections") && r.body.contains("nothing changed"),
        "{}",
        r.body
    );
    let line = broken
        .lines()
        .position(|l| l.starts_with("tenant_max_connections"))
        .unwrap()
        + 1;
    assert!(
        r.body.contains(&format!(":{line}:")),
        "line {line} in {}",
        r.body
    );
    login_result(&p, "acme").expect("acme still allowed: nothing changed");
    // SIGHUP with a resolver file that does not parse: same.
    let before = p.log().matches("event=config_reload_failed").count();
    let rfile = p.dir.join("bad-resolvers.toml");
    std::fs::write(&rfile, "[[resolver]]\nname = \"x\"\nbogus = 1\n").unwrap();
    std::fs::write(
        &p.config_path,
        good.replace(
            "tenant_deny = blocked",
            &format!(
                "tenant_deny = blocked, acme\nresolvers = {}",
                rfile.display()
            ),
        ),
    )
    .unwrap();
    send_signal(p.pid(), libc::SIGHUP);
    wait_log(&p, "event=config_reload_failed", before);
    assert!(
        p.log_tail(3).contains("bad-resolvers.toml"),
        "{}",
        p.log_tail(3)
    );
    login_result(&p, "acme").expect("acme still allowed after the failed SIGHUP");
    assert_eq!(open.query_one("SELECT 1").as_deref(), Some("1"));
    // The good file again: it applies.
    std::fs::write(
        &p.config_path,
        good.replace("tenant_deny = blocked", "tenant_deny = acme"),
    )
    .unwrap();
    assert_eq!(post(port, "/reload", Some(TOKEN)).status, 200);
    assert_eq!(
        login_result(&p, "acme").err().expect("denied").code,
        "28000"
    );
    // Closed first: the proxy drains open sessions on SIGTERM.
    drop(open);
    drop(p);
}

/// `POST /tenants/NAME/kill` closes that tenant's sessions only (passthrough:
/// the connection ends; transaction mode between transactions: FATAL
/// 57P01); the tenant may log in again; the name is percent-decoded.
fn admin_kill_tenant(ctx: &Ctx) {
    // Passthrough.
    let (p, port) = passthrough_admin(ctx, "");
    let mut a1 = login_result(&p, "acme").expect("acme 1");
    let mut a2 = login_result(&p, "acme").expect("acme 2");
    let mut g = login_result(&p, "globex").expect("globex");
    for c in [&mut a1, &mut a2, &mut g] {
        assert_eq!(c.query_one("SELECT 1").as_deref(), Some("1"));
    }
    let r = post(port, "/tenants/acme/kill", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"sessions\": 2"), "{}", r.body);
    for c in [&mut a1, &mut a2] {
        match c.wait_error_or_eof(Duration::from_secs(10)) {
            Outcome::Eof => {}
            Outcome::Error(e) => assert_eq!(e.code, "57P01", "{e:?}"),
            o => panic!("killed acme session: {o:?}"),
        }
    }
    assert_eq!(
        g.query_one("SELECT 2").as_deref(),
        Some("2"),
        "globex untouched"
    );
    let mut a3 = login_result(&p, "acme").expect("acme may log in again");
    assert_eq!(a3.query_one("SELECT 3").as_deref(), Some("3"));
    let r = post(port, "/tenants/nobody/kill", Some(TOKEN));
    assert!(r.body.contains("\"sessions\": 0"), "{}", r.body);
    drop((a1, a2, a3, g));
    drop(p);

    // Transaction mode: idle clients get FATAL 57P01; the pool goes on.
    let port = free_port();
    let p = pooled_proxy(
        ctx,
        "transaction",
        &format!("admin_port = {port}\nadmin_token = {TOKEN}\npool_size = 2\n"),
    );
    wait_admin(local(port));
    let mut k = pooled_login(&p, "app_user.a b\"c");
    let mut g = pooled_login(&p, "app_user.globex");
    assert_eq!(k.query_one("SELECT 1").as_deref(), Some("1"));
    assert_eq!(g.query_one("SELECT 1").as_deref(), Some("1"));
    let r = post(port, "/tenants/a%20b%22c/kill", Some(TOKEN));
    assert!(r.body.contains("\"sessions\": 1"), "{}", r.body);
    match k.wait_error_or_eof(Duration::from_secs(10)) {
        Outcome::Error(e) => {
            assert_eq!(e.code, "57P01", "{e:?}");
            assert!(e.message.contains("administrator"), "{e:?}");
        }
        o => panic!("killed idle pooled session: {o:?}"),
    }
    assert_eq!(g.query_one("SELECT 2").as_deref(), Some("2"));
    drop((k, g));
    drop(p);
}

/// `POST /pause`: no server is lent (a client's next transaction waits, even
/// with the server idle); `POST /resume`: it runs. A pause longer than
/// `pool_checkout_timeout` ends the wait with the usual timeout error.
fn admin_pause_resume(ctx: &Ctx) {
    let port = free_port();
    let p = pooled_proxy(
        ctx,
        "transaction",
        &format!(
            "admin_port = {port}\nadmin_token = {TOKEN}\npool_size = 1\npool_checkout_timeout = 3\n"
        ),
    );
    wait_admin(local(port));
    let mut a = pooled_login(&p, "app_user.acme");
    let mut b = pooled_login(&p, "app_user.globex");
    assert_eq!(a.query_one("SELECT 1").as_deref(), Some("1"));
    let r = post(port, "/pause", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"paused\"") && r.body.contains("\"changed\": true"),
        "{}",
        r.body
    );
    assert!(
        post(port, "/pause", Some(TOKEN))
            .body
            .contains("\"changed\": false")
    );
    let m = exchange(local(port), &request("GET", "/metrics", Some(TOKEN)));
    assert_eq!(m.sample("pgvpd_paused"), 1);
    b.send_query("SELECT 'b'");
    match b.wait_error_or_eof(Duration::from_millis(1500)) {
        Outcome::Timeout => {}
        o => panic!("a query ran while paused: {o:?}"),
    }
    // The held client shows as waiting (pools are published once a second).
    let waiting = format!("pgvpd_pool_clients_waiting{{database=\"{DB}\",role=\"app_user\"}} 1\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = exchange(local(port), &request("GET", "/metrics", Some(TOKEN)));
        if m.body.contains(&waiting) {
            break;
        }
        assert!(Instant::now() < deadline, "{waiting} not in\n{}", m.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = post(port, "/resume", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = b
        .read_query_result()
        .expect("the held query after the resume");
    assert_eq!(rows[0][0].as_deref(), Some("b"));
    assert_eq!(
        a.query_one("SELECT current_setting('app.current_tenant_id')")
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        b.query_one("SELECT current_setting('app.current_tenant_id')")
            .as_deref(),
        Some("globex")
    );
    // Paused longer than pool_checkout_timeout: the wait ends with an error.
    assert_eq!(post(port, "/pause", Some(TOKEN)).status, 200);
    a.send_query("SELECT 'a'");
    match a.wait_error_or_eof(Duration::from_secs(15)) {
        Outcome::Error(e) => assert!(e.message.contains("timeout"), "{e:?}"),
        o => panic!("a paused wait must end with the checkout timeout: {o:?}"),
    }
    assert_eq!(post(port, "/resume", Some(TOKEN)).status, 200);
    assert_eq!(b.query_one("SELECT 3").as_deref(), Some("3"));
    drop((a, b));
    drop(p);
}
