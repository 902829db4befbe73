//! The changelog: a compacted topic with the input's partition count, to
//! which each key's latest state is written, keyed by the key, as JSON, in
//! the partition of the input partition it belongs to. Writes are batched:
//! a key changed many times between two commits is written once. Whoever
//! owns the partition next, in this process or another, rebuilds its store
//! from its snapshot, if any, and the changelog written after it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{changelog_record, ChangelogSink, Encoded, Store};
use crate::version::Upgrade;
use riffle_base::error::Result;
use riffle_log::{Log, RecordRef};

/// How long a changelog read may see nothing before restoring fails.
const RESTORE_IDLE: Duration = Duration::from_secs(60);
/// How often a long restore reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What restoring did, counted for a process's metrics.
#[derive(Debug, Default)]
pub struct RestoreStats {
    /// Partition states restored (on assignment, when not handed over by
    /// another consumer of this process).
    pub restores: AtomicU64,
    /// Keys whose state was restored.
    pub restored_keys: AtomicU64,
    /// Changelog records read while restoring (what snapshots save),
    /// counted as they are read.
    pub changelog_replayed: AtomicU64,
    /// Partition states being restored now.
    pub restoring: AtomicU64,
    /// Stored states of an older version upgraded while restoring.
    pub upgraded: AtomicU64,
    /// Stored states that did not decode while restoring: set aside, and
    /// their keys started afresh.
    pub damaged: AtomicU64,
}

/// Counts a restore under way for as long as it lives, however it ends.
struct Restoring<'a>(&'a AtomicU64);

impl<'a> Restoring<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Changed states of some partitions, encoded: (partition, keys and states).
pub type Changes = Vec<(i32, Encoded)>;

/// Sends `changes` to their partitions of the changelog; on failure, what
/// was not sent stays in `changes` for another attempt.
pub fn send_changes(
    producer: &dyn ChangelogSink,
    changelog: &str,
    changes: &mut Changes,
) -> Result<usize> {
    let mut sent = 0;
    while let Some((partition, entries)) = changes.last_mut() {
        while let Some((key, value)) = entries.last() {
            producer.send(changelog_record(changelog, *partition, key, value))?;
            entries.pop();
            sent += 1;
        }
        changes.pop();
    }
    Ok(sent)
}

/// The most partitions restored at once (see [`Durability::restore_all`]).
const RESTORE_THREADS: usize = 4;

/// Where one partition's restore starts.
// One per partition restored: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum RestoreFrom<S> {
    /// Its local snapshot, if any, then the changelog after it.
    Snapshot,
    /// A store that reflects the changelog up to `offset` (one handed over
    /// inside the process), then the changelog after it.
    Store { store: Store<S>, offset: i64 },
}

/// Where a partition's state is made durable.
pub struct Durability {
    pub log: Arc<dyn Log>,
    pub changelog: String,
    /// `<state dir>/<group>`, when snapshots are kept.
    pub snapshots: Option<PathBuf>,
    pub read_committed: bool,
}

impl Durability {
    pub fn snapshot_path(&self, partition: i32) -> Option<PathBuf> {
        self.snapshots
            .as_ref()
            .map(|d| d.join(format!("{partition}.snapshot")))
    }

