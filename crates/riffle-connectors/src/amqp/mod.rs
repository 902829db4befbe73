//! AMQP 0-9-1 (RabbitMQ): a queue consumed as a source, an exchange
//! published to as a sink. The client is amqprs, on the connectors' shared
//! tokio runtime: its reading, writing and heartbeats run there between
//! the pipeline's calls.
//!
//! As a source, the queue is consumed with manual acknowledgements and a
//! prefetch limit; the deliveries handed out are acknowledged (one
//! `basic.ack` with `multiple` for the highest tag) only in
//! [`Source::ack`](riffle::connect::Source::ack), after the pipeline's sink
//! confirmed them. Whatever is unacknowledged when the connection drops
//! the broker puts back in the queue and delivers again: at-least-once.
//! The queue is declared durable by default, so it and its persistent
//! messages survive a broker restart.
//!
//! As a sink, the channel is in publisher-confirm mode and every message is
//! published persistent (delivery mode 2); a flush succeeds only when the
//! broker has acknowledged every message published since the last one,
//! which for a durable queue means written to disk. A negative
//! acknowledgement (`basic.nack`) or, with `mandatory`, a message no queue
//! took (`basic.return`) refuses that message for good: the pipeline
//! publishes it again up to its attempts, then dead-letters it, while the
//! others go on. A lost connection or a timeout is transient: the messages
//! from the first unconfirmed one on are published again: at-least-once.
//! Heartbeats go out from the runtime even while the pipeline is busy
//! elsewhere or idle; a connection the broker closed anyway (it had
//! nothing unconfirmed, so nothing is lost) is replaced on the next send.
//!
//! Records map to messages so: the topic is the routing key (the queue's
//! name when a message has none), the value is the body, the key travels
//! in the message header `riffle-key` (AMQP has no keys of its own), and
//! other headers are the AMQP headers table: text as long strings, other
//! bytes as byte arrays (`x`). A table keeps one value per name (the last
//! of a repeated one) and no order: the source hands headers out sorted
//! by name, non-text values written out as text, tables and arrays left
//! out.
//!
//! # Connecting
//!
//! `url` is `amqp://user:password@host:port/vhost` (port 5672), or
//! `amqps://...` for TLS (port 5671); the vhost percent-encoded, `%2f` for
//! `/` (the default), user and password too (`%40` for `@`). A cluster is
//! several URLs separated by commas, all `amqp://` or all `amqps://`: the
//! first that takes the connection is used, and after a lost connection
//! the source and the sink reconnect with jittered exponential backoff,
//! from the server that answered last on through the others.
//!
//! `user` and `password` override the URL's (guest/guest when neither
//! gives them); like any option they can be `${ENV_VAR}` or
//! `${file:/path}`, which keeps a password off the command line.
//! `auth=external` logs in with SASL EXTERNAL instead: the broker takes
//! the user from the TLS client certificate (`tls_cert`, `tls_key`), with
//! RabbitMQ's `rabbitmq_auth_mechanism_ssl` plugin enabled and `EXTERNAL`
//! among its `auth_mechanisms`; the certificate's subject (or its CN, with
//! `ssl_cert_login_from = common_name`) must be a user of the broker.
//!
//! TLS takes the common options: `tls_ca` (the CA of the broker's
//! certificate; the system's roots otherwise), `tls_cert` and `tls_key`
//! (a client certificate, for a broker with `fail_if_no_peer_cert`),
//! `tls_server_name`, `tls_insecure`; `tls=true` turns TLS on for an
//! `amqp://` URL. A failed handshake says what to change.
//!
//! A login the broker refuses is reported as `403 ACCESS_REFUSED`: the
//! broker closes the connection without saying more, so the same is said
//! of a plain connection to a TLS port.
//!
//! # Options
//!
//! `url`, `user`, `password`, `auth`, `heartbeat` (seconds asked of the
//! broker; 0 takes the broker's) and the TLS options; for the source
//! `queue`, `declare`, `exchange` and `routing_key` (an optional binding),
//! and `prefetch`; for the sink `exchange`, `routing_key` (a template with
//! `{topic}` and `{key}`) and `mandatory`.

mod conn;
mod sink;
mod source;

pub use sink::AmqpSink;
pub use source::AmqpSource;

use riffle::connect::Delivery;
use riffle::{Error, Result};

use crate::connector::{Connector, Fallback, Opt, Role};
use crate::net::Url;
use crate::options::Options;
use crate::tls;

