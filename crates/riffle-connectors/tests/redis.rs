//! The Redis Streams connector against a real redis-server.
#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, program, scratch_dir, ClosedPort, Server};
use riffle::connect::{Pipeline, Record, Sink, Source};
use riffle_connectors::redis::{self, RedisSource};

/// A redis-server that writes every change to its append-only file before
/// answering, so that a restart keeps everything it confirmed.
fn redis_server(name: &str) -> Server {
    let mut s = Server::new(
        "redis-server",
        program("redis-server", "redis-server"),
        &[
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--dir",
            "{dir}",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        free_port(),
        scratch_dir(name),
    );
    s.start();
    s
}

fn url(s: &Server) -> String {
    format!("redis://{}", s.address())
}

fn record(topic: &str, i: usize) -> Record {
    let mut r = Record::new(
        topic,
        Some(format!("k{i}").as_bytes()),
        format!("{{\"n\":{i},\"bin\":\"\\r\\n\"}}"),
    );
    r.headers
        .push(("origin".into(), format!("h{i}").into_bytes()));
    r
}

/// Polls (and acknowledges) until `n` records came or `within` passed.
fn collect(source: &mut RedisSource, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        source
            .poll(&mut got, 500, Duration::from_millis(200))
            .unwrap();
        source.ack().unwrap();
    }
    got
}

#[test]
fn records_go_through_a_pipeline_both_ways_intact() {
    let server = redis_server("redis-both-ways");
    let mut sink = redis::sink(&url(&server), "{topic}").unwrap();
    let sent: Vec<Record> = (0..300).map(|i| record("in", i)).collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(10)).unwrap();

    // in -> (pipeline) -> copy-in, then read copy-in.
    let source = redis::source(&url(&server), "in", "riffle", "pipe").unwrap();
    let copy = redis::sink(&url(&server), "copy-{topic}").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let stop = stop.clone();
        std::thread::spawn(move || Pipeline::new(source, copy).batch(64).run(&stop))
    };
    let mut reader = redis::source(&url(&server), "copy-in", "check", "c").unwrap();
    let got = collect(&mut reader, sent.len(), Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let stats = pipeline.join().unwrap().unwrap();

    let want: Vec<Record> = sent
        .iter()
        .map(|r| Record {
            topic: "copy-in".into(),
            ..r.clone()
        })
        .collect();
    assert_eq!(
        got, want,
        "every record, in order, key, value and headers intact"
    );
    assert_eq!(stats.records_in, sent.len() as u64);
}

