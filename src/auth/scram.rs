//! SCRAM-SHA-256 client (RFC 5802, RFC 7677), PostgreSQL flavour: the proxy
//! authenticating itself to an upstream server.
//!
//! Owns: `ScramClient`, a three-step state machine
//! `Initial --handle_server_first--> AwaitingFinal --handle_server_final--> Done`.
//! PURE: no I/O, no clock, no randomness source (the caller passes the nonce
//! bytes, from the rustls provider's `secure_random`).
//!
//! PostgreSQL flavour: mechanism `SCRAM-SHA-256`, gs2 header `n,,` (no
//! channel binding, so `c=biws`), and an empty user name `n=,` (the server
//! uses the user name of the startup packet, as libpq does).
//!
//! Invariants:
//! - the state is taken out with `mem::replace(.., State::Done)`; an error (or
//!   a call out of order) leaves the machine `Done`, and every later call
//!   fails: it fails closed;
//! - the server is untrusted: the server-first message, the nonce, the salt
//!   and the iteration count are capped before any work is done
//!   (`MAX_SERVER_MESSAGE_LEN`, `MAX_SERVER_NONCE_LEN`, `MAX_SALT_LEN`,
//!   `MAX_ITERATIONS`), so a malicious backend cannot make the proxy burn CPU
//!   in PBKDF2 or allocate without bound;
//! - the server signature is compared in constant time (`Mac::verify_slice`).
//!
//! Password: the bytes are used as given. PostgreSQL's SASLprep of an ASCII
//! password is the identity, so ASCII passwords always work. Non-ASCII
//! passwords that SASLprep would change (e.g. non-NFKC forms, mapped-to-nothing
//! characters) are **not** normalised here; give pgvpd the normalised form.
//! (PostgreSQL itself falls back to the raw bytes when SASLprep fails, e.g. for
//! non-UTF-8 passwords, so raw bytes match in that case too.)
//!
//! Strictness: the server-first message must be exactly `r=..,s=..,i=..` and
//! the server-final exactly `v=..` or `e=..` (PostgreSQL sends no extensions);
//! anything else is `Malformed`, and `m=` is `MandatoryExtension`.

use std::fmt;
use std::mem;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::base64::{self, Base64Error};

/// The SASL mechanism name this client implements.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Default cap on the server's iteration count (`i=`). PostgreSQL's default
/// `scram_iterations` is 4096; a hostile backend asking for 10^9 would pin a
/// worker in PBKDF2 (CVE-2026-6665 class). Raise per client with
/// `ScramClient::with_max_iterations`.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Longest server-first or server-final message accepted (bytes). PostgreSQL
/// sends ~90 bytes of server-first and 46 bytes of server-final.
pub const MAX_SERVER_MESSAGE_LEN: usize = 1024;
/// Longest server nonce (`r=`, client part included) accepted. PostgreSQL's is
/// the client nonce plus 24 characters.
pub const MAX_SERVER_NONCE_LEN: usize = 512;
/// Longest decoded salt accepted. PostgreSQL uses 16 bytes.
pub const MAX_SALT_LEN: usize = 256;
/// At most this many caller nonce bytes are used (more adds nothing).
pub const MAX_CLIENT_NONCE_BYTES: usize = 64;
/// Fewest caller nonce bytes `new` expects (as libpq's 18).
pub const MIN_CLIENT_NONCE_BYTES: usize = 18;

