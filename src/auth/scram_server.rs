//! SCRAM-SHA-256 server (RFC 5802, RFC 7677), PostgreSQL flavour: the proxy
//! authenticating a client against a stored verifier (`auth_file`).
//!
//! Owns: `ScramSecret` (PostgreSQL's stored verifier
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, parsed and
//! printed) and `ScramServer`, a three-step state machine
//! `Initial --handle_client_first--> AwaitingFinal --handle_client_final--> Done`.
//! PURE: no I/O, no clock, no randomness source (the caller passes the server
//! nonce bytes, from the rustls provider's `secure_random`, and the server
//! secret for `ScramSecret::mock`).
//!
//! PostgreSQL flavour, as its `auth-scram.c` behaves:
//! - gs2 header `n,,` or `y,,` (the client could do channel binding but
//!   thinks we cannot: true, we never offer `SCRAM-SHA-256-PLUS`); `p=` is a
//!   protocol violation; an authorization identity (`a=`) is refused;
//! - the user name in `n=` is ignored (the startup packet's user is the one
//!   authenticated; libpq sends `n=`), but it must be a well-formed saslname
//!   (`=` only as `=2C` or `=3D`, no NUL);
//! - a mandatory extension (`m=`) is refused; optional extensions after the
//!   nonce (client-first) or between the nonce and the proof (client-final)
//!   are accepted and ignored (they are part of the AuthMessage);
//! - the client-final must echo `c=biws` (for `n`) or `c=eSws` (for `y`) and
//!   exactly the combined nonce; the proof is the last attribute;
//! - an unknown user gets a mock verifier (`ScramSecret::mock`) and a
//!   *doomed* exchange that looks like a real one until the proof check
//!   fails, like PostgreSQL's `doomed` state, so a client cannot probe which
//!   users exist. A failed proof carries no `e=` message: the caller sends
//!   `FATAL 28P01` (`ScramServerError::sqlstate`).
//!
//! Invariants:
//! - the state is taken out with `mem::replace(.., State::Done)`; an error
//!   (or a call out of order) leaves the machine `Done` and every later call
//!   fails: it fails closed, like `scram::ScramClient`;
//! - the client is untrusted: each message is capped
//!   (`MAX_CLIENT_MESSAGE_LEN`) and so is the client nonce
//!   (`MAX_CLIENT_NONCE_LEN`) before any other work; the server does no
//!   PBKDF2 during an exchange (the verifier holds the derived keys);
//! - the proof is checked by recovering ClientKey = ClientProof XOR
//!   ClientSignature and comparing H(ClientKey) with StoredKey in constant
//!   time (`ct_eq`); a doomed exchange does the same work before failing.
//!
//! See `docs/security.md` (limits, fuzz targets) and `docs/architecture.md`
//! ("Authentication").

use std::fmt;
use std::mem;

use sha2::{Digest, Sha256};

use super::base64;
use super::ct_eq;
use super::scram;
use super::scram::{hmac, salted_keys};

/// The SASL mechanism this server offers (never the `-PLUS` variant).
pub const MECHANISM: &str = scram::MECHANISM;
/// Longest client-first or client-final message accepted (bytes). libpq
/// sends ~32 bytes of client-first and ~100 bytes of client-final.
pub const MAX_CLIENT_MESSAGE_LEN: usize = 1024;
/// Longest client nonce (`r=` of client-first) accepted. libpq's is 24
/// characters (18 random bytes in base64).
pub const MAX_CLIENT_NONCE_LEN: usize = 256;
/// Fewest server nonce bytes `ScramServer::new` accepts (PostgreSQL uses 18).
/// Fewer would let a recorded exchange be replayed (the client picks its own
/// nonce), so a server built with fewer fails every call.
pub const MIN_SERVER_NONCE_BYTES: usize = 18;
/// At most this many server nonce bytes are used (more adds nothing).
pub const MAX_SERVER_NONCE_BYTES: usize = 64;
/// Highest iteration count a stored verifier may have. Equal to the
/// client's cap (`scram::MAX_ITERATIONS`, 25× PostgreSQL's default 4096):
/// `Secret::verify_cleartext` runs PBKDF2 with it on the worker thread.
pub const MAX_SECRET_ITERATIONS: u32 = scram::MAX_ITERATIONS;
/// Longest salt a stored verifier may have (decoded bytes; PostgreSQL uses
/// 16). Same as the client's cap.
pub const MAX_SECRET_SALT_LEN: usize = scram::MAX_SALT_LEN;
/// Longest stored verifier text `ScramSecret::parse` looks at (a
/// PostgreSQL verifier is ~133 bytes; the caps above allow ~460).
pub const MAX_SECRET_TEXT_LEN: usize = 512;
/// Iteration count of mock verifiers (PostgreSQL's default
/// `scram_iterations`, so that unknown users look like default ones).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length of mock verifiers (PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`).
pub const MOCK_SALT_LEN: usize = 16;

const SECRET_PREFIX: &str = "SCRAM-SHA-256$";
/// `c=` values: base64("n,,") and base64("y,,").
const CBIND_N: &[u8] = b"biws";
const CBIND_Y: &[u8] = b"eSws";
/// SHA-256 output length.
const KEY_LEN: usize = 32;

// ------------------------------------------------------------------ secret

/// A stored SCRAM-SHA-256 verifier. `Debug` shows only the iteration count
/// and salt length; `Display` prints the stored form (which is sensitive:
/// with a sniffed exchange StoredKey lets an attacker log in).
#[derive(Clone)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, standard
/// base64 with padding, exactly what PostgreSQL stores in `pg_authid`.
impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SECRET_PREFIX}{}:{}${}:{}",
            self.iterations,
            base64::encode(&self.salt),
            base64::encode(&self.stored_key),
            base64::encode(&self.server_key)
        )
    }
}

