//! Authentication primitives. PURE: no I/O.
//!
//! Passthrough mode relays SCRAM and cleartext end to end; only MD5 needs the
//! proxy (the MD5 hash covers the user name, which the proxy rewrites).
//! `scram` is the SCRAM-SHA-256 client for when the proxy logs in upstream
//! with its own password; `base64` is its strict codec.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod base64;
pub mod md5;
pub mod scram;
