//! Failovers of the heater controller on a real Kafka broker
//! (`RIFFLE_TEST_BROKERS`, set by scripts/test.sh; the test fails when it
//! is missing): what the other process of a group sees when one is killed
//! and restarted under the same `--instance`, when it is stopped, and when
//! it comes back.
//!
//! Two `riffle heater controller` processes share a group of 10 input
//! partitions while a feeder writes measurements. What each consumer was
//! given and what it gave up is read from the processes' logs (`assigned
//! [..]`, `revoked [..]`), as the crash tests do.

#[path = "crash/feed.rs"]
mod feed;
#[path = "crash/gap.rs"]
mod gap;
#[allow(dead_code)]
#[path = "crash/workers.rs"]
mod workers;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::kafka::KafkaLog;
use riffle::log::Log;

use feed::FeedPlan;
use gap::{control_gap, controller_config, controller_topics, now_ms, owned};
use workers::{Guarantee, KillOnDrop, Workers};

const PARTITIONS: i32 = 10;
/// The workers' `session.timeout.ms` (see `workers.rs`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

fn brokers() -> String {
    std::env::var("RIFFLE_TEST_BROKERS").expect(
        "RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it",
    )
}

/// Worker `i`'s lines about its assignment logged after byte `from` of
/// its log.
fn group_lines(workers: &Workers, i: usize, from: usize) -> Vec<String> {
    workers
        .log_text(i)
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" assigned [") || l.contains(" revoked ["))
        .map(str::to_owned)
        .collect()
}

/// Waits up to `limit` for `done`, checking every 20 ms; returns how long
/// it took.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Two controllers sharing a group on fresh topics, once each owns
/// partitions, and the feed they will read.
struct Pair {
    log: Arc<dyn Log>,
    sensor: String,
    control: String,
    topics: Vec<String>,
    dir: std::path::PathBuf,
    workers: Arc<Workers>,
    _guard: KillOnDrop,
    plan: FeedPlan,
}