impl ScramSecret {
    /// Parses PostgreSQL's stored form, strictly: the exact prefix; a decimal
    /// iteration count without sign or leading zero in
    /// 1..=`MAX_SECRET_ITERATIONS`; a salt of 1..=`MAX_SECRET_SALT_LEN`
    /// bytes; keys of exactly 32 bytes; canonical base64 (so `Display`
    /// gives back the same text). The error never contains the input.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        Self::parse_static(text).map_err(str::to_string)
    }

    /// `parse` with a static reason (for callers that keep errors `Copy`).
    pub(crate) fn parse_static(text: &str) -> Result<ScramSecret, &'static str> {
        if text.len() > MAX_SECRET_TEXT_LEN {
            return Err("SCRAM secret is longer than MAX_SECRET_TEXT_LEN");
        }
        let rest = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or("SCRAM secret does not start with SCRAM-SHA-256$")?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or("SCRAM secret has no '$' between <iterations>:<salt> and the keys")?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or("SCRAM secret has no ':' between iterations and salt")?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or("SCRAM secret has no ':' between StoredKey and ServerKey")?;

        let iterations = parse_iterations(iterations)?;
        let salt = base64::decode(salt.as_bytes())
            .map_err(|_| "SCRAM secret salt is not canonical base64")?;
        if salt.is_empty() || salt.len() > MAX_SECRET_SALT_LEN {
            return Err("SCRAM secret salt is empty or longer than MAX_SECRET_SALT_LEN");
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key, KeyName::Stored)?,
            server_key: decode_key(server_key, KeyName::Server)?,
        })
    }

    /// The verifier PostgreSQL would store for `password` with this salt and
    /// iteration count (the password bytes are used as given, see
    /// `scram`'s notes on SASLprep). The result parses back from its
    /// `Display` when the salt is 1..=`MAX_SECRET_SALT_LEN` bytes and the
    /// count is 1..=`MAX_SECRET_ITERATIONS` (a count of 0 computes as 1).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let (stored_key, server_key) = derive_keys(password, salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// A verifier for a user that does not exist, so that the exchange looks
    /// like a real one: the salt is the first `MOCK_SALT_LEN` bytes of
    /// HMAC-SHA-256(`server_secret`, `user`) (the same user always sees the
    /// same salt, different users different ones, and nobody without
    /// `server_secret` can tell it from a real salt), the iteration count is
    /// `DEFAULT_ITERATIONS`, and both keys are zero: a proof verifies only
    /// if SHA-256(ClientKey) is all zeros, which nobody can produce. Use it
    /// with `doomed = true` anyway. `server_secret` is 32 random bytes drawn
    /// once per process (or kept across restarts, so salts stay stable);
    /// use it for nothing else.
    pub fn mock(user: &[u8], server_secret: &[u8; KEY_LEN]) -> ScramSecret {
        let digest = hmac(server_secret, &[user]);
        let salt = digest.get(..MOCK_SALT_LEN).unwrap_or(&digest).to_vec();
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: [0; KEY_LEN],
            server_key: [0; KEY_LEN],
        }
    }

    /// Whether `password` derives this verifier's StoredKey (compared in
    /// constant time). Runs PBKDF2 with `iterations`: at most
    /// `MAX_SECRET_ITERATIONS` for a parsed verifier. A password containing
    /// NUL never verifies: HMAC pads its key with zeros, so PBKDF2 would take
    /// `pencil\0` for `pencil` (PostgreSQL cannot receive a NUL in a
    /// password at all).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        if password.contains(&0) {
            return false;
        }
        let (stored_key, _) = derive_keys(password, &self.salt, self.iterations);
        ct_eq(&stored_key, &self.stored_key)
    }
}

/// Decimal, no sign, no leading zero, 1..=`MAX_SECRET_ITERATIONS`.
fn parse_iterations(digits: &str) -> Result<u32, &'static str> {
    const BAD: &str = "SCRAM secret iteration count is not a decimal number without leading zeros";
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    if digits.starts_with('0') {
        return Err(if digits == "0" {
            "SCRAM secret iteration count is 0"
        } else {
            BAD
        });
    }
    digits
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_SECRET_ITERATIONS)
        .ok_or("SCRAM secret iteration count is above MAX_SECRET_ITERATIONS")
}

/// A 32-byte key in canonical base64; `what` names it in the errors.
fn decode_key(b64: &str, what: KeyName) -> Result<[u8; KEY_LEN], &'static str> {
    let (not_base64, wrong_len) = match what {
        KeyName::Stored => (
            "SCRAM secret StoredKey is not canonical base64",
            "SCRAM secret StoredKey is not 32 bytes",
        ),
        KeyName::Server => (
            "SCRAM secret ServerKey is not canonical base64",
            "SCRAM secret ServerKey is not 32 bytes",
        ),
    };
    let bytes = base64::decode(b64.as_bytes()).map_err(|_| not_base64)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| wrong_len)
}

#[derive(Clone, Copy)]
enum KeyName {
    Stored,
    Server,
}

/// (StoredKey, ServerKey) for `password` (RFC 5802 §3).
fn derive_keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let mut keys = salted_keys(password, salt, iterations);
    keys.client.fill(0);
    (keys.stored, keys.server)
}

// ------------------------------------------------------------------ server

/// Why an exchange failed. `Malformed`, `MessageTooLong` and `OutOfOrder`
/// are protocol violations (SQLSTATE 08P01); `AuthFailed` is a wrong
/// password or a doomed exchange (28P01). None carries client bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramServerError {
    /// A `handle_*` call that is not legal in the current state (including
    /// any call after an error or after success, and every call on a server
    /// built with too few nonce bytes).
    OutOfOrder { call: &'static str },
    /// A client message longer than `MAX_CLIENT_MESSAGE_LEN`.
    MessageTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A client message that breaks the SCRAM grammar or PostgreSQL's rules.
    Malformed { what: &'static str },
    /// The proof does not verify, or the exchange was doomed.
    AuthFailed,
}

impl ScramServerError {
    /// The SQLSTATE of the FATAL the caller sends: `28P01`
    /// (invalid_password) for `AuthFailed`, `08P01` (protocol_violation)
    /// for everything else.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramServerError::AuthFailed => "28P01",
            _ => "08P01",
        }
    }

    /// True for `AuthFailed` (a well-formed exchange with a wrong proof).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ScramServerError::AuthFailed)
    }
}

impl fmt::Display for ScramServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramServerError::OutOfOrder { call } => {
                write!(f, "SCRAM {call} called out of order (exchange is over)")
            }
            ScramServerError::MessageTooLong { what, len, max } => {
                write!(f, "SCRAM {what} of {len} bytes exceeds the cap of {max}")
            }
            ScramServerError::Malformed { what } => write!(f, "malformed SCRAM message: {what}"),
            ScramServerError::AuthFailed => write!(f, "SCRAM authentication failed"),
        }
    }
}

impl std::error::Error for ScramServerError {}

enum State {
    /// Legal: `handle_client_first`.
    Initial,
    /// Legal: `handle_client_final`.
    AwaitingFinal {
        /// `c=` value the client-final must carry.
        cbind: &'static [u8],
        /// The first two parts of the AuthMessage.
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        /// Client nonce followed by ours.
        nonce: Vec<u8>,
    },
    /// Succeeded, failed, or poisoned. Nothing legal.
    Done,
}

