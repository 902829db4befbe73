//! The AMQP connector against a real RabbitMQ, started once for the file
//! (it takes several seconds to boot) in a scratch directory.
#![cfg(feature = "amqp")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, scratch_dir, Certs, ClosedPort, Server};
use riffle::connect::{Delivery, Pipeline, Record, Sink, Source, Stage};
use riffle::{Error, Result};
use riffle_connectors::{registry, Env, Options};

const RABBITMQ: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A RabbitMQ node of our own, with its own Erlang port mapper (on a port
/// of its own, so other nodes on the machine are not disturbed); both are
/// gone when this is dropped.
struct Rabbit {
    server: Server,
    epmd_port: u16,
}

impl Rabbit {
    fn start(name: &str) -> Self {
        Self::start_with(name, "", "[]")
    }

    /// A node with `conf` added to its rabbitmq.conf and the `plugins`
    /// (an Erlang list) enabled.
    fn start_with(name: &str, conf: &str, plugins: &str) -> Self {
        assert!(
            Path::new(RABBITMQ).is_file(),
            "{RABBITMQ} not found: install the Debian package rabbitmq-server"
        );
        let dir = scratch_dir(name);
        std::fs::write(dir.join("enabled_plugins"), format!("{plugins}.\n")).unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("loopback_users = none\n{conf}"),
        )
        .unwrap();
        let port = free_port();
        let epmd_port = free_port();
        let dist_port = free_port();
        let server = Server::new("rabbitmq", PathBuf::from(RABBITMQ), &[], port, dir)
            .env("RABBITMQ_NODENAME", "riffle{port}@localhost")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", "{port}")
            .env("RABBITMQ_DIST_PORT", &dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", "{dir}/mnesia")
            .env("RABBITMQ_LOG_BASE", "{dir}/log")
            .env("RABBITMQ_CONFIG_FILE", "{dir}/rabbitmq")
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", "{dir}/enabled_plugins")
            .env("HOME", "{dir}")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", &epmd_port.to_string())
            // The start script then execs the Erlang VM instead of waiting
            // on it from a shell, so that the process the test stops or
            // kills is the broker itself; -noinput keeps it off stdin.
            .env("RABBITMQ_ALLOW_INPUT", "true")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-noinput")
            .ready_timeout(Duration::from_secs(60));
        let mut r = Rabbit { server, epmd_port };
        r.server.start();
        r
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.server.address())
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.server.kill();
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .output();
    }
}

fn env() -> Env {
    Env {
        log: Box::new(|_| Err(Error::InvalidInput("no log in these tests".into()))),
    }
}

fn source(url: &str, pairs: &[(&str, &str)]) -> Result<Box<dyn Source>> {
    let mut o = Options::from_pairs("amqp", pairs.iter().copied());
    o.set("url", url);
    registry::source(o, &env())
}

fn sink(url: &str, pairs: &[(&str, &str)]) -> Result<Box<dyn Sink>> {
    let mut o = Options::from_pairs("amqp", pairs.iter().copied());
    o.set("url", url);
    registry::sink(o, &env())
}

fn record(topic: &str, i: usize) -> Record {
    let mut r = Record::new(
        topic,
        Some(format!("k{i}").as_bytes()),
        format!("{{\"n\":{i}}}"),
    );
    r.headers.push(("h".into(), format!("v{i}").into_bytes()));
    r
}

/// Polls `source` until `n` records came or `within` passed.
fn read(source: &mut dyn Source, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        source
            .poll(&mut out, 500, Duration::from_millis(200))
            .unwrap();
    }
    out
}

/// The lines of a file sink's output so far, parsed.
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Hands out `n` numbered records, a few at a time, slowly enough that a
/// broker restart falls in the middle.
struct Numbers {
    next: usize,
    n: usize,
    handed: Arc<AtomicUsize>,
}

impl Source for Numbers {
    fn describe(&self) -> String {
        "numbers".into()
    }
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }
    fn poll(&mut self, out: &mut Vec<Record>, max: usize, _: Duration) -> Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        let end = (self.next + max.min(10)).min(self.n);
        for i in self.next..end {
            out.push(record("durable", i));
        }
        let got = end - self.next;
        self.next = end;
        self.handed.store(end, Ordering::Relaxed);
        Ok(got)
    }
    fn ack(&mut self) -> Result<()> {
        Ok(())
    }
    fn finished(&self) -> bool {
        self.next == self.n
    }
}

