//! Transactions and partition reads: what exactly-once applications and
//! state restoration rely on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::{
    GroupEvent, Log, LogConsumer, OutRecord, PollVisitor, Record, RecordRef, TopicPartition,
    TopicSpec, TxnProducer,
};
use riffle::stream::Producer;
use riffle::Error;

use super::{config, unique, T};

/// Collects what a raw consumer's polls hand out. Records are not marked
/// processed, so offsets reach the group only through transactions.
#[derive(Default)]
pub(super) struct Collect {
    pub(super) records: Vec<Record>,
}

impl Collect {
    pub(super) fn values(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| String::from_utf8(r.value.clone()).unwrap())
            .collect()
    }
}

impl PollVisitor for Collect {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.records.push(record.to_owned());
        false
    }
    fn event(&mut self, _event: GroupEvent) {}
}

/// Polls `consumer` until `done` holds, failing after [`T`].
pub(super) fn poll_until(
    consumer: &mut dyn LogConsumer,
    seen: &mut Collect,
    what: &str,
    mut done: impl FnMut(&dyn LogConsumer, &Collect) -> bool,
) {
    let start = Instant::now();
    while !done(consumer, seen) {
        assert!(start.elapsed() < T, "timed out waiting for: {what}");
        consumer
            .poll(Duration::from_millis(100), 100, seen)
            .unwrap();
    }
}

fn assigned(c: &dyn LogConsumer) -> bool {
    !c.assignment().unwrap().is_empty()
}

/// A topic `name` with `n` plain records `v0..`, flushed.
fn topic_with(log: &Arc<dyn Log>, name: &str, partitions: i32, n: usize) {
    log.create_topic(&TopicSpec::new(name, partitions), T)
        .unwrap();
    let producer = Producer::new(&**log).unwrap();
    for i in 0..n {
        let value = format!("v{i}");
        producer
            .send_record(OutRecord {
                partition: Some(0),
                ..OutRecord::new(name, None, value.as_bytes())
            })
            .unwrap();
    }
    producer.flush(T).unwrap();
}

/// A group member of `group` on `topic` that owns its partitions.
pub(super) fn member(log: &Arc<dyn Log>, group: &str, topic: &str) -> Box<dyn LogConsumer> {
    let mut c = log.consumer(&config(group, topic)).unwrap();
    poll_until(
        &mut *c,
        &mut Collect::default(),
        "member assigned",
        |c, _| assigned(c),
    );
    c
}

fn send(p: &dyn TxnProducer, topic: &str, value: &str) {
    p.send(OutRecord {
        partition: Some(0),
        ..OutRecord::new(topic, None, value.as_bytes())
    })
    .unwrap();
}

/// Reads `topic` with a `read_committed` group consumer until `last` shows
/// up, and returns every value seen.
fn read_committed_until(log: &Arc<dyn Log>, topic: &str, last: &str) -> Vec<String> {
    let mut cfg = config(&unique("reader"), topic);
    cfg.read_committed = true;
    let mut c = log.consumer(&cfg).unwrap();
    let mut seen = Collect::default();
    poll_until(
        &mut *c,
        &mut seen,
        &format!("'{last}' in {topic}"),
        |_, s| s.values().iter().any(|v| v == last),
    );
    c.close().unwrap();
    seen.values()
}

fn committed(log: &Arc<dyn Log>, group: &str, topic: &str) -> Option<i64> {
    log.committed_offsets(group, topic, T).unwrap()[0].committed
}

/// A committed transaction's records reach `read_committed` consumers, and
/// its offsets are the group's committed offsets.
pub fn txn_commit_is_visible_with_offsets(log: Arc<dyn Log>) {
    let (input, output, group) = (unique("txn-in"), unique("txn-out"), unique("g"));
    topic_with(&log, &input, 1, 10);
    log.create_topic(&TopicSpec::new(&output, 1), T).unwrap();
    let mut consumer = member(&log, &group, &input);

    let p = log.transactional_producer(&unique("tx"), None).unwrap();
    p.begin().unwrap();
    for i in 0..5 {
        send(&*p, &output, &format!("out{i}"));
    }
    let offsets = [(TopicPartition::new(&input, 0), 7)];
    p.commit(&offsets, &consumer.group().unwrap(), T).unwrap();

    assert_eq!(
        read_committed_until(&log, &output, "out4"),
        ["out0", "out1", "out2", "out3", "out4"]
    );
    assert_eq!(committed(&log, &group, &input), Some(7));
    consumer.close().unwrap();
    assert_eq!(
        committed(&log, &group, &input),
        Some(7),
        "closing without stored offsets keeps the transaction's"
    );
}

