//! The resolver file: its model ([`Resolver`], [`ResolverSet`]), validation and execution
//! order (behaviour §5.1, §5.2).
//!
//! Owns: [`parse`] (file text and the username-derived context variable names in, a validated
//! [`ResolverSet`] in execution order out) and the `$n` scanner [`placeholders`]. Pure: the
//! caller reads the file; no I/O; never panics (fuzz target `resolvers`); work is linear in the
//! input (plus at most [`MAX_RESOLVERS`]² steps for ordering).
//!
//! Format: a TOML file ([`super::toml`]) made only of `[[resolver]]` blocks, each with
//!
//! | field        | type                       | default   |
//! |--------------|----------------------------|-----------|
//! | `name`       | string `[A-Za-z0-9_-]{1,63}` | required |
//! | `query`      | string, SQL with `$1..$n`  | required  |
//! | `params`     | array of strings           | `[]`      |
//! | `inject`     | inline table `{ "var" = "column", ... }`, not empty | required |
//! | `required`   | boolean                    | `false`   |
//! | `depends_on` | array of strings           | `[]`      |
//! | `cache_ttl`  | integer seconds, 0..=[`MAX_CACHE_TTL_SECS`] (0: no caching) | `0` |
//! | `timeout`    | integer seconds, 1..=[`MAX_TIMEOUT_SECS`] | `5` |
//! | `rows`       | `"one"`, `"first"` or `"array"` ([`Rows`]) | `"first"` |
//!
//! Every error names a line and, where there is one, the resolver. Checked, in this order:
//! 1. TOML syntax; only `[[resolver]]` blocks (no top-level keys, no other tables), at least
//!    one, at most [`MAX_RESOLVERS`];
//! 2. per block, in file order: no unknown field, each field of its type and range; `name`
//!    syntax; `query` not blank and without NUL; `inject` not empty, each variable a valid
//!    custom setting name ([`is_custom_guc_name`], at most 63 bytes, prefix not in
//!    [`RESERVED_PREFIXES`]) that is not a username-derived context variable and is listed once
//!    (setting names are case-insensitive), each column a non-empty name of at most 63 bytes
//!    without NUL; `depends_on` lists each name once; the `$n` placeholders of `query` are
//!    exactly `$1..$k` with `k == params.len()` ([`placeholders`]);
//! 3. resolver names are unique;
//! 4. no variable is injected by two resolvers;
//! 5. every `depends_on` name exists, and there is no dependency cycle (self-dependency
//!    included; the error names the resolvers in the cycle);
//! 6. every `params` entry is a username-derived context variable or is injected by a resolver
//!    in the (transitive) `depends_on` set, so it is known when the resolver runs.
//!
//! Execution order: Kahn's algorithm, always taking the first ready resolver in file order; a
//! file already listed in dependency order runs in file order.
//!
//! Differences from pgvpd 1.0 (§5.1): unknown fields (`cache-ttl`), `params` that cannot be
//! known, placeholder counts and variable names are load errors, not silent or per-connection
//! failures; `inject` keeps file order; `timeout` and `rows` are new; up to 64 resolvers instead
//! of 10; cycles name their members.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::toml::{self, Entry, Table, TableKind, Value, shown};
use crate::config::validate::{MAX_IDENT, RESERVED_PREFIXES, is_custom_guc_name};

/// Most `[[resolver]]` blocks in one file (each costs a query per new session).
pub const MAX_RESOLVERS: usize = 64;
/// Longest resolver name, in bytes (PostgreSQL's identifier limit, so it fits any label).
pub const MAX_NAME_LEN: usize = 63;
/// `timeout` when the block does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `timeout`, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Largest `cache_ttl`, in seconds (one day: a cached context outlives a revoked membership
/// by up to this long).
pub const MAX_CACHE_TTL_SECS: u64 = 86_400;
/// Highest placeholder: Bind carries the parameter count as an Int16 (PostgreSQL's own limit).
pub const MAX_PLACEHOLDER: u16 = u16::MAX;
/// The fields of a `[[resolver]]` block.
pub const FIELDS: [&str; 9] = [
    "name",
    "query",
    "params",
    "inject",
    "required",
    "depends_on",
    "cache_ttl",
    "timeout",
    "rows",
];

// The ordering works on `u64` bit sets of resolver indexes.
const _: () = assert!(MAX_RESOLVERS <= 64);

/// What to do with the rows a resolver's query returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rows {
    /// At most one row: a second row is an error.
    One,
    /// The first row; later rows are ignored (pgvpd 1.0's only behaviour).
    #[default]
    First,
    /// Every row: each variable receives the column's values from all rows, as an array.
    Array,
}

impl Rows {
    /// The file spelling: `one`, `first`, `array`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rows::One => "one",
            Rows::First => "first",
            Rows::Array => "array",
        }
    }
}

/// One `[[resolver]]` block, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolver {
    pub name: String,
    /// SQL with `$1..$n` placeholders (exactly `params.len()` of them, all used).
    pub query: String,
    /// Context-variable names; `$i` takes the value of `params[i-1]`.
    pub params: Vec<String>,
    /// (session variable, result column), in file order; never empty.
    pub inject: Vec<(String, String)>,
    pub required: bool,
    /// Names of resolvers that run earlier (each exists, no cycles).
    pub depends_on: Vec<String>,
    /// Zero: no caching.
    pub cache_ttl: Duration,
    /// Whole seconds, 1..=`MAX_TIMEOUT_SECS`.
    pub timeout: Duration,
    pub rows: Rows,
    /// Line of the `[[resolver]]` header.
    pub line: usize,
}

/// A whole resolver file, in execution order: every resolver comes after those it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSet {
    pub resolvers: Vec<Resolver>,
}

/// A load error (the resolver file's [`LineError`](super::LineError)).
pub use super::LineError as SpecError;

fn err(line: usize, msg: impl Into<String>) -> SpecError {
    SpecError {
        line,
        msg: msg.into(),
    }
}

