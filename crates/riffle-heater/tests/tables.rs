//! The controller with tables: thermostat settings from a compacted
//! settings topic of their own, and a fleet-wide maximum temperature from
//! a global table that every process holds, followed as it changes. On
//! the embedded log and on a real Kafka broker (`RIFFLE_TEST_BROKERS`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::table::GlobalTable;
use riffle::process::{App, Guarantee, Running};
use riffle::stream::{Consumer, Producer};
use riffle_heater::controller::{Controller, MAX_TEMPERATURE};
use riffle_heater::messages::{measurement_json, setting_json, Setting};

const T: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

fn compacted(log: &dyn Log, name: &str) {
    let mut spec = TopicSpec::new(name, 2);
    spec.configs
        .push(("cleanup.policy".into(), "compact".into()));
    log.create_topic(&spec, T).unwrap();
}

fn wait_processed(app: &Running, n: u64) {
    let deadline = Instant::now() + T;
    while app.stats().processed.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "{n} records processed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn limits(log: Arc<dyn Log>) {
    let (sensor, settings, fleet, control) = (
        unique("sensor"),
        unique("settings"),
        unique("fleet"),
        unique("control"),
    );
    log.create_topic(&TopicSpec::new(&sensor, 2), T).unwrap();
    log.create_topic(&TopicSpec::new(&control, 2), T).unwrap();
    compacted(&*log, &settings);
    compacted(&*log, &fleet);
    let p = Producer::new(&*log).unwrap();
    p.send(&fleet, Some(MAX_TEMPERATURE.as_bytes()), b"40")
        .unwrap();
    p.flush(T).unwrap();
    let number = |v: &[u8]| {
        serde_json::from_slice::<f64>(v).map_err(|e| riffle::Error::Decode(e.to_string()))
    };
    let table = GlobalTable::start(&*log, &fleet, number).unwrap();
    let controller = Controller::new(&control).with_limits(table.clone());
    let app = App::new(&unique("controller"), &[&sensor, &settings], controller)
        .guarantee(Guarantee::ExactlyOnce)
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let setting = Setting {
        temperature: 45.0,
        up_delta: 1.0,
        down_delta: 1.0,
    };
    p.send(&settings, Some(b"h1"), &setting_json(&setting))
        .unwrap();
    p.flush(T).unwrap();
    wait_processed(&app, 1);
    // 42 is below 45 - 1, but above the cap of 40 + 1: OFF.
    p.send(&sensor, Some(b"h1"), &measurement_json(42.0))
        .unwrap();
    p.flush(T).unwrap();
    wait_processed(&app, 2);
    // The fleet's maximum goes up: the setting holds again.
    p.send(&fleet, Some(MAX_TEMPERATURE.as_bytes()), b"50")
        .unwrap();
    p.flush(T).unwrap();
    let deadline = Instant::now() + T;
    while table.get(MAX_TEMPERATURE) != Some(50.0) {
        assert!(Instant::now() < deadline, "the new maximum read");
        std::thread::sleep(Duration::from_millis(20));
    }
    p.send(&sensor, Some(b"h1"), &measurement_json(42.0))
        .unwrap();
    p.flush(T).unwrap();

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(unique("reader"), &[&control]);
    cfg.read_committed = true;
    let c = Consumer::spawn(log.clone(), cfg, move || {
        let s = s.clone();
        move |r: RecordRef<'_>| -> riffle::Result<()> {
            s.lock()
                .unwrap()
                .push(String::from_utf8_lossy(r.value).into_owned());
            Ok(())
        }
    })
    .unwrap();
    let deadline = Instant::now() + T;
    while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    c.stop();
    c.join().unwrap();
    app.stop().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [r#"{"control":1}"#, r#"{"control":0}"#]
    );
}

#[test]
fn embedded_settings_and_fleet_limits() {
    limits(Arc::new(EmbeddedLog::new()));
}

#[test]
fn kafka_settings_and_fleet_limits() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    limits(Arc::new(
        KafkaLog::connect(brokers, vec![]).expect("test broker reachable"),
    ));
}
