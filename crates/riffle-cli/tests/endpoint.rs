//! `--http` kept to those who should see it, through the `riffle` binary:
//! refused on an address other hosts reach without a token unless waived
//! by name, served over HTTPS behind a token read from a file, and the
//! flags that do not fit together refused in one line before anything
//! starts.

#[path = "../../riffle-net/tests/common/certs.rs"]
mod certs;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use certs::Certs;
use riffle::serve::http::{self, Client};
use riffle::serve::{Names, Tls};

const T: Duration = Duration::from_secs(5);

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("endpoint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `riffle connect` following an empty file into another, with `extra`
/// flags.
fn connect(dir: &Path, extra: &[&str]) -> Command {
    std::fs::write(dir.join("in.jsonl"), "").unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_riffle"));
    c.args(["connect", "--source", "file:path=in.jsonl,follow=true"])
        .args(["--sink", "file:path=out.jsonl"])
        .args(extra)
        .current_dir(dir)
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RIFFLE_HTTP_TOKEN")
        .env_remove("RUST_LOG")
        .env("RIFFLE_DATA_DIR", dir.join("data"));
    c
}

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits for the line that says where it serves: the
/// process, that line, and the `host:port` in it.
fn serving(mut cmd: Command) -> (Running, String, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = tx.send(line);
        }
    });
    let running = Running(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("riffle connect says where it serves");
        if let Some((_, rest)) = line.split_once("://") {
            if line.contains("serving") {
                let addr = rest.split('/').next().unwrap().to_owned();
                return (running, line, addr);
            }
        }
    }
}

/// The endpoint's port on the loopback address.
fn local(addr: &str) -> String {
    format!("127.0.0.1:{}", addr.rsplit_once(':').unwrap().1)
}

#[test]
fn an_address_others_reach_needs_a_token_or_the_waiver() {
    let dir = temp_dir("waiver");
    let connect_refused = connect(&dir, &["--http", "0.0.0.0:0"]).output().unwrap();
    // The heater demo too, before it starts anything.
    let demo_refused = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["demo", "heater", "--in-memory", "--http", "0.0.0.0:0"])
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RIFFLE_HTTP_TOKEN")
        .output()
        .unwrap();
    for out in [connect_refused, demo_refused] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--http 0.0.0.0:0 is reachable from other hosts"),
            "{err}"
        );
        assert!(err.contains("--http-no-token"), "{err}");
    }

    // Waived by name: served to anyone.
    let (_running, line, addr) =
        serving(connect(&dir, &["--http", "0.0.0.0:0", "--http-no-token"]));
    assert!(line.contains("(no token)"), "{line}");
    let (status, _) = http::get(&local(&addr), "/metrics", T).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn https_behind_a_token_from_a_file() {
    let dir = temp_dir("https");
    let certs = Certs::new("cli-https");
    std::fs::write(dir.join("token"), "t0ken-from-a-file\n").unwrap();
    let (cert, key) = (Certs::s(&certs.server_cert), Certs::s(&certs.server_key));
    let (_running, line, addr) = serving(connect(
        &dir,
        &[
            "--http",
            "127.0.0.1:0",
            "--http-token-file",
            "token",
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
        ],
    ));
    assert!(line.contains("serving https://"), "{line}");
    assert!(line.contains("bearer token required"), "{line}");
    let names = Names::default();
    let tls = Tls {
        ca: Some(certs.ca.clone()),
        ..Tls::default()
    };
    let config = tls.client_config().unwrap();
    let with = Client::new(
        Some("t0ken-from-a-file".into()),
        Some(config.clone()),
        names,
    );
    let without = Client::new(None, Some(config), names);
    let (status, body) = with.get(&addr, "/metrics", T).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("riffle_pipeline_records_in_total"), "{body}");
    assert_eq!(without.get(&addr, "/metrics", T).unwrap().0, 401);
    assert_eq!(without.get(&addr, "/healthz", T).unwrap().0, 200);
}

