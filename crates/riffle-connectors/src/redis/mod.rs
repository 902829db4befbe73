//! Redis Streams: a stream read through a consumer group as a source,
//! entries appended with `XADD` as a sink.
//!
//! # Records and entries
//!
//! A stream entry is a list of field and value pairs. The field `value`
//! is the record's value, the field `key` its key (absent when the record
//! has none), and every other field a header, in order. The sink writes
//! records the same way, so a record read back from a stream the sink
//! wrote is the record sent (a header named `key` or `value` would be
//! read back as the key or value: avoid those names). A source record's
//! topic is the stream's name.
//!
//! # Delivery
//!
//! As a source, at-least-once. The source reads as one consumer of a
//! consumer group (created, with the stream, if missing). Redis keeps each
//! entry it hands out in the group's pending list until the consumer
//! acknowledges it with `XACK`, which the source sends only in
//! [`Source::ack`](riffle::connect::Source::ack), after the pipeline's sink
//! confirmed. After a lost connection, and at start-up, the source first
//! reads its own pending entries again (`XREADGROUP ... 0`), then new ones
//! (`>`): entries read but not acknowledged come again, never lost.
//! Pending entries belong to a consumer *name*, so a restarted pipeline
//! gets them back only under the same name: the default name is
//! `riffle-<hostname>`, stable across restarts; give each pipeline reading
//! the same group from the same host its own `consumer`. Entries left
//! pending by a consumer name never used again are not claimed by others
//! (`XAUTOCLAIM` is not used).
//!
//! As a sink, at-least-once as far as Redis persistence goes. `flush`
//! returns once Redis has answered every `XADD` with the new entry's id,
//! which means the entry is in the server's memory and handed to its
//! append-only file under its `appendfsync` policy: only with
//! `appendfsync always` is it on disk before the answer; with the default
//! `everysec` a server crash can lose the last second, and without the
//! append-only file, everything since the last snapshot. An error reply to
//! an `XADD` (`WRONGTYPE`: the key holds something else than a stream;
//! `OOM`; an ACL denial) refuses that record for good, and the pipeline
//! dead-letters it after its attempts. A lost connection is transient: the
//! entries whose ids were read are settled, the rest are sent again, which
//! can repeat entries Redis stored without the answer arriving (with new
//! ids).
//!
//! # Options
//!
//! - `url`: `redis://[[user]:password@]host[:port]`, default
//!   `redis://127.0.0.1:6379`; with a password, the connection starts with
//!   `AUTH`. TLS (`rediss://`) is not supported.
//! - `stream`: the stream key. Required for a source; for a sink a
//!   template with `{topic}` and `{key}`, default `{topic}`.
//! - `group` (source): the consumer group, default `riffle`.
//! - `consumer` (source): this reader's name in the group, default
//!   `riffle-<hostname>`.
//! - `from` (source): where a newly created group starts: `0` (the whole
//!   stream, default) or `$` (entries added from now on).
//! - `maxlen` (sink): trim the stream to about this many entries on each
//!   `XADD` (`MAXLEN ~`); default no trimming.

mod client;
mod sink;
mod source;

pub use client::{read_value, Value};
pub use sink::RedisSink;
pub use source::{RedisSource, Start};

use riffle::connect::Delivery;

use crate::connector::{Connector, Opt, Role};
use client::{Target, DEFAULT_URL};

pub const REDIS: Connector = Connector {
    name: "redis",
    summary: "Redis Streams: read through a consumer group, appended to with XADD",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "url",
            role: Role::Both,
            default: Some(DEFAULT_URL),
            help: "redis://[[user]:password@]host[:port]",
        },
        Opt {
            name: "stream",
            role: Role::Source,
            default: None,
            help: "the stream to read",
        },
        Opt {
            name: "stream",
            role: Role::Sink,
            default: Some("{topic}"),
            help: "the stream to append to; {topic} and {key} are the record's",
        },
        Opt {
            name: "group",
            role: Role::Source,
            default: Some("riffle"),
            help: "the consumer group, created if missing",
        },
        Opt {
            name: "consumer",
            role: Role::Source,
            default: Some("riffle-<hostname>"),
            help: "this reader's name in the group; its unacknowledged entries come back to it",
        },
        Opt {
            name: "from",
            role: Role::Source,
            default: Some("0"),
            help: "where a new group starts: 0 (the whole stream) or $ (new entries)",
        },
        Opt {
            name: "maxlen",
            role: Role::Sink,
            default: None,
            help: "trim the stream to about this many entries (MAXLEN ~)",
        },
    ],
    tls: false,
    build_source: Some(|mut o, _| {
        let target = Target::parse(&o.string_or("url", DEFAULT_URL))?;
        let stream = o.required("stream")?;
        let group = o.string_or("group", "riffle");
        let consumer = o
            .string("consumer")
            .unwrap_or_else(|| format!("riffle-{}", hostname()));
        let start = o.parse_or("from", Start::Beginning)?;
        REDIS.finish(o, Role::Source)?;
        Ok(Box::new(RedisSource::open(
            target, stream, group, consumer, start,
        )?))
    }),
    build_sink: Some(|mut o, _| {
        let target = Target::parse(&o.string_or("url", DEFAULT_URL))?;
        let stream = o.string_or("stream", "{topic}");
        let maxlen = match o.string("maxlen") {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|e| {
                riffle::Error::InvalidInput(format!("redis: option 'maxlen'='{v}': {e}"))
            })?),
        };
        REDIS.finish(o, Role::Sink)?;
        Ok(Box::new(RedisSink::open(target, stream, maxlen)?))
    }),
};

/// Opens a source from a URL, for callers outside the registry.
pub fn source(url: &str, stream: &str, group: &str, consumer: &str) -> riffle::Result<RedisSource> {
    RedisSource::open(
        Target::parse(url)?,
        stream.into(),
        group.into(),
        consumer.into(),
        Start::Beginning,
    )
}

/// Opens a sink from a URL, for callers outside the registry.
pub fn sink(url: &str, stream: &str) -> riffle::Result<RedisSink> {
    RedisSink::open(Target::parse(url)?, stream.into(), None)
}

/// This machine's name, for the default consumer name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
