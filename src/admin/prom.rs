//! Prometheus text exposition format 0.0.4, hand-written (no I/O).
//!
//! The writer makes the format's rules structural rather than a matter of care: a family is
//! written in one call ([`Exposition::family`]) that prints `# HELP`, `# TYPE` and then every
//! sample of that family, so samples of one family are always contiguous and preceded by
//! exactly one HELP and one TYPE line; a family name given twice is refused (the second call
//! writes nothing and returns `false`). Label values are escaped (`\\`, `\"`, `\n`), HELP
//! texts too (`\\`, `\n`), so a client-chosen database name cannot add a line or a label.
//! pgvpd 1.0 interleaved the samples of its two pool gauges and escaped nothing (behaviour
//! §7.2, §11 S11).

use std::fmt::Write as _;

/// Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric names; label names use the same set without `:`).
fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (colon && b == b':');
    let mut bytes = name.bytes();
    bytes.next().is_some_and(ok) && bytes.all(|b| ok(b) || b.is_ascii_digit())
}

/// Appends `v` escaped for the text format: `\` → `\\`, newline → `\n`, and
/// with `quote` (a label value; not a HELP text) `"` → `\"`.
fn escape(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if quote => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    names: Vec<String>,
    /// Families refused (a bad or repeated name: a bug of the caller's constants).
    refused: usize,
}

/// The samples of one family (the name is the family's, so no sample can stray into another).
pub struct Family<'a> {
    name: &'a str,
    out: &'a mut String,
}

