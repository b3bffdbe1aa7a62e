//! PgBouncer's `auth_file` (`userlist.txt`): user names and their secrets.
//!
//! Owns: `UserList::parse` (text in, entries out), `UserList::render` (the
//! canonical text, which parses back to the same entries), `Secret` and its
//! `verify_cleartext`. PURE: the caller reads the file; no I/O, no clock.
//!
//! Format, as PgBouncer's loader reads it (its documentation: "at least 2
//! fields, surrounded by double quotes ... PgBouncer ignores the rest of the
//! line. Double quotes in a field value can be escaped by writing two double
//! quotes"):
//! - one entry per line: `"name" "secret"`, then anything (ignored: old
//!   `pg_auth` files had more columns);
//! - leading spaces and tabs are skipped; a line that is empty after them is
//!   blank; a line whose first character after them is `;` is a comment (the
//!   only comment character PgBouncer's loader knows; `#` is an error here,
//!   as it is a "broken auth file" there);
//! - `""` inside a field is one literal `"`;
//! - lines end at `\n`; one `\r` before it is dropped (CRLF files).
//!
//! Stricter than PgBouncer, which silently stops loading at the first bad
//! line: every bad line is an error naming its 1-based line number, and
//! - only spaces and tabs may separate the two fields (PgBouncer skips any
//!   text up to the next quote, even across lines);
//! - a field may not span lines, be empty, or hold a control character;
//! - a secret that starts with `SCRAM-SHA-256$` must be a valid verifier
//!   (`ScramSecret::parse`), and one that is `md5` plus 32 characters must be
//!   32 lowercase hex digits (PostgreSQL's own test for an MD5 hash); neither
//!   falls back to being a plain-text password;
//! - a name may appear once (a duplicate names both lines);
//! - `MAX_LINE_LEN`, `MAX_NAME_LEN`, `MAX_SECRET_LEN` and `MAX_ENTRIES` cap
//!   the work before anything grows.
//!
//! Names are taken as written, dots included: the caller decides whether it
//! looks up the login role (`app_user`) or the client's full user name
//! (`app_user.acme`), and in which order. Errors never contain a secret;
//! `Debug` of `Secret` and `UserList` shows no secret either.

use std::collections::HashMap;
use std::fmt;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::ct_eq;
use super::scram_server::ScramSecret;

/// Longest line accepted (bytes, without the `\n`). A PostgreSQL SCRAM
/// verifier is ~133 bytes; the field caps below fit well inside.
pub const MAX_LINE_LEN: usize = 4096;
/// Most entries accepted. PgBouncer has no cap; this one bounds memory.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest user name (bytes, after unescaping). PostgreSQL role names are at
/// most 63 bytes; client user names carry the tenant suffix on top.
pub const MAX_NAME_LEN: usize = 256;
/// Longest secret (bytes, after unescaping). PgBouncer allows 2047; a SCRAM
/// verifier within `scram_server`'s caps is under 512.
pub const MAX_SECRET_LEN: usize = 1024;

const MD5_PREFIX: &str = "md5";
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";
/// `md5` + 32 hex digits.
const MD5_TEXT_LEN: usize = 35;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// A user's secret, as the second field of an entry holds it.
#[derive(Clone)]
pub enum Secret {
    /// A plain-text password.
    Plain(String),
    /// PostgreSQL's MD5 hash: md5(password ++ user name), from
    /// `md5<32 lowercase hex digits>`.
    Md5([u8; 16]),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(..)"),
            Secret::Md5(_) => f.write_str("Md5(..)"),
            Secret::Scram(s) => f.debug_tuple("Scram").field(s).finish(),
        }
    }
}

