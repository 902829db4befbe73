//! The MQTT connector against a real Mosquitto broker, in both protocol
//! versions: records both ways, a persistent session that keeps and
//! redelivers, nothing lost across a broker restart, and an unreachable
//! broker named at once; over TLS (with a client certificate too) with a
//! password, a wrong password and an untrusted certificate explained in
//! one line, QoS 2, a last will, and a list of brokers tried in turn.
#![cfg(feature = "mqtt")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, program, scratch_dir, Certs, ClosedPort, Server};
use riffle::connect::{Delivery, Pipeline, Record, Sink, Source};
use riffle::{Error, Result};
use riffle_connectors::{registry, Env, Options};

/// A Mosquitto on a free port, persisting to its scratch directory (saved
/// every second and on an orderly exit), keeping up to 100,000 messages
/// per absent session.
fn mosquitto(name: &str) -> Server {
    mosquitto_with(name, "")
}

/// The same with more configuration lines.
fn mosquitto_with(name: &str, extra: &str) -> Server {
    let dir = scratch_dir(name);
    let port = free_port();
    let config = format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {}/\n\
         autosave_interval 1\n\
         max_queued_messages 100000\n\
         user root\n{extra}",
        dir.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let mut s = Server::new(
        "mosquitto",
        program("mosquitto", "mosquitto"),
        &["-c", "{dir}/mosquitto.conf"],
        port,
        dir,
    );
    s.start();
    s
}

fn env() -> Env {
    Env {
        log: Box::new(|_| Err(Error::InvalidInput("no log in these tests".into()))),
    }
}

fn options(pairs: &[(&str, &str)]) -> Options {
    Options::from_pairs("mqtt", pairs.iter().copied())
}

fn source(server: &Server, version: &str, topic: &str) -> Box<dyn Source> {
    let url = format!("mqtt://{}", server.address());
    registry::source(
        options(&[("url", &url), ("version", version), ("topic", topic)]),
        &env(),
    )
    .unwrap()
}

fn sink(server: &Server, version: &str, topic: &str) -> Box<dyn Sink> {
    let url = format!("mqtt://{}", server.address());
    registry::sink(
        options(&[("url", &url), ("version", version), ("topic", topic)]),
        &env(),
    )
    .unwrap()
}

/// Polls `source` until it has handed out `n` records or `within` passes.
fn poll_n(source: &mut dyn Source, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let want = n - out.len();
        source
            .poll(&mut out, want, Duration::from_millis(200))
            .unwrap();
    }
    out
}

/// Polls and acknowledges, as a pipeline does, until `n` distinct values
/// came or `within` passes. (Without acknowledgements a broker sends only
/// its in-flight window: Mosquitto's default is 20 for MQTT 3.1.1.)
fn poll_acking(source: &mut dyn Source, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < n && Instant::now() < deadline {
        let from = out.len();
        source
            .poll(&mut out, 500, Duration::from_millis(200))
            .unwrap();
        distinct.extend(out[from..].iter().map(|r| r.value.clone()));
        source.ack().unwrap();
    }
    out
}

/// Records with keys h0..h9 and a sequence number in the value.
fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record::new(
                "readings",
                Some(format!("h{}", i % 10).as_bytes()),
                format!("{{\"seq\":{i}}}"),
            );
            r.headers.push(("seq".into(), i.to_string().into_bytes()));
            r
        })
        .collect()
}

/// A sink keeping everything in memory (repeats included), taking
/// `pause` over each flush to play a slow consumer.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record>>>, Duration);

impl Sink for Collect {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }
    fn send(&mut self, record: &Record) -> Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
    fn flush(&mut self, _timeout: Duration) -> Result<()> {
        std::thread::sleep(self.1);
        Ok(())
    }
}

impl Collect {
    fn distinct_values(&self) -> BTreeSet<Vec<u8>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.value.clone())
            .collect()
    }
}

