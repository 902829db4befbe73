use serde::Serialize;

use crate::error::Result;
use crate::stream::Producer;

/// Where the record being processed came from, and a way to send records.
pub struct Context<'a> {
    pub(super) producer: &'a Producer,
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) timestamp: Option<i64>,
    pub(super) sent: u64,
}

impl<'a> Context<'a> {
    pub(super) fn new(
        producer: &'a Producer,
        topic: &'a str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
    ) -> Self {
        Self {
            producer,
            topic,
            partition,
            offset,
            timestamp,
            sent: 0,
        }
    }

    /// Sends a record to any topic; keyed records go to the key's partition.
    pub fn send(&mut self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<()> {
        self.producer.send(topic, key.map(str::as_bytes), value)?;
        self.sent += 1;
        Ok(())
    }

    /// Sends a value encoded as JSON.
    pub fn send_json<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<()> {
        self.producer.send_json(topic, key, value)?;
        self.sent += 1;
        Ok(())
    }

    /// The topic of the record being processed.
    pub fn topic(&self) -> &str {
        self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's timestamp in milliseconds since the Unix epoch, if known.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }
}
