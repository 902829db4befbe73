//! The file connector on a real filesystem: following a growing file,
//! resuming after the last acknowledged line, rotation and truncation.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle::connect::{Pipeline, Record, Source};
use riffle_connectors::file::{FileSink, FileSource};

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!(r#"{{"n":{i}}}"#)).collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

use riffle_connectors::file::Format;

/// Runs a following pipeline from `input` to `output` on a thread.
fn follow(input: &Path, output: &Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let source = FileSource::open(input, Format::Value, true, None).unwrap();
    let sink = FileSink::open(output, Format::Value).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        Pipeline::new(source, sink)
            .batch(7)
            .run(&s)
            .unwrap()
            .records_in
    });
    (stop, handle)
}

#[test]
fn a_followed_file_is_copied_as_it_grows_and_resumed_after_a_restart() {
    let dir = common::scratch_dir("file-follow");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    append(&input, &numbered(0..50));
    let (stop, run) = follow(&input, &output);
    wait_for("the first 50", || lines(&output).len() == 50);
    // Appended while followed, including a line written in two parts.
    append(&input, &numbered(50..80));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    f.write_all(br#"{"n":"#).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lines(&output).len(),
        80,
        "half a line must wait for its end"
    );
    f.write_all(b"80}\n").unwrap();
    wait_for("81 lines", || lines(&output).len() == 81);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(run.join().unwrap(), 81);

    // Stopped, then more lines: a new pipeline copies only those.
    append(&input, &numbered(81..100));
    let (stop, run) = follow(&input, &output);
    wait_for("100 lines", || lines(&output).len() == 100);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(run.join().unwrap(), 19);
    assert_eq!(lines(&output), numbered(0..100));
}

#[test]
fn lines_not_acknowledged_are_read_again() {
    let dir = common::scratch_dir("file-unacked");
    let input = dir.join("in.jsonl");
    append(&input, &numbered(0..10));
    let mut s = FileSource::open(&input, Format::Value, false, None).unwrap();
    let mut out = Vec::new();
    s.poll(&mut out, 4, Duration::from_millis(100)).unwrap();
    s.ack().unwrap();
    s.poll(&mut out, 3, Duration::from_millis(100)).unwrap();
    drop(s); // Dies before acknowledging the second batch.
    let mut s = FileSource::open(&input, Format::Value, false, None).unwrap();
    let mut again = Vec::new();
    while s.poll(&mut again, 100, Duration::from_millis(50)).unwrap() > 0 {}
    assert!(s.finished());
    let values: Vec<_> = again
        .iter()
        .map(|r: &Record| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    assert_eq!(values, numbered(4..10));
}

#[test]
fn rotated_and_truncated_files_are_read_from_their_start() {
    let dir = common::scratch_dir("file-rotate");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    append(&input, &numbered(0..5));
    let (stop, run) = follow(&input, &output);
    wait_for("5 lines", || lines(&output).len() == 5);
    // Rotated: renamed away, a new file in its place.
    std::fs::rename(&input, dir.join("in.jsonl.1")).unwrap();
    append(&input, &numbered(5..8));
    wait_for("8 lines", || lines(&output).len() == 8);
    // Truncated, then written again.
    std::fs::write(&input, "").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    append(&input, &numbered(8..9));
    wait_for("9 lines", || lines(&output).len() == 9);
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap();
    assert_eq!(lines(&output), numbered(0..9));
}

#[test]
fn a_missing_file_is_named_in_the_error() {
    let e = FileSource::open(
        Path::new("/nonexistent/in.jsonl"),
        Format::Value,
        false,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("/nonexistent/in.jsonl"), "{e}");
}
