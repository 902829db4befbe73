//! Appends to Kafka through librdkafka's `BaseProducer`: a send copies the
//! record into librdkafka's queue and returns. Delivery reports are served
//! through a callback rather than one future per record, mostly by the
//! threads that send, as part of every [`SERVE_EVERY`]th send, and by a
//! background thread every [`BACKGROUND_EVERY`] for what a sender left.
//!
//! Serving reports on the sending thread matters at full speed: a report
//! frees the records it covers, which the sending thread allocated. When
//! another thread frees them (rdkafka's `ThreadedProducer`, whose thread
//! takes every report as soon as it arrives), each free takes the lock of
//! the sender's malloc arena while the sender allocates the next records
//! from it, and both threads spend their time waking each other (futex
//! calls by the thousand per second in a pass-through).

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::context::Faults;
use super::error::kafka_error;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{
    DeliveryCallback, DeliveryReport, Headers, LogProducer, OutRecord, Refusal, Undelivered,
};
use rdkafka::types::RDKafkaErrorCode as C;

/// A sender serves the delivery reports waiting, if any, once per this many
/// sends.
const SERVE_EVERY: u32 = 64;
/// How often the background thread serves the reports no sender served
/// (after the last send of a burst, say).
const BACKGROUND_EVERY: Duration = Duration::from_millis(10);
/// The most reports one serving takes, so that a sender goes back to its
/// records soon; the rest wait for the next.
const SERVE_AT_MOST: usize = 64;
/// How long a record for a partition the producer does not know yet waits
/// for the topic's metadata.
const METADATA_WAIT: Duration = Duration::from_secs(5);

pub(super) struct KafkaProducer {
    /// Who serves the reports; dropped before the producer (it holds a
    /// handle on the producer's queue).
    reports: Arc<Reports>,
    pub(super) producer: Arc<BaseProducer<DeliveryContext>>,
    background: Option<JoinHandle<()>>,
    /// librdkafka's `message.max.bytes`: larger records are refused before
    /// they are sent.
    max_record_bytes: usize,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

/// Whether the log refused a record for good, and why (see [`Refusal`]).
/// A record refused only for sharing a batch with an invalid one
/// (`_INVALID_DIFFERENT_RECORD`) is not.
fn refusal(e: &KafkaError) -> Option<Refusal> {
    match e.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge => Some(Refusal::TooLarge),
        C::TopicAuthorizationFailed => Some(Refusal::NotAuthorized),
        C::InvalidRecord | C::InvalidTimestamp | C::PolicyViolation => Some(Refusal::Invalid),
        _ => None,
    }
}

/// Where delivery reports wait, and the right to serve them: one thread at
/// a time, so that callbacks see a partition's reports in order.
struct Reports {
    queue: MainQueue,
    serving: Mutex<()>,
    /// Sends since a sender last served reports.
    sends: AtomicU32,
    stop: AtomicBool,
}

