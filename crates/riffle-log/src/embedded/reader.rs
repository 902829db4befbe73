//! Reading given partitions outside any group (see [`crate::LogReader`]):
//! a position per partition, records copied out under the lock and visited
//! after it is released, waiting on the log's condition variable for
//! appends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::storage::Batch;
use super::{partition_of, Inner};
use crate::error::{Error, Result};
use crate::{LogReader, ReadVisitor, ReaderConfig, RecordRef, TopicPartition};

struct Position {
    tp: TopicPartition,
    /// The topic's id when the reader started: a topic deleted and created
    /// again under the same name is another topic.
    topic_id: u64,
    next: i64,
}

pub(super) struct EmbeddedReader {
    inner: Arc<Inner>,
    positions: Vec<Position>,
    batch: Batch,
    at_end: bool,
}

impl EmbeddedReader {
    pub(super) fn new(inner: Arc<Inner>, config: &ReaderConfig) -> Result<Self> {
        let mut positions = Vec::with_capacity(config.start.len());
        {
            let state = inner.lock();
            for (tp, from) in &config.start {
                let t = state
                    .topics
                    .get(&tp.topic)
                    .ok_or_else(|| Error::UnknownTopic(tp.topic.clone()))?;
                let p = partition_of(t, &tp.topic, tp.partition)?;
                positions.push(Position {
                    tp: tp.clone(),
                    topic_id: t.id,
                    next: (*from).clamp(p.low(), p.high()),
                });
            }
        }
        Ok(Self {
            inner,
            positions,
            batch: Batch::default(),
            at_end: false,
        })
    }
}

impl LogReader for EmbeddedReader {
    fn poll(&mut self, timeout: Duration, max: usize, visit: ReadVisitor<'_>) -> Result<usize> {
        let deadline = Instant::now().checked_add(timeout);
        self.batch.clear();
        let inner = Arc::clone(&self.inner);
        let mut state = inner.lock();
        loop {
            let mut at_end = true;
            for (slot, pos) in self.positions.iter().enumerate() {
                let t = state
                    .topics
                    .get(&pos.tp.topic)
                    .filter(|t| t.id == pos.topic_id)
                    .ok_or_else(|| Error::UnknownTopic(pos.tp.topic.clone()))?;
                let p = &t.partitions[pos.tp.partition as usize];
                let want = max - self.batch.len();
                let got = p.read(pos.next, want, &mut self.batch, slot);
                at_end &= pos.next + got as i64 >= p.high();
            }
            self.at_end = at_end;
            let now = Instant::now();
            if self.batch.len() > 0 || deadline.is_some_and(|d| now >= d) {
                break;
            }
            state = inner.wait(state, deadline);
        }
        drop(state);
        for (r, key, value, headers, timestamp) in self.batch.iter() {
            let pos = &mut self.positions[r.slot];
            visit(RecordRef {
                topic: &pos.tp.topic,
                partition: pos.tp.partition,
                offset: r.offset,
                key,
                value,
                timestamp: Some(timestamp),
                headers,
            })?;
            pos.next = r.offset + 1;
        }
        Ok(self.batch.len())
    }

    fn at_end(&self) -> bool {
        self.at_end
    }
}
