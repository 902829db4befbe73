//! Failover benchmark: how long the heaters of one controller process go
//! without commands when that process is stopped or killed, while the
//! group holds 1,000,000 heaters' state.
//!
//! ```text
//! cargo bench -p riffle-cli --bench failover -- --brokers 127.0.0.1:9092 [--keys 1000000] [--probes 1000]
//! ```
//!
//! 1. Fills a fresh sensor topic (10 partitions) with a setting and a
//!    measurement for each of `--keys` heaters, and starts two
//!    `riffle heater controller` processes (`--instance w0`, `w1`,
//!    key-based style, at-least-once, 2 consumers each,
//!    `session.timeout.ms=6000`, a state directory each), which process
//!    them: every heater has a state.
//! 2. A feeder sends `--probes` of those heaters a measurement every
//!    100 ms, alternately below and above their band, so that each gets a
//!    command every 100 ms.
//! 3. Then, one after the other, with time to settle in between:
//!    - w1 is SIGKILLed and restarted under the same `--instance` 0.5 s
//!      later (it takes its partitions back from its snapshot and the
//!      changelog written since);
//!    - w1 is stopped (SIGTERM): w0 takes its partitions over, restoring
//!      their state from the changelog; w1 is started again;
//!    - w0 is restarted with an empty state directory (so that it keeps
//!      nothing of w1's partitions), and w1 is SIGKILLed for good: w0
//!      takes them over once w1's session expires, restoring from the
//!      changelog;
//!    - both are restarted with `--standby`, and w1 is SIGKILLed for good:
//!      w0 takes its partitions from the copies it kept.
//!
//! The control gap of an event is the longest time the probe heaters of
//! w1's partitions went without a command, from their last command before
//! the event until the next event. Prints a Markdown table and writes
//! `target/bench/failover.json` (or `--out FILE`).

// Its unit test is compiled but not run without the test harness.
#[path = "../tests/crash/gap.rs"]
mod gap;
#[allow(dead_code, unused_imports)]
#[path = "../tests/crash/workers.rs"]
mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::kafka::KafkaLog;
use riffle::log::Log;
use riffle::stream::Producer;
use riffle_heater::messages::{measurement_json, setting_json, Setting};

use gap::{control_gap, controller_config, controller_topics, now_ms, owned};
use workers::{KillOnDrop, Workers};

const PARTITIONS: i32 = 10;
const ADMIN: Duration = Duration::from_secs(30);
/// How often each probe heater gets a measurement.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The failover benchmark's options.
#[derive(clap::Parser)]
struct Options {
    /// The Kafka cluster to run on.
    #[arg(long)]
    brokers: String,
    /// Heaters with a state.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Heaters sent a measurement every 100 ms, among them.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    probes: u32,
    /// Where the results go, as JSON (default `target/bench/failover.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by Cargo to benchmark binaries.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `<target dir>/bench`, where results go.
fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).with_file_name("bench")
}

fn heater(i: usize) -> String {
    format!("heater-{i:07}")
}

/// Every heater's setting: a band of 19..21 °C.
const SETTING: Setting = Setting {
    temperature: 20.0,
    up_delta: 1.0,
    down_delta: 1.0,
};

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Whether the two workers own every partition between them.
fn shared(workers: &Workers) -> bool {
    let (a, b) = (owned(workers, 0), owned(workers, 1));
    !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == PARTITIONS as usize
}

/// The sum of the topic's partitions' end offsets.
fn total(log: &dyn Log, topic: &str) -> i64 {
    log.describe_topic(topic, ADMIN)
        .map(|t| t.partitions.iter().map(|p| p.high).sum())
        .unwrap_or(0)
}

/// The topic's end offset per partition.
fn ends(log: &dyn Log, topic: &str) -> BTreeMap<i32, i64> {
    let t = log.describe_topic(topic, ADMIN).expect("describe");
    t.partitions.iter().map(|p| (p.id, p.high)).collect()
}

struct Event {
    name: &'static str,
    gap_ms: i64,
    /// Changelog records w0 read to restore what it took over.
    replayed: u64,
}