#[test]
fn nothing_is_lost_across_a_server_restart() {
    const N: usize = 3000;
    let mut server = redis_server("redis-restart");
    let url = url(&server);
    let published = Arc::new(AtomicUsize::new(0));

    // Publishes in batches as a pipeline does: a batch whose flush fails
    // is sent again until confirmed.
    let publisher = {
        let (url, published) = (url.clone(), published.clone());
        std::thread::spawn(move || {
            let mut sink = redis::sink(&url, "events").unwrap();
            let mut failures = 0;
            for batch in (0..N).collect::<Vec<_>>().chunks(50) {
                loop {
                    let attempt = batch
                        .iter()
                        .try_for_each(|&i| sink.send(&record("t", i)))
                        .and_then(|()| sink.flush(Duration::from_secs(5)));
                    match attempt {
                        Ok(()) => break,
                        Err(_) => {
                            failures += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
                published.fetch_add(batch.len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            failures
        })
    };
    // Reads at the same time, acknowledging each batch after taking it.
    let reader = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut source = redis::source(&url, "events", "riffle", "reader").unwrap();
            let mut keys = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(45);
            let mut batch = Vec::new();
            while keys.len() < N && Instant::now() < deadline {
                batch.clear();
                source
                    .poll(&mut batch, 200, Duration::from_millis(200))
                    .unwrap();
                keys.extend(batch.iter().map(|r| r.key_str().unwrap().to_owned()));
                let _ = source.ack();
            }
            keys
        })
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while published.load(Ordering::Relaxed) < N / 3 {
        assert!(Instant::now() < deadline, "publishing does not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.restart();
    let failures = publisher.join().unwrap();
    let keys = reader.join().unwrap();

    let missing: Vec<usize> = (0..N)
        .filter(|i| !keys.contains(&format!("k{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} records: {missing:?}",
        missing.len()
    );
    assert!(
        published.load(Ordering::Relaxed) == N && failures > 0,
        "the restart happened mid-run ({failures} failed flushes)"
    );
}

#[test]
fn entries_polled_but_not_acknowledged_come_again() {
    let mut server = redis_server("redis-pending");
    let url = url(&server);
    let mut sink = redis::sink(&url, "jobs").unwrap();
    for i in 0..10 {
        sink.send(&record("jobs", i)).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();

    // Polled, not acknowledged, then the server restarts under the source:
    // the reconnected source reads its pending entries again.
    let mut source = redis::source(&url, "jobs", "g", "worker-1").unwrap();
    let mut first = Vec::new();
    while first.len() < 10 {
        source
            .poll(&mut first, 100, Duration::from_millis(500))
            .unwrap();
    }
    server.restart();
    let again = collect(&mut source, 10, Duration::from_secs(20));
    assert_eq!(again, first, "the same entries after the reconnect");
    drop(source);

    // Acknowledged now: a new source with the same name has nothing
    // pending, and another consumer never saw them.
    let mut source = redis::source(&url, "jobs", "g", "worker-1").unwrap();
    let mut rest = Vec::new();
    source
        .poll(&mut rest, 100, Duration::from_millis(300))
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // A source closed without acknowledging: its successor (same name)
    // gets the entries back. (The sink's connection died with the server:
    // its next flush fails, as a pipeline expects, so use a new one.)
    let mut sink = redis::sink(&url, "jobs").unwrap();
    sink.send(&record("jobs", 10)).unwrap();
    sink.flush(Duration::from_secs(5)).unwrap();
    let mut got = Vec::new();
    source.poll(&mut got, 100, Duration::from_secs(2)).unwrap();
    assert_eq!(got, vec![record("jobs", 10)]);
    source.close().unwrap();
    drop(source);
    let mut successor = redis::source(&url, "jobs", "g", "worker-1").unwrap();
    assert_eq!(
        collect(&mut successor, 1, Duration::from_secs(5)),
        vec![record("jobs", 10)]
    );
}

#[test]
fn a_refused_xadd_refuses_only_its_record_with_the_servers_reason() {
    let server = redis_server("redis-refused");
    // A plain string where the sink expects a stream.
    let mut raw = std::net::TcpStream::connect(server.address()).unwrap();
    raw.write_all(b"SET notastream x\r\n").unwrap();
    let mut ok = [0; 5];
    raw.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");

    let mut sink = redis::sink(&url(&server), "{topic}").unwrap();
    sink.send(&record("fine", 1)).unwrap();
    sink.send(&record("notastream", 2)).unwrap();
    sink.send(&record("fine", 3)).unwrap();
    let e = sink.flush(Duration::from_secs(5)).unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (3, 1), "{u:?}");
    assert_eq!(u.refused[0].0, 1);
    assert!(u.refused[0].1.contains("WRONGTYPE"), "{u:?}");
    // The next round goes through on the same connection.
    sink.send(&record("fine", 4)).unwrap();
    sink.flush(Duration::from_secs(5)).unwrap();
    let mut reader = redis::source(&url(&server), "fine", "check", "c").unwrap();
    let got = collect(&mut reader, 3, Duration::from_secs(5));
    assert_eq!(got, [1, 3, 4].map(|i| record("fine", i)));
}

#[test]
fn a_pipeline_dead_letters_the_record_redis_refuses_and_copies_the_rest_once() {
    let server = redis_server("redis-dead-letter");
    let mut raw = std::net::TcpStream::connect(server.address()).unwrap();
    raw.write_all(b"SET notastream x\r\n").unwrap();
    let mut ok = [0; 5];
    raw.read_exact(&mut ok).unwrap();
    // Records keyed by where they go: all to "out" but one.
    let mut feed = redis::sink(&url(&server), "in").unwrap();
    for i in 0..100 {
        let mut r = record("in", i);
        r.key = Some(if i == 42 { "notastream" } else { "out" }.into());
        feed.send(&r).unwrap();
    }
    feed.flush(Duration::from_secs(5)).unwrap();

    let source = redis::source(&url(&server), "in", "riffle", "pipe").unwrap();
    let sink = redis::sink(&url(&server), "{key}").unwrap();
    let dead = redis::sink(&url(&server), "dead").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            Pipeline::new(source, sink)
                .batch(30)
                .dead_letter(dead)
                .run(&stop)
        })
    };
    let mut out = redis::source(&url(&server), "out", "check", "c").unwrap();
    let got = collect(&mut out, 99, Duration::from_secs(20));
    let mut dead = redis::source(&url(&server), "dead", "check", "c").unwrap();
    let letters = collect(&mut dead, 1, Duration::from_secs(10));
    // Nothing more comes.
    let more = collect(&mut out, 1, Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let stats = pipeline.join().unwrap().unwrap();
    assert!(more.is_empty(), "{more:?}");
    let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    let want: Vec<_> = (0..100)
        .filter(|i| *i != 42)
        .map(|i| record("in", i).value)
        .collect();
    assert_eq!(values, want, "each once, in order");
    assert_eq!(letters.len(), 1);
    let envelope: serde_json::Value = serde_json::from_slice(&letters[0].value).unwrap();
    assert_eq!(envelope["value"], "{\"n\":42,\"bin\":\"\\r\\n\"}");
    assert!(
        envelope["error"].as_str().unwrap().contains("WRONGTYPE"),
        "{envelope}"
    );
    assert_eq!((stats.records_out, stats.dead_letters), (99, 1));
}

#[test]
fn an_unreachable_server_is_named_within_seconds() {
    let closed = ClosedPort::new();
    let port = closed.port;
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let e = redis::sink(&url, "s").err().unwrap().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    let e = redis::source(&url, "s", "g", "c")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.starts_with("cannot reach Redis server"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(12));
}

#[test]
fn unknown_options_are_refused_before_connecting() {
    let c = riffle_connectors::registry::find("redis").unwrap();
    let env = riffle_connectors::Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log".into()))),
    };
    let o = riffle_connectors::Options::from_pairs(
        "redis",
        [
            ("url", "redis://127.0.0.1:1"),
            ("stream", "s"),
            ("maxlne", "5"),
        ],
    );
    let e = (c.build_sink.unwrap())(o, &env).err().unwrap().to_string();
    assert!(e.contains("unknown option 'maxlne'"), "{e}");
}

#[test]
fn a_group_from_dollar_reads_only_new_entries() {
    let server = redis_server("redis-from");
    let mut sink = redis::sink(&url(&server), "{topic}").unwrap();
    sink.send(&record("news", 0)).unwrap();
    sink.flush(Duration::from_secs(5)).unwrap();

    let env = riffle_connectors::Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log".into()))),
    };
    let options = |group: &str, from: &str| {
        riffle_connectors::Options::from_pairs(
            "redis",
            [
                ("url", url(&server)),
                ("stream", "news".into()),
                ("group", group.into()),
                ("consumer", "c".into()),
                ("from", from.into()),
            ],
        )
    };
    let mut new_only = riffle_connectors::registry::source(options("late", "$"), &env).unwrap();
    let mut everything = riffle_connectors::registry::source(options("early", "0"), &env).unwrap();
    sink.send(&record("news", 1)).unwrap();
    sink.flush(Duration::from_secs(5)).unwrap();

    let mut got = Vec::new();
    while got.len() < 2 {
        everything
            .poll(&mut got, 10, Duration::from_secs(2))
            .unwrap();
    }
    assert_eq!(got, vec![record("news", 0), record("news", 1)]);
    got.clear();
    new_only.poll(&mut got, 10, Duration::from_secs(2)).unwrap();
    assert_eq!(got, vec![record("news", 1)]);
    assert_eq!(
        new_only.describe(),
        format!(
            "redis {} stream news group late consumer c",
            server.address()
        )
    );
}
