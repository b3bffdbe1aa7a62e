//! Base64 (RFC 4648 §4: standard alphabet, `=` padding) for SCRAM.
//!
//! Owns: `encode` and a strict, bounded `decode`. PURE: no I/O, no
//! allocation beyond the output (which is bounded by the input, and decoding
//! refuses inputs longer than `MAX_DECODE_INPUT`).
//!
//! Decoding is strict, so that every byte string has exactly one accepted
//! encoding (the `base64` fuzz target checks the round trip):
//! - the length must be a multiple of 4 (padding is required);
//! - only `A-Z a-z 0-9 + /` and `=` are accepted; no whitespace, no URL-safe
//!   alphabet;
//! - `=` may appear only as the last one or two characters;
//! - the bits that padding leaves unused must be zero (canonical encoding).
//!
//! Not constant time: use it for public values (nonces, salts, proofs that
//! are sent anyway, signatures that are compared with `Mac::verify_slice`
//! after decoding).

use std::fmt;

/// Longest input `decode` accepts (bytes of base64 text). SCRAM messages are
/// capped far below this (`scram::MAX_SERVER_MESSAGE_LEN`).
pub const MAX_DECODE_INPUT: usize = 16 * 1024;

/// Why `decode` rejected its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// Input longer than `MAX_DECODE_INPUT`.
    TooLong { len: usize, max: usize },
    /// Length is not a multiple of 4 (padding missing or truncated input).
    BadLength { len: usize },
    /// A byte outside the standard alphabet (or `=` where data is expected).
    InvalidByte { pos: usize, byte: u8 },
    /// `=` in a position where padding is not allowed (`x===`, `=` in the
    /// middle, data after `=`).
    BadPadding { pos: usize },
    /// The last symbol before the padding has non-zero unused bits.
    NonCanonical { pos: usize },
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Base64Error::TooLong { len, max } => {
                write!(f, "base64 input of {len} bytes exceeds the cap of {max}")
            }
            Base64Error::BadLength { len } => {
                write!(f, "base64 input length {len} is not a multiple of 4")
            }
            Base64Error::InvalidByte { pos, byte } => {
                write!(f, "invalid base64 byte 0x{byte:02x} at offset {pos}")
            }
            Base64Error::BadPadding { pos } => {
                write!(f, "misplaced base64 padding at offset {pos}")
            }
            Base64Error::NonCanonical { pos } => {
                write!(f, "non-canonical base64: unused bits set at offset {pos}")
            }
        }
    }
}

impl std::error::Error for Base64Error {}

/// The symbol for a 6-bit value (only the low 6 bits of `v` are used).
fn symbol(v: u8) -> u8 {
    let v = v & 0x3f;
    match v {
        0..=25 => b'A'.wrapping_add(v),
        26..=51 => b'a'.wrapping_add(v.wrapping_sub(26)),
        52..=61 => b'0'.wrapping_add(v.wrapping_sub(52)),
        62 => b'+',
        _ => b'/',
    }
}

/// The 6-bit value of an alphabet symbol; `None` for anything else
/// (including `=`).
fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c.wrapping_sub(b'A')),
        b'a'..=b'z' => Some(c.wrapping_sub(b'a').wrapping_add(26)),
        b'0'..=b'9' => Some(c.wrapping_sub(b'0').wrapping_add(52)),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Standard base64 with padding.
pub fn encode(input: &[u8]) -> String {
    // 4 output bytes per started 3 input bytes; saturating only matters for
    // inputs near usize::MAX, which cannot exist in memory.
    let cap = input.len().div_ceil(3).saturating_mul(4);
    let mut out = String::with_capacity(cap);
    let mut chunks = input.chunks_exact(3);
    for chunk in &mut chunks {
        if let &[a, b, c] = chunk {
            out.push(char::from(symbol(a >> 2)));
            out.push(char::from(symbol((a << 4) | (b >> 4))));
            out.push(char::from(symbol((b << 2) | (c >> 6))));
            out.push(char::from(symbol(c)));
        }
    }
    match *chunks.remainder() {
        [a] => {
            out.push(char::from(symbol(a >> 2)));
            out.push(char::from(symbol(a << 4)));
            out.push_str("==");
        }
        [a, b] => {
            out.push(char::from(symbol(a >> 2)));
            out.push(char::from(symbol((a << 4) | (b >> 4))));
            out.push(char::from(symbol(b << 2)));
            out.push('=');
        }
        _ => {}
    }
    out
}

