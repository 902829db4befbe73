//! How well a heater is held in its thermostat band: settling time, time
//! in band, excursions, violations. Reads temperatures only, so that the
//! same judge serves the live view and the final report.

use crate::messages::Setting;

/// Follows one heater's temperature (a piecewise linear curve given by its
/// corner points) against its band `[Td - down, Td + up]`.
///
/// After each setting change the heater is *settling* until the temperature
/// first enters the band; the time that takes is recorded. Once settled, the
/// tracker integrates the time spent in the band, records the largest
/// excursion beyond it, and counts a *violation* each time the temperature
/// leaves the band widened by `tolerance`.
#[derive(Debug, Clone)]
pub struct BandTracker {
    low: f64,
    high: f64,
    tolerance: f64,
    /// When tracking started.
    start: f64,
    time: f64,
    temperature: f64,
    /// When the current settling began; `None` once settled.
    settling_since: Option<f64>,
    first_settle: Option<f64>,
    longest_settle: Option<f64>,
    settled_time: f64,
    in_band_time: f64,
    max_excursion: f64,
    violations: u64,
}

impl BandTracker {
    /// Starts tracking at `(time, temperature)`, settling towards `setting`.
    pub fn new(setting: Setting, tolerance: f64, time: f64, temperature: f64) -> Self {
        let mut t = Self {
            low: 0.0,
            high: 0.0,
            tolerance,
            start: time,
            time,
            temperature,
            settling_since: None,
            first_settle: None,
            longest_settle: None,
            settled_time: 0.0,
            in_band_time: 0.0,
            max_excursion: 0.0,
            violations: 0,
        };
        t.change_setting(time, temperature, setting);
        t
    }

    /// Adds the next corner point: the temperature went linearly from the
    /// last point to `(t, temperature)`.
    pub fn extend(&mut self, t: f64, temperature: f64) {
        let (t0, y0) = (self.time, self.temperature);
        self.time = t.max(t0);
        self.temperature = temperature;
        if t <= t0 {
            return;
        }
        let (mut a, mut ya) = (t0, y0);
        if let Some(since) = self.settling_since {
            match self.entry(t0, y0, t, temperature) {
                None => return,
                Some(te) => {
                    ya = lerp(t0, y0, t, temperature, te);
                    a = te;
                    self.settle(te, since);
                }
            }
        }
        self.settled_segment(a, ya, t, temperature);
    }

    /// The setting changed at `t`: close the curve there and start settling
    /// towards the new band (at once settled if already inside it).
    pub fn change_setting(&mut self, t: f64, temperature: f64, setting: Setting) {
        self.extend(t, temperature);
        self.low = setting.temperature - setting.down_delta;
        self.high = setting.temperature + setting.up_delta;
        self.settling_since = Some(t);
        if self.in_band(temperature) {
            self.settle(t, t);
        }
    }

    pub fn in_band(&self, temperature: f64) -> bool {
        (self.low..=self.high).contains(&temperature)
    }

    pub fn is_settling(&self) -> bool {
        self.settling_since.is_some()
    }

    /// Time from the start of tracking to the first time in band.
    pub fn first_settle(&self) -> Option<f64> {
        self.first_settle
    }

    /// The longest completed settling after any setting change.
    pub fn longest_settle(&self) -> Option<f64> {
        self.longest_settle
    }

    pub fn settled_time(&self) -> f64 {
        self.settled_time
    }

    pub fn in_band_time(&self) -> f64 {
        self.in_band_time
    }

    /// Largest distance beyond the band while settled, °C.
    pub fn max_excursion(&self) -> f64 {
        self.max_excursion
    }

    pub fn violations(&self) -> u64 {
        self.violations
    }

    pub fn tolerance(&self) -> f64 {
        self.tolerance
    }

    /// When a segment from `(t0, y0)` to `(t1, y1)` first touches the band.
    fn entry(&self, t0: f64, y0: f64, t1: f64, y1: f64) -> Option<f64> {
        let at = |level: f64| t0 + (level - y0) / (y1 - y0) * (t1 - t0);
        if self.in_band(y0) {
            Some(t0)
        } else if y0 < self.low && y1 >= self.low {
            Some(at(self.low).clamp(t0, t1))
        } else if y0 > self.high && y1 <= self.high {
            Some(at(self.high).clamp(t0, t1))
        } else {
            None
        }
    }

    fn settle(&mut self, at: f64, since: f64) {
        let took = at - since;
        if self.first_settle.is_none() {
            self.first_settle = Some(at - self.start);
        }
        self.longest_settle = Some(self.longest_settle.map_or(took, |l| l.max(took)));
        self.settling_since = None;
    }

    fn excursion(&self, y: f64) -> f64 {
        (y - self.high).max(self.low - y).max(0.0)
    }

