//! What the failover test and benchmark measure: who owns which partition,
//! and how long heaters went without commands after an event.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use riffle::log::{Log, TopicSpec};

use super::workers::{self, Guarantee, WorkerConfig, Workers};

/// Milliseconds since the Unix epoch, the clock of record timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The input partition numbers worker `i`'s consumers own, from its log.
pub fn owned(workers: &Workers, i: usize) -> BTreeSet<i32> {
    workers::owned_partitions(&workers.log_text(i))
        .into_values()
        .flatten()
        .filter_map(|tp| tp.rsplit('/').next()?.parse().ok())
        .collect()
}

/// Creates the sensor and control topics (`partitions` each) and a
/// dead-letter topic of one partition, named after `id`.
pub fn controller_topics(log: &dyn Log, id: &str, partitions: i32) -> (String, String, String) {
    let (sensor, control, dlq) = (
        format!("sensor-{id}"),
        format!("control-{id}"),
        format!("dlq-{id}"),
    );
    for (topic, n) in [(&sensor, partitions), (&control, partitions), (&dlq, 1)] {
        log.create_topic(&TopicSpec::new(topic.as_str(), n), Duration::from_secs(30))
            .expect("topic created");
    }
    (sensor, control, dlq)
}

/// Key-based controllers at least once, without an endpoint or a
/// watchdog, on the topics of [`controller_topics`].
pub fn controller_config(
    brokers: String,
    (sensor, control, dlq): &(String, String, String),
    group: &str,
    dir: &std::path::Path,
    standby: bool,
) -> WorkerConfig {
    WorkerConfig {
        brokers,
        sensor_topic: sensor.clone(),
        control_topic: control.clone(),
        dead_letter: dlq.clone(),
        group: group.to_owned(),
        guarantee: Guarantee::AtLeastOnce,
        style: "keyed",
        dir: dir.to_owned(),
        http: false,
        watchdog: None,
        standby,
    }
}

/// The control gap of `partitions` after an event at `at` (ms since the
/// epoch), up to `until`: the longest their heaters went without a command
/// on topic `control`, counted from their last command before the event
/// (while a feed runs, each partition's heaters get commands every few tens
/// of milliseconds, so the longest silence is the time their processing
/// stopped for). Each partition is read from its offset in `from` (taken
/// a while before the event), or from its start.
pub fn control_gap(
    log: &dyn Log,
    control: &str,
    partitions: &BTreeSet<i32>,
    from: Option<&BTreeMap<i32, i64>>,
    at: i64,
    until: i64,
) -> i64 {
    let mut gap = 0;
    for &p in partitions {
        let start = from.and_then(|f| f.get(&p)).copied().unwrap_or(0);
        let mut stamps = Vec::new();
        // Committed commands only: under exactly-once, an aborted
        // transaction's reached no heater.
        log.read_partition(control, p, start, true, Duration::from_secs(30), &mut |r| {
            stamps.extend(r.timestamp);
            Ok(())
        })
        .expect("control topic read");
        stamps.sort_unstable();
        let mut last = stamps
            .iter()
            .copied()
            .filter(|&t| t <= at)
            .max()
            .unwrap_or(at);
        // No command at all in the window: silent throughout.
        let after = stamps.into_iter().filter(|&t| t > at && t <= until);
        for t in after.chain([until]) {
            gap = gap.max(t - last);
            last = t;
        }
    }
    gap
}
