//! The latency phase: records offered at a fixed rate to a fresh input,
//! and per expected output the time from sending the record that causes it
//! to receiving it. For the heater workload the cause of a command is the
//! measurement it answers; for the windowed workload the cause of a
//! window's result is the record whose event time closed the window (the
//! first of its partition at or past the window's end plus the
//! out-of-orderness and grace, `windowed.rs`): no system can send the
//! result before that record, and everything after it is the system's.
//!
//! A system that cannot keep up with the offered load leaves outputs that
//! never arrive within the wait after the load. Those count as +infinity in
//! the percentiles (they are censored: all that is known is that they took
//! longer than the driver waited), so such a system is reported as "p99 >
//! N s" and not with a small figure computed from the outputs that did
//! arrive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use riffle_heater::messages::Command;
use serde_json::{json, Value};

use crate::child::Child;
use crate::data::{heater_id, Generator};
use crate::driver::Driver;
use crate::kafka::{self, Result};
use crate::progress;
use crate::systems::{Output, System, Workload};
use crate::windowed;

/// After the load: wait for outputs until all arrived or none arrived for
/// QUIET, but no longer than DRAIN.
const QUIET: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_secs(30);
/// How long a system may take to print its ready line.
const READY: Duration = Duration::from_secs(180);

impl Driver {
    /// Offers records at a fixed rate to a fresh input and measures, per
    /// expected output, the time from sending the record that causes it to
    /// receiving it.
    pub(crate) fn latency(&self, sys: &System) -> Result<Value> {
        let input = format!("lat-{}-{}-in", sys.name, self.run_id);
        let output = format!("lat-{}-{}-out", sys.name, self.run_id);
        let group = format!("lat-{}-{}", sys.name, self.run_id);
        self.topic(&input)?;
        self.topic(&output)?;

        // The records, and per heater the input index of each expected
        // output with what it should say.
        let heaters = self.args.heaters;
        // The heater workload starts with the settings, sent before the
        // load; then a warm-up at the offered load, then what is measured.
        let lead = match sys.workload() {
            Workload::Heater => heaters,
            Workload::Windows => 0,
        };
        let first = lead + (self.args.rate * self.warmup_secs) as usize;
        let n = first + (self.args.rate * self.latency_secs) as usize;
        let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(n);
        let mut expected: Vec<Vec<(u32, Want)>> = vec![Vec::new(); heaters];
        match sys.workload() {
            Workload::Heater => {
                let mut g = Generator::new(heaters, self.args.seed + 1);
                for i in 0..n {
                    let r = g.next_record();
                    let want = match (sys.output, r.command) {
                        (Output::Echo, _) => Some(Want::Any),
                        (_, Some(c)) => Some(Want::Command(c)),
                        (_, None) => None,
                    };
                    if let Some(want) = want {
                        expected[r.heater as usize].push((i as u32, want));
                    }
                    records.push((r.key, r.value));
                }
            }
            Workload::Windows => {
                // The cause of a window's result is the record that closed
                // it: the latency is from sending that record.
                let mut g = windowed::Generator::new(
                    heaters,
                    self.args.seed + 1,
                    windowed::epoch_for(n as u64),
                );
                let mut reference = windowed::Reference::new(self.args.partitions);
                for _ in 0..n {
                    let r = g.next_record();
                    reference.add(&r);
                    records.push((r.key, r.value));
                }
                for e in reference.closed {
                    expected[e.heater as usize].push((e.cause as u32, Want::Window(e)));
                }
            }
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
            std::thread::spawn(move || -> Result<Vec<(u32, Vec<u8>, u64)>> {
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
                            got.push((heater, m.payload().unwrap_or_default().to_vec(), at));
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
        let t0 = Instant::now();
        let mut child = Child::spawn(sys.name, &argv, false, sys.ready)?;

        // A system that says when it is ready gets its input only then, so
        // that its start-up is not counted as latency.
        if sys.ready.is_some() {
            while child.ready_at().is_none() {
                if let Some(exit) = child.try_exit() {
                    return Err(format!(
                        "{} exited early with status {}",
                        sys.name, exit.status
                    ));
                }
                if t0.elapsed() > READY {
                    return Err(format!("not ready within {} s", READY.as_secs()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The leading records (the settings). A system without a ready line is waited for until
        // its group has committed them, the only sign that it is up. One
        // with a ready line is not: it may commit seldom (Kafka Streams
        // every 30 s under at-least-once), and the settings precede the
        // measurements in every partition and are processed in the warm-up.
        for (i, (key, value)) in records[..lead].iter().enumerate() {
            sent_at[i] = base.elapsed().as_nanos() as u64;
            kafka::send(&producer, &input, key.as_bytes(), value)?;
        }
        kafka::flush(&producer)?;
        let highs = self.highs(&input)?;
        while sys.ready.is_none() {
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
            "{}: latency phase: started and given the {lead} leading records in {:.1} s; offering {} rec/s for {} s + {} s",
            sys.name,
            t0.elapsed().as_secs_f64(),
            self.args.rate,
            self.warmup_secs,
            self.latency_secs
        );

        // The fixed offered load.
        let t1 = Instant::now();
        let per_record = 1.0 / self.args.rate as f64;
        for (j, (key, value)) in records[lead..].iter().enumerate() {
            let due = t1 + Duration::from_secs_f64(j as f64 * per_record);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            sent_at[lead + j] = base.elapsed().as_nanos() as u64;
            kafka::send(&producer, &input, key.as_bytes(), value)?;
        }
        let send_secs = t1.elapsed().as_secs_f64();
        kafka::flush(&producer)?;
        // The rest of the outputs: until all arrived, or none for QUIET,
        // but no longer than DRAIN.
        let drain = Instant::now();
        let (mut last, mut last_change) = (received.load(Ordering::Relaxed), Instant::now());
        while last < expected_total && last_change.elapsed() < QUIET && drain.elapsed() < DRAIN {
            std::thread::sleep(Duration::from_millis(20));
            let now = received.load(Ordering::Relaxed);
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
        }
        // Outputs still missing now are censored at this moment.
        let stopped_at = base.elapsed().as_nanos() as u64;
        stop.store(true, Ordering::Relaxed);
        let got = reader.join().map_err(|_| "the output reader panicked")??;
        let exit = child.stop(Duration::from_secs(60));

        // The k-th output of a heater answers its k-th expected output.
        let mut next = vec![0usize; heaters];
        let (mut samples, mut wrong, mut extra) = (Vec::new(), 0u64, 0u64);
        let got_total = got.len();
        for (heater, payload, at) in got {
            let Some(k) = next.get_mut(heater as usize) else {
                extra += 1;
                continue;
            };
            match expected[heater as usize].get(*k) {
                Some((idx, want)) => {
                    let idx = *idx;
                    if !want.answered_by(heater, &payload) {
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
        // The measured expected outputs that never arrived: +infinity, known
        // only to exceed the time from their cause to `stopped_at`.
        let unanswered: Vec<u64> = next
            .iter()
            .zip(&expected)
            .flat_map(|(&k, e)| e.iter().skip(k))
            .filter(|&&(idx, _)| idx as usize >= first)
            .map(|&(idx, _)| stopped_at.saturating_sub(sent_at[idx as usize]))
            .collect();
        let latencies = Latencies::new(samples, unanswered.clone());
        let offered = (n - lead) as f64 / send_secs;
        progress!(
            self,
            "{}: {} samples after the warm-up ({} never arrived), {:.0} rec/s offered: p50 {}, p99 {}, p99.9 {}, max {}; {} missing, {wrong} wrong, {extra} extra",
            sys.name,
            latencies.samples.len(),
            unanswered.len(),
            offered,
            latencies.show(0.50),
            latencies.show(0.99),
            latencies.show(0.999),
            latencies.show(1.0),
            expected_total - matched
        );
        let mut v = json!({
            "offered_rate": offered,
            "records": n - first,
            "samples": latencies.samples.len(),
            "unanswered": unanswered.len(),
            "expected_outputs": expected_total,
            "received_outputs": got_total,
            "missing": expected_total - matched,
            "wrong": wrong,
            "extra": extra,
            "exit_status": exit.status,
        });
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)] {
            let (value, above) = latencies.get(q);
            v[format!("{name}_ms")] = json!(value);
            if let Some(above) = above {
                v[format!("{name}_censored_above_ms")] = json!(above);
            }
        }
        Ok(v)
    }
}

/// What an expected output must say.
#[derive(Clone, Copy)]
enum Want {
    /// Anything (a pass-through's echo).
    Any,
    /// This command.
    Command(Command),
    /// This window's result.
    Window(windowed::Expected),
}

impl Want {
    fn answered_by(&self, heater: u32, payload: &[u8]) -> bool {
        match self {
            Want::Any => true,
            Want::Command(c) => Command::from_json(payload).ok() == Some(*c),
            Want::Window(e) => {
                let key = heater_id(heater as usize);
                windowed::Got::parse(Some(key.as_bytes()), payload).is_ok_and(|(_, g)| g.matches(e))
            }
        }
    }
}

/// Latency samples plus the outputs that never arrived (+infinity).
struct Latencies {
    /// Nanoseconds, ascending.
    samples: Vec<u64>,
    unanswered: usize,
    /// Lower bounds of every latency, ascending: the samples, and for each
    /// unanswered output the time it had waited when the driver stopped
    /// looking. Their order statistics bound the true ones from below,
    /// which gives the "> N" of a censored percentile.
    bounds: Vec<u64>,
}

impl Latencies {
    /// `samples` of the outputs that arrived, and the time each unanswered
    /// one had waited, nanoseconds.
    fn new(mut samples: Vec<u64>, waited: Vec<u64>) -> Self {
        samples.sort_unstable();
        let mut bounds: Vec<u64> = samples.iter().chain(&waited).copied().collect();
        bounds.sort_unstable();
        Self {
            samples,
            unanswered: waited.len(),
            bounds,
        }
    }

    /// The `q` quantile in ms; or, if it falls among the unanswered outputs,
    /// None and the bound it is known to exceed; (None, None) if there is
    /// nothing at all.
    fn get(&self, q: f64) -> (Option<f64>, Option<f64>) {
        let total = self.samples.len() + self.unanswered;
        if total == 0 {
            return (None, None);
        }
        let i = ((total as f64 * q).ceil() as usize).clamp(1, total) - 1;
        match self.samples.get(i) {
            Some(&ns) => (Some(ns as f64 / 1e6), None),
            None => (None, Some(self.bounds[i] as f64 / 1e6)),
        }
    }

    fn show(&self, q: f64) -> String {
        match self.get(q) {
            (Some(ms), _) => format!("{ms:.1} ms"),
            (None, Some(above)) => format!("> {:.1} s", above / 1e3),
            (None, None) => "–".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn unanswered_outputs_are_infinite() {
        // 98 answered in 1..=98 ms, 2 never (after waiting 50 ms and 30 s):
        // p50 is known, p99 is not.
        let samples = (1..=98).map(|ms| ms * 1_000_000).collect();
        let l = Latencies::new(samples, vec![30_000_000_000, 50_000_000]);
        assert_eq!(l.get(0.5), (Some(50.0), None));
        assert_eq!(l.get(0.98), (Some(98.0), None));
        // Known to exceed the 99th of the lower bounds (1..=98 ms, 50 ms, 30 s).
        assert_eq!(l.get(0.99), (None, Some(98.0)));
        assert_eq!(l.show(1.0), "> 30.0 s");
        assert_eq!(Latencies::new(vec![], vec![]).get(0.5), (None, None));
    }
}
