//! The embedded log kept in a data directory: what survives reopening, a
//! crash, and damage to the files.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::frame::{encode_frame, format1_frame, FRAME_HEADER};
use super::segment::segment_path;
use super::{EmbeddedLog, FsyncPolicy};
use crate::error::Error;
use crate::{
    ConsumerConfig, GroupEvent, Header, Headers, Log, LogConsumer, OutRecord, PollVisitor, Record,
    RecordRef, TopicSpec,
};

const T: Duration = Duration::from_secs(5);

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "riffle-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Collect {
    records: Vec<Record>,
    /// Mark (return `true` for) only records below this offset.
    mark_below: Option<i64>,
}

impl PollVisitor for Collect {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        self.records.push(record.to_owned());
        self.mark_below.is_some_and(|m| record.offset < m)
    }
    fn event(&mut self, _: GroupEvent) {}
}

fn config(group: &str, topic: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, &[topic]);
    c.commit_interval = Duration::from_secs(3600);
    c
}

/// Polls `c` until it has `n` records (failing rather than hanging).
fn poll_n(c: &mut dyn LogConsumer, got: &mut Collect, n: usize) {
    let deadline = Instant::now() + T;
    while got.records.len() < n {
        assert!(
            Instant::now() < deadline,
            "gave up after {} of {n} records",
            got.records.len()
        );
        c.poll(Duration::from_millis(20), 1000, got).unwrap();
    }
}

/// Every record of `topic`, read by a new group, sorted by partition and
/// offset.
fn read_all(log: &EmbeddedLog, topic: &str) -> Vec<Record> {
    let total: i64 = log
        .describe_topic(topic, T)
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high - p.low)
        .sum();
    let group = format!("reader-{}", fastrand::u64(..));
    let mut c = log.consumer(&config(&group, topic)).unwrap();
    let mut got = Collect::default();
    poll_n(&mut *c, &mut got, total as usize);
    let mut records = got.records;
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

fn send_to(log: &EmbeddedLog, topic: &str, partition: i32, key: Option<&[u8]>, value: &[u8]) {
    let producer = log.producer(None).unwrap();
    producer
        .send(OutRecord {
            partition: Some(partition),
            ..OutRecord::new(topic, key, value)
        })
        .unwrap();
}

fn highs(log: &EmbeddedLog, topic: &str) -> Vec<i64> {
    log.describe_topic(topic, T)
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high)
        .collect()
}

fn committed(log: &EmbeddedLog, group: &str, topic: &str) -> Vec<Option<i64>> {
    log.committed_offsets(group, topic, T)
        .unwrap()
        .into_iter()
        .map(|o| o.committed)
        .collect()
}

fn frame_len(key: Option<&[u8]>, value: &[u8]) -> u64 {
    (FRAME_HEADER + key.map_or(0, <[u8]>::len) + value.len()) as u64
}

fn first_segment(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    segment_path(
        &dir.join("topics").join(topic).join(partition.to_string()),
        0,
    )
}

