//! Apps with Python processors: Riffle's `App` runs them, so the consumer
//! groups, the two styles, the commit protocols of both guarantees, the
//! state layer and the dead-letter topic are Riffle's own; only the
//! function called per record is Python.
//!
//! - `map`, `filter`, `flat_map`: Riffle's stateless steps around a Python
//!   function. An exception sends the record to the dead-letter topic at
//!   once (a stateless step is not retried).
//! - `keyed`: a `KeyedProcessor` whose per-key state is kept as JSON, the
//!   form the state layer writes to the changelog and to snapshots: the
//!   Python function gets it as Python objects (`dict`, `list`, `str`,
//!   numbers, `bool`, None for a new key) and returns the new state, which
//!   must be JSON-serializable. The state changes only when the function
//!   returns, so a failed attempt leaves it as it was. An exception is
//!   retried like a Rust processor's error, then dead-lettered with the
//!   exception's type and message as the reason.
//!
//! Values are checked on Riffle's consumer threads without the interpreter
//! (JSON by default; `codec="bytes"` hands the bytes over as they are), so
//! a record that is not JSON is dead-lettered without calling Python; they
//! are parsed into Python objects when the function is called.
//!
//! What a record costs in Python is kept to the call itself: the keyed
//! processor holds the interpreter across a batch of records (a poll's, or
//! a worker's batch; `KeyedProcessor::begin_batch`), rather than taking it
//! per record, and keeps each key's state as the Python object the
//! function returned, so that no state is converted to or from Python per
//! record: only its JSON is written, once per record, for the changelog.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use riffle::log::{OffsetReset, OwnedHeader, RecordRef};
use riffle::process::{stateless, App as RustApp, Context, Guarantee, KeyedProcessor, Style};
use riffle::Error;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::errors::{describe, ClosedError, IntoPy};
use crate::json;
use crate::log::{seconds, Log};
use crate::producer::headers_from;

/// How a record's value reaches the Python function.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// Decoded from JSON into Python objects.
    Json,
    /// As `bytes`.
    Bytes,
}

impl Codec {
    fn parse(s: &str) -> PyResult<Self> {
        match s {
            "json" => Ok(Codec::Json),
            "bytes" => Ok(Codec::Bytes),
            other => Err(PyValueError::new_err(format!(
                "codec must be 'json' or 'bytes', not '{other}'"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Bytes => "bytes",
        }
    }
}

/// A record's value as the Python function gets it.
enum Decoded {
    /// Parsed already, into Python objects: decoded on a thread inside a
    /// batch, which holds the interpreter anyway (the key-based style).
    Parsed(Attached),
    /// Checked as the codec says, to be parsed (JSON) or handed over as
    /// bytes when the function is called.
    Checked { codec: Codec, bytes: Vec<u8> },
}

impl Decoded {
    /// Checks the value without the interpreter (a consumer thread of the
    /// key-independent style must not wait for it): a value that is not
    /// JSON fails here, as a decode error, not in the Python call.
    fn new(codec: Codec, value: &[u8]) -> riffle::Result<Self> {
        if codec == Codec::Json {
            json::check(value).map_err(|e| Error::Decode(format!("not JSON: {e}")))?;
        }
        Ok(Decoded::Checked {
            codec,
            bytes: value.to_vec(),
        })
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_py_with(py, None)
    }

    /// [`Decoded::to_py`], objects' keys made through `keys`.
    fn to_py_with<'py>(
        &self,
        py: Python<'py>,
        keys: Option<&mut json::Keys>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Decoded::Parsed(o) => Ok(o.0.bind(py).clone()),
            Decoded::Checked {
                codec: Codec::Json,
                bytes,
            } => json::parse_with(py, bytes, keys),
            Decoded::Checked { bytes, .. } => Ok(PyBytes::new(py, bytes).into_any()),
        }
    }
}

/// A Python object that a Riffle thread may drop outside `attach`: inside
/// a batch the drop attaches (nested, so it costs no lock) and the
/// reference goes at once, where PyO3 would otherwise queue it for later.
struct Attached(std::mem::ManuallyDrop<Py<PyAny>>);

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; not used again.
        let o = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        if in_batch() {
            attach(|_| drop(o));
        }
    }
}

