//! Autoscaling on lag: consumers are added to a process while its share of
//! the group's lag stays high and removed while it stays low, so that one
//! process follows its load without a restart (see [`App::autoscale`]).
//!
//! The decision ([`Decider`]) is kept apart from the measuring thread so
//! that it depends on nothing but the samples and the times it is given.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lag::group_lag;
use super::shared::Shared;
use crate::log::{Log, TopicPartition};
use crate::stream::{ConsumerGroup, Stopper};

/// When lag per consumer counts as low: below this fraction of the
/// threshold. The gap between the two keeps a load near the threshold from
/// adding and removing a consumer in turn.
const LOW_FRACTION: u64 = 4;
/// How long one lag measurement may take: a slow broker delays the next
/// sample, and the stop by at most this.
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

/// How an app's consumer count follows its lag (see [`App::autoscale`]).
///
/// [`App::autoscale`]: super::App::autoscale
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    /// Consumers never fewer than this (at least 1).
    pub min: usize,
    /// Consumers never more than this; further capped at the input
    /// partition count (a consumer beyond it would own nothing) and, in
    /// the actors style, at the worker count.
    pub max: usize,
    /// Lag per consumer (records of this process's partitions not yet
    /// committed, divided by its consumers) above which a consumer is
    /// added; below a quarter of it one is removed.
    pub lag_per_consumer: u64,
    /// How long lag must stay above (or below) before acting, so that a
    /// burst or a rebalance does not change anything.
    pub sustain: Duration,
    /// How long to wait after a change before the next: a new consumer
    /// needs a rebalance, and a state restore in stateful apps, before it
    /// shows in the lag.
    pub cooldown: Duration,
    /// How often lag is measured.
    pub check_every: Duration,
}

impl Default for Scaling {
    /// 1 to 4 consumers, 10,000 records per consumer, 10 s sustain, 30 s
    /// cooldown, checked every second.
    fn default() -> Self {
        Self {
            min: 1,
            max: 4,
            lag_per_consumer: 10_000,
            sustain: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            check_every: Duration::from_secs(1),
        }
    }
}

impl Scaling {
    /// Between `min` and `max` consumers with the other defaults.
    pub fn between(min: usize, max: usize) -> Self {
        Self {
            min,
            max,
            ..Self::default()
        }
    }

    /// Lag per consumer below which one is removed.
    pub fn low_water(&self) -> u64 {
        self.lag_per_consumer / LOW_FRACTION
    }
}

/// What to do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Hold,
    Add,
    Remove,
}

/// One measurement of the partitions this process owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Records not yet committed.
    pub(crate) lag: u64,
    /// The sum of their end offsets: how many records ever arrived, so
    /// that two samples give the arrival rate.
    pub(crate) end: u64,
    /// Records this process has processed so far, so that two samples give
    /// the rate of processing. Counted as processed, not as committed:
    /// offsets are committed per batch, which makes a rate taken from them
    /// jump by up to a batch.
    pub(crate) processed: u64,
}

/// The share of the measured capacity of the consumers left after a
/// removal that the arrival rate may use: the rest absorbs bursts, the
/// rebalance the removal causes, and partitions that carry more records
/// than others (capacity is measured per consumer on average).
const HEADROOM: f64 = 0.7;

/// Turns lag samples into decisions: one step at a time, only after lag
/// stayed on one side for `sustain`, never within `cooldown` of the last
/// change, never outside `min..=max`.
///
/// Lag alone cannot tell when to remove a consumer: whenever the consumers
/// keep up it is near zero, however little spare capacity they have, so a
/// removal would be followed by an addition, and so on. Hence, while lag is
/// high (the consumers are saturated) the decider measures how many records
/// per second a consumer processes, and removes one only if the records
/// arriving over the last `sustain` fit in what the remaining consumers can
/// do, with headroom. Before any saturation it has no measure and goes by
/// lag alone.
#[derive(Debug)]
pub(crate) struct Decider {
    policy: Scaling,
    /// Lag per consumer above the threshold since.
    high_since: Option<Instant>,
    /// Below the low water mark since.
    low_since: Option<Instant>,
    last_change: Option<Instant>,
    /// The samples of the last `sustain`, and the one just before, that
    /// rates are measured over.
    recent: VecDeque<(Instant, Sample)>,
    /// Records per second one consumer processed when last saturated.
    capacity: Option<f64>,
    /// Records per second arriving when the last removal was decided.
    arrival: Option<f64>,
}

impl Decider {
    pub(crate) fn new(policy: Scaling) -> Self {
        Self {
            policy,
            high_since: None,
            low_since: None,
            last_change: None,
            recent: VecDeque::new(),
            capacity: None,
            arrival: None,
        }
    }

