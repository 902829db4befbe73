//! Python values and JSON, both ways, without going through Python's `json`
//! module: record values decode on Riffle's threads without the
//! interpreter, and outputs and states encode straight from the Python
//! objects.
//!
//! The JSON types map to Python's as `json.loads` maps them: objects to
//! `dict`, arrays to `list`, strings to `str`, integers to `int`, other
//! numbers to `float`, `true`/`false` to `bool`, `null` to `None`. Going
//! out, tuples are arrays too; dictionaries keep their insertion order;
//! keys must be strings, floats finite, and anything else is refused with a
//! message naming its type.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A Python object seen as JSON by serde.
pub struct PyJson<'a, 'py>(pub &'a Bound<'py, PyAny>);

impl Serialize for PyJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.0;
        if o.is_none() {
            return s.serialize_unit();
        }
        // bool before int: Python's bool is a subclass of int.
        if let Ok(b) = o.cast::<PyBool>() {
            return s.serialize_bool(b.is_true());
        }
        if let Ok(i) = o.cast::<PyInt>() {
            if let Ok(v) = i.extract::<i64>() {
                return s.serialize_i64(v);
            }
            if let Ok(v) = i.extract::<u64>() {
                return s.serialize_u64(v);
            }
            return Err(S::Error::custom(format!(
                "integer {i} does not fit in 64 bits"
            )));
        }
        if let Ok(f) = o.cast::<PyFloat>() {
            let v = f.value();
            if !v.is_finite() {
                return Err(S::Error::custom(format!(
                    "{v} is not a JSON number (JSON has no NaN or infinity)"
                )));
            }
            return s.serialize_f64(v);
        }
        if let Ok(t) = o.cast::<PyString>() {
            let text = &*t.to_cow().map_err(S::Error::custom)?;
            return s.serialize_str(text);
        }
        if let Ok(d) = o.cast::<PyDict>() {
            let mut map = s.serialize_map(Some(d.len()))?;
            for (k, v) in d.iter() {
                let key = k.cast::<PyString>().map_err(|_| {
                    S::Error::custom(format!(
                        "dictionary key {} is not a string (JSON object keys are)",
                        repr(&k)
                    ))
                })?;
                map.serialize_entry(&*key.to_cow().map_err(S::Error::custom)?, &PyJson(&v))?;
            }
            return map.end();
        }
        if let Ok(l) = o.cast::<PyList>() {
            let mut seq = s.serialize_seq(Some(l.len()))?;
            for v in l.iter() {
                seq.serialize_element(&PyJson(&v))?;
            }
            return seq.end();
        }
        if let Ok(t) = o.cast::<PyTuple>() {
            let mut seq = s.serialize_seq(Some(t.len()))?;
            for v in t.iter() {
                seq.serialize_element(&PyJson(&v))?;
            }
            return seq.end();
        }
        Err(S::Error::custom(format!(
            "a {} is not JSON-serializable (use dict, list, tuple, str, int, float, bool or None)",
            type_name(o)
        )))
    }
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

fn repr(o: &Bound<'_, PyAny>) -> String {
    o.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| type_name(o))
}

/// The compact JSON text of a Python object (as `json.dumps(o,
/// separators=(",", ":"))` writes it, insertion order kept).
pub fn to_vec(o: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    serde_json::to_vec(&PyJson(o)).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// A Python object as a JSON value (for state, which the state layer keeps
/// as JSON).
pub fn to_value(o: &Bound<'_, PyAny>) -> PyResult<Value> {
    serde_json::to_value(PyJson(o)).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// A JSON value as a new Python object.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// The bytes to write for a value a Python caller hands over: `bytes` as
/// they are, `str` as UTF-8, anything else as compact JSON (a `dict`, as
/// in the chapter's producer, above all).
pub fn value_bytes(o: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = o.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = o.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if o.is_instance_of::<pyo3::types::PyByteArray>() {
        return o.extract::<Vec<u8>>();
    }
    to_vec(o)
}

/// A key a Python caller hands over: `str` as UTF-8, `bytes` as they are.
pub fn key_bytes(o: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = o.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = o.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "a key must be str or bytes, not {}",
        type_name(o)
    )))
}
