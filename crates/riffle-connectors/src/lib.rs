//! Sources and sinks for Riffle pipelines beyond its own log: message
//! brokers, HTTP, files.
//!
//! # Layout
//!
//! Every connector is a module with the same parts: its options and
//! registry entry in `mod.rs` (or the file itself for small ones), the
//! wire protocol in `client.rs`, and `source.rs` / `sink.rs` implementing
//! [`riffle::connect::Source`] and [`riffle::connect::Sink`]. Its
//! integration test, against the real server, is `tests/<name>.rs`.
//!
//! - [`connector`]: what a connector is: name, options, guarantees, builders.
//! - [`registry`]: every connector by name.
//! - [`options`]: `key=value` options, unknown keys refused.
//! - [`net`]: URLs, connecting within a deadline, backoff.
//! - [`tls`]: the TLS options every network connector takes, and the
//!   client configuration built from them.
//! - [`runtime`]: the one async runtime the async clients share.
//! - `log`: Kafka and the embedded log (the library's own source and sink).
//! - [`file`]: JSON lines files, followed like `tail -f`, appended to.
//! - [`stdio`]: stdin and stdout.
//! - [`mqtt`]: MQTT 3.1.1 and 5 brokers, QoS 1 subscribe and publish.
//! - [`nats`]: NATS subjects, core (at-most-once) or JetStream (at-least-once).
//! - [`amqp`]: AMQP 0-9-1 (RabbitMQ) queues and exchanges.
//! - [`redis`]: Redis Streams, read through a consumer group, appended to.
//! - [`http`]: a webhook server as a source, a request per record as a sink.
//!
//! Every client here is written on `std::net` with blocking I/O, one
//! thread per connector: a pipeline is a loop on its own thread, and the
//! protocols are small enough that owning them costs less than the
//! dependency trees of their async clients.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod connector;
pub mod file;
#[cfg(feature = "http")]
pub mod http;
mod lines;
mod log;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod net;
pub mod options;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod runtime;
pub mod stdio;
pub mod tls;

pub use connector::{Connector, Env, LogChoice, Opt, Role};
pub use options::Options;
