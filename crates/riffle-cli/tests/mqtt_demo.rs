//! The heater demo with heaters speaking MQTT, through a real Mosquitto
//! broker this test starts: it converges like the demo on the log.

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
    fn start(dir: &Path) -> Self {
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
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nuser root\n"),
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
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mqtt-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Mosquitto::start(&dir);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let out = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["--in-memory", "demo", "heater", "--mqtt", &url])
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
    let _ = std::fs::remove_dir_all(&dir);
}