/// Strict standard base64 decoding (see the module docs for what is
/// rejected). The empty input decodes to the empty output.
pub fn decode(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let len = input.len();
    if len > MAX_DECODE_INPUT {
        return Err(Base64Error::TooLong {
            len,
            max: MAX_DECODE_INPUT,
        });
    }
    if !len.is_multiple_of(4) {
        return Err(Base64Error::BadLength { len });
    }
    let quads = len / 4;
    let mut out = Vec::with_capacity(quads.saturating_mul(3));
    for (q, chunk) in input.chunks_exact(4).enumerate() {
        let &[c0, c1, c2, c3] = chunk else {
            return Err(Base64Error::BadLength { len });
        };
        let base = q.saturating_mul(4);
        let pos = |i: usize| base.saturating_add(i);
        let last = q.saturating_add(1) == quads;
        let sym = |c: u8, i: usize| {
            value(c).ok_or(if c == b'=' {
                Base64Error::BadPadding { pos: pos(i) }
            } else {
                Base64Error::InvalidByte {
                    pos: pos(i),
                    byte: c,
                }
            })
        };
        let v0 = sym(c0, 0)?;
        let v1 = sym(c1, 1)?;
        match (c2, c3) {
            (b'=', b'=') if last => {
                if v1 & 0x0f != 0 {
                    return Err(Base64Error::NonCanonical { pos: pos(1) });
                }
                out.push((v0 << 2) | (v1 >> 4));
            }
            (b'=', _) => return Err(Base64Error::BadPadding { pos: pos(2) }),
            (_, b'=') if last => {
                let v2 = sym(c2, 2)?;
                if v2 & 0x03 != 0 {
                    return Err(Base64Error::NonCanonical { pos: pos(2) });
                }
                out.push((v0 << 2) | (v1 >> 4));
                out.push((v1 << 4) | (v2 >> 2));
            }
            _ => {
                let v2 = sym(c2, 2)?;
                let v3 = sym(c3, 3)?;
                out.push((v0 << 2) | (v1 >> 4));
                out.push((v1 << 4) | (v2 >> 2));
                out.push((v2 << 6) | v3);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    reason = "tests"
)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 §10
        let vectors: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, enc) in vectors {
            assert_eq!(encode(raw), *enc);
            assert_eq!(decode(enc.as_bytes()).unwrap(), *raw, "{enc}");
        }
        // every symbol, both ends of the alphabet
        let all: Vec<u8> = (0u8..64).collect();
        let mut packed = Vec::new();
        for c in all.chunks(4) {
            packed.push((c[0] << 2) | (c[1] >> 4));
            packed.push((c[1] << 4) | (c[2] >> 2));
            packed.push((c[2] << 6) | c[3]);
        }
        assert_eq!(
            encode(&packed),
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        );
        assert_eq!(encode(&[0xff; 3]), "////");
        assert_eq!(encode(&[0xfb, 0xef, 0xbe]), "++++");
    }

    #[test]
    fn round_trip_all_lengths() {
        let seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rng = XorShift(seed);
        for round in 0..8 {
            for len in 0..64usize {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let enc = encode(&data);
                assert_eq!(enc.len(), len.div_ceil(3) * 4);
                assert_eq!(
                    decode(enc.as_bytes()),
                    Ok(data.clone()),
                    "seed {seed:#x} round {round} len {len}"
                );
            }
        }
    }

    #[test]
    fn rejects() {
        use Base64Error::*;
        let long = vec![b'A'; MAX_DECODE_INPUT + 4];
        let table: &[(&[u8], Base64Error)] = &[
            (b"Zg=", BadLength { len: 3 }),
            (b"Zg", BadLength { len: 2 }),
            (b"Zm9vY", BadLength { len: 5 }),
            (b"Zm9v\n", BadLength { len: 5 }),
            (b"Zm 9", InvalidByte { pos: 2, byte: b' ' }),
            (b"Zm9-", InvalidByte { pos: 3, byte: b'-' }),
            (b"Zm9_", InvalidByte { pos: 3, byte: b'_' }),
            (b"Zm\x009", InvalidByte { pos: 2, byte: 0 }),
            (b"\xffm9v", InvalidByte { pos: 0, byte: 0xff }),
            (b"Zg==Zg==", BadPadding { pos: 2 }),
            (b"Zm9=Zm9v", BadPadding { pos: 3 }),
            (b"Z===", BadPadding { pos: 1 }),
            (b"====", BadPadding { pos: 0 }),
            (b"Zg=A", BadPadding { pos: 2 }),
            (b"=m9v", BadPadding { pos: 0 }),
            // unused bits set: "Zh==" would be 'f' | 1 extra bit
            (b"Zh==", NonCanonical { pos: 1 }),
            (b"Zm9=", NonCanonical { pos: 2 }),
            (b"Zm/=", NonCanonical { pos: 2 }),
            (
                &long,
                TooLong {
                    len: MAX_DECODE_INPUT + 4,
                    max: MAX_DECODE_INPUT,
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                decode(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(!want.to_string().is_empty());
        }
        // canonical neighbours of the rejected ones are accepted
        assert_eq!(decode(b"Zg==").unwrap(), b"f");
        assert_eq!(decode(b"Zm8=").unwrap(), b"fo");
        assert_eq!(decode(b"Zm9vZm8=").unwrap(), b"foofo");
        let max = vec![b'A'; MAX_DECODE_INPUT];
        assert_eq!(decode(&max).unwrap().len(), MAX_DECODE_INPUT / 4 * 3);
    }
}
