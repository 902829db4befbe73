//! Publishing to subjects: fire-and-forget in core mode, confirmed by
//! JetStream's publish acknowledgements in JetStream mode.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue};
use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::conn::{chain, Conn, Echo};
use super::{IO_TIMEOUT, KEY_HEADER};
use crate::runtime;

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
    conn: Conn,
    template: String,
    js: Option<Stream>,
    client: Client,
    context: Option<jetstream::Context>,
    echo: Echo,
    /// JetStream publishes not acknowledged yet, in the order sent, with
    /// their places in the round (the records sent since the last flush).
    awaiting: VecDeque<(usize, PublishAckFuture)>,
    /// Records sent in this round.
    round: usize,
    /// Refused in this round: place and why.
    refused: Vec<(usize, String)>,
    /// The connection's losses when this round began: a loss since then
    /// fails the round.
    losses_at_start: Option<u64>,
}

impl NatsSink {
    /// Connects (an unreachable server is an error naming it), and for
    /// JetStream creates the stream if asked.
    pub fn open(conn: Conn, template: String, js: Option<Stream>) -> Result<Self> {
        let client = conn.connect()?;
        let server = conn.server();
        let (echo, context) = runtime::within(&server, IO_TIMEOUT, async {
            let echo = Echo::new(&server, &client).await?;
            let context = match &js {
                None => None,
                Some(js) => {
                    let mut context = jetstream::new(client.clone());
                    context.set_timeout(IO_TIMEOUT);
                    if js.create {
                        context
                            .get_or_create_stream(stream::Config {
                                name: js.name.clone(),
                                subjects: js.subjects.clone(),
                                storage: stream::StorageType::File,
                                ..Default::default()
                            })
                            .await
                            .map_err(|e| Error::Refused {
                                server: server.clone(),
                                message: format!(
                                    "{server}: cannot create stream {}: {}",
                                    js.name,
                                    chain(&e)
                                ),
                            })?;
                    }
                    Some(context)
                }
            };
            Ok((echo, context))
        })?;
        Ok(Self {
            conn,
            template,
            js,
            client,
            context,
            echo,
            awaiting: VecDeque::new(),
            round: 0,
            refused: Vec::new(),
            losses_at_start: None,
        })
    }

