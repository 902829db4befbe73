//! The key-based style: state lives in the consumer actor that owns the
//! partition (the chapter's `TemperatureControllerManager`, one state per
//! key, grouped by partition so it can move with the partition).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::app::{Acknowledged, Shared};
use super::{Context, KeyedProcessor};
use crate::error::Result;
use crate::log::{Progress, RecordRef, TopicPartition};
use crate::stream::Handler;

/// The states of one partition's keys.
pub(super) type PartitionState<S> = HashMap<String, S>;

/// How long a consumer waits for the previous owner in this process to hand
/// over a partition's state before starting without it.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// Hands partition states between the consumers of one process, so that a
/// rebalance inside the process loses nothing. A partition's slot is `Held`
/// while a consumer owns it and `Parked` once it let go; a new owner whose
/// assignment arrives before the old owner has let go waits for it.
pub(super) struct Handoff<S> {
    slots: Mutex<HashMap<i32, Slot<S>>>,
    parked: Condvar,
}

enum Slot<S> {
    Held,
    Parked(PartitionState<S>),
}

impl<S> Default for Handoff<S> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            parked: Condvar::new(),
        }
    }
}

impl<S> Handoff<S> {
    /// Takes partition `p`'s state (empty if none is known here).
    fn take(&self, p: i32) -> PartitionState<S> {
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut slots = self.slots.lock().unwrap();
        while matches!(slots.get(&p), Some(Slot::Held)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "partition {p}: previous owner did not hand over its state; starting empty"
                );
                break;
            }
            slots = self.parked.wait_timeout(slots, left).unwrap().0;
        }
        match slots.insert(p, Slot::Held) {
            Some(Slot::Parked(state)) => state,
            _ => PartitionState::default(),
        }
    }

    /// Leaves partition `p`'s state for its next owner.
    fn park(&self, p: i32, state: PartitionState<S>) {
        self.slots.lock().unwrap().insert(p, Slot::Parked(state));
        self.parked.notify_all();
    }
}

pub(super) struct KeyedHandler<P: KeyedProcessor> {
    pub(super) processor: P,
    pub(super) shared: Arc<Shared>,
    pub(super) handoff: Arc<Handoff<P::State>>,
    /// Keyed by partition number: co-partitioned input topics share state.
    pub(super) owned: HashMap<i32, PartitionState<P::State>>,
    /// Offsets processed, committed once their outputs are acknowledged.
    pub(super) acked: Acknowledged,
}

impl<P: KeyedProcessor> Handler for KeyedHandler<P> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        // Whatever the outcome (processed, dead letter, skipped), the record
        // is done once what it sent is acknowledged.
        self.acked
            .processed(record.topic, record.partition, record.offset + 1);
        let (key, input) = match self.processor.decode(&record) {
            Ok(d) => d,
            Err(e) => return self.shared.dead_letter(&record, &e),
        };
        let states = self.owned.entry(record.partition).or_default();
        let state = match states.get_mut(&key) {
            Some(s) => s,
            None => states.entry(key.clone()).or_default(),
        };
        let mut ctx = Context::new(
            &self.shared.producer,
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
        );
        let result = self.processor.process(&key, input, state, &mut ctx);
        self.shared.processed(ctx.sent);
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.shared.dead_letter(&record, &e),
        }
    }

    fn defers(&self) -> bool {
        true
    }

    fn completed(&mut self, progress: &mut dyn Progress) {
        self.acked.release(&self.shared, progress, false);
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        self.acked.release(&self.shared, progress, true);
    }

    fn drain(&mut self) {
        self.acked.release_next();
    }

    fn assigned(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if !self.owned.contains_key(&tp.partition) {
                let state = self.handoff.take(tp.partition);
                self.owned.insert(tp.partition, state);
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.acked.forget(partitions);
        for tp in partitions {
            if let Some(state) = self.owned.remove(&tp.partition) {
                self.handoff.park(tp.partition, state);
            }
        }
    }
}

impl<P: KeyedProcessor> Drop for KeyedHandler<P> {
    fn drop(&mut self) {
        // A handler rebuilt after a panic, or stopped, leaves its state for
        // whoever owns the partitions next.
        for (p, state) in self.owned.drain() {
            self.handoff.park(p, state);
        }
    }
}
