//! Windowed aggregations against a reference computed here from the same
//! events: tumbling, hopping and session windows over out-of-order
//! event-time input, with one partition that gets no records and one that
//! falls quiet (its last windows close by the idle timeout), on the
//! embedded log and on a real Kafka broker (`RIFFLE_TEST_BROKERS`).

mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conformance::{committed_per_key, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::kafka::KafkaLog;
use riffle::log::{partition_for_key, Log, RecordRef, TopicSpec};
use riffle::process::window::{Stats, Windowed, Windows};
use riffle::process::{App, EventTime, Guarantee, Style};
use riffle::stream::Producer;
use riffle::Error;

const PARTITIONS: i32 = 3;
/// How far out of order events arrive.
const DISORDER: i64 = 300;
const GRACE: i64 = 100;

/// A window's result: (start, end, count, min, max, sum in thousandths).
type Result6 = (i64, i64, u64, i64, i64, i64);

/// Keys in partitions 0 and 1 only: partition 2 gets nothing.
fn keys() -> Vec<String> {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| partition_for_key(k.as_bytes(), PARTITIONS) != 2)
        .take(8)
        .collect()
}

/// Events (key, event time, value) in the order they are sent: per key,
/// times move on by 0-120 ms, and each is sent up to `DISORDER` ms late
/// (keys interleaved, as they would arrive).
fn events(seed: u64) -> Vec<(String, i64, i64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut all = Vec::new();
    for key in keys() {
        // Keys of partition 1 stop early: it falls quiet.
        let n = if partition_for_key(key.as_bytes(), PARTITIONS) == 1 {
            40
        } else {
            120
        };
        let mut t = 1_000_000 + rng.i64(0..500);
        let evs: Vec<(i64, i64, i64)> = (0..n)
            .map(|_| {
                t += rng.i64(0..120);
                (t + rng.i64(0..DISORDER), t, rng.i64(-5000..5000))
            })
            .collect();
        all.extend(
            evs.into_iter()
                .map(|(arrives, t, v)| (arrives, key.clone(), t, v)),
        );
    }
    // Sent in order of when they "arrive": at most DISORDER late.
    all.sort();
    all.into_iter().map(|(_, k, t, v)| (k, t, v)).collect()
}

/// What each window kind should give, computed from all events at once.
fn reference(windows: Windows, events: &[(String, i64, i64)]) -> BTreeMap<String, Vec<Result6>> {
    let mut per_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, t, v) in events {
        per_key.entry(k.clone()).or_default().push((*t, *v));
    }
    let ms = |d: Duration| d.as_millis() as i64;
    let mut out = BTreeMap::new();
    for (key, mut evs) in per_key {
        evs.sort();
        let mut spans: Vec<(i64, i64)> = Vec::new();
        match windows {
            Windows::Tumbling { size } | Windows::Hopping { size, .. } => {
                let advance = match windows {
                    Windows::Hopping { advance, .. } => ms(advance),
                    _ => ms(size),
                };
                let (first, last) = (evs[0].0, evs[evs.len() - 1].0);
                let mut start = (first - ms(size)).div_euclid(advance) * advance;
                while start <= last {
                    spans.push((start, start + ms(size)));
                    start += advance;
                }
            }
            Windows::Session { gap } => {
                let mut start = evs[0].0;
                for pair in evs.windows(2) {
                    if pair[1].0 - pair[0].0 > ms(gap) {
                        spans.push((start, pair[0].0 + ms(gap)));
                        start = pair[1].0;
                    }
                }
                spans.push((start, evs[evs.len() - 1].0 + ms(gap)));
            }
        }
        let results: Vec<Result6> = spans
            .into_iter()
            .filter_map(|(s, e)| {
                let vs: Vec<i64> = evs
                    .iter()
                    .filter(|(t, _)| *t >= s && *t < e)
                    .map(|x| x.1)
                    .collect();
                (!vs.is_empty()).then(|| {
                    let (min, max) = (*vs.iter().min().unwrap(), *vs.iter().max().unwrap());
                    (s, e, vs.len() as u64, min, max, vs.iter().sum::<i64>())
                })
            })
            .collect();
        out.insert(key, results);
    }
    out
}

