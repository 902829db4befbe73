//! Appending records: synchronous, so there is never anything in flight.
//!
//! A record the log rejects (unknown topic, partition out of range) fails
//! `send` itself and, as with librdkafka, gets no delivery report; a record it
//! accepts is reported with its offset before `send` returns, on the caller's
//! thread and after the lock is released, so the callback may send again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Inner, Topic};
use crate::error::{Error, Result};
use crate::{partition_for_key, DeliveryCallback, DeliveryReport, LogProducer, OutRecord};

pub(super) struct EmbeddedProducer {
    inner: Arc<Inner>,
    on_delivery: Option<DeliveryCallback>,
}

impl EmbeddedProducer {
    pub(super) fn new(inner: Arc<Inner>, on_delivery: Option<DeliveryCallback>) -> Self {
        Self { inner, on_delivery }
    }
}

impl LogProducer for EmbeddedProducer {
    fn send(&self, record: OutRecord<'_>) -> Result<()> {
        let timestamp = record.timestamp.unwrap_or_else(timestamp_now);
        let mut state = self.inner.lock();
        let topic = state
            .topics
            .get_mut(record.topic)
            .ok_or_else(|| Error::UnknownTopic(record.topic.to_owned()))?;
        let partition = pick_partition(topic, &record)?;
        let offset = topic.partitions[partition as usize].append(
            record.key,
            record.value_bytes(),
            record.headers,
            timestamp,
        )?;
        self.inner.unlock_and_wake(state);
        if let Some(on_delivery) = &self.on_delivery {
            on_delivery(&DeliveryReport {
                topic: record.topic.to_owned(),
                partition,
                result: Ok(offset),
                undelivered: None,
            });
        }
        Ok(())
    }

    fn poll(&self, _timeout: Duration) {}

    fn flush(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    fn in_flight(&self) -> usize {
        0
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn timestamp_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The record's partition: the explicit one if it exists, murmur2 of the
/// key, or the next in turn for a key-less record.
pub(super) fn pick_partition(topic: &mut Topic, record: &OutRecord<'_>) -> Result<i32> {
    let count = topic.partitions.len();
    match (record.partition, record.key) {
        (Some(p), _) if (0..count as i32).contains(&p) => Ok(p),
        (Some(p), _) => Err(Error::InvalidInput(format!(
            "partition {p} does not exist in topic '{}' ({count} partitions)",
            record.topic
        ))),
        (None, Some(key)) => Ok(partition_for_key(key, count as i32)),
        (None, None) => {
            let p = topic.spread % count;
            topic.spread = topic.spread.wrapping_add(1);
            Ok(p as i32)
        }
    }
}