/// Hands out the given records, all at once.
struct Listed(Vec<Record>);

impl Source for Listed {
    fn describe(&self) -> String {
        "listed".into()
    }
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }
    fn poll(&mut self, out: &mut Vec<Record>, _: usize, _: Duration) -> Result<usize> {
        let n = self.0.len();
        out.append(&mut self.0);
        Ok(n)
    }
    fn ack(&mut self) -> Result<()> {
        Ok(())
    }
    fn finished(&self) -> bool {
        self.0.is_empty()
    }
}

/// Slows a pipeline down so a restart lands in the middle of it.
struct Slow;

impl Stage for Slow {
    fn process(&mut self, record: &Record, out: &mut Vec<Record>) -> Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        out.push(record.clone());
        Ok(())
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every scenario against one broker: records both ways, acknowledgements,
/// the server's reasons in errors, and no loss across restarts at either
/// end.
#[test]
fn rabbitmq_carries_records_both_ways_and_loses_none_across_restarts() {
    let mut rabbit = Rabbit::start("amqp");
    let url = rabbit.url();

    // The server's reply text comes back in the error.
    let e = source(&url, &[("queue", "missing"), ("declare", "false")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("NOT_FOUND") && e.contains("missing"), "{e}");

    let bad_login = format!("amqp://guest:wrong@{}/%2f", rabbit.server.address());
    let e = sink(&bad_login, &[]).err().unwrap().to_string();
    assert!(
        e.starts_with(&format!(
            "AMQP server at {} closed the connection: 403 ACCESS_REFUSED",
            rabbit.server.address()
        )),
        "{e}"
    );

    // Our sink -> RabbitMQ -> read back with our source.
    let mut out_queue = source(&url, &[("queue", "out")]).unwrap();
    let mut s = sink(&url, &[("mandatory", "true")]).unwrap();
    for i in 0..200 {
        s.send(&record("out", i)).unwrap();
    }
    s.flush(Duration::from_secs(10)).unwrap();
    let got = read(&mut *out_queue, 200, Duration::from_secs(20));
    assert_eq!(got.len(), 200);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r,
            &record("out", i),
            "in order, key, value and headers intact"
        );
    }
    // A value larger than a frame goes in several body frames.
    let mut big = record("out", 9999);
    big.value = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.send(&big).unwrap();
    s.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(read(&mut *out_queue, 1, Duration::from_secs(10)), [big]);
    out_queue.ack().unwrap();
    out_queue.close().unwrap();
    // Acknowledged messages are gone; unacknowledged ones come again.
    let mut again = source(&url, &[("queue", "out")]).unwrap();
    assert!(read(&mut *again, 1, Duration::from_secs(1)).is_empty());
    for i in 200..205 {
        s.send(&record("out", i)).unwrap();
    }
    s.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(read(&mut *again, 5, Duration::from_secs(10)).len(), 5);
    again.close().unwrap(); // without acknowledging
    let mut third = source(&url, &[("queue", "out")]).unwrap();
    let redelivered = read(&mut *third, 5, Duration::from_secs(10));
    assert_eq!(redelivered[0], record("out", 200));
    assert_eq!(redelivered.len(), 5);
    third.ack().unwrap();
    third.close().unwrap();

    // The source's lag: the messages ready in the queue, those the broker
    // pushed to it (up to its prefetch) aside; asked again after LAG_EVERY.
    for i in 400..500 {
        s.send(&record("out", i)).unwrap();
    }
    s.flush(Duration::from_secs(10)).unwrap();
    let mut backlog = source(&url, &[("queue", "out"), ("prefetch", "10")]).unwrap();
    let lag = backlog.lag().unwrap();
    assert!((90..=100).contains(&lag), "{lag}");
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while all.len() < 100 && Instant::now() < deadline {
        backlog
            .poll(&mut all, 100, Duration::from_millis(200))
            .unwrap();
        backlog.ack().unwrap();
    }
    assert_eq!(all.len(), 100);
    std::thread::sleep(riffle::connect::LAG_EVERY);
    assert_eq!(backlog.lag(), Some(0));
    backlog.close().unwrap();

