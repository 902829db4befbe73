//! Chooses the log a command runs on.

use std::sync::Arc;

use clap::Args;
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::Log;
use riffle::{Error, Result};

#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers (host:port,...). Without it, demos use the embedded log.
    #[arg(
        long,
        short = 'b',
        env = "RIFFLE_BROKERS",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub brokers: Option<String>,

    /// A librdkafka property for every client (repeatable), e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true, value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

fn parse_property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

impl BrokerArgs {
    /// Kafka, checked to be reachable; a one-line error when no broker is given.
    pub fn kafka(&self, command: &str) -> Result<Arc<dyn Log>> {
        let Some(brokers) = &self.brokers else {
            return Err(Error::InvalidInput(format!(
                "`riffle {command}` needs a Kafka broker: pass --brokers HOST:PORT or set RIFFLE_BROKERS \
                 (`riffle demo hello` runs without one)"
            )));
        };
        Ok(Arc::new(KafkaLog::connect(
            brokers.clone(),
            self.property.clone(),
        )?))
    }

    /// Kafka when a broker is given, the embedded log otherwise.
    pub fn any(&self) -> Result<Arc<dyn Log>> {
        match &self.brokers {
            Some(_) => self.kafka("demo"),
            None => Ok(Arc::new(EmbeddedLog::new())),
        }
    }
}
