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
//! Redis Cluster is not supported.
//!
//! The client is the `redis` crate's blocking connection, used from the
//! pipeline's own thread: no async runtime is involved.

mod sink;
mod source;

pub use sink::RedisSink;
pub use source::{RedisSource, Start};

use std::sync::Mutex;
use std::time::Duration;

use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, ProtocolVersion, RedisError,
    TlsCertificates, TlsMode,
};
use riffle::connect::Delivery;
use riffle::{Error, Result};

use crate::connector::{Connector, Fallback, Opt, Role};
use crate::net::CONNECT_TIMEOUT;
use crate::options::Options;
use crate::tls::{self, Tls};

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
            help: "redis://[[user]:password@]host[:port][/db], rediss:// with TLS, redis+sentinel://host[:port][,host[:port]...]/master[/db] through Sentinels",
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

/// Where a Redis server is (or the Sentinels that know it), how to log
/// in to it and whether with TLS: opens connections on demand.
pub struct Target {
    servers: Servers,
    tls: bool,
    /// `host:port`, or the Sentinels and the master's name, for messages.
    address: String,
    /// The ACL user logged in as, for messages.
    user: String,
}

/// The user and password for the Sentinels, which have their own (the
/// URL's are the master's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelLogin {
    pub user: Option<String>,
    pub password: Option<String>,
}

enum Servers {
    Direct(Client),
    /// The master named in the URL, asked of the Sentinels at every
    /// connection, so that a reconnection after a failover finds the new
    /// master.
    Sentinel(Mutex<SentinelClient>),
}

fn scheme_tls(url: &str) -> bool {
    let url = url.trim_start().to_ascii_lowercase();
    url.starts_with("rediss://") || url.starts_with("rediss+sentinel://")
}

impl Target {
    /// From `url` and the common TLS options.
    pub fn from_options(o: &mut Options) -> Result<Self> {
        let url = REDIS.text(o, Role::Both, "url")?;
        let tls = tls::from_options(o, scheme_tls(&url))?;
        let login = SentinelLogin {
            user: o.string("sentinel_user"),
            password: o.string("sentinel_password"),
        };
        Self::new(&url, tls.as_ref(), login)
    }

    /// From a URL, without TLS unless its scheme says so.
    pub fn parse(url: &str) -> Result<Self> {
        Self::new(
            url,
            scheme_tls(url).then(Tls::default).as_ref(),
            SentinelLogin::default(),
        )
    }

