//! Tiny `key=value` logger: one line per event on stderr.
//!
//! Line format: `ts=<unix secs>.<millis> level=<level> event=<event> k1=v1 k2=v2`.
//! Every value is sanitised ([`write`]): it is printed bare when it consists only of
//! `[A-Za-z0-9._:/@+-]`, otherwise double-quoted with `"` and `\` backslash-escaped and every
//! control or non-ASCII byte printed as `\xNN`. Values are capped at [`MAX_VALUE`] bytes
//! (then `...` is appended). So a peer-supplied string can never forge a line or a field.
//! Raw peer bytes (not necessarily UTF-8) are logged through [`Bytes`].
//!
//! The level is a process-wide atomic; the macros ([`crate::info!`] and friends) check
//! [`enabled`] before formatting anything. Never log passwords, SCRAM proofs, auth message
//! bodies or startup option values (style guide, "Errors, logging").

use std::cell::Cell;
use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log level; the order of the variants is the verbosity order (`Off` < `Error` < … < `Trace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// Lower-case name as accepted by `log_level` (`off`, `error`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    fn from_u8(n: u8) -> Level {
        match n {
            0 => Level::Off,
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of `Level::from_str`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLevelError;

impl Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected one of: off, error, warn, info, debug, trace")
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for Level {
    type Err = ParseLevelError;
    /// Case-insensitive `off|error|warn|warning|info|debug|trace`.
    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        const NAMES: &[(&str, Level)] = &[
            ("off", Level::Off),
            ("error", Level::Error),
            ("warn", Level::Warn),
            ("warning", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
            ("trace", Level::Trace),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, l)| l)
            .ok_or(ParseLevelError)
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Set the process-wide level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Current process-wide level.
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Whether events at `level` are printed.
#[inline]
pub fn enabled(level: Level) -> bool {
    level != Level::Off && (level as u8) <= LEVEL.load(Ordering::Relaxed)
}

/// Longest value (in bytes, before escaping) printed; longer ones are cut and get `...`.
pub const MAX_VALUE: usize = 256;

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'+' | b'-')
}

/// Append `raw` to `out` as one sanitised value token (see the module docs).
pub fn push_value(out: &mut String, raw: &[u8]) {
    let (body, cut) = match raw.get(..MAX_VALUE) {
        Some(head) if raw.len() > MAX_VALUE => (head, true),
        _ => (raw, false),
    };
    if !body.is_empty() && body.iter().all(|&b| is_bare(b)) {
        // Only ASCII, so the lossy conversion is exact.
        out.push_str(&String::from_utf8_lossy(body));
        if cut {
            out.push_str("...");
        }
        return;
    }
    out.push('"');
    for &b in body {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if cut {
        out.push_str("...");
    }
    out.push('"');
}

thread_local! {
    /// Length of the token the last [`Bytes`] wrote on this thread; lets [`write`] recognise
    /// a value that consists of exactly one already-sanitised `Bytes` token.
    static BYTES_TOKEN_LEN: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Raw (peer) bytes as a log value: `Display` prints the sanitised token (escaped per byte,
/// never lossily decoded). Passed alone as a field value it is printed unchanged; embedded in
/// other text it is escaped once more (still safe, just uglier).
pub struct Bytes<'a>(pub &'a [u8]);

impl Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tok = String::new();
        push_value(&mut tok, self.0);
        f.write_str(&tok)?;
        BYTES_TOKEN_LEN.with(|c| c.set(tok.len()));
        Ok(())
    }
}

/// Build one log line (without the trailing newline's I/O); used by [`write`] and tests.
pub fn format_line(
    ts: std::time::Duration,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> String {
    let mut line = String::with_capacity(96);
    let _ = write!(
        line,
        "ts={}.{:03} level={} event=",
        ts.as_secs(),
        ts.subsec_millis(),
        level.as_str()
    );
    push_value(&mut line, event.as_bytes());
    let mut tmp = String::new();
    for (k, v) in fields {
        line.push(' ');
        push_value(&mut line, k.as_bytes());
        line.push('=');
        tmp.clear();
        BYTES_TOKEN_LEN.with(|c| c.set(usize::MAX));
        let _ = write!(tmp, "{v}");
        if BYTES_TOKEN_LEN.with(|c| c.get()) == tmp.len() {
            line.push_str(&tmp); // exactly one `Bytes` token, already sanitised
        } else {
            push_value(&mut line, tmp.as_bytes());
        }
    }
    line.push('\n');
    line
}

/// Print one event line to stderr (one `write_all` under one stderr lock). Does not check
/// [`enabled`]; the macros do.
pub fn write(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format_line(ts, level, event, fields);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
}

#[doc(hidden)]
#[macro_export]
macro_rules! __pgvpd_log {
    ($level:expr, $event:expr $(, $k:ident = $v:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            $crate::log::write(
                $level,
                $event,
                &[$((stringify!($k), &$v as &dyn ::std::fmt::Display)),*],
            );
        }
    };
}

/// `crate::error!("event", key = value, ...)`
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::__pgvpd_log!($crate::log::Level::Error, $($t)*) };
}
/// `crate::warn!("event", key = value, ...)`
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::__pgvpd_log!($crate::log::Level::Warn, $($t)*) };
}
/// `crate::info!("event", key = value, ...)`
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::__pgvpd_log!($crate::log::Level::Info, $($t)*) };
}
/// `crate::debug!("event", key = value, ...)`
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::__pgvpd_log!($crate::log::Level::Debug, $($t)*) };
}
/// `crate::trace!("event", key = value, ...)`
#[macro_export]
macro_rules! trace {
    ($($t:tt)*) => { $crate::__pgvpd_log!($crate::log::Level::Trace, $($t)*) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn val(raw: &[u8]) -> String {
        let mut s = String::new();
        push_value(&mut s, raw);
        s
    }

    #[test]
    fn sanitiser_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"abc", "abc"),
            (b"127.0.0.1:5432", "127.0.0.1:5432"),
            (b"a/b@c+d-e_f", "a/b@c+d-e_f"),
            (b"", "\"\""),
            (b"a b", "\"a b\""),
            (b"x\nlevel=error", "\"x\\x0alevel=error\""),
            (b"say \"hi\"", "\"say \\\"hi\\\"\""),
            (b"back\\slash", "\"back\\\\slash\""),
            (b"k=v", "\"k=v\""),
            (b"\r\t\x00\x7f", "\"\\x0d\\x09\\x00\\x7f\""),
            ("é".as_bytes(), "\"\\xc3\\xa9\""),
            (b"\xff\xfe", "\"\\xff\\xfe\""),
        ];
        for (raw, want) in cases {
            assert_eq!(val(raw), *want, "input {raw:?}");
        }
    }

    #[test]
    fn sanitiser_caps_length() {
        let long = vec![b'a'; 300];
        let v = val(&long);
        assert_eq!(v.len(), 256 + 3);
        assert!(v.ends_with("a..."));
        let mut spaced = vec![b' '; 300];
        spaced[0] = b'x';
        let v = val(&spaced);
        assert!(v.starts_with("\"x "));
        assert!(v.ends_with(" ...\""));
        assert_eq!(v.len(), 256 + 5);
    }

    #[test]
    fn line_format_and_no_forgery() {
        let peer = "evil\nts=0 level=error event=forged";
        let line = format_line(
            Duration::from_millis(1_700_000_000_123),
            Level::Warn,
            "client_closed",
            &[("conn", &17), ("peer", &peer), ("user", &"app user")],
        );
        assert_eq!(
            line,
            "ts=1700000000.123 level=warn event=client_closed conn=17 \
             peer=\"evil\\x0ats=0 level=error event=forged\" user=\"app user\"\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn bytes_display_and_passthrough() {
        let raw: &[u8] = b"ab\n\xff\"";
        assert_eq!(Bytes(raw).to_string(), "\"ab\\x0a\\xff\\\"\"");
        assert_eq!(Bytes(b"plain").to_string(), "plain");
        let line = format_line(Duration::ZERO, Level::Info, "e", &[("b", &Bytes(raw))]);
        assert_eq!(line, "ts=0.000 level=info event=e b=\"ab\\x0a\\xff\\\"\"\n");
        // A string that merely looks like a token is still escaped.
        let fake = "\"ab\"";
        let line = format_line(Duration::ZERO, Level::Info, "e", &[("s", &fake)]);
        assert_eq!(line, "ts=0.000 level=info event=e s=\"\\\"ab\\\"\"\n");
        // Bytes embedded in other text: escaped again, still one token.
        let wrapped = format!("x{}", Bytes(b"a b"));
        let line = format_line(Duration::ZERO, Level::Info, "e", &[("w", &wrapped)]);
        assert_eq!(line, "ts=0.000 level=info event=e w=\"x\\\"a b\\\"\"\n");
    }

    #[test]
    fn level_parse_and_enabled() {
        for (s, l) in [
            ("off", Level::Off),
            ("ERROR", Level::Error),
            ("Warning", Level::Warn),
            ("warn", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
            ("TRACE", Level::Trace),
        ] {
            assert_eq!(s.parse::<Level>(), Ok(l));
        }
        assert!("verbose".parse::<Level>().is_err());
        assert!("".parse::<Level>().is_err());
        assert_eq!(Level::Warn.as_str(), "warn");
        for l in [Level::Off, Level::Error, Level::Info, Level::Trace] {
            assert_eq!(Level::from_u8(l as u8), l);
        }
    }

    #[test]
    fn macros_compile_and_respect_level() {
        // The global level is shared by tests in this process: only exercise Off here, which
        // formats nothing (the value below would panic if formatted).
        struct Boom;
        impl Display for Boom {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                panic!("formatted while disabled")
            }
        }
        let prev = level();
        set_level(Level::Off);
        assert!(!enabled(Level::Error));
        crate::error!("e", boom = Boom);
        crate::warn!("e", boom = Boom,);
        crate::info!("e");
        crate::debug!("e", a = 1, boom = Boom);
        crate::trace!("e", boom = Boom);
        set_level(prev);
        assert!(!enabled(Level::Off));
    }
}
