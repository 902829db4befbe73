//! The results of a run: counts, and how well each heater was held in its
//! band. Data only; the CLI renders it for the terminal.

use std::time::Duration;

use crate::messages::Setting;

/// Counts over all heaters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub measurements: u64,
    pub settings: u64,
    /// Every record read from the control topic.
    pub commands_received: u64,
    /// Valid commands keyed by one of this simulator's heaters.
    pub commands_applied: u64,
    /// Records whose key is not one of this simulator's heaters.
    pub commands_ignored: u64,
    /// Records keyed by one of our heaters whose body is not a command.
    pub commands_malformed: u64,
    /// Applied commands that changed a heater's state.
    pub switches: u64,
}

impl Counters {
    /// Records sent to the log.
    pub fn records_sent(&self) -> u64 {
        self.measurements + self.settings
    }
}

/// Simulated seconds per wall second; 0 before the wall clock moved.
pub(super) fn ratio(sim: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        sim.as_secs_f64() / wall.as_secs_f64()
    }
}

/// Results for one heater.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaterReport {
    pub id: String,
    pub measurements: u64,
    pub settings: u64,
    pub commands_applied: u64,
    pub commands_malformed: u64,
    pub switches: u64,
    /// Simulated time from the start to first being in band.
    pub first_settle: Option<Duration>,
    /// The longest settling after any setting change.
    pub longest_settle: Option<Duration>,
    /// Still settling after a setting change when the run ended.
    pub settling_at_end: bool,
    pub settled_time: Duration,
    pub in_band_time: Duration,
    pub max_excursion: f64,
    pub violations: u64,
    pub temperature: f64,
    pub setting: Setting,
    pub on: bool,
}

impl HeaterReport {
    /// Fraction of settled time spent in band; `None` if never settled.
    pub fn in_band_fraction(&self) -> Option<f64> {
        (!self.settled_time.is_zero())
            .then(|| self.in_band_time.as_secs_f64() / self.settled_time.as_secs_f64())
    }
}

/// Results of a run.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub group_id: String,
    pub seed: u64,
    pub speedup: f64,
    /// Simulated time covered.
    pub simulated: Duration,
    /// Wall-clock time the clock ran.
    pub wall: Duration,
    pub tolerance: f64,
    pub counters: Counters,
    /// Simulated time from a heater's last measurement to a command that
    /// switched it: the controller's reaction, as the heaters feel it.
    pub reaction_mean: Option<Duration>,
    pub reaction_max: Option<Duration>,
    pub heaters: Vec<HeaterReport>,
}

impl SimReport {
    /// Heaters that never reached their band.
    pub fn unsettled(&self) -> usize {
        self.heaters
            .iter()
            .filter(|h| h.first_settle.is_none())
            .count()
    }

    pub fn violations(&self) -> u64 {
        self.heaters.iter().map(|h| h.violations).sum()
    }

    /// Fraction of all heaters' settled time spent in band.
    pub fn in_band_fraction(&self) -> Option<f64> {
        let settled: f64 = self
            .heaters
            .iter()
            .map(|h| h.settled_time.as_secs_f64())
            .sum();
        let in_band: f64 = self
            .heaters
            .iter()
            .map(|h| h.in_band_time.as_secs_f64())
            .sum();
        (settled > 0.0).then(|| in_band / settled)
    }

    pub fn max_excursion(&self) -> f64 {
        self.heaters
            .iter()
            .map(|h| h.max_excursion)
            .fold(0.0, f64::max)
    }

    /// The slowest heater's time to first settle.
    pub fn first_settle_max(&self) -> Option<Duration> {
        self.heaters.iter().filter_map(|h| h.first_settle).max()
    }

    /// The mean time to first settle of the heaters that settled.
    pub fn first_settle_mean(&self) -> Option<Duration> {
        let times: Vec<Duration> = self.heaters.iter().filter_map(|h| h.first_settle).collect();
        let n = u32::try_from(times.len()).ok().filter(|&n| n > 0)?;
        Some(times.iter().sum::<Duration>() / n)
    }

    /// Simulated seconds per wall second actually achieved.
    pub fn effective_speedup(&self) -> f64 {
        ratio(self.simulated, self.wall)
    }
}
