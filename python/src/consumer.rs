//! `riffle.Consumer`: the consumer actor of example 6-2, one member of a
//! consumer group, read from Python in batches or one record at a time.
//!
//! Waiting for records happens with the interpreter released, in slices of
//! a tenth of a second, so `stop()` called from another thread (a Ray
//! actor's second thread, a signal handler) ends a wait within that time:
//! the `stop` the chapter's single-threaded actor could not have.
//!
//! Offsets: the records a call hands out count as processed when the next
//! call comes (`poll`, `consume`, the next step of an iteration, `commit`
//! or `close`), as with Kafka's Java consumer; their offsets are then
//! stored and committed in the background every `commit_interval`, when
//! partitions are revoked, and on `close`. A crash repeats at most the
//! records since the last commit: at-least-once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyList;
use riffle::log::{
    ConsumerConfig, GroupEvent, LogConsumer, OffsetReset, PollVisitor, RecordRef, TopicPartition,
};

use crate::errors::{ClosedError, IntoPy};
use crate::log::{seconds, Log};
use crate::record::Record;

/// The longest one wait lasts: how soon `stop()` takes effect.
const SLICE: Duration = Duration::from_millis(100);

struct Member {
    consumer: Box<dyn LogConsumer>,
    /// Records polled and not handed out yet.
    buffer: VecDeque<riffle::log::Record>,
    /// Per partition, the offset after the last record handed out: stored
    /// when the caller comes back for more.
    handed: HashMap<TopicPartition, i64>,
}

impl Member {
    fn store_handed(&mut self) {
        for (tp, next) in self.handed.drain() {
            if let Err(e) = self.consumer.store_offset(&tp.topic, tp.partition, next) {
                // Revoked meanwhile: its next owner starts from the last commit.
                tracing::debug!("not storing {tp}@{next}: {e}");
            }
        }
    }
}

/// Collects a poll's records and group events.
struct Collect<'a> {
    buffer: &'a mut VecDeque<riffle::log::Record>,
    events: &'a mut Vec<GroupEvent>,
}

impl PollVisitor for Collect<'_> {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.buffer.push_back(record.to_owned());
        // Stored later, once the caller has processed it.
        false
    }

    fn event(&mut self, event: GroupEvent) {
        if let GroupEvent::Revoked(tps) = &event {
            // Not ours any more: the next owner reads them from the last
            // commit.
            self.buffer.retain(|r| {
                !tps.iter()
                    .any(|tp| tp.partition == r.partition && tp.topic == r.topic)
            });
        }
        self.events.push(event);
    }
}

/// One member of a consumer group.
#[pyclass(module = "riffle", frozen)]
pub struct Consumer {
    member: Mutex<Option<Member>>,
    stop: Arc<AtomicBool>,
    on_assign: Option<Py<PyAny>>,
    on_revoke: Option<Py<PyAny>>,
    #[pyo3(get)]
    group: String,
    #[pyo3(get)]
    topics: Vec<String>,
}

impl Consumer {
    /// Waits up to `timeout` for at most `max` records, then runs the
    /// assignment callbacks for the group events met, in order.
    fn take(
        &self,
        py: Python<'_>,
        max: usize,
        timeout: Duration,
    ) -> PyResult<Vec<riffle::log::Record>> {
        let stop = self.stop.clone();
        let (records, events) = py
            .detach(|| -> riffle::Result<_> {
                let mut guard = self.member.lock().unwrap();
                let m = guard.as_mut().ok_or(riffle::Error::Closed)?;
                m.store_handed();
                let mut events = Vec::new();
                let deadline = Instant::now() + timeout;
                while m.buffer.is_empty() && !stop.load(Ordering::Acquire) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut visit = Collect {
                        buffer: &mut m.buffer,
                        events: &mut events,
                    };
                    m.consumer.poll(left.min(SLICE), max.max(1), &mut visit)?;
                    if left.is_zero() || !events.is_empty() {
                        break;
                    }
                }
                let n = m.buffer.len().min(max);
                let records: Vec<_> = m.buffer.drain(..n).collect();
                for r in &records {
                    m.handed
                        .insert(TopicPartition::new(&r.topic, r.partition), r.offset + 1);
                }
                Ok((records, events))
            })
            .map_err(|e| match e {
                riffle::Error::Closed => ClosedError::new_err("the consumer is closed"),
                e => crate::errors::to_py(e),
            })?;
        for event in events {
            let (cb, tps) = match event {
                GroupEvent::Assigned(tps) => (&self.on_assign, tps),
                GroupEvent::Revoked(tps) => (&self.on_revoke, tps),
            };
            if let Some(cb) = cb {
                let list: Vec<(String, i32)> =
                    tps.into_iter().map(|tp| (tp.topic, tp.partition)).collect();
                cb.call1(py, (list,))?;
            }
        }
        Ok(records)
    }
}