#[test]
fn flags_that_do_not_fit_are_refused_before_anything_starts() {
    let dir = temp_dir("refusals");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--http", "127.0.0.1:0", "--http-tls-cert", "c.pem"],
            "--http-tls-cert and --http-tls-key go together",
        ),
        (
            &["--http-tls-ca", "ca.pem"],
            "--http-tls-ca is given without --http",
        ),
        (
            &["--http", "127.0.0.1:0", "--http-token-file", "missing"],
            "--http-token-file missing",
        ),
        (
            &[
                "--http",
                "127.0.0.1:0",
                "--http-token",
                "a",
                "--http-no-token",
            ],
            "--http-no-token contradicts",
        ),
    ];
    for (args, expected) in cases {
        let out = connect(&dir, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // The token from the environment, given twice.
    let out = connect(&dir, &["--http", "127.0.0.1:0", "--http-token-file", "x"])
        .env("RIFFLE_HTTP_TOKEN", "from-env")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give the --http token once"), "{err}");
}

/// Two controllers of one group on the test broker, each serving `--http`
/// over mutual TLS behind the same token: a state query to either is
/// answered for every heater, by the owner of its partition, the other
/// relaying with the token and its own certificate. Needs
/// `RIFFLE_TEST_BROKERS` (scripts/test.sh sets it).
#[test]
fn peers_relay_state_queries_with_the_token_over_mutual_tls() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export what scripts/kafka.sh env prints");
    let dir = temp_dir("peers");
    let certs = Certs::new("cli-peers");
    std::fs::write(dir.join("token"), "peer-t0ken").unwrap();
    let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (sensor, control) = (format!("sensor-{run}"), format!("control-{run}"));
    let group = format!("peers-{run}");
    let (cert, key, ca) = (
        Certs::s(&certs.server_cert),
        Certs::s(&certs.server_key),
        Certs::s(&certs.ca),
    );
    let controller = |name: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_riffle"));
        c.args(["heater", "controller", "--brokers", &brokers, "-g", &group])
            .args(["--sensor-topic", &sensor, "--control-topic", &control])
            .args(["--dead-letter", &format!("dead-{run}"), "--partitions", "4"])
            .args(["--consumers", "1", "--http", "127.0.0.1:0"])
            .args(["--http-token-file", "token"])
            .args(["--http-tls-cert", &cert, "--http-tls-key", &key])
            .args(["--http-tls-client-ca", &ca, "--http-tls-ca", &ca])
            .current_dir(&dir)
            .env_remove("RIFFLE_HTTP_TOKEN")
            .env_remove("RIFFLE_INSTANCE")
            .env("RIFFLE_DATA_DIR", dir.join(name));
        serving(c)
    };
    let (_a, line, a) = controller("a");
    assert!(line.contains("client certificates required"), "{line}");
    let (_b, _, b) = controller("b");

    // A setting for each heater, keyed by its id.
    let heaters: Vec<String> = (0..16).map(|i| format!("peer-heater-{i:02}")).collect();
    let settings: String = heaters
        .iter()
        .map(|h| format!("{h}|{{\"temperature\": 45.0, \"up_delta\": 1.0, \"down_delta\": 1.0}}\n"))
        .collect();
    let mut produce = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["produce", "--brokers", &brokers, "-t", &sensor])
        .args(["--key-separator", "|"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(settings.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());

    let tls = Tls {
        ca: Some(certs.ca.clone()),
        cert: Some(certs.client_cert.clone()),
        key: Some(certs.client_key.clone()),
        ..Tls::default()
    };
    let client = Client::new(
        Some("peer-t0ken".into()),
        Some(tls.client_config().unwrap()),
        Names::default(),
    );
    // Every heater's state, asked of each process, once the two share the
    // partitions and have read the settings: both name the same owner.
    let ask = |asked: &str, h: &str| -> Result<String, String> {
        match client.get(asked, &format!("/state/{h}"), T) {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["state"]["setting"]["temperature"], 45.0, "{v}");
                Ok(v["owner"].as_str().unwrap().to_owned())
            }
            Ok((status, body)) => Err(format!(
                "{h} asked of {asked}: {status} {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Err(format!("{h} asked of {asked}: {e}")),
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let owners = loop {
        let round: Result<Vec<String>, String> = heaters
            .iter()
            .map(|h| {
                let (by_a, by_b) = (ask(&a, h)?, ask(&b, h)?);
                match by_a == by_b {
                    true => Ok(by_a),
                    false => Err(format!("{h}: owner {by_a} by {a}, {by_b} by {b}")),
                }
            })
            .collect();
        match round {
            // Both own some: half of the answers were relayed, each way.
            Ok(owners) if owners.contains(&a) && owners.contains(&b) => break owners,
            Ok(owners) => assert!(
                std::time::Instant::now() < deadline,
                "one process owns every heater after 60 s: {owners:?}"
            ),
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "no consistent answers within 60 s; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(owners.iter().all(|o| o == &a || o == &b), "{owners:?}");
}
