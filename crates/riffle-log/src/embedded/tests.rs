//! The Kafka semantics the runtime relies on, checked against the embedded log.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::EmbeddedLog;
use crate::error::Error;
use crate::{
    partition_for_key, ConsumerConfig, DeliveryReport, GroupEvent, GroupToken, Log, LogConsumer,
    LogProducer, OffsetReset, OutRecord, PollVisitor, Progress, Record, RecordRef, TopicPartition,
    TopicSpec, TxnProducer,
};

const T: Duration = Duration::from_secs(5);

/// Keeps what a poll hands over; marks records processed if `mark`.
#[derive(Default)]
struct Collect {
    records: Vec<Record>,
    events: Vec<GroupEvent>,
    mark: bool,
}

impl Collect {
    fn marking() -> Self {
        Self {
            mark: true,
            ..Self::default()
        }
    }
}

impl PollVisitor for Collect {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.records.push(record.to_owned());
        self.mark
    }
    fn event(&mut self, event: GroupEvent) {
        self.events.push(event);
    }
}

fn log_with(topic: &str, partitions: i32) -> EmbeddedLog {
    let log = EmbeddedLog::new();
    log.create_topic(&TopicSpec::new(topic, partitions), T)
        .unwrap();
    log
}

fn config(group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, &[topic]);
    c.commit_interval = Duration::from_secs(3600);
    c
}

fn send(p: &dyn LogProducer, topic: &str, key: Option<&str>, value: &str) {
    p.send(OutRecord::new(
        topic,
        key.map(str::as_bytes),
        value.as_bytes(),
    ))
    .unwrap();
}

fn tps(topic: &str, partitions: &[i32]) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect()
}

/// Polls every consumer without waiting, a few rounds, so that all of them
/// get through a rebalance (each must wait for the others to let go).
fn settle(consumers: &mut [&mut Box<dyn LogConsumer>]) {
    for _ in 0..3 {
        for c in consumers.iter_mut() {
            c.poll(Duration::ZERO, 0, &mut Collect::default()).unwrap();
        }
    }
}

/// Polls until `done` holds, failing rather than hanging if it never does.
fn poll_until(c: &mut dyn LogConsumer, got: &mut Collect, done: impl Fn(&Collect) -> bool) {
    let deadline = Instant::now() + T;
    while !done(got) {
        let n = got.records.len();
        assert!(
            Instant::now() < deadline,
            "gave up after {n} records and {:?}",
            got.events
        );
        c.poll(Duration::from_millis(50), 100, got).unwrap();
    }
}

fn partitions_of(c: &dyn LogConsumer) -> Vec<i32> {
    c.assignment()
        .unwrap()
        .iter()
        .map(|tp| tp.partition)
        .collect()
}

fn committed(log: &EmbeddedLog, group: &str, topic: &str) -> Vec<Option<i64>> {
    log.committed_offsets(group, topic, T)
        .unwrap()
        .into_iter()
        .map(|o| o.committed)
        .collect()
}

#[test]
fn keyed_records_round_trip_through_murmur2_partitions_in_order() {
    let log = log_with("t", 4);
    let reports = Arc::new(Mutex::new(Vec::<DeliveryReport>::new()));
    let sink = Arc::clone(&reports);
    let producer = log
        .producer(Some(Arc::new(move |r: &DeliveryReport| {
            sink.lock().unwrap().push(r.clone())
        })))
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("key-{}", i % 17)).collect();
    for (i, key) in keys.iter().enumerate() {
        send(&*producer, "t", Some(key), &i.to_string());
    }
    assert_eq!((producer.in_flight(), producer.flush(T)), (0, Ok(())));

    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 200);
    let mut next = [0i64; 4];
    for (report, key) in reports.iter().zip(&keys) {
        assert_eq!(report.partition, partition_for_key(key.as_bytes(), 4));
        assert_eq!(report.result, Ok(next[report.partition as usize]));
        next[report.partition as usize] += 1;
    }
    let info = log.describe_topic("t", T).unwrap();
    assert_eq!(
        info.partitions
            .iter()
            .map(|p| (p.low, p.high))
            .collect::<Vec<_>>(),
        next.map(|n| (0, n)).to_vec()
    );

    let mut consumer = log.consumer(&config("g", "t")).unwrap();
    let mut got = Collect::default();
    poll_until(&mut *consumer, &mut got, |got| got.records.len() == 200);
    assert_eq!(
        got.events,
        vec![GroupEvent::Assigned(tps("t", &[0, 1, 2, 3]))]
    );
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for r in &got.records {
        let key = r.key.as_deref().unwrap();
        assert_eq!(r.partition, partition_for_key(key, 4));
        let i: usize = std::str::from_utf8(&r.value).unwrap().parse().unwrap();
        assert_eq!(key, keys[i].as_bytes());
        assert!(r.timestamp.is_some_and(|t| t > 1_600_000_000_000));
        per_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, i));
    }
    for (p, seen) in per_partition {
        let offsets: Vec<i64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            offsets,
            (0..next[p as usize]).collect::<Vec<_>>(),
            "offsets of partition {p}"
        );
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} keeps send order"
        );
    }
}

