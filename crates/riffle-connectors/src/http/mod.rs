//! HTTP: a webhook server as a source, a request per record as a sink.
//!
//! HTTP/1.1 with keep-alive, plain or over TLS, on hyper and the shared
//! runtime.
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
//! when it is read: it waits until the pipeline acknowledges the record,
//! i.e. until the pipeline's sink confirmed it durable, and only then gets
//! `204 No Content`. So a 2xx means the record is safe downstream. If the
//! acknowledgement does not come within `timeout`, or the pipeline stops
//! first, the answer is `503 Service Unavailable` with `Retry-After`, and
//! the client's retry may duplicate the record (it may have been delivered
//! after all), never lose it. Requests that are not acceptable reach
//! nothing: 400 (malformed, or a body cut short), 401 (no or a wrong
//! bearer token, when `token` is set), 404 (another path), 405 (not POST),
//! 408 (the body did not arrive within `timeout`), 411 (no length), 413
//! (body over `max_body`). A connection is kept alive after a 2xx and
//! closed after any other answer; it may stay idle for `timeout`. Beyond
//! `max_connections` connections at once, new ones are answered 503.
//!
//! TLS: given `tls_cert` and `tls_key` (PEM files: the server's
//! certificate chain and its key), the server speaks only TLS. With
//! `tls_ca` as well, every client must present a certificate signed by
//! that CA (mutual TLS); a handshake without one fails.
//!
//! Authentication: with `token`, every request must carry
//! `Authorization: Bearer <token>`; others get 401 and reach nothing.
//!
//! # Sink: a request per record
//!
//! Each record becomes one request to `url` (a template: `{key}` and
//! `{topic}` are the record's), its value the body, with `Content-Type`
//! from `content_type`, the key, if any, in `X-Riffle-Key`, and the
//! headers of `header` and `headers`. The requests go one after the other
//! over one kept-alive connection (made when the sink opens, so that an
//! unreachable endpoint or a failed TLS handshake is reported at once);
//! a connection the endpoint closed is replaced. `send` queues; `flush`
//! performs the queued requests in order, each until it gets a 2xx: at
//! most `retries` attempts, 100 ms apart then doubling, or as long as a
//! `Retry-After` (in seconds) asks. Errors worth retrying are connection
//! failures, timeouts, 5xx, 408 and 429. Any other 4xx refuses that record
//! for good, with the status and the start of the response body as the
//! reason, and the flush goes on with the next: the pipeline tries a
//! refused record a few times and then dead-letters it alone
//! ([`Unconfirmed`](riffle::connect::Unconfirmed)). A request still
//! failing after its attempts ends the flush there, and the pipeline sends
//! that record and those after it again, never those already answered 2xx:
//! at-least-once, with 2xx as the endpoint's confirmation (a request whose
//! answer was lost comes again).
//!
//! URL forms: `http://host[:port]/path[?query]`,
//! `https://host[:port]/path[?query]` (TLS, with the common `tls_*`
//! options: `tls_ca` for an endpoint whose certificate a private CA signs,
//! `tls_cert`/`tls_key` for one that asks for a client certificate,
//! `tls_server_name`, `tls_insecure`), and either with credentials,
//! `https://user:password@host/` (percent-encoded), sent as
//! `Authorization: Basic`.
//!
//! Authentication: credentials in the URL (Basic), `bearer_token` (sent as
//! `Authorization: Bearer <token>`; not together with URL credentials), or
//! any header through `header`. Secrets need not be written out: any
//! option value may be `${ENV_VAR}` or `${file:/path}`, e.g.
//! `bearer_token=${file:/run/secrets/hook-token}`.
//!
//! # Options
//!
//! Source: `listen` (default `127.0.0.1:8080`), `path` (default `/`),
//! `timeout` (default `30s`: how long a request waits for its
//! acknowledgement, and how long reading one may take), `max_body` (bytes,
//! default 1048576), `headers` (comma-separated request header names
//! copied into the record, default none), `token` (the bearer token
//! requests must carry, default none), `max_connections` (default 1024),
//! and `tls_cert`, `tls_key`, `tls_ca` as above (`tls=true` is implied by
//! `tls_cert`).
//!
//! Sink: `url` (required), `method` (default `POST`), `content_type`
//! (default `application/json`), `retries` (attempts per request, default
//! 3), `timeout` (for connecting, and for each request's whole response,
//! default `10s`), `header` (one `Name: value` header sent with every
//! request), `headers` (several such headers, separated by `|`),
//! `bearer_token`, and the common `tls*` options.

mod sink;
mod source;

pub use sink::{HttpSink, RequestConfig};
pub use source::{WebhookConfig, WebhookSource};

use riffle::connect::Delivery;
use riffle::Error;

use crate::connector::{Connector, Fallback, Opt, Role};
use crate::options::Options;
use crate::tls::{self, Tls};

