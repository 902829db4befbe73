//! The log (Kafka or embedded) as a source and a sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{connect_headers, render, Delivery, Record, Sampled, Sink, Source};
use crate::error::{Error, Result};
use crate::log::{
    ConsumerConfig, GroupEvent, Header, Log, LogConsumer, OutRecord, PollVisitor, Progress,
    RecordRef, TopicPartition,
};
use crate::stream::Producer;

/// Reads topics as a member of a consumer group. Acknowledging stores the
/// offsets after the records polled so far, and the consumer commits them
/// in the background, on revocation and on close; what was not
/// acknowledged is read again by whoever owns the partition next.
pub struct LogSource {
    consumer: Box<dyn LogConsumer>,
    describe: String,
    /// (topic, partition, next offset) of records polled and not acked.
    pending: Vec<(String, i32, i64)>,
    lag: Option<LagProbe>,
}

/// The group's lag on the source's topics, asked of the log now and then:
/// it takes a round trip to the broker per topic.
struct LagProbe {
    log: Arc<dyn Log>,
    group: String,
    topics: Vec<String>,
    last: Sampled,
}

impl LogSource {
    pub fn new(log: &dyn Log, config: &ConsumerConfig) -> Result<Self> {
        Ok(Self {
            consumer: log.consumer(config)?,
            describe: format!(
                "{} topics {} (group {})",
                log.describe(),
                config.topics.join(","),
                config.group_id
            ),
            pending: Vec::new(),
            lag: None,
        })
    }

    /// Reports the group's lag (records committed offsets are behind the
    /// ends of its topics' partitions) as [`Source::lag`], measured through
    /// `log` every few seconds.
    pub fn measure_lag(mut self, log: Arc<dyn Log>, config: &ConsumerConfig) -> Self {
        self.lag = Some(LagProbe {
            log,
            group: config.group_id.clone(),
            topics: config.topics.clone(),
            last: Sampled::default(),
        });
        self
    }
}

impl LagProbe {
    fn get(&mut self) -> Option<u64> {
        let Self {
            log,
            group,
            topics,
            last,
        } = self;
        last.get(|| {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            crate::process::group_lag(&**log, group, &topics, Duration::from_secs(2))
                .map(|parts| parts.iter().map(|p| p.lag.max(0) as u64).sum())
                .map_err(|e| tracing::debug!("lag of group {group}: {e}"))
                .ok()
        })
    }
}

struct Collect<'a> {
    out: &'a mut Vec<Record>,
    pending: &'a mut Vec<(String, i32, i64)>,
}

impl PollVisitor for Collect<'_> {
    fn record(&mut self, r: RecordRef<'_>) -> bool {
        self.out.push(Record {
            headers: connect_headers(r.headers),
            ..Record::new(r.topic, r.key, r.value)
        });
        let next = r.offset + 1;
        match self
            .pending
            .iter_mut()
            .find(|(t, p, _)| *p == r.partition && t == r.topic)
        {
            Some(e) => e.2 = next,
            None => self.pending.push((r.topic.to_owned(), r.partition, next)),
        }
        false
    }

    fn event(&mut self, _: GroupEvent) {}

    fn revoking(&mut self, partitions: &[TopicPartition], _: &mut dyn Progress) {
        // Not acknowledged: the next owner reads these records again.
        self.pending.retain(|(t, p, _)| {
            !partitions
                .iter()
                .any(|tp| tp.partition == *p && tp.topic == *t)
        });
    }
}

impl Source for LogSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let mut visitor = Collect {
            out,
            pending: &mut self.pending,
        };
        self.consumer.poll(timeout, max, &mut visitor)
    }

    fn ack(&mut self) -> Result<()> {
        for (t, p, o) in self.pending.drain(..) {
            self.consumer.store_offset(&t, p, o)?;
        }
        Ok(())
    }

    fn lag(&mut self) -> Option<u64> {
        self.lag.as_mut().and_then(LagProbe::get)
    }

    fn close(&mut self) -> Result<()> {
        self.consumer.close()
    }
}