#[test]
fn keyless_records_spread_and_explicit_partitions_are_checked() {
    let log = log_with("t", 4);
    let reports = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reports);
    let producer = log
        .producer(Some(Arc::new(move |_: &DeliveryReport| {
            counter.fetch_add(1, Ordering::Relaxed);
        })))
        .unwrap();
    for i in 0..8 {
        send(&*producer, "t", None, &i.to_string());
    }
    let highs = |log: &EmbeddedLog| {
        log.describe_topic("t", T)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.high)
            .collect::<Vec<_>>()
    };
    assert_eq!(highs(&log), vec![2, 2, 2, 2]);

    let explicit = OutRecord {
        partition: Some(3),
        ..OutRecord::new("t", Some(b"k"), b"v")
    };
    producer.send(explicit).unwrap();
    assert_eq!(highs(&log), vec![2, 2, 2, 3]);
    let out_of_range = OutRecord {
        partition: Some(4),
        ..explicit
    };
    assert!(matches!(
        producer.send(out_of_range),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        producer.send(OutRecord::new("nope", None, b"v")),
        Err(Error::UnknownTopic("nope".into()))
    );
    assert_eq!(
        reports.load(Ordering::Relaxed),
        9,
        "only accepted records are reported"
    );
}

#[test]
fn topics_are_administered_like_kafka() {
    let log = EmbeddedLog::new();
    assert_eq!(log.describe(), "embedded");
    for name in ["b", "c", "a"] {
        log.create_topic(&TopicSpec::new(name, 2), T).unwrap();
    }
    assert_eq!(
        log.create_topic(&TopicSpec::new("a", 3), T),
        Err(Error::TopicExists("a".into()))
    );
    assert!(matches!(
        log.create_topic(&TopicSpec::new("a b", 1), T),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        log.create_topic(&TopicSpec::new("z", 0), T),
        Err(Error::InvalidInput(_))
    ));
    log.ensure_topic(&TopicSpec::new("a", 5), T).unwrap();
    let names: Vec<String> = log
        .list_topics(T)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let a = log.describe_topic("a", T).unwrap();
    assert_eq!(a.partitions.len(), 2);
    assert!(a
        .partitions
        .iter()
        .all(|p| p.leader == 0 && p.replicas == [0]));
    log.delete_topic("b", T).unwrap();
    assert_eq!(
        log.delete_topic("b", T),
        Err(Error::UnknownTopic("b".into()))
    );
    assert_eq!(
        log.describe_topic("b", T),
        Err(Error::UnknownTopic("b".into()))
    );
    assert!(matches!(
        log.committed_offsets("g", "b", T),
        Err(Error::UnknownTopic(_))
    ));
}

