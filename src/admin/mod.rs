//! The HTTP admin API (read-only part): `GET /health`, `GET /metrics`, `GET /status`.
//!
//! Owns: one thread, `pgvpd-admin`, with its own `mio::Poll` serving HTTP/1.x on
//! `admin_listen:admin_port` ([`spawn`]); the bounded request parser and response encoder
//! ([`http`]); the Prometheus and JSON writers ([`prom`], [`json`]); the bodies ([`render`]);
//! the pool snapshots the workers publish ([`PoolSnapshots`]).
//!
//! Must not: touch worker state or block a worker. The admin thread reads
//! [`crate::stats::STATS`] (relaxed atomics), the resolver cache size (`Engine::cache.len()`,
//! one short lock the workers also take briefly), the tenant registry (`Tenants::snapshot`,
//! one short lock, which also evicts long-idle tenants) and [`PoolSnapshots`] (one mutex per
//! worker, held only to swap or clone a `Vec`). What it changes goes through shared atomics
//! and slots made for it: `Shared::paused`, the session configuration a reload replaces, and
//! the workers' command queues (`reactor::control`).
//!
//! Invariants (everything is bounded, `docs/architecture.md` "Admin API"): at most
//! [`server::MAX_CONNS`] connections (the oldest is closed to make room); a request head of at
//! most [`http::MAX_HEAD`] bytes, a body of at most [`http::MAX_BODY`] (413 beyond, decided on
//! the declared length); the whole request within [`server::REQUEST_TIMEOUT`], the response
//! within [`server::WRITE_TIMEOUT`]; one request per connection (`Connection: close`). The
//! upstream check of `/health` is a TCP connect of at most [`server::HEALTH_CONNECT_TIMEOUT`],
//! cached for [`server::HEALTH_CACHE`].
//!
//! Why not `tiny_http`: its 0.12 request reader has no header-size limit and no socket
//! timeouts, spawns a thread per connection without a cap, and drains an unread body on drop
//! with `vec![0; Content-Length]`, so one unauthenticated request declaring a huge
//! `Content-Length` aborts the whole process (tiny-http/tiny-http#290, reproduced). The subset
//! needed here is small enough to write bounded.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod http;
pub mod json;
pub mod pools;
pub mod prom;
pub mod render;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

pub use pools::{PoolBucket, PoolSnapshots};
pub use server::{AdminHandle, spawn};

use crate::config::{Config, PoolMode};
use crate::reactor::Shared;
use crate::reactor::control::Control;
use crate::reload::Reloader;
use crate::stats::Stats;
use http::{JSON, Method, Request, Response};

/// Where the admin API listens and whom it serves.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin_listen`: an address or a host name (resolved once, at start).
    pub listen: String,
    /// `admin_port` (0: any free port; [`AdminHandle::local_addr`] tells which).
    pub port: u16,
    /// `admin_token`: every request needs `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("port", &self.port)
            .field(
                "token",
                &self.token.as_ref().map(|_| crate::config::REDACTED),
            )
            .finish()
    }
}

impl AdminConfig {
    /// `None` when `admin_port` is unset (no admin API).
    pub fn from_config(c: &Config) -> Option<AdminConfig> {
        Some(AdminConfig {
            listen: c.admin_listen.clone(),
            port: c.admin_port?,
            token: c.admin_token.clone(),
        })
    }
}

/// What the admin thread reads (all shared read-only, or atomics).
#[derive(Clone)]
pub struct AdminSources {
    /// The upstream addresses `/health` tries to connect to (resolved at start).
    pub upstream: Arc<[SocketAddr]>,
    /// The configuration new sessions start with (its resolver engine's cache
    /// size is shown).
    pub shared: Arc<Shared>,
    /// The workers' command queues (pause, resume, kill); None in tests.
    pub control: Option<Arc<Control>>,
    /// `POST /reload`; None in tests.
    pub reloader: Option<Arc<Reloader>>,
    /// Filled by the workers ([`PoolSnapshots::publish`]).
    pub pools: Arc<PoolSnapshots>,
    /// `pool_mode` is session or transaction: the per-pool gauges are shown.
    pub pooling: bool,
    /// Number of reactor threads.
    pub workers: usize,
    /// When the process started (`uptime_seconds`).
    pub started: Instant,
}

impl AdminSources {
    /// Sources for `c`; `pools` must be the same `Arc` the workers publish into.
    pub fn new(
        c: &Config,
        upstream: Arc<[SocketAddr]>,
        shared: Arc<Shared>,
        pools: Arc<PoolSnapshots>,
        started: Instant,
    ) -> AdminSources {
        AdminSources {
            upstream,
            shared,
            control: None,
            reloader: None,
            pools,
            pooling: c.pool_mode != PoolMode::None,
            workers: c.workers,
            started,
        }
    }
}

