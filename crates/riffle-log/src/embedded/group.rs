//! Consumer groups: membership, range assignment and committed offsets.
//!
//! All members live in this process, so the group coordinator is simply this
//! state under the log's lock. It follows Kafka's eager protocol: every change
//! of membership (or of a subscribed topic) starts a new generation, in which
//! every member gives up all its partitions and takes up its new share. Its
//! one subtle duty is the barrier Kafka's join phase provides: a member may
//! take up its share only once the previous owners have released those
//! partitions (committing what they stored) or have left, so that the next
//! owner continues exactly where the previous one stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::{GroupMember, TopicPartition};

/// Committed offsets: topic -> partition -> next offset to consume.
pub(super) type Offsets = HashMap<String, BTreeMap<i32, i64>>;

/// A member's standing at one moment: what a [`crate::GroupToken`]
/// carries on the embedded log.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) group: String,
    pub(super) member: String,
    /// The generation whose share the member held; `None` if it held none.
    pub(super) generation: Option<u64>,
}

#[derive(Debug)]
pub(super) struct Member {
    topics: Vec<String>,
    session_timeout: Duration,
    last_seen: Instant,
    /// A member waiting inside `poll` is alive (Kafka's background heartbeat).
    in_poll: bool,
    /// Its share in the current generation.
    pub(super) assignment: Vec<TopicPartition>,
    /// What it has taken up and not yet released.
    held: Vec<TopicPartition>,
    /// The generation it took up `held` in; `None` while it holds nothing
    /// of any generation (joined, or released and waiting).
    held_generation: Option<u64>,
}

impl Member {
    fn subscribes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }

    /// When it will have been silent too long; never while it waits in poll
    /// (or if the timeout is too long to represent).
    fn expiry(&self) -> Option<Instant> {
        if self.in_poll {
            return None;
        }
        self.last_seen.checked_add(self.session_timeout)
    }

    /// Notes that the member is alive, and whether it is now waiting in poll.
    pub(super) fn heartbeat(&mut self, now: Instant, in_poll: bool) {
        self.last_seen = now;
        self.in_poll = in_poll;
    }
}

#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) generation: u64,
    /// Sorted by member id, the order the range assignor hands out ranges in.
    members: BTreeMap<String, Member>,
    /// Topic -> partition -> next offset to consume.
    committed: Offsets,
    /// In a persistent log: the offsets changed but writing them failed, so
    /// the next commit writes them even if nothing changes meanwhile.
    pub(super) unsaved: bool,
}

impl Group {
    /// A group without members, with offsets committed earlier (loaded from
    /// a data directory).
    pub(super) fn with_offsets(committed: Offsets) -> Self {
        Self {
            committed,
            ..Self::default()
        }
    }

    /// Every committed offset: topic -> partition -> next offset to consume.
    pub(super) fn offsets(&self) -> &Offsets {
        &self.committed
    }

    pub(super) fn join(
        &mut self,
        id: String,
        topics: Vec<String>,
        session_timeout: Duration,
        now: Instant,
    ) {
        let member = Member {
            topics,
            session_timeout,
            last_seen: now,
            in_poll: false,
            assignment: Vec::new(),
            held: Vec::new(),
            held_generation: None,
        };
        self.members.insert(id, member);
    }

    /// Removes a member; its partitions become free at once.
    pub(super) fn leave(&mut self, id: &str) -> bool {
        self.members.remove(id).is_some()
    }

