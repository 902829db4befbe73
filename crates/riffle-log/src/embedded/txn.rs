//! Transactions: records buffered in the producer, appended together with the
//! consumer offsets under one acquisition of the log's lock.
//!
//! Since nothing of an open transaction is ever in the log, there is nothing
//! for a reader to skip: every record in the embedded log is committed, and
//! `read_committed` changes nothing. Aborting drops the buffer.
//!
//! Each transactional id has an epoch in the log's state; creating a producer
//! bumps it, and a producer whose epoch is no longer current is fenced.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::group::Membership;
use super::producer::{pick_partition, timestamp_now};
use super::storage::check_sizes;
use super::{Inner, State};
use crate::error::{Error, Result};
use crate::headers::encode;
use crate::{
    DeliveryCallback, DeliveryReport, GroupToken, Headers, LogProducer, OutRecord, TopicPartition,
    TxnProducer,
};

/// A record sent in a transaction, placed when it was sent.
struct Pending {
    topic: String,
    /// The incarnation of the topic it was sent to; a topic deleted (or
    /// recreated) before the commit fails the commit.
    topic_id: u64,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// Encoded as the log stores them; empty for none.
    headers: Vec<u8>,
    timestamp: i64,
}

pub(super) struct EmbeddedTxnProducer {
    inner: Arc<Inner>,
    id: String,
    epoch: u64,
    on_delivery: Option<DeliveryCallback>,
    /// The open transaction's records; `None` when no transaction is open.
    open: Mutex<Option<Vec<Pending>>>,
}

impl EmbeddedTxnProducer {
    /// A producer for `id`, fencing any older one of the same id.
    pub(super) fn new(inner: Arc<Inner>, id: &str, on_delivery: Option<DeliveryCallback>) -> Self {
        let epoch = {
            let mut state = inner.lock();
            let epoch = state.txn_epochs.entry(id.to_owned()).or_default();
            *epoch += 1;
            *epoch
        };
        Self {
            inner,
            id: id.to_owned(),
            epoch,
            on_delivery,
            open: Mutex::new(None),
        }
    }

    fn open(&self) -> MutexGuard<'_, Option<Vec<Pending>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails if a newer producer of the same id exists, dropping the open
    /// transaction: it can never be committed.
    fn check_epoch(&self, state: &State, open: &mut Option<Vec<Pending>>) -> Result<()> {
        if state.txn_epochs.get(&self.id) == Some(&self.epoch) {
            return Ok(());
        }
        *open = None;
        Err(Error::Fenced(format!(
            "a newer producer with transactional id '{}' exists",
            self.id
        )))
    }
}

fn no_transaction() -> Error {
    Error::InvalidInput("no transaction is open; call begin first".into())
}

impl LogProducer for EmbeddedTxnProducer {
    fn send(&self, record: OutRecord<'_>) -> Result<()> {
        let mut open = self.open();
        let mut state = self.inner.lock();
        self.check_epoch(&state, &mut open)?;
        let records = open.as_mut().ok_or_else(no_transaction)?;
        let headers_len = check_sizes(record.key, record.value_bytes(), record.headers)?;
        // Kept encoded, as the log stores them: one buffer for all of a
        // record's headers, and none for a record without.
        let mut headers = Vec::new();
        if headers_len > 0 {
            headers.reserve_exact(headers_len);
            encode(record.headers, &mut headers);
        }
        let topic = state
            .topics
            .get_mut(record.topic)
            .ok_or_else(|| Error::UnknownTopic(record.topic.to_owned()))?;
        let partition = pick_partition(topic, &record)?;
        let topic_id = topic.id;
        drop(state);
        records.push(Pending {
            topic: record.topic.to_owned(),
            topic_id,
            partition,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value_bytes().to_vec(),
            headers,
            timestamp: record.timestamp.unwrap_or_else(timestamp_now),
        });
        Ok(())
    }

    fn poll(&self, _timeout: Duration) {}

    fn flush(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    /// Records of the open transaction wait for its commit.
    fn in_flight(&self) -> usize {
        self.open().as_ref().map_or(0, Vec::len)
    }
}

impl TxnProducer for EmbeddedTxnProducer {
    fn begin(&self) -> Result<()> {
        let mut open = self.open();
        self.check_epoch(&self.inner.lock(), &mut open)?;
        if open.is_some() {
            return Err(Error::InvalidInput("a transaction is already open".into()));
        }
        *open = Some(Vec::new());
        Ok(())
    }

    fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &GroupToken,
        _timeout: Duration,
    ) -> Result<()> {
        let membership = group.0.downcast_ref::<Membership>().ok_or_else(|| {
            Error::InvalidInput("the group token comes from another kind of log".into())
        })?;
        let mut open = self.open();
        let mut state = self.inner.lock();
        self.check_epoch(&state, &mut open)?;
        let records = open.take().ok_or_else(no_transaction)?;
        let State { topics, groups, .. } = &mut *state;
        let group = groups.get_mut(&membership.group);
        let member_holds = membership
            .generation
            .zip(group.as_ref())
            .is_some_and(|(g, group)| group.holds(&membership.member, g));
        if !member_holds {
            return Err(Error::Fenced(format!(
                "consumer {} no longer holds its partitions in group '{}' (generation {:?})",
                membership.member, membership.group, membership.generation
            )));
        }
        let group = group.expect("checked above");
        for r in &records {
            if topics.get(&r.topic).is_none_or(|t| t.id != r.topic_id) {
                return Err(Error::UnknownTopic(r.topic.clone()));
            }
        }
        let mut reports = Vec::with_capacity(records.len());
        for r in &records {
            let topic = topics.get_mut(&r.topic).expect("checked above");
            // Only an I/O error of a data directory fails here, after the
            // checks above; records appended before it stay, as after a
            // crash in the middle of a write.
            let offset = topic.partitions[r.partition as usize].append(
                r.key.as_deref(),
                &r.value,
                Headers::encoded(&r.headers),
                r.timestamp,
            )?;
            reports.push(offset);
        }
        for (tp, next) in offsets {
            group.commit(&tp.topic, tp.partition, *next);
        }
        let saved = if offsets.is_empty() {
            Ok(())
        } else {
            self.inner.save_group(&membership.group, group, topics)
        };
        self.inner.unlock_and_wake(state);
        drop(open);
        if let Some(on_delivery) = &self.on_delivery {
            for (r, offset) in records.iter().zip(reports) {
                on_delivery(&DeliveryReport {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    result: Ok(offset),
                    undelivered: None,
                });
            }
        }
        saved
    }

    fn abort(&self, _timeout: Duration) -> Result<()> {
        let mut open = self.open();
        self.check_epoch(&self.inner.lock(), &mut open)?;
        open.take().map(drop).ok_or_else(no_transaction)
    }
}
