//! Many heaters in one process, with the physics of the book's companion
//! heater, talking to a controller only through the log.
//!
//! # Layout
//!
//! One concern per file; this one holds the entry points ([`Simulator`],
//! [`SimHandle`]) and re-exports the public types, so that they are all
//! `riffle_heater::simulator::...`.
//!
//! - `physics.rs`: [`HeaterParams`], [`HeaterModel`]: the physics of one
//!   heater, pure and exact: temperature is piecewise linear in simulated
//!   time, so advancing by any amount gives the same result as advancing in
//!   small steps.
//! - `band.rs`: [`BandTracker`]: how well a heater is held in its
//!   thermostat band (settling time, time in band, excursions, violations).
//! - `config.rs`: [`SimConfig`]: a run's options and their defaults.
//! - `pace.rs`: simulated time against the wall clock, and [`Pace`]: against
//!   the controller's progress.
//! - `io.rs`: control records in (key lookup, decoding, hand-over to the
//!   run's thread), heater records out.
//! - `run.rs`: the run's thread: heaters in simulated-time order, commands
//!   applied as they arrive.
//! - `snapshot.rs`: [`Snapshot`], the live state a UI draws.
//! - `report.rs`: [`SimReport`], the results. Rendering either for a
//!   terminal is the CLI's business (`riffle-cli`'s `heater/view.rs`).
//!
//! No file imports from `run.rs` or from this one, so there are no cycles;
//! `physics.rs` and `band.rs` know nothing of the log or the wall clock.
//!
//! # Time
//!
//! Simulated time runs `speedup` times faster than wall time. One thread
//! drives all heaters: every tick (a few milliseconds) it works out the
//! simulated time now, applies the commands that arrived since the last tick
//! at the simulated time they were written to the log, and runs every
//! heater's events (measurements, setting changes) due up to now, in
//! simulated-time order. Heaters are kept in a priority queue by their next
//! event, so a tick costs only the events due, not a visit to every heater.
//! When the thread falls behind by more than [`SimConfig::max_step`],
//! simulated time slows down rather than jumping: a jump would release a
//! burst of measurements the controller could only answer late, and the
//! heaters would overshoot for reasons that are not the controller's.
//!
//! A run can also be paced by the controller ([`Pace`]): simulated time then
//! holds whenever the loop falls more than a little behind, which makes the
//! run's outcome depend on the controller and the log alone, not on how busy
//! the machine is. Tests use that; the live demo runs on the wall clock.

mod band;
mod config;
mod io;
mod pace;
mod physics;
mod report;
mod run;
mod snapshot;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use riffle::log::{ConsumerConfig, Log, OffsetReset, TopicPartition};
use riffle::stream::{Consumer, Producer, Stopper};
use riffle::{Error, Result};

pub use band::BandTracker;
pub use config::SimConfig;
pub use pace::{LoopProgress, Pace};
pub use physics::{EventKind, HeaterEvent, HeaterModel, HeaterParams};
pub use report::{Counters, HeaterReport, SimReport};
pub use snapshot::{HeaterHistory, HeaterView, Phase, Sample, Snapshot};

use io::{control_handler, IdLookup, Inbox};
use run::{run, Setup};
use snapshot::lock;

/// Starts simulations.
pub struct Simulator;

impl Simulator {
    /// Checks the configuration and the topics, joins the control topic with
    /// a consumer group of its own, and runs the heaters on a thread of their
    /// own. The heaters' clock starts once the consumer owns every partition
    /// of the control topic, so that no command is missed.
    pub fn start(log: Arc<dyn Log>, config: SimConfig) -> Result<SimHandle> {
        Self::start_with(log, config, Stopper::new())
    }

