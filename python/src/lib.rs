//! Riffle from Python: the extension module `riffle._native`, which the
//! Python package `riffle` (python/riffle/) re-exports. It wraps Riffle's
//! engine rather than re-implementing it: logs, producers, consumers and
//! apps are Riffle's own, and Python supplies the functions apps call.
//!
//! The interpreter is released whenever Riffle waits (polls, flushes,
//! administration, starting and stopping apps), so other Python threads
//! run meanwhile, and Riffle's threads take it only to call a processor.
//!
//! # Layout
//!
//! - `errors.rs`: `RiffleError` and its subclasses, from Riffle's errors.
//! - `json.rs`: Python objects to JSON and back, without Python's `json`.
//! - `log.rs`: `Log` (Kafka or embedded) and topic administration.
//! - `record.rs`: `Record` and `DeliveryReport`.
//! - `producer.rs`: `Producer` (example 6-1).
//! - `consumer.rs`: `Consumer` (example 6-2), its iterators.
//! - `app.rs`: processors in Python (`map`, `filter`, `flat_map`,
//!   `keyed`), `App` and `RunningApp`.

mod app;
mod consumer;
mod errors;
mod json;
mod log;
mod producer;
mod record;

use pyo3::prelude::*;

/// Sends Riffle's log lines (rebalances, delivery failures, dead letters)
/// to stderr at the level `RIFFLE_LOG` names (`warn` unless set, as
/// `RUST_LOG` filters: `info`, `riffle_runtime=debug`, ...).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RIFFLE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    errors::register(m)?;
    m.add_class::<log::Log>()?;
    m.add_class::<log::TopicInfo>()?;
    m.add_class::<log::PartitionInfo>()?;
    m.add_class::<record::Record>()?;
    m.add_class::<record::DeliveryReport>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<app::Processor>()?;
    m.add_class::<app::PyContext>()?;
    m.add_class::<app::App>()?;
    m.add_class::<app::RunningApp>()?;
    m.add_function(wrap_pyfunction!(app::map, m)?)?;
    m.add_function(wrap_pyfunction!(app::filter, m)?)?;
    m.add_function(wrap_pyfunction!(app::flat_map, m)?)?;
    m.add_function(wrap_pyfunction!(app::keyed, m)?)?;
    m.add_function(wrap_pyfunction!(app::_shutdown, m)?)?;
    Ok(())
}
