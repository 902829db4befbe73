//! The log contract on a real Apache Kafka broker.
//!
//! `RIFFLE_TEST_BROKERS` names the broker; `scripts/test.sh` starts one
//! (`scripts/kafka.sh start`) and sets it. These tests fail, rather than
//! skip, when it is missing.

mod conformance;

use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::kafka::KafkaLog;
use riffle::log::Log;
use riffle::Error;

pub fn brokers() -> String {
    std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it")
}

fn log() -> Arc<dyn Log> {
    Arc::new(KafkaLog::connect(brokers(), vec![]).expect("test broker reachable"))
}

conformance_tests!(log());

#[test]
fn unreachable_broker_is_reported_quickly() {
    let start = Instant::now();
    let err = KafkaLog::connect("127.0.0.1:1", vec![])
        .err()
        .expect("nothing listens on port 1");
    let took = start.elapsed();
    match &err {
        Error::Unreachable { brokers, .. } => assert_eq!(brokers, "127.0.0.1:1"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "reported after {took:?}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn malformed_property_is_one_line_error() {
    let err = KafkaLog::new(brokers(), vec![("no.such.property".into(), "1".into())])
        .err()
        .expect("refused");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("no.such.property"), "{err}");
}

#[test]
fn transactional_producer_on_unreachable_broker_is_reported_quickly() {
    let log = KafkaLog::new("127.0.0.1:1", vec![]).unwrap();
    let start = Instant::now();
    let err = log
        .transactional_producer("tx", None)
        .err()
        .expect("nothing listens on port 1");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// A `read_committed` read waits for a transaction open when it starts;
/// a `read_uncommitted` one reads its records at once. Once the transaction
/// is aborted, the `read_committed` read ends past it, having seen none of it.
#[test]
fn read_committed_read_waits_for_an_open_transaction() {
    use riffle::log::{OutRecord, TopicSpec};
    let log = log();
    let topic = conformance::unique("read-open");
    log.create_topic(&TopicSpec::new(&topic, 1), conformance::T)
        .unwrap();
    let p = log
        .transactional_producer(&conformance::unique("tx"), None)
        .unwrap();
    p.begin().unwrap();
    p.send(OutRecord::new(&topic, None, b"open")).unwrap();
    p.flush(conformance::T).unwrap();

    let read = |read_committed: bool, idle: Duration| {
        let mut values = Vec::new();
        log.read_partition(&topic, 0, 0, read_committed, idle, &mut |r| {
            values.push(r.value.to_vec());
            Ok(())
        })
        .map(|end| (end, values))
    };
    assert_eq!(read(false, conformance::T), Ok((1, vec![b"open".to_vec()])));
    match read(true, Duration::from_secs(1)) {
        Err(Error::Timeout(m)) => assert!(m.contains(&topic), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    p.abort(conformance::T).unwrap();
    // The coordinator writes the abort marker after the abort returns: a
    // read may end before it once, never see the aborted record.
    let deadline = std::time::Instant::now() + conformance::T;
    loop {
        let (end, values) = read(true, conformance::T).unwrap();
        assert!(values.is_empty(), "{values:?}");
        if end == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never past the record and the abort marker: {end}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    log.delete_topic(&topic, conformance::T).unwrap();
}

/// New partitions reach a group of static members at the leader's next
/// metadata refresh; with refreshes 5 minutes apart they stay unowned
/// until `rebalance_group` makes the leader assign anew, which moves none
/// of the members onto another topic. The helper member joins with the
/// group's own assignor, incremental or eager.
#[test]
fn rebalance_group_assigns_partitions_the_leader_missed() {
    unowned_partitions_assigned(false);
}

#[test]
fn rebalance_group_assigns_partitions_the_leader_missed_eagerly() {
    unowned_partitions_assigned(true);
}

fn unowned_partitions_assigned(eager: bool) {
    use riffle::log::{TopicPartition, TopicSpec};
    use riffle::stream::ConsumerGroup;
    use std::collections::BTreeSet;
    let slow = vec![(
        "topic.metadata.refresh.interval.ms".to_owned(),
        "300000".to_owned(),
    )];
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(brokers(), slow).unwrap());
    let (topic, via) = (
        conformance::unique("unowned"),
        conformance::unique("unowned-via"),
    );
    for (t, n) in [(&topic, 2), (&via, 1)] {
        log.create_topic(&TopicSpec::new(t, n), conformance::T)
            .unwrap();
    }
    let group = conformance::unique("unowned-group");
    let mut cfg = conformance::config(&group, &topic);
    cfg.instance = Some(group.clone());
    cfg.eager = eager;
    let members = ConsumerGroup::spawn(log.clone(), &cfg, 2, |_| {
        |_: riffle::log::RecordRef<'_>| Ok(())
    })
    .unwrap();
    let owned = || -> BTreeSet<TopicPartition> {
        members
            .assignments()
            .into_iter()
            .flat_map(|(_, a)| a)
            .collect()
    };
    let all = |n: i32| -> BTreeSet<TopicPartition> {
        (0..n)
            .map(|p| TopicPartition::new(topic.clone(), p))
            .collect()
    };
    // Both members have joined and own one partition each: no rebalance of
    // the second's joining is still to come, which would fetch new metadata.
    conformance::eventually(conformance::T, "each member owns one partition", || {
        owned() == all(2) && members.assignments().iter().all(|(_, a)| a.len() == 1)
    });

    log.add_partitions(&topic, 4, conformance::T).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(owned(), all(2), "the leader saw the new partitions early");
    let asked = Instant::now();
    log.rebalance_group(&group, &via, conformance::T).unwrap();
    conformance::eventually(Duration::from_secs(20), "the members own all 4", || {
        owned() == all(4)
    });
    eprintln!(
        "all 4 partitions owned {:.2?} after asking",
        asked.elapsed()
    );
    // The short-lived member has left: its topic is nobody's.
    conformance::eventually(conformance::T, "the helper member left", || {
        let seen = log.group_members(&group, conformance::T).unwrap();
        seen.len() == 2
            && seen
                .iter()
                .all(|m| m.assignment.iter().all(|tp| tp.topic == topic))
    });
    members.stop().unwrap();
    // A group without members has nothing to assign.
    log.rebalance_group(&group, &via, conformance::T).unwrap();
    for t in [&topic, &via] {
        log.delete_topic(t, conformance::T).unwrap();
    }
}

/// A producer, and the reader clients kept between reads, made before a
/// topic grew write to and read its new partitions at once, rather than
/// failing until their next metadata refresh.
#[test]
fn clients_made_before_a_topic_grew_use_its_new_partitions() {
    use riffle::log::{OutRecord, TopicSpec};
    let log = log();
    let topic = conformance::unique("kept-reader");
    log.create_topic(&TopicSpec::new(&topic, 1), conformance::T)
        .unwrap();
    let producer = log.producer(None).unwrap();
    let to = |p: i32, value: &'static [u8]| {
        let mut r = OutRecord::new(&topic, None, value);
        r.partition = Some(p);
        producer.send(r).unwrap();
        producer.flush(conformance::T).unwrap();
    };
    let read = |p: i32| {
        let mut values = Vec::new();
        log.read_partition(&topic, p, 0, false, conformance::T, &mut |r| {
            values.push(r.value.to_vec());
            Ok(())
        })
        .map(|end| (end, values))
    };
    to(0, b"before");
    // Every kept client now knows the topic with one partition.
    for _ in 0..8 {
        assert_eq!(read(0), Ok((1, vec![b"before".to_vec()])));
    }
    log.add_partitions(&topic, 2, conformance::T).unwrap();
    to(1, b"after");
    assert_eq!(read(1), Ok((1, vec![b"after".to_vec()])));
    log.delete_topic(&topic, conformance::T).unwrap();
}
