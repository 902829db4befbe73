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
    partition_for_key, ConsumerConfig, GroupOffset, Header, Log, LogReader, OffsetReset, OutRecord,
    OwnedHeader, ReaderConfig, RecordRef, TopicConfig, TopicPartition, TopicSpec,
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
            headers_round_trip, headers_in_transactions_and_passed_on,
            reader_reads_without_a_group, add_partitions_only_grows, topic_configs_and_isr,
            offsets_for_time_finds_first_record_at_or_after, group_administration,
            deleted_topic_stays_deleted, tombstones_read_as_empty);
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

fn to_partition<'a>(topic: &'a str, partition: i32, value: &'a [u8]) -> OutRecord<'a> {
    let mut r = OutRecord::new(topic, None, value);
    r.partition = Some(partition);
    r
}

/// Sends `values` keyed `k{i}` and waits for them to be delivered.
fn produce_keyed(log: &dyn Log, topic: &str, values: impl IntoIterator<Item = String>) {
    let producer = Producer::new(log).unwrap();
    for (i, v) in values.into_iter().enumerate() {
        producer
            .send(topic, Some(format!("k{i}").as_bytes()), v.as_bytes())
            .unwrap();
    }
    producer.flush(T).unwrap();
}

/// Polls `reader` until `want` records arrived or `limit` passes.
fn read_some(
    reader: &mut dyn LogReader,
    want: usize,
    limit: Duration,
) -> Vec<(String, i32, i64, String)> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < want && start.elapsed() < limit {
        reader
            .poll(Duration::from_millis(100), 1000, &mut |r| {
                got.push((
                    r.topic.to_owned(),
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(r.value).into_owned(),
                ));
                Ok(())
            })
            .unwrap();
    }
    got
}

/// Polls `reader` until it reports the end of every partition.
fn read_to_end(reader: &mut dyn LogReader) -> Vec<(String, i32, i64, String)> {
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        reader
            .poll(Duration::from_millis(100), 1000, &mut |r| {
                got.push((
                    r.topic.to_owned(),
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(r.value).into_owned(),
                ));
                Ok(())
            })
            .unwrap();
        if reader.at_end() {
            return got;
        }
        assert!(start.elapsed() < T, "end not reached; read {got:?}");
    }
}

