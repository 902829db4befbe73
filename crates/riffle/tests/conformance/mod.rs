//! The log contract, as the stream runtime relies on it, written once and run
//! against each backend: `embedded_log.rs` runs it in-process,
//! `kafka_log.rs` against a real broker.

#![allow(dead_code)]

mod headers;
mod txn;
// Used by the `conformance_tests!` expansion, not by every includer.
#[allow(unused_imports)]
pub use headers::*;
#[allow(unused_imports)]
pub use txn::*;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::{
    partition_for_key, ConsumerConfig, Log, OffsetReset, RecordRef, TopicPartition, TopicSpec,
};
use riffle::stream::{Consumer, ConsumerGroup, Producer};
use riffle::{Error, Result};

/// Declares one `#[test]` per contract check, each on a fresh `$log`.
#[macro_export]
macro_rules! conformance_tests {
    ($log:expr) => {
        $crate::conformance_tests!($log; round_trip_with_keys, group_assignment,
            leaving_member_loses_nothing, recreate_topic, stop_ends_running_consumer,
            bad_input, committed_offsets_resume, latest_starts_at_assignment,
            panicking_handler_is_restarted,
            txn_commit_is_visible_with_offsets, txn_abort_is_invisible,
            txn_newer_producer_fences_older, txn_stale_generation_is_fenced,
            read_partition_to_end, read_partition_skips_aborted,
            headers_round_trip, headers_in_transactions_and_passed_on);
    };
    ($log:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                conformance::$name($log);
            }
        )*
    };
}

pub const T: Duration = Duration::from_secs(30);

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

pub fn config(group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, &[topic]);
    c.session_timeout = Duration::from_secs(6);
    c.commit_interval = Duration::from_millis(200);
    c
}

/// Waits until `cond` holds, failing the test with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

type Seen = Arc<Mutex<Vec<(i32, i64, Option<String>, String)>>>;

fn collector(seen: Seen) -> impl FnMut(RecordRef<'_>) -> Result<()> + Send + 'static {
    move |r: RecordRef<'_>| {
        let v = String::from_utf8(r.value.to_vec()).unwrap();
        seen.lock()
            .unwrap()
            .push((r.partition, r.offset, r.key_str().map(str::to_owned), v));
        Ok(())
    }
}

/// Keyed records land in murmur2 partitions, in order, with dense offsets,
/// and come back intact.
pub fn round_trip_with_keys(log: Arc<dyn Log>) {
    let topic = unique("roundtrip");
    log.create_topic(&TopicSpec::new(&topic, 4), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    let n = 200;
    for i in 0..n {
        let key = format!("key-{}", i % 17);
        producer
            .send(
                &topic,
                Some(key.as_bytes()),
                format!("value-{i}").as_bytes(),
            )
            .unwrap();
    }
    producer.flush(T).unwrap();
    assert_eq!(producer.stats().delivered.load(Ordering::Relaxed), n);

    let seen: Seen = Default::default();
    let s = seen.clone();
    let consumer = Consumer::spawn(log.clone(), config(&unique("g"), &topic), move || {
        collector(s.clone())
    })
    .unwrap();
    eventually(T, "all records consumed", || {
        seen.lock().unwrap().len() as u64 >= n
    });
    consumer.join_after_stop();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, n, "each record exactly once");

    let mut last_per_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut by_partition: Vec<_> = seen.clone();
    by_partition.sort_by_key(|(p, o, _, _)| (*p, *o));
    for (p, o, _, _) in &by_partition {
        let expect = next_offset.entry(*p).or_insert(0);
        assert_eq!(o, expect, "offsets in partition {p} are dense from 0");
        *expect += 1;
    }
    for (p, _, key, value) in &seen {
        let key = key.clone().expect("key kept");
        assert_eq!(
            *p,
            partition_for_key(key.as_bytes(), 4),
            "{key} in its murmur2 partition"
        );
        let i: usize = value.trim_start_matches("value-").parse().unwrap();
        assert_eq!(
            format!("key-{}", i % 17),
            key,
            "key and value travel together"
        );
        if let Some(prev) = last_per_key.insert(key.clone(), i) {
            assert!(prev < i, "per-key order kept for {key}: {prev} then {i}");
        }
    }
    log.delete_topic(&topic, T).unwrap();
}

