//! The NATS connector against a real nats-server with JetStream enabled.
#![cfg(feature = "nats")]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{free_port, program, scratch_dir, Certs, ClosedPort, Server};
use riffle::connect::{Delivery, Pipeline, PipelineStats, Record, Sink, Source, Stage};
use riffle::Result;
use riffle_connectors::registry::{self, Env};
use riffle_connectors::Options;

fn nats_server(test: &str) -> Server {
    let mut server = Server::new(
        "nats-server",
        program("nats-server", "nats-server"),
        &["-a", "127.0.0.1", "-p", "{port}", "-js", "-sd", "{dir}/js"],
        free_port(),
        scratch_dir(test),
    );
    server.start();
    server
}

fn env() -> Env {
    Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log in these tests".into()))),
    }
}

fn options(server: &Server, pairs: &[(&str, &str)]) -> Options {
    let mut o = Options::from_pairs("nats", pairs.iter().copied());
    o.set("url", format!("nats://{}", server.address()));
    o
}

fn source(server: &Server, pairs: &[(&str, &str)]) -> Box<dyn Source> {
    registry::source(options(server, pairs), &env()).unwrap()
}

fn sink(server: &Server, pairs: &[(&str, &str)]) -> Box<dyn Sink> {
    registry::sink(options(server, pairs), &env()).unwrap()
}

/// A sink keeping what it gets, for checking what a pipeline delivered.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Record>>>);

impl Collect {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn keys(&self) -> BTreeSet<String> {
        let records = self.0.lock().unwrap();
        records
            .iter()
            .map(|r| r.key_str().unwrap().to_owned())
            .collect()
    }
    /// Waits until `done` holds for the records, or fails after `limit`.
    fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&[Record]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.0.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not there after {limit:?}; have {} records",
                self.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Sink for Collect {
    fn describe(&self) -> String {
        "collect".into()
    }
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }
    fn send(&mut self, record: &Record) -> Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
    fn flush(&mut self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}

type Running = (Collect, Arc<AtomicBool>, JoinHandle<Result<PipelineStats>>);

/// Runs `source` into a [`Collect`] on a thread until the flag is set.
fn run_pipeline(source: Box<dyn Source>) -> Running {
    run_pipeline_with(source, |p| p)
}

fn run_pipeline_with(
    source: Box<dyn Source>,
    setup: impl FnOnce(Pipeline) -> Pipeline + Send + 'static,
) -> Running {
    let collect = Collect::default();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (collect, stop) = (collect.clone(), stop.clone());
        std::thread::spawn(move || setup(Pipeline::new(source, collect).batch(100)).run(&stop))
    };
    (collect, stop, handle)
}

fn record(topic: &str, i: usize) -> Record {
    let mut r = Record::new(
        topic,
        Some(format!("k-{i}").as_bytes()),
        format!("{{\"n\":{i}}}"),
    );
    r.headers
        .push(("origin".into(), format!("test {i}").into_bytes()));
    r
}

