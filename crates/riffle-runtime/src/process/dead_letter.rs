//! Dead-letter records: what could not be processed, why, and where it was.
//!
//! A dead-letter record keeps the original key as its key, and its value is
//! a JSON object any client can read:
//!
//! ```json
//! {"error": "missing field 'down_delta'", "topic": "sensor", "partition": 3,
//!  "offset": 17, "key": "heater-7", "value": "{\"temperature\": 45}"}
//! ```
//!
//! `value` holds the original bytes when they are UTF-8; otherwise
//! `value_base64` holds them base64-encoded. Either way nothing is lost.
//!
//! An output the log refused to store (after the producer's own retries) is
//! a dead letter too: its `topic` is the topic it was sent to, and it has no
//! `partition` or `offset`. So is a state that no longer decodes: its
//! `topic` is the changelog, with the partition and offset of the changelog
//! record when it came from there (none when it came from a snapshot).
//!
//! A dead letter is a record like any other, and the producer refuses
//! records over its `message.max.bytes`: when the whole would not fit,
//! `value` (or `value_base64`) holds only the first bytes and
//! `value_bytes` the original length.
//!
//! A dead letter also keeps the original record's headers, followed by the
//! same facts as headers, after Kafka Connect's `__connect.errors.*`, so that
//! tools that route on headers need not parse the value:
//!
//! | header | value (UTF-8) |
//! |---|---|
//! | `__riffle.errors.topic` | the record's topic (an output's destination) |
//! | `__riffle.errors.partition` | its partition, in decimal; absent for an output |
//! | `__riffle.errors.offset` | its offset, in decimal; absent for an output |
//! | `__riffle.errors.reason` | the error, as in the envelope's `error` |
//!
//! They come after the original's headers: a dead letter that fails again
//! carries both sets, and the last of each name is the newest.

use serde::Serialize;

use crate::error::Result;
use crate::log::{Headers, OutRecord, OwnedHeader, RecordRef};
use crate::stream::Producer;

/// Header naming the topic of a dead-lettered record.
pub const TOPIC_HEADER: &str = "__riffle.errors.topic";
/// Header with the partition of a dead-lettered record, in decimal.
pub const PARTITION_HEADER: &str = "__riffle.errors.partition";
/// Header with the offset of a dead-lettered record, in decimal.
pub const OFFSET_HEADER: &str = "__riffle.errors.offset";
/// Header with the reason a record was dead-lettered.
pub const REASON_HEADER: &str = "__riffle.errors.reason";

/// The headers of a dead letter: `original`'s, then the error headers.
/// Dead letters are rare, so building them allocates freely.
pub fn headers(
    original: Headers<'_>,
    topic: &str,
    position: Option<(i32, i64)>,
    error: &str,
) -> Vec<OwnedHeader> {
    let mut all = original.to_vec();
    all.push(OwnedHeader::new(TOPIC_HEADER, Some(topic)));
    if let Some((partition, offset)) = position {
        all.push(OwnedHeader::new(
            PARTITION_HEADER,
            Some(partition.to_string()),
        ));
        all.push(OwnedHeader::new(OFFSET_HEADER, Some(offset.to_string())));
    }
    all.push(OwnedHeader::new(REASON_HEADER, Some(error)));
    all
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a str,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    /// The original length, when only the first bytes are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_bytes: Option<usize>,
}

/// Encodes the dead-letter value for `record` failing with `error`.
pub fn envelope(record: &RecordRef<'_>, error: &str) -> Vec<u8> {
    encode(record, Some(record.value), error)
}

/// Like [`envelope`], for a record whose bytes are no longer at hand (it
/// failed on a worker after decoding): the position says where to re-read it.
pub fn envelope_without_value(record: &RecordRef<'_>, error: &str) -> Vec<u8> {
    encode(record, None, error)
}

fn encode(record: &RecordRef<'_>, value: Option<&[u8]>, error: &str) -> Vec<u8> {
    let text = value.and_then(|v| std::str::from_utf8(v).ok());
    let env = Envelope {
        error,
        topic: record.topic,
        partition: Some(record.partition),
        offset: Some(record.offset),
        key: record.key_str(),
        value: text,
        value_base64: value.filter(|_| text.is_none()).map(base64),
        value_bytes: None,
    };
    serde_json::to_vec(&env).expect("an envelope encodes")
}

/// The dead-letter value for a record that has no partition or offset: an
/// output the log refused (`topic` is where it was going), or a record
/// from a connector source (`topic` is where it came from).
pub fn envelope_for_output(topic: &str, key: Option<&[u8]>, value: &[u8], error: &str) -> Vec<u8> {
    envelope_at(topic, None, key, value, error, usize::MAX)
}

