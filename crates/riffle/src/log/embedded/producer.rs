//! Appending records: synchronous, so there is never anything in flight.
//!
//! A record the log rejects (unknown topic, partition out of range) fails
//! `send` itself and, as with librdkafka, gets no delivery report; a record it
//! accepts is reported with its offset before `send` returns, on the caller's
//! thread and after the lock is released, so the callback may send again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Inner;
use crate::error::{Error, Result};
use crate::log::{partition_for_key, DeliveryCallback, DeliveryReport, LogProducer, OutRecord};

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
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut state = self.inner.lock();
        let topic = state
            .topics
            .get_mut(record.topic)
            .ok_or_else(|| Error::UnknownTopic(record.topic.to_owned()))?;
        let count = topic.partitions.len();
        let partition = match (record.partition, record.key) {
            (Some(p), _) if (0..count as i32).contains(&p) => p,
            (Some(p), _) => {
                return Err(Error::InvalidInput(format!(
                    "partition {p} does not exist in topic '{}' ({count} partitions)",
                    record.topic
                )))
            }
            (None, Some(key)) => partition_for_key(key, count as i32),
            (None, None) => {
                let p = topic.spread % count;
                topic.spread = topic.spread.wrapping_add(1);
                p as i32
            }
        };
        let offset =
            topic.partitions[partition as usize].append(record.key, record.value, timestamp)?;
        self.inner.unlock_and_wake(state);
        if let Some(on_delivery) = &self.on_delivery {
            on_delivery(&DeliveryReport {
                topic: record.topic.to_owned(),
                partition,
                result: Ok(offset),
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
