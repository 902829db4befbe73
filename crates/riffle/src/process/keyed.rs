//! The key-based style: state lives in the consumer actor that owns the
//! partition (the chapter's `TemperatureControllerManager`, one state per
//! key, grouped by partition so it can move with the partition).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::app::Shared;
use super::{Context, KeyedProcessor};
use crate::error::Result;
use crate::log::{RecordRef, TopicPartition};
use crate::stream::Handler;

/// The states of one partition's keys.
pub(super) type PartitionState<S> = HashMap<String, S>;

/// Partition states not owned by any consumer of this process right now:
/// a revoked partition's state waits here for the consumer it is assigned to
/// next, so that a rebalance inside the process loses nothing.
pub(super) type Parked<S> = Arc<Mutex<HashMap<i32, PartitionState<S>>>>;

pub(super) struct KeyedHandler<P: KeyedProcessor> {
    pub(super) processor: P,
    pub(super) shared: Arc<Shared>,
    pub(super) parked: Parked<P::State>,
    /// Keyed by partition number: co-partitioned input topics share state.
    pub(super) owned: HashMap<i32, PartitionState<P::State>>,
}

impl<P: KeyedProcessor> Handler for KeyedHandler<P> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
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

    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let mut parked = self.parked.lock().unwrap();
        for tp in partitions {
            if let Some(state) = parked.remove(&tp.partition) {
                self.owned.entry(tp.partition).or_default().extend(state);
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let mut parked = self.parked.lock().unwrap();
        for tp in partitions {
            if let Some(state) = self.owned.remove(&tp.partition) {
                parked.entry(tp.partition).or_default().extend(state);
            }
        }
    }
}

impl<P: KeyedProcessor> Drop for KeyedHandler<P> {
    fn drop(&mut self) {
        // A handler rebuilt after a panic, or stopped, leaves its state for
        // whoever owns the partitions next.
        let mut parked = self.parked.lock().unwrap();
        for (p, state) in self.owned.drain() {
            parked.entry(p).or_default().extend(state);
        }
    }
}
