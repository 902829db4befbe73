//! What Python sees of records: `Record` for a consumed one (the chapter's
//! `msg`, with attributes instead of methods), `DeliveryReport` for where
//! a produced one ended up.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::json;

/// A record read from a topic.
#[pyclass(module = "riffle", frozen)]
pub struct Record {
    pub(crate) inner: riffle::log::Record,
}

#[pymethods]
impl Record {
    #[getter]
    fn topic(&self) -> &str {
        &self.inner.topic
    }

    #[getter]
    fn partition(&self) -> i32 {
        self.inner.partition
    }

    #[getter]
    fn offset(&self) -> i64 {
        self.inner.offset
    }

    /// The key's bytes, or None for a record without a key.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.key.as_deref().map(|k| PyBytes::new(py, k))
    }

    /// The value's bytes.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.value)
    }

    /// Milliseconds since the Unix epoch, when the log knows it.
    #[getter]
    fn timestamp(&self) -> Option<i64> {
        self.inner.timestamp
    }

    /// The headers, in order, as (name, value) pairs; a value may be None.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .inner
            .headers
            .iter()
            .map(|h| {
                let value = h.value.as_deref().map(|v| PyBytes::new(py, v));
                PyTuple::new(
                    py,
                    [
                        h.name.clone().into_pyobject(py)?.into_any(),
                        value.into_pyobject(py)?.into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// The key as text (UTF-8), or None without a key.
    fn key_str(&self) -> PyResult<Option<String>> {
        self.inner
            .key
            .as_deref()
            .map(|k| {
                String::from_utf8(k.to_vec()).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err("the record's key is not UTF-8")
                })
            })
            .transpose()
    }

    /// The value decoded as JSON (what the chapter does with
    /// `json.loads(msg.value().decode('UTF8'))`).
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::parse(py, &self.inner.value).map_err(|e| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "the record's value is {}",
                e.value(py)
            ))
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Record(topic='{}', partition={}, offset={}, key={}, value={} bytes)",
            self.inner.topic,
            self.inner.partition,
            self.inner.offset,
            match &self.inner.key {
                Some(k) => format!("'{}'", String::from_utf8_lossy(k)),
                None => "None".into(),
            },
            self.inner.value.len()
        )
    }
}

/// Where a produced record ended up: its topic, partition and offset, or
/// the error that kept it out of the log.
#[pyclass(module = "riffle", frozen, get_all)]
pub struct DeliveryReport {
    topic: String,
    partition: i32,
    /// The record's offset; None if it was not delivered.
    offset: Option<i64>,
    /// Why it was not delivered; None if it was.
    error: Option<String>,
}

impl From<&riffle::log::DeliveryReport> for DeliveryReport {
    fn from(r: &riffle::log::DeliveryReport) -> Self {
        Self {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.result.as_ref().ok().copied(),
            error: r.result.as_ref().err().cloned(),
        }
    }
}

#[pymethods]
impl DeliveryReport {
    fn __repr__(&self) -> String {
        match &self.error {
            None => format!(
                "DeliveryReport(topic='{}', partition={}, offset={})",
                self.topic,
                self.partition,
                self.offset.unwrap_or(-1)
            ),
            Some(e) => format!("DeliveryReport(topic='{}', error='{e}')", self.topic),
        }
    }
}