/// Sends `records` and flushes until the flush succeeds, as a pipeline
/// does: after a failure everything since the last flush goes again.
/// Returns how many attempts failed.
fn send_confirmed(sink: &mut dyn Sink, records: &[Record]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut failures = 0;
    loop {
        let sent = records.iter().try_for_each(|r| sink.send(r));
        match sent.and_then(|()| sink.flush(Duration::from_secs(5))) {
            Ok(()) => return failures,
            Err(e) => {
                assert!(Instant::now() < deadline, "never confirmed: {e}");
                failures += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Passes records on slowly, so that a restart lands mid-run.
struct Slow;

impl Stage for Slow {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        out.push(record.clone());
        Ok(())
    }
}

fn check_intact(records: &[Record], n: usize, subject_prefix: &str) {
    for r in records {
        let i: usize = r.key_str().unwrap()[2..].parse().unwrap();
        assert!(i < n, "{r:?}");
        assert_eq!(r.value, format!("{{\"n\":{i}}}").into_bytes(), "{r:?}");
        assert_eq!(r.topic, format!("{subject_prefix}k-{i}"), "{r:?}");
        assert_eq!(
            r.headers,
            [("origin".to_owned(), format!("test {i}").into_bytes())],
            "{r:?}"
        );
    }
}

#[test]
fn core_records_go_both_ways() {
    let server = nats_server("nats-core");
    // Core NATS delivers only to subscriptions that exist when a message
    // is published: the source subscribes (and the server confirms it)
    // when built.
    let src = source(&server, &[("subject", "heaters.>")]);
    assert_eq!(src.delivery(), Delivery::AtMostOnce);
    let (collect, stop, pipeline) = run_pipeline(src);

    let mut out = sink(&server, &[("subject", "heaters.{key}")]);
    assert_eq!(out.delivery(), Delivery::AtMostOnce);
    let n = 500;
    let records: Vec<Record> = (0..n).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);
    // A subject outside the source's filter is not read.
    let mut other = sink(&server, &[("subject", "other.{key}")]);
    send_confirmed(other.as_mut(), &[Record::new("x", Some(b"k-0"), "x")]);

    collect.wait_for(Duration::from_secs(20), "all core records", |r| {
        r.len() >= n
    });
    stop.store(true, Ordering::Relaxed);
    let stats = pipeline.join().unwrap().unwrap();
    let got = collect.0.lock().unwrap().clone();
    assert_eq!(got.len(), n, "core NATS neither repeats nor loses here");
    check_intact(&got, n, "heaters.");
    assert_eq!(collect.keys().len(), n);
    assert_eq!(stats.records_in, n as u64);
}

#[test]
fn jetstream_records_go_both_ways_and_acknowledged_ones_stay_read() {
    let server = nats_server("nats-js");
    let mut out = sink(
        &server,
        &[("stream", "ORDERS"), ("subject", "orders.{key}")],
    );
    assert_eq!(out.delivery(), Delivery::AtLeastOnce);
    let n = 1000;
    let records: Vec<Record> = (0..n).map(|i| record("ignored", i)).collect();
    for batch in records.chunks(300) {
        batch.iter().for_each(|r| out.send(r).unwrap());
        out.flush(Duration::from_secs(10)).unwrap();
    }
    // A subject no stream stores is refused at flush, not silently lost.
    let mut stray = sink(
        &server,
        &[
            ("stream", "ORDERS"),
            ("subject", "elsewhere"),
            ("create", "false"),
        ],
    );
    stray.send(&record("x", 0)).unwrap();
    let e = stray.flush(Duration::from_secs(5)).unwrap_err().to_string();
    assert!(e.contains("no JetStream stream"), "{e}");
    // A publish JetStream answers with an error is refused alone: here one
    // expecting another stream.
    let mut picky = record("ignored", n + 1);
    picky
        .headers
        .push(("Nats-Expected-Stream".into(), b"OTHER".to_vec()));
    out.send(&record("ignored", n)).unwrap();
    out.send(&picky).unwrap();
    out.send(&record("ignored", n + 2)).unwrap();
    let e = out.flush(Duration::from_secs(5)).unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (3, 1), "{u:?}");
    assert!(
        u.refused[0].0 == 1 && u.refused[0].1.contains("10060"),
        "{u:?}"
    );
    // 1000 and 1002 are stored, 1001 is not.
    let stored = n + 2;

    // Stored before any consumer existed: the durable consumer starts at
    // the beginning of the stream.
    let src = source(&server, &[("stream", "ORDERS"), ("subject", "orders.>")]);
    assert_eq!(src.delivery(), Delivery::AtLeastOnce);
    let (collect, stop, pipeline) = run_pipeline(src);
    collect.wait_for(Duration::from_secs(20), "all stored records", |r| {
        r.len() >= stored
    });
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap().unwrap();
    let got = collect.0.lock().unwrap().clone();
    check_intact(&got, n + 3, "orders.");
    let keys = collect.keys();
    assert_eq!(keys.len(), stored);
    assert!(!keys.contains(&format!("k-{}", n + 1)));

    // Everything was acknowledged: the same durable has nothing more.
    let mut again = source(&server, &[("stream", "ORDERS"), ("subject", "orders.>")]);
    let mut rest = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        again
            .poll(&mut rest, 100, Duration::from_millis(200))
            .unwrap();
    }
    assert!(
        rest.is_empty(),
        "acknowledged records came again: {}",
        rest.len()
    );
}

