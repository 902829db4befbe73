//! Reading subjects: a core subscription, or a JetStream durable pull
//! consumer acknowledged only when the pipeline says so.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, Subject, Subscriber};
use futures_util::StreamExt;
use riffle::connect::{Delivery, Record, Sampled, Source};
use riffle::{Error, Result};

use super::conn::{chain, Conn, Echo};
use super::{IO_TIMEOUT, KEY_HEADER};
use crate::runtime;

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

/// How many JetStream messages one pull request asks for. Messages wait
/// in the client until polled and their `ack_wait` runs meanwhile: a few
/// hundred keep the pipeline fed without letting them expire.
const PULL_BATCH: usize = 500;

/// Where messages come from.
enum Reader {
    Core(Subscriber),
    JetStream {
        consumer: Box<PullConsumer>,
        /// The continuous pull (requests renewed by the client, idle
        /// heartbeats checked); made again when it ends.
        messages: Option<Box<pull::Stream>>,
    },
}

/// Messages from NATS subjects. See the [module](super) for guarantees.
pub struct NatsSource {
    conn: Conn,
    subject: String,
    js: Option<Consumer>,
    client: Option<Client>,
    echo: Echo,
    reader: Option<Reader>,
    /// Reply subjects of the JetStream messages handed out and not yet
    /// acknowledged. Acknowledging is a publish to them, which the
    /// connection can make after a reconnection too.
    unacked: Vec<Subject>,
    lag: Sampled,
}

impl NatsSource {
    /// Connects (an unreachable server is an error naming it); subscribes
    /// in core mode, and for JetStream creates the stream if asked and the
    /// durable consumer.
    pub fn open(
        conn: Conn,
        subject: String,
        queue: Option<String>,
        js: Option<Consumer>,
    ) -> Result<Self> {
        let client = conn.connect()?;
        let server = conn.server();
        let (echo, reader) = runtime::within(&server, IO_TIMEOUT, async {
            let mut echo = Echo::new(&server, &client).await?;
            let reader = match &js {
                None => {
                    let sub = match queue {
                        None => client.subscribe(subject.clone()).await,
                        Some(q) => client.queue_subscribe(subject.clone(), q).await,
                    }
                    .map_err(|e| {
                        refused(&server, &format!("cannot subscribe to '{subject}'"), &e)
                    })?;
                    // Core NATS delivers only to subscriptions that exist:
                    // this one does once the server has answered.
                    echo.round_trip(&client).await?;
                    Reader::Core(sub)
                }
                Some(js) => {
                    let consumer = consumer(&server, &client, js, &subject).await?;
                    Reader::JetStream {
                        consumer: Box::new(consumer),
                        messages: None,
                    }
                }
            };
            Ok((echo, reader))
        })?;
        Ok(Self {
            conn,
            subject,
            js,
            client: Some(client),
            echo,
            reader: Some(reader),
            unacked: Vec::new(),
            lag: Sampled::default(),
        })
    }

    fn client(&self) -> Result<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("nats: source closed".into()))
    }
}

