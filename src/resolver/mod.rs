//! Context resolvers (behaviour §5): SQL queries run after authentication that derive more
//! context variables from the username-derived ones.
//!
//! Owns: the resolver file, read in two pure layers: [`toml`] (a strict TOML subset: text to a
//! positioned document) and [`spec`] (document to a validated [`ResolverSet`] in execution
//! order, with the `$n` scanner [`placeholders`]).
//! Must not: do I/O (the caller reads the file, at most [`toml::MAX_INPUT`] bytes), read the
//! clock, or panic on any input (fuzz target `resolvers`, oracle
//! `crate::testing::resolvers_oracle`).
//! Invariants of a loaded [`ResolverSet`]: names unique; every resolver after those it depends
//! on; each query's placeholders are exactly `$1..$n` with `n == params.len()`; every param is
//! known when its resolver runs; no variable is injected twice or shadows a context variable.
//! Queries run with bound parameters, never spliced into the SQL text (1.0's second-order
//! injection, §5.3 step 5).
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod cache;
pub mod run;
pub mod spec;
pub mod toml;

pub use spec::{Resolver, ResolverSet, Rows, SpecError, parse, placeholders};
pub use toml::TomlError;

/// An error in a resolver file, syntax ([`TomlError`]) or meaning
/// ([`SpecError`]): the 1-based line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for LineError {}

/// Largest resolver file, in bytes (the caller checks the size before reading; [`toml::parse`]
/// refuses larger text too).
pub const MAX_FILE_BYTES: usize = toml::MAX_INPUT;
