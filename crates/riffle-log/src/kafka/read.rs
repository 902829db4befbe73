//! Reading one partition outside any group, as state is restored from a
//! changelog.
//!
//! The end is the high watermark when the read starts. librdkafka reports
//! reaching the end of a partition (`PartitionEOF`) but not the offset it
//! reached, and offsets have gaps (compaction, transaction markers, aborted
//! records under `read_committed`), so the last record's offset + 1 is not
//! the end. Instead the end is fixed first, records at or beyond it are not
//! visited, and any `PartitionEOF` means it was reached: the first fetch is
//! made after the end was measured, and a fetch stops at the high watermark
//! (or last stable offset) of its time, which never moves back. Under
//! `read_committed` the read first waits for the last stable offset to reach
//! the end, so that every transaction open at the start has finished.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode as C;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{isolation, metadata, wait_for, watermarks};
use super::context::LoggingContext;
use super::error::kafka_error;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{validate_topic_name, Headers, ReadVisitor, RecordRef};

/// A consumer outside any group that reports the end of partitions.
fn reader(log: &KafkaLog, read_committed: bool) -> Result<BaseConsumer<LoggingContext>> {
    let mut c = log.client_config();
    // librdkafka wants a group for `assign`; this one is never joined and
    // nothing is committed to it.
    c.set("group.id", "riffle-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // A start below the log start (records deleted meanwhile) reads
        // from the log start.
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation(read_committed))
        // Restoring reads millions of records: fetch in large batches.
        .set("max.partition.fetch.bytes", (16 << 20).to_string())
        // One such batch fills librdkafka's prefetch queue (100,000
        // records), which pauses fetching for fetch.queue.backoff.ms: by
        // default a second, during which the queue is drained in a fraction
        // of it and the read waits (5,000,000 records took 35 s).
        .set("fetch.queue.backoff.ms", "20");
    for (k, v) in &log.inner.properties {
        c.set(k, v);
    }
    c.create_with_context(LoggingContext::new("reader", log.inner.faults.clone()))
        .map_err(kafka_error)
}

pub(super) fn read_partition(
    log: &KafkaLog,
    topic: &str,
    partition: i32,
    from: i64,
    read_committed: bool,
    idle_timeout: Duration,
    visit: ReadVisitor<'_>,
) -> Result<i64> {
    validate_topic_name(topic)?;
    if from < 0 {
        return Err(Error::InvalidInput(format!(
            "offset {from} for {topic}/{partition} is negative"
        )));
    }
    let parts =
        metadata(log, topic, idle_timeout)?.ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
    if !parts.iter().any(|p| p.id == partition) {
        return Err(Error::InvalidInput(format!(
            "partition {partition} does not exist in topic '{topic}' ({} partitions)",
            parts.len()
        )));
    }
    // The end is the high watermark, which only a read_uncommitted client
    // is told; it also reads, unless read_committed is wanted.
    let consumer = reader(log, false)?;
    let (low, end) = watermarks(log, &consumer, topic, partition, idle_timeout)?;
    if from > end {
        return Err(Error::InvalidInput(format!(
            "offset {from} is beyond the end of {topic}/{partition}, {end}"
        )));
    }
    let start = from.max(low);
    if start >= end {
        return Ok(end);
    }
    let consumer = if read_committed {
        let consumer = reader(log, true)?;
        wait_for(
            idle_timeout,
            &format!("transactions open in {topic}/{partition} before offset {end} to finish"),
            || {
                Ok(
                    (watermarks(log, &consumer, topic, partition, idle_timeout)?.1 >= end)
                        .then_some(()),
                )
            },
        )?;
        consumer
    } else {
        consumer
    };
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(kafka_error)?;
    consumer.assign(&tpl).map_err(kafka_error)?;

    let mut last_progress = Instant::now();
    loop {
        let wait = idle_timeout.saturating_sub(last_progress.elapsed());
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                if m.offset() >= end {
                    return Ok(end);
                }
                visit(RecordRef {
                    topic,
                    partition,
                    offset: m.offset(),
                    key: m.key(),
                    value: m.payload().unwrap_or(&[]),
                    timestamp: m.timestamp().to_millis(),
                        headers: Headers::kafka(&m),
                })?;
                if m.offset() + 1 == end {
                    return Ok(end);
                }
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(end),
            Some(Err(e)) if transient(&e) => tracing::debug!("reading {topic}/{partition}: {e}"),
            Some(Err(e)) => return Err(log.unreachable(e)),
            None if last_progress.elapsed() >= idle_timeout => {
                return Err(Error::Timeout(format!(
                    "no record of {topic}/{partition} for {idle_timeout:?} while reading up to offset {end}"
                )))
            }
            None => {}
        }
    }
}

/// Errors librdkafka recovers from by itself.
fn transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
        )
    )
}
