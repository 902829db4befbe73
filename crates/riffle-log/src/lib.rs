//! The log layer of Riffle: the log contract and its backends, in a crate of its
//! own so that nothing here can reach up into the stream runtime, state or
//! operations (Riffle re-exports it as `riffle::log`).
//!
//! A *log* is a set of named topics, each split into partitions, each
//! partition an append-only sequence of keyed records addressed by offset.
//! Consumers join a *group*: the group's members share the partitions of the
//! topics they subscribe to, and remember how far they got by committing
//! offsets. That is the whole contract the stream runtime relies on, and both
//! backends honour it:
//!
//! - [`kafka::KafkaLog`]: Apache Kafka through librdkafka.
//! - [`embedded::EmbeddedLog`]: an in-process log with the same semantics, so
//!   that every program runs with nothing installed.
//!
//! The traits are deliberately low level and synchronous, like librdkafka
//! itself: a consumer is polled from one thread and hands records to a visitor
//! by reference, so the hot path neither copies payloads nor allocates per
//! record.
//!
//! # Layout
//!
//! - this file: the contract ([`Log`], [`LogConsumer`], [`LogProducer`],
//!   [`TxnProducer`], [`LogReader`]) and the records it moves.
//! - [`kafka`]: Apache Kafka through librdkafka: consumer, producer,
//!   transactions, admin, readers; client settings from a properties file.
//! - [`embedded`]: the in-process log with the same semantics, on disk or
//!   in memory.
//! - `headers`: record headers: a lazy view, owned copies, their encoding.
//! - `partition`: murmur2 key partitioning, as the Java client does it.

/// The error type of every layer, from the base crate.
use riffle_base::error;

pub mod embedded;
pub(crate) mod headers;
pub mod kafka;
mod partition;

pub use headers::{Header, Headers, HeadersIter, OwnedHeader};
pub use partition::{murmur2, partition_for_key};

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A record as a consumer sees it, borrowed from the backend's buffer.
///
/// Handlers that need to keep a record beyond the call copy it with
/// [`RecordRef::to_owned`].
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Milliseconds since the Unix epoch, when the backend knows it.
    pub timestamp: Option<i64>,
    /// A view over the backend's buffer, decoded only if iterated.
    pub headers: Headers<'a>,
}

impl RecordRef<'_> {
    /// The key as UTF-8, if there is a key and it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    pub fn to_owned(&self) -> Record {
        Record {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            timestamp: self.timestamp,
            headers: self.headers.to_vec(),
        }
    }
}

/// An owned copy of a consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub headers: Vec<OwnedHeader>,
}

impl Record {
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            value: &self.value,
            timestamp: self.timestamp,
            headers: Headers::from(&self.headers),
        }
    }
}

/// A record to append. Borrowed, so sending does not force the caller to
/// allocate; the backend copies what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone: Kafka's null value, which deletes the key
    /// from a compacted topic. Read back, a tombstone's value is empty (the
    /// embedded log stores it so).
    pub value: Option<&'a [u8]>,
    /// Explicit partition; `None` lets the backend choose: murmur2 of the key
    /// for keyed records (as the Java client does), spread for key-less ones.
    pub partition: Option<i32>,
    /// Headers to write with the record; empty by default. A consumed
    /// record's [`RecordRef::headers`] can be passed on as they are.
    pub headers: Headers<'a>,
    /// The record's timestamp, in milliseconds since the Unix epoch (the
    /// time it describes, as a simulator's simulated time); `None` (the
    /// default) stamps it with the time it is sent.
    pub timestamp: Option<i64>,
}

impl<'a> OutRecord<'a> {
    /// A record without headers, partitioned by its key.
    pub fn new(topic: &'a str, key: Option<&'a [u8]>, value: &'a [u8]) -> Self {
        Self {
            topic,
            key,
            value: Some(value),
            partition: None,
            headers: Headers::EMPTY,
            timestamp: None,
        }
    }

