//! AMQP 0-9-1 (RabbitMQ): a queue consumed as a source, an exchange
//! published to as a sink.
//!
//! As a source, the queue is consumed with manual acknowledgements and a
//! prefetch limit; the deliveries handed out are acknowledged (one
//! `Basic.Ack` with `multiple` for the highest tag) only in
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
//! from the first unconfirmed one on are published again: at-least-once. Heartbeats are only sent while the sink is being used;
//! a sink idle for longer than two heartbeat intervals finds its
//! connection closed by the broker and replaces it on the next send (it
//! had nothing unconfirmed, so nothing is lost).
//!
//! Records map to messages so: the topic is the routing key (the queue's
//! name when a message has none), the value is the body, the key travels
//! in the message header `riffle-key` (AMQP has no keys of its own), and
//! other headers are the AMQP headers table (non-string values are written
//! out as text; tables and arrays are left out).
//!
//! Options: `url` (`amqp://user:password@host:port/vhost`, the vhost
//! percent-encoded, `%2f` for `/`), `heartbeat`; for the source `queue`,
//! `declare`, `exchange` and `routing_key` (an optional binding), and
//! `prefetch`; for the sink `exchange`, `routing_key` (a template with
//! `{topic}` and `{key}`) and `mandatory`.

mod client;
mod sink;
mod source;

pub use sink::AmqpSink;
pub use source::AmqpSource;

use std::time::Duration;

use riffle::connect::Delivery;
use riffle::{Error, Result};

use crate::connector::{Connector, Opt, Role};
use crate::net::Url;
use crate::options::Options;

use client::Params;

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
            default: Some(DEFAULT_URL),
            help: "the broker, user and virtual host (percent-encoded: %2f is /)",
        },
        Opt {
            name: "heartbeat",
            role: Role::Both,
            default: Some("30s"),
            help: "heartbeat interval asked of the broker (0 disables)",
        },
        Opt {
            name: "queue",
            role: Role::Source,
            default: None,
            help: "the queue to consume",
        },
        Opt {
            name: "declare",
            role: Role::Source,
            default: Some("true"),
            help: "declare the queue (durable) if missing; false only checks that it exists",
        },
        Opt {
            name: "exchange",
            role: Role::Source,
            default: None,
            help: "bind the queue to this exchange (with routing_key)",
        },
        Opt {
            name: "routing_key",
            role: Role::Source,
            default: Some("the queue's name"),
            help: "the binding key when exchange is given",
        },
        Opt {
            name: "prefetch",
            role: Role::Source,
            default: Some("500"),
            help: "the most deliveries unacknowledged at once",
        },
        Opt {
            name: "exchange",
            role: Role::Sink,
            default: Some("\"\" (the default exchange: routing key = queue name)"),
            help: "the exchange to publish to",
        },
        Opt {
            name: "routing_key",
            role: Role::Sink,
            default: Some("{topic}"),
            help: "routing key template, with {topic} and {key}",
        },
        Opt {
            name: "mandatory",
            role: Role::Sink,
            default: Some("false"),
            help: "refuse a message no queue takes (returned by the broker; dead-lettered after the pipeline's attempts) instead of letting the broker drop it",
        },
    ],
    tls: false,
    build_source: Some(|mut o, _| {
        let params = params(&mut o)?;
        let queue = o.required("queue")?;
        let declare = o.parse_or("declare", true)?;
        let exchange = o.string("exchange");
        let routing_key = o.string_or("routing_key", &queue);
        let prefetch: u16 = o.parse_or("prefetch", 500)?;
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
        let exchange = o.string_or("exchange", "");
        let routing_key = o.string_or("routing_key", "{topic}");
        let mandatory = o.parse_or("mandatory", false)?;
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

/// The connection options: `url` and `heartbeat`.
fn params(o: &mut Options) -> Result<Params> {
    let text = o.string_or("url", DEFAULT_URL);
    let heartbeat = o.duration_or("heartbeat", Duration::from_secs(30))?;
    let url = Url::parse(&text, 5672)?;
    if url.scheme != "amqp" {
        return Err(Error::InvalidInput(format!(
            "amqp: URL '{text}': expected amqp:// (TLS is not supported)"
        )));
    }
    let vhost = match url.path.trim_start_matches('/') {
        "" => "/".to_owned(),
        path => percent_decode(path)?,
    };
    Ok(Params {
        address: url.address(),
        user: percent_decode(url.user.as_deref().unwrap_or("guest"))?,
        password: percent_decode(url.password.as_deref().unwrap_or("guest"))?,
        vhost,
        heartbeat,
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

    #[test]
    fn urls_give_address_user_and_vhost() {
        let mut o = Options::new("amqp");
        let p = params(&mut o).unwrap();
        assert_eq!(
            (p.address.as_str(), p.user.as_str(), p.vhost.as_str()),
            ("127.0.0.1:5672", "guest", "/")
        );
        assert_eq!(p.heartbeat, Duration::from_secs(30));
        let mut o = Options::from_pairs(
            "amqp",
            [
                ("url", "amqp://u%40x:p@h:1234/prod%2fa"),
                ("heartbeat", "0"),
            ],
        );
        let p = params(&mut o).unwrap();
        assert_eq!(
            (p.address.as_str(), p.user.as_str(), p.password.as_str()),
            ("h:1234", "u@x", "p")
        );
        assert_eq!((p.vhost.as_str(), p.heartbeat), ("prod/a", Duration::ZERO));
        let mut o = Options::from_pairs("amqp", [("url", "amqps://h")]);
        assert!(params(&mut o).is_err());
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
