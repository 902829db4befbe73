//! Apache Kafka through librdkafka.
//!
//! [`KafkaLog`] holds the bootstrap address and any librdkafka properties
//! (`-X key=value` on the command line, as with kcat, or a properties file
//! read into [`KafkaSettings`]), so SASL, TLS and tuning need no code here.
//! A refused password or certificate is reported as such
//! ([`Error::Authentication`], [`Error::Tls`]) rather than as a timeout. Keyed records use librdkafka's `murmur2_random`
//! partitioner, the Java client's function, so Riffle, Kafka Streams and any
//! Java producer agree on where a key lives.

mod admin;
mod block_on;
mod config;
mod consumer;
mod context;
mod error;
mod off_thread;
mod producer;
mod reach;
mod read;
mod reader;
mod txn;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::config::ClientConfig;

use super::{
    ConsumerConfig, DeliveryCallback, GroupListing, GroupMember, GroupOffset, Log, LogConsumer,
    LogProducer, LogReader, ReadVisitor, ReaderConfig, TopicConfig, TopicInfo, TopicPartition,
    TopicSpec, TxnProducer,
};
use crate::error::{Error, Result};
pub use config::{KafkaSettings, BOOTSTRAP_SERVERS};
use context::{Faults, LoggingContext};
pub use error::{code_number, kafka_error};

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
    readers: read::Readers,
    /// Security failures met by any of this log's clients.
    faults: Arc<Faults>,
}

impl KafkaLog {
    /// A handle on the cluster at `brokers` (`host:port[,host:port...]`),
    /// with extra librdkafka properties applied to every client it creates.
    /// Nothing is contacted yet; see [`KafkaLog::connect`].
    pub fn new(brokers: impl Into<String>, properties: Vec<(String, String)>) -> Result<Self> {
        let mut settings = KafkaSettings::new();
        settings.set(BOOTSTRAP_SERVERS, brokers);
        settings.extend(properties);
        Self::from_settings(settings)
    }

    /// A handle on the cluster that `settings` describe, `bootstrap.servers`
    /// included: the shape in which users keep client configurations (a
    /// properties file, a managed cloud's snippet), so that such a file is
    /// enough to reach the cluster. Nothing is contacted yet; see
    /// [`KafkaLog::connect_settings`].
    pub fn from_settings(settings: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut settings: KafkaSettings = settings.into_iter().collect();
        let brokers = settings.remove(BOOTSTRAP_SERVERS).unwrap_or_default();
        if brokers.trim().is_empty() {
            return Err(Error::InvalidInput(
                "the broker list is empty (bootstrap.servers)".into(),
            ));
        }
        let log = Self {
            inner: Arc::new(Inner {
                faults: Arc::new(Faults::new(&brokers)),
                brokers,
                properties: settings.into_vec(),
                admin: OnceLock::new(),
                readers: read::Readers::default(),
            }),
        };
        // The outage watch asks through the admin client, for as long as
        // the log lives.
        let weak = Arc::downgrade(&log.inner);
        log.inner.faults.reach.set_probe(Box::new(move |wait| {
            let Some(inner) = weak.upgrade() else {
                return true;
            };
            let log = KafkaLog { inner };
            log.admin()
                .is_ok_and(|a| a.inner().fetch_metadata(None, wait).is_ok())
        }));
        // Surface malformed properties now, as one line, rather than at first use.
        log.client_config()
            .create::<rdkafka::producer::BaseProducer>()
            .map_err(kafka_error)?;
        Ok(log)
    }

    /// Like [`KafkaLog::new`], then checks within [`CONNECT_TIMEOUT`] that a
    /// broker answers, so a wrong address is reported at once, not as a hang.
    pub fn connect(brokers: impl Into<String>, properties: Vec<(String, String)>) -> Result<Self> {
        let log = Self::new(brokers, properties)?;
        log.check()?;
        Ok(log)
    }

    /// Like [`KafkaLog::from_settings`], then checks that a broker answers
    /// as [`KafkaLog::connect`] does.
    pub fn connect_settings(settings: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let log = Self::from_settings(settings)?;
        log.check()?;
        Ok(log)
    }

    /// Checks within [`CONNECT_TIMEOUT`] that a broker answers a metadata
    /// request. Asked in slices (200 ms, then twice as long each time) so
    /// that a refused password or certificate, which librdkafka only
    /// reports to its error callback while it retries, ends the wait within
    /// a second with its cause, while a distant cluster still has the
    /// longer slices to answer in.
    pub fn check(&self) -> Result<()> {
        let admin = self.admin()?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut slice = Duration::from_millis(200);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match admin.inner().fetch_metadata(None, left.min(slice)) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    context::serve_admin_events(admin.inner());
                    if let Some(fault) = self.fault() {
                        return Err(fault);
                    }
                    if left <= slice {
                        return Err(Error::Unreachable {
                            brokers: self.inner.brokers.clone(),
                            detail: e.to_string(),
                        });
                    }
                    slice *= 2;
                }
            }
        }
    }

    /// The authentication or TLS failure a client of this log met, if any:
    /// the likely cause of a request that timed out.
    pub fn fault(&self) -> Option<Error> {
        let mut fault = self.inner.faults.get()?;
        if let Error::Authentication { broker, .. } | Error::Tls { broker, .. } = &mut fault {
            if broker.is_empty() {
                broker.clone_from(&self.inner.brokers);
            }
        }
        Some(fault)
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
        // Partitions added to a topic are seen within 10 s, not librdkafka's
        // 5 minutes: a group rebalances them in, a producer writes to them
        // (an app then moves its state, see `docs/partition-growth.md`).
        c.set("topic.metadata.refresh.interval.ms", "10000");
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
            .create_with_context(LoggingContext::new("admin", self.inner.faults.clone()))
            .map_err(kafka_error)?;
        Ok(self.inner.admin.get_or_init(|| admin))
    }

    /// Names the cluster in errors that mean it could not be reached, and
    /// the authentication or TLS failure behind them when there was one.
    fn unreachable(&self, e: rdkafka::error::KafkaError) -> Error {
        use rdkafka::types::RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(
                C::BrokerTransportFailure | C::AllBrokersDown | C::OperationTimedOut | C::Resolve,
            ) => {
                if let Some(admin) = self.inner.admin.get() {
                    context::serve_admin_events(admin.inner());
                }
                self.fault().unwrap_or_else(|| Error::Unreachable {
                    brokers: self.inner.brokers.clone(),
                    detail: e.to_string(),
                })
            }
            _ => kafka_error(e),
        }
    }
}

impl Log for KafkaLog {
    fn describe(&self) -> String {
        format!("kafka {}", self.inner.brokers)
    }

    fn unreachable_for(&self) -> Option<Duration> {
        self.inner.faults.reach.unreachable_for()
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

    fn rebalance_group(&self, group: &str, via: &str, timeout: Duration) -> Result<()> {
        admin::rebalance_group(self, group, via, timeout)
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
