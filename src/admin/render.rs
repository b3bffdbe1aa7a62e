//! The bodies of `/metrics` and `/status`, built from the process counters
//! ([`crate::stats::Stats`]) and a [`View`] of the rest (pool buckets, resolver cache size,
//! uptime). Pure: reading the atomics is all it does.
//!
//! pgvpd 1.0's metric names and HELP texts are kept for what exists here (behaviour §7.2);
//! every other counter of `Stats` is `pgvpd_<field>_total` ([`OWN_COUNTERS`]). A unit test
//! fails when `Stats` grows a field that is not rendered, so a new counter cannot be
//! forgotten here.

use std::sync::atomic::AtomicU64;

use super::json::Json;
use super::pools::PoolBucket;
use super::prom::{Exposition, Kind};
use crate::stats::{HistogramSnapshot, Stats, get};
use crate::tenant::TenantSummary;

/// What `/metrics` and `/status` show besides the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub workers: usize,
    /// Pooling configured (`pool_mode` session or transaction): the pool gauges are shown.
    pub pooling: bool,
    /// Merged and sorted ([`super::PoolSnapshots::collect`]).
    pub buckets: Vec<PoolBucket>,
    /// Entries in the resolver cache; `None` without resolvers.
    pub resolver_cache_size: Option<u64>,
    /// `POST /pause` in force.
    pub paused: bool,
    /// Tenants in the registry (live sessions or recent logins).
    pub tenants_tracked: u64,
    /// The most active tenants ([`TOP_TENANTS`] at most) and the sum of the others.
    pub tenants: Vec<TenantSummary>,
    pub tenant_other: Option<TenantSummary>,
    /// Process-wide latency histograms ([`crate::stats::LATENCY`]).
    pub session_start: HistogramSnapshot,
    pub checkout_wait: HistogramSnapshot,
}

/// Tenants shown by name in `/metrics` and `/status`; the others are summed
/// into one `other` series, so the series count is bounded whatever the number
/// of tenants.
pub const TOP_TENANTS: usize = 20;

type TenantField = (&'static str, Kind, &'static str, fn(&TenantSummary) -> u64);

const TENANT_SERIES: [TenantField; 3] = [
    (
        "pgvpd_tenant_sessions_open",
        Kind::Gauge,
        "Sessions open per tenant (top tenants by activity; bucket=\"other\" sums the rest).",
        |t| t.sessions,
    ),
    (
        "pgvpd_tenant_sessions_admitted_total",
        Kind::Counter,
        "Sessions admitted per tenant while it is tracked (restarts when an idle tenant is evicted).",
        |t| t.sessions_total,
    ),
    (
        "pgvpd_tenant_sessions_refused_total",
        Kind::Counter,
        "Sessions refused by tenant_max_connections or tenant_rate_limit, per tenant.",
        |t| t.rejected,
    ),
];

/// The tenant rows with their labels: `tenant` and `bucket` (`top` for a named
/// tenant, `other` for the sum), so a tenant named "other" stays distinct.
fn tenant_rows(v: &View) -> impl Iterator<Item = (&TenantSummary, &'static str)> {
    v.tenants
        .iter()
        .map(|t| (t, "top"))
        .chain(v.tenant_other.iter().map(|t| (t, "other")))
}

type Field = fn(&Stats) -> &AtomicU64;
type BucketGauge = (&'static str, &'static str, fn(&PoolBucket) -> u32);

