//! The embedded log: topics, partitions and consumer groups in process memory.
//!
//! It exists so that every Riffle program (examples, tests, a first try) runs
//! with nothing installed, and behaves as it will on Kafka. What the runtime
//! can observe is the same: a keyed record goes to the partition the Java
//! client would choose (murmur2), offsets are dense per partition, a group
//! splits partitions among its members with the range assignor, every change
//! of membership is an eager rebalance (revoke all, then assign), a member
//! silent for its session timeout is evicted, and the committed offset decides
//! where the next owner of a partition starts.
//!
//! It does not replicate, expire or compact records.
//!
//! # Transactions
//!
//! A transactional producer keeps the records of its open transaction to
//! itself and appends them, with the consumer offsets, on commit, all under
//! one acquisition of the lock: a reader sees all of a transaction or none
//! of it. Uncommitted records are never appended, so every record in the
//! log is committed and `read_committed` changes nothing here. A producer
//! is fenced when another one is created with its id, and a commit is
//! refused when the consumer whose token it carries no longer holds the
//! share of partitions it held when the token was taken.
//!
//! # Persistence
//!
//! [`EmbeddedLog::new`] keeps everything in memory. [`EmbeddedLog::open`]
//! keeps records and committed offsets in a data directory as well, and
//! finds them there when opened again; when they reach stable storage is the
//! [`FsyncPolicy`]'s choice. Records stay in memory as in the in-memory log
//! (the segments in memory are the cache, the files are the durability), so
//! reads never touch the disk and the whole log must fit in memory. Group
//! membership belongs to the process and is not kept; committed offsets are.
//!
//! The data directory holds:
//!
//! ```text
//! <dir>/LOCK                          pid of the process that has it open
//! <dir>/topics/<topic>/topic.json     {"format":1,"id":..,"partitions":N,"configs":{..}}
//! <dir>/topics/<topic>/<partition>/<base offset, 20 digits>.log
//! <dir>/groups/<group>.json           {"group":..,"topics":{<topic>:{"topic_id":..,"offsets":{"<p>":next}}}}
//! ```
//!
//! - `LOCK` is created exclusively and names the holder's pid; a second
//!   opener, in this process or another, is refused with
//!   `data directory <dir> is in use by another process`. A lock whose
//!   process is gone (no `/proc/<pid>`) is stale and taken over. It is
//!   removed when the last clone of the log, and the last producer and
//!   consumer made from it, is dropped.
//! - Each partition is a sequence of segment files named by the offset of
//!   their first record. A segment holds up to 64 MiB of keys, values and
//!   headers (the bound of the in-memory segments, so each maps to one
//!   file), written as frames, little-endian:
//!
//!   ```text
//!   u32  length of the rest after the CRC (16 + key + value + header bytes)
//!   u32  CRC-32/IEEE of those bytes
//!   i64  timestamp, ms since the Unix epoch
//!   u32  key length, 0xFFFF_FFFF for no key (an empty key is 0)
//!   u32  value length
//!        key, value
//!        headers, to the end of the frame, each: u32 name length, name,
//!        u32 value length (0xFFFF_FFFF for null), value
//!   ```
//!
//!   Offsets are implicit: a segment's base plus the frame's position. This
//!   is format 2 (`topic.json`); format 1 had no headers, and its frames are
//!   read as format 2 frames without them.
//! - A topic's `id` is random, and a group's offsets name the topic id they
//!   were committed in, so offsets of a deleted topic never apply to a new
//!   topic of the same name. Group file names are the group id with bytes
//!   other than `[A-Za-z0-9._-]` (and a leading `.`) written as `%XX`.
//!
//! Every append is written to the current segment file with one `write(2)`
//! before `send` returns (and before it is visible to consumers); a commit
//! writes the group's file to `<group>.json.tmp`, fsyncs it per policy and
//! renames it over `<group>.json`. Creating a topic builds its directory
//! under `<topic>~new` and renames it into place; deleting renames it to
//! `<topic>~deleted-<id>` before removing it, so either is all or nothing
//! (`~` cannot occur in topic names, and leftovers are removed on open).
//!
//! Opening loads every topic, reads each segment whole and checks each
//! frame's CRC. A damaged tail of a partition's last segment (a partial frame
//! or a bad CRC, as a crash in the middle of a write leaves) is cut off with
//! a warning naming the file and byte offset, and appends continue at the
//! next offset; damage in any other segment is an error. Offsets committed
//! beyond what survived fall back to the group's reset policy, as on Kafka.
//!
//! Everything sits behind one mutex. Appends and fetches are copies, so it is
//! held briefly, and a single lock lets records, memberships and offsets
//! change together, which is what makes rebalances exact. Waiting consumers
//! share one condition variable, signalled by appends, rebalances and released
//! partitions.

