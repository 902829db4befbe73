//! A stateful processor: a running average per sensor, emitted when it moves
//! by more than one degree. State is kept per key; the same processor runs
//! in either style.
//!
//! `cargo run --example keyed [-- keyed|actors]`

use std::sync::Arc;
use std::time::Duration;

use riffle::log::embedded::EmbeddedLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::{App, Context, KeyedProcessor, Style};
use riffle::stream::{Consumer, Producer};
use riffle::{Error, Result};

/// What the processor remembers per sensor (serializable: it is kept in a
/// changelog topic and restored wherever the sensor's partition goes).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Average {
    count: u64,
    mean: f64,
    reported: Option<f64>,
}

#[derive(Clone)]
struct Averager;

impl KeyedProcessor for Averager {
    type Input = f64;
    type State = Average;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, f64)> {
        let key = r
            .key_str()
            .ok_or_else(|| Error::Decode("no sensor id".into()))?;
        let value = std::str::from_utf8(r.value)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        Ok((
            key.to_owned(),
            value.ok_or_else(|| Error::Decode("not a number".into()))?,
        ))
    }

    fn process(&mut self, key: &str, x: &f64, s: &mut Average, ctx: &mut Context<'_>) -> Result<()> {
        s.count += 1;
        s.mean += (x - s.mean) / s.count as f64;
        if s.reported.is_none_or(|r| (r - s.mean).abs() > 1.0) {
            s.reported = Some(s.mean);
            ctx.send("averages", Some(key), format!("{:.2}", s.mean).as_bytes())?;
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let style = match std::env::args().nth(1).as_deref() {
        Some("actors") => Style::Actors { workers: 4 },
        _ => Style::Keyed,
    };
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    let t = Duration::from_secs(10);
    for topic in ["readings", "averages"] {
        log.create_topic(&TopicSpec::new(topic, 4), t)?;
    }
    let app = App::new("averager", &["readings"], Averager)
        .style(style)
        .consumers(2)
        .dead_letter("readings-dlq")
        .start(log.clone())?;

    let producer = Producer::new(&*log)?;
    for i in 0..200 {
        let sensor = format!("sensor-{}", i % 4);
        producer.send(
            "readings",
            Some(sensor.as_bytes()),
            format!("{}", 20.0 + (i as f64 / 10.0)).as_bytes(),
        )?;
    }
    producer.send("readings", Some(b"sensor-0"), b"warm")?;

    let printer = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new("printer", &["averages", "readings-dlq"]),
        || {
            |r: RecordRef<'_>| -> Result<()> {
                println!(
                    "{:<13} {:<9} {}",
                    r.topic,
                    r.key_str().unwrap_or("-"),
                    String::from_utf8_lossy(r.value)
                );
                Ok(())
            }
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    printer.stop();
    printer.join()?;
    app.stop()
}
