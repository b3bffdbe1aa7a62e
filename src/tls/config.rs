//! PEM files → rustls configurations, built at startup (and on reload).
//!
//! - [`load_server_config`]: client-facing TLS from `tls_cert`/`tls_key`.
//! - [`load_client_config`]: upstream TLS per [`UpstreamTls`], trust roots from
//!   `upstream_tls_ca` or the system bundle ([`SYSTEM_CA_BUNDLES`]).
//! - [`server_name`]: SNI / verification name for `upstream_host`.
//!
//! Every config uses the `ring` provider from [`provider`] and allows TLS 1.3 and 1.2. PEM is
//! read with `rustls::pki_types::pem::PemObject` (not the archived `rustls-pemfile`). Errors
//! name the file and what is wrong; nothing here panics on file contents.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use crate::config::UpstreamTls;

/// ALPN protocol id of PostgreSQL (required for direct TLS, PostgreSQL 17+).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// System CA bundles tried in order when `upstream_tls_ca` is unset (Debian/Ubuntu/Alpine,
/// RHEL/Fedora, BSD/macOS-style).
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// TLS 1.3 and 1.2 (the `tls12` feature is on because PostgreSQL servers and clients built
/// against older OpenSSL versions still negotiate 1.2).
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A TLS configuration error, ready to print: names the file (or setting) and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider every config is built with: rustls's `ring` default provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `what 'path': problem` for a PEM read error.
fn pem_err(what: &str, path: &Path, e: &pem::Error) -> TlsError {
    let p = path.display();
    match e {
        pem::Error::Io(e) => TlsError(format!("{what} '{p}': cannot read: {e}")),
        e => TlsError(format!("{what} '{p}': invalid PEM: {e}")),
    }
}

/// Every `CERTIFICATE` section of a PEM file (other sections are skipped); at least one.
fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(what, path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, path, &e))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} '{}': no certificate found (expected a PEM 'CERTIFICATE' section)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Server side: the certificate chain (leaf first) from `cert` and the first private key
/// (PKCS#1, PKCS#8 or SEC1, unencrypted) from `key`; ALPN `postgresql`; TLS 1.2 and 1.3; no
/// client certificates.
///
/// A client that offers ALPN without `postgresql` is refused (`no_application_protocol`), as
/// PostgreSQL 17 does; a client that offers no ALPN is accepted.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs("certificate file", cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError(format!(
            "private key file '{}': no private key found (expected an unencrypted PEM \
             'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' section)",
            key.display()
        )),
        e => pem_err("private key file", key, &e),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError(format!("TLS server configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            TlsError(format!(
                "certificate '{}' with key '{}': {e}",
                cert.display(),
                key.display()
            ))
        })?;
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(cfg))
}

/// Trust roots: every certificate of `ca` (each must be usable as a trust anchor), or when
/// `None` the first existing file of [`SYSTEM_CA_BUNDLES`] (certificates webpki cannot use are
/// skipped there, as other TLS stacks do).
fn load_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for (i, cert) in read_certs("upstream_tls_ca file", path)?
                .into_iter()
                .enumerate()
            {
                roots.add(cert).map_err(|e| {
                    TlsError(format!(
                        "upstream_tls_ca file '{}': certificate #{}: {e}",
                        path.display(),
                        i.saturating_add(1)
                    ))
                })?;
            }
        }
        None => {
            let Some(path) = SYSTEM_CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
            else {
                return Err(TlsError(format!(
                    "no system CA bundle found (looked for {}); set upstream_tls_ca",
                    SYSTEM_CA_BUNDLES.join(", ")
                )));
            };
            let (added, _ignored) =
                roots.add_parsable_certificates(read_certs("system CA bundle", path)?);
            if added == 0 {
                return Err(TlsError(format!(
                    "system CA bundle '{}': no usable certificate; set upstream_tls_ca",
                    path.display()
                )));
            }
        }
    }
    Ok(roots)
}

