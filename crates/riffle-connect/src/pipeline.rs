//! Moving records from a source to a sink, acknowledging only what is safe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Delivery, Record, Sink, Source, Unconfirmed};
use crate::error::{Error, Result};
use crate::log::{Header, Headers, RecordRef};
use crate::process::dead_letter;
use crate::process::{run_processor, Context, KeyedProcessor};
use riffle_base::backoff::Backoff;
use riffle_base::metrics::{self, Labels, Samples};

/// What a pipeline does to each record between its source and its sink.
pub trait Stage: Send {
    /// Appends the outputs of `record` to `out` (none, to drop it). An
    /// error sends the record to the dead-letter sink with the error as the
    /// reason.
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()>;
}

/// Two stages one after the other: every output of the first goes
/// through the second (a [`Transform`](super::Transform) that takes the
/// key from an MQTT topic, then a processor that needs it).
impl<A: Stage, B: Stage> Stage for (A, B) {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        let mut between = Vec::new();
        self.0.process(record, &mut between)?;
        for r in &between {
            self.1.process(r, out)?;
        }
        Ok(())
    }
}

/// Passes every record through unchanged.
struct Identity;

impl Stage for Identity {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        out.push(record.clone());
        Ok(())
    }
}

/// Any [`KeyedProcessor`] as a pipeline stage. Each key's state lives in
/// memory for the life of the pipeline; for state that survives a restart,
/// run the processor in an [`App`](crate::process::App) on a log and bridge
/// the log to other systems with pipelines (as the MQTT heater demo does).
/// Records sent through the [`Context`] go to the pipeline's sink, with the
/// topic they were sent to as [`Record::topic`].
pub struct Processor<P: KeyedProcessor> {
    processor: P,
    states: HashMap<String, P::State>,
    retries: u32,
    seen: i64,
}

impl<P: KeyedProcessor> Processor<P> {
    pub fn new(processor: P) -> Self {
        Self {
            processor,
            states: HashMap::new(),
            retries: 2,
            seen: 0,
        }
    }

    /// The state of `key`, if it has had a record.
    pub fn state(&self, key: &str) -> Option<&P::State> {
        self.states.get(key)
    }
}

impl<P: KeyedProcessor> Stage for Processor<P> {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        // A source's records have no partitions; their position is how many
        // came before them.
        let offset = self.seen;
        self.seen += 1;
        // Borrowed from the record: allocates only if it has headers.
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(name, value)| Header::new(name, Some(value.as_slice())))
            .collect();
        let r = RecordRef {
            topic: &record.topic,
            partition: 0,
            offset,
            key: record.key.as_deref(),
            value: &record.value,
            timestamp: None,
            headers: Headers::from(&headers[..]),
        };
        let (key, input) = self.processor.decode(&r)?;
        if !self.states.contains_key(&key) {
            self.states.insert(key.clone(), P::State::default());
        }
        let state = self.states.get_mut(&key).expect("inserted above");
        let mut ctx = Context::collecting(out, &record.topic, offset, r.headers);
        let retries = self.retries;
        run_processor(&mut self.processor, &key, &input, state, &mut ctx, retries)
    }
}

/// Counts of a pipeline's work so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records read from the source and acknowledged to it.
    pub records_in: u64,
    /// Records confirmed by the sink.
    pub records_out: u64,
    /// Records that failed the stage or that the sink refused for good,
    /// with the reason, confirmed by the dead-letter sink.
    pub dead_letters: u64,
    /// Times records were sent again: after the sink failed (the rest of
    /// the batch) or refused them (each of those).
    pub retries: u64,
    /// Records that failed or were refused and, without a dead-letter sink
    /// (or refused by it too), were logged and skipped.
    pub skipped: u64,
    /// Times the sink failed to confirm what it was sent (it was
    /// unreachable, or answered with a transient error).
    pub sink_failures: u64,
    /// Records the sink refused (each attempt counts).
    pub sink_refusals: u64,
    /// Times the dead-letter sink failed or refused.
    pub dead_letter_failures: u64,
    /// Records the source holds that the pipeline has not read yet, when
    /// the source can tell (see [`Source::lag`]).
    pub source_lag: Option<u64>,
}

/// What a pipeline does with a record that failed its stage or that its
/// sink refused for good, when there is no dead-letter sink to take it (or
/// the dead-letter sink refuses it too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoDeadLetter {
    /// The pipeline fails with a one-line error naming the record and the
    /// reason; the batch is not acknowledged, so a restart (once the cause
    /// is fixed) gets it again.
    Stop,
    /// The record is logged at warning level with its dead-letter envelope,
    /// counted in [`PipelineStats::skipped`], and the pipeline goes on. The
    /// default: a pipeline without a dead-letter sink has always logged its
    /// failures and gone on.
    #[default]
    Skip,
}

impl std::str::FromStr for NoDeadLetter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop" => Ok(Self::Stop),
            "skip" => Ok(Self::Skip),
            other => Err(Error::InvalidInput(format!(
                "'{other}' is not a policy without a dead-letter sink: stop or skip"
            ))),
        }
    }
}

/// Called with the counts after every batch.
type OnBatch = dyn FnMut(&PipelineStats) + Send;