trait JoinAfterStop {
    fn join_after_stop(self);
}

impl JoinAfterStop for Consumer {
    fn join_after_stop(self) {
        self.stop();
        self.join().unwrap();
    }
}

fn noop() -> impl FnMut(RecordRef<'_>) -> Result<()> + Send + 'static {
    |_: RecordRef<'_>| Ok(())
}

fn counts(group: &ConsumerGroup) -> Vec<usize> {
    let mut c: Vec<usize> = group
        .assignments()
        .into_iter()
        .map(|(_, a)| a.len())
        .collect();
    c.sort();
    c
}

fn covers(group: &ConsumerGroup, partitions: usize) -> bool {
    let all: BTreeSet<TopicPartition> = group
        .assignments()
        .into_iter()
        .flat_map(|(_, a)| a)
        .collect();
    all.len() == partitions
        && group
            .assignments()
            .iter()
            .map(|(_, a)| a.len())
            .sum::<usize>()
            == partitions
}

/// 10 partitions over 5 members give 2 each; 11 members leave one idle.
pub fn group_assignment(log: Arc<dyn Log>) {
    let topic = unique("assign");
    log.create_topic(&TopicSpec::new(&topic, 10), T).unwrap();

    let five =
        ConsumerGroup::spawn(log.clone(), &config(&unique("g5"), &topic), 5, |_| noop()).unwrap();
    eventually(T, "5 members own 2 partitions each", || {
        covers(&five, 10) && counts(&five) == vec![2; 5]
    });
    five.stop().unwrap();

    let eleven =
        ConsumerGroup::spawn(log.clone(), &config(&unique("g11"), &topic), 11, |_| noop()).unwrap();
    eventually(T, "10 members own 1 partition, 1 owns none", || {
        covers(&eleven, 10) && counts(&eleven) == [vec![0], vec![1; 10]].concat()
    });
    eleven.stop().unwrap();
    log.delete_topic(&topic, T).unwrap();
}

/// A member that leaves mid-stream has its partitions taken over, and every
/// record is still consumed.
pub fn leaving_member_loses_nothing(log: Arc<dyn Log>) {
    let topic = unique("leave");
    log.create_topic(&TopicSpec::new(&topic, 6), T).unwrap();
    let group_id = unique("g");
    let seen: Seen = Default::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let a = Consumer::spawn(log.clone(), config(&group_id, &topic), move || {
        collector(s1.clone())
    })
    .unwrap();
    let mut b = Some(
        Consumer::spawn(log.clone(), config(&group_id, &topic), move || {
            collector(s2.clone())
        })
        .unwrap(),
    );
    eventually(T, "both members own partitions", || {
        !a.stats().assignment().is_empty() && !b.as_ref().unwrap().stats().assignment().is_empty()
    });

    let producer = Producer::new(&*log).unwrap();
    let n = 600;
    for i in 0..n {
        producer
            .send(
                &topic,
                Some(format!("k{}", i % 31).as_bytes()),
                i.to_string().as_bytes(),
            )
            .unwrap();
        if i == n / 2 {
            producer.flush(T).unwrap();
            eventually(T, "first half consumed", || {
                seen.lock().unwrap().len() > 100
            });
            b.take().unwrap().join_after_stop();
        }
    }
    producer.flush(T).unwrap();
    eventually(T, "the remaining member owns every partition", || {
        a.stats().assignment().len() == 6
    });
    eventually(T, "every record consumed", || {
        let got: BTreeSet<String> = seen.lock().unwrap().iter().map(|r| r.3.clone()).collect();
        got.len() == n
    });
    a.join_after_stop();
    log.delete_topic(&topic, T).unwrap();
}

/// Recreating a topic gives it the new partition count and no old records.
pub fn recreate_topic(log: Arc<dyn Log>) {
    let topic = unique("recreate");
    log.create_topic(&TopicSpec::new(&topic, 2), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    producer.send(&topic, None, b"old").unwrap();
    producer.flush(T).unwrap();
    assert_eq!(
        log.create_topic(&TopicSpec::new(&topic, 2), T),
        Err(Error::TopicExists(topic.clone()))
    );
    log.recreate_topic(&TopicSpec::new(&topic, 7), T).unwrap();
    let info = log.describe_topic(&topic, T).unwrap();
    assert_eq!(info.partitions.len(), 7);
    assert!(
        info.partitions.iter().all(|p| p.high == 0),
        "no records survive: {info:?}"
    );
    assert!(log
        .list_topics(T)
        .unwrap()
        .iter()
        .any(|t| t.name == topic && t.partitions.len() == 7));
    log.delete_topic(&topic, T).unwrap();
    assert_eq!(
        log.describe_topic(&topic, T),
        Err(Error::UnknownTopic(topic.clone()))
    );
    assert_eq!(
        log.delete_topic(&topic, T),
        Err(Error::UnknownTopic(topic.clone()))
    );
}

/// `stop` ends a consumer that is busy polling, without waiting for records.
pub fn stop_ends_running_consumer(log: Arc<dyn Log>) {
    let topic = unique("stop");
    log.create_topic(&TopicSpec::new(&topic, 3), T).unwrap();
    let consumer = Consumer::spawn(log.clone(), config(&unique("g"), &topic), noop).unwrap();
    eventually(T, "consumer joined", || {
        consumer.stats().assignment().len() == 3
    });
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let start = Instant::now();
    consumer.stop();
    std::thread::spawn(move || {
        consumer.join().unwrap();
        flag.store(true, Ordering::SeqCst);
    });
    // Generous bound: this checks that stop is honoured at all while the
    // poll loop runs, not how fast.
    eventually(Duration::from_secs(10), "consumer stopped", || {
        stopped.load(Ordering::SeqCst)
    });
    eprintln!("stop took {:?}", start.elapsed());
    log.delete_topic(&topic, T).unwrap();
}

/// Bad names and counts are refused with one-line messages; a record the
/// handler cannot decode is reported, skipped, and the rest still flow.
pub fn bad_input(log: Arc<dyn Log>) {
    for bad in ["", "has space", "slash/no", "..", &"x".repeat(250)] {
        match log.create_topic(&TopicSpec::new(bad, 1), T) {
            Err(Error::InvalidInput(m)) => assert!(!m.contains('\n'), "one line: {m}"),
            other => panic!("topic name {bad:?} accepted: {other:?}"),
        }
    }
    for partitions in [0, -3] {
        assert!(matches!(
            log.create_topic(&TopicSpec::new(unique("p"), partitions), T),
            Err(Error::InvalidInput(_))
        ));
    }

    let topic = unique("json");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    for v in [
        &b"{\"n\":1}"[..],
        b"not json",
        b"{\"n\":2}",
        &[0xff, 0xfe],
        b"{\"n\":3}",
    ] {
        producer.send(&topic, None, v).unwrap();
    }
    producer.flush(T).unwrap();
    let good = Arc::new(Mutex::new(Vec::new()));
    let g = good.clone();
    let consumer = Consumer::spawn(log.clone(), config(&unique("g"), &topic), move || {
        let good = g.clone();
        move |r: RecordRef<'_>| -> Result<()> {
            let v: serde_json::Value =
                serde_json::from_slice(r.value).map_err(|e| Error::Decode(e.to_string()))?;
            good.lock().unwrap().push(v["n"].as_i64().unwrap());
            Ok(())
        }
    })
    .unwrap();
    eventually(T, "good records consumed past the bad ones", || {
        good.lock().unwrap().len() == 3
    });
    assert_eq!(*good.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(
        consumer.stats().failed.load(Ordering::Relaxed),
        2,
        "both bad records reported"
    );
    assert_eq!(consumer.stats().records.load(Ordering::Relaxed), 5);
    consumer.join_after_stop();
    log.delete_topic(&topic, T).unwrap();
}

/// Committed offsets survive the group: a new member of the same group
/// starts after the last record the previous one processed.
pub fn committed_offsets_resume(log: Arc<dyn Log>) {
    let topic = unique("resume");
    log.create_topic(&TopicSpec::new(&topic, 2), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    for i in 0..50 {
        producer
            .send(
                &topic,
                Some(format!("k{i}").as_bytes()),
                i.to_string().as_bytes(),
            )
            .unwrap();
    }
    producer.flush(T).unwrap();
    let group = unique("g");
    let seen: Seen = Default::default();
    let s = seen.clone();
    let c = Consumer::spawn(log.clone(), config(&group, &topic), move || {
        collector(s.clone())
    })
    .unwrap();
    eventually(T, "first 50", || seen.lock().unwrap().len() == 50);
    c.join_after_stop();
    let committed: i64 = log
        .committed_offsets(&group, &topic, T)
        .unwrap()
        .iter()
        .map(|o| o.committed.unwrap_or(0))
        .sum();
    assert_eq!(committed, 50, "close commits everything processed");

    for i in 50..80 {
        producer
            .send(
                &topic,
                Some(format!("k{i}").as_bytes()),
                i.to_string().as_bytes(),
            )
            .unwrap();
    }
    producer.flush(T).unwrap();
    let s = seen.clone();
    let c = Consumer::spawn(log.clone(), config(&group, &topic), move || {
        collector(s.clone())
    })
    .unwrap();
    eventually(T, "next 30", || seen.lock().unwrap().len() >= 80);
    std::thread::sleep(Duration::from_millis(300));
    c.join_after_stop();
    let values: BTreeSet<String> = seen.lock().unwrap().iter().map(|r| r.3.clone()).collect();
    assert_eq!(seen.lock().unwrap().len(), 80, "nothing read twice");
    assert_eq!(values.len(), 80);
    log.delete_topic(&topic, T).unwrap();
}

/// A consumer of a new group reading from the end (`Latest`) starts where
/// the end was when it took up a partition: once its assignment shows a
/// partition, every record written there afterwards reaches it, and none
/// from before.
pub fn latest_starts_at_assignment(log: Arc<dyn Log>) {
    let topic = unique("latest");
    let partitions = 6;
    log.create_topic(&TopicSpec::new(&topic, partitions), T)
        .unwrap();
    let producer = Producer::new(&*log).unwrap();
    let send = |range: std::ops::Range<usize>| {
        for i in range {
            let key = format!("k{i}");
            producer
                .send(&topic, Some(key.as_bytes()), format!("{i}").as_bytes())
                .unwrap();
        }
        producer.flush(T).unwrap();
    };
    send(0..60);
    let seen: Seen = Default::default();
    let s = seen.clone();
    let mut cfg = config(&unique("g"), &topic);
    cfg.offset_reset = OffsetReset::Latest;
    let consumer = Consumer::spawn(log.clone(), cfg, move || collector(s.clone())).unwrap();
    eventually(T, "every partition assigned", || {
        consumer.stats().assignment().len() == partitions as usize
    });
    // At once, as a caller that waited for the assignment would.
    send(60..300);
    eventually(T, "the 240 records written after the assignment", || {
        seen.lock().unwrap().len() >= 240
    });
    std::thread::sleep(Duration::from_millis(200));
    consumer.join_after_stop();
    let values: BTreeSet<usize> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.3.parse().unwrap())
        .collect();
    assert_eq!(values, (60..300).collect(), "exactly the later records");
    log.delete_topic(&topic, T).unwrap();
}

/// A handler that panics is rebuilt and the record retried: nothing is
/// lost, and the restart is counted.
pub fn panicking_handler_is_restarted(log: Arc<dyn Log>) {
    use riffle::actor::Supervision;
    use riffle::stream::Stopper;
    let topic = unique("panic");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    for i in 0..10 {
        producer
            .send(&topic, None, i.to_string().as_bytes())
            .unwrap();
    }
    producer.flush(T).unwrap();
    let seen: Seen = Default::default();
    let panicked = Arc::new(AtomicBool::new(false));
    let (s, p) = (seen.clone(), panicked.clone());
    let fast = Supervision {
        backoff: Duration::from_millis(10),
        ..Supervision::default()
    };
    let consumer = Consumer::spawn_with(
        log.clone(),
        config(&unique("g"), &topic),
        Stopper::new(),
        fast,
        move || {
            let (mut inner, p) = (collector(s.clone()), p.clone());
            move |r: RecordRef<'_>| -> Result<()> {
                if r.value == b"5" && !p.swap(true, Ordering::SeqCst) {
                    panic!("record 5 is cursed, once");
                }
                inner(r)
            }
        },
    )
    .unwrap();
    eventually(T, "every record handled after the restart", || {
        let got: BTreeSet<String> = seen.lock().unwrap().iter().map(|r| r.3.clone()).collect();
        got.len() == 10
    });
    assert_eq!(consumer.stats().restarts.load(Ordering::Relaxed), 1);
    consumer.join_after_stop();
    log.delete_topic(&topic, T).unwrap();
}
