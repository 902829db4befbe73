//! Crash tests of the heater controller on a real Kafka broker
//! (`RIFFLE_TEST_BROKERS`, set by scripts/test.sh; the tests fail when it is
//! missing).
//!
//! Three `riffle heater controller` processes share a group while a feeder
//! writes settings and measurements for 1,000 heaters at a steady rate. In
//! the crash tests a killer SIGKILLs a random worker every 1-3 s and
//! restarts it shortly after. Once the input is written, every worker runs
//! until the group has committed the whole input, then gets SIGTERM. The
//! commands on the control topic (read committed) are then compared per
//! heater with a reference model: the controller rule applied to the input
//! topic as it was written.
//!
//! The exactly-once crash tests also run the controllers' watchdog while
//! one heater in 25 falls silent for ten rounds of the heaters' own time
//! (the records' timestamps): each such heater's fail-safe OFF and its two
//! alerts ("silent" at its last measurement plus the watchdog's time,
//! "reporting" at its next) must appear exactly once, at those times,
//! across the kills.

#[path = "crash/broker.rs"]
mod broker;
#[path = "crash/feed.rs"]
mod feed;
#[path = "crash/model.rs"]
mod model;
#[path = "crash/workers.rs"]
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, TopicSpec};

use broker::OwnBroker;
use feed::{FeedPlan, Silence};
use model::Comparison;
use workers::{Guarantee, KillOnDrop, WorkerConfig, Workers};

const PARTITIONS: i32 = 10;
const GROWN: i32 = 20;
const WORKERS: usize = 3;
const MIN_KILLS: usize = 20;

/// One test at a time: each already runs three processes on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn brokers() -> String {
    std::env::var("RIFFLE_TEST_BROKERS").expect(
        "RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it",
    )
}

struct Scenario {
    name: &'static str,
    guarantee: Guarantee,
    /// The controller's `--style`.
    style: &'static str,
    plan: FeedPlan,
    /// SIGKILL a random worker every 1-3 s while feeding, at least
    /// [`MIN_KILLS`] times, restarting each shortly after.
    kills: bool,
    /// SIGTERM the last worker for good this long after the feed starts.
    stop_one_after: Option<Duration>,
    /// Grow the input from [`PARTITIONS`] to [`GROWN`] partitions this long
    /// after the feed starts.
    grow_after: Option<Duration>,
    /// SIGKILL the last worker for good this long after the feed starts;
    /// every worker then serves `--http`, and the test looks at the
    /// workers' state answers and metrics before the kill and at the end.
    kill_one_after: Option<Duration>,
    /// Stop the broker this long after the feed starts, for [`OUTAGE`],
    /// then start it again. The run gets a broker of its own.
    outage_after: Option<Duration>,
    /// Run the controllers with a [`WATCHDOG`] while some heaters fall
    /// silent (`plan.silence`), and check its alerts.
    watchdog: bool,
}

/// The watchdog's time in the scenarios that have one: four rounds of the
/// heaters' time.
const WATCHDOG: Duration = Duration::from_secs(4);

/// How long the broker stays down in an outage scenario.
const OUTAGE: Duration = Duration::from_secs(30);
/// How soon every worker must say that the brokers do not answer.
const OUTAGE_REPORTED_WITHIN: Duration = Duration::from_secs(10);

/// A status and body, or why there is none.
type Answer = Result<(u16, String), String>;

/// What the workers' endpoints show at one moment.
#[derive(Debug, Default)]
struct Views {
    /// Per sampled heater, each live worker's answer to `/state/<id>`.
    answers: Vec<(String, Vec<Answer>)>,
    /// Per live worker, `riffle_rebalances_total` of the group.
    rebalances: Vec<Option<u64>>,
}

/// Asks each of `live` for the state of every 20th heater and for its
/// metrics.
fn views(workers: &Workers, live: &[usize], group: &str, heaters: usize) -> Views {
    let answers = (0..heaters)
        .step_by(20)
        .map(|h| {
            let id = feed::heater_id(h);
            let path = format!("/state/{id}");
            (id, live.iter().map(|w| workers.get(*w, &path)).collect())
        })
        .collect();
    let series = format!("riffle_rebalances_total{{group=\"{group}\"}} ");
    let rebalances = live
        .iter()
        .map(|w| {
            let (_, text) = workers.get(*w, "/metrics").ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
        })
        .collect();
    Views {
        answers,
        rebalances,
    }
}

