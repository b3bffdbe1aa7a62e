//! A small JSON value and its pretty printer (2-space indent), hand-written (no I/O).
//!
//! Every string, keys included, is escaped: `"` → `\"`, `\` → `\\`, and every control
//! character (U+0000..U+001F and U+007F) as `\u00XX`; everything else, non-ASCII included,
//! passes through as UTF-8. So a client-chosen database name cannot break `/status`
//! (pgvpd 1.0 escaped nothing, behaviour §11 S11). The depth is that of the values built in
//! this crate (a handful of levels), so the recursion is bounded by construction.

use std::fmt::Write as _;

/// A JSON value. Objects keep their key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    U64(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// Pretty-printed text ending with a newline.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self, 0);
        out.push('\n');
        out
    }
}

/// Appends `s` as a JSON string literal (with the quotes).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_value(out: &mut String, v: &Json, level: usize) {
    let inner = level.saturating_add(1);
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::U64(n) => {
            let _ = write!(out, "{n}");
        }
        Json::Str(s) => write_str(out, s),
        Json::Arr(items) if items.is_empty() => out.push_str("[]"),
        Json::Obj(pairs) if pairs.is_empty() => out.push_str("{}"),
        Json::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, inner);
                write_value(out, item, inner);
            }
            out.push('\n');
            indent(out, level);
            out.push(']');
        }
        Json::Obj(pairs) => {
            out.push_str("{\n");
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, inner);
                write_str(out, k);
                out.push_str(": ");
                write_value(out, item, inner);
            }
            out.push('\n');
            indent(out, level);
            out.push('}');
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn string_escaping() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("", r#""""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("back\\slash", r#""back\\slash""#),
            ("line\nbreak", r#""line\u000abreak""#),
            (
                "cr\r tab\t nul\0 esc\x1b del\x7f",
                r#""cr\u000d tab\u0009 nul\u0000 esc\u001b del\u007f""#,
            ),
            ("é ü 東京 🐘 \u{2028}", "\"é ü 東京 🐘 \u{2028}\""),
            ("db\"x\n\\", r#""db\"x\u000a\\""#),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            write_str(&mut out, input);
            assert_eq!(&out, want, "{input:?}");
        }
    }

    #[test]
    fn pretty_shape() {
        let v = Json::obj([
            ("n", Json::U64(7)),
            ("s", Json::str("a\"b")),
            ("t", Json::Bool(true)),
            ("z", Json::Null),
            ("empty", Json::Arr(vec![])),
            ("none", Json::Obj(vec![])),
            (
                "list",
                Json::Arr(vec![Json::obj([("k\n", Json::U64(1))]), Json::U64(2)]),
            ),
        ]);
        assert_eq!(
            v.to_pretty(),
            "{\n  \"n\": 7,\n  \"s\": \"a\\\"b\",\n  \"t\": true,\n  \"z\": null,\n  \
             \"empty\": [],\n  \"none\": {},\n  \"list\": [\n    {\n      \"k\\u000a\": 1\n    },\n    \
             2\n  ]\n}\n"
        );
        assert_eq!(Json::U64(u64::MAX).to_pretty(), "18446744073709551615\n");
    }
}