fn webpki_verifier(
    provider: &Arc<CryptoProvider>,
    ca: Option<&Path>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = Arc::new(load_roots(ca)?);
    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| TlsError(format!("upstream certificate verifier: {e}")))
}

/// Client side, for the upstream server, per `mode`:
/// - `Prefer`, `Require`: encryption only. Any certificate is accepted, but the handshake
///   signatures are still checked with the provider's algorithms (so the peer holds the key of
///   the certificate it sent). `ca` is not read.
/// - `VerifyCa`: the chain must lead to a root of `ca` (or the system bundle); the host name is
///   not checked.
/// - `VerifyFull`: chain and host name (the name given to the connection, see [`server_name`]).
/// - `Disable`: an error (there is nothing to configure).
///
/// `alpn_postgresql` offers ALPN `postgresql` (required for direct TLS; harmless otherwise).
pub fn load_client_config(
    mode: UpstreamTls,
    ca: Option<&Path>,
    alpn_postgresql: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError(format!("TLS client configuration: {e}")))?;
    let mut cfg = match mode {
        UpstreamTls::Disable => {
            return Err(TlsError(
                "upstream_tls = disable: no TLS client configuration to build".into(),
            ));
        }
        UpstreamTls::Prefer | UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptionOnly {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        UpstreamTls::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                inner: webpki_verifier(&provider, ca)?,
            }))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull => builder
            .with_webpki_verifier(webpki_verifier(&provider, ca)?)
            .with_no_client_auth(),
    };
    if alpn_postgresql {
        cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    }
    Ok(Arc::new(cfg))
}

/// SNI and verification name for `upstream_host`: a DNS name or an IP literal (IPv6 also in
/// brackets). rustls sends no SNI for IP addresses and checks them against IP SANs.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(h.to_owned()).map_err(|_| {
        TlsError(format!(
            "upstream_host '{}': not a valid DNS name or IP address for TLS",
            host.escape_debug()
        ))
    })
}