    /// Rebuilds partition `p`'s store: its snapshot, if any, then the
    /// changelog written after it, upgrading older states with `upgrade`.
    /// States that do not decode are set aside in the store
    /// ([`Store::take_damaged`]); only a state of a newer version than
    /// `upgrade`'s fails the restore.
    pub fn restore<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        end: i64,
        stats: &RestoreStats,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<Store<S>> {
        let start = Instant::now();
        let snapshot = match self
            .snapshot_path(partition)
            .as_deref()
            .map(|path| Store::load_snapshot(path, upgrade))
        {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("{e}; restoring from the changelog alone");
                None
            }
            None => None,
        };
        let loaded = snapshot.as_ref().map(|_| start.elapsed());
        let (store, from) = snapshot.unwrap_or_else(|| (Store::new(upgrade.version()), 0));
        self.catch_up(partition, store, from, end, stats, loaded, upgrade)
    }

    /// Brings `store`, which reflects the changelog of `partition` up to
    /// offset `from`, up to date by reading the rest of the changelog, up
    /// to `end`. Reports progress while it runs.
    pub fn restore_from<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        store: Store<S>,
        from: i64,
        end: i64,
        stats: &RestoreStats,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<Store<S>> {
        self.catch_up(partition, store, from, end, stats, None, upgrade)
    }

    /// Restores several partitions at once, each up to its end in `ends`
    /// (missing: 0), on up to [`RESTORE_THREADS`] threads and no more than
    /// the machine has cores: a restore is mostly decoding (a snapshot's
    /// states, the changelog's records) and waiting for the broker, so a
    /// consumer given many partitions at once (a whole process's after a
    /// failover) resumes several times sooner than restoring them one after
    /// the other. `upgrader` makes one [`Upgrade`] per thread. Returns each
    /// partition's store or why it could not be restored, in no particular
    /// order.
    pub fn restore_all<S, U>(
        &self,
        partitions: Vec<(i32, RestoreFrom<S>)>,
        ends: &HashMap<i32, i64>,
        stats: &RestoreStats,
        mut upgrader: impl FnMut() -> U,
    ) -> Vec<(i32, Result<Store<S>>)>
    where
        S: Default + Serialize + DeserializeOwned + Send,
        U: Upgrade<S> + Send,
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = partitions.len().min(cores).min(RESTORE_THREADS);
        let restore = |(p, from): (i32, RestoreFrom<S>), upgrade: &U| {
            let end = ends.get(&p).copied().unwrap_or(0);
            let store = match from {
                RestoreFrom::Snapshot => self.restore(p, end, stats, upgrade),
                RestoreFrom::Store { store, offset } => {
                    self.restore_from(p, store, offset, end, stats, upgrade)
                }
            };
            (p, store)
        };
        if threads <= 1 {
            let upgrade = upgrader();
            return partitions
                .into_iter()
                .map(|job| restore(job, &upgrade))
                .collect();
        }
        let started = Instant::now();
        let count = partitions.len();
        let queue = std::sync::Mutex::new(partitions);
        let done = std::sync::Mutex::new(Vec::with_capacity(count));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let upgrade = upgrader();
                let (queue, done, restore) = (&queue, &done, &restore);
                scope.spawn(move || loop {
                    // Taken one at a time, so that a large partition does
                    // not hold back the small ones queued behind it.
                    let Some(job) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let restored = restore(job, &upgrade);
                    done.lock().unwrap().push(restored);
                });
            }
        });
        tracing::info!(
            "restored {count} partitions of {} on {threads} threads in {:.2?}",
            self.changelog,
            started.elapsed()
        );
        done.into_inner().unwrap()
    }

    /// The changelog's end offset per partition.
    pub fn ends(&self) -> Result<HashMap<i32, i64>> {
        let info = self
            .log
            .describe_topic(&self.changelog, Duration::from_secs(30))?;
        Ok(info.partitions.iter().map(|p| (p.id, p.high)).collect())
    }

    /// [`Durability::ends`] where doing without is possible (a snapshot or
    /// a handover skipped): a failure is logged.
    pub fn ends_or_warn(&self) -> Option<HashMap<i32, i64>> {
        self.ends()
            .map_err(|e| tracing::warn!("cannot read the end of changelog {}: {e}", self.changelog))
            .ok()
    }

    /// [`Durability::restore_from`], for a restore that spent `loaded`
    /// reading a snapshot first.
    #[allow(clippy::too_many_arguments)]
    fn catch_up<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        mut store: Store<S>,
        from: i64,
        end: i64,
        stats: &RestoreStats,
        loaded: Option<Duration>,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<Store<S>> {
        let start = Instant::now();
        let changelog = &self.changelog;
        let from = if from > end {
            // The changelog was recreated since: the store is of no use.
            tracing::warn!(
                "state of {changelog}/{partition} is ahead of the changelog ({from} > {end}); restoring it afresh"
            );
            store = Store::new(upgrade.version());
            0
        } else {
            from
        };
        let kept = store.len();
        let total = end - from;
        let mut read = 0u64;
        let mut last_report = Instant::now();
        let _restoring = Restoring::new(&stats.restoring);
        let mut visit = |r: RecordRef<'_>| {
            read += 1;
            // Counted as read, so that a long restore shows its progress.
            stats.changelog_replayed.fetch_add(1, Ordering::Relaxed);
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                tracing::info!(
                    "restoring {changelog}/{partition}: {read} of about {total} changelog records"
                );
            }
            match r.key {
                Some(k) => store.apply(k, r.value, Some((partition, r.offset)), upgrade),
                None => Ok(()),
            }
        };
        // Nothing written since: no need for a reader (on Kafka, a client
        // of its own, which costs round trips to the broker).
        if from < end {
            let rc = self.read_committed;
            self.log
                .read_partition(changelog, partition, from, rc, RESTORE_IDLE, &mut visit)?;
        }
        stats.restores.fetch_add(1, Ordering::Relaxed);
        stats
            .restored_keys
            .fetch_add(store.len() as u64, Ordering::Relaxed);
        let upgraded = std::mem::take(&mut store.upgraded);
        stats.upgraded.fetch_add(upgraded as u64, Ordering::Relaxed);
        let damaged = store.damaged().len();
        stats.damaged.fetch_add(damaged as u64, Ordering::Relaxed);
        if upgraded > 0 {
            tracing::info!(
                "{changelog}/{partition}: {upgraded} states upgraded to version {}",
                store.version()
            );
        }
        if let Some(d) = store.damaged().first() {
            tracing::warn!(
                "{changelog}/{partition}: {damaged} stored states do not decode (the first, of '{}': {}); their keys start afresh",
                String::from_utf8_lossy(&d.key),
                d.reason
            );
        }
        let snapshot = match loaded {
            Some(d) => format!(" read in {d:.2?}"),
            None => String::new(),
        };
        tracing::info!(
            "restored {changelog}/{partition}: {} keys ({kept} from a snapshot{snapshot}, {read} changelog records) in {:.2?}",
            store.len(),
            start.elapsed() + loaded.unwrap_or_default()
        );
        Ok(store)
    }
}