/// Parse and validate a resolver file. `known_vars` are the context variables taken from the
/// user name (`context_variables`); resolvers may read them and may not inject them.
pub fn parse(text: &str, known_vars: &[String]) -> Result<ResolverSet, SpecError> {
    let doc = toml::parse(text)?;
    if let Some(e) = doc.root.first() {
        return Err(err(
            e.line,
            format!(
                "top-level key '{}' is not allowed: a resolver file holds only [[resolver]] \
                 blocks",
                shown(&e.key)
            ),
        ));
    }
    let mut blocks: Vec<&Table> = Vec::new();
    for t in &doc.tables {
        match (t.kind, t.name == "resolver") {
            (TableKind::ArrayItem, true) => {}
            (TableKind::Table, true) => {
                return Err(err(t.line, "write [[resolver]], not [resolver]"));
            }
            (TableKind::Table, false) => {
                return Err(err(
                    t.line,
                    format!(
                        "unknown table [{}]: a resolver file holds only [[resolver]] blocks",
                        shown(&t.name)
                    ),
                ));
            }
            (TableKind::ArrayItem, false) => {
                return Err(err(
                    t.line,
                    format!(
                        "unknown table [[{}]]: a resolver file holds only [[resolver]] blocks",
                        shown(&t.name)
                    ),
                ));
            }
        }
        if blocks.len() >= MAX_RESOLVERS {
            return Err(err(
                t.line,
                format!("too many resolvers (at most {MAX_RESOLVERS})"),
            ));
        }
        blocks.push(t);
    }
    if blocks.is_empty() {
        return Err(err(1, "the file contains no [[resolver]] blocks"));
    }
    let known: HashSet<String> = known_vars.iter().map(|v| v.to_ascii_lowercase()).collect();
    let parsed = blocks
        .iter()
        .map(|t| resolver(t, &known))
        .collect::<Result<Vec<_>, _>>()?;
    check_names(&parsed)?;
    let injectors = check_injections(&parsed)?;
    let deps = dependencies(&parsed)?;
    let order = execution_order(&parsed, &deps)?;
    check_params(&parsed, &deps, &order, known_vars, &injectors)?;
    let mut slots: Vec<Option<Resolver>> = parsed.into_iter().map(|p| Some(p.r)).collect();
    let resolvers = order
        .iter()
        .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
        .collect();
    Ok(ResolverSet { resolvers })
}

/// A resolver and the lines of its fields (the header line for absent ones).
struct Parsed {
    r: Resolver,
    name_line: usize,
    params_line: usize,
    inject_line: usize,
    depends_line: usize,
}

fn resolver(t: &Table, known: &HashSet<String>) -> Result<Parsed, SpecError> {
    let Some(name_entry) = t.entries.iter().find(|e| e.key == "name") else {
        return Err(err(
            t.line,
            "[[resolver]] block without a 'name' (a required field)",
        ));
    };
    let name = string("[[resolver]]", name_entry)?;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(err(
            name_entry.line,
            format!(
                "invalid resolver name '{}': use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ -",
                shown(name)
            ),
        ));
    }
    let ctx = format!("resolver '{name}'");
    let mut p = Parsed {
        r: Resolver {
            name: name.to_owned(),
            query: String::new(),
            params: Vec::new(),
            inject: Vec::new(),
            required: false,
            depends_on: Vec::new(),
            cache_ttl: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            rows: Rows::First,
            line: t.line,
        },
        name_line: name_entry.line,
        params_line: t.line,
        inject_line: t.line,
        depends_line: t.line,
    };
    let mut query_line = None;
    let mut has_inject = false;
    for e in &t.entries {
        match e.key.as_str() {
            "name" => {}
            "query" => {
                let q = string(&ctx, e)?;
                if q.trim().is_empty() {
                    return Err(err(e.line, format!("{ctx}: 'query' is empty")));
                }
                if q.contains('\0') {
                    return Err(err(
                        e.line,
                        format!("{ctx}: 'query' contains a NUL character"),
                    ));
                }
                p.r.query = q.to_owned();
                query_line = Some(e.line);
            }
            "params" => {
                p.r.params = strings(&ctx, e)?;
                p.params_line = e.line;
            }
            "inject" => {
                p.r.inject = inject(&ctx, e, known)?;
                p.inject_line = e.line;
                has_inject = true;
            }
            "required" => match e.value.value {
                Value::Boolean(b) => p.r.required = b,
                ref other => return Err(type_error(&ctx, e, "a boolean", other)),
            },
            "depends_on" => {
                let deps = strings(&ctx, e)?;
                let mut seen = HashSet::new();
                if let Some(d) = deps.iter().find(|d| !seen.insert(d.as_str())) {
                    return Err(err(
                        e.line,
                        format!("{ctx}: 'depends_on' lists '{}' twice", shown(d)),
                    ));
                }
                p.r.depends_on = deps;
                p.depends_line = e.line;
            }
            "cache_ttl" => {
                let secs = seconds(&ctx, e, 0, MAX_CACHE_TTL_SECS)?;
                p.r.cache_ttl = Duration::from_secs(secs);
            }
            "timeout" => {
                let secs = seconds(&ctx, e, 1, MAX_TIMEOUT_SECS)?;
                p.r.timeout = Duration::from_secs(secs);
            }
            "rows" => {
                p.r.rows = match string(&ctx, e)? {
                    "one" => Rows::One,
                    "first" => Rows::First,
                    "array" => Rows::Array,
                    other => {
                        return Err(err(
                            e.line,
                            format!(
                                "{ctx}: 'rows' must be \"one\", \"first\" or \"array\", not \
                                 \"{}\"",
                                shown(other)
                            ),
                        ));
                    }
                };
            }
            other => {
                let alt = other.replace('-', "_").to_ascii_lowercase();
                let hint = if FIELDS.contains(&alt.as_str()) {
                    format!("; did you mean '{alt}'?")
                } else {
                    String::new()
                };
                return Err(err(
                    e.line,
                    format!(
                        "{ctx}: unknown field '{}' (known fields: {}){hint}",
                        shown(other),
                        FIELDS.join(", ")
                    ),
                ));
            }
        }
    }
    let Some(query_line) = query_line else {
        return Err(err(
            t.line,
            format!("{ctx}: missing required field 'query'"),
        ));
    };
    if !has_inject {
        return Err(err(
            t.line,
            format!("{ctx}: missing required field 'inject'"),
        ));
    }
    check_placeholders(&ctx, &p, query_line)?;
    Ok(p)
}