    /// `url` with the TLS settings `tls` (None: a plain connection) and,
    /// for a Sentinel URL, how to log in to the Sentinels.
    pub fn new(url: &str, tls: Option<&Tls>, sentinel_login: SentinelLogin) -> Result<Self> {
        let shown = redacted(url);
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "redis: URL '{shown}': {why} (expected redis://[[user]:password@]host[:port][/db], \
                 rediss://..., or redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db])"
            ))
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("no scheme".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme_tls(url) && tls.is_none() {
            return Err(bad(format!("{scheme}:// with tls=false")));
        }
        let certificates = tls.map(certificates).transpose()?;
        if matches!(scheme.as_str(), "redis+sentinel" | "rediss+sentinel") {
            return Self::sentinel(rest, tls, certificates, sentinel_login, bad);
        }
        if sentinel_login != SentinelLogin::default() {
            return Err(bad(
                "sentinel_user and sentinel_password go with redis+sentinel:// URLs".into(),
            ));
        }
        let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        // Replies are read as RESP2's (arrays, not RESP3's maps), whatever
        // the URL's `?protocol=`.
        let settings = info.redis_settings().clone();
        let info = info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP2));
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            _ => return Err(bad("not a TCP address".into())),
        };
        let user = user_of(&info);
        let client = match (tls, certificates) {
            (Some(tls), Some(certificates)) => {
                check_server_name(tls, &host)?;
                let info = info.set_addr(ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                });
                Client::build_with_tls(info, certificates)
            }
            _ => Client::open(info),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            servers: Servers::Direct(client),
            tls: tls.is_some(),
            address: format!("{host}:{port}"),
            user,
        })
    }

    /// `rest`: what follows `redis+sentinel://`.
    fn sentinel(
        rest: &str,
        tls: Option<&Tls>,
        certificates: Option<TlsCertificates>,
        login: SentinelLogin,
        bad: impl Fn(String) -> Error,
    ) -> Result<Self> {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (master, db) = match path.trim_end_matches('/').split_once('/') {
            Some((m, db)) => (m, Some(db)),
            None => (path.trim_end_matches('/'), None),
        };
        if master.is_empty() {
            return Err(bad("no master name after the Sentinels".into()));
        }
        // The credentials and database are the master's, parsed (and
        // percent-decoded) as those of a plain URL.
        let info = format!(
            "redis://{}localhost/{}",
            userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
            db.unwrap_or("0")
        )
        .into_connection_info()
        .map_err(|e| bad(e.to_string()))?;
        let mut sentinels = Vec::new();
        for h in hosts.split(',').map(str::trim) {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| bad(format!("port of '{h}' is not a number")))?,
                ),
                None => (h, 26379),
            };
            if host.is_empty() {
                return Err(bad("a Sentinel without a host".into()));
            }
            if let Some(tls) = tls {
                check_server_name(tls, host)?;
            }
            sentinels.push(match tls {
                Some(tls) => ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                },
                None => ConnectionAddr::Tcp(host.to_owned(), port),
            });
        }
        let address = format!(
            "Sentinels {} master '{master}'",
            sentinels
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let settings = info.redis_settings();
        let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
            .map_err(|e| bad(e.to_string()))?
            .set_client_to_redis_db(settings.db())
            .set_client_to_redis_protocol(ProtocolVersion::RESP2);
        if let Some(u) = settings.username() {
            builder = builder.set_client_to_redis_username(u);
        }
        if let Some(p) = settings.password() {
            builder = builder.set_client_to_redis_password(p);
        }
        if let Some(u) = &login.user {
            builder = builder.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &login.password {
            builder = builder.set_client_to_sentinel_password(p);
        }
        if let (Some(tls), Some(certificates)) = (tls, certificates) {
            let mode = if tls.insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            };
            builder = builder
                .set_client_to_redis_tls_mode(mode)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(mode)
                .set_client_to_sentinel_certificates(certificates);
        }
        let client = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            servers: Servers::Sentinel(Mutex::new(client)),
            tls: tls.is_some(),
            address,
            user: user_of(&info),
        })
    }

    /// The server for messages: "Redis server at host:port", or "Redis
    /// Sentinels host:port,... master 'name'".
    fn server(&self) -> String {
        match self.servers {
            Servers::Direct(_) => format!("Redis server at {}", self.address),
            Servers::Sentinel(_) => format!("Redis {}", self.address),
        }
    }

    /// `host:port` (or the Sentinels and the master's name), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A new connection, logged in and on the URL's database. An
    /// unreachable server, a failed handshake or refused credentials are
    /// reported within seconds.
    pub fn connect(&self) -> Result<::redis::Connection> {
        let client = match &self.servers {
            Servers::Direct(client) => client.clone(),
            Servers::Sentinel(sentinels) => {
                let found = sentinels
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get_client();
                // No Sentinel answered, or none knows the master: try
                // again later, as with an unreachable server. A refused
                // login is not transient.
                found.map_err(|e| {
                    let login_refused = e.kind() == ErrorKind::AuthenticationFailed
                        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"));
                    let text = e.to_string();
                    match self.error(e) {
                        _ if login_refused => Error::Authentication {
                            broker: self.server(),
                            // The Sentinels log in with sentinel_user and
                            // sentinel_password, the master (checked
                            // for its role here) with the URL's.
                            detail: format!(
                                "a Sentinel or the master refused the login: check \
                                 sentinel_password (and sentinel_user), and the URL's user \
                                 and password ({text})"
                            ),
                        },
                        Error::Connect { detail, .. }
                        | Error::Refused {
                            message: detail, ..
                        }
                        | Error::Protocol {
                            message: detail, ..
                        } => Error::Connect {
                            server: format!("Redis master via {}", self.address),
                            detail,
                        },
                        e => e,
                    }
                })?
            }
        };
        let conn = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(conn) => conn,
            // A plain-text Redis port takes the TLS hello for a command
            // and waits for the rest of its line: no answer, no alert.
            Err(e) if self.tls && e.is_timeout() => {
                return Err(Error::Connect {
                    server: self.server(),
                    detail: format!(
                        "no answer within {CONNECT_TIMEOUT:?} ({e}); \
                         if the port is reachable, it may be a plain-text listener: \
                         TLS wants the server's tls-port"
                    ),
                })
            }
            Err(e) => return Err(self.error(e)),
        };
        conn.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| self.error(e))?;
        // Without a password the connection is set up without a word from
        // the server about one: ask now, so that a missing password is an
        // error here rather than a refusal of every record.
        let mut conn = conn;
        ::redis::cmd("PING")
            .query::<::redis::Value>(&mut conn)
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// A client error as Riffle's: a lost or unreachable connection is
    /// [`Error::Connect`] (transient), a failed handshake [`Error::Tls`]
    /// with its likely cause, refused credentials
    /// [`Error::Authentication`], the server's error reply to a command
    /// [`Error::Refused`] with its text (`WRONGTYPE ...`).
    pub fn error(&self, e: RedisError) -> Error {
        let text = e.to_string();
        let server = self.server();
        if let Some(hint) = tls::explain(&text) {
            return Error::Tls {
                broker: server,
                detail: format!("{text}: {hint}"),
            };
        }
        if e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
            return Error::Authentication {
                broker: server,
                detail: format!(
                    "wrong password for user '{}', or no such user, or it is disabled ({text})",
                    self.user
                ),
            };
        }
        if e.code() == Some("NOAUTH") {
            return Error::Authentication {
                broker: server,
                detail: format!("the server wants a password: give one in the URL ({text})"),
            };
        }
        // A server still loading its data after a restart, or busy with a
        // script, answers again soon: transient like a lost connection.
        if e.is_io_error()
            || matches!(
                e.code(),
                Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
            )
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            return Error::Connect {
                server,
                detail: text,
            };
        }
        match e.code() {
            Some(code) => Error::Refused {
                server: format!("redis {}", self.address),
                message: match e.detail() {
                    Some(detail) => format!("{code} {detail}"),
                    None => code.to_owned(),
                },
            },
            None => Error::Protocol {
                server: format!("redis {}", self.address),
                message: format!("redis {}: {text}", self.address),
            },
        }
    }
}

