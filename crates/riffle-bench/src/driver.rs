//! What the phases of `riffle-bench run` share: its flags, the [`Driver`]
//! (the broker, the run's sizes and its helpers for topics, offsets and
//! command lines), and the filled inputs with the outputs expected of them
//! ([`Filled`]). The phases are methods of the driver in their own modules
//! (`throughput.rs`, `latency.rs`); `suite.rs` runs them in order.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use riffle::log::kafka::KafkaLog;
use riffle::log::{partition_for_key, Log, TopicSpec};

use crate::data::Generator;
use crate::figures::rate;
use crate::kafka::{self, Result};
use crate::systems::{System, Workload};
use crate::windowed;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// 5,000,000 input records, 1 throughput run and 10 s of latency per
    /// system.
    Quick,
    /// 15,000,000 input records, 3 throughput runs and 60 s of latency per
    /// system.
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
    /// Throughput runs of each system, interleaved: every system's first
    /// run, then every system's second run, ... [default: by mode: quick 1,
    /// full 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: Option<u32>,
    /// Length of the latency phase, whole seconds as a duration (`60s`,
    /// `2m`, a bare number of seconds) [default: by mode].
    #[arg(long = "latency", visible_alias = "latency-secs", value_name = "DURATION", value_parser = whole_seconds)]
    pub latency_secs: Option<u64>,
    /// Offered load before the latency phase starts measuring, whole
    /// seconds as a duration [default: by mode].
    #[arg(long = "warmup", visible_alias = "warmup-secs", value_name = "DURATION", value_parser = whole_seconds)]
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

/// A duration flag in `riffle::duration`'s grammar, in whole seconds: the
/// phases count records as rate × seconds.
fn whole_seconds(s: &str) -> std::result::Result<u64, String> {
    let d = riffle::duration::parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("'{s}' is not a whole number of seconds"));
    }
    Ok(d.as_secs())
}

/// Input records of a quick run. At 1 to 2 M records/s, as the fastest
/// systems here run, fewer would leave a steady-state window of a second
/// or two, within which one commit interval or one slow fetch is a tenth
/// of the figure.
pub(crate) const QUICK_RECORDS: u64 = 5_000_000;

/// Input records of a full run; a system's `prefix` is given for this many
/// and scaled with the input size otherwise.
pub(crate) const FULL_RECORDS: u64 = 15_000_000;

pub(crate) struct Driver {
    pub(crate) args: RunArgs,
    pub(crate) log: KafkaLog,
    pub(crate) run_id: String,
    pub(crate) started: Instant,
    pub(crate) records: u64,
    /// Throughput runs of each system.
    pub(crate) repeat: u32,
    pub(crate) latency_secs: u64,
    pub(crate) warmup_secs: u64,
    /// The repository's root, for `{repo}` in command lines.
    pub(crate) repo: PathBuf,
}

/// A filled input topic: what the systems must produce for it. The heater
/// workload's outputs are the controller's commands; the windowed
/// workload's are its window results, each "caused" by the record that
/// closed its window.
pub(crate) struct Filled {
    pub(crate) topic: String,
    /// Outputs expected for the whole input (commands, or window results).
    pub(crate) outputs: u64,
    /// Per input partition, the offsets of the records that cause an
    /// output (ascending; a record closing several windows appears once
    /// per window): the expected outputs for any committed position.
    pub(crate) output_offsets: Vec<Vec<i64>>,
    /// The fill-order index of the record that causes each output,
    /// ascending.
    pub(crate) output_causes: Vec<u64>,
    /// The windowed workload's expected results (empty for the heater's).
    pub(crate) windows: Vec<windowed::Expected>,
}

impl Filled {
    /// Input records processed by a system that has written `n` outputs,
    /// estimated from the fill order: up to the record that caused the
    /// n-th output (all of them once every output is out). Partitions
    /// are read in parallel, so the fill order is the order of processing
    /// up to the interleaving of partitions. A count of outputs alone
    /// would not do: they are not spread evenly over the input (with the
    /// default seed, 5 % of the heater's commands are caused by the first
    /// 1.9 % of the records, as each heater's first excursion always sends
    /// one; the windows close in bursts, every heater's minute at once).
    pub(crate) fn records_for_outputs(&self, n: u64) -> u64 {
        match n {
            0 => 0,
            n if n >= self.outputs => u64::MAX,
            n => self.output_causes[n as usize - 1] + 1,
        }
    }

    /// Outputs the system writes for the records below `committed[p]` in
    /// each partition `p`.
    pub(crate) fn outputs_below(&self, committed: &[i64]) -> u64 {
        self.output_offsets
            .iter()
            .zip(committed)
            .map(|(offsets, &c)| offsets.partition_point(|&o| o < c) as u64)
            .sum()
    }
}

/// A progress line on stderr, with the time since the run started.
#[macro_export]
macro_rules! progress {
    ($d:expr, $($t:tt)*) => {
        eprintln!("[{:>7.1}s] {}", $d.started.elapsed().as_secs_f64(), format!($($t)*))
    };
}