/// A Python callable shared by the clones of a processor (one per worker
/// and consumer), cloned without the interpreter.
type Function = Arc<Py<PyAny>>;

/// `Python::attach` for Riffle's threads, which call into the interpreter
/// once per record. A thread the interpreter did not create gets a thread
/// state for each attach, and loses it again at the end; the first call here
/// makes one that stays (taking and at once releasing the interpreter), so
/// later attaches only take and release the interpreter lock.
fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    keep_thread_state();
    Python::attach(f)
}

/// Gives a Riffle thread a thread state of its own that outlives its
/// attaches (see [`attach`]), the first time only.
fn keep_thread_state() {
    thread_local! {
        static KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    KEPT.with(|kept| {
        if !kept.get() {
            // SAFETY: called outside any attach on this thread (processors
            // run on Riffle's own threads), with the interpreter running
            // (the module is loaded; apps are stopped before it exits).
            // Ensure takes the lock with a new thread state; SaveThread
            // releases the lock and keeps the state, whose count stays at
            // one, so that later Ensure/Release pairs neither make nor
            // delete one.
            unsafe {
                pyo3::ffi::PyGILState_Ensure();
                pyo3::ffi::PyEval_SaveThread();
            }
            kept.set(true);
        }
    });
}

thread_local! {
    /// The interpreter lock this thread holds across a batch of records
    /// ([`begin_batch`]), if it does. Released when the thread ends, should
    /// a batch never have been ended.
    static BATCH: Batch = const { Batch(std::cell::Cell::new(None)) };
}

struct Batch(std::cell::Cell<Option<ffi::PyGILState_STATE>>);

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            // SAFETY: the matching `PyGILState_Ensure` ran on this thread.
            unsafe { ffi::PyGILState_Release(state) };
        }
    }
}

/// Takes the interpreter lock for this thread until [`end_batch`], so that
/// the batch's records take it once rather than each: their `attach`es
/// nest inside it, which costs no lock. Calls into Python release it now
/// and then as they always do (the interpreter's switch interval), so
/// other Python threads still run during a long batch.
fn begin_batch() {
    keep_thread_state();
    BATCH.with(|b| {
        if b.0.get().is_none() {
            // SAFETY: as in `attach`: a Riffle thread, the interpreter
            // running; released on this thread by `end_batch` (or when the
            // thread ends).
            b.0.set(Some(unsafe { ffi::PyGILState_Ensure() }));
        }
    });
}

/// Whether this thread holds the interpreter for a batch.
fn in_batch() -> bool {
    BATCH.try_with(|b| b.0.get().is_some()).unwrap_or(false)
}

/// Releases the lock [`begin_batch`] took, before Riffle's thread waits,
/// commits or restores state.
fn end_batch() {
    // `try_with`: not at all once the thread's locals are gone.
    let _ = BATCH.try_with(|b| {
        if let Some(state) = b.0.take() {
            // SAFETY: the matching `PyGILState_Ensure` ran on this thread.
            unsafe { ffi::PyGILState_Release(state) };
        }
    });
}

/// A Python exception as Riffle's error: its text becomes the reason in
/// the dead letter.
fn raised(py: Python<'_>, e: PyErr) -> Error {
    let text = describe(py, &e);
    if tracing::enabled!(tracing::Level::DEBUG) {
        e.print(py);
    }
    Error::Raised(text)
}

/// A processor, as `riffle.map`, `filter`, `flat_map` and `keyed` make it,
/// for `App`.
#[pyclass(module = "riffle", frozen)]
pub struct Processor {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Map {
        to: String,
        f: Function,
        codec: Codec,
    },
    Filter {
        to: String,
        f: Function,
        codec: Codec,
    },
    FlatMap {
        to: String,
        f: Function,
        codec: Codec,
    },
    Keyed(KeyedSpec),
}