    /// [`Simulator::start`] with a stopper shared with the caller (a Ctrl-C
    /// handler, say).
    pub fn start_with(log: Arc<dyn Log>, config: SimConfig, stopper: Stopper) -> Result<SimHandle> {
        config.validate()?;
        let timeout = Duration::from_secs(10);
        let mut control_partitions = Vec::new();
        let topics = [Some(&config.control_topic), Some(&config.sensor_topic)];
        for topic in topics
            .into_iter()
            .chain([config.settings_topic.as_ref()])
            .flatten()
        {
            let info = log.describe_topic(topic, timeout)?;
            if *topic == config.control_topic {
                control_partitions = info
                    .partitions
                    .iter()
                    .map(|p| TopicPartition::new(topic.clone(), p.id))
                    .collect();
            }
        }

        let group_id = config.group_id.clone().unwrap_or_else(|| {
            format!(
                "riffle-heater-sim-{}-{}-{:08x}",
                config.seed,
                std::process::id(),
                fastrand::u32(..)
            )
        });
        let producer = Producer::new(&*log)?;
        let inbox = Inbox::default();
        let mut cc = ConsumerConfig::new(group_id.clone(), &[config.control_topic.as_str()]);
        cc.offset_reset = OffsetReset::Latest;
        cc.client_id = format!("{group_id}-control");
        let ids = IdLookup {
            prefix: config.id_prefix.clone().into_bytes(),
            width: config.id_width(),
            count: config.heaters,
        };
        let consumer = {
            let inbox = inbox.clone();
            Consumer::spawn(log.clone(), cc, move || {
                control_handler(inbox.clone(), ids.clone())
            })?
        };

        let shared = Arc::new(Mutex::new(Snapshot {
            speedup: config.speedup,
            limit: config.duration,
            tolerance: config.tolerance(),
            history_spacing: config.history_spacing,
            history_len: config.history_len,
            ..Snapshot::default()
        }));
        let (s, st, g) = (shared.clone(), stopper.clone(), group_id.clone());
        let thread = std::thread::Builder::new()
            .name("heater-sim".into())
            .spawn(move || {
                let setup = Setup {
                    config,
                    producer,
                    consumer,
                    inbox,
                    control_partitions,
                    group_id: g,
                };
                let result = run(setup, &st, &s);
                if let Err(e) = &result {
                    tracing::error!("heater simulator failed: {e}");
                    lock(&s).phase = Phase::Failed(e.to_string());
                }
                result
            })
            .map_err(|e| Error::io("cannot start simulator thread", &e))?;
        Ok(SimHandle {
            stopper,
            shared,
            group_id,
            thread: Some(thread),
        })
    }
}

/// A running simulation.
pub struct SimHandle {
    stopper: Stopper,
    shared: Arc<Mutex<Snapshot>>,
    group_id: String,
    thread: Option<JoinHandle<Result<SimReport>>>,
}

/// See [`SimHandle::reader`].
#[derive(Clone)]
pub struct SnapshotReader(Arc<Mutex<Snapshot>>);

impl SnapshotReader {
    /// Reads the latest snapshot in place (the run waits for `f`: keep it
    /// short).
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&lock(&self.0))
    }
}

impl SimHandle {
    /// A copy of the latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.shared).clone()
    }

    /// Reads the latest snapshot in place, without copying it (the run waits
    /// for `f` to return before its next update: keep it short).
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&lock(&self.shared))
    }

    /// A reader of the latest snapshot that other threads can keep (an
    /// HTTP dashboard) while this handle waits for the run; it goes on
    /// showing the last snapshot once the run has ended.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader(self.shared.clone())
    }

    /// The consumer group reading the control topic.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Ends the run at the current simulated time.
    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// Whether the run has ended (for whatever reason).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the heaters' clock has started (or the run has ended).
    pub fn wait_running(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with_snapshot(|s| s.phase != Phase::Joining) || self.is_finished() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the heater simulator did not start within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the run to end and returns its results.
    pub fn join(mut self) -> Result<SimReport> {
        self.join_inner()
    }

    fn join_inner(&mut self) -> Result<SimReport> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(Error::Panicked {
                    what: "simulator thread".into(),
                    message: None,
                })
            }),
            None => Err(Error::Closed),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
            let _ = self.join_inner();
        }
    }
}