fn wrap(py: Python<'_>, records: Vec<riffle::log::Record>) -> PyResult<Bound<'_, PyList>> {
    PyList::new(py, records.into_iter().map(|inner| Record { inner }))
}

#[pymethods]
impl Consumer {
    /// Joins consumer group `group` on `topics` (a name or a list).
    /// `offset_reset` is where a partition without a committed offset
    /// starts: "earliest" or "latest" (the chapter's `restart`).
    /// `on_assign(partitions)` and `on_revoke(partitions)` get lists of
    /// (topic, partition) and run on the polling thread. Under
    /// `read_committed`, records of aborted transactions are skipped (for
    /// reading the outputs of exactly-once apps).
    #[new]
    #[pyo3(signature = (log, group, topics, offset_reset="earliest", session_timeout=10.0, commit_interval=1.0, on_assign=None, on_revoke=None, read_committed=false, client_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        log: &Log,
        group: String,
        topics: &Bound<'_, PyAny>,
        offset_reset: &str,
        session_timeout: f64,
        commit_interval: f64,
        on_assign: Option<Py<PyAny>>,
        on_revoke: Option<Py<PyAny>>,
        read_committed: bool,
        client_id: Option<String>,
    ) -> PyResult<Self> {
        let topics: Vec<String> = match topics.extract::<String>() {
            Ok(t) => vec![t],
            Err(_) => topics.extract()?,
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut cfg = ConsumerConfig::new(group.clone(), &names);
        cfg.offset_reset = offset_reset.parse::<OffsetReset>().py_err()?;
        cfg.session_timeout = seconds(session_timeout, "session_timeout")?;
        cfg.commit_interval = seconds(commit_interval, "commit_interval")?;
        cfg.read_committed = read_committed;
        cfg.client_id = client_id.unwrap_or_else(|| format!("riffle-py-{group}"));
        let inner = log.inner.clone();
        let consumer = py.detach(move || inner.consumer(&cfg)).py_err()?;
        Ok(Self {
            member: Mutex::new(Some(Member {
                consumer,
                buffer: VecDeque::new(),
                handed: HashMap::new(),
            })),
            stop: Arc::default(),
            on_assign,
            on_revoke,
            group,
            topics,
        })
    }

    /// Waits up to `timeout` seconds for one record; None if none came (or
    /// the consumer was stopped).
    #[pyo3(signature = (timeout=1.0))]
    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Record>> {
        let records = self.take(py, 1, seconds(timeout, "timeout")?)?;
        Ok(records.into_iter().next().map(|inner| Record { inner }))
    }

    /// Waits up to `timeout` seconds for records and returns at most
    /// `max_records` of them (an empty list if none came).
    #[pyo3(signature = (max_records=500, timeout=1.0))]
    fn consume<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let records = self.take(py, max_records, seconds(timeout, "timeout")?)?;
        wrap(py, records)
    }

    /// Iterates over lists of up to `max_records` records until `stop()`
    /// (empty polls are skipped).
    #[pyo3(signature = (max_records=500, timeout=1.0))]
    fn batches(slf: Py<Self>, max_records: usize, timeout: f64) -> PyResult<Batches> {
        Ok(Batches {
            consumer: slf,
            max: max_records,
            timeout: seconds(timeout, "timeout")?,
        })
    }

    /// Iterates over records one at a time until `stop()`.
    fn __iter__(slf: Py<Self>) -> Records {
        Records { consumer: slf }
    }

    /// Calls `callback(record)` for each record (or `callback(list)` for
    /// each batch, with `batch=True`) until `stop()`. An exception from the
    /// callback ends the loop and is raised here; the record it was raised
    /// for counts as not processed.
    #[pyo3(signature = (callback, batch=false, max_records=500, timeout=1.0))]
    fn run(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        batch: bool,
        max_records: usize,
        timeout: f64,
    ) -> PyResult<()> {
        let timeout = seconds(timeout, "timeout")?;
        while !self.stop.load(Ordering::Acquire) {
            let records = self.take(py, max_records, timeout)?;
            if records.is_empty() {
                continue;
            }
            let result = if batch {
                callback.call1((wrap(py, records.clone())?,)).map(drop)
            } else {
                let mut result = Ok(());
                for (i, inner) in records.iter().enumerate() {
                    if let Err(e) = callback.call1((Record {
                        inner: inner.clone(),
                    },))
                    {
                        self.unhand(py, &records[i..]);
                        result = Err(e);
                        break;
                    }
                }
                result
            };
            if let Err(e) = result {
                if batch {
                    self.unhand(py, &records);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends `run`, iterations and waits within a tenth of a second, from
    /// any thread. The consumer stays in its group until `close()`.
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether `stop()` was called.
    #[getter]
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The (topic, partition) pairs this member owns now.
    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<(String, i32)>> {
        let tps = py
            .detach(|| {
                let guard = self.member.lock().unwrap();
                guard
                    .as_ref()
                    .ok_or(riffle::Error::Closed)
                    .and_then(|m| m.consumer.assignment())
            })
            .py_err()?;
        Ok(tps.into_iter().map(|tp| (tp.topic, tp.partition)).collect())
    }

    /// Commits the offsets of the records handed out so far, and waits.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self.member.lock().unwrap();
            let m = guard.as_mut().ok_or(riffle::Error::Closed)?;
            m.store_handed();
            m.consumer.commit()
        })
        .py_err()
    }

    /// Stops, commits what was handed out, and leaves the group, so its
    /// partitions go to the other members at once (the chapter's
    /// `destroy`). Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.stop();
        py.detach(|| {
            let Some(mut m) = self.member.lock().unwrap().take() else {
                return Ok(());
            };
            m.store_handed();
            m.consumer.close()
        })
        .py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Consumer {
    /// Puts records back as not handed out, so that the ones a failed
    /// callback did not finish are not committed: they are read again by
    /// whoever consumes the partition next.
    fn unhand(&self, py: Python<'_>, records: &[riffle::log::Record]) {
        py.detach(|| {
            let mut guard = self.member.lock().unwrap();
            if let Some(m) = guard.as_mut() {
                for r in records {
                    let tp = TopicPartition::new(&r.topic, r.partition);
                    match m.handed.get(&tp) {
                        Some(&next) if next > r.offset => {
                            if r.offset == 0 {
                                m.handed.remove(&tp);
                            } else {
                                m.handed.insert(tp, r.offset);
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
    }
}

/// Records one at a time, until the consumer is stopped.
#[pyclass(module = "riffle")]
pub struct Records {
    consumer: Py<Consumer>,
}

#[pymethods]
impl Records {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Record> {
        let c = self.consumer.get();
        loop {
            if c.stop.load(Ordering::Acquire) {
                return Err(PyStopIteration::new_err(()));
            }
            if let Some(inner) = c.take(py, 1, Duration::from_secs(1))?.pop() {
                return Ok(Record { inner });
            }
        }
    }
}

/// Lists of records, until the consumer is stopped.
#[pyclass(module = "riffle")]
pub struct Batches {
    consumer: Py<Consumer>,
    max: usize,
    timeout: Duration,
}

#[pymethods]
impl Batches {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let c = self.consumer.get();
        loop {
            if c.stop.load(Ordering::Acquire) {
                return Err(PyStopIteration::new_err(()));
            }
            let records = c.take(py, self.max, self.timeout)?;
            if !records.is_empty() {
                return wrap(py, records);
            }
        }
    }
}
