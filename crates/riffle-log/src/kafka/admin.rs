//! Topic administration. Every change waits until the cluster's metadata
//! shows it, so the caller can use the topic as soon as the call returns;
//! nothing here sleeps a fixed time and hopes.

use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminOptions, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::block_on::block_on;
use super::error::{kafka_code_error, kafka_error};
use super::off_thread::OffThread;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{
    GroupListing, GroupMember, GroupOffset, PartitionInfo, TopicConfig, TopicInfo, TopicPartition,
    TopicSpec,
};

const STEP: Duration = Duration::from_millis(50);

fn options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout))
}

/// Polls `check` until it returns `Some`, or fails with a timeout naming `what`.
pub(super) fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!("{what} after {timeout:?}")));
        }
        std::thread::sleep(STEP);
    }
}

/// The topic's partitions as metadata shows them now; `None` if absent.
///
/// Always asks for the whole cluster's metadata, never for the one topic: a
/// metadata request naming a topic lets a broker at Kafka's default
/// `auto.create.topics.enable=true` create it, so checking that a deleted
/// topic is gone would bring it back (with the broker's default partition
/// count), and describing a missing topic would create it.
pub(super) fn metadata(
    log: &KafkaLog,
    name: &str,
    timeout: Duration,
) -> Result<Option<Vec<PartitionInfo>>> {
    Ok(all_metadata(log, timeout)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p))
}

/// Every topic (internal ones included) with its partitions, from one
/// metadata request for the whole cluster; topics in error are left out.
pub(super) fn all_metadata(
    log: &KafkaLog,
    timeout: Duration,
) -> Result<Vec<(String, Vec<PartitionInfo>)>> {
    let admin = log.admin()?;
    let md = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out = Vec::new();
    for t in md.topics().iter().filter(|t| t.error().is_none()) {
        let mut parts: Vec<PartitionInfo> = t
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                id: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
                low: 0,
                high: 0,
            })
            .collect();
        parts.sort_by_key(|p| p.id);
        out.push((t.name().to_owned(), parts));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The first failure among the per-topic results of an admin request
/// (`what` the request did, for the message): the codes a caller acts on
/// become their own errors, the rest keep their code.
fn check_topics(
    what: &str,
    results: Vec<std::result::Result<String, (String, RDKafkaErrorCode)>>,
) -> Result<()> {
    use RDKafkaErrorCode as C;
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, C::TopicAlreadyExists)) => return Err(Error::TopicExists(name)),
            Err((name, C::UnknownTopicOrPartition)) => return Err(Error::UnknownTopic(name)),
            Err((
                name,
                code @ (C::InvalidTopic
                | C::InvalidPartitions
                | C::InvalidReplicationFactor
                | C::InvalidConfig),
            )) => {
                return Err(Error::InvalidInput(format!(
                    "cannot {what} '{name}': {code}"
                )))
            }
            Err((name, code)) => {
                return Err(kafka_code_error(format!("cannot {what} '{name}'"), code))
            }
        }
    }
    Ok(())
}

pub(super) fn create_topic(log: &KafkaLog, spec: &TopicSpec, timeout: Duration) -> Result<()> {
    spec.validate()?;
    let mut topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication as i32),
    );
    for (k, v) in &spec.configs {
        topic = topic.set(k, v);
    }
    let results = block_on(log.admin()?.create_topics([&topic], &options(timeout)))
        .map_err(|e| log.unreachable(e))?;
    check_topics("create topic", results)?;
    wait_for(
        timeout,
        &format!("topic '{}' not visible in metadata", spec.name),
        || {
            Ok(metadata(log, &spec.name, timeout)?
                .filter(|p| p.len() == spec.partitions as usize && p.iter().all(|p| p.leader >= 0)))
        },
    )?;
    Ok(())
}

pub(super) fn delete_topic(log: &KafkaLog, name: &str, timeout: Duration) -> Result<()> {
    crate::validate_topic_name(name)?;
    let results = block_on(log.admin()?.delete_topics(&[name], &options(timeout)))
        .map_err(|e| log.unreachable(e))?;
    check_topics("delete topic", results)?;
    wait_for(
        timeout,
        &format!("topic '{name}' still in metadata"),
        || Ok(metadata(log, name, timeout)?.is_none().then_some(())),
    )
}

