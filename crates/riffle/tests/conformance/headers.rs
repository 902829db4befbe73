//! Record headers: written by every kind of producer, read back by group
//! consumers and partition reads exactly as written, and passed on from a
//! consumed record to a producer as the consumer's own view.

use std::sync::Arc;

use riffle::log::{Header, Headers, Log, OutRecord, OwnedHeader, TopicSpec};
use riffle::stream::Producer;

use super::txn::{member, poll_until, Collect};
use super::{config, unique, T};

/// Everything headers can be: order that is not sorted, a repeated name, a
/// null value beside an empty one, bytes that are not UTF-8, an empty name.
fn tricky() -> Vec<Header<'static>> {
    vec![
        Header::new("z-first", Some(b"1")),
        Header::new("trace", Some(b"abc")),
        Header::new("trace", Some(b"def")),
        Header::new("null", None),
        Header::new("empty", Some(b"")),
        Header::new("binary", Some(&[0, 0xff, 0xfe, b'\n', 0])),
        Header::new("", Some(b"no name")),
        Header::new("a-last", Some("ünïcödé".as_bytes())),
    ]
}

fn owned(headers: &[Header<'_>]) -> Vec<OwnedHeader> {
    headers.iter().map(Header::to_owned).collect()
}

/// What a topic's single partition holds, read with `read_partition`:
/// (value, headers) in offset order.
fn read_all(log: &Arc<dyn Log>, topic: &str) -> Vec<(String, Vec<OwnedHeader>)> {
    let mut seen = Vec::new();
    log.read_partition(topic, 0, 0, true, T, &mut |r| {
        seen.push((
            String::from_utf8(r.value.to_vec()).unwrap(),
            r.headers.to_vec(),
        ));
        Ok(())
    })
    .unwrap();
    seen
}

/// Reads `topic` as a fresh group until `n` records came, returning
/// (value, headers) in order.
fn consume(log: &Arc<dyn Log>, topic: &str, n: usize) -> Vec<(String, Vec<OwnedHeader>)> {
    let mut cfg = config(&unique("hdr"), topic);
    cfg.read_committed = true;
    let mut c = log.consumer(&cfg).unwrap();
    let mut seen = Collect::default();
    poll_until(
        &mut *c,
        &mut seen,
        &format!("{n} records in {topic}"),
        |_, s| s.records.len() >= n,
    );
    c.close().unwrap();
    seen.records
        .into_iter()
        .map(|r| (String::from_utf8(r.value).unwrap(), r.headers))
        .collect()
}

/// Headers written by a plain producer come back from a group consumer and
/// from `read_partition` in order, with repeats, nulls and binary values;
/// records without headers have none.
pub fn headers_round_trip(log: Arc<dyn Log>) {
    let topic = unique("headers");
    log.create_topic(&TopicSpec::new(&topic, 1), T).unwrap();
    let list = tricky();
    let producer = Producer::new(&*log).unwrap();
    producer.send(&topic, None, b"plain").unwrap();
    producer
        .send_record(OutRecord::new(&topic, Some(b"k"), b"tricky").with_headers(&list[..]))
        .unwrap();
    let one = [Header::new("only", Some(&b"one"[..]))];
    producer
        .send_record(OutRecord::new(&topic, None, b"one").with_headers(&one))
        .unwrap();
    // Keyed records with and without headers, empty keys and values, and
    // values whose length takes one byte to write and two: how a reader
    // tells a record without headers from its bytes.
    let long = "v".repeat(300);
    let keyed: Vec<(&[u8], &str, &[Header<'_>])> = vec![
        (b"k", "", &[]),
        (b"", "", &one),
        (b"", "e", &[]),
        (b"key", &long, &[]),
        (b"key", &long, &one),
        (b"key", "short", &list),
    ];
    for (key, value, headers) in &keyed {
        producer
            .send_record(OutRecord::new(&topic, Some(key), value.as_bytes()).with_headers(*headers))
            .unwrap();
    }
    producer.flush(T).unwrap();

    let mut expected = vec![
        ("plain".to_owned(), Vec::new()),
        ("tricky".to_owned(), owned(&list)),
        ("one".to_owned(), owned(&one)),
    ];
    expected.extend(keyed.iter().map(|(_, v, h)| (v.to_string(), owned(h))));
    assert_eq!(
        consume(&log, &topic, expected.len()),
        expected,
        "through a group consumer"
    );
    assert_eq!(read_all(&log, &topic), expected, "through read_partition");

    let mut views = Vec::new();
    log.read_partition(&topic, 0, 1, false, T, &mut |r| {
        let h = r.headers;
        views.push((
            h.len(),
            h.last("trace").and_then(|h| h.value.map(<[u8]>::to_vec)),
            h.last("null").map(|h| h.to_owned()),
            h.is_empty(),
        ));
        Ok(())
    })
    .unwrap();
    let counts: Vec<(usize, bool)> = views.iter().skip(2).map(|v| (v.0, v.3)).collect();
    let sent: Vec<(usize, bool)> = keyed
        .iter()
        .map(|(_, _, h)| (h.len(), h.is_empty()))
        .collect();
    assert_eq!(counts, sent, "the view counts the keyed records' headers");
    views.truncate(2);
    assert_eq!(
        views,
        [
            (
                8,
                Some(b"def".to_vec()),
                Some(OwnedHeader::new("null", None::<Vec<u8>>)),
                false
            ),
            (1, None, None, false),
        ],
        "the view counts and finds the last of a repeated name"
    );
    log.delete_topic(&topic, T).unwrap();
}

/// Headers written in a transaction arrive with its commit, and a consumed
/// record's headers, handed to a producer as they are, are written
/// unchanged (the path a stateless step takes).
pub fn headers_in_transactions_and_passed_on(log: Arc<dyn Log>) {
    let (input, output, group) = (unique("hdr-in"), unique("hdr-out"), unique("g"));
    log.create_topic(&TopicSpec::new(&input, 1), T).unwrap();
    log.create_topic(&TopicSpec::new(&output, 1), T).unwrap();
    let list = tricky();
    let consumer = member(&log, &group, &input);
    let p = log.transactional_producer(&unique("tx"), None).unwrap();
    p.begin().unwrap();
    p.send(OutRecord::new(&input, None, b"bare").with_headers(Headers::EMPTY))
        .unwrap();
    p.send(OutRecord::new(&input, Some(b"k"), b"rich").with_headers(&list[..]))
        .unwrap();
    p.commit(&[], &consumer.group().unwrap(), T).unwrap();
    drop(consumer);

    let expected = vec![
        ("bare".to_owned(), Vec::new()),
        ("rich".to_owned(), owned(&list)),
    ];
    assert_eq!(
        consume(&log, &input, 2),
        expected,
        "transactional, consumed"
    );
    assert_eq!(read_all(&log, &input), expected, "transactional, read");

    // Pass each record on with its own header view, from a group consumer
    // and from a partition read.
    let forward = Producer::new(&*log).unwrap();
    let mut cfg = config(&unique("fwd"), &input);
    cfg.read_committed = true;
    let mut c = log.consumer(&cfg).unwrap();
    let mut passer = Passer {
        producer: &forward,
        to: &output,
        n: 0,
    };
    let start = std::time::Instant::now();
    while passer.n < 2 {
        assert!(start.elapsed() < T, "timed out passing records on");
        c.poll(std::time::Duration::from_millis(100), 10, &mut passer)
            .unwrap();
    }
    c.close().unwrap();
    log.read_partition(&input, 0, 0, true, T, &mut |r| {
        forward.send_record(OutRecord {
            partition: Some(0),
            ..OutRecord::new(&output, r.key, r.value).with_headers(r.headers)
        })
    })
    .unwrap();
    forward.flush(T).unwrap();
    let twice = [expected.clone(), expected].concat();
    assert_eq!(read_all(&log, &output), twice, "passed on unchanged");
    log.delete_topic(&input, T).unwrap();
    log.delete_topic(&output, T).unwrap();
}

/// Sends every record it is handed on to `to`, with the consumed headers.
struct Passer<'a> {
    producer: &'a Producer,
    to: &'a str,
    n: usize,
}

impl riffle::log::PollVisitor for Passer<'_> {
    fn record(&mut self, r: riffle::log::RecordRef<'_>) -> bool {
        self.producer
            .send_record(OutRecord::new(self.to, r.key, r.value).with_headers(r.headers))
            .unwrap();
        self.n += 1;
        true
    }
    fn event(&mut self, _: riffle::log::GroupEvent) {}
}