/// Writes to a topic of the log: a fixed name, or a template such as
/// `{topic}` (where the processor sent the record) or `out-{key}`. Keyed
/// records go to their key's partition. Flushing waits for the log's
/// acknowledgements and fails if it refused any record, so the pipeline
/// sends the batch again.
pub struct LogSink {
    producer: Producer,
    topic: String,
    describe: String,
    failed: Arc<AtomicU64>,
    failed_seen: u64,
}

impl LogSink {
    pub fn new(log: &dyn Log, topic: &str) -> Result<Self> {
        let failed = Arc::new(AtomicU64::new(0));
        let f = failed.clone();
        let producer = Producer::with_reports(log, move |r| {
            if r.result.is_err() {
                f.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            describe: format!("{} topic {topic}", log.describe()),
            failed,
            failed_seen: 0,
        })
    }
}

impl Sink for LogSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        let topic = render(&self.topic, record);
        // Borrowed from the record: allocates only if it has headers.
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(name, value)| Header::new(name, Some(value.as_slice())))
            .collect();
        self.producer.send_record(
            OutRecord::new(&topic, record.key.as_deref(), &record.value).with_headers(&headers[..]),
        )
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout)?;
        let failed = self.failed.load(Ordering::Relaxed);
        let new = failed - self.failed_seen;
        self.failed_seen = failed;
        match new {
            0 => Ok(()),
            n => Err(Error::Refused {
                server: self.describe.clone(),
                message: format!("{n} records refused by {}", self.describe),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use crate::log::{Headers, TopicSpec};
    use std::time::Instant;

    /// Headers cross the log sink and source in order, repeats included; a
    /// null value, which connector records cannot hold, arrives empty.
    #[test]
    fn headers_cross_the_log_sink_and_source() {
        let log = EmbeddedLog::new();
        log.create_topic(&TopicSpec::new("t", 1), Duration::from_secs(5))
            .unwrap();
        let mut sink = LogSink::new(&log, "t").unwrap();
        let mut record = Record::new("t", Some(b"k"), "v");
        record.headers = vec![
            ("trace".into(), b"abc".to_vec()),
            ("trace".into(), vec![0xff]),
            ("empty".into(), Vec::new()),
        ];
        sink.send(&record).unwrap();
        sink.send(&Record::new("t", None, "plain")).unwrap();
        let null = [Header::new("null", None)];
        Producer::new(&log)
            .unwrap()
            .send_record(OutRecord::new("t", None, b"null").with_headers(Headers::from(&null)))
            .unwrap();
        sink.flush(Duration::from_secs(5)).unwrap();

        let mut source = LogSource::new(&log, &ConsumerConfig::new("g", &["t"])).unwrap();
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(10), "{got:?}");
            source
                .poll(&mut got, 10, Duration::from_millis(100))
                .unwrap();
        }
        assert_eq!(got[0].headers, record.headers);
        assert!(got[1].headers.is_empty());
        assert_eq!(got[2].headers, [("null".to_owned(), Vec::new())]);
        source.close().unwrap();
    }

    /// The source reports its group's lag: every record of a topic nothing
    /// was committed on yet, and nothing once all is read and committed.
    #[test]
    fn the_source_reports_its_groups_lag() {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
        log.create_topic(&TopicSpec::new("t", 2), Duration::from_secs(5))
            .unwrap();
        let mut sink = LogSink::new(&*log, "t").unwrap();
        for i in 0..5 {
            sink.send(&Record::new("t", Some(format!("k{i}").as_bytes()), "v"))
                .unwrap();
        }
        sink.flush(Duration::from_secs(5)).unwrap();
        let config = ConsumerConfig::new("lagging", &["t"]);
        let mut source = LogSource::new(&*log, &config)
            .unwrap()
            .measure_lag(log.clone(), &config);
        assert_eq!(source.lag(), Some(5));
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 5 {
            assert!(start.elapsed() < Duration::from_secs(10), "{got:?}");
            source
                .poll(&mut got, 10, Duration::from_millis(100))
                .unwrap();
        }
        source.ack().unwrap();
        source.close().unwrap();
        let mut fresh = LogSource::new(&*log, &ConsumerConfig::new("other", &["t"]))
            .unwrap()
            .measure_lag(log.clone(), &config);
        assert_eq!(fresh.lag(), Some(0));
    }
}
