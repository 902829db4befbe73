//! The bare heater controller: the rule of `riffle_heater::controller`
//! written by hand on librdkafka, without a framework, as the baseline the
//! riffle controller is compared with (`bare-keyed-alo`, `bare-keyed-eos`).
//! It is what a competent engineer would write for the job, not a straw man:
//!
//! - `consumers` threads, each one consumer of the group and one producer in
//!   a loop (as the ceiling and the riffle apps run), with the prefetch
//!   settings of riffle's consumers;
//! - per thread, the heaters' states in a `HashMap` per owned input
//!   partition; bodies decoded with serde_json, commands written keyed by
//!   heater id in the wire format of `riffle_heater::messages`;
//! - at-least-once: the input positions are committed every 100 ms once the
//!   outputs of every record below them are delivered. Time is cut into
//!   epochs of one commit interval; each output carries its epoch, delivery
//!   reports count each epoch down, and the positions at the end of the
//!   newest epoch whose outputs are all delivered are committed
//!   (asynchronously), without ever waiting for a delivery in the loop;
//! - exactly-once: a transactional producer per thread, reading
//!   `read_committed`; every 100 ms (if anything was consumed) the input
//!   positions are added with `send_offsets_to_transaction`, the outputs
//!   delivered and the transaction committed.
//!
//! The producers are set as the ceiling's and riffle's are (idempotent,
//! keys placed by murmur2, 5 ms linger); everything else keeps librdkafka's
//! defaults, as riffle's clients do (the retry back-off included), so that
//! the comparison is of the code around the clients.
//!
//! Partitions moved by a rebalance keep their state within the process: a
//! thread commits before it gives partitions up (in the revoke callback)
//! and parks their heaters in a map the threads share, where the thread
//! that is assigned them takes them. State is kept nowhere else, so it is
//! right for a fresh group, as the benchmark uses, not for a restart after
//! a crash; and a failed delivery or transaction stops the process with an
//! error instead of rewinding the state to the last commit.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use crate::kafka::{config, Result};
use crate::stop::stopped;

/// What the bare controller reads and writes.
pub struct Config<'a> {
    pub brokers: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub group: &'a str,
    /// Consumer threads.
    pub consumers: usize,
    pub exactly_once: bool,
}

/// How often the input positions are committed, under either guarantee.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// For requests to the broker that should take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Records processed between looks at the clock and the delivery reports.
const TICK_RECORDS: u32 = 64;

// The rule and the wire format.

#[derive(Debug, Clone, Copy, PartialEq)]
struct Setting {
    temperature: f64,
    up_delta: f64,
    down_delta: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sensor {
    Measurement(f64),
    Setting(Setting),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    On,
    Off,
}

impl Command {
    /// The body on the control topic: 0 switches the heater ON, 1 OFF.
    fn json(self) -> &'static [u8] {
        match self {
            Command::On => br#"{"control":0}"#,
            Command::Off => br#"{"control":1}"#,
        }
    }
}

/// One heater's state: its setting, and the last command sent to it.
#[derive(Debug, Default, Clone)]
struct Heater {
    setting: Option<Setting>,
    last: Option<Command>,
}

impl Heater {
    /// A measurement above the band turns the heater OFF, below it ON, a
    /// command only when it differs from the last one; measurements before
    /// the first setting are ignored.
    fn apply(&mut self, msg: Sensor) -> Option<Command> {
        match msg {
            Sensor::Setting(s) => {
                self.setting = Some(s);
                None
            }
            Sensor::Measurement(m) => {
                let s = self.setting?;
                let wanted = if m > s.temperature + s.up_delta {
                    Command::Off
                } else if m < s.temperature - s.down_delta {
                    Command::On
                } else {
                    return None;
                };
                if self.last == Some(wanted) {
                    return None;
                }
                self.last = Some(wanted);
                Some(wanted)
            }
        }
    }
}

/// The members of a sensor body the controller reads.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    measurement: Option<f64>,
    temperature: Option<f64>,
    up_delta: Option<f64>,
    down_delta: Option<f64>,
}

/// A sensor record's heater id (its key, else the body's `"id"`) and
/// message.
fn decode<'a>(
    key: Option<&'a [u8]>,
    value: &'a [u8],
) -> std::result::Result<(Cow<'a, str>, Sensor), String> {
    let body: Body<'a> = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let id = match key {
        Some(k) => Cow::Borrowed(std::str::from_utf8(k).map_err(|_| "key is not UTF-8")?),
        None => body.id.ok_or("no key and no \"id\" field")?,
    };
    if id.is_empty() {
        return Err("empty heater id".into());
    }
    let msg = match body {
        Body {
            measurement: Some(m),
            ..
        } => Sensor::Measurement(m),
        Body {
            temperature: None,
            up_delta: None,
            down_delta: None,
            ..
        } => return Err("neither a measurement nor a setting".into()),
        Body {
            temperature: Some(temperature),
            up_delta: Some(up_delta),
            down_delta: Some(down_delta),
            ..
        } if up_delta >= 0.0 && down_delta >= 0.0 => Sensor::Setting(Setting {
            temperature,
            up_delta,
            down_delta,
        }),
        _ => return Err("a setting needs temperature, up_delta and down_delta >= 0".into()),
    };
    Ok((id, msg))
}