/// librdkafka's main queue of a producer, where its delivery reports wait,
/// to see whether any do without taking one.
struct MainQueue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queues are thread-safe; the handle is only read
// (`rd_kafka_queue_length`) and destroyed once.
unsafe impl Send for MainQueue {}
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn of(producer: &BaseProducer<DeliveryContext>) -> Self {
        // SAFETY: the client is alive; the handle is destroyed on drop,
        // before the client (see `KafkaProducer`'s field order).
        Self(unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) })
    }

    fn len(&self) -> usize {
        // SAFETY: a live queue handle.
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: ours, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

impl Reports {
    /// Serves the reports waiting now, unless another thread is serving.
    fn serve_waiting(&self, producer: &BaseProducer<DeliveryContext>) {
        let Ok(_serving) = self.serving.try_lock() else {
            return;
        };
        for _ in 0..SERVE_AT_MOST {
            if self.queue.len() == 0 {
                break;
            }
            producer.poll(Duration::ZERO);
        }
    }

    /// Serves reports as they arrive for `wait`, or only waits while
    /// another thread serves them.
    fn serve_for(&self, producer: &BaseProducer<DeliveryContext>, wait: Duration) {
        match self.serving.try_lock() {
            Ok(_serving) => producer.poll(wait),
            Err(_) => std::thread::sleep(wait),
        }
    }
}

pub(super) struct DeliveryContext {
    on_delivery: Option<DeliveryCallback>,
    /// The report handed to the callback for each delivered record, reused
    /// so that a record costs no allocation: its topic is rewritten only
    /// when it changes.
    delivered: Mutex<DeliveryReport>,
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
            Ok(m) => {
                let Some(cb) = &self.on_delivery else {
                    return;
                };
                // Taken unless a callback delivers inside a callback.
                if let Ok(mut report) = self.delivered.try_lock() {
                    // SAFETY: the message's topic handle outlives the message.
                    let topic = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(m.topic_ptr())) };
                    if report.topic.as_bytes() != topic.to_bytes() {
                        report.topic = m.topic().to_owned();
                    }
                    report.partition = m.partition();
                    report.result = Ok(m.offset());
                    return cb(&report);
                }
                DeliveryReport {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    result: Ok(m.offset()),
                    undelivered: None,
                }
            }
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
                        refusal: refusal(e),
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
            delivered: Mutex::new(DeliveryReport {
                topic: String::new(),
                partition: 0,
                result: Ok(0),
                undelivered: None,
            }),
            failures: AtomicU64::new(0),
            faults: log.inner.faults.clone(),
        };
        let max_record_bytes = c
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
        let producer: Arc<BaseProducer<DeliveryContext>> =
            Arc::new(c.create_with_context(ctx).map_err(kafka_error)?);
        let reports = Arc::new(Reports {
            queue: MainQueue::of(&producer),
            serving: Mutex::new(()),
            sends: AtomicU32::new(0),
            stop: AtomicBool::new(false),
        });
        let background = {
            let (producer, reports) = (producer.clone(), reports.clone());
            std::thread::Builder::new()
                .name("riffle producer reports".into())
                .spawn(move || {
                    while !reports.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(BACKGROUND_EVERY);
                        reports.serve_waiting(&producer);
                    }
                })
                .map_err(|e| Error::io("cannot start a producer thread", &e))?
        };
        Ok(Self {
            reports,
            producer,
            background: Some(background),
            max_record_bytes,
        })
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        self.reports.stop.store(true, Ordering::Release);
        if let Some(t) = self.background.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl KafkaProducer {
    /// Queues a record, with librdkafka's error for callers that tell its
    /// kinds apart.
    pub(super) fn produce(&self, r: OutRecord<'_>) -> std::result::Result<(), KafkaError> {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(r.topic);
        if let Some(v) = r.value {
            rec = rec.payload(v);
        }
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(t) = r.timestamp {
            rec = rec.timestamp(t);
        }
        if !r.headers.is_empty() {
            rec = rec.headers(to_kafka(r.headers));
        }
        match self.producer.send(rec) {
            Ok(()) => {}
            // A producer made before the topic grew knows the new
            // partitions only from its next metadata refresh (seconds
            // away): a record for one asks for the topic's metadata now.
            Err((e, rec))
                if rec.partition.is_some()
                    && e.rdkafka_error_code() == Some(C::UnknownPartition) =>
            {
                self.producer
                    .client()
                    .fetch_metadata(Some(r.topic), METADATA_WAIT)?;
                self.producer.send(rec).map_err(|(e, _)| e)?;
            }
            Err((e, _)) => return Err(e),
        }
        if self.reports.sends.fetch_add(1, Ordering::Relaxed) + 1 >= SERVE_EVERY {
            self.reports.sends.store(0, Ordering::Relaxed);
            self.reports.serve_waiting(&self.producer);
        }
        Ok(())
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
    /// Not rdkafka's `flush`: that serves delivery reports for 100 ms at a
    /// time, however soon they come, so every flush (and every transaction
    /// commit, which flushes) took 100 ms. Here a zero-timeout flush marks
    /// the queue as due (linger cut short) and this thread serves reports
    /// for a millisecond at a time until none is missing.
    pub(super) fn wait_delivered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(_)) if Instant::now() < deadline => {
                    self.reports
                        .serve_for(&self.producer, Duration::from_millis(1));
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

impl KafkaProducer {
    /// `e`, from queueing `r`, as an [`Error`]: a record over
    /// `message.max.bytes` is [`Error::Refused`], for good.
    pub(super) fn send_error(&self, r: &OutRecord<'_>, e: KafkaError) -> Error {
        match e.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge) => Error::Refused {
                server: "Kafka producer".into(),
                message: format!(
                    "a record of {} bytes to {} is larger than the producer's message.max.bytes ({})",
                    r.key.map_or(0, <[u8]>::len) + r.value_bytes().len(),
                    r.topic,
                    self.max_record_bytes
                ),
            },
            _ => kafka_error(e),
        }
    }
}

impl LogProducer for KafkaProducer {
    fn send(&self, r: OutRecord<'_>) -> Result<()> {
        self.produce(r).map_err(|e| self.send_error(&r, e))
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.max_record_bytes)
    }

    fn poll(&self, timeout: Duration) {
        self.reports
            .serve_for(&self.producer, timeout.min(Duration::from_millis(10)));
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.wait_delivered(timeout)
    }

    fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }
}