#[pymethods]
impl Processor {
    /// Pickles as the call that made it, so that an app's processor can be
    /// handed to a Ray actor (Ray pickles functions by value).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let module = py.import("riffle")?;
        match &self.kind {
            Kind::Map { to, f, codec }
            | Kind::Filter { to, f, codec }
            | Kind::FlatMap { to, f, codec } => {
                let name = match &self.kind {
                    Kind::Map { .. } => "map",
                    Kind::Filter { .. } => "filter",
                    _ => "flat_map",
                };
                let args = (to.clone(), f.clone_ref(py), codec.name());
                (module.getattr(name)?, args).into_pyobject(py)
            }
            Kind::Keyed(k) => {
                let args = (k.f.clone_ref(py), k.codec.name(), k.key_field.clone());
                (module.getattr("keyed")?, args).into_pyobject(py)
            }
        }
    }

    fn __repr__(&self) -> String {
        match &self.kind {
            Kind::Map { to, .. } => format!("map(to='{to}')"),
            Kind::Filter { to, .. } => format!("filter(to='{to}')"),
            Kind::FlatMap { to, .. } => format!("flat_map(to='{to}')"),
            Kind::Keyed(_) => "keyed(...)".into(),
        }
    }
}

/// Encodes what a stateless function returned as one output.
fn output(key: Option<&[u8]>, item: &Bound<'_, PyAny>) -> PyResult<stateless::Output> {
    Ok(stateless::Output::new(
        key.map(<[u8]>::to_vec),
        json::value_bytes(item)?,
    ))
}

/// One output per input: `f(value)` becomes the value, the key kept. The
/// result is written as `Producer.produce` writes values: bytes as they
/// are, str as UTF-8, anything else as compact JSON.
#[pyfunction]
#[pyo3(signature = (to, f, codec="json"))]
pub fn map(to: String, f: Py<PyAny>, codec: &str) -> PyResult<Processor> {
    Ok(Processor {
        kind: Kind::Map {
            to,
            f: Arc::new(f),
            codec: Codec::parse(codec)?,
        },
    })
}

/// The records for which `f(value)` is true, unchanged.
#[pyfunction]
#[pyo3(signature = (to, f, codec="json"))]
pub fn filter(to: String, f: Py<PyAny>, codec: &str) -> PyResult<Processor> {
    Ok(Processor {
        kind: Kind::Filter {
            to,
            f: Arc::new(f),
            codec: Codec::parse(codec)?,
        },
    })
}

/// Zero or more outputs per input: `f(value)` returns an iterable whose
/// items are values (written with the input's key) or `(key, value)`
/// tuples.
#[pyfunction]
#[pyo3(signature = (to, f, codec="json"))]
pub fn flat_map(to: String, f: Py<PyAny>, codec: &str) -> PyResult<Processor> {
    Ok(Processor {
        kind: Kind::FlatMap {
            to,
            f: Arc::new(f),
            codec: Codec::parse(codec)?,
        },
    })
}

/// A processor with state per key: `f(key, value, state, ctx)` returns the
/// key's new state. The key is the record's key (UTF-8); records without
/// one take it from the JSON field `key_field` of their value if given,
/// and are dead-lettered otherwise.
#[pyfunction]
#[pyo3(signature = (f, codec="json", key_field=None))]
pub fn keyed(f: Py<PyAny>, codec: &str, key_field: Option<String>) -> PyResult<Processor> {
    let codec = Codec::parse(codec)?;
    if key_field.is_some() && codec != Codec::Json {
        return Err(PyValueError::new_err("key_field needs codec='json'"));
    }
    Ok(Processor {
        kind: Kind::Keyed(KeyedSpec {
            f: Arc::new(f),
            codec,
            key_field,
        }),
    })
}

