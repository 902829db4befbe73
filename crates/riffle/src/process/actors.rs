//! The key-independent style: per-key actors on a pool of workers.
//!
//! Consumer threads decode records and route each by key to one of M worker
//! actors (the same key always to the same worker, so per-key order holds).
//! A worker hosts the state of every key routed to it: each key is a small
//! virtual actor whose mailbox is the worker's. Records travel in batches,
//! one mailbox message per worker per poll, and come back as completions;
//! each partition's offset advances only past records that are finished.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::{Acknowledged, Shared};
use super::{Context, KeyedProcessor, OffsetTracker};
use crate::actor::{self, panic_text, Actor, Addr, Supervision};
use crate::error::{Error, Result};
use crate::log::{partition_for_key, Progress, RecordRef, TopicPartition};
use crate::stream::Handler;

/// Records handed to a worker at once, at most.
const BATCH: usize = 512;
/// Batches waiting in a worker's mailbox before dispatchers wait.
const MAILBOX: usize = 8;
/// How long stopping waits for records in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

pub(super) struct Job<I> {
    key: String,
    input: I,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

/// A finished record.
pub(super) type Done = (Arc<str>, i32, i64);

pub(super) struct Batch<I> {
    jobs: Vec<Job<I>>,
    reply: Sender<Vec<Done>>,
}

/// Hosts the per-key actors routed to it.
struct Worker<P: KeyedProcessor> {
    processor: P,
    states: HashMap<String, P::State>,
    shared: Arc<Shared>,
}

impl<P: KeyedProcessor> Actor for Worker<P> {
    type Msg = Batch<P::Input>;

    fn handle(&mut self, batch: Batch<P::Input>) {
        let mut done = Vec::with_capacity(batch.jobs.len());
        for job in batch.jobs {
            let Job {
                key,
                input,
                topic,
                partition,
                offset,
                timestamp,
            } = job;
            let states = &mut self.states;
            let state = match states.get_mut(&key) {
                Some(s) => s,
                None => states.entry(key.clone()).or_default(),
            };
            let mut ctx = Context::new(&self.shared.producer, &topic, partition, offset, timestamp);
            // A panic is this record's failure, not the worker's: the other
            // keys' state stays, and the record goes to the dead letters.
            let result = catch_unwind(AssertUnwindSafe(|| {
                self.processor.process(&key, input, state, &mut ctx)
            }))
            .unwrap_or_else(|p| {
                Err(Error::Backend(format!(
                    "processor panicked: {}",
                    panic_text(&*p)
                )))
            });
            self.shared.processed(ctx.sent);
            if let Err(e) = result {
                let r = RecordRef {
                    topic: &topic,
                    partition,
                    offset,
                    key: Some(key.as_bytes()),
                    value: &[],
                    timestamp,
                };
                if let Err(e) = self.shared.dead_letter_without_value(&r, &e) {
                    tracing::warn!("{topic}/{partition}@{offset}: {e}");
                }
            }
            done.push((topic, partition, offset));
        }
        // The dispatcher may have stopped; its records will be replayed.
        let _ = batch.reply.send(done);
    }
}

/// The worker pool of one process, shared by its consumers.
pub(super) struct Pool<I> {
    workers: Vec<Addr<Batch<I>>>,
}

impl<I: Send + 'static> Pool<I> {
    pub(super) fn start<P: KeyedProcessor<Input = I>>(
        n: usize,
        processor: &P,
        shared: &Arc<Shared>,
    ) -> (Arc<Self>, Vec<std::thread::JoinHandle<actor::Exit>>) {
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (p, s) = (processor.clone(), shared.clone());
            let (addr, thread) = actor::spawn(
                &format!("worker-{i}"),
                MAILBOX,
                Supervision::default(),
                move || Worker {
                    processor: p.clone(),
                    states: HashMap::new(),
                    shared: s.clone(),
                },
            );
            workers.push(addr);
            threads.push(thread);
        }
        (Arc::new(Self { workers }), threads)
    }

    pub(super) fn len(&self) -> usize {
        self.workers.len()
    }
}

