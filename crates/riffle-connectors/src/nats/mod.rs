//! NATS, core and JetStream: subjects as a source, subjects as a sink.
//!
//! # Modes and what they promise
//!
//! - **core** (`mode=core`, the default without `stream`): the source
//!   subscribes to `subject` (wildcards allowed, in a `queue` group if
//!   given) and the sink publishes to it. Core NATS stores nothing and has
//!   no acknowledgements: a message published while nobody is subscribed,
//!   or delivered to a pipeline that dies before its sink confirms, is
//!   gone. Both ends are **at-most-once**. The sink's flush is a round
//!   trip (a message to an inbox of its own, which comes back only after
//!   the server has read every publish before it): it proves the server
//!   received them, not that anyone got them.
//! - **jetstream** (`mode=jetstream`, the default when `stream` is given):
//!   the stream stores messages on disk. The source reads through a durable
//!   pull consumer with explicit acknowledgement and acknowledges (`+ACK`)
//!   each message only in [`Source::ack`](riffle::connect::Source::ack),
//!   after the pipeline's sink has confirmed it; whatever is not
//!   acknowledged within `ack_wait` is delivered again, also to the next
//!   process using the same durable name. The sink publishes each record
//!   with a reply subject and its flush waits for every publish
//!   acknowledgement (`{"stream":..,"seq":..}`), which the server sends
//!   once the message is stored. Both ends are **at-least-once**: a lost
//!   acknowledgement repeats records, nothing is dropped. An
//!   acknowledgement with an error (a full stream, a message too large, an
//!   expectation header that does not hold) refuses that record for good:
//!   the pipeline dead-letters it after its attempts and the others go on.
//!   "No responders" (no stream on the subject, or JetStream starting up)
//!   fails the flush instead, and is retried.
//!
//! # Records
//!
//! A record's key travels as the header `riffle-key` (NATS has no keys),
//! its headers as NATS headers (`HPUB`/`HMSG`), its value as the payload.
//! A header NATS cannot carry (a name with spaces or colons, a value that
//! is not UTF-8 or has a line break) refuses that record.
//! Reading, the `riffle-key` header becomes the key again and the
//! message's subject becomes the record's topic. The key is not used as
//! `Nats-Msg-Id`: the same key normally has many records, and JetStream
//! would drop all but the first within its duplicate window.
//!
//! # Options
//!
//! `url`, `mode`, `subject` (the source's filter; the sink's destination
//! template, with `{key}` and `{topic}` from
//! [`render`](riffle::connect::render)), `queue` (core source), `stream`,
//! `create`, `stream_subjects`, `durable` and `ack_wait` (JetStream), the
//! credentials below and the common TLS options. See [`NATS`] for
//! defaults.
//!
//! A JetStream sink creating its stream stores the subjects its template
//! can produce: `out.{key}` gives `out.>`. A template that could produce
//! any subject (the default `{topic}`) is refused when creating, because a
//! stream on `>` would also store every reply and inbox message on the
//! server; give it a fixed first token or `stream_subjects`. A rendered
//! subject with whitespace cannot be published: that record is refused.
//!
//! # Servers and reconnection
//!
//! `url` lists one or more servers of a cluster, comma-separated:
//! `nats://host:4222,nats://other:4222`. The client connects to one of
//! them (in random order, each within a few seconds) and learns the rest
//! of the cluster from the server. At start-up, no server answering is an
//! error naming them. Once connected, a lost connection is re-established
//! by the client itself, to any server of the cluster, waiting 100 ms
//! doubling to 5 s (less up to half, at random, so that many pipelines do
//! not come back at once), with a warning naming the servers; subscriptions
//! are renewed and publishes made meanwhile are sent on reconnection.
//! What was written to the lost connection may not have reached the
//! server, and neither end can tell which: a sink whose records since its
//! last flush met a lost connection fails its next flush, and the pipeline
//! sends them again: some may then arrive twice, none is silently lost
//! between the sink and the server.
//!
//! # TLS
//!
//! `tls://host:4222` (or `tls=true`) connects with TLS, after the server's
//! plain-text `INFO`, as NATS does; every server of the list uses the same
//! scheme. The common options apply: `tls_ca` (the CA of the server's
//! certificate; the system's roots otherwise), `tls_cert` and `tls_key`
//! (a client certificate, for a server with `verify: true`),
//! `tls_server_name` (the name the certificate must carry, when connecting
//! by address), `tls_insecure` (testing only). A failed handshake is
//! reported in one line with what to change (an untrusted CA, another
//! name, a missing client certificate).
//!
//! # Authentication
//!
//! One of:
//!
//! - user and password: `user` and `password`, or
//!   `nats://user:password@host:port`;
//! - a token: `token`, or `nats://TOKEN@host:port` (a name without a
//!   password in the URL is a token, as every NATS client reads it);
//! - an NKEY: `nkey`, the user's seed (`SU...`), with which the client
//!   signs the server's nonce; the seed never leaves the process;
//! - a `.creds` file: `credentials=/path/user.creds`, the user JWT and
//!   NKEY seed that `nsc` writes, for servers in operator (JWT) mode.
//!
//! Secrets need not be written in the pipeline: any option may be
//! `${ENV_VAR}` or `${file:/path}`, e.g. `password=${NATS_PASSWORD}` or
//! `nkey=${file:/etc/riffle/user.nk}`. Credentials the server refuses are
//! an error at start-up ("authentication failed at NATS server at ...:
//! authorization violation"), not retried.

