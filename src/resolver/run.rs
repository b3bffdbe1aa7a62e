//! Running the resolvers of one session: sans-IO. The session feeds the
//! server's answers in; this module says what to send and when it is done.
//!
//! Per resolver (dependency order), on the session's upstream connection as
//! the login role, one extended-protocol cycle:
//!
//! ```text
//! Parse/Bind/Execute  SELECT set_config('search_path',$1,true), set_config('statement_timeout',$2,true),
//!                            set_config(<pinned setting>, <value>, true) …, set_config('role','none',true),
//!                            set_config($3,$4,true) …        -- every context variable: this client's values
//! Parse/Bind/Describe/Execute  <the resolver's query>, its params bound as text
//! Sync
//! ```
//!
//! The settings are local to the cycle's transaction: the client's startup
//! `options`, `search_path`, `standard_conforming_strings`, `DateStyle`…
//! and whatever an earlier client left on a pooled server cannot steer the
//! query, and nothing outlives it. Values are bound, never spliced, so `$1`,
//! quotes and backslashes in a value are data. The server enforces the
//! resolver's timeout (`statement_timeout`); the session's timer is the
//! backstop ([`Run::deadline_grace`]).
//!
//! Results: `rows = "first"` fetches one row, `"one"` fetches two and
//! refuses a second, `"array"` joins every row's column into a PostgreSQL
//! array literal (`{"a","b"}`; NULLs skipped). No row: NULL outputs, or a
//! refusal when `required`. A required resolver whose input is NULL is
//! refused too (pgvpd 1.0 skipped it); an optional one is skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::{Cache, Key, Lookup, Resolved};
use super::spec::{ResolverSet, Rows};
use crate::protocol::{ProtoError, backend, encode, tag};

/// Largest total of the values one resolver may produce (bytes). They are
/// sent back with every context step, so they stay small.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Extra time the session waits past a resolver's timeout before giving up
/// on the server (which should have cancelled the query itself).
pub const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// First retry delay of a session waiting on another session's query.
const WAIT_FIRST: Duration = Duration::from_millis(1);
/// Longest retry delay.
const WAIT_MAX: Duration = Duration::from_millis(32);

/// Settings pinned for every resolver query (local to its transaction).
const PINNED: &[(&str, &str)] = &[
    ("standard_conforming_strings", "on"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("transform_null_equals", "off"),
    ("role", "none"),
];

/// What is shared by every session: the resolver set, the cache and the
/// variable layout.
#[derive(Debug)]
pub struct Engine {
    set: ResolverSet,
    pub cache: Cache,
    search_path: String,
    /// The user-name context variables, then every injected variable in
    /// execution order: the order of a session's values.
    variables: Vec<String>,
    known: usize,
    plans: Vec<Plan>,
}

#[derive(Debug)]
struct Plan {
    /// Index in `variables` of each `params` entry.
    params: Vec<usize>,
    /// Index in `variables` of each `inject` entry.
    outputs: Vec<usize>,
}

impl Engine {
    /// `known`: the context variables the user name carries. The set was
    /// validated against them (`spec::parse`): params name known or
    /// earlier-injected variables, injected variables are new and unique.
    pub fn new(
        set: ResolverSet,
        known: &[String],
        search_path: &str,
        cache_size: usize,
    ) -> Result<Engine, String> {
        let mut variables: Vec<String> = known.to_vec();
        let mut plans = Vec::with_capacity(set.resolvers.len());
        for r in &set.resolvers {
            let mut params = Vec::with_capacity(r.params.len());
            for p in &r.params {
                let i = variables.iter().position(|v| v == p).ok_or_else(|| {
                    format!(
                        "resolver '{}': param '{p}' is not known when it runs",
                        r.name
                    )
                })?;
                params.push(i);
            }
            let mut outputs = Vec::with_capacity(r.inject.len());
            for (var, _) in &r.inject {
                if variables.iter().any(|v| v == var) {
                    return Err(format!(
                        "resolver '{}': variable '{var}' is set twice",
                        r.name
                    ));
                }
                outputs.push(variables.len());
                variables.push(var.clone());
            }
            plans.push(Plan { params, outputs });
        }
        Ok(Engine {
            set,
            cache: Cache::new(cache_size),
            search_path: search_path.to_string(),
            variables,
            known: known.len(),
            plans,
        })
    }

    /// Every context variable a resolved session sets, in value order.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Number of resolvers.
    pub fn len(&self) -> usize {
        self.set.resolvers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.resolvers.is_empty()
    }
}

/// A refusal: SQLSTATE and message for the client's FATAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

fn refuse(code: &str, message: String) -> Refusal {
    Refusal {
        code: code.to_string(),
        message,
    }
}

/// What the session does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A cycle was appended to the output; answers are due by the instant.
    Sent(Instant),
    /// Another session runs this query: call `advance` again at the instant.
    Wait(Instant),
    /// Every resolver ran: the session's values (user-name values first).
    Done(Vec<String>),
    Refused(Refusal),
}

