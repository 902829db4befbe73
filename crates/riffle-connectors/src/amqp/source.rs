//! Consuming a queue with manual acknowledgements.

use std::time::{Duration, Instant};

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, ConsumerMessage,
    QueueBindArguments, QueueDeclareArguments,
};
use amqprs::FieldValue;
use riffle::connect::{Delivery, Record, Sampled, Source};
use riffle::Result;
use tokio::sync::mpsc::UnboundedReceiver;

use super::conn::{self, Event, Link, Params};
use crate::net::Backoff;
use crate::runtime;

/// The message header that carries a record's key.
pub const KEY_HEADER: &str = "riffle-key";

/// A queue's deliveries as records; acknowledged only on [`Source::ack`].
pub struct AmqpSource {
    params: Params,
    queue: String,
    declare: bool,
    binding: Option<(String, String)>,
    prefetch: u16,
    conn: Option<Consuming>,
    /// The server of the list that answered last: tried first next time.
    server: usize,
    /// The highest delivery tag handed out and not yet acknowledged. Tags
    /// belong to one connection, so a new connection forgets it: the
    /// broker delivers those messages again anyway.
    unacked: Option<u64>,
    backoff: Backoff,
    lag: Sampled,
}

/// A connection consuming the queue.
struct Consuming {
    link: Link,
    deliveries: UnboundedReceiver<ConsumerMessage>,
}

impl AmqpSource {
    /// Connects and starts consuming, so that an unreachable broker or a
    /// missing queue is reported at once.
    pub fn open(
        params: Params,
        queue: String,
        declare: bool,
        binding: Option<(String, String)>,
        prefetch: u16,
    ) -> Result<Self> {
        let mut s = Self {
            params,
            queue,
            declare,
            binding,
            prefetch,
            conn: None,
            server: 0,
            unacked: None,
            // Jittered, so that clients cut off together do not come back together.
            backoff: Backoff::default().jittered(),
            lag: Sampled::default(),
        };
        s.conn = Some(s.connect()?);
        Ok(s)
    }

    fn connect(&mut self) -> Result<Consuming> {
        let (mut link, server) = conn::open(&self.params, self.server)?;
        self.server = server;
        match self.start(&mut link) {
            Ok(deliveries) => Ok(Consuming { link, deliveries }),
            Err(e) => {
                link.close();
                Err(e)
            }
        }
    }

    fn start(&self, link: &mut Link) -> Result<UnboundedReceiver<ConsumerMessage>> {
        let mut declare = QueueDeclareArguments::durable_client_named(&self.queue);
        declare.passive(!self.declare);
        let declare = declare.finish();
        link.call("queue.declare", |c| async move {
            c.queue_declare(declare).await
        })?;
        if let Some((exchange, key)) = &self.binding {
            let bind = QueueBindArguments::new(&self.queue, exchange, key);
            link.call("queue.bind", |c| async move { c.queue_bind(bind).await })?;
        }
        let qos = BasicQosArguments::new(0, self.prefetch, false);
        link.call("basic.qos", |c| async move { c.basic_qos(qos).await })?;
        let mut consume = BasicConsumeArguments::new(&self.queue, "");
        consume.manual_ack(true);
        let consume = consume.finish();
        let (_, deliveries) = link.call("basic.consume", |c| async move {
            c.basic_consume_rx(consume).await
        })?;
        Ok(deliveries)
    }

    /// Drops a broken connection; its unacknowledged deliveries come again
    /// on the next one.
    fn lost(&mut self, e: &riffle::Error) {
        tracing::warn!(
            "AMQP source at {}: {e}; reconnecting (unacknowledged messages come again)",
            self.params.addresses()
        );
        if let Some(c) = self.conn.take() {
            c.link.close();
        }
        self.unacked = None;
    }

    fn record(&self, m: ConsumerMessage) -> Option<(u64, Record)> {
        let deliver = m.deliver?;
        let mut key = None;
        let mut headers = Vec::new();
        if let Some(table) = m.basic_properties.as_ref().and_then(|p| p.headers()) {
            for (name, value) in table.as_ref() {
                let Some(v) = header_bytes(value) else {
                    continue;
                };
                if name.as_ref() == KEY_HEADER {
                    key = Some(v);
                } else {
                    headers.push((name.to_string(), v));
                }
            }
        }
        // A table has no order of its own: by name, the same every time.
        headers.sort();
        let routing_key = deliver.routing_key();
        let record = Record {
            topic: if routing_key.is_empty() {
                self.queue.clone()
            } else {
                routing_key.clone()
            },
            key,
            value: m.content.unwrap_or_default(),
            headers,
        };
        Some((deliver.delivery_tag(), record))
    }