    /// The same record with `timestamp` (milliseconds since the Unix
    /// epoch) instead of the time it is sent.
    pub fn at(self, timestamp: i64) -> Self {
        Self {
            timestamp: Some(timestamp),
            ..self
        }
    }

    /// A tombstone for `key` in `partition`: in a compacted topic, the
    /// key's earlier records are removed, and in time the tombstone too.
    pub fn tombstone(topic: &'a str, key: &'a [u8], partition: Option<i32>) -> Self {
        Self {
            topic,
            key: Some(key),
            value: None,
            partition,
            headers: Headers::EMPTY,
            timestamp: None,
        }
    }

    /// The value's bytes; a tombstone's are empty.
    pub fn value_bytes(&self) -> &'a [u8] {
        self.value.unwrap_or_default()
    }

    /// The same record with `headers`.
    pub fn with_headers(self, headers: impl Into<Headers<'a>>) -> Self {
        Self {
            headers: headers.into(),
            ..self
        }
    }
}

/// Where a record ended up, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub topic: String,
    pub partition: i32,
    /// The record's offset, or the error that kept it from the log.
    pub result: std::result::Result<i64, String>,
    /// The record the log refused, so that it can be kept elsewhere (a
    /// dead-letter topic); `None` when delivered.
    pub undelivered: Option<Undelivered>,
}

/// The bytes of a record the log refused. Owned: refusals are rare, and the
/// report outlives the backend's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<OwnedHeader>,
    /// Why the log will refuse this record however often it is sent;
    /// `None` when it failed for a passing reason (a timeout, a purge) or
    /// only for being in a batch with a record refused for good.
    pub refusal: Option<Refusal>,
}

/// Why a log refuses a record for good: the record itself, or its topic,
/// is the cause, so sending it again cannot help. Under exactly-once such a
/// refusal spoils the whole transaction, so the runtime must tell it from a
/// passing failure, and a culprit from its companions in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than the topic (or the broker) accepts. Kafka refuses a whole
    /// batch for it, so the batch's other records get it too: compare a
    /// record's own size with the topic's `max.message.bytes` to tell.
    TooLarge,
    /// The client may not write to the topic.
    NotAuthorized,
    /// The record breaks a rule of the topic (no key on a compacted topic,
    /// a timestamp out of range, a policy).
    Invalid,
}

/// Called once per produced record, on whichever thread serves delivery
/// reports (Kafka: a thread that sends or flushes, or the producer's own;
/// the embedded log: the sender, within `send`). Keep it short: it runs on
/// the delivery path.
pub type DeliveryCallback = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

/// Where a consumer starts in a partition for which its group has no
/// committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the first record still in the log.
    #[default]
    Earliest,
    /// From the next record appended.
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

impl std::str::FromStr for OffsetReset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" | "smallest" | "beginning" => Ok(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Ok(OffsetReset::Latest),
            other => Err(Error::InvalidInput(format!(
                "offset reset must be 'earliest' or 'latest', not '{other}'"
            ))),
        }
    }
}

