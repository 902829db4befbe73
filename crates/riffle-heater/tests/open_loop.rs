//! Open loop: one recorded input topic, fed to the controller in both
//! styles; each heater must receive the same command sequence from both, on
//! the embedded log and on Kafka.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::{App, Style};
use riffle::stream::{Consumer, Producer};
use riffle_heater::controller::Controller;
use riffle_heater::messages::{measurement_json, setting_json, Command, Setting};

const T: Duration = Duration::from_secs(60);

/// Records a sensor topic: heaters drifting around settings that change now
/// and then, interleaved as a real topic would be.
fn record_input(log: &dyn Log, topic: &str, heaters: usize, steps: usize) -> usize {
    let p = Producer::new(log).unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut temps: Vec<f64> = (0..heaters).map(|_| rng.f64() * 10.0 + 40.0).collect();
    let mut sent = 0;
    for step in 0..steps {
        for (h, t) in temps.iter_mut().enumerate() {
            let id = format!("heater-{h:04}");
            if step % 25 == 0 {
                let s = Setting {
                    temperature: (40 + rng.i32(0..10)) as f64,
                    up_delta: 1.0,
                    down_delta: 1.0,
                };
                p.send(topic, Some(id.as_bytes()), &setting_json(&s))
                    .unwrap();
                sent += 1;
            }
            *t += rng.f64() - 0.5;
            p.send(topic, Some(id.as_bytes()), &measurement_json(*t))
                .unwrap();
            sent += 1;
        }
    }
    p.flush(T).unwrap();
    sent
}

fn commands(
    log: &Arc<dyn Log>,
    topic: &str,
    settle: impl Fn() -> bool,
) -> BTreeMap<String, Vec<Command>> {
    let got: Arc<Mutex<BTreeMap<String, Vec<Command>>>> = Default::default();
    let g = got.clone();
    let c = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new(format!("read-{topic}"), &[topic]),
        move || {
            let g = g.clone();
            move |r: RecordRef<'_>| -> riffle::Result<()> {
                g.lock()
                    .unwrap()
                    .entry(r.key_str().unwrap().to_owned())
                    .or_default()
                    .push(Command::from_json(r.value).unwrap());
                Ok(())
            }
        },
    )
    .unwrap();
    // Read until the count has been stable for a while after the apps finished.
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n: usize = got.lock().unwrap().values().map(Vec::len).sum();
        if n != last.0 {
            last = (n, Instant::now());
        }
        if settle() && n > 0 && last.1.elapsed() > Duration::from_millis(1500) {
            break;
        }
        assert!(start.elapsed() < T, "commands kept changing");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.stop();
    c.join().unwrap();
    let r = got.lock().unwrap().clone();
    r
}

fn same_commands_from_both_styles(log: Arc<dyn Log>) {
    let id = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let input = format!("sensor-{id}");
    log.create_topic(&TopicSpec::new(&input, 6), T).unwrap();
    let total = record_input(&*log, &input, 300, 60);
    let mut results = Vec::new();
    for (name, style) in [
        ("keyed", Style::Keyed),
        ("actors", Style::Actors { workers: 4 }),
    ] {
        let out = format!("control-{name}-{id}");
        log.create_topic(&TopicSpec::new(&out, 6), T).unwrap();
        let app = App::new(
            &format!("ctl-{name}-{id}"),
            &[&input],
            Controller::new(&out),
        )
        .style(style)
        .consumers(3)
        .start(log.clone())
        .unwrap();
        let done = || app.stats().processed.load(Ordering::Relaxed) as usize >= total;
        let cmds = commands(&log, &out, done);
        app.stop().unwrap();
        results.push(cmds);
    }
    assert_eq!(results[0].len(), 300, "every heater got commands");
    let n: usize = results[0].values().map(Vec::len).sum();
    assert!(n > 400, "a meaningful number of commands: {n}");
    assert_eq!(
        results[0], results[1],
        "keyed and actors styles send the same commands per heater"
    );
}

#[test]
fn embedded_log_both_styles_agree() {
    same_commands_from_both_styles(Arc::new(EmbeddedLog::new()));
}

#[test]
fn kafka_both_styles_agree() {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh");
    same_commands_from_both_styles(Arc::new(KafkaLog::connect(brokers, vec![]).unwrap()));
}
