//! The simulator's options and their defaults, in one place, and the
//! checks that need no log.

use std::time::Duration;

use riffle::{Error, Result};

use super::pace::Pace;
use super::physics::HeaterParams;
use crate::messages::{CONTROL_TOPIC, SENSOR_TOPIC};

/// How to run a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of heaters, named `<id_prefix>0000`, `<id_prefix>0001`, ...
    /// (at least four digits, more if needed to fit them all).
    pub heaters: usize,
    /// Simulated seconds per wall-clock second.
    pub speedup: f64,
    /// Seeds every heater's RNG (with its index): same seed, same run, up to
    /// the timing of the controller's commands.
    pub seed: u64,
    pub params: HeaterParams,
    /// Where measurements (and settings, unless `settings_topic`) go.
    pub sensor_topic: String,
    /// Where commands come from.
    pub control_topic: String,
    /// A topic of their own for settings, which the book recommends under
    /// load (a setting is not delayed behind many measurements).
    pub settings_topic: Option<String>,
    /// The book's round-robin variant: no key, `"id"` in the body. Records of
    /// one heater then spread over all partitions.
    pub keyless: bool,
    /// Ends the run after this much simulated time; `None`: run until stopped.
    pub duration: Option<Duration>,
    /// Heater ids are this prefix and a zero-padded index. Different
    /// prefixes let several simulators share the topics.
    pub id_prefix: String,
    /// Consumer group for the control topic; `None`: a fresh one per run, so
    /// that each simulator sees every command.
    pub group_id: Option<String>,
    /// Wall-clock time between two advances of the simulated clock.
    pub tick: Duration,
    /// The longest wall-clock stall the simulated clock catches up in one
    /// tick; after a longer one (a paused process, an overloaded machine)
    /// simulated time slows down instead of jumping, so that no controller
    /// gets a burst of stale measurements.
    pub max_step: Duration,
    /// How many heaters (the first ones) keep a temperature history for
    /// display.
    pub display: usize,
    /// Samples kept per displayed heater.
    pub history_len: usize,
    /// Simulated time between two history samples.
    pub history_spacing: Duration,
    /// Wall-clock time between two updates of the shared [`Snapshot`](super::Snapshot).
    pub snapshot_every: Duration,
    /// How long to wait for the control topic's partitions.
    pub join_timeout: Duration,
    /// Ties simulated time to the controller's progress; `None`: the wall
    /// clock alone drives it.
    pub pace: Option<Pace>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new(10)
    }
}

impl SimConfig {
    /// `heaters` heaters with the book's physics in real time on the default
    /// topics, running until stopped.
    pub fn new(heaters: usize) -> Self {
        Self {
            heaters,
            speedup: 1.0,
            seed: 0,
            params: HeaterParams::default(),
            sensor_topic: SENSOR_TOPIC.into(),
            control_topic: CONTROL_TOPIC.into(),
            settings_topic: None,
            keyless: false,
            duration: None,
            id_prefix: "heater-".into(),
            group_id: None,
            tick: Duration::from_millis(2),
            max_step: Duration::from_millis(10),
            display: 8,
            history_len: 120,
            history_spacing: Duration::from_secs(10),
            snapshot_every: Duration::from_millis(50),
            join_timeout: Duration::from_secs(30),
            pace: None,
        }
    }

    /// Digits in a heater id.
    pub fn id_width(&self) -> usize {
        self.heaters
            .saturating_sub(1)
            .max(1)
            .to_string()
            .len()
            .max(4)
    }

    /// The id of heater `index`.
    pub fn heater_id(&self, index: usize) -> String {
        format!("{}{:0w$}", self.id_prefix, index, w = self.id_width())
    }

    /// How far beyond its band a settled heater may report before it counts
    /// as a violation, °C: what the temperature changes in one measurement
    /// interval. A measurement can only first exceed the band by that much,
    /// and if the command arrives within a third of an interval (simulated
    /// time), the next measurement is back inside it.
    pub fn tolerance(&self) -> f64 {
        self.params.interval_change()
    }

    /// Checks everything that does not need the log.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if self.heaters == 0 {
            return bad("the simulator needs at least one heater".into());
        }
        if self.heaters > u32::MAX as usize {
            return bad(format!("too many heaters: {}", self.heaters));
        }
        if !(self.speedup.is_finite() && self.speedup > 0.0) {
            return bad(format!(
                "speedup must be a positive number, not {}",
                self.speedup
            ));
        }
        if self
            .id_prefix
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return bad(format!(
                "heater id prefix {:?} must not contain quotes, backslashes or control characters",
                self.id_prefix
            ));
        }
        if self.tick.is_zero() || self.max_step.is_zero() {
            return bad("tick and max step must be positive".into());
        }
        if self.history_spacing.is_zero() {
            return bad("history spacing must be positive".into());
        }
        if let Some(pace) = &self.pace {
            let interval = self.params.measurement_interval.as_secs_f64();
            if pace.lead.is_zero() || pace.lead.as_secs_f64() >= interval / 3.0 {
                return bad(format!(
                    "the pace's lead must be positive and below a third of the measurement interval ({:?}), not {:?}",
                    Duration::from_secs_f64(interval / 3.0),
                    pace.lead
                ));
            }
        }
        self.params.validate()
    }

    /// Where settings go: their own topic, else the sensor topic.
    pub(crate) fn settings_topic(&self) -> &str {
        self.settings_topic.as_deref().unwrap_or(&self.sensor_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_one_interval_of_change() {
        let mut c = SimConfig::new(1);
        assert!((c.tolerance() - 10.0 / 60.0).abs() < 1e-12);
        c.params.measurement_interval = Duration::from_secs(30);
        assert!((c.tolerance() - 30.0 / 60.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_configurations() {
        let bad = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::new(3);
            f(&mut c);
            matches!(c.validate(), Err(Error::InvalidInput(_)))
        };
        assert!(!bad(|_| {}));
        assert!(bad(|c| c.heaters = 0));
        assert!(bad(|c| c.speedup = 0.0));
        assert!(bad(|c| c.speedup = f64::NAN));
        assert!(bad(|c| c.params.measurement_interval = Duration::ZERO));
        assert!(bad(|c| c.params.heating_rate = -1.0));
        assert!(bad(|c| c.id_prefix = "a\"b".into()));
    }
}
