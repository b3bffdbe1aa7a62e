//! Context resolvers end to end (issue 6): SQL run after login that turns
//! the identity in the user name into more context, in every pool mode.
//! Same runner and cluster as `integration`; the memberships are the
//! fixture table `org_memberships` (tests/fixtures.sql), other tables
//! (`rz_*`) are made by the cases that use them.
//!
//! `cargo test --test resolvers` runs all cases; `-- cache` only those whose
//! name contains "cache".

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::pooled::{POOL_PASSWORD, pooled_proxy};
use common::runner::{self, Case};
use common::{Ctx, ErrorInfo, Proxy, RawConn};

const CASES: &[Case] = &[
    ("resolver_v1_checks", resolver_v1_checks),
    ("resolver_search_path_hijack", resolver_search_path_hijack),
    (
        "resolver_values_bound_verbatim",
        resolver_values_bound_verbatim,
    ),
    (
        "resolver_required_no_row_pools",
        resolver_required_no_row_pools,
    ),
    ("resolver_timeout_and_size", resolver_timeout_and_size),
    ("resolver_cache_single_flight", resolver_cache_single_flight),
    ("resolver_cache_bounded", resolver_cache_bounded),
    ("resolver_rows_modes", resolver_rows_modes),
    ("resolver_txn_reapplied", resolver_txn_reapplied),
    ("resolver_file_errors", resolver_file_errors),
    ("resolver_readme_example", resolver_readme_example),
];

fn main() {
    runner::run(CASES);
}

const USER: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const ORG: &str = "11111111-2222-3333-4444-555555555555";
const NOBODY: &str = "00000000-0000-0000-0000-000000000000";

/// pgvpd 1.0's resolver file (behaviour §10.1), on the fixture table
/// `org_memberships` (tests/fixtures.sql: USER is an active admin of ORG).
fn v1_resolver(extra: &str) -> String {
    format!("{}{extra}\n", pgvpd::testing::V1_RESOLVER_FILE)
}

/// Writes `toml` to a new file and returns the proxy config lines for it.
fn resolver_config(ctx: &Ctx, toml: &str, extra: &str) -> String {
    let dir: PathBuf = ctx.cluster.subdir("rz");
    let path = dir.join("resolvers.toml");
    std::fs::write(&path, toml).expect("write resolvers.toml");
    format!(
        "context_variables = app.user_id\nresolvers = {}\nlog_level = debug\n{extra}",
        path.display()
    )
}

fn passthrough(ctx: &Ctx, toml: &str, extra: &str) -> Proxy {
    ctx.proxy(&resolver_config(ctx, toml, extra))
}

fn pooled(ctx: &Ctx, mode: &str, toml: &str, extra: &str) -> Proxy {
    pooled_proxy(ctx, mode, &resolver_config(ctx, toml, extra))
}

/// Logs in as `app_user.<id>`; passthrough relays SCRAM to PostgreSQL,
/// pooled proxies take the pool password.
fn login_opts(
    p: &Proxy,
    id: &str,
    pooled: bool,
    params: &[(&str, &str)],
) -> Result<RawConn, ErrorInfo> {
    let mut c = RawConn::connect(p.port);
    let user = format!("app_user.{id}");
    c.startup(Some(&user), DB, params);
    let pw = if pooled { POOL_PASSWORD } else { APP_PASSWORD };
    c.auth_trust_or_cleartext(Some(pw))?;
    Ok(c)
}

fn login(p: &Proxy, id: &str, pooled: bool) -> Result<RawConn, ErrorInfo> {
    login_opts(p, id, pooled, &[])
}

fn setting(c: &mut RawConn, name: &str) -> String {
    c.query_one(&format!("SELECT current_setting('{name}', true)"))
        .unwrap_or_default()
}