/// What a group member needs to join.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group_id: String,
    pub topics: Vec<String>,
    pub offset_reset: OffsetReset,
    /// A member that has not been heard from for this long is dropped from
    /// the group and its partitions reassigned.
    pub session_timeout: Duration,
    /// How often offsets stored with [`LogConsumer::store_offset`] are
    /// committed in the background. They are also committed when partitions
    /// are revoked and when the consumer closes.
    pub commit_interval: Duration,
    /// A name for logs and for the broker's view of the group.
    pub client_id: String,
    /// Skip records of aborted transactions and stop at the last stable
    /// offset (Kafka's `isolation.level=read_committed`). Needed to read the
    /// outputs of exactly-once applications.
    pub read_committed: bool,
    /// A name for this member that stays the same across restarts of its
    /// process (Kafka's static membership, `group.instance.id`), unique in
    /// the group. A member restarted under the same name within the
    /// session timeout takes its partitions back without a rebalance: the
    /// other members go on undisturbed. `None` (the default) joins as a
    /// new member each time.
    pub instance: Option<String>,
    /// The member must own the same partition numbers of every topic it
    /// reads, because it keeps state per partition number across them
    /// (co-partitioned inputs). On Kafka this takes the range assignor,
    /// whose rebalances are eager (every member gives up every partition);
    /// otherwise rebalances are incremental (cooperative-sticky): only the
    /// partitions that move change hands, and the others keep being
    /// processed. Only matters when more than one topic is read.
    pub co_partitioned: bool,
    /// Rebalance eagerly whatever the topics: every member gives up every
    /// partition (committing first) and gets its share anew. Exactly-once
    /// consumers need it on Kafka: a transaction's offsets carry the
    /// group's generation, which an incremental rebalance moves on under an
    /// open transaction, failing its commit.
    pub eager: bool,
}

impl ConsumerConfig {
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            client_id: "riffle".into(),
            read_committed: false,
            instance: None,
            co_partitioned: false,
            eager: false,
        }
    }
}

/// A change of the partitions a consumer owns: partitions added to its
/// assignment, or taken from it. Partitions a rebalance leaves where they
/// are see no event when rebalances are incremental (see
/// [`ConsumerConfig::co_partitioned`]); under eager rebalancing every
/// partition is revoked and the new assignment handed out whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

/// What a consumer's poll hands its caller: records, and changes of
/// assignment in the order they happened relative to the records.
pub trait PollVisitor {
    /// Handles one record. Returning `true` marks it processed: the backend
    /// stores its offset at once, so that even a revocation inside the same
    /// poll commits it. Return `false` for records still in flight elsewhere
    /// and mark them later with [`LogConsumer::store_offset`].
    fn record(&mut self, record: RecordRef<'_>) -> bool;

    fn event(&mut self, event: GroupEvent);

    /// Called before `partitions` are revoked, while they are still owned:
    /// the last chance to finish work on them and mark it through
    /// `progress`, so that the commit made on revocation hands the next
    /// owner exactly where this one stopped.
    fn revoking(&mut self, _partitions: &[TopicPartition], _progress: &mut dyn Progress) {}
}

/// How work on a consumer's records is reported back to it.
pub trait Progress {
    /// Marks everything before `next_offset` in the partition as processed
    /// (see [`LogConsumer::store_offset`]).
    fn store(&mut self, topic: &str, partition: i32, next_offset: i64);

    /// The consumer's current group membership, for committing offsets
    /// inside a transaction ([`TxnProducer::commit`]).
    fn group(&self) -> Result<GroupToken>;

    /// Whether the consumer's last poll filled its batch: more records are
    /// waiting, so time spent committing is time not spent processing.
    fn behind(&self) -> bool {
        false
    }
}

/// A consumer's membership of its group at one moment: the group and its
/// generation. A transaction that commits offsets with a token from an
/// older generation is refused, which is how a consumer that lost its
/// partitions (a zombie) is kept from committing over the new owner.
/// Opaque: each backend reads its own kind.
#[derive(Clone)]
pub struct GroupToken(pub(crate) Arc<dyn Any + Send + Sync>);

impl fmt::Debug for GroupToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupToken")
    }
}

/// One member of a consumer group. Used from a single thread.
pub trait LogConsumer: Send {
    /// Waits up to `timeout` for records and hands at most `max` of them
    /// (and any group events) to `visitor`. Returns the number of records.
    fn poll(
        &mut self,
        timeout: Duration,
        max: usize,
        visitor: &mut dyn PollVisitor,
    ) -> Result<usize>;