#[test]
fn ten_partitions_split_two_each_over_five_members_and_an_eleventh_gets_none() {
    let log = log_with("t", 10);
    let mut five: Vec<Box<dyn LogConsumer>> = (0..5)
        .map(|_| log.consumer(&config("g", "t")).unwrap())
        .collect();
    settle(&mut five.iter_mut().collect::<Vec<_>>());
    let shares: Vec<Vec<i32>> = five.iter().map(|c| partitions_of(&**c)).collect();
    assert_eq!(shares, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]);

    // Another group is independent.
    let mut other = log.consumer(&config("other", "t")).unwrap();
    settle(&mut [&mut other]);
    assert_eq!(partitions_of(&*other), (0..10).collect::<Vec<_>>());

    let mut eleven: Vec<Box<dyn LogConsumer>> = (0..6)
        .map(|_| log.consumer(&config("g", "t")).unwrap())
        .collect();
    eleven.splice(0..0, five);
    let mut last = Collect::default();
    eleven[10].poll(Duration::ZERO, 10, &mut last).unwrap();
    assert_eq!(
        last.events,
        vec![GroupEvent::Assigned(Vec::new())],
        "a first join is always announced"
    );
    settle(&mut eleven.iter_mut().collect::<Vec<_>>());
    let shares: Vec<Vec<i32>> = eleven.iter().map(|c| partitions_of(&**c)).collect();
    let expected: Vec<Vec<i32>> = (0..10).map(|p| vec![p]).chain([vec![]]).collect();
    assert_eq!(shares, expected);
    assert_eq!(partitions_of(&*other), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_closing_member_hands_over_exactly_where_it_stopped() {
    let log = log_with("orders", 6);
    let producer = log.producer(None).unwrap();
    let produce = |from: usize, to: usize| {
        for i in from..to {
            send(
                &*producer,
                "orders",
                Some(&format!("c{}", i % 50)),
                &i.to_string(),
            );
        }
    };
    produce(0, 600);
    let mut members: Vec<Option<Box<dyn LogConsumer>>> = (0..3)
        .map(|_| Some(log.consumer(&config("g", "orders")).unwrap()))
        .collect();
    let mut seen: Vec<(usize, i32, i64)> = Vec::new();
    let mut a_events = Vec::new();
    for round in 0..200 {
        if round == 8 {
            let mut a = members[0].take().unwrap();
            assert!(!a.assignment().unwrap().is_empty());
            a.close().unwrap();
            assert_eq!(
                a.poll(Duration::ZERO, 1, &mut Collect::default()),
                Err(Error::Closed)
            );
            produce(600, 900);
        }
        for (i, member) in members.iter_mut().enumerate() {
            let Some(c) = member else { continue };
            let mut got = Collect::marking();
            c.poll(Duration::ZERO, 25, &mut got).unwrap();
            seen.extend(got.records.iter().map(|r| (i, r.partition, r.offset)));
            if i == 0 {
                a_events.extend(got.events);
            }
        }
    }
    assert_eq!(seen.len(), 900, "every record delivered once");
    let before_close: HashSet<i32> = seen.iter().filter(|s| s.0 == 0).map(|s| s.1).collect();
    assert_eq!(
        before_close.len(),
        2,
        "the closing member had consumed from its partitions"
    );
    assert!(
        a_events
            .iter()
            .all(|e| matches!(e, GroupEvent::Assigned(_))),
        "{a_events:?}"
    );
    let highs: Vec<i64> = log
        .describe_topic("orders", T)
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high)
        .collect();
    for p in 0..6 {
        let offsets: Vec<i64> = seen.iter().filter(|s| s.1 == p).map(|s| s.2).collect();
        assert_eq!(
            offsets,
            (0..highs[p as usize]).collect::<Vec<_>>(),
            "partition {p}: nothing lost or repeated"
        );
        if before_close.contains(&p) {
            let owners: HashSet<usize> = seen.iter().filter(|s| s.1 == p).map(|s| s.0).collect();
            assert!(
                owners.len() == 2 && owners.contains(&0),
                "partition {p} changed hands: {owners:?}"
            );
        }
    }
    for c in members.iter_mut().flatten() {
        c.close().unwrap();
    }
    assert_eq!(
        committed(&log, "g", "orders"),
        highs.into_iter().map(Some).collect::<Vec<_>>()
    );
}

