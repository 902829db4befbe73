//! The systems under test.
//!
//! A system under test is a command line. The driver appends
//! `--brokers HOST:PORT --input TOPIC --output TOPIC --group GROUP
//! --guarantee at-least-once|exactly-once`; the process reads the input
//! topic as that consumer group from the earliest offset, writes its outputs
//! keyed by heater id to the output topic, commits its input offsets, and
//! runs until SIGTERM. A peer implementation (Kafka Streams, the Python
//! original) joins the suite as one more entry whose `argv` starts its own
//! program, e.g. `["java", "-jar", "peers/streams.jar"]`.

/// What a system writes for its input, which decides how the latency phase
/// matches outputs to inputs (per heater, the k-th output to the k-th
/// expected one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Every input record, unchanged.
    Echo,
    /// The heater controller's ON/OFF commands.
    Commands,
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
    /// The command line; `{bench}` stands for this program.
    pub argv: &'static [&'static str],
}

impl System {
    pub fn exactly_once(&self) -> bool {
        self.guarantee == "exactly-once"
    }
}

const ALO: &str = "at-least-once";
const EOS: &str = "exactly-once";

pub const SYSTEMS: &[System] = &[
    System {
        name: "ceiling",
        description: "librdkafka consume -> produce pass-through, no framework",
        guarantee: ALO,
        output: Output::Echo,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "ceiling"],
    },
    System {
        name: "riffle-stateless",
        description: "riffle App, stateless::map identity",
        guarantee: ALO,
        output: Output::Echo,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-stateless"],
    },
    System {
        name: "riffle-keyed-alo",
        description: "heater controller, Style::Keyed",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-keyed"],
    },
    System {
        name: "riffle-keyed-eos",
        description: "heater controller, Style::Keyed",
        guarantee: EOS,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-keyed"],
    },
    System {
        name: "riffle-actors-alo",
        description: "heater controller, Style::Actors { workers: 2 }",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-actors", "--workers", "2"],
    },
    System {
        name: "riffle-actors-eos",
        description: "heater controller, Style::Actors { workers: 2 }",
        guarantee: EOS,
        output: Output::Commands,
        placement: Placement::Kafka,
        argv: &["{bench}", "worker", "riffle-actors", "--workers", "2"],
    },
    System {
        name: "riffle-embedded",
        description: "heater controller, Style::Keyed, on the in-memory embedded log",
        guarantee: ALO,
        output: Output::Commands,
        placement: Placement::InProcess,
        argv: &["{bench}", "worker", "riffle-embedded"],
    },
];

pub fn find(name: &str) -> Option<&'static System> {
    SYSTEMS.iter().find(|s| s.name == name)
}
