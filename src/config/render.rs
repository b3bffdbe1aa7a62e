//! Texts generated from the settings table: `--help`, `--check-config` output and the Markdown
//! table used by the README / `docs/config.md`.

use std::fmt::Write as _;

use super::settings::{SETTINGS, Setting};
use super::{Config, REDACTED};

/// How a flag is written: `--port PORT`, or for a switch (value optional, `--flag` alone means
/// true) `--upstream-tls[=MODE]`.
fn flag_usage(s: &Setting, flag: &str) -> String {
    if s.switch {
        format!("{flag}[={}]", s.kind.placeholder())
    } else {
        format!("{flag} {}", s.kind.placeholder())
    }
}

/// `--help` text: usage, the special flags, then every setting with its flags, env var and
/// default.
pub fn help_text() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgvpd {} - PostgreSQL proxy that turns the tenant in the user name into RLS context\n\n\
         Usage: pgvpd [OPTIONS]\n\n\
         Precedence: built-in defaults < config file < PGVPD_* environment < command line.\n\
         Every option below is also a config-file key (`key = value`).\n\n\
         General:\n  \
           --config PATH\n        Config file (default: ./pgvpd.conf, skipped if absent).\n  \
           --check-config\n        Validate the configuration, print it (secrets redacted) and exit.\n  \
           -h, --help\n        Print this help and exit.\n  \
           -V, --version\n        Print the version and exit.\n\n\
         Settings:",
        env!("CARGO_PKG_VERSION")
    );
    for s in SETTINGS {
        let flags = s
            .cli
            .iter()
            .map(|f| flag_usage(s, f))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  {flags}");
        let _ = writeln!(out, "        {}", s.doc);
        let mut meta = format!("key: {}", s.name);
        for a in s.aliases {
            let _ = write!(meta, " (alias {a})");
        }
        let _ = write!(meta, "; env: {}; ", s.env);
        if s.default.is_empty() {
            meta.push_str("default: unset");
        } else {
            let _ = write!(meta, "default: {}", s.default);
        }
        let _ = writeln!(out, "        [{meta}]");
    }
    out
}

