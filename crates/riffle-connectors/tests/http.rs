//! The HTTP connector: the webhook source with real clients, the sink
//! against a small server in the test and against the webhook, plain and
//! over TLS.
#![cfg(feature = "http")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{scratch_dir, Certs, ClosedPort};
use riffle::connect::{Pipeline, PipelineStats, Record, Sink, Source};
use riffle_connectors::http::{HttpSink, RequestConfig, WebhookConfig, WebhookSource};
use riffle_connectors::{registry, Env, Options};

/// One HTTP/1.1 message as the test's own clients and servers read it.
struct Message {
    /// The request or status line.
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.start.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

/// Reads one message; None when the connection ends before one starts.
/// A response without a length runs to the end of the connection.
fn read_message(r: &mut impl BufRead, response: bool) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut m = Message {
        start: start.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    if response && matches!(m.status(), 100..=199 | 204 | 304) {
        if m.status() == 100 {
            return read_message(r, response);
        }
        return Ok(Some(m));
    }
    if let Some(n) = m.header("content-length") {
        m.body = vec![0; n.parse().unwrap()];
        r.read_exact(&mut m.body)?;
    } else if m.header("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..size]);
        }
    } else if response {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

fn webhook(timeout: Duration, max_body: u64) -> WebhookSource {
    WebhookSource::start(WebhookConfig {
        listen: "127.0.0.1:0".into(),
        path: "/hook".into(),
        max_body,
        timeout,
        headers: vec!["x-origin".into()],
        ..WebhookConfig::default()
    })
    .unwrap()
}

/// A pipeline from a webhook to a file of JSON records, on a thread.
struct Running {
    address: SocketAddr,
    file: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<riffle::Result<PipelineStats>>,
    /// The connections the webhook accepted.
    accepted: Arc<AtomicU64>,
}

fn webhook_to_file(name: &str, max_body: u64) -> Running {
    source_to_file(name, webhook(Duration::from_secs(20), max_body))
}

fn source_to_file(name: &str, source: WebhookSource) -> Running {
    let address = source.local_addr();
    let accepted = source.accepted_connections();
    let file = scratch_dir(name).join("out.jsonl");
    let env = Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log here".into()))),
    };
    let sink = registry::sink(
        Options::from_pairs(
            "file",
            [("path", file.to_str().unwrap()), ("format", "record")],
        ),
        &env,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || Pipeline::new(source, sink).run(&stop))
    };
    Running {
        address,
        file,
        stop,
        thread,
        accepted,
    }
}

impl Running {
    fn finish(self) -> PipelineStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap()
    }
}

/// The records in the file: (topic, key, value as text).
fn lines(file: &Path) -> Vec<(String, Option<String>, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["topic"].as_str().unwrap().to_owned(),
                v["key"].as_str().map(str::to_owned),
                match &v["value"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            )
        })
        .collect()
}

/// Sends raw bytes as a request and reads the status and body.
fn raw(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(address).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request).unwrap();
    // Nothing more is coming: a request cut short ends here.
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_message(&mut BufReader::new(conn), true)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(request)))
        .unwrap_or_else(|| panic!("{}: no answer", String::from_utf8_lossy(request)));
    (r.status(), String::from_utf8_lossy(&r.body).into_owned())
}

fn post(address: SocketAddr, key: &str, body: &str) -> u16 {
    let req = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nX-Riffle-Key: {key}\r\nX-Origin: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(address, req.as_bytes()).0
}

