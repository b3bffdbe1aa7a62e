//! How the proxy authenticates pooled clients (`pool_mode = session`).
//!
//! Secrets: an `auth_file` entry for the full client user name
//! (`app_user.acme`), else one for the login role (`app_user`), else
//! `pool_password`. Plain-text secrets get a SCRAM verifier at load (random
//! salt, 4096 iterations), so a login costs the proxy a few HMACs, never a
//! PBKDF2 run: failed logins cost the attacker time, not us.
//!
//! `scram-sha-256` (default): AuthenticationSASL offering only
//! `SCRAM-SHA-256` (no `-PLUS`: channel binding cannot be offered by a
//! TLS-terminating proxy honestly). An unknown user goes through the same
//! exchange with a mock verifier and fails at the proof, like PostgreSQL,
//! so probing does not reveal which names exist.
//!
//! `cleartext`: AuthenticationCleartextPassword, only over TLS or from a
//! loopback address unless `pool_allow_insecure_cleartext`; the password is
//! checked against any secret kind (plain, md5, SCRAM) in constant time.
//!
//! Failures are `28P01 password authentication failed for user "…"` (the
//! same text whatever went wrong, as PostgreSQL); protocol errors are 08P01.

use std::collections::HashMap;

use crate::auth::scram_server::{ScramSecret, ScramServer, ScramServerError};
use crate::auth::userlist::{Secret, UserList};
use crate::conn::server::LinkFailure;
use crate::protocol::{ProtoError, encode, frontend};

/// The SASL mechanism offered to clients.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations of verifiers made from plain-text secrets (PostgreSQL's default).
pub const PLAIN_ITERATIONS: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ScramSha256,
    Cleartext,
}

#[derive(Debug)]
struct Stored {
    /// The entry's name (an md5 secret covers it).
    name: String,
    /// For SCRAM (None: an md5 secret, usable with cleartext only).
    scram: Option<ScramSecret>,
    /// For cleartext checks.
    secret: Secret,
}

/// Every secret pooled clients may use, prepared at start.
pub struct AuthDb {
    method: Method,
    allow_insecure_cleartext: bool,
    entries: HashMap<String, Stored>,
    pool_password: Option<Stored>,
    /// Per-process key behind mock verifiers for unknown users.
    mock_key: [u8; 32],
}

fn stored(name: &str, secret: Secret, salt: &[u8]) -> Stored {
    let scram = match &secret {
        Secret::Plain(p) => Some(ScramSecret::from_password(
            p.as_bytes(),
            salt,
            PLAIN_ITERATIONS,
        )),
        Secret::Scram(s) => Some(s.clone()),
        Secret::Md5(_) => None,
    };
    Stored {
        name: name.to_string(),
        scram,
        secret,
    }
}

impl std::fmt::Debug for AuthDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthDb")
            .field("method", &self.method)
            .field("entries", &self.entries.len())
            .field("pool_password", &self.pool_password.is_some())
            .finish()
    }
}

impl AuthDb {
    /// `key`: random, made once per process and kept across reloads. It
    /// derives both the mock verifier of an unknown user and the salt of a
    /// plain-password entry (the first 16 bytes of HMAC(key, name), as
    /// [`ScramSecret::mock`] does), so the salt a client sees for a name is
    /// the same before and after a reload whether the name exists or not.
    /// Fails when `scram-sha-256` is chosen and an entry holds an md5 secret
    /// (it cannot answer SCRAM), naming the entry.
    pub fn new(
        method: Method,
        allow_insecure_cleartext: bool,
        pool_password: Option<&str>,
        users: Option<UserList>,
        key: [u8; 32],
    ) -> Result<AuthDb, String> {
        let salt = |name: &str| ScramSecret::mock(name.as_bytes(), &key).salt;
        let mut entries = HashMap::new();
        if let Some(list) = users {
            for (name, secret) in list.iter() {
                let (name, secret) = (name.to_string(), secret.clone());
                if method == Method::ScramSha256 && matches!(secret, Secret::Md5(_)) {
                    return Err(format!(
                        "auth_file: the entry for \"{name}\" is an md5 hash, which cannot \
                         answer SCRAM-SHA-256 (pool_auth_method = scram-sha-256); store the \
                         plain password or a SCRAM-SHA-256$ verifier"
                    ));
                }
                let st = stored(&name, secret, &salt(&name));
                entries.insert(name, st);
            }
        }
        let pool_password =
            pool_password.map(|p| stored("", Secret::Plain(p.to_string()), &salt("")));
        Ok(AuthDb {
            method,
            allow_insecure_cleartext,
            entries,
            pool_password,
            mock_key: key,
        })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    fn lookup(&self, user: &str, role: &str) -> Option<&Stored> {
        self.entries
            .get(user)
            .or_else(|| self.entries.get(role))
            .or(self.pool_password.as_ref())
    }
}

/// Where the exchange is.
#[derive(Debug)]
enum State {
    Cleartext { user: String, role: String },
    ScramFirst(Box<ScramServer>),
    ScramFinal(Box<ScramServer>),
    Done,
}

/// One client's authentication.
#[derive(Debug)]
pub struct ClientAuth {
    state: State,
    user: String,
    db_ref: std::sync::Arc<AuthDb>,
}

/// What a client message led to.
#[derive(Debug)]
pub enum AuthOutcome {
    /// A reply is queued; another client message is expected.
    Continue,
    /// Authenticated (the caller sends AuthenticationOk).
    Ok,
    Failed(LinkFailure),
}

fn failed(user: &str) -> LinkFailure {
    LinkFailure {
        sqlstate: "28P01".into(),
        message: format!("password authentication failed for user \"{user}\""),
        from_server: false,
    }
}

fn violation(e: impl std::fmt::Display) -> LinkFailure {
    LinkFailure {
        sqlstate: "08P01".into(),
        message: format!("protocol violation during authentication: {e}"),
        from_server: false,
    }
}

impl ClientAuth {
    /// Starts the exchange: queues the authentication request in `out`.
    /// `secure`: the client link is TLS or from a loopback address.
    pub fn start(
        db: &std::sync::Arc<AuthDb>,
        user: &str,
        role: &str,
        secure: bool,
        nonce: [u8; crate::conn::SCRAM_NONCE_LEN],
        out: &mut Vec<u8>,
    ) -> Result<ClientAuth, LinkFailure> {
        let state = match db.method {
            Method::Cleartext => {
                if !secure && !db.allow_insecure_cleartext {
                    return Err(LinkFailure {
                        sqlstate: "28000".into(),
                        message: "cleartext password authentication is refused on a non-TLS, \
                                  non-loopback connection (connect with TLS, or set \
                                  pool_allow_insecure_cleartext)"
                            .into(),
                        from_server: false,
                    });
                }
                encode::auth_cleartext_password(out);
                State::Cleartext {
                    user: user.to_string(),
                    role: role.to_string(),
                }
            }
            Method::ScramSha256 => {
                let (secret, doomed) = match db.lookup(user, role).and_then(|s| s.scram.clone()) {
                    Some(s) => (s, false),
                    None => (ScramSecret::mock(user.as_bytes(), &db.mock_key), true),
                };
                if encode::auth_sasl(out, &[MECHANISM.as_bytes()]).is_err() {
                    return Err(violation("cannot encode AuthenticationSASL"));
                }
                State::ScramFirst(Box::new(ScramServer::new(secret, &nonce, doomed)))
            }
        };
        Ok(ClientAuth {
            state,
            user: user.to_string(),
            db_ref: std::sync::Arc::clone(db),
        })
    }

