//! PostgreSQL's legacy MD5 password response:
//! `"md5" || hex(md5(hex(md5(password || user)) || salt))`.
//!
//! Legacy: used only when the upstream server asks for MD5 (see
//! `docs/security.md`, "MD5 upstream users").

use md5::{Digest, Md5};

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(digest: &[u8], out: &mut [u8; 32]) {
    for (i, b) in digest.iter().take(16).enumerate() {
        let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
        let lo = HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
        if let Some(slot) = out.get_mut(i.saturating_mul(2)..i.saturating_mul(2).saturating_add(2))
        {
            slot.copy_from_slice(&[hi, lo]);
        }
    }
}

/// Lowercase hex of an MD5 digest (the form stored `md5…` secrets use).
pub fn md5_hex(digest: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_into(digest, &mut out);
    out
}

/// The 35-byte answer to AuthenticationMD5Password for `user`/`password`/`salt`.
pub fn md5_password_response(user: &[u8], password: &[u8], salt: [u8; 4]) -> [u8; 35] {
    let mut inner = Md5::new();
    inner.update(password);
    inner.update(user);
    let mut inner_hex = [0u8; 32];
    hex_into(&inner.finalize(), &mut inner_hex);
    md5_salted_response(&inner_hex, salt)
}

/// The answer from a stored `md5` hash (its 32 hex digits, `hex(md5(password || user))`).
pub fn md5_salted_response(inner_hex: &[u8; 32], salt: [u8; 4]) -> [u8; 35] {
    let mut outer = Md5::new();
    outer.update(inner_hex);
    outer.update(salt);
    let mut outer_hex = [0u8; 32];
    hex_into(&outer.finalize(), &mut outer_hex);

    let mut out = [0u8; 35];
    out[..3].copy_from_slice(b"md5");
    out[3..].copy_from_slice(&outer_hex);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // Reference values from Python's hashlib:
        // md5(b"secretalice").hexdigest() = 4a0a68b43b6cd5cf266fa02f196e2371
        // "md5" + md5(inner_hex + bytes([1,2,3,4])).hexdigest()
        let got = md5_password_response(b"alice", b"secret", [1, 2, 3, 4]);
        assert_eq!(&got, b"md598a0412b9c31436fc53776e863350083");
        // Changing the salt changes the answer.
        assert_ne!(
            md5_password_response(b"alice", b"secret", [1, 2, 3, 5]),
            got
        );
        // From the stored hash (auth files hold `md5` + these 32 digits).
        assert_eq!(
            &md5_salted_response(b"4a0a68b43b6cd5cf266fa02f196e2371", [1, 2, 3, 4]),
            got.as_slice()
        );
    }
}
