//! The heater simulator in a closed loop with a stand-in controller, on the
//! embedded log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use riffle::log::embedded::EmbeddedLog;
use riffle::log::{ConsumerConfig, Log, OffsetReset, RecordRef, TopicSpec};
use riffle::stream::{Consumer, Producer};
use riffle::Error;
use riffle_heater::messages::{decode_sensor, Command, SensorMessage, Setting, TIME_HEADER};
use riffle_heater::simulator::{LoopProgress, Pace, Phase, SimConfig, SimReport, Simulator};

const SENSOR: &str = "sensor";
const CONTROL: &str = "heatercontrol";

fn log_with_topics(topics: &[(&str, i32)]) -> Arc<dyn Log> {
    let log = EmbeddedLog::new();
    for &(name, partitions) in topics {
        log.create_topic(&TopicSpec::new(name, partitions), Duration::from_secs(1))
            .unwrap();
    }
    Arc::new(log)
}

/// What the stand-in controller saw and did.
#[derive(Default)]
struct ControllerLog {
    /// Commands sent, per heater id.
    sent: HashMap<String, u64>,
    keyed: u64,
    keyless: u64,
    /// The simulated times of each heater's measurements, from their time
    /// header; `None` where it is missing.
    times: HashMap<String, Vec<Option<i64>>>,
}

/// The chapter's controller, minimal: per heater, ignore measurements before
/// the first setting; `m > Td + up` → OFF, `m < Td - down` → ON; send a
/// command only when it differs from the last one sent.
fn controller(log: &Arc<dyn Log>, topics: &[&str]) -> (Consumer, Arc<Mutex<ControllerLog>>) {
    let out = Producer::new(&**log).unwrap();
    let seen = Arc::new(Mutex::new(ControllerLog::default()));
    let mut config = ConsumerConfig::new("stand-in-controller", topics);
    config.offset_reset = OffsetReset::Earliest;
    let s = seen.clone();
    let consumer = Consumer::spawn(log.clone(), config, move || {
        let out = out.clone();
        let seen = s.clone();
        let mut state: HashMap<String, (Option<Setting>, Option<Command>)> = HashMap::new();
        move |r: RecordRef<'_>| -> riffle::Result<()> {
            let (id, msg) = decode_sensor(r.key, r.value).map_err(Error::Decode)?;
            let mut seen = seen.lock().unwrap();
            if let SensorMessage::Measurement(_) = msg {
                let header = r.headers.last(TIME_HEADER);
                let at = header.and_then(|h| h.value_str()?.parse().ok());
                seen.times.entry(id.clone()).or_default().push(at);
            }
            if r.key.is_some() {
                seen.keyed += 1;
            } else {
                seen.keyless += 1;
            }
            let (setting, last) = state.entry(id.clone()).or_default();
            let command = match (msg, *setting) {
                (SensorMessage::Setting(s), _) => {
                    *setting = Some(s);
                    None
                }
                (SensorMessage::Measurement(_), None) => None,
                (SensorMessage::Measurement(m), Some(s)) if m > s.temperature + s.up_delta => {
                    Some(Command::Off)
                }
                (SensorMessage::Measurement(m), Some(s)) if m < s.temperature - s.down_delta => {
                    Some(Command::On)
                }
                (SensorMessage::Measurement(_), Some(_)) => None,
            };
            if let Some(c) = command.filter(|c| Some(*c) != *last) {
                *last = Some(c);
                *seen.sent.entry(id.clone()).or_default() += 1;
                out.send(CONTROL, Some(id.as_bytes()), c.to_json())?;
            }
            Ok(())
        }
    })
    .unwrap();
    (consumer, seen)
}

/// Every command the controller sent reached its heater and no other: a
/// heater applied at most what was sent to it, and missed at most the one
/// still in flight when the run ended.
fn assert_commands_reach_their_heater(report: &SimReport, seen: &ControllerLog) {
    let mut total = 0;
    for h in &report.heaters {
        let sent = seen.sent.get(&h.id).copied().unwrap_or(0);
        total += sent;
        assert!(
            h.commands_applied <= sent && sent <= h.commands_applied + 1,
            "{}: applied {} of {sent} sent",
            h.id,
            h.commands_applied
        );
    }
    assert!(total > 0);
    assert_eq!(
        seen.sent.len(),
        report.heaters.len(),
        "a command for every heater"
    );
}

