//! Standby state: warm copies of the partitions a process does not own,
//! kept up to date in the background from their changelog, so that a
//! takeover (another process killed, or stopped) reads only the changelog
//! written since the copy's last poll instead of all of it.
//!
//! A [`Standby`] follows every partition of a changelog that is not taken:
//! it starts each from its local snapshot if there is one (else from the
//! beginning) and applies the changelog records as they come, on a thread
//! of its own, with one reader for all the partitions it follows. A
//! consumer given a partition takes its copy ([`Standby::take`]) and
//! restores from there ([`crate::RestoreFrom::Store`]); a consumer that
//! lets a partition go hands it back ([`Standby::release`]) and the copy is
//! built again in the background.
//!
//! The copies cost memory: every partition's state, in every process that
//! keeps standbys. They are meant for a few processes sharing a group, or
//! for the one that waits to take over.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::changelog::Durability;
use crate::store::Store;
use crate::version::Upgrade;
use riffle_base::error::Result;
use riffle_log::{ReaderConfig, RecordRef, TopicPartition};

/// How long one poll of the changelog waits for records.
const POLL: Duration = Duration::from_millis(100);

/// The copies are first built once the process's consumers have taken
/// their own partitions (a restore of their own comes first), this long
/// after the first take, or after [`FIRST_BUILD_LATEST`] if none comes.
const AFTER_FIRST_TAKE: Duration = Duration::from_millis(500);
const FIRST_BUILD_LATEST: Duration = Duration::from_secs(10);

/// A warm copy: the store and the changelog offset it reflects (the next
/// record to apply).
struct Warm<S> {
    store: Store<S>,
    next: i64,
}

struct Shared<S> {
    warm: Mutex<HashMap<i32, Warm<S>>>,
    /// Partitions a consumer of this process holds: not followed.
    taken: Mutex<HashSet<i32>>,
    /// Partitions handed back, to be built again by the follower.
    released: Mutex<Vec<i32>>,
    /// Set by the first take.
    taking: AtomicBool,
    /// Set by a take: the reader follows a partition no more.
    narrowed: AtomicBool,
    stop: AtomicBool,
}

