//! PgBouncer's `auth_file` (userlist.txt) format: one `"name" "secret"` per
//! line, each field in double quotes with `""` for a literal quote; the rest
//! of the line is ignored. Blank lines and lines starting with `;` or `#`
//! are comments. The secret is plain text, `md5` + 32 hex digits
//! (`md5(password || name)`), or a `SCRAM-SHA-256$…` verifier.
//!
//! Stricter than PgBouncer on purpose: a line that is neither a comment nor
//! two quoted fields, an empty name, a malformed md5/SCRAM secret or a
//! duplicate name is an error naming the line (never echoing the secret).
//! PURE: the caller reads the file.

use std::fmt;

use super::ct_eq;
use super::scram_server::ScramSecret;

/// Longest line accepted (a SCRAM verifier is ~150 bytes).
pub const MAX_LINE_LEN: usize = 4096;
/// Most entries in one file.
pub const MAX_ENTRIES: usize = 100_000;

/// One user's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// The 32 lowercase hex digits after `md5`.
    Md5([u8; 32]),
    Scram(ScramSecret),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Plain(..)",
            Secret::Md5(_) => "Md5(..)",
            Secret::Scram(_) => "Scram(..)",
        })
    }
}

impl Secret {
    fn parse(s: &str) -> Result<Secret, &'static str> {
        if s.starts_with("SCRAM-SHA-256$") {
            return ScramSecret::parse(s).map(Secret::Scram);
        }
        if let Some(hex) = s.strip_prefix("md5")
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let mut h = [0u8; 32];
            h.copy_from_slice(hex.to_ascii_lowercase().as_bytes());
            return Ok(Secret::Md5(h));
        }
        Ok(Secret::Plain(s.to_string()))
    }

    /// Whether `password` (sent in clear by a client of entry `name`) matches.
    pub fn verify_cleartext(&self, name: &str, password: &[u8]) -> bool {
        match self {
            Secret::Plain(p) => ct_eq(p.as_bytes(), password),
            Secret::Md5(h) => {
                use md5::{Digest, Md5};
                let mut m = Md5::new();
                m.update(password);
                m.update(name.as_bytes());
                let d = m.finalize();
                let mut hex = [0u8; 32];
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for (i, b) in d.iter().take(16).enumerate() {
                    let at = i.saturating_mul(2);
                    if let Some(slot) = hex.get_mut(at..at.saturating_add(2)) {
                        slot.copy_from_slice(&[
                            HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
                            HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'),
                        ]);
                    }
                }
                ct_eq(&hex, h)
            }
            Secret::Scram(s) => s.verify_password(password),
        }
    }
}

/// A parse error: 1-based line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserListError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for UserListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The parsed file, in file order.
#[derive(Clone, Debug, Default)]
pub struct UserList {
    entries: Vec<(String, Secret)>,
}

/// One quoted field at the start of `s`; returns it and the rest.
fn quoted(s: &str) -> Result<(String, &str), &'static str> {
    let rest = s
        .strip_prefix('"')
        .ok_or("expected a double-quoted field")?;
    quoted_tail(String::new(), rest)
}

/// The rest of a quoted field (after its opening quote); `""` is a quote.
fn quoted_tail(mut out: String, s: &str) -> Result<(String, &str), &'static str> {
    let mut rest = s;
    loop {
        match rest.find('"') {
            None => return Err("unterminated double-quoted field"),
            Some(at) => {
                out.push_str(rest.get(..at).unwrap_or(""));
                let after = rest.get(at.saturating_add(1)..).unwrap_or("");
                match after.strip_prefix('"') {
                    Some(more) => {
                        out.push('"');
                        rest = more;
                    }
                    None => return Ok((out, after)),
                }
            }
        }
    }
}