/// One source, one stage, one sink (and an optional dead-letter sink).
///
/// The pipeline reads a batch from the source, runs the stage over it,
/// sends the outputs to the sink and the failures to the dead-letter sink,
/// waits until both confirm, and only then acknowledges the batch to the
/// source. When a sink fails (its server restarts, say) what it did not
/// confirm is sent again after a jittered backoff (or the `Retry-After` it
/// was given), until it is confirmed or the pipeline is stopped: records
/// may repeat, none is lost. A record the sink refuses for good (see
/// [`Unconfirmed`]) is tried [`max_attempts`](Self::max_attempts) times
/// and then goes to the dead-letter sink alone, with the reason, so one bad
/// record never holds up the others; without a dead-letter sink,
/// [`NoDeadLetter`] says what happens to it.
///
/// ```no_run
/// use riffle_connect::{Pipeline, Transform, Condition};
/// # fn demo(source: Box<dyn riffle_connect::Source>, sink: Box<dyn riffle_connect::Sink>) -> riffle_base::error::Result<()> {
/// let hot = Transform::new().filter(Condition::parse("temperature>30")?);
/// let stop = std::sync::atomic::AtomicBool::new(false);
/// Pipeline::new(source, sink).stage(hot).run(&stop)?;
/// # Ok(()) }
/// ```
pub struct Pipeline {
    source: Box<dyn Source>,
    stage: Box<dyn Stage>,
    sink: Box<dyn Sink>,
    dead_letter: Option<Box<dyn Sink>>,
    batch: usize,
    max_attempts: u32,
    no_dead_letter: NoDeadLetter,
    stats: PipelineStats,
    on_batch: Option<Box<OnBatch>>,
    /// The counts as the metrics registry reads them, when published.
    published: Option<Arc<Mutex<PipelineStats>>>,
}

fn publish(to: &Option<Arc<Mutex<PipelineStats>>>, stats: &PipelineStats) {
    if let Some(p) = to {
        *p.lock().unwrap() = stats.clone();
    }
}