#[test]
fn records_and_offsets_survive_reopening_and_a_group_resumes_after_its_commit() {
    let dir = TempDir::new("reopen");
    let group = "billing/v2 ü"; // not a valid file name as it stands
    type Sent<'a> = (i32, Option<&'a [u8]>, &'a [u8]);
    let values: Vec<Sent> = vec![
        (0, Some(b"k1"), b"first"),
        (0, None, b"no key"),
        (0, Some(b""), b"empty key"),
        (0, Some(b"k2"), b""),
        (0, None, b""),
        (1, Some(b"k3"), &[0, 255, 10, 13]),
        (1, Some(b"k4"), b"x"),
        (1, None, b"y"),
        (1, Some(b"k5"), b"z"),
    ];
    let (before, offsets) = {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
        assert_eq!(log.describe(), format!("embedded {}", dir.path().display()));
        let mut spec = TopicSpec::new("t", 3);
        spec.configs = vec![("cleanup.policy".into(), "delete".into())];
        log.create_topic(&spec, T).unwrap();
        for (p, key, value) in &values {
            send_to(&log, "t", *p, *key, value);
        }
        let mut c = log.consumer(&config(group, "t")).unwrap();
        let mut got = Collect {
            mark_below: Some(3),
            ..Collect::default()
        };
        poll_n(&mut *c, &mut got, values.len());
        c.commit().unwrap();
        let offsets = committed(&log, group, "t");
        assert_eq!(offsets, [Some(3), Some(3), None]);
        drop(c); // without closing: only what was committed counts
        (read_all(&log, "t"), offsets)
    };
    assert_eq!(before.len(), values.len());
    assert!(fs::read_dir(dir.path().join("groups")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".json")));

    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
    assert_eq!(highs(&log, "t"), [5, 4, 0]);
    let after = read_all(&log, "t");
    assert_eq!(after, before, "records come back as they were");
    assert_eq!(
        after
            .iter()
            .map(|r| (r.partition, r.key.as_deref(), r.value.as_slice()))
            .collect::<Vec<_>>(),
        values,
        "keyless, empty-key and empty-value records are told apart"
    );
    assert_eq!(committed(&log, group, "t"), offsets);

    let mut c = log.consumer(&config(group, "t")).unwrap();
    let mut got = Collect::default();
    poll_n(&mut *c, &mut got, 3);
    let first: BTreeMap<i32, i64> = got.records.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.partition).or_insert(r.offset);
        m
    });
    assert_eq!(
        first,
        BTreeMap::from([(0, 3), (1, 3)]),
        "the group resumes exactly after its committed offsets"
    );

    // Appends continue at the right offsets, and survive another reopening.
    send_to(&log, "t", 0, Some(b"k"), b"later");
    send_to(&log, "t", 2, None, b"p2");
    assert_eq!(highs(&log, "t"), [6, 4, 1]);
    drop((c, log));
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
    let all = read_all(&log, "t");
    assert_eq!(all.len(), values.len() + 2);
    let later = all
        .iter()
        .find(|r| r.partition == 0 && r.offset == 5)
        .unwrap();
    assert_eq!(later.value, b"later");
}

/// Writes ten records of different sizes to a one-partition topic, closes
/// the log, damages the last frame with `damage(file bytes, last frame
/// start)`, and checks that opening cuts exactly the last frame off and that
/// appends continue at offset 9.
fn check_last_frame_recovery(tag: &str, damage: impl Fn(&mut Vec<u8>, usize)) {
    let dir = TempDir::new(tag);
    let values: Vec<Vec<u8>> = (0..10).map(|i| vec![b'a' + i as u8; 10 * i]).collect();
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        for (i, v) in values.iter().enumerate() {
            let key = (i % 2 == 0).then_some(b"key".as_slice());
            send_to(&log, "t", 0, key, v);
        }
    }
    let path = first_segment(dir.path(), "t", 0);
    let mut bytes = fs::read(&path).unwrap();
    let last_start = bytes.len() - frame_len(None, &values[9]) as usize;
    damage(&mut bytes, last_start);
    fs::write(&path, &bytes).unwrap();

    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(highs(&log, "t"), [9]);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        last_start as u64,
        "the damaged tail is cut off the file"
    );
    let records = read_all(&log, "t");
    assert_eq!(
        records.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        values[..9]
    );
    send_to(&log, "t", 0, None, b"new");
    assert_eq!(highs(&log, "t"), [10]);
    drop(log);
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    let records = read_all(&log, "t");
    assert_eq!(
        records.last().map(|r| (r.offset, r.value.clone())),
        Some((9, b"new".to_vec()))
    );
    assert_eq!(records.len(), 10);
}

#[test]
fn a_torn_last_frame_is_cut_off_and_appends_continue() {
    for _ in 0..5 {
        check_last_frame_recovery("torn", |bytes, last| {
            let cut = fastrand::usize(last + 1..bytes.len());
            bytes.truncate(cut);
        });
    }
}

#[test]
fn a_flipped_byte_in_the_last_frame_is_cut_off_and_appends_continue() {
    for _ in 0..5 {
        check_last_frame_recovery("flip", |bytes, last| {
            let at = fastrand::usize(last..bytes.len());
            bytes[at] ^= 1 << fastrand::u32(0..8);
        });
    }
}

