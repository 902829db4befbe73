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
//! - `url`: `redis://[[user]:password@]host[:port][/db]`, default
//!   `redis://127.0.0.1:6379`, or `rediss://...` for TLS (port 6379 unless
//!   given). With a password the connection starts with `AUTH`: with a
//!   user name, as that ACL user (`redis://reader:secret@host`), without
//!   one as the `default` user (`redis://:secret@host`). Characters such
//!   as `@`, `:` or `/` in a user name or password are percent-encoded
//!   (`%40`). The path is the database number (`/2`: `SELECT 2` on every
//!   connection), database 0 without one. The whole URL, or just the
//!   password, can come from the environment or a file: `${REDIS_URL}`,
//!   `redis://reader:${file:/run/secrets/redis}@host`.
//! - `stream`: the stream key. Required for a source; for a sink a
//!   template with `{topic}` and `{key}`, default `{topic}`.
//! - `group` (source): the consumer group, default `riffle`.
//! - `consumer` (source): this reader's name in the group, default
//!   `riffle-<hostname>`.
//! - `from` (source): where a newly created group starts: `0` (the whole
//!   stream, default) or `$` (entries added from now on).
//! - `maxlen` (sink): trim the stream to about this many entries on each
//!   `XADD` (`MAXLEN ~`); default no trimming.
//!
//! # TLS
//!
//! `rediss://`, or `tls=true` with `redis://`, connects with TLS (Redis's
//! `tls-port`). The server's certificate is checked against the system's
//! trusted roots, or against the CA certificates in `tls_ca`; a server
//! started with `tls-auth-clients yes` also wants a client certificate,
//! `tls_cert` with its key `tls_key`. The certificate must carry the URL's
//! host: `tls_server_name` is accepted only when it equals that host, as
//! the client checks no other name (connect by the certificate's name
//! instead). `tls_insecure=true` accepts any certificate, for tests only.
//! A failed handshake is reported with its likely cause (an untrusted CA,
//! another name, a plain-text port).
//!
//! # Sentinel
//!
//! `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]`
//! (`rediss+sentinel://` with TLS) finds the master named `master` through
//! the Sentinels listed (port 26379 unless given), asking them in turn
//! until one answers, at every connection: after a failover, the source
//! and the sink reconnect to the newly promoted replica. The user,
//! password and database are the master's; Sentinels that want a password
//! of their own (`requirepass` in their configuration) get
//! `sentinel_password`, and `sentinel_user` for an ACL user. The
//! Sentinels are reached with the same TLS settings as the master.
//! Replication is asynchronous: entries the old master confirmed but had
//! not passed on to the promoted replica are lost with it, and entries a
//! source acknowledged there can come again (`min-replicas-to-write` on
//! the server narrows the first window).
//!
//! # Cluster
//!
//! `redis+cluster://[[user]:password@]host[:port][,host[:port]...]`
//! (`rediss+cluster://` with TLS) reaches a Redis Cluster through the
//! nodes listed (port 6379 unless given): the first that answers tells
//! where the others are and which slots each holds. Each command goes to
//! the node holding its stream's slot, and follows the cluster's
//! redirections when slots move or a replica is promoted. The sink's
//! `{key}` template spreads streams over the nodes; the XADDs of a flush
//! go to their nodes together. The user and password are every node's; a
//! cluster has database 0 only. With TLS (`tls-cluster yes` on the
//! servers), the nodes' certificates must carry the addresses the nodes
//! announce.
//!
//! The client is the `redis` crate's blocking connection, used from the
//! pipeline's own thread: no async runtime is involved.

mod conn;
mod sink;
mod source;

pub use conn::{Conn, SentinelLogin, Target};
pub use sink::RedisSink;
pub use source::{RedisSource, Start};

use riffle::connect::Delivery;

use crate::connector::{Connector, Fallback, Opt, Role};

/// The default server, when no URL is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

pub const REDIS: Connector = Connector {
    name: "redis",
    summary: "Redis Streams: read through a consumer group, appended to with XADD",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "url",
            role: Role::Both,
            default: Fallback::Value(DEFAULT_URL),
            help: "redis://[[user]:password@]host[:port][/db], rediss:// with TLS, redis+sentinel://host[:port][,host[:port]...]/master[/db] through Sentinels, redis+cluster://host[:port][,host[:port]...] for a cluster",
        },
        Opt {
            name: "sentinel_user",
            role: Role::Both,
            default: Fallback::None,
            help: "with redis+sentinel://: the ACL user to log in to the Sentinels as",
        },
        Opt {
            name: "sentinel_password",
            role: Role::Both,
            default: Fallback::None,
            help: "with redis+sentinel://: the Sentinels' password (${ENV} or ${file:path})",
        },
        Opt {
            name: "stream",
            role: Role::Source,
            default: Fallback::None,
            help: "the stream to read",
        },
        Opt {
            name: "stream",
            role: Role::Sink,
            default: Fallback::Value("{topic}"),
            help: "the stream to append to; {topic} and {key} are the record's",
        },
        Opt {
            name: "group",
            role: Role::Source,
            default: Fallback::Value("riffle"),
            help: "the consumer group, created if missing",
        },
        Opt {
            name: "consumer",
            role: Role::Source,
            default: Fallback::Described("riffle-<hostname>"),
            help: "this reader's name in the group; its unacknowledged entries come back to it",
        },
        Opt {
            name: "from",
            role: Role::Source,
            default: Fallback::Value("0"),
            help: "where a new group starts: 0 (the whole stream) or $ (new entries)",
        },
        Opt {
            name: "maxlen",
            role: Role::Sink,
            default: Fallback::None,
            help: "trim the stream to about this many entries (MAXLEN ~)",
        },
    ],
    tls: true,
    build_source: Some(|mut o, _| {
        let target = Target::from_options(&mut o)?;
        let stream = o.required("stream")?;
        let group = REDIS.text(&mut o, Role::Source, "group")?;
        let consumer = o
            .string("consumer")
            .unwrap_or_else(|| format!("riffle-{}", hostname()));
        let start: Start = REDIS.get(&mut o, Role::Source, "from")?;
        REDIS.finish(o, Role::Source)?;
        Ok(Box::new(RedisSource::open(
            target, stream, group, consumer, start,
        )?))
    }),
    build_sink: Some(|mut o, _| {
        let target = Target::from_options(&mut o)?;
        let stream = REDIS.text(&mut o, Role::Sink, "stream")?;
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
