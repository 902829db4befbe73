//! The flags that keep the `--http` operations endpoint to those who should
//! see it: a bearer token, TLS, and the rule that an endpoint others can
//! reach has a token unless the user says otherwise.
//!
//! Without a token anyone who reaches the port reads the metrics, every
//! key's state and the dashboard. On a loopback address that is the local
//! user only, so it stays allowed; on any other address it is refused
//! unless `--http-no-token` says it is meant.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use clap::Args;
use riffle::serve::{Endpoint, Names, Routes, Security, Tls};
use riffle::{Error, Result};

/// What the TLS flags are called, for errors that name the one to change.
const NAMES: Names = Names {
    ca: "--http-tls-ca",
    cert: "--http-tls-cert and --http-tls-key",
    server_name: None,
};

/// Who may use the `--http` endpoint.
#[derive(Args, Clone, Debug, Default)]
pub struct HttpSecurity {
    /// The bearer token every request to the --http endpoint must carry
    /// (all but /healthz); prefer RIFFLE_HTTP_TOKEN or --http-token-file,
    /// which `ps` does not show.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RIFFLE_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub http_token: Option<String>,
    /// Read the --http endpoint's bearer token from this file (one line).
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Serve --http on an address others can reach without a token,
    /// knowingly (anyone reaching it reads metrics, state and the dashboard).
    #[arg(long)]
    pub http_no_token: bool,
    /// Serve --http over HTTPS with this certificate (PEM, chain first).
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// Require HTTPS clients of --http to present a certificate signed by a
    /// CA of this file (mutual TLS); peers present --http-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub http_tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that signs the other processes' --http certificates,
    /// checked when a state query is relayed to them [default: the
    /// system's trusted roots].
    #[arg(long, value_name = "FILE")]
    pub http_tls_ca: Option<PathBuf>,
}

impl HttpSecurity {
    /// Starts the endpoint on `bind`, secured as the flags ask; `more`
    /// answers the paths it does not know itself.
    pub fn start(&self, bind: &str, more: Option<Routes>) -> Result<Endpoint> {
        let security = self.security(bind)?;
        Endpoint::start_secured(bind, more, &security)
    }

    /// Checks the flags for `--http` at `bind` (None: no endpoint), before
    /// anything is connected or started.
    pub fn check(&self, bind: Option<&str>) -> Result<()> {
        match bind {
            Some(bind) => self.security(bind).map(|_| ()),
            None => self.check_unused(),
        }
    }

    /// Refuses the flags when given without `--http`, where they would do
    /// nothing. (The token may come from the environment: not checked.)
    pub fn check_unused(&self) -> Result<()> {
        let given = [
            ("--http-token-file", self.http_token_file.is_some()),
            ("--http-no-token", self.http_no_token),
            ("--http-tls-cert", self.http_tls_cert.is_some()),
            ("--http-tls-key", self.http_tls_key.is_some()),
            ("--http-tls-client-ca", self.http_tls_client_ca.is_some()),
            ("--http-tls-ca", self.http_tls_ca.is_some()),
        ];
        match given.iter().find(|(_, on)| *on) {
            Some((flag, _)) => Err(invalid(format!("{flag} is given without --http"))),
            None => Ok(()),
        }
    }

