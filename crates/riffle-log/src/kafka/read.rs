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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode as C;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{isolation, metadata, wait_for, watermarks};
use super::context::LoggingContext;
use super::error::kafka_error;
use super::off_thread::OffThread;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{validate_topic_name, Headers, ReadVisitor, RecordRef};

/// The most reader clients kept between reads, per isolation level.
const IDLE_READERS: usize = 4;

/// Reader clients between reads, by isolation level (read_uncommitted,
/// read_committed). A new client's first request to a partition's leader
/// took 0.5 to 0.8 s now and then against a broker on the same machine;
/// one already connected answers in milliseconds. So a failover restores
/// the partitions it takes over through clients kept from earlier restores,
/// and a client is closed (which also took up to 0.8 s) only when more are
/// idle than are kept.
#[derive(Default)]
pub(super) struct Readers([Mutex<Vec<BaseConsumer<LoggingContext>>>; 2]);

impl Drop for Readers {
    fn drop(&mut self) {
        for idle in &mut self.0 {
            for client in idle.get_mut().unwrap().drain(..) {
                drop(OffThread::new(client));
            }
        }
    }
}

/// A reader client in use, back among the idle ones when dropped.
struct Reader<'a> {
    client: Option<BaseConsumer<LoggingContext>>,
    idle: &'a Mutex<Vec<BaseConsumer<LoggingContext>>>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = BaseConsumer<LoggingContext>;
    fn deref(&self) -> &Self::Target {
        self.client.as_ref().expect("taken only on drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut idle = self.idle.lock().unwrap();
        if client.unassign().is_ok() && idle.len() < IDLE_READERS {
            idle.push(client);
        } else {
            drop(idle);
            drop(OffThread::new(client));
        }
    }
}

/// A reader of the given isolation: an idle one, or a new one.
fn reader(log: &KafkaLog, read_committed: bool) -> Result<Reader<'_>> {
    let idle = &log.inner.readers.0[usize::from(read_committed)];
    let client = match idle.lock().unwrap().pop() {
        Some(c) => c,
        None => {
            let c = new_reader(log, read_committed)?;
            // The cluster's metadata first: a new client asked for
            // watermarks before it knew the partition's leader waited for
            // its metadata for up to 0.7 s, although the answer had come.
            c.fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| log.unreachable(e))?;
            c
        }
    };
    Ok(Reader {
        client: Some(client),
        idle,
    })
}

/// A consumer outside any group that reports the end of partitions.
fn new_reader(log: &KafkaLog, read_committed: bool) -> Result<BaseConsumer<LoggingContext>> {
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
        .set("fetch.queue.backoff.ms", "20")
        // A read stops at an end it knows, so waiting at the broker for
        // more records is of no use; and a client reused for the next read
        // sends no fetch for it until the last one, made as this read
        // ended, has come back: after Kafka's 500 ms, by default.
        .set("fetch.wait.max.ms", "10");
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
            // What a reused client fetched for its last read.
            Some(Ok(m)) if m.partition() != partition || m.topic() != topic || m.offset() < start => {}
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
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(end),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
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
