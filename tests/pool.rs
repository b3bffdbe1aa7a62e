//! `pool_mode = session` end to end (issue 4): the proxy authenticates
//! clients itself, lends pooled servers, and takes them back only when they
//! are provably idle and reset. Same runner and cluster as `integration`.
//!
//! `cargo test --test pool` runs all cases; `-- leak` only those whose name
//! contains "leak".

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::pooled::{
    POOL_PASSWORD, assert_app_backends_at_most, names_of, pooled_login, pooled_proxy, who,
};
use common::runner::{self, Case};
use common::{Ctx, ErrorInfo, Proxy, RawConn, XorShift, cancel_request_bytes, query_bytes};

const CASES: &[Case] = &[
    ("pool_isolation_and_reuse", pool_isolation_and_reuse),
    (
        "pool_leak_pipelined_disconnect",
        pool_leak_pipelined_disconnect,
    ),
    (
        "pool_disconnect_in_transaction",
        pool_disconnect_in_transaction,
    ),
    ("pool_disconnect_in_copy", pool_disconnect_in_copy),
    (
        "pool_disconnect_extended_error_before_sync",
        pool_disconnect_extended_error_before_sync,
    ),
    ("pool_wrong_password", pool_wrong_password),
    ("pool_checkout_timeout", pool_checkout_timeout),
    ("pool_cancel", pool_cancel),
    ("pool_startup_parameters", pool_startup_parameters),
    ("pool_superuser_refused", pool_superuser_refused),
    ("pool_postgres_restart", pool_postgres_restart),
    (
        "pool_workers_one_pool_per_key",
        pool_workers_one_pool_per_key,
    ),
    (
        "pool_server_check_and_lifetime",
        pool_server_check_and_lifetime,
    ),
    ("pool_torture", pool_torture),
];

fn main() {
    runner::run(CASES);
}

/// A `pool_mode = session` proxy logging in upstream as app_user (SCRAM).
fn pool_proxy(ctx: &Ctx, extra: &str) -> Proxy {
    pooled_proxy(ctx, "session", extra)
}

fn login(p: &Proxy, user: &str) -> RawConn {
    pooled_login(p, user)
}

/// Tables app_user may write: `pool_t` protected by RLS, `pool_copy` without
/// (PostgreSQL refuses COPY FROM into a table with row-level security).
fn ensure_writable_table(ctx: &Ctx) {
    ctx.cluster.sql(
        "CREATE TABLE IF NOT EXISTS pool_t (\
           tenant_id text NOT NULL DEFAULT current_setting('app.current_tenant_id'), \
           v int); \
         SELECT pgvpd_protect('pool_t'); \
         GRANT SELECT, INSERT, UPDATE, DELETE ON pool_t TO app_user; \
         TRUNCATE pool_t; \
         CREATE TABLE IF NOT EXISTS pool_copy (v int); \
         GRANT SELECT, INSERT ON pool_copy TO app_user; \
         TRUNCATE pool_copy;",
    );
}

fn pool_isolation_and_reuse(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 2");
    let mut pids = BTreeSet::new();
    for i in 0..10 {
        let tenant = if i % 2 == 0 { "tenant_a" } else { "tenant_b" };
        let mut c = login(&p, &format!("app_user.{tenant}"));
        let (t, names, pid) = who(&mut c);
        assert_eq!(t, tenant, "round {i}");
        assert_eq!(names, names_of(tenant), "round {i}: rows of {tenant}");
        // The client sees the proxy's cancel key, not the backend's.
        let (kpid, _) = c.backend_key.expect("BackendKeyData");
        assert_ne!(kpid.to_string(), pid, "round {i}");
        pids.insert(pid);
        c.send(&common::terminate_bytes());
    }
    assert!(
        pids.len() <= 2,
        "10 sequential clients used {} backends: {pids:?}",
        pids.len()
    );
    // Two at once: both served, by different backends.
    let mut a = login(&p, "app_user.tenant_a");
    let mut b = login(&p, "app_user.tenant_b");
    let (ta, _, pa) = who(&mut a);
    let (tb, _, pb) = who(&mut b);
    assert_eq!((ta.as_str(), tb.as_str()), ("tenant_a", "tenant_b"));
    assert_ne!(pa, pb);
    p.assert_alive();
}

