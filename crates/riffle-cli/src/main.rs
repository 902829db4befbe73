//! `riffle`: the command-line tool of the Riffle stream-processing framework.
//!
//! Layout: `main.rs` parses flags and reports errors; `backend.rs` picks the
//! log (Kafka with `--brokers`, otherwise the embedded one in a data
//! directory); `cmd/` holds one file per plain command and `demo/` one per
//! demo; `dashboard/` is the web page on the `--http` endpoint and
//! `endpoint.rs` the flags that secure it (token, TLS).

mod backend;
mod cmd;
mod dashboard;
mod demo;
mod endpoint;
mod heater;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use backend::LogArgs;

/// Actor-based stream processing on Apache Kafka.
///
/// Without --brokers (or RIFFLE_BROKERS, or bootstrap.servers in a
/// --command-config file) commands run on an embedded in-process log kept in
/// a data directory, so nothing needs to be installed and topics, records and
/// committed offsets outlive each run. With it, every command talks to that
/// Kafka cluster.
#[derive(Parser)]
#[command(
    name = "riffle",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, delete, list, describe and alter topics.
    #[command(subcommand)]
    Topics(cmd::topics::TopicsCommand),
    /// Send records to a topic, from arguments or one per line of stdin.
    Produce(cmd::produce::ProduceArgs),
    /// Print a topic's records: outside any group, or as a member of one (-g).
    Consume(cmd::consume::ConsumeArgs),
    /// List, describe, reset the offsets of and delete consumer groups.
    #[command(subcommand)]
    Groups(cmd::groups::GroupsCommand),
    /// Show how far a consumer group is behind, per partition.
    Lag(cmd::lag::LagArgs),
    // Boxed: its flags are many, and an enum is as large as its largest
    // variant.
    /// Move records between systems: MQTT, NATS, AMQP, Redis, HTTP, files, Kafka.
    Connect(Box<cmd::connect::ConnectArgs>),
    /// The chapter's heater application: controller and simulator (needs a broker).
    #[command(subcommand)]
    Heater(heater::HeaterCommand),
    /// Runnable examples; embedded log unless a broker is given.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    util::init_logging();
    if let Err(e) = cli.log.load_client_config() {
        eprintln!("riffle: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Topics(c) => cmd::topics::run(&cli.log, c),
        Command::Produce(a) => cmd::produce::run(&cli.log, a),
        Command::Consume(a) => cmd::consume::run(&cli.log, a),
        Command::Lag(a) => cmd::lag::run(&cli.log, a),
        Command::Groups(g) => cmd::groups::run(&cli.log, g),
        Command::Connect(a) => cmd::connect::run(&cli.log, *a),
        Command::Heater(h) => heater::run(&cli.log, h),
        Command::Demo(d) => demo::run(&cli.log, d),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riffle: {e}{}", hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// What the user can do about `e`, when the command line can help.
fn hint(e: &riffle::Error) -> &'static str {
    match e {
        riffle::Error::Locked { .. } => "; pass --in-memory, or another --data-dir",
        _ => "",
    }
}

/// Help and version go out whole; a wrong flag gets one line and a pointer
/// to the help.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind::*;
    if matches!(
        e.kind(),
        DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    // "the following required arguments were not provided:" names them
    // on the next line.
    if first.ends_with(':') {
        first = format!("{first} {}", lines.next().unwrap_or_default());
    }
    eprintln!("riffle: {first} (see riffle --help)");
    ExitCode::from(2)
}