    /// The endpoint's settings, checked: a token given once and not empty,
    /// a certificate with its key, and a token on any address but a
    /// loopback one unless waived.
    pub fn security(&self, bind: &str) -> Result<Security> {
        let token = match (&self.http_token, &self.http_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give the --http token once: --http-token (or RIFFLE_HTTP_TOKEN) or --http-token-file"
                        .into(),
                ))
            }
            (Some(t), None) => Some(non_empty(t.trim(), "--http-token")?),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    invalid(format!("--http-token-file {}: {e}", file.display()))
                })?;
                let what = format!("--http-token-file {}", file.display());
                Some(non_empty(text.trim(), &what)?)
            }
            (None, None) => None,
        };
        if token.is_some() && self.http_no_token {
            return Err(invalid(
                "--http-no-token contradicts the token given (--http-token, RIFFLE_HTTP_TOKEN or --http-token-file)".into(),
            ));
        }
        if token.is_none() && !self.http_no_token && !loopback(bind)? {
            return Err(invalid(format!(
                "--http {bind} is reachable from other hosts: give it a token \
                 (--http-token-file, RIFFLE_HTTP_TOKEN or --http-token), or pass \
                 --http-no-token to serve it to anyone"
            )));
        }
        let tls = match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(cert), Some(key)) => Some(riffle::serve::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.http_tls_client_ca.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "--http-tls-cert and --http-tls-key go together".into(),
                ))
            }
        };
        if tls.is_none() {
            if self.http_tls_client_ca.is_some() {
                return Err(invalid(
                    "--http-tls-client-ca needs --http-tls-cert and --http-tls-key".into(),
                ));
            }
            if self.http_tls_ca.is_some() {
                return Err(invalid(
                    "--http-tls-ca needs --http-tls-cert and --http-tls-key (peers speak HTTPS only when this process does)".into(),
                ));
            }
        }
        // Under mutual TLS the peers require a client certificate of each
        // other: this process's own (usable for both ends).
        let mutual = self.http_tls_client_ca.is_some();
        let peers = Tls {
            ca: self.http_tls_ca.clone(),
            cert: self.http_tls_cert.clone().filter(|_| mutual),
            key: self.http_tls_key.clone().filter(|_| mutual),
            names: NAMES,
            ..Tls::default()
        };
        Ok(Security { token, tls, peers })
    }

    /// How the endpoint is secured, for the line that says where it serves.
    pub fn describe(&self, endpoint: &Endpoint) -> String {
        let token = if self.http_no_token
            || (self.http_token.is_none() && self.http_token_file.is_none())
        {
            "no token"
        } else {
            "bearer token required but on /healthz"
        };
        let tls = match (endpoint.scheme(), &self.http_tls_client_ca) {
            ("https", Some(_)) => ", client certificates required",
            _ => "",
        };
        format!("{token}{tls}")
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

/// The token, if it can be one: not empty, and printable ASCII without
/// spaces (it travels in an HTTP header).
fn non_empty(token: &str, what: &str) -> Result<String> {
    if token.is_empty() {
        return Err(invalid(format!("{what}: the token is empty")));
    }
    if !riffle::serve::http::valid_token(token) {
        return Err(invalid(format!(
            "{what}: the token must be printable ASCII without spaces (it is sent in an HTTP header)"
        )));
    }
    Ok(token.to_owned())
}

/// Whether `bind` is a loopback address only (every address it resolves to).
fn loopback(bind: &str) -> Result<bool> {
    let addrs: Vec<_> = bind
        .to_socket_addrs()
        .map_err(|e| invalid(format!("--http {bind}: {e}")))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(s: &HttpSecurity, bind: &str) -> String {
        s.security(bind).unwrap_err().to_string()
    }

    #[test]
    fn loopback_without_a_token_is_allowed_and_others_are_refused() {
        let open = HttpSecurity::default();
        for bind in ["127.0.0.1:9464", "[::1]:0", "localhost:0"] {
            let s = open.security(bind).unwrap();
            assert_eq!(s.token, None, "{bind}");
        }
        for bind in ["0.0.0.0:9464", "[::]:9464"] {
            let e = refusal(&open, bind);
            assert!(e.contains("--http-no-token"), "{e}");
            assert!(e.contains("--http-token-file"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let waived = HttpSecurity {
            http_no_token: true,
            ..HttpSecurity::default()
        };
        assert!(waived.security("0.0.0.0:9464").is_ok());
        let with_token = HttpSecurity {
            http_token: Some("s3cret\n".into()),
            ..HttpSecurity::default()
        };
        let s = with_token.security("0.0.0.0:9464").unwrap();
        assert_eq!(s.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn contradictions_and_halves_are_refused_by_name() {
        let both = HttpSecurity {
            http_token: Some("a".into()),
            http_no_token: true,
            ..HttpSecurity::default()
        };
        assert!(refusal(&both, "127.0.0.1:0").contains("contradicts"));
        let half = HttpSecurity {
            http_tls_cert: Some("c.pem".into()),
            ..HttpSecurity::default()
        };
        assert!(refusal(&half, "127.0.0.1:0").contains("go together"));
        let ca_alone = HttpSecurity {
            http_tls_client_ca: Some("ca.pem".into()),
            ..HttpSecurity::default()
        };
        assert!(refusal(&ca_alone, "127.0.0.1:0").contains("--http-tls-client-ca needs"));
        let empty = HttpSecurity {
            http_token: Some("  ".into()),
            ..HttpSecurity::default()
        };
        assert!(refusal(&empty, "127.0.0.1:0").contains("empty"));
        let spaced = HttpSecurity {
            http_token: Some("two words".into()),
            ..HttpSecurity::default()
        };
        assert!(refusal(&spaced, "127.0.0.1:0").contains("printable ASCII"));
        let unused = HttpSecurity {
            http_tls_ca: Some("ca.pem".into()),
            ..HttpSecurity::default()
        };
        let e = unused.check_unused().unwrap_err().to_string();
        assert!(e.contains("--http-tls-ca is given without --http"), "{e}");
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let file = std::env::temp_dir().join(format!("riffle-token-{}", std::process::id()));
        std::fs::write(&file, "from-a-file\n").unwrap();
        let s = HttpSecurity {
            http_token_file: Some(file.clone()),
            ..HttpSecurity::default()
        };
        assert_eq!(
            s.security("0.0.0.0:0").unwrap().token.as_deref(),
            Some("from-a-file")
        );
        let _ = std::fs::remove_file(&file);
        let e = refusal(&s, "127.0.0.1:0");
        assert!(e.contains("--http-token-file"), "{e}");
    }
}
