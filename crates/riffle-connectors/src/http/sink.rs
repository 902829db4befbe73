//! Posting each record as one HTTP request, over one kept-alive
//! connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::net::{self, Url};
use crate::runtime;
use crate::tls::{self, Tls};

/// The largest response body read (only its start is used).
const MAX_RESPONSE: usize = 1 << 20;
/// How much of a refusal's body goes into its reason: enough for an
/// endpoint's error message, not a whole HTML page.
const REASON_BODY: usize = 300;

/// How a request is sent.
#[derive(Debug, Clone)]
pub struct RequestConfig {
    /// The URL, possibly a template with `{key}` and `{topic}`; credentials
    /// in it (`https://user:password@host/`) are sent as Basic auth.
    pub url: String,
    pub method: String,
    pub content_type: String,
    /// Attempts per request before the flush fails.
    pub attempts: u32,
    /// How long connecting (with the TLS handshake) may take, and how long
    /// each request may wait for its whole response.
    pub timeout: Duration,
    /// Headers sent with every request, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// TLS settings; an `https://` URL uses TLS with the system's roots
    /// when none are given.
    pub tls: Option<Tls>,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            method: "POST".into(),
            content_type: "application/json".into(),
            attempts: 3,
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
            bearer_token: None,
            tls: None,
        }
    }
}

/// Where a request goes: a parsed URL.
#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// The path and query.
    path: String,
    /// `Basic ...` from credentials in the URL.
    basic: Option<String>,
}

impl Target {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Which connection a request can use.
    fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.address())
    }

    /// For messages: never the credentials.
    fn text(&self) -> String {
        format!("{}{}", self.endpoint(), self.path)
    }

    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            self.address()
        }
    }
}

fn parse_url(text: &str) -> Result<Target> {
    let bad = |why: &str| Error::InvalidInput(format!("http: URL '{}': {why}", redact(text)));
    let tls = match text.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "http" => false,
        Some(s) if s == "https" => true,
        _ => return Err(bad("expected http://host[:port]/path or https://...")),
    };
    let url = Url::parse(text, if tls { 443 } else { 80 }).map_err(|_| bad("not a URL"))?;
    let basic = match (&url.user, &url.password) {
        (None, _) => None,
        (Some(user), password) => {
            let pair = format!(
                "{}:{}",
                percent_decode_str(user).decode_utf8_lossy(),
                percent_decode_str(password.as_deref().unwrap_or("")).decode_utf8_lossy()
            );
            Some(format!("Basic {}", base64(pair.as_bytes())))
        }
    };
    Ok(Target {
        tls,
        host: url.host,
        port: url.port,
        path: url.path,
        basic,
    })
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One queued request.
struct Queued {
    /// Where it goes, or why the record's rendered URL is not a URL
    /// (refused at the flush, in its place among the others).
    target: std::result::Result<Target, String>,
    key: Option<Vec<u8>>,
    body: Bytes,
}

