//! pgvpd: a PostgreSQL wire-protocol proxy that turns the tenant part of the
//! user name (`app_user.acme`) into Row-Level Security context.
//!
//! Layers (dependencies point one way, see `docs/architecture.md`):
//! `protocol`, `auth` are pure byte functions; `conn` holds pure per-connection
//! state machines; `reactor` and `sys` are the only code touching sockets,
//! mio, signals or the clock.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod buf;
pub mod config;
pub mod conn;
pub mod log;
pub mod pool;
pub mod protocol;
pub mod reactor;
pub mod reload;
pub mod resolver;
pub mod startup;
pub mod stats;
pub mod sys;
pub mod tenant;
pub mod testing;
pub mod tls;
