use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::memory::Release;
use crate::actor::{catch, Restarts, Supervision};
use crate::error::{Error, Result};
use crate::log::{
    ConsumerConfig, GroupEvent, GroupToken, Log, LogConsumer, PollVisitor, Progress, RecordRef,
    TopicPartition,
};
use crate::metrics::{self, Counter, Histogram, LocalHistogram};

/// How long one poll waits for records: also the longest a `stop` waits.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// The most records handed to the handler per poll.
const POLL_BATCH: usize = 1024;
/// A consumer that ran this long before failing was healthy: its restart
/// backoff starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// The longest a stopping consumer waits for the others stopped with it
/// before it leaves the group (see [`Stopper`]).
const LEAVE_TOGETHER: Duration = Duration::from_secs(1);

/// What a consumer actor does with what it receives.
///
/// A handler runs on its consumer's thread and sees records one at a time,
/// in offset order per partition. A record counts as done when `handle`
/// returns; returning an error reports the record (topic, partition, offset
/// and the error, at warn level), counts it, and moves on: one bad record
/// does not stop the partition. Closures taking a record are handlers.
pub trait Handler: Send + 'static {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()>;

    /// The consumer now owns these partitions too. Rebalances are
    /// incremental on Kafka (see [`ConsumerConfig::co_partitioned`]):
    /// partitions the consumer keeps across a rebalance are neither revoked
    /// nor assigned again, and their processing goes on.
    fn assigned(&mut self, _partitions: &[TopicPartition]) {}

    /// The consumer no longer owns these partitions; their offsets are
    /// committed.
    fn revoked(&mut self, _partitions: &[TopicPartition]) {}

    /// A poll's records have all been handed to `handle` (whether the poll
    /// then succeeded or failed): the end of a batch, before the consumer
    /// commits, waits for more records or stops. For handlers that hold
    /// something across the records of one poll.
    fn polled(&mut self) {}
}

/// A handler that finishes records after `handle` returns: it hands them
/// on to other actors, or holds their offsets until their outputs are
/// acknowledged or their transaction commits. It says itself, between
/// polls, how far each partition is done. The runtime's apps are built on
/// it ([`Consumer::spawn_deferring`]); a handler that is done when `handle`
/// returns needs none of this.
pub trait Deferring: Handler {
    /// Called after every poll (and before stopping): reports, through
    /// `progress`, each partition's next offset that is now safe to commit,
    /// i.e. every record below it is finished.
    fn completed(&mut self, progress: &mut dyn Progress);

    /// These partitions are about to be revoked. Finish their work and
    /// report their final offsets through `progress`, so the next owner
    /// repeats nothing.
    fn revoking(&mut self, partitions: &[TopicPartition], progress: &mut dyn Progress);

    /// Waits until work handed on is finished; called before the consumer
    /// stops so that its last offsets can be committed.
    fn drain(&mut self) {}

    /// A failure that spoils the handler's work since its last commit, such
    /// as a transaction fenced by a newer owner. Checked after every poll:
    /// the consumer then leaves the group without committing and starts
    /// over with a new handler, as after a panic.
    fn failure(&mut self) -> Option<Error> {
        None
    }
}

/// How the consumer's loop drives a handler: a plain one has each record
/// marked done when `handle` returns; a deferring one reports progress
/// itself.
trait Drive: Handler {
    const DEFERS: bool;
    fn completed(&mut self, _progress: &mut dyn Progress) {}
    fn revoking(&mut self, _partitions: &[TopicPartition], _progress: &mut dyn Progress) {}
    fn drain(&mut self) {}
    fn failure(&mut self) -> Option<Error> {
        None
    }
}

struct Plain<H>(H);
struct Deferred<H>(H);

impl<H: Handler> Handler for Plain<H> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        self.0.handle(record)
    }
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.assigned(partitions)
    }
    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.revoked(partitions)
    }
    fn polled(&mut self) {
        self.0.polled()
    }
}

impl<H: Handler> Drive for Plain<H> {
    const DEFERS: bool = false;
}

impl<H: Deferring> Handler for Deferred<H> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        self.0.handle(record)
    }
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.assigned(partitions)
    }
    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.0.revoked(partitions)
    }
    fn polled(&mut self) {
        self.0.polled()
    }
}

impl<H: Deferring> Drive for Deferred<H> {
    const DEFERS: bool = true;
    fn completed(&mut self, progress: &mut dyn Progress) {
        self.0.completed(progress)
    }
    fn revoking(&mut self, partitions: &[TopicPartition], progress: &mut dyn Progress) {
        self.0.revoking(partitions, progress)
    }
    fn drain(&mut self) {
        self.0.drain()
    }
    fn failure(&mut self) -> Option<Error> {
        self.0.failure()
    }
}

