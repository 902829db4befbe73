//! The physics of one heater, pure and exact: temperature is piecewise
//! linear in simulated time, so advancing by any amount gives the same
//! result as advancing in small steps. Nothing here knows of the log or
//! the wall clock.

use std::time::Duration;

use riffle::{Error, Result};

use crate::messages::Setting;

/// The physics and thermostat of a heater. The defaults are those of the
/// book's companion heater (see docs/heater.md, "Simulator defaults").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaterParams {
    /// Temperature at the start, °C.
    pub start_temperature: f64,
    /// The first thermostat setting, °C.
    pub desired: f64,
    /// The band is `[desired - down_delta, desired + up_delta]`.
    pub up_delta: f64,
    pub down_delta: f64,
    /// °C per simulated second while ON.
    pub heating_rate: f64,
    /// °C per simulated second while OFF.
    pub cooling_rate: f64,
    /// Simulated time between two measurements.
    pub measurement_interval: Duration,
    /// Simulated time between two thermostat changes; `None`: never changes.
    pub setting_interval: Option<Duration>,
    /// A change moves the setting by a whole step in `-max..=max` (0 included).
    pub max_setting_step: u32,
}

impl Default for HeaterParams {
    fn default() -> Self {
        Self {
            start_temperature: 42.0,
            desired: 45.0,
            up_delta: 1.0,
            down_delta: 1.0,
            heating_rate: 1.0 / 60.0,
            cooling_rate: 1.0 / 120.0,
            measurement_interval: Duration::from_secs(10),
            setting_interval: Some(Duration::from_secs(600)),
            max_setting_step: 5,
        }
    }
}

impl HeaterParams {
    /// Rejects values that would make the physics meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        for (name, v) in [
            ("start temperature", self.start_temperature),
            ("desired temperature", self.desired),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} must be a finite number, not {v}"));
            }
        }
        for (name, v) in [
            ("up delta", self.up_delta),
            ("down delta", self.down_delta),
            ("heating rate", self.heating_rate),
            ("cooling rate", self.cooling_rate),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a non-negative number, not {v}"));
            }
        }
        if self.measurement_interval.is_zero() {
            return bad("measurement interval must be positive".into());
        }
        if self.setting_interval.is_some_and(|d| d.is_zero()) {
            return bad("setting interval must be positive".into());
        }
        if self.max_setting_step > 1_000 {
            return bad(format!(
                "setting step must be at most 1000, not {}",
                self.max_setting_step
            ));
        }
        Ok(())
    }

    /// The setting a heater starts with.
    pub fn initial_setting(&self) -> Setting {
        Setting {
            temperature: self.desired,
            up_delta: self.up_delta,
            down_delta: self.down_delta,
        }
    }

    /// The most the temperature can change between two measurements: how far
    /// past its band a heater may go before a perfect controller can know.
    pub fn interval_change(&self) -> f64 {
        self.heating_rate.max(self.cooling_rate) * self.measurement_interval.as_secs_f64()
    }
}

/// What a heater says on the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventKind {
    /// Its thermostat setting: at the start and after every change.
    Setting(Setting),
    /// A measurement of its temperature (the event's `temperature`).
    Measurement,
}

/// An event of one heater, at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaterEvent {
    /// Simulated seconds since the start.
    pub time: f64,
    /// The temperature at `time`.
    pub temperature: f64,
    pub kind: EventKind,
}

/// One heater's physics and thermostat, with no I/O: the temperature rises
/// at `heating_rate` while ON and falls at `cooling_rate` while OFF, and the
/// model emits its setting at time 0, a measurement every interval (from a
/// phase drawn uniformly in the first interval, so that many heaters spread
/// their load), and a new setting every setting interval (also phased).
///
/// Time is simulated seconds since the start, as `f64`; event times are
/// computed as `phase + k * interval`, never accumulated, so they do not
/// drift over long runs.
#[derive(Debug, Clone)]
pub struct HeaterModel {
    params: HeaterParams,
    rng: fastrand::Rng,
    time: f64,
    temperature: f64,
    on: bool,
    setting: Setting,
    /// The initial setting has been emitted.
    announced: bool,
    measurement_phase: f64,
    measurements: u64,
    setting_phase: f64,
    changes: u64,
}

impl HeaterModel {
    /// Heater number `index` of a run seeded with `seed`: the phases and the
    /// setting steps come from an RNG seeded with both, so a run is
    /// reproducible and each heater differs from the others.
    pub fn new(params: HeaterParams, seed: u64, index: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(heater_seed(seed, index));
        // Both phases are always drawn so the step sequence does not depend
        // on whether settings change.
        let measurement_phase = rng.f64() * params.measurement_interval.as_secs_f64();
        let setting_draw = rng.f64();
        let setting_phase = params
            .setting_interval
            .map_or(0.0, |d| setting_draw * d.as_secs_f64());
        Self {
            params,
            rng,
            time: 0.0,
            temperature: params.start_temperature,
            // The book's rule: a heater starts ON if it is too cold.
            on: params.desired > params.start_temperature,
            setting: params.initial_setting(),
            announced: false,
            measurement_phase,
            measurements: 0,
            setting_phase,
            changes: 0,
        }
    }

