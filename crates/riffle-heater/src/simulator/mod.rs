//! Many heaters in one process, with the physics of the book's companion
//! heater, talking to a controller only through the log.
//!
//! # Layout
//!
//! - [`HeaterParams`], [`HeaterModel`]: the physics of one heater, pure and
//!   exact: temperature is piecewise linear in simulated time, so advancing
//!   by any amount gives the same result as advancing in small steps.
//! - [`BandTracker`]: how well a heater is held in its thermostat band
//!   (settling time, time in band, excursions, violations).
//! - [`SimConfig`], [`Simulator`], [`SimHandle`]: a run: heaters publish
//!   settings and measurements, a consumer of the control topic switches them.
//! - [`Snapshot`]: a live view for a UI; [`SimReport`]: the results.
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

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use riffle::log::{ConsumerConfig, Log, OffsetReset, RecordRef, TopicPartition};
use riffle::stream::{Consumer, Producer, Stopper};
use riffle::{Error, Result};

use crate::messages::{
    measurement_json, setting_json, Command, Setting, CONTROL_TOPIC, SENSOR_TOPIC,
};

// ---------------------------------------------------------------------------
// Physics
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Band tracking
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

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
    /// Wall-clock time between two updates of the shared [`Snapshot`].
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

    fn settings_topic(&self) -> &str {
        self.settings_topic.as_deref().unwrap_or(&self.sensor_topic)
    }
}

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

// ---------------------------------------------------------------------------
// Live view and results
// ---------------------------------------------------------------------------

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting for the control topic's partitions; the clock has not started.
    #[default]
    Joining,
    Running,
    Finished,
    /// Ended by an error (given in [`SimHandle::join`]'s result too).
    Failed(String),
}

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

/// The state of a run, refreshed every [`SimConfig::snapshot_every`]; what a
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
    /// See [`SimConfig::tolerance`].
    pub tolerance: f64,
    pub heaters: Vec<HeaterView>,
    /// For the first [`SimConfig::display`] heaters.
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

fn ratio(sim: Duration, wall: Duration) -> f64 {
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

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

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
        let inbox: Arc<Mutex<Vec<Arrival>>> = Arc::default();
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
            .map_err(|e| Error::Backend(format!("cannot start simulator thread: {e}")))?;
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
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(Error::Backend("simulator thread panicked".into()))),
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A control record as the consumer thread saw it, stamped with its wall
/// arrival time (see [`arrival`]), for the simulator thread to apply.
struct Arrival {
    wall: Instant,
    what: Incoming,
}

enum Incoming {
    Command(usize, Command),
    Malformed(usize),
    Ignored,
}

/// Maps a record key to a heater index without allocating.
#[derive(Clone)]
struct IdLookup {
    prefix: Vec<u8>,
    width: usize,
    count: usize,
}

impl IdLookup {
    fn index(&self, key: &[u8]) -> Option<usize> {
        let digits = key.strip_prefix(self.prefix.as_slice())?;
        if digits.len() != self.width || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i = digits.iter().try_fold(0usize, |n, d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })?;
        (i < self.count).then_some(i)
    }
}

fn control_handler(
    inbox: Arc<Mutex<Vec<Arrival>>>,
    ids: IdLookup,
) -> impl FnMut(RecordRef<'_>) -> Result<()> + Send + 'static {
    move |record: RecordRef<'_>| {
        let wall = Instant::now();
        let what = match record.key.and_then(|k| ids.index(k)) {
            None => Incoming::Ignored,
            Some(i) => match Command::from_json(record.value) {
                Ok(c) => Incoming::Command(i, c),
                Err(e) => {
                    tracing::debug!(offset = record.offset, "malformed control record: {e}");
                    Incoming::Malformed(i)
                }
            },
        };
        lock(&inbox).push(Arrival { wall, what });
        Ok(())
    }
}

/// What the simulator thread takes over from `start`.
struct Setup {
    config: SimConfig,
    producer: Producer,
    consumer: Consumer,
    inbox: Arc<Mutex<Vec<Arrival>>>,
    control_partitions: Vec<TopicPartition>,
    group_id: String,
}

