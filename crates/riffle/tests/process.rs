//! The processing layer on the embedded log: stateless steps, both stateful
//! styles, dead letters, and the key-independent style's parallelism and
//! commit rule.

mod conformance;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use conformance::{eventually, unique, T};
use riffle::log::embedded::EmbeddedLog;
use riffle::log::{
    ConsumerConfig, Header, Headers, Log, OutRecord, OwnedHeader, RecordRef, TopicSpec,
};
use riffle::process::{dead_letter, stateless, App, Context, KeyedProcessor, Style};
use riffle::serve::{http, Endpoint};
use riffle::stream::{Consumer, Producer};
use riffle::{Error, Result};

fn log() -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::new())
}

/// Reads every record of `topic` until `n` have arrived.
fn read_all(log: &Arc<dyn Log>, topic: &str, n: usize) -> Vec<(Option<String>, String)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let c = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new(unique("reader"), &[topic]),
        move || {
            let s = s.clone();
            move |r: RecordRef<'_>| -> Result<()> {
                s.lock().unwrap().push((
                    r.key_str().map(str::to_owned),
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
    std::thread::sleep(Duration::from_millis(100));
    c.stop();
    c.join().unwrap();
    let v = seen.lock().unwrap().clone();
    v
}

#[test]
fn stateless_map_filter_flat_map() {
    let log = log();
    for t in ["words", "upper", "long", "chars"] {
        log.create_topic(&TopicSpec::new(t, 3), T).unwrap();
    }
    let p = Producer::new(&*log).unwrap();
    for w in ["a", "bb", "ccc", "dddd"] {
        p.send("words", Some(w.as_bytes()), w.as_bytes()).unwrap();
    }
    let upper = App::new(
        "upper",
        &["words"],
        stateless::map("upper", |v| Ok(v.to_ascii_uppercase())),
    )
    .start(log.clone())
    .unwrap();
    let long = App::new(
        "long",
        &["words"],
        stateless::filter("long", |r| r.value.len() > 2),
    )
    .start(log.clone())
    .unwrap();
    let chars = App::new(
        "chars",
        &["words"],
        stateless::flat_map("chars", |r, out| {
            for c in r.value {
                out.push(stateless::Output::new(None, vec![*c]));
            }
            Ok(())
        }),
    )
    .start(log.clone())
    .unwrap();
    let mut got: Vec<_> = read_all(&log, "upper", 4)
        .into_iter()
        .map(|(k, v)| (k.unwrap(), v))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("a", "A"), ("bb", "BB"), ("ccc", "CCC"), ("dddd", "DDDD")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let mut long_words: Vec<_> = read_all(&log, "long", 2)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    long_words.sort();
    assert_eq!(long_words, ["ccc", "dddd"]);
    assert_eq!(read_all(&log, "chars", 10).len(), 10);
    for app in [upper, long, chars] {
        app.stop().unwrap();
    }
}

/// Counts per key; fails on values that are not numbers.
#[derive(Clone)]
struct Counter;

impl KeyedProcessor for Counter {
    type Input = i64;
    type State = Vec<i64>;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, i64)> {
        let key = r
            .key_str()
            .ok_or_else(|| Error::Decode("no key".into()))?
            .to_owned();
        let n = std::str::from_utf8(r.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Decode("not a number".into()))?;
        Ok((key, n))
    }

    fn process(
        &mut self,
        key: &str,
        &n: &i64,
        seen: &mut Vec<i64>,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if n < 0 {
            return Err(Error::Decode(format!("negative: {n}")));
        }
        seen.push(n);
        ctx.send(
            "counts",
            Some(key),
            format!("{}:{}", seen.len(), n).as_bytes(),
        )
    }
}

fn keyed_state_per_key(style: Style) {
    let log = log();
    log.create_topic(&TopicSpec::new("numbers", 4), T).unwrap();
    log.create_topic(&TopicSpec::new("counts", 4), T).unwrap();
    let p = Producer::new(&*log).unwrap();
    let keys = 13;
    for i in 0..390 {
        p.send(
            "numbers",
            Some(format!("k{}", i % keys).as_bytes()),
            i.to_string().as_bytes(),
        )
        .unwrap();
    }
    p.send("numbers", Some(b"k1"), b"oops").unwrap();
    p.send("numbers", Some(b"k1"), b"-5").unwrap();
    p.send("numbers", None, b"7").unwrap();
    // Metrics are process-wide: each style's app has a group of its own.
    let group = match style {
        Style::Keyed => "counter-keyed",
        Style::Actors { .. } => "counter-actors",
    };
    let endpoint = Endpoint::start("127.0.0.1:0", None).unwrap();
    let addr = endpoint.addr().to_string();
    let app = App::new(group, &["numbers"], Counter)
        .style(style)
        .consumers(2)
        .dead_letter("numbers-dlq")
        .advertise(&addr)
        .start(log.clone())
        .unwrap();
    endpoint.serve_states(app.states());
    let out = read_all(&log, "counts", 390);
    let dlq = read_all(&log, "numbers-dlq", 3);
    assert_eq!(app.stats().dead_letters.load(Ordering::Relaxed), 3);

    // The state of a key, from the consumer (or worker) that owns it.
    let get = |path: &str| {
        let (status, body) = http::get(&addr, path, T).unwrap();
        (status, String::from_utf8(body).unwrap())
    };
    let (status, body) = get("/state/k3");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expected: Vec<i64> = (0..30).map(|j| j * keys as i64 + 3).collect();
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer["state"], serde_json::json!(expected), "{body}");
    assert_eq!(answer["owner"], addr.as_str());
    let (status, body) = get("/state/no-such-key");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"state\":null"), "{body}");
    let metrics = get("/metrics").1;
    for line in [
        format!("riffle_dead_letters_total{{group=\"{group}\"}} 3\n"),
        format!("riffle_records_in_total{{group=\"{group}\",topic=\"numbers\"}} 393\n"),
        // The negative number was processed (and failed); the two others
        // could not be decoded.
        format!("riffle_processed_total{{group=\"{group}\"}} 391\n"),
    ] {
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    let lag = format!("riffle_consumer_lag{{group=\"{group}\",topic=\"numbers\",partition=");
    assert_eq!(
        metrics.matches(&lag).count(),
        4,
        "a lag per partition:\n{metrics}"
    );
    app.stop().unwrap();

    let mut per_key: BTreeMap<String, Vec<(usize, i64)>> = BTreeMap::new();
    for (k, v) in out {
        let (count, n) = v.split_once(':').unwrap();
        per_key
            .entry(k.unwrap())
            .or_default()
            .push((count.parse().unwrap(), n.parse().unwrap()));
    }
    assert_eq!(per_key.len(), keys);
    for (k, outs) in per_key {
        let k_idx: i64 = k[1..].parse().unwrap();
        let expected: Vec<(usize, i64)> = (0..30)
            .map(|j| (j as usize + 1, j * keys as i64 + k_idx))
            .collect();
        assert_eq!(outs, expected, "state of {k} counts its inputs in order");
    }
    let reasons: Vec<String> = dlq
        .iter()
        .map(|(_, v)| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not a number")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("negative")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("no key")), "{reasons:?}");
}

#[test]
fn keyed_style_keeps_state_per_key() {
    keyed_state_per_key(Style::Keyed);
}

#[test]
fn actors_style_keeps_state_per_key() {
    keyed_state_per_key(Style::Actors { workers: 3 });
}

/// Blocks on a shared barrier for keys `w*`; records when `slow` runs.
#[derive(Clone)]
struct Gate {
    barrier: Arc<Barrier>,
    release: Arc<Mutex<bool>>,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    order: Arc<Mutex<HashMap<String, Vec<i64>>>>,
}

impl KeyedProcessor for Gate {
    type Input = i64;
    type State = ();

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, i64)> {
        Ok((
            r.key_str().unwrap().to_owned(),
            std::str::from_utf8(r.value).unwrap().parse().unwrap(),
        ))
    }

    fn process(&mut self, key: &str, &n: &i64, _: &mut (), _: &mut Context<'_>) -> Result<()> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if n < 4 {
            // The first record of each of four keys meets the others here:
            // this returns only if all four are being processed at once.
            self.barrier.wait();
        }
        if key == "slow" {
            while !*self.release.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.order
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push(n);
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn actors_style_runs_one_partitions_keys_in_parallel_and_commits_safely() {
    let log = log();
    log.create_topic(&TopicSpec::new("one", 1), T).unwrap();
    let p = Producer::new(&*log).unwrap();
    // Four keys that land on four different workers of four.
    let keys: Vec<String> = {
        let mut by_worker: BTreeMap<i32, String> = BTreeMap::new();
        for i in 0.. {
            let k = format!("w{i}");
            by_worker
                .entry(riffle::log::partition_for_key(k.as_bytes(), 4))
                .or_insert(k);
            if by_worker.len() == 4 {
                break;
            }
        }
        by_worker.into_values().collect()
    };
    for (i, k) in keys.iter().enumerate() {
        p.send("one", Some(k.as_bytes()), i.to_string().as_bytes())
            .unwrap();
    }
    let gate = Gate {
        barrier: Arc::new(Barrier::new(4)),
        release: Arc::new(Mutex::new(false)),
        active: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
        order: Default::default(),
    };
    let app = App::new("gate", &["one"], gate.clone())
        .style(Style::Actors { workers: 4 })
        .start(log.clone())
        .unwrap();
    eventually(
        T,
        "the four keys of one partition met at the barrier",
        || {
            gate.order
                .lock()
                .unwrap()
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == 4
        },
    );
    assert_eq!(
        gate.peak.load(Ordering::SeqCst),
        4,
        "four records of one partition in process at once"
    );

    // A slow record at offset 4; later records of other keys finish first.
    p.send("one", Some(b"slow"), b"100").unwrap();
    for i in 0..40 {
        p.send(
            "one",
            Some(keys[i % 4].as_bytes()),
            (200 + i).to_string().as_bytes(),
        )
        .unwrap();
    }
    // The key sharing the slow key's worker waits behind it; the other
    // three keys (30 records) go on.
    eventually(
        T,
        "records after the slow one finished on the other workers",
        || {
            gate.order
                .lock()
                .unwrap()
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == 4 + 30
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let committed = log.committed_offsets("gate", "one", T).unwrap()[0].committed;
    assert!(
        committed.unwrap_or(0) <= 4,
        "committed {committed:?} past the unfinished record at offset 4"
    );
    *gate.release.lock().unwrap() = true;
    eventually(
        T,
        "everything committed once the slow record finished",
        || log.committed_offsets("gate", "one", T).unwrap()[0].committed == Some(45),
    );
    for (k, seen) in gate.order.lock().unwrap().iter() {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "per-key order kept for {k}: {seen:?}"
        );
    }
    app.stop().unwrap();
}

type WithHeaders = (Option<String>, String, Vec<OwnedHeader>);

/// Like [`read_all`], keeping each record's headers.
fn read_with_headers(log: &Arc<dyn Log>, topic: &str, n: usize) -> Vec<WithHeaders> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let c = Consumer::spawn(
        log.clone(),
        ConsumerConfig::new(unique("reader"), &[topic]),
        move || {
            let s = s.clone();
            move |r: RecordRef<'_>| -> Result<()> {
                s.lock().unwrap().push((
                    r.key_str().map(str::to_owned),
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
    std::thread::sleep(Duration::from_millis(100));
    c.stop();
    c.join().unwrap();
    let mut v = seen.lock().unwrap().clone();
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

fn hdr(name: &str, value: Option<&str>) -> OwnedHeader {
    OwnedHeader::new(name, value)
}

/// Sends each number on with the input's headers plus `echo: <n>`, after
/// reading them from its context; fails on negative numbers.
#[derive(Clone)]
struct Echo;

impl KeyedProcessor for Echo {
    type Input = i64;
    type State = ();

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, i64)> {
        let n = std::str::from_utf8(r.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Decode("not a number".into()))?;
        Ok((r.key_str().unwrap_or_default().to_owned(), n))
    }

    fn process(&mut self, key: &str, &n: &i64, _: &mut (), ctx: &mut Context<'_>) -> Result<()> {
        if n < 0 {
            return Err(Error::Decode(format!("negative: {n}")));
        }
        let echo = n.to_string();
        let mut headers: Vec<Header<'_>> = ctx.headers().iter().collect();
        headers.push(Header::new("echo", Some(echo.as_bytes())));
        let trace = ctx.headers().last("trace").and_then(|h| h.value_str());
        let value = format!("{n} trace={}", trace.unwrap_or("-"));
        ctx.send_with_headers("echoed", Some(key), value.as_bytes(), &headers[..])
    }
}

fn headers_reach_processors_outputs_and_dead_letters(style: Style) {
    let log = log();
    for t in ["in", "echoed", "mapped", "replaced", "in-dlq"] {
        log.create_topic(&TopicSpec::new(t, 2), T).unwrap();
    }
    let p = Producer::new(&*log).unwrap();
    let rich = [
        Header::new("trace", Some(&b"t1"[..])),
        Header::new("dup", Some(&b"x"[..])),
        Header::new("dup", Some(&b"y"[..])),
        Header::new("null", None),
        Header::new("bin", Some(&[0xff, 0][..])),
    ];
    let send = |key: &str, value: &str, headers: &[Header<'_>]| {
        p.send_record(
            OutRecord::new("in", Some(key.as_bytes()), value.as_bytes()).with_headers(headers),
        )
        .unwrap()
    };
    send("a", "1", &rich);
    send("b", "2", &[]);
    send("c", "oops", &[Header::new("trace", Some(&b"t3"[..]))]);
    send("d", "-4", &[Header::new("trace", Some(&b"t4"[..]))]);
    let echo = App::new("echo", &["in"], Echo)
        .style(style)
        .retries(0)
        .dead_letter("in-dlq")
        .start(log.clone())
        .unwrap();
    let mapped = App::new(
        "mapped",
        &["in"],
        stateless::map("mapped", |v| Ok(v.to_ascii_uppercase())),
    )
    .style(style)
    .start(log.clone())
    .unwrap();
    let replaced = App::new(
        "replaced",
        &["in"],
        stateless::flat_map("replaced", |r, out| {
            let from = r.headers.len().to_string();
            out.push(
                stateless::Output::new(r.key.map(<[u8]>::to_vec), r.value.to_vec())
                    .with_headers(vec![hdr("had", Some(&from))]),
            );
            Ok(())
        }),
    )
    .style(style)
    .start(log.clone())
    .unwrap();

    let rich_owned: Vec<OwnedHeader> = rich.iter().map(Header::to_owned).collect();
    let with_echo = |n: &str| [rich_owned.clone(), vec![hdr("echo", Some(n))]].concat();
    assert_eq!(
        read_with_headers(&log, "echoed", 2),
        [
            (Some("a".into()), "1 trace=t1".into(), with_echo("1")),
            (
                Some("b".into()),
                "2 trace=-".into(),
                vec![hdr("echo", Some("2"))]
            ),
        ],
        "the processor saw the input's headers and sent them on"
    );
    assert_eq!(
        read_with_headers(&log, "mapped", 4),
        [
            (Some("a".into()), "1".into(), rich_owned.clone()),
            (Some("b".into()), "2".into(), vec![]),
            (
                Some("c".into()),
                "OOPS".into(),
                vec![hdr("trace", Some("t3"))]
            ),
            (
                Some("d".into()),
                "-4".into(),
                vec![hdr("trace", Some("t4"))]
            ),
        ],
        "map keeps the input's headers"
    );
    let replaced_seen: Vec<_> = read_with_headers(&log, "replaced", 4)
        .into_iter()
        .map(|(_, _, h)| h)
        .collect();
    assert_eq!(
        replaced_seen,
        [
            vec![hdr("had", Some("5"))],
            vec![hdr("had", Some("0"))],
            vec![hdr("had", Some("1"))],
            vec![hdr("had", Some("1"))],
        ],
        "a step's own headers replace the input's"
    );

    let dlq = read_with_headers(&log, "in-dlq", 2);
    for ((key, envelope, headers), (want_key, trace, reason)) in dlq
        .iter()
        .zip([("c", "t3", "not a number"), ("d", "t4", "negative: -4")])
    {
        assert_eq!(key.as_deref(), Some(want_key));
        let env: serde_json::Value = serde_json::from_str(envelope).unwrap();
        assert!(env["error"].as_str().unwrap().contains(reason), "{env}");
        let h = Headers::from(headers);
        let value = |name: &str| h.last(name).and_then(|h| h.value_str()).map(str::to_owned);
        assert_eq!(
            headers[0],
            hdr("trace", Some(trace)),
            "original headers first"
        );
        assert_eq!(value(dead_letter::TOPIC_HEADER).as_deref(), Some("in"));
        assert_eq!(
            value(dead_letter::PARTITION_HEADER),
            env["partition"].as_i64().map(|p| p.to_string())
        );
        assert_eq!(
            value(dead_letter::OFFSET_HEADER),
            env["offset"].as_i64().map(|o| o.to_string())
        );
        assert_eq!(
            value(dead_letter::REASON_HEADER).as_deref(),
            env["error"].as_str(),
            "the reason header is the envelope's error"
        );
        assert_eq!(headers.len(), 5);
    }
    for app in [echo, mapped, replaced] {
        app.stop().unwrap();
    }
}

#[test]
fn keyed_style_passes_headers_on() {
    headers_reach_processors_outputs_and_dead_letters(Style::Keyed);
}

#[test]
fn actors_style_passes_headers_on() {
    headers_reach_processors_outputs_and_dead_letters(Style::Actors { workers: 2 });
}

/// What [`Bracketed`] saw: batches begun and records processed, per
/// thread, and anything out of place.
#[derive(Default)]
struct Brackets {
    /// Threads with a batch open now.
    open: Vec<std::thread::ThreadId>,
    batches: usize,
    records: usize,
    wrong: Vec<String>,
}

/// Checks that every `process` runs inside a batch begun on its own thread
/// and that batches neither nest nor end twice; fails on negative numbers.
#[derive(Clone, Default)]
struct Bracketed(Arc<Mutex<Brackets>>);

impl KeyedProcessor for Bracketed {
    type Input = i64;
    type State = i64;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, i64)> {
        Counter.decode(r)
    }

    fn begin_batch(&mut self) {
        let mut b = self.0.lock().unwrap();
        let me = std::thread::current().id();
        if b.open.contains(&me) {
            b.wrong.push(format!("{me:?} began a batch inside another"));
        }
        b.open.push(me);
        b.batches += 1;
    }

    fn end_batch(&mut self) {
        let mut b = self.0.lock().unwrap();
        let me = std::thread::current().id();
        match b.open.iter().position(|t| *t == me) {
            Some(i) => {
                b.open.swap_remove(i);
            }
            None => b
                .wrong
                .push(format!("{me:?} ended a batch it had not begun")),
        }
    }

    fn process(&mut self, key: &str, &n: &i64, sum: &mut i64, ctx: &mut Context<'_>) -> Result<()> {
        {
            let mut b = self.0.lock().unwrap();
            if !b.open.contains(&std::thread::current().id()) {
                b.wrong.push(format!("{key}={n} processed outside a batch"));
            }
            b.records += 1;
        }
        if n < 0 {
            return Err(Error::Decode(format!("negative: {n}")));
        }
        *sum += n;
        ctx.send("sums", Some(key), sum.to_string().as_bytes())
    }
}

/// Records reach `process` in batches: begun and ended on the thread that
/// processes them, many records each, all ended once the app stops; a
/// failing record inside a batch is dead-lettered alone.
fn batches_bracket_records(style: Style) {
    let log = log();
    log.create_topic(&TopicSpec::new("numbers", 4), T).unwrap();
    log.create_topic(&TopicSpec::new("sums", 4), T).unwrap();
    let p = Producer::new(&*log).unwrap();
    for i in 0..400 {
        let n = if i == 200 { -1 } else { 1 };
        p.send(
            "numbers",
            Some(format!("k{}", i % 8).as_bytes()),
            n.to_string().as_bytes(),
        )
        .unwrap();
    }
    let seen = Bracketed::default();
    let app = App::new("bracketed", &["numbers"], seen.clone())
        .style(style)
        .consumers(2)
        .retries(0)
        .dead_letter("numbers-dlq")
        .start(log.clone())
        .unwrap();
    let sums = read_all(&log, "sums", 399);
    assert_eq!(read_all(&log, "numbers-dlq", 1).len(), 1);
    // Waiting for more records, no thread is inside a batch.
    std::thread::sleep(Duration::from_millis(300));
    let idle = seen.0.lock().unwrap().open.clone();
    assert!(idle.is_empty(), "batches open while idle: {idle:?}");
    app.stop().unwrap();
    let b = seen.0.lock().unwrap();
    assert!(b.wrong.is_empty(), "{:?}", b.wrong);
    assert!(b.open.is_empty(), "batches left open: {:?}", b.open);
    assert_eq!(b.records, 400);
    assert!(
        b.batches >= 1 && b.batches <= 100,
        "{} batches for 400 records",
        b.batches
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    for (k, v) in sums {
        last.insert(k.unwrap(), v.parse().unwrap());
    }
    // k0 lost the failed record's -1 and nothing else.
    assert_eq!(last["k0"], 49);
    assert!((1..8).all(|k| last[&format!("k{k}")] == 50), "{last:?}");
}

#[test]
fn keyed_style_processes_in_batches() {
    batches_bracket_records(Style::Keyed);
}

#[test]
fn actors_style_processes_in_batches() {
    batches_bracket_records(Style::Actors { workers: 3 });
}