impl Pair {
    fn start(standby: bool, guarantee: Guarantee) -> Self {
        let log: Arc<dyn Log> =
            Arc::new(KafkaLog::connect(brokers(), vec![]).expect("test broker reachable"));
        // Tests run in parallel: the counter keeps two started in the same
        // millisecond apart.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!(
            "failover-{}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let (sensor, control, dlq) = controller_topics(&*log, &id, PARTITIONS);
        let group = format!("controller-{id}");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&id);
        let topics = (sensor.clone(), control.clone(), dlq.clone());
        let mut config = controller_config(brokers(), &topics, &group, &dir, standby);
        config.guarantee = guarantee;
        let workers = Workers::new(config, 2);
        let guard = KillOnDrop(workers.clone());
        eprintln!("logs in {}", dir.display());
        workers.start_all();
        let shared = || {
            let (a, b) = (owned(&workers, 0), owned(&workers, 1));
            !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 10
        };
        assert!(
            wait_for(Duration::from_secs(45), shared).is_some(),
            "the two workers did not share the partitions within 45 s\n{}",
            workers.tails(15)
        );
        let plan = FeedPlan {
            heaters: 200,
            rounds: 400,
            duration: Duration::from_secs(40),
            seed: 21,
            setting_changes: vec![],
            silence: None,
        };
        let changelog = format!("{group}-changelog");
        Self {
            log,
            topics: vec![sensor.clone(), control.clone(), dlq, changelog],
            sensor,
            control,
            dir,
            workers,
            _guard: guard,
            plan,
        }
    }

    /// Runs `f` while the feeder writes the plan's measurements, from 2 s
    /// after the feed starts (w1 joining may have taken two rebalances: the
    /// group settles). `f` is given a call that stops the feed and waits
    /// for the feeder, which it may make (once) before it ends.
    fn while_feeding(&self, f: impl FnOnce(&dyn Fn())) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let log = self.log.clone();
            let feeder = Mutex::new(Some(
                scope.spawn(|| feed::feed(log, &self.sensor, &self.plan, &stop)),
            ));
            let stop_feed = || {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(f) = feeder.lock().unwrap().take() {
                    f.join().expect("feeder");
                }
            };
            std::thread::sleep(Duration::from_secs(2));
            f(&stop_feed);
            stop_feed();
        });
    }

    /// Stops the workers still running (`live`), and removes the topics.
    fn finish(self, live: &[usize]) {
        self.workers.close();
        for &i in live {
            let r = self.workers.terminate(i, Duration::from_secs(20));
            assert!(r.is_ok(), "{} at the end: {r:?}", self.workers.name(i));
        }
        for topic in &self.topics {
            let _ = self.log.delete_topic(topic, T);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const T: Duration = Duration::from_secs(30);

/// Static membership and incremental rebalancing together:
///
/// 1. w1 is SIGKILLed and restarted under the same `--instance` within the
///    session timeout: it gets its own partitions back, and w0 sees no
///    rebalance at all (no revocation, no assignment).
/// 2. w1 is stopped (SIGTERM): although a static member, it leaves the
///    group, and w0 is given w1's partitions within a second or two
///    without giving up any of its own.
/// 3. w1 starts again: w0 gives up only the partitions that move to w1 and
///    keeps the rest, never its whole assignment.
#[test]
fn restart_under_the_same_instance_moves_nothing() {
    let pair = Pair::start(false, Guarantee::AtLeastOnce);
    let (log, workers) = (pair.log.clone(), pair.workers.clone());
    let control = &pair.control;
    pair.while_feeding(|stop_feed| {
        let (w0_before, w1_before) = (owned(&workers, 0), owned(&workers, 1));

        // 1. Killed and restarted within the session timeout.
        let killed_at = restart_in_place(&workers, &w0_before, &w1_before);

        // 2. Stopped: w0 takes everything over, giving up nothing.
        let mark0 = workers.log_text(0).len();
        let all: BTreeSet<i32> = (0..PARTITIONS).collect();
        let stopped = Instant::now();
        let stopped_at = now_ms();
        let took_over = std::thread::scope(|s| {
            let term = s.spawn(|| workers.terminate(1, Duration::from_secs(20)));
            let took = wait_for(Duration::from_secs(20), || owned(&workers, 0) == all);
            (took, term.join().expect("terminate"))
        });
        let seen = group_lines(&workers, 0, mark0);
        let (took, ended) = took_over;
        assert!(ended.is_ok(), "w1 did not stop cleanly: {ended:?}");
        let took = took.unwrap_or_else(|| {
            panic!(
                "w0 did not take w1's partitions over within 20 s of its SIGTERM\n{}",
                workers.tails(15)
            )
        });
        assert!(
            !seen.iter().any(|l| l.contains(" revoked [")),
            "w0 gave up partitions when w1 left: {seen:#?}"
        );
        // Well under the session timeout: w1 left rather than being waited for.
        assert!(
            took < Duration::from_secs(3),
            "w0 took w1's partitions over only {took:.2?} after its SIGTERM"
        );
        eprintln!(
            "w1 stopped: w0 owned every partition {took:.2?} after the SIGTERM ({:.2?} in all)",
            stopped.elapsed()
        );

        // w0 runs alone for a while, so that the gap w1's stop caused is
        // measured apart from the rebalance its return causes.
        std::thread::sleep(Duration::from_secs(2));

        // 3. Back: only what moves to w1 is revoked from w0.
        let mark0 = workers.log_text(0).len();
        let back_at = now_ms();
        workers.start(1);
        let rebalanced = wait_for(Duration::from_secs(30), || {
            let (a, b) = (owned(&workers, 0), owned(&workers, 1));
            !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 10
        });
        // The two rounds of an incremental rebalance may come as separate
        // steps: give the group time to settle.
        std::thread::sleep(Duration::from_secs(3));
        let seen = group_lines(&workers, 0, mark0);
        assert!(
            rebalanced.is_some(),
            "w1 did not get partitions back within 30 s\n{}",
            workers.tails(15)
        );
        let moved = owned(&workers, 1);
        let revoked: BTreeSet<i32> = seen
            .iter()
            .filter_map(|l| l.split(" revoked [").nth(1)?.split(']').next())
            .flat_map(|list| {
                list.split(", ")
                    .filter_map(|tp| tp.rsplit('/').next()?.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        assert_eq!(
            revoked, moved,
            "w0 should give up exactly the partitions that moved to w1: {seen:#?}"
        );
        assert!(
            !seen
                .iter()
                .any(|l| l.contains(" assigned [") && !l.contains(" assigned []")),
            "w0 was given partitions again although it kept them: {seen:#?}"
        );
        eprintln!(
            "w1 back: w0 gave up {revoked:?} only, kept {:?}",
            owned(&workers, 0)
        );
        stop_feed();

        // How long w1's heaters went without commands each time.
        const WINDOW: i64 = 5000;
        let restart_gap = control_gap(
            &*log,
            control,
            &w1_before,
            None,
            killed_at,
            killed_at + WINDOW,
        );
        let stop_gap = control_gap(&*log, control, &w1_before, None, stopped_at, back_at);
        eprintln!(
            "control gap of w1's heaters: {restart_gap} ms after SIGKILL and restart under the \
             same instance, {stop_gap} ms after SIGTERM (w0 taking over)"
        );
        assert!(
            restart_gap < SESSION_TIMEOUT.as_millis() as i64,
            "w1's heaters went {restart_gap} ms without commands after w1 was killed and restarted"
        );
        // Well under the session timeout, which a member that did not
        // leave would make them wait (6 s, and more); BENCHMARKS.md has
        // the figures.
        assert!(
            stop_gap < 3000,
            "w1's heaters went {stop_gap} ms without commands after w1 was stopped"
        );
    });
    drop(workers);
    pair.finish(&[0, 1]);
}

/// Static membership under exactly-once, whose groups rebalance eagerly:
/// w1 is SIGKILLed and restarted under the same `--instance` within the
/// session timeout, gets its partitions back (its transactional producer
/// fencing the killed one's), and w0 sees no rebalance at all.
#[test]
fn restart_under_the_same_instance_moves_nothing_under_exactly_once() {
    let pair = Pair::start(false, Guarantee::ExactlyOnce);
    let (log, workers) = (pair.log.clone(), pair.workers.clone());
    let control = &pair.control;
    pair.while_feeding(|stop_feed| {
        let (w0_before, w1_before) = (owned(&workers, 0), owned(&workers, 1));
        let killed_at = restart_in_place(&workers, &w0_before, &w1_before);
        stop_feed();
        let gap = control_gap(
            &*log,
            control,
            &w1_before,
            None,
            killed_at,
            killed_at + 5000,
        );
        eprintln!(
            "control gap of w1's heaters: {gap} ms after SIGKILL and restart under the same \
             instance (exactly-once)"
        );
        assert!(
            gap < SESSION_TIMEOUT.as_millis() as i64,
            "w1's heaters went {gap} ms without commands after w1 was killed and restarted"
        );
    });
    drop(workers);
    pair.finish(&[0, 1]);
}

/// SIGKILLs w1 and starts it again under the same instance half a second
/// later: it must own `w1_before` again within the session timeout, and w0
/// (owning `w0_before`) see no rebalance at all. Returns when w1 was
/// killed, in ms since the epoch.
fn restart_in_place(
    workers: &Workers,
    w0_before: &BTreeSet<i32>,
    w1_before: &BTreeSet<i32>,
) -> i64 {
    let mark0 = workers.log_text(0).len();
    let killed = Instant::now();
    let killed_at = now_ms();
    workers.kill(1);
    std::thread::sleep(Duration::from_millis(500));
    workers.start(1);
    let back = wait_for(SESSION_TIMEOUT, || owned(workers, 1) == *w1_before);
    let back_in = killed.elapsed();
    // Anything w0 would see of a rebalance caused by the restart comes
    // within the session timeout of the kill.
    std::thread::sleep(SESSION_TIMEOUT.saturating_sub(killed.elapsed()) + Duration::from_secs(1));
    let seen = group_lines(workers, 0, mark0);
    assert!(
        back.is_some() && owned(workers, 1) == *w1_before,
        "w1, restarted under the same instance, did not get its partitions {w1_before:?} back \
         within the session timeout: it owns {:?}\n{}",
        owned(workers, 1),
        workers.tails(15)
    );
    assert!(
        seen.is_empty() && owned(workers, 0) == *w0_before,
        "w0 saw a rebalance when w1 was restarted under the same instance: {seen:#?}\n{}",
        workers.tails(15)
    );
    eprintln!("w1 killed and back with {w1_before:?} after {back_in:.2?}; w0 saw nothing");
    killed_at
}

/// w1 is SIGKILLed for good while both keep standby copies (`--standby`):
/// once its session times out, w0 takes its partitions' state from the
/// copies it kept, not from their changelog, so w1's heaters go without
/// commands for the session timeout and little more.
#[test]
fn a_standby_takes_over_a_killed_controller_within_the_session_timeout() {
    let pair = Pair::start(true, Guarantee::AtLeastOnce);
    let Pair {
        log,
        sensor,
        control,
        workers,
        plan,
        ..
    } = &pair;
    let stop_feed = AtomicBool::new(false);
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let (w1, taken, killed_at, took, until) = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| feed::feed(log.clone(), sensor, plan, &stop_feed));
        // The copies are built and follow the changelog.
        std::thread::sleep(Duration::from_secs(4));
        let w1 = owned(workers, 1);
        let mark0 = workers.log_text(0).len();
        let killed_at = now_ms();
        workers.kill(1);
        let took = wait_for(Duration::from_secs(20), || owned(workers, 0) == all);
        std::thread::sleep(Duration::from_secs(2));
        // The gap is measured up to here: after it, the feed's end silences
        // every heater.
        let until = now_ms();
        stop_feed.store(true, std::sync::atomic::Ordering::SeqCst);
        feeder.join().expect("feeder");
        let text = workers.log_text(0)[mark0..].to_owned();
        // "partition 3: state taken from the standby copy (20 keys, 0 changelog records behind)"
        let taken: Vec<(i32, i64)> = text
            .lines()
            .filter_map(|l| {
                let (head, rest) = l.split_once(": state taken from the standby copy (")?;
                let p = head.rsplit("partition ").next()?.parse().ok()?;
                let behind = rest.split(", ").nth(1)?.split(' ').next()?.parse().ok()?;
                Some((p, behind))
            })
            .collect();
        (w1, taken, killed_at, took, until)
    });
    assert!(
        took.is_some(),
        "w0 did not take w1's partitions over within 20 s of the kill\n{}",
        workers.tails(15)
    );
    let from_copies: BTreeSet<i32> = taken.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        from_copies,
        w1,
        "w0 should take every partition of w1 from its standby copies: {taken:?}\n{}",
        workers.tails(15)
    );
    let gap = control_gap(&**log, control, &w1, None, killed_at, until);
    eprintln!(
        "w1 killed for good: w0 owned every partition {:.2?} after the kill, took {taken:?} \
         (partition, changelog records behind) from its copies; control gap of w1's heaters {gap} ms \
         (session timeout {} ms)",
        took.unwrap(),
        SESSION_TIMEOUT.as_millis()
    );
    assert!(
        gap <= SESSION_TIMEOUT.as_millis() as i64 + 1000,
        "w1's heaters went {gap} ms without commands after it was killed"
    );
    pair.finish(&[0]);
}
