//! Moving records from a source to a sink, acknowledging only what is safe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Delivery, Record, Sink, Source};
use crate::error::{Error, Result};
use crate::log::{Header, Headers, RecordRef};
use crate::process::dead_letter;
use crate::process::{run_processor, Context, KeyedProcessor};

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
        let mut ctx = Context::new(out, &record.topic, 0, offset, None, r.headers);
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
    /// Records that failed the stage, with the reason, confirmed by the
    /// dead-letter sink (or logged when there is none).
    pub dead_letters: u64,
    /// Times a batch was sent again after the sink failed.
    pub retries: u64,
}

/// Called with the counts after every batch.
type OnBatch = dyn FnMut(&PipelineStats) + Send;

/// One source, one stage, one sink (and an optional dead-letter sink).
///
/// The pipeline reads a batch from the source, runs the stage over it,
/// sends the outputs to the sink and the failures to the dead-letter sink,
/// waits until both confirm, and only then acknowledges the batch to the
/// source. When a sink fails (its server restarts, say) the whole batch is
/// sent again after a backoff, until it is confirmed or the pipeline is
/// stopped: records may repeat, none is lost.
///
/// ```no_run
/// use riffle::connect::{Pipeline, Transform, Condition};
/// # fn demo(source: Box<dyn riffle::connect::Source>, sink: Box<dyn riffle::connect::Sink>) -> riffle::Result<()> {
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
    stats: PipelineStats,
    on_batch: Option<Box<OnBatch>>,
}

/// How long a poll waits for records before the stop flag is checked again.
const POLL: Duration = Duration::from_millis(100);
/// How long one flush may take before the batch is sent again.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between attempts at a failing sink.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Pipeline {
    /// A pipeline copying every record from `source` to `sink`.
    pub fn new(source: impl Source + 'static, sink: impl Sink + 'static) -> Self {
        Self {
            source: Box::new(source),
            stage: Box::new(Identity),
            sink: Box::new(sink),
            dead_letter: None,
            batch: 500,
            stats: PipelineStats::default(),
            on_batch: None,
        }
    }

    /// What happens to each record on the way (default: nothing).
    pub fn stage(mut self, stage: impl Stage + 'static) -> Self {
        self.stage = Box::new(stage);
        self
    }

    /// Where records the stage fails on go, as JSON envelopes with the
    /// reason and the original bytes (see
    /// [`dead_letter`](crate::process::dead_letter)). Without one, they are
    /// logged with the same envelope at warning level.
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

    /// Calls `f` with the counts after every batch (to show progress).
    pub fn on_batch(mut self, f: impl FnMut(&PipelineStats) + Send + 'static) -> Self {
        self.on_batch = Some(Box::new(f));
        self
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
    /// counts; fails only when the source fails for good.
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
                    dead.push(dead_letter_of(record, &e));
                }
            }
            if !self.deliver(&outputs, &dead, stop) {
                return Ok(());
            }
            if let Err(e) = self.source.ack() {
                tracing::warn!(
                    "cannot acknowledge to {} (its records come again): {e}",
                    self.source.describe()
                );
            }
            self.stats.records_in += input.len() as u64;
            self.stats.records_out += outputs.len() as u64;
            self.stats.dead_letters += dead.len() as u64;
            if let Some(f) = &mut self.on_batch {
                f(&self.stats);
            }
        }
        Ok(())
    }

    /// Sends a batch's outputs and dead letters until both sinks confirm;
    /// `false` if stopped first.
    fn deliver(&mut self, outputs: &[Record], dead: &[Record], stop: &AtomicBool) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_deliver(outputs, dead) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(
                        "{} records not confirmed, sending them again in {backoff:?}: {e}",
                        outputs.len() + dead.len()
                    );
                    self.stats.retries += 1;
                }
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn try_deliver(&mut self, outputs: &[Record], dead: &[Record]) -> Result<()> {
        for r in outputs {
            self.sink.send(r)?;
        }
        match &mut self.dead_letter {
            Some(dl) => {
                for r in dead {
                    dl.send(r)?;
                }
            }
            None => {
                for r in dead {
                    tracing::warn!(
                        "dead letter (no dead-letter sink): {}",
                        String::from_utf8_lossy(&r.value)
                    );
                }
            }
        }
        if !outputs.is_empty() {
            self.sink.flush(FLUSH_TIMEOUT)?;
        }
        if let Some(dl) = self.dead_letter.as_mut().filter(|_| !dead.is_empty()) {
            dl.flush(FLUSH_TIMEOUT)
                .map_err(|e| Error::Backend(format!("dead letters: {e}")))?;
        }
        Ok(())
    }
}

/// The dead-letter record for `record` failing with `error`: the original
/// key, as value the JSON envelope with the reason and the original bytes,
/// and as headers the original's followed by the dead-letter headers.
fn dead_letter_of(record: &Record, error: &Error) -> Record {
    let error = error.to_string();
    let mut headers = record.headers.clone();
    headers.extend(
        dead_letter::headers(Headers::EMPTY, &record.topic, None, &error)
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
            &error,
        ),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Condition;
    use crate::connect::Transform;
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
                return Err(Error::Backend("server restarting".into()));
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
