//! Posting each record as one HTTP request.

use std::io::BufReader;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::client::{self, ReadError};
use crate::net::{self, Url};

/// The largest response body read (only its start is used).
const MAX_RESPONSE: u64 = 1 << 20;
/// How much of a refusal's body goes into its reason: enough for an
/// endpoint's error message, not a whole HTML page.
const REASON_BODY: usize = 300;

/// How a request is sent.
#[derive(Debug, Clone)]
pub struct RequestConfig {
    /// The URL, possibly a template with `{key}` and `{topic}`.
    pub url: String,
    pub method: String,
    pub content_type: String,
    /// Attempts per request before the flush fails.
    pub attempts: u32,
    /// How long each read or write may take (connecting is bounded by
    /// [`net::CONNECT_TIMEOUT`]).
    pub timeout: Duration,
}

/// One queued request.
struct Queued {
    /// The URL, or why the record's rendered URL is not one (refused at
    /// the flush, in its place among the others).
    url: std::result::Result<Url, String>,
    key: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Queues records in `send` and posts them, in order, in `flush`.
pub struct HttpSink {
    config: RequestConfig,
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

impl HttpSink {
    /// Checks the URL, and when its host and port are fixed (no template
    /// in them), that the endpoint can be reached: an unreachable one is
    /// reported here, within seconds, with its address.
    pub fn open(config: RequestConfig) -> Result<Self> {
        match client::parse_url(&config.url) {
            Ok(url) if !url.address().contains('{') => {
                drop(net::connect("HTTP endpoint", &url.address())?);
            }
            // A template in the host or port: checked per record.
            Ok(_) => {}
            Err(e) if !config.url.contains('{') || !config.url.starts_with("http://") => {
                return Err(e)
            }
            Err(_) => {}
        }
        Ok(Self {
            config,
            queue: Vec::new(),
        })
    }

    fn attempt(&self, q: &Queued) -> Outcome {
        let url = match &q.url {
            Ok(url) => url,
            Err(why) => return Outcome::Refused(why.clone()),
        };
        let address = url.address();
        let mut conn = match net::connect("HTTP endpoint", &address) {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e, None),
        };
        let _ = conn.set_read_timeout(Some(self.config.timeout));
        let _ = conn.set_write_timeout(Some(self.config.timeout));
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Content-Type", self.config.content_type.as_bytes()),
            ("Connection", b"close"),
        ];
        if let Some(k) = &q.key {
            headers.push(("X-Riffle-Key", k));
        }
        let what = |detail: String| {
            let server = format!("http {} {}", self.config.method, url_text(url));
            Error::Protocol {
                message: format!("{server}: {detail}"),
                server,
            }
        };
        if let Err(e) =
            client::write_request(&mut conn, &self.config.method, url, &headers, &q.body)
        {
            return match e.kind() {
                std::io::ErrorKind::InvalidInput => {
                    Outcome::Refused(what(e.to_string()).to_string())
                }
                _ => Outcome::Retry(what(e.to_string()), None),
            };
        }
        let mut reader = BufReader::new(conn);
        match client::read_response(&mut reader, &self.config.method, MAX_RESPONSE) {
            Ok((r, _)) if (200..300).contains(&r.status) => Outcome::Done,
            Ok((r, _)) if refuses_for_good(r.status) => {
                // The endpoint's own reason phrase, which may be more
                // telling than the standard one.
                let phrase = r.head.start.splitn(3, ' ').nth(2).unwrap_or("");
                let reason = format!("{} {phrase}: {}", r.status, body_start(&r.body));
                Outcome::Refused(what(reason).to_string())
            }
            Ok((r, _)) => Outcome::Retry(
                what(format!("{} {}", r.status, r.first_line())),
                r.head.header("retry-after").and_then(retry_after),
            ),
            Err(ReadError::Closed) => {
                Outcome::Retry(what("closed without a response".into()), None)
            }
            Err(e) => Outcome::Retry(what(e.to_string()), None),
        }
    }
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

fn url_text(url: &Url) -> String {
    format!("http://{}{}", url.address(), url.path)
}

impl Sink for HttpSink {
    fn describe(&self) -> String {
        format!("http {} {}", self.config.method, self.config.url)
    }

    /// At-least-once: a 2xx is taken as the endpoint's confirmation, and a
    /// request without one is sent again.
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        let url = client::parse_url(&render(&self.config.url, record)).map_err(|e| e.to_string());
        self.queue.push(Queued {
            url,
            key: record.key.clone(),
            body: record.value.clone(),
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