/// The kept-alive connection.
struct Connection {
    endpoint: String,
    sender: SendRequest<Full<Bytes>>,
    /// The connection's task, ending with the error that closed it, if
    /// any: the cause of a request that only learns "closed".
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Connection {
    /// Why the connection closed, if its task knows within a moment: with
    /// TLS 1.3 a refused client certificate arrives as an alert after the
    /// handshake, on the connection's task, while the request sees the
    /// channel closed.
    fn closed_by(&mut self) -> Option<String> {
        runtime::block_on(async {
            tokio::time::timeout(Duration::from_secs(1), &mut self.task)
                .await
                .ok()?
                .ok()?
        })
    }
}

/// Queues records in `send` and posts them, in order, in `flush`.
pub struct HttpSink {
    config: RequestConfig,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: Option<Arc<ClientConfig>>,
    connection: Option<Connection>,
    queue: Vec<Queued>,
}

/// What one attempt came to.
enum Outcome {
    Done,
    /// Worth another attempt: no connection, a timeout, 5xx, 408, 429;
    /// with how long the endpoint asked to wait (`Retry-After`).
    Retry(Error, Option<Duration>),
    /// Not worth another attempt: the endpoint refused the request (a 4xx
    /// other than 408 and 429), with the status and the start of the body.
    Refused(String),
}

/// A response as far as the sink cares.
struct Answer {
    status: StatusCode,
    phrase: String,
    retry_after: Option<Duration>,
    body: Bytes,
    /// Whether the connection can take the next request.
    keep: bool,
}

impl HttpSink {
    /// Checks the URL, the headers and the TLS files, and when the URL's
    /// host and port are fixed (no template in them), connects: an
    /// unreachable endpoint or a failed TLS handshake is reported here,
    /// within seconds, with its address; the connection is the one the
    /// requests then use.
    pub fn open(config: RequestConfig) -> Result<Self> {
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let bad = |why: String| Error::InvalidInput(format!("http: header '{name}': {why}"));
            let name =
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
            headers.push((name, value));
        }
        if let Some(token) = &config.bearer_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::InvalidInput("http: bearer_token: not a valid header value".into())
            })?;
            headers.push((AUTHORIZATION, value));
        }
        let target = parse_url(&config.url);
        if config.bearer_token.is_some() && target.as_ref().is_ok_and(|t| t.basic.is_some()) {
            return Err(Error::InvalidInput(
                "http: give either bearer_token or credentials in the URL, not both".into(),
            ));
        }
        if config.tls.is_some() && target.as_ref().is_ok_and(|t| !t.tls) {
            return Err(Error::InvalidInput(
                "http: TLS options with an http:// URL: use https://".into(),
            ));
        }
        let tls = match (&config.tls, &target) {
            (Some(t), _) => Some(t.client_config()?),
            (None, Ok(t)) if t.tls => Some(Tls::default().client_config()?),
            _ => None,
        };
        let mut sink = Self {
            config,
            headers,
            tls,
            connection: None,
            queue: Vec::new(),
        };
        match target {
            Ok(t) if !t.address().contains('{') => {
                sink.connection = Some(sink.connect(&t)?);
            }
            // A template in the host or port: checked per record.
            Ok(_) => {}
            Err(e) if !sink.config.url.contains('{') => return Err(e),
            Err(_) => {}
        }
        Ok(sink)
    }

    /// Connects, with TLS for https, within the timeout.
    fn connect(&self, target: &Target) -> Result<Connection> {
        let address = target.address();
        let tcp = net::connect("HTTP endpoint", &address)?;
        tcp.set_nonblocking(true)
            .map_err(|e| Error::io(format!("http: {address}"), &e))?;
        let tls = match (target.tls, &self.tls) {
            (false, _) => None,
            (true, Some(c)) => Some(c.clone()),
            (true, None) => Some(Tls::default().client_config()?),
        };
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let name = self
            .config
            .tls
            .as_ref()
            .map_or(host, |t| t.server_name(host))
            .to_owned();
        let what = format!("HTTP endpoint at {address}");
        let (sender, task) = runtime::within(&what, self.config.timeout, async {
            let tcp = tokio::net::TcpStream::from_std(tcp)
                .map_err(|e| Error::io(format!("http: {address}"), &e))?;
            let Some(config) = tls else {
                return handshake(tcp, &what).await;
            };
            let name = ServerName::try_from(name.clone())
                .map_err(|e| Error::InvalidInput(format!("http: TLS server name '{name}': {e}")))?;
            let stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| tls_error(&what, &e.to_string()))?;
            handshake(stream, &what).await
        })?;
        Ok(Connection {
            endpoint: target.endpoint(),
            sender,
            task,
        })
    }

    /// The kept-alive connection to `target`'s endpoint, or a new one;
    /// and whether it is one that served before (and may have been closed
    /// by the endpoint meanwhile).
    fn connection(&mut self, target: &Target) -> Result<(Connection, bool)> {
        if let Some(c) = self.connection.take() {
            if c.endpoint == target.endpoint() && !c.sender.is_closed() {
                return Ok((c, true));
            }
        }
        Ok((self.connect(target)?, false))
    }

    fn request(
        &self,
        target: &Target,
        q: &Queued,
    ) -> std::result::Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::builder()
            .method(self.config.method.as_str())
            .uri(target.path.as_str())
            .header(HOST, target.host_header())
            .header(CONTENT_TYPE, self.config.content_type.as_str());
        if let Some(k) = &q.key {
            builder = builder.header("x-riffle-key", k.as_slice());
        }
        if let Some(basic) = &target.basic {
            builder = builder.header(AUTHORIZATION, basic.as_str());
        }
        let mut request = builder
            .body(Full::new(q.body.clone()))
            .map_err(|e| format!("cannot make a request of this record: {e}"))?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    fn attempt(&mut self, q: &Queued) -> Outcome {
        let target = match &q.target {
            Ok(t) => t,
            Err(why) => return Outcome::Refused(why.clone()),
        };
        let method = self.config.method.clone();
        let what = |detail: String| {
            let server = format!("http {method} {}", target.text());
            Error::Protocol {
                message: format!("{server}: {detail}"),
                server,
            }
        };
        let answer = loop {
            let request = match self.request(target, q) {
                Ok(r) => r,
                Err(why) => return Outcome::Refused(what(why).to_string()),
            };
            let (mut conn, reused) = match self.connection(target) {
                Ok(c) => c,
                Err(e) => return Outcome::Retry(e, None),
            };
            let timeout = self.config.timeout;
            let result = runtime::block_on(async {
                tokio::time::timeout(timeout, exchange(&mut conn.sender, request)).await
            });
            match result {
                Ok(Ok(answer)) => {
                    if answer.keep {
                        self.connection = Some(conn);
                    }
                    break answer;
                }
                // A kept-alive connection the endpoint closed meanwhile:
                // once more on a new one, without counting an attempt.
                Ok(Err(e)) if reused && !e.is_timeout() => {
                    tracing::debug!("{}: {e}; connecting again", target.endpoint());
                    continue;
                }
                Ok(Err(e)) => {
                    let why = if e.is_closed() || e.is_canceled() {
                        conn.closed_by().unwrap_or_else(|| error_text(&e))
                    } else {
                        error_text(&e)
                    };
                    return Outcome::Retry(what(why), None);
                }
                Err(_) => {
                    return Outcome::Retry(what(format!("no answer within {timeout:?}")), None)
                }
            }
        };
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return Outcome::Done;
        }
        let reason = format!("{status} {}: {}", answer.phrase, body_start(&answer.body));
        if refuses_for_good(status) {
            Outcome::Refused(what(reason).to_string())
        } else {
            Outcome::Retry(what(reason), answer.retry_after)
        }
    }
}