/// A reader outside any group reads what it is pointed at, the same every
/// time (nothing is committed and no group appears), reports the end of
/// its partitions, and follows the log past it.
pub fn reader_reads_without_a_group(log: Arc<dyn Log>) {
    let topic = unique("reader");
    log.create_topic(&TopicSpec::new(&topic, 2), T).unwrap();
    produce_keyed(&*log, &topic, (0..10).map(|i| format!("v{i}")));
    let info = log.describe_topic(&topic, T).unwrap();
    let ends: Vec<i64> = info.partitions.iter().map(|p| p.high).collect();
    assert_eq!(ends.iter().sum::<i64>(), 10);
    let all = || ReaderConfig {
        start: (0..2)
            .map(|p| (TopicPartition::new(&topic, p), 0))
            .collect(),
        read_committed: false,
    };
    let groups_before = log.list_groups(T).unwrap();
    let mut first = read_to_end(&mut *log.reader(&all()).unwrap());
    let mut second = read_to_end(&mut *log.reader(&all()).unwrap());
    first.sort();
    second.sort();
    assert_eq!(first.len(), 10, "{first:?}");
    assert_eq!(first, second, "a second reader sees the same records");
    // Tests running alongside add and leave groups of their own meanwhile,
    // so the check is that no group appeared that knows this topic.
    let known: Vec<String> = groups_before.into_iter().map(|g| g.name).collect();
    for g in log.list_groups(T).unwrap() {
        if known.contains(&g.name) {
            continue;
        }
        let offsets = log.group_offsets(&g.name, T).unwrap_or_default();
        let members = log.group_members(&g.name, T).unwrap_or_default();
        assert!(
            offsets.iter().all(|o| o.partition.topic != topic)
                && members
                    .iter()
                    .all(|m| m.assignment.iter().all(|tp| tp.topic != topic)),
            "reading joined or created group {}: {offsets:?} {members:?}",
            g.name
        );
    }

    // One partition, from an offset; one beyond the end starts at the end.
    let p = if ends[0] >= 2 { 0 } else { 1 };
    let mut from_one = log
        .reader(&ReaderConfig {
            start: vec![(TopicPartition::new(&topic, p), 1)],
            read_committed: false,
        })
        .unwrap();
    let got = read_to_end(&mut *from_one);
    let offsets: Vec<i64> = got.iter().map(|r| r.2).collect();
    assert_eq!(offsets, (1..ends[p as usize]).collect::<Vec<_>>());
    assert!(got.iter().all(|r| r.1 == p));
    let mut beyond = log
        .reader(&ReaderConfig {
            start: vec![(TopicPartition::new(&topic, p), 1_000)],
            read_committed: false,
        })
        .unwrap();
    assert!(read_to_end(&mut *beyond).is_empty());

    // Past the end it follows the log: a new record arrives, and the end
    // moves on with it.
    let producer = Producer::new(&*log).unwrap();
    let headers = [Header::new("trace", Some(b"t1")), Header::new("none", None)];
    producer
        .send_record(to_partition(&topic, p, b"later").with_headers(&headers[..]))
        .unwrap();
    producer.flush(T).unwrap();
    let later = read_some(&mut *beyond, 1, T);
    assert_eq!(
        later,
        vec![(topic.clone(), p, ends[p as usize], "later".to_owned())]
    );
    let mut with_headers = Vec::new();
    let start = Instant::now();
    while with_headers.is_empty() && start.elapsed() < T {
        from_one
            .poll(Duration::from_millis(100), 10, &mut |r| {
                with_headers.push(r.headers.to_vec());
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(
        with_headers,
        vec![vec![
            OwnedHeader::new("trace", Some(b"t1".to_vec())),
            OwnedHeader::new("none", None::<Vec<u8>>),
        ]],
        "headers are read"
    );

    let missing = unique("missing");
    let err = log
        .reader(&ReaderConfig {
            start: vec![(TopicPartition::new(&missing, 0), 0)],
            read_committed: false,
        })
        .err();
    assert_eq!(err, Some(Error::UnknownTopic(missing)));
    assert!(matches!(
        log.reader(&ReaderConfig {
            start: vec![(TopicPartition::new(&topic, 5), 0)],
            read_committed: false,
        })
        .err(),
        Some(Error::InvalidInput(m)) if m.contains("partition 5")
    ));
    log.delete_topic(&topic, T).unwrap();
}

/// Partitions can be added, never removed; the new ones are served at once.
pub fn add_partitions_only_grows(log: Arc<dyn Log>) {
    let topic = unique("grow");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    log.add_partitions(&topic, 3, T).unwrap();
    let info = log.describe_topic(&topic, T).unwrap();
    assert_eq!(info.partitions.len(), 3, "{info:?}");
    let producer = Producer::new(&*log).unwrap();
    producer
        .send_record(to_partition(&topic, 2, b"in the new one"))
        .unwrap();
    producer.flush(T).unwrap();
    assert_eq!(log.describe_topic(&topic, T).unwrap().partitions[2].high, 1);
    for total in [3, 2] {
        match log.add_partitions(&topic, total, T) {
            Err(Error::InvalidInput(m)) => {
                assert!(
                    m.contains("has 3 partitions") && m.contains("increased"),
                    "{m}"
                )
            }
            other => panic!("expected InvalidInput for {total}, got {other:?}"),
        }
    }
    let missing = unique("missing");
    assert_eq!(
        log.add_partitions(&missing, 4, T),
        Err(Error::UnknownTopic(missing))
    );
    log.delete_topic(&topic, T).unwrap();
}

/// A topic's own configs are reported (among any other non-default ones),
/// and each partition's in-sync replicas are among its replicas.
pub fn topic_configs_and_isr(log: Arc<dyn Log>) {
    let topic = unique("configs");
    let mut spec = TopicSpec::new(&topic, 2);
    spec.configs = vec![("cleanup.policy".into(), "compact".into())];
    log.create_topic(&spec, T).unwrap();
    let configs = log.topic_configs(&topic, T).unwrap();
    assert!(
        configs.contains(&TopicConfig {
            name: "cleanup.policy".into(),
            value: "compact".into(),
            source: "topic".into(),
        }),
        "{configs:?}"
    );
    assert!(
        configs
            .iter()
            .all(|c| c.source == "topic" || c.source == "broker"),
        "{configs:?}"
    );
    let plain = unique("plain");
    log.create_topic(&TopicSpec::new(&plain, 1), T).unwrap();
    assert!(
        log.topic_configs(&plain, T)
            .unwrap()
            .iter()
            .all(|c| c.source != "topic"),
        "a topic created without configs has none of its own"
    );
    let info = log.describe_topic(&topic, T).unwrap();
    for p in &info.partitions {
        assert!(!p.isr.is_empty(), "{p:?}");
        assert!(p.isr.iter().all(|r| p.replicas.contains(r)), "{p:?}");
        assert!(p.isr.contains(&p.leader), "{p:?}");
    }
    let missing = unique("missing");
    assert_eq!(
        log.topic_configs(&missing, T),
        Err(Error::UnknownTopic(missing))
    );
    log.delete_topic(&topic, T).unwrap();
    log.delete_topic(&plain, T).unwrap();
}

/// The offset for a time is the first record at or after it.
pub fn offsets_for_time_finds_first_record_at_or_after(log: Arc<dyn Log>) {
    let topic = unique("time");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    for i in 0..3 {
        producer
            .send(&topic, None, format!("early{i}").as_bytes())
            .unwrap();
    }
    producer.flush(T).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..2 {
        producer
            .send(&topic, None, format!("late{i}").as_bytes())
            .unwrap();
    }
    producer.flush(T).unwrap();
    assert_eq!(
        log.offsets_for_time(&topic, between, T).unwrap(),
        vec![(0, Some(3))]
    );
    assert_eq!(
        log.offsets_for_time(&topic, 0, T).unwrap(),
        vec![(0, Some(0))]
    );
    assert_eq!(
        log.offsets_for_time(&topic, between + 3_600_000, T)
            .unwrap(),
        vec![(0, None)],
        "nothing after the last record"
    );
    let missing = unique("missing");
    assert_eq!(
        log.offsets_for_time(&missing, 0, T),
        Err(Error::UnknownTopic(missing))
    );
    log.delete_topic(&topic, T).unwrap();
}

/// Groups are listed with their members; their offsets can be set and the
/// group deleted only while it has no members; a deleted group is gone.
pub fn group_administration(log: Arc<dyn Log>) {
    let topic = unique("groups");
    log.create_topic(&TopicSpec::new(&topic, 2), T).unwrap();
    produce_keyed(&*log, &topic, (0..6).map(|i| i.to_string()));
    let group = unique("g");
    let seen: Seen = Default::default();
    let s = seen.clone();
    let c = Consumer::spawn(log.clone(), config(&group, &topic), move || {
        collector(s.clone())
    })
    .unwrap();
    eventually(T, "all 6 read", || seen.lock().unwrap().len() == 6);
    eventually(T, "the group listed with its member", || {
        log.list_groups(T)
            .unwrap()
            .iter()
            .any(|g| g.name == group && g.members == 1 && g.state == "Stable")
    });
    let offsets = [(TopicPartition::new(&topic, 0), 0)];
    assert_eq!(
        log.set_group_offsets(&group, &offsets, T),
        Err(Error::GroupNotEmpty(group.clone()))
    );
    assert_eq!(
        log.delete_group(&group, T),
        Err(Error::GroupNotEmpty(group.clone()))
    );
    c.join_after_stop();

    let listed = log.list_groups(T).unwrap();
    let g = listed
        .iter()
        .find(|g| g.name == group)
        .expect("still listed");
    assert_eq!((g.members, g.state.as_str()), (0, "Empty"), "{g:?}");
    let committed = log.group_offsets(&group, T).unwrap();
    let ends = log.describe_topic(&topic, T).unwrap();
    let expect: Vec<GroupOffset> = ends
        .partitions
        .iter()
        .filter(|p| p.high > 0)
        .map(|p| GroupOffset {
            partition: TopicPartition::new(&topic, p.id),
            committed: Some(p.high),
        })
        .collect();
    assert_eq!(committed, expect, "every committed offset, on all topics");

    // Back to the start of both partitions: a new member reads all again.
    let to_start: Vec<(TopicPartition, i64)> = (0..2)
        .map(|p| (TopicPartition::new(&topic, p), 0))
        .collect();
    log.set_group_offsets(&group, &to_start, T).unwrap();
    let now: Vec<Option<i64>> = log
        .committed_offsets(&group, &topic, T)
        .unwrap()
        .iter()
        .map(|o| o.committed)
        .collect();
    assert_eq!(now, vec![Some(0), Some(0)]);
    let s = seen.clone();
    let c = Consumer::spawn(log.clone(), config(&group, &topic), move || {
        collector(s.clone())
    })
    .unwrap();
    eventually(T, "all 6 read again", || seen.lock().unwrap().len() == 12);
    c.join_after_stop();

    log.delete_group(&group, T).unwrap();
    assert!(
        !log.list_groups(T).unwrap().iter().any(|g| g.name == group),
        "a deleted group is not listed"
    );
    assert!(log.group_offsets(&group, T).unwrap().is_empty());
    assert_eq!(
        log.delete_group(&group, T),
        Err(Error::UnknownGroup(group.clone()))
    );
    log.delete_topic(&topic, T).unwrap();
}

/// A deleted topic stays deleted, whatever is asked about it afterwards
/// (a broker at Kafka's defaults creates topics that clients look up), and
/// can be created again at once with another partition count.
pub fn deleted_topic_stays_deleted(log: Arc<dyn Log>) {
    let topic = unique("gone");
    log.create_topic(&TopicSpec::new(&topic, 2), T).unwrap();
    produce_keyed(&*log, &topic, ["a".to_owned()]);
    log.delete_topic(&topic, T).unwrap();
    let unknown: Result<()> = Err(Error::UnknownTopic(topic.clone()));
    assert_eq!(log.describe_topic(&topic, T).map(|_| ()), unknown);
    assert_eq!(log.committed_offsets("g", &topic, T).map(|_| ()), unknown);
    assert_eq!(log.offsets_for_time(&topic, 0, T).map(|_| ()), unknown);
    assert_eq!(log.topic_configs(&topic, T).map(|_| ()), unknown);
    assert_eq!(log.add_partitions(&topic, 5, T), unknown);
    assert_eq!(
        log.reader(&ReaderConfig {
            start: vec![(TopicPartition::new(&topic, 0), 0)],
            read_committed: false,
        })
        .map(|_| ())
        .err(),
        Some(Error::UnknownTopic(topic.clone()))
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !log.list_topics(T).unwrap().iter().any(|t| t.name == topic),
        "still deleted a few seconds later"
    );
    assert_eq!(log.describe_topic(&topic, T).map(|_| ()), unknown);
    log.create_topic(&TopicSpec::new(&topic, 3), T).unwrap();
    let info = log.describe_topic(&topic, T).unwrap();
    assert_eq!(info.partitions.len(), 3);
    assert!(info.partitions.iter().all(|p| p.high == 0), "{info:?}");
    log.delete_topic(&topic, T).unwrap();
}

/// The committed records of `topic` per key, values as text, in order,
/// once `n` are there or `T` passed (the caller's assertions say what is
/// missing), and half a second longer, so that one too many would show.
pub fn committed_per_key(
    log: &Arc<dyn Log>,
    topic: &str,
    n: usize,
) -> BTreeMap<String, Vec<String>> {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(unique("reader"), &[topic]);
    cfg.read_committed = true;
    let c = Consumer::spawn(log.clone(), cfg, move || {
        let s = s.clone();
        move |r: RecordRef<'_>| -> Result<()> {
            let v = String::from_utf8_lossy(r.value).into_owned();
            s.lock()
                .unwrap()
                .push((r.key_str().unwrap_or_default().to_owned(), v));
            Ok(())
        }
    })
    .unwrap();
    let deadline = Instant::now() + T;
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    c.stop();
    c.join().unwrap();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in seen.lock().unwrap().drain(..) {
        per_key.entry(k).or_default().push(v);
    }
    per_key
}
