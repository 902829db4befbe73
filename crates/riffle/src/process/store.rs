//! State stores: the states of one partition's keys, kept in memory for
//! speed and made durable two ways.
//!
//! - A **changelog**: a compacted topic with the input's partition count.
//!   Each key's latest state is written to the changelog partition of the
//!   input partition it belongs to, keyed by the key, as JSON. Writes are
//!   batched: a key changed many times between two commits is written once.
//!   Whoever owns the partition next, in this process or another, rebuilds
//!   the state by reading that changelog partition.
//! - A **snapshot** on local disk, `<state dir>/<group>/<partition>.snapshot`,
//!   holding every key's state and the changelog offset it reflects. A
//!   process restarted on the same machine loads it and reads only the
//!   changelog written after it, instead of the whole changelog.
//!
//! Snapshot format, little-endian: the magic `RFLSNAP1`, the changelog
//! offset (u64) and the entry count (u64); per entry the key length (u32),
//! the key, the state length (u32) and the state as JSON; last, a CRC-32 of
//! everything before it. It is written to a temporary file and renamed into
//! place, so a crash leaves either the old snapshot or the new one.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::key::Key;
use super::AppStats;
use crate::error::{Error, Result};
use crate::log::{Headers, Log, OutRecord, RecordRef};
use crate::stream::Producer;
use riffle_base::crc32;

const MAGIC: &[u8; 8] = b"RFLSNAP1";
/// Changed keys a store lists however small it is.
const LISTED_MIN: usize = 1024;
/// How long a changelog read may see nothing before restoring fails.
const RESTORE_IDLE: Duration = Duration::from_secs(60);
/// How often a long restore reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

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

/// Keys and their states as JSON, packed: a burst of a million changed
/// keys handed from a worker to its dispatcher costs a few large blocks
/// rather than two small ones per key, and large blocks go back to the
/// system once sent (small ones stay in the allocator's arenas, so the
/// process would keep the peak of such a burst).
#[derive(Default)]
pub(super) struct Encoded {
    keys: String,
    states: Vec<u8>,
    /// Per entry, where its key and its state end.
    ends: Vec<(usize, usize)>,
}

impl Encoded {
    fn push(&mut self, key: &str, state: &[u8]) {
        self.keys.push_str(key);
        self.states.extend_from_slice(state);
        self.ends.push((self.keys.len(), self.states.len()));
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    fn starts(&self, i: usize) -> (usize, usize) {
        match i {
            0 => (0, 0),
            i => self.ends[i - 1],
        }
    }

    fn entry(&self, i: usize) -> (&str, &[u8]) {
        let ((k0, s0), (k1, s1)) = (self.starts(i), self.ends[i]);
        (&self.keys[k0..k1], &self.states[s0..s1])
    }

    /// The last entry.
    pub(super) fn last(&self) -> Option<(&str, &[u8])> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops the last entry.
    pub(super) fn pop(&mut self) {
        if let Some(i) = self.len().checked_sub(1) {
            let (k, s) = self.starts(i);
            self.keys.truncate(k);
            self.states.truncate(s);
            self.ends.pop();
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.len()).map(|i| self.entry(i))
    }
}

/// One key's state and whether it changed since its last changelog write.
struct Entry<S> {
    state: S,
    dirty: bool,
}

/// The states of one partition's keys.
pub(super) struct Store<S> {
    entries: HashMap<Key, Entry<S>>,
    /// Keys changed since their last changelog write, listed while they
    /// are few; `None` once more than an eighth of the keys changed, and
    /// the next write finds them by their flags. (A list of every key after
    /// a burst of new keys would cost a third of the table again.)
    dirty: Option<Vec<Key>>,
    /// Keys flagged changed.
    changed: usize,
    /// Keys changed since the last snapshot, roughly (a hint for when one
    /// is worth writing).
    changed_since_snapshot: usize,
}

impl<S> Default for Store<S> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            dirty: Some(Vec::new()),
            changed: 0,
            changed_since_snapshot: 0,
        }
    }
}

