//! `riffle demo heater`: the heater simulator and the controller together,
//! live in the terminal. The README's main job.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::heater::view;
use clap::Args;
use riffle::log::embedded::EmbeddedLog;
use riffle::log::{Log, OffsetReset, TopicSpec};
use riffle::{Error, Result};

use super::mqtt;
use crate::backend::LogArgs;
use crate::dashboard::{Dashboard, StatsFeed};
use crate::heater::controller::ControllerOptions;
use crate::heater::simulate::SimOptions;
use crate::heater::watch::watch;
use crate::util;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct HeaterDemoArgs {
    #[command(flatten)]
    controller: ControllerOptions,
    #[command(flatten)]
    sim: SimOptions,
    /// Delete the demo's topics and the controller's state first and start
    /// from empty ones; by default the topics, their records, the
    /// controller's committed offsets and its state are kept from earlier
    /// runs.
    #[arg(long)]
    fresh: bool,
    /// Let the heaters speak MQTT through this broker (e.g. mqtt://127.0.0.1:1883):
    /// measurements on heaters/<id>/sensor, commands on heaters/<id>/command,
    /// bridged to and from the controller's log.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// An option of the MQTT connector for every connection to the broker
    /// (repeatable), for a secured broker: tls_ca=ca.pem, tls_cert=...,
    /// tls_key=..., user=..., password=${file:/run/secrets/mqtt}, ...
    /// (`riffle connect --list mqtt` lists them).
    #[arg(long = "mqtt-option", value_name = "KEY=VALUE", value_parser = key_value, requires = "mqtt")]
    mqtt_options: Vec<(String, String)>,
}

/// `KEY=VALUE`, split at the first `=`; not an option the demo sets itself.
fn key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, _)) if ["url", "topic", "client_id"].contains(&k.trim()) => Err(format!(
            "'{}' is set by the demo (the URL comes from --mqtt)",
            k.trim()
        )),
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// The controller's consumer group in the demo.
const GROUP: &str = "heater-demo-controller";