    /// Waits until `deadline` for a delivery; None when none came.
    fn next(&mut self, deadline: Instant) -> Result<Option<ConsumerMessage>> {
        let c = self.conn.as_mut().expect("connected");
        let left = deadline.saturating_duration_since(Instant::now());
        let (deliveries, events) = (&mut c.deliveries, &mut c.link.events);
        let got = runtime::block_on(async {
            tokio::select! {
                m = deliveries.recv() => Some(Ok(m)),
                e = events.recv() => Some(Err(e)),
                _ = tokio::time::sleep(left) => None,
            }
        });
        match got {
            None => Ok(None),
            Some(Ok(Some(m))) => Ok(Some(m)),
            Some(Ok(None)) => Err(c.link.failure("the connection was lost")),
            Some(Err(Some(Event::Closed { what, .. }))) => {
                Err(c.link.failure(&format!("closed: {what}")))
            }
            // Nothing else is sent to a consuming channel.
            Some(Err(Some(_))) => Ok(None),
            Some(Err(None)) => Err(c.link.failure("the connection was lost")),
        }
    }
}

/// A header's value as bytes: text as is, other scalars written out;
/// tables and arrays are left out.
fn header_bytes(value: &FieldValue) -> Option<Vec<u8>> {
    match value {
        FieldValue::S(s) => Some(s.as_ref().as_bytes().to_vec()),
        FieldValue::x(b) => Some(Vec::from(b.clone())),
        FieldValue::A(_) | FieldValue::F(_) | FieldValue::V => None,
        other => Some(other.to_string().into_bytes()),
    }
}

/// The queue's messages ready for delivery, as a passive `queue.declare`
/// tells (those delivered and not yet acknowledged are not counted).
fn ready(link: &mut Link, queue: &str) -> Option<u64> {
    let mut declare = QueueDeclareArguments::durable_client_named(queue);
    declare.passive(true);
    let declare = declare.finish();
    link.call("queue.declare", |c| async move {
        c.queue_declare(declare).await
    })
    .map_err(|e| tracing::debug!("AMQP queue {queue}: {e}"))
    .ok()
    .flatten()
    .map(|(_, ready, _)| u64::from(ready))
}

impl Source for AmqpSource {
    fn lag(&mut self) -> Option<u64> {
        let Self {
            conn, queue, lag, ..
        } = self;
        lag.get(|| ready(&mut conn.as_mut()?.link, queue))
    }

    fn describe(&self) -> String {
        format!("amqp {} queue {}", self.params.addresses(), self.queue)
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        if self.conn.is_none() {
            std::thread::sleep(self.backoff.next_delay());
            match self.connect() {
                Ok(c) => {
                    tracing::info!("AMQP source reconnected to {}", c.link.address);
                    self.conn = Some(c);
                    self.backoff.reset();
                }
                Err(e) => {
                    tracing::warn!(
                        "AMQP source cannot reconnect to {}: {e}",
                        self.params.addresses()
                    );
                    return Ok(0);
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < max {
            // Wait for the first message; then take what has arrived.
            let until = if n == 0 { deadline } else { Instant::now() };
            match self.next(until) {
                Ok(None) => break,
                Ok(Some(m)) => {
                    if let Some((tag, r)) = self.record(m) {
                        self.unacked = Some(tag);
                        out.push(r);
                        n += 1;
                    }
                }
                Err(e) => {
                    self.lost(&e);
                    break;
                }
            }
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        let Some(tag) = self.unacked else {
            return Ok(());
        };
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        let ack = BasicAckArguments::new(tag, true);
        match c
            .link
            .call("basic.ack", |c| async move { c.basic_ack(ack).await })
        {
            Ok(()) => {
                self.unacked = None;
                Ok(())
            }
            Err(e) => {
                self.lost(&e);
                Err(e)
            }
        }
    }

    fn close(&mut self) -> Result<()> {
        if let Some(c) = self.conn.take() {
            c.link.close();
        }
        Ok(())
    }
}

impl Drop for AmqpSource {
    /// amqprs closes a dropped connection from a task it spawns, which
    /// needs the runtime's context.
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _inside = runtime::handle().enter();
            drop(c);
        }
    }
}