fn aggregate(log: Arc<dyn Log>, windows: Windows, style: Style, guarantee: Guarantee) {
    let (input, output, dlq) = (unique("measures"), unique("stats"), unique("dlq"));
    for t in [&input, &output] {
        log.create_topic(&TopicSpec::new(t, PARTITIONS), T).unwrap();
    }
    // Values in thousandths, sent as numbers: sums stay exact in f64.
    let windowed = Windowed::new(windows, Stats, &output, |r: &RecordRef<'_>| {
        let text = std::str::from_utf8(r.value).map_err(|e| Error::Decode(e.to_string()))?;
        let (t, v) = text
            .split_once(' ')
            .ok_or_else(|| Error::Decode(text.into()))?;
        let parse = |s: &str| s.parse::<i64>().map_err(|e| Error::Decode(e.to_string()));
        let key = r.key_str().ok_or_else(|| Error::Decode("no key".into()))?;
        Ok((key.to_owned(), parse(v)? as f64, Some(parse(t)?)))
    })
    .unwrap()
    .grace(Duration::from_millis(GRACE as u64));
    let app = App::new(&unique("windows"), &[&input], windowed)
        .style(style)
        .guarantee(guarantee)
        .consumers(2)
        .dead_letter(&dlq)
        .event_time(EventTime {
            out_of_orderness: Duration::from_millis(DISORDER as u64),
            // Well above any pause of the producer on a busy machine: a
            // partition idle for this long moves on, and what comes after
            // is late.
            idle_timeout: Some(Duration::from_secs(3)),
            allowed_lateness: None,
        })
        .start(log.clone())
        .unwrap();
    app.wait_assigned(T).unwrap();
    let evs = events(7);
    let expected = reference(windows, &evs);
    let n: usize = expected.values().map(Vec::len).sum();
    let producer = Producer::new(&*log).unwrap();
    for (k, t, v) in &evs {
        producer
            .send(&input, Some(k.as_bytes()), format!("{t} {v}").as_bytes())
            .unwrap();
    }
    producer.flush(T).unwrap();

    let results = committed_per_key(&log, &output, n);
    app.stop().unwrap();

    let mut got: BTreeMap<String, Vec<Result6>> = BTreeMap::new();
    for text in results.values().flatten() {
        let r: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(r["final"], true, "{r}");
        let i = |f: &str| r[f].as_f64().unwrap() as i64;
        got.entry(r["key"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                i("start"),
                i("end"),
                r["count"].as_u64().unwrap(),
                i("min"),
                i("max"),
                i("sum"),
            ));
        let mean = r["mean"].as_f64().unwrap();
        assert!((mean - r["sum"].as_f64().unwrap() / r["count"].as_f64().unwrap()).abs() < 1e-9);
    }
    for v in got.values_mut() {
        v.sort();
    }
    assert_eq!(got.len(), expected.len(), "keys with results");
    for (key, want) in &expected {
        assert_eq!(
            got.get(key),
            Some(want),
            "windows of {key} ({windows:?}, {style:?}, {guarantee:?})"
        );
    }
}

fn kafka() -> Arc<dyn Log> {
    let brokers = std::env::var("RIFFLE_TEST_BROKERS")
        .expect("RIFFLE_TEST_BROKERS is not set: run scripts/test.sh, or scripts/kafka.sh start and export it");
    Arc::new(KafkaLog::connect(brokers, vec![]).expect("test broker reachable"))
}

fn embedded() -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::new())
}

const ACTORS: Style = Style::Actors { workers: 3 };

fn tumbling() -> Windows {
    Windows::tumbling(Duration::from_millis(1000))
}

fn hopping() -> Windows {
    Windows::hopping(Duration::from_millis(1000), Duration::from_millis(250))
}

fn session() -> Windows {
    Windows::session(Duration::from_millis(80))
}

#[test]
fn reference_windows_cover_every_event() {
    let evs = events(7);
    for w in [tumbling(), session()] {
        let counted: u64 = reference(w, &evs).values().flatten().map(|r| r.2).sum();
        assert_eq!(counted as usize, evs.len(), "{w:?}");
    }
    let hopped: u64 = reference(hopping(), &evs)
        .values()
        .flatten()
        .map(|r| r.2)
        .sum();
    assert_eq!(
        hopped as usize,
        4 * evs.len(),
        "each event in four hopping windows"
    );
}

#[test]
fn embedded_windows_keyed() {
    for w in [tumbling(), hopping(), session()] {
        aggregate(embedded(), w, Style::Keyed, Guarantee::ExactlyOnce);
    }
}

#[test]
fn embedded_windows_actors() {
    for w in [tumbling(), hopping(), session()] {
        aggregate(embedded(), w, ACTORS, Guarantee::AtLeastOnce);
    }
}

#[test]
fn kafka_windows_keyed_exactly_once() {
    for w in [tumbling(), hopping(), session()] {
        aggregate(kafka(), w, Style::Keyed, Guarantee::ExactlyOnce);
    }
}

#[test]
fn kafka_windows_actors_at_least_once() {
    for w in [tumbling(), session()] {
        aggregate(kafka(), w, ACTORS, Guarantee::AtLeastOnce);
    }
}
