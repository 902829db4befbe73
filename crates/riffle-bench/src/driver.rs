//! `riffle-bench run`: fills the input, runs each system under test in a
//! child process (throughput phase, then latency phase at a fixed offered
//! load) and writes the report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, TopicSpec};
use riffle_heater::messages::Command;
use serde_json::{json, Value};

use crate::child::Child;
use crate::data::Generator;
use crate::kafka::{self, Result};
use crate::report;
use crate::systems::{self, Output, Placement, System};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// 1,000,000 input records, 10 s of latency per system: a few minutes.
    Quick,
    /// 5,000,000 input records, 60 s of latency per system.
    Full,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "quick")]
    pub mode: Mode,
    #[arg(long, default_value = "127.0.0.1:29092")]
    pub brokers: String,
    /// Input records of the throughput phase [default: by mode].
    #[arg(long)]
    pub records: Option<u64>,
    /// Heater keys.
    #[arg(long, default_value_t = 1000)]
    pub heaters: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 10)]
    pub partitions: i32,
    /// Offered load of the latency phase, records per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Length of the latency phase, seconds [default: by mode].
    #[arg(long)]
    pub latency_secs: Option<u64>,
    /// Seconds of offered load before the latency phase starts measuring
    /// [default: by mode].
    #[arg(long)]
    pub warmup_secs: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only these systems (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the latency phase.
    #[arg(long)]
    pub no_latency: bool,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// The command line to print in the report [default: this one].
    #[arg(long)]
    pub command: Option<String>,
    /// The broker's version, for the report.
    #[arg(long, default_value = "unknown")]
    pub kafka_version: String,
}

const ADMIN: Duration = Duration::from_secs(30);

struct Driver {
    args: RunArgs,
    log: KafkaLog,
    run_id: String,
    started: Instant,
    records: u64,
    latency_secs: u64,
    warmup_secs: u64,
}

/// A progress line on stderr, with the time since the run started.
macro_rules! progress {
    ($d:expr, $($t:tt)*) => {
        eprintln!("[{:>7.1}s] {}", $d.started.elapsed().as_secs_f64(), format!($($t)*))
    };
}

fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs.max(1e-9);
    if r >= 1e6 {
        format!("{:.2}M rec/s", r / 1e6)
    } else {
        format!("{:.1}k rec/s", r / 1e3)
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let (records, latency_secs, warmup_secs) = match args.mode {
        Mode::Quick => (1_000_000, 10, 2),
        Mode::Full => (5_000_000, 60, 10),
    };
    let systems: Vec<&'static System> = if args.only.is_empty() {
        systems::SYSTEMS.iter().collect()
    } else {
        args.only
            .iter()
            .map(|n| systems::find(n).ok_or(format!("no system named '{n}'")))
            .collect::<Result<_>>()?
    };
    let log = KafkaLog::connect(args.brokers.clone(), vec![]).map_err(|e| e.to_string())?;
    let d = Driver {
        records: args.records.unwrap_or(records),
        latency_secs: args.latency_secs.unwrap_or(latency_secs),
        warmup_secs: args.warmup_secs.unwrap_or(warmup_secs),
        run_id: report::timestamp(),
        log,
        started: Instant::now(),
        args,
    };
    let machine = report::machine();
    let command = d
        .args
        .command
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    progress!(
        d,
        "riffle-bench {:?} mode on {}: {} records, {} heaters, {} partitions; latency {} s at {} rec/s",
        d.args.mode,
        d.args.brokers,
        d.records,
        d.args.heaters,
        d.args.partitions,
        d.latency_secs,
        d.args.rate
    );

    let input = format!("bench-input-{}", d.run_id);
    let expected_commands = d.fill(&input)?;
    let mut results: Vec<Value> = Vec::new();
    let out_dir = d.args.out_dir.clone();
    let mode = format!("{:?}", d.args.mode).to_lowercase();
    let base = out_dir.join(format!("{mode}-{}", d.run_id));
    for sys in systems {
        let mut r = json!({
            "name": sys.name,
            "description": sys.description,
            "guarantee": sys.guarantee,
        });
        match d.throughput(sys, &input, expected_commands) {
            Ok(t) => r["throughput"] = t,
            Err(e) => {
                progress!(d, "{}: throughput phase failed: {e}", sys.name);
                r["throughput_error"] = json!(e);
            }
        }
        if sys.placement == Placement::Kafka && !d.args.no_latency {
            match d.latency(sys) {
                Ok(l) => r["latency"] = l,
                Err(e) => {
                    progress!(d, "{}: latency phase failed: {e}", sys.name);
                    r["latency_error"] = json!(e);
                }
            }
        }
        results.push(r);
        let doc = json!({
            "mode": mode,
            "command": command,
            "machine": machine,
            "kafka_version": d.args.kafka_version,
            "brokers": d.args.brokers,
            "input": {
                "records": d.records,
                "heaters": d.args.heaters,
                "partitions": d.args.partitions,
                "expected_commands": expected_commands,
                "seed": d.args.seed,
            },
            "latency_load": {"rate": d.args.rate, "seconds": d.latency_secs, "warmup_seconds": d.warmup_secs},
            "results": results,
        });
        report::write(&base, &doc)?;
    }
    progress!(
        d,
        "report: {}.json and {}.md",
        base.display(),
        base.display()
    );
    Ok(())
}