#[test]
fn a_silent_member_is_evicted_after_its_session_timeout() {
    let log = log_with("t", 4);
    let producer = log.producer(None).unwrap();
    for i in 0..40 {
        send(&*producer, "t", None, &i.to_string());
    }
    let mut cfg = config("g", "t");
    cfg.session_timeout = Duration::from_millis(300);
    let mut a = log.consumer(&cfg).unwrap();
    let mut b = log.consumer(&cfg).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(
        (partitions_of(&*a), partitions_of(&*b)),
        (vec![0, 1], vec![2, 3])
    );

    // B commits offset 5 in its partitions, then stores 10 and goes silent.
    let mut got = Collect::default();
    poll_until(&mut *b, &mut got, |got| got.records.len() == 20);
    for p in [2, 3] {
        b.store_offset("t", p, 5).unwrap();
    }
    b.commit().unwrap();
    for p in [2, 3] {
        b.store_offset("t", p, 10).unwrap();
    }
    assert!(matches!(
        b.store_offset("t", 0, 1),
        Err(Error::InvalidInput(_))
    ));
    let silent_since = Instant::now();

    let mut got = Collect::default();
    while partitions_of(&*a).len() < 4 {
        a.poll(Duration::from_millis(50), 100, &mut got).unwrap();
        assert!(silent_since.elapsed() < T, "B was never evicted");
    }
    // Less a margin: B's session started at the end of its last poll.
    assert!(
        silent_since.elapsed() >= Duration::from_millis(250),
        "evicted before its session timeout"
    );
    assert_eq!(
        committed(&log, "g", "t"),
        [None, None, Some(5), Some(5)],
        "B's uncommitted offsets are lost"
    );
    assert_eq!(
        got.events.last(),
        Some(&GroupEvent::Assigned(tps("t", &[0, 1, 2, 3])))
    );
    poll_until(&mut *a, &mut got, |got| {
        got.records.iter().filter(|r| r.partition >= 2).count() == 10
    });
    let first_taken_over = got
        .records
        .iter()
        .filter(|r| r.partition == 2)
        .map(|r| r.offset)
        .min();
    assert_eq!(
        first_taken_over,
        Some(5),
        "A continues from B's committed offset"
    );

    // B finds out at its next poll that it lost its partitions, and rejoins.
    let mut b_got = Collect::default();
    b.poll(Duration::ZERO, 10, &mut b_got).unwrap();
    assert_eq!(
        b_got.events.first(),
        Some(&GroupEvent::Revoked(tps("t", &[2, 3])))
    );
    assert!(b_got.records.is_empty());
    settle(&mut [&mut a, &mut b]);
    assert_eq!(
        (partitions_of(&*a), partitions_of(&*b)),
        (vec![0, 1], vec![2, 3])
    );
}

#[test]
fn dropping_a_member_leaves_the_group_without_committing() {
    let log = log_with("t", 2);
    let producer = log.producer(None).unwrap();
    for i in 0..10 {
        send(&*producer, "t", None, &i.to_string());
    }
    let mut a = log.consumer(&config("g", "t")).unwrap();
    let mut b = log.consumer(&config("g", "t")).unwrap();
    settle(&mut [&mut a, &mut b]);
    let mut got = Collect::marking();
    poll_until(&mut *a, &mut got, |got| got.records.len() == 5);
    drop(a);
    let mut got = Collect::default();
    poll_until(&mut *b, &mut got, |got| {
        got.records.iter().filter(|r| r.partition == 0).count() == 5
    });
    let replayed: Vec<i64> = got
        .records
        .iter()
        .filter(|r| r.partition == 0)
        .map(|r| r.offset)
        .collect();
    assert_eq!(
        replayed,
        [0, 1, 2, 3, 4],
        "nothing was committed, so the next owner starts over"
    );
    assert_eq!(committed(&log, "g", "t"), [None, None]);
}

#[test]
fn offsets_are_committed_on_the_interval() {
    let log = log_with("t", 1);
    let producer = log.producer(None).unwrap();
    for i in 0..3 {
        send(&*producer, "t", None, &i.to_string());
    }
    let mut cfg = config("g", "t");
    cfg.commit_interval = Duration::ZERO;
    let mut c = log.consumer(&cfg).unwrap();
    assert_eq!(c.poll(T, 10, &mut Collect::marking()), Ok(3));
    assert_eq!(committed(&log, "g", "t"), [None]);
    c.poll(Duration::ZERO, 10, &mut Collect::default()).unwrap();
    assert_eq!(committed(&log, "g", "t"), [Some(3)]);
}