    /// Marks everything before `next_offset` in `partition` as processed. The
    /// offset is committed later (periodically, on revocation, on close), so
    /// a crash replays at most the records processed since the last commit.
    fn store_offset(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<()>;

    /// Commits stored offsets now and waits for the answer.
    fn commit(&mut self) -> Result<()>;

    /// The partitions this member currently owns.
    fn assignment(&self) -> Result<Vec<TopicPartition>>;

    /// This member's current group membership (see [`GroupToken`]).
    fn group(&self) -> Result<GroupToken>;

    /// Commits stored offsets and leaves the group, so that the partitions
    /// are handed to the remaining members at once rather than after the
    /// session timeout.
    fn close(&mut self) -> Result<()>;
}

/// Appends records to topics. Shared between threads.
pub trait LogProducer: Send + Sync {
    /// Queues a record without waiting for it to be written. Fails with
    /// [`Error::QueueFull`] when the local queue is full.
    fn send(&self, record: OutRecord<'_>) -> Result<()>;

    /// Serves delivery reports for up to `timeout`; call it when `send`
    /// reports a full queue.
    fn poll(&self, timeout: Duration);

    /// Waits until every queued record is delivered or `timeout` passes.
    fn flush(&self, timeout: Duration) -> Result<()>;

    /// Records queued and not yet delivered.
    fn in_flight(&self) -> usize;

    /// The largest record this producer sends, in bytes on the wire (key,
    /// value, headers and framing); `send` refuses larger ones with
    /// [`Error::Refused`]. `None` when there is no limit.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }
}

/// A producer whose records become visible in transactions: all the records
/// sent between [`TxnProducer::begin`] and [`TxnProducer::commit`], together
/// with the consumer offsets given to `commit`, or none of them.
///
/// A transactional producer is named by an id. Creating one fences any older
/// producer with the same id (its open transaction is aborted and it can no
/// longer commit), so a restarted process takes over from its predecessor at
/// once.
pub trait TxnProducer: LogProducer {
    /// Opens a transaction: records sent from now on belong to it.
    fn begin(&self) -> Result<()>;

    /// Commits the open transaction together with `offsets` (topic,
    /// partition, next offset) for the group `group` belongs to. Fails with
    /// [`Error::Fenced`] if a newer producer of the same id exists or the
    /// group has moved on to a newer generation; the transaction is then
    /// aborted. Any other failure leaves the transaction to be aborted.
    fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &GroupToken,
        timeout: Duration,
    ) -> Result<()>;

    /// Aborts the open transaction: its records are never seen by
    /// `read_committed` consumers.
    fn abort(&self, timeout: Duration) -> Result<()>;
}

/// Called with each record read by [`Log::read_partition`].
pub type ReadVisitor<'a> = &'a mut dyn FnMut(RecordRef<'_>) -> Result<()>;

/// How to create a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i16,
    /// Topic configs such as `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
            configs: Vec::new(),
        }
    }

    /// Checks the name and counts the way Kafka does, so both backends reject
    /// the same input with the same one-line message.
    pub fn validate(&self) -> Result<()> {
        validate_topic_name(&self.name)?;
        if self.partitions < 1 {
            return Err(Error::InvalidInput(format!(
                "partition count must be at least 1, not {}",
                self.partitions
            )));
        }
        if self.replication < 1 {
            return Err(Error::InvalidInput(format!(
                "replication factor must be at least 1, not {}",
                self.replication
            )));
        }
        Ok(())
    }
}

/// Kafka's topic naming rule: 1-249 characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidInput(format!("topic name '{name}' {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "contains '{c}'; use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A partition as described by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader (all of them on the embedded
    /// log, which does not replicate).
    pub isr: Vec<i32>,
    /// Offset of the first record still in the log.
    pub low: i64,
    /// Offset the next record will get.
    pub high: i64,
}

/// A topic as described by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

/// A committed position of a group in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub partition: TopicPartition,
    pub committed: Option<i64>,
}

/// A config of a topic that differs from the default: set on the topic, or
/// inherited from a broker setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub value: String,
    /// Where the value comes from: `topic` for the topic's own setting,
    /// `broker` for a broker-wide one.
    pub source: String,
}