/// Counters of [`Stats`] that pgvpd 1.0 did not have: `(field, HELP)`; the metric is
/// `pgvpd_<field>_total` and the `/status` key (under `"counters"`) is `<field>`.
pub const OWN_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "sessions_started",
        "Sessions whose tenant context was set and released to the client.",
        |s| &s.sessions_started,
    ),
    (
        "refused_max_clients",
        "Connections refused because max_client_conn was reached.",
        |s| &s.refused_max_clients,
    ),
    (
        "panics",
        "Connections closed because handling them panicked (a bug; see the log).",
        |s| &s.panics,
    ),
    (
        "protocol_errors",
        "Protocol violations by either peer.",
        |s| &s.protocol_errors,
    ),
    (
        "handshake_timeouts",
        "Handshakes that hit handshake_timeout.",
        |s| &s.handshake_timeouts,
    ),
    (
        "cancels_forwarded",
        "Cancel requests forwarded upstream.",
        |s| &s.cancels_forwarded,
    ),
    (
        "accept_pauses",
        "Times accepting paused because file descriptors ran out.",
        |s| &s.accept_pauses,
    ),
    (
        "auth_failures",
        "Pooled clients whose password or SCRAM proof was wrong.",
        |s| &s.auth_failures,
    ),
    (
        "pool_handoffs",
        "Pooled clients moved to the worker that owns their pool.",
        |s| &s.pool_handoffs,
    ),
    (
        "pool_tenant_cap_waits",
        "Pool checkouts that waited because their tenant held tenant_max_servers servers of the pool.",
        |s| &s.pool_tenant_cap_waits,
    ),
    (
        "tx_step_failures",
        "Transaction mode: context steps that failed (client closed, server dropped).",
        |s| &s.tx_step_failures,
    ),
    (
        "tx_step_skips",
        "Transaction mode: transactions whose context step was skipped (the server's last context was the client's).",
        |s| &s.tx_step_skips,
    ),
    (
        "tx_returns",
        "Transaction mode: servers returned to the pool between transactions.",
        |s| &s.tx_returns,
    ),
    (
        "tx_parks",
        "Transaction mode: servers left parked with their idle client (no waiter).",
        |s| &s.tx_parks,
    ),
    (
        "tx_reprepares",
        "Transaction mode: client statements prepared again on another server.",
        |s| &s.tx_reprepares,
    ),
    (
        "tx_resets",
        "Transaction mode: servers reset after a transaction that may have left session objects.",
        |s| &s.tx_resets,
    ),
    (
        "resolver_refusals",
        "Sessions refused by a resolver (error, no row, timeout, size).",
        |s| &s.resolver_refusals,
    ),
    (
        "client_idle_timeouts",
        "Sessions ended by client_idle_timeout (idle outside a transaction, 57P05).",
        |s| &s.client_idle_timeouts,
    ),
    (
        "idle_transaction_timeouts",
        "Sessions ended by idle_transaction_timeout (idle inside a transaction, 25P03).",
        |s| &s.idle_transaction_timeouts,
    ),
    (
        "query_timeouts",
        "Queries that ran past query_timeout (cancelled with 57014).",
        |s| &s.query_timeouts,
    ),
    (
        "query_timeout_closes",
        "Query timeouts whose cancel did not end the query within the grace (session and server closed).",
        |s| &s.query_timeout_closes,
    ),
    (
        "session_lifetime_ends",
        "Sessions ended at an idle moment after session_lifetime (57P01).",
        |s| &s.session_lifetime_ends,
    ),
];

/// Fields of [`Stats`] rendered under pgvpd 1.0's names (checked against `size_of::<Stats>`).
#[cfg(test)]
const V1_FIELDS: usize = 13;

/// pgvpd 1.0's pool counters: (metric, HELP, `/status` key, field).
const POOL_COUNTERS: &[(&str, &str, &str, Field)] = &[
    (
        "pgvpd_pool_checkouts_total",
        "Total pool checkouts.",
        "checkouts",
        |s| &s.pool_checkouts,
    ),
    (
        "pgvpd_pool_reuses_total",
        "Pool connections reused from idle.",
        "reuses",
        |s| &s.pool_reuses,
    ),
    (
        "pgvpd_pool_creates_total",
        "New pool connections created.",
        "creates",
        |s| &s.pool_creates,
    ),
    (
        "pgvpd_pool_checkins_total",
        "Pool connections returned.",
        "checkins",
        |s| &s.pool_checkins,
    ),
    (
        "pgvpd_pool_discards_total",
        "Pool connections discarded on checkin failure.",
        "discards",
        |s| &s.pool_discards,
    ),
    (
        "pgvpd_pool_timeouts_total",
        "Pool checkout timeouts.",
        "timeouts",
        |s| &s.pool_timeouts,
    ),
];

/// pgvpd 1.0's `tenant_timeouts`: its `tenant_query_timeout` is `query_timeout` here, and its
/// one timer is split into the four session timeouts; this is how often any of them fired.
fn tenant_timeouts(s: &Stats) -> u64 {
    [
        &s.client_idle_timeouts,
        &s.idle_transaction_timeouts,
        &s.query_timeouts,
        &s.session_lifetime_ends,
    ]
    .into_iter()
    .map(get)
    .fold(0, u64::saturating_add)
}

