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

use super::commit::{Commits, MAX_HOLD};
use super::growth::{Growth, LayoutCell, Verdict};
use super::query::{to_json, Question};
use super::shared::{Settling, Shared};
use super::time::Watermark;
use super::timers::{apply_changes, fire, Clock};
use super::{run_processor, Context, KeyedProcessor, OffsetTracker, Upgrader};
use crate::actor::{self, Actor, Addr, Supervision};
use crate::error::{Error, Result};
use crate::log::{partition_for_key, Headers, OwnedHeader, Progress, RecordRef, TopicPartition};
use crate::stream::{memory, Deferring, Handler, Producer};
use riffle_state::{
    restore_point, send_changes, Changes, Domain, Durability, Encoded, PartitionStores,
    RestoreFrom, SnapshotWriter, Store,
};
use riffle_state::{ByPartition, Handoff, Layout};

/// Records handed to a worker at once, at most.
const BATCH: usize = 512;
/// Batches waiting in a worker's mailbox before dispatchers wait.
const MAILBOX: usize = 8;
/// How long stopping waits for records in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// How often partition states are saved as local snapshots.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

pub(super) struct Job<I> {
    key: String,
    input: I,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    event_time: Option<i64>,
    /// The record's headers, copied only if it has any: the consumer's
    /// buffer is gone by the time a worker runs the job.
    headers: Vec<OwnedHeader>,
    /// The partition's watermark with this record: event-time timers due
    /// by then fire before it.
    watermark: Option<i64>,
}

/// A finished record.
pub(super) type Done = (Arc<str>, i32, i64);

/// What a worker is asked to do.
pub(super) enum Msg<I, S> {
    /// Process records.
    Batch {
        jobs: Vec<Job<I>>,
        reply: Sender<Vec<Done>>,
        /// The producer of the dispatching consumer (its own under
        /// exactly-once, so that outputs join its transaction).
        producer: Producer,
        /// Processing time when the batch was sent.
        now: i64,
    },
    /// Fire the timers due in these partitions (processing time `now`,
    /// and event time up to each one's watermark) and delete keys past
    /// their time to live; answer with how many timers and keys that was.
    Tick {
        partitions: Vec<(i32, Option<i64>)>,
        now: i64,
        producer: Producer,
        reply: Sender<usize>,
    },
    /// Host these states of a partition's keys, replacing any held.
    Load { partition: i32, store: Store<S> },
    /// Hand over the changed states of these partitions, encoded, and
    /// count them as written: the dispatcher sends them to the changelog.
    Changes {
        partitions: Vec<i32>,
        reply: Sender<Result<Changes>>,
    },
    /// Answer with a key's state.
    Query(Question),
    /// Encode a partition's states, for a snapshot.
    Dump {
        partition: i32,
        reply: Sender<Result<Encoded>>,
    },
    /// The input grew: hand over the keys of a partition that now belong
    /// to one of `targets` (see [`Growth`]).
    MoveOut {
        partition: i32,
        layout: Layout,
        targets: Vec<i32>,
        reply: Sender<Store<S>>,
    },
    /// Host these keys of a partition too (moved in from another).
    Merge { partition: i32, store: Store<S> },
}

/// Hosts the per-key actors routed to it, grouped by partition so that
/// their state can be written, restored and moved per partition.
struct Worker<P: KeyedProcessor> {
    processor: P,
    stores: PartitionStores<P::State>,
    shared: Arc<Shared>,
    /// The changelog the states come from, for dead letters of those that
    /// do not decode.
    changelog: Option<Arc<str>>,
}

impl<P: KeyedProcessor> Worker<P> {
    /// Sends the states found damaged as their keys were first used to the
    /// dead-letter topic (a snapshot's states are decoded then).
    fn dead_letter_damaged(&mut self, producer: &Producer) {
        let Some(changelog) = &self.changelog else {
            return;
        };
        for store in self.stores.values_mut() {
            if !store.damaged().is_empty() {
                self.shared
                    .dead_letter_found_damaged(producer, changelog, store);
            }
        }
    }

    fn store(&mut self, partition: i32) -> &mut Store<P::State> {
        let ttl = self.shared.ttl;
        self.stores.entry(partition).or_insert_with(|| {
            let mut store = Store::new(P::STATE_VERSION);
            store.set_ttl(ttl);
            store
        })
    }