/// What a server message meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// More answers to come.
    More,
    /// The cycle ended (ReadyForQuery): call `advance`.
    CycleDone,
    Refused(Refusal),
}

/// Where a cycle's answers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    PreParse,
    PreBind,
    PreRow,
    PreDone,
    Parse,
    Bind,
    Describe,
    /// DataRows, then CommandComplete / PortalSuspended / EmptyQueryResponse.
    Rows,
    Ready,
}

#[derive(Debug)]
struct Cycle {
    expect: Expect,
    /// Column index of each output, from the RowDescription.
    cols: Vec<usize>,
    rows: u32,
    /// First/One: the row's outputs. Array: unused.
    row: Vec<Option<String>>,
    /// Array: the elements per output.
    elems: Vec<Vec<String>>,
    bytes: usize,
    /// The cycle failed: what to do at its ReadyForQuery.
    failed: Option<Failed>,
    /// Key this session leads in the cache (filled or abandoned).
    lead: Option<Key>,
    /// When the cycle was sent.
    sent: Instant,
}

impl Cycle {
    /// Records the cycle's refusal; the first failure is the one reported.
    fn fail(&mut self, r: Refusal) {
        self.failed.get_or_insert(Failed::Refuse(r));
    }
}

/// How a failed cycle ends.
#[derive(Debug)]
enum Failed {
    /// The session is refused.
    Refuse(Refusal),
    /// Cancelled long before its timeout: a late cancel meant for the pooled
    /// server's previous client; the cycle is sent again, once.
    Retry,
}

#[derive(Debug)]
enum State {
    /// Ready to start resolver `next`.
    Idle,
    /// Waiting for another session's result for this key.
    Waiting {
        delay: Duration,
    },
    Running(Box<Cycle>),
    Finished,
}

/// The resolvers of one session.
#[derive(Debug)]
pub struct Run {
    engine: Arc<Engine>,
    /// One per engine variable; the user-name ones are always `Some`.
    values: Vec<Option<String>>,
    next: usize,
    state: State,
    /// A cycle was already sent again after a stray cancel.
    retried: bool,
    /// Cache hits and misses of this session (for the caller's counters).
    pub hits: u32,
    pub misses: u32,
}

impl Run {
    /// `values`: the user-name context values, one per known variable.
    pub fn new(engine: Arc<Engine>, values: &[String]) -> Run {
        let mut all: Vec<Option<String>> = values.iter().cloned().map(Some).collect();
        all.resize(engine.variables.len(), None);
        Run {
            engine,
            values: all,
            next: 0,
            state: State::Idle,
            retried: false,
            hits: 0,
            misses: 0,
        }
    }

    /// The resolver now running or next to run (for messages and logs).
    pub fn current_name(&self) -> &str {
        self.engine
            .set
            .resolvers
            .get(self.next)
            .map_or("", |r| r.name.as_str())
    }

