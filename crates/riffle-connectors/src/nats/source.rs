//! Reading subjects: a core subscription, or a JetStream durable pull
//! consumer acknowledged only when the pipeline says so.

use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Source};
use riffle::Result;

use super::client::{Client, Msg};
use super::{IO_TIMEOUT, KEY_HEADER};
use crate::net::{Backoff, Url};

/// The JetStream side of a source.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub stream: String,
    /// Create the stream (on `subjects`) if it does not exist.
    pub create: bool,
    pub subjects: Vec<String>,
    pub durable: String,
    pub ack_wait: Duration,
}

/// A pull request the server may still be answering.
struct Pull {
    remaining: usize,
    expires: Instant,
}

/// Messages from NATS subjects. See the [module](super) for guarantees.
pub struct NatsSource {
    url: Url,
    subject: String,
    queue: Option<String>,
    js: Option<Consumer>,
    client: Option<Client>,
    /// The subscription messages arrive on: the subject itself (core) or
    /// the inbox pull requests are answered to (JetStream).
    sid: u64,
    inbox: String,
    pull: Option<Pull>,
    /// Reply subjects of the JetStream messages handed out and not yet
    /// acknowledged. Acknowledging is a publish to them, which any
    /// connection can make, so they survive a reconnection.
    unacked: Vec<String>,
    backoff: Backoff,
    /// When the server last sent something: a connection silent for
    /// [`IDLE_PING`] is checked with a `PING`, so that a server gone without
    /// closing the socket (a dead host, a dropped route) is noticed.
    last_heard: Instant,
}

/// How long a connection may be silent before it is checked.
const IDLE_PING: Duration = Duration::from_secs(20);

impl NatsSource {
    /// Connects (an unreachable server is an error naming it), and for
    /// JetStream creates the stream if asked and the durable consumer.
    pub fn open(
        url: Url,
        subject: String,
        queue: Option<String>,
        js: Option<Consumer>,
    ) -> Result<Self> {
        let mut source = Self {
            url,
            subject,
            queue,
            js,
            client: None,
            sid: 0,
            inbox: String::new(),
            pull: None,
            unacked: Vec::new(),
            backoff: Backoff::default(),
            last_heard: Instant::now(),
        };
        source.connect()?;
        Ok(source)
    }

    fn connect(&mut self) -> Result<()> {
        let mut c = Client::connect(&self.url)?;
        match &self.js {
            None => {
                self.sid = c.subscribe(&self.subject, self.queue.as_deref())?;
                // The subscription is in place once the server answers.
                c.ping(Instant::now() + IO_TIMEOUT)?;
            }
            Some(js) => {
                if js.create {
                    c.ensure_stream(&js.stream, &js.subjects)?;
                }
                c.ensure_consumer(&js.stream, &js.durable, &self.subject, js.ack_wait)?;
                self.inbox = format!("_INBOX.{}", super::client::unique_id());
                self.sid = c.subscribe(&self.inbox, None)?;
            }
        }
        self.client = Some(c);
        self.pull = None;
        self.last_heard = Instant::now();
        Ok(())
    }

    /// Reconnects after a lost connection, waiting the backoff first;
    /// `false` (with a warning) if the server is still not back.
    fn reconnect(&mut self) -> bool {
        std::thread::sleep(self.backoff.next_delay());
        match self.connect() {
            Ok(()) => {
                tracing::info!("reconnected to NATS server at {}", self.url.address());
                self.backoff.reset();
                true
            }
            Err(e) => {
                tracing::warn!(
                    "cannot reconnect to NATS server at {} (trying again): {e}",
                    self.url.address()
                );
                false
            }
        }
    }

    fn lost(&mut self, e: &riffle::Error) {
        tracing::warn!(
            "lost the connection to NATS server at {}; reconnecting: {e}",
            self.url.address()
        );
        self.client = None;
        self.pull = None;
    }

