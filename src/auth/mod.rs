//! Authentication primitives. PURE: no I/O.
//!
//! Passthrough mode relays SCRAM and cleartext end to end; only MD5 needs the
//! proxy (the MD5 hash covers the user name, which the proxy rewrites).
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod md5;
