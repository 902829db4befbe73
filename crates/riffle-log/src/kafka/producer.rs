//! Appends to Kafka through librdkafka's `ThreadedProducer`: a send copies
//! the record into librdkafka's queue and returns; a background thread serves
//! delivery reports through a callback rather than one future per record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::context::Faults;
use super::error::kafka_error;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{DeliveryCallback, DeliveryReport, Headers, LogProducer, OutRecord, Undelivered};

pub(super) struct KafkaProducer {
    pub(super) producer: ThreadedProducer<DeliveryContext>,
}

pub(super) struct DeliveryContext {
    on_delivery: Option<DeliveryCallback>,
    failures: AtomicU64,
    faults: Arc<Faults>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        super::context::log_line("producer", level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.faults.note(&error, reason);
        tracing::warn!(target: "librdkafka", "producer error: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(m) => DeliveryReport {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                result: Ok(m.offset()),
                undelivered: None,
            },
            Err((e, m)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                DeliveryReport {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    result: Err(e.to_string()),
                    undelivered: Some(Undelivered {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().unwrap_or_default().to_vec(),
                        headers: Headers::kafka(m).to_vec(),
                    }),
                }
            }
        };
        if let Some(cb) = &self.on_delivery {
            cb(&report);
        }
    }
}

impl KafkaProducer {
    pub(super) fn new(log: &KafkaLog, on_delivery: Option<DeliveryCallback>) -> Result<Self> {
        Self::with(log, on_delivery, &[])
    }

    /// A producer with `extra` properties on top of the defaults; the
    /// user's properties still win.
    pub(super) fn with(
        log: &KafkaLog,
        on_delivery: Option<DeliveryCallback>,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let mut c = log.client_config();
        c.set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        for (k, v) in log.inner.properties.iter() {
            c.set(k, v);
        }
        let ctx = DeliveryContext {
            on_delivery,
            failures: AtomicU64::new(0),
            faults: log.inner.faults.clone(),
        };
        Ok(Self {
            producer: c.create_with_context(ctx).map_err(kafka_error)?,
        })
    }
}

impl KafkaProducer {
    /// Queues a record, with librdkafka's error for callers that tell its
    /// kinds apart.
    pub(super) fn produce(&self, r: OutRecord<'_>) -> std::result::Result<(), KafkaError> {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(r.topic).payload(r.value);
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if !r.headers.is_empty() {
            rec = rec.headers(to_kafka(r.headers));
        }
        self.producer.send(rec).map_err(|(e, _)| e)
    }
}

/// librdkafka's copy of headers to write; made only for records that have
/// headers, so header-less records cost nothing extra.
fn to_kafka(headers: Headers<'_>) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new_with_capacity(headers.len()), |out, h| {
            out.insert(rdkafka::message::Header {
                key: h.name,
                value: h.value,
            })
        })
}

impl KafkaProducer {
    /// Sends what is queued now and waits until every record is delivered
    /// or refused (its report handed to the callback).
    ///
    /// Not rdkafka's `flush`: that serves delivery reports itself, waiting
    /// up to 100 ms at a time for one, while our background thread takes
    /// them first, so every flush (and every transaction commit, which
    /// flushes) took 100 ms. Here a zero-timeout flush marks the queue as
    /// due (linger cut short) and this thread checks every millisecond.
    pub(super) fn wait_delivered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(KafkaError::Flush(_)) => {
                    // Undelivered because the broker refused our password
                    // or certificate: say so rather than that time ran out.
                    if let Some(fault) = self.producer.context().faults.get() {
                        return Err(fault);
                    }
                    return Err(Error::Timeout(format!(
                        "{} records still undelivered after {timeout:?}",
                        self.producer.in_flight_count(),
                    )));
                }
                Err(other) => return Err(kafka_error(other)),
            }
        }
    }
}

impl LogProducer for KafkaProducer {
    fn send(&self, r: OutRecord<'_>) -> Result<()> {
        self.produce(r).map_err(kafka_error)
    }

    fn poll(&self, timeout: Duration) {
        // The background thread serves delivery reports; waiting here gives
        // it time to drain the queue.
        std::thread::sleep(timeout.min(Duration::from_millis(10)));
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.wait_delivered(timeout)
    }

    fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }
}
