//! State time-to-live benchmark: a million heaters that each report once
//! and fall quiet, and what the controller's process holds before, while
//! and after their state lives.
//!
//! ```text
//! cargo bench -p riffle-heater --bench ttl -- --brokers 127.0.0.1:9092 [--keys 1000000] [--partitions 10]
//! ```
//!
//! Without `--brokers` it runs on the embedded log, whose topics are in the
//! same process's memory (so its RSS includes them; use Kafka to see the
//! controller alone).
//!
//! 1. Starts the controller (key-based style, at-least-once, a time to
//!    live of one hour) under a manual clock, and notes the process's
//!    resident memory once it owns every partition.
//! 2. Sends one measurement per heater and waits until each is processed:
//!    every heater has a state. Notes the memory.
//! 3. Moves the clock on by an hour and a quarter, waits until every
//!    heater's state expired (deleted, a tombstone in the changelog), and
//!    notes the memory again.
//!
//! Prints a Markdown table and writes `target/bench/ttl.json` (or `--out
//! FILE`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, TopicSpec};
use riffle::process::{App, Clock, Running};
use riffle::stream::Producer;
use riffle_heater::controller::Controller;
use riffle_heater::messages::measurement_json;

const ADMIN: Duration = Duration::from_secs(30);
const PHASE_LIMIT: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(3600);

struct Options {
    brokers: Option<String>,
    keys: usize,
    partitions: i32,
    out: PathBuf,
}

fn usage() -> ! {
    eprintln!("usage: ttl [--brokers HOST:PORT] [--keys N] [--partitions N] [--out FILE]");
    std::process::exit(2)
}

fn options() -> Options {
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"));
    let mut o = Options {
        brokers: None,
        keys: 1_000_000,
        partitions: 10,
        out: target.join("bench").join("ttl.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--brokers" => o.brokers = Some(value()),
            "--keys" => o.keys = value().parse().unwrap_or_else(|_| usage()),
            "--partitions" => o.partitions = value().parse().unwrap_or_else(|_| usage()),
            "--out" => o.out = PathBuf::from(value()),
            // Cargo passes --bench to harness-less benchmarks.
            "--bench" => {}
            _ => usage(),
        }
    }
    o
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PHASE_LIMIT, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn main() {
    let o = options();
    let log: Arc<dyn Log> = match &o.brokers {
        Some(b) => Arc::new(KafkaLog::connect(b.clone(), vec![]).expect("broker reachable")),
        None => Arc::new(EmbeddedLog::new()),
    };
    let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (sensor, control) = (format!("ttl-sensor-{run}"), format!("ttl-control-{run}"));
    for t in [&sensor, &control] {
        log.create_topic(&TopicSpec::new(t, o.partitions), ADMIN)
            .expect("topic created");
    }
    let clock = Clock::manual(1_893_456_000_000);
    let app: Running = App::new(&format!("ttl-{run}"), &[&sensor], Controller::new(&control))
        .clock(clock.clone())
        .state_ttl(TTL)
        .consumers(2)
        .start(log.clone())
        .expect("controller started");
    app.wait_assigned(ADMIN).expect("partitions assigned");
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_mib();

    let producer = Producer::new(&*log).expect("producer");
    let started = Instant::now();
    for h in 0..o.keys {
        producer
            .send(
                &sensor,
                Some(format!("heater-{h}").as_bytes()),
                &measurement_json(45.0),
            )
            .expect("sent");
    }
    producer.flush(ADMIN).expect("flushed");
    drop(producer);
    let stats = app.stats().clone();
    wait("every heater processed", || {
        stats.processed.load(Ordering::Relaxed) >= o.keys as u64
    });
    let loaded_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss_mib();

    clock.advance(TTL + TTL / 4);
    let expired_in = wait("every heater expired", || {
        stats.expired.load(Ordering::Relaxed) >= o.keys as u64
    });
    std::thread::sleep(Duration::from_secs(2));
    let expired = rss_mib();
    app.stop().expect("stopped");

    let backend = if o.brokers.is_some() {
        "kafka"
    } else {
        "embedded"
    };
    println!("| heaters | backend | RSS idle | RSS with state | RSS after the TTL | loaded in | expired in |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {backend} | {idle:.0} MiB | {loaded:.0} MiB | {expired:.0} MiB | {:.1} s | {:.1} s |",
        o.keys,
        loaded_in.as_secs_f64(),
        expired_in.as_secs_f64()
    );
    let json = serde_json::json!({
        "heaters": o.keys,
        "backend": backend,
        "rss_idle_mib": idle,
        "rss_loaded_mib": loaded,
        "rss_expired_mib": expired,
        "loaded_s": loaded_in.as_secs_f64(),
        "expired_s": expired_in.as_secs_f64(),
    });
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, serde_json::to_vec_pretty(&json).expect("json")).expect("written");
}