/// A consumer group as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub name: String,
    /// `Stable` while it has members, `Empty` once it has none (Kafka's
    /// other states, such as `PreparingRebalance`, show as Kafka names them).
    pub state: String,
    pub members: usize,
}

/// A member of a consumer group as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The id the group gave the member.
    pub id: String,
    /// The name the member gave itself ([`ConsumerConfig::client_id`]).
    pub client_id: String,
    /// The partitions the member owns in the current generation.
    pub assignment: Vec<TopicPartition>,
}

/// Where a [`LogReader`] starts: a partition and the offset of the first
/// record to read. An offset before the partition's first record starts at
/// that record, one beyond its end at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    pub start: Vec<(TopicPartition, i64)>,
    /// As [`ConsumerConfig::read_committed`].
    pub read_committed: bool,
}

/// Reads given partitions from given offsets outside any group: nothing is
/// committed and no group is joined or created, so every reader sees the
/// same records (as `kcat -C` or `kafka-console-consumer --partition` do).
/// It follows the log: records appended later are read as they come. Used
/// from a single thread.
pub trait LogReader: Send {
    /// Waits up to `timeout` for records and hands at most `max` of them to
    /// `visit`. Returns the number of records.
    fn poll(&mut self, timeout: Duration, max: usize, visit: ReadVisitor<'_>) -> Result<usize>;

    /// Whether every partition has been read up to its end, as of the last
    /// poll (the end moves on as records are appended).
    fn at_end(&self) -> bool;
}

/// A log backend: a factory for producers and consumers, and topic
/// administration. Cheap to clone behind an `Arc`.
pub trait Log: Send + Sync {
    /// A short description for messages, e.g. `kafka 127.0.0.1:9092`.
    fn describe(&self) -> String;

    /// How long the log's servers have not answered, while they do not: a
    /// Kafka outage, confirmed by asking the cluster every second once a
    /// client lost its connections. `None` while they answer, and always
    /// for the embedded log.
    fn unreachable_for(&self) -> Option<Duration> {
        None
    }

    fn producer(&self, on_delivery: Option<DeliveryCallback>) -> Result<Box<dyn LogProducer>>;

    fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn LogConsumer>>;

    /// A transactional producer named `id` (see [`TxnProducer`]); fences
    /// older producers of the same id before returning.
    fn transactional_producer(
        &self,
        id: &str,
        on_delivery: Option<DeliveryCallback>,
    ) -> Result<Box<dyn TxnProducer>>;

    /// Reads one partition from offset `from` up to its end as it is when
    /// the call starts, outside any group (restoring state from a
    /// changelog, say), and returns the offset after the end: where a later
    /// read continues. With `read_committed`, records of aborted
    /// transactions are skipped and the end is the last stable offset (the
    /// read waits for open transactions to finish). Fails if no record or
    /// end arrives for `idle_timeout`, or when `visit` fails.
    fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        read_committed: bool,
        idle_timeout: Duration,
        visit: ReadVisitor<'_>,
    ) -> Result<i64>;

    /// Creates a topic and returns once it is visible in metadata.
    fn create_topic(&self, spec: &TopicSpec, timeout: Duration) -> Result<()>;

    /// Deletes a topic and returns once it is gone from metadata.
    fn delete_topic(&self, name: &str, timeout: Duration) -> Result<()>;

    /// Every topic, sorted by name (internal topics excluded).
    fn list_topics(&self, timeout: Duration) -> Result<Vec<TopicInfo>>;

    fn describe_topic(&self, name: &str, timeout: Duration) -> Result<TopicInfo>;

    /// Offsets a group has committed for a topic's partitions.
    fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<GroupOffset>>;

    /// The members of a group and the partitions each owns, as of the
    /// group's current generation; empty for a group without members.
    fn group_members(&self, group: &str, timeout: Duration) -> Result<Vec<GroupMember>>;