/// 1.0's checks 3.1, 3.1b, 3.2, 3.3 (cache hit, now counted per session).
fn resolver_v1_checks(ctx: &Ctx) {
    let p = passthrough(ctx, &v1_resolver(""), "");
    let mut c = login(&p, USER, false).expect("login");
    assert_eq!(setting(&mut c, "app.org_id"), ORG, "3.1");
    assert_eq!(setting(&mut c, "app.org_role"), "admin", "3.1b");
    assert_eq!(setting(&mut c, "app.user_id"), USER);
    // The resolver ran as the login role; the session then has the role.
    assert_eq!(
        c.query_one("SELECT current_user").as_deref(),
        Some("app_user")
    );
    drop(c);
    // 3.2: no membership: empty (fail closed), the session still opens.
    let mut c = login(&p, NOBODY, false).expect("login with no membership");
    assert_eq!(setting(&mut c, "app.org_id"), "", "3.2");
    assert_eq!(setting(&mut c, "app.org_role"), "");
    drop(c);
    // 3.3: the second session of USER is served by the cache.
    let mut c = login(&p, USER, false).expect("login");
    assert_eq!(setting(&mut c, "app.org_id"), ORG);
    drop(c);
    let log = p.log();
    let done: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("resolvers_done"))
        .collect();
    assert_eq!(done.len(), 3, "one resolvers_done line per session:\n{log}");
    assert!(
        done[0].contains("cache_hits=0") && done[0].contains("queries=1"),
        "{}",
        done[0]
    );
    assert!(
        done[2].contains("cache_hits=1") && done[2].contains("queries=0"),
        "{}",
        done[2]
    );
}

/// A client's search_path (startup options) cannot change what a resolver
/// reads: schema `evil` shadows the table, yet the context is the same.
fn resolver_search_path_hijack(ctx: &Ctx) {
    ctx.cluster.sql(&format!(
        "DROP SCHEMA IF EXISTS evil CASCADE; CREATE SCHEMA evil;
         GRANT USAGE ON SCHEMA evil TO app_user;
         CREATE TABLE evil.org_memberships (user_id uuid, org_id uuid, role text, is_active bool);
         INSERT INTO evil.org_memberships VALUES ('{USER}', '{NOBODY}', 'owner', true);
         GRANT SELECT ON evil.org_memberships TO app_user;"
    ));
    let toml = v1_resolver("").replace("cache_ttl = 60", "cache_ttl = 0");
    for mode in ["none", "session", "transaction"] {
        let p = match mode {
            "none" => passthrough(ctx, &toml, ""),
            m => pooled(ctx, m, &toml, ""),
        };
        let pooled = mode != "none";
        // Passthrough relays the startup parameters to PostgreSQL; pool
        // modes apply them (allow-listed) after the resolvers. Either way the
        // resolver's own search_path wins.
        let attempts: [&[(&str, &str)]; 3] = [
            &[],
            &[("options", "-c search_path=evil,public")],
            &[("search_path", "evil, public")],
        ];
        for params in attempts {
            let mut c = login_opts(&p, USER, pooled, params)
                .unwrap_or_else(|e| panic!("{mode} {params:?}: {e:?}"));
            assert_eq!(setting(&mut c, "app.org_id"), ORG, "{mode} {params:?}");
            assert_eq!(
                setting(&mut c, "app.org_role"),
                "admin",
                "{mode} {params:?}"
            );
            if !params.is_empty() {
                // The session itself does see the shadow table first.
                assert_eq!(
                    c.query_one("SELECT role FROM org_memberships LIMIT 1")
                        .as_deref(),
                    Some("owner"),
                    "{mode} {params:?}: the client's own search_path applies to the client"
                );
            }
        }
    }
    ctx.cluster.sql("DROP SCHEMA evil CASCADE");
}

