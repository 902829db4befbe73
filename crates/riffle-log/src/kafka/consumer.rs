//! A group member on Kafka: librdkafka's `BaseConsumer`, polled one message at
//! a time (its fetch queue already batches the network side), with offsets
//! stored by the caller after processing and committed by librdkafka in the
//! background, on revocation and on close.
//!
//! Short failovers come from two settings of Kafka's classic group
//! protocol:
//!
//! - incremental (cooperative-sticky) rebalancing, so that a member joining
//!   or leaving moves only the partitions that must move, while every other
//!   partition is processed on (unless the caller needs co-partitioned
//!   inputs, which only the eager range assignor guarantees);
//! - static membership (`group.instance.id`, when the caller names the
//!   member), so that a process killed and restarted within the session
//!   timeout takes its partitions back without any rebalance.
//!
//! A static member that closes still leaves the group at once (it
//! unsubscribes first, which librdkafka follows with a LeaveGroup request
//! for static members too; only its final close would not), so that a
//! stopped process hands its partitions over in well under a second
//! instead of holding them for the session timeout. Kafka 4's own consumer
//! protocol (KIP-848) would also rebalance incrementally, but its session
//! timeout is the broker's (45 s by default, not settable per client), so
//! a crashed process's partitions would wait that long.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;

use super::context::{group_token, mark, partitions, GroupContext, VisitorPtr};
use super::error::kafka_error;
use super::KafkaLog;
use crate::error::{Error, Result};
use crate::{
    ConsumerConfig, GroupToken, Headers, LogConsumer, OffsetReset, PollVisitor, RecordRef,
    TopicPartition,
};

/// How long closing waits for the final revocation's commit and for the
/// group to be left.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub(super) struct KafkaConsumer {
    consumer: BaseConsumer<GroupContext>,
    /// The topics to subscribe to at the first poll, until then.
    pending: Option<Vec<String>>,
    closed: bool,
}

