//! A throw-away test PKI made with the `openssl` CLI at test time.
//!
//! - `ca`: the test CA; `server`: `CN=localhost`, SAN `DNS:localhost, IP:127.0.0.1`,
//!   signed by `ca`; `wrong_name`: `CN=wrong.example`, SAN `DNS:wrong.example`,
//!   signed by `ca` (chain valid, name wrong);
//! - `other_ca`: an unrelated CA; `other_server`: `localhost` + `127.0.0.1`
//!   signed by `other_ca` (the "cert B" of certificate-reload tests).
//!
//! Keys are unencrypted PKCS#8 RSA 2048 (`BEGIN PRIVATE KEY`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: CertKey,
    pub server: CertKey,
    pub wrong_name: CertKey,
    pub other_ca: CertKey,
    pub other_server: CertKey,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` (the TLS tests need the openssl CLI: apt-get install -y openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Self-signed CA `name` (`name.crt`, `name.key`) with subject CN `cn`.
fn make_ca(dir: &Path, name: &str, cn: &str) -> CertKey {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "3650",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    CertKey {
        cert: dir.join(crt),
        key: dir.join(key),
    }
}

/// End-entity server certificate `name` for `cn` with `san`, signed by `ca`.
fn make_leaf(dir: &Path, name: &str, cn: &str, san: &str, ca: &CertKey, serial: u32) -> CertKey {
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        ),
    )
    .expect("write extfile");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-in",
            &csr,
            "-CA",
            &ca.cert.to_string_lossy(),
            "-CAkey",
            &ca.key.to_string_lossy(),
            "-set_serial",
            &serial.to_string(),
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    CertKey {
        cert: dir.join(crt),
        key: dir.join(key),
    }
}

impl TestPki {
    /// Generates the whole PKI into `dir` (created if missing). ~1 s.
    pub fn generate(dir: &Path) -> TestPki {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ca = make_ca(dir, "ca", "pgvpd test CA");
        let other_ca = make_ca(dir, "other_ca", "pgvpd unrelated test CA");
        let server = make_leaf(
            dir,
            "server",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            &ca,
            1001,
        );
        let wrong_name = make_leaf(
            dir,
            "wrong_name",
            "wrong.example",
            "DNS:wrong.example",
            &ca,
            1002,
        );
        let other_server = make_leaf(
            dir,
            "other_server",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            &other_ca,
            2001,
        );
        TestPki {
            dir: dir.to_path_buf(),
            ca,
            server,
            wrong_name,
            other_ca,
            other_server,
        }
    }
}
