//! Kafka transactions: a [`KafkaProducer`] with a `transactional.id`, so
//! delivery reports are served as for any producer, plus librdkafka's
//! transaction calls.
//!
//! librdkafka sorts transaction errors into three kinds: fatal (the producer
//! is unusable: fenced by a newer one with the same id, or refused
//! outright), abortable (the transaction must be aborted, then the producer
//! goes on) and retriable. Fatal errors, and the group telling us that the
//! consumer's generation is gone, are [`Error::Fenced`].

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode as C;
use rdkafka::{Offset, TopicPartitionList};

use super::error::kafka_error;
use super::producer::KafkaProducer;
use super::{KafkaLog, CONNECT_TIMEOUT};
use crate::error::{Error, Result};
use crate::{DeliveryCallback, GroupToken, LogProducer, OutRecord, TopicPartition, TxnProducer};

/// How long creating a producer waits for the transaction coordinator to
/// fence older producers of the same id (and abort their transactions).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct KafkaTxnProducer {
    base: KafkaProducer,
    id: String,
}

impl KafkaTxnProducer {
    pub(super) fn new(
        log: &KafkaLog,
        id: &str,
        on_delivery: Option<DeliveryCallback>,
    ) -> Result<Self> {
        if id.is_empty() {
            return Err(Error::InvalidInput("transactional id is empty".into()));
        }
        let base = KafkaProducer::with(
            log,
            on_delivery,
            &[
                ("transactional.id", id),
                // A crashed producer's open transaction holds back
                // read_committed readers until it times out.
                ("transaction.timeout.ms", "10000"),
            ],
        )?;
        // A dead address is reported now, not after the init timeout.
        base.producer
            .client()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map_err(|e| Error::Unreachable {
                brokers: log.brokers().to_owned(),
                detail: e.to_string(),
            })?;
        let p = Self {
            base,
            id: id.to_owned(),
        };
        p.base
            .producer
            .init_transactions(INIT_TIMEOUT)
            .map_err(|e| match e.rdkafka_error_code() {
                Some(C::OperationTimedOut | C::RequestTimedOut) => Error::Timeout(format!(
                    "initializing transactional producer '{id}' after {INIT_TIMEOUT:?}: {e}"
                )),
                _ => p.error(e),
            })?;
        Ok(p)
    }

    /// Our error for a failed transactional call.
    fn error(&self, e: KafkaError) -> Error {
        let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
        match e.rdkafka_error_code() {
            _ if fatal => Error::Fenced(format!("producer '{}': {e}", self.id)),
            Some(
                C::Fatal
                | C::Fenced
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::IllegalGeneration
                | C::UnknownMemberId
                | C::FencedInstanceId,
            ) => Error::Fenced(format!("producer '{}': {e}", self.id)),
            Some(C::State) => Error::InvalidInput(format!(
                "producer '{}': not possible in the transaction's state: {e}",
                self.id
            )),
            _ => kafka_error(e),
        }
    }

    /// Aborts after an error that requires it; fatal errors leave nothing to
    /// abort (the broker aborts the transaction when fencing).
    fn fail(&self, e: KafkaError, timeout: Duration) -> Error {
        let abortable = matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort());
        if abortable {
            if let Err(a) = self.base.producer.abort_transaction(timeout) {
                tracing::warn!(producer = %self.id, error = %a, "aborting the transaction failed");
            }
        }
        self.error(e)
    }
}

impl LogProducer for KafkaTxnProducer {
    fn send(&self, record: OutRecord<'_>) -> Result<()> {
        self.base
            .produce(record)
            .map_err(|e| match e.rdkafka_error_code() {
                // Refused before it was queued: the transaction is unharmed.
                Some(C::MessageSizeTooLarge) => self.base.send_error(&record, e),
                _ => self.error(e),
            })
    }

    fn max_record_bytes(&self) -> Option<usize> {
        self.base.max_record_bytes()
    }

    fn poll(&self, timeout: Duration) {
        self.base.poll(timeout)
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.base.flush(timeout)
    }

    fn in_flight(&self) -> usize {
        self.base.in_flight()
    }
}

impl TxnProducer for KafkaTxnProducer {
    fn begin(&self) -> Result<()> {
        self.base
            .producer
            .begin_transaction()
            .map_err(|e| self.error(e))
    }

    fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &GroupToken,
        timeout: Duration,
    ) -> Result<()> {
        let metadata = group
            .0
            .downcast_ref::<ConsumerGroupMetadata>()
            .ok_or_else(|| {
                Error::InvalidInput("the group token comes from another kind of log".into())
            })?;
        let producer = &self.base.producer;
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::with_capacity(offsets.len());
            for (tp, next) in offsets {
                tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next))
                    .map_err(kafka_error)?;
            }
            producer
                .send_offsets_to_transaction(&tpl, metadata, timeout)
                .map_err(|e| self.fail(e, timeout))?;
        }
        // Delivered first, by our flush: rdkafka's commit would flush its
        // own, slow way (see `KafkaProducer::wait_delivered`) and then find
        // nothing left to wait for.
        self.base.wait_delivered(timeout)?;
        producer
            .commit_transaction(timeout)
            .map_err(|e| self.fail(e, timeout))
    }

    fn abort(&self, timeout: Duration) -> Result<()> {
        self.base
            .producer
            .abort_transaction(timeout)
            .map_err(|e| self.error(e))
    }
}