/// `upstream_tls = prefer | require`: accept any certificate, but verify the handshake
/// signatures (the server proves it holds the key of the certificate it presented).
#[derive(Debug)]
struct EncryptionOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `upstream_tls = verify-ca`: the webpki verifier, with its host-name verdict ignored.
///
/// `WebPkiServerVerifier` checks the chain (trust anchor, validity period, key usage) first
/// and the name last, and `NotValidForName*` comes only from the name check, so accepting
/// exactly those errors accepts a verified chain for any name. A unit test
/// (`verify_ca_still_checks_the_chain`) pins this down.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, Connection, ServerConnection};
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Throw-away PKI made with the `openssl` CLI in a temp dir (removed on drop):
    /// `ca.crt`/`ca.key`, `server.crt` (CN and SAN `localhost`, SAN IP `127.0.0.1`, signed by
    /// the CA) with `server.key` (SEC1) and `server.p8.key` (PKCS#8), and an unrelated
    /// self-signed `other_ca.crt`.
    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        fn new() -> Pki {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "pgvpd-tls-test-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let pki = Pki { dir };
            std::fs::write(
                pki.path("server.ext"),
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
                 basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
            for (name, cn) in [("ca", "pgvpd-test-ca"), ("other_ca", "unrelated-ca")] {
                let (crt, key, subj) = (
                    format!("{name}.crt"),
                    format!("{name}.key"),
                    format!("/CN={cn}"),
                );
                let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
                args.extend(ec);
                args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
                pki.openssl(&args);
            }
            pki.openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "server.key",
            ]);
            pki.openssl(&[
                "req",
                "-new",
                "-key",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]);
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ]);
            pki.openssl(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "server.key",
                "-out",
                "server.p8.key",
            ]);
            pki
        }

        /// A self-signed RSA certificate with a PKCS#1 (`RSA PRIVATE KEY`) key.
        fn rsa_pkcs1(&self) -> (PathBuf, PathBuf) {
            self.openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
            self.openssl(&[
                "req",
                "-x509",
                "-key",
                "rsa.key",
                "-days",
                "30",
                "-subj",
                "/CN=localhost",
                "-out",
                "rsa.crt",
            ]);
            (self.path("rsa.crt"), self.path("rsa.key"))
        }

        fn openssl(&self, args: &[&str]) {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .expect("openssl CLI");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }

        fn server(&self) -> Arc<ServerConfig> {
            load_server_config(&self.path("server.crt"), &self.path("server.key")).unwrap()
        }

        fn client(&self, mode: UpstreamTls, ca: &str) -> Arc<ClientConfig> {
            load_client_config(mode, Some(&self.path(ca)), false).unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Move every pending TLS record from `from` to `to`; `Ok(true)` if anything moved.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
        Ok(!buf.is_empty())
    }

    /// Full handshake in memory (no sockets); the first error of either side is returned.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(Connection, Connection), rustls::Error> {
        let mut c = Connection::from(ClientConnection::new(client, server_name(name).unwrap())?);
        let mut s = Connection::from(ServerConnection::new(server)?);
        for _ in 0..16 {
            let moved = transfer(&mut c, &mut s)? | transfer(&mut s, &mut c)?;
            if !moved && !c.is_handshaking() && !s.is_handshaking() {
                // Application data flows both ways.
                std::io::Write::write_all(&mut c.writer(), b"ping").unwrap();
                transfer(&mut c, &mut s)?;
                let mut got = [0u8; 4];
                std::io::Read::read_exact(&mut s.reader(), &mut got).unwrap();
                assert_eq!(&got, b"ping");
                return Ok((c, s));
            }
        }
        panic!("handshake did not finish");
    }

    fn invalid_cert(r: Result<(Connection, Connection), rustls::Error>) -> CertificateError {
        match r {
            Err(rustls::Error::InvalidCertificate(e)) => e,
            Err(e) => panic!("expected InvalidCertificate, got {e:?}"),
            Ok(_) => panic!("handshake succeeded"),
        }
    }

    #[test]
    fn server_config_loads_every_key_format() {
        let pki = Pki::new();
        let cfg = pki.server();
        assert_eq!(cfg.alpn_protocols, vec![b"postgresql".to_vec()]);
        load_server_config(&pki.path("server.crt"), &pki.path("server.p8.key")).unwrap();
        let (crt, key) = pki.rsa_pkcs1();
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY")
        );
        load_server_config(&crt, &key).unwrap();
    }

    #[test]
    fn server_config_errors_name_the_file() {
        let pki = Pki::new();
        let (crt, key) = (pki.path("server.crt"), pki.path("server.key"));
        let missing = pki.path("missing.pem");
        let garbage = pki.path("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let other_key = pki.path("other_ca.key");
        let empty = pki.path("empty.pem");
        std::fs::write(&empty, "").unwrap();
        // (cert, key, message fragments)
        let cases: Vec<(&PathBuf, &PathBuf, Vec<String>)> = vec![
            (
                &missing,
                &key,
                vec![
                    format!("certificate file '{}': cannot read: ", missing.display()),
                    "No such file".into(),
                ],
            ),
            (
                &crt,
                &missing,
                vec![format!(
                    "private key file '{}': cannot read: ",
                    missing.display()
                )],
            ),
            (
                &crt,
                &crt,
                vec![format!(
                    "private key file '{}': no private key found",
                    crt.display()
                )],
            ),
            (
                &crt,
                &empty,
                vec![format!(
                    "private key file '{}': no private key found",
                    empty.display()
                )],
            ),
            (
                &key,
                &key,
                vec![format!(
                    "certificate file '{}': no certificate found",
                    key.display()
                )],
            ),
            (
                &empty,
                &key,
                vec![format!(
                    "certificate file '{}': no certificate found",
                    empty.display()
                )],
            ),
            (
                &garbage,
                &key,
                vec![format!(
                    "certificate file '{}': invalid PEM: ",
                    garbage.display()
                )],
            ),
            // The key of another certificate.
            (
                &crt,
                &other_key,
                vec![format!(
                    "certificate '{}' with key '{}': ",
                    crt.display(),
                    other_key.display()
                )],
            ),
        ];
        for (c, k, frags) in cases {
            let e = load_server_config(c, k).unwrap_err().to_string();
            for f in frags {
                assert!(e.contains(&f), "{c:?} {k:?}: {e}\n  expected: {f}");
            }
        }
    }

    #[test]
    fn client_configs_for_each_mode() {
        let pki = Pki::new();
        let ca = pki.path("ca.crt");
        for mode in [
            UpstreamTls::Prefer,
            UpstreamTls::Require,
            UpstreamTls::VerifyCa,
            UpstreamTls::VerifyFull,
        ] {
            let cfg = load_client_config(mode, Some(&ca), false).unwrap();
            assert!(cfg.alpn_protocols.is_empty(), "{mode:?}");
            let cfg = load_client_config(mode, Some(&ca), true).unwrap();
            assert_eq!(cfg.alpn_protocols, vec![b"postgresql".to_vec()], "{mode:?}");
        }
        // Encryption-only modes never read the CA file.
        for mode in [UpstreamTls::Prefer, UpstreamTls::Require] {
            load_client_config(mode, None, false).unwrap();
            load_client_config(mode, Some(&pki.path("missing.pem")), false).unwrap();
        }
        let e = load_client_config(UpstreamTls::Disable, Some(&ca), false).unwrap_err();
        assert!(e.0.contains("upstream_tls = disable"), "{e}");
        for mode in [UpstreamTls::VerifyCa, UpstreamTls::VerifyFull] {
            let missing = pki.path("missing.pem");
            let e = load_client_config(mode, Some(&missing), false).unwrap_err();
            assert!(
                e.0.starts_with(&format!(
                    "upstream_tls_ca file '{}': cannot read: ",
                    missing.display()
                )),
                "{e}"
            );
            let e = load_client_config(mode, Some(&pki.path("server.key")), false).unwrap_err();
            assert!(e.0.contains("no certificate found"), "{e}");
            // No CA file: the system bundle, if this machine has one.
            let system = SYSTEM_CA_BUNDLES.iter().any(|p| Path::new(p).is_file());
            match load_client_config(mode, None, false) {
                Ok(_) => assert!(system),
                Err(e) => {
                    assert!(!system, "{e}");
                    assert!(e.0.contains("set upstream_tls_ca"), "{e}");
                }
            }
        }
    }

    #[test]
    fn server_names() {
        for ok in [
            "localhost",
            "db.example.com",
            "127.0.0.1",
            "::1",
            "[::1]",
            "fe80::1",
        ] {
            server_name(ok).unwrap();
        }
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
        for bad in ["", "bad name", "a..b", "x\0y", "[::1"] {
            let e = server_name(bad).unwrap_err();
            assert!(e.0.starts_with("upstream_host '"), "{e}");
            assert!(
                e.0.ends_with("': not a valid DNS name or IP address for TLS"),
                "{e}"
            );
        }
    }

    #[test]
    fn verify_full_checks_chain_and_name() {
        let pki = Pki::new();
        let good = pki.client(UpstreamTls::VerifyFull, "ca.crt");
        handshake(pki.server(), Arc::clone(&good), "localhost").unwrap();
        handshake(pki.server(), Arc::clone(&good), "127.0.0.1").unwrap();
        let e = invalid_cert(handshake(pki.server(), good, "wrong.example"));
        assert!(
            matches!(
                e,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            "{e:?}"
        );
        let other = pki.client(UpstreamTls::VerifyFull, "other_ca.crt");
        let e = invalid_cert(handshake(pki.server(), other, "localhost"));
        assert_eq!(e, CertificateError::UnknownIssuer);
    }

    #[test]
    fn verify_ca_ignores_the_name_only() {
        let pki = Pki::new();
        let good = pki.client(UpstreamTls::VerifyCa, "ca.crt");
        handshake(pki.server(), Arc::clone(&good), "wrong.example").unwrap();
        handshake(pki.server(), good, "localhost").unwrap();
    }

    #[test]
    fn verify_ca_still_checks_the_chain() {
        let pki = Pki::new();
        let other = pki.client(UpstreamTls::VerifyCa, "other_ca.crt");
        for name in ["localhost", "wrong.example"] {
            let e = invalid_cert(handshake(pki.server(), Arc::clone(&other), name));
            assert_eq!(e, CertificateError::UnknownIssuer, "{name}");
        }
    }

    #[test]
    fn require_and_prefer_accept_any_certificate() {
        let pki = Pki::new();
        for mode in [UpstreamTls::Require, UpstreamTls::Prefer] {
            let c = pki.client(mode, "other_ca.crt");
            handshake(pki.server(), Arc::clone(&c), "wrong.example").unwrap();
            let c = load_client_config(mode, None, false).unwrap();
            handshake(pki.server(), c, "localhost").unwrap();
        }
        // A self-signed RSA server (TLS 1.3 RSA-PSS signatures checked by the verifier).
        let (crt, key) = pki.rsa_pkcs1();
        let server = load_server_config(&crt, &key).unwrap();
        handshake(
            server,
            pki.client(UpstreamTls::Require, "ca.crt"),
            "localhost",
        )
        .unwrap();
    }

    #[test]
    fn alpn_postgresql_is_negotiated() {
        let pki = Pki::new();
        let ca = pki.path("ca.crt");
        let with = load_client_config(UpstreamTls::VerifyFull, Some(&ca), true).unwrap();
        let (c, s) = handshake(pki.server(), with, "localhost").unwrap();
        assert_eq!(c.alpn_protocol(), Some(ALPN_POSTGRESQL));
        assert_eq!(s.alpn_protocol(), Some(ALPN_POSTGRESQL));
        // A client without ALPN is still served (SSLRequest path), with no protocol.
        let without = load_client_config(UpstreamTls::VerifyFull, Some(&ca), false).unwrap();
        let (c, s) = handshake(pki.server(), without, "localhost").unwrap();
        assert_eq!(c.alpn_protocol(), None);
        assert_eq!(s.alpn_protocol(), None);
        // A client offering only another protocol is refused, as PostgreSQL 17 does.
        let mut other = (*load_client_config(UpstreamTls::Require, None, false).unwrap()).clone();
        other.alpn_protocols = vec![b"h2".to_vec()];
        let r = handshake(pki.server(), Arc::new(other), "localhost");
        assert!(
            matches!(r, Err(rustls::Error::NoApplicationProtocol)),
            "{:?}",
            r.err()
        );
    }

    #[test]
    fn tls12_server_works_with_every_verifying_mode() {
        let pki = Pki::new();
        let chain = CertificateDer::pem_file_iter(pki.path("server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
        let tls12 = Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        // (client mode, CA file, name): encryption-only checks TLS 1.2 signatures itself.
        let cases = [
            (UpstreamTls::Require, "other_ca.crt", "wrong.example"),
            (UpstreamTls::VerifyCa, "ca.crt", "wrong.example"),
            (UpstreamTls::VerifyFull, "ca.crt", "localhost"),
        ];
        for (mode, ca, name) in cases {
            let (c, _) = handshake(Arc::clone(&tls12), pki.client(mode, ca), name).unwrap();
            assert_eq!(
                c.protocol_version(),
                Some(rustls::ProtocolVersion::TLSv1_2),
                "{mode:?}"
            );
        }
        // And the default is TLS 1.3.
        let (c, _) = handshake(
            pki.server(),
            pki.client(UpstreamTls::Require, "ca.crt"),
            "localhost",
        )
        .unwrap();
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    }
}