impl<F> Handler for F
where
    F: FnMut(RecordRef<'_>) -> Result<()> + Send + 'static,
{
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        self(record)
    }
}

/// Live counters of one consumer actor.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub records: AtomicU64,
    pub failed: AtomicU64,
    pub restarts: AtomicU64,
    pub rebalances: AtomicU64,
    assignment: Mutex<Vec<TopicPartition>>,
}

impl ConsumerStats {
    /// The partitions the consumer owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.lock().unwrap().clone()
    }
}

/// Asks a running consumer to stop; cheap to clone and usable from any thread
/// (a Ctrl-C handler, another actor).
///
/// A stopper may have a parent ([`Stopper::child`]): it is stopped by its
/// own `stop` or by its parent's, so one member of a group can be stopped
/// alone while stopping the group still stops every member.
///
/// Consumers stopped together leave their group together: each, once it
/// has finished its records, waits (up to a second) for the others before
/// it commits and leaves. A process's consumers leaving one by one would
/// cost the group one rebalance each, and the ones still committing would
/// be refused by the group that had moved on; leaving together, the
/// process's partitions move in one rebalance.
#[derive(Clone, Debug, Default)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    parent: Option<Arc<Stopper>>,
    /// Shared by a stopper and its children.
    leaving: Arc<Leaving>,
}

/// The consumers of a stopper and its children, and how many of them are
/// ready to leave.
#[derive(Debug, Default)]
struct Leaving {
    running: AtomicUsize,
    ready: AtomicUsize,
}

