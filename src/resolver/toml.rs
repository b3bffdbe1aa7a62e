//! A strict subset of TOML 1.0: exactly what resolver files need ([`super::spec`]).
//!
//! Owns: [`parse`] (text in, [`Document`] out) and [`TomlError`]. Pure: no I/O; never panics
//! (fuzz target `resolvers`); work is linear in the input; recursion is bounded by
//! [`MAX_DEPTH`]. Every key, value and table carries the 1-based line it starts on, so the
//! layer above can name lines in its own errors.
//!
//! Accepted:
//! - comments (`#` to the end of the line, also after values), blank lines, LF or CRLF line
//!   ends, an optional UTF-8 byte order mark;
//! - `[name]` and `[[name]]` headers with one bare or quoted key (the layer above decides which
//!   names are allowed); `[name]` once, `[[name]]` any number of times, never both;
//! - `key = value`, keys bare (`[A-Za-z0-9_-]+`) or quoted (`"..."`, `'...'`);
//! - values: basic strings `"..."` (escapes `\" \\ \b \t \n \f \r \uXXXX \UXXXXXXXX`),
//!   literal strings `'...'`, multi-line basic `"""..."""` (a newline right after the opening
//!   delimiter is dropped, a line-ending backslash trims the whitespace and newlines after it,
//!   CRLF is read as LF) and multi-line literal `'''...'''`; decimal integers (`i64`, optional
//!   sign, `_` between digits, no leading zeros); `true`/`false`; arrays (may span lines, may end
//!   with a comma, may hold comments); inline tables `{ k = v, ... }` (one line, no trailing
//!   comma).
//!
//! Rejected with an error naming the line: dotted keys (`a.b = 1`, `[a.b]`: quote keys that
//! contain a dot, `"app.org_id" = ...`), floats, dates, non-decimal integers, duplicate keys in
//! one table (also in an inline table), invalid escapes, control characters (other than tab) in
//! strings and comments, a lone CR, input larger than [`MAX_INPUT`] and arrays or inline tables
//! nested deeper than [`MAX_DEPTH`].

use std::collections::{HashMap, HashSet};

/// Largest accepted input, in bytes.
pub const MAX_INPUT: usize = 1 << 20;
/// Deepest nesting of arrays and inline tables (`[[[1]]]` is 3).
pub const MAX_DEPTH: usize = 16;
/// Longest excerpt of the input quoted in an error message, in characters.
const MAX_SHOWN: usize = 40;

/// A syntax error (the resolver file's [`LineError`](super::LineError)).
pub use super::LineError as TomlError;

/// A parsed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    String(String),
    Integer(i64),
    Boolean(bool),
    Array(Vec<Item>),
    /// An inline table, entries in file order.
    Table(Vec<Entry>),
}

impl Value {
    /// The type as named in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "an inline table",
        }
    }
}

/// A value and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Value,
    pub line: usize,
}

/// `key = value`; `line` is the key's line (the value starts on the same line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Item,
}

/// How a table was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// `[name]`
    Table,
    /// `[[name]]`: one element of an array of tables.
    ArrayItem,
}

/// The entries under one header, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub kind: TableKind,
    pub name: String,
    /// Line of the header.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// A whole file: the entries before the first header, then every table in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    pub root: Vec<Entry>,
    pub tables: Vec<Table>,
}

/// Parse `text` (see the module doc for the accepted subset).
pub fn parse(text: &str) -> Result<Document, TomlError> {
    if text.len() > MAX_INPUT {
        return Err(TomlError {
            line: 1,
            msg: format!(
                "file is too large ({} bytes, at most {MAX_INPUT})",
                text.len()
            ),
        });
    }
    let mut p = Parser {
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        pos: 0,
        line: 1,
    };
    p.document()
}

/// Shows a piece of the input in an error message: escaped, at most `MAX_SHOWN` characters.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(MAX_SHOWN).is_some() {
        out.push_str("...");
    }
    out
}

/// Control characters TOML does not allow unescaped: all of C0 but tab, and DEL.
fn is_forbidden_control(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || c == '\u{7f}'
}

