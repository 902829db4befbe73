//! Publishing to subjects: fire-and-forget in core mode, confirmed by
//! JetStream's publish acknowledgements in JetStream mode.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink};
use riffle::{Error, Result};

use super::client::{api_reply, Client};
use super::{IO_TIMEOUT, KEY_HEADER};
use crate::net::{Backoff, Url};

/// The JetStream side of a sink.
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    /// Create the stream (on `subjects`) if it does not exist.
    pub create: bool,
    pub subjects: Vec<String>,
}

/// How many JetStream publishes may await their acknowledgement before
/// `send` waits for some: bounds memory and the work a failure repeats.
const MAX_IN_FLIGHT: usize = 4096;

/// Records published to NATS subjects. See the [module](super) for
/// guarantees.
pub struct NatsSink {
    url: Url,
    template: String,
    js: Option<Stream>,
    client: Option<Client>,
    /// Reply subjects of publishes not acknowledged yet (JetStream).
    awaiting: HashSet<String>,
    /// Something was sent since the last successful flush.
    dirty: bool,
    backoff: Backoff,
}

impl NatsSink {
    /// Connects (an unreachable server is an error naming it), and for
    /// JetStream creates the stream if asked.
    pub fn open(url: Url, template: String, js: Option<Stream>) -> Result<Self> {
        let mut sink = Self {
            url,
            template,
            js,
            client: None,
            awaiting: HashSet::new(),
            dirty: false,
            backoff: Backoff::default(),
        };
        sink.client = Some(sink.connect()?);
        Ok(sink)
    }

    fn connect(&self) -> Result<Client> {
        let mut c = Client::connect(&self.url)?;
        if let Some(js) = self.js.as_ref().filter(|js| js.create) {
            c.ensure_stream(&js.name, &js.subjects)?;
        }
        Ok(c)
    }

    /// The connection, re-established (after the backoff) if it was lost.
    /// Failing here is failing the call: the pipeline sends again later.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.backoff.wait();
            match self.connect() {
                Ok(c) => {
                    tracing::info!("reconnected to NATS server at {}", self.url.address());
                    self.backoff.reset();
                    self.client = Some(c);
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot reconnect to NATS server at {} (trying again): {e}",
                        self.url.address()
                    );
                    return Err(e);
                }
            }
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Forgets the connection and what it had in flight: the caller sends
    /// everything since the last flush again.
    fn lost(&mut self, e: Error) -> Error {
        tracing::warn!(
            "lost the connection to NATS server at {}; reconnecting: {e}",
            self.url.address()
        );
        self.client = None;
        self.awaiting.clear();
        e
    }

    /// Reads publish acknowledgements until at most `left` are missing or
    /// `deadline` passes. An error reply fails the whole flush: which
    /// records were stored is not tracked, they are all sent again.
    fn await_acks(&mut self, left: usize, deadline: Instant) -> Result<()> {
        while self.awaiting.len() > left {
            let client = self.client.as_mut().expect("connected while awaiting");
            let msg = match client.next_msg(deadline) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    let missing = self.awaiting.len();
                    let e = Error::Timeout(format!(
                        "{missing} publishes to NATS server at {} not acknowledged by JetStream",
                        self.url.address()
                    ));
                    return Err(self.lost(e));
                }
                Err(e) => return Err(self.lost(e)),
            };
            if !self.awaiting.remove(&msg.subject) {
                continue; // A late acknowledgement of a failed flush.
            }
            let failed = match api_reply(&msg) {
                Ok(Ok(_)) => None,
                Ok(Err(e)) if e.code == 503 => {
                    Some("no JetStream stream stores this subject (no responders)".to_owned())
                }
                Ok(Err(e)) => Some(format!("{} (code {})", e.description, e.err_code)),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                self.awaiting.clear();
                return Err(Error::Backend(format!(
                    "JetStream did not store a publish for stream {} on NATS server at {}: {why}",
                    self.js.as_ref().map_or("", |j| j.name.as_str()),
                    self.url.address()
                )));
            }
        }
        Ok(())
    }
}

impl Sink for NatsSink {
    fn describe(&self) -> String {
        match &self.js {
            None => format!("nats {} {}", self.url.address(), self.template),
            Some(js) => format!(
                "nats {} stream {} {}",
                self.url.address(),
                js.name,
                self.template
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

    fn send(&mut self, record: &Record) -> Result<()> {
        let subject = render(&self.template, record);
        let mut headers = Vec::with_capacity(record.headers.len() + 1);
        if let Some(key) = &record.key {
            headers.push((KEY_HEADER.to_owned(), key.clone()));
        }
        headers.extend(record.headers.iter().cloned());
        let jetstream = self.js.is_some();
        self.dirty = true;
        let client = self.client()?;
        let published = match jetstream {
            true => client.new_inbox().map(|(reply, _)| Some(reply)),
            false => Ok(None),
        }
        .and_then(|reply| {
            client.publish(&subject, reply.as_deref(), &headers, &record.value)?;
            Ok(reply)
        });
        let reply = match published {
            Ok(reply) => reply,
            // The record cannot be sent (a bad subject or header); the
            // connection is fine.
            Err(e @ Error::InvalidInput(_)) => return Err(e),
            Err(e) => return Err(self.lost(e)),
        };
        if let Some(reply) = reply {
            self.awaiting.insert(reply);
            if self.awaiting.len() >= MAX_IN_FLIGHT {
                if let Err(e) = self.client.as_mut().expect("connected").write_out() {
                    return Err(self.lost(e));
                }
                self.await_acks(MAX_IN_FLIGHT / 2, Instant::now() + IO_TIMEOUT)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let Some(client) = self.client.as_mut() else {
            if self.dirty {
                return Err(Error::Backend(format!(
                    "the connection to NATS server at {} was lost; send again",
                    self.url.address()
                )));
            }
            return Ok(());
        };
        let result = if self.js.is_some() {
            match client.write_out() {
                Ok(()) => self.await_acks(0, deadline),
                Err(e) => Err(self.lost(e)),
            }
        } else {
            // Core NATS confirms nothing; the PONG shows the server has
            // read every publish before it.
            client.ping(deadline).map_err(|e| self.lost(e))
        };
        if result.is_ok() {
            self.dirty = false;
        }
        result
    }

    fn close(&mut self) -> Result<()> {
        let result = self.flush(IO_TIMEOUT);
        self.client = None;
        result
    }
}
