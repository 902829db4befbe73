//! Autoscaling on lag, on a real Apache Kafka broker: a slow processor
//! gets more consumers when its load rises fivefold, catches up, and gives
//! them back when the load falls; no record is lost on the way.
//!
//! `RIFFLE_TEST_BROKERS` names the broker (see `kafka_log.rs`); the test
//! of the keyed style's state handover runs on the embedded log.

mod conformance;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::{eventually, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, RecordRef, TopicSpec};
use riffle::process::{group_lag, App, Context, KeyedProcessor, Scaling};
use riffle::stream::Producer;
use riffle::{Error, Result};

fn log() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

/// The most records the test can produce (its phases are bounded in time).
const CAPACITY: usize = 200_000;
/// Records per second that one consumer keeps up with (about 900, at a
/// millisecond's sleep each) and five times that, which it does not.
const LOW_RATE: u64 = 250;
const HIGH_RATE: u64 = 5 * LOW_RATE;
/// Lag per consumer the autoscaler acts on.
const THRESHOLD: u64 = 1000;

/// Sleeps a millisecond per record, so that a consumer's throughput is
/// bounded by time, not by the two cores it shares, and marks the record's
/// number as processed.
#[derive(Clone)]
struct Slow {
    seen: Arc<Vec<AtomicBool>>,
    duplicates: Arc<AtomicU64>,
}

