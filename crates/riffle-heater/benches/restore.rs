//! State restore benchmark: how soon a restarted controller resumes
//! processing when its state (one entry per heater) comes from a local
//! snapshot, and when it comes from the changelog alone.
//!
//! ```text
//! cargo bench -p riffle-heater --bench restore -- --brokers 127.0.0.1:9092 [--keys 1000000] [--partitions 10]
//! ```
//!
//! Without `--brokers` it runs on the embedded (in-process, in-memory) log.
//!
//! 1. Fills a fresh sensor topic with one setting and one measurement per
//!    heater (the measurement is above the band, so every heater's state
//!    ends with a setting and a last command OFF).
//! 2. Runs the controller (key-based style, at-least-once, with a state
//!    directory) until every input record is committed, then stops it,
//!    which writes the snapshots.
//! 3. Restarts it several times with the snapshots, and several times with
//!    an empty state directory (changelog only). Each restart sends one
//!    probe measurement, below the band of a heater not probed before,
//!    right after `App::start`: the controller answers ON only if it
//!    restored that heater's setting. The time measured runs from
//!    `App::start` to the ON command appearing on the control topic.
//!
//! Prints a Markdown table and writes `target/bench/restore.json` (or
//! `--out FILE`; Cargo runs benchmarks in the package's directory, so a
//! relative path starts there). Other options: `--consumers N`, `--runs N`.
//! `RIFFLE_LOG=info` shows the library's "restored ... in ..." lines.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{partition_for_key, Log, TopicSpec};
use riffle::process::{App, Guarantee, Style};
use riffle::stream::Producer;
use riffle_heater::controller::Controller;
use riffle_heater::messages::{measurement_json, setting_json, Command, Setting};

const ADMIN: Duration = Duration::from_secs(30);
/// The longest any phase may take before the benchmark gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// How often progress is checked while waiting.
const TICK: Duration = Duration::from_millis(10);

struct Options {
    brokers: Option<String>,
    keys: usize,
    partitions: i32,
    consumers: usize,
    runs: usize,
    out: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: restore [--brokers HOST:PORT] [--keys N] [--partitions N] \
         [--consumers N] [--runs N] [--out FILE]"
    );
    std::process::exit(2)
}

/// `<target dir>`: the benchmark binary lives in `<target>/<profile>/deps`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")))
}