impl KafkaConsumer {
    pub(super) fn new(log: &KafkaLog, cfg: &ConsumerConfig) -> Result<Self> {
        if cfg.group_id.is_empty() {
            return Err(Error::InvalidInput("a consumer needs a group id".into()));
        }
        for t in &cfg.topics {
            crate::validate_topic_name(t)?;
        }
        let mut c = log.client_config();
        c.set("group.id", &cfg.group_id)
            .set("client.id", &cfg.client_id)
            .set("auto.offset.reset", cfg.offset_reset.as_str())
            .set(
                "session.timeout.ms",
                cfg.session_timeout.as_millis().to_string(),
            )
            // Members hear of a rebalance at their next heartbeat, and a
            // rebalance completes only once every member has rejoined: the
            // interval is what a hand-over waits on top of the rebalance
            // itself, twice under incremental rebalancing (which takes two
            // rounds to move a partition). Kafka's 3 s would make a stopped
            // process's partitions wait seconds; a heartbeat every 300 ms
            // costs the coordinator a few small requests a second per member.
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout.as_millis() / 3)
                    .clamp(100, 300)
                    .to_string(),
            )
            .set(
                "partition.assignment.strategy",
                if cfg.eager || cfg.co_partitioned && cfg.topics.len() > 1 {
                    // Partition p of every topic to the same member.
                    "range"
                } else {
                    "cooperative-sticky"
                },
            )
            // Commit only what the caller has marked processed.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                cfg.commit_interval.as_millis().to_string(),
            )
            .set("enable.partition.eof", "false")
            // librdkafka prefetches up to 100,000 records a partition, or
            // 64 MB, by default, and each small record costs some 300 bytes
            // more in its queue: hundreds of MB for a consumer of a few
            // partitions. 20,000 a partition is still well over 100 ms of
            // work at full speed, and leaves the memory to the state. A
            // full queue then pauses a partition's fetches for 20 ms rather
            // than librdkafka's default second, which would starve it.
            .set("queued.min.messages", "20000")
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.queue.backoff.ms", "20")
            .set(
                "isolation.level",
                if cfg.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        if let Some(id) = &cfg.instance {
            if id.is_empty() {
                return Err(Error::InvalidInput(
                    "an instance name cannot be empty".into(),
                ));
            }
            c.set("group.instance.id", id);
        }
        // Properties given by the user win over the defaults above.
        for (k, v) in log.inner.properties.iter() {
            c.set(k, v);
        }
        let ctx = GroupContext::new(
            cfg.client_id.clone(),
            cfg.group_id.clone(),
            cfg.instance.clone(),
            matches!(cfg.offset_reset, OffsetReset::Latest),
            log.inner.faults.clone(),
        );
        let consumer: BaseConsumer<GroupContext> =
            c.create_with_context(ctx).map_err(kafka_error)?;
        Ok(Self {
            consumer,
            pending: Some(cfg.topics.clone()),
            closed: false,
        })
    }

    /// Joins the group, at the first poll rather than at creation: a member
    /// is in the group only once it can take partitions. A member that
    /// joined at creation would, while its owner still prepared to process
    /// (a transactional producer's initialisation takes up to seconds), be
    /// given partitions, hold up the rebalance of the members that can
    /// process, and move them again when the next member joins.
    fn subscribe(&mut self) -> Result<()> {
        if let Some(topics) = self.pending.take() {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            self.consumer.subscribe(&topics).map_err(kafka_error)?;
        }
        Ok(())
    }

    /// The error behind librdkafka's fatal error, which ends this consumer.
    /// A static member fenced by a member under its instance name is
    /// [`Error::Fenced`], so that its owner starts over with a new consumer:
    /// the other member may be this consumer's own new session (librdkafka
    /// rejoins with a new member id after a coordinator restart, and the
    /// old one is then fenced), or a second process given the same name,
    /// which the message names as the likely cause.
    fn fatal(&self) -> Error {
        use std::ffi::CStr;
        let mut text = [0 as std::os::raw::c_char; 512];
        // SAFETY: the client is alive; librdkafka writes a NUL-terminated
        // string of at most `text.len()` bytes.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_fatal_error(
                self.consumer.client().native_ptr(),
                text.as_mut_ptr(),
                text.len(),
            )
        };
        // SAFETY: see above.
        let reason = unsafe { CStr::from_ptr(text.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let ctx = self.consumer.context();
        let code: RDKafkaErrorCode = code.into();
        match (code, &ctx.instance) {
            (RDKafkaErrorCode::FencedInstanceId, Some(id)) => Error::Fenced(format!(
                "{}: another member of group {} joined as instance '{id}' (instance names must \
                 be unique in a group; after a coordinator restart this may be the consumer's own \
                 new session)",
                ctx.client_id, ctx.group_id
            )),
            _ => Error::Kafka {
                code: Some(crate::kafka::code_number(code)),
                message: format!("{}: fatal: {reason}", ctx.client_id),
            },
        }
    }

    /// The member id the coordinator gave this consumer, while it has one.
    fn member_id(&self) -> Option<String> {
        use rdkafka::bindings as rd;
        // SAFETY: the client is alive; the string librdkafka allocates is
        // copied and freed with its own allocator.
        unsafe {
            let rk = self.consumer.client().native_ptr();
            let id = rd::rd_kafka_memberid(rk);
            if id.is_null() {
                return None;
            }
            let owned = std::ffi::CStr::from_ptr(id).to_string_lossy().into_owned();
            rd::rd_kafka_mem_free(rk, id.cast());
            Some(owned).filter(|s| !s.is_empty())
        }
    }

    fn drain_events(&self, visitor: &mut dyn PollVisitor) {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().unwrap());
        for e in events {
            visitor.event(e);
        }
    }
}

/// Keeps the visitor reachable from the rebalance callback while alive.
struct Lent<'a>(&'a GroupContext);

impl<'a> Lent<'a> {
    fn new(ctx: &'a GroupContext, ptr: *mut (dyn PollVisitor + 'static)) -> Self {
        *ctx.visitor.lock().unwrap() = Some(VisitorPtr(ptr));
        Self(ctx)
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        *self.0.visitor.lock().unwrap() = None;
    }
}

/// Whether librdkafka's error `code` (as `code_number` gives it) says the
/// consumer no longer owns what it would commit.
fn no_longer_member(code: i32) -> bool {
    use RDKafkaErrorCode as C;
    [
        C::AssignmentLost,
        C::UnknownMemberId,
        C::IllegalGeneration,
        C::RebalanceInProgress,
        C::FencedInstanceId,
    ]
    .into_iter()
    .any(|c| crate::kafka::code_number(c) == code)
}

/// Errors a poll can report that librdkafka recovers from by itself.
fn transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::PartitionEOF
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::RebalanceInProgress
        )
    )
}