use conn::{Auth, Params, Server, TlsSetup};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub const AMQP: Connector = Connector {
    name: "amqp",
    summary: "AMQP 0-9-1 (RabbitMQ): consume a queue, publish to an exchange with confirms",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "url",
            role: Role::Both,
            default: Fallback::Value(DEFAULT_URL),
            help: "the broker, user and virtual host (percent-encoded: %2f is /); amqps:// for TLS (port 5671); several comma-separated for a cluster",
        },
        Opt {
            name: "user",
            role: Role::Both,
            default: Fallback::Described("the URL's, else guest"),
            help: "the user to log in as (instead of the URL's)",
        },
        Opt {
            name: "password",
            role: Role::Both,
            default: Fallback::Described("the URL's, else guest"),
            help: "the password (instead of the URL's; ${ENV_VAR} or ${file:/path} keep it out of the command line)",
        },
        Opt {
            name: "auth",
            role: Role::Both,
            default: Fallback::Value("plain"),
            help: "plain (user and password) or external (the TLS client certificate names the user: tls_cert, tls_key)",
        },
        Opt {
            name: "heartbeat",
            role: Role::Both,
            default: Fallback::Value("30s"),
            help: "heartbeat interval asked of the broker (0 takes the broker's)",
        },
        Opt {
            name: "queue",
            role: Role::Source,
            default: Fallback::None,
            help: "the queue to consume",
        },
        Opt {
            name: "declare",
            role: Role::Source,
            default: Fallback::Value("true"),
            help: "declare the queue (durable) if missing; false only checks that it exists",
        },
        Opt {
            name: "exchange",
            role: Role::Source,
            default: Fallback::None,
            help: "bind the queue to this exchange (with routing_key)",
        },
        Opt {
            name: "routing_key",
            role: Role::Source,
            default: Fallback::Described("the queue's name"),
            help: "the binding key when exchange is given",
        },
        Opt {
            name: "prefetch",
            role: Role::Source,
            default: Fallback::Value("500"),
            help: "the most deliveries unacknowledged at once",
        },
        Opt {
            name: "exchange",
            role: Role::Sink,
            default: Fallback::Value(""),
            help: "the exchange to publish to (empty: the default exchange, where the routing key names the queue)",
        },
        Opt {
            name: "routing_key",
            role: Role::Sink,
            default: Fallback::Value("{topic}"),
            help: "routing key template, with {topic} and {key}",
        },
        Opt {
            name: "mandatory",
            role: Role::Sink,
            default: Fallback::Value("false"),
            help: "refuse a message no queue takes (returned by the broker; dead-lettered after the pipeline's attempts) instead of letting the broker drop it",
        },
    ],
    tls: true,
    build_source: Some(|mut o, _| {
        let params = params(&mut o)?;
        let queue = o.required("queue")?;
        let declare = AMQP.get(&mut o, Role::Source, "declare")?;
        let exchange = o.string("exchange");
        let routing_key = o.string_or("routing_key", &queue);
        let prefetch: u16 = AMQP.get(&mut o, Role::Source, "prefetch")?;
        AMQP.finish(o, Role::Source)?;
        check_name("queue", &queue)?;
        let binding = exchange.map(|e| (e, routing_key));
        Ok(Box::new(AmqpSource::open(
            params,
            queue,
            declare,
            binding,
            prefetch.max(1),
        )?))
    }),
    build_sink: Some(|mut o, _| {
        let params = params(&mut o)?;
        let exchange = AMQP.text(&mut o, Role::Sink, "exchange")?;
        let routing_key = AMQP.text(&mut o, Role::Sink, "routing_key")?;
        let mandatory = AMQP.get(&mut o, Role::Sink, "mandatory")?;
        AMQP.finish(o, Role::Sink)?;
        check_name("exchange", &exchange)?;
        Ok(Box::new(AmqpSink::open(
            params,
            exchange,
            routing_key,
            mandatory,
        )?))
    }),
};

/// Names travel as AMQP short strings: at most 255 bytes.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.len() > 255 {
        return Err(Error::InvalidInput(format!(
            "amqp: {what} '{name}' is longer than 255 bytes"
        )));
    }
    Ok(())
}

/// The connection options: `url`, `user`, `password`, `auth`,
/// `heartbeat` and the TLS options.
fn params(o: &mut Options) -> Result<Params> {
    let text = AMQP.text(o, Role::Both, "url")?;
    let user = o.string("user");
    let password = o.string("password");
    let auth = match AMQP
        .text(o, Role::Both, "auth")?
        .to_ascii_lowercase()
        .as_str()
    {
        "plain" => Auth::Plain,
        "external" => Auth::External,
        other => {
            return Err(Error::InvalidInput(format!(
                "amqp: auth '{other}': expected plain or external"
            )))
        }
    };
    let heartbeat = AMQP.duration(o, Role::Both, "heartbeat")?;
    let mut servers = Vec::new();
    let mut scheme: Option<String> = None;
    for one in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let url = Url::parse(one, 5672)?;
        let url = match url.scheme.as_str() {
            "amqp" => url,
            // Parsed again for the TLS port when the URL gives none.
            "amqps" => Url::parse(one, 5671)?,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "amqp: URL '{one}': expected amqp:// or amqps://"
                )))
            }
        };
        if scheme.as_ref().is_some_and(|s| *s != url.scheme) {
            return Err(Error::InvalidInput(format!(
                "amqp: url '{text}': every server amqp:// or every server amqps://"
            )));
        }
        scheme = Some(url.scheme.clone());
        let vhost = match url.path.trim_start_matches('/') {
            "" => "/".to_owned(),
            path => percent_decode(path)?,
        };
        servers.push(Server {
            host: url
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port,
            user: match &user {
                Some(u) => u.clone(),
                None => percent_decode(url.user.as_deref().unwrap_or("guest"))?,
            },
            password: match &password {
                Some(p) => p.clone(),
                None => percent_decode(url.password.as_deref().unwrap_or("guest"))?,
            },
            vhost,
        });
    }
    if servers.is_empty() {
        return Err(Error::InvalidInput(format!(
            "amqp: url '{text}': no server"
        )));
    }
    let tls = tls::from_options(o, scheme.as_deref() == Some("amqps"))?;
    if auth == Auth::External && tls.as_ref().is_none_or(|t| t.cert.is_none()) {
        return Err(Error::InvalidInput(
            "amqp: auth=external logs in with the TLS client certificate: give amqps:// (or tls=true) with tls_cert and tls_key".into(),
        ));
    }
    let tls = match tls {
        Some(t) => Some(TlsSetup {
            config: t.client_config()?,
            server_name: t.server_name.clone(),
            client_cert: t.cert.is_some(),
        }),
        None => None,
    };
    Ok(Params {
        servers,
        auth,
        heartbeat,
        tls,
    })
}