/// SHA-256 of the configured token: requests are compared digest to digest, in constant
/// time, so neither the token's bytes nor its length show in the timing.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// `Authorization: Bearer <token>` (scheme case-insensitive) matching `want`.
fn authorized(header: Option<&str>, want: &TokenDigest) -> bool {
    let Some((scheme, given)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    let given = given.trim_start_matches(' ');
    scheme.eq_ignore_ascii_case("bearer")
        && crate::auth::ct_eq(Sha256::digest(given.as_bytes()).as_slice(), want)
}

/// A `POST` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Reload,
    Pause,
    Resume,
    /// `POST /tenants/NAME/kill` (NAME percent-decoded).
    Kill(String),
}

/// What routing needs besides the request and the counters (the live implementation is in
/// [`server`]; tests use a fake).
pub(crate) trait Backend {
    /// The cached upstream check: `Err` carries the reason.
    fn health(&mut self) -> Result<(), String>;
    /// Everything `/metrics` and `/status` show besides `stats`.
    fn view(&mut self) -> render::View;
    /// Runs a `POST` action: the response.
    fn act(&mut self, action: &Action) -> Response;
}

/// The `POST` endpoint `path` names, if any (Err: a kill whose tenant name is not a
/// well-formed, percent-encoded path segment).
fn action(path: &str) -> Option<Result<Action, ()>> {
    match path {
        "/reload" => Some(Ok(Action::Reload)),
        "/pause" => Some(Ok(Action::Pause)),
        "/resume" => Some(Ok(Action::Resume)),
        _ => {
            let name = path.strip_prefix("/tenants/")?.strip_suffix("/kill")?;
            if name.is_empty() || name.contains('/') {
                return None;
            }
            Some(http::percent_decode(name).map(Action::Kill).ok_or(()))
        }
    }
}

