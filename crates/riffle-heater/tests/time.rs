//! The controller and time. Its watchdog: a heater that falls silent (in
//! the heaters' own time, the records' timestamps) is turned OFF once, with
//! an alert, and is controlled as before when it reports again; a heater
//! that keeps reporting is left alone. Its
//! maximum age: a backlog of old measurements is counted, not acted upon.
//! On the embedded log and on a real Kafka broker (`RIFFLE_TEST_BROKERS`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{
    partition_for_key, ConsumerConfig, Header, Log, OutRecord, RecordRef, TopicSpec,
};
use riffle::process::{App, Guarantee, Style};
use riffle::stream::{Consumer, Producer};
use riffle_heater::controller::Controller;
use riffle_heater::messages::{measurement_json, setting_json, Setting, TIME_HEADER};

const T: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_millis(800);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

/// The committed records of `topic` per key, values as text, once `n`
/// are there (and a while longer, so that one too many would show).
fn read(log: &Arc<dyn Log>, topic: &str, n: usize) -> BTreeMap<String, Vec<String>> {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(unique("reader"), &[topic]);
    cfg.read_committed = true;
    let c = Consumer::spawn(log.clone(), cfg, move || {
        let s = s.clone();
        move |r: RecordRef<'_>| -> riffle::Result<()> {
            let key = r.key_str().unwrap_or_default().to_owned();
            s.lock()
                .unwrap()
                .push((key, String::from_utf8_lossy(r.value).into_owned()));
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
    for (k, v) in seen.lock().unwrap().iter() {
        per_key.entry(k.clone()).or_default().push(v.clone());
    }
    per_key
}

/// A key in the same partition as "quiet" of a 3-partition topic: the
/// watchdog counts event time, which a partition's own records move on.
fn neighbour_of_quiet() -> String {
    let p = partition_for_key(b"quiet", 3);
    (0..)
        .map(|i| format!("chatty-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), 3) == p)
        .unwrap()
}

fn watchdog(log: Arc<dyn Log>, style: Style, guarantee: Guarantee) {
    let (sensor, control, alerts) = (unique("sensor"), unique("control"), unique("alerts"));
    for t in [&sensor, &control, &alerts] {
        log.create_topic(&TopicSpec::new(t, 3), T).unwrap();
    }
    let controller = Controller::new(&control).with_watchdog(SILENCE, &alerts);
    let app = App::new(&unique("controller"), &[&sensor], controller)
        .style(style)
        .guarantee(guarantee)
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let producer = Arc::new(Producer::new(&*log).unwrap());
    // The heaters' clock, in the records' time header as the simulator
    // writes it (their timestamps are when they are sent): a record every
    // 100 ms of it, one per 100 ms of wall time.
    let t0 = 1_700_000_000_000i64;
    let send = {
        let (p, sensor) = (producer.clone(), sensor.clone());
        move |heater: &str, value: Vec<u8>, at: i64| {
            let at = at.to_string();
            let time = [Header::new(TIME_HEADER, Some(at.as_bytes()))];
            let r = OutRecord::new(&sensor, Some(heater.as_bytes()), &value).with_headers(&time);
            p.send_record(r).unwrap();
            p.flush(T).unwrap();
        }
    };
    let setting = Setting {
        temperature: 45.0,
        up_delta: 1.0,
        down_delta: 1.0,
    };
    let chatty = neighbour_of_quiet();
    for heater in ["quiet", chatty.as_str()] {
        send(heater, setting_json(&setting), t0);
    }
    send("quiet", measurement_json(40.0), t0);
    // `chatty` reports every 100 ms for as long as the test runs, and
    // `quiet` too once it is back.
    let (stop, back) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let back_at = Arc::new(AtomicI64::new(0));
    let reporter = {
        let (stop, back, back_at, send) =
            (stop.clone(), back.clone(), back_at.clone(), send.clone());
        let chatty = chatty.clone();
        std::thread::spawn(move || {
            let mut at = t0;
            while !stop.load(Ordering::Relaxed) {
                at += 100;
                send(&chatty, measurement_json(50.0), at);
                if back.load(Ordering::Relaxed) {
                    back_at
                        .compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst)
                        .ok();
                    send("quiet", measurement_json(40.0), at);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let silent = read(&log, &alerts, 1);
    assert_eq!(silent.keys().collect::<Vec<_>>(), ["quiet"], "{silent:?}");
    // At the heaters' time of its last measurement and the silence.
    let at = t0 + SILENCE.as_millis() as i64;
    assert!(
        silent["quiet"][0].contains(r#""alert":"silent""#)
            && silent["quiet"][0].contains(&format!(r#""at_ms":{at}"#)),
        "{silent:?}"
    );
    // It is controlled as before.
    back.store(true, Ordering::Relaxed);
    let alerts = read(&log, &alerts, 2);
    let commands = read(&log, &control, 4);
    stop.store(true, Ordering::Relaxed);
    reporter.join().unwrap();
    app.stop().unwrap();

    let names: Vec<bool> = alerts["quiet"]
        .iter()
        .map(|a| a.contains(r#""alert":"silent""#))
        .collect();
    assert_eq!(names, [true, false], "silent, then reporting: {alerts:?}");
    let back_at = back_at.load(Ordering::SeqCst);
    assert!(
        alerts["quiet"][1].contains(r#""alert":"reporting""#)
            && alerts["quiet"][1].contains(&format!(r#""at_ms":{back_at}"#)),
        "{alerts:?}"
    );
    assert_eq!(
        alerts.len(),
        1,
        "no alert for the heater that reports: {alerts:?}"
    );
    // ON, the fail-safe OFF, ON again; OFF once for the hot heater.
    let (on, off) = (r#"{"control":0}"#, r#"{"control":1}"#);
    assert_eq!(commands["quiet"], [on, off, on], "{commands:?}");
    assert_eq!(commands[&chatty], [off], "{commands:?}");
}

#[test]
fn embedded_watchdog_keyed_exactly_once() {
    watchdog(
        Arc::new(EmbeddedLog::new()),
        Style::Keyed,
        Guarantee::ExactlyOnce,
    );
}

#[test]
fn embedded_watchdog_actors_at_least_once() {
    let actors = Style::Actors { workers: 2 };
    watchdog(Arc::new(EmbeddedLog::new()), actors, Guarantee::AtLeastOnce);
}

#[test]
fn kafka_watchdog_keyed_exactly_once() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    let log = Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"));
    watchdog(log, Style::Keyed, Guarantee::ExactlyOnce);
}

/// A backlog older than the maximum age is counted, not acted upon; a
/// fresh measurement is.
fn stale(log: Arc<dyn Log>) {
    let (sensor, control) = (unique("sensor"), unique("control"));
    for t in [&sensor, &control] {
        log.create_topic(&TopicSpec::new(t, 2), T).unwrap();
    }
    let producer = Producer::new(&*log).unwrap();
    let setting = Setting {
        temperature: 45.0,
        up_delta: 1.0,
        down_delta: 1.0,
    };
    for h in 0..10 {
        let heater = format!("h{h}");
        producer
            .send(&sensor, Some(heater.as_bytes()), &setting_json(&setting))
            .unwrap();
        producer
            .send(&sensor, Some(heater.as_bytes()), &measurement_json(40.0))
            .unwrap();
    }
    producer.flush(T).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let controller = Controller::new(&control).with_max_age(Duration::from_secs(1));
    let app = App::new(&unique("controller"), &[&sensor], controller.clone())
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let deadline = Instant::now() + T;
    while controller.stale() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(controller.stale(), 10, "every backlog measurement counted");
    producer
        .send(&sensor, Some(b"h3"), &measurement_json(50.0))
        .unwrap();
    producer.flush(T).unwrap();
    let commands = read(&log, &control, 1);
    app.stop().unwrap();
    assert_eq!(
        commands.len(),
        1,
        "only the fresh measurement acted upon: {commands:?}"
    );
    assert_eq!(commands["h3"], [r#"{"control":1}"#]);
}

#[test]
fn embedded_stale_measurements() {
    stale(Arc::new(EmbeddedLog::new()));
}

#[test]
fn kafka_stale_measurements() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    stale(Arc::new(
        KafkaLog::connect(brokers, vec![]).expect("test broker reachable"),
    ));
}

/// Statistics per window equal those computed here from the sensor topic
/// as written (timestamps included) and the rule: every window of every
/// heater once, the last ones closed by the idle partition's watermark.
fn stats(log: Arc<dyn Log>, style: Style) {
    use riffle::process::EventTime;
    use riffle_heater::controller::ControllerState;
    use riffle_heater::messages::{decode_sensor, Command, SensorMessage};
    const WINDOW: i64 = 400;
    let (sensor, control, stats) = (unique("sensor"), unique("control"), unique("stats"));
    for t in [&sensor, &control, &stats] {
        log.create_topic(&TopicSpec::new(t, 2), T).unwrap();
    }
    let controller =
        Controller::new(&control).with_stats(Duration::from_millis(WINDOW as u64), &stats);
    let app = App::new(&unique("controller"), &[&sensor], controller)
        .style(style)
        .guarantee(Guarantee::ExactlyOnce)
        .event_time(EventTime {
            idle_timeout: Some(Duration::from_millis(300)),
            ..EventTime::default()
        })
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let producer = Producer::new(&*log).unwrap();
    let heaters = ["h1", "h2", "h3", "h4"];
    let setting = Setting {
        temperature: 45.0,
        up_delta: 1.0,
        down_delta: 1.0,
    };
    for h in heaters {
        producer
            .send(&sensor, Some(h.as_bytes()), &setting_json(&setting))
            .unwrap();
    }
    for i in 0..30 {
        for (n, h) in heaters.iter().enumerate() {
            let celsius = 40.0 + ((i * 7 + n * 3) % 11) as f64;
            producer
                .send(&sensor, Some(h.as_bytes()), &measurement_json(celsius))
                .unwrap();
        }
        producer.flush(T).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    // What the controller saw, in each partition's order, with timestamps.
    // Per (heater, window start): measurements, sum, min, max, taken
    // while ON, commands.
    type Stats = (u64, f64, f64, f64, u64, u64);
    let mut expected: BTreeMap<(String, i64), Stats> = BTreeMap::new();
    let mut states: BTreeMap<String, ControllerState> = BTreeMap::new();
    for p in 0..2 {
        log.read_partition(&sensor, p, 0, false, T, &mut |r| {
            let (h, msg) = decode_sensor(r.key, r.value).unwrap();
            let state = states.entry(h.clone()).or_default();
            let on = state.last_command == Some(Command::On);
            let command = state.apply(msg);
            if let SensorMessage::Measurement(c) = msg {
                let start = r.timestamp.unwrap().div_euclid(WINDOW) * WINDOW;
                let e = expected
                    .entry((h, start))
                    .or_insert((0, 0.0, f64::MAX, f64::MIN, 0, 0));
                *e = (
                    e.0 + 1,
                    e.1 + c,
                    e.2.min(c),
                    e.3.max(c),
                    e.4 + on as u64,
                    e.5 + command.is_some() as u64,
                );
            }
            Ok(())
        })
        .unwrap();
    }
    let got = read(&log, &stats, expected.len());
    app.stop().unwrap();
    let mut seen = BTreeMap::new();
    for (h, records) in &got {
        for r in records {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap();
            let n = v["measurements"].as_u64().unwrap();
            assert_eq!(
                v["end"].as_i64().unwrap() - v["start"].as_i64().unwrap(),
                WINDOW
            );
            let on = (f("share_on") * n as f64).round() as u64;
            let window = (h.clone(), v["start"].as_i64().unwrap());
            let stats = (
                n,
                f("mean") * n as f64,
                f("min"),
                f("max"),
                on,
                v["commands"].as_u64().unwrap(),
            );
            assert!(
                seen.insert(window, stats).is_none(),
                "a window sent twice: {r}"
            );
        }
    }
    assert_eq!(seen.len(), expected.len(), "windows: {seen:?}");
    for (window, want) in &expected {
        let have = seen
            .get(window)
            .unwrap_or_else(|| panic!("no statistics for {window:?}"));
        assert!(
            (have.0, have.2, have.3, have.4, have.5) == (want.0, want.2, want.3, want.4, want.5)
                && (have.1 - want.1).abs() < 1e-6,
            "{window:?}: {have:?}, expected {want:?}"
        );
    }
}

#[test]
fn embedded_stats_keyed() {
    stats(Arc::new(EmbeddedLog::new()), Style::Keyed);
}

#[test]
fn embedded_stats_actors() {
    stats(Arc::new(EmbeddedLog::new()), Style::Actors { workers: 2 });
}

#[test]
fn kafka_stats_keyed() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    stats(
        Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable")),
        Style::Keyed,
    );
}
