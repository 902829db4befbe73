//! Time in apps: per-key timers in processing and event time, watermarks,
//! late records, deleted state and a time to live, in both styles and
//! under both guarantees, on the embedded log and on a real Kafka broker
//! (`RIFFLE_TEST_BROKERS`, see `kafka_log.rs`).

mod conformance;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use conformance::{committed_per_key, eventually, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, TopicSpec};
use riffle::process::{App, EventTime, Guarantee, Running, Style};
use riffle::stream::Producer;
use watch::Watch;

struct Setup {
    log: Arc<dyn Log>,
    group: String,
    input: String,
    output: String,
    dlq: String,
    producer: Producer,
}

fn kafka() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

fn setup(log: Arc<dyn Log>, partitions: i32) -> Setup {
    let (input, output, dlq) = (unique("in"), unique("out"), unique("dlq"));
    for t in [&input, &output] {
        log.create_topic(&TopicSpec::new(t, partitions), T).unwrap();
    }
    let producer = Producer::new(&*log).unwrap();
    Setup {
        group: unique("watch"),
        log,
        input,
        output,
        dlq,
        producer,
    }
}

impl Setup {
    fn send(&self, key: &str, value: &str) {
        self.producer
            .send(&self.input, Some(key.as_bytes()), value.as_bytes())
            .unwrap();
        self.producer.flush(T).unwrap();
    }

    fn app(&self, style: Style, guarantee: Guarantee, watchdog: Duration) -> App<Watch> {
        let w = Watch {
            out: self.output.clone(),
            watchdog,
            remind_after: 1000,
        };
        App::new(&self.group, &[&self.input], w)
            .style(style)
            .guarantee(guarantee)
            .dead_letter(&self.dlq)
            .event_time(EventTime {
                out_of_orderness: Duration::ZERO,
                idle_timeout: None,
                allowed_lateness: Some(Duration::from_millis(500)),
            })
    }

    /// The committed records of `topic` per key, in order, once `n` are
    /// there (and a little longer, so that one too many would show).
    fn read(&self, topic: &str, n: usize) -> BTreeMap<String, Vec<String>> {
        committed_per_key(&self.log, topic, n)
    }
}

/// `expected` per key, where an entry ending in `@` matches any time.
fn assert_outputs(got: &BTreeMap<String, Vec<String>>, expected: &[(&str, &[&str])]) {
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, want, "keys with outputs: {got:?}");
    for (key, want) in expected {
        let have = &got[*key];
        let matches = have.len() == want.len()
            && have
                .iter()
                .zip(want.iter())
                .all(|(h, w)| match w.split_once("@ ") {
                    Some((name, rest)) => h.starts_with(&format!("{name}@")) && h.ends_with(rest),
                    None => h == w,
                });
        assert!(matches, "outputs of {key}: {have:?}, expected {want:?}");
    }
}