#[test]
fn unbounded_timeouts_mean_never() {
    let log = log_with("t", 2);
    let mut cfg = config("g", "t");
    (cfg.session_timeout, cfg.commit_interval) = (Duration::MAX, Duration::MAX);
    let mut a = log.consumer(&cfg).unwrap();
    let mut b = log.consumer(&cfg).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!((partitions_of(&*a), partitions_of(&*b)), (vec![0], vec![1]));
    assert_eq!(
        a.poll(Duration::from_millis(10), 10, &mut Collect::default()),
        Ok(0)
    );
}

#[test]
fn new_groups_start_at_earliest_or_latest() {
    let log = log_with("t", 1);
    let producer = log.producer(None).unwrap();
    for i in 0..5 {
        send(&*producer, "t", None, &i.to_string());
    }
    let mut earliest = log.consumer(&config("early", "t")).unwrap();
    let mut cfg = config("late", "t");
    cfg.offset_reset = OffsetReset::Latest;
    let mut latest = log.consumer(&cfg).unwrap();
    let mut early_got = Collect::default();
    let mut late_got = Collect::default();
    assert_eq!(earliest.poll(T, 100, &mut early_got), Ok(5));
    assert_eq!(
        latest.poll(Duration::from_millis(20), 100, &mut late_got),
        Ok(0)
    );
    for i in 5..8 {
        send(&*producer, "t", None, &i.to_string());
    }
    assert_eq!(latest.poll(T, 100, &mut late_got), Ok(3));
    let offsets: Vec<i64> = late_got.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [5, 6, 7]);
    assert_eq!(early_got.records.first().map(|r| r.offset), Some(0));
}

#[test]
fn recreating_a_topic_gives_the_new_partition_count_and_forgets_offsets() {
    let log = log_with("t", 3);
    let producer = log.producer(None).unwrap();
    for i in 0..6 {
        send(&*producer, "t", None, &i.to_string());
    }
    let mut c = log.consumer(&config("g", "t")).unwrap();
    assert_eq!(c.poll(T, 100, &mut Collect::marking()), Ok(6));
    c.commit().unwrap();
    assert_eq!(committed(&log, "g", "t"), [Some(2); 3]);

    log.recreate_topic(&TopicSpec::new("t", 5), T).unwrap();
    let info = log.describe_topic("t", T).unwrap();
    assert_eq!(
        info.partitions
            .iter()
            .map(|p| (p.id, p.high))
            .collect::<Vec<_>>(),
        (0..5).map(|p| (p, 0)).collect::<Vec<_>>()
    );
    assert_eq!(committed(&log, "g", "t"), [None; 5]);

    let mut got = Collect::default();
    send(&*producer, "t", Some("k"), "after");
    c.poll(T, 100, &mut got).unwrap();
    assert_eq!(
        got.events,
        [
            GroupEvent::Revoked(tps("t", &[0, 1, 2])),
            GroupEvent::Assigned(tps("t", &[0, 1, 2, 3, 4]))
        ]
    );
    assert_eq!(
        got.records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        [(partition_for_key(b"k", 5), 0)]
    );
    c.close().unwrap();
    assert_eq!(
        committed(&log, "g", "t"),
        [None; 5],
        "stale offsets of the old topic are not committed"
    );
}

#[test]
fn a_blocking_poll_is_woken_by_a_send_from_another_thread() {
    let log = log_with("t", 2);
    let mut c = log.consumer(&config("g", "t")).unwrap();
    settle(&mut [&mut c]);
    let producer = log.producer(None).unwrap();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        send(&*producer, "t", Some("k"), "hello");
    });
    let start = Instant::now();
    let mut got = Collect::default();
    assert_eq!(c.poll(Duration::from_secs(30), 10, &mut got), Ok(1));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(90) && waited < T,
        "waited {waited:?}"
    );
    assert_eq!(got.records[0].value, b"hello");
    sender.join().unwrap();
}

