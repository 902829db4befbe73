//! The chapter's example 6-4: a producer sends a small JSON record with a
//! random key once per interval; N consumers of one group print what they
//! receive and which partitions they own.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use riffle::log::{
    ConsumerConfig, DeliveryReport, OffsetReset, RecordRef, TopicPartition, TopicSpec,
};
use riffle::stream::{ConsumerGroup, Handler, Producer};
use riffle::{Error, Result};

use crate::backend::LogArgs;
use crate::util;

#[derive(Args)]
pub struct HelloArgs {
    /// Consumer actors in the group.
    #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    consumers: u16,
    /// Partitions of the demo topic when it is created.
    #[arg(long, short = 'p', default_value_t = 10)]
    partitions: i32,
    /// Delete the topic first and start from an empty one; by default its
    /// records and the group's committed offsets are kept from earlier runs.
    #[arg(long)]
    fresh: bool,
    /// Topic to use.
    #[arg(long, default_value = "hello")]
    topic: String,
    /// Time between two records.
    #[arg(long, default_value = "1s", value_parser = util::parse_duration)]
    interval: Duration,
    /// Stop after this long (e.g. 10s); runs until Ctrl-C or SIGTERM otherwise.
    #[arg(long, value_parser = util::parse_duration)]
    duration: Option<Duration>,
    /// Seed for the random keys and numbers (random when absent).
    #[arg(long)]
    seed: Option<u64>,
}

/// The demo's consumer group.
const GROUP: &str = "hello-group";

/// The chapter's record, fields in its order.
#[derive(serde::Serialize)]
struct User {
    name: &'static str,
    favorite_color: &'static str,
    favorite_number: u32,
}

fn say(line: String) {
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

struct Printer {
    name: String,
}

impl Handler for Printer {
    fn handle(&mut self, r: RecordRef<'_>) -> Result<()> {
        serde_json::from_slice::<serde_json::Value>(r.value)
            .map_err(|e| Error::Decode(format!("not JSON: {e}")))?;
        say(format!(
            "{:<11} received  {}/{} offset={:<4} key={:<4} {}\n",
            self.name,
            r.topic,
            r.partition,
            r.offset,
            r.key_str().unwrap_or("-"),
            String::from_utf8_lossy(r.value),
        ));
        Ok(())
    }

    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let ids: Vec<String> = partitions
            .iter()
            .map(|tp| tp.partition.to_string())
            .collect();
        let what = if ids.is_empty() {
            "nothing (more consumers than partitions)".to_string()
        } else {
            format!("partitions [{}]", ids.join(", "))
        };
        say(format!("{:<11} assigned  {what}\n", self.name));
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        if !partitions.is_empty() {
            let ids: Vec<String> = partitions
                .iter()
                .map(|tp| tp.partition.to_string())
                .collect();
            say(format!(
                "{:<11} revoked   partitions [{}]\n",
                self.name,
                ids.join(", ")
            ));
        }
    }
}

pub fn run(brokers: &LogArgs, a: HelloArgs) -> Result<()> {
    let log = brokers.any()?;
    let spec = TopicSpec::new(&a.topic, a.partitions);
    spec.validate()?;
    let timeout = Duration::from_secs(30);
    let found = if a.fresh {
        log.recreate_topic(&spec, timeout)?;
        "recreated empty (--fresh)".to_string()
    } else {
        match log.describe_topic(&a.topic, timeout) {
            Ok(t) => {
                let records: i64 = t.partitions.iter().map(|p| p.high - p.low).sum();
                format!("found with {records} records; {GROUP} resumes at its committed offsets")
            }
            Err(Error::UnknownTopic(_)) => {
                log.create_topic(&spec, timeout)?;
                "created".to_string()
            }
            Err(e) => return Err(e),
        }
    };
    let partitions = log.describe_topic(&a.topic, timeout)?.partitions.len();
    say(format!(
        "hello demo on {}: topic {} with {partitions} partitions {found}, {} consumers (Ctrl-C to stop)\n",
        log.describe(),
        a.topic,
        a.consumers
    ));

    let stopper = util::signal_stopper();
    let mut cfg = ConsumerConfig::new(GROUP, &[&a.topic]);
    cfg.offset_reset = OffsetReset::Earliest;
    cfg.session_timeout = Duration::from_secs(6);
    cfg.client_id = "consumer".into();
    let group = ConsumerGroup::spawn(log.clone(), &cfg, a.consumers as usize, |i| Printer {
        name: format!("consumer-{i}"),
    })?;

    let producer = Producer::with_reports(&*log, |r: &DeliveryReport| match &r.result {
        Ok(offset) => say(format!(
            "{:<11} delivered {}/{} offset={offset}\n",
            "producer", r.topic, r.partition
        )),
        Err(e) => say(format!(
            "{:<11} FAILED    {}/{}: {e}\n",
            "producer", r.topic, r.partition
        )),
    })?;
    let mut rng = a.seed.map(fastrand::Rng::with_seed).unwrap_or_default();
    let start = Instant::now();
    let mut next = start;
    while !stopper.is_stopped() && a.duration.is_none_or(|d| start.elapsed() < d) {
        if Instant::now() >= next {
            let user = User {
                name: "john",
                favorite_color: "blue",
                favorite_number: rng.u32(0..=1000),
            };
            producer.send_json(&a.topic, Some(&rng.u32(0..=100).to_string()), &user)?;
            next += a.interval;
        }
        std::thread::sleep(Duration::from_millis(10).min(a.interval));
    }
    producer.flush(Producer::CLOSE_TIMEOUT)?;
    // Let the consumers catch up with the last records before stopping them.
    let sent = producer.stats().sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    let received = || {
        group
            .members()
            .iter()
            .map(|m| m.stats().records.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while received() < sent && Instant::now() < deadline && !stopper.is_stopped() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let per: Vec<String> = group
        .members()
        .iter()
        .map(|m| format!("{}={}", m.name(), m.stats().records.load(Ordering::Relaxed)))
        .collect();
    let total = received();
    group.stop()?;
    let s = producer.stats();
    say(format!(
        "sent {sent}, delivered {}, received {total} ({})\n",
        s.delivered.load(Ordering::Relaxed),
        per.join(", ")
    ));
    Ok(())
}