impl LogConsumer for KafkaConsumer {
    fn poll(
        &mut self,
        timeout: Duration,
        max: usize,
        visitor: &mut dyn PollVisitor,
    ) -> Result<usize> {
        self.subscribe()?;
        // Lend the visitor to the rebalance callback for this poll; from
        // here on it is only reached through this pointer.
        let ptr: *mut (dyn PollVisitor + '_) = visitor;
        // SAFETY: the lifetime is erased only for as long as `_lent` lives,
        // which is shorter than the borrow of `visitor`.
        let ptr: *mut (dyn PollVisitor + 'static) = unsafe { std::mem::transmute(ptr) };
        let _lent = Lent::new(self.consumer.context(), ptr);
        // SAFETY: see `VisitorPtr`: the callback uses the pointer only inside
        // `self.consumer.poll`, never while `visit()` is borrowed here.
        let visit = || unsafe { &mut *ptr };
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < max {
            let wait = if n == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let msg = self.consumer.poll(wait);
            // Group changes happened inside this poll: hand them out before
            // the record it returned, which already belongs to the new
            // assignment.
            self.drain_events(visit());
            match msg {
                Some(Ok(m)) => {
                    // Read once: rdkafka checks the name's UTF-8 each time.
                    let topic = m.topic();
                    let processed = visit().record(RecordRef {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key(),
                        value: m.payload().unwrap_or(&[]),
                        timestamp: m.timestamp().to_millis(),
                        headers: Headers::kafka(&m),
                    });
                    if processed {
                        mark(
                            self.consumer.context(),
                            topic,
                            m.partition(),
                            m.offset() + 1,
                        );
                    }
                    n += 1;
                }
                Some(Err(e)) if transient(&e) => {
                    tracing::debug!("poll: {e}");
                    self.consumer.context().faults.note(&e, &e.to_string());
                }
                Some(Err(KafkaError::MessageConsumptionFatal(_))) => return Err(self.fatal()),
                // A refused password or certificate, named as such.
                Some(Err(e)) => {
                    return Err(self
                        .consumer
                        .context()
                        .faults
                        .get()
                        .unwrap_or_else(|| kafka_error(e)))
                }
                // `None` also follows a rebalance event: it does not mean the
                // queue is drained, so keep waiting until the deadline.
                None if n > 0 || Instant::now() >= deadline => break,
                None => {}
            }
        }
        self.consumer.context().store_pending(&self.consumer);
        Ok(n)
    }

    fn store_offset(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<()> {
        mark(self.consumer.context(), topic, partition, next_offset);
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.consumer.context().store_pending(&self.consumer);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
            Err(e) => Err(kafka_error(e)),
        }
    }

    fn assignment(&self) -> Result<Vec<TopicPartition>> {
        Ok(partitions(
            &self.consumer.assignment().map_err(kafka_error)?,
        ))
    }

    fn group(&self) -> Result<GroupToken> {
        group_token(&self.consumer)
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let committed = match self.commit() {
            // The group gave the partitions to others while this consumer
            // could not hear of it (a broker outage, a long pause): they
            // read from the last commit, so nothing is lost, and stopping
            // is no failure.
            Err(Error::Kafka {
                code: Some(code),
                message,
            }) if no_longer_member(code) => {
                tracing::warn!("{}: final commit refused: {message}; the partitions' next owners read from the last commit", self.consumer.context().client_id);
                Ok(())
            }
            other => other,
        };
        // Leaves the group at once so the others take over without waiting
        // for the session timeout; the final revocation commits again. The
        // polls serve the revocation until librdkafka has left (it forgets
        // its member id as it sends the LeaveGroup request), which it does
        // only once the revocation's commit is done: the assignment looks
        // empty as soon as an incremental revocation starts, and a consumer
        // closed before that stays in the group until its session times
        // out. A static member leaves too, on unsubscribing: librdkafka
        // skips the request only when a static member closes.
        self.consumer.unsubscribe();
        let until = Instant::now() + CLOSE_WAIT;
        while self.member_id().is_some() && Instant::now() < until {
            let _ = self.consumer.poll(Duration::from_millis(20));
        }
        // Then closes here rather than on drop, so that what is left (the
        // LeaveGroup's answer) is waited for within the same bound.
        match self.consumer.close_queue() {
            Ok(()) => {
                while !self.consumer.closed() && Instant::now() < until {
                    let _ = self.consumer.poll(Duration::from_millis(50));
                }
            }
            Err(e) => tracing::debug!("{}: closing: {e}", self.consumer.context().client_id),
        }
        self.consumer.context().events.lock().unwrap().clear();
        committed
    }
}
