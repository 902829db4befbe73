//! Reading given partitions from given offsets outside any group, as
//! `kcat -C` does: partitions are assigned, never subscribed, and nothing is
//! committed, so the group id librdkafka insists on is never seen by the
//! broker's group coordinator.
//!
//! The end of a partition is known from librdkafka's `PartitionEOF`, which
//! comes each time the reader catches up with the high watermark (or the
//! last stable offset under `read_committed`): the last record's offset + 1
//! would not do, since offsets have gaps (transaction markers).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode as C;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{isolation, metadata, watermarks};
use super::context::LoggingContext;
use super::error::kafka_error;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{Headers, LogReader, ReadVisitor, ReaderConfig, RecordRef, TopicPartition};

/// How long looking up a topic and its watermarks may take when the reader
/// is created.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct KafkaReader {
    log: KafkaLog,
    consumer: BaseConsumer<LoggingContext>,
    partitions: HashSet<(String, i32)>,
    /// Partitions whose end was reached and that have had no record since.
    at_end: HashSet<(String, i32)>,
}

impl KafkaReader {
    pub(super) fn new(log: &KafkaLog, config: &ReaderConfig) -> Result<Self> {
        let mut c = log.client_config();
        c.set("group.id", "riffle-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", isolation(config.read_committed));
        for (k, v) in &log.inner.properties {
            c.set(k, v);
        }
        let consumer: BaseConsumer<LoggingContext> = c
            .create_with_context(LoggingContext::new("reader", log.inner.faults.clone()))
            .map_err(kafka_error)?;
        let mut tpl = TopicPartitionList::with_capacity(config.start.len());
        let mut partitions = HashSet::new();
        let mut known: Vec<(String, usize)> = Vec::new();
        for (TopicPartition { topic, partition }, from) in &config.start {
            let count = match known.iter().find(|(t, _)| t == topic) {
                Some((_, n)) => *n,
                None => {
                    crate::validate_topic_name(topic)?;
                    let n = metadata(log, topic, SETUP_TIMEOUT)?
                        .ok_or_else(|| Error::UnknownTopic(topic.clone()))?
                        .len();
                    known.push((topic.clone(), n));
                    n
                }
            };
            if *partition < 0 || *partition as usize >= count {
                return Err(Error::InvalidInput(format!(
                    "partition {partition} does not exist in topic '{topic}' ({count} partitions)"
                )));
            }
            // Clamped here rather than left to auto.offset.reset, which
            // would send an offset beyond the end to the start.
            let (low, high) = watermarks(log, &consumer, topic, *partition, SETUP_TIMEOUT)?;
            let from = (*from).clamp(low, high);
            tpl.add_partition_offset(topic, *partition, Offset::Offset(from))
                .map_err(kafka_error)?;
            partitions.insert((topic.clone(), *partition));
        }
        consumer.assign(&tpl).map_err(kafka_error)?;
        Ok(Self {
            log: log.clone(),
            consumer,
            partitions,
            at_end: HashSet::new(),
        })
    }
}

impl LogReader for KafkaReader {
    fn poll(&mut self, timeout: Duration, max: usize, visit: ReadVisitor<'_>) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < max {
            // Wait only for the first record; then take what is ready.
            let wait = if n == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    self.at_end.remove(&(m.topic().to_owned(), m.partition()));
                    visit(RecordRef {
                        topic: m.topic(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key(),
                        value: m.payload().unwrap_or(&[]),
                        timestamp: m.timestamp().to_millis(),
                        headers: Headers::kafka(&m),
                    })?;
                    n += 1;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // librdkafka names only the partition; find its topic.
                    let mut of = self.partitions.iter().filter(|(_, q)| *q == p);
                    if let (Some(tp), None) = (of.next(), of.next()) {
                        self.at_end.insert(tp.clone());
                    } else {
                        self.mark_ends_by_position()?;
                    }
                }
                Some(Err(e))
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            C::BrokerTransportFailure
                                | C::AllBrokersDown
                                | C::NotLeaderForPartition
                                | C::LeaderNotAvailable
                        )
                    ) =>
                {
                    tracing::debug!("reader: {e}")
                }
                Some(Err(e)) => return Err(self.log.unreachable(e)),
                None => {
                    if n > 0 || Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        Ok(n)
    }

    fn at_end(&self) -> bool {
        self.at_end.len() == self.partitions.len()
    }
}

impl KafkaReader {
    /// When partitions of the same number in several topics are read, a
    /// `PartitionEOF` does not say which one ended: compare each position
    /// with the end instead.
    fn mark_ends_by_position(&mut self) -> Result<()> {
        let positions = self.consumer.position().map_err(kafka_error)?;
        for e in positions.elements() {
            let key = (e.topic().to_owned(), e.partition());
            let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), SETUP_TIMEOUT)
            else {
                continue;
            };
            match e.offset() {
                Offset::Offset(o) if o >= high => {
                    self.at_end.insert(key);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