/// `workers = 4`: clients of one key, accepted by any worker, share one pool
/// of `pool_size` servers (they move to the key's owner worker). Three keys,
/// one per upstream method (app_user SCRAM, pw_user cleartext, md5_user
/// MD5), passwords from an `upstream_auth_file`.
fn pool_workers_one_pool_per_key(ctx: &Ctx) {
    let dir = ctx.cluster.subdir("upstream-auth");
    let auth = dir.join("upstream_userlist.txt");
    std::fs::write(
        &auth,
        format!(
            "\"app_user\" \"{APP_PASSWORD}\"\n\"pw_user\" \"{}\"\n\"md5_user\" \"{}\"\n",
            common::fixtures::PW_PASSWORD,
            common::fixtures::MD5_PASSWORD
        ),
    )
    .expect("write the upstream auth file");
    let p = ctx.proxy(&format!(
        "pool_mode = session\npool_password = {POOL_PASSWORD}\nworkers = 4\n\
         pool_size = 2\npool_checkout_timeout = 30\nlog_level = debug\n\
         upstream_auth_file = {}\n",
        auth.display()
    ));
    let port = p.port;
    let handles: Vec<_> = (0..24u32)
        .map(|i| {
            std::thread::spawn(move || -> Result<Vec<(String, String, u32)>, String> {
                let role = ["app_user", "pw_user", "md5_user"][i as usize % 3];
                let tenant = format!("t{i}");
                let mut c = RawConn::login(port, &format!("{role}.{tenant}"), DB, Some(POOL_PASSWORD))
                    .map_err(|e| format!("client {i}: {e:?}"))?;
                let mut seen = Vec::new();
                for _ in 0..3 {
                    let row = c
                        .query_one(
                            "SELECT current_setting('app.current_tenant_id') || ' ' || session_user \
                             || ' ' || pg_backend_pid() || ' ' || (SELECT count(*) FROM pg_stat_activity \
                             WHERE usename = session_user AND backend_type = 'client backend') \
                             FROM pg_sleep(0.05)",
                        )
                        .ok_or_else(|| format!("client {i}: no row"))?;
                    let f: Vec<&str> = row.split(' ').collect();
                    if f.len() != 4 || f[0] != tenant || f[1] != role {
                        return Err(format!("client {i} ({role}.{tenant}) got {row:?}"));
                    }
                    let n = f[3].parse().map_err(|_| format!("count in {row:?}"))?;
                    seen.push((f[1].to_string(), f[2].to_string(), n));
                }
                c.send(&common::terminate_bytes());
                Ok(seen)
            })
        })
        .collect();
    let mut pids: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for h in handles {
        let seen = h
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{e}"));
        for (role, pid, n) in seen {
            assert!(
                n <= 2,
                "{n} {role} backends at once with pool_size = 2 over 4 workers"
            );
            pids.entry(role).or_default().insert(pid);
        }
    }
    for (role, set) in &pids {
        assert!(
            set.len() <= 2,
            "{role} used {} backends: {set:?}",
            set.len()
        );
    }
    assert_eq!(pids.len(), 3, "all three keys served: {pids:?}");
    let log = p.log();
    let handoffs = log.matches("event=client_handoff").count();
    println!("workers = 4: 24 clients, {handoffs} moved to their key's worker");
    assert!(
        handoffs > 0,
        "24 clients accepted by 4 workers, none moved to the owner of its key"
    );
    assert!(!log.contains("event=connection_panic"));
    p.assert_alive();
}