/// Riffle's stateless step around a Python function.
fn stateless_step(kind: &Kind) -> stateless::Stateless {
    match kind.clone() {
        Kind::Map { to, f, codec } => stateless::flat_map(&to, move |r, out| {
            let value = Decoded::new(codec, r.value)?;
            attach(|py| {
                let mut call = || -> PyResult<()> {
                    let result = f.call1(py, (value.to_py(py)?,))?;
                    out.push(output(r.key, result.bind(py))?);
                    Ok(())
                };
                call().map_err(|e| raised(py, e))
            })
        }),
        Kind::Filter { to, f, codec } => stateless::flat_map(&to, move |r, out| {
            let value = Decoded::new(codec, r.value)?;
            let keep = attach(|py| {
                value
                    .to_py(py)
                    .and_then(|v| f.call1(py, (v,)))
                    .and_then(|v| v.bind(py).is_truthy())
                    .map_err(|e| raised(py, e))
            })?;
            if keep {
                out.push(stateless::Output::new(
                    r.key.map(<[u8]>::to_vec),
                    r.value.to_vec(),
                ));
            }
            Ok(())
        }),
        Kind::FlatMap { to, f, codec } => stateless::flat_map(&to, move |r, out| {
            let value = Decoded::new(codec, r.value)?;
            attach(|py| {
                let mut call = || -> PyResult<()> {
                    let result = f.call1(py, (value.to_py(py)?,))?;
                    for item in result.bind(py).try_iter()? {
                        let item = item?;
                        match item.cast::<PyTuple>() {
                            Ok(t) if t.len() == 2 => {
                                let key = t.get_item(0)?;
                                let key = if key.is_none() {
                                    None
                                } else {
                                    Some(json::key_bytes(&key)?)
                                };
                                out.push(output(key.as_deref(), &t.get_item(1)?)?);
                            }
                            _ => out.push(output(r.key, &item)?),
                        }
                    }
                    Ok(())
                };
                call().map_err(|e| raised(py, e))
            })
        }),
        Kind::Keyed(_) => unreachable!("keyed processors are not stateless"),
    }
}

/// What `riffle.keyed` was given.
#[derive(Clone)]
struct KeyedSpec {
    f: Function,
    codec: Codec,
    key_field: Option<String>,
}

/// The keyed processor: per-key state as JSON, the function in Python.
/// One per consumer or worker thread (cloned), with tables of its own.
#[derive(Clone)]
struct PyKeyed {
    spec: KeyedSpec,
    /// Where a returned state is encoded before it replaces the key's
    /// JSON (swapped with it: no allocation per record once warm).
    encoded: Vec<u8>,
    /// The keys of the values' and states' objects, as Python strings.
    keys: RefCell<json::Keys>,
}

/// A key's state as the state layer keeps it: the JSON of what the
/// function last returned, which the changelog and snapshots get and a
/// failed call falls back to, and that same return value as a Python
/// object, handed to the key's next call as it is. So a state is neither
/// built from nor converted to Python objects per record: only encoded,
/// which also checks that it is JSON.
///
/// The object is the key's own between its calls: changed after its call
/// returned (kept elsewhere and modified), it would reach the key's next
/// call but not the changelog.
#[derive(Default)]
struct PyState {
    /// Compact JSON; empty for a key that has no state yet (None).
    json: Vec<u8>,
    /// `json` as a Python object; None until the key's first call after
    /// a restore or a failed call, which builds it from `json`.
    object: Option<Py<PyAny>>,
}

impl PyState {
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.object {
            Some(o) => Ok(o.bind(py).clone()),
            None if self.json.is_empty() => Ok(py.None().into_bound(py)),
            None => json::parse(py, &self.json),
        }
    }
}

impl Serialize for PyState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.json.is_empty() {
            return s.serialize_unit();
        }
        let raw: &RawValue = serde_json::from_slice(&self.json).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PyState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<Box<RawValue>>::deserialize(d)?;
        Ok(PyState {
            json: raw.map_or_else(Vec::new, |r| String::from(Box::<str>::from(r)).into_bytes()),
            object: None,
        })
    }
}

impl KeyedProcessor for PyKeyed {
    type Input = Decoded;
    type State = PyState;

    fn decode(&self, record: &RecordRef<'_>) -> riffle::Result<(String, Decoded)> {
        let value = if self.spec.codec == Codec::Json && in_batch() {
            // The interpreter is held for the batch: parse once, now.
            attach(|py| {
                json::parse_with(py, record.value, Some(&mut *self.keys.borrow_mut()))
                    .map(|o| Decoded::Parsed(Attached(std::mem::ManuallyDrop::new(o.unbind()))))
                    .map_err(|e| Error::Decode(e.value(py).to_string()))
            })?
        } else {
            Decoded::new(self.spec.codec, record.value)?
        };
        let key = match record.key {
            Some(k) => std::str::from_utf8(k)
                .map_err(|_| Error::Decode("the key is not UTF-8".into()))?
                .to_owned(),
            None => match &self.spec.key_field {
                Some(field) => key_field(record.value, field)?,
                None => return Err(Error::Decode("the record has no key".into())),
            },
        };
        Ok((key, value))
    }

