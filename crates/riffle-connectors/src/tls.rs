//! The TLS options every network connector takes, configured the same way
//! for all: a `tls` switch (implied by a TLS URL scheme such as
//! `mqtts://`), the CA that signs the server's certificate, a client
//! certificate and key for servers that ask for one, the name to check the
//! server's certificate against, and skipping that check only when asked
//! by name.
//!
//! The settings themselves, and the client and server configurations built
//! from them, are `riffle-net`'s ([`Tls`]), shared with the operations
//! endpoint: every connector's client is given the same
//! [`rustls::ClientConfig`], so that a certificate is read, checked and
//! explained in one place. Without `tls_ca` the system's trusted roots are
//! used, as for any managed broker with a public certificate.

use riffle::{Error, Result};
pub use riffle_net::tls::{certificates, private_key, Names, ServerTls, Tls};

use crate::options::{Fallback, Opt, Options, Role};

/// The TLS options every network connector takes, for its option list.
pub const OPTIONS: [Opt; 6] = [
    Opt {
        name: "tls",
        role: Role::Both,
        default: Fallback::Described("false, or true for a TLS scheme (mqtts, tls, amqps, rediss, https)"),
        help: "connect with TLS",
    },
    Opt {
        name: "tls_ca",
        role: Role::Both,
        default: Fallback::Described("the system's trusted roots"),
        help: "PEM file of the CA certificates that sign the server's certificate",
    },
    Opt {
        name: "tls_cert",
        role: Role::Both,
        default: Fallback::None,
        help: "PEM file of the client certificate (chain), for servers that ask for one",
    },
    Opt {
        name: "tls_key",
        role: Role::Both,
        default: Fallback::None,
        help: "PEM file of the client certificate's private key",
    },
    Opt {
        name: "tls_server_name",
        role: Role::Both,
        default: Fallback::Described("the URL's host"),
        help: "the name the server's certificate must carry",
    },
    Opt {
        name: "tls_insecure",
        role: Role::Both,
        default: Fallback::Value("false"),
        help: "accept any server certificate (testing only: anyone on the path can read and change the traffic)",
    },
];

/// Reads the TLS options; `scheme_tls` says whether the URL's scheme asks
/// for TLS. None when the connection is plain. A TLS option given for a
/// plain connection is an error rather than silently unused.
pub fn from_options(o: &mut Options, scheme_tls: bool) -> Result<Option<Tls>> {
    let on = o.parse_or("tls", scheme_tls)?;
    let tls = Tls {
        ca: o.string("tls_ca").map(Into::into),
        cert: o.string("tls_cert").map(Into::into),
        key: o.string("tls_key").map(Into::into),
        server_name: o.string("tls_server_name"),
        insecure: o.read(&OPTIONS, Role::Both, "tls_insecure", |v| {
            v.parse()
                .map_err(|e: std::str::ParseBoolError| e.to_string())
        })?,
        names: Names::default(),
    };
    if !on {
        if tls != Tls::default() {
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

/// A one-line explanation of a TLS failure in a client's error text,
/// naming the option to change; None when the text is not about TLS.
pub fn explain(error: &str) -> Option<String> {
    riffle_net::tls::explain(error, &Names::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(pairs: &[(&str, &str)], scheme_tls: bool) -> Result<Option<Tls>> {
        from_options(
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