/// The durable consumer, created (and its stream, if asked) when missing.
async fn consumer(
    server: &str,
    client: &Client,
    js: &Consumer,
    subject: &str,
) -> Result<PullConsumer> {
    let context = jetstream::new(client.clone());
    let stream = if js.create {
        context
            .get_or_create_stream(stream::Config {
                name: js.stream.clone(),
                subjects: js.subjects.clone(),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| refused(server, &format!("cannot create stream {}", js.stream), &e))?
    } else {
        context
            .get_stream(&js.stream)
            .await
            .map_err(|e| refused(server, &format!("no stream {}", js.stream), &e))?
    };
    stream
        .get_or_create_consumer(
            &js.durable,
            pull::Config {
                durable_name: Some(js.durable.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: js.ack_wait,
                filter_subject: subject.to_owned(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            refused(
                server,
                &format!(
                    "cannot create consumer {} on stream {}",
                    js.durable, js.stream
                ),
                &e,
            )
        })
}

fn refused(server: &str, what: &str, e: &dyn std::error::Error) -> Error {
    Error::Refused {
        server: server.to_owned(),
        message: format!("{server}: {what}: {}", chain(e)),
    }
}

/// The record for a message: its subject as the topic, the `riffle-key`
/// header as the key, the other headers as they are.
fn record_of(msg: async_nats::Message) -> Record {
    let mut key = None;
    let mut headers = Vec::new();
    if let Some(map) = &msg.headers {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            for value in values {
                let value = value.as_str().as_bytes().to_vec();
                if key.is_none() && name.eq_ignore_ascii_case(KEY_HEADER) {
                    key = Some(value);
                } else {
                    headers.push((name.to_owned(), value));
                }
            }
        }
    }
    Record {
        topic: msg.subject.to_string(),
        key,
        value: msg.payload.to_vec(),
        headers,
    }
}

impl Source for NatsSource {
    fn describe(&self) -> String {
        match &self.js {
            None => format!("nats {} {}", self.conn.addresses(), self.subject),
            Some(js) => format!(
                "nats {} stream {} consumer {} {}",
                self.conn.addresses(),
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

    /// Waits up to `timeout` for a first message, then takes what has
    /// arrived, up to `max`. A lost connection is not an error here: the
    /// client reconnects by itself and messages come again.
    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let server = self.conn.server();
        let Some(reader) = self.reader.as_mut() else {
            return Err(Error::InvalidInput("nats: source closed".into()));
        };
        let unacked = &mut self.unacked;
        let start = out.len();
        runtime::block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            while out.len() - start < max {
                let wait = if out.len() > start {
                    tokio::time::Instant::now()
                } else {
                    deadline
                };
                match reader {
                    Reader::Core(sub) => match tokio::time::timeout_at(wait, sub.next()).await {
                        Err(_) => break,
                        Ok(Some(msg)) => out.push(record_of(msg)),
                        Ok(None) => {
                            return Err(Error::Protocol {
                                server: server.clone(),
                                message: format!("{server}: the subscription was closed"),
                            })
                        }
                    },
                    Reader::JetStream { consumer, messages } => {
                        if messages.is_none() {
                            let made = consumer
                                .stream()
                                .max_messages_per_batch(PULL_BATCH)
                                .messages();
                            match tokio::time::timeout_at(deadline, made).await {
                                Ok(Ok(m)) => *messages = Some(Box::new(m)),
                                Ok(Err(e)) => {
                                    tracing::warn!("{server}: cannot pull messages: {}", chain(&e));
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let stream = messages.as_mut().expect("made above");
                        match tokio::time::timeout_at(wait, stream.next()).await {
                            Err(_) => break,
                            Ok(Some(Ok(msg))) => {
                                let msg = msg.message;
                                match msg.reply.clone() {
                                    Some(reply) => unacked.push(reply),
                                    None => {
                                        tracing::warn!(
                                            "JetStream message without a reply subject: cannot acknowledge it"
                                        );
                                        continue;
                                    }
                                }
                                out.push(record_of(msg));
                            }
                            Ok(Some(Err(e))) => {
                                // Missed heartbeats while the server is
                                // away, a deleted consumer: pull again.
                                tracing::warn!("{server}: pulling messages: {}", chain(&e));
                                *messages = None;
                                if out.len() > start {
                                    break;
                                }
                            }
                            Ok(None) => *messages = None,
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(out.len() - start)
    }

    /// A JetStream consumer's messages not yet acknowledged: those not
    /// delivered yet and those delivered and waiting for their
    /// acknowledgement. A core subscription keeps nothing: `None`.
    fn lag(&mut self) -> Option<u64> {
        let Some(Reader::JetStream { consumer, .. }) = &self.reader else {
            return None;
        };
        let server = self.conn.server();
        self.lag.get(|| {
            let info = runtime::within(&server, IO_TIMEOUT, async {
                consumer.get_info().await.map_err(|e| Error::Protocol {
                    server: server.clone(),
                    message: chain(&e),
                })
            });
            info.map(|i| i.num_pending + i.num_ack_pending as u64)
                .map_err(|e| tracing::debug!("{server}: consumer info: {e}"))
                .ok()
        })
    }

    /// Acknowledges every message handed out since the last call, and
    /// returns once the server has read the acknowledgements.
    fn ack(&mut self) -> Result<()> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        let server = self.conn.server();
        let client = self.client()?.clone();
        let unacked = &self.unacked;
        let echo = &mut self.echo;
        runtime::within(&server, IO_TIMEOUT, async {
            for reply in unacked {
                client
                    .publish(reply.clone(), "+ACK".into())
                    .await
                    .map_err(|e| Error::Protocol {
                        server: server.clone(),
                        message: format!("{server}: cannot acknowledge: {}", chain(&e)),
                    })?;
            }
            echo.round_trip(&client).await
        })?;
        self.unacked.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // Unacknowledged messages go back to the consumer after ack_wait;
        // the pull requests end with the connection.
        self.reader = None;
        if let Some(client) = self.client.take() {
            let _ = runtime::within(&self.conn.server(), IO_TIMEOUT, async move {
                client.drain().await.map_err(|e| Error::Protocol {
                    server: String::new(),
                    message: chain(&e),
                })
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_header_becomes_the_key() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("a", "1");
        headers.insert("riffle-key", "h-7");
        let msg = async_nats::Message {
            subject: "heaters.7".into(),
            reply: None,
            payload: "{}".into(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        let r = record_of(msg);
        assert_eq!(r.topic, "heaters.7");
        assert_eq!(r.key.as_deref(), Some(&b"h-7"[..]));
        assert_eq!(r.headers, [("a".to_owned(), b"1".to_vec())]);
        assert_eq!(r.value, b"{}");
    }
}