impl Secret {
    /// Whether the cleartext `password` (from a PasswordMessage) matches
    /// this secret for `user`, in constant time for the secret:
    /// - `Plain`: SHA-256 of both compared with `ct_eq` (so the stored
    ///   password's length does not show either);
    /// - `Md5`: md5(`password` ++ `user`) compared with `ct_eq`; `user` is
    ///   the name the hash was made for (the login role, as PostgreSQL's
    ///   `rolpassword`);
    /// - `Scram`: PBKDF2 with the verifier's salt and iteration count, then
    ///   StoredKey compared with `ct_eq` (`ScramSecret::verify_password`).
    ///
    /// An empty password never matches (PostgreSQL refuses empty
    /// passwords), nor does one containing NUL: a PasswordMessage cannot
    /// carry it (C string), and HMAC pads its key with zeros, so PBKDF2
    /// would take `pencil\0` for `pencil`.
    pub fn verify_cleartext(&self, user: &str, password: &[u8]) -> bool {
        if password.is_empty() || password.contains(&0) {
            return false;
        }
        match self {
            Secret::Plain(stored) => {
                let a = Sha256::digest(stored.as_bytes());
                let b = Sha256::digest(password);
                ct_eq(&a, &b)
            }
            Secret::Md5(stored) => {
                let mut h = Md5::new();
                h.update(password);
                h.update(user.as_bytes());
                ct_eq(&h.finalize(), stored)
            }
            Secret::Scram(s) => s.verify_password(password),
        }
    }

    /// The text of the secret field (before quote doubling): the password,
    /// `md5<hex>`, or the SCRAM verifier. Sensitive.
    pub fn stored_form(&self) -> String {
        match self {
            Secret::Plain(p) => p.clone(),
            Secret::Md5(h) => {
                let mut out = String::with_capacity(MD5_TEXT_LEN);
                out.push_str(MD5_PREFIX);
                for b in h {
                    for nibble in [b >> 4, b & 0x0f] {
                        let c = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                        out.push(char::from(c));
                    }
                }
                out
            }
            Secret::Scram(s) => s.to_string(),
        }
    }

    /// Classifies an unescaped, non-empty secret field.
    fn from_field(field: &str) -> Result<Secret, UserListErrorKind> {
        if field.starts_with(SCRAM_PREFIX) {
            return ScramSecret::parse_static(field)
                .map(Secret::Scram)
                .map_err(UserListErrorKind::BadScram);
        }
        if field.len() == MD5_TEXT_LEN
            && let Some(hex) = field.strip_prefix(MD5_PREFIX)
        {
            return parse_md5_hex(hex.as_bytes())
                .map(Secret::Md5)
                .ok_or(UserListErrorKind::BadMd5);
        }
        Ok(Secret::Plain(field.to_string()))
    }
}

/// 32 lowercase hex digits → 16 bytes.
fn parse_md5_hex(hex: &[u8]) -> Option<[u8; 16]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
        _ => None,
    };
    let mut out = [0u8; 16];
    let mut pairs = hex.chunks_exact(2);
    for slot in out.iter_mut() {
        let &[hi, lo] = pairs.next()? else {
            return None;
        };
        *slot = (digit(hi)? << 4) | digit(lo)?;
    }
    pairs.next().is_none().then_some(out)
}

/// What is wrong with a line. Carries no secret text (a duplicate carries
/// the user name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserListErrorKind {
    /// The line is longer than `MAX_LINE_LEN` bytes.
    LineTooLong {
        len: usize,
        max: usize,
    },
    /// A `#` comment: PgBouncer's auth_file comments start with `;`.
    HashComment,
    /// The line does not start with `"` (nor is it blank or a `;` comment).
    NotQuoted,
    /// The name field has no closing quote on this line.
    UnterminatedName,
    /// `""` as the name.
    EmptyName,
    NameTooLong {
        len: usize,
        max: usize,
    },
    /// A control character (tab, CR, NUL...) inside the name.
    ControlInName,
    /// No quoted secret after the name (only spaces and tabs may separate
    /// them).
    MissingSecret,
    /// The secret field has no closing quote on this line.
    UnterminatedSecret,
    /// `""` as the secret.
    EmptySecret,
    SecretTooLong {
        len: usize,
        max: usize,
    },
    /// A control character inside the secret.
    ControlInSecret,
    /// `md5` plus 32 characters that are not 32 lowercase hex digits.
    BadMd5,
    /// A secret starting with `SCRAM-SHA-256$` that is not a valid verifier
    /// (the reason names the part, never its text).
    BadScram(&'static str),
    /// The name already appeared on `first_line`.
    Duplicate {
        name: String,
        first_line: usize,
    },
    /// More than `MAX_ENTRIES` entries.
    TooManyEntries {
        max: usize,
    },
}