/// Decodes `%xx` escapes (a vhost `/` is written `%2f` in a URL).
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::InvalidInput(format!("amqp: bad escape in URL part '{s}'"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::InvalidInput(format!("amqp: URL part '{s}' is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn urls_give_address_user_and_vhost() {
        let mut o = Options::new("amqp");
        let p = params(&mut o).unwrap();
        let s = &p.servers[0];
        assert_eq!(
            (s.address().as_str(), s.user.as_str(), s.vhost.as_str()),
            ("127.0.0.1:5672", "guest", "/")
        );
        assert_eq!(p.heartbeat, Duration::from_secs(30));
        assert!(p.tls.is_none() && p.auth == Auth::Plain);
        let mut o = Options::from_pairs(
            "amqp",
            [
                ("url", "amqp://u%40x:p@h:1234/prod%2fa"),
                ("heartbeat", "0"),
            ],
        );
        let p = params(&mut o).unwrap();
        let s = &p.servers[0];
        assert_eq!(
            (s.address().as_str(), s.user.as_str(), s.password.as_str()),
            ("h:1234", "u@x", "p")
        );
        assert_eq!((s.vhost.as_str(), p.heartbeat), ("prod/a", Duration::ZERO));
        let mut o = Options::from_pairs("amqp", [("url", "http://h")]);
        assert!(params(&mut o).is_err());
    }

    #[test]
    fn several_servers_tls_and_logins() {
        let mut o = Options::from_pairs(
            "amqp",
            [
                ("url", "amqps://a/v, amqps://u:p@b:6000/w"),
                ("tls_insecure", "true"),
                ("user", "me"),
                ("password", "secret"),
            ],
        );
        let p = params(&mut o).unwrap();
        assert!(p.tls.is_some());
        let got: Vec<_> = p
            .servers
            .iter()
            .map(|s| {
                (
                    s.address(),
                    s.user.as_str(),
                    s.password.as_str(),
                    s.vhost.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a:5671".to_owned(), "me", "secret", "v"),
                ("b:6000".to_owned(), "me", "secret", "w")
            ]
        );
        assert_eq!(p.addresses(), "a:5671,b:6000");
        for role in [Role::Source, Role::Sink] {
            let names = AMQP.option_names(role);
            for name in [
                "url", "user", "password", "auth", "tls", "tls_ca", "tls_cert",
            ] {
                assert!(names.contains(&name), "{name} for {role:?}");
            }
        }
        let mut o = Options::from_pairs("amqp", [("url", "amqp://a,amqps://b")]);
        let e = params(&mut o).err().unwrap().to_string();
        assert!(e.contains("every server"), "{e}");
        let mut o = Options::from_pairs("amqp", [("url", "amqp://a"), ("tls_ca", "ca.pem")]);
        let e = params(&mut o).err().unwrap().to_string();
        assert!(e.contains("plain connection"), "{e}");
        let mut o = Options::from_pairs("amqp", [("url", "amqps://a"), ("auth", "external")]);
        let e = params(&mut o).err().unwrap().to_string();
        assert!(e.contains("tls_cert"), "{e}");
        let mut o = Options::from_pairs("amqp", [("auth", "kerberos")]);
        let e = params(&mut o).err().unwrap().to_string();
        assert!(e.contains("plain or external"), "{e}");
    }

    #[test]
    fn unknown_options_are_refused_before_connecting() {
        let env = crate::registry::Env {
            log: Box::new(|_| Err(Error::InvalidInput("no log".into()))),
        };
        let o = Options::from_pairs("amqp", [("queue", "q"), ("qeueu", "x")]);
        let e = crate::registry::source(o, &env).err().unwrap().to_string();
        assert!(e.contains("unknown option 'qeueu'"), "{e}");
        let o = Options::from_pairs("amqp", [("prefetch", "10")]);
        let e = crate::registry::sink(o, &env).err().unwrap().to_string();
        assert!(e.contains("unknown option 'prefetch'"), "{e}");
    }
}
