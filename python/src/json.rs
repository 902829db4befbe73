//! Python values and JSON, both ways, without going through Python's `json`
//! module: JSON text parses straight into Python objects (no intermediate
//! tree), and outputs and states encode straight from the Python objects.
//!
//! The JSON types map to Python's as `json.loads` maps them: objects to
//! `dict`, arrays to `list`, strings to `str`, integers to `int`, other
//! numbers to `float`, `true`/`false` to `bool`, `null` to `None`. Going
//! out, tuples are arrays too; dictionaries keep their insertion order;
//! keys must be strings, floats finite, and anything else is refused with a
//! message naming its type.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Entries per direction of a [`Keys`] table.
const KEYS: usize = 64;

/// The keys of JSON objects as Python strings, both ways, for the
/// processor of one thread, whose records' objects repeat the same few
/// keys: parsing makes each key's string once (interned, so that the
/// function's own literals such as `msg["measurement"]` find it by
/// identity) rather than per object, and encoding reads a known string's
/// text without asking the interpreter, which under the stable ABI of
/// Python 3.9 would encode it into a new bytes object each time. Two small
/// direct-mapped tables: a key that lands on another's slot replaces it,
/// so any number of distinct keys costs at most the tables.
pub struct Keys {
    /// By text: a hash of the key's bytes picks the slot.
    by_text: Vec<Option<(Box<str>, Py<PyString>)>>,
    /// By object: the string's address picks the slot (the entry holds a
    /// reference, so the address is the same string's while it is there).
    by_object: Vec<Option<(Py<PyString>, Arc<str>)>>,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            by_text: (0..KEYS).map(|_| None).collect(),
            by_object: (0..KEYS).map(|_| None).collect(),
        }
    }
}

impl Clone for Keys {
    /// Empty: each clone of a processor runs on a thread of its own.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Keys {
    fn text_slot(text: &str) -> usize {
        // FNV-1a: keys are short, and any spread will do.
        let mut h: u32 = 0x811c_9dc5;
        for b in text.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h as usize % KEYS
    }

    fn object_slot(o: &Bound<'_, PyString>) -> usize {
        // Fibonacci hashing: addresses share their low bits (alignment)
        // and often their high ones; the product's top bits mix them all.
        ((o.as_ptr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % KEYS
    }

    /// The (interned) string for a key being parsed.
    fn string<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        let slot = &mut self.by_text[Self::text_slot(text)];
        if let Some((t, o)) = slot {
            if **t == *text {
                return o.bind(py).clone();
            }
        }
        let o = PyString::intern(py, text);
        *slot = Some((text.into(), o.clone().unbind()));
        o
    }

    /// The text of a dictionary key being encoded.
    fn text(&mut self, key: &Bound<'_, PyString>) -> PyResult<Arc<str>> {
        let slot = &mut self.by_object[Self::object_slot(key)];
        if let Some((o, t)) = slot {
            if o.as_ptr() == key.as_ptr() {
                return Ok(t.clone());
            }
        }
        let text: Arc<str> = (*key.to_cow()?).into();
        *slot = Some((key.clone().unbind(), text.clone()));
        Ok(text)
    }
}

/// A Python object seen as JSON by serde.
pub struct PyJson<'a, 'py>(pub &'a Bound<'py, PyAny>, pub Option<&'a RefCell<Keys>>);

impl<'a, 'py> PyJson<'a, 'py> {
    /// `o` as JSON, its dictionaries' keys read through `keys`.
    pub fn with_keys(o: &'a Bound<'py, PyAny>, keys: &'a RefCell<Keys>) -> Self {
        PyJson(o, Some(keys))
    }
}

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
                let value = PyJson(&v, self.1);
                match self.1 {
                    Some(keys) => {
                        // Not borrowed while the value is encoded: its
                        // dictionaries use the table too.
                        let text = keys.borrow_mut().text(key).map_err(S::Error::custom)?;
                        map.serialize_entry(&*text, &value)?
                    }
                    None => {
                        map.serialize_entry(&*key.to_cow().map_err(S::Error::custom)?, &value)?
                    }
                }
            }
            return map.end();
        }
        if let Ok(l) = o.cast::<PyList>() {
            let mut seq = s.serialize_seq(Some(l.len()))?;
            for v in l.iter() {
                seq.serialize_element(&PyJson(&v, self.1))?;
            }
            return seq.end();
        }
        if let Ok(t) = o.cast::<PyTuple>() {
            let mut seq = s.serialize_seq(Some(t.len()))?;
            for v in t.iter() {
                seq.serialize_element(&PyJson(&v, self.1))?;
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
    serde_json::to_vec(&PyJson(o, None)).map_err(|e| PyTypeError::new_err(e.to_string()))
}

/// JSON text as new Python objects, parsed straight into them: a record's
/// value costs no tree of its own on the way.
pub fn parse<'py>(py: Python<'py>, text: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    parse_with(py, text, None)
}

/// [`parse`], the objects' keys made through `keys`.
pub fn parse_with<'py>(
    py: Python<'py>,
    text: &[u8],
    keys: Option<&mut Keys>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Build(py, keys)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| PyValueError::new_err(format!("not JSON: {e}")))?;
    Ok(value)
}

/// Checks that `text` is JSON without building anything, for threads that
/// must not take the interpreter: what passes, [`parse`] parses.
pub fn check(text: &[u8]) -> Result<(), String> {
    // serde_json skips over strings without checking their UTF-8.
    std::str::from_utf8(text).map_err(|e| e.to_string())?;
    serde_json::from_slice::<de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Builds the Python object of the JSON value being parsed.
struct Build<'a, 'py>(Python<'py>, Option<&'a mut Keys>);

/// The key of a JSON object being parsed, as a Python string.
struct Key<'a, 'py>(Python<'py>, Option<&'a mut Keys>);

impl<'de, 'py> DeserializeSeed<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(match self.1 {
            Some(keys) => keys.string(self.0, s).into_any(),
            None => PyString::new(self.0, s).into_any(),
        })
    }
}

fn built<'py, E: de::Error>(r: PyResult<Bound<'py, PyAny>>) -> Result<Bound<'py, PyAny>, E> {
    r.map_err(|e| E::custom(e))
}

impl<'de, 'py> DeserializeSeed<'de> for Build<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for Build<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, b).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        built(
            i.into_pyobject(self.0)
                .map(Bound::into_any)
                .map_err(PyErr::from),
        )
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        built(
            u.into_pyobject(self.0)
                .map(Bound::into_any)
                .map_err(PyErr::from),
        )
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0, f).into_any())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, s).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Build(py, mut keys) = self;
        let list = PyList::empty(py);
        while let Some(item) = seq.next_element_seed(Build(py, keys.as_deref_mut()))? {
            list.append(item).map_err(de::Error::custom)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Build(py, mut keys) = self;
        let dict = PyDict::new(py);
        while let Some(key) = map.next_key_seed(Key(py, keys.as_deref_mut()))? {
            let value = map.next_value_seed(Build(py, keys.as_deref_mut()))?;
            dict.set_item(key, value).map_err(de::Error::custom)?;
        }
        Ok(dict.into_any())
    }
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
