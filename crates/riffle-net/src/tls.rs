//! TLS for every client and server of Riffle, configured the same way for
//! all: the CA that signs the other side's certificate, a certificate and
//! key of one's own, the name to check a server's certificate against, and
//! skipping that check only when asked by name.
//!
//! Every client is given a [`rustls::ClientConfig`] and every server a
//! [`rustls::ServerConfig`] built here, so that a certificate is read,
//! checked and explained in one place, on one crypto provider (ring: a
//! much shorter build than aws-lc-rs). Without a CA the system's trusted
//! roots are used, as for any server with a public certificate.
//!
//! The settings come from connector options (`tls_ca`, ...) or command-line
//! flags (`--http-tls-ca`, ...): [`Names`] carries what the user calls
//! them, so that an error says which one to change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use riffle_base::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// What the user calls the settings, for errors and hints that name the
/// one to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The CA of the other side's certificate.
    pub ca: &'static str,
    /// One's own certificate and key.
    pub cert: &'static str,
    /// The name a server's certificate is checked against, when it can be
    /// set apart from the address connected to.
    pub server_name: Option<&'static str>,
}

impl Default for Names {
    /// The `tls_*` options of connector URLs and pipeline files, where most
    /// TLS settings are written.
    fn default() -> Self {
        Self {
            ca: "tls_ca",
            cert: "tls_cert and tls_key",
            server_name: Some("tls_server_name"),
        }
    }
}

/// A client's TLS settings (or a server's, for the servers that take the
/// same options: [`Tls::server`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file of the CAs that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM files of the client certificate (chain) and its key, for
    /// servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry, when not the host.
    pub server_name: Option<String>,
    /// Accept any server certificate.
    pub insecure: bool,
    pub names: Names,
}

impl Tls {
    /// The name to check the server's certificate against.
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }

    /// The client configuration for these settings: the certificates are
    /// read now, so that a missing or malformed file is reported before
    /// connecting.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidInput(format!("TLS: {e}")))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else if let Some(name) = &self.server_name {
            // Clients check the certificate against the host they connect
            // to; this verifier checks it against the configured name.
            let name = ServerName::try_from(name.clone())
                .map_err(|e| Error::InvalidInput(format!("TLS: server name '{name}': {e}")))?;
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                    .build()
                    .map_err(|e| Error::InvalidInput(format!("TLS: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Named { name, inner }))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| {
                    Error::InvalidInput(format!(
                        "TLS: client certificate {} and key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for c in certificates(ca)? {
                    roots.add(c).map_err(|e| {
                        Error::InvalidInput(format!("TLS: CA {}: {e}", ca.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "TLS: no trusted roots on this system: give the server's CA with {}",
                        self.names.ca
                    )));
                }
            }
        }
        Ok(roots)
    }

    /// The same settings for a server: `cert` and `key` its own, `ca`
    /// (when given) the CA that must sign every client's certificate.
    pub fn server(&self) -> Result<ServerTls> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Err(Error::InvalidInput(format!(
                "TLS: a server needs its certificate and key ({})",
                self.names.cert
            )));
        };
        Ok(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.ca.clone(),
        })
    }
}

