//! The `riffle` binary as a user runs it: flags, messages, and the commands
//! against the embedded log and a real Kafka broker (`RIFFLE_TEST_BROKERS`,
//! set by scripts/test.sh).
//!
//! Every run gets a data directory of its own under the build's temporary
//! directory, never the user's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh, empty directory path (not created).
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `riffle args` with a clean environment and `data` as its data directory.
fn command(data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riffle"));
    c.args(args)
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RIFFLE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("RIFFLE_INSTANCE")
        .env("RIFFLE_DATA_DIR", data);
    c
}

/// Runs riffle on a data directory of its own, removed afterwards.
fn riffle(args: &[&str]) -> Output {
    let dir = temp_dir("run");
    let out = riffle_in(&dir, args);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Runs riffle on the data directory `data`, which is kept.
fn riffle_in(data: &Path, args: &[&str]) -> Output {
    command(data, args).output().expect("riffle runs")
}

/// Starts riffle in the background; returns once it has printed its first
/// line on stdout (by then it has opened its log), with the rest of stdout.
fn spawn_in(
    data: &Path,
    args: &[&str],
) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = command(data, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("riffle starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert!(!first.is_empty());
    (child, lines)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The numbers in a line, in order.
fn numbers(line: &str) -> Vec<i64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Records in a topic and what `group` has committed, summed over partitions,
/// from `riffle topics describe`.
fn records_and_committed(data: &Path, topic: &str, group: &str) -> (i64, i64) {
    let out = riffle_in(data, &["topics", "describe", topic, "--group", group]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let mut lines = s.lines();
    let records = numbers(lines.next().unwrap())[1];
    let committed = lines
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse::<i64>().ok())
        .sum();
    (records, committed)
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
    for cmd in [
        "topics",
        "produce",
        "consume",
        "groups",
        "demo",
        "--brokers",
        "-X",
    ] {
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
fn stored_log_commands_refuse_in_memory_without_broker() {
    for args in [
        &["--in-memory", "produce", "-t", "x", "v"][..],
        &["consume", "-t", "x", "--in-memory"],
        &["topics", "list", "--in-memory"],
    ] {
        let err = one_line_error(&riffle(args));
        assert!(
            err.contains("--in-memory") && err.contains("--brokers"),
            "{err}"
        );
    }
}

#[test]
fn topics_produce_consume_on_the_embedded_data_dir() {
    let data = temp_dir("embedded-pc");
    let run = |args: &[&str]| {
        let out = riffle_in(&data, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(&["topics", "create", "readings", "-p", "3"]);
    let err = one_line_error(&riffle_in(&data, &["topics", "create", "readings"]));
    assert!(err.contains("already exists"), "{err}");
    run(&[
        "produce",
        "-t",
        "readings",
        "-k",
        "heater-1",
        r#"{"measurement": 45.2}"#,
        r#"{"n": 2}"#,
    ]);
    let list = run(&["topics", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("readings") && numbers(l) == [3, 2]),
        "{list}"
    );
    let s = run(&[
        "consume",
        "-t",
        "readings",
        "-g",
        "g",
        "--max",
        "2",
        "--duration",
        "10s",
    ]);
    assert!(
        s.contains(r#"key=heater-1 value={"measurement": 45.2}"#) && s.contains("offset=1"),
        "{s}"
    );
    assert_eq!(records_and_committed(&data, "readings", "g"), (2, 2));
    // A later run of the group starts after what it committed.
    run(&["produce", "-t", "readings", "-k", "heater-1", r#"{"n": 3}"#]);
    let s = run(&[
        "consume",
        "-t",
        "readings",
        "-g",
        "g",
        "--max",
        "1",
        "--duration",
        "10s",
    ]);
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(s.contains(r#"offset=2 key=heater-1 value={"n": 3}"#), "{s}");
    run(&["topics", "delete", "readings"]);
    let err = one_line_error(&riffle_in(&data, &["topics", "describe", "readings"]));
    assert!(err.contains("unknown topic"), "{err}");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn data_dir_defaults_to_xdg_data_home_then_home() {
    let home = temp_dir("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |xdg: Option<&Path>| {
        let mut c = command(&home, &["topics", "create", "t"]);
        c.env_remove("RIFFLE_DATA_DIR").env("HOME", &home);
        match xdg {
            Some(x) => c.env("XDG_DATA_HOME", x),
            None => c.env_remove("XDG_DATA_HOME"),
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    run(None);
    assert!(home.join(".local/share/riffle/topics/t").is_dir());
    run(Some(&home.join("xdg")));
    assert!(home.join("xdg/riffle/topics/t").is_dir());
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn in_memory_leaves_nothing_behind() {
    let (home, data) = (temp_dir("home"), temp_dir("unused"));
    std::fs::create_dir_all(&home).unwrap();
    let out = command(
        &data,
        &[
            "--in-memory",
            "demo",
            "hello",
            "--interval",
            "50ms",
            "--duration",
            "1s",
        ],
    )
    .env("HOME", &home)
    .env("XDG_DATA_HOME", home.join("xdg"))
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(" received "));
    assert!(!data.exists(), "nothing in RIFFLE_DATA_DIR");
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "nothing in HOME"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_data_dir_in_use_is_refused_in_one_line_and_sigterm_releases_it() {
    let data = temp_dir("locked");
    let (child, mut lines) = spawn_in(
        &data,
        &[
            "demo",
            "hello",
            "-n",
            "2",
            "-p",
            "2",
            "--interval",
            "100ms",
            "--duration",
            "60s",
        ],
    );
    // Once a record went round, the group has something to commit.
    lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains(" received "))
        .expect("a record received");
    let err = one_line_error(&riffle_in(&data, &["topics", "list"]));
    assert!(
        err.contains("is in use by another process")
            && err.contains("--in-memory")
            && err.contains("--data-dir"),
        "{err}"
    );
    // Stopped by a supervisor: it finishes, commits and releases the directory.
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("stopping on SIGTERM"),
        "{}",
        text(&out.stderr)
    );
    let (records, committed) = records_and_committed(&data, "hello", "hello-group");
    assert!(records > 0 && committed > 0, "{records} {committed}");
    let out = riffle_in(&data, &["topics", "list"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn sigterm_stops_consume_after_committing_what_it_printed() {
    let data = temp_dir("sigterm");
    assert!(riffle_in(&data, &["topics", "create", "t"])
        .status
        .success());
    let values = ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"];
    let mut args = vec!["produce", "-t", "t"];
    args.extend(values);
    assert!(riffle_in(&data, &args).status.success());
    let (child, mut lines) = spawn_in(&data, &["consume", "-t", "t", "-g", "g"]);
    // The first line was offset 0; wait for the other two.
    for _ in 1..values.len() {
        lines.next().unwrap().unwrap();
    }
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("consumed 3 records"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(records_and_committed(&data, "t", "g"), (3, 3));
    std::fs::remove_dir_all(&data).unwrap();
}

/// `--fresh` starts the controller's state over with its topics: a run
/// on fewer partitions than the last is no shrinking of the state's.
#[test]
fn heater_demo_fresh_starts_the_controllers_state_over() {
    let data = temp_dir("heater-fresh");
    for args in [&["-p", "4"][..], &["-p", "2", "--fresh"][..]] {
        let mut all = vec!["demo", "heater", "--heaters", "10", "--duration", "2m"];
        all.extend_from_slice(args);
        let out = riffle_in(&data, &all);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn heater_demo_keeps_its_data_across_runs() {
    let data = temp_dir("heater-twice");
    let demo = || {
        let out = riffle_in(
            &data,
            &[
                "demo",
                "heater",
                "--heaters",
                "20",
                "--duration",
                "10m",
                "--seed",
                "3",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let processed = |s: &str| {
        let line = s.lines().find(|l| l.starts_with("Controller")).unwrap();
        numbers(line)[0]
    };
    let group = "heater-demo-controller";

    let first = demo();
    assert!(first.starts_with("heater demo on embedded "), "{first}");
    assert!(
        first.lines().next().unwrap().contains("no earlier data"),
        "{first}"
    );
    let (records1, committed1) = records_and_committed(&data, "sensor", group);
    assert!(records1 > 0 && committed1 > 0, "{records1} {committed1}");
    assert_eq!(processed(&first), committed1, "{first}");

    let second = demo();
    let start = second.lines().next().unwrap();
    assert!(
        start.contains(&format!("found {records1} records in sensor"))
            && start.contains(&format!("({} records behind)", records1 - committed1)),
        "{start}"
    );
    let (records2, committed2) = records_and_committed(&data, "sensor", group);
    assert!(records2 > records1, "{records1} then {records2}");
    assert!(committed2 > committed1, "{committed1} then {committed2}");
    // The controller carried on from its committed offsets: it processed
    // only what came after them, not the first run's records again.
    assert_eq!(processed(&second), committed2 - committed1, "{second}");
    assert!(second.contains("violations 0"), "{second}");

    let third = riffle_in(
        &data,
        &[
            "demo",
            "heater",
            "--heaters",
            "5",
            "--duration",
            "1m",
            "--fresh",
        ],
    );
    assert!(text(&third.stdout).contains("starting from empty topics (--fresh)"));
    let (records3, _) = records_and_committed(&data, "sensor", group);
    assert!(records3 < records1, "--fresh starts over: {records3}");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn bad_delivery_flags_give_one_line() {
    for args in [
        &["heater", "controller", "--guarantee", "at-most-once"][..],
        &["demo", "heater", "--guarantee", "sometimes"],
    ] {
        let err = one_line_error(&riffle(args));
        assert!(
            err.contains("--guarantee") && err.contains("exactly-once"),
            "{err}"
        );
    }
    let err = one_line_error(&riffle(&[
        "heater",
        "controller",
        "--commit-interval",
        "soon",
    ]));
    assert!(err.contains("--commit-interval"), "{err}");
    let err = one_line_error(&riffle(&["--fsync", "sometimes", "topics", "list"]));
    assert!(err.contains("--fsync"), "{err}");
    let err = one_line_error(&riffle(&[
        "--in-memory",
        "--data-dir",
        "x",
        "demo",
        "hello",
    ]));
    assert!(err.contains("--in-memory"), "{err}");
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
    assert!(
        s.contains(r#"value={"n": 2}"#) || s.contains("value=not json"),
        "{s}"
    );
    // All three share the key, so one partition, offsets 0..3; a value
    // that is not JSON is printed like any other.
    assert!(s.contains("offset=0") && s.contains("offset=1"), "{s}");
    let out = kafka(&["consume", "-t", &topic, "-e"]);
    let s = text(&out.stdout);
    assert!(
        s.contains("value=not json") && s.contains("offset=2"),
        "{s}"
    );
    assert!(kafka(&["topics", "delete", &topic]).status.success());
}

/// `riffle lag` through `run` (on one log): a group that read 3 of 5
/// records of a key is 2 behind on that key's partition and nowhere else;
/// an unknown group or topic is one line.
fn lag_shows_what_the_group_has_left(run: impl Fn(&[&str]) -> Output, topic: &str) {
    let group = format!("{topic}-g");
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    ok(&["topics", "create", topic, "-p", "2"]);
    ok(&["produce", "-t", topic, "-k", "k", "{}", "{}", "{}"]);
    ok(&[
        "consume",
        "-t",
        topic,
        "-g",
        &group,
        "--max",
        "3",
        "--duration",
        "20s",
    ]);
    ok(&["produce", "-t", topic, "-k", "k", "{}", "{}"]);
    let table = ok(&["lag", "--group", &group, "--topic", topic]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER"
        ],
        "{table}"
    );
    let parts: Vec<&[&str]> = rows[1..3].iter().map(Vec::as_slice).collect();
    assert!(parts.iter().all(|r| r[0] == topic), "{table}");
    let mut offsets: Vec<&[&str]> = parts.iter().map(|r| &r[2..]).collect();
    offsets.sort();
    // The group has no members now: nobody owns the partitions.
    assert_eq!(
        offsets,
        [&["-", "0", "0", "-"][..], &["3", "5", "2", "-"]],
        "{table}"
    );
    assert_eq!(rows[3], ["TOTAL", "2"], "{table}");
    assert_eq!(rows.len(), 4, "{table}");

    let err = one_line_error(&run(&["lag", "-g", "no-such-group", "-t", topic]));
    assert!(err.contains("no committed offsets"), "{err}");
    let err = one_line_error(&run(&["lag", "-g", &group, "-t", "no-such-topic"]));
    assert!(err.contains("unknown topic"), "{err}");
    let err = one_line_error(&run(&["lag", "-g", &group]));
    assert!(err.contains("--topic"), "{err}");
}

#[test]
fn lag_on_the_embedded_data_dir() {
    let data = temp_dir("lag");
    lag_shows_what_the_group_has_left(|args| riffle_in(&data, args), "readings");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn lag_on_kafka() {
    let topic = format!("cli-lag-{}", std::process::id());
    lag_shows_what_the_group_has_left(kafka, &topic);
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
fn bad_consumer_ranges_give_one_line() {
    for (value, why) in [
        ("4..1", "MIN is above MAX"),
        ("0..3", "at least 1"),
        ("0", "at least 1"),
        ("x", "MIN..MAX"),
        ("1..", "MIN..MAX"),
    ] {
        let err = one_line_error(&riffle(&["heater", "controller", "--consumers", value]));
        assert!(err.contains("--consumers") && err.contains(why), "{err}");
    }
    let err = one_line_error(&riffle(&["heater", "controller", "--scale-lag", "0"]));
    assert!(err.contains("--scale-lag"), "{err}");
    let err = one_line_error(&riffle(&["heater", "controller", "--scale-cooldown", "x"]));
    assert!(err.contains("--scale-cooldown"), "{err}");
}

#[test]
fn heater_controller_autoscales_with_a_consumer_range_on_kafka() {
    let prefix = format!("cli-scale-{}", std::process::id());
    let (sensor, control, dlq) = (
        format!("{prefix}-sensor"),
        format!("{prefix}-control"),
        format!("{prefix}-dlq"),
    );
    let out = kafka(&[
        "heater",
        "controller",
        "--consumers",
        "1..3",
        "--scale-lag",
        "500",
        "--scale-cooldown",
        "5s",
        "-p",
        "3",
        "-g",
        &prefix,
        "--sensor-topic",
        &sensor,
        "--control-topic",
        &control,
        "--dead-letter",
        &dlq,
        "--duration",
        "3s",
        "--status-every",
        "1s",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1..3 consumers")
            && err.contains("autoscaling above 500 lag per consumer, cooldown 5s"),
        "{err}"
    );
    // Nothing to do: it stays at the minimum.
    assert!(err.contains("consumers 1  partitions owned"), "{err}");
    for t in [&sensor, &control, &dlq, &format!("{prefix}-changelog")] {
        assert!(kafka(&["topics", "delete", t]).status.success(), "{t}");
    }
}

#[test]
fn heater_commands_need_a_broker() {
    for args in [&["heater", "controller"][..], &["heater", "simulate"]] {
        let err = one_line_error(&riffle(args));
        assert!(
            err.contains("needs a Kafka broker") && err.contains("riffle demo heater"),
            "{err}"
        );
    }
}

#[test]
fn two_processes_of_one_group_share_the_partitions_on_kafka() {
    use std::io::Write;
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

/// Runs `riffle` on one log and expects success; returns stdout.
fn ok_on(run: &impl Fn(&[&str]) -> Output, args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The topic names `riffle topics list` shows.
fn listed(run: &impl Fn(&[&str]) -> Output) -> Vec<String> {
    ok_on(run, &["topics", "list"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Topic administration through `run`: delete then create at once,
/// `--recreate` with another count, deleted topics stay deleted, several
/// names at once, growing partitions, ISR and non-default configs.
fn topic_admin(run: impl Fn(&[&str]) -> Output, prefix: &str) {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| format!("{prefix}-{n}"));
    ok_on(&run, &["topics", "create", &a, "-p", "2"]);
    ok_on(&run, &["produce", "-t", &a, "-k", "k", "x", "y"]);
    ok_on(&run, &["topics", "delete", &a]);
    ok_on(&run, &["topics", "create", &a, "-p", "3"]);
    let desc = ok_on(&run, &["topics", "describe", &a]);
    assert!(desc.contains("3 partitions, 0 records"), "{desc}");
    ok_on(&run, &["topics", "create", &a, "-p", "5", "--recreate"]);
    let desc = ok_on(&run, &["topics", "describe", &a]);
    assert!(desc.contains("5 partitions, 0 records"), "{desc}");

    ok_on(&run, &["topics", "create", &b]);
    ok_on(&run, &["topics", "create", &c, "-p", "2"]);
    let out = ok_on(&run, &["topics", "delete", &b, &c]);
    assert_eq!(
        out,
        format!("deleted topic {b}\ndeleted topic {c}\n"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let names = listed(&run);
    assert!(!names.contains(&b) && !names.contains(&c), "{names:?}");
    assert!(names.contains(&a), "{names:?}");
    let err = one_line_error(&run(&["topics", "describe", &b]));
    assert!(err.contains("unknown topic"), "{err}");
    // Producing to it or reading it does not bring it back.
    let err = one_line_error(&run(&["produce", "-t", &b, "x"]));
    assert!(err.contains("unknown topic"), "{err}");
    let err = one_line_error(&run(&["consume", "-t", &c, "-e"]));
    assert!(err.contains("unknown topic"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    let names = listed(&run);
    assert!(!names.contains(&b) && !names.contains(&c), "{names:?}");
    // A missing name among others: the others are deleted, the missing one
    // reported.
    ok_on(&run, &["topics", "create", &b]);
    let out = run(&["topics", "delete", &b, &c]);
    let err = one_line_error(&out);
    assert!(err.contains(&format!("unknown topic '{c}'")), "{err}");
    assert_eq!(text(&out.stdout), format!("deleted topic {b}\n"));
    assert!(!listed(&run).contains(&b));

    ok_on(
        &run,
        &["topics", "create", &d, "--config", "cleanup.policy=compact"],
    );
    let out = ok_on(&run, &["topics", "alter", &d, "--partitions", "3"]);
    assert!(out.contains("now has 3 partitions"), "{out}");
    let err = one_line_error(&run(&["topics", "alter", &d, "--partitions", "2"]));
    assert!(err.contains("can only be increased"), "{err}");
    let desc = ok_on(&run, &["topics", "describe", &d]);
    let rows: Vec<Vec<&str>> = desc
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(desc.contains("3 partitions"), "{desc}");
    assert_eq!(
        rows[1],
        ["PARTITION", "LEADER", "REPLICAS", "ISR", "FIRST", "NEXT"],
        "{desc}"
    );
    for (i, row) in rows[2..5].iter().enumerate() {
        assert_eq!(row[0], i.to_string(), "{desc}");
        // One replica, in sync, the leader.
        assert_eq!(row[2], row[1], "{desc}");
        assert_eq!(row[3], row[1], "{desc}");
    }
    assert!(
        desc.lines()
            .any(|l| l == "config cleanup.policy=compact (topic)"),
        "{desc}"
    );
    ok_on(&run, &["topics", "delete", &a, &d]);
}

#[test]
fn topic_admin_on_the_embedded_data_dir() {
    let data = temp_dir("topic-admin");
    topic_admin(|args| riffle_in(&data, args), "t");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn topic_admin_on_kafka() {
    topic_admin(kafka, &format!("cli-admin-{}", std::process::id()));
}

/// The data rows of a table: lines split into words, header skipped.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The TOTAL lag `riffle groups describe` shows.
fn total_lag(run: &impl Fn(&[&str]) -> Output, group: &str) -> i64 {
    let s = ok_on(run, &["groups", "describe", group]);
    let total = s
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or_else(|| panic!("a total in {s}"));
    numbers(total)[0]
}

/// `riffle groups` through `run`: list, describe, every reset mode (dry run
/// first), delete.
fn groups_commands(run: impl Fn(&[&str]) -> Output, topic: &str) {
    let group = format!("{topic}-g");
    ok_on(&run, &["topics", "create", topic, "-p", "2"]);
    ok_on(&run, &["produce", "-t", topic, "-k", "a", "1", "2", "3"]);
    ok_on(&run, &["produce", "-t", topic, "-k", "b", "4", "5", "6"]);
    let g = ["-g", group.as_str()];
    let consume = [
        &["consume", "-t", topic][..],
        &g,
        &["--max", "6", "--duration", "20s"],
    ]
    .concat();
    ok_on(&run, &consume);

    let list = ok_on(&run, &["groups", "list"]);
    let row = rows(&list)
        .into_iter()
        .find(|r| r[0] == group)
        .unwrap_or_else(|| panic!("{group} in {list}"));
    assert_eq!(row[1..], ["Empty", "0"], "{list}");
    let desc = ok_on(&run, &["groups", "describe", &group]);
    assert!(
        desc.starts_with(&format!("group {group} (0 members)")),
        "{desc}"
    );
    assert!(
        desc.lines()
            .any(|l| l.starts_with(topic) && numbers(l).len() >= 4),
        "{desc}"
    );
    assert_eq!(total_lag(&run, &group), 0);

    let reset = |mode: &[&str], execute: bool| {
        let mut args = vec![
            "groups",
            "reset-offsets",
            "--group",
            &group,
            "--topic",
            topic,
        ];
        args.extend_from_slice(mode);
        if execute {
            args.push("--execute");
        }
        ok_on(&run, &args)
    };
    let plan = reset(&["--to-earliest"], false);
    assert!(
        plan.contains("NEW-OFFSET") && plan.contains("dry run"),
        "{plan}"
    );
    let new: Vec<&str> = plan
        .lines()
        .filter(|l| l.starts_with(topic))
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(new, ["0", "0"], "{plan}");
    assert_eq!(total_lag(&run, &group), 0, "a dry run changes nothing");
    reset(&["--to-earliest"], true);
    assert_eq!(total_lag(&run, &group), 6);
    reset(&["--to-latest"], true);
    assert_eq!(total_lag(&run, &group), 0);
    reset(&["--shift-by", "-2"], true);
    let ends: Vec<i64> = rows(&ok_on(&run, &["topics", "describe", topic]))[1..]
        .iter()
        .filter(|r| r[0].parse::<i32>().is_ok())
        .map(|r| r[5].parse().unwrap())
        .collect();
    let back: i64 = ends.iter().map(|e| e.min(&2)).sum();
    assert_eq!(total_lag(&run, &group), back, "{ends:?}");
    reset(&["--shift-by", "1"], true);
    assert_eq!(
        total_lag(&run, &group),
        back - ends.iter().filter(|e| **e > 0).count() as i64
    );
    reset(&["--to-datetime", "2000-01-01T00:00:00Z"], true);
    assert_eq!(total_lag(&run, &group), 6);
    reset(&["--to-datetime", "2999-01-01T00:00:00Z"], true);
    assert_eq!(total_lag(&run, &group), 0);

    let err = one_line_error(&run(&[
        "groups",
        "reset-offsets",
        "-g",
        &group,
        "-t",
        topic,
    ]));
    assert!(err.contains("--to-earliest"), "{err}");
    let err = one_line_error(&run(&[
        "groups",
        "reset-offsets",
        "-g",
        &group,
        "-t",
        topic,
        "--to-datetime",
        "yesterday",
    ]));
    assert!(err.contains("yesterday"), "{err}");

    let out = ok_on(&run, &["groups", "delete", &group]);
    assert_eq!(out, format!("deleted group {group}\n"));
    let list = ok_on(&run, &["groups", "list"]);
    assert!(!rows(&list).iter().any(|r| r[0] == group), "{list}");
    let err = one_line_error(&run(&["groups", "delete", &group]));
    assert!(err.contains(&format!("unknown group '{group}'")), "{err}");
    let err = one_line_error(&run(&["groups", "describe", &group]));
    assert!(err.contains("unknown group"), "{err}");
    ok_on(&run, &["topics", "delete", topic]);
}

#[test]
fn groups_on_the_embedded_data_dir() {
    let data = temp_dir("groups");
    groups_commands(|args| riffle_in(&data, args), "readings");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn groups_on_kafka() {
    let topic = format!("cli-groups-{}", std::process::id());
    groups_commands(kafka, &topic);
}

/// A group with a member running cannot have its offsets reset nor be
/// deleted: one line says so, and the member is shown.
#[test]
fn groups_with_members_are_left_alone_on_kafka() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    let topic = format!("cli-busy-{}", std::process::id());
    let group = format!("{topic}-g");
    assert!(kafka(&["topics", "create", &topic]).status.success());
    assert!(kafka(&["produce", "-t", &topic, "x"]).status.success());
    let data = temp_dir("busy");
    let (mut child, _lines) = spawn_in(
        &data,
        &[
            "--brokers",
            &brokers,
            "consume",
            "-t",
            &topic,
            "-g",
            &group,
            "--duration",
            "60s",
        ],
    );
    let start = Instant::now();
    loop {
        let desc = text(&kafka(&["groups", "describe", &group]).stdout);
        if desc.contains("(1 members)") && desc.contains("consumer") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "member shown: {desc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = one_line_error(&kafka(&[
        "groups",
        "reset-offsets",
        "-g",
        &group,
        "-t",
        &topic,
        "--to-earliest",
    ]));
    assert!(err.contains("active members"), "{err}");
    let err = one_line_error(&kafka(&["groups", "delete", &group]));
    assert!(err.contains("active members"), "{err}");
    let list = text(&kafka(&["groups", "list"]).stdout);
    assert!(
        rows(&list).iter().any(|r| r[0] == group && r[2] == "1"),
        "{list}"
    );
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(kafka(&["groups", "delete", &group]).status.success());
    assert!(kafka(&["topics", "delete", &topic]).status.success());
    let _ = std::fs::remove_dir_all(&data);
}

/// `riffle consume` without a group, as kcat reads: the same records every
/// run, partitions and offsets chosen, the end, formats.
fn consume_without_group(run: impl Fn(&[&str]) -> Output, topic: &str) {
    ok_on(&run, &["topics", "create", topic]);
    ok_on(
        &run,
        &[
            "produce",
            "-t",
            topic,
            "-k",
            "k",
            "{\"n\":0}",
            "plain text",
            "2",
            "3",
            "4",
        ],
    );
    let all = |extra: &[&str]| {
        let mut args = vec!["consume", "-t", topic];
        args.extend_from_slice(extra);
        ok_on(&run, &args)
    };
    let first = all(&["-e"]);
    assert_eq!(first, all(&["-e"]), "a second run shows the same records");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "{first}");
    assert_eq!(
        lines[1],
        format!("topic={topic} partition=0 offset=1 key=k value=plain text")
    );
    let offsets = |s: &str| -> Vec<i64> {
        s.lines()
            .map(|l| numbers(l.rsplit("offset=").next().unwrap())[0])
            .collect()
    };
    assert_eq!(offsets(&all(&["-o", "3", "-e"])), [3, 4]);
    assert_eq!(offsets(&all(&["-o", "-2", "-e"])), [3, 4]);
    assert_eq!(
        offsets(&all(&["-o", "beginning", "-e", "--max", "2"])),
        [0, 1]
    );
    assert_eq!(offsets(&all(&["-o", "end", "-e"])), Vec::<i64>::new());
    assert_eq!(offsets(&all(&["-o", "s@0", "-e"])), [0, 1, 2, 3, 4]);
    assert_eq!(
        offsets(&all(&["-o", "s@32503680000000", "-e"])),
        Vec::<i64>::new()
    );
    // Without -e it runs on until --max (or --duration).
    assert_eq!(offsets(&all(&["-o", "1", "--max", "2"])), [1, 2]);
    assert_eq!(offsets(&all(&["-o", "4", "--duration", "1s"])), [4]);

    let formatted = all(&["-e", "-o", "3", "-f", r"%t|%p|%o|%k|%s|%%\t%T\n"]);
    let mut parts = formatted.lines().next().unwrap().split('\t');
    assert_eq!(parts.next().unwrap(), format!("{topic}|0|3|k|3|%"));
    let ts: i64 = parts.next().unwrap().parse().unwrap();
    assert!(ts > 1_600_000_000_000, "{formatted}");
    let json = all(&["-e", "-J", "-o", "-4", "--max", "1"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["topic"], topic, "{v}");
    assert_eq!(
        (&v["partition"], &v["offset"], &v["key"], &v["payload"]),
        (&0.into(), &1.into(), &"k".into(), &"plain text".into()),
        "{v}"
    );
    assert!(
        v["ts"].as_i64().unwrap() > 1_600_000_000_000 && v["tstype"] == "create",
        "{v}"
    );

    // Headers: shown on the default line, by %h and in -J.
    ok_on(
        &run,
        &["produce", "-t", topic, "-H", "trace=abc", "-H", "flag", "h"],
    );
    let line = all(&["-o", "5", "-e"]);
    assert_eq!(
        line,
        format!("topic={topic} partition=0 offset=5 key=- value=h headers=trace=abc,flag\n")
    );
    assert_eq!(
        all(&["-o", "5", "-e", "-f", "%h|%s\n"]),
        "trace=abc,flag|h\n"
    );
    let v: serde_json::Value = serde_json::from_str(all(&["-o", "5", "-e", "-J"]).trim()).unwrap();
    assert_eq!(
        v["headers"],
        serde_json::json!(["trace", "abc", "flag", null]),
        "{v}"
    );
    assert_eq!(v["key"], serde_json::Value::Null, "{v}");

    // -p: one partition of a topic with two.
    let two = format!("{topic}-2");
    ok_on(&run, &["topics", "create", &two, "-p", "2"]);
    for key in ["a", "b", "c", "d", "e", "f"] {
        ok_on(&run, &["produce", "-t", &two, "-k", key, key]);
    }
    let every = ok_on(&run, &["consume", "-t", &two, "-e"]);
    let in_one: Vec<&str> = every
        .lines()
        .filter(|l| l.contains(" partition=1 "))
        .collect();
    let only = ok_on(&run, &["consume", "-t", &two, "-e", "-p", "1"]);
    assert_eq!(only.lines().collect::<Vec<_>>(), in_one, "{every}");
    let both = ok_on(&run, &["consume", "-t", &two, "-e", "-p", "0", "-p", "1"]);
    assert_eq!(both.lines().count(), 6, "{both}");

    let err = one_line_error(&run(&["consume", "-t", topic, "-g", "g", "-p", "0"]));
    assert!(err.contains("without a group"), "{err}");
    let err = one_line_error(&run(&["consume", "-t", topic, "-o", "soon"]));
    assert!(err.contains("soon"), "{err}");
    let err = one_line_error(&run(&["consume", "-t", topic, "-p", "7", "-e"]));
    assert!(err.contains("partition 7"), "{err}");
    let err = one_line_error(&run(&["consume", "-t", topic, "-e", "-f", "%x"]));
    assert!(err.contains("%x"), "{err}");
    // Nothing was joined: no group appears.
    let groups = ok_on(&run, &["groups", "list"]);
    assert!(
        !groups.contains("riffle-reader") && !groups.contains("riffle-consume"),
        "{groups}"
    );
    ok_on(&run, &["topics", "delete", topic, &two]);
}

#[test]
fn consume_without_group_on_the_embedded_data_dir() {
    let data = temp_dir("consume-nogroup");
    consume_without_group(|args| riffle_in(&data, args), "readings");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn consume_without_group_on_kafka() {
    consume_without_group(kafka, &format!("cli-read-{}", std::process::id()));
}

#[test]
fn sigterm_stops_consume_without_a_group() {
    let data = temp_dir("sigterm-nogroup");
    for args in [
        &["topics", "create", "t"][..],
        &["produce", "-t", "t", "a", "b"],
    ] {
        let out = riffle_in(&data, args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // Without -e it follows the log until stopped.
    let (child, mut lines) = spawn_in(&data, &["consume", "-t", "t"]);
    assert!(lines.next().unwrap().unwrap().contains("value=b"));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("consumed 2 records"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&data).unwrap();
}

/// `produce -H` through `run` (on one log) puts the same headers, in order,
/// on every record it sends; `consume` shows them after the value, a null
/// value as the bare name; a record without headers shows none.
fn headers_produced_show_in_consume(run: impl Fn(&[&str]) -> Output, topic: &str) {
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    ok(&["topics", "create", topic, "-p", "1"]);
    ok(&[
        "produce",
        "-t",
        topic,
        "-H",
        "trace=abc",
        "--header",
        "dup=1",
        "-H",
        "dup=2=two",
        "-H",
        "null",
        "-H",
        "empty=",
        "one",
        "two",
    ]);
    ok(&["produce", "-t", topic, "three"]);
    let s = ok(&[
        "consume",
        "-t",
        topic,
        "-g",
        &format!("{topic}-g"),
        "--raw",
        "--max",
        "3",
        "--duration",
        "20s",
    ]);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    let headers = " headers=trace=abc,dup=1,dup=2=two,null,empty=";
    for (line, value) in lines[..2].iter().zip(["one", "two"]) {
        assert!(line.ends_with(&format!("value={value}{headers}")), "{line}");
    }
    assert!(lines[2].ends_with("value=three"), "{}", lines[2]);
    ok(&["topics", "delete", topic]);
}

#[test]
fn produce_headers_on_the_embedded_data_dir() {
    let data = temp_dir("embedded-headers");
    headers_produced_show_in_consume(|args| riffle_in(&data, args), "headers");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn produce_headers_on_kafka() {
    headers_produced_show_in_consume(kafka, &format!("cli-headers-{}", std::process::id()));
}
