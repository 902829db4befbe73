//! A group member: follows its group's generations and fetches its partitions.
//!
//! Each poll first brings the member up to date with its group under the lock
//! (heartbeat, evicting silent members, giving up and taking up partitions),
//! then copies a batch out and visits it after releasing the lock, so that a
//! visitor may produce to the same log, even to the partitions it consumes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{Group, Membership};
use super::storage::Batch;
use super::{Inner, State, Topic};
use crate::error::{Error, Result};
use crate::{
    validate_topic_name, ConsumerConfig, GroupEvent, GroupToken, LogConsumer, OffsetReset,
    PollVisitor, Progress, RecordRef, TopicPartition,
};

/// A partition this member has taken up.
#[derive(Debug)]
struct Owned {
    tp: TopicPartition,
    /// The incarnation of the topic it was taken up in.
    topic_id: u64,
    /// Next offset to fetch.
    position: i64,
    /// Next offset to commit, as marked by the application.
    stored: Option<i64>,
    /// What this member last committed, to skip needless commits.
    committed: Option<i64>,
}

pub(super) struct EmbeddedConsumer {
    inner: Arc<Inner>,
    config: ConsumerConfig,
    member_id: String,
    /// The generation whose share this member holds; `None` while it waits to
    /// take up a share (just joined, or revoked and waiting for the previous
    /// owners to let go).
    generation: Option<u64>,
    owned: Vec<Owned>,
    /// When stored offsets are next committed; `None` if never by interval.
    next_commit: Option<Instant>,
    /// Where the next fetch starts among `owned`, rotated for fairness.
    rotation: usize,
    batch: Batch,
    closed: bool,
}