fn options() -> Options {
    let mut o = Options {
        brokers: None,
        keys: 1_000_000,
        partitions: 10,
        consumers: 1,
        runs: 3,
        out: target_dir().join("bench").join("restore.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let number = |s: String| s.replace('_', "").parse().unwrap_or_else(|_| usage());
        match a.as_str() {
            // Cargo passes `--bench` to benchmark binaries.
            "--bench" => {}
            "--brokers" => o.brokers = Some(value()),
            "--keys" => o.keys = number(value()),
            "--partitions" => o.partitions = number(value()) as i32,
            "--consumers" => o.consumers = number(value()),
            "--runs" => o.runs = number(value()).max(1),
            "--out" => o.out = PathBuf::from(value()),
            _ => usage(),
        }
    }
    o
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RIFFLE_LOG").unwrap_or_else(|_| "warn,librdkafka=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}

/// A `/proc/self/status` field in kB (Linux only).
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn heater(i: usize) -> String {
    format!("heater-{i:07}")
}

/// Heater `i`'s setting: bands around 15..25 °C.
fn setting(i: usize) -> Setting {
    Setting {
        temperature: 15.0 + (i % 11) as f64,
        up_delta: 1.0,
        down_delta: 0.5,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> riffle::Result<bool>) {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        match done() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => eprintln!("while waiting for {what}: {e}"),
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(TICK);
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One restart's figures.
#[derive(Debug, Clone)]
struct Restart {
    /// `App::start` returning.
    start: Duration,
    /// Every partition's state restored.
    restored: Duration,
    /// The probe's command on the control topic: processing resumed.
    resumed: Duration,
    restored_keys: u64,
    changelog_replayed: u64,
    restores: u64,
}

struct Bench {
    log: Arc<dyn Log>,
    producer: Producer,
    sensor: String,
    control: String,
    group: String,
    partitions: i32,
    consumers: usize,
}

impl Bench {
    fn app(&self, state_dir: &Path) -> App<Controller> {
        App::new(&self.group, &[&self.sensor], Controller::new(&self.control))
            .style(Style::Keyed)
            .guarantee(Guarantee::AtLeastOnce)
            .consumers(self.consumers)
            .state_dir(state_dir)
    }

    fn highs(&self, topic: &str) -> riffle::Result<Vec<i64>> {
        let mut parts = self.log.describe_topic(topic, ADMIN)?.partitions;
        parts.sort_by_key(|p| p.id);
        Ok(parts.iter().map(|p| p.high).collect())
    }

    /// Whether the group has committed every record of the sensor topic.
    fn all_committed(&self) -> riffle::Result<bool> {
        let highs = self.highs(&self.sensor)?;
        let committed = self
            .log
            .committed_offsets(&self.group, &self.sensor, ADMIN)?;
        Ok(highs.iter().enumerate().all(|(p, &high)| {
            high == 0
                || committed
                    .iter()
                    .any(|c| c.partition.partition == p as i32 && c.committed == Some(high))
        }))
    }

    /// Starts the app on `state_dir`, probes heater `probe` and measures.
    fn restart(&self, state_dir: &Path, probe: usize) -> Restart {
        let key = heater(probe);
        let p = partition_for_key(key.as_bytes(), self.partitions);
        let before = self.highs(&self.control).unwrap()[p as usize];
        let s = setting(probe);
        let cold = measurement_json(s.temperature - s.down_delta - 2.0);

        let t0 = Instant::now();
        let app = self.app(state_dir).start(self.log.clone()).unwrap();
        let start = t0.elapsed();
        self.producer
            .send(&self.sensor, Some(key.as_bytes()), &cold)
            .unwrap();
        self.producer.flush(ADMIN).unwrap();
        let mut restored = None;
        let mut resumed = None;
        wait_until("the probe's command", || {
            if restored.is_none()
                && app.stats().state.restores.load(Ordering::Relaxed) >= self.partitions as u64
            {
                restored = Some(t0.elapsed());
            }
            if resumed.is_none() && self.highs(&self.control)?[p as usize] > before {
                resumed = Some(t0.elapsed());
            }
            Ok(restored.is_some() && resumed.is_some())
        });
        let stats = app.stats();
        let result = Restart {
            start,
            restored: restored.unwrap(),
            resumed: resumed.unwrap(),
            restored_keys: stats.state.restored_keys.load(Ordering::Relaxed),
            changelog_replayed: stats.state.changelog_replayed.load(Ordering::Relaxed),
            restores: stats.state.restores.load(Ordering::Relaxed),
        };
        app.stop().unwrap();

        // The command is the probe's answer: ON, for that heater.
        let mut found = None;
        self.log
            .read_partition(&self.control, p, before, false, ADMIN, &mut |r| {
                if found.is_none() {
                    found = Some((r.key.map(<[u8]>::to_vec), r.value.to_vec()));
                }
                Ok(())
            })
            .unwrap();
        let (k, v) = found.expect("a command after the probe");
        assert_eq!(k.as_deref(), Some(key.as_bytes()), "command for the probe");
        assert_eq!(Command::from_json(&v), Ok(Command::On), "probe answered ON");
        result
    }

    fn delete_topics(&self) {
        for t in [
            &self.sensor,
            &self.control,
            &format!("{}-changelog", self.group),
        ] {
            if let Err(e) = self.log.delete_topic(t, ADMIN) {
                eprintln!("cannot delete topic {t}: {e}");
            }
        }
    }
}

fn dir_size(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "snapshot") {
                files += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (files, bytes)
}

fn min_median(xs: &[f64]) -> (f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    init_logging();
    let o = options();
    let (log, backend): (Arc<dyn Log>, String) = match &o.brokers {
        Some(b) => (
            Arc::new(KafkaLog::connect(b.clone(), Vec::new()).expect("Kafka reachable")),
            format!("Kafka at {b}"),
        ),
        None => (
            Arc::new(EmbeddedLog::new()),
            "embedded log (in-process, in memory)".into(),
        ),
    };
    let id = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    let bench_dir = target_dir().join("bench");
    let state_dir = bench_dir.join(format!("restore-state-{id}"));
    let bench = Bench {
        producer: Producer::new(&*log).unwrap(),
        sensor: format!("bench-sensor-{id}"),
        control: format!("bench-control-{id}"),
        group: format!("bench-restore-{id}"),
        partitions: o.partitions,
        consumers: o.consumers,
        log,
    };
    eprintln!(
        "restore benchmark on the {backend}: {} keys, {} partitions, {} consumer(s), group {}",
        o.keys, o.partitions, o.consumers, bench.group
    );
    for t in [&bench.sensor, &bench.control] {
        bench
            .log
            .create_topic(&TopicSpec::new(t, o.partitions), ADMIN)
            .unwrap();
    }

    // 1. Fill.
    let t = Instant::now();
    for i in 0..o.keys {
        let key = heater(i);
        let s = setting(i);
        bench
            .producer
            .send(&bench.sensor, Some(key.as_bytes()), &setting_json(&s))
            .unwrap();
        bench
            .producer
            .send(
                &bench.sensor,
                Some(key.as_bytes()),
                &measurement_json(s.temperature + s.up_delta + 2.0),
            )
            .unwrap();
    }
    bench.producer.flush(PHASE_LIMIT).unwrap();
    let fill = t.elapsed();
    let input_records = 2 * o.keys as u64;
    eprintln!(
        "filled {input_records} records in {:.2} s ({:.0} records/s)",
        secs(fill),
        input_records as f64 / secs(fill)
    );

    // 2. Process everything, then stop (which writes the snapshots).
    let t = Instant::now();
    let app = bench.app(&state_dir).start(bench.log.clone()).unwrap();
    wait_until("every input record committed", || bench.all_committed());
    let process = t.elapsed();
    let processed = app.stats().processed.load(Ordering::Relaxed);
    let commands = app.stats().sent.load(Ordering::Relaxed);
    let t = Instant::now();
    app.stop().unwrap();
    let first_stop = t.elapsed();
    let (snapshot_files, snapshot_bytes) = dir_size(&state_dir.join(&bench.group));
    let changelog_records: i64 = bench
        .highs(&format!("{}-changelog", bench.group))
        .unwrap()
        .iter()
        .sum();
    eprintln!(
        "processed {processed} records ({commands} commands) in {:.2} s ({:.0} records/s); \
         stop with snapshots {:.2} s: {snapshot_files} files, {:.1} MB; changelog {changelog_records} records",
        secs(process),
        processed as f64 / secs(process),
        secs(first_stop),
        snapshot_bytes as f64 / 1e6,
    );
    assert_eq!(
        snapshot_files, o.partitions as usize,
        "one snapshot per partition"
    );

    // 3. Restarts, alternating so that both kinds see the same conditions.
    let mut probes = (0..).map(|n: usize| (n * 7919 + 13) % o.keys);
    let mut with_snapshot = Vec::new();
    let mut changelog_only = Vec::new();
    for run in 1..=o.runs {
        let r = bench.restart(&state_dir, probes.next().unwrap());
        eprintln!("snapshot restart {run}: {r:?}");
        with_snapshot.push(r);
        let empty = bench_dir.join(format!("restore-empty-{id}-{run}"));
        let r = bench.restart(&empty, probes.next().unwrap());
        eprintln!("changelog-only restart {run}: {r:?}");
        changelog_only.push(r);
        let _ = std::fs::remove_dir_all(&empty);
    }
    let peak_rss_kb = proc_status_kb("VmHWM");
    bench.delete_topics();
    let _ = std::fs::remove_dir_all(&state_dir);

    // Report.
    let summary = |rs: &[Restart]| {
        let f = |get: fn(&Restart) -> Duration| {
            min_median(&rs.iter().map(|r| secs(get(r))).collect::<Vec<_>>())
        };
        (
            f(|r| r.resumed),
            f(|r| r.restored),
            f(|r| r.start),
            rs.iter().map(|r| r.restored_keys).max().unwrap_or(0),
            rs.iter().map(|r| r.changelog_replayed).max().unwrap_or(0),
        )
    };
    let (snap_resumed, snap_restored, snap_start, snap_keys, snap_replayed) =
        summary(&with_snapshot);
    let (cl_resumed, cl_restored, cl_start, cl_keys, cl_replayed) = summary(&changelog_only);
    println!();
    println!(
        "State restore, {backend}: {} keys, {} partitions, {} consumer(s), {} runs each",
        o.keys, o.partitions, o.consumers, o.runs
    );
    println!();
    println!("| restart | resumed (probe answered), min / median | all partitions restored, min / median | `App::start` returned, median | restored keys | changelog records replayed |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| with snapshot | {:.2} s / {:.2} s | {:.2} s / {:.2} s | {:.2} s | {snap_keys} | {snap_replayed} |",
        snap_resumed.0, snap_resumed.1, snap_restored.0, snap_restored.1, snap_start.1
    );
    println!(
        "| changelog only | {:.2} s / {:.2} s | {:.2} s / {:.2} s | {:.2} s | {cl_keys} | {cl_replayed} |",
        cl_resumed.0, cl_resumed.1, cl_restored.0, cl_restored.1, cl_start.1
    );
    println!();
    println!(
        "changelog only / snapshot (median time to resume): {:.1}x",
        cl_resumed.1 / snap_resumed.1
    );
    println!(
        "fill {input_records} records: {:.2} s; process them: {:.2} s; stop with snapshots: {:.2} s; \
         snapshots {:.1} MB; changelog {changelog_records} records; peak RSS {}",
        secs(fill),
        secs(process),
        secs(first_stop),
        snapshot_bytes as f64 / 1e6,
        peak_rss_kb.map_or("unknown".into(), |k| format!("{:.0} MB", k as f64 / 1024.0)),
    );

    let runs = |rs: &[Restart]| {
        rs.iter()
            .map(|r| {
                serde_json::json!({
                    "start_s": secs(r.start),
                    "restored_s": secs(r.restored),
                    "resumed_s": secs(r.resumed),
                    "restores": r.restores,
                    "restored_keys": r.restored_keys,
                    "changelog_replayed": r.changelog_replayed,
                })
            })
            .collect::<Vec<_>>()
    };
    let json = serde_json::json!({
        "backend": backend,
        "keys": o.keys,
        "partitions": o.partitions,
        "consumers": o.consumers,
        "input_records": input_records,
        "fill_s": secs(fill),
        "process_s": secs(process),
        "first_stop_s": secs(first_stop),
        "snapshot_files": snapshot_files,
        "snapshot_bytes": snapshot_bytes,
        "changelog_records": changelog_records,
        "peak_rss_kb": peak_rss_kb,
        "with_snapshot": {
            "resumed_min_s": snap_resumed.0,
            "resumed_median_s": snap_resumed.1,
            "runs": runs(&with_snapshot),
        },
        "changelog_only": {
            "resumed_min_s": cl_resumed.0,
            "resumed_median_s": cl_resumed.1,
            "runs": runs(&changelog_only),
        },
        "ratio_changelog_only_to_snapshot": cl_resumed.1 / snap_resumed.1,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    println!("results written to {}", o.out.display());
}