impl<S: Default + Serialize + DeserializeOwned> Store<S> {
    /// The state of `key`, created with `Default` if new, marked changed.
    pub(super) fn get_mut(&mut self, key: &str) -> &mut S {
        let newly_changed = match self.entries.get_mut(key) {
            Some(entry) => !std::mem::replace(&mut entry.dirty, true),
            None => {
                let entry = Entry {
                    state: S::default(),
                    dirty: true,
                };
                self.entries.insert(Key::new(key), entry);
                true
            }
        };
        if newly_changed {
            self.changed_since_snapshot += 1;
            self.list_changed(key);
        }
        &mut self.entries.get_mut(key).expect("present").state
    }

    /// Counts a newly flagged key, and lists it while the list is short.
    fn list_changed(&mut self, key: &str) {
        self.changed += 1;
        let room = LISTED_MIN.max(self.entries.len() / 8);
        if let Some(list) = &mut self.dirty {
            if list.len() < room {
                list.push(Key::new(key));
            } else {
                self.dirty = None;
            }
        }
    }

    /// Hands every changed key's state, encoded, to `out` and marks it
    /// unchanged; at the first error, stops with the rest still marked.
    fn drain_changes(&mut self, mut out: impl FnMut(&Key, &[u8]) -> Result<()>) -> Result<usize> {
        let mut buf = Vec::new();
        let mut sent = 0;
        match &mut self.dirty {
            Some(list) => {
                while let Some(key) = list.pop() {
                    let Some(entry) = self.entries.get_mut(key.as_str()) else {
                        continue;
                    };
                    if let Err(e) =
                        encode(&key, &entry.state, &mut buf).and_then(|()| out(&key, &buf))
                    {
                        list.push(key);
                        return Err(e);
                    }
                    entry.dirty = false;
                    self.changed -= 1;
                    sent += 1;
                }
                list.shrink_to(LISTED_MIN);
            }
            None => {
                for (key, entry) in self.entries.iter_mut().filter(|(_, e)| e.dirty) {
                    encode(key, &entry.state, &mut buf)?;
                    out(key, &buf)?;
                    entry.dirty = false;
                    self.changed -= 1;
                    sent += 1;
                }
                self.dirty = Some(Vec::new());
            }
        }
        Ok(sent)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The state of `key`, if it has one.
    pub(super) fn get(&self, key: &str) -> Option<&S> {
        self.entries.get(key).map(|e| &e.state)
    }

    pub(super) fn has_changes(&self) -> bool {
        self.changed > 0
    }

    pub(super) fn changed_since_snapshot(&self) -> usize {
        self.changed_since_snapshot
    }

    /// Sends every changed key's state to `partition` of the changelog and
    /// marks them unchanged; returns how many were sent.
    pub(super) fn write_changes(
        &mut self,
        producer: &Producer,
        changelog: &str,
        partition: i32,
    ) -> Result<usize> {
        self.drain_changes(|key, value| {
            producer.send_record(OutRecord {
                topic: changelog,
                key: Some(key.as_bytes()),
                value,
                partition: Some(partition),
                headers: Headers::EMPTY,
            })
        })
    }

    /// Every changed key's state, encoded, the keys marked unchanged: for
    /// sending elsewhere (the key-independent style's workers hand them to
    /// their dispatcher, which sends them when the outputs are safe).
    pub(super) fn take_changes(&mut self) -> Result<Encoded> {
        let mut out = Encoded::default();
        self.drain_changes(|key, value| {
            out.push(key, value);
            Ok(())
        })?;
        Ok(out)
    }

    /// Applies one changelog record.
    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (key, state) = decode::<S>(key, value)?;
        match self.entries.get_mut(key) {
            Some(e) => e.state = state,
            None => {
                self.entries.insert(
                    Key::new(key),
                    Entry {
                        state,
                        dirty: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Writes a snapshot reflecting the changelog up to `offset`.
    pub(super) fn save_snapshot(&mut self, path: &Path, offset: i64) -> Result<()> {
        let mut w = SnapshotWriter::create(path, offset, self.entries.len())?;
        let mut buf = Vec::new();
        for (key, entry) in &self.entries {
            encode(key, &entry.state, &mut buf)?;
            w.entry(key, &buf)?;
        }
        w.finish()?;
        self.changed_since_snapshot = 0;
        Ok(())
    }

    /// Every key's state, encoded as in the changelog.
    pub(super) fn encoded(&self) -> Result<Encoded> {
        let mut out = Encoded::default();
        let mut buf = Vec::new();
        for (k, e) in &self.entries {
            encode(k, &e.state, &mut buf)?;
            out.push(k, &buf);
        }
        Ok(out)
    }

    /// Splits the store by `which(key)`, into `n` stores.
    pub(super) fn split(self, n: usize, which: impl Fn(&str) -> usize) -> Vec<Self> {
        let mut parts: Vec<Self> = (0..n).map(|_| Self::default()).collect();
        for (k, e) in self.entries {
            let part = &mut parts[which(&k)];
            let dirty = e.dirty;
            part.entries.insert(k.clone(), e);
            if dirty {
                part.list_changed(&k);
            }
        }
        parts
    }

    /// Loads a snapshot: the store and the changelog offset it reflects.
    /// `None` when there is none; an error when it is damaged.
    fn load_snapshot(path: &Path) -> Result<Option<(Self, i64)>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("snapshot {}", path.display()), &e)),
        };
        let bad = |why: &str| Error::Decode(format!("snapshot {}: {why}", path.display()));
        if bytes.len() < 28 || &bytes[..8] != MAGIC {
            return Err(bad("not a snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32::crc32(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(bad("checksum mismatch"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
        let offset = u64_at(8) as i64;
        let count = u64_at(16) as usize;
        let mut store = Self::default();
        store.entries.reserve(count);
        let mut rest = &body[24..];
        fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
            let r: &'a [u8] = rest;
            let n = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
            let field = r.get(4..4 + n)?;
            *rest = &r[4 + n..];
            Some(field)
        }
        for _ in 0..count {
            let (Some(key), Some(value)) = (take(&mut rest), take(&mut rest)) else {
                return Err(bad("truncated"));
            };
            // A snapshot holds each key once: no lookup before inserting.
            let (key, state) = decode::<S>(key, value)?;
            store.entries.insert(
                Key::new(key),
                Entry {
                    state,
                    dirty: false,
                },
            );
        }
        Ok(Some((store, offset)))
    }
}

/// A key and its state as stored in the changelog and in snapshots.
fn decode<'a, S: DeserializeOwned>(key: &'a [u8], value: &[u8]) -> Result<(&'a str, S)> {
    let key =
        std::str::from_utf8(key).map_err(|_| Error::Decode("changelog key is not UTF-8".into()))?;
    let state = serde_json::from_slice(value)
        .map_err(|e| Error::Decode(format!("state of '{key}': {e}")))?;
    Ok((key, state))
}

/// A state as JSON, into `buf`.
fn encode<S: Serialize>(key: &str, state: &S, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    serde_json::to_writer(&mut *buf, state)
        .map_err(|e| Error::InvalidInput(format!("cannot encode state of '{key}': {e}")))
}

/// Writes a snapshot file entry by entry (see the module docs).
pub(super) struct SnapshotWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Crc32Writer<BufWriter<std::fs::File>>,
}

impl SnapshotWriter {
    pub(super) fn create(path: &Path, offset: i64, entries: usize) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
        }
        let tmp = path.with_extension("snapshot.tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| io_error(path, e))?;
        let mut w = Self {
            path: path.to_owned(),
            tmp,
            out: Crc32Writer::new(BufWriter::with_capacity(1 << 20, file)),
        };
        w.write(MAGIC)?;
        w.write(&(offset as u64).to_le_bytes())?;
        w.write(&(entries as u64).to_le_bytes())?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_error(&self.path, e))
    }

    /// One key and its state as JSON.
    pub(super) fn entry(&mut self, key: &str, state: &[u8]) -> Result<()> {
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(key.as_bytes())?;
        self.write(&(state.len() as u32).to_le_bytes())?;
        self.write(state)
    }

    /// Adds the checksum, syncs, and renames the file into place.
    pub(super) fn finish(self) -> Result<()> {
        let io = |e| io_error(&self.path, e);
        let crc = self.out.crc;
        let mut file = self.out.inner;
        file.write_all(&crc.to_le_bytes()).map_err(io)?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("snapshot {}", path.display()), &e)
}

