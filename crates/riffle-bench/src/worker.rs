//! `riffle-bench worker NAME`: the systems under test that this program
//! provides (the bare heater controller in `bare.rs`, the windowed
//! workload's aggregation here). Each reads `--input` as `--group`, writes to `--output` and
//! runs until SIGTERM (the in-process one runs to the end of its input and
//! prints its measurement).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, OutRecord, RecordRef, TopicSpec};
use riffle::process::window::{Stats, Windowed, Windows};
use riffle::process::{stateless, App, EventTime, Guarantee, Running, Style};
use riffle_heater::controller::Controller;

use crate::bare;
use crate::kafka::{config, Result};
use crate::stop::{catch_signals, stopped, wait_for_signal};
use crate::windowed;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    /// librdkafka consume -> produce, no framework.
    Ceiling,
    /// The heater controller by hand on librdkafka, no framework.
    BareKeyed,
    /// A riffle App with a stateless identity map.
    RiffleStateless,
    /// The heater controller, key-based style.
    RiffleKeyed,
    /// The heater controller, key-independent style.
    RiffleActors,
    /// The heater controller on the in-memory embedded log.
    RiffleEmbedded,
    /// Per-heater statistics over tumbling windows of event time
    /// (`windowed.rs`), key-based style.
    RiffleWindow,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    #[arg(long)]
    pub brokers: String,
    #[arg(long)]
    pub input: String,
    #[arg(long)]
    pub output: String,
    #[arg(long)]
    pub group: String,
    #[arg(long, default_value = "at-least-once")]
    pub guarantee: String,
    /// Consumer actors of a riffle App.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Workers of the key-independent style.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