#[test]
fn segments_follow_on_and_damage_before_the_last_is_an_error() {
    let dir = TempDir::new("segments");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        for i in 0..3 {
            send_to(&log, "t", 0, None, format!("r{i}").as_bytes());
        }
    }
    // A second segment, as rolling would have started it, with one record.
    let partition = dir.path().join("topics/t/0");
    let mut frame = Vec::new();
    encode_frame(&mut frame, Some(b"k"), b"r3", Headers::EMPTY, 1);
    fs::write(segment_path(&partition, 3), &frame).unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        let records = read_all(&log, "t");
        let got: Vec<(i64, Vec<u8>)> = records
            .iter()
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        let want: Vec<(i64, Vec<u8>)> = (0..4).map(|i| (i, format!("r{i}").into_bytes())).collect();
        assert_eq!(got, want);
        send_to(&log, "t", 0, None, b"r4");
    }
    assert_eq!(
        fs::metadata(segment_path(&partition, 3)).unwrap().len(),
        frame.len() as u64 + frame_len(None, b"r4"),
        "appends go to the last segment"
    );

    // A hole between segments.
    fs::rename(segment_path(&partition, 3), segment_path(&partition, 5)).unwrap();
    let err = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { message: m, .. } if m.contains("starts at offset 5")),
        "{err}"
    );
    fs::rename(segment_path(&partition, 5), segment_path(&partition, 3)).unwrap();

    // Damage in the first (not last) segment.
    let first = segment_path(&partition, 0);
    let mut bytes = fs::read(&first).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0x40;
    fs::write(&first, &bytes).unwrap();
    let err = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err();
    let Error::Corrupt { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("not the last segment") && message.contains("00000000000000000000.log"),
        "{message}"
    );
    assert_eq!(
        fs::read(&first).unwrap(),
        bytes,
        "nothing is cut off a segment that is not the last"
    );
}

#[test]
fn segments_roll_at_the_in_memory_bound_of_64_mib() {
    let dir = TempDir::new("roll");
    let value = vec![7u8; 4 << 20];
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        for _ in 0..17 {
            send_to(&log, "t", 0, None, &value);
        }
    }
    let partition = dir.path().join("topics/t/0");
    let mut names: Vec<String> = fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["00000000000000000000.log", "00000000000000000016.log"],
        "16 values of 4 MiB fill the first segment"
    );
    assert_eq!(
        fs::metadata(segment_path(&partition, 16)).unwrap().len(),
        frame_len(None, &value)
    );
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(highs(&log, "t"), [17]);
    let mut c = log.consumer(&config("g", "t")).unwrap();
    let mut got = Collect::default();
    poll_n(&mut *c, &mut got, 17);
    assert!(got.records.iter().all(|r| r.value == value));
    assert_eq!(
        got.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..17).collect::<Vec<_>>()
    );
}

