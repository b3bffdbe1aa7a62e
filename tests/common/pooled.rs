//! Helpers of the pool suites (`tests/pool.rs`, `tests/txn.rs`): a pooled
//! proxy, a pooled login and the one-row "who am I" query.

use super::fixtures::{APP_PASSWORD, DB};
use super::proxy::Proxy;
use super::raw::RawConn;
use super::runner::Ctx;

/// The password pooled clients authenticate with (not the upstream one).
pub const POOL_PASSWORD: &str = "pool-secret";

/// A proxy with `pool_mode = mode` logging in upstream as app_user (SCRAM).
pub fn pooled_proxy(ctx: &Ctx, mode: &str, extra: &str) -> Proxy {
    ctx.proxy(&format!(
        "pool_mode = {mode}\npool_password = {POOL_PASSWORD}\n\
         upstream_password = {APP_PASSWORD}\n{extra}"
    ))
}

/// A pooled client logged in as `user` with the pool password.
pub fn pooled_login(p: &Proxy, user: &str) -> RawConn {
    RawConn::login(p.port, user, DB, Some(POOL_PASSWORD))
        .unwrap_or_else(|e| panic!("pooled login as {user}: {e:?}"))
}

/// Tenant, names visible and the backend pid, in one row.
pub const WHO: &str = "SELECT current_setting('app.current_tenant_id') || ' ' || \
    coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM tenants), '') || ' ' || \
    pg_backend_pid()";

/// Runs [`WHO`]: (tenant, visible names, backend pid).
pub fn who(c: &mut RawConn) -> (String, String, String) {
    let row = c.query_one(WHO).expect("a row");
    let mut it = row.splitn(2, ' ');
    let t = it.next().unwrap_or_default().to_string();
    let rest = it.next().unwrap_or_default();
    let (names, pid) = rest.rsplit_once(' ').unwrap_or(("", ""));
    (t, names.to_string(), pid.to_string())
}

/// The `tenants` rows each fixture tenant may see.
pub fn names_of(tenant: &str) -> &'static str {
    match tenant {
        "tenant_a" => "Alice Corp,Alice LLC",
        "tenant_b" => "Bob Inc,Bob Ltd",
        _ => "",
    }
}

/// At most `max` app_user client backends exist (the pool is not larger
/// than its size, nothing leaked).
pub fn assert_app_backends_at_most(ctx: &Ctx, max: u32) {
    let backends = ctx.cluster.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_user' \
         AND backend_type = 'client backend'",
    );
    assert!(
        backends.parse::<u32>().unwrap_or(u32::MAX) <= max,
        "{backends} app_user backends with pool_size = {max}"
    );
}