impl EmbeddedConsumer {
    pub(super) fn join(inner: Arc<Inner>, config: &ConsumerConfig) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(Error::InvalidInput("consumer group id is empty".into()));
        }
        if config.topics.is_empty() {
            return Err(Error::InvalidInput(
                "consumer subscribes to no topic".into(),
            ));
        }
        for topic in &config.topics {
            validate_topic_name(topic)?;
        }
        let mut state = inner.lock();
        let member_id = enter(&mut state, config, Instant::now());
        inner.unlock_and_wake(state);
        Ok(Self {
            inner,
            config: config.clone(),
            member_id,
            generation: None,
            owned: Vec::new(),
            next_commit: Instant::now().checked_add(config.commit_interval),
            rotation: 0,
            batch: Batch::default(),
            closed: false,
        })
    }

    /// Heartbeats, evicts silent members and follows a new generation: commits
    /// and revokes everything held, then takes up the new share once its
    /// previous owners have let go. Returns whether others should be woken.
    fn sync(&mut self, state: &mut State, now: Instant, events: &mut Vec<GroupEvent>) -> bool {
        let mut changed = false;
        let present = group_of(state, &self.config.group_id)
            .member(&self.member_id)
            .is_some();
        if !present {
            // Evicted while away: the partitions were lost, not revoked, and
            // their stored offsets must not be committed over the new owner's.
            tracing::warn!(group = %self.config.group_id, member = %self.member_id,
                "consumer was evicted after its session timeout; rejoining");
            if !self.owned.is_empty() {
                events.push(GroupEvent::Revoked(
                    self.owned.drain(..).map(|o| o.tp).collect(),
                ));
            }
            self.generation = None;
            self.member_id = enter(state, &self.config, now);
            changed = true;
        }
        let State { topics, groups, .. } = state;
        let group = groups
            .get_mut(&self.config.group_id)
            .expect("the member's group exists");
        if let Some(m) = group.member_mut(&self.member_id) {
            m.heartbeat(now, true);
        }
        let evicted = group.evict_expired(now, &self.member_id);
        if !evicted.is_empty() {
            tracing::info!(group = %self.config.group_id, ?evicted, "evicted members after their session timeout");
            group.rebalance(|t| topics.get(t).map(|t| t.partitions.len()));
            changed = true;
        }
        if self.generation == Some(group.generation) {
            return changed;
        }
        if !self.owned.is_empty() {
            let committed = commit_owned(group, topics, &mut self.owned);
            if committed || group.unsaved {
                if let Err(e) = self.inner.save_group(&self.config.group_id, group, topics) {
                    tracing::warn!(group = %self.config.group_id, error = %e,
                        "cannot write offsets committed on revocation; the next commit retries");
                }
            }
            events.push(GroupEvent::Revoked(
                self.owned.drain(..).map(|o| o.tp).collect(),
            ));
            group.set_held(&self.member_id, Vec::new(), None);
            changed = true;
        }
        self.generation = None;
        let share = &group
            .member(&self.member_id)
            .expect("the member was just ensured")
            .assignment;
        if group.is_free(&self.member_id, share) {
            let share = share.clone();
            self.owned = share
                .iter()
                .filter_map(|tp| {
                    let topic = topics.get(&tp.topic)?;
                    let position = start_position(group, topic, tp, self.config.offset_reset);
                    Some(Owned {
                        tp: tp.clone(),
                        topic_id: topic.id,
                        position,
                        stored: None,
                        committed: None,
                    })
                })
                .collect();
            tracing::debug!(group = %self.config.group_id, member = %self.member_id,
                generation = group.generation, partitions = share.len(), "assigned");
            group.set_held(&self.member_id, share.clone(), Some(group.generation));
            events.push(GroupEvent::Assigned(share));
            self.generation = Some(group.generation);
        }
        changed
    }

    /// Copies up to `max` records into the batch. Every partition first gets
    /// an equal share, then the rest goes to whoever has more; the starting
    /// partition rotates so that none is always served last.
    fn fetch(&mut self, state: &State, max: usize) -> usize {
        let n = self.owned.len();
        if n == 0 || max == 0 {
            return 0;
        }
        let start = self.rotation % n;
        self.rotation = self.rotation.wrapping_add(1);
        let mut total = 0;
        for cap in [max.div_ceil(n), max] {
            for slot in (start..n).chain(0..start) {
                if total == max {
                    return total;
                }
                let owned = &mut self.owned[slot];
                let Some(topic) = state
                    .topics
                    .get(&owned.tp.topic)
                    .filter(|t| t.id == owned.topic_id)
                else {
                    continue; // deleted; the rebalance that follows revokes it
                };
                let partition = &topic.partitions[owned.tp.partition as usize];
                if owned.position < partition.low() || owned.position > partition.high() {
                    owned.position =
                        reset_position(topic, owned.tp.partition, self.config.offset_reset);
                }
                let got =
                    partition.read(owned.position, cap.min(max - total), &mut self.batch, slot);
                owned.position += got as i64;
                total += got;
            }
        }
        total
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Commits stored offsets, unless the member was evicted: its partitions
    /// may belong to someone else by now.
    fn commit_locked(&mut self, state: &mut State) -> Result<()> {
        let State { topics, groups, .. } = state;
        let group = group_of_mut(groups, &self.config.group_id);
        if group.member(&self.member_id).is_none() {
            return Err(Error::Fenced(format!(
                "member {} of group '{}' was evicted after its session timeout; offsets not committed",
                self.member_id, self.config.group_id
            )));
        }
        let changed = commit_owned(group, topics, &mut self.owned);
        if changed || group.unsaved {
            self.inner
                .save_group(&self.config.group_id, group, topics)?;
        }
        Ok(())
    }

    /// This member's standing now: the generation whose share it holds.
    fn token(&self) -> GroupToken {
        GroupToken(Arc::new(Membership {
            group: self.config.group_id.clone(),
            member: self.member_id.clone(),
            generation: self.generation,
        }))
    }

    fn leave(&mut self, state: &mut State) {
        let State { topics, groups, .. } = state;
        let group = group_of_mut(groups, &self.config.group_id);
        if group.leave(&self.member_id) {
            group.rebalance(|t| topics.get(t).map(|t| t.partitions.len()));
        }
        self.owned.clear();
        self.closed = true;
    }
}