/// Warm copies of a changelog's partitions; see the module docs.
pub struct Standby<S> {
    shared: Arc<Shared<S>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<S> Standby<S>
where
    S: Default + Serialize + DeserializeOwned + Send + 'static,
{
    /// Follows every partition of `d`'s changelog but those in `taken`,
    /// with states upgraded by `upgrade`.
    pub fn start<U>(d: Arc<Durability>, taken: &[i32], upgrade: U) -> Result<Self>
    where
        U: Upgrade<S> + Send + 'static,
    {
        let ends = d.ends()?;
        let shared = Arc::new(Shared {
            warm: Mutex::new(HashMap::new()),
            taken: Mutex::new(taken.iter().copied().collect()),
            released: Mutex::new(
                ends.keys()
                    .copied()
                    .filter(|p| !taken.contains(p))
                    .collect(),
            ),
            taking: AtomicBool::new(false),
            narrowed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("standby {}", d.changelog))
            .spawn(move || follow(&d, &s, &upgrade))
            .map_err(|e| riffle_base::error::Error::io("cannot start the standby thread", &e))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Partition `p`'s copy and the changelog offset it reflects, if one is
    /// kept; the standby stops following `p` until it is released.
    pub fn take(&self, p: i32) -> Option<(Store<S>, i64)> {
        self.shared.taking.store(true, Ordering::Relaxed);
        // Locks in the follower's order (taken, then warm): a copy being
        // built is either inserted before this or not at all.
        let mut taken = lock(&self.shared.taken);
        taken.insert(p);
        lock(&self.shared.released).retain(|q| *q != p);
        let copy = lock(&self.shared.warm).remove(&p);
        drop(taken);
        self.shared.narrowed.store(true, Ordering::Relaxed);
        copy.map(|w| (w.store, w.next))
    }

    /// Partition `p` is no longer held here: its copy is built again, from
    /// its snapshot if any.
    pub fn release(&self, p: i32) {
        if lock(&self.shared.taken).remove(&p) {
            lock(&self.shared.released).push(p);
        }
    }

    /// How many keys the copies hold, per partition.
    pub fn keys(&self) -> HashMap<i32, usize> {
        lock(&self.shared.warm)
            .iter()
            .map(|(p, w)| (*p, w.store.len()))
            .collect()
    }
}

impl<S> Standby<S> {
    /// Stops following the changelog and drops the copies.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        lock(&self.shared.warm).clear();
    }
}

impl<S> Drop for Standby<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The follower's loop: builds the copies of released partitions, and
/// applies the changelog to every copy, until stopped.
fn follow<S, U>(d: &Durability, shared: &Shared<S>, upgrade: &U)
where
    S: Default + Serialize + DeserializeOwned,
    U: Upgrade<S>,
{
    let started = std::time::Instant::now();
    while !shared.taking.load(Ordering::Relaxed) && started.elapsed() < FIRST_BUILD_LATEST {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(AFTER_FIRST_TAKE);
    let mut reader = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let released = std::mem::take(&mut *lock(&shared.released));
        if !released.is_empty() {
            for p in released {
                if lock(&shared.taken).contains(&p) {
                    continue;
                }
                let (store, next) = seed(d, p, upgrade);
                let taken = lock(&shared.taken);
                if !taken.contains(&p) {
                    lock(&shared.warm).insert(p, Warm { store, next });
                }
            }
            reader = None;
        }
        // A partition taken since the reader was made: made again without
        // it (until then its records are skipped).
        if shared.narrowed.swap(false, Ordering::Relaxed) {
            reader = None;
        }
        let r = match &mut reader {
            Some(r) => r,
            None => {
                let start: Vec<(TopicPartition, i64)> = lock(&shared.warm)
                    .iter()
                    .map(|(p, w)| (TopicPartition::new(&d.changelog, *p), w.next))
                    .collect();
                if start.is_empty() {
                    std::thread::sleep(POLL);
                    continue;
                }
                let config = ReaderConfig {
                    start,
                    read_committed: d.read_committed,
                };
                match d.log.reader(&config) {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        tracing::warn!("standby of {}: {e}; trying again", d.changelog);
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            }
        };
        let mut apply = |rec: RecordRef<'_>| -> Result<()> {
            let mut warm = lock(&shared.warm);
            let Some(w) = warm.get_mut(&rec.partition) else {
                return Ok(());
            };
            if rec.offset < w.next {
                return Ok(());
            }
            w.next = rec.offset + 1;
            if let Some(k) = rec.key {
                let at = Some((rec.partition, rec.offset));
                if let Err(e) = w.store.apply(k, rec.value, at, upgrade) {
                    // A state of a newer version: this copy is of no use.
                    tracing::warn!("standby of {}/{}: {e}", d.changelog, rec.partition);
                    warm.remove(&rec.partition);
                }
            }
            Ok(())
        };
        if let Err(e) = r.poll(POLL, 10_000, &mut apply) {
            tracing::warn!("standby of {}: {e}; reading again", d.changelog);
            reader = None;
            std::thread::sleep(POLL);
        }
    }
}

/// Where partition `p`'s copy starts: its snapshot, else nothing.
fn seed<S, U>(d: &Durability, p: i32, upgrade: &U) -> (Store<S>, i64)
where
    S: Default + Serialize + DeserializeOwned,
    U: Upgrade<S>,
{
    let snapshot = d
        .snapshot_path(p)
        .and_then(|path| match Store::load_snapshot(&path, upgrade) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("standby: {e}; following the changelog alone");
                None
            }
        });
    snapshot.unwrap_or_else(|| (Store::new(upgrade.version()), 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::StoredState;
    use riffle_log::embedded::EmbeddedLog;
    use riffle_log::{Log, OutRecord, TopicSpec};
    use std::time::Instant;

    /// `u64` states, version 1, no upgrades.
    struct V1;

    impl Upgrade<u64> for V1 {
        fn version(&self) -> u32 {
            1
        }
        fn upgrade(&self, old: StoredState<'_>) -> Result<u64> {
            Err(old.unknown())
        }
    }

    fn write(log: &EmbeddedLog, partition: i32, key: &str, n: u64) {
        let p = log.producer(None).unwrap();
        let value = format!("@1 {n}");
        p.send(OutRecord {
            partition: Some(partition),
            ..OutRecord::new("cl", Some(key.as_bytes()), value.as_bytes())
        })
        .unwrap();
        p.flush(Duration::from_secs(5)).unwrap();
    }

    fn until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn copies_follow_the_changelog_until_taken_and_again_once_released() {
        let log = EmbeddedLog::new();
        log.create_topic(&TopicSpec::new("cl", 2), Duration::from_secs(5))
            .unwrap();
        write(&log, 0, "a", 1);
        write(&log, 1, "b", 1);
        let d = Arc::new(Durability {
            log: Arc::new(log.clone()),
            changelog: "cl".into(),
            snapshots: None,
            read_committed: false,
        });
        let standby = Standby::<u64>::start(d.clone(), &[], V1).unwrap();
        // Partition 1 is this process's: its copy is never built.
        assert!(standby.take(1).is_none());
        until("partition 0 copied", || standby.keys().get(&0) == Some(&1));
        assert_eq!(standby.keys().get(&1), None);
        // Followed as the changelog grows.
        write(&log, 0, "a", 2);
        write(&log, 0, "c", 7);
        until("partition 0 followed", || {
            standby.keys().get(&0) == Some(&2)
        });
        let (mut store, next) = standby.take(0).unwrap();
        assert_eq!(
            (store.get("a").copied(), store.get("c").copied()),
            (Some(2), Some(7))
        );
        assert_eq!(next, 3, "the copy reflects the whole changelog");
        assert!(standby.take(0).is_none(), "taken once");
        // Given up again: built afresh, with what was written meanwhile.
        write(&log, 0, "a", 3);
        standby.release(0);
        until("partition 0 copied again", || {
            standby.keys().get(&0) == Some(&2)
        });
        let (mut store, next) = standby.take(0).unwrap();
        assert_eq!((store.get("a").copied(), next), (Some(3), 4));
        standby.stop();
        assert!(standby.keys().is_empty(), "stopped, the copies are dropped");
    }
}
