//! Durable state on the embedded log: state restored after a restart (from
//! the changelog, or from a snapshot and the changelog's tail), state moving
//! between apps of one group, exactly-once outputs, and poison records.

mod conformance;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conformance::{eventually, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::{partition_for_key, ConsumerConfig, Log, OutRecord, RecordRef, TopicSpec};
use riffle::process::{App, Context, Guarantee, KeyedProcessor, Running, Style};
use riffle::stream::{Consumer, Producer};
use riffle::{Error, Result};

/// Counts records per key and says so: `<count>:<value>`. Panics on the
/// value `poison`, fails on `bad`.
#[derive(Clone, Default)]
struct Tally {
    calls: Arc<AtomicUsize>,
}

impl KeyedProcessor for Tally {
    type Input = String;
    type State = u64;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, String)> {
        let key = r.key_str().ok_or_else(|| Error::Decode("no key".into()))?;
        Ok((
            key.to_owned(),
            String::from_utf8_lossy(r.value).into_owned(),
        ))
    }

    fn process(&mut self, key: &str, v: &String, n: &mut u64, ctx: &mut Context<'_>) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match v.as_str() {
            "poison" => panic!("poisoned by {key}"),
            "bad" => Err(Error::Decode("bad value".into())),
            _ => {
                *n += 1;
                ctx.send("out", Some(key), format!("{n}:{v}").as_bytes())
            }
        }
    }
}

struct Setup {
    log: Arc<dyn Log>,
    group: String,
    producer: Producer,
}

fn setup(partitions: i32) -> Setup {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    log.create_topic(&TopicSpec::new("in", partitions), T)
        .unwrap();
    log.create_topic(&TopicSpec::new("out", partitions), T)
        .unwrap();
    let producer = Producer::new(&*log).unwrap();
    Setup {
        log,
        group: unique("tally"),
        producer,
    }
}

impl Setup {
    /// Sends `rounds` records to each of `keys` keys.
    fn feed(&self, keys: usize, rounds: usize) {
        for r in 0..rounds {
            for k in 0..keys {
                self.producer
                    .send(
                        "in",
                        Some(format!("k{k}").as_bytes()),
                        format!("v{r}").as_bytes(),
                    )
                    .unwrap();
            }
        }
    }

    fn app(&self, style: Style) -> App<Tally> {
        App::new(&self.group, &["in"], Tally::default())
            .style(style)
            .consumers(2)
            .dead_letter("in-dlq")
    }

