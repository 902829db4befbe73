//! Tables and joins: a stream joined with a co-partitioned table (rows
//! set, replaced and deleted by tombstones), a global table every process
//! holds in full, and a windowed join of two streams; on the embedded log
//! and on a real Kafka broker (`RIFFLE_TEST_BROKERS`).

mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conformance::{committed_per_key, eventually, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{Log, OutRecord, RecordRef, TopicSpec};
use riffle::process::join::WindowJoin;
use riffle::process::table::{GlobalTable, TableJoin};
use riffle::process::{App, Guarantee, Style};
use riffle::stream::Producer;
use riffle::{Error, Result};

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::Decode(e.to_string()))
}

fn compacted(log: &dyn Log, name: &str, partitions: i32) {
    let mut spec = TopicSpec::new(name, partitions);
    spec.configs
        .push(("cleanup.policy".into(), "compact".into()));
    log.create_topic(&spec, T).unwrap();
}

fn read(log: &Arc<dyn Log>, topic: &str, n: usize) -> BTreeMap<String, Vec<String>> {
    committed_per_key(log, topic, n)
}

fn send(p: &Producer, topic: &str, key: &str, value: &str) {
    p.send(topic, Some(key.as_bytes()), value.as_bytes())
        .unwrap();
    p.flush(T).unwrap();
}

