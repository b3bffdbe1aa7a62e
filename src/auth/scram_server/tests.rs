//! Round trips against the proxy's own SCRAM client, a verifier made by
//! PostgreSQL's algorithm, and hostile client messages.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::*;
use crate::auth::scram::ScramClient;

const SALT: &[u8] = b"0123456789abcdef";

fn server(pw: &[u8], doomed: bool) -> ScramServer {
    ScramServer::new(
        ScramSecret::from_password(pw, SALT, 4096),
        &[9u8; 18],
        doomed,
    )
}

/// Full exchange; Ok when the server accepted and the client verified it.
fn exchange(client_pw: &[u8], s: &mut ScramServer) -> Result<(), String> {
    let mut c = ScramClient::new(client_pw, &[3u8; 18]);
    let sf = s
        .handle_client_first(&c.client_first())
        .map_err(|e| e.to_string())?;
    let cf = c.handle_server_first(&sf).map_err(|e| e.to_string())?;
    let fin = s
        .handle_client_final(&cf)
        .map_err(|e| format!("server: {e}"))?;
    c.handle_server_final(&fin)
        .map_err(|e| format!("client: {e}"))
}

#[test]
fn right_password_round_trip_and_server_proves_itself() {
    let mut s = server(b"pencil", false);
    exchange(b"pencil", &mut s).unwrap();
    // Done afterwards: fails closed.
    assert_eq!(
        s.handle_client_first(b"n,,n=,r=abc"),
        Err(ScramServerError::OutOfOrder)
    );
}

#[test]
fn wrong_password_and_doomed_fail_the_same_way() {
    let mut s = server(b"pencil", false);
    let e = exchange(b"pen", &mut s).unwrap_err();
    assert!(e.contains("server: SCRAM authentication failed"), "{e}");
    let mut s = server(b"pencil", true);
    let e = exchange(b"pencil", &mut s).unwrap_err();
    assert!(e.contains("server: SCRAM authentication failed"), "{e}");
    assert!(ScramServerError::AuthFailed.is_auth_failure());
    assert!(!ScramServerError::Malformed("x").is_auth_failure());
}

#[test]
fn mock_is_stable_per_name_and_never_verifies() {
    let key = [7u8; 32];
    let a = ScramSecret::mock(b"ghost", &key);
    assert_eq!(a, ScramSecret::mock(b"ghost", &key));
    assert_ne!(a.salt, ScramSecret::mock(b"other", &key).salt);
    assert_eq!(a.salt.len(), 16);
    assert!(!a.verify_password(b""));
    let mut s = ScramServer::new(a, &[1u8; 18], true);
    assert!(exchange(b"anything", &mut s).is_err());
}

#[test]
fn stored_form_round_trip() {
    let v = ScramSecret::from_password(b"pencil", SALT, 4096);
    let text = v.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"));
    assert_eq!(ScramSecret::parse(&text).unwrap(), v);
    assert!(v.verify_password(b"pencil"));
    assert!(!v.verify_password(b"Pencil"));
    assert!(
        !format!("{v:?}").contains(&text[30..]),
        "Debug prints no keys"
    );
    for bad in [
        "SCRAM-SHA-256$0:MDEy$AAAA:AAAA",
        "SCRAM-SHA-256$x:MDEy$AAAA:AAAA",
        "SCRAM-SHA-256$4096:MDEy$AAAA",
        "SCRAM-SHA-256$4096:@@$AAAA:AAAA",
        "SCRAM-SHA-1$4096:MDEy$AAAA:AAAA",
        "SCRAM-SHA-256$99999999999:MDEy$AAAA:AAAA",
    ] {
        assert!(ScramSecret::parse(bad).is_err(), "{bad}");
    }
}

/// RFC 7677's example (user "user", password "pencil"): the server side
/// must produce exactly its server-final for its client-final.
#[test]
fn rfc7677_known_answer() {
    let salt = crate::auth::base64::decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let secret = ScramSecret::from_password(b"pencil", &salt, 4096);
    let mut s = ScramServer::new(secret, b"", false);
    // The RFC's server nonce part, injected as our encoded nonce.
    s.server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
    let sf = s
        .handle_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        sf,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let fin = s
        .handle_client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

#[test]
fn hostile_client_first() {
    let long = [b"n,,n=,r=".as_slice(), &[b'a'; 2000]].concat();
    for (msg, what) in [
        (
            b"p=tls-server-end-point,,n=,r=abc".as_slice(),
            "channel binding",
        ),
        (b"x,,n=,r=abc", "gs2 header"),
        (b"n,a=admin,n=,r=abc", "authzid"),
        (b"n,,r=abc", "n="),
        (b"n,,n=,x=abc", "r="),
        (b"n,,n=,r=ab,cd,m=ext", "attribute"),
        (b"n,,n=,r=abc,m=ext", "mandatory extension"),
        (b"n,,n=,r=", "client nonce"),
        (b"n,,n=,r=a\x01b", "client nonce"),
        (b"n,,n=bad=name,r=abc", "user name"),
        (&long, "too long"),
    ] {
        let mut s = server(b"pw", false);
        let e = s.handle_client_first(msg).unwrap_err();
        assert!(
            matches!(e, ScramServerError::Malformed(_)) && e.to_string().contains(what),
            "{:?}: {e}",
            String::from_utf8_lossy(msg)
        );
        // Failed closed.
        assert_eq!(
            s.handle_client_final(b"c=biws"),
            Err(ScramServerError::OutOfOrder)
        );
    }
    let mut s = server(b"pw", false);
    assert!(s.handle_client_first(b"y,,n=user=2Cx,r=abc").is_ok());
}

#[test]
fn hostile_client_final() {
    let cases: [(&[u8], &str); 6] = [
        (b"c=biws,r=abc", "no proof"),
        (b"c=eSws,r=NONCE,p=AAAA", "channel binding data"),
        (b"c=biws,r=other,p=AAAA", "nonce mismatch"),
        (b"c=biws,r=NONCE,x=1,p=AAAA", "unexpected attribute"),
        (b"c=biws,r=NONCE,p=@@@@", "base64"),
        (b"c=biws,r=NONCE,p=AAAA", "proof length"),
    ];
    for (tmpl, what) in cases {
        let mut s = server(b"pw", false);
        let sf = s.handle_client_first(b"n,,n=,r=abc").unwrap();
        let nonce = &sf[2..sf.iter().position(|&b| b == b',').unwrap()];
        let msg: Vec<u8> = String::from_utf8_lossy(tmpl)
            .replace("NONCE", &String::from_utf8_lossy(nonce))
            .into_bytes();
        let e = s.handle_client_final(&msg).unwrap_err();
        assert!(
            e.to_string().contains(what),
            "{:?}: {e}",
            String::from_utf8_lossy(&msg)
        );
    }
}

#[test]
fn ct_eq_basics() {
    assert!(crate::auth::ct_eq(b"abc", b"abc"));
    assert!(!crate::auth::ct_eq(b"abc", b"abd"));
    assert!(!crate::auth::ct_eq(b"abc", b"ab"));
    assert!(crate::auth::ct_eq(b"", b""));
}