/// How long a poll waits for records before the stop flag is checked again.
const POLL: Duration = Duration::from_millis(100);
/// How long one flush may take before the batch is sent again.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before sending again, doubled (with jitter) after each
/// failure in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts at a failing sink (a `Retry-After`
/// asking for longer is honoured, up to [`MAX_RETRY_AFTER`]).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured, so that a wrong one cannot park a
/// pipeline for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Pipeline {
    /// A pipeline copying every record from `source` to `sink`.
    pub fn new(source: impl Source + 'static, sink: impl Sink + 'static) -> Self {
        Self {
            source: Box::new(source),
            stage: Box::new(Identity),
            sink: Box::new(sink),
            dead_letter: None,
            batch: 500,
            max_attempts: 3,
            no_dead_letter: NoDeadLetter::default(),
            stats: PipelineStats::default(),
            on_batch: None,
            published: None,
        }
    }

    /// What happens to each record on the way (default: nothing).
    pub fn stage(mut self, stage: impl Stage + 'static) -> Self {
        self.stage = Box::new(stage);
        self
    }

    /// Where records the stage fails on or the sink refuses for good go, as
    /// JSON envelopes with the reason and the original bytes (see
    /// [`dead_letter`](crate::process::dead_letter)). Without one, the
    /// [`no_dead_letter`](Self::no_dead_letter) policy applies.
    pub fn dead_letter(mut self, sink: impl Sink + 'static) -> Self {
        self.dead_letter = Some(Box::new(sink));
        self
    }

    /// The most records read, sent and acknowledged together (default 500).
    /// Larger batches amortize the sink's confirmation round trip; smaller
    /// ones hold less unacknowledged.
    pub fn batch(mut self, records: usize) -> Self {
        self.batch = records.max(1);
        self
    }

    /// How many times a record the sink refuses for good is sent before it
    /// goes to the dead-letter sink (default 3, at least 1). A refusal is
    /// usually final (a 400 stays a 400), but some are not quite (an
    /// MQTT 5 quota, a queue briefly missing while it is declared): a few
    /// attempts cost little. Transient failures (no connection, 5xx, 429)
    /// do not count: they are retried until they pass or the pipeline is
    /// stopped.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// What happens to a record that failed or was refused when there is no
    /// dead-letter sink (default [`NoDeadLetter::Skip`]).
    pub fn no_dead_letter(mut self, policy: NoDeadLetter) -> Self {
        self.no_dead_letter = policy;
        self
    }

    /// Calls `f` with the counts after every batch (to show progress).
    pub fn on_batch(mut self, f: impl FnMut(&PipelineStats) + Send + 'static) -> Self {
        self.on_batch = Some(Box::new(f));
        self
    }

    /// Publishes the counts in the process-wide metrics registry
    /// ([`riffle_base::metrics::global`], served as `/metrics` by an
    /// operations endpoint), as `riffle_pipeline_*` series labelled with
    /// `pipeline` and the connector names given: records in, out,
    /// dead-lettered and skipped, retries, errors per connector, and the
    /// source's lag where it has one. Updated after every batch and every
    /// failed attempt.
    pub fn metrics(
        mut self,
        pipeline: &str,
        source: &str,
        sink: &str,
        dead_letter: Option<&str>,
    ) -> Self {
        let shared = Arc::new(Mutex::new(self.stats.clone()));
        let name = pipeline.to_owned();
        let (source, sink, dl) = (
            source.to_owned(),
            sink.to_owned(),
            dead_letter.map(str::to_owned),
        );
        metrics::global().collect(
            &shared,
            move |stats: &Mutex<PipelineStats>, out: &mut Samples| {
                let s = stats.lock().unwrap().clone();
                let of = |extra: Vec<(&'static str, String)>| {
                    let mut l: Labels = vec![("pipeline", name.clone())];
                    l.extend(extra);
                    l
                };
                let counts = [
                    (
                        "riffle_pipeline_records_in_total",
                        "Records read from the source and acknowledged to it.",
                        s.records_in,
                        ("connector", &source),
                    ),
                    (
                        "riffle_pipeline_records_out_total",
                        "Records confirmed by the sink.",
                        s.records_out,
                        ("connector", &sink),
                    ),
                ];
                for (metric, help, value, (k, v)) in counts {
                    out.counter(metric, help, &of(vec![(k, v.clone())]), value);
                }
                out.counter(
                    "riffle_pipeline_dead_letters_total",
                    "Records failed or refused for good, confirmed by the dead-letter sink.",
                    &of(vec![]),
                    s.dead_letters,
                );
                out.counter(
                    "riffle_pipeline_skipped_total",
                    "Records failed or refused for good with nowhere to go, logged and skipped.",
                    &of(vec![]),
                    s.skipped,
                );
                out.counter(
                    "riffle_pipeline_retries_total",
                    "Times records were sent again to a sink.",
                    &of(vec![]),
                    s.retries,
                );
                let errors = "Failed or refused attempts at a connector.";
                out.counter(
                    "riffle_pipeline_errors_total",
                    errors,
                    &of(vec![
                        ("connector", sink.clone()),
                        ("kind", "failure".into()),
                    ]),
                    s.sink_failures,
                );
                out.counter(
                    "riffle_pipeline_errors_total",
                    errors,
                    &of(vec![
                        ("connector", sink.clone()),
                        ("kind", "refusal".into()),
                    ]),
                    s.sink_refusals,
                );
                if let Some(dl) = &dl {
                    out.counter(
                        "riffle_pipeline_errors_total",
                        errors,
                        &of(vec![
                            ("connector", dl.clone()),
                            ("kind", "dead-letter".into()),
                        ]),
                        s.dead_letter_failures,
                    );
                }
                if let Some(lag) = s.source_lag {
                    out.gauge(
                        "riffle_pipeline_source_lag",
                        "Records the source holds that the pipeline has not read yet.",
                        &of(vec![("connector", source.clone())]),
                        lag as f64,
                    );
                }
            },
        );
        self.published = Some(shared);
        self
    }

    /// Hands the counts to the metrics registry, if published.
    fn publish(&self) {
        publish(&self.published, &self.stats);
    }

    /// The weakest promise among the source, the sink and the dead-letter
    /// sink: what the pipeline as a whole gives.
    pub fn delivery(&self) -> Delivery {
        let d = self.source.delivery().min(self.sink.delivery());
        self.dead_letter
            .as_ref()
            .map_or(d, |dl| d.min(dl.delivery()))
    }

    /// A one-line description: `source -> sink (delivery)`.
    pub fn describe(&self) -> String {
        format!(
            "{} -> {} ({})",
            self.source.describe(),
            self.sink.describe(),
            self.delivery()
        )
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Runs until `stop` is set or a finite source is finished (see
    /// [`Source::finished`]), then closes both ends. Returns the
    /// counts; fails when the source fails for good, or when a record
    /// fails with nowhere to go under [`NoDeadLetter::Stop`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<PipelineStats> {
        let result = self.run_batches(stop);
        if let Err(e) = self.source.close() {
            tracing::debug!("closing {}: {e}", self.source.describe());
        }
        for sink in std::iter::once(&mut self.sink).chain(self.dead_letter.as_mut()) {
            if let Err(e) = sink.close() {
                tracing::warn!("closing {}: {e}", sink.describe());
            }
        }
        result.map(|()| self.stats.clone())
    }

    fn run_batches(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut input = Vec::with_capacity(self.batch);
        let mut outputs = Vec::new();
        let mut dead = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            input.clear();
            if self.source.poll(&mut input, self.batch, POLL)? == 0 {
                if self.source.finished() {
                    return Ok(());
                }
                continue;
            }
            outputs.clear();
            dead.clear();
            for record in &input {
                if let Err(e) = self.stage.process(record, &mut outputs) {
                    dead.push(dead_letter_of(record, &e.to_string()));
                }
            }
            let Some(confirmed) = self.deliver(&outputs, &mut dead, stop)? else {
                return Ok(());
            };
            if !self.deliver_dead(&dead, stop)? {
                return Ok(());
            }
            if let Err(e) = self.source.ack() {
                tracing::warn!(
                    "cannot acknowledge to {} (its records come again): {e}",
                    self.source.describe()
                );
            }
            self.stats.records_in += input.len() as u64;
            self.stats.records_out += confirmed as u64;
            self.stats.source_lag = self.source.lag();
            self.publish();
            if let Some(f) = &mut self.on_batch {
                f(&self.stats);
            }
        }
        Ok(())
    }

    /// Sends a batch's outputs until the sink has settled each of them:
    /// confirmed it, or refused it `max_attempts` times (then its dead
    /// letter joins `dead`). After a transient failure only what the sink
    /// did not confirm is sent again, after a jittered backoff (or the
    /// sink's `Retry-After`). Returns how many were confirmed, or `None` if
    /// stopped first.
    fn deliver(
        &mut self,
        outputs: &[Record],
        dead: &mut Vec<Record>,
        stop: &AtomicBool,
    ) -> Result<Option<usize>> {
        // Indices into `outputs` of what is still to send, in order.
        let mut pending: Vec<usize> = (0..outputs.len()).collect();
        let mut refusals = vec![0u32; outputs.len()];
        let mut given_up = 0;
        let mut backoff = backoff();
        while !pending.is_empty() {
            let failure = match self.send_and_flush(outputs, &pending) {
                Ok(()) => break,
                Err(Error::Unconfirmed(u)) => *u,
                Err(e) => Unconfirmed {
                    reason: e.to_string(),
                    ..Unconfirmed::default()
                },
            };
            let settled = failure.settled.min(pending.len());
            let mut again = Vec::new();
            for (at, &i) in pending.iter().enumerate() {
                let refused = failure.refused.iter().find(|(p, _)| *p == at);
                match refused {
                    Some((_, why)) => {
                        refusals[i] += 1;
                        if refusals[i] < self.max_attempts {
                            again.push(i);
                            continue;
                        }
                        given_up += 1;
                        let why = format!(
                            "refused by {} after {} attempts: {why}",
                            self.sink.describe(),
                            refusals[i]
                        );
                        tracing::warn!("{}: {why}", record_text(&outputs[i]));
                        dead.push(dead_letter_of(&outputs[i], &why));
                    }
                    None if at >= settled => again.push(i),
                    None => {}
                }
            }
            let transient = settled < pending.len();
            self.stats.sink_failures += transient as u64;
            self.stats.sink_refusals += failure.refused.len() as u64;
            pending = again;
            if pending.is_empty() {
                break;
            }
            self.stats.retries += 1;
            self.publish();
            let wait = next_wait(&mut backoff, failure.retry_after);
            if transient {
                tracing::warn!(
                    "{} records not confirmed by {}, sending them again in {wait:?}: {failure}",
                    pending.len(),
                    self.sink.describe()
                );
            } else {
                tracing::info!(
                    "{} records refused by {}, trying them again in {wait:?}: {failure}",
                    pending.len(),
                    self.sink.describe()
                );
            }
            if !sleep_unless_stopped(wait, stop) {
                return Ok(None);
            }
        }
        Ok(Some(outputs.len() - given_up))
    }

    fn send_and_flush(&mut self, outputs: &[Record], pending: &[usize]) -> Result<()> {
        for &i in pending {
            self.sink.send(&outputs[i])?;
        }
        self.sink.flush(FLUSH_TIMEOUT)
    }

    /// Hands the batch's dead letters to the dead-letter sink until it
    /// settles them (or, without one, to the policy). Dead letters it
    /// refuses go to the policy too: there is nowhere further. `false` if
    /// stopped first.
    fn deliver_dead(&mut self, dead: &[Record], stop: &AtomicBool) -> Result<bool> {
        if dead.is_empty() {
            return Ok(true);
        }
        let Some(dl) = self.dead_letter.as_mut() else {
            for r in dead {
                Self::nowhere(
                    self.no_dead_letter,
                    &mut self.stats,
                    r,
                    "no dead-letter sink",
                )?;
            }
            return Ok(true);
        };
        let mut pending: Vec<&Record> = dead.iter().collect();
        let mut backoff = backoff();
        loop {
            let result = pending
                .iter()
                .try_for_each(|r| dl.send(r))
                .and_then(|()| dl.flush(FLUSH_TIMEOUT));
            let failure = match result {
                Ok(()) => {
                    self.stats.dead_letters += pending.len() as u64;
                    return Ok(true);
                }
                Err(Error::Unconfirmed(u)) => *u,
                Err(e) => Unconfirmed {
                    reason: e.to_string(),
                    ..Unconfirmed::default()
                },
            };
            let settled = failure.settled.min(pending.len());
            let mut again = Vec::new();
            let mut refused = Vec::new();
            for (at, r) in pending.iter().enumerate() {
                match failure.refused.iter().find(|(p, _)| *p == at) {
                    Some((_, why)) => refused.push((*r, why.clone())),
                    None if at >= settled => again.push(*r),
                    None => self.stats.dead_letters += 1,
                }
            }
            self.stats.dead_letter_failures += 1;
            let describe = dl.describe();
            for (r, why) in refused {
                let why = format!("refused by the dead-letter sink {describe}: {why}");
                Self::nowhere(self.no_dead_letter, &mut self.stats, r, &why)?;
            }
            pending = again;
            if pending.is_empty() {
                return Ok(true);
            }
            self.stats.retries += 1;
            publish(&self.published, &self.stats);
            let wait = next_wait(&mut backoff, failure.retry_after);
            tracing::warn!(
                "{} dead letters not confirmed by {describe}, sending them again in {wait:?}: {failure}",
                pending.len()
            );
            if !sleep_unless_stopped(wait, stop) {
                return Ok(false);
            }
        }
    }

    /// A dead letter with nowhere to go, under the pipeline's policy.
    fn nowhere(
        policy: NoDeadLetter,
        stats: &mut PipelineStats,
        dead: &Record,
        why: &str,
    ) -> Result<()> {
        let envelope = String::from_utf8_lossy(&dead.value);
        match policy {
            NoDeadLetter::Skip => {
                tracing::warn!("dead letter skipped ({why}): {envelope}");
                stats.skipped += 1;
                Ok(())
            }
            NoDeadLetter::Stop => {
                let reason = dead
                    .headers
                    .iter()
                    .rev()
                    .find(|(name, _)| name == dead_letter::REASON_HEADER)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                Err(Error::Undeliverable {
                    record: one_line(&record_text(dead)),
                    reason: one_line(&format!(
                        "{reason} ({why}; the pipeline stops: policy 'stop')"
                    )),
                })
            }
        }
    }
}

