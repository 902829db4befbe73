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
