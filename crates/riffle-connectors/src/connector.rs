//! What a connector is: its name, its options and what it promises at
//! each end, and what the process around a pipeline gives it. Every
//! connector module fills one of these in; [`registry`](crate::registry)
//! lists them all. Apart from the registry so that the connectors and the
//! list of them do not import each other.

use std::sync::Arc;

use riffle::connect::{Delivery, Sink, Source};
use riffle::log::Log;
use riffle::Result;
use std::time::Duration;

use crate::options::{parse_duration, Options};
pub use crate::options::{Fallback, Opt, Role};

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

    /// Option `name` of `role` (`Both` for one either end reads): as given
    /// in `o`, else its [`Fallback::Value`] in this connector's table,
    /// parsed the same way.
    pub fn get<T: std::str::FromStr>(&self, o: &mut Options, role: Role, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.read(o, role, name, |v| v.parse::<T>().map_err(|e| e.to_string()))
    }

    /// A text option: as given, else its default.
    pub fn text(&self, o: &mut Options, role: Role, name: &str) -> Result<String> {
        self.get(o, role, name)
    }

    /// A duration option (`250ms`, `5s`, `1h30m`): as given, else its
    /// default.
    pub fn duration(&self, o: &mut Options, role: Role, name: &str) -> Result<Duration> {
        self.read(o, role, name, parse_duration)
    }

    fn read<T>(
        &self,
        o: &mut Options,
        role: Role,
        name: &str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        o.read(self.all_options(), role, name, parse)
    }

    /// Fails on options not meant for `role`; call after reading every
    /// option and before connecting.
    pub fn finish(&self, options: Options, role: Role) -> Result<()> {
        options.finish(&self.option_names(role))
    }
}