fn type_error(ctx: &str, e: &Entry, want: &str, got: &Value) -> SpecError {
    err(
        e.value.line,
        format!("{ctx}: '{}' must be {want}, not {}", e.key, got.type_name()),
    )
}

fn string<'v>(ctx: &str, e: &'v Entry) -> Result<&'v str, SpecError> {
    match &e.value.value {
        Value::String(s) => Ok(s),
        other => Err(type_error(ctx, e, "a string", other)),
    }
}

/// An array of strings.
fn strings(ctx: &str, e: &Entry) -> Result<Vec<String>, SpecError> {
    let Value::Array(items) = &e.value.value else {
        return Err(type_error(ctx, e, "an array of strings", &e.value.value));
    };
    items
        .iter()
        .map(|item| match &item.value {
            Value::String(s) => Ok(s.clone()),
            other => Err(err(
                item.line,
                format!(
                    "{ctx}: every element of '{}' must be a string, not {}",
                    e.key,
                    other.type_name()
                ),
            )),
        })
        .collect()
}

/// An integer number of seconds in `min..=max`.
fn seconds(ctx: &str, e: &Entry, min: u64, max: u64) -> Result<u64, SpecError> {
    let Value::Integer(n) = e.value.value else {
        return Err(type_error(ctx, e, "an integer (seconds)", &e.value.value));
    };
    u64::try_from(n)
        .ok()
        .filter(|s| (min..=max).contains(s))
        .ok_or_else(|| {
            err(
                e.value.line,
                format!(
                    "{ctx}: '{}' must be between {min} and {max} seconds, not {n}",
                    e.key
                ),
            )
        })
}

/// `inject = { "app.var" = "column", ... }`.
fn inject(
    ctx: &str,
    e: &Entry,
    known: &HashSet<String>,
) -> Result<Vec<(String, String)>, SpecError> {
    let Value::Table(entries) = &e.value.value else {
        return Err(type_error(
            ctx,
            e,
            "an inline table { \"app.variable\" = \"column\", ... }",
            &e.value.value,
        ));
    };
    if entries.is_empty() {
        return Err(err(
            e.line,
            format!("{ctx}: 'inject' is empty: map at least one variable to a column"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for ie in entries {
        let var = ie.key.as_str();
        if !(is_custom_guc_name(var) && var.len() <= MAX_IDENT) {
            return Err(err(
                ie.line,
                format!(
                    "{ctx}: cannot inject '{}': not a valid setting name (prefix.name: parts of \
                     letters, digits and _, not starting with a digit; at most {MAX_IDENT} bytes)",
                    shown(var)
                ),
            ));
        }
        let prefix = var.split('.').next().unwrap_or_default();
        if RESERVED_PREFIXES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(prefix))
        {
            return Err(err(
                ie.line,
                format!("{ctx}: cannot inject '{var}': the prefix '{prefix}' is reserved"),
            ));
        }
        let lower = var.to_ascii_lowercase();
        if known.contains(&lower) {
            return Err(err(
                ie.line,
                format!(
                    "{ctx}: cannot inject '{var}': it is a context variable taken from the user \
                     name"
                ),
            ));
        }
        if !seen.insert(lower) {
            return Err(err(
                ie.line,
                format!("{ctx}: injects '{var}' twice (setting names ignore case)"),
            ));
        }
        let Value::String(column) = &ie.value.value else {
            return Err(err(
                ie.value.line,
                format!(
                    "{ctx}: the column for '{var}' must be a string, not {}",
                    ie.value.value.type_name()
                ),
            ));
        };
        if column.is_empty() || column.len() > MAX_IDENT || column.contains('\0') {
            return Err(err(
                ie.value.line,
                format!(
                    "{ctx}: the column for '{var}' must be a non-empty name of at most \
                     {MAX_IDENT} bytes without NUL"
                ),
            ));
        }
        out.push((var.to_owned(), column.clone()));
    }
    Ok(out)
}

fn check_placeholders(ctx: &str, p: &Parsed, query_line: usize) -> Result<(), SpecError> {
    let used =
        placeholders(&p.r.query).map_err(|m| err(query_line, format!("{ctx}: query: {m}")))?;
    let n = p.r.params.len();
    let max = used.last().copied().unwrap_or(0);
    let entries = |n: usize| match n {
        1 => "1 entry".to_owned(),
        n => format!("{n} entries"),
    };
    if usize::from(max) > n {
        return Err(err(
            query_line,
            format!("{ctx}: query uses ${max} but params has {}", entries(n)),
        ));
    }
    if usize::from(max) < n {
        let uses = match max {
            0 => "no placeholder".to_owned(),
            m => format!("only $1..${m}"),
        };
        return Err(err(
            p.params_line,
            format!("{ctx}: params has {} but the query uses {uses}", entries(n)),
        ));
    }
    if let Some(gap) = (1..max).find(|k| !used.contains(k)) {
        return Err(err(
            query_line,
            format!(
                "{ctx}: query uses ${max} but not ${gap} (PostgreSQL cannot infer the type of \
                 an unused parameter)"
            ),
        ));
    }
    Ok(())
}

fn check_names(parsed: &[Parsed]) -> Result<(), SpecError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for p in parsed {
        if let Some(first) = seen.insert(&p.r.name, p.name_line) {
            return Err(err(
                p.name_line,
                format!(
                    "duplicate resolver name '{}' (first on line {first})",
                    p.r.name
                ),
            ));
        }
    }
    Ok(())
}

/// No variable is injected by two resolvers. Returns each injected variable (as written) and
/// the index of its resolver.
fn check_injections(parsed: &[Parsed]) -> Result<HashMap<&str, usize>, SpecError> {
    let mut by_lower: HashMap<String, usize> = HashMap::new();
    let mut injectors = HashMap::new();
    for (i, p) in parsed.iter().enumerate() {
        for (var, _) in &p.r.inject {
            if let Some(first) = by_lower.insert(var.to_ascii_lowercase(), i) {
                let other = parsed.get(first).map_or("?", |q| q.r.name.as_str());
                return Err(err(
                    p.inject_line,
                    format!(
                        "resolver '{}': variable '{var}' is already injected by resolver \
                         '{other}'",
                        p.r.name
                    ),
                ));
            }
            injectors.insert(var.as_str(), i);
        }
    }
    Ok(injectors)
}

/// The bit of resolver `i` in a `u64` set (`i < MAX_RESOLVERS <= 64`).
fn bit(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(0)
}

/// Indexes in the set, ascending.
fn members(set: u64) -> impl Iterator<Item = usize> {
    (0..MAX_RESOLVERS).filter(move |&i| set & bit(i) != 0)
}

/// Each resolver's direct dependencies as a bit set; names must exist and not be its own.
fn dependencies(parsed: &[Parsed]) -> Result<Vec<u64>, SpecError> {
    let index: HashMap<&str, usize> = parsed
        .iter()
        .enumerate()
        .map(|(i, p)| (p.r.name.as_str(), i))
        .collect();
    parsed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut set = 0u64;
            for d in &p.r.depends_on {
                let Some(&j) = index.get(d.as_str()) else {
                    return Err(err(
                        p.depends_line,
                        format!(
                            "resolver '{}' depends on '{}' which does not exist",
                            p.r.name,
                            shown(d)
                        ),
                    ));
                };
                if j == i {
                    return Err(err(
                        p.depends_line,
                        format!(
                            "dependency cycle: {0} -> {0} (resolver '{0}' depends on itself)",
                            p.r.name
                        ),
                    ));
                }
                set |= bit(j);
            }
            Ok(set)
        })
        .collect()
}

