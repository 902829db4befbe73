//! Riffle: actor-based stream processing on Apache Kafka, with an embedded
//! log so that everything also runs with nothing installed.
//!
//! This crate gathers the layers under their usual paths; each is a crate
//! of its own, so the compiler refuses an import that runs up the list:
//!
//! - [`error`], [`metrics`], [`duration`], [`backoff`] (crate `riffle-base`): the one
//!   error type, the counters every layer keeps, for `/metrics`, and the
//!   one duration grammar of flags and pipeline files.
//! - [`log`] (crate `riffle-log`): log backends behind one trait: Kafka
//!   (librdkafka) and the embedded in-process log; topic administration;
//!   key partitioning.
//! - [`state`] (crate `riffle-state`): keyed stores, their changelog and
//!   snapshots, restoring them and handing them over between consumers.
//! - [`actor`], [`stream`], [`process`] (crate `riffle-runtime`): the actor
//!   runtime; producer and consumer actors and consumer groups; processors,
//!   stateless and keyed, in apps over topics, in the chapter's two styles,
//!   under either delivery guarantee, with lag and autoscaling; and
//!   [`testing`], a driver that runs an app under a clock the test moves.
//! - [`connect`] (crate `riffle-connect`): sources and sinks beyond the log,
//!   and pipelines that move records between them through a processor.
//! - [`serve`] (crate `riffle-ops`): operating a process over HTTP:
//!   metrics, state queries.
//!
//! The connectors themselves (MQTT, NATS, AMQP, Redis, HTTP, files) are the
//! `riffle-connectors` crate; the heater example is `riffle-heater`.

pub use error::{Error, Result};
pub use riffle_base::{backoff, duration, error, metrics};
pub use riffle_connect as connect;
pub use riffle_log as log;
pub use riffle_ops as serve;
pub use riffle_runtime::{actor, process, stream, testing};
pub use riffle_state as state;