/// The client certificate and CA of `tls`, read (and checked) now, so
/// that a missing or malformed file is reported before connecting.
fn certificates(tls: &Tls) -> Result<TlsCertificates> {
    tls.client_config()?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::io(format!("TLS: {}", path.display()), &e))
    };
    // The client builds its configuration on the process's default
    // provider: make it ring, as everywhere else.
    #[allow(deprecated)]
    let _ = ::rustls::crypto::ring::default_provider().install_default();
    Ok(TlsCertificates {
        client_tls: match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        },
        root_cert: tls.ca.as_deref().map(read).transpose()?,
    })
}

/// The client checks the certificate against the host it connects to
/// and no other name.
fn check_server_name(tls: &Tls, host: &str) -> Result<()> {
    match &tls.server_name {
        Some(name) if name != host => Err(Error::InvalidInput(format!(
            "redis: tls_server_name '{name}' differs from the URL's host '{host}': \
             the certificate is checked against the host, so connect by the name it carries"
        ))),
        _ => Ok(()),
    }
}

fn user_of(info: &::redis::ConnectionInfo) -> String {
    info.redis_settings()
        .username()
        .unwrap_or("default")
        .to_owned()
}

/// `e` with its message rewritten by `say` (which puts what was being done
/// before it), when it is the server's refusal or breach of protocol; other
/// errors as they are, their kind being what a caller decides on.
pub(crate) fn in_context(e: Error, say: impl FnOnce(&str) -> String) -> Error {
    match e {
        Error::Refused { server, message } => Error::Refused {
            message: say(&message),
            server,
        },
        Error::Protocol { server, message } => Error::Protocol {
            message: say(&message),
            server,
        },
        other => other,
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_or_the_sentinels_and_hide_passwords() {
        assert_eq!(
            Target::parse(DEFAULT_URL).unwrap().address(),
            "127.0.0.1:6379"
        );
        let t = Target::parse("redis://reader:p%40ss@h:7000/2").unwrap();
        assert_eq!((t.address(), t.user.as_str()), ("h:7000", "reader"));
        let t = Target::parse("redis+sentinel://:pw@s1:1,s2/main/3").unwrap();
        assert_eq!(t.address(), "Sentinels s1:1,s2:26379 master 'main'");
        for bad in [
            "http://h",
            "redis://h/x",
            "redis+sentinel://s1",
            "redis+sentinel://s1:x/main",
            "redis+sentinel://:secret@s1,/main",
        ] {
            let e = Target::parse(bad).err().unwrap().to_string();
            assert!(e.contains("redis: URL"), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert_eq!(redacted("rediss://u:pw@h:1/0"), "rediss://u:***@h:1/0");
        assert_eq!(redacted("redis://h"), "redis://h");
    }

    #[test]
    fn tls_comes_from_the_scheme_or_the_options_and_checks_the_hosts_name() {
        let options = |pairs: &[(&str, &str)]| Options::from_pairs("redis", pairs.to_vec());
        let t = Target::from_options(&mut options(&[("url", "rediss://h")])).unwrap();
        assert!(t.tls);
        let t = Target::from_options(&mut options(&[("url", "redis://h"), ("tls", "true")]));
        assert!(t.unwrap().tls);
        let e = Target::from_options(&mut options(&[("url", "rediss://h"), ("tls", "false")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tls=false"), "{e}");
        let e = Target::from_options(&mut options(&[
            ("url", "rediss://127.0.0.1"),
            ("tls_server_name", "redis.example"),
        ]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("tls_server_name 'redis.example'"), "{e}");
        let e = Target::from_options(&mut options(&[
            ("url", "rediss://h"),
            ("tls_ca", "/nonexistent/ca.pem"),
        ]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let e = Target::from_options(&mut options(&[
            ("url", "redis://h"),
            ("sentinel_password", "x"),
        ]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("go with redis+sentinel://"), "{e}");
    }
}