// Delivery reports, counted per epoch (at-least-once).

/// Per epoch from `base` on: the outputs sent in it (added when it closes)
/// less those delivered. The last entry is the open epoch's.
struct Epochs {
    base: u64,
    outstanding: VecDeque<i64>,
    failed: Option<String>,
}

struct Acks(Mutex<Epochs>);

impl Acks {
    fn lock(&self) -> MutexGuard<'_, Epochs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let mut e = self.lock();
        match result {
            Ok(_) => {
                // Under exactly-once no epochs are kept.
                let i = (epoch as u64).wrapping_sub(e.base) as usize;
                if let Some(n) = e.outstanding.get_mut(i) {
                    *n -= 1;
                }
            }
            // Its epoch is never complete: nothing is committed past it.
            Err((err, _)) => {
                e.failed
                    .get_or_insert_with(|| format!("an output was not delivered: {err}"));
            }
        }
    }
}

// One consumer thread.

/// The heaters of one input partition, by id.
type Heaters = HashMap<String, Heater>;

/// Heaters of partitions given up by one thread, until another takes them.
type Parked = Arc<Mutex<HashMap<i32, Heaters>>>;

struct Part {
    heaters: Heaters,
    /// The offset after the last record processed.
    next: Option<i64>,
}

struct Worker {
    input: String,
    output: String,
    exactly_once: bool,
    producer: BaseProducer<Acks>,
    parts: HashMap<i32, Part>,
    parked: Parked,
    /// The open epoch, and the outputs sent in it (at-least-once).
    epoch: u64,
    sent: i64,
    /// The input positions at the end of each closed epoch not yet
    /// committed, oldest first.
    closed: VecDeque<(u64, Vec<(i32, i64)>)>,
    committed: Vec<(i32, i64)>,
    /// When the commit interval began.
    since: Instant,
    /// Whether records were processed since the last transaction.
    dirty: bool,
    failed: Option<String>,
}

