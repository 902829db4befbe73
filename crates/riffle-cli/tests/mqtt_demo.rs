//! The heater demo with heaters speaking MQTT, through a real Mosquitto
//! broker this test starts: it converges like the demo on the log, on a
//! plain listener and on one that wants TLS, a client certificate and a
//! password.

#[path = "../../riffle-net/tests/common/certs.rs"]
mod certs;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    /// Listens on a free port with the listener settings `listener` (and
    /// the broker-wide `general`).
    fn start(dir: &Path, general: &str, listener: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("mosquitto.conf");
        // Without TCP_NODELAY Mosquitto holds small messages back for up
        // to the peer's delayed ACK (40 ms): the README says the same.
        std::fs::write(
            &conf,
            format!(
                "{general}user root\nlistener {port} 127.0.0.1\nset_tcp_nodelay true\n{listener}"
            ),
        )
        .unwrap();
        let program = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto not found: install the Debian package mosquitto (scripts/setup.sh --test)");
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn heater_demo_over_mqtt_converges_and_every_record_crosses_the_broker() {
    let dir = scratch("mqtt-demo");
    let broker = Mosquitto::start(&dir, "allow_anonymous true\n", "");
    converges(
        &["--in-memory"],
        &format!("mqtt://127.0.0.1:{}", broker.port),
        &[],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same with the controller on Kafka (`RIFFLE_TEST_BROKERS`, set by
/// scripts/test.sh), through an MQTT listener that wants TLS with a client
/// certificate signed by the test's CA, and a user's password (read from a
/// file by the demo, as a deployment would keep it).
#[test]
fn heater_demo_over_mqtt_with_tls_a_client_certificate_and_a_password_converges() {
    let dir = scratch("mqtt-demo-tls");
    let certs = certs::Certs::new("mqtt-demo-tls");
    let passwords = dir.join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["heaters", "s3cret"])
        .output()
        .expect("mosquitto_passwd runs (Debian package mosquitto)");
    assert!(made.status.success(), "{made:?}");
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let s = certs::Certs::s;
    let broker = Mosquitto::start(
        &dir,
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            s(&certs.ca),
            s(&certs.server_cert),
            s(&certs.server_key)
        ),
    );
    let options = [
        format!("tls_ca={}", s(&certs.ca)),
        format!("tls_cert={}", s(&certs.client_cert)),
        format!("tls_key={}", s(&certs.client_key)),
        "user=heaters".to_owned(),
        format!("password=${{file:{}}}", secret.display()),
    ];
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let brokers = std::env::var("RIFFLE_TEST_BROKERS").expect(
        "RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it",
    );
    converges(&["-b", &brokers], &url, &options);
    // Without the password, or without the client certificate, the broker
    // refuses, and the demo says so in a line.
    let refused = |given: &[&String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_riffle"))
            .args(["--in-memory", "demo", "heater", "--mqtt", &url])
            .args(given.iter().flat_map(|o| ["--mqtt-option", o.as_str()]))
            .args(["--heaters", "10", "--duration", "1m"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines().last().unwrap_or_default().to_owned()
    };
    let e = refused(&[&options[0], &options[1], &options[2]]);
    assert!(
        e.contains("authentication failed") && e.contains("not authorized"),
        "{e}"
    );
    let e = refused(&[&options[0], &options[3], &options[4]]);
    assert!(e.contains("TLS") && e.contains("client certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the demo of 100 heaters for 30 simulated minutes on the log
/// `log` (riffle's first arguments), through the MQTT broker at `url`
/// (with `--mqtt-option` for each of `options`), on fresh topics: every
/// heater reaches its band, none is ever out of it, and the records cross
/// the broker both ways.
fn converges(log: &[&str], url: &str, options: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(log)
        .args(["demo", "heater", "--fresh", "--mqtt", url])
        .args(options.iter().flat_map(|o| ["--mqtt-option", o.as_str()]))
        .args(["--heaters", "100", "--duration", "30m", "--seed", "5"])
        .env_remove("RIFFLE_BROKERS")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains(&format!("heaters on MQTT at {url}")), "{s}");
    assert!(s.contains("Settling  100/100 reached their band"), "{s}");
    assert!(s.contains("violations 0"), "{s}");
    // What the heaters sent reached the controller through the broker, and
    // the controller's commands reached the heaters the same way (the last
    // few may still be in flight when the run ends).
    let bridges = s
        .lines()
        .find(|l| l.starts_with("MQTT bridges"))
        .expect("bridge counts");
    let n: Vec<u64> = bridges
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 4, "{bridges}");
    let most = |got: u64, of: u64| got > 0 && got * 100 >= of * 98;
    assert!(n[0] > 1000 && most(n[1], n[0]), "{bridges}");
    assert!(most(n[3], n[2]), "{bridges}");
    let controller = s.lines().find(|l| l.starts_with("Controller")).unwrap();
    let sent = controller
        .split(" commands sent")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("commands sent");
    assert!(most(n[2], sent), "{controller}\n{bridges}");
}
