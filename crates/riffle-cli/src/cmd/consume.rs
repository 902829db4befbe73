//! `riffle consume`: read a topic as a consumer group and print its records.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use riffle::log::{ConsumerConfig, OffsetReset, RecordRef};
use riffle::stream::ConsumerGroup;
use riffle::{Error, Result};

use crate::backend::LogArgs;
use crate::util;

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read (repeatable).
    #[arg(long, short = 't', required = true)]
    topic: Vec<String>,
    /// Consumer group id; members of one group share the partitions.
    #[arg(long, short = 'g', default_value = "riffle-consume")]
    group: String,
    /// Consumer actors in this process.
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    consumers: u16,
    /// Where to start when the group has no committed offset.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    from: String,
    /// Print any value as it is; by default values must be JSON and others are reported and skipped.
    #[arg(long)]
    raw: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long (e.g. 30s); runs until Ctrl-C or SIGTERM otherwise.
    #[arg(long, value_parser = util::parse_duration)]
    duration: Option<Duration>,
    /// Skip records of aborted transactions and those of open ones until
    /// they commit: how to read the outputs of an exactly-once application.
    #[arg(long)]
    read_committed: bool,
    /// Session timeout of the group members.
    #[arg(long, default_value = "10s", value_parser = util::parse_duration)]
    session_timeout: Duration,
}

pub fn run(args: &LogArgs, a: ConsumeArgs) -> Result<()> {
    let log = args.stored("consume")?;
    let topics: Vec<&str> = a.topic.iter().map(String::as_str).collect();
    let mut cfg = ConsumerConfig::new(&a.group, &topics);
    cfg.offset_reset = a.from.parse::<OffsetReset>()?;
    cfg.session_timeout = a.session_timeout;
    cfg.read_committed = a.read_committed;
    cfg.client_id = "consumer".into();
    let stopper = util::signal_stopper();
    let count = Arc::new(AtomicU64::new(0));
    let (raw, max) = (a.raw, a.max);
    let (c, s) = (count.clone(), stopper.clone());
    let group = ConsumerGroup::spawn(log, &cfg, a.consumers as usize, move |i| {
        let (count, stopper) = (c.clone(), s.clone());
        move |r: RecordRef<'_>| -> Result<()> {
            if !raw {
                serde_json::from_slice::<serde_json::Value>(r.value).map_err(|e| {
                    Error::Decode(format!(
                        "value is not JSON ({e}); use --raw to print it anyway"
                    ))
                })?;
            }
            let line = format!(
                "consumer-{i} partition={} offset={} key={} value={}{}\n",
                r.partition,
                r.offset,
                r.key.map(util::show).unwrap_or_else(|| "-".into()),
                util::show(r.value),
                util::show_headers(r.headers)
            );
            std::io::stdout()
                .lock()
                .write_all(line.as_bytes())
                .map_err(|e| Error::Backend(e.to_string()))?;
            let printed = count.fetch_add(1, Ordering::Relaxed) + 1;
            if max.is_some_and(|m| printed >= m) {
                stopper.stop();
            }
            Ok(())
        }
    })?;
    let group_stop = group.stopper();
    util::wait(&stopper, a.duration);
    group_stop.stop();
    let failed: u64 = group
        .members()
        .iter()
        .map(|m| m.stats().failed.load(Ordering::Relaxed))
        .sum();
    group.stop()?;
    eprintln!(
        "consumed {} records ({failed} skipped)",
        count.load(Ordering::Relaxed)
    );
    Ok(())
}