impl fmt::Display for UserListErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use UserListErrorKind::*;
        match self {
            LineTooLong { len, max } => write!(f, "line of {len} bytes exceeds the cap of {max}"),
            HashComment => write!(f, "comments start with ';' in an auth_file, not '#'"),
            NotQuoted => write!(
                f,
                "expected a line \"name\" \"secret\", a blank line or a ';' comment"
            ),
            UnterminatedName => write!(f, "the user name has no closing '\"' on this line"),
            EmptyName => write!(f, "the user name is empty"),
            NameTooLong { len, max } => {
                write!(f, "the user name of {len} bytes exceeds the cap of {max}")
            }
            ControlInName => write!(f, "the user name contains a control character"),
            MissingSecret => write!(
                f,
                "expected the quoted secret after the user name (separated by spaces or tabs)"
            ),
            UnterminatedSecret => write!(f, "the secret has no closing '\"' on this line"),
            EmptySecret => write!(f, "the secret is empty"),
            SecretTooLong { len, max } => {
                write!(f, "the secret of {len} bytes exceeds the cap of {max}")
            }
            ControlInSecret => write!(f, "the secret contains a control character"),
            BadMd5 => write!(
                f,
                "the secret looks like an MD5 hash but is not \"md5\" + 32 lowercase hex digits"
            ),
            BadScram(reason) => write!(f, "bad SCRAM secret: {reason}"),
            Duplicate { name, first_line } => write!(
                f,
                "user {name:?} appears again (first on line {first_line})"
            ),
            TooManyEntries { max } => write!(f, "more than {max} entries"),
        }
    }
}

/// A bad auth_file: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserListError {
    pub line: usize,
    pub kind: UserListErrorKind,
}

impl fmt::Display for UserListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "auth_file line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for UserListError {}

struct Entry {
    name: String,
    secret: Secret,
}

/// The parsed auth_file: entries in file order plus an index by name.
pub struct UserList {
    entries: Vec<Entry>,
    /// name → (index in `entries`, 1-based line) for lookups and duplicates.
    index: HashMap<String, (usize, usize)>,
}

impl fmt::Debug for UserList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (&e.name, &e.secret)))
            .finish()
    }
}

impl UserList {
    /// Parses auth_file text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<UserList, UserListError> {
        let mut list = UserList {
            entries: Vec::new(),
            index: HashMap::new(),
        };
        for (i, raw) in text.split('\n').enumerate() {
            let line = i.saturating_add(1);
            let err = |kind| UserListError { line, kind };
            if raw.len() > MAX_LINE_LEN {
                return Err(err(UserListErrorKind::LineTooLong {
                    len: raw.len(),
                    max: MAX_LINE_LEN,
                }));
            }
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            let Some((name, secret)) = parse_line(content).map_err(err)? else {
                continue;
            };
            if let Some(&(_, first_line)) = list.index.get(&name) {
                return Err(err(UserListErrorKind::Duplicate { name, first_line }));
            }
            if list.entries.len() >= MAX_ENTRIES {
                return Err(err(UserListErrorKind::TooManyEntries { max: MAX_ENTRIES }));
            }
            list.index.insert(name.clone(), (list.entries.len(), line));
            list.entries.push(Entry { name, secret });
        }
        Ok(list)
    }

    /// The secret for exactly `name` (no case folding, no tenant stripping).
    pub fn get(&self, name: &str) -> Option<&Secret> {
        let &(i, _) = self.index.get(name)?;
        self.entries.get(i).map(|e| &e.secret)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.entries.iter().map(|e| (e.name.as_str(), &e.secret))
    }

    /// The canonical auth_file text: one `"name" "secret"` line per entry,
    /// in file order, quotes doubled. `parse` of it gives the same entries.
    /// Sensitive (it holds the secrets).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            push_quoted(&mut out, &e.name);
            out.push(' ');
            push_quoted(&mut out, &e.secret.stored_form());
            out.push('\n');
        }
        out
    }
}