    /// Simulated time the state below refers to.
    pub fn time(&self) -> f64 {
        self.time
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn setting(&self) -> Setting {
        self.setting
    }

    pub fn params(&self) -> &HeaterParams {
        &self.params
    }

    /// Time of the first measurement, in `[0, measurement interval)`.
    pub fn measurement_phase(&self) -> f64 {
        self.measurement_phase
    }

    /// Degrees per simulated second now (negative while cooling).
    pub fn rate(&self) -> f64 {
        if self.on {
            self.params.heating_rate
        } else {
            -self.params.cooling_rate
        }
    }

    /// The temperature at `t >= time()`, if nothing happens until then.
    pub fn temperature_at(&self, t: f64) -> f64 {
        self.temperature + self.rate() * (t - self.time).max(0.0)
    }

    /// Time of the next event (at least `time()` before the first).
    pub fn next_event(&self) -> f64 {
        if !self.announced {
            return self.time;
        }
        self.next_measurement().min(self.next_change())
    }

    fn next_measurement(&self) -> f64 {
        self.measurement_phase
            + self.measurements as f64 * self.params.measurement_interval.as_secs_f64()
    }

    fn next_change(&self) -> f64 {
        match self.params.setting_interval {
            Some(d) => self.setting_phase + (self.changes + 1) as f64 * d.as_secs_f64(),
            None => f64::INFINITY,
        }
    }

    /// Runs the heater to time `t`, handing every event due at or before `t`
    /// to `on_event` in order. A setting change due at the same time as a
    /// measurement comes first.
    pub fn advance(&mut self, t: f64, mut on_event: impl FnMut(HeaterEvent)) {
        loop {
            let next = self.next_event();
            if next > t {
                break;
            }
            self.integrate(next);
            let kind = if !self.announced {
                self.announced = true;
                EventKind::Setting(self.setting)
            } else if self.next_change() <= self.next_measurement() {
                self.changes += 1;
                let max = self.params.max_setting_step as i32;
                self.setting.temperature += f64::from(self.rng.i32(-max..=max));
                EventKind::Setting(self.setting)
            } else {
                self.measurements += 1;
                EventKind::Measurement
            };
            on_event(HeaterEvent {
                time: next,
                temperature: self.temperature,
                kind,
            });
        }
        self.integrate(t);
    }

    /// Switches the heater ON or OFF at its current time (advance it to the
    /// time of the command first). Returns whether that changed anything.
    pub fn set_on(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.on, on) != on
    }

    fn integrate(&mut self, t: f64) {
        if t > self.time {
            self.temperature = self.temperature_at(t);
            self.time = t;
        }
    }
}