/// An aborted transaction is never seen by `read_committed` consumers and
/// commits no offsets; the producer goes on with the next one.
pub fn txn_abort_is_invisible(log: Arc<dyn Log>) {
    let (input, output, group) = (unique("txn-in"), unique("txn-out"), unique("g"));
    topic_with(&log, &input, 1, 10);
    log.create_topic(&TopicSpec::new(&output, 1), T).unwrap();
    let consumer = member(&log, &group, &input);

    let p = log.transactional_producer(&unique("tx"), None).unwrap();
    p.begin().unwrap();
    send(&*p, &output, "aborted0");
    send(&*p, &output, "aborted1");
    p.flush(T).unwrap();
    p.abort(T).unwrap();
    assert_eq!(committed(&log, &group, &input), None);

    p.begin().unwrap();
    send(&*p, &output, "kept");
    p.commit(
        &[(TopicPartition::new(&input, 0), 3)],
        &consumer.group().unwrap(),
        T,
    )
    .unwrap();
    assert_eq!(read_committed_until(&log, &output, "kept"), ["kept"]);
    assert_eq!(committed(&log, &group, &input), Some(3));
}

/// A second producer with the same id fences the first: the first can no
/// longer commit, and nothing it sent is ever seen.
pub fn txn_newer_producer_fences_older(log: Arc<dyn Log>) {
    let (input, output, group) = (unique("txn-in"), unique("txn-out"), unique("g"));
    topic_with(&log, &input, 1, 10);
    log.create_topic(&TopicSpec::new(&output, 1), T).unwrap();
    let consumer = member(&log, &group, &input);
    let id = unique("tx");

    let old = log.transactional_producer(&id, None).unwrap();
    old.begin().unwrap();
    send(&*old, &output, "zombie");
    old.flush(T).unwrap();

    let new = log.transactional_producer(&id, None).unwrap();
    let token = consumer.group().unwrap();
    let fenced = old.commit(&[(TopicPartition::new(&input, 0), 5)], &token, T);
    assert!(matches!(fenced, Err(Error::Fenced(_))), "{fenced:?}");
    assert!(
        matches!(old.begin(), Err(Error::Fenced(_))),
        "a fenced producer stays fenced"
    );
    assert_eq!(committed(&log, &group, &input), None);

    new.begin().unwrap();
    send(&*new, &output, "live");
    new.commit(&[(TopicPartition::new(&input, 0), 6)], &token, T)
        .unwrap();
    assert_eq!(read_committed_until(&log, &output, "live"), ["live"]);
    assert_eq!(committed(&log, &group, &input), Some(6));
}

/// A commit carrying the group token of a consumer whose group has moved
/// on (another member joined and the partitions were redistributed) is
/// refused, so a consumer that lost its partitions cannot commit over the
/// new owner.
pub fn txn_stale_generation_is_fenced(log: Arc<dyn Log>) {
    let (input, output, group) = (unique("txn-in"), unique("txn-out"), unique("g"));
    topic_with(&log, &input, 2, 0);
    log.create_topic(&TopicSpec::new(&output, 1), T).unwrap();
    let mut a = member(&log, &group, &input);
    let stale = a.group().unwrap();

    let mut b = log.consumer(&config(&group, &input)).unwrap();
    let (mut seen_a, mut seen_b) = (Collect::default(), Collect::default());
    let start = Instant::now();
    while !(a.assignment().unwrap().len() == 1 && b.assignment().unwrap().len() == 1) {
        assert!(start.elapsed() < T, "timed out waiting for the rebalance");
        a.poll(Duration::from_millis(50), 100, &mut seen_a).unwrap();
        b.poll(Duration::from_millis(50), 100, &mut seen_b).unwrap();
    }

    let p = log.transactional_producer(&unique("tx"), None).unwrap();
    p.begin().unwrap();
    send(&*p, &output, "stale");
    let offsets = [(TopicPartition::new(&input, 0), 1)];
    let fenced = p.commit(&offsets, &stale, T);
    assert!(matches!(fenced, Err(Error::Fenced(_))), "{fenced:?}");
    assert_eq!(committed(&log, &group, &input), None);

    // The producer itself is not fenced: with a current token it commits.
    p.begin().unwrap();
    send(&*p, &output, "fresh");
    p.commit(&offsets, &a.group().unwrap(), T).unwrap();
    assert_eq!(read_committed_until(&log, &output, "fresh"), ["fresh"]);
    assert_eq!(committed(&log, &group, &input), Some(1));
}