fn push_quoted(out: &mut String, field: &str) {
    out.push('"');
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One line without its terminator: `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(String, Secret)>, UserListErrorKind> {
    let rest = line.trim_start_matches(is_blank);
    let rest = match rest.chars().next() {
        None | Some(';') => return Ok(None),
        Some('#') => return Err(UserListErrorKind::HashComment),
        Some('"') => rest.get(1..).unwrap_or_default(),
        Some(_) => return Err(UserListErrorKind::NotQuoted),
    };
    let (name, rest) = quoted_field(rest).ok_or(UserListErrorKind::UnterminatedName)?;
    if name.is_empty() {
        return Err(UserListErrorKind::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(UserListErrorKind::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(UserListErrorKind::ControlInName);
    }

    let rest = rest
        .trim_start_matches(is_blank)
        .strip_prefix('"')
        .ok_or(UserListErrorKind::MissingSecret)?;
    let (secret, _ignored) = quoted_field(rest).ok_or(UserListErrorKind::UnterminatedSecret)?;
    if secret.is_empty() {
        return Err(UserListErrorKind::EmptySecret);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(UserListErrorKind::SecretTooLong {
            len: secret.len(),
            max: MAX_SECRET_LEN,
        });
    }
    if secret.chars().any(char::is_control) {
        return Err(UserListErrorKind::ControlInSecret);
    }
    Ok(Some((name, Secret::from_field(&secret)?)))
}

/// The field that starts right after an opening quote: text up to the
/// closing quote, with `""` read as one `"`. Returns the unescaped value and
/// what follows the closing quote; `None` when the line ends first.
fn quoted_field(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = s;
    loop {
        let q = rest.find('"')?;
        value.push_str(rest.get(..q)?);
        let after = rest.get(q.saturating_add(1)..)?;
        match after.strip_prefix('"') {
            Some(more) => {
                value.push('"');
                rest = more;
            }
            None => return Some((value, after)),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    /// PostgreSQL 15: `CREATE ROLE alice PASSWORD 'pencil'` (SCRAM) and
    /// `CREATE ROLE carol PASSWORD 'md5pw'` with `password_encryption = md5`.
    const PG_ALICE: &str = "SCRAM-SHA-256$4096:x0ZvCJda/qaokXtEHkZreQ==$\
        NpJ141AYjZj25j+xSEbCRRL1xW6NsscWqrThMTi3IiI=:/Jqsh/+e2ugyxI/oq5ruHxnav8E8cQqLI5vrXubY6Yk=";
    const PG_CAROL: &str = "md55023e9acc51181cd119771ba1b567a10";

    fn sample() -> String {
        format!(
            "; pgvpd users\n\
             \n\
             \"alice\" \"{PG_ALICE}\"\n\
             \t \"carol\"\t\"{PG_CAROL}\" \"third column\" ignored\r\n\
             \"app_user.acme\" \"plain pass\"\n\
             \"app_user\" \"s\"\"q\"\"uote\"\n\
             \"we\"\"ird\" \"md5short\"\n\
             ;\"commented\" \"out\"\n\
             \x20\x20; indented comment\n"
        )
    }

    #[test]
    fn parses_pgbouncer_format() {
        let list = UserList::parse(&sample()).unwrap();
        assert_eq!(list.len(), 5);
        assert!(!list.is_empty());
        let names: Vec<&str> = list.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["alice", "carol", "app_user.acme", "app_user", "we\"ird"]
        );
        assert!(matches!(list.get("alice"), Some(Secret::Scram(s)) if s.to_string() == PG_ALICE));
        assert!(matches!(list.get("carol"), Some(Secret::Md5(_))));
        assert!(matches!(list.get("app_user.acme"), Some(Secret::Plain(p)) if p == "plain pass"));
        assert!(matches!(list.get("app_user"), Some(Secret::Plain(p)) if p == "s\"q\"uote"));
        // "md5" + fewer than 32 characters is a plain password
        assert!(matches!(list.get("we\"ird"), Some(Secret::Plain(p)) if p == "md5short"));
        assert!(list.get("commented").is_none());
        assert!(list.get("Alice").is_none());
        assert!(list.get("app_user.other").is_none());
        // Debug shows names and kinds, no secrets
        let dbg = format!("{list:?}");
        assert!(dbg.contains("\"carol\": Md5(..)"), "{dbg}");
        assert!(
            !dbg.contains("plain pass") && !dbg.contains("NpJ141"),
            "{dbg}"
        );

        let empty = UserList::parse("").unwrap();
        assert!(empty.is_empty());
        assert_eq!(UserList::parse("\n\n; x\n\r\n \t\n").unwrap().len(), 0);
    }

    #[test]
    fn verify_cleartext() {
        let list = UserList::parse(&sample()).unwrap();
        let alice = list.get("alice").unwrap();
        assert!(alice.verify_cleartext("alice", b"pencil"));
        assert!(
            alice.verify_cleartext("anyone", b"pencil"),
            "SCRAM ignores the user"
        );
        // HMAC would equate a trailing NUL; a NUL never matches
        assert!(!alice.verify_cleartext("alice", b"pencil\0"));
        assert!(!alice.verify_cleartext("alice", b"pen\0cil"));
        assert!(!alice.verify_cleartext("alice", b""));
        // md5(password ++ user): the user name is part of the hash
        let carol = list.get("carol").unwrap();
        assert!(carol.verify_cleartext("carol", b"md5pw"));
        assert!(!carol.verify_cleartext("carol.acme", b"md5pw"));
        assert!(!carol.verify_cleartext("carol", b"md5pw "));
        // PgBouncer's documented example: admin / 1234
        let admin = Secret::from_field("md545f2603610af569b6155c45067268c6b").unwrap();
        assert!(admin.verify_cleartext("admin", b"1234"));
        assert!(!admin.verify_cleartext("admin", b"12345"));
        let plain = list.get("app_user.acme").unwrap();
        assert!(plain.verify_cleartext("x", b"plain pass"));
        assert!(!plain.verify_cleartext("x", b"plain pas"));
        assert!(!plain.verify_cleartext("x", b"plain pass "));
        assert!(!Secret::Plain(String::new()).verify_cleartext("x", b""));
    }

    #[test]
    fn render_round_trips() {
        let list = UserList::parse(&sample()).unwrap();
        let text = list.render();
        assert_eq!(
            text,
            format!(
                "\"alice\" \"{PG_ALICE}\"\n\"carol\" \"{PG_CAROL}\"\n\
                 \"app_user.acme\" \"plain pass\"\n\"app_user\" \"s\"\"q\"\"uote\"\n\
                 \"we\"\"ird\" \"md5short\"\n"
            )
        );
        let again = UserList::parse(&text).unwrap();
        assert_eq!(again.render(), text);
        assert_eq!(
            Secret::Md5([0xab; 16]).stored_form(),
            format!("md5{}", "ab".repeat(16))
        );
    }

    #[test]
    fn errors_name_the_line() {
        use UserListErrorKind::*;
        let long_line = format!("\"a\" \"{}\"", "x".repeat(MAX_LINE_LEN));
        let long_name = format!("\"{}\" \"x\"", "n".repeat(MAX_NAME_LEN + 1));
        let long_secret = format!("\"a\" \"{}\"", "s".repeat(MAX_SECRET_LEN + 1));
        let cases: Vec<(String, usize, UserListErrorKind)> = vec![
            ("alice pencil".into(), 1, NotQuoted),
            ("\n\n'alice' 'pencil'".into(), 3, NotQuoted),
            ("# users\n\"a\" \"b\"".into(), 1, HashComment),
            ("\"a\" \"b\"\n  # x".into(), 2, HashComment),
            ("\"alice".into(), 1, UnterminatedName),
            ("\"alice\"\" pw".into(), 1, UnterminatedName),
            // `""` is a literal quote: the name is `alice" `, then no secret
            ("\"alice\"\" \"pw\"".into(), 1, MissingSecret),
            ("\"alice\"".into(), 1, MissingSecret),
            ("\"alice\"   ".into(), 1, MissingSecret),
            ("\"alice\" pencil".into(), 1, MissingSecret),
            ("\"alice\"x\"pencil\"".into(), 1, MissingSecret),
            ("\"alice\"\n\"pencil\"".into(), 1, MissingSecret),
            ("\"alice\" \"pencil".into(), 1, UnterminatedSecret),
            ("\"alice\" \"pen\ncil\"".into(), 1, UnterminatedSecret),
            ("\"\" \"pencil\"".into(), 1, EmptyName),
            ("\"alice\" \"\"".into(), 1, EmptySecret),
            ("\"al\tice\" \"p\"".into(), 1, ControlInName),
            ("\"al\rice\" \"p\"".into(), 1, ControlInName),
            ("\"alice\" \"pen\0cil\"".into(), 1, ControlInSecret),
            ("\"alice\" \"pen\u{85}cil\"".into(), 1, ControlInSecret),
            ("\"alice\" \"pencil\r\"".into(), 1, ControlInSecret),
            (format!("\"a\" \"md5{}\"", "A".repeat(32)), 1, BadMd5),
            (format!("\"a\" \"md5{}\"", "g".repeat(32)), 1, BadMd5),
            (
                "\"a\" \"SCRAM-SHA-256$4096:c2FsdA==$x:y\"".into(),
                1,
                BadScram("SCRAM secret StoredKey is not canonical base64"),
            ),
            (
                "\"a\" \"SCRAM-SHA-256$\"".into(),
                1,
                BadScram("SCRAM secret has no '$' between <iterations>:<salt> and the keys"),
            ),
            (
                "\"a\" \"1\"\n\"b\" \"2\"\n; c\n\"a\" \"3\"".into(),
                4,
                Duplicate {
                    name: "a".into(),
                    first_line: 1,
                },
            ),
            (
                long_line.clone(),
                1,
                LineTooLong {
                    len: long_line.len(),
                    max: MAX_LINE_LEN,
                },
            ),
            (
                long_name,
                1,
                NameTooLong {
                    len: MAX_NAME_LEN + 1,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                long_secret,
                1,
                SecretTooLong {
                    len: MAX_SECRET_LEN + 1,
                    max: MAX_SECRET_LEN,
                },
            ),
        ];
        for (text, line, kind) in &cases {
            let err = UserList::parse(text).err();
            assert_eq!(
                err.as_ref(),
                Some(&UserListError {
                    line: *line,
                    kind: kind.clone()
                }),
                "{text:?}"
            );
            let msg = err.unwrap().to_string();
            assert!(
                msg.starts_with(&format!("auth_file line {line}: ")),
                "{msg}"
            );
            // never the secret
            for secret in ["pencil", "pen", "SCRAM-SHA-256$4096", "AAAA", "gggg", "sss"] {
                assert!(!msg.contains(secret), "{msg}");
            }
        }
        // the caps themselves are accepted; ""-escapes count once
        let name = "n".repeat(MAX_NAME_LEN - 1) + "\"\"";
        let secret = "s".repeat(MAX_SECRET_LEN);
        let text = format!("\"{name}\" \"{secret}\"\n");
        let list = UserList::parse(&text).unwrap();
        assert_eq!(list.iter().next().unwrap().0.len(), MAX_NAME_LEN);
        let line = format!("\"a\" \"b\"{}", " ".repeat(MAX_LINE_LEN - 7));
        assert_eq!(line.len(), MAX_LINE_LEN);
        assert_eq!(UserList::parse(&line).unwrap().len(), 1);
    }

    #[test]
    fn entry_cap() {
        let mut text = String::new();
        for i in 0..MAX_ENTRIES {
            text.push_str(&format!("\"u{i}\" \"p\"\n"));
        }
        assert_eq!(UserList::parse(&text).unwrap().len(), MAX_ENTRIES);
        text.push_str("; still fine\n\"last\" \"p\"\n");
        assert_eq!(
            UserList::parse(&text).err(),
            Some(UserListError {
                line: MAX_ENTRIES + 2,
                kind: UserListErrorKind::TooManyEntries { max: MAX_ENTRIES }
            })
        );
    }
}
