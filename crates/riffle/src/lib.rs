//! Riffle: actor-based stream processing on Apache Kafka, with an embedded
//! log so that everything also runs with nothing installed.
//!
//! # Layout
//!
//! Each layer knows only the ones above it in this list:
//!
//! - [`log`]: log backends behind one trait: Kafka (librdkafka) and the
//!   embedded in-process log; topic administration; key partitioning.
//! - [`actor`]: a small actor runtime: bounded mailboxes, cloneable handles,
//!   supervision that restarts a panicking actor with backoff.
//! - [`stream`]: the producer and consumer actors and consumer groups.
//! - [`process`]: processors, stateless and keyed, in apps over topics.
//! - [`connect`]: sources and sinks beyond the log, and pipelines that
//!   move records between them through a processor.
//! - [`serve`]: operating a process over HTTP: metrics, state queries.
//! - [`metrics`]: the counters every layer keeps, for `/metrics`.
//! - [`error`]: the one error type.

pub mod actor;
pub mod connect;
pub mod process;
pub mod serve;
pub mod stream;

pub use error::{Error, Result};
pub use riffle_base::{error, metrics};
pub use riffle_log as log;
