//! The driver's own Kafka clients, written directly with rdkafka so that
//! what measures does not depend on what is measured.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

pub type Result<T> = std::result::Result<T, String>;

pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("log_level", "3")
        .set("socket.connection.setup.timeout.ms", "5000");
    c
}

/// A keyed producer that places keys as the Java client does.
/// `linger_ms` trades latency for batching.
pub fn producer(brokers: &str, linger_ms: u32) -> Result<ThreadedProducer<DefaultProducerContext>> {
    config(brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| format!("cannot create a producer: {e}"))
}

/// Sends one record, waiting while the local queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("cannot send to {topic}: {e}")),
        }
    }
}

pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) -> Result<()> {
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("flush failed: {e}"))
}

/// A consumer outside any group that reads every partition of `topic` from
/// the beginning; with `read_committed`, only committed transactions.
pub fn reader(
    brokers: &str,
    topic: &str,
    partitions: i32,
    read_committed: bool,
) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "riffle-bench-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot read {topic}: {e}"))?;
    Ok(consumer)
}

/// Counts the records of `topic` (committed ones only, with
/// `read_committed`), reading until every partition reports its end.
pub fn count(brokers: &str, topic: &str, partitions: i32, read_committed: bool) -> Result<u64> {
    let mut n = 0u64;
    read_all(brokers, topic, partitions, read_committed, |_, _| n += 1)?;
    Ok(n)
}

/// Hands every record of `topic` (committed ones only, with
/// `read_committed`) to `f` as key and value, reading until every
/// partition reports its end.
pub fn read_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    read_committed: bool,
    mut f: impl FnMut(Option<&[u8]>, &[u8]),
) -> Result<()> {
    let consumer = reader(brokers, topic, partitions, read_committed)?;
    let mut at_end = vec![false; partitions as usize];
    let mut last = Instant::now();
    while at_end.iter().any(|e| !e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                f(m.key(), m.payload().unwrap_or_default());
                at_end[m.partition() as usize] = false;
                last = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end[p as usize] = true;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
        if last.elapsed() > Duration::from_secs(30) {
            return Err(format!("reading {topic}: nothing arrived for 30 s"));
        }
    }
    Ok(())
}
