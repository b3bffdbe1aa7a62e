//! Tenant controls end to end (issue 7, first part): allow/deny on the
//! chosen tenant key, `tenant_max_connections` counted for authenticated
//! sessions only and exact under concurrency, `tenant_rate_limit`.
//! Same runner and cluster as `integration`.

mod common;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::fixtures::{APP_PASSWORD, DB};
use common::pooled::{POOL_PASSWORD, pooled_proxy};
use common::runner::{self, Case};
use common::{Ctx, ErrorInfo, Proxy, RawConn};

const CASES: &[Case] = &[
    ("tenant_v1_checks", tenant_v1_checks),
    ("tenant_key_multi_context", tenant_key_multi_context),
    ("tenant_limit_concurrent_50", tenant_limit_concurrent_50),
    (
        "tenant_limit_unauthenticated_flood",
        tenant_limit_unauthenticated_flood,
    ),
    ("tenant_rate_limit", tenant_rate_limit),
];

fn main() {
    runner::run(CASES);
}

fn login(p: &Proxy, user: &str, pooled: bool) -> Result<RawConn, ErrorInfo> {
    let pw = if pooled { POOL_PASSWORD } else { APP_PASSWORD };
    RawConn::login(p.port, user, DB, Some(pw))
}

/// pgvpd 1.0's checks 5.1–5.4 (behaviour §10.1), pool mode as there, and
/// passthrough too.
fn tenant_v1_checks(ctx: &Ctx) {
    for pooled in [true, false] {
        let conf = "tenant_deny = blocked_tenant\ntenant_max_connections = 2";
        let p = if pooled {
            pooled_proxy(ctx, "session", &format!("pool_size = 10\n{conf}"))
        } else {
            ctx.proxy(conf)
        };
        // 5.1
        let e = login(&p, "app_user.blocked_tenant", pooled)
            .err()
            .expect("denied");
        assert_eq!(e.code, "28000", "{e:?}");
        assert!(e.message.contains("denied"), "{e:?}");
        // 5.2
        let mut a = login(&p, "app_user.tenant_a", pooled).expect("tenant_a");
        assert_eq!(a.query_one("SELECT 1").as_deref(), Some("1"));
        // 5.3: a third concurrent tenant_a session is refused with "limit".
        let _b = login(&p, "app_user.tenant_a", pooled).expect("second tenant_a");
        let e = login(&p, "app_user.tenant_a", pooled)
            .err()
            .expect("third tenant_a");
        assert_eq!(e.code, "53300", "{e:?}");
        assert!(e.message.contains("limit"), "{e:?}");
        // 5.4: the limit is per tenant.
        let mut c = login(&p, "app_user.tenant_b", pooled).expect("tenant_b");
        assert_eq!(c.query_one("SELECT 1").as_deref(), Some("1"));
        // A slot comes back when its session ends.
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match login(&p, "app_user.tenant_a", pooled) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.code == "53300" => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("slot not released: {e:?}"),
            }
        }
        // A wrong password does not take a slot, nor does it learn anything.
        let e = RawConn::login(p.port, "app_user.tenant_b", DB, Some("wrong"))
            .err()
            .expect("bad pw");
        assert_ne!(e.code, "53300", "{e:?}");
        p.assert_alive();
    }
}

/// With two context variables, deny lists and limits apply to the chosen
/// key (pgvpd 1.0 compared the whole `a:b` payload, so `tenant_deny =
/// tenant_a` did not block `tenant_a:u1`).
fn tenant_key_multi_context(ctx: &Ctx) {
    let p = ctx.proxy("context_variables = app.ctx_a,app.ctx_b\ntenant_deny = tenant_a");
    let e = login(&p, "app_user.tenant_a:u1", false)
        .err()
        .expect("first variable denied");
    assert!(e.message.contains("denied"), "{e:?}");
    login(&p, "app_user.tenant_b:tenant_a", false).expect("tenant_a in the second variable");
    drop(p);
    let p = ctx.proxy(
        "context_variables = app.ctx_a,app.ctx_b\ntenant_key = app.ctx_b\ntenant_deny = u1\n\
         tenant_max_connections = 1",
    );
    let e = login(&p, "app_user.tenant_a:u1", false)
        .err()
        .expect("key app.ctx_b = u1 denied");
    assert!(e.message.contains("denied"), "{e:?}");
    let _held = login(&p, "app_user.tenant_a:u2", false).expect("u2");
    // Same key value, other first variable: the same tenant for the limit.
    let e = login(&p, "app_user.other:u2", false)
        .err()
        .expect("u2's one slot is taken");
    assert_eq!(e.code, "53300", "{e:?}");
    login(&p, "app_user.tenant_a:u3", false).expect("u3 is another tenant");
}

