//! `riffle demo heater`: the heater simulator and the controller together,
//! live in the terminal. The README's main job.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use riffle::log::OffsetReset;
use riffle::Result;
use riffle_heater::view;

use crate::backend::BrokerArgs;
use crate::heater::controller::ControllerOptions;
use crate::heater::simulate::SimOptions;
use crate::heater::watch::watch;
use crate::util;

#[derive(Args)]
pub struct HeaterDemoArgs {
    #[command(flatten)]
    controller: ControllerOptions,
    #[command(flatten)]
    sim: SimOptions,
}

pub fn run(brokers: &BrokerArgs, mut a: HeaterDemoArgs) -> Result<()> {
    let log = brokers.any()?;
    if a.sim.keyless
        && a.controller.repartition.is_none()
        && matches!(a.controller.style(), riffle::process::Style::Keyed)
    {
        // Key-less heaters spread over partitions; the keyed style must see
        // each heater in one partition.
        a.controller.repartition = Some("sensor-by-id".into());
    }
    let o = &a.controller;
    // The demo owns its topics: start from empty ones.
    let topics = o
        .inputs()
        .into_iter()
        .chain([o.control_topic.as_str(), o.dead_letter.as_str()]);
    for t in topics.chain(o.repartition.as_deref()) {
        log.recreate_topic(
            &riffle::log::TopicSpec::new(t, o.partitions),
            Duration::from_secs(30),
        )?;
    }
    let stopper = util::signal_stopper();
    let app = o.start(log.clone(), "heater-demo-controller", OffsetReset::Earliest)?;
    app.wait_assigned(Duration::from_secs(30))?;
    a.sim.duration = a.sim.duration.or(Some(Duration::from_secs(3600)));
    // Kafka's round trip is longer than the embedded log's; keep it well
    // under a measurement interval of simulated time.
    let speedup = if brokers.brokers.is_some() {
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
    let sim = a.sim.start(log.clone(), config)?;
    let style = format!("{:?}", o.style()).to_lowercase();
    let report = watch(sim, &stopper, || {
        let s = app.stats();
        format!(
            "controller on {} ({style}, {} consumers): {} records processed, {} commands sent, {} dead letters",
            log.describe(),
            o.consumers,
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
    app.stop()?;
    print!("{}", view::summary(&report));
    println!("Controller {processed} records processed, {sent} commands sent, {dead} dead letters ({style} style on {})", log.describe());
    Ok(())
}