/// Timers fire once, moved ones at their last time, cancelled and deleted
/// ones never; event-time timers fire when the watermark passes them,
/// before the record that moved it; a record too late is dead-lettered.
fn timers_fire_as_set(log: Arc<dyn Log>, style: Style, guarantee: Guarantee) {
    let s = setup(log, 1);
    let app = s
        .app(style, guarantee, Duration::from_millis(1500))
        .start(s.log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    for (k, v) in [
        ("a", "see 10000"),
        ("b", "see 10000"),
        ("a", "see 10100"),
        ("b", "quiet 10200"),
        ("c", "see 11050"),
        ("d", "see 12000"),
        ("a", "see 10000"),
        ("c", "forget 12000"),
    ] {
        s.send(k, v);
    }
    let got = s.read(&s.output, 11);
    assert_outputs(
        &got,
        &[
            (
                "a",
                &[
                    "see@10000 count=1",
                    "see@10100 count=2",
                    "remind@11100 count=2",
                    "watchdog@ count=2",
                ],
            ),
            (
                "b",
                &[
                    "see@10000 count=1",
                    "quiet@10200 count=1",
                    "remind@11000 count=1",
                ],
            ),
            ("c", &["see@11050 count=1", "forget@12000 count=1"]),
            ("d", &["see@12000 count=1", "watchdog@ count=1"]),
        ],
    );
    let dlq = s.read(&s.dlq, 1);
    assert_eq!(
        dlq.get("a").map(Vec::len),
        Some(1),
        "the late record: {dlq:?}"
    );
    assert!(dlq["a"][0].contains("late"), "{dlq:?}");
    assert_eq!(app.stats().late.load(Ordering::Relaxed), 1);
    assert_eq!(app.stats().timers_fired.load(Ordering::Relaxed), 4);
    app.stop().unwrap();
}

/// Timers and deletions are stored with the state: after a restart, a
/// timer set before it fires once, and a deleted key starts afresh.
fn timers_survive_a_restart(log: Arc<dyn Log>, style: Style, guarantee: Guarantee) {
    let s = setup(log, 2);
    let watchdog = Duration::from_secs(4);
    let start = || {
        let app = s
            .app(style, guarantee, watchdog)
            .start(s.log.clone())
            .unwrap();
        app.wait_assigned(T).unwrap();
        app
    };
    let app = start();
    s.send("a", "see 1000");
    s.send("b", "see 1000");
    s.send("b", "forget 1000");
    let wait_processed = |app: &Running, n| {
        eventually(T, "records processed", || {
            app.stats().processed.load(Ordering::Relaxed) >= n
        })
    };
    wait_processed(&app, 3);
    app.stop().unwrap();
    let app = start();
    eventually(T, "the watchdog fired after the restart", || {
        app.stats().timers_fired.load(Ordering::Relaxed) >= 1
    });
    s.send("a", "see 2000");
    s.send("b", "see 2000");
    // a's reminder (event time 2000) fires as its record of 2000 arrives:
    // the watermark passes it first.
    let got = s.read(&s.output, 7);
    assert_outputs(
        &got,
        &[
            (
                "a",
                &[
                    "see@1000 count=1",
                    "watchdog@ count=1",
                    "remind@2000 count=1",
                    "see@2000 count=2",
                ],
            ),
            (
                "b",
                &[
                    "see@1000 count=1",
                    "forget@1000 count=1",
                    "see@2000 count=1",
                ],
            ),
        ],
    );
    app.stop().unwrap();
}

/// A partition without records follows the wall clock after the idle
/// timeout: its event-time timers fire.
fn idle_partitions_move_on(log: Arc<dyn Log>, style: Style) {
    let s = setup(log, 2);
    let app = s
        .app(style, Guarantee::AtLeastOnce, Duration::from_secs(600))
        .event_time(EventTime {
            idle_timeout: Some(Duration::from_millis(500)),
            ..EventTime::default()
        })
        .start(s.log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    s.send("a", "see 5000");
    let got = s.read(&s.output, 2);
    assert_outputs(&got, &[("a", &["see@5000 count=1", "remind@6000 count=1"])]);
    app.stop().unwrap();
}

/// Keys untouched for the time to live are deleted; one that comes back
/// starts afresh.
fn quiet_keys_expire(log: Arc<dyn Log>, style: Style) {
    let s = setup(log, 2);
    let app = s
        .app(style, Guarantee::AtLeastOnce, Duration::from_secs(600))
        .state_ttl(Duration::from_secs(1))
        .start(s.log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    for k in 0..100 {
        s.producer
            .send(&s.input, Some(format!("k{k}").as_bytes()), b"count 1")
            .unwrap();
    }
    s.send("k0", "count 2");
    eventually(T, "every key expired", || {
        app.stats().expired.load(Ordering::Relaxed) >= 100
    });
    s.send("k0", "count 3");
    let got = s.read(&s.output, 102);
    assert_eq!(got.len(), 100);
    assert_eq!(
        got["k0"],
        ["count@1 count=1", "count@2 count=2", "count@3 count=1"]
    );
    app.stop().unwrap();
}

fn embedded() -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::new())
}

const KEYED: Style = Style::Keyed;
const ACTORS: Style = Style::Actors { workers: 3 };
const ALO: Guarantee = Guarantee::AtLeastOnce;
const EOS: Guarantee = Guarantee::ExactlyOnce;

#[test]
fn embedded_keyed_timers() {
    timers_fire_as_set(embedded(), KEYED, ALO);
    timers_fire_as_set(embedded(), KEYED, EOS);
}

#[test]
fn embedded_actors_timers() {
    timers_fire_as_set(embedded(), ACTORS, ALO);
    timers_fire_as_set(embedded(), ACTORS, EOS);
}

#[test]
fn embedded_timers_survive_a_restart() {
    timers_survive_a_restart(embedded(), KEYED, EOS);
    timers_survive_a_restart(embedded(), ACTORS, ALO);
}

#[test]
fn embedded_idle_partitions_and_ttl() {
    idle_partitions_move_on(embedded(), KEYED);
    idle_partitions_move_on(embedded(), ACTORS);
    quiet_keys_expire(embedded(), KEYED);
    quiet_keys_expire(embedded(), ACTORS);
}

#[test]
fn kafka_keyed_timers_exactly_once() {
    timers_fire_as_set(kafka(), KEYED, EOS);
}

#[test]
fn kafka_actors_timers_at_least_once() {
    timers_fire_as_set(kafka(), ACTORS, ALO);
}

#[test]
fn kafka_timers_survive_a_restart() {
    timers_survive_a_restart(kafka(), KEYED, EOS);
    timers_survive_a_restart(kafka(), ACTORS, EOS);
}

#[test]
fn kafka_quiet_keys_expire() {
    quiet_keys_expire(kafka(), KEYED);
}