mod consumer;
mod frame;
mod group;
mod lock;
mod persist;
#[cfg(test)]
mod persist_tests;
mod producer;
mod reader;
mod segment;
mod storage;
#[cfg(test)]
mod tests;
mod txn;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{
    ConsumerConfig, DeliveryCallback, GroupListing, GroupMember, GroupOffset, Log, LogConsumer,
    LogProducer, LogReader, PartitionInfo, ReadVisitor, ReaderConfig, RecordRef, TopicConfig,
    TopicInfo, TopicPartition, TopicSpec, TxnProducer,
};

use consumer::EmbeddedConsumer;
use group::Group;
use persist::Disk;
use producer::EmbeddedProducer;
pub use segment::FsyncPolicy;
use storage::{Batch, PartitionLog};
use txn::EmbeddedTxnProducer;

/// An in-process log. Clones share the same topics and groups.
#[derive(Clone, Default)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl EmbeddedLog {
    /// An empty log, in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the log kept in the data directory `dir`, creating it if need
    /// be, with the topics, records and committed offsets found there (see
    /// the module documentation for the layout and recovery). `fsync` decides
    /// when writes reach stable storage; every write reaches the operating
    /// system before the call that made it returns.
    ///
    /// The directory stays locked until the last clone of the log, and the
    /// last producer and consumer made from it, is dropped; opening it
    /// meanwhile, from this process or another, fails.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use riffle_log::Log;
    /// use riffle_log::embedded::{EmbeddedLog, FsyncPolicy};
    ///
    /// let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open("data", FsyncPolicy::default())?);
    /// assert_eq!(log.describe(), "embedded data");
    /// # Ok::<(), riffle_base::Error>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>, fsync: FsyncPolicy) -> Result<EmbeddedLog> {
        let (disk, loaded) = Disk::open(dir.as_ref(), fsync)?;
        let mut state = State::default();
        for topic in loaded.topics {
            state.next_topic_id += 1;
            let t = Topic {
                id: state.next_topic_id,
                disk_id: topic.id,
                partitions: topic.partitions,
                configs: topic.configs,
                spread: 0,
            };
            state.topics.insert(topic.name, t);
        }
        for (name, offsets) in loaded.groups {
            state.groups.insert(name, Group::with_offsets(offsets));
        }
        let inner = Inner {
            state: Mutex::new(state),
            changed: Condvar::new(),
            disk: Some(disk),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// fsync calls made so far; for tests.
    #[cfg(test)]
    fn syncs(&self) -> u64 {
        self.inner.disk.as_ref().map_or(0, |d| d.syncer().syncs())
    }
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.disk {
            Some(disk) => write!(f, "EmbeddedLog({})", disk.root().display()),
            None => f.write_str("EmbeddedLog"),
        }
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    /// The data directory of a persistent log. Declared last, so that it is
    /// dropped (pending fsyncs done, lock released) after the partitions.
    disk: Option<Disk>,
}