impl Driver {
    fn topic(&self, name: &str) -> Result<()> {
        self.log
            .recreate_topic(&TopicSpec::new(name, self.args.partitions), ADMIN)
            .map_err(|e| e.to_string())
    }

    fn highs(&self, topic: &str) -> Result<Vec<i64>> {
        let mut parts = self
            .log
            .describe_topic(topic, ADMIN)
            .map_err(|e| e.to_string())?
            .partitions;
        parts.sort_by_key(|p| p.id);
        Ok(parts.iter().map(|p| p.high).collect())
    }

    /// Records of `topic` the group has committed (summed over partitions,
    /// each capped at its end), and whether it has committed them all.
    fn committed(&self, group: &str, topic: &str, highs: &[i64]) -> Result<(u64, bool)> {
        let committed = self
            .log
            .committed_offsets(group, topic, ADMIN)
            .map_err(|e| e.to_string())?;
        let mut sum = 0u64;
        let mut all = true;
        for (p, &high) in highs.iter().enumerate() {
            let c = committed
                .iter()
                .find(|c| c.partition.partition == p as i32)
                .and_then(|c| c.committed)
                .unwrap_or(0);
            sum += c.min(high) as u64;
            all &= c >= high;
        }
        Ok((sum, all))
    }

    fn argv(&self, sys: &System, input: &str, output: &str, group: &str) -> Result<Vec<String>> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut argv: Vec<String> = sys
            .argv
            .iter()
            .map(|a| a.replace("{bench}", &exe.to_string_lossy()))
            .collect();
        for (flag, value) in [
            ("--brokers", self.args.brokers.as_str()),
            ("--input", input),
            ("--output", output),
            ("--group", group),
            ("--guarantee", sys.guarantee),
        ] {
            argv.push(flag.into());
            argv.push(value.into());
        }
        Ok(argv)
    }

    /// Fills the input topic; returns the number of commands the controller
    /// must send for it.
    fn fill(&self, input: &str) -> Result<u64> {
        self.topic(input)?;
        let producer = kafka::producer(&self.args.brokers, 20)?;
        let mut g = Generator::new(self.args.heaters, self.args.seed);
        let t0 = Instant::now();
        let (mut commands, mut bytes) = (0u64, 0u64);
        for i in 0..self.records {
            let r = g.next_record();
            commands += r.command.is_some() as u64;
            bytes += (r.key.len() + r.value.len()) as u64;
            kafka::send(&producer, input, r.key.as_bytes(), &r.value)?;
            if i > 0 && i % 1_000_000 == 999_999 {
                progress!(self, "fill: {} records", i + 1);
            }
        }
        kafka::flush(&producer)?;
        let secs = t0.elapsed().as_secs_f64();
        progress!(
            self,
            "fill: {} records ({:.0} bytes each, key + value) in {secs:.1} s, {}; {commands} commands expected",
            self.records,
            bytes as f64 / self.records as f64,
            rate(self.records, secs)
        );
        Ok(commands)
    }

    /// Runs `sys` on the filled input until its group has committed every
    /// input record.
    fn throughput(&self, sys: &System, input: &str, expected_commands: u64) -> Result<Value> {
        let output = format!("tp-{}-{}", sys.name, self.run_id);
        let group = format!("tp-{}-{}", sys.name, self.run_id);
        self.topic(&output)?;
        let argv = self.argv(sys, input, &output, &group)?;
        let expected_output = match sys.output {
            Output::Echo => self.records,
            Output::Commands => expected_commands,
        };
        let limit = Duration::from_secs(60 + self.records / 2_000);

        if sys.placement == Placement::InProcess {
            progress!(
                self,
                "{}: copying the input into the process, then processing",
                sys.name
            );
            let mut child = Child::spawn(&argv, true)?;
            let exit = child.wait(limit + Duration::from_secs(120))?;
            if exit.status != 0 {
                return Err(format!("{} exited with status {}", sys.name, exit.status));
            }
            let line = exit.stdout.lines().last().unwrap_or_default();
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("{} printed no measurement ({e}): {line:?}", sys.name))?;
            let secs = v["elapsed_s"].as_f64().unwrap_or(f64::NAN);
            let cpu = v["cpu_s"].as_f64().unwrap_or(f64::NAN);
            progress!(
                self,
                "{}: {} records in {secs:.2} s, {}",
                sys.name,
                self.records,
                rate(self.records, secs)
            );
            return Ok(json!({
                "records": self.records,
                "seconds": secs,
                "records_per_s": self.records as f64 / secs,
                "cpu_s": cpu,
                "cpu_s_per_million": cpu / self.records as f64 * 1e6,
                "peak_rss_bytes": v["peak_rss_bytes"],
                "output_records": v["output"],
                "expected_output": expected_output,
            }));
        }

        let highs = self.highs(input)?;
        progress!(self, "{}: throughput phase starts", sys.name);
        let t0 = Instant::now();
        let mut child = Child::spawn(&argv, false)?;
        let mut last_report = Instant::now();
        let mut done = 0;
        let mut peak_rss = 0u64;
        let (secs, cpu) = loop {
            if let Some(exit) = child.try_exit() {
                return Err(format!(
                    "{} exited early with status {}",
                    sys.name, exit.status
                ));
            }
            peak_rss = child.peak_rss().unwrap_or(peak_rss);
            // A fresh broker may not serve group requests yet: keep asking.
            match self.committed(&group, input, &highs) {
                Ok((_, true)) => break (t0.elapsed().as_secs_f64(), child.cpu_seconds()),
                Ok((n, false)) => done = n,
                Err(_) => {}
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "{done} of {} records committed after {} s",
                    self.records,
                    limit.as_secs()
                ));
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                let s = t0.elapsed().as_secs_f64();
                progress!(
                    self,
                    "{}: {done} of {} committed after {s:.1} s, {}",
                    sys.name,
                    self.records,
                    rate(done, s)
                );
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        peak_rss = child.peak_rss().unwrap_or(peak_rss);
        let exit = child.stop(Duration::from_secs(60));
        let cpu = cpu.unwrap_or(exit.cpu_s);
        let output_records = kafka::count(
            &self.args.brokers,
            &output,
            self.args.partitions,
            sys.exactly_once(),
        )?;
        progress!(
            self,
            "{}: {} records in {secs:.2} s, {}; {cpu:.1} CPU s, peak RSS {} MB; {output_records} outputs (expected {expected_output})",
            sys.name,
            self.records,
            rate(self.records, secs),
            peak_rss >> 20
        );
        Ok(json!({
            "records": self.records,
            "seconds": secs,
            "records_per_s": self.records as f64 / secs,
            "cpu_s": cpu,
            "cpu_s_per_million": cpu / self.records as f64 * 1e6,
            "peak_rss_bytes": peak_rss,
            "output_records": output_records,
            "expected_output": expected_output,
            "exit_status": exit.status,
        }))
    }

    /// Offers records at a fixed rate to a fresh input and measures, per
    /// expected output, the time from sending the record that causes it to
    /// receiving it.
    fn latency(&self, sys: &System) -> Result<Value> {
        let input = format!("lat-{}-{}-in", sys.name, self.run_id);
        let output = format!("lat-{}-{}-out", sys.name, self.run_id);
        let group = format!("lat-{}-{}", sys.name, self.run_id);
        self.topic(&input)?;
        self.topic(&output)?;

        // The records, and per heater the input index of each expected output.
        let heaters = self.args.heaters;
        // Settings, then a warm-up at the offered load, then what is measured.
        let first = heaters + (self.args.rate * self.warmup_secs) as usize;
        let n = first + (self.args.rate * self.latency_secs) as usize;
        let mut g = Generator::new(heaters, self.args.seed + 1);
        let mut records = Vec::with_capacity(n);
        let mut expected: Vec<Vec<(u32, Option<Command>)>> = vec![Vec::new(); heaters];
        for i in 0..n {
            let r = g.next_record();
            match sys.output {
                Output::Echo => expected[r.heater as usize].push((i as u32, None)),
                Output::Commands => {
                    if let Some(c) = r.command {
                        expected[r.heater as usize].push((i as u32, Some(c)));
                    }
                }
            }
            records.push(r);
        }
        let expected_total: u64 = expected.iter().map(|e| e.len() as u64).sum();

        // The reader of the outputs, on its own thread.
        let base = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let reader = {
            let consumer = kafka::reader(
                &self.args.brokers,
                &output,
                self.args.partitions,
                sys.exactly_once(),
            )?;
            let (stop, received) = (stop.clone(), received.clone());
            let output = output.clone();
            std::thread::spawn(move || -> Result<Vec<(u32, Option<Command>, u64)>> {
                let mut got = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(20)) {
                        Some(Ok(m)) => {
                            let at = base.elapsed().as_nanos() as u64;
                            let heater = m
                                .key()
                                .and_then(|k| std::str::from_utf8(k).ok())
                                .and_then(|k| k.strip_prefix("heater-"))
                                .and_then(|k| k.parse::<u32>().ok())
                                .ok_or_else(|| {
                                    format!("{output}: an output without a heater key")
                                })?;
                            let command = Command::from_json(m.payload().unwrap_or_default()).ok();
                            got.push((heater, command, at));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                        Some(Err(e)) => return Err(format!("reading {output}: {e}")),
                    }
                }
                consumer.unassign().ok();
                Ok(got)
            })
        };

        let producer = kafka::producer(&self.args.brokers, 1)?;
        let mut sent_at = vec![0u64; n];
        let argv = self.argv(sys, &input, &output, &group)?;
        let mut child = Child::spawn(&argv, false)?;

        // Warm-up: the settings, until the group has committed them.
        let t0 = Instant::now();
        for (i, r) in records[..heaters].iter().enumerate() {
            sent_at[i] = base.elapsed().as_nanos() as u64;
            kafka::send(&producer, &input, r.key.as_bytes(), &r.value)?;
        }
        kafka::flush(&producer)?;
        let highs = self.highs(&input)?;
        loop {
            if let Some(exit) = child.try_exit() {
                return Err(format!(
                    "{} exited early with status {}",
                    sys.name, exit.status
                ));
            }
            if matches!(self.committed(&group, &input, &highs), Ok((_, true))) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err("the settings were not committed within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        progress!(
            self,
            "{}: latency phase: started and took the {heaters} settings in {:.1} s; offering {} rec/s for {} s + {} s",
            sys.name,
            t0.elapsed().as_secs_f64(),
            self.args.rate,
            self.warmup_secs,
            self.latency_secs
        );

        // The fixed offered load.
        let t1 = Instant::now();
        let per_record = 1.0 / self.args.rate as f64;
        for (j, r) in records[heaters..].iter().enumerate() {
            let due = t1 + Duration::from_secs_f64(j as f64 * per_record);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            sent_at[heaters + j] = base.elapsed().as_nanos() as u64;
            kafka::send(&producer, &input, r.key.as_bytes(), &r.value)?;
        }
        let send_secs = t1.elapsed().as_secs_f64();
        kafka::flush(&producer)?;
        // The rest of the outputs: until all arrived, or none for 10 s.
        let (mut last, mut last_change) = (received.load(Ordering::Relaxed), Instant::now());
        while last < expected_total && last_change.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            let now = received.load(Ordering::Relaxed);
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
        }
        let exit = child.stop(Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        let got = reader.join().map_err(|_| "the output reader panicked")??;

        // The k-th output of a heater answers its k-th expected output.
        let mut next = vec![0usize; heaters];
        let (mut samples, mut wrong, mut extra) = (Vec::new(), 0u64, 0u64);
        for (heater, command, at) in got {
            let Some(k) = next.get_mut(heater as usize) else {
                extra += 1;
                continue;
            };
            match expected[heater as usize].get(*k) {
                Some(&(idx, want)) => {
                    if sys.output == Output::Commands && command != want {
                        wrong += 1;
                    }
                    if idx as usize >= first {
                        samples.push(at.saturating_sub(sent_at[idx as usize]));
                    }
                }
                None => extra += 1,
            }
            *k += 1;
        }
        let matched: u64 = next
            .iter()
            .zip(&expected)
            .map(|(&k, e)| k.min(e.len()) as u64)
            .sum();
        samples.sort_unstable();
        let pct = |q: f64| -> f64 {
            if samples.is_empty() {
                return f64::NAN;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1e6
        };
        let (p50, p99, p999) = (pct(0.50), pct(0.99), pct(0.999));
        let max = samples.last().map_or(f64::NAN, |&s| s as f64 / 1e6);
        let offered = (n - heaters) as f64 / send_secs;
        progress!(
            self,
            "{}: {} samples after the warm-up, {:.0} rec/s offered: p50 {p50:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms; {} missing, {wrong} wrong, {extra} extra",
            sys.name,
            samples.len(),
            offered,
            expected_total - matched
        );
        Ok(json!({
            "offered_rate": offered,
            "records": n - first,
            "samples": samples.len(),
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "expected_outputs": expected_total,
            "missing": expected_total - matched,
            "wrong": wrong,
            "extra": extra,
            "exit_status": exit.status,
        }))
    }
}
