//! What a reload may change: the keys that apply to sessions started after it
//! ([`RELOADABLE`]), and [`merge`], which compares the running configuration
//! with the one just read, keeps the running value of every other key, and
//! says which keys changed on either side.
//!
//! Must not: do I/O. The files a reloadable key names (resolvers, userlists,
//! certificates) are read by the caller, after [`merge`] succeeded and before
//! anything is swapped (`crate::reload`).

use super::settings::{self, SETTINGS};
use super::{Config, validate};

/// Keys a reload applies to new sessions (existing sessions keep the values
/// they started with). Every other key keeps its running value until a
/// restart, and a reload that changes one logs a warning naming it.
pub const RELOADABLE: &[&str] = &[
    "log_level",
    "tls_cert",
    "tls_key",
    "superuser_bypass",
    "tenant_allow",
    "tenant_deny",
    "tenant_max_connections",
    "tenant_rate_limit",
    "handshake_timeout",
    "upstream_connect_timeout",
    "pool_checkout_timeout",
    "client_idle_timeout",
    "idle_transaction_timeout",
    "query_timeout",
    "tenant_query_timeout",
    "session_lifetime",
    "auth_file",
    "pool_auth_method",
    "pool_password",
    "pool_allow_insecure_cleartext",
    "pool_roles",
    "tenant_max_servers",
    "resolvers",
    "resolver_search_path",
    "resolver_cache_size",
];

pub fn is_reloadable(key: &str) -> bool {
    RELOADABLE.contains(&key)
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Reloadable keys whose value changed: the new value applies.
    pub applied: Vec<&'static str>,
    /// Keys whose value changed but cannot be reloaded: the running value was kept.
    pub kept: Vec<&'static str>,
}

/// Puts the running value (`old`) of every key that cannot be reloaded, or is
/// named in `also_static`, back into `new`; then validates the result. `Err`:
/// the merged configuration is invalid (nothing may change).
pub fn merge(old: &Config, new: &mut Config, also_static: &[&str]) -> Result<Diff, String> {
    let mut diff = Diff::default();
    for s in SETTINGS.iter() {
        let running = (s.get)(old);
        if running == (s.get)(new) {
            continue;
        }
        if is_reloadable(s.name) && !also_static.contains(&s.name) {
            diff.applied.push(s.name);
            continue;
        }
        diff.kept.push(s.name);
        settings::apply(s, new, running.as_deref().unwrap_or(""))
            .map_err(|e| format!("{}: cannot keep the running value: {e}", s.name))?;
    }
    validate(new).map_err(|e| e.to_string())?;
    Ok(diff)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::{Command, load};

    fn cfg(text: &str) -> Config {
        let read = |_: &std::path::Path| Ok(text.to_string());
        match load(&["--config".into(), "x.conf".into()], &|_| None, &read).unwrap() {
            Command::Run(c) => *c,
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn every_reloadable_key_exists() {
        for k in RELOADABLE {
            assert!(settings::find(k).is_some(), "{k} is not a key");
        }
    }

    #[test]
    fn reloadable_keys_change_and_the_others_keep_running_values() {
        let old = cfg(
            "port = 6432\nworkers = 2\ntenant_deny = a\nlog_level = info\n\
                       pool_mode = session\npool_password = x\npool_size = 4\nupstream_password = u\n",
        );
        let mut new = cfg(
            "port = 7000\nworkers = 3\ntenant_deny = a, b\nlog_level = debug\n\
                           pool_mode = transaction\npool_password = y\npool_size = 9\nupstream_password = u\n",
        );
        let d = merge(&old, &mut new, &[]).unwrap();
        assert_eq!(d.applied.len(), 3, "{d:?}");
        for k in ["log_level", "pool_password", "tenant_deny"] {
            assert!(d.applied.contains(&k), "{k} applied: {d:?}");
        }
        for k in ["port", "workers", "pool_mode", "pool_size"] {
            assert!(d.kept.contains(&k), "{k} kept: {d:?}");
        }
        assert_eq!(new.port, 6432);
        assert_eq!(new.workers, 2);
        assert_eq!(new.pool_mode, crate::config::PoolMode::Session);
        assert_eq!(new.pool_size, 4);
        assert_eq!(
            new.tenant_deny,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(new.pool_password.as_deref(), Some("y"));
    }

    #[test]
    fn unset_values_are_kept_unset_and_also_static_is_honoured() {
        let old = cfg("");
        let mut new = cfg("tls_port = 6433\ntls_cert = /c\ntls_key = /k\nadmin_port = 9000\n");
        let d = merge(&old, &mut new, &["tls_cert", "tls_key"]).unwrap();
        assert!(d.applied.is_empty(), "{d:?}");
        for k in ["tls_port", "tls_cert", "tls_key", "admin_port"] {
            assert!(d.kept.contains(&k), "{k}: {d:?}");
        }
        assert_eq!(new.tls_port, None);
        assert_eq!(new.tls_cert, None);
        assert_eq!(new.admin_port, None);
    }

    #[test]
    fn carrying_every_key_back_reproduces_the_running_config() {
        // A config where every key differs from the default is hard to write
        // by hand; instead: whatever `new` holds, merging with every key
        // static must give `old`'s rendering.
        let old = cfg("port = 1\ncontext_variables = a.b, c.d\ntenant_key = c.d\n\
                       superuser_bypass = su\nhandshake_timeout = 7\nresolver_cache_size = 5\n");
        let mut new = cfg("");
        let all: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        merge(&old, &mut new, &all).unwrap();
        assert_eq!(
            crate::config::render_effective(&old),
            crate::config::render_effective(&new)
        );
    }

    #[test]
    fn an_invalid_result_is_an_error() {
        let old = cfg("tenant_max_connections = 2\n");
        let mut new = cfg("tenant_max_connections = 3\n");
        new.tenant_max_connections = Some(0);
        assert!(
            merge(&old, &mut new, &[])
                .unwrap_err()
                .contains("tenant_max_connections")
        );
    }
}