    /// Waits until `n` outputs exist and returns them per key, in order.
    fn outputs(&self, n: usize) -> BTreeMap<String, Vec<u64>> {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut cfg = ConsumerConfig::new(unique("reader"), &["out"]);
        cfg.read_committed = true;
        let c = Consumer::spawn(self.log.clone(), cfg, move || {
            let s = s.clone();
            move |r: RecordRef<'_>| -> Result<()> {
                let v = String::from_utf8_lossy(r.value);
                let count = v.split_once(':').unwrap().0.parse::<u64>().unwrap();
                s.lock()
                    .unwrap()
                    .push((r.key_str().unwrap().to_owned(), count));
                Ok(())
            }
        })
        .unwrap();
        // Waits for `n`, then a little more for any extra; what arrived is
        // checked by the caller, which says what is missing.
        let deadline = std::time::Instant::now() + T;
        while seen.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        c.stop();
        c.join().unwrap();
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (k, c) in seen.lock().unwrap().iter() {
            per_key.entry(k.clone()).or_default().push(*c);
        }
        per_key
    }

    /// Waits until the group has committed every input record.
    fn wait_committed(&self) {
        eventually(T, "every input record committed", || {
            let ends = self.log.describe_topic("in", T).unwrap().partitions;
            let committed = self.log.committed_offsets(&self.group, "in", T).unwrap();
            ends.iter()
                .zip(&committed)
                .all(|(e, c)| c.committed.unwrap_or(0) >= e.high)
        });
    }

    fn wait_processed(&self, app: &Running, n: u64) {
        eventually(T, &format!("{n} records processed"), || {
            app.stats().processed.load(Ordering::Relaxed) >= n
        });
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("riffle-state"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every key counted 1..=n exactly once, in order.
fn assert_counts_exactly(per_key: &BTreeMap<String, Vec<u64>>, keys: usize, n: u64) {
    assert_eq!(per_key.len(), keys);
    for (k, counts) in per_key {
        let expected: Vec<u64> = (1..=n).collect();
        assert_eq!(counts, &expected, "counts of {k}");
    }
}

fn state_survives_restart(style: Style, guarantee: Guarantee) {
    let s = setup(4);
    s.feed(20, 5);
    let app = s
        .app(style)
        .guarantee(guarantee)
        .start(s.log.clone())
        .unwrap();
    s.wait_processed(&app, 100);
    app.stop().unwrap();
    // A new app of the same group: the state comes from the changelog.
    let app = s
        .app(style)
        .guarantee(guarantee)
        .start(s.log.clone())
        .unwrap();
    s.feed(20, 5);
    s.wait_processed(&app, 100);
    assert_eq!(app.stats().state.restores.load(Ordering::Relaxed), 4);
    assert_eq!(app.stats().state.restored_keys.load(Ordering::Relaxed), 20);
    app.stop().unwrap();
    assert_counts_exactly(&s.outputs(200), 20, 10);
}

#[test]
fn keyed_state_survives_a_restart() {
    state_survives_restart(Style::Keyed, Guarantee::AtLeastOnce);
}

#[test]
fn keyed_state_survives_a_restart_exactly_once() {
    state_survives_restart(Style::Keyed, Guarantee::ExactlyOnce);
}

#[test]
fn actors_state_survives_a_restart() {
    state_survives_restart(Style::Actors { workers: 3 }, Guarantee::AtLeastOnce);
}

#[test]
fn actors_state_survives_a_restart_exactly_once() {
    state_survives_restart(Style::Actors { workers: 3 }, Guarantee::ExactlyOnce);
}

#[test]
fn a_snapshot_spares_the_changelog_replay() {
    let s = setup(2);
    let dir = temp_dir();
    s.feed(50, 4);
    let app = s
        .app(Style::Keyed)
        .state_dir(&dir)
        .start(s.log.clone())
        .unwrap();
    s.wait_processed(&app, 200);
    app.stop().unwrap();
    let snapshots = std::fs::read_dir(dir.join(&s.group)).unwrap().count();
    assert_eq!(snapshots, 2, "one snapshot per partition on stop");

    let app = s
        .app(Style::Keyed)
        .state_dir(&dir)
        .start(s.log.clone())
        .unwrap();
    s.feed(50, 1);
    s.wait_processed(&app, 50);
    let stats = app.stats();
    assert_eq!(stats.state.restored_keys.load(Ordering::Relaxed), 50);
    assert_eq!(
        stats.state.changelog_replayed.load(Ordering::Relaxed),
        0,
        "everything came from the snapshots"
    );
    app.stop().unwrap();
    assert_counts_exactly(&s.outputs(250), 50, 5);

    // Without snapshots the whole changelog is read.
    let app = s.app(Style::Keyed).start(s.log.clone()).unwrap();
    s.feed(50, 1);
    s.wait_processed(&app, 50);
    assert!(app.stats().state.changelog_replayed.load(Ordering::Relaxed) >= 50);
    app.stop().unwrap();
    assert_counts_exactly(&s.outputs(300), 50, 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_moves_with_partitions_between_apps_of_a_group() {
    let s = setup(6);
    s.feed(30, 2);
    let first = s.app(Style::Keyed).start(s.log.clone()).unwrap();
    s.wait_processed(&first, 60);
    // A second app (as another process would) takes half the partitions
    // and restores their state from the changelog.
    let second = s.app(Style::Keyed).start(s.log.clone()).unwrap();
    eventually(T, "partitions shared by both apps", || {
        let n = |a: &Running| a.assignments().iter().map(|(_, p)| p.len()).sum::<usize>();
        n(&first) > 0 && n(&second) > 0 && n(&first) + n(&second) == 6
    });
    s.feed(30, 2);
    s.wait_committed();
    assert!(second.stats().state.restores.load(Ordering::Relaxed) > 0);
    // The first leaves: all partitions and their state go to the second.
    first.stop().unwrap();
    s.feed(30, 1);
    s.wait_committed();
    second.stop().unwrap();
    let per_key = s.outputs(150);
    // At-least-once may repeat outputs around the moves; the counts must
    // still reach 5 per key, in order, with nothing skipped.
    for (k, counts) in &per_key {
        let mut dedup = counts.clone();
        dedup.dedup();
        assert_eq!(dedup, vec![1, 2, 3, 4, 5], "counts of {k}: {counts:?}");
    }
    assert_eq!(per_key.len(), 30);
}

/// The input grows from 4 to 8 partitions between two batches of records:
/// every key's count goes on from where it was, in the partition the key
/// now hashes to, exactly once.
#[test]
fn state_follows_its_keys_when_the_input_gains_partitions() {
    grown(Style::Keyed);
}

#[test]
fn actors_state_follows_its_keys_when_the_input_gains_partitions() {
    grown(Style::Actors { workers: 3 });
}

fn grown(style: Style) {
    let s = setup(4);
    s.feed(40, 3);
    let app = s
        .app(style)
        .guarantee(Guarantee::ExactlyOnce)
        .start(s.log.clone())
        .unwrap();
    s.wait_processed(&app, 120);
    s.log.add_partitions("in", 8, T).unwrap();
    s.feed(40, 3);
    s.wait_committed();
    let owned = app
        .assignments()
        .iter()
        .map(|(_, p)| p.len())
        .sum::<usize>();
    app.stop().unwrap();
    assert_eq!(owned, 8, "the new partitions are consumed");
    assert_eq!(
        s.log
            .describe_topic(&format!("{}-changelog", s.group), T)
            .unwrap()
            .partitions
            .len(),
        8,
        "the changelog grows with the input"
    );
    assert_counts_exactly(&s.outputs(240), 40, 6);
    // A record written in the old layout after its key moved (by a
    // producer that missed the growth) is not counted on a stale state: it
    // goes to the dead letters with the reason.
    let moved = (0..40)
        .map(|k| format!("k{k}"))
        .find(|k| partition_for_key(k.as_bytes(), 4) != partition_for_key(k.as_bytes(), 8))
        .expect("a key that moved");
    let old = partition_for_key(moved.as_bytes(), 4);
    let late = s.log.producer(None).unwrap();
    late.send(OutRecord {
        partition: Some(old),
        ..OutRecord::new("in", Some(moved.as_bytes()), b"late")
    })
    .unwrap();
    late.flush(T).unwrap();
    // A restart finds the moves done: nothing is held, nothing moves again.
    let app = s
        .app(style)
        .guarantee(Guarantee::ExactlyOnce)
        .start(s.log.clone())
        .unwrap();
    s.feed(40, 1);
    s.wait_committed();
    app.stop().unwrap();
    assert_counts_exactly(&s.outputs(280), 40, 7);
    let mut reasons = Vec::new();
    for p in 0..4 {
        s.log
            .read_partition("in-dlq", p, 0, false, T, &mut |r| {
                let reason = r.headers.last("__riffle.errors.reason");
                reasons.push(reason.and_then(|h| h.value_str()).unwrap_or("").to_owned());
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("old partition layout"), "{reasons:?}");
}

#[test]
fn poison_records_do_not_stall_their_partition() {
    for style in [Style::Keyed, Style::Actors { workers: 2 }] {
        let s = setup(1);
        let tally = Tally::default();
        for i in 0..200 {
            let v = match i % 4 {
                1 => "poison",
                3 => "bad",
                _ => "ok",
            };
            s.producer
                .send("in", Some(format!("k{}", i % 3).as_bytes()), v.as_bytes())
                .unwrap();
        }
        let app = App::new(&s.group, &["in"], tally.clone())
            .style(style)
            .dead_letter("in-dlq")
            .retries(2)
            .start(s.log.clone())
            .unwrap();
        s.wait_processed(&app, 200);
        eventually(T, "dead letters", || {
            app.stats().dead_letters.load(Ordering::Relaxed) == 100
        });
        eventually(T, "all committed", || {
            s.log.committed_offsets(&s.group, "in", T).unwrap()[0].committed == Some(200)
        });
        // 100 good records once, 100 failing ones three times each.
        assert_eq!(tally.calls.load(Ordering::Relaxed), 100 + 100 * 3);
        app.stop().unwrap();
        let per_key = s.outputs(100);
        assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 100);
    }
}

/// A process keeping standby copies takes over a killed one's partitions
/// without reading their changelog again: its copies followed it. Without
/// them, the changelog is read.
#[test]
fn a_standby_copy_spares_a_takeover_the_changelog_replay() {
    for standby in [true, false] {
        let s = setup(4);
        s.feed(40, 3);
        let first = s.app(Style::Keyed).start(s.log.clone()).unwrap();
        s.wait_processed(&first, 120);
        let second = s
            .app(Style::Keyed)
            .standby(standby)
            .start(s.log.clone())
            .unwrap();
        let owned = |a: &Running| a.assignments().iter().map(|(_, p)| p.len()).sum::<usize>();
        eventually(T, "partitions shared by both apps", || {
            owned(&first) > 0 && owned(&second) > 0 && owned(&first) + owned(&second) == 4
        });
        s.feed(40, 2);
        s.wait_committed();
        // The copies follow the changelog in the background.
        std::thread::sleep(Duration::from_secs(2));
        let replayed = || {
            second
                .stats()
                .state
                .changelog_replayed
                .load(Ordering::Relaxed)
        };
        let before = replayed();
        first.kill().unwrap();
        eventually(T, "every partition with the second app", || {
            owned(&second) == 4
        });
        s.feed(40, 1);
        s.wait_committed();
        let read = replayed() - before;
        if standby {
            assert_eq!(read, 0, "the copies were up to date");
        } else {
            assert!(
                read >= 10,
                "the first app's partitions restored from their changelog: {read}"
            );
        }
        second.stop().unwrap();
        let per_key = s.outputs(240);
        for (k, counts) in &per_key {
            assert_eq!(counts, &vec![1, 2, 3, 4, 5, 6], "counts of {k}");
        }
        assert_eq!(per_key.len(), 40);
    }
}

/// An app killed while its consumers are given each other's partitions as
/// it goes down: none waits for a partition its killed sibling never hands
/// over (it used to, for the session timeout, and was evicted), so the
/// kill returns at once and without an error.
#[test]
fn a_killed_app_stops_at_once() {
    for style in [Style::Keyed, Style::Actors { workers: 2 }] {
        for _ in 0..2 {
            let s = setup(4);
            s.feed(40, 2);
            let first = s.app(style).start(s.log.clone()).unwrap();
            s.wait_processed(&first, 80);
            let second = s.app(style).start(s.log.clone()).unwrap();
            let owned = |a: &Running| a.assignments().iter().map(|(_, p)| p.len()).sum::<usize>();
            eventually(T, "partitions shared by both apps", || {
                owned(&first) > 0 && owned(&second) > 0 && owned(&first) + owned(&second) == 4
            });
            s.feed(40, 1);
            s.wait_committed();
            let started = std::time::Instant::now();
            first.kill().unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{style:?}: the kill took {:?}",
                started.elapsed()
            );
            second.stop().unwrap();
        }
    }
}