    /// One `p` message body from the client.
    pub fn on_message(&mut self, body: &[u8], out: &mut Vec<u8>) -> AuthOutcome {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::Cleartext { user, role } => {
                let pw = match frontend::decode_password(body) {
                    Ok(p) => p,
                    Err(e) => return AuthOutcome::Failed(violation(e)),
                };
                let ok = self
                    .db_ref
                    .lookup(&user, &role)
                    .is_some_and(|s| s.secret.verify_cleartext(&s.name, pw));
                if ok {
                    AuthOutcome::Ok
                } else {
                    AuthOutcome::Failed(failed(&self.user))
                }
            }
            State::ScramFirst(mut server) => {
                let init = match frontend::decode_sasl_initial_response(body) {
                    Ok(i) => i,
                    Err(e) => return AuthOutcome::Failed(violation(e)),
                };
                if init.mechanism != MECHANISM.as_bytes() {
                    return AuthOutcome::Failed(violation(
                        "the client selected a SASL mechanism that was not offered",
                    ));
                }
                let Some(data) = init.data else {
                    return AuthOutcome::Failed(violation("SASLInitialResponse without data"));
                };
                match server.handle_client_first(data) {
                    Ok(reply) => match encode::auth_sasl_continue(out, &reply) {
                        Ok(()) => {
                            self.state = State::ScramFinal(server);
                            AuthOutcome::Continue
                        }
                        Err(e) => AuthOutcome::Failed(violation(e)),
                    },
                    Err(e) => AuthOutcome::Failed(self.scram_error(e)),
                }
            }
            State::ScramFinal(mut server) => {
                let data = match frontend::decode_sasl_response(body) {
                    Ok(d) => d,
                    Err(e) => return AuthOutcome::Failed(violation(e)),
                };
                match server.handle_client_final(data) {
                    Ok(reply) => match encode::auth_sasl_final(out, &reply) {
                        Ok(()) => AuthOutcome::Ok,
                        Err(e) => AuthOutcome::Failed(violation(e)),
                    },
                    Err(e) => AuthOutcome::Failed(self.scram_error(e)),
                }
            }
            State::Done => AuthOutcome::Failed(violation(ProtoError::BadValue(
                "authentication message after the exchange ended",
            ))),
        }
    }

    fn scram_error(&self, e: ScramServerError) -> LinkFailure {
        if e.is_auth_failure() {
            failed(&self.user)
        } else {
            violation(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn db(key: [u8; 32]) -> AuthDb {
        let users = UserList::parse("\"alice\" \"pw\"\n").unwrap();
        AuthDb::new(Method::ScramSha256, false, None, Some(users), key).unwrap()
    }

    fn salt(db: &AuthDb, user: &str) -> Vec<u8> {
        match db.lookup(user, user) {
            Some(s) => s.scram.as_ref().unwrap().salt.clone(),
            None => ScramSecret::mock(user.as_bytes(), &db.mock_key).salt,
        }
    }

    #[test]
    fn salts_survive_a_rebuild_and_look_like_mock_ones() {
        let key = [7u8; 32];
        let (a, b) = (db(key), db(key));
        // A reload rebuilds the database with the same key: nothing a client
        // sees changes, for a user that exists and for one that does not.
        assert_eq!(salt(&a, "alice"), salt(&b, "alice"));
        assert_eq!(salt(&a, "mallory"), salt(&b, "mallory"));
        assert_eq!(
            salt(&a, "alice"),
            ScramSecret::mock(b"alice", &key).salt,
            "a real salt is derived the way a mock one is"
        );
        assert_ne!(salt(&db([8u8; 32]), "alice"), salt(&a, "alice"));
    }
}