pub(super) fn recreate_topic(log: &KafkaLog, spec: &TopicSpec, timeout: Duration) -> Result<()> {
    spec.validate()?;
    match delete_topic(log, &spec.name, timeout) {
        Ok(()) | Err(Error::UnknownTopic(_)) => {}
        Err(e) => return Err(e),
    }
    // The controller may still be removing the old topic's partitions when
    // metadata already shows it gone; creation is refused until it is done.
    wait_for(
        timeout,
        &format!("topic '{}' could not be created again", spec.name),
        || match create_topic(log, spec, timeout) {
            Ok(()) => Ok(Some(())),
            Err(Error::TopicExists(_)) => Ok(None),
            Err(e) => Err(e),
        },
    )
}

/// Raises the partition count (CreatePartitions) and waits until metadata
/// shows every partition with a leader.
pub(super) fn add_partitions(
    log: &KafkaLog,
    topic: &str,
    total: i32,
    timeout: Duration,
) -> Result<()> {
    crate::validate_topic_name(topic)?;
    let now = metadata(log, topic, timeout)?
        .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?
        .len();
    if total <= now as i32 {
        return Err(Error::InvalidInput(format!(
            "topic '{topic}' has {now} partitions: the count can only be increased"
        )));
    }
    let new = NewPartitions::new(topic, total as usize);
    let results = block_on(log.admin()?.create_partitions([&new], &options(timeout)))
        .map_err(|e| log.unreachable(e))?;
    check_topics("add partitions to", results)?;
    wait_for(
        timeout,
        &format!("topic '{topic}' not shown with {total} partitions"),
        || {
            Ok(metadata(log, topic, timeout)?
                .filter(|p| p.len() == total as usize && p.iter().all(|p| p.leader >= 0))
                .map(|_| ()))
        },
    )
}