fn table_join(log: Arc<dyn Log>, style: Style, guarantee: Guarantee) {
    let (orders, customers, out) = (unique("orders"), unique("customers"), unique("out"));
    log.create_topic(&TopicSpec::new(&orders, 2), T).unwrap();
    log.create_topic(&TopicSpec::new(&out, 2), T).unwrap();
    compacted(&*log, &customers, 2);
    let to = out.clone();
    let join = TableJoin::new(
        &customers,
        text,
        |r: &RecordRef<'_>| Ok((r.key_str().unwrap_or_default().to_owned(), text(r.value)?)),
        move |key: &str, order: &String, name: Option<&String>, ctx| {
            let line = format!("{order} for {}", name.map_or("nobody", String::as_str));
            ctx.send(&to, Some(key), line.as_bytes())
        },
    );
    let app = App::new(&unique("join"), &[&orders, &customers], join)
        .style(style)
        .guarantee(guarantee)
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let p = Producer::new(&*log).unwrap();
    // Rows and events are joined in the order they arrive, and the two
    // topics arrive independently: each step waits for the one before.
    let processed = |n: u64| {
        eventually(T, "records processed", || {
            app.stats()
                .processed
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        })
    };
    send(&p, &customers, "c1", "Ada");
    send(&p, &customers, "c2", "Grace");
    processed(2);
    send(&p, &orders, "c1", "tea");
    send(&p, &orders, "c3", "cake");
    processed(4);
    send(&p, &customers, "c1", "Ada L.");
    // A tombstone deletes c2's row.
    p.send_record(OutRecord::tombstone(&customers, b"c2", None))
        .unwrap();
    p.flush(T).unwrap();
    processed(6);
    send(&p, &orders, "c1", "jam");
    send(&p, &orders, "c2", "bread");
    let got = read(&log, &out, 4);
    app.stop().unwrap();
    let want: BTreeMap<String, Vec<String>> = [
        ("c1", vec!["tea for Ada", "jam for Ada L."]),
        ("c2", vec!["bread for nobody"]),
        ("c3", vec!["cake for nobody"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(got, want);
}

fn global_table(log: Arc<dyn Log>) {
    let limits = unique("limits");
    compacted(&*log, &limits, 3);
    let p = Producer::new(&*log).unwrap();
    for i in 0..30 {
        p.send(
            &limits,
            Some(format!("k{i}").as_bytes()),
            i.to_string().as_bytes(),
        )
        .unwrap();
    }
    p.flush(T).unwrap();
    let parse = |v: &[u8]| {
        text(v)?
            .parse::<i64>()
            .map_err(|e| Error::Decode(e.to_string()))
    };
    let table = GlobalTable::start(&*log, &limits, parse).unwrap();
    assert_eq!(table.len(), 30, "read to the end before it returns");
    assert_eq!(table.get("k7"), Some(7));
    let copy = table.clone();
    send(&p, &limits, "k7", "70");
    send(&p, &limits, "k1", "not a number");
    p.send_record(OutRecord::tombstone(&limits, b"k8", None))
        .unwrap();
    p.flush(T).unwrap();
    eventually(T, "updates followed", || {
        copy.get("k7") == Some(70) && copy.get("k8").is_none()
    });
    assert_eq!(copy.get("k1"), Some(1), "an undecodable row is skipped");
    assert_eq!(copy.len(), 29);
}

fn window_join(log: Arc<dyn Log>, style: Style, guarantee: Guarantee) {
    let (clicks, views, out, dlq) = (
        unique("clicks"),
        unique("views"),
        unique("out"),
        unique("dlq"),
    );
    for t in [&clicks, &views, &out] {
        log.create_topic(&TopicSpec::new(t, 2), T).unwrap();
    }
    // Values are "<event time> <label>".
    fn decode(r: &RecordRef<'_>) -> Result<(String, String, Option<i64>)> {
        let v = text(r.value)?;
        let (t, label) = v.split_once(' ').ok_or_else(|| Error::Decode(v.clone()))?;
        let t = t.parse().map_err(|_| Error::Decode(v.clone()))?;
        Ok((
            r.key_str().unwrap_or_default().to_owned(),
            label.to_owned(),
            Some(t),
        ))
    }
    let to = out.clone();
    let join = WindowJoin::new(
        &clicks,
        Duration::from_millis(1000),
        decode,
        decode,
        move |key, l: &String, r: &String, ctx| {
            ctx.send(&to, Some(key), format!("{l}+{r}").as_bytes())
        },
    );
    let app = App::new(&unique("wjoin"), &[&clicks, &views], join)
        .style(style)
        .guarantee(guarantee)
        .dead_letter(&dlq)
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let p = Producer::new(&*log).unwrap();
    // The two topics arrive independently: each record waits for the one
    // before to be processed, so that the order is the one written here.
    let mut n = 0;
    let mut step = |topic: &str, value: &str| {
        send(&p, topic, "u", value);
        n += 1;
        eventually(T, "records processed", || {
            app.stats()
                .processed
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        });
    };
    step(&clicks, "1000 c1");
    step(&views, "1500 v1");
    step(&views, "5000 v2");
    step(&clicks, "5200 c2");
    step(&views, "5900 v3");
    // Far ahead: everything of u before is past the window, and a click
    // at 1200 comes too late.
    step(&views, "20000 v4");
    step(&clicks, "1200 c3");
    let got = read(&log, &out, 3);
    let dead = read(&log, &dlq, 1);
    app.stop().unwrap();
    assert_eq!(got["u"], ["c1+v1", "c2+v2", "c2+v3"]);
    assert_eq!(dead.get("u").map(Vec::len), Some(1), "{dead:?}");
    assert!(dead["u"][0].contains("late"), "{dead:?}");
}

fn kafka() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

fn embedded() -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::new())
}

const ACTORS: Style = Style::Actors { workers: 2 };

#[test]
fn embedded_tables_and_joins() {
    table_join(embedded(), Style::Keyed, Guarantee::ExactlyOnce);
    table_join(embedded(), ACTORS, Guarantee::AtLeastOnce);
    global_table(embedded());
    window_join(embedded(), Style::Keyed, Guarantee::AtLeastOnce);
    window_join(embedded(), ACTORS, Guarantee::ExactlyOnce);
}

#[test]
fn kafka_table_join() {
    table_join(kafka(), Style::Keyed, Guarantee::ExactlyOnce);
}

#[test]
fn kafka_global_table() {
    global_table(kafka());
}

#[test]
fn kafka_window_join() {
    window_join(kafka(), Style::Keyed, Guarantee::ExactlyOnce);
}
