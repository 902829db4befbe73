//! A test driver for apps: the real [`App`], on the embedded log, under a
//! clock the test moves, one step at a time.
//!
//! Kafka Streams' `TopologyTestDriver` runs a topology in a single thread
//! with no consumer, no commit and no failure. This one runs what
//! production runs: the app's consumers and its commit protocol, over
//! topics of several partitions, with the app's style and guarantee. What
//! it adds is control: the processing-time clock stands still until the
//! test advances it ([`TestDriver::advance`]), each step waits until the
//! app has processed and committed everything ([`TestDriver::settle`]), a
//! crash can be made between any two records ([`TestDriver::crash`]: the
//! app stops as a killed process would, and starts again from what it
//! committed), and so can a rebalance ([`TestDriver::rebalance`]). What is
//! asserted on is what is durable: the committed records of a topic, and a
//! key's state and timers as the changelog holds them.
//!
//! ```
//! use std::time::Duration;
//! use riffle_runtime::process::{stateless, App};
//! use riffle_runtime::testing::TestDriver;
//!
//! let mut driver = TestDriver::start(2, &["in", "out"], || {
//!     App::new("shout", &["in"], stateless::map("out", |v: &[u8]| Ok(v.to_ascii_uppercase())))
//! })?;
//! driver.send("in", "k", b"hello")?;
//! assert_eq!(driver.read("out")?[0].value, b"HELLO");
//! driver.advance(Duration::from_secs(60))?;
//! driver.crash()?;
//! driver.send("in", "k", b"again")?;
//! assert_eq!(driver.read("out")?.len(), 2);
//! driver.stop()?;
//! # Ok::<(), riffle_runtime::Error>(())
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::embedded::EmbeddedLog;
use crate::log::{partition_for_key, Log, OutRecord, TopicSpec};
use crate::process::{App, Clock, KeyedProcessor, Running};
use riffle_state::{read_stored, Timer};

/// How long a step may take before the driver gives up on it.
const STEP: Duration = Duration::from_secs(30);
const ADMIN: Duration = Duration::from_secs(10);

/// A committed record of a topic, as [`TestDriver::read`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub partition: i32,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
}

/// Runs an app under test; see the module docs.
pub struct TestDriver<P: KeyedProcessor> {
    log: Arc<dyn Log>,
    clock: Clock,
    make: Box<dyn Fn() -> App<P>>,
    group: String,
    inputs: Vec<String>,
    partitions: i32,
    running: Option<Running>,
}

/// The clock's start: 2030-01-01T00:00:00Z, far from zero so that times
/// before it are ordinary.
const START: i64 = 1_893_456_000_000;

impl<P: KeyedProcessor> TestDriver<P> {
    /// Creates `topics` with `partitions` partitions each on a fresh
    /// embedded log, and starts the app `make` builds (its inputs must be
    /// among `topics`), under a clock that stands at 2030-01-01 until the
    /// test advances it. `make` is called again for each restart.
    pub fn start(
        partitions: i32,
        topics: &[&str],
        make: impl Fn() -> App<P> + 'static,
    ) -> Result<Self> {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
        for t in topics {
            log.create_topic(&TopicSpec::new(*t, partitions), ADMIN)?;
        }
        let probe = make();
        let (group, inputs) = (probe.group_name().to_owned(), probe.input_topics().to_vec());
        let mut driver = Self {
            log,
            clock: Clock::manual(START),
            make: Box::new(make),
            group,
            inputs,
            partitions,
            running: None,
        };
        driver.launch()?;
        Ok(driver)
    }

    fn app(&self, instance: &str) -> App<P> {
        (self.make)()
            .clock(self.clock.clone())
            .instance(instance)
            .commit_interval(Duration::from_millis(10))
    }

    fn launch(&mut self) -> Result<()> {
        let running = self.app("driven").start(self.log.clone())?;
        running.wait_assigned(STEP)?;
        self.running = Some(running);
        self.settle()
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("the app runs between steps")
    }

    /// The clock the app runs under.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The log the app runs on, for what the driver does not do itself.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Appends a record stamped with the clock's time, and waits until
    /// the app has processed and committed it.
    pub fn send(&mut self, topic: &str, key: &str, value: &[u8]) -> Result<()> {
        self.send_at(topic, key, value, self.clock.now_ms())
    }