fn is_bare_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Bytes that may form an unquoted scalar (integers, booleans, and the floats, dates and
/// words that are rejected with a specific message).
fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.' | b':')
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset; always on a char boundary.
    pos: usize,
    /// 1-based line of `pos`.
    line: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Moves over `n` bytes that contain no `\n` and end on a char boundary.
    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, TomlError> {
        Err(TomlError {
            line: self.line,
            msg: msg.into(),
        })
    }

    /// What is at `pos`, for "expected X, found Y" messages.
    fn found(&self) -> String {
        match self.peek_char() {
            None => "end of file".to_owned(),
            Some('\n') => "end of line".to_owned(),
            Some('\r') if self.rest().starts_with("\r\n") => "end of line".to_owned(),
            Some(c) => format!("'{}'", c.escape_debug()),
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.advance(1);
        }
    }

    /// Consumes one line end (LF or CRLF) if there is one.
    fn eat_newline(&mut self) -> bool {
        let n = if self.rest().starts_with('\n') {
            1
        } else if self.rest().starts_with("\r\n") {
            2
        } else {
            return false;
        };
        self.advance(n);
        self.line = self.line.saturating_add(1);
        true
    }

    /// Consumes a `#` comment up to (not including) the line end.
    fn skip_comment(&mut self) -> Result<(), TomlError> {
        if self.peek() != Some(b'#') {
            return Ok(());
        }
        while let Some(c) = self.peek_char() {
            if c == '\n' || self.rest().starts_with("\r\n") {
                break;
            }
            if is_forbidden_control(c) {
                return self.err(format!(
                    "control character U+{:04X} in a comment",
                    u32::from(c)
                ));
            }
            self.advance(c.len_utf8());
        }
        Ok(())
    }

    /// Whitespace, a comment, then a line end or the end of the input.
    fn expect_eol(&mut self, after: &str) -> Result<(), TomlError> {
        self.skip_ws();
        self.skip_comment()?;
        if self.peek().is_none() || self.eat_newline() {
            return Ok(());
        }
        if self.peek() == Some(b'\r') {
            return self.err("carriage return not followed by a line feed");
        }
        self.err(format!(
            "expected end of line after {after}, found {}",
            self.found()
        ))
    }

    /// Whitespace, comments and line ends (inside arrays).
    fn skip_ws_comments_newlines(&mut self) -> Result<(), TomlError> {
        loop {
            self.skip_ws();
            self.skip_comment()?;
            if !self.eat_newline() {
                return Ok(());
            }
        }
    }

    fn document(&mut self) -> Result<Document, TomlError> {
        let mut doc = Document::default();
        // Keys of the table being filled (the root until the first header).
        let mut keys: HashSet<String> = HashSet::new();
        let mut root_keys: Option<HashSet<String>> = None;
        let mut headers: HashMap<String, TableKind> = HashMap::new();
        loop {
            self.skip_ws();
            let what = match self.peek() {
                None => return Ok(doc),
                Some(b'#' | b'\n' | b'\r') => "a comment",
                Some(b'[') => {
                    let table = self.header()?;
                    let root = root_keys.get_or_insert_with(|| std::mem::take(&mut keys));
                    if root.contains(&table.name) {
                        return self.err(format!(
                            "table '{}' conflicts with the top-level key of the same name",
                            shown(&table.name)
                        ));
                    }
                    match (headers.get(&table.name), table.kind) {
                        (None, kind) => {
                            headers.insert(table.name.clone(), kind);
                        }
                        (Some(TableKind::ArrayItem), TableKind::ArrayItem) => {}
                        (Some(_), TableKind::Table) => {
                            return self
                                .err(format!("table [{}] is defined twice", shown(&table.name)));
                        }
                        (Some(TableKind::Table), TableKind::ArrayItem) => {
                            return self.err(format!(
                                "[[{0}]] conflicts with the table [{0}]",
                                shown(&table.name)
                            ));
                        }
                    }
                    keys.clear();
                    doc.tables.push(table);
                    "a table header"
                }
                Some(_) => {
                    let entry = self.keyval(0)?;
                    if !keys.insert(entry.key.clone()) {
                        return Err(TomlError {
                            line: entry.line,
                            msg: format!("duplicate key '{}'", shown(&entry.key)),
                        });
                    }
                    match doc.tables.last_mut() {
                        Some(t) => t.entries.push(entry),
                        None => doc.root.push(entry),
                    }
                    "a value"
                }
            };
            self.expect_eol(what)?;
        }
    }

    /// `[name]` or `[[name]]`, at `[`.
    fn header(&mut self) -> Result<Table, TomlError> {
        let line = self.line;
        self.advance(1);
        let kind = if self.peek() == Some(b'[') {
            self.advance(1);
            TableKind::ArrayItem
        } else {
            TableKind::Table
        };
        self.skip_ws();
        let name = self.key()?;
        let close = match kind {
            TableKind::Table => "]",
            TableKind::ArrayItem => "]]",
        };
        if !self.rest().starts_with(close) {
            return self.err(format!(
                "expected '{close}' after the table name, found {}",
                self.found()
            ));
        }
        self.advance(close.len());
        Ok(Table {
            kind,
            name,
            line,
            entries: Vec::new(),
        })
    }

    /// A bare or quoted key and the whitespace after it; a following `.` is an error.
    fn key(&mut self) -> Result<String, TomlError> {
        let key = match self.peek() {
            Some(b'"') if self.rest().starts_with("\"\"\"") => {
                return self.err("a multi-line string cannot be a key");
            }
            Some(b'\'') if self.rest().starts_with("'''") => {
                return self.err("a multi-line string cannot be a key");
            }
            Some(b'"') => self.basic_string()?,
            Some(b'\'') => self.literal_string()?,
            Some(b) if is_bare_key_byte(b) => {
                let rest = self.rest();
                let len = rest.bytes().take_while(|&b| is_bare_key_byte(b)).count();
                let key = rest.get(..len).unwrap_or("").to_owned();
                self.advance(len);
                key
            }
            _ => return self.err(format!("expected a key, found {}", self.found())),
        };
        self.skip_ws();
        if self.peek() == Some(b'.') {
            return self.err(format!(
                "dotted keys are not supported (after '{}'): quote keys containing '.', \
                 as in \"app.org_id\" = ...",
                shown(&key)
            ));
        }
        Ok(key)
    }

    /// `key = value`; `depth` is the nesting depth of the value.
    fn keyval(&mut self, depth: usize) -> Result<Entry, TomlError> {
        let line = self.line;
        let key = self.key()?;
        if self.peek() != Some(b'=') {
            return self.err(format!(
                "expected '=' after the key '{}', found {}",
                shown(&key),
                self.found()
            ));
        }
        self.advance(1);
        self.skip_ws();
        let value = self.value(depth)?;
        Ok(Entry { key, line, value })
    }

    /// A value inside `depth` arrays or inline tables.
    fn value(&mut self, depth: usize) -> Result<Item, TomlError> {
        let line = self.line;
        let value = match self.peek() {
            Some(b'"') if self.rest().starts_with("\"\"\"") => {
                Value::String(self.multiline_string(b'"')?)
            }
            Some(b'\'') if self.rest().starts_with("'''") => {
                Value::String(self.multiline_string(b'\'')?)
            }
            Some(b'"') => Value::String(self.basic_string()?),
            Some(b'\'') => Value::String(self.literal_string()?),
            Some(b'[') => Value::Array(self.array(depth)?),
            Some(b'{') => Value::Table(self.inline_table(depth)?),
            Some(b) if is_scalar_byte(b) => self.scalar()?,
            _ => return self.err(format!("expected a value, found {}", self.found())),
        };
        Ok(Item { value, line })
    }

    fn enter(&self, depth: usize) -> Result<usize, TomlError> {
        match depth.checked_add(1) {
            Some(d) if d <= MAX_DEPTH => Ok(d),
            _ => self.err(format!(
                "arrays and inline tables nested more than {MAX_DEPTH} deep"
            )),
        }
    }

    /// `[ v, v, ]`, at `[`: may span lines and hold comments.
    fn array(&mut self, depth: usize) -> Result<Vec<Item>, TomlError> {
        let inner = self.enter(depth)?;
        self.advance(1);
        let mut items = Vec::new();
        loop {
            self.skip_ws_comments_newlines()?;
            if self.peek() == Some(b']') {
                self.advance(1);
                return Ok(items);
            }
            items.push(self.value(inner)?);
            self.skip_ws_comments_newlines()?;
            match self.peek() {
                Some(b',') => self.advance(1),
                Some(b']') => {
                    self.advance(1);
                    return Ok(items);
                }
                _ => {
                    return self.err(format!(
                        "expected ',' or ']' in an array, found {}",
                        self.found()
                    ));
                }
            }
        }
    }

    /// `{ k = v, ... }`, at `{`: one line, no trailing comma, no duplicate keys.
    fn inline_table(&mut self, depth: usize) -> Result<Vec<Entry>, TomlError> {
        let inner = self.enter(depth)?;
        self.advance(1);
        self.skip_ws();
        let mut entries: Vec<Entry> = Vec::new();
        let mut keys: HashSet<String> = HashSet::new();
        if self.peek() == Some(b'}') {
            self.advance(1);
            return Ok(entries);
        }
        loop {
            if matches!(self.peek(), None | Some(b'\n' | b'\r' | b'#')) {
                return self.err(format!(
                    "an inline table must be on one line: expected a key, found {}",
                    self.found()
                ));
            }
            let entry = self.keyval(inner)?;
            if !keys.insert(entry.key.clone()) {
                return self.err(format!(
                    "duplicate key '{}' in an inline table",
                    shown(&entry.key)
                ));
            }
            entries.push(entry);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.advance(1);
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        return self.err("trailing comma in an inline table");
                    }
                }
                Some(b'}') => {
                    self.advance(1);
                    return Ok(entries);
                }
                None | Some(b'\n' | b'\r' | b'#') => {
                    return self.err(format!(
                        "an inline table must be on one line: expected ',' or '}}', found {}",
                        self.found()
                    ));
                }
                _ => {
                    return self.err(format!(
                        "expected ',' or '}}' in an inline table, found {}",
                        self.found()
                    ));
                }
            }
        }
    }

    /// An unquoted value: an integer or a boolean (anything else is an error).
    fn scalar(&mut self) -> Result<Value, TomlError> {
        let rest = self.rest();
        let len = rest.bytes().take_while(|&b| is_scalar_byte(b)).count();
        let tok = rest.get(..len).unwrap_or("");
        let value = match tok {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => match parse_integer(tok) {
                Ok(n) => Value::Integer(n),
                Err(msg) => return self.err(msg),
            },
        };
        self.advance(len);
        Ok(value)
    }

    /// `"..."`, at the opening quote.
    fn basic_string(&mut self) -> Result<String, TomlError> {
        self.advance(1);
        let mut out = String::new();
        loop {
            match self.peek_char() {
                None => return self.err("unterminated string"),
                Some('"') => {
                    self.advance(1);
                    return Ok(out);
                }
                Some('\\') => self.escape(&mut out, false)?,
                Some('\n' | '\r') => {
                    return self.err(
                        "unterminated string (a \"...\" string ends on its line; use \"\"\" for \
                         several lines)",
                    );
                }
                Some(c) => self.string_char(&mut out, c)?,
            }
        }
    }

    /// `'...'`, at the opening quote: no escapes.
    fn literal_string(&mut self) -> Result<String, TomlError> {
        self.advance(1);
        let mut out = String::new();
        loop {
            match self.peek_char() {
                None => return self.err("unterminated string"),
                Some('\'') => {
                    self.advance(1);
                    return Ok(out);
                }
                Some('\n' | '\r') => {
                    return self.err(
                        "unterminated string (a '...' string ends on its line; use ''' for \
                         several lines)",
                    );
                }
                Some(c) => self.string_char(&mut out, c)?,
            }
        }
    }

    /// One plain character of a string body.
    fn string_char(&mut self, out: &mut String, c: char) -> Result<(), TomlError> {
        if is_forbidden_control(c) {
            return self.err(format!(
                "control character U+{:04X} in a string (write it as an escape, \\u{:04X})",
                u32::from(c),
                u32::from(c)
            ));
        }
        out.push(c);
        self.advance(c.len_utf8());
        Ok(())
    }

    /// `"""..."""` (escapes) or `'''...'''` (none), at the opening delimiter.
    fn multiline_string(&mut self, quote: u8) -> Result<String, TomlError> {
        let start = self.line;
        self.advance(3);
        self.eat_newline();
        let mut out = String::new();
        loop {
            match self.peek_char() {
                None => {
                    return self.err(format!(
                        "unterminated multi-line string (opened on line {start})"
                    ));
                }
                Some(c) if c.is_ascii() && c as u8 == quote => {
                    let run = self.rest().bytes().take_while(|&b| b == quote).count();
                    if run < 3 {
                        out.extend(std::iter::repeat_n(c, run));
                        self.advance(run);
                        continue;
                    }
                    if run > 5 {
                        return self.err(format!(
                            "{run} quotes in a row end a multi-line string (at most 5: two \
                             in the string, three to close it)"
                        ));
                    }
                    out.extend(std::iter::repeat_n(c, run.saturating_sub(3)));
                    self.advance(run);
                    return Ok(out);
                }
                Some('\\') if quote == b'"' => self.escape(&mut out, true)?,
                Some('\n' | '\r') => {
                    if !self.eat_newline() {
                        return self.err("carriage return not followed by a line feed");
                    }
                    out.push('\n');
                }
                Some(c) => self.string_char(&mut out, c)?,
            }
        }
    }

    /// A backslash escape, at the backslash.
    fn escape(&mut self, out: &mut String, multiline: bool) -> Result<(), TomlError> {
        self.advance(1);
        let Some(c) = self.peek_char() else {
            return self.err("unterminated string");
        };
        let simple = match c {
            'b' => Some('\u{8}'),
            't' => Some('\t'),
            'n' => Some('\n'),
            'f' => Some('\u{c}'),
            'r' => Some('\r'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            self.advance(1);
            return Ok(());
        }
        match c {
            'u' | 'U' => {
                let n = if c == 'u' { 4 } else { 8 };
                self.advance(1);
                let digits: String = self.rest().chars().take(n).collect();
                let code = if digits.len() == n && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u32::from_str_radix(&digits, 16).ok()
                } else {
                    None
                };
                let Some(ch) = code.and_then(char::from_u32) else {
                    return self.err(format!(
                        "invalid escape \\{c}{}: expected {n} hex digits of a Unicode scalar value",
                        shown(&digits)
                    ));
                };
                out.push(ch);
                self.advance(n);
                Ok(())
            }
            ' ' | '\t' | '\n' | '\r' if multiline => {
                // Line-ending backslash: only whitespace may follow it on its line; then all
                // whitespace and line ends up to the next other character are dropped.
                self.skip_ws();
                if !self.eat_newline() {
                    return self.err(format!(
                        "a backslash followed by whitespace must end the line, found {}",
                        self.found()
                    ));
                }
                loop {
                    self.skip_ws();
                    if !self.eat_newline() {
                        return Ok(());
                    }
                }
            }
            _ => self.err(format!(
                "invalid escape '\\{}' (valid: \\\" \\\\ \\b \\t \\n \\f \\r \\uXXXX \\UXXXXXXXX)",
                c.escape_debug()
            )),
        }
    }
}