/// SCRAM-SHA-256 server state machine (see the module docs).
pub struct ScramServer {
    secret: ScramSecret,
    /// Printable (base64) server part of the nonce.
    server_nonce: Vec<u8>,
    doomed: bool,
    state: State,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "Initial",
            State::AwaitingFinal { .. } => "AwaitingFinal",
            State::Done => "Done",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `server_nonce_bytes`: ≥ `MIN_SERVER_NONCE_BYTES` random bytes from the
    /// caller (with fewer, the server starts `Done` and every call fails);
    /// at most the first `MAX_SERVER_NONCE_BYTES` are used, in base64.
    /// `doomed`: the exchange must fail after the full exchange (unknown
    /// user with a `ScramSecret::mock` verifier, or a user that may not log
    /// in); it then fails exactly as a wrong password does.
    pub fn new(secret: ScramSecret, server_nonce_bytes: &[u8], doomed: bool) -> ScramServer {
        let enough = server_nonce_bytes.len() >= MIN_SERVER_NONCE_BYTES;
        let used = server_nonce_bytes
            .get(..MAX_SERVER_NONCE_BYTES)
            .unwrap_or(server_nonce_bytes);
        ScramServer {
            secret,
            server_nonce: base64::encode(used).into_bytes(),
            doomed,
            state: if enough { State::Initial } else { State::Done },
        }
    }

    /// Any printable server nonce: for the RFC 7677 known answer.
    #[cfg(test)]
    fn with_raw_nonce(secret: ScramSecret, server_nonce: &[u8], doomed: bool) -> ScramServer {
        ScramServer {
            secret,
            server_nonce: server_nonce.to_vec(),
            doomed,
            state: State::Initial,
        }
    }

