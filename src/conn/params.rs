//! The client's startup parameters in pool mode.
//!
//! A pooled server was logged in with only `user` and `database`; the
//! client's own settings (`application_name`, `TimeZone`, `options -c ...`)
//! are applied after the server's reset, with `set_config` and bound
//! parameters, in the same batch that sets the tenant context. Only settings
//! on an allow-list pass: anything that changes who the session is
//! (`role`, `session_authorization`), what it may load, or how the server
//! talks (`replication`) is refused with a clear error instead of being
//! silently dropped.
//!
//! `options` is split as PostgreSQL's `pg_split_opts` does: on unescaped
//! whitespace, a backslash escapes the next character; `-c name=value`,
//! `-cname=value` and `--name=value` set a parameter; nothing else is accepted.

/// Settings a pooled client may choose (compared case-insensitively).
pub const ALLOWED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "search_path",
    "extra_float_digits",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "standard_conforming_strings",
];

/// Startup keys that are not settings and are handled elsewhere.
const NOT_SETTINGS: &[&str] = &["user", "database"];

/// Why the parameters were refused (the message for FATAL 0A000/08P01).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

fn allowed(name: &str) -> bool {
    ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The settings to apply, in startup order, from the startup packet's
/// (key, value) pairs. Later values of the same name win, as in PostgreSQL.
pub fn settings(startup: &[(&str, &str)]) -> Result<Vec<(String, String)>, Refused> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: &str| -> Result<(), Refused> {
        if !allowed(name) {
            return Err(Refused(format!(
                "parameter \"{name}\" cannot be set at connection start in pool mode \
                 (allowed: {})",
                ALLOWED.join(", ")
            )));
        }
        let name = name.to_ascii_lowercase();
        // At most one entry per allowed name: bounded by `ALLOWED.len()`.
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value.to_string();
        } else {
            out.push((name, value.to_string()));
        }
        Ok(())
    };
    for (k, v) in startup {
        if NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            continue;
        }
        if k.eq_ignore_ascii_case("options") {
            for (name, value) in split_options(v)? {
                put(&name, &value)?;
            }
        } else if k.starts_with("_pq_.") {
            // Protocol options: the caller lists them as unrecognized in its
            // NegotiateProtocolVersion; they are not settings.
            continue;
        } else {
            put(k, v)?;
        }
    }
    Ok(out)
}

/// `options` → (name, value) pairs.
pub fn split_options(s: &str) -> Result<Vec<(String, String)>, Refused> {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else if c.is_ascii_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let assignment = if w == "-c" {
            it.next()
                .ok_or_else(|| Refused("options: -c without a setting".into()))?
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(Refused(format!(
                "options: only -c name=value is supported in pool mode, got \"{w}\""
            )));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(Refused(format!(
                "options: \"{assignment}\" is not name=value"
            )));
        };
        // PostgreSQL accepts '-' for '_' in names given on the command line.
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn s(v: &[(&str, &str)]) -> Result<Vec<(String, String)>, Refused> {
        settings(v)
    }

    #[test]
    fn plain_settings_pass_and_user_database_are_skipped() {
        let got = s(&[
            ("user", "app_user.acme"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "Europe/Paris"),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("application_name".into(), "psql".into()),
                ("client_encoding".into(), "UTF8".into()),
                ("datestyle".into(), "ISO, MDY".into()),
                ("timezone".into(), "Europe/Paris".into()),
            ]
        );
    }

    #[test]
    fn options_forms() {
        let got = s(&[(
            "options",
            "-c search_path=a,b -cstatement_timeout=5s --lock-timeout=1s -c application_name=x\\ y",
        )])
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("lock_timeout".into(), "1s".into()),
                ("application_name".into(), "x y".into()),
            ]
        );
        // Later wins.
        let got = s(&[
            ("application_name", "a"),
            ("options", "-c application_name=b"),
        ])
        .unwrap();
        assert_eq!(got, vec![("application_name".into(), "b".into())]);
    }

    #[test]
    fn dangerous_or_unknown_are_refused_by_name() {
        for (k, v) in [
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("replication", "database"),
            ("options", "-c role=postgres"),
            ("options", "-c session_authorization=postgres"),
            ("options", "-c app.current_tenant_id=other"),
            ("options", "-c local_preload_libraries=x"),
            ("options", "-D /tmp"),
            ("options", "-c"),
            ("options", "-c noequals"),
        ] {
            let err = s(&[(k, v)]).expect_err(&format!("{k}={v} must be refused"));
            assert!(!err.0.is_empty());
        }
        let err = s(&[("options", "-c app.current_tenant_id=other")]).unwrap_err();
        assert!(err.0.contains("app.current_tenant_id"), "{}", err.0);
    }

    #[test]
    fn protocol_options_are_not_settings() {
        assert_eq!(s(&[("_pq_.something", "1")]).unwrap(), vec![]);
    }

    #[test]
    fn repeated_names_keep_one_entry() {
        let many: Vec<String> = (0..40)
            .map(|i| format!("-c application_name=a{i}"))
            .collect();
        // Same name repeated: one entry.
        let joined = many.join(" ");
        assert_eq!(s(&[("options", &joined)]).unwrap().len(), 1);
    }
}
