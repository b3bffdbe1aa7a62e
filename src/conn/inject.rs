//! The context step: one extended-protocol batch that sets every context
//! variable and the role with bound parameters, then reads back whether the
//! session or current role is superuser or BYPASSRLS.
//!
//! Sent: Parse/Bind/Execute of
//! `SELECT pg_catalog.set_config($1,$2,false), …, pg_catalog.set_config('role',$n,false)`,
//! Parse/Bind/Execute of the role check, Sync. Every name is schema-qualified
//! and the operator is `OPERATOR(pg_catalog.=)`, so a client-chosen
//! `search_path` cannot substitute objects. Values travel as parameters, so
//! neither quoting nor `standard_conforming_strings` matters.
//!
//! Expected answers, in order: `1 2 D C 1 2 D{0,2} C Z` (ParameterStatus and
//! NoticeResponse may interleave and are forwarded by the caller).

use crate::protocol::{ProtoError, encode};

/// The role check: one row per distinct role among current_user/session_user.
pub const ROLE_CHECK_SQL: &[u8] = b"SELECT r.rolname, r.rolsuper, r.rolbypassrls \
FROM pg_catalog.pg_roles r \
WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER \
OR r.rolname OPERATOR(pg_catalog.=) SESSION_USER";

/// Appends the whole batch to `out`. `settings` (pool mode: the client's
/// allowed startup settings, see `conn::params`) are set first, so a client
/// setting can never override a context variable or the role.
pub fn build(
    out: &mut Vec<u8>,
    settings: &[(String, String)],
    variables: &[String],
    values: &[&str],
    role: &str,
) -> Result<(), ProtoError> {
    let (sql, params) = context_sql(settings, variables, values, role)?;
    let start = out.len();
    let res = (|| {
        unnamed_execute(out, sql.as_bytes(), &params)?;
        unnamed_execute(out, ROLE_CHECK_SQL, &[])?;
        encode::sync(out);
        Ok(())
    })();
    if res.is_err() {
        out.truncate(start);
    }
    res
}

/// Bind parameters in text format (`None` = NULL).
type Params<'a> = Vec<Option<&'a [u8]>>;

/// `SELECT pg_catalog.set_config($1,$2,false), …, pg_catalog.set_config('role',$n,false)`
/// and its parameters: the settings, then the context variables, then the role.
fn context_sql<'a>(
    settings: &'a [(String, String)],
    variables: &'a [String],
    values: &[&'a str],
    role: &'a str,
) -> Result<(String, Params<'a>), ProtoError> {
    let mut sql = String::from("SELECT ");
    let mut params: Vec<Option<&[u8]>> = Vec::new();
    let mut n: usize = 0;
    let pairs = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(
            variables
                .iter()
                .map(String::as_str)
                .zip(values.iter().copied()),
        );
    for (var, val) in pairs {
        let a = n
            .checked_add(1)
            .ok_or(ProtoError::Encode("parameter count"))?;
        let b = a
            .checked_add(1)
            .ok_or(ProtoError::Encode("parameter count"))?;
        sql.push_str(&format!("pg_catalog.set_config(${a}, ${b}, false), "));
        params.push(Some(var.as_bytes()));
        params.push(Some(val.as_bytes()));
        n = b;
    }
    let r = n
        .checked_add(1)
        .ok_or(ProtoError::Encode("parameter count"))?;
    sql.push_str(&format!("pg_catalog.set_config('role', ${r}, false)"));
    params.push(Some(role.as_bytes()));
    Ok((sql, params))
}

/// Transaction mode: the context step sent in front of each transaction the
/// client starts on a server (see `docs/architecture.md`, "Transaction
/// pooling"). No Sync: it shares the client's first extended-query cycle, so
/// if it fails the server discards the client's messages up to the client's
/// Sync (a simple Query included): they never run without the context. It is
/// an explicit transaction, `BEGIN`, the context statement, `COMMIT`: the
/// COMMIT makes the context durable, so the client's own `ROLLBACK` cannot
/// undo it, and being explicit it draws no "there is no transaction in
/// progress" WARNING (which PostgreSQL would also write to its log for
/// every transaction).
#[derive(Clone, Debug)]
pub struct TxStep {
    /// Name of the prepared context statement (its shape: the parameter count).
    pub name: String,
    /// Parse of the context statement (sent once per server).
    pub parse: Vec<u8>,
    /// Bind/Execute of both (sent per transaction).
    pub run: Vec<u8>,
}

/// Names of the step's prepared `BEGIN` and `COMMIT`.
pub const TX_BEGIN_NAME: &[u8] = b"pgvpd_begin";
pub const TX_COMMIT_NAME: &[u8] = b"pgvpd_commit";