    fn begin_batch(&mut self) {
        begin_batch();
    }

    fn end_batch(&mut self) {
        end_batch();
    }

    fn process(
        &mut self,
        key: &str,
        input: &Decoded,
        state: &mut PyState,
        ctx: &mut Context<'_>,
    ) -> riffle::Result<()> {
        let encoded = &mut self.encoded;
        let outputs = attach(|py| {
            let mut call = || -> PyResult<Vec<Out>> {
                let pctx = Bound::new(
                    py,
                    PyContext {
                        topic: ctx.topic().to_owned(),
                        partition: ctx.partition(),
                        offset: ctx.offset(),
                        timestamp: ctx.timestamp(),
                        outputs: Mutex::new(Some(Vec::new())),
                    },
                )?;
                // Parsed here in the key-independent style, whose
                // consumer threads only check it.
                let value = input.to_py_with(py, Some(&mut *self.keys.borrow_mut()))?;
                let result = self.spec.f.call1(py, (key, value, state.to_py(py)?, &pctx));
                let outputs = pctx
                    .get()
                    .outputs
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_default();
                let result = result?;
                encoded.clear();
                let state_json = json::PyJson::with_keys(result.bind(py), &self.keys);
                serde_json::to_writer(&mut *encoded, &state_json).map_err(|e| {
                    PyTypeError::new_err(format!("the state returned for key '{key}': {e}"))
                })?;
                std::mem::swap(&mut state.json, encoded);
                state.object = Some(result);
                Ok(outputs)
            };
            call().map_err(|e| {
                // The function may have changed the object before it
                // failed: the next attempt starts from the JSON.
                state.object = None;
                raised(py, e)
            })
        })?;
        for o in outputs {
            ctx.send_with_headers(&o.topic, o.key.as_deref(), &o.value, &o.headers)?;
        }
        Ok(())
    }
}

/// The key of a record without one: the string field `field` of its JSON
/// value.
fn key_field(value: &[u8], field: &str) -> riffle::Result<String> {
    let v: Value =
        serde_json::from_slice(value).map_err(|e| Error::Decode(format!("not JSON: {e}")))?;
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::Decode(format!(
            "no key, and no string field '{field}' in the value"
        ))),
    }
}

/// A record a keyed processor sends.
struct Out {
    topic: String,
    key: Option<String>,
    value: Vec<u8>,
    headers: Vec<OwnedHeader>,
}

/// What a keyed processor's function gets besides the key, value and
/// state: where the record came from, and `send` for outputs.
#[pyclass(module = "riffle", frozen, name = "Context")]
pub struct PyContext {
    #[pyo3(get)]
    topic: String,
    #[pyo3(get)]
    partition: i32,
    #[pyo3(get)]
    offset: i64,
    #[pyo3(get)]
    timestamp: Option<i64>,
    /// None once the function has returned.
    outputs: Mutex<Option<Vec<Out>>>,
}

#[pymethods]
impl PyContext {
    /// Sends a record to `topic`, written with the state it led to (in one
    /// transaction under exactly-once). `value` is bytes, str or anything
    /// JSON-serializable (compact JSON); `key` a str.
    #[pyo3(signature = (topic, value, key=None, headers=None))]
    fn send(
        &self,
        topic: String,
        value: &Bound<'_, PyAny>,
        key: Option<String>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let out = Out {
            topic,
            key,
            value: json::value_bytes(value)?,
            headers: headers_from(headers)?,
        };
        match self.outputs.lock().unwrap().as_mut() {
            Some(list) => {
                list.push(out);
                Ok(())
            }
            None => Err(ClosedError::new_err(
                "this context belongs to a record already processed",
            )),
        }
    }
}