/// The changelog records replayed by the restores a worker's log shows:
/// "restored <changelog>/<p>: K keys (S from a snapshot..., C changelog
/// records) in ...".
fn replayed(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            l.split(" changelog records) in ")
                .next()?
                .rsplit(", ")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    let probes = (o.probes as usize).min(o.keys);
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| bench_dir().join("failover.json"));
    let log: Arc<dyn Log> =
        Arc::new(KafkaLog::connect(o.brokers.clone(), vec![]).expect("broker reachable"));
    let id = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    let (sensor, control, dlq) = controller_topics(&*log, &format!("fo-{id}"), PARTITIONS);
    let group = format!("fo-controller-{id}");
    let dir = bench_dir().join(format!("failover-{id}"));
    println!(
        "failover benchmark on the Kafka at {}: {} heaters, {} probed every {PROBE_EVERY:?}, \
         {PARTITIONS} partitions; logs in {}",
        o.brokers,
        o.keys,
        probes,
        dir.display()
    );

    // 1. Every heater gets a setting and a measurement above its band.
    let started = Instant::now();
    let producer = Producer::new(&*log).expect("producer");
    let (setting, warm) = (setting_json(&SETTING), measurement_json(25.0));
    for i in 0..o.keys {
        let key = heater(i);
        producer
            .send(&sensor, Some(key.as_bytes()), &setting)
            .unwrap();
        producer.send(&sensor, Some(key.as_bytes()), &warm).unwrap();
    }
    producer.flush(ADMIN).unwrap();
    println!("filled {} records in {:.2?}", 2 * o.keys, started.elapsed());

    let topics = (sensor.clone(), control.clone(), dlq.clone());
    let config = |standby| controller_config(o.brokers.clone(), &topics, &group, &dir, standby);
    let mut workers = Workers::new(config(false), 2);
    let mut guard = KillOnDrop(workers.clone());
    workers.start_all();
    wait_for("the workers sharing the partitions", ADMIN * 4, || {
        shared(&workers)
    });
    let took = wait_for("every heater's command", Duration::from_secs(600), || {
        total(&*log, &control) >= o.keys as i64
    });
    println!("{} heaters' states made in {took:.2?}", o.keys);

    // 2. The probes, spread over the heaters.
    let probed: Vec<String> = (0..probes).map(|i| heater(i * (o.keys / probes))).collect();
    let stop = AtomicBool::new(false);
    let mut events = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let producer = Producer::new(&*log).expect("producer");
            let (cold, hot) = (measurement_json(15.0), measurement_json(25.0));
            let mut round = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let value = if round.is_multiple_of(2) { &cold } else { &hot };
                for key in &probed {
                    let _ = producer.send(&sensor, Some(key.as_bytes()), value);
                }
                let _ = producer.flush(ADMIN);
                round += 1;
                next += PROBE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        let settle = Duration::from_secs(15);
        std::thread::sleep(Duration::from_secs(5));

        // 3. The events. Each takeover by w0 is of partitions it holds no
        // state of in memory: a process keeps the stores of partitions it
        // gave up, and would take those back with the changelog's tail only.
        let mut measure = |name: &'static str,
                           workers: &Arc<Workers>,
                           event: &mut dyn FnMut(),
                           after: Duration| {
            let w1 = owned(workers, 1);
            let from = ends(&*log, &control);
            let mark = workers.log_text(0).len();
            std::thread::sleep(Duration::from_secs(1));
            let at = now_ms();
            event();
            std::thread::sleep(after);
            let gap = control_gap(&*log, &control, &w1, Some(&from), at, now_ms());
            let replayed = replayed(&workers.log_text(0)[mark..]);
            println!(
                "{name}: control gap {gap} ms (w1 owned {w1:?}; w0 replayed {replayed} changelog records)"
            );
            events.push(Event {
                name,
                gap_ms: gap,
                replayed,
            });
        };
        let w = workers.clone();
        measure(
            "SIGKILL, restart under the same --instance",
            &w,
            &mut || {
                w.kill(1);
                std::thread::sleep(Duration::from_millis(500));
                w.start(1);
            },
            settle,
        );
        measure(
            "SIGTERM",
            &w,
            &mut || {
                w.terminate(1, Duration::from_secs(60)).expect("w1 stopped");
            },
            settle,
        );
        w.start(1);
        wait_for("w1 back", Duration::from_secs(120), || shared(&w));
        // w0 again, with nothing of w1's partitions kept.
        w.terminate(0, Duration::from_secs(60)).expect("w0 stopped");
        let _ = std::fs::remove_dir_all(dir.join("w0-state"));
        w.start(0);
        wait_for("w0 back", Duration::from_secs(120), || shared(&w));
        std::thread::sleep(settle);
        measure(
            "SIGKILL for good, no standby",
            &w,
            &mut || w.kill(1),
            settle + Duration::from_secs(6),
        );
        // Both again, with standby copies.
        w.close();
        let _ = w.terminate(0, Duration::from_secs(60));
        workers = Workers::new(config(true), 2);
        guard = KillOnDrop(workers.clone());
        workers.start_all();
        wait_for(
            "the standby workers sharing the partitions",
            Duration::from_secs(120),
            || shared(&workers),
        );
        std::thread::sleep(settle);
        let w = workers.clone();
        measure(
            "SIGKILL for good, with --standby",
            &w,
            &mut || w.kill(1),
            settle + Duration::from_secs(6),
        );
        stop.store(true, Ordering::Relaxed);
    });
    workers.close();
    let _ = workers.terminate(0, Duration::from_secs(60));
    drop(guard);

    println!();
    println!(
        "Failover control gap, Kafka at {}: {} heaters' state, {} probe heaters, session timeout 6 s",
        o.brokers, o.keys, probes
    );
    println!();
    println!("| event | control gap of w1's heaters | changelog records w0 replayed |");
    println!("|---|---|---|");
    for e in &events {
        println!(
            "| {} | {:.2} s | {} |",
            e.name,
            e.gap_ms as f64 / 1000.0,
            e.replayed
        );
    }
    let json = serde_json::json!({
        "brokers": o.brokers,
        "keys": o.keys,
        "probes": probes,
        "session_timeout_ms": 6000,
        "events": events.iter().map(|e| serde_json::json!({"event": e.name, "gap_ms": e.gap_ms, "replayed": e.replayed})).collect::<Vec<_>>(),
    });
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).expect("results written");
    println!("results written to {}", out.display());
    for topic in [&sensor, &control, &dlq, &format!("{group}-changelog")] {
        let _ = log.delete_topic(topic, ADMIN);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
