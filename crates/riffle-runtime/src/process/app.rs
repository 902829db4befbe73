use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::actors::{Dispatcher, Pool};
use super::commit::{Acknowledged, Commits, Transaction};
use super::growth::LayoutCell;
use super::keyed::KeyedHandler;
use super::outlet::Outlet;
use super::query::{self, StateQueries};
use super::refusals::Refusals;
use super::scale::{Autoscaler, Decider, Scaling};
use super::shared::{collect_stats, AppMetrics, AppStats, Shared};
use super::time::{Clock, EventTime};
use super::KeyedProcessor;
use super::Upgrader;
use crate::actor::Exit;
use crate::error::{Error, Result};
use crate::log::{
    ConsumerConfig, Log, OffsetReset, Progress, RecordRef, TopicPartition, TopicSpec,
};
use crate::metrics;
use crate::stream::ConsumerGroup;
use riffle_state::Durability;
use riffle_state::{Handoff, Standby};

/// How long topic administration may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How an [`App`] runs its processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// State inside the consumer that owns the partition.
    Keyed,
    /// Per-key actors on a pool of this many workers.
    Actors { workers: usize },
}

/// What an app promises about its outputs and state when a process, a
/// consumer or the network fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every input record is processed at least once: offsets are committed
    /// only after the records below them are processed and their outputs
    /// and state changes acknowledged. A failure replays the records since
    /// the last commit, so outputs may repeat.
    #[default]
    AtLeastOnce,
    /// Every input record affects outputs and state exactly once: outputs,
    /// state changes and input offsets are committed together in a
    /// transaction every commit interval (Kafka transactions; readers of
    /// the outputs must read committed records only). A failure aborts the
    /// open transaction and the records since the last commit are processed
    /// again from the committed state.
    ExactlyOnce,
}

impl Guarantee {
    /// The commit interval used unless an app sets its own. Under
    /// exactly-once, outputs stay invisible to readers until their
    /// transaction commits, so the interval bounds their latency and is
    /// shorter; commits are spaced further apart when they get expensive
    /// (see [`App::commit_interval`]).
    pub fn default_commit_interval(self) -> Duration {
        match self {
            Guarantee::AtLeastOnce => Duration::from_millis(100),
            Guarantee::ExactlyOnce => Duration::from_millis(50),
        }
    }
}

impl std::str::FromStr for Guarantee {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "at-least-once" | "alo" => Ok(Guarantee::AtLeastOnce),
            "exactly-once" | "eos" => Ok(Guarantee::ExactlyOnce),
            other => Err(Error::InvalidInput(format!(
                "guarantee must be 'at-least-once' or 'exactly-once', not '{other}'"
            ))),
        }
    }
}

