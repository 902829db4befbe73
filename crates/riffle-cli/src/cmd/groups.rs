//! `riffle groups`: consumer groups as Kafka's `kafka-consumer-groups` shows
//! and changes them: list, describe (members, then committed offset, end and
//! lag per partition), reset offsets (a dry run unless `--execute`) and
//! delete.

use std::time::Duration;

use clap::{Args, Subcommand};
use riffle::log::{Log, TopicPartition};
use riffle::process::group_lag;
use riffle::{Error, Result};

use crate::backend::LogArgs;

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups with their state and member count.
    List {
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a group's members and, per partition, its committed offset, the
    /// end of the log and the lag.
    Describe {
        group: String,
        /// A topic to show [default: those the group has members on or
        /// offsets in] (repeatable).
        #[arg(long = "topic", short = 't', value_name = "TOPIC")]
        topics: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move a group's committed offsets; prints the plan, and applies it
    /// only with --execute. The group must have no members.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets. It must have no members.
    Delete {
        group: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Args)]
pub struct WaitArgs {
    /// How long to wait for the cluster to answer.
    #[arg(long, default_value = "30s", value_parser = crate::util::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("to").required(true).multiple(false))]
pub struct ResetArgs {
    /// The consumer group.
    #[arg(long, short = 'g')]
    group: String,
    /// A topic whose offsets to reset, every partition (repeatable).
    #[arg(long = "topic", short = 't', value_name = "TOPIC", required = true)]
    topics: Vec<String>,
    /// To the first record still in the log.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To the end of the log: nothing left to read.
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To the first record at or after this time, e.g. 2026-12-06T10:00:00Z
    /// (RFC 3339; the end where there is none).
    #[arg(long, group = "to", value_name = "DATETIME", value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// By N records from the committed offset (negative to go back), within
    /// the log; from the first record where nothing is committed.
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Apply the plan; without it nothing changes.
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

pub fn run(args: &LogArgs, command: GroupsCommand) -> Result<()> {
    let log = args.stored("groups")?;
    match command {
        GroupsCommand::List { wait } => {
            let groups = log.list_groups(wait.timeout)?;
            let width = groups
                .iter()
                .map(|g| g.name.len())
                .max()
                .unwrap_or(0)
                .max("GROUP".len());
            println!("{:width$}  {:<20}  {:>7}", "GROUP", "STATE", "MEMBERS");
            for g in &groups {
                println!("{:width$}  {:<20}  {:>7}", g.name, g.state, g.members);
            }
        }
        GroupsCommand::Describe {
            group,
            topics,
            wait,
        } => describe(&*log, &group, topics, wait.timeout)?,
        GroupsCommand::ResetOffsets(a) => reset(&*log, a)?,
        GroupsCommand::Delete { group, wait } => {
            log.delete_group(&group, wait.timeout)?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

fn describe(log: &dyn Log, group: &str, topics: Vec<String>, timeout: Duration) -> Result<()> {
    let members = log.group_members(group, timeout)?;
    let mut topics = topics;
    if topics.is_empty() {
        let offsets = log.group_offsets(group, timeout)?;
        if members.is_empty() && offsets.is_empty() {
            return Err(Error::UnknownGroup(group.to_owned()));
        }
        topics = members
            .iter()
            .flat_map(|m| m.assignment.iter().map(|tp| tp.topic.clone()))
            .chain(offsets.into_iter().map(|o| o.partition.topic))
            .collect();
        topics.sort_unstable();
        topics.dedup();
    }
    println!("group {group} ({} members)", members.len());
    let width = members
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(0)
        .max("MEMBER".len());
    println!("{:width$}  {:<16}  PARTITIONS", "MEMBER", "CLIENT-ID");
    for m in &members {
        let parts: Vec<String> = m.assignment.iter().map(ToString::to_string).collect();
        println!("{:width$}  {:<16}  {}", m.id, m.client_id, parts.join(","));
    }
    println!();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let lags = group_lag(log, group, &topics, timeout)?;
    print!("{}", super::lag::table(&lags, &members));
    Ok(())
}

fn reset(log: &dyn Log, a: ResetArgs) -> Result<()> {
    let timeout = a.wait.timeout;
    let members = log.group_members(&a.group, timeout)?;
    if !members.is_empty() {
        // Refused even for a dry run, as kafka-consumer-groups does: the
        // members would commit over the plan.
        return Err(Error::GroupNotEmpty(a.group));
    }
    let mut plan: Vec<(TopicPartition, Option<i64>, i64)> = Vec::new();
    for topic in &a.topics {
        let info = log.describe_topic(topic, timeout)?;
        let committed = log.committed_offsets(&a.group, topic, timeout)?;
        let by_time = match a.to_datetime {
            Some(ts) => log.offsets_for_time(topic, ts, timeout)?,
            None => Vec::new(),
        };
        for p in &info.partitions {
            let current = committed
                .iter()
                .find(|o| o.partition.partition == p.id)
                .and_then(|o| o.committed);
            let new = if a.to_earliest {
                p.low
            } else if a.to_latest {
                p.high
            } else if a.to_datetime.is_some() {
                by_time
                    .iter()
                    .find(|(q, _)| *q == p.id)
                    .and_then(|(_, o)| *o)
                    .unwrap_or(p.high)
            } else {
                let n = a.shift_by.unwrap_or(0);
                current
                    .unwrap_or(p.low)
                    .saturating_add(n)
                    .clamp(p.low, p.high)
            };
            plan.push((TopicPartition::new(topic.clone(), p.id), current, new));
        }
    }
    let width = plan
        .iter()
        .map(|(tp, ..)| tp.topic.len())
        .max()
        .unwrap_or(0)
        .max("TOPIC".len());
    println!(
        "{:width$}  {:>9}  {:>14}  {:>10}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"
    );
    for (tp, current, new) in &plan {
        let current = current.map_or_else(|| "-".into(), |c| c.to_string());
        println!(
            "{:width$}  {:>9}  {:>14}  {:>10}",
            tp.topic, tp.partition, current, new
        );
    }
    if a.execute {
        let offsets: Vec<(TopicPartition, i64)> =
            plan.into_iter().map(|(tp, _, new)| (tp, new)).collect();
        log.set_group_offsets(&a.group, &offsets, timeout)?;
        println!("reset the offsets of group {}", a.group);
    } else {
        println!("dry run: nothing changed (add --execute to apply)");
    }
    Ok(())
}

/// An RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T11:00:00.5+01:00`)
/// as milliseconds since the Unix epoch.
pub fn parse_datetime(s: &str) -> std::result::Result<i64, String> {
    let bad = || format!("'{s}' is not a date and time like 2026-12-06T10:00:00Z");
    let num = |t: &str| -> std::result::Result<i64, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (date, rest) = s.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let mut d = date.split('-');
    let (y, mo, da) = (
        num(d.next().unwrap_or(""))?,
        num(d.next().unwrap_or(""))?,
        num(d.next().unwrap_or(""))?,
    );
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad());
    }
    let (time, offset_s) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (t, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        (t, sign * (num(oh)? * 3600 + num(om)? * 60))
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (
        num(t.next().unwrap_or(""))?,
        num(t.next().unwrap_or(""))?,
        num(t.next().unwrap_or(""))?,
    );
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + h * 3600 + mi * 60 + se - offset_s) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn datetimes_parse() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime("2026-12-06T10:00:00Z"),
            Ok(1_796_551_200_000)
        );
        assert_eq!(
            parse_datetime("2026-12-06T11:00:00.25+01:00"),
            Ok(1_796_551_200_250)
        );
        assert_eq!(
            parse_datetime("2000-03-01T00:00:00-00:30"),
            Ok(951_870_600_000)
        );
        for bad in [
            "2026-12-06",
            "2026-13-01T00:00:00Z",
            "x",
            "2026-12-06T10:00Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