fn read(
    log: &Arc<dyn Log>,
    topic: &str,
    from: i64,
    read_committed: bool,
) -> riffle::Result<(i64, Vec<(i64, String)>)> {
    let mut seen = Vec::new();
    let end = log.read_partition(topic, 0, from, read_committed, T, &mut |r| {
        seen.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()));
        Ok(())
    })?;
    Ok((end, seen))
}

fn high(log: &Arc<dyn Log>, topic: &str) -> i64 {
    log.describe_topic(topic, T).unwrap().partitions[0].high
}

/// `read_partition` reads from an offset to the end and returns the end;
/// an offset beyond the end, an unknown topic and a failing visitor are
/// errors.
pub fn read_partition_to_end(log: Arc<dyn Log>) {
    let topic = unique("read");
    topic_with(&log, &topic, 2, 20);

    let (end, seen) = read(&log, &topic, 5, false).unwrap();
    assert_eq!(end, 20);
    let expected: Vec<(i64, String)> = (5..20).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(seen, expected);
    assert_eq!(read(&log, &topic, 0, false).unwrap().1.len(), 20);
    assert_eq!(read(&log, &topic, 20, false).unwrap(), (20, vec![]));

    match read(&log, &topic, 21, false) {
        Err(Error::InvalidInput(m)) => {
            assert!(m.contains("21") && m.contains("20"), "names both: {m}")
        }
        other => panic!("reading from 21 of 20: {other:?}"),
    }
    let missing = unique("missing");
    assert_eq!(
        read(&log, &missing, 0, false),
        Err(Error::UnknownTopic(missing.clone()))
    );
    let mut visited = 0;
    let failed = log.read_partition(&topic, 0, 0, false, T, &mut |_| {
        visited += 1;
        Err(Error::Decode("bad".into()))
    });
    assert_eq!(failed, Err(Error::Decode("bad".into())));
    assert_eq!(visited, 1, "the read stops at the visitor's error");
}

/// With `read_committed`, `read_partition` skips aborted records and ends
/// past them and past the transaction markers.
pub fn read_partition_skips_aborted(log: Arc<dyn Log>) {
    let (input, topic) = (unique("txn-in"), unique("read-txn"));
    topic_with(&log, &input, 1, 0);
    topic_with(&log, &topic, 1, 3);
    let consumer = member(&log, &unique("g"), &input);
    let p = log.transactional_producer(&unique("tx"), None).unwrap();
    p.begin().unwrap();
    send(&*p, &topic, "aborted");
    p.flush(T).unwrap();
    p.abort(T).unwrap();
    p.begin().unwrap();
    send(&*p, &topic, "committed");
    p.commit(&[], &consumer.group().unwrap(), T).unwrap();
    p.begin().unwrap();
    send(&*p, &topic, "aborted-at-end");
    p.flush(T).unwrap();
    p.abort(T).unwrap();

    let (end, seen) = read(&log, &topic, 0, true).unwrap();
    let values: Vec<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["v0", "v1", "v2", "committed"]);
    assert_eq!(end, high(&log, &topic), "the end is past the aborted tail");
    assert_eq!(read(&log, &topic, end, true).unwrap(), (end, vec![]));
}

/// A tombstone (a null value) reads back with an empty value, in and out
/// of transactions: a changelog's deleted keys.
pub fn tombstones_read_as_empty(log: Arc<dyn Log>) {
    let topic = unique("tombstones");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    let p = log.producer(None).unwrap();
    p.send(OutRecord::new(&topic, Some(b"k"), b"state"))
        .unwrap();
    p.send(OutRecord::tombstone(&topic, b"k", Some(0))).unwrap();
    p.flush(T).unwrap();
    let mut seen = Vec::new();
    log.read_partition(&topic, 0, 0, false, T, &mut |r| {
        seen.push((r.key.map(<[u8]>::to_vec), r.value.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            (Some(b"k".to_vec()), b"state".to_vec()),
            (Some(b"k".to_vec()), Vec::new())
        ]
    );
}