struct Outcome {
    name: &'static str,
    records: u64,
    kills: usize,
    cmp: Comparison,
    /// Partitions each worker owned once the input was processed.
    owned_at_end: Vec<BTreeSet<i32>>,
    /// Partitions each worker owned just before one was stopped.
    owned_before_stop: Vec<BTreeSet<i32>>,
    /// What broke, for the failure message.
    problems: Vec<String>,
    /// With `kill_one_after`: the endpoints just before the kill and once
    /// the input is processed.
    views: Vec<Views>,
    /// With `outage_after`, per worker: how long after the broker stopped
    /// it said so, and how long after the broker was back that it said so.
    outage_seen: Vec<(Option<Duration>, Option<Duration>)>,
    group: String,
    workers: Arc<Workers>,
}

/// The partition numbers a worker's consumers own together.
fn union(owned: BTreeMap<String, BTreeSet<String>>) -> BTreeSet<i32> {
    owned
        .into_values()
        .flatten()
        .filter_map(|tp| tp.rsplit('/').next()?.parse().ok())
        .collect()
}

/// Committed offset and end of each input partition.
fn progress(log: &dyn Log, group: &str, topic: &str) -> Vec<(i32, Option<i64>, i64)> {
    let t = Duration::from_secs(10);
    let info = log.describe_topic(topic, t).expect("input described");
    let committed = log.committed_offsets(group, topic, t).expect("offsets");
    info.partitions
        .iter()
        .map(|p| {
            let c = committed
                .iter()
                .find(|g| g.partition.partition == p.id)
                .and_then(|g| g.committed);
            (p.id, c, p.high)
        })
        .collect()
}

fn lag(progress: &[(i32, Option<i64>, i64)]) -> i64 {
    progress.iter().map(|(_, c, h)| h - c.unwrap_or(0)).sum()
}

/// Marks the feeder done however it ends, and whether it failed.
struct FeedDone<'a> {
    done: &'a AtomicBool,
    failed: &'a AtomicBool,
}

impl Drop for FeedDone<'_> {
    fn drop(&mut self) {
        self.failed
            .store(std::thread::panicking(), Ordering::SeqCst);
        self.done.store(true, Ordering::SeqCst);
    }
}

