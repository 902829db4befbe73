use serde::Serialize;

use super::record::{connect_headers, Record};
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::log::{Headers, OutRecord};
use crate::stream::Producer;

/// Where a processor's outputs go: to the log, or (in a connector
/// pipeline) into a batch for the pipeline's sink.
pub(super) enum Outputs<'a> {
    /// To the log; an output it refuses for good goes to the app's
    /// dead-letter topic instead.
    Log(&'a Producer, &'a Shared),
    Batch(&'a mut Vec<Record>),
}

/// Where the record being processed came from, and a way to send records.
pub struct Context<'a> {
    pub(super) out: Outputs<'a>,
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) timestamp: Option<i64>,
    pub(super) headers: Headers<'a>,
    pub(super) sent: u64,
}

impl<'a> Context<'a> {
    /// A context that collects what the processor sends into `out`, for
    /// running a processor outside an [`App`](super::App): a pipeline
    /// between other systems hands the collected records to its sink.
    pub fn collecting(
        out: &'a mut Vec<Record>,
        topic: &'a str,
        offset: i64,
        headers: Headers<'a>,
    ) -> Self {
        Self::new(out, topic, 0, offset, None, headers)
    }

    pub(super) fn new(
        out: impl Into<Outputs<'a>>,
        topic: &'a str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        headers: Headers<'a>,
    ) -> Self {
        Self {
            out: out.into(),
            topic,
            partition,
            offset,
            timestamp,
            headers,
            sent: 0,
        }
    }

    /// Sends a record to any topic; keyed records go to the key's partition.
    /// It has no headers: to pass the input's on, send them explicitly with
    /// [`Context::send_with_headers`] and [`Context::headers`].
    pub fn send(&mut self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<()> {
        self.send_bytes(topic, key.map(str::as_bytes), value, Headers::EMPTY)
    }

    /// Sends a record with headers: the input's ([`Context::headers`],
    /// passed on without copying), or any others, e.g.
    /// `Headers::from(&[Header::new("trace", Some(b"abc"))])`.
    pub fn send_with_headers<'h>(
        &mut self,
        topic: &str,
        key: Option<&str>,
        value: &[u8],
        headers: impl Into<Headers<'h>>,
    ) -> Result<()> {
        self.send_bytes(topic, key.map(str::as_bytes), value, headers.into())
    }

    pub(super) fn send_bytes(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
    ) -> Result<()> {
        match &mut self.out {
            Outputs::Log(producer, shared) => {
                let record = OutRecord::new(topic, key, value).with_headers(headers);
                // Known to be refused (under exactly-once, sending it would
                // spoil the transaction), or refused before it was queued.
                match shared.refusals.verdict(topic, key, value, headers) {
                    Some(why) => shared.dead_letter_output(producer, record, &why)?,
                    None => match producer.send_record(record) {
                        Err(Error::Refused { message, .. }) => {
                            shared.dead_letter_output(producer, record, &message)?
                        }
                        other => other?,
                    },
                }
            }
            Outputs::Batch(batch) => batch.push(Record {
                headers: connect_headers(headers),
                ..Record::new(topic, key, value)
            }),
        }
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
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::InvalidInput(format!("cannot encode JSON: {e}")))?;
        self.send_bytes(topic, key.map(str::as_bytes), &bytes, Headers::EMPTY)
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

    /// The record's headers, in order, as a view over the consumer's buffer:
    /// nothing is decoded or copied unless they are looked at.
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }
}

impl<'a> From<(&'a Producer, &'a Shared)> for Outputs<'a> {
    fn from((p, shared): (&'a Producer, &'a Shared)) -> Self {
        Outputs::Log(p, shared)
    }
}

impl<'a> From<&'a mut Vec<Record>> for Outputs<'a> {
    fn from(b: &'a mut Vec<Record>) -> Self {
        Outputs::Batch(b)
    }
}
