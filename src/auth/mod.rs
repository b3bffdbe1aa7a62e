//! Authentication primitives. PURE: no I/O.
//!
//! Passthrough mode relays SCRAM and cleartext end to end; only MD5 needs the
//! proxy (the MD5 hash covers the user name, which the proxy rewrites).
//! `scram` is the SCRAM-SHA-256 client for when the proxy logs in upstream
//! with its own password; `scram_server` the server side for pooled clients;
//! `userlist` reads PgBouncer-format auth files; `base64` is the strict codec.
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
pub mod scram_server;
pub mod userlist;

/// Constant-time equality: every byte is compared, whatever differs first.
/// Different lengths are unequal (lengths are not secret here).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
