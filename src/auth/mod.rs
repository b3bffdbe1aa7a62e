//! Authentication primitives. PURE: no I/O, no clock, no randomness source
//! (callers pass random bytes in).
//!
//! Passthrough mode relays SCRAM and cleartext end to end; only MD5 needs the
//! proxy (the MD5 hash covers the user name, which the proxy rewrites).
//! `scram` is the SCRAM-SHA-256 client for when the proxy logs in upstream
//! with its own password; `base64` is its strict codec. `ct_eq` is the one
//! comparison used for secrets.
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

/// Constant-time equality for secrets (keys, hashes, passwords).
///
/// Different lengths return `false` at once: the length is not treated as
/// secret (callers compare fixed-size digests, or hash both sides first).
/// Equal lengths are compared without an early exit: every byte pair is
/// folded into one accumulator, and `black_box` keeps the optimiser from
/// turning the loop back into a short-circuiting `memcmp`.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::ct_eq;

    #[test]
    fn ct_eq_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"", true),
            (b"a", b"a", true),
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"bbc", false),
            (b"abc", b"ab", false),
            (b"ab", b"abc", false),
            (b"", b"\0", false),
            (&[0xff; 32], &[0xff; 32], true),
            (&[0u8; 32], &[0u8; 31], false),
        ];
        for (a, b, want) in cases {
            assert_eq!(ct_eq(a, b), *want, "{a:?} vs {b:?}");
            assert_eq!(ct_eq(b, a), *want, "{b:?} vs {a:?}");
        }
        // every single-bit difference in a 32-byte key is seen
        let key = [0x5au8; 32];
        for i in 0..32 {
            for bit in 0..8 {
                let mut other = key;
                other[i] ^= 1 << bit;
                assert!(!ct_eq(&key, &other), "byte {i} bit {bit}");
            }
        }
    }
}
