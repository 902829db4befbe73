//! Apps on a real Apache Kafka broker: what the broker itself refuses.
//!
//! `RIFFLE_TEST_BROKERS` names the broker (see `kafka_log.rs`).

mod conformance;

use std::sync::Arc;

use conformance::{eventually, unique, T};
use riffle::log::kafka::KafkaLog;
use riffle::log::{
    ConsumerConfig, Header, Headers, Log, OutRecord, OwnedHeader, RecordRef, TopicSpec,
};
use riffle::process::dead_letter;
use riffle::process::{stateless, App, Style};
use riffle::stream::{Consumer, Producer};
use riffle::Result;

fn log() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

/// Every record of `topic` (keys and values as text, and headers) once `n`
/// are there.
fn read(log: &Arc<dyn Log>, topic: &str, n: usize) -> Vec<(String, String, Vec<OwnedHeader>)> {
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
                    r.headers.to_vec(),
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
            let n = i.to_string();
            let key = format!("k{i}");
            let value = vec![b'x'; size];
            let headers = [Header::new("n", Some(n.as_bytes()))];
            p.send_record(
                OutRecord::new(&input, Some(key.as_bytes()), &value).with_headers(&headers),
            )
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
        assert!(outs.iter().all(|(_, v, _)| v.len() == 10));
        assert!(
            outs.iter()
                .all(|(k, _, h)| h == &[OwnedHeader::new("n", Some(&k[1..]))]),
            "outputs keep the input's headers"
        );
        let dead = read(&log, &dlq, 4);
        for (key, v, headers) in &dead {
            assert_eq!(
                headers[0],
                OwnedHeader::new("n", Some(&key[1..])),
                "the refused output's headers are kept"
            );
            let h = Headers::from(headers);
            let value = |name| h.last(name).and_then(|h| h.value_str());
            assert_eq!(value(dead_letter::TOPIC_HEADER), Some(output.as_str()));
            assert!(
                value(dead_letter::REASON_HEADER).is_some_and(|r| r.contains("cannot deliver")),
                "{headers:?}"
            );
            assert_eq!(
                value(dead_letter::OFFSET_HEADER),
                None,
                "an output has no offset"
            );
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
