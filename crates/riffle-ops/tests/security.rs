//! The operations endpoint kept to those who should see it, on real
//! sockets: a bearer token (required, accepted, wrong), `/healthz` open to
//! probes, a browser signing in with `?token=` once, HTTPS with a
//! certificate made by openssl, mutual TLS, and the failures a user meets
//! first (an untrusted certificate, no client certificate, plain HTTP to an
//! HTTPS endpoint) each explained in one line.

#[path = "../../riffle-net/tests/common/certs.rs"]
mod certs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use certs::Certs;
use riffle_base::error::Error;
use riffle_ops::http::{self, Client};
use riffle_ops::{Endpoint, Names, Security, ServerTls, Tls};

const T: Duration = Duration::from_secs(5);

/// What the command line calls the TLS settings.
const NAMES: Names = Names {
    ca: "--http-tls-ca",
    cert: "--http-tls-cert and --http-tls-key",
    server_name: None,
};

/// One request written by hand, and the whole answer as text: for the
/// headers a [`Client`] does not show.
fn raw(addr: &str, head: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    write!(conn, "{head}Host: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

fn status(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The value of header `name` in a raw answer.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn with_token(token: &str) -> Security {
    Security {
        token: Some(token.into()),
        ..Security::default()
    }
}

#[test]
fn a_token_is_required_everywhere_but_healthz() {
    let endpoint = Endpoint::start_secured("127.0.0.1:0", None, &with_token("s3cret")).unwrap();
    let addr = endpoint.addr().to_string();

    // No token: 401 with the scheme to use, and one line saying how.
    let answer = raw(&addr, "GET /metrics HTTP/1.1\r\n");
    assert_eq!(status(&answer), 401, "{answer}");
    let challenge = header(&answer, "www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(body.contains("bearer token is required"), "{body}");

    // A wrong token, and a token in another scheme: 401.
    let wrong = Client::new(Some("s3creT".into()), None, NAMES);
    let (s, body) = wrong.get(&addr, "/metrics", T).unwrap();
    assert_eq!(s, 401);
    assert!(String::from_utf8_lossy(&body).contains("wrong bearer token"));
    let basic = raw(
        &addr,
        "GET /metrics HTTP/1.1\r\nAuthorization: Basic czNjcmV0\r\n",
    );
    assert_eq!(status(&basic), 401, "{basic}");

    // The right one: served.
    let right = Client::new(Some("s3cret".into()), None, NAMES);
    let (s, body) = right.get(&addr, "/metrics", T).unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(right.get(&addr, "/state/k", T).unwrap().0, 503);

    // Probes need none.
    let (s, body) = http::get(&addr, "/healthz", T).unwrap();
    assert_eq!((s, body.as_slice()), (200, &b"ok\n"[..]));
}

#[test]
fn a_browser_signs_in_once_with_the_token_in_the_address() {
    let endpoint = Endpoint::start_secured("127.0.0.1:0", None, &with_token("a;b+c/=")).unwrap();
    let addr = endpoint.addr().to_string();

    let answer = raw(&addr, "GET /metrics?token=a%3Bb%2Bc%2F%3D&x=1 HTTP/1.1\r\n");
    assert_eq!(status(&answer), 303, "{answer}");
    assert_eq!(header(&answer, "location"), Some("/metrics?x=1"));
    let cookie = header(&answer, "set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "no Secure over plain HTTP: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap();

    // The cookie stands for the token from then on, beside other cookies.
    let head = format!("GET /metrics HTTP/1.1\r\nCookie: theme=dark; {pair}\r\n");
    assert_eq!(status(&raw(&addr, &head)), 200);
    let forged = "GET /metrics HTTP/1.1\r\nCookie: riffle_token=guess\r\n";
    assert_eq!(status(&raw(&addr, forged)), 401);
    // A wrong token in the address gets no cookie.
    let answer = raw(&addr, "GET /?token=guess HTTP/1.1\r\n");
    assert_eq!(status(&answer), 401, "{answer}");
    assert_eq!(header(&answer, "set-cookie"), None);
}

fn tls_security(certs: &Certs, client_ca: bool) -> Security {
    Security {
        token: Some("s3cret".into()),
        tls: Some(ServerTls {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: client_ca.then(|| certs.ca.clone()),
        }),
        peers: Tls {
            ca: Some(certs.ca.clone()),
            names: NAMES,
            ..Tls::default()
        },
    }
}

fn tls_client(ca: &std::path::Path, cert: Option<(&Certs, bool)>) -> Client {
    let tls = Tls {
        ca: Some(ca.to_path_buf()),
        cert: cert.map(|(c, own)| {
            if own {
                c.server_cert.clone()
            } else {
                c.client_cert.clone()
            }
        }),
        key: cert.map(|(c, own)| {
            if own {
                c.server_key.clone()
            } else {
                c.client_key.clone()
            }
        }),
        names: NAMES,
        ..Tls::default()
    };
    Client::new(
        Some("s3cret".into()),
        Some(tls.client_config().unwrap()),
        NAMES,
    )
}

#[test]
fn a_token_a_header_cannot_carry_is_refused() {
    let e = Endpoint::start_secured("127.0.0.1:0", None, &with_token("two words"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("printable ASCII"), "{e}");
}

#[test]
fn https_round_trip_and_its_failures_in_one_line() {
    let certs = Certs::new("ops-https");
    let endpoint =
        Endpoint::start_secured("127.0.0.1:0", None, &tls_security(&certs, false)).unwrap();
    assert_eq!(endpoint.scheme(), "https");
    let addr = endpoint.addr().to_string();

    let (s, body) = tls_client(&certs.ca, None)
        .get(&addr, "/metrics", T)
        .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let (s, _) = tls_client(&certs.ca, None)
        .get(&addr, "/healthz", T)
        .unwrap();
    assert_eq!(s, 200);

    // A client that does not trust the endpoint's CA is told which flag
    // gives it.
    let e = tls_client(&certs.other_ca, None)
        .get(&addr, "/metrics", T)
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let e = e.to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("not signed by a trusted CA"), "{e}");
    assert!(e.contains("--http-tls-ca"), "{e}");

    // Plain HTTP to it reaches nothing.
    assert!(http::get(&addr, "/healthz", T).is_err());
}

#[test]
fn mutual_tls_takes_only_clients_with_a_certificate_its_ca_signed() {
    let certs = Certs::new("ops-mtls");
    let endpoint =
        Endpoint::start_secured("127.0.0.1:0", None, &tls_security(&certs, true)).unwrap();
    let addr = endpoint.addr().to_string();

    for own in [false, true] {
        // A client certificate, or the endpoint's own (as its peers send).
        let client = tls_client(&certs.ca, Some((&certs, own)));
        let (s, body) = client.get(&addr, "/metrics", T).unwrap();
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    }
    // Without one: refused, and said so (with TLS 1.3 the client learns it
    // at its request, after the handshake).
    let e = tls_client(&certs.ca, None)
        .get(&addr, "/metrics", T)
        .unwrap_err()
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("client certificate"), "{e}");
    assert!(e.contains("--http-tls-cert"), "{e}");
}

#[test]
fn unreadable_certificates_fail_before_listening() {
    let certs = Certs::new("ops-bad-cert");
    let mut security = tls_security(&certs, false);
    security.tls.as_mut().unwrap().key = certs.dir.join("missing.key");
    let e = Endpoint::start_secured("127.0.0.1:0", None, &security)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.key"), "{e}");
}