/// Reports, at every scrape and while the consumers run, the group's lag on
/// each partition they own in this process: the measure an autoscaler of
/// processes (KEDA's Kafka scaler) and `riffle lag` use, per process.
fn collect_lag(log: &Arc<dyn Log>, group: &str, consumers: &Arc<ConsumerGroup>) {
    let (log, group) = (log.clone(), group.to_owned());
    metrics::global().collect(consumers, move |consumers, s| {
        let owned: Vec<TopicPartition> = consumers
            .assignments()
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect();
        let mut topics: Vec<&str> = owned.iter().map(|tp| tp.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let Ok(lags) = super::group_lag(&*log, &group, &topics, ADMIN_TIMEOUT) else {
            return;
        };
        for l in lags.iter().filter(|l| owned.contains(&l.partition)) {
            let labels = vec![
                ("group", group.clone()),
                ("topic", l.partition.topic.clone()),
                ("partition", l.partition.partition.to_string()),
            ];
            s.gauge(
                "riffle_consumer_lag",
                "Records between the group's committed offset and the end of a partition owned here.",
                &labels,
                l.lag as f64,
            );
        }
    });
}

/// A processor, the topics it reads, and how to run it.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use riffle_log::{embedded::EmbeddedLog, Log};
/// use riffle_runtime::process::{stateless, App, Style};
/// let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
/// let app = App::new("shouter", &["words"], stateless::map("shout", |v| Ok(v.to_ascii_uppercase())))
///     .style(Style::Keyed)
///     .consumers(2)
///     .dead_letter("words-dlq")
///     .start(log)?;
/// app.stop()?;
/// # Ok::<(), riffle_runtime::Error>(())
/// ```
pub struct App<P: KeyedProcessor> {
    group: String,
    inputs: Vec<String>,
    processor: P,
    style: Style,
    consumers: usize,
    dead_letter: Option<String>,
    offset_reset: OffsetReset,
    session_timeout: Duration,
    repartition: Option<String>,
    guarantee: Guarantee,
    commit_interval: Option<Duration>,
    state_dir: Option<std::path::PathBuf>,
    instance: Option<String>,
    retries: u32,
    advertise: Option<String>,
    scaling: Option<Scaling>,
    event_time: EventTime,
    ttl: Option<Duration>,
    clock: Clock,
    standby: bool,
}

impl<P: KeyedProcessor> App<P> {
    /// An app reading `inputs` as consumer group `group`. Defaults: key-based
    /// style, one consumer, no dead-letter topic, from the earliest record.
    pub fn new(group: &str, inputs: &[&str], processor: P) -> Self {
        Self {
            group: group.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            processor,
            style: Style::Keyed,
            consumers: 1,
            dead_letter: None,
            offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            repartition: None,
            guarantee: Guarantee::AtLeastOnce,
            commit_interval: None,
            state_dir: None,
            instance: None,
            retries: 2,
            advertise: None,
            scaling: None,
            event_time: EventTime::default(),
            ttl: None,
            clock: Clock::system(),
            standby: false,
        }
    }

    /// The processing-time clock (default: the wall clock). A manual one
    /// ([`Clock::manual`]) makes processing time stand still until it is
    /// moved: for tests ([`crate::testing`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The consumer group the app reads as.
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// The topics the app reads.
    pub fn input_topics(&self) -> &[String] {
        &self.inputs
    }

    /// How event time is read: the watermarks' out-of-orderness, the idle
    /// timeout after which a quiet partition's watermark follows the wall
    /// clock, and how late a record may be (see [`EventTime`]).
    pub fn event_time(mut self, event_time: EventTime) -> Self {
        self.event_time = event_time;
        self
    }

    /// Deletes a key's state (with a tombstone in the changelog) once no
    /// record or timer touched it for `ttl`, so that state stays bounded
    /// when keys come and go (devices retired, sessions ended). Keys with
    /// timers pending are kept. A restore counts as a touch. Checked a few
    /// times per `ttl`, so a key goes between `ttl` and 1.25 × `ttl` after
    /// its last touch.
    pub fn state_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How many more times a record is given to the processor after it
    /// failed (returned an error or panicked) before it goes to the
    /// dead-letter topic; default 2. Attempts follow each other at once, so
    /// a record that always fails costs a few attempts and never stalls its
    /// partition.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The delivery guarantee (default: at-least-once).
    pub fn guarantee(mut self, guarantee: Guarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// How often offsets (and, under exactly-once, transactions) are
    /// committed; default [`Guarantee::default_commit_interval`] (100 ms
    /// at-least-once, 50 ms exactly-once). Longer intervals cost less per
    /// record and replay more after a failure. Under exactly-once the
    /// interval runs from the start of one commit to the start of the next,
    /// and while records are waiting a transaction also stays open at least
    /// nine times as long as commits take, so that at full load a consumer
    /// spends at most a tenth of its time waiting for commits.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = Some(interval);
        self
    }

    fn interval(&self) -> Duration {
        self.commit_interval
            .unwrap_or_else(|| self.guarantee.default_commit_interval())
    }

    /// Where snapshots of partition state are kept, so that a restarted
    /// process restores from its snapshot plus the changelog's tail instead
    /// of the whole changelog. Without it, state is restored from the
    /// changelog alone.
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Keeps a warm copy of the state of every partition this process does
    /// not own (key-based style), followed from the changelog in the
    /// background ([`riffle_state::standby`]): when another process is
    /// killed or stopped and its partitions come here, their state is
    /// restored from the copy plus the changelog's last records, not from
    /// the whole changelog. It costs the memory of every partition's state.
    pub fn standby(mut self, on: bool) -> Self {
        self.standby = on;
        self
    }

    /// A name for this process, unique in the group and stable across its
    /// restarts (a host name, a pod name, a number).
    ///
    /// On Kafka its consumers become static members of the group (named
    /// `<id>-<consumer number>`; exactly-once groups rebalance eagerly,
    /// see `consumer_config`): a process killed and restarted within
    /// the session timeout takes its partitions back without a rebalance,
    /// so the other processes carry on undisturbed. A stop still leaves
    /// the group at once, handing the partitions over without waiting for
    /// the session timeout. Two running processes with the same name fence
    /// each other's consumers.
    ///
    /// Under exactly-once it also names the process's transactional
    /// producers, so that a restarted process aborts its predecessor's open
    /// transactions at once; without it a random name is used and an open
    /// transaction of a killed process holds back readers until the broker
    /// times it out.
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// The `host:port` of this process's operations endpoint
    /// (the `serve` layer, crate `riffle-ops`), named in its consumers' client ids so that the
    /// other processes of the group can find it in the group's assignment:
    /// a state query arriving anywhere is relayed to the process that owns
    /// the key ([`Running::states`]).
    pub fn advertise(mut self, endpoint: &str) -> Self {
        self.advertise = Some(endpoint.into());
        self
    }

    /// Routes records through `topic`, keyed by the key the processor
    /// decodes, before processing them. Needed when the input's record keys
    /// are not the processing keys (key-less records carrying their key in
    /// the body, say): the key-based style keeps state per partition, so it
    /// must see each key in one partition. Traffic between processes goes
    /// through Kafka, like everything else. The topic is created if missing.
    pub fn repartition(mut self, topic: &str) -> Self {
        self.repartition = Some(topic.into());
        self
    }

    pub fn style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Consumer actors in this process (other processes may join the group).
    /// With [`App::autoscale`], the count to start with, kept within its
    /// bounds.
    pub fn consumers(mut self, n: usize) -> Self {
        self.consumers = n;
        self
    }

    /// Lets the number of consumers in this process follow its lag: a
    /// consumer is added while the lag of the partitions this process owns,
    /// per consumer, stays above `policy.lag_per_consumer` for
    /// `policy.sustain`, and the last one removed (it commits and leaves the
    /// group, handing its partitions and their state to the others) while
    /// it stays below a quarter of that and the records arriving would fit
    /// in one consumer fewer, by the rate a consumer was measured to
    /// process while lag was high (lag alone is near zero whenever the
    /// consumers keep up, however narrowly). At most one change per
    /// `policy.cooldown`, between `policy.min` and `policy.max` consumers;
    /// the maximum is capped at the input partition count and, in the
    /// actors style, at the worker count, beyond which more consumers add
    /// nothing. With [`App::repartition`], the stage reading the
    /// repartition topic is the one scaled.
    ///
    /// Scaling whole processes (on Kubernetes, say) works on the same
    /// measure: see [`group_lag`](super::group_lag).
    pub fn autoscale(mut self, policy: Scaling) -> Self {
        self.scaling = Some(policy);
        self
    }

    /// Where records that fail go; created if missing.
    pub fn dead_letter(mut self, topic: &str) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }

    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Checks the topics and starts consuming.
    pub fn start(mut self, log: Arc<dyn Log>) -> Result<Running> {
        if self.consumers == 0 {
            return Err(Error::InvalidInput(
                "an app needs at least one consumer".into(),
            ));
        }
        if let Style::Actors { workers: 0 } = self.style {
            return Err(Error::InvalidInput(
                "the actors style needs at least one worker".into(),
            ));
        }
        // Keyed state is grouped by partition number, so every input must
        // put a key in the same partition.
        let mut partitions = None;
        for t in &self.inputs {
            let n = log.describe_topic(t, ADMIN_TIMEOUT)?.partitions.len();
            if *partitions.get_or_insert(n) != n {
                return Err(Error::InvalidInput(format!(
                    "input topics must have the same partition count ({} has {n}, not {})",
                    t,
                    partitions.unwrap_or(0)
                )));
            }
        }
        let partitions = partitions.unwrap_or(1) as i32;
        let decider = self.decider(partitions as usize)?;
        if let Some(d) = &decider {
            let p = d.policy();
            self.consumers = self.consumers.clamp(p.min, p.max);
        }
        if let Some(dlq) = &self.dead_letter {
            log.ensure_topic(&TopicSpec::new(dlq, partitions), ADMIN_TIMEOUT)?;
        }
        let durability = if P::STATEFUL {
            Some(Arc::new(self.durability(&log, partitions)?))
        } else {
            None
        };
        let shared = Arc::new(Shared {
            board: Arc::default(),
            dead_letter: self.dead_letter.clone(),
            stats: Arc::default(),
            retries: self.retries,
            metrics: AppMetrics::new(&self.group),
            refusals: Refusals::new(log.clone()),
            event_time: self.event_time,
            ttl: self.ttl,
            timer_topic: self.inputs.first().cloned().unwrap_or_default(),
            clock: self.clock.clone(),
            killed: Default::default(),
            settled: Default::default(),
        });
        collect_stats(&self.group, &shared, log.clone());
        let instance = self
            .instance
            .clone()
            .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
        let mut stages = Vec::new();
        let mut inputs: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        if let Some(topic) = &self.repartition {
            log.ensure_topic(&TopicSpec::new(topic, partitions), ADMIN_TIMEOUT)?;
            let stage = format!("{}-repartition", self.group);
            let cfg = self.consumer_config(&stage, &inputs);
            let commits = self.commits(&log, &stage, &instance);
            let (p, s, to) = (
                self.processor.clone(),
                shared.clone(),
                Arc::<str>::from(topic.as_str()),
            );
            stages.push(Arc::new(ConsumerGroup::spawn_deferring(
                log.clone(),
                &cfg,
                self.consumers,
                move |i| Rekey {
                    processor: p.clone(),
                    shared: s.clone(),
                    to: to.clone(),
                    commits: commits(i),
                },
            )?));
            inputs = vec![topic];
        }
        // State follows the inputs when they gain partitions.
        let layout = match &durability {
            Some(d) => {
                let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
                let cell = LayoutCell::open(log.clone(), &self.group, &inputs, &d.changelog)?;
                cell.watch();
                Some(cell)
            }
            _ => None,
        };
        let states = StateQueries::new(
            shared.board.clone(),
            log.clone(),
            &self.group,
            inputs[0],
            partitions,
            self.advertise.clone(),
            layout.clone(),
        );
        let mut cfg = self.consumer_config(&self.group, &inputs);
        // State is kept per partition number, across the input topics.
        cfg.co_partitioned = P::STATEFUL;
        let commits = self.commits(&log, &self.group, &instance);
        let scaled_inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        let scaling_log = log.clone();
        let mut beside: Vec<Box<dyn FnOnce() + Send + Sync>> = Vec::new();
        if self.standby && matches!(self.style, Style::Actors { .. }) {
            return Err(Error::InvalidInput(
                "standby copies are kept in the key-based style only".into(),
            ));
        }
        let (group, workers) = match self.style {
            Style::Keyed => {
                let handoff: Arc<Handoff<_>> = Arc::default();
                let standby = match (&durability, self.standby) {
                    (Some(d), true) => Some(Arc::new(Standby::start(
                        d.clone(),
                        &[],
                        Upgrader(self.processor.clone()),
                    )?)),
                    _ => None,
                };
                if let Some(s) = &standby {
                    let s = s.clone();
                    beside.push(Box::new(move || s.stop()));
                }
                let (p, s) = (self.processor, shared.clone());
                let group = ConsumerGroup::spawn_deferring(log, &cfg, self.consumers, move |i| {
                    KeyedHandler::new(
                        p.clone(),
                        s.clone(),
                        handoff.clone(),
                        durability.clone(),
                        commits(i),
                    )
                    .with_standby(standby.clone())
                    .with_growth(layout.clone())
                })?;
                (group, Vec::new())
            }
            Style::Actors { workers } => {
                let changelog = durability.as_ref().map(|d| Arc::<str>::from(&*d.changelog));
                let (pool, threads) = Pool::start(workers, &self.processor, &shared, changelog);
                let (p, s) = (self.processor, shared.clone());
                let group = ConsumerGroup::spawn_deferring(log, &cfg, self.consumers, move |i| {
                    Dispatcher::new(
                        p.clone(),
                        pool.clone(),
                        s.clone(),
                        durability.clone(),
                        commits(i),
                    )
                    .with_growth(layout.clone())
                })?;
                (group, threads)
            }
        };
        let group = Arc::new(group);
        collect_lag(&scaling_log, &self.group, &group);
        let autoscaler = match decider {
            Some(d) => Some(
                Autoscaler::start(
                    scaling_log,
                    self.group.clone(),
                    scaled_inputs,
                    group.clone(),
                    shared.clone(),
                    d,
                )
                .map_err(|e| Error::io("cannot start the autoscaler", &e))?,
            ),
            None => None,
        };
        stages.push(group);
        let partitions =
            partitions as usize * (self.inputs.len() + usize::from(self.repartition.is_some()));
        Ok(Running {
            stages,
            states,
            shared,
            workers,
            partitions,
            autoscaler,
            beside,
        })
    }

    /// The scaling decision with its bounds checked and its maximum capped
    /// at what can be used: `partitions` per input topic, and the workers.
    fn decider(&self, partitions: usize) -> Result<Option<Decider>> {
        let Some(mut policy) = self.scaling.clone() else {
            return Ok(None);
        };
        if policy.min == 0 || policy.max < policy.min {
            return Err(Error::InvalidInput(format!(
                "autoscaling needs 1 <= min <= max consumers, not {}..{}",
                policy.min, policy.max
            )));
        }
        if policy.lag_per_consumer == 0 {
            return Err(Error::InvalidInput(
                "autoscaling needs a lag per consumer above 0".into(),
            ));
        }
        policy.max = policy.max.min(partitions);
        if let Style::Actors { workers } = self.style {
            policy.max = policy.max.min(workers);
        }
        policy.min = policy.min.min(policy.max);
        Ok(Some(Decider::new(policy)))
    }

    /// The changelog topic (created if missing) and the snapshot directory.
    fn durability(&self, log: &Arc<dyn Log>, partitions: i32) -> Result<Durability> {
        let changelog = format!("{}-changelog", self.group);
        let mut spec = TopicSpec::new(&changelog, partitions);
        spec.configs
            .push(("cleanup.policy".into(), "compact".into()));
        log.ensure_topic(&spec, ADMIN_TIMEOUT)?;
        Ok(Durability {
            log: log.clone(),
            changelog,
            snapshots: self.state_dir.as_ref().map(|d| d.join(&self.group)),
            read_committed: self.guarantee == Guarantee::ExactlyOnce,
        })
    }

    fn consumer_config(&self, group: &str, inputs: &[&str]) -> ConsumerConfig {
        let mut cfg = ConsumerConfig::new(group, inputs);
        cfg.offset_reset = self.offset_reset;
        cfg.session_timeout = self.session_timeout;
        cfg.client_id = query::client_id(group, self.advertise.as_deref());
        cfg.commit_interval = self.interval();
        cfg.read_committed = self.guarantee == Guarantee::ExactlyOnce;
        // Static members only under a name the user chose: one made up
        // per run would leave, after a crash, a member nobody returns as
        // holding partitions for the session timeout all the same.
        cfg.instance = self.instance.clone();
        // Under exactly-once a transaction's offsets carry the group's
        // generation, which an incremental rebalance moves on under an
        // open transaction, failing its commit: such groups rebalance
        // eagerly, committing before they give partitions up.
        cfg.eager = self.guarantee == Guarantee::ExactlyOnce;
        cfg
    }

    /// Builds the commit protocol of consumer `i` of a stage. Under
    /// exactly-once each consumer has a transactional producer named after
    /// the stage, the instance and its number, so that its successor (after
    /// a failure here, or a restart of the process) fences it.
    fn commits(
        &self,
        log: &Arc<dyn Log>,
        stage: &str,
        instance: &str,
    ) -> impl Fn(usize) -> Commits + Send + Clone + 'static {
        let (log, guarantee, interval) = (log.clone(), self.guarantee, self.interval());
        let prefix = format!("{stage}-{instance}");
        move |i| match guarantee {
            // The consumer's supervision retries with a backoff.
            Guarantee::AtLeastOnce => Outlet::plain(&*log)
                .map(|o| Commits::AtLeastOnce(Acknowledged::new(o, interval)))
                .unwrap_or_else(|e| panic!("cannot start a producer: {e}")),
            Guarantee::ExactlyOnce => {
                let id = format!("{prefix}-{i}");
                Outlet::transactional(&*log, &id)
                    .and_then(|o| Transaction::begin(o, interval))
                    .map(Commits::ExactlyOnce)
                    // The consumer's supervision retries with a backoff.
                    .unwrap_or_else(|e| panic!("cannot start transactional producer {id}: {e}"))
            }
        }
    }
}

