//! The key-independent style: per-key actors on a pool of workers.
//!
//! Consumer threads decode records and route each by key to one of M worker
//! actors (the same key always to the same worker, so per-key order holds).
//! A worker hosts the state of every key routed to it: each key is a small
//! virtual actor whose mailbox is the worker's. Records travel in batches,
//! one mailbox message per worker per poll, and come back as completions;
//! each partition's offset advances only past records that are finished.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::Shared;
use super::commit::Commits;
use super::{run_processor, Context, KeyedProcessor, OffsetTracker};
use crate::actor::{self, Actor, Addr, Supervision};
use crate::error::{Error, Result};
use crate::log::{partition_for_key, Progress, RecordRef, TopicPartition};
use crate::stream::{Handler, Producer};

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
    /// The producer of the dispatching consumer (its own under
    /// exactly-once, so that outputs join its transaction).
    producer: Producer,
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
            let mut ctx = Context::new(&batch.producer, &topic, partition, offset, timestamp);
            // A failure is this record's, not the worker's: the other keys'
            // state stays, and the record goes to the dead letters.
            let result = run_processor(
                &mut self.processor,
                &key,
                &input,
                state,
                &mut ctx,
                self.shared.retries,
            );
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
                if let Err(e) = self
                    .shared
                    .dead_letter_without_value(&batch.producer, &r, &e)
                {
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
    commits: Commits,
    reply: Sender<Vec<Done>>,
    replies: Receiver<Vec<Done>>,
}

impl<P: KeyedProcessor> Dispatcher<P> {
    pub(super) fn new(
        processor: P,
        pool: Arc<Pool<P::Input>>,
        shared: Arc<Shared>,
        commits: Commits,
    ) -> Self {
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
            commits,
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
                producer: self.commits.producer(&self.shared).clone(),
            })
            .is_err()
        {
            tracing::error!("worker-{worker} has stopped; its records will be replayed");
        }
    }

    /// Offers the finished offsets for commit. Under exactly-once a
    /// transaction may only hold records whose processing is over, so when
    /// one is due the records in flight are finished first.
    fn release(&mut self, progress: &mut dyn Progress, force: bool) {
        if let Commits::ExactlyOnce(t) = &self.commits {
            if self.in_flight > 0 && (force || t.is_due()) {
                self.wait_in_flight();
            }
        }
        for ((topic, partition), t) in &self.trackers {
            self.commits.processed(topic, *partition, t.committable());
        }
        self.commits
            .release(&self.shared, progress, force, &mut |_| Ok(0));
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
        if self.commits.failure().is_some() {
            // The consumer starts over from the last commit after this poll.
            return Ok(());
        }
        let topic = self.intern(record.topic);
        self.trackers
            .entry((topic.clone(), record.partition))
            .or_default()
            .dispatched(record.offset);
        let (key, input) = match self.processor.decode(&record) {
            Ok(d) => d,
            Err(e) => {
                let producer = self.commits.producer(&self.shared);
                let result = self.shared.dead_letter(producer, &record, &e);
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
        self.release(progress, false);
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        // Finish what is in flight so the next owner starts after it.
        self.drain();
        self.completed(progress);
    }

    fn failure(&mut self) -> Option<Error> {
        self.commits.failure().cloned()
    }

    fn drain(&mut self) {
        self.wait_in_flight();
        // The release that follows waits for the outputs to be acknowledged.
        self.commits.release_next();
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.commits.forget(partitions);
        // Completions of these partitions no longer move any offset here:
        // the next owner starts from the last commit.
        self.trackers.retain(|(t, p), _| {
            !partitions
                .iter()
                .any(|tp| tp.partition == *p && *tp.topic == **t)
        });
    }
}

impl<P: KeyedProcessor> Dispatcher<P> {
    /// Hands out pending batches and waits until every record is finished.
    fn wait_in_flight(&mut self) {
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
    }
}