#[test]
fn sink_to_source_puts_keys_in_topics_and_headers_in_user_properties() {
    let server = mosquitto("mqtt-both-ways");
    for version in ["3.1.1", "5"] {
        let filter = format!("v{version}/heaters/+/command");
        let mut src = source(&server, version, &filter);
        let mut snk = sink(
            &server,
            version,
            &format!("v{version}/heaters/{{key}}/command"),
        );
        let records = numbered(200);
        for r in &records {
            snk.send(r).unwrap();
        }
        snk.flush(Duration::from_secs(10)).unwrap();

        let got = poll_acking(src.as_mut(), records.len(), Duration::from_secs(20));
        assert_eq!(got.len(), records.len(), "MQTT {version}");
        let by_value: BTreeMap<_, _> = got.iter().map(|r| (r.value.clone(), r)).collect();
        assert_eq!(by_value.len(), records.len(), "MQTT {version}: repeats");
        for r in &records {
            let g = by_value[&r.value];
            let key = r.key_str().unwrap();
            assert_eq!(g.topic, format!("v{version}/heaters/{key}/command"));
            assert_eq!(g.key, None);
            // Only MQTT 5 carries headers, as user properties.
            let headers = if version == "5" {
                r.headers.clone()
            } else {
                Vec::new()
            };
            assert_eq!(g.headers, headers, "MQTT {version}");
        }
        snk.close().unwrap();
        src.close().unwrap();
    }
}

#[test]
fn pipeline_moves_broker_messages_to_a_file() {
    let server = mosquitto("mqtt-to-file");
    let path = server.dir.join("out.jsonl");
    let src = source(&server, "3.1.1", "sensors/#");
    let file = registry::sink(
        Options::from_pairs(
            "file",
            [("path", path.to_str().unwrap()), ("format", "record")],
        ),
        &env(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || Pipeline::new(src, file).run(&stop))
    };

    let mut publisher = sink(&server, "5", "sensors/{key}");
    let records = numbered(300);
    for r in &records {
        publisher.send(r).unwrap();
    }
    publisher.flush(Duration::from_secs(10)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= records.len() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    let stats = running.join().unwrap().unwrap();
    let got: BTreeMap<String, String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["value"].to_string(),
                v["topic"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), records.len(), "{} lines", lines.lines().count());
    for r in &records {
        let value = String::from_utf8(r.value.clone()).unwrap();
        let value = serde_json::from_str::<serde_json::Value>(&value)
            .unwrap()
            .to_string();
        assert_eq!(got[&value], format!("sensors/{}", r.key_str().unwrap()));
    }
    assert!(stats.records_in >= records.len() as u64, "{stats:?}");
}

#[test]
fn the_session_keeps_messages_while_away_and_redelivers_unacknowledged_ones() {
    let server = mosquitto("mqtt-session");
    for version in ["3.1.1", "5"] {
        let filter = format!("away{version}/#");
        // Subscribe, then leave: the session stays with the broker.
        source(&server, version, &filter).close().unwrap();

        let mut snk = sink(&server, version, &format!("away{version}/{{key}}"));
        for r in numbered(50) {
            snk.send(&r).unwrap();
        }
        snk.close().unwrap();

        // Handed out, never acknowledged: they come again.
        let mut first = source(&server, version, &filter);
        let got = poll_n(first.as_mut(), 50, Duration::from_secs(2));
        assert!(!got.is_empty(), "MQTT {version}: nothing queued while away");
        first.close().unwrap();

        let mut second = source(&server, version, &filter);
        let again = poll_acking(second.as_mut(), 50, Duration::from_secs(10));
        let values = |rs: &[Record]| rs.iter().map(|r| r.value.clone()).collect::<BTreeSet<_>>();
        assert_eq!(
            values(&again).len(),
            50,
            "MQTT {version}: queued while away"
        );
        assert!(
            values(&again).is_superset(&values(&got)),
            "MQTT {version}: not redelivered"
        );
        second.close().unwrap();

        // Acknowledged: gone.
        let mut third = source(&server, version, &filter);
        let rest = poll_n(third.as_mut(), 1, Duration::from_secs(1));
        assert!(rest.is_empty(), "MQTT {version}: {rest:?}");
        third.close().unwrap();
    }
}

