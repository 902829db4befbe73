//! The heater demo over MQTT, as IoT heaters would speak it: each heater
//! publishes its measurements and settings on `heaters/<id>/sensor` and
//! listens for commands on `heaters/<id>/command`. The controller stays on
//! the log (with its durable state); two pipelines bridge the broker and
//! the log, like a deployment would run them with `riffle connect`:
//!
//! ```text
//! heaters --MQTT--> heaters/+/sensor --pipeline--> log: sensor --> controller
//! heaters <--MQTT-- heaters/<id>/command <--pipeline-- log: heatercontrol <--'
//! ```
//!
//! The simulated heaters reach the broker through an in-process gateway:
//! two more pipelines between the simulator's own in-memory log and the
//! broker, so every record they send or receive crosses MQTT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use riffle::connect::{LogSink, LogSource, Pipeline, Sink, Source, Transform};
use riffle::log::{ConsumerConfig, Log, OffsetReset};
use riffle::{Error, Result};
use riffle_connectors::{registry, Env, LogChoice, Options};

/// The MQTT topic of each heater's measurements and settings.
pub const SENSOR: &str = "heaters/{key}/sensor";
/// The MQTT topic of each heater's commands.
pub const COMMAND: &str = "heaters/{key}/command";

/// The group of the bridge from the controller's commands to MQTT.
const COMMANDS_GROUP: &str = "mqtt-bridge-out";

/// The running pipelines.
pub struct Bridges {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<Result<riffle::connect::PipelineStats>>)>,
}

/// Log topics on each side.
pub struct Topics<'a> {
    pub sensor: &'a str,
    pub control: &'a str,
}

impl Bridges {
    /// Starts the four pipelines between the broker at `url` (each MQTT
    /// connection also given the connector options `options`), the
    /// heaters' log `devices` and the controller's `log`. `run` names the
    /// heaters' MQTT sessions (a fresh simulator must not receive commands
    /// queued for an earlier one); the controller's side keeps its session
    /// across runs, like its consumer group.
    pub fn start(
        url: &str,
        options: &[(String, String)],
        run: &str,
        devices: &Arc<dyn Log>,
        log: &Arc<dyn Log>,
        topics: Topics<'_>,
    ) -> Result<Self> {
        let env = Env {
            log: Box::new(|_: LogChoice<'_>| {
                Err(Error::InvalidInput(
                    "the bridges build their log ends themselves".into(),
                ))
            }),
        };
        let mqtt = |topic: &str, client: &str| {
            let given = options.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let ours = [("url", url), ("topic", topic), ("client_id", client)];
            Options::from_pairs("mqtt", ours.into_iter().chain(given))
        };
        let mqtt_source = |topic: &str, client: &str| -> Result<Box<dyn Source>> {
            registry::source(mqtt(topic, client), &env)
        };
        let mqtt_sink = |topic: &str, client: &str| -> Result<Box<dyn Sink>> {
            registry::sink(mqtt(topic, client), &env)
        };
        let log_source = |log: &Arc<dyn Log>, topic: &str, group: &str| -> Result<LogSource> {
            let mut c = ConsumerConfig::new(group, &[topic]);
            c.offset_reset = OffsetReset::Latest;
            LogSource::new(&**log, &c)
        };
        let by_heater = || Transform::new().key_from_topic_level(1);
        let all = |t: &str| t.replace("{key}", "+");
        let pipelines = vec![
            (
                "heaters -> MQTT",
                Pipeline::new(
                    log_source(devices, topics.sensor, "mqtt-gateway")?,
                    mqtt_sink(SENSOR, &format!("riffle-demo-heaters-out-{run}"))?,
                ),
            ),
            (
                "MQTT -> controller",
                Pipeline::new(
                    mqtt_source(&all(SENSOR), "riffle-demo-bridge-in")?,
                    LogSink::new(&**log, topics.sensor)?,
                )
                .stage(by_heater()),
            ),
            (
                "controller -> MQTT",
                Pipeline::new(
                    log_source(log, topics.control, COMMANDS_GROUP)?,
                    mqtt_sink(COMMAND, "riffle-demo-bridge-out")?,
                ),
            ),
            (
                "MQTT -> heaters",
                Pipeline::new(
                    mqtt_source(&all(COMMAND), &format!("riffle-demo-heaters-in-{run}"))?,
                    LogSink::new(&**devices, topics.control)?,
                )
                .stage(by_heater()),
            ),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (name, p) in pipelines {
            let s = stop.clone();
            let mut p = p.batch(200);
            let t = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || p.run(&s))
                .map_err(|e| Error::io("cannot start a thread", &e))?;
            threads.push((name.to_owned(), t));
        }
        let bridges = Self { stop, threads };
        // The bridge reads the controller's commands from the end it finds
        // once it owns the topic: the heaters start after that, or their
        // first commands could be missed (a Kafka group takes a moment to
        // assign).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let members = log.group_members(COMMANDS_GROUP, Duration::from_secs(5))?;
            if members
                .iter()
                .any(|m| m.assignment.iter().any(|tp| tp.topic == topics.control))
            {
                return Ok(bridges);
            }
            if Instant::now() > deadline {
                let _ = bridges.stop();
                return Err(Error::Timeout(format!(
                    "the bridge of {} to MQTT was not given the topic within 30 s",
                    topics.control
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every pipeline; returns the records each moved.
    pub fn stop(self) -> Result<Vec<(String, u64)>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut moved = Vec::new();
        for (name, t) in self.threads {
            let stats = t.join().map_err(|_| Error::Panicked {
                what: format!("the {name} pipeline"),
                message: None,
            })??;
            moved.push((name, stats.records_out));
        }
        Ok(moved)
    }
}