#[test]
fn a_second_open_is_refused_while_the_first_is_alive() {
    let dir = TempDir::new("lock");
    let in_use = Error::Locked {
        dir: dir.path().to_path_buf(),
    };
    assert_eq!(
        in_use.to_string(),
        format!(
            "data directory {} is in use by another process",
            dir.path().display()
        )
    );
    let first = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
    let lock = dir.path().join("LOCK");
    assert_eq!(
        fs::read_to_string(&lock).unwrap().trim(),
        std::process::id().to_string()
    );
    assert_eq!(
        EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err(),
        in_use
    );
    let clone = first.clone();
    drop(first);
    assert_eq!(
        EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err(),
        in_use,
        "a clone keeps it open"
    );
    drop(clone);
    assert!(!lock.exists(), "the lock is removed with the last clone");
    let again = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    drop(again);

    // Stale locks: a process that is gone, and an earlier process that had
    // this process's pid (as happens in containers).
    for stale in [u32::MAX - 1, std::process::id()] {
        fs::write(&lock, format!("{stale}\n")).unwrap();
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(
            fs::read_to_string(&lock).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(log);
    }
    // A lock held by a live process (init, say) is respected.
    fs::write(&lock, "1\n").unwrap();
    assert_eq!(
        EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err(),
        in_use
    );
}

#[test]
fn a_deleted_and_recreated_topic_keeps_no_old_records_or_offsets() {
    let dir = TempDir::new("recreate");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Always).unwrap();
        log.create_topic(&TopicSpec::new("t", 2), T).unwrap();
        log.create_topic(&TopicSpec::new("gone", 1), T).unwrap();
        for i in 0..10 {
            send_to(&log, "t", i % 2, None, b"old");
        }
        send_to(&log, "gone", 0, None, b"old");
        let mut c = log.consumer(&config("g", "t")).unwrap();
        let mut got = Collect {
            mark_below: Some(100),
            ..Collect::default()
        };
        poll_n(&mut *c, &mut got, 10);
        c.close().unwrap();
        assert_eq!(committed(&log, "g", "t"), [Some(5), Some(5)]);
        log.recreate_topic(&TopicSpec::new("t", 3), T).unwrap();
        log.delete_topic("gone", T).unwrap();
        send_to(&log, "t", 1, None, b"new");
    }
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Always).unwrap();
    let names: Vec<String> = log
        .list_topics(T)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["t"]);
    assert_eq!(highs(&log, "t"), [0, 1, 0]);
    assert_eq!(read_all(&log, "t")[0].value, b"new");
    assert_eq!(committed(&log, "g", "t"), [None; 3]);
    let entries: Vec<String> = fs::read_dir(dir.path().join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["t"], "nothing of the deleted topics is left");
}

#[test]
fn offsets_of_a_deleted_topic_do_not_apply_to_a_successor_created_meanwhile() {
    // As if the process died after recreating the topic but before the group
    // file was rewritten: the old offsets name the old topic's id.
    let dir = TempDir::new("topic-id");
    let group_file = dir.path().join("groups/g.json");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        send_to(&log, "t", 0, None, b"old");
        let mut c = log.consumer(&config("g", "t")).unwrap();
        let mut got = Collect {
            mark_below: Some(100),
            ..Collect::default()
        };
        poll_n(&mut *c, &mut got, 1);
        c.close().unwrap();
    }
    let stale = fs::read(&group_file).unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(committed(&log, "g", "t"), [Some(1)]);
        log.recreate_topic(&TopicSpec::new("t", 1), T).unwrap();
        send_to(&log, "t", 0, None, b"new");
    }
    fs::write(&group_file, stale).unwrap();
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(committed(&log, "g", "t"), [None]);
}

#[test]
fn every_fsync_policy_writes_before_send_returns_and_survives_reopening() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(20)),
        FsyncPolicy::Never,
    ] {
        let dir = TempDir::new("policy");
        let log = EmbeddedLog::open(dir.path(), policy).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        let created = log.syncs();
        let file = first_segment(dir.path(), "t", 0);
        let mut expected_len = 0;
        for i in 0..20 {
            let value = format!("value {i}");
            send_to(&log, "t", 0, Some(b"k"), value.as_bytes());
            expected_len += frame_len(Some(b"k"), value.as_bytes());
            assert_eq!(
                fs::metadata(&file).unwrap().len(),
                expected_len,
                "{policy:?}: record {i} is in the file when send returns"
            );
        }
        let appended = log.syncs() - created;
        match policy {
            FsyncPolicy::Always => assert!(appended >= 20, "{policy:?}: {appended} fsyncs"),
            FsyncPolicy::Interval(_) => {
                let deadline = Instant::now() + T;
                while log.syncs() == created {
                    assert!(Instant::now() < deadline, "the interval thread never ran");
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert!(
                    log.syncs() - created < 20,
                    "{policy:?}: not one fsync per append"
                );
            }
            FsyncPolicy::Never => assert_eq!(log.syncs(), 0, "{policy:?}"),
        }
        drop(log);
        let log = EmbeddedLog::open(dir.path(), policy).unwrap();
        let records = read_all(&log, "t");
        assert_eq!(records.len(), 20, "{policy:?}");
        assert_eq!(records[19].value, b"value 19");
    }
}

