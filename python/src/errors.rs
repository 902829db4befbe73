//! Riffle's errors as Python exceptions: one base class, `RiffleError`,
//! and subclasses for the outcomes a caller handles rather than reports.
//! The message is the Rust error's one line, as the command-line tool
//! prints it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use riffle::Error;

create_exception!(
    riffle,
    RiffleError,
    PyException,
    "An error from Riffle: the log, a client setting, an app."
);
create_exception!(
    riffle,
    TopicExistsError,
    RiffleError,
    "A topic to create exists already."
);
create_exception!(
    riffle,
    UnknownTopicError,
    RiffleError,
    "A topic named does not exist."
);
create_exception!(
    riffle,
    RiffleTimeoutError,
    RiffleError,
    "The log did not answer in time."
);
create_exception!(
    riffle,
    ClosedError,
    RiffleError,
    "A producer, consumer or app used after it was closed or stopped."
);

/// The Python exception for a Riffle error.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::TopicExists(_) => TopicExistsError::new_err(msg),
        Error::UnknownTopic(_) => UnknownTopicError::new_err(msg),
        Error::Timeout(_) => RiffleTimeoutError::new_err(msg),
        Error::Closed | Error::Stopped(_) => ClosedError::new_err(msg),
        _ => RiffleError::new_err(msg),
    }
}

/// `?` for Riffle results in functions returning `PyResult`.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for riffle::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A Python exception as one line, `TypeName: message`, for a dead letter's
/// reason and for logs (the traceback stays in Python's own report).
pub fn describe(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let value = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    if value.is_empty() {
        name
    } else {
        format!("{name}: {value}")
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RiffleError", py.get_type::<RiffleError>())?;
    m.add("TopicExistsError", py.get_type::<TopicExistsError>())?;
    m.add("UnknownTopicError", py.get_type::<UnknownTopicError>())?;
    m.add("RiffleTimeoutError", py.get_type::<RiffleTimeoutError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    Ok(())
}