mod conn;
mod sink;
mod source;

pub use sink::NatsSink;
pub use source::NatsSource;

use std::time::Duration;

use riffle::connect::Delivery;
use riffle::{Error, Result};

use crate::connector::{Connector, Fallback, Opt, Role};
use crate::net::Url;
use crate::options::Options;
use crate::tls;
use conn::{Auth, Conn};

/// The header carrying a record's key.
pub const KEY_HEADER: &str = "riffle-key";

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

pub const NATS: Connector = Connector {
    name: "nats",
    summary: "NATS subjects: core (at-most-once) or a JetStream stream (at-least-once)",
    // The stronger of the two modes; core mode reports at-most-once from
    // `delivery()`.
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "url",
            role: Role::Both,
            default: Fallback::Value(DEFAULT_URL),
            help: "the servers, comma-separated: nats://[user:password@]host:port, nats://token@host:port, tls://... for TLS",
        },
        Opt {
            name: "user",
            role: Role::Both,
            default: Fallback::None,
            help: "user name (with password); also user:password@ in the url",
        },
        Opt {
            name: "password",
            role: Role::Both,
            default: Fallback::None,
            help: "the user's password, e.g. ${NATS_PASSWORD} or ${file:/path}",
        },
        Opt {
            name: "token",
            role: Role::Both,
            default: Fallback::None,
            help: "authentication token, e.g. ${file:/path}; also token@ in the url",
        },
        Opt {
            name: "nkey",
            role: Role::Both,
            default: Fallback::None,
            help: "NKEY seed of the user (SU...), e.g. ${file:/path/user.nk}: signs the server's nonce",
        },
        Opt {
            name: "credentials",
            role: Role::Both,
            default: Fallback::None,
            help: "path of a .creds file (user JWT and NKEY seed), for servers in operator mode",
        },
        Opt {
            name: "mode",
            role: Role::Both,
            default: Fallback::Described("jetstream with stream, else core"),
            help: "core (no storage, at-most-once) or jetstream (stored, acknowledged, at-least-once)",
        },
        Opt {
            name: "subject",
            role: Role::Source,
            default: Fallback::None,
            help: "the subjects to read (wildcards * and > allowed)",
        },
        Opt {
            name: "subject",
            role: Role::Sink,
            default: Fallback::Value("{topic}"),
            help: "where to publish, a template with {key} and {topic}",
        },
        Opt {
            name: "queue",
            role: Role::Source,
            default: Fallback::None,
            help: "core mode: a queue group, so that each message goes to one of its members",
        },
        Opt {
            name: "stream",
            role: Role::Both,
            default: Fallback::None,
            help: "jetstream mode: the stream to read from or publish into",
        },
        Opt {
            name: "create",
            role: Role::Both,
            default: Fallback::Value("true"),
            help: "jetstream mode: create the stream (file storage) if it does not exist",
        },
        Opt {
            name: "stream_subjects",
            role: Role::Both,
            default: Fallback::Described("the source's subject; the sink's template with {..} tokens as wildcards"),
            help: "jetstream mode: the subjects (comma-separated) a created stream stores",
        },
        Opt {
            name: "durable",
            role: Role::Source,
            default: Fallback::Described("riffle-<stream>"),
            help: "jetstream mode: the durable consumer, which remembers what was acknowledged",
        },
        Opt {
            name: "ack_wait",
            role: Role::Source,
            default: Fallback::Value("30s"),
            help: "jetstream mode: how long a message may stay unacknowledged before it is delivered again",
        },
    ],
    tls: true,
    build_source: Some(|mut o, _| {
        let common = Common::read(&mut o)?;
        let subject = o.required("subject")?;
        check_subject(&subject)?;
        let queue = o.string("queue");
        let durable = o.string("durable");
        let ack_wait_given = o.has("ack_wait");
        let ack_wait = NATS.duration(&mut o, Role::Source, "ack_wait")?;
        let js = match common.stream {
            None => {
                if durable.is_some() || ack_wait_given {
                    return Err(invalid("durable and ack_wait need jetstream mode"));
                }
                None
            }
            Some(stream) => {
                if queue.is_some() {
                    return Err(invalid(
                        "queue is for core mode; JetStream consumers share work by durable name",
                    ));
                }
                let durable = durable.unwrap_or_else(|| format!("riffle-{}", stream.name));
                check_name("durable", &durable)?;
                if ack_wait.is_zero() {
                    return Err(invalid("ack_wait must be more than zero"));
                }
                Some(source::Consumer {
                    subjects: stream.subjects.unwrap_or_else(|| vec![subject.clone()]),
                    stream: stream.name,
                    create: stream.create,
                    durable,
                    ack_wait,
                })
            }
        };
        NATS.finish(o, Role::Source)?;
        Ok(Box::new(NatsSource::open(common.conn, subject, queue, js)?))
    }),
    build_sink: Some(|mut o, _| {
        let common = Common::read(&mut o)?;
        let subject = NATS.text(&mut o, Role::Sink, "subject")?;
        let js = match common.stream {
            None => None,
            Some(s) => {
                let subjects = s.subjects.unwrap_or_else(|| vec![wildcards_of(&subject)]);
                // A stream on `>` would also store every reply and inbox
                // message on the server, its own acknowledgements included.
                if s.create && subjects.iter().any(|s| s == ">") {
                    return Err(invalid(&format!(
                        "a stream created for subject '{subject}' would store every subject; \
                         give subject a fixed first token (e.g. out.{{topic}}) or stream_subjects"
                    )));
                }
                Some(sink::Stream {
                    subjects,
                    name: s.name,
                    create: s.create,
                })
            }
        };
        NATS.finish(o, Role::Sink)?;
        Ok(Box::new(NatsSink::open(common.conn, subject, js)?))
    }),
};

