use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::log::{
    DeliveryReport, GroupToken, Log, LogProducer, OutRecord, TopicPartition, TxnProducer,
};
use crate::metrics::{self, Counter};

/// Counts of delivery reports, shared by every clone of a [`Producer`].
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Records acknowledged per topic (`riffle_records_out_total`), and
    /// how many of them are not added to it yet: the producers of a process
    /// share its series, and adding per record would have their delivery
    /// threads contend for it.
    out: Mutex<Vec<(String, Counter, u64)>>,
}

/// Acknowledged records a producer counts before adding them to the
/// shared series (and when it flushes or closes).
const OUT_BATCH: u64 = 64;

impl DeliveryStats {
    fn count_out(&self, topic: &str) {
        let mut out = self.out.lock().unwrap();
        let i = match out.iter().position(|(t, _, _)| t == topic) {
            Some(i) => i,
            None => {
                let c = metrics::global().counter(
                    "riffle_records_out_total",
                    "Records written and acknowledged by the log, per topic.",
                    vec![("topic", topic.to_owned())],
                );
                out.push((topic.to_owned(), c, 0));
                out.len() - 1
            }
        };
        let (_, shared, pending) = &mut out[i];
        *pending += 1;
        if *pending >= OUT_BATCH {
            shared.add(std::mem::take(pending));
        }
    }

    /// Adds every count not added yet to the shared series.
    fn publish(&self) {
        for (_, shared, pending) in self.out.lock().unwrap().iter_mut() {
            shared.add(std::mem::take(pending));
        }
    }

    fn record(&self, report: &DeliveryReport) {
        match &report.result {
            Ok(offset) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.count_out(&report.topic);
                tracing::debug!(topic = %report.topic, partition = report.partition, offset, "delivered");
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %report.topic, partition = report.partition, "delivery failed: {e}");
            }
        }
    }
}

/// Sends records to any topic of a log. Cloning is cheap; all clones share
/// one backend producer (and so one connection and one send queue).
///
/// `send` does not wait for the record to be written: delivery is confirmed
/// later by a report, counted in [`DeliveryStats`] and logged at debug level
/// (failures at warn). When the backend's queue is full, `send` waits for room
/// for up to [`Producer::QUEUE_FULL_WAIT`], which is the backpressure a fast
/// writer needs.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    stats: Arc<DeliveryStats>,
}

enum Backend {
    Plain(Box<dyn LogProducer>),
    Transactional(Box<dyn TxnProducer>),
}

impl std::ops::Deref for Backend {
    type Target = dyn LogProducer;
    fn deref(&self) -> &Self::Target {
        match self {
            Backend::Plain(p) => &**p,
            Backend::Transactional(p) => &**p,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        match &self.backend {
            // What was not committed is not wanted: abort, so that readers
            // need not wait for the broker to time the transaction out.
            Backend::Transactional(p) => {
                if let Err(e) = p.abort(Duration::from_secs(5)) {
                    tracing::debug!("aborting on drop: {e}");
                }
            }
            Backend::Plain(p) => {
                if let Err(e) = p.flush(Producer::CLOSE_TIMEOUT) {
                    tracing::warn!("producer dropped with undelivered records: {e}");
                }
            }
        }
        self.stats.publish();
    }
}

impl Producer {
    /// How long `send` waits for room in a full queue before giving up.
    pub const QUEUE_FULL_WAIT: Duration = Duration::from_secs(30);
    /// How long closing waits for outstanding deliveries (the chapter's `flush(30)`).
    pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(log: &dyn Log) -> Result<Self> {
        Self::with_reports(log, |_| {})
    }

    /// Like [`Producer::new`], also calling `on_delivery` with every delivery
    /// report (on whichever thread serves it: one that sends or flushes, or
    /// the backend's; keep it short).
    pub fn with_reports(
        log: &dyn Log,
        on_delivery: impl Fn(&DeliveryReport) + Send + Sync + 'static,
    ) -> Result<Self> {
        let stats = Arc::new(DeliveryStats::default());
        let s = stats.clone();
        let backend = log.producer(Some(Arc::new(move |r: &DeliveryReport| {
            s.record(r);
            on_delivery(r);
        })))?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Plain(backend),
                stats,
            }),
        })
    }

    /// A transactional producer named `id` (see [`TxnProducer`]): records
    /// sent through it become visible when [`Producer::commit`] commits
    /// them. Creating it fences older producers with the same id.
    /// `on_delivery` is called with every delivery report, as with
    /// [`Producer::with_reports`].
    pub fn transactional(
        log: &dyn Log,
        id: &str,
        on_delivery: impl Fn(&DeliveryReport) + Send + Sync + 'static,
    ) -> Result<Self> {
        let stats = Arc::new(DeliveryStats::default());
        let s = stats.clone();
        let backend = log.transactional_producer(
            id,
            Some(Arc::new(move |r: &DeliveryReport| {
                s.record(r);
                on_delivery(r);
            })),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Backend::Transactional(backend),
                stats,
            }),
        })
    }

    fn txn(&self) -> Result<&dyn TxnProducer> {
        match &self.inner.backend {
            Backend::Transactional(p) => Ok(&**p),
            Backend::Plain(_) => Err(Error::InvalidInput("not a transactional producer".into())),
        }
    }

    /// Opens a transaction (transactional producers only).
    pub fn begin(&self) -> Result<()> {
        self.txn()?.begin()
    }

    /// Commits the open transaction with the consumer offsets `offsets`
    /// of the group `group` names (transactional producers only).
    pub fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &GroupToken,
        timeout: Duration,
    ) -> Result<()> {
        let committed = self.txn()?.commit(offsets, group, timeout);
        self.inner.stats.publish();
        committed
    }

    /// Aborts the open transaction (transactional producers only).
    pub fn abort(&self, timeout: Duration) -> Result<()> {
        self.txn()?.abort(timeout)
    }

    /// Sends raw bytes with an optional key.
    pub fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.send_record(OutRecord::new(topic, key, value))
    }

    /// Sends a value encoded as JSON with an optional UTF-8 key.
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::InvalidInput(format!("cannot encode JSON: {e}")))?;
        self.send(topic, key.map(str::as_bytes), &bytes)
    }

    /// Sends a record, waiting for room while the local queue is full.
    pub fn send_record(&self, record: OutRecord<'_>) -> Result<()> {
        let mut deadline = None;
        loop {
            match self.inner.backend.send(record) {
                Ok(()) => {
                    self.inner.stats.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(Error::QueueFull) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + Self::QUEUE_FULL_WAIT);
                    if Instant::now() >= d {
                        return Err(Error::QueueFull);
                    }
                    self.inner.backend.poll(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until every record sent so far is delivered, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let flushed = self.inner.backend.flush(timeout);
        self.inner.stats.publish();
        flushed
    }

    pub fn stats(&self) -> &DeliveryStats {
        &self.inner.stats
    }

    /// Records sent and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.inner.backend.in_flight()
    }

    /// The largest record this producer sends (see
    /// [`LogProducer::max_record_bytes`]).
    pub fn max_record_bytes(&self) -> Option<usize> {
        self.inner.backend.max_record_bytes()
    }
}