    /// Makes a group's members be assigned partitions anew from the
    /// topics' current metadata, which takes a short-lived member that
    /// reads `via`, a topic no member of the group reads (it is given that
    /// topic's partitions for a moment). Nothing happens to a group that is
    /// rebalancing or has no members.
    ///
    /// On Kafka only the group's leader assigns, and it notices new
    /// partitions of a topic at its metadata refreshes. A static member
    /// restarted in place is given its previous assignment without a
    /// rebalance, so a group whose leader keeps being restarted may leave
    /// new partitions unowned; this is the remedy. The embedded log assigns
    /// new partitions as they are made.
    fn rebalance_group(&self, group: &str, via: &str, timeout: Duration) -> Result<()>;

    /// A reader of the given partitions outside any group (see [`LogReader`]).
    /// Fails with [`Error::UnknownTopic`] if a topic does not exist.
    fn reader(&self, config: &ReaderConfig) -> Result<Box<dyn LogReader>>;

    /// Raises a topic's partition count to `total` and returns once
    /// metadata shows the new partitions. Partitions cannot be removed: a
    /// `total` not above the current count is [`Error::InvalidInput`].
    /// Keys map to partitions by the count, so keyed records written
    /// afterwards may land in another partition than earlier ones.
    fn add_partitions(&self, topic: &str, total: i32, timeout: Duration) -> Result<()>;

    /// The topic's configs that differ from the defaults, sorted by name.
    fn topic_configs(&self, topic: &str, timeout: Duration) -> Result<Vec<TopicConfig>>;

    /// Per partition of `topic`, sorted: the offset of the first record
    /// whose timestamp is at or after `timestamp` (ms since the Unix epoch),
    /// `None` if there is none yet.
    fn offsets_for_time(
        &self,
        topic: &str,
        timestamp: i64,
        timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>>;

    /// Every consumer group with members or committed offsets, sorted by
    /// name.
    fn list_groups(&self, timeout: Duration) -> Result<Vec<GroupListing>>;

    /// Every offset a group has committed, on all topics, sorted (only
    /// partitions with a committed offset).
    fn group_offsets(&self, group: &str, timeout: Duration) -> Result<Vec<GroupOffset>>;

    /// Sets a group's committed offsets (partition, next offset to read), as
    /// if its members had committed them. Refused with
    /// [`Error::GroupNotEmpty`] while the group has members, whose own
    /// commits would overwrite them; partitions not named keep theirs.
    fn set_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<()>;

    /// Deletes a group and its committed offsets. Refused with
    /// [`Error::GroupNotEmpty`] while it has members;
    /// [`Error::UnknownGroup`] if there is no such group.
    fn delete_group(&self, group: &str, timeout: Duration) -> Result<()>;

    /// Deletes the topic if it exists, then creates it anew.
    fn recreate_topic(&self, spec: &TopicSpec, timeout: Duration) -> Result<()> {
        spec.validate()?;
        match self.delete_topic(&spec.name, timeout) {
            Ok(()) | Err(Error::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
        self.create_topic(spec, timeout)
    }

    /// Creates the topic unless it exists already (with any partition
    /// count), and returns once it can be described. A topic another
    /// process created a moment ago is refused as existing before this
    /// client's metadata shows it (two app processes starting together
    /// both create the changelog): it is waited for, up to `timeout`.
    fn ensure_topic(&self, spec: &TopicSpec, timeout: Duration) -> Result<()> {
        match self.create_topic(spec, timeout) {
            Ok(()) => Ok(()),
            Err(Error::TopicExists(_)) => {
                let deadline = std::time::Instant::now() + timeout;
                loop {
                    match self.describe_topic(&spec.name, timeout) {
                        Err(Error::UnknownTopic(_)) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        other => return other.map(drop),
                    }
                }
            }
            Err(e) => Err(e),
        }
    }
}
