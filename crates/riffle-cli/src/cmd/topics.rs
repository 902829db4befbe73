//! `riffle topics`: topic administration.

use std::time::Duration;

use clap::{Args, Subcommand};
use riffle::log::{TopicInfo, TopicSpec};
use riffle::{Error, Result};

use crate::backend::LogArgs;

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create a topic and wait until the cluster serves it.
    Create(CreateArgs),
    /// Delete topics and wait until they are gone.
    Delete {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Raise a topic's partition count (it cannot be lowered).
    Alter {
        name: String,
        /// The new partition count, above the current one.
        #[arg(long, short = 'p')]
        partitions: i32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List topics with their partition counts and record counts.
    List {
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a topic's partitions (leader, replicas, in-sync replicas, first
    /// and next offset) and its configs that differ from the defaults.
    Describe {
        name: String,
        /// Also show the offsets this consumer group has committed.
        #[arg(long, short = 'g')]
        group: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    partitions: i32,
    /// Replication factor.
    #[arg(long, short = 'r', default_value_t = 1)]
    replication: i16,
    /// A topic config (repeatable), e.g. --config cleanup.policy=compact.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_config)]
    configs: Vec<(String, String)>,
    /// Delete the topic first if it exists.
    #[arg(long)]
    recreate: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Args)]
pub struct WaitArgs {
    /// How long to wait for the cluster to confirm.
    #[arg(long, default_value = "30s", value_parser = crate::util::parse_duration)]
    timeout: Duration,
}

fn parse_config(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

pub fn run(args: &LogArgs, command: TopicsCommand) -> Result<()> {
    let log = args.stored("topics")?;
    match command {
        TopicsCommand::Create(c) => {
            let spec = TopicSpec {
                name: c.name,
                partitions: c.partitions,
                replication: c.replication,
                configs: c.configs,
            };
            spec.validate()?;
            if c.recreate {
                log.recreate_topic(&spec, c.wait.timeout)?;
            } else {
                log.create_topic(&spec, c.wait.timeout)?;
            }
            println!(
                "created topic {} ({} partitions, replication {})",
                spec.name, spec.partitions, spec.replication
            );
        }
        TopicsCommand::Delete { names, wait } => {
            // Every name is tried; the first failure is reported at the end.
            let mut failed = None;
            for name in &names {
                match log.delete_topic(name, wait.timeout) {
                    Ok(()) => println!("deleted topic {name}"),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        TopicsCommand::Alter {
            name,
            partitions,
            wait,
        } => {
            if partitions < 1 {
                return Err(Error::InvalidInput(format!(
                    "partition count must be at least 1, not {partitions}"
                )));
            }
            log.add_partitions(&name, partitions, wait.timeout)?;
            println!("topic {name} now has {partitions} partitions");
        }
        TopicsCommand::List { wait } => {
            let topics = log.list_topics(wait.timeout)?;
            let width = topics
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(5)
                .max(5);
            println!(
                "{:width$}  {:>10}  {:>12}",
                "TOPIC", "PARTITIONS", "RECORDS"
            );
            for t in &topics {
                println!(
                    "{:width$}  {:>10}  {:>12}",
                    t.name,
                    t.partitions.len(),
                    records(t)
                );
            }
        }
        TopicsCommand::Describe { name, group, wait } => {
            let t = log.describe_topic(&name, wait.timeout)?;
            let configs = log.topic_configs(&name, wait.timeout)?;
            let committed = match &group {
                Some(g) => log.committed_offsets(g, &name, wait.timeout)?,
                None => Vec::new(),
            };
            let committed_in = |p: i32| -> String {
                committed
                    .iter()
                    .find(|o| o.partition.partition == p)
                    .and_then(|o| o.committed)
                    .map_or_else(|| "-".into(), |c| c.to_string())
            };
            println!(
                "topic {} ({} partitions, {} records)",
                t.name,
                t.partitions.len(),
                records(&t)
            );
            print!(
                "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}",
                "PARTITION", "LEADER", "REPLICAS", "ISR", "FIRST", "NEXT"
            );
            match &group {
                Some(g) => println!("  COMMITTED ({g})"),
                None => println!(),
            }
            for p in &t.partitions {
                let ids = |ids: &[i32]| -> String {
                    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    ids.join(",")
                };
                print!(
                    "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}",
                    p.id,
                    p.leader,
                    ids(&p.replicas),
                    ids(&p.isr),
                    p.low,
                    p.high
                );
                match &group {
                    Some(_) => println!("  {:>9}", committed_in(p.id)),
                    None => println!(),
                }
            }
            // Configs that differ from the defaults, as kafka-topics shows
            // them, with where each comes from (the topic or the broker).
            for c in &configs {
                println!("config {}={} ({})", c.name, c.value, c.source);
            }
        }
    }
    Ok(())
}

fn records(t: &TopicInfo) -> i64 {
    t.partitions.iter().map(|p| p.high - p.low).sum()
}