fn run(s: &Scenario) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut own_broker = s.outage_after.map(|_| OwnBroker::start());
    let brokers = own_broker.as_ref().map_or_else(brokers, OwnBroker::address);
    let log: Arc<dyn Log> =
        Arc::new(KafkaLog::connect(brokers.clone(), vec![]).expect("test broker reachable"));
    let id = format!(
        "{}-{}-{}",
        s.name.replace('_', "-"),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (sensor, control, dlq, alerts) = (
        format!("sensor-{id}"),
        format!("control-{id}"),
        format!("dlq-{id}"),
        format!("alerts-{id}"),
    );
    let t = Duration::from_secs(30);
    let mut topics = vec![(&sensor, PARTITIONS), (&control, PARTITIONS), (&dlq, 1)];
    if s.watchdog {
        topics.push((&alerts, PARTITIONS));
    }
    for (topic, n) in topics {
        log.create_topic(&TopicSpec::new(topic.as_str(), n), t)
            .expect("topic created");
    }
    let group = format!("controller-{id}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&id);
    let workers = Workers::new(
        WorkerConfig {
            brokers,
            sensor_topic: sensor.clone(),
            control_topic: control.clone(),
            dead_letter: dlq.clone(),
            group: group.clone(),
            guarantee: s.guarantee,
            style: s.style,
            dir: dir.clone(),
            http: s.kill_one_after.is_some(),
            watchdog: s.watchdog.then(|| (WATCHDOG, alerts.clone())),
            standby: false,
        },
        WORKERS,
    );
    let _guard = KillOnDrop(workers.clone());
    eprintln!(
        "{}: {:?}, topics {sensor} -> {control}, logs in {}",
        s.name,
        s.guarantee,
        dir.display()
    );
    workers.start_all();
    // Feeding starts once every worker owns partitions, so that the
    // settings are read by the processes that keep them.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let owned: Vec<BTreeSet<i32>> = (0..WORKERS)
            .map(|i| union(workers::owned_partitions(&workers.log_text(i))))
            .collect();
        let all: BTreeSet<&i32> = owned.iter().flatten().collect();
        if owned.iter().all(|o| !o.is_empty()) && all.len() == PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the workers did not share the partitions within 45 s: {owned:?}\n{}",
            s.name,
            workers.tails(15)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let feed_start = Instant::now();

    let (fed, feed_failed) = (AtomicBool::new(false), AtomicBool::new(false));
    let stopped = s.stop_one_after.or(s.kill_one_after).map(|_| WORKERS - 1);
    let mut owned_before_stop = Vec::new();
    let mut views_seen = Vec::new();
    let mut problems = Vec::new();
    let mut outage_seen = Vec::new();
    let (records, kills) = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            let _done = FeedDone {
                done: &fed,
                failed: &feed_failed,
            };
            feed::feed(log.clone(), &sensor, &s.plan, workers.closed_flag())
        });
        let killer = scope.spawn(|| {
            let mut kills = 0;
            if !s.kills {
                return kills;
            }
            let mut rng = fastrand::Rng::with_seed(s.plan.seed ^ 0x6b11);
            let mut next = Instant::now() + Duration::from_millis(rng.u64(1000..3000));
            loop {
                let fed = fed.load(Ordering::SeqCst);
                if workers.is_closed()
                    || (fed && (kills >= MIN_KILLS || feed_failed.load(Ordering::SeqCst)))
                {
                    break;
                }
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let killed_at = Instant::now();
                let live = workers.live();
                if let Some(&i) = rng.choice(live.iter()) {
                    workers.kill(i);
                    kills += 1;
                    std::thread::sleep(Duration::from_millis(rng.u64(200..900)));
                    workers.start(i);
                }
                next = killed_at + Duration::from_millis(rng.u64(1000..3000));
            }
            kills
        });
        if let (Some(after), Some(i)) = (s.stop_one_after, stopped) {
            std::thread::sleep(after.saturating_sub(feed_start.elapsed()));
            owned_before_stop = (0..WORKERS)
                .map(|w| union(workers::owned_partitions(&workers.log_text(w))))
                .collect();
            if let Err(e) = workers.terminate(i, Duration::from_secs(20)) {
                problems.push(format!("{} stopped mid-run: {e}", workers.name(i)));
            }
        }
        if let (Some(after), Some(i)) = (s.kill_one_after, stopped) {
            std::thread::sleep(after.saturating_sub(feed_start.elapsed()));
            owned_before_stop = (0..WORKERS)
                .map(|w| union(workers::owned_partitions(&workers.log_text(w))))
                .collect();
            let all: Vec<usize> = (0..WORKERS).collect();
            views_seen.push(views(&workers, &all, &group, s.plan.heaters));
            workers.kill(i);
        }
        if let Some(after) = s.grow_after {
            std::thread::sleep(after.saturating_sub(feed_start.elapsed()));
            log.add_partitions(&sensor, GROWN, t)
                .expect("input partitions added");
            eprintln!(
                "{}: {sensor} grown to {GROWN} partitions at {:.1} s",
                s.name,
                feed_start.elapsed().as_secs_f64()
            );
        }
        if let (Some(after), Some(broker)) = (s.outage_after, own_broker.as_mut()) {
            std::thread::sleep(after.saturating_sub(feed_start.elapsed()));
            outage_seen = outage(broker, &workers);
        }
        let records = feeder.join().expect("feeder");
        let kills = killer.join().expect("killer");
        (records, kills)
    });
    let fed_in = feed_start.elapsed();
    let lag_when_fed = lag(&progress(&*log, &group, &sensor));

    // Every worker (but the stopped one) runs until the group has committed
    // the whole input.
    let exited: Vec<String> = (0..WORKERS)
        .filter(|i| Some(*i) != stopped && !workers.live().contains(i))
        .map(|i| {
            workers.start(i);
            workers.name(i)
        })
        .collect();
    if !exited.is_empty() {
        problems.push(format!("workers {exited:?} exited on their own"));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = progress(&*log, &group, &sensor);
        if p.iter().all(|(_, c, h)| c.is_some_and(|c| c >= *h)) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: the group did not commit the whole input within 90 s; per partition (committed, end, lag): {:?}\n{}",
                s.name,
                p.iter()
                    .map(|(id, c, h)| (id, *c, *h, h - c.unwrap_or(0)))
                    .collect::<Vec<_>>(),
                workers.tails(15)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let drained_in = feed_start.elapsed();
    let owned_at_end: Vec<BTreeSet<i32>> = (0..WORKERS)
        .map(|i| union(workers::owned_partitions(&workers.log_text(i))))
        .collect();
    if s.kill_one_after.is_some() {
        let survivors: Vec<usize> = (0..WORKERS).filter(|i| Some(*i) != stopped).collect();
        views_seen.push(views(&workers, &survivors, &group, s.plan.heaters));
    }
    workers.close();
    for i in (0..WORKERS).filter(|i| Some(*i) != stopped) {
        if let Err(e) = workers.terminate(i, Duration::from_secs(20)) {
            problems.push(format!("{} at the end: {e}", workers.name(i)));
        }
    }

    let input = model::read_topic(&log, &sensor, false);
    let output = model::read_topic(&log, &control, true);
    let dead = model::read_topic(&log, &dlq, false);
    assert_eq!(
        input.len() as u64,
        records,
        "the input topic holds the input"
    );
    let reference = model::reference(&input, s.watchdog.then_some(WATCHDOG.as_millis() as i64));
    assert_eq!(reference.undecodable, 0);
    assert_eq!(reference.heaters, s.plan.heaters);
    let (actual, bad) = model::actual(&output);
    let cmp = model::compare(s.guarantee, &reference.expected, &actual, PARTITIONS);
    let mut alerts_sent = 0;
    if s.watchdog {
        let (sent, bad) = model::actual_alerts(&model::read_topic(&log, &alerts, true));
        alerts_sent = sent.values().map(Vec::len).sum();
        let silent = s
            .plan
            .silence
            .as_ref()
            .map_or(0, |q| s.plan.heaters.div_ceil(q.every));
        // Each heater that falls silent: turned OFF, then back.
        assert!(
            reference.alerts.len() == silent && reference.alerts.values().all(|a| a.len() == 2),
            "the input should make {silent} heaters fall silent once: {:?}",
            reference.alerts
        );
        if !bad.is_empty() {
            problems.push(format!(
                "{} records on {alerts} are not alerts, first: {}",
                bad.len(),
                bad[0]
            ));
        }
        if sent != reference.alerts {
            let wrong: Vec<_> = reference
                .alerts
                .keys()
                .chain(sent.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|h| sent.get(*h) != reference.alerts.get(*h))
                .take(5)
                .map(|h| {
                    format!(
                        "{h}: expected {:?}, sent {:?}",
                        reference.alerts.get(h),
                        sent.get(h)
                    )
                })
                .collect();
            problems.push(format!(
                "the watchdog's alerts differ from the expected ones (heater, event time) for {} heaters, e.g.:\n  {}",
                wrong.len(),
                wrong.join("\n  ")
            ));
        }
    }
    eprintln!(
        "{}: {:?}; {records} records for {} heaters, {kills} kills, lag when fed {lag_when_fed}; \
         commands expected {}, actual {}, duplicates {}, heaters wrong {}, final state wrong {}; \
         alerts expected {}, sent {alerts_sent}; \
         {} dead letters; fed in {:.1} s, input committed at {:.1} s, elapsed {:.1} s",
        s.name,
        s.guarantee,
        reference.heaters,
        cmp.expected,
        cmp.actual,
        cmp.duplicates,
        cmp.mismatches.len(),
        cmp.wrong_final,
        reference.alerts.values().map(Vec::len).sum::<usize>(),
        dead.len(),
        fed_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The walks cross the bands often: many commands per heater.
    assert!(
        cmp.expected >= 5 * s.plan.heaters && reference.expected.values().all(|c| !c.is_empty()),
        "too few commands expected: {}",
        cmp.expected
    );
    if !bad.is_empty() {
        problems.push(format!(
            "{} records on {control} are not commands, first: {}",
            bad.len(),
            bad[0]
        ));
    }
    if !dead.is_empty() {
        problems.push(format!(
            "{} dead letters, first: {}",
            dead.len(),
            String::from_utf8_lossy(&dead[0].value)
        ));
    }
    if s.grow_after.is_some() {
        // The feeder switched to the new layout mid-run, and every old
        // partition gave the new one its keys.
        let late = input.iter().filter(|r| r.partition >= PARTITIONS).count();
        let moves: usize = (0..WORKERS)
            .map(|i| {
                workers
                    .log_text(i)
                    .matches("keys moved to partitions")
                    .count()
            })
            .sum();
        eprintln!(
            "{}: {late} records written to the new partitions, {moves} moves logged",
            s.name
        );
        if late == 0 || moves < PARTITIONS as usize {
            problems.push(format!(
                "after the growth, {late} records in the new partitions and {moves} moves logged (at least {PARTITIONS} expected)"
            ));
        }
    }
    if s.kills && kills < MIN_KILLS {
        problems.push(format!("only {kills} kills"));
    }
    if !cmp.mismatches.is_empty() || cmp.wrong_final > 0 {
        problems.push(format!(
            "under {:?}, {} of {} heaters break the guarantee ({} end in the wrong state):\n{}",
            s.guarantee,
            cmp.mismatches.len(),
            reference.heaters,
            cmp.wrong_final,
            cmp.report(12)
        ));
    }
    if problems.is_empty() {
        let changelog = format!("{group}-changelog");
        let layout = format!("{group}-layout");
        for topic in [&sensor, &control, &dlq, &alerts, &changelog, &layout] {
            let _ = log.delete_topic(topic, t);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Outcome {
        name: s.name,
        records,
        kills,
        cmp,
        owned_at_end,
        owned_before_stop,
        problems,
        views: views_seen,
        outage_seen,
        group,
        workers,
    }
}

/// Stops the broker for [`OUTAGE`] and starts it again, watching the
/// workers' logs for their report of the outage and of its end.
fn outage(broker: &mut OwnBroker, workers: &Workers) -> Vec<(Option<Duration>, Option<Duration>)> {
    // Lines logged before the outage do not count.
    let before: Vec<usize> = (0..WORKERS).map(|i| workers.log_text(i).len()).collect();
    let seen_since = |i: usize, from: &[usize], what: &str| {
        workers
            .log_text(i)
            .get(from[i]..)
            .is_some_and(|t| t.contains(what))
    };
    let stopped = Instant::now();
    broker.stop();
    eprintln!("broker stopped for {OUTAGE:?}");
    let mut reported = vec![None; WORKERS];
    while stopped.elapsed() < OUTAGE {
        for (i, r) in reported.iter_mut().enumerate() {
            if r.is_none() && seen_since(i, &before, "does not answer") {
                *r = Some(stopped.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let during: Vec<usize> = (0..WORKERS).map(|i| workers.log_text(i).len()).collect();
    broker.restart();
    let back = Instant::now();
    eprintln!("broker serving again");
    let mut ended = vec![None; WORKERS];
    while back.elapsed() < Duration::from_secs(30) && ended.iter().any(Option::is_none) {
        for (i, e) in ended.iter_mut().enumerate() {
            if e.is_none() && seen_since(i, &during, "answers again") {
                *e = Some(back.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reported.into_iter().zip(ended).collect()
}

impl Outcome {
    /// Fails with every problem found, the partitions each worker owned,
    /// and the tail of each worker's stderr.
    fn check(&self) {
        if self.problems.is_empty() {
            return;
        }
        panic!(
            "{}: {}\npartitions owned per worker at the end: {:?}; before one was stopped: {:?}\n{}",
            self.name,
            self.problems.join("\n"),
            self.owned_at_end,
            self.owned_before_stop,
            self.workers.tails(15)
        );
    }
}

fn crash_plan(seed: u64) -> FeedPlan {
    FeedPlan {
        heaters: 1000,
        rounds: 60,
        duration: Duration::from_secs(45),
        seed,
        setting_changes: vec![20, 40],
        silence: None,
    }
}

#[test]
fn crash_exactly_once() {
    crash_exactly_once_in("crash_exactly_once", "keyed", 11);
}

#[test]
fn crash_exactly_once_key_independent() {
    crash_exactly_once_in("crash_exactly_once_key_independent", "actors", 14);
}

fn crash_exactly_once_in(name: &'static str, style: &'static str, seed: u64) {
    let mut out = run(&Scenario {
        name,
        guarantee: Guarantee::ExactlyOnce,
        style,
        plan: FeedPlan {
            silence: Some(Silence {
                every: 25,
                rounds: 21..=30,
            }),
            ..crash_plan(seed)
        },
        kills: true,
        stop_one_after: None,
        kill_one_after: None,
        outage_after: None,
        grow_after: None,
        watchdog: true,
    });
    if out.cmp.duplicates > 0 || out.cmp.expected != out.cmp.actual {
        out.problems.push(format!(
            "{} commands expected, {} sent ({} repeated)",
            out.cmp.expected, out.cmp.actual, out.cmp.duplicates
        ));
    }
    out.check();
    assert!(out.kills >= MIN_KILLS && out.records > 60_000);
}

#[test]
fn crash_at_least_once() {
    let out = run(&Scenario {
        name: "crash_at_least_once",
        guarantee: Guarantee::AtLeastOnce,
        style: "keyed",
        plan: crash_plan(12),
        kills: true,
        stop_one_after: None,
        kill_one_after: None,
        outage_after: None,
        grow_after: None,
        watchdog: false,
    });
    out.check();
    assert!(out.kills >= MIN_KILLS && out.records > 60_000);
    assert!(out.cmp.actual >= out.cmp.expected);
}

/// 24 s of input for 1,000 heaters whose settings do not change.
fn steady_plan(seed: u64) -> FeedPlan {
    FeedPlan {
        heaters: 1000,
        rounds: 30,
        duration: Duration::from_secs(24),
        seed,
        setting_changes: vec![],
        silence: None,
    }
}

#[test]
fn three_workers_rebalance() {
    let mut out = run(&Scenario {
        name: "three_workers_rebalance",
        guarantee: Guarantee::AtLeastOnce,
        style: "keyed",
        plan: steady_plan(13),
        kills: false,
        stop_one_after: Some(Duration::from_secs(10)),
        kill_one_after: None,
        outage_after: None,
        grow_after: None,
        watchdog: false,
    });
    let before = out.owned_before_stop.clone();
    let stopped = before.get(WORKERS - 1).cloned().unwrap_or_default();
    let (a, b) = (&out.owned_at_end[0], &out.owned_at_end[1]);
    let mut problems = Vec::new();
    if stopped.is_empty() {
        problems.push("the stopped worker owned no partition before it stopped".to_string());
    }
    if !stopped.iter().all(|tp| a.contains(tp) || b.contains(tp)) {
        problems.push(format!(
            "the stopped worker's partitions {stopped:?} did not all move to the two others, which own {a:?} and {b:?}"
        ));
    }
    if a.len() + b.len() != PARTITIONS as usize || !a.is_disjoint(b) {
        problems.push(format!(
            "the two others do not own every partition once: {a:?} {b:?}"
        ));
    }
    // Were the heaters that went wrong those whose partitions changed
    // process (and so needed their state moved)?
    let moved: BTreeSet<i32> = (0..WORKERS)
        .flat_map(|w| {
            let end = out.owned_at_end[w].clone();
            before[w]
                .iter()
                .filter(move |p| !end.contains(*p))
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let on_moved = out
        .cmp
        .mismatches
        .iter()
        .filter(|m| moved.contains(&m.partition))
        .count();
    if out.cmp.duplicates > 0 {
        problems.push(format!(
            "{} commands repeated although no process crashed: a stopped worker commits its finished work before its partitions move",
            out.cmp.duplicates
        ));
    }
    if !out.cmp.mismatches.is_empty() {
        problems.push(format!(
            "{on_moved} of the {} wrong heaters are on the partitions {moved:?} that changed process when {} stopped",
            out.cmp.mismatches.len(),
            out.workers.name(WORKERS - 1)
        ));
    }
    out.problems.extend(problems);
    out.check();
}

/// Three controller processes with operations endpoints: the partitions
/// and their state are split among them, every process answers a state
/// query with the owner's answer, and when one is killed the others take
/// its partitions over with their state, lose nothing, and count the
/// rebalance in `/metrics`.
#[test]
fn scale_out_three_processes() {
    scale_out("scale_out_three_processes", "keyed", 15);
}

/// The same with per-key actors: each process hosts the keys of the
/// partitions it owns on its own workers; records reach the right process
/// through the partitions of the input topic, as in the key-based style.
#[test]
fn scale_out_three_processes_key_independent() {
    scale_out("scale_out_three_processes_key_independent", "actors", 16);
}

fn scale_out(name: &'static str, style: &'static str, seed: u64) {
    let mut out = run(&Scenario {
        name,
        guarantee: Guarantee::AtLeastOnce,
        style,
        plan: steady_plan(seed),
        kills: false,
        stop_one_after: None,
        kill_one_after: Some(Duration::from_secs(10)),
        outage_after: None,
        grow_after: None,
        watchdog: false,
    });
    let killed = WORKERS - 1;
    let addrs: Vec<String> = (0..WORKERS)
        .map(|w| out.workers.http_addr(w).expect("an endpoint"))
        .collect();
    let mut problems = Vec::new();
    let [before, after] = &out.views[..] else {
        panic!("{}: expected two views, got {:?}", out.name, out.views);
    };
    // Per heater: (owner index, setting) as every live worker answered it,
    // if they all agreed. While records flow, the workers are asked one
    // after the other and a heater's last command may change in between:
    // `settled` says whether the answers must be identical or only agree
    // on everything but the last command.
    let agreed = |view: &Views,
                  live: &[usize],
                  owned: &[BTreeSet<i32>],
                  settled: bool,
                  problems: &mut Vec<String>| {
        let mut seen = BTreeMap::new();
        let comparable = |a: &Answer| match a {
            Ok((status, body)) if !settled => {
                let mut v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                if let Some(state) = v.get_mut("state").and_then(|s| s.as_object_mut()) {
                    state.remove("last_command");
                }
                Ok((*status, v.to_string()))
            }
            other => other.clone(),
        };
        for (id, answers) in &view.answers {
            let first = comparable(&answers[0]);
            if answers.iter().any(|a| comparable(a) != first) {
                problems.push(format!("{id}: the workers answer differently: {answers:?}"));
                continue;
            }
            let body = match &answers[0] {
                Ok((200, body)) => body,
                other => {
                    problems.push(format!("{id}: {other:?}"));
                    continue;
                }
            };
            let v: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
            let owner = v["owner"].as_str().unwrap_or_default();
            let partition = v["partition"].as_i64().unwrap_or(-1) as i32;
            match addrs.iter().position(|a| a == owner) {
                Some(w) if live.contains(&w) && owned[w].contains(&partition) => {
                    seen.insert(id.clone(), (w, v["state"]["setting"].clone()));
                }
                _ => problems.push(format!(
                    "{id}: answered by {owner} for partition {partition}, which it does not own ({owned:?} by {addrs:?})"
                )),
            }
        }
        seen
    };
    let all: Vec<usize> = (0..WORKERS).collect();
    let first = agreed(before, &all, &out.owned_before_stop, false, &mut problems);
    let owners: BTreeSet<usize> = first.values().map(|(w, _)| *w).collect();
    if owners.len() != WORKERS {
        problems.push(format!(
            "the sampled heaters' state is kept by workers {owners:?} only, not split among all {WORKERS}"
        ));
    }
    let survivors: Vec<usize> = (0..WORKERS).filter(|w| *w != killed).collect();
    let last = agreed(after, &survivors, &out.owned_at_end, true, &mut problems);
    let mut moved = 0;
    for (id, (w, setting)) in &first {
        match last.get(id) {
            Some((_, s)) if s == setting => moved += usize::from(*w == killed),
            Some((_, s)) => problems.push(format!(
                "{id}: setting {setting} before the kill, {s} after it (no setting changed)"
            )),
            None => {}
        }
    }
    if moved == 0 {
        problems.push("no sampled heater of the killed worker was checked after the kill".into());
    }
    for (i, w) in survivors.iter().enumerate() {
        let (b, a) = (before.rebalances[*w], after.rebalances[i]);
        if !matches!((b, a), (Some(b), Some(a)) if a > b) {
            problems.push(format!(
                "{}'s /metrics shows riffle_rebalances_total for group {} at {b:?} before the kill and {a:?} after it",
                out.workers.name(*w),
                out.group
            ));
        }
    }
    eprintln!(
        "{}: {} heaters sampled, owners before the kill {owners:?}, {moved} moved from the killed worker with their state",
        out.name,
        first.len()
    );
    out.problems.extend(problems);
    out.check();
}

/// The broker stopped for 30 s and started again while three controllers
/// run: each says within 10 s that it does not answer and again when it
/// does, nobody restarts anything, and no command is lost (at-least-once)
/// or repeated (exactly-once).
#[test]
fn broker_outage_exactly_once() {
    broker_outage("broker_outage_exactly_once", Guarantee::ExactlyOnce, 17);
}

#[test]
fn broker_outage_at_least_once() {
    broker_outage("broker_outage_at_least_once", Guarantee::AtLeastOnce, 18);
}

fn broker_outage(name: &'static str, guarantee: Guarantee, seed: u64) {
    let mut out = run(&Scenario {
        name,
        guarantee,
        style: "keyed",
        plan: crash_plan(seed),
        kills: false,
        stop_one_after: None,
        kill_one_after: None,
        grow_after: None,
        outage_after: Some(Duration::from_secs(8)),
        watchdog: false,
    });
    eprintln!(
        "{name}: per worker, outage reported after / end reported after: {:?}",
        out.outage_seen
    );
    for (i, (reported, ended)) in out.outage_seen.iter().enumerate() {
        let worker = out.workers.name(i);
        match reported {
            Some(t) if *t <= OUTAGE_REPORTED_WITHIN => {}
            Some(t) => out
                .problems
                .push(format!("{worker} reported the outage only after {t:?}")),
            None => out
                .problems
                .push(format!("{worker} never reported the outage")),
        }
        if ended.is_none() {
            out.problems.push(format!(
                "{worker} did not report within 30 s that the broker answers again"
            ));
        }
    }
    if out.outage_seen.len() != WORKERS {
        out.problems.push("the outage did not happen".into());
    }
    let cmp = &out.cmp;
    let lost_or_repeated = match guarantee {
        Guarantee::ExactlyOnce => cmp.duplicates > 0 || cmp.expected != cmp.actual,
        Guarantee::AtLeastOnce => cmp.actual < cmp.expected,
    };
    if lost_or_repeated {
        out.problems.push(format!(
            "{} commands expected, {} sent ({} repeated)",
            cmp.expected, cmp.actual, cmp.duplicates
        ));
    }
    out.check();
}

/// The input grows from 10 to 20 partitions while three controllers run
/// and the feeder writes: every key's state moves to the partition the key
/// now hashes to before its records there are processed, and each heater's
/// commands are the reference model's (exactly once, or at least once in
/// order), with no dead letter.
#[test]
fn partitions_grow_under_exactly_once() {
    partitions_grow(
        "partitions_grow_under_exactly_once",
        "keyed",
        Guarantee::ExactlyOnce,
        21,
        false,
    );
}

#[test]
fn partitions_grow_under_at_least_once() {
    partitions_grow(
        "partitions_grow_under_at_least_once",
        "keyed",
        Guarantee::AtLeastOnce,
        22,
        false,
    );
}

/// The growth while a random worker is SIGKILLed every 1-3 s: moves cut
/// short at any point are found and finished (or started over) by the
/// partitions' next owners.
#[test]
fn partitions_grow_while_workers_crash() {
    partitions_grow(
        "partitions_grow_while_workers_crash",
        "keyed",
        Guarantee::ExactlyOnce,
        23,
        true,
    );
}

#[test]
fn partitions_grow_while_workers_crash_at_least_once() {
    partitions_grow(
        "partitions_grow_while_workers_crash_at_least_once",
        "keyed",
        Guarantee::AtLeastOnce,
        24,
        true,
    );
}

/// The same in the key-independent style: the workers hand the moved keys
/// over, and take the keys moved in.
#[test]
fn partitions_grow_key_independent() {
    partitions_grow(
        "partitions_grow_key_independent",
        "actors",
        Guarantee::ExactlyOnce,
        25,
        false,
    );
}

#[test]
fn partitions_grow_key_independent_at_least_once() {
    partitions_grow(
        "partitions_grow_key_independent_at_least_once",
        "actors",
        Guarantee::AtLeastOnce,
        26,
        false,
    );
}

#[test]
fn partitions_grow_key_independent_while_workers_crash() {
    partitions_grow(
        "partitions_grow_key_independent_while_workers_crash",
        "actors",
        Guarantee::ExactlyOnce,
        27,
        true,
    );
}

fn partitions_grow(
    name: &'static str,
    style: &'static str,
    guarantee: Guarantee,
    seed: u64,
    kills: bool,
) {
    let mut out = run(&Scenario {
        name,
        guarantee,
        style,
        plan: crash_plan(seed),
        kills,
        stop_one_after: None,
        kill_one_after: None,
        grow_after: Some(Duration::from_secs(12)),
        outage_after: None,
        watchdog: false,
    });
    if guarantee == Guarantee::ExactlyOnce
        && (out.cmp.duplicates > 0 || out.cmp.expected != out.cmp.actual)
    {
        out.problems.push(format!(
            "{} commands expected, {} sent ({} repeated)",
            out.cmp.expected, out.cmp.actual, out.cmp.duplicates
        ));
    }
    out.check();
    assert!(!kills || out.kills >= MIN_KILLS);
}