/// The repartition stage: forwards each record keyed by its processing key.
struct Rekey<P> {
    processor: P,
    shared: Arc<Shared>,
    to: Arc<str>,
    commits: Commits,
}

impl<P: KeyedProcessor> crate::stream::Handler for Rekey<P> {
    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.commits.forget(partitions);
    }

    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        if self.commits.halted() {
            return Ok(());
        }
        self.commits
            .processed(record.topic, record.partition, record.offset + 1);
        let producer = self.commits.producer();
        match self.processor.decode(&record) {
            Ok((key, _)) => producer.send(&self.to, Some(key.as_bytes()), record.value),
            Err(e) => self.shared.dead_letter(producer, &record, &e),
        }
    }
}

impl<P: KeyedProcessor> crate::stream::Deferring for Rekey<P> {
    fn completed(&mut self, progress: &mut dyn Progress) {
        self.commits
            .release(&self.shared, progress, false, &mut |_| Ok(0));
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        self.commits
            .release(&self.shared, progress, true, &mut |_| Ok(0));
    }

    fn drain(&mut self) {
        self.commits.release_next();
    }

    fn failure(&mut self) -> Option<Error> {
        self.commits.failure().cloned()
    }
}

/// A started app.
pub struct Running {
    /// The consumer groups, upstream first; the last is shared with the
    /// autoscaler.
    stages: Vec<Arc<ConsumerGroup>>,
    autoscaler: Option<Autoscaler>,
    /// Input partitions of all stages together.
    partitions: usize,
    states: StateQueries,
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<Exit>>,
    /// Stops what runs beside the consumers (standby copies).
    beside: Vec<Box<dyn FnOnce() + Send + Sync>>,
}