/// Kahn's algorithm, taking the first ready resolver in file order at each step.
fn execution_order(parsed: &[Parsed], deps: &[u64]) -> Result<Vec<usize>, SpecError> {
    let mut done = 0u64;
    let mut order = Vec::with_capacity(deps.len());
    while order.len() < deps.len() {
        let ready = deps
            .iter()
            .enumerate()
            .find(|&(i, &d)| done & bit(i) == 0 && d & !done == 0);
        let Some((i, _)) = ready else {
            return Err(cycle_error(parsed, deps, done));
        };
        done |= bit(i);
        order.push(i);
    }
    Ok(order)
}

/// Names one cycle among the resolvers not in `done`: each of them waits for another one that
/// is not done, so following those edges from the first one must come back to a resolver
/// already seen.
fn cycle_error(parsed: &[Parsed], deps: &[u64], done: u64) -> SpecError {
    let name = |i: usize| parsed.get(i).map_or("?", |p| p.r.name.as_str());
    let mut path: Vec<usize> = Vec::new();
    let mut cur = (0..deps.len()).find(|&i| done & bit(i) == 0).unwrap_or(0);
    let mut cycle = loop {
        if let Some(at) = path.iter().position(|&p| p == cur) {
            break path.split_off(at);
        }
        path.push(cur);
        let pending = deps.get(cur).copied().unwrap_or(0) & !done;
        match members(pending).next() {
            Some(next) if path.len() <= deps.len() => cur = next,
            // Unreachable while the invariant above holds; name what was walked.
            _ => break path,
        }
    };
    if let Some(first) = cycle
        .iter()
        .enumerate()
        .min_by_key(|&(_, &i)| i)
        .map(|(at, _)| at)
    {
        cycle.rotate_left(first);
    }
    let mut chain: Vec<&str> = cycle.iter().map(|&i| name(i)).collect();
    if let Some(&head) = chain.first() {
        chain.push(head);
    }
    let line = cycle
        .first()
        .and_then(|&i| parsed.get(i))
        .map_or(1, |p| p.depends_line);
    err(
        line,
        format!(
            "dependency cycle: {} (each resolver depends on the next)",
            chain.join(" -> ")
        ),
    )
}

