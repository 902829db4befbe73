//! Consuming a queue with manual acknowledgements.

use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Source};
use riffle::Result;

use super::client::{Connection, Incoming, Message, Params};
use crate::net::Backoff;

/// The message header that carries a record's key.
pub const KEY_HEADER: &str = "riffle-key";

/// A queue's deliveries as records; acknowledged only on [`Source::ack`].
pub struct AmqpSource {
    params: Params,
    queue: String,
    declare: bool,
    binding: Option<(String, String)>,
    prefetch: u16,
    conn: Option<Connection>,
    /// The highest delivery tag handed out and not yet acknowledged. Tags
    /// belong to one connection, so a new connection forgets it: the
    /// broker delivers those messages again anyway.
    unacked: Option<u64>,
    backoff: Backoff,
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
            unacked: None,
            backoff: Backoff::default(),
        };
        s.conn = Some(s.connect()?);
        Ok(s)
    }

    fn connect(&self) -> Result<Connection> {
        let mut c = Connection::open(&self.params)?;
        c.declare_queue(&self.queue, !self.declare)?;
        if let Some((exchange, key)) = &self.binding {
            c.bind_queue(&self.queue, exchange, key)?;
        }
        c.qos(self.prefetch)?;
        c.consume(&self.queue)?;
        Ok(c)
    }

    /// Drops a broken connection; its unacknowledged deliveries come again
    /// on the next one.
    fn lost(&mut self, e: &riffle::Error) {
        tracing::warn!(
            "AMQP source at {}: {e}; reconnecting (unacknowledged messages come again)",
            self.params.address
        );
        self.conn = None;
        self.unacked = None;
    }

    fn record(&self, m: Message) -> Record {
        let mut key = None;
        let mut headers = Vec::new();
        for (name, value) in m.headers {
            if name == KEY_HEADER {
                key = value.as_bytes();
            } else if let Some(v) = value.as_bytes() {
                headers.push((name, v));
            }
        }
        Record {
            topic: if m.routing_key.is_empty() {
                self.queue.clone()
            } else {
                m.routing_key
            },
            key,
            value: m.body,
            headers,
        }
    }
}

impl Source for AmqpSource {
    fn describe(&self) -> String {
        format!("amqp {} queue {}", self.params.address, self.queue)
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        if self.conn.is_none() {
            std::thread::sleep(self.backoff.next_delay());
            match self.connect() {
                Ok(c) => {
                    tracing::info!("AMQP source reconnected to {}", self.params.address);
                    self.conn = Some(c);
                    self.backoff.reset();
                }
                Err(e) => {
                    tracing::warn!(
                        "AMQP source cannot reconnect to {}: {e}",
                        self.params.address
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
            let conn = self.conn.as_mut().expect("connected above");
            match conn.next(until) {
                Ok(None) => break,
                Ok(Some(Incoming::Delivery(m))) => {
                    self.unacked = Some(m.delivery_tag);
                    let r = self.record(m);
                    out.push(r);
                    n += 1;
                }
                Ok(Some(_)) => {}
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
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        match conn.ack(tag, true) {
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
            c.close();
        }
        Ok(())
    }
}