#[test]
fn two_hundred_heaters_stay_in_band_for_two_simulated_hours() {
    let log = log_with_topics(&[(SENSOR, 8), (CONTROL, 4)]);
    let (controller, seen) = controller(&log, &[SENSOR]);
    let mut config = SimConfig::new(200);
    config.speedup = 300.0;
    config.seed = 42;
    config.duration = Some(Duration::from_secs(2 * 3600));
    let sim = Simulator::start(log.clone(), config.clone()).unwrap();
    sim.wait_running(Duration::from_secs(10)).unwrap();

    // Commands for nobody, and a bad one for a real heater: counted, never
    // applied.
    let p = Producer::new(&*log).unwrap();
    p.send(CONTROL, Some(b"heater-9999"), Command::On.to_json())
        .unwrap();
    p.send(CONTROL, Some(b"somebody-else"), Command::Off.to_json())
        .unwrap();
    p.send(CONTROL, None, Command::Off.to_json()).unwrap();
    p.send(CONTROL, Some(b"heater-0003"), br#"{"control":7}"#)
        .unwrap();

    std::thread::sleep(Duration::from_millis(300));
    let live = sim.snapshot();
    assert_eq!(live.phase, Phase::Running);
    assert_eq!(live.heaters.len(), 200);
    assert_eq!(live.heaters[17].id, "heater-0017");
    assert_eq!(live.history.len(), config.display);
    assert!(!live.history[0].samples.is_empty());
    assert!(live.sim_time > Duration::ZERO && live.counters.measurements > 0);

    let report = sim.join().unwrap();
    controller.stop();
    controller.join().unwrap();
    let seen = seen.lock().unwrap();

    assert_eq!(report.simulated, Duration::from_secs(7200));
    assert_eq!(report.heaters.len(), 200);
    let c = report.counters;
    assert_eq!(c.commands_ignored, 3, "{c:?}");
    assert_eq!(c.commands_malformed, 1, "{c:?}");
    assert_eq!(report.heaters[3].commands_malformed, 1);
    assert_eq!(
        c.commands_received,
        c.commands_applied + c.commands_ignored + c.commands_malformed
    );
    assert_commands_reach_their_heater(&report, &seen);
    // Every record the heaters sent is in the log, keyed.
    let info = log.describe_topic(SENSOR, Duration::from_secs(1)).unwrap();
    let in_log: i64 = info.partitions.iter().map(|p| p.high).sum();
    assert_eq!(in_log as u64, c.records_sent());
    assert_eq!(seen.keyed, c.records_sent());
    assert_eq!(seen.keyless, 0);

    eprintln!(
        "{:?}; violations {}, unsettled {}",
        report.counters,
        report.violations(),
        report.unsettled()
    );
    for h in &report.heaters {
        // A measurement every 10 s from a phase in [0, 10): 720 in 7200 s
        // (721 if the phase is exactly 0); the setting at the start and
        // every 600 s after a phase in [0, 600): 12 or 13.
        assert!(
            (720..=721).contains(&h.measurements),
            "{}: {}",
            h.id,
            h.measurements
        );
        assert!((12..=13).contains(&h.settings), "{}: {}", h.id, h.settings);
        // Starting ON at 42 °C, the band [44, 46] is reached after 2 min.
        let first = h.first_settle.expect("settled").as_secs_f64();
        assert!((first - 120.0).abs() < 1e-6, "{}: {first}", h.id);
        assert_eq!(h.violations, 0, "{h:?} (tolerance {})", report.tolerance);
        // Between measurements the temperature runs on until the command
        // arrives: at most one more interval's change while the loop's
        // latency stays below an interval.
        assert!(
            h.max_excursion <= 2.0 * report.tolerance,
            "{}: {}",
            h.id,
            h.max_excursion
        );
        assert!(h.switches >= 10, "{}: {} switches", h.id, h.switches);
    }
    // Each measurement carries its simulated time: 10 s apart, over the
    // two simulated hours, whatever the wall clock did.
    for (id, times) in &seen.times {
        let times: Vec<i64> = times.iter().map(|t| t.expect("a time header")).collect();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == 10_000),
            "{id}: {times:?}"
        );
        let span = times[times.len() - 1] - times[0];
        assert!((7_190_000..=7_200_000).contains(&span), "{id}: {span}");
    }
    assert_eq!(seen.times.len(), 200);
    assert_eq!(report.unsettled(), 0);
    assert_eq!(report.violations(), 0);
    let in_band = report.in_band_fraction().unwrap();
    assert!(in_band > 0.85, "in band {in_band}");
    assert!(report.reaction_max.unwrap() < Duration::from_secs(30));
}