    /// Waits for publish acknowledgements, oldest first, until at most
    /// `left` are missing. An error in an acknowledgement (the stream is
    /// full, the message too large, an expectation header that does not
    /// hold) refuses that record for good. "No responders" fails the
    /// wait instead: JetStream answers so while it starts up or its stream
    /// is being created, which passes. On failure, the place of the first
    /// unacknowledged record in the round and why.
    fn await_acks(
        &mut self,
        left: usize,
        timeout: Duration,
    ) -> std::result::Result<(), (usize, Error)> {
        let server = self.conn.server();
        let stream = self.js.as_ref().map_or("", |j| j.name.as_str()).to_owned();
        let what = |why: &str| {
            format!("JetStream did not store a publish for stream {stream} on {server}: {why}")
        };
        let awaiting = &mut self.awaiting;
        let refused = &mut self.refused;
        let result = runtime::block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            while awaiting.len() > left {
                let (at, ack) = awaiting.pop_front().expect("more than left");
                let e = match tokio::time::timeout_at(
                    deadline,
                    std::future::IntoFuture::into_future(ack),
                )
                .await
                {
                    Ok(Ok(_)) => continue,
                    Err(_) => {
                        let missing = awaiting.len() + 1;
                        Error::Timeout(format!(
                            "{missing} publishes to {server} not acknowledged by JetStream"
                        ))
                    }
                    Ok(Err(e)) => match e.kind() {
                        PublishErrorKind::StreamNotFound => Error::Refused {
                            server: server.clone(),
                            message: what(
                                "no JetStream stream stores this subject (no responders)",
                            ),
                        },
                        PublishErrorKind::TimedOut
                        | PublishErrorKind::BrokenPipe
                        | PublishErrorKind::MaxAckPending => Error::Protocol {
                            server: server.clone(),
                            message: what(&chain(&e)),
                        },
                        PublishErrorKind::WrongLastMessageId
                        | PublishErrorKind::WrongLastSequence
                        | PublishErrorKind::MaxPayloadExceeded
                        | PublishErrorKind::Other => {
                            refused.push((at, what(&chain(&e))));
                            continue;
                        }
                    },
                };
                return Err((at, e));
            }
            Ok(())
        });
        if result.is_err() {
            // The caller sends everything since the last flush again.
            self.awaiting.clear();
        }
        result
    }

    /// Starts counting records from 0 again: after a flush, or after a
    /// failed send (the caller then sends everything again).
    fn new_round(&mut self) {
        self.round = 0;
        self.refused.clear();
        self.awaiting.clear();
        self.losses_at_start = None;
    }

    fn publish(&mut self, record: &Record) -> Result<()> {
        let subject = render(&self.template, record);
        if self.losses_at_start.is_none() {
            self.losses_at_start = Some(self.conn.losses());
        }
        let place = self.round;
        self.round += 1;
        let headers = match headers_of(record) {
            Ok(h) => h,
            Err(why) => {
                self.refused.push((place, why));
                return Ok(());
            }
        };
        if subject.is_empty() || subject.contains(char::is_whitespace) {
            self.refused.push((
                place,
                format!("cannot publish to NATS subject '{subject}': empty or with whitespace"),
            ));
            return Ok(());
        }
        let server = self.conn.server();
        let payload = record.value.clone().into();
        let client = &self.client;
        let context = self.context.as_ref();
        let sent = runtime::within(&server, IO_TIMEOUT, async {
            match context {
                None => {
                    let r = match headers {
                        None => client.publish(subject.clone(), payload).await,
                        Some(h) => {
                            client
                                .publish_with_headers(subject.clone(), h, payload)
                                .await
                        }
                    };
                    r.map(|()| None).map_err(|e| {
                        use async_nats::client::PublishErrorKind as K;
                        match e.kind() {
                            K::InvalidSubject | K::MaxPayloadExceeded => {
                                Error::InvalidInput(format!(
                                    "cannot publish to NATS subject '{subject}': {}",
                                    chain(&e)
                                ))
                            }
                            K::Send => Error::Protocol {
                                server: server.clone(),
                                message: format!("{server}: cannot publish: {}", chain(&e)),
                            },
                        }
                    })
                }
                Some(context) => {
                    let r = match headers {
                        None => context.publish(subject.clone(), payload).await,
                        Some(h) => {
                            context
                                .publish_with_headers(subject.clone(), h, payload)
                                .await
                        }
                    };
                    r.map(Some).map_err(|e| {
                        let text = chain(&e);
                        if e.kind() == PublishErrorKind::MaxPayloadExceeded
                            || text.contains("invalid subject")
                        {
                            Error::InvalidInput(format!(
                                "cannot publish to NATS subject '{subject}': {text}"
                            ))
                        } else {
                            Error::Protocol {
                                server: server.clone(),
                                message: format!("{server}: cannot publish: {text}"),
                            }
                        }
                    })
                }
            }
        });
        match sent {
            Ok(None) => {}
            Ok(Some(ack)) => self.awaiting.push_back((place, ack)),
            // The record cannot be sent (a bad subject, too large); the
            // connection is fine: refused, in its place in the round.
            Err(Error::InvalidInput(why)) => self.refused.push((place, why)),
            Err(e) => return Err(e),
        }
        if self.awaiting.len() >= MAX_IN_FLIGHT {
            self.await_acks(MAX_IN_FLIGHT / 2, IO_TIMEOUT)
                .map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    fn finish_round(&mut self, timeout: Duration) -> std::result::Result<(), (usize, Error)> {
        self.confirm(timeout)?;
        match self.losses_at_start {
            Some(before) if self.conn.losses() != before => Err((
                0,
                Error::Connect {
                    server: self.conn.server(),
                    detail: "the connection was lost while sending; sending again".into(),
                },
            )),
            _ => Ok(()),
        }
    }

    fn confirm(&mut self, timeout: Duration) -> std::result::Result<(), (usize, Error)> {
        if self.js.is_some() {
            self.await_acks(0, timeout)
        } else {
            // Core NATS confirms nothing; the echo shows the server has
            // read every publish before it.
            let server = self.conn.server();
            let client = &self.client;
            let echo = &mut self.echo;
            runtime::within(&server, timeout, echo.round_trip(client)).map_err(|e| (0, e))
        }
    }
}

/// The NATS headers of a record: its key as `riffle-key`, then its own.
/// A header NATS cannot carry (a name with spaces or colons, a value with
/// line breaks or not UTF-8) refuses the record.
fn headers_of(record: &Record) -> std::result::Result<Option<HeaderMap>, String> {
    if record.key.is_none() && record.headers.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| {
        let bad = |why: &str| format!("NATS cannot carry header '{name}': {why}");
        let n = HeaderName::from_str(name).map_err(|e| bad(&e.to_string()))?;
        let text = std::str::from_utf8(value).map_err(|_| bad("the value is not UTF-8"))?;
        let v = HeaderValue::from_str(text).map_err(|e| bad(&e.to_string()))?;
        map.append(n, v);
        Ok::<(), String>(())
    };
    if let Some(key) = &record.key {
        add(KEY_HEADER, key)?;
    }
    for (name, value) in &record.headers {
        add(name, value)?;
    }
    Ok(Some(map))
}

impl Sink for NatsSink {
    fn describe(&self) -> String {
        match &self.js {
            None => format!("nats {} {}", self.conn.addresses(), self.template),
            Some(js) => format!(
                "nats {} stream {} {}",
                self.conn.addresses(),
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
        let result = match self.finish_round(timeout) {
            Ok(()) => Unconfirmed::refused(sent, std::mem::take(&mut self.refused)),
            Err((first, e)) => Err(Unconfirmed::transient(
                first,
                std::mem::take(&mut self.refused),
                &e,
                None,
            )),
        };
        self.new_round();
        result
    }

    fn close(&mut self) -> Result<()> {
        let result = self.flush(IO_TIMEOUT);
        let client = self.client.clone();
        let _ = runtime::within(&self.conn.server(), IO_TIMEOUT, async move {
            client.drain().await.map_err(|e| Error::Protocol {
                server: String::new(),
                message: chain(&e),
            })
        });
        result
    }
}
