//! TLS for every network connector, configured the same way for all: a
//! `tls` switch (implied by a TLS URL scheme such as `mqtts://`), the CA
//! that signs the server's certificate, a client certificate and key for
//! servers that ask for one, the name to check the server's certificate
//! against, and skipping that check only when asked by name.
//!
//! Every connector's client is given the same [`rustls::ClientConfig`],
//! built here once per connection setup, so that a certificate is read,
//! checked and explained in one place. Without `tls_ca` the system's
//! trusted roots are used, as for any managed broker with a public
//! certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use riffle::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::options::{Opt, Options, Role};

/// The TLS options every network connector takes, for its option list.
pub const OPTIONS: [Opt; 6] = [
    Opt {
        name: "tls",
        role: Role::Both,
        default: Some("false, or true for a TLS scheme (mqtts, tls, amqps, rediss, https)"),
        help: "connect with TLS",
    },
    Opt {
        name: "tls_ca",
        role: Role::Both,
        default: Some("the system's trusted roots"),
        help: "PEM file of the CA certificates that sign the server's certificate",
    },
    Opt {
        name: "tls_cert",
        role: Role::Both,
        default: None,
        help: "PEM file of the client certificate (chain), for servers that ask for one",
    },
    Opt {
        name: "tls_key",
        role: Role::Both,
        default: None,
        help: "PEM file of the client certificate's private key",
    },
    Opt {
        name: "tls_server_name",
        role: Role::Both,
        default: Some("the URL's host"),
        help: "the name the server's certificate must carry",
    },
    Opt {
        name: "tls_insecure",
        role: Role::Both,
        default: Some("false"),
        help: "accept any server certificate (testing only: anyone on the path can read and change the traffic)",
    },
];

/// A connector's TLS settings, when it connects with TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure: bool,
}

impl Tls {
    /// Reads the TLS options; `scheme_tls` says whether the URL's scheme
    /// asks for TLS. None when the connection is plain. A TLS option given
    /// for a plain connection is an error rather than silently unused.
    pub fn from_options(o: &mut Options, scheme_tls: bool) -> Result<Option<Self>> {
        let on = o.parse_or("tls", scheme_tls)?;
        let tls = Self {
            ca: o.string("tls_ca").map(PathBuf::from),
            cert: o.string("tls_cert").map(PathBuf::from),
            key: o.string("tls_key").map(PathBuf::from),
            server_name: o.string("tls_server_name"),
            insecure: o.parse_or("tls_insecure", false)?,
        };
        if !on {
            if tls != Self::default() {
                return Err(Error::InvalidInput(format!(
                    "{}: TLS options given for a plain connection: use a TLS URL scheme or tls=true",
                    o.connector()
                )));
            }
            return Ok(None);
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(Error::InvalidInput(format!(
                "{}: tls_cert and tls_key go together",
                o.connector()
            )));
        }
        Ok(Some(tls))
    }

    /// The name to check the server's certificate against.
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }

    /// The client configuration for these settings: the certificates are
    /// read now, so that a missing or malformed file is reported before
    /// connecting.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        // ring rather than aws-lc-rs: minutes less to build. Its lack of
        // post-quantum key exchange is why rustls marks it deprecated.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
                .map_err(|e| Error::InvalidInput(format!("TLS: tls_server_name '{name}': {e}")))?;
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
                        Error::InvalidInput(format!("TLS: tls_ca {}: {e}", ca.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::InvalidInput(
                        "TLS: no trusted roots on this system: give the server's CA with tls_ca"
                            .into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
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
/// naming what to change; None when the text is not about TLS.
pub fn explain(error: &str) -> Option<&'static str> {
    // Clients spell the same failure `UnknownIssuer`, `unknown issuer` or
    // `unknown_issuer`: compared without case, spaces and underscores.
    let compact = |t: &str| -> String {
        t.chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let e = compact(error);
    let hints: [(&[&str], &str); 6] = [
        (
            &["unknownissuer", "unknown issuer", "unknown ca", "self signed", "self-signed"],
            "the server's certificate is not signed by a trusted CA (give its CA with tls_ca)",
        ),
        (
            &["notvalidforname", "not valid for name", "hostname mismatch", "certificate is not valid for"],
            "the server's certificate is for another name (set tls_server_name, or connect by that name)",
        ),
        (
            &["expired", "notvalidyet"],
            "the server's certificate has expired or is not valid yet",
        ),
        (
            &["certificaterequired", "certificate required", "handshake failure", "bad certificate"],
            "the server refused the TLS handshake: it may require a client certificate (tls_cert and tls_key) it trusts",
        ),
        (
            &["invalidcontenttype", "corrupt message", "invalid message", "record overflow", "wrong version number"],
            "the server did not answer in TLS: the port may be a plain-text listener",
        ),
        (
            &["invalid peer certificate", "invalidcertificate"],
            "the server's certificate was refused",
        ),
    ];
    hints
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| e.contains(&compact(n))))
        .map(|(_, hint)| *hint)
}

/// Verifies the server's certificate as `inner` does, for `name` rather
/// than the host connected to: `tls_server_name`.
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

/// Accepts any server certificate: `tls_insecure=true`, and only then.
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

    fn tls(pairs: &[(&str, &str)], scheme_tls: bool) -> Result<Option<Tls>> {
        Tls::from_options(
            &mut Options::from_pairs("mqtt", pairs.iter().copied()),
            scheme_tls,
        )
    }

    #[test]
    fn the_scheme_turns_tls_on_and_options_need_it_on() {
        assert_eq!(tls(&[], false).unwrap(), None);
        assert_eq!(tls(&[], true).unwrap(), Some(Tls::default()));
        assert_eq!(
            tls(&[("tls", "true")], false).unwrap(),
            Some(Tls::default())
        );
        let e = tls(&[("tls_ca", "ca.pem")], false).unwrap_err().to_string();
        assert!(
            e.contains("TLS options given for a plain connection"),
            "{e}"
        );
        let e = tls(&[("tls_cert", "c.pem")], true).unwrap_err().to_string();
        assert!(e.contains("tls_cert and tls_key go together"), "{e}");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let t = tls(&[("tls_ca", "/nonexistent/ca.pem")], true)
            .unwrap()
            .unwrap();
        let e = t.client_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("riffle-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = certificates(&empty).unwrap_err().to_string();
        assert!(e.contains("no certificate in"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn insecure_needs_no_roots() {
        let t = tls(&[("tls_insecure", "true")], true).unwrap().unwrap();
        assert!(t.client_config().is_ok());
    }

    #[test]
    fn tls_failures_are_explained() {
        let hint = explain("invalid peer certificate: UnknownIssuer").unwrap();
        assert!(hint.contains("tls_ca"), "{hint}");
        let hint = explain("invalid peer certificate: NotValidForName").unwrap();
        assert!(hint.contains("tls_server_name"), "{hint}");
        let hint = explain("received fatal alert: BadCertificate").unwrap();
        assert!(hint.contains("client certificate"), "{hint}");
        assert_eq!(explain("connection refused"), None);
    }
}