/// A consumer counted among its stopper's; uncounted on drop.
pub(crate) struct Member {
    leaving: Arc<Leaving>,
    ready: bool,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leaving.running.fetch_sub(1, Ordering::AcqRel);
        if self.ready {
            self.leaving.ready.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Stopper {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stopper stopped by its own `stop` or by this one's.
    pub fn child(&self) -> Self {
        Self {
            flag: Arc::default(),
            parent: Some(Arc::new(self.clone())),
            leaving: self.leaving.clone(),
        }
    }

    /// Counts a consumer running under this stopper.
    pub(crate) fn member(&self) -> Member {
        self.leaving.running.fetch_add(1, Ordering::AcqRel);
        Member {
            leaving: self.leaving.clone(),
            ready: false,
        }
    }

    /// Marks `member` ready to leave, and unless it was stopped alone,
    /// waits for the others stopped with it to be ready too.
    pub(crate) fn wait_to_leave(&self, member: &mut Member) {
        if !member.ready {
            member.ready = true;
            self.leaving.ready.fetch_add(1, Ordering::AcqRel);
        }
        if self.parent.as_ref().is_some_and(|p| !p.is_stopped()) {
            return;
        }
        let l = &self.leaving;
        let until = Instant::now() + LEAVE_TOGETHER;
        while l.ready.load(Ordering::Acquire) < l.running.load(Ordering::Acquire)
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire) || self.parent.as_ref().is_some_and(|p| p.is_stopped())
    }
}

impl AsRef<AtomicBool> for Stopper {
    /// The stopper's own flag, for loops that take one (such as
    /// `riffle_connect::Pipeline::run`). A child's flag
    /// does not show its parent's stop: pass such loops a parentless one.
    fn as_ref(&self) -> &AtomicBool {
        &self.flag
    }
}

/// A consumer actor: one member of a consumer group, polling on a thread of
/// its own (librdkafka's poll blocks) and calling its handler per record.
///
/// Offsets are marked after the handler returns and committed in the
/// background, on revocation and on stop, so a crash replays only records
/// handled since the last commit (at-least-once). A panicking handler is
/// caught: the actor leaves the group, waits a backoff, rebuilds its handler
/// from the factory and rejoins, resuming after the last committed record.
pub struct Consumer {
    name: String,
    stopper: Stopper,
    stats: Arc<ConsumerStats>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Consumer {
    /// Joins the group described by `config` and starts handling records
    /// with handlers built by `factory`. Fails at once if the backend refuses
    /// the configuration.
    pub fn spawn<H, F>(log: Arc<dyn Log>, config: ConsumerConfig, factory: F) -> Result<Self>
    where
        H: Handler,
        F: FnMut() -> H + Send + 'static,
    {
        Self::spawn_with(log, config, Stopper::new(), Supervision::default(), factory)
    }

    /// [`Consumer::spawn`] with a shared stopper and a supervision policy.
    pub fn spawn_with<H, F>(
        log: Arc<dyn Log>,
        config: ConsumerConfig,
        stopper: Stopper,
        supervision: Supervision,
        mut factory: F,
    ) -> Result<Self>
    where
        H: Handler,
        F: FnMut() -> H + Send + 'static,
    {
        Self::start(log, config, stopper, supervision, move || Plain(factory()))
    }

    /// [`Consumer::spawn_with`] for a handler that finishes records later
    /// and reports its progress itself.
    pub fn spawn_deferring<H, F>(
        log: Arc<dyn Log>,
        config: ConsumerConfig,
        stopper: Stopper,
        supervision: Supervision,
        mut factory: F,
    ) -> Result<Self>
    where
        H: Deferring,
        F: FnMut() -> H + Send + 'static,
    {
        Self::start(log, config, stopper, supervision, move || {
            Deferred(factory())
        })
    }

    fn start<D, F>(
        log: Arc<dyn Log>,
        config: ConsumerConfig,
        stopper: Stopper,
        supervision: Supervision,
        mut factory: F,
    ) -> Result<Self>
    where
        D: Drive,
        F: FnMut() -> D + Send + 'static,
    {
        let first = log.consumer(&config)?;
        let stats = Arc::new(ConsumerStats::default());
        collect_stats(&config, &stats);
        let name = config.client_id.clone();
        let (st, stop) = (stats.clone(), stopper.clone());
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let mut member = stop.member();
                let mut metrics = ConsumerMetrics::new(&config.group_id);
                let mut backend = Some(first);
                let mut restarts = Restarts::new(supervision);
                loop {
                    // Setting up fails like running does (a broker that
                    // does not answer when a transactional producer
                    // starts, say), and is retried the same way.
                    let began = Instant::now();
                    let setup = catch(|| -> Result<_> {
                        let consumer = match backend.take() {
                            Some(c) => c,
                            None => log.consumer(&config)?,
                        };
                        Ok((consumer, factory()))
                    });
                    let failure = match setup {
                        Ok(Ok((mut consumer, mut handler))) => {
                            let run = catch(|| {
                                run(&mut *consumer, &mut handler, &stop, &st, &mut metrics)
                            });
                            let failure = match run {
                                Ok(Err(e @ Error::Fenced(_))) => e,
                                Ok(result) => {
                                    stop.wait_to_leave(&mut member);
                                    let closed = consumer.close();
                                    st.assignment.lock().unwrap().clear();
                                    return result.and(closed);
                                }
                                Err(panic) => Error::Panicked {
                                    what: "handler".into(),
                                    message: Some(panic),
                                },
                            };
                            // Leave without committing: the work since the
                            // last commit is done again by whoever owns the
                            // partitions next. The handler goes first, so
                            // that what it hands over is in place before the
                            // partitions move.
                            drop(handler);
                            drop(consumer);
                            failure
                        }
                        Ok(Err(e)) => e,
                        Err(panic) => Error::Panicked {
                            what: "consumer setup".into(),
                            message: Some(panic),
                        },
                    };
                    metrics.restarts.inc();
                    let count = st.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    st.assignment.lock().unwrap().clear();
                    // A consumer that ran well for a while starts a new run
                    // of failures: its first restart is quick again.
                    if began.elapsed() >= HEALTHY_RUN {
                        restarts.succeeded();
                    }
                    let why = failure.to_string();
                    let Some(delay) = restarts.failed(&config.client_id, count, &why) else {
                        return Err(failure);
                    };
                    sleep_unless_stopped(delay, &stop);
                    if stop.is_stopped() {
                        return Ok(());
                    }
                }
            })
            .map_err(|e| Error::io("cannot start consumer thread", &e))?;
        Ok(Self {
            name,
            stopper,
            stats,
            thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &Arc<ConsumerStats> {
        &self.stats
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Asks the actor to stop; it finishes the record in hand, commits and
    /// leaves the group within about a tenth of a second (one poll wait).
    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// Waits for the actor to end, returning the error that ended it, if any.
    pub fn join(mut self) -> Result<()> {
        self.join_inner()
    }

    fn join_inner(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(Error::Panicked {
                    what: "consumer thread".into(),
                    message: None,
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop();
        let _ = self.join_inner();
    }
}

fn sleep_unless_stopped(total: Duration, stop: &Stopper) {
    let step = Duration::from_millis(20);
    let mut left = total;
    while !left.is_zero() && !stop.is_stopped() {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}

/// What a consumer counts in [`metrics::global`], besides its
/// [`ConsumerStats`]. Counted locally per record and added to the shared
/// series once per poll ([`ConsumerMetrics::flush`]), so that the
/// consumers of a group do not contend for the same atomics per record.
struct ConsumerMetrics {
    group: String,
    /// Records in, per topic (a consumer reads few topics), and how many
    /// since the last flush.
    records_in: Vec<(String, Counter, u64)>,
    latency: Histogram,
    latency_local: LocalHistogram,
    rebalances: Counter,
    restarts: Counter,
    /// The wall clock, read once per poll at its first record.
    now_ms: Option<i64>,
}

impl ConsumerMetrics {
    fn new(group: &str) -> Self {
        let labels = || vec![("group", group.to_owned())];
        let r = metrics::global();
        Self {
            group: group.to_owned(),
            records_in: Vec::new(),
            latency_local: LocalHistogram::default(),
            latency: r.histogram(
                "riffle_processing_latency_seconds",
                "Time from a record's timestamp to its handling by a consumer.",
                labels(),
            ),
            rebalances: r.counter(
                "riffle_rebalances_total",
                "Assignments received by the group's consumers in this process.",
                labels(),
            ),
            restarts: r.counter(
                "riffle_consumer_restarts_total",
                "Consumers restarted after a failure.",
                labels(),
            ),
            now_ms: None,
        }
    }

    fn record(&mut self, record: &RecordRef<'_>) {
        let i = match self
            .records_in
            .iter()
            .position(|(t, _, _)| t == record.topic)
        {
            Some(i) => i,
            None => {
                let c = metrics::global().counter(
                    "riffle_records_in_total",
                    "Records consumed, per group and topic.",
                    vec![
                        ("group", self.group.clone()),
                        ("topic", record.topic.to_owned()),
                    ],
                );
                self.records_in.push((record.topic.to_owned(), c, 0));
                self.records_in.len() - 1
            }
        };
        self.records_in[i].2 += 1;
        if let Some(ts) = record.timestamp {
            let now = *self.now_ms.get_or_insert_with(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
            self.latency_local.observe_millis(now - ts);
        }
    }

    /// Adds what was counted since the last flush to the shared series.
    fn flush(&mut self) {
        for (_, shared, n) in &mut self.records_in {
            if *n > 0 {
                shared.add(std::mem::take(n));
            }
        }
        self.latency.add(&mut self.latency_local);
        self.now_ms = None;
    }
}

/// Reports a consumer's partitions and records at every scrape, while it
/// exists.
fn collect_stats(config: &ConsumerConfig, stats: &Arc<ConsumerStats>) {
    let labels = vec![
        ("group", config.group_id.clone()),
        ("consumer", config.client_id.clone()),
    ];
    metrics::global().collect(stats, move |st, s| {
        s.gauge(
            "riffle_consumer_partitions",
            "Partitions the consumer owns.",
            &labels,
            st.assignment.lock().unwrap().len() as f64,
        );
        s.counter(
            "riffle_consumer_records_total",
            "Records the consumer handled.",
            &labels,
            st.records.load(Ordering::Relaxed),
        );
    });
}

struct Visit<'a, H> {
    metrics: &'a mut ConsumerMetrics,
    handler: &'a mut H,
    defers: bool,
    stop: &'a Stopper,
    stats: &'a ConsumerStats,
    name: &'a str,
}

impl<H: Drive> PollVisitor for Visit<'_, H> {
    fn record(&mut self, record: RecordRef<'_>) -> bool {
        // Stopping takes effect between two records: the rest of the batch
        // is left unprocessed and uncommitted for the next owner.
        if self.stop.is_stopped() {
            return false;
        }
        self.metrics.record(&record);
        if self.defers {
            // The handler reports progress itself, failures included.
            self.stats.records.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.handler.handle(record) {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %self.name, "{}/{}@{}: {e}", record.topic, record.partition, record.offset);
            }
            return false;
        }
        if let Err(e) = self.handler.handle(record) {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                consumer = %self.name,
                "skipping {}/{}@{}: {e}",
                record.topic,
                record.partition,
                record.offset
            );
        }
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn revoking(&mut self, partitions: &[TopicPartition], progress: &mut dyn Progress) {
        if self.defers {
            self.handler.revoking(partitions, progress);
        }
    }

    fn event(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::Assigned(tps) => {
                self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
                self.metrics.rebalances.inc();
                // An incremental rebalance that adds nothing here is news
                // to no one reading the log.
                if tps.is_empty() && self.stats.rebalances.load(Ordering::Relaxed) > 1 {
                    tracing::debug!(consumer = %self.name, "assigned []");
                } else {
                    tracing::info!(consumer = %self.name, "assigned {}", list(&tps));
                }
                {
                    let mut owned = self.stats.assignment.lock().unwrap();
                    for tp in &tps {
                        if !owned.contains(tp) {
                            owned.push(tp.clone());
                        }
                    }
                    owned.sort();
                }
                self.handler.assigned(&tps);
            }
            GroupEvent::Revoked(tps) => {
                tracing::info!(consumer = %self.name, "revoked {}", list(&tps));
                self.stats
                    .assignment
                    .lock()
                    .unwrap()
                    .retain(|tp| !tps.contains(tp));
                self.handler.revoked(&tps);
            }
        }
    }
}

/// `[t/0, t/1]`, for log lines.
pub(crate) fn list(tps: &[TopicPartition]) -> String {
    let items: Vec<String> = tps.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn run<H: Drive>(
    consumer: &mut dyn LogConsumer,
    handler: &mut H,
    stop: &Stopper,
    stats: &ConsumerStats,
    metrics: &mut ConsumerMetrics,
) -> Result<()> {
    let name = std::thread::current()
        .name()
        .unwrap_or("consumer")
        .to_owned();
    let defers = H::DEFERS;
    let mut visit = Visit {
        metrics,
        handler,
        defers,
        stop,
        stats,
        name: &name,
    };
    let mut release = Release::default();
    while !stop.is_stopped() {
        let polled = consumer.poll(POLL_WAIT, POLL_BATCH, &mut visit);
        visit.handler.polled();
        visit.metrics.flush();
        let polled = polled?;
        if defers {
            store_completed(consumer, visit.handler, polled >= POLL_BATCH);
        }
        if let Some(e) = visit.handler.failure() {
            return Err(match e {
                Error::Fenced(_) => e,
                other => Error::Fenced(other.to_string()),
            });
        }
        release.after_poll(polled);
    }
    if defers {
        visit.handler.drain();
        store_completed(consumer, visit.handler, false);
    }
    Ok(())
}

/// Stores the offsets a deferring handler reports finished.
fn store_completed<H: Drive>(consumer: &mut dyn LogConsumer, handler: &mut H, behind: bool) {
    handler.completed(&mut Store(consumer, behind));
}

/// Progress reported between polls, straight to the consumer, and whether
/// its last poll filled the batch.
struct Store<'a>(&'a mut dyn LogConsumer, bool);

impl Progress for Store<'_> {
    fn store(&mut self, topic: &str, partition: i32, next: i64) {
        if let Err(e) = self.0.store_offset(topic, partition, next) {
            // Revoked meanwhile: the next owner replays from the last commit.
            tracing::debug!("not storing {topic}/{partition}@{next}: {e}");
        }
    }

    fn group(&self) -> Result<GroupToken> {
        self.0.group()
    }

    fn behind(&self) -> bool {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consumers stopped by their group leave together; one stopped alone
    /// does not wait for the others.
    #[test]
    fn consumers_stopped_together_wait_for_each_other_to_leave() {
        let group = Stopper::new();
        let (a, b) = (group.child(), group.child());
        let (mut ma, mut mb) = (a.member(), b.member());

        // b alone: it does not wait for a, which keeps running.
        b.stop();
        let t = Instant::now();
        b.wait_to_leave(&mut mb);
        assert!(t.elapsed() < LEAVE_TOGETHER / 2, "{:?}", t.elapsed());
        drop(mb);

        // The group: a waits until c, started with it, is ready too.
        let c = group.child();
        let mut mc = c.member();
        group.stop();
        let c_ready = Arc::new(AtomicBool::new(false));
        let waiter = {
            let c_ready = c_ready.clone();
            std::thread::spawn(move || {
                a.wait_to_leave(&mut ma);
                c_ready.load(Ordering::Acquire)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        c_ready.store(true, Ordering::Release);
        c.wait_to_leave(&mut mc);
        assert!(waiter.join().unwrap(), "a left before c was ready");

        // One that never gets ready holds the others up a second at most.
        let d = group.child();
        let _stuck = d.member();
        let mut me = group.child().member();
        let t = Instant::now();
        group.wait_to_leave(&mut me);
        assert!(t.elapsed() >= LEAVE_TOGETHER, "{:?}", t.elapsed());
    }
}
