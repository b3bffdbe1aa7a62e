//! SCRAM-SHA-256 server (RFC 5802, RFC 7677), PostgreSQL flavour: the proxy
//! authenticating pooled clients.
//!
//! Owns: `ScramSecret` (a stored verifier: salt, iterations, StoredKey,
//! ServerKey; PostgreSQL's `SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey>`
//! text form) and `ScramServer`, a two-step state machine
//! `AwaitFirst --handle_client_first--> AwaitFinal --handle_client_final--> Done`.
//! PURE: no I/O, no clock, no randomness source (the caller passes nonce bytes).
//!
//! PostgreSQL flavour: gs2 header `n,,` or `y,,` (the proxy never offers
//! `-PLUS`, so `p=` is refused), empty authzid, the `n=` user name is ignored
//! (the startup packet names the user), no extensions (`m=` or any other
//! attribute after the nonce is refused).
//!
//! Invariants:
//! - the client is untrusted: each message is capped (`MAX_CLIENT_MESSAGE_LEN`)
//!   and the client nonce must be printable and at most `MAX_CLIENT_NONCE_LEN`
//!   before any work; the server's own work per login is two HMACs and one
//!   SHA-256 (no PBKDF2: the verifier is precomputed);
//! - the proof is checked by comparing H(ClientProof XOR ClientSignature)
//!   with StoredKey in constant time; a `doomed` exchange (unknown user, or
//!   a mock verifier) looks the same on the wire and fails at that point;
//! - after an error or success the machine is `Done` and every call fails.

use std::fmt;
use std::mem;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::base64;
use super::ct_eq;

/// Longest client-first or client-final message accepted. libpq's are ~60
/// and ~110 bytes.
pub const MAX_CLIENT_MESSAGE_LEN: usize = 1024;
/// Longest client nonce accepted (libpq sends 24 base64 characters).
pub const MAX_CLIENT_NONCE_LEN: usize = 256;
/// Most iterations a stored verifier may name (PostgreSQL allows up to
/// INT_MAX; a verifier above this is a configuration error).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest salt a stored verifier may hold.
pub const MAX_SALT_LEN: usize = 256;
/// Iterations of mock verifiers (PostgreSQL's default `scram_iterations`).
pub const MOCK_ITERATIONS: u32 = 4096;

const KEY_LEN: usize = 32;
type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; KEY_LEN],
    }
}

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are password-equivalent for SCRAM: never printed.
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish()
    }
}

impl ScramSecret {
    /// The verifier of `password` (bytes as given; see `scram` on SASLprep).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let server_key = hmac(&salted, &[b"Server Key"]);
        salted.fill(0);
        ScramSecret {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key,
        }
    }

    /// Parses PostgreSQL's stored form
    /// `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    pub fn parse(s: &str) -> Result<ScramSecret, &'static str> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or("does not start with SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$').ok_or("missing $ before the keys")?;
        let (iter, salt) = params.split_once(':').ok_or("missing : after iterations")?;
        let (stored, server) = keys.split_once(':').ok_or("missing : between the keys")?;
        if iter.is_empty() || !iter.bytes().all(|b| b.is_ascii_digit()) {
            return Err("iterations are not a number");
        }
        let iterations: u32 = iter.parse().map_err(|_| "iterations out of range")?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err("iterations out of range");
        }
        let salt = base64::decode(salt.as_bytes()).map_err(|_| "salt is not base64")?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err("salt length");
        }
        let key = |k: &str| -> Result<[u8; KEY_LEN], &'static str> {
            let v = base64::decode(k.as_bytes()).map_err(|_| "key is not base64")?;
            <[u8; KEY_LEN]>::try_from(v.as_slice()).map_err(|_| "key is not 32 bytes")
        };
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// A verifier for a user that does not exist: the same salt for every
    /// probe of the same name (derived from `key`), and keys no password
    /// matches (finding one would mean inverting SHA-256).
    pub fn mock(user: &[u8], key: &[u8; KEY_LEN]) -> ScramSecret {
        let salt = hmac(key, &[b"pgvpd mock salt\0", user]);
        ScramSecret {
            iterations: MOCK_ITERATIONS,
            salt: salt.get(..16).unwrap_or(&salt).to_vec(),
            stored_key: hmac(key, &[b"pgvpd mock stored key\0", user]),
            server_key: hmac(key, &[b"pgvpd mock server key\0", user]),
        }
    }

    /// Whether `password` derives this verifier (PBKDF2 with its salt and
    /// iterations; for cleartext checks).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &self.salt, self.iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        salted.fill(0);
        let stored: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        ct_eq(&stored, &self.stored_key)
    }
}

impl fmt::Display for ScramSecret {
    /// PostgreSQL's stored form (contains the keys: for files, not logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            base64::encode(&self.salt),
            base64::encode(&self.stored_key),
            base64::encode(&self.server_key)
        )
    }
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScramServerError {
    /// The client's message does not follow the protocol (08P01).
    Malformed(&'static str),
    /// The proof is wrong, or the user unknown (28P01).
    AuthFailed,
    /// A call not legal in the current state.
    OutOfOrder,
}

impl ScramServerError {
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ScramServerError::AuthFailed)
    }
}

impl fmt::Display for ScramServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramServerError::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            ScramServerError::AuthFailed => write!(f, "SCRAM authentication failed"),
            ScramServerError::OutOfOrder => write!(f, "SCRAM message out of order"),
        }
    }
}

enum State {
    AwaitFirst,
    AwaitFinal {
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
        /// `c=` value the client-final must carry: base64 of its gs2 header.
        cbind: String,
    },
    Done,
}