impl Worker {
    fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let part = self.parts.entry(m.partition()).or_insert_with(|| Part {
            heaters: Heaters::new(),
            next: None,
        });
        part.next = Some(m.offset() + 1);
        self.dirty = true;
        let (id, msg) = match decode(m.key(), m.payload().unwrap_or_default()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!(
                    "bare controller: record {}@{} skipped: {e}",
                    m.partition(),
                    m.offset()
                );
                return Ok(());
            }
        };
        let command = match part.heaters.get_mut(&*id) {
            Some(h) => h.apply(msg),
            None => {
                let mut h = Heater::default();
                let c = h.apply(msg);
                part.heaters.insert(id.to_string(), h);
                c
            }
        };
        if let Some(c) = command {
            let mut record = BaseRecord::with_opaque_to(&self.output, self.epoch as usize)
                .key(id.as_bytes())
                .payload(c.json());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(format!("cannot send to {}: {e}", self.output)),
                }
            }
            self.sent += 1;
        }
        Ok(())
    }

    /// Serves delivery reports and commits when the interval is over.
    fn tick(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        self.producer.poll(Duration::ZERO);
        if let Some(e) = self.producer.context().lock().failed.take() {
            return Err(e);
        }
        if self.since.elapsed() < COMMIT_INTERVAL {
            return Ok(());
        }
        self.since = Instant::now();
        if self.exactly_once {
            if self.dirty {
                self.commit_transaction(c)?;
            }
        } else {
            self.close_epoch();
            self.commit_delivered(c, CommitMode::Async)?;
        }
        Ok(())
    }

    /// Commits everything processed so far: before partitions are given up
    /// and on stop.
    fn checkpoint(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        if self.exactly_once {
            if self.dirty {
                self.commit_transaction(c)?;
            }
            return Ok(());
        }
        self.close_epoch();
        self.wait_delivered()?;
        self.commit_delivered(c, CommitMode::Sync)
    }

    fn positions(&self) -> Vec<(i32, i64)> {
        let mut p: Vec<(i32, i64)> = self
            .parts
            .iter()
            .filter_map(|(&p, part)| Some((p, part.next?)))
            .collect();
        p.sort_unstable();
        p
    }

    fn offsets(&self, positions: &[(i32, i64)]) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        for &(p, next) in positions {
            tpl.add_partition_offset(&self.input, p, Offset::Offset(next))
                .map_err(|e| e.to_string())?;
        }
        Ok(tpl)
    }

    fn close_epoch(&mut self) {
        let mut e = self.producer.context().lock();
        let open = (self.epoch - e.base) as usize;
        e.outstanding[open] += self.sent;
        e.outstanding.push_back(0);
        drop(e);
        self.sent = 0;
        let positions = self.positions();
        self.closed.push_back((self.epoch, positions));
        self.epoch += 1;
    }

    /// Commits the positions at the end of the newest closed epoch whose
    /// outputs are all delivered.
    fn commit_delivered(&mut self, c: &BaseConsumer<Ctx>, mode: CommitMode) -> Result<()> {
        let mut done = None;
        {
            let mut e = self.producer.context().lock();
            while e.outstanding.len() > 1 && e.outstanding[0] == 0 {
                e.outstanding.pop_front();
                done = Some(e.base);
                e.base += 1;
            }
        }
        let Some(done) = done else { return Ok(()) };
        let mut positions = None;
        while self.closed.front().is_some_and(|(epoch, _)| *epoch <= done) {
            positions = self.closed.pop_front().map(|(_, p)| p);
        }
        match positions {
            Some(p) if !p.is_empty() && p != self.committed => {
                match c.commit(&self.offsets(&p)?, mode) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => return Err(format!("commit failed: {e}")),
                }
                self.committed = p;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Waits until every output sent is delivered and its report served.
    /// Not rdkafka's `flush`, which waits 100 ms at a time: a zero-timeout
    /// flush sends what lingers, and the reports are served every 0.5 ms.
    fn wait_delivered(&self) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.producer.poll(Duration::ZERO);
            if let Some(e) = self.producer.context().lock().failed.take() {
                return Err(e);
            }
            if self.producer.in_flight_count() == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} outputs undelivered after {TIMEOUT:?}",
                    self.producer.in_flight_count()
                ));
            }
            let _ = self.producer.flush(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn commit_transaction(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        // The offsets first, as riffle's transactions do: their request
        // overlaps the outputs' deliveries.
        let offsets = self.offsets(&self.positions())?;
        let group = c
            .group_metadata()
            .ok_or("the consumer has no group metadata")?;
        self.producer
            .send_offsets_to_transaction(&offsets, &group, TIMEOUT)
            .map_err(|e| format!("transaction failed: {e}"))?;
        self.wait_delivered()?;
        let p = &self.producer;
        p.commit_transaction(TIMEOUT)
            .and_then(|()| p.begin_transaction())
            .map_err(|e| format!("transaction failed: {e}"))?;
        self.dirty = false;
        Ok(())
    }

    /// Before partitions go: commits, and parks their heaters.
    fn revoke(&mut self, c: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<()> {
        self.checkpoint(c)?;
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        for e in tpl.elements_for_topic(&self.input) {
            if let Some(part) = self.parts.remove(&e.partition()) {
                parked.insert(e.partition(), part.heaters);
            }
        }
        Ok(())
    }

    /// Takes the heaters of newly assigned partitions where another thread
    /// parked them.
    fn assign(&mut self, tpl: &TopicPartitionList) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        for e in tpl.elements_for_topic(&self.input) {
            let p = e.partition();
            let heaters = parked.remove(&p).unwrap_or_default();
            self.parts.entry(p).or_insert(Part {
                heaters,
                next: None,
            });
        }
    }
}

/// The consumer's context: the thread's worker, so that the rebalance
/// callbacks (run within `poll`) can commit and hand state over.
struct Ctx(Mutex<Worker>);

impl Ctx {
    fn worker(&self) -> MutexGuard<'_, Worker> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut w = self.worker();
            if let Err(e) = w.revoke(c, tpl) {
                w.failed.get_or_insert(e);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.worker().assign(tpl);
        }
    }
}