/// Starts HTTP/1.1 on a connected stream; the connection's task runs on
/// the shared runtime until the sender or the endpoint closes it, and ends
/// with the error that closed it, if any.
async fn handshake<S>(
    io: S,
    what: &str,
) -> Result<(
    SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Option<String>>,
)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::Protocol {
            server: what.to_owned(),
            message: format!("{what}: {}", error_text(&e)),
        })?;
    let task = tokio::spawn(async move {
        let e = connection.await.err()?;
        tracing::debug!("http connection: {e}");
        Some(error_text(&e))
    });
    Ok((sender, task))
}

/// A TLS failure, with what to change when it is a known one.
fn tls_error(what: &str, detail: &str) -> Error {
    let detail = match tls::explain(detail) {
        Some(hint) => format!("{detail}: {hint}"),
        None => detail.to_owned(),
    };
    Error::Tls {
        broker: what.to_owned(),
        detail,
    }
}

/// An error and its causes on one line.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    if let Some(hint) = tls::explain(&text) {
        text = format!("{text}: {hint}");
    }
    text
}

/// Sends one request and reads its whole response.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> std::result::Result<Answer, hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let phrase = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .or_else(|| parts.status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let retry_after = parts
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    let mut keep = !parts
        .headers
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    // A body too large or cut short leaves the connection unusable; what
    // was read of it is enough for a reason.
    let body = match Limited::new(body, MAX_RESPONSE).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            keep = false;
            Bytes::new()
        }
    };
    Ok(Answer {
        status: parts.status,
        phrase,
        retry_after,
        body,
        keep,
    })
}