    pub(crate) fn policy(&self) -> &Scaling {
        &self.policy
    }

    /// Records per second one consumer processed when last saturated.
    pub(crate) fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Records per second that arrived over the `sustain` that led to the
    /// last removal.
    pub(crate) fn arrival(&self) -> Option<f64> {
        self.arrival
    }

    /// Forgets what was sampled, as when the partitions this process owns
    /// changed: samples before and after do not compare.
    pub(crate) fn restart(&mut self) {
        self.high_since = None;
        self.low_since = None;
        self.recent.clear();
    }

    /// Records per second that arrived, and that were processed, over the
    /// recent samples.
    fn rates(&self) -> (f64, f64) {
        let (Some((t0, a)), Some((t1, b))) = (self.recent.front(), self.recent.back()) else {
            return (0.0, 0.0);
        };
        let secs = t1.duration_since(*t0).as_secs_f64().max(1e-3);
        let arrived = b.end.saturating_sub(a.end) as f64;
        let processed = b.processed.saturating_sub(a.processed) as f64;
        (arrived / secs, processed / secs)
    }

    /// Takes a sample of the partitions of this process, shared by
    /// `consumers`, at `now`.
    pub(crate) fn sample(&mut self, now: Instant, consumers: usize, sample: Sample) -> Decision {
        let consumers = consumers.max(1);
        let per = sample.lag / consumers as u64;
        let (threshold, low_water, sustain) = (
            self.policy.lag_per_consumer,
            self.policy.low_water(),
            self.policy.sustain,
        );
        self.recent.push_back((now, sample));
        while self.recent.len() > 2 && now.duration_since(self.recent[1].0) >= sustain {
            self.recent.pop_front();
        }
        if per > threshold {
            self.high_since.get_or_insert(now);
            self.low_since = None;
        } else if per < low_water {
            self.low_since.get_or_insert(now);
            self.high_since = None;
        } else {
            self.high_since = None;
            self.low_since = None;
        }
        let held = |since: Option<Instant>| since.is_some_and(|s| now.duration_since(s) >= sustain);
        let (arrival, processed) = self.rates();
        let p = &self.policy;
        // A change disturbs the numbers for its cooldown: the rebalance
        // stalls processing, then commits its backlog at once.
        let undisturbed = match (self.last_change, self.recent.front()) {
            (Some(change), Some((first, _))) => *first >= change + p.cooldown,
            _ => true,
        };
        if held(self.high_since) && undisturbed {
            // Saturated over a whole window of samples.
            self.capacity = Some(processed / consumers as f64);
        }
        if self
            .last_change
            .is_some_and(|t| now.duration_since(t) < p.cooldown)
        {
            return Decision::Hold;
        }
        let fits = self
            .capacity
            .is_none_or(|c| arrival <= c * (consumers - 1) as f64 * HEADROOM);
        let decision = if held(self.high_since) && consumers < p.max {
            Decision::Add
        } else if held(self.low_since) && consumers > p.min && fits {
            self.arrival = Some(arrival);
            Decision::Remove
        } else {
            Decision::Hold
        };
        if decision != Decision::Hold {
            self.last_change = Some(now);
            // The next change needs evidence gathered with the new count;
            // the samples stay comparable (the same partitions).
            self.high_since = None;
            self.low_since = None;
        }
        decision
    }
}

