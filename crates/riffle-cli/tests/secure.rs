//! The `riffle` binary on secured listeners of the test broker, configured
//! only through a client properties file (`-F`), as users keep their
//! credentials: SASL_SSL with SCRAM-SHA-512 (`RIFFLE_TEST_SASL_SSL`) and TLS
//! with client certificates (`RIFFLE_TEST_SSL`), with the certificates and
//! ready-made `.properties` files in `RIFFLE_TEST_TLS_DIR` (all set by
//! scripts/test.sh from scripts/kafka.sh; the tests fail when they are
//! missing). Also: the failures users meet first (a wrong password, an
//! untrusted server certificate, no client certificate), each one line
//! naming its cause within seconds, and the README's example as written.

#[allow(dead_code)]
#[path = "crash/model.rs"]
mod model;
// The model names the crash tests' guarantee type; the rest of that file
// serves the crash tests only.
#[allow(dead_code)]
#[path = "crash/workers.rs"]
mod workers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::kafka::{KafkaLog, KafkaSettings};
use riffle::log::Log;
use riffle::Error;

use workers::Guarantee;

/// One heater run at a time: each runs a controller and a simulator, and
/// the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, or scripts/kafka.sh start and export what scripts/kafka.sh env prints")
    })
}

/// The two secured listeners, each with its client settings file.
#[derive(Clone, Copy, Debug)]
enum Listener {
    /// SASL_SSL, SCRAM-SHA-512.
    SaslSsl,
    /// SSL with a client certificate.
    Mtls,
}

impl Listener {
    fn address(self) -> String {
        match self {
            Listener::SaslSsl => var("RIFFLE_TEST_SASL_SSL"),
            Listener::Mtls => var("RIFFLE_TEST_SSL"),
        }
    }

    /// The ready-made properties file for this listener.
    fn config(self) -> PathBuf {
        let file = match self {
            Listener::SaslSsl => "sasl-ssl.properties",
            Listener::Mtls => "ssl.properties",
        };
        let path = tls_dir().join(file);
        let settings = KafkaSettings::from_file(&path).expect("client config readable");
        assert_eq!(
            settings.bootstrap_servers(),
            Some(self.address().as_str()),
            "{} names the listener",
            path.display()
        );
        path
    }

    fn name(self) -> &'static str {
        match self {
            Listener::SaslSsl => "sasl",
            Listener::Mtls => "mtls",
        }
    }

    /// The library's view of the cluster through this listener.
    fn log(self) -> Arc<dyn Log> {
        let settings = KafkaSettings::from_file(self.config()).unwrap();
        Arc::new(KafkaLog::connect_settings(settings).expect("secured listener reachable"))
    }
}

fn tls_dir() -> PathBuf {
    PathBuf::from(var("RIFFLE_TEST_TLS_DIR"))
}

/// A fresh, empty directory.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "secure-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `riffle args` with nothing from the environment that picks a log: only
/// what `args` say reaches the broker.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riffle"));
    c.args(args)
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RIFFLE_CLIENT_CONFIG")
        .env_remove("RIFFLE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("RIFFLE_INSTANCE")
        .env("RIFFLE_DATA_DIR", temp_dir("data"));
    c
}

fn riffle(args: &[&str]) -> Output {
    command(args).output().expect("riffle runs")
}

/// `riffle -F <listener's file> args`, which must succeed; its stdout.
fn ok(listener: Listener, args: &[&str]) -> String {
    let config = listener.config();
    let mut all = vec!["-F", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = riffle(&all);
    assert!(
        out.status.success(),
        "riffle {all:?}: {}\n{}\n{}",
        out.status,
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 1_000_000
    )
}

/// Topics, produce, consume and lag through `listener`.
fn plain_commands_over(listener: Listener) {
    let topic = unique(&format!("secure-{}", listener.name()));
    ok(listener, &["topics", "create", &topic, "--partitions", "3"]);
    let list = ok(listener, &["topics", "list"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(topic.as_str())),
        "{list}"
    );
    let desc = ok(listener, &["topics", "describe", &topic]);
    assert!(desc.contains("3 partitions"), "{desc}");

    ok(
        listener,
        &[
            "produce",
            "-t",
            &topic,
            "-k",
            "heater-1",
            r#"{"measurement": 45.2}"#,
            r#"{"measurement": 46.0}"#,
            r#"{"measurement": 47.5}"#,
        ],
    );
    let group = format!("{topic}-g");
    let printed = ok(
        listener,
        &[
            "consume",
            "-t",
            &topic,
            "-g",
            &group,
            "--max",
            "3",
            "--duration",
            "30s",
        ],
    );
    for m in ["45.2", "46.0", "47.5"] {
        let record = format!(r#"key=heater-1 value={{"measurement": {m}}}"#);
        assert!(printed.contains(&record), "{record} in {printed}");
    }
    // The group committed the three; two more arrive.
    ok(
        listener,
        &["produce", "-t", &topic, "-k", "heater-1", "{}", "{}"],
    );
    let lag = ok(listener, &["lag", "--group", &group, "--topic", &topic]);
    let total: Vec<&str> = lag
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .expect("a total")
        .split_whitespace()
        .collect();
    assert_eq!(total, ["TOTAL", "2"], "{lag}");
    let row = lag
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("3"))
        .expect("the key's partition at offset 3");
    assert_eq!(row.split_whitespace().nth(3), Some("5"), "{lag}");

    ok(listener, &["topics", "delete", &topic]);
    let list = ok(listener, &["topics", "list"]);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(topic.as_str())),
        "{list}"
    );
}