/// A decimal TOML integer: optional sign, digits with single `_` between them, no leading
/// zero, within `i64`.
fn parse_integer(tok: &str) -> Result<i64, String> {
    let word = || format!("'{}'", shown(tok));
    let (negative, body) = match tok.as_bytes().first() {
        Some(b'-') => (true, tok.get(1..).unwrap_or("")),
        Some(b'+') => (false, tok.get(1..).unwrap_or("")),
        _ => (false, tok),
    };
    let bytes = body.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_digit) {
        return Err(match tok {
            "inf" | "+inf" | "-inf" | "nan" | "+nan" | "-nan" => {
                format!("floats are not supported ({}): use an integer", word())
            }
            _ => format!(
                "invalid value {}: strings must be quoted, booleans are true or false",
                word()
            ),
        });
    }
    if body.len() > 1 && body.starts_with('0') {
        return Err(match bytes.get(1) {
            Some(b'x' | b'o' | b'b') => format!("only decimal integers are supported ({})", word()),
            Some(b'0'..=b'9' | b'_') => format!("leading zeros are not allowed ({})", word()),
            _ => invalid_number(tok),
        });
    }
    let mut value: i64 = 0;
    let mut prev_digit = false;
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                let d = i64::from(b.wrapping_sub(b'0'));
                let next = value.checked_mul(10).and_then(|v| {
                    if negative {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                });
                let Some(next) = next else {
                    return Err(format!("integer {} is out of range (64-bit)", word()));
                };
                value = next;
                prev_digit = true;
            }
            b'_' if prev_digit => prev_digit = false,
            b'_' => return Err(format!("'_' must be between digits ({})", word())),
            _ => return Err(invalid_number(tok)),
        }
    }
    if !prev_digit {
        return Err(format!("'_' must be between digits ({})", word()));
    }
    Ok(value)
}