#[test]
fn unacknowledged_records_come_again() {
    let server = nats_server("nats-redeliver");
    let mut out = sink(&server, &[("stream", "JOBS"), ("subject", "jobs.{key}")]);
    let records: Vec<Record> = (0..20).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);

    let opts = [
        ("stream", "JOBS"),
        ("subject", "jobs.>"),
        ("durable", "workers"),
        ("ack_wait", "1s"),
    ];
    let read_all = |src: &mut Box<dyn Source>| {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while got.len() < 20 && Instant::now() < deadline {
            src.poll(&mut got, 20, Duration::from_millis(200)).unwrap();
        }
        got
    };
    // Read and dropped without acknowledging, as by a pipeline that died.
    let mut first = source(&server, &opts);
    assert_eq!(first.lag(), Some(20), "stored, none acknowledged");
    assert_eq!(read_all(&mut first).len(), 20);
    first.close().unwrap();
    drop(first);

    let mut second = source(&server, &opts);
    let got = read_all(&mut second);
    check_intact(&got, 20, "jobs.");
    assert_eq!(
        got.iter()
            .map(|r| r.key_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
            .len(),
        20
    );
    second.ack().unwrap();
    assert_eq!(second.lag(), Some(0), "every record acknowledged");
}

#[test]
fn nothing_is_lost_across_server_restarts() {
    let mut server = nats_server("nats-restart");
    let n = 3000;
    let confirmed = Arc::new(AtomicUsize::new(0));
    // Publishing goes on, batch by batch, while the server restarts.
    let publisher = {
        let mut out = sink(
            &server,
            &[("stream", "EVENTS"), ("subject", "events.{key}")],
        );
        let confirmed = confirmed.clone();
        std::thread::spawn(move || {
            let records: Vec<Record> = (0..n).map(|i| record("ignored", i)).collect();
            let mut failures = 0;
            for batch in records.chunks(25) {
                failures += send_confirmed(out.as_mut(), batch);
                confirmed.fetch_add(batch.len(), Ordering::Relaxed);
            }
            failures
        })
    };
    let wait = |count: &dyn Fn() -> usize, at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < at_least {
            assert!(Instant::now() < deadline, "stuck at {}", count());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait(&|| confirmed.load(Ordering::Relaxed), n / 3);
    server.restart();
    let during = confirmed.load(Ordering::Relaxed);
    assert!(during < n, "the restart came too late to test anything");
    let failures = publisher.join().unwrap();
    assert!(failures > 0, "the restart did not interrupt publishing");

    // Reading back, with another restart while the pipeline runs.
    // Messages in flight when the server stops come again after ack_wait.
    let src = source(
        &server,
        &[
            ("stream", "EVENTS"),
            ("subject", "events.>"),
            ("ack_wait", "3s"),
        ],
    );
    let (collect, stop, pipeline) = run_pipeline_with(src, |p| p.stage(Slow));
    wait(&|| collect.len(), n / 3);
    server.restart();
    let during = collect.len();
    assert!(during < n, "the restart came too late to test anything");
    collect.wait_for(Duration::from_secs(40), "every key", |r| {
        r.iter()
            .map(|r| r.key_str().unwrap())
            .collect::<BTreeSet<_>>()
            .len()
            >= n
    });
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap().unwrap();
    let got = collect.0.lock().unwrap().clone();
    check_intact(&got, n, "events.");
    assert_eq!(collect.keys().len(), n);
    eprintln!(
        "{n} records: {failures} failed publish attempts, {} read (duplicates: {})",
        got.len(),
        got.len() - n
    );
}

#[test]
fn an_unreachable_server_is_named_within_seconds() {
    let closed = ClosedPort::new();
    let port = closed.port;
    let url = format!("nats://127.0.0.1:{port}");
    for jetstream in [false, true] {
        let mut pairs = vec![("url", url.as_str()), ("subject", "a.b")];
        if jetstream {
            pairs.push(("stream", "S"));
        }
        let started = Instant::now();
        let e = registry::source(Options::from_pairs("nats", pairs.clone()), &env())
            .err()
            .unwrap()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(6));
        assert!(
            e.contains(&format!("cannot reach NATS server at 127.0.0.1:{port}")),
            "{e}"
        );
        let e = registry::sink(Options::from_pairs("nats", pairs), &env())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!("cannot reach NATS server at 127.0.0.1:{port}")),
            "{e}"
        );
    }
}

/// A nats-server run from a configuration file; `{port}` and `{dir}` in
/// `config` are its port and directory.
fn nats_server_with(test: &str, config: &str) -> Server {
    let dir = scratch_dir(test);
    let port = free_port();
    let config = config
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string());
    std::fs::write(dir.join("nats.conf"), config).unwrap();
    let mut server = Server::new(
        "nats-server",
        program("nats-server", "nats-server"),
        &["-c", "{dir}/nats.conf"],
        port,
        dir,
    );
    server.start();
    server
}

