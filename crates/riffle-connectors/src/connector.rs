//! What a connector is: its name, its options and what it promises at
//! each end, and what the process around a pipeline gives it. Every
//! connector module fills one of these in; [`registry`](crate::registry)
//! lists them all. Apart from the registry so that the connectors and the
//! list of them do not import each other.

use std::sync::Arc;

use riffle::connect::{Delivery, Sink, Source};
use riffle::log::Log;
use riffle::Result;

use crate::options::Options;
pub use crate::options::{Opt, Role};

/// Which log a `kafka` or `embedded` connector wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogChoice<'a> {
    /// A Kafka cluster: these bootstrap servers, or the process's own.
    Kafka(Option<&'a str>),
    /// The embedded log of the process's data directory.
    Embedded,
}

/// What the process around a pipeline provides: its logs (the process
/// decides where the embedded log lives and which brokers are the
/// default).
pub struct Env {
    pub log: Box<OpenLog>,
}

/// Opens the log a connector asks for.
pub type OpenLog = dyn Fn(LogChoice<'_>) -> Result<Arc<dyn Log>>;

type BuildSource = fn(Options, &Env) -> Result<Box<dyn Source>>;
type BuildSink = fn(Options, &Env) -> Result<Box<dyn Sink>>;

/// A kind of source and/or sink.
pub struct Connector {
    pub name: &'static str,
    pub summary: &'static str,
    /// What it promises as a source; `None` if it cannot be one.
    pub source: Option<Delivery>,
    /// What it promises as a sink; `None` if it cannot be one.
    pub sink: Option<Delivery>,
    pub options: &'static [Opt],
    /// Whether it also takes the common TLS options,
    /// [`tls::OPTIONS`](crate::tls::OPTIONS).
    pub tls: bool,
    pub build_source: Option<BuildSource>,
    pub build_sink: Option<BuildSink>,
}

impl Connector {
    /// The option names valid for `role`, for error messages.
    pub fn option_names(&self, role: Role) -> Vec<&'static str> {
        self.all_options()
            .filter(|o| o.role == role || o.role == Role::Both)
            .map(|o| o.name)
            .collect()
    }

    /// Its own options, then the TLS options if it takes them.
    pub fn all_options(&self) -> impl Iterator<Item = &'static Opt> {
        let tls: &'static [Opt] = if self.tls { &crate::tls::OPTIONS } else { &[] };
        self.options.iter().chain(tls)
    }

    /// Fails on options not meant for `role`; call after reading every
    /// option and before connecting.
    pub fn finish(&self, options: Options, role: Role) -> Result<()> {
        options.finish(&self.option_names(role))
    }
}
