//! `make demo`: a throw-away PostgreSQL with the SQL kit and a `todos` table,
//! pgvpd in front of it, two tenants' sessions side by side, then a live
//! proxy to play with until Ctrl-C. `PGVPD_DEMO_EXIT=1` exits right after
//! printing (non-interactive smoke test).

mod common;

use common::{Cluster, ClusterOpts, Proxy, fixtures, psql};

const PASSWORD: &str = "demo";

const DEMO_SQL: &str = "
ALTER ROLE app_user PASSWORD 'demo';
DROP TABLE IF EXISTS todos;
CREATE TABLE todos (
    id        serial PRIMARY KEY,
    tenant_id text NOT NULL,
    title     text NOT NULL,
    done      boolean NOT NULL DEFAULT false
);
INSERT INTO todos (tenant_id, title, done) VALUES
    ('acme',   'Order more anvils',          false),
    ('acme',   'Test the rocket skates',     true),
    ('acme',   'Invoice W. E. Coyote',       false),
    ('globex', 'Hire a new cypress manager', false),
    ('globex', 'Move HQ to Cypress Creek',   true);
SELECT pgvpd_protect('todos');
";

fn main() {
    // Before any thread exists, so every thread inherits the mask and only
    // wait_signal() sees SIGINT/SIGTERM; children get their own process group
    // so a terminal Ctrl-C reaches only us and we stop them in order.
    pgvpd::sys::block_signals().expect("block signals");
    common::isolate_children();

    println!("== starting a throw-away PostgreSQL");
    let cluster = Cluster::start(ClusterOpts {
        max_connections: 100,
        ..ClusterOpts::default()
    });
    cluster.sql_file(&fixtures::setup_sql_path());
    cluster.sql(DEMO_SQL);
    println!(
        "   127.0.0.1:{} (data in {})",
        cluster.port,
        cluster.dir.display()
    );

    println!("== starting pgvpd ({})", common::proxy_binary().display());
    let proxy = Proxy::start(&cluster, "log_level = info");
    println!("   listening on 127.0.0.1:{}", proxy.port);

    let sql = "SELECT id, title, CASE WHEN done THEN 'done' ELSE 'open' END AS status \
               FROM todos ORDER BY id";
    let mut ok = true;
    for tenant in ["acme", "globex"] {
        let user = format!("app_user.{tenant}");
        println!("\n== psql as {user}: {sql}");
        let out = psql(proxy.port, &user, Some(PASSWORD), "postgres", sql);
        if out.success() {
            for line in out.out().lines() {
                println!("   {}", line.replace('|', "  |  "));
            }
        } else {
            ok = false;
            println!("   FAILED (exit {}): {}", out.status, out.stderr.trim());
        }
    }
    let out = psql(
        proxy.port,
        "postgres",
        None,
        "postgres",
        "SELECT count(*) FROM todos",
    );
    println!(
        "\n== psql as postgres (superuser bypass, relayed untouched): {} rows",
        out.out()
    );

    println!(
        "\nConnect yourself:\n  psql \"host=127.0.0.1 port={} user=app_user.acme password={PASSWORD} dbname=postgres\"",
        proxy.port
    );
    println!("  (try user=app_user.globex, or an unknown tenant: it sees no rows)");

    if std::env::var_os("PGVPD_DEMO_EXIT").is_some() {
        println!("\nPGVPD_DEMO_EXIT set: stopping.");
    } else {
        println!("\nPress Ctrl-C to stop.");
        let _ = pgvpd::sys::wait_signal();
        println!("\nstopping.");
    }
    if !ok {
        println!("--- pgvpd log (tail) ---\n{}", proxy.log_tail(30));
    }
    drop(proxy);
    drop(cluster);
    std::process::exit(if ok { 0 } else { 1 });
}
