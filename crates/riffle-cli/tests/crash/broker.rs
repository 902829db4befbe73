//! A broker of the test's own (scripts/kafka.sh on a port of its own), for
//! a test that stops and restarts it without disturbing the broker the
//! other tests share.

use std::path::PathBuf;
use std::process::Command;

pub struct OwnBroker {
    port: u16,
    running: bool,
}

impl OwnBroker {
    /// A fresh single-node broker on `KAFKA_PORT + 20` (and the three ports
    /// after it), or on `RIFFLE_TEST_OUTAGE_PORT`.
    pub fn start() -> Self {
        let port = std::env::var("RIFFLE_TEST_OUTAGE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let base: u16 = std::env::var("KAFKA_PORT")
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(19092);
                base + 20
            });
        let mut broker = Self {
            port,
            running: false,
        };
        broker.script("stop", false);
        broker.script("start", true);
        broker.running = true;
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, as an operator or a failing machine's
    /// orderly shutdown would), keeping its data.
    pub fn stop(&mut self) {
        self.script("stop", false);
        self.running = false;
    }

    /// Starts the stopped broker again on its data; returns once it serves.
    pub fn restart(&mut self) {
        self.script("start", false);
        self.running = true;
    }

    fn script(&self, command: &str, fresh: bool) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string());
        if fresh {
            cmd.env("KAFKA_FRESH", "1");
        }
        let out = cmd.output().expect("scripts/kafka.sh runs");
        assert!(
            out.status.success() || command == "stop",
            "scripts/kafka.sh {command} on port {}: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if self.running {
            self.script("stop", false);
        }
    }
}