    // A sink left idle past its heartbeats (the broker closes such a
    // connection) still delivers the next record.
    let mut idle = sink(&url, &[("heartbeat", "1s"), ("routing_key", "out")]).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    idle.send(&record("elsewhere", 7)).unwrap();
    idle.flush(Duration::from_secs(10)).unwrap();
    idle.close().unwrap();
    let mut o = source(&url, &[("queue", "out")]).unwrap();
    let got = read(&mut *o, 1, Duration::from_secs(10));
    assert_eq!(got[0].key_str(), Some("k7"));
    assert_eq!(got[0].topic, "out", "the topic is the routing key");
    o.ack().unwrap();
    o.close().unwrap();

    // With mandatory, a message no queue takes is refused, and only it.
    s.send(&record("out", 300)).unwrap();
    s.send(&record("nowhere", 0)).unwrap();
    s.send(&record("out", 301)).unwrap();
    let e = s.flush(Duration::from_secs(10)).unwrap_err();
    let Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (3, 1), "{u:?}");
    let (at, why) = &u.refused[0];
    assert!(
        *at == 1 && why.contains("NO_ROUTE") && why.contains("nowhere"),
        "{u:?}"
    );
    // In a pipeline it goes to the dead letters and the others arrive once.
    let dead_file = rabbit.server.dir.join("dead.jsonl");
    let dead = registry::sink(
        Options::from_pairs(
            "file",
            [("path", dead_file.to_str().unwrap()), ("format", "record")],
        ),
        &env(),
    )
    .unwrap();
    let listed = Listed(vec![
        record("out", 302),
        record("nowhere", 1),
        record("out", 303),
    ]);
    let stats = Pipeline::new(listed, sink(&url, &[("mandatory", "true")]).unwrap())
        .dead_letter(dead)
        .run(&AtomicBool::new(false))
        .unwrap();
    assert_eq!((stats.records_out, stats.dead_letters), (2, 1));
    let mut o = source(&url, &[("queue", "out")]).unwrap();
    let got = read(&mut *o, 5, Duration::from_secs(3));
    assert_eq!(got, [300, 301, 302, 303].map(|i| record("out", i)));
    o.ack().unwrap();
    o.close().unwrap();
    let dead = lines(&dead_file);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["value"]["value"], "{\"n\":1}");
    let why = dead[0]["value"]["error"].as_str().unwrap();
    assert!(
        why.contains("NO_ROUTE") && why.contains("after 3 attempts"),
        "{why}"
    );

    // A queue bound to an exchange, published to with a key template.
    let mut bound = source(
        &url,
        &[
            ("queue", "bound"),
            ("exchange", "amq.topic"),
            ("routing_key", "heaters.#"),
        ],
    )
    .unwrap();
    let mut topic_sink = sink(
        &url,
        &[("exchange", "amq.topic"), ("routing_key", "heaters.{key}")],
    )
    .unwrap();
    for i in 0..3 {
        topic_sink.send(&record("ignored", i)).unwrap();
    }
    topic_sink.flush(Duration::from_secs(10)).unwrap();
    let got = read(&mut *bound, 3, Duration::from_secs(10));
    let topics: Vec<_> = got.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["heaters.k0", "heaters.k1", "heaters.k2"]);
    bound.ack().unwrap();
    bound.close().unwrap();
    topic_sink.close().unwrap();

    // RabbitMQ -> our source -> a pipeline -> a file.
    let dir = rabbit.server.dir.clone();
    let file = dir.join("in.jsonl");
    let in_source = source(&url, &[("queue", "in"), ("prefetch", "50")]).unwrap();
    for i in 0..300 {
        s.send(&record("in", i)).unwrap();
    }
    s.flush(Duration::from_secs(10)).unwrap();
    let file_sink = registry::sink(
        Options::from_pairs(
            "file",
            [("path", file.to_str().unwrap()), ("format", "record")],
        ),
        &env(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let stop = stop.clone();
        std::thread::spawn(move || Pipeline::new(in_source, file_sink).run(&stop))
    };
    wait_for("300 records in the file", Duration::from_secs(20), || {
        lines(&file).len() >= 300
    });
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap().unwrap();
    for (i, l) in lines(&file).iter().enumerate() {
        assert_eq!(l["topic"], "in");
        assert_eq!(l["key"], format!("k{i}"));
        assert_eq!(l["value"]["n"], i);
        assert_eq!(l["headers"]["h"], format!("v{i}"));
    }
    let mut rest = source(&url, &[("queue", "in")]).unwrap();
    assert!(
        read(&mut *rest, 1, Duration::from_secs(1)).is_empty(),
        "the pipeline acknowledged what it wrote"
    );
    rest.close().unwrap();
    s.close().unwrap();

    // Our sink across a broker restart: every record confirmed arrives.
    // The broker is the second server of the list, the first being down:
    // every reconnection goes through the list.
    let closed = ClosedPort::new();
    let cluster = format!("amqp://guest:guest@127.0.0.1:{}/%2f,{url}", closed.port);
    const N: usize = 3000;
    source(&url, &[("queue", "durable")])
        .unwrap()
        .close()
        .unwrap();
    let handed = Arc::new(AtomicUsize::new(0));
    let numbers = Numbers {
        next: 0,
        n: N,
        handed: handed.clone(),
    };
    let durable_sink = sink(&cluster, &[("routing_key", "durable")]).unwrap();
    let run = {
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::spawn(move || Pipeline::new(numbers, durable_sink).run(&stop))
    };
    wait_for("the first records", Duration::from_secs(20), || {
        handed.load(Ordering::Relaxed) >= 300
    });
    rabbit.server.restart();
    let stats = run.join().unwrap().unwrap();
    assert!(
        handed.load(Ordering::Relaxed) == N && stats.retries > 0,
        "the restart fell mid-run: {stats:?}"
    );
    // A prefetch above N: nothing is acknowledged here.
    let mut check = source(&url, &[("queue", "durable"), ("prefetch", "5000")]).unwrap();
    let keys: BTreeSet<_> = read(&mut *check, N, Duration::from_secs(30))
        .into_iter()
        .map(|r| r.key_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = (0..N)
        .map(|i| format!("k{i}"))
        .filter(|k| !keys.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lost, the first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Not acknowledged: all of them stay in the queue for the next part.
    check.close().unwrap();

    // Our source across a broker restart: everything reaches the file.
    let file = dir.join("durable.jsonl");
    let durable_source = source(&cluster, &[("queue", "durable"), ("prefetch", "100")]).unwrap();
    let file_sink = registry::sink(
        Options::from_pairs(
            "file",
            [("path", file.to_str().unwrap()), ("format", "record")],
        ),
        &env(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            Pipeline::new(durable_source, file_sink)
                .stage(Slow)
                .batch(100)
                .run(&stop)
        })
    };
    wait_for(
        "the first records in the file",
        Duration::from_secs(20),
        || lines(&file).len() >= 500,
    );
    rabbit.server.restart();
    let distinct = || -> BTreeSet<String> {
        lines(&file)
            .iter()
            .map(|l| l["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let at_restart = distinct().len();
    assert!(at_restart < N, "the restart fell mid-run: {at_restart}");
    wait_for("every record in the file", Duration::from_secs(60), || {
        distinct().len() == N
    });
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap().unwrap();
    assert!(
        lines(&file).len() < N * 2,
        "duplicates only from the restart"
    );
}

#[test]
fn an_unreachable_broker_is_named_within_seconds() {
    let closed = ClosedPort::new();
    let port = closed.port;
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let started = Instant::now();
    let e = source(&url, &[("queue", "q")]).err().unwrap();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("AMQP server at 127.0.0.1:{port}")),
        "{text}"
    );
    let e = sink(&url, &[]).err().unwrap().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// Waits until `port` accepts connections (a listener the node opens
/// after its first).
fn wait_listening(port: u16) {
    wait_for(
        &format!("a listener on port {port}"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A one-line error from opening a source, within seconds.
fn source_error(url: &str, pairs: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let e = source(url, pairs).err().expect("refused").to_string();
    assert!(started.elapsed() < Duration::from_secs(8), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// TLS beside the plain port: a user and password, or the client
/// certificate alone (SASL EXTERNAL) to log in; several servers of which
/// the first is down; and the errors for a wrong password, an untrusted
/// server certificate and a missing client certificate.
#[test]
fn rabbitmq_over_tls_with_passwords_and_client_certificates() {
    let certs = Certs::new("amqp-tls");
    let tls_port = free_port();
    let conf = format!(
        "listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {}\n\
         ssl_options.certfile = {}\n\
         ssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = true\n\
         auth_mechanisms.1 = PLAIN\n\
         auth_mechanisms.2 = AMQPLAIN\n\
         auth_mechanisms.3 = EXTERNAL\n\
         ssl_cert_login_from = common_name\n\
         default_user = riffle-client\n\
         default_pass = s3cret\n",
        Certs::s(&certs.ca),
        Certs::s(&certs.server_cert),
        Certs::s(&certs.server_key),
    );
    let rabbit = Rabbit::start_with("amqp-tls", &conf, "[rabbitmq_auth_mechanism_ssl]");
    wait_listening(tls_port);
    let tls_url = format!("amqps://127.0.0.1:{tls_port}/%2f");
    let (ca, cert, key) = (
        Certs::s(&certs.ca),
        Certs::s(&certs.client_cert),
        Certs::s(&certs.client_key),
    );
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        let mut v = vec![
            ("tls_ca".to_owned(), ca.clone()),
            ("tls_cert".to_owned(), cert.clone()),
            ("tls_key".to_owned(), key.clone()),
        ];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };

    // A user and a password (from the environment) over TLS.
    std::env::set_var("RIFFLE_AMQP_TEST_PASSWORD", "s3cret");
    let login = with(&[
        ("user", "riffle-client"),
        ("password", "${RIFFLE_AMQP_TEST_PASSWORD}"),
        ("mandatory", "true"),
    ]);
    let mut s = sink(&tls_url, &pairs(&login)).unwrap();
    // The certificate alone logs in (EXTERNAL), the first server being down.
    let closed = ClosedPort::new();
    let two = format!("amqps://127.0.0.1:{}/%2f,{tls_url}", closed.port);
    let external = with(&[("auth", "external"), ("queue", "secure")]);
    let mut q = source(&two, &pairs(&external)).unwrap();
    assert!(q.describe().contains(&format!("127.0.0.1:{tls_port}")));
    for i in 0..20 {
        s.send(&record("secure", i)).unwrap();
    }
    s.flush(Duration::from_secs(10)).unwrap();
    let got = read(&mut *q, 20, Duration::from_secs(10));
    assert_eq!(
        got,
        (0..20).map(|i| record("secure", i)).collect::<Vec<_>>()
    );
    q.ack().unwrap();
    q.close().unwrap();
    s.close().unwrap();
    // Dropped without a close, on a thread outside the runtime: the
    // connections close without a panic.
    drop(sink(&tls_url, &pairs(&login)).unwrap());
    drop(source(&tls_url, &pairs(&external)).unwrap());
    // The plain port takes the same user.
    let plain = format!(
        "amqp://riffle-client:s3cret@{}/%2f",
        rabbit.server.address()
    );
    let mut p = source(&plain, &[("queue", "secure")]).unwrap();
    assert!(
        read(&mut *p, 1, Duration::from_secs(1)).is_empty(),
        "acknowledged"
    );
    p.close().unwrap();

    // A wrong password, over TLS and in plain text.
    let wrong = with(&[
        ("user", "riffle-client"),
        ("password", "wrong"),
        ("queue", "q"),
    ]);
    let e = source_error(&tls_url, &pairs(&wrong));
    assert!(
        e.contains("ACCESS_REFUSED") && e.contains("authentication failed"),
        "{e}"
    );
    let bad_plain = format!("amqp://riffle-client:wrong@{}/%2f", rabbit.server.address());
    let e = source_error(&bad_plain, &[("queue", "q")]);
    assert!(e.contains("authentication failed"), "{e}");
    // EXTERNAL needs the broker to know the certificate's name as a user:
    // guest's certificate would not do, and the plain port has no
    // certificate at all (refused before connecting).
    let e = source_error(
        &format!("amqp://{}/%2f", rabbit.server.address()),
        &[("auth", "external"), ("queue", "q")],
    );
    assert!(e.contains("tls_cert"), "{e}");

    // A server certificate from another CA.
    let other = vec![
        ("tls_ca".to_owned(), Certs::s(&certs.other_ca)),
        ("user".to_owned(), "riffle-client".to_owned()),
        ("password".to_owned(), "s3cret".to_owned()),
        ("queue".to_owned(), "q".to_owned()),
    ];
    let e = source_error(&tls_url, &pairs(&other));
    assert!(e.contains("give its CA with tls_ca"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{tls_port}")), "{e}");

    // No client certificate for a broker that requires one.
    let no_cert = vec![
        ("tls_ca".to_owned(), ca.clone()),
        ("user".to_owned(), "riffle-client".to_owned()),
        ("password".to_owned(), "s3cret".to_owned()),
        ("queue".to_owned(), "q".to_owned()),
    ];
    let e = source_error(&tls_url, &pairs(&no_cert));
    assert!(e.contains("client certificate"), "{e}");
}
