//! Riffle's connectors' contract: sources and sinks beyond the log, and
//! pipelines between them.
//!
//! A [`Source`] yields [`Record`]s from some system (an MQTT broker, a NATS
//! stream, a file, a Kafka topic) and acknowledges them back to it; a
//! [`Sink`] accepts records and says when they are durable there. A
//! [`Pipeline`] moves records from one source to one sink through a
//! [`Stage`]: a [`Transform`] (filter and project JSON fields) or any
//! [`KeyedProcessor`](crate::process::KeyedProcessor), stateless or keyed.
//!
//! The pipeline acknowledges a record to its source only after everything
//! it led to (outputs, dead letters) is confirmed durable by the sink, so a
//! crash or a server restart anywhere repeats records and never loses them:
//! at-least-once, as far as the two ends allow. What each end allows is its
//! [`Delivery`]; the pipeline's is the weaker of the two.
//!
//! The log is one system among others here: [`LogSource`] and [`LogSink`]
//! read and write Kafka or embedded topics. Other connectors live in the
//! `riffle-connectors` crate.
//!
//! # Layout
//!
//! - [`Source`], [`Sink`] and [`Delivery`] (here): what a connector is.
//! - `pipeline`: [`Pipeline`], which moves records from a source to a sink
//!   through a [`Stage`], with retries, backoff and dead letters.
//! - `transform`: [`Transform`], the processor of pipeline files.
//! - `sampled`: [`Sampled`], a source's lag asked of its server now and
//!   then.
//! - `topics`: [`LogSource`] and [`LogSink`], the log's topics as ends.
//!
//! The crate uses the runtime (`riffle-runtime`) for processors and
//! producers; nothing below it knows connectors.

mod pipeline;
mod sampled;
mod topics;
mod transform;

/// Kept here too, where sinks are: the payload of [`Error::Unconfirmed`](riffle_base::error::Error::Unconfirmed).
pub use crate::error::Unconfirmed;
use crate::process::connect_headers;
pub use crate::process::Record;
pub use pipeline::{NoDeadLetter, Pipeline, PipelineStats, Processor, Stage};
pub use sampled::{Sampled, LAG_EVERY};
pub use topics::{LogSink, LogSource};
pub use transform::{Condition, Transform};

use std::fmt;
use std::time::Duration;

use crate::error::Result;
use riffle_base::error;
use riffle_log as log;
use riffle_runtime::{process, stream};

/// What a connector can promise about the records that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    /// Records can be lost: the system cannot redeliver (NATS core, stdin)
    /// or cannot confirm (stdout to a closed pipe).
    AtMostOnce,
    /// Nothing is lost; a failure may repeat records. A source redelivers
    /// what it has not acknowledged; a sink confirms what it has stored.
    AtLeastOnce,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delivery::AtMostOnce => "at-most-once",
            Delivery::AtLeastOnce => "at-least-once",
        })
    }
}

/// Where records come from.
///
/// A source hands out records in batches and is told, with [`Source::ack`],
/// when everything handed out so far is safely done with. Records not yet
/// acknowledged when the process or the connection dies are redelivered by
/// the system (when it can: see [`Source::delivery`]).
pub trait Source: Send {
    /// A short description for messages, e.g. `mqtt 127.0.0.1:1883
    /// heaters/+/sensor`.
    fn describe(&self) -> String;

    /// What this source can promise.
    fn delivery(&self) -> Delivery;

    /// Waits up to `timeout` for records and appends at most `max` of them
    /// to `out`; returns how many. A lost connection is re-established
    /// here, with backoff; an error means the source cannot go on.
    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize>;

    /// Everything polled so far is done with: the system may forget it. A
    /// failure (the connection dropped) is not fatal: the records come
    /// again.
    fn ack(&mut self) -> Result<()>;

    /// Whether a finite source (a file read once, stdin) has handed out
    /// everything it will ever have; the pipeline then stops.
    fn finished(&self) -> bool {
        false
    }

    /// How many records the source holds that have not been read yet (a
    /// consumer group's lag, a stream's pending entries), if it can tell
    /// cheaply; asked once per batch for the pipeline's metrics (a source
    /// that asks its server keeps the answer a while: [`Sampled`]).
    fn lag(&mut self) -> Option<u64> {
        None
    }

    /// Releases the connection; unacknowledged records are redelivered to
    /// the next reader.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Where records go.
///
/// A sink queues records with [`Sink::send`] and confirms them with
/// [`Sink::flush`]: once `flush` returns `Ok`, every record sent before it
/// is durable in the target system (as durable as the system makes it:
/// see [`Sink::delivery`]).
pub trait Sink: Send {
    /// A short description for messages, e.g. `redis 127.0.0.1:6379 stream
    /// heatercontrol`.
    fn describe(&self) -> String;

    /// What this sink can promise.
    fn delivery(&self) -> Delivery;

    /// Queues a record. May block while too much is unconfirmed.
    fn send(&mut self, record: &Record) -> Result<()>;

    /// Waits until everything sent is confirmed, for up to `timeout`. After
    /// an error, records sent since the last successful flush may be lost
    /// and the caller sends them again (re-establishing the connection is
    /// the sink's job, on the next call).
    ///
    /// A sink that knows more says so with [`Error::Unconfirmed`]: which of
    /// those records the system refused for good (a 4xx, an MQTT 5 reason
    /// code, an AMQP return) and how many, from the first, are settled, so
    /// that the caller sends again only the rest and never repeats what was
    /// confirmed. Either way the flush ends the round: the next `send`
    /// starts a new one, counted from 0.
    ///
    /// [`Error::Unconfirmed`]: riffle_base::error::Error::Unconfirmed
    fn flush(&mut self, timeout: Duration) -> Result<()>;

    /// Flushes what is left and releases the connection.
    fn close(&mut self) -> Result<()> {
        self.flush(Duration::from_secs(10))
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn delivery(&self) -> Delivery {
        (**self).delivery()
    }
    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        (**self).poll(out, max, timeout)
    }
    fn ack(&mut self) -> Result<()> {
        (**self).ack()
    }
    fn finished(&self) -> bool {
        (**self).finished()
    }
    fn lag(&mut self) -> Option<u64> {
        (**self).lag()
    }
    fn close(&mut self) -> Result<()> {
        (**self).close()
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn delivery(&self) -> Delivery {
        (**self).delivery()
    }
    fn send(&mut self, record: &Record) -> Result<()> {
        (**self).send(record)
    }
    fn flush(&mut self, timeout: Duration) -> Result<()> {
        (**self).flush(timeout)
    }
    fn close(&mut self) -> Result<()> {
        (**self).close()
    }
}

/// Renders a destination template: `{key}` becomes the record's key and
/// `{topic}` the topic it was sent to; anything else is kept. A sink with
/// the destination `heaters/{key}/command` sends each heater's commands to
/// its own topic.
pub fn render(template: &str, record: &Record) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let key = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    template
        .replace("{key}", &key)
        .replace("{topic}", &record.topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_key_and_topic() {
        let r = Record::new("heatercontrol", Some(b"h-7"), "ON");
        assert_eq!(render("heaters/{key}/command", &r), "heaters/h-7/command");
        assert_eq!(render("out.{topic}", &r), "out.heatercontrol");
        assert_eq!(render("fixed", &r), "fixed");
        let keyless = Record::new("t", None, "x");
        assert_eq!(render("a/{key}/b", &keyless), "a//b");
    }

    #[test]
    fn the_weaker_delivery_wins() {
        assert_eq!(
            Delivery::AtLeastOnce.min(Delivery::AtMostOnce),
            Delivery::AtMostOnce
        );
    }
}