    /// Every member and its share of the current generation.
    pub(super) fn members(&self) -> Vec<GroupMember> {
        self.members
            .iter()
            .map(|(id, m)| GroupMember {
                id: id.clone(),
                // Ids are the client id and a joining number.
                client_id: id
                    .rsplit_once('-')
                    .map_or(id.as_str(), |(c, _)| c)
                    .to_owned(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has anything to show: members or offsets.
    pub(super) fn exists(&self) -> bool {
        !self.members.is_empty() || self.committed.values().any(|o| !o.is_empty())
    }

    pub(super) fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub(super) fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.get_mut(id)
    }

    pub(super) fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribes(topic))
    }

    /// Removes the members (other than `me`) silent for longer than their
    /// session timeout, and returns their ids.
    pub(super) fn evict_expired(&mut self, now: Instant, me: &str) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| id.as_str() != me && m.expiry().is_some_and(|e| now > e))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        expired
    }

    /// When the next member other than `me` would expire, so that a waiting
    /// member wakes up in time to evict it.
    pub(super) fn next_expiry(&self, me: &str) -> Option<Instant> {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != me)
            .filter_map(|(_, m)| m.expiry())
            .min()
    }

    /// Starts a new generation and computes every member's share with Kafka's
    /// range assignor: per topic, the subscribers in member-id order get
    /// consecutive ranges, the first `partitions % members` one extra.
    pub(super) fn rebalance(&mut self, partitions: impl Fn(&str) -> Option<usize>) {
        self.generation += 1;
        for m in self.members.values_mut() {
            m.assignment.clear();
        }
        let topics: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        for topic in topics {
            let Some(n) = partitions(&topic) else {
                continue;
            };
            let subscribers = self
                .members
                .values()
                .filter(|m| m.subscribes(&topic))
                .count();
            let (each, extra) = (n / subscribers, n % subscribers);
            let mut next = 0;
            for (i, m) in self
                .members
                .values_mut()
                .filter(|m| m.subscribes(&topic))
                .enumerate()
            {
                let take = each + usize::from(i < extra);
                m.assignment.extend(
                    (next..next + take).map(|p| TopicPartition::new(topic.as_str(), p as i32)),
                );
                next += take;
            }
        }
    }

    /// Whether no member other than `me` still holds any of `partitions`.
    pub(super) fn is_free(&self, me: &str, partitions: &[TopicPartition]) -> bool {
        let wanted: HashSet<&TopicPartition> = partitions.iter().collect();
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != me)
            .all(|(_, m)| !m.held.iter().any(|p| wanted.contains(p)))
    }

    /// Records what `me` holds now: its share of `generation`, or nothing
    /// (`None`) once it has released its partitions.
    pub(super) fn set_held(
        &mut self,
        me: &str,
        partitions: Vec<TopicPartition>,
        generation: Option<u64>,
    ) {
        if let Some(m) = self.members.get_mut(me) {
            m.held = partitions;
            m.held_generation = generation;
        }
    }

    /// Whether `member` still holds the share it took up in `generation`.
    /// Offsets committed in its name are safe exactly then: the next owner
    /// of those partitions cannot start before they are released. This is
    /// also true while a rebalance waits for the member (its revocation
    /// callback commits then), as on Kafka, where the generation changes
    /// only when every member has rejoined.
    pub(super) fn holds(&self, member: &str, generation: u64) -> bool {
        self.members
            .get(member)
            .is_some_and(|m| m.held_generation == Some(generation))
    }

    pub(super) fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.committed.get(topic)?.get(&partition).copied()
    }

    pub(super) fn commit(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.committed.get_mut(topic) {
            Some(offsets) => {
                offsets.insert(partition, offset);
            }
            None => {
                self.committed
                    .insert(topic.to_owned(), BTreeMap::from([(partition, offset)]));
            }
        }
    }

    /// Drops the offsets of a deleted topic, as Kafka does, so that a topic
    /// recreated under the same name starts afresh. Returns whether there
    /// were any.
    pub(super) fn forget_topic(&mut self, topic: &str) -> bool {
        self.committed.remove(topic).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_of(n: usize) -> Group {
        let mut g = Group::default();
        for i in 0..n {
            g.join(
                format!("m-{i:02}"),
                vec!["t".into()],
                Duration::from_secs(10),
                Instant::now(),
            );
        }
        g
    }

    fn shares(g: &Group) -> Vec<Vec<i32>> {
        g.members
            .values()
            .map(|m| m.assignment.iter().map(|tp| tp.partition).collect())
            .collect()
    }

    #[test]
    fn range_assignor_splits_like_kafka() {
        let mut g = group_of(3);
        g.rebalance(|_| Some(8));
        assert_eq!(shares(&g), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        g.rebalance(|_| None);
        assert_eq!(shares(&g), vec![Vec::<i32>::new(); 3]);
    }
}