const GS2_HEADER: &[u8] = b"n,,";
/// `c=` + base64("n,,").
const CHANNEL_BINDING: &[u8] = b"c=biws";
/// SHA-256 output length.
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM exchange failed. Each variant names what was wrong; none
/// carries secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A `handle_*` call that is not legal in the current state (including
    /// any call after an earlier error or after success).
    OutOfOrder { call: &'static str },
    /// A server message longer than `MAX_SERVER_MESSAGE_LEN`.
    MessageTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A server message that does not have the expected shape.
    Malformed { what: &'static str },
    /// The server sent `m=` (a mandatory extension this client cannot honour).
    MandatoryExtension,
    /// The server nonce is unacceptable (reason given).
    ServerNonce { reason: &'static str },
    /// The salt is not valid base64.
    SaltEncoding(Base64Error),
    /// The decoded salt is empty or longer than `MAX_SALT_LEN`.
    SaltLength { len: usize, max: usize },
    /// `i=` is zero.
    IterationsZero,
    /// `i=` exceeds the cap (`got` saturates at `u64::MAX`).
    IterationsTooHigh { got: u64, max: u32 },
    /// The server signature (`v=`) is not valid base64.
    ServerSignatureEncoding(Base64Error),
    /// The server signature does not verify: the server does not know the
    /// password (or the exchange was tampered with).
    BadServerSignature,
    /// The server reported a SCRAM error (`e=<value>`, printable ASCII).
    ServerError(String),
    /// A cryptographic primitive refused its input (cannot happen with HMAC,
    /// which accepts keys of any length; kept so no code path panics).
    Crypto { what: &'static str },
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::OutOfOrder { call } => {
                write!(f, "SCRAM {call} called out of order (exchange is over)")
            }
            ScramError::MessageTooLong { what, len, max } => {
                write!(f, "SCRAM {what} of {len} bytes exceeds the cap of {max}")
            }
            ScramError::Malformed { what } => write!(f, "malformed SCRAM message: {what}"),
            ScramError::MandatoryExtension => {
                write!(
                    f,
                    "SCRAM server-first asks for an unsupported mandatory extension (m=)"
                )
            }
            ScramError::ServerNonce { reason } => write!(f, "bad SCRAM server nonce: {reason}"),
            ScramError::SaltEncoding(e) => write!(f, "bad SCRAM salt: {e}"),
            ScramError::SaltLength { len, max } => {
                write!(f, "bad SCRAM salt: {len} bytes (must be 1..={max})")
            }
            ScramError::IterationsZero => write!(f, "SCRAM iteration count is 0"),
            ScramError::IterationsTooHigh { got, max } => {
                write!(f, "SCRAM iteration count {got} is too high (cap {max})")
            }
            ScramError::ServerSignatureEncoding(e) => {
                write!(f, "bad SCRAM server signature encoding: {e}")
            }
            ScramError::BadServerSignature => {
                write!(f, "SCRAM server signature does not verify")
            }
            ScramError::ServerError(e) => write!(f, "SCRAM server error: {e}"),
            ScramError::Crypto { what } => write!(f, "SCRAM crypto failure: {what}"),
        }
    }
}

impl std::error::Error for ScramError {}

/// The password, wiped (best effort) when dropped.
struct Password(Vec<u8>);

impl Drop for Password {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

enum State {
    /// Legal: `handle_server_first`.
    Initial { password: Password },
    /// Legal: `handle_server_final`. Holds HMAC(ServerKey, ·) already fed
    /// with the AuthMessage; only the signature check remains.
    AwaitingFinal { server_signature: Box<HmacSha256> },
    /// Succeeded, failed, or poisoned by an out-of-order call. Nothing legal.
    Done,
}

/// SCRAM-SHA-256 client state machine (see the module docs).
pub struct ScramClient {
    /// `n=<user>,r=<client nonce>`.
    client_first_bare: Vec<u8>,
    /// Offset of the client nonce inside `client_first_bare`.
    nonce_start: usize,
    max_iterations: u32,
    state: State,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial { .. } => "Initial",
            State::AwaitingFinal { .. } => "AwaitingFinal",
            State::Done => "Done",
        };
        f.debug_struct("ScramClient")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// `nonce_bytes`: ≥ 18 (`MIN_CLIENT_NONCE_BYTES`) random bytes from the
    /// caller; at most the first `MAX_CLIENT_NONCE_BYTES` are used, encoded
    /// with base64 as the client nonce. `password` is used as given (see the
    /// module docs on SASLprep).
    pub fn new(password: &[u8], nonce_bytes: &[u8]) -> ScramClient {
        debug_assert!(
            nonce_bytes.len() >= MIN_CLIENT_NONCE_BYTES,
            "SCRAM client nonce needs at least {MIN_CLIENT_NONCE_BYTES} random bytes"
        );
        let nonce_bytes = nonce_bytes
            .get(..MAX_CLIENT_NONCE_BYTES)
            .unwrap_or(nonce_bytes);
        Self::new_with_user(b"", password, base64::encode(nonce_bytes).as_bytes())
    }

    /// Any user name and an already printable client nonce: for the RFC 7677
    /// known answer (user "user"). PostgreSQL always gets `new` (empty user).
    pub(crate) fn new_with_user(user: &[u8], password: &[u8], client_nonce: &[u8]) -> ScramClient {
        let mut client_first_bare = b"n=".to_vec();
        // saslname: ',' and '=' are escaped (RFC 5802 §5.1)
        for &b in user {
            match b {
                b',' => client_first_bare.extend_from_slice(b"=2C"),
                b'=' => client_first_bare.extend_from_slice(b"=3D"),
                _ => client_first_bare.push(b),
            }
        }
        client_first_bare.extend_from_slice(b",r=");
        let nonce_start = client_first_bare.len();
        client_first_bare.extend_from_slice(client_nonce);
        ScramClient {
            client_first_bare,
            nonce_start,
            max_iterations: MAX_ITERATIONS,
            state: State::Initial {
                password: Password(password.to_vec()),
            },
        }
    }

    /// Replaces the iteration cap (default `MAX_ITERATIONS`) for this client.
    pub fn with_max_iterations(mut self, max: u32) -> ScramClient {
        self.max_iterations = max;
        self
    }

    /// The SASL mechanism name for SASLInitialResponse.
    pub fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    /// The SASLInitialResponse payload: `n,,n=,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        let mut out = GS2_HEADER.to_vec();
        out.extend_from_slice(&self.client_first_bare);
        out
    }

    fn client_nonce(&self) -> &[u8] {
        self.client_first_bare
            .get(self.nonce_start..)
            .unwrap_or_default()
    }

    /// Feeds AuthenticationSASLContinue data (server-first); returns the
    /// SASLResponse payload (client-final: `c=biws,r=<nonce>,p=<proof>`).
    ///
    /// Checks, before any PBKDF2 work: message ≤ `MAX_SERVER_MESSAGE_LEN`;
    /// exactly `r=,s=,i=`; nonce printable, extends ours, ≤
    /// `MAX_SERVER_NONCE_LEN`; salt strict base64 of 1..=`MAX_SALT_LEN` bytes;
    /// 1 ≤ i ≤ the iteration cap.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let password = match mem::replace(&mut self.state, State::Done) {
            State::Initial { password } => password,
            _ => {
                return Err(ScramError::OutOfOrder {
                    call: "handle_server_first",
                });
            }
        };
        let first = self.parse_server_first(msg)?;

        let keys = salted_keys(&password.0, &first.salt, first.iterations);
        drop(password);
        let mut client_key = keys.client;
        let stored_key = keys.stored;
        let server_key = keys.server;

        let mut final_without_proof = CHANNEL_BINDING.to_vec();
        final_without_proof.extend_from_slice(b",r=");
        final_without_proof.extend_from_slice(first.nonce);

        let auth_message: [&[u8]; 5] = [
            &self.client_first_bare,
            b",",
            msg,
            b",",
            &final_without_proof,
        ];
        let client_signature = hmac(&stored_key, &auth_message);
        // ClientProof = ClientKey XOR ClientSignature
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let mut server_signature = new_mac(&server_key)?;
        for part in auth_message {
            server_signature.update(part);
        }

        let mut out = final_without_proof;
        out.extend_from_slice(b",p=");
        out.extend_from_slice(base64::encode(&client_key).as_bytes());
        self.state = State::AwaitingFinal {
            server_signature: Box::new(server_signature),
        };
        Ok(out)
    }

    /// Feeds AuthenticationSASLFinal data (`v=<signature>`); verifies the
    /// server signature in constant time. On success the exchange is over
    /// (`Done`); the caller still waits for AuthenticationOk.
    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let mac = match mem::replace(&mut self.state, State::Done) {
            State::AwaitingFinal { server_signature } => server_signature,
            _ => {
                return Err(ScramError::OutOfOrder {
                    call: "handle_server_final",
                });
            }
        };
        check_len("server-final", msg)?;
        if let Some(e) = msg.strip_prefix(b"e=") {
            if e.is_empty() || e.contains(&b',') || !e.iter().all(|b| b.is_ascii_graphic()) {
                return Err(ScramError::Malformed {
                    what: "server-final e= is not a printable value",
                });
            }
            return Err(ScramError::ServerError(
                String::from_utf8_lossy(e).into_owned(),
            ));
        }
        let v = msg.strip_prefix(b"v=").ok_or(ScramError::Malformed {
            what: "server-final does not start with v= or e=",
        })?;
        if v.contains(&b',') {
            return Err(ScramError::Malformed {
                what: "server-final has attributes after v=",
            });
        }
        let signature = base64::decode(v).map_err(ScramError::ServerSignatureEncoding)?;
        mac.verify_slice(&signature)
            .map_err(|_| ScramError::BadServerSignature)
    }

    /// Validates server-first; borrows the nonce from `msg`.
    fn parse_server_first<'m>(&self, msg: &'m [u8]) -> Result<ServerFirst<'m>, ScramError> {
        check_len("server-first", msg)?;
        if msg.starts_with(b"m=") {
            return Err(ScramError::MandatoryExtension);
        }
        let mut parts = msg.split(|&b| b == b',');
        let nonce = attr(parts.next(), b'r', "server-first: missing r= (nonce)")?;
        let salt = attr(
            parts.next(),
            b's',
            "server-first: missing s= (salt) after r=",
        )?;
        let iter = attr(
            parts.next(),
            b'i',
            "server-first: missing i= (iterations) after s=",
        )?;
        if parts.next().is_some() {
            return Err(ScramError::Malformed {
                what: "server-first: attributes after i=",
            });
        }

        if nonce.len() > MAX_SERVER_NONCE_LEN {
            return Err(ScramError::ServerNonce {
                reason: "longer than MAX_SERVER_NONCE_LEN",
            });
        }
        if !nonce.iter().all(|b| b.is_ascii_graphic()) {
            return Err(ScramError::ServerNonce {
                reason: "contains a non-printable byte",
            });
        }
        match nonce.strip_prefix(self.client_nonce()) {
            None => {
                return Err(ScramError::ServerNonce {
                    reason: "does not start with the client nonce",
                });
            }
            Some([]) => {
                return Err(ScramError::ServerNonce {
                    reason: "adds nothing to the client nonce",
                });
            }
            Some(_) => {}
        }

        let salt = base64::decode(salt).map_err(ScramError::SaltEncoding)?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(ScramError::SaltLength {
                len: salt.len(),
                max: MAX_SALT_LEN,
            });
        }

        if iter.is_empty() || !iter.iter().all(u8::is_ascii_digit) {
            return Err(ScramError::Malformed {
                what: "server-first: i= is not a decimal number",
            });
        }
        let got = iter.iter().fold(0u64, |n, d| {
            n.saturating_mul(10)
                .saturating_add(u64::from(d.wrapping_sub(b'0')))
        });
        if got == 0 {
            return Err(ScramError::IterationsZero);
        }
        let iterations = u32::try_from(got)
            .ok()
            .filter(|&i| i <= self.max_iterations)
            .ok_or(ScramError::IterationsTooHigh {
                got,
                max: self.max_iterations,
            })?;
        Ok(ServerFirst {
            nonce,
            salt,
            iterations,
        })
    }
}

