//! HTTP: a webhook server as a source, a request per record as a sink.
//!
//! HTTP/1.1 over plain TCP, written on `std::net`: https is not supported
//! yet (put a TLS-terminating proxy in front of the webhook, or use an
//! `http://` endpoint).
//!
//! # Source: a webhook server
//!
//! Listens on `listen` and accepts `POST <path>`; each request body is one
//! record, with the request path as its topic, the `X-Riffle-Key` header
//! (if any) as its key, and the request headers named in `headers` as its
//! headers. Bodies are framed by `Content-Length` or chunked; a request
//! with neither is answered 411.
//!
//! Delivery: at-least-once, given a client that sends a request again
//! until it gets a 2xx, as webhook senders do. The request is not answered
//! when it is read: its thread waits until the pipeline acknowledges the
//! record, i.e. until the pipeline's sink confirmed it durable, and only
//! then answers `204 No Content`. So a 2xx means the record is safe
//! downstream. If the acknowledgement does not come within `timeout`, or
//! the pipeline stops first, the answer is `503 Service Unavailable` with
//! `Retry-After`, and the client's retry may duplicate the record (it may
//! have been delivered after all), never lose it. Requests that are not
//! acceptable reach nothing: 400 (malformed), 404 (another path), 405
//! (not POST), 411 (no length), 413 (body over `max_body`), 501 (a
//! transfer coding other than chunked). Every answer closes the
//! connection (no keep-alive).
//!
//! # Sink: a request per record
//!
//! Each record becomes one request to `url` (a template: `{key}` and
//! `{topic}` are the record's), its value the body, with `Content-Type`
//! from `content_type` and the key, if any, in `X-Riffle-Key`. `send`
//! queues; `flush` performs the queued requests in order, each until it
//! gets a 2xx: at most `retries` attempts, 100 ms apart then doubling, or
//! as long as a `Retry-After` (in seconds) asks. Errors worth retrying are
//! connection failures, timeouts, 5xx, 408 and 429. Any other 4xx refuses
//! that record for good, with the status and the start of the response
//! body as the reason, and the flush goes on with the next: the pipeline
//! tries a refused record a few times and then dead-letters it alone
//! ([`Unconfirmed`](riffle::connect::Unconfirmed)). A request still
//! failing after its attempts ends the flush there, and the pipeline sends
//! that record and those after it again, never those already answered 2xx:
//! at-least-once, with 2xx as the endpoint's confirmation (a request whose
//! answer was lost comes again).
//! Each request has a connection of its own (`Connection: close`): simple
//! and never confused by a server closing an idle connection, at the cost
//! of a TCP handshake per record.
//!
//! # Options
//!
//! Source: `listen` (default `127.0.0.1:8080`), `path` (default `/`),
//! `timeout` (default `30s`: how long a request waits for its
//! acknowledgement), `max_body` (bytes, default 1048576), `headers`
//! (comma-separated request header names copied into the record, default
//! none).
//!
//! Sink: `url` (required), `method` (default `POST`), `content_type`
//! (default `application/json`), `retries` (attempts per request, default
//! 3), `timeout` (per read or write, default `10s`; connecting is bounded
//! by 5 s).

mod client;
mod sink;
mod source;

pub use client::{
    read_body, read_head, read_response, request_framing, Framing, Head, ReadError, Response,
};
pub use sink::{HttpSink, RequestConfig};
pub use source::{WebhookConfig, WebhookSource};

use std::time::Duration;

use riffle::connect::Delivery;
use riffle::Error;

use crate::connector::{Connector, Opt, Role};

pub const HTTP: Connector = Connector {
    name: "http",
    summary: "HTTP: a webhook server (each POST a record, answered once it is safe) or a request per record",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "listen",
            role: Role::Source,
            default: Some("127.0.0.1:8080"),
            help: "the address the webhook server listens on",
        },
        Opt {
            name: "path",
            role: Role::Source,
            default: Some("/"),
            help: "the path records are POSTed to (others get 404)",
        },
        Opt {
            name: "timeout",
            role: Role::Source,
            default: Some("30s"),
            help: "how long a request waits for its record to be confirmed downstream before 503",
        },
        Opt {
            name: "max_body",
            role: Role::Source,
            default: Some("1048576"),
            help: "the largest body accepted, in bytes (larger: 413)",
        },
        Opt {
            name: "headers",
            role: Role::Source,
            default: None,
            help: "comma-separated request headers copied into each record",
        },
        Opt {
            name: "url",
            role: Role::Sink,
            default: None,
            help: "http://host[:port]/path, {key} and {topic} replaced by the record's (no https yet)",
        },
        Opt {
            name: "method",
            role: Role::Sink,
            default: Some("POST"),
            help: "the request method",
        },
        Opt {
            name: "content_type",
            role: Role::Sink,
            default: Some("application/json"),
            help: "the Content-Type of each request",
        },
        Opt {
            name: "retries",
            role: Role::Sink,
            default: Some("3"),
            help: "attempts per request within a flush (5xx, 408, 429, no connection) before the pipeline takes over",
        },
        Opt {
            name: "timeout",
            role: Role::Sink,
            default: Some("10s"),
            help: "how long each read or write of a request may take",
        },
    ],
    tls: false,
    build_source: Some(|mut o, _| {
        let config = WebhookConfig {
            listen: o.string_or("listen", "127.0.0.1:8080"),
            path: o.string_or("path", "/"),
            timeout: o.duration_or("timeout", Duration::from_secs(30))?,
            max_body: o.parse_or("max_body", 1u64 << 20)?,
            headers: o
                .string("headers")
                .map(|h| {
                    h.split(',')
                        .map(|n| n.trim().to_ascii_lowercase())
                        .filter(|n| !n.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !config.path.starts_with('/') {
            return Err(Error::InvalidInput(format!(
                "http: option 'path'='{}': must start with /",
                config.path
            )));
        }
        HTTP.finish(o, Role::Source)?;
        Ok(Box::new(WebhookSource::start(config)?))
    }),
    build_sink: Some(|mut o, _| {
        let config = RequestConfig {
            url: o.required("url")?,
            method: o.string_or("method", "POST").to_ascii_uppercase(),
            content_type: o.string_or("content_type", "application/json"),
            attempts: o.parse_or("retries", 3u32)?.max(1),
            timeout: o.duration_or("timeout", Duration::from_secs(10))?,
        };
        HTTP.finish(o, Role::Sink)?;
        Ok(Box::new(HttpSink::open(config)?))
    }),
};