#[test]
fn a_blocking_poll_is_woken_by_a_rebalance() {
    let log = log_with("t", 2);
    let mut a = log.consumer(&config("g", "t")).unwrap();
    settle(&mut [&mut a]);
    let other = log.clone();
    let joiner = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        other.consumer(&config("g", "t")).unwrap()
    });
    let start = Instant::now();
    let mut got = Collect::default();
    assert_eq!(a.poll(Duration::from_secs(30), 10, &mut got), Ok(0));
    assert!(start.elapsed() < T);
    assert_eq!(
        got.events,
        [
            GroupEvent::Revoked(tps("t", &[0, 1])),
            GroupEvent::Assigned(tps("t", &[0]))
        ]
    );
    let mut b = joiner.join().unwrap();
    let mut b_got = Collect::default();
    b.poll(T, 10, &mut b_got).unwrap();
    assert_eq!(b_got.events, [GroupEvent::Assigned(tps("t", &[1]))]);
}

#[test]
fn polls_serve_every_partition() {
    let log = log_with("t", 2);
    let producer = log.producer(None).unwrap();
    for i in 0..1000 {
        producer
            .send(OutRecord {
                partition: Some(0),
                ..OutRecord::new("t", None, i.to_string().as_bytes())
            })
            .unwrap();
    }
    for i in 0..10 {
        producer
            .send(OutRecord {
                partition: Some(1),
                ..OutRecord::new("t", None, i.to_string().as_bytes())
            })
            .unwrap();
    }
    let mut c = log.consumer(&config("g", "t")).unwrap();
    let mut got = Collect::default();
    assert_eq!(c.poll(T, 20, &mut got), Ok(20));
    assert_eq!(got.records.iter().filter(|r| r.partition == 1).count(), 10);
}

/// A visitor that sends to the topic it consumes; must not deadlock.
struct Echo<'a> {
    producer: &'a dyn LogProducer,
    seen: usize,
}

impl PollVisitor for Echo<'_> {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.seen += 1;
        if record.value == b"ping" {
            self.producer
                .send(OutRecord::new(record.topic, record.key, b"pong"))
                .unwrap();
        }
        true
    }
    fn event(&mut self, _: GroupEvent) {}
}

#[test]
fn a_visitor_may_send_to_the_topic_it_consumes() {
    let log = log_with("t", 1);
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let producer = log.producer(None).unwrap();
        send(&*producer, "t", Some("k"), "ping");
        let mut c = log.consumer(&config("g", "t")).unwrap();
        let mut echo = Echo {
            producer: &*producer,
            seen: 0,
        };
        while echo.seen < 2 {
            c.poll(T, 10, &mut echo).unwrap();
        }
        done.send(log.describe_topic("t", T).unwrap().partitions[0].high)
            .unwrap();
    });
    assert_eq!(finished.recv_timeout(T), Ok(2));
}

#[test]
fn members_joining_and_leaving_under_load_lose_and_repeat_nothing() {
    const TOTAL: usize = 20_000;
    let log = log_with("t", 8);
    let delivered = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(i32, i64)>::new()));
    let member = |start_after: usize, stop_after: Option<usize>| {
        let (log, delivered, seen) = (log.clone(), Arc::clone(&delivered), Arc::clone(&seen));
        thread::spawn(move || {
            while delivered.load(Ordering::SeqCst) < start_after {
                thread::sleep(Duration::from_millis(1));
            }
            let mut c = log.consumer(&config("g", "t")).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while delivered.load(Ordering::SeqCst) < TOTAL && Instant::now() < deadline {
                if stop_after.is_some_and(|n| delivered.load(Ordering::SeqCst) >= n) {
                    break;
                }
                let mut got = Collect::marking();
                let n = c.poll(Duration::from_millis(20), 100, &mut got).unwrap();
                seen.lock()
                    .unwrap()
                    .extend(got.records.iter().map(|r| (r.partition, r.offset)));
                delivered.fetch_add(n, Ordering::SeqCst);
            }
            c.close().unwrap();
        })
    };
    let members = [
        member(0, None),
        member(0, Some(TOTAL / 2)),
        member(TOTAL / 4, None),
        member(TOTAL / 3, None),
    ];
    let producer = log.producer(None).unwrap();
    for i in 0..TOTAL {
        send(&*producer, "t", Some(&(i % 101).to_string()), "x");
    }
    for m in members {
        m.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let distinct: HashSet<&(i32, i64)> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (TOTAL, TOTAL));
}