pub const HTTP: Connector = Connector {
    name: "http",
    summary: "HTTP: a webhook server (each POST a record, answered once it is safe) or a request per record",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "listen",
            role: Role::Source,
            default: Fallback::Value("127.0.0.1:8080"),
            help: "the address the webhook server listens on",
        },
        Opt {
            name: "path",
            role: Role::Source,
            default: Fallback::Value("/"),
            help: "the path records are POSTed to (others get 404)",
        },
        Opt {
            name: "timeout",
            role: Role::Source,
            default: Fallback::Value("30s"),
            help: "how long a request waits for its record to be confirmed downstream before 503",
        },
        Opt {
            name: "max_body",
            role: Role::Source,
            default: Fallback::Value("1048576"),
            help: "the largest body accepted, in bytes (larger: 413)",
        },
        Opt {
            name: "headers",
            role: Role::Source,
            default: Fallback::None,
            help: "comma-separated request headers copied into each record",
        },
        Opt {
            name: "token",
            role: Role::Source,
            default: Fallback::None,
            help: "the bearer token every request must carry (others: 401); ${ENV} or ${file:path}",
        },
        Opt {
            name: "max_connections",
            role: Role::Source,
            default: Fallback::Value("1024"),
            help: "the most connections served at once (more: 503)",
        },
        Opt {
            name: "url",
            role: Role::Sink,
            default: Fallback::None,
            help: "http[s]://[user:password@]host[:port]/path, {key} and {topic} replaced by the record's",
        },
        Opt {
            name: "method",
            role: Role::Sink,
            default: Fallback::Value("POST"),
            help: "the request method",
        },
        Opt {
            name: "content_type",
            role: Role::Sink,
            default: Fallback::Value("application/json"),
            help: "the Content-Type of each request",
        },
        Opt {
            name: "retries",
            role: Role::Sink,
            default: Fallback::Value("3"),
            help: "attempts per request within a flush (5xx, 408, 429, no connection) before the pipeline takes over",
        },
        Opt {
            name: "timeout",
            role: Role::Sink,
            default: Fallback::Value("10s"),
            help: "how long connecting, and each request's whole response, may take",
        },
        Opt {
            name: "header",
            role: Role::Sink,
            default: Fallback::None,
            help: "a header sent with every request, 'Name: value'",
        },
        Opt {
            name: "headers",
            role: Role::Sink,
            default: Fallback::None,
            help: "headers sent with every request, 'Name: value|Name: value'",
        },
        Opt {
            name: "bearer_token",
            role: Role::Sink,
            default: Fallback::None,
            help: "sent as 'Authorization: Bearer <token>'; ${ENV} or ${file:path}",
        },
    ],
    tls: true,
    build_source: Some(|mut o, _| {
        let config = WebhookConfig {
            listen: HTTP.text(&mut o, Role::Source, "listen")?,
            path: HTTP.text(&mut o, Role::Source, "path")?,
            timeout: HTTP.duration(&mut o, Role::Source, "timeout")?,
            max_body: HTTP.get(&mut o, Role::Source, "max_body")?,
            headers: o
                .string("headers")
                .map(|h| {
                    h.split(',')
                        .map(|n| n.trim().to_ascii_lowercase())
                        .filter(|n| !n.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            token: o.string("token"),
            max_connections: HTTP.get::<usize>(&mut o, Role::Source, "max_connections")?.max(1),
            tls: source_tls(&mut o)?,
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
            method: HTTP.text(&mut o, Role::Sink, "method")?.to_ascii_uppercase(),
            content_type: HTTP.text(&mut o, Role::Sink, "content_type")?,
            attempts: HTTP.get::<u32>(&mut o, Role::Sink, "retries")?.max(1),
            timeout: HTTP.duration(&mut o, Role::Sink, "timeout")?,
            headers: sink_headers(&mut o)?,
            bearer_token: o.string("bearer_token"),
            tls: None,
        };
        let https = config.url.to_ascii_lowercase().starts_with("https://");
        let config = RequestConfig {
            tls: tls::from_options(&mut o, https)?,
            ..config
        };
        HTTP.finish(o, Role::Sink)?;
        Ok(Box::new(HttpSink::open(config)?))
    }),
};

/// The webhook's TLS settings: on when given a certificate; the CA checks
/// client certificates; the client-side settings do not apply.
fn source_tls(o: &mut Options) -> riffle::Result<Option<Tls>> {
    let has_cert = o.clone().string("tls_cert").is_some();
    let Some(tls) = tls::from_options(o, has_cert)? else {
        return Ok(None);
    };
    if tls.server_name.is_some() || tls.insecure {
        return Err(Error::InvalidInput(
            "http: tls_server_name and tls_insecure are for the sink; the webhook takes tls_cert, tls_key and tls_ca"
                .into(),
        ));
    }
    if tls.cert.is_none() {
        return Err(Error::InvalidInput(
            "http: a TLS webhook needs its certificate and key (tls_cert and tls_key)".into(),
        ));
    }
    Ok(Some(tls))
}

/// `header` (one) and `headers` (several, separated by `|`), each
/// `Name: value`.
fn sink_headers(o: &mut Options) -> riffle::Result<Vec<(String, String)>> {
    let mut all = Vec::new();
    let one = o.string("header");
    let several = o.string("headers");
    let lines = one
        .iter()
        .map(String::as_str)
        .chain(several.iter().flat_map(|h| h.split('|')))
        .map(str::trim)
        .filter(|h| !h.is_empty());
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Error::InvalidInput(format!(
                "http: header '{line}': expected 'Name: value'"
            )));
        };
        all.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(all)
}
