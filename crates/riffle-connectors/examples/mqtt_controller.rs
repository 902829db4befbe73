//! The heater controller between MQTT topics, with no log in between:
//! measurements and settings from `heaters/<id>/sensor`, commands to
//! `heaters/<id>/command`. Any [`KeyedProcessor`] runs in a pipeline this
//! way; its state lives in memory (run it in an `App` on a log, bridged
//! with pipelines, for state that survives restarts).
//!
//! ```sh
//! cargo run --release -p riffle-connectors --example mqtt_controller -- mqtt://127.0.0.1:1883
//! ```
//!
//! [`KeyedProcessor`]: riffle::process::KeyedProcessor

use std::sync::atomic::AtomicBool;

use riffle::connect::{Pipeline, Processor, Transform};
use riffle_connectors::{registry, Env, Options};
use riffle_heater::controller::Controller;

fn main() -> riffle::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let env = Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log here".into()))),
    };
    let mqtt = |topic: &str| Options::from_pairs("mqtt", [("url", url.as_str()), ("topic", topic)]);
    let source = registry::source(mqtt("heaters/+/sensor"), &env)?;
    let sink = registry::sink(mqtt("heaters/{key}/command"), &env)?;
    // MQTT records have no key: take the heater id from the topic first.
    let stage = (
        Transform::new().key_from_topic_level(1),
        Processor::new(Controller::new("heatercontrol")),
    );
    let mut pipeline = Pipeline::new(source, sink).stage(stage);
    eprintln!("{}", pipeline.describe());
    let stats = pipeline.run(&AtomicBool::new(false))?;
    eprintln!("{stats:?}");
    Ok(())
}