/// The topic's configs whose source is not Kafka's default (DescribeConfigs).
pub(super) fn topic_configs(
    log: &KafkaLog,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<TopicConfig>> {
    crate::validate_topic_name(topic)?;
    // DescribeConfigs answers for a topic that does not exist on some
    // versions; metadata settles it (without creating it).
    if metadata(log, topic, timeout)?.is_none() {
        return Err(Error::UnknownTopic(topic.to_owned()));
    }
    let results = block_on(
        log.admin()?
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options(timeout)),
    )
    .map_err(|e| log.unreachable(e))?;
    let mut out = Vec::new();
    for r in results {
        let resource = match r {
            Ok(r) => r,
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                return Err(Error::UnknownTopic(topic.to_owned()))
            }
            Err(code) => {
                return Err(kafka_code_error(
                    format!("cannot describe the configs of topic '{topic}'"),
                    code,
                ))
            }
        };
        for e in resource.entries {
            let source = match e.source {
                ConfigSource::Default => continue,
                ConfigSource::DynamicTopic => "topic",
                _ => "broker",
            };
            if e.is_default || e.is_sensitive {
                continue;
            }
            out.push(TopicConfig {
                name: e.name,
                value: e.value.unwrap_or_default(),
                source: source.into(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// ListOffsets by timestamp for every partition of the topic.
pub(super) fn offsets_for_time(
    log: &KafkaLog,
    topic: &str,
    timestamp: i64,
    timeout: Duration,
) -> Result<Vec<(i32, Option<i64>)>> {
    let parts =
        metadata(log, topic, timeout)?.ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, p.id, Offset::Offset(timestamp))
            .map_err(kafka_error)?;
    }
    let got = probe(log, "riffle-admin", false)?
        .offsets_for_times(tpl, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out: Vec<(i32, Option<i64>)> = got
        .elements()
        .iter()
        .map(|e| {
            let found = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            (e.partition(), found)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Consumer groups from the coordinators (ListGroups and DescribeGroups).
/// A group that only ever committed offsets (never joined) has an empty
/// protocol type, so that is kept as well as `consumer`.
pub(super) fn list_groups(log: &KafkaLog, timeout: Duration) -> Result<Vec<GroupListing>> {
    let list = log
        .admin()?
        .inner()
        .fetch_group_list(None, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out: Vec<GroupListing> = list
        .groups()
        .iter()
        .filter(|g| matches!(g.protocol_type(), "consumer" | ""))
        .filter(|g| g.state() != "Dead")
        .map(|g| GroupListing {
            name: g.name().to_owned(),
            state: g.state().to_owned(),
            members: g.members().len(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every committed offset of the group: one OffsetFetch for all the
/// partitions of all topics in the cluster's metadata.
pub(super) fn group_offsets(
    log: &KafkaLog,
    group: &str,
    timeout: Duration,
) -> Result<Vec<GroupOffset>> {
    let mut tpl = TopicPartitionList::new();
    for (name, parts) in all_metadata(log, timeout)? {
        if name.starts_with("__") {
            continue;
        }
        for p in parts {
            tpl.add_partition(&name, p.id);
        }
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    let got = probe(log, group, true)?
        .committed_offsets(tpl, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out: Vec<GroupOffset> = got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(GroupOffset {
                partition: TopicPartition::new(e.topic(), e.partition()),
                committed: Some(o),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

/// Commits offsets in the group's name from outside it (an OffsetCommit
/// without a member id), which the coordinator accepts only while the group
/// has no members.
pub(super) fn set_group_offsets(
    log: &KafkaLog,
    group: &str,
    offsets: &[(TopicPartition, i64)],
    timeout: Duration,
) -> Result<()> {
    if !group_members(log, group, timeout)?.is_empty() {
        return Err(Error::GroupNotEmpty(group.to_owned()));
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, o) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))
            .map_err(kafka_error)?;
    }
    let consumer = probe(log, group, false)?;
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::UnknownMemberId
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::RebalanceInProgress
                )
            ) =>
        {
            Err(Error::GroupNotEmpty(group.to_owned()))
        }
        Err(e) => Err(log.unreachable(e)),
    }
}

/// DeleteGroups.
pub(super) fn delete_group(log: &KafkaLog, group: &str, timeout: Duration) -> Result<()> {
    let results = block_on(log.admin()?.delete_groups(&[group], &options(timeout)))
        .map_err(|e| log.unreachable(e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::GroupIdNotFound)) => {
                return Err(Error::UnknownGroup(name))
            }
            Err((name, RDKafkaErrorCode::NonEmptyGroup)) => return Err(Error::GroupNotEmpty(name)),
            Err((name, code)) => {
                return Err(kafka_code_error(
                    format!("cannot delete group '{name}'"),
                    code,
                ))
            }
        }
    }
    Ok(())
}

/// A consumer that never joins a group: used for watermarks and for reading
/// a group's committed offsets. `read_committed` makes offset requests wait
/// for open transactions: committed offsets then include those of
/// transactions whose commit is still being written, and the high watermark
/// becomes the last stable offset.
fn probe(log: &KafkaLog, group: &str, read_committed: bool) -> Result<OffThread<BaseConsumer>> {
    let mut c = log.client_config();
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation(read_committed));
    for (k, v) in &log.inner.properties {
        c.set(k, v);
    }
    c.create().map(OffThread::new).map_err(kafka_error)
}

pub(super) fn isolation(read_committed: bool) -> &'static str {
    if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    }
}

/// The low and high watermarks of a partition as `consumer` sees them (the
/// high one is the last stable offset for a `read_committed` consumer),
/// waiting while a new topic's leader moves in.
pub(super) fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    log: &KafkaLog,
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64)> {
    wait_for(
        timeout,
        &format!("watermarks of {topic}/{partition}"),
        || match consumer.fetch_watermarks(topic, partition, timeout) {
            Ok(w) => Ok(Some(w)),
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotLeaderForPartition
                            | RDKafkaErrorCode::LeaderNotAvailable
                            | RDKafkaErrorCode::UnknownTopicOrPartition
                    )
                ) =>
            {
                Ok(None)
            }
            // A client made before the topic grew knows the new partitions
            // only from its next metadata refresh (seconds away): ask now.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) => {
                consumer
                    .fetch_metadata(Some(topic), timeout)
                    .map_err(|e| log.unreachable(e))?;
                Ok(None)
            }
            Err(e) => Err(log.unreachable(e)),
        },
    )
}

fn with_watermarks(
    log: &KafkaLog,
    probe: &BaseConsumer,
    name: &str,
    mut parts: Vec<PartitionInfo>,
    timeout: Duration,
) -> Result<TopicInfo> {
    for p in &mut parts {
        (p.low, p.high) = watermarks(log, probe, name, p.id, timeout)?;
    }
    Ok(TopicInfo {
        name: name.to_owned(),
        partitions: parts,
    })
}

pub(super) fn describe_topic(log: &KafkaLog, name: &str, timeout: Duration) -> Result<TopicInfo> {
    crate::validate_topic_name(name)?;
    let parts =
        metadata(log, name, timeout)?.ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
    with_watermarks(
        log,
        &*probe(log, "riffle-admin", false)?,
        name,
        parts,
        timeout,
    )
}

pub(super) fn list_topics(log: &KafkaLog, timeout: Duration) -> Result<Vec<TopicInfo>> {
    /// A topic deleted since the listing has no watermarks: after this long
    /// without them, metadata is asked whether it is still there.
    const PATIENCE: Duration = Duration::from_secs(2);
    let all = all_metadata(log, timeout)?;
    let probe = probe(log, "riffle-admin", false)?;
    let mut topics = Vec::with_capacity(all.len());
    for (name, parts) in all.into_iter().filter(|(n, _)| !n.starts_with("__")) {
        match with_watermarks(log, &probe, &name, parts.clone(), PATIENCE.min(timeout)) {
            Ok(t) => topics.push(t),
            Err(Error::Timeout(_)) => {
                if metadata(log, &name, timeout)?.is_some() {
                    topics.push(with_watermarks(log, &probe, &name, parts, timeout)?);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(topics)
}

pub(super) fn committed_offsets(
    log: &KafkaLog,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<GroupOffset>> {
    let parts =
        metadata(log, topic, timeout)?.ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, p.id);
    }
    let got = probe(log, group, true)?
        .committed_offsets(tpl, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out: Vec<GroupOffset> = got
        .elements()
        .iter()
        .map(|e| GroupOffset {
            partition: TopicPartition::new(e.topic(), e.partition()),
            committed: match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            },
        })
        .collect();
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

/// The members of a classic consumer group and their assignments, from the
/// group coordinator (DescribeGroups).
pub(super) fn group_members(
    log: &KafkaLog,
    group: &str,
    timeout: Duration,
) -> Result<Vec<GroupMember>> {
    let list = log
        .admin()?
        .inner()
        .fetch_group_list(Some(group), timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut out = Vec::new();
    for g in list.groups().iter().filter(|g| g.name() == group) {
        for m in g.members() {
            out.push(GroupMember {
                id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Makes a stable group's leader assign partitions anew: a short-lived
/// member joins, subscribed to `via` alone, and leaves once it has been
/// given its share. It joins with the assignor the group uses (a group
/// takes only members that share one) and asks for no topic the others
/// read, so what they are given is what the leader computes for them from
/// the metadata it fetches for the assignment.
pub(super) fn rebalance_group(
    log: &KafkaLog,
    group: &str,
    via: &str,
    timeout: Duration,
) -> Result<()> {
    let list = log
        .admin()?
        .inner()
        .fetch_group_list(Some(group), timeout)
        .map_err(|e| log.unreachable(e))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(());
    };
    // A group rebalancing already assigns anew; one without members has
    // nobody to assign to.
    if info.state() != "Stable" || info.members().is_empty() {
        return Ok(());
    }
    let mut c = log.client_config();
    for (k, v) in &log.inner.properties {
        c.set(k, v);
    }
    c.set("group.id", group)
        .set("client.id", format!("{group}-rebalance"))
        .set("partition.assignment.strategy", info.protocol())
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(kafka_error)?;
    consumer.subscribe(&[via]).map_err(kafka_error)?;
    let joined = wait_for(timeout, &format!("a rebalance of group {group}"), || {
        if let Some(Err(e)) = consumer.poll(STEP) {
            tracing::debug!("rebalancing group {group}: {e}");
        }
        let given = consumer.assignment().map_err(kafka_error)?;
        Ok((given.count() > 0).then_some(()))
    });
    // Leaving before the close: librdkafka's close waits for a final
    // rebalance callback, which this member has no use for.
    consumer.unsubscribe();
    let deadline = Instant::now() + STEP * 20;
    while Instant::now() < deadline && consumer.assignment().is_ok_and(|a| a.count() > 0) {
        consumer.poll(STEP);
    }
    drop(OffThread::new(consumer));
    joined
}

/// The partitions of a consumer-protocol assignment: a version (int16),
/// then an array (int32 count) of topics, each a string (int16 length) and
/// an array of int32 partitions, then user data, which is ignored. A
/// truncated assignment yields what could be read.
fn parse_assignment(bytes: &[u8]) -> Vec<TopicPartition> {
    let mut rest = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let mut out = Vec::new();
    let mut read = || -> Option<()> {
        take(2)?;
        let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let topic = String::from_utf8_lossy(take(len.max(0) as usize)?).into_owned();
            let n = i32::from_be_bytes(take(4)?.try_into().ok()?);
            for _ in 0..n.max(0) {
                let p = i32::from_be_bytes(take(4)?.try_into().ok()?);
                out.push(TopicPartition::new(topic.clone(), p));
            }
        }
        Some(())
    };
    let _ = read();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_parsed_and_truncation_keeps_what_was_read() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (topic, parts) in [("sensor", &[3i32, 1][..]), ("s", &[0][..])] {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend([0xff, 0xff, 0xff, 0xff]); // no user data
        let tp = |t: &str, p| TopicPartition::new(t, p);
        assert_eq!(
            parse_assignment(&b),
            vec![tp("s", 0), tp("sensor", 1), tp("sensor", 3)]
        );
        assert_eq!(parse_assignment(&b[..22]), vec![tp("sensor", 3)]);
        assert!(parse_assignment(&[]).is_empty());
    }
}