/// Progress reported while partitions are being revoked.
struct Revoking<'a> {
    owned: &'a mut Vec<Owned>,
    token: GroupToken,
}

impl Progress for Revoking<'_> {
    fn store(&mut self, topic: &str, partition: i32, next: i64) {
        if let Some(o) = self
            .owned
            .iter_mut()
            .find(|o| o.tp.partition == partition && o.tp.topic == topic)
        {
            o.stored = Some(o.stored.map_or(next, |s| s.max(next)));
        }
    }

    fn group(&self) -> Result<GroupToken> {
        Ok(self.token.clone())
    }
}

impl LogConsumer for EmbeddedConsumer {
    fn group(&self) -> Result<GroupToken> {
        self.ensure_open()?;
        Ok(self.token())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        max: usize,
        visitor: &mut dyn PollVisitor,
    ) -> Result<usize> {
        self.ensure_open()?;
        let deadline = Instant::now().checked_add(timeout);
        let mut events = Vec::new();
        self.batch.clear();
        let inner = Arc::clone(&self.inner);
        let mut state = inner.lock();
        let mut wake_others = false;
        let mut announced = false;
        loop {
            if !announced && self.revocation_due(&mut state) {
                // Let the visitor finish its work on the partitions while it
                // still owns them, outside the lock (it may send records),
                // so that the commit on revocation includes that work.
                announced = true;
                drop(state);
                let revoking: Vec<TopicPartition> =
                    self.owned.iter().map(|o| o.tp.clone()).collect();
                let token = self.token();
                let mut progress = Revoking {
                    owned: &mut self.owned,
                    token,
                };
                visitor.revoking(&revoking, &mut progress);
                state = inner.lock();
                continue;
            }
            let now = Instant::now();
            wake_others |= self.sync(&mut state, now, &mut events);
            let synced = self.generation.is_some();
            if synced && self.next_commit.is_some_and(|t| now >= t) {
                // Membership was just ensured, so only writing the offsets
                // to a data directory can fail; the next commit retries.
                if let Err(e) = self.commit_locked(&mut state) {
                    tracing::warn!(group = %self.config.group_id, error = %e, "periodic commit failed");
                }
                self.next_commit = now.checked_add(self.config.commit_interval);
            }
            let fetched = if synced { self.fetch(&state, max) } else { 0 };
            if fetched > 0 || (synced && !events.is_empty()) || deadline.is_some_and(|d| now >= d) {
                break;
            }
            if std::mem::take(&mut wake_others) {
                inner.changed.notify_all();
            }
            let group = group_of(&mut state, &self.config.group_id);
            let until = [deadline, group.next_expiry(&self.member_id)]
                .into_iter()
                .flatten()
                .min();
            state = inner.wait(state, until);
        }
        if let Some(m) = group_of(&mut state, &self.config.group_id).member_mut(&self.member_id) {
            m.heartbeat(Instant::now(), false);
        }
        if wake_others {
            inner.changed.notify_all();
        }
        drop(state);

        for event in events {
            visitor.event(event);
        }
        for (r, key, value, headers, timestamp) in self.batch.iter() {
            let owned = &self.owned[r.slot];
            let record = RecordRef {
                topic: &owned.tp.topic,
                partition: owned.tp.partition,
                offset: r.offset,
                key,
                value,
                timestamp: Some(timestamp),
                headers,
            };
            if visitor.record(record) {
                self.owned[r.slot].stored = Some(r.offset + 1);
            }
        }
        Ok(self.batch.len())
    }

