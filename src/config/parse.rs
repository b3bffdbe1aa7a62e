//! The `key = value` file format, syntax only (keys and values are checked in [`super::load`]).
//!
//! Rules:
//! - one setting per line; lines are trimmed; blank lines and lines starting with `#` are skipped;
//! - the line is split at its first `=`; the key (trimmed) must not be empty;
//! - a value may be wrapped in `"..."` or `'...'`: no escape processing, `#` inside is literal,
//!   only a comment may follow the closing quote;
//! - in an unquoted value `#` starts a comment (trailing blanks before it are dropped), and a
//!   quote character is an error (quote the whole value instead);
//! - an empty value is allowed (for an option without a default it means "unset").
//!
//! Pure: no I/O; never panics (fuzz target `config`).

use super::{ConfigError, Source};

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The key as written (trimmed).
    pub key: String,
    /// The value, unquoted, comment removed.
    pub value: String,
}

fn err(line: usize, key: Option<&str>, msg: &str) -> ConfigError {
    // The path is filled in by the caller (`ConfigError::in_file`).
    ConfigError::new(Source::File(Default::default()), line, key, msg.to_owned())
}

/// Parse the text of a config file into entries, in file order.
pub fn parse(text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx.saturating_add(1);
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(err(line, None, "expected 'key = value'"));
        };
        let key = k.trim();
        if key.is_empty() {
            return Err(err(line, None, "empty key before '='"));
        }
        let value = parse_value(v.trim_start()).map_err(|m| err(line, Some(key), m))?;
        out.push(Entry {
            line,
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<&str, &'static str> {
    let mut chars = v.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let rest = chars.as_str();
            let Some((inner, after)) = rest.split_once(q) else {
                return Err(if q == '"' {
                    "unterminated '\"' quote"
                } else {
                    "unterminated \"'\" quote"
                });
            };
            let after = after.trim_start();
            if after.is_empty() || after.starts_with('#') {
                Ok(inner)
            } else {
                Err("unexpected text after the closing quote (only a # comment may follow)")
            }
        }
        _ => {
            let value = match v.split_once('#') {
                Some((before, _comment)) => before,
                None => v,
            }
            .trim_end();
            if value.contains(['"', '\'']) {
                Err("stray quote in unquoted value (wrap the whole value in quotes)")
            } else {
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(usize, String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.line, e.key, e.value))
            .collect()
    }

    #[test]
    fn accepted_lines() {
        // (input, expected key, expected value)
        let cases: &[(&str, &str, &str)] = &[
            ("port = 6432", "port", "6432"),
            ("  port=6432  ", "port", "6432"),
            ("port = 6432 # inline comment", "port", "6432"),
            ("port = 6432#tight comment", "port", "6432"),
            ("set_role = \"my role\"", "set_role", "my role"),
            ("set_role = 'my role'", "set_role", "my role"),
            ("pool_password = \"a#b\"", "pool_password", "a#b"),
            ("pool_password = 'a#b' # c", "pool_password", "a#b"),
            ("pool_password = \"it's\"", "pool_password", "it's"),
            (
                "pool_password = 'say \"hi\"'",
                "pool_password",
                "say \"hi\"",
            ),
            ("pool_password = \"a\\\"", "pool_password", "a\\"),
            ("pool_password = a=b", "pool_password", "a=b"),
            ("tls_cert =", "tls_cert", ""),
            ("tls_cert = # nothing", "tls_cert", ""),
            ("tls_cert = \"\"", "tls_cert", ""),
            ("x = \"  padded  \"", "x", "  padded  "),
            ("context = a.b, c.d", "context", "a.b, c.d"),
        ];
        for (input, k, v) in cases {
            let text = format!("# header\n\n{input}\n");
            assert_eq!(
                ok(&text),
                vec![(3, k.to_string(), v.to_string())],
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejected_lines() {
        // (input, error line, key, message fragment)
        let cases: &[(&str, usize, Option<&str>, &str)] = &[
            ("port = 1\nport\n", 2, None, "expected 'key = value'"),
            ("\n\n = 5\n", 3, None, "empty key"),
            ("a = '\n", 1, Some("a"), "unterminated \"'\" quote"),
            ("a = \"\n", 1, Some("a"), "unterminated '\"' quote"),
            ("# c\na = \"abc\n", 2, Some("a"), "unterminated"),
            ("a = abc'\n", 1, Some("a"), "stray quote"),
            ("a = ab\"c\"\n", 1, Some("a"), "stray quote"),
            ("a = 'x' y\n", 1, Some("a"), "after the closing quote"),
            ("a = \"x\"\"y\"\n", 1, Some("a"), "after the closing quote"),
        ];
        for (input, line, key, frag) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.line, *line, "input {input:?}: {e}");
            assert_eq!(e.key.as_deref(), *key, "input {input:?}: {e}");
            assert!(e.msg.contains(frag), "input {input:?}: {e}");
        }
    }

    #[test]
    fn multiple_lines_and_crlf() {
        let text = "port = 1\r\n# c\r\n\r\nhost = h # x\r\nempty=\r\n";
        assert_eq!(
            ok(text),
            vec![
                (1, "port".into(), "1".into()),
                (4, "host".into(), "h".into()),
                (5, "empty".into(), "".into()),
            ]
        );
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("   \n\t# only comments\n"), vec![]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "=",
            "==",
            "'",
            "\"",
            "a='",
            "a=\"",
            "a=#",
            "#=",
            "a = 'é",
            "é=é",
            "\u{0}=\u{0}",
            "a\u{2028}=b",
            "a = ''''",
            "a = '' #'",
        ] {
            let _ = parse(s);
        }
    }
}