impl Inner {
    /// Writes a group's committed offsets to its file, in a persistent log.
    /// A failure is remembered in the group, so that the next commit retries.
    fn save_group(
        &self,
        name: &str,
        group: &mut Group,
        topics: &HashMap<String, Topic>,
    ) -> Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let saved = disk.save_group(name, group.offsets(), |t| topics.get(t).map(|t| t.disk_id));
        group.unsaved = saved.is_err();
        saved
    }

    /// The state; a panic elsewhere cannot leave it half-updated (no user code
    /// runs under the lock), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases the lock and wakes waiting consumers. A notification costs a
    /// system call, so none is sent when nobody waits, nor again before a
    /// woken consumer has gone back to waiting (which clears `woken`).
    fn unlock_and_wake(&self, mut state: MutexGuard<'_, State>) {
        let wake = state.waiters > 0 && !state.woken;
        state.woken |= wake;
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Waits until woken or `until` passes. Whoever starts waiting clears
    /// `woken`, so the next change notifies again.
    fn wait<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        state.waiters += 1;
        state.woken = false;
        let mut state = match until {
            Some(t) => {
                let timeout = t.saturating_duration_since(Instant::now());
                self.changed
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
        state.waiters -= 1;
        state
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    groups: HashMap<String, Group>,
    /// Distinguishes a recreated topic from its namesake.
    next_topic_id: u64,
    next_member: u64,
    /// Consumers blocked in `poll`.
    waiters: usize,
    /// Waiters have been notified since the last one started waiting.
    woken: bool,
    /// Transactional id -> epoch of its newest producer.
    txn_epochs: HashMap<String, u64>,
}

impl State {
    /// Starts a new generation in every group subscribed to `topic`.
    fn rebalance_subscribers(&mut self, topic: &str) {
        let topics = &self.topics;
        for group in self.groups.values_mut().filter(|g| g.subscribes_to(topic)) {
            group.rebalance(|t| topics.get(t).map(|t| t.partitions.len()));
        }
    }
}

struct Topic {
    id: u64,
    /// The topic's id in the data directory (0 in memory); unlike `id` it
    /// survives reopening.
    disk_id: u64,
    partitions: Vec<PartitionLog>,
    /// As given when the topic was created; kept, not acted on.
    configs: Vec<(String, String)>,
    /// Next partition for a key-less record.
    spread: usize,
}

impl Topic {
    fn info(&self, name: &str) -> TopicInfo {
        let partitions = (0..)
            .zip(&self.partitions)
            .map(|(id, p)| PartitionInfo {
                id,
                leader: 0,
                replicas: vec![0],
                isr: vec![0],
                low: p.low(),
                high: p.high(),
            })
            .collect();
        TopicInfo {
            name: name.to_owned(),
            partitions,
        }
    }
}

/// The partition, or an error naming the topic's partition count.
fn partition_of<'a>(topic: &'a Topic, name: &str, partition: i32) -> Result<&'a PartitionLog> {
    usize::try_from(partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "partition {partition} does not exist in topic '{name}' ({} partitions)",
                topic.partitions.len()
            ))
        })
}

impl Log for EmbeddedLog {
    fn describe(&self) -> String {
        match &self.inner.disk {
            Some(disk) => format!("embedded {}", disk.root().display()),
            None => "embedded".into(),
        }
    }

    fn producer(&self, on_delivery: Option<DeliveryCallback>) -> Result<Box<dyn LogProducer>> {
        Ok(Box::new(EmbeddedProducer::new(
            Arc::clone(&self.inner),
            on_delivery,
        )))
    }

    fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn LogConsumer>> {
        Ok(Box::new(EmbeddedConsumer::join(
            Arc::clone(&self.inner),
            config,
        )?))
    }

    fn transactional_producer(
        &self,
        id: &str,
        on_delivery: Option<DeliveryCallback>,
    ) -> Result<Box<dyn TxnProducer>> {
        if id.is_empty() {
            return Err(Error::InvalidInput("transactional id is empty".into()));
        }
        Ok(Box::new(EmbeddedTxnProducer::new(
            Arc::clone(&self.inner),
            id,
            on_delivery,
        )))
    }

