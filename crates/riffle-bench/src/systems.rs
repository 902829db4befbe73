//! The systems under test.
//!
//! A system under test is a command line. The driver appends
//! `--brokers HOST:PORT --input TOPIC --output TOPIC --group GROUP
//! --guarantee at-least-once|exactly-once`; the process reads the input
//! topic as that consumer group from the earliest offset, writes its outputs
//! keyed by heater id to the output topic, commits its input offsets, and
//! runs until SIGTERM. The peer implementations (Kafka Streams, the book's
//! Python/Ray original, under `bench/`) are entries whose `argv` starts
//! their own program.

use crate::worker::READY;

/// What a system writes for its input, which decides how the latency phase
/// matches outputs to inputs (per heater, the k-th output to the k-th
/// expected one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Every input record, unchanged.
    Echo,
    /// The heater controller's ON/OFF commands.
    Commands,
    /// One result per closed window of the windowed-aggregation workload
    /// (`windowed.rs`), which has an input of its own.
    Windows,
}

/// Which input a system reads: the heater workload's sensor records
/// (settings and measurements) or the windowed workload's measurements
/// with event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Heater,
    Windows,
}

/// Where a system's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// It reads the input topic on the broker until SIGTERM; measured by the
    /// driver (throughput and latency phases).
    Kafka,
    /// It copies the input into an in-process log, processes it there and
    /// prints its own measurement as one JSON line (throughput only).
    InProcess,
}

pub struct System {
    pub name: &'static str,
    pub description: &'static str,
    pub guarantee: &'static str,
    pub output: Output,
    pub placement: Placement,
    /// The command line; `{bench}` stands for this program, `{repo}` for
    /// the repository's root.
    pub argv: &'static [&'static str],
    /// A substring of the stderr line the system prints once it is ready
    /// (joined its group, restored its state). The driver waits for it before
    /// it starts measuring, so that start-up is timed apart from processing.
    pub ready: Option<&'static str>,
    /// Measure throughput over only the first records of the input: this
    /// many in full mode, scaled with the input size otherwise (a fifth in
    /// quick mode), for a system too slow to get through it all in a
    /// reasonable time. The report says so.
    pub prefix: Option<u64>,
}

impl System {
    pub fn exactly_once(&self) -> bool {
        self.guarantee == "exactly-once"
    }

    pub fn workload(&self) -> Workload {
        match self.output {
            Output::Echo | Output::Commands => Workload::Heater,
            Output::Windows => Workload::Windows,
        }
    }
}

const ALO: &str = "at-least-once";
const EOS: &str = "exactly-once";

/// The Kafka Streams peer (`bench/kafka-streams`) under one guarantee.
const fn kafka_streams(name: &'static str, guarantee: &'static str) -> System {
    System {
        name,
        description: "heater controller, Kafka Streams 4.4 Processor API (bench/kafka-streams)",
        guarantee,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{repo}/bench/kafka-streams/run.sh"],
        ready: Some("heater-kafka-streams: RUNNING"),
        prefix: None,
    }
}

pub const SYSTEMS: &[System] = &[
    System {
        name: "ceiling",
        description: "librdkafka consume -> produce pass-through, no framework, 2 threads, riffle's client settings",
        guarantee: ALO,
        output: Output::Echo,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "ceiling"],
        ready: None,
        prefix: None,
    },
    System {
        name: "bare-keyed-alo",
        description: "heater controller by hand on librdkafka (HashMap, serde_json), no framework, 2 threads",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "bare-keyed"],
        ready: None,
        prefix: None,
    },
    System {
        name: "bare-keyed-eos",
        description: "heater controller by hand on librdkafka (HashMap, serde_json, transactions), no framework, 2 threads",
        guarantee: EOS,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "bare-keyed"],
        ready: None,
        prefix: None,
    },
    System {
        name: "riffle-stateless",
        description: "riffle App, stateless::map identity",
        guarantee: ALO,
        output: Output::Echo,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-stateless"],
        ready: Some(READY),
        prefix: None,
    },
    System {
        name: "riffle-keyed-alo",
        description: "heater controller, Style::Keyed",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-keyed"],
        ready: Some(READY),
        prefix: None,
    },
    System {
        name: "riffle-keyed-eos",
        description: "heater controller, Style::Keyed",
        guarantee: EOS,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-keyed"],
        ready: Some(READY),
        prefix: None,
    },
    System {
        name: "riffle-actors-alo",
        description: "heater controller, Style::Actors { workers: 2 }",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-actors", "--workers", "2"],
        ready: Some(READY),
        prefix: None,
    },
    System {
        name: "riffle-actors-eos",
        description: "heater controller, Style::Actors { workers: 2 }",
        guarantee: EOS,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-actors", "--workers", "2"],
        ready: Some(READY),
        prefix: None,
    },
    System {
        name: "riffle-embedded",
        description: "heater controller, Style::Keyed, on the in-memory embedded log",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::InProcess,
        argv: &["{bench}", "worker", "riffle-embedded"],
        ready: None,
        prefix: None,
    },
    kafka_streams("kafka-streams-alo", ALO),
    kafka_streams("kafka-streams-eos", EOS),
    System {
        name: "python-ray",
        description: "the book's heater controller, Ray + confluent_kafka (bench/python-ray)",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        // One consumer actor. With two, the first to join starts on all ten
        // partitions before the second joins; the rebalance then moves half
        // of them without their state (the book keeps state only in the
        // consumer's memory), and their heaters' measurements are ignored
        // until the next setting. In a trial on the pre-filled input two
        // consumers committed records faster (145k against 62k rec/s) but
        // sent 2,415 of 9,738 commands: faster only by not doing the work.
        // One consumer sent all of them, so it is the fastest correct setup.
        argv: &["{repo}/bench/python-ray/run.sh", "--consumers", "1"],
        ready: Some("controller: running:"),
        // About 60k rec/s here with one consumer: 2,000,000 records take
        // 30-50 s of steady state in full mode, 667,000 take about 11 s in
        // quick mode (plus 5-8 s of Ray start-up).
        prefix: Some(2_000_000),
    },
    python_riffle("python-riffle-alo", ALO),
    python_riffle("python-riffle-eos", EOS),
    riffle_window("riffle-window-alo", ALO),
    riffle_window("riffle-window-eos", EOS),
    kafka_streams_window("kafka-streams-window-alo", ALO),
    kafka_streams_window("kafka-streams-window-eos", EOS),
];