fn invalid(why: &str) -> Error {
    Error::InvalidInput(format!("nats: {why}"))
}

/// A subject to read: tokens separated by dots, no whitespace.
fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty()
        || subject.contains(char::is_whitespace)
        || subject.split('.').any(str::is_empty)
    {
        return Err(invalid(&format!(
            "subject '{subject}' must be non-empty tokens separated by '.', without whitespace"
        )));
    }
    Ok(())
}

/// Stream and consumer names end up as tokens of API subjects.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(invalid(&format!(
            "{what} '{name}' must be non-empty without whitespace, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

/// The subjects a template publishes to, for creating a stream: each
/// token with a placeholder becomes `*`, or `>` when it is the last (a key
/// or topic with dots spans several tokens there).
fn wildcards_of(template: &str) -> String {
    let tokens: Vec<&str> = template.split('.').collect();
    let last = tokens.len() - 1;
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| match (t.contains('{'), i == last) {
            (false, _) => *t,
            (true, false) => "*",
            (true, true) => ">",
        })
        .collect::<Vec<_>>()
        .join(".")
}

struct StreamOpts {
    name: String,
    create: bool,
    subjects: Option<Vec<String>>,
}

/// The options both ends read.
struct Common {
    conn: Conn,
    stream: Option<StreamOpts>,
}

