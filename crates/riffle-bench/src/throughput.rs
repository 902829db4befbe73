//! The throughput phase: a system under test on the pre-filled input, timed
//! over its steady-state window (`window.rs`).
//!
//! Progress f(t), polled every 50 ms:
//!
//! - at-least-once, whole input: outputs written (the sum of the output
//!   topic's high watermarks), converted to the input records they account
//!   for (`Filled::records_for_outputs`: up to the record that caused the
//!   last command or closed the last window; one output per record for
//!   the pass-throughs), / all input records. Committed offsets would not do:
//!   Kafka Streams commits every 30 s under at-least-once, and the rate
//!   would measure its commit interval.
//! - exactly-once: input records committed / target. Outputs there include
//!   transaction markers and uncommitted records, while input offsets are
//!   committed atomically with the outputs they caused, every 100 ms.
//! - a prefix (the first N input records only): input records committed
//!   (summed over partitions) / N, under either guarantee. The input is
//!   spread over partitions by key and consumed from them in any
//!   interleaving, so "the first N records" cannot be located by a count of
//!   outputs; a count of committed records is exact whatever the
//!   interleaving. It assumes the system commits often (the Python/Ray peer
//!   commits every 100 ms); the commit lag then shifts both ends of the
//!   window alike. The outputs expected of a prefix run are those of the
//!   records committed when it stopped, which the driver knows per
//!   partition from the fill.
//!
//! With `--repeat N` each system runs N times, each run on its own output
//! topic and group; the report keeps the run with the median records/s
//! (`figures::median_run`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::child::Child;
use crate::driver::{Driver, Filled};
use crate::figures::rate;
use crate::kafka::{self, Result};
use crate::progress;
use crate::systems::{Output, Placement, System};
use crate::window::{Point, Progress};
use crate::windowed;

/// How a system's progress is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// Outputs written / outputs expected.
    Outputs,
    /// Input records committed / target.
    Committed,
}

impl Measure {
    fn of(sys: &System) -> Self {
        if sys.exactly_once() || sys.prefix.is_some() {
            Measure::Committed
        } else {
            Measure::Outputs
        }
    }

    fn name(self) -> &'static str {
        match self {
            Measure::Outputs => "outputs written",
            Measure::Committed => "input records committed",
        }
    }
}

impl Driver {
    /// Runs `sys` on the filled input until its progress reaches 1 (its
    /// run `rep` of `self.repeat`); returns its measurement as JSON.
    pub(crate) fn throughput(&self, sys: &System, input: &Filled, rep: u32) -> Result<Value> {
        let output = format!("tp-{}-{}-r{rep}", sys.name, self.run_id);
        let group = output.clone();
        let name = self.label(sys, rep);
        if sys.placement == Placement::InProcess {
            return self.in_process(sys, input, &name, &output, &group);
        }
        self.topic(&output)?;
        let argv = self.argv(sys, &input.topic, &output, &group)?;
        let all_outputs = match sys.output {
            Output::Echo => self.records,
            Output::Commands | Output::Windows => input.outputs,
        };
        let target = self.target(sys);
        let measure = Measure::of(sys);
        let unit = match measure {
            Measure::Outputs => "records (by outputs)",
            Measure::Committed => "records committed",
        };
        let limit = Duration::from_secs(120 + target / 2_000);
        let highs = self.highs(&input.topic)?;

        match sys.prefix {
            Some(_) => progress!(
                self,
                "{name}: throughput phase starts (over the first {target} of {} records)",
                self.records
            ),
            None => progress!(self, "{name}: throughput phase starts"),
        }
        let t0 = Instant::now();
        let mut child = Child::spawn(sys.name, &argv, false, sys.ready)?;
        let mut progress = Progress::default();
        let mut last_report = Instant::now();
        let mut done = 0u64;
        loop {
            if let Some(exit) = child.try_exit() {
                return Err(format!(
                    "{} exited early with status {}",
                    sys.name, exit.status
                ));
            }
            let asked = t0.elapsed().as_secs_f64();
            let n = match measure {
                Measure::Outputs => self.highs(&output).map(|h| {
                    let outputs = h.iter().sum::<i64>() as u64;
                    match sys.output {
                        Output::Echo => outputs,
                        Output::Commands | Output::Windows => input.records_for_outputs(outputs),
                    }
                    .min(target)
                }),
                Measure::Committed => self.committed(&group, &input.topic, &highs).map(|c| c.0),
            };
            let answered = t0.elapsed().as_secs_f64();
            let tree = child.sample();
            // A fresh broker may not serve group requests yet: keep asking.
            if let Ok(n) = n {
                done = n;
                progress.push(Point {
                    t: (asked + answered) / 2.0,
                    f: n as f64 / target as f64,
                    cpu_s: tree.cpu_s,
                });
            }
            if progress.last() >= 1.0 && (sys.ready.is_none() || child.ready_at().is_some()) {
                break;
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "{done} of {target} {unit} after {} s",
                    limit.as_secs()
                ));
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                let s = t0.elapsed().as_secs_f64();
                progress!(
                    self,
                    "{name}: {done} of {target} {unit} after {s:.1} s ({} processes, {} MB, {:.1} CPU s)",
                    tree.processes,
                    tree.rss_bytes >> 20,
                    tree.cpu_s
                );
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let wall_s = t0.elapsed().as_secs_f64();
        let cpu_s = child.sample().cpu_s;
        // What it holds once idle: its state, without the buffers of a
        // full-speed run.
        std::thread::sleep(Duration::from_secs(1));
        let rest_rss = child.sample().rss_bytes;
        let peak_rss = child.peak_rss();
        let startup_s = child
            .ready_at()
            .map(|at| at.duration_since(t0).as_secs_f64());
        let exit = child.stop(Duration::from_secs(60));
        let window = progress
            .window(target, startup_s)
            .ok_or("finished too fast to time a window")?;

        // What it wrote, against what it should have for what it committed.
        let output_records = kafka::count(
            &self.args.brokers,
            &output,
            self.args.partitions,
            sys.exactly_once(),
        )?;
        let (expected_output, committed_at_stop) = match sys.prefix {
            None => (all_outputs, None),
            Some(_) => {
                let committed = self.committed_offsets(&group, &input.topic, &highs)?;
                let expected = match sys.output {
                    Output::Commands | Output::Windows => input.outputs_below(&committed),
                    Output::Echo => committed.iter().sum::<i64>() as u64,
                };
                (expected, Some(committed.iter().sum::<i64>() as u64))
            }
        };
        let window_check = match sys.output {
            Output::Windows => Some(self.check_windows(sys, input, &output)?),
            _ => None,
        };
        let cpu_per_million = window.cpu_s / window.records * 1e6;
        progress!(
            self,
            "{name}: {:.0} records in {:.2} s of steady state, {} (started in {}, {wall_s:.1} s in all); {:.2} CPU s / M records, {cpu_s:.1} CPU s in all, peak RSS {} MB; {output_records} outputs (expected {expected_output})",
            window.records,
            window.end_s - window.start_s,
            rate(window.records, window.end_s - window.start_s),
            startup_s.map_or("–".into(), |s| format!("{s:.1} s")),
            cpu_per_million,
            peak_rss >> 20
        );
        Ok(json!({
            "records": target,
            "prefix": sys.prefix.map(|_| target),
            "progress_measure": measure.name(),
            "window_start_s": window.start_s,
            "window_end_s": window.end_s,
            "window_records": window.records,
            "seconds": window.end_s - window.start_s,
            "records_per_s": window.records_per_s,
            "startup_s": startup_s,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "cpu_s_window": window.cpu_s,
            "cpu_s_per_million": cpu_per_million,
            "peak_rss_bytes": peak_rss,
            "rest_rss_bytes": rest_rss,
            "output_records": output_records,
            "expected_output": expected_output,
            "committed_at_stop": committed_at_stop,
            "exit_status": exit.status,
            "window_check": window_check,
        }))
    }

