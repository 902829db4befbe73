//! `riffle-bench`: throughput and latency of Riffle's apps on Apache Kafka,
//! next to a librdkafka pass-through that marks the physical limit, the
//! heater controller written by hand on librdkafka (the bare baseline) and
//! the peers (Kafka Streams, the book's Python/Ray controller); and a
//! second workload, per-heater statistics over windows of event time
//! (`windowed.rs`), in Riffle and in Kafka Streams.
//!
//! ```text
//! riffle-bench run [--mode quick|full] [--brokers 127.0.0.1:29092] [--only a,b]
//! riffle-bench worker NAME --brokers B --input T --output T --group G --guarantee G
//! riffle-bench systems
//! ```
//!
//! `bench/run.sh` builds it, starts a broker and runs the suite.

mod bare;
mod child;
mod data;
mod driver;
mod figures;
mod kafka;
mod latency;
mod proctree;
mod ratios;
mod report;
mod stop;
mod suite;
mod systems;
mod throughput;
mod window;
mod windowed;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "riffle-bench",
    version,
    about = "Throughput and latency benchmarks of Riffle on Apache Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fill the input, run every system under test, write the report.
    Run(driver::RunArgs),
    /// Run one system under test until SIGTERM (started by `run`).
    Worker(worker::WorkerArgs),
    /// List the systems under test.
    Systems,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(a) => suite::run(a),
        Cmd::Worker(a) => worker::run(a),
        Cmd::Systems => {
            for s in systems::SYSTEMS {
                let mut notes = String::new();
                if let Some(r) = s.ready {
                    notes.push_str(&format!(" ready: {r:?}"));
                }
                if let Some(n) = s.prefix {
                    notes.push_str(&format!(" prefix: {n} (full mode)"));
                }
                println!(
                    "{:<20} {:<14} {} [{}]{notes}",
                    s.name,
                    s.guarantee,
                    s.description,
                    s.argv.join(" ")
                );
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("riffle-bench: {}", e.replace('\n', " "));
        std::process::exit(1);
    }
}