pub fn run(a: WorkerArgs) -> Result<()> {
    catch_signals();
    // Riffle's warnings (a failed transaction, a record replayed) belong in
    // the run's log; `RIFFLE_LOG` shows more, e.g. `riffle=debug`.
    let filter = std::env::var("RIFFLE_LOG").unwrap_or_else(|_| "warn,librdkafka=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let guarantee: Guarantee = a.guarantee.parse().map_err(|e| format!("{e}"))?;
    match a.kind {
        Kind::Ceiling => ceiling(&a),
        Kind::BareKeyed => bare::run(&bare::Config {
            brokers: &a.brokers,
            input: &a.input,
            output: &a.output,
            group: &a.group,
            consumers: a.consumers,
            exactly_once: guarantee == Guarantee::ExactlyOnce,
        }),
        Kind::RiffleEmbedded => embedded(&a, guarantee),
        Kind::RiffleStateless | Kind::RiffleKeyed | Kind::RiffleActors | Kind::RiffleWindow => {
            let log: Arc<dyn Log> =
                Arc::new(KafkaLog::connect(a.brokers.clone(), vec![]).map_err(|e| e.to_string())?);
            let app = start_app(&a, guarantee, log)?;
            settled(&app, a.consumers)?;
            eprintln!("{READY}");
            wait_for_signal();
            app.stop().map_err(|e| e.to_string())
        }
    }
}

/// What a riffle worker prints once its group has settled.
pub const READY: &str = "riffle worker: every consumer has its partitions";

/// Waits until each of the app's `consumers` owns partitions: the group has
/// gone through the rebalances of its members joining one after the other,
/// which would otherwise fall inside the measured window (and move the
/// partitions of a consumer that had started on all of them).
fn settled(app: &Running, consumers: usize) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let owned = app.assignments();
        if owned.len() >= consumers && owned.iter().all(|(_, p)| !p.is_empty()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the group did not settle within 60 s: {owned:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_app(a: &WorkerArgs, guarantee: Guarantee, log: Arc<dyn Log>) -> Result<Running> {
    let started = match a.kind {
        Kind::RiffleStateless => App::new(
            &a.group,
            &[&a.input],
            stateless::map(&a.output, |v| Ok(v.to_vec())),
        )
        .consumers(a.consumers)
        .guarantee(guarantee)
        .start(log),
        Kind::RiffleKeyed | Kind::RiffleEmbedded => {
            App::new(&a.group, &[&a.input], Controller::new(&a.output))
                .style(Style::Keyed)
                .consumers(a.consumers)
                .guarantee(guarantee)
                .start(log)
        }
        Kind::RiffleActors => App::new(&a.group, &[&a.input], Controller::new(&a.output))
            .style(Style::Actors { workers: a.workers })
            .consumers(a.consumers)
            .guarantee(guarantee)
            .start(log),
        Kind::RiffleWindow => App::new(&a.group, &[&a.input], windowed_stats(&a.output)?)
            .event_time(EventTime {
                out_of_orderness: Duration::from_millis(windowed::OUT_OF_ORDERNESS_MS as u64),
                // The windows the input passes close on event time alone,
                // as in Kafka Streams; on wall-clock time an idle
                // partition would also close its last ones.
                idle_timeout: None,
                allowed_lateness: None,
            })
            .style(Style::Keyed)
            .consumers(a.consumers)
            .guarantee(guarantee)
            .start(log),
        Kind::Ceiling | Kind::BareKeyed => unreachable!("{:?} is no riffle app", a.kind),
    };
    started.map_err(|e| e.to_string())
}

/// The windowed workload's aggregation: per heater, tumbling windows of
/// `windowed::WINDOW_MS` over the event time in the value's `ts`, with
/// `windowed::GRACE_MS` of grace, of the `measurement`s' statistics.
fn windowed_stats(output: &str) -> Result<Windowed<Stats>> {
    #[derive(serde::Deserialize)]
    struct Measurement {
        measurement: f64,
        ts: i64,
    }
    let agg = Windowed::new(
        Windows::tumbling(Duration::from_millis(windowed::WINDOW_MS as u64)),
        Stats,
        output,
        |r: &RecordRef<'_>| -> riffle::Result<(String, f64, Option<i64>)> {
            let key = r
                .key_str()
                .ok_or_else(|| riffle::Error::Decode("a record without a UTF-8 key".into()))?;
            let m: Measurement = serde_json::from_slice(r.value)
                .map_err(|e| riffle::Error::Decode(format!("not a measurement: {e}")))?;
            Ok((key.to_string(), m.measurement, Some(m.ts)))
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(agg.grace(Duration::from_millis(windowed::GRACE_MS as u64)))
}

/// The physical limit: `--consumers` threads, each one librdkafka consumer
/// of the group and one producer in a loop, each record forwarded to the
/// same partition of the output (the riffle apps run as many consumers,
/// each with its own producer, configured as here). Consumed positions are committed every
/// 100 ms by librdkafka without waiting for the outputs' acknowledgements
/// (the riffle apps wait), and the producers are flushed on stop.
fn ceiling(a: &WorkerArgs) -> Result<()> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..a.consumers.max(1))
            .map(|_| s.spawn(|| pass_through(a)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a ceiling thread panicked".into()))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

fn pass_through(a: &WorkerArgs) -> Result<()> {
    let consumer: BaseConsumer = config(&a.brokers)
        .set("group.id", &a.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100")
        // The prefetch riffle's consumers use (smaller than librdkafka's
        // default, and faster here: less memory to fault in).
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    consumer
        .subscribe(&[&a.input])
        .map_err(|e| format!("cannot subscribe to {}: {e}", a.input))?;
    // Riffle's producer settings (riffle-log's `KafkaProducer`): idempotent,
    // as the apps' producers are so that a retried batch is neither
    // duplicated nor reordered, which caps its requests in flight at 5 per
    // broker; 5 ms of linger; librdkafka's defaults otherwise (batches of up
    // to 1 MB, 100,000 records queued).
    let producer: BaseProducer = config(&a.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    let mut n = 0u64;
    while !stopped() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut record = BaseRecord::to(&a.output)
                    .partition(m.partition())
                    .payload(m.payload().unwrap_or_default());
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            producer.poll(Duration::from_millis(5));
                        }
                        Err((e, _)) => return Err(format!("cannot send to {}: {e}", a.output)),
                    }
                }
                n += 1;
                if n & 1023 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            Some(Err(e)) => eprintln!("ceiling: {e}"),
            None => producer.poll(Duration::ZERO),
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush failed: {e}"))?;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing consumed since the last automatic commit.
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(format!("commit failed: {e}")),
    }
}

/// CPU seconds of this process so far (every thread).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Copies the input topic from the broker into an in-memory embedded log
/// (not timed; the broker's client is dropped before the timing starts, so
/// that its threads are not counted), runs the controller on it until the
/// group has committed every record, and prints `{"records", "elapsed_s",
/// "cpu_s", "output", "peak_rss_bytes"}`.
fn embedded(a: &WorkerArgs, guarantee: Guarantee) -> Result<()> {
    let t = Duration::from_secs(30);
    let e = |e: riffle::Error| e.to_string();
    let copy = Instant::now();
    let kafka = KafkaLog::connect(a.brokers.clone(), vec![]).map_err(e)?;
    let partitions = kafka
        .describe_topic(&a.input, t)
        .map_err(e)?
        .partitions
        .len() as i32;
    let log = Arc::new(EmbeddedLog::new());
    log.create_topic(&TopicSpec::new(&a.input, partitions), t)
        .map_err(e)?;
    log.create_topic(&TopicSpec::new(&a.output, partitions), t)
        .map_err(e)?;
    let producer = log.producer(None).map_err(e)?;
    let mut records = 0u64;
    for p in 0..partitions {
        kafka
            .read_partition(&a.input, p, 0, false, t, &mut |r| {
                records += 1;
                producer.send(OutRecord {
                    topic: &a.input,
                    key: r.key,
                    value: Some(r.value),
                    partition: Some(p),
                    headers: r.headers,
                    timestamp: None,
                })
            })
            .map_err(e)?;
    }
    producer.flush(t).map_err(e)?;
    drop(producer);
    drop(kafka);
    eprintln!(
        "copied {records} records from the broker in {:.1} s",
        copy.elapsed().as_secs_f64()
    );
    let highs: Vec<i64> = {
        let mut parts = log.describe_topic(&a.input, t).map_err(e)?.partitions;
        parts.sort_by_key(|p| p.id);
        parts.iter().map(|p| p.high).collect()
    };

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let app = start_app(a, guarantee, log.clone())?;
    loop {
        if stopped() {
            return Err("stopped before the end of the input".into());
        }
        let committed = log.committed_offsets(&a.group, &a.input, t).map_err(e)?;
        let done = highs.iter().enumerate().all(|(p, &high)| {
            high == 0
                || committed
                    .iter()
                    .any(|c| c.partition.partition == p as i32 && c.committed >= Some(high))
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    app.stop().map_err(e)?;
    let mut output = 0u64;
    for p in 0..partitions {
        log.read_partition(&a.output, p, 0, true, t, &mut |_| {
            output += 1;
            Ok(())
        })
        .map_err(e)?;
    }
    println!(
        "{}",
        serde_json::json!({"records": records, "elapsed_s": elapsed, "cpu_s": cpu, "output": output,
            "peak_rss_bytes": crate::child::peak_rss(std::process::id() as i32)})
    );
    Ok(())
}