/// Answers one parsed request: 401 without the right token (when one is configured, for
/// every path), 404 for unknown paths, 405 (with `Allow`) for a method the path does not
/// take. `POST` endpoints change the proxy, so they are refused (403) unless `admin_token`
/// is configured.
pub(crate) fn route(
    req: &Request<'_>,
    token: Option<&TokenDigest>,
    stats: &Stats,
    backend: &mut dyn Backend,
) -> Response {
    if let Some(want) = token
        && !authorized(req.authorization, want)
    {
        return Response::error(401, "missing or wrong bearer token")
            .with_header("WWW-Authenticate", "Bearer realm=\"pgvpd\"");
    }
    if let Some(act) = action(req.path) {
        if req.method != Method::Post {
            return Response::error(405, "method not allowed").with_header("Allow", "POST");
        }
        if token.is_none() {
            return Response::error(
                403,
                "POST endpoints change the proxy: set admin_token to use them",
            );
        }
        return match act {
            Ok(a) => backend.act(&a),
            Err(()) => Response::error(400, "the tenant name is not a valid path segment"),
        };
    }
    if !matches!(req.path, "/health" | "/metrics" | "/status") {
        return Response::error(404, "not found");
    }
    if !matches!(req.method, Method::Get | Method::Head) {
        return Response::error(405, "method not allowed").with_header("Allow", "GET, HEAD");
    }
    match req.path {
        "/health" => match backend.health() {
            Ok(()) => Response::new(200, JSON, "{\"status\":\"ok\"}"),
            Err(e) => {
                let mut body = String::from("{\"status\":\"unavailable\",\"error\":");
                json::write_str(&mut body, &e);
                body.push('}');
                Response::new(503, JSON, body)
            }
        },
        "/metrics" => Response::new(
            200,
            prom::CONTENT_TYPE,
            render::metrics(stats, &backend.view()),
        ),
        _ => Response::new(200, JSON, render::status(stats, &backend.view())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    struct Fake {
        up: Result<(), String>,
    }

    impl Backend for Fake {
        fn health(&mut self) -> Result<(), String> {
            self.up.clone()
        }
        fn view(&mut self) -> render::View {
            render::View {
                version: "9.9.9",
                ..render::View::default()
            }
        }
        fn act(&mut self, action: &Action) -> Response {
            Response::new(200, JSON, format!("{action:?}"))
        }
    }

    fn req<'a>(method: Method, path: &'a str, auth: Option<&'a str>) -> Request<'a> {
        Request {
            method,
            path,
            authorization: auth,
            body: b"",
        }
    }

    fn body(r: &Response) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn routes() {
        let s = Stats::new();
        let mut up = Fake { up: Ok(()) };
        let r = route(&req(Method::Get, "/health", None), None, &s, &mut up);
        assert_eq!((r.status, body(&r).as_str()), (200, "{\"status\":\"ok\"}"));
        let r = route(&req(Method::Head, "/metrics", None), None, &s, &mut up);
        assert_eq!((r.status, r.content_type), (200, prom::CONTENT_TYPE));
        assert!(body(&r).contains("pgvpd_build_info{version=\"9.9.9\"} 1\n"));
        let r = route(&req(Method::Get, "/status", None), None, &s, &mut up);
        assert_eq!((r.status, r.content_type), (200, JSON));
        assert!(body(&r).contains("\"connections_total\": 0"));
        for path in [
            "/",
            "/reload/",
            "/tenants/x/kill/",
            "/tenants//kill",
            "/tenants/a/b/kill",
            "/tenants/x",
            "/metrics/",
            "/HEALTH",
        ] {
            for m in [Method::Get, Method::Other] {
                assert_eq!(
                    route(&req(m, path, None), None, &s, &mut up).status,
                    404,
                    "{path}"
                );
            }
        }
        let r = route(&req(Method::Other, "/metrics", None), None, &s, &mut up);
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "GET, HEAD")]);
        let mut down = Fake {
            up: Err("connect to 127.0.0.1:1: refused \"x\"\n".into()),
        };
        let r = route(&req(Method::Get, "/health", None), None, &s, &mut down);
        assert_eq!(r.status, 503);
        assert_eq!(
            body(&r),
            "{\"status\":\"unavailable\",\"error\":\"connect to 127.0.0.1:1: refused \\\"x\\\"\\u000a\"}"
        );
    }

    #[test]
    fn post_endpoints() {
        let s = Stats::new();
        let want = token_digest("t");
        let call = |m: Method, path: &str, token: Option<&TokenDigest>| {
            let r = route(
                &req(m, path, Some("Bearer t")),
                token,
                &s,
                &mut Fake { up: Ok(()) },
            );
            (r.status, body(&r))
        };
        assert_eq!(
            call(Method::Post, "/reload", Some(&want)),
            (200, "Reload".into())
        );
        assert_eq!(
            call(Method::Post, "/pause", Some(&want)),
            (200, "Pause".into())
        );
        assert_eq!(
            call(Method::Post, "/resume", Some(&want)),
            (200, "Resume".into())
        );
        assert_eq!(
            call(Method::Post, "/tenants/a%22b%0Ac/kill", Some(&want)),
            (200, "Kill(\"a\\\"b\\nc\")".into())
        );
        assert_eq!(call(Method::Post, "/tenants/%zz/kill", Some(&want)).0, 400);
        assert_eq!(
            call(Method::Post, "/tenants/a%2Fb/kill", Some(&want)).0,
            400
        );
        // Only POST, and only with a token configured.
        for m in [Method::Get, Method::Head, Method::Other] {
            let r = route(
                &req(m, "/pause", Some("Bearer t")),
                Some(&want),
                &s,
                &mut Fake { up: Ok(()) },
            );
            assert_eq!(r.status, 405);
            assert_eq!(r.headers, vec![("Allow", "POST")]);
        }
        let (status, msg) = call(Method::Post, "/reload", None);
        assert_eq!(status, 403);
        assert!(msg.contains("admin_token"), "{msg}");
        // GET endpoints refuse POST.
        assert_eq!(call(Method::Post, "/metrics", Some(&want)).0, 405);
    }

    #[test]
    fn bearer_token() {
        let s = Stats::new();
        let mut up = Fake { up: Ok(()) };
        let want = token_digest("s3cret");
        let ok = |auth: Option<&str>, path: &str| {
            let r = route(
                &req(Method::Get, path, auth),
                Some(&want),
                &s,
                &mut Fake { up: Ok(()) },
            );
            r.status
        };
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret"] {
            assert_eq!(ok(Some(good), "/health"), 200, "{good}");
        }
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("s3cret"),
            Some("Bearer S3CRET"),
        ] {
            assert_eq!(ok(bad, "/health"), 401, "{bad:?}");
        }
        // Unknown paths are not revealed without the token.
        assert_eq!(ok(None, "/nope"), 401);
        assert_eq!(ok(Some("Bearer s3cret"), "/nope"), 404);
        let r = route(
            &req(Method::Get, "/metrics", None),
            Some(&want),
            &s,
            &mut up,
        );
        assert_eq!(
            r.headers,
            vec![("WWW-Authenticate", "Bearer realm=\"pgvpd\"")]
        );
        assert!(!body(&r).contains("pgvpd_"));
    }

    #[test]
    fn config_debug_redacts_token() {
        let c = AdminConfig::from_config(&Config {
            admin_port: Some(9),
            admin_token: Some("hunter2".into()),
            ..Config::default()
        })
        .unwrap();
        assert_eq!((c.listen.as_str(), c.port), ("127.0.0.1", 9));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(AdminConfig::from_config(&Config::default()).is_none());
    }
}
