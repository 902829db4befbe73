//! How far a consumer group is behind its input: the measure operators
//! watch (Kafka's `kafka-consumer-groups --describe`), autoscalers such as
//! KEDA's Kafka scaler act on, and [`App::autoscale`](super::App::autoscale)
//! follows.

use std::time::Duration;

use crate::error::Result;
use crate::log::{Log, TopicPartition};

/// One partition's lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: TopicPartition,
    /// The group's committed offset (the next record it will read), if any.
    pub committed: Option<i64>,
    /// The partition's high watermark: the offset the next record will get.
    pub end: i64,
    /// Records between the group's position and the end.
    pub lag: i64,
}

/// The lag of `group` on every partition of `topics`, in topic and
/// partition order: the end offset minus the committed offset, or minus the
/// first offset still in the log when nothing is committed, since a group
/// starting from the earliest record has all of them ahead of it (one
/// starting from the latest has none, but cannot be told apart before it
/// commits).
///
/// It is measured from committed offsets, so it includes what was processed
/// since the last commit (a commit interval's worth); under exactly-once
/// each transaction leaves a commit marker in the log, so an idle group
/// still shows a lag of one per partition written in a transaction.
/// Fails with [`Error::UnknownTopic`](crate::Error::UnknownTopic) for a
/// topic that does not exist.
pub fn group_lag(
    log: &dyn Log,
    group: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<PartitionLag>> {
    let mut out = Vec::new();
    for topic in topics {
        let info = log.describe_topic(topic, timeout)?;
        let committed = log.committed_offsets(group, topic, timeout)?;
        for p in &info.partitions {
            let c = committed
                .iter()
                .find(|o| o.partition.partition == p.id)
                .and_then(|o| o.committed);
            out.push(PartitionLag {
                partition: TopicPartition::new(*topic, p.id),
                committed: c,
                end: p.high,
                // Retention may have removed records below a committed
                // offset, and a committed offset is never past the end but
                // a stale watermark may be: neither makes a negative lag.
                lag: (p.high - c.unwrap_or(p.low)).max(0),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use crate::log::{ConsumerConfig, OutRecord, RecordRef, TopicSpec};
    use crate::stream::Consumer;
    use crate::Error;

    const T: Duration = Duration::from_secs(10);

    fn produce(log: &dyn Log, topic: &str, partition: i32, n: usize) {
        let p = log.producer(None).unwrap();
        for _ in 0..n {
            let mut r = OutRecord::new(topic, None, b"{}");
            r.partition = Some(partition);
            p.send(r).unwrap();
        }
        p.flush(T).unwrap();
    }

    /// Reads `topic` as `group` until `n` records are in, then stops, which
    /// commits them.
    fn consume(log: &Arc<dyn Log>, group: &str, topic: &str, n: usize) {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let c = Consumer::spawn(
            log.clone(),
            ConsumerConfig::new(group, &[topic]),
            move || {
                let s = s.clone();
                move |_: RecordRef<'_>| -> Result<()> {
                    s.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
        )
        .unwrap();
        let deadline = std::time::Instant::now() + T;
        while seen.load(Ordering::Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "{n} records read");
            std::thread::sleep(Duration::from_millis(10));
        }
        c.stop();
        c.join().unwrap();
    }

    #[test]
    fn lag_is_end_minus_committed_or_minus_the_start() {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
        log.create_topic(&TopicSpec::new("t", 2), T).unwrap();
        produce(&*log, "t", 0, 5);
        produce(&*log, "t", 1, 3);
        consume(&log, "g", "t", 8);
        produce(&*log, "t", 0, 2);

        let lags = group_lag(&*log, "g", &["t"], T).unwrap();
        let got: Vec<_> = lags
            .iter()
            .map(|l| (l.partition.partition, l.committed, l.end, l.lag))
            .collect();
        assert_eq!(got, [(0, Some(5), 7, 2), (1, Some(3), 3, 0)]);

        // A group that never committed has every record ahead of it.
        let fresh = group_lag(&*log, "new", &["t"], T).unwrap();
        let got: Vec<_> = fresh.iter().map(|l| (l.committed, l.lag)).collect();
        assert_eq!(got, [(None, 7), (None, 3)]);
    }

    #[test]
    fn several_topics_in_order_and_unknown_topic_fails() {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
        log.create_topic(&TopicSpec::new("b", 1), T).unwrap();
        log.create_topic(&TopicSpec::new("a", 1), T).unwrap();
        produce(&*log, "a", 0, 4);
        let lags = group_lag(&*log, "g", &["b", "a"], T).unwrap();
        let got: Vec<_> = lags
            .iter()
            .map(|l| (l.partition.topic.as_str(), l.lag))
            .collect();
        assert_eq!(got, [("b", 0), ("a", 4)]);
        match group_lag(&*log, "g", &["a", "missing"], T) {
            Err(Error::UnknownTopic(t)) => assert_eq!(t, "missing"),
            other => panic!("expected an unknown topic, got {other:?}"),
        }
    }
}