/// Commits a transaction from inside the revocation callback, as an
/// exactly-once application finishes its work on partitions it is about to
/// lose.
struct CommitOnRevoke<'a> {
    producer: &'a dyn TxnProducer,
    /// The token the callback committed with, and the commit's result.
    outcome: Option<(GroupToken, crate::error::Result<()>)>,
}

impl PollVisitor for CommitOnRevoke<'_> {
    fn record(&mut self, _: RecordRef<'_>) -> bool {
        false
    }
    fn event(&mut self, _: GroupEvent) {}
    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        let token = progress.group().unwrap();
        self.producer.begin().unwrap();
        send(self.producer, "t", None, "finished on revocation");
        let offsets = [(TopicPartition::new("t", 0), 1)];
        let result = self.producer.commit(&offsets, &token, T);
        self.outcome = Some((token, result));
    }
}

#[test]
fn a_transaction_commits_during_revocation_and_its_token_is_fenced_after_the_handover() {
    let log = log_with("t", 2);
    let mut a = log.consumer(&config("g", "t")).unwrap();
    poll_until(&mut *a, &mut Collect::default(), |c| !c.events.is_empty());
    let before = a.group().unwrap();
    let producer = log.transactional_producer("tx", None).unwrap();

    let mut b = log.consumer(&config("g", "t")).unwrap();
    b.poll(Duration::ZERO, 0, &mut Collect::default()).unwrap();
    let mut visitor = CommitOnRevoke {
        producer: &*producer,
        outcome: None,
    };
    a.poll(Duration::ZERO, 0, &mut visitor).unwrap();
    let (token, result) = visitor.outcome.expect("revocation announced");
    assert_eq!(result, Ok(()), "the partitions were still held");
    assert_eq!(committed(&log, "g", "t"), vec![Some(1), None]);
    assert_eq!(highs(&log, "t"), vec![1, 0]);

    settle(&mut [&mut a, &mut b]);
    assert_eq!((partitions_of(&*a), partitions_of(&*b)), (vec![0], vec![1]));
    for stale in [token, before] {
        producer.begin().unwrap();
        send(&*producer, "t", None, "too late");
        let offsets = [(TopicPartition::new("t", 0), 2)];
        let refused = producer.commit(&offsets, &stale, T);
        assert!(matches!(refused, Err(Error::Fenced(_))), "{refused:?}");
    }
    assert_eq!(committed(&log, "g", "t"), vec![Some(1), None]);
    assert_eq!(highs(&log, "t"), vec![1, 0], "nothing of a refused commit");
}

fn highs(log: &EmbeddedLog, topic: &str) -> Vec<i64> {
    log.describe_topic(topic, T)
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high)
        .collect()
}

#[test]
fn readers_see_whole_transactions_only() {
    const SIZE: usize = 50;
    let log = log_with("t", 1);
    log.create_topic(&TopicSpec::new("in", 1), T).unwrap();
    let mut member = log.consumer(&config("g", "in")).unwrap();
    poll_until(&mut *member, &mut Collect::default(), |c| {
        !c.events.is_empty()
    });
    let group = member.group().unwrap();
    let writer = {
        let log = log.clone();
        thread::spawn(move || {
            let p = log.transactional_producer("tx", None).unwrap();
            for _ in 0..100 {
                p.begin().unwrap();
                for i in 0..SIZE {
                    send(&*p, "t", None, &i.to_string());
                }
                p.commit(&[], &group, T).unwrap();
            }
        })
    };
    let total = (100 * SIZE) as i64;
    loop {
        let end = log
            .read_partition("t", 0, 0, true, T, &mut |_| Ok(()))
            .unwrap();
        assert_eq!(end % SIZE as i64, 0, "a partial transaction at {end}");
        if end == total || writer.is_finished() {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(highs(&log, "t"), vec![total]);
}