/// One client's SCRAM exchange, server side.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    doomed: bool,
    state: State,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitFirst => "await-first",
            State::AwaitFinal { .. } => "await-final",
            State::Done => "done",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish()
    }
}

/// RFC 5802 `saslname`: `=` only as `=2C` or `=3D`.
fn saslname_ok(name: &[u8]) -> bool {
    let mut i = 0usize;
    while let Some(&b) = name.get(i) {
        if b == b'=' {
            match name.get(i.saturating_add(1)..i.saturating_add(3)) {
                Some(b"2C") | Some(b"3D") => i = i.saturating_add(3),
                _ => return false,
            }
        } else {
            i = i.saturating_add(1);
        }
    }
    true
}

fn printable_nonce(n: &[u8]) -> bool {
    // RFC 5802 `printable`: %x21-2B / %x2D-7E (no comma).
    !n.is_empty() && n.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramServer {
    /// `nonce_bytes`: fresh random bytes (18 or more), encoded into the
    /// server's part of the nonce. `doomed`: the exchange must fail at the
    /// proof whatever the client sends (unknown user).
    pub fn new(secret: ScramSecret, nonce_bytes: &[u8], doomed: bool) -> ScramServer {
        ScramServer {
            secret,
            server_nonce: base64::encode(nonce_bytes),
            doomed,
            state: State::AwaitFirst,
        }
    }

    /// The SASLInitialResponse data (client-first); returns server-first.
    pub fn handle_client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramServerError> {
        if !matches!(
            mem::replace(&mut self.state, State::Done),
            State::AwaitFirst
        ) {
            return Err(ScramServerError::OutOfOrder);
        }
        if msg.len() > MAX_CLIENT_MESSAGE_LEN {
            return Err(ScramServerError::Malformed("client-first too long"));
        }
        let (cbind, rest) = if let Some(r) = msg.strip_prefix(b"n,") {
            ("biws", r)
        } else if let Some(r) = msg.strip_prefix(b"y,") {
            ("eSws", r)
        } else if msg.starts_with(b"p=") {
            return Err(ScramServerError::Malformed(
                "channel binding was not offered (SCRAM-SHA-256-PLUS)",
            ));
        } else {
            return Err(ScramServerError::Malformed("gs2 header"));
        };
        let bare = rest
            .strip_prefix(b",")
            .ok_or(ScramServerError::Malformed("authzid is not supported"))?;
        let mut parts = bare.split(|&b| b == b',');
        let user =
            parts
                .next()
                .and_then(|p| p.strip_prefix(b"n="))
                .ok_or(ScramServerError::Malformed(
                    "client-first does not start with n=",
                ))?;
        if !saslname_ok(user) {
            return Err(ScramServerError::Malformed("user name encoding"));
        }
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix(b"r="))
            .ok_or(ScramServerError::Malformed("client-first has no r="))?;
        if let Some(extra) = parts.next() {
            return Err(ScramServerError::Malformed(if extra.starts_with(b"m=") {
                "mandatory extension"
            } else {
                "unexpected attribute after the nonce"
            }));
        }
        if nonce.len() > MAX_CLIENT_NONCE_LEN || !printable_nonce(nonce) {
            return Err(ScramServerError::Malformed("client nonce"));
        }
        let mut combined = nonce.to_vec();
        combined.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&combined);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(base64::encode(&self.secret.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.secret.iterations).as_bytes());
        self.state = State::AwaitFinal {
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce: combined,
            cbind: cbind.to_string(),
        };
        Ok(server_first)
    }

    /// The SASLResponse data (client-final); returns server-final (`v=...`).
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramServerError> {
        let State::AwaitFinal {
            client_first_bare,
            server_first,
            nonce,
            cbind,
        } = mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramServerError::OutOfOrder);
        };
        if msg.len() > MAX_CLIENT_MESSAGE_LEN {
            return Err(ScramServerError::Malformed("client-final too long"));
        }
        let p_at = msg
            .windows(3)
            .rposition(|w| w == b",p=")
            .ok_or(ScramServerError::Malformed("client-final has no proof"))?;
        let without_proof = msg.get(..p_at).unwrap_or_default();
        let proof_b64 = msg.get(p_at.saturating_add(3)..).unwrap_or_default();
        let mut parts = without_proof.split(|&b| b == b',');
        let c =
            parts
                .next()
                .and_then(|p| p.strip_prefix(b"c="))
                .ok_or(ScramServerError::Malformed(
                    "client-final does not start with c=",
                ))?;
        if c != cbind.as_bytes() {
            return Err(ScramServerError::Malformed("channel binding data"));
        }
        let r = parts
            .next()
            .and_then(|p| p.strip_prefix(b"r="))
            .ok_or(ScramServerError::Malformed("client-final has no r="))?;
        if !ct_eq(r, &nonce) {
            return Err(ScramServerError::Malformed("nonce mismatch"));
        }
        if parts.next().is_some() {
            return Err(ScramServerError::Malformed("unexpected attribute"));
        }
        let proof = base64::decode(proof_b64)
            .map_err(|_| ScramServerError::Malformed("proof is not base64"))?;
        let proof: [u8; KEY_LEN] = proof
            .as_slice()
            .try_into()
            .map_err(|_| ScramServerError::Malformed("proof length"))?;
        let auth_message: [&[u8]; 5] =
            [&client_first_bare, b",", &server_first, b",", without_proof];
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let stored: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let ok = ct_eq(&stored, &self.secret.stored_key);
        if !ok || self.doomed {
            return Err(ScramServerError::AuthFailed);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let mut out = b"v=".to_vec();
        out.extend_from_slice(base64::encode(&server_signature).as_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