/// Mixes the run's seed and a heater's index into the heater's RNG seed
/// (splitmix64), so that neighbouring heaters get unrelated streams.
fn heater_seed(seed: u64, index: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    splitmix(seed ^ splitmix(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HeaterParams {
        HeaterParams::default()
    }

    /// Every event up to `t`.
    fn events(m: &mut HeaterModel, t: f64) -> Vec<HeaterEvent> {
        let mut out = Vec::new();
        m.advance(t, |e| out.push(e));
        out
    }

    #[test]
    fn rises_one_degree_a_minute_while_on_and_falls_one_per_two_minutes_while_off() {
        let mut m = HeaterModel::new(params(), 1, 0);
        assert!(m.is_on(), "42 < 45: starts ON");
        m.advance(60.0, |_| {});
        assert!((m.temperature() - 43.0).abs() < 1e-9, "{}", m.temperature());
        assert!(m.set_on(false));
        assert!(!m.set_on(false), "switching OFF twice changes nothing");
        m.advance(180.0, |_| {});
        assert!((m.temperature() - 42.0).abs() < 1e-9, "{}", m.temperature());
        assert!((m.temperature_at(420.0) - 40.0).abs() < 1e-9);
    }

    #[test]
    fn starts_on_only_when_colder_than_desired() {
        let on = |start: f64, desired: f64| {
            let p = HeaterParams {
                start_temperature: start,
                desired,
                ..params()
            };
            HeaterModel::new(p, 0, 0).is_on()
        };
        assert!(on(42.0, 45.0));
        assert!(!on(45.0, 45.0));
        assert!(!on(50.0, 45.0));
    }

    #[test]
    fn announces_its_setting_first_then_measures_every_interval() {
        let mut m = HeaterModel::new(params(), 7, 3);
        let ev = events(&mut m, 100.0);
        assert_eq!(ev[0].time, 0.0);
        assert_eq!(ev[0].kind, EventKind::Setting(params().initial_setting()));
        let times: Vec<f64> = ev[1..].iter().map(|e| e.time).collect();
        assert!(ev[1..].iter().all(|e| e.kind == EventKind::Measurement));
        let phase = m.measurement_phase();
        assert!((0.0..10.0).contains(&phase));
        assert_eq!(times.len(), if phase == 0.0 { 11 } else { 10 });
        for (k, t) in times.iter().enumerate() {
            assert!((t - (phase + 10.0 * k as f64)).abs() < 1e-9);
        }
        // A measurement reports the temperature at its own time.
        for e in &ev[1..] {
            assert!((e.temperature - (42.0 + e.time / 60.0)).abs() < 1e-9);
        }
    }

    #[test]
    fn setting_moves_by_whole_steps_within_the_range_every_interval() {
        let mut steps = std::collections::BTreeSet::new();
        for index in 0..20 {
            let mut m = HeaterModel::new(params(), 11, index);
            let mut last = m.setting().temperature;
            let mut changes = Vec::new();
            m.advance(600.0 * 50.0, |e| {
                if let EventKind::Setting(s) = e.kind {
                    changes.push(e.time);
                    let step = s.temperature - last;
                    assert_eq!(step, step.round(), "whole steps");
                    assert!((-5.0..=5.0).contains(&step), "{step}");
                    assert_eq!((s.up_delta, s.down_delta), (1.0, 1.0));
                    steps.insert(step as i64);
                    last = s.temperature;
                }
            });
            // The announcement, then one change every 600 s after a phase.
            assert_eq!(changes[0], 0.0);
            for w in changes[1..].windows(2) {
                assert!((w[1] - w[0] - 600.0).abs() < 1e-6);
            }
            assert!(changes[1] >= 600.0 && changes[1] < 1200.0);
        }
        assert_eq!(steps, (-5..=5).collect(), "every step, 0 included, occurs");
    }

    #[test]
    fn a_seed_reproduces_a_heater_and_heaters_differ() {
        let run = |seed, index| {
            let mut m = HeaterModel::new(params(), seed, index);
            events(&mut m, 5_000.0)
        };
        assert_eq!(run(5, 2), run(5, 2));
        assert_ne!(run(5, 2), run(5, 3));
        assert_ne!(run(5, 2), run(6, 2));
        let phases: Vec<f64> = (0..100)
            .map(|i| HeaterModel::new(params(), 9, i).measurement_phase())
            .collect();
        // Spread over the interval, not bunched.
        assert!(phases.iter().any(|&p| p < 2.0) && phases.iter().any(|&p| p > 8.0));
    }

    #[test]
    fn no_setting_changes_when_disabled() {
        let p = HeaterParams {
            setting_interval: None,
            ..params()
        };
        let mut m = HeaterModel::new(p, 0, 0);
        let settings = events(&mut m, 10_000.0)
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Setting(_)))
            .count();
        assert_eq!(settings, 1);
    }

    proptest::proptest! {
        /// Advancing in one jump or in many small steps, with the same
        /// switches at the same times, gives the same events and state.
        #[test]
        fn physics_does_not_depend_on_the_step(
            seed in 0u64..1000,
            switches in proptest::collection::vec((1.0f64..500.0, proptest::bool::ANY), 0..8),
            step in 0.01f64..7.0,
        ) {
            let mut times: Vec<(f64, bool)> = switches;
            times.sort_by(|a, b| a.0.total_cmp(&b.0));
            let end = 3_000.0;
            let run = |step: Option<f64>| {
                let mut m = HeaterModel::new(params(), seed, 1);
                let mut out = Vec::new();
                let mut t = 0.0;
                for &(at, on) in times.iter().chain([(end, true)].iter()) {
                    if let Some(step) = step {
                        while t + step < at {
                            t += step;
                            m.advance(t, |e| out.push(e));
                        }
                    }
                    t = at;
                    m.advance(at, |e| out.push(e));
                    m.set_on(on);
                }
                (out, m.temperature())
            };
            let (a, ta) = run(None);
            let (b, tb) = run(Some(step));
            proptest::prop_assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                proptest::prop_assert_eq!(x.time, y.time);
                proptest::prop_assert_eq!(x.kind, y.kind);
                proptest::prop_assert!((x.temperature - y.temperature).abs() < 1e-9);
            }
            proptest::prop_assert!((ta - tb).abs() < 1e-9);
        }
    }
}
