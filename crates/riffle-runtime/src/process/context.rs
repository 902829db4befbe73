use serde::Serialize;

use super::record::{connect_headers, Record};
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::log::{Headers, OutRecord};
use crate::stream::Producer;
use riffle_state::{Key, Time, Timer, TimerChange};

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
    /// What the processor's `event_time` made of the record.
    pub(super) event_time: Option<i64>,
    pub(super) headers: Headers<'a>,
    pub(super) sent: u64,
    /// What the processor asked of its key's timers, in order.
    pub(super) timers: Vec<TimerChange>,
    /// Whether the processor deleted its key's state.
    pub(super) delete: bool,
    pub(super) now: i64,
    pub(super) watermark: Option<i64>,
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
        Self::new(out, topic, 0, offset, None, headers).at(super::time::now_ms(), None)
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
            event_time: timestamp,
            headers,
            sent: 0,
            timers: Vec::new(),
            delete: false,
            // Set by the caller (`at`): apps read their clock once per
            // poll, not once per record.
            now: 0,
            watermark: None,
        }
    }

    /// The same context at `now`, with the partition's `watermark`.
    pub(super) fn at(self, now: i64, watermark: Option<i64>) -> Self {
        Self {
            now,
            watermark,
            ..self
        }
    }

    /// The same context with the record's event time, as the processor's
    /// `event_time` read it.
    pub(super) fn with_event_time(self, event_time: Option<i64>) -> Self {
        Self { event_time, ..self }
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

    /// The record's event time, in milliseconds since the Unix epoch: what
    /// [`KeyedProcessor::event_time`](super::KeyedProcessor::event_time)
    /// read from it (its timestamp unless the processor reads the time
    /// elsewhere), the time its partition's watermark follows. In a timer's
    /// call, the timer's time.
    pub fn event_time(&self) -> Option<i64> {
        self.event_time
    }

    /// Processing time: the wall clock, in milliseconds since the Unix
    /// epoch, as read once per batch of records (so that what a batch does
    /// agrees on it).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The partition's watermark (see [`EventTime`](super::EventTime)):
    /// event time up to which records are not expected any more; `None`
    /// until a record with an event time arrived.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Sets the key's timer `name` to fire at `at`, in processing or event
    /// time; one already set under that name is moved. When it fires, the
    /// processor's [`on_timer`](super::KeyedProcessor::on_timer) is called
    /// with the key's state. Timers are stored with the state, so they
    /// survive crashes and move with the partition; under exactly-once a
    /// timer fires in the same transaction as what it sends and changes.
    /// Only apps keep timers: a processor run elsewhere (a connector
    /// pipeline) has none, and this does nothing.
    pub fn set_timer(&mut self, name: &str, at: Time) {
        self.timers.push(TimerChange::Set(Timer {
            name: Key::new(name),
            at,
        }));
    }

    /// Cancels the key's timer `name`, if set.
    pub fn cancel_timer(&mut self, name: &str) {
        self.timers.push(TimerChange::Cancel(Key::new(name)));
    }

    /// Deletes the key's state and timers once this call returns: the
    /// changelog gets a tombstone, and the key's next record starts from a
    /// fresh state.
    pub fn delete_state(&mut self) {
        self.delete = true;
        self.timers.clear();
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