impl Family<'_> {
    /// One sample: `name{l1="v1",l2="v2"} value`. Label names that are not valid are skipped
    /// (they are constants of this crate; a unit test checks them).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.sample_as("", labels, &value.to_string());
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram series.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &crate::stats::HistogramSnapshot) {
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", ""));
        for (le, count) in crate::stats::LATENCY_LE.iter().zip(h.cumulative.iter()) {
            if let Some(last) = with_le.last_mut() {
                last.1 = le;
            }
            self.sample_as("_bucket", &with_le, &count.to_string());
        }
        let sum = format!("{}.{:06}", h.sum_us / 1_000_000, h.sum_us % 1_000_000);
        self.sample_as("_sum", labels, &sum);
        self.sample_as("_count", labels, &h.count().to_string());
    }

    fn sample_as(&mut self, suffix: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        let mut first = true;
        for (k, v) in labels.iter().filter(|(k, _)| valid_name(k, false)) {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape(self.out, v, true);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Writes the family `name`: HELP, TYPE, then the samples `f` adds. Returns `false` (and
    /// writes nothing) when `name` is not a valid metric name or was written before.
    pub fn family(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        f: impl FnOnce(&mut Family<'_>),
    ) -> bool {
        if !valid_name(name, true) || self.names.iter().any(|n| n == name) {
            self.refused = self.refused.saturating_add(1);
            return false;
        }
        self.names.push(name.to_owned());
        let _ = write!(self.out, "# HELP {name} ");
        escape(&mut self.out, help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        f(&mut Family {
            name,
            out: &mut self.out,
        });
        true
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) -> bool {
        self.family(name, kind, help, |f| f.sample(&[], value))
    }

    /// How many `family` calls were refused.
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// The text, ending with a newline (empty when nothing was written).
    pub fn finish(self) -> String {
        self.out
    }
}

/// A strict reader of the text format, used by the tests of this crate to check what the
/// writer produces (the integration suite also uses Python's `prometheus_client`): every
/// family has exactly one HELP and one TYPE line before its samples, its samples are
/// contiguous and carry its name, label values use only the three escapes. Returns the
/// families in order: (name, type, help, samples (labels, value)).
#[cfg(test)]
#[allow(clippy::type_complexity, reason = "test helper")]
pub(crate) fn parse_strict(
    text: &str,
) -> Result<Vec<(String, String, String, Vec<(Vec<(String, String)>, u64)>)>, String> {
    type Fam = (String, String, String, Vec<(Vec<(String, String)>, u64)>);
    fn unescape(s: &str, allow_quote: bool) -> Result<String, String> {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if allow_quote => out.push('"'),
                other => return Err(format!("bad escape \\{other:?} in {s:?}")),
            }
        }
        Ok(out)
    }
    let mut fams: Vec<Fam> = Vec::new();
    let mut help: Option<(String, String)> = None;
    let mut seen: Vec<String> = Vec::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').ok_or("HELP without text")?;
            if seen.iter().any(|n| n == name) || help.is_some() {
                return Err(format!("second HELP for {name} or HELP without TYPE"));
            }
            help = Some((name.to_owned(), unescape(h, false)?));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without type")?;
            let (hname, h) = help.take().ok_or(format!("TYPE {name} without HELP"))?;
            if hname != name || !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("TYPE {name} {kind} after HELP {hname}"));
            }
            seen.push(name.to_owned());
            fams.push((name.to_owned(), kind.to_owned(), h, Vec::new()));
        } else if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        } else {
            let fam = fams.last_mut().ok_or("sample before any family")?;
            if help.is_some() {
                return Err("sample between HELP and TYPE".into());
            }
            let (series, value) = line.rsplit_once(' ').ok_or("sample without value")?;
            // Histogram sums are fractional seconds: kept as whole microseconds.
            let value: u64 = match value.parse::<u64>() {
                Ok(v) => v,
                Err(_) if fam.1 == "histogram" => value
                    .parse::<f64>()
                    .map(|f| (f * 1e6).round() as u64)
                    .map_err(|_| format!("bad value in {line:?}"))?,
                Err(_) => return Err(format!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => {
                    let mut body = rest.strip_suffix('}').ok_or("unclosed labels")?;
                    let mut labels = Vec::new();
                    while !body.is_empty() {
                        let (k, rest) = body.split_once("=\"").ok_or("label without =\"")?;
                        if !valid_name(k, false) {
                            return Err(format!("bad label name {k:?}"));
                        }
                        // The value ends at the first '"' that is not escaped.
                        let mut end = None;
                        let mut escaped = false;
                        for (i, c) in rest.char_indices() {
                            match c {
                                _ if escaped => escaped = false,
                                '\\' => escaped = true,
                                '"' => {
                                    end = Some(i);
                                    break;
                                }
                                _ => {}
                            }
                        }
                        let end = end.ok_or("unterminated label value")?;
                        let (raw, rest) = rest.split_at(end);
                        labels.push((k.to_owned(), unescape(raw, true)?));
                        let rest = rest.strip_prefix('"').unwrap_or(rest);
                        body = match rest.strip_prefix(',') {
                            Some(b) => b,
                            None if rest.is_empty() => rest,
                            None => return Err(format!("junk after label value: {rest:?}")),
                        };
                    }
                    (name, labels)
                }
            };
            let mut labels = labels;
            if fam.1 == "histogram" {
                // Which of the three series: kept as a `__suffix` pseudo-label.
                let suffix = name
                    .strip_prefix(fam.0.as_str())
                    .filter(|s| ["_bucket", "_sum", "_count"].contains(s))
                    .ok_or(format!("sample {name} inside histogram {}", fam.0))?;
                if (suffix == "_bucket") != labels.iter().any(|(k, _)| k == "le") {
                    return Err(format!("le label on {name}: only buckets have one"));
                }
                labels.push(("__suffix".to_owned(), suffix.to_owned()));
            } else if name != fam.0 {
                return Err(format!("sample {name} inside family {}", fam.0));
            }
            fam.3.push((labels, value));
        }
    }
    if help.is_some() {
        return Err("HELP without TYPE at the end".into());
    }
    Ok(fams)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn label_and_help_escaping() {
        let cases: &[(&str, &str, &str)] = &[
            // (input, label value, help)
            ("plain", "plain", "plain"),
            ("a\"b", "a\\\"b", "a\"b"),
            ("a\\b", "a\\\\b", "a\\\\b"),
            ("a\nb", "a\\nb", "a\\nb"),
            ("\\n", "\\\\n", "\\\\n"),
            ("é ü 東京", "é ü 東京", "é ü 東京"),
            ("tab\there", "tab\there", "tab\there"),
            ("", "", ""),
        ];
        for (input, label, help) in cases {
            let mut l = String::new();
            escape(&mut l, input, true);
            assert_eq!(&l, label, "{input:?}");
            let mut h = String::new();
            escape(&mut h, input, false);
            assert_eq!(&h, help, "{input:?}");
        }
    }

    #[test]
    fn names() {
        for (n, ok) in [
            ("pgvpd_connections_total", true),
            ("a:b", true),
            ("_x9", true),
            ("9x", false),
            ("", false),
            ("a-b", false),
            ("a b", false),
        ] {
            assert_eq!(valid_name(n, true), ok, "{n}");
        }
        assert!(!valid_name("a:b", false));
    }

    #[test]
    fn families_are_contiguous_and_declared_once() {
        let mut e = Exposition::new();
        assert!(e.single("x_total", Kind::Counter, "Help with \\ and\nnewline.", 3));
        assert!(e.family("pool_total", Kind::Gauge, "Total.", |f| {
            f.sample(&[("database", "db\"x"), ("role", "r\\\n")], 2);
            f.sample(&[("database", "d2"), ("role", "r")], 0);
        }));
        assert!(e.family("pool_idle", Kind::Gauge, "Idle.", |f| {
            f.sample(&[("database", "db\"x"), ("role", "r\\\n")], 1);
        }));
        assert!(e.family("empty", Kind::Gauge, "No samples.", |_| {}));
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP x_total Help with \\\\ and\\nnewline.\n# TYPE x_total counter\nx_total 3\n\
             # HELP pool_total Total.\n# TYPE pool_total gauge\n\
             pool_total{database=\"db\\\"x\",role=\"r\\\\\\n\"} 2\n\
             pool_total{database=\"d2\",role=\"r\"} 0\n\
             # HELP pool_idle Idle.\n# TYPE pool_idle gauge\n\
             pool_idle{database=\"db\\\"x\",role=\"r\\\\\\n\"} 1\n\
             # HELP empty No samples.\n# TYPE empty gauge\n"
        );
        let fams = parse_strict(&text).unwrap();
        assert_eq!(fams.len(), 4);
        assert_eq!(fams[0].2, "Help with \\ and\nnewline.");
        // Label values round-trip exactly.
        assert_eq!(
            fams[1].3[0].0,
            vec![
                ("database".to_string(), "db\"x".to_string()),
                ("role".to_string(), "r\\\n".to_string())
            ]
        );
        assert_eq!(fams[2].3, vec![(fams[1].3[0].0.clone(), 1)]);
    }

    #[test]
    fn duplicate_or_invalid_family_is_refused() {
        let mut e = Exposition::new();
        assert!(e.single("a", Kind::Gauge, "A.", 1));
        assert!(!e.single("a", Kind::Gauge, "A again.", 2));
        assert!(!e.single("bad-name", Kind::Gauge, "B.", 2));
        assert_eq!(e.refused(), 2);
        assert_eq!(e.finish(), "# HELP a A.\n# TYPE a gauge\na 1\n");
    }

    #[test]
    fn strict_reader_rejects_what_v1_wrote() {
        // pgvpd 1.0's pool gauges: two HELP/TYPE pairs, then interleaved samples.
        let v1 = "# HELP t Total.\n# TYPE t gauge\n# HELP i Idle.\n# TYPE i gauge\n\
                  t{database=\"a\",role=\"r\"} 1\ni{database=\"a\",role=\"r\"} 0\n";
        assert!(parse_strict(v1).is_err());
        // An unescaped quote in a label value (a database named db"x).
        assert!(parse_strict("# HELP t T.\n# TYPE t gauge\nt{database=\"db\"x\"} 1\n").is_err());
        // An injected line (a database name with a newline).
        assert!(
            parse_strict("# HELP t T.\n# TYPE t gauge\nt{database=\"a\nevil 1\"} 1\n").is_err()
        );
        assert!(
            parse_strict("# HELP t T.\n# TYPE t gauge\nt 1\n# HELP t T.\n# TYPE t gauge\n")
                .is_err()
        );
    }
}
