//! Controller processes: started, killed, restarted and stopped by the
//! test, each with its stderr appended to a file of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the controller processes promise, and so what the test checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

impl Guarantee {
    pub fn flag(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

/// How every worker of a run is started.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub brokers: String,
    pub sensor_topic: String,
    pub control_topic: String,
    pub dead_letter: String,
    pub group: String,
    pub guarantee: Guarantee,
    /// `--style`: `keyed` or `actors`.
    pub style: &'static str,
    /// Where the workers' logs and state directories go.
    pub dir: PathBuf,
    /// Give each worker an operations endpoint (`--http`) on a port of its
    /// own.
    pub http: bool,
    /// `--watchdog` and its `--alerts-topic`; the idle timeout is an hour,
    /// so that only the input's own time moves the watchdogs on.
    pub watchdog: Option<(Duration, String)>,
    /// `--standby`: keep warm copies of the partitions not owned.
    pub standby: bool,
}

struct Worker {
    name: String,
    /// `host:port` of its `--http` endpoint, if it has one.
    http: Option<String>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The worker processes of one run. Dropping it kills every child, so a
/// failing test leaves no process behind.
pub struct Workers {
    config: WorkerConfig,
    workers: Mutex<Vec<Worker>>,
    /// Set when the run is over: nothing is restarted after that.
    closed: AtomicBool,
}

impl Workers {
    pub fn new(config: WorkerConfig, n: usize) -> Arc<Self> {
        std::fs::create_dir_all(&config.dir).expect("worker directory");
        let workers = (0..n)
            .map(|i| Worker {
                http: config.http.then(free_addr),
                name: format!("w{i}"),
                log: config.dir.join(format!("w{i}.stderr")),
                child: None,
                starts: 0,
            })
            .collect();
        Arc::new(Self {
            config,
            workers: Mutex::new(workers),
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Worker>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Starts worker `i` unless it runs already or the run is over.
    pub fn start(&self, i: usize) {
        let mut workers = self.lock();
        if self.closed.load(Ordering::SeqCst) || workers[i].child.is_some() {
            return;
        }
        let w = &mut workers[i];
        w.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&w.log)
            .expect("worker log");
        writeln!(log, "=== {} start #{} ===", w.name, w.starts).unwrap();
        let c = &self.config;
        let state_dir = c.dir.join(format!("{}-state", w.name));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_riffle"));
        cmd.args(["--brokers", &c.brokers])
            // A killed member's partitions wait for its session to expire.
            .args(["-X", "session.timeout.ms=6000"])
            .args(["heater", "controller"])
            .args(["--sensor-topic", &c.sensor_topic])
            .args(["--control-topic", &c.control_topic])
            .args(["--dead-letter", &c.dead_letter])
            .args(["--group", &c.group])
            .args(["--status-every", "2s"])
            .args(["--guarantee", c.guarantee.flag()])
            .args(["--style", c.style])
            .args(["--commit-interval", "500ms"])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--instance", &w.name]);
        if let Some(addr) = &w.http {
            cmd.args(["--http", addr]);
        }
        if c.standby {
            cmd.arg("--standby");
        }
        if let Some((silence, alerts)) = &c.watchdog {
            cmd.arg("--watchdog")
                .arg(format!("{}ms", silence.as_millis()))
                .args(["--alerts-topic", alerts])
                .args(["--idle-timeout", "1h"]);
        }
        cmd.env_remove("RIFFLE_BROKERS")
            .env_remove("RIFFLE_INSTANCE")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("RIFFLE_LOG", "warn,riffle=info,librdkafka=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        w.child = Some(cmd.spawn().expect("riffle starts"));
    }

    pub fn start_all(&self) {
        for i in 0..self.len() {
            self.start(i);
        }
    }

    /// Indexes of the workers running now.
    pub fn live(&self) -> Vec<usize> {
        let mut workers = self.lock();
        let mut live = Vec::new();
        for (i, w) in workers.iter_mut().enumerate() {
            if let Some(c) = &mut w.child {
                match c.try_wait() {
                    Ok(None) => live.push(i),
                    _ => {
                        note(&w.log, &format!("=== {} exited on its own ===", w.name));
                        w.child = None;
                    }
                }
            }
        }
        live
    }

    /// SIGKILLs worker `i` and reaps it.
    pub fn kill(&self, i: usize) {
        let mut workers = self.lock();
        let w = &mut workers[i];
        if let Some(mut c) = w.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            note(&w.log, &format!("=== {} killed (SIGKILL) ===", w.name));
        }
    }

    /// SIGTERMs worker `i` and waits up to `grace` for it to exit, then
    /// SIGKILLs it. Returns how it ended unless it exited successfully.
    pub fn terminate(&self, i: usize, grace: Duration) -> Result<(), String> {
        let child = self.lock()[i].child.take();
        let Some(mut c) = child else {
            return Err("not running".into());
        };
        let deadline = Instant::now() + grace;
        // A process signalled before it installed its handlers would end
        // by the signal's default action: wait for its start-up line.
        while !self.started_up(i) && Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let ended = loop {
            match c.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(()),
                Ok(Some(status)) => break Err(format!("ended with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break Err(format!("still running {grace:?} after SIGTERM"));
                }
            }
        };
        let w = &self.lock()[i];
        note(
            &w.log,
            &format!("=== {} stopped (SIGTERM): {ended:?} ===", w.name),
        );
        ended
    }

    /// Whether worker `i`'s latest run printed its start-up line.
    fn started_up(&self, i: usize) -> bool {
        let name = self.lock()[i].name.clone();
        let text = self.log_text(i);
        let run = text
            .rfind(&format!("=== {name} start #"))
            .map_or(&text[..], |at| &text[at..]);
        run.contains("heater controller on ")
    }

    /// Ends the run: nothing restarts from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Set once the run is over.
    pub fn closed_flag(&self) -> &AtomicBool {
        &self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn name(&self, i: usize) -> String {
        self.lock()[i].name.clone()
    }

    /// The last `lines` lines of every worker's stderr, for failure messages.
    pub fn tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for w in self.lock().iter() {
            let text = std::fs::read_to_string(&w.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out += &format!(
                "--- {} ({}), last {} lines ---\n",
                w.name,
                w.log.display(),
                all.len() - from
            );
            for l in &all[from..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// `GET path` on worker `i`'s endpoint: status and body, or why not.
    pub fn get(&self, i: usize, path: &str) -> Result<(u16, String), String> {
        let addr = self.lock()[i].http.clone().ok_or("no endpoint")?;
        riffle::serve::http::get(&addr, path, Duration::from_secs(10))
            .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
            .map_err(|e| e.to_string())
    }

    /// Worker `i`'s endpoint, as its state answers name it.
    pub fn http_addr(&self, i: usize) -> Option<String> {
        self.lock()[i].http.clone()
    }

    /// Each worker's log.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.lock()[i].log).unwrap_or_default()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.close();
        for w in self.lock().iter_mut() {
            if let Some(mut c) = w.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Kills every child when dropped, even while a thread still holds the
/// [`Workers`]; tests keep one on the stack so that a panic cleans up.
pub struct KillOnDrop(pub Arc<Workers>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.close();
        for i in 0..self.0.len() {
            self.0.kill(i);
        }
    }
}

/// A loopback address with a port free now (the kernel picks it).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").to_string()
}

fn note(path: &PathBuf, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// The partitions each consumer of a worker owns at the end of its log:
/// `assigned [..]` adds, `revoked [..]` removes, and a restart (or a kill)
/// forgets everything. Keyed by the consumer's name in the log line.
pub fn owned_partitions(log: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut owned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in log.lines().map(strip_ansi) {
        let line = line.as_str();
        if line.starts_with("=== ") {
            owned.clear();
            continue;
        }
        let (verb, add) = if line.contains(" assigned [") {
            ("assigned [", true)
        } else if line.contains(" revoked [") {
            ("revoked [", false)
        } else {
            continue;
        };
        let rest = &line[line.find(verb).unwrap() + verb.len()..];
        let Some(end) = rest.find(']') else { continue };
        let consumer = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("consumer="))
            .unwrap_or("?")
            .to_owned();
        let set = owned.entry(consumer).or_default();
        for tp in rest[..end].split(", ").filter(|s| !s.is_empty()) {
            if add {
                set.insert(tp.to_owned());
            } else {
                set.remove(tp);
            }
        }
    }
    owned
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_follows_the_assignment_log() {
        let log = "=== w0 start #1 ===\n\
            2026-01-01T00:00:00Z  INFO assigned [s/0, s/1] consumer=g-0\n\
            \u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m assigned [s/2] \u{1b}[3mconsumer\u{1b}[0m\u{1b}[2m=\u{1b}[0mg-1\n\
            2026-01-01T00:00:01Z  INFO revoked [s/1] consumer=g-0\n\
            processed 10  sent 2  dead letters 0  partitions owned 2\n";
        let owned = owned_partitions(log);
        assert_eq!(owned["g-0"], BTreeSet::from(["s/0".to_string()]));
        assert_eq!(owned["g-1"], BTreeSet::from(["s/2".to_string()]));
        let restarted = format!("{log}=== w0 killed (SIGKILL) ===\n");
        assert!(owned_partitions(&restarted).is_empty());
    }
}