    fn store_offset(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<()> {
        self.ensure_open()?;
        if next_offset < 0 {
            return Err(Error::InvalidInput(format!(
                "offset {next_offset} for {topic}/{partition} is negative"
            )));
        }
        match self
            .owned
            .iter_mut()
            .find(|o| o.tp.partition == partition && o.tp.topic == topic)
        {
            Some(owned) => {
                owned.stored = Some(next_offset);
                Ok(())
            }
            None => Err(Error::InvalidInput(format!(
                "{topic}/{partition} is not assigned to this consumer"
            ))),
        }
    }

    fn commit(&mut self) -> Result<()> {
        self.ensure_open()?;
        let inner = Arc::clone(&self.inner);
        let mut state = inner.lock();
        self.commit_locked(&mut state)
    }

    fn assignment(&self) -> Result<Vec<TopicPartition>> {
        self.ensure_open()?;
        Ok(self.owned.iter().map(|o| o.tp.clone()).collect())
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let mut state = inner.lock();
        let committed = self.commit_locked(&mut state);
        self.leave(&mut state);
        inner.unlock_and_wake(state);
        committed
    }
}

/// Leaving without committing, as a crashed process's session ends.
impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        if !self.closed {
            let inner = Arc::clone(&self.inner);
            let mut state = inner.lock();
            self.leave(&mut state);
            inner.unlock_and_wake(state);
        }
    }
}

/// Adds a new member to its group (creating the group) and starts a new
/// generation. Member ids sort in joining order, as Kafka's mostly do.
fn enter(state: &mut State, config: &ConsumerConfig, now: Instant) -> String {
    state.next_member += 1;
    let id = format!("{}-{:010}", config.client_id, state.next_member);
    let State { topics, groups, .. } = state;
    let group = groups.entry(config.group_id.clone()).or_default();
    group.join(
        id.clone(),
        config.topics.clone(),
        config.session_timeout,
        now,
    );
    group.rebalance(|t| topics.get(t).map(|t| t.partitions.len()));
    id
}

impl EmbeddedConsumer {
    /// Whether the next sync revokes what this member owns (a rebalance it
    /// has not followed yet, while it is still a member).
    fn revocation_due(&self, state: &mut State) -> bool {
        if self.owned.is_empty() {
            return false;
        }
        let group = group_of(state, &self.config.group_id);
        group.member(&self.member_id).is_some() && self.generation != Some(group.generation)
    }
}

fn group_of<'a>(state: &'a mut State, group: &str) -> &'a mut Group {
    group_of_mut(&mut state.groups, group)
}

fn group_of_mut<'a>(groups: &'a mut HashMap<String, Group>, group: &str) -> &'a mut Group {
    groups.get_mut(group).expect("groups are never removed")
}

/// Commits the offsets stored for `owned` in memory; returns whether any
/// changed (and so must be written to a data directory).
fn commit_owned(group: &mut Group, topics: &HashMap<String, Topic>, owned: &mut [Owned]) -> bool {
    let mut changed = false;
    for o in owned.iter_mut() {
        let Some(next) = o.stored.filter(|&s| o.committed != Some(s)) else {
            continue;
        };
        // A deleted topic's offsets are gone; do not resurrect them.
        if topics.get(&o.tp.topic).is_some_and(|t| t.id == o.topic_id) {
            group.commit(&o.tp.topic, o.tp.partition, next);
            o.committed = Some(next);
            changed = true;
        }
    }
    changed
}

/// The committed offset if it is still in the log, else the reset policy's.
fn start_position(group: &Group, topic: &Topic, tp: &TopicPartition, reset: OffsetReset) -> i64 {
    let partition = &topic.partitions[tp.partition as usize];
    match group.committed(&tp.topic, tp.partition) {
        Some(c) if (partition.low()..=partition.high()).contains(&c) => c,
        _ => reset_position(topic, tp.partition, reset),
    }
}

fn reset_position(topic: &Topic, partition: i32, reset: OffsetReset) -> i64 {
    let partition = &topic.partitions[partition as usize];
    match reset {
        OffsetReset::Earliest => partition.low(),
        OffsetReset::Latest => partition.high(),
    }
}