#[test]
fn keyless_heaters_put_their_id_in_the_body() {
    let log = log_with_topics(&[(SENSOR, 4), ("settings", 2), (CONTROL, 3)]);
    let (controller, seen) = controller(&log, &[SENSOR, "settings"]);
    let mut config = SimConfig::new(40);
    config.speedup = 300.0;
    config.seed = 7;
    config.keyless = true;
    config.settings_topic = Some("settings".into());
    config.id_prefix = "h".into();
    config.duration = Some(Duration::from_secs(30 * 60));
    let report = Simulator::start(log.clone(), config)
        .unwrap()
        .join()
        .unwrap();
    controller.stop();
    controller.join().unwrap();
    let seen = seen.lock().unwrap();

    let c = report.counters;
    assert_eq!(seen.keyed, 0);
    assert_eq!(seen.keyless, c.records_sent());
    let count = |topic| -> u64 {
        let info = log.describe_topic(topic, Duration::from_secs(1)).unwrap();
        info.partitions.iter().map(|p| p.high as u64).sum()
    };
    assert_eq!(count(SENSOR), c.measurements);
    assert_eq!(count("settings"), c.settings);
    assert_eq!(report.heaters[5].id, "h0005");
    assert_commands_reach_their_heater(&report, &seen);
    assert_eq!(c.commands_ignored + c.commands_malformed, 0);
    assert_eq!(report.unsettled(), 0);
    for h in &report.heaters {
        assert!((h.first_settle.unwrap().as_secs_f64() - 120.0).abs() < 1e-6);
    }
}

#[test]
fn a_stopper_ends_an_unlimited_run_and_unknown_topics_are_errors() {
    let log = log_with_topics(&[(SENSOR, 1), (CONTROL, 1)]);
    let mut config = SimConfig::new(3);
    config.speedup = 60.0;
    let sim = Simulator::start(log.clone(), config.clone()).unwrap();
    sim.wait_running(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sim.stop();
    let report = sim.join().unwrap();
    // About 18 simulated seconds: each heater said its setting and measured.
    assert!(report.simulated > Duration::from_secs(10), "{report:?}");
    assert!(report.simulated < Duration::from_secs(120), "{report:?}");
    assert!(report
        .heaters
        .iter()
        .all(|h| h.settings == 1 && h.measurements >= 1));
    // No controller: nothing received.
    assert_eq!(report.counters.commands_received, 0);

    let mut bad = config.clone();
    bad.control_topic = "no-such-topic".into();
    assert_eq!(
        Simulator::start(log.clone(), bad).err(),
        Some(Error::UnknownTopic("no-such-topic".into()))
    );
    let mut bad = config;
    bad.settings_topic = Some("nor-this".into());
    assert!(matches!(
        Simulator::start(log, bad),
        Err(Error::UnknownTopic(t)) if t == "nor-this"
    ));
}

/// Far too fast for the loop, a run paced by the controller holds its clock
/// whenever the loop is behind, and every heater stays in its band; a loop
/// that never catches up fails the run instead of hanging it.
#[test]
fn a_paced_run_holds_the_clock_for_the_controller() {
    let log = log_with_topics(&[(SENSOR, 4), (CONTROL, 4)]);
    let (controller, seen) = controller(&log, &[SENSOR]);
    let mut config = SimConfig::new(100);
    // 2 simulated hours in about a second of wall time, unpaced: a
    // millisecond of loop latency is 20 simulated seconds.
    config.speedup = 7200.0;
    config.seed = 11;
    config.duration = Some(Duration::from_secs(2 * 3600));
    let s = seen.clone();
    let mut pace = Pace::new(move || {
        let seen = s.lock().unwrap();
        LoopProgress {
            consumed: seen.keyed + seen.keyless,
            sent: seen.sent.values().sum(),
        }
    });
    pace.lead = Duration::from_secs(2);
    config.pace = Some(pace);
    let report = Simulator::start(log.clone(), config.clone())
        .unwrap()
        .join()
        .unwrap();
    controller.stop();
    controller.join().unwrap();
    assert_commands_reach_their_heater(&report, &seen.lock().unwrap());
    assert_eq!(report.unsettled(), 0);
    assert_eq!(report.violations(), 0, "violations in a paced run");
    let reaction = report.reaction_max.expect("commands flowed");
    assert!(reaction <= Duration::from_secs(2), "{reaction:?}");
    assert!(
        report.effective_speedup() < config.speedup,
        "the clock held: ×{}",
        report.effective_speedup()
    );

    // Nobody consumes: the clock stops at the lead and the run fails.
    let log = log_with_topics(&[(SENSOR, 1), (CONTROL, 1)]);
    let mut pace = Pace::new(LoopProgress::default);
    pace.timeout = Duration::from_millis(500);
    config.pace = Some(pace);
    let started = std::time::Instant::now();
    let err = Simulator::start(log, config).unwrap().join().unwrap_err();
    assert!(
        matches!(&err, Error::Timeout(m) if m.contains("did not catch up") && m.contains("finished 0 of the")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
