//! Publishing to subjects: fire-and-forget in core mode, confirmed by
//! JetStream's publish acknowledgements in JetStream mode.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
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
    /// Reply subjects of publishes not acknowledged yet (JetStream), with
    /// their places in the round (the records sent since the last flush).
    awaiting: HashMap<String, usize>,
    /// Records sent in this round.
    round: usize,
    /// Refused in this round: place and why.
    refused: Vec<(usize, String)>,
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
            awaiting: HashMap::new(),
            round: 0,
            refused: Vec::new(),
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
            std::thread::sleep(self.backoff.next_delay());
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
    /// `deadline` passes. An error in an acknowledgement (the stream is
    /// full, the message too large, a wrong expected sequence) refuses that
    /// record for good. "No responders" is a failure of the flush instead:
    /// JetStream answers so while it starts up or its stream is being
    /// created, which passes. On failure, the place of the first
    /// unacknowledged record in the round and why.
    fn await_acks(
        &mut self,
        left: usize,
        deadline: Instant,
    ) -> std::result::Result<(), (usize, Error)> {
        while self.awaiting.len() > left {
            let first = self.awaiting.values().min().copied().unwrap_or(self.round);
            let client = self.client.as_mut().expect("connected while awaiting");
            let msg = match client.next_msg(deadline) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    let missing = self.awaiting.len();
                    let e = Error::Timeout(format!(
                        "{missing} publishes to NATS server at {} not acknowledged by JetStream",
                        self.url.address()
                    ));
                    return Err((first, self.lost(e)));
                }
                Err(e) => return Err((first, self.lost(e))),
            };
            let Some(at) = self.awaiting.remove(&msg.subject) else {
                continue; // A late acknowledgement of a failed flush.
            };
            let stream = self.js.as_ref().map_or("", |j| j.name.as_str());
            let what = |why: String| {
                format!(
                    "JetStream did not store a publish for stream {stream} on NATS server at {}: {why}",
                    self.url.address()
                )
            };
            match api_reply(&msg) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.code == 503 => {
                    let why = "no JetStream stream stores this subject (no responders)";
                    let e = Error::Refused {
                        server: format!("NATS server at {}", self.url.address()),
                        message: what(why.into()),
                    };
                    self.awaiting.clear();
                    return Err((first, e));
                }
                Ok(Err(e)) => {
                    let why = what(format!("{} (code {})", e.description, e.err_code));
                    self.refused.push((at, why));
                }
                Err(e) => {
                    let e = Error::Protocol {
                        server: format!("NATS server at {}", self.url.address()),
                        message: what(e.to_string()),
                    };
                    self.awaiting.clear();
                    return Err((first, e));
                }
            }
        }
        Ok(())
    }

    /// Starts counting records from 0 again: after a flush, or after a
    /// failed send (the caller then sends everything again).
    fn new_round(&mut self) {
        self.round = 0;
        self.refused.clear();
    }

    fn publish(&mut self, record: &Record) -> Result<()> {
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
            // connection is fine: refused, in its place in the round.
            Err(Error::InvalidInput(why)) => {
                self.refused.push((self.round, why));
                self.round += 1;
                return Ok(());
            }
            Err(e) => return Err(self.lost(e)),
        };
        if let Some(reply) = reply {
            self.awaiting.insert(reply, self.round);
        }
        self.round += 1;
        if self.awaiting.len() >= MAX_IN_FLIGHT {
            if let Err(e) = self.client.as_mut().expect("connected").write_out() {
                return Err(self.lost(e));
            }
            self.await_acks(MAX_IN_FLIGHT / 2, Instant::now() + IO_TIMEOUT)
                .map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    fn finish_round(&mut self, timeout: Duration) -> std::result::Result<(), (usize, Error)> {
        let deadline = Instant::now() + timeout;
        let Some(client) = self.client.as_mut() else {
            if self.dirty {
                return Err((
                    0,
                    Error::Connect {
                        server: format!("NATS server at {}", self.url.address()),
                        detail: "the connection was lost; send again".into(),
                    },
                ));
            }
            return Ok(());
        };
        if self.js.is_some() {
            match client.write_out() {
                Ok(()) => self.await_acks(0, deadline),
                Err(e) => {
                    let first = self.awaiting.values().min().copied().unwrap_or(self.round);
                    Err((first, self.lost(e)))
                }
            }
        } else {
            // Core NATS confirms nothing; the PONG shows the server has
            // read every publish before it.
            client.ping(deadline).map_err(|e| (0, self.lost(e)))
        }
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

    /// A failed send starts a new round: the caller sends everything since
    /// the last flush again.
    fn send(&mut self, record: &Record) -> Result<()> {
        let r = self.publish(record);
        if r.is_err() {
            self.new_round();
        }
        r
    }

    /// Waits for JetStream's acknowledgements of the round; refused
    /// records are reported by their places, and after a failure the
    /// records before the first unacknowledged one count as settled.
    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let sent = self.round;
        let refused = |s: &mut Self| std::mem::take(&mut s.refused);
        let result = match self.finish_round(timeout) {
            Ok(()) => {
                self.dirty = false;
                Unconfirmed::refused(sent, refused(self))
            }
            Err((first, e)) => Err(Unconfirmed::transient(first, refused(self), &e, None)),
        };
        self.new_round();
        result
    }

    fn close(&mut self) -> Result<()> {
        let result = self.flush(IO_TIMEOUT);
        self.client = None;
        result
    }
}