/// `server_check_query` runs before each reuse of a server (delay 0), never
/// on a new one; a failing check closes the server and the client gets a
/// fresh one; `server_lifetime` closes an old server when it comes back.
fn pool_server_check_and_lifetime(ctx: &Ctx) {
    ctx.cluster.sql(
        "DROP SEQUENCE IF EXISTS pool_check_seq; CREATE SEQUENCE pool_check_seq; \
         GRANT USAGE ON SEQUENCE pool_check_seq TO app_user;",
    );
    let p = pool_proxy(
        ctx,
        "pool_size = 1\nserver_check_delay = 0\n\
         server_check_query = \"SELECT nextval('pool_check_seq')\"",
    );
    let mut pids = BTreeSet::new();
    for i in 0..5 {
        let mut c = login(&p, "app_user.tenant_a");
        let (t, _, pid) = who(&mut c);
        assert_eq!(t, "tenant_a", "round {i}");
        pids.insert(pid);
        c.send(&common::terminate_bytes());
    }
    assert_eq!(pids.len(), 1, "one server reused: {pids:?}");
    // Five clients: the first got the new server unchecked, four reuses.
    assert_eq!(
        ctx.cluster.sql("SELECT last_value FROM pool_check_seq"),
        "4",
        "check query runs"
    );
    drop(p);

    // A check that fails: each reuse closes the server, a new one serves.
    let p = pool_proxy(
        ctx,
        "pool_size = 1\nserver_check_delay = 0\nserver_check_query = SELECT 1/0",
    );
    let mut pids = BTreeSet::new();
    for i in 0..3 {
        let mut c = login(&p, "app_user.tenant_b");
        let (t, names, pid) = who(&mut c);
        assert_eq!(
            (t.as_str(), names.as_str()),
            ("tenant_b", names_of("tenant_b")),
            "round {i}"
        );
        pids.insert(pid);
        c.send(&common::terminate_bytes());
    }
    assert_eq!(
        pids.len(),
        3,
        "a failed check must close the server: {pids:?}"
    );
    p.assert_alive();
    drop(p);

    // server_lifetime = 1: a server older than that is not reused.
    let p = pool_proxy(ctx, "pool_size = 1\nserver_lifetime = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let first = who(&mut a).2;
    a.send(&common::terminate_bytes());
    let mut b = login(&p, "app_user.tenant_a");
    let quick = who(&mut b).2;
    std::thread::sleep(Duration::from_millis(1200));
    b.send(&common::terminate_bytes());
    let mut c = login(&p, "app_user.tenant_a");
    let later = who(&mut c).2;
    assert_eq!(first, quick, "a young server is reused");
    assert_ne!(quick, later, "a server past server_lifetime was reused");
    p.assert_alive();
}

/// pgvpd 1.0's leak: with one server, tenant A pipelines slow queries and
/// disconnects; tenant B must see exactly its own results.
fn pool_leak_pipelined_disconnect(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 1\npool_checkout_timeout = 20");
    let mut a = login(&p, "app_user.tenant_a");
    let a_pid = who(&mut a).2;
    let mut burst = Vec::new();
    for _ in 0..6 {
        burst.extend(query_bytes(
            "SELECT pg_sleep(0.2), string_agg(name, ',' ORDER BY name) FROM tenants",
        ));
    }
    a.send(&burst);
    drop(a); // gone with six queries in flight
    let t0 = Instant::now();
    let mut b = login(&p, "app_user.tenant_b");
    for _ in 0..3 {
        let (t, names, pid) = who(&mut b);
        assert_eq!(t, "tenant_b");
        assert_eq!(names, names_of("tenant_b"), "B saw foreign rows");
        assert_eq!(pid, a_pid, "B must get A's drained server (pool_size = 1)");
    }
    let rows = b
        .simple_query("SELECT string_agg(name, ',' ORDER BY name) FROM tenants")
        .expect("query");
    assert_eq!(rows.len(), 1, "exactly one result for one query: {rows:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "B was served before A's queries drained ({:?})",
        t0.elapsed()
    );
    p.assert_alive();
}

fn pool_disconnect_in_transaction(ctx: &Ctx) {
    ensure_writable_table(ctx);
    let p = pool_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let a_pid = who(&mut a).2;
    a.simple_query("SET my.leak = 'from-a'").expect("set");
    a.simple_query("CREATE TEMP TABLE a_temp (x int)")
        .expect("temp");
    a.simple_query("PREPARE a_stmt AS SELECT 1")
        .expect("prepare");
    a.simple_query("BEGIN").expect("begin");
    a.simple_query("INSERT INTO pool_t (v) VALUES (1)")
        .expect("insert");
    drop(a);
    let mut b = login(&p, "app_user.tenant_b");
    let (t, _, b_pid) = who(&mut b);
    assert_eq!(t, "tenant_b");
    assert_eq!(b_pid, a_pid, "the server was not reset and reused");
    assert_eq!(
        b.query_one("SELECT coalesce(current_setting('my.leak', true), '')")
            .as_deref(),
        Some(""),
        "a session variable crossed tenants"
    );
    assert_eq!(
        b.query_one("SELECT to_regclass('pg_temp.a_temp') IS NULL")
            .as_deref(),
        Some("t"),
        "a temp table crossed tenants"
    );
    assert_eq!(
        b.query_one("SELECT count(*) FROM pg_prepared_statements")
            .as_deref(),
        Some("0")
    );
    drop(b);
    assert_eq!(
        ctx.cluster.sql("SELECT count(*) FROM pool_t"),
        "0",
        "the abandoned transaction was committed"
    );
    p.assert_alive();
}

fn pool_disconnect_in_copy(ctx: &Ctx) {
    ensure_writable_table(ctx);
    let p = pool_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let a_pid = who(&mut a).2;
    a.send_query("COPY pool_copy (v) FROM STDIN");
    let (tag, _) = a.read_message().expect("CopyInResponse");
    assert_eq!(tag, b'G');
    let mut d = vec![b'd'];
    d.extend_from_slice(&(4 + 2i32).to_be_bytes());
    d.extend_from_slice(b"7\n");
    a.send(&d);
    drop(a); // inside COPY
    let mut b = login(&p, "app_user.tenant_b");
    let (t, names, b_pid) = who(&mut b);
    assert_eq!(
        (t.as_str(), names.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    assert_eq!(
        b_pid, a_pid,
        "the COPY was not aborted and the server reused"
    );
    drop(b);
    assert_eq!(
        ctx.cluster.sql("SELECT count(*) FROM pool_copy"),
        "0",
        "the abandoned COPY was committed"
    );
    p.assert_alive();
}

fn pool_disconnect_extended_error_before_sync(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 1");
    let mut a = login(&p, "app_user.tenant_a");
    let a_pid = who(&mut a).2;
    // Parse of bad SQL, then Bind/Execute, no Sync: the server is in the
    // "discard until Sync" state when A leaves.
    let mut m = Vec::new();
    let sql = b"SELEC broken\0";
    m.push(b'P');
    m.extend_from_slice(&((4 + 1 + sql.len() + 2) as i32).to_be_bytes());
    m.push(0);
    m.extend_from_slice(sql);
    m.extend_from_slice(&0i16.to_be_bytes());
    m.extend_from_slice(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
    a.send(&m);
    let (tag, body) = a.read_message().expect("ErrorResponse for the bad Parse");
    assert_eq!(tag, b'E', "{:?}", String::from_utf8_lossy(&body));
    drop(a);
    let mut b = login(&p, "app_user.tenant_b");
    let (t, names, b_pid) = who(&mut b);
    assert_eq!(
        (t.as_str(), names.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    assert_eq!(
        b_pid, a_pid,
        "the cycle was not closed with a Sync and the server reused"
    );
    p.assert_alive();
}

fn pool_wrong_password(ctx: &Ctx) {
    let p = pool_proxy(ctx, "");
    let e = RawConn::login(
        p.port,
        "app_user.tenant_a",
        DB,
        Some("not-the-pool-password"),
    )
    .err()
    .expect("a wrong pool password must be refused");
    assert_eq!(e.code, "28P01", "{e:?}");
    // The upstream password is not the client's password either.
    let e = RawConn::login(p.port, "app_user.tenant_a", DB, Some(APP_PASSWORD))
        .err()
        .expect("the upstream password is not a pool password");
    assert_eq!(e.code, "28P01", "{e:?}");
    // psql (libpq SCRAM) too.
    let out = ctx.psql(p.port, "app_user.tenant_a", Some("wrong"), "SELECT 1");
    assert!(!out.success());
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    let out = ctx.psql(
        p.port,
        "app_user.tenant_a",
        Some(POOL_PASSWORD),
        "SELECT current_setting('app.current_tenant_id')",
    );
    assert_eq!(out.expect_ok("psql with the pool password"), "tenant_a");
    p.assert_alive();
}

fn pool_checkout_timeout(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 1\npool_checkout_timeout = 1");
    let mut holder = login(&p, "app_user.tenant_a");
    assert_eq!(who(&mut holder).0, "tenant_a");
    let t0 = Instant::now();
    let e: ErrorInfo = RawConn::login(p.port, "app_user.tenant_b", DB, Some(POOL_PASSWORD))
        .err()
        .expect("no server free: the second client must time out");
    let waited = t0.elapsed();
    assert_eq!(e.code, "53300", "{e:?}");
    assert!(e.message.contains("timeout"), "{e:?}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    // The holder is unaffected; after it leaves, the next client is served.
    assert_eq!(who(&mut holder).0, "tenant_a");
    drop(holder);
    let mut c = login(&p, "app_user.tenant_b");
    assert_eq!(who(&mut c).0, "tenant_b");
    p.assert_alive();
}

fn pool_cancel(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 2");
    let mut c = login(&p, "app_user.tenant_a");
    let (pid, key) = c.backend_key.expect("BackendKeyData");
    let real_pid = who(&mut c).2;
    assert_ne!(
        pid.to_string(),
        real_pid,
        "the client must not see the backend pid"
    );
    c.send_query("SELECT pg_sleep(30)");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut k = RawConn::connect(p.port);
    k.send(&cancel_request_bytes(pid, key));
    let e = c.read_query_result().expect_err("cancelled");
    assert_eq!(e.code, "57014", "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // A wrong secret cancels nothing.
    c.send_query("SELECT pg_sleep(0.5)");
    let mut k2 = RawConn::connect(p.port);
    k2.send(&cancel_request_bytes(pid, key ^ 0x0102_0304));
    assert!(
        c.read_query_result().is_ok(),
        "a wrong key cancelled a query"
    );
    p.assert_alive();
}

fn pool_startup_parameters(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 1");
    let mut c = RawConn::connect(p.port);
    c.startup(
        Some("app_user.tenant_a"),
        DB,
        &[
            ("application_name", "pool-test"),
            ("options", "-c TimeZone=Asia/Tokyo -c search_path=public"),
        ],
    );
    c.auth_trust_or_cleartext(Some(POOL_PASSWORD))
        .expect("login with settings");
    assert_eq!(c.param("application_name"), Some("pool-test"));
    assert_eq!(c.param("TimeZone"), Some("Asia/Tokyo"));
    assert_eq!(
        c.query_one("SHOW application_name").as_deref(),
        Some("pool-test")
    );
    assert_eq!(c.query_one("SHOW TimeZone").as_deref(), Some("Asia/Tokyo"));
    assert_eq!(c.query_one("SHOW search_path").as_deref(), Some("public"));
    drop(c);
    // The next client on the same server has the defaults back.
    let mut d = login(&p, "app_user.tenant_b");
    assert_ne!(
        d.query_one("SHOW application_name").as_deref(),
        Some("pool-test")
    );
    assert_ne!(d.query_one("SHOW TimeZone").as_deref(), Some("Asia/Tokyo"));
    // A setting that changes identity is refused by name.
    let mut e = RawConn::connect(p.port);
    e.startup(
        Some("app_user.tenant_a"),
        DB,
        &[("options", "-c app.current_tenant_id=tenant_b")],
    );
    let err = e
        .auth_trust_or_cleartext(Some(POOL_PASSWORD))
        .expect_err("a client may not set the context variable");
    assert!(err.message.contains("app.current_tenant_id"), "{err:?}");
    p.assert_alive();
}

fn pool_superuser_refused(ctx: &Ctx) {
    // postgres is trust upstream: only the proxy's role check stands between
    // a pool-password holder and a superuser session.
    let p = pool_proxy(ctx, "pool_size = 2");
    let e = RawConn::login(p.port, "postgres.tenant_a", DB, Some(POOL_PASSWORD))
        .err()
        .expect("postgres.x must not get a session");
    assert_eq!(e.code, "42501", "{e:?}");
    // Superuser bypass is never pooled: it is passthrough with upstream auth.
    let mut c = RawConn::login(p.port, "postgres", DB, None).expect("bypass login (trust)");
    assert_eq!(
        c.query_one("SELECT current_user").as_deref(),
        Some("postgres")
    );
    p.assert_alive();
}

/// PostgreSQL goes away and comes back: dead idle servers are dropped at
/// once, clients get clean errors, never a hang, and the pool refills.
fn pool_postgres_restart(ctx: &Ctx) {
    let p = pool_proxy(ctx, "pool_size = 3\npool_checkout_timeout = 10");
    // Three idle servers.
    let mut three: Vec<RawConn> = (0..3).map(|_| login(&p, "app_user.tenant_a")).collect();
    let old: BTreeSet<String> = three.iter_mut().map(|c| who(c).2).collect();
    assert_eq!(old.len(), 3);
    drop(three);
    // One client holds a server across the outage.
    let mut busy = login(&p, "app_user.tenant_b");
    assert_eq!(who(&mut busy).0, "tenant_b");

    ctx.cluster.stop_keep_dir();
    // Server down: the held session ends with an error, not silence.
    let t0 = Instant::now();
    match busy.simple_query("SELECT 1") {
        Ok(r) => panic!("a query on a dead server answered {r:?}"),
        Err(e) => assert!(
            ["57P01", "08006", "EOF"].contains(&e.code.as_str()),
            "held session: {e:?}"
        ),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A new client cannot get a server: a clean error within the bounds.
    let t0 = Instant::now();
    let e = RawConn::login(p.port, "app_user.tenant_a", DB, Some(POOL_PASSWORD))
        .err()
        .expect("no server can be created while PostgreSQL is down");
    assert!(
        e.code.starts_with("08") || e.code == "57P03",
        "while down: {e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    p.assert_alive();

    ctx.cluster.restart();
    // The pool refills with new backends; none of the dead ones is lent.
    let mut again: Vec<RawConn> = (0..3).map(|_| login(&p, "app_user.tenant_a")).collect();
    let new: BTreeSet<String> = again.iter_mut().map(|c| who(c).2).collect();
    assert_eq!(new.len(), 3, "three clients at once after the restart");
    assert!(
        new.is_disjoint(&old),
        "a dead server was lent: {new:?} vs {old:?}"
    );
    drop(again);
    let mut c = login(&p, "app_user.tenant_b");
    let (t, names, _) = who(&mut c);
    assert_eq!(
        (t.as_str(), names.as_str()),
        ("tenant_b", names_of("tenant_b"))
    );
    p.assert_alive();
}

// ------------------------------------------------------------------ torture

const TORTURE_TENANTS: u64 = 10;
const ROWS_PER_TENANT: i32 = 20;

/// What one torture client saw.
#[derive(Default, Debug)]
struct TortureCounts {
    sessions: u64,
    abusive_sessions: u64,
    transactions: u64,
    rows_checked: u64,
    foreign_rows: u64,
    wrong_answers: Vec<String>,
    cancels: u64,
    late_cancels: u64,
}

impl TortureCounts {
    fn add(&mut self, o: TortureCounts) {
        self.sessions += o.sessions;
        self.abusive_sessions += o.abusive_sessions;
        self.transactions += o.transactions;
        self.rows_checked += o.rows_checked;
        self.foreign_rows += o.foreign_rows;
        self.cancels += o.cancels;
        self.late_cancels += o.late_cancels;
        self.wrong_answers.extend(o.wrong_answers);
    }
}

fn torture_tables(ctx: &Ctx) {
    let mut sql = String::from(
        "DROP TABLE IF EXISTS torture_items, torture_log; \
         CREATE TABLE torture_items (tenant_id text NOT NULL, n int NOT NULL); \
         CREATE TABLE torture_log (tenant_id text NOT NULL \
            DEFAULT current_setting('app.current_tenant_id'), v bigint NOT NULL); \
         SELECT pgvpd_protect('torture_items'); SELECT pgvpd_protect('torture_log'); \
         GRANT SELECT ON torture_items TO app_user; \
         GRANT SELECT, INSERT ON torture_log TO app_user; ",
    );
    for k in 0..TORTURE_TENANTS {
        sql.push_str(&format!(
            "INSERT INTO torture_items SELECT 't{k}', {base} + i \
             FROM generate_series(0, {last}) i; ",
            base = k * 1000,
            last = ROWS_PER_TENANT - 1
        ));
    }
    ctx.cluster.sql(&sql);
}

/// Checks rows (tenant_id, n) against tenant `k`; `from` is the first n asked for.
fn check_rows(c: &mut TortureCounts, k: u64, rows: &[(String, i32)], from: i32, what: &str) {
    let base = (k * 1000) as i32;
    let want_n: Vec<i32> = (from.max(base)..base + ROWS_PER_TENANT).collect();
    for (t, n) in rows {
        c.rows_checked += 1;
        if *t != format!("t{k}") || !(base..base + ROWS_PER_TENANT).contains(n) {
            c.foreign_rows += 1;
        }
    }
    let got: Vec<i32> = rows.iter().map(|(_, n)| *n).collect();
    if got != want_n {
        c.wrong_answers.push(format!(
            "t{k} {what}: want {} rows, got {got:?}",
            want_n.len()
        ));
    }
}

fn driver_session(
    port: u16,
    k: u64,
    rng: &mut XorShift,
    c: &mut TortureCounts,
) -> Result<(), String> {
    let mut client = postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(&format!("app_user.t{k}"))
        .password(POOL_PASSWORD)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(30))
        .connect(postgres::NoTls)
        .map_err(|e| format!("connect t{k}: {e:?}"))?;
    c.sessions += 1;
    let n = 1 + rng.next_u64() % 15;
    for _ in 0..n {
        // Cancels (op 6) wait 100 ms each: one op in 14.
        let op = match rng.next_u64() % 14 {
            13 => 6,
            r => r % 6,
        };
        match torture_op(&mut client, op, k, rng, c) {
            Ok(()) => c.transactions += 1,
            // PostgreSQL signals a cancel to the backend twice (process and
            // process group), and a cancel may land after the statement it
            // was sent for: the next statement of the same session is then
            // cancelled. A clean error, never a wrong answer; counted.
            Err(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                c.late_cancels += 1
            }
            Err(e) => return Err(format!("t{k} op {op}: {e:?}")),
        }
    }
    // Half the sessions end inside a transaction.
    if rng.next_u64().is_multiple_of(2) {
        match client.batch_execute("BEGIN; INSERT INTO torture_log (v) VALUES (-1)") {
            Ok(()) => {}
            Err(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                c.late_cancels += 1
            }
            Err(e) => return Err(format!("abandon t{k}: {e:?}")),
        }
    }
    Ok(())
}

fn torture_op(
    client: &mut postgres::Client,
    op: u64,
    k: u64,
    rng: &mut XorShift,
    c: &mut TortureCounts,
) -> Result<(), postgres::Error> {
    match op {
        0 => {
            let msgs = client.simple_query("SELECT tenant_id, n FROM torture_items ORDER BY n")?;
            let rows: Vec<(String, i32)> = msgs
                .iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some((
                        r.get(0).unwrap_or("").to_string(),
                        r.get(1).and_then(|v| v.parse().ok()).unwrap_or(-1),
                    )),
                    _ => None,
                })
                .collect();
            check_rows(c, k, &rows, 0, "simple");
        }
        1 => {
            let from = (k * 1000) as i32 + (rng.next_u64() % 20) as i32;
            let rows: Vec<(String, i32)> = client
                .query(
                    "SELECT tenant_id, n FROM torture_items WHERE n >= $1 ORDER BY n",
                    &[&from],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            check_rows(c, k, &rows, from, "extended");
        }
        2 | 3 => {
            let v = rng.next_u64() as i64 & 0x7fff_ffff_ffff;
            let commit = rng.next_u64().is_multiple_of(2);
            let mut tx = client.transaction()?;
            tx.execute("INSERT INTO torture_log (v) VALUES ($1)", &[&v])?;
            let seen: i64 = tx
                .query_one("SELECT count(*) FROM torture_log WHERE v = $1", &[&v])?
                .get(0);
            if seen != 1 {
                c.wrong_answers
                    .push(format!("t{k}: own insert seen {seen} times"));
            }
            if commit {
                tx.commit()?;
            } else {
                tx.rollback()?;
            }
        }
        4 => match client.query("SELECT 1 / $1::int", &[&0i32]) {
            Err(e) if e.code() == Some(&postgres::error::SqlState::DIVISION_BY_ZERO) => {}
            Err(e) => return Err(e),
            Ok(rows) => c
                .wrong_answers
                .push(format!("t{k}: division by zero gave {} rows", rows.len())),
        },
        5 => {
            let tenant: String = client
                .query_one("SELECT current_setting('app.current_tenant_id')", &[])?
                .get(0);
            if tenant != format!("t{k}") {
                c.foreign_rows += 1;
                c.wrong_answers.push(format!("t{k}: context says {tenant}"));
            }
        }
        _ => {
            // Cancel a running statement through the proxy-issued key. A
            // cancel that reaches the server before the statement does is
            // ignored by PostgreSQL (on a loaded machine 100 ms may not be
            // enough), so it is sent again while the statement still runs,
            // as a client would.
            let token = client.cancel_token();
            // Dropping `done` (the statement returned) wakes the canceller at
            // once: a sleeping one would keep this session's server from the
            // other clients for nothing.
            let (done, finished) = std::sync::mpsc::channel::<()>();
            let canceller = std::thread::spawn(move || {
                let mut wait = Duration::from_millis(100);
                for _ in 0..5 {
                    match finished.recv_timeout(wait) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                    let _ = token.cancel_query(postgres::NoTls);
                    wait = Duration::from_millis(500);
                }
            });
            let r = client.simple_query("SELECT pg_sleep(3)");
            drop(done);
            let _ = canceller.join();
            match r {
                Err(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                    c.cancels += 1
                }
                Err(e) => return Err(e),
                Ok(_) => c
                    .wrong_answers
                    .push(format!("t{k}: pg_sleep(3) was not cancelled")),
            }
        }
    }
    Ok(())
}

/// Sessions that leave abruptly: queries in flight, open transaction,
/// half a message, an extended cycle without Sync.
fn abusive_session(
    port: u16,
    k: u64,
    rng: &mut XorShift,
    c: &mut TortureCounts,
) -> Result<(), String> {
    // The login waits for a server (session mode): up to the torture's
    // pool_checkout_timeout, not the raw client's 10 s default.
    let mut conn = RawConn::connect(port);
    conn.set_read_timeout(Duration::from_secs(65));
    conn.startup(Some(&format!("app_user.t{k}")), DB, &[]);
    conn.auth_trust_or_cleartext(Some(POOL_PASSWORD))
        .map_err(|e| format!("raw login t{k}: {e:?}"))?;
    conn.set_read_timeout(Duration::from_secs(10));
    c.sessions += 1;
    c.abusive_sessions += 1;
    let mut burst = Vec::new();
    match rng.next_u64() % 4 {
        0 => {
            for _ in 0..(1 + rng.next_u64() % 5) {
                burst.extend(query_bytes(
                    "SELECT pg_sleep(0.02), tenant_id, n FROM torture_items",
                ));
            }
        }
        1 => burst.extend(query_bytes(
            "BEGIN; INSERT INTO torture_log (v) VALUES (-2)",
        )),
        2 => burst.extend_from_slice(&query_bytes("SELECT tenant_id FROM torture_items")[..7]),
        _ => {
            let sql = b"SELECT n FROM torture_items\0";
            burst.push(b'P');
            burst.extend_from_slice(&((4 + 1 + sql.len() + 2) as i32).to_be_bytes());
            burst.push(0);
            burst.extend_from_slice(sql);
            burst.extend_from_slice(&0i16.to_be_bytes());
            burst.extend_from_slice(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
            burst.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        }
    }
    conn.send(&burst);
    Ok(())
}

/// 100 clients over 10 tenants on pool_size = 4: a seeded random mix of
/// simple and extended queries, committed / rolled back / abandoned
/// transactions, errors, cancels and abrupt disconnects. Every row is
/// checked against the client's tenant; the pool must be whole at the end.
fn pool_torture(ctx: &Ctx) {
    torture_tables(ctx);
    let per_client: u64 = std::env::var("PGVPD_TORTURE_TX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let p = pool_proxy(
        ctx,
        "pool_size = 4\npool_checkout_timeout = 60\nlog_level = info\nmax_client_conn = 500\nworkers = 2",
    );
    let t0 = Instant::now();
    let port = p.port;
    let handles: Vec<_> = (0..100u64)
        .map(|i| {
            std::thread::spawn(move || -> Result<TortureCounts, String> {
                let k = i % TORTURE_TENANTS;
                let mut rng = XorShift::new(0x5eed_0000 + i);
                let mut c = TortureCounts::default();
                while c.transactions + c.late_cancels < per_client {
                    if rng.next_u64().is_multiple_of(8) {
                        abusive_session(port, k, &mut rng, &mut c)?;
                    } else {
                        driver_session(port, k, &mut rng, &mut c)?;
                    }
                }
                Ok(c)
            })
        })
        .collect();
    let mut total = TortureCounts::default();
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => total.add(c),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("client thread panicked".into()),
        }
    }
    let took = t0.elapsed();
    println!(
        "torture: {} transactions in {} sessions ({} abusive), {} rows checked, \
         {} foreign rows, {} wrong answers, {} cancels ({} landed on the next statement), {:.1} s",
        total.transactions,
        total.sessions,
        total.abusive_sessions,
        total.rows_checked,
        total.foreign_rows,
        total.wrong_answers.len(),
        total.cancels,
        total.late_cancels,
        took.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "client failures: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        total.foreign_rows, 0,
        "FOREIGN ROWS: {:?}",
        total.wrong_answers
    );
    assert!(
        total.wrong_answers.is_empty(),
        "wrong answers: {:?}",
        &total.wrong_answers[..total.wrong_answers.len().min(10)]
    );
    assert!(total.transactions + total.late_cancels >= 100 * per_client);
    assert!(total.rows_checked > 0 && total.cancels > 0);
    // No committed row of an abandoned transaction (v < 0) exists.
    assert_eq!(
        ctx.cluster
            .sql("SELECT count(*) FROM torture_log WHERE v < 0"),
        "0",
        "an abandoned transaction was committed"
    );
    // The pool is whole: four clients at once are served by at most four
    // backends, at once, and no more than four app_user backends exist.
    let mut held: Vec<RawConn> = (0..4)
        .map(|i| login(&p, &format!("app_user.t{i}")))
        .collect();
    let pids: BTreeSet<String> = held.iter_mut().map(|c| who(c).2).collect();
    assert_eq!(pids.len(), 4, "four clients at once: {pids:?}");
    assert_app_backends_at_most(ctx, 4);
    drop(held);
    let log = p.log();
    assert!(
        !log.contains("event=connection_panic"),
        "a connection panicked"
    );
    p.assert_alive();
}