    /// Appends a record with the given timestamp (its event time, unless
    /// the processor reads one from the record), and waits until the app
    /// has processed and committed it.
    pub fn send_at(&mut self, topic: &str, key: &str, value: &[u8], timestamp: i64) -> Result<()> {
        let producer = self.log.producer(None)?;
        producer.send(OutRecord::new(topic, Some(key.as_bytes()), value).at(timestamp))?;
        producer.flush(ADMIN)?;
        self.settle()
    }

    /// Moves the clock on by `by`, and waits until the app has fired what
    /// came due and committed it.
    pub fn advance(&mut self, by: Duration) -> Result<()> {
        self.clock.advance(by);
        self.settle()
    }

    /// Waits until every input record is processed and committed, and
    /// every consumer of the app has settled since the last step: its
    /// timers due are fired, what they sent and changed is committed.
    pub fn settle(&self) -> Result<()> {
        let generation = self.clock.touch();
        let deadline = Instant::now() + STEP;
        loop {
            if self.caught_up()? && self.running().settled_since(generation) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "the app did not settle within {STEP:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the group has committed every input record.
    fn caught_up(&self) -> Result<bool> {
        for topic in &self.inputs {
            let ends = self.log.describe_topic(topic, ADMIN)?.partitions;
            let committed = self.log.committed_offsets(&self.group, topic, ADMIN)?;
            let behind = ends
                .iter()
                .zip(&committed)
                .any(|(e, c)| c.committed.unwrap_or(0) < e.high);
            if behind || committed.len() < ends.len() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stops the app as a killed process would stop (nothing committed,
    /// flushed or handed over), and starts it again: it restores its state
    /// from the changelog and goes on from its last commit.
    pub fn crash(&mut self) -> Result<()> {
        if let Some(r) = self.running.take() {
            r.kill()?;
        }
        self.launch()
    }

    /// Has a second instance of the app join the group, settle, and leave
    /// again: the partitions move to it and back, with their state.
    pub fn rebalance(&mut self) -> Result<()> {
        let other = self.app("joining").start(self.log.clone())?;
        let deadline = Instant::now() + STEP;
        while other.assignments().iter().all(|(_, p)| p.is_empty()) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    "the second instance got no partition".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.settle()?;
        other.stop()?;
        self.running().wait_assigned(STEP)?;
        self.settle()
    }

    /// Every committed record of `topic`, partition by partition, in order.
    pub fn read(&self, topic: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for p in 0..self.partitions {
            self.log
                .read_partition(topic, p, 0, true, ADMIN, &mut |r| {
                    out.push(Output {
                        partition: p,
                        key: r.key_str().map(str::to_owned),
                        value: r.value.to_vec(),
                        timestamp: r.timestamp,
                    });
                    Ok(())
                })?;
        }
        Ok(out)
    }

    /// The stored form of `key` in the app's changelog, last written;
    /// `None` when it has none, or it was deleted.
    fn stored(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let changelog = format!("{}-changelog", self.group);
        let p = partition_for_key(key.as_bytes(), self.partitions);
        let mut last = None;
        self.log
            .read_partition(&changelog, p, 0, true, ADMIN, &mut |r| {
                if r.key == Some(key.as_bytes()) {
                    last = Some(r.value.to_vec()).filter(|v| !v.is_empty());
                }
                Ok(())
            })?;
        Ok(last)
    }

    /// `key`'s state as last committed to the changelog, as JSON (and its
    /// version); `None` when it has none or it was deleted.
    pub fn state(&self, key: &str) -> Result<Option<(u32, serde_json::Value)>> {
        let Some(stored) = self.stored(key)? else {
            return Ok(None);
        };
        let (_, state) = read_stored(&stored).map_err(Error::Decode)?;
        let json = serde_json::from_slice(state.json).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Some((state.version, json)))
    }

    /// `key`'s timers as last committed to the changelog.
    pub fn timers(&self, key: &str) -> Result<Vec<Timer>> {
        let Some(stored) = self.stored(key)? else {
            return Ok(Vec::new());
        };
        let (timers, _) = read_stored(&stored).map_err(Error::Decode)?;
        Ok(timers)
    }

    /// Stops the app, committing what it did.
    pub fn stop(mut self) -> Result<()> {
        match self.running.take() {
            Some(r) => r.stop(),
            None => Ok(()),
        }
    }
}