/// Values travel as bound parameters: `$1`, quotes and backslashes in an
/// identity or in a resolved value reach the next query verbatim.
fn resolver_values_bound_verbatim(ctx: &Ctx) {
    ctx.cluster.sql(
        "CREATE TABLE IF NOT EXISTS rz_echo (k text, v text);
         TRUNCATE rz_echo;
         GRANT SELECT ON rz_echo TO app_user;",
    );
    let tricky = [
        r"plain",
        r"it's",
        r"$1",
        r"$1 $2 '$1' \x \\ '' ; --",
        r#"quote " and \' and $$ dollar $$"#,
    ];
    for (i, t) in tricky.iter().enumerate() {
        ctx.cluster
            .sql(&format!("INSERT INTO rz_echo VALUES ('k{i}', $v${t}$v$)"));
    }
    let toml = r#"
[[resolver]]
name = "echo"
query = "SELECT $1::text AS same, (SELECT v FROM rz_echo WHERE k = $1) AS stored"
params = ["app.user_id"]
inject = { "app.echo" = "same", "app.stored" = "stored" }

[[resolver]]
name = "second"
depends_on = ["echo"]
# the stored value (with its $1, quotes, backslashes) is a parameter again
query = "SELECT $1 || '|' || $2 AS joined"
params = ["app.stored", "app.echo"]
inject = { "app.joined" = "joined" }
"#;
    let p = passthrough(ctx, toml, "");
    for (i, t) in tricky.iter().enumerate() {
        let id = format!("k{i}");
        let mut c = login(&p, &id, false).expect("login");
        assert_eq!(setting(&mut c, "app.echo"), id);
        assert_eq!(setting(&mut c, "app.stored"), *t, "stored value {i}");
        assert_eq!(setting(&mut c, "app.joined"), format!("{t}|{id}"));
    }
    // The identity itself carries the tricky text (passthrough user names may).
    for t in tricky {
        let mut c = login(&p, t, false).expect("login");
        assert_eq!(setting(&mut c, "app.echo"), t);
        assert_eq!(setting(&mut c, "app.stored"), "", "no row for an identity");
    }
}

/// A required resolver with no row refuses the session (28000) in every
/// mode, more times than pool_size, and the pool keeps serving.
fn resolver_required_no_row_pools(ctx: &Ctx) {
    let toml = v1_resolver("").replace("required = false", "required = true");
    for mode in ["none", "session", "transaction"] {
        let p = match mode {
            "none" => passthrough(ctx, &toml, ""),
            m => pooled(ctx, m, &toml, "pool_size = 2\npool_checkout_timeout = 5"),
        };
        let pooled = mode != "none";
        for round in 0..6 {
            let e = login(&p, NOBODY, pooled).err().unwrap_or_else(|| {
                panic!("{mode} round {round}: a required resolver without a row must refuse")
            });
            assert_eq!(e.severity, "FATAL", "{e:?}");
            assert_eq!(e.code, "28000", "{e:?}");
            assert!(
                e.message
                    .contains("required resolver 'org_membership' returned no rows"),
                "{e:?}"
            );
        }
        // Not shrunk: two sessions at once still get servers.
        let mut a = login(&p, USER, pooled).expect("after refusals");
        let mut b = login(&p, USER, pooled).expect("after refusals");
        assert_eq!(setting(&mut a, "app.org_id"), ORG);
        assert_eq!(setting(&mut b, "app.org_role"), "admin");
        p.assert_alive();
    }
}

/// A resolver slower than its timeout, and one returning 1 MB, fail
/// cleanly and quickly; a 10 kB value works; the pool survives both.
fn resolver_timeout_and_size(ctx: &Ctx) {
    let toml = r#"
[[resolver]]
name = "slow_or_big"
query = """
SELECT CASE WHEN $1 = 'slow' THEN pg_sleep(30)::text
            WHEN $1 = 'big' THEN repeat('x', 1000000)
            WHEN $1 = 'mid' THEN repeat('y', 10000)
            ELSE 'quick' END AS v
"""
params = ["app.user_id"]
inject = { "app.v" = "v" }
timeout = 1
"#;
    for mode in ["none", "transaction"] {
        let p = match mode {
            "none" => passthrough(ctx, toml, ""),
            m => pooled(ctx, m, toml, "pool_size = 1\npool_checkout_timeout = 10"),
        };
        let pooled = mode != "none";
        let t = Instant::now();
        let e = login(&p, "slow", pooled)
            .err()
            .expect("slow resolver must fail");
        let took = t.elapsed();
        assert_eq!(e.code, "57014", "{mode}: {e:?}");
        assert!(
            e.message.contains("resolver 'slow_or_big' timed out"),
            "{e:?}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{mode}: failed after {took:?}"
        );
        let e = login(&p, "big", pooled)
            .err()
            .expect("1 MB value must fail cleanly");
        assert_eq!(e.code, "54000", "{mode}: {e:?}");
        assert!(e.message.contains("slow_or_big"), "{e:?}");
        let mut c = login(&p, "mid", pooled).expect("10 kB value");
        assert_eq!(setting(&mut c, "app.v"), "y".repeat(10_000));
        drop(c);
        let mut c = login(&p, "other", pooled).expect("pool still serves");
        assert_eq!(setting(&mut c, "app.v"), "quick");
        p.assert_alive();
    }
}