/// 50 simultaneous logins of one tenant with tenant_max_connections = 5
/// (two workers): exactly 5 hold sessions, the rest get 53300.
fn tenant_limit_concurrent_50(ctx: &Ctx) {
    for pooled in [false, true] {
        let conf = "tenant_max_connections = 5\nworkers = 2";
        let p = if pooled {
            pooled_proxy(ctx, "transaction", &format!("pool_size = 4\n{conf}"))
        } else {
            ctx.proxy(conf)
        };
        let p = Arc::new(p);
        let n = 50;
        let barrier = Arc::new(Barrier::new(n));
        let held = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (p, barrier, held) = (Arc::clone(&p), Arc::clone(&barrier), Arc::clone(&held));
                std::thread::spawn(move || {
                    barrier.wait();
                    match login(&p, "app_user.tenant_a", pooled) {
                        Ok(mut c) => {
                            assert_eq!(c.query_one("SELECT 1").as_deref(), Some("1"));
                            held.lock().unwrap().push(c);
                            true
                        }
                        Err(e) => {
                            assert_eq!(e.code, "53300", "{e:?}");
                            assert!(e.message.contains("limit"), "{e:?}");
                            false
                        }
                    }
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().expect("client thread"))
            .filter(|ok| *ok)
            .count();
        assert_eq!(
            admitted, 5,
            "pooled = {pooled}: never more, and no fewer, than the limit"
        );
        held.lock().unwrap().clear();
        p.assert_alive();
    }
}

/// Unauthenticated handshakes (the password never sent) do not take the
/// tenant's slots: the real tenant still logs in while they hang.
fn tenant_limit_unauthenticated_flood(ctx: &Ctx) {
    for pooled in [false, true] {
        let conf = "tenant_max_connections = 2\nhandshake_timeout = 30";
        let p = if pooled {
            pooled_proxy(ctx, "session", &format!("pool_size = 4\n{conf}"))
        } else {
            ctx.proxy(conf)
        };
        let mut flood = Vec::new();
        for _ in 0..40 {
            let mut c = RawConn::connect(p.port);
            c.startup(Some("app_user.tenant_a"), DB, &[]);
            // The authentication request arrives; it is never answered.
            let (t, _) = c.read_message().expect("an authentication request");
            assert_eq!(t, b'R');
            flood.push(c);
        }
        let mut a = login(&p, "app_user.tenant_a", pooled).expect("real tenant during the flood");
        let _b = login(&p, "app_user.tenant_a", pooled).expect("second real session");
        assert_eq!(a.query_one("SELECT 1").as_deref(), Some("1"));
        let e = login(&p, "app_user.tenant_a", pooled)
            .err()
            .expect("the limit still holds");
        assert_eq!(e.code, "53300", "{e:?}");
        drop(flood);
        p.assert_alive();
    }
}

/// tenant_rate_limit = 1: a burst gets at most 1 + (seconds elapsed) new
/// sessions; the rest 53300 "limit"; failed logins spend nothing.
fn tenant_rate_limit(ctx: &Ctx) {
    let p = ctx.proxy("tenant_rate_limit = 1");
    // Wrong passwords do not spend the tenant's budget.
    for _ in 0..5 {
        let e = RawConn::login(p.port, "app_user.tenant_a", DB, Some("wrong"))
            .err()
            .expect("bad pw");
        assert_ne!(e.code, "53300", "{e:?}");
    }
    let started = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    for _ in 0..10 {
        match login(&p, "app_user.tenant_a", false) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code, "53300", "{e:?}");
                assert!(e.message.contains("rate limit"), "{e:?}");
                limited += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(ok >= 1, "the first session of a full bucket is admitted");
    assert!(
        f64::from(ok) <= 1.0 + secs + 0.01,
        "{ok} sessions admitted in {secs:.2} s with 1 per second"
    );
    if secs < 8.0 {
        assert!(limited > 0, "10 logins in {secs:.2} s, none limited");
    }
    // Another tenant has its own bucket.
    login(&p, "app_user.tenant_b", false).expect("tenant_b");
}
