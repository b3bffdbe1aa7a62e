//! Sources and precedence: defaults → config file → `PGVPD_*` environment → CLI flags,
//! then [`resolve`] (values that depend on other keys), then [`validate`](super::validate())
//! (errors located at the source that set the key).
//!
//! Config file: `--config PATH` (an error if it cannot be read); without it `pgvpd.conf` in the
//! working directory is read if it exists (only "not found" is silently skipped).
//! Environment values are used verbatim (no quote stripping, no trimming; list items are
//! trimmed); an empty value unsets an option that has no default.
//! CLI: `--flag value`, `--flag=value`, short flags `-p value`; `-h/--help`, `-V/--version`,
//! `--check-config`; an unknown flag, a stray argument or a flag given twice is an error.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::settings::{self, SETTINGS, find, find_flag, show, suggest};
use super::{ClientTls, Config, ConfigError, Source, UpstreamTls, validate};

/// Default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "pgvpd.conf";

/// What the binary should do.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Start the proxy with this (validated) configuration.
    Run(Box<Config>),
    /// `--check-config`: print [`render_effective`](super::render_effective) and exit 0.
    CheckConfig(Box<Config>),
    /// `-h/--help`: print [`help_text`](super::help_text) and exit 0.
    Help,
    /// `-V/--version`: print the version and exit 0.
    Version,
}

/// Where a setting's effective value came from (for locating validation errors).
#[derive(Clone, Debug)]
enum Origin {
    File(usize),
    Env(&'static str),
    Cli(String),
}

impl ConfigError {
    /// Attach the file path to an error produced by [`parse`](super::parse()).
    pub(crate) fn in_file(mut self, path: &Path) -> ConfigError {
        self.source = Source::File(path.to_path_buf());
        self
    }
}

struct CliArgs {
    config: Option<String>,
    check: bool,
    /// (flag as written, setting index, value)
    values: Vec<(String, usize, String)>,
}

fn cli_err(flag: &str, key: Option<&str>, msg: String) -> ConfigError {
    ConfigError::new(Source::Cli(flag.to_owned()), 0, key, msg)
}

/// Scan argv (without argv[0]). `Ok(Err(cmd))` = help/version requested.
fn scan(args: &[String]) -> Result<Result<CliArgs, Command>, ConfigError> {
    let mut out = CliArgs {
        config: None,
        check: false,
        values: Vec::new(),
    };
    let mut seen: Vec<Option<String>> = vec![None; SETTINGS.len()];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        let no_value = |flag: &str| {
            if inline.is_some() {
                Err(cli_err(flag, None, format!("{flag} takes no value")))
            } else {
                Ok(())
            }
        };
        match flag {
            "-h" | "--help" => {
                no_value(flag)?;
                return Ok(Err(Command::Help));
            }
            "-V" | "--version" => {
                no_value(flag)?;
                return Ok(Err(Command::Version));
            }
            "--check-config" => {
                no_value(flag)?;
                out.check = true;
                continue;
            }
            _ => {}
        }
        let take_value = |it: &mut std::slice::Iter<'_, String>| match inline {
            Some(v) => Ok(v.to_owned()),
            None => it
                .next()
                .cloned()
                .ok_or_else(|| cli_err(flag, None, format!("{flag} requires a value"))),
        };
        if flag == "--config" {
            if out.config.is_some() {
                return Err(cli_err(flag, None, "--config given more than once".into()));
            }
            out.config = Some(take_value(&mut it)?);
            continue;
        }
        let Some((idx, s)) = find_flag(flag) else {
            let msg = if flag.starts_with('-') {
                format!("unknown option '{}' (see --help)", show(flag))
            } else {
                format!("unexpected argument '{}' (see --help)", show(flag))
            };
            return Err(cli_err(flag, None, msg));
        };
        let value = if s.switch && inline.is_none() {
            "true".to_owned()
        } else {
            take_value(&mut it)?
        };
        if let Some(slot) = seen.get_mut(idx)
            && let Some(prev) = slot.replace(flag.to_owned())
        {
            return Err(cli_err(
                flag,
                Some(s.name),
                format!("given more than once (also as {prev})"),
            ));
        }
        out.values.push((flag.to_owned(), idx, value));
    }
    Ok(Ok(out))
}