/// The thread that samples lag and adds or removes consumers of `group`.
/// Dropping it stops the thread, which holds a handle on the group: an app
/// dropped without `stop` still stops its consumers.
pub(crate) struct Autoscaler {
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Autoscaler {
    /// Starts sampling the lag of `group_id` on `inputs` for the partitions
    /// `group` owns, deciding with `decider`; `shared` counts what the
    /// group's consumers processed.
    pub(crate) fn start(
        log: Arc<dyn Log>,
        group_id: String,
        inputs: Vec<String>,
        group: Arc<ConsumerGroup>,
        shared: Arc<Shared>,
        mut decider: Decider,
    ) -> std::io::Result<Self> {
        let stopper = Stopper::new();
        let stop = stopper.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{group_id}-autoscaler"))
            .spawn(move || {
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let every = decider.policy().check_every;
                let mut next = Instant::now() + every;
                let mut owned = Vec::new();
                while !stop.is_stopped() {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next = now + every;
                    let processed = shared.stats.processed.load(Ordering::Relaxed);
                    let Some((sample, now_owned)) =
                        measure(&*log, &group_id, &inputs, &group, processed)
                    else {
                        continue;
                    };
                    if now_owned != owned {
                        owned = now_owned;
                        decider.restart();
                    }
                    let consumers = group.len();
                    let decision = decider.sample(Instant::now(), consumers, sample);
                    act(&group_id, &group, &decider, decision, consumers, sample.lag);
                }
            })?;
        Ok(Self {
            stopper,
            thread: Some(thread),
        })
    }

    /// Stops sampling; a change under way finishes first.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sample of the partitions `group` owns, and which they are (sorted);
/// `None` while it owns none (a rebalance in progress: nothing to judge by)
/// or when lag cannot be read.
fn measure(
    log: &dyn Log,
    group_id: &str,
    inputs: &[&str],
    group: &ConsumerGroup,
    processed: u64,
) -> Option<(Sample, Vec<TopicPartition>)> {
    let mut owned: Vec<TopicPartition> = group
        .assignments()
        .into_iter()
        .flat_map(|(_, tps)| tps)
        .collect();
    if owned.is_empty() {
        return None;
    }
    owned.sort();
    match group_lag(log, group_id, inputs, LAG_TIMEOUT) {
        Ok(lags) => {
            let mine = || {
                lags.iter()
                    .filter(|l| owned.binary_search(&l.partition).is_ok())
            };
            let sample = Sample {
                lag: mine().map(|l| l.lag as u64).sum(),
                end: mine().map(|l| l.end.max(0) as u64).sum(),
                processed,
            };
            Some((sample, owned))
        }
        Err(e) => {
            tracing::warn!(group = %group_id, "autoscaler: cannot read lag: {e}");
            None
        }
    }
}

/// Carries out a decision and logs it with the numbers it was made on.
fn act(
    group_id: &str,
    group: &ConsumerGroup,
    decider: &Decider,
    decision: Decision,
    consumers: usize,
    lag: u64,
) {
    let p = decider.policy();
    let per = lag / consumers.max(1) as u64;
    let rate = |r: Option<f64>| r.map_or_else(|| "unknown".into(), |r| format!("{r:.0}/s"));
    let result = match decision {
        Decision::Hold => return,
        Decision::Add => {
            tracing::info!(
                group = %group_id,
                "scaling up to {} consumers: lag {lag} over {consumers} = {per} per consumer, \
                 above {} for {:?}; a consumer processes {}",
                consumers + 1,
                p.lag_per_consumer,
                p.sustain,
                rate(decider.capacity())
            );
            group.add()
        }
        Decision::Remove => {
            tracing::info!(
                group = %group_id,
                "scaling down to {} consumers: lag {lag} over {consumers} = {per} per consumer, \
                 below {} for {:?}; {} arriving, a consumer processes {}",
                consumers - 1,
                p.low_water(),
                p.sustain,
                rate(decider.arrival()),
                rate(decider.capacity())
            );
            group.remove_last()
        }
    };
    if let Err(e) = result {
        tracing::warn!(group = %group_id, "autoscaler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Scaling {
        Scaling {
            min: 1,
            max: 3,
            lag_per_consumer: 1000,
            sustain: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            check_every: Duration::from_secs(1),
        }
    }

    /// Feeds one sample a second from second `from` for `secs` seconds,
    /// with the lag `lag(second)` and nothing arriving; returns the
    /// decisions that were not `Hold`, with the second they came at.
    fn run(
        d: &mut Decider,
        t0: Instant,
        from: u64,
        secs: u64,
        consumers: &mut usize,
        lag: impl Fn(u64) -> u64,
    ) -> Vec<(u64, Decision)> {
        let mut out = Vec::new();
        for s in from..from + secs {
            let sample = Sample {
                lag: lag(s),
                end: 0,
                processed: 0,
            };
            let decision = d.sample(t0 + Duration::from_secs(s), *consumers, sample);
            if apply(decision, consumers) {
                out.push((s, decision));
            }
        }
        out
    }

    fn apply(decision: Decision, consumers: &mut usize) -> bool {
        match decision {
            Decision::Add => *consumers += 1,
            Decision::Remove => *consumers -= 1,
            Decision::Hold => return false,
        }
        true
    }

    #[test]
    fn adds_only_after_lag_stays_high_for_sustain() {
        let (t0, mut n) = (Instant::now(), 1);
        let mut d = Decider::new(policy());
        // High for 9 s, then a dip: nothing.
        let got = run(&mut d, t0, 0, 9, &mut n, |_| 5000);
        assert_eq!(got, []);
        assert_eq!(run(&mut d, t0, 9, 1, &mut n, |_| 500), []);
        // High from second 10: the 11th sample (10 s later) adds one.
        let got = run(&mut d, t0, 10, 15, &mut n, |_| 5000);
        assert_eq!(got, [(20, Decision::Add)]);
        assert_eq!(n, 2);
    }

    #[test]
    fn cooldown_spaces_changes_and_max_caps_them() {
        let (t0, mut n) = (Instant::now(), 1);
        let mut d = Decider::new(policy());
        // Lag per consumer stays far above the threshold whatever the count.
        let got = run(&mut d, t0, 0, 200, &mut n, |_| 100_000);
        assert_eq!(got, [(10, Decision::Add), (40, Decision::Add)]);
        assert_eq!(n, 3, "capped at max");
    }

    #[test]
    fn removes_when_low_for_sustain_but_not_in_between_or_below_min() {
        let (t0, mut n) = (Instant::now(), 3);
        let mut d = Decider::new(policy());
        // 400 per consumer is neither high (1000) nor low (250): hold.
        assert_eq!(run(&mut d, t0, 0, 60, &mut n, |_| 1200), []);
        // 0 lag: one removal, then another after the cooldown, then min.
        let got = run(&mut d, t0, 60, 200, &mut n, |_| 0);
        assert_eq!(got, [(70, Decision::Remove), (100, Decision::Remove)]);
        assert_eq!(n, 1);
    }

    #[test]
    fn lag_is_judged_per_consumer() {
        let (t0, mut n) = (Instant::now(), 2);
        let mut d = Decider::new(policy());
        // 1,800 records over two consumers is 900 each: under the threshold.
        assert_eq!(run(&mut d, t0, 0, 30, &mut n, |_| 1800), []);
        // 2,400 is 1,200 each: above.
        let got = run(&mut d, t0, 30, 30, &mut n, |_| 2400);
        assert_eq!(got, [(40, Decision::Add)]);
    }

    #[test]
    fn a_restart_forgets_the_streak() {
        let (t0, mut n) = (Instant::now(), 1);
        let mut d = Decider::new(policy());
        assert_eq!(run(&mut d, t0, 0, 9, &mut n, |_| 5000), []);
        d.restart();
        assert_eq!(run(&mut d, t0, 9, 9, &mut n, |_| 5000), []);
        assert_eq!(
            run(&mut d, t0, 18, 2, &mut n, |_| 5000),
            [(19, Decision::Add)]
        );
    }

    /// Consumers that each process `capacity` records a second, offered
    /// `rate(second)`: the lag and the end offsets they would show, sampled
    /// every second. Returns the consumer count at each second and the
    /// decisions.
    fn simulate(
        d: &mut Decider,
        secs: u64,
        capacity: f64,
        rate: impl Fn(u64) -> f64,
    ) -> (Vec<usize>, Vec<(u64, Decision)>) {
        let t0 = Instant::now();
        let (mut n, mut lag, mut end, mut processed) = (1usize, 0.0f64, 0.0f64, 0.0f64);
        let (mut counts, mut decisions) = (Vec::new(), Vec::new());
        for s in 0..secs {
            let arrived = rate(s);
            end += arrived;
            let done = (capacity * n as f64).min(lag + arrived);
            processed += done;
            lag += arrived - done;
            let sample = Sample {
                lag: lag as u64,
                end: end as u64,
                processed: processed as u64,
            };
            let decision = d.sample(t0 + Duration::from_secs(s), n, sample);
            if apply(decision, &mut n) {
                decisions.push((s, decision));
            }
            counts.push(n);
        }
        (counts, decisions)
    }

    #[test]
    fn follows_a_load_step_without_flapping() {
        let mut d = Decider::new(Scaling { max: 4, ..policy() });
        // 900 records a second per consumer; 250/s, then 1,250/s, then 250/s.
        let rate = |s: u64| {
            if (60..300).contains(&s) {
                1250.0
            } else {
                250.0
            }
        };
        let (counts, decisions) = simulate(&mut d, 500, 900.0, rate);
        assert!(counts[..60].iter().all(|&n| n == 1), "{decisions:?}");
        let high = &counts[60..300];
        assert!(high.iter().any(|&n| n >= 2), "{decisions:?}");
        // Once enough, never fewer while the load stays: lag near zero
        // with two consumers is no reason to go back to one.
        let first_up = decisions[0].0;
        assert!(
            !decisions
                .iter()
                .any(|&(s, d)| d == Decision::Remove && (first_up..300).contains(&s)),
            "{decisions:?}"
        );
        assert_eq!(counts[499], 1, "{decisions:?}");
        let c = d.capacity().expect("measured while saturated");
        assert!((800.0..=1000.0).contains(&c), "capacity {c}");
    }
}