/// Quote a value for the config file if needed (round-trips through [`super::parse`] unless
/// it contains both kinds of quote).
fn file_value(v: &str) -> String {
    let needs = v.is_empty()
        || v.trim() != v
        || v.contains(['#', '"', '\''])
        || v.chars().any(char::is_control);
    if !needs {
        return v.to_owned();
    }
    let q = if v.contains('"') { '\'' } else { '"' };
    let body: String = v
        .chars()
        .flat_map(|c| {
            // Control characters cannot be represented in the line format; show them escaped.
            let esc: Vec<char> = if c.is_control() {
                c.escape_debug().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect();
    format!("{q}{body}{q}")
}

fn effective_value(s: &Setting, cfg: &Config) -> Option<String> {
    let v = (s.get)(cfg)?;
    Some(if s.secret {
        REDACTED.to_owned()
    } else {
        file_value(&v)
    })
}

/// The effective configuration in config-file syntax, every key in table order; secrets are
/// printed as `********`, unset options as `# key = (unset)`.
pub fn render_effective(cfg: &Config) -> String {
    let mut out = String::from("# pgvpd effective configuration (secrets redacted)\n");
    for s in SETTINGS {
        match effective_value(s, cfg) {
            Some(v) => {
                let _ = writeln!(out, "{} = {v}", s.name);
            }
            None => {
                let _ = writeln!(out, "# {} = (unset)", s.name);
            }
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Markdown table of every setting: key, aliases, env var, flags, default, description.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Key | Aliases | Env var | Flag | Type | Default | Description |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let aliases = s
            .aliases
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let flags = s
            .cli
            .iter()
            .map(|f| format!("`{}`", flag_usage(s, f)))
            .collect::<Vec<_>>()
            .join(", ");
        let default = if s.default.is_empty() {
            "(unset)".to_owned()
        } else {
            format!("`{}`", s.default)
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} | {} | {} |",
            s.name,
            aliases,
            s.env,
            flags,
            md_cell(&s.kind.describe()),
            default,
            md_cell(s.doc)
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::{ClientTls, PoolMode, UpstreamTls, parse};
    use std::path::PathBuf;

    #[test]
    fn help_mentions_every_flag_env_and_default() {
        let h = help_text();
        for s in SETTINGS {
            for f in s.cli {
                assert!(h.contains(f), "flag {f} missing");
            }
            assert!(h.contains(s.env), "env {} missing", s.env);
            assert!(h.contains(&format!("key: {}", s.name)), "{}", s.name);
            if !s.default.is_empty() {
                assert!(h.contains(&format!("default: {}", s.default)), "{}", s.name);
            }
        }
        for f in [
            "--config",
            "--check-config",
            "--help",
            "--version",
            "-h",
            "-V",
        ] {
            assert!(h.contains(f), "{f}");
        }
        assert!(h.contains("\n  --upstream-tls[=MODE]\n"), "{h}");
        assert!(h.contains("--client-tls MODE"));
        assert!(h.contains("--upstream-tls-direct BOOL"));
        assert!(h.contains("--upstream-tls-verify BOOL"));
    }

    #[test]
    fn effective_config_round_trips_and_redacts() {
        let cfg = Config {
            pool_mode: PoolMode::Session,
            pool_password: Some("topsecret1".into()),
            upstream_password: Some("topsecret2".into()),
            tenant_separator: "#".into(),
            set_role: Some("it's me".into()),
            upstream_host: "say \"hi\"".into(),
            listen_host: " spaced ".into(),
            tls_cert: Some(PathBuf::from("/etc/pgvpd/cert.pem")),
            client_tls: ClientTls::Require,
            upstream_tls: UpstreamTls::VerifyCa,
            upstream_tls_direct: true,
            tenant_allow: Some(vec!["a".into(), "b".into()]),
            ..Config::default()
        };
        let out = render_effective(&cfg);
        assert!(!out.contains("topsecret"), "{out}");
        assert!(out.contains("\npool_password = ********\n"), "{out}");
        assert!(out.contains("\n# tls_port = (unset)\n"), "{out}");
        assert!(out.contains("\ntenant_separator = \"#\"\n"), "{out}");
        assert!(out.contains("\ntenant_allow = a,b\n"), "{out}");
        assert!(out.contains("\nport = 6432\n"), "{out}");
        assert!(out.contains("\nclient_tls = require\n"), "{out}");
        assert!(out.contains("\nupstream_tls = verify-ca\n"), "{out}");
        assert!(out.contains("\nupstream_tls_direct = true\n"), "{out}");
        let out_default = render_effective(&Config::default());
        assert!(
            out_default.contains("\nupstream_tls = disable\n"),
            "{out_default}"
        );
        assert!(
            out_default.contains("\nclient_tls = disable\n"),
            "{out_default}"
        );
        // Every key appears exactly once, in table order.
        let keys: Vec<String> = out
            .lines()
            .skip(1)
            .map(|l| {
                l.trim_start_matches("# ")
                    .split(" = ")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(keys, names);
        // Parsing it back gives the same values (secrets aside).
        let mut back = Config::default();
        for e in parse(&out).unwrap() {
            let (_, s) = crate::config::settings::find(&e.key).unwrap();
            crate::config::settings::apply(s, &mut back, &e.value).unwrap();
        }
        let expect = Config {
            pool_password: Some(REDACTED.into()),
            upstream_password: Some(REDACTED.into()),
            ..cfg
        };
        assert_eq!(back, expect);
    }

    #[test]
    fn markdown_lists_every_setting() {
        let md = markdown_table();
        assert_eq!(md.lines().count(), SETTINGS.len() + 2);
        for s in SETTINGS {
            assert!(md.contains(&format!("| `{}` |", s.name)), "{}", s.name);
            assert!(md.contains(s.env));
            for a in s.aliases {
                assert!(md.contains(&format!("`{a}`")));
            }
        }
        assert!(md.contains("| `--upstream-tls[=MODE]` |"), "{md}");
        assert!(md.contains("| `--client-tls MODE` |"), "{md}");
        for line in md.lines() {
            let cells = line.matches('|').count() - line.matches("\\|").count();
            assert_eq!(cells, 8, "{line}");
        }
    }

    /// Prints the README table: `cargo test --lib print_config_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_config_table() {
        print!("{}", markdown_table());
    }
}