impl TxStep {
    pub fn new(
        settings: &[(String, String)],
        variables: &[String],
        values: &[&str],
        role: &str,
    ) -> Result<TxStep, ProtoError> {
        let (sql, params) = context_sql(settings, variables, values, role)?;
        let name = format!("pgvpd_ctx_{}", params.len());
        let mut parse = Vec::new();
        encode::parse(&mut parse, name.as_bytes(), sql.as_bytes(), &[])?;
        let mut run = Vec::new();
        encode::bind_text(&mut run, b"", TX_BEGIN_NAME, &[])?;
        encode::execute(&mut run, b"", 0)?;
        encode::bind_text(&mut run, b"", name.as_bytes(), &params)?;
        encode::execute(&mut run, b"", 0)?;
        encode::bind_text(&mut run, b"", TX_COMMIT_NAME, &[])?;
        encode::execute(&mut run, b"", 0)?;
        Ok(TxStep { name, parse, run })
    }
}

/// The answers owed to a transaction step after its ParseCompletes, in
/// order (NoticeResponse and ParameterStatus may interleave; they are the
/// caller's business).
pub const TX_TAIL: &[u8] = &[
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::COMMAND_COMPLETE,
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::DATA_ROW,
    crate::protocol::tag::COMMAND_COMPLETE,
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::COMMAND_COMPLETE,
];

/// The step with unnamed statements (Parse, Bind, Execute of each).
pub fn build_unnamed_tx(
    out: &mut Vec<u8>,
    settings: &[(String, String)],
    variables: &[String],
    values: &[&str],
    role: &str,
) -> Result<(), ProtoError> {
    let (sql, params) = context_sql(settings, variables, values, role)?;
    unnamed_execute(out, b"BEGIN", &[])?;
    unnamed_execute(out, sql.as_bytes(), &params)?;
    unnamed_execute(out, b"COMMIT", &[])
}

/// Parse, Bind (text parameters) and Execute of `sql` as the unnamed
/// statement and portal.
fn unnamed_execute(
    out: &mut Vec<u8>,
    sql: &[u8],
    params: &[Option<&[u8]>],
) -> Result<(), ProtoError> {
    encode::parse(out, b"", sql, &[])?;
    encode::bind_text(out, b"", b"", params)?;
    encode::execute(out, b"", 0)
}

/// The answers owed to [`build_unnamed_tx`].
pub const TX_UNNAMED_ANSWERS: &[u8] = &[
    crate::protocol::tag::PARSE_COMPLETE,
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::COMMAND_COMPLETE,
    crate::protocol::tag::PARSE_COMPLETE,
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::DATA_ROW,
    crate::protocol::tag::COMMAND_COMPLETE,
    crate::protocol::tag::PARSE_COMPLETE,
    crate::protocol::tag::BIND_COMPLETE,
    crate::protocol::tag::COMMAND_COMPLETE,
];

/// Parse of the step's `BEGIN` and `COMMIT` (sent once per server; two
/// ParseCompletes).
pub fn tx_fixed_parse(out: &mut Vec<u8>) -> Result<(), ProtoError> {
    encode::parse(out, TX_BEGIN_NAME, b"BEGIN", &[])?;
    encode::parse(out, TX_COMMIT_NAME, b"COMMIT", &[])
}

/// Where the injection's answers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    SetParse,
    SetBind,
    SetRow,
    SetDone,
    CheckParse,
    CheckBind,
    /// Role-check rows seen so far, and whether any is privileged.
    CheckRows {
        rows: u8,
        privileged: bool,
    },
    /// CommandComplete of the check seen; expecting ReadyForQuery.
    Ready {
        rows: u8,
        privileged: bool,
    },
}

/// Outcome of feeding one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// Keep reading.
    More(Step),
    /// ReadyForQuery('I') after a clean run: the context is set.
    Done,
    /// The role check found superuser/BYPASSRLS, or no row.
    Refused,
    /// A message out of order.
    Unexpected,
}