#[test]
fn topics_produce_consume_and_lag_over_sasl_ssl_scram() {
    plain_commands_over(Listener::SaslSsl);
}

#[test]
fn topics_produce_consume_and_lag_over_mutual_tls() {
    plain_commands_over(Listener::Mtls);
}

/// The client config file can be named by the environment instead of -F;
/// --brokers replaces its bootstrap.servers.
#[test]
fn the_config_file_from_the_environment_and_brokers_overriding_it() {
    let config = Listener::SaslSsl.config();
    let out = command(&["topics", "list"])
        .env("RIFFLE_CLIENT_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("TOPIC"), "{out:?}");

    // The file's address is dead; -b names the listener.
    let dir = temp_dir("override");
    let moved = dir.join("moved.properties");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &moved,
        original.replace(&Listener::SaslSsl.address(), "127.0.0.1:1"),
    )
    .unwrap();
    let address = Listener::SaslSsl.address();
    let out = riffle(&[
        "-F",
        moved.to_str().unwrap(),
        "-b",
        &address,
        "topics",
        "list",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = riffle(&["-F", moved.to_str().unwrap(), "topics", "list"]);
    let err = one_line_failure(&out, Duration::from_secs(10), Instant::now());
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");

    // A malformed file is refused before anything is contacted.
    let bad = dir.join("bad.properties");
    std::fs::write(&bad, "security.protocol=SASL_SSL\nsasl.password secret\n").unwrap();
    let err = one_line_failure(
        &riffle(&["-F", bad.to_str().unwrap(), "topics", "list"]),
        Duration::from_secs(10),
        Instant::now(),
    );
    assert!(
        err.contains(&format!("{}:2: expected key=value", bad.display())),
        "{err}"
    );
    let err = one_line_failure(
        &riffle(&["-F", "/nonexistent/client.properties", "topics", "list"]),
        Duration::from_secs(10),
        Instant::now(),
    );
    assert!(
        err.contains("cannot read client config /nonexistent/client.properties"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts a failure with exactly one line on stderr, within `limit` of
/// `start`; returns the line.
fn one_line_failure(out: &Output, limit: Duration, start: Instant) -> String {
    let elapsed = start.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a failure, got {out:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(elapsed < limit, "took {elapsed:?}: {err}");
    err.trim_end().to_owned()
}

/// Runs `riffle -F config extra.. args` expecting a one-line failure within
/// 10 s, for each of several commands; returns their lines.
fn refused(config: &Path, extra: &[&str]) -> Vec<String> {
    let topic = unique("secure-refused");
    let commands: [&[&str]; 5] = [
        &["topics", "list"],
        &["produce", "-t", &topic, "{}"],
        &["consume", "-t", &topic, "-g", "g", "--max", "1"],
        &["lag", "-g", "g", "-t", &topic],
        &["heater", "simulate", "--heaters", "1", "--duration", "1m"],
    ];
    commands
        .iter()
        .map(|args| {
            let mut all = vec!["-F", config.to_str().unwrap()];
            all.extend_from_slice(extra);
            all.extend_from_slice(args);
            let start = Instant::now();
            // A hang would be caught here, not by the test harness.
            let mut child = command(&all)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = start + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("riffle {all:?} still running after 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = child.wait_with_output().unwrap();
            let line = one_line_failure(&out, Duration::from_secs(10), start);
            assert!(line.starts_with("riffle: "), "{all:?}: {line}");
            line
        })
        .collect()
}

#[test]
fn a_wrong_password_is_one_line_naming_the_cause() {
    let address = Listener::SaslSsl.address();
    // -X overrides the file's password.
    for line in refused(&Listener::SaslSsl.config(), &["-X", "sasl.password=wrong"]) {
        assert!(
            line.contains(&format!("authentication failed at {address}"))
                && line.contains("SCRAM-SHA-512")
                && line.contains("invalid credentials"),
            "{line}"
        );
    }
}

#[test]
fn an_untrusted_server_certificate_is_one_line_naming_the_cause() {
    let other = tls_dir().join("other-ca.pem");
    let other = format!("ssl.ca.location={}", other.display());
    for listener in [Listener::SaslSsl, Listener::Mtls] {
        let address = listener.address();
        for line in refused(&listener.config(), &["-X", &other]) {
            assert!(
                line.contains(&format!("TLS handshake failed at {address}"))
                    && line.contains("certificate verify failed"),
                "{line}"
            );
        }
    }
}

#[test]
fn a_missing_client_certificate_is_one_line_naming_the_cause() {
    let dir = temp_dir("nocert");
    let config = dir.join("client.properties");
    let full = std::fs::read_to_string(Listener::Mtls.config()).unwrap();
    let without: String = full
        .lines()
        .filter(|l| {
            !l.starts_with("ssl.certificate.location") && !l.starts_with("ssl.key.location")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, full);
    std::fs::write(&config, without).unwrap();
    let address = Listener::Mtls.address();
    for line in refused(&config, &[]) {
        assert!(
            line.contains(&format!("TLS handshake failed at {address}"))
                && line.contains("client certificate"),
            "{line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The library reports the cause to requests that did not check the
/// connection first (`KafkaLog::from_settings`, no `connect`).
#[test]
fn requests_without_a_connection_check_name_the_cause_too() {
    let mut settings = KafkaSettings::from_file(Listener::SaslSsl.config()).unwrap();
    settings.set("sasl.password", "wrong");
    let log = KafkaLog::from_settings(settings).unwrap();
    let start = Instant::now();
    let err = log.list_topics(Duration::from_secs(3)).unwrap_err();
    assert!(
        matches!(&err, Error::Authentication { broker, .. } if *broker == Listener::SaslSsl.address()),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    // A producer's flush and a consumer's poll name it too.
    let producer = log.producer(None).unwrap();
    producer
        .send(riffle::log::OutRecord::new(
            "secure-refused",
            Some(b"k"),
            b"{}",
        ))
        .unwrap();
    let err = producer.flush(Duration::from_secs(3)).unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    let config = riffle::log::ConsumerConfig::new("secure-refused", &["secure-refused"]);
    let mut consumer = log.consumer(&config).unwrap();
    struct Nothing;
    impl riffle::log::PollVisitor for Nothing {
        fn record(&mut self, _: riffle::log::RecordRef<'_>) -> bool {
            panic!("no record without credentials")
        }
        fn event(&mut self, _: riffle::log::GroupEvent) {}
    }
    let start = Instant::now();
    let err = loop {
        match consumer.poll(Duration::from_millis(200), 100, &mut Nothing) {
            Err(e) => break e,
            Ok(_) => assert!(start.elapsed() < Duration::from_secs(10), "no error"),
        }
    };
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");

    let mut settings = KafkaSettings::from_file(Listener::Mtls.config()).unwrap();
    settings.remove("ssl.certificate.location");
    settings.remove("ssl.key.location");
    let log = KafkaLog::from_settings(settings).unwrap();
    let err = log.list_topics(Duration::from_secs(3)).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
}

/// `riffle connect` with a Kafka end: a file into a topic over `listener`,
/// then read back with `consume`.
fn connect_into_kafka_over(listener: Listener) {
    let dir = temp_dir("connect");
    let topic = unique(&format!("secure-connect-{}", listener.name()));
    ok(listener, &["topics", "create", &topic, "--partitions", "2"]);
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"h1\", \"measurement\": 45.5}\n\
         {\"id\": \"h2\", \"measurement\": -1}\n\
         {\"id\": \"h2\", \"measurement\": 12.0}\n",
    )
    .unwrap();
    let source = format!("file:path={}", input.display());
    let sink = format!("kafka:topic={topic}");
    let out = {
        let config = listener.config();
        riffle(&[
            "-F",
            config.to_str().unwrap(),
            "connect",
            "--source",
            &source,
            "--sink",
            &sink,
            "--filter",
            "measurement>0",
            "--key-from",
            "field:id",
        ])
    };
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("3 in, 2 out"), "{err}");
    let printed = ok(
        listener,
        &[
            "consume",
            "-t",
            &topic,
            "-g",
            &format!("{topic}-g"),
            "--max",
            "2",
            "--duration",
            "30s",
        ],
    );
    assert!(
        printed.contains("key=h1") && printed.contains("45.5"),
        "{printed}"
    );
    assert!(
        printed.contains("key=h2") && printed.contains("12.0"),
        "{printed}"
    );
    assert!(!printed.contains("-1"), "{printed}");
    ok(listener, &["topics", "delete", &topic]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connect_writes_a_file_to_kafka_over_sasl_ssl() {
    connect_into_kafka_over(Listener::SaslSsl);
}

#[test]
fn connect_writes_a_file_to_kafka_over_mutual_tls() {
    connect_into_kafka_over(Listener::Mtls);
}

/// The heater controller and simulator over `listener`: the simulator's
/// closed loop runs to its end, the controller catches up (its group's lag,
/// by `riffle lag`, reaches 0) and stops on SIGTERM; its commands then
/// equal the reference model's, heater by heater (exactly-once: the same
/// commands; at-least-once: none lost, in order).
fn heater_loop_over(listener: Listener, style: &str, guarantee: Guarantee) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PARTITIONS: i32 = 4;
    let prefix = unique(&format!("secure-heater-{}-{style}", listener.name()));
    let (sensor, control, dlq) = (
        format!("{prefix}-sensor"),
        format!("{prefix}-control"),
        format!("{prefix}-dlq"),
    );
    let dir = temp_dir("heater");
    let config = listener.config();
    let config = config.to_str().unwrap();
    let partitions = PARTITIONS.to_string();
    let topics = [
        "--sensor-topic",
        &sensor,
        "--control-topic",
        &control,
        "-p",
        &partitions,
    ];
    // Created first: the controller and the simulator would otherwise both
    // create them at once.
    for t in [&sensor, &control, &dlq] {
        ok(
            listener,
            &["topics", "create", t, "--partitions", &partitions],
        );
    }
    let mut controller_args = vec![
        "-F",
        config,
        "heater",
        "controller",
        "--style",
        style,
        "--guarantee",
        guarantee.flag(),
        "--group",
        &prefix,
        "--instance",
        "only",
        "--dead-letter",
        &dlq,
        "--status-every",
        "0s",
    ];
    controller_args.extend_from_slice(&topics);
    if style == "actors" {
        controller_args.extend_from_slice(&["--workers", "2"]);
    }
    let log_path = dir.join("controller.log");
    let mut controller = command(&controller_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("controller starts");
    let controller_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut sim_args = vec![
        "-F",
        config,
        "heater",
        "simulate",
        "--heaters",
        "300",
        "--speedup",
        "60",
        "--duration",
        "8m",
        "--seed",
        "11",
    ];
    sim_args.extend_from_slice(&topics);
    let sim = riffle(&sim_args);
    assert!(
        sim.status.success(),
        "simulator: {}\ncontroller: {}",
        text(&sim.stderr),
        controller_log()
    );
    assert!(
        controller.try_wait().unwrap().is_none(),
        "controller exited: {}",
        controller_log()
    );

    // Wait for the controller to commit the whole input.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = riffle(&["-F", config, "lag", "--group", &prefix, "--topic", &sensor]);
        let table = text(&out.stdout);
        let total = table
            .lines()
            .find(|l| l.starts_with("TOTAL"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned());
        if out.status.success() && total.as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag stays at {total:?}: {table}{}\ncontroller: {}",
            text(&out.stderr),
            controller_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = Command::new("kill")
        .args(["-TERM", &controller.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = controller.wait().unwrap();
    assert!(status.success(), "controller: {}", controller_log());

    let log = listener.log();
    let input = model::read_topic(&log, &sensor, false);
    let output = model::read_topic(&log, &control, matches!(guarantee, Guarantee::ExactlyOnce));
    let reference = model::reference(&input, None);
    let (actual, bad) = model::actual(&output);
    assert!(bad.is_empty(), "not commands: {bad:?}");
    assert_eq!(reference.undecodable, 0);
    assert_eq!(reference.heaters, 300, "every heater sent something");
    let cmp = model::compare(guarantee, &reference.expected, &actual, PARTITIONS);
    assert!(
        cmp.expected >= 300,
        "a run long enough for commands: {} expected",
        cmp.expected
    );
    assert!(
        cmp.mismatches.is_empty(),
        "{} commands expected, {} sent\n{}",
        cmp.expected,
        cmp.actual,
        cmp.report(10)
    );
    if matches!(guarantee, Guarantee::ExactlyOnce) {
        assert_eq!(cmp.actual, cmp.expected);
    }
    eprintln!(
        "{listener:?} {style} {guarantee:?}: {} input records, {} heaters, {} commands as expected, {} duplicates",
        input.len(),
        reference.heaters,
        cmp.expected,
        cmp.duplicates
    );

    for t in [&sensor, &control, &dlq, &format!("{prefix}-changelog")] {
        let _ = riffle(&["-F", config, "topics", "delete", t]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn heater_controller_keyed_over_sasl_ssl() {
    heater_loop_over(Listener::SaslSsl, "keyed", Guarantee::AtLeastOnce);
}

#[test]
fn heater_controller_actors_exactly_once_over_sasl_ssl() {
    heater_loop_over(Listener::SaslSsl, "actors", Guarantee::ExactlyOnce);
}

#[test]
fn heater_controller_actors_over_mutual_tls() {
    heater_loop_over(Listener::Mtls, "actors", Guarantee::AtLeastOnce);
}

#[test]
fn heater_controller_keyed_exactly_once_over_mutual_tls() {
    heater_loop_over(Listener::Mtls, "keyed", Guarantee::ExactlyOnce);
}

/// The README's "Connecting to secured clusters" examples, run as written:
/// each properties block naming `broker.example.com` is written to the file
/// its first line names, with only the address and the certificate paths
/// replaced by the test broker's, and the section's `riffle -F <that file>`
/// command is run on it.
#[test]
fn secure_readme_example_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md readable");
    let start = readme
        .find("### Connecting to secured clusters")
        .expect("the README has the section");
    let end = readme[start + 4..]
        .find("\n### ")
        .map_or(readme.len(), |e| start + 4 + e);
    let section = &readme[start..end];

    // The ```properties blocks that use the example broker.
    let blocks: Vec<&str> = section
        .split("```properties\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("broker.example.com"))
        .collect();
    assert_eq!(blocks.len(), 2, "SASL_SSL and mTLS examples in:\n{section}");

    let tls = format!("{}/", tls_dir().display());
    let dir = temp_dir("readme");
    let topic = unique("secure-readme");
    ok(Listener::SaslSsl, &["topics", "create", &topic]);
    for block in blocks {
        let name = block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .expect("a block starts with its file name")
            .trim();
        let written = block
            .replace("broker.example.com:9093", &Listener::SaslSsl.address())
            .replace("broker.example.com:9094", &Listener::Mtls.address())
            .replace("/etc/riffle/", &tls);
        assert!(!written.contains("example.com"), "{written}");
        std::fs::write(dir.join(name), &written).unwrap();

        let prefix = format!("riffle -F {name} ");
        let line = section
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("a command using {name} in:\n{section}"));
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = command(&args)
            .current_dir(&dir)
            .output()
            .expect("riffle runs");
        assert!(
            out.status.success(),
            "{line} with\n{written}\n{}",
            text(&out.stderr)
        );
        let listed = text(&out.stdout);
        assert!(
            listed.starts_with("TOPIC")
                && listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(topic.as_str())),
            "{line}: {listed}"
        );
    }
    ok(Listener::SaslSsl, &["topics", "delete", &topic]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The heater demo on a broker reached only through the config file.
#[test]
fn heater_demo_runs_over_mutual_tls() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = unique("secure-demo");
    let (sensor, control, dlq) = (
        format!("{prefix}-sensor"),
        format!("{prefix}-control"),
        format!("{prefix}-dlq"),
    );
    let out = ok(
        Listener::Mtls,
        &[
            "--in-memory",
            "demo",
            "heater",
            "--heaters",
            "50",
            "--duration",
            "6m",
            "--sensor-topic",
            &sensor,
            "--control-topic",
            &control,
            "--dead-letter",
            &dlq,
            "-p",
            "2",
            "--fresh",
        ],
    );
    let address = Listener::Mtls.address();
    assert!(
        out.starts_with(&format!("heater demo on kafka {address}")),
        "{out}"
    );
    assert!(out.contains("Settling  50/50 reached their band"), "{out}");
    let controller = out
        .lines()
        .find(|l| l.starts_with("Controller"))
        .expect("controller line");
    assert!(
        controller.contains("0 dead letters")
            && controller.contains(&format!("keyed style on kafka {address}")),
        "{controller}"
    );
    for t in [&sensor, &control, &dlq] {
        ok(Listener::Mtls, &["topics", "delete", t]);
    }
}

#[test]
fn help_names_the_client_config_file_and_its_variable() {
    let out = riffle(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("-F, --command-config <FILE>") && help.contains("RIFFLE_CLIENT_CONFIG"),
        "{help}"
    );
}
