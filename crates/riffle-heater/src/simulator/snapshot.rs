//! The live state of a run, refreshed while it runs: what a UI draws.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::report::{ratio, Counters};
use crate::messages::{Command, Setting};

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting for the control topic's partitions; the clock has not started.
    #[default]
    Joining,
    Running,
    Finished,
    /// Ended by an error (given in [`SimHandle::join`](super::SimHandle::join)'s result too).
    Failed(String),
}

/// One heater in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeaterView {
    pub id: String,
    pub temperature: f64,
    pub setting: Setting,
    pub on: bool,
    /// Reached its band since the last setting change.
    pub settled: bool,
    /// In its band now.
    pub in_band: bool,
    pub violations: u64,
    /// The last command applied and its simulated time.
    pub last_command: Option<(Command, Duration)>,
}

/// A point of a heater's recent history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub temperature: f64,
    pub setting: Setting,
    pub on: bool,
}

/// Recent history of one displayed heater, oldest first, one sample per
/// [`Snapshot::history_spacing`] of simulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaterHistory {
    /// Index into [`Snapshot::heaters`].
    pub index: usize,
    pub samples: VecDeque<Sample>,
}

/// The state of a run, refreshed every [`SimConfig::snapshot_every`](super::SimConfig::snapshot_every); what a
/// UI draws.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub phase: Phase,
    /// Simulated time since the clock started.
    pub sim_time: Duration,
    /// Wall-clock time since the clock started.
    pub wall_time: Duration,
    /// The requested speedup.
    pub speedup: f64,
    /// The run's simulated duration limit.
    pub limit: Option<Duration>,
    /// Records sent per wall-clock second, over the last second.
    pub records_per_sec: f64,
    pub counters: Counters,
    /// Heaters settling after a setting change.
    pub settling: usize,
    /// Heaters in their band now.
    pub in_band: usize,
    pub violations: u64,
    /// Largest excursion beyond the band of any settled heater, °C.
    pub max_excursion: f64,
    /// See [`SimConfig::tolerance`](super::SimConfig::tolerance).
    pub tolerance: f64,
    pub heaters: Vec<HeaterView>,
    /// For the first [`SimConfig::display`](super::SimConfig::display) heaters.
    pub history: Vec<HeaterHistory>,
    pub history_spacing: Duration,
    pub history_len: usize,
}

impl Snapshot {
    /// Simulated seconds per wall second actually achieved.
    pub fn effective_speedup(&self) -> f64 {
        ratio(self.sim_time, self.wall_time)
    }
}

/// Locks the shared snapshot; a panic elsewhere leaves a valid one behind.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