/// The backoff between attempts at a failing sink, jittered so that
/// pipelines failing together do not come back together.
fn backoff() -> Backoff {
    Backoff::new(MIN_BACKOFF, MAX_BACKOFF).jittered()
}

/// The wait before the next attempt: the backoff's, or `retry_after` if
/// the system asked for longer.
fn next_wait(backoff: &mut Backoff, retry_after: Option<Duration>) -> Duration {
    let wait = backoff.next_delay();
    match retry_after {
        Some(r) => wait.max(r.min(MAX_RETRY_AFTER)),
        None => wait,
    }
}

/// Sleeps `wait`, checking `stop` as it goes; `false` if it was set.
fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// A record in a message: its topic and key.
fn record_text(r: &Record) -> String {
    match &r.key {
        Some(k) => format!(
            "record to '{}' with key '{}'",
            r.topic,
            String::from_utf8_lossy(k)
        ),
        None => format!("record to '{}' without a key", r.topic),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The dead-letter record for `record` failing with `error`: the original
/// key, as value the JSON envelope with the reason and the original bytes,
/// and as headers the original's followed by the dead-letter headers.
fn dead_letter_of(record: &Record, error: &str) -> Record {
    let mut headers = record.headers.clone();
    headers.extend(
        dead_letter::headers(Headers::EMPTY, &record.topic, None, error)
            .into_iter()
            .map(|h| (h.name, h.value.unwrap_or_default())),
    );
    Record {
        topic: record.topic.clone(),
        key: record.key.clone(),
        value: dead_letter::envelope_for_output(
            &record.topic,
            record.key.as_deref(),
            &record.value,
            error,
        ),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Condition;
    use crate::Transform;
    use std::sync::{Arc, Mutex};

    /// A finite source that counts what it was asked to acknowledge.
    struct Numbers {
        left: Vec<Record>,
        polled: usize,
        acked: Arc<Mutex<usize>>,
    }

    impl Numbers {
        fn new(values: &[&str]) -> (Self, Arc<Mutex<usize>>) {
            let acked = Arc::new(Mutex::new(0));
            let left = values
                .iter()
                .rev()
                .map(|v| Record::new("in", Some(b"k"), *v))
                .collect();
            let s = Self {
                left,
                polled: 0,
                acked: acked.clone(),
            };
            (s, acked)
        }
    }

    impl Source for Numbers {
        fn describe(&self) -> String {
            "numbers".into()
        }
        fn delivery(&self) -> Delivery {
            Delivery::AtLeastOnce
        }
        fn poll(&mut self, out: &mut Vec<Record>, max: usize, _: Duration) -> Result<usize> {
            let n = max.min(self.left.len());
            for _ in 0..n {
                out.push(self.left.pop().unwrap());
            }
            self.polled += n;
            Ok(n)
        }
        fn ack(&mut self) -> Result<()> {
            *self.acked.lock().unwrap() = self.polled;
            Ok(())
        }
        fn finished(&self) -> bool {
            self.left.is_empty()
        }
        /// What is left to read.
        fn lag(&mut self) -> Option<u64> {
            Some(self.left.len() as u64)
        }
    }

    /// A sink whose first `failures` flushes fail, losing what was sent;
    /// `confirmed` holds what was flushed successfully, and `acked_then`
    /// how many source records were acknowledged at each confirmation.
    #[derive(Clone, Default)]
    struct Flaky {
        failures: Arc<Mutex<u32>>,
        pending: Arc<Mutex<Vec<Record>>>,
        confirmed: Arc<Mutex<Vec<Record>>>,
        delivery: Option<Delivery>,
    }

    impl Sink for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn delivery(&self) -> Delivery {
            self.delivery.unwrap_or(Delivery::AtLeastOnce)
        }
        fn send(&mut self, r: &Record) -> Result<()> {
            self.pending.lock().unwrap().push(r.clone());
            Ok(())
        }
        fn flush(&mut self, _: Duration) -> Result<()> {
            let mut f = self.failures.lock().unwrap();
            let sent = std::mem::take(&mut *self.pending.lock().unwrap());
            if *f > 0 {
                *f -= 1;
                return Err(Error::Protocol {
                    server: "flaky".into(),
                    message: "server restarting".into(),
                });
            }
            self.confirmed.lock().unwrap().extend(sent);
            Ok(())
        }
    }

    fn values(rs: &[Record]) -> Vec<String> {
        rs.iter()
            .map(|r| String::from_utf8(r.value.clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_failing_sink_gets_the_batch_again_and_the_source_waits() {
        let (source, acked) = Numbers::new(&["1", "2", "3", "4", "5"]);
        let sink = Flaky {
            failures: Arc::new(Mutex::new(2)),
            ..Default::default()
        };
        let mut p = Pipeline::new(source, sink.clone()).batch(2);
        let stats = p.run(&AtomicBool::new(false)).unwrap();
        assert_eq!(
            values(&sink.confirmed.lock().unwrap()),
            ["1", "2", "3", "4", "5"]
        );
        assert_eq!(*acked.lock().unwrap(), 5);
        assert_eq!(
            (stats.records_in, stats.records_out, stats.retries),
            (5, 5, 2)
        );
    }

    #[test]
    fn the_source_lag_is_in_the_stats_through_a_boxed_source() {
        let (source, _) = Numbers::new(&["1", "2", "3", "4", "5"]);
        let boxed: Box<dyn Source> = Box::new(source);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut p = Pipeline::new(boxed, Flaky::default())
            .batch(2)
            .on_batch(move |stats| s.lock().unwrap().push(stats.source_lag));
        let stats = p.run(&AtomicBool::new(false)).unwrap();
        assert_eq!(stats.source_lag, Some(0));
        assert_eq!(*seen.lock().unwrap(), [Some(3), Some(1), Some(0)]);
    }

    #[test]
    fn nothing_is_acknowledged_while_the_sink_fails() {
        let (source, acked) = Numbers::new(&["1", "2"]);
        let sink = Flaky {
            failures: Arc::new(Mutex::new(u32::MAX)),
            ..Default::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let run = std::thread::spawn(move || Pipeline::new(source, sink).run(&s));
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::Relaxed);
        let stats = run.join().unwrap().unwrap();
        assert_eq!(*acked.lock().unwrap(), 0);
        assert_eq!(stats.records_in, 0);
        assert!(stats.retries >= 2, "{stats:?}");
    }

    #[test]
    fn failures_go_to_the_dead_letter_sink_with_the_reason() {
        let (source, acked) = Numbers::new(&[r#"{"t": 50}"#, "not json", r#"{"t": 10}"#]);
        let (out, dead) = (Flaky::default(), Flaky::default());
        let hot = Transform::new().filter(Condition::parse("t>20").unwrap());
        let mut p = Pipeline::new(source, out.clone())
            .stage(hot)
            .dead_letter(dead.clone());
        let stats = p.run(&AtomicBool::new(false)).unwrap();
        assert_eq!(values(&out.confirmed.lock().unwrap()), [r#"{"t": 50}"#]);
        let dead = dead.confirmed.lock().unwrap();
        assert_eq!(dead.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&dead[0].value).unwrap();
        assert_eq!(v["value"], "not json");
        assert_eq!(v["topic"], "in");
        assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
        assert_eq!(dead[0].key.as_deref(), Some(&b"k"[..]));
        let headers: Vec<(&str, String)> = dead[0]
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                (dead_letter::TOPIC_HEADER, "in".to_owned()),
                (
                    dead_letter::REASON_HEADER,
                    v["error"].as_str().unwrap().to_owned()
                ),
            ],
            "a source's record has no partition or offset"
        );
        assert_eq!(*acked.lock().unwrap(), 3);
        assert_eq!(stats.dead_letters, 1);
    }

    /// A sink that refuses for good the records whose value is in
    /// `refuse`, and whose next flush (when `cut` is set) confirms only the
    /// first `cut` records and fails the rest as if the connection dropped,
    /// asking for `retry_after`. `sends` counts every send of each value.
    #[derive(Clone, Default)]
    struct Picky {
        refuse: Vec<String>,
        cut: Arc<Mutex<Option<usize>>>,
        retry_after: Option<Duration>,
        pending: Vec<Record>,
        confirmed: Arc<Mutex<Vec<Record>>>,
        sends: Arc<Mutex<HashMap<String, u32>>>,
    }

    impl Sink for Picky {
        fn describe(&self) -> String {
            "picky".into()
        }
        fn delivery(&self) -> Delivery {
            Delivery::AtLeastOnce
        }
        fn send(&mut self, r: &Record) -> Result<()> {
            let v = String::from_utf8(r.value.clone()).unwrap();
            *self.sends.lock().unwrap().entry(v).or_default() += 1;
            self.pending.push(r.clone());
            Ok(())
        }
        fn flush(&mut self, _: Duration) -> Result<()> {
            let sent = std::mem::take(&mut self.pending);
            let cut = self.cut.lock().unwrap().take().unwrap_or(sent.len());
            let mut refused = Vec::new();
            for (at, r) in sent.iter().enumerate().take(cut) {
                let v = String::from_utf8(r.value.clone()).unwrap();
                if self.refuse.contains(&v) {
                    refused.push((at, format!("400 Bad Request: no '{v}' here")));
                } else {
                    self.confirmed.lock().unwrap().push(r.clone());
                }
            }
            if cut < sent.len() {
                let e = Error::Protocol {
                    server: "picky".into(),
                    message: "connection reset".into(),
                };
                return Err(Unconfirmed::transient(cut, refused, &e, self.retry_after));
            }
            Unconfirmed::refused(sent.len(), refused)
        }
    }

    fn numbers(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    fn picky(refuse: &[&str]) -> Picky {
        Picky {
            refuse: refuse.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_refused_record_alone_goes_to_the_dead_letter_sink_after_its_attempts() {
        let all = numbers(10);
        let (source, acked) = Numbers::new(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let sink = picky(&["7"]);
        let dead = Flaky::default();
        let mut p = Pipeline::new(source, sink.clone())
            .batch(4)
            .max_attempts(3)
            .dead_letter(dead.clone());
        let stats = p.run(&AtomicBool::new(false)).unwrap();
        let mut want = all.clone();
        want.retain(|v| v != "7");
        assert_eq!(values(&sink.confirmed.lock().unwrap()), want);
        let sends = sink.sends.lock().unwrap();
        assert_eq!(sends["7"], 3);
        assert!(want.iter().all(|v| sends[v] == 1), "{sends:?}");
        let dead = dead.confirmed.lock().unwrap();
        assert_eq!(dead.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&dead[0].value).unwrap();
        assert_eq!(v["value"], "7");
        let why = v["error"].as_str().unwrap();
        assert!(
            why.contains("400 Bad Request: no '7' here") && why.contains("after 3 attempts"),
            "{why}"
        );
        assert_eq!(
            dead[0]
                .headers
                .last()
                .map(|(n, v)| (n.as_str(), v == why.as_bytes())),
            Some((dead_letter::REASON_HEADER, true))
        );
        assert_eq!(*acked.lock().unwrap(), 10);
        assert_eq!(
            (stats.records_in, stats.records_out, stats.dead_letters),
            (10, 9, 1)
        );
        assert_eq!((stats.retries, stats.skipped), (2, 0));
    }

    #[test]
    fn the_counts_are_published_as_metrics_per_connector() {
        let all = numbers(10);
        let (source, _) = Numbers::new(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let mut p = Pipeline::new(source, picky(&["7"]))
            .batch(4)
            .max_attempts(2)
            .dead_letter(Flaky::default())
            .metrics("counted", "numbers", "picky", Some("flaky"));
        p.run(&AtomicBool::new(false)).unwrap();
        let text = metrics::global().render();
        for line in [
            r#"riffle_pipeline_records_in_total{pipeline="counted",connector="numbers"} 10"#,
            r#"riffle_pipeline_records_out_total{pipeline="counted",connector="picky"} 9"#,
            r#"riffle_pipeline_dead_letters_total{pipeline="counted"} 1"#,
            r#"riffle_pipeline_retries_total{pipeline="counted"} 1"#,
            r#"riffle_pipeline_errors_total{pipeline="counted",connector="picky",kind="refusal"} 2"#,
            r#"riffle_pipeline_errors_total{pipeline="counted",connector="picky",kind="failure"} 0"#,
            r#"riffle_pipeline_errors_total{pipeline="counted",connector="flaky",kind="dead-letter"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // The series go with the pipeline.
        drop(p);
        assert!(!metrics::global().render().contains(r#"pipeline="counted""#));
    }

    #[test]
    fn after_a_partial_failure_only_the_unconfirmed_are_sent_again_when_asked() {
        let all = numbers(6);
        let (source, acked) = Numbers::new(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let sink = Picky {
            cut: Arc::new(Mutex::new(Some(3))),
            retry_after: Some(Duration::from_millis(600)),
            ..Default::default()
        };
        let started = Instant::now();
        let stats = Pipeline::new(source, sink.clone())
            .run(&AtomicBool::new(false))
            .unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(values(&sink.confirmed.lock().unwrap()), all);
        let sends = sink.sends.lock().unwrap();
        let twice: Vec<_> = all.iter().filter(|v| sends[*v] == 2).collect();
        assert_eq!(twice, ["3", "4", "5"]);
        assert_eq!(*acked.lock().unwrap(), 6);
        assert_eq!((stats.records_out, stats.retries), (6, 1));
    }

    #[test]
    fn without_a_dead_letter_sink_stop_fails_the_pipeline_naming_the_record() {
        let (source, acked) = Numbers::new(&["1", "2", "3"]);
        let sink = picky(&["2"]);
        let e = Pipeline::new(source, sink.clone())
            .max_attempts(2)
            .no_dead_letter(NoDeadLetter::Stop)
            .run(&AtomicBool::new(false))
            .unwrap_err()
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains("record to 'in' with key 'k'")
                && e.contains("no '2' here")
                && e.contains("stop"),
            "{e}"
        );
        assert_eq!(sink.sends.lock().unwrap()["2"], 2);
        assert_eq!(*acked.lock().unwrap(), 0, "nothing acknowledged");
    }

    #[test]
    fn without_a_dead_letter_sink_skip_logs_counts_and_goes_on() {
        let (source, acked) = Numbers::new(&["1", "2", "not json", "3"]);
        let sink = picky(&["2"]);
        let stats = Pipeline::new(source, sink.clone())
            .stage(FailOn("not json"))
            .max_attempts(1)
            .no_dead_letter(NoDeadLetter::Skip)
            .run(&AtomicBool::new(false))
            .unwrap();
        assert_eq!(values(&sink.confirmed.lock().unwrap()), ["1", "3"]);
        assert_eq!(sink.sends.lock().unwrap()["2"], 1);
        assert_eq!(*acked.lock().unwrap(), 4);
        assert_eq!(
            (stats.records_out, stats.skipped, stats.dead_letters),
            (2, 2, 0)
        );
    }

    #[test]
    fn a_dead_letter_the_dead_letter_sink_refuses_follows_the_policy() {
        let (source, acked) = Numbers::new(&["1", "2"]);
        let sink = picky(&["2"]);
        let dead = picky(&["x"]);
        let mut p = Pipeline::new(source, sink)
            .max_attempts(1)
            .no_dead_letter(NoDeadLetter::Stop)
            .dead_letter(dead.clone());
        assert!(p.run(&AtomicBool::new(false)).is_ok());
        assert_eq!(dead.confirmed.lock().unwrap().len(), 1);
        assert_eq!(*acked.lock().unwrap(), 2);
        // Now the dead-letter sink refuses everything.
        let (source, acked) = Numbers::new(&["1", "2"]);
        let refusing = RefuseAll(picky(&[]));
        let e = Pipeline::new(source, picky(&["2"]))
            .max_attempts(1)
            .no_dead_letter(NoDeadLetter::Stop)
            .dead_letter(refusing)
            .run(&AtomicBool::new(false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused by the dead-letter sink"), "{e}");
        assert_eq!(*acked.lock().unwrap(), 0);
    }

    /// Passes records on, failing on one value.
    struct FailOn(&'static str);

    impl Stage for FailOn {
        fn process(&mut self, r: &Record, out: &mut Vec<Record>) -> Result<()> {
            if r.value == self.0.as_bytes() {
                return Err(Error::Decode("not JSON".into()));
            }
            out.push(r.clone());
            Ok(())
        }
    }

    /// A sink refusing every record.
    struct RefuseAll(Picky);

    impl Sink for RefuseAll {
        fn describe(&self) -> String {
            "refuse-all".into()
        }
        fn delivery(&self) -> Delivery {
            Delivery::AtLeastOnce
        }
        fn send(&mut self, r: &Record) -> Result<()> {
            self.0.send(r)
        }
        fn flush(&mut self, _: Duration) -> Result<()> {
            let n = std::mem::take(&mut self.0.pending).len();
            Unconfirmed::refused(n, (0..n).map(|i| (i, "full".into())).collect())
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let mut b = backoff();
        let first = next_wait(&mut b, None);
        assert!(
            first <= MIN_BACKOFF && first >= MIN_BACKOFF / 2,
            "{first:?}"
        );
        let second = next_wait(&mut b, None);
        assert!(
            second <= MIN_BACKOFF * 2 && second >= MIN_BACKOFF,
            "{second:?}"
        );
        assert_eq!(
            next_wait(&mut b, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        for _ in 0..10 {
            assert!(next_wait(&mut b, None) <= MAX_BACKOFF);
        }
        assert_eq!(
            next_wait(&mut b, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn stages_chain() {
        let mut both = (
            Transform::new().key_from_topic_level(1),
            Processor::new(Counter),
        );
        let mut out = Vec::new();
        for t in [
            "heaters/h1/sensor",
            "heaters/h2/sensor",
            "heaters/h1/sensor",
        ] {
            both.process(&Record::new(t, None, "{}"), &mut out).unwrap();
        }
        assert_eq!(values(&out), ["1", "1", "2"]);
        assert_eq!(out[2].key_str(), Some("h1"));
    }

    #[test]
    fn the_weakest_end_sets_the_delivery() {
        let (source, _) = Numbers::new(&[]);
        let p = Pipeline::new(source, Flaky::default());
        assert_eq!(p.delivery(), Delivery::AtLeastOnce);
        assert_eq!(p.describe(), "numbers -> flaky (at-least-once)");
        let p = p.dead_letter(Flaky {
            delivery: Some(Delivery::AtMostOnce),
            ..Default::default()
        });
        assert_eq!(p.delivery(), Delivery::AtMostOnce);
    }

    /// Counts records per key and says so on `counts`.
    #[derive(Clone)]
    struct Counter;

    impl KeyedProcessor for Counter {
        type Input = ();
        type State = u64;
        fn decode(&self, r: &RecordRef<'_>) -> Result<(String, ())> {
            let key = r.key_str().ok_or_else(|| Error::Decode("no key".into()))?;
            Ok((key.to_owned(), ()))
        }
        fn process(&mut self, key: &str, _: &(), n: &mut u64, ctx: &mut Context<'_>) -> Result<()> {
            *n += 1;
            ctx.send("counts", Some(key), n.to_string().as_bytes())
        }
    }

    #[test]
    fn keyed_processors_keep_state_per_key_and_send_to_the_sink() {
        let mut stage = Processor::new(Counter);
        let mut out = Vec::new();
        for k in ["a", "b", "a", "a"] {
            stage
                .process(&Record::new("in", Some(k.as_bytes()), "x"), &mut out)
                .unwrap();
        }
        let got: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.topic.as_str(),
                    r.key_str().unwrap(),
                    values(std::slice::from_ref(r))[0].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("counts", "a", "1".into()),
                ("counts", "b", "1".into()),
                ("counts", "a", "2".into()),
                ("counts", "a", "3".into())
            ]
        );
        assert_eq!(stage.state("a"), Some(&3));
        assert!(stage
            .process(&Record::new("in", None, "x"), &mut out)
            .is_err());
    }
}