/// A TLS listener that requires a client certificate signed by the test
/// CA, with a user/password user and an NKEY user.
fn tls_server(test: &str, certs: &Certs, nkey_public: &str) -> Server {
    nats_server_with(
        test,
        &format!(
            r#"
listen: "127.0.0.1:{{port}}"
jetstream {{ store_dir: "{{dir}}/js" }}
tls {{
  cert_file: "{}"
  key_file: "{}"
  ca_file: "{}"
  verify: true
  timeout: 2
}}
authorization {{
  users: [
    {{ user: alice, password: "s3cret pass" }}
    {{ nkey: {nkey_public} }}
  ]
}}
"#,
            Certs::s(&certs.server_cert),
            Certs::s(&certs.server_key),
            Certs::s(&certs.ca),
        ),
    )
}

fn tls_pairs(server: &Server, certs: &Certs) -> Vec<(String, String)> {
    [
        ("url", format!("tls://{}", server.address())),
        ("tls_ca", Certs::s(&certs.ca)),
        ("tls_cert", Certs::s(&certs.client_cert)),
        ("tls_key", Certs::s(&certs.client_key)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn with(base: &[(String, String)], more: &[(&str, &str)]) -> Options {
    let mut o = Options::from_pairs("nats", base.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in more {
        o.set(*k, *v);
    }
    o
}

/// Sends records through a sink built from `sink_options` and reads them
/// back through a source built from `source_options`, both JetStream.
fn jetstream_round_trip(source_options: Options, sink_options: Options, n: usize) {
    let mut out = registry::sink(sink_options, &env()).unwrap();
    let records: Vec<Record> = (0..n).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);
    out.close().unwrap();
    let mut src = registry::source(source_options, &env()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n && Instant::now() < deadline {
        src.poll(&mut got, 100, Duration::from_millis(200)).unwrap();
    }
    src.ack().unwrap();
    check_intact(&got, n, "secure.");
    assert_eq!(
        got.iter()
            .map(|r| r.key_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
            .len(),
        n
    );
}

#[test]
fn records_go_over_tls_with_a_password_or_an_nkey() {
    let certs = Certs::new("nats-tls");
    let user = nkeys::KeyPair::new_user();
    let seed_file = certs.dir.join("user.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let server = tls_server("nats-tls", &certs, &user.public_key());
    let base = tls_pairs(&server, &certs);

    // User and password, the password from the environment.
    std::env::set_var("RIFFLE_TEST_NATS_PASSWORD", "s3cret pass");
    let password = [
        ("user", "alice"),
        ("password", "${RIFFLE_TEST_NATS_PASSWORD}"),
    ];
    let js = [("stream", "SECURE"), ("subject", "secure.{key}")];
    let sink_options = with(&base, &[&password[..], &js[..]].concat());
    let source_options = with(
        &base,
        &[
            &password[..],
            &[("stream", "SECURE"), ("subject", "secure.>")],
        ]
        .concat(),
    );
    jetstream_round_trip(source_options, sink_options, 50);

    // The NKEY seed from a file; core mode this time, and TLS asked for
    // by the option rather than the scheme.
    let seed = format!("${{file:{}}}", seed_file.display());
    let plain_url = format!("nats://{}", server.address());
    let nkey = [
        ("nkey", seed.as_str()),
        ("url", plain_url.as_str()),
        ("tls", "true"),
    ];
    let src = registry::source(
        with(&base, &[&nkey[..], &[("subject", "secure.>")]].concat()),
        &env(),
    )
    .unwrap();
    let (collect, stop, pipeline) = run_pipeline(src);
    let mut out = registry::sink(
        with(&base, &[&nkey[..], &[("subject", "secure.{key}")]].concat()),
        &env(),
    )
    .unwrap();
    let records: Vec<Record> = (0..20).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);
    // A record NATS cannot carry is refused alone, in its place.
    let mut bad_key = record("ignored", 99);
    bad_key.key = Some(b"with space".to_vec());
    let mut bad_header = record("ignored", 98);
    bad_header.headers.push(("bad name".into(), b"x".to_vec()));
    out.send(&bad_key).unwrap();
    out.send(&records[0]).unwrap();
    out.send(&bad_header).unwrap();
    let e = out.flush(Duration::from_secs(5)).unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (3, 2), "{u:?}");
    assert!(
        u.refused[0].0 == 0 && u.refused[0].1.contains("with space"),
        "{u:?}"
    );
    assert!(
        u.refused[1].0 == 2 && u.refused[1].1.contains("bad name"),
        "{u:?}"
    );
    collect.wait_for(Duration::from_secs(10), "core records over TLS", |r| {
        r.len() >= 20
    });
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap().unwrap();
    check_intact(&collect.0.lock().unwrap(), 20, "secure.");
    assert_eq!(collect.keys().len(), 20);
}

/// The one-line error of building a source from `options`, and how long
/// it took.
fn source_error(options: Options) -> (String, Duration) {
    let started = Instant::now();
    let e = registry::source(options, &env()).err().unwrap().to_string();
    (e, started.elapsed())
}

#[test]
fn wrong_credentials_and_certificates_are_named_within_seconds() {
    let certs = Certs::new("nats-tls-fail");
    let user = nkeys::KeyPair::new_user();
    let server = tls_server("nats-tls-fail", &certs, &user.public_key());
    let base = tls_pairs(&server, &certs);
    let core = [("subject", "a.b")];

    let (e, took) = source_error(with(
        &base,
        &[("user", "alice"), ("password", "wrong"), core[0]],
    ));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("authentication failed at NATS server"), "{e}");
    assert!(e.contains("authorization violation"), "{e}");

    // Another user's NKEY: the signature does not match a known key.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let (e, took) = source_error(with(&base, &[("nkey", stranger.as_str()), core[0]]));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(e.contains("authorization violation"), "{e}");

    // A CA that did not sign the server's certificate.
    let mut untrusted = base.clone();
    untrusted[1].1 = Certs::s(&certs.other_ca);
    let (e, took) = source_error(with(
        &untrusted,
        &[("user", "alice"), ("password", "s3cret pass"), core[0]],
    ));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("TLS handshake failed at NATS server"), "{e}");
    assert!(e.contains("give its CA with tls_ca"), "{e}");

    // The right CA but the wrong name.
    let (e, _) = source_error(with(
        &base,
        &[
            ("user", "alice"),
            ("password", "s3cret pass"),
            ("tls_server_name", "elsewhere.example"),
            core[0],
        ],
    ));
    assert!(e.contains("set tls_server_name"), "{e}");
    // ... and the certificate's own name when connecting by address.
    let s = registry::source(
        with(
            &base,
            &[
                ("user", "alice"),
                ("password", "s3cret pass"),
                ("tls_server_name", "localhost"),
                core[0],
            ],
        ),
        &env(),
    );
    assert!(s.is_ok(), "{:?}", s.err());

    // TLS to a listener that requires a client certificate, without one.
    let no_cert: Vec<(String, String)> = base[..2].to_vec();
    let (e, took) = source_error(with(
        &no_cert,
        &[("user", "alice"), ("password", "s3cret pass"), core[0]],
    ));
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("TLS handshake failed at NATS server"), "{e}");
    assert!(e.contains("client certificate"), "{e}");
}

#[test]
fn tokens_authenticate_in_the_url_or_as_an_option() {
    let server = nats_server_with(
        "nats-token",
        r#"
listen: "127.0.0.1:{port}"
jetstream { store_dir: "{dir}/js" }
authorization { token: "t0ken" }
"#,
    );
    let address = server.address();
    let in_url = format!("nats://t0ken@{address}");
    let plain = format!("nats://{address}");
    // A token in the URL is a token, not a user without a password.
    let src = registry::source(
        Options::from_pairs("nats", [("url", in_url.as_str()), ("subject", "tok.>")]),
        &env(),
    )
    .unwrap();
    let (collect, stop, pipeline) = run_pipeline(src);
    let mut out = registry::sink(
        Options::from_pairs(
            "nats",
            [
                ("url", plain.as_str()),
                ("token", "t0ken"),
                ("subject", "tok.{key}"),
            ],
        ),
        &env(),
    )
    .unwrap();
    let records: Vec<Record> = (0..10).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);
    collect.wait_for(Duration::from_secs(10), "records with a token", |r| {
        r.len() >= 10
    });
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap().unwrap();
    check_intact(&collect.0.lock().unwrap(), 10, "tok.");

    let wrong = format!("nats://wrong@{address}");
    let (e, took) = source_error(Options::from_pairs(
        "nats",
        [("url", wrong.as_str()), ("subject", "a")],
    ));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(e.contains("authorization violation"), "{e}");
    let (e, _) = source_error(Options::from_pairs(
        "nats",
        [("url", plain.as_str()), ("subject", "a")],
    ));
    assert!(e.contains("authentication failed"), "{e}");
}