    /// Reads back every window result of a run and compares it with the
    /// reference's (`windowed::check`): same windows, counts, sums, minima,
    /// maxima and means.
    fn check_windows(&self, sys: &System, input: &Filled, output: &str) -> Result<Value> {
        let mut got = Vec::with_capacity(input.windows.len());
        kafka::read_all(
            &self.args.brokers,
            output,
            self.args.partitions,
            sys.exactly_once(),
            |k, v| got.push(windowed::Got::parse(k, v)),
        )?;
        let c = windowed::check(&input.windows, got);
        progress!(
            self,
            "{}: window results against the reference: {} right, {} wrong, {} unexpected, {} duplicates, {} missing{}",
            sys.name,
            c.right,
            c.wrong,
            c.unexpected,
            c.duplicates,
            c.missing,
            c.first_problem
                .as_deref()
                .map_or(String::new(), |p| format!("; first: {p}"))
        );
        Ok(json!({
            "right": c.right,
            "wrong": c.wrong,
            "unexpected": c.unexpected,
            "duplicates": c.duplicates,
            "missing": c.missing,
            "first_problem": c.first_problem,
        }))
    }

    /// A system that copies the input into its own process and times itself.
    fn in_process(
        &self,
        sys: &System,
        input: &Filled,
        name: &str,
        output: &str,
        group: &str,
    ) -> Result<Value> {
        let argv = self.argv(sys, &input.topic, output, group)?;
        let expected_output = match sys.output {
            Output::Echo => self.records,
            Output::Commands | Output::Windows => input.outputs,
        };
        progress!(
            self,
            "{name}: copying the input into the process, then processing"
        );
        let t0 = Instant::now();
        let mut child = Child::spawn(sys.name, &argv, true, sys.ready)?;
        let exit = child.wait(Duration::from_secs(180 + self.records / 2_000))?;
        let wall_s = t0.elapsed().as_secs_f64();
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
            "{name}: {} records in {secs:.2} s, {}",
            self.records,
            rate(self.records as f64, secs)
        );
        Ok(json!({
            "records": self.records,
            "seconds": secs,
            "records_per_s": self.records as f64 / secs,
            "wall_s": wall_s,
            "cpu_s": cpu,
            "cpu_s_per_million": cpu / self.records as f64 * 1e6,
            "peak_rss_bytes": v["peak_rss_bytes"],
            "output_records": v["output"],
            "expected_output": expected_output,
        }))
    }
}