/// Concurrent misses for one identity run the query once; hits are counted.
fn resolver_cache_single_flight(ctx: &Ctx) {
    ctx.cluster.sql(
        "DROP SEQUENCE IF EXISTS rz_calls; CREATE SEQUENCE rz_calls;
         GRANT USAGE ON SEQUENCE rz_calls TO app_user;",
    );
    // Slow enough that the others arrive while the first one runs.
    let toml = r#"
[[resolver]]
name = "counted"
query = """
SELECT m.org_id::text AS org_id, nextval('rz_calls') AS n, pg_sleep(0.3)::text AS z
FROM org_memberships m WHERE m.user_id = $1::uuid AND m.is_active
"""
params = ["app.user_id"]
inject = { "app.org_id" = "org_id", "app.call" = "n" }
cache_ttl = 60
"#;
    let p = Arc::new(passthrough(ctx, toml, "workers = 2"));
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (p, barrier) = (Arc::clone(&p), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut c = login(&p, USER, false).expect("login");
                (setting(&mut c, "app.org_id"), setting(&mut c, "app.call"))
            })
        })
        .collect();
    for h in handles {
        let (org, call) = h.join().expect("client thread");
        assert_eq!(org, ORG);
        assert_eq!(call, "1", "every session got the one query's result");
    }
    assert_eq!(
        ctx.cluster.sql("SELECT last_value FROM rz_calls"),
        "1",
        "one query"
    );
    let log = p.log();
    let hits = log
        .lines()
        .filter(|l| l.contains("resolvers_done") && l.contains("cache_hits=1"))
        .count();
    assert_eq!(hits, n - 1, "{log}");
}

/// The cache holds at most resolver_cache_size entries and never hands one
/// identity's result to another.
fn resolver_cache_bounded(ctx: &Ctx) {
    ctx.cluster.sql(
        "DROP SEQUENCE IF EXISTS rz_calls2; CREATE SEQUENCE rz_calls2;
         GRANT USAGE ON SEQUENCE rz_calls2 TO app_user;",
    );
    let toml = r#"
[[resolver]]
name = "who"
query = "SELECT 'org-of-' || $1 AS org, nextval('rz_calls2') AS n"
params = ["app.user_id"]
inject = { "app.org" = "org", "app.n" = "n" }
cache_ttl = 60
"#;
    let p = passthrough(ctx, toml, "resolver_cache_size = 2");
    let org_of = |id: &str| {
        let mut c = login(&p, id, false).expect("login");
        (setting(&mut c, "app.org"), setting(&mut c, "app.n"))
    };
    let (o1, n1) = org_of("u1");
    let (o2, n2) = org_of("u2");
    assert_eq!((o1.as_str(), o2.as_str()), ("org-of-u1", "org-of-u2"));
    assert_ne!(n1, n2);
    // Both cached.
    assert_eq!(org_of("u1"), (o1.clone(), n1.clone()));
    assert_eq!(org_of("u2"), (o2.clone(), n2.clone()));
    // A third identity evicts the least recently used (u1).
    let (o3, _) = org_of("u3");
    assert_eq!(o3, "org-of-u3");
    assert_eq!(
        org_of("u2"),
        (o2, n2),
        "u2 was used more recently: still cached"
    );
    let (o1b, n1b) = org_of("u1");
    assert_eq!(o1b, "org-of-u1");
    assert_ne!(n1b, n1, "u1 was evicted: queried again");
    // Identities that differ only slightly never share an entry.
    for id in ["x", "x ", " x", "X", "x\\", "x'"] {
        let (o, _) = org_of(id);
        assert_eq!(o, format!("org-of-{id}"));
    }
}