impl UserList {
    pub fn parse(text: &str) -> Result<UserList, UserListError> {
        let mut entries: Vec<(String, Secret)> = Vec::new();
        let mut lines_of: Vec<usize> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx.saturating_add(1);
            let err = |m: &str| UserListError {
                line,
                message: m.to_string(),
            };
            if raw.len() > MAX_LINE_LEN {
                return Err(err(&format!("longer than {MAX_LINE_LEN} bytes")));
            }
            let t = raw.trim_start();
            if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
                continue;
            }
            let (name, rest) = quoted(t).map_err(|m| err(&format!("user name: {m}")))?;
            let rest = rest.trim_start();
            let (secret, _ignored) = quoted(rest).map_err(|m| err(&format!("secret: {m}")))?;
            if name.is_empty() {
                return Err(err("empty user name"));
            }
            if name.contains('\0') || secret.contains('\0') {
                return Err(err("NUL character"));
            }
            let secret = Secret::parse(&secret).map_err(|m| {
                err(&format!(
                    "the secret of \"{name}\" is not a valid verifier: {m}"
                ))
            })?;
            if let Some(first) = entries.iter().position(|(n, _)| *n == name) {
                let at = lines_of.get(first).copied().unwrap_or(0);
                return Err(err(&format!(
                    "duplicate user name \"{name}\" (first on line {at})"
                )));
            }
            if entries.len() >= MAX_ENTRIES {
                return Err(err(&format!("more than {MAX_ENTRIES} entries")));
            }
            entries.push((name, secret));
            lines_of.push(line);
        }
        Ok(UserList { entries })
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn into_entries(self) -> Vec<(String, Secret)> {
        self.entries
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn kinds_comments_and_escapes() {
        let text = "\
; a comment
# another

\"app_user\" \"plain pw\" trailing ignored
\"app_user.acme\" \"md5b85f9be3c5144024e714f44c4eada375\"
\"we\"\"ird\" \"pa\"\"ss\"
";
        let l = UserList::parse(text).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("app_user"), Some(&Secret::Plain("plain pw".into())));
        assert!(matches!(l.get("app_user.acme"), Some(Secret::Md5(_))));
        assert_eq!(l.get("we\"ird"), Some(&Secret::Plain("pa\"ss".into())));
        assert!(l.get("nobody").is_none());
    }

    #[test]
    fn cleartext_checks_every_kind() {
        // md5("secret" || "app_user") = b85f9be3c5144024e714f44c4eada375
        let md5 = Secret::parse("md5b85f9be3c5144024e714f44c4eada375").unwrap();
        assert!(md5.verify_cleartext("app_user", b"secret"));
        assert!(!md5.verify_cleartext("app_user", b"secreT"));
        assert!(
            !md5.verify_cleartext("other", b"secret"),
            "md5 covers the name"
        );
        let plain = Secret::Plain("pw".into());
        assert!(plain.verify_cleartext("x", b"pw"));
        assert!(!plain.verify_cleartext("x", b"pw2"));
        let v = ScramSecret::from_password(b"pw", b"0123456789abcdef", 4096);
        let scram = Secret::parse(&v.to_string()).unwrap();
        assert!(scram.verify_cleartext("x", b"pw"));
        assert!(!scram.verify_cleartext("x", b"nope"));
    }

    #[test]
    fn errors_name_the_line_and_never_the_secret() {
        for (text, line, needle) in [
            ("\"a\" \"x\"\nbare words\n", 2, "user name"),
            ("\"a\" \"x\"\n\"a\" \"y\"\n", 2, "duplicate"),
            ("\"\" \"x\"\n", 1, "empty user name"),
            ("\"a\" \"unterminated\n", 1, "unterminated"),
            ("\"a\"\n", 1, "secret"),
            (
                "\"a\" \"SCRAM-SHA-256$0:c2FsdA==$AAAA:BBBB\"\n",
                1,
                "not a valid verifier",
            ),
        ] {
            let e = UserList::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(!e.to_string().contains("unterminated\n"));
        }
        let e = UserList::parse("\"a\" \"SCRAM-SHA-256$4096:!!$x:y\"").unwrap_err();
        assert!(!e.message.contains("!!"), "secret echoed: {e}");
    }

    #[test]
    fn md5_needs_exactly_32_hex_digits_else_it_is_plain() {
        assert_eq!(
            Secret::parse("md5short").unwrap(),
            Secret::Plain("md5short".into())
        );
    }
}