#[test]
fn several_servers_are_tried_until_one_answers() {
    let server = nats_server("nats-several");
    let closed = ClosedPort::new();
    let url = format!(
        "nats://127.0.0.1:{},nats://{}",
        closed.port,
        server.address()
    );
    // The client picks servers in random order: whichever comes first,
    // it ends up on the one that answers.
    for _ in 0..4 {
        let mut src = registry::source(
            Options::from_pairs("nats", [("url", url.as_str()), ("subject", "many.>")]),
            &env(),
        )
        .unwrap();
        assert!(
            src.describe().contains(&server.address()),
            "{}",
            src.describe()
        );
        let mut out = registry::sink(
            Options::from_pairs("nats", [("url", url.as_str()), ("subject", "many.{key}")]),
            &env(),
        )
        .unwrap();
        send_confirmed(out.as_mut(), &[record("ignored", 1)]);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.is_empty() && Instant::now() < deadline {
            src.poll(&mut got, 10, Duration::from_millis(200)).unwrap();
        }
        check_intact(&got, 2, "many.");
        assert_eq!(got.len(), 1);
    }
}

/// Base64url without padding, as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT (as `nsc` makes them): `claims` about `subject`, signed by
/// `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("RIFFLE{iat}{name}").to_uppercase(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = base64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64url(&signature))
}

