//! `riffle.Producer`: the producer actor of example 6-1. `produce` queues
//! a record and returns; delivery reports are gathered on Riffle's side
//! and handed to the Python callback from `produce`, `poll` and `flush`,
//! on the caller's thread, as confluent_kafka does, so the callback never
//! runs on a librdkafka thread and needs no locking.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use riffle::log::{OutRecord, OwnedHeader};

use crate::errors::{ClosedError, IntoPy};
use crate::json;
use crate::log::{seconds, Log};
use crate::record::DeliveryReport;

/// Reports waiting for the Python callback.
#[derive(Default)]
struct Reports {
    queue: Mutex<VecDeque<riffle::log::DeliveryReport>>,
    arrived: Condvar,
}

/// Sends records to any topic of a log without waiting for them to be
/// written; `flush` waits.
#[pyclass(module = "riffle", frozen)]
pub struct Producer {
    inner: Mutex<Option<riffle::stream::Producer>>,
    reports: Arc<Reports>,
    on_delivery: Option<Py<PyAny>>,
}

/// Headers from Python: (name, value) pairs, a value str, bytes or None.
pub fn headers_from(items: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<OwnedHeader>> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let pairs: Vec<(String, Option<Bound<'_, PyAny>>)> = match items.cast::<PyDict>() {
        Ok(d) => d
            .iter()
            .map(|(k, v)| Ok((k.extract()?, (!v.is_none()).then_some(v))))
            .collect::<PyResult<_>>()?,
        Err(_) => items.extract()?,
    };
    for (name, value) in pairs {
        let value = value.map(|v| json::key_bytes(&v)).transpose()?;
        out.push(OwnedHeader { name, value });
    }
    Ok(out)
}

impl Producer {
    fn handle(&self) -> PyResult<riffle::stream::Producer> {
        self.inner
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| ClosedError::new_err("the producer is closed"))
    }

    /// Calls the callback with every report waiting; returns how many.
    fn serve(&self, py: Python<'_>) -> PyResult<usize> {
        let Some(cb) = &self.on_delivery else {
            return Ok(0);
        };
        let mut n = 0;
        loop {
            let Some(r) = self.reports.queue.lock().unwrap().pop_front() else {
                return Ok(n);
            };
            let report = DeliveryReport::from(&r);
            let err = r.result.as_ref().err().cloned();
            cb.call1(py, (err, report))?;
            n += 1;
        }
    }
}

#[pymethods]
impl Producer {
    /// A producer on `log`. `on_delivery(err, report)` is called once per
    /// record, from `produce`, `poll` or `flush`: `err` is None when the
    /// record was written, else the reason it was not.
    #[new]
    #[pyo3(signature = (log, on_delivery=None))]
    fn new(py: Python<'_>, log: &Log, on_delivery: Option<Py<PyAny>>) -> PyResult<Self> {
        let reports = Arc::new(Reports::default());
        let inner = log.inner.clone();
        let producer = if on_delivery.is_some() {
            let r = reports.clone();
            py.detach(move || {
                riffle::stream::Producer::with_reports(&*inner, move |report| {
                    r.queue.lock().unwrap().push_back(report.clone());
                    r.arrived.notify_all();
                })
            })
        } else {
            py.detach(move || riffle::stream::Producer::new(&*inner))
        }
        .py_err()?;
        Ok(Self {
            inner: Mutex::new(Some(producer)),
            reports,
            on_delivery,
        })
    }

    /// Queues a record for `topic`. `value` is bytes, str (UTF-8) or
    /// anything JSON-serializable (a dict, as in the chapter), written as
    /// compact JSON; `key` is str or bytes; `headers` a list of (name,
    /// value) pairs or a dict. Keyed records go to the key's partition
    /// (murmur2, as the Java client) unless `partition` is given. Waits
    /// only while the local queue is full. Serves waiting delivery reports.
    #[pyo3(signature = (topic, value, key=None, headers=None, partition=None))]
    fn produce(
        &self,
        py: Python<'_>,
        topic: String,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<i32>,
    ) -> PyResult<()> {
        let value = json::value_bytes(value)?;
        let key = key.map(json::key_bytes).transpose()?;
        let headers = headers_from(headers)?;
        let producer = self.handle()?;
        py.detach(|| {
            let mut record = OutRecord::new(&topic, key.as_deref(), &value).with_headers(&headers);
            record.partition = partition;
            producer.send_record(record)
        })
        .py_err()?;
        self.serve(py)?;
        Ok(())
    }

    /// Waits up to `timeout` seconds for a delivery report, then calls the
    /// callback for every report waiting. Returns how many it served.
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let wait = seconds(timeout, "timeout")?;
        if self.on_delivery.is_some() && !wait.is_zero() {
            let reports = self.reports.clone();
            py.detach(move || {
                let deadline = Instant::now() + wait;
                let mut q = reports.queue.lock().unwrap();
                while q.is_empty() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = reports.arrived.wait_timeout(q, left).unwrap().0;
                }
            });
        }
        self.serve(py)
    }

    /// Waits up to `timeout` seconds (the chapter's `flush(30)`) until every
    /// queued record is delivered or refused, and serves their reports.
    /// Returns how many records are still in flight (0 when all are done).
    #[pyo3(signature = (timeout=30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        let wait = seconds(timeout, "timeout")?;
        let producer = self.handle()?;
        let left = py.detach(|| {
            let _ = producer.flush(wait);
            producer.in_flight()
        });
        // Reports of the last records may reach the queue just after the
        // flush returns: give them a moment.
        if left == 0 && self.on_delivery.is_some() {
            let sent = producer
                .stats()
                .sent
                .load(std::sync::atomic::Ordering::Relaxed);
            let reports = self.reports.clone();
            let stats = producer.clone();
            py.detach(move || {
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline {
                    let s = stats.stats();
                    let done = s.delivered.load(std::sync::atomic::Ordering::Relaxed)
                        + s.failed.load(std::sync::atomic::Ordering::Relaxed);
                    if done >= sent {
                        break;
                    }
                    let q = reports.queue.lock().unwrap();
                    let _ = reports.arrived.wait_timeout(q, Duration::from_millis(5));
                }
            });
        }
        self.serve(py)?;
        Ok(left)
    }

    /// Records queued and not yet delivered.
    #[getter]
    fn in_flight(&self) -> PyResult<usize> {
        Ok(self.handle()?.in_flight())
    }

    /// Counts of records: sent, delivered and failed.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.handle()?;
        let s = p.stats();
        let d = PyDict::new(py);
        use std::sync::atomic::Ordering::Relaxed;
        d.set_item("sent", s.sent.load(Relaxed))?;
        d.set_item("delivered", s.delivered.load(Relaxed))?;
        d.set_item("failed", s.failed.load(Relaxed))?;
        Ok(d)
    }

    /// Flushes (up to `timeout` seconds) and closes; further sends raise
    /// ClosedError. Returns the records still undelivered.
    #[pyo3(signature = (timeout=30.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<usize> {
        if self.inner.lock().unwrap().is_none() {
            return Ok(0);
        }
        let left = self.flush(py, timeout)?;
        let producer = self.inner.lock().unwrap().take();
        py.detach(move || drop(producer));
        Ok(left)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py, 30.0)?;
        Ok(false)
    }
}
