//! The TLS settings every connector shares, against a real TLS server
//! (`openssl s_server`, asking for a client certificate): a handshake with
//! the right CA and client certificate succeeds and carries bytes; an
//! untrusted server certificate, a wrong server name and a missing client
//! certificate each fail with an explanation naming the option to change.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, program, Certs, Server};
use riffle_connectors::tls::{explain, from_options, Tls};
use riffle_connectors::Options;
use rustls::pki_types::ServerName;

/// `openssl s_server` on a free port with the test CA's server
/// certificate, requiring a client certificate the CA signed.
fn tls_server(certs: &Certs) -> Server {
    let port = free_port();
    let mut s = Server::new(
        "openssl s_server",
        program("openssl", "openssl"),
        &[
            "s_server",
            "-accept",
            "{port}",
            "-cert",
            &Certs::s(&certs.server_cert),
            "-key",
            &Certs::s(&certs.server_key),
            "-CAfile",
            &Certs::s(&certs.ca),
            "-Verify",
            "1",
            "-verify_return_error",
            "-rev",
        ],
        port,
        certs.dir.clone(),
    );
    s.start();
    s
}

fn tls(pairs: &[(&str, String)]) -> Tls {
    let mut o = Options::from_pairs("test", pairs.iter().map(|(k, v)| (*k, v.clone())));
    from_options(&mut o, true).unwrap().unwrap()
}

/// Handshakes with `server` and has it reverse a line (`-rev`); the error
/// text when anything fails.
fn round_trip(server: &Server, tls: &Tls, host: &str) -> Result<String, String> {
    let config = tls.client_config().map_err(|e| e.to_string())?;
    let name = ServerName::try_from(tls.server_name(host).to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
    let sock = TcpStream::connect(server.address()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    stream
        .write_all(b"riffle\n")
        .and_then(|_| stream.flush())
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\n") {
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&got).trim().to_owned())
}

#[test]
fn the_shared_tls_settings_verify_the_server_and_present_the_client() {
    let certs = Certs::new("tls");
    let server = tls_server(&certs);
    let good = tls(&[
        ("tls_ca", Certs::s(&certs.ca)),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
    ]);
    assert_eq!(round_trip(&server, &good, "127.0.0.1").unwrap(), "elffir");
    assert_eq!(round_trip(&server, &good, "localhost").unwrap(), "elffir");

    // A server certificate from a CA not given.
    let untrusted = tls(&[
        ("tls_ca", Certs::s(&certs.other_ca)),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
    ]);
    let e = round_trip(&server, &untrusted, "127.0.0.1").unwrap_err();
    assert!(explain(&e).unwrap().contains("tls_ca"), "{e}");

    // The right CA, but a name the certificate does not carry.
    let e = round_trip(&server, &good, "riffle.example").unwrap_err();
    assert!(explain(&e).unwrap().contains("tls_server_name"), "{e}");
    let renamed = tls(&[
        ("tls_ca", Certs::s(&certs.ca)),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
        ("tls_server_name", "localhost".into()),
    ]);
    assert_eq!(
        round_trip(&server, &renamed, "riffle.example").unwrap(),
        "elffir"
    );

    // No client certificate for a server that requires one.
    let anonymous = tls(&[("tls_ca", Certs::s(&certs.ca))]);
    let e = round_trip(&server, &anonymous, "127.0.0.1").unwrap_err();
    assert!(explain(&e).unwrap().contains("client certificate"), "{e}");

    // Skipping verification, asked by name, accepts the unknown CA.
    let insecure = tls(&[
        ("tls_insecure", "true".into()),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
    ]);
    assert_eq!(
        round_trip(&server, &insecure, "riffle.example").unwrap(),
        "elffir"
    );
}