impl Driver {
    /// A system's name in progress lines, with the run when there are
    /// several.
    pub(crate) fn label(&self, sys: &System, rep: u32) -> String {
        if self.repeat > 1 {
            format!("{} (run {rep} of {})", sys.name, self.repeat)
        } else {
            sys.name.to_string()
        }
    }

    /// Input records a system's throughput is measured over: all of them,
    /// or its prefix scaled with the input size.
    pub(crate) fn target(&self, sys: &System) -> u64 {
        match sys.prefix {
            Some(n) => (n * self.records / FULL_RECORDS).clamp(1, self.records),
            None => self.records,
        }
    }

    pub(crate) fn topic(&self, name: &str) -> Result<()> {
        self.log
            .recreate_topic(&TopicSpec::new(name, self.args.partitions), ADMIN)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn highs(&self, topic: &str) -> Result<Vec<i64>> {
        let mut parts = self
            .log
            .describe_topic(topic, ADMIN)
            .map_err(|e| e.to_string())?
            .partitions;
        parts.sort_by_key(|p| p.id);
        Ok(parts.iter().map(|p| p.high).collect())
    }

    /// The group's committed offset of each partition of `topic`, each
    /// capped at its end `highs[p]` (0 where nothing is committed).
    pub(crate) fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        highs: &[i64],
    ) -> Result<Vec<i64>> {
        let committed = self
            .log
            .committed_offsets(group, topic, ADMIN)
            .map_err(|e| e.to_string())?;
        Ok(highs
            .iter()
            .enumerate()
            .map(|(p, &high)| {
                committed
                    .iter()
                    .find(|c| c.partition.partition == p as i32)
                    .and_then(|c| c.committed)
                    .unwrap_or(0)
                    .clamp(0, high)
            })
            .collect())
    }

    /// Records of `topic` the group has committed (summed over partitions,
    /// each capped at its end), and whether it has committed them all.
    pub(crate) fn committed(&self, group: &str, topic: &str, highs: &[i64]) -> Result<(u64, bool)> {
        let offsets = self.committed_offsets(group, topic, highs)?;
        let sum = offsets.iter().map(|&c| c as u64).sum();
        Ok((sum, offsets == highs))
    }

    pub(crate) fn argv(
        &self,
        sys: &System,
        input: &str,
        output: &str,
        group: &str,
    ) -> Result<Vec<String>> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut argv: Vec<String> = sys
            .argv
            .iter()
            .map(|a| {
                a.replace("{bench}", &exe.to_string_lossy())
                    .replace("{repo}", &self.repo.to_string_lossy())
            })
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

    /// Fills the input topic of `workload` and works out, per partition,
    /// which records cause an output. The producer places keys as the
    /// Java client does (murmur2), so the driver knows each record's
    /// partition and offset; the topic's ends are checked against that.
    pub(crate) fn fill(&self, input: &str, workload: Workload) -> Result<Filled> {
        self.topic(input)?;
        let producer = kafka::producer(&self.args.brokers, 20)?;
        let mut heater = Generator::new(self.args.heaters, self.args.seed);
        let mut windows = windowed::Generator::new(
            self.args.heaters,
            self.args.seed,
            windowed::epoch_for(self.records),
        );
        let mut reference = windowed::Reference::new(self.args.partitions);
        let t0 = Instant::now();
        let (mut outputs, mut bytes) = (0u64, 0u64);
        let parts = self.args.partitions as usize;
        let mut next_offset = vec![0i64; parts];
        let mut output_offsets = vec![Vec::new(); parts];
        let mut output_causes = Vec::new();
        for i in 0..self.records {
            let (key, value, p, caused) = match workload {
                Workload::Heater => {
                    let r = heater.next_record();
                    let p = partition_for_key(r.key.as_bytes(), self.args.partitions) as usize;
                    (r.key, r.value, p, r.command.is_some() as usize)
                }
                Workload::Windows => {
                    let r = windows.next_record();
                    let before = reference.closed.len();
                    let p = reference.add(&r);
                    (r.key, r.value, p, reference.closed.len() - before)
                }
            };
            for _ in 0..caused {
                outputs += 1;
                output_offsets[p].push(next_offset[p]);
                output_causes.push(i);
            }
            next_offset[p] += 1;
            bytes += (key.len() + value.len()) as u64;
            kafka::send(&producer, input, key.as_bytes(), &value)?;
            if i > 0 && i % 1_000_000 == 999_999 {
                progress!(self, "fill: {} records", i + 1);
            }
        }
        kafka::flush(&producer)?;
        let secs = t0.elapsed().as_secs_f64();
        let what = match workload {
            Workload::Heater => "commands",
            Workload::Windows => "window results",
        };
        progress!(
            self,
            "fill {input}: {} records ({:.0} bytes each, key + value) in {secs:.1} s, {}; {outputs} {what} expected",
            self.records,
            bytes as f64 / self.records as f64,
            rate(self.records as f64, secs)
        );
        let highs = self.highs(input)?;
        if highs != next_offset {
            return Err(format!(
                "the input's partitions end at {highs:?}, not at {next_offset:?}: records were placed otherwise than by murmur2"
            ));
        }
        Ok(Filled {
            topic: input.to_string(),
            outputs,
            output_offsets,
            output_causes,
            windows: reference.closed,
        })
    }
}
