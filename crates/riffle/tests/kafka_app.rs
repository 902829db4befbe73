//! Apps on a real Apache Kafka broker: what the broker itself refuses, under
//! each guarantee.
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
use riffle::process::{stateless, App, Guarantee, Style};
use riffle::stream::{Consumer, Producer};
use riffle::Result;

fn log() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

type Read = Vec<(String, String, Vec<OwnedHeader>)>;

/// Every record of `topic` (keys and values as text, and headers) once `n`
/// are there.
fn read(log: &Arc<dyn Log>, topic: &str, n: usize) -> Read {
    read_with(log, topic, n, false)
}

/// Every committed record of `topic` once `n` are there, and a while
/// longer, so that a record written twice would show.
fn read_committed(log: &Arc<dyn Log>, topic: &str, n: usize) -> Read {
    read_with(log, topic, n, true)
}

fn read_with(log: &Arc<dyn Log>, topic: &str, n: usize, committed: bool) -> Read {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut cfg = ConsumerConfig::new(unique("reader"), &[topic]);
    cfg.read_committed = committed;
    let c = Consumer::spawn(log.clone(), cfg, move || {
        let s = s.clone();
        move |r: RecordRef<'_>| -> Result<()> {
            s.lock().unwrap().push((
                r.key_str().unwrap_or_default().to_owned(),
                String::from_utf8_lossy(r.value).into_owned(),
                r.headers.to_vec(),
            ));
            Ok(())
        }
    })
    .unwrap();
    eventually(T, &format!("{n} records on {topic}"), || {
        seen.lock().unwrap().len() >= n
    });
    if committed {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
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

/// The keys of `records`, sorted.
fn keys(records: &Read) -> Vec<String> {
    let mut keys: Vec<String> = records.iter().map(|(k, _, _)| k.clone()).collect();
    keys.sort();
    keys
}

fn input_keys(
    range: std::ops::Range<usize>,
    big: impl Fn(usize) -> bool,
) -> (Vec<String>, Vec<String>) {
    let (mut small, mut large): (Vec<String>, Vec<String>) = Default::default();
    for i in range {
        let key = format!("k{i:02}");
        if big(i) {
            large.push(key)
        } else {
            small.push(key)
        }
    }
    small.sort();
    large.sort();
    (small, large)
}

/// Under exactly-once, an output over its topic's `max.message.bytes`
/// spoils the transaction it is sent in; the transaction is aborted, and
/// the replay sends that output to the dead-letter topic instead, in the
/// transaction that commits the rest. Each output is in its topic or the
/// dead letters exactly once, and later records of the partition go on
/// (a later output too large is dead-lettered before it is sent).
#[test]
fn exactly_once_dead_letters_an_output_the_broker_refuses_once_and_goes_on() {
    for style in [Style::Keyed, Style::Actors { workers: 2 }] {
        let log = log();
        let (input, output, dlq) = (unique("in"), unique("out"), unique("dlq"));
        log.create_topic(&TopicSpec::new(&input, 2), T).unwrap();
        let mut spec = TopicSpec::new(&output, 2);
        spec.configs
            .push(("max.message.bytes".into(), "2000".into()));
        log.create_topic(&spec, T).unwrap();
        let p = Producer::new(&*log).unwrap();
        let big = |i: usize| i % 10 == 3;
        let feed = |range: std::ops::Range<usize>| {
            for i in range {
                let size = if big(i) { 5000 } else { 10 };
                let key = format!("k{i:02}");
                let headers = [Header::new("n", Some(key.as_bytes()))];
                let value = vec![b'x'; size];
                p.send_record(
                    OutRecord::new(&input, Some(key.as_bytes()), &value).with_headers(&headers),
                )
                .unwrap();
            }
            p.flush(T).unwrap();
        };
        feed(0..40);
        let group = unique("eos-big");
        let app = App::new(
            &group,
            &[&input],
            stateless::map(&output, |v| Ok(v.to_vec())),
        )
        .style(style)
        .guarantee(Guarantee::ExactlyOnce)
        .dead_letter(&dlq)
        .start(log.clone())
        .unwrap();
        let committed = |n: i64| {
            eventually(T, &format!("{n} input offsets committed"), || {
                log.committed_offsets(&group, &input, T)
                    .unwrap()
                    .iter()
                    .map(|o| o.committed.unwrap_or(0))
                    .sum::<i64>()
                    == n
            })
        };
        committed(40);
        let (small, large) = input_keys(0..40, big);
        let outs = read_committed(&log, &output, 36);
        assert_eq!(keys(&outs), small, "{style:?}: each output once");
        let dead = read_committed(&log, &dlq, 4);
        assert_eq!(
            keys(&dead),
            large,
            "{style:?}: each refused output dead-lettered once"
        );
        for (key, v, headers) in &dead {
            let h = Headers::from(headers);
            assert_eq!(
                h.iter()
                    .next()
                    .filter(|h| h.name == "n")
                    .and_then(|h| h.value_str()),
                Some(key.as_str()),
                "the output's headers are kept"
            );
            let value = |name| h.last(name).and_then(|h| h.value_str());
            assert_eq!(value(dead_letter::TOPIC_HEADER), Some(output.as_str()));
            let reason = value(dead_letter::REASON_HEADER).unwrap_or_default();
            assert!(
                reason.contains("cannot deliver") && reason.contains("too large"),
                "{reason}"
            );
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            assert_eq!(v["topic"], output.as_str(), "{v}");
            assert_eq!(
                v["value"].as_str().unwrap().len(),
                5000,
                "the bytes are kept"
            );
        }
        // Later records, one of them too large: the partition goes on.
        feed(40..60);
        committed(60);
        let (small, large) = input_keys(0..60, big);
        assert_eq!(keys(&read_committed(&log, &output, 54)), small, "{style:?}");
        assert_eq!(keys(&read_committed(&log, &dlq, 6)), large, "{style:?}");
        app.stop().unwrap();
    }
}

/// A record over the producer's own `message.max.bytes` is refused before
/// it is sent: the output goes to the dead letters, cut to what the
/// producer can send, with its length, and the transaction goes on.
#[test]
fn an_output_over_the_producers_limit_is_dead_lettered_cut_to_fit() {
    let log = log();
    let brokers = std::env::var("RIFFLE_TEST_BROKERS").unwrap();
    let limited: Arc<dyn Log> = Arc::new(
        KafkaLog::connect(brokers, vec![("message.max.bytes".into(), "100000".into())]).unwrap(),
    );
    let (input, output, dlq) = (unique("in"), unique("out"), unique("dlq"));
    log.create_topic(&TopicSpec::new(&input, 2), T).unwrap();
    log.create_topic(&TopicSpec::new(&output, 2), T).unwrap();
    let p = Producer::new(&*log).unwrap();
    for i in 0..20 {
        let value: &[u8] = if i == 7 { b"big" } else { b"small" };
        p.send(&input, Some(format!("k{i:02}").as_bytes()), value)
            .unwrap();
    }
    p.flush(T).unwrap();
    let group = unique("eos-local");
    let app = App::new(
        &group,
        &[&input],
        stateless::map(&output, |v| {
            Ok(match v {
                b"big" => vec![b'y'; 200_000],
                other => other.to_vec(),
            })
        }),
    )
    .guarantee(Guarantee::ExactlyOnce)
    .dead_letter(&dlq)
    .start(limited)
    .unwrap();
    let outs = read_committed(&log, &output, 19);
    assert_eq!(outs.len(), 19);
    let dead = read_committed(&log, &dlq, 1);
    assert_eq!(keys(&dead), ["k07"]);
    let v: serde_json::Value = serde_json::from_str(&dead[0].1).unwrap();
    assert_eq!(v["value_bytes"], 200_000, "{v}");
    let kept = v["value"].as_str().unwrap().len();
    assert!((50_000..100_000).contains(&kept), "{kept} bytes kept");
    assert!(
        v["error"].as_str().unwrap().contains("message.max.bytes"),
        "{v}"
    );
    eventually(T, "every input offset committed", || {
        log.committed_offsets(&group, &input, T)
            .unwrap()
            .iter()
            .map(|o| o.committed.unwrap_or(0))
            .sum::<i64>()
            == 20
    });
    app.stop().unwrap();
}