    fn process(&mut self, jobs: Vec<Job<P::Input>>, producer: &Producer, now: i64) -> Vec<Done> {
        let mut done = Vec::with_capacity(jobs.len());
        let mut scratch = P::State::default();
        let shared = self.shared.clone();
        self.processor.begin_batch();
        for job in jobs {
            let Job {
                key,
                input,
                topic,
                partition,
                offset,
                timestamp,
                event_time,
                headers,
                watermark,
            } = job;
            let mut ctx = Context::new(
                (producer, &*shared),
                &topic,
                partition,
                offset,
                timestamp,
                Headers::from(&headers),
            )
            .at(now, watermark)
            .with_event_time(event_time);
            let result = if P::STATEFUL {
                let store = self.store(partition);
                store.set_now(now);
                if let Some(mark) = watermark.filter(|&m| store.next_due(Domain::Event) <= Some(m))
                {
                    let clock = Clock { now, watermark };
                    let to = (producer, &*shared);
                    let store = self.stores.get_mut(&partition).expect("made above");
                    fire(
                        &mut self.processor,
                        to,
                        store,
                        partition,
                        (Domain::Event, mark),
                        clock,
                    );
                }
                let store = self.stores.get_mut(&partition).expect("made above");
                let state = store.get_mut(&key);
                // A failure is this record's, not the worker's: the other
                // keys' state stays, and the record goes to the dead letters.
                let result = run_processor(
                    &mut self.processor,
                    &key,
                    &input,
                    state,
                    &mut ctx,
                    self.shared.retries,
                );
                apply_changes(store, &key, std::mem::take(&mut ctx.timers), ctx.delete);
                result
            } else {
                run_processor(
                    &mut self.processor,
                    &key,
                    &input,
                    &mut scratch,
                    &mut ctx,
                    self.shared.retries,
                )
            };
            self.shared.processed(ctx.sent);
            if let Err(e) = result {
                let r = RecordRef {
                    topic: &topic,
                    partition,
                    offset,
                    key: Some(key.as_bytes()),
                    value: &[],
                    timestamp,
                    headers: Headers::from(&headers),
                };
                if let Err(e) = self.shared.dead_letter_without_value(producer, &r, &e) {
                    tracing::warn!("{topic}/{partition}@{offset}: {e}");
                }
            }
            done.push((topic, partition, offset));
        }
        self.processor.end_batch();
        done
    }
}

impl<P: KeyedProcessor> Worker<P> {
    /// See [`Msg::Tick`].
    fn tick(&mut self, partitions: &[(i32, Option<i64>)], now: i64, producer: &Producer) -> usize {
        let mut n = 0;
        for &(p, mark) in partitions {
            let Some(store) = self.stores.get_mut(&p) else {
                continue;
            };
            store.set_now(now);
            let clock = Clock {
                now,
                watermark: mark,
            };
            let to = (producer, &*self.shared);
            n += fire(
                &mut self.processor,
                to,
                store,
                p,
                (Domain::Processing, now),
                clock,
            );
            if let Some(mark) = mark {
                n += fire(
                    &mut self.processor,
                    to,
                    store,
                    p,
                    (Domain::Event, mark),
                    clock,
                );
            }
            let expired = store.expire();
            self.shared
                .stats
                .expired
                .fetch_add(expired as u64, std::sync::atomic::Ordering::Relaxed);
            n += expired;
        }
        n
    }

    fn changes(&mut self, partitions: &[i32]) -> Result<Changes> {
        let mut out = Vec::new();
        for p in partitions {
            if let Some(store) = self.stores.get_mut(p) {
                if store.has_changes() {
                    out.push((*p, store.take_changes()?));
                }
            }
        }
        Ok(out)
    }
}

impl<P: KeyedProcessor> Actor for Worker<P> {
    type Msg = Msg<P::Input, P::State>;

    fn handle(&mut self, msg: Self::Msg) {
        // Replies go to dispatchers that may have stopped meanwhile; their
        // records are then replayed by the next owner.
        match msg {
            Msg::Batch {
                jobs,
                reply,
                producer,
                now,
            } => {
                let done = self.process(jobs, &producer, now);
                self.dead_letter_damaged(&producer);
                let _ = reply.send(done);
            }
            Msg::Tick {
                partitions,
                now,
                producer,
                reply,
            } => {
                let ticked = self.tick(&partitions, now, &producer);
                self.dead_letter_damaged(&producer);
                let _ = reply.send(ticked);
            }
            Msg::Query(q) => {
                let state = self
                    .stores
                    .get_mut(&q.partition)
                    .and_then(|s| s.get(&q.key));
                let _ = q.reply.send(to_json(state));
            }
            Msg::Load {
                partition,
                mut store,
            } => {
                store.set_ttl(self.shared.ttl);
                self.stores.insert(partition, store);
            }
            Msg::Changes { partitions, reply } => {
                let _ = reply.send(self.changes(&partitions));
            }
            Msg::MoveOut {
                partition,
                layout,
                targets,
                reply,
            } => {
                let moved = self
                    .store(partition)
                    .take_where(|k| targets.contains(&layout.new_partition(k.as_bytes())));
                let _ = reply.send(moved);
            }
            Msg::Merge { partition, store } => self.store(partition).absorb(store),
            Msg::Dump { partition, reply } => {
                let dump = self
                    .stores
                    .get(&partition)
                    .map_or_else(|| Ok(Encoded::default()), Store::encoded);
                let _ = reply.send(dump);
            }
        }
    }
}

/// The worker pool of one process, shared by its consumers, and what the
/// pool knows of the partition states its workers host.
pub(super) struct Pool<P: KeyedProcessor> {
    workers: Vec<Addr<Msg<P::Input, P::State>>>,
    /// Per partition, the changelog offset the workers' states of it
    /// reflect, when the consumer that owned it let go cleanly.
    handoff: Handoff<i64>,
}