    /// The SASL mechanism name for AuthenticationSASL.
    pub fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    /// Feeds the SASLInitialResponse data (client-first:
    /// `<gs2 header><client-first-bare>`); returns the
    /// AuthenticationSASLContinue data (server-first: `r=..,s=..,i=..`).
    pub fn handle_client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramServerError> {
        if !matches!(mem::replace(&mut self.state, State::Done), State::Initial) {
            return Err(ScramServerError::OutOfOrder {
                call: "handle_client_first",
            });
        }
        check_len("client-first", data)?;
        let (cbind, bare) = parse_gs2_header(data)?;
        let client_nonce = parse_client_first_bare(bare)?;

        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(&self.server_nonce);
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(base64::encode(&self.secret.salt).as_bytes());
        server_first.extend_from_slice(b",i=");
        server_first.extend_from_slice(self.secret.iterations.to_string().as_bytes());

        self.state = State::AwaitingFinal {
            cbind,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Feeds the SASLResponse data (client-final:
    /// `c=..,r=..[,ext..],p=..`); returns the AuthenticationSASLFinal data
    /// (server-final: `v=<ServerSignature>`). After `Ok` the caller sends
    /// AuthenticationOk; after `Err` it sends a FATAL with `sqlstate()`.
    pub fn handle_client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramServerError> {
        let (cbind, client_first_bare, server_first, nonce) =
            match mem::replace(&mut self.state, State::Done) {
                State::AwaitingFinal {
                    cbind,
                    client_first_bare,
                    server_first,
                    nonce,
                } => (cbind, client_first_bare, server_first, nonce),
                _ => {
                    return Err(ScramServerError::OutOfOrder {
                        call: "handle_client_final",
                    });
                }
            };
        check_len("client-final", data)?;
        let (without_proof, proof) = parse_client_final(data, cbind, &nonce)?;

        let auth_message: [&[u8]; 5] =
            [&client_first_bare, b",", &server_first, b",", without_proof];
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let computed: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        // `&`, not `&&`: a doomed exchange does the same work.
        let ok = ct_eq(&computed, &self.secret.stored_key) & !self.doomed;
        if !ok {
            return Err(ScramServerError::AuthFailed);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let mut out = b"v=".to_vec();
        out.extend_from_slice(base64::encode(&server_signature).as_bytes());
        Ok(out)
    }
}

fn malformed(what: &'static str) -> ScramServerError {
    ScramServerError::Malformed { what }
}

fn check_len(what: &'static str, msg: &[u8]) -> Result<(), ScramServerError> {
    if msg.len() > MAX_CLIENT_MESSAGE_LEN {
        return Err(ScramServerError::MessageTooLong {
            what,
            len: msg.len(),
            max: MAX_CLIENT_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// `n,,` or `y,,`; returns the `c=` value the client-final must carry and
/// the client-first-bare.
fn parse_gs2_header(data: &[u8]) -> Result<(&'static [u8], &[u8]), ScramServerError> {
    let (cbind, rest) = match data {
        [b'n', b',', rest @ ..] => (CBIND_N, rest),
        [b'y', b',', rest @ ..] => (CBIND_Y, rest),
        [b'p', b'=', ..] => {
            return Err(malformed(
                "client-first selects channel binding (p=), which is not offered",
            ));
        }
        _ => return Err(malformed("client-first has no gs2 header n, or y,")),
    };
    match rest {
        [b',', bare @ ..] => Ok((cbind, bare)),
        [b'a', b'=', ..] => Err(malformed(
            "client-first has an authorization identity (a=), which is not supported",
        )),
        _ => Err(malformed("client-first gs2 header does not end with ,,")),
    }
}

/// `n=<saslname>,r=<nonce>[,<ext>..]`; returns the client nonce.
fn parse_client_first_bare(bare: &[u8]) -> Result<&[u8], ScramServerError> {
    if bare.starts_with(b"m=") {
        return Err(malformed(
            "client-first asks for a mandatory extension (m=), which is not supported",
        ));
    }
    let mut parts = bare.split(|&b| b == b',');
    let user = parts
        .next()
        .and_then(|p| p.strip_prefix(b"n="))
        .ok_or(malformed("client-first: missing n= (user name)"))?;
    if !is_saslname(user) {
        return Err(malformed("client-first: n= is not a well-formed saslname"));
    }
    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix(b"r="))
        .ok_or(malformed("client-first: missing r= (nonce) after n="))?;
    if nonce.len() > MAX_CLIENT_NONCE_LEN {
        return Err(malformed(
            "client-first: nonce longer than MAX_CLIENT_NONCE_LEN",
        ));
    }
    if nonce.is_empty() || !nonce.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("client-first: nonce is empty or not printable"));
    }
    for ext in parts {
        if !is_extension(ext) {
            return Err(malformed(
                "client-first: attribute after r= is not <letter>=<value>",
            ));
        }
    }
    Ok(nonce)
}

/// `c=<cbind>,r=<nonce>[,<ext>..],p=<proof>`; returns
/// client-final-without-proof and the decoded proof.
fn parse_client_final<'m>(
    data: &'m [u8],
    cbind: &[u8],
    nonce: &[u8],
) -> Result<(&'m [u8], [u8; KEY_LEN]), ScramServerError> {
    let comma = data
        .iter()
        .rposition(|&b| b == b',')
        .ok_or(malformed("client-final: missing p= (proof)"))?;
    let without_proof = data.get(..comma).unwrap_or_default();
    let proof = data
        .get(comma.saturating_add(1)..)
        .and_then(|p| p.strip_prefix(b"p="))
        .ok_or(malformed(
            "client-final: the last attribute is not p= (proof)",
        ))?;

    let mut parts = without_proof.split(|&b| b == b',');
    let c = parts
        .next()
        .and_then(|p| p.strip_prefix(b"c="))
        .ok_or(malformed("client-final: missing c= (channel binding)"))?;
    if c != cbind {
        return Err(malformed(
            "client-final: c= does not match the gs2 header of client-first",
        ));
    }
    let r = parts
        .next()
        .and_then(|p| p.strip_prefix(b"r="))
        .ok_or(malformed("client-final: missing r= (nonce) after c="))?;
    if r != nonce {
        return Err(malformed("client-final: nonce does not match the exchange"));
    }
    for ext in parts {
        if !is_extension(ext) || ext.starts_with(b"p=") {
            return Err(malformed(
                "client-final: attribute between r= and p= is not <letter>=<value>",
            ));
        }
    }
    let proof =
        base64::decode(proof).map_err(|_| malformed("client-final: proof is not base64"))?;
    let proof = <[u8; KEY_LEN]>::try_from(proof.as_slice())
        .map_err(|_| malformed("client-final: proof is not 32 bytes"))?;
    Ok((without_proof, proof))
}

/// RFC 5802 saslname, possibly empty: no NUL, no `,`, and `=` only as `=2C`
/// or `=3D`.
fn is_saslname(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            0 | b',' => return false,
            b'=' => match tail {
                [b'2', b'C', after @ ..] | [b'3', b'D', after @ ..] => rest = after,
                _ => return false,
            },
            _ => rest = tail,
        }
    }
    true
}

/// An optional extension: `<ASCII letter>=<value>` with no NUL (`,` cannot
/// occur, the caller split on it).
fn is_extension(attr: &[u8]) -> bool {
    match attr {
        [k, b'=', value @ ..] => k.is_ascii_alphabetic() && !value.contains(&0),
        _ => false,
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
    use crate::auth::scram::{ScramClient, ScramError};
    use crate::testing::XorShift;

    // RFC 7677 §3 (user "user", password "pencil")
    const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &[u8] = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT_B64: &[u8] = b"W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_FIRST: &[u8] = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// Verifiers written by PostgreSQL 15 (`CREATE ROLE .. PASSWORD`,
    /// `password_encryption = 'scram-sha-256'`, read from `pg_authid`).
    const PG_ALICE_PENCIL: &str = "SCRAM-SHA-256$4096:x0ZvCJda/qaokXtEHkZreQ==$\
        NpJ141AYjZj25j+xSEbCRRL1xW6NsscWqrThMTi3IiI=:/Jqsh/+e2ugyxI/oq5ruHxnav8E8cQqLI5vrXubY6Yk=";
    const PG_BOB_STAPLE: &str = "SCRAM-SHA-256$4096:XkOrw2Wfymhf2F3ogvwvgQ==$\
        sZ/WorFjI6feasTyPGRUjC19Zvghmk4VCGuvi8QOTUw=:he34ewri+8BpVsDFdGOaxnVidDhzorBfbnTwJFpxCQ0=";

    fn rfc_secret() -> ScramSecret {
        ScramSecret::from_password(b"pencil", &base64::decode(RFC_SALT_B64).unwrap(), 4096)
    }

    fn is_done(s: &ScramServer) -> bool {
        matches!(s.state, State::Done)
    }

    /// After an error nothing is legal any more.
    fn assert_failed_closed(s: &mut ScramServer) {
        assert!(is_done(s));
        assert_eq!(
            s.handle_client_first(RFC_CLIENT_FIRST),
            Err(ScramServerError::OutOfOrder {
                call: "handle_client_first"
            })
        );
        assert_eq!(
            s.handle_client_final(RFC_CLIENT_FINAL),
            Err(ScramServerError::OutOfOrder {
                call: "handle_client_final"
            })
        );
    }

    /// The client proof for an exchange, computed here from the password
    /// (independently of the server code).
    fn proof_for(password: &[u8], salt: &[u8], iterations: u32, auth_message: &[u8]) -> Vec<u8> {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key = Sha256::digest(client_key);
        let sig = hmac(&stored_key, &[auth_message]);
        client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect()
    }

    /// Runs ScramClient against a ScramServer; returns the server's verdict
    /// and, on success, the client's verdict on the server signature.
    fn exchange(
        client: &mut ScramClient,
        server: &mut ScramServer,
    ) -> Result<Result<(), ScramError>, ScramServerError> {
        let server_first = server.handle_client_first(&client.client_first())?;
        let client_final = client.handle_server_first(&server_first).unwrap();
        let server_final = server.handle_client_final(&client_final)?;
        assert!(is_done(server));
        Ok(client.handle_server_final(&server_final))
    }

    #[test]
    fn rfc7677_known_answer() {
        let mut s = ScramServer::with_raw_nonce(rfc_secret(), RFC_SERVER_NONCE, false);
        assert_eq!(s.mechanism(), "SCRAM-SHA-256");
        assert_eq!(format!("{s:?}"), "ScramServer { state: \"Initial\", .. }");
        let first = s.handle_client_first(RFC_CLIENT_FIRST).unwrap();
        assert_eq!(first, RFC_SERVER_FIRST);
        let fin = s.handle_client_final(RFC_CLIENT_FINAL).unwrap();
        assert_eq!(fin, RFC_SERVER_FINAL);
        // over: nothing is legal any more, not even a replay of the final
        assert_failed_closed(&mut s);

        // the same exchange with a wrong password is an authentication failure
        let wrong =
            ScramSecret::from_password(b"pencil2", &base64::decode(RFC_SALT_B64).unwrap(), 4096);
        let mut s = ScramServer::with_raw_nonce(wrong, RFC_SERVER_NONCE, false);
        s.handle_client_first(RFC_CLIENT_FIRST).unwrap();
        assert_eq!(
            s.handle_client_final(RFC_CLIENT_FINAL),
            Err(ScramServerError::AuthFailed)
        );
        assert_failed_closed(&mut s);
        // and doomed with the right password fails the same way
        let mut s = ScramServer::with_raw_nonce(rfc_secret(), RFC_SERVER_NONCE, true);
        assert_eq!(
            s.handle_client_first(RFC_CLIENT_FIRST).unwrap(),
            RFC_SERVER_FIRST
        );
        assert_eq!(
            s.handle_client_final(RFC_CLIENT_FINAL),
            Err(ScramServerError::AuthFailed)
        );
        assert_failed_closed(&mut s);
    }

    #[test]
    fn round_trip_with_scram_client() {
        let seed = 0x5c4a_5e4e_0bad_f00du64;
        let mut rng = XorShift(seed);
        for round in 0..6 {
            let pw_len = rng.below_usize(40);
            let password: Vec<u8> = (0..pw_len).map(|_| rng.next() as u8).collect();
            let salt: Vec<u8> = (0..1 + rng.below_usize(32))
                .map(|_| rng.next() as u8)
                .collect();
            let iterations = 1 + rng.below(512) as u32;
            let cnonce: Vec<u8> = (0..18 + rng.below_usize(20))
                .map(|_| rng.next() as u8)
                .collect();
            let snonce: Vec<u8> = (0..18 + rng.below_usize(60))
                .map(|_| rng.next() as u8)
                .collect();
            let secret = ScramSecret::from_password(&password, &salt, iterations);
            let ctx = format!("seed {seed:#x} round {round}");

            // right password: the server accepts, the client verifies v=
            let mut c = ScramClient::new(&password, &cnonce);
            let mut s = ScramServer::new(secret.clone(), &snonce, false);
            assert_eq!(exchange(&mut c, &mut s), Ok(Ok(())), "{ctx}");

            // wrong password: AuthFailed, machine done
            let mut wrong = password.clone();
            wrong.push(b'x');
            let mut c = ScramClient::new(&wrong, &cnonce);
            let mut s = ScramServer::new(secret.clone(), &snonce, false);
            assert_eq!(
                exchange(&mut c, &mut s),
                Err(ScramServerError::AuthFailed),
                "{ctx}"
            );
            assert_failed_closed(&mut s);

            // doomed, right password: identical server-first, identical failure
            let mut c1 = ScramClient::new(&password, &cnonce);
            let mut c2 = ScramClient::new(&password, &cnonce);
            let mut real = ScramServer::new(secret.clone(), &snonce, false);
            let mut doomed = ScramServer::new(secret.clone(), &snonce, true);
            let f1 = real.handle_client_first(&c1.client_first()).unwrap();
            let f2 = doomed.handle_client_first(&c2.client_first()).unwrap();
            assert_eq!(f1, f2, "{ctx}");
            let cf1 = c1.handle_server_first(&f1).unwrap();
            let cf2 = c2.handle_server_first(&f2).unwrap();
            assert_eq!(cf1, cf2);
            assert!(real.handle_client_final(&cf1).is_ok(), "{ctx}");
            assert_eq!(
                doomed.handle_client_final(&cf2),
                Err(ScramServerError::AuthFailed),
                "{ctx}"
            );
            assert_failed_closed(&mut doomed);
        }
    }

    #[test]
    fn server_first_shape() {
        let secret = ScramSecret::from_password(b"pw", &[1, 2, 3], 4096);
        let mut s = ScramServer::new(secret, &[0u8; 18], false);
        let out = s
            .handle_client_first(b"n,,n=,r=abcdefghijklmnopqrstuvwx")
            .unwrap();
        assert_eq!(
            out,
            b"r=abcdefghijklmnopqrstuvwxAAAAAAAAAAAAAAAAAAAAAAAA,s=AQID,i=4096"
        );
        // server nonce bytes beyond the cap are ignored
        let secret = ScramSecret::from_password(b"pw", &[1], 1);
        let mut s = ScramServer::new(secret, &[0xffu8; 200], false);
        let out = s.handle_client_first(b"y,,n=,r=x").unwrap();
        let want = format!(
            "r=x{},s=AQ==,i=1",
            base64::encode(&[0xff; MAX_SERVER_NONCE_BYTES])
        );
        assert_eq!(out, want.as_bytes());
        assert_eq!(
            format!("{s:?}"),
            "ScramServer { state: \"AwaitingFinal\", .. }"
        );
    }

    #[test]
    fn too_few_nonce_bytes_fail_closed() {
        for n in [0, 1, MIN_SERVER_NONCE_BYTES - 1] {
            let mut s = ScramServer::new(rfc_secret(), &vec![7u8; n], false);
            assert_failed_closed(&mut s);
        }
        let mut s = ScramServer::new(rfc_secret(), &[7u8; MIN_SERVER_NONCE_BYTES], false);
        assert!(s.handle_client_first(RFC_CLIENT_FIRST).is_ok());
    }

    /// The exchange an independent client would run with `gs2` and the
    /// given client-first-bare / client-final-without-proof; `None` asks
    /// for the RFC nonce echo. Returns the server's verdict on the final.
    fn run_manual(
        gs2: &[u8],
        bare: &[u8],
        final_without_proof: Option<&[u8]>,
    ) -> Result<Vec<u8>, ScramServerError> {
        let salt = [9u8; 16];
        let secret = ScramSecret::from_password(b"pw", &salt, 16);
        let mut s = ScramServer::with_raw_nonce(secret, b"SRV", false);
        let server_first = s.handle_client_first(&[gs2, bare].concat())?;
        let nonce = std::str::from_utf8(&server_first[2..])
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let without_proof = match final_without_proof {
            Some(w) => w.to_vec(),
            None => {
                let c = if gs2[0] == b'y' { "eSws" } else { "biws" };
                format!("c={c},r={nonce}").into_bytes()
            }
        };
        let auth_message = [bare, b",", &server_first, b",", &without_proof].concat();
        let proof = proof_for(b"pw", &salt, 16, &auth_message);
        let mut fin = without_proof;
        fin.extend_from_slice(b",p=");
        fin.extend_from_slice(base64::encode(&proof).as_bytes());
        s.handle_client_final(&fin)
    }

    #[test]
    fn accepted_variants() {
        // y flag with c=eSws; user names (ignored, well-formed); extensions
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);
        let ok: &[Case] = &[
            (b"n,,", b"n=,r=abc", None),
            (b"y,,", b"n=,r=abc", None),
            (b"n,,", b"n=user,r=abc", None),
            (b"n,,", b"n=*,r=abc", None),
            (b"n,,", b"n=a=2Cb=3Dc,r=abc", None),
            (b"n,,", "n=\u{e9}l\u{e8}ve,r=abc".as_bytes(), None),
            (
                b"n,,",
                b"n=,r=!\"#$%&'()*+-./09:;<=>?@AZ[\\]^_`az{|}~",
                None,
            ),
            (b"n,,", b"n=,r=abc,x=ext,Y=", None),
            (b"n,,", b"n=,r=abc", Some(b"c=biws,r=abcSRV,x=1,z=")),
        ];
        for (gs2, bare, fwp) in ok {
            let r = run_manual(gs2, bare, *fwp);
            assert!(
                r.as_ref().is_ok_and(|v| v.starts_with(b"v=")),
                "{:?} {:?}: {r:?}",
                String::from_utf8_lossy(gs2),
                String::from_utf8_lossy(bare)
            );
        }
        // nonce at the cap
        let nonce = vec![b'N'; MAX_CLIENT_NONCE_LEN];
        let bare = [b"n=,r=".as_slice(), &nonce].concat();
        assert!(run_manual(b"n,,", &bare, None).is_ok());
    }

    #[test]
    fn rejects_bad_client_first() {
        use ScramServerError::*;
        let mal = |what| Malformed { what };
        let long_nonce = [b"n,,n=,r=".as_slice(), &[b'N'; MAX_CLIENT_NONCE_LEN + 1]].concat();
        let too_long = [b"n,,n=,r=".as_slice(), &[b'N'; MAX_CLIENT_MESSAGE_LEN]].concat();
        let cases: Vec<(&[u8], ScramServerError)> = vec![
            (b"", mal("client-first has no gs2 header n, or y,")),
            (b"n", mal("client-first has no gs2 header n, or y,")),
            (
                b"x,,n=,r=abc",
                mal("client-first has no gs2 header n, or y,"),
            ),
            (
                b"N,,n=,r=abc",
                mal("client-first has no gs2 header n, or y,"),
            ),
            (
                b"p=tls-server-end-point,,n=,r=abc",
                mal("client-first selects channel binding (p=), which is not offered"),
            ),
            (
                b"n,a=admin,n=,r=abc",
                mal("client-first has an authorization identity (a=), which is not supported"),
            ),
            (
                b"n,x,n=,r=abc",
                mal("client-first gs2 header does not end with ,,"),
            ),
            (b"n,", mal("client-first gs2 header does not end with ,,")),
            (
                b"n,,m=ext,n=,r=abc",
                mal("client-first asks for a mandatory extension (m=), which is not supported"),
            ),
            (b"n,,", mal("client-first: missing n= (user name)")),
            (b"n,,r=abc", mal("client-first: missing n= (user name)")),
            (b"n,,N=,r=abc", mal("client-first: missing n= (user name)")),
            (
                b"n,,n=a=b,r=abc",
                mal("client-first: n= is not a well-formed saslname"),
            ),
            (
                b"n,,n=a=2c,r=abc",
                mal("client-first: n= is not a well-formed saslname"),
            ),
            (
                b"n,,n==,r=abc",
                mal("client-first: n= is not a well-formed saslname"),
            ),
            (
                b"n,,n=a\0b,r=abc",
                mal("client-first: n= is not a well-formed saslname"),
            ),
            (b"n,,n=", mal("client-first: missing r= (nonce) after n=")),
            (
                b"n,,n=,s=abc",
                mal("client-first: missing r= (nonce) after n="),
            ),
            (
                b"n,,n=,,r=abc",
                mal("client-first: missing r= (nonce) after n="),
            ),
            (
                b"n,,n=,r=",
                mal("client-first: nonce is empty or not printable"),
            ),
            (
                b"n,,n=,r=ab c",
                mal("client-first: nonce is empty or not printable"),
            ),
            (
                b"n,,n=,r=ab\x7f",
                mal("client-first: nonce is empty or not printable"),
            ),
            (
                "n,,n=,r=ab\u{e9}".as_bytes(),
                mal("client-first: nonce is empty or not printable"),
            ),
            (
                &long_nonce,
                mal("client-first: nonce longer than MAX_CLIENT_NONCE_LEN"),
            ),
            (
                b"n,,n=,r=abc,",
                mal("client-first: attribute after r= is not <letter>=<value>"),
            ),
            (
                b"n,,n=,r=abc,1=x",
                mal("client-first: attribute after r= is not <letter>=<value>"),
            ),
            (
                b"n,,n=,r=abc,xx=1",
                mal("client-first: attribute after r= is not <letter>=<value>"),
            ),
            (
                b"n,,n=,r=abc,x=\0",
                mal("client-first: attribute after r= is not <letter>=<value>"),
            ),
            (
                &too_long,
                MessageTooLong {
                    what: "client-first",
                    len: MAX_CLIENT_MESSAGE_LEN + 8,
                    max: MAX_CLIENT_MESSAGE_LEN,
                },
            ),
        ];
        for (msg, want) in &cases {
            let mut s = ScramServer::new(rfc_secret(), &[1u8; 18], false);
            assert_eq!(
                s.handle_client_first(msg).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            assert_eq!(want.sqlstate(), "08P01");
            assert!(!want.is_auth_failure());
            assert!(!want.to_string().is_empty());
            assert_failed_closed(&mut s);
        }
    }

    #[test]
    fn rejects_bad_client_final() {
        use ScramServerError::*;
        let mal = |what| Malformed { what };
        // RFC exchange: nonce rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0
        let n = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let p = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases: Vec<(String, ScramServerError)> = vec![
            (String::new(), mal("client-final: missing p= (proof)")),
            (
                "c=biws".to_string(),
                mal("client-final: missing p= (proof)"),
            ),
            (
                format!("c=biws,r={n}"),
                mal("client-final: the last attribute is not p= (proof)"),
            ),
            (
                format!("c=biws,r={n},p={p},x=1"),
                mal("client-final: the last attribute is not p= (proof)"),
            ),
            (format!("p={p}"), mal("client-final: missing p= (proof)")),
            (
                format!(",p={p}"),
                mal("client-final: missing c= (channel binding)"),
            ),
            (
                format!("r={n},p={p}"),
                mal("client-final: missing c= (channel binding)"),
            ),
            (
                format!("c=eSws,r={n},p={p}"),
                mal("client-final: c= does not match the gs2 header of client-first"),
            ),
            (
                format!("c=biws=,r={n},p={p}"),
                mal("client-final: c= does not match the gs2 header of client-first"),
            ),
            (
                format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={n},p={p}"),
                mal("client-final: c= does not match the gs2 header of client-first"),
            ),
            (
                format!("c=biws,p={p}"),
                mal("client-final: missing r= (nonce) after c="),
            ),
            (
                format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={p}"),
                mal("client-final: nonce does not match the exchange"),
            ),
            (
                format!("c=biws,r={n}x,p={p}"),
                mal("client-final: nonce does not match the exchange"),
            ),
            (
                format!("c=biws,r={n},p={p},p={p}"),
                mal("client-final: attribute between r= and p= is not <letter>=<value>"),
            ),
            (
                format!("c=biws,r={n},1=2,p={p}"),
                mal("client-final: attribute between r= and p= is not <letter>=<value>"),
            ),
            (
                format!("c=biws,r={n},,p={p}"),
                mal("client-final: attribute between r= and p= is not <letter>=<value>"),
            ),
            (
                format!("c=biws,r={n},p="),
                mal("client-final: proof is not 32 bytes"),
            ),
            (
                format!("c=biws,r={n},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ"),
                mal("client-final: proof is not base64"),
            ),
            (
                format!("c=biws,r={n},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR="),
                mal("client-final: proof is not base64"),
            ),
            (
                format!("c=biws,r={n},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQA"),
                mal("client-final: proof is not 32 bytes"),
            ),
            // well-formed, wrong proof
            (
                format!("c=biws,r={n},p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
                AuthFailed,
            ),
            (
                format!("c=biws,r={n},p={}", base64::encode(&[0u8; 32])),
                AuthFailed,
            ),
            (
                format!("c=biws,r={n},p={p}{}", "A".repeat(MAX_CLIENT_MESSAGE_LEN)),
                MessageTooLong {
                    what: "client-final",
                    len: RFC_CLIENT_FINAL.len() + MAX_CLIENT_MESSAGE_LEN,
                    max: MAX_CLIENT_MESSAGE_LEN,
                },
            ),
        ];
        for (msg, want) in &cases {
            let mut s = ScramServer::with_raw_nonce(rfc_secret(), RFC_SERVER_NONCE, false);
            s.handle_client_first(RFC_CLIENT_FIRST).unwrap();
            assert_eq!(
                s.handle_client_final(msg.as_bytes()).as_ref(),
                Err(want),
                "{msg}"
            );
            assert_eq!(
                want.sqlstate(),
                if want.is_auth_failure() {
                    "28P01"
                } else {
                    "08P01"
                }
            );
            assert!(!want.to_string().is_empty());
            assert_failed_closed(&mut s);
        }
        // a y-flag exchange must echo eSws, not biws
        let mut s = ScramServer::with_raw_nonce(rfc_secret(), RFC_SERVER_NONCE, false);
        s.handle_client_first(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(
            s.handle_client_final(RFC_CLIENT_FINAL),
            Err(mal(
                "client-final: c= does not match the gs2 header of client-first"
            ))
        );
    }

    #[test]
    fn calls_out_of_order() {
        let mut s = ScramServer::new(rfc_secret(), &[1u8; 18], false);
        assert_eq!(
            s.handle_client_final(RFC_CLIENT_FINAL),
            Err(ScramServerError::OutOfOrder {
                call: "handle_client_final"
            })
        );
        // poisoned: the legal first step is refused too
        assert_failed_closed(&mut s);

        let mut s = ScramServer::new(rfc_secret(), &[1u8; 18], false);
        s.handle_client_first(RFC_CLIENT_FIRST).unwrap();
        assert_eq!(
            s.handle_client_first(RFC_CLIENT_FIRST),
            Err(ScramServerError::OutOfOrder {
                call: "handle_client_first"
            })
        );
        assert_failed_closed(&mut s);
        assert_eq!(format!("{s:?}"), "ScramServer { state: \"Done\", .. }");
        assert_eq!(
            ScramServerError::OutOfOrder { call: "x" }.sqlstate(),
            "08P01"
        );
    }

    #[test]
    fn postgres_verifiers_round_trip() {
        for text in [PG_ALICE_PENCIL, PG_BOB_STAPLE] {
            let s = ScramSecret::parse(text).unwrap();
            assert_eq!(s.to_string(), text);
            assert_eq!(s.iterations, 4096);
            assert_eq!(s.salt.len(), 16);
        }
        // from_password reproduces PostgreSQL's verifiers
        let alice = ScramSecret::parse(PG_ALICE_PENCIL).unwrap();
        let again = ScramSecret::from_password(b"pencil", &alice.salt, 4096);
        assert_eq!(again.to_string(), PG_ALICE_PENCIL);
        let bob = ScramSecret::parse(PG_BOB_STAPLE).unwrap();
        let again = ScramSecret::from_password(b"correct horse battery staple", &bob.salt, 4096);
        assert_eq!(again.to_string(), PG_BOB_STAPLE);
        assert!(alice.verify_password(b"pencil"));
        assert!(!alice.verify_password(b"pencil "));
        assert!(!alice.verify_password(b"pencil\0"));
        assert!(!alice.verify_password(b""));
        // Debug shows no key material
        let dbg = format!("{alice:?}");
        assert_eq!(dbg, "ScramSecret { iterations: 4096, salt_len: 16, .. }");

        // a ScramClient logs in against PostgreSQL's verifier
        let mut c = ScramClient::new(b"pencil", &[3u8; 18]);
        let mut s = ScramServer::new(alice.clone(), &[4u8; 18], false);
        assert_eq!(exchange(&mut c, &mut s), Ok(Ok(())));
        let mut c = ScramClient::new(b"Pencil", &[3u8; 18]);
        let mut s = ScramServer::new(alice, &[4u8; 18], false);
        assert_eq!(exchange(&mut c, &mut s), Err(ScramServerError::AuthFailed));
    }

    #[test]
    fn parse_rejects() {
        let salt = "x0ZvCJda/qaokXtEHkZreQ==";
        let sk = "NpJ141AYjZj25j+xSEbCRRL1xW6NsscWqrThMTi3IiI=";
        let vk = "/Jqsh/+e2ugyxI/oq5ruHxnav8E8cQqLI5vrXubY6Yk=";
        let big_salt = base64::encode(&[1u8; MAX_SECRET_SALT_LEN + 1]);
        let short_key = base64::encode(&[1u8; 31]);
        let long_key = base64::encode(&[1u8; 33]);
        let cases: Vec<(String, &str)> = vec![
            (
                String::new(),
                "SCRAM secret does not start with SCRAM-SHA-256$",
            ),
            (
                format!("scram-sha-256$4096:{salt}${sk}:{vk}"),
                "SCRAM secret does not start with SCRAM-SHA-256$",
            ),
            (
                format!("SCRAM-SHA-1$4096:{salt}${sk}:{vk}"),
                "SCRAM secret does not start with SCRAM-SHA-256$",
            ),
            (
                format!(" SCRAM-SHA-256$4096:{salt}${sk}:{vk}"),
                "SCRAM secret does not start with SCRAM-SHA-256$",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}:{sk}:{vk}"),
                "SCRAM secret has no '$' between <iterations>:<salt> and the keys",
            ),
            (
                format!("SCRAM-SHA-256$4096{salt}${sk}:{vk}"),
                "SCRAM secret has no ':' between iterations and salt",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${sk}{vk}"),
                "SCRAM secret has no ':' between StoredKey and ServerKey",
            ),
            (
                format!("SCRAM-SHA-256$:{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is not a decimal number without leading zeros",
            ),
            (
                format!("SCRAM-SHA-256$+4096:{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is not a decimal number without leading zeros",
            ),
            (
                format!("SCRAM-SHA-256$04096:{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is not a decimal number without leading zeros",
            ),
            (
                format!("SCRAM-SHA-256$4096 :{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is not a decimal number without leading zeros",
            ),
            (
                format!("SCRAM-SHA-256$0:{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is 0",
            ),
            (
                format!(
                    "SCRAM-SHA-256${}:{salt}${sk}:{vk}",
                    MAX_SECRET_ITERATIONS + 1
                ),
                "SCRAM secret iteration count is above MAX_SECRET_ITERATIONS",
            ),
            (
                format!("SCRAM-SHA-256$99999999999999999999:{salt}${sk}:{vk}"),
                "SCRAM secret iteration count is above MAX_SECRET_ITERATIONS",
            ),
            (
                format!("SCRAM-SHA-256$4096:${sk}:{vk}"),
                "SCRAM secret salt is empty or longer than MAX_SECRET_SALT_LEN",
            ),
            (
                format!("SCRAM-SHA-256$4096:{big_salt}${sk}:{vk}"),
                "SCRAM secret salt is empty or longer than MAX_SECRET_SALT_LEN",
            ),
            (
                format!("SCRAM-SHA-256$4096:x0ZvCJda/qaokXtEHkZreQ${sk}:{vk}"),
                "SCRAM secret salt is not canonical base64",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${sk}:{vk}\n"),
                "SCRAM secret ServerKey is not canonical base64",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${sk}:{vk}:"),
                "SCRAM secret ServerKey is not canonical base64",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${sk}x:{vk}"),
                "SCRAM secret StoredKey is not canonical base64",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${short_key}:{vk}"),
                "SCRAM secret StoredKey is not 32 bytes",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}${sk}:{long_key}"),
                "SCRAM secret ServerKey is not 32 bytes",
            ),
            (
                format!("SCRAM-SHA-256$4096:{salt}$$:{vk}"),
                "SCRAM secret StoredKey is not canonical base64",
            ),
            (
                format!(
                    "SCRAM-SHA-256$4096:{salt}${sk}:{}",
                    "A".repeat(MAX_SECRET_TEXT_LEN)
                ),
                "SCRAM secret is longer than MAX_SECRET_TEXT_LEN",
            ),
        ];
        for (text, want) in &cases {
            let got = ScramSecret::parse(text);
            assert_eq!(
                got.as_ref().map_err(String::as_str).err(),
                Some(*want),
                "{text}"
            );
            // the error never echoes the secret
            assert!(!want.contains(sk) && !want.contains(salt));
        }
        // the caps themselves are accepted
        let max_salt = base64::encode(&[1u8; MAX_SECRET_SALT_LEN]);
        let text = format!("SCRAM-SHA-256${MAX_SECRET_ITERATIONS}:{max_salt}${sk}:{vk}");
        assert!(text.len() <= MAX_SECRET_TEXT_LEN);
        assert_eq!(ScramSecret::parse(&text).unwrap().to_string(), text);
        let text = format!("SCRAM-SHA-256$1:AA==${sk}:{vk}");
        assert_eq!(ScramSecret::parse(&text).unwrap().to_string(), text);
    }

    #[test]
    fn mock_secret() {
        let key = [0x42u8; 32];
        let a = ScramSecret::mock(b"nobody", &key);
        let b = ScramSecret::mock(b"nobody", &key);
        assert_eq!(a.to_string(), b.to_string(), "repeated probes see one salt");
        assert_eq!(a.salt.len(), MOCK_SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_ne!(a.salt, ScramSecret::mock(b"nobody2", &key).salt);
        assert_ne!(a.salt, ScramSecret::mock(b"nobody", &[0x43u8; 32]).salt);
        assert_eq!(a.salt, hmac(&key, &[b"nobody"])[..16].to_vec());
        // it has the stored form of a real verifier
        assert_eq!(
            ScramSecret::parse(&a.to_string()).unwrap().to_string(),
            a.to_string()
        );
        // no password verifies, doomed or not
        for pw in [&b""[..], b"nobody", b"pencil"] {
            assert!(!a.verify_password(pw));
            for doomed in [false, true] {
                let mut c = ScramClient::new(pw, &[5u8; 18]);
                let mut s = ScramServer::new(a.clone(), &[6u8; 18], doomed);
                assert_eq!(exchange(&mut c, &mut s), Err(ScramServerError::AuthFailed));
                assert_failed_closed(&mut s);
            }
        }
        // a mock exchange looks like a real one until the proof fails
        let real = ScramSecret::from_password(b"pw", &a.salt, DEFAULT_ITERATIONS);
        let mut s1 = ScramServer::new(real, &[6u8; 18], false);
        let mut s2 = ScramServer::new(a, &[6u8; 18], true);
        let cf = ScramClient::new(b"pw", &[5u8; 18]).client_first();
        assert_eq!(
            s1.handle_client_first(&cf).unwrap(),
            s2.handle_client_first(&cf).unwrap()
        );
    }
}
