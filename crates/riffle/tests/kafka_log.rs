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