    /// Never waits: the end is in memory, and every record is committed
    /// (see `txn`), so `read_committed` and `idle_timeout` change nothing.
    fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        _read_committed: bool,
        _idle_timeout: Duration,
        visit: ReadVisitor<'_>,
    ) -> Result<i64> {
        /// Records copied per acquisition of the lock, so that appends are
        /// not held up by a long read.
        const CHUNK: usize = 4096;
        let (topic_id, end, mut next) = {
            let state = self.inner.lock();
            let t = state
                .topics
                .get(topic)
                .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
            let p = partition_of(t, topic, partition)?;
            if from > p.high() {
                return Err(Error::InvalidInput(format!(
                    "offset {from} is beyond the end of {topic}/{partition}, {}",
                    p.high()
                )));
            }
            (t.id, p.high(), from.max(p.low()))
        };
        let mut batch = Batch::default();
        while next < end {
            batch.clear();
            {
                let state = self.inner.lock();
                let t = state
                    .topics
                    .get(topic)
                    .filter(|t| t.id == topic_id)
                    .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
                let want = CHUNK.min((end - next) as usize);
                let got = t.partitions[partition as usize].read(next, want, &mut batch, 0);
                // Records are never removed, so [next, end) stays readable.
                debug_assert!(got > 0, "{topic}/{partition} shrank below {next}");
                if got == 0 {
                    break;
                }
            }
            for (r, key, value, headers, timestamp) in batch.iter() {
                visit(RecordRef {
                    topic,
                    partition,
                    offset: r.offset,
                    key,
                    value,
                    timestamp: Some(timestamp),
                    headers,
                })?;
                next = r.offset + 1;
            }
        }
        Ok(end)
    }

    fn create_topic(&self, spec: &TopicSpec, _timeout: Duration) -> Result<()> {
        spec.validate()?;
        let mut state = self.inner.lock();
        if state.topics.contains_key(&spec.name) {
            return Err(Error::TopicExists(spec.name.clone()));
        }
        let (disk_id, partitions) = match &self.inner.disk {
            Some(disk) => {
                let disk_id = disk.create_topic(spec)?;
                let partitions = (0..spec.partitions as usize)
                    .map(|p| {
                        PartitionLog::persistent(
                            disk.partition_dir(&spec.name, p),
                            Arc::clone(disk.syncer()),
                        )
                    })
                    .collect();
                (disk_id, partitions)
            }
            None => (
                0,
                (0..spec.partitions)
                    .map(|_| PartitionLog::default())
                    .collect(),
            ),
        };
        state.next_topic_id += 1;
        let topic = Topic {
            id: state.next_topic_id,
            disk_id,
            partitions,
            configs: spec.configs.clone(),
            spread: 0,
        };
        state.topics.insert(spec.name.clone(), topic);
        state.rebalance_subscribers(&spec.name);
        self.inner.unlock_and_wake(state);
        Ok(())
    }

    fn delete_topic(&self, name: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.inner.lock();
        let Some(topic) = state.topics.get(name) else {
            return Err(Error::UnknownTopic(name.to_owned()));
        };
        if let Some(disk) = &self.inner.disk {
            disk.delete_topic(name, topic.disk_id)?;
        }
        state.topics.remove(name);
        let State { topics, groups, .. } = &mut *state;
        for (group_name, group) in groups.iter_mut() {
            if group.forget_topic(name) {
                // The topic is gone whatever happens here, and offsets in
                // the file name the old topic's id, so they can never apply
                // to a new topic of the same name.
                if let Err(e) = self.inner.save_group(group_name, group, topics) {
                    tracing::warn!(group = %group_name, error = %e,
                        "embedded log: cannot rewrite offsets after deleting a topic");
                }
            }
        }
        state.rebalance_subscribers(name);
        self.inner.unlock_and_wake(state);
        Ok(())
    }

    fn list_topics(&self, _timeout: Duration) -> Result<Vec<TopicInfo>> {
        let state = self.inner.lock();
        let mut topics: Vec<TopicInfo> =
            state.topics.iter().map(|(name, t)| t.info(name)).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    fn describe_topic(&self, name: &str, _timeout: Duration) -> Result<TopicInfo> {
        let state = self.inner.lock();
        let topic = state
            .topics
            .get(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        Ok(topic.info(name))
    }

    fn group_members(&self, group: &str, _timeout: Duration) -> Result<Vec<GroupMember>> {
        let state = self.inner.lock();
        Ok(state
            .groups
            .get(group)
            .map(Group::members)
            .unwrap_or_default())
    }

    /// Every change of a group or of its topics reassigns at once.
    fn rebalance_group(&self, _group: &str, via: &str, _timeout: Duration) -> Result<()> {
        crate::validate_topic_name(via)
    }

    fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        _timeout: Duration,
    ) -> Result<Vec<GroupOffset>> {
        let state = self.inner.lock();
        let t = state
            .topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let group = state.groups.get(group);
        Ok((0..t.partitions.len() as i32)
            .map(|p| GroupOffset {
                partition: TopicPartition::new(topic, p),
                committed: group.and_then(|g| g.committed(topic, p)),
            })
            .collect())
    }
    fn reader(&self, config: &ReaderConfig) -> Result<Box<dyn LogReader>> {
        Ok(Box::new(reader::EmbeddedReader::new(
            Arc::clone(&self.inner),
            config,
        )?))
    }

    fn add_partitions(&self, topic: &str, total: i32, _timeout: Duration) -> Result<()> {
        crate::validate_topic_name(topic)?;
        let mut state = self.inner.lock();
        let t = state
            .topics
            .get_mut(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let now = t.partitions.len();
        if total <= now as i32 {
            return Err(Error::InvalidInput(format!(
                "topic '{topic}' has {now} partitions: the count can only be increased"
            )));
        }
        let total = total as usize;
        match &self.inner.disk {
            Some(disk) => {
                disk.add_partitions(topic, t.disk_id, now, total, &t.configs)?;
                for p in now..total {
                    t.partitions.push(PartitionLog::persistent(
                        disk.partition_dir(topic, p),
                        Arc::clone(disk.syncer()),
                    ));
                }
            }
            None => t.partitions.resize_with(total, PartitionLog::default),
        }
        state.rebalance_subscribers(topic);
        self.inner.unlock_and_wake(state);
        Ok(())
    }

    /// The configs given at creation: the embedded log has no defaults of
    /// its own to differ from.
    fn topic_configs(&self, topic: &str, _timeout: Duration) -> Result<Vec<TopicConfig>> {
        let state = self.inner.lock();
        let t = state
            .topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        let mut out: Vec<TopicConfig> = t
            .configs
            .iter()
            .map(|(k, v)| TopicConfig {
                name: k.clone(),
                value: v.clone(),
                source: "topic".into(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn offsets_for_time(
        &self,
        topic: &str,
        timestamp: i64,
        _timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>> {
        let state = self.inner.lock();
        let t = state
            .topics
            .get(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
        Ok((0..)
            .zip(&t.partitions)
            .map(|(id, p)| (id, p.offset_for_time(timestamp)))
            .collect())
    }

    fn list_groups(&self, _timeout: Duration) -> Result<Vec<GroupListing>> {
        let state = self.inner.lock();
        let mut out: Vec<GroupListing> = state
            .groups
            .iter()
            .filter(|(_, g)| g.exists())
            .map(|(name, g)| GroupListing {
                name: name.clone(),
                state: if g.member_count() > 0 {
                    "Stable"
                } else {
                    "Empty"
                }
                .into(),
                members: g.member_count(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn group_offsets(&self, group: &str, _timeout: Duration) -> Result<Vec<GroupOffset>> {
        let state = self.inner.lock();
        let Some(g) = state.groups.get(group) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<GroupOffset> = g
            .offsets()
            .iter()
            .filter(|(topic, _)| state.topics.contains_key(topic.as_str()))
            .flat_map(|(topic, offsets)| {
                offsets.iter().map(|(p, o)| GroupOffset {
                    partition: TopicPartition::new(topic.clone(), *p),
                    committed: Some(*o),
                })
            })
            .collect();
        out.sort_by(|a, b| a.partition.cmp(&b.partition));
        Ok(out)
    }

    fn set_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
        _timeout: Duration,
    ) -> Result<()> {
        let mut state = self.inner.lock();
        for (tp, o) in offsets {
            let t = state
                .topics
                .get(&tp.topic)
                .ok_or_else(|| Error::UnknownTopic(tp.topic.clone()))?;
            partition_of(t, &tp.topic, tp.partition)?;
            if *o < 0 {
                return Err(Error::InvalidInput(format!(
                    "offset {o} for {tp} is negative"
                )));
            }
        }
        let State { topics, groups, .. } = &mut *state;
        let g = groups.entry(group.to_owned()).or_default();
        if g.member_count() > 0 {
            return Err(Error::GroupNotEmpty(group.to_owned()));
        }
        for (tp, o) in offsets {
            g.commit(&tp.topic, tp.partition, *o);
        }
        self.inner.save_group(group, g, topics)
    }

    fn delete_group(&self, group: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.inner.lock();
        match state.groups.get(group) {
            Some(g) if g.member_count() > 0 => Err(Error::GroupNotEmpty(group.to_owned())),
            Some(g) if g.exists() => {
                if let Some(disk) = &self.inner.disk {
                    disk.delete_group(group)?;
                }
                state.groups.remove(group);
                Ok(())
            }
            _ => Err(Error::UnknownGroup(group.to_owned())),
        }
    }
}