impl<P: KeyedProcessor> Pool<P> {
    pub(super) fn start(
        n: usize,
        processor: &P,
        shared: &Arc<Shared>,
        changelog: Option<Arc<str>>,
    ) -> (Arc<Self>, Vec<std::thread::JoinHandle<actor::Exit>>) {
        let mut workers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (p, s, c) = (processor.clone(), shared.clone(), changelog.clone());
            let (addr, thread) = actor::spawn(
                &format!("worker-{i}"),
                MAILBOX,
                Supervision::default(),
                move || Worker {
                    processor: p.clone(),
                    stores: PartitionStores::new(),
                    shared: s.clone(),
                    changelog: c.clone(),
                },
            );
            workers.push(addr);
            threads.push(thread);
        }
        let pool = Self {
            workers,
            handoff: Handoff::default(),
        };
        (Arc::new(pool), threads)
    }

    pub(super) fn len(&self) -> usize {
        self.workers.len()
    }

    fn worker_of(&self, key: &str) -> usize {
        partition_for_key(key.as_bytes(), self.workers.len() as i32) as usize
    }

    /// Asks every worker for the changed states of `partitions`; each
    /// answers on the returned channel.
    fn changes(&self, partitions: &[i32]) -> Result<Receiver<Result<Changes>>> {
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.send(Msg::Changes {
                partitions: partitions.to_vec(),
                reply: tx.clone(),
            })
            .map_err(|_| Error::Stopped("a worker".into()))?;
        }
        Ok(rx)
    }

    /// Asks every worker and collects the answers.
    fn ask<T>(&self, msg: impl Fn(Sender<T>) -> Msg<P::Input, P::State>) -> Result<Vec<T>> {
        let (tx, rx) = mpsc::channel();
        for w in &self.workers {
            w.send(msg(tx.clone()))
                .map_err(|_| Error::Stopped("a worker".into()))?;
        }
        drop(tx);
        let answers: Vec<T> = rx.iter().collect();
        if answers.len() < self.workers.len() {
            return Err(Error::Stopped("a worker".into()));
        }
        Ok(answers)
    }
}

/// The consumer-side half: decodes, routes, tracks offsets, and moves the
/// state of its partitions in and out of the workers.
pub(super) struct Dispatcher<P: KeyedProcessor> {
    processor: P,
    pool: Arc<Pool<P>>,
    shared: Arc<Shared>,
    /// Where state is made durable; `None` for stateless processors.
    durability: Option<Arc<Durability>>,
    /// Partition numbers owned (co-partitioned inputs share state).
    owned: Vec<i32>,
    pending: Vec<Vec<Job<P::Input>>>,
    trackers: HashMap<(Arc<str>, i32), OffsetTracker>,
    topics: Vec<Arc<str>>,
    in_flight: usize,
    commits: Commits,
    reply: Sender<Vec<Done>>,
    replies: Receiver<Vec<Done>>,
    /// At-least-once with state: the write of state under way, and when
    /// the last one started.
    round: Option<Round>,
    last_round: Instant,
    /// State changes a failed round could not send.
    unsent: Changes,
    /// The offsets the last round stored.
    stored: Vec<(Arc<str>, i32, i64)>,
    /// The offsets last offered for commit (outside rounds).
    offered: Vec<(Arc<str>, i32, i64)>,
    last_snapshot: Instant,
    stopping: bool,
    /// The changelog ends the last release settled at, when stopping: the
    /// snapshots are written once the consumer has left the group.
    final_ends: Option<HashMap<i32, i64>>,
    /// Each owned partition's watermark.
    watermarks: ByPartition<Watermark>,
    /// Processing time, read once per poll.
    now: i64,
    /// When the workers were last asked to fire timers.
    last_tick: Instant,
    ticked: Sender<usize>,
    ticks: Receiver<usize>,
    /// Ticks sent and not answered yet.
    ticks_out: usize,
    /// The clock generation when the round of ticks under way was sent,
    /// and when the last one answered was.
    ticked_at: u64,
    answered: u64,
    /// Timers fired and keys expired since memory was last given back.
    ticked_work: u64,
    settling: Settling,
    /// Timers fired or keys expired since the last state write.
    touched: bool,
    /// Moving state when the input gains partitions.
    growth: Option<Growth>,
    /// Per owned partition, the state layer's marks, and the keys moving
    /// between the workers and the changelog.
    marks: PartitionStores<P::State>,
    /// Why a move could not be written: the consumer starts over.
    growth_failure: Option<Error>,
}

/// How often workers are asked to fire their processing-time timers.
const TICK_EVERY: Duration = Duration::from_millis(100);

/// At-least-once with state: a round collects the states changed by the
/// records finished when it started, sends them to the changelog once the
/// outputs of those records are acknowledged, and stores the records'
/// offsets once the states are acknowledged in turn. Each step waits for the
/// producer to be idle (or for a flush, after [`MAX_HOLD`]), never blocking
/// the workers.
struct Round {
    offsets: Vec<(Arc<str>, i32, i64)>,
    answers: Receiver<Result<Changes>>,
    waiting: usize,
    changes: Changes,
    sent: bool,
    /// When the current step began waiting for the producer.
    since: Instant,
    failed: Option<Error>,
}