/// The dead-letter value for a record (an output, or a stored state) at
/// `position` of `topic` if it has one, at most `max` bytes long: the
/// value's first bytes only, and its length, when the whole would not fit.
pub fn envelope_at(
    topic: &str,
    position: Option<(i32, i64)>,
    key: Option<&[u8]>,
    value: &[u8],
    error: &str,
    max: usize,
) -> Vec<u8> {
    let whole = std::str::from_utf8(value).ok();
    let mut kept = value.len();
    loop {
        let part = &value[..kept];
        let text = std::str::from_utf8(part).ok();
        let env = Envelope {
            error,
            topic,
            partition: position.map(|p| p.0),
            offset: position.map(|p| p.1),
            key: key.and_then(|k| std::str::from_utf8(k).ok()),
            value: text,
            value_base64: text.is_none().then(|| base64(part)),
            value_bytes: (kept < value.len()).then_some(value.len()),
        };
        let bytes = serde_json::to_vec(&env).expect("an envelope encodes");
        if bytes.len() <= max || kept == 0 {
            return bytes;
        }
        // Escapes and base64 make the encoding longer than the bytes it
        // holds: shrink in proportion, by a byte at least.
        kept = ((kept as u128 * max as u128 / bytes.len() as u128) as usize).min(kept - 1);
        // Whole characters of a text, so that it stays text.
        if let Some(whole) = whole {
            while !whole.is_char_boundary(kept) {
                kept -= 1;
            }
        }
    }
}

/// Sends `record` to `topic` as a dead letter.
pub fn send(producer: &Producer, topic: &str, record: &RecordRef<'_>, error: &str) -> Result<()> {
    tracing::debug!(
        "dead letter {}/{}@{}: {error}",
        record.topic,
        record.partition,
        record.offset
    );
    send_envelope(producer, topic, record, &envelope(record, error), error)
}

/// Sends `envelope` for `record` to `topic`, with the dead-letter headers.
pub(crate) fn send_envelope(
    producer: &Producer,
    topic: &str,
    record: &RecordRef<'_>,
    envelope: &[u8],
    error: &str,
) -> Result<()> {
    let headers = headers(
        record.headers,
        record.topic,
        Some((record.partition, record.offset)),
        error,
    );
    producer.send_record(OutRecord::new(topic, record.key, envelope).with_headers(&headers))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Header;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn envelope_keeps_the_original_bytes() {
        let r = RecordRef {
            topic: "sensor",
            partition: 2,
            offset: 9,
            key: Some(b"h1"),
            value: b"not json",
            timestamp: None,
            headers: Headers::EMPTY,
        };
        let v: serde_json::Value = serde_json::from_slice(&envelope(&r, "bad")).unwrap();
        assert_eq!(v["error"], "bad");
        assert_eq!(v["value"], "not json");
        assert_eq!(v["key"], "h1");
        assert_eq!(v["offset"], 9);
        let r = RecordRef {
            value: &[0xff, 0x00],
            key: None,
            ..r
        };
        let v: serde_json::Value = serde_json::from_slice(&envelope(&r, "bad")).unwrap();
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none() && v.get("key").is_none());
    }

    #[test]
    fn an_envelope_too_large_keeps_the_first_bytes_and_the_length() {
        let value = "é".repeat(5000);
        let whole = envelope_at("out", None, Some(b"k"), value.as_bytes(), "big", usize::MAX);
        assert!(whole.len() > 10_000);
        let cut = envelope_at(
            "out",
            Some((1, 7)),
            Some(b"k"),
            value.as_bytes(),
            "big",
            2000,
        );
        assert!(cut.len() <= 2000, "{}", cut.len());
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        assert_eq!(v["value_bytes"], 10_000);
        let kept = v["value"].as_str().unwrap();
        assert!(
            kept.len() > 1000 && value.starts_with(kept),
            "{}",
            kept.len()
        );
        assert_eq!(
            (v["partition"].as_i64(), v["offset"].as_i64()),
            (Some(1), Some(7))
        );
        let binary = vec![0xffu8; 3000];
        let cut = envelope_at("out", None, None, &binary, "big", 1000);
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        assert!(cut.len() <= 1000);
        assert_eq!(v["value_bytes"], 3000);
        assert!(v["value_base64"].as_str().unwrap().len() > 500);
    }

    #[test]
    fn headers_keep_the_originals_then_name_the_error() {
        let original = [
            Header::new("trace", Some(b"t1")),
            Header::new(REASON_HEADER, Some(b"an older failure")),
        ];
        let all = headers(Headers::from(&original), "sensor", Some((3, 17)), "bad");
        let all = Headers::from(&all);
        let names: Vec<&str> = all.iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            [
                "trace",
                REASON_HEADER,
                TOPIC_HEADER,
                PARTITION_HEADER,
                OFFSET_HEADER,
                REASON_HEADER
            ]
        );
        let value = |name| all.last(name).and_then(|h| h.value_str());
        assert_eq!(value(TOPIC_HEADER), Some("sensor"));
        assert_eq!(value(PARTITION_HEADER), Some("3"));
        assert_eq!(value(OFFSET_HEADER), Some("17"));
        assert_eq!(
            value(REASON_HEADER),
            Some("bad"),
            "the newest reason is last"
        );
        let output = headers(Headers::EMPTY, "out", None, "refused");
        assert_eq!(output.len(), 2);
        assert!(Headers::from(&output).last(OFFSET_HEADER).is_none());
    }
}
