//! `riffle.Log`: which log to use, Kafka or the embedded one, and the
//! topic administration of example 6-3, each call returning once the
//! change shows in the log's metadata (no `sleep(3)`).
//!
//! Kafka is reached with the client settings the command-line tool reads:
//! a properties file (the `-F` file), a dictionary of librdkafka
//! properties, or both (the dictionary wins), and the bootstrap servers
//! given on their own win over both. A Kafka log pickles as its settings,
//! so it can be handed to Ray actors, which connect on their side; the
//! embedded log lives in one process and refuses to be pickled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple};
use riffle::log::embedded::{EmbeddedLog, FsyncPolicy};
use riffle::log::kafka::{KafkaLog, KafkaSettings, BOOTSTRAP_SERVERS};
use riffle::log::TopicSpec;

use crate::errors::{IntoPy, UnknownTopicError};

/// How long administration calls wait unless told otherwise.
const ADMIN_TIMEOUT: f64 = 30.0;

pub fn seconds(s: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a number of seconds >= 0, not {s}"))
    })
}

enum Kind {
    /// The settings it was made from, `bootstrap.servers` included.
    Kafka(Vec<(String, String)>),
    Embedded,
}

/// A log: Apache Kafka, or Riffle's embedded in-process log.
///
/// Make one with `Log.kafka(...)` or `Log.embedded(...)`; producers,
/// consumers and apps take it as their first argument.
#[pyclass(module = "riffle", frozen)]
pub struct Log {
    pub(crate) inner: Arc<dyn riffle::log::Log>,
    kind: Kind,
}

/// A librdkafka property value as text: Python's `True` is `true`.
fn property_text(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.into());
    }
    Ok(v.str()?.to_string())
}

#[pymethods]
impl Log {
    /// A Kafka cluster. `bootstrap_servers` is `host:port[,host:port...]`;
    /// `config` a dictionary of librdkafka properties (security, tuning);
    /// `config_file` a properties file as the command-line tool's `-F`
    /// reads it (`key=value` lines, `#` comments). Checks within 5 seconds
    /// that a broker answers, unless `check` is false.
    #[staticmethod]
    #[pyo3(signature = (bootstrap_servers=None, config=None, config_file=None, check=true))]
    fn kafka(
        py: Python<'_>,
        bootstrap_servers: Option<String>,
        config: Option<&Bound<'_, PyDict>>,
        config_file: Option<PathBuf>,
        check: bool,
    ) -> PyResult<Self> {
        let mut settings = match &config_file {
            Some(path) => KafkaSettings::from_file(path).py_err()?,
            None => KafkaSettings::new(),
        };
        if let Some(config) = config {
            for (k, v) in config.iter() {
                let key: String = k
                    .extract()
                    .map_err(|_| PyTypeError::new_err("client setting names must be str"))?;
                settings.set(key, property_text(&v)?);
            }
        }
        if let Some(servers) = bootstrap_servers {
            settings.set(BOOTSTRAP_SERVERS, servers);
        }
        if settings.bootstrap_servers().is_none() {
            return Err(PyValueError::new_err(
                "no Kafka address: give bootstrap_servers, or bootstrap.servers in config or config_file",
            ));
        }
        let all = settings.into_vec();
        let copy = all.clone();
        let log = py
            .detach(move || {
                if check {
                    KafkaLog::connect_settings(copy)
                } else {
                    KafkaLog::from_settings(copy)
                }
            })
            .py_err()?;
        Ok(Self {
            inner: Arc::new(log),
            kind: Kind::Kafka(all),
        })
    }

