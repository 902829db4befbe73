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

use crate::store::{ChangelogSink, Encoded, Store};
use riffle_base::error::Result;
use riffle_log::{Headers, Log, OutRecord, RecordRef};

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
            producer.send(OutRecord {
                topic: changelog,
                key: Some(key.as_bytes()),
                value,
                partition: Some(*partition),
                headers: Headers::EMPTY,
            })?;
            entries.pop();
            sent += 1;
        }
        changes.pop();
    }
    Ok(sent)
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
    /// changelog written after it.
    pub fn restore<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        end: i64,
        stats: &RestoreStats,
    ) -> Result<Store<S>> {
        let start = Instant::now();
        let snapshot = match self
            .snapshot_path(partition)
            .as_deref()
            .map(Store::load_snapshot)
        {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("{e}; restoring from the changelog alone");
                None
            }
            None => None,
        };
        let loaded = snapshot.as_ref().map(|_| start.elapsed());
        let (store, from) = snapshot.unwrap_or_default();
        self.catch_up(partition, store, from, end, stats, loaded)
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
    ) -> Result<Store<S>> {
        self.catch_up(partition, store, from, end, stats, None)
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
    fn catch_up<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        mut store: Store<S>,
        from: i64,
        end: i64,
        stats: &RestoreStats,
        loaded: Option<Duration>,
    ) -> Result<Store<S>> {
        let start = Instant::now();
        let changelog = &self.changelog;
        let from = if from > end {
            // The changelog was recreated since: the store is of no use.
            tracing::warn!(
                "state of {changelog}/{partition} is ahead of the changelog ({from} > {end}); restoring it afresh"
            );
            store = Store::default();
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
                Some(k) => store.apply(k, r.value),
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