/// Least time between two at-least-once state writes.
const ROUND_GAP: Duration = Duration::from_millis(100);

impl<P: KeyedProcessor> Dispatcher<P> {
    pub(super) fn new(
        processor: P,
        pool: Arc<Pool<P>>,
        shared: Arc<Shared>,
        durability: Option<Arc<Durability>>,
        commits: Commits,
    ) -> Self {
        let (reply, replies) = mpsc::channel();
        let (ticked, ticks) = mpsc::channel();
        let pending = (0..pool.len()).map(|_| Vec::new()).collect();
        Self {
            now: shared.clock.now_ms(),
            processor,
            pool,
            shared,
            durability,
            owned: Vec::new(),
            pending,
            trackers: HashMap::new(),
            topics: Vec::new(),
            in_flight: 0,
            commits,
            reply,
            replies,
            round: None,
            last_round: Instant::now(),
            unsent: Vec::new(),
            stored: Vec::new(),
            offered: Vec::new(),
            last_snapshot: Instant::now(),
            stopping: false,
            final_ends: None,
            watermarks: ByPartition::default(),
            last_tick: Instant::now(),
            ticked,
            ticks,
            ticks_out: 0,
            ticked_at: 0,
            answered: 0,
            ticked_work: 0,
            settling: Settling::new(),
            touched: false,
            growth: None,
            marks: PartitionStores::new(),
            growth_failure: None,
        }
    }

    /// Moves state as `layout` says when the input gains partitions.
    pub(super) fn with_growth(mut self, layout: Option<Arc<LayoutCell>>) -> Self {
        let atomic = matches!(self.commits, Commits::ExactlyOnce(_));
        self.growth = layout.map(|cell| Growth::new(cell, atomic));
        self
    }

    /// Moves a growth on (see [`Growth`]): records held for moved state
    /// that arrived are handled again, after the state is with the
    /// workers; the keys of partitions past their cut are taken from the
    /// workers and written, in a commit of their own.
    fn grow(&mut self, progress: &mut dyn Progress) {
        let (Some(g), Some(d)) = (self.growth.as_mut(), self.durability.clone()) else {
            return;
        };
        if g.layout().is_none() {
            return;
        }
        for ((t, p), tr) in &self.trackers {
            g.processed(t, *p, tr.committable());
        }
        let upgrade = Upgrader(self.processor.clone());
        let released = g.poll(&mut self.marks, &d, &upgrade);
        for (&p, store) in self.marks.iter_mut() {
            if store.is_empty() {
                continue;
            }
            let parts = store
                .take_states()
                .split(self.pool.len(), |k| self.pool.worker_of(k));
            for (w, part) in self.pool.workers.iter().zip(parts) {
                if w.send(Msg::Merge {
                    partition: p,
                    store: part,
                })
                .is_err()
                {
                    panic!("a worker has stopped");
                }
            }
        }
        for r in released {
            if let Err(e) = self.handle(r.as_ref()) {
                tracing::warn!("{}/{}@{}: {e}", r.topic, r.partition, r.offset);
            }
        }
        let ready = self.growth.as_ref().map(Growth::ready).unwrap_or_default();
        if ready.is_empty() && !self.growth.as_ref().is_some_and(Growth::pending) {
            return;
        }
        // Every record dispatched is processed before the keys leave.
        self.wait_in_flight();
        let Some(g) = self.growth.as_mut() else {
            return;
        };
        for ((t, p), tr) in &self.trackers {
            g.processed(t, *p, tr.committable());
        }
        if let Some(l) = g.layout() {
            for p in ready {
                let taken = self.pool.ask(|reply| Msg::MoveOut {
                    partition: p,
                    layout: l,
                    targets: l.targets(p),
                    reply,
                });
                match taken {
                    Ok(parts) => {
                        let store = self.marks.entry(p).or_default();
                        for part in parts {
                            store.absorb(part);
                        }
                    }
                    Err(e) => self.growth_failure = Some(e),
                }
            }
        }
        match self.commits {
            // Written inside the transaction, with everything else.
            Commits::ExactlyOnce(_) => {
                self.commits.touch();
                self.release(progress, true);
            }
            Commits::AtLeastOnce(_) => {
                let producer = self.commits.producer().clone();
                // The targets' side must be acknowledged before the old
                // partition's is written.
                let acked = match producer.in_flight() {
                    0 => Ok(()),
                    _ => producer.flush(Producer::CLOSE_TIMEOUT),
                };
                let written =
                    acked.and_then(|()| g.write(&mut self.marks, &producer, &d.changelog));
                if let Err(e) = written {
                    self.growth_failure = Some(e);
                }
                self.touched = true;
            }
        }
    }

