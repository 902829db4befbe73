//! Apache Kafka through librdkafka.
//!
//! [`KafkaLog`] holds the bootstrap address and any librdkafka properties
//! (`-X key=value` on the command line, as with kcat), so SASL, TLS and tuning
//! need no code here. Keyed records use librdkafka's `murmur2_random`
//! partitioner, the Java client's function, so Riffle, Kafka Streams and any
//! Java producer agree on where a key lives.

mod admin;
mod block_on;
mod consumer;
mod context;
mod producer;
mod read;
mod reader;
mod txn;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::config::ClientConfig;

use super::{
    ConsumerConfig, DeliveryCallback, GroupListing, GroupMember, GroupOffset, Log, LogConsumer,
    LogProducer, LogReader, ReadVisitor, ReaderConfig, TopicConfig, TopicInfo, TopicPartition,
    TopicSpec, TxnProducer,
};
use crate::error::{Error, Result};
use context::LoggingContext;

/// How long [`KafkaLog::connect`] waits for a broker to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka cluster, addressed by its bootstrap servers.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    properties: Vec<(String, String)>,
    admin: OnceLock<AdminClient<LoggingContext>>,
}

impl KafkaLog {
    /// A handle on the cluster at `brokers` (`host:port[,host:port...]`),
    /// with extra librdkafka properties applied to every client it creates.
    /// Nothing is contacted yet; see [`KafkaLog::connect`].
    pub fn new(brokers: impl Into<String>, properties: Vec<(String, String)>) -> Result<Self> {
        let brokers = brokers.into();
        if brokers.trim().is_empty() {
            return Err(Error::InvalidInput("the broker list is empty".into()));
        }
        let log = Self {
            inner: Arc::new(Inner {
                brokers,
                properties,
                admin: OnceLock::new(),
            }),
        };
        // Surface malformed properties now, as one line, rather than at first use.
        log.client_config()
            .create::<rdkafka::producer::BaseProducer>()?;
        Ok(log)
    }

    /// Like [`KafkaLog::new`], then checks within [`CONNECT_TIMEOUT`] that a
    /// broker answers, so a wrong address is reported at once, not as a hang.
    pub fn connect(brokers: impl Into<String>, properties: Vec<(String, String)>) -> Result<Self> {
        let log = Self::new(brokers, properties)?;
        log.admin()?
            .inner()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map_err(|e| Error::Unreachable {
                brokers: log.inner.brokers.clone(),
                detail: e.to_string(),
            })?;
        Ok(log)
    }

    pub fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    /// The base configuration every client starts from.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.inner.brokers);
        // Fail fast on a dead address instead of retrying quietly forever.
        c.set("socket.connection.setup.timeout.ms", "5000");
        // Topics are created explicitly, as on the embedded log. librdkafka's
        // producers (the admin client is one) otherwise ask a broker at
        // Kafka's default `auto.create.topics.enable=true` to create any
        // topic they look up, so a topic just deleted would come back.
        // `-X allow.auto.create.topics=true` restores it.
        c.set("allow.auto.create.topics", "false");
        for (k, v) in &self.inner.properties {
            c.set(k, v);
        }
        c
    }

    fn admin(&self) -> Result<&AdminClient<LoggingContext>> {
        if let Some(a) = self.inner.admin.get() {
            return Ok(a);
        }
        let admin = self
            .client_config()
            .create_with_context(LoggingContext::new("admin"))?;
        Ok(self.inner.admin.get_or_init(|| admin))
    }

    /// Names the cluster in errors that mean it could not be reached.
    fn unreachable(&self, e: rdkafka::error::KafkaError) -> Error {
        use rdkafka::types::RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(
                C::BrokerTransportFailure | C::AllBrokersDown | C::OperationTimedOut | C::Resolve,
            ) => Error::Unreachable {
                brokers: self.inner.brokers.clone(),
                detail: e.to_string(),
            },
            _ => Error::from(e),
        }
    }
}

impl Log for KafkaLog {
    fn describe(&self) -> String {
        format!("kafka {}", self.inner.brokers)
    }

    fn producer(&self, on_delivery: Option<DeliveryCallback>) -> Result<Box<dyn LogProducer>> {
        Ok(Box::new(producer::KafkaProducer::new(self, on_delivery)?))
    }

    fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn LogConsumer>> {
        Ok(Box::new(consumer::KafkaConsumer::new(self, config)?))
    }

    fn transactional_producer(
        &self,
        id: &str,
        on_delivery: Option<DeliveryCallback>,
    ) -> Result<Box<dyn TxnProducer>> {
        Ok(Box::new(txn::KafkaTxnProducer::new(self, id, on_delivery)?))
    }

    fn read_partition(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        read_committed: bool,
        idle_timeout: Duration,
        visit: ReadVisitor<'_>,
    ) -> Result<i64> {
        read::read_partition(
            self,
            topic,
            partition,
            from,
            read_committed,
            idle_timeout,
            visit,
        )
    }

    fn create_topic(&self, spec: &TopicSpec, timeout: Duration) -> Result<()> {
        admin::create_topic(self, spec, timeout)
    }

    fn delete_topic(&self, name: &str, timeout: Duration) -> Result<()> {
        admin::delete_topic(self, name, timeout)
    }

    fn list_topics(&self, timeout: Duration) -> Result<Vec<TopicInfo>> {
        admin::list_topics(self, timeout)
    }

    fn describe_topic(&self, name: &str, timeout: Duration) -> Result<TopicInfo> {
        admin::describe_topic(self, name, timeout)
    }

    fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<GroupOffset>> {
        admin::committed_offsets(self, group, topic, timeout)
    }

    fn group_members(&self, group: &str, timeout: Duration) -> Result<Vec<GroupMember>> {
        admin::group_members(self, group, timeout)
    }

    fn recreate_topic(&self, spec: &TopicSpec, timeout: Duration) -> Result<()> {
        admin::recreate_topic(self, spec, timeout)
    }

    fn reader(&self, config: &ReaderConfig) -> Result<Box<dyn LogReader>> {
        Ok(Box::new(reader::KafkaReader::new(self, config)?))
    }

    fn add_partitions(&self, topic: &str, total: i32, timeout: Duration) -> Result<()> {
        admin::add_partitions(self, topic, total, timeout)
    }

    fn topic_configs(&self, topic: &str, timeout: Duration) -> Result<Vec<TopicConfig>> {
        admin::topic_configs(self, topic, timeout)
    }

    fn offsets_for_time(
        &self,
        topic: &str,
        timestamp: i64,
        timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>> {
        admin::offsets_for_time(self, topic, timestamp, timeout)
    }

    fn list_groups(&self, timeout: Duration) -> Result<Vec<GroupListing>> {
        admin::list_groups(self, timeout)
    }

    fn group_offsets(&self, group: &str, timeout: Duration) -> Result<Vec<GroupOffset>> {
        admin::group_offsets(self, group, timeout)
    }

    fn set_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<()> {
        admin::set_group_offsets(self, group, offsets, timeout)
    }

    fn delete_group(&self, group: &str, timeout: Duration) -> Result<()> {
        admin::delete_group(self, group, timeout)
    }
}
