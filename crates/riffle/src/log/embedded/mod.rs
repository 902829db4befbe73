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
//! It does not replicate, expire or compact records, and keeps nothing on disk
//! yet: storage is segmented (see `storage`) so that writing segments to a
//! data directory can be added without touching producers, consumers or
//! groups.
//!
//! Everything sits behind one mutex. Appends and fetches are copies, so it is
//! held briefly, and a single lock lets records, memberships and offsets
//! change together, which is what makes rebalances exact. Waiting consumers
//! share one condition variable, signalled by appends, rebalances and released
//! partitions.

mod consumer;
mod group;
mod producer;
mod storage;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::{
    ConsumerConfig, DeliveryCallback, GroupOffset, Log, LogConsumer, LogProducer, PartitionInfo,
    TopicInfo, TopicPartition, TopicSpec,
};

use consumer::EmbeddedConsumer;
use group::Group;
use producer::EmbeddedProducer;
use storage::PartitionLog;

/// An in-process log. Clones share the same topics and groups.
#[derive(Clone, Default)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl EmbeddedLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmbeddedLog")
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

impl Inner {
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
    partitions: Vec<PartitionLog>,
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

impl Log for EmbeddedLog {
    fn describe(&self) -> String {
        "embedded".into()
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

    fn create_topic(&self, spec: &TopicSpec, _timeout: Duration) -> Result<()> {
        spec.validate()?;
        let mut state = self.inner.lock();
        if state.topics.contains_key(&spec.name) {
            return Err(Error::TopicExists(spec.name.clone()));
        }
        state.next_topic_id += 1;
        let topic = Topic {
            id: state.next_topic_id,
            partitions: (0..spec.partitions)
                .map(|_| PartitionLog::default())
                .collect(),
            spread: 0,
        };
        state.topics.insert(spec.name.clone(), topic);
        state.rebalance_subscribers(&spec.name);
        self.inner.unlock_and_wake(state);
        Ok(())
    }

    fn delete_topic(&self, name: &str, _timeout: Duration) -> Result<()> {
        let mut state = self.inner.lock();
        if state.topics.remove(name).is_none() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        for group in state.groups.values_mut() {
            group.forget_topic(name);
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
}