fn set_origin(origins: &mut [Option<Origin>], idx: usize, o: Origin) {
    if let Some(slot) = origins.get_mut(idx) {
        *slot = Some(o);
    }
}

/// Apply the entries of a config file (already read) on top of `cfg`.
fn apply_file(
    cfg: &mut Config,
    origins: &mut [Option<Origin>],
    path: &Path,
    text: &str,
) -> Result<(), ConfigError> {
    let entries = super::parse(text).map_err(|e| e.in_file(path))?;
    let file_err = |line, key: &str, msg| {
        ConfigError::new(Source::File(path.to_path_buf()), line, Some(key), msg)
    };
    // First line and spelling of each setting seen in this file.
    let mut seen: Vec<Option<(usize, &str)>> = vec![None; SETTINGS.len()];
    for e in &entries {
        let Some((idx, s)) = find(&e.key) else {
            let msg = match suggest(&e.key) {
                Some(k) => format!("unknown key (did you mean '{k}'?)"),
                None => "unknown key".to_owned(),
            };
            return Err(file_err(e.line, &e.key, msg));
        };
        if let Some(slot) = seen.get_mut(idx) {
            if let Some((line, first)) = *slot {
                let msg = if first == e.key {
                    format!("duplicate key (already set on line {line})")
                } else {
                    format!("duplicate key (already set on line {line} as '{first}')")
                };
                return Err(file_err(e.line, &e.key, msg));
            }
            *slot = Some((e.line, e.key.as_str()));
        }
        settings::apply(s, cfg, &e.value).map_err(|m| file_err(e.line, &e.key, m))?;
        set_origin(origins, idx, Origin::File(e.line));
    }
    Ok(())
}

/// Build the configuration from argv (without argv[0]), an environment lookup and a file reader,
/// then validate it. The only I/O goes through `env` and `read_file`.
///
/// In `main`: `load(&args, &|k| std::env::var(k).ok(), &|p| std::fs::read_to_string(p))`.
pub fn load(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Command, ConfigError> {
    let cli = match scan(args)? {
        Ok(cli) => cli,
        Err(cmd) => return Ok(cmd),
    };
    let mut cfg = Config::default();
    let mut origins: Vec<Option<Origin>> = vec![None; SETTINGS.len()];

    // 1. config file
    let (path, explicit) = match &cli.config {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    match read_file(&path) {
        Ok(text) => apply_file(&mut cfg, &mut origins, &path, &text)?,
        Err(e) if !explicit && e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::new(
                Source::File(path.clone()),
                0,
                None,
                format!("cannot read config file '{}': {e}", path.display()),
            ));
        }
    }

    // 2. environment
    for (idx, s) in SETTINGS.iter().enumerate() {
        if let Some(v) = env(s.env) {
            settings::apply(s, &mut cfg, &v)
                .map_err(|m| ConfigError::new(Source::Env(s.env.to_owned()), 0, Some(s.name), m))?;
            set_origin(&mut origins, idx, Origin::Env(s.env));
        }
    }

    // 3. command line
    for (flag, idx, value) in &cli.values {
        let Some(s) = SETTINGS.get(*idx) else {
            continue;
        };
        settings::apply(s, &mut cfg, value).map_err(|m| cli_err(flag, Some(s.name), m))?;
        set_origin(&mut origins, *idx, Origin::Cli(flag.clone()));
    }

    // 4. values that depend on other keys, once every source is merged
    let client_tls_set = find("client_tls")
        .and_then(|(idx, _)| origins.get(idx))
        .is_some_and(Option::is_some);
    resolve(&mut cfg, client_tls_set);

    // 5. validation, located at whichever source set the offending key
    validate(&cfg).map_err(|e| locate(e, &origins, &path))?;

    Ok(if cli.check {
        Command::CheckConfig(Box::new(cfg))
    } else {
        Command::Run(Box::new(cfg))
    })
}