/// An app: a processor over input topics, in a style, under a guarantee.
#[pyclass(module = "riffle", frozen)]
pub struct App {
    log: Arc<dyn riffle::log::Log>,
    group: String,
    inputs: Vec<String>,
    kind: Kind,
    style: Style,
    consumers: usize,
    guarantee: Guarantee,
    dead_letter: Option<String>,
    offset_reset: OffsetReset,
    commit_interval: Option<Duration>,
    state_dir: Option<std::path::PathBuf>,
    instance: Option<String>,
    retries: u32,
    session_timeout: Duration,
    repartition: Option<String>,
}

/// Every app started in this process and not yet stopped, so that they
/// can be stopped before the interpreter exits (their threads call into
/// it).
static RUNNING: Mutex<Vec<Weak<Mutex<Option<riffle::process::Running>>>>> = Mutex::new(Vec::new());

#[pymethods]
impl App {
    /// An app reading `inputs` (a topic or a list) as consumer group
    /// `group` with `processor`.
    ///
    /// `style` is "keyed" (state in the consumer owning the partition) or
    /// "actors" (per-key actors on `workers` threads); `guarantee`
    /// "at-least-once" or "exactly-once"; `dead_letter` the topic failed
    /// records go to (created if missing); `state_dir` where partition
    /// snapshots are kept; `instance` a name for this process, stable
    /// across its restarts (under exactly-once it fences the transactions
    /// of a killed predecessor at once).
    #[new]
    #[pyo3(signature = (log, group, inputs, processor, *, style="keyed", workers=4, consumers=1, guarantee="at-least-once", dead_letter=None, offset_reset="earliest", commit_interval=None, state_dir=None, instance=None, retries=2, session_timeout=10.0, repartition=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        log: &Log,
        group: String,
        inputs: &Bound<'_, PyAny>,
        processor: &Processor,
        style: &str,
        workers: usize,
        consumers: usize,
        guarantee: &str,
        dead_letter: Option<String>,
        offset_reset: &str,
        commit_interval: Option<f64>,
        state_dir: Option<std::path::PathBuf>,
        instance: Option<String>,
        retries: u32,
        session_timeout: f64,
        repartition: Option<String>,
    ) -> PyResult<Self> {
        let inputs: Vec<String> = match inputs.extract::<String>() {
            Ok(t) => vec![t],
            Err(_) => inputs.extract()?,
        };
        let style = match style {
            "keyed" => Style::Keyed,
            "actors" => Style::Actors { workers },
            other => {
                return Err(PyValueError::new_err(format!(
                    "style must be 'keyed' or 'actors', not '{other}'"
                )))
            }
        };
        Ok(Self {
            log: log.inner.clone(),
            group,
            inputs,
            kind: processor.kind.clone(),
            style,
            consumers,
            guarantee: guarantee.parse::<Guarantee>().py_err()?,
            dead_letter,
            offset_reset: offset_reset.parse::<OffsetReset>().py_err()?,
            commit_interval: commit_interval
                .map(|s| seconds(s, "commit_interval"))
                .transpose()?,
            state_dir,
            instance,
            retries,
            session_timeout: seconds(session_timeout, "session_timeout")?,
            repartition,
        })
    }

    /// Checks the topics (creating the changelog and dead-letter topics if
    /// missing) and starts consuming on Riffle's threads; returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<RunningApp> {
        let running = py
            .detach(|| match &self.kind {
                Kind::Keyed(k) => self.launch(PyKeyed {
                    spec: k.clone(),
                    encoded: Vec::new(),
                    keys: RefCell::default(),
                }),
                other => self.launch(stateless_step(other)),
            })
            .py_err()?;
        let inner = Arc::new(Mutex::new(Some(running)));
        let mut all = RUNNING.lock().unwrap();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&inner));
        Ok(RunningApp { inner })
    }
}