/// A server's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM files of the server's certificate (chain) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM file of the CAs that sign client certificates: when given, every
    /// client must present one they signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The server configuration, offering the protocols of `alpn` (e.g.
    /// `http/1.1`); the files are read now, so that a missing or malformed
    /// one is reported before listening.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidInput(format!("TLS: {e}")))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let bad = |e: &dyn std::fmt::Display| {
                    Error::InvalidInput(format!("TLS: client CA {}: {e}", ca.display()))
                };
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots.add(c).map_err(|e| bad(&e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| bad(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "TLS: certificate {} and key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The one crypto provider: ring rather than aws-lc-rs, minutes less to
/// build. Its lack of post-quantum key exchange is why rustls marks it
/// deprecated.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidInput(format!("TLS: {what} {}: {e}", path.display())))
}

/// The certificates in a PEM file; none is an error.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidInput(format!("TLS: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "TLS: no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path, "key file")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| Error::InvalidInput(format!("TLS: no private key in {}: {e}", path.display())))
}

/// A one-line explanation of a TLS failure in a client's error text,
/// naming the setting to change; None when the text is not about TLS.
pub fn explain(error: &str, names: &Names) -> Option<String> {
    // Clients spell the same failure `UnknownIssuer`, `unknown issuer` or
    // `unknown_issuer`: compared without case, spaces and underscores.
    let compact = |t: &str| -> String {
        t.chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let e = compact(error);
    let found = |needles: &[&str]| needles.iter().any(|n| e.contains(&compact(n)));
    let hint = if found(&["unknown issuer", "unknown ca", "self signed"]) {
        format!(
            "the server's certificate is not signed by a trusted CA (give its CA with {})",
            names.ca
        )
    } else if found(&[
        "not valid for name",
        "hostname mismatch",
        "certificate is not valid for",
    ]) {
        match names.server_name {
            Some(n) => format!(
                "the server's certificate is for another name (set {n}, or connect by that name)"
            ),
            None => "the server's certificate is for another name than the address connected to"
                .to_owned(),
        }
    } else if found(&["expired", "not valid yet"]) {
        "the server's certificate has expired or is not valid yet".to_owned()
    } else if found(&[
        "certificate required",
        "handshake failure",
        "bad certificate",
    ]) {
        format!(
            "the server refused the TLS handshake: it may require a client certificate ({}) it trusts",
            names.cert
        )
    } else if found(&[
        "invalid content type",
        "corrupt message",
        "invalid message",
        "record overflow",
        "wrong version number",
    ]) {
        "the server did not answer in TLS: the port may be a plain-text listener".to_owned()
    } else if found(&["invalid peer certificate", "invalid certificate"]) {
        "the server's certificate was refused".to_owned()
    } else {
        return None;
    };
    Some(hint)
}

/// Verifies the server's certificate as `inner` does, for `name` rather
/// than the host connected to (`tls_server_name`).
#[derive(Debug)]
struct Named {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate: `insecure`, set only when asked by name.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let t = Tls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Tls::default()
        };
        let e = t.client_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("riffle-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = certificates(&empty).unwrap_err().to_string();
        assert!(e.contains("no certificate in"), "{e}");
        let server = ServerTls {
            cert: empty.clone(),
            key: empty,
            client_ca: None,
        };
        let e = server.server_config(&[]).unwrap_err().to_string();
        assert!(e.contains("no certificate in"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_server_needs_a_certificate_and_key() {
        let e = Tls::default().server().unwrap_err().to_string();
        assert!(e.contains("tls_cert and tls_key"), "{e}");
    }

    #[test]
    fn insecure_needs_no_roots() {
        let t = Tls {
            insecure: true,
            ..Tls::default()
        };
        assert!(t.client_config().is_ok());
    }

    #[test]
    fn tls_failures_are_explained_with_the_names_given() {
        let names = Names::default();
        let hint = explain("invalid peer certificate: UnknownIssuer", &names).unwrap();
        assert!(hint.contains("tls_ca"), "{hint}");
        let hint = explain("invalid peer certificate: NotValidForName", &names).unwrap();
        assert!(hint.contains("tls_server_name"), "{hint}");
        let hint = explain("received fatal alert: BadCertificate", &names).unwrap();
        assert!(hint.contains("client certificate"), "{hint}");
        assert_eq!(explain("connection refused", &names), None);
        let flags = Names {
            ca: "--ca",
            cert: "--cert and --key",
            server_name: None,
        };
        let hint = explain("invalid peer certificate: UnknownIssuer", &flags).unwrap();
        assert!(hint.contains("--ca"), "{hint}");
        let hint = explain("invalid peer certificate: NotValidForName", &flags).unwrap();
        assert!(!hint.contains("tls_server_name"), "{hint}");
    }
}