    /// Runs what can run without the server: cache hits, skipped resolvers.
    /// Appends the next cycle to `out` when the server is needed.
    pub fn advance(&mut self, out: &mut Vec<u8>, now: Instant) -> Result<Next, ProtoError> {
        let engine = Arc::clone(&self.engine);
        loop {
            match self.state {
                State::Running(_) => return Err(ProtoError::BadValue("resolver cycle running")),
                State::Finished => return Ok(Next::Done(self.output())),
                State::Idle | State::Waiting { .. } => {}
            }
            let (Some(r), Some(plan)) = (
                engine.set.resolvers.get(self.next),
                engine.plans.get(self.next),
            ) else {
                self.state = State::Finished;
                return Ok(Next::Done(self.output()));
            };
            // Inputs: a NULL one skips an optional resolver and refuses a required one.
            let mut inputs = Vec::with_capacity(plan.params.len());
            let mut null_input = None;
            for (&i, name) in plan.params.iter().zip(&r.params) {
                match self.values.get(i).cloned().flatten() {
                    Some(v) => inputs.push(v),
                    None => {
                        null_input = Some(name.clone());
                        break;
                    }
                }
            }
            if let Some(name) = null_input {
                if r.required {
                    self.state = State::Finished;
                    return Ok(Next::Refused(refuse(
                        "28000",
                        format!(
                            "required resolver '{}' has no input: '{name}' is NULL",
                            r.name
                        ),
                    )));
                }
                self.set_outputs(plan, None);
                self.next = self.next.saturating_add(1);
                self.state = State::Idle;
                continue;
            }
            let key = Key {
                resolver: self.next,
                inputs,
            };
            let mut lead = None;
            if !r.cache_ttl.is_zero() {
                match engine
                    .cache
                    .lookup(&key, now, r.timeout.saturating_add(DEADLINE_GRACE))
                {
                    Lookup::Hit(v) => {
                        self.hits = self.hits.saturating_add(1);
                        if let Some(refusal) = self.take_result(r.required, &r.name, &v) {
                            self.state = State::Finished;
                            return Ok(Next::Refused(refusal));
                        }
                        self.next = self.next.saturating_add(1);
                        self.state = State::Idle;
                        continue;
                    }
                    Lookup::Wait => {
                        let delay = match self.state {
                            State::Waiting { delay } => delay.saturating_mul(2).min(WAIT_MAX),
                            _ => WAIT_FIRST,
                        };
                        self.state = State::Waiting { delay };
                        return Ok(Next::Wait(now.checked_add(delay).unwrap_or(now)));
                    }
                    Lookup::Lead => lead = Some(key.clone()),
                }
            }
            self.misses = self.misses.saturating_add(1);
            let start = out.len();
            if let Err(e) = self.encode_cycle(out, r, &key.inputs) {
                out.truncate(start);
                if let Some(k) = &lead {
                    engine.cache.abandon(k);
                }
                return Err(e);
            }
            let n = plan.outputs.len();
            self.state = State::Running(Box::new(Cycle {
                expect: Expect::PreParse,
                cols: Vec::with_capacity(n),
                rows: 0,
                row: vec![None; n],
                elems: vec![Vec::new(); if r.rows == Rows::Array { n } else { 0 }],
                bytes: 0,
                failed: None,
                lead,
                sent: now,
            }));
            let due = now
                .checked_add(r.timeout.saturating_add(DEADLINE_GRACE))
                .unwrap_or(now);
            return Ok(Next::Sent(due));
        }
    }