struct ServerFirst<'m> {
    nonce: &'m [u8],
    salt: Vec<u8>,
    iterations: u32,
}

fn check_len(what: &'static str, msg: &[u8]) -> Result<(), ScramError> {
    if msg.len() > MAX_SERVER_MESSAGE_LEN {
        return Err(ScramError::MessageTooLong {
            what,
            len: msg.len(),
            max: MAX_SERVER_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// `part` must be `<key>=<value>`; returns the value.
fn attr<'m>(part: Option<&'m [u8]>, key: u8, what: &'static str) -> Result<&'m [u8], ScramError> {
    part.and_then(|p| p.strip_prefix(&[key, b'=']))
        .ok_or(ScramError::Malformed { what })
}

fn new_mac(key: &[u8]) -> Result<HmacSha256, ScramError> {
    <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| ScramError::Crypto {
        what: "HMAC key rejected",
    })
}

/// HMAC-SHA-256(key, concatenation of `parts`). HMAC takes keys of any
/// length, so the fallback (a zero MAC) is unreachable; it keeps the code
/// free of panics. Shared with `scram_server`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; KEY_LEN],
    }
}

/// The keys RFC 5802 §3 derives from a password (ClientKey is wiped on drop
/// by the caller's use; SaltedPassword never leaves this function).
pub(crate) struct SaltedKeys {
    pub client: [u8; KEY_LEN],
    pub stored: [u8; KEY_LEN],
    pub server: [u8; KEY_LEN],
}

/// PBKDF2-HMAC-SHA-256 of `password`, then ClientKey, StoredKey, ServerKey.
pub(crate) fn salted_keys(password: &[u8], salt: &[u8], iterations: u32) -> SaltedKeys {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    let client = hmac(&salted, &[b"Client Key"]);
    let server = hmac(&salted, &[b"Server Key"]);
    salted.fill(0);
    SaltedKeys {
        client,
        stored: Sha256::digest(client).into(),
        server,
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    // RFC 7677 §3
    const RFC_NONCE: &[u8] = b"rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &[u8] = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_client() -> ScramClient {
        ScramClient::new_with_user(b"user", b"pencil", RFC_NONCE)
    }

    fn is_done(c: &ScramClient) -> bool {
        matches!(c.state, State::Done)
    }

    #[test]
    fn rfc7677_known_answer() {
        let mut c = rfc_client();
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let out = c.handle_server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(RFC_CLIENT_FINAL.to_vec()).unwrap()
        );
        assert_eq!(c.handle_server_final(RFC_SERVER_FINAL), Ok(()));
        assert!(is_done(&c));
        // over: nothing is legal any more
        assert_eq!(
            c.handle_server_final(RFC_SERVER_FINAL),
            Err(ScramError::OutOfOrder {
                call: "handle_server_final"
            })
        );
        assert_eq!(
            c.handle_server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder {
                call: "handle_server_first"
            })
        );
    }

    #[test]
    fn postgres_flavour_client_first() {
        let c = ScramClient::new(b"pencil", &[0u8; 18]);
        assert_eq!(c.client_first(), b"n,,n=,r=AAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(c.mechanism(), "SCRAM-SHA-256");
        // extra nonce bytes beyond the cap are ignored
        let c = ScramClient::new(b"", &[0xffu8; 100]);
        let want = format!(
            "n,,n=,r={}",
            base64::encode(&[0xff; MAX_CLIENT_NONCE_BYTES])
        );
        assert_eq!(c.client_first(), want.as_bytes());
        // user name escaping (crate-internal helper)
        let c = ScramClient::new_with_user(b"a,b=c", b"", b"x");
        assert_eq!(c.client_first(), b"n,,n=a=2Cb=3Dc,r=x");
        assert_eq!(format!("{c:?}"), "ScramClient { state: \"Initial\", .. }");
    }

    #[test]
    fn wrong_server_signature() {
        let cases: &[(&[u8], ScramError)] = &[
            (
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=",
                ScramError::ServerSignatureEncoding(Base64Error::NonCanonical { pos: 42 }),
            ),
            (
                b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
                ScramError::BadServerSignature,
            ),
            // right prefix, wrong length
            (
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95A==",
                ScramError::BadServerSignature,
            ),
            (b"v=", ScramError::BadServerSignature),
            (
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
                ScramError::ServerSignatureEncoding(Base64Error::BadLength { len: 43 }),
            ),
            (
                b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1",
                ScramError::Malformed {
                    what: "server-final has attributes after v=",
                },
            ),
            (
                b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
                ScramError::Malformed {
                    what: "server-final does not start with v= or e=",
                },
            ),
            (
                b"e=invalid-proof",
                ScramError::ServerError("invalid-proof".into()),
            ),
            (
                b"e=bad\x01",
                ScramError::Malformed {
                    what: "server-final e= is not a printable value",
                },
            ),
        ];
        for (msg, want) in cases {
            let mut c = rfc_client();
            c.handle_server_first(RFC_SERVER_FIRST).unwrap();
            assert_eq!(
                c.handle_server_final(msg).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            assert!(is_done(&c));
            // fails closed: the right answer is no longer accepted
            assert!(c.handle_server_final(RFC_SERVER_FINAL).is_err());
            assert!(!want.to_string().is_empty());
        }
        let mut c = rfc_client();
        c.handle_server_first(RFC_SERVER_FIRST).unwrap();
        let long = [b"v=".as_slice(), &[b'A'; MAX_SERVER_MESSAGE_LEN]].concat();
        assert_eq!(
            c.handle_server_final(&long),
            Err(ScramError::MessageTooLong {
                what: "server-final",
                len: MAX_SERVER_MESSAGE_LEN + 2,
                max: MAX_SERVER_MESSAGE_LEN
            })
        );
    }

    #[test]
    fn rejects_bad_server_first() {
        let salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
        let r = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let huge_salt = base64::encode(&[7u8; MAX_SALT_LEN + 1]);
        let max_salt = base64::encode(&[7u8; MAX_SALT_LEN]);
        let long_nonce = format!("rOprNGfwEbeRWgbNEkqO{}", "x".repeat(MAX_SERVER_NONCE_LEN));
        let mal = |what| ScramError::Malformed { what };
        let nonce = |reason| ScramError::ServerNonce { reason };
        let cases: Vec<(String, ScramError)> = vec![
            // nonce
            (
                format!("r=XOprNGfwEbeRWgbNEkqO123,s={salt},i=4096"),
                nonce("does not start with the client nonce"),
            ),
            (
                format!("r=rOprNGfwEbeRWgbNEk,s={salt},i=4096"),
                nonce("does not start with the client nonce"),
            ),
            (
                format!("r=rOprNGfwEbeRWgbNEkqO,s={salt},i=4096"),
                nonce("adds nothing to the client nonce"),
            ),
            (
                format!("r=rOprNGfwEbeRWgbNEkqO ab,s={salt},i=4096"),
                nonce("contains a non-printable byte"),
            ),
            (
                format!("r=rOprNGfwEbeRWgbNEkqO\u{e9},s={salt},i=4096"),
                nonce("contains a non-printable byte"),
            ),
            (
                format!("r={long_nonce},s={salt},i=4096"),
                nonce("longer than MAX_SERVER_NONCE_LEN"),
            ),
            // iterations
            (format!("r={r},s={salt},i=0"), ScramError::IterationsZero),
            (format!("r={r},s={salt},i=0000"), ScramError::IterationsZero),
            (
                format!("r={r},s={salt},i=1000000"),
                ScramError::IterationsTooHigh {
                    got: 1_000_000,
                    max: MAX_ITERATIONS,
                },
            ),
            (
                format!("r={r},s={salt},i=100001"),
                ScramError::IterationsTooHigh {
                    got: 100_001,
                    max: MAX_ITERATIONS,
                },
            ),
            (
                format!("r={r},s={salt},i=99999999999999999999999999"),
                ScramError::IterationsTooHigh {
                    got: u64::MAX,
                    max: MAX_ITERATIONS,
                },
            ),
            (
                format!("r={r},s={salt},i=-1"),
                mal("server-first: i= is not a decimal number"),
            ),
            (
                format!("r={r},s={salt},i=+5"),
                mal("server-first: i= is not a decimal number"),
            ),
            (
                format!("r={r},s={salt},i="),
                mal("server-first: i= is not a decimal number"),
            ),
            (
                format!("r={r},s={salt},i=4096 "),
                mal("server-first: i= is not a decimal number"),
            ),
            // salt
            (
                format!("r={r},s={huge_salt},i=4096"),
                ScramError::SaltLength {
                    len: MAX_SALT_LEN + 1,
                    max: MAX_SALT_LEN,
                },
            ),
            (
                format!("r={r},s=,i=4096"),
                ScramError::SaltLength {
                    len: 0,
                    max: MAX_SALT_LEN,
                },
            ),
            (
                format!("r={r},s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096"),
                ScramError::SaltEncoding(Base64Error::BadLength { len: 22 }),
            ),
            (
                format!("r={r},s=W22Z*J0SNY7soEsUEjb6gQ==,i=4096"),
                ScramError::SaltEncoding(Base64Error::InvalidByte { pos: 4, byte: b'*' }),
            ),
            // missing / misplaced attributes
            (String::new(), mal("server-first: missing r= (nonce)")),
            (
                format!("s={salt},i=4096"),
                mal("server-first: missing r= (nonce)"),
            ),
            (
                format!("r={r},i=4096"),
                mal("server-first: missing s= (salt) after r="),
            ),
            (
                format!("r={r},s={salt}"),
                mal("server-first: missing i= (iterations) after s="),
            ),
            (
                format!("r={r},i=4096,s={salt}"),
                mal("server-first: missing s= (salt) after r="),
            ),
            (
                format!("r={r},s={salt},i=4096,"),
                mal("server-first: attributes after i="),
            ),
            (
                format!("r={r},s={salt},i=4096,x=1"),
                mal("server-first: attributes after i="),
            ),
            (
                format!("R={r},s={salt},i=4096"),
                mal("server-first: missing r= (nonce)"),
            ),
            (
                format!("m=ext,r={r},s={salt},i=4096"),
                ScramError::MandatoryExtension,
            ),
            (
                format!("r={r},s={salt},i={}", "1".repeat(MAX_SERVER_MESSAGE_LEN)),
                ScramError::MessageTooLong {
                    what: "server-first",
                    len: MAX_SERVER_MESSAGE_LEN + r.len() + salt.len() + 8,
                    max: MAX_SERVER_MESSAGE_LEN,
                },
            ),
        ];
        for (msg, want) in &cases {
            let mut c = rfc_client();
            assert_eq!(
                c.handle_server_first(msg.as_bytes()).as_ref(),
                Err(want),
                "{msg}"
            );
            assert!(is_done(&c), "{msg}");
            // fails closed: neither the right server-first nor a final is accepted
            assert!(c.handle_server_first(RFC_SERVER_FIRST).is_err());
            assert!(c.handle_server_final(RFC_SERVER_FINAL).is_err());
            assert!(!want.to_string().is_empty());
        }
        // the caps themselves are accepted
        let mut c = rfc_client().with_max_iterations(10);
        let ok = format!("r={r},s={max_salt},i=10");
        assert!(c.handle_server_first(ok.as_bytes()).is_ok());
        let mut c = rfc_client().with_max_iterations(10);
        assert_eq!(
            c.handle_server_first(RFC_SERVER_FIRST),
            Err(ScramError::IterationsTooHigh { got: 4096, max: 10 })
        );
    }

    #[test]
    fn calls_out_of_order() {
        let mut c = rfc_client();
        assert_eq!(
            c.handle_server_final(RFC_SERVER_FINAL),
            Err(ScramError::OutOfOrder {
                call: "handle_server_final"
            })
        );
        assert!(is_done(&c));
        // poisoned: the legal first step is refused too
        assert_eq!(
            c.handle_server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder {
                call: "handle_server_first"
            })
        );

        let mut c = rfc_client();
        c.handle_server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            c.handle_server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder {
                call: "handle_server_first"
            })
        );
        assert!(c.handle_server_final(RFC_SERVER_FINAL).is_err());
        assert_eq!(format!("{c:?}"), "ScramClient { state: \"Done\", .. }");
    }

    /// The server side of SCRAM-SHA-256 as PostgreSQL computes it, from a
    /// stored verifier (salt, iterations, StoredKey, ServerKey).
    struct TinyServer {
        salt: Vec<u8>,
        iterations: u32,
        stored_key: [u8; 32],
        server_key: [u8; 32],
    }

    impl TinyServer {
        fn new(password: &[u8], salt: Vec<u8>, iterations: u32) -> TinyServer {
            let mut salted = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
            let client_key = hmac(&salted, &[b"Client Key"]);
            TinyServer {
                salt,
                iterations,
                stored_key: Sha256::digest(client_key).into(),
                server_key: hmac(&salted, &[b"Server Key"]),
            }
        }

        /// Runs one exchange with `c`; returns whether the server accepted
        /// the proof, and the client's verdict on the server's signature.
        fn exchange(&self, c: &mut ScramClient, server_nonce_tail: &str) -> Result<(), String> {
            let first = c.client_first();
            let bare = first.strip_prefix(b"n,,").expect("gs2 header");
            assert!(bare.starts_with(b"n=,r="), "PostgreSQL flavour: empty user");
            let cnonce = std::str::from_utf8(&bare[5..]).unwrap();
            let server_first = format!(
                "r={cnonce}{server_nonce_tail},s={},i={}",
                base64::encode(&self.salt),
                self.iterations
            );
            let client_final = c
                .handle_server_first(server_first.as_bytes())
                .map_err(|e| e.to_string())?;
            let client_final = std::str::from_utf8(&client_final).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            assert_eq!(
                without_proof,
                format!("c=biws,r={cnonce}{server_nonce_tail}")
            );
            let auth_message = format!(
                "{},{server_first},{without_proof}",
                std::str::from_utf8(bare).unwrap()
            );
            let client_signature = hmac(&self.stored_key, &[auth_message.as_bytes()]);
            let mut client_key = base64::decode(proof.as_bytes()).unwrap();
            assert_eq!(client_key.len(), 32);
            for (k, s) in client_key.iter_mut().zip(client_signature) {
                *k ^= s;
            }
            if Sha256::digest(&client_key).as_slice() != self.stored_key {
                return Err("server: invalid-proof".into());
            }
            let v = hmac(&self.server_key, &[auth_message.as_bytes()]);
            let server_final = format!("v={}", base64::encode(&v));
            c.handle_server_final(server_final.as_bytes())
                .map_err(|e| e.to_string())
        }
    }

    #[test]
    fn round_trip_with_tiny_server() {
        let seed = 0x5eed_5c4a_a11c_e000u64;
        let mut rng = XorShift(seed);
        for round in 0..6 {
            let pw_len = rng.below_usize(40);
            let password: Vec<u8> = (0..pw_len).map(|_| b'!' + rng.below(94) as u8).collect();
            let salt: Vec<u8> = (0..1 + rng.below_usize(32))
                .map(|_| rng.next() as u8)
                .collect();
            let iterations = 1 + rng.below(2048) as u32;
            let nonce: Vec<u8> = (0..18 + rng.below_usize(10))
                .map(|_| rng.next() as u8)
                .collect();
            let tail = base64::encode(&rng.next().to_le_bytes());
            let server = TinyServer::new(&password, salt, iterations);

            let mut c = ScramClient::new(&password, &nonce);
            assert_eq!(
                server.exchange(&mut c, &tail),
                Ok(()),
                "seed {seed:#x} round {round}"
            );
            assert!(is_done(&c));

            // wrong password: the server rejects the proof
            let mut wrong = password.clone();
            wrong.push(b'x');
            let mut c = ScramClient::new(&wrong, &nonce);
            assert_eq!(
                server.exchange(&mut c, &tail),
                Err("server: invalid-proof".into()),
                "seed {seed:#x} round {round}"
            );
        }
        // PostgreSQL's default: 4096 iterations, 16-byte salt
        let server = TinyServer::new(b"s3cret", (0u8..16).collect(), 4096);
        let mut c = ScramClient::new(b"s3cret", &[42u8; 18]);
        assert_eq!(server.exchange(&mut c, "+/abcdefghijklmnopqrstuv"), Ok(()));
    }

    #[test]
    fn impostor_server_is_caught() {
        // A server that does not know the password (it has StoredKey, e.g. a
        // leaked verifier, but the wrong ServerKey) cannot forge v=.
        let real = TinyServer::new(b"pw", vec![1, 2, 3, 4], 16);
        let impostor = TinyServer {
            server_key: [0u8; 32],
            ..TinyServer::new(b"pw", vec![1, 2, 3, 4], 16)
        };
        let mut c = ScramClient::new(b"pw", &[9u8; 18]);
        assert_eq!(real.exchange(&mut c, "X"), Ok(()));
        let mut c = ScramClient::new(b"pw", &[9u8; 18]);
        assert_eq!(
            impostor.exchange(&mut c, "X"),
            Err(ScramError::BadServerSignature.to_string())
        );
        assert!(is_done(&c));
    }
}
