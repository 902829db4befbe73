//! Riffle: actor-based stream processing on Apache Kafka, with an embedded
//! log so that everything also runs with nothing installed.
//!
//! # Layout
//!
//! Each layer uses only the ones before it in this list. The first three
//! are crates of their own, re-exported here under their usual paths, so
//! the compiler refuses an import from them into anything above:
//!
//! - [`error`], [`metrics`], [`duration`] (crate `riffle-base`): the one
//!   error type, the counters every layer keeps, for `/metrics`, and the
//!   one duration grammar of flags and pipeline files.
//! - [`log`] (crate `riffle-log`): log backends behind one trait: Kafka
//!   (librdkafka) and the embedded in-process log; topic administration;
//!   key partitioning.
//! - [`actor`]: a small actor runtime: bounded mailboxes, cloneable handles,
//!   supervision that restarts a panicking actor with backoff.
//! - [`stream`]: the producer and consumer actors and consumer groups.
//! - [`process`]: processors, stateless and keyed, in apps over topics:
//!   the two styles, state stores, delivery guarantees, lag, autoscaling,
//!   and routing state queries to the key's owner.
//! - [`connect`]: sources and sinks beyond the log, and pipelines that
//!   move records between them through a processor.
//! - [`serve`]: operating a process over HTTP: metrics, state queries.

pub mod actor;
pub mod connect;
pub mod process;
pub mod serve;
pub mod stream;

pub use error::{Error, Result};
pub use riffle_base::{duration, error, metrics};
pub use riffle_log as log;