#[test]
fn a_quick_reopen_of_many_records() {
    const N: usize = 20_000;
    let dir = TempDir::new("many");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        let producer = log.producer(None).unwrap();
        let value = [b'v'; 90];
        for i in 0..N {
            let key = format!("{i:08}");
            producer
                .send(OutRecord::new("t", Some(key.as_bytes()), &value))
                .unwrap();
        }
    }
    let start = Instant::now();
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    let took = start.elapsed();
    assert_eq!(highs(&log, "t"), [N as i64]);
    let records = read_all(&log, "t");
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.key.as_deref() == Some(format!("{i:08}").as_bytes())));
    assert!(took < T, "reopening {N} records took {took:?}");
}

/// The environment variable that turns the next test into the child process
/// it starts.
const CHILD_DIR: &str = "RIFFLE_PERSIST_TEST_CHILD_DIR";

#[test]
fn a_killed_process_loses_nothing_acknowledged() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        // The child: append until killed, reporting what was acknowledged.
        let log = EmbeddedLog::open(&dir, FsyncPolicy::Never).unwrap();
        log.create_topic(&TopicSpec::new("t", 1), T).unwrap();
        let producer = log.producer(None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0u64.. {
            producer
                .send(OutRecord::new("t", None, i.to_string().as_bytes()))
                .unwrap();
            if (i + 1) % 500 == 0 {
                println!("acked {}", i + 1);
                assert!(Instant::now() < deadline, "never killed");
            }
        }
        unreachable!();
    }
    let dir = TempDir::new("killed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded::persist_tests::a_killed_process_loses_nothing_acknowledged",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse::<i64>().unwrap();
            if acked >= 5000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(acked >= 5000, "the child stopped early");

    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    let high = highs(&log, "t")[0];
    assert!(
        high >= acked,
        "{high} records survived, {acked} were acknowledged"
    );
    let records = read_all(&log, "t");
    assert!(records
        .iter()
        .all(|r| r.value == r.offset.to_string().as_bytes()));
}

#[test]
fn a_committed_transaction_survives_reopening_and_an_aborted_one_leaves_nothing() {
    use crate::TopicPartition;
    let dir = TempDir::new("txn");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
        log.create_topic(&TopicSpec::new("in", 1), T).unwrap();
        log.create_topic(&TopicSpec::new("out", 1), T).unwrap();
        send_to(&log, "in", 0, None, b"input");
        let mut c = log.consumer(&config("g", "in")).unwrap();
        poll_n(&mut *c, &mut Collect::default(), 1);
        let p = log.transactional_producer("tx", None).unwrap();
        p.begin().unwrap();
        p.send(OutRecord::new("out", Some(b"k"), b"aborted"))
            .unwrap();
        p.abort(T).unwrap();
        p.begin().unwrap();
        p.send(OutRecord::new("out", Some(b"k"), b"committed"))
            .unwrap();
        let offsets = [(TopicPartition::new("in", 0), 1)];
        p.commit(&offsets, &c.group().unwrap(), T).unwrap();
    }
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::default()).unwrap();
    let values: Vec<Vec<u8>> = read_all(&log, "out").into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"committed".to_vec()]);
    assert_eq!(committed(&log, "g", "in"), vec![Some(1)]);
}

