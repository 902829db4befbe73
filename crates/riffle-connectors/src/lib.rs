//! Sources and sinks for Riffle pipelines beyond its own log: message
//! brokers, HTTP, files.
//!
//! # Layout
//!
//! Every network connector is a folder with the same parts: its manual
//! (URL forms, options, TLS, authentication, delivery), its options and
//! registry entry in `mod.rs`; the connection to its server on the
//! protocol's own well-kept client crate in `conn.rs` (Redis's, a few
//! lines, in `mod.rs`; HTTP has a server in its source and a client in
//! its sink); and `source.rs` /
//! `sink.rs` implementing [`riffle::connect::Source`] and
//! [`riffle::connect::Sink`]. Each is behind the cargo feature of its name.
//! Its integration test, against the real server (plain and with TLS), is
//! `tests/<name>.rs`.
//!
//! - [`connector`]: what a connector is: name, options, guarantees, builders.
//! - [`registry`]: every connector by name.
//! - [`options`]: `key=value` options, unknown keys refused.
//! - [`net`]: URLs, connecting within a deadline, backoff.
//! - [`tls`]: the TLS options every network connector takes (the settings
//!   and the configurations built from them are `riffle-net`'s).
//! - [`runtime`]: the one async runtime of the process (`riffle-net`'s),
//!   which the async clients share with the HTTP servers.
//! - `log`: Kafka and the embedded log (the library's own source and sink).
//! - [`file`]: JSON lines files, followed like `tail -f`, appended to.
//! - [`stdio`]: stdin and stdout.
//! - [`mqtt`]: MQTT 3.1.1 and 5 brokers, subscribe and publish at QoS 0, 1 or 2.
//! - [`nats`]: NATS subjects, core (at-most-once) or JetStream (at-least-once).
//! - [`amqp`]: AMQP 0-9-1 (RabbitMQ) queues and exchanges.
//! - [`redis`]: Redis Streams, read through a consumer group, appended to.
//! - [`http`]: a webhook server as a source, a request per record as a sink.
//!
//! A pipeline is a loop on a thread of its own that calls its source and
//! sink in turn. The clients that are async (MQTT, NATS, AMQP, HTTP) run
//! on the one [`runtime`] of the process; Redis's client blocks. Every
//! network connector takes the same [`tls`] options and reads secrets
//! from the environment or files ([`options`]).

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
pub use riffle_net::runtime;
pub mod stdio;
pub mod tls;

pub use connector::{Connector, Env, LogChoice, Opt, Role};
pub use options::Options;