pub fn run(brokers: &LogArgs, mut a: HeaterDemoArgs) -> Result<()> {
    let o = &a.controller;
    o.http_security.check(o.http.as_deref())?;
    let log = brokers.any()?;
    if a.sim.keyless
        && a.controller.repartition.is_none()
        && matches!(a.controller.style(), riffle::process::Style::Keyed)
    {
        // Key-less heaters spread over partitions; the keyed style must see
        // each heater in one partition.
        a.controller.repartition = Some("sensor-by-id".into());
    }
    // Every heater's statistics per simulated minute, for the dashboard.
    if a.controller.http.is_some() {
        a.controller
            .stats_window
            .get_or_insert(Duration::from_secs(60));
    }
    // What the controller sends besides commands, for the counts below.
    let sent_what = match (a.controller.stats_window, a.controller.watchdog) {
        (None, None) => "commands",
        _ => "records (commands, statistics, alerts)",
    };
    let o = &a.controller;
    let found = earlier_data(&*log, &o.sensor_topic, a.fresh)?;
    println!("heater demo on {}: {found}", log.describe());
    let topics = o
        .inputs()
        .into_iter()
        .chain([o.control_topic.as_str(), o.dead_letter.as_str()]);
    let outputs = [
        o.stats_window.map(|_| o.stats_topic.as_str()),
        o.watchdog.map(|_| o.alerts_topic.as_str()),
    ];
    for t in topics
        .chain(o.repartition.as_deref())
        .chain(outputs.into_iter().flatten())
    {
        let spec = TopicSpec::new(t, o.partitions);
        if a.fresh {
            log.recreate_topic(&spec, TIMEOUT)?;
        } else {
            log.ensure_topic(&spec, TIMEOUT)?;
        }
    }
    let stopper = util::signal_stopper();
    let state_dir = o.state_dir(brokers)?;
    if a.fresh {
        // The controller's state starts over with its topics: its
        // changelog, its record of input growth and its snapshots.
        for t in ["changelog", "layout"].map(|s| format!("{GROUP}-{s}")) {
            match log.delete_topic(&t, TIMEOUT) {
                Ok(()) | Err(Error::UnknownTopic(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = &state_dir {
            match std::fs::remove_dir_all(dir.join(GROUP)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("cannot remove {}", dir.display()), &e))
                }
                _ => {}
            }
        }
    }
    println!("controller: {}", o.delivery(state_dir.as_deref()));
    let style = format!("{:?}", o.style()).to_lowercase();
    let title = format!(
        "heater demo on {} ({style} style, {} consumers)",
        log.describe(),
        o.consumers
    );
    let dashboard = Dashboard::new(log.clone(), GROUP, title);
    let endpoint = o.endpoint(Some(dashboard.routes()))?;
    let app = Arc::new(o.start(
        log.clone(),
        GROUP,
        OffsetReset::Earliest,
        state_dir,
        endpoint.as_ref(),
    )?);
    dashboard.attach_app(&app);
    app.wait_assigned(TIMEOUT)?;
    a.sim.duration = a.sim.duration.or(Some(Duration::from_secs(3600)));
    // Kafka's round trip is longer than the embedded log's; keep it well
    // under a measurement interval of simulated time.
    // A trip through an MQTT broker and its four bridges is longer still.
    let speedup = if a.mqtt.is_some() {
        30.0
    } else if brokers.is_kafka() {
        60.0
    } else {
        120.0
    };
    let config = a.sim.config(
        (1000, speedup),
        &o.sensor_topic,
        o.settings_topic.as_deref(),
        &o.control_topic,
    );
    let (sim, bridges) = match &a.mqtt {
        None => (a.sim.start(log.clone(), config)?, None),
        Some(url) => {
            if a.sim.keyless || o.settings_topic.is_some() {
                return Err(Error::InvalidInput(
                    "--mqtt gives each heater topics of its own: --keyless and --settings-topic do not apply".into(),
                ));
            }
            // The heaters' own side: an in-memory log behind the gateway.
            let devices: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
            for t in [o.sensor_topic.as_str(), o.control_topic.as_str()] {
                devices.ensure_topic(&TopicSpec::new(t, 1), TIMEOUT)?;
            }
            let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
            let topics = mqtt::Topics {
                sensor: &o.sensor_topic,
                control: &o.control_topic,
            };
            let bridges = mqtt::Bridges::start(url, &a.mqtt_options, &run, &devices, &log, topics)?;
            println!(
                "heaters on MQTT at {url}: {} and {}",
                mqtt::SENSOR.replace("{key}", "<id>"),
                mqtt::COMMAND.replace("{key}", "<id>")
            );
            (a.sim.start(devices, config)?, Some(bridges))
        }
    };
    dashboard.attach_sim(sim.reader());
    let stats = match &endpoint {
        Some(_) => Some(StatsFeed::start(log.clone(), &o.stats_topic)?),
        None => None,
    };
    if let Some(feed) = &stats {
        dashboard.attach_stats(feed);
    }
    let report = watch(sim, &stopper, || {
        let s = app.stats();
        format!(
            "controller on {} ({style}, {} consumers): {} records processed, {} {sent_what} sent, {} dead letters",
            log.describe(),
            app.consumers(),
            s.processed.load(Ordering::Relaxed),
            s.sent.load(Ordering::Relaxed),
            s.dead_letters.load(Ordering::Relaxed)
        )
    })?;
    let s = app.stats();
    let (processed, sent, dead) = (
        s.processed.load(Ordering::Relaxed),
        s.sent.load(Ordering::Relaxed),
        s.dead_letters.load(Ordering::Relaxed),
    );
    dashboard.detach_app(app)?.stop()?;
    if let Some(feed) = stats {
        feed.stop()?;
    }
    if let Some(b) = bridges {
        let moved = b.stop()?;
        let text: Vec<_> = moved.iter().map(|(n, c)| format!("{n}: {c}")).collect();
        println!("MQTT bridges, records moved: {}", text.join(", "));
    }
    print!("{}", view::summary(&report));
    println!("Controller {processed} records processed, {sent} {sent_what} sent, {dead} dead letters ({style} style on {})", log.describe());
    Ok(())
}

/// What an earlier run left in the sensor topic, for the first line: the
/// controller resumes from its group's committed offsets, so a restart
/// carries on rather than starting over.
fn earlier_data(log: &dyn Log, sensor: &str, fresh: bool) -> Result<String> {
    if fresh {
        return Ok("starting from empty topics (--fresh)".into());
    }
    let topic = match log.describe_topic(sensor, TIMEOUT) {
        Ok(t) => t,
        Err(Error::UnknownTopic(_)) => return Ok("no earlier data, starting afresh".into()),
        Err(e) => return Err(e),
    };
    let records: i64 = topic.partitions.iter().map(|p| p.high - p.low).sum();
    let next: i64 = topic.partitions.iter().map(|p| p.high).sum();
    let committed: i64 = log
        .committed_offsets(GROUP, sensor, TIMEOUT)?
        .iter()
        .filter_map(|o| o.committed)
        .sum();
    Ok(format!(
        "found {records} records in {sensor}; controller group {GROUP} resumes at its committed \
         offsets ({} records behind); --fresh starts over",
        (next - committed).max(0)
    ))
}