/// Runs `cfg.consumers` threads until SIGTERM.
pub fn run(cfg: &Config<'_>) -> Result<()> {
    let parked = Parked::default();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..cfg.consumers.max(1))
            .map(|i| {
                let parked = parked.clone();
                s.spawn(move || consume(cfg, i, parked))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a bare controller thread panicked".into()))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

fn consume(cfg: &Config<'_>, thread: usize, parked: Parked) -> Result<()> {
    let mut pc = config(cfg.brokers);
    pc.set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000");
    if cfg.exactly_once {
        pc.set("transactional.id", format!("{}-bare-{thread}", cfg.group))
            .set("transaction.timeout.ms", "10000");
    }
    let producer: BaseProducer<Acks> = pc
        .create_with_context(Acks(Mutex::new(Epochs {
            base: 0,
            outstanding: VecDeque::from([0]),
            failed: None,
        })))
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    if cfg.exactly_once {
        producer
            .init_transactions(TIMEOUT)
            .and_then(|()| producer.begin_transaction())
            .map_err(|e| format!("cannot start a transaction: {e}"))?;
    }
    let worker = Worker {
        input: cfg.input.to_string(),
        output: cfg.output.to_string(),
        exactly_once: cfg.exactly_once,
        producer,
        parts: HashMap::new(),
        parked,
        epoch: 0,
        sent: 0,
        closed: VecDeque::new(),
        committed: Vec::new(),
        since: Instant::now(),
        dirty: false,
        failed: None,
    };
    let consumer: BaseConsumer<Ctx> = config(cfg.brokers)
        .set("group.id", cfg.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if cfg.exactly_once {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        // The prefetch of riffle's consumers and the ceiling's.
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "20")
        .create_with_context(Ctx(Mutex::new(worker)))
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    consumer
        .subscribe(&[cfg.input])
        .map_err(|e| format!("cannot subscribe to {}: {e}", cfg.input))?;
    let mut n = 0u32;
    while !stopped() {
        // The worker is locked only between polls: a rebalance callback
        // within `poll` locks it too.
        let m = consumer.poll(Duration::from_millis(20));
        let mut w = consumer.context().worker();
        if let Some(e) = w.failed.take() {
            return Err(e);
        }
        match m {
            Some(Ok(m)) => {
                w.process(&m)?;
                n += 1;
                if n == TICK_RECORDS {
                    n = 0;
                    w.tick(&consumer)?;
                }
            }
            Some(Err(e)) => eprintln!("bare controller: {e}"),
            None => w.tick(&consumer)?,
        }
    }
    let mut w = consumer.context().worker();
    w.checkpoint(&consumer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Generator;
    use riffle_heater::messages::{decode_sensor, Command as Reference, SensorMessage};

    #[test]
    fn sends_the_commands_of_the_reference_for_the_bench_input() {
        let mut g = Generator::new(40, 3);
        let mut heaters = Heaters::new();
        let mut commands = 0;
        for _ in 0..40_000 {
            let r = g.next_record();
            let (id, msg) = decode(Some(r.key.as_bytes()), &r.value).unwrap();
            assert_eq!(id, r.key);
            let got = heaters.entry(id.into_owned()).or_default().apply(msg);
            let want = r.command.map(|c| match c {
                Reference::On => Command::On,
                Reference::Off => Command::Off,
            });
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&r.value));
            if let Some(c) = got {
                assert_eq!(c.json(), r.command.unwrap().to_json());
                commands += 1;
            }
        }
        assert!(commands > 100, "{commands} commands");
    }

    #[test]
    fn decodes_as_the_heater_crate_does() {
        let cases: &[(Option<&[u8]>, &[u8])] = &[
            (Some(b"h1"), br#"{"measurement": 45.2, "unit": "C"}"#),
            (
                Some(b"h1"),
                br#"{"temperature": 45.0, "up_delta": 1.0, "down_delta": 0.5}"#,
            ),
            (None, br#"{"measurement": 41, "id": "h2"}"#),
            (None, br#"{"measurement": 41}"#),
            (Some(b""), br#"{"measurement": 41}"#),
            (Some(b"h1"), br#"{"temperature": 45.0, "up_delta": 1.0}"#),
            (
                Some(b"h1"),
                br#"{"temperature": 45.0, "up_delta": -1.0, "down_delta": 1.0}"#,
            ),
            (Some(b"h1"), br#"{"unit": "C"}"#),
            (Some(b"h1"), br#"{"measurement": "hot"}"#),
            (Some(b"h1"), br#"{"measurement": null, "temperature": 40.0, "up_delta": 1.0, "down_delta": 1.0}"#),
            (Some(b"h1"), b"not json"),
        ];
        for &(key, value) in cases {
            let ours = decode(key, value).map(|(id, m)| {
                let m = match m {
                    Sensor::Measurement(x) => SensorMessage::Measurement(x),
                    Sensor::Setting(s) => {
                        SensorMessage::Setting(riffle_heater::messages::Setting {
                            temperature: s.temperature,
                            up_delta: s.up_delta,
                            down_delta: s.down_delta,
                        })
                    }
                };
                (id.into_owned(), m)
            });
            let theirs = decode_sensor(key, value);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{}: {ours:?} vs {theirs:?}",
                String::from_utf8_lossy(value)
            );
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                assert_eq!(a, b);
            }
        }
    }
}