    /// Reads into `out` until `max` records or `deadline`; stops waiting
    /// once it has some.
    fn read(&mut self, out: &mut Vec<Record>, max: usize, deadline: Instant) -> Result<()> {
        let start = out.len();
        let client = self.client.as_mut().expect("connected");
        loop {
            let got = out.len() - start;
            if got >= max {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(js) = &self.js {
                if self.pull.as_ref().is_none_or(|p| now >= p.expires) {
                    if got > 0 || now >= deadline {
                        return Ok(());
                    }
                    // The server holds the request open until `expires`,
                    // sending messages as they are stored.
                    let expires = (deadline - now).max(Duration::from_millis(50));
                    client.pull(&js.stream, &js.durable, &self.inbox, max - got, expires)?;
                    self.pull = Some(Pull {
                        remaining: max - got,
                        expires: now + expires,
                    });
                }
            }
            let until = if got > 0 { now } else { deadline };
            let Some(msg) = client.next_msg(until)? else {
                if self.last_heard.elapsed() >= IDLE_PING {
                    client.ping(Instant::now() + IO_TIMEOUT)?;
                    self.last_heard = Instant::now();
                }
                return Ok(());
            };
            self.last_heard = Instant::now();
            if msg.sid != self.sid {
                continue; // A late reply to an API request.
            }
            match &msg.status {
                None => {
                    if self.js.is_some() {
                        let Some(reply) = msg.reply.clone() else {
                            tracing::warn!(
                                "JetStream message without a reply subject: cannot acknowledge it"
                            );
                            continue;
                        };
                        self.unacked.push(reply);
                        if let Some(p) = &mut self.pull {
                            p.remaining -= 1;
                            if p.remaining == 0 {
                                self.pull = None;
                            }
                        }
                    }
                    out.push(record_of(msg));
                }
                // Idle heartbeat.
                Some((100, _)) => {}
                // No messages, request expired, or request ended (too many
                // waiting, consumer changed): ask again.
                Some((404 | 408 | 409, _)) => self.pull = None,
                Some((code, text)) => {
                    tracing::warn!("NATS status {code} {text} on a pull request");
                    self.pull = None;
                }
            }
        }
    }
}

/// The record for a message: its subject as the topic, the `riffle-key`
/// header as the key, the other headers as they are.
fn record_of(msg: Msg) -> Record {
    let mut key = None;
    let mut headers = Vec::with_capacity(msg.headers.len());
    for (name, value) in msg.headers {
        if key.is_none() && name.eq_ignore_ascii_case(KEY_HEADER) {
            key = Some(value);
        } else {
            headers.push((name, value));
        }
    }
    Record {
        topic: msg.subject,
        key,
        value: msg.payload,
        headers,
    }
}

impl Source for NatsSource {
    fn describe(&self) -> String {
        match &self.js {
            None => format!("nats {} {}", self.url.address(), self.subject),
            Some(js) => format!(
                "nats {} stream {} consumer {} {}",
                self.url.address(),
                js.stream,
                js.durable,
                self.subject
            ),
        }
    }

    fn delivery(&self) -> Delivery {
        if self.js.is_some() {
            Delivery::AtLeastOnce
        } else {
            Delivery::AtMostOnce
        }
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        if self.client.is_none() && !self.reconnect() {
            return Ok(0);
        }
        let start = out.len();
        if let Err(e) = self.read(out, max, deadline) {
            // What was read is handed out: JetStream redelivers it if it is
            // never acknowledged, and core messages are gone either way.
            self.lost(&e);
        }
        Ok(out.len() - start)
    }

    fn ack(&mut self) -> Result<()> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        let Some(client) = self.client.as_mut() else {
            return Err(riffle::Error::Connect {
                server: format!("NATS server at {}", self.url.address()),
                detail: "not connected; acknowledging after reconnecting".into(),
            });
        };
        let result = self
            .unacked
            .iter()
            .try_for_each(|reply| client.publish(reply, None, &[], b"+ACK"))
            .and_then(|()| client.ping(Instant::now() + IO_TIMEOUT));
        match result {
            Ok(()) => {
                self.unacked.clear();
                Ok(())
            }
            Err(e) => {
                self.lost(&e);
                Err(e)
            }
        }
    }

    fn close(&mut self) -> Result<()> {
        // Unacknowledged messages go back to the consumer after ack_wait.
        self.client = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_header_becomes_the_key() {
        let msg = Msg {
            subject: "heaters.7".into(),
            headers: vec![
                ("a".into(), b"1".to_vec()),
                ("riffle-key".into(), b"h-7".to_vec()),
            ],
            payload: b"{}".to_vec(),
            ..Msg::default()
        };
        let r = record_of(msg);
        assert_eq!(r.topic, "heaters.7");
        assert_eq!(r.key.as_deref(), Some(&b"h-7"[..]));
        assert_eq!(r.headers, [("a".to_owned(), b"1".to_vec())]);
    }
}