/// Advances `step` with one backend message (`tag`, decoded DataRow columns
/// via `row`). ParameterStatus/Notice/Error are handled by the caller.
pub fn feed(step: Step, tag: u8, row: Option<&[Option<&[u8]>]>, rfq_status: Option<u8>) -> Fed {
    use crate::protocol::tag as t;
    match (step, tag) {
        (Step::SetParse, t::PARSE_COMPLETE) => Fed::More(Step::SetBind),
        (Step::SetBind, t::BIND_COMPLETE) => Fed::More(Step::SetRow),
        (Step::SetRow, t::DATA_ROW) => Fed::More(Step::SetDone),
        (Step::SetDone, t::COMMAND_COMPLETE) => Fed::More(Step::CheckParse),
        (Step::CheckParse, t::PARSE_COMPLETE) => Fed::More(Step::CheckBind),
        (Step::CheckBind, t::BIND_COMPLETE) => Fed::More(Step::CheckRows {
            rows: 0,
            privileged: false,
        }),
        (Step::CheckRows { rows, privileged }, t::DATA_ROW) => {
            let Some(cols) = row else {
                return Fed::Unexpected;
            };
            if rows >= 2 || cols.len() != 3 {
                return Fed::Unexpected;
            }
            let flag = |i: usize| -> Option<bool> {
                match cols.get(i).copied().flatten() {
                    Some(b"t") => Some(true),
                    Some(b"f") => Some(false),
                    _ => None,
                }
            };
            let (Some(sup), Some(bypass)) = (flag(1), flag(2)) else {
                return Fed::Unexpected;
            };
            Fed::More(Step::CheckRows {
                rows: rows.saturating_add(1),
                privileged: privileged || sup || bypass,
            })
        }
        (Step::CheckRows { rows, privileged }, t::COMMAND_COMPLETE) => {
            Fed::More(Step::Ready { rows, privileged })
        }
        (Step::Ready { rows, privileged }, t::READY_FOR_QUERY) => {
            if rfq_status != Some(b'I') {
                Fed::Unexpected
            } else if rows == 0 || privileged {
                Fed::Refused
            } else {
                Fed::Done
            }
        }
        _ => Fed::Unexpected,
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::protocol::tag as t;

    #[test]
    fn settings_come_first_as_parameters() {
        let mut out = Vec::new();
        build(
            &mut out,
            &[("application_name".into(), "x'); DROP TABLE t; --".into())],
            &["app.current_tenant_id".into()],
            &["acme"],
            "app_user",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(
            "SELECT pg_catalog.set_config($1, $2, false), pg_catalog.set_config($3, $4, false), \
             pg_catalog.set_config('role', $5, false)"
        ));
        // Values travel only as Bind parameters, never in the SQL text.
        let sql_end = text.find("false)\0").unwrap_or(0);
        assert!(!text[..sql_end].contains("DROP"));
        let app = text.find("application_name").unwrap_or(usize::MAX);
        let tenant = text.find("app.current_tenant_id").unwrap_or(0);
        assert!(app < tenant, "settings are bound before the context");
    }

    #[test]
    fn happy_path_and_refusals() {
        let f = |s, tag| feed(s, tag, None, None);
        let mut s = Step::SetParse;
        for tag in [t::PARSE_COMPLETE, t::BIND_COMPLETE] {
            match f(s, tag) {
                Fed::More(n) => s = n,
                other => panic!("{other:?}"),
            }
        }
        let set_row: [Option<&[u8]>; 2] = [Some(b"acme"), Some(b"app_user")];
        s = match feed(s, t::DATA_ROW, Some(&set_row), None) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        for tag in [t::COMMAND_COMPLETE, t::PARSE_COMPLETE, t::BIND_COMPLETE] {
            s = match f(s, tag) {
                Fed::More(n) => n,
                o => panic!("{o:?}"),
            };
        }
        let ok_row: [Option<&[u8]>; 3] = [Some(b"app_user"), Some(b"f"), Some(b"f")];
        let bad_row: [Option<&[u8]>; 3] = [Some(b"postgres"), Some(b"t"), Some(b"f")];
        let check = s;
        let s_ok = match feed(check, t::DATA_ROW, Some(&ok_row), None) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        let s_ok = match f(s_ok, t::COMMAND_COMPLETE) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        assert_eq!(feed(s_ok, t::READY_FOR_QUERY, None, Some(b'I')), Fed::Done);
        assert_eq!(
            feed(s_ok, t::READY_FOR_QUERY, None, Some(b'T')),
            Fed::Unexpected
        );
        // A privileged second row refuses.
        let s2 = match feed(check, t::DATA_ROW, Some(&ok_row), None) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        let s2 = match feed(s2, t::DATA_ROW, Some(&bad_row), None) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        let s2 = match f(s2, t::COMMAND_COMPLETE) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        assert_eq!(feed(s2, t::READY_FOR_QUERY, None, Some(b'I')), Fed::Refused);
        // No row at all refuses too (fail closed).
        let s3 = match f(check, t::COMMAND_COMPLETE) {
            Fed::More(n) => n,
            o => panic!("{o:?}"),
        };
        assert_eq!(feed(s3, t::READY_FOR_QUERY, None, Some(b'I')), Fed::Refused);
        // Out-of-order and malformed answers.
        assert_eq!(f(Step::SetParse, t::BIND_COMPLETE), Fed::Unexpected);
        assert_eq!(f(Step::SetParse, t::READY_FOR_QUERY), Fed::Unexpected);
        let odd: [Option<&[u8]>; 3] = [Some(b"x"), Some(b"yes"), Some(b"f")];
        assert_eq!(feed(check, t::DATA_ROW, Some(&odd), None), Fed::Unexpected);
        let null: [Option<&[u8]>; 3] = [Some(b"x"), None, Some(b"f")];
        assert_eq!(feed(check, t::DATA_ROW, Some(&null), None), Fed::Unexpected);
    }
}