/// `rows = "one"` refuses a second row; `"first"` takes the first;
/// `"array"` joins the column into an array literal; a missing result
/// column and an unknown param are errors, not silent empties.
fn resolver_rows_modes(ctx: &Ctx) {
    ctx.cluster.sql(
        "CREATE TABLE IF NOT EXISTS rz_grants (user_id text, item text);
         TRUNCATE rz_grants;
         INSERT INTO rz_grants VALUES ('u', 'a'), ('u', 'b,c'), ('u', 'quote\"d'), ('u', NULL), ('v', 'only');
         GRANT SELECT ON rz_grants TO app_user;",
    );
    let toml = |rows: &str, col: &str| {
        format!(
            r#"
[[resolver]]
name = "grants"
query = "SELECT item FROM rz_grants WHERE user_id = $1 ORDER BY item NULLS LAST"
params = ["app.user_id"]
inject = {{ "app.items" = "{col}" }}
rows = "{rows}"
"#
        )
    };
    let p = passthrough(ctx, &toml("array", "item"), "");
    let mut c = login(&p, "u", false).expect("login");
    let items = setting(&mut c, "app.items");
    assert_eq!(items, r#"{"a","b,c","quote\"d"}"#);
    assert_eq!(
        c.query_one("SELECT array_length(current_setting('app.items')::text[], 1)")
            .as_deref(),
        Some("3"),
        "a valid array literal"
    );
    drop(c);
    let mut c = login(&p, "nobody", false).expect("login");
    assert_eq!(setting(&mut c, "app.items"), "");
    drop(c);
    drop(p);

    let p = passthrough(ctx, &toml("one", "item"), "");
    let e = login(&p, "u", false)
        .err()
        .expect("rows = one with three rows");
    assert_eq!(e.code, "21000", "{e:?}");
    let mut c = login(&p, "v", false).expect("one row is fine");
    assert_eq!(setting(&mut c, "app.items"), "only");
    drop(c);
    drop(p);

    let p = passthrough(ctx, &toml("first", "item"), "");
    let mut c = login(&p, "u", false).expect("login");
    assert_eq!(setting(&mut c, "app.items"), "a");
    drop(c);
    drop(p);

    let p = passthrough(ctx, &toml("first", "no_such_column"), "");
    let e = login(&p, "u", false).err().expect("missing column");
    assert_eq!(e.code, "42703", "{e:?}");
    assert!(e.message.contains("no_such_column"), "{e:?}");
    drop(p);

    // An SQL error in the resolver: the server's SQLSTATE and text.
    let bad = toml("first", "item").replace("rz_grants", "rz_no_such_table");
    let p = passthrough(ctx, &bad, "");
    let e = login(&p, "u", false).err().expect("query error");
    assert_eq!(e.code, "42P01", "{e:?}");
    assert!(e.message.contains("resolver 'grants' failed"), "{e:?}");
}

/// Transaction mode: the resolved context is part of the client's step,
/// so it is right in every transaction whichever server runs it.
fn resolver_txn_reapplied(ctx: &Ctx) {
    let toml = r#"
[[resolver]]
name = "org"
query = "SELECT 'org-of-' || $1 AS org"
params = ["app.user_id"]
inject = { "app.org" = "org" }
cache_ttl = 60
"#;
    let p = pooled(ctx, "transaction", toml, "pool_size = 1");
    let mut a = login(&p, "alice", true).expect("alice");
    let mut b = login(&p, "bob", true).expect("bob");
    for _ in 0..5 {
        // Tampering in one transaction does not survive into the next.
        a.simple_query("SELECT set_config('app.org', 'org-of-bob', false)")
            .expect("tamper");
        assert_eq!(setting(&mut b, "app.org"), "org-of-bob");
        assert_eq!(setting(&mut a, "app.org"), "org-of-alice");
        assert_eq!(setting(&mut b, "app.user_id"), "bob");
    }
}

/// Load errors name the file, the line and the problem; the proxy does not start.
fn resolver_file_errors(ctx: &Ctx) {
    let cases: &[(&str, &str)] = &[
        (
            "[[resolver]]\nname = \"a\"\nquery = \"SELECT 1 AS x\"\ninject = { \"app.x\" = \"x\" }\ncache-ttl = 5\n",
            "line 5",
        ),
        (
            "[[resolver]]\nname = \"a\"\nquery = \"SELECT $1 AS x\"\ninject = { \"app.x\" = \"x\" }\n",
            "$1",
        ),
        (
            "[[resolver]]\nname = \"a\"\nquery = \"SELECT 1 AS x\"\ninject = { \"app.x\" = \"x\" }\ndepends_on = [\"b\"]\n",
            "'b'",
        ),
        (
            "[[resolver]]\nname = \"a\"\nquery = \"SELECT $1 AS x\"\nparams = [\"app.nope\"]\ninject = { \"app.x\" = \"x\" }\n",
            "app.nope",
        ),
        ("# nothing\n", "[[resolver]]"),
        ("[[resolver]]\nname = \"a\nquery = 1\n", "line 2"),
    ];
    for (toml, want) in cases {
        let dir = ctx.cluster.subdir("rz-bad");
        let path = dir.join("r.toml");
        std::fs::write(&path, toml).expect("write");
        let conf = dir.join("pgvpd.conf");
        std::fs::write(
            &conf,
            format!(
                "context_variables = app.user_id\nresolvers = {}\n",
                path.display()
            ),
        )
        .expect("write conf");
        let mut cmd = std::process::Command::new(common::proxy_binary());
        cmd.args(["--config", conf.to_str().expect("utf-8"), "--check-config"]);
        let out = common::run_command(cmd, "pgvpd", &[], Duration::from_secs(10));
        assert!(!out.success(), "must be refused: {toml}");
        let text = format!("{}\n{}", out.stdout, out.stderr);
        assert!(text.contains("r.toml"), "names the file: {text}");
        assert!(text.contains(want), "expected {want:?} in: {text}");
    }
}

/// The fenced block of README.md that follows the line containing `marker`.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).expect("README");
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README lacks {marker:?}"));
    let start = readme[..at].rfind("```").expect("block start");
    let body = &readme[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("block end")].to_string()
}