/// Apply the rules that depend on several keys, after all sources are merged (also for a
/// reload):
/// - `client_tls` not set anywhere (`client_tls_set == false`): `allow` when `tls_cert` is set,
///   else `disable`;
/// - `upstream_tls_verify = false` downgrades `upstream_tls = verify-ca | verify-full` to
///   `require` (pgvpd 1.0: `upstream_tls = true` + `upstream_tls_verify = false` meant
///   "encrypted, certificate not checked").
pub fn resolve(cfg: &mut Config, client_tls_set: bool) {
    if !client_tls_set {
        cfg.client_tls = if cfg.tls_cert.is_some() {
            ClientTls::Allow
        } else {
            ClientTls::Disable
        };
    }
    if !cfg.upstream_tls_verify && cfg.upstream_tls.verifies_chain() {
        cfg.upstream_tls = UpstreamTls::Require;
    }
}

fn locate(mut e: ConfigError, origins: &[Option<Origin>], path: &Path) -> ConfigError {
    let origin = e
        .key
        .as_deref()
        .and_then(find)
        .and_then(|(idx, _)| origins.get(idx))
        .and_then(Option::as_ref);
    match origin {
        Some(Origin::File(line)) => {
            e.source = Source::File(path.to_path_buf());
            e.line = *line;
        }
        Some(Origin::Env(var)) => e.source = Source::Env((*var).to_owned()),
        Some(Origin::Cli(flag)) => e.source = Source::Cli(flag.clone()),
        None => {}
    }
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::{ClientTls, PoolMode, UpstreamTls};
    use std::collections::HashMap;
    use std::io;
    use std::time::Duration;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Run `load` with a fake environment and a fake file system.
    fn run(
        argv: &[&str],
        env: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Command, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        load(&args(argv), &|k| env.get(k).cloned(), &|p| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file"))
        })
    }

    fn cfg(argv: &[&str], env: &[(&str, &str)], files: &[(&str, &str)]) -> Config {
        match run(argv, env, files).unwrap() {
            Command::Run(c) | Command::CheckConfig(c) => *c,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn file_err(text: &str) -> ConfigError {
        run(&["--config", "t.conf"], &[], &[("t.conf", text)]).unwrap_err()
    }

    #[test]
    fn no_sources_gives_defaults() {
        assert_eq!(cfg(&[], &[], &[]), Config::default());
    }

    #[test]
    fn file_values_and_aliases() {
        let c = cfg(
            &[],
            &[],
            &[(
                "pgvpd.conf",
                "listen_port = 7000 # comment\nhost = 0.0.0.0\nseparator = '#'\n\
                 context = app.a, app.b\nsuperuser = postgres, admin\npool_mode = Transaction\n\
                 pool_password = \"p#w\"\nupstream_password = x\nhandshake_timeout_secs = 9\n\
                 upstream_tls = YES\nupstream_tls_verify = off\ntenant_deny = bad\n\
                 tls_port =\nworkers = 4\nLOG_LEVEL = debug\n",
            )],
        );
        assert_eq!(c.port, 7000);
        assert_eq!(c.listen_host, "0.0.0.0");
        assert_eq!(c.tenant_separator, "#");
        assert_eq!(c.context_variables, ["app.a", "app.b"]);
        assert_eq!(c.superuser_bypass, ["postgres", "admin"]);
        assert_eq!(c.pool_mode, PoolMode::Transaction);
        assert_eq!(c.pool_password.as_deref(), Some("p#w"));
        assert_eq!(c.handshake_timeout, Duration::from_secs(9));
        // 1.0 boolean `YES` = verify-full, downgraded by `upstream_tls_verify = off`.
        assert_eq!(c.upstream_tls, UpstreamTls::Require);
        assert!(!c.upstream_tls_verify);
        assert_eq!(c.tenant_deny, Some(vec!["bad".to_string()]));
        assert_eq!(c.tls_port, None);
        assert_eq!(c.workers, 4);
        assert_eq!(c.log_level, crate::log::Level::Debug);
    }

    #[test]
    fn file_errors_with_line_numbers() {
        // (file text, line, key, message fragment, full Display or "")
        let cases: &[(&str, usize, Option<&str>, &str, &str)] = &[
            (
                "port = 1\n\nprot = 2\n",
                3,
                Some("prot"),
                "unknown key (did you mean 'port'?)",
                "t.conf:3: key 'prot': unknown key (did you mean 'port'?)",
            ),
            (
                "zzzzzzzz = 1\n",
                1,
                Some("zzzzzzzz"),
                "unknown key",
                "t.conf:1: key 'zzzzzzzz': unknown key",
            ),
            (
                "port = 1\nport = 2\n",
                2,
                Some("port"),
                "duplicate key (already set on line 1)",
                "",
            ),
            (
                "port = 1\n# x\nlisten_port = 2\n",
                3,
                Some("listen_port"),
                "already set on line 1 as 'port'",
                "",
            ),
            (
                "context = a.b\ncontext_variables = c.d\n",
                2,
                Some("context_variables"),
                "already set on line 1 as 'context'",
                "",
            ),
            (
                "# c\nport = abc\n",
                2,
                Some("port"),
                "invalid number 'abc' (expected 0..=65535)",
                "t.conf:2: key 'port': invalid number 'abc' (expected 0..=65535)",
            ),
            ("port = -1\n", 1, Some("port"), "invalid number '-1'", ""),
            ("port = 65536\n", 1, Some("port"), "invalid number", ""),
            (
                "pool_size = 1 000\n",
                1,
                Some("pool_size"),
                "invalid number",
                "",
            ),
            (
                "handshake_timeout = -5\n",
                1,
                Some("handshake_timeout"),
                "invalid number of seconds",
                "",
            ),
            (
                "upstream_tls = maybe\n",
                1,
                Some("upstream_tls"),
                "invalid value 'maybe'",
                "",
            ),
            (
                "\npool_mode = sesion\n",
                2,
                Some("pool_mode"),
                "invalid value 'sesion' (expected one of: none, session, transaction)",
                "",
            ),
            (
                "log_level = loud\n",
                1,
                Some("log_level"),
                "invalid log level 'loud'",
                "",
            ),
            (
                "superuser_bypass = postgres,,admin\n",
                1,
                Some("superuser_bypass"),
                "empty item",
                "",
            ),
            (
                "tenant_allow = a, b, a\n",
                1,
                Some("tenant_allow"),
                "duplicate item 'a'",
                "",
            ),
            (
                "port = 6432 # ok\nset_role = '\n",
                2,
                Some("set_role"),
                "unterminated",
                "",
            ),
            (
                "a\n",
                1,
                None,
                "expected 'key = value'",
                "t.conf:1: expected 'key = value'",
            ),
            (
                "pool_password = ab\"c\n",
                1,
                Some("pool_password"),
                "stray quote",
                "",
            ),
            ("set_role = x\u{0}y\n", 1, Some("set_role"), "NUL", ""),
        ];
        for (text, line, key, frag, full) in cases {
            let e = file_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert_eq!(e.key.as_deref(), *key, "{text:?}: {e}");
            assert_eq!(e.source, Source::File("t.conf".into()), "{text:?}");
            assert!(e.msg.contains(frag), "{text:?}: {e}");
            if !full.is_empty() {
                assert_eq!(e.to_string(), *full);
            }
        }
    }

    #[test]
    fn precedence_file_env_cli() {
        let files = [(
            "pgvpd.conf",
            "port = 1000\nupstream_port = 1001\npool_size = 7\n",
        )];
        let env = [("PGVPD_UPSTREAM_PORT", "2001"), ("PGVPD_POOL_SIZE", "8")];
        let c = cfg(&["--pool-size", "9"], &env, &files);
        assert_eq!((c.port, c.upstream_port, c.pool_size), (1000, 2001, 9));
        let c = cfg(&["--pool-size=10", "-p", "3000"], &env, &files);
        assert_eq!((c.port, c.upstream_port, c.pool_size), (3000, 2001, 10));
        let c = cfg(&[], &env, &files);
        assert_eq!((c.port, c.upstream_port, c.pool_size), (1000, 2001, 8));
        let c = cfg(&[], &[], &files);
        assert_eq!((c.port, c.upstream_port, c.pool_size), (1000, 1001, 7));
    }

    #[test]
    fn env_rules() {
        // Not quote-stripped, not trimmed.
        let c = cfg(
            &[],
            &[("PGVPD_SET_ROLE", "'r'"), ("PGVPD_HOST", " h ")],
            &[],
        );
        assert_eq!(c.set_role.as_deref(), Some("'r'"));
        assert_eq!(c.listen_host, " h ");
        // Empty unsets an optional value set by the file.
        let c = cfg(
            &[],
            &[("PGVPD_ADMIN_PORT", "")],
            &[("pgvpd.conf", "admin_port = 9\n")],
        );
        assert_eq!(c.admin_port, None);
        let e = run(&[], &[("PGVPD_PORT", " 6432")], &[]).unwrap_err();
        assert_eq!(e.source, Source::Env("PGVPD_PORT".into()));
        assert_eq!(e.key.as_deref(), Some("port"));
        assert_eq!(
            e.to_string(),
            "environment variable PGVPD_PORT: key 'port': invalid number ' 6432' (expected 0..=65535)"
        );
        let e = run(&[], &[("PGVPD_UPSTREAM_TLS", "sure")], &[]).unwrap_err();
        assert_eq!(e.source, Source::Env("PGVPD_UPSTREAM_TLS".into()));
    }

    #[test]
    fn config_file_discovery() {
        // Missing default file: fine.
        assert!(run(&[], &[], &[]).is_ok());
        // Missing explicit file: error.
        let e = run(&["--config", "/nope.conf"], &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read config file '/nope.conf': No such file"
        );
        let e = run(&["--config=/nope.conf"], &[], &[]).unwrap_err();
        assert!(e.msg.starts_with("cannot read config file '/nope.conf'"));
        // Unreadable default file (not "not found"): error.
        let e = load(&[], &|_| None, &|_| {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "Permission denied",
            ))
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read config file 'pgvpd.conf': Permission denied"
        );
        // Explicit file is used instead of the default one.
        let c = cfg(
            &["--config", "other.conf"],
            &[],
            &[("pgvpd.conf", "port = 1\n"), ("other.conf", "port = 2\n")],
        );
        assert_eq!(c.port, 2);
    }

    #[test]
    fn cli_forms_and_errors() {
        assert_eq!(run(&["--help"], &[], &[]).unwrap(), Command::Help);
        assert_eq!(run(&["-h"], &[], &[]).unwrap(), Command::Help);
        assert_eq!(run(&["-V"], &[], &[]).unwrap(), Command::Version);
        assert_eq!(run(&["--version"], &[], &[]).unwrap(), Command::Version);
        // Help wins even with a config that would fail.
        assert_eq!(
            run(&["--config", "/nope", "--help"], &[], &[]).unwrap(),
            Command::Help
        );
        assert!(matches!(
            run(&["--check-config"], &[], &[]).unwrap(),
            Command::CheckConfig(_)
        ));

        let c = cfg(
            &["--upstream-tls", "--upstream-tls-verify", "false"],
            &[],
            &[],
        );
        assert_eq!(c.upstream_tls, UpstreamTls::Require);
        assert!(!c.upstream_tls_verify);
        let c = cfg(
            &["--upstream-tls=false"],
            &[("PGVPD_UPSTREAM_TLS", "1")],
            &[],
        );
        assert_eq!(c.upstream_tls, UpstreamTls::Disable);
        let c = cfg(
            &[
                "--context",
                "app.a,app.b",
                "--separator=@",
                "--superuser",
                "root",
                "--listen-host",
                "::1",
                "--pool-password",
                "-dash-",
            ],
            &[],
            &[],
        );
        assert_eq!(c.context_variables, ["app.a", "app.b"]);
        assert_eq!(c.tenant_separator, "@");
        assert_eq!(c.superuser_bypass, ["root"]);
        assert_eq!(c.listen_host, "::1");
        assert_eq!(c.pool_password.as_deref(), Some("-dash-"));

        // (argv, source flag, message fragment)
        let cases: &[(&[&str], &str, &str)] = &[
            (&["--bogus"], "--bogus", "unknown option '--bogus'"),
            (&["--bogus=1"], "--bogus", "unknown option"),
            (&["-x"], "-x", "unknown option '-x'"),
            (&["stray"], "stray", "unexpected argument 'stray'"),
            (&["--port"], "--port", "--port requires a value"),
            (&["-p"], "-p", "-p requires a value"),
            (&["--port", "x"], "--port", "invalid number 'x'"),
            (
                &["-p", "1", "--port", "2"],
                "--port",
                "given more than once (also as -p)",
            ),
            (&["--help=1"], "--help", "takes no value"),
            (&["--check-config=yes"], "--check-config", "takes no value"),
            (&["--config"], "--config", "requires a value"),
            (
                &["--upstream-tls=maybe"],
                "--upstream-tls",
                "invalid value 'maybe'",
            ),
        ];
        for (argv, flag, frag) in cases {
            let e = run(argv, &[], &[]).unwrap_err();
            assert_eq!(e.source, Source::Cli(flag.to_string()), "{argv:?}: {e}");
            assert!(e.msg.contains(frag), "{argv:?}: {e}");
        }
        let e = run(&["--port", "x"], &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "command line --port: key 'port': invalid number 'x' (expected 0..=65535)"
        );
    }

    #[test]
    fn validation_errors_are_located() {
        let e = file_err("port = 1\n\ncontext_variables = app-tenant\n");
        assert_eq!(
            e.to_string(),
            "t.conf:3: key 'context_variables': 'app-tenant' is not a valid setting name \
             (expected prefix.name)"
        );
        let e = run(&[], &[("PGVPD_HANDSHAKE_TIMEOUT", "0")], &[]).unwrap_err();
        assert_eq!(e.source, Source::Env("PGVPD_HANDSHAKE_TIMEOUT".into()));
        assert_eq!(e.key.as_deref(), Some("handshake_timeout"));
        let e = run(&["--workers", "65"], &[], &[]).unwrap_err();
        assert_eq!(e.source, Source::Cli("--workers".into()));
        assert_eq!(e.key.as_deref(), Some("workers"));
        // pool_mode from the file, password missing everywhere: located at pool_mode's line.
        let e = file_err("\n\npool_mode = session\n");
        assert_eq!((e.line, e.key.as_deref()), (3, Some("pool_mode")));
        assert!(e.msg.contains("pool_password"), "{e}");
        // Alias spelling in the file, canonical key in the error, line of the alias.
        let e = file_err("# x\nhandshake_timeout_secs = 0\n");
        assert_eq!(
            e.to_string(),
            "t.conf:2: key 'handshake_timeout': must be > 0"
        );
    }

    #[test]
    fn client_tls_default_depends_on_tls_cert() {
        let pair = "tls_cert = c.pem\ntls_key = k.pem\n";
        // (file text, argv, expected)
        let cases: &[(&str, &[&str], ClientTls)] = &[
            ("", &[], ClientTls::Disable),
            (pair, &[], ClientTls::Allow),
            (pair, &["--client-tls", "disable"], ClientTls::Disable),
            (pair, &["--client-tls=REQUIRE"], ClientTls::Require),
            (
                "client_tls = allow\ntls_cert = c.pem\ntls_key = k.pem\n",
                &[],
                ClientTls::Allow,
            ),
        ];
        for (text, argv, want) in cases {
            let mut a = vec!["--config", "t.conf"];
            a.extend_from_slice(argv);
            let c = cfg(&a, &[], &[("t.conf", text)]);
            assert_eq!(c.client_tls, *want, "{text:?} {argv:?}");
        }
        // From the environment too; the resolved value is what --check-config prints.
        let c = cfg(
            &[],
            &[("PGVPD_TLS_CERT", "c.pem"), ("PGVPD_TLS_KEY", "k.pem")],
            &[],
        );
        assert_eq!(c.client_tls, ClientTls::Allow);
        assert!(crate::config::render_effective(&c).contains("\nclient_tls = allow\n"));
        // An empty tls_cert (unset) from the environment keeps the default `disable`.
        let c = cfg(
            &[],
            &[("PGVPD_TLS_CERT", ""), ("PGVPD_TLS_KEY", "")],
            &[("pgvpd.conf", pair)],
        );
        assert_eq!(c.client_tls, ClientTls::Disable);
    }

    #[test]
    fn upstream_tls_modes_and_1_0_booleans() {
        // (file text, env, argv, expected)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            UpstreamTls,
        );
        let cases: &[Case] = &[
            ("", &[], &[], UpstreamTls::Disable),
            ("upstream_tls = true\n", &[], &[], UpstreamTls::VerifyFull),
            ("upstream_tls = on\n", &[], &[], UpstreamTls::VerifyFull),
            ("upstream_tls = 0\n", &[], &[], UpstreamTls::Disable),
            (
                "upstream_tls = verify-ca\n",
                &[],
                &[],
                UpstreamTls::VerifyCa,
            ),
            ("", &[], &["--upstream-tls"], UpstreamTls::VerifyFull),
            ("", &[], &["--upstream-tls=prefer"], UpstreamTls::Prefer),
            ("", &[], &["--upstream-tls=no"], UpstreamTls::Disable),
            (
                "",
                &[("PGVPD_UPSTREAM_TLS", "require")],
                &[],
                UpstreamTls::Require,
            ),
            (
                "upstream_tls = disable\n",
                &[("PGVPD_UPSTREAM_TLS", "verify-ca")],
                &["--upstream-tls"],
                UpstreamTls::VerifyFull,
            ),
            // upstream_tls_verify = false downgrades verify-ca / verify-full to require,
            // whichever source set either key ...
            (
                "upstream_tls = verify-ca\nupstream_tls_verify = false\n",
                &[],
                &[],
                UpstreamTls::Require,
            ),
            (
                "upstream_tls_verify = no\n",
                &[("PGVPD_UPSTREAM_TLS", "verify-full")],
                &[],
                UpstreamTls::Require,
            ),
            (
                "upstream_tls_verify = no\n",
                &[],
                &["--upstream-tls"],
                UpstreamTls::Require,
            ),
            // ... and leaves the other modes alone.
            (
                "upstream_tls = prefer\nupstream_tls_verify = false\n",
                &[],
                &[],
                UpstreamTls::Prefer,
            ),
            (
                "upstream_tls_verify = false\n",
                &[],
                &[],
                UpstreamTls::Disable,
            ),
            (
                "upstream_tls = verify-full\nupstream_tls_verify = false\n",
                &[],
                &["--upstream-tls-verify", "true"],
                UpstreamTls::VerifyFull,
            ),
        ];
        for (text, env, argv, want) in cases {
            let mut a = vec!["--config", "t.conf"];
            a.extend_from_slice(argv);
            let c = cfg(&a, env, &[("t.conf", text)]);
            assert_eq!(c.upstream_tls, *want, "{text:?} {env:?} {argv:?}");
        }
        // The flag's value must be attached: `--upstream-tls verify-ca` is a switch + a stray.
        let e = run(&["--upstream-tls", "verify-ca"], &[], &[]).unwrap_err();
        assert_eq!(e.source, Source::Cli("verify-ca".into()));
        assert!(e.msg.contains("unexpected argument 'verify-ca'"), "{e}");
        // Direct TLS.
        let c = cfg(
            &["--upstream-tls=require", "--upstream-tls-direct", "on"],
            &[],
            &[],
        );
        assert!(c.upstream_tls_direct);
        let c = cfg(
            &[],
            &[("PGVPD_UPSTREAM_TLS_DIRECT", "true")],
            &[(
                "pgvpd.conf",
                "upstream_tls = verify-full\nupstream_tls_verify = off\n",
            )],
        );
        assert!(c.upstream_tls_direct);
        assert_eq!(c.upstream_tls, UpstreamTls::Require);
    }

    #[test]
    fn tls_validation_errors_are_located() {
        // (file text, line, key, full Display)
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "port = 1\ntls_cert = c.pem\n",
                2,
                "tls_cert",
                "t.conf:2: key 'tls_cert': requires tls_key (the private key for tls_cert)",
            ),
            (
                "\n\ntls_key = k.pem\n",
                3,
                "tls_key",
                "t.conf:3: key 'tls_key': requires tls_cert (the certificate chain for tls_key)",
            ),
            (
                "# x\nclient_tls = require\n",
                2,
                "client_tls",
                "t.conf:2: key 'client_tls': client_tls = require requires tls_cert and tls_key",
            ),
            (
                "client_tls = allow\n",
                1,
                "client_tls",
                "t.conf:1: key 'client_tls': client_tls = allow requires tls_cert and tls_key",
            ),
            (
                "upstream_tls = prefer\nupstream_tls_direct = on\n",
                2,
                "upstream_tls_direct",
                "t.conf:2: key 'upstream_tls_direct': requires upstream_tls = require, \
                 verify-ca or verify-full (got prefer)",
            ),
            (
                "upstream_tls_direct = true\n",
                1,
                "upstream_tls_direct",
                "t.conf:1: key 'upstream_tls_direct': requires upstream_tls = require, \
                 verify-ca or verify-full (got disable)",
            ),
            (
                "client_tls = sometimes\n",
                1,
                "client_tls",
                "t.conf:1: key 'client_tls': invalid value 'sometimes' \
                 (expected one of: disable, allow, require)",
            ),
        ];
        for (text, line, key, full) in cases {
            let e = file_err(text);
            assert_eq!((e.line, e.key.as_deref()), (*line, Some(*key)), "{e}");
            assert_eq!(e.to_string(), *full);
        }
        let e = run(&["--upstream-tls-direct", "true"], &[], &[]).unwrap_err();
        assert_eq!(e.source, Source::Cli("--upstream-tls-direct".into()));
        let e = run(&[], &[("PGVPD_CLIENT_TLS", "allow")], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable PGVPD_CLIENT_TLS: key 'client_tls': \
             client_tls = allow requires tls_cert and tls_key"
        );
        // tls_port's own check still comes first.
        let e = run(&["--tls-port", "7000", "--tls-cert", "c"], &[], &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls_port"));
    }

    #[test]
    fn random_inputs_never_panic() {
        // Tiny xorshift: random files / env / argv built from interesting fragments.
        const FRAGS: &[&str] = &[
            "port",
            "listen_port",
            "pool_mode",
            "context",
            "=",
            " ",
            "#",
            "'",
            "\"",
            "\n",
            ",",
            "-1",
            "65536",
            "session",
            "true",
            "app.x",
            "\u{0}",
            "é",
            "\r\n",
            "--port",
            "-p",
            "--upstream-tls",
            "--config",
            "x.conf",
            "",
            "--check-config",
            "tls_port",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut text = String::new();
            let mut argv = Vec::new();
            for _ in 0..(next() % 12) {
                let f = FRAGS[(next() % FRAGS.len() as u64) as usize];
                text.push_str(f);
                if next() % 3 == 0 {
                    argv.push(f.to_string());
                }
            }
            let env_val = text.clone();
            let file = text.clone();
            let _ = load(
                &argv,
                &|k| (k == "PGVPD_POOL_SIZE").then(|| env_val.clone()),
                &|_| Ok(file.clone()),
            );
            let _ = crate::config::parse(&text);
        }
    }

    #[test]
    fn check_config_redacts_secrets() {
        let cmd = run(
            &["--check-config", "--upstream-password", "s3cret-up"],
            &[
                ("PGVPD_POOL_PASSWORD", "s3cret-pool"),
                ("PGVPD_ADMIN_TOKEN", "s3cret-admin"),
            ],
            &[("pgvpd.conf", "pool_mode = session\n")],
        )
        .unwrap();
        let Command::CheckConfig(c) = &cmd else {
            panic!("{cmd:?}")
        };
        let out = crate::config::render_effective(c);
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("pool_password = ********"), "{out}");
        assert!(out.contains("upstream_password = ********"), "{out}");
        assert!(out.contains("admin_token = ********"), "{out}");
        assert!(out.contains("pool_mode = session"), "{out}");
        assert!(!format!("{cmd:?}").contains("s3cret"));
    }
}