/// The consumer-side half: decodes, routes, tracks offsets.
pub(super) struct Dispatcher<P: KeyedProcessor> {
    processor: P,
    pool: Arc<Pool<P::Input>>,
    shared: Arc<Shared>,
    pending: Vec<Vec<Job<P::Input>>>,
    trackers: HashMap<(Arc<str>, i32), OffsetTracker>,
    topics: Vec<Arc<str>>,
    in_flight: usize,
    acked: Acknowledged,
    reply: Sender<Vec<Done>>,
    replies: Receiver<Vec<Done>>,
}

impl<P: KeyedProcessor> Dispatcher<P> {
    pub(super) fn new(processor: P, pool: Arc<Pool<P::Input>>, shared: Arc<Shared>) -> Self {
        let (reply, replies) = mpsc::channel();
        let pending = (0..pool.len()).map(|_| Vec::new()).collect();
        Self {
            processor,
            pool,
            shared,
            pending,
            trackers: HashMap::new(),
            topics: Vec::new(),
            in_flight: 0,
            acked: Acknowledged::default(),
            reply,
            replies,
        }
    }

    fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.topics.iter().find(|t| &***t == topic) {
            return t.clone();
        }
        let t: Arc<str> = topic.into();
        self.topics.push(t.clone());
        t
    }

    fn flush(&mut self, worker: usize) {
        if self.pending[worker].is_empty() {
            return;
        }
        let jobs = std::mem::replace(&mut self.pending[worker], Vec::with_capacity(BATCH));
        self.in_flight += jobs.len();
        // Waits while the worker's mailbox is full: backpressure.
        if self.pool.workers[worker]
            .send(Batch {
                jobs,
                reply: self.reply.clone(),
            })
            .is_err()
        {
            tracing::error!("worker-{worker} has stopped; its records will be replayed");
        }
    }

    fn finish(&mut self, done: Vec<Done>) {
        self.in_flight -= done.len();
        for (topic, partition, offset) in done {
            if let Some(t) = self.trackers.get_mut(&(topic, partition)) {
                t.finished(offset);
            }
        }
    }
}

impl<P: KeyedProcessor> Handler for Dispatcher<P> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        let topic = self.intern(record.topic);
        self.trackers
            .entry((topic.clone(), record.partition))
            .or_default()
            .dispatched(record.offset);
        let (key, input) = match self.processor.decode(&record) {
            Ok(d) => d,
            Err(e) => {
                let result = self.shared.dead_letter(&record, &e);
                if let Some(t) = self.trackers.get_mut(&(topic, record.partition)) {
                    t.finished(record.offset);
                }
                return result;
            }
        };
        let w = partition_for_key(key.as_bytes(), self.pool.len() as i32) as usize;
        let (partition, offset, timestamp) = (record.partition, record.offset, record.timestamp);
        self.pending[w].push(Job {
            key,
            input,
            topic,
            partition,
            offset,
            timestamp,
        });
        if self.pending[w].len() >= BATCH {
            self.flush(w);
        }
        Ok(())
    }

    fn defers(&self) -> bool {
        true
    }

    fn completed(&mut self, progress: &mut dyn Progress) {
        for w in 0..self.pending.len() {
            self.flush(w);
        }
        while let Ok(done) = self.replies.try_recv() {
            self.finish(done);
        }
        for ((topic, partition), t) in &self.trackers {
            self.acked.processed(topic, *partition, t.committable());
        }
        self.acked.release(&self.shared, progress, false);
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        // Finish what is in flight so the next owner starts after it.
        self.drain();
        self.completed(progress);
    }

    fn drain(&mut self) {
        for w in 0..self.pending.len() {
            self.flush(w);
        }
        let deadline = Instant::now() + DRAIN_WAIT;
        while self.in_flight > 0 {
            match self
                .replies
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(done) => self.finish(done),
                Err(_) => {
                    tracing::warn!(
                        "{} records still in flight after {DRAIN_WAIT:?}; they will be replayed",
                        self.in_flight
                    );
                    break;
                }
            }
        }
        // The release that follows waits for the outputs to be acknowledged.
        self.acked.release_next();
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.acked.forget(partitions);
        // Completions of these partitions no longer move any offset here:
        // the next owner starts from the last commit.
        self.trackers.retain(|(t, p), _| {
            !partitions
                .iter()
                .any(|tp| tp.partition == *p && *tp.topic == **t)
        });
    }
}