    fn settled_segment(&mut self, a: f64, ya: f64, b: f64, yb: f64) {
        let dt = b - a;
        self.settled_time += dt;
        self.in_band_time += dt * fraction_between(ya, yb, self.low, self.high);
        // The curve is linear, so its extremes are at the ends.
        let (ea, eb) = (self.excursion(ya), self.excursion(yb));
        self.max_excursion = self.max_excursion.max(ea).max(eb);
    }

    /// A measurement the heater reported at `t`. Counts a violation when a
    /// settled heater reports a temperature further outside its band than
    /// the tolerance. Judged on the measurements, as the controller sees
    /// them: between two of them the temperature may run on for a whole
    /// interval plus the command's round trip, which no controller can
    /// prevent.
    pub fn measured(&mut self, t: f64, temperature: f64) {
        self.extend(t, temperature);
        if !self.is_settling() && self.excursion(temperature) > self.tolerance + 1e-9 {
            self.violations += 1;
        }
    }
}

fn lerp(t0: f64, y0: f64, t1: f64, y1: f64, t: f64) -> f64 {
    if t1 == t0 {
        y1
    } else {
        y0 + (y1 - y0) * (t - t0) / (t1 - t0)
    }
}

/// The fraction of a linear segment from `ya` to `yb` that lies in `[lo, hi]`.
fn fraction_between(ya: f64, yb: f64, lo: f64, hi: f64) -> f64 {
    if ya == yb {
        return if (lo..=hi).contains(&ya) { 1.0 } else { 0.0 };
    }
    let s_lo = (lo - ya) / (yb - ya);
    let s_hi = (hi - ya) / (yb - ya);
    let (s0, s1) = (s_lo.min(s_hi).max(0.0), s_lo.max(s_hi).min(1.0));
    (s1 - s0).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(t: f64) -> Setting {
        Setting {
            temperature: t,
            up_delta: 1.0,
            down_delta: 1.0,
        }
    }

    #[test]
    fn tracker_times_settling_and_integrates_time_in_band() {
        let mut tr = BandTracker::new(setting(45.0), 0.2, 0.0, 42.0);
        assert!(tr.is_settling());
        tr.extend(60.0, 43.0);
        assert!(tr.is_settling());
        // Rising at 1 °C/min: enters [44, 46] at 120 s, leaves it at 240 s.
        tr.extend(300.0, 47.0);
        assert!(!tr.is_settling());
        assert!((tr.first_settle().unwrap() - 120.0).abs() < 1e-9);
        assert!((tr.settled_time() - 180.0).abs() < 1e-9);
        assert!((tr.in_band_time() - 120.0).abs() < 1e-9);
        assert!((tr.max_excursion() - 1.0).abs() < 1e-9);
        assert_eq!(tr.violations(), 0, "only measurements are judged");
        // Each measurement beyond the tolerance is a violation.
        tr.measured(310.0, 47.1);
        assert_eq!(tr.violations(), 1);
        tr.measured(400.0, 45.0);
        tr.measured(500.0, 46.1);
        assert_eq!(tr.violations(), 1, "46.1 is within the tolerance");
        tr.measured(600.0, 46.3);
        tr.measured(610.0, 46.3);
        assert_eq!(tr.violations(), 3);
    }

    #[test]
    fn tracker_restarts_settling_on_a_setting_change() {
        let mut tr = BandTracker::new(setting(45.0), 0.2, 0.0, 45.0);
        assert!(!tr.is_settling(), "in band at once");
        assert_eq!(tr.first_settle(), Some(0.0));
        tr.extend(100.0, 45.5);
        tr.change_setting(100.0, 45.5, setting(40.0));
        assert!(tr.is_settling());
        // Falling at 1 °C / 2 min from 45.5 reaches 41 after 540 s; settling
        // time counts no violation even though far outside.
        tr.extend(700.0, 40.5);
        assert!(!tr.is_settling());
        assert_eq!(tr.violations(), 0);
        assert!((tr.longest_settle().unwrap() - 540.0).abs() < 1e-9);
        assert!((tr.settled_time() - (100.0 + 60.0)).abs() < 1e-9);
    }

    #[test]
    fn fraction_of_a_segment_in_a_band() {
        assert_eq!(fraction_between(44.0, 46.0, 44.0, 46.0), 1.0);
        assert_eq!(fraction_between(43.0, 47.0, 44.0, 46.0), 0.5);
        assert_eq!(fraction_between(47.0, 43.0, 44.0, 46.0), 0.5);
        assert_eq!(fraction_between(47.0, 48.0, 44.0, 46.0), 0.0);
        assert_eq!(fraction_between(45.0, 45.0, 44.0, 46.0), 1.0);
    }
}