impl KeyedProcessor for Slow {
    type Input = usize;
    type State = ();
    const STATEFUL: bool = false;

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, usize)> {
        let n = std::str::from_utf8(record.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::InvalidInput("not a record number".into()))?;
        Ok((record.key_str().unwrap_or_default().to_owned(), n))
    }

    fn process(&mut self, _: &str, n: &usize, _: &mut (), _: &mut Context<'_>) -> Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        // At-least-once: a rebalance may replay what was not yet committed.
        if self.seen[*n].swap(true, Ordering::Relaxed) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Offers `rate` records per second to `topic` in 10 ms steps until
/// `stop`; numbers them from `next`.
fn offer(producer: &Producer, topic: &str, rate: &AtomicU64, next: &AtomicU64, stop: &AtomicBool) {
    let start = Instant::now();
    let mut sent_at_rate = 0u64;
    let mut current = rate.load(Ordering::Relaxed);
    let mut since = start;
    while !stop.load(Ordering::Relaxed) {
        let r = rate.load(Ordering::Relaxed);
        if r != current {
            (current, since, sent_at_rate) = (r, Instant::now(), 0);
        }
        let due = (since.elapsed().as_secs_f64() * current as f64) as u64;
        while sent_at_rate < due {
            let n = next.fetch_add(1, Ordering::Relaxed);
            assert!((n as usize) < CAPACITY, "more records than the test counts");
            let key = format!("k{}", n % 97);
            producer
                .send(topic, Some(key.as_bytes()), n.to_string().as_bytes())
                .unwrap();
            sent_at_rate += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.flush(T).unwrap();
}

#[test]
fn consumers_follow_the_lag_up_and_down_and_every_record_is_processed() {
    let log = log();
    let (input, group) = (unique("scale-in"), unique("scale"));
    log.create_topic(&TopicSpec::new(&input, 6), T).unwrap();
    let slow = Slow {
        seen: Arc::new((0..CAPACITY).map(|_| AtomicBool::new(false)).collect()),
        duplicates: Arc::default(),
    };
    let policy = Scaling {
        min: 1,
        max: 4,
        lag_per_consumer: THRESHOLD,
        sustain: Duration::from_secs(2),
        cooldown: Duration::from_secs(3),
        check_every: Duration::from_millis(500),
    };
    let app = App::new(&group, &[&input], slow.clone())
        .autoscale(policy)
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    assert_eq!(app.consumers(), 1, "starts at min");

    let (rate, next, stop) = (
        Arc::new(AtomicU64::new(LOW_RATE)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let producer = Producer::new(&*log).unwrap();
    let feeder = {
        let (rate, next, stop, topic) = (rate.clone(), next.clone(), stop.clone(), input.clone());
        std::thread::spawn(move || offer(&producer, &topic, &rate, &next, &stop))
    };

    let started = Instant::now();
    // (seconds, offered rate, consumers, lag) every half second.
    let mut timeline: Vec<(f64, u64, usize, u64)> = Vec::new();
    let sample = |timeline: &mut Vec<_>| {
        let lag: u64 = group_lag(&*log, &group, &[&input], T)
            .unwrap()
            .iter()
            .map(|l| l.lag as u64)
            .sum();
        let s = (
            started.elapsed().as_secs_f64(),
            rate.load(Ordering::Relaxed),
            app.consumers(),
            lag,
        );
        timeline.push(s);
        std::thread::sleep(Duration::from_millis(500));
        s
    };
    let show = |timeline: &Vec<(f64, u64, usize, u64)>| {
        timeline
            .iter()
            .map(|(t, r, c, l)| format!("{t:.1}s {r}/s {c} consumers lag {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Low load: one consumer keeps up.
    while started.elapsed() < Duration::from_secs(6) {
        sample(&mut timeline);
    }
    assert!(
        timeline.iter().all(|&(_, _, c, _)| c == 1),
        "one consumer suffices at {LOW_RATE}/s:\n{}",
        show(&timeline)
    );

    // Five times the load: lag per consumer rises above the threshold,
    // consumers are added, and lag per consumer falls back below it.
    rate.store(HIGH_RATE, Ordering::Relaxed);
    let step = Instant::now();
    let (mut overloaded, mut most, mut under, mut recovered) = (false, 1, 0, None);
    while step.elapsed() < Duration::from_secs(40) && recovered.is_none() {
        let (_, _, c, lag) = sample(&mut timeline);
        let per = lag / c as u64;
        overloaded |= per > THRESHOLD;
        most = most.max(c);
        // Under for a while, not just divided by one more consumer.
        under = if overloaded && c > 1 && per < THRESHOLD {
            under + 1
        } else {
            0
        };
        if under == 4 {
            recovered = Some((c, lag));
        }
    }
    let high_phase = show(&timeline);
    assert!(
        overloaded,
        "lag per consumer exceeded {THRESHOLD}:\n{high_phase}"
    );
    assert!(most > 1, "consumers were added:\n{high_phase}");
    let (at, lag) = recovered.unwrap_or_else(|| {
        panic!("lag per consumer came back under {THRESHOLD} at {HIGH_RATE}/s:\n{high_phase}")
    });
    eprintln!("at {HIGH_RATE}/s: up to {most} consumers; lag {lag} with {at} consumers");
    // Keep the high rate a little longer: lag near zero is no reason to go
    // back to one consumer, which cannot keep up (a consumer more than
    // needed may be given back).
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(5) {
        sample(&mut timeline);
    }
    let high = show(&timeline);
    let first_added = timeline.iter().position(|s| s.2 > 1).unwrap();
    assert!(
        timeline[first_added..].iter().all(|s| s.2 > 1),
        "never back to one consumer at {HIGH_RATE}/s:\n{high}"
    );

    // Back to the low load: consumers are given back down to min.
    rate.store(LOW_RATE, Ordering::Relaxed);
    let drop = Instant::now();
    while drop.elapsed() < Duration::from_secs(35) && app.consumers() > 1 {
        sample(&mut timeline);
    }
    sample(&mut timeline);
    assert_eq!(
        app.consumers(),
        1,
        "scaled back down to min at {LOW_RATE}/s:\n{}",
        show(&timeline)
    );

    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let produced = next.load(Ordering::Relaxed) as usize;
    eventually(T, &format!("all {produced} records processed"), || {
        slow.seen[..produced]
            .iter()
            .all(|s| s.load(Ordering::Relaxed))
    });
    assert!(
        slow.seen[produced..]
            .iter()
            .all(|s| !s.load(Ordering::Relaxed)),
        "nothing beyond what was produced"
    );
    let assigned = app.assignments();
    app.stop().unwrap();
    assert_eq!(assigned.len(), 1, "one member left: {assigned:?}");
    assert_eq!(
        assigned[0].1.len(),
        6,
        "it owns every partition: {assigned:?}"
    );
    eprintln!(
        "{produced} records, {} processed twice after rebalances, in {:.1}s\n{}",
        slow.duplicates.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        show(&timeline)
    );
}

/// Counts records per key.
#[derive(Clone)]
struct Count;

impl KeyedProcessor for Count {
    type Input = ();
    type State = u64;

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, ())> {
        Ok((record.key_str().unwrap_or_default().to_owned(), ()))
    }

    fn process(&mut self, _: &str, _: &(), n: &mut u64, _: &mut Context<'_>) -> Result<()> {
        *n += 1;
        Ok(())
    }
}

#[test]
fn a_consumer_removed_hands_its_state_over_in_memory() {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    let (input, group) = ("counts-in", "counts");
    log.create_topic(&TopicSpec::new(input, 4), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    let send = |n: usize| {
        for i in 0..n {
            let key = format!("k{}", i % 40);
            producer.send(input, Some(key.as_bytes()), b"{}").unwrap();
        }
        producer.flush(T).unwrap();
    };
    send(400);
    // Two consumers to start, nothing to do: one is given back.
    let app = App::new(group, &[input], Count)
        .consumers(2)
        .autoscale(Scaling {
            min: 1,
            max: 2,
            lag_per_consumer: 1000,
            sustain: Duration::from_millis(300),
            cooldown: Duration::from_secs(1),
            check_every: Duration::from_millis(100),
        })
        .start(log.clone())
        .unwrap();
    eventually(T, "400 records processed", || {
        app.stats().processed.load(Ordering::Relaxed) == 400
    });
    eventually(T, "one consumer left", || app.consumers() == 1);
    eventually(T, "it owns every partition", || {
        app.assignments()
            .iter()
            .map(|(_, p)| p.len())
            .sum::<usize>()
            == 4
    });
    // Each partition was restored once, on its first assignment; the
    // remaining consumer took the others' state in memory.
    assert_eq!(app.stats().state.restores.load(Ordering::Relaxed), 4);
    send(400);
    eventually(T, "800 records processed", || {
        app.stats().processed.load(Ordering::Relaxed) == 800
    });
    app.stop().unwrap();

    // The counts went on from the handed-over state: a new process
    // restores 20 per key from the changelog.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    #[derive(Clone)]
    struct Read(Arc<std::sync::Mutex<Vec<u64>>>);
    impl KeyedProcessor for Read {
        type Input = ();
        type State = u64;
        fn decode(&self, r: &RecordRef<'_>) -> Result<(String, ())> {
            Count.decode(r)
        }
        fn process(&mut self, _: &str, _: &(), n: &mut u64, _: &mut Context<'_>) -> Result<()> {
            self.0.lock().unwrap().push(*n);
            Ok(())
        }
    }
    let app = App::new(group, &[input], Read(seen.clone()))
        .start(log.clone())
        .unwrap();
    send(40);
    eventually(T, "one more record per key", || {
        seen.lock().unwrap().len() == 40
    });
    app.stop().unwrap();
    assert!(seen.lock().unwrap().iter().all(|&n| n == 20), "{seen:?}");
}

#[test]
fn an_autoscaled_app_dropped_without_stop_leaves_its_group() {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    log.create_topic(&TopicSpec::new("dropped-in", 2), T)
        .unwrap();
    let start = || {
        App::new("dropped", &["dropped-in"], Count)
            .autoscale(Scaling::between(1, 2))
            .start(log.clone())
            .unwrap()
    };
    let first = start();
    first.wait_assigned(T).unwrap();
    drop(first);
    // Its consumers left: a new app of the group gets every partition.
    let second = start();
    second.wait_assigned(Duration::from_secs(10)).unwrap();
    second.stop().unwrap();
}