    /// Asks every worker to fire what is due in this consumer's partitions
    /// (at most every [`TICK_EVERY`]), and notes what earlier asks did.
    ///
    /// One round of ticks at a time: `answered` is the clock generation
    /// at which the last round that every worker answered was sent.
    fn tick(&mut self, generation: u64) {
        while let Ok(n) = self.ticks.try_recv() {
            self.ticks_out -= 1;
            self.ticked_work += n as u64;
            if n > 0 {
                // At-least-once with state writes it in rounds, which
                // look at `touched`; the others commit through `commits`.
                self.touched = true;
                if !self.in_rounds() {
                    self.commits.touch();
                }
            }
        }
        if self.ticks_out > 0 {
            return;
        }
        self.answered = self.ticked_at;
        if self.owned.is_empty() {
            // Nothing to fire.
            self.answered = generation;
            return;
        }
        if self.last_tick.elapsed() < TICK_EVERY {
            return;
        }
        self.last_tick = Instant::now();
        self.ticked_at = generation;
        let (now, cfg) = (self.now, &self.shared.event_time);
        let partitions: Vec<(i32, Option<i64>)> = self
            .owned
            .iter()
            .map(|&p| {
                // Moved on if idle; sent either way, so that a worker
                // whose keys get no records fires their event-time timers.
                let mark = self.watermarks.get_mut(&p).and_then(|w| {
                    w.tick(now, cfg);
                    w.current()
                });
                (p, mark)
            })
            .collect();
        for w in &self.pool.workers {
            self.ticks_out += 1;
            let _ = w.send(Msg::Tick {
                partitions: partitions.clone(),
                now,
                producer: self.commits.producer().clone(),
                reply: self.ticked.clone(),
            });
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
            .send(Msg::Batch {
                jobs,
                reply: self.reply.clone(),
                producer: self.commits.producer().clone(),
                now: self.now,
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

    /// Each partition's offset below which every record is finished.
    fn finished(&self) -> Vec<(Arc<str>, i32, i64)> {
        let mut v: Vec<_> = self
            .trackers
            .iter()
            .map(|((t, p), tr)| (t.clone(), *p, tr.committable()))
            .collect();
        v.sort();
        v
    }

    /// Offers finished offsets for commit; returns whether everything
    /// finished is committed.
    fn release(&mut self, progress: &mut dyn Progress, force: bool) -> bool {
        match (&self.commits, self.durability.is_some()) {
            (Commits::ExactlyOnce(t), stateful) => {
                // A transaction may only hold records whose processing is
                // over, so when one is due the records in flight finish.
                if self.in_flight > 0 && (force || t.is_due(progress.behind())) {
                    self.wait_in_flight();
                }
                self.offer_finished();
                let (pool, owned) = (&self.pool, &self.owned);
                let (growth, marks, failure) =
                    (&mut self.growth, &mut self.marks, &mut self.growth_failure);
                let changelog = self.durability.as_ref().map(|d| d.changelog.as_str());
                let mut write = |producer: &Producer| -> Result<usize> {
                    match (stateful, changelog) {
                        (true, Some(changelog)) => {
                            let mut changes: Changes = Vec::new();
                            for answer in pool.changes(owned)?.iter().take(pool.len()) {
                                changes.extend(answer?);
                            }
                            let mut sent = send_changes(producer, changelog, &mut changes)?;
                            // Keys taken from the workers for a move.
                            if let Some(g) = growth.as_mut() {
                                sent += g
                                    .write(marks, producer, changelog)
                                    .inspect_err(|e| *failure = Some(e.clone()))?;
                            }
                            Ok(sent)
                        }
                        _ => Ok(0),
                    }
                };
                self.commits
                    .release(&self.shared, progress, force, &mut write);
                self.commits.is_settled()
            }
            (Commits::AtLeastOnce(_), false) => {
                self.offer_finished();
                self.commits
                    .release(&self.shared, progress, force, &mut |_| Ok(0));
                self.commits.is_settled()
            }
            (Commits::AtLeastOnce(_), true) => self.release_rounds(progress, force),
        }
    }

    /// At-least-once with state (see [`Round`]); a forced release finishes
    /// what is in flight and runs a round to its end.
    fn release_rounds(&mut self, progress: &mut dyn Progress, force: bool) -> bool {
        if force {
            self.wait_in_flight();
            // The round under way covers less than everything: finish it,
            // then run one that covers the rest.
            if self.advance_round(progress, true) == Some(false) {
                return false;
            }
            return self.start_round() && self.advance_round(progress, true) == Some(true);
        }
        if self.round.is_some() {
            self.advance_round(progress, false);
        } else if self.last_round.elapsed() >= ROUND_GAP
            && (self.finished() != self.stored || self.touched)
        {
            self.touched = false;
            self.start_round();
        }
        false
    }

    /// Starts a round covering the records finished now.
    fn start_round(&mut self) -> bool {
        self.last_round = Instant::now();
        let offsets = self.finished();
        match self.pool.changes(&self.owned) {
            Ok(answers) => {
                self.round = Some(Round {
                    offsets,
                    answers,
                    waiting: self.pool.len(),
                    // Changes a failed round could not send go first.
                    changes: std::mem::take(&mut self.unsent),
                    sent: false,
                    since: Instant::now(),
                    failed: None,
                });
                true
            }
            Err(e) => {
                tracing::warn!("cannot collect state: {e}");
                false
            }
        }
    }

    /// Moves the round under way on as far as it can go now (to its end,
    /// if `wait`). `None` while it is under way, else whether it stored
    /// its offsets.
    fn advance_round(&mut self, progress: &mut dyn Progress, wait: bool) -> Option<bool> {
        let shared = &self.shared;
        let outlet = self.commits.outlet();
        let round = self.round.as_mut()?;
        while round.waiting > 0 {
            let answer = if wait {
                round.answers.recv_timeout(DRAIN_WAIT).ok()
            } else {
                round.answers.try_recv().ok()
            };
            match answer {
                Some(Ok(changes)) => {
                    round.changes.extend(changes);
                    round.waiting -= 1;
                }
                Some(Err(e)) => {
                    round.failed = Some(e);
                    round.waiting -= 1;
                }
                None if wait => {
                    round.failed = Some(Error::Timeout(format!(
                        "workers did not hand over state within {DRAIN_WAIT:?}"
                    )));
                    break;
                }
                None => return None,
            }
        }
        // Each step needs everything sent before it acknowledged.
        let acknowledged = |round: &mut Round| -> Option<Result<()>> {
            let p = &outlet.producer;
            if p.in_flight() == 0 {
                return Some(Ok(()));
            }
            (wait || round.since.elapsed() >= MAX_HOLD).then(|| p.flush(Producer::CLOSE_TIMEOUT))
        };
        if round.failed.is_none() && !round.sent {
            match acknowledged(round)? {
                Ok(()) => {
                    let changelog = &self.durability.as_ref().expect("stateful").changelog;
                    match send_changes(&outlet.producer, changelog, &mut round.changes) {
                        Ok(_) => {
                            round.sent = true;
                            round.since = Instant::now();
                        }
                        Err(e) => round.failed = Some(e),
                    }
                }
                Err(e) => round.failed = Some(e),
            }
        }
        if round.failed.is_none() {
            // Outputs the log refused go again, then to the dead letters,
            // before the offsets move past their records.
            let mut ready = acknowledged(round)?;
            while ready.is_ok() && outlet.dead_letter_refused(shared) > 0 {
                ready = outlet.producer.flush(Producer::CLOSE_TIMEOUT);
            }
            round.failed = ready.err();
        }
        let round = self.round.take().expect("present");
        match round.failed {
            None => {
                for (t, p, o) in &round.offsets {
                    progress.store(t, *p, *o);
                }
                self.stored = round.offsets;
                Some(true)
            }
            Some(e) => {
                tracing::warn!("cannot write state, holding offsets back: {e}");
                self.unsent = round.changes;
                Some(false)
            }
        }
    }

    fn changelog_ends(&self) -> Option<HashMap<i32, i64>> {
        self.durability.as_ref()?.ends_or_warn()
    }

    /// Saves a snapshot of each owned partition, its states gathered from
    /// every worker.
    fn snapshot(&mut self, progress: &mut dyn Progress) {
        if let Some(ends) = self.snapshot_ends(progress) {
            self.save_snapshots(&ends);
        }
    }

    /// Settles everything for a snapshot and returns the changelog's ends
    /// it reflects; `None` when no snapshot is due or possible.
    fn snapshot_ends(&mut self, progress: &mut dyn Progress) -> Option<HashMap<i32, i64>> {
        self.last_snapshot = Instant::now();
        let d = self.durability.as_ref()?;
        if d.snapshots.is_none() || self.owned.is_empty() || !self.release(progress, true) {
            return None;
        }
        self.changelog_ends()
    }

    fn save_snapshots(&self, ends: &HashMap<i32, i64>) {
        let Some(d) = self.durability.as_deref() else {
            return;
        };
        for &p in &self.owned {
            if let Some(&end) = ends.get(&p) {
                self.snapshot_partition(d, p, end);
            }
        }
    }

    /// Saves partition `p`'s states, gathered from every worker, as the
    /// snapshot of the changelog up to `end`.
    fn snapshot_partition(&self, d: &Durability, p: i32, end: i64) {
        let Some(path) = d.snapshot_path(p) else {
            return;
        };
        // Not while a growth may move keys into it (see `keyed::whole`).
        if !self
            .growth
            .as_ref()
            .is_none_or(|g| g.complete(p, self.marks.get(&p)))
        {
            return;
        }
        let saved = self
            .pool
            .ask(|reply| Msg::Dump {
                partition: p,
                reply,
            })
            .and_then(|parts| {
                let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
                // The state layer's marks are kept here, not by the workers.
                let marks: Vec<(&str, &[u8])> = self
                    .marks
                    .get(&p)
                    .map(|m| m.marks().collect())
                    .unwrap_or_default();
                let n = parts.iter().map(Encoded::len).sum::<usize>() + marks.len();
                let mut w = SnapshotWriter::create(&path, end, n)?;
                for (k, v) in parts.iter().flat_map(Encoded::iter).chain(marks) {
                    w.entry(k, v)?;
                }
                w.finish()
            });
        if let Err(e) = saved {
            tracing::warn!("{e}");
        }
    }
}

impl<P: KeyedProcessor> Handler for Dispatcher<P> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        if self.commits.halted() {
            // The consumer starts over from the last commit after this poll.
            return Ok(());
        }
        if self.growth.as_mut().is_some_and(|g| g.held(&record)) {
            return Ok(());
        }
        let decoded = self.processor.decode(&record);
        let mut stale = None;
        if let (Some(g), Ok((key, _))) = (self.growth.as_mut(), &decoded) {
            if let Some(l) = g.layout() {
                let at = (record.topic, record.partition, record.offset);
                match g.verdict(&l, at, key, self.marks.get(&record.partition)) {
                    Verdict::Process => {}
                    Verdict::Hold => {
                        g.hold(&record);
                        return Ok(());
                    }
                    Verdict::Skip => stale = Some(None),
                    Verdict::Stale(why) => stale = Some(Some(why)),
                }
            }
        }
        let topic = self.intern(record.topic);
        self.trackers
            .entry((topic.clone(), record.partition))
            .or_default()
            .dispatched(record.offset);
        let decoded = match stale {
            None => decoded,
            Some(None) => {
                if let Some(t) = self.trackers.get_mut(&(topic, record.partition)) {
                    t.finished(record.offset);
                }
                return Ok(());
            }
            Some(Some(why)) => Err(Error::InvalidInput(why)),
        };
        let (key, input) = match decoded {
            Ok(d) => d,
            Err(e) => {
                let producer = self.commits.producer();
                let result = self.shared.dead_letter(producer, &record, &e);
                if let Some(t) = self.trackers.get_mut(&(topic, record.partition)) {
                    t.finished(record.offset);
                }
                return result;
            }
        };
        let event_time = self.processor.event_time(&record, &input);
        let cfg = &self.shared.event_time;
        let mark = self.watermarks.entry(record.partition).or_default();
        if let Some(why) = mark.late(event_time, cfg) {
            self.shared
                .stats
                .late
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let producer = self.commits.producer();
            let result = self
                .shared
                .dead_letter(producer, &record, &Error::InvalidInput(why));
            if let Some(t) = self.trackers.get_mut(&(topic, record.partition)) {
                t.finished(record.offset);
            }
            return result;
        }
        let watermark = mark.observe(event_time, self.now, cfg);
        let w = self.pool.worker_of(&key);
        let (partition, offset, timestamp) = (record.partition, record.offset, record.timestamp);
        self.pending[w].push(Job {
            key,
            input,
            topic,
            partition,
            offset,
            timestamp,
            event_time,
            headers: record.headers.to_vec(),
            watermark,
        });
        if self.pending[w].len() >= BATCH {
            self.flush(w);
        }
        Ok(())
    }

    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let mut restore = Vec::new();
        let mut ends = None;
        if let Some(g) = &self.growth {
            let new: Vec<i32> = partitions
                .iter()
                .map(|tp| tp.partition)
                .filter(|p| !self.owned.contains(p))
                .collect();
            g.know(&new);
        }
        // While the inputs grow, the workers' states come with marks kept
        // here: a partition is restored, not taken over from the workers.
        let growing = self.growth.as_mut().is_some_and(|g| g.layout().is_some());
        for tp in partitions {
            if self.owned.contains(&tp.partition) {
                continue;
            }
            self.owned.push(tp.partition);
            let Some(d) = &self.durability else {
                continue;
            };
            let held = self.pool.handoff.take(tp.partition);
            let ends = ends.get_or_insert_with(|| restore_point(d));
            let end = ends.get(&tp.partition).copied().unwrap_or(0);
            if held == Some(end) && !growing {
                // The workers hold this partition's state, and nobody wrote
                // the changelog since.
                if let Some(g) = &mut self.growth {
                    let mut marks = Store::new(P::STATE_VERSION);
                    g.assigned(tp.partition, end, &mut marks, d);
                    self.marks.insert(tp.partition, marks);
                }
                continue;
            }
            restore.push((tp.partition, RestoreFrom::Snapshot));
        }
        let (Some(d), Some(ends)) = (self.durability.clone(), ends) else {
            return;
        };
        let processor = &self.processor;
        let restored =
            d.restore_all::<P::State, _>(restore, &ends, &self.shared.stats.state, || {
                Upgrader(processor.clone())
            });
        for (p, store) in restored {
            // Processing without the partition's state would be wrong:
            // let the consumer restart and try again.
            let mut store =
                store.unwrap_or_else(|e| panic!("cannot restore the state of partition {p}: {e}"));
            self.shared
                .dead_letter_damaged(self.commits.producer(), &d.changelog, &mut store);
            if let Some(g) = &mut self.growth {
                let end = ends.get(&p).copied().unwrap_or(0);
                g.assigned(p, end, &mut store, &d);
                let states = store.take_states();
                self.marks.insert(p, std::mem::replace(&mut store, states));
            }
            let parts = store.split(self.pool.len(), |k| self.pool.worker_of(k));
            for (w, part) in self.pool.workers.iter().zip(parts) {
                let load = Msg::Load {
                    partition: p,
                    store: part,
                };
                if w.send(load).is_err() {
                    panic!("a worker has stopped");
                }
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        if self.shared.killed() {
            // Gone with the process: nothing saved, nothing handed over;
            // a sibling consumer given the partition while the process
            // goes down must not wait for it.
            for tp in partitions {
                if let Some(i) = self.owned.iter().position(|p| *p == tp.partition) {
                    self.owned.swap_remove(i);
                    if self.durability.is_some() {
                        self.pool.handoff.park(tp.partition, None);
                    }
                }
            }
            return;
        }
        // `revoking` committed everything unless this fails.
        let settled = self.in_flight == 0 && self.round.is_none() && self.commits.is_settled();
        self.commits.forget(partitions);
        // Completions of these partitions no longer move any offset here:
        // the next owner starts from the last commit.
        self.trackers.retain(|(t, p), _| {
            !partitions
                .iter()
                .any(|tp| tp.partition == *p && *tp.topic == **t)
        });
        let ends = if settled { self.changelog_ends() } else { None };
        for tp in partitions {
            self.watermarks.remove(&tp.partition);
            self.marks.remove(&tp.partition);
            if let Some(g) = &mut self.growth {
                g.revoked(tp.partition);
            }
            if let Some(i) = self.owned.iter().position(|p| *p == tp.partition) {
                self.owned.swap_remove(i);
                if let Some(d) = &self.durability {
                    let end = ends.as_ref().and_then(|e| e.get(&tp.partition)).copied();
                    // The partition may be leaving this process: save it, so
                    // that its next owner here starts from the snapshot.
                    if let Some(end) = end {
                        self.snapshot_partition(d, tp.partition, end);
                    }
                    self.pool.handoff.park(tp.partition, end);
                }
            }
        }
    }
}

impl<P: KeyedProcessor> Deferring for Dispatcher<P> {
    fn completed(&mut self, progress: &mut dyn Progress) {
        if self.shared.killed() {
            return;
        }
        let generation = self.shared.clock.generation();
        let owned = &self.owned;
        for q in self.shared.board.take(|p| owned.contains(&p)) {
            let worker = self.pool.worker_of(&q.key);
            let _ = self.pool.workers[worker].send(Msg::Query(q));
        }
        for w in 0..self.pending.len() {
            self.flush(w);
        }
        self.now = self.shared.clock.now_ms();
        if P::STATEFUL && !self.commits.halted() {
            self.tick(generation);
        } else {
            self.answered = generation;
        }
        while let Ok(done) = self.replies.try_recv() {
            self.finish(done);
        }
        if P::STATEFUL && !self.commits.halted() {
            self.grow(progress);
        }
        self.release(progress, self.stopping);
        if self.stopping {
            self.final_ends = self.snapshot_ends(progress);
        } else if self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.snapshot(progress);
        }
        if self.is_settled() {
            // Timers due are fired only once a round of ticks sent since
            // is answered.
            let since = generation.min(self.answered);
            self.shared.settled_at(&self.settling, since);
            // Many keys expired (or timers fired), and what they changed
            // is delivered: what they held goes back to the system.
            if self.ticked_work >= memory::BURST && self.commits.producer().in_flight() == 0 {
                self.ticked_work = 0;
                memory::free_unused();
            }
        }
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        if self.shared.killed() {
            return;
        }
        // Finish what is in flight so the next owner starts after it.
        // Runs inside the backend's rebalance callback: nothing here may
        // panic; a failed commit shows in `failure` after the poll.
        self.wait_in_flight();
        self.release(progress, true);
    }

    fn failure(&mut self) -> Option<Error> {
        self.commits
            .failure()
            .cloned()
            .or_else(|| self.growth_failure.clone())
    }

    fn drain(&mut self) {
        if self.shared.killed() {
            return;
        }
        self.stopping = true;
        self.wait_in_flight();
        // The release that follows waits for everything to be committed.
        self.commits.release_next();
    }
}

impl<P: KeyedProcessor> Drop for Dispatcher<P> {
    fn drop(&mut self) {
        self.shared.forget_handler(&self.settling);
        if let Some(ends) = self.final_ends.take() {
            self.save_snapshots(&ends);
        }
        // Rebuilt after a failure, or stopped: the workers' states of these
        // partitions may be ahead of what is committed; their next owner
        // restores them.
        if self.durability.is_some() {
            for p in self.owned.drain(..) {
                self.pool.handoff.park(p, None);
            }
        }
    }
}

impl<P: KeyedProcessor> Dispatcher<P> {
    /// Offers the offsets finished since the last offer for commit: the
    /// same offsets again would make an idle consumer commit for nothing.
    fn offer_finished(&mut self) {
        let finished = self.finished();
        if finished != self.offered {
            for (t, p, o) in &finished {
                self.commits.processed(t, *p, *o);
            }
            self.offered = finished;
        }
    }

    /// Whether state is written in rounds (at-least-once with state).
    fn in_rounds(&self) -> bool {
        matches!(self.commits, Commits::AtLeastOnce(_)) && self.durability.is_some()
    }

    /// Whether nothing is left to commit: no record in flight, every
    /// finished record's offset and state made permanent (ticks: see
    /// [`Dispatcher::tick`]).
    fn is_settled(&self) -> bool {
        let idle = self.in_flight == 0;
        match self.in_rounds() {
            true => idle && self.round.is_none() && !self.touched && self.finished() == self.stored,
            false => idle && self.commits.is_settled(),
        }
    }

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
