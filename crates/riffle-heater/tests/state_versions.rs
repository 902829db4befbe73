//! The controller's state across a change of its type, on the embedded log
//! (this is the state layer's behaviour, not Kafka's): a changelog written
//! by the previous controller (state version 0) restores through the
//! upgrade, a damaged state goes to the dead-letter topic with its key and
//! the reason while its heater starts afresh, and the partitions go on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::{partition_for_key, ConsumerConfig, Log, OutRecord, RecordRef, TopicSpec};
use riffle::process::{dead_letter, App, Guarantee, Running, Style};
use riffle::stream::{Consumer, Producer};
use riffle_heater::controller::{v0, Controller, ControllerState};
use riffle_heater::messages::{measurement_json, setting_json, Command, Setting};

const T: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 4;

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Records = Vec<(String, Vec<u8>)>;

/// Every committed record of `topic` once there are `n`, and a while
/// longer (so that one too many would show), as (key, value).
fn read_all(log: &Arc<dyn Log>, topic: &str, n: usize) -> Records {
    read_until(log, topic, |r| r.len() >= n)
}

fn read_until(log: &Arc<dyn Log>, topic: &str, done: impl Fn(&Records) -> bool) -> Records {
    let seen: Arc<Mutex<Records>> = Arc::default();
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(format!("read-{topic}-{}", fastrand::u32(..)), &[topic]);
    cfg.read_committed = true;
    let c = Consumer::spawn(log.clone(), cfg, move || {
        let s = s.clone();
        move |r: RecordRef<'_>| -> riffle::Result<()> {
            let key = r.key_str().unwrap_or_default().to_owned();
            s.lock().unwrap().push((key, r.value.to_vec()));
            Ok(())
        }
    })
    .unwrap();
    eventually(&format!("the records awaited on {topic}"), || {
        done(&seen.lock().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    c.stop();
    c.join().unwrap();
    let v = seen.lock().unwrap().clone();
    v
}

fn setting(temperature: f64) -> Setting {
    Setting {
        temperature,
        up_delta: 1.0,
        down_delta: 1.0,
    }
}

struct Run {
    log: Arc<dyn Log>,
    changelog: String,
    app: Running,
}

/// A changelog as the previous controller left it: heater `old-N`'s state
/// at version 0 (setting 45, heater ON), and `broken`'s damaged, then an
/// app of the new controller over it.
fn start(style: Style, guarantee: Guarantee, heaters: usize) -> Run {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    let group = format!("ctl-{}", fastrand::u32(..));
    let changelog = format!("{group}-changelog");
    for t in ["sensor", "heatercontrol", &changelog] {
        log.create_topic(&TopicSpec::new(t, PARTITIONS), T).unwrap();
    }
    let p = Producer::new(&*log).unwrap();
    let write = |key: &str, value: &[u8]| {
        let partition = partition_for_key(key.as_bytes(), PARTITIONS);
        p.send_record(OutRecord {
            partition: Some(partition),
            ..OutRecord::new(&changelog, Some(key.as_bytes()), value)
        })
        .unwrap();
    };
    for h in 0..heaters {
        let old = v0::ControllerState {
            setting: Some(setting(45.0)),
            last_command: Some(Command::On),
        };
        write(&format!("old-{h}"), &serde_json::to_vec(&old).unwrap());
    }
    write("broken", br#"{"setting": {"temperature": 45"#);
    let app = App::new(&group, &["sensor"], Controller::new("heatercontrol"))
        .style(style)
        .guarantee(guarantee)
        .dead_letter("sensor-dlq")
        .start(log.clone())
        .unwrap();
    Run {
        log,
        changelog,
        app,
    }
}

fn check(style: Style, guarantee: Guarantee) {
    let heaters = 20;
    let run = start(style, guarantee, heaters);
    let (log, app) = (&run.log, &run.app);
    let p = Producer::new(&**log).unwrap();
    // Above 45 + 1: OFF, for a heater whose setting survived the change
    // (last sent ON). A heater without one ignores measurements.
    for h in 0..heaters {
        p.send(
            "sensor",
            Some(format!("old-{h}").as_bytes()),
            &measurement_json(47.0),
        )
        .unwrap();
    }
    p.send("sensor", Some(b"broken"), &measurement_json(30.0))
        .unwrap();
    p.send("sensor", Some(b"broken"), &setting_json(&setting(40.0)))
        .unwrap();
    p.send("sensor", Some(b"broken"), &measurement_json(30.0))
        .unwrap();
    let control = read_all(log, "heatercontrol", heaters + 1);
    let mut commands: BTreeMap<String, Vec<Command>> = BTreeMap::new();
    for (k, v) in &control {
        commands
            .entry(k.clone())
            .or_default()
            .push(Command::from_json(v).unwrap());
    }
    assert_eq!(
        commands.len(),
        heaters + 1,
        "{style:?} {guarantee:?}: {commands:?}"
    );
    for h in 0..heaters {
        assert_eq!(commands[&format!("old-{h}")], [Command::Off], "{style:?}");
    }
    assert_eq!(
        commands["broken"],
        [Command::On],
        "{style:?}: the damaged heater started afresh (its first measurement ignored)"
    );

    let dead = read_all(log, "sensor-dlq", 1);
    assert_eq!(
        dead.len(),
        1,
        "{style:?}: the damaged state, once: {dead:?}"
    );
    let (key, letter) = &dead[0];
    assert_eq!(key, "broken");
    let v: serde_json::Value = serde_json::from_slice(letter).unwrap();
    assert_eq!(v["topic"], run.changelog.as_str());
    assert_eq!(v["key"], "broken");
    assert_eq!(
        v["value"], r#"{"setting": {"temperature": 45"#,
        "the raw bytes"
    );
    assert!(v["offset"].is_i64(), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("does not decode"), "{error}");
    assert!(error.contains("starts afresh"), "{error}");

    let stats = &app.stats().state;
    assert_eq!(stats.upgraded.load(Ordering::Relaxed), heaters as u64);
    assert_eq!(stats.damaged.load(Ordering::Relaxed), 1);
    assert_eq!(app.stats().dead_letters.load(Ordering::Relaxed), 1);

    // The states are written back at version 1, the broken one afresh.
    let latest =
        |records: &Records| -> BTreeMap<String, Vec<u8>> { records.iter().cloned().collect() };
    let changelog = read_until(log, &run.changelog, |r| {
        let l = latest(r);
        l.len() == heaters + 1
            && l.values().all(|v| v.starts_with(b"@1 "))
            && l["broken"].ends_with(b"\"last_command\":0}")
    });
    let latest = latest(&changelog);
    let old = &latest["old-0"];
    assert!(old.starts_with(b"@1 "), "{}", String::from_utf8_lossy(old));
    let state: ControllerState = serde_json::from_slice(&old[3..]).unwrap();
    // Upgraded states are written back only when they change; the damaged
    // one at once, then as it changes (up to twice more).
    let written = changelog.len() - (heaters + 1);
    assert!((heaters + 1..=heaters + 3).contains(&written), "{written}");
    assert_eq!(state.last_command, Some(Command::Off));
    assert_eq!(state.setting, Some(setting(45.0)));
    let broken: ControllerState = serde_json::from_slice(&latest["broken"][3..]).unwrap();
    assert_eq!(broken.setting, Some(setting(40.0)));
    let Run { app, .. } = run;
    app.stop().unwrap();
}

#[test]
fn keyed_state_of_the_previous_type_restores_through_the_upgrade() {
    check(Style::Keyed, Guarantee::AtLeastOnce);
}

#[test]
fn actors_state_of_the_previous_type_restores_through_the_upgrade() {
    check(Style::Actors { workers: 3 }, Guarantee::AtLeastOnce);
}

#[test]
fn upgrades_and_damaged_states_under_exactly_once() {
    check(Style::Keyed, Guarantee::ExactlyOnce);
    check(Style::Actors { workers: 3 }, Guarantee::ExactlyOnce);
}

/// The dead letter's headers say where the damaged state was.
#[test]
fn a_damaged_states_dead_letter_names_the_changelog_in_its_headers() {
    let run = start(Style::Keyed, Guarantee::AtLeastOnce, 1);
    let seen: Arc<Mutex<Vec<Vec<riffle::log::OwnedHeader>>>> = Arc::default();
    let s = seen.clone();
    let c = Consumer::spawn(
        run.log.clone(),
        ConsumerConfig::new("read-headers", &["sensor-dlq"]),
        move || {
            let s = s.clone();
            move |r: RecordRef<'_>| -> riffle::Result<()> {
                s.lock().unwrap().push(r.headers.to_vec());
                Ok(())
            }
        },
    )
    .unwrap();
    eventually("a dead letter", || !seen.lock().unwrap().is_empty());
    c.stop();
    c.join().unwrap();
    let headers = seen.lock().unwrap()[0].clone();
    let h = riffle::log::Headers::from(&headers);
    let value = |name| h.last(name).and_then(|h| h.value_str());
    assert_eq!(
        value(dead_letter::TOPIC_HEADER),
        Some(run.changelog.as_str())
    );
    assert!(value(dead_letter::OFFSET_HEADER).is_some());
    assert!(value(dead_letter::REASON_HEADER).is_some_and(|r| r.contains("does not decode")));
    run.app.stop().unwrap();
}

/// Rewrites snapshot `path` (format in `riffle::state::snapshot`) with the
/// JSON of `key`'s state cut short; the checksum stays right, so only that
/// state is damaged.
fn damage_in_snapshot(path: &std::path::Path, key: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    let (offset, count) = (u64_at(8) as i64, u64_at(16) as usize);
    let mut at = 24;
    let mut field = || {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + n;
        bytes[at - n..at].to_vec()
    };
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..count).map(|_| (field(), field())).collect();
    let mut w = riffle::state::SnapshotWriter::create(path, offset, count).unwrap();
    let mut damaged = None;
    for (k, mut v) in entries {
        if k == key.as_bytes() {
            let json = v.windows(3).position(|w| w == b"@1 ").unwrap() + 3;
            v.truncate(json);
            v.extend_from_slice(br#"{"setting": {"temperature": 4"#);
            damaged = Some(v[json - 3..].to_vec());
        }
        w.entry(std::str::from_utf8(&k).unwrap(), &v).unwrap();
    }
    w.finish().unwrap();
    damaged.expect("the key is in the snapshot")
}

/// A snapshot's states are decoded as their keys are first used: one that
/// does not decode then goes to the dead-letter topic, its heater starts
/// afresh, and the others keep theirs.
fn damaged_in_a_snapshot(style: Style) {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    let group = format!("ctl-{}", fastrand::u32(..));
    for t in ["sensor", "heatercontrol", &format!("{group}-changelog")] {
        log.create_topic(&TopicSpec::new(t, PARTITIONS), T).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("riffle-lazy-{}", fastrand::u64(..)));
    let app = || {
        App::new(&group, &["sensor"], Controller::new("heatercontrol"))
            .style(style)
            .dead_letter("sensor-dlq")
            .state_dir(&dir)
            .start(log.clone())
            .unwrap()
    };
    let p = Producer::new(&*log).unwrap();
    let send = |key: &str, value: &[u8]| p.send("sensor", Some(key.as_bytes()), value).unwrap();
    let first = app();
    for key in ["good", "broken"] {
        send(key, &setting_json(&setting(40.0)));
        send(key, &measurement_json(30.0));
    }
    read_all(&log, "heatercontrol", 2);
    first.stop().unwrap();

    let partition = partition_for_key(b"broken", PARTITIONS);
    let path = dir.join(&group).join(format!("{partition}.snapshot"));
    let damaged = damage_in_snapshot(&path, "broken");

    let second = app();
    // Above 40 + 1: OFF for a heater that kept its setting; ignored by one
    // that starts afresh, until it is given a setting again.
    send("good", &measurement_json(47.0));
    send("broken", &measurement_json(47.0));
    send("broken", &setting_json(&setting(40.0)));
    send("broken", &measurement_json(47.0));
    let mut commands: BTreeMap<String, Vec<Command>> = BTreeMap::new();
    for (k, v) in read_all(&log, "heatercontrol", 4) {
        commands
            .entry(k)
            .or_default()
            .push(Command::from_json(&v).unwrap());
    }
    assert_eq!(commands["good"], [Command::On, Command::Off], "{style:?}");
    assert_eq!(commands["broken"], [Command::On, Command::Off], "{style:?}");

    let dead = read_all(&log, "sensor-dlq", 1);
    assert_eq!(dead.len(), 1, "{style:?}: {dead:?}");
    assert_eq!(dead[0].0, "broken");
    let v: serde_json::Value = serde_json::from_slice(&dead[0].1).unwrap();
    assert_eq!(
        v["value"].as_str().unwrap().as_bytes(),
        damaged,
        "the raw bytes"
    );
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("does not decode"), "{error}");
    assert!(error.contains("starts afresh"), "{error}");
    assert_eq!(second.stats().dead_letters.load(Ordering::Relaxed), 1);
    assert_eq!(second.stats().state.damaged.load(Ordering::Relaxed), 1);
    second.stop().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keyed_a_damaged_state_in_a_snapshot_is_dead_lettered_at_its_first_use() {
    damaged_in_a_snapshot(Style::Keyed);
}

#[test]
fn actors_a_damaged_state_in_a_snapshot_is_dead_lettered_at_its_first_use() {
    damaged_in_a_snapshot(Style::Actors { workers: 3 });
}