/// The `/metrics` body (Prometheus text format 0.0.4).
pub fn metrics(s: &Stats, v: &View) -> String {
    let mut e = Exposition::new();
    e.single(
        "pgvpd_connections_total",
        Kind::Counter,
        "Total connections accepted.",
        get(&s.connections_total),
    );
    e.single(
        "pgvpd_connections_active",
        Kind::Gauge,
        "Currently active connections.",
        get(&s.connections_active),
    );
    if v.pooling {
        let gauges: [BucketGauge; 3] = [
            (
                "pgvpd_pool_connections_total",
                "Total connections in pool bucket.",
                |b| b.total,
            ),
            (
                "pgvpd_pool_connections_idle",
                "Idle connections in pool bucket.",
                |b| b.idle,
            ),
            (
                "pgvpd_pool_clients_waiting",
                "Clients waiting for a server in pool bucket.",
                |b| b.waiting,
            ),
        ];
        for (name, help, value) in gauges {
            e.family(name, Kind::Gauge, help, |f| {
                for b in &v.buckets {
                    let labels = [("database", b.database.as_str()), ("role", b.role.as_str())];
                    f.sample(&labels, u64::from(value(b)));
                }
            });
        }
    }
    for (name, help, _, field) in POOL_COUNTERS {
        e.single(name, Kind::Counter, help, get(field(s)));
    }
    if let Some(size) = v.resolver_cache_size {
        e.single(
            "pgvpd_resolver_cache_size",
            Kind::Gauge,
            "Current resolver cache entries.",
            size,
        );
    }
    e.single(
        "pgvpd_resolver_cache_hits_total",
        Kind::Counter,
        "Resolver cache hits.",
        get(&s.resolver_cache_hits),
    );
    e.single(
        "pgvpd_resolver_cache_misses_total",
        Kind::Counter,
        "Resolver cache misses.",
        get(&s.resolver_queries),
    );
    e.family(
        "pgvpd_tenant_rejected_total",
        Kind::Counter,
        "Tenant connections rejected.",
        |f| {
            f.sample(&[("reason", "deny")], get(&s.tenant_rejected_deny));
            f.sample(&[("reason", "limit")], get(&s.tenant_rejected_limit));
            f.sample(&[("reason", "rate")], get(&s.tenant_rejected_rate));
        },
    );
    e.single(
        "pgvpd_tenant_timeouts_total",
        Kind::Counter,
        "Tenant query timeouts.",
        tenant_timeouts(s),
    );
    for (field, help, get_field) in OWN_COUNTERS {
        e.single(
            &format!("pgvpd_{field}_total"),
            Kind::Counter,
            help,
            get(get_field(s)),
        );
    }
    e.single(
        "pgvpd_workers",
        Kind::Gauge,
        "Reactor threads.",
        u64::try_from(v.workers).unwrap_or(u64::MAX),
    );
    e.single(
        "pgvpd_tenants_tracked",
        Kind::Gauge,
        "Tenants in the registry (live sessions or logins within the last second).",
        v.tenants_tracked,
    );
    for (name, kind, help, field) in TENANT_SERIES {
        e.family(name, kind, help, |f| {
            for (t, bucket) in tenant_rows(v) {
                f.sample(&[("tenant", &t.name), ("bucket", bucket)], field(t));
            }
        });
    }
    e.family(
        "pgvpd_session_start_seconds",
        Kind::Histogram,
        "Accept to the session's context set and released to the client.",
        |f| f.histogram(&[], &v.session_start),
    );
    if v.pooling {
        e.family(
            "pgvpd_pool_checkout_wait_seconds",
            Kind::Histogram,
            "Pool modes: a client's wait for a server.",
            |f| f.histogram(&[], &v.checkout_wait),
        );
    }
    e.single(
        "pgvpd_paused",
        Kind::Gauge,
        "1 while POST /pause is in force (pools lend no server), else 0.",
        u64::from(v.paused),
    );
    e.single(
        "pgvpd_uptime_seconds",
        Kind::Gauge,
        "Seconds since the proxy started.",
        v.uptime_secs,
    );
    e.family(
        "pgvpd_build_info",
        Kind::Gauge,
        "Build information; the value is always 1.",
        |f| f.sample(&[("version", v.version)], 1),
    );
    // Family names are constants here: one refused (a typo, or a name used
    // twice, as a per-tenant family once collided with pgvpd 1.0's
    // `pgvpd_tenant_rejected_total`) would vanish silently; the unit tests
    // render every family, so this catches it.
    debug_assert_eq!(e.refused(), 0, "a metric family was refused");
    e.finish()
}

