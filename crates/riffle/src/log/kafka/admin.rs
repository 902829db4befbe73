//! Topic administration. Every change waits until the cluster's metadata
//! shows it, so the caller can use the topic as soon as the call returns;
//! nothing here sleeps a fixed time and hopes.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::block_on::block_on;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::log::{GroupMember, GroupOffset, PartitionInfo, TopicInfo, TopicPartition, TopicSpec};

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
pub(super) fn metadata(
    log: &KafkaLog,
    name: &str,
    timeout: Duration,
) -> Result<Option<Vec<PartitionInfo>>> {
    let admin = log.admin()?;
    let md = admin
        .inner()
        .fetch_metadata(Some(name), timeout)
        .map_err(|e| log.unreachable(e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == name) else {
        return Ok(None);
    };
    if t.error().is_some() {
        return Ok(None);
    }
    let mut parts: Vec<PartitionInfo> = t
        .partitions()
        .iter()
        .map(|p| PartitionInfo {
            id: p.id(),
            leader: p.leader(),
            replicas: p.replicas().to_vec(),
            low: 0,
            high: 0,
        })
        .collect();
    parts.sort_by_key(|p| p.id);
    Ok(Some(parts))
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
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                return Err(Error::TopicExists(name))
            }
            Err((
                name,
                code @ (RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidConfig),
            )) => {
                return Err(Error::InvalidInput(format!(
                    "cannot create topic '{name}': {code}"
                )))
            }
            Err((name, code)) => {
                return Err(Error::Backend(format!(
                    "cannot create topic '{name}': {code}"
                )))
            }
        }
    }
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
    crate::log::validate_topic_name(name)?;
    let results = block_on(log.admin()?.delete_topics(&[name], &options(timeout)))
        .map_err(|e| log.unreachable(e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                return Err(Error::UnknownTopic(name))
            }
            Err((name, code)) => {
                return Err(Error::Backend(format!(
                    "cannot delete topic '{name}': {code}"
                )))
            }
        }
    }
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

/// A consumer that never joins a group: used for watermarks and for reading
/// a group's committed offsets. `read_committed` makes offset requests wait
/// for open transactions: committed offsets then include those of
/// transactions whose commit is still being written, and the high watermark
/// becomes the last stable offset.
fn probe(log: &KafkaLog, group: &str, read_committed: bool) -> Result<BaseConsumer> {
    let mut c = log.client_config();
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation(read_committed));
    for (k, v) in &log.inner.properties {
        c.set(k, v);
    }
    Ok(c.create()?)
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
            Err(e) => Err(log.unreachable(e)),
        },
    )
}

fn with_watermarks(
    log: &KafkaLog,
    name: &str,
    mut parts: Vec<PartitionInfo>,
    timeout: Duration,
) -> Result<TopicInfo> {
    let probe = probe(log, "riffle-admin", false)?;
    for p in &mut parts {
        (p.low, p.high) = watermarks(log, &probe, name, p.id, timeout)?;
    }
    Ok(TopicInfo {
        name: name.to_owned(),
        partitions: parts,
    })
}

pub(super) fn describe_topic(log: &KafkaLog, name: &str, timeout: Duration) -> Result<TopicInfo> {
    crate::log::validate_topic_name(name)?;
    let parts =
        metadata(log, name, timeout)?.ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
    with_watermarks(log, name, parts, timeout)
}

pub(super) fn list_topics(log: &KafkaLog, timeout: Duration) -> Result<Vec<TopicInfo>> {
    let md = log
        .admin()?
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| log.unreachable(e))?;
    let mut names: Vec<String> = md
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__") && t.error().is_none())
        .map(|t| t.name().to_owned())
        .collect();
    names.sort();
    let mut topics = Vec::with_capacity(names.len());
    for n in &names {
        match describe_topic(log, n, timeout) {
            Ok(t) => topics.push(t),
            // Deleted since the listing.
            Err(Error::UnknownTopic(_)) => {}
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