/// Riffle's `Windowed` app on the windowed workload: tumbling minutes,
/// `Stats`, the out-of-orderness and grace of `windowed.rs`, key-based.
const fn riffle_window(name: &'static str, guarantee: &'static str) -> System {
    System {
        name,
        description: "per-heater statistics per minute of event time, riffle Windowed (tumbling 60 s, Stats), Style::Keyed",
        guarantee,
        output: Output::Windows,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-window"],
        ready: Some(READY),
        prefix: None,
    }
}

/// The same windows in Kafka Streams' DSL (`bench/kafka-streams`,
/// `--app windows`): `TimeWindows.ofSizeAndGrace(60 s, 5 s)`, the grace
/// being `windowed::KS_GRACE_MS` (checked by a test), and
/// `suppress(untilWindowCloses)`. Its commit interval is 100 ms under both
/// guarantees, as Riffle's: Kafka Streams hands windows on from its store
/// cache only at a commit, so under at-least-once its default of 30 s
/// would hold every result back for up to 30 s.
const fn kafka_streams_window(name: &'static str, guarantee: &'static str) -> System {
    System {
        name,
        description: "per-heater statistics per minute of event time, Kafka Streams 4.4 DSL (TimeWindows, aggregate, suppress) (bench/kafka-streams)",
        guarantee,
        output: Output::Windows,
        placement: Placement::Kafka,
        argv: &[
            "{repo}/bench/kafka-streams/run.sh",
            "--app",
            "windows",
            "--window-ms",
            "60000",
            "--grace-ms",
            "5000",
            "--config",
            "commit.interval.ms=100",
        ],
        ready: Some("heater-kafka-streams: RUNNING"),
        prefix: None,
    }
}

/// The heater controller in Python on Riffle (`bench/python-riffle`): the
/// book's rule as a Python function, run by Riffle's key-based app. Over a
/// prefix of the input: every record costs a call into the interpreter.
const fn python_riffle(name: &'static str, guarantee: &'static str) -> System {
    System {
        name,
        description: "heater controller in Python on Riffle, Style::Keyed (bench/python-riffle)",
        guarantee,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{repo}/bench/python-riffle/run.sh"],
        ready: Some("heater: running:"),
        prefix: Some(2_000_000),
    }
}

pub fn find(name: &str) -> Option<&'static System> {
    SYSTEMS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windowed::{KS_GRACE_MS, WINDOW_MS};

    /// Kafka Streams is given the windows the reference computes.
    #[test]
    fn kafka_streams_runs_the_reference_windows() {
        let s = find("kafka-streams-window-alo").unwrap();
        let arg = |flag: &str| {
            let i = s.argv.iter().position(|a| *a == flag).unwrap();
            s.argv[i + 1].parse::<i64>().unwrap()
        };
        assert_eq!(arg("--window-ms"), WINDOW_MS);
        assert_eq!(arg("--grace-ms"), KS_GRACE_MS);
        assert_eq!(s.workload(), Workload::Windows);
        assert_eq!(
            find("riffle-keyed-alo").unwrap().workload(),
            Workload::Heater
        );
    }
}