impl App {
    fn launch<P: KeyedProcessor>(&self, processor: P) -> riffle::Result<riffle::process::Running> {
        let inputs: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        let mut app = RustApp::new(&self.group, &inputs, processor)
            .style(self.style)
            .consumers(self.consumers)
            .guarantee(self.guarantee)
            .offset_reset(self.offset_reset)
            .retries(self.retries)
            .session_timeout(self.session_timeout);
        if let Some(d) = &self.dead_letter {
            app = app.dead_letter(d);
        }
        if let Some(i) = self.commit_interval {
            app = app.commit_interval(i);
        }
        if let Some(d) = &self.state_dir {
            app = app.state_dir(d);
        }
        if let Some(i) = &self.instance {
            app = app.instance(i);
        }
        if let Some(r) = &self.repartition {
            app = app.repartition(r);
        }
        app.start(self.log.clone())
    }
}

/// A started app.
#[pyclass(module = "riffle", frozen)]
pub struct RunningApp {
    inner: Arc<Mutex<Option<riffle::process::Running>>>,
}

impl RunningApp {
    fn with<T>(&self, f: impl FnOnce(&riffle::process::Running) -> T) -> PyResult<T> {
        match self.inner.lock().unwrap().as_ref() {
            Some(r) => Ok(f(r)),
            None => Err(ClosedError::new_err("the app has stopped")),
        }
    }
}

/// Stops a running app, without the interpreter: its threads may be
/// waiting for it to call the processor.
fn stop_running(inner: &Mutex<Option<riffle::process::Running>>) -> riffle::Result<()> {
    let running = inner.lock().unwrap().take();
    match running {
        Some(r) => r.stop(),
        None => Ok(()),
    }
}

#[pymethods]
impl RunningApp {
    /// Finishes the records in flight, commits what they sent and leaves
    /// the group. Stopping twice does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(move || stop_running(&inner)).py_err()
    }

    /// Whether the app still runs.
    #[getter]
    fn running(&self) -> bool {
        self.inner.lock().unwrap().is_some()
    }

    /// Counters: records processed, records sent, dead letters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let (processed, sent, dead) = self.with(|r| {
            let s = r.stats();
            (
                s.processed.load(Relaxed),
                s.sent.load(Relaxed),
                s.dead_letters.load(Relaxed),
            )
        })?;
        let d = PyDict::new(py);
        d.set_item("processed", processed)?;
        d.set_item("sent", sent)?;
        d.set_item("dead_letters", dead)?;
        Ok(d)
    }

    /// Each consumer's name and its (topic, partition) pairs.
    fn assignments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let all = self.with(|r| r.assignments())?;
        let items = all
            .into_iter()
            .map(|(name, tps)| {
                let tps: Vec<(String, i32)> =
                    tps.into_iter().map(|tp| (tp.topic, tp.partition)).collect();
                (name, tps)
            })
            .collect::<Vec<_>>();
        PyList::new(py, items)
    }

    /// Waits up to `timeout` seconds until this process's consumers own
    /// every input partition (the group has settled, and no other process
    /// shares it).
    #[pyo3(signature = (timeout=30.0))]
    fn wait_assigned(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds(timeout, "timeout")?;
        let inner = self.inner.clone();
        // In short waits, so that `stop` and `stats` from other threads
        // need not wait for this one.
        py.detach(move || {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let slice = Duration::from_millis(50);
                let result = match inner.lock().unwrap().as_ref() {
                    Some(r) => r.wait_assigned(slice),
                    None => Err(Error::Closed),
                };
                match result {
                    Err(Error::Timeout(why)) if std::time::Instant::now() < deadline => {
                        let _ = why;
                    }
                    Err(Error::Timeout(_)) => {
                        let owned: usize = inner.lock().unwrap().as_ref().map_or(0, |r| {
                            r.assignments().iter().map(|(_, p)| p.len()).sum()
                        });
                        return Err(Error::Timeout(format!(
                            "the app's consumers own {owned} partitions, not all of its inputs', after {timeout:?}"
                        )));
                    }
                    other => return other,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }
}

/// Stops every app still running; registered with `atexit`, so that no
/// Riffle thread calls into an interpreter that is shutting down.
#[pyfunction]
pub fn _shutdown(py: Python<'_>) {
    let all: Vec<_> = RUNNING.lock().unwrap().drain(..).collect();
    py.detach(move || {
        for app in all.iter().filter_map(Weak::upgrade) {
            if let Err(e) = stop_running(&app) {
                tracing::warn!("stopping an app at exit: {e}");
            }
        }
    });
}
