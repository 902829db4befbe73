//! librdkafka callbacks: its log lines go to `tracing`, group changes are
//! queued for the consumer's poll to hand out in order.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::Result;
use crate::log::{GroupEvent, GroupToken, PollVisitor, Progress, TopicPartition};

/// Routes librdkafka's own log lines and errors to `tracing`, tagged with the
/// client's role.
pub(crate) struct LoggingContext {
    role: &'static str,
}

impl LoggingContext {
    pub(crate) fn new(role: &'static str) -> Self {
        Self { role }
    }
}

fn log_line(role: &str, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", "{role} {fac}: {msg}")
        }
        Warning => tracing::warn!(target: "librdkafka", "{role} {fac}: {msg}"),
        Notice | Info => tracing::info!(target: "librdkafka", "{role} {fac}: {msg}"),
        Debug => tracing::debug!(target: "librdkafka", "{role} {fac}: {msg}"),
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(self.role, level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{} error: {error}: {reason}", self.role);
    }
}

/// A group-less consumer needs no callbacks beyond logging.
impl ConsumerContext for LoggingContext {}

/// A consumer's context: logs, and a queue of assignment changes.
pub(crate) struct GroupContext {
    pub(crate) client_id: String,
    pub(crate) events: Mutex<Vec<GroupEvent>>,
    /// Offsets marked processed and not yet handed to librdkafka, as
    /// `(topic, partition, next offset)`. Kept here so that a revocation
    /// that happens inside a poll can store them before librdkafka commits.
    pub(crate) pending: Mutex<Vec<(String, i32, i64)>>,
    /// The visitor of the poll in progress, so that a revocation inside it
    /// can let the visitor finish its work first (see `KafkaConsumer::poll`).
    pub(crate) visitor: Mutex<Option<VisitorPtr>>,
    /// Start partitions without a committed offset at their end as of the
    /// assignment (see `start_at_end`).
    pub(crate) from_end: bool,
}

/// A pointer to the visitor of the poll in progress.
///
/// librdkafka runs rebalance callbacks on the thread calling poll, inside
/// that call, so the visitor lent to `KafkaConsumer::poll` is alive and not
/// otherwise in use whenever the callback dereferences this.
pub(crate) struct VisitorPtr(pub(crate) *mut (dyn PollVisitor + 'static));

// SAFETY: only dereferenced on the polling thread, during the poll that set
// it (see above); the Mutex only satisfies the context's Send + Sync bound.
unsafe impl Send for VisitorPtr {}

impl GroupContext {
    pub(crate) fn new(client_id: String, from_end: bool) -> Self {
        Self {
            client_id,
            events: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            visitor: Mutex::new(None),
            from_end,
        }
    }

    /// Gives each newly assigned partition that has no committed offset its
    /// end offset now, in the assignment itself.
    ///
    /// Left to `auto.offset.reset=latest`, librdkafka looks the end up only
    /// when it starts fetching, some time after the assignment is visible:
    /// records written in between are skipped, although the caller already
    /// saw the partition as its own. On failure the lookup is left to
    /// librdkafka, as before.
    fn start_at_end(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        const LOOKUP: Duration = Duration::from_secs(5);
        let committed = match consumer.committed_offsets(tpl.clone(), LOOKUP) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "{}: committed offsets for the assignment: {e}",
                    self.client_id
                );
                return;
            }
        };
        for mut elem in tpl.elements() {
            let (topic, partition) = (elem.topic().to_owned(), elem.partition());
            let has_committed = committed
                .find_partition(&topic, partition)
                .is_some_and(|c| matches!(c.offset(), Offset::Offset(_)));
            if has_committed || !matches!(elem.offset(), Offset::Invalid) {
                continue;
            }
            match consumer.fetch_watermarks(&topic, partition, LOOKUP) {
                Ok((_, end)) => {
                    let _ = elem.set_offset(Offset::Offset(end));
                }
                Err(e) => {
                    tracing::warn!("{}: end offset of {topic}/{partition}: {e}", self.client_id)
                }
            }
        }
    }

    /// Hands pending offsets to librdkafka's offset store.
    pub(crate) fn store_pending(&self, consumer: &BaseConsumer<Self>) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(pending.len());
        for (topic, partition, next) in &pending {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // Happens for partitions revoked meanwhile: their records will
            // be processed again by the next owner.
            tracing::debug!("{}: storing offsets: {e}", self.client_id);
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(&self.client_id, level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{} error: {error}: {reason}", self.client_id);
    }
}

pub(crate) fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    let mut v: Vec<_> = tpl
        .elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect();
    v.sort();
    v
}

/// Progress reported from inside a revocation.
struct Revoking<'a> {
    ctx: &'a GroupContext,
    consumer: &'a BaseConsumer<GroupContext>,
}

impl Progress for Revoking<'_> {
    fn store(&mut self, topic: &str, partition: i32, next: i64) {
        super::consumer::mark(self.ctx, topic, partition, next)
    }

    fn group(&self) -> Result<GroupToken> {
        super::consumer::group_token(self.consumer)
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), true) = (rebalance, self.from_end) {
            self.start_at_end(consumer, tpl);
        }
        // librdkafka commits stored offsets of revoked partitions itself
        // (auto commit is on, auto offset store off), so the next owner
        // continues where this one stopped.
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            if let Some(ptr) = self.visitor.lock().unwrap().as_ref() {
                // SAFETY: see `VisitorPtr`.
                let visitor = unsafe { &mut *ptr.0 };
                visitor.revoking(
                    &revoked,
                    &mut Revoking {
                        ctx: self,
                        consumer,
                    },
                );
            }
            self.store_pending(consumer);
            self.events
                .lock()
                .unwrap()
                .push(GroupEvent::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self
                .events
                .lock()
                .unwrap()
                .push(GroupEvent::Assigned(partitions(tpl))),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("{}: rebalance failed: {e}", self.client_id),
        }
    }
}