    fn encode_cycle(
        &self,
        out: &mut Vec<u8>,
        r: &super::spec::Resolver,
        inputs: &[String],
    ) -> Result<(), ProtoError> {
        let timeout_ms = r.timeout.as_millis().to_string();
        let mut sql = String::from(
            "SELECT pg_catalog.set_config('search_path', $1, true), \
             pg_catalog.set_config('statement_timeout', $2, true)",
        );
        for (k, v) in PINNED {
            sql.push_str(&format!(", pg_catalog.set_config('{k}', '{v}', true)"));
        }
        let mut params: Vec<Option<&[u8]>> = vec![
            Some(self.engine.search_path.as_bytes()),
            Some(timeout_ms.as_bytes()),
        ];
        // Every context variable carries this client's value ('' while unresolved).
        for (i, (var, val)) in self.engine.variables.iter().zip(&self.values).enumerate() {
            let a = i.saturating_mul(2).saturating_add(3);
            sql.push_str(&format!(
                ", pg_catalog.set_config(${a}, ${}, true)",
                a.saturating_add(1)
            ));
            params.push(Some(var.as_bytes()));
            params.push(Some(val.as_deref().unwrap_or("").as_bytes()));
        }
        encode::parse(out, b"", sql.as_bytes(), &[])?;
        encode::bind_text(out, b"", b"", &params)?;
        encode::execute(out, b"", 0)?;
        let args: Vec<Option<&[u8]>> = inputs.iter().map(|v| Some(v.as_bytes())).collect();
        encode::parse(out, b"", r.query.as_bytes(), &[])?;
        encode::bind_text(out, b"", b"", &args)?;
        encode::describe_portal(out, b"")?;
        let max_rows = match r.rows {
            Rows::First => 1,
            Rows::One => 2,
            Rows::Array => 0,
        };
        encode::execute(out, b"", max_rows)?;
        encode::sync(out);
        Ok(())
    }