/// Publishes `n` records in batches, restarting the broker in the middle
/// of one (sent, not yet confirmed), and resending a batch whenever its
/// flush fails, as a pipeline does; meanwhile a pipeline with a persistent
/// session takes them into memory, more slowly, so that at the restart the
/// broker holds messages for it that only its persistence can keep. Every
/// record must arrive.
fn nothing_lost_across_a_restart(version: &str) {
    const N: usize = 3000;
    const BATCH: usize = 100;
    let mut server = mosquitto(&format!("mqtt-restart-{version}"));
    let src = source(&server, version, "plant/+/reading");
    let collected = Collect(Arc::default(), Duration::from_millis(20));
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let (stop, collected) = (stop.clone(), collected.clone());
        std::thread::spawn(move || Pipeline::new(src, collected).batch(20).run(&stop))
    };

    let mut publisher = sink(&server, version, "plant/{key}/reading");
    let records = numbered(N);
    let mut failed_flushes = 0;
    for (i, batch) in records.chunks(BATCH).enumerate() {
        let mut restart_now = i == N / BATCH / 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut attempt = || -> Result<()> {
                for (j, r) in batch.iter().enumerate() {
                    if restart_now && j == BATCH / 2 {
                        restart_now = false;
                        let confirmed = i * BATCH;
                        let taken = collected.distinct_values().len();
                        assert!(taken < confirmed, "the source kept up: {taken}");
                        server.restart();
                    }
                    publisher.send(r)?;
                }
                publisher.flush(Duration::from_secs(10))
            };
            match attempt() {
                Ok(()) => break,
                Err(e) => {
                    failed_flushes += 1;
                    assert!(Instant::now() < deadline, "batch {i} never confirmed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    publisher.close().unwrap();
    assert!(failed_flushes >= 1, "the restart did not reach the sink");

    let want: BTreeSet<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while collected.distinct_values() != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
    let got = collected.distinct_values();
    let missing: Vec<_> = want
        .difference(&got)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "MQTT {version}: {} of {N} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let total = collected.0.lock().unwrap().len();
    eprintln!(
        "MQTT {version}: {N} records through a broker restart, {} repeated, {failed_flushes} failed flushes",
        total - N
    );
}

#[test]
fn nothing_is_lost_across_a_broker_restart_mqtt_311() {
    nothing_lost_across_a_restart("3.1.1");
}

#[test]
fn nothing_is_lost_across_a_broker_restart_mqtt_5() {
    nothing_lost_across_a_restart("5");
}

#[test]
fn an_unreachable_broker_is_named_within_seconds() {
    let closed = ClosedPort::new();
    let port = closed.port;
    let url = format!("mqtt://127.0.0.1:{port}");
    for version in ["3.1.1", "5"] {
        let started = Instant::now();
        let e = registry::source(
            options(&[("url", &url), ("version", version), ("topic", "a/#")]),
            &env(),
        )
        .err()
        .expect("nothing listens there");
        let text = e.to_string();
        assert!(
            matches!(e, Error::Connect { .. })
                && text.contains(&format!("MQTT broker at 127.0.0.1:{port}")),
            "{text}"
        );
        let e = registry::sink(options(&[("url", &url), ("version", version)]), &env())
            .err()
            .expect("nothing listens there");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn bad_options_are_refused_before_connecting() {
    // Nothing listens on the port: an options error must come first.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let e = registry::source(
        options(&[("url", &url), ("topic", "a"), ("qos", "1")]),
        &env(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("unknown option 'qos'"), "{e}");
    let e = registry::sink(options(&[("url", &url), ("tpoic", "a")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unknown option 'tpoic'"), "{e}");
    let e = registry::sink(options(&[("url", &url), ("qos", "3")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected 0, 1 or 2"), "{e}");
    let e = registry::source(options(&[("url", &url)]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("'topic' is required"), "{e}");
    let e = registry::source(options(&[("url", &url), ("topic", "a/+,a/#/b")]), &env())
        .err()
        .unwrap();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("'a/#/b' is not a valid topic filter"),
        "{e}"
    );
    let e = registry::sink(options(&[("url", "ws://h"), ("version", "5")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("'ws' not supported"), "{e}");
    let e = registry::sink(options(&[("url", &url), ("version", "4.0")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected 3.1.1 or 5"), "{e}");
    // TLS options need TLS, a will's details need its topic, and a
    // missing certificate file is named before connecting.
    let e = registry::sink(options(&[("url", &url), ("tls_ca", "/x.pem")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("TLS options given for a plain connection"),
        "{e}"
    );
    let e = registry::sink(options(&[("url", &url), ("will_qos", "1")]), &env())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("'will_qos' needs 'will_topic'"), "{e}");
    let tls_url = format!("mqtts://127.0.0.1:{}", free_port());
    let e = registry::sink(
        options(&[("url", &tls_url), ("tls_ca", "/nonexistent/ca.pem")]),
        &env(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn keep_alive_holds_an_idle_source_and_an_idle_sink_reconnects() {
    let server = mosquitto("mqtt-keep-alive");
    let url = format!("mqtt://{}", server.address());
    let mut src = registry::source(
        options(&[
            ("url", &url),
            ("version", "5"),
            ("topic", "idle/#"),
            ("client_id", "idle-source"),
            ("keep_alive", "1s"),
        ]),
        &env(),
    )
    .unwrap();
    let mut snk = registry::sink(
        options(&[
            ("url", &url),
            ("topic", "idle/x"),
            ("client_id", "idle-sink"),
            ("keep_alive", "1s"),
        ]),
        &env(),
    )
    .unwrap();
    // Idle for long enough that Mosquitto drops a silent client with a
    // keep-alive of 1 s (it checks every few seconds: a silent test client
    // is dropped after about 4.5 s).
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        src.poll(&mut out, 10, Duration::from_millis(100)).unwrap();
    }
    assert!(out.is_empty());
    // The idle sink's connection may be gone: it makes a new one.
    snk.send(&Record::new("t", None, "after the pause"))
        .unwrap();
    snk.flush(Duration::from_secs(5)).unwrap();
    let got = poll_acking(src.as_mut(), 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"after the pause");
    let log = server.log();
    assert!(
        !log.contains("idle-source has exceeded timeout"),
        "the source was dropped by the broker:\n{log}"
    );
}

#[test]
fn an_mqtt_5_refusal_refuses_only_that_message() {
    // A broker that lets anyone publish anywhere but under forbidden/.
    let dir = scratch_dir("mqtt-refused");
    let port = free_port();
    std::fs::write(
        dir.join("acl"),
        "topic readwrite #\ntopic deny forbidden/#\n",
    )
    .unwrap();
    let config = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {}/acl\nuser root\n",
        dir.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let mut server = Server::new(
        "mosquitto",
        program("mosquitto", "mosquitto"),
        &["-c", "{dir}/mosquitto.conf"],
        port,
        dir,
    );
    server.start();
    let mut src = source(&server, "5", "ok/#");
    let mut snk = sink(&server, "5", "{key}");
    for key in ["ok/1", "forbidden/x", "ok/2", "forbidden/y", "ok/3"] {
        snk.send(&Record::new("t", Some(key.as_bytes()), key))
            .unwrap();
    }
    let e = snk.flush(Duration::from_secs(10)).unwrap_err();
    let Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    let places: Vec<usize> = u.refused.iter().map(|(at, _)| *at).collect();
    assert_eq!((u.settled, places), (5, vec![1, 3]), "{u:?}");
    assert!(
        u.refused[0].1.contains("0x87"),
        "not authorized: {:?}",
        u.refused
    );
    // The connection goes on: the next round is confirmed.
    snk.send(&Record::new("t", Some(b"ok/4"), "ok/4")).unwrap();
    snk.flush(Duration::from_secs(10)).unwrap();
    let got = poll_acking(&mut *src, 4, Duration::from_secs(10));
    let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, [b"ok/1", b"ok/2", b"ok/3", b"ok/4"]);
}

/// A Mosquitto that takes logins only, with user `riffle` and password
/// `s3cret`: a plain listener (the server's port), a TLS listener and a
/// TLS listener that also requires a client certificate signed by the
/// test CA.
struct SecureBroker {
    server: Server,
    certs: Certs,
    tls_port: u16,
    mtls_port: u16,
}

fn secure_mosquitto(name: &str) -> SecureBroker {
    let certs = Certs::new(name);
    let dir = scratch_dir(name);
    let (port, tls_port, mtls_port) = (free_port(), free_port(), free_port());
    let passwd = dir.join("passwd");
    let out = std::process::Command::new(program("mosquitto_passwd", "mosquitto"))
        .args(["-b", "-c", passwd.to_str().unwrap(), "riffle", "s3cret"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let config = format!(
        "per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {}\n\
         user root\n\
         listener {port} 127.0.0.1\n\
         listener {tls_port} 127.0.0.1\n{tls}\
         listener {mtls_port} 127.0.0.1\n{tls}require_certificate true\n",
        passwd.display()
    );
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let mut server = Server::new(
        "mosquitto",
        program("mosquitto", "mosquitto"),
        &["-c", "{dir}/mosquitto.conf"],
        port,
        dir,
    );
    server.start();
    SecureBroker {
        server,
        certs,
        tls_port,
        mtls_port,
    }
}

fn owned(pairs: &[(&str, String)]) -> Options {
    Options::from_pairs("mqtt", pairs.iter().map(|(k, v)| (*k, v.clone())))
}

#[test]
fn records_go_over_tls_with_a_password_and_a_client_certificate() {
    let b = secure_mosquitto("mqtt-tls");
    let ca = Certs::s(&b.certs.ca);
    // The password from a file, as a secret should be given.
    let secret = b.server.dir.join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let password = format!("${{file:{}}}", secret.display());
    for version in ["3.1.1", "5"] {
        // Server certificate only; user and password as options.
        let tls_url = format!("mqtts://127.0.0.1:{}", b.tls_port);
        let login = |topic: &str| {
            vec![
                ("url", tls_url.clone()),
                ("version", version.to_owned()),
                ("topic", topic.to_owned()),
                ("tls_ca", ca.clone()),
                ("user", "riffle".to_owned()),
                ("password", password.clone()),
            ]
        };
        let mut src = registry::source(owned(&login(&format!("tls{version}/#"))), &env()).unwrap();
        // A client certificate too, the login in the URL.
        let mtls = vec![
            (
                "url",
                format!("mqtts://riffle:s3cret@127.0.0.1:{}", b.mtls_port),
            ),
            ("version", version.to_owned()),
            ("topic", format!("tls{version}/{{key}}")),
            ("tls_ca", ca.clone()),
            ("tls_cert", Certs::s(&b.certs.client_cert)),
            ("tls_key", Certs::s(&b.certs.client_key)),
        ];
        let mut snk = registry::sink(owned(&mtls), &env()).unwrap();
        let records = numbered(50);
        for r in &records {
            snk.send(r).unwrap();
        }
        snk.flush(Duration::from_secs(10)).unwrap();
        let got = poll_acking(src.as_mut(), records.len(), Duration::from_secs(10));
        let values: BTreeSet<_> = got.iter().map(|r| r.value.clone()).collect();
        let want: BTreeSet<_> = records.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, want, "MQTT {version}");
        assert!(got
            .iter()
            .all(|r| r.topic.starts_with(&format!("tls{version}/h"))));
        snk.close().unwrap();
        src.close().unwrap();
    }
}

#[test]
fn a_wrong_password_is_named_within_seconds() {
    let b = secure_mosquitto("mqtt-wrong-password");
    let ca = Certs::s(&b.certs.ca);
    for version in ["3.1.1", "5"] {
        for (url, tls) in [
            (format!("mqtt://{}", b.server.address()), false),
            (format!("mqtts://127.0.0.1:{}", b.tls_port), true),
        ] {
            let started = Instant::now();
            let mut o = vec![
                ("url", url.clone()),
                ("version", version.to_owned()),
                ("topic", "a/#".to_owned()),
                ("user", "riffle".to_owned()),
                ("password", "wrong".to_owned()),
            ];
            if tls {
                o.push(("tls_ca", ca.clone()));
            }
            let e = registry::source(owned(&o), &env())
                .err()
                .expect("a wrong password");
            let text = e.to_string();
            assert!(
                matches!(e, Error::Authentication { .. })
                    && text.starts_with("authentication failed at MQTT broker at 127.0.0.1:")
                    && (text.contains("not authorized")
                        || text.contains("bad user name or password"))
                    && !text.contains('\n'),
                "MQTT {version}, {url}: {text}"
            );
            assert!(!e.is_transient(), "{e:?}");
            // No login at all: refused the same way.
            o.retain(|(k, _)| !matches!(*k, "user" | "password" | "topic"));
            let e = registry::sink(owned(&o), &env()).err().expect("no login");
            assert!(matches!(e, Error::Authentication { .. }), "{e}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn an_untrusted_or_missing_certificate_is_explained_in_one_line() {
    let b = secure_mosquitto("mqtt-untrusted");
    let login = |url: String, extra: &[(&'static str, String)]| {
        let mut o = vec![
            ("url", url),
            ("user", "riffle".to_owned()),
            ("password", "s3cret".to_owned()),
        ];
        o.extend(extra.iter().cloned());
        owned(&o)
    };
    let tls_url = format!("mqtts://127.0.0.1:{}", b.tls_port);
    let mtls_url = format!("mqtts://127.0.0.1:{}", b.mtls_port);
    let plain_as_tls = format!("mqtts://{}", b.server.address());
    let ca = ("tls_ca", Certs::s(&b.certs.ca));
    let cases = [
        // A server certificate from a CA we do not trust.
        (
            login(tls_url.clone(), &[("tls_ca", Certs::s(&b.certs.other_ca))]),
            "give its CA with tls_ca",
        ),
        // A listener that wants a client certificate, given none.
        (
            login(mtls_url, std::slice::from_ref(&ca)),
            "client certificate",
        ),
        // A certificate for other names than the one asked for.
        (
            login(
                tls_url.clone(),
                &[ca.clone(), ("tls_server_name", "elsewhere.example".into())],
            ),
            "tls_server_name",
        ),
        // TLS to a plain-text listener.
        (
            login(plain_as_tls, std::slice::from_ref(&ca)),
            "plain-text listener",
        ),
    ];
    for (o, hint) in cases {
        let started = Instant::now();
        let e = registry::sink(o, &env()).err().expect("a TLS failure");
        let text = e.to_string();
        assert!(
            matches!(e, Error::Tls { .. }) && text.contains(hint) && !text.contains('\n'),
            "{hint}: {e:?}"
        );
        assert!(text.contains("MQTT broker at 127.0.0.1:"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
    // The right CA, for contrast, and a name the certificate carries.
    for extra in [vec![], vec![("tls_server_name", "localhost".to_owned())]] {
        let mut o = vec![ca.clone()];
        o.extend(extra);
        let mut snk = registry::sink(login(tls_url.clone(), &o), &env()).unwrap();
        snk.send(&Record::new("t", None, "x")).unwrap();
        snk.flush(Duration::from_secs(5)).unwrap();
    }
}

#[test]
fn qos_2_delivers_each_record_once() {
    // Mosquitto 2.0.11 sends a subscriber no more of its queued QoS 2
    // messages once it has completed the in-flight ones (its log shows
    // every PUBCOMP, then nothing): room for all of them in flight.
    let server = mosquitto_with("mqtt-qos2", "max_inflight_messages 1000\n");
    let url = format!("mqtt://{}", server.address());
    for version in ["3.1.1", "5"] {
        let mut src = source(&server, version, &format!("q2v{version}/#"));
        let mut snk = registry::sink(
            options(&[
                ("url", &url),
                ("version", version),
                ("topic", &format!("q2v{version}/{{key}}")),
                ("qos", "2"),
            ]),
            &env(),
        )
        .unwrap();
        assert_eq!(snk.delivery(), Delivery::AtLeastOnce);
        let records = numbered(300);
        for r in &records {
            snk.send(r).unwrap();
        }
        snk.flush(Duration::from_secs(10)).unwrap();
        let got = poll_acking(src.as_mut(), records.len(), Duration::from_secs(10));
        let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
        let distinct: BTreeSet<_> = values.iter().cloned().collect();
        assert_eq!(distinct.len(), records.len(), "MQTT {version}");
        assert_eq!(values.len(), records.len(), "MQTT {version}: repeats");
        snk.close().unwrap();
        src.close().unwrap();
    }
}

/// A source that acknowledges QoS 2 messages (PUBREC) and leaves at once
/// leaves their exchanges open with the broker, which completes them
/// (PUBREL) on the next connection of the session: that connection must
/// answer them and go on.
#[test]
fn qos_2_exchanges_left_open_are_completed_after_a_reconnect() {
    let server = mosquitto("mqtt-qos2-reconnect");
    let url = format!("mqtt://{}", server.address());
    for version in ["3.1.1", "5"] {
        let filter = format!("q2r{version}/#");
        let sink = |qos: &str| {
            registry::sink(
                options(&[
                    ("url", &url),
                    ("version", version),
                    ("topic", &format!("q2r{version}/{{key}}")),
                    ("qos", qos),
                ]),
                &env(),
            )
            .unwrap()
        };
        let mut first = source(&server, version, &filter);
        let mut snk = sink("2");
        for r in numbered(10) {
            snk.send(&r).unwrap();
        }
        snk.close().unwrap();
        let got = poll_n(first.as_mut(), 10, Duration::from_secs(5));
        assert_eq!(got.len(), 10, "MQTT {version}");
        first.ack().unwrap();
        first.close().unwrap();

        let mut second = source(&server, version, &filter);
        let mut snk = sink("1");
        snk.send(&Record::new("t", Some(b"after"), "after"))
            .unwrap();
        snk.close().unwrap();
        let got = poll_acking(second.as_mut(), 1, Duration::from_secs(5));
        let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, [b"after".to_vec()], "MQTT {version}");
        second.close().unwrap();
    }
}

#[test]
fn the_last_will_is_published_when_a_connection_ends_without_goodbye() {
    let server = mosquitto("mqtt-will");
    let url = format!("mqtt://{}", server.address());
    for version in ["3.1.1", "5"] {
        let mut src = source(&server, version, &format!("will{version}/#"));
        let will = |who: &str| {
            registry::sink(
                options(&[
                    ("url", &url),
                    ("version", version),
                    ("will_topic", &format!("will{version}/{who}")),
                    ("will_payload", &format!("{who} is gone")),
                    ("will_qos", "1"),
                ]),
                &env(),
            )
            .unwrap()
        };
        // Closed properly: no will.
        will("polite").close().unwrap();
        // Dropped without a DISCONNECT: the broker publishes the will.
        drop(will("abrupt"));
        let got = poll_acking(src.as_mut(), 1, Duration::from_secs(10));
        let got: Vec<_> = got
            .iter()
            .map(|r| (r.topic.clone(), r.value.clone()))
            .collect();
        assert_eq!(
            got,
            [(format!("will{version}/abrupt"), b"abrupt is gone".to_vec())],
            "MQTT {version}"
        );
        // Nothing more comes (the polite one would have by now).
        let rest = poll_n(src.as_mut(), 1, Duration::from_millis(500));
        assert!(rest.is_empty(), "MQTT {version}: {rest:?}");
        src.close().unwrap();
    }
}

#[test]
fn brokers_are_tried_in_turn() {
    let server = mosquitto("mqtt-fallback");
    let closed = ClosedPort::new();
    let url = format!(
        "mqtt://127.0.0.1:{}, mqtt://{}",
        closed.port,
        server.address()
    );
    let mut src =
        registry::source(options(&[("url", &url), ("topic", "fallback/#")]), &env()).unwrap();
    let mut snk =
        registry::sink(options(&[("url", &url), ("topic", "fallback/x")]), &env()).unwrap();
    assert!(
        snk.describe().contains(&server.address()),
        "{}",
        snk.describe()
    );
    snk.send(&Record::new("t", None, "via the second")).unwrap();
    snk.flush(Duration::from_secs(5)).unwrap();
    let got = poll_acking(src.as_mut(), 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"via the second");
    // None answering: the error names a broker of the list.
    let e = registry::sink(
        options(&[(
            "url",
            &format!("mqtt://127.0.0.1:{0},mqtt://127.0.0.1:{0}", closed.port),
        )]),
        &env(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("127.0.0.1:{}", closed.port)),
        "{e}"
    );
}

/// A sink on two brokers moves to the second when the first goes away,
/// as the pipeline sends the failed round again.
#[test]
fn a_sink_moves_to_the_next_broker_when_its_broker_goes_away() {
    let mut first = mosquitto("mqtt-failover-a");
    let second = mosquitto("mqtt-failover-b");
    let mut src = source(&second, "3.1.1", "failover/#");
    let url = format!("mqtt://{},mqtt://{}", first.address(), second.address());
    let mut snk = registry::sink(
        options(&[("url", &url), ("topic", "failover/{key}")]),
        &env(),
    )
    .unwrap();
    snk.send(&Record::new("t", Some(b"a"), "on the first"))
        .unwrap();
    snk.flush(Duration::from_secs(5)).unwrap();
    first.kill();
    let record = Record::new("t", Some(b"b"), "on the second");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match snk
            .send(&record)
            .and_then(|()| snk.flush(Duration::from_secs(5)))
        {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "never confirmed: {e}");
            }
        }
    }
    assert!(failures >= 1, "the first broker's end went unnoticed");
    let got = poll_acking(src.as_mut(), 1, Duration::from_secs(5));
    let values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, [b"on the second".to_vec()]);
}
