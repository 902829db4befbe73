//! `riffle lag`: how far a consumer group is behind, per partition, as
//! Kafka's `kafka-consumer-groups --describe` shows it.

use std::time::Duration;

use clap::Args;
use riffle::process::{group_lag, PartitionLag};
use riffle::{Error, Result};

use crate::backend::LogArgs;

#[derive(Args)]
pub struct LagArgs {
    /// The consumer group.
    #[arg(long, short = 'g')]
    group: String,
    /// A topic the group reads (repeatable). Required: finding the topics
    /// a group has committed offsets for would take a request per topic of
    /// the cluster.
    #[arg(long = "topic", short = 't', value_name = "TOPIC", required = true)]
    topics: Vec<String>,
    /// How long to wait for the cluster to answer.
    #[arg(long, default_value = "30s", value_parser = crate::util::parse_duration)]
    timeout: Duration,
}

pub fn run(args: &LogArgs, a: LagArgs) -> Result<()> {
    let log = args.stored("lag")?;
    let topics: Vec<&str> = a.topics.iter().map(String::as_str).collect();
    let lags = group_lag(&*log, &a.group, &topics, a.timeout)?;
    // A group that committed nothing here is most likely a misspelt one:
    // every partition would show its whole content as lag.
    if lags.iter().all(|l| l.committed.is_none()) {
        return Err(Error::Backend(format!(
            "group '{}' has no committed offsets on {}",
            a.group,
            topics.join(", ")
        )));
    }
    print!("{}", table(&lags));
    Ok(())
}

/// The table: one line per partition, then the total.
fn table(lags: &[PartitionLag]) -> String {
    let width = lags
        .iter()
        .map(|l| l.partition.topic.len())
        .max()
        .unwrap_or(0)
        .max("TOPIC".len());
    let mut out = format!(
        "{:width$}  {:>9}  {:>14}  {:>14}  {:>10}\n",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for l in lags {
        let current = l.committed.map_or_else(|| "-".into(), |c| c.to_string());
        out += &format!(
            "{:width$}  {:>9}  {:>14}  {:>14}  {:>10}\n",
            l.partition.topic, l.partition.partition, current, l.end, l.lag
        );
    }
    let total: i64 = lags.iter().map(|l| l.lag).sum();
    out += &format!(
        "{:width$}  {:>9}  {:>14}  {:>14}  {total:>10}\n",
        "TOTAL", "", "", ""
    );
    out
}