    /// One server message of the running cycle (NoticeResponse and
    /// ParameterStatus are the caller's; an ErrorResponse is passed here).
    pub fn feed(&mut self, t: u8, body: &[u8], now: Instant) -> Result<Fed, ProtoError> {
        let engine = Arc::clone(&self.engine);
        let State::Running(c) = &mut self.state else {
            return Err(ProtoError::UnexpectedTag {
                phase: crate::protocol::FramePhase::Server,
                tag: t,
            });
        };
        let Some(r) = engine.set.resolvers.get(self.next) else {
            return Err(ProtoError::BadValue("resolver index"));
        };
        let unexpected = Err(ProtoError::UnexpectedTag {
            phase: crate::protocol::FramePhase::Server,
            tag: t,
        });
        if t == tag::ERROR_RESPONSE {
            let f = backend::decode_error_fields(body)?;
            if c.failed.is_none() {
                let msg = String::from_utf8_lossy(f.message.unwrap_or(b"unknown error"));
                let cancelled = f.code == Some(b"57014".as_slice());
                // Half its timeout or less: not our statement_timeout.
                let early = now.saturating_duration_since(c.sent)
                    < r.timeout.checked_div(2).unwrap_or_default();
                c.failed = Some(if cancelled && early && !self.retried {
                    Failed::Retry
                } else if cancelled {
                    Failed::Refuse(refuse(
                        "57014",
                        format!(
                            "resolver '{}' timed out after {} ms",
                            r.name,
                            r.timeout.as_millis()
                        ),
                    ))
                } else {
                    let code = f
                        .code
                        .and_then(|c| std::str::from_utf8(c).ok())
                        .filter(|c| c.len() == 5 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
                        .unwrap_or("XX000");
                    Failed::Refuse(refuse(code, format!("resolver '{}' failed: {msg}", r.name)))
                });
            }
            c.expect = Expect::Ready;
            return Ok(Fed::More);
        }
        match (c.expect, t) {
            (Expect::Ready, tag::READY_FOR_QUERY) => {
                backend::decode_ready_for_query(body)?;
            }
            // After an error the server skips to Sync: nothing but Z comes.
            (Expect::Ready, _) if c.failed.is_some() => return unexpected,
            (Expect::PreParse, tag::PARSE_COMPLETE) => c.expect = Expect::PreBind,
            (Expect::PreBind, tag::BIND_COMPLETE) => c.expect = Expect::PreRow,
            (Expect::PreRow, tag::DATA_ROW) => {
                backend::decode_data_row(body)?;
                c.expect = Expect::PreDone;
            }
            (Expect::PreDone, tag::COMMAND_COMPLETE) => {
                backend::decode_command_complete(body)?;
                c.expect = Expect::Parse;
            }
            (Expect::Parse, tag::PARSE_COMPLETE) => c.expect = Expect::Bind,
            (Expect::Bind, tag::BIND_COMPLETE) => c.expect = Expect::Describe,
            (Expect::Describe, tag::ROW_DESCRIPTION) => {
                let names = backend::decode_row_description(body)?;
                for (var, col) in &r.inject {
                    match names.iter().position(|n| *n == col.as_bytes()) {
                        Some(i) => c.cols.push(i),
                        None => {
                            c.fail(refuse(
                                "42703",
                                format!(
                                    "resolver '{}': its result has no column '{col}' (for '{var}')",
                                    r.name
                                ),
                            ));
                        }
                    }
                }
                c.expect = Expect::Rows;
            }
            (Expect::Describe, tag::NO_DATA) => {
                c.fail(refuse(
                    "42P17",
                    format!("resolver '{}': its query returns no columns", r.name),
                ));
                c.expect = Expect::Rows;
            }
            (Expect::Rows, tag::DATA_ROW) => {
                let row = backend::decode_data_row(body)?;
                c.rows = c.rows.saturating_add(1);
                if c.failed.is_some() {
                    return Ok(Fed::More);
                }
                if r.rows == Rows::One && c.rows > 1 {
                    c.fail(refuse(
                        "21000",
                        format!(
                            "resolver '{}' returned more than one row (rows = \"one\")",
                            r.name
                        ),
                    ));
                    return Ok(Fed::More);
                }
                let cols: Vec<Option<&[u8]>> = row.columns().collect();
                for (k, &ci) in c.cols.iter().enumerate() {
                    let v = cols.get(ci).copied().flatten();
                    if let Some(v) = v {
                        c.bytes = c.bytes.saturating_add(v.len()).saturating_add(3);
                    }
                    if c.bytes > MAX_RESULT_BYTES {
                        c.fail(refuse(
                            "54000",
                            format!(
                                "resolver '{}': its result exceeds {MAX_RESULT_BYTES} bytes",
                                r.name
                            ),
                        ));
                        return Ok(Fed::More);
                    }
                    let text = v.map(|b| String::from_utf8_lossy(b).into_owned());
                    if r.rows == Rows::Array {
                        if let (Some(s), Some(e)) = (text, c.elems.get_mut(k)) {
                            e.push(s);
                        }
                    } else if c.rows == 1
                        && let Some(slot) = c.row.get_mut(k)
                    {
                        *slot = text;
                    }
                }
            }
            (Expect::Rows, tag::COMMAND_COMPLETE) => {
                backend::decode_command_complete(body)?;
                c.expect = Expect::Ready;
            }
            (Expect::Rows, tag::PORTAL_SUSPENDED) | (Expect::Rows, tag::EMPTY_QUERY_RESPONSE) => {
                c.expect = Expect::Ready;
            }
            _ => return unexpected,
        }
        if t != tag::READY_FOR_QUERY {
            return Ok(Fed::More);
        }
        // The cycle is over.
        let State::Running(c) = std::mem::replace(&mut self.state, State::Idle) else {
            return Err(ProtoError::BadValue("resolver state"));
        };
        let c = *c;
        if let Some(failed) = c.failed {
            if let Some(k) = &c.lead {
                engine.cache.abandon(k);
            }
            return Ok(match failed {
                Failed::Retry => {
                    // Same resolver again (`next` unchanged), once.
                    self.retried = true;
                    Fed::CycleDone
                }
                Failed::Refuse(refusal) => {
                    self.state = State::Finished;
                    Fed::Refused(refusal)
                }
            });
        }
        let result: Resolved = match r.rows {
            _ if c.rows == 0 => None,
            Rows::Array => Some(c.elems.iter().map(|e| Some(array_literal(e))).collect()),
            Rows::First | Rows::One => Some(c.row),
        };
        let result = Arc::new(result);
        if let Some(k) = &c.lead {
            engine
                .cache
                .fill(k, Resolved::clone(&result), r.cache_ttl, now);
        }
        if let Some(refusal) = self.take_result(r.required, &r.name, &result) {
            self.state = State::Finished;
            return Ok(Fed::Refused(refusal));
        }
        self.next = self.next.saturating_add(1);
        Ok(Fed::CycleDone)
    }

    /// The cycle's timer fired: the server did not answer in time.
    pub fn timed_out(&self) -> Refusal {
        let (name, ms) = self
            .engine
            .set
            .resolvers
            .get(self.next)
            .map_or(("", 0), |r| (r.name.as_str(), r.timeout.as_millis()));
        refuse(
            "57014",
            format!("resolver '{name}' timed out after {ms} ms (no answer from the server)"),
        )
    }

    /// True while a cycle's answers are owed.
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Applies a resolver's result to the session's values.
    fn take_result(&mut self, required: bool, name: &str, v: &Resolved) -> Option<Refusal> {
        let engine = Arc::clone(&self.engine);
        let plan = engine.plans.get(self.next)?;
        if v.is_none() && required {
            return Some(refuse(
                "28000",
                format!("required resolver '{name}' returned no rows"),
            ));
        }
        self.set_outputs(plan, v.as_ref());
        None
    }

    fn set_outputs(&mut self, plan: &Plan, v: Option<&Vec<Option<String>>>) {
        for (k, &i) in plan.outputs.iter().enumerate() {
            if let Some(slot) = self.values.get_mut(i) {
                *slot = v.and_then(|row| row.get(k).cloned().flatten());
            }
        }
    }

    /// The session's values: NULL becomes '' (the variable is set, empty:
    /// the SQL helpers read it as NULL).
    fn output(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| v.clone().unwrap_or_default())
            .collect()
    }