impl Common {
    fn read(o: &mut Options) -> Result<Self> {
        let conn = read_conn(o)?;
        let stream = o.string("stream");
        let jetstream = match o.string("mode").as_deref() {
            None => stream.is_some(),
            Some("core") => false,
            Some("jetstream") => true,
            Some(other) => {
                return Err(invalid(&format!(
                    "mode '{other}': expected core or jetstream"
                )))
            }
        };
        let create = NATS.get(o, Role::Both, "create")?;
        let subjects = o.string("stream_subjects").map(|s| {
            s.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        let stream = match (jetstream, stream) {
            (false, None) => {
                if subjects.is_some() {
                    return Err(invalid("stream_subjects needs jetstream mode"));
                }
                None
            }
            (false, Some(_)) => return Err(invalid("stream needs jetstream mode, not core")),
            (true, None) => return Err(invalid("jetstream mode needs the option stream")),
            (true, Some(name)) => {
                check_name("stream", &name)?;
                Some(StreamOpts {
                    name,
                    create,
                    subjects,
                })
            }
        };
        Ok(Self { conn, stream })
    }
}

/// The servers, TLS and credentials. Credentials in a URL apply to every
/// server of the list: a cluster shares its accounts.
fn read_conn(o: &mut Options) -> Result<Conn> {
    let mut servers = Vec::new();
    let mut scheme_tls = None;
    let mut from_url: Option<Auth> = None;
    for text in NATS.text(o, Role::Both, "url")?.split(',').map(str::trim) {
        if text.is_empty() {
            continue;
        }
        let mut url = Url::parse(text, 4222)?;
        let tls = match url.scheme.as_str() {
            "nats" => false,
            "tls" => true,
            other => {
                return Err(invalid(&format!(
                    "url scheme '{other}': expected nats:// or tls://"
                )))
            }
        };
        if scheme_tls.replace(tls).is_some_and(|t| t != tls) {
            return Err(invalid("the urls mix nats:// and tls://; use one scheme"));
        }
        // `user:password@` is a user, a lone `token@` a token.
        let auth = match (url.user.take(), url.password.take()) {
            (None, _) => None,
            (Some(user), Some(password)) => Some(Auth::UserPassword(user, password)),
            (Some(token), None) => Some(Auth::Token(token)),
        };
        if let Some(auth) = auth {
            if from_url.as_ref().is_some_and(|a| *a != auth) {
                return Err(invalid("the urls carry different credentials"));
            }
            from_url = Some(auth);
        }
        servers.push(url);
    }
    if servers.is_empty() {
        return Err(invalid("url names no server"));
    }
    let tls = tls::from_options(o, scheme_tls == Some(true))?;
    let user = o.string("user");
    let password = o.string("password");
    let token = o.string("token");
    let nkey = o.string("nkey").map(|s| s.trim().to_owned());
    let credentials = o.string("credentials");
    let mut given = Vec::new();
    match (user, password) {
        (None, None) => {}
        (Some(u), Some(p)) => given.push(Auth::UserPassword(u, p)),
        (Some(_), None) => return Err(invalid("user needs password")),
        (None, Some(_)) => return Err(invalid("password needs user")),
    }
    if let Some(t) = token {
        given.push(Auth::Token(t));
    }
    if let Some(seed) = nkey {
        if !seed.starts_with("SU") {
            return Err(invalid(
                "nkey must be a user's NKEY seed (starting with SU), not a public key",
            ));
        }
        given.push(Auth::Nkey(seed));
    }
    if let Some(path) = credentials {
        given.push(Auth::Credentials(path.into()));
    }
    given.extend(from_url);
    if given.len() > 1 {
        return Err(invalid(
            "give one way to authenticate: user and password, token, nkey or credentials (in the url or as options)",
        ));
    }
    Ok(Conn {
        servers,
        tls,
        auth: given.pop().unwrap_or(Auth::None),
        losses: Default::default(),
    })
}

/// How long to wait for the server when no caller deadline applies.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_come_from_templates() {
        assert_eq!(wildcards_of("{topic}"), ">");
        assert_eq!(wildcards_of("heaters.{key}.command"), "heaters.*.command");
        assert_eq!(wildcards_of("out.{key}"), "out.>");
        assert_eq!(wildcards_of("fixed.subject"), "fixed.subject");
    }

