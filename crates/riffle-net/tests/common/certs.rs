//! Certificates made with the `openssl` command for the TLS tests of every
//! crate (included by path: `#[path = ".../riffle-net/tests/common/certs.rs"]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificates for the TLS listeners of a test's servers, made with the
/// `openssl` command in a scratch directory: a CA, a server certificate it
/// signs for `127.0.0.1` and `localhost` (good for client authentication
/// too, as a process presents its own to its peers), a client certificate it signs
/// (CN `riffle-client`), and a second CA that signs nothing here, for
/// "untrusted certificate" cases. Every file is PEM; keys are unencrypted.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl Certs {
    pub fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{test}-certs-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = "openssl";
        let run = |args: &[&str]| {
            let out = Command::new(openssl)
                .args(args)
                .current_dir(&dir)
                .output()
                .expect(
                "openssl runs: install the Debian package openssl (scripts/setup.sh --test does)",
            );
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=riffle test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "riffle-client")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        // Servers that drop privileges (Mosquitto as root) must still read them.
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            let _ =
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        }
        Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            dir,
        }
    }

    /// A path as an option value.
    pub fn s(p: &Path) -> String {
        p.display().to_string()
    }
}
