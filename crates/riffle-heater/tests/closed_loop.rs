//! Closed loop: 1,000 simulated heaters and Riffle's controller, through the
//! log, for several simulated hours, in both styles, on the embedded log and
//! on Kafka. After its first settling every heater must report temperatures
//! within its band widened by one measurement interval's change.
//!
//! That holds as long as every command arrives within a third of a
//! measurement interval (3.3 simulated seconds) of the measurement that
//! caused it. The runs are paced by the controller ([`Pace`]): simulated
//! time holds whenever the loop is more than 2 simulated seconds behind, so
//! a busy machine (a CPU hog, a pause of the broker's JVM) makes a run
//! slower, not wrong, and what is checked is the loop's logic and delivery.
//! The loop's latency is measured by the benchmarks, not here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, OffsetReset, TopicSpec};
use riffle::process::{App, Style};
use riffle_heater::controller::Controller;
use riffle_heater::simulator::{LoopProgress, Pace, SimConfig, Simulator};

const HEATERS: usize = 1000;
const HOURS: u64 = 3;
const SPEEDUP_EMBEDDED: f64 = 120.0;
const SPEEDUP_KAFKA: f64 = 50.0;
/// How far the loop may fall behind before simulated time holds.
const LEAD: Duration = Duration::from_secs(2);

/// One run at a time: each takes the machine's cores to itself, and
/// running them together would measure the machine, not the loop.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn closed_loop(log: Arc<dyn Log>, style: Style, speedup: f64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let id = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (sensor, control) = (format!("sensor-{id}"), format!("control-{id}"));
    for t in [&sensor, &control] {
        log.create_topic(&TopicSpec::new(t, 10), Duration::from_secs(30))
            .unwrap();
    }
    let app = App::new(
        &format!("controller-{id}"),
        &[&sensor],
        Controller::new(&control),
    )
    .style(style)
    .consumers(2)
    .dead_letter(&format!("dlq-{id}"))
    .offset_reset(OffsetReset::Earliest)
    .start(log.clone())
    .unwrap();
    app.wait_assigned(Duration::from_secs(30)).unwrap();
    let mut config = SimConfig::new(HEATERS);
    config.sensor_topic = sensor.clone();
    config.control_topic = control.clone();
    config.speedup = speedup;
    config.seed = 2026;
    config.duration = Some(Duration::from_secs(HOURS * 3600));
    let stats = app.stats().clone();
    let mut pace = Pace::new(move || {
        let consumed =
            stats.processed.load(Ordering::Acquire) + stats.dead_letters.load(Ordering::Relaxed);
        LoopProgress {
            consumed,
            sent: stats.sent.load(Ordering::Relaxed),
        }
    });
    pace.lead = LEAD;
    config.pace = Some(pace);
    let report = Simulator::start(log.clone(), config)
        .unwrap()
        .join()
        .unwrap();
    let dead = app.stats().dead_letters.load(Ordering::Relaxed);
    app.stop().unwrap();
    // The figures for a reader of a failure; the CLI renders the full
    // summary, which this crate leaves to it.
    eprintln!(
        "{} {style:?}\n{:?}; violations {}, in band {:?}, max excursion {:.2} °C",
        log.describe(),
        report.counters,
        report.violations(),
        report.in_band_fraction(),
        report.max_excursion()
    );

    assert_eq!(report.heaters.len(), HEATERS);
    assert!(
        report.simulated >= Duration::from_secs(HOURS * 3600 - 1),
        "{:?}",
        report.simulated
    );
    assert_eq!(dead, 0, "the heaters' records are all valid");
    assert_eq!(report.unsettled(), 0, "every heater reached its band");
    let reaction = report.reaction_max.expect("commands flowed");
    assert!(
        reaction <= LEAD,
        "loop latency {reaction:?} of simulated time is within the pace's lead"
    );
    for h in &report.heaters {
        assert_eq!(
            h.violations, 0,
            "{} left its band after settling: {h:?}",
            h.id
        );
        assert!(
            h.switches >= 10,
            "{} was controlled: {} switches",
            h.id,
            h.switches
        );
    }
    assert_eq!(report.violations(), 0);
}

fn kafka() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    // A control loop wants latency more than batching: librdkafka's default
    // 5 ms linger, paid on both legs of the loop, would be most of it.
    Arc::new(KafkaLog::connect(brokers, vec![("linger.ms".into(), "2".into())]).unwrap())
}

#[test]
fn embedded_keyed() {
    closed_loop(Arc::new(EmbeddedLog::new()), Style::Keyed, SPEEDUP_EMBEDDED);
}

#[test]
fn embedded_actors() {
    closed_loop(
        Arc::new(EmbeddedLog::new()),
        Style::Actors { workers: 4 },
        SPEEDUP_EMBEDDED,
    );
}

#[test]
fn kafka_keyed() {
    closed_loop(kafka(), Style::Keyed, SPEEDUP_KAFKA);
}

#[test]
fn kafka_actors() {
    closed_loop(kafka(), Style::Actors { workers: 4 }, SPEEDUP_KAFKA);
}
