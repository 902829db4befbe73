//! `riffle connect` as a user runs it: pipelines from flags and from files,
//! through the embedded log and a real Kafka broker (`RIFFLE_TEST_BROKERS`,
//! set by scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "connect-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riffle"));
    c.args(args)
        .current_dir(dir)
        .env_remove("RIFFLE_BROKERS")
        .env_remove("RUST_LOG")
        .env("RIFFLE_DATA_DIR", dir.join("data"));
    c
}

fn riffle(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("riffle runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Sensor-like input: good records, one that is not JSON, one filtered out.
const INPUT: &str = r#"{"id": "h1", "measurement": 45.5, "unit": "C"}
{"id": "h2", "measurement": 12.0, "unit": "C"}
not json
{"id": "h3", "measurement": -1, "unit": "C"}
{"id": "h1", "measurement": 46.5, "unit": "C"}
"#;

fn expected_output() -> Vec<String> {
    [("h1", 45.5), ("h2", 12.0), ("h1", 46.5)]
        .iter()
        .map(|(id, m)| {
            format!(r#"{{"topic":"in.jsonl","key":"{id}","value":{{"measurement":{m:?}}}}}"#)
        })
        .collect()
}

#[test]
fn a_pipeline_file_and_its_flags_give_the_same_result() {
    let dir = temp_dir("same");
    std::fs::write(dir.join("in.jsonl"), INPUT).unwrap();
    let flags = riffle(
        &dir,
        &[
            "connect",
            "--source",
            "file:path=in.jsonl,offsets=flags.offset",
            "--sink",
            "file:path=flags-out.jsonl,format=record",
            "--dead-letter",
            "file:path=flags-bad.jsonl",
            "--filter",
            "measurement>0",
            "--project",
            "measurement",
            "--key-from",
            "field:id",
        ],
    );
    assert!(flags.status.success(), "{}", text(&flags.stderr));
    let err = text(&flags.stderr);
    assert!(
        err.contains("file in.jsonl -> file flags-out.jsonl (at-least-once)"),
        "{err}"
    );
    assert!(err.contains("5 in, 3 out, 1 dead letters"), "{err}");
    std::fs::write(
        dir.join("pipeline.toml"),
        r#"
[source]
type = "file"
path = "in.jsonl"
offsets = "file.offset"

[transform]
filter = ["measurement>0"]
project = ["measurement"]
key_from = "field:id"

[sink]
type = "file"
path = "file-out.jsonl"
format = "record"

[dead_letter]
type = "file"
path = "file-bad.jsonl"
"#,
    )
    .unwrap();
    let file = riffle(&dir, &["connect", "--file", "pipeline.toml"]);
    assert!(file.status.success(), "{}", text(&file.stderr));
    let out = lines(&dir.join("flags-out.jsonl"));
    assert_eq!(out, expected_output());
    assert_eq!(lines(&dir.join("file-out.jsonl")), out);
    let bad = lines(&dir.join("flags-bad.jsonl"));
    assert_eq!(lines(&dir.join("file-bad.jsonl")), bad);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].contains(r#""value":"not json""#) && bad[0].contains("not JSON"),
        "{bad:?}"
    );

    // Run again: the input was acknowledged, nothing is copied twice.
    let again = riffle(&dir, &["connect", "--file", "pipeline.toml"]);
    assert!(
        text(&again.stderr).contains("0 in, 0 out"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(lines(&dir.join("file-out.jsonl")).len(), 3);
}

#[test]
fn list_shows_every_connector_and_bad_specs_get_one_line() {
    let dir = temp_dir("list");
    let out = riffle(&dir, &["connect", "--list"]);
    assert!(out.status.success());
    let list = text(&out.stdout);
    for name in ["kafka:", "embedded:", "file:", "stdio:"] {
        assert!(list.contains(name), "{list}");
    }
    for (args, says) in [
        (
            &["connect", "--source", "nope:x=1", "--sink", "stdio"][..],
            "no connector 'nope'",
        ),
        (
            &[
                "connect",
                "--source",
                "file:path=a,pth=b",
                "--sink",
                "stdio",
            ],
            "unknown option 'pth'",
        ),
        (
            &[
                "connect",
                "--source",
                "file:path=a",
                "--sink",
                "stdio",
                "--filter",
                "t>hot",
            ],
            "comparison needs a number",
        ),
        (&["connect", "--source", "stdio"], "--sink"),
        (&["connect", "--file", "missing.toml"], "missing.toml"),
    ] {
        let out = riffle(&dir, args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A `riffle connect` running in the background, killed if the test
/// fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    /// Waits until `path` has `n` lines, or fails with what it has.
    fn wait_lines(&mut self, path: &Path, n: usize) -> Vec<String> {
        let child = self.0.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let l = lines(path);
            if l.len() >= n {
                return l;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("riffle connect exited with {status}; {} lines", l.len());
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} lines after 60 s",
                l.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM, as Ctrl-C would; returns its stderr.
    fn stop(mut self) -> String {
        let child = self.0.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    }
}

/// A file into a log topic and out again into another file, keys kept.
fn round_trip_through(dir: &Path, log_flags: &[&str], connector: &str, topic: &str) {
    std::fs::write(dir.join("in.jsonl"), INPUT).unwrap();
    let mut args = log_flags.to_vec();
    let sink = format!("{connector}:topic={topic}");
    args.extend(["connect", "--source", "file:path=in.jsonl", "--sink", &sink]);
    let missing = riffle(dir, &args);
    assert!(
        text(&missing.stderr).contains(&format!("unknown topic '{topic}'")),
        "{}",
        text(&missing.stderr)
    );
    let mut args = log_flags.to_vec();
    args.extend(["topics", "create", topic, "--partitions", "3"]);
    let created = riffle(dir, &args);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let mut args = log_flags.to_vec();
    args.extend([
        "connect",
        "--source",
        "file:path=in.jsonl",
        "--sink",
        &sink,
        "--filter",
        "measurement>0",
        "--key-from",
        "field:id",
    ]);
    let into = riffle(dir, &args);
    assert!(into.status.success(), "{}", text(&into.stderr));
    let mut args = log_flags.to_vec();
    let source = format!("{connector}:topic={topic},group=copy");
    args.extend([
        "connect",
        "--source",
        &source,
        "--sink",
        "file:path=out.jsonl,format=record",
    ]);
    let mut running = Running(Some(
        command(dir, &args).stderr(Stdio::piped()).spawn().unwrap(),
    ));
    let out = running.wait_lines(&dir.join("out.jsonl"), 3);
    let err = running.stop();
    assert!(err.contains("3 in, 3 out"), "{err}");
    let mut got: Vec<(String, f64)> = out
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["topic"], topic);
            (
                v["key"].as_str().unwrap().to_owned(),
                v["value"]["measurement"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        got,
        [
            ("h1".to_owned(), 45.5),
            ("h1".to_owned(), 46.5),
            ("h2".to_owned(), 12.0)
        ]
    );
}

#[test]
fn files_go_through_the_embedded_log_and_back() {
    let dir = temp_dir("embedded");
    round_trip_through(&dir, &[], "embedded", "readings");
}

#[test]
fn files_go_through_kafka_and_back() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    let dir = temp_dir("kafka");
    let topic = format!("connect-{}-{}", std::process::id(), fastrand_suffix());
    round_trip_through(&dir, &["--brokers", &brokers], "kafka", &topic);
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000
}

#[test]
fn without_a_dead_letter_sink_the_chosen_policy_applies() {
    let dir = temp_dir("policy");
    std::fs::write(dir.join("in.jsonl"), INPUT).unwrap();
    let run = |policy: &str, offsets: &str| {
        let source = format!("file:path=in.jsonl,offsets={offsets}");
        riffle(
            &dir,
            &[
                "connect",
                "--source",
                &source,
                "--sink",
                "file:path=out.jsonl",
                "--filter",
                "measurement>0",
                "--no-dead-letter",
                policy,
            ],
        )
    };
    let stopped = run("stop", "stop.offset");
    assert!(!stopped.status.success());
    let err = text(&stopped.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("record to 'in.jsonl' without a key")
            && last.contains("not JSON")
            && last.contains("stop"),
        "{err}"
    );
    let skipped = run("skip", "skip.offset");
    assert!(skipped.status.success(), "{}", text(&skipped.stderr));
    let err = text(&skipped.stderr);
    assert!(
        err.contains("5 in, 3 out, 0 dead letters, 1 skipped"),
        "{err}"
    );
    let wrong = run("maybe", "wrong.offset");
    assert!(!wrong.status.success());
    assert!(text(&wrong.stderr).contains("stop or skip"));
}

/// An HTTP endpoint answering 400 with a body to the requests whose body
/// contains `bad`, and 200 to the others; returns its address and the
/// bodies of all requests, in order.
#[cfg(feature = "http")]
fn refusing_endpoint(
    bad: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse::<usize>().ok();
                    }
                }
            }
            // The sink's reachability check sends nothing.
            let Some(length) = length else { continue };
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let (status, text) = if body.contains(bad) {
                ("400 Bad Request", "unknown heater")
            } else {
                ("200 OK", "ok")
            };
            seen.lock().unwrap().push(body);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (address, bodies)
}

#[test]
#[cfg(feature = "http")]
fn a_record_the_http_endpoint_refuses_is_dead_lettered_after_max_attempts() {
    let dir = temp_dir("refused");
    let input: String = (0..20)
        .map(|i| format!("{{\"id\": \"h{i}\", \"measurement\": {i}}}\n"))
        .collect();
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    let (address, bodies) = refusing_endpoint("\"h7\"");
    let sink = format!("http:url=http://{address}/commands");
    let out = riffle(
        &dir,
        &[
            "connect",
            "--source",
            "file:path=in.jsonl",
            "--sink",
            &sink,
            "--dead-letter",
            "file:path=bad.jsonl,format=record",
            "--max-attempts",
            "2",
            "--no-dead-letter",
            "stop",
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("20 in, 19 out, 1 dead letters, 0 skipped"),
        "{err}"
    );
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 21, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| b.contains("\"h7\"")).count(), 2);
    let bad = lines(&dir.join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].contains("400 Bad Request: unknown heater") && bad[0].contains("\\\"h7\\\""),
        "{bad:?}"
    );
}

#[test]
fn a_pipeline_serves_its_counts_as_metrics() {
    let dir = temp_dir("metrics");
    std::fs::write(dir.join("in.jsonl"), INPUT).unwrap();
    let mut child = command(
        &dir,
        &[
            "connect",
            "--source",
            "file:path=in.jsonl,follow=true",
            "--sink",
            "file:path=out.jsonl",
            "--filter",
            "measurement>0",
            "--dead-letter",
            "file:path=dead.jsonl",
            "--http",
            "127.0.0.1:0",
            "--name",
            "sensors",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The address is in the line that says where the metrics are served.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("riffle connect names its metrics address");
        if let Some(rest) = line.split("serving http://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let want = [
        r#"riffle_pipeline_records_in_total{pipeline="sensors",connector="file"} 5"#,
        r#"riffle_pipeline_records_out_total{pipeline="sensors",connector="file"} 3"#,
        r#"riffle_pipeline_dead_letters_total{pipeline="sensors"} 1"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline && !want.iter().all(|w| text.contains(w)) {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok((200, body)) = riffle::serve::http::get(&addr, "/metrics", Duration::from_secs(2))
        {
            text = String::from_utf8_lossy(&body).into_owned();
        }
    }
    let health = riffle::serve::http::get(&addr, "/healthz", Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    for w in want {
        assert!(text.contains(w), "{w} not in\n{text}");
    }
    assert_eq!(health.map(|(status, _)| status).ok(), Some(200));
}