/// Added partitions, topic configs, offsets set from outside the group and
/// the deletion of a group are all kept in the data directory.
#[test]
fn added_partitions_configs_set_offsets_and_deleted_groups_survive_reopening() {
    use crate::{TopicConfig, TopicPartition};
    let dir = TempDir::new("admin");
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Always).unwrap();
        let mut spec = TopicSpec::new("t", 1);
        spec.configs = vec![("cleanup.policy".into(), "compact".into())];
        log.create_topic(&spec, T).unwrap();
        log.add_partitions("t", 3, T).unwrap();
        send_to(&log, "t", 2, None, b"in the third");
        send_to(&log, "t", 0, None, b"in the first");
        let offsets = [
            (TopicPartition::new("t", 0), 1),
            (TopicPartition::new("t", 2), 0),
        ];
        log.set_group_offsets("kept", &offsets, T).unwrap();
        log.set_group_offsets("dropped", &offsets, T).unwrap();
        log.delete_group("dropped", T).unwrap();
    }
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(highs(&log, "t"), [1, 0, 1]);
    assert_eq!(
        log.topic_configs("t", T).unwrap(),
        [TopicConfig {
            name: "cleanup.policy".into(),
            value: "compact".into(),
            source: "topic".into(),
        }]
    );
    assert_eq!(committed(&log, "kept", "t"), [Some(1), None, Some(0)]);
    let names: Vec<String> = log
        .list_groups(T)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(
        log.delete_group("dropped", T),
        Err(Error::UnknownGroup("dropped".into()))
    );
    // The partitions added before reopening take appends after it.
    log.add_partitions("t", 4, T).unwrap();
    send_to(&log, "t", 3, None, b"in the fourth");
    assert_eq!(highs(&log, "t"), [1, 0, 1, 1]);
}

/// A data directory written before headers existed (format 1, made here
/// byte by byte as that version wrote it) opens with its records intact and
/// without headers; its topic is marked format 2 at once, so that a version
/// reading only format 1 refuses it rather than cutting off frames with
/// headers; records with headers then survive reopening.
#[test]
fn a_format_1_directory_reads_and_takes_records_with_headers() {
    let dir = TempDir::new("format1");
    let topic_dir = dir.path().join("topics/old");
    let partition = topic_dir.join("0");
    fs::create_dir_all(&partition).unwrap();
    fs::create_dir_all(dir.path().join("groups")).unwrap();
    fs::write(
        topic_dir.join("topic.json"),
        r#"{"format": 1, "id": 77, "partitions": 1, "configs": {}}"#,
    )
    .unwrap();
    let mut segment = format1_frame(Some(b"k"), b"first", 1_000);
    segment.extend(format1_frame(None, b"second", 2_000));
    fs::write(segment_path(&partition, 0), &segment).unwrap();

    let list = [
        Header::new("trace", Some(&b"t"[..])),
        Header::new("trace", None),
        Header::new("bin", Some(&[0xff, 0][..])),
    ];
    {
        let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        let records = read_all(&log, "old");
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.offset, r.key.clone(), r.value.clone(), r.timestamp))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some(b"k".to_vec()), b"first".to_vec(), Some(1_000)),
                (1, None, b"second".to_vec(), Some(2_000)),
            ]
        );
        assert!(records.iter().all(|r| r.headers.is_empty()));
        let meta = fs::read_to_string(topic_dir.join("topic.json")).unwrap();
        assert!(
            meta.contains("\"format\": 2") && meta.contains("\"id\": 77"),
            "{meta}"
        );
        log.producer(None)
            .unwrap()
            .send(OutRecord::new("old", None, b"third").with_headers(&list))
            .unwrap();
    }
    assert_eq!(
        &fs::read(segment_path(&partition, 0)).unwrap()[..segment.len()],
        &segment[..],
        "the old frames are left as they were"
    );
    let log = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap();
    let records = read_all(&log, "old");
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].value, b"third");
    assert_eq!(Headers::from(&records[2].headers), Headers::from(&list));
    let mut read = Vec::new();
    log.read_partition("old", 0, 0, false, T, &mut |r| {
        read.push(r.headers.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(read[..2], [Vec::new(), Vec::new()]);
    assert_eq!(read[2], records[2].headers);
}

/// A topic of a newer format than this version knows is refused with a
/// message naming the formats, not misread.
#[test]
fn a_newer_format_is_refused() {
    let dir = TempDir::new("format9");
    let topic_dir = dir.path().join("topics/new");
    fs::create_dir_all(topic_dir.join("0")).unwrap();
    fs::create_dir_all(dir.path().join("groups")).unwrap();
    fs::write(
        topic_dir.join("topic.json"),
        r#"{"format": 9, "id": 1, "partitions": 1}"#,
    )
    .unwrap();
    let err = EmbeddedLog::open(dir.path(), FsyncPolicy::Never).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { message: m, .. } if m.contains("format 9") && m.contains("formats 1 to 2")),
        "{err}"
    );
}
