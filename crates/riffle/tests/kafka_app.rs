//! Apps on a real Apache Kafka broker: what the broker itself refuses.
//!
//! `RIFFLE_TEST_BROKERS` names the broker (see `kafka_log.rs`).

mod conformance;

use std::sync::Arc;

use conformance::{eventually, unique, T};
use riffle::log::kafka::KafkaLog;
use riffle::log::{ConsumerConfig, Log, RecordRef, TopicSpec};
use riffle::process::{stateless, App, Style};
use riffle::stream::{Consumer, Producer};
use riffle::Result;

fn log() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

/// Every record of `topic` (keys and values as text) once `n` are there.
fn read(log: &Arc<dyn Log>, topic: &str, n: usize) -> Vec<(String, String)> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let c = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new(unique("reader"), &[topic]),
        move || {
            let s = s.clone();
            move |r: RecordRef<'_>| -> Result<()> {
                s.lock().unwrap().push((
                    r.key_str().unwrap_or_default().to_owned(),
                    String::from_utf8_lossy(r.value).into_owned(),
                ));
                Ok(())
            }
        },
    )
    .unwrap();
    eventually(T, &format!("{n} records on {topic}"), || {
        seen.lock().unwrap().len() >= n
    });
    c.stop();
    c.join().unwrap();
    let v = seen.lock().unwrap().clone();
    v
}

#[test]
fn outputs_the_broker_refuses_become_dead_letters_and_nothing_stalls() {
    for style in [Style::Keyed, Style::Actors { workers: 2 }] {
        let log = log();
        let (input, output, dlq) = (unique("in"), unique("out"), unique("dlq"));
        log.create_topic(&TopicSpec::new(&input, 2), T).unwrap();
        // The broker refuses records larger than this; the client would
        // send up to 1 MB, so only the broker can say no.
        let mut spec = TopicSpec::new(&output, 2);
        spec.configs
            .push(("max.message.bytes".into(), "2000".into()));
        log.create_topic(&spec, T).unwrap();
        let p = Producer::new(&*log).unwrap();
        for i in 0..40 {
            let size = if i % 10 == 3 { 5000 } else { 10 };
            p.send(&input, Some(format!("k{i}").as_bytes()), &vec![b'x'; size])
                .unwrap();
        }
        p.flush(T).unwrap();
        let group = unique("big");
        let app = App::new(
            &group,
            &[&input],
            stateless::map(&output, |v| Ok(v.to_vec())),
        )
        .style(style)
        .dead_letter(&dlq)
        .start(log.clone())
        .unwrap();
        let outs = read(&log, &output, 36);
        assert!(outs.iter().all(|(_, v)| v.len() == 10));
        let dead = read(&log, &dlq, 4);
        for (key, v) in &dead {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            assert_eq!(v["topic"], output.as_str(), "{v}");
            assert!(
                v["error"].as_str().unwrap().contains("cannot deliver"),
                "{v}"
            );
            assert_eq!(
                v["value"].as_str().unwrap().len(),
                5000,
                "the bytes are kept"
            );
            assert!(["k3", "k13", "k23", "k33"].contains(&key.as_str()));
        }
        eventually(T, "every input offset committed", || {
            log.committed_offsets(&group, &input, T)
                .unwrap()
                .iter()
                .map(|o| o.committed.unwrap_or(0))
                .sum::<i64>()
                == 40
        });
        app.stop().unwrap();
    }
}