impl Running {
    /// The app's counters; clone the `Arc` to read them from elsewhere.
    pub fn stats(&self) -> &Arc<AppStats> {
        &self.shared.stats
    }

    /// Answers queries for the state of a key, here or, through the
    /// group's assignment, from the process that owns it.
    pub fn states(&self) -> StateQueries {
        self.states.clone()
    }

    /// Each consumer's name and partitions, upstream stages first.
    pub fn assignments(&self) -> Vec<(String, Vec<TopicPartition>)> {
        self.stages.iter().flat_map(|g| g.assignments()).collect()
    }

    /// Consumers processing records in this process now (of the stage
    /// reading the repartition topic, if there is one): the count
    /// [`App::autoscale`] changes.
    pub fn consumers(&self) -> usize {
        self.stages.last().map_or(0, |g| g.len())
    }

    /// Each consumer's name, partitions and records handled so far: what a
    /// dashboard needs to show how the work is spread and how fast it goes.
    pub fn members(&self) -> Vec<(String, Vec<TopicPartition>, u64)> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for m in stage.members().iter() {
                let s = m.stats();
                let records = s.records.load(Ordering::Relaxed);
                out.push((m.name().to_owned(), s.assignment(), records));
            }
        }
        out
    }

    /// Waits until this process's consumers own every input partition,
    /// i.e. the group has settled and no other process shares the work.
    /// Useful before starting a latency-sensitive load.
    pub fn wait_assigned(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let owned: usize = self.assignments().iter().map(|(_, p)| p.len()).sum();
            if owned >= self.partitions {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "own {owned} of {} input partitions after {timeout:?}",
                    self.partitions
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops as a killed process would stop: nothing more is committed,
    /// flushed, saved or handed over (an open transaction is left for the
    /// next owner to abort), and the consumers leave the group. For tests
    /// and drills of failures ([`crate::testing`]); the next app of the
    /// group restores from what was committed.
    pub fn kill(self) -> Result<()> {
        self.shared.killed.store(true, Ordering::Relaxed);
        self.stop()
    }

    /// Whether every consumer of the app, after a poll that began at or
    /// after the clock's generation `generation` ([`Clock::generation`]),
    /// had nothing left to commit.
    pub(crate) fn settled_since(&self, generation: u64) -> bool {
        self.shared.settled_since(generation, self.consumers())
    }

    /// Stops consuming: finishes the records in flight, commits what they
    /// sent, and leaves the group.
    pub fn stop(self) -> Result<()> {
        let Running {
            stages,
            workers,
            autoscaler,
            beside,
            ..
        } = self;
        // First, so that nothing is added while the groups stop, and so
        // that the groups are no longer shared.
        if let Some(a) = autoscaler {
            a.stop();
        }
        let mut stopped = Ok(());
        for stage in stages {
            let r = match Arc::try_unwrap(stage) {
                Ok(group) => group.stop(),
                // Only the autoscaler shared it, and it has ended.
                Err(shared) => {
                    shared.stopper().stop();
                    Ok(())
                }
            };
            if stopped.is_ok() {
                stopped = r;
            }
        }
        // The consumers held the last handles on the workers' mailboxes.
        for w in workers {
            let _ = w.join();
        }
        for stop in beside {
            stop();
        }
        stopped
    }
}