    #[test]
    fn tls_and_credentials_are_listed() {
        for role in [Role::Source, Role::Sink] {
            let names = NATS.option_names(role);
            for name in ["tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name"] {
                assert!(names.contains(&name), "{name} {names:?}");
            }
            for name in ["user", "password", "token", "nkey", "credentials"] {
                assert!(names.contains(&name), "{name} {names:?}");
            }
        }
    }

    #[test]
    fn options_are_checked_before_connecting() {
        let env = crate::registry::Env {
            log: Box::new(|_| Err(Error::InvalidInput("no log".into()))),
        };
        let source = |pairs: &[(&str, &str)]| {
            let o = Options::from_pairs("nats", pairs.iter().copied());
            (NATS.build_source.unwrap())(o, &env)
                .err()
                .unwrap()
                .to_string()
        };
        // Port 1 is never a NATS server: reaching it means the options passed.
        let e = source(&[
            ("url", "nats://127.0.0.1:1"),
            ("subject", "a"),
            ("colour", "x"),
        ]);
        assert!(e.contains("unknown option 'colour'"), "{e}");
        let e = source(&[("subject", "a"), ("mode", "core"), ("stream", "S")]);
        assert!(e.contains("stream needs jetstream"), "{e}");
        let e = source(&[("subject", "a"), ("stream", "S"), ("queue", "q")]);
        assert!(e.contains("queue is for core"), "{e}");
        let e = source(&[("subject", "a"), ("stream", "a.b")]);
        assert!(e.contains("stream 'a.b'"), "{e}");
        let e = source(&[("url", "mqtt://h:1"), ("subject", "a")]);
        assert!(e.contains("expected nats:// or tls://"), "{e}");
        let e = source(&[("url", "nats://h:1,tls://h:2"), ("subject", "a")]);
        assert!(e.contains("mix nats:// and tls://"), "{e}");
        let e = source(&[("url", "nats://u:p@h:1"), ("token", "t"), ("subject", "a")]);
        assert!(e.contains("one way to authenticate"), "{e}");
        let e = source(&[("nkey", "UABC"), ("subject", "a")]);
        assert!(e.contains("NKEY seed"), "{e}");
        let e = source(&[("tls_ca", "/x.pem"), ("subject", "a")]);
        assert!(
            e.contains("TLS options given for a plain connection"),
            "{e}"
        );
        let e = source(&[("mode", "jetstream"), ("subject", "a")]);
        assert!(e.contains("needs the option stream"), "{e}");
        let sink = |pairs: &[(&str, &str)]| {
            let o = Options::from_pairs("nats", pairs.iter().copied());
            (NATS.build_sink.unwrap())(o, &env)
                .err()
                .unwrap()
                .to_string()
        };
        let e = sink(&[("stream", "S")]);
        assert!(e.contains("would store every subject"), "{e}");
        let e = sink(&[
            ("url", "nats://127.0.0.1:1"),
            ("stream", "S"),
            ("subject", "o.{topic}"),
        ]);
        assert!(e.contains("cannot reach NATS server at 127.0.0.1:1"), "{e}");
        let e = sink(&[("url", "nats://127.0.0.1:1"), ("queue", "q")]);
        assert!(e.contains("unknown option 'queue'"), "{e}");
    }
}
