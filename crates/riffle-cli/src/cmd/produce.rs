//! `riffle produce`: send records to a topic.

use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use riffle::log::{Header, OutRecord};
use riffle::stream::Producer;
use riffle::{Error, Result};

use crate::backend::LogArgs;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    #[arg(long, short = 't')]
    topic: String,
    /// Key for every record (records are key-less without it).
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// Read `KEY<sep>VALUE` lines from stdin, splitting each at the first <sep>.
    #[arg(long, value_name = "SEP", conflicts_with = "key")]
    key_separator: Option<String>,
    /// Refuse values that are not valid JSON instead of sending them as they are.
    #[arg(long)]
    json: bool,
    /// A header for every record, `NAME=VALUE` (repeatable, in order; a
    /// name may repeat). `NAME` alone sends a null value, `NAME=` an empty one.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Values to send; without any, one value per line of stdin.
    values: Vec<String>,
}

pub fn run(args: &LogArgs, a: ProduceArgs) -> Result<()> {
    let log = args.stored("produce")?;
    riffle::log::validate_topic_name(&a.topic)?;
    log.describe_topic(&a.topic, Duration::from_secs(10))?;
    let producer = Producer::new(&*log)?;
    let headers: Vec<Header<'_>> = a.headers.iter().map(|h| parse_header(h)).collect();
    let send = |line: &str| -> Result<()> {
        let (key, value) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k), v),
                None => (None, line),
            },
            None => (a.key.as_deref(), line),
        };
        if a.json {
            serde_json::from_str::<serde_json::Value>(value)
                .map_err(|e| Error::InvalidInput(format!("not JSON ({e}): {value}")))?;
        }
        producer.send_record(
            OutRecord::new(&a.topic, key.map(str::as_bytes), value.as_bytes())
                .with_headers(&headers[..]),
        )
    };
    if a.values.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| Error::io("reading stdin", &e))?;
            if !line.is_empty() {
                send(&line)?;
            }
        }
    } else {
        for v in &a.values {
            send(v)?;
        }
    }
    producer.flush(Producer::CLOSE_TIMEOUT)?;
    let s = producer.stats();
    let (delivered, failed) = (
        s.delivered.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "sent {} records to {}: {delivered} delivered, {failed} failed",
        s.sent.load(Ordering::Relaxed),
        a.topic
    );
    if failed > 0 {
        return Err(Error::Refused {
            server: format!("topic '{}'", a.topic),
            message: format!("{failed} records were not delivered"),
        });
    }
    Ok(())
}

/// `NAME=VALUE` as a header, split at the first `=`; `NAME` alone is a
/// header with a null value (Kafka tells null from empty).
fn parse_header(arg: &str) -> Header<'_> {
    match arg.split_once('=') {
        Some((name, value)) => Header::new(name, Some(value.as_bytes())),
        None => Header::new(arg, None),
    }
}