    /// The embedded log: in memory if `data_dir` is None, else kept in that
    /// directory (one process at a time). `fsync` is `"always"`,
    /// `"interval"` (every second, the default), `"never"`, or a number of
    /// seconds between fsyncs.
    #[staticmethod]
    #[pyo3(signature = (data_dir=None, fsync=None))]
    fn embedded(data_dir: Option<PathBuf>, fsync: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let policy = match fsync {
            None => FsyncPolicy::default(),
            Some(v) => match v.extract::<String>() {
                Ok(s) => match s.as_str() {
                    "always" => FsyncPolicy::Always,
                    "interval" => FsyncPolicy::default(),
                    "never" => FsyncPolicy::Never,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "fsync must be 'always', 'interval', 'never' or seconds, not '{other}'"
                        )))
                    }
                },
                Err(_) => FsyncPolicy::Interval(seconds(v.extract::<f64>()?, "fsync")?),
            },
        };
        let inner: Arc<dyn riffle::log::Log> = match &data_dir {
            Some(dir) => Arc::new(EmbeddedLog::open(dir, policy).py_err()?),
            None => Arc::new(EmbeddedLog::new()),
        };
        Ok(Self {
            inner,
            kind: Kind::Embedded,
        })
    }

    /// Rebuilds a Kafka log from its settings (what pickling stores).
    #[staticmethod]
    fn _from_settings(py: Python<'_>, settings: Vec<(String, String)>) -> PyResult<Self> {
        let copy = settings.clone();
        let log = py.detach(move || KafkaLog::from_settings(copy)).py_err()?;
        Ok(Self {
            inner: Arc::new(log),
            kind: Kind::Kafka(settings),
        })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        match &slf.get().kind {
            Kind::Kafka(settings) => {
                let ctor = slf.getattr("_from_settings")?;
                (ctor, (settings.clone(),)).into_pyobject(py)
            }
            Kind::Embedded => Err(PyTypeError::new_err(
                "the embedded log lives in one process and cannot be pickled (sent to a Ray actor \
                 or another process); use Log.kafka(...) there",
            )),
        }
    }

    /// `kafka HOST:PORT`, `embedded DIR` or `embedded (in memory)`.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Whether this is the embedded log.
    #[getter]
    fn is_embedded(&self) -> bool {
        matches!(self.kind, Kind::Embedded)
    }

    fn __repr__(&self) -> String {
        format!("Log({})", self.inner.describe())
    }

    /// Creates a topic and returns once the log's metadata shows it.
    /// Raises TopicExistsError if it exists, unless `exist_ok`.
    #[pyo3(signature = (name, partitions=1, replication=1, config=None, exist_ok=false, timeout=ADMIN_TIMEOUT))]
    // Python's keyword arguments, one parameter each.
    #[allow(clippy::too_many_arguments)]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: String,
        partitions: i32,
        replication: i16,
        config: Option<std::collections::BTreeMap<String, String>>,
        exist_ok: bool,
        timeout: f64,
    ) -> PyResult<()> {
        let spec = spec(name, partitions, replication, config);
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        py.detach(move || {
            if exist_ok {
                log.ensure_topic(&spec, timeout)
            } else {
                log.create_topic(&spec, timeout)
            }
        })
        .py_err()
    }

    /// Deletes a topic and returns once the log's metadata no longer shows
    /// it. Raises UnknownTopicError if there is none, unless `missing_ok`.
    #[pyo3(signature = (name, missing_ok=false, timeout=ADMIN_TIMEOUT))]
    fn delete_topic(
        &self,
        py: Python<'_>,
        name: String,
        missing_ok: bool,
        timeout: f64,
    ) -> PyResult<()> {
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        match py.detach(move || log.delete_topic(&name, timeout)) {
            Err(riffle::Error::UnknownTopic(_)) if missing_ok => Ok(()),
            r => r.py_err(),
        }
    }

    /// Deletes the topic if it exists and creates it anew: example 6-3's
    /// `setup_topics`, waiting on metadata instead of sleeping.
    #[pyo3(signature = (name, partitions=1, replication=1, config=None, timeout=ADMIN_TIMEOUT))]
    fn recreate_topic(
        &self,
        py: Python<'_>,
        name: String,
        partitions: i32,
        replication: i16,
        config: Option<std::collections::BTreeMap<String, String>>,
        timeout: f64,
    ) -> PyResult<()> {
        let spec = spec(name, partitions, replication, config);
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        py.detach(move || log.recreate_topic(&spec, timeout))
            .py_err()
    }

    /// Every topic, sorted by name (internal ones left out).
    #[pyo3(signature = (timeout=ADMIN_TIMEOUT))]
    fn list_topics(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<TopicInfo>> {
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        let topics = py.detach(move || log.list_topics(timeout)).py_err()?;
        Ok(topics.into_iter().map(TopicInfo::from).collect())
    }

    /// One topic's partitions: leader, replicas, first and next offsets.
    #[pyo3(signature = (name, timeout=ADMIN_TIMEOUT))]
    fn describe_topic(&self, py: Python<'_>, name: String, timeout: f64) -> PyResult<TopicInfo> {
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        match py.detach(move || log.describe_topic(&name, timeout)) {
            Ok(t) => Ok(TopicInfo::from(t)),
            Err(riffle::Error::UnknownTopic(t)) => {
                Err(UnknownTopicError::new_err(format!("unknown topic '{t}'")))
            }
            Err(e) => Err(crate::errors::to_py(e)),
        }
    }

    /// A group's committed offsets on a topic: partition -> next offset to
    /// read, or None where it has committed nothing.
    #[pyo3(signature = (group, topic, timeout=ADMIN_TIMEOUT))]
    fn committed_offsets(
        &self,
        py: Python<'_>,
        group: String,
        topic: String,
        timeout: f64,
    ) -> PyResult<std::collections::BTreeMap<i32, Option<i64>>> {
        let (log, timeout) = (self.inner.clone(), seconds(timeout, "timeout")?);
        let offsets = py
            .detach(move || log.committed_offsets(&group, &topic, timeout))
            .py_err()?;
        Ok(offsets
            .into_iter()
            .map(|o| (o.partition.partition, o.committed))
            .collect())
    }
}

fn spec(
    name: String,
    partitions: i32,
    replication: i16,
    config: Option<std::collections::BTreeMap<String, String>>,
) -> TopicSpec {
    let mut spec = TopicSpec::new(name, partitions);
    spec.replication = replication;
    spec.configs = config.unwrap_or_default().into_iter().collect();
    spec
}

/// A partition as the log describes it.
#[pyclass(module = "riffle", frozen, get_all)]
pub struct PartitionInfo {
    id: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Offset of the first record still in the log.
    low: i64,
    /// Offset the next record will get.
    high: i64,
}

#[pymethods]
impl PartitionInfo {
    fn __repr__(&self) -> String {
        format!(
            "PartitionInfo(id={}, leader={}, low={}, high={})",
            self.id, self.leader, self.low, self.high
        )
    }
}

/// A topic as the log describes it.
#[pyclass(module = "riffle", frozen)]
pub struct TopicInfo {
    #[pyo3(get)]
    name: String,
    parts: Vec<riffle::log::PartitionInfo>,
}

#[pymethods]
impl TopicInfo {
    #[getter]
    fn partitions(&self) -> Vec<PartitionInfo> {
        self.parts
            .iter()
            .map(|p| PartitionInfo {
                id: p.id,
                leader: p.leader,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                low: p.low,
                high: p.high,
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "TopicInfo(name='{}', partitions={})",
            self.name,
            self.parts.len()
        )
    }
}

impl From<riffle::log::TopicInfo> for TopicInfo {
    fn from(t: riffle::log::TopicInfo) -> Self {
        Self {
            name: t.name,
            parts: t.partitions,
        }
    }
}
