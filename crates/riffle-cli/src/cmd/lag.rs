//! `riffle lag`: how far a consumer group is behind, per partition, as
//! Kafka's `kafka-consumer-groups --describe` shows it.

use std::time::Duration;

use clap::Args;
use riffle::log::GroupMember;
use riffle::process::{group_lag, PartitionLag};
use riffle::{Error, Result};

use crate::backend::LogArgs;

#[derive(Args)]
pub struct LagArgs {
    /// The consumer group.
    #[arg(long, short = 'g')]
    group: String,
    /// A topic the group reads (repeatable) [default: the topics its
    /// members are assigned now; a group without members needs it].
    #[arg(long = "topic", short = 't', value_name = "TOPIC")]
    topics: Vec<String>,
    /// How long to wait for the cluster to answer.
    #[arg(long, default_value = "30s", value_parser = crate::util::parse_duration)]
    timeout: Duration,
}

pub fn run(args: &LogArgs, a: LagArgs) -> Result<()> {
    let log = args.stored("lag")?;
    let members = log.group_members(&a.group, a.timeout)?;
    let mut topics: Vec<&str> = a.topics.iter().map(String::as_str).collect();
    if topics.is_empty() {
        topics = members
            .iter()
            .flat_map(|m| m.assignment.iter().map(|tp| tp.topic.as_str()))
            .collect();
        topics.sort_unstable();
        topics.dedup();
    }
    if topics.is_empty() {
        return Err(Error::InvalidInput(format!(
            "group '{}' has no members now: name its topics with --topic",
            a.group
        )));
    }
    let lags = group_lag(&*log, &a.group, &topics, a.timeout)?;
    // A group that committed nothing here is most likely a misspelt one:
    // every partition would show its whole content as lag.
    if lags.iter().all(|l| l.committed.is_none()) {
        return Err(Error::InvalidInput(format!(
            "group '{}' has no committed offsets on {}",
            a.group,
            topics.join(", ")
        )));
    }
    print!("{}", table(&lags, &members));
    Ok(())
}

/// The table: one line per partition with the member that owns it, then
/// the total.
pub(crate) fn table(lags: &[PartitionLag], members: &[GroupMember]) -> String {
    let width = lags
        .iter()
        .map(|l| l.partition.topic.len())
        .max()
        .unwrap_or(0)
        .max("TOPIC".len());
    let mut out = format!(
        "{:width$}  {:>9}  {:>14}  {:>14}  {:>10}  CONSUMER\n",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for l in lags {
        let current = l.committed.map_or_else(|| "-".into(), |c| c.to_string());
        let owner = members
            .iter()
            .find(|m| m.assignment.contains(&l.partition))
            .map_or("-", |m| m.client_id.as_str());
        out += &format!(
            "{:width$}  {:>9}  {:>14}  {:>14}  {:>10}  {owner}\n",
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
