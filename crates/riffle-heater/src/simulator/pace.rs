//! Pacing: how simulated time follows the wall clock ([`Clock`]) and, in a
//! paced run, the controller's progress ([`Pace`], [`Pacer`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::{Error, Result};

use super::report::Counters;

/// How far the system under test has got with a run's records: what a
/// [`Pace`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopProgress {
    /// The heaters' records the controller has finished with.
    pub consumed: u64,
    /// Records the controller has sent to the control topic, read after
    /// `consumed`: at least every command those records caused.
    pub sent: u64,
}

/// Ties simulated time to the controller's progress, so that a run checks
/// the loop's logic and delivery rather than the machine's latency.
///
/// Simulated time runs at most `lead` beyond the last moment the loop was
/// caught up: every record sent so far consumed, and every command sent for
/// them applied. There the clock holds, and the heaters fall silent, until
/// the loop catches up. Every command then takes effect within `lead` of
/// the measurement that caused it; with `lead` below a third of a
/// measurement interval no settled heater leaves its band, however slow the
/// machine. On a fast machine the clock never holds and a paced run is the
/// same as an unpaced one.
#[derive(Clone)]
pub struct Pace {
    /// Reads the controller's progress; called once per tick.
    pub probe: Arc<dyn Fn() -> LoopProgress + Send + Sync>,
    /// Simulated time the loop may fall behind.
    pub lead: Duration,
    /// Wall-clock time the clock may hold before the run fails (commands
    /// lost, or a probe that does not count this run's records).
    pub timeout: Duration,
}

impl Pace {
    /// A pace with a lead of 2 simulated seconds (a fifth of the default
    /// measurement interval) that fails after holding for 60 s.
    pub fn new(probe: impl Fn() -> LoopProgress + Send + Sync + 'static) -> Self {
        Self {
            probe: Arc::new(probe),
            lead: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("lead", &self.lead)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Maps wall-clock instants to simulated seconds.
pub(super) struct Clock {
    pub(super) speedup: f64,
    pub(super) base_wall: Instant,
    pub(super) base_sim: f64,
    /// The most simulated time one tick may add.
    pub(super) max_step: f64,
}

impl Clock {
    pub(super) fn sim_of(&self, wall: Instant) -> f64 {
        self.base_sim + wall.saturating_duration_since(self.base_wall).as_secs_f64() * self.speedup
    }

    /// Maps `now` to simulated time `sim` from here on: the clock resumes
    /// from where it was held.
    pub(super) fn hold(&mut self, now: Instant, sim: f64) {
        self.base_sim = sim;
        self.base_wall = now;
    }

    /// The simulated time at `now`, given that the run has reached `from`;
    /// after a stall, moves the mapping so that time resumes from a step
    /// beyond `from` instead of jumping.
    pub(super) fn advance(&mut self, now: Instant, from: f64) -> f64 {
        let t = self.sim_of(now);
        if t - from <= self.max_step {
            return t;
        }
        self.base_sim = from + self.max_step;
        self.base_wall = now;
        self.base_sim
    }
}

/// Holds simulated time at the [`Pace`]'s lead beyond the last moment the
/// loop was caught up.
pub(super) struct Pacer {
    pace: Pace,
    lead: f64,
    /// Simulated time up to which every record sent has been consumed and
    /// answered.
    caught_up: f64,
    /// When the clock stopped moving, if it has.
    held_since: Option<Instant>,
}

impl Pacer {
    pub(super) fn new(pace: Pace) -> Self {
        Self {
            lead: pace.lead.as_secs_f64(),
            pace,
            caught_up: 0.0,
            held_since: None,
        }
    }

    /// Reads the controller's progress now.
    pub(super) fn probe(&self) -> LoopProgress {
        (self.pace.probe)()
    }

    /// The furthest this tick may take simulated time, from `target`, given
    /// the run's simulated time `now_sim` and `counters`, what the probe
    /// read and the `arriving` commands this tick applies.
    pub(super) fn limit(
        &mut self,
        now_sim: f64,
        counters: &Counters,
        progress: LoopProgress,
        arriving: usize,
        target: f64,
        now: Instant,
    ) -> Result<f64> {
        // The gate of this tick comes from earlier ticks only, so that a
        // command arriving now still lands within the lead of its cause.
        let gate = self.caught_up + self.lead;
        let sent = counters.records_sent();
        let answered = counters.commands_received + arriving as u64;
        if progress.consumed >= sent && answered >= progress.sent {
            self.caught_up = now_sim;
        }
        if target <= gate || gate > now_sim {
            self.held_since = None;
            return Ok(target.min(gate));
        }
        let since = *self.held_since.get_or_insert(now);
        if now.duration_since(since) > self.pace.timeout {
            return Err(Error::Timeout(format!(
                "the loop did not catch up within {:?}: the controller finished {} of the {sent} records sent and sent {} commands, of which {answered} arrived",
                self.pace.timeout, progress.consumed, progress.sent
            )));
        }
        Ok(now_sim)
    }
}