/// Every param is known when its resolver runs: a username-derived variable, or injected by a
/// resolver it depends on, directly or not.
fn check_params(
    parsed: &[Parsed],
    deps: &[u64],
    order: &[usize],
    known_vars: &[String],
    injectors: &HashMap<&str, usize>,
) -> Result<(), SpecError> {
    // Transitive dependencies, filled in execution order (dependencies first).
    let mut ancestors = vec![0u64; deps.len()];
    for &i in order {
        let direct = deps.get(i).copied().unwrap_or(0);
        let all = members(direct).fold(direct, |acc, j| {
            acc | ancestors.get(j).copied().unwrap_or(0)
        });
        if let Some(a) = ancestors.get_mut(i) {
            *a = all;
        }
    }
    let known: HashSet<&str> = known_vars.iter().map(String::as_str).collect();
    for (i, p) in parsed.iter().enumerate() {
        let before = ancestors.get(i).copied().unwrap_or(0);
        for param in &p.r.params {
            if known.contains(param.as_str()) {
                continue;
            }
            let injector = injectors.get(param.as_str()).copied();
            if injector.is_some_and(|j| before & bit(j) != 0) {
                continue;
            }
            let hint = match injector {
                Some(j) if j == i => " (this resolver injects it itself, after its query)".into(),
                Some(j) => format!(
                    " (resolver '{}' injects it: add it to depends_on)",
                    parsed.get(j).map_or("?", |q| q.r.name.as_str())
                ),
                None => String::new(),
            };
            return Err(err(
                p.params_line,
                format!(
                    "param '{}' of resolver '{}' is neither a context variable nor injected by a \
                     resolver it depends on{hint}",
                    shown(param),
                    p.r.name
                ),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ placeholders

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The `$n` parameters of `sql`, as PostgreSQL's lexer sees them: not inside `'...'` (`''`
/// escape), `E'...'` (backslash escapes), `"..."` identifiers, `$$...$$`/`$tag$...$tag$`
/// dollar quotes, `--` comments or nested `/* */` comments, and not as part of an identifier
/// (`a$1`). Assumes `standard_conforming_strings = on` (PostgreSQL's default): a backslash
/// escapes only in `E'...'`.
///
/// Errors: `$0`, a number above [`MAX_PLACEHOLDER`], letters right after `$n` (PostgreSQL:
/// "trailing junk after parameter"), and an unterminated string, identifier, dollar quote or
/// comment (the query could not run, and the count would be a guess).
pub fn placeholders(sql: &str) -> Result<BTreeSet<u16>, String> {
    let b = sql.as_bytes();
    let mut used = BTreeSet::new();
    let mut i = 0usize;
    while let Some(&c) = b.get(i) {
        let after = i.saturating_add(1);
        let next = b.get(after).copied();
        i = match c {
            b'\'' => skip_quoted(b, after, b'\'', false).ok_or("unterminated quoted string")?,
            b'"' => skip_quoted(b, after, b'"', false).ok_or("unterminated quoted identifier")?,
            b'-' if next == Some(b'-') => match b.iter().skip(i).position(|&x| x == b'\n') {
                Some(nl) => i.saturating_add(nl).saturating_add(1),
                None => b.len(),
            },
            b'/' if next == Some(b'*') => {
                skip_block_comment(b, after.saturating_add(1)).ok_or("unterminated /* comment")?
            }
            b'$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let (n, end) = parameter(sql, after)?;
                used.insert(n);
                end
            }
            b'$' => match dollar_tag_end(b, i) {
                Some(tag_end) => {
                    let tag = sql.get(i..tag_end).unwrap_or("$$");
                    let body = sql.get(tag_end..).unwrap_or("");
                    let Some(at) = body.find(tag) else {
                        return Err(format!(
                            "unterminated dollar-quoted string (no closing {})",
                            shown(tag)
                        ));
                    };
                    tag_end.saturating_add(at).saturating_add(tag.len())
                }
                None => after,
            },
            c if is_ident_start(c) => {
                let len = b
                    .iter()
                    .skip(after)
                    .take_while(|&&x| is_ident_cont(x))
                    .count();
                let end = after.saturating_add(len);
                if len == 0 && (c == b'E' || c == b'e') && next == Some(b'\'') {
                    skip_quoted(b, end.saturating_add(1), b'\'', true)
                        .ok_or("unterminated quoted string")?
                } else {
                    end
                }
            }
            c if c.is_ascii_digit() => {
                let len = b
                    .iter()
                    .skip(after)
                    .take_while(|&&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.')
                    .count();
                after.saturating_add(len)
            }
            _ => after,
        };
    }
    Ok(used)
}

/// Past the closing `q` of a quoted run starting at `start` (after the opening quote); a
/// doubled `q` is one literal `q`, and with `backslash` a backslash escapes the next byte.
fn skip_quoted(b: &[u8], start: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut j = start;
    loop {
        let x = *b.get(j)?;
        j = if backslash && x == b'\\' {
            j.saturating_add(2)
        } else if x == q {
            if b.get(j.saturating_add(1)) == Some(&q) {
                j.saturating_add(2)
            } else {
                return Some(j.saturating_add(1));
            }
        } else {
            j.saturating_add(1)
        };
    }
}

/// Past the `*/` that closes a comment whose body starts at `start`; comments nest.
fn skip_block_comment(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut j = start;
    loop {
        let x = *b.get(j)?;
        let y = b.get(j.saturating_add(1)).copied();
        if x == b'/' && y == Some(b'*') {
            depth = depth.saturating_add(1);
            j = j.saturating_add(2);
        } else if x == b'*' && y == Some(b'/') {
            depth = depth.saturating_sub(1);
            j = j.saturating_add(2);
            if depth == 0 {
                return Some(j);
            }
        } else {
            j = j.saturating_add(1);
        }
    }
}

/// `$$` or `$tag$` at `i` (a `$`): the end of the opening delimiter. A tag is an identifier
/// without `$` (so `$1` is a parameter, not a tag).
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let start = i.saturating_add(1);
    let first = *b.get(start)?;
    if first == b'$' {
        return Some(start.saturating_add(1));
    }
    if !is_ident_start(first) {
        return None;
    }
    let len = b
        .iter()
        .skip(start)
        .take_while(|&&x| is_ident_start(x) || x.is_ascii_digit())
        .count();
    let close = start.saturating_add(len);
    (b.get(close) == Some(&b'$')).then(|| close.saturating_add(1))
}

/// The parameter whose digits start at `start` (after the `$`) and the index after it.
fn parameter(sql: &str, start: usize) -> Result<(u16, usize), String> {
    let b = sql.as_bytes();
    let len = b
        .iter()
        .skip(start)
        .take_while(|x| x.is_ascii_digit())
        .count();
    let end = start.saturating_add(len);
    let digits = sql.get(start..end).unwrap_or("");
    let value = digits.bytes().fold(0u32, |acc, d| {
        acc.saturating_mul(10)
            .saturating_add(u32::from(d.wrapping_sub(b'0')))
    });
    if value == 0 {
        return Err(format!(
            "${} is not a parameter (they are numbered from $1)",
            shown(digits)
        ));
    }
    let Ok(n) = u16::try_from(value) else {
        return Err(format!(
            "parameter ${} is out of range (at most ${MAX_PLACEHOLDER})",
            shown(digits)
        ));
    };
    if b.get(end).is_some_and(|&x| is_ident_start(x)) {
        return Err(format!("trailing junk after parameter ${n}"));
    }
    Ok((n, end))
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

    fn known(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn user() -> Vec<String> {
        known(&["app.user_id"])
    }

    fn ok(text: &str) -> ResolverSet {
        parse(text, &user()).unwrap_or_else(|e| panic!("{text}\n{e}"))
    }

    fn names(set: &ResolverSet) -> Vec<&str> {
        set.resolvers.iter().map(|r| r.name.as_str()).collect()
    }

    /// A minimal block: `name`, a query with `params.len()` placeholders, one variable.
    fn block(name: &str, params: &[&str], var: &str, deps: &[&str]) -> String {
        let query: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
        let q = |v: &[&str]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "[[resolver]]\nname = \"{name}\"\nquery = \"SELECT 1 AS c {}\"\nparams = [{}]\n\
             inject = {{ \"{var}\" = \"c\" }}\ndepends_on = [{}]\n",
            query.join(", "),
            q(params),
            q(deps)
        )
    }

    use crate::testing::V1_RESOLVER_FILE as ORG_MEMBERSHIP;

    #[test]
    fn pgvpd_1_0_test_file() {
        let set = ok(ORG_MEMBERSHIP);
        let want = Resolver {
            name: "org_membership".into(),
            query: "  SELECT org_id::text AS org_id, role\n  FROM org_memberships\n  \
                    WHERE user_id = $1::uuid AND is_active\n  LIMIT 1\n"
                .into(),
            params: vec!["app.user_id".into()],
            inject: vec![
                ("app.org_id".into(), "org_id".into()),
                ("app.org_role".into(), "role".into()),
            ],
            required: false,
            depends_on: vec![],
            cache_ttl: Duration::from_secs(60),
            timeout: DEFAULT_TIMEOUT,
            rows: Rows::First,
            line: 1,
        };
        assert_eq!(
            set,
            ResolverSet {
                resolvers: vec![want]
            }
        );
    }

    #[test]
    fn every_field() {
        let text = "# header comment\n\n[[resolver]]\nname = \"perms\"\ndepends_on = [\n  \
                    \"org_membership\", # needs the org\n]\nquery = 'SELECT array_agg(p)::text AS \
                    p FROM perms WHERE org = $1 AND u = $2'\nparams = [\"app.org_id\", \
                    \"app.user_id\"]\ninject = { \"app.perms\" = \"p\" }\nrequired = true\n\
                    cache_ttl = 0\ntimeout = 30\nrows = \"array\"\n\n"
            .to_owned()
            + ORG_MEMBERSHIP
                .replace("cache_ttl = 60", "rows = \"one\"")
                .as_str();
        let set = ok(&text);
        assert_eq!(names(&set), ["org_membership", "perms"]);
        let perms = &set.resolvers[1];
        assert_eq!(perms.line, 3);
        assert_eq!(perms.depends_on, ["org_membership"]);
        assert_eq!(perms.params, ["app.org_id", "app.user_id"]);
        assert_eq!(perms.inject, [("app.perms".into(), "p".into())]);
        assert!(perms.required);
        assert_eq!(perms.cache_ttl, Duration::ZERO);
        assert_eq!(perms.timeout, Duration::from_secs(30));
        assert_eq!(perms.rows, Rows::Array);
        assert_eq!(set.resolvers[0].rows, Rows::One);
        assert_eq!(set.resolvers[0].line, 16);
        assert_eq!(Rows::default(), Rows::First);
        for r in [Rows::One, Rows::First, Rows::Array] {
            let t = ORG_MEMBERSHIP.to_owned() + &format!("rows = \"{}\"\n", r.as_str());
            assert_eq!(ok(&t).resolvers[0].rows, r);
        }
    }

    #[test]
    fn execution_order_is_kahn_by_file_order() {
        // c <- a, d <- b, a and b independent: file order among the ready ones
        let text = [
            block("c", &["app.a"], "app.c", &["a"]),
            block("b", &[], "app.b", &[]),
            block("d", &["app.b", "app.c"], "app.d", &["b", "c"]),
            block("a", &["app.user_id"], "app.a", &[]),
        ]
        .concat();
        assert_eq!(names(&ok(&text)), ["b", "a", "c", "d"]);
        // already in dependency order: file order
        let text = [
            block("x", &[], "app.x", &[]),
            block("y", &["app.x"], "app.y", &["x"]),
            block("z", &[], "app.z", &[]),
        ]
        .concat();
        assert_eq!(names(&ok(&text)), ["x", "y", "z"]);
        // a param injected two steps up the chain is known
        let text = [
            block("r3", &["app.r1"], "app.r3", &["r2"]),
            block("r2", &[], "app.r2", &["r1"]),
            block("r1", &[], "app.r1", &[]),
        ]
        .concat();
        assert_eq!(names(&ok(&text)), ["r1", "r2", "r3"]);
    }

    #[test]
    fn most_resolvers() {
        let chain: String = (0..MAX_RESOLVERS)
            .map(|i| {
                let deps: Vec<String> = (0..i).rev().take(1).map(|j| format!("r{j}")).collect();
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                block(&format!("r{i}"), &[], &format!("app.v{i}"), &deps)
            })
            .rev()
            .collect();
        let set = ok(&chain);
        let want: Vec<String> = (0..MAX_RESOLVERS).map(|i| format!("r{i}")).collect();
        assert_eq!(names(&set), want);
        let one_more = chain + &block("extra", &[], "app.extra", &[]);
        let e = parse(&one_more, &user()).unwrap_err();
        assert!(e.msg.contains("too many resolvers (at most 64)"), "{e}");
        assert_eq!(e.line, 1 + 6 * 64);
    }

    #[test]
    fn errors_name_line_and_resolver() {
        let base = "[[resolver]]\nname = \"r\"\nquery = \"SELECT $1 AS c\"\nparams = \
                    [\"app.user_id\"]\ninject = { \"app.x\" = \"c\" }\n";
        // (text appended to `base`, or a whole file when it starts with '!'; line; message)
        let cases: &[(&str, usize, &str)] = &[
            ("!", 1, "contains no [[resolver]] blocks"),
            ("!# nothing\n\n", 1, "contains no [[resolver]] blocks"),
            (
                "!x = 1\n[[resolver]]\n",
                1,
                "top-level key 'x' is not allowed",
            ),
            ("[other]\n", 6, "unknown table [other]"),
            ("[[resolvers]]\n", 6, "unknown table [[resolvers]]"),
            (
                "![resolver]\nname = \"r\"\n",
                1,
                "write [[resolver]], not [resolver]",
            ),
            ("cache-ttl = 60\n", 6, "unknown field 'cache-ttl'"),
            ("cache-ttl = 60\n", 6, "did you mean 'cache_ttl'?"),
            (
                "Timeout = 6\n",
                6,
                "known fields: name, query, params, inject, required",
            ),
            (
                "required = \"yes\"\n",
                6,
                "'required' must be a boolean, not a string",
            ),
            (
                "cache_ttl = -1\n",
                6,
                "'cache_ttl' must be between 0 and 86400 seconds, not -1",
            ),
            ("cache_ttl = 86401\n", 6, "between 0 and 86400"),
            (
                "cache_ttl = \"60\"\n",
                6,
                "must be an integer (seconds), not a string",
            ),
            (
                "timeout = 0\n",
                6,
                "'timeout' must be between 1 and 3600 seconds, not 0",
            ),
            ("timeout = 3601\n", 6, "between 1 and 3600"),
            (
                "rows = \"all\"\n",
                6,
                "'rows' must be \"one\", \"first\" or \"array\"",
            ),
            ("rows = 1\n", 6, "'rows' must be a string, not an integer"),
            (
                "depends_on = \"x\"\n",
                6,
                "'depends_on' must be an array of strings",
            ),
            (
                "depends_on = [\n\"a\",\n 2]\n",
                8,
                "every element of 'depends_on' must be a string",
            ),
            ("depends_on = [\"r\"]\n", 6, "dependency cycle: r -> r"),
            (
                "depends_on = [\"nope\"]\n",
                6,
                "resolver 'r' depends on 'nope' which does not exist",
            ),
            (
                "![[resolver]]\nquery = \"SELECT 1\"\n",
                1,
                "without a 'name'",
            ),
            (
                "![[resolver]]\n\nname = 7\n",
                3,
                "'name' must be a string, not an integer",
            ),
            (
                "![[resolver]]\nname = \"a b\"\n",
                2,
                "invalid resolver name 'a b'",
            ),
            (
                "![[resolver]]\nname = \"\"\n",
                2,
                "invalid resolver name ''",
            ),
            (
                "![[resolver]]\nname = \"r\"\ninject = { \"app.x\" = \"c\" }\n",
                1,
                "resolver 'r': missing required field 'query'",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\n",
                1,
                "missing required field 'inject'",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"  \"\ninject = { \"app.x\" = \"c\" }\n",
                3,
                "'query' is empty",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT \\u0000\"\n",
                3,
                "NUL",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = {}\n",
                4,
                "'inject' is empty",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = [\"x\"]\n",
                4,
                "'inject' must be an inline table",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"x\" = \"c\" }\n",
                4,
                "cannot inject 'x': not a valid setting name",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"app.1x\" = \"c\" }\n",
                4,
                "not a valid setting name",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"pgvpd.x\" = \"c\" }\n",
                4,
                "the prefix 'pgvpd' is reserved",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"App.User_Id\" = \"c\" }\n",
                4,
                "cannot inject 'App.User_Id': it is a context variable",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"app.a\" = \"c\", \"APP.A\" = \"d\" }\n",
                4,
                "injects 'APP.A' twice",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"app.a\" = 1 }\n",
                4,
                "the column for 'app.a' must be a string, not an integer",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"app.a\" = \"\" }\n",
                4,
                "must be a non-empty name",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1, $2 AS c\"\nparams = [\"app.user_id\"]\ninject = { \"app.a\" = \"c\" }\n",
                3,
                "resolver 'r': query uses $2 but params has 1 entry",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1 AS c\"\n\nparams = [\"app.user_id\"]\ninject = { \"app.a\" = \"c\" }\n",
                5,
                "params has 1 entry but the query uses no placeholder",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1 AS c\"\nparams = [\"app.user_id\", \"app.user_id\"]\ninject = { \"app.a\" = \"c\" }\n",
                4,
                "params has 2 entries but the query uses only $1..$1",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1, $3 AS c\"\nparams = [\"app.user_id\", \"app.user_id\", \"app.user_id\"]\ninject = { \"app.a\" = \"c\" }\n",
                3,
                "query uses $3 but not $2",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT '$1' AS c, $1\"\ninject = { \"app.a\" = \"c\" }\n",
                3,
                "query uses $1 but params has 0 entries",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $0\"\ninject = { \"app.a\" = \"c\" }\n",
                3,
                "query: $0 is not a parameter",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 'x\"\ninject = { \"app.a\" = \"c\" }\n",
                3,
                "query: unterminated quoted string",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1\"\nparams = [\"app.nope\"]\ninject = { \"app.a\" = \"c\" }\n",
                4,
                "param 'app.nope' of resolver 'r' is neither a context variable nor injected by a resolver it depends on",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1\"\nparams = [\"app.a\"]\ninject = { \"app.a\" = \"c\" }\n",
                4,
                "injects it itself",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT $1\"\nparams = [\"APP.USER_ID\"]\ninject = { \"app.a\" = \"c\" }\n",
                4,
                "param 'APP.USER_ID'",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { \"app.a\" = \"c\" }\nrequired = true\nrequired = false\n",
                6,
                "duplicate key 'required'",
            ),
            (
                "![[resolver]]\nname = \"r\"\ninject.x = 1\n",
                3,
                "dotted keys are not supported",
            ),
            (
                "![[resolver]]\nname = \"r\"\nquery = \"SELECT 1\"\ninject = { app.a = \"c\" }\n",
                4,
                "quote keys containing '.'",
            ),
            (
                "![[resolver]]\nname = \"r\"\n[resolver.inject]\n",
                3,
                "dotted keys are not supported",
            ),
        ];
        for (tail, line, msg) in cases {
            let text = match tail.strip_prefix('!') {
                Some(whole) => whole.to_owned(),
                None => format!("{base}{tail}"),
            };
            let e = parse(&text, &user()).expect_err(&text);
            assert_eq!(e.line, *line, "{text}\n{e}");
            assert!(e.msg.contains(msg), "{text}\n{e}\n(want {msg:?})");
            assert_eq!(e.to_string(), format!("line {line}: {}", e.msg));
        }
    }

    #[test]
    fn errors_between_resolvers() {
        let two = |a: String, b: String| a + "\n" + &b;
        let cases: Vec<(String, usize, &str)> = vec![
            (
                two(block("a", &[], "app.a", &[]), block("a", &[], "app.b", &[])),
                9,
                "duplicate resolver name 'a' (first on line 2)",
            ),
            (
                two(block("a", &[], "app.x", &[]), block("b", &[], "APP.X", &[])),
                12,
                "resolver 'b': variable 'APP.X' is already injected by resolver 'a'",
            ),
            (
                two(
                    block("a", &["app.b"], "app.a", &[]),
                    block("b", &[], "app.b", &[]),
                ),
                4,
                "param 'app.b' of resolver 'a' is neither a context variable nor injected by a \
                 resolver it depends on (resolver 'b' injects it: add it to depends_on)",
            ),
            (
                two(
                    block("a", &[], "app.a", &["b"]),
                    block("b", &[], "app.b", &["a"]),
                ),
                6,
                "dependency cycle: a -> b -> a",
            ),
            (
                [
                    block("z", &[], "app.z", &[]),
                    block("c", &[], "app.c", &["b"]),
                    block("a", &[], "app.a", &["z", "c"]),
                    block("b", &[], "app.b", &["a"]),
                ]
                .join("\n"),
                13,
                "dependency cycle: c -> b -> a -> c",
            ),
        ];
        for (text, line, msg) in &cases {
            let e = parse(text, &user()).expect_err(text);
            assert_eq!(e.line, *line, "{text}\n{e}");
            assert!(e.msg.contains(msg), "{text}\n{e}\n(want {msg:?})");
        }
    }

    #[test]
    fn toml_errors_keep_their_line() {
        let e = parse("[[resolver]]\nname = 'r'\nquery = \"\\q\"\n", &user()).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.msg.contains("invalid escape"), "{e}");
    }

    #[test]
    fn placeholder_scanner() {
        let set = |v: &[u16]| v.iter().copied().collect::<BTreeSet<u16>>();
        let cases: &[(&str, &[u16])] = &[
            ("SELECT 1", &[]),
            ("SELECT $1", &[1]),
            ("SELECT $1::uuid, $2::text", &[1, 2]),
            ("SELECT $10", &[10]),
            ("SELECT $2 + $1 + $2", &[1, 2]),
            ("SELECT $65535", &[65535]),
            ("SELECT $01", &[1]),
            ("SELECT '$1'", &[]),
            ("SELECT 'it''s $1' || $2", &[2]),
            ("SELECT E'\\'$1' || $2", &[2]),
            ("SELECT e'\\\\' || $1", &[1]),
            ("SELECT 'a\\' || $1", &[1]),
            ("SELECT E'' , $3", &[3]),
            ("SELECT U&'\\0041$1' , $4", &[4]),
            ("SELECT name'$1'", &[]),
            ("SELECT \"$1\", \"a\"\"$2\" FROM t WHERE x = $3", &[3]),
            ("SELECT $$ $1 $$, $2", &[2]),
            ("SELECT $tag$ $1 $$ $other$ $tag$ || $3", &[3]),
            ("SELECT $a$$1$a$ || $2", &[2]),
            ("SELECT $é$ $1 $é$, $5", &[5]),
            ("SELECT 1 -- $1\n + $2", &[2]),
            ("SELECT 1 -- $1", &[]),
            ("SELECT /* $1 /* $2 */ $3 */ $4", &[4]),
            ("SELECT a$1, _x$2$3, $4", &[4]),
            ("SELECT 1$2", &[2]),
            ("SELECT 1e5, $1", &[1]),
            ("SELECT $1-$2", &[1, 2]),
            ("SELECT ARRAY[$1,$2]", &[1, 2]),
            ("SELECT $ , $1", &[1]),
            ("SELECT $1$", &[1]),
            ("SELECT $x + $1", &[1]),
            ("SELECT $1.5", &[1]),
            ("SELECT 'a' 'b' $1", &[1]),
            ("SELECT 1 - -$1", &[1]),
            ("SELECT 1 /$1", &[1]),
        ];
        for (sql, want) in cases {
            assert_eq!(placeholders(sql), Ok(set(want)), "{sql}");
        }
        let errors: &[(&str, &str)] = &[
            ("SELECT $0", "$0 is not a parameter"),
            ("SELECT $65536", "out of range (at most $65535)"),
            ("SELECT $99999999999999999999999", "out of range"),
            ("SELECT $1abc", "trailing junk after parameter $1"),
            ("SELECT $1_0", "trailing junk"),
            ("SELECT 'abc", "unterminated quoted string"),
            ("SELECT E'abc\\'", "unterminated quoted string"),
            ("SELECT \"abc", "unterminated quoted identifier"),
            (
                "SELECT $$abc",
                "unterminated dollar-quoted string (no closing $$)",
            ),
            ("SELECT $q$abc$Q$", "no closing $q$"),
            ("SELECT /* /* */", "unterminated /* comment"),
        ];
        for (sql, msg) in errors {
            let e = placeholders(sql).unwrap_err();
            assert!(e.contains(msg), "{sql}: {e} (want {msg:?})");
        }
        let long = format!("SELECT ${}", "9".repeat(10_000));
        assert!(placeholders(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn placeholder_scanner_is_linear() {
        // an unclosed dollar tag as long as the input, and many of them
        let tag = format!("$a{}$", "b".repeat(300_000));
        assert!(placeholders(&format!("SELECT {tag} x")).is_err());
        let many = "$a$ $a$ ".repeat(100_000);
        assert_eq!(placeholders(&many), Ok(BTreeSet::new()));
        let comments = "/*".repeat(200_000);
        assert!(placeholders(&comments).is_err());
    }
}
