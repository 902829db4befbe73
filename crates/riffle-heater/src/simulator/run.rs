//! The run itself: the simulator's thread, which advances every heater in
//! simulated-time order, applies the commands that arrive, and publishes
//! snapshots and the final report.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use riffle::log::TopicPartition;
use riffle::stream::{Consumer, Producer, Stopper};
use riffle::{Error, Result};

use super::band::BandTracker;
use super::config::SimConfig;
use super::io::{Inbox, Incoming, Outlet};
use super::pace::{Clock, Pacer};
use super::physics::{EventKind, HeaterModel};
use super::report::{Counters, HeaterReport, SimReport};
use super::snapshot::{lock, HeaterHistory, HeaterView, Phase, Sample, Snapshot};
use crate::messages::{measurement_json, setting_json, Command};

/// What the simulator thread takes over from `start`.
pub(super) struct Setup {
    pub(super) config: SimConfig,
    pub(super) producer: Producer,
    pub(super) consumer: Consumer,
    pub(super) inbox: Inbox,
    pub(super) control_partitions: Vec<TopicPartition>,
    pub(super) group_id: String,
}

pub(super) fn run(setup: Setup, stopper: &Stopper, shared: &Mutex<Snapshot>) -> Result<SimReport> {
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
            inbox.take_into(&mut arrivals);
            // Read after the inbox is taken: every command that arrived was
            // sent before this read, so when as many arrived as were sent,
            // all of them did.
            let progress = pacer.as_ref().map(Pacer::probe);
            if let (Some(pacer), Some(progress)) = (&mut pacer, progress) {
                target = match pacer.limit(
                    runner.now,
                    &runner.counters,
                    progress,
                    arrivals.len(),
                    target,
                    now,
                ) {
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
                epoch_ms: wall_ms(),
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
                    outlet.send(&outlet.settings_topic, &h.id, setting_json(&s), ev.time)
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
                        ev.time,
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

/// The wall clock in milliseconds since the Unix epoch.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