fn run(setup: Setup, stopper: &Stopper, shared: &Mutex<Snapshot>) -> Result<SimReport> {
    let Setup {
        config,
        producer,
        consumer,
        inbox,
        control_partitions,
        group_id,
    } = setup;

    // Commands are read from the end of the topic (`Latest`), fixed when the
    // consumer takes up a partition: only once it owns them all is every
    // later command sure to be seen.
    let deadline = Instant::now() + config.join_timeout;
    loop {
        let owned = consumer.stats().assignment();
        if control_partitions.iter().all(|tp| owned.contains(tp)) {
            break;
        }
        if stopper.is_stopped() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "the simulator's consumer (group {group_id}) did not get the {} partitions of '{}' within {:?}",
                control_partitions.len(),
                config.control_topic,
                config.join_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::info!(
        heaters = config.heaters,
        speedup = config.speedup,
        seed = config.seed,
        group = %group_id,
        "heater simulator running"
    );

    let mut runner = Runner::new(&config, producer.clone());
    let started = Instant::now();
    let mut clock = Clock {
        speedup: config.speedup,
        base_wall: started,
        base_sim: 0.0,
        max_step: config.max_step.as_secs_f64() * config.speedup,
    };
    let limit = config.duration.map(|d| d.as_secs_f64());
    let mut arrivals = Vec::new();
    let mut last_publish: Option<Instant> = None;
    let mut pacer = config.pace.clone().map(Pacer::new);
    // Stopped while joining: end before the heaters say anything.
    let result = if stopper.is_stopped() {
        Ok(())
    } else {
        loop {
            let now = Instant::now();
            let mut target = clock.advance(now, runner.now);
            if let Some(limit) = limit {
                target = target.min(limit);
            }
            std::mem::swap(&mut arrivals, &mut *lock(&inbox));
            // Read after the inbox is taken: every command that arrived was
            // sent before this read, so when as many arrived as were sent,
            // all of them did.
            let progress = pacer.as_ref().map(|p| (p.pace.probe)());
            if let (Some(pacer), Some(progress)) = (&mut pacer, progress) {
                target = match pacer.limit(&runner, progress, arrivals.len(), target, now) {
                    Ok(t) => t,
                    Err(e) => break Err(e),
                };
                if target < clock.sim_of(now) {
                    clock.hold(now, target.max(runner.now));
                }
            }
            let target = target.max(runner.now);
            let mut step = || -> Result<()> {
                for a in arrivals.drain(..) {
                    let at = clock.sim_of(a.wall).clamp(runner.now, target);
                    runner.run_to(at)?;
                    runner.receive(a.what, at)?;
                }
                runner.run_to(target)
            };
            if let Err(e) = step() {
                break Err(e);
            }
            let done = limit.is_some_and(|l| target >= l) || stopper.is_stopped();
            if done || last_publish.is_none_or(|t| now.duration_since(t) >= config.snapshot_every) {
                runner.publish(shared, Phase::Running, now.duration_since(started), now);
                last_publish = Some(now);
            }
            if done {
                break Ok(());
            }
            std::thread::sleep(config.tick);
        }
    };
    let wall = started.elapsed();
    consumer.stop();
    let flushed = producer.flush(Producer::CLOSE_TIMEOUT);
    let closed = consumer.join();
    result?;
    flushed?;
    closed?;
    runner.publish(shared, Phase::Finished, wall, Instant::now());
    let report = runner.report(group_id, config.seed, wall);
    tracing::info!(
        simulated = ?report.simulated,
        ?wall,
        measurements = report.counters.measurements,
        commands = report.counters.commands_applied,
        violations = report.violations(),
        "heater simulator finished"
    );
    Ok(report)
}

/// Maps wall-clock instants to simulated seconds.
struct Clock {
    speedup: f64,
    base_wall: Instant,
    base_sim: f64,
    /// The most simulated time one tick may add.
    max_step: f64,
}

impl Clock {
    fn sim_of(&self, wall: Instant) -> f64 {
        self.base_sim + wall.saturating_duration_since(self.base_wall).as_secs_f64() * self.speedup
    }

    /// Maps `now` to simulated time `sim` from here on: the clock resumes
    /// from where it was held.
    fn hold(&mut self, now: Instant, sim: f64) {
        self.base_sim = sim;
        self.base_wall = now;
    }

    /// The simulated time at `now`, given that the run has reached `from`;
    /// after a stall, moves the mapping so that time resumes from a step
    /// beyond `from` instead of jumping.
    fn advance(&mut self, now: Instant, from: f64) -> f64 {
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
struct Pacer {
    pace: Pace,
    lead: f64,
    /// Simulated time up to which every record sent has been consumed and
    /// answered.
    caught_up: f64,
    /// When the clock stopped moving, if it has.
    held_since: Option<Instant>,
}

impl Pacer {
    fn new(pace: Pace) -> Self {
        Self {
            lead: pace.lead.as_secs_f64(),
            pace,
            caught_up: 0.0,
            held_since: None,
        }
    }

    /// The furthest this tick may take simulated time, from `target`, given
    /// what the probe read and the `arriving` commands this tick applies.
    fn limit(
        &mut self,
        runner: &Runner,
        progress: LoopProgress,
        arriving: usize,
        target: f64,
        now: Instant,
    ) -> Result<f64> {
        // The gate of this tick comes from earlier ticks only, so that a
        // command arriving now still lands within the lead of its cause.
        let gate = self.caught_up + self.lead;
        let sent = runner.counters.records_sent();
        let answered = runner.counters.commands_received + arriving as u64;
        if progress.consumed >= sent && answered >= progress.sent {
            self.caught_up = runner.now;
        }
        if target <= gate || gate > runner.now {
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
        Ok(runner.now)
    }
}

/// One heater of a run.
struct Heater {
    id: String,
    model: HeaterModel,
    tracker: BandTracker,
    measurements: u64,
    settings: u64,
    applied: u64,
    malformed: u64,
    switches: u64,
    last_measurement: f64,
    last_command: Option<(Command, f64)>,
}

/// A heater's next event, ordered for a min-heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Due {
    time: f64,
    index: usize,
}

impl Eq for Due {}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .time
            .total_cmp(&self.time)
            .then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Where records go and how they look.
struct Outlet {
    producer: Producer,
    sensor_topic: String,
    settings_topic: String,
    keyless: bool,
}

impl Outlet {
    fn send(&self, topic: &str, id: &str, body: Vec<u8>) -> Result<()> {
        if self.keyless {
            self.producer.send(topic, None, &with_id(id, &body))
        } else {
            self.producer.send(topic, Some(id.as_bytes()), &body)
        }
    }
}

/// `{"id":"<id>",...}` from a JSON object body `{...}` (ids are checked to
/// need no escaping).
fn with_id(id: &str, body: &[u8]) -> Vec<u8> {
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + id.len() + 8);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\"");
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// The simulator thread's state.
struct Runner {
    heaters: Vec<Heater>,
    queue: BinaryHeap<Due>,
    outlet: Outlet,
    /// Simulated time processed so far.
    now: f64,
    counters: Counters,
    reactions: u64,
    reaction_total: f64,
    reaction_max: f64,
    history: Vec<VecDeque<Sample>>,
    history_len: usize,
    history_spacing: f64,
    samples_taken: u64,
    /// `(wall, records sent)` over about the last second, for the rate.
    rate_window: VecDeque<(Instant, u64)>,
    speedup: f64,
    tolerance: f64,
}

impl Runner {
    fn new(config: &SimConfig, producer: Producer) -> Self {
        let tolerance = config.tolerance();
        let heaters: Vec<Heater> = (0..config.heaters)
            .map(|i| {
                let model = HeaterModel::new(config.params, config.seed, i as u64);
                let tracker =
                    BandTracker::new(model.setting(), tolerance, 0.0, model.temperature());
                Heater {
                    id: config.heater_id(i),
                    model,
                    tracker,
                    measurements: 0,
                    settings: 0,
                    applied: 0,
                    malformed: 0,
                    switches: 0,
                    last_measurement: 0.0,
                    last_command: None,
                }
            })
            .collect();
        let queue = heaters
            .iter()
            .enumerate()
            .map(|(index, h)| Due {
                time: h.model.next_event(),
                index,
            })
            .collect();
        let display = config.display.min(config.heaters);
        Self {
            heaters,
            queue,
            outlet: Outlet {
                producer,
                sensor_topic: config.sensor_topic.clone(),
                settings_topic: config.settings_topic().to_owned(),
                keyless: config.keyless,
            },
            now: 0.0,
            counters: Counters::default(),
            reactions: 0,
            reaction_total: 0.0,
            reaction_max: 0.0,
            history: vec![VecDeque::with_capacity(config.history_len); display],
            history_len: config.history_len,
            history_spacing: config.history_spacing.as_secs_f64(),
            samples_taken: 0,
            rate_window: VecDeque::new(),
            speedup: config.speedup,
            tolerance,
        }
    }

    fn next_sample(&self) -> f64 {
        if self.history.is_empty() || self.history_len == 0 {
            f64::INFINITY
        } else {
            self.samples_taken as f64 * self.history_spacing
        }
    }

    /// Runs every event (heater events, history samples) due up to `t`, in
    /// simulated-time order.
    fn run_to(&mut self, t: f64) -> Result<()> {
        loop {
            let heater = self.queue.peek().map_or(f64::INFINITY, |d| d.time);
            let sample = self.next_sample();
            if sample <= heater && sample <= t {
                self.sample(sample);
            } else if heater <= t {
                let Due { time, index } = self.queue.pop().expect("peeked");
                self.advance(index, time)?;
                self.queue.push(Due {
                    time: self.heaters[index].model.next_event(),
                    index,
                });
            } else {
                break;
            }
        }
        self.now = self.now.max(t);
        Ok(())
    }

    /// Advances one heater to `t`, sending what it says on the way.
    fn advance(&mut self, index: usize, t: f64) -> Result<()> {
        let Runner {
            heaters,
            outlet,
            counters,
            ..
        } = self;
        let h = &mut heaters[index];
        let mut failed = None;
        h.model.advance(t, |ev| {
            let sent = match ev.kind {
                EventKind::Setting(s) => {
                    h.tracker.change_setting(ev.time, ev.temperature, s);
                    h.settings += 1;
                    counters.settings += 1;
                    outlet.send(&outlet.settings_topic, &h.id, setting_json(&s))
                }
                EventKind::Measurement => {
                    h.tracker.measured(ev.time, ev.temperature);
                    h.measurements += 1;
                    h.last_measurement = ev.time;
                    counters.measurements += 1;
                    outlet.send(
                        &outlet.sensor_topic,
                        &h.id,
                        measurement_json(ev.temperature),
                    )
                }
            };
            if let Err(e) = sent {
                failed.get_or_insert(e);
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// Applies a control record at simulated time `t` (everything before `t`
    /// has run).
    fn receive(&mut self, what: Incoming, t: f64) -> Result<()> {
        self.counters.commands_received += 1;
        let (index, command) = match what {
            Incoming::Ignored => {
                self.counters.commands_ignored += 1;
                return Ok(());
            }
            Incoming::Malformed(i) => {
                self.counters.commands_malformed += 1;
                self.heaters[i].malformed += 1;
                return Ok(());
            }
            Incoming::Command(i, c) => (i, c),
        };
        self.counters.commands_applied += 1;
        // After `run_to(t)` nothing of this heater is due by `t`, so this
        // only integrates; a stale queue entry for it is harmless.
        self.advance(index, t)?;
        let h = &mut self.heaters[index];
        h.tracker.extend(t, h.model.temperature());
        h.applied += 1;
        h.last_command = Some((command, t));
        if h.model.set_on(command == Command::On) {
            h.switches += 1;
            self.counters.switches += 1;
            let reaction = t - h.last_measurement;
            self.reactions += 1;
            self.reaction_total += reaction;
            self.reaction_max = self.reaction_max.max(reaction);
        }
        Ok(())
    }

    fn sample(&mut self, t: f64) {
        for (i, samples) in self.history.iter_mut().enumerate() {
            let m = &self.heaters[i].model;
            if samples.len() == self.history_len {
                samples.pop_front();
            }
            samples.push_back(Sample {
                temperature: m.temperature_at(t),
                setting: m.setting(),
                on: m.is_on(),
            });
        }
        self.samples_taken += 1;
    }

    /// Brings every tracker up to now and refreshes the shared snapshot.
    fn publish(&mut self, shared: &Mutex<Snapshot>, phase: Phase, wall: Duration, now: Instant) {
        let sent = self.counters.records_sent();
        self.rate_window.push_back((now, sent));
        while self
            .rate_window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.rate_window.pop_front();
        }
        let rate = match self.rate_window.front() {
            Some(&(t, n)) if now > t => (sent - n) as f64 / now.duration_since(t).as_secs_f64(),
            _ => 0.0,
        };
        let t = self.now;
        let mut s = lock(shared);
        let fresh = s.heaters.len() != self.heaters.len();
        if fresh {
            s.heaters = self
                .heaters
                .iter()
                .map(|h| HeaterView {
                    id: h.id.clone(),
                    temperature: h.model.temperature(),
                    setting: h.model.setting(),
                    on: h.model.is_on(),
                    settled: false,
                    in_band: false,
                    violations: 0,
                    last_command: None,
                })
                .collect();
        }
        let (mut settling, mut in_band, mut violations, mut excursion) = (0, 0, 0, 0.0f64);
        for (h, v) in self.heaters.iter_mut().zip(s.heaters.iter_mut()) {
            let temperature = h.model.temperature_at(t);
            h.tracker.extend(t, temperature);
            v.temperature = temperature;
            v.setting = h.model.setting();
            v.on = h.model.is_on();
            v.settled = !h.tracker.is_settling();
            v.in_band = h.tracker.in_band(temperature);
            v.violations = h.tracker.violations();
            v.last_command = h.last_command.map(|(c, at)| (c, secs(at)));
            settling += usize::from(!v.settled);
            in_band += usize::from(v.in_band);
            violations += v.violations;
            excursion = excursion.max(h.tracker.max_excursion());
        }
        s.phase = phase;
        s.sim_time = secs(t);
        s.wall_time = wall;
        s.speedup = self.speedup;
        s.records_per_sec = rate;
        s.counters = self.counters;
        s.settling = settling;
        s.in_band = in_band;
        s.violations = violations;
        s.max_excursion = excursion;
        s.tolerance = self.tolerance;
        s.history.resize_with(self.history.len(), || HeaterHistory {
            index: 0,
            samples: VecDeque::new(),
        });
        for (i, (dst, src)) in s.history.iter_mut().zip(&self.history).enumerate() {
            dst.index = i;
            dst.samples.clone_from(src);
        }
    }

    fn report(&mut self, group_id: String, seed: u64, wall: Duration) -> SimReport {
        let t = self.now;
        let heaters = self
            .heaters
            .iter_mut()
            .map(|h| {
                h.tracker.extend(t, h.model.temperature_at(t));
                let tr = &h.tracker;
                HeaterReport {
                    id: h.id.clone(),
                    measurements: h.measurements,
                    settings: h.settings,
                    commands_applied: h.applied,
                    commands_malformed: h.malformed,
                    switches: h.switches,
                    first_settle: tr.first_settle().map(secs),
                    longest_settle: tr.longest_settle().map(secs),
                    settling_at_end: tr.is_settling(),
                    settled_time: secs(tr.settled_time()),
                    in_band_time: secs(tr.in_band_time()),
                    max_excursion: tr.max_excursion(),
                    violations: tr.violations(),
                    temperature: h.model.temperature_at(t),
                    setting: h.model.setting(),
                    on: h.model.is_on(),
                }
            })
            .collect();
        SimReport {
            group_id,
            seed,
            speedup: self.speedup,
            simulated: secs(t),
            wall,
            tolerance: self.tolerance,
            counters: self.counters,
            reaction_mean: (self.reactions > 0)
                .then(|| secs(self.reaction_total / self.reactions as f64)),
            reaction_max: (self.reactions > 0).then(|| secs(self.reaction_max)),
            heaters,
        }
    }
}

/// Simulated seconds as a `Duration`.
fn secs(t: f64) -> Duration {
    Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)
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

    #[test]
    fn ids_are_padded_and_parsed_back() {
        let mut c = SimConfig::new(200);
        assert_eq!(c.heater_id(7), "heater-0007");
        let ids = IdLookup {
            prefix: b"heater-".to_vec(),
            width: 4,
            count: 200,
        };
        assert_eq!(ids.index(b"heater-0007"), Some(7));
        assert_eq!(ids.index(b"heater-0199"), Some(199));
        assert_eq!(ids.index(b"heater-0200"), None);
        assert_eq!(ids.index(b"heater-007"), None);
        assert_eq!(ids.index(b"heater-00a7"), None);
        assert_eq!(ids.index(b"other-0007"), None);
        c.heaters = 100_001;
        assert_eq!(c.heater_id(5), "heater-000005");
        assert_eq!(
            with_id("h-1", br#"{"measurement":45.2}"#),
            br#"{"id":"h-1","measurement":45.2}"#
        );
    }

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