/// Changed states of some partitions, encoded: (partition, keys and states).
pub(super) type Changes = Vec<(i32, Encoded)>;

/// Sends `changes` to their partitions of the changelog; on failure, what
/// was not sent stays in `changes` for another attempt.
pub(super) fn send_changes(
    producer: &Producer,
    changelog: &str,
    changes: &mut Changes,
) -> Result<usize> {
    let mut sent = 0;
    while let Some((partition, entries)) = changes.last_mut() {
        while let Some((key, value)) = entries.last() {
            producer.send_record(OutRecord {
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
pub(super) struct Durability {
    pub(super) log: std::sync::Arc<dyn Log>,
    pub(super) changelog: String,
    /// `<state dir>/<group>`, when snapshots are kept.
    pub(super) snapshots: Option<PathBuf>,
    pub(super) read_committed: bool,
}

impl Durability {
    pub(super) fn snapshot_path(&self, partition: i32) -> Option<PathBuf> {
        self.snapshots
            .as_ref()
            .map(|d| d.join(format!("{partition}.snapshot")))
    }

    /// Rebuilds partition `p`'s store: its snapshot, if any, then the
    /// changelog written after it.
    pub(super) fn restore<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        end: i64,
        stats: &AppStats,
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
    pub(super) fn restore_from<S: Default + Serialize + DeserializeOwned>(
        &self,
        partition: i32,
        store: Store<S>,
        from: i64,
        end: i64,
        stats: &AppStats,
    ) -> Result<Store<S>> {
        self.catch_up(partition, store, from, end, stats, None)
    }

    /// The changelog's end offset per partition.
    pub(super) fn ends(&self) -> Result<HashMap<i32, i64>> {
        let info = self
            .log
            .describe_topic(&self.changelog, Duration::from_secs(30))?;
        Ok(info.partitions.iter().map(|p| (p.id, p.high)).collect())
    }

    /// [`Durability::ends`] where doing without is possible (a snapshot or
    /// a handover skipped): a failure is logged.
    pub(super) fn ends_or_warn(&self) -> Option<HashMap<i32, i64>> {
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
        stats: &AppStats,
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
pub(super) fn restore_point(d: &Durability) -> HashMap<i32, i64> {
    d.ends().unwrap_or_else(|e| {
        panic!(
            "cannot read the end of changelog {} to restore state: {e}",
            d.changelog
        )
    })
}

/// Computes the CRC-32 of what passes through.
struct Crc32Writer<W> {
    inner: W,
    crc: u32,
}

impl<W> Crc32Writer<W> {
    fn new(inner: W) -> Self {
        Self { inner, crc: 0 }
    }
}

impl<W: Write> Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32::update(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(n: usize) -> Store<Vec<u32>> {
        let mut s: Store<Vec<u32>> = Store::default();
        for i in 0..n {
            s.get_mut(&format!("key-{i}")).push(i as u32);
        }
        s
    }

    #[test]
    fn encoded_entries_are_packed_and_popped_from_the_end() {
        let mut e = Encoded::default();
        e.push("a", b"1");
        e.push("", b"");
        e.push("k\u{e9}y", br#"{"x":2}"#);
        assert_eq!(e.len(), 3);
        let all: Vec<(&str, &[u8])> = e.iter().collect();
        assert_eq!(
            all,
            [("a", &b"1"[..]), ("", b""), ("k\u{e9}y", br#"{"x":2}"#)]
        );
        assert_eq!(e.last(), Some(("k\u{e9}y", &br#"{"x":2}"#[..])));
        e.pop();
        assert_eq!(e.last(), Some(("", &b""[..])));
        e.pop();
        e.pop();
        assert_eq!((e.len(), e.last()), (0, None));
        e.pop();
        assert_eq!(e.keys.len() + e.states.len(), 0);
    }

    /// Past the listed share, changes are found by their flags: each is
    /// still taken once, and the list serves the next few again.
    #[test]
    fn many_changes_are_taken_once_each_listed_or_not() {
        for n in [10, LISTED_MIN + 10, 20_000] {
            let mut s = store(n);
            let taken = s.take_changes().unwrap();
            let mut keys: Vec<&str> = taken.iter().map(|(k, _)| k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "{n} keys");
            assert_eq!(taken.len(), n, "{n} keys");
            assert!(!s.has_changes());
            assert_eq!(s.take_changes().unwrap().len(), 0);
            assert!(s.dirty.is_some(), "listing again after a write");

            s.get_mut("key-3").push(7);
            s.get_mut("key-3").push(8);
            s.get_mut("key-new").push(9);
            let taken = s.take_changes().unwrap();
            let mut keys: Vec<&str> = taken.iter().map(|(k, _)| k).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["key-3", "key-new"]);
            assert!(!s.has_changes());
        }
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = std::env::temp_dir().join(format!("riffle-snap-{}", fastrand::u64(..)));
        let path = dir.join("3.snapshot");
        let mut s = store(1000);
        assert_eq!(s.changed_since_snapshot(), 1000);
        s.save_snapshot(&path, 4242).unwrap();
        assert_eq!(s.changed_since_snapshot(), 0);
        let (loaded, offset) = Store::<Vec<u32>>::load_snapshot(&path).unwrap().unwrap();
        assert_eq!(offset, 4242);
        assert_eq!(loaded.len(), 1000);
        for i in [0, 1, 999] {
            let key = format!("key-{i}");
            assert_eq!(loaded.entries[key.as_str()].state, vec![i as u32]);
            assert!(
                !loaded.entries[key.as_str()].dirty,
                "restored state is not a change"
            );
        }
        assert!(!loaded.has_changes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_snapshot_is_none_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("riffle-snap-{}", fastrand::u64(..)));
        let path = dir.join("0.snapshot");
        assert!(Store::<u8>::load_snapshot(&path).unwrap().is_none());
        store(10).save_snapshot(&path, 7).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::<Vec<u32>>::load_snapshot(&path).err().unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 9]).unwrap();
        assert!(Store::<Vec<u32>>::load_snapshot(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn changes_are_written_once_per_key_until_changed_again() {
        use crate::log::embedded::EmbeddedLog;
        use crate::log::TopicSpec;
        let log = EmbeddedLog::new();
        log.create_topic(&TopicSpec::new("cl", 2), Duration::from_secs(1))
            .unwrap();
        let producer = Producer::new(&log).unwrap();
        let mut s: Store<u32> = Store::default();
        for _ in 0..5 {
            *s.get_mut("a") += 1;
            *s.get_mut("b") += 1;
        }
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 2);
        assert!(!s.has_changes());
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 0);
        *s.get_mut("a") += 1;
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 1);
        let info = log.describe_topic("cl", Duration::from_secs(1)).unwrap();
        assert_eq!(info.partitions[1].high, 3, "written to the given partition");
        assert_eq!(info.partitions[0].high, 0);
    }
}
