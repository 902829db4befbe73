//! Posting each record as one HTTP request.

use std::io::BufReader;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink};
use riffle::{Error, Result};

use super::client::{self, ReadError};
use crate::net::{self, Url};

/// The largest response body read (only its first line is used).
const MAX_RESPONSE: u64 = 1 << 20;

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
    url: Url,
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
    /// Worth another attempt: no connection, a timeout, 5xx, 408, 429.
    Retry(Error),
    /// Not worth another attempt: the endpoint refused the request (4xx).
    Refused(Error),
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
        let address = q.url.address();
        let mut conn = match net::connect("HTTP endpoint", &address) {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(e),
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
            Error::Backend(format!(
                "http {} {}: {detail}",
                self.config.method,
                url_text(&q.url)
            ))
        };
        if let Err(e) =
            client::write_request(&mut conn, &self.config.method, &q.url, &headers, &q.body)
        {
            return match e.kind() {
                std::io::ErrorKind::InvalidInput => Outcome::Refused(what(e.to_string())),
                _ => Outcome::Retry(what(e.to_string())),
            };
        }
        let mut reader = BufReader::new(conn);
        match client::read_response(&mut reader, &self.config.method, MAX_RESPONSE) {
            Ok((r, _)) if (200..300).contains(&r.status) => Outcome::Done,
            Ok((r, _)) => {
                let e = what(format!("{} {}", r.status, r.first_line()));
                if (400..500).contains(&r.status) && r.status != 408 && r.status != 429 {
                    Outcome::Refused(e)
                } else {
                    Outcome::Retry(e)
                }
            }
            Err(ReadError::Closed) => Outcome::Retry(what("closed without a response".into())),
            Err(e) => Outcome::Retry(what(e.to_string())),
        }
    }
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
        let url = client::parse_url(&render(&self.config.url, record))?;
        self.queue.push(Queued {
            url,
            key: record.key.clone(),
            body: record.value.clone(),
        });
        Ok(())
    }

    /// Performs the queued requests in order, each until it gets a 2xx
    /// (at most `attempts` times, 100 ms between the first two, doubling).
    /// On failure the queue is dropped: the caller sends everything since
    /// the last successful flush again.
    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let queue = std::mem::take(&mut self.queue);
        for q in &queue {
            let mut delay = Duration::from_millis(100);
            let mut attempt = 1;
            loop {
                match self.attempt(q) {
                    Outcome::Done => break,
                    Outcome::Refused(e) => return Err(e),
                    Outcome::Retry(e) => {
                        if attempt >= self.config.attempts {
                            return Err(e);
                        }
                        if Instant::now() + delay > deadline {
                            return Err(Error::Timeout(format!("{e} (no time left to retry)")));
                        }
                        tracing::warn!("{e}; trying again in {delay:?}");
                        std::thread::sleep(delay);
                        delay *= 2;
                        attempt += 1;
                    }
                }
            }
        }
        Ok(())
    }
}
