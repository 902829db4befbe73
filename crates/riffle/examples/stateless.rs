//! A stateless pipeline: read `words`, write each word upper-cased to
//! `shout`, and only the long ones to `long-words`.
//!
//! Runs on the embedded log by default; pass a broker address to use Kafka:
//! `cargo run --example stateless [-- 127.0.0.1:9092]`

use std::sync::Arc;
use std::time::Duration;

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::{stateless, App};
use riffle::stream::{Consumer, Producer};

fn main() -> riffle::Result<()> {
    let log: Arc<dyn Log> = match std::env::args().nth(1) {
        Some(brokers) => Arc::new(KafkaLog::connect(brokers, vec![])?),
        None => Arc::new(EmbeddedLog::new()),
    };
    let t = Duration::from_secs(10);
    for topic in ["words", "shout", "long-words"] {
        log.ensure_topic(&TopicSpec::new(topic, 3), t)?;
    }

    let shout = App::new(
        "shout",
        &["words"],
        stateless::map("shout", |v| Ok(v.to_ascii_uppercase())),
    )
    .start(log.clone())?;
    let long = App::new(
        "long",
        &["words"],
        stateless::filter("long-words", |r| r.value.len() > 5),
    )
    .start(log.clone())?;

    let producer = Producer::new(&*log)?;
    for word in "streams of records flow through riffle".split(' ') {
        producer.send("words", Some(word.as_bytes()), word.as_bytes())?;
    }
    producer.flush(t)?;

    let printer = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new("printer", &["shout", "long-words"]),
        || {
            |r: RecordRef<'_>| -> riffle::Result<()> {
                println!("{:<10} {}", r.topic, String::from_utf8_lossy(r.value));
                Ok(())
            }
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    printer.stop();
    printer.join()?;
    shout.stop()?;
    long.stop()
}