#[test]
fn a_webhook_answers_2xx_only_once_the_record_is_in_the_file() {
    let run = webhook_to_file("http-webhook-file", 1 << 20);
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (address, file) = (run.address, run.file.clone());
            std::thread::spawn(move || {
                for i in 0..10 {
                    let key = format!("k{t}-{i}");
                    let status = post(address, &key, &format!("{{\"n\":{i}}}"));
                    assert_eq!(status, 204, "{key}");
                    // Answered: so it must be in the file already.
                    let got = lines(&file);
                    assert!(
                        got.iter()
                            .any(|(_, k, v)| k.as_deref() == Some(key.as_str())
                                && *v == format!("{{\"n\":{i}}}")),
                        "{key} answered 204 but not in the file"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // A chunked body, as some clients send.
    let (status, _) = raw(
        run.address,
        b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Riffle-Key: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
    );
    assert_eq!(status, 204);

    let file = run.file.clone();
    let stats = run.finish();
    let got = lines(&file);
    assert_eq!(got.len(), 41, "{got:?}");
    assert_eq!(stats.records_in, 41);
    let keys: BTreeSet<_> = got.iter().filter_map(|(_, k, _)| k.clone()).collect();
    assert_eq!(keys.len(), 41);
    assert!(got.iter().all(|(topic, _, _)| topic == "/hook"));
    assert!(got.contains(&("/hook".into(), Some("chunked".into()), "{\"a\":1}".into())));
}

#[test]
fn malformed_requests_are_refused_and_reach_nothing() {
    let run = webhook_to_file("http-malformed", 1000);
    let big = format!(
        "POST /hook HTTP/1.1\r\nContent-Length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    );
    let cases: Vec<(&[u8], u16)> = vec![
        (b"this is not http\r\n\r\n", 400),
        (b"GET /hook HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            b"POST /elsewhere HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            404,
        ),
        (b"POST /hook HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (big.as_bytes(), 413),
        (
            b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnot hex\r\n",
            400,
        ),
        (
            b"POST /hook HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            400,
        ),
        (
            b"POST /hook HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            400,
        ),
    ];
    for (request, want) in &cases {
        let (status, body) = raw(run.address, request);
        assert_eq!(
            status,
            *want,
            "{}: {body}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
    }
    // One good request after them: once it is answered, the file holds
    // it and nothing else.
    assert_eq!(post(run.address, "good", "\"only\""), 204);
    let file = run.file.clone();
    run.finish();
    assert_eq!(
        lines(&file),
        vec![("/hook".into(), Some("good".into()), "only".into())]
    );
}

#[test]
fn a_request_not_acknowledged_in_time_gets_503_and_one_acknowledged_204() {
    let mut source = webhook(Duration::from_millis(500), 1 << 20);
    let address = source.local_addr();

    let client = std::thread::spawn(move || post(address, "k", "1"));
    let mut got = Vec::new();
    while got.is_empty() {
        source.poll(&mut got, 10, Duration::from_secs(5)).unwrap();
    }
    let mut want = Record::new("/hook", Some(b"k"), "1");
    want.headers.push(("x-origin".into(), b"test".to_vec()));
    assert_eq!(got, vec![want]);
    // Polled, never acknowledged: the client is told to send it again.
    assert_eq!(client.join().unwrap(), 503);

    let client = std::thread::spawn(move || post(address, "k", "1"));
    got.clear();
    while got.is_empty() {
        source.poll(&mut got, 10, Duration::from_secs(5)).unwrap();
    }
    source.ack().unwrap();
    assert_eq!(client.join().unwrap(), 204);

    // A request that stops halfway is answered 408 after the timeout.
    let mut conn = TcpStream::connect(address).unwrap();
    conn.write_all(b"POST /hook HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf")
        .unwrap();
    let r = read_message(&mut BufReader::new(conn), true)
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 408);

    // Closing answers a waiting request 503 at once.
    let client = std::thread::spawn(move || post(address, "k", "2"));
    got.clear();
    while got.is_empty() {
        source.poll(&mut got, 10, Duration::from_secs(5)).unwrap();
    }
    source.close().unwrap();
    assert_eq!(client.join().unwrap(), 503);
}

/// What the test server received and accepted: (method, path, content
/// type, key, body).
type Accepted = Arc<Mutex<Vec<(String, String, String, Option<String>, String)>>>;

/// A server answering request number n (from 0) with `answer(n)`, keeping
/// the requests it answered 2xx; returns its address, the accepted
/// requests and how many requests came.
fn test_server(
    answer: fn(usize) -> (u16, &'static str),
) -> (SocketAddr, Accepted, Arc<Mutex<usize>>) {
    let accepted: Accepted = Arc::default();
    let count = Arc::new(Mutex::new(0));
    let (acc, cnt) = (accepted.clone(), count.clone());
    let address = serve_requests(move |head| {
        let n = {
            let mut c = cnt.lock().unwrap();
            *c += 1;
            *c - 1
        };
        let (status, text) = answer(n);
        if (200..300).contains(&status) {
            let mut parts = head.start.split(' ');
            acc.lock().unwrap().push((
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
                head.header("content-type").unwrap_or("").to_owned(),
                head.header("x-riffle-key").map(str::to_owned),
                String::from_utf8(head.body.clone()).unwrap(),
            ));
        }
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
    });
    (address, accepted, count)
}

/// A server answering each request with `answer(request)` (a whole
/// response), keeping connections alive, a thread per connection.
fn serve_requests(answer: impl Fn(&Message) -> String + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                while let Ok(Some(request)) = read_message(&mut reader, false) {
                    if conn.write_all(answer(&request).as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

fn sink(url: String, content_type: &str) -> riffle::Result<HttpSink> {
    HttpSink::open(RequestConfig {
        url,
        method: "PUT".into(),
        content_type: content_type.into(),
        attempts: 3,
        timeout: Duration::from_secs(5),
        ..RequestConfig::default()
    })
}

#[test]
fn the_sink_retries_through_503s_and_the_records_arrive_as_sent() {
    // The first request fails twice, the fourth record's once.
    let (address, accepted, count) = test_server(|n| match n {
        0 | 1 | 5 => (503, "busy\n"),
        _ => (201, "stored"),
    });
    let mut sink = sink(format!("http://{address}/in/{{topic}}"), "text/plain").unwrap();
    let sent: Vec<Record> = (0..6)
        .map(|i| {
            Record::new(
                "t",
                (i != 2).then_some(format!("k{i}").as_bytes()),
                format!("v{i}"),
            )
        })
        .collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let want: Vec<_> = sent
        .iter()
        .map(|r| {
            (
                "PUT".to_owned(),
                "/in/t".to_owned(),
                "text/plain".to_owned(),
                r.key_str().map(str::to_owned),
                String::from_utf8(r.value.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(*accepted.lock().unwrap(), want);
    assert_eq!(*count.lock().unwrap(), 9);
}

#[test]
fn a_4xx_refuses_the_record_at_once_with_the_status_and_body_and_the_others_go_on() {
    let (address, accepted, count) = test_server(|n| match n {
        0 => (422, "field 'temperature' missing\nsecond line"),
        _ => (200, "ok"),
    });
    let mut sink = sink(format!("http://{address}/in"), "application/json").unwrap();
    sink.send(&Record::new("t", None, "{}")).unwrap();
    sink.send(&Record::new("t", None, "{\"temperature\": 1}"))
        .unwrap();
    let e = sink.flush(Duration::from_secs(10)).unwrap_err();
    let riffle::Error::Unconfirmed(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((u.settled, u.refused.len()), (2, 1), "{u:?}");
    let (at, why) = &u.refused[0];
    assert_eq!(*at, 0);
    assert!(
        why.contains("422 X") && why.contains("field 'temperature' missing second line"),
        "{why}"
    );
    assert_eq!(*count.lock().unwrap(), 2, "not retried, the next one sent");
    assert_eq!(accepted.lock().unwrap().len(), 1);
    // The queue went with the flush: a new round starts empty.
    sink.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(*count.lock().unwrap(), 2);
}

/// What a judging server answers a request with this body: status, body,
/// and `Retry-After`.
type Answer = fn(usize, &str) -> (u16, String, Option<u64>);

/// An HTTP server counting, per body, the requests it answered 2xx
/// (arrivals) and all requests, and when each request came.
struct Judge {
    address: SocketAddr,
    arrived: Arc<Mutex<std::collections::HashMap<String, u32>>>,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Judge {
    /// `answer(n, body)` answers request number n (from 0).
    fn start(answer: Answer) -> Self {
        let arrived: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
        let requests: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let (arr, req) = (arrived.clone(), requests.clone());
        let address = serve_requests(move |request| {
            let body = String::from_utf8(request.body.clone()).unwrap();
            let n = {
                let mut r = req.lock().unwrap();
                r.push((Instant::now(), body.clone()));
                r.len() - 1
            };
            let (status, text, retry_after) = answer(n, &body);
            if (200..300).contains(&status) {
                *arr.lock().unwrap().entry(body).or_default() += 1;
            }
            let retry_after =
                retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
            format!(
                "HTTP/1.1 {status} {}\r\n{retry_after}Content-Length: {}\r\n\r\n{text}",
                if status < 300 { "OK" } else { "Refused" },
                text.len()
            )
        });
        Judge {
            address,
            arrived,
            requests,
        }
    }

    fn arrivals(&self) -> std::collections::HashMap<String, u32> {
        self.arrived.lock().unwrap().clone()
    }
}

/// The value of record `i` of a test input.
fn reading(i: usize) -> String {
    format!("{{\"id\":{i},\"measurement\":{}.5}}", 40 + i % 10)
}

/// Runs `count` readings from a file through an HTTP sink posting to
/// `judge`, with a file as dead-letter sink (when `dead` is true) and the
/// policy `no_dead_letter`; returns the result and the dead letters'
/// lines as JSON.
fn file_to_http(
    name: &str,
    count: usize,
    judge: &Judge,
    dead: bool,
    policy: riffle::connect::NoDeadLetter,
) -> (riffle::Result<PipelineStats>, Vec<serde_json::Value>) {
    let dir = scratch_dir(name);
    let input = dir.join("in.jsonl");
    let text: String = (0..count).map(|i| reading(i) + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let env = Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log here".into()))),
    };
    let source = registry::source(
        Options::from_pairs("file", [("path", input.to_str().unwrap())]),
        &env,
    )
    .unwrap();
    let url = format!("http://{}/readings", judge.address);
    let sink = registry::sink(Options::from_pairs("http", [("url", url.as_str())]), &env).unwrap();
    let dead_file = dir.join("dead.jsonl");
    let mut p = Pipeline::new(source, sink)
        .batch(200)
        .no_dead_letter(policy);
    if dead {
        let dl = registry::sink(
            Options::from_pairs(
                "file",
                [("path", dead_file.to_str().unwrap()), ("format", "record")],
            ),
            &env,
        )
        .unwrap();
        p = p.dead_letter(dl);
    }
    let result = p.run(&AtomicBool::new(false));
    let dead = std::fs::read_to_string(&dead_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (result, dead)
}

/// Record 517 of 1,000 is refused with a 400.
const BAD: usize = 517;

fn refuse_the_bad_one(_: usize, body: &str) -> (u16, String, Option<u64>) {
    if body == reading(BAD) {
        (400, "measurement out of range\n(max 45)".into(), None)
    } else {
        (200, "ok".into(), None)
    }
}

#[test]
fn one_record_refused_in_a_thousand_goes_to_the_dead_letters_and_the_rest_arrive_once() {
    let judge = Judge::start(refuse_the_bad_one);
    let (result, dead) = file_to_http(
        "http-one-refused",
        1000,
        &judge,
        true,
        riffle::connect::NoDeadLetter::Stop,
    );
    let stats = result.unwrap();
    let arrived = judge.arrivals();
    assert_eq!(arrived.len(), 999);
    for i in (0..1000).filter(|i| *i != BAD) {
        assert_eq!(arrived.get(&reading(i)), Some(&1), "record {i}");
    }
    assert_eq!(arrived.get(&reading(BAD)), None);
    // Sent three times (the default attempts), then dead-lettered.
    let tries = judge.requests.lock().unwrap().len();
    assert_eq!(tries, 1002);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let envelope = &dead[0]["value"];
    assert_eq!(envelope["value"], reading(BAD));
    let why = envelope["error"].as_str().unwrap();
    assert!(
        why.contains("400 Refused: measurement out of range (max 45)") && why.contains("/readings"),
        "{why}"
    );
    assert_eq!(
        dead[0]["headers"]["__riffle.errors.reason"].as_str(),
        Some(why)
    );
    assert_eq!(
        (
            stats.records_in,
            stats.records_out,
            stats.dead_letters,
            stats.skipped
        ),
        (1000, 999, 1, 0)
    );
}

#[test]
fn without_a_dead_letter_sink_skip_goes_on_and_stop_stops() {
    let judge = Judge::start(refuse_the_bad_one);
    let (result, _) = file_to_http(
        "http-skip",
        1000,
        &judge,
        false,
        riffle::connect::NoDeadLetter::Skip,
    );
    let stats = result.unwrap();
    let arrived = judge.arrivals();
    assert_eq!(arrived.len(), 999);
    assert!(arrived.values().all(|n| *n == 1));
    assert_eq!((stats.records_out, stats.skipped), (999, 1));

    let judge = Judge::start(refuse_the_bad_one);
    let (result, _) = file_to_http(
        "http-stop",
        1000,
        &judge,
        false,
        riffle::connect::NoDeadLetter::Stop,
    );
    let e = result.unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("400 Refused: measurement out of range") && e.contains("stop"),
        "{e}"
    );
    // The batches before the bad record's arrived; the bad one's batch was
    // sent but not acknowledged, so a restart would send it again.
    let arrived = judge.arrivals();
    assert!(arrived.contains_key(&reading(BAD - 1)));
    assert!(!arrived.contains_key(&reading(BAD + 200)));
}

#[test]
fn a_503_then_a_429_with_retry_after_are_waited_out_and_nothing_is_lost_or_doubled() {
    // Request 10 gets a 503, request 20 a 429 asking for a second, and
    // requests 30 to 32 503s: more than the sink's attempts, so the
    // pipeline sends that record and those after it again.
    let judge = Judge::start(|n, _| match n {
        10 | 30..=32 => (503, "restarting".into(), None),
        20 => (429, "slow down".into(), Some(1)),
        _ => (200, "ok".into(), None),
    });
    let started = Instant::now();
    let (result, dead) = file_to_http(
        "http-transient",
        50,
        &judge,
        true,
        riffle::connect::NoDeadLetter::Stop,
    );
    let stats = result.unwrap();
    let arrived = judge.arrivals();
    assert_eq!(arrived.len(), 50);
    assert!(arrived.values().all(|n| *n == 1), "{arrived:?}");
    assert!(dead.is_empty());
    assert_eq!((stats.records_out, stats.retries), (50, 1));
    let requests = judge.requests.lock().unwrap();
    assert_eq!(requests.len(), 55);
    assert!((30..=33).all(|n| requests[n].1 == reading(28)));
    // The request after the 429 is the same record, a second later.
    assert_eq!(requests[20].1, requests[21].1);
    let waited = requests[21].0 - requests[20].0;
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn the_sink_posts_through_a_webhook_pipeline_into_a_file() {
    let run = webhook_to_file("http-both-ways", 1 << 20);
    let mut sink = HttpSink::open(RequestConfig {
        url: format!("http://{}/hook", run.address),
        method: "POST".into(),
        content_type: "application/json".into(),
        attempts: 3,
        timeout: Duration::from_secs(10),
        ..RequestConfig::default()
    })
    .unwrap();
    let sent: Vec<Record> = (0..50)
        .map(|i| {
            Record::new(
                "src",
                Some(format!("key-{i}").as_bytes()),
                format!("{{\"i\":{i}}}"),
            )
        })
        .collect();
    for r in &sent {
        sink.send(r).unwrap();
    }
    sink.flush(Duration::from_secs(30)).unwrap();
    // Confirmed by the webhook, so already in the file, in order.
    let want: Vec<_> = sent
        .iter()
        .map(|r| {
            (
                "/hook".to_owned(),
                r.key_str().map(str::to_owned),
                String::from_utf8(r.value.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(lines(&run.file), want);
    run.finish();
}

#[test]
fn an_unreachable_endpoint_is_named_within_seconds() {
    let closed = ClosedPort::new();
    let port = closed.port;
    let started = Instant::now();
    let e = sink(format!("http://127.0.0.1:{port}/x"), "a/b")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with(&format!("cannot reach HTTP endpoint at 127.0.0.1:{port}")),
        "{e}"
    );
    // A host from the record's key: found unreachable at the flush.
    let mut s = sink("http://{key}/x".into(), "a/b").unwrap();
    s.send(&Record::new(
        "t",
        Some(format!("127.0.0.1:{port}").as_bytes()),
        "v",
    ))
    .unwrap();
    let e = s.flush(Duration::from_secs(10)).unwrap_err().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(started.elapsed() < Duration::from_secs(12));
    // The same over https: the address is named before any handshake.
    let e = sink(format!("https://127.0.0.1:{port}/x"), "a/b")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with(&format!("cannot reach HTTP endpoint at 127.0.0.1:{port}")),
        "{e}"
    );
}

/// A webhook over TLS with the certificate of `certs`, requiring `token`;
/// with `client_ca`, clients must present a certificate it signed.
fn tls_webhook(certs: &Certs, token: &str, client_ca: Option<&Path>) -> WebhookSource {
    let tls = riffle_connectors::tls::Tls {
        cert: Some(certs.server_cert.clone()),
        key: Some(certs.server_key.clone()),
        ca: client_ca.map(Path::to_path_buf),
        ..Default::default()
    };
    WebhookSource::start(WebhookConfig {
        listen: "127.0.0.1:0".into(),
        path: "/hook".into(),
        timeout: Duration::from_secs(20),
        token: Some(token.into()),
        tls: Some(tls),
        ..WebhookConfig::default()
    })
    .unwrap()
}

/// An HTTP sink from options, as a pipeline file gives them.
fn sink_from(pairs: &[(&str, &str)]) -> riffle::Result<Box<dyn Sink>> {
    let env = Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log here".into()))),
    };
    registry::sink(Options::from_pairs("http", pairs.iter().copied()), &env)
}

#[test]
fn the_sink_posts_over_tls_with_a_bearer_token_on_one_kept_alive_connection() {
    let certs = Certs::new("http-tls-token");
    let run = source_to_file("http-tls-token", tls_webhook(&certs, "s3cret", None));
    // The token from a file, as a secret is given.
    let token_file = scratch_dir("http-tls-token-secret").join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let url = format!("https://localhost:{}/hook", run.address.port());
    let ca = Certs::s(&certs.ca);
    let token = format!("${{file:{}}}", token_file.display());
    let mut sink = sink_from(&[("url", &url), ("tls_ca", &ca), ("bearer_token", &token)]).unwrap();
    let sent: Vec<Record> = (0..200)
        .map(|i| {
            Record::new(
                "t",
                Some(format!("k{i}").as_bytes()),
                format!("{{\"i\":{i}}}"),
            )
        })
        .collect();
    for batch in sent.chunks(50) {
        for r in batch {
            sink.send(r).unwrap();
        }
        sink.flush(Duration::from_secs(30)).unwrap();
    }
    let want: Vec<_> = sent
        .iter()
        .map(|r| {
            (
                "/hook".to_owned(),
                r.key_str().map(str::to_owned),
                String::from_utf8(r.value.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(lines(&run.file), want);
    // Every request went over the connection made when the sink opened.
    assert_eq!(run.accepted.load(Ordering::Relaxed), 1);
    drop(sink);
    run.finish();
}

#[test]
fn a_wrong_or_missing_token_is_refused_401_with_a_one_line_reason() {
    let certs = Certs::new("http-wrong-token");
    let run = source_to_file("http-wrong-token", tls_webhook(&certs, "s3cret", None));
    let url = format!("https://127.0.0.1:{}/hook", run.address.port());
    let ca = Certs::s(&certs.ca);
    for (token, why) in [
        (Some("guess"), "wrong bearer token"),
        (None, "a bearer token is required"),
    ] {
        let mut options = vec![("url", url.as_str()), ("tls_ca", ca.as_str())];
        if let Some(t) = token {
            options.push(("bearer_token", t));
        }
        let mut sink = sink_from(&options).unwrap();
        let started = Instant::now();
        sink.send(&Record::new("t", None, "{}")).unwrap();
        let e = sink.flush(Duration::from_secs(30)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let riffle::Error::Unconfirmed(u) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(u.refused.len(), 1, "{u:?}");
        let reason = &u.refused[0].1;
        assert_eq!(reason.lines().count(), 1, "{reason}");
        assert!(
            reason.contains("401 Unauthorized") && reason.contains(why),
            "{reason}"
        );
    }
    let file = run.file.clone();
    run.finish();
    assert!(lines(&file).is_empty());
}

#[test]
fn an_untrusted_certificate_is_named_with_what_to_change() {
    let certs = Certs::new("http-untrusted");
    let source = tls_webhook(&certs, "s3cret", None);
    let url = format!("https://127.0.0.1:{}/hook", source.local_addr().port());
    let started = Instant::now();
    let e = sink_from(&[("url", &url), ("tls_ca", &Certs::s(&certs.other_ca))])
        .err()
        .unwrap()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("TLS handshake failed"), "{e}");
    assert!(e.contains("give its CA with tls_ca"), "{e}");
}

#[test]
fn a_webhook_with_a_ca_takes_only_clients_with_a_certificate_it_signed() {
    let certs = Certs::new("http-mutual");
    let run = source_to_file(
        "http-mutual",
        tls_webhook(&certs, "s3cret", Some(&certs.ca)),
    );
    let url = format!("https://127.0.0.1:{}/hook", run.address.port());
    let ca = Certs::s(&certs.ca);
    let (cert, key) = (Certs::s(&certs.client_cert), Certs::s(&certs.client_key));
    let mut sink = sink_from(&[
        ("url", &url),
        ("tls_ca", &ca),
        ("tls_cert", &cert),
        ("tls_key", &key),
        ("bearer_token", "s3cret"),
    ])
    .unwrap();
    sink.send(&Record::new("t", Some(b"signed"), "1")).unwrap();
    sink.flush(Duration::from_secs(10)).unwrap();
    // Without a client certificate: refused in the handshake (with TLS
    // 1.3 the client learns it at its first request).
    let e = match sink_from(&[
        ("url", &url),
        ("tls_ca", &ca),
        ("bearer_token", "s3cret"),
        ("retries", "1"),
    ]) {
        Err(e) => e.to_string(),
        Ok(mut sink) => {
            sink.send(&Record::new("t", Some(b"unsigned"), "2"))
                .unwrap();
            sink.flush(Duration::from_secs(10)).unwrap_err().to_string()
        }
    };
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("client certificate"), "{e}");
    let file = run.file.clone();
    run.finish();
    assert_eq!(
        lines(&file),
        vec![("/hook".into(), Some("signed".into()), "1".into())]
    );
}

#[test]
fn url_credentials_headers_and_tokens_are_sent() {
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let keep = seen.clone();
    let address = serve_requests(move |request| {
        keep.lock().unwrap().push(Message {
            start: request.start.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        });
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into()
    });
    let url = format!("http://al%40ice:pa%3Ass@{address}/in");
    let mut sink = sink_from(&[
        ("url", &url),
        ("header", "X-Tenant: blue"),
        ("headers", "X-One: 1|X-Two: two words"),
    ])
    .unwrap();
    sink.send(&Record::new("t", None, "a")).unwrap();
    sink.flush(Duration::from_secs(10)).unwrap();
    let mut sink = sink_from(&[
        ("url", &format!("http://{address}/in")),
        ("bearer_token", "tok"),
    ])
    .unwrap();
    sink.send(&Record::new("t", None, "b")).unwrap();
    sink.flush(Duration::from_secs(10)).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // al@ice:pa:ss
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic YWxAaWNlOnBhOnNz")
    );
    assert_eq!(seen[0].header("x-tenant"), Some("blue"));
    assert_eq!(seen[0].header("x-one"), Some("1"));
    assert_eq!(seen[0].header("x-two"), Some("two words"));
    assert_eq!(seen[1].header("authorization"), Some("Bearer tok"));
    // Both at once is a mistake, said so rather than one dropped.
    let e = sink_from(&[("url", url.as_str()), ("bearer_token", "tok")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("either bearer_token or credentials"), "{e}");
    assert!(!e.contains("pa%3Ass"), "{e}");
    // TLS settings for a plain URL are not silently unused.
    let e = sink_from(&[("url", &format!("http://{address}/in")), ("tls", "true")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("use https://"), "{e}");
}

#[test]
fn connections_beyond_the_cap_are_answered_503() {
    let source = WebhookSource::start(WebhookConfig {
        listen: "127.0.0.1:0".into(),
        path: "/hook".into(),
        max_connections: 1,
        timeout: Duration::from_secs(5),
        ..WebhookConfig::default()
    })
    .unwrap();
    let address = source.local_addr();
    let accepted = source.accepted_connections();
    // The first connection is held open, idle.
    let _held = TcpStream::connect(address).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::Relaxed) < 1 {
        assert!(
            Instant::now() < deadline,
            "the first connection not accepted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, body) = raw(
        address,
        b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!((status, body.trim()), (503, "too many connections"));
}

#[test]
fn a_webhook_takes_a_certificate_and_refuses_client_side_tls_options() {
    let certs = Certs::new("http-source-options");
    let env = Env {
        log: Box::new(|_| Err(riffle::Error::InvalidInput("no log here".into()))),
    };
    let source = |pairs: &[(&str, &str)]| {
        let mut all = vec![("listen", "127.0.0.1:0")];
        all.extend_from_slice(pairs);
        registry::source(Options::from_pairs("http", all), &env).map(|s| s.describe())
    };
    let (cert, key) = (Certs::s(&certs.server_cert), Certs::s(&certs.server_key));
    let described = source(&[("tls_cert", &cert), ("tls_key", &key)]).unwrap();
    assert!(
        described.starts_with("http webhook https://127.0.0.1:"),
        "{described}"
    );
    let e = source(&[("tls", "true")]).err().unwrap().to_string();
    assert!(e.contains("tls_cert and tls_key"), "{e}");
    let e = source(&[
        ("tls_cert", &cert),
        ("tls_key", &key),
        ("tls_insecure", "true"),
    ])
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("tls_insecure are for the sink"), "{e}");
}
