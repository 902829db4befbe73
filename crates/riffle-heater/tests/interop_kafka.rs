//! Riffle's controller on a real Kafka broker, talking to another Kafka
//! client (kcat, librdkafka's command-line tool) in the book's exact
//! formats: kcat writes sensor records, Riffle's controller answers, kcat
//! reads the commands and the dead letters.
//!
//! Records compressed by kcat with each codec Kafka knows are read, and the
//! controller's own outputs compressed with zstd are read back by kcat.
//!
//! Needs `RIFFLE_TEST_BROKERS` and kcat (scripts/test.sh provides both).

use std::io::Write;
use std::process::{Command as Cmd, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, TopicSpec};
use riffle::process::{App, Style};
use riffle_heater::controller::Controller;

fn brokers() -> String {
    std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh")
}

/// Keyed lines are `key|value`; key-less ones all go to partition 0, since
/// a heater's key-less records are ordered only within one partition.
fn kcat_produce(topic: &str, keyed: bool, lines: &[&str]) {
    kcat_produce_with(topic, keyed, &[], lines)
}

/// [`kcat_produce`] with extra kcat arguments, such as `-z zstd`.
fn kcat_produce_with(topic: &str, keyed: bool, extra: &[&str], lines: &[&str]) {
    let b = brokers();
    let mut args = vec![
        "-P",
        "-b",
        &b,
        "-t",
        topic,
        "-X",
        "partitioner=murmur2_random",
    ];
    args.extend(extra);
    if keyed {
        args.extend(["-K", "|"]);
    } else {
        args.extend(["-p", "0"]);
    }
    let mut child = Cmd::new("kcat")
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat)");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Every record of `topic` as `key value` lines, read by kcat until `n` are there.
fn kcat_consume(topic: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let out = Cmd::new("kcat")
            .args([
                "-C",
                "-b",
                &brokers(),
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k %s\n",
            ])
            .output()
            .expect("kcat runs");
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= n || start.elapsed() > Duration::from_secs(30) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn interop(style: Style) {
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(brokers(), vec![]).unwrap());
    let id = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (sensor, control, dlq) = (
        format!("sensor-{id}"),
        format!("control-{id}"),
        format!("dlq-{id}"),
    );
    for t in [&sensor, &control] {
        log.create_topic(&TopicSpec::new(t, 3), Duration::from_secs(30))
            .unwrap();
    }
    kcat_produce(
        &sensor,
        true,
        &[
            r#"1234|{"measurement": 45.0}"#,
            r#"1234|{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}"#,
            r#"1234|{"measurement": 45.9}"#,
            r#"1234|{"measurement": 46.2}"#,
            r#"1234|{"measurement": 46.5}"#,
            r#"1234|{"measurement": 43.9}"#,
            r#"1234|not json at all"#,
            r#"1234|{"temperature": 45.0, "up_delta": -1.0, "down_delta": 1.0}"#,
        ],
    );
    kcat_produce(
        &sensor,
        false,
        &[
            r#"{"id": "5678", "temperature": 20.0, "up_delta": 0.5, "down_delta": 0.5}"#,
            r#"{"id": "5678", "measurement": 19.0}"#,
            r#"{"measurement": 19.0}"#,
        ],
    );
    let mut app = App::new(&format!("ctl-{id}"), &[&sensor], Controller::new(&control))
        .style(style)
        .dead_letter(&dlq);
    if style == Style::Keyed {
        // Key-less records carry their heater id in the body: route them by
        // it first so each heater's state sits in one partition.
        app = app.repartition(&format!("rekey-{id}"));
    }
    let app = app.start(log.clone()).unwrap();
    let mut commands = kcat_consume(&control, 3);
    commands.sort();
    assert_eq!(
        commands,
        [
            r#"1234 {"control":0}"#,
            r#"1234 {"control":1}"#,
            r#"5678 {"control":0}"#
        ]
    );
    let dead = kcat_consume(&dlq, 3);
    app.stop().unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(
        dead.iter()
            .any(|l| l.contains("not a JSON object") && l.contains("not json at all")),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|l| l.contains("must not be negative")),
        "{dead:?}"
    );
    assert!(dead.iter().any(|l| l.contains("no key and no")), "{dead:?}");
    for t in [&sensor, &control, &dlq] {
        // The repartition topic, if any, is left to the broker's cleanup.
        log.delete_topic(t, Duration::from_secs(30)).unwrap();
    }
}

#[test]
fn kcat_records_drive_the_keyed_controller() {
    interop(Style::Keyed);
}

#[test]
fn kcat_records_drive_the_actors_controller() {
    interop(Style::Actors { workers: 4 });
}

/// Each codec in its own kcat run, one heater per codec: a codec librdkafka
/// was built without would leave its heater without a command. The
/// controller compresses its own commands with zstd, which kcat decodes.
#[test]
fn records_compressed_with_every_codec_are_processed() {
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let log: Arc<dyn Log> = Arc::new(
        KafkaLog::connect(brokers(), vec![("compression.type".into(), "zstd".into())]).unwrap(),
    );
    let id = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (sensor, control) = (format!("sensor-z-{id}"), format!("control-z-{id}"));
    for t in [&sensor, &control] {
        log.create_topic(&TopicSpec::new(t, 2), Duration::from_secs(30))
            .unwrap();
    }
    for codec in codecs {
        let setting =
            format!(r#"{codec}|{{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}}"#);
        let hot = format!(r#"{codec}|{{"measurement": 47.0}}"#);
        let cold = format!(r#"{codec}|{{"measurement": 43.0}}"#);
        kcat_produce_with(&sensor, true, &["-z", codec], &[&setting, &hot, &cold]);
    }
    let app = App::new(
        &format!("ctl-z-{id}"),
        &[&sensor],
        Controller::new(&control),
    )
    .start(log.clone())
    .unwrap();
    let mut commands = kcat_consume(&control, 2 * codecs.len());
    app.stop().unwrap();
    commands.sort();
    let mut expected: Vec<String> = codecs
        .iter()
        .flat_map(|c| {
            [
                format!(r#"{c} {{"control":0}}"#),
                format!(r#"{c} {{"control":1}}"#),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(commands, expected);
    for t in [&sensor, &control] {
        log.delete_topic(t, Duration::from_secs(30)).unwrap();
    }
}
