//! `riffle heater simulate`.

use std::sync::Arc;
use std::time::Duration;

use crate::heater::view;
use clap::Args;
use riffle::log::{Log, TopicSpec};
use riffle::Result;
use riffle_heater::messages::{CONTROL_TOPIC, SENSOR_TOPIC};
use riffle_heater::simulator::{SimConfig, SimHandle, Simulator};

use super::watch::watch;
use crate::backend::LogArgs;
use crate::util;

/// Flags shared by the simulator command and the heater demo.
#[derive(Args, Clone)]
pub struct SimOptions {
    /// Heaters to simulate [default: 100; the demo: 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub heaters: Option<u32>,
    /// Simulated seconds per wall-clock second [default: 1; the demo: 120 embedded, 60 on Kafka, 30 over MQTT].
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Seed of the heaters' phases and setting changes; the same seed gives the same inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated time to run, e.g. 2h [default: until Ctrl-C; the demo: 1h].
    #[arg(long, value_parser = util::parse_duration)]
    pub duration: Option<Duration>,
    /// Send key-less records with the heater id in the body (the book's round-robin heater).
    #[arg(long)]
    pub keyless: bool,
}

impl SimOptions {
    /// The simulator's configuration; `defaults` are the heater count and
    /// speedup when not given.
    pub fn config(
        &self,
        defaults: (u32, f64),
        sensor: &str,
        settings: Option<&str>,
        control: &str,
    ) -> SimConfig {
        let mut c = SimConfig::new(self.heaters.unwrap_or(defaults.0) as usize);
        c.speedup = self.speedup.unwrap_or(defaults.1);
        c.seed = self.seed;
        c.duration = self.duration;
        c.keyless = self.keyless;
        c.sensor_topic = sensor.into();
        c.settings_topic = settings.map(Into::into);
        c.control_topic = control.into();
        c
    }

    pub fn start(&self, log: Arc<dyn Log>, config: SimConfig) -> Result<SimHandle> {
        let sim = Simulator::start(log, config)?;
        sim.wait_running(Duration::from_secs(30))?;
        Ok(sim)
    }
}

#[derive(Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    sim: SimOptions,
    /// Topic the heaters send measurements (and settings) to.
    #[arg(long, default_value = SENSOR_TOPIC)]
    sensor_topic: String,
    /// Send settings to this topic instead.
    #[arg(long)]
    settings_topic: Option<String>,
    /// Topic the heaters take commands from.
    #[arg(long, default_value = CONTROL_TOPIC)]
    control_topic: String,
    /// Partitions of topics created because they are missing.
    #[arg(long, short = 'p', default_value_t = 10)]
    partitions: i32,
}

pub fn run(brokers: &LogArgs, a: SimulateArgs) -> Result<()> {
    let log = brokers.kafka(
        "heater simulate",
        "`riffle demo heater` runs the heaters and the controller in one",
    )?;
    let topics = [
        Some(&a.sensor_topic),
        a.settings_topic.as_ref(),
        Some(&a.control_topic),
    ];
    for t in topics.into_iter().flatten() {
        log.ensure_topic(&TopicSpec::new(t, a.partitions), Duration::from_secs(30))?;
    }
    let stopper = util::signal_stopper();
    let config = a.sim.config(
        (100, 1.0),
        &a.sensor_topic,
        a.settings_topic.as_deref(),
        &a.control_topic,
    );
    let sim = a.sim.start(log.clone(), config)?;
    let report = watch(sim, &stopper, || format!("heaters on {}", log.describe()))?;
    print!("{}", view::summary(&report));
    Ok(())
}