fn tenant_json(t: &TenantSummary) -> Json {
    Json::obj([
        ("tenant", Json::str(t.name.as_str())),
        ("sessions", Json::U64(t.sessions)),
        ("sessions_total", Json::U64(t.sessions_total)),
        ("rejected", Json::U64(t.rejected)),
    ])
}

/// The `/status` body: pgvpd 1.0's shape (behaviour §7.3) plus `version`, `uptime_seconds`,
/// `workers`, `waiting` per bucket and `counters` (every [`OWN_COUNTERS`] field).
pub fn status(s: &Stats, v: &View) -> String {
    let n = |c: &AtomicU64| Json::U64(get(c));
    let buckets = v
        .buckets
        .iter()
        .map(|b| {
            Json::obj([
                ("database", Json::str(b.database.as_str())),
                ("role", Json::str(b.role.as_str())),
                ("total", Json::U64(b.total.into())),
                ("idle", Json::U64(b.idle.into())),
                ("waiting", Json::U64(b.waiting.into())),
            ])
        })
        .collect();
    let mut pool: Vec<(String, Json)> = POOL_COUNTERS
        .iter()
        .map(|(_, _, key, field)| ((*key).to_owned(), n(field(s))))
        .collect();
    pool.push(("buckets".to_owned(), Json::Arr(buckets)));
    let root = Json::obj([
        ("version", Json::str(v.version)),
        ("uptime_seconds", Json::U64(v.uptime_secs)),
        ("paused", Json::Bool(v.paused)),
        (
            "workers",
            Json::U64(u64::try_from(v.workers).unwrap_or(u64::MAX)),
        ),
        ("connections_total", n(&s.connections_total)),
        ("connections_active", n(&s.connections_active)),
        ("pool", Json::Obj(pool)),
        (
            "resolvers",
            Json::obj([
                ("cache_hits", n(&s.resolver_cache_hits)),
                ("cache_misses", n(&s.resolver_queries)),
                ("cache_size", Json::U64(v.resolver_cache_size.unwrap_or(0))),
                // Per-resolver counters do not exist yet.
                ("resolvers", Json::Arr(Vec::new())),
            ]),
        ),
        (
            "tenant",
            Json::obj([
                ("rejected_deny", n(&s.tenant_rejected_deny)),
                ("rejected_limit", n(&s.tenant_rejected_limit)),
                ("rejected_rate", n(&s.tenant_rejected_rate)),
                ("timeouts", Json::U64(tenant_timeouts(s))),
            ]),
        ),
        (
            "tenants",
            Json::obj([
                ("tracked", Json::U64(v.tenants_tracked)),
                (
                    "top",
                    Json::Arr(v.tenants.iter().map(tenant_json).collect()),
                ),
                (
                    "other",
                    v.tenant_other.as_ref().map_or(Json::Null, tenant_json),
                ),
            ]),
        ),
        (
            "counters",
            Json::obj(OWN_COUNTERS.iter().map(|(f, _, g)| (*f, n(g(s))))),
        ),
    ]);
    root.to_pretty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::super::prom::parse_strict;
    use super::*;
    use std::sync::atomic::Ordering;

    /// Adding a counter to `Stats` without rendering it fails here: add it to
    /// `OWN_COUNTERS` (or, for a pgvpd 1.0 metric, to `metrics`/`status` and `V1_FIELDS`).
    #[test]
    fn every_stats_field_is_rendered() {
        assert_eq!(
            std::mem::size_of::<Stats>(),
            std::mem::size_of::<AtomicU64>() * (V1_FIELDS + OWN_COUNTERS.len()),
            "crate::stats::Stats has a field that src/admin/render.rs does not show"
        );
        // Each own counter reads its own field.
        let s = Stats::new();
        for (i, (_, _, f)) in OWN_COUNTERS.iter().enumerate() {
            f(&s).store(i as u64 + 1000, Ordering::Relaxed);
        }
        for (i, (name, _, f)) in OWN_COUNTERS.iter().enumerate() {
            assert_eq!(get(f(&s)), i as u64 + 1000, "{name}");
        }
    }

    fn hostile_view() -> View {
        View {
            version: "0.1.0",
            uptime_secs: 42,
            workers: 2,
            pooling: true,
            paused: false,
            buckets: vec![
                PoolBucket {
                    database: "db\"x\n# HELP evil".into(),
                    role: "r\\ole".into(),
                    total: 3,
                    idle: 1,
                    waiting: 2,
                },
                PoolBucket {
                    database: "plain".into(),
                    role: "app_user".into(),
                    total: 1,
                    idle: 0,
                    waiting: 0,
                },
            ],
            resolver_cache_size: Some(5),
            tenants_tracked: 30,
            tenants: vec![
                TenantSummary {
                    name: "t\"x\n# HELP evil".into(),
                    sessions: 2,
                    sessions_total: 5,
                    rejected: 1,
                },
                TenantSummary {
                    name: "other".into(),
                    sessions: 1,
                    ..TenantSummary::default()
                },
            ],
            tenant_other: Some(TenantSummary {
                name: "other".into(),
                sessions: 7,
                ..TenantSummary::default()
            }),
            session_start: {
                let h = crate::stats::Histogram::new();
                h.observe(std::time::Duration::from_micros(1_500));
                h.observe(std::time::Duration::from_secs(20));
                h.snapshot()
            },
            checkout_wait: HistogramSnapshot::default(),
        }
    }

    #[test]
    fn metrics_are_strict_and_complete() {
        let s = Stats::new();
        s.connections_total.store(7, Ordering::Relaxed);
        s.pool_checkouts.store(3, Ordering::Relaxed);
        s.resolver_queries.store(4, Ordering::Relaxed);
        s.tenant_rejected_rate.store(2, Ordering::Relaxed);
        s.tx_resets.store(9, Ordering::Relaxed);
        let text = metrics(&s, &hostile_view());
        let fams = parse_strict(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let find = |n: &str| {
            fams.iter()
                .find(|f| f.0 == n)
                .unwrap_or_else(|| panic!("{n} missing:\n{text}"))
        };
        assert_eq!(find("pgvpd_connections_total").3, vec![(vec![], 7)]);
        assert_eq!(
            find("pgvpd_connections_total").2,
            "Total connections accepted."
        );
        assert_eq!(find("pgvpd_connections_active").1, "gauge");
        assert_eq!(find("pgvpd_pool_checkouts_total").3[0].1, 3);
        assert_eq!(find("pgvpd_resolver_cache_misses_total").3[0].1, 4);
        assert_eq!(find("pgvpd_resolver_cache_size").3[0].1, 5);
        assert_eq!(find("pgvpd_tx_resets_total").3[0].1, 9);
        let rejected = &find("pgvpd_tenant_rejected_total").3;
        let reasons: Vec<(&str, u64)> = rejected
            .iter()
            .map(|(l, v)| (l[0].1.as_str(), *v))
            .collect();
        assert_eq!(reasons, vec![("deny", 0), ("limit", 0), ("rate", 2)]);
        // The pool gauges: one family each, hostile labels round-trip.
        let total = &find("pgvpd_pool_connections_total").3;
        assert_eq!(total.len(), 2);
        assert_eq!(total[0].0[0].1, "db\"x\n# HELP evil");
        assert_eq!(total[0].0[1].1, "r\\ole");
        assert_eq!(total[0].1, 3);
        assert_eq!(find("pgvpd_pool_connections_idle").3[0].1, 1);
        assert_eq!(find("pgvpd_pool_clients_waiting").3[0].1, 2);
        assert_eq!(find("pgvpd_build_info").3[0].0[0].1, "0.1.0");
        // Per-tenant series: hostile names round-trip; a tenant named
        // "other" and the sum of the rest are told apart by `bucket`.
        let open = &find("pgvpd_tenant_sessions_open").3;
        let rows: Vec<(&str, &str, u64)> = open
            .iter()
            .map(|(l, v)| (l[0].1.as_str(), l[1].1.as_str(), *v))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("t\"x\n# HELP evil", "top", 2),
                ("other", "top", 1),
                ("other", "other", 7)
            ]
        );
        assert_eq!(find("pgvpd_tenant_sessions_admitted_total").3[0].1, 5);
        assert_eq!(find("pgvpd_tenant_sessions_refused_total").3[0].1, 1);
        assert_eq!(find("pgvpd_tenants_tracked").3[0].1, 30);
        let h = find("pgvpd_session_start_seconds");
        assert_eq!(h.1, "histogram");
        let le = |s: &(Vec<(String, String)>, u64)| {
            s.0.iter().find(|(k, _)| k == "le").map(|(_, v)| v.clone())
        };
        assert_eq!(h.3.len(), 15 + 2);
        assert_eq!((le(&h.3[1]).as_deref(), h.3[1].1), (Some("0.001"), 0));
        assert_eq!((le(&h.3[2]).as_deref(), h.3[2].1), (Some("0.0025"), 1));
        assert_eq!((le(&h.3[14]).as_deref(), h.3[14].1), (Some("+Inf"), 2));
        assert_eq!(h.3[15].1, 20_001_500, "_sum in µs");
        assert_eq!(h.3[16].1, 2, "_count");
        find("pgvpd_pool_checkout_wait_seconds");
        // pgvpd 1.0's families are all there (per-resolver ones aside), under its HELP texts.
        for (name, help) in [
            (
                "pgvpd_pool_reuses_total",
                "Pool connections reused from idle.",
            ),
            ("pgvpd_pool_creates_total", "New pool connections created."),
            ("pgvpd_pool_checkins_total", "Pool connections returned."),
            (
                "pgvpd_pool_discards_total",
                "Pool connections discarded on checkin failure.",
            ),
            ("pgvpd_pool_timeouts_total", "Pool checkout timeouts."),
            ("pgvpd_resolver_cache_hits_total", "Resolver cache hits."),
            ("pgvpd_tenant_timeouts_total", "Tenant query timeouts."),
            (
                "pgvpd_pool_connections_idle",
                "Idle connections in pool bucket.",
            ),
        ] {
            assert_eq!(find(name).2, help, "{name}");
        }
        // Counters end in _total (pgvpd 1.0's pool_connections_total gauge aside).
        for f in &fams {
            let exception = f.0 == "pgvpd_pool_connections_total";
            assert_eq!(
                f.1 == "counter",
                f.0.ends_with("_total") && !exception,
                "{}",
                f.0
            );
        }
        for (field, _, _) in OWN_COUNTERS {
            find(&format!("pgvpd_{field}_total"));
        }
        // Without pooling or resolvers, those families are absent.
        let plain = metrics(&s, &View::default());
        let fams = parse_strict(&plain).unwrap();
        assert!(!fams.iter().any(
            |f| f.0.starts_with("pgvpd_pool_connections") || f.0 == "pgvpd_resolver_cache_size"
        ));
    }

    #[test]
    fn status_shape_and_escaping() {
        let s = Stats::new();
        s.connections_total.store(7, Ordering::Relaxed);
        s.tenant_rejected_deny.store(1, Ordering::Relaxed);
        let text = status(&s, &hostile_view());
        for want in [
            "\n  \"version\": \"0.1.0\",\n",
            "\n  \"uptime_seconds\": 42,\n",
            "\n  \"workers\": 2,\n",
            "\n  \"connections_total\": 7,\n",
            "\n  \"pool\": {\n    \"checkouts\": 0,\n",
            "\"database\": \"db\\\"x\\u000a# HELP evil\"",
            "\"role\": \"r\\\\ole\"",
            "\"waiting\": 2",
            "\"cache_size\": 5",
            "\"resolvers\": []",
            "\"rejected_deny\": 1",
            "\"tx_resets\": 0",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(!text.contains("x\n#"));
        let empty = status(&s, &View::default());
        assert!(empty.contains("\"buckets\": []"), "{empty}");
        assert!(empty.contains("\"cache_size\": 0"), "{empty}");
    }
}
