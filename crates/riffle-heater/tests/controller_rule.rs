//! The controller against a reference model of the rule in docs/heater.md, on
//! random settings and measurement sequences: directly, and through the
//! runtime in both styles on the embedded log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use riffle::log::embedded::EmbeddedLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::{App, Style};
use riffle::stream::{Consumer, Producer};
use riffle_heater::controller::{Controller, ControllerState};
use riffle_heater::messages::{measurement_json, setting_json, Command, SensorMessage, Setting};

/// The rule, written from its statement rather than from the controller:
/// walk the messages keeping the latest setting and the last command sent.
fn reference(messages: &[SensorMessage]) -> Vec<Command> {
    let mut setting: Option<(f64, f64, f64)> = None;
    let mut sent: Vec<Command> = Vec::new();
    for m in messages {
        match *m {
            SensorMessage::Setting(s) => setting = Some((s.temperature, s.up_delta, s.down_delta)),
            SensorMessage::Measurement(x) => {
                let Some((td, up, down)) = setting else {
                    continue;
                };
                let command = if x > td + up {
                    Command::Off
                } else if x < td - down {
                    Command::On
                } else {
                    continue;
                };
                if sent.last() != Some(&command) {
                    sent.push(command);
                }
            }
        }
    }
    sent
}

fn message() -> impl Strategy<Value = SensorMessage> {
    prop_oneof![
        4 => (30.0..60.0f64).prop_map(|m| SensorMessage::Measurement((m * 10.0).round() / 10.0)),
        1 => (35.0..55.0f64, 0.0..3.0f64, 0.0..3.0f64).prop_map(|(t, u, d)| SensorMessage::Setting(Setting {
            temperature: t.round(),
            up_delta: (u * 10.0).round() / 10.0,
            down_delta: (d * 10.0).round() / 10.0,
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn controller_follows_the_rule(messages in proptest::collection::vec(message(), 0..200)) {
        let mut state = ControllerState::default();
        let sent: Vec<Command> = messages.iter().filter_map(|m| state.apply(*m)).collect();
        prop_assert_eq!(sent, reference(&messages));
    }
}

fn encode(m: &SensorMessage) -> Vec<u8> {
    match m {
        SensorMessage::Measurement(x) => measurement_json(*x),
        SensorMessage::Setting(s) => setting_json(s),
    }
}

/// Runs the controller app over `inputs` (heater id → messages) and returns
/// the commands each heater received, in order.
fn run_pipeline(
    style: Style,
    inputs: &BTreeMap<String, Vec<SensorMessage>>,
) -> BTreeMap<String, Vec<Command>> {
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::new());
    let t = Duration::from_secs(10);
    log.create_topic(&TopicSpec::new("sensor", 3), t).unwrap();
    log.create_topic(&TopicSpec::new("heatercontrol", 3), t)
        .unwrap();
    let p = Producer::new(&*log).unwrap();
    let longest = inputs.values().map(Vec::len).max().unwrap_or(0);
    // Interleave heaters, as a real topic would.
    for i in 0..longest {
        for (id, msgs) in inputs {
            if let Some(m) = msgs.get(i) {
                p.send("sensor", Some(id.as_bytes()), &encode(m)).unwrap();
            }
        }
    }
    let expected: usize = inputs.values().map(|m| reference(m).len()).sum();
    let app = App::new("controller", &["sensor"], Controller::new("heatercontrol"))
        .style(style)
        .consumers(2)
        .start(log.clone())
        .unwrap();
    let got: Arc<Mutex<BTreeMap<String, Vec<Command>>>> = Default::default();
    let g = got.clone();
    let reader = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new("reader", &["heatercontrol"]),
        move || {
            let g = g.clone();
            move |r: RecordRef<'_>| -> riffle::Result<()> {
                let c = Command::from_json(r.value).unwrap();
                g.lock()
                    .unwrap()
                    .entry(r.key_str().unwrap().to_owned())
                    .or_default()
                    .push(c);
                Ok(())
            }
        },
    )
    .unwrap();
    let start = Instant::now();
    let processed = || {
        app.stats()
            .processed
            .load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    let total: usize = inputs.values().map(Vec::len).sum();
    while (processed() < total
        || got.lock().unwrap().values().map(Vec::len).sum::<usize>() < expected)
        && start.elapsed() < t
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    app.stop().unwrap();
    reader.stop();
    reader.join().unwrap();
    let r = got.lock().unwrap().clone();
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn both_styles_send_the_reference_commands(
        heaters in proptest::collection::btree_map("h[0-9]{1,3}", proptest::collection::vec(message(), 1..60), 1..12)
    ) {
        let expected: BTreeMap<String, Vec<Command>> = heaters
            .iter()
            .map(|(id, m)| (id.clone(), reference(m)))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        for style in [Style::Keyed, Style::Actors { workers: 3 }] {
            prop_assert_eq!(&run_pipeline(style, &heaters), &expected, "style {:?}", style);
        }
    }
}