    /// Number of user-name values.
    pub fn known(&self) -> usize {
        self.engine.known
    }
}

impl Drop for Run {
    /// A session that goes away while leading a query frees the key at once.
    fn drop(&mut self) {
        if let State::Running(c) = &self.state
            && let Some(k) = &c.lead
        {
            self.engine.cache.abandon(k);
        }
    }
}

/// A PostgreSQL array literal of text elements, every element quoted
/// (`{"a","b \"c\""}`), so commas, braces and spaces in values survive.
pub fn array_literal(elems: &[String]) -> String {
    let mut s = String::from("{");
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        for ch in e.chars() {
            if ch == '"' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn engine(toml: &str) -> Arc<Engine> {
        let known = vec!["app.user_id".to_string()];
        let set = super::super::spec::parse(toml, &known).expect("valid file");
        Arc::new(Engine::new(set, &known, "pg_catalog, public", 16).expect("engine"))
    }

    const ORG: &str = r#"
[[resolver]]
name = "org"
query = "SELECT org FROM m WHERE u = $1"
params = ["app.user_id"]
inject = { "app.org" = "org" }
cache_ttl = 60
"#;

    fn row(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    fn desc(names: &[&str]) -> Vec<u8> {
        let mut b = (names.len() as i16).to_be_bytes().to_vec();
        for n in names {
            b.extend_from_slice(n.as_bytes());
            b.push(0);
            b.extend_from_slice(&[0u8; 18]);
        }
        b
    }

    fn error(code: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in [(b'S', "ERROR"), (b'C', code), (b'M', "boom")] {
            b.push(k);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    /// The answers of one successful cycle with `rows` and a column `org`.
    fn answers(rows: &[Option<&str>], suspended: bool) -> Vec<(u8, Vec<u8>)> {
        let mut a = vec![
            (tag::PARSE_COMPLETE, vec![]),
            (tag::BIND_COMPLETE, vec![]),
            (tag::DATA_ROW, row(&[Some("x")])),
            (tag::COMMAND_COMPLETE, b"SELECT 1\0".to_vec()),
            (tag::PARSE_COMPLETE, vec![]),
            (tag::BIND_COMPLETE, vec![]),
            (tag::ROW_DESCRIPTION, desc(&["org"])),
        ];
        for r in rows {
            a.push((tag::DATA_ROW, row(&[*r])));
        }
        if suspended {
            a.push((tag::PORTAL_SUSPENDED, vec![]));
        } else {
            a.push((tag::COMMAND_COMPLETE, b"SELECT 1\0".to_vec()));
        }
        a.push((tag::READY_FOR_QUERY, b"I".to_vec()));
        a
    }

    fn feed_all(run: &mut Run, msgs: &[(u8, Vec<u8>)], now: Instant) -> Fed {
        let mut last = Fed::More;
        for (i, (t, b)) in msgs.iter().enumerate() {
            last = run.feed(*t, b, now).expect("valid answer");
            if i + 1 < msgs.len() {
                assert_eq!(last, Fed::More, "message {i}");
            }
        }
        last
    }

    #[test]
    fn one_cycle_then_cache_hit() {
        let e = engine(ORG);
        let now = Instant::now();
        let mut run = Run::new(Arc::clone(&e), &["u1".to_string()]);
        let mut out = Vec::new();
        assert!(matches!(run.advance(&mut out, now).unwrap(), Next::Sent(_)));
        // The params are bound, the query text is sent as written.
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("SELECT org FROM m WHERE u = $1"));
        assert!(text.contains("search_path"));
        assert!(text.contains("u1"));
        assert_eq!(
            feed_all(&mut run, &answers(&[Some("acme")], true), now),
            Fed::CycleDone
        );
        assert_eq!(
            run.advance(&mut out, now).unwrap(),
            Next::Done(vec!["u1".into(), "acme".into()])
        );
        // Another session, same identity: no cycle at all.
        let mut run2 = Run::new(Arc::clone(&e), &["u1".to_string()]);
        let mut out2 = Vec::new();
        assert_eq!(
            run2.advance(&mut out2, now).unwrap(),
            Next::Done(vec!["u1".into(), "acme".into()])
        );
        assert!(out2.is_empty());
        assert_eq!((run2.hits, run2.misses), (1, 0));
    }

    #[test]
    fn concurrent_miss_waits_for_the_leader() {
        let e = engine(ORG);
        let now = Instant::now();
        let mut lead = Run::new(Arc::clone(&e), &["u".to_string()]);
        let mut waiter = Run::new(Arc::clone(&e), &["u".to_string()]);
        let (mut o1, mut o2) = (Vec::new(), Vec::new());
        assert!(matches!(lead.advance(&mut o1, now).unwrap(), Next::Sent(_)));
        let Next::Wait(at) = waiter.advance(&mut o2, now).unwrap() else {
            panic!("the second miss waits");
        };
        assert!(o2.is_empty() && at > now);
        let Next::Wait(at2) = waiter.advance(&mut o2, at).unwrap() else {
            panic!("still waiting");
        };
        assert!(at2 - at > at - now, "the retry delay grows");
        feed_all(&mut lead, &answers(&[Some("o")], true), now);
        assert_eq!(
            waiter.advance(&mut o2, at2).unwrap(),
            Next::Done(vec!["u".into(), "o".into()])
        );
        assert!(o2.is_empty());
    }

    #[test]
    fn leader_dropped_mid_cycle_frees_the_key() {
        let e = engine(ORG);
        let now = Instant::now();
        let mut lead = Run::new(Arc::clone(&e), &["u".to_string()]);
        let mut out = Vec::new();
        assert!(matches!(
            lead.advance(&mut out, now).unwrap(),
            Next::Sent(_)
        ));
        drop(lead);
        let mut next = Run::new(Arc::clone(&e), &["u".to_string()]);
        assert!(matches!(
            next.advance(&mut out, now).unwrap(),
            Next::Sent(_)
        ));
    }

    #[test]
    fn refusals() {
        let now = Instant::now();
        let mut out = Vec::new();
        // Required, no row.
        let e = engine(&ORG.replace("cache_ttl = 60", "required = true"));
        let mut run = Run::new(Arc::clone(&e), &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        let Fed::Refused(r) = feed_all(&mut run, &answers(&[], false), now) else {
            panic!("required without a row")
        };
        assert_eq!(r.code, "28000");
        // Server error: its SQLSTATE; the cycle still ends at Z.
        let mut run = Run::new(Arc::clone(&e), &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        assert_eq!(run.feed(tag::PARSE_COMPLETE, &[], now).unwrap(), Fed::More);
        assert_eq!(
            run.feed(tag::ERROR_RESPONSE, &error("42P01"), now).unwrap(),
            Fed::More
        );
        assert!(
            run.feed(tag::DATA_ROW, &row(&[]), now).is_err(),
            "only Z after an error"
        );
        let mut run = Run::new(Arc::clone(&e), &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        run.feed(tag::ERROR_RESPONSE, &error("42P01"), now).unwrap();
        let Fed::Refused(r) = run.feed(tag::READY_FOR_QUERY, b"I", now).unwrap() else {
            panic!("error refuses")
        };
        assert_eq!(r.code, "42P01");
        assert!(r.message.contains("resolver 'org' failed: boom"));
        // rows = "one" with two rows.
        let e = engine(&ORG.replace("cache_ttl = 60", "rows = \"one\""));
        let mut run = Run::new(e, &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        let Fed::Refused(r) = feed_all(&mut run, &answers(&[Some("a"), Some("b")], true), now)
        else {
            panic!("two rows")
        };
        assert_eq!(r.code, "21000");
        // A missing column.
        let e = engine(&ORG.replace("\"org\" }", "\"nope\" }"));
        let mut run = Run::new(e, &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        let Fed::Refused(r) = feed_all(&mut run, &answers(&[Some("a")], true), now) else {
            panic!("missing column")
        };
        assert_eq!(r.code, "42703");
    }

    #[test]
    fn stray_cancel_is_retried_once() {
        let e = engine(&ORG.replace("cache_ttl = 60", "timeout = 10"));
        let now = Instant::now();
        let mut run = Run::new(e, &["u".to_string()]);
        let mut out = Vec::new();
        run.advance(&mut out, now).unwrap();
        run.feed(tag::ERROR_RESPONSE, &error("57014"), now).unwrap();
        assert_eq!(
            run.feed(tag::READY_FOR_QUERY, b"I", now).unwrap(),
            Fed::CycleDone
        );
        out.clear();
        assert!(matches!(run.advance(&mut out, now).unwrap(), Next::Sent(_)));
        assert!(!out.is_empty(), "sent again");
        run.feed(tag::ERROR_RESPONSE, &error("57014"), now).unwrap();
        let Fed::Refused(r) = run.feed(tag::READY_FOR_QUERY, b"I", now).unwrap() else {
            panic!("a second cancel refuses")
        };
        assert_eq!(r.code, "57014");
    }

    #[test]
    fn array_rows_and_null_input() {
        let toml = r#"
[[resolver]]
name = "items"
query = "SELECT org FROM m WHERE u = $1"
params = ["app.user_id"]
inject = { "app.items" = "org" }
rows = "array"

[[resolver]]
name = "after"
depends_on = ["items"]
query = "SELECT $1 AS org"
params = ["app.items"]
inject = { "app.after" = "org" }
"#;
        let now = Instant::now();
        let mut out = Vec::new();
        let e = engine(toml);
        let mut run = Run::new(Arc::clone(&e), &["u".to_string()]);
        run.advance(&mut out, now).unwrap();
        feed_all(
            &mut run,
            &answers(&[Some("a"), None, Some("b \"c\"")], false),
            now,
        );
        run.advance(&mut out, now).unwrap();
        feed_all(&mut run, &answers(&[Some("z")], true), now);
        let Next::Done(v) = run.advance(&mut out, now).unwrap() else {
            panic!("done")
        };
        assert_eq!(v[1], r#"{"a","b \"c\""}"#);
        assert_eq!(v[2], "z");
        // No row for the array: NULL, so the optional second resolver is skipped.
        let mut run = Run::new(e, &["v".to_string()]);
        out.clear();
        run.advance(&mut out, now).unwrap();
        feed_all(&mut run, &answers(&[], false), now);
        let n = out.len();
        assert_eq!(
            run.advance(&mut out, now).unwrap(),
            Next::Done(vec!["v".into(), String::new(), String::new()])
        );
        assert_eq!(out.len(), n, "the skipped resolver sent nothing");
    }
}