/// The changelog's end offsets, for restoring partitions assigned now.
/// Restoring without them would be guessing: a failure here is a panic
/// that makes the consumer start over after a backoff.
pub fn restore_point(d: &Durability) -> HashMap<i32, i64> {
    d.ends().unwrap_or_else(|e| {
        panic!(
            "cannot read the end of changelog {} to restore state: {e}",
            d.changelog
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{StoredState, Unversioned};
    use riffle_log::embedded::EmbeddedLog;
    use riffle_log::TopicSpec;

    /// Version 1 counts in a `u64`; version 0 stored `{"count": n}`.
    struct V1;
    impl Upgrade<u64> for V1 {
        fn version(&self) -> u32 {
            1
        }
        fn upgrade(&self, old: StoredState<'_>) -> Result<u64> {
            #[derive(serde::Deserialize)]
            struct V0 {
                count: u64,
            }
            match old.version {
                0 => Ok(old.decode::<V0>()?.count),
                _ => Err(old.unknown()),
            }
        }
    }

    fn durability(records: &[(&str, &[u8])]) -> Durability {
        let log = EmbeddedLog::new();
        let t = Duration::from_secs(5);
        log.create_topic(&TopicSpec::new("cl", 1), t).unwrap();
        let p = log.producer(None).unwrap();
        for (k, v) in records {
            p.send(riffle_log::OutRecord {
                partition: Some(0),
                ..riffle_log::OutRecord::new("cl", Some(k.as_bytes()), v)
            })
            .unwrap();
        }
        Durability {
            log: Arc::new(log),
            changelog: "cl".into(),
            snapshots: None,
            read_committed: false,
        }
    }

    #[test]
    fn a_restore_upgrades_old_states_and_sets_damaged_ones_aside() {
        let d = durability(&[
            ("old", br#"{"count": 4}"#),
            ("new", b"@1 9"),
            ("bad", b"@1 {not json"),
            ("fixed", b"@1 [oops"),
            ("fixed", b"@1 3"),
            ("broke", b"@1 2"),
            ("broke", br#"{"cnt": 1}"#),
        ]);
        let stats = RestoreStats::default();
        let mut store = d.restore::<u64>(0, 7, &stats, &V1).unwrap();
        assert_eq!(store.get("old"), Some(&4), "upgraded from version 0");
        assert_eq!(store.get("new"), Some(&9));
        assert_eq!(
            store.get("fixed"),
            Some(&3),
            "a later good state supersedes"
        );
        assert_eq!(store.get("bad"), None);
        assert_eq!(store.get("broke"), None);
        assert_eq!(stats.upgraded.load(Ordering::Relaxed), 1);
        assert_eq!(stats.damaged.load(Ordering::Relaxed), 2);
        let damaged = store.take_damaged();
        let keys: Vec<&[u8]> = damaged.iter().map(|d| &d.key[..]).collect();
        assert_eq!(keys, [&b"bad"[..], b"broke"]);
        assert_eq!(damaged[0].value, b"@1 {not json");
        assert_eq!(damaged[0].position, Some((0, 2)));
        assert!(
            damaged[1].reason.contains("upgrade from version 0"),
            "{}",
            damaged[1].reason
        );
        assert!(store.take_damaged().is_empty());
        // Written back at the current version.
        *store.get_mut("old") += 1;
        let changes = store.take_changes().unwrap();
        assert_eq!(changes.last(), Some(("old", &b"@1 5"[..])));
    }

    #[test]
    fn partitions_restored_together_match_those_restored_alone() {
        let log = EmbeddedLog::new();
        let t = Duration::from_secs(5);
        log.create_topic(&TopicSpec::new("cl4", 4), t).unwrap();
        let p = log.producer(None).unwrap();
        // Every key written twice, so the restore must keep the later.
        for round in 0..2u64 {
            for k in 0..2000u64 {
                let (key, value) = (format!("k{k}"), format!("@1 {}", k * 10 + round));
                p.send(riffle_log::OutRecord {
                    partition: Some((k % 4) as i32),
                    ..riffle_log::OutRecord::new("cl4", Some(key.as_bytes()), value.as_bytes())
                })
                .unwrap();
            }
        }
        p.flush(t).unwrap();
        let d = Durability {
            log: Arc::new(log),
            changelog: "cl4".into(),
            snapshots: None,
            read_committed: false,
        };
        let ends = d.ends().unwrap();
        assert_eq!(ends.values().sum::<i64>(), 4000);
        // Partition 3 starts from a store said to reflect the first half of
        // its changelog, as after a handover: only the second half (every
        // key of the partition again) is read.
        let alone = RestoreStats::default();
        let half = Store::<u64>::new(1);
        let jobs = vec![
            (0, RestoreFrom::Snapshot),
            (1, RestoreFrom::Snapshot),
            (2, RestoreFrom::Snapshot),
            (
                3,
                RestoreFrom::Store {
                    store: half,
                    offset: 500,
                },
            ),
        ];
        let stats = RestoreStats::default();
        let mut made = 0;
        let restored = d.restore_all(jobs, &ends, &stats, || {
            made += 1;
            V1
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(made, cores.clamp(1, 4), "one upgrader per thread");
        let mut partitions: Vec<i32> = restored.iter().map(|(p, _)| *p).collect();
        partitions.sort_unstable();
        assert_eq!(partitions, [0, 1, 2, 3]);
        for (p, store) in restored {
            let mut store = store.unwrap();
            let mut each = d.restore::<u64>(p, ends[&p], &alone, &V1).unwrap();
            assert_eq!(store.len(), 500, "partition {p}");
            for k in (p as u64..2000).step_by(4) {
                let key = format!("k{k}");
                assert_eq!(store.get(&key), Some(&(k * 10 + 1)), "{key}");
                assert_eq!(store.get(&key).copied(), each.get(&key).copied());
            }
        }
        assert_eq!(stats.restores.load(Ordering::Relaxed), 4);
        assert_eq!(stats.restored_keys.load(Ordering::Relaxed), 2000);
        // Partition 3 read only the half its store did not reflect.
        assert_eq!(
            stats.changelog_replayed.load(Ordering::Relaxed),
            3 * 1000 + 500
        );
    }

    #[test]
    fn a_state_of_a_newer_version_fails_the_restore() {
        let d = durability(&[("k", b"1"), ("k2", b"@1 2")]);
        let e = d
            .restore::<u64>(0, 2, &RestoreStats::default(), &Unversioned)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("version 1, newer than this program's 0"),
            "{e}"
        );
    }

    #[test]
    fn snapshots_carry_versions_and_set_damaged_entries_aside() {
        let dir = std::env::temp_dir().join(format!("riffle-versions-{}", fastrand::u64(..)));
        let path = dir.join("0.snapshot");
        let mut w = crate::SnapshotWriter::create(&path, 3, 3).unwrap();
        w.entry("old", br#"{"count": 2}"#).unwrap();
        w.entry("cur", b"@1 5").unwrap();
        w.entry("bad", b"@1 x").unwrap();
        w.finish().unwrap();
        let (mut store, offset) = Store::<u64>::load_snapshot(&path, &V1).unwrap().unwrap();
        assert_eq!(offset, 3);
        // The states of the current version are decoded when first used:
        // the damaged one shows then.
        assert!(store.damaged().is_empty());
        assert_eq!(store.get("old"), Some(&2));
        assert_eq!(store.get("cur"), Some(&5));
        assert_eq!(store.get("bad"), None);
        let damaged = store.take_damaged();
        assert_eq!((damaged.len(), damaged[0].position), (1, None));
        store.save_snapshot(&path, 4).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.windows(4).any(|w| w == b"@1 2"),
            "saved at the current version"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sink straight into the embedded log.
    struct Direct(Box<dyn riffle_log::LogProducer>);
    impl ChangelogSink for Direct {
        fn send(&self, record: riffle_log::OutRecord<'_>) -> Result<()> {
            self.0.send(record)
        }
    }

    #[test]
    fn timers_and_deletions_survive_a_restore_and_a_snapshot() {
        use crate::{Domain, Key, Time, Timer, TimerChange};
        let d = durability(&[]);
        let sink = Direct(d.log.producer(None).unwrap());
        let set = |name: &str, at| {
            TimerChange::Set(Timer {
                name: Key::new(name),
                at,
            })
        };
        let mut store: Store<u64> = Store::new(0);
        *store.get_mut("a") = 1;
        *store.get_mut("b") = 2;
        *store.get_mut("gone") = 3;
        store.change_timers(
            "a",
            [set("w", Time::Processing(50)), set("x", Time::Event(7))],
        );
        store.change_timers("b", [set("w", Time::Processing(40))]);
        store.change_timers("b", [TimerChange::Cancel(Key::new("w"))]);
        store.change_timers("c", [set("w", Time::Processing(10))]);
        assert_eq!(store.write_changes(&sink, "cl", 0).unwrap(), 4);
        assert_eq!(store.remove("gone"), Some(3));
        assert_eq!(store.remove("never"), None);
        assert_eq!(
            store.write_changes(&sink, "cl", 0).unwrap(),
            1,
            "a tombstone"
        );

        let stats = RestoreStats::default();
        let mut restored = d.restore::<u64>(0, 5, &stats, &Unversioned).unwrap();
        assert_eq!(restored.len(), 3);
        assert_eq!(restored.get("gone"), None, "deleted by its tombstone");
        assert_eq!(restored.timer_count(), 3);
        assert_eq!(restored.next_due(Domain::Processing), Some(10));
        assert_eq!(restored.next_due(Domain::Event), Some(7));
        let due: Vec<String> = std::iter::from_fn(|| restored.pop_due(Domain::Processing, 60))
            .map(|f| format!("{}/{}", &*f.key, &*f.name))
            .collect();
        assert_eq!(due, ["c/w", "a/w"]);
        assert!(
            restored.has_changes(),
            "fired timers are gone from what is stored"
        );

        let dir = std::env::temp_dir().join(format!("riffle-timers-{}", fastrand::u64(..)));
        let path = dir.join("0.snapshot");
        restored.save_snapshot(&path, 5).unwrap();
        let (loaded, _) = Store::<u64>::load_snapshot(&path, &Unversioned)
            .unwrap()
            .unwrap();
        assert_eq!((loaded.len(), loaded.timer_count()), (3, 1));
        assert_eq!(loaded.next_due(Domain::Processing), None);
        assert_eq!(loaded.next_due(Domain::Event), Some(7));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_past_their_time_to_live_are_deleted_and_the_table_shrinks() {
        let mut store: Store<u64> = Store::new(0);
        store.set_ttl(Some(Duration::from_secs(60)));
        store.set_now(1_000_000);
        for i in 0..100_000 {
            *store.get_mut(&format!("k{i}")) = i;
        }
        store.change_timers(
            "k1",
            [crate::TimerChange::Set(crate::Timer {
                name: crate::Key::new("t"),
                at: crate::Time::Processing(0),
            })],
        );
        store.take_changes().unwrap();
        let big = store.entries.capacity();
        store.set_now(1_000_000 + 30_000);
        *store.get_mut("k2") += 1;
        assert_eq!(store.expire(), 0, "none past 60 s yet");
        store.set_now(1_000_000 + 70_000);
        let expired = store.expire();
        assert_eq!(
            (store.get("k1").copied(), store.get("k2").copied()),
            (Some(1), Some(3))
        );
        assert_eq!(
            expired,
            100_000 - 2,
            "all but the touched key and the one with a timer"
        );
        assert_eq!(store.len(), 2);
        assert!(store.entries.capacity() * 100 < big, "the table shrank");
        let changes = store.take_changes().unwrap();
        let tombstones = changes.iter().filter(|(_, v)| v.is_empty()).count();
        assert_eq!(
            (changes.len(), tombstones),
            (100_000 - 1, 100_000 - 2),
            "and k2's state"
        );
    }
}