fn invalid_number(tok: &str) -> String {
    let what = if tok.contains(':') || tok.bytes().filter(|&b| b == b'-').count() >= 2 {
        "dates and times are not supported"
    } else if tok.contains(['.', 'e', 'E']) {
        "floats are not supported: use an integer"
    } else {
        "invalid number"
    };
    format!("{what} ('{}')", shown(tok))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Document {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    /// The single root value of `k = <v>`.
    fn val(v: &str) -> Value {
        let doc = ok(&format!("k = {v}\n"));
        assert_eq!(doc.root.len(), 1);
        doc.root[0].value.value.clone()
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn item(value: Value, line: usize) -> Item {
        Item { value, line }
    }

    #[test]
    fn scalars() {
        let cases: &[(&str, Value)] = &[
            ("0", Value::Integer(0)),
            ("+0", Value::Integer(0)),
            ("-0", Value::Integer(0)),
            ("42", Value::Integer(42)),
            ("+42", Value::Integer(42)),
            ("-17", Value::Integer(-17)),
            ("1_000", Value::Integer(1000)),
            ("5_349_221", Value::Integer(5_349_221)),
            ("9223372036854775807", Value::Integer(i64::MAX)),
            ("-9223372036854775808", Value::Integer(i64::MIN)),
            ("true", Value::Boolean(true)),
            ("false", Value::Boolean(false)),
            ("true # comment", Value::Boolean(true)),
            ("60# no space", Value::Integer(60)),
        ];
        for (text, want) in cases {
            assert_eq!(val(text), *want, "{text}");
        }
    }

    #[test]
    fn strings() {
        let cases: &[(&str, &str)] = &[
            (r#""""#, ""),
            (r#""abc""#, "abc"),
            (r#""a # not a comment""#, "a # not a comment"),
            (r#""q\"q""#, "q\"q"),
            (r#""\\ \n \t \r \b \f""#, "\\ \n \t \r \u{8} \u{c}"),
            (r#""\u00e9\U0001F600""#, "é😀"),
            (r#""\u0000""#, "\0"),
            ("\"tab\there\"", "tab\there"),
            ("\"é ü\"", "é ü"),
            ("'C:\\path\\x'", "C:\\path\\x"),
            ("'it \"quotes\"'", "it \"quotes\""),
            ("''", ""),
            ("\"\"\"\none\ntwo\"\"\"", "one\ntwo"),
            ("\"\"\"one\"\"\"", "one"),
            ("\"\"\"\r\nA\r\nB\"\"\"", "A\nB"),
            ("\"\"\"\n\n keep\"\"\"", "\n keep"),
            ("\"\"\"a \\\n    b \\  \n\n   c\"\"\"", "a b c"),
            ("\"\"\"\\u0041\\n\"\"\"", "A\n"),
            ("\"\"\"a\"b\"\"c\"\"\"", "a\"b\"\"c"),
            ("\"\"\"x\"\"\"\"\"", "x\"\""),
            ("'''\nraw \\n 'q' ''x'''", "raw \\n 'q' ''x"),
            ("'''a''''", "a'"),
            ("'''\n  SELECT $1\n'''", "  SELECT $1\n"),
        ];
        for (text, want) in cases {
            assert_eq!(val(text), s(want), "{text}");
        }
    }

    #[test]
    fn arrays_and_inline_tables() {
        assert_eq!(val("[]"), Value::Array(vec![]));
        assert_eq!(
            val("[1, 'a', true]"),
            Value::Array(vec![
                item(Value::Integer(1), 1),
                item(s("a"), 1),
                item(Value::Boolean(true), 1)
            ])
        );
        let doc = ok("k = [ # open\n  \"a\", # first\n\n  \"b\",\n  # done\n]\nz = 1\n");
        assert_eq!(
            doc.root[0].value.value,
            Value::Array(vec![item(s("a"), 2), item(s("b"), 4)])
        );
        assert_eq!(doc.root[1].line, 7);
        assert_eq!(
            val("[[1], []]"),
            Value::Array(vec![
                item(Value::Array(vec![item(Value::Integer(1), 1)]), 1),
                item(Value::Array(vec![]), 1)
            ])
        );
        assert_eq!(val("{}"), Value::Table(vec![]));
        let t = val(r#"{ "app.org_id" = "org_id", role = 'r', n = { x = [1,
 2] } }"#);
        let Value::Table(entries) = t else {
            panic!("{t:?}")
        };
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["app.org_id", "role", "n"]);
        assert_eq!(entries[0].value.value, s("org_id"));
    }

    #[test]
    fn tables_and_positions() {
        let doc = ok(
            "# c\ntop = 1\n\n[[resolver]]\nname = \"a\"\n[[ \"resolver\" ]] # again\n\
                      name = \"b\"\n[other]\n'quoted key' = 2\n",
        );
        assert_eq!(doc.root.len(), 1);
        assert_eq!((doc.root[0].key.as_str(), doc.root[0].line), ("top", 2));
        let heads: Vec<(TableKind, &str, usize, usize)> = doc
            .tables
            .iter()
            .map(|t| (t.kind, t.name.as_str(), t.line, t.entries.len()))
            .collect();
        assert_eq!(
            heads,
            [
                (TableKind::ArrayItem, "resolver", 4, 1),
                (TableKind::ArrayItem, "resolver", 6, 1),
                (TableKind::Table, "other", 8, 1)
            ]
        );
        assert_eq!(doc.tables[1].entries[0].line, 7);
        assert_eq!(doc.tables[2].entries[0].key, "quoted key");
        // a value's line is where it starts; the next key is counted after a multi-line string
        let doc = ok("a = \"\"\"\n1\n2\n\"\"\"\nb = '''x\ny'''\nc = 3");
        let lines: Vec<(usize, usize)> = doc.root.iter().map(|e| (e.line, e.value.line)).collect();
        assert_eq!(lines, [(1, 1), (5, 5), (7, 7)]);
        // BOM, CRLF, no final newline, empty input
        let doc = ok("\u{feff}a = 1\r\n\r\nb = 2");
        assert_eq!(doc.root[1].line, 3);
        assert_eq!(ok(""), Document::default());
        assert_eq!(ok("\n# only\n\n"), Document::default());
        // the same key in different tables is fine
        ok("[[r]]\nx = 1\n[[r]]\nx = 2\n");
    }

    #[test]
    fn errors_name_their_line() {
        let deep_ok = format!("k = {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        ok(&deep_ok);
        let deep = format!(
            "\nk = {}{}\n",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let deep_tables = format!("k = {}1{}\n", "{a = ".repeat(17), "}".repeat(17));
        let cases: &[(&str, usize, &str)] = &[
            ("a.b = 1\n", 1, "dotted keys are not supported"),
            ("\n[a.b]\n", 2, "quote keys containing '.'"),
            ("x = { app.org_id = \"c\" }", 1, "dotted keys"),
            ("a = 1\na = 2\n", 2, "duplicate key 'a'"),
            ("[t]\na = 1\n\n\"a\" = 2\n", 4, "duplicate key 'a'"),
            (
                "k = { a = 1, a = 2 }",
                1,
                "duplicate key 'a' in an inline table",
            ),
            ("k = { a = 1, }", 1, "trailing comma"),
            ("k = { a = 1\n}", 1, "must be on one line"),
            ("k = {\n a = 1 }", 1, "must be on one line"),
            ("k = { a = 1 b = 2 }", 1, "expected ',' or '}'"),
            ("k = [1 2]", 1, "expected ',' or ']'"),
            ("k = [1,\n2,\n", 3, "expected a value, found end of file"),
            ("k = [,]", 1, "expected a value, found ','"),
            ("k =\n1", 1, "expected a value, found end of line"),
            ("k", 1, "expected '=' after the key 'k'"),
            ("= 1", 1, "expected a key"),
            (
                "k = 1 2\n",
                1,
                "expected end of line after a value, found '2'",
            ),
            ("[t] x = 1", 1, "expected end of line after a table header"),
            ("[t\n", 1, "expected ']'"),
            ("[[t]\n", 1, "expected ']]'"),
            ("[[t] ]\n", 1, "expected ']]'"),
            ("[]\n", 1, "expected a key"),
            ("[t]\n[t]\n", 2, "defined twice"),
            ("[[t]]\n[t]\n", 2, "defined twice"),
            ("[t]\n[[t]]\n", 2, "conflicts with the table [t]"),
            ("t = 1\n[[t]]\n", 2, "conflicts with the top-level key"),
            ("k = \"abc\n", 1, "unterminated string"),
            ("k = 'abc", 1, "unterminated string"),
            ("\nk = \"\"\"abc\n\n", 4, "opened on line 2"),
            ("k = '''abc", 1, "unterminated multi-line string"),
            ("k = \"\"\"a\"\"\"\"\"\"\n", 1, "6 quotes in a row"),
            ("k = \"\\q\"", 1, "invalid escape '\\q'"),
            ("k = \"\\x41\"", 1, "invalid escape '\\x'"),
            ("k = \"\\u12\"", 1, "invalid escape \\u12"),
            ("k = \"\\uD800\"", 1, "Unicode scalar value"),
            ("k = \"\\U00110000\"", 1, "Unicode scalar value"),
            ("k = \"\\u+123\"", 1, "hex digits"),
            ("k = \"a\\ \nb\"", 1, "invalid escape"),
            ("k = \"\"\"a\\ b\"\"\"", 1, "must end the line"),
            ("k = \"a\u{1}b\"", 1, "control character U+0001"),
            ("k = 'a\u{7f}b'", 1, "control character U+007F"),
            ("k = '''a\u{0}'''", 1, "control character U+0000"),
            ("k = \"\"\"a\rb\"\"\"", 1, "carriage return not followed"),
            ("k = 1\r", 1, "carriage return not followed"),
            (
                "k = 1 # \u{1b}[31m\n",
                1,
                "control character U+001B in a comment",
            ),
            ("k = 01", 1, "leading zeros"),
            ("k = 0_1", 1, "leading zeros"),
            ("k = 0x1F", 1, "only decimal integers"),
            ("k = 1__0", 1, "'_' must be between digits"),
            ("k = _1", 1, "invalid value"),
            ("k = 1_", 1, "'_' must be between digits"),
            ("k = -", 1, "invalid value"),
            ("k = 9223372036854775808", 1, "out of range"),
            ("k = -9223372036854775809", 1, "out of range"),
            ("k = 1.5", 1, "floats are not supported"),
            ("k = 1e3", 1, "floats are not supported"),
            ("k = inf", 1, "floats are not supported"),
            ("k = 1979-05-27", 1, "dates and times"),
            ("k = 07:32:00", 1, "leading zeros"),
            ("k = 7:32:00", 1, "dates and times"),
            ("k = yes", 1, "strings must be quoted"),
            ("k = True", 1, "strings must be quoted"),
            ("k = \"\"\"", 1, "unterminated multi-line string"),
            ("\"\"\"k\"\"\" = 1", 1, "multi-line string cannot be a key"),
            ("k = @", 1, "expected a value, found '@'"),
            (&deep, 2, "nested more than 16 deep"),
            (&deep_tables, 1, "nested more than 16 deep"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e} (want {msg:?})");
            assert_eq!(e.to_string(), format!("line {line}: {}", e.msg));
        }
    }

    #[test]
    fn size_cap() {
        let big = format!("k = '{}'", "x".repeat(MAX_INPUT));
        let e = parse(&big).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.msg.contains("too large"), "{e}");
        let fits = format!("k = '{}'", "x".repeat(MAX_INPUT - 6));
        assert_eq!(fits.len(), MAX_INPUT);
        ok(&fits);
    }

    #[test]
    fn long_inputs_stay_linear() {
        // many keys (duplicate detection is hashed), a long array, a long run of quotes
        let mut keys = String::new();
        for i in 0..50_000 {
            keys.push_str(&format!("k{i} = {i}\n"));
        }
        assert_eq!(ok(&keys).root.len(), 50_000);
        let arr = format!("k = [{}]", "1,".repeat(200_000));
        ok(&arr);
        let quotes = format!("k = \"\"\"{}", "\"\" ".repeat(200_000));
        assert!(parse(&quotes).is_err());
    }

    #[test]
    fn error_excerpts_are_bounded() {
        let e = parse(&format!("k = {}", "y".repeat(10_000))).unwrap_err();
        assert!(e.msg.len() < 200, "{}", e.msg);
        let e = parse(&format!("{} = 1\n{0} = 2\n", "k".repeat(10_000))).unwrap_err();
        assert!(e.msg.len() < 200, "{}", e.msg);
        let e = parse("k = \"\\u\n\"\n\n").unwrap_err();
        assert!(e.msg.contains("\\n"), "{}", e.msg);
    }
}
