//! The Redis Streams connector against a real redis-server.
#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, program, scratch_dir, Certs, ClosedPort, Server};
use riffle::connect::{Pipeline, Record, Sink, Source};
use riffle_connectors::redis::{self, RedisSource};

/// A redis-server that writes every change to its append-only file before
/// answering, so that a restart keeps everything it confirmed.
fn redis_server(name: &str) -> Server {
    redis_server_with(name, &[])
}

/// The same, with more arguments.
fn redis_server_with(name: &str, more: &[&str]) -> Server {
    let mut args = vec![
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
    ];
    args.extend_from_slice(more);
    let mut s = Server::new(
        "redis-server",
        program("redis-server", "redis-server"),
        &args,
        free_port(),
        scratch_dir(name),
    );
    s.start();
    s
}

fn url(s: &Server) -> String {
    format!("redis://{}", s.address())
}

/// Runs one command on the server at `url`, for setting up and checking
/// from outside the connector.
fn command<T: ::redis::FromRedisValue>(url: &str, cmd: &::redis::Cmd) -> T {
    let mut conn = ::redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    cmd.query(&mut conn).unwrap()
}

fn env() -> riffle_connectors::Env {
    riffle_connectors::Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log".into()))),
    }
}

/// A redis-server with a plain port (`port`, for setting up) and a TLS
/// port that wants a client certificate signed by `certs.ca`, a password
/// for the default user, and an ACL user `riffle` (password `s3cret`)
/// allowed only on keys starting with `allowed`. Returns the server and
/// its TLS port.
fn redis_tls_server(name: &str, certs: &Certs) -> (Server, u16) {
    let tls_port = free_port().to_string();
    let (ca, cert, key) = (
        Certs::s(&certs.ca),
        Certs::s(&certs.server_cert),
        Certs::s(&certs.server_key),
    );
    let mut s = Server::new(
        "redis-server",
        program("redis-server", "redis-server"),
        &[
            "--port",
            "{port}",
            "--tls-port",
            &tls_port,
            "--bind",
            "127.0.0.1",
            "--dir",
            "{dir}",
            "--save",
            "",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
            "--requirepass",
            "admin",
            "--user",
            "riffle",
            "on",
            ">s3cret",
            "~allowed*",
            "+@all",
        ],
        free_port(),
        scratch_dir(name),
    );
    s.start();
    // The TLS port opens with the plain one; wait for it all the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port.parse::<u16>().unwrap())).is_err() {
        assert!(Instant::now() < deadline, "no TLS port: {}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    (s, tls_port.parse().unwrap())
}

/// Registry options for the `riffle` user over TLS with the client
/// certificate, plus `extra`.
fn tls_options(url: &str, certs: &Certs, extra: &[(&str, String)]) -> riffle_connectors::Options {
    let mut pairs = vec![
        ("url", url.to_owned()),
        ("tls_ca", Certs::s(&certs.ca)),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
    ];
    for (k, v) in extra {
        match pairs.iter_mut().find(|(n, _)| n == k) {
            Some(p) => p.1 = v.clone(),
            None => pairs.push((k, v.clone())),
        }
    }
    pairs.retain(|(_, v)| !v.is_empty());
    riffle_connectors::Options::from_pairs("redis", pairs)
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

/// `flushed` settled `settled` records and refused the one at `at` with
/// Redis's WRONGTYPE error.
fn wrongtype_refused(flushed: riffle::Result<()>, settled: usize, at: usize) {
    let e = flushed.unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (settled, 1), "{u:?}");
    assert_eq!(u.refused[0].0, at);
    assert!(u.refused[0].1.contains("WRONGTYPE"), "{u:?}");
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
    let mut server = redis_server("redis-restart");
    let (failures, _) = nothing_lost_across(&url(&server), Duration::from_millis(2), || {
        server.restart();
    });
    assert!(
        failures > 0,
        "the restart happened mid-run ({failures} failed flushes)"
    );
}

/// The same through a cluster, every node of which is restarted in turn.
/// The cluster client reconnects to a restarted node by itself, so a
/// flush may not fail: what shows the restarts came mid-run is how much
/// was published once they were done.
#[test]
fn nothing_is_lost_across_restarts_of_a_clusters_nodes() {
    let mut nodes = redis_cluster("redis-cluster-restart", "s3cret", None);
    let url = format!("redis+cluster://:s3cret@{}", nodes[0].0.address());
    let (_, published) = nothing_lost_across(&url, Duration::from_millis(50), || {
        for (n, _) in &mut nodes {
            n.restart();
        }
    });
    assert!(
        published < 3000,
        "all was published before the restarts were done"
    );
}

/// Publishes (in batches of 50, `pace` apart) and reads 3,000 records at
/// once through `url`, calling `restart` once a third are published;
/// every record must be read.
/// Returns how many flushes failed, and how many records were published
/// when `restart` returned.
fn nothing_lost_across(url: &str, pace: Duration, restart: impl FnOnce()) -> (usize, usize) {
    const N: usize = 3000;
    let url = url.to_owned();
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
                std::thread::sleep(pace);
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
    restart();
    let at_restart = published.load(Ordering::Relaxed);
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
    assert_eq!(published.load(Ordering::Relaxed), N);
    (failures, at_restart)
}

/// The source's lag is what the group has not acknowledged, as the
/// server counts it: every entry before the first read, none once they
/// are all read and acknowledged (asked again after `LAG_EVERY`).
#[test]
fn the_lag_is_what_the_group_has_not_acknowledged() {
    let server = redis_server("redis-lag");
    let url = url(&server);
    let mut sink = redis::sink(&url, "backlog").unwrap();
    for i in 0..25 {
        sink.send(&record("backlog", i)).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    let mut source = redis::source(&url, "backlog", "g", "worker-1").unwrap();
    assert_eq!(source.lag(), Some(25));
    assert_eq!(collect(&mut source, 25, Duration::from_secs(10)).len(), 25);
    assert_eq!(source.lag(), Some(25), "the answer is kept a while");
    std::thread::sleep(riffle::connect::LAG_EVERY);
    assert_eq!(source.lag(), Some(0));
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
    let reply: String = command(
        &url(&server),
        ::redis::cmd("SET").arg("notastream").arg("x"),
    );
    assert_eq!(reply, "OK");

    let mut sink = redis::sink(&url(&server), "{topic}").unwrap();
    sink.send(&record("fine", 1)).unwrap();
    sink.send(&record("notastream", 2)).unwrap();
    sink.send(&record("fine", 3)).unwrap();
    wrongtype_refused(sink.flush(Duration::from_secs(5)), 3, 1);
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
    let reply: String = command(
        &url(&server),
        ::redis::cmd("SET").arg("notastream").arg("x"),
    );
    assert_eq!(reply, "OK");
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
    let env = env();
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

    let env = env();
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

#[test]
fn the_database_number_in_the_url_is_the_one_written_and_read() {
    let server = redis_server("redis-db");
    let db2 = format!("{}/2", url(&server));
    let mut sink = redis::sink(&db2, "{topic}").unwrap();
    for i in 0..5 {
        sink.send(&record("numbered", i)).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();

    let len = |url: &str| -> usize { command(url, ::redis::cmd("XLEN").arg("numbered")) };
    assert_eq!(len(&db2), 5, "the entries are in database 2");
    assert_eq!(len(&url(&server)), 0, "and not in database 0");
    // Read with RESP2 whatever the URL asks for.
    let mut source = redis::source(&format!("{db2}?protocol=resp3"), "numbered", "g", "c").unwrap();
    assert_eq!(
        collect(&mut source, 5, Duration::from_secs(5)),
        (0..5).map(|i| record("numbered", i)).collect::<Vec<_>>()
    );
    let e = redis::sink(&format!("{}/x", url(&server)), "s")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("redis: URL"), "{e}");
}

#[test]
fn an_acl_user_over_tls_with_a_client_certificate_round_trips() {
    let certs = Certs::new("redis-tls-round-trip");
    let (server, tls_port) = redis_tls_server("redis-tls-round-trip", &certs);
    // The password from a file, as a deployment would keep it.
    let secret = server.dir.join("password");
    std::fs::write(&secret, "s3cret").unwrap();
    let url = format!(
        "rediss://riffle:${{file:{}}}@127.0.0.1:{tls_port}/3",
        secret.display()
    );
    let sent: Vec<Record> = (0..50).map(|i| record("allowed-in", i)).collect();
    let mut sink =
        riffle_connectors::registry::sink(tls_options(&url, &certs, &[]), &env()).unwrap();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();

    let mut source = riffle_connectors::registry::source(
        tls_options(&url, &certs, &[("stream", "allowed-in".into())]),
        &env(),
    )
    .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < sent.len() && Instant::now() < deadline {
        source
            .poll(&mut got, 100, Duration::from_millis(200))
            .unwrap();
        source.ack().unwrap();
    }
    assert_eq!(got, sent);
    // Written as that user, in database 3 (seen from the plain port).
    let plain = format!("redis://riffle:s3cret@{}/3", server.address());
    let len: usize = command(&plain, ::redis::cmd("XLEN").arg("allowed-in"));
    assert_eq!(len, 50);
    let pending: ::redis::Value = command(
        &plain,
        ::redis::cmd("XPENDING").arg("allowed-in").arg("riffle"),
    );
    assert!(
        matches!(&pending, ::redis::Value::Array(v) if v[0] == ::redis::Value::Int(0)),
        "everything acknowledged: {pending:?}"
    );

    // tls_insecure accepts the certificate without its CA.
    let mut insecure = riffle_connectors::registry::sink(
        tls_options(
            &url,
            &certs,
            &[("tls_ca", String::new()), ("tls_insecure", "true".into())],
        ),
        &env(),
    )
    .unwrap();
    insecure.send(&record("allowed-in", 50)).unwrap();
    insecure.flush(Duration::from_secs(5)).unwrap();
}

#[test]
fn an_acl_denial_refuses_only_the_record_it_concerns() {
    let certs = Certs::new("redis-acl-denial");
    let (_server, tls_port) = redis_tls_server("redis-acl-denial", &certs);
    let url = format!("rediss://riffle:s3cret@127.0.0.1:{tls_port}");
    let mut sink = riffle_connectors::registry::sink(
        tls_options(&url, &certs, &[("stream", "{key}".into())]),
        &env(),
    )
    .unwrap();
    let to = |stream: &str, i: usize| {
        let mut r = record("t", i);
        r.key = Some(stream.into());
        r
    };
    sink.send(&to("allowed-a", 1)).unwrap();
    sink.send(&to("forbidden", 2)).unwrap();
    sink.send(&to("allowed-a", 3)).unwrap();
    let e = sink.flush(Duration::from_secs(5)).unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (3, 1), "{u:?}");
    assert_eq!(u.refused[0].0, 1);
    assert!(u.refused[0].1.contains("NOPERM"), "{u:?}");
    assert!(!e.is_transient(), "{e}");
}

/// The error opening a sink with `options`, checked to come within
/// seconds and on one line.
fn open_error(options: riffle_connectors::Options) -> String {
    let started = Instant::now();
    let e = riffle_connectors::registry::sink(options, &env())
        .err()
        .expect("refused")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(8), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn wrong_credentials_and_certificates_are_named_within_seconds() {
    let certs = Certs::new("redis-tls-refusals");
    let (server, tls_port) = redis_tls_server("redis-tls-refusals", &certs);
    let tls_url = |user: &str| format!("rediss://{user}@127.0.0.1:{tls_port}");

    let e = open_error(tls_options(&tls_url("riffle:wrong"), &certs, &[]));
    assert!(
        e.starts_with("authentication failed at Redis server at 127.0.0.1:"),
        "{e}"
    );
    assert!(e.contains("wrong password for user 'riffle'"), "{e}");
    let e = open_error(tls_options(&tls_url("nobody:s3cret"), &certs, &[]));
    assert!(e.contains("authentication failed"), "{e}");
    let e = open_error(tls_options(
        &format!("rediss://127.0.0.1:{tls_port}"),
        &certs,
        &[],
    ));
    assert!(e.contains("the server wants a password"), "{e}");

    let e = open_error(tls_options(
        &tls_url("riffle:s3cret"),
        &certs,
        &[("tls_ca", Certs::s(&certs.other_ca))],
    ));
    assert!(e.starts_with("TLS handshake failed"), "{e}");
    assert!(e.contains("give its CA with tls_ca"), "{e}");

    let e = open_error(tls_options(
        &tls_url("riffle:s3cret"),
        &certs,
        &[("tls_cert", String::new()), ("tls_key", String::new())],
    ));
    assert!(e.contains("client certificate"), "{e}");

    // TLS to the plain-text port.
    let e = open_error(tls_options(
        &format!("rediss://riffle:s3cret@{}", server.address()),
        &certs,
        &[],
    ));
    assert!(e.contains("plain-text listener"), "{e}");

    // The password is not repeated in messages.
    let e = open_error(riffle_connectors::Options::from_pairs(
        "redis",
        [("url", "redis://riffle:s3cret@127.0.0.1:1/x")],
    ));
    assert!(!e.contains("s3cret"), "{e}");
}

/// A Sentinel watching the master at `master_port` under the name `main`,
/// quick to declare it down.
fn sentinel(name: &str, master_port: u16) -> Server {
    let dir = scratch_dir(name);
    let port = free_port();
    std::fs::write(
        dir.join("sentinel.conf"),
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor main 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds main 1000\n\
             sentinel failover-timeout main 10000\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut s = Server::new(
        "redis-sentinel",
        program("redis-server", "redis-server"),
        &["{dir}/sentinel.conf", "--sentinel"],
        port,
        dir,
    );
    s.start();
    s
}

#[test]
fn a_master_found_through_sentinels_round_trips_on_the_urls_database() {
    let master = redis_server("redis-sentinel-master");
    let watcher = sentinel("redis-sentinel", master.port);
    // The first Sentinel listed is down: the next one answers.
    let down = ClosedPort::new();
    let via = format!(
        "redis+sentinel://127.0.0.1:{},{}/main/4",
        down.port,
        watcher.address()
    );
    let mut sink = redis::sink(&via, "{topic}").unwrap();
    assert!(
        sink.describe().contains("master 'main'"),
        "{}",
        sink.describe()
    );
    let sent: Vec<Record> = (0..20).map(|i| record("watched", i)).collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    let len: usize = command(
        &format!("{}/4", url(&master)),
        ::redis::cmd("XLEN").arg("watched"),
    );
    assert_eq!(len, 20, "on the master, in database 4");
    let mut source = redis::source(&via, "watched", "g", "c").unwrap();
    assert_eq!(collect(&mut source, 20, Duration::from_secs(5)), sent);

    // A master name no Sentinel knows, and no Sentinel at all.
    let e = redis::sink(&via.replace("/main/", "/other/"), "s")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("master 'other'"), "{e}");
    let e = redis::sink(
        &format!("redis+sentinel://127.0.0.1:{}/main", down.port),
        "s",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.starts_with("cannot reach Redis master via"), "{e}");
}

#[test]
fn after_a_failover_the_sink_writes_to_the_new_master() {
    let mut master = redis_server("redis-failover-master");
    let master_port = master.port.to_string();
    let replica = redis_server_with(
        "redis-failover-replica",
        &["--replicaof", "127.0.0.1", &master_port],
    );
    let watcher = sentinel("redis-failover-sentinel", master.port);
    let via = format!("redis+sentinel://{}/main", watcher.address());

    let mut sink = redis::sink(&via, "{topic}").unwrap();
    for i in 0..10 {
        sink.send(&record("kept", i)).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    // Replicated before the master goes away.
    let acked: i64 = command(&url(&master), ::redis::cmd("WAIT").arg(1).arg(5000));
    assert_eq!(acked, 1);
    // The Sentinel must know the replica to promote it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replicas: Vec<::redis::Value> = command(
            &url(&watcher),
            ::redis::cmd("SENTINEL").arg("REPLICAS").arg("main"),
        );
        if !replicas.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Sentinel never saw the replica"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    master.kill();

    // Sent again until a flush succeeds, as a pipeline does.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let attempt = (10..20)
            .try_for_each(|i| sink.send(&record("kept", i)))
            .and_then(|()| sink.flush(Duration::from_secs(2)));
        match attempt {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(Instant::now() < deadline, "no new master: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let role: Vec<::redis::Value> = command(&url(&replica), &::redis::cmd("ROLE"));
    assert_eq!(role[0], ::redis::Value::BulkString(b"master".to_vec()));
    let mut source = redis::source(&via, "kept", "g", "c").unwrap();
    let got = collect(&mut source, 20, Duration::from_secs(10));
    assert_eq!(got, (0..20).map(|i| record("kept", i)).collect::<Vec<_>>());
}

#[test]
fn sentinels_and_master_over_tls_with_an_acl_user() {
    let certs = Certs::new("redis-sentinel-tls");
    let (master, master_tls) = redis_tls_server("redis-sentinel-tls-master", &certs);
    // A Sentinel listening only with TLS, talking TLS to the master too.
    let dir = scratch_dir("redis-sentinel-tls");
    let port = free_port();
    std::fs::write(
        dir.join("sentinel.conf"),
        format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {dir}\n\
             tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients yes\ntls-replication yes\n\
             sentinel monitor main 127.0.0.1 {master_tls} 1\n\
             sentinel auth-pass main admin\nrequirepass watcher\n",
            dir = dir.display(),
            cert = Certs::s(&certs.server_cert),
            key = Certs::s(&certs.server_key),
            ca = Certs::s(&certs.ca),
        ),
    )
    .unwrap();
    let mut watcher = Server::new(
        "redis-sentinel",
        program("redis-server", "redis-server"),
        &["{dir}/sentinel.conf", "--sentinel"],
        port,
        dir,
    );
    watcher.start();

    let via = format!("rediss+sentinel://riffle:s3cret@127.0.0.1:{port}/main/5");
    let sentinel_password = [("sentinel_password", "watcher".to_owned())];
    let mut sink =
        riffle_connectors::registry::sink(tls_options(&via, &certs, &sentinel_password), &env())
            .unwrap();
    let sent: Vec<Record> = (0..10).map(|i| record("allowed-s", i)).collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    let len: usize = command(
        &format!("redis://riffle:s3cret@{}/5", master.address()),
        ::redis::cmd("XLEN").arg("allowed-s"),
    );
    assert_eq!(len, 10);
    let mut source = riffle_connectors::registry::source(
        tls_options(
            &via,
            &certs,
            &[("stream", "allowed-s".into()), sentinel_password[0].clone()],
        ),
        &env(),
    )
    .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < sent.len() && Instant::now() < deadline {
        source
            .poll(&mut got, 100, Duration::from_millis(200))
            .unwrap();
        source.ack().unwrap();
    }
    assert_eq!(got, sent);

    // Without the Sentinel's password, or with a wrong one.
    let e = open_error(tls_options(&via, &certs, &[]));
    assert!(
        e.starts_with("authentication failed at Redis Sentinels 127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.contains("sentinel_password") && e.contains("NOAUTH"),
        "{e}"
    );
    let e = open_error(tls_options(
        &via,
        &certs,
        &[("sentinel_password", "wrong".into())],
    ));
    assert!(
        e.contains("WRONGPASS") || e.contains("authentication"),
        "{e}"
    );
    // The Sentinel's certificate checked as the master's is.
    let e = open_error(tls_options(
        &via,
        &certs,
        &[("tls_ca", Certs::s(&certs.other_ca))],
    ));
    assert!(e.contains("give its CA with tls_ca"), "{e}");
}

/// A Redis Cluster of three masters that want `password`, the slots
/// spread over them by `redis-cli --cluster create`; returned once every
/// node says the cluster is ok. With `certs`, each node also has a TLS
/// port (its second number), which it announces to TLS clients, and the
/// nodes talk to each other over TLS.
fn redis_cluster(name: &str, password: &str, certs: Option<&Certs>) -> Vec<(Server, u16)> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        // The cluster bus is on a port of its own, free like the other.
        let (bus, tls_port) = (free_port().to_string(), free_port());
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus,
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--requirepass",
            password,
            "--masterauth",
            password,
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(certs) = certs {
            args.extend([
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cluster".into(),
                "yes".into(),
                "--tls-cert-file".into(),
                Certs::s(&certs.server_cert),
                "--tls-key-file".into(),
                Certs::s(&certs.server_key),
                "--tls-ca-cert-file".into(),
                Certs::s(&certs.ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push((redis_server_with(&format!("{name}-{i}"), &args), tls_port));
    }
    let created = std::process::Command::new(program("redis-cli", "redis-tools"))
        .args(["-a", password, "--no-auth-warning", "--cluster", "create"])
        .args(nodes.iter().map(|(n, _)| n.address()))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for (n, _) in &nodes {
        let url = format!("redis://:{password}@{}", n.address());
        while !command::<String>(&url, ::redis::cmd("CLUSTER").arg("INFO"))
            .contains("cluster_state:ok")
        {
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nodes
}

/// Through two of a cluster's three nodes (the third is found), a sink
/// with a `{key}` stream template writes 30 streams that land on every
/// node; an XADD the stream's node refuses refuses only its record; a
/// source reads one stream back in order; a wrong password is named.
#[test]
fn a_cluster_holds_streams_on_every_node_and_reads_them_back() {
    let nodes: Vec<Server> = redis_cluster("redis-cluster", "s3cret", None)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let listed = format!("{},{}", nodes[0].address(), nodes[1].address());
    let url = format!("redis+cluster://:s3cret@{listed}");
    let direct = |n: &Server| format!("redis://:s3cret@{}", n.address());
    // A string where the sink expects a stream, on whichever node holds it.
    let mut cluster = ::redis::cluster::ClusterClient::new(vec![direct(&nodes[0])])
        .unwrap()
        .get_connection()
        .unwrap();
    let set: String = ::redis::cmd("SET")
        .arg("s-bad")
        .arg("x")
        .query(&mut cluster)
        .unwrap();
    assert_eq!(set, "OK");

    let mut sink = redis::sink(&url, "s-{key}").unwrap();
    let keyed = |i: usize| {
        let key = if i == 150 {
            "bad".to_owned()
        } else {
            format!("k{}", i % 30)
        };
        Record::new("in", Some(key.as_bytes()), format!("v{i}"))
    };
    for i in 0..300 {
        sink.send(&keyed(i)).unwrap();
    }
    wrongtype_refused(sink.flush(Duration::from_secs(10)), 300, 150);
    for n in &nodes {
        let keys: i64 = command(&direct(n), &::redis::cmd("DBSIZE"));
        assert!(keys > 0, "node {} holds no stream", n.address());
    }

    let mut reader = redis::source(&url, "s-k7", "check", "c").unwrap();
    let got = collect(&mut reader, 10, Duration::from_secs(10));
    let want: Vec<Record> = (0..300)
        .filter(|i| i % 30 == 7)
        .map(|i| Record {
            topic: "s-k7".into(),
            ..keyed(i)
        })
        .collect();
    assert_eq!(got, want);

    let started = Instant::now();
    let e = redis::sink(&format!("redis+cluster://:wrong@{listed}"), "s")
        .err()
        .unwrap();
    assert!(
        matches!(e, riffle::Error::Authentication { .. }),
        "{e:?}: {e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A cluster over TLS (`rediss+cluster://`, the nodes talking TLS to each
/// other too), through one node's TLS port: the others are found at the
/// TLS ports they announce, and a stream written through the sink is read
/// back through the source.
#[test]
fn a_cluster_over_tls_round_trips() {
    let certs = Certs::new("redis-cluster-tls");
    let nodes = redis_cluster("redis-cluster-tls", "s3cret", Some(&certs));
    let url = format!("rediss+cluster://:s3cret@127.0.0.1:{}", nodes[0].1);
    let options = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("url", url.clone()), ("tls_ca", Certs::s(&certs.ca))];
        pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        riffle_connectors::Options::from_pairs("redis", pairs)
    };
    let mut sink =
        riffle_connectors::registry::sink(options(&[("stream", "s-{key}")]), &env()).unwrap();
    let sent: Vec<Record> = (0..60).map(|i| record("in", i % 20)).collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let mut source =
        riffle_connectors::registry::source(options(&[("stream", "s-k3")]), &env()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && Instant::now() < deadline {
        source
            .poll(&mut got, 100, Duration::from_millis(200))
            .unwrap();
        source.ack().unwrap();
    }
    let want: Vec<Record> = (0..3)
        .map(|_| Record {
            topic: "s-k3".into(),
            ..record("in", 3)
        })
        .collect();
    assert_eq!(got, want);
}
