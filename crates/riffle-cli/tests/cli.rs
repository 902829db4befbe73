//! The `riffle` binary as a user runs it: flags, messages, and the commands
//! against the embedded log and a real Kafka broker (`RIFFLE_TEST_BROKERS`,
//! set by scripts/test.sh).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn riffle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(args)
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RIFFLE_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("riffle runs")
}

fn kafka(args: &[&str]) -> Output {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    let mut all = vec!["--brokers", &brokers];
    all.extend_from_slice(args);
    riffle(&all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got {out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

#[test]
fn help_documents_every_command() {
    let out = riffle(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["topics", "produce", "consume", "demo", "--brokers", "-X"] {
        assert!(help.contains(cmd), "--help mentions {cmd}");
    }
    let out = riffle(&["demo", "hello", "--help"]);
    for flag in ["--consumers", "--partitions", "--duration"] {
        assert!(
            text(&out.stdout).contains(flag),
            "demo hello --help mentions {flag}"
        );
    }
}

#[test]
fn wrong_flags_give_one_line() {
    let err = one_line_error(&riffle(&["consume", "--topic", "t", "--consumers", "0"]));
    assert!(err.contains("--consumers"), "{err}");
    one_line_error(&riffle(&["produce", "--no-such-flag"]));
    one_line_error(&riffle(&["demo", "hello", "--duration", "soon"]));
}

#[test]
fn broker_commands_without_broker_say_so() {
    for args in [
        &["produce", "-t", "x", "v"][..],
        &["consume", "-t", "x"],
        &["topics", "list"],
    ] {
        let err = one_line_error(&riffle(args));
        assert!(
            err.contains("needs a Kafka broker") && err.contains("riffle demo"),
            "{err}"
        );
    }
}

#[test]
fn hello_demo_on_embedded_log_shows_assignments_and_records() {
    let out = riffle(&[
        "demo",
        "hello",
        "-n",
        "5",
        "-p",
        "10",
        "--interval",
        "50ms",
        "--duration",
        "2s",
        "--seed",
        "7",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for i in 0..5 {
        assert!(
            s.lines()
                .any(|l| l.starts_with(&format!("consumer-{i}"))
                    && l.contains("assigned  partitions [")),
            "consumer-{i} assignment in:\n{s}"
        );
    }
    let received = s.lines().filter(|l| l.contains(" received ")).count();
    assert!(received >= 10, "records flow: {received}\n{s}");
    let summary = s.lines().last().unwrap();
    assert!(summary.starts_with("sent "), "{summary}");
    // Every record sent was received.
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums[0], nums[2], "sent == received in: {summary}");
}

#[test]
fn more_consumers_than_partitions_leaves_one_idle() {
    let out = riffle(&[
        "demo",
        "hello",
        "-n",
        "11",
        "-p",
        "10",
        "--interval",
        "100ms",
        "--duration",
        "1s",
    ]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    let idle = s
        .lines()
        .filter(|l| l.contains("assigned  nothing"))
        .count();
    assert!(idle >= 1, "an idle consumer in:\n{s}");
}

#[test]
fn unreachable_broker_reported_within_seconds() {
    let start = Instant::now();
    let out = riffle(&["--brokers", "127.0.0.1:1", "topics", "list"]);
    let err = one_line_error(&out);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn topics_on_kafka() {
    let topic = format!("cli-topics-{}", std::process::id());
    let out = kafka(&["topics", "create", &topic, "--partitions", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = one_line_error(&kafka(&["topics", "create", &topic]));
    assert!(err.contains("already exists"), "{err}");
    let out = kafka(&[
        "topics",
        "create",
        &topic,
        "--partitions",
        "5",
        "--recreate",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let desc = text(&kafka(&["topics", "describe", &topic]).stdout);
    assert!(desc.contains("5 partitions"), "{desc}");
    let list = text(&kafka(&["topics", "list"]).stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&topic) && l.contains(" 5 ")),
        "{list}"
    );
    let out = kafka(&["topics", "delete", &topic]);
    assert!(out.status.success());
    let err = one_line_error(&kafka(&["topics", "describe", &topic]));
    assert!(err.contains("unknown topic"), "{err}");

    let err = one_line_error(&kafka(&["topics", "create", "bad name"]));
    assert!(err.contains("bad name"), "{err}");
    let err = one_line_error(&kafka(&["topics", "create", "fine", "--partitions", "0"]));
    assert!(err.contains("partition count"), "{err}");
}

#[test]
fn produce_and_consume_on_kafka() {
    let topic = format!("cli-pc-{}", std::process::id());
    assert!(kafka(&["topics", "create", &topic, "-p", "4"])
        .status
        .success());
    let out = kafka(&[
        "produce",
        "-t",
        &topic,
        "-k",
        "heater-1",
        r#"{"measurement": 45.2}"#,
        "not json",
        r#"{"n": 2}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kafka(&[
        "consume",
        "-t",
        &topic,
        "-g",
        &format!("{topic}-g"),
        "--max",
        "2",
        "--duration",
        "20s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains(r#"key=heater-1 value={"measurement": 45.2}"#),
        "{s}"
    );
    assert!(s.contains(r#"value={"n": 2}"#), "{s}");
    assert!(!s.contains("not json"), "{s}");
    assert!(
        text(&out.stderr).contains("value is not JSON"),
        "bad record reported: {}",
        text(&out.stderr)
    );
    // All three share the key, so one partition, offsets 0..3.
    assert!(s.contains("offset=0") && s.contains("offset=2"), "{s}");
    assert!(kafka(&["topics", "delete", &topic]).status.success());
}

#[test]
fn heater_demo_on_embedded_log_converges_and_summarises() {
    let out = riffle(&[
        "demo",
        "heater",
        "--heaters",
        "200",
        "--duration",
        "40m",
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    // Not a terminal: status lines, then the summary.
    assert!(
        s.lines()
            .any(|l| l.starts_with("t=") && l.contains("heaters in band")),
        "{s}"
    );
    assert!(s.contains("Settling  200/200 reached their band"), "{s}");
    assert!(s.contains("violations 0"), "{s}");
    let controller = s
        .lines()
        .find(|l| l.starts_with("Controller"))
        .expect("controller line");
    assert!(
        controller.contains("0 dead letters") && controller.contains("keyed style on embedded"),
        "{controller}"
    );
}

#[test]
fn heater_demo_actors_style_with_keyless_heaters() {
    let out = riffle(&[
        "demo",
        "heater",
        "--heaters",
        "50",
        "--duration",
        "20m",
        "--style",
        "actors",
        "--workers",
        "3",
        "--keyless",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("Settling  50/50 reached their band"), "{s}");
    assert!(s.contains("actors"), "{s}");
}

#[test]
fn heater_commands_need_a_broker() {
    for args in [&["heater", "controller"][..], &["heater", "simulate"]] {
        let err = one_line_error(&riffle(args));
        assert!(err.contains("needs a Kafka broker"), "{err}");
    }
}

#[test]
fn two_processes_of_one_group_share_the_partitions_on_kafka() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    let topic = format!("cli-procs-{}", std::process::id());
    assert!(kafka(&["topics", "create", &topic, "-p", "6"])
        .status
        .success());
    let group = format!("{topic}-g");
    // Two processes join the group; each logs its assignments on stderr.
    let spawn = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riffle"))
            .args([
                "--brokers",
                &brokers,
                "consume",
                "-t",
                &topic,
                "-g",
                &group,
                "--duration",
                "15s",
            ])
            .env("RIFFLE_LOG", "riffle=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let assigned = Arc::new(Mutex::new(String::new()));
        let (a, err) = (assigned.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("assigned") {
                    *a.lock().unwrap() = line;
                }
            }
        });
        (child, assigned)
    };
    let (a, a_assigned) = spawn();
    let (b, b_assigned) = spawn();
    let owns = |s: &Arc<Mutex<String>>| s.lock().unwrap().contains(&format!("{topic}/"));
    let start = Instant::now();
    while !(owns(&a_assigned) && owns(&b_assigned)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "both processes own partitions"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let values: Vec<String> = (0..60).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    let lines: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("k{i}\t{v}\n"))
        .collect();
    let mut produce = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args([
            "--brokers",
            &brokers,
            "produce",
            "-t",
            &topic,
            "--key-separator",
            "\t",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());

    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let partitions = |o: &Output| -> std::collections::BTreeSet<String> {
        text(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect()
    };
    let (pa, pb) = (partitions(&a), partitions(&b));
    assert!(
        !pa.is_empty() && !pb.is_empty(),
        "both processes received records: {pa:?} {pb:?}"
    );
    assert!(
        pa.is_disjoint(&pb),
        "no partition read by both: {pa:?} {pb:?}"
    );
    let mut all: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|o| {
            text(&o.stdout)
                .lines()
                .map(|l| l.rsplit("value=").next().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(all, expected, "every record once, across the two processes");
    assert!(kafka(&["topics", "delete", &topic]).status.success());
}