/// README's worked example, exactly as written there: its resolver file
/// and its `pgvpd_protect_acl` call, through the proxy.
fn resolver_readme_example(ctx: &Ctx) {
    let other_org = "99999999-9999-9999-9999-999999999999";
    let viewer = "bbbbbbbb-0000-0000-0000-000000000002";
    let someone = "dddddddd-0000-0000-0000-000000000003";
    ctx.cluster.sql(&format!(
        "DROP TABLE IF EXISTS cases, case_grants CASCADE;
         CREATE TABLE cases (id uuid PRIMARY KEY, title text, owner_id uuid, org_id uuid);
         CREATE TABLE case_grants (org_id uuid, case_id uuid);
         INSERT INTO cases VALUES
           ('cccccccc-0000-0000-0000-000000000001', 'own', '{USER}', '{ORG}'),
           ('cccccccc-0000-0000-0000-000000000002', 'colleague', '{someone}', '{ORG}'),
           ('cccccccc-0000-0000-0000-000000000003', 'other org', '{someone}', '{other_org}'),
           ('cccccccc-0000-0000-0000-000000000004', 'granted', '{someone}', '{other_org}'),
           ('cccccccc-0000-0000-0000-000000000005', 'viewer own', '{viewer}', '{other_org}');
         INSERT INTO case_grants VALUES ('{ORG}', 'cccccccc-0000-0000-0000-000000000004');
         GRANT SELECT ON case_grants TO app_user;
         DELETE FROM org_memberships WHERE user_id = '{viewer}';
         INSERT INTO org_memberships VALUES ('{viewer}', '{ORG}', 'viewer', true);"
    ));
    let toml = readme_block("# /etc/pgvpd/resolvers.toml");
    let sql = readme_block("SELECT pgvpd_protect_acl('cases'");
    ctx.cluster.sql(&sql);
    let p = passthrough(ctx, &toml, "");
    let titles = |id: &str| -> Result<String, ErrorInfo> {
        let mut c = login(&p, id, false)?;
        Ok(
            c.query_one("SELECT string_agg(title, ',' ORDER BY title) FROM cases")
                .unwrap_or_default(),
        )
    };
    // Owner of one, admin of the org (its other case), and the org's grant.
    assert_eq!(titles(USER).expect("admin"), "colleague,granted,own");
    // A viewer of the same org: its own case and the org's grant, not the
    // org's other cases (the admin path's `when` does not hold).
    assert_eq!(titles(viewer).expect("viewer"), "granted,viewer own");
    // No membership: `required = true` refuses the login.
    let e = titles(NOBODY).expect_err("no membership");
    assert_eq!(e.code, "28000", "{e:?}");
    ctx.cluster.sql(&format!(
        "DROP TABLE cases, case_grants; DELETE FROM org_memberships WHERE user_id = '{viewer}'"
    ));
}