/// Whether a status says the request will never succeed as it is: a 4xx,
/// except 408 (the endpoint timed out reading it) and 429 (it wants fewer
/// requests), which say "later", like a 5xx.
fn refuses_for_good(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// The start of a response body, on one line, for a refusal's reason.
fn body_start(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut start: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if start.chars().count() > REASON_BODY {
        start = start.chars().take(REASON_BODY).collect::<String>() + "...";
    }
    start
}

/// A `Retry-After` in seconds. The HTTP-date form is not read: endpoints
/// that throttle send seconds, and a date would need the clocks to agree.
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Sink for HttpSink {
    fn describe(&self) -> String {
        format!("http {} {}", self.config.method, redact(&self.config.url))
    }

    /// At-least-once: a 2xx is taken as the endpoint's confirmation, and a
    /// request without one is sent again.
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        let target = parse_url(&render(&self.config.url, record)).map_err(|e| e.to_string());
        self.queue.push(Queued {
            target,
            key: record.key.clone(),
            body: Bytes::from(record.value.clone()),
        });
        Ok(())
    }

    /// Performs the queued requests in order, each until it gets a 2xx
    /// (at most `attempts` times, 100 ms between the first two, doubling,
    /// or what the endpoint's `Retry-After` asks for). A request refused
    /// for good (a 4xx other than 408 and 429, or a URL that is not one) is
    /// reported with its status and the start of the body, and the others
    /// go on. When a request still fails after its attempts, the flush
    /// stops there and reports the requests before it as settled: the
    /// caller sends only that one and those after it again, so nothing
    /// confirmed is posted twice.
    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let queue = std::mem::take(&mut self.queue);
        let mut refused = Vec::new();
        for (at, q) in queue.iter().enumerate() {
            let mut delay = Duration::from_millis(100);
            let mut attempt = 1;
            loop {
                match self.attempt(q) {
                    Outcome::Done => break,
                    Outcome::Refused(why) => {
                        refused.push((at, why));
                        break;
                    }
                    Outcome::Retry(e, asked) => {
                        let wait = asked.unwrap_or(delay);
                        if attempt >= self.config.attempts {
                            return Err(Unconfirmed::transient(at, refused, &e, asked));
                        }
                        if Instant::now() + wait > deadline {
                            let e = Error::Timeout(format!("{e} (no time left to retry)"));
                            return Err(Unconfirmed::transient(at, refused, &e, asked));
                        }
                        tracing::warn!("{e}; trying again in {wait:?}");
                        std::thread::sleep(wait);
                        delay *= 2;
                        attempt += 1;
                    }
                }
            }
        }
        Unconfirmed::refused(queue.len(), refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_stay_out_of_messages() {
        let t = parse_url("https://al%40ice:p%3Ass@example.com/in?x=1").unwrap();
        assert_eq!(t.basic.as_deref(), Some("Basic YWxAaWNlOnA6c3M="));
        assert_eq!(t.text(), "https://example.com:443/in?x=1");
        assert_eq!(t.host_header(), "example.com");
        assert_eq!(
            redact("https://u:secret@example.com/x"),
            "https://***@example.com/x"
        );
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        let e = parse_url("ftp://u:secret@x/").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