/// A `.creds` file for a user of `account`.
fn creds_file(dir: &std::path::Path, name: &str, account: &nkeys::KeyPair) -> String {
    let user = nkeys::KeyPair::new_user();
    let jwt = nats_jwt(
        account,
        &user.public_key(),
        name,
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, creds).unwrap();
    path.display().to_string()
}

#[test]
fn credentials_files_authenticate_in_operator_mode() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "riffle-operator",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "riffle-account",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1,
                "exports": -1, "wildcards": true, "conn": -1, "leaf": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account", "version": 2
        }),
    );
    let server = nats_server_with(
        "nats-creds",
        &format!(
            r#"
listen: "127.0.0.1:{{port}}"
operator: "{operator_jwt}"
resolver: MEMORY
resolver_preload: {{
  {}: "{account_jwt}"
}}
"#,
            account.public_key()
        ),
    );
    let url = format!("nats://{}", server.address());
    let good = creds_file(&server.dir, "good", &account);
    let src = registry::source(
        Options::from_pairs(
            "nats",
            [
                ("url", url.as_str()),
                ("credentials", good.as_str()),
                ("subject", "jwt.>"),
            ],
        ),
        &env(),
    )
    .unwrap();
    let (collect, stop, pipeline) = run_pipeline(src);
    let mut out = registry::sink(
        Options::from_pairs(
            "nats",
            [
                ("url", url.as_str()),
                ("credentials", good.as_str()),
                ("subject", "jwt.{key}"),
            ],
        ),
        &env(),
    )
    .unwrap();
    let records: Vec<Record> = (0..10).map(|i| record("ignored", i)).collect();
    send_confirmed(out.as_mut(), &records);
    collect.wait_for(Duration::from_secs(10), "records with credentials", |r| {
        r.len() >= 10
    });
    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap().unwrap();
    check_intact(&collect.0.lock().unwrap(), 10, "jwt.");

    // A user of an account the server does not know.
    let stranger = creds_file(&server.dir, "stranger", &nkeys::KeyPair::new_account());
    let (e, took) = source_error(Options::from_pairs(
        "nats",
        [
            ("url", url.as_str()),
            ("credentials", stranger.as_str()),
            ("subject", "a"),
        ],
    ));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(e.contains("authentication failed at NATS server"), "{e}");
    assert!(e.contains("authorization violation"), "{e}");
    // A file that is not a credentials file.
    let (e, _) = source_error(Options::from_pairs(
        "nats",
        [
            ("url", url.as_str()),
            (
                "credentials",
                server.dir.join("nats.conf").to_str().unwrap(),
            ),
            ("subject", "a"),
        ],
    ));
    assert!(e.contains("credentials") && e.contains("nats.conf"), "{e}");
}
